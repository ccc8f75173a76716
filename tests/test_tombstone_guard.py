"""The tombstones' guard (layout 6; csrc/schema.c, the system DDL, and
sqlite_ct/_conn.py, owning_tombstones()).

A tombstone in __sysOCSDeletedRows is the only record of a delete. Removed by
plain SQL (a "clean-up" of a table that looks like housekeeping), or with its
key or delete BSN changed, every replica whose anchor predates it would
never hear of the delete, and nothing would say so: through layout 5 such a
statement was accepted and check() stayed clean. purge_tombstones() removes
tombstones and expires the anchors that still need them; the guard triggers
refuse everything else, on every connection, with or without the extension.
"""
import apsw
import pytest

import sqlite_ct
from sqlhelpers import HOST_ERRORS, q, run

GUARDED = "tombstones in __sysOCSDeletedRows are removed by sqlite_ct.purge_tombstones()"

REFUSED = [
    "DELETE FROM __sysOCSDeletedRows",
    "DELETE FROM __sysOCSDeletedRows WHERE __sysTName = 't'",
    "UPDATE __sysOCSDeletedRows SET __sysDeleteTxBsn = 1",
    "UPDATE __sysOCSDeletedRows SET __sysRK = sqlite_ct_pack_key(99)",
    "UPDATE __sysOCSDeletedRows SET __sysTName = 'u'",
    # a larger insert BSN makes the delete look like one of a row inserted
    # after the replica's anchor, which a replica never gets
    "UPDATE __sysOCSDeletedRows SET __sysInsertTxCsn = 1000000",
]


def tracked_with_a_delete(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "DELETE FROM t WHERE id = 1")
    return since


def deletes(conn, since):
    return [d["id"] for d in sqlite_ct.enumerate_changes(conn, "t", since).deletes]


@pytest.mark.parametrize("sql", REFUSED)
def test_plain_sql_cannot_remove_or_rekey_a_tombstone(conn, sql):
    since = tracked_with_a_delete(conn)
    with pytest.raises(HOST_ERRORS, match=GUARDED):
        run(conn, sql)
    assert deletes(conn, since) == [1]


def test_a_connection_without_the_extension_is_refused_too(db_path):
    """The guard is pure SQL: portable mode's writers, which run without the
    extension, can prepare every statement that may fire it."""
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    since = tracked_with_a_delete(conn)
    conn.close()
    bare = apsw.Connection(db_path)      # no sqlite_ct.load()
    try:
        with pytest.raises(apsw.ConstraintError, match=GUARDED):
            bare.execute("DELETE FROM __sysOCSDeletedRows")
        assert bare.execute("SELECT count(*) FROM __sysOCSDeletedRows").get == 1
    finally:
        bare.close()
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    assert deletes(conn, since) == [1]
    conn.close()


def test_the_mark_of_sqlite_cts_own_calls_is_its_transactions_own(db_path):
    """purge_tombstones() marks its write transaction in __sysCtMeta; another
    connection never sees the mark, and it is gone when the call returns."""
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    tracked_with_a_delete(conn)
    other = apsw.Connection(db_path)
    try:
        run(conn, "BEGIN IMMEDIATE")
        sqlite_ct.purge_tombstones(conn, "t", up_to_csn=sqlite_ct.last_committed_csn(conn))
        assert q(conn, "SELECT count(*) FROM __sysCtMeta WHERE key = 'tombstones_owned'") == [
            (0,)]
        run(conn, "COMMIT")
        assert q(other, "SELECT count(*) FROM __sysCtMeta WHERE key = 'tombstones_owned'") == [
            (0,)]
    finally:
        other.close()
        conn.close()


def test_what_sqlite_ct_writes_itself_passes(conn):
    """Its own tombstones (an upsert that lowers the insert BSN of a key
    deleted twice in a transaction), the columns outside the guard, and its
    calls that remove or rename tombstones."""
    since = tracked_with_a_delete(conn)
    run(conn, "BEGIN", "INSERT INTO t(id, v) VALUES (1, 'again')", "DELETE FROM t WHERE id = 1",
        "DELETE FROM t WHERE id = 2", "INSERT INTO t(id, v) VALUES (2, 'again')",
        "DELETE FROM t WHERE id = 2", "COMMIT")
    assert sorted(deletes(conn, since)) == [1, 2]
    run(conn, "UPDATE __sysOCSDeletedRows SET __sysDeletedTime = 0, __sysTrackingContext = NULL",
        "UPDATE __sysOCSDeletedRows SET __sysInsertTxCsn = __sysInsertTxCsn - 1")
    # forget_pending_deletes(): a sync client's pending delete the server's row replaces
    assert sqlite_ct.forget_pending_deletes(conn, "t", [2], after=since) == 1
    assert deletes(conn, since) == [1]
    # purge_tombstones(): removes them (key 1 was deleted by two transactions)
    # and expires the anchors that need them
    assert sqlite_ct.purge_tombstones(
        conn, "t", up_to_csn=sqlite_ct.last_committed_csn(conn)) == 2
    with pytest.raises(sqlite_ct.AnchorExpiredError):
        sqlite_ct.enumerate_changes(conn, "t", since)
    # rename_tracking() (ALTER TABLE RENAME, reconciled) and disable_tracking()
    run(conn, "DELETE FROM t WHERE id = 3", "ALTER TABLE t RENAME TO t2")
    assert sqlite_ct.tracked_tables(conn) == ["t2"]
    assert q(conn, "SELECT DISTINCT __sysTName FROM __sysOCSDeletedRows") == [("t2",)]
    sqlite_ct.disable_tracking(conn, "t2")
    assert q(conn, "SELECT count(*) FROM __sysOCSDeletedRows") == [(0,)]
    assert q(conn, "SELECT count(*) FROM __sysCtMeta WHERE key = 'tombstones_owned'") == [(0,)]


def test_a_failed_purge_gives_ownership_back(apsw_conn):
    conn = apsw_conn
    tracked_with_a_delete(conn)
    run(conn, "CREATE TRIGGER boom BEFORE DELETE ON __sysOCSDeletedRows"
              " BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(apsw.ConstraintError, match="boom"):
        sqlite_ct.purge_tombstones(conn, "t", up_to_csn=sqlite_ct.last_committed_csn(conn))
    run(conn, "DROP TRIGGER boom")
    assert q(conn, "SELECT count(*) FROM __sysCtMeta WHERE key = 'tombstones_owned'") == [(0,)]
    with pytest.raises(apsw.ConstraintError, match=GUARDED):
        run(conn, "DELETE FROM __sysOCSDeletedRows")


def test_an_upgraded_database_gets_the_guard(tmp_path):
    import os
    import shutil
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    path = str(tmp_path / "layout5.db")
    shutil.copy(os.path.join(fixtures, "layout5.db"), path)
    conn = apsw.Connection(path)
    try:
        sqlite_ct.load(conn)
        assert conn.execute("SELECT sqlite_ct_create_system_tables()").get == 7
        with pytest.raises(apsw.ConstraintError, match=GUARDED):
            run(conn, "DELETE FROM __sysOCSDeletedRows")
    finally:
        conn.close()
