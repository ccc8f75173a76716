"""sqlite-ct on a SQLAlchemy Engine: `enable(engine)`.

    engine = sqlalchemy.create_engine("sqlite:///app.db")
    sqlite_ct.integrations.sqlalchemy.enable(engine)

After that call, on that engine (the stdlib sqlite3 driver, pysqlite):

EXTENSION   every connection the pool hands out has sqlite-ct loaded (pool
            event "checkout", once per DBAPI connection). On a Python whose
            sqlite3 cannot load extensions enable() registers the
            auto-extension first, so call it before the engine opens its
            first connection; a connection opened earlier is refused with
            ExtensionError, never used untracked.
REBUILDS    a table rebuild through SQLAlchemy's DDL (Alembic's
            batch_alter_table: create a copy, copy the rows, drop the table,
            rename the copy) drops sqlite-ct's triggers with the old table.
            Dropping a tracked table from Alembic marks the connection; the
            first statement it runs afterwards that is not the rebuild's own
            DROP, RENAME or CREATE INDEX, or else its COMMIT, re-arms that
            table if it exists again without its triggers. So no statement
            of the migration, and no statement after it, writes the rebuilt
            table untracked. The rebuild's copy of sqlite-ct's guard index
            is skipped (it names every column, a dropped one too); re-arming
            creates the guard for the new table. Re-arming asks replicas of that table to
            reinitialise (see _common.rearm_rebuilt_tables).
DROPS       dropping a tracked table through SQLAlchemy's DDL outside Alembic
            (Table.drop(), MetaData.drop_all(), pandas'
            to_sql(if_exists="replace")) raises TableError before anything is
            dropped: the table put in its place would not be tracked, and
            its un-uploaded deletes would be gone. Call
            sqlite_ct.disable_tracking() first to drop it on purpose.

Only the "checkout" pool event and "before_execute"/"commit" connection
events of the enabled engines, and one class-level "before_drop" listener on
Table (which returns at once for other engines), are installed.
"""
from __future__ import annotations

import weakref
from typing import Any, Dict

from sqlalchemy import Table, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateIndex, DropTable

from .._conn import translated
from ..errors import ExtensionError, TableError
from . import _common

__all__ = ["enable", "is_enabled", "dbapi_connection"]

_LOADED = "sqlite_ct.loaded"          # DBAPI connection record info: extension loaded
_REBUILDING = "sqlite_ct.rebuilding"  # ... tables dropped by Alembic, not re-armed yet
_enabled: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def enable(engine: Engine) -> None:
    """Load sqlite-ct into every connection of `engine`'s pool, re-arm tables
    that Alembic rebuilds, and refuse to drop tracked tables (see above).

    Idempotent. Raises ExtensionError for an engine whose driver is not the
    stdlib's sqlite3 (pysqlite), or when the extension cannot be registered.
    """
    if not isinstance(engine, Engine):
        raise TypeError(f"sqlite-ct: enable() needs a sqlalchemy Engine, got "
                        f"{type(engine).__module__}.{type(engine).__qualname__}")
    dialect = engine.dialect
    if dialect.name != "sqlite" or dialect.driver != "pysqlite":
        raise ExtensionError(
            f"sqlite-ct: enable() supports SQLite engines on the stdlib sqlite3 driver "
            f"(sqlite:// or sqlite+pysqlite://), not {dialect.name}+{dialect.driver}")
    _common.prepare_process()
    if not event.contains(engine, "checkout", _on_checkout):
        event.listen(engine, "checkout", _on_checkout)
        event.listen(engine, "before_execute", _before_execute, retval=True)
        event.listen(engine, "commit", _on_commit)
    if not event.contains(Table, "before_drop", _before_drop):
        event.listen(Table, "before_drop", _before_drop)
    _enabled.add(engine)


def is_enabled(engine: Engine) -> bool:
    """Whether enable() was called for `engine`."""
    return engine in _enabled


def dbapi_connection(connection: Connection) -> Any:
    """The stdlib sqlite3.Connection under a SQLAlchemy Connection, for the
    sqlite_ct functions (create_schema, enumerate_changes, ...)."""
    return connection.connection.driver_connection


def _on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    if record.info.get(_LOADED):
        return
    _common.prepare_connection(dbapi_conn, tool="SQLAlchemy")
    record.info[_LOADED] = True


def _rebuilding(connection: Connection) -> Dict[str, None]:
    pending: Dict[str, None] = connection.connection.info.setdefault(_REBUILDING, {})
    return pending


def _rearm(connection: Connection, *, final: bool = False) -> None:
    pending = _rebuilding(connection)
    if not pending:
        return
    with translated():
        _common.rearm_rebuilt_tables(dbapi_connection(connection), pending)
    if final:
        pending.clear()
        return
    existing = {row[0].lower() for row in dbapi_connection(connection).execute(
        "SELECT name FROM main.sqlite_schema WHERE type='table'")}
    # A table dropped and not (yet) re-created stays pending until the
    # commit: a CREATE TABLE later in the transaction would put an untracked
    # table under a tracked name.
    for name in [n for n in pending if n.lower() in existing]:
        del pending[name]


def _before_execute(connection: Connection, clauseelement: Any, multiparams: Any,
                   params: Any, execution_options: Any) -> Any:
    pending = _rebuilding(connection)
    if not pending:
        return clauseelement, multiparams, params
    # The rebuild's own statements from the DROP on: the DROP itself, the
    # RENAME of the copy and the CREATE INDEX of the table's indexes
    # (sqlite-ct's change index among them, which re-arming would otherwise
    # create first).
    if isinstance(clauseelement, CreateIndex):
        name = str(clauseelement.element.name or "")
        if any(name.lower() == f"__sysct_guard_{t}".lower() for t in pending):
            # Alembic copies every index of the old table, the guard too,
            # whose key names every column the old table had (a dropped one
            # too); re-arming installs the guard of the new table.
            return text("SELECT 1"), multiparams, params
        return clauseelement, multiparams, params
    if isinstance(clauseelement, DropTable) or type(clauseelement).__name__ == "RenameTable":
        return clauseelement, multiparams, params
    _rearm(connection)
    return clauseelement, multiparams, params


def _on_commit(connection: Connection) -> None:
    _rearm(connection, final=True)


def _before_drop(table: Table, connection: Connection, **kw: Any) -> None:
    if getattr(connection, "engine", None) not in _enabled:
        return
    if table.schema not in (None, "main"):
        return
    dbapi = dbapi_connection(connection)
    if not _common.is_registered(dbapi, table.name):
        return
    runner = kw.get("_ddl_runner")
    if type(runner).__module__.startswith("alembic."):
        _rebuilding(connection)[table.name] = None
        return
    raise TableError(
        f'sqlite-ct: refusing to drop tracked table "{table.name}" through SQLAlchemy: '
        f"a table created in its place would not be tracked (pandas "
        f'to_sql(if_exists="replace") drops and re-creates the table). To replace the '
        f'rows, use if_exists="delete_rows" or sqlite_ct.integrations.pandas.to_sql(); '
        f'to drop the table, call sqlite_ct.disable_tracking(conn, "{table.name}") first')
