"""Small query helpers the feature tests share, for apsw and stdlib sqlite3
connections alike."""
import sqlite3

import apsw

HOST_ERRORS = (apsw.Error, sqlite3.Error)


def q(conn, sql, params=()):
    """All rows of one statement, as tuples."""
    return [tuple(r) for r in conn.execute(sql, params)]


def val(conn, sql, params=()):
    """The first column of the first row, or None."""
    rows = q(conn, sql, params)
    return rows[0][0] if rows else None


def run(conn, *statements):
    """Run statements one after another."""
    for sql in statements:
        q(conn, sql)


def in_transaction(conn) -> bool:
    if isinstance(conn, apsw.Connection):
        return not conn.get_autocommit()
    return conn.in_transaction


def vm_steps(conn, sql, params=()):
    """Virtual machine instructions (in hundreds) run by `sql` on an apsw
    connection, nested statements included: the progress handler counts the
    whole connection."""
    count = [0]

    def tick():
        count[0] += 1
        return 0
    conn.set_progress_handler(tick, 100)
    try:
        q(conn, sql, params)
    finally:
        conn.set_progress_handler(None, 0)
    return count[0]
