"""What a sync provider does to a replica's tracking state.

A replica (a client database, or a SQLite hub) takes changes from elsewhere,
and a few of the resulting bookkeeping steps touch the tracking state itself:
the tombstones in __sysOCSDeletedRows and the stamp columns of tracked
tables. Those writes belong to the core, like the triggers that make them
otherwise: the sync layer (sqlite_ct.sync) calls the functions here and never
writes a core-owned table or column itself (tests/test_core_ownership.py
holds it to that).

Every function works inside or outside the caller's transaction (a savepoint
inside one); the hub's functions are meant for the transaction that applies
an upload and need it (they act on what that transaction wrote).
"""
from __future__ import annotations

import contextlib
import itertools
import uuid
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from . import _conn
from .anchors import get_sent_anchor, set_received_anchor
from .errors import AnchorError, KeyFormatError, NotTrackedError, TableError
from .keys import key_columns, key_values
from .tracking import applying_server_changes, require_tracked, table_tracking

__all__ = ["forget_pending_deletes", "stamp_applied", "reinitialise_table",
           "floor_tombstone_times", "release_context"]

q = _conn.quote_identifier
_temp_ids = itertools.count(1)


def _native(conn: Any, table: str, func: str) -> str:
    """require_tracked() for a table tracked in native mode: portable
    triggers know no apply mode (a delete always leaves a tombstone, the
    stamps cannot be set) and keep tombstone keys in a text form, so these
    functions would do something else than they promise there."""
    name = require_tracked(conn, table, func, writing=True)
    tracking = table_tracking(conn, name)
    if tracking is not None and tracking.portable:
        raise TableError(f'sqlite-ct: {func}() needs a table tracked in native mode; '
                         f'table "{name}" is tracked in portable mode, which has no apply '
                         f'mode. Track it with create_schema(conn, "{name}", mode="native") '
                         f'on a database that syncs')
    return name


def _key(conn: Any, name: str, key: Sequence[Any], func: str) -> Tuple[List[str], Tuple[Any, ...]]:
    """The table's key columns and `key` as a tuple, of the same length."""
    if isinstance(key, (str, bytes, bytearray)) or not isinstance(key, Sequence):
        raise KeyFormatError(f"sqlite-ct: {func}() takes the key as a sequence of values "
                             f"in PRIMARY KEY order, got {type(key).__name__}")
    return key_values(conn, name, key)


def _registered(conn: Any, table: str, func: str) -> str:
    """The stored name of tracked `table`, looked up in the registry only
    (for the per-upload hub functions: the sync layer checked the table's
    triggers when it read its shape)."""
    _conn.require_loaded(conn)
    name = _conn.value(conn, "SELECT __sysTName FROM main.__sysOCSTrackedObjects "
                             "WHERE __sysTName = ? COLLATE NOCASE", (table,))
    if name is None:
        raise NotTrackedError(f'sqlite-ct: table "{table}" is not tracked; '
                              f'call create_schema(conn, "{table}") first')
    return str(name)


def _check_csn(value: Any, what: str, func: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AnchorError(f"sqlite-ct: {func}(): {what} is a non-negative integer CSN, "
                          f"got {value!r}")
    if value >= 2**63:
        raise AnchorError(f"sqlite-ct: {func}(): {what} is a CSN below 2**63, got {value!r}")
    return value


def forget_pending_deletes(conn: Any, table: str, key: Sequence[Any], *, after: int) -> int:
    """Remove the tombstones of `key` (values in PRIMARY KEY order) in `table`
    written by transactions with BSN above `after` (the table's sent anchor):
    the key's pending local deletes, which are then never uploaded. Used
    when the server's version of a key replaces a pending local change.
    Returns how many tombstones were removed."""
    after = _check_csn(after, "after", "forget_pending_deletes")
    with _conn.writing(conn, "sqlite_ct_forget"):
        name = _native(conn, table, "forget_pending_deletes")
        _, values = _key(conn, name, key, "forget_pending_deletes")
        marks = ", ".join(f"?{i + 3}" for i in range(len(values)))
        # Under the key's collations, as sqlite_ct_local_change() matches
        # (csrc/changes.c builds the condition for both).
        collated = _conn.value(conn, "SELECT sqlite_ct_tombstone_key_match(?)", (name,))
        with _conn.owning_tombstones(conn):
            _conn.execute(conn, f"DELETE FROM main.__sysOCSDeletedRows WHERE __sysTName = ?2 "
                                f"AND __sysDeleteTxBsn > ?1 AND (__sysRK = sqlite_ct_pack_key"
                                f"({marks}){collated})", (after, name, *values))
            return int(_conn.value(conn, "SELECT changes()"))


def stamp_applied(conn: Any, table: str, key: Sequence[Any]) -> bool:
    """The row of `table` with `key` counts as applied from the server, as if
    written in apply mode: its insert stamp (and, when updates are tracked, its
    change stamp) becomes 0, so neither an insert nor an update of it is a
    pending local change, and a later local delete of it is uploaded. For a
    row the server's version overwrote while it held a pending local insert.
    Returns whether the row exists."""
    with _conn.writing(conn, "sqlite_ct_stamp"):
        name = _native(conn, table, "stamp_applied")
        cols, values = _key(conn, name, key, "stamp_applied")
        where = " AND ".join(f"{q(c)} IS ?" for c in cols)
        # The trigger accepts stamps of 0 only in apply mode. Both are set
        # here: a table that does not track updates has no trigger that
        # re-stamps the change column, and its change stamp would keep the
        # row pending (the server's version sent back as a local change).
        with applying_server_changes(conn):
            _conn.execute(conn, f'UPDATE main.{q(name)} SET "__sysInsertTxBsn" = 0, '
                                f'"__sysChangeTxBsn" = 0 WHERE {where}', values)
            return bool(_conn.value(conn, "SELECT changes()"))


def reinitialise_table(conn: Any, table: str, received_anchor: bytes) -> int:
    """Start `table` over from the server's `received_anchor` (stored as
    set_received_anchor() stores it), keeping the local changes that were
    never sent: rows changed after the table's sent anchor and the pending
    tombstones stay; every other row is deleted as if in apply mode (no
    tombstone), so the next download from `received_anchor` brings back what
    the server still has. When the connection enforces foreign keys, a row
    that another row refers to through a FOREIGN KEY is kept as well (not a
    pending change): deleting it would cascade to the referring rows without
    tombstones, or fail. Returns how many rows were deleted."""
    if not isinstance(received_anchor, (bytes, bytearray, memoryview)):
        raise AnchorError(f"sqlite-ct: a received anchor is bytes, "
                          f"got {type(received_anchor).__name__}")
    with _conn.writing(conn, "sqlite_ct_reinitialise"):
        name = _native(conn, table, "reinitialise_table")
        sent = get_sent_anchor(conn, name) or 0
        enable = _conn.value(conn, "SELECT __sysEnableTxBsn FROM main.__sysOCSTrackedObjects "
                                   "WHERE __sysTName = ?", (name,))
        # A NULL change stamp: the row predates tracking, as if written by
        # the enabling transaction.
        with applying_server_changes(conn):
            _conn.execute(conn, f'DELETE FROM main.{q(name)} AS "ct_row" '
                                f'WHERE coalesce("__sysChangeTxBsn", ?) <= ?'
                                + unreferenced(conn, name, "ct_row"),
                          (int(enable or 0), sent))
            removed = int(_conn.value(conn, "SELECT changes()"))
        set_received_anchor(conn, name, bytes(received_anchor))
        return removed


def unreferenced(conn: Any, name: str, alias: str, *, others_only: bool = False) -> str:
    """A WHERE term (" AND ...", or "" when nothing can refer to table `name`)
    that holds for a row of `name`, under `alias`, which no row of any table
    of the main schema refers to through a FOREIGN KEY, when the connection
    enforces foreign keys. For deletes done in apply mode, which leave no
    tombstone: with foreign keys on, deleting a referenced row would delete
    (CASCADE) or change (SET NULL, SET DEFAULT) the rows that refer to it in
    apply mode too, losing their unsent local changes or their data for good,
    or fail (NO ACTION, RESTRICT). A kept row stays as it is, not a pending
    change; the download brings the server's version of it. With foreign
    keys off nothing cascades, and the referring rows wait for the download.
    With `others_only`, references from rows of `name` itself are left out
    (for a table about to be dropped whole)."""
    if not _conn.value(conn, "PRAGMA foreign_keys"):
        return ""
    terms = []
    for (child,) in list(_conn.rows(conn, "SELECT name FROM main.sqlite_schema "
                                          "WHERE type = 'table' ORDER BY name")):
        fks: Dict[int, List[Tuple[str, Optional[str]]]] = {}
        for fk_id, parent, frm, to in list(_conn.rows(
                conn, 'SELECT id, "table", "from", "to" FROM pragma_foreign_key_list(?, \'main\') '
                      "ORDER BY id, seq", (child,))):
            if str(parent).lower() == name.lower() and not (
                    others_only and str(child).lower() == name.lower()):
                fks.setdefault(fk_id, []).append((frm, to))
        for pairs in fks.values():
            # REFERENCES parent with no column list: the parent's PRIMARY KEY.
            pk = [str(c) for (c,) in _conn.rows(
                conn, "SELECT name FROM pragma_table_info(?, 'main') WHERE pk > 0 "
                      "ORDER BY pk", (name,))] if any(to is None for _, to in pairs) else []
            cols = [(frm, to if to is not None else (pk[i] if i < len(pk) else frm))
                    for i, (frm, to) in enumerate(pairs)]
            # The parent's column on the left: its collation decides, as for
            # the foreign key itself.
            match = " AND ".join(f"{q(alias)}.{q(to)} = \"ct_ref\".{q(frm)}" for frm, to in cols)
            terms.append(f' AND NOT EXISTS (SELECT 1 FROM main.{q(child)} AS "ct_ref" '
                         f"WHERE {match})")
    return "".join(terms)


def floor_tombstone_times(conn: Any) -> int:
    """Give the tombstones the open transaction wrote a deletion time no
    earlier than the commit time of the newest earlier transaction in
    __sysTxCommitSequence, and return how many moved. A hub applies uploads
    with the clock of whichever process syncs; a client whose clock is months
    behind would otherwise leave tombstones that a purge by age removes at
    once. The commit log is the database's own clock: its times only move
    forward. Does nothing (0) when the transaction has written no tracked
    data."""
    bsn = _conn.value(conn, "SELECT sqlite_ct_current_bsn()")
    if bsn is None:
        return 0
    with _conn.savepoint(conn, "sqlite_ct_floor"):
        floor = _conn.value(conn, "SELECT coalesce(max(__sysCommitTime), 0) "
                                  "FROM main.__sysTxCommitSequence WHERE __sysTxCsn < ?", (bsn,))
        moved = 0
        # Per table: the tombstones' primary key starts with the table name.
        for (name,) in list(_conn.rows(conn, "SELECT __sysTName FROM "
                                             "main.__sysOCSTrackedObjects")):
            _conn.execute(conn, "UPDATE main.__sysOCSDeletedRows SET __sysDeletedTime = ? "
                                "WHERE __sysTName = ? AND __sysDeleteTxBsn = ? "
                                "AND __sysDeletedTime < ?", (floor, name, bsn, floor))
            moved += int(_conn.value(conn, "SELECT changes()"))
        return moved


@contextlib.contextmanager
def _keys_table(conn: Any, name: str, keys: Iterable[Sequence[Any]],
                func: str) -> Iterator[Optional[str]]:
    """A temp table of the packed `keys` of table `name` (column rk), dropped
    on exit; None when there are none. KeyFormatError for a key that is not a
    sequence of as many values as the table has key columns."""
    cols = key_columns(conn, name)

    n = len(cols)

    def checked(key: Sequence[Any]) -> Tuple[Any, ...]:
        if type(key) is tuple and len(key) == n:
            return key  # rows as hosts return them: no per-key ABC checks
        if isinstance(key, (str, bytes, bytearray)) or not isinstance(key, Sequence):
            raise KeyFormatError(f"sqlite-ct: {func}() takes keys as sequences of values "
                                 f"in PRIMARY KEY order, got {type(key).__name__}")
        if len(key) != len(cols):
            raise KeyFormatError(
                f'sqlite-ct: table "{name}" has {len(cols)} key column(s) '
                f'({", ".join(cols)}); got a key of {len(key)} value(s)')
        return tuple(key)

    it = (checked(k) for k in keys)
    first = next(it, None)
    if first is None:
        yield None
        return
    temp = q(f"ct_keys_{next(_temp_ids)}")
    _conn.execute(conn, f"CREATE TEMP TABLE {temp}(rk BLOB PRIMARY KEY) WITHOUT ROWID")
    try:
        marks = ", ".join("?" for _ in cols)
        with _conn.translated():
            conn.cursor().executemany(
                f"INSERT OR IGNORE INTO temp.{temp}(rk) VALUES (sqlite_ct_pack_key({marks}))",
                itertools.chain((first,), it))
        yield f"temp.{temp}"
    finally:
        _conn.execute(conn, f"DROP TABLE IF EXISTS temp.{temp}")


def release_context(conn: Any, table: str, context: uuid.UUID, *,
                    keep_rows: Iterable[Sequence[Any]] = (),
                    keep_deletes: Iterable[Sequence[Any]] = ()) -> None:
    """In the open transaction, hand what it wrote to `table` under tracking
    context `context` back to no context, except the keys the context's
    owner wrote exactly: rows of `table` that carry this transaction's stamp
    and `context`, other than those keyed in `keep_rows`, get no context
    (the triggers accept the connection's own context, set to none here,
    whether the table tracks updates or not); tombstones of
    this transaction with `context`, other than of keys in `keep_deletes`,
    lose their context. Keys are sequences of values in PRIMARY KEY order.

    A hub applies a client's upload under the client's id, so a download
    leaves the client's own changes out; what the hub's triggers and cascades
    changed in the same transaction carries that id too, and this makes the
    client download it. Does nothing when the transaction has written no
    tracked data. The connection's tracking context is restored on exit."""
    if not isinstance(context, uuid.UUID):
        raise TypeError(f"release_context(): context must be a uuid.UUID, "
                        f"got {type(context).__name__}")
    bsn = _conn.value(conn, "SELECT sqlite_ct_current_bsn()")
    if bsn is None:
        return
    x = context.bytes_le
    with _conn.savepoint(conn, "sqlite_ct_release"):
        name = _registered(conn, table, "release_context")
        cols = key_columns(conn, name)
        pack = f"sqlite_ct_pack_key({', '.join(q(c) for c in cols)})"
        previous = _conn.value(conn, "SELECT sqlite_ct_tracking_context()")
        _conn.value(conn, "SELECT sqlite_ct_set_tracking_context(NULL)")
        try:
            with _keys_table(conn, name, keep_rows, "release_context") as kept:
                _conn.execute(conn, f'UPDATE main.{q(name)} SET "__sysTrackingContext" = NULL '
                                    f'WHERE "__sysChangeTxBsn" = ? AND "__sysTrackingContext" IS ?'
                                    + (f" AND {pack} NOT IN (SELECT rk FROM {kept})"
                                       if kept else ""), (bsn, x))
            with _keys_table(conn, name, keep_deletes, "release_context") as kept:
                _conn.execute(conn, "UPDATE main.__sysOCSDeletedRows SET __sysTrackingContext "
                                    "= NULL WHERE __sysTName = ? AND __sysDeleteTxBsn = ? "
                                    "AND __sysTrackingContext IS ?"
                                    + (f" AND __sysRK NOT IN (SELECT rk FROM {kept})"
                                       if kept else ""), (name, bsn, x))
        finally:
            _conn.value(conn, "SELECT sqlite_ct_set_tracking_context(?)", (previous,))
