"""SQL plumbing shared by the client and server providers: transactions,
executemany, the shape of a table, which host errors are row errors.

Generated SQL quotes every identifier with quote_identifier and binds every
value; the only SQL text taken from users is a server-side row filter, which
the hub's owner writes (it is code, like a SyncAdapter command).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import uuid
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

from .. import _conn
from ..anchors import client_id
from ..keys import key_columns
from ..tracking import require_tracked, table_tracking
from .errors import SyncError

q = _conn.quote_identifier
_labels = itertools.count(1)

# SQLite primary result codes that mean "this row cannot be written" rather
# than "the database cannot be used": CONSTRAINT (also RAISE(ABORT) in a
# trigger) and MISMATCH (STRICT tables, rowid type).
_ROW_ERROR_CODES = (19, 20)


def rows(conn: Any, sql: str, params: Any = ()) -> Iterator[tuple]:
    """Like _conn.rows, but params may also be a dict of named parameters."""
    with _conn.translated():
        cursor = conn.cursor()
        result = cursor.execute(sql, params if isinstance(params, dict) else tuple(params))
        yield from (result if result is not None else ())


def execute(conn: Any, sql: str, params: Any = ()) -> None:
    for _ in rows(conn, sql, params):
        pass


def value(conn: Any, sql: str, params: Any = ()) -> Any:
    for row in rows(conn, sql, params):
        return row[0]
    return None


def in_transaction(conn: Any) -> bool:
    getautocommit = getattr(conn, "getautocommit", None)
    if getautocommit is not None:  # apsw
        return not getautocommit()
    return bool(conn.in_transaction)


@contextlib.contextmanager
def transaction(conn: Any, name: str = "sqlite_ct_sync") -> Iterator[None]:
    """One write transaction: BEGIN IMMEDIATE outside a transaction (the write
    lock is taken up front, so a concurrent writer cannot make the upgrade fail
    half way), a SAVEPOINT inside the caller's."""
    if in_transaction(conn):
        with _conn.savepoint(conn, name):
            yield
        return
    _conn.execute(conn, "BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            _conn.execute(conn, "ROLLBACK")
        raise
    _conn.end_block(conn, "COMMIT", True)


@contextlib.contextmanager
def savepoint(conn: Any) -> Iterator[None]:
    label = f"sqlite_ct_row_{next(_labels)}"
    _conn.execute(conn, f'SAVEPOINT "{label}"')
    try:
        yield
    except BaseException:
        _conn.execute(conn, f'ROLLBACK TO "{label}"')
        _conn.execute(conn, f'RELEASE "{label}"')
        raise
    _conn.execute(conn, f'RELEASE "{label}"')


def database_id(conn: Any) -> "uuid.UUID":
    """sqlite_ct.client_id(), but without a read transaction that turns into
    a write one: an id that exists is read, a missing one is created in a
    transaction whose write lock is taken up front, so a busy timeout is
    honoured (an upgraded read transaction fails at once with SQLITE_BUSY)."""
    if table_exists(conn, "__sysSyncSubscriptions") is not None:
        blob = value(conn, "SELECT ClientId FROM __sysSyncSubscriptions ORDER BY rowid LIMIT 1")
        if blob is not None:
            return uuid.UUID(bytes_le=bytes(blob))
    with transaction(conn, "sqlite_ct_sync_id"):
        return client_id(conn)


def executemany(conn: Any, sql: str, seq: Iterable[Sequence[Any]]) -> None:
    with _conn.translated():
        conn.cursor().executemany(sql, seq)


def is_row_error(exc: BaseException) -> bool:
    """A constraint or datatype error raised by writing one row."""
    code = getattr(exc, "result", None)               # apsw
    if code is None:
        code = getattr(exc, "sqlite_errorcode", None)  # sqlite3 (3.11+)
    if code is not None:
        return (code & 0xFF) in _ROW_ERROR_CODES
    import sqlite3
    return isinstance(exc, sqlite3.IntegrityError)


def host_errors() -> Tuple[type, ...]:
    return _conn._host_errors()


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """A table as sync sees it. `columns` are the user columns that can be
    written (no __sys*, no generated columns); `cursor` names what orders its
    rows for batching: the rowid (under a name no column shadows) or, for a
    WITHOUT ROWID table, the key columns."""
    name: str
    columns: Tuple[str, ...]
    key: Tuple[str, ...]
    without_rowid: bool
    rowid: str
    tracked: bool
    enable_bsn: int
    min_valid: int

    @property
    def cursor(self) -> Tuple[str, ...]:
        return self.key if self.without_rowid else (self.rowid,)

    def key_match(self, alias: str, values: Sequence[str]) -> str:
        """alias."k1" IS v1 AND ... (IS: keys may hold NULL; it uses the index)."""
        prefix = f"{alias}." if alias else ""
        return " AND ".join(f"{prefix}{q(k)} IS {v}" for k, v in zip(self.key, values))


def table_exists(conn: Any, table: str) -> Optional[str]:
    """The stored name of a table in main (case-insensitive), or None."""
    return value(conn, "SELECT name FROM main.sqlite_schema WHERE type = 'table' "
                             "AND name = ? COLLATE NOCASE", (table,))


class TableInfoCache:
    """table_info() per connection, re-read when the schema changes
    (PRAGMA schema_version) or the table's tracking registry row does."""

    def __init__(self) -> None:
        self._cache: dict = {}

    def get(self, conn: Any, table: str) -> TableInfo:
        version = value(conn, "PRAGMA schema_version")
        key = (id(conn), table.lower())
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version and hit[1] is conn:
            info = hit[2]
            if not info.tracked:
                return info
            now = table_tracking(conn, info.name)
            if now is not None and (now.enable_bsn, now.min_valid_csn) == (info.enable_bsn,
                                                                           info.min_valid):
                return info
        info = table_info(conn, table)
        self._cache[key] = (version, conn, info)
        return info


def table_info(conn: Any, table: str) -> TableInfo:
    name = table_exists(conn, table)
    if name is None:
        raise SyncError(f'sqlite-ct sync: table "{table}" does not exist')
    columns: List[str] = []
    names = set()
    for col, hidden in rows(conn, "SELECT name, hidden FROM pragma_table_xinfo(?) "
                                        "ORDER BY cid", (name,)):
        names.add(col.lower())
        if not col.lower().startswith("__sys") and hidden == 0:
            columns.append(col)
    key = tuple(key_columns(conn, name))
    if not key:
        raise SyncError(f'sqlite-ct sync: table "{name}" has no PRIMARY KEY; '
                        f"sync needs one to identify rows")
    without_rowid = bool(value(
        conn, "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", (name,)))
    rowid = next((r for r in ("rowid", "_rowid_", "oid") if r not in names), "rowid")
    tracked, enable_bsn, min_valid = False, 0, 0
    tracking = table_tracking(conn, name)
    if tracking is not None:
        if tracking.portable:
            # Portable triggers have no apply mode and no tracking context:
            # every row sync applied would be sent back as a local change,
            # and could overwrite a newer version there.
            raise SyncError(
                f'sqlite-ct sync: table "{name}" is tracked in portable mode, which '
                f"cannot tell rows applied by sync from local changes; switch it to "
                f'native mode with sqlite_ct.create_schema(conn, "{name}") (its pending '
                f"changes are kept)")
        tracked, enable_bsn, min_valid = True, tracking.enable_bsn, tracking.min_valid_csn
    if tracked:
        # Read once per schema version (TableInfoCache): a table rebuilt by
        # another tool keeps its registry row but lost its triggers, and
        # serving or applying it would report no changes, silently.
        require_tracked(conn, name, "sync")
    return TableInfo(name, tuple(columns), key, without_rowid, rowid, tracked,
                     enable_bsn, min_valid)


def check_columns(info: TableInfo, columns: Sequence[str], key_columns_: Sequence[str],
                  where: str) -> None:
    """Incoming columns must exist here and the keys must agree: a column the
    other side has and this one lacks would be dropped silently otherwise."""
    local = {c.lower() for c in info.columns}
    missing = [c for c in columns if c.lower() not in local]
    if missing:
        # A client compares its tables with the hub's before each sync and
        # adds the hub's new columns (SyncAgent); one added since then is
        # taken by the next sync.
        advice = ("synchronise again: a sync adds the hub's new columns" if where == "client"
                  else "add it (ALTER TABLE ... ADD COLUMN) or reinitialise the table")
        raise SyncError(
            f'sqlite-ct sync: table "{info.name}" on the {where} has no column '
            f"{', '.join(repr(c) for c in missing)}; {advice}")
    absent = [k for k in info.key if k.lower() not in {c.lower() for c in columns}]
    if absent or [k.lower() for k in key_columns_] != [k.lower() for k in info.key]:
        raise SyncError(
            f'sqlite-ct sync: table "{info.name}" has primary key ({", ".join(info.key)}) on '
            f'the {where} but ({", ".join(key_columns_)}) on the other side')
