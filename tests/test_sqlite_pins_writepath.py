"""SQLite behaviours the write path of layout 4 relies on that SQLite does not
promise in its documentation (csrc/schema.c, ctTriggerSql; csrc/state.c,
ctRunFix). Plain SQLite through apsw, no sqlite-ct: if a SQLite release
changes one of them, this file says which."""
import apsw
import pytest


@pytest.fixture
def db(tmp_path):
    conn = apsw.Connection(str(tmp_path / "pins.db"))
    try:
        yield conn
    finally:
        conn.close()


def largest_allocation(conn, sql):
    """The largest single allocation SQLite made while sql ran."""
    apsw.status(apsw.SQLITE_STATUS_MALLOC_SIZE, True)
    conn.execute(sql)
    return apsw.status(apsw.SQLITE_STATUS_MALLOC_SIZE)[1]


def test_a_trigger_frame_is_sized_by_its_whole_program_even_when_its_when_is_false(db):
    """Why the AFTER INSERT trigger's body is empty: SQLite allocates (and
    clears) a frame for the trigger program on every execution of the
    statement, sized by the registers of the whole program, before the WHEN
    is evaluated. A big body behind a false WHEN costs every insert."""
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v); CREATE TABLE log(a, b, c, d)")
    body = ";".join("INSERT INTO log SELECT NEW.id, NEW.v, (SELECT max(a) FROM log),"
                    " (SELECT count(*) FROM t WHERE v = NEW.v)" for _ in range(20))
    db.execute(f"CREATE TRIGGER big AFTER INSERT ON t WHEN 0 BEGIN {body}; END")
    db.execute("INSERT INTO t VALUES (1, 'a')")       # schema loaded, statement cached
    big = largest_allocation(db, "INSERT INTO t VALUES (2, 'b')")
    db.execute("DROP TRIGGER big; CREATE TRIGGER small AFTER INSERT ON t WHEN 0"
               " BEGIN SELECT 1; END")
    db.execute("INSERT INTO t VALUES (3, 'c')")
    small = largest_allocation(db, "INSERT INTO t VALUES (4, 'd')")
    assert db.execute("SELECT count(*) FROM log").get == 0
    assert big > 4 * small and big > 8000, (big, small)


def test_a_function_in_a_trigger_when_may_write_the_same_table(db):
    """ctRunFix: statements prepared and stepped inside a function that an
    AFTER INSERT trigger's WHEN calls update the row the outer INSERT just
    wrote and insert elsewhere. The outer statement goes on to its next row;
    a later failure of the outer statement undoes the nested writes (the
    statement journal covers them); and the nested statements' inserts do not
    leak into last_insert_rowid()."""
    db.execute("""
        CREATE TABLE t(id INTEGER PRIMARY KEY, v, stamp);
        CREATE TABLE side(x INTEGER PRIMARY KEY);
        CREATE TRIGGER no_nines AFTER INSERT ON t WHEN NEW.id = 9
          BEGIN SELECT RAISE(ABORT, 'no nines'); END;
        CREATE TRIGGER ai AFTER INSERT ON t WHEN needs_fix(NEW.id) BEGIN SELECT 1; END;
    """)

    def needs_fix(rowid):
        if rowid % 2:
            db.execute("UPDATE main.t SET stamp = 'fixed' WHERE id = ?", (rowid,))
            db.execute("INSERT INTO main.side VALUES (?)", (rowid * 100,))
        return 0

    db.create_scalar_function("needs_fix", needs_fix, 1)
    db.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    assert db.execute("SELECT id, stamp FROM t").get == [(1, "fixed"), (2, None), (3, "fixed")]
    assert db.execute("SELECT last_insert_rowid()").get == 3
    with pytest.raises(apsw.ConstraintError, match="no nines"):
        db.execute("INSERT INTO t(id, v) VALUES (5, 'e'), (9, 'i')")
    assert db.execute("SELECT count(*) FROM t WHERE id IN (5, 9)").get == 0
    assert db.execute("SELECT x FROM side ORDER BY x").get == [100, 300]


def test_rename_moves_the_tables_triggers_but_keeps_their_names(db):
    """The fix finds a renamed table, until sqlite-ct follows the rename,
    through its AFTER INSERT trigger: the trigger keeps its name, and its
    tbl_name in sqlite_schema becomes the new name."""
    db.execute("""
        CREATE TABLE t(id INTEGER PRIMARY KEY);
        CREATE TRIGGER "__sysct_ai_t" AFTER INSERT ON t BEGIN SELECT 1; END;
        ALTER TABLE t RENAME TO r;
    """)
    assert db.execute("SELECT tbl_name FROM sqlite_schema WHERE type='trigger'"
                      " AND name='__sysct_ai_t'").get == "r"


class _TxnTable:
    """A virtual table that records what SQLite tells it of the transaction."""

    def __init__(self, events):
        self.events = events

    def BestIndex(self, *args):
        return None

    def Open(self):
        return _EmptyCursor()

    def Disconnect(self):
        pass

    Destroy = Disconnect

    def UpdateInsertRow(self, rowid, fields):
        self.events.append("insert")
        return 1

    def Begin(self):
        self.events.append("begin")

    def Sync(self):
        pass

    def Commit(self):
        self.events.append("commit")

    def Rollback(self):
        self.events.append("rollback")

    def Savepoint(self, level):
        self.events.append(f"savepoint {level}")

    def Release(self, level):
        self.events.append(f"release {level}")

    def RollbackTo(self, level):
        self.events.append(f"rollbackto {level}")


class _EmptyCursor:
    def Filter(self, *args):
        pass

    def Eof(self):
        return True

    def Close(self):
        pass


class _TxnModule:
    def __init__(self, events):
        self.events = events

    def Create(self, db, modulename, dbname, tablename, *args):
        return "CREATE TABLE x(v)", _TxnTable(self.events)

    Connect = Create


def test_an_enlisted_virtual_table_is_told_every_savepoint_of_the_transaction(db):
    """csrc/txn.c: a row inserted into an eponymous virtual table (iVersion 2)
    by a statement nested in a function that a trigger calls enlists the table
    in the transaction; SQLite then reports the savepoint open at that moment
    (the statement's own, in an explicit transaction), rolls it back when the
    statement fails, and reports SAVEPOINT, ROLLBACK TO, RELEASE, COMMIT and
    ROLLBACK, with their nesting level."""
    events = []
    db.create_module("txn", _TxnModule(events), iVersion=2, eponymous=True)
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v NOT NULL)"
               "; CREATE TRIGGER ai AFTER INSERT ON t WHEN enlist(NEW.id) BEGIN SELECT 1; END")

    def enlist(rowid):
        events.append(f"enlist {rowid}")
        db.execute("INSERT INTO main.txn VALUES (NULL)")
        return 0

    db.create_scalar_function("enlist", enlist, 1)
    db.execute("BEGIN")
    with pytest.raises(apsw.ConstraintError):
        db.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, NULL)")
    assert events == ["enlist 1", "begin", "savepoint 0", "insert", "rollbackto 0",
                      "release 0"], events
    events.clear()
    db.execute("SAVEPOINT a; SAVEPOINT b; INSERT INTO t(id, v) VALUES (3, 'c');"
               " RELEASE b; ROLLBACK TO a; RELEASE a; COMMIT")
    assert events == ["savepoint 0", "savepoint 1", "savepoint 2", "enlist 3", "insert",
                      "release 2", "release 1", "rollbackto 0", "release 0", "commit"], events
    events.clear()
    db.execute("BEGIN; INSERT INTO t(id, v) VALUES (4, 'd'); ROLLBACK")
    assert events == ["enlist 4", "begin", "savepoint 0", "insert", "release 0", "rollback"], \
        events
