"""pandas' DataFrame.to_sql() on a tracked table, without losing tracking.

`df.to_sql(name, con, if_exists="replace")` drops the table and creates a new
one from the DataFrame: no PRIMARY KEY, no __sys columns, no triggers, so
nothing written to it afterwards is tracked and the old rows' deletes are
never recorded. `to_sql()` here keeps the table: on a tracked table,
if_exists="replace" deletes every row (each leaves a tombstone) and appends
the DataFrame's rows (each tracked as an insert) in one transaction, so a
replica that applies the next enumeration ends equal to the new table. The
table keeps its definition: the DataFrame's columns must be columns of the
table (pass index=False unless the index is one), or pandas raises and
nothing changes. pandas >= 2.2's own if_exists="delete_rows" does the same
delete-and-append and is tracked as it stands.

Without this module: on an engine passed to
sqlite_ct.integrations.sqlalchemy.enable(), pandas' "replace" of a tracked
table raises TableError before anything is dropped. On a plain sqlite3
connection (or another engine) nothing can stop it; the table is then no longer tracked, and the
next enumeration (and sqlite-ct check) fails with TableError.
"""
from __future__ import annotations

from typing import Any, Optional

from .. import _conn
from . import _common

__all__ = ["to_sql"]


def to_sql(df: Any, name: str, con: Any, *, if_exists: str = "fail",
           **kwargs: Any) -> Optional[int]:
    """DataFrame.to_sql(name, con, if_exists=..., **kwargs), except that
    if_exists="replace" on a table tracked by sqlite-ct replaces its rows, not
    the table (see above). `con` is a SQLAlchemy Engine or Connection (on the
    stdlib sqlite3 driver) or a stdlib sqlite3.Connection. Returns what pandas
    returns (the number of rows written, where it says).
    """
    if if_exists != "replace":
        return _pandas(df, name, con, if_exists=if_exists, **kwargs)
    if _is_sqlalchemy(con):
        return _replace_sqlalchemy(df, name, con, kwargs)
    if not _common.is_registered(con, name):
        return _pandas(df, name, con, if_exists="replace", **kwargs)
    return _replace_sqlite3(df, name, con, kwargs)


def _pandas(df: Any, name: str, con: Any, **kwargs: Any) -> Optional[int]:
    written: Optional[int] = df.to_sql(name, con, **kwargs)
    return written


def _is_sqlalchemy(con: Any) -> bool:
    return type(con).__module__.startswith("sqlalchemy.")


def _replace_sqlalchemy(df: Any, name: str, con: Any, kwargs: Any) -> Optional[int]:
    from sqlalchemy.engine import Engine

    if isinstance(con, Engine):
        with con.begin() as connection:
            return _replace_sqlalchemy(df, name, connection, kwargs)
    dbapi = con.connection.driver_connection
    if not _common.is_registered(dbapi, name):
        return _pandas(df, name, con, if_exists="replace", **kwargs)
    with con.begin_nested() if con.in_transaction() else con.begin():
        con.exec_driver_sql(f"DELETE FROM main.{_conn.quote_identifier(name)}")
        return _pandas(df, name, con, if_exists="append", **kwargs)


def _replace_sqlite3(df: Any, name: str, con: Any, kwargs: Any) -> Optional[int]:
    # pandas commits (or rolls back) the transaction it writes in; the DELETE
    # must be in that same transaction, so open it when none is open.
    if not con.in_transaction:
        con.execute("BEGIN")
    try:
        con.execute(f"DELETE FROM main.{_conn.quote_identifier(name)}")
        written = _pandas(df, name, con, if_exists="append", **kwargs)
    except BaseException:
        if con.in_transaction:
            con.rollback()
        raise
    if con.in_transaction:
        con.commit()
    return written
