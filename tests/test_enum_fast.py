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


# ---- enumerate_changes()'s rows: dicts built by a reader generated per table ----

ODD = ['a"b', "it's", "back\\slash", "r", "op", "{}", "li\nne", "é ü", "rows", "1x"]


@pytest.mark.parametrize("without_rowid", [False, True])
def test_rows_of_columns_with_any_name(conn, without_rowid):
    """Column names enter the generated reader as literals: quotes,
    backslashes, newlines, braces, unicode and the reader's own local names
    come back as they are, in the table's order, values with them."""
    cols = ", ".join('"' + c.replace('"', '""') + '" TEXT' for c in ODD)
    conn.execute(f'CREATE TABLE odd("k 1" INTEGER, "k\'2" TEXT, {cols}, '
                 f'PRIMARY KEY("k\'2", "k 1")){" WITHOUT ROWID" if without_rowid else ""}')
    sqlite_ct.create_schema(conn, "odd")
    names = ", ".join('"' + c.replace('"', '""') + '"' for c in ODD)
    marks = ", ".join("?" for _ in ODD)
    for k in range(4):
        conn.execute(f'INSERT INTO odd("k 1", "k\'2", {names}) VALUES (?, ?, {marks})',
                     (k, f"s{k}", *[f"{c}={k}" for c in ODD]))
    since = sqlite_ct.last_committed_csn(conn)
    conn.execute(f'INSERT INTO odd("k 1", "k\'2", {names}) VALUES (9, \'s9\', {marks})',
                 tuple(f"{c}=9" for c in ODD))
    conn.execute('UPDATE odd SET "r" = \'changed\' WHERE "k 1" = 1')
    conn.execute('DELETE FROM odd WHERE "k 1" = 2')
    for _ in range(2):      # the first call builds the kept statement, the second uses it
        cs = sqlite_ct.enumerate_changes(conn, "odd", since)
        assert cs.inserts == [dict({"k 1": 9, "k'2": "s9"}, **{c: f"{c}=9" for c in ODD})]
        assert list(cs.inserts[0]) == ["k 1", "k'2", *ODD]
        assert cs.updates == [dict({"k 1": 1, "k'2": "s1"},
                                   **{c: ("changed" if c == "r" else f"{c}=1") for c in ODD})]
        assert cs.deletes == [{"k'2": "s2", "k 1": 2}]
        assert list(cs.deletes[0]) == ["k'2", "k 1"]     # key order: PRIMARY KEY's


def test_rows_in_runs_of_every_kind(conn):
    """Deletes, inserts and updates interleaved by change BSN: each lands in
    its list, in the order sqlite_ct_changes() gives them."""
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    conn.execute("INSERT INTO t(id, v) VALUES " + ", ".join(f"({i}, 'v{i}')"
                                                           for i in range(1, 21)))
    since = sqlite_ct.last_committed_csn(conn)
    for i in range(1, 21):
        if i % 3 == 0:
            conn.execute("DELETE FROM t WHERE id = ?", (i,))
        elif i % 3 == 1:
            conn.execute("UPDATE t SET v = 'u' WHERE id = ?", (i,))
        else:
            conn.execute("INSERT INTO t(id, v) VALUES (?, 'n')", (100 + i,))
    expect = {op: [] for op in "DIU"}
    for op, rowid, pk in q(conn, "SELECT op, row_rowid, sqlite_ct_unpack_key(pk, 0) "
                                 "FROM sqlite_ct_changes('t', ?)", (since,)):
        expect[op].append(pk if op == "D" else rowid)
    for _ in range(2):
        cs = sqlite_ct.enumerate_changes(conn, "t", since)
        assert [r["id"] for r in cs.deletes] == expect["D"] == [3, 6, 9, 12, 15, 18]
        assert [r["id"] for r in cs.inserts] == expect["I"]
        assert [r["id"] for r in cs.updates] == expect["U"]
        assert len(cs.inserts) == 7 and len(cs.updates) == 7
        assert all(r["v"] == "n" for r in cs.inserts) and all(r["v"] == "u" for r in cs.updates)
