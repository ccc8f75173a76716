"""A consistency check of sqlite-ct's metadata against the data.

check(conn) reads only; it returns the problems it finds (an empty list for a
healthy database). Each Problem names the table (or None for database-wide
ones), a stable code, and a message that says what is wrong and what to do.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, List, Optional, Set

from . import _conn
from .errors import LayoutError
from .keys import key_columns
from .reconcile import outranked

__all__ = ["Problem", "check"]

_SYS_COLUMNS = ("__sysChangeTxBsn", "__sysInsertTxBsn", "__sysTrackingContext")
_TRIGGERS = {"ai": 1, "au": 0, "ad": 4}   # trigger kind -> option bit that needs it (0: always)
_PORTABLE = 0x100 // 16                  # CT_TRACKOPT_PORTABLE, in options (__sysTrackOpt/16)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One inconsistency found by check()."""
    table: Optional[str]
    code: str
    message: str


# The WHERE of the guard's current shape (csrc/schema.c, ctGuardSql); an
# earlier shape ended in "AND coalesce(<every column>) IS NULL".
_GUARD_WHERE = re.compile(r" WHERE sqlite_ct_guard\('(?:[^']|'')*'\)=0$")


def _guard_problems(conn: Any, name: str, columns: Set[str]) -> List[Problem]:
    """The guard of a native-mode table (csrc/schema.c, ctGuardSql): present,
    of the current shape, and with every column as a key column, so that no
    write with triggers turned off passes."""
    guard = f"__sysct_guard_{name}"
    sql = _conn.value(conn, "SELECT sql FROM sqlite_schema WHERE type='index' AND name=? "
                            "AND tbl_name=?", (guard, name))
    if sql is None:
        return [Problem(name, "guard-missing",
                        f'sqlite-ct: index "{guard}" is missing; a connection with triggers '
                        f'turned off can write "{name}" untracked; create_schema(conn, '
                        f'"{name}") recreates it')]
    # (cid, collation) of each key column, cid as in pragma_table_xinfo
    keys = list(_conn.rows(conn, "SELECT cid, coll FROM pragma_index_xinfo(?, 'main') "
                                 "WHERE key", (guard,)))
    if not _GUARD_WHERE.search(str(sql)) or any(str(coll).upper() != "BINARY"
                                               for _, coll in keys):
        return [Problem(name, "guard-outdated",
                        f'sqlite-ct: index "{guard}" has an outdated shape (SQLite before '
                        f'3.48 cannot load the one that names the columns in its WHERE '
                        f'for 125 columns or more, and incremental blob writes pass it); '
                        f'create_schema(conn, "{name}") replaces it')]
    info = list(_conn.rows(conn, "SELECT cid, name, hidden FROM pragma_table_xinfo(?, 'main')",
                           (name,)))
    named = {cid for cid, _ in keys}
    generated = {col for _, col, hidden in info if hidden}
    indexed = {col for cid, col, _ in info if cid in named}
    unnamed = sorted(columns - generated - indexed)
    if unnamed:
        return [Problem(name, "guard-outdated",
                        f'sqlite-ct: index "{guard}" does not name column(s) '
                        f'{", ".join(unnamed)} (added after create_schema()); a connection '
                        f'with triggers turned off can update them untracked; '
                        f'create_schema(conn, "{name}") extends it')]
    return []


def _table_problems(conn: Any, name: str, options: int, enable_bsn: int,
                    last_csn: int, guarded: bool, captured: bool) -> List[Problem]:
    found: List[Problem] = []
    q = _conn.quote_identifier
    if not _conn.value(conn, "SELECT count(*) FROM sqlite_schema WHERE type='table' AND name=?",
                       (name,)):
        return [Problem(name, "table-missing",
                        f'sqlite-ct: tracked table "{name}" does not exist; '
                        f'disable_tracking(conn, "{name}") removes its metadata')]
    columns = {r[0] for r in _conn.rows(
        conn, "SELECT name FROM pragma_table_xinfo(?, 'main')", (name,))}
    missing = [c for c in _SYS_COLUMNS if c not in columns]
    if missing:
        found.append(Problem(name, "columns-missing",
                             f'sqlite-ct: table "{name}" lacks {", ".join(missing)}; '
                             f'create_schema(conn, "{name}") re-arms it'))
    for kind, bit in _TRIGGERS.items():
        if bit and not options & bit:
            continue
        trigger = f"__sysct_{kind}_{name}"
        owner = _conn.value(conn, "SELECT tbl_name FROM sqlite_schema WHERE type='trigger' "
                                  "AND name=?", (trigger,))
        if owner != name:
            found.append(Problem(name, "trigger-missing",
                                 f'sqlite-ct: trigger "{trigger}" of table "{name}" is missing; '
                                 f'writes are not tracked; create_schema(conn, "{name}") re-arms it'))
    if outranked(conn, name):
        found.append(Problem(name, "trigger-order",
                             f'sqlite-ct: a trigger on "{name}" was created after sqlite-ct\'s and '
                             f"fires first; a RAISE(IGNORE) or RAISE(FAIL) in it would leave a "
                             f'change unstamped; create_schema(conn, "{name}") puts sqlite-ct\'s '
                             f"triggers first"))
    # A TEMP trigger on a main table fires before every trigger of the main
    # schema, whatever their order, so re-installing sqlite-ct's cannot help.
    # (A TEMP table of the same name has its triggers under that name too.)
    for (temp_trigger,) in _conn.rows(
            conn, "SELECT name FROM sqlite_temp_schema WHERE type='trigger' AND tbl_name=?1 "
                  "AND NOT EXISTS(SELECT 1 FROM sqlite_temp_schema WHERE type='table' "
                  "AND name=?1) ORDER BY name", (name,)):
        found.append(Problem(name, "temp-trigger",
                             f'sqlite-ct: TEMP trigger "{temp_trigger}" on "{name}" fires before '
                             f"sqlite-ct's triggers, which create_schema() cannot change; a "
                             f"RAISE(IGNORE) or RAISE(FAIL) in it would leave a change unstamped "
                             f"or a delete without a tombstone; create it in the main schema "
                             f'(then call create_schema(conn, "{name}")) or drop it'))
    if guarded and not options & _PORTABLE:
        found += _guard_problems(conn, name, columns)
    if captured and not options & _PORTABLE and options & 4 and not _conn.value(
            conn, "SELECT count(*) FROM sqlite_schema WHERE type='index' AND name=? "
                  "AND tbl_name=?", (f"__sysct_cap_{name}", name)):
        found.append(Problem(name, "capture-missing",
                             f'sqlite-ct: index "__sysct_cap_{name}" is missing; rows an OR '
                             f"REPLACE deletes and the old keys of key changes get no tombstone; "
                             f'create_schema(conn, "{name}") recreates it'))
    if not _conn.value(conn, "SELECT count(*) FROM sqlite_schema WHERE type='index' "
                             "AND name=? AND tbl_name=?", (f"__sysct_chg_{name}", name)):
        found.append(Problem(name, "index-missing",
                             f'sqlite-ct: index "__sysct_chg_{name}" is missing; enumeration '
                             f'scans the whole table; create_schema(conn, "{name}") recreates it'))
    if missing:
        return found
    above = _conn.value(
        conn, f'SELECT count(*) FROM main.{q(name)} WHERE "__sysChangeTxBsn" > ? '
              f'OR "__sysInsertTxBsn" > ?', (last_csn, last_csn))
    if above:
        found.append(Problem(name, "stamp-above-csn",
                             f'sqlite-ct: {above} row(s) of "{name}" carry a BSN above the last '
                             f'committed CSN {last_csn}'))
    keys = key_columns(conn, name)
    match = " AND ".join(f"{q(k)} IS sqlite_ct_unpack_key(d.__sysRK, {i})"
                         for i, k in enumerate(keys))
    # A live row whose insert is older than a tombstone of its key. Rows that
    # say nothing of when they were inserted are no evidence: stamp 0 (applied
    # from a server after a local delete) and, when inserts are not tracked,
    # NULL (a key re-inserted after its delete keeps NULL stamps).
    unknown = '"__sysInsertTxBsn" IS NOT 0'
    if not options & 1:
        unknown += ' AND "__sysInsertTxBsn" IS NOT NULL'
    stale = _conn.value(
        conn, f"SELECT count(*) FROM main.__sysOCSDeletedRows AS d WHERE d.__sysTName = ? AND "
              f"EXISTS(SELECT 1 FROM main.{q(name)} WHERE {match} AND {unknown} AND "
              f'coalesce("__sysInsertTxBsn", ?) < d.__sysDeleteTxBsn)', (name, enable_bsn))
    if stale:
        found.append(Problem(name, "tombstone-for-live-row",
                             f'sqlite-ct: {stale} tombstone(s) of "{name}" name keys whose '
                             f'current row was inserted before that delete'))
    return found


def check(conn: Any) -> List[Problem]:
    """Problems with sqlite-ct's metadata: registered tables that are gone,
    missing columns, triggers or indexes (the change index; the guard of a
    native-mode table, and whether it names every column; its capture index
    when deletes are tracked), rows stamped above the last committed
    CSN, tombstones for keys whose current row is older than the delete, a
    database written by a newer sqlite-ct, and one of an older layout not
    upgraded yet. Empty when healthy."""
    _conn.require_loaded(conn)
    try:
        have = int(_conn.value(conn, "SELECT sqlite_ct_check_layout()"))
    except LayoutError as exc:
        return [Problem(None, "layout", str(exc))]
    if not _conn.value(conn, "SELECT count(*) FROM sqlite_schema WHERE type='table' "
                             "AND name='__sysOCSTrackedObjects'"):
        return []
    with _conn.savepoint(conn, "sqlite_ct_check"):
        last_csn = int(_conn.value(conn, "SELECT sqlite_ct_last_committed_csn()"))
        problems: List[Problem] = []
        current = int(_conn.value(conn, "SELECT sqlite_ct_layout_version()"))
        if 0 < have < current:
            problems.append(Problem(
                None, "layout-outdated",
                f"sqlite-ct: this database has layout {have}, whose triggers miss writes "
                f"that layout {current} tracks or refuses; create_schema() or SELECT "
                f"sqlite_ct_create_system_tables() upgrades it in place"))
        for name, opt, enable_bsn in list(_conn.rows(
                conn, "SELECT __sysTName, __sysTrackOpt, __sysEnableTxBsn "
                      "FROM main.__sysOCSTrackedObjects ORDER BY __sysTName")):
            # The guard came with layout 3, the capture with layout 5;
            # "layout-outdated" covers older files.
            problems += _table_problems(conn, name, int(opt) // 16, int(enable_bsn), last_csn,
                                        guarded=have >= 3, captured=have >= 5)
        return problems
