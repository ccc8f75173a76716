"""check() reports what is inconsistent; databases from a newer sqlite-ct are refused.

The layout fixture: tests/fixtures/make_fixtures.py writes one small database per
released on-disk layout; test_released_layouts_open() opens each with this build.
"""
import os
import shutil
import subprocess
import sys

import apsw
import pytest

import sqlite_ct

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture
def conn(apsw_conn):
    apsw_conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    apsw_conn.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b')")
    return apsw_conn


def test_healthy_database_has_no_problems(conn):
    conn.execute("DELETE FROM t WHERE id = 2")
    assert sqlite_ct.check(conn) == []


def test_missing_trigger_and_index_are_reported(conn):
    conn.execute("DROP TRIGGER __sysct_au_t; DROP INDEX __sysct_chg_t")
    assert [(p.table, p.code) for p in sqlite_ct.check(conn)] == [
        ("t", "trigger-missing"), ("t", "index-missing")]


def test_stamp_above_last_committed_csn_is_reported(conn):
    conn.execute("DROP TRIGGER __sysct_au_t")
    conn.execute('UPDATE t SET "__sysChangeTxBsn" = 999 WHERE id = 1')
    codes = [p.code for p in sqlite_ct.check(conn)]
    assert "stamp-above-csn" in codes


def test_tombstone_for_live_row_is_reported(conn):
    rk = sqlite_ct.pack_key(conn, "t", [1])
    conn.execute("INSERT INTO __sysOCSDeletedRows VALUES ('t', ?, 99, 1, 0, NULL)", (rk,))
    assert [p.code for p in sqlite_ct.check(conn)] == ["tombstone-for-live-row"]


NEWER = ("sqlite-ct: this database was written by a newer sqlite-ct (layout 8; this "
         "build reads layouts up to 7); upgrade sqlite-ct")


def test_newer_layout_is_refused_everywhere(conn):
    conn.execute("UPDATE __sysCtMeta SET value = 8 WHERE key = 'layout_version'")
    for call in (lambda: sqlite_ct.create_schema(conn, "t"),
                 lambda: sqlite_ct.enumerate_changes(conn, "t", 0),
                 lambda: sqlite_ct.disable_tracking(conn, "t")):
        with pytest.raises(sqlite_ct.LayoutError) as err:
            call()
        assert str(err.value) == NEWER
    assert [p.code for p in sqlite_ct.check(conn)] == ["layout"]
    # Nothing was changed by the refused calls.
    assert sqlite_ct.tracked_tables(conn) == ["t"]


LAYOUT = 7


def layout_of(conn):
    return conn.execute("SELECT value FROM __sysCtMeta WHERE key='layout_version'").get


def has_guard(conn):
    return conn.execute("SELECT count(*) FROM sqlite_schema WHERE type='index' "
                        "AND name='__sysct_guard_orders'").get == 1


def has_capture(conn):
    return conn.execute("SELECT count(*) FROM sqlite_schema WHERE type='index' "
                        "AND name='__sysct_cap_orders'").get == 1


def pending(conn, since):
    cs = sqlite_ct.enumerate_changes(conn, "orders", since)
    return (sorted(r["id"] for r in cs.inserts), sorted(r["id"] for r in cs.updates),
            sorted(r["id"] for r in cs.deletes))


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(FIXTURES) if f.endswith(".db")))
def test_released_layouts_open_and_upgrade(tmp_path, name):
    """A database of every released layout works as it is, check() says when
    it is older, and an upgrade keeps every unsynced change."""
    path = tmp_path / name
    shutil.copy(os.path.join(FIXTURES, name), path)
    version = int(name.split("layout")[1].split(".")[0])
    conn = apsw.Connection(str(path))
    try:
        sqlite_ct.load(conn)
        assert [p.code for p in sqlite_ct.check(conn)] == (
            ["layout-outdated"] if version < LAYOUT else [])
        since = sqlite_ct.get_sent_anchor(conn, "orders")
        conn.execute("UPDATE orders SET qty = qty + 1 WHERE id = 1")
        before = pending(conn, since)
        assert before == ([3], [1], [2])
        assert layout_of(conn) == version
        assert has_guard(conn) == (version >= 3)
        assert has_capture(conn) == (version >= 5)
        if version < LAYOUT:
            # the triggers as they were (layouts 2 to 4 remember OR REPLACE victims
            # through the UNIQUE indexes they know, and refuse a write through
            # one created later) keep working with this build
            conn.execute("CREATE UNIQUE INDEX orders_qty ON orders(qty)")
            if 2 <= version <= 4:
                with pytest.raises(apsw.ConstraintError, match="created after tracking began"):
                    conn.execute("INSERT OR REPLACE INTO orders(id, item, qty) VALUES (8, 'fig', 7)")
            conn.execute("DROP INDEX orders_qty")
        assert conn.execute("SELECT sqlite_ct_create_system_tables()").get == LAYOUT
        assert layout_of(conn) == LAYOUT
        assert has_guard(conn) and has_capture(conn)
        assert sqlite_ct.check(conn) == []
        assert pending(conn, since) == before
        # the upgraded triggers: OR REPLACE through a UNIQUE index added now is
        # tracked, without create_schema() again
        conn.execute("CREATE UNIQUE INDEX orders_item ON orders(item)")
        conn.execute("INSERT OR REPLACE INTO orders(id, item, qty) VALUES (9, 'apple', 1)")
        assert pending(conn, since) == ([3, 9], [], [1, 2])
    finally:
        conn.close()


def test_fixture_script_reproduces_the_fixtures(tmp_path):
    subprocess.run([sys.executable, os.path.join(FIXTURES, "make_fixtures.py"), str(tmp_path)],
                   check=True)
    assert os.listdir(tmp_path) == [f"layout{LAYOUT}.db"]
    assert sorted(f for f in os.listdir(FIXTURES) if f.endswith(".db")) == [
        f"layout{v}.db" for v in range(1, LAYOUT + 1)]


def test_upgraded_layout1_refuses_writes_through_an_attach_alias(tmp_path):
    """Layout-1 triggers accepted a write through an ATTACH alias (numbered and
    logged with the other database's numbers); check() says the layout is
    outdated, and the upgrade installs triggers that refuse it."""
    path = tmp_path / "layout1.db"
    shutil.copy(os.path.join(FIXTURES, "layout1.db"), path)
    main = apsw.Connection(str(tmp_path / "main.db"))
    sqlite_ct.load(main)
    main.execute(f"ATTACH '{path}' AS other")
    main.execute("UPDATE other.orders SET qty = 99 WHERE id = 1")   # accepted: layout 1
    own = apsw.Connection(str(path))
    sqlite_ct.load(own)
    assert [p.code for p in sqlite_ct.check(own)] == ["layout-outdated"]
    own.execute("SELECT sqlite_ct_create_system_tables()")
    assert sqlite_ct.check(own) == []
    own.close()
    with pytest.raises(apsw.SQLError, match="tracked in a database attached to the connection"):
        main.execute("UPDATE other.orders SET qty = 98 WHERE id = 1")
    main.close()


def test_a_missing_capture_index_is_reported(conn):
    conn.execute("DROP INDEX __sysct_cap_t")
    assert [(p.table, p.code) for p in sqlite_ct.check(conn)] == [("t", "capture-missing")]
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.check(conn) == []


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(FIXTURES) if f.endswith(".db")))
def test_an_older_layouts_triggers_run_the_fix_of_this_build(tmp_path, name):
    """Until a database is upgraded its own triggers run, and those of
    layouts 2 to 4 send an INSERT OR REPLACE that deleted a row to the fix of
    this build (csrc/state.c, ctRunFix): the victims' tombstones, the stamp
    and, since layout 6, the check that the stamp was written, which is one
    statement more than a fix kept room for (it failed with "sqlite-ct:
    internal error" until that room grew)."""
    path = tmp_path / name
    shutil.copy(os.path.join(FIXTURES, name), path)
    conn = apsw.Connection(str(path))
    try:
        sqlite_ct.load(conn)
        since = sqlite_ct.get_sent_anchor(conn, "orders")
        conn.execute("INSERT OR REPLACE INTO orders(id, item, qty) VALUES (1, 'kiwi', 5)")
        # Layout 1 reported a row replaced under its own key as an insert only
        # (a replica's upsert replaces it); layout 2 added the delete.
        version = int(name.split("layout")[1].split(".")[0])
        assert pending(conn, since) == ([1, 3], [], [2] if version == 1 else [1, 2])
        assert conn.execute("SELECT item FROM orders WHERE id = 1").get == "kiwi"
    finally:
        conn.close()
