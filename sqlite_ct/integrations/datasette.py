"""The Datasette plugin: sqlite-ct in every connection Datasette opens.

Registered through the entry point group `datasette` of the installed
package. Its prepare_connection hook loads the extension into each read and
write connection, so SQL queries can call sqlite_ct_*() functions and writes
(Database.execute_write(), write plugins) to tracked tables are tracked.

As with the sqlite-utils plugin, on a Python whose sqlite3 cannot load
extensions, importing this module registers the extension with
register_auto_extension(); Datasette loads its plugins before it opens any
database.
"""
from __future__ import annotations

import sqlite3
from typing import Any

import pluggy

from . import _common

__all__ = ["prepare_connection"]

hookimpl = pluggy.HookimplMarker("datasette")

_common.prepare_process()


@hookimpl
def prepare_connection(conn: sqlite3.Connection, database: str, datasette: Any) -> None:
    """Datasette's hook: load sqlite-ct into `conn`."""
    _common.prepare_connection(conn, tool="Datasette")
