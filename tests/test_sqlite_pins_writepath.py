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
