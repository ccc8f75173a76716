"""The write path of layouts 4 and 5 (docs/architecture.md, "The triggers"): the
AFTER INSERT trigger's body is empty, and what it did when its WHEN held
(tombstone the rows an OR REPLACE deleted, stamp a row the DEFAULTs did not),
the fix, runs from C inside the WHEN, as statements kept per connection. The
AFTER DELETE trigger writes its tombstone as one VALUES row behind a WHEN.
Layout 5 captures the rows an OR REPLACE deleted with the capture index
instead of BEFORE triggers (tests/test_capture.py)."""
import os
import shutil

import apsw
import pytest

import sqlite_ct
from sqlhelpers import HOST_ERRORS, q, run, val

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def tombstones(conn, table="t"):
    return sorted(sqlite_ct.unpack_key(conn, table, rk)[0] for (rk,) in q(
        conn, "SELECT __sysRK FROM __sysOCSDeletedRows WHERE __sysTName=?", (table,)))


def trigger_sql(conn, name):
    return val(conn, "SELECT sql FROM sqlite_schema WHERE type='trigger' AND name=?", (name,))


def test_the_after_insert_body_is_empty_and_the_delete_tombstone_one_values_row(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    assert trigger_sql(conn, "__sysct_ai_t").endswith(" BEGIN SELECT 1; END")
    ad = trigger_sql(conn, "__sysct_ad_t")
    assert " WHEN sqlite_ct_delete_when(" in ad and " VALUES(" in ad and "SELECT" not in \
        ad.split(" BEGIN ", 1)[1]
    # nothing else of sqlite-ct's in the schema for it
    assert sorted(r[0] for r in q(conn, "SELECT name FROM sqlite_schema WHERE name GLOB"
                                       " '__sysct_*_t'")) == [
        "__sysct_ad_t", "__sysct_ai_t", "__sysct_ak_t", "__sysct_au_t", "__sysct_cap_t",
        "__sysct_chg_t", "__sysct_guard_t"]


def test_or_replace_victims_and_restamping_go_through_the_fix(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, u, v) VALUES (1, 'a', 'x'), (2, 'b', 'y')")
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')")   # victim 1
    run(conn, 'INSERT INTO t(id, u, v, "__sysChangeTxBsn") VALUES (4, \'d\', \'w\', 999)')
    assert tombstones(conn) == [1]
    csn = sqlite_ct.last_committed_csn(conn)
    assert q(conn, 'SELECT id, "__sysChangeTxBsn", "__sysInsertTxBsn" FROM t WHERE id=4') == \
        [(4, csn, csn)]
    changes = sqlite_ct.enumerate_changes(conn, "t", since)
    assert sorted(r["id"] for r in changes.inserts) == [3, 4]
    assert [d["id"] for d in changes.deletes] == [1]


def test_the_fix_keeps_last_insert_rowid(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, u) VALUES (1, 'a')")
    run(conn, "INSERT OR REPLACE INTO t(id, u) VALUES (7, 'a')")
    assert val(conn, "SELECT last_insert_rowid()") == 7
    assert tombstones(conn) == [1]


def test_a_failed_statement_undoes_what_the_fix_wrote(conn):
    """The fix runs as a statement nested in the INSERT's; when the INSERT
    fails after it (a user trigger's RAISE), its tombstones go too."""
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE)")
    # created first, so it fires after sqlite-ct's triggers (SQLite fires the
    # newest first)
    run(conn, "CREATE TRIGGER no_nines AFTER INSERT ON t WHEN NEW.id = 9"
              " BEGIN SELECT RAISE(ABORT, 'no nines'); END")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, u) VALUES (1, 'a')")
    run(conn, "INSERT OR REPLACE INTO t(id, u) VALUES (8, 'b')")   # the fix is kept
    with pytest.raises(HOST_ERRORS, match="no nines"):
        run(conn, "INSERT OR REPLACE INTO t(id, u) VALUES (9, 'a')")
    assert q(conn, "SELECT id, u FROM t ORDER BY id") == [(1, "a"), (8, "b")]
    assert tombstones(conn) == []
    assert val(conn, "SELECT count(*) FROM __sysCtReplaceVictims") == 0
    assert sqlite_ct.check(conn) == []


def test_more_tables_than_kept_fix_statements(conn):
    """Fix statements are kept per connection, a few at a time: a round over
    more tables than that re-prepares them and still fixes every table."""
    names = [f"t{i}" for i in range(7)]
    for name in names:
        run(conn, f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, u TEXT UNIQUE)")
        sqlite_ct.create_schema(conn, name)
        run(conn, f"INSERT INTO {name}(id, u) VALUES (1, 'a')")
    for round_ in range(2):
        for name in names:
            q(conn, f"INSERT OR REPLACE INTO {name}(id, u) VALUES (?, 'a')", (10 + round_,))
    for name in names:
        assert tombstones(conn, name) == [1, 10]
        assert q(conn, f"SELECT id FROM {name}") == [(11,)]


def test_the_fix_follows_a_rename_before_tracking_follows_it(apsw_conn):
    """After ALTER TABLE RENAME the trigger still passes the old name until
    sqlite-ct follows the rename; the fix finds the table under its new name."""
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE)")
    sqlite_ct.create_schema(apsw_conn, "t")
    run(apsw_conn, "INSERT INTO t(id, u) VALUES (1, 'a')")
    run(apsw_conn, "INSERT OR REPLACE INTO t(id, u) VALUES (2, 'a')")   # a fix is kept
    run(apsw_conn, "ALTER TABLE t RENAME TO r")
    run(apsw_conn, "INSERT OR REPLACE INTO r(id, u) VALUES (3, 'a')")
    run(apsw_conn, 'INSERT INTO r(id, u, "__sysChangeTxBsn") VALUES (4, \'d\', 999)')
    assert sqlite_ct.tracked_tables(apsw_conn) == ["r"]          # follows the rename
    assert tombstones(apsw_conn, "r") == [1, 2]
    assert val(apsw_conn, 'SELECT "__sysChangeTxBsn" FROM r WHERE id = 4') == \
        sqlite_ct.last_committed_csn(apsw_conn)
    run(apsw_conn, "INSERT OR REPLACE INTO r(id, u) VALUES (5, 'a')")
    assert tombstones(apsw_conn, "r") == [1, 2, 3]


def test_a_fix_that_cannot_be_prepared_fails_the_insert_loudly(apsw_conn):
    """A fix SQLite cannot prepare (here: a __sys column renamed by hand) fails
    the insert that needs it, with SQLite's reason; nothing is written. (The
    row carries a stamp of its own, so it needs the stamping fix; the sweep of
    what OR REPLACE deleted names no __sys column.)"""
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE)")
    sqlite_ct.create_schema(apsw_conn, "t")
    run(apsw_conn, "INSERT INTO t(id, u) VALUES (1, 'a')")
    run(apsw_conn, 'ALTER TABLE t RENAME COLUMN "__sysInsertTxBsn" TO ins')
    with pytest.raises(apsw.SQLError, match="__sysInsertTxBsn"):
        run(apsw_conn, "INSERT OR REPLACE INTO t(id, u, ins) VALUES (2, 'a', 7)")
    assert q(apsw_conn, "SELECT id FROM t") == [(1,)]


def test_without_rowid_and_composite_keys_are_fixed_by_key(conn):
    run(conn, "CREATE TABLE t(a TEXT, b INTEGER, u TEXT UNIQUE, PRIMARY KEY(a, b))"
              " WITHOUT ROWID")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(a, b, u) VALUES ('x', 1, 'p')")
    run(conn, "INSERT OR REPLACE INTO t(a, b, u) VALUES ('y', 2, 'p')")
    run(conn, 'INSERT INTO t(a, b, u, "__sysInsertTxBsn") VALUES (\'z\', 3, \'q\', 999)')
    assert [tuple(sqlite_ct.unpack_key(conn, "t", rk)) for (rk,) in
            q(conn, "SELECT __sysRK FROM __sysOCSDeletedRows")] == [("x", 1)]
    csn = sqlite_ct.last_committed_csn(conn)
    assert val(conn, 'SELECT "__sysInsertTxBsn" FROM t WHERE a=\'z\'') == csn


def test_a_layout3_database_writes_before_and_after_its_upgrade(tmp_path):
    """Layout-3 triggers (the body in the AFTER INSERT trigger) keep working
    with this build; the upgrade installs the current layout's, and nothing unsynced is
    lost on the way."""
    path = tmp_path / "layout3.db"
    shutil.copy(os.path.join(FIXTURES, "layout3.db"), path)
    conn = apsw.Connection(str(path))
    try:
        sqlite_ct.load(conn)
        since = sqlite_ct.get_sent_anchor(conn, "orders")
        run(conn, "INSERT OR REPLACE INTO orders(id, item, qty) VALUES (3, 'fig', 1)")
        run(conn, "DELETE FROM orders WHERE id = 1")
        before = sqlite_ct.enumerate_changes(conn, "orders", since)
        assert not trigger_sql(conn, "__sysct_ai_orders").endswith(" BEGIN SELECT 1; END")
        assert val(conn, "SELECT sqlite_ct_create_system_tables()") == 7
        assert trigger_sql(conn, "__sysct_ai_orders").endswith(" BEGIN SELECT 1; END")
        after = sqlite_ct.enumerate_changes(conn, "orders", since)
        assert (after.inserts, after.updates, after.deletes) == \
            (before.inserts, before.updates, before.deletes)
        run(conn, "INSERT OR REPLACE INTO orders(id, item, qty) VALUES (3, 'kiwi', 2)")
        run(conn, "DELETE FROM orders WHERE id = 3")
        after = sqlite_ct.enumerate_changes(conn, "orders", since)
        # 3 was inserted after the anchor: its delete is nothing a replica needs
        assert sorted(d["id"] for d in after.deletes) == [1, 2]
        assert 3 not in [r["id"] for r in after.inserts]
        assert sqlite_ct.check(conn) == []
    finally:
        conn.close()
