"""The capture of layout 5 (docs/architecture.md, "The capture"; csrc/state.c,
"Captured rows"): an always-empty partial index whose WHERE remembers every
row SQLite removes from a tracked table whose deletes are tracked, and the
AFTER triggers' sweep that turns the rows that are gone into tombstones.

Each case is checked end to end: the tombstones written, and a replica that
applies the enumerated changes holding what the table holds."""
import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import HOST_ERRORS, q, run, val
from test_traps import Tracked, recursive  # noqa: F401  (fixture)


def tombstones(conn, table="t"):
    return sorted(tuple(sqlite_ct.unpack_key(conn, table, rk)) for (rk,) in q(
        conn, "SELECT __sysRK FROM __sysOCSDeletedRows WHERE __sysTName=?", (table,)))


UNIQUE_T = "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)"
AB = [{"id": 1, "u": "a", "v": "x"}, {"id": 2, "u": "b", "v": "y"}]


def test_or_replace_through_an_index_created_later_in_one_statement_of_many_rows(
        conn, recursive):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT, v TEXT)", "t", ["id"],
                [{"id": i, "u": f"u{i}", "v": f"v{i}"} for i in range(1, 11)])
    run(conn, "CREATE UNIQUE INDEX t_u ON t(u)", "CREATE UNIQUE INDEX t_v ON t(v)")
    # each new row displaces two old ones: one through u, one through v
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) SELECT id + 100, 'u' || id,"
              " 'v' || (id + 1) FROM t WHERE id % 2 = 1")
    cs = t.changes()
    assert sorted(d["id"] for d in cs.deletes) == list(range(1, 11))
    assert sorted(r["id"] for r in cs.inserts) == [101, 103, 105, 107, 109]


def test_a_key_change_tombstones_the_old_key_and_its_victim(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "UPDATE OR REPLACE t SET id = 2 WHERE id = 1")     # 2 displaced, 1 moves
    cs = t.changes()
    assert sorted(d["id"] for d in cs.deletes) == [1, 2]
    assert cs.inserts == [{"id": 2, "u": "a", "v": "x"}]
    run(conn, "DELETE FROM t WHERE id = 2")
    assert [d["id"] for d in t.changes().deletes] == [2]


def test_setting_the_key_to_itself_deletes_nothing(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "UPDATE t SET id = id, v = 'z'")
    cs = t.changes()
    assert (cs.deletes, sorted(r["id"] for r in cs.updates)) == ([], [1, 2])
    assert tombstones(conn) == []


def test_a_statement_that_fails_after_capturing_leaves_nothing_behind(conn):
    """A row inserted with stamps of its own is captured (its insert BSN is
    not the transaction's); a user trigger then refuses it. The statement's
    captured rows go when it ends (SQLite frees the capture's auxiliary data
    when the statement halts): a later sweep in the same transaction must
    not take the refused row's key for a deleted row."""
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "CREATE TRIGGER no_fives AFTER INSERT ON t WHEN NEW.id = 5"
              " BEGIN SELECT RAISE(ABORT, 'no fives'); END")
    run(conn, "BEGIN")
    with pytest.raises(HOST_ERRORS, match="no fives"):
        run(conn, 'INSERT INTO t(id, u, v, "__sysInsertTxBsn") VALUES (5, \'e\', \'w\', 1)')
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')", "COMMIT")
    assert tombstones(conn) == [(1,)]
    assert [d["id"] for d in t.changes().deletes] == [1]


def test_a_rolled_back_savepoint_takes_its_tombstones_and_captures(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "BEGIN", "SAVEPOINT s", "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')")
    assert tombstones(conn) == [(1,)]
    run(conn, "ROLLBACK TO s", "RELEASE s",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (4, 'b', 'w')", "COMMIT")
    assert tombstones(conn) == [(2,)]
    cs = t.changes()
    assert [d["id"] for d in cs.deletes] == [2]
    assert q(conn, "SELECT id FROM t ORDER BY id") == [(1,), (4,)]


def test_a_user_trigger_that_updates_the_new_row_keeps_the_same_key_victim(conn):
    """A user AFTER INSERT trigger created after tracking fires before
    sqlite-ct's and updates the row that INSERT OR REPLACE just wrote over
    another incarnation of its key; that incarnation still gets its
    tombstone (a replica that held it must delete it before a later delete
    of the new row means anything)."""
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "CREATE TRIGGER touch AFTER INSERT ON t BEGIN"
              " UPDATE t SET v = v || '!' WHERE id = NEW.id; END")
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (1, 'q', 'new')")
    assert tombstones(conn) == [(1,)]
    t.changes()
    run(conn, "DELETE FROM t WHERE id = 1")
    assert [d["id"] for d in t.changes().deletes] == [1]


def test_a_user_trigger_whose_insert_displaces_the_outer_row(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "CREATE TRIGGER spawn AFTER INSERT ON t WHEN NEW.v = 'spawn' BEGIN"
              " INSERT OR REPLACE INTO t(id, u, v) VALUES (NEW.id + 100, NEW.u, 'child'); END")
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (5, 'a', 'spawn')")
    assert q(conn, "SELECT id, u FROM t ORDER BY id") == [(2, "b"), (105, "a")]
    cs = t.changes()
    assert [d["id"] for d in cs.deletes] == [1]
    assert [r["id"] for r in cs.inserts] == [105]


@pytest.mark.parametrize("action", ["CASCADE", "SET NULL"])
def test_foreign_key_actions_on_a_tracked_child(conn, recursive, action):
    run(conn, "PRAGMA foreign_keys=ON",
        "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT UNIQUE)",
        "INSERT INTO parent VALUES (1, 'p1'), (2, 'p2')")
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES"
                      f" parent(id) ON DELETE {action} ON UPDATE CASCADE, v TEXT)", "t", ["id"],
                [{"id": 1, "pid": 1, "v": "x"}, {"id": 2, "pid": 2, "v": "y"}])
    run(conn, "INSERT OR REPLACE INTO parent VALUES (3, 'p1')")    # replaces parent 1
    cs = t.changes()
    if action == "CASCADE":
        assert ([d["id"] for d in cs.deletes], cs.updates) == ([1], [])
    else:
        assert (cs.deletes, cs.updates) == ([], [{"id": 1, "pid": None, "v": "x"}])


def test_a_composite_nocase_key_without_rowid(conn, recursive):
    t = Tracked(conn, "CREATE TABLE t(a TEXT COLLATE NOCASE, b INTEGER, u TEXT UNIQUE,"
                      " PRIMARY KEY(a, b)) WITHOUT ROWID", "t", ["a", "b"],
                [{"a": "x", "b": 1, "u": "p"}, {"a": "y", "b": 2, "u": "q"}])
    run(conn, "INSERT OR REPLACE INTO t(a, b, u) VALUES ('X', 1, 'q')")  # both displaced
    cs = t.changes()
    assert sorted((d["a"], d["b"]) for d in cs.deletes) == [("x", 1), ("y", 2)]
    assert cs.inserts == [{"a": "X", "b": 1, "u": "q"}]


def test_apply_mode_writes_no_tombstone_for_what_or_replace_deletes(conn):
    Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')")
    assert tombstones(conn) == []


def test_a_table_without_stamp_defaults(apsw_conn):
    """SQLITE_DBCONFIG_DEFENSIVE while tracking starts: no DEFAULTs, every
    inserted row captured with a NULL insert BSN and stamped by the fix."""
    conn = apsw_conn
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "INSERT INTO t(id, u, v) VALUES (3, 'c', 'z')",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (4, 'a', 'w')",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (2, 'n', 'w')")
    assert tombstones(conn) == [(1,), (2,)]
    cs = t.changes()
    assert sorted(d["id"] for d in cs.deletes) == [1, 2]
    assert sorted(r["id"] for r in cs.inserts) == [2, 3, 4]


def test_deletes_tracked_and_inserts_not(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    sqlite_ct.create_schema(conn, "t", options=sqlite_ct.TrackingOptions.DELETE
                            | sqlite_ct.TrackingOptions.UPDATE)
    t.anchor = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'c', 'z')")
    # as in layout 4: the row replaced under its own key counts as deleted
    # (its insert was not tracked, so a replica may hold that key from
    # elsewhere); the new row, untracked, is not enumerated
    assert tombstones(conn) == [(1,), (3,)]
    cs = sqlite_ct.enumerate_changes(conn, "t", t.anchor)
    assert ([d["id"] for d in cs.deletes], cs.inserts) == ([1, 3], [])


def test_a_direct_call_of_the_capture_leaves_nothing_for_a_later_sweep(conn):
    """sqlite_ct_capture() is callable from SQL like any function; what it
    remembers belongs to the statement that called it."""
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "BEGIN", "SELECT sqlite_ct_capture('t', 1, 99)",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')", "COMMIT")
    assert tombstones(conn) == [(1,)]
    t.changes()


def test_integrity_check_and_reindex_inside_a_write_transaction(conn):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "BEGIN", "DELETE FROM t WHERE id = 2")
    assert q(conn, "PRAGMA integrity_check") == [("ok",)]
    run(conn, "REINDEX t", "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')", "COMMIT")
    assert tombstones(conn) == [(1,), (2,)]
    assert q(conn, "PRAGMA integrity_check") == [("ok",)]
    t.changes()


def test_create_schema_again_keeps_the_capture_index(conn):
    Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    before = val(conn, "SELECT rootpage FROM sqlite_schema WHERE name='__sysct_cap_t'")
    sqlite_ct.create_schema(conn, "t")
    assert val(conn, "SELECT rootpage FROM sqlite_schema WHERE name='__sysct_cap_t'") == before


def test_a_connection_without_the_extension_cannot_delete(db_path):
    rw = apsw.Connection(db_path)
    sqlite_ct.load(rw)
    run(rw, UNIQUE_T)
    sqlite_ct.create_schema(rw, "t")
    run(rw, "INSERT INTO t(id, u, v) VALUES (1, 'a', 'x')")
    bare = apsw.Connection(db_path)
    with pytest.raises(apsw.Error, match="sqlite_ct_"):
        run(bare, "DELETE FROM t WHERE id = 1")
    assert val(rw, "SELECT count(*) FROM t") == 1
    bare.close()
    rw.close()
