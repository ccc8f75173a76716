"""sqlite-ct in Python's stdlib sqlite3, in two interpreters:

- this interpreter (pyenv's, no enable_load_extension): register_auto_extension();
- Debian's /usr/bin/python3 (enable_load_extension, no apsw, no cffi): load().

Each runs in a fresh subprocess, so the auto-extension never reaches the test
process and the stdlib's SQLite never holds the file apsw has loaded here. The
test process checks the result with apsw on the same database file.
"""
import dataclasses
import os
import re
import subprocess
import sys

import pytest

import sqlite_ct

from ._support import keys_of, run_python

SYSTEM_PYTHON = "/usr/bin/python3"

# argv: host ("auto" | "load"), scenario, database path. Prints one JSON line.
HOST_SCRIPT = r'''
import dataclasses, json, sqlite3, sys

HOST, SCENARIO, PATH = sys.argv[1:4]
if HOST == "load":
    # Debian's python has neither; importing sqlite_ct must not need them.
    sys.modules["apsw"] = None
    sys.modules["cffi"] = None
import sqlite_ct


def connect(**kwargs):
    if HOST == "auto":
        sqlite_ct.register_auto_extension()
        return sqlite3.connect(PATH, **kwargs)
    conn = sqlite3.connect(PATH, **kwargs)
    sqlite_ct.load(conn)
    return conn


def changes(conn, since):
    return dataclasses.asdict(sqlite_ct.enumerate_changes(conn, "items", since=since))


def csns(conn):
    return [r[0] for r in conn.execute(
        "SELECT __sysTxCsn FROM __sysTxCommitSequence ORDER BY 1")]


def stamps(conn):
    """key -> change BSN of the rows, "tombstone <key>" -> delete BSN."""
    out = {str(k): b for k, b in conn.execute("SELECT id, __sysChangeTxBsn FROM items")}
    for key, bsn in conn.execute(
            "SELECT sqlite_ct_unpack_key(__sysRK, 0), __sysDeleteTxBsn "
            "FROM __sysOCSDeletedRows WHERE __sysTName = 'items'"):
        out[f"tombstone {key}"] = bsn
    return out


def track_and_write():
    out = {}
    untracked = sqlite3.connect(PATH, isolation_level=None)  # before any loading
    conn = connect(isolation_level=None)
    out["loaded"] = sqlite_ct.is_loaded(conn)
    out["untracked_loaded"] = sqlite_ct.is_loaded(untracked)
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    conn.executemany("INSERT INTO items(id, name, price) VALUES (?, ?, ?)",
                     [(1, "a", 1.5), (2, "b", 2.5), (3, "c", None)])
    out["enabling_bsn"] = sqlite_ct.create_schema(conn, "items")
    out["anchor"] = sqlite_ct.last_committed_csn(conn)
    conn.execute("BEGIN")
    conn.execute("UPDATE items SET price = 9.0 WHERE id = 1")
    conn.execute("DELETE FROM items WHERE id = 2")
    conn.execute("INSERT INTO items(id, name, price) VALUES (4, 'd', 4.0)")
    conn.execute("COMMIT")
    try:
        untracked.execute("INSERT INTO items(id, name) VALUES (5, 'e')")
        out["untracked_error"] = None
    except sqlite3.Error as exc:
        out["untracked_error"] = str(exc)
    out["since_0"] = changes(conn, 0)
    out["since_anchor"] = changes(conn, out["anchor"])
    out["csns"] = csns(conn)
    return out


def isolation_levels():
    out = {}
    conn = connect()  # default isolation_level "": implicit BEGIN before DML
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    sqlite_ct.create_schema(conn, "items")
    base = sqlite_ct.last_committed_csn(conn)
    out["base"] = base

    conn.execute("INSERT INTO items(id, name) VALUES (1, 'a')")
    conn.executemany("INSERT INTO items(id, name) VALUES (?, ?)", [(2, "b"), (3, "c")])
    conn.execute("UPDATE items SET price = 1.0 WHERE id = 1")
    conn.execute("DELETE FROM items WHERE id = 2")
    out["implicit_in_transaction"] = conn.in_transaction
    out["implicit_current_bsn"] = sqlite_ct.current_bsn(conn)
    try:  # inside its own write transaction: refused (uncommitted stamps hide changes)
        changes(conn, base)
        out["implicit_before_commit"] = "enumerated"
    except sqlite_ct.Error as exc:
        out["implicit_before_commit"] = str(exc)
    conn.commit()
    out["implicit_csns"] = csns(conn)
    out["implicit_stamps"] = stamps(conn)
    out["implicit_changes"] = changes(conn, base)

    anchor = sqlite_ct.last_committed_csn(conn)
    with conn:  # the context manager commits
        conn.execute("INSERT INTO items(id, name) VALUES (10, 'j')")
        conn.execute("UPDATE items SET name = 'C' WHERE id = 3")
    out["with_csns"] = csns(conn)
    out["with_changes"] = changes(conn, anchor)

    conn.execute("INSERT INTO items(id, name) VALUES (20, 'rolled back')")
    conn.execute("DELETE FROM items WHERE id = 1")
    conn.rollback()
    out["rollback_csns"] = csns(conn)

    conn.isolation_level = None  # autocommit: one transaction per statement
    anchor = sqlite_ct.last_committed_csn(conn)
    conn.execute("INSERT INTO items(id, name) VALUES (30, 'x')")
    conn.execute("UPDATE items SET name = 'J' WHERE id = 10")
    out["autocommit_csns"] = csns(conn)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO items(id, name) VALUES (40, 'y')")
    conn.execute("UPDATE items SET price = 2.0 WHERE id = 30")
    conn.execute("DELETE FROM items WHERE id = 3")
    conn.execute("COMMIT")
    out["explicit_csns"] = csns(conn)
    out["final_stamps"] = stamps(conn)
    out["autocommit_changes"] = changes(conn, anchor)
    return out


print(json.dumps({"track_and_write": track_and_write,
                  "isolation_levels": isolation_levels}[SCENARIO]()))
'''


def system_python_can_load_extensions() -> bool:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sqlite3; sqlite3.Connection.enable_load_extension"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return proc.returncode == 0


needs_system_python = pytest.mark.skipif(
    not system_python_can_load_extensions(),
    reason=f"{SYSTEM_PYTHON} (Debian's python3) is missing or its sqlite3 has no "
           f"enable_load_extension")

HOSTS = [
    pytest.param((sys.executable, "auto"), id="register_auto_extension"),
    pytest.param((SYSTEM_PYTHON, "load"), id="debian-python3-load", marks=needs_system_python),
]


def run_host(host, scenario, db_path):
    python, mode = host
    return run_python(HOST_SCRIPT, mode, scenario, db_path, python=python)


def as_dict(changes: sqlite_ct.ChangeSet) -> dict:
    return dataclasses.asdict(changes)


@pytest.mark.parametrize("host", HOSTS)
def test_track_write_and_enumerate(host, db_path, apsw_conn):
    out = run_host(host, "track_and_write", db_path)

    assert out["loaded"] is True
    assert out["untracked_loaded"] is False
    assert re.search(r"(no such|unknown) function: sqlite_ct_", out["untracked_error"])
    # Rows present before create_schema count as inserted by the enabling
    # transaction; the explicit transaction after it has one CSN.
    assert out["enabling_bsn"] == out["anchor"] == 1
    assert out["csns"] == [1, 2]
    since_0 = out["since_0"]
    assert since_0["new_anchor"] == 2
    assert sorted(since_0["inserts"], key=lambda r: r["id"]) == [
        {"id": 1, "name": "a", "price": 9.0},
        {"id": 3, "name": "c", "price": None},
        {"id": 4, "name": "d", "price": 4.0}]
    assert since_0["updates"] == since_0["deletes"] == []
    since_anchor = out["since_anchor"]
    assert since_anchor["inserts"] == [{"id": 4, "name": "d", "price": 4.0}]
    assert since_anchor["updates"] == [{"id": 1, "name": "a", "price": 9.0}]
    assert since_anchor["deletes"] == [{"id": 2}]

    # apsw, another SQLite library, reads the same changes from the file.
    assert as_dict(sqlite_ct.enumerate_changes(apsw_conn, "items", since=0)) == since_0
    assert as_dict(sqlite_ct.enumerate_changes(apsw_conn, "items", since=1)) == since_anchor


@pytest.mark.parametrize("host", HOSTS)
def test_one_csn_per_transaction_with_and_without_implicit_begin(host, db_path, apsw_conn):
    out = run_host(host, "isolation_levels", db_path)
    base = out["base"]
    assert base == 1

    # Default isolation_level: sqlite3 opens a transaction before the first
    # INSERT; every statement up to commit() shares one BSN, which is not
    # enumerated (nor the new anchor) until it commits.
    assert out["implicit_in_transaction"] is True
    bsn = out["implicit_current_bsn"]
    assert bsn == base + 1
    assert out["implicit_before_commit"] == (
        "sqlite-ct: cannot enumerate changes inside a transaction that has written to "
        "tracked tables; commit or roll it back first")
    assert out["implicit_csns"] == [1, bsn]
    assert out["implicit_stamps"] == {"1": bsn, "3": bsn, "tombstone 2": bsn}
    implicit = out["implicit_changes"]
    assert keys_of(implicit["inserts"]) == [1, 3]  # 2 came and went
    assert implicit["updates"] == implicit["deletes"] == []
    assert implicit["new_anchor"] == bsn

    # `with conn:` commits one transaction; rollback() leaves no CSN.
    assert out["with_csns"] == [1, 2, 3]
    assert keys_of(out["with_changes"]["inserts"]) == [10]
    assert keys_of(out["with_changes"]["updates"]) == [3]
    assert out["rollback_csns"] == [1, 2, 3]

    # isolation_level=None: each statement is its own transaction, an explicit
    # BEGIN ... COMMIT is one.
    assert out["autocommit_csns"] == [1, 2, 3, 4, 5]
    assert out["explicit_csns"] == [1, 2, 3, 4, 5, 6]
    assert out["final_stamps"] == {
        "1": 2, "10": 5, "30": 6, "40": 6, "tombstone 2": 2, "tombstone 3": 6}
    autocommit = out["autocommit_changes"]
    assert keys_of(autocommit["inserts"]) == [30, 40]
    assert keys_of(autocommit["updates"]) == [10]
    assert keys_of(autocommit["deletes"]) == [3]

    # The file agrees when apsw reads it.
    assert as_dict(sqlite_ct.enumerate_changes(apsw_conn, "items", since=3)) == autocommit
