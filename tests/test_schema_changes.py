"""Tracking survives schema changes made with SQL, or fails loudly.

ALTER TABLE ADD / RENAME COLUMN need nothing from the user (an added column is
guarded once create_schema() runs again; DROP COLUMN of a column the guard
names needs the guard dropped first: test_guard.py); RENAME TO
and DROP TABLE are followed by reconcile(); a rebuild by another tool is
refused until create_schema() re-arms the table, which makes replicas with
older anchors reinitialise.
"""
import apsw
import pytest
import sqlite_utils

import sqlite_ct


@pytest.fixture
def conn(apsw_conn):
    apsw_conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    apsw_conn.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b')")
    sqlite_ct.create_schema(apsw_conn, "t")
    return apsw_conn


def anchor(conn):
    return sqlite_ct.last_committed_csn(conn)


def test_add_column_is_tracked_without_any_call(conn):
    since = anchor(conn)
    conn.execute("ALTER TABLE t ADD COLUMN w INTEGER")
    conn.execute("UPDATE t SET w = 5 WHERE id = 1")
    conn.execute("INSERT INTO t(id, v, w) VALUES (3, 'c', 7)")
    changes = sqlite_ct.enumerate_changes(conn, "t", since)
    assert changes.updates == [{"id": 1, "v": "a", "w": 5}]
    assert changes.inserts == [{"id": 3, "v": "c", "w": 7}]


def test_rename_column_keeps_tracking(conn):
    since = anchor(conn)
    conn.execute("ALTER TABLE t RENAME COLUMN v TO value")
    conn.execute("UPDATE t SET value = 'z' WHERE id = 2")
    assert sqlite_ct.enumerate_changes(conn, "t", since).updates == [{"id": 2, "value": "z"}]


def test_rename_key_column_keeps_tombstones_right(conn):
    since = anchor(conn)
    conn.execute("ALTER TABLE t RENAME COLUMN id TO ident")
    conn.execute("DELETE FROM t WHERE ident = 1")
    assert sqlite_ct.enumerate_changes(conn, "t", since).deletes == [{"ident": 1}]


def test_drop_column_keeps_tracking(conn):
    conn.execute("ALTER TABLE t ADD COLUMN w INTEGER")
    since = anchor(conn)
    conn.execute("ALTER TABLE t DROP COLUMN w")
    conn.execute("UPDATE t SET v = 'q' WHERE id = 1")
    assert sqlite_ct.enumerate_changes(conn, "t", since).updates == [{"id": 1, "v": "q"}]


def test_dropping_a_tracking_column_is_refused(conn):
    with pytest.raises(apsw.SQLError):
        conn.execute('ALTER TABLE t DROP COLUMN "__sysChangeTxBsn"')
    assert sqlite_ct.check(conn) == []


def test_rename_table_moves_metadata_and_anchors(conn):
    since = anchor(conn)
    conn.execute("DELETE FROM t WHERE id = 1")
    sqlite_ct.set_sent_anchor(conn, "t", since)
    conn.execute("ALTER TABLE t RENAME TO renamed")
    # Written between the rename and the next sqlite-ct call: still tracked.
    conn.execute("DELETE FROM renamed WHERE id = 2")
    conn.execute("INSERT INTO renamed(id, v) VALUES (5, 'e')")
    assert sqlite_ct.tracked_tables(conn) == ["renamed"]
    changes = sqlite_ct.enumerate_changes(conn, "renamed", since)
    assert sorted(d["id"] for d in changes.deletes) == [1, 2]
    assert changes.inserts == [{"id": 5, "v": "e"}]
    assert sqlite_ct.get_sent_anchor(conn, "renamed") == since
    names = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE name GLOB '__sysct_*'")}
    assert names == {"__sysct_ai_renamed", "__sysct_au_renamed", "__sysct_ad_renamed",
                     "__sysct_ak_renamed", "__sysct_cap_renamed", "__sysct_chg_renamed", "__sysct_guard_renamed",
                     "__sysct_log_guard_delete", "__sysct_log_guard_update",
                     "__sysct_tomb_guard_delete", "__sysct_tomb_guard_update"}
    assert sqlite_ct.check(conn) == []
    with pytest.raises(sqlite_ct.NotTrackedError):
        sqlite_ct.enumerate_changes(conn, "t", since)


def test_a_new_table_under_a_renamed_tables_old_name(conn):
    """Before the rename is followed, the renamed table's triggers, index and
    guard still carry the old name: tracking a new table under that name
    through SQL is refused (it would drop them and leave the renamed table
    untracked); the Python API follows the rename first."""
    since = anchor(conn)
    conn.execute("ALTER TABLE t RENAME TO renamed")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    with pytest.raises(apsw.SQLError, match='table "t" was renamed to "renamed" and its '
                                            'tracking has not followed yet'):
        conn.execute("SELECT sqlite_ct_create_schema('t', 7, 'native')")
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.tracked_tables(conn) == ["renamed", "t"]
    assert sqlite_ct.check(conn) == []
    conn.execute("DELETE FROM renamed WHERE id = 1")
    conn.execute("INSERT INTO t(id, v) VALUES (9, 'new')")
    assert [d["id"] for d in sqlite_ct.enumerate_changes(conn, "renamed", since).deletes] == [1]
    assert sqlite_ct.enumerate_changes(conn, "t", 0).inserts == [{"id": 9, "v": "new"}]


def test_drop_table_removes_its_metadata(conn):
    conn.execute("DELETE FROM t WHERE id = 1")
    sqlite_ct.set_sent_anchor(conn, "t", 1)
    conn.execute("DROP TABLE t")
    assert sqlite_ct.tracked_tables(conn) == []
    assert conn.execute("SELECT count(*) FROM __sysOCSDeletedRows").get == 0
    assert conn.execute("SELECT count(*) FROM __sysSyncArticles").get == 0
    assert sqlite_ct.check(conn) == []


def test_drop_table_is_reported_by_check_before_reconcile(conn):
    conn.execute("DROP TABLE t")
    assert [p.code for p in sqlite_ct.check(conn)] == ["table-missing"]


def _twelve_step_rebuild(conn):
    """The rebuild recipe of SQLite's ALTER TABLE documentation: the new table
    keeps every column (stamps included) but none of the triggers."""
    conn.execute("""
        CREATE TABLE t_new(id INTEGER PRIMARY KEY, v TEXT NOT NULL DEFAULT '',
            "__sysChangeTxBsn" INTEGER, "__sysInsertTxBsn" INTEGER,
            "__sysTrackingContext" BLOB);
        INSERT INTO t_new SELECT id, coalesce(v, ''), "__sysChangeTxBsn",
            "__sysInsertTxBsn", "__sysTrackingContext" FROM t;
        DROP TABLE t;
        ALTER TABLE t_new RENAME TO t;
    """)


REBUILT = ('sqlite-ct: table "t" lost its tracking triggers (was it rebuilt by another '
           'tool, such as sqlite-utils transform()?); changes made since were not '
           'tracked. Call create_schema(conn, "t") to re-arm it; replicas with older '
           'anchors will then be asked to reinitialise')


def test_rebuild_is_refused_until_rearmed(conn):
    since = anchor(conn)
    _twelve_step_rebuild(conn)
    conn.execute("DELETE FROM t WHERE id = 1")        # not tracked: no trigger
    with pytest.raises(sqlite_ct.TableError) as err:
        sqlite_ct.enumerate_changes(conn, "t", since)
    assert str(err.value) == REBUILT
    assert "trigger-missing" in {p.code for p in sqlite_ct.check(conn)}

    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.check(conn) == []
    with pytest.raises(sqlite_ct.AnchorExpiredError) as err:
        sqlite_ct.enumerate_changes(conn, "t", since)
    assert "reinitialise the replica" in str(err.value)
    rearmed = anchor(conn)
    conn.execute("UPDATE t SET v = 'after' WHERE id = 2")
    assert sqlite_ct.enumerate_changes(conn, "t", rearmed).updates == [{"id": 2, "v": "after"}]


def test_sqlite_utils_transform_is_detected_and_rearmed(sqlite3_conn):
    conn = sqlite3_conn      # sqlite-utils works on stdlib sqlite3 connections
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t(id, v) VALUES (1, '1'), (2, '2')")
    sqlite_ct.create_schema(conn, "t")
    since = anchor(conn)
    sqlite_utils.Database(conn)["t"].transform(types={"v": int})
    conn.execute("DELETE FROM t WHERE id = 1")        # untracked: triggers are gone
    with pytest.raises(sqlite_ct.TableError) as err:
        sqlite_ct.enumerate_changes(conn, "t", since)
    assert str(err.value) == REBUILT
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.check(conn) == []
    with pytest.raises(sqlite_ct.AnchorExpiredError):
        sqlite_ct.enumerate_changes(conn, "t", since)


def test_manually_dropped_delete_trigger_counts_as_lost_tracking(conn):
    conn.execute("DROP TRIGGER __sysct_ad_t")
    with pytest.raises(sqlite_ct.TableError):
        sqlite_ct.enumerate_changes(conn, "t", 0)
