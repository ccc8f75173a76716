"""PostgresServerProvider: a PostgreSQL database as the hub of hub-and-spoke
synchronisation, behind the same ServerProvider interface as the SQLite hub.

It keeps no state of its own outside the database (the hub id, the tracked
tables, the change stamps and the tombstones all live in the schema
`sqlite_ct`), so several processes can serve one hub. Connections come from a
psycopg_pool.ConnectionPool, one per call: a download batch reads in one
REPEATABLE READ, READ ONLY transaction; an upload applies in one READ
COMMITTED transaction with the rows it writes locked.

Uploads keep the client's scope (a change to a key whose hub row is outside
the uploader's filter, or whose new version would be, is refused, never
applied; see _apply.py) and are exactly-once: an upload with a session is
applied in the same transaction that stores its receipt in
sqlite_ct.upload_receipts, and the same upload again returns the stored
result and applies nothing (only the client's latest session is kept).

time_limit() bounds the hub work of the calls made inside it (the sync
service's per-request limit) with PostgreSQL's own means: statement_timeout
and a cancel of the statement running at the deadline. See _schema.py
(tracking), _anchor.py (why the anchor is a snapshot), _download.py,
_apply.py and _types.py (values).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import threading
import time
import uuid
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import ReinitialiseRequired, SyncError
from ..messages import DownloadBatch, DownloadRequest, ServerInfo, Upload, UploadResult
from ..model import ColumnSchema, Conflict, ConflictResolver, SyncSchema, TableSchema
from ..server import ServerProvider, check_replica_claim, hub_behind
from . import _held, _marks, _schema, _types
from ._anchor import HubKey, PgAnchor, adopt_legacy, check_key_width, check_marks, check_not_ahead
from .._apply import apply_atomic
from ._apply import Applier
from ._download import read_batch, row_filter
from ._schema import OWNERS, RECEIPTS, REPLICAS, SCHEMA, PgTable, ensure_service_table, qi

__all__ = ["PostgresServerProvider", "HubTimeoutError", "HubBusyError"]


class HubTimeoutError(SyncError):
    """The hub work of a call ran past its time_limit() and was stopped
    (rolled back)."""


class HubBusyError(SyncError):
    """A row or table the call needed stayed locked by another transaction
    for longer than the provider's lock_timeout_ms (rolled back; retry)."""

_UNSCOPED = b"\xff" * 8
_ATTEMPTS = 3


class _Unbound(Exception):
    """The hub has no lineage yet, or was restored or copied: bind it
    (_schema.bind_hub) and run the call again."""


def _import_psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise SyncError("sqlite-ct sync: the PostgreSQL hub needs psycopg 3 and psycopg-pool; "
                        "pip install 'sqlite-ct[postgres]'") from None
    return psycopg, psycopg_pool


class PostgresServerProvider(ServerProvider):
    """The hub on PostgreSQL.

    `pool` is a psycopg_pool.ConnectionPool, or a connection URL / conninfo
    string ("postgresql://user@host/db"), for which the provider opens (and
    close() closes) a pool of up to `max_connections`. `schema` is where the
    served tables are (default "public"). `filters`, `conflict_resolver` and
    `on_apply_change_failed` work as in ServerSyncProvider; a filter is a
    PostgreSQL expression over the table's columns with :name parameters.
    """

    def __init__(self, pool: Union[str, Any], *, schema: str = "public",
                 conflict_resolver: Optional[ConflictResolver] = None,
                 on_apply_change_failed: Any = None,
                 filters: Optional[Mapping[str, str]] = None,
                 max_connections: int = 4, lock_timeout_ms: Optional[int] = None) -> None:
        psycopg, psycopg_pool = _import_psycopg()
        self._psycopg = psycopg
        self._owned = isinstance(pool, str)
        if self._owned:
            pool = psycopg_pool.ConnectionPool(pool, min_size=1, max_size=max_connections,
                                               open=True, name="sqlite-ct-hub")
        self.pool: Any = pool
        self.schema = schema
        self.conflict_resolver = conflict_resolver or ConflictResolver()
        self.on_apply_change_failed = on_apply_change_failed
        self._filters: Dict[str, Optional[str]] = {}
        for table, where in (filters or {}).items():
            self.set_filter(table, where)
        self._server_id: Optional[uuid.UUID] = None
        self.lock_timeout_ms = lock_timeout_ms
        self._limits = threading.local()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "PostgresServerProvider":
        """A provider with its own connection pool to `url` (postgresql://...)."""
        return cls(url, **kwargs)

    def close(self) -> None:
        """Close the pool if the provider opened it."""
        if self._owned:
            self.pool.close()

    def __enter__(self) -> "PostgresServerProvider":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_filter(self, table: str, where: Optional[str]) -> None:
        """Filter the rows of `table` sent to each client (None: no filter)."""
        self._filters[table.lower()] = where or None

    # -- connections ------------------------------------------------------
    @contextlib.contextmanager
    def time_limit(self, seconds: float) -> Iterator[None]:
        """Calls made by this thread inside the block stop after `seconds`
        (from now) with HubTimeoutError, their transaction rolled back: each
        transaction's statements get the time left as statement_timeout, and
        a statement still running at the deadline is cancelled."""
        previous = getattr(self._limits, "deadline", None)
        self._limits.deadline = time.monotonic() + seconds
        self._limits.seconds = seconds
        try:
            yield
        finally:
            self._limits.deadline = previous

    @contextlib.contextmanager
    def _transaction(self, *, read_only: bool = False) -> Iterator[Any]:
        psycopg = self._psycopg
        deadline = getattr(self._limits, "deadline", None)
        watchdog = None
        wait = {} if deadline is None else {"timeout": max(0.001, deadline - time.monotonic())}
        try:
            with self.pool.connection(**wait) as conn:
                if deadline is not None:
                    watchdog = _Watchdog(conn, deadline)
                try:
                    with conn.transaction():
                        cur = conn.cursor()
                        if read_only:
                            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, "
                                        "READ ONLY")
                        # Exact, stable text forms whatever the role's
                        # defaults: floats in full, timestamps in ISO and UTC.
                        cur.execute("SELECT set_config('TimeZone', 'UTC', true), "
                                    "set_config('DateStyle', 'ISO, YMD', true), "
                                    "set_config('extra_float_digits', '1', true)")
                        if self.lock_timeout_ms is not None:
                            cur.execute("SELECT set_config('lock_timeout', %s, true)",
                                        (str(int(self.lock_timeout_ms)),))
                        if watchdog is not None:
                            watchdog.start(cur)
                        yield conn
                finally:
                    if watchdog is not None:
                        watchdog.stop()
        except SyncError:
            raise
        except psycopg.Error as exc:
            if deadline is not None and (isinstance(exc, psycopg.errors.QueryCanceled)
                                         or time.monotonic() >= deadline):
                raise HubTimeoutError(
                    f"sqlite-ct sync: the hub work took longer than "
                    f"{self._limits.seconds:g} s and was stopped (rolled back)") from exc
            if type(exc).__name__ == "PoolTimeout":
                raise HubBusyError("sqlite-ct sync: the hub is busy: every connection of the "
                                   "provider's pool is in use; retry later") from exc
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise HubBusyError(f"sqlite-ct sync: the hub is busy: a row or table stayed "
                                   f"locked by another transaction for more than "
                                   f"{self.lock_timeout_ms} ms; retry later") from exc
            raise SyncError(f"sqlite-ct sync: the PostgreSQL hub failed: "
                            f"{str(exc).strip()}") from exc

    def _describe(self, cur: Any, tables: Sequence[str], provision: bool
                  ) -> Dict[str, PgTable]:
        out: Dict[str, PgTable] = {}
        if provision:
            # The secret and lineage exist from the start, so that a dump of
            # the hub holds them and its restore is seen as one.
            _schema.bind_hub(cur)
        for table in tables:
            info = _schema.describe(cur, self.schema, table)
            if provision and not info.tracked:
                info = _schema.provision(cur, info)
            out[table.lower()] = info
        return out

    def _key(self, cur: Any) -> HubKey:
        """The hub's anchor key, read in the call's own transaction, so no
        anchor is accepted or issued under the lineage of a hub that has since
        been restored."""
        found = _schema.hub_key(cur)
        if found is None:
            raise _Unbound
        server, lineage, secret = found
        return HubKey(server.bytes, lineage, secret)

    def _bound(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except _Unbound:
            with self._transaction() as conn:
                _schema.bind_hub(conn.cursor())
            return call(*args)

    @property
    def server_id(self) -> uuid.UUID:
        """The hub's id (sqlite_ct.hub_info), which every anchor carries."""
        if self._server_id is None:
            with self._transaction() as conn:
                self._server_id = _schema.server_id(conn.cursor())
        return self._server_id

    # -- ServerProvider ---------------------------------------------------
    def provision(self, *tables: str) -> None:
        """Track `tables` on the hub (idempotent, safe from several processes).
        get_schema() and apply_changes() provision the tables they are asked
        about."""
        with self._transaction() as conn:
            self._describe(conn.cursor(), tables, True)

    def deprovision(self, *tables: str) -> None:
        """Stop tracking `tables` on the hub: drop their triggers, side tables
        and registry rows (the tables themselves are left alone). Clients of
        a table provisioned again must reinitialise it."""
        with self._transaction() as conn:
            cur = conn.cursor()
            for table in tables:
                if not _schema.deprovision(cur, self.schema, table):
                    raise SyncError(f'sqlite-ct sync: table "{table}" is not provisioned on '
                                    f"the hub")

    def get_server_info(self) -> ServerInfo:
        return ServerInfo(self.server_id)

    def get_schema(self, tables: Sequence[str]) -> SyncSchema:
        return self._bound(self._schema_of, tables, True)

    def describe_schema(self, tables: Sequence[str]) -> SyncSchema:
        return self._bound(self._schema_of, tables, False)

    def _schema_of(self, tables: Sequence[str], provision: bool) -> SyncSchema:
        server = self.server_id.bytes
        result: Dict[str, TableSchema] = {}
        initial: Dict[str, bytes] = {}
        current: Dict[str, bytes] = {}
        with self._transaction() as conn:
            cur = conn.cursor()
            infos = self._describe(cur, tables, provision)
            key = self._key(cur)
            seen = _marks.snapshot_and_marks(cur, ())
            if provision or seen.newest is None:
                # The current anchors name this transaction's snapshot, which
                # the mark it writes covers.
                now, mark = seen.now, _marks.make_here(cur)
            else:
                # describe_schema(), on every sync: no write; its current
                # anchors name the newest mark's own (older) snapshot.
                mark, _, now = seen.newest
        for table in tables:
            if not infos[table.lower()].tracked:
                raise SyncError(f'sqlite-ct sync: table "{infos[table.lower()].name}" is not '
                                f"provisioned on the hub")
            info = infos[table.lower()]
            columns = tuple(ColumnSchema(c, _types.sqlite_type(cat), nn, _schema.sqlite_default(d))
                            for c, cat, nn, d in zip(info.columns, info.cats, info.not_null,
                                                     info.defaults))
            result[table] = TableSchema(info.name, columns, info.key)
            initial[table] = PgAnchor(server, b"\0" * 8, None).encode(key, info.name)
            current[table] = PgAnchor(server, _UNSCOPED, now, mark=mark).encode(key, info.name)
        return SyncSchema(result, initial, current)

    def apply_changes(self, upload: Upload) -> UploadResult:
        return self._bound(self._apply_changes, upload)

    def _apply_changes(self, upload: Upload) -> UploadResult:
        for tc in upload.tables:
            if tc.reset:
                # reset means "delete every row first": a download's snapshot
                # semantics, never a client's to ask of the hub.
                raise SyncError(f'sqlite-ct sync: the upload of table "{tc.table}" asks to '
                                f"reset the hub table; uploads cannot reset tables")
        digest = None if upload.session is None else _digest(upload)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    cur = conn.cursor()
                    key = self._key(cur)
                    anchors: Dict[str, Optional[PgAnchor]] = {
                        table.lower(): PgAnchor.decode(blob, table, key) if blob else None
                        for table, blob in upload.received_anchors.items()}
                    if digest is not None:
                        stored = self._receipt(cur, upload, digest)
                        if stored is not None:
                            return stored
                    seen = _marks.snapshot_and_marks(
                        cur, [a.mark for a in anchors.values() if a is not None])
                    found = seen.found | ({seen.genesis[0]} if seen.genesis else set())
                    for table in upload.received_anchors:
                        anchor = adopt_legacy(anchors[table.lower()], seen.genesis, table)
                        anchors[table.lower()] = anchor
                        check_marks([(table, anchor)], found)
                        check_not_ahead(anchor, None, seen.now, table)
                    infos = self._describe(cur, [tc.table for tc in upload.tables], True)
                    for name, info in infos.items():
                        check_key_width(anchors.get(name), len(info.key), info.name)
                    scopes = {name: row_filter(info.name, self._filters[name],
                                               upload.parameters)
                              for name, info in infos.items() if self._filters.get(name)}

                    def attempt(excluded: Dict[int, Conflict]) -> Tuple[Applier,
                                                                        Dict[int, Conflict]]:
                        applier = Applier(conn, infos, upload.client_id, anchors,
                                          self.conflict_resolver, self.on_apply_change_failed,
                                          scopes, excluded)
                        applier.apply(upload.tables)
                        return applier, applier.failed_transactions

                    # A client transaction is applied whole or not at all.
                    applier = apply_atomic(conn.transaction, attempt)
                    corrections = [tc for tc in applier.corrections.values() if len(tc)]
                    corrected: Dict[str, List[tuple]] = {}
                    for tc in corrections:
                        if tc.table.lower() in scopes and tc.updates:
                            applier.held.setdefault(tc.table.lower(), []).extend(
                                tuple(row[i] for i in infos[tc.table.lower()].key_pos)
                                for row in tc.updates)
                        if tc.table.lower() in scopes and tc.deletes:
                            corrected.setdefault(tc.table.lower(), []).extend(tc.deletes)
                    # Deletes the client made itself leave the record after
                    # its next download past this upload; deletes the client
                    # applies with this result (its refused rows) after its
                    # next request (_held.corrected).
                    for name, keys in applier.deleted.items():
                        _held.gone(cur, upload.client_id, infos[name], keys, None)
                    for name, keys in corrected.items():
                        _held.corrected(cur, upload.client_id, infos[name], keys)
                    for name, keys in applier.held.items():
                        _held.hold(cur, upload.client_id, infos[name], keys)
                    out = UploadResult(applier.applied, applier.failed,
                                       applier.refused + applier.conflicts, corrections)
                    if digest is not None:
                        self._store_receipt(cur, upload, digest, out)
                break
            except SyncError as exc:
                # Two uploads that touch the same rows can deadlock, and
                # PostgreSQL aborts one of them: run it again.
                retry = (self._psycopg.errors.DeadlockDetected,
                         self._psycopg.errors.SerializationFailure)
                if attempt == _ATTEMPTS or not isinstance(exc.__cause__, retry):
                    raise
        return out

    def _receipt(self, cur: Any, upload: Upload, digest: bytes) -> Optional[UploadResult]:
        """The stored result of this very upload, or None. Holds the client's
        upload lock to the end of the transaction, so the same upload sent
        twice at once (to two service processes) is applied once."""
        from .. import wire
        table = ensure_service_table(cur, RECEIPTS)
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"sqlite_ct:upload:{upload.client_id}",))
        found = cur.execute(f"SELECT digest, result FROM {table} WHERE client_id = %s "
                            f"AND session = %s AND batch = %s",
                            (upload.client_id, upload.session, upload.batch)).fetchone()
        if found is not None and bytes(found[0]) == digest:
            return wire.decode(found[1], UploadResult)
        return None

    def _store_receipt(self, cur: Any, upload: Upload, digest: bytes,
                       result: UploadResult) -> None:
        from .. import wire
        table = f"{qi(SCHEMA)}.{qi(RECEIPTS)}"
        cur.execute(f"DELETE FROM {table} WHERE client_id = %s AND session <> %s",
                    (upload.client_id, upload.session))
        cur.execute(f"INSERT INTO {table} (client_id, session, batch, digest, result) "
                    f"VALUES (%s, %s, %s, %s, %s) ON CONFLICT (client_id, session, batch) "
                    f"DO UPDATE SET digest = excluded.digest, result = excluded.result, "
                    f"applied_at = now()",
                    (upload.client_id, upload.session, upload.batch, digest,
                     wire.encode(result).decode("ascii")))

    def get_changes(self, request: DownloadRequest) -> DownloadBatch:
        return self._bound(self._get_changes, request)

    def _get_changes(self, request: DownloadRequest) -> DownloadBatch:
        with self._transaction(read_only=True) as conn:
            cur = conn.cursor()
            key = self._key(cur)
            infos = self._describe(cur, [dt.table for dt in request.tables], False)
            pending = read_batch(cur, key, request, infos, self._filters)
        # Deletes reach only the clients that may hold the key (_held.py).
        filtered = {t.table.lower(): t for t in request.tables
                    if self._filters.get(t.table.lower()) and not t.snapshot}
        if not filtered and not pending.needs_mark:
            return pending.finish(None)
        tables = []
        news = {st.info.name: st.anchor for st in pending.states}
        with self._transaction() as conn:
            cur = conn.cursor()
            # The mark of the anchors' new snapshot, committed after it
            # (_marks.py) and before any client holds them.
            mark = (_marks.make(cur, pending.upper, alone=not filtered)
                    if pending.needs_mark else None)
            counter = _held.generation(cur, request.client_id) if filtered else 0
            for name, asked in filtered.items():
                info = infos[name]
                decoded = PgAnchor.decode(asked.anchor, asked.table, key) if asked.anchor \
                    else None
                if _first_download(decoded):
                    _held.start(cur, request.client_id, info)
                elif not _held.recorded(cur, request.client_id, info):
                    raise ReinitialiseRequired(
                        info.name, f"sqlite-ct sync: the hub has no record of which rows of "
                                   f'filtered table "{info.name}" this client holds (its first '
                                   f"download predates the record, the table was filtered "
                                   f"later, or the hub forgot this client after a long "
                                   f"absence), so it cannot tell which deletes to send; "
                                   f"reinitialise the table (SyncAgent.reinitialise() or "
                                   f"`sqlite-ct reinitialise`; it keeps unsent local changes)")
                else:
                    _held.prune(cur, request.client_id, info,
                                None if decoded is None else decoded.complete, counter)
            for tc in pending.tables:
                asked = filtered.get(tc.table.lower())
                if asked is None:
                    tables.append(tc)
                    continue
                info = infos[tc.table.lower()]
                deletes = _held.held_deletes(cur, request.client_id, info, tc.deletes)
                # The snapshot the client's new anchor names: once its
                # xmin passes what this transaction sees, the deletes are in.
                upper = news[info.name].latest
                xmax = cur.execute("SELECT pg_snapshot_xmax(%s::pg_snapshot)::text",
                                   (upper,)).fetchone()[0]
                _held.gone(cur, request.client_id, info, deletes, xmax)
                _held.hold(cur, request.client_id, info,
                           (tuple(row[i] for i in info.key_pos)
                            for row in itertools.chain(tc.inserts, tc.updates)))
                tc = tc if len(deletes) == len(tc.deletes) else dataclasses.replace(
                    tc, deletes=deletes)
                if len(tc) or tc.reset:
                    tables.append(tc)
        batch = pending.finish(mark)
        return dataclasses.replace(batch, tables=tables) if filtered else batch

    def claim_replica(self, client_id: uuid.UUID, generation: Optional[bytes],
                      next_generation: bytes) -> None:
        """Replica generations per client id live in sqlite_ct.client_replicas;
        the verdict is the SQLite hub's (check_replica_claim). The row is locked
        while it is decided, so two sessions of copies cannot both win."""
        with self._transaction() as conn:
            cur = conn.cursor()
            table = ensure_service_table(cur, REPLICAS)
            row = cur.execute(f"SELECT generation, previous FROM {table} WHERE client_id = %s "
                              f"FOR UPDATE", (client_id,)).fetchone()
            if row is not None and check_replica_claim(
                    client_id, bytes(row[0]), None if row[1] is None else bytes(row[1]),
                    generation, next_generation):
                return
            if hub_behind(None if row is None else bytes(row[0]), generation):
                _held.forget_client(cur, client_id)
            cur.execute(f"INSERT INTO {table} (client_id, generation, previous) "
                        f"VALUES (%s, %s, %s) ON CONFLICT (client_id) DO UPDATE SET "
                        f"generation = excluded.generation, previous = excluded.previous, "
                        f"last_seen = now()", (client_id, next_generation, generation))

    # -- the sync service ---------------------------------------------------
    def claim_client(self, client_id: uuid.UUID, user: str) -> str:
        """Register `client_id` to `user` unless it is registered already
        (sqlite_ct.client_owners); returns the user it is registered to. The
        sync service refuses a client id registered to another user."""
        with self._transaction() as conn:
            cur = conn.cursor()
            table = ensure_service_table(cur, OWNERS)
            cur.execute(f"INSERT INTO {table} (client_id, owner) VALUES (%s, %s) "
                        f"ON CONFLICT (client_id) DO NOTHING", (client_id, user))
            return cur.execute(f"SELECT owner FROM {table} WHERE client_id = %s",
                               (client_id,)).fetchone()[0]

    def prepare_service(self) -> None:
        """Create the tables the sync service keeps in the hub (client
        owners, upload receipts) now rather than on first use."""
        with self._transaction() as conn:
            cur = conn.cursor()
            for name in (OWNERS, RECEIPTS):
                ensure_service_table(cur, name)

    # -- retention --------------------------------------------------------
    def forget_clients(self, *, older_than_days: float) -> int:
        """Drop the record of held keys (sqlite_ct.client_keys) of every
        client whose latest session (its replica claim) is older than
        `older_than_days` days. Such a client, if it comes back, is told to
        reinitialise its filtered tables (ReinitialiseRequired). Returns how
        many clients were forgotten."""
        if isinstance(older_than_days, bool) or not isinstance(older_than_days, (int, float)) \
                or not older_than_days >= 0:
            raise SyncError(f"sqlite-ct sync: forget_clients(): older_than_days must be a "
                            f"number >= 0, not {older_than_days!r}")
        with self._transaction() as conn:
            return _held.forget_clients(conn.cursor(), older_than_days)

    def purge_tombstones(self, table: str, *, older_than_days: float) -> int:
        """Delete `table`'s tombstones deleted more than `older_than_days` days
        ago. Returns how many were deleted. A client whose anchor predates a
        purged tombstone is told to reinitialise the table."""
        if isinstance(older_than_days, bool) or not isinstance(older_than_days, (int, float)) \
                or not older_than_days >= 0:
            raise SyncError(f"sqlite-ct sync: purge_tombstones(): older_than_days must be a "
                            f"number >= 0, not {older_than_days!r}")
        with self._transaction() as conn:
            cur = conn.cursor()
            info = _schema.describe(cur, self.schema, table)
            if not info.tracked:
                raise SyncError(f'sqlite-ct sync: table "{info.name}" is not provisioned on '
                                f"the hub")
            newest, count = cur.execute(
                f"WITH gone AS (DELETE FROM {info.qside} WHERE deleted AND deleted_at <= "
                f"now() - make_interval(secs => %s) AND change_xid < "
                f"pg_snapshot_xmin(pg_current_snapshot()) RETURNING change_xid) "
                f"SELECT max(change_xid::text::numeric)::text, count(*) FROM gone",
                (older_than_days * 86400.0,)).fetchone()
            if count:
                cur.execute(f"UPDATE {qi(SCHEMA)}.tracked_tables SET min_valid_xid = "
                            f"greatest(min_valid_xid, %s::xid8) WHERE table_schema = %s "
                            f"AND table_name = %s", (newest, info.schema, info.name))
                # Marks only anchors expired for every table still carry.
                _marks.prune(cur)
            return int(count)


def _first_download(decoded: Optional[PgAnchor]) -> bool:
    """Whether a download request starts a client's first download of the
    table (no anchor, the initial anchor of get_schema(), or the anchor of a
    table that never downloaded)."""
    return decoded is None or (decoded.window is None and (
        decoded.complete is None or decoded.fingerprint == _UNSCOPED))


def _digest(upload: Upload) -> bytes:
    """What makes a retried upload the same upload: its changes, anchors and
    parameters (not the session and batch that name it)."""
    from .. import wire
    return hashlib.sha256(wire.encode(dataclasses.replace(upload, session=None, batch=0))
                          ).digest()


class _Watchdog:
    """Bounds one transaction by a deadline: statement_timeout is the time
    left, and a timer cancels the statement running at the deadline (only
    while this transaction holds the connection)."""

    def __init__(self, conn: Any, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self._lock = threading.Lock()
        self._active = False
        self._timer: Optional[threading.Timer] = None

    def start(self, cur: Any) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            import psycopg
            raise psycopg.errors.QueryCanceled("the time limit was reached")
        cur.execute("SELECT set_config('statement_timeout', %s, true)",
                    (str(max(1, int(left * 1000))),))
        with self._lock:
            self._active = True
        self._timer = threading.Timer(left, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._active:
                try:
                    if hasattr(self.conn, "cancel_safe"):      # psycopg 3.2+
                        self.conn.cancel_safe(timeout=5.0)
                    else:
                        self.conn.cancel()
                except Exception:       # statement_timeout still holds
                    pass

    def stop(self) -> None:
        with self._lock:
            self._active = False
        if self._timer is not None:
            self._timer.cancel()
