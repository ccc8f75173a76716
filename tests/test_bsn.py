"""BSN (= CSN) handling: one number per write transaction, in commit order,
logged once per committed transaction, never left behind by a rollback
(DESIGN §4 invariants 2, 3 and 4)."""

import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import HOST_ERRORS, in_transaction, q, run, val

def log(conn):
    """[(csn, bsn)] of __sysTxCommitSequence in CSN order."""
    return q(conn, "SELECT __sysTxCsn, __sysTxBsn FROM __sysTxCommitSequence ORDER BY __sysTxCsn")


def stamps(conn, table, key="id"):
    """{key: (change BSN, insert BSN)}"""
    return {r[0]: (r[1], r[2]) for r in q(
        conn, f'SELECT {key}, __sysChangeTxBsn, __sysInsertTxBsn FROM "{table}"')}


def tombstone_bsns(conn, table):
    return [r[0] for r in q(conn, "SELECT __sysDeleteTxBsn FROM __sysOCSDeletedRows "
                                  "WHERE __sysTName=? ORDER BY __sysDeleteTxBsn", (table,))]


def assert_consistent(conn, tables):
    """Outside a transaction: every BSN a committed row or tombstone carries was
    logged by a committed transaction and is at most last_committed_csn; the
    log's BSN equals its CSN; the newest log row is the last committed CSN."""
    assert not in_transaction(conn)
    entries = log(conn)
    assert all(csn == bsn for csn, bsn in entries), entries
    logged = {csn for csn, _ in entries}
    last = sqlite_ct.last_committed_csn(conn)
    assert last == max(logged, default=0)
    for table in tables:
        for change, insert in stamps(conn, table).values():
            for bsn in (change, insert):
                if bsn:  # NULL: predates tracking; 0: applied from the server
                    assert bsn in logged and bsn <= last, (table, bsn, entries)
        for bsn in tombstone_bsns(conn, table):
            assert bsn in logged and bsn <= last, (table, bsn, entries)


def make_tables(conn, *names, rows=()):
    for name in names:
        run(conn, f"CREATE TABLE {name}(id INTEGER PRIMARY KEY, v TEXT)")
        for row in rows:
            run(conn, f"INSERT INTO {name} VALUES {row}")
        sqlite_ct.create_schema(conn, name)


# ----------------------------------------------------------- one per txn

def test_autocommit_multirow_insert_shares_one_bsn(conn):
    make_tables(conn, "t")
    before = log(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert log(conn) == before + [(bsn, bsn)]
    assert stamps(conn, "t") == {1: (bsn, bsn), 2: (bsn, bsn), 3: (bsn, bsn)}


def test_autocommit_multirow_update_shares_one_bsn(conn):
    make_tables(conn, "t", rows=["(1, 'a')", "(2, 'b')", "(3, 'c')"])
    before = log(conn)
    run(conn, "UPDATE t SET v = upper(v) WHERE id <= 2")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert log(conn) == before + [(bsn, bsn)]
    assert stamps(conn, "t") == {1: (bsn, None), 2: (bsn, None), 3: (None, None)}


def test_autocommit_multirow_delete_shares_one_bsn(conn):
    make_tables(conn, "t", rows=["(1, 'a')", "(2, 'b')", "(3, 'c')"])
    before = log(conn)
    run(conn, "DELETE FROM t WHERE id >= 2")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert log(conn) == before + [(bsn, bsn)]
    assert tombstone_bsns(conn, "t") == [bsn, bsn]


def test_explicit_transaction_over_several_tables_shares_one_bsn(conn):
    make_tables(conn, "t1", "t2", "t3", rows=["(1, 'a')", "(2, 'b')"])
    before = log(conn)
    run(conn, "BEGIN",
        "INSERT INTO t1(id, v) VALUES (10, 'x')",
        "UPDATE t2 SET v = 'B' WHERE id = 2",
        "DELETE FROM t3 WHERE id = 1",
        "INSERT INTO t1(id, v) VALUES (11, 'y')",
        "UPDATE t1 SET v = 'z' WHERE id = 10",
        "COMMIT")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert log(conn) == before + [(bsn, bsn)]
    assert stamps(conn, "t1") == {1: (None, None), 2: (None, None),
                                  10: (bsn, bsn), 11: (bsn, bsn)}
    assert stamps(conn, "t2") == {1: (None, None), 2: (bsn, None)}
    assert tombstone_bsns(conn, "t3") == [bsn]
    assert_consistent(conn, ["t1", "t2", "t3"])


def test_bsns_strictly_increase_in_commit_order(conn):
    make_tables(conn, "t")
    bsns = [val(conn, "SELECT __sysEnableTxBsn FROM __sysOCSTrackedObjects")]
    for i in range(6):
        if i % 2:
            run(conn, "BEGIN", f"INSERT INTO t(id, v) VALUES ({i}, 'a')",
                f"INSERT INTO t(id, v) VALUES ({100 + i}, 'b')", "COMMIT")
        else:
            run(conn, f"INSERT INTO t(id, v) VALUES ({i}, 'a')")
        assert stamps(conn, "t")[i][0] == sqlite_ct.last_committed_csn(conn)
        bsns.append(stamps(conn, "t")[i][0])
    assert all(a < b for a, b in zip(bsns, bsns[1:])), bsns
    assert [csn for csn, _ in log(conn)] == bsns
    assert_consistent(conn, ["t"])


def test_update_in_the_next_transaction_of_rows_the_previous_one_stamped(conn):
    """The AFTER UPDATE trigger skips rows already stamped "by this
    transaction"; a row stamped by the connection's previous transaction is
    not, and its update must get the new BSN and be enumerated."""
    make_tables(conn, "t")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b')")
    anchor = sqlite_ct.last_committed_csn(conn)
    run(conn, "UPDATE t SET v = 'A' WHERE id = 1")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert bsn > anchor
    assert stamps(conn, "t")[1] == (bsn, anchor)
    changes = sqlite_ct.enumerate_changes(conn, "t", anchor)
    assert (changes.inserts, changes.updates, changes.deletes) == (
        [], [{"id": 1, "v": "A"}], [])


# ---------------------------------------------------------- the commit log

def test_commit_log_gets_one_row_per_committed_tracked_transaction(conn):
    make_tables(conn, "t")
    run(conn, "CREATE TABLE plain(id INTEGER PRIMARY KEY, v TEXT)")
    start = log(conn)

    run(conn, "BEGIN", "SELECT * FROM t", "COMMIT")                       # read-only
    run(conn, "INSERT INTO plain VALUES (1, 'x')")                       # untracked
    run(conn, "BEGIN", "INSERT INTO t(id, v) VALUES (1, 'a')", "ROLLBACK")  # rolled back
    run(conn, "BEGIN", "UPDATE t SET v = 'q' WHERE id = 999", "COMMIT")  # touches no row
    assert log(conn) == start

    run(conn, "BEGIN", "INSERT INTO t(id, v) VALUES (2, 'b')",
        "INSERT INTO t(id, v) VALUES (3, 'c')", "COMMIT")
    assert len(log(conn)) == len(start) + 1
    run(conn, "DELETE FROM t WHERE id = 2")
    assert len(log(conn)) == len(start) + 2
    assert_consistent(conn, ["t"])


# ------------------------------------------------------------- rollbacks

def test_rollback_leaves_no_bsn_behind(conn):
    make_tables(conn, "t")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    first = sqlite_ct.last_committed_csn(conn)
    run(conn, "BEGIN", "INSERT INTO t(id, v) VALUES (2, 'b')", "DELETE FROM t WHERE id = 1")
    assert sqlite_ct.current_bsn(conn) == first + 1
    run(conn, "ROLLBACK")
    assert sqlite_ct.last_committed_csn(conn) == first
    assert_consistent(conn, ["t"])

    run(conn, "INSERT INTO t(id, v) VALUES (3, 'c')")
    second = stamps(conn, "t")[3][0]
    assert second > first
    assert stamps(conn, "t") == {1: (first, first), 3: (second, second)}
    assert tombstone_bsns(conn, "t") == []
    run(conn, "INSERT INTO t(id, v) VALUES (4, 'd')")
    assert stamps(conn, "t")[4][0] > second
    assert_consistent(conn, ["t"])


SAVEPOINT_SCRIPTS = {
    # the transaction's first tracked write is inside the rolled-back savepoint
    "first-write-rolled-back": [
        "BEGIN", "SAVEPOINT s", "INSERT INTO t(id, v) VALUES (10, 'gone')",
        "DELETE FROM t WHERE id = 1", "ROLLBACK TO s",
        "INSERT INTO t(id, v) VALUES (11, 'kept')", "UPDATE u SET v = 'U' WHERE id = 1",
        "RELEASE s", "INSERT INTO t(id, v) VALUES (12, 'kept')", "COMMIT"],
    # an earlier write survives; the savepoint's writes do not
    "earlier-write-survives": [
        "BEGIN", "INSERT INTO t(id, v) VALUES (10, 'kept')", "SAVEPOINT s",
        "INSERT INTO t(id, v) VALUES (11, 'gone')", "DELETE FROM t WHERE id = 1",
        "ROLLBACK TO s", "INSERT INTO t(id, v) VALUES (12, 'kept')",
        "UPDATE u SET v = 'U' WHERE id = 1", "COMMIT"],
    # no BEGIN: the outer savepoint is the transaction (what ORMs do)
    "nested-savepoints-no-begin": [
        "SAVEPOINT outer_sp", "SAVEPOINT inner_sp", "INSERT INTO t(id, v) VALUES (10, 'gone')",
        "ROLLBACK TO inner_sp", "RELEASE inner_sp", "SAVEPOINT inner2",
        "INSERT INTO t(id, v) VALUES (11, 'kept')", "RELEASE inner2",
        "UPDATE u SET v = 'U' WHERE id = 1", "RELEASE outer_sp"],
    # rolled back twice, written three times
    "repeated-rollback-to": [
        "BEGIN", "SAVEPOINT s", "INSERT INTO t(id, v) VALUES (10, 'gone')", "ROLLBACK TO s",
        "INSERT INTO t(id, v) VALUES (11, 'gone')", "ROLLBACK TO s",
        "INSERT INTO t(id, v) VALUES (12, 'kept')", "UPDATE u SET v = 'U' WHERE id = 1",
        "RELEASE s", "COMMIT"],
}


@pytest.mark.parametrize("script", list(SAVEPOINT_SCRIPTS))
def test_rollback_to_savepoint(conn, script):
    make_tables(conn, "t", "u", rows=["(1, 'a')"])
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b')")
    previous = sqlite_ct.last_committed_csn(conn)
    anchor = previous
    replica = Replica(["id"], table_rows(conn, "t", ["id"]))

    run(conn, *SAVEPOINT_SCRIPTS[script])
    bsn = sqlite_ct.last_committed_csn(conn)
    assert bsn > previous
    rows = stamps(conn, "t")
    assert all(v != "gone" for (v,) in q(conn, "SELECT v FROM t"))
    kept = [k for k in rows if k >= 10]
    assert kept and all(rows[k] == (bsn, bsn) for k in kept)
    assert rows[1] == (None, None)
    assert stamps(conn, "u")[1] == (bsn, None)
    assert tombstone_bsns(conn, "t") == []
    assert len(log(conn)) == len([c for c, _ in log(conn) if c <= previous]) + 1
    assert_consistent(conn, ["t", "u"])

    replica.apply(sqlite_ct.enumerate_changes(conn, "t", anchor))
    assert replica.rows == table_rows(conn, "t", ["id"])
    run(conn, "INSERT INTO t(id, v) VALUES (50, 'next')")
    assert stamps(conn, "t")[50][0] > bsn
    assert_consistent(conn, ["t", "u"])


@pytest.mark.parametrize("conflict", ["primary-key", "unique-column"])
@pytest.mark.parametrize("earlier_write", [False, True], ids=["first-write", "after-a-write"])
def test_failed_statement_inside_an_explicit_transaction(conn, conflict, earlier_write):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE)",
        "INSERT INTO t VALUES (1, 'dup')")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, u) VALUES (2, 'two')")
    previous = sqlite_ct.last_committed_csn(conn)
    replica = Replica(["id"], table_rows(conn, "t", ["id"]))
    bad = "(1, 'new')" if conflict == "primary-key" else "(12, 'dup')"

    run(conn, "BEGIN")
    if earlier_write:
        run(conn, "INSERT INTO t(id, u) VALUES (9, 'nine')")
    with pytest.raises(HOST_ERRORS) as exc:
        # rows 10 and 11 are written (and stamped) before the third fails
        run(conn, f"INSERT INTO t(id, u) VALUES (10, 'ten'), (11, 'eleven'), {bad}")
    assert "UNIQUE constraint failed" in str(exc.value)
    assert in_transaction(conn)
    run(conn, "INSERT INTO t(id, u) VALUES (13, 'thirteen')", "COMMIT")

    bsn = sqlite_ct.last_committed_csn(conn)
    assert bsn > previous
    rows = stamps(conn, "t")
    assert sorted(rows) == ([1, 2, 9, 13] if earlier_write else [1, 2, 13])
    assert rows[13] == (bsn, bsn)
    if earlier_write:
        assert rows[9] == (bsn, bsn)
    assert log(conn)[-1] == (bsn, bsn) and log(conn)[-2][0] == previous
    assert_consistent(conn, ["t"])
    replica.apply(sqlite_ct.enumerate_changes(conn, "t", previous))
    assert replica.rows == table_rows(conn, "t", ["id"])


RAISE_ACTIONS = {
    "ABORT": "RAISE(ABORT, 'guard says no')",
    "FAIL": "RAISE(FAIL, 'guard says no')",
    "ROLLBACK": "RAISE(ROLLBACK, 'guard says no')",
    "IGNORE": "RAISE(IGNORE)",
}
# rows of "INSERT ... (10, 'ok'), (11, 'bad'), (12, 'ok')" left by a BEFORE trigger
BEFORE_TRIGGER_SURVIVORS = {"ABORT": [], "FAIL": [10], "ROLLBACK": [], "IGNORE": [10, 12]}


@pytest.mark.parametrize("action", list(RAISE_ACTIONS))
@pytest.mark.parametrize("timing", ["BEFORE", "AFTER"])
@pytest.mark.parametrize("mode", ["autocommit", "explicit"])
def test_raise_in_a_user_trigger(conn, action, timing, mode):
    make_tables(conn, "t")
    run(conn, f"CREATE TRIGGER guard {timing} INSERT ON t WHEN NEW.v = 'bad' "
              f"BEGIN SELECT {RAISE_ACTIONS[action]}; END")
    # SQLite fires the newest trigger first, so "guard" now runs before
    # sqlite-ct's triggers and its RAISE could abandon them: check() says so,
    # and create_schema() (the documented step after adding a trigger to a
    # tracked table; every enumeration does it too) puts ours first again.
    assert [p.code for p in sqlite_ct.check(conn)] == ["trigger-order"]
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.check(conn) == []
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'setup')")
    previous = sqlite_ct.last_committed_csn(conn)
    replica = Replica(["id"], table_rows(conn, "t", ["id"]))

    if mode == "explicit":
        run(conn, "BEGIN", "INSERT INTO t(id, v) VALUES (5, 'before')")
    statement = "INSERT INTO t(id, v) VALUES (10, 'ok'), (11, 'bad'), (12, 'ok')"
    if action == "IGNORE":
        run(conn, statement)
    else:
        with pytest.raises(HOST_ERRORS) as exc:
            run(conn, statement)
        assert str(exc.value) == "guard says no"
    if in_transaction(conn):
        run(conn, "INSERT INTO t(id, v) VALUES (20, 'after')", "COMMIT")
    else:
        run(conn, "INSERT INTO t(id, v) VALUES (20, 'after')")
    assert_consistent(conn, ["t"])

    ids = sorted(stamps(conn, "t"))
    if timing == "BEFORE":
        kept_5 = mode == "explicit" and action != "ROLLBACK"
        assert ids == sorted([1, 20] + ([5] if kept_5 else []) + BEFORE_TRIGGER_SURVIVORS[action])
    # every row written after the setup has a BSN newer than the setup's (a
    # NULL stamp would mean "predates tracking": never enumerated again)
    unstamped = {k: s for k, s in stamps(conn, "t").items()
                 if k != 1 and (s[0] is None or s[0] <= previous)}
    assert unstamped == {}
    written = {k: change for k, (change, _) in stamps(conn, "t").items() if k != 1}
    if mode == "explicit" and action != "ROLLBACK":
        assert len(set(written.values())) == 1, written  # one transaction, one BSN
    else:  # the statement's survivors committed on their own, before row 20
        assert all(bsn < written[20] for k, bsn in written.items() if k != 20), written
    replica.apply(sqlite_ct.enumerate_changes(conn, "t", previous))
    assert replica.rows == table_rows(conn, "t", ["id"])

    run(conn, "INSERT INTO t(id, v) VALUES (30, 'later')")
    assert stamps(conn, "t")[30][0] > stamps(conn, "t")[20][0]
    assert_consistent(conn, ["t"])


def test_metadata_writes_put_sqlite_ct_triggers_first_again_and_reads_do_not(conn):
    make_tables(conn, "t")
    run(conn, "CREATE TRIGGER guard AFTER INSERT ON t WHEN NEW.v = 'bad' "
              "BEGIN SELECT RAISE(IGNORE); END")
    version = val(conn, "PRAGMA schema_version")
    since = sqlite_ct.enumerate_changes(conn, "t", 0).new_anchor   # reads: no repair
    sqlite_ct.get_sent_anchor(conn, "t")
    sqlite_ct.tracked_tables(conn)
    assert val(conn, "PRAGMA schema_version") == version
    assert [p.code for p in sqlite_ct.check(conn)] == ["trigger-order"]
    sqlite_ct.set_sent_anchor(conn, "t", since)                      # repairs the order
    assert sqlite_ct.check(conn) == []
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'bad')")
    assert sqlite_ct.enumerate_changes(conn, "t", since).inserts == [{"id": 1, "v": "bad"}]


# ------------------------------------------------------------ current_bsn

def test_current_bsn(conn):
    make_tables(conn, "t", "u")
    assert sqlite_ct.current_bsn(conn) is None
    assert val(conn, "SELECT sqlite_ct_current_bsn()") is None
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    assert sqlite_ct.current_bsn(conn) is None  # autocommit: committed already

    run(conn, "BEGIN", "SELECT * FROM t")
    assert sqlite_ct.current_bsn(conn) is None  # no tracked write yet
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b')")
    bsn = sqlite_ct.current_bsn(conn)
    assert bsn == stamps(conn, "t")[2][0] == sqlite_ct.last_committed_csn(conn) + 1
    run(conn, "INSERT INTO u(id, v) VALUES (1, 'x')")
    assert sqlite_ct.current_bsn(conn) == bsn == stamps(conn, "u")[1][0]
    assert val(conn, "SELECT sqlite_ct_current_bsn()") == bsn
    run(conn, "COMMIT")
    assert sqlite_ct.current_bsn(conn) is None

    run(conn, "BEGIN")
    assert sqlite_ct.current_bsn(conn) is None  # the previous transaction's BSN is not ours
    run(conn, "DELETE FROM t WHERE id = 1")
    assert sqlite_ct.current_bsn(conn) == bsn + 1
    run(conn, "ROLLBACK")
    assert sqlite_ct.current_bsn(conn) is None

    run(conn, "BEGIN", "SAVEPOINT s", "INSERT INTO t(id, v) VALUES (3, 'c')")
    assert sqlite_ct.current_bsn(conn) == bsn + 1
    run(conn, "ROLLBACK TO s")
    assert sqlite_ct.current_bsn(conn) is None  # its only write was undone
    run(conn, "COMMIT")


# ------------------------------------------------------- other connections

@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_second_connection_committing_between_our_transactions(apsw_conn, db_path,
                                                               journal_mode):
    a = apsw_conn
    run(a, f"PRAGMA journal_mode={journal_mode}")
    make_tables(a, "t")
    b = apsw.Connection(db_path)
    try:
        sqlite_ct.load(b)
        run(a, "INSERT INTO t(id, v) VALUES (1, 'a')")
        run(b, "INSERT INTO t(id, v) VALUES (2, 'b')")
        run(a, "BEGIN", "INSERT INTO t(id, v) VALUES (3, 'a')", "COMMIT")
        run(b, "BEGIN", "INSERT INTO t(id, v) VALUES (4, 'b')", "COMMIT")
        run(a, "INSERT INTO t(id, v) VALUES (5, 'a')")
        # a rolls back, b commits the number a had, a writes again
        run(a, "BEGIN", "INSERT INTO t(id, v) VALUES (6, 'gone')", "ROLLBACK")
        run(b, "INSERT INTO t(id, v) VALUES (7, 'b')")
        run(a, "INSERT INTO t(id, v) VALUES (8, 'a')")

        bsns = [stamps(a, "t")[i][0] for i in (1, 2, 3, 4, 5, 7, 8)]
        assert all(x < y for x, y in zip(bsns, bsns[1:])), bsns
        assert [c for c, _ in log(a)][-7:] == bsns
        assert sqlite_ct.last_committed_csn(a) == sqlite_ct.last_committed_csn(b) == bsns[-1]
        assert_consistent(a, ["t"])
        assert_consistent(b, ["t"])
        replica = Replica(["id"])
        replica.apply(sqlite_ct.enumerate_changes(b, "t", 0))
        assert replica.rows == table_rows(a, "t", ["id"])
    finally:
        b.close()


def test_update_of_another_connections_row_after_our_rollback(apsw_conn, db_path):
    """Our rolled-back transaction had BSN n; another connection then commits
    n; our next transaction updates that row: a change, enumerated."""
    a = apsw_conn
    make_tables(a, "t")
    b = apsw.Connection(db_path)
    try:
        sqlite_ct.load(b)
        run(a, "INSERT INTO t(id, v) VALUES (1, 'a')")
        run(a, "BEGIN", "INSERT INTO t(id, v) VALUES (2, 'gone')", "ROLLBACK")
        run(b, "INSERT INTO t(id, v) VALUES (3, 'b')")
        anchor = sqlite_ct.last_committed_csn(a)
        run(a, "UPDATE t SET v = 'B' WHERE id = 3")
        assert sqlite_ct.last_committed_csn(a) > anchor
        changes = sqlite_ct.enumerate_changes(b, "t", anchor)
        assert changes.updates == [{"id": 3, "v": "B"}]
    finally:
        b.close()


# ------------------------------------------------- enumeration and open txns

def test_enumeration_inside_an_open_write_transaction(conn):
    """Refused: the open transaction's uncommitted stamps hide the committed
    changes of the rows it touched (lost if it then rolls back; see
    tests/property/test_convergence.py::test_enumerate_inside_own_write_transaction)."""
    make_tables(conn, "t")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    committed = sqlite_ct.last_committed_csn(conn)

    run(conn, "BEGIN", "SELECT count(*) FROM t")
    # A transaction that has not written tracked data may enumerate.
    assert sqlite_ct.enumerate_changes(conn, "t", 0).inserts == [{"id": 1, "v": "a"}]
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b')")
    open_bsn = sqlite_ct.current_bsn(conn)
    assert open_bsn == committed + 1
    assert sqlite_ct.last_committed_csn(conn) == committed
    refused = ("sqlite-ct: cannot enumerate changes inside a transaction that has written "
               "to tracked tables; commit or roll it back first")
    for attempt in (lambda: sqlite_ct.enumerate_changes(conn, "t", 0),
                    lambda: sqlite_ct.enumerate_group_changes(conn, ["t"], 0),
                    lambda: sqlite_ct.iter_changes(conn, "t", 0).__enter__()):
        with pytest.raises(sqlite_ct.Error) as exc:
            attempt()
        assert str(exc.value) == refused
    # enumeration did not end or disturb the transaction
    assert in_transaction(conn) and sqlite_ct.current_bsn(conn) == open_bsn
    run(conn, "COMMIT")

    changes = sqlite_ct.enumerate_changes(conn, "t", committed)
    assert changes.new_anchor == open_bsn
    assert changes.inserts == [{"id": 2, "v": "b"}]


# ------------------------------------------------------------ hooks

def test_application_hooks_do_not_displace_tracking(apsw_conn):
    """sqlite-ct uses no commit, rollback or update hook (state.c): an
    application that installs its own, or replaces them mid-way, changes
    nothing about the numbering."""
    conn = apsw_conn
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    seen = []
    conn.set_commit_hook(lambda: seen.append("commit") or False)
    conn.set_rollback_hook(lambda: seen.append("rollback"))
    conn.set_update_hook(lambda *args: seen.append("update"))
    start = sqlite_ct.last_committed_csn(conn)
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b')")
    conn.execute("BEGIN; UPDATE t SET v = 'x' WHERE id = 1; ROLLBACK")
    conn.set_commit_hook(None)
    conn.set_rollback_hook(None)
    conn.execute("BEGIN; UPDATE t SET v = 'y' WHERE id = 2; DELETE FROM t WHERE id = 1; COMMIT")
    assert "commit" in seen and "rollback" in seen and "update" in seen
    assert sqlite_ct.last_committed_csn(conn) == start + 2
    changes = sqlite_ct.enumerate_changes(conn, "t", start)
    assert changes.inserts == [{"id": 2, "v": "y"}] and changes.deletes == []
    assert sorted(r[0] for r in conn.execute('SELECT DISTINCT "__sysChangeTxBsn" FROM t')) \
        == [start + 2]
