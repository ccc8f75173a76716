"""The statements the write path keeps prepared per connection
(csrc/stmtcache.c): they must never keep a connection from closing, must be
finalized when it closes, and the virtual table that finalizes them must not
be usable from a schema."""
import os
import sqlite3
import subprocess

import apsw
import pytest

import sqlite_ct
from sqlhelpers import q, run

WRITES = ["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
          "SELECT sqlite_ct_create_schema('t')",
          "INSERT INTO t(v) VALUES ('a')",           # first insert: DEFAULT probe, log row
          "INSERT INTO t(v) VALUES ('b')",
          "UPDATE t SET v = 'c' WHERE id = 1",
          "BEGIN", "DELETE FROM t WHERE id = 2", "COMMIT"]


def open_fds(path):
    """How many of this process's file descriptors point at path."""
    real = os.path.realpath(path)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == real:
                n += 1
        except OSError:
            pass
    return n


def test_apsw_connection_closes_and_releases_the_file(db_path):
    conn = apsw.Connection(db_path)
    sqlite_ct.load(conn)
    run(conn, *WRITES)
    assert open_fds(db_path) >= 1
    conn.close()          # sqlite3_close(): refuses while a statement is unfinalized
    assert open_fds(db_path) == 0


def test_stdlib_connection_closes_and_releases_the_file(db_path):
    """sqlite3_close_v2() would leave a zombie connection (and the file open)
    if a cached statement outlived it."""
    sqlite_ct.register_auto_extension()
    conn = sqlite3.connect(db_path, isolation_level=None)
    sqlite_ct.load(conn)
    run(conn, *WRITES)
    conn.close()
    assert open_fds(db_path) == 0


def test_shell_closes_without_complaint(db_path, ext_path):
    script = f".load {ext_path[:-3]}\n" + ";\n".join(WRITES) + ";\n"
    proc = subprocess.run(["sqlite3", db_path], input=script, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_loading_twice_on_one_connection_replaces_the_cache_cleanly(db_path, ext_path):
    conn = apsw.Connection(db_path)
    conn.enable_load_extension(True)
    conn.load_extension(ext_path)
    run(conn, *WRITES[:4])
    conn.load_extension(ext_path)      # replaces the functions and the module
    run(conn, "INSERT INTO t(v) VALUES ('d')", "UPDATE t SET v = 'e'")
    assert q(conn, "SELECT count(*) FROM __sysTxCommitSequence")[0][0] >= 4
    conn.close()
    assert open_fds(db_path) == 0


def test_the_write_path_uses_the_cache(conn):
    assert q(conn, "SELECT * FROM sqlite_ct_stmt_cache") == []
    run(conn, *WRITES)
    cached = dict(q(conn, "SELECT slot, sql FROM sqlite_ct_stmt_cache"))
    assert sorted(cached) == [0, 1, 4]
    assert cached[0].startswith("INSERT OR IGNORE INTO main.__sysTxCommitSequence")
    assert cached[1].startswith("SELECT max(__sysTxCsn)")
    # the statement that enlists sqlite_ct_txn in a transaction (txn.c)
    assert cached[4] == "INSERT INTO main.sqlite_ct_txn VALUES(NULL)"
    # read by the fix (here: the row an OR REPLACE deletes), keyed on the schema
    run(conn, "INSERT OR REPLACE INTO t(id, v) VALUES (1, 'd')")
    cached = dict(q(conn, "SELECT slot, sql FROM sqlite_ct_stmt_cache"))
    assert cached[2] == "PRAGMA main.schema_version"
    # and the fix's own statement, kept per table after the slots above
    fixes = [sql for slot, sql in cached.items() if slot > 4]
    assert len(fixes) == 1 and fixes[0].startswith("INSERT INTO main.__sysOCSDeletedRows")


def test_the_cache_table_is_direct_only(apsw_conn):
    run(apsw_conn, *WRITES)
    run(apsw_conn, "CREATE VIEW planted AS SELECT * FROM sqlite_ct_stmt_cache")
    with pytest.raises(apsw.SQLError, match="unsafe use of virtual table"):
        q(apsw_conn, "SELECT * FROM planted")


def test_many_connections_open_and_close(db_path):
    """No statement, file descriptor or memory is left per closed connection."""
    for i in range(50):
        conn = apsw.Connection(db_path)
        sqlite_ct.load(conn)
        if i == 0:
            run(conn, *WRITES)
        else:
            run(conn, f"INSERT INTO t(v) VALUES ('{i}')")
        conn.close()
    assert open_fds(db_path) == 0
