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


# ---- sqlite_ct_changes() keeps its phases' statements per query shape -------

QUERIES = [
    # fewer columns first, then more, under the same constraints
    ("SELECT change_bsn, count(*) FROM sqlite_ct_changes(?, ?) GROUP BY 1", ()),
    ("SELECT op, change_bsn, hex(pk), row_rowid FROM sqlite_ct_changes(?, ?)", ()),
    ("SELECT op, hex(pk) FROM sqlite_ct_changes(?, ?) WHERE op = 'D'", ()),
    ("SELECT op, change_bsn, row_rowid FROM sqlite_ct_changes(?, ?) WHERE op <> 'D'", ()),
    ("SELECT op, hex(pk), hex(context) FROM sqlite_ct_changes(?, ?, NULL, ?)",
     (uuid.UUID(int=5).bytes_le,)),
    ("SELECT op, change_bsn, insert_bsn, hex(pk) FROM sqlite_ct_changes(?, ?) "
     "WHERE tombstones = 'each'", ()),
    ("SELECT change_bsn, row_rowid, hex(pk) FROM sqlite_ct_changes(?, ?) "
     "WHERE stamped = 1 AND after_bsn = ?", ("enable",)),
    ("SELECT change_bsn, hex(pk) FROM sqlite_ct_changes(?, ?) "
     "WHERE stamped = 0 AND after_bsn = ?", ("enable-1",)),
]


def answers(conn, tables, since, fresh=None):
    """Each query's rows for each table: on conn, or (fresh: a function that
    opens a connection) on a new connection each, which has kept nothing."""
    out = {}
    for name in tables:
        enable = q(conn, "SELECT __sysEnableTxBsn FROM __sysOCSTrackedObjects "
                         "WHERE __sysTName = ?", (name,))[0][0]
        for i, (sql, extra) in enumerate(QUERIES):
            params = (name, since, *[{"enable": enable, "enable-1": enable - 1}.get(e, e)
                                     for e in extra])
            if fresh is None:
                out[name, i] = sorted(q(conn, sql, params), key=repr)
                # again at once: through the statements the first one kept
                assert sorted(q(conn, sql, params), key=repr) == out[name, i]
            else:
                other = fresh()
                try:
                    out[name, i] = sorted(q(other, sql, params), key=repr)
                finally:
                    other.close()
    return out


def test_kept_phases_answer_as_a_fresh_connection_does(conn, db_path):
    """More tables and query shapes than sqlite_ct_changes() keeps shapes,
    plans and statements for (so they are evicted and slots reused by other
    tables), rows changed and the schema changed between rounds: every
    answer on the one connection equals a fresh connection's, which keeps
    nothing yet."""
    from test_enum_cache import open_conn
    host = "apsw" if isinstance(conn, apsw.Connection) else "sqlite3"
    tables = [f"t{i}" for i in range(12)]
    for i, name in enumerate(tables):
        if i % 2:
            conn.execute(f"CREATE TABLE {name}(a TEXT, b INTEGER, v TEXT, "
                         f"PRIMARY KEY(b, a)) WITHOUT ROWID")
        else:
            conn.execute(f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, v TEXT)")
        cols = "a, b, v" if i % 2 else "id, v"
        vals = ", ".join((f"('k{j}', {j}, 'v')" if i % 2 else f"({j}, 'v')")
                         for j in range(6))
        conn.execute(f"INSERT INTO {name}({cols}) VALUES {vals}")   # NULL stamps
        sqlite_ct.create_schema(conn, name)
    since = sqlite_ct.last_committed_csn(conn)
    for rnd in range(4):
        for i, name in enumerate(tables):
            key = "b" if i % 2 else "id"
            conn.execute(f"UPDATE {name} SET v = 'r{rnd}' WHERE {key} = ?", (rnd,))
            conn.execute(f"DELETE FROM {name} WHERE {key} = ?", (5 - rnd,))
            conn.execute("SELECT sqlite_ct_set_tracking_context(?)",
                         (uuid.UUID(int=5).bytes_le,))
            if i % 2:
                conn.execute(f"INSERT OR REPLACE INTO {name}(a, b, v) VALUES ('n', ?, 'c')",
                             (100 + rnd,))
            else:
                conn.execute(f"INSERT OR REPLACE INTO {name}(id, v) VALUES (?, 'c')",
                             (100 + rnd,))
            conn.execute("SELECT sqlite_ct_set_tracking_context(NULL)")
        if rnd == 2:
            # a schema change: a column added to one table, another rebuilt
            # with a different key (the same name, the same schema shape slot)
            conn.execute("ALTER TABLE t0 ADD COLUMN extra TEXT")
            sqlite_ct.disable_tracking(conn, "t1")
            conn.execute("DROP TABLE t1")
            conn.execute("CREATE TABLE t1(a TEXT, b INTEGER, v TEXT, PRIMARY KEY(a)) "
                         "WITHOUT ROWID")
            conn.execute("INSERT INTO t1(a, b, v) VALUES ('x', 1, 'v'), ('y', 2, 'v')")
            sqlite_ct.create_schema(conn, "t1")
            conn.execute("DELETE FROM t1 WHERE a = 'x'")
        for _ in range(2):      # the second round reads through what the first kept
            mine = answers(conn, tables, since if rnd < 2 else 0)
            fresh = answers(conn, tables, since if rnd < 2 else 0,
                            lambda: open_conn(host, db_path))
            assert mine == fresh, rnd
            assert any(mine[t, 0] for t in tables)


def test_a_shape_slot_taken_by_another_table_is_not_read_with_the_old_plan(conn):
    """sqlite_ct_changes() keeps each table's shape in one of 8 slots and each
    query's statements as a plan of that shape. A call that fails after
    reading the table keeps its shape but no plan: nine of them put another
    table into the first table's slot at the same schema version, while the
    first table's plan is still kept. The same query of that other table
    reads that table, not the first one."""
    names = [f"s{i}" for i in range(10)]
    for name in names:
        conn.execute(f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, v TEXT)")
        sqlite_ct.create_schema(conn, name)
    for i, name in enumerate(names):
        conn.execute(f"INSERT INTO {name}(id, v) VALUES (?, 'x')", (i + 1,))
    sql = "SELECT op, row_rowid FROM sqlite_ct_changes(?, 0)"
    last = sqlite_ct.last_committed_csn(conn)
    assert q(conn, sql, ("s0",)) == [("I", 1)]          # shape slot 1, plan kept
    for name in names[1:9]:
        with pytest.raises(Exception, match="outside the window"):   # shape kept, no plan
            q(conn, "SELECT op FROM sqlite_ct_changes(?, 0, ?)", (name, last + 1))
    assert q(conn, sql, ("s8",)) == [("I", 9)]          # s8 took s0's slot
    assert q(conn, sql, ("s0",)) == [("I", 1)]


# ---- the kept statement's token: the table's CREATE statement, by rowid ------

def image(path, pad):
    """A database whose tracked table items is `pad` rows into sqlite_schema,
    with an extra column when padded, at schema version 1000."""
    from test_enum_cache import open_conn
    conn = open_conn("apsw", path)
    for i in range(pad):
        conn.execute(f"CREATE TABLE pad{i}(x)")
    extra = ", extra TEXT DEFAULT 'E'" if pad else ""
    conn.execute(f"CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT{extra})")
    sqlite_ct.create_schema(conn, "items")
    conn.execute("INSERT INTO items(id) VALUES(1)")
    conn.execute("PRAGMA schema_version = 1000")
    rowid = q(conn, "SELECT rowid FROM sqlite_schema WHERE name = 'items'")[0][0]
    conn.close()
    with open(path, "rb") as f:
        return rowid, f.read()


@pytest.mark.parametrize("pad", [1, 3])
def test_a_database_deserialized_with_the_table_elsewhere_in_its_schema_is_read_again(
        tmp_path, pad):
    """The kept statement reads the table's CREATE statement from the
    sqlite_schema row it had. A database deserialized at the same schema
    version whose row there is another table (or none of its tables) gives
    another token: the statement is built again, for the table as it is."""
    from test_enum_cache import open_conn
    first_rowid, _ = image(str(tmp_path / "one.db"), 0)
    other_rowid, other = image(str(tmp_path / "two.db"), pad)
    assert first_rowid != other_rowid
    conn = open_conn("apsw", str(tmp_path / "one.db"))
    try:
        assert sqlite_ct.enumerate_changes(conn, "items", 0).inserts == [
            {"id": 1, "name": None}]
        conn.deserialize("main", other)
        assert q(conn, "PRAGMA schema_version") == [(1000,)]
        assert sqlite_ct.enumerate_changes(conn, "items", 0).inserts == [
            {"id": 1, "name": None, "extra": "E"}]
    finally:
        conn.close()


def test_a_window_without_tombstones_skips_its_deletes_and_the_next_one_reads_them(conn):
    """sqlite_ct_changes() leaves out its deletes phase when the table has no
    tombstone after SINCE (read with the registry row). The same query once a
    tombstone is there, on the same connection (its kept plan), reads it."""
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    since = sqlite_ct.last_committed_csn(conn)
    conn.execute("DELETE FROM t WHERE id = 3")       # before the window
    conn.execute("UPDATE t SET v = 'a2' WHERE id = 1")
    sql = "SELECT op, hex(pk) FROM sqlite_ct_changes(?, ?) ORDER BY 1, 2"
    first = q(conn, sql, ("t", since))
    assert [op for op, _ in first] == ["D", "U"]
    after = sqlite_ct.last_committed_csn(conn)
    for _ in range(2):
        assert q(conn, sql, ("t", after)) == []
        assert sqlite_ct.enumerate_changes(conn, "t", after).deletes == []
    conn.execute("DELETE FROM t WHERE id = 2")
    for _ in range(2):
        assert [op for op, _ in q(conn, sql, ("t", after))] == ["D"]
        assert sqlite_ct.enumerate_changes(conn, "t", after).deletes == [{"id": 2}]
    assert first[0][1] == q(conn, "SELECT hex(sqlite_ct_pack_key(3))")[0][0]
