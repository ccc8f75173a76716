"""Writes that could remove or change rows behind the triggers' back: a UNIQUE
index created after tracking began, OR REPLACE through the rowid of a table
whose key is not the rowid, keys with a non-BINARY collation, NULL in a
composite key, foreign __sys stamps, the commit log edited by hand, and
tracking turned off and on again. Each is tracked, or refused with an error
that says what to do; never silently lost."""
import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows  # noqa: F401
from sqlhelpers import HOST_ERRORS, q, run, val
from test_traps import Tracked, recursive  # noqa: F401  (fixture)


# ----------------------------------------------------- NOCASE primary keys

NOCASE_SHAPES = {
    "rowid": "CREATE TABLE t(k TEXT COLLATE NOCASE PRIMARY KEY, v TEXT)",
    "without-rowid": "CREATE TABLE t(k TEXT COLLATE NOCASE PRIMARY KEY, v TEXT) WITHOUT ROWID",
    "composite": "CREATE TABLE t(k TEXT COLLATE NOCASE, n INTEGER, v TEXT, PRIMARY KEY(k, n))",
}


@pytest.mark.parametrize("shape", sorted(NOCASE_SHAPES))
@pytest.mark.parametrize("statement", [
    "UPDATE t SET k = 'ABC' WHERE k = 'abc'",
    "INSERT OR REPLACE INTO t(k, {n}v) VALUES ('ABC', {one}'z')",
    "REPLACE INTO t(k, {n}v) VALUES ('Abc', {one}'z')",
])
def test_case_only_key_change_of_a_nocase_key(conn, recursive, shape, statement):
    composite = shape == "composite"
    keys = ["k", "n"] if composite else ["k"]
    row = {"k": "abc", "n": 1, "v": "x"} if composite else {"k": "abc", "v": "x"}
    t = Tracked(conn, NOCASE_SHAPES[shape], "t", keys, [row])
    run(conn, statement.format(n="n, " if composite else "", one="1, " if composite else ""))
    cs = t.changes()
    assert [r["k"] for r in cs.deletes] == ["abc"]
    assert len(cs.inserts) == 1 and cs.inserts[0]["k"] != "abc"
