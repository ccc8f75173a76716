"""Pins of the SQLite transaction behaviours a write path that learns the
transaction's boundaries from an eponymous virtual table would rest on, beyond
tests/test_sqlite_pins.py ("transaction boundaries from an eponymous virtual
table"): such a table enlisted by a nested statement (the write path enlists
from C, in a statement nested in a trigger's), staying enlisted when the
statement that enlisted it fails; the order in which SQLite tells two tables
(the order they joined); what SQLite hides and refuses while it calls xSync,
xCommit and xRollback (no table may be begun; a failed statement's rollback
is told to no table); xRollbackTo running after the pager rolled back; COMMIT
failing with SQLITE_BUSY after xSync and the transaction going on; a deferred
foreign key failing COMMIT before xSync; closing a connection mid-transaction
(xRollback before the pager's rollback); what autocommit does with nested
statements; and writes from xCommit and xRollback committing on their own.

Plain SQLite, no sqlite-ct: the recording tables of tests/test_sqlite_pins.py
(tests/fixtures/pin_txvtab.c in C, on apsw's SQLite and the stdlib sqlite3
module's; sqlhelpers.TxModule in Python on apsw), with SQL run from their
methods (pin_tx_on). A failure here means SQLite changed, not the project.
"""
import sqlite3

import apsw
import pytest

from sqlhelpers import TxModule, TxTable, q, run, val
from test_sqlite_pins import CTx, PythonTx, in_transaction, pin_txvtab  # noqa: F401
from test_sqlite_pins import run_each


class Tagged(list):
    """A log that records into another log, each method name tagged."""

    def __init__(self, target, tag):
        super().__init__()
        self.target, self.tag = target, tag

    def append(self, entry):
        self.target.append((self.tag + entry[0],) + tuple(entry[1:]))


class PyHarness(PythonTx):
    """PythonTx with the second table pin_tx2 and pin_tx_on()."""

    def __init__(self, path):
        super().__init__(path)
        second = TxModule()
        second.log = Tagged(self.module.log, "2:")
        second.table = TxTable(second.log)
        self.conn.create_module("pin_tx2", second, iVersion=3, eponymous=True,
                                eponymous_only=True)
        self.tables = {"": self.module.table, "2:": second.table}
        self._running = False

    def on(self, method, sql):
        tag, name = ("2:", method[2:]) if method.startswith("2:") else ("", method)
        table = self.tables[tag]

        def call(*args):
            table.log.append((name,) + args)
            if sql is None or self._running:
                return
            self._running = True
            try:
                q(self.conn, sql)
            except apsw.Error as exc:
                self.module.log.append(("error", str(exc)))
            finally:
                self._running = False
        setattr(table, name, call)


class CHarness(CTx):
    """CTx with pin_tx_on() and error lines in the record."""

    def on(self, method, sql):
        q(self.conn, "SELECT pin_tx_on(?, ?)", (method, sql))

    def take(self):
        calls = []
        for line in val(self.conn, "SELECT pin_tx_log()").splitlines():
            name, _, arg = line.partition(" ")
            if name == "error":
                calls.append((name, arg))
            else:
                calls.append((name, int(arg)) if arg else (name,))
        return calls


@pytest.fixture(params=["apsw-python", "apsw-c", "sqlite3-c"])
def txv(request, tmp_path):
    """A connection with pin_tx and pin_tx2; tables t, seen (what methods
    saw), u (its trigger writes pin_tx); SQL functions note(x) (appends x to
    .notes) and exec_sql(sql) (runs sql as a nested statement, returns 0)."""
    path = str(tmp_path / "txn.db")
    if request.param == "apsw-python":
        tx = PyHarness(path)
    else:
        tx = CHarness(path, request.param.split("-")[0],
                      request.getfixturevalue("pin_txvtab"))
    tx.path = path
    tx.notes = []

    def note(x):
        tx.notes.append(x)
        return x

    def exec_sql(sql):
        q(tx.conn, sql)
        return 0
    if isinstance(tx.conn, apsw.Connection):
        tx.conn.create_scalar_function("note", note, 1)
        tx.conn.create_scalar_function("exec_sql", exec_sql, 1)
    else:
        tx.conn.create_function("note", 1, note)
        tx.conn.create_function("exec_sql", 1, exec_sql)
    run(tx.conn, "PRAGMA journal_mode=WAL",
        "CREATE TABLE t(a INTEGER PRIMARY KEY)",
        "CREATE TABLE seen(n)",
        "CREATE TABLE u(a INTEGER PRIMARY KEY, b UNIQUE)",
        "CREATE TRIGGER u_ai AFTER INSERT ON u BEGIN INSERT INTO pin_tx VALUES (NEW.a); END")
    tx.take()
    try:
        yield tx
    finally:
        if tx.conn is not None:
            tx.conn.close()


def other_connection(tx):
    """Another connection to the file, on the same SQLite library (two
    libraries in one process do not see each other's locks)."""
    if isinstance(tx.conn, apsw.Connection):
        return apsw.Connection(tx.path)
    return sqlite3.connect(tx.path, isolation_level=None)


# ---- enlisting from a nested statement ----------------------------------------------

def test_a_table_enlisted_by_a_nested_statement_stays_when_the_statement_fails(txv):
    """The write path enlists its table from C, with an INSERT nested in the
    statement that writes the tracked row. Pinned: a table first written by a
    statement nested in a failing statement is told of the failing
    statement's savepoint (xSavepoint at the level the nested statement sees,
    xRollbackTo and xRelease of it) and stays in the transaction, which goes
    on to xSync and xCommit; in autocommit mode the failing statement's
    transaction ends with xRollback."""
    conn = txv.conn
    errors = run_each(conn, "BEGIN", "INSERT INTO t VALUES (1)",
                      "INSERT INTO t VALUES (2), (exec_sql('INSERT INTO pin_tx VALUES (7)') + 3),"
                      " (1)", "INSERT INTO t VALUES (4)", "COMMIT")
    assert errors == ["UNIQUE constraint failed: t.a"]
    assert txv.take() == [("Begin",), ("Savepoint", 0), ("write", 7), ("RollbackTo", 0),
                          ("Release", 0), ("Sync",), ("Commit",)]
    assert q(conn, "SELECT a FROM t") == [(1,), (4,)]
    errors = run_each(conn, "INSERT INTO t VALUES (5), (exec_sql('INSERT INTO pin_tx VALUES (8)')"
                            " + 6), (1)")
    assert errors == ["UNIQUE constraint failed: t.a"]
    assert txv.take() == [("Begin",), ("write", 8), ("Rollback",)]
    assert not in_transaction(conn)


def test_autocommit_nested_statements_commit_on_their_own_unless_the_outer_one_writes(txv):
    """What "one autocommit statement" spans, for a write path that enlists
    its table at an autocommit statement's second tracked row. Pinned: nested
    writes from a function called by an
    autocommit SELECT each commit on their own (a transaction per nested
    statement: xBegin, xSync, xCommit each time); called by an autocommit
    INSERT, they share its transaction."""
    conn = txv.conn
    run(conn, "SELECT exec_sql('INSERT INTO pin_tx VALUES (1)'),"
              " exec_sql('INSERT INTO pin_tx VALUES (2)')")
    assert txv.take() == [("Begin",), ("write", 1), ("Sync",), ("Commit",),
                          ("Begin",), ("write", 2), ("Sync",), ("Commit",)]
    run(conn, "INSERT INTO t VALUES (exec_sql('INSERT INTO pin_tx VALUES (3)') + 1),"
              " (exec_sql('INSERT INTO pin_tx VALUES (4)') + 2)")
    assert txv.take() == [("Begin",), ("write", 3), ("write", 4), ("Sync",), ("Commit",)]


# ---- two tables: the order SQLite tells them ------------------------------------------

def test_two_tables_are_told_in_the_order_they_joined(txv):
    """Another virtual table of the application's may join before the write
    path's: SQLite calls xSavepoint, xRollbackTo, xRelease, xSync, xCommit
    and xRollback of the transaction's tables in the order they joined."""
    conn = txv.conn
    run(conn, "BEGIN", "INSERT INTO pin_tx2 VALUES (1)", "INSERT INTO pin_tx VALUES (2)",
        "SAVEPOINT s", "ROLLBACK TO s", "RELEASE s", "COMMIT")
    assert txv.take() == [("2:Begin",), ("2:write", 1), ("Begin",), ("write", 2),
                          ("2:Savepoint", 0), ("Savepoint", 0),
                          ("2:RollbackTo", 0), ("RollbackTo", 0),
                          ("2:Release", 0), ("Release", 0),
                          ("2:Sync",), ("Sync",), ("2:Commit",), ("Commit",)]
    run(conn, "BEGIN", "INSERT INTO pin_tx VALUES (3)", "INSERT INTO pin_tx2 VALUES (4)",
        "ROLLBACK")
    assert txv.take() == [("Begin",), ("write", 3), ("2:Begin",), ("2:write", 4),
                          ("Rollback",), ("2:Rollback",)]


# ---- what SQLite hides and refuses in xSync, xCommit, xRollback ------------------------

@pytest.mark.parametrize("method", ["Sync", "Commit", "Rollback"])
def test_no_table_can_be_begun_while_sqlite_calls_xsync_xcommit_or_xrollback(txv, method):
    """A tracked write made from another table's xSync (or xCommit,
    xRollback) cannot enlist the write path's table, nor write a table
    already in the transaction: SQLITE_LOCKED. A statement on a table with a
    trigger that writes a virtual table is refused too, although the
    trigger's WHEN is false: SQLite begins the virtual tables a statement's
    triggers may write when the statement starts."""
    conn = txv.conn
    run(conn, "CREATE TABLE w(a INTEGER PRIMARY KEY)",
        "CREATE TRIGGER w_ai AFTER INSERT ON w WHEN 0 BEGIN INSERT INTO pin_tx2 VALUES (1); END")
    txv.on("2:" + method, "INSERT INTO pin_tx VALUES (9); INSERT INTO w VALUES (1)")
    txv.on(method, "INSERT INTO pin_tx2 VALUES (9)")
    last = "ROLLBACK" if method == "Rollback" else "COMMIT"
    run(conn, "BEGIN", "INSERT INTO pin_tx2 VALUES (1)", "INSERT INTO pin_tx VALUES (2)", last)
    locked = ("error", "database table is locked")
    calls = [(f"2:{method}",), locked, (method,), locked]
    if method == "Sync":
        calls += [("2:Commit",), ("Commit",)]
    elif method == "Commit":
        calls = [("2:Sync",), ("Sync",)] + calls
    assert txv.take() == [("2:Begin",), ("2:write", 1), ("Begin",), ("write", 2)] + calls
    txv.on("2:" + method, "INSERT INTO w VALUES (1)")
    run(conn, "BEGIN", "INSERT INTO pin_tx2 VALUES (1)", last)
    assert ("error", "database table is locked") in txv.take()
    assert q(conn, "SELECT count(*) FROM w") == [(0,)]


def test_a_failed_statement_in_xsync_is_told_to_no_table(txv):
    """Statements run from xSync: one that fails is rolled back to its own
    statement savepoint, and neither table hears of it (no xSavepoint, no
    xRollbackTo); the statements around it commit with the transaction."""
    conn = txv.conn
    txv.on("2:Sync", "INSERT INTO t VALUES (51); INSERT INTO t VALUES (52), (51)")
    txv.on("Sync", "INSERT INTO t VALUES (53)")
    run(conn, "BEGIN", "INSERT INTO pin_tx2 VALUES (1)", "INSERT INTO t VALUES (1)",
        "INSERT INTO pin_tx VALUES (2)", "COMMIT")
    assert txv.take() == [("2:Begin",), ("2:write", 1), ("Begin",), ("write", 2),
                          ("2:Sync",), ("error", "UNIQUE constraint failed: t.a"),
                          ("Sync",), ("2:Commit",), ("Commit",)]
    other = other_connection(txv)
    try:
        assert q(other, "SELECT a FROM t ORDER BY a") == [(1,), (51,), (53,)]
    finally:
        other.close()


# ---- xRollbackTo after the pager -----------------------------------------------------

def test_xrollbackto_runs_after_the_rollback_and_its_writes_stay(txv):
    """ROLLBACK TO and a failed statement: SQLite rolls the database back
    first, then calls xRollbackTo in join order. A statement run there sees
    the rolled-back state, and what it writes stays in the transaction (a
    later ROLLBACK TO of the same savepoint takes it back)."""
    conn = txv.conn
    txv.on("2:RollbackTo", "INSERT INTO seen SELECT count(*) FROM t")
    run(conn, "BEGIN", "INSERT INTO pin_tx2 VALUES (1)", "INSERT INTO t VALUES (1)",
        "SAVEPOINT s", "INSERT INTO t VALUES (2)", "ROLLBACK TO s", "RELEASE s")
    assert run_each(conn, "INSERT INTO t VALUES (3), (1)") == ["UNIQUE constraint failed: t.a"]
    run(conn, "SAVEPOINT r", "INSERT INTO t VALUES (4)", "ROLLBACK TO r", "ROLLBACK TO r",
        "COMMIT")
    log = txv.take()
    assert [c for c in log if c[0] == "2:RollbackTo"] == [("2:RollbackTo", 0)] * 4
    other = other_connection(txv)
    try:
        assert q(other, "SELECT n FROM seen") == [(1,), (1,), (1,)]
        assert q(other, "SELECT a FROM t") == [(1,)]
    finally:
        other.close()


# ---- COMMIT failing, the transaction going on ---------------------------------------

def test_a_busy_commit_has_run_xsync_and_leaves_the_transaction_open(txv):
    """Rollback-journal mode, another connection reading: COMMIT fails with
    SQLITE_BUSY after SQLite called xSync; the transaction and its savepoints
    stay open, the table stays in it (it is told of savepoints), and every
    retry calls xSync again, until one commits and calls xCommit."""
    conn = txv.conn
    run(conn, "PRAGMA journal_mode=DELETE", "PRAGMA busy_timeout=0")
    reader = other_connection(txv)
    run(reader, "PRAGMA busy_timeout=0", "BEGIN", "SELECT count(*) FROM t")
    try:
        errors = run_each(conn, "BEGIN", "SAVEPOINT s", "INSERT INTO pin_tx VALUES (1)",
                          "INSERT INTO t VALUES (1)", "COMMIT")
        assert errors == ["database is locked"]
        assert in_transaction(conn)
        errors = run_each(conn, "ROLLBACK TO s", "INSERT INTO t VALUES (2)", "COMMIT")
        assert errors == ["database is locked"]
    finally:
        reader.close()
    run(conn, "COMMIT")
    assert txv.take() == [("Begin",), ("Savepoint", 0), ("write", 1), ("Sync",),
                          ("RollbackTo", 0), ("Sync",), ("Sync",), ("Commit",)]
    assert q(conn, "SELECT a FROM t") == [(2,)]


def test_a_deferred_foreign_key_fails_commit_before_xsync(txv):
    """COMMIT refused by a deferred foreign key: SQLite checks it before it
    calls xSync; the transaction stays open with the table in it."""
    conn = txv.conn
    run(conn, "PRAGMA foreign_keys=ON",
        "CREATE TABLE child(a INTEGER PRIMARY KEY, p REFERENCES t(a) DEFERRABLE"
        " INITIALLY DEFERRED)")
    txv.take()
    errors = run_each(conn, "BEGIN", "INSERT INTO pin_tx VALUES (1)",
                      "INSERT INTO child VALUES (1, 5)", "COMMIT")
    assert errors == ["FOREIGN KEY constraint failed"]
    assert in_transaction(conn)
    assert txv.take() == [("Begin",), ("write", 1)]
    run(conn, "INSERT INTO t VALUES (5)", "COMMIT")
    assert txv.take() == [("Sync",), ("Commit",)]


# ---- close, xCommit and xRollback -------------------------------------------------------

def test_closing_mid_transaction_calls_xrollback_before_the_rollback(txv):
    """ROLLBACK calls xRollback after the database rolled back; closing a
    connection with a transaction open calls xRollback first, while the
    transaction's rows are still there, and rolls back after."""
    conn = txv.conn
    txv.on("Rollback", "SELECT note(count(*)) FROM t")
    run(conn, "BEGIN", "INSERT INTO pin_tx VALUES (1)", "INSERT INTO t VALUES (1)", "ROLLBACK")
    run(conn, "BEGIN", "INSERT INTO pin_tx VALUES (2)", "INSERT INTO t VALUES (2)",
        "INSERT INTO t VALUES (3)")
    conn.close()
    txv.conn = None
    if isinstance(txv, PyHarness):
        # apsw refuses Python's SQL on a connection it is closing
        assert txv.take()[-2:] == [("Rollback",), ("error", "The connection has been closed")]
        assert txv.notes == [0]
    else:
        assert txv.notes == [0, 2]
    other = other_connection(txv)
    try:
        assert q(other, "SELECT count(*) FROM t") == [(0,)]
    finally:
        other.close()


ENDINGS = {
    "commit": ("Commit", ["BEGIN", "INSERT INTO pin_tx VALUES (1)", "INSERT INTO t VALUES (1)",
                          "COMMIT"], False),
    "autocommit": ("Commit", ["INSERT INTO u VALUES (1, 1)"], False),
    "rollback": ("Rollback", ["BEGIN", "INSERT INTO pin_tx VALUES (1)", "INSERT INTO t VALUES (1)",
                              "ROLLBACK"], True),
    "raise_rollback": ("Rollback", ["BEGIN", "INSERT INTO pin_tx VALUES (1)",
                                    "INSERT INTO t VALUES (99)"], False),
    "failed_autocommit": ("Rollback", ["INSERT INTO u VALUES (1, 1), (2, 1)"], False),
}


@pytest.mark.parametrize("case", list(ENDINGS.values()), ids=list(ENDINGS))
def test_a_write_from_xcommit_or_xrollback(txv, case):
    """A table's xCommit (after the commit) and xRollback (after the
    rollback) may write a plain table, and no table hears of that write
    (none can join: see above). After ROLLBACK the write is committed at
    once. After COMMIT, an autocommit statement's commit, RAISE(ROLLBACK) or
    a failed autocommit statement it is left in a write transaction while the
    connection reports autocommit mode: the next statement that reads a table
    commits it (SELECT 1 does not), and a BEGIN takes it into the explicit
    transaction, so a ROLLBACK then undoes it."""
    method, steps, at_once = case
    conn = txv.conn
    run(conn, "CREATE TRIGGER t_rb AFTER INSERT ON t WHEN NEW.a = 99"
              " BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END")
    txv.on(method, "INSERT INTO seen VALUES (NULL)")
    other = other_connection(txv)
    try:
        run_each(conn, *steps)
        assert not in_transaction(conn)
        run(conn, "SELECT 1")
        assert q(other, "SELECT count(*) FROM seen") == [(1 if at_once else 0,)]
        assert q(conn, "SELECT count(*) FROM seen") == [(1,)]
        assert q(other, "SELECT count(*) FROM seen") == [(1,)]
        run(conn, "DELETE FROM t")
        run_each(conn, *steps)
        run(conn, "BEGIN", "INSERT INTO t VALUES (3)", "ROLLBACK")
        assert q(conn, "SELECT count(*) FROM seen") == [(2 if at_once else 1,)]
    finally:
        other.close()
