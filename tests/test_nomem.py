"""Out of memory inside the extension: every allocation it makes fails in turn.

A test build of the extension (-DSQLITE_CT_FAULT_INJECT, csrc/fault.c) is
compiled into a temporary directory and loaded into apsw. For each operation
(create_schema in both modes, the upgrade of a layout-2 file, writes through
the triggers, enumeration, key packing, disable_tracking) the allocations the extension makes are counted,
then each one is made to fail in a fresh copy of the database: the operation
must fail with SQLITE_NOMEM ("out of memory"), change nothing, and leave the
database and the connection usable (the same operation then succeeds and gives
what a run without faults gives). The normal build has no such hook.
"""
import os
import shutil
import subprocess
import sysconfig

import apsw
import pytest

import sqlite_ct
from sqlite_ct import loader
from sqlhelpers import q, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
CC = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


@pytest.fixture(scope="module")
def fault_build(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("fault") / ("sqlitect" + (
        sysconfig.get_config_var("SHLIB_SUFFIX") or ".so"))
    sources = sorted(os.path.join(ROOT, "csrc", f) for f in os.listdir(os.path.join(ROOT, "csrc"))
                     if f.endswith(".c"))
    subprocess.run([CC, "-shared", "-fPIC", "-O1", "-DSQLITE_CT_FAULT_INJECT",
                    f'-DSQLITE_CT_VERSION="{sqlite_ct.__version__}"',
                    "-I", os.path.join(ROOT, "csrc"), *sources, "-o", str(out)],
                   check=True, capture_output=True)
    return str(out)


def connect(path, build):
    conn = apsw.Connection(path)
    conn.enable_load_extension(True)
    conn.load_extension(build)
    sqlite_ct.load(conn)       # finds it loaded: checks the version only
    return conn


def inject(conn, n):
    """Fail the nth allocation from now (0: none); the count since the last call."""
    return conn.execute("SELECT sqlite_ct_fault_inject(?)", (n,)).get


def user_rows(conn):
    return q(conn, "SELECT id, v, u FROM t ORDER BY id")


def tracked(path):
    """The database every operation starts from: a tracked table with history."""
    conn = apsw.Connection(path)
    loader.load(conn)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, u TEXT UNIQUE)",
        "INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'z')")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "UPDATE t SET v = 'b2' WHERE id = 2", "DELETE FROM t WHERE id = 3")
    conn.close()


def untracked(path):
    conn = apsw.Connection(path)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, u TEXT UNIQUE)",
        "CREATE TABLE c(a TEXT, b INTEGER, w TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID",
        "INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y')", "INSERT INTO c VALUES ('k', 1, 'w')")
    conn.close()


def layout2(path):
    shutil.copy(os.path.join(FIXTURES, "layout2.db"), path)


def op_create_schema(conn):
    sqlite_ct.create_schema(conn, "t")
    return sqlite_ct.tracked_tables(conn)


def op_create_schema_portable(conn):
    sqlite_ct.create_schema(conn, "c", mode="portable")
    return sqlite_ct.tracked_tables(conn)


def op_upgrade(conn):
    layout = conn.execute("SELECT sqlite_ct_create_system_tables()").get
    return layout, q(conn, "SELECT name FROM sqlite_schema WHERE name GLOB '__sysct_guard_*'")


def op_writes(conn):
    with conn:
        run(conn, "INSERT INTO t(id, v, u) VALUES (4, 'd', 'w')",
            "UPDATE t SET v = 'a2' WHERE id = 1",
            "UPDATE t SET id = 5 WHERE id = 4",
            "INSERT OR REPLACE INTO t(id, v, u) VALUES (6, 'e', 'x')",
            "DELETE FROM t WHERE id = 2")
    return user_rows(conn)


def keys(cs):
    return tuple(sorted(repr(sorted(r.items())) for r in rows)
                 for rows in (cs.inserts, cs.updates, cs.deletes))


def op_disable(conn):
    sqlite_ct.disable_tracking(conn, "t")
    return sqlite_ct.tracked_tables(conn)


def op_enumerate(conn):
    return keys(sqlite_ct.enumerate_changes(conn, "t", 0))


def op_enumerate_bounded(conn):
    """sqlite_ct_changes() with bounds on change_bsn, and the count per BSN
    the sync client plans its upload batches from."""
    return (q(conn, "SELECT op, change_bsn, hex(pk), row_rowid FROM sqlite_ct_changes('t', 0) "
                    "WHERE change_bsn > 0 AND change_bsn <= 9999 ORDER BY 1, 2, 3"),
            q(conn, "SELECT change_bsn, count(*) FROM sqlite_ct_changes('t', 0) "
                    "GROUP BY change_bsn ORDER BY change_bsn"))


def op_enumerate_paged(conn):
    """sqlite_ct_changes() read in pages: each tombstone (tombstones =
    'each'), the rows with NULL stamps and the stamped rows, resumed after a
    position (after_bsn, after_key)."""
    enable = conn.execute("SELECT __sysEnableTxBsn FROM __sysOCSTrackedObjects").get
    return (q(conn, "SELECT op, change_bsn, insert_bsn, hex(pk), context FROM "
                    "sqlite_ct_changes('t', 0) WHERE tombstones = 'each' AND after_bsn = 0"),
            q(conn, "SELECT change_bsn, row_rowid, stamped, op FROM "
                    "sqlite_ct_changes('t', 0) WHERE after_bsn = ? "
                    "AND after_key = sqlite_ct_pack_key(1) AND stamped = 0", (enable,)),
            q(conn, "SELECT change_bsn, row_rowid, hex(pk), stamped FROM "
                    "sqlite_ct_changes('t', 0) WHERE after_bsn = ? "
                    "AND after_key = sqlite_ct_pack_key(0) AND stamped = 1", (enable,)))


CONTEXT = bytes(range(16))


def tracked_with_context(path):
    """tracked(), then a row changed under tracking context CONTEXT."""
    tracked(path)
    conn = apsw.Connection(path)
    loader.load(conn)
    run(conn, "SELECT sqlite_ct_set_tracking_context(x'%s')" % CONTEXT.hex(),
        "UPDATE t SET v = 'ctx' WHERE id = 1")
    conn.close()


def op_enumerate_excluding(conn):
    """Every bind of sqlite_ct_changes()'s phases that copies a value: the
    table's name (?5, which the tombstones = 'each' phase reads) and the
    context left out (?4). A failed bind must fail the query: a NULL in its
    place reads nothing (no tombstone of table NULL) or leaves nothing out."""
    return (q(conn, "SELECT op, change_bsn, hex(pk) FROM sqlite_ct_changes('t', 0, NULL, ?) "
                    "WHERE tombstones = 'each' ORDER BY 1, 2, 3", (CONTEXT,)),
            q(conn, "SELECT op, row_rowid FROM sqlite_ct_changes('t', 0, NULL, ?) "
                    "ORDER BY 1, 2", (CONTEXT,)))


def op_local_change(conn):
    """sqlite_ct_local_change(): the probe of one key a sync client runs per
    incoming row, over a whole statement (its probe kept as auxiliary data)."""
    return q(conn, "SELECT k, sqlite_ct_local_change('t', 0, k) FROM "
                   "(SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 99) "
                   "ORDER BY k")


def op_local_change_text_key(conn):
    """sqlite_ct_local_change() with key values it must copy to bind (TEXT,
    BLOB): a failed bind must fail the probe, not answer "no change"."""
    return q(conn, "SELECT sqlite_ct_local_change('t', 0, 'text key'), "
                   "sqlite_ct_local_change('t', 0, x'00ff'), sqlite_ct_local_change('t', 0, 1)")


def summary(conn):
    """What the database says after the operation, numbers aside: each tracked
    table's changes since 0."""
    return {t: keys(sqlite_ct.enumerate_changes(conn, t, 0))
            for t in sqlite_ct.tracked_tables(conn)}


def tracked_without_defaults(path):
    """A table tracked under SQLITE_DBCONFIG_DEFENSIVE: no stamp DEFAULTs, so
    every insert is stamped by the fix, which binds NEW's key (by copy, for
    TEXT and BLOB keys)."""
    conn = apsw.Connection(path)
    loader.load(conn)
    conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    run(conn, "CREATE TABLE k(id TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID",
        "INSERT INTO k VALUES ('a', '1')")
    sqlite_ct.create_schema(conn, "k")
    conn.close()


def op_fix_text_key(conn):
    with conn:
        run(conn, "INSERT INTO k(id, v) VALUES ('text key', '2')",
            "INSERT INTO k(id, v) VALUES (x'00ff', '3')")
    return q(conn, 'SELECT id, v, "__sysChangeTxBsn" IS NOT NULL FROM k ORDER BY id')


def op_keys(conn):
    # a key longer than the 128 bytes packed on the stack allocates
    return q(conn, "SELECT hex(sqlite_ct_pack_key(1, 'text', x'00ff', 2.5, zeroblob(200))), "
                   "sqlite_ct_unpack_key(sqlite_ct_pack_key(7, 'é'), 1), "
                   "sqlite_ct_key_count(sqlite_ct_pack_key(1, 2, 3))")


OPERATIONS = {
    "create_schema": (untracked, op_create_schema),
    "create_schema, portable mode": (untracked, op_create_schema_portable),
    "layout-2 upgrade": (layout2, op_upgrade),
    "writes through the triggers": (tracked, op_writes),
    "enumeration": (tracked, op_enumerate),
    "enumeration within bounds on change_bsn": (tracked, op_enumerate_bounded),
    "paged enumeration (tombstones = 'each', after_bsn, after_key)": (tracked,
                                                                     op_enumerate_paged),
    "enumeration leaving out a context (binds that copy)": (tracked_with_context,
                                                            op_enumerate_excluding),
    "one key's local change": (tracked, op_local_change),
    "one key's local change, key values bound by copy": (tracked, op_local_change_text_key),
    "disable_tracking": (tracked, op_disable),
    "the fix of inserts without stamp DEFAULTs, keys bound by copy": (
        tracked_without_defaults, op_fix_text_key),
    "key packing": (tracked, op_keys),
}


def state(conn):
    """Everything an operation may change: the schema and every table's rows."""
    tables = [r[0] for r in q(conn, "SELECT name FROM sqlite_schema WHERE type='table' "
                                    "ORDER BY name")]
    return (q(conn, "SELECT type, name, sql FROM sqlite_schema ORDER BY name"),
            {t: q(conn, f'SELECT * FROM "{t}" ORDER BY 1') for t in tables})


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_allocation_failure_reports_nomem_and_changes_nothing(fault_build, tmp_path,
                                                                    name):
    prepare, operation = OPERATIONS[name]
    template = str(tmp_path / "template.db")
    prepare(template)

    # A run without faults: what the operation gives, and how many allocations.
    path = str(tmp_path / "reference.db")
    shutil.copy(template, path)
    conn = connect(path, fault_build)
    inject(conn, 0)
    expected = operation(conn)
    allocations = inject(conn, 0)
    expected_summary = summary(conn)
    conn.close()
    assert allocations > 0, "the operation makes no allocation of its own"

    for n in range(1, allocations + 1):
        path = str(tmp_path / f"fault{n}.db")
        shutil.copy(template, path)
        conn = connect(path, fault_build)
        before = state(conn)
        inject(conn, n)
        with pytest.raises(apsw.NoMemError) as err:
            operation(conn)
        assert inject(conn, 0) >= n
        assert str(err.value) == "out of memory", (n, str(err.value))
        if not conn.get_autocommit():
            conn.execute("ROLLBACK")
        assert state(conn) == before, n
        # the connection and the database are usable: the same operation succeeds
        assert operation(conn) == expected, n
        assert summary(conn) == expected_summary, n
        assert q(conn, "PRAGMA integrity_check") == [("ok",)]
        assert sqlite_ct.check(conn) == []
        conn.close()
        os.remove(path)


def test_the_normal_build_has_no_fault_injection(apsw_conn):
    assert q(apsw_conn, "SELECT count(*) FROM pragma_function_list "
                        "WHERE name = 'sqlite_ct_fault_inject'") == [(0,)]
    with open(loader.loadable_path(), "rb") as f:
        assert b"fault_inject" not in f.read()
