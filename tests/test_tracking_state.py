"""What a sync provider reads of the tracking state through the core
(sqlite_ct.table_tracking, row_stamps, commit_time, newest_csn_committed_by):
each answers from the database as the contract defines it."""
import uuid

import sqlite_ct


def test_table_tracking_reports_the_registry(conn):
    conn.execute("CREATE TABLE Items(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO Items(id, v) VALUES (1, 'before tracking')")
    assert sqlite_ct.table_tracking(conn, "items") is None
    sqlite_ct.create_schema(conn, "Items")
    t = sqlite_ct.table_tracking(conn, "ITEMS")
    assert t is not None and t.name == "Items" and not t.portable
    assert t.enable_bsn >= 1 and t.min_valid_csn <= t.enable_bsn
    conn.execute("INSERT INTO Items(id, v) VALUES (2, 'x')")
    conn.execute("DELETE FROM Items WHERE id = 2")
    last = sqlite_ct.last_committed_csn(conn)
    sqlite_ct.purge_tombstones(conn, "Items", up_to_csn=last)
    assert sqlite_ct.table_tracking(conn, "Items").min_valid_csn > t.min_valid_csn
    assert sqlite_ct.table_tracking(conn, "nope") is None


def test_row_stamps_read_a_rows_latest_change_and_context(conn):
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'old')")
    sqlite_ct.create_schema(conn, "t")
    s = sqlite_ct.row_stamps("r")
    read = f"SELECT {s.change_bsn}, {s.context} FROM t AS r WHERE r.id = ?"
    assert conn.execute(read, (1,)).fetchall() == [(None, None)]   # predates tracking
    ctx = uuid.uuid4()
    sqlite_ct.set_tracking_context(conn, ctx)
    conn.execute("UPDATE t SET v = 'new' WHERE id = 1")
    sqlite_ct.set_tracking_context(conn, None)
    bsn = sqlite_ct.last_committed_csn(conn)
    assert conn.execute(read, (1,)).fetchall() == [(bsn, ctx.bytes_le)]
    own = sqlite_ct.row_stamps("")
    assert conn.execute(f"SELECT {own.change_bsn} FROM t").fetchall() == [(bsn,)]
    # what the contract says of the same row
    cs = sqlite_ct.enumerate_changes(conn, "t", since=bsn - 1)
    assert (len(cs.inserts), len(cs.updates), len(cs.deletes)) == (0, 1, 0)


def test_commit_times_name_the_log(conn):
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.commit_time(conn, 10**9) is None
    conn.execute("INSERT INTO t(id) VALUES (1)")
    first = sqlite_ct.last_committed_csn(conn)
    conn.execute("INSERT INTO t(id) VALUES (2)")
    second = sqlite_ct.last_committed_csn(conn)
    t1, t2 = sqlite_ct.commit_time(conn, first), sqlite_ct.commit_time(conn, second)
    assert t1 is not None and t2 is not None and t1 <= t2
    assert sqlite_ct.newest_csn_committed_by(conn, t2) == second
    assert sqlite_ct.newest_csn_committed_by(conn, 0) == 0
