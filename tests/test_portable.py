"""Portable mode: create_schema(conn, table, mode="portable") installs pure-SQL
triggers (csrc/portable.c), so writers that never loaded sqlite-ct are tracked
with the same enumeration semantics as native mode.

Every test writes through a connection WITHOUT the extension (a plain apsw
connection, the sqlite3 shell without .load, Debian's python3 with the stdlib
sqlite3) or, for comparison, through one with it, and enumerates from a
connection that has it. The traps of DESIGN §5 are repeated here for portable
tables; the text form of the tombstone key (csrc/keycodec.c, FORMAT) is
checked against the binary form; a hypothesis test runs random operations
through both kinds of connection and checks convergence (DESIGN §4.1).

Portable tables get one BSN per row change instead of one per transaction
(see portable.c, HOW IT WORKS); test_one_bsn_per_row_change pins that.
"""
import json
import math
import os
import random
import re
import struct
import subprocess
import tempfile
import textwrap

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import HOST_ERRORS, q, val

SQLITE3_SHELL = "/usr/bin/sqlite3"
SYSTEM_PYTHON = "/usr/bin/python3"
TRIGGER_DEPTH = 32   # a runaway recursion fails fast (see test_traps.py)

GUARD = ("sqlite-ct: the __sys columns of table {} are written by change tracking "
         "only; leave them out of INSERT and UPDATE")


# ------------------------------------------------------------------ helpers

def quote(name):
    return '"' + name.replace('"', '""') + '"'


def typed(value):
    """A value with its SQLite type: 1, 1.0, 0.0 and -0.0 compare unequal."""
    if isinstance(value, float):
        return ("real", struct.pack("<d", value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("blob", bytes(value))
    return (type(value).__name__, value)


def typed_rows(rows):
    return sorted(tuple(sorted((k, typed(v)) for k, v in r.items())) for r in rows)


def open_plain(path, recursive=None):
    """An apsw connection that never loads sqlite-ct."""
    conn = apsw.Connection(path)
    conn.execute("PRAGMA synchronous=OFF")
    conn.limit(apsw.SQLITE_LIMIT_TRIGGER_DEPTH, TRIGGER_DEPTH)
    if recursive is not None:
        conn.execute(f"PRAGMA recursive_triggers={recursive}")
    return conn


def open_ext(path, recursive=None):
    conn = open_plain(path, recursive)
    sqlite_ct.load(conn)
    return conn


@pytest.fixture
def ext(db_path):
    """Connection with sqlite-ct loaded: creates schemas and enumerates."""
    conn = open_ext(db_path)
    conn.execute("PRAGMA journal_mode=WAL")
    yield conn
    conn.close()


@pytest.fixture
def plain(ext, db_path):
    """Connection to the same file that never loads sqlite-ct."""
    conn = open_plain(db_path)
    yield conn
    conn.close()


@pytest.fixture(params=["OFF", "ON"])
def recursive(request):
    """PRAGMA recursive_triggers of the writer (stock SQLite: off; Debian: on)."""
    return request.param


@pytest.fixture(params=["plain", "ext"])
def writer(request, ext, plain, recursive):
    """The connection the test writes through: without the extension (the
    point of portable mode) or with it (its triggers are the same)."""
    conn = plain if request.param == "plain" else ext
    conn.execute(f"PRAGMA recursive_triggers={recursive}")
    return conn


class Portable:
    """A portable table with committed rows, an anchor and a replica in sync.
    `changes()` enumerates (through `ext`) since the anchor, applies the
    changes, checks the replica equals the table and sqlite_ct.check() is
    clean."""

    def __init__(self, ext, writer, ddl, table, keys, rows=(), before_tracking=False,
                 options=sqlite_ct.TrackingOptions.ALL):
        self.ext, self.writer, self.table, self.keys = ext, writer, table, list(keys)
        q(ext, ddl)
        if before_tracking:
            self.insert(rows, ext)
        self.enable_bsn = sqlite_ct.create_schema(ext, table, options=options, mode="portable")
        if not before_tracking:
            self.insert(rows)
        self.anchor = sqlite_ct.last_committed_csn(ext)
        self.replica = Replica(self.keys, table_rows(ext, table, self.keys))

    def insert(self, rows, conn=None):
        for row in rows:
            cols = ", ".join(quote(c) for c in row)
            marks = ", ".join("?" for _ in row)
            q(conn or self.writer, f"INSERT INTO {quote(self.table)}({cols}) VALUES ({marks})",
              tuple(row.values()))

    def run(self, *statements):
        for sql in statements:
            q(self.writer, sql)

    def tombstones(self):
        return q(self.ext, "SELECT sqlite_ct_unpack_key(__sysRK, 0), __sysDeleteTxBsn, "
                           "__sysInsertTxCsn FROM __sysOCSDeletedRows WHERE __sysTName=? "
                           "ORDER BY __sysDeleteTxBsn", (self.table,))

    def changes(self, converge=True):
        cs = sqlite_ct.enumerate_changes(self.ext, self.table, self.anchor)
        self.replica.apply(cs)
        if converge:
            assert self.replica.rows == table_rows(self.ext, self.table, self.keys)
        assert sqlite_ct.check(self.ext) == []
        self.anchor = cs.new_anchor
        return cs


def by_key(rows):
    return sorted(rows, key=lambda r: tuple(str(v) for v in r.values()))


UNIQUE_T = "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)"
AB = [{"id": 1, "u": "a", "v": "x"}, {"id": 2, "u": "b", "v": "y"}]
NATIVE_NAMES = ["__sysct_ad_{}", "__sysct_ai_{}", "__sysct_au_{}",
                "__sysct_bi_{}", "__sysct_bu_{}"]


# ------------------------------------------------------- the triggers themselves

# Built-in functions of SQLite <= 3.37 the triggers may call; the rest of what
# the regex below finds are keywords followed by "(".
ALLOWED_FUNCTIONS = {"abs", "changes", "char", "coalesce", "hex", "instr", "julianday", "max",
                     "min", "printf", "round", "substr", "typeof"}
KEYWORDS = {"and", "as", "begin", "case", "cast", "else", "end", "exists", "from", "in",
            "insert", "into", "not", "on", "or", "raise", "select", "set", "then", "values",
            "when", "where", "is", "update", "delete", "null", "integer", "by", "of",
            "group"}


def trigger_sql(conn, table):
    return dict(q(conn, "SELECT name, sql FROM sqlite_schema WHERE type='trigger' "
                        "AND tbl_name=? ORDER BY name", (table,)))


@pytest.mark.parametrize("options", range(1, 8))
@pytest.mark.parametrize("ddl", [
    UNIQUE_T,
    "CREATE TABLE t(k PRIMARY KEY, v)",
    "CREATE TABLE t(a TEXT, b REAL, u BLOB UNIQUE, v, PRIMARY KEY(b, a)) WITHOUT ROWID",
], ids=["rowid-unique", "any-type-key", "composite-without-rowid"])
def test_triggers_are_pure_sql(ext, ddl, options):
    q(ext, ddl)
    sqlite_ct.create_schema(ext, "t", options=options, mode="portable")
    triggers = trigger_sql(ext, "t")
    expected = {"__sysct_ai_t", "__sysct_au_t"}
    if options & 4:
        expected |= {"__sysct_ad_t", "__sysct_bi_t", "__sysct_bu_t"}
    assert set(triggers) == expected
    for name, sql in triggers.items():
        assert "sqlite_ct_" not in sql, name
        called = {m.lower() for m in re.findall(r"\b([A-Za-z_]\w*)\s*\(", sql)
                  if not m.startswith("__sys") and m != "t"}   # INSERT INTO table(...)
        assert called - KEYWORDS <= ALLOWED_FUNCTIONS, (name, called - KEYWORDS)
        assert "unhex" not in sql.lower() and "subsec" not in sql.lower()


def test_switching_modes_leaves_only_the_new_modes_objects(ext):
    # Native mode has the AFTER UPDATE OF key trigger and the capture index
    # (layout 5); portable mode has two BEFORE triggers of its own. Switching
    # modes must leave only the new mode's.
    q(ext, UNIQUE_T)
    sqlite_ct.create_schema(ext, "t")
    native = set(trigger_sql(ext, "t"))
    assert native == {"__sysct_ad_t", "__sysct_ai_t", "__sysct_ak_t", "__sysct_au_t"}
    assert val(ext, "SELECT count(*) FROM sqlite_schema WHERE name='__sysct_cap_t'") == 1
    sqlite_ct.create_schema(ext, "t", mode="portable")
    assert set(trigger_sql(ext, "t")) == {n.format("t") for n in NATIVE_NAMES}
    assert val(ext, "SELECT count(*) FROM sqlite_schema WHERE name='__sysct_cap_t'") == 0
    assert val(ext, "SELECT __sysTrackOpt FROM __sysOCSTrackedObjects") == 7 * 16 + 0x100
    sqlite_ct.create_schema(ext, "t")
    assert set(trigger_sql(ext, "t")) == native
    assert val(ext, "SELECT count(*) FROM sqlite_schema WHERE name='__sysct_cap_t'") == 1


def test_plain_connection_has_no_extension(ext, plain):
    with pytest.raises(apsw.SQLError, match="no such function: sqlite_ct_version"):
        q(plain, "SELECT sqlite_ct_version()")
    assert not sqlite_ct.is_loaded(plain)


def test_native_table_still_refuses_a_plain_writer(ext, plain):
    """Portable mode is per table: a native table next to a portable one
    still fails writes from a connection without the extension."""
    q(ext, "CREATE TABLE n(id INTEGER PRIMARY KEY, v)")
    q(ext, "CREATE TABLE p(id INTEGER PRIMARY KEY, v)")
    sqlite_ct.create_schema(ext, "n")
    sqlite_ct.create_schema(ext, "p", mode="portable")
    q(plain, "INSERT INTO p(id, v) VALUES (1, 'ok')")
    with pytest.raises(apsw.SQLError, match="(no such|unknown) function: sqlite_ct_"):
        q(plain, "INSERT INTO n(id, v) VALUES (1, 'refused')")


def test_switching_modes_keeps_tracking(ext, plain):
    p = Portable(ext, plain, UNIQUE_T, "t", ["id"], AB)
    q(plain, "UPDATE t SET v = 'p' WHERE id = 1")
    assert p.changes().updates == [{"id": 1, "u": "a", "v": "p"}]
    sqlite_ct.create_schema(ext, "t")                    # back to native
    q(ext, "DELETE FROM t WHERE id = 2")
    assert p.changes().deletes == [{"id": 2}]
    sqlite_ct.create_schema(ext, "t", mode="portable")   # and portable again
    q(plain, "INSERT INTO t(id, u, v) VALUES (3, 'c', 'z')")
    assert p.changes().inserts == [{"id": 3, "u": "c", "v": "z"}]


# ------------------------------------------------------------------ BSNs

def test_one_bsn_per_row_change(ext, plain):
    """The documented deviation from DESIGN §4.3: pure SQL cannot tell its own
    transaction from the previous one, so each row change takes a new BSN.
    All of them are above the last CSN committed before the transaction and
    are committed (logged) with it."""
    p = Portable(ext, plain, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "t", ["id"],
                 [{"id": i, "v": 0} for i in range(1, 4)])
    before = sqlite_ct.last_committed_csn(ext)
    q(plain, "BEGIN")
    q(plain, "UPDATE t SET v = 1")
    q(plain, "INSERT INTO t(id, v) VALUES (4, 1)")
    q(plain, "DELETE FROM t WHERE id = 1")
    assert sqlite_ct.last_committed_csn(ext) == before   # not committed yet
    assert sqlite_ct.enumerate_changes(ext, "t", before).new_anchor == before
    q(plain, "COMMIT")
    # five row changes (three updates, an insert, a delete): five BSNs, logged
    new = list(range(before + 1, before + 6))
    assert q(ext, "SELECT __sysTxCsn, __sysTxBsn FROM __sysTxCommitSequence "
                  "WHERE __sysTxCsn > ?", (before,)) == [(b, b) for b in new]
    stamps = [b for (b,) in q(ext, "SELECT __sysChangeTxBsn FROM t ORDER BY id")]
    (tomb,) = [d for _, d, _ in p.tombstones()]
    assert stamps == new[1:3] + [new[3]] and tomb == new[4]   # row 1's update was deleted
    assert sqlite_ct.last_committed_csn(ext) == before + 5
    cs = p.changes()
    assert cs.new_anchor == before + 5 and len(cs) == 4


def test_commit_order_across_writers(ext, plain, db_path):
    """Writers with and without the extension interleave; every BSN a
    transaction hands out is above everything committed before it."""
    q(ext, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    q(ext, "CREATE TABLE n(id INTEGER PRIMARY KEY, v)")
    sqlite_ct.create_schema(ext, "t", mode="portable")
    sqlite_ct.create_schema(ext, "n")
    other = open_ext(db_path)
    try:
        committed = sqlite_ct.last_committed_csn(ext)
        for i in range(6):
            conn = (plain, ext, other)[i % 3]
            q(conn, "BEGIN")
            q(conn, "INSERT INTO t(id, v) VALUES (?, 1)", (i,))
            if conn is not plain:
                q(conn, "INSERT INTO n(id, v) VALUES (?, 1)", (i,))   # native in the same txn
            q(conn, "UPDATE t SET v = v + 1 WHERE id = ?", (i,))
            q(conn, "COMMIT")
            stamps = q(ext, "SELECT __sysInsertTxBsn, __sysChangeTxBsn FROM t WHERE id = ?",
                       (i,))[0]
            assert committed < stamps[0] < stamps[1]
            committed = sqlite_ct.last_committed_csn(ext)
            assert stamps[1] <= committed
    finally:
        other.close()
    assert sqlite_ct.check(ext) == []


@pytest.mark.parametrize("undo", ["ROLLBACK", "ROLLBACK TO s"])
def test_rollback_leaves_no_bsn_behind(ext, plain, undo):
    p = Portable(ext, plain, "CREATE TABLE t(id INTEGER PRIMARY KEY, v CHECK (v IS NOT 'bad'))",
                 "t", ["id"], [{"id": 1, "v": "a"}])
    log = q(ext, "SELECT * FROM __sysTxCommitSequence")
    q(plain, "BEGIN")
    q(plain, "SAVEPOINT s")
    q(plain, "INSERT INTO t(id, v) VALUES (2, 'b')")
    q(plain, "UPDATE t SET v = 'c'")
    q(plain, "DELETE FROM t WHERE id = 1")
    q(plain, undo)
    if undo != "ROLLBACK":
        with pytest.raises(apsw.ConstraintError):   # a failed statement: rows 3, 4
            q(plain, "INSERT INTO t(id, v) VALUES (3, 'ok'), (4, 'bad')")
        q(plain, "COMMIT")
    assert q(ext, "SELECT * FROM __sysTxCommitSequence") == log
    assert p.tombstones() == []
    assert len(p.changes()) == 0
    q(plain, "UPDATE t SET v = 'later'")
    assert p.changes().updates == [{"id": 1, "v": "later"}]


# ----------------------------------------------------------- other hosts

def test_sqlite3_shell_without_load(ext, db_path):
    if not os.access(SQLITE3_SHELL, os.X_OK):
        pytest.skip(f"{SQLITE3_SHELL} (Debian package sqlite3) is not installed")
    p = Portable(ext, ext, UNIQUE_T, "t", ["id"],
                 AB + [{"id": 3, "u": "c", "v": "z"}, {"id": 4, "u": "d", "v": "w"}])
    script = textwrap.dedent("""\
        .bail on
        PRAGMA recursive_triggers = OFF;
        INSERT INTO t(id, u, v) VALUES (10, 'j', 'shell');
        UPDATE t SET v = 'changed' WHERE id = 2;
        BEGIN;
        DELETE FROM t WHERE id = 3;
        INSERT OR REPLACE INTO t(id, u, v) VALUES (11, 'a', 'replaced a');
        INSERT OR IGNORE INTO t(id, u, v) VALUES (12, 'b', 'ignored');
        INSERT INTO t(id, u, v) VALUES (4, 'x', 'upsert') ON CONFLICT(id) DO UPDATE SET v = excluded.v;
        UPDATE t SET id = 20 WHERE id = 10;
        COMMIT;
        SELECT 'done', count(*) FROM t;
        """)
    out = subprocess.run([SQLITE3_SHELL, "-batch", db_path], input=script, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done|4"
    probe = subprocess.run([SQLITE3_SHELL, "-batch", db_path, "SELECT sqlite_ct_version();"],
                           text=True, capture_output=True, timeout=60)
    assert "no such function: sqlite_ct_version" in probe.stderr
    cs = p.changes()
    assert by_key(cs.inserts) == [{"id": 11, "u": "a", "v": "replaced a"},
                                  {"id": 20, "u": "j", "v": "shell"}]
    assert by_key(cs.updates) == [{"id": 2, "u": "b", "v": "changed"},
                                  {"id": 4, "u": "d", "v": "upsert"}]
    assert by_key(cs.deletes) == [{"id": 1}, {"id": 3}]


def test_stdlib_sqlite3_of_debian_python_without_the_extension(ext, db_path):
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} (Debian's python3) is not installed")
    p = Portable(ext, ext, UNIQUE_T, "t", ["id"], AB)
    script = textwrap.dedent("""\
        import json, sqlite3, sys
        conn = sqlite3.connect(sys.argv[1], isolation_level=None)
        out = {"version": sqlite3.sqlite_version, "modules": "sqlite_ct" in sys.modules}
        conn.execute("INSERT INTO t(id, u, v) VALUES (3, 'c', 'py')")
        with conn:
            conn.execute("BEGIN")
            conn.execute("UPDATE t SET v = ? WHERE id = 1", ("x\\x00y",))
            conn.execute("DELETE FROM t WHERE id = 2")
            conn.execute("REPLACE INTO t(id, u, v) VALUES (4, 'c', 'replaced 3')")
        try:
            conn.execute("SELECT sqlite_ct_version()")
        except sqlite3.OperationalError as exc:
            out["probe"] = str(exc)
        print(json.dumps(out))
        """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([SYSTEM_PYTHON, "-c", script, db_path], text=True,
                         capture_output=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["probe"] == "no such function: sqlite_ct_version"
    assert doc["modules"] is False
    cs = p.changes()
    assert cs.inserts == [{"id": 4, "u": "c", "v": "replaced 3"}]
    assert cs.updates == [{"id": 1, "u": "a", "v": "x\x00y"}]
    assert cs.deletes == [{"id": 2}]   # 3 was inserted and replaced in the window


def test_trusted_schema_off(ext, plain):
    """The triggers call only built-in functions, which SQLite runs from a
    schema it does not trust."""
    q(plain, "PRAGMA trusted_schema=OFF")
    p = Portable(ext, plain, UNIQUE_T, "t", ["id"], AB)
    q(plain, "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')")
    q(plain, "UPDATE t SET v = 'w' WHERE id = 2")
    cs = p.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == (
        [{"id": 3, "u": "a", "v": "z"}], [{"id": 2, "u": "b", "v": "w"}], [{"id": 1}])


def test_add_column_is_tracked(ext, plain):
    p = Portable(ext, plain, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "t", ["id"],
                 [{"id": 1, "v": 1}])
    q(plain, "ALTER TABLE t ADD COLUMN extra TEXT")
    q(plain, "UPDATE t SET extra = 'new' WHERE id = 1")
    assert p.changes().updates == [{"id": 1, "v": 1, "extra": "new"}]


def test_rename_table_written_before_sqlite_ct_notices(ext, plain):
    """RENAME TO rewrites the table inside the triggers but not the name the
    tombstones carry; the next sqlite_ct call on `ext` moves them over."""
    Portable(ext, plain, UNIQUE_T, "t", ["id"], AB)
    anchor = sqlite_ct.last_committed_csn(ext)
    replica = Replica(["id"], table_rows(ext, "t", ["id"]))
    q(plain, "ALTER TABLE t RENAME TO t2")
    q(plain, "DELETE FROM t2 WHERE id = 1")
    q(plain, "INSERT OR REPLACE INTO t2(id, u, v) VALUES (3, 'b', 'z')")
    cs = sqlite_ct.enumerate_changes(ext, "t2", anchor)
    replica.apply(cs)
    assert replica.rows == table_rows(ext, "t2", ["id"])
    assert by_key(cs.deletes) == [{"id": 1}, {"id": 2}]
    q(plain, "UPDATE t2 SET v = 'after' WHERE id = 3")
    assert sqlite_ct.enumerate_changes(ext, "t2", cs.new_anchor).updates == [
        {"id": 3, "u": "b", "v": "after"}]
    assert sqlite_ct.check(ext) == []


def test_rename_key_column(ext, plain):
    p = Portable(ext, plain, "CREATE TABLE t(k TEXT PRIMARY KEY, u UNIQUE, v)", "t", ["k"],
                 [{"k": "a", "u": 1, "v": 1}, {"k": "b", "u": 2, "v": 2}])
    q(plain, "ALTER TABLE t RENAME COLUMN k TO key")
    p.keys = ["key"]
    p.replica = Replica(["key"], {k: {"key": r["k"], "u": r["u"], "v": r["v"]}
                                  for k, r in p.replica.rows.items()})
    q(plain, "UPDATE t SET key = 'c' WHERE key = 'a'")
    q(plain, "REPLACE INTO t(key, u, v) VALUES ('d', 2, 3)")
    cs = p.changes()
    assert by_key(cs.deletes) == [{"key": "a"}, {"key": "b"}]
    assert by_key(cs.inserts) == [{"key": "c", "u": 1, "v": 1}, {"key": "d", "u": 2, "v": 3}]


# ------------------------------------------------------- DESIGN §5 traps

@pytest.mark.parametrize("before_tracking", [False, True], ids=["tracked-rows", "older-rows"])
def test_insert_or_replace_deleting_another_key(ext, writer, before_tracking):
    p = Portable(ext, writer, UNIQUE_T, "t", ["id"], AB, before_tracking)
    p.run("INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')")
    cs = p.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([{"id": 3, "u": "a", "v": "z"}], [],
                                                    [{"id": 1}])
    assert len(p.tombstones()) == 1   # the DELETE trigger and the sweep never both write


def test_replace_deleting_two_rows_through_two_indexes(ext, writer):
    p = Portable(ext, writer, "CREATE TABLE t(id INTEGER PRIMARY KEY, u UNIQUE, w UNIQUE)",
                 "t", ["id"], [{"id": 1, "u": "a", "w": "p"}, {"id": 2, "u": "b", "w": "q"},
                               {"id": 3, "u": "c", "w": "r"}])
    p.run("REPLACE INTO t(id, u, w) VALUES (4, 'a', 'q')")
    cs = p.changes()
    assert by_key(cs.deletes) == [{"id": 1}, {"id": 2}]
    assert cs.inserts == [{"id": 4, "u": "a", "w": "q"}]


def test_update_or_replace_deleting_another_key(ext, writer):
    p = Portable(ext, writer, UNIQUE_T, "t", ["id"], AB + [{"id": 3, "u": "c", "v": "w"}])
    p.run("UPDATE OR REPLACE t SET u = 'a' WHERE id = 2")
    cs = p.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [{"id": 2, "u": "a", "v": "y"}],
                                                    [{"id": 1}])


def test_unique_on_conflict_replace_column(ext, writer):
    p = Portable(ext, writer, "CREATE TABLE t(id INTEGER PRIMARY KEY, "
                              "u TEXT UNIQUE ON CONFLICT REPLACE, v TEXT)",
                 "t", ["id"], AB + [{"id": 3, "u": "c", "v": "w"}])
    p.run("INSERT INTO t(id, u, v) VALUES (4, 'a', 'z')")
    assert p.changes().deletes == [{"id": 1}]
    p.run("UPDATE t SET u = 'c' WHERE id = 2")
    cs = p.changes()
    assert (cs.updates, cs.deletes) == ([{"id": 2, "u": "c", "v": "y"}], [{"id": 3}])


def test_replace_victim_that_survives_a_partial_unique_index(ext, writer):
    """Rows outside a partial UNIQUE index match the capture but are not
    deleted: the sweep finds them by key and writes no tombstone."""
    p = Portable(ext, writer, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT, live INT)",
                 "t", ["id"])
    q(ext, "CREATE UNIQUE INDEX t_u ON t(u) WHERE live")
    sqlite_ct.create_schema(ext, "t", mode="portable")   # pick the index up
    p.insert([{"id": 1, "u": "a", "live": 0}, {"id": 2, "u": "a", "live": 1}])
    p.changes()
    p.run("INSERT OR REPLACE INTO t(id, u, live) VALUES (3, 'a', 1)")
    cs = p.changes()
    assert cs.deletes == [{"id": 2}]
    assert sorted(r for (r,) in q(ext, "SELECT id FROM t")) == [1, 3]


@pytest.mark.parametrize("ddl", [UNIQUE_T, "CREATE TABLE t(id INTEGER PRIMARY KEY, u, v)"],
                         ids=["with-unique", "key-only"])
def test_insert_or_replace_of_the_same_key(ext, writer, ddl):
    p = Portable(ext, writer, ddl, "t", ["id"], AB)
    p.run("INSERT OR REPLACE INTO t(id, u, v) VALUES (1, 'c', 'new')")
    cs = p.changes()
    assert cs.inserts == [{"id": 1, "u": "c", "v": "new"}]
    assert cs.deletes in ([], [{"id": 1}])


@pytest.mark.parametrize("statement", [
    "INSERT OR IGNORE INTO t(id, u, v) VALUES (1, 'q', 'dup-key')",
    "INSERT OR IGNORE INTO t(id, u, v) VALUES (7, 'a', 'dup-unique')",
    "INSERT INTO t(id, u, v) VALUES (7, 'a', 'dup-unique') ON CONFLICT DO NOTHING",
    "UPDATE OR IGNORE t SET u = 'a' WHERE id = 2",
], ids=["insert-key", "insert-unique", "upsert-do-nothing", "update-unique"])
def test_or_ignore_leaves_nothing(ext, writer, statement):
    p = Portable(ext, writer, UNIQUE_T, "t", ["id"], AB)
    table_before = q(ext, "SELECT * FROM t ORDER BY id")
    log_before = q(ext, "SELECT * FROM __sysTxCommitSequence")
    p.run(statement)
    assert q(ext, "SELECT * FROM t ORDER BY id") == table_before
    assert q(ext, "SELECT * FROM __sysTxCommitSequence") == log_before
    assert p.tombstones() == []
    cs = p.changes()
    assert len(cs) == 0 and cs.new_anchor == cs.since
    p.run("DELETE FROM t WHERE id = 1", "UPDATE t SET v = 'Y' WHERE id = 2")
    cs = p.changes()
    assert (cs.updates, cs.deletes) == ([{"id": 2, "u": "b", "v": "Y"}], [{"id": 1}])
    assert len(p.tombstones()) == 1


@pytest.mark.parametrize("before_tracking", [False, True], ids=["tracked-rows", "older-rows"])
@pytest.mark.parametrize("target", ["id", "u"])
def test_upsert_do_update_is_an_update(ext, writer, target, before_tracking):
    p = Portable(ext, writer, UNIQUE_T, "t", ["id"], AB, before_tracking)
    row = "(1, 'a', 'new')" if target == "id" else "(9, 'a', 'new')"
    p.run(f"INSERT INTO t(id, u, v) VALUES {row} "
          f"ON CONFLICT({target}) DO UPDATE SET v = excluded.v")
    cs = p.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [{"id": 1, "u": "a", "v": "new"}], [])
    assert p.tombstones() == []


KEY_SHAPES = {
    "integer-primary-key": ("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", ["id"],
                            {"id": 1}, {"id": 10}, {"id": 2}),
    "text-key": ("CREATE TABLE t(k TEXT PRIMARY KEY, v TEXT)", ["k"],
                 {"k": "a"}, {"k": "z"}, {"k": "b"}),
    "composite": ("CREATE TABLE t(a INTEGER, b TEXT, v TEXT, PRIMARY KEY(a, b))", ["a", "b"],
                  {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}),
    "without-rowid-composite": (
        "CREATE TABLE t(a BLOB, b REAL, v TEXT, PRIMARY KEY(b, a)) WITHOUT ROWID", ["b", "a"],
        {"a": b"\x00k", "b": 1.5}, {"a": b"\x00k", "b": -0.25}, {"a": b"", "b": 1.5}),
}


@pytest.mark.parametrize("shape", list(KEY_SHAPES))
def test_update_changing_the_primary_key(ext, writer, shape):
    ddl, keys, old, new, other = KEY_SHAPES[shape]
    p = Portable(ext, writer, ddl, "t", keys, [dict(old, v="moved"), dict(other, v="stays")])
    sets = ", ".join(f"{quote(c)} = ?" for c in new)
    cond = " AND ".join(f"{quote(c)} = ?" for c in old)
    q(writer, f"UPDATE t SET {sets} WHERE {cond}", tuple(new.values()) + tuple(old.values()))
    cs = p.changes()
    assert cs.deletes == [old]
    assert cs.inserts == [dict(new, v="moved")]
    assert cs.updates == []


def test_key_changes_and_reinserts_in_one_transaction(ext, writer):
    p = Portable(ext, writer, "CREATE TABLE t(k TEXT PRIMARY KEY, v)", "t", ["k"],
                 [{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    p.run("BEGIN", "UPDATE t SET k = 'c' WHERE k = 'a'", "UPDATE t SET k = 'd' WHERE k = 'c'",
          "DELETE FROM t WHERE k = 'b'", "INSERT INTO t(k, v) VALUES ('b', 3)",
          "DELETE FROM t WHERE k = 'b'", "INSERT INTO t(k, v) VALUES ('a', 4)", "COMMIT")
    cs = p.changes()
    assert by_key(cs.inserts) == [{"k": "a", "v": 4}, {"k": "d", "v": 1}]
    assert by_key(cs.deletes) == [{"k": "a"}, {"k": "b"}]


def test_null_transitions(ext, writer):
    p = Portable(ext, writer, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "t", ["id"],
                 [{"id": 1, "v": None}])
    for value in (1, None, 0, None, "", None):
        p.run(f"UPDATE t SET v = {'NULL' if value is None else repr(value)}")
        assert p.changes().updates == [{"id": 1, "v": value}]


def test_null_key_in_a_rowid_table(ext, writer):
    p = Portable(ext, writer, "CREATE TABLE t(k TEXT PRIMARY KEY, v)", "t", ["k"],
                 [{"k": None, "v": 1}])
    p.run("UPDATE t SET k = 'x' WHERE k IS NULL")
    cs = p.changes()
    assert (cs.inserts, cs.deletes) == ([{"k": "x", "v": 1}], [{"k": None}])
    p.run("UPDATE t SET k = NULL")
    cs = p.changes()
    assert (cs.inserts, cs.deletes) == ([{"k": None, "v": 1}], [{"k": "x"}])


def test_replace_deleting_two_rows_with_null_keys(ext, writer):
    """Two victims whose keys are both NULL share one text key; one tombstone
    says the key is gone (a replica keyed by value holds one such row)."""
    p = Portable(ext, writer, "CREATE TABLE t(k TEXT PRIMARY KEY, u UNIQUE, w UNIQUE)", "t",
                 ["k"], [{"k": None, "u": 1, "w": 1}, {"k": "x", "u": 3, "w": 3}])
    p.insert([{"k": None, "u": 2, "w": 2}])   # a second NULL key (the replica keeps one)
    p.changes(converge=False)
    with pytest.raises(apsw.ConstraintError, match="UNIQUE constraint failed: t"):
        p.run("INSERT OR FAIL INTO t(k, u, w) VALUES ('y', 1, 2)")
    p.run("INSERT OR REPLACE INTO t(k, u, w) VALUES ('y', 1, 2)")
    cs = p.changes()
    assert (cs.inserts, cs.deletes) == ([{"k": "y", "u": 1, "w": 2}], [{"k": None}])


@pytest.mark.parametrize("names", [
    ('we"ird tab', 'k ey', "v'al"),
    ("\u00fcn\u00efc\u00f8d\u00e9", "\u4e2d", "\U0001F600"),
    ("select", "from", "where"),
], ids=["quotes-spaces", "unicode", "keywords"])
def test_identifiers_that_need_quoting(ext, writer, names):
    table, key, col = names
    ddl = (f"CREATE TABLE {quote(table)}({quote(key)} TEXT PRIMARY KEY, {quote(col)} "
           f"UNIQUE)")
    p = Portable(ext, writer, ddl, table, [key], [{key: "a", col: 1}, {key: "b", col: 2}])
    q(writer, f"REPLACE INTO {quote(table)}({quote(key)}, {quote(col)}) VALUES ('c', 1)")
    q(writer, f"UPDATE {quote(table)} SET {quote(key)} = 'd' WHERE {quote(key)} = 'b'")
    cs = p.changes()
    assert by_key(cs.deletes) == [{key: "a"}, {key: "b"}]
    assert by_key(cs.inserts) == [{key: "c", col: 1}, {key: "d", col: 2}]


def test_columns_shadowing_rowid(ext, writer):
    p = Portable(ext, writer, "CREATE TABLE t(rowid TEXT, _rowid_ TEXT, k INTEGER PRIMARY KEY, "
                              "u UNIQUE)", "t", ["k"],
                 [{"rowid": "r", "_rowid_": "s", "k": 1, "u": 1}])
    p.run("UPDATE t SET rowid = 'x' WHERE k = 1", "INSERT OR REPLACE INTO t(k, u) VALUES (2, 1)")
    cs = p.changes()
    assert (cs.inserts, cs.deletes) == ([{"rowid": None, "_rowid_": None, "k": 2, "u": 1}],
                                        [{"k": 1}])


KEY_VALUES = [0, 1, -1, 2**63 - 1, -2**63, 1.5, -0.25, 0.1, 1e308, -1e-300, 5e-324,
              2.2250738585072014e-308, 1.7976931348623157e308, float("inf"), float("-inf"),
              "", "a", "x\x00y", "\u00e9\u4e2d\U0001F600", b"", b"\x00\xff", b"\x00"]


@pytest.mark.parametrize("via", ["delete", "replace"])
def test_key_values_of_every_type(ext, writer, via):
    """Deleted keys come back from the text form with their exact type and
    bits, whether a DELETE trigger or the REPLACE sweep (which looks the
    victim's key values up again) wrote the tombstone."""
    p = Portable(ext, writer, "CREATE TABLE t(k PRIMARY KEY, u UNIQUE)", "t", ["k"],
                 [{"k": k, "u": i} for i, k in enumerate(KEY_VALUES)])
    if via == "delete":
        p.run("DELETE FROM t")
    else:
        for i in range(len(KEY_VALUES)):
            q(writer, "INSERT OR REPLACE INTO t(k, u) VALUES (?, ?)", (f"new{i}", i))
    cs = p.changes()
    assert typed_rows(cs.deletes) == typed_rows([{"k": k} for k in KEY_VALUES])


def test_negative_zero_key_comes_back_as_zero(ext, writer):
    """Pure SQL cannot see the sign of a zero: the text form records -0.0 as
    0.0, which is the same key for SQLite (and for Python's ==)."""
    p = Portable(ext, writer, "CREATE TABLE t(k PRIMARY KEY, v)", "t", ["k"], [{"k": -0.0, "v": 1}])
    assert typed(val(ext, "SELECT k FROM t")) == typed(-0.0)
    p.run("DELETE FROM t")
    (deleted,) = p.changes().deletes
    assert typed(deleted["k"]) == typed(0.0)


def test_composite_without_rowid_replace(ext, writer):
    p = Portable(ext, writer, "CREATE TABLE t(k1 TEXT, k2 INTEGER, u UNIQUE, v, "
                              "PRIMARY KEY(k1, k2)) WITHOUT ROWID", "t", ["k1", "k2"],
                 [{"k1": "x", "k2": 1, "u": "a", "v": 1}, {"k1": "x", "k2": 2, "u": "b", "v": 2},
                  {"k1": "y", "k2": 1, "u": "c", "v": 3}])
    p.run("INSERT OR REPLACE INTO t(k1, k2, u, v) VALUES ('y', 1, 'a', 4)",
          "UPDATE OR REPLACE t SET u = 'a' WHERE k1 = 'x' AND k2 = 2")
    cs = p.changes()
    assert by_key(cs.deletes) == [{"k1": "x", "k2": 1}, {"k1": "y", "k2": 1}]
    assert cs.inserts == [{"k1": "x", "k2": 2, "u": "a", "v": 2}] or \
        cs.updates == [{"k1": "x", "k2": 2, "u": "a", "v": 2}]


@pytest.mark.parametrize("verb", ["INSERT OR ROLLBACK", "INSERT OR ABORT", "INSERT OR FAIL",
                                  "INSERT OR IGNORE", "INSERT OR REPLACE"])
def test_outer_conflict_policy_does_not_reach_the_triggers(ext, writer, verb):
    """SQLite imposes the outer statement's OR clause on statements inside
    triggers; none of the triggers' statements may conflict."""
    p = Portable(ext, writer, UNIQUE_T, "t", ["id"], AB)
    p.run("BEGIN", f"{verb} INTO t(id, u, v) VALUES (3, 'c', 'z'), (4, 'd', 'w')",
          "DELETE FROM t WHERE id = 3", f"{verb} INTO t(id, u, v) VALUES (3, 'c', 'again')",
          "COMMIT")
    cs = p.changes()
    assert by_key(cs.inserts) == [{"id": 3, "u": "c", "v": "again"},
                                  {"id": 4, "u": "d", "v": "w"}]


# ------------------------------------------------------------- the guard

@pytest.mark.parametrize("sql", [
    "UPDATE t SET __sysChangeTxBsn = 1 WHERE id = 1",
    "UPDATE t SET __sysInsertTxBsn = NULL WHERE id = 1",
    "UPDATE t SET __sysChangeTxBsn = 0, v = 'z' WHERE id = 1",
    "UPDATE t SET __sysTrackingContext = x'00112233445566778899aabbccddeeff' WHERE id = 1",
    "UPDATE t SET __sysChangeTxBsn = (SELECT max(__sysTxCsn) FROM __sysTxCommitSequence)",
])
def test_guard_refuses_lies(ext, writer, sql):
    p = Portable(ext, writer, UNIQUE_T, "t", ["id"], AB)
    with pytest.raises(HOST_ERRORS) as exc:
        p.run(sql)
    assert str(exc.value).endswith(GUARD.format("t"))
    assert len(p.changes()) == 0


def test_guard_accepts_what_tracking_writes(ext, writer):
    p = Portable(ext, writer, UNIQUE_T, "t", ["id"], AB)
    stamps = q(ext, "SELECT __sysChangeTxBsn, __sysInsertTxBsn, __sysTrackingContext FROM t "
                    "WHERE id = 1")
    # writing back what was read (ORMs do) and NULL as context: an update
    q(writer, "UPDATE t SET v = 'orm', __sysChangeTxBsn = ?, __sysInsertTxBsn = ?, "
              "__sysTrackingContext = ? WHERE id = 1", stamps[0])
    p.run("UPDATE t SET __sysTrackingContext = NULL WHERE id = 2")
    cs = p.changes()
    assert by_key(cs.updates) == [{"id": 1, "u": "a", "v": "orm"}, {"id": 2, "u": "b", "v": "y"}]


def test_insert_with_sys_values_is_overwritten(ext, writer):
    p = Portable(ext, writer, UNIQUE_T, "t", ["id"], AB)
    p.run("INSERT INTO t(id, u, v, __sysChangeTxBsn, __sysInsertTxBsn, __sysTrackingContext) "
          "VALUES (3, 'c', 'z', 1, 1, x'00')")
    assert q(ext, "SELECT __sysChangeTxBsn = __sysInsertTxBsn, __sysChangeTxBsn > ?, "
                  "__sysTrackingContext FROM t WHERE id = 3", (p.anchor,)) == [(1, 1, None)]
    assert p.changes().inserts == [{"id": 3, "u": "c", "v": "z"}]


# ------------------------------------------------------- tracking options

@pytest.mark.parametrize("options", range(1, 8))
def test_tracking_options(ext, plain, options):
    p = Portable(ext, plain, UNIQUE_T, "t", ["id"], AB, options=options)
    p.run("INSERT INTO t(id, u, v) VALUES (3, 'c', 'new')", "UPDATE t SET v = 'upd' WHERE id = 1",
          "DELETE FROM t WHERE id = 2")
    cs = p.changes(converge=options == 7)
    assert cs.inserts == ([{"id": 3, "u": "c", "v": "new"}] if options & 1 else [])
    assert cs.updates == ([{"id": 1, "u": "a", "v": "upd"}] if options & 2 else [])
    assert cs.deletes == ([{"id": 2}] if options & 4 else [])


def test_key_change_is_an_insert_when_updates_are_not_tracked(ext, plain):
    """Options INSERT | DELETE: the row under its new key is an insert and is
    enumerated. (Native mode, as of this writing, stamps its insert BSN but not
    its change BSN, so no enumeration returns it; reported to the lead.)"""
    p = Portable(ext, plain, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)", "t", ["id"],
                 [{"id": 1, "v": "a"}], options=5)
    p.run("UPDATE t SET id = 2 WHERE id = 1")
    cs = p.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([{"id": 2, "v": "a"}], [], [{"id": 1}])


# ---------------------------------------------------- the text form of __sysRK

def unpack(conn, rk, n):
    return tuple(val(conn, f"SELECT sqlite_ct_unpack_key(?, {i})", (rk,)) for i in range(n))


@pytest.mark.parametrize("values", [
    (7,), (-2**63,), (2**63 - 1,), (1.5,), (float("inf"),), (5e-324,), ("",), ("x\x00y",),
    ("\u00e9\U0001F600",), (b"",), (b"\x00\xff",), (None,),
    (7, "ab", "", 2.5, b"\x01"), (None,),
])
def test_text_key_unpacks_like_the_binary_key(ext, plain, values):
    cols = ", ".join(f"k{i}" for i in range(len(values)))
    q(ext, f"CREATE TABLE t({cols}, v, PRIMARY KEY({cols}))")
    sqlite_ct.create_schema(ext, "t", mode="portable")
    q(plain, f"INSERT INTO t({cols}) VALUES ({', '.join('?' for _ in values)})", values)
    q(plain, "DELETE FROM t")
    rk = val(ext, "SELECT __sysRK FROM __sysOCSDeletedRows")
    assert isinstance(rk, str) and rk.isascii()
    packed = val(ext, f"SELECT sqlite_ct_pack_key({', '.join('?' for _ in values)})", values)
    assert val(ext, "SELECT sqlite_ct_key_count(?)", (rk,)) == len(values)
    assert [typed(v) for v in unpack(ext, rk, len(values))] == \
        [typed(v) for v in unpack(ext, packed, len(values))] == [typed(v) for v in values]


@pytest.mark.parametrize("values", [(7, "ab", None, 2.5, b"\x01"), (None, None)])
def test_null_in_a_composite_key_is_refused_in_portable_mode(ext, plain, values):
    """A writer without the extension is refused too: a replica could never
    match the row by key (native mode refuses it in its WHENs)."""
    cols = ", ".join(f"k{i}" for i in range(len(values)))
    q(ext, f"CREATE TABLE t({cols}, v, PRIMARY KEY({cols}))")
    sqlite_ct.create_schema(ext, "t", mode="portable")
    with pytest.raises(apsw.ConstraintError, match="NULL in the PRIMARY KEY"):
        q(plain, f"INSERT INTO t({cols}) VALUES ({', '.join('?' for _ in values)})", values)
    assert val(ext, "SELECT count(*) FROM t") == 0


@pytest.mark.parametrize("encoding, tag", [("UTF-8", "t"), ("UTF-16le", "u"), ("UTF-16be", "v")])
def test_text_keys_in_every_database_encoding(tmp_path, encoding, tag):
    """hex() shows text in the database's encoding; the text form records which."""
    path = str(tmp_path / "enc.db")
    ext = open_ext(path)
    plain = open_plain(path)
    try:
        q(ext, f"PRAGMA encoding='{encoding}'")
        texts = ["ab", "", "x\x00y", "\u00e9\U0001F600"]
        p = Portable(ext, plain, "CREATE TABLE t(k TEXT PRIMARY KEY, u UNIQUE)", "t", ["k"],
                     [{"k": k, "u": i} for i, k in enumerate(texts)])
        p.run("INSERT OR REPLACE INTO t(k, u) VALUES ('new', 0)", "DELETE FROM t WHERE u > 0")
        cs = p.changes()
        assert typed_rows(cs.deletes) == typed_rows([{"k": k} for k in texts])
        assert {rk[0] for (rk,) in q(ext, "SELECT __sysRK FROM __sysOCSDeletedRows")} == {tag}
    finally:
        plain.close()
        ext.close()


def test_text_key_examples_of_the_format(ext):
    """The examples in keycodec.c's FORMAT section."""
    assert unpack(ext, "i7", 1) == (7,)
    assert unpack(ext, "i7t6162", 2) == (7, "ab")
    assert unpack(ext, "r3FF8000000000000", 1) == (1.5,)
    assert unpack(ext, "nb00FF", 2) == (None, b"\x00\xff")
    assert unpack(ext, "u61006200v00610062", 2) == ("ab", "ab")


def malformed(why):
    return f"sqlite-ct: malformed tombstone key: it {why}"


MALFORMED_TEXT = [
    ("", malformed("holds no values")),
    ("x", malformed("has an unknown type tag")),
    ("I7", malformed("has an unknown type tag")),
    ("i", malformed("has a malformed integer field")),
    ("i-", malformed("has a malformed integer field")),
    ("i007", malformed("has a malformed integer field")),
    ("i-0", malformed("has a malformed integer field")),
    ("i+7", malformed("has a malformed integer field")),
    ("i9223372036854775808", malformed("has a malformed integer field")),
    ("i-9223372036854775809", malformed("has a malformed integer field")),
    ("i99999999999999999999", malformed("has a malformed integer field")),
    ("i7 ", malformed("has an unknown type tag")),
    ("r3FF800000000000", malformed("has a real field that is not 16 hex digits")),
    ("r3FF80000000000000", malformed("has a real field that is not 16 hex digits")),
    ("r3ff8000000000000", malformed("has a real field that is not 16 hex digits")),
    ("r7FF8000000000000", malformed("has a NaN real field")),
    ("rFFF0000000000001", malformed("has a NaN real field")),
    ("t6", malformed("has a hex field of odd length")),
    ("t6a", malformed("has a hex field of odd length")),
    ("t61a", malformed("has an unknown type tag")),
    ("b00g", malformed("has an unknown type tag")),
    ("u610", malformed("has a UTF-16 field of odd length")),
    ("v006100", malformed("has a UTF-16 field of odd length")),
    ("n7", malformed("has an unknown type tag")),
    ("i7\x00", malformed("has an unknown type tag")),
    ("t\u00e9", malformed("has an unknown type tag")),
]


@pytest.mark.parametrize("rk, message", MALFORMED_TEXT, ids=[repr(m[0]) for m in MALFORMED_TEXT])
@pytest.mark.parametrize("sql", ["SELECT sqlite_ct_unpack_key(?, 0)",
                                 "SELECT sqlite_ct_key_count(?)"], ids=["unpack", "count"])
def test_malformed_text_key(ext, sql, rk, message):
    with pytest.raises(apsw.SQLError) as exc:
        q(ext, sql, (rk,))
    assert str(exc.value) == message
    assert val(ext, "SELECT 1") == 1


@pytest.mark.parametrize("bad", ["5", "NULL", "1.5"])
def test_key_that_is_neither_blob_nor_text(ext, bad):
    with pytest.raises(apsw.SQLError) as exc:
        q(ext, f"SELECT sqlite_ct_key_count({bad})")
    assert str(exc.value) == "sqlite-ct: malformed tombstone key: not a BLOB or TEXT"


def test_random_text_never_crashes(ext):
    rnd = random.Random(5)
    alphabet = "inrtb0123456789ABCDEF-abcdef\x00 "
    for _ in range(3000):
        rk = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 24)))
        try:
            n = val(ext, "SELECT sqlite_ct_key_count(?)", (rk,))
        except apsw.SQLError:
            continue
        for i in range(n):
            val(ext, "SELECT hex(sqlite_ct_unpack_key(?, ?))", (rk, i))  # any bytes


def test_unpack_key_of_every_truncation(ext, plain):
    q(ext, "CREATE TABLE t(a, b, c, PRIMARY KEY(a, b, c))")
    sqlite_ct.create_schema(ext, "t", mode="portable")
    q(plain, "INSERT INTO t(a, b, c) VALUES (-123, 'text', 2.5)")
    q(plain, "DELETE FROM t")
    rk = val(ext, "SELECT __sysRK FROM __sysOCSDeletedRows")
    for n in range(len(rk)):
        try:
            count = val(ext, "SELECT sqlite_ct_key_count(?)", (rk[:n],))
        except apsw.SQLError:
            continue
        assert count < 3   # a prefix never passes for the whole key


def test_python_unpack_key_accepts_the_text_form(ext, plain):
    q(ext, "CREATE TABLE t(a, b, PRIMARY KEY(a, b))")
    sqlite_ct.create_schema(ext, "t", mode="portable")
    q(plain, "INSERT INTO t(a, b) VALUES (1, 'x')")
    q(plain, "DELETE FROM t")
    rk = val(ext, "SELECT __sysRK FROM __sysOCSDeletedRows")
    assert sqlite_ct.unpack_key(ext, "t", rk) == (1, "x")


# ----------------------------------------------------------- REAL keys, exactly

def random_doubles(n, seed=11):
    rnd = random.Random(seed)
    out = [2.0 ** e for e in range(-1074, 1024, 7)] + [-(2.0 ** e) for e in range(-1074, 1024, 13)]
    out += [float(f"{m}e{e}") for e in range(-323, 308, 9) for m in ("1", "9.999999999999999")]
    out += [math.nextafter(2.0 ** e, 0) for e in range(-1021, 1024, 17)]
    while len(out) < n:
        x = struct.unpack("<d", struct.pack("<Q", rnd.getrandbits(64)))[0]
        if not math.isnan(x) and x != 0:
            out.append(x)
    return out


def test_real_keys_are_exact(ext, plain):
    """Every deleted REAL key comes back with its exact bits (the portable
    triggers compute the IEEE-754 bits with power-of-two arithmetic)."""
    doubles = random_doubles(1500)
    q(ext, "CREATE TABLE t(k PRIMARY KEY)")
    sqlite_ct.create_schema(ext, "t", mode="portable")
    q(plain, "BEGIN")
    for x in doubles:
        q(plain, "INSERT OR IGNORE INTO t(k) VALUES (?)", (x,))
    q(plain, "DELETE FROM t")
    q(plain, "COMMIT")
    rks = q(ext, "SELECT __sysRK, sqlite_ct_unpack_key(__sysRK, 0) FROM __sysOCSDeletedRows")
    assert len(rks) == len(set(doubles))
    for rk, back in rks:
        assert rk == "r" + struct.pack(">d", back).hex().upper()
    assert {typed(b) for _, b in rks} == {typed(x) for x in doubles}


def test_real_keys_are_the_same_text_in_the_shell(ext, db_path):
    """The shell's SQLite (3.40) and apsw's (newer) print doubles differently
    (printf('%!.17g') of 0.1, of 1e308); the text form must not: GROUP BY
    __sysRK groups the keys that any two writers deleted."""
    if not os.access(SQLITE3_SHELL, os.X_OK):
        pytest.skip(f"{SQLITE3_SHELL} (Debian package sqlite3) is not installed")
    doubles = random_doubles(400, seed=3)
    q(ext, "CREATE TABLE src(x)")
    q(ext, "CREATE TABLE a(k PRIMARY KEY)")
    q(ext, "CREATE TABLE b(k PRIMARY KEY)")
    for table in ("a", "b"):
        sqlite_ct.create_schema(ext, table, mode="portable")
    q(ext, "BEGIN")
    for x in doubles:
        q(ext, "INSERT INTO src(x) VALUES (?)", (x,))
    q(ext, "COMMIT")
    plain = open_plain(db_path)
    try:
        q(plain, "INSERT OR IGNORE INTO a(k) SELECT x FROM src ORDER BY rowid")
        q(plain, "DELETE FROM a")
    finally:
        plain.close()
    out = subprocess.run([SQLITE3_SHELL, "-batch", db_path],
                         input="INSERT OR IGNORE INTO b(k) SELECT x FROM src ORDER BY rowid;\n"
                               "DELETE FROM b;\n", text=True, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    texts = {t: sorted(r for (r,) in q(ext, "SELECT __sysRK FROM __sysOCSDeletedRows "
                                            "WHERE __sysTName = ?", (t,))) for t in "ab"}
    assert texts["a"] == texts["b"] and len(texts["a"]) == len(set(doubles))


# ------------------------------------------------ convergence (hypothesis)

SHAPES = {
    "rowid_unique": ("CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, "
                     "v CHECK (v IS NOT 'bad'))", ("id",), True),
    "typed_key": ("CREATE TABLE t(k PRIMARY KEY NOT NULL, u UNIQUE, v CHECK (v IS NOT 'bad'))",
                  ("k",), True),
    "composite_without_rowid": ("CREATE TABLE t(k1 NOT NULL, k2 INTEGER NOT NULL, u UNIQUE, "
                                "v CHECK (v IS NOT 'bad'), PRIMARY KEY(k1, k2)) WITHOUT ROWID",
                                ("k1", "k2"), True),
}
TYPED_KEYS = [0, 1, 2, -1, 2**63 - 1, 1.5, 0.1, float("inf"), "a", "x\x00y", "\u00e9",
              b"\x00", b""]
VALUES = [None, 0, 7, -2**63, 2.5, -0.0, "", "v", "\u4e2d", b"\xff", "bad"]


def shape_key(shape, i):
    if shape == "typed_key":
        return (TYPED_KEYS[i % len(TYPED_KEYS)],)
    if shape == "composite_without_rowid":
        return (("x", 2.5, b"b")[i % 3], i // 3)
    return (i,)


KEY = st.integers(0, 8)
UNIQUE = st.sampled_from([None, "a", "b", "c"])
VALUE = st.sampled_from(VALUES)
ROW = st.tuples(KEY, UNIQUE, VALUE)
CONN = st.integers(0, 1)
OPS = st.one_of(
    st.tuples(st.just("insert"), CONN, st.sampled_from(
        ["INSERT", "INSERT OR REPLACE", "INSERT OR IGNORE", "INSERT OR FAIL",
         "INSERT OR ROLLBACK"]), st.lists(ROW, min_size=1, max_size=3)),
    st.tuples(st.just("upsert"), CONN, st.sampled_from(["key", "u"]), ROW),
    st.tuples(st.just("update"), CONN, st.sampled_from(
        ["UPDATE", "UPDATE OR REPLACE", "UPDATE OR IGNORE"]), KEY, UNIQUE, VALUE),
    st.tuples(st.just("rekey"), CONN, st.sampled_from(
        ["UPDATE", "UPDATE OR REPLACE", "UPDATE OR IGNORE"]), KEY, KEY),
    st.tuples(st.just("delete"), CONN, KEY),
    st.tuples(st.just("begin"), CONN),
    st.tuples(st.just("commit"), CONN),
    st.tuples(st.just("rollback"), CONN),
    st.tuples(st.just("savepoint"), CONN),
    st.tuples(st.just("rollback_to"), CONN),
    st.tuples(st.just("sync"), CONN),
)

PROFILE = settings(
    max_examples=int(os.environ.get("CT_PORTABLE_EXAMPLES",
                                    "600" if os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
                                    else "150")),
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _statement(shape, op):
    keys = SHAPES[shape][1]
    cols = list(keys) + ["u", "v"]
    kind = op[0]
    if kind == "insert":
        verb, rows = op[2], op[3]
        marks = ", ".join("(" + ", ".join("?" for _ in cols) + ")" for _ in rows)
        params = [x for k, u, v in rows for x in shape_key(shape, k) + (u, v)]
        return f"{verb} INTO t({', '.join(cols)}) VALUES {marks}", params
    if kind == "upsert":
        target, (k, u, v) = op[2], op[3]
        conflict = ", ".join(keys) if target == "key" else "u"
        return (f"INSERT INTO t({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
                f"ON CONFLICT({conflict}) DO UPDATE SET u = excluded.u, v = excluded.v",
                list(shape_key(shape, k)) + [u, v])
    where = " AND ".join(f"{k} IS ?" for k in keys)
    if kind == "update":
        verb, k, u, v = op[2:]
        return f"{verb} t SET u = ?, v = ? WHERE {where}", [u, v] + list(shape_key(shape, k))
    if kind == "rekey":
        verb, k, new = op[2:]
        sets = ", ".join(f"{c} = ?" for c in keys)
        return (f"{verb} t SET {sets} WHERE {where}",
                list(shape_key(shape, new)) + list(shape_key(shape, k)))
    return f"DELETE FROM t WHERE {where}", list(shape_key(shape, op[2]))


@PROFILE
@given(shape=st.sampled_from(sorted(SHAPES)), recursive=st.tuples(st.booleans(), st.booleans()),
       ops=st.lists(OPS, max_size=40))
def test_convergence_with_writers_without_the_extension(shape, recursive, ops):
    ddl, keys, _ = SHAPES[shape]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db.sqlite")
        ext = open_ext(path)
        plain = open_plain(path)
        try:
            q(ext, "PRAGMA journal_mode=WAL")
            for conn in (ext, plain):
                conn.setbusytimeout(0)
            q(ext, ddl)
            sqlite_ct.create_schema(ext, "t", mode="portable")
            for conn, on in zip((ext, plain), recursive):
                q(conn, f"PRAGMA recursive_triggers={int(on)}")
            conns = (ext, plain)
            replica, anchor = Replica(list(keys)), 0
            for op in ops + [("commit", 0), ("commit", 1), ("sync", 0)]:
                conn = conns[op[1]]
                kind = op[0]
                try:
                    if kind == "begin":
                        if not conn.in_transaction:
                            q(conn, "BEGIN")
                    elif kind in ("commit", "rollback"):
                        if conn.in_transaction:
                            q(conn, kind.upper())
                    elif kind == "savepoint":
                        q(conn, "SAVEPOINT s")
                    elif kind == "rollback_to":
                        q(conn, "ROLLBACK TO s")
                    elif kind == "sync":
                        # Enumerating inside a write transaction of the same
                        # connection is a documented limit of portable tables.
                        if not ext.in_transaction:
                            cs = sqlite_ct.enumerate_changes(ext, "t", anchor)
                            replica.apply(cs)
                            anchor = cs.new_anchor
                            assert replica.rows == table_rows(ext, "t", list(keys))
                    else:
                        sql, params = _statement(shape, op)
                        q(conn, sql, params)
                except (apsw.BusyError, apsw.ConstraintError):
                    pass   # another writer holds the lock / a failing statement
                except apsw.SQLError as exc:
                    assert "no such savepoint" in str(exc), exc
            assert replica.rows == table_rows(ext, "t", list(keys))
            assert sqlite_ct.check(ext) == []
            assert val(ext, "SELECT count(*) FROM __sysOCSDeletedRows WHERE __sysInsertTxCsn "
                            "IS NULL OR __sysDeleteTxBsn > ?", (anchor,)) == 0
        finally:
            plain.close()
            ext.close()
