"""sqlite_ct_changes()'s optional arguments given positionally as NULL, and
what enumerate_changes() keeps between calls to do less per call."""
import sqlite3
import uuid

import apsw
import pytest

import sqlite_ct
from sqlhelpers import q


@pytest.fixture
def t(conn):
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    since = sqlite_ct.last_committed_csn(conn)
    conn.execute("UPDATE t SET v = 'a2' WHERE id = 1")
    conn.execute("DELETE FROM t WHERE id = 2")
    conn.execute("SELECT sqlite_ct_set_tracking_context(?)", (uuid.UUID(int=7).bytes_le,))
    conn.execute("INSERT INTO t(id, v) VALUES (4, 'd')")
    conn.execute("SELECT sqlite_ct_set_tracking_context(NULL)")
    conn.execute("INSERT INTO t(id, v) VALUES (5, 'e')")
    return since


def test_a_null_until_is_the_snapshots_last_committed_csn(conn, t):
    """UNTIL NULL is the default (the reading snapshot's last committed CSN),
    as docs/sql-reference.md says: positionally, to give EXCLUDE_CONTEXT
    after it, and as the hidden column."""
    cols = "op, change_bsn, hex(pk), row_rowid"
    omitted = q(conn, f"SELECT {cols} FROM sqlite_ct_changes('t', ?) ORDER BY 1, 2, 3", (t,))
    assert [r[0] for r in omitted] == ["D", "I", "I", "U"]
    for sql in (f"SELECT {cols} FROM sqlite_ct_changes('t', ?, NULL) ORDER BY 1, 2, 3",
                f"SELECT {cols} FROM sqlite_ct_changes('t', ?, NULL, NULL) ORDER BY 1, 2, 3",
                f"SELECT {cols} FROM sqlite_ct_changes WHERE tbl = 't' AND since = ? "
                f"AND until = NULL ORDER BY 1, 2, 3"):
        assert q(conn, sql, (t,)) == omitted, sql
    # with a context left out, positionally after a NULL UNTIL
    ctx = uuid.UUID(int=7).bytes_le
    last = sqlite_ct.last_committed_csn(conn)
    excluding = q(conn, f"SELECT {cols} FROM sqlite_ct_changes('t', ?, NULL, ?) "
                        f"ORDER BY 1, 2, 3", (t, ctx))
    assert excluding == q(conn, f"SELECT {cols} FROM sqlite_ct_changes('t', ?, ?, ?) "
                                f"ORDER BY 1, 2, 3", (t, last, ctx))
    assert [r[0] for r in excluding] == ["D", "I", "U"]


def test_a_null_until_ends_at_the_reading_snapshot(conn, t):
    """Inside a read transaction, NULL is that snapshot's last committed CSN,
    not a commit made since by another connection."""
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    path = q(conn, "PRAGMA database_list")[0][2]
    other = (apsw.Connection(path) if isinstance(conn, apsw.Connection)
             else sqlite3.connect(path, isolation_level=None))
    sqlite_ct.load(other)
    conn.execute("BEGIN")
    try:
        before = q(conn, "SELECT op, row_rowid FROM sqlite_ct_changes('t', ?, NULL) "
                         "ORDER BY 1, 2", (t,))
        other.execute("INSERT INTO t(id, v) VALUES (6, 'f')")
        assert q(conn, "SELECT op, row_rowid FROM sqlite_ct_changes('t', ?, NULL) "
                       "ORDER BY 1, 2", (t,)) == before
    finally:
        conn.execute("COMMIT")
        other.close()
    assert (("I", 6) in q(conn, "SELECT op, row_rowid FROM sqlite_ct_changes('t', ?, NULL)",
                          (t,)))
