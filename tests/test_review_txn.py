"""Savepoint, rollback and commit sequences against invariant 4: after each one
every committed stamp and tombstone must be logged and at most the last
committed CSN, check() must find nothing, one committed transaction must carry
one BSN, and a replica fed by enumerate_changes() must end identical to the
table (DESIGN.md section 4, invariants 1 to 4). Written to attack a write path
that learned the transaction's boundaries from a virtual table sqlite_ct_txn
instead of probing __sysTxCommitSequence per row; two of them (a virtual table
of the application's own writing from xSync / xRollbackTo) broke it, and it
was taken back (docs/architecture.md, "How a BSN is handed out and
validated"). They all hold for the per-row probe."""
import os
import subprocess
import sys

import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import HOST_ERRORS, TxModule, in_transaction, q, run

SCHEMA = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL, u INTEGER UNIQUE)",
    "CREATE TABLE plain(x)",
    # user triggers that RAISE after sqlite-ct's triggers wrote (AFTER ones run
    # in creation order, sqlite-ct's are created later, so they run first)
    "CREATE TRIGGER user_abort AFTER UPDATE ON t WHEN NEW.v = 'abort'"
    " BEGIN SELECT RAISE(ABORT, 'user abort'); END",
    "CREATE TRIGGER user_rollback AFTER INSERT ON t WHEN NEW.v = 'rollback'"
    " BEGIN SELECT RAISE(ROLLBACK, 'user rollback'); END",
    "CREATE TRIGGER user_fail AFTER INSERT ON t WHEN NEW.v = 'fail'"
    " BEGIN SELECT RAISE(FAIL, 'user fail'); END",
]


class Tracked:
    """A tracked table t on `conn`, and a replica kept in step by
    enumerate_changes() whenever the connection is outside a transaction."""

    def __init__(self, conn):
        self.conn = conn
        run(conn, *SCHEMA)
        sqlite_ct.create_schema(conn, "t")
        self.replica = Replica(["id"])
        self.anchor = sqlite_ct.last_committed_csn(conn)

    def do(self, *statements, conn=None):
        """Run statements one by one; a failing one is expected (its error is
        collected), the next ones still run. Syncs the replica after each
        statement that leaves every connection outside a transaction."""
        conn = conn or self.conn
        errors = []
        for sql in statements:
            try:
                q(conn, sql)
            except HOST_ERRORS as exc:
                errors.append(str(exc))
            if not in_transaction(self.conn) and not in_transaction(conn):
                self.sync()
        return errors

    def sync(self):
        changes = sqlite_ct.enumerate_changes(self.conn, "t", self.anchor)
        self.replica.apply(changes)
        self.anchor = changes.new_anchor

    def bsns(self):
        return {r[0] for r in q(self.conn, 'SELECT "__sysChangeTxBsn" FROM t')}

    def assert_sound(self):
        conn = self.conn
        assert not in_transaction(conn)
        logged = {r[0] for r in q(conn, "SELECT __sysTxCsn FROM __sysTxCommitSequence")}
        last = sqlite_ct.last_committed_csn(conn)
        for chg, ins in q(conn, 'SELECT "__sysChangeTxBsn", "__sysInsertTxBsn" FROM t'):
            assert chg in logged and ins in logged, (chg, ins, sorted(logged))
            assert chg <= last and ins <= last
        for (bsn,) in q(conn, "SELECT __sysDeleteTxBsn FROM __sysOCSDeletedRows"):
            assert bsn in logged and bsn <= last, (bsn, sorted(logged))
        assert sqlite_ct.check(conn) == []
        self.sync()
        assert self.replica.rows == table_rows(conn, "t", ["id"])


def ins(i, v="x", u="NULL", verb="INSERT"):
    return f"{verb} INTO t(id, v, u) VALUES ({i}, '{v}', {u})"


@pytest.fixture
def tr(conn):
    return Tracked(conn)


# ---- savepoints in every order ----------------------------------------------

SAVEPOINT_CASES = {
    "a_write_b_write_rollback_to_a": [
        "BEGIN", "SAVEPOINT a", ins(1), "SAVEPOINT b", ins(2), "ROLLBACK TO a", ins(3),
        "RELEASE a", "COMMIT"],
    "savepoints_open_before_the_first_write": [
        "BEGIN", "SAVEPOINT a", "SAVEPOINT b", ins(1), "RELEASE b", "ROLLBACK TO a", ins(2),
        "COMMIT"],
    "joined_under_two_savepoints_rolled_back_to_the_outer": [
        "BEGIN", "SAVEPOINT a", "SAVEPOINT b", ins(1), "ROLLBACK TO a", ins(2), "RELEASE a",
        "COMMIT"],
    "savepoint_that_began_the_transaction": [
        "SAVEPOINT a", ins(1), "ROLLBACK TO a", ins(2), "SAVEPOINT b", ins(3), "ROLLBACK TO b",
        "UPDATE t SET v = 'y'", "ROLLBACK TO a", ins(4), "RELEASE a"],
    "first_write_rolled_back_then_written_again": [
        "BEGIN", "SAVEPOINT s", ins(1), "UPDATE t SET v = 'y'", "ROLLBACK TO s", "RELEASE s",
        "SAVEPOINT s", ins(2), "DELETE FROM t WHERE id = 2", "ROLLBACK TO s", ins(3), "COMMIT"],
    "released_inner_then_outer_rolled_back": [
        "BEGIN", "SAVEPOINT a", "SAVEPOINT b", ins(1), "RELEASE b", "SAVEPOINT c", ins(2),
        "RELEASE c", "ROLLBACK TO a", "RELEASE a", ins(3), "COMMIT"],
    "same_name_twice": [
        "BEGIN", "SAVEPOINT a", ins(1), "SAVEPOINT a", ins(2), "ROLLBACK TO a", "RELEASE a",
        ins(3), "ROLLBACK TO a", ins(4), "COMMIT"],
    "write_before_the_savepoint_survives_rollback_to_it": [
        "BEGIN IMMEDIATE", ins(1), "SAVEPOINT a", "DELETE FROM t", ins(2), "ROLLBACK TO a",
        "UPDATE t SET v = 'k'", "COMMIT"],
    "untracked_writes_first": [
        "BEGIN DEFERRED", "INSERT INTO plain VALUES (1)", "SAVEPOINT s", ins(1),
        "ROLLBACK TO s", "INSERT INTO plain VALUES (2)", ins(2), "COMMIT"],
    "reads_in_between": [
        "BEGIN", ins(1), "SELECT * FROM t", "SAVEPOINT s", "SELECT count(*) FROM t",
        "ROLLBACK TO s", ins(2), "COMMIT"],
}


@pytest.mark.parametrize("steps", list(SAVEPOINT_CASES.values()), ids=list(SAVEPOINT_CASES))
def test_savepoint_orders_keep_one_logged_bsn(tr, steps):
    assert tr.do(*steps) == []
    tr.assert_sound()
    assert len(tr.bsns()) <= 1


# ---- failed statements and RAISE --------------------------------------------

FAILURE_CASES = {
    "constraint_error_as_the_first_write": (
        ["BEGIN", "INSERT INTO t(id, v) VALUES (1, 'x'), (2, NULL)", ins(3), "COMMIT"], 1),
    "raise_abort_after_the_first_write": (
        [ins(1), "BEGIN", "UPDATE t SET v = 'abort'", ins(2), "UPDATE t SET v = 'y'", "COMMIT"],
        1),
    "raise_rollback_as_the_first_write": (
        ["BEGIN", ins(1, "rollback"), "BEGIN", ins(2), "COMMIT"], 1),
    "raise_fail_keeps_the_rows_before_it": (
        ["BEGIN", "INSERT INTO t(id, v) VALUES (1, 'x'), (2, 'fail'), (3, 'x')", ins(4),
         "COMMIT"], 1),
    "or_rollback_conflict": (
        [ins(9, u=9), "BEGIN", ins(5), ins(6, u=9, verb="INSERT OR ROLLBACK"), ins(7),
         "COMMIT"], 2),
    "or_fail_update_midway": (
        [ins(1), ins(2, u=2), "BEGIN",
         "UPDATE OR FAIL t SET u = CASE id WHEN 1 THEN 7 ELSE 2 END",
         "UPDATE OR FAIL t SET u = 2 WHERE id = 1", ins(3), "COMMIT"], 1),
    "or_ignore_that_writes_nothing_first": (
        [ins(1), "BEGIN", ins(1, verb="INSERT OR IGNORE"), "SAVEPOINT s", ins(2),
         "ROLLBACK TO s", ins(3), "COMMIT"], 0),
}


@pytest.mark.parametrize("case", list(FAILURE_CASES.values()), ids=list(FAILURE_CASES))
def test_failed_statements_leave_no_reused_or_unlogged_bsn(tr, case):
    steps, n_errors = case
    assert len(tr.do(*steps)) == n_errors
    tr.assert_sound()


# ---- other connections and processes ------------------------------------------

@pytest.fixture
def other(db_path, apsw_conn):
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    yield conn
    conn.close()


def test_another_connection_reuses_a_rolled_back_number(db_path, apsw_conn, other):
    tr = Tracked(apsw_conn)
    assert tr.do("BEGIN", ins(1), "SAVEPOINT s", ins(2), "ROLLBACK") == []
    assert tr.do(ins(3), ins(4), conn=other) == []
    assert tr.do("BEGIN", ins(5), "SAVEPOINT s", ins(6), "ROLLBACK TO s", ins(7),
                 "COMMIT") == []
    tr.assert_sound()
    assert len({b for (b,) in q(apsw_conn, 'SELECT "__sysChangeTxBsn" FROM t')}) == 3


def test_another_process_commits_between_two_transactions(db_path, apsw_conn):
    tr = Tracked(apsw_conn)
    assert tr.do("BEGIN", ins(1), "COMMIT") == []
    script = ("import sys, apsw, sqlite_ct\n"
              "c = apsw.Connection(sys.argv[1]); sqlite_ct.load(c)\n"
              "c.execute(\"BEGIN; SAVEPOINT s; INSERT INTO t(id, v) VALUES (50, 'p');"
              " ROLLBACK TO s; INSERT INTO t(id, v) VALUES (51, 'p'); COMMIT\")\n")
    subprocess.run([sys.executable, "-c", script, db_path], check=True,
                   env=dict(os.environ))
    assert tr.do("BEGIN", "SAVEPOINT s", ins(2), "ROLLBACK TO s", ins(3), "COMMIT") == []
    tr.assert_sound()
    assert len(tr.bsns()) == 3


def test_a_connection_closed_mid_transaction(db_path, apsw_conn):
    tr = Tracked(apsw_conn)
    doomed = apsw.Connection(db_path)
    sqlite_ct.load(doomed)
    run(doomed, "BEGIN", "SAVEPOINT s", ins(1), "RELEASE s")
    doomed.close()
    assert tr.do("BEGIN", ins(2), "SAVEPOINT s", ins(3), "ROLLBACK TO s", "COMMIT") == []
    tr.assert_sound()


def test_nested_writes_from_a_user_function(apsw_conn):
    tr = Tracked(apsw_conn)

    def write(i):
        q(apsw_conn, "INSERT INTO t(id, v) VALUES (?, 'f')", (i,))
        return i
    apsw_conn.create_scalar_function("write_t", write)
    assert tr.do("BEGIN", "SAVEPOINT a", "SELECT write_t(1)", "ROLLBACK TO a",
                 "SELECT write_t(2)", "SAVEPOINT b", "SELECT write_t(3), write_t(4)",
                 "ROLLBACK TO b", "SELECT write_t(5)", "COMMIT") == []
    assert tr.do("BEGIN", "SELECT write_t(6), abs(-9223372036854775808)", "SELECT write_t(7)",
                 "COMMIT") == ["integer overflow"]
    tr.assert_sound()


def test_a_transaction_spanning_an_attached_database(apsw_conn, tmp_path):
    tr = Tracked(apsw_conn)
    run(apsw_conn, f"ATTACH '{tmp_path / 'aux.db'}' AS aux", "CREATE TABLE aux.plain(x)")
    assert tr.do("BEGIN", "INSERT INTO aux.plain VALUES (1)", "SAVEPOINT s", ins(1),
                 "INSERT INTO aux.plain VALUES (2)", "ROLLBACK TO s", ins(2),
                 "INSERT INTO aux.plain VALUES (3)", "COMMIT") == []
    tr.assert_sound()
    assert q(apsw_conn, "SELECT x FROM aux.plain") == [(1,), (3,)]


def test_the_extension_loaded_again_mid_transaction(apsw_conn):
    tr = Tracked(apsw_conn)
    apsw_conn.enable_load_extension(True)
    assert tr.do("BEGIN", ins(1), "SAVEPOINT s") == []
    apsw_conn.load_extension(sqlite_ct.loader.loadable_path())
    assert tr.do(ins(2), "ROLLBACK TO s", ins(3), "RELEASE s", "SAVEPOINT r",
                 "DELETE FROM t WHERE id = 1", "ROLLBACK TO r", "COMMIT") == []
    assert tr.do("BEGIN", "SAVEPOINT s", ins(4), "ROLLBACK TO s", ins(5), "COMMIT") == []
    tr.assert_sound()


# ---- ORM savepoint patterns ----------------------------------------------------

def test_stdlib_implicit_transactions(db_path):
    sqlite_ct.loader.register_auto_extension()
    import sqlite3
    conn = sqlite3.connect(db_path, isolation_level="")
    try:
        run(conn, *SCHEMA)
        conn.commit()
        sqlite_ct.create_schema(conn, "t")
        conn.commit()
        run(conn, "SAVEPOINT a", ins(1), "ROLLBACK TO a", ins(2), "RELEASE a")
        conn.commit()
        run(conn, ins(3), "SAVEPOINT a", "UPDATE t SET v = 'q'", "ROLLBACK TO a",
            "DELETE FROM t WHERE id = 3")
        conn.commit()
        tr = Tracked.__new__(Tracked)
        tr.conn, tr.replica, tr.anchor = conn, Replica(["id"]), 0
        tr.assert_sound()
        assert sorted(table_rows(conn, "t", ["id"])) == [(2,)]
    finally:
        conn.close()


def test_sqlalchemy_begin_nested(db_path):
    sa = pytest.importorskip("sqlalchemy")
    import sqlite3
    engine = sa.create_engine(f"sqlite:///{db_path}")

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        sqlite_ct.loader.register_auto_extension()
        sqlite_ct.load(dbapi_conn)
        dbapi_conn.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN")

    with engine.begin() as conn:
        for sql in SCHEMA:
            conn.exec_driver_sql(sql)
        sqlite_ct.create_schema(conn.connection.dbapi_connection, "t")
    with engine.begin() as conn:
        conn.exec_driver_sql(ins(1))
        nested = conn.begin_nested()
        conn.exec_driver_sql(ins(2))
        nested.rollback()
        nested = conn.begin_nested()
        conn.exec_driver_sql(ins(3))
        inner = conn.begin_nested()
        conn.exec_driver_sql("UPDATE t SET v = 'z'")
        inner.rollback()
        nested.commit()
    engine.dispose()
    raw = sqlite3.connect(db_path, isolation_level=None)
    try:
        sqlite_ct.load(raw)
        tr = Tracked.__new__(Tracked)
        tr.conn, tr.replica, tr.anchor = raw, Replica(["id"]), 0
        tr.assert_sound()
        assert len(tr.bsns()) == 1
    finally:
        raw.close()


# ---- writes from another virtual table's xSync and xRollbackTo ------------------


def test_a_failed_statement_inside_another_virtual_tables_xsync(apsw_conn):
    """A virtual table of the application whose xSync writes a tracked table
    (it flushes buffered work at commit) runs a statement that fails after
    logging the transaction: SQLite rolls back to the statement's savepoint,
    the log row with it, and tells the transaction's virtual tables nothing
    while xSync runs. The next statement in that xSync must log the
    transaction again: every committed row's BSN has its
    __sysTxCommitSequence row. (A write path that learned the log row's fate
    from a virtual table's savepoint calls instead of probing the log lost it
    here: the row committed above the last committed CSN, check() reported
    stamp-above-csn, and the next transaction was handed the same BSN.)"""
    tr = Tracked(apsw_conn)
    module = TxModule()
    apsw_conn.create_module("flush", module, iVersion=3, eponymous=True,
                            eponymous_only=True)
    errors = []

    def flush():
        for sql in ["INSERT INTO t(id, v) VALUES (2, 'x'), (3, NULL)", ins(4)]:
            try:
                q(apsw_conn, sql)
            except HOST_ERRORS as exc:
                errors.append(str(exc))
    module.table.on_sync = flush
    assert tr.do("BEGIN", "SAVEPOINT s", ins(1), "ROLLBACK TO s",
                 "INSERT INTO flush VALUES (1)", "COMMIT") == []
    assert errors == ["NOT NULL constraint failed: t.v"]
    assert sorted(table_rows(apsw_conn, "t", ["id"])) == [(4,)]
    tr.assert_sound()


def test_a_write_from_another_virtual_tables_xrollbackto(apsw_conn):
    """SQLite rolls the pager back to the savepoint first and then calls
    xRollbackTo of every virtual table in the transaction, in the order they
    joined it. A virtual table of the application that writes a tracked table
    from its xRollbackTo (it records the undo, say) writes after the
    transaction's log row is gone: that write must log the transaction again.
    (A write path that waited for its own virtual table's xRollbackTo to learn
    that the log row was gone, which comes later, lost it here.)"""
    tr = Tracked(apsw_conn)
    module = TxModule()
    apsw_conn.create_module("flush", module, iVersion=3, eponymous=True,
                            eponymous_only=True)
    errors = []

    def rollback_to(level):
        try:
            q(apsw_conn, "INSERT INTO t(id, v) VALUES (100 + ?, 'undone')", (level,))
        except HOST_ERRORS as exc:
            errors.append(str(exc))
    module.table.RollbackTo = rollback_to
    assert tr.do("BEGIN", "INSERT INTO flush VALUES (1)", "SAVEPOINT s", ins(1),
                 "ROLLBACK TO s", "COMMIT") == []
    assert errors == []
    assert sorted(table_rows(apsw_conn, "t", ["id"])) == [(100,)]
    tr.assert_sound()
