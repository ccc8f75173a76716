"""DESIGN.md §4.5, no echo: rows written inside
sqlite_ct.applying_server_changes(conn) are never enumerated as local changes;
a later local edit of such a row is.

Random upserts, REPLACEs, UPDATEs and DELETEs, each either "server" (inside
applying_server_changes) or local, through two connections, in autocommit or
explicit transactions (committed or rolled back), with server and local writes
mixed in one transaction. A small model knows, per key and per enumeration
window, who wrote the row last and whether a local DELETE removed a row the
server may hold; every enumeration is checked against it:

- a row whose last write in the window was the server's is not enumerated;
- a row whose last write was local is, as an insert when a local write
  created it in the window and as an update otherwise;
- a key is enumerated as deleted only if a local write removed it, and is
  whenever a local DELETE removed a row that the server wrote or that existed
  before the window.
"""
from __future__ import annotations

import copy
import dataclasses
import tempfile
from typing import Dict, List, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sqlite_ct

from ._harness import (SHAPES, Shape, check_invariants, fresh_db, open_apsw, q,
                       table_rows)
from ._settings import PROFILE

NO_ECHO_SHAPES = {
    "rowid": Shape("rowid", "notes", "CREATE TABLE notes(id INTEGER PRIMARY KEY, v)",
                   ("id",), False, "id"),
    "composite_without_rowid": SHAPES["composite_without_rowid"],
}

VALUE = st.sampled_from([None, 0, 1, -1, 2**63 - 1, 2.5, "", "a", "x\x00y", b"\x00"])
KEY = st.integers(0, 5)
CONN = st.integers(0, 1)
SERVER = st.booleans()

OP = st.one_of(
    st.tuples(st.just("upsert"), CONN, SERVER, KEY, VALUE),
    st.tuples(st.just("replace"), CONN, SERVER, KEY, VALUE),
    st.tuples(st.just("update"), CONN, SERVER, KEY, VALUE),
    st.tuples(st.just("delete"), CONN, SERVER, KEY),
    st.tuples(st.just("begin"), CONN),
    st.tuples(st.just("commit"), CONN),
    st.tuples(st.just("rollback"), CONN),
    st.tuples(st.just("recursive_triggers"), CONN, st.booleans()),
    st.tuples(st.just("enumerate"), CONN),
)

SCENARIO = st.fixed_dictionaries({
    "preexisting": st.lists(st.tuples(KEY, VALUE), max_size=4),
    "ops": st.lists(OP, min_size=3, max_size=40),
})


@dataclasses.dataclass
class KeyState:
    """What one key went through since the last enumeration (the window)."""
    exists: bool = False
    last_write_local: Optional[bool] = None   # None: not written in the window
    created_locally: bool = False             # a local write created the row in the window
    incarnation_local: bool = False           # that row was created locally in the window
    delete_allowed: bool = False              # some local write removed the key
    delete_required: bool = False             # a local DELETE removed a row the server may hold

    def new_window(self) -> None:
        self.last_write_local = None
        self.created_locally = False
        self.incarnation_local = False
        self.delete_allowed = False
        self.delete_required = False


class NoEcho:
    def __init__(self, shape: Shape, directory: str, preexisting: List[tuple]) -> None:
        self.shape = shape
        self.table = shape.table
        path = fresh_db(directory)
        first = open_apsw(path)
        first.execute("PRAGMA journal_mode=WAL")
        first.execute(shape.ddl)
        self.keys: Dict[int, KeyState] = {i: KeyState() for i in range(6)}
        for i, v in preexisting:
            first.execute(self.sql("replace"), shape.row(i, None, v))
            self.keys[i].exists = True
        sqlite_ct.create_schema(first.conn, self.table)
        self.hosts = [first, open_apsw(path)]
        self.checker = open_apsw(path)
        self.anchor = sqlite_ct.enumerate_changes(first.conn, self.table, 0).new_anchor
        self.txn: Optional[int] = None            # the connection with the open transaction
        self.saved: Optional[Dict[int, KeyState]] = None

    def close(self) -> None:
        for h in self.hosts + [self.checker]:
            h.close()

    def sql(self, kind: str) -> str:
        t, cols = q(self.table), ", ".join(q(c) for c in self.shape.columns)
        marks = ", ".join("?" for _ in self.shape.columns)
        keys = ", ".join(q(k) for k in self.shape.keys)
        if kind == "upsert":
            return (f"INSERT INTO {t}({cols}) VALUES ({marks})"
                    f" ON CONFLICT({keys}) DO UPDATE SET v = excluded.v")
        if kind == "replace":
            return f"INSERT OR REPLACE INTO {t}({cols}) VALUES ({marks})"
        if kind == "update":
            return f"UPDATE {t} SET v = ? WHERE {self.shape.key_match()}"
        return f"DELETE FROM {t} WHERE {self.shape.key_match()}"

    def end_transaction(self, commit: bool) -> None:
        if self.txn is None:
            return
        self.hosts[self.txn].execute("COMMIT" if commit else "ROLLBACK")
        if not commit:
            self.keys = self.saved
        self.txn, self.saved = None, None

    def run(self, op: tuple) -> None:
        name, ci = op[0], op[1]
        host = self.hosts[ci]
        if name == "recursive_triggers":
            host.execute(f"PRAGMA recursive_triggers = {'ON' if op[2] else 'OFF'}")
            return
        if name == "enumerate":
            self.end_transaction(commit=True)
            self.enumerate(host)
            return
        if name in ("commit", "rollback"):
            if self.txn == ci:
                self.end_transaction(commit=name == "commit")
            return
        if self.txn is not None and self.txn != ci:
            self.end_transaction(commit=True)     # one writer at a time
        if name == "begin":
            if self.txn is None:
                host.execute("BEGIN")
                self.txn, self.saved = ci, copy.deepcopy(self.keys)
            return
        server, i = op[2], op[3]
        k = self.keys[i]
        if name == "delete":
            params = list(self.shape.key(i))
        elif name == "update":
            params = [op[4]] + list(self.shape.key(i))
        else:
            params = list(self.shape.row(i, None, op[4]))
        if server:
            with sqlite_ct.applying_server_changes(host.conn):
                host.execute(self.sql(name), params)
        else:
            host.execute(self.sql(name), params)
        self.model(name, not server, k)

    @staticmethod
    def model(name: str, local: bool, k: KeyState) -> None:
        if name == "delete":
            if k.exists and local:
                k.delete_allowed = True
                if not k.incarnation_local:
                    k.delete_required = True
            if k.exists:
                k.exists = False
                k.last_write_local = None
                k.incarnation_local = False
            return
        if name == "update" and not k.exists:
            return
        if name == "replace" and k.exists:
            # The old row is deleted and a new one inserted.
            if local:
                k.delete_allowed = True
            k.exists = False
        if not k.exists:
            k.exists = True
            k.incarnation_local = local
        k.last_write_local = local

    def enumerate(self, host) -> None:
        cs = sqlite_ct.enumerate_changes(host.conn, self.table, self.anchor)
        check_invariants(self.checker, self.table)
        keys = {self.shape.key(i): (i, k) for i, k in self.keys.items()}
        table = table_rows(self.checker.conn, self.table, list(self.shape.keys))
        kinds: Dict[int, str] = {}
        for kind, rows in (("insert", cs.inserts), ("update", cs.updates)):
            for row in rows:
                key = tuple(row[c] for c in self.shape.keys)
                i, _ = keys[key]
                assert i not in kinds, f"key {key} enumerated twice"
                kinds[i] = kind
                assert row == table[key], f"enumerated {row}, the table holds {table[key]}"
        deleted = {keys[tuple(row[c] for c in self.shape.keys)][0] for row in cs.deletes}
        for i, k in self.keys.items():
            key = self.shape.key(i)
            if k.exists and k.last_write_local:
                assert i in kinds, f"the local write of {key} was not enumerated"
                expected = "insert" if k.incarnation_local else "update"
                assert kinds[i] == expected, (
                    f"{key} enumerated as {kinds[i]}, expected {expected}")
            else:
                assert i not in kinds, (
                    f"{key} enumerated as {kinds[i]} but its last write was "
                    f"{'the server' if k.exists else 'a delete'}'s (echo)")
            if i in deleted:
                assert k.delete_allowed, f"{key} enumerated as deleted; no local write removed it"
            if k.delete_required and not k.exists:
                assert i in deleted, f"the local DELETE of {key} was not enumerated"
            k.new_window()
        self.anchor = cs.new_anchor


@pytest.mark.parametrize("shape", list(NO_ECHO_SHAPES))
@PROFILE
@given(scenario=SCENARIO)
def test_server_changes_are_not_echoed(shape, scenario):
    with tempfile.TemporaryDirectory(prefix="ct-no-echo-") as directory:
        s = NoEcho(NO_ECHO_SHAPES[shape], directory, scenario["preexisting"])
        try:
            for op in scenario["ops"]:
                s.run(op)
            s.end_transaction(commit=True)
            s.enumerate(s.hosts[0])
        finally:
            s.close()
