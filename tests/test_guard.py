"""The guard of a native-mode table (layout 3): writes with triggers turned off.

A connection that turns triggers off (SQLITE_DBCONFIG_ENABLE_TRIGGER=0, the
shell's `.dbconfig enable_trigger off`) skips sqlite-ct's triggers. Every
native-mode table therefore has an always-empty partial index whose key
columns are every column (COLLATE BINARY) and whose WHERE calls
sqlite_ct_guard(): SQLite evaluates it for every row an INSERT writes or a
DELETE removes and for every row an UPDATE of any indexed column writes,
triggers or not. Without the extension that fails ("unknown function"); with
it, sqlite_ct_guard() refuses the write while triggers are off. Every column
being indexed, incremental blob writes (sqlite3_blob_open for writing) are
refused too. These tests pin each SQLite behaviour the guard relies on, and
the limits: DELETE without WHERE (SQLite's truncate shortcut skips the
index), columns added after create_schema() until it runs again, portable
mode.
"""
import os
import shutil
import sqlite3
import subprocess
import sys

import apsw
import pytest

import sqlite_ct
from sqlhelpers import HOST_ERRORS, q, run, val

GUARD_OFF = ('sqlite-ct: triggers are turned off on this connection '
             '(SQLITE_DBCONFIG_ENABLE_TRIGGER=0, the shell\'s .dbconfig enable_trigger off), '
             'so this write to tracked table "t" would not be tracked; turn triggers back on '
             'to write to it')
NO_EXTENSION = "unknown function: sqlite_ct_guard()"

WRITES = [
    "INSERT INTO t(id, v, u) VALUES (9, 'new', 'n')",
    "UPDATE t SET v = 'changed' WHERE id = 1",
    "UPDATE t SET u = 'changed' WHERE id = 1",
    "UPDATE t SET id = 7 WHERE id = 1",
    'UPDATE t SET "__sysChangeTxBsn" = 99 WHERE id = 1',
    "DELETE FROM t WHERE id = 1",
    "INSERT OR REPLACE INTO t(id, v, u) VALUES (1, 'replaced', 'x')",
    "INSERT OR REPLACE INTO t(id, v, u) VALUES (5, 'victim by u', 'y')",
    "UPDATE OR REPLACE t SET u = 'y' WHERE id = 1",
    "INSERT INTO t(id, v, u) VALUES (1, 'upsert', 'x') ON CONFLICT(id) DO UPDATE SET v = excluded.v",
]


@pytest.fixture
def tracked(db_path):
    """A native-mode table "t" with two rows, written and closed by a connection
    with the extension; returns the database path."""
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, u TEXT UNIQUE)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, v, u) VALUES (1, 'a', 'x'), (2, 'b', 'y')")
    conn.close()
    return db_path


def snapshot(path):
    conn = apsw.Connection(path)
    try:
        return (q(conn, "SELECT * FROM t ORDER BY 1, 2"),
                q(conn, "SELECT count(*) FROM __sysOCSDeletedRows"),
                q(conn, "SELECT count(*) FROM __sysTxCommitSequence"))
    finally:
        conn.close()


def plain(path, *, triggers):
    """An apsw connection without sqlite-ct (apsw's SQLite never has it)."""
    conn = apsw.Connection(path)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 1 if triggers else 0)
    return conn


# ------------------------------------------ without the extension, triggers off

@pytest.mark.parametrize("statement", WRITES)
def test_without_the_extension_triggers_off_every_write_fails(tracked, statement):
    before = snapshot(tracked)
    conn = plain(tracked, triggers=False)
    with pytest.raises(apsw.SQLError) as err:
        conn.execute(statement)
    assert str(err.value) == NO_EXTENSION
    conn.close()
    assert snapshot(tracked) == before


@pytest.mark.parametrize("statement", WRITES)
def test_without_the_extension_triggers_on_every_write_fails(tracked, statement):
    before = snapshot(tracked)
    conn = plain(tracked, triggers=True)
    with pytest.raises(apsw.SQLError, match="function: sqlite_ct_"):
        conn.execute(statement)
    conn.close()
    assert snapshot(tracked) == before


SHELL = shutil.which("sqlite3")


@pytest.mark.skipif(SHELL is None, reason="the sqlite3 shell is not installed")
@pytest.mark.parametrize("statement", [WRITES[0], WRITES[1], WRITES[5], WRITES[7]])
def test_the_shell_with_enable_trigger_off(tracked, statement):
    before = snapshot(tracked)
    # errors="replace": the 3.40 shell follows the message with "error here"
    # context read at the function's offset in the index's SQL, which can lie
    # past the end of the shorter statement (bytes of its heap).
    out = subprocess.run([SHELL, tracked], input=f".dbconfig enable_trigger off\n{statement};\n",
                         capture_output=True, text=True, errors="replace")
    assert "enable_trigger off" in out.stdout
    assert "sqlite_ct_guard" in out.stderr
    assert snapshot(tracked) == before


STDLIB_NO_EXTENSION = r"""
import ctypes, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
# Python 3.12+ has Connection.setconfig(); before it, the stdlib's own SQLite
# library is driven through ctypes (pysqlite_Connection: PyObject_HEAD, then
# the sqlite3* handle).
if hasattr(conn, "setconfig"):
    conn.setconfig(sqlite3.SQLITE_DBCONFIG_ENABLE_TRIGGER, False)
else:
    import _sqlite3
    lib = ctypes.CDLL(_sqlite3.__file__)
    handle = ctypes.c_void_p.from_address(id(conn) + 2 * ctypes.sizeof(ctypes.c_void_p))
    on = ctypes.c_int(-1)
    lib.sqlite3_db_config.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_int)]
    assert lib.sqlite3_db_config(handle, 1003, 0, ctypes.byref(on)) == 0 and on.value == 0
try:
    conn.execute(sys.argv[2])
except sqlite3.Error as exc:
    print("refused:", exc)
else:
    print("accepted")
"""


@pytest.mark.parametrize("statement", [WRITES[0], WRITES[1], WRITES[5], WRITES[6]])
def test_stdlib_sqlite3_without_the_extension_triggers_off(tracked, statement):
    """In a fresh process: this one registers sqlite-ct as an auto-extension
    of the stdlib's SQLite for other tests."""
    before = snapshot(tracked)
    out = subprocess.run([sys.executable, "-c", STDLIB_NO_EXTENSION, tracked, statement],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() in (f"refused: {NO_EXTENSION}",
                                  "refused: no such function: sqlite_ct_guard")
    assert snapshot(tracked) == before


# -------------------------------------------------- with the extension, triggers off

@pytest.mark.parametrize("statement", WRITES)
def test_with_the_extension_triggers_off_every_write_is_refused(tracked, statement):
    before = snapshot(tracked)
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    with pytest.raises(apsw.ConstraintError) as err:
        conn.execute(statement)
    assert str(err.value) == GUARD_OFF
    # triggers back on: the same write goes through, tracked
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 1)
    if "__sysChangeTxBsn" not in statement:
        conn.execute(statement)
        assert sqlite_ct.check(conn) == []
    conn.close()
    if "__sysChangeTxBsn" not in statement:
        assert snapshot(tracked) != before


def test_the_guard_stays_empty_and_costs_no_rows(apsw_conn):
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    run(apsw_conn, "INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b')",
        "UPDATE t SET v = 'c'", "DELETE FROM t WHERE id = 2")
    assert q(apsw_conn, "SELECT sum(ncell) FROM dbstat WHERE name = '__sysct_guard_t'") == [
        (0,)]
    assert q(apsw_conn, "PRAGMA integrity_check") == [("ok",)]


# ------------------------------------------------ SQLite behaviours the guard needs

def recording_connection(path):
    """A connection whose sqlite_ct_guard counts how often SQLite evaluates it."""
    conn = apsw.Connection(path)
    calls = []

    def guard(*args):
        calls.append(args)
        return 1
    conn.create_scalar_function("sqlite_ct_guard", guard, -1, deterministic=True)
    return conn, calls


def guard(columns, table="t"):
    """The guard's shape (csrc/schema.c, ctGuardSql): every column a key
    column, the call alone in the WHERE."""
    keys = ", ".join(f'"{c}" COLLATE BINARY' for c in columns.split(", "))
    return f"CREATE INDEX g ON {table}({keys}) WHERE sqlite_ct_guard('{table}')=0"


@pytest.mark.parametrize("statement, rows", [
    ("INSERT INTO t VALUES (3, 'c', 'z')", 1),
    ("INSERT INTO t VALUES (3, 'c', 'z'), (4, 'd', 'w')", 2),
    ("UPDATE t SET a = 'q' WHERE id = 1", 1),
    ("UPDATE t SET b = 'q' WHERE id = 1", 1),
    ("UPDATE t SET id = 5 WHERE id = 1", 1),
    ("UPDATE t SET a = 'q'", 2),
    ("UPDATE t SET a = 'q' WHERE 0", 0),
    ("DELETE FROM t WHERE id = 2", 1),
    ("DELETE FROM t WHERE 1", 2),
    # OR REPLACE victims, through the key and through a UNIQUE index
    ("INSERT OR REPLACE INTO t VALUES (2, 'r', 'r')", 2),
    ("INSERT OR REPLACE INTO t VALUES (7, 'r', 'y')", 2),
    ("UPDATE OR REPLACE t SET b = 'y' WHERE id = 1", 2),
    ("INSERT INTO t VALUES (1, 'u', 'x') ON CONFLICT(id) DO UPDATE SET a = excluded.a", 1),
    # DELETE without WHERE on a table without triggers: the truncate shortcut
    ("DELETE FROM t", 0),
])
def test_sqlite_evaluates_a_partial_index_where_for_every_written_row(db_path, statement,
                                                                       rows):
    """`rows`: how many rows the statement writes or removes. SQLite evaluates
    the WHERE when there is at least one; since sqlite_ct_guard('t') is a
    deterministic call with constant arguments, once per statement and code
    path at most (it keeps the value), so an error stops the statement at its
    first row."""
    conn, calls = recording_connection(db_path)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT UNIQUE)",
        "INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y')", guard("id, a, b"))
    calls.clear()
    conn.execute(statement)
    assert (len(calls) > 0) == (rows > 0)
    assert set(calls) <= {("t",)}


def test_sqlite_skips_the_where_for_an_update_of_a_column_it_does_not_index(db_path):
    """Why the guard indexes every column, and why an added column is
    unguarded until create_schema() extends it."""
    conn, calls = recording_connection(db_path)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT)",
        "INSERT INTO t VALUES (1, 'a', 'x')", guard("id, a"))
    calls.clear()
    conn.execute("UPDATE t SET b = 'q'")
    assert calls == []
    conn.execute("UPDATE t SET a = 'q'")
    assert len(calls) > 0


def test_sqlite_evaluates_the_where_for_an_update_of_the_rowid(db_path):
    conn, calls = recording_connection(db_path)
    run(conn, "CREATE TABLE t(k TEXT PRIMARY KEY, a TEXT)",
        "INSERT INTO t VALUES ('k', 'a')", guard("k, a"))
    calls.clear()
    conn.execute("UPDATE t SET rowid = 9")
    assert len(calls) > 0


@pytest.mark.parametrize("column", ["id", "a", "b", "c"])
def test_sqlite_evaluates_the_where_for_an_update_of_any_key_column(db_path, column):
    """First, middle and last key column alike."""
    conn, calls = recording_connection(db_path)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT, c TEXT)",
        "INSERT INTO t VALUES (1, 'a', 'b', 'c')", guard("id, a, b, c"))
    calls.clear()
    conn.execute(f"UPDATE t SET {column} = 2")
    assert len(calls) > 0


def test_sqlite_evaluates_the_where_before_it_builds_the_key(db_path):
    """A false WHERE leaves the key unbuilt: a key expression is never
    evaluated, so indexing every column costs no read of them (the cost
    measured in benchmarks/README.md)."""
    conn, calls = recording_connection(db_path)
    seen = []
    conn.create_scalar_function("probe", lambda *a: seen.append(a) or 1, -1,
                                deterministic=True)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT)",
        "CREATE INDEX g ON t(id, probe(id, a)) WHERE sqlite_ct_guard('t')=0",
        "INSERT INTO t VALUES (1, 'a')", "UPDATE t SET a = 'b'", "DELETE FROM t WHERE 1")
    assert len(calls) >= 3 and seen == []


def test_sqlite_refuses_blob_writes_to_indexed_columns_only(db_path):
    """sqlite3_blob_open() for writing checks the key columns of the table's
    indexes, not what a partial index's WHERE names: why the guard's columns
    are key columns. Reading is allowed."""
    conn, _ = recording_connection(db_path)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, a BLOB, b BLOB)",
        "INSERT INTO t VALUES (1, x'00', x'00')",
        "CREATE INDEX g ON t(id) WHERE sqlite_ct_guard('t')=0 AND b IS NULL")
    conn.blob_open("main", "t", "b", 1, True).close()
    run(conn, "DROP INDEX g", guard("id, a"))
    with pytest.raises(apsw.SQLError, match="cannot open indexed column for writing"):
        conn.blob_open("main", "t", "a", 1, True)
    assert conn.blob_open("main", "t", "a", 1, False).read() == b"\x00"
    conn.blob_open("main", "t", "b", 1, True).close()


WIDE_ARGS = "SELECT coalesce(" + ", ".join(["NULL"] * 127) + ", 1)"


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="no Debian python3")
def test_sqlite_before_348_allows_127_function_arguments():
    """Why no function call names the columns: SQLite 3.40 (Debian's) refuses
    128 arguments, and refuses to load a schema whose index does that."""
    out = subprocess.run(["/usr/bin/python3", "-c", "import sqlite3, sys\n"
                          "try: sqlite3.connect(':memory:').execute(sys.argv[1])\n"
                          "except sqlite3.Error as e: print(sqlite3.sqlite_version, e)",
                          WIDE_ARGS], capture_output=True, text=True, check=True)
    version = tuple(int(x) for x in out.stdout.split()[0].split(".")) if out.stdout else None
    if version is None:
        pytest.skip("this Debian python3's SQLite takes more than 127 arguments")
    assert version < (3, 48)
    assert out.stdout.split(" ", 1)[1].strip() == "too many arguments on function coalesce"


def test_sqlite_evaluates_the_where_for_foreign_key_cascades(db_path):
    conn, calls = recording_connection(db_path)
    run(conn, "PRAGMA foreign_keys=ON",
        "CREATE TABLE p(id INTEGER PRIMARY KEY)",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, p INTEGER REFERENCES p ON DELETE CASCADE)",
        "INSERT INTO p VALUES (1)", "INSERT INTO t VALUES (10, 1), (11, 1)",
        guard("id, p"))
    calls.clear()
    conn.execute("DELETE FROM p")
    assert len(calls) > 0


def test_sqlite_refuses_a_schema_whose_partial_index_calls_a_nondeterministic_function(
        db_path):
    """Why sqlite_ct_guard is registered SQLITE_DETERMINISTIC."""
    conn, _ = recording_connection(db_path)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT)", guard("id, a"))
    conn.close()
    other = apsw.Connection(db_path)
    other.create_scalar_function("sqlite_ct_guard", lambda *a: 1, -1, deterministic=False)
    with pytest.raises(apsw.CorruptError, match="non-deterministic functions prohibited"):
        other.execute("SELECT * FROM t")


# ------------------------------------------------------------------------ limits

def test_delete_without_where_and_triggers_off_is_a_documented_limit(tracked):
    """SQLite clears a table without evaluating its indexes' WHERE when a
    DELETE has no WHERE and no trigger or foreign key needs the rows: with
    triggers turned off, the guard is skipped (README "Known limits")."""
    conn = plain(tracked, triggers=False)
    conn.execute("DELETE FROM t")
    assert conn.changes() == 2
    conn.close()
    assert snapshot(tracked)[:2] == ([], [(0,)])


def test_a_column_added_later_is_guarded_once_create_schema_runs_again(tracked):
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    run(conn, "ALTER TABLE t ADD COLUMN w INTEGER")
    assert [(p.code, p.message) for p in sqlite_ct.check(conn)] == [(
        "guard-outdated",
        'sqlite-ct: index "__sysct_guard_t" does not name column(s) w (added after '
        'create_schema()); a connection with triggers turned off can update them untracked; '
        'create_schema(conn, "t") extends it')]
    # The limit (README): until then, an update that sets only the new column
    # passes on a connection without the extension and with triggers off.
    other = plain(tracked, triggers=False)
    other.execute("UPDATE t SET w = 1 WHERE id = 1")
    with pytest.raises(apsw.SQLError, match="sqlite_ct_guard"):
        other.execute("UPDATE t SET w = 2, v = 'v' WHERE id = 1")
    # Re-arming extends the guard, keeps the anchors valid (no write was lost
    # to the triggers) and the write is refused from then on.
    since = sqlite_ct.last_committed_csn(conn)
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.check(conn) == []
    sqlite_ct.enumerate_changes(conn, "t", since)
    with pytest.raises(apsw.SQLError, match="sqlite_ct_guard"):
        other.execute("UPDATE t SET w = 3 WHERE id = 1")
    other.close()
    conn.close()


def test_drop_column_needs_the_guard_dropped_first(tracked):
    """The guard names every column, so SQLite refuses to drop one; dropping
    the guard, the column, and re-arming is the documented way."""
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    with pytest.raises(apsw.SQLError, match='error in index __sysct_guard_t after drop column'):
        conn.execute("ALTER TABLE t DROP COLUMN v")
    run(conn, 'DROP INDEX "__sysct_guard_t"')
    assert [p.code for p in sqlite_ct.check(conn)] == ["guard-missing"]
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "ALTER TABLE t DROP COLUMN v")
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.check(conn) == []
    run(conn, "UPDATE t SET u = 'q' WHERE id = 1")
    assert sqlite_ct.enumerate_changes(conn, "t", since).updates == [{"id": 1, "u": "q"}]
    conn.close()


def test_drop_column_drops_a_column_of_a_tracked_table_and_keeps_its_changes(tracked):
    """sqlite_ct.drop_column() is that procedure in one call: unsynced changes
    stay pending, the options and mode are kept, the guard covers the rest."""
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    sqlite_ct.create_schema(conn, "t", options=sqlite_ct.TrackingOptions.INSERT
                            | sqlite_ct.TrackingOptions.DELETE)
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT INTO t(id, v, u) VALUES (3, 'c', 'z')", "DELETE FROM t WHERE id = 2")
    sqlite_ct.drop_column(conn, "T", "V")
    assert [r[1] for r in q(conn, "PRAGMA table_info(t)") if not r[1].startswith("__sys")] == [
        "id", "u"]
    assert sqlite_ct.check(conn) == []
    changes = sqlite_ct.enumerate_changes(conn, "t", since)
    assert changes.inserts == [{"id": 3, "u": "z"}]
    assert changes.deletes == [{"id": 2}]
    assert val(conn, "SELECT (__sysTrackOpt & 240) / 16 FROM __sysOCSTrackedObjects") == 5
    other = apsw.Connection(tracked)  # no extension: the new guard still names u
    with pytest.raises(apsw.SQLError, match="sqlite_ct_guard"):
        other.execute("UPDATE t SET u = 'w' WHERE id = 1")
    other.close()
    conn.close()


def test_drop_column_refusals_change_nothing(tracked):
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    before = q(conn, "SELECT sql FROM sqlite_schema ORDER BY name")
    with pytest.raises(sqlite_ct.TableError, match='table "t" has no column "nope"'):
        sqlite_ct.drop_column(conn, "t", "nope")
    with pytest.raises(sqlite_ct.TableError, match="tracking columns; call disable_tracking"):
        sqlite_ct.drop_column(conn, "t", "__sysChangeTxBsn")
    with pytest.raises(sqlite_ct.TableError, match="needs a column name"):
        sqlite_ct.drop_column(conn, "t", "")
    with pytest.raises(apsw.SQLError, match="cannot drop PRIMARY KEY column"):
        sqlite_ct.drop_column(conn, "t", "id")
    with pytest.raises(apsw.SQLError, match="cannot drop UNIQUE column"):
        sqlite_ct.drop_column(conn, "t", "u")
    run(conn, "CREATE TABLE plain(id INTEGER PRIMARY KEY, v)")
    with pytest.raises(sqlite_ct.NotTrackedError):
        sqlite_ct.drop_column(conn, "plain", "v")
    run(conn, "DROP TABLE plain")
    assert q(conn, "SELECT sql FROM sqlite_schema ORDER BY name") == before
    assert sqlite_ct.check(conn) == []
    conn.close()


def test_rename_column_and_table_keep_the_guard(tracked):
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    run(conn, "ALTER TABLE t RENAME COLUMN v TO renamed")
    assert sqlite_ct.check(conn) == []
    run(conn, "ALTER TABLE t RENAME TO t2")
    assert sqlite_ct.tracked_tables(conn) == ["t2"]
    assert q(conn, "SELECT name FROM sqlite_schema WHERE name GLOB '__sysct_guard_*'") == [
        ("__sysct_guard_t2",)]
    assert sqlite_ct.check(conn) == []
    conn.close()
    other = plain(tracked, triggers=False)
    with pytest.raises(apsw.SQLError, match="sqlite_ct_guard"):
        other.execute("UPDATE t2 SET renamed = 'z'")
    other.close()


def test_portable_mode_has_no_guard_and_triggers_off_is_a_documented_limit(db_path):
    """Portable mode is for writers without the extension, so no guard can
    call it: with triggers turned off, such writes go untracked (README)."""
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    assert q(conn, "SELECT count(*) FROM sqlite_schema WHERE name='__sysct_guard_t'") == [(1,)]
    sqlite_ct.create_schema(conn, "t", mode="portable")
    assert q(conn, "SELECT count(*) FROM sqlite_schema WHERE name='__sysct_guard_t'") == [(0,)]
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    since = sqlite_ct.last_committed_csn(conn)
    conn.close()
    other = plain(db_path, triggers=False)
    other.execute("UPDATE t SET v = 'untracked' WHERE id = 1")
    other.close()
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    assert sqlite_ct.enumerate_changes(conn, "t", since).updates == []
    assert sqlite_ct.check(conn) == []
    conn.close()


def test_disable_tracking_drops_the_guard(apsw_conn):
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    sqlite_ct.disable_tracking(apsw_conn, "t")
    assert q(apsw_conn, "SELECT name FROM sqlite_schema WHERE name GLOB '__sysct_*_t'") == []
    apsw_conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    run(apsw_conn, "INSERT INTO t(id, v) VALUES (1, 'a')")


# ----------------------------------------------- what else meets the guard

def test_reads_and_maintenance_without_the_extension(tracked, tmp_path):
    """Reads, quick_check and ANALYZE work without the extension;
    integrity_check, REINDEX and VACUUM evaluate the guard's WHERE and need it
    loaded (README)."""
    conn = plain(tracked, triggers=True)
    assert q(conn, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b")]
    assert q(conn, "PRAGMA quick_check") == [("ok",)]
    run(conn, "ANALYZE", "PRAGMA optimize")
    with pytest.raises(apsw.SQLError, match=r"unknown function: sqlite_ct_guard\(\)"):
        conn.execute("PRAGMA integrity_check")
    with pytest.raises(apsw.SQLError, match=r"unknown function: sqlite_ct_guard\(\)"):
        conn.execute("REINDEX")
    with pytest.raises(apsw.SQLError, match="no such function: sqlite_ct_guard"):
        conn.execute("VACUUM")
    with pytest.raises(apsw.SQLError, match="no such function: sqlite_ct_guard"):
        conn.execute(f"VACUUM INTO '{tmp_path / 'copy.db'}'")
    conn.close()
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    assert q(conn, "PRAGMA integrity_check") == [("ok",)]
    conn.execute("VACUUM")
    assert sqlite_ct.check(conn) == []
    conn.close()


@pytest.mark.skipif(SHELL is None, reason="the sqlite3 shell is not installed")
def test_dump_restores_with_the_extension_loaded(tracked, tmp_path, ext_path):
    """.dump reads only; restoring its output re-creates the guard, which
    needs the extension loaded in the restoring shell."""
    dump = subprocess.run([SHELL, tracked, ".dump"], capture_output=True, text=True,
                          check=True).stdout
    assert 'CREATE INDEX "__sysct_guard_t"' in dump
    bare = subprocess.run([SHELL, str(tmp_path / "bare.db")], input=dump,
                          capture_output=True, text=True)
    assert "no such function: sqlite_ct_guard" in bare.stderr
    restored = str(tmp_path / "restored.db")
    out = subprocess.run([SHELL, restored], input=f".load {ext_path}\n{dump}",
                         capture_output=True, text=True)
    assert out.stderr == ""
    conn = apsw.Connection(restored)
    sqlite_ct.load(conn)
    assert q(conn, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b")]
    assert sqlite_ct.check(conn) == []
    conn.close()


def test_trusted_schema_off(tracked):
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    run(conn, "PRAGMA trusted_schema=OFF")
    run(conn, "INSERT INTO t(id, v) VALUES (3, 'c')", "UPDATE t SET v = 'd'",
        "DELETE FROM t WHERE id = 1")
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    with pytest.raises(apsw.ConstraintError, match="triggers are turned off"):
        conn.execute("UPDATE t SET v = 'e'")
    conn.close()


def test_attached_database_with_triggers_off(tracked, tmp_path):
    """A write through an ATTACH alias is refused by the triggers (see
    test_attached.py); with triggers off, by the guard."""
    conn = apsw.Connection(str(tmp_path / "main.db"))
    sqlite_ct.load(conn)
    run(conn, f"ATTACH '{tracked}' AS other")
    conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    with pytest.raises(apsw.ConstraintError, match="triggers are turned off"):
        conn.execute("DELETE FROM other.t WHERE id = 1")
    conn.close()
    plain_conn = plain(str(tmp_path / "main2.db"), triggers=False)
    run(plain_conn, f"ATTACH '{tracked}' AS other")
    with pytest.raises(apsw.SQLError, match="sqlite_ct_guard"):
        plain_conn.execute("UPDATE other.t SET v = 'z'")
    plain_conn.close()


def test_guard_missing_is_reported_and_recreated(apsw_conn):
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    since = sqlite_ct.last_committed_csn(apsw_conn)
    run(apsw_conn, 'DROP INDEX "__sysct_guard_t"')
    assert [p.code for p in sqlite_ct.check(apsw_conn)] == ["guard-missing"]
    sqlite_ct.create_schema(apsw_conn, "t")
    assert sqlite_ct.check(apsw_conn) == []
    # the triggers never stopped: anchors stay valid
    sqlite_ct.enumerate_changes(apsw_conn, "t", since)


def test_an_unchanged_guard_is_not_rebuilt(apsw_conn):
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    root = q(apsw_conn, "SELECT rootpage FROM sqlite_schema WHERE name='__sysct_guard_t'")
    sqlite_ct.create_schema(apsw_conn, "t")
    assert q(apsw_conn, "SELECT rootpage FROM sqlite_schema "
                        "WHERE name='__sysct_guard_t'") == root


def test_layout2_file_gets_its_guard_on_upgrade(tmp_path):
    path = tmp_path / "layout2.db"
    shutil.copy(os.path.join(os.path.dirname(__file__), "fixtures", "layout2.db"), path)
    other = plain(str(path), triggers=False)
    other.execute("UPDATE orders SET qty = 0 WHERE id = 1")   # layout 2: no guard
    other.close()
    conn = apsw.Connection(str(path))
    sqlite_ct.load(conn)
    conn.execute("SELECT sqlite_ct_create_system_tables()")
    conn.close()
    other = plain(str(path), triggers=False)
    with pytest.raises(apsw.SQLError, match=NO_EXTENSION.replace("(", r"\(").replace(")", r"\)")):
        other.execute("UPDATE orders SET qty = 1 WHERE id = 1")
    other.close()


# ------------------------------------------- every column of every kind of table

SHAPES = {
    "integer key": "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, u TEXT UNIQUE)",
    "text key, rowid table": "CREATE TABLE t(k TEXT PRIMARY KEY, v BLOB, n REAL)",
    "composite key, without rowid": ("CREATE TABLE t(a INTEGER, b TEXT, v TEXT, "
                                     "PRIMARY KEY(b, a)) WITHOUT ROWID"),
    "generated column": ("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, "
                         "g TEXT GENERATED ALWAYS AS (upper(v)) STORED, "
                         "h TEXT GENERATED ALWAYS AS (lower(v)) VIRTUAL)"),
}


def shaped(db_path, shape):
    """A native-mode table "t" of the given shape with one row; returns the
    columns an UPDATE can set (the rowid of a rowid table without an INTEGER
    PRIMARY KEY too)."""
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    run(conn, SHAPES[shape])
    sqlite_ct.create_schema(conn, "t")
    cols = [r[0] for r in q(conn, "SELECT name FROM pragma_table_xinfo('t') WHERE hidden=0")]
    user = [c for c in cols if not c.startswith("__sys")]
    run(conn, f"INSERT INTO t({', '.join(map(quote, user))}) VALUES "
              f"({', '.join('1' for _ in user)})")
    if "WITHOUT ROWID" not in SHAPES[shape] and "INTEGER PRIMARY KEY" not in SHAPES[shape]:
        cols.append("rowid")
    conn.close()
    return cols


def quote(name):
    return '"' + name.replace('"', '""') + '"'


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_an_update_of_any_column_with_triggers_off_is_refused(db_path, shape):
    """Without the extension: "unknown function"; with it: the guard's error.
    Every column the table has, the key, the rowid and sqlite-ct's own."""
    cols = shaped(db_path, shape)
    assert len(cols) >= 5
    before = snapshot(db_path)
    bare = plain(db_path, triggers=False)
    ext = apsw.Connection(db_path)
    sqlite_ct.load(ext)
    ext.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    for col in cols:
        statement = f"UPDATE t SET {quote(col)} = 5"
        with pytest.raises(apsw.SQLError) as err:
            bare.execute(statement)
        assert str(err.value) == NO_EXTENSION, col
        with pytest.raises(apsw.ConstraintError) as err:
            ext.execute(statement)
        assert str(err.value) == GUARD_OFF, col
    for statement in ("DELETE FROM t WHERE 1", "INSERT INTO t DEFAULT VALUES"):
        with pytest.raises(apsw.SQLError):
            bare.execute(statement)
        with pytest.raises(apsw.ConstraintError):
            ext.execute(statement)
    bare.close()
    ext.close()
    assert snapshot(db_path) == before


def stdlib_triggers(conn, on):
    """SQLITE_DBCONFIG_ENABLE_TRIGGER on a stdlib sqlite3 connection:
    Connection.setconfig() from Python 3.12, before it through ctypes on the
    stdlib's own SQLite library (pysqlite_Connection: PyObject_HEAD, then the
    sqlite3* handle)."""
    if hasattr(conn, "setconfig"):
        conn.setconfig(sqlite3.SQLITE_DBCONFIG_ENABLE_TRIGGER, on)
        return
    import _sqlite3
    import ctypes
    lib = ctypes.CDLL(_sqlite3.__file__)
    lib.sqlite3_db_config.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_int)]
    handle = ctypes.c_void_p.from_address(id(conn) + 2 * ctypes.sizeof(ctypes.c_void_p))
    now = ctypes.c_int(-1)
    assert lib.sqlite3_db_config(handle, 1003, 1 if on else 0, ctypes.byref(now)) == 0
    assert now.value == (1 if on else 0)


def test_with_the_extension_triggers_off_through_stdlib(sqlite3_conn):
    run(sqlite3_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, u TEXT UNIQUE)")
    sqlite_ct.create_schema(sqlite3_conn, "t")
    run(sqlite3_conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    stdlib_triggers(sqlite3_conn, False)
    for statement in WRITES:
        if "__sys" in statement:
            continue
        with pytest.raises(sqlite3.IntegrityError) as err:
            sqlite3_conn.execute(statement)
        assert str(err.value) == GUARD_OFF
    stdlib_triggers(sqlite3_conn, True)
    sqlite3_conn.execute("UPDATE t SET v = 'b'")
    assert sqlite_ct.check(sqlite3_conn) == []


def test_replacing_the_guard_from_a_statement_that_reads_a_table(apsw_conn):
    """SQLite drops no index while another statement reads; a re-arm that must
    replace the guard says so when its caller reads a table, and works alone."""
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    run(apsw_conn, "ALTER TABLE t ADD COLUMN w")
    with pytest.raises(apsw.LockedError) as err:
        apsw_conn.execute("SELECT sqlite_ct_create_schema(__sysTName) "
                          "FROM __sysOCSTrackedObjects")
    assert str(err.value) == (
        'sqlite-ct: the guard index "__sysct_guard_t" must be replaced, which SQLite refuses '
        "while the calling statement reads a table (database table is locked); call "
        "sqlite_ct_create_schema() in a statement that reads no table")
    assert [p.code for p in sqlite_ct.check(apsw_conn)] == ["guard-outdated"]
    apsw_conn.execute("SELECT sqlite_ct_create_schema('t')")
    assert sqlite_ct.check(apsw_conn) == []


# ------------------------------- INSERT without a column list (README, Known limits)

@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
def test_insert_without_a_column_list_names_the_columns_it_needs(request, host):
    """Pins today's behaviour, so that a write path which changes it is noticed:
    tracking adds three written columns, which a column-less INSERT must list."""
    conn = request.getfixturevalue(f"{host}_conn")
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (1, 'before tracking')")
    sqlite_ct.create_schema(conn, "t")
    with pytest.raises((apsw.SQLError, sqlite3.OperationalError)) as err:
        conn.execute("INSERT INTO t VALUES (2, 'after')")
    assert str(err.value) == "table t has 5 columns but 2 values were supplied"
    # giving the stamps values works: they are overwritten with the truth
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT INTO t VALUES (2, 'after', 7, 7, x'00')")
    assert q(conn, 'SELECT "__sysChangeTxBsn" = "__sysInsertTxBsn", "__sysChangeTxBsn" > ?, '
                   '"__sysTrackingContext" IS NULL FROM t WHERE id = 2', (since,)) == [
        (1, 1, 1)]
    assert sqlite_ct.enumerate_changes(conn, "t", since).inserts == [{"id": 2, "v": "after"}]


@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
def test_the_hosts_have_no_hidden_columns_and_skip_only_generated_ones(host):
    """Why the stamps cannot be left out of a column-less INSERT: HIDDEN needs
    SQLITE_ENABLE_HIDDEN_COLUMNS, which these hosts are built without; only
    generated columns are skipped, and a stamp is written, not generated."""
    conn = apsw.Connection(":memory:") if host == "apsw" else sqlite3.connect(":memory:")
    run(conn, "CREATE TABLE h(a, b INTEGER HIDDEN)", "CREATE TABLE g(a, b AS (a + 1))",
        "INSERT INTO g VALUES (1)")
    with pytest.raises((apsw.SQLError, sqlite3.OperationalError),
                       match="table h has 2 columns but 1 values were supplied"):
        conn.execute("INSERT INTO h VALUES (1)")
    assert q(conn, "SELECT a, b FROM g") == [(1, 2)]
    with pytest.raises((apsw.SQLError, sqlite3.OperationalError),
                       match='cannot UPDATE generated column "b"'):
        conn.execute("UPDATE g SET b = 5")
    conn.close()


# -------------------------- wide tables, blob writes, collations, the earlier shape

SYSTEM_PYTHON = "/usr/bin/python3"

# Debian's SQLite 3.40 hosts, in a fresh process: read the table, then try a
# write without the extension, then load it (argv[3]) and write again.
SYSTEM_HOST = r"""
import sqlite3, sys
path, column, ext = sys.argv[1:4]
conn = sqlite3.connect(path, isolation_level=None)
print(sqlite3.sqlite_version)
print(conn.execute(f"SELECT count(*), max({column}) FROM w").fetchone())
try:
    conn.execute(f"UPDATE w SET {column} = 'bare'")
except sqlite3.Error as exc:
    print("refused:", exc)
conn.enable_load_extension(True)
conn.load_extension(ext)
conn.execute(f"UPDATE w SET {column} = 'system' WHERE id = 1")
print("written")
"""


def wide(db_path, columns):
    """A native-mode table "w" of `columns` user columns (id and c1..) with
    two rows; returns the last column's name and the anchor before them."""
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    last = f"c{columns - 1}"
    run(conn, "CREATE TABLE w(id INTEGER PRIMARY KEY, "
              + ", ".join(f"c{i} TEXT" for i in range(1, columns)) + ")",
        "CREATE TABLE other(id INTEGER PRIMARY KEY)")
    sqlite_ct.create_schema(conn, "w")
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, f"INSERT INTO w(id, c1, {last}) VALUES (1, 'a', 'z'), (2, 'b', 'y')")
    assert sqlite_ct.check(conn) == []
    conn.close()
    return last, since


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON) or SHELL is None,
                    reason="Debian's python3 and sqlite3 shell are not installed")
@pytest.mark.parametrize("columns", [130, 1000])
def test_a_wide_table_opens_in_the_system_hosts(db_path, ext_path, columns):
    """SQLite 3.40 (Debian's shell and python3) opens the file, reads, refuses
    a write without the extension and tracks one with it."""
    last, since = wide(db_path, columns)
    out = subprocess.run([SHELL, db_path, f"SELECT count(*), max({last}) FROM w;",
                          "SELECT count(*) FROM other;"], capture_output=True, text=True,
                         errors="replace")
    assert (out.returncode, out.stdout, out.stderr) == (0, "2|z\n0\n", "")
    out = subprocess.run([SYSTEM_PYTHON, "-c", SYSTEM_HOST, db_path, last, ext_path],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    version, read, refused, written = out.stdout.splitlines()
    assert read == "(2, 'z')"
    assert refused in (f"refused: {NO_EXTENSION}", "refused: no such function: sqlite_ct_guard")
    assert written == "written"
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    changes = sqlite_ct.enumerate_changes(conn, "w", since)
    assert sorted((r["id"], r[last]) for r in changes.inserts) == [(1, "system"), (2, "y")]
    assert sqlite_ct.check(conn) == []
    conn.close()


def test_the_widest_table_sqlite_allows_can_be_tracked(db_path):
    """SQLITE_MAX_COLUMN (2000) counts the table's columns; the guard's key
    columns are as many, and the rowid the index adds is not counted."""
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    assert conn.limit(apsw.SQLITE_LIMIT_COLUMN) == 2000
    run(conn, "CREATE TABLE w(id INTEGER PRIMARY KEY, "
              + ", ".join(f"c{i}" for i in range(1, 1997)) + ")")
    sqlite_ct.create_schema(conn, "w")
    assert val(conn, "SELECT count(*) FROM pragma_index_info('__sysct_guard_w')") == 2000
    run(conn, "INSERT INTO w(id, c1996) VALUES (1, 1)", "UPDATE w SET c1996 = 2")
    assert sqlite_ct.check(conn) == []
    conn.close()


def blob_open(conn, column, *, write):
    """sqlite3_blob_open on t's row 1, through either host's API."""
    if isinstance(conn, apsw.Connection):
        return conn.blob_open("main", "t", column, 1, write)
    return conn.blobopen("t", column, 1, readonly=not write)


@pytest.mark.parametrize("host", ["apsw", "sqlite3", "apsw without the extension"])
def test_incremental_blob_writes_to_a_tracked_table_are_refused(request, db_path, host):
    """A blob write would change the row without a trigger or the guard:
    every column, the key and sqlite-ct's own, is refused for writing, with or
    without the extension; reading works."""
    setup = apsw.Connection(db_path)
    sqlite_ct.load(setup)
    run(setup, "CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB, note TEXT)",
        "CREATE TABLE plain(id INTEGER PRIMARY KEY, data BLOB)")
    sqlite_ct.create_schema(setup, "t")
    run(setup, "INSERT INTO t(id, data, note) VALUES (1, zeroblob(4), 'n')",
        "INSERT INTO plain VALUES (1, zeroblob(4))")
    since = sqlite_ct.last_committed_csn(setup)
    setup.close()
    if host == "apsw without the extension":
        conn, errors = apsw.Connection(db_path), apsw.SQLError
    else:
        conn = request.getfixturevalue(f"{host}_conn")
        errors = apsw.SQLError if host == "apsw" else sqlite3.OperationalError
    if host == "sqlite3" and not hasattr(conn, "blobopen"):
        pytest.skip("stdlib sqlite3 before Python 3.11 has no blobopen()")
    columns = [r[0] for r in q(conn, "SELECT name FROM pragma_table_xinfo('t')")]
    assert len(columns) == 6
    for column in columns:
        with pytest.raises(errors, match="cannot open indexed column for writing"):
            blob_open(conn, column, write=True)
    blob = blob_open(conn, "data", write=False)
    assert blob.read() == b"\x00" * 4
    blob.close()
    if isinstance(conn, apsw.Connection):   # an untracked table: allowed, as SQLite does
        blob = conn.blob_open("main", "plain", "data", 1, True)
        blob.write(b"\x01")
        blob.close()
    if host != "apsw without the extension":
        run(conn, "UPDATE t SET data = x'01020304' WHERE id = 1")
        assert sqlite_ct.enumerate_changes(conn, "t", since).updates == [
            {"id": 1, "data": b"\x01\x02\x03\x04", "note": "n"}]
    conn.close()


def nocase_ascii(a, b):
    return (a.lower() > b.lower()) - (a.lower() < b.lower())


COLLATED = [
    "INSERT INTO {t}(id, v, w) VALUES (3, 'c', 'x')",
    "UPDATE {t} SET v = 'C' WHERE id = 1",
    "UPDATE {t} SET w = 'q' WHERE id = 1",
    "UPDATE {t} SET id = 7 WHERE id = 2",
    "DELETE FROM {t} WHERE id = 1",
]


def outcome(conn, statement):
    try:
        conn.execute(statement)
    except HOST_ERRORS as exc:
        return str(exc)
    return "ok"


@pytest.mark.parametrize("unique", [False, True])
def test_a_column_of_an_application_collation_writes_as_if_untracked(db_path, ext_path, unique):
    """A column declared COLLATE <a collation the application registers>: a
    connection with the extension but without that collation writes the
    tracked table exactly as it writes an untracked twin (the guard's columns
    are COLLATE BINARY, so it needs no collation), and can re-arm it. With a
    UNIQUE index of that collation, both refuse alike (SQLite needs it)."""
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    conn.create_collation("appcoll", nocase_ascii)
    for t in ("t", "u"):
        run(conn, f"CREATE TABLE {t}(id INTEGER PRIMARY KEY, v TEXT COLLATE appcoll, "
                  f"w TEXT{' COLLATE appcoll UNIQUE' if unique else ''})",
            f"INSERT INTO {t}(id, v, w) VALUES (1, 'a', 'k'), (2, 'b', 'l')")
    sqlite_ct.create_schema(conn, "t")
    since = sqlite_ct.last_committed_csn(conn)
    conn.close()
    other = apsw.Connection(db_path)
    sqlite_ct.load(other)
    outcomes = []
    for statement in COLLATED:
        outcomes.append(outcome(other, statement.format(t="u")))
        assert outcome(other, statement.format(t="t")) == outcomes[-1], statement
    assert ("no such collation sequence: appcoll" in outcomes) == unique
    assert set(outcomes) <= {"ok", "no such collation sequence: appcoll"}
    assert q(other, "SELECT id, v, w FROM t ORDER BY id") == q(
        other, "SELECT id, v, w FROM u ORDER BY id")
    if not unique:
        changes = sqlite_ct.enumerate_changes(other, "t", since)
        assert sorted(r["id"] for r in changes.inserts) == [3, 7]
        assert sorted(r["id"] for r in changes.deletes) == [1, 2]
    run(other, "ALTER TABLE t ADD COLUMN x TEXT")
    sqlite_ct.create_schema(other, "t")
    assert sqlite_ct.check(other) == []
    other.close()
    if SHELL is None or unique:
        return
    script = (f".load {ext_path}\n"
              + "".join(s.format(t=t).replace("(3,", "(4,").replace("7 WHERE", "8 WHERE") + ";\n"
                        for t in ("t", "u") for s in COLLATED[:3]))
    out = subprocess.run([SHELL, db_path], input=script, capture_output=True, text=True,
                         errors="replace")
    assert (out.returncode, out.stderr) == (0, "")
    check = apsw.Connection(db_path)
    sqlite_ct.load(check)
    assert q(check, "SELECT id, v, w FROM t ORDER BY id") == q(
        check, "SELECT id, v, w FROM u ORDER BY id")
    assert 4 in [r["id"] for r in sqlite_ct.enumerate_changes(check, "t", since).inserts]
    check.close()


def earlier_guard(columns, table, key):
    """The guard as layout 3 first shaped it: the columns in a coalesce()."""
    return (f'CREATE INDEX "__sysct_guard_{table}" ON "{table}"("{key}") '
            f"WHERE sqlite_ct_guard('{table}')=0 AND coalesce("
            + ", ".join(f'"{c}"' for c in columns) + ") IS NULL")


EARLIER = ('sqlite-ct: index "__sysct_guard_{t}" has an outdated shape (SQLite before 3.48 '
           'cannot load the one that names the columns in its WHERE for 125 columns or more, '
           'and incremental blob writes pass it); create_schema(conn, "{t}") replaces it')


def test_a_guard_of_the_earlier_shape_is_reported_and_replaced(tracked):
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    columns = [r[0] for r in q(conn, "SELECT name FROM pragma_table_xinfo('t')")]
    run(conn, 'DROP INDEX "__sysct_guard_t"', earlier_guard(columns, "t", "id"))
    assert [(p.code, p.message) for p in sqlite_ct.check(conn)] == [
        ("guard-outdated", EARLIER.format(t="t"))]
    conn.blob_open("main", "t", "v", 1, True).close()   # what the earlier shape let through
    since = sqlite_ct.last_committed_csn(conn)
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.check(conn) == []
    assert val(conn, "SELECT sql FROM sqlite_schema WHERE name = '__sysct_guard_t'").endswith(
        '"__sysTrackingContext" COLLATE BINARY) WHERE sqlite_ct_guard(\'t\')=0')
    with pytest.raises(apsw.SQLError, match="cannot open indexed column"):
        conn.blob_open("main", "t", "v", 1, True)
    sqlite_ct.enumerate_changes(conn, "t", since)   # the triggers never stopped
    conn.close()


def test_a_guard_with_a_column_of_another_collation_is_outdated(tracked):
    conn = apsw.Connection(tracked)
    sqlite_ct.load(conn)
    sql = val(conn, "SELECT sql FROM sqlite_schema WHERE name = '__sysct_guard_t'")
    run(conn, 'DROP INDEX "__sysct_guard_t"',
        sql.replace('"v" COLLATE BINARY', '"v" COLLATE NOCASE'))
    assert [p.code for p in sqlite_ct.check(conn)] == ["guard-outdated"]
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.check(conn) == []
    conn.close()


@pytest.mark.skipif(SHELL is None, reason="the sqlite3 shell is not installed")
def test_a_wide_file_of_the_earlier_shape_opens_in_sqlite_340_once_re_armed(db_path):
    """A 130-column table guarded by the earlier shape: SQLite 3.40 refuses the
    whole file; re-arming it with this build makes it readable there."""
    wide(db_path, 130)
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    columns = [r[0] for r in q(conn, "SELECT name FROM pragma_table_xinfo('w')")]
    run(conn, 'DROP INDEX "__sysct_guard_w"', earlier_guard(columns, "w", "id"))
    conn.close()
    out = subprocess.run([SHELL, db_path, "SELECT count(*) FROM other;"], capture_output=True,
                         text=True, errors="replace")
    if out.returncode == 0:
        pytest.skip("this sqlite3 shell takes more than 127 function arguments")
    assert "too many arguments on function coalesce" in out.stderr
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    assert [p.code for p in sqlite_ct.check(conn)] == ["guard-outdated"]
    sqlite_ct.create_schema(conn, "w")
    conn.close()
    out = subprocess.run([SHELL, db_path, "SELECT count(*) FROM w;"], capture_output=True,
                         text=True, errors="replace")
    assert (out.returncode, out.stdout, out.stderr) == (0, "2\n", "")
