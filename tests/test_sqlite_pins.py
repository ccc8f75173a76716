"""Pins of SQLite behaviours the tracking core's write path relies on.

Most of these are not documented promises; each is how SQLite works today, on
both hosts the project supports (apsw's bundled SQLite and the stdlib sqlite3
module's SQLite). The write path's mechanisms rest on them:

- the stamp columns as STORED generated columns, computed by a deterministic
  function of the row: SQLite recomputes them for the new row on every write
  that produces one, and refuses writes to them;
- the stamp never indexed through such a column: SQLite does not maintain an
  index on a generated column when the UPDATE leaves alone the columns its
  expression references (pinned as a hazard);
- deleted rows seen through an always-empty partial index whose WHERE calls the
  extension: SQLite evaluates the WHERE for every row whose entry it deletes,
  however the row goes, except under DELETE's truncate shortcut;
- transaction boundaries from an eponymous virtual table written once per
  transaction: SQLite calls its xBegin, xSavepoint, xRollbackTo, xRelease,
  xRollback, xSync and xCommit in the order pinned below, and xSync may write;
- the functions in generated columns and partial indexes declared
  DETERMINISTIC, and INNOCUOUS for connections with trusted_schema=OFF.

The tests use plain SQL, Python-registered functions and a test-only virtual
table (in Python through apsw, and in C: tests/fixtures/pin_txvtab.c, compiled
by the tests), no sqlite-ct, so a failure here means SQLite changed, not the
project. A failure is a design question: the mechanism that relies on the
pinned behaviour must change before that SQLite version is supported.
"""
import ctypes
import os
import shutil
import sqlite3
import subprocess
import sysconfig

import apsw
import pytest

from sqlhelpers import TxModule, q, run, val


class Recorder:
    """A deterministic-declared SQL function with a side effect: it records its
    arguments and returns `value` (which the test may change between
    statements, as the extension's current BSN changes between transactions)."""

    def __init__(self, value=1):
        self.value = value
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.value

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def register(conn, name, fn, nargs):
    """Registers fn as a DETERMINISTIC SQL function on either host (apsw also
    INNOCUOUS, as the extension registers its functions; stdlib sqlite3 cannot
    say so, hence trusted_schema=ON on its connections)."""
    if isinstance(conn, apsw.Connection):
        conn.create_scalar_function(name, fn, nargs, deterministic=True,
                                    flags=apsw.SQLITE_INNOCUOUS)
    else:
        conn.create_function(name, nargs, fn, deterministic=True)


@pytest.fixture(params=["apsw", "sqlite3"])
def db(request, tmp_path):
    """A plain connection (no sqlite-ct) to a fresh database file, on each host."""
    path = str(tmp_path / "pins.db")
    if request.param == "apsw":
        conn = apsw.Connection(path)
    else:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA trusted_schema=ON")
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        yield conn
    finally:
        conn.close()


def host_error(conn):
    return apsw.Error if isinstance(conn, apsw.Connection) else sqlite3.Error


# ---- STORED generated stamp columns ------------------------------------------

@pytest.fixture
def stamped(db):
    """items with a STORED generated stamp computed by pin_stamp(id), the way the
    write path's __sysChangeTxBsn is computed by the extension from the key;
    rows 1..3 stamped 1."""
    stamp = Recorder(1)
    register(db, "pin_stamp", stamp, 1)
    run(db, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE, qty INTEGER, "
            "stamp INTEGER AS (pin_stamp(id)) STORED)",
        "INSERT INTO items(id, name, qty) VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30)")
    assert q(db, "SELECT id, stamp FROM items ORDER BY id") == [(1, 1), (2, 1), (3, 1)]
    return db, stamp


def test_stored_generated_column_is_recomputed_for_every_new_row(stamped):
    """Mechanism: STORED generated stamp columns. The row is stamped in its one
    write, with no AFTER UPDATE trigger and no second write, only because SQLite
    recomputes every stored generated column of the new row on every UPDATE --
    even one that sets only columns the expression does not reference, even one
    that sets a column to its own value -- on UPSERT's DO UPDATE, and on the row
    INSERT OR REPLACE writes."""
    db, stamp = stamped
    stamp.value = 2
    run(db, "UPDATE items SET qty = 11 WHERE id = 1")
    stamp.value = 3
    run(db, "UPDATE items SET qty = qty WHERE id = 2")
    stamp.value = 4
    run(db, "INSERT INTO items(id, name, qty) VALUES (3, 'c', 31) "
            "ON CONFLICT(id) DO UPDATE SET qty = excluded.qty")
    assert q(db, "SELECT id, qty, stamp FROM items ORDER BY id") == [
        (1, 11, 2), (2, 20, 3), (3, 31, 4)]
    stamp.value = 5
    run(db, "INSERT OR REPLACE INTO items(id, name, qty) VALUES (1, 'a2', 12)")
    stamp.value = 6
    run(db, "REPLACE INTO items(id, name, qty) VALUES (4, 'd', 40)")
    stamp.value = 7
    run(db, "INSERT INTO items(id, name, qty) VALUES (2, 'b', 0) "
            "ON CONFLICT(name) DO UPDATE SET qty = 21")
    assert q(db, "SELECT id, qty, stamp FROM items ORDER BY id") == [
        (1, 12, 5), (2, 21, 7), (3, 31, 4), (4, 40, 6)]
    # Once per written row: rows an UPDATE does not match are not recomputed.
    stamp.take()
    stamp.value = 8
    run(db, "UPDATE items SET qty = qty + 1 WHERE id >= 3")
    assert sorted(stamp.take()) == [(3,), (4,)]
    assert q(db, "SELECT id, stamp FROM items ORDER BY id") == [(1, 5), (2, 7), (3, 8), (4, 8)]


def test_writing_a_stored_generated_column_is_refused(stamped):
    """Mechanism: STORED generated stamp columns. Invariant 7 (users cannot
    leave the stamps lying) is kept by SQLite itself, with no guard trigger,
    only because every way of writing the column is refused, and a full-width
    INSERT without a column list does not count it."""
    db, _ = stamped
    error = host_error(db)
    with pytest.raises(error, match='cannot UPDATE generated column "stamp"'):
        run(db, "UPDATE items SET stamp = 99 WHERE id = 1")
    with pytest.raises(error, match='cannot INSERT into generated column "stamp"'):
        run(db, "INSERT INTO items(id, name, stamp) VALUES (9, 'z', 99)")
    with pytest.raises(error, match="table items has 3 columns but 4 values were supplied"):
        run(db, "INSERT INTO items VALUES (9, 'z', 1, 99)")
    with pytest.raises(error, match='cannot UPDATE generated column "stamp"'):
        run(db, "INSERT INTO items(id, name) VALUES (1, 'a') "
                "ON CONFLICT(id) DO UPDATE SET stamp = 99")
    assert q(db, "SELECT id, stamp FROM items ORDER BY id") == [(1, 1), (2, 1), (3, 1)]


def test_an_index_on_a_generated_column_goes_stale_when_the_update_leaves_its_inputs_alone(db):
    """Hazard, pinned so that no design relies on the opposite: the stamp must
    not be indexed through a generated column. SQLite maintains an index on a
    generated column only when the UPDATE sets a column the expression
    references; the stamp function is declared deterministic but is not, so
    the recomputed row and its index entry disagree (integrity_check reports
    it). If this test starts failing, SQLite began maintaining such indexes."""
    stamp = Recorder(1)
    register(db, "pin_stamp", stamp, 1)
    run(db, "CREATE TABLE items(id INTEGER PRIMARY KEY, qty INTEGER, "
            "stamp INTEGER AS (pin_stamp(id)) STORED)",
        "CREATE INDEX items_stamp ON items(stamp)",
        "INSERT INTO items(id, qty) VALUES (1, 10), (2, 20)")
    stamp.value = 2
    run(db, "UPDATE items SET qty = 11 WHERE id = 1")
    assert val(db, "SELECT stamp FROM items NOT INDEXED WHERE id = 1") == 2
    assert q(db, "SELECT id FROM items INDEXED BY items_stamp WHERE stamp = 2") == []
    assert q(db, "SELECT id FROM items INDEXED BY items_stamp WHERE stamp = 1 ORDER BY id") == [
        (1,), (2,)]
    problems = [r[0] for r in q(db, "PRAGMA integrity_check")]
    assert problems != ["ok"] and any("items_stamp" in p for p in problems), problems
    # An UPDATE of a referenced column (the key) does move the entry.
    stamp.value = 3
    run(db, "UPDATE items SET id = 5 WHERE id = 2")
    assert q(db, "SELECT id FROM items INDEXED BY items_stamp WHERE stamp = 3") == [(5,)]


# ---- partial-index WHERE as the delete hook ------------------------------------

@pytest.fixture
def watched(db):
    """items(id, name UNIQUE, ver) with the always-empty partial index the write
    path uses to see deleted rows: its WHERE calls pin_gone(id, ver), which
    records the row and returns 1, so no row is ever indexed. ver tells the old
    row from its replacement. Rows 1..4, ver = 10 * id."""
    gone = Recorder(1)
    register(db, "pin_gone", gone, 2)
    run(db, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE, ver INTEGER)",
        "CREATE INDEX items_gone ON items(id) WHERE pin_gone(id, ver) = 0",
        "INSERT INTO items VALUES (1, 'a', 10), (2, 'b', 20), (3, 'c', 30), (4, 'd', 40)")
    gone.take()
    return db, gone


def test_partial_index_where_sees_every_row_a_delete_removes(watched):
    """Mechanism: deleted rows seen through a partial index. A DELETE with a
    WHERE evaluates the partial index's WHERE for each deleted row, and only
    for those: each tombstone is written once, for the row's last values."""
    db, gone = watched
    run(db, "DELETE FROM items WHERE id IN (2, 4)")
    assert sorted(gone.take()) == [(2, 20), (4, 40)]
    assert q(db, "SELECT id FROM items ORDER BY id") == [(1,), (3,)]
    # The index stays empty and consistent: integrity_check evaluates its WHERE too.
    assert q(db, "PRAGMA integrity_check") == [("ok",)]


@pytest.mark.parametrize("recursive_triggers", [0, 1])
def test_partial_index_where_sees_or_replace_victims(watched, recursive_triggers):
    """Mechanism: deleted rows seen through a partial index. DESIGN's first trap:
    INSERT OR REPLACE deletes the row holding the key, or a different row
    holding a UNIQUE value, and fires no DELETE trigger for it unless
    recursive_triggers is on. SQLite evaluates the partial index's WHERE for
    that victim either way, through the primary key and through a UNIQUE
    constraint."""
    db, gone = watched
    run(db, f"PRAGMA recursive_triggers = {recursive_triggers}")
    assert val(db, "PRAGMA recursive_triggers") == recursive_triggers
    run(db, "INSERT OR REPLACE INTO items VALUES (1, 'a', 11)")
    assert (1, 10) in gone.take()
    run(db, "INSERT OR REPLACE INTO items VALUES (9, 'b', 90)")
    assert (2, 20) in gone.take()
    run(db, "REPLACE INTO items VALUES (3, 'd', 31)")   # both at once: row 3 and row 4
    calls = gone.take()
    assert (3, 30) in calls and (4, 40) in calls
    assert q(db, "SELECT * FROM items ORDER BY id") == [(1, 'a', 11), (3, 'd', 31),
                                                        (9, 'b', 90)]


def test_partial_index_where_sees_victims_of_a_unique_index_created_after_it(watched):
    """Mechanism: deleted rows seen through a partial index. Tracking is set up
    once; an application adds UNIQUE indexes later. An OR REPLACE victim found
    through such an index is seen too (INSERT and UPDATE OR REPLACE), with no
    change to the partial index."""
    db, gone = watched
    run(db, "ALTER TABLE items ADD COLUMN code TEXT",
        "UPDATE items SET code = 'k' || id",
        "CREATE UNIQUE INDEX items_code ON items(code)")
    gone.take()
    run(db, "INSERT OR REPLACE INTO items(id, name, ver, code) VALUES (7, 'g', 70, 'k1')")
    assert (1, 10) in gone.take()
    run(db, "UPDATE OR REPLACE items SET code = 'k3' WHERE id = 2")
    assert (3, 30) in gone.take()
    assert q(db, "SELECT id FROM items ORDER BY id") == [(2,), (4,), (7,)]


def test_partial_index_where_sees_update_or_replace_victims_and_key_changes(watched):
    """Mechanism: deleted rows seen through a partial index. An UPDATE that
    changes the key deletes the old key (DESIGN: a delete plus an insert), and
    UPDATE OR REPLACE deletes the row it collides with: SQLite evaluates the
    WHERE for the old row of a key change and for every victim."""
    db, gone = watched
    run(db, "UPDATE items SET id = 100 WHERE id = 1")
    assert (1, 10) in gone.take()
    run(db, "UPDATE OR REPLACE items SET id = 3 WHERE id = 2")   # key collision
    calls = gone.take()
    assert (2, 20) in calls and (3, 30) in calls
    run(db, "UPDATE OR REPLACE items SET name = 'd' WHERE id = 100")   # UNIQUE collision
    assert (4, 40) in gone.take()
    assert q(db, "SELECT * FROM items ORDER BY id") == [(3, 'b', 20), (100, 'd', 10)]


def test_partial_index_where_sees_foreign_key_cascades(db):
    """Mechanism: deleted rows seen through a partial index. Rows removed by
    ON DELETE CASCADE (no statement names the child table) are seen too,
    including a parent deleted without a WHERE."""
    gone = Recorder(1)
    register(db, "pin_gone", gone, 2)
    run(db, "PRAGMA foreign_keys = ON",
        "CREATE TABLE parent(id INTEGER PRIMARY KEY)",
        "CREATE TABLE child(id INTEGER PRIMARY KEY, "
        "parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE, ver INTEGER)",
        "CREATE INDEX child_gone ON child(id) WHERE pin_gone(id, ver) = 0",
        "INSERT INTO parent VALUES (1), (2)",
        "INSERT INTO child VALUES (1, 1, 10), (2, 1, 20), (3, 2, 30)")
    gone.take()
    run(db, "DELETE FROM parent WHERE id = 1")
    assert sorted(gone.take()) == [(1, 10), (2, 20)]
    run(db, "DELETE FROM parent")
    assert gone.take() == [(3, 30)]
    assert val(db, "SELECT count(*) FROM child") == 0


def test_delete_without_where_skips_the_partial_index_unless_the_table_has_a_trigger(watched):
    """Mechanism: deleted rows seen through a partial index, and its caveat.
    DELETE without a WHERE takes SQLite's truncate shortcut and evaluates
    nothing per row: the deletes go unseen. Any trigger on the table turns the
    shortcut off; the write path's one-line AFTER DELETE ... WHEN 0 trigger,
    which never runs its body, is enough."""
    db, gone = watched
    run(db, "DELETE FROM items")
    assert gone.take() == []
    assert val(db, "SELECT count(*) FROM items") == 0
    run(db, "INSERT INTO items VALUES (1, 'a', 10), (2, 'b', 20)",
        "CREATE TRIGGER items_no_truncate AFTER DELETE ON items WHEN 0 BEGIN SELECT 1; END")
    gone.take()
    run(db, "DELETE FROM items")
    assert sorted(gone.take()) == [(1, 10), (2, 20)]
    assert val(db, "SELECT count(*) FROM items") == 0


def test_delete_without_where_sees_every_row_under_an_authorizer_that_ignores_delete(watched):
    """Mechanism: deleted rows seen through a partial index, the alternative to
    the caveat's trigger: an authorizer that answers SQLITE_IGNORE to
    SQLITE_DELETE still lets the rows go, one by one, through the partial
    index's WHERE."""
    db, gone = watched
    if isinstance(db, apsw.Connection):
        ignore, delete, ok = apsw.SQLITE_IGNORE, apsw.SQLITE_DELETE, apsw.SQLITE_OK
        db.authorizer = lambda action, *args: ignore if action == delete else ok
    else:
        ignore, delete, ok = sqlite3.SQLITE_IGNORE, sqlite3.SQLITE_DELETE, sqlite3.SQLITE_OK
        db.set_authorizer(lambda action, *args: ignore if action == delete else ok)
    run(db, "DELETE FROM items")
    assert sorted(gone.take()) == [(1, 10), (2, 20), (3, 30), (4, 40)]
    assert val(db, "SELECT count(*) FROM items") == 0


# ---- transaction boundaries from an eponymous virtual table ---------------------
#
# The write path's extension registers its virtual table in C. The same
# recording table is implemented twice: in C (tests/fixtures/pin_txvtab.c,
# compiled here, loaded into apsw and into the stdlib sqlite3 module's SQLite)
# and in Python through apsw's virtual-table support, so each call sequence is
# pinned on both hosts and through both ways a table receives the calls (the
# Python one is sqlhelpers.TxModule).

CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


class PythonTx:
    """pin_tx implemented in Python, on apsw."""

    def __init__(self, path):
        self.conn = apsw.Connection(path)
        self.module = TxModule()
        self.conn.create_module("pin_tx", self.module, iVersion=3, eponymous=True,
                                eponymous_only=True)

    def take(self):
        calls = list(self.module.log)
        self.module.log.clear()
        return calls

    def on_sync(self, sql, *, fail=False):
        def flush():
            if sql:
                q(self.conn, sql)
            if fail:
                raise apsw.IOError("flush failed")
        self.module.table.on_sync = flush


class CTx:
    """pin_tx implemented in C (tests/fixtures/pin_txvtab.c), on either host."""

    _auto = None     # ctypes handles of the stdlib host's SQLite and the extension

    def __init__(self, path, host, library):
        if host == "apsw":
            self.conn = apsw.Connection(path)
            self.conn.enable_load_extension(True)
            self.conn.load_extension(library)
        else:
            # The stdlib module cannot load extensions on every Python: register
            # the entry point for new connections in its SQLite, as sqlite-ct's
            # loader does, just for this connection.
            if CTx._auto is None:
                import _sqlite3
                sqlite = ctypes.CDLL(getattr(_sqlite3, "__file__", None))
                mode = ctypes.RTLD_LOCAL | os.RTLD_NOW | os.RTLD_NODELETE
                ext = ctypes.CDLL(library, mode=mode)
                for fn in (sqlite.sqlite3_auto_extension, sqlite.sqlite3_cancel_auto_extension):
                    fn.argtypes, fn.restype = [ctypes.c_void_p], ctypes.c_int
                CTx._auto = (sqlite, ext, ctypes.cast(ext.sqlite3_pintxvtab_init,
                                                      ctypes.c_void_p))
            sqlite, _, entry = CTx._auto
            assert sqlite.sqlite3_auto_extension(entry) == 0
            try:
                self.conn = sqlite3.connect(path, isolation_level=None)
            finally:
                sqlite.sqlite3_cancel_auto_extension(entry)

    def take(self):
        calls = []
        for line in val(self.conn, "SELECT pin_tx_log()").splitlines():
            name, _, arg = line.partition(" ")
            calls.append((name, int(arg)) if arg else (name,))
        return calls

    def on_sync(self, sql, *, fail=False):
        q(self.conn, "SELECT pin_tx_on_sync(?, ?)", (sql, int(fail)))


@pytest.fixture(scope="module")
def pin_txvtab(tmp_path_factory):
    """tests/fixtures/pin_txvtab.c compiled against the system's SQLite headers."""
    if CC is None:
        pytest.skip("no C compiler")
    out = str(tmp_path_factory.mktemp("pin_txvtab") / ("pin_txvtab" + (
        sysconfig.get_config_var("SHLIB_SUFFIX") or ".so")))
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror",
                    os.path.join(FIXTURES, "pin_txvtab.c"), "-o", out],
                   check=True, capture_output=True)
    return out


@pytest.fixture(params=["apsw-python", "apsw-c", "sqlite3-c"])
def vtab(request, tmp_path):
    """A connection with the eponymous-only virtual table pin_tx (savepoint
    methods included), a plain table t, and a table u whose AFTER INSERT
    trigger writes pin_tx, as a tracked table's write reaches the extension's
    table in the write path. Yields the harness: .conn, .take() (the calls
    since the last take), .on_sync(sql, fail=...)."""
    path = str(tmp_path / "vtab.db")
    if request.param == "apsw-python":
        tx = PythonTx(path)
    else:
        tx = CTx(path, request.param.split("-")[0], request.getfixturevalue("pin_txvtab"))
    run(tx.conn, "PRAGMA journal_mode=WAL",
        "CREATE TABLE t(a INTEGER PRIMARY KEY)",
        "CREATE TABLE u(a INTEGER PRIMARY KEY, b UNIQUE)",
        "CREATE TRIGGER u_ai AFTER INSERT ON u BEGIN INSERT INTO pin_tx VALUES (NEW.a); END")
    tx.take()
    try:
        yield tx
    finally:
        tx.conn.close()


def run_each(conn, *statements):
    """Runs the statements, collecting their error messages instead of raising."""
    errors = []
    for sql in statements:
        try:
            q(conn, sql)
        except (apsw.Error, sqlite3.Error) as exc:
            errors.append(str(exc))
    return errors


def in_transaction(conn):
    return (not conn.get_autocommit()) if isinstance(conn, apsw.Connection) \
        else conn.in_transaction


def test_vtab_joins_the_transactions_of_statements_that_may_write_it(vtab):
    """Mechanism: transaction boundaries from a virtual table. SQLite calls the
    table's methods only in transactions with a statement that may write it
    (reads do not join), xBegin once per transaction however many writes, and
    xSync then xCommit at commit, in autocommit mode and in explicit
    transactions alike. xBegin comes at the start of such a statement, before
    and even without any write (INSERT OR IGNORE of an existing row): the write
    path takes its BSN at the first write, not at xBegin, and its xSync and
    xCommit must do nothing for a transaction that wrote nothing. A statement
    with a trigger opens a statement savepoint in an explicit transaction."""
    conn = vtab.conn
    run(conn, "BEGIN", "INSERT INTO t VALUES (1)", "SELECT * FROM pin_tx", "COMMIT")
    assert vtab.take() == []
    run(conn, "INSERT INTO pin_tx VALUES (1)")
    assert vtab.take() == [("Begin",), ("write", 1), ("Sync",), ("Commit",)]
    run(conn, "BEGIN", "INSERT INTO pin_tx VALUES (2)", "INSERT INTO t VALUES (2)",
        "INSERT INTO u VALUES (3, 3)", "COMMIT")
    assert vtab.take() == [("Begin",), ("write", 2), ("Savepoint", 0), ("write", 3),
                           ("Release", 0), ("Sync",), ("Commit",)]
    run(conn, "INSERT INTO u VALUES (4, 4)")
    assert vtab.take() == [("Begin",), ("write", 4), ("Sync",), ("Commit",)]
    run(conn, "INSERT OR IGNORE INTO u VALUES (4, 4)")
    assert vtab.take() == [("Begin",), ("Sync",), ("Commit",)]
    run(conn, "UPDATE u SET b = 5 WHERE a = 4")
    assert vtab.take() == []


def test_vtab_rollback_and_a_failed_autocommit_statement_call_xrollback(vtab):
    """Mechanism: transaction boundaries from a virtual table. Invariant 4: the
    BSN a rolled-back transaction took is dropped at xRollback, whether the
    application rolls back or an autocommit statement fails after its trigger
    wrote the table; xSync and xCommit are not called."""
    conn = vtab.conn
    run(conn, "INSERT INTO u VALUES (1, 1)")
    vtab.take()
    run(conn, "BEGIN", "INSERT INTO pin_tx VALUES (5)", "ROLLBACK")
    assert vtab.take() == [("Begin",), ("write", 5), ("Rollback",)]
    assert run_each(conn, "INSERT INTO u VALUES (2, 2), (3, 1)") == [
        "UNIQUE constraint failed: u.b"]
    assert vtab.take() == [("Begin",), ("write", 2), ("Rollback",)]
    assert q(conn, "SELECT a FROM u") == [(1,)]


def test_vtab_failed_statement_inside_a_transaction_calls_xrollbackto(vtab):
    """Mechanism: transaction boundaries from a virtual table. Invariant 4: a
    statement that fails inside a transaction (constraint error, RAISE(ABORT)
    in a user trigger) is undone by its statement savepoint, which SQLite
    reports as xSavepoint(0) at its start and xRollbackTo(0), xRelease(0) at
    its end -- both when the table joined the transaction earlier and when the
    failing statement is what joined it. The transaction goes on and commits
    with xSync, xCommit; a statement that fails in autocommit mode gets
    xRollback."""
    conn = vtab.conn
    # Joined earlier: a later multi-row statement opens a statement savepoint.
    errors = run_each(conn, "BEGIN", "INSERT INTO pin_tx VALUES (1)",
                      "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2), (1)", "COMMIT")
    assert errors == ["UNIQUE constraint failed: t.a"]
    assert vtab.take() == [("Begin",), ("write", 1), ("Savepoint", 0), ("RollbackTo", 0),
                           ("Release", 0), ("Sync",), ("Commit",)]
    # Joined by the failing statement, whose trigger wrote rows 5 and 6.
    errors = run_each(conn, "BEGIN", "INSERT INTO u VALUES (5, 5), (6, 6), (7, 5)",
                      "INSERT INTO u VALUES (8, 8)", "COMMIT")
    assert errors == ["UNIQUE constraint failed: u.b"]
    assert vtab.take() == [("Begin",), ("Savepoint", 0), ("write", 5), ("write", 6),
                           ("RollbackTo", 0), ("Release", 0),
                           ("Savepoint", 0), ("write", 8), ("Release", 0),
                           ("Sync",), ("Commit",)]
    # RAISE(ABORT) in a user trigger, after its write.
    run(conn, "CREATE TABLE w(a INTEGER PRIMARY KEY)",
        "CREATE TRIGGER w_ai AFTER INSERT ON w BEGIN INSERT INTO pin_tx VALUES (NEW.a); "
        "SELECT RAISE(ABORT, 'refused') WHERE NEW.a = 13; END")
    errors = run_each(conn, "BEGIN", "INSERT INTO w VALUES (12)", "INSERT INTO w VALUES (13)",
                      "COMMIT")
    assert errors == ["refused"]
    assert vtab.take() == [("Begin",), ("Savepoint", 0), ("write", 12), ("Release", 0),
                           ("Savepoint", 0), ("write", 13), ("RollbackTo", 0),
                           ("Release", 0), ("Sync",), ("Commit",)]
    assert run_each(conn, "INSERT INTO w VALUES (13)") == ["refused"]
    assert vtab.take() == [("Begin",), ("write", 13), ("Rollback",)]
    assert q(conn, "SELECT a FROM u ORDER BY a") == [(8,)]
    assert q(conn, "SELECT a FROM w ORDER BY a") == [(12,)]


def test_vtab_savepoints_rollback_to_and_release(vtab):
    """Mechanism: transaction boundaries from a virtual table. ORMs nest
    savepoints; the write path must drop exactly the work of a rolled-back
    savepoint. Pinned: the levels SQLite passes (0 for the outermost named
    savepoint inside BEGIN, one more per nesting), ROLLBACK TO keeping the
    savepoint open, RELEASE, and the two cases a design must not get wrong: a
    ROLLBACK TO of a SAVEPOINT that began the transaction arrives as
    xRollbackTo(-1) with no xSavepoint before it, and a table that joins while
    savepoints are open is told only the innermost level, yet later gets
    xRollbackTo of an outer one."""
    conn = vtab.conn
    run(conn, "BEGIN", "SAVEPOINT a", "INSERT INTO pin_tx VALUES (1)",
        "SAVEPOINT b", "INSERT INTO pin_tx VALUES (2)", "ROLLBACK TO b",
        "INSERT INTO pin_tx VALUES (3)", "RELEASE b", "ROLLBACK TO a",
        "INSERT INTO pin_tx VALUES (4)", "RELEASE a", "COMMIT")
    assert vtab.take() == [("Begin",), ("Savepoint", 0), ("write", 1), ("Savepoint", 1),
                           ("write", 2), ("RollbackTo", 1), ("write", 3), ("Release", 1),
                           ("RollbackTo", 0), ("write", 4), ("Release", 0),
                           ("Sync",), ("Commit",)]
    # A SAVEPOINT outside a transaction begins it: its level is -1.
    run(conn, "SAVEPOINT outer_tx", "INSERT INTO pin_tx VALUES (5)", "ROLLBACK TO outer_tx",
        "INSERT INTO pin_tx VALUES (6)", "RELEASE outer_tx")
    assert vtab.take() == [("Begin",), ("write", 5), ("RollbackTo", -1), ("write", 6),
                           ("Sync",), ("Commit",)]
    # Joining under two open savepoints: told level 1 only.
    run(conn, "BEGIN", "SAVEPOINT a", "SAVEPOINT b", "INSERT INTO pin_tx VALUES (7)",
        "RELEASE b", "ROLLBACK TO a", "COMMIT")
    assert vtab.take() == [("Begin",), ("Savepoint", 1), ("write", 7), ("Release", 1),
                           ("RollbackTo", 0), ("Sync",), ("Commit",)]


def test_vtab_xsync_may_write_and_its_writes_commit_with_the_transaction(vtab, tmp_path):
    """Mechanism: transaction boundaries from a virtual table. The write path
    buffers changed keys in memory and writes them to its change log at xSync:
    SQLite allows nested writes there, they see the transaction's own rows and
    belong to the committing transaction (another connection sees them when
    it sees the transaction's rows), and a transaction that rolls back never
    reaches xSync."""
    conn = vtab.conn
    run(conn, "CREATE TABLE flushed(rows_in_t INTEGER)")
    vtab.on_sync("INSERT INTO flushed SELECT count(*) FROM t")
    other = apsw.Connection(str(tmp_path / "vtab.db"))
    try:
        run(conn, "BEGIN", "INSERT INTO pin_tx VALUES (1)", "INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (2)", "INSERT INTO pin_tx VALUES (2)")
        assert q(other, "SELECT count(*) FROM flushed") == [(0,)]
        run(conn, "COMMIT")
        assert vtab.take() == [("Begin",), ("write", 1), ("write", 2), ("Sync",),
                               ("Commit",)]
        assert q(other, "SELECT rows_in_t FROM flushed") == [(2,)]
        assert q(other, "SELECT a FROM t") == [(1,), (2,)]
        run(conn, "BEGIN", "INSERT INTO pin_tx VALUES (3)", "ROLLBACK")
        assert vtab.take() == [("Begin",), ("write", 3), ("Rollback",)]
        assert q(other, "SELECT rows_in_t FROM flushed") == [(2,)]
    finally:
        other.close()


def test_vtab_an_error_in_xsync_rolls_the_whole_transaction_back(vtab):
    """Mechanism: transaction boundaries from a virtual table. If the write
    path's flush at xSync fails (disk full, a constraint in its log), the
    commit must fail loudly and leave nothing behind: SQLite makes COMMIT raise
    the error, rolls back the transaction -- its rows and whatever xSync had
    written -- and calls xRollback, so no row is ever committed without its
    change record."""
    conn = vtab.conn
    run(conn, "CREATE TABLE flushed(n INTEGER)")
    vtab.on_sync("INSERT INTO flushed VALUES (1)", fail=True)
    errors = run_each(conn, "BEGIN", "INSERT INTO t VALUES (1)", "INSERT INTO pin_tx VALUES (1)",
                      "COMMIT")
    assert errors == ["flush failed"]
    assert vtab.take() == [("Begin",), ("write", 1), ("Sync",), ("Rollback",)]
    assert not in_transaction(conn)
    assert q(conn, "SELECT count(*) FROM t") == [(0,)]
    assert q(conn, "SELECT count(*) FROM flushed") == [(0,)]


# ---- what the functions must be declared as ------------------------------------

def test_generated_columns_and_partial_indexes_refuse_functions_not_declared_deterministic(db):
    """Mechanisms: STORED generated stamps and the partial-index delete hook.
    The extension's functions have side effects and a value that changes
    between transactions, yet must be registered SQLITE_DETERMINISTIC: SQLite
    refuses any other in both places when the schema is created."""
    if isinstance(db, apsw.Connection):
        db.create_scalar_function("pin_plain", lambda *args: 1, -1)
    else:
        db.create_function("pin_plain", -1, lambda *args: 1)
    error = host_error(db)
    with pytest.raises(error, match="non-deterministic functions prohibited in generated columns"):
        run(db, "CREATE TABLE g(id INTEGER PRIMARY KEY, s INTEGER AS (pin_plain(id)) STORED)")
    run(db, "CREATE TABLE p(id INTEGER PRIMARY KEY, v INTEGER)")
    with pytest.raises(error, match="non-deterministic functions prohibited in partial index "
                                    "WHERE clauses"):
        run(db, "CREATE INDEX p_gone ON p(id) WHERE pin_plain(id, v) = 0")


def test_under_trusted_schema_off_generated_columns_and_partial_indexes_need_innocuous(tmp_path):
    """Mechanisms: STORED generated stamps and the partial-index delete hook,
    under DESIGN's trap `PRAGMA trusted_schema=OFF`: an application that turns
    it off must still be able to write tracked tables, which SQLite allows only
    for functions registered SQLITE_INNOCUOUS; any other is refused at the
    write ("unsafe use of"), never skipped. (apsw only: stdlib sqlite3 cannot
    register a function as innocuous.)"""
    conn = apsw.Connection(str(tmp_path / "trusted.db"))
    try:
        conn.create_scalar_function("pin_inn", lambda *args: 1, -1, deterministic=True,
                                    flags=apsw.SQLITE_INNOCUOUS)
        conn.create_scalar_function("pin_det", lambda *args: 1, -1, deterministic=True)
        run(conn, "CREATE TABLE good(id INTEGER PRIMARY KEY, v INTEGER, "
                  "s INTEGER AS (pin_inn(id)) STORED)",
            "CREATE INDEX good_gone ON good(id) WHERE pin_inn(id, v) = 0",
            "CREATE TABLE bad(id INTEGER PRIMARY KEY, s INTEGER AS (pin_det(id)) STORED)",
            "CREATE TABLE bad_gone(id INTEGER PRIMARY KEY, v INTEGER)",
            "CREATE INDEX bad_gone_i ON bad_gone(id) WHERE pin_det(id, v) = 0",
            "INSERT INTO bad_gone VALUES (1, 1)",
            "PRAGMA trusted_schema = OFF")
        run(conn, "INSERT INTO good(id, v) VALUES (1, 1)", "UPDATE good SET v = 2",
            "DELETE FROM good WHERE id = 1")
        with pytest.raises(apsw.SQLError, match=r"unsafe use of pin_det\(\)"):
            run(conn, "INSERT INTO bad(id) VALUES (1)")
        with pytest.raises(apsw.SQLError, match=r"unsafe use of pin_det\(\)"):
            run(conn, "DELETE FROM bad_gone WHERE id = 1")
        assert q(conn, "SELECT count(*) FROM bad_gone") == [(1,)]
    finally:
        conn.close()
