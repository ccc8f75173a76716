"""PostgresServerProvider: a PostgreSQL database as the hub of hub-and-spoke
synchronisation, behind the same ServerProvider interface as the SQLite hub.

It keeps no state of its own outside the database (the hub id, the tracked
tables, the change stamps and the tombstones all live in the schema
`sqlite_ct`), so several processes can serve one hub. Connections come from a
psycopg_pool.ConnectionPool, one per call: a download batch reads in one
REPEATABLE READ, READ ONLY transaction; an upload applies in one READ
COMMITTED transaction with the rows it writes locked. See _schema.py
(tracking), _anchor.py (why the anchor is a snapshot), _download.py,
_apply.py and _types.py (values).
"""
from __future__ import annotations

import contextlib
import uuid
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

from ..errors import ReinitialiseRequired, SyncError
from ..messages import DownloadBatch, DownloadRequest, ServerInfo, Upload, UploadResult
from ..model import ColumnSchema, ConflictResolver, SyncSchema, TableSchema
from ..server import ServerProvider
from . import _schema, _types
from ._anchor import PgAnchor, check_not_ahead
from ._apply import Applier
from ._download import read_batch
from ._schema import SCHEMA, PgTable, qi

__all__ = ["PostgresServerProvider"]

_UNSCOPED = b"\xff" * 8
_ATTEMPTS = 3


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
                 max_connections: int = 4) -> None:
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
    def _transaction(self, *, read_only: bool = False) -> Iterator[Any]:
        psycopg = self._psycopg
        try:
            with self.pool.connection() as conn:
                with conn.transaction():
                    cur = conn.cursor()
                    if read_only:
                        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    # Exact, stable text forms whatever the role's defaults:
                    # floats in full, timestamps in ISO and UTC.
                    cur.execute("SELECT set_config('TimeZone', 'UTC', true), "
                                "set_config('DateStyle', 'ISO, YMD', true), "
                                "set_config('extra_float_digits', '1', true)")
                    yield conn
        except SyncError:
            raise
        except psycopg.Error as exc:
            raise SyncError(f"sqlite-ct sync: the PostgreSQL hub failed: "
                            f"{str(exc).strip()}") from exc

    def _describe(self, cur: Any, tables: Sequence[str], provision: bool
                  ) -> Dict[str, PgTable]:
        out: Dict[str, PgTable] = {}
        for table in tables:
            info = _schema.describe(cur, self.schema, table)
            if provision and not info.tracked:
                info = _schema.provision(cur, info)
            out[table.lower()] = info
        return out

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
        server = self.server_id.bytes
        result: Dict[str, TableSchema] = {}
        initial: Dict[str, bytes] = {}
        current: Dict[str, bytes] = {}
        with self._transaction() as conn:
            cur = conn.cursor()
            infos = self._describe(cur, tables, True)
            now = cur.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
        for table in tables:
            info = infos[table.lower()]
            columns = tuple(ColumnSchema(c, _types.sqlite_type(cat), nn, _schema.sqlite_default(d))
                            for c, cat, nn, d in zip(info.columns, info.cats, info.not_null,
                                                     info.defaults))
            result[table] = TableSchema(info.name, columns, info.key)
            initial[table] = PgAnchor(server, b"\0" * 8, None).encode()
            current[table] = PgAnchor(server, _UNSCOPED, now).encode()
        return SyncSchema(result, initial, current)

    def apply_changes(self, upload: Upload) -> UploadResult:
        server = self.server_id.bytes
        anchors: Dict[str, Optional[PgAnchor]] = {}
        for table, blob in upload.received_anchors.items():
            decoded = PgAnchor.decode(blob, table) if blob else None
            anchors[table.lower()] = decoded
            if decoded is not None and decoded.server != server:
                raise ReinitialiseRequired(
                    table, f'sqlite-ct sync: the received anchor of table "{table}" was '
                           f"issued by another server; reinitialise the table")
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    cur = conn.cursor()
                    now = cur.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
                    for table, blob in upload.received_anchors.items():
                        check_not_ahead(anchors[table.lower()], None, now, table)
                    infos = self._describe(cur, [tc.table for tc in upload.tables], True)
                    applier = Applier(conn, infos, upload.client_id, anchors,
                                      self.conflict_resolver, self.on_apply_change_failed)
                    applier.apply(upload.tables)
                break
            except SyncError as exc:
                # Two uploads that touch the same rows can deadlock, and
                # PostgreSQL aborts one of them: run it again.
                retry = (self._psycopg.errors.DeadlockDetected,
                         self._psycopg.errors.SerializationFailure)
                if attempt == _ATTEMPTS or not isinstance(exc.__cause__, retry):
                    raise
        corrections = [tc for tc in applier.corrections.values() if len(tc)]
        return UploadResult(applier.applied, applier.failed, applier.conflicts, corrections)

    def get_changes(self, request: DownloadRequest) -> DownloadBatch:
        server = self.server_id.bytes
        with self._transaction(read_only=True) as conn:
            cur = conn.cursor()
            infos = self._describe(cur, [dt.table for dt in request.tables], False)
            return read_batch(cur, server, request, infos, self._filters)

    # -- retention --------------------------------------------------------
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
            return int(count)
