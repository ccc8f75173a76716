"""Keeping sqlite-ct's metadata in step with schema changes made by SQL.

SQLite carries a tracked table's triggers along through ALTER TABLE (ADD,
RENAME and DROP COLUMN rewrite or keep them; the AFTER UPDATE trigger has no
column list, so a new column is tracked at once). Two changes need sqlite-ct's
help, and every function that looks a tracked table up runs reconcile() first,
so they are handled before anything reads or writes tracking metadata:

RENAME TO   the table's AFTER INSERT trigger now belongs to the new name:
            sqlite_ct_rename_tracking(old, new) moves the registry, the
            tombstones and the sync article to the new name.
DROP TABLE  the registry names a table that no longer exists and whose trigger
            went with it: its metadata (registry row, tombstones, sync article)
            is deleted, as SQL CE dropped a table's delete tracking with it.
            Deletes not yet uploaded are gone with the table.

TRIGGER ORDER  SQLite fires a table's most recently created trigger first. A
            user's AFTER trigger created after sqlite-ct's runs before them, and
            a RAISE(IGNORE) or RAISE(FAIL) in it abandons the rest, ours
            included: that row change would go unstamped. reconcile() called
            by a function that writes tracking metadata (anchors, purges)
            re-creates sqlite-ct's triggers whenever a newer trigger exists on
            a tracked table, which puts them first again; create_schema() does
            the same. Reads (enumeration, listing, getting anchors, packing
            keys) do not: they must work on a read-only connection and leave
            the schema alone, and check() reports the order. Writes between
            the user's CREATE TRIGGER and the next such call are exposed, so
            call create_schema() after adding triggers to a tracked table.

A table rebuilt by another tool (a new table copied and renamed into place,
as sqlite-utils transform() does) has no trigger of ours at all; that is not
repaired silently: require_tracked() raises TableError until create_schema()
re-arms the table (see csrc/schema.c).
"""
from __future__ import annotations

import collections
import logging
from typing import Any, Dict, List, Tuple

from . import _conn
from .errors import Error

# The options and mode create_schema() was last called with for a table.
_STORED_OPTIONS = ("SELECT (__sysTrackOpt & 240) / 16, CASE WHEN __sysTrackOpt & 256 "
                   "THEN 'portable' ELSE 'native' END FROM main.__sysOCSTrackedObjects "
                   "WHERE __sysTName = ?")


def rearm(conn: Any, name: str) -> None:
    """Call create_schema() again on tracked table `name` (its stored name)
    with the options and mode it was last tracked with. The options are read
    first and the call itself reads no table: re-installing the guard drops
    an index, which SQLite refuses ("database table is locked") while the
    calling statement reads a table."""
    opts, mode = list(_conn.rows(conn, _STORED_OPTIONS, (name,)))[0]
    _conn.value(conn, "SELECT sqlite_ct_create_schema(?, ?, ?)", (name, opts, mode))


__all__ = ["reconcile"]

log = logging.getLogger(__name__)

_TRIGGER_PREFIX = "__sysct_ai_"


def _registry_exists(conn: Any) -> bool:
    return bool(_conn.value(conn, "SELECT count(*) FROM sqlite_schema WHERE type='table' "
                                  "AND name='__sysOCSTrackedObjects'"))


def outranked(conn: Any, table: str) -> bool:
    """Whether a trigger of the user on `table` was created after (so fires
    before) one of sqlite-ct's."""
    return bool(_conn.value(
        conn, "SELECT (SELECT max(rowid) FROM sqlite_schema WHERE type='trigger' "
              "AND tbl_name=?1 AND name NOT GLOB '__sysct_*') > "
              "(SELECT min(rowid) FROM sqlite_schema WHERE type='trigger' "
              "AND tbl_name=?1 AND name GLOB '__sysct_*')", (table,)))


# (database file, schema_version) pairs already reconciled. Every case above
# starts with a schema change, which moves schema_version whichever
# connection made it, and the repairs live in the file: a file seen at the
# same version needs nothing. In-memory and temporary databases have no path
# and are always checked.
_reconciled: "collections.OrderedDict[Tuple[str, int, bool], None]" = collections.OrderedDict()
_REMEMBERED = 256


def reconcile(conn: Any, *, order: bool = True) -> List[str]:
    """Apply the rules above; returns a description of each repair made.
    order=False (reads) leaves the trigger order alone."""
    path = next((row[2] for row in _conn.rows(conn, "PRAGMA database_list")
                 if row[1] == "main"), "")
    key = (path, _conn.value(conn, "PRAGMA schema_version"), order)
    if path and (key in _reconciled or key[:2] + (True,) in _reconciled):
        return []
    done = _reconcile(conn, order)
    if path:
        _reconciled[(path, _conn.value(conn, "PRAGMA schema_version"), order)] = None
        while len(_reconciled) > _REMEMBERED:
            _reconciled.popitem(last=False)
    return done


def _reconcile(conn: Any, order: bool) -> List[str]:
    if not _registry_exists(conn):
        return []
    registered = [r[0] for r in _conn.rows(
        conn, "SELECT __sysTName FROM main.__sysOCSTrackedObjects")]
    owners: Dict[str, str] = {
        name[len(_TRIGGER_PREFIX):]: table for name, table in _conn.rows(
            conn, "SELECT name, tbl_name FROM sqlite_schema WHERE type='trigger' "
                  "AND substr(name, 1, ?) = ?", (len(_TRIGGER_PREFIX), _TRIGGER_PREFIX))}
    tables = {r[0] for r in _conn.rows(conn, "SELECT name FROM sqlite_schema WHERE type='table'")}
    done: List[str] = []
    for name in registered:
        owner = owners.get(name)
        if owner == name:
            if order and outranked(conn, name):
                with _conn.savepoint(conn, "sqlite_ct_reconcile"):
                    rearm(conn, name)
                done.append(f'table "{name}" has a trigger newer than sqlite-ct\'s; '
                            f"sqlite-ct's triggers were re-created to fire first")
            continue
        if owner is not None and owner not in registered:
            _follow(conn, f'table "{name}" was renamed to "{owner}"',
                    "SELECT sqlite_ct_rename_tracking(?, ?)", (name, owner))
            done.append(f'table "{name}" was renamed to "{owner}"; tracking follows it')
        elif owner is None and name not in tables:
            _follow(conn, f'table "{name}" was dropped',
                    "SELECT sqlite_ct_disable_tracking(?)", (name,))
            done.append(f'table "{name}" was dropped; its tracking metadata was removed')
    for repair in done:
        log.info("reconcile: %s", repair)
    return done


def _follow(conn: Any, what: str, sql: str, params: Tuple[Any, ...]) -> None:
    """Move tracking metadata after a schema change; a read-only connection
    cannot, and says so instead of SQLite's bare "readonly database"."""
    try:
        with _conn.savepoint(conn, "sqlite_ct_reconcile"):
            _conn.value(conn, sql, params)
    except _conn.host_errors() as exc:
        if "readonly database" not in str(exc):
            raise
        raise Error(f"sqlite-ct: {what} and sqlite-ct must update its tracking metadata, "
                    f"which this read-only connection cannot write; run any sqlite-ct call "
                    f"(tracked_tables(), say) once on a connection that can write") from exc
