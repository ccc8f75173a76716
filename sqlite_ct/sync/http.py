"""HttpServerProvider: the ServerProvider of a remote sync service
(sqlite_ct.server, docs/server.md), for SyncAgent.

    from sqlite_ct.sync import ClientSyncProvider, SyncAgent
    from sqlite_ct.sync.http import HttpServerProvider
    server = HttpServerProvider("https://sync.example.com", token="...")
    SyncAgent(ClientSyncProvider(conn), server, ["notes"]).synchronize()

Every call is one HTTP request carrying a wire message (wire.py). A request
that fails on the way (connection refused or cut, a timeout, a 5xx, a 503
busy) is sent again, unchanged, after an exponential backoff, up to `retries`
times. That is safe: downloads only read, and an upload names itself by
(client, session, batch), so the service applies it at most once and answers
a repeated one with the stored result. Other failures raise
RemoteError at once: 401 (credentials), 403 (forbidden), 410 (the anchor has
expired: reinitialise), 4xx (a bad request). Needs httpx (the "server" extra).
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import random
import ssl
import time
from typing import Any, Optional, Sequence, Tuple, Type, TypeVar

import httpx

from . import wire
from .errors import ReinitialiseRequired, ReplicaCopied, SyncError
from .messages import DownloadBatch, DownloadRequest, ServerInfo, Upload, UploadResult
from .model import SyncSchema
from .server import ServerProvider
from .wire import ErrorReply, ReplicaClaim, SchemaRequest, TableList, WireError

__all__ = ["HttpServerProvider", "RemoteError", "RemoteReinitialiseRequired",
           "RemoteReplicaCopied"]

T = TypeVar("T")
_GZIP_MIN = 1024


class RemoteError(SyncError):
    """The sync service refused a request, or could not be reached after the
    retries. `status` is the HTTP status (None when no answer came), `code` the
    service's stable error code ("unauthorized", "token_expired", "forbidden",
    "reinitialise", "too_large", "malformed", ... or "unreachable")."""

    def __init__(self, message: str, *, status: Optional[int], code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class RemoteReinitialiseRequired(RemoteError, ReinitialiseRequired):
    """The service answered 410 "reinitialise" (an expired, corrupt, forged
    or pre-restore anchor): a ReinitialiseRequired, so SyncAgent handles it
    as it does with an in-process hub; `table` is None (the message names it)."""

    def __init__(self, message: str, *, status: Optional[int], code: str) -> None:
        SyncError.__init__(self, message)
        self.status, self.code, self.table = status, code, None


class RemoteReplicaCopied(RemoteError, ReplicaCopied):
    """The service answered 409 "replica_copied": this client database is a
    copy of another, or restored from a backup; call SyncAgent.reidentify()."""


_REMOTE_ERRORS = {"reinitialise": RemoteReinitialiseRequired,
                  "replica_copied": RemoteReplicaCopied}


class HttpServerProvider(ServerProvider):
    """A ServerProvider over HTTP.

    url: the service's base URL (http:// or https://). token: the bearer
    token. timeout: seconds per request (connect, read, write). retries: how
    many times a failed request is sent again (backoff 0.2 s doubling, at most
    5 s, with jitter). verify: TLS verification (True, False, or a CA bundle
    path, as httpx takes it)."""

    def __init__(self, url: str, *, token: str, timeout: float = 30.0, retries: int = 5,
                 verify: Any = True, client: Optional[httpx.Client] = None) -> None:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http:// or https:// URL with a host: {url!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError("retries must be an integer >= 0")
        self.url = url.rstrip("/")
        self.retries = retries
        if isinstance(verify, (str, os.PathLike)):
            verify = ssl.create_default_context(cafile=os.fspath(verify))
        self._http = client or httpx.Client(timeout=timeout, verify=verify,
                                            headers={"Accept-Encoding": "gzip"})
        self._http.headers["Authorization"] = f"Bearer {token}"
        self._server_info: Optional[ServerInfo] = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "HttpServerProvider":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the ServerProvider calls ------------------------------------------------
    def get_server_info(self) -> ServerInfo:
        if self._server_info is None:
            self._server_info = self._call("GET", "/v1/info", None, ServerInfo)
        return self._server_info

    def tables(self) -> Tuple[str, ...]:
        """The tables the service offers."""
        return self._call("GET", "/v1/tables", None, TableList).tables

    def get_schema(self, tables: Sequence[str]) -> SyncSchema:
        return self._call("POST", "/v1/schema", SchemaRequest(tuple(tables)), SyncSchema)

    def describe_schema(self, tables: Sequence[str]) -> SyncSchema:
        return self._call("POST", "/v1/schema/current", SchemaRequest(tuple(tables)),
                          SyncSchema)

    def claim_replica(self, client_id: Any, generation: Optional[bytes],
                      next_generation: bytes) -> None:
        self._call("POST", "/v1/replica", ReplicaClaim(client_id, generation, next_generation),
                   ServerInfo)

    def apply_changes(self, upload: Upload) -> UploadResult:
        if upload.session is None:
            # Retries below must be recognisable as the same upload.
            upload = dataclasses.replace(upload, session=os.urandom(16))
        return self._call("POST", "/v1/upload", upload, UploadResult)

    def get_changes(self, request: DownloadRequest) -> DownloadBatch:
        return self._call("POST", "/v1/download", request, DownloadBatch)

    # -- plumbing ------------------------------------------------------------------
    def _call(self, method: str, path: str, message: Any, expect: Type[T]) -> T:
        headers = {}
        body = None
        if message is not None:
            body = wire.encode(message)
            headers["Content-Type"] = "application/json"
            if len(body) >= _GZIP_MIN:
                body = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
        url = self.url + path
        attempt = 0
        while True:
            problem: str
            try:
                response = self._http.request(method, url, content=body, headers=headers)
                data = response.content
            except httpx.UnsupportedProtocol as exc:
                raise RemoteError(f"sqlite-ct sync: {url}: {exc}", status=None,
                                  code="unreachable") from None
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc or 'connection failed'}"
            else:
                if response.status_code == 200:
                    return wire.decode(data, expect)
                reply = _error_reply(data)
                retry = response.status_code >= 500 or (reply is not None and reply.retry)
                if not retry:
                    cls = _REMOTE_ERRORS.get(reply.code, RemoteError) if reply else RemoteError
                    raise cls(
                        f"sqlite-ct sync: {url} answered {response.status_code} "
                        + (f"{reply.code}: {reply.message}" if reply
                           else response.reason_phrase),
                        status=response.status_code,
                        code=reply.code if reply else f"http_{response.status_code}")
                problem = f"{response.status_code} " + (reply.message if reply
                                                        else response.reason_phrase)
            if attempt >= self.retries:
                raise RemoteError(f"sqlite-ct sync: {url} failed after {attempt + 1} attempt(s): "
                                  f"{problem}; nothing was lost, sync again later",
                                  status=None, code="unreachable")
            time.sleep(min(5.0, 0.2 * 2 ** attempt) * (0.5 + random.random() / 2))
            attempt += 1


def _error_reply(data: bytes) -> Optional[ErrorReply]:
    try:
        return wire.decode(data, ErrorReply)
    except WireError:
        return None
