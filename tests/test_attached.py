"""A tracked database ATTACHed to another connection. sqlite-ct tracks the
tables of a connection's main database: its BSN, log and prepared statements
are main's. A write through the ATTACH alias is refused before anything is
written (found by review: it was stamped with main's numbers and logged into
main), and the database keeps working where it is main."""
import shutil

import apsw
import pytest

import sqlite_ct
from sqlhelpers import q, run, val

REFUSED = "tracked in a database attached to the connection"


@pytest.fixture
def aux_path(tmp_path):
    path = str(tmp_path / "aux.db")
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    for v in "abc":
        run(conn, f"INSERT INTO t(u, v) VALUES ('{v}', '{v}')")
    conn.close()
    return path


def snapshot(conn, schema):
    return [q(conn, f"SELECT * FROM {schema}.{table} ORDER BY 1, 2")
            for table in ("__sysTxCommitSequence", "__sysOCSDeletedRows")]


@pytest.mark.parametrize("main_tracked", [True, False], ids=["main-tracked", "main-plain"])
@pytest.mark.parametrize("statement", [
    "INSERT INTO aux.t(u, v) VALUES ('d', 'd')",
    "INSERT OR REPLACE INTO aux.t(id, u, v) VALUES (9, 'a', 'x')",
    "UPDATE aux.t SET v = 'z' WHERE id = 1",
    "UPDATE aux.t SET id = 7 WHERE id = 1",
    "DELETE FROM aux.t WHERE id = 2",
])
def test_write_through_an_attach_alias_is_refused(conn, aux_path, main_tracked, statement):
    if main_tracked:
        run(conn, "CREATE TABLE m(id INTEGER PRIMARY KEY, v TEXT)")
        sqlite_ct.create_schema(conn, "m")
        run(conn, "INSERT INTO m(v) VALUES ('x')")
    run(conn, f"ATTACH '{aux_path}' AS aux")
    rows = q(conn, "SELECT * FROM aux.t ORDER BY id")
    before = snapshot(conn, "aux"), (snapshot(conn, "main") if main_tracked else None)
    with pytest.raises(Exception, match=REFUSED):
        run(conn, statement)
    assert q(conn, "SELECT * FROM aux.t ORDER BY id") == rows
    assert (snapshot(conn, "aux"), snapshot(conn, "main") if main_tracked else None) == before
    if main_tracked:
        run(conn, "INSERT INTO m(v) VALUES ('y')")     # main keeps working
        assert sqlite_ct.check(conn) == []
    run(conn, "DETACH aux")


def test_the_attached_database_still_works_as_main(conn, aux_path):
    run(conn, f"ATTACH '{aux_path}' AS aux")
    with pytest.raises(Exception, match=REFUSED):
        run(conn, "DELETE FROM aux.t WHERE id = 1")
    run(conn, "DETACH aux")
    own = apsw.Connection(aux_path)
    sqlite_ct.load(own)
    try:
        anchor = sqlite_ct.last_committed_csn(own)
        run(own, "DELETE FROM t WHERE id = 1")
        cs = sqlite_ct.enumerate_changes(own, "t", anchor)
        assert cs.deletes == [{"id": 1}]
        assert sqlite_ct.check(own) == []
        assert val(own, "SELECT max(__sysTxCsn) FROM __sysTxCommitSequence") == anchor + 1
    finally:
        own.close()


@pytest.mark.xfail(strict=True, reason=(
    "known limit (README): a file copy of the main database carries main's identity,"
    " so a write through its ATTACH alias is not told apart"))
def test_a_copy_of_the_main_database_attached_to_it(tmp_path, aux_path):
    copy_path = str(tmp_path / "copy.db")
    shutil.copy(aux_path, copy_path)
    conn = apsw.Connection(aux_path)
    sqlite_ct.load(conn)
    try:
        run(conn, f"ATTACH '{copy_path}' AS cp")
        with pytest.raises(Exception, match=REFUSED):
            run(conn, "INSERT INTO cp.t(u, v) VALUES ('d', 'd')")
    finally:
        conn.close()
