"""Writes that could remove or change rows behind the triggers' back: a UNIQUE
index created after tracking began, OR REPLACE through the rowid of a table
whose key is not the rowid, keys with a non-BINARY collation, NULL in a
composite key, foreign __sys stamps, the commit log edited by hand, and
tracking turned off and on again. Each is tracked, or refused with an error
that says what to do; never silently lost."""
import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows  # noqa: F401
from sqlhelpers import HOST_ERRORS, q, run, val
from test_traps import Tracked, recursive  # noqa: F401  (fixture)


# ------------------------------------------- UNIQUE index created afterwards

# Native mode (layout 5): OR REPLACE through a UNIQUE index the table did not
# have when tracking began is tracked as it is: the capture index sees every
# row SQLite deletes, whatever index it deletes it through (state.c, "Captured
# rows"). Without it (layout 4) such a write was refused until create_schema().

@pytest.mark.parametrize("statement,deleted", [
    ("INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')", [{"id": 1}]),
    ("UPDATE OR REPLACE t SET u = 'a' WHERE id = 2", [{"id": 1}]),
    ("INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'c', 'y')", [{"id": 2}]),
    ("INSERT INTO t(id, u, v) VALUES (3, 'c', 'z')", []),
    ("UPDATE t SET v = 'w' WHERE id = 2", []),
])
def test_unique_index_created_after_tracking_is_tracked_without_rearming(
        conn, recursive, statement, deleted):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT, v TEXT)", "t", ["id"],
                [{"id": 1, "u": "a", "v": "x"}, {"id": 2, "u": "b", "v": "y"}])
    run(conn, "CREATE UNIQUE INDEX t_u ON t(u)", "CREATE UNIQUE INDEX t_v ON t(v)")
    run(conn, statement)
    assert t.changes().deletes == deleted


def test_unique_index_created_in_the_writing_transaction(conn, recursive):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT, v TEXT)", "t", ["id"],
                [{"id": 1, "u": "a", "v": "x"}])
    run(conn, "BEGIN", "INSERT INTO t(id, u, v) VALUES (2, 'b', 'y')",
        "CREATE UNIQUE INDEX t_u ON t(u)",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')", "COMMIT")
    assert t.changes().deletes == [{"id": 1}]


def test_unique_index_created_after_a_rolled_back_schema_change(conn):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT, v TEXT)", "t", ["id"],
                [{"id": 1, "u": "a", "v": "x"}, {"id": 2, "u": "b", "v": "y"}])
    run(conn, "BEGIN", "CREATE UNIQUE INDEX t_v ON t(v)", "ROLLBACK",
        "CREATE UNIQUE INDEX t_u ON t(u)",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'b', 'z')")
    assert t.changes().deletes == [{"id": 2}]


def test_dropped_and_plain_indexes_do_not_refuse_writes(conn):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)", "t",
                ["id"], [{"id": 1, "u": "a", "v": "x"}])
    run(conn, "CREATE INDEX t_v ON t(v)", "INSERT INTO t(id, u, v) VALUES (2, 'b', 'y')")
    t.changes()


@pytest.mark.parametrize("statement", [
    "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')",
    "UPDATE OR REPLACE t SET u = 'a' WHERE id = 2",
])
def test_unique_index_created_after_tracking_portable_mode(apsw_conn, db_path, statement):
    """Portable triggers refuse it too, for writers without the extension."""
    t = Tracked(apsw_conn, "CREATE TABLE unique_t(id INTEGER PRIMARY KEY, u TEXT, v TEXT)",
                "unique_t", ["id"], [{"id": 1, "u": "a", "v": "x"}, {"id": 2, "u": "b", "v": "y"}],
                mode="portable")
    plain = apsw.Connection(db_path)
    run(plain, "CREATE INDEX unique_t_v ON unique_t(v)",        # plain: no refusal
        "UPDATE unique_t SET v = 'w' WHERE id = 1",
        "CREATE UNIQUE INDEX unique_t_u ON unique_t(u)")
    statement = statement.replace(" t", " unique_t").replace(" t(", " unique_t(")
    with pytest.raises(apsw.ConstraintError) as err:
        run(plain, statement)
    assert str(err.value) == (
        'sqlite-ct: table "unique_t" has a UNIQUE index created after'
        " tracking began; run create_schema on it again so that OR REPLACE through it is"
        " tracked")
    assert val(apsw_conn, "SELECT count(*) FROM unique_t") == 2
    sqlite_ct.create_schema(apsw_conn, "unique_t", mode="portable")
    run(plain, statement)
    plain.close()
    t.changes()


def test_unique_index_created_by_a_connection_without_the_extension(apsw_conn, db_path):
    conn = apsw_conn
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT, v TEXT)", "t", ["id"],
                [{"id": 1, "u": "a", "v": "x"}])
    other = apsw.Connection(db_path)
    other.execute("CREATE UNIQUE INDEX t_u ON t(u)")
    other.close()
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')")
    assert t.changes().deletes == [{"id": 1}]


# ------------------------------------------------ OR REPLACE through the rowid

ROWID_SHAPES = {
    "text-key": "CREATE TABLE t(k TEXT PRIMARY KEY, v TEXT)",
    "integer-key-desc": "CREATE TABLE t(k INTEGER PRIMARY KEY DESC, v TEXT)",
}


@pytest.mark.parametrize("shape", sorted(ROWID_SHAPES))
@pytest.mark.parametrize("statement", [
    "INSERT OR REPLACE INTO t(rowid, k, v) VALUES ({rowid}, {new}, 'z')",
    "REPLACE INTO t(_rowid_, k, v) VALUES ({rowid}, {new}, 'z')",
    "UPDATE OR REPLACE t SET rowid = {rowid} WHERE k = {other}",
    "UPDATE OR REPLACE t SET oid = {rowid}, v = 'z' WHERE k = {other}",
])
@pytest.mark.parametrize("mode", ["native", "portable"])
def test_or_replace_through_the_rowid_of_a_table_keyed_otherwise(conn, recursive, shape,
                                                                  statement, mode):
    text = shape == "text-key"
    a, b, new = ("'a'", "'b'", "'c'") if text else ("10", "20", "30")
    t = Tracked(conn, ROWID_SHAPES[shape], "t", ["k"],
                [{"k": "a" if text else 10, "v": "x"}, {"k": "b" if text else 20, "v": "y"}],
                mode=mode)
    rowid = val(conn, f"SELECT rowid FROM t WHERE k = {a}")
    run(conn, statement.format(rowid=rowid, new=new, other=b))
    assert val(conn, f"SELECT count(*) FROM t WHERE k = {a}") == 0
    cs = t.changes()
    assert cs.deletes == [{"k": "a" if text else 10}]


def test_update_of_rowid_matches_the_name_written_in_set():
    """SQLite matches an UPDATE OF list by the names the SET clause writes, so
    the rowid's three names are each listed (pins undocumented behaviour)."""
    c = apsw.Connection(":memory:")
    run(c, "CREATE TABLE t(k TEXT PRIMARY KEY)", "CREATE TABLE log(x)",
        "CREATE TRIGGER r AFTER UPDATE OF rowid ON t BEGIN INSERT INTO log VALUES (1); END",
        "INSERT INTO t VALUES ('a')", "UPDATE t SET _rowid_ = 5", "UPDATE t SET oid = 6")
    assert val(c, "SELECT count(*) FROM log") == 0
    run(c, "UPDATE t SET rowid = 7")
    assert val(c, "SELECT count(*) FROM log") == 1


# ----------------------------------------------------- NOCASE primary keys

NOCASE_SHAPES = {
    "rowid": "CREATE TABLE t(k TEXT COLLATE NOCASE PRIMARY KEY, v TEXT)",
    "without-rowid": "CREATE TABLE t(k TEXT COLLATE NOCASE PRIMARY KEY, v TEXT) WITHOUT ROWID",
    "composite": "CREATE TABLE t(k TEXT COLLATE NOCASE, n INTEGER, v TEXT, PRIMARY KEY(k, n))",
}


@pytest.mark.parametrize("shape", sorted(NOCASE_SHAPES))
@pytest.mark.parametrize("statement", [
    "UPDATE t SET k = 'ABC' WHERE k = 'abc'",
    "INSERT OR REPLACE INTO t(k, {n}v) VALUES ('ABC', {one}'z')",
    "REPLACE INTO t(k, {n}v) VALUES ('Abc', {one}'z')",
])
def test_case_only_key_change_of_a_nocase_key(conn, recursive, shape, statement):
    composite = shape == "composite"
    keys = ["k", "n"] if composite else ["k"]
    row = {"k": "abc", "n": 1, "v": "x"} if composite else {"k": "abc", "v": "x"}
    t = Tracked(conn, NOCASE_SHAPES[shape], "t", keys, [row])
    run(conn, statement.format(n="n, " if composite else "", one="1, " if composite else ""))
    cs = t.changes()
    assert [r["k"] for r in cs.deletes] == ["abc"]
    assert len(cs.inserts) == 1 and cs.inserts[0]["k"] != "abc"


# ----------------------------------------------- NULL in a composite key

def test_null_in_a_composite_key_is_refused_at_create_schema(conn):
    run(conn, "CREATE TABLE t(a TEXT, b INTEGER, v TEXT, PRIMARY KEY(a, b))",
        "INSERT INTO t(a, b, v) VALUES ('x', NULL, 'v')")
    with pytest.raises(sqlite_ct.TableError) as err:
        sqlite_ct.create_schema(conn, "t")
    assert str(err.value) == (
        'sqlite-ct: table "t" has rows with NULL in its PRIMARY KEY column "b"; SQLite'
        " allows NULL there in rowid tables, but a replica cannot match such rows by"
        " key: fill in the key or delete those rows, and declare the key columns NOT"
        " NULL")
    assert not sqlite_ct.is_tracked(conn, "t")


@pytest.mark.parametrize("statement", [
    "INSERT INTO t(a, b, v) VALUES ('x', NULL, 'v')",
    "UPDATE t SET b = NULL WHERE a = 'y'",
    "INSERT OR REPLACE INTO t(a, b, v) VALUES (NULL, 2, 'v')",
])
def test_null_written_into_a_composite_key_is_refused(conn, statement):
    Tracked(conn, "CREATE TABLE t(a TEXT, b INTEGER, v TEXT, PRIMARY KEY(a, b))", "t",
            ["a", "b"], [{"a": "y", "b": 1, "v": "w"}])
    with pytest.raises(HOST_ERRORS) as err:
        run(conn, statement)
    assert ('sqlite-ct: NULL in the PRIMARY KEY of tracked table "t"; a replica cannot'
            ' match such a row by key: give every key column a value') in str(err.value)
    assert q(conn, "SELECT a, b, v FROM t") == [("y", 1, "w")]


# ----------------------------------------- foreign __sys stamps are not adopted

def test_create_schema_does_not_adopt_copied_stamps(conn):
    t = Tracked(conn, "CREATE TABLE src(id INTEGER PRIMARY KEY, v TEXT)", "src", ["id"],
                [{"id": 1, "v": "a"}])
    run(conn, "INSERT INTO src(id, v) VALUES (2, 'b')")
    t.changes()
    high = sqlite_ct.last_committed_csn(conn)
    run(conn, "CREATE TABLE dst(id INTEGER PRIMARY KEY, v TEXT, __sysChangeTxBsn INTEGER,"
              " __sysInsertTxBsn INTEGER, __sysTrackingContext BLOB)",
        "INSERT INTO dst SELECT * FROM src")
    assert val(conn, "SELECT max(__sysChangeTxBsn) FROM dst") == high
    since = sqlite_ct.last_committed_csn(conn)
    sqlite_ct.create_schema(conn, "dst")
    # a replica that started from an anchor before tracking: gets every row
    cs = sqlite_ct.enumerate_changes(conn, "dst", since)
    assert sorted(r["id"] for r in cs.inserts) == [1, 2]
    assert val(conn, "SELECT count(*) FROM dst WHERE __sysChangeTxBsn IS NOT NULL") == 0


# -------------------------------------------------- the commit log by hand

LOG_GUARD = ("sqlite-ct: the newest row of __sysTxCommitSequence numbers the next"
             " transaction; it cannot be deleted or changed (purge_transaction_sequence()"
             " keeps it)")


@pytest.mark.parametrize("statement", [
    "DELETE FROM __sysTxCommitSequence",
    "DELETE FROM __sysTxCommitSequence WHERE __sysTxCsn = (SELECT max(__sysTxCsn)"
    " FROM __sysTxCommitSequence)",
    "UPDATE __sysTxCommitSequence SET __sysTxCsn = 0",
    "UPDATE __sysTxCommitSequence SET __sysCommitTime = 0",
])
def test_commit_log_cannot_lose_its_newest_row(conn, statement):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    newest = sqlite_ct.last_committed_csn(conn)
    with pytest.raises(HOST_ERRORS) as err:
        run(conn, statement)
    assert LOG_GUARD in str(err.value)
    assert sqlite_ct.last_committed_csn(conn) == newest
    run(conn, "UPDATE t SET v = 'c' WHERE id = 1")
    assert t.changes().updates == [{"id": 1, "v": "c"}]


def test_purging_the_commit_log_still_works(conn):
    Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
            [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    newest = sqlite_ct.last_committed_csn(conn)
    assert sqlite_ct.purge_transaction_sequence(conn, up_to_csn=newest) >= 1
    assert q(conn, "SELECT __sysTxCsn FROM __sysTxCommitSequence") == [(newest,)]


# ---------------------------------------------- disable, then enable again

def test_anchors_from_before_a_disable_expire(conn):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    old = t.anchor
    sqlite_ct.disable_tracking(conn, "t")
    run(conn, "DELETE FROM t WHERE id = 1")
    sqlite_ct.create_schema(conn, "t")
    with pytest.raises(sqlite_ct.AnchorExpiredError):
        sqlite_ct.enumerate_changes(conn, "t", old)
    fresh = Replica(["id"])
    fresh.apply(sqlite_ct.enumerate_changes(conn, "t", 0))
    assert fresh.rows == table_rows(conn, "t", ["id"])


# ------------------------------------------- anchor 0 after a purge

def test_a_new_replica_can_start_from_anchor_0_after_a_purge(conn):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}])
    run(conn, "DELETE FROM t WHERE id = 1")
    old = t.anchor
    assert sqlite_ct.purge_tombstones(conn, "t", up_to_csn=sqlite_ct.last_committed_csn(conn))
    with pytest.raises(sqlite_ct.AnchorExpiredError):
        sqlite_ct.enumerate_changes(conn, "t", old)
    fresh = Replica(["id"])
    fresh.apply(sqlite_ct.enumerate_changes(conn, "t", 0))
    assert fresh.rows == table_rows(conn, "t", ["id"])


def test_anchor_0_expires_when_deletes_of_applied_rows_are_purged(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "INSERT INTO t(id, v) VALUES (1, 'from the server')")
    run(conn, "DELETE FROM t WHERE id = 1")
    # a client uploads that delete from anchor 0
    assert sqlite_ct.enumerate_changes(conn, "t", 0).deletes == [{"id": 1}]
    sqlite_ct.purge_tombstones(conn, "t", up_to_csn=sqlite_ct.last_committed_csn(conn))
    with pytest.raises(sqlite_ct.AnchorExpiredError):
        sqlite_ct.enumerate_changes(conn, "t", 0)


# ----------------------------------------------- TEXT that is not UTF-8

def test_text_that_is_not_utf8_is_a_clear_error(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'fine'), (2, CAST(x'61ff62' AS TEXT))")
    message = ('sqlite-ct: table "t" holds TEXT that is not valid UTF-8 (column "v" of the'
               " row whose key is 2), which Python cannot decode; store such"
               " values as BLOB (CAST(x AS BLOB)) or re-encode them as UTF-8")
    with pytest.raises(sqlite_ct.Error) as err:
        sqlite_ct.enumerate_changes(conn, "t", since)
    assert str(err.value) == message
    with pytest.raises(sqlite_ct.Error) as err:
        with sqlite_ct.iter_changes(conn, "t", since) as stream:
            list(stream)
    assert str(err.value) == message
    run(conn, "UPDATE t SET v = CAST(v AS BLOB) WHERE id = 2")
    assert len(sqlite_ct.enumerate_changes(conn, "t", since).inserts) == 2


# -------------------------------------------- the caller's busy timeout

@pytest.mark.parametrize("how", ["BEGIN IMMEDIATE", "SAVEPOINT"])
def test_a_call_whose_commit_fails_leaves_no_transaction_open(db_path, how):
    """In rollback-journal mode COMMIT needs every reader gone; when it
    fails (SQLITE_BUSY) the call raises and its work is rolled back, not left
    in an open transaction that the caller's next COMMIT would commit."""
    a = apsw.Connection(db_path)
    sqlite_ct.load(a)
    run(a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    reader = apsw.Connection(db_path)
    reader.execute("BEGIN")
    q(reader, "SELECT * FROM t")
    if how == "SAVEPOINT":  # the outermost savepoint commits on RELEASE
        with pytest.raises(apsw.BusyError):
            with sqlite_ct._conn.savepoint(a):
                sqlite_ct._conn.execute(a, "INSERT INTO t(id, v) VALUES (1, 'x')")
    else:
        with pytest.raises(apsw.BusyError):
            sqlite_ct.create_schema(a, "t")
    assert a.get_autocommit()
    reader.execute("COMMIT")
    reader.close()
    assert not sqlite_ct.is_tracked(a, "t") and q(a, "SELECT * FROM t") == []
    a.close()


@pytest.mark.parametrize("call", ["create_schema", "disable_tracking", "purge_tombstones",
                                  "purge_transaction_sequence", "client_id",
                                  "set_sent_anchor", "set_received_anchor"])
def test_writes_wait_for_the_busy_timeout(db_path, call):
    """While another connection writes, these wait (busy timeout) instead of
    failing at once: a read-then-write transaction never calls the busy
    handler, so they begin with BEGIN IMMEDIATE."""
    import threading
    import time
    a = apsw.Connection(db_path)
    sqlite_ct.load(a)
    a.execute("PRAGMA journal_mode=WAL")
    run(a, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "CREATE TABLE other(x)")
    sqlite_ct.create_schema(a, "t")
    run(a, "INSERT INTO t(id, v) VALUES (1, 'a')", "DELETE FROM t WHERE id = 1")
    b = apsw.Connection(db_path)
    b.execute("BEGIN IMMEDIATE")
    b.execute("INSERT INTO other VALUES (1)")
    a.set_busy_timeout(10_000)
    released = threading.Timer(0.3, lambda: b.execute("COMMIT"))
    released.start()
    start = time.monotonic()
    try:
        {"create_schema": lambda: sqlite_ct.create_schema(a, "t"),
         "disable_tracking": lambda: sqlite_ct.disable_tracking(a, "t"),
         "purge_tombstones": lambda: sqlite_ct.purge_tombstones(a, "t", up_to_csn=10**6),
         "purge_transaction_sequence":
             lambda: sqlite_ct.purge_transaction_sequence(a, up_to_csn=1),
         "client_id": lambda: sqlite_ct.client_id(a),
         "set_sent_anchor": lambda: sqlite_ct.set_sent_anchor(a, "t", 1),
         "set_received_anchor": lambda: sqlite_ct.set_received_anchor(a, "t", b"1"),
         }[call]()
    finally:
        released.join()
        b.close()
        a.close()
    assert time.monotonic() - start >= 0.2


# ----------------------------------------------------------- reads do not write

def test_reads_work_on_a_read_only_connection_and_write_nothing(db_path):
    import hashlib
    import subprocess
    import sys
    rw = apsw.Connection(db_path)
    sqlite_ct.load(rw)
    run(rw, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(rw, "t")
    run(rw, "INSERT INTO t(id, v) VALUES (1, 'a')",
        # a user trigger newer than sqlite-ct's: a write would re-create ours
        "CREATE TRIGGER mine AFTER INSERT ON t BEGIN SELECT 1; END")
    rw.close()
    digest = hashlib.sha256(open(db_path, "rb").read()).hexdigest()
    ro = apsw.Connection(f"file:{db_path}?mode=ro",
                         flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    sqlite_ct.load(ro)
    assert sqlite_ct.enumerate_changes(ro, "t", 0).inserts == [{"id": 1, "v": "a"}]
    with sqlite_ct.iter_changes(ro, "t", 0) as stream:
        assert len(list(stream)) == 1
    assert sqlite_ct.tracked_tables(ro) == ["t"]
    assert sqlite_ct.get_sent_anchor(ro, "t") is None
    assert [p.code for p in sqlite_ct.check(ro)] == ["trigger-order"]
    ro.close()
    subprocess.run([sys.executable, "-m", "sqlite_ct", "status", db_path], check=True,
                   capture_output=True)
    assert hashlib.sha256(open(db_path, "rb").read()).hexdigest() == digest


# ------------------- enumerating inside one's own write transaction

REFUSED_IN_WRITE = ("sqlite-ct: cannot enumerate changes inside a transaction that has "
                    "written to tracked tables; commit or roll it back first")


@pytest.mark.parametrize("how", ["native", "apply-mode", "portable"])
def test_enumeration_refused_after_own_tracked_writes(conn, how):
    """The open transaction's writes hide committed changes of the rows they
    touch (apply mode stamps 0, portable stamps numbers the log will only
    have if it commits); after a ROLLBACK the replica's anchor would be past
    a committed change."""
    mode = "portable" if how == "portable" else "native"
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}], mode=mode)
    run(conn, "UPDATE t SET v = 'committed' WHERE id = 1")
    run(conn, "BEGIN")
    if how == "apply-mode":
        with sqlite_ct.applying_server_changes(conn):
            run(conn, "UPDATE t SET v = 'from the server' WHERE id = 1")
    else:
        run(conn, "UPDATE t SET v = 'uncommitted' WHERE id = 1")
    with pytest.raises(sqlite_ct.Error) as err:
        sqlite_ct.enumerate_changes(conn, "t", t.anchor)
    assert str(err.value) == REFUSED_IN_WRITE
    run(conn, "ROLLBACK")
    assert t.changes().updates == [{"id": 1, "v": "committed"}]


def test_enumeration_inside_a_read_transaction_is_allowed(conn):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}], mode="portable")
    run(conn, "CREATE TABLE other(x)", "BEGIN", "SELECT count(*) FROM t")
    assert sqlite_ct.enumerate_changes(conn, "t", t.anchor).updates == []
    run(conn, "COMMIT")


# ---------------------------------- a TEMP table named like a tracked one

@pytest.mark.parametrize("temp_ddl", [
    "CREATE TEMP TABLE t(x)",
    "CREATE TEMP TABLE t(id INTEGER PRIMARY KEY, v TEXT, __sysChangeTxBsn INTEGER,"
    " __sysInsertTxBsn INTEGER, __sysTrackingContext BLOB)",
])
def test_a_temp_table_named_like_a_tracked_table_is_not_read(conn, temp_ddl):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}])
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b')", "DELETE FROM t WHERE id = 1", temp_ddl)
    if "__sys" in temp_ddl:
        run(conn, "INSERT INTO temp.t VALUES (7, 'temp', 999, 999, NULL)")
    cs = sqlite_ct.enumerate_changes(conn, "t", t.anchor)
    assert (cs.inserts, cs.deletes) == ([{"id": 2, "v": "b"}], [{"id": 1}])
    assert sqlite_ct.unpack_key(conn, "t", sqlite_ct.pack_key(conn, "t", [2])) == (2,)
    assert [p.code for p in sqlite_ct.check(conn)] == []


# --------------------------------------------- check() on healthy databases

def test_check_accepts_a_key_deleted_locally_then_applied_from_the_server(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')", "DELETE FROM t WHERE id = 1")
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "INSERT INTO t(id, v) VALUES (1, 'from the server')")
    assert sqlite_ct.check(conn) == []


def test_check_accepts_a_reinserted_key_when_inserts_are_not_tracked(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t", options=sqlite_ct.TrackingOptions.DELETE
                            | sqlite_ct.TrackingOptions.UPDATE)
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')", "DELETE FROM t WHERE id = 1",
        "INSERT INTO t(id, v) VALUES (1, 'again')")
    assert sqlite_ct.check(conn) == []


def test_check_still_reports_a_tombstone_for_a_live_row(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    rk = sqlite_ct.pack_key(conn, "t", [1])
    run(conn, "INSERT INTO __sysOCSDeletedRows VALUES ('t', x'%s', 99, 1, 0, NULL)" % rk.hex())
    assert [p.code for p in sqlite_ct.check(conn)] == ["tombstone-for-live-row"]


# Writes with triggers turned off (with or without the extension): test_guard.py.


@pytest.mark.parametrize("between", ["nothing", "tracked_tables"])
def test_anchors_from_before_a_drop_and_recreate_expire(conn, between):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    run(conn, "DROP TABLE t")
    if between == "tracked_tables":
        assert sqlite_ct.tracked_tables(conn) == []       # follows the DROP
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t(id, v) VALUES (2, 'b')")
    sqlite_ct.create_schema(conn, "t")
    with pytest.raises(sqlite_ct.AnchorExpiredError):
        sqlite_ct.enumerate_changes(conn, "t", t.anchor)
    if between == "nothing":
        # create_schema() re-arms the registered table: writes went untracked
        # (the drop), so even anchor 0 is expired
        with pytest.raises(sqlite_ct.AnchorExpiredError):
            sqlite_ct.enumerate_changes(conn, "t", 0)
    else:
        # the drop was followed: tracking of "t" starts afresh
        assert [r["id"] for r in sqlite_ct.enumerate_changes(conn, "t", 0).inserts] == [2]


def test_enumerate_all_reinitialises_a_replica_whatever_expired(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "INSERT INTO t(id, v) VALUES (1, 'from the server'), (2, 'too')")
    run(conn, "INSERT INTO t(id, v) VALUES (3, 'local')", "DELETE FROM t WHERE id = 2")
    sqlite_ct.purge_tombstones(conn, "t", up_to_csn=sqlite_ct.last_committed_csn(conn))
    with pytest.raises(sqlite_ct.AnchorExpiredError):
        sqlite_ct.enumerate_changes(conn, "t", 0)
    everything = sqlite_ct.enumerate_all(conn, "t")
    assert (everything.since, everything.deletes) == (0, [])
    assert everything.new_anchor == sqlite_ct.last_committed_csn(conn)
    replica = Replica(["id"])
    replica.apply(everything)
    assert replica.rows == table_rows(conn, "t", ["id"])
    run(conn, "UPDATE t SET v = 'later' WHERE id = 1")
    replica.apply(sqlite_ct.enumerate_changes(conn, "t", everything.new_anchor))
    assert replica.rows == table_rows(conn, "t", ["id"])


def test_a_rename_seen_by_a_read_only_connection_is_a_clear_error(db_path):
    rw = apsw.Connection(db_path)
    sqlite_ct.load(rw)
    run(rw, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(rw, "t")
    run(rw, "ALTER TABLE t RENAME TO u")
    ro = apsw.Connection(f"file:{db_path}?mode=ro",
                         flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    sqlite_ct.load(ro)
    with pytest.raises(sqlite_ct.Error) as err:
        sqlite_ct.enumerate_changes(ro, "u", 0)
    assert str(err.value) == (
        'sqlite-ct: table "t" was renamed to "u" and sqlite-ct must update its tracking'
        " metadata, which this read-only connection cannot write; run any sqlite-ct call"
        " (tracked_tables(), say) once on a connection that can write")
    assert sqlite_ct.tracked_tables(rw) == ["u"]
    assert sqlite_ct.enumerate_changes(ro, "u", 0).inserts == []
    ro.close()
    rw.close()
