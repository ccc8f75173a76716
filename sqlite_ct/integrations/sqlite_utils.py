"""The sqlite-utils plugin: sqlite-ct in every connection sqlite-utils opens.

Registered through the entry point group `sqlite_utils` of the installed
package, so `sqlite-utils insert/upsert/query/...` (and
sqlite_utils.Database) write to tracked tables with no option: its
prepare_connection hook loads the extension into each connection.

On a Python whose sqlite3 cannot load extensions (no enable_load_extension,
as pyenv's default build), importing this module registers the extension
with register_auto_extension(), so every sqlite3 connection the process
opens afterwards has it: sqlite-utils' command line loads its plugins before
it opens a database. A connection opened before the import cannot get it;
on a database with tracked tables prepare_connection() then raises
ExtensionError (a write would fail anyway; the error says what to do), and on
other databases it leaves the connection alone.
"""
from __future__ import annotations

import sqlite3

import pluggy

from .. import loader
from . import _common

__all__ = ["prepare_connection"]

hookimpl = pluggy.HookimplMarker("sqlite_utils")

_common.prepare_process()


@hookimpl
def prepare_connection(conn: sqlite3.Connection) -> None:
    """sqlite-utils' hook: load sqlite-ct into `conn`."""
    if (not _common.can_load_per_connection() and not _common.has_tracked_tables(conn)
            and not loader.is_loaded(conn)):
        return
    _common.prepare_connection(conn, tool="sqlite-utils")
