"""What the integrations share: getting sqlite-ct into the stdlib sqlite3
connections a tool opens, and re-arming tables a tool rebuilt.

A tool opens its own connections, so sqlite-ct has two ways in. Where
sqlite3.Connection has enable_load_extension, load() works on any open
connection. Where it does not (pyenv's default build, for one), only
register_auto_extension() helps, and only for connections opened after it:
prepare_process() runs it as early as the integration can (when the plugin
module is imported, when enable(engine) is called), and prepare_connection()
refuses, with the remedy, a connection that was opened before.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Iterable, List, Optional

from .. import _conn, loader
from ..errors import ExtensionError
from ..reconcile import rearm

__all__ = ["can_load_per_connection", "prepare_process", "prepare_connection",
           "has_tracked_tables", "is_registered", "rearm_rebuilt_tables"]


def can_load_per_connection() -> bool:
    """Whether this Python's sqlite3 can load an extension into an open connection."""
    return hasattr(sqlite3.Connection, "enable_load_extension")


def prepare_process() -> None:
    """Make every stdlib sqlite3 connection opened from now on able to get
    sqlite-ct: register_auto_extension() on a Python whose sqlite3 cannot load
    extensions; nothing otherwise (load() does the work per connection)."""
    if not can_load_per_connection():
        loader.register_auto_extension()


def opened_too_early(tool: str) -> ExtensionError:
    return ExtensionError(
        f"sqlite-ct: this {tool} connection was opened before sqlite-ct was "
        f"registered, and this Python's sqlite3 cannot load extensions into an open "
        f"connection; call sqlite_ct.register_auto_extension() (or import the "
        f"integration) before the first connection is opened")


def prepare_connection(conn: Any, *, tool: str) -> None:
    """Load sqlite-ct into `conn`, a stdlib sqlite3 connection (idempotent; the
    version is checked either way). ExtensionError when it cannot be loaded."""
    if can_load_per_connection() or loader.is_loaded(conn):
        loader.load(conn)
        return
    raise opened_too_early(tool)


def has_tracked_tables(conn: Any) -> bool:
    """Whether the database holds sqlite-ct's registry (reads sqlite_schema only,
    so it works without the extension)."""
    return bool(_conn.value(conn, "SELECT count(*) FROM main.sqlite_schema WHERE "
                                  "type='table' AND name='__sysOCSTrackedObjects'"))


def is_registered(conn: Any, table: str) -> bool:
    """Whether `table` has a row in sqlite-ct's registry, armed or not (works
    without the extension)."""
    if not has_tracked_tables(conn):
        return False
    return bool(_conn.value(conn, "SELECT count(*) FROM main.__sysOCSTrackedObjects "
                                  "WHERE __sysTName = ? COLLATE NOCASE", (table,)))


def rearm_rebuilt_tables(conn: Any, tables: Optional[Iterable[str]] = None) -> List[str]:
    """Re-arm every tracked table (of `tables`, when given) that exists but
    lost a tracking trigger or its __sys columns: a rebuild (a new table
    copied and renamed into place) or a drop and re-create. Returns their
    names.

    Runs sqlite_ct_create_schema() with the table's stored options and mode,
    which also raises the table's minimum valid anchor: sqlite-ct cannot tell
    what was written between the rebuild and now, so replicas with older
    anchors are asked to reinitialise (AnchorExpiredError) rather than miss it.
    A table that can no longer be tracked (the rebuild removed its PRIMARY
    KEY) raises TableError.
    """
    if not has_tracked_tables(conn):
        return []
    wanted = None if tables is None else {t.lower() for t in tables}
    rebuilt = []
    for name, armed, needed, stamped in list(_conn.rows(conn, _REBUILT)):
        if wanted is not None and name.lower() not in wanted:
            continue
        if armed < needed or not stamped:
            rebuilt.append(name)
    for name in rebuilt:
        rearm(conn, name)
    return rebuilt


# Each registered table that exists: its name, how many of the AFTER INSERT,
# UPDATE and DELETE triggers it has, how many its options need (the delete
# trigger only when deletes are tracked, as tracking.require_tracked() counts
# them), and whether it has the change column.
_REBUILT = """
SELECT o.__sysTName,
       (SELECT count(*) FROM main.sqlite_schema WHERE type = 'trigger'
         AND tbl_name = o.__sysTName
         AND name IN ('__sysct_ai_' || o.__sysTName, '__sysct_au_' || o.__sysTName,
                      '__sysct_ad_' || o.__sysTName)),
       2 + (o.__sysTrackOpt / 16 & 4 != 0),
       EXISTS (SELECT 1 FROM pragma_table_xinfo(o.__sysTName)
                WHERE name = '__sysChangeTxBsn')
  FROM main.__sysOCSTrackedObjects AS o
 WHERE EXISTS (SELECT 1 FROM main.sqlite_schema
                WHERE type = 'table' AND name = o.__sysTName)
"""
