"""Turning change tracking on and off, and the per-connection tracking state.

Each function says which SQL function of the extension it runs; the SQL surface
is documented in docs/sql-reference.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import uuid
from typing import Any, Iterator, List, Optional

from . import _conn
from .errors import NotTrackedError, TableError
from .reconcile import rearm, reconcile

__all__ = [
    "TrackingOptions",
    "create_schema",
    "disable_tracking",
    "drop_column",
    "is_tracked",
    "tracked_tables",
    "set_tracking_context",
    "tracking_context",
    "last_committed_csn",
    "current_bsn",
    "applying_server_changes",
    "applying_local_changes",
    "TableTracking",
    "table_tracking",
    "RowStamps",
    "row_stamps",
    "commit_time",
    "newest_csn_committed_by",
]

log = logging.getLogger(__name__)


class TrackingOptions(enum.IntFlag):
    """Which operations are tracked (SQL CE's TrackingOptions)."""
    INSERT = 1
    UPDATE = 2
    DELETE = 4
    ALL = 7


def _table_name(table: str, func: str) -> str:
    if not isinstance(table, str) or not table:
        raise TableError(f"sqlite-ct: {func}() needs a table name, got {table!r}")
    return table


def create_schema(conn: Any, table: str, *,
                  options: TrackingOptions = TrackingOptions.ALL,
                  mode: str = "native") -> int:
    """Track changes to `table`; runs sqlite_ct_create_schema(table, options, mode).

    mode="native" (the default) installs triggers that call the extension, so a
    connection that has not loaded it cannot write the table. mode="portable"
    installs pure-SQL triggers: writers that never load the extension (the
    sqlite3 shell, DB browsers, other languages) are tracked too.

    Adds __sysChangeTxBsn, __sysInsertTxBsn and __sysTrackingContext, creates the
    system tables when missing, installs the triggers and registers the table.
    Idempotent (a second call re-installs the triggers and updates the options);
    works inside or outside the caller's transaction. Rows already in the table
    count as inserted by the enabling transaction, so a first upload sends them.
    Returns the BSN of that enabling transaction.
    """
    _table_name(table, "create_schema")
    opts = int(TrackingOptions(options))
    if not 1 <= opts <= 7:
        raise ValueError("options must include at least one of INSERT, UPDATE, DELETE")
    if mode not in ("native", "portable"):
        raise ValueError(f"mode must be 'native' or 'portable', got {mode!r}")
    # A table renamed since its tracking was armed is followed first, so a
    # new table under its old name does not take its objects' names.
    reconcile(conn, order=False)
    with _conn.writing(conn, "sqlite_ct_create_schema"):
        bsn = _conn.value(conn, "SELECT sqlite_ct_create_schema(?, ?, ?)", (table, opts, mode))
    log.info('create_schema: tracking "%s" (options %s, %s mode), enabled by BSN %s',
             table, TrackingOptions(opts).name or opts, mode, bsn)
    return int(bsn)


def disable_tracking(conn: Any, table: str) -> None:
    """Stop tracking `table`; runs sqlite_ct_disable_tracking(table).

    Drops the triggers, the change index and the three __sys columns, and
    deletes the table's tombstones and its sync article (anchors). Raises
    NotTrackedError when the table is not tracked."""
    _table_name(table, "disable_tracking")
    with _conn.writing(conn, "sqlite_ct_disable_tracking"):
        _conn.value(conn, "SELECT sqlite_ct_disable_tracking(?)", (table,))
    log.info('disable_tracking: stopped tracking "%s"', table)


def drop_column(conn: Any, table: str, column: str) -> None:
    """ALTER TABLE `table` DROP COLUMN `column` for a tracked table.

    The guard index of a native-mode table indexes every column, so SQLite
    refuses a plain DROP COLUMN ("error in index __sysct_guard_T after drop
    column"). In one transaction (a savepoint inside the caller's), this
    drops the guard, drops the column and re-arms the table with the options
    and mode it was tracked with; rows, stamps, tombstones and anchors are
    kept, so unsynced changes stay pending. SQLite's own refusals (a key
    column, an indexed column, a column a view or trigger uses) come through
    unchanged and leave everything as it was. Raises NotTrackedError for an
    untracked table and TableError for a tracking column (__sys*: use
    disable_tracking()) or a column the table does not have."""
    _table_name(table, "drop_column")
    if not isinstance(column, str) or not column:
        raise TableError(f"sqlite-ct: drop_column() needs a column name, got {column!r}")
    with _conn.writing(conn, "sqlite_ct_drop_column"):
        name = require_tracked(conn, table, "drop_column", writing=True)
        stored = _conn.value(conn, "SELECT name FROM pragma_table_xinfo(?, 'main') "
                                   "WHERE name = ? COLLATE NOCASE", (name, column))
        if stored is None:
            raise TableError(f'sqlite-ct: table "{name}" has no column "{column}"')
        if str(stored).lower().startswith("__sys"):
            raise TableError(f'sqlite-ct: "{stored}" is one of sqlite-ct\'s tracking columns; '
                             f'call disable_tracking(conn, "{name}") to stop tracking the table')
        q = _conn.quote_identifier
        _conn.execute(conn, f"DROP INDEX IF EXISTS main.{q('__sysct_guard_' + name)}")
        _conn.execute(conn, f"ALTER TABLE main.{q(name)} DROP COLUMN {q(str(stored))}")
        rearm(conn, name)
    log.info('drop_column: dropped column "%s" of tracked table "%s"', column, table)


def is_tracked(conn: Any, table: str) -> bool:
    """Whether `table` is tracked; runs sqlite_ct_is_tracked(table)."""
    _table_name(table, "is_tracked")
    return bool(_conn.value(conn, "SELECT sqlite_ct_is_tracked(?)", (table,)))


def tracked_tables(conn: Any) -> List[str]:
    """Names of the tracked tables, sorted; reads __sysOCSTrackedObjects."""
    _conn.require_loaded(conn)
    reconcile(conn, order=False)
    exists = _conn.value(conn, "SELECT count(*) FROM sqlite_schema WHERE type='table' "
                               "AND name='__sysOCSTrackedObjects'")
    if not exists:
        return []
    return [r[0] for r in _conn.rows(
        conn, "SELECT __sysTName FROM main.__sysOCSTrackedObjects ORDER BY __sysTName")]


def require_tracked(conn: Any, table: str, func: str, *, writing: bool = False) -> str:
    """The table's stored name, after reconcile() (which repairs the trigger
    order only for a caller that is `writing` metadata anyway); NotTrackedError
    when it is not tracked, TableError when a rebuild removed its triggers."""
    _table_name(table, func)
    _conn.require_loaded(conn)
    _conn.value(conn, "SELECT sqlite_ct_check_layout()")
    reconcile(conn, order=writing)
    exists = _conn.value(conn, "SELECT count(*) FROM sqlite_schema WHERE type='table' "
                               "AND name='__sysOCSTrackedObjects'")
    name = None
    if exists:
        name = _conn.value(conn, "SELECT __sysTName FROM main.__sysOCSTrackedObjects "
                                 "WHERE __sysTName = ? COLLATE NOCASE", (table,))
    if name is None:
        raise NotTrackedError(f'sqlite-ct: table "{table}" is not tracked; '
                              f'call create_schema(conn, "{table}") first')
    armed, needed = next(_conn.rows(
        conn, "SELECT (SELECT count(*) FROM sqlite_schema WHERE type='trigger' AND tbl_name=?1 "
              "AND name IN ('__sysct_ai_' || ?1, '__sysct_au_' || ?1, '__sysct_ad_' || ?1)), "
              "2 + ((SELECT __sysTrackOpt FROM main.__sysOCSTrackedObjects WHERE __sysTName=?1) "
              "/ 16 & 4 != 0)", (name,)))
    if armed < needed:
        raise TableError(
            f'sqlite-ct: table "{name}" lost its tracking triggers (was it rebuilt by '
            f'another tool, such as sqlite-utils transform()?); changes made since were '
            f'not tracked. Call create_schema(conn, "{name}") to re-arm it; replicas '
            f'with older anchors will then be asked to reinitialise')
    return str(name)


def set_tracking_context(conn: Any, context: Optional[uuid.UUID]) -> None:
    """Stamp this connection's later changes (and tombstones) with `context`, a
    GUID, or with nothing (None); runs sqlite_ct_set_tracking_context().

    Stored as 16 bytes in .NET byte order (uuid.UUID.bytes_le), as SQL CE did."""
    if context is not None and not isinstance(context, uuid.UUID):
        raise TypeError("the tracking context must be a uuid.UUID or None")
    blob = None if context is None else context.bytes_le
    _conn.value(conn, "SELECT sqlite_ct_set_tracking_context(?)", (blob,))


def tracking_context(conn: Any) -> Optional[uuid.UUID]:
    """This connection's tracking context; runs sqlite_ct_tracking_context()."""
    blob = _conn.value(conn, "SELECT sqlite_ct_tracking_context()")
    return None if blob is None else uuid.UUID(bytes_le=bytes(blob))


def last_committed_csn(conn: Any) -> int:
    """CSN of the newest committed transaction that touched tracked data (0 if
    none); runs sqlite_ct_last_committed_csn() (SQL CE's GetLastCommittedCsn)."""
    return int(_conn.value(conn, "SELECT sqlite_ct_last_committed_csn()"))


def current_bsn(conn: Any) -> Optional[int]:
    """BSN of the open transaction if it has written tracked data, else None;
    runs sqlite_ct_current_bsn() (SqlCeTransaction.CurrentTransactionBsn)."""
    bsn = _conn.value(conn, "SELECT sqlite_ct_current_bsn()")
    return None if bsn is None else int(bsn)


@contextlib.contextmanager
def _apply_mode(conn: Any, mode: int) -> Iterator[None]:
    """sqlite_ct_set_apply_mode(mode) for the block; the previous mode after."""
    previous = _conn.value(conn, "SELECT sqlite_ct_apply_mode()")
    _conn.value(conn, "SELECT sqlite_ct_set_apply_mode(?)", (mode,))
    try:
        yield
    finally:
        _conn.value(conn, "SELECT sqlite_ct_set_apply_mode(?)", (previous,))


@contextlib.contextmanager
def applying_server_changes(conn: Any) -> Iterator[None]:
    """Within the block, writes through `conn` are not local changes: rows get
    stamp 0 (older than any anchor) and deletes leave no tombstone, so what a
    sync provider applies from the server is never uploaded back. A later local
    edit of such a row is tracked as usual. Runs sqlite_ct_set_apply_mode()."""
    with _apply_mode(conn, 1):
        yield


@contextlib.contextmanager
def applying_local_changes(conn: Any) -> Iterator[None]:
    """Within the block, writes through `conn` are local changes again, also
    inside applying_server_changes(): for a row a sync provider writes while
    applying the server's changes that is not the server's version (a
    conflict resolution that merged both), so it is uploaded with the next
    sync. Runs sqlite_ct_set_apply_mode(0) and restores the previous mode."""
    with _apply_mode(conn, 0):
        yield


# -- what the tracking state says, for sync --------------------------------
# Sync reads a table's registry row, a live row's stamps and the commit log
# through these, so that the layout is spelled out only here and in csrc/.

_PORTABLE = 0x100       # __sysTrackOpt: tracked by portable triggers (CT_TRACKOPT_PORTABLE)


@dataclasses.dataclass(frozen=True)
class TableTracking:
    """How a table is tracked: the stored name, the BSN of the transaction
    that enabled tracking (rows with no stamps count as changed then), the
    CSN below which anchors are expired (tombstones purged), and whether
    portable triggers track it."""
    name: str
    enable_bsn: int
    min_valid_csn: int
    portable: bool


def table_tracking(conn: Any, table: str) -> Optional[TableTracking]:
    """`table`'s tracking (case-insensitive name), or None when it is not
    tracked. Reads __sysOCSTrackedObjects only (no repair, no write): cheap
    enough to ask before every batch."""
    if not _conn.value(conn, "SELECT count(*) FROM main.sqlite_schema WHERE type = 'table' "
                             "AND name = '__sysOCSTrackedObjects'"):
        return None
    for name, enable, valid, opt in _conn.rows(
            conn, "SELECT __sysTName, __sysEnableTxBsn, __sysMinValidCsn, __sysTrackOpt "
                  "FROM main.__sysOCSTrackedObjects WHERE __sysTName = ? COLLATE NOCASE",
            (table,)):
        return TableTracking(str(name), int(enable), int(valid), bool(int(opt) & _PORTABLE))
    return None


@dataclasses.dataclass(frozen=True)
class RowStamps:
    """SQL expressions over a live row of a tracked table: `change_bsn`, the
    BSN of its latest tracked change (NULL when it has none since tracking
    began: it counts as changed by the enabling transaction), and `context`,
    the tracking context of that change (16 bytes, or NULL)."""
    change_bsn: str
    context: str


def row_stamps(alias: str) -> RowStamps:
    """RowStamps of the row that `alias` (a table alias in the caller's
    statement, or "" for the table's own columns) names."""
    prefix = f"{alias}." if alias else ""
    return RowStamps(f'{prefix}"__sysChangeTxBsn"', f'{prefix}"__sysTrackingContext"')


def commit_time(conn: Any, csn: int) -> Optional[int]:
    """When the transaction with commit sequence number `csn` committed (ms
    since the epoch, from __sysTxCommitSequence), or None when the log has no
    such row (never committed, or purged)."""
    t = _conn.value(conn, "SELECT __sysCommitTime FROM main.__sysTxCommitSequence "
                          "WHERE __sysTxCsn = ?", (csn,))
    return None if t is None else int(t)


def newest_csn_committed_by(conn: Any, time: int) -> int:
    """The CSN of the newest transaction in the commit log that committed at
    or before `time` (ms since the epoch); 0 when none did."""
    return int(_conn.value(conn, "SELECT coalesce(max(__sysTxCsn), 0) "
                                 "FROM main.__sysTxCommitSequence WHERE __sysCommitTime <= ?",
                           (time,)))
