"""The sync service: an ASGI application (Starlette) over a SQLite hub or a
PostgreSQL hub.

HOW IT WORKS. Each endpoint authenticates the bearer token (Config.verifier),
reads the body within the size limit (gzip accepted), decodes it with the
wire format (sqlite_ct.sync.wire), checks what the identity may do, and runs
the hub's provider in a worker thread: ServerSyncProvider on a pooled hub
connection (_Hub), or the one PostgresServerProvider over its connection
pool (_PgHub). The identity, not the client, supplies the filter parameters;
a client id is registered to the first user that uses it
(__sysSyncClientOwners in a SQLite hub, sqlite_ct.client_owners in a
PostgreSQL one), and any other user presenting it is refused. Everything the
service knows lives in the hub database, so it can be restarted or killed at
any point, and several processes can serve one PostgreSQL hub.

Errors are JSON ErrorReply messages with a stable code (docs/server.md):
400 malformed/unsupported_version, 401 unauthorized/token_expired,
403 forbidden, 404 not_found, 405 method_not_allowed, 410 reinitialise,
413 too_large, 415 unsupported_encoding, 422 sync_error, 503 busy/timeout,
500 internal.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import logging
import os
import queue
import threading
import time
import zlib
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import apsw
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import sqlite_ct
from ..errors import AnchorExpiredError, Error
from ..sync import wire
from ..sync.errors import ReinitialiseRequired, ReplicaCopied, SyncError
from ..sync.messages import DownloadRequest, Upload
from ..sync.server import ServerProvider, ServerSyncProvider
from ..sync.wire import ErrorReply, ReplicaClaim, SchemaRequest, TableList, WireError
from .config import (AuthenticationError, Config, ConfigError, Identity, Verifier,
                     load_config)

__all__ = ["create_app", "ServiceError", "OWNERS"]

log = logging.getLogger("sqlite_ct.server")

OWNERS = "__sysSyncClientOwners"
_GZIP_MIN = 1024


class ServiceError(Error):
    """An error answered to the client with an HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry = retry


class _Hub:
    """The hub database: provisioning at start, then a pool of providers,
    each over its own connection."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._pool: "queue.LifoQueue[ServerSyncProvider]" = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(config.pool_size)
        if not os.path.isfile(config.hub):
            raise ConfigError(f'config "hub": no such database file "{config.hub}"; create the '
                              f"hub database and its tables first")
        provider = self._open()
        try:
            conn = provider.conn
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{OWNERS}"(ClientId BLOB PRIMARY KEY, '
                         f"Owner TEXT NOT NULL, Registered INTEGER NOT NULL) WITHOUT ROWID")
            missing = [t for t in config.tables if not conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE",
                (t,)).fetchone()]
            if missing:
                raise SyncError(f'sqlite-ct serve: the hub "{config.hub}" has no table '
                                f'"{missing[0]}"; create it, or remove it from "tables"')
            provider.provision(*config.tables)
            self.server_id = provider.server_id
        except BaseException:
            provider.conn.close()
            raise
        self._pool.put(provider)

    def _open(self) -> ServerSyncProvider:
        conn = apsw.Connection(self.config.hub, flags=apsw.SQLITE_OPEN_READWRITE)
        sqlite_ct.load(conn)
        conn.setbusytimeout(self.config.busy_timeout_ms)
        return ServerSyncProvider(conn, filters=self.config.filters)

    @contextlib.contextmanager
    def provider(self) -> Iterator[ServerSyncProvider]:
        with self._slots:
            try:
                provider = self._pool.get_nowait()
            except queue.Empty:
                provider = self._open()
            try:
                yield provider
            finally:
                self._pool.put(provider)

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().conn.close()
            except queue.Empty:
                return

    def own_client(self, provider: ServerSyncProvider, user: str, client: Any) -> str:
        """Register `client` to `user` unless registered; the owner's name."""
        conn = provider.conn
        key = client.bytes
        row = conn.execute(f'SELECT Owner FROM "{OWNERS}" WHERE ClientId = ?', (key,)).fetchone()
        if row is None:
            conn.execute(f'INSERT OR IGNORE INTO "{OWNERS}"(ClientId, Owner, Registered) '
                         f"VALUES (?, ?, ?)", (key, user, int(time.time() * 1000)))
            row = conn.execute(f'SELECT Owner FROM "{OWNERS}" WHERE ClientId = ?',
                               (key,)).fetchone()
        return str(row[0])

    @contextlib.contextmanager
    def time_limit(self, provider: ServerSyncProvider, seconds: float) -> Iterator[None]:
        # A watchdog: whatever a request makes the hub do (a forged anchor
        # that never ends a download, a huge batch on a loaded machine), the
        # statements it runs after `seconds` are aborted (the progress
        # handler) and the request answered 503, rather than holding a
        # connection and a thread for ever.
        deadline = time.monotonic() + seconds
        provider.conn.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
        try:
            yield
        except apsw.InterruptError:
            raise ServiceError(503, "timeout", f"the request took longer than {seconds:g} s "
                                               f"and was stopped", retry=True) from None
        finally:
            provider.conn.set_progress_handler(None)


class _PgHub:
    """A PostgreSQL hub: provisioning at start, then one PostgresServerProvider
    (thread-safe, its own pool of pool_size connections) for every request.
    Client owners and upload receipts live in the hub's sqlite_ct schema, so
    any number of service processes can serve it."""

    def __init__(self, config: Config) -> None:
        from ..sync.pg import PostgresServerProvider
        self.config = config
        self._provider = PostgresServerProvider(
            config.hub, schema=config.hub_schema, filters=config.filters,
            max_connections=config.pool_size, lock_timeout_ms=config.busy_timeout_ms)
        try:
            self._provider.provision(*config.tables)
            self._provider.prepare_service()
            self.server_id = self._provider.server_id
        except BaseException:
            self._provider.close()
            raise

    @contextlib.contextmanager
    def provider(self) -> Iterator[Any]:
        yield self._provider

    def close(self) -> None:
        self._provider.close()

    def own_client(self, provider: Any, user: str, client: Any) -> str:
        return str(provider.claim_client(client, user))

    @contextlib.contextmanager
    def time_limit(self, provider: Any, seconds: float) -> Iterator[None]:
        # PostgreSQL's own means (statement_timeout, a cancel at the
        # deadline: PostgresServerProvider.time_limit) stop the hub work.
        from ..sync.pg import HubTimeoutError
        try:
            with provider.time_limit(seconds):
                yield
        except HubTimeoutError:
            raise ServiceError(503, "timeout", f"the request took longer than {seconds:g} s "
                                               f"and was stopped", retry=True) from None


def _reply(status: int, message: Any, request: Optional[Request] = None) -> Response:
    body = wire.encode(message)
    headers = {}
    if request is not None and len(body) >= _GZIP_MIN and "gzip" in request.headers.get(
            "accept-encoding", ""):
        body = gzip.compress(body, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    headers["Vary"] = "Accept-Encoding"
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _error(status: int, code: str, message: str, *, retry: bool = False,
           headers: Optional[Dict[str, str]] = None) -> Response:
    response = _reply(status, ErrorReply(code, message, retry))
    if headers:
        response.headers.update(headers)
    return response


class _Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.hub: Any = _PgHub(config) if config.postgres else _Hub(config)
        self.served = {t.lower(): t for t in config.tables}

    # -- request plumbing ---------------------------------------------------------
    def identity(self, request: Request) -> Identity:
        header = request.headers.get("authorization")
        if not header:
            raise ServiceError(401, "unauthorized", "no credentials: send "
                                                    "Authorization: Bearer <token>")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ServiceError(401, "unauthorized", "expected Authorization: Bearer <token>")
        try:
            identity = self.config.verifier(token.strip())
        except AuthenticationError as exc:
            raise ServiceError(401, "token_expired" if exc.expired else "unauthorized",
                               str(exc)) from None
        if identity is None:
            raise ServiceError(401, "unauthorized", "unknown token")
        if not isinstance(identity, Identity):
            raise TypeError(f"the verifier returned {identity!r}, not an Identity")
        return identity

    async def body(self, request: Request) -> bytes:
        limit = self.config.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ServiceError(413, "too_large", f"the request body is larger than the "
                                                 f"service's limit of {limit} bytes")
        chunks: List[bytes] = []

        async def read() -> None:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ServiceError(413, "too_large", f"the request body is larger than "
                                                         f"the service's limit of {limit} bytes")
                chunks.append(chunk)

        # A client that sends its body slowly, or stops half way, must not
        # hold a connection for ever.
        try:
            await asyncio.wait_for(read(), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError(408, "timeout", f"the request body did not arrive within "
                                               f"{self.config.request_timeout_s:g} s",
                               retry=True) from None
        data = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            return _gunzip(data, limit)
        if encoding not in ("identity", ""):
            raise ServiceError(415, "unsupported_encoding",
                               f"Content-Encoding {encoding!r} is not supported; send gzip "
                               f"or identity")
        return data

    def check_tables(self, tables: Sequence[str]) -> None:
        for t in tables:
            if t.lower() not in self.served:
                raise ServiceError(403, "forbidden", f'table "{t}" is not served here; the '
                                                     f"service offers: "
                                                     f"{', '.join(self.config.tables)}")

    def parameters(self, identity: Identity, sent: Mapping[str, Any]) -> Dict[str, Any]:
        """The identity's filter parameters; a client may repeat them but not
        choose its own."""
        own = identity.filter_parameters()
        for name, value in sent.items():
            if name not in own or type(own[name]) is not type(value) or own[name] != value:
                raise ServiceError(403, "forbidden", f'filter parameter "{name}" is set by the '
                                                     f"service from your credentials; do not "
                                                     f"send it (or send the same value)")
        return own

    def own_client(self, provider: Any, identity: Identity, client: Any) -> None:
        if self.hub.own_client(provider, identity.user, client) != identity.user:
            raise ServiceError(403, "forbidden", f"client id {client} is registered to another "
                                                 f"user; a copied client database must be "
                                                 f"reinitialised under its own id")

    # -- endpoints ----------------------------------------------------------------
    async def run(self, request: Request, handler: Any, expect: Optional[type]) -> Response:
        try:
            identity = self.identity(request)
            message: Any = None
            if expect is not None:
                message = wire.decode(await self.body(request), expect)
            result = await run_in_threadpool(self._locked, handler, identity, message)
            return _reply(200, result, request)
        except ServiceError as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="sqlite-ct"'} \
                if exc.status == 401 else None
            return _error(exc.status, exc.code, str(exc), retry=exc.retry, headers=headers)
        except WireError as exc:
            code = "unsupported_version" if "unsupported wire version" in str(exc) \
                else "malformed"
            return _error(400, code, str(exc))
        except AnchorExpiredError as exc:
            return _error(410, "reinitialise", str(exc))
        except ReinitialiseRequired as exc:
            return _error(410, "reinitialise", str(exc))
        except ReplicaCopied as exc:
            return _error(409, "replica_copied", str(exc))
        except _pg_busy() as exc:
            return _error(503, "busy", str(exc), retry=True, headers={"Retry-After": "1"})
        except SyncError as exc:
            text = str(exc)
            # The anchor errors of the hub provider: the client must start the
            # table afresh (an expired, foreign or unreadable anchor).
            if "anchor" in text and "reinitialise" in text:
                return _error(410, "reinitialise", text)
            return _error(422, "sync_error", text)
        except apsw.BusyError as exc:
            return _error(503, "busy", f"the hub is busy ({exc}); retry later", retry=True,
                          headers={"Retry-After": "1"})
        except Error as exc:
            return _error(422, "sync_error", str(exc))
        except Exception:
            log.exception("sqlite-ct serve: internal error on %s", request.url.path)
            return _error(500, "internal", "internal server error (logged on the server)",
                          retry=True)

    def _locked(self, handler: Any, identity: Identity, message: Any) -> Any:
        with self.hub.provider() as provider:
            with self.hub.time_limit(provider, self.config.request_timeout_s):
                return handler(provider, identity, message)

    def info(self, provider: ServerProvider, identity: Identity, _: Any) -> Any:
        return provider.get_server_info()

    def tables(self, provider: ServerProvider, identity: Identity, _: Any) -> Any:
        return TableList(tuple(self.config.tables))

    def schema(self, provider: ServerProvider, identity: Identity,
               message: SchemaRequest) -> Any:
        self.check_tables(message.tables)
        return provider.get_schema([self.served[t.lower()] for t in message.tables])

    def current_schema(self, provider: ServerProvider, identity: Identity,
                       message: SchemaRequest) -> Any:
        self.check_tables(message.tables)
        schema = provider.describe_schema([self.served[t.lower()] for t in message.tables])
        if schema is None:
            raise ServiceError(404, "not_found", "this hub cannot describe its tables")
        return schema

    def replica(self, provider: ServerProvider, identity: Identity,
                message: ReplicaClaim) -> Any:
        self.own_client(provider, identity, message.client_id)
        provider.claim_replica(message.client_id, message.generation, message.next_generation)
        return provider.get_server_info()

    def upload(self, provider: ServerProvider, identity: Identity, message: Upload) -> Any:
        self.check_tables([tc.table for tc in message.tables])
        self.check_tables(list(message.received_anchors))
        params = self.parameters(identity, message.parameters)
        self.own_client(provider, identity, message.client_id)
        return provider.apply_changes(dataclasses.replace(message, parameters=params))

    def download(self, provider: ServerProvider, identity: Identity,
                 message: DownloadRequest) -> Any:
        self.check_tables([t.table for t in message.tables])
        params = self.parameters(identity, message.parameters)
        self.own_client(provider, identity, message.client_id)
        limit = self.config.max_batch_size
        size = message.batch_size if message.batch_size and message.batch_size <= limit \
            else limit
        return provider.get_changes(dataclasses.replace(message, parameters=params,
                                                        batch_size=size))


def _pg_busy() -> Any:
    """The PostgreSQL hub's "locked too long" error (no psycopg needed)."""
    from ..sync.pg import HubBusyError
    return HubBusyError


def _gunzip(data: bytes, limit: int) -> bytes:
    """gzip data, refusing more than `limit` bytes once decompressed (a
    small body can inflate to gigabytes)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise ServiceError(413, "too_large", f"the decompressed request body is larger "
                                                 f"than the service's limit of {limit} bytes")
        out += inflater.flush()
    except zlib.error as exc:
        raise ServiceError(400, "malformed", f"the gzip request body is corrupt: {exc}") \
            from None
    if not inflater.eof or inflater.unused_data:
        raise ServiceError(400, "malformed", "the gzip request body is truncated or has "
                                             "trailing data")
    if len(out) > limit:
        raise ServiceError(413, "too_large", f"the decompressed request body is larger than "
                                             f"the service's limit of {limit} bytes")
    return out


def create_app(config: Union[str, Mapping[str, Any], Config], *,
               verifier: Optional[Verifier] = None) -> Starlette:
    """The sync service as an ASGI application, for uvicorn or any ASGI
    server: `config` is a configuration file path, a dict of the same shape,
    or a Config; `verifier` replaces its token table (see config.py). The hub
    tables are provisioned now (idempotent); a bad configuration raises
    ConfigError, a hub that cannot serve SyncError."""
    cfg = load_config(config, verifier=verifier)
    service = _Service(cfg)

    def endpoint(handler: Any, expect: Optional[type]) -> Any:
        async def run(request: Request) -> Response:
            return await service.run(request, handler, expect)
        return run

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, f"{request.method} {request.url.path}: "
                                             f"{exc.detail}")

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("sqlite-ct serve: internal error on %s", request.url.path)
        return _error(500, "internal", "internal server error (logged on the server)",
                      retry=True)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/info", endpoint(service.info, None), methods=["GET"]),
        Route("/v1/tables", endpoint(service.tables, None), methods=["GET"]),
        Route("/v1/schema", endpoint(service.schema, SchemaRequest), methods=["POST"]),
        Route("/v1/schema/current", endpoint(service.current_schema, SchemaRequest),
              methods=["POST"]),
        Route("/v1/replica", endpoint(service.replica, ReplicaClaim), methods=["POST"]),
        Route("/v1/upload", endpoint(service.upload, Upload), methods=["POST"]),
        Route("/v1/download", endpoint(service.download, DownloadRequest), methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        try:
            yield
        finally:
            service.hub.close()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: not_found, Exception: internal})
    app.state.sync_service = service
    return app
