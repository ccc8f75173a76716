"""DESIGN.md §4.1 convergence, with §4.2 (commit order), §4.3 (one BSN per write
transaction) and §4.4 (rollback safety) checked along the way.

A scenario is a list of operations run through two or three connections to one
WAL database file: single- and multi-row INSERT in every conflict mode
(REPLACE conflicting on the key and on the UNIQUE column, IGNORE, FAIL,
ROLLBACK), UPSERT (DO UPDATE / DO NOTHING, on the key or the UNIQUE column),
UPDATE of values including NULL, UPDATE of the key (single rows and whole
ranges, in every conflict mode), DELETE by key and by range, BEGIN..COMMIT,
BEGIN..ROLLBACK, SAVEPOINT..ROLLBACK TO..RELEASE, statements that fail midway
(a later row of a multi-row INSERT violating a CHECK, or refused by a user
trigger's RAISE(ABORT); rows a user trigger skips with RAISE(IGNORE)),
PRAGMA recursive_triggers and the tracking context per connection, writes to
a second tracked table in the same transactions, and enumerate-and-apply on a
random connection at random points (enumerate_changes, iter_changes or
enumerate_group_changes), including while another connection holds
uncommitted tracked writes. One variant runs one of the connections through
the stdlib sqlite3 module (its own SQLite library) next to apsw ones.

Checked along the way: after every enumeration new_anchor never decreases and
is at most the last committed CSN, no committed row or tombstone carries a BSN
above the last committed CSN, every stamped BSN is logged in
__sysTxCommitSequence, a committed write transaction logged at most one BSN
and a rolled-back one none. The replica applies every enumeration; when the
enumerating connection reads the latest committed state the replica must equal
the table right away, and at the end (everything committed, one more
enumeration) always.

The table is the truth: no model of the expected rows is needed, only of which
connection holds which transaction.
"""
from __future__ import annotations

import tempfile
import uuid
from typing import Any, Dict, List, Optional

import apsw
import pytest
from hypothesis import currently_in_test_context, event, example, given
from hypothesis import strategies as st

import sqlite_ct
from sqlite_ct import AnchorError, ChangeSet

from ._harness import (HOST_ERRORS, SHAPES, SQLITE_BUSY, SQLITE_CONSTRAINT, Host,
                       Replica, Shape, check_invariants, fresh_db, open_apsw,
                       open_bare, open_stdlib, q, result_code, stdlib_unavailable_reason,
                       table_rows, user_spawn_ddl, user_touch_ddl,
                       user_trigger_ddl)
from ._settings import PROFILE, scaled

# ---------------------------------------------------------------- strategies

COMMON_VALUES = [None, 0, 1, -1, 7, 2**63 - 1, -2**63, 1.5, -0.0, float("inf"),
                 "", "a", "x\x00y", "\u00e9\u4e2d", b"", b"\x00\xff"]
SPECIAL_VALUES = ["bad", "raise", "skip", "spawn"]

KEY = st.integers(0, 7)
UNIQUE = st.sampled_from([None, "a", "b", "c", "A"])
VALUE = st.sampled_from(COMMON_VALUES * 3 + SPECIAL_VALUES)
ROW = st.tuples(KEY, UNIQUE, VALUE)
ROWS = st.lists(ROW, min_size=1, max_size=3)
CONN = st.integers(0, 2)

INSERT_VERBS = ["INSERT", "INSERT OR REPLACE", "REPLACE", "INSERT OR IGNORE",
                "INSERT OR FAIL", "INSERT OR ROLLBACK"]
UPDATE_VERBS = ["UPDATE", "UPDATE OR REPLACE", "UPDATE OR IGNORE", "UPDATE OR FAIL",
                "UPDATE OR ROLLBACK"]


def _op(name: str, *args: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(st.just(name), CONN, *args)


WRITE_OPS = [
    _op("insert", st.sampled_from(INSERT_VERBS), ROWS),
    _op("upsert", st.sampled_from(["key", "u"]), st.sampled_from(["update", "nothing"]), ROWS),
    _op("update", st.sampled_from(UPDATE_VERBS), KEY, st.booleans(), UNIQUE, VALUE),
    _op("update_key", st.sampled_from(UPDATE_VERBS), KEY, KEY),
    _op("shift", st.sampled_from(UPDATE_VERBS), KEY, KEY, st.sampled_from([-1, 1, 2])),
    _op("update_range", KEY, KEY, VALUE),
    # OR REPLACE through the rowid of a rowid table keyed otherwise
    _op("replace_rowid", st.integers(1, 8), ROW),
    _op("update_rowid", st.integers(1, 8), KEY),
    _op("delete", KEY),
    _op("delete_range", KEY, KEY),
    _op("other_table", KEY, VALUE),
]
CONTROL_OPS = [
    _op("begin", st.sampled_from(["BEGIN", "BEGIN IMMEDIATE"])),
    _op("commit"),
    _op("rollback"),
    _op("savepoint"),
    _op("rollback_to", st.integers(0, 3)),
    _op("release", st.integers(0, 3)),
    _op("recursive_triggers", st.booleans()),
    _op("tracking_context", st.sampled_from([None, 1, 2])),
    _op("read"),
    _op("enumerate", st.sampled_from(["list", "stream", "group"])),
]
OP = st.one_of(*(WRITE_OPS * 2), *CONTROL_OPS)
WRITE = st.one_of(*WRITE_OPS)
SAVEPOINT_OPS = st.one_of(_op("savepoint"), _op("rollback_to", st.integers(0, 3)),
                          _op("release", st.integers(0, 3)))
# What another connection does while one holds a transaction: enumerate (the
# open transaction's writes must stay invisible), read, write (SQLite refuses:
# one writer), or open a transaction of its own.
ENUMERATE = _op("enumerate", st.sampled_from(["list", "stream", "group"]))
BYSTANDER = st.one_of(ENUMERATE, ENUMERATE, _op("read"), WRITE,
                      _op("begin", st.sampled_from(["BEGIN", "BEGIN IMMEDIATE"])))


def on(conn: int, op: tuple) -> tuple:
    return op[:1] + (conn,) + op[2:]


@st.composite
def transaction(draw, connections: int) -> List[tuple]:
    """One connection's transaction (BEGIN or SAVEPOINT .. COMMIT, ROLLBACK or
    RELEASE) of writes and savepoint work, with other connections' operations
    interleaved."""
    c = draw(st.integers(0, connections - 1))
    ops = [on(c, draw(st.one_of(_op("begin", st.sampled_from(["BEGIN", "BEGIN IMMEDIATE"])),
                                _op("savepoint"))))]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 6))
        if kind <= 1:
            other = (c + draw(st.integers(1, connections - 1))) % connections
            ops.append(on(other, draw(BYSTANDER)))
        elif kind == 2:
            ops.append(on(c, draw(SAVEPOINT_OPS)))
        else:
            ops.append(on(c, draw(WRITE)))
    if draw(st.booleans()):
        # Another connection enumerates just before the transaction ends.
        other = (c + draw(st.integers(1, connections - 1))) % connections
        ops.append(on(other, draw(ENUMERATE)))
    ops.append(on(c, draw(st.one_of(_op("commit"), _op("rollback"), _op("release", st.just(0))))))
    return ops


@st.composite
def scenarios(draw) -> Dict[str, Any]:
    """Operations come as loose ones and whole transactions, flattened into
    one list, so that transactions with writes, and other connections acting
    while one is open, are common."""
    connections = draw(st.integers(2, 3))
    ops: List[tuple] = []
    blocks = st.one_of(st.lists(OP, min_size=1, max_size=6), transaction(connections))
    for block in draw(st.lists(blocks, min_size=1, max_size=8)):
        ops.extend(block)
    return {
        "connections": connections,
        "preexisting": draw(st.lists(ROW, max_size=4)),
        "open_before_schema": draw(st.booleans()),
        # Initial PRAGMA recursive_triggers per connection (ops switch it
        # too): stock SQLite defaults to OFF, Debian's build to ON.
        "recursive_triggers": draw(st.lists(st.booleans(), min_size=3, max_size=3)),
        "ops": ops,
        "finish_with_commit": draw(st.booleans()),
    }


SCENARIO = scenarios()

# ---------------------------------------------------------------- the runner


def note(what: str) -> None:
    """hypothesis.event() when running under @given (--hypothesis-show-statistics
    shows how often each situation came up), nothing otherwise."""
    if currently_in_test_context():
        event(what)


OTHER = "other"


class Conn:
    """A connection and what the scenario knows about its transaction."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.savepoints: List[str] = []
        self.wrote = False                 # a write ran in the open transaction
        self.csn_at_first_write: Optional[int] = None

    def reset(self) -> None:
        self.savepoints.clear()
        self.wrote = False
        self.csn_at_first_write = None


class Scenario:
    def __init__(self, shape: Shape, directory: str, hosts: List[str],
                 preexisting: List[tuple], open_before_schema: bool,
                 recursive_triggers: List[bool], mode: str = "native",
                 defensive: bool = False) -> None:
        self.shape = shape
        # Portable mode takes one BSN per row change, not per transaction
        # (csrc/portable.c): invariant 3 is not checked there.
        self.one_bsn_per_transaction = mode == "native"
        self.table = shape.table
        path = fresh_db(directory)
        first = open_apsw(path)
        first.execute("PRAGMA journal_mode=WAL")
        first.execute(shape.ddl)
        for ddl in user_trigger_ddl(shape):
            first.execute(ddl)
        for i, u, v in preexisting:
            if v in SPECIAL_VALUES:
                continue
            first.execute(f"INSERT OR REPLACE INTO {q(self.table)}"
                          f"({', '.join(q(c) for c in shape.columns)}) VALUES"
                          f" ({', '.join('?' for _ in shape.columns)})", shape.row(i, u, v))

        def opener(kind: str) -> Host:
            return {"apsw": open_apsw, "sqlite3": open_stdlib, "bare": open_bare}[kind](path)

        others: List[Host] = []
        if open_before_schema:
            others = [opener(kind) for kind in hosts[1:]]
        if defensive:
            # SQLITE_DBCONFIG_DEFENSIVE while tracking starts: no stamp
            # DEFAULTs, so every insert goes through the AFTER INSERT fix
            first.conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
        first.execute(f"CREATE TABLE {OTHER}(id INTEGER PRIMARY KEY, v)")
        sqlite_ct.create_schema(first.conn, OTHER, mode=mode)
        self.enable_bsn = sqlite_ct.create_schema(first.conn, self.table, mode=mode)
        if shape.later_ddl:
            first.execute(shape.later_ddl)
            if mode == "portable":
                assert sqlite_ct.create_schema(first.conn, self.table, mode=mode) == \
                    self.enable_bsn
        if mode == "native":
            # portable mode loses these (README, "Known limits")
            for ddl in user_spawn_ddl(shape) + user_touch_ddl(shape):
                first.execute(ddl)
        if not open_before_schema:
            others = [opener(kind) for kind in hosts[1:]]
        elif shape.later_ddl:
            # SQLite resolves ON CONFLICT(u) against the schema a connection
            # has loaded, before it notices another connection's change
            for h in others:
                h.execute("SELECT count(*) FROM sqlite_schema")
        self.conns = [Conn(h) for h in [first] + others]
        for c, on in zip(self.conns, recursive_triggers):
            self.op_recursive_triggers(c, on)
        self.checker = open_apsw(path)
        self.replica = Replica(list(shape.keys))
        self.anchor = 0
        self.savepoint_ids = 0

    def close(self) -> None:
        for c in self.conns:
            c.host.close()
        self.checker.close()

    # -- helpers

    def committed_csn(self) -> int:
        return self.checker.value("SELECT coalesce(max(__sysTxCsn), 0) FROM __sysTxCommitSequence")

    def logged_after(self, csn: int) -> int:
        return self.checker.value(
            "SELECT count(*) FROM __sysTxCommitSequence WHERE __sysTxCsn > ?", (csn,))

    def other_writer(self, c: Conn) -> bool:
        return any(o is not c and o.wrote and o.host.in_transaction for o in self.conns)

    def transaction_ended(self, c: Conn, committed: bool) -> None:
        """§4.3 and §4.4: a committed transaction logged at most one BSN, a
        rolled-back one none."""
        if c.csn_at_first_write is not None:
            n = self.logged_after(c.csn_at_first_write)
            if committed:
                assert n <= 1 or not self.one_bsn_per_transaction, (
                    f"one write transaction logged {n} BSNs")
            else:
                assert n == 0, f"a rolled-back transaction left {n} logged BSN(s)"
        c.reset()

    # -- operations

    def run(self, op: tuple) -> None:
        name, ci = op[0], op[1] % len(self.conns)
        c = self.conns[ci]
        if name in ("begin", "commit", "rollback", "savepoint", "rollback_to", "release",
                    "recursive_triggers", "tracking_context", "read", "enumerate"):
            getattr(self, "op_" + name)(c, *op[2:])
        else:
            sql, params = getattr(self, "sql_" + name)(*op[2:])
            self.write(c, sql, params)

    def write(self, c: Conn, sql: str, params: List[Any]) -> None:
        in_txn = c.host.in_transaction
        if self.other_writer(c):
            # SQLite has one writer; with busy_timeout 0 this is SQLITE_BUSY.
            # Skip the statement rather than model BUSY_SNAPSHOT retries.
            note("write skipped: another connection holds the write lock")
            return
        before = self.committed_csn()
        if not in_txn or not c.wrote:
            c.csn_at_first_write = before
        failed = False
        try:
            c.host.execute(sql, params)
        except HOST_ERRORS as exc:
            code = result_code(exc)
            assert "sqlite-ct" not in str(exc), f"the tracker refused a user statement: {exc}"
            if code == SQLITE_BUSY and not (in_txn and c.wrote):
                # Another connection's snapshot is in the way (BUSY_SNAPSHOT):
                # give up this transaction, as an application retrying would.
                if c.host.in_transaction:
                    c.host.execute("ROLLBACK")
                c.reset()
                note("SQLITE_BUSY: transaction given up")
                return
            assert code == SQLITE_CONSTRAINT, f"unexpected error from {sql!r}: {exc!r}"
            failed = True
            note("a statement failed with a constraint error"
                  + (" inside a transaction" if c.host.in_transaction else ""))
        if in_txn and c.host.in_transaction:
            c.wrote = True
        elif in_txn:
            # INSERT/UPDATE OR ROLLBACK ended the whole transaction.
            self.transaction_ended(c, committed=False)
        else:
            n = self.logged_after(before)
            # OR FAIL keeps what the statement did before the failing row.
            allowed = 1 if (not failed or " OR FAIL " in sql) else 0
            if allowed and not self.one_bsn_per_transaction:
                allowed = n
            assert n <= allowed, (
                f"an autocommit statement {'that failed ' if failed else ''}logged {n} BSNs")
            if c.host.in_transaction:  # cannot happen: a statement never opens a transaction
                raise AssertionError("an autocommit statement left a transaction open")
            c.reset()

    def cols(self) -> str:
        return ", ".join(q(col) for col in self.shape.columns)

    def values(self, rows: List[tuple]) -> tuple:
        one = "(" + ", ".join("?" for _ in self.shape.columns) + ")"
        params: List[Any] = []
        for i, u, v in rows:
            params.extend(self.shape.row(i, u, v))
        return ", ".join(one for _ in rows), params

    def sql_insert(self, verb: str, rows: List[tuple]):
        if verb in ("INSERT OR REPLACE", "INSERT OR FAIL"):
            # The user_spawn trigger fires before sqlite-ct's, two documented
            # limits of triggers created after create_schema() (README): for a
            # row that replaced another under the same key, the spawned row's
            # sweep takes that victim while the key is held
            # (tests/test_review_impl7.py); its insert failing under OR FAIL
            # abandons sqlite-ct's AFTER INSERT trigger
            # (tests/test_review_capture.py)
            rows = [(i, u, "x" if v == "spawn" else v) for i, u, v in rows]
        marks, params = self.values(rows)
        return f"{verb} INTO {q(self.table)}({self.cols()}) VALUES {marks}", params

    def sql_upsert(self, target: str, action: str, rows: List[tuple]):
        marks, params = self.values(rows)
        on = "u" if target == "u" and self.shape.has_unique else ", ".join(
            q(k) for k in self.shape.keys)
        if action == "nothing":
            tail = "DO NOTHING"
        else:
            sets = ["v = excluded.v"]
            if self.shape.has_unique:
                sets.append("u = excluded.u")
            tail = "DO UPDATE SET " + ", ".join(sets)
        return (f"INSERT INTO {q(self.table)}({self.cols()}) VALUES {marks}"
                f" ON CONFLICT({on}) {tail}", params)

    def sql_update(self, verb: str, i: int, set_u: bool, u: Any, v: Any):
        sets, params = ["v = ?"], [v]
        if set_u and self.shape.has_unique:
            sets.append("u = ?")
            params.append(u)
        return (f"{verb} {q(self.table)} SET {', '.join(sets)} WHERE {self.shape.key_match()}",
                params + list(self.shape.key(i)))

    def sql_update_key(self, verb: str, i: int, j: int):
        sets = ", ".join(f"{q(k)} = ?" for k in self.shape.keys)
        return (f"{verb} {q(self.table)} SET {sets} WHERE {self.shape.key_match()}",
                list(self.shape.key(j)) + list(self.shape.key(i)))

    def sql_shift(self, verb: str, lo: int, hi: int, delta: int):
        col = q(self.shape.range_column)
        return (f"{verb} {q(self.table)} SET {col} = {col} + ? WHERE {col} BETWEEN ? AND ?",
                [delta, lo, hi])

    def sql_update_range(self, lo: int, hi: int, v: Any):
        col = q(self.shape.range_column)
        return f"UPDATE {q(self.table)} SET v = ? WHERE {col} BETWEEN ? AND ?", [v, lo, hi]

    def sql_other_table(self, i: int, v: Any):
        # A second tracked table: a transaction writing both still logs one BSN.
        return f"INSERT OR REPLACE INTO {OTHER}(id, v) VALUES (?, ?)", [i, v]

    def keyed_otherwise(self) -> bool:
        """A rowid table whose key is not the rowid."""
        return "WITHOUT ROWID" not in self.shape.ddl and len(self.shape.keys) > 1

    def sql_replace_rowid(self, rowid: int, row: tuple):
        marks, params = self.values([row])
        if not self.keyed_otherwise():
            return f"INSERT OR REPLACE INTO {q(self.table)}({self.cols()}) VALUES {marks}", params
        return (f"INSERT OR REPLACE INTO {q(self.table)}(rowid, {self.cols()})"
                f" VALUES (?, {marks[1:]}", [rowid] + params)

    def sql_update_rowid(self, rowid: int, i: int):
        if not self.keyed_otherwise():
            return f"UPDATE OR REPLACE {q(self.table)} SET v = v WHERE {self.shape.key_match()}", \
                list(self.shape.key(i))
        return (f"UPDATE OR REPLACE {q(self.table)} SET rowid = ? WHERE {self.shape.key_match()}",
                [rowid] + list(self.shape.key(i)))

    def sql_delete(self, i: int):
        return f"DELETE FROM {q(self.table)} WHERE {self.shape.key_match()}", list(self.shape.key(i))

    def sql_delete_range(self, lo: int, hi: int):
        col = q(self.shape.range_column)
        return f"DELETE FROM {q(self.table)} WHERE {col} BETWEEN ? AND ?", [lo, hi]

    def op_begin(self, c: Conn, verb: str) -> None:
        if c.host.in_transaction:
            return
        if verb == "BEGIN IMMEDIATE" and self.other_writer(c):
            return
        c.reset()
        try:
            c.host.execute(verb)
        except HOST_ERRORS as exc:
            assert result_code(exc) == SQLITE_BUSY, exc
            return
        if verb == "BEGIN IMMEDIATE":  # holds the write lock from now on
            c.wrote = True
            c.csn_at_first_write = self.committed_csn()

    def op_commit(self, c: Conn) -> None:
        if c.host.in_transaction:
            c.host.execute("COMMIT")
            self.transaction_ended(c, committed=True)

    def op_rollback(self, c: Conn) -> None:
        if c.host.in_transaction:
            c.host.execute("ROLLBACK")
            self.transaction_ended(c, committed=False)

    def op_savepoint(self, c: Conn) -> None:
        if not c.host.in_transaction:
            c.reset()
        self.savepoint_ids += 1
        name = f"sp{self.savepoint_ids}"
        c.host.execute(f"SAVEPOINT {name}")
        c.savepoints.append(name)

    def op_rollback_to(self, c: Conn, which: int) -> None:
        if not c.savepoints or not c.host.in_transaction:
            return
        idx = which % len(c.savepoints)
        c.host.execute(f"ROLLBACK TO {c.savepoints[idx]}")
        del c.savepoints[idx + 1:]

    def op_release(self, c: Conn, which: int) -> None:
        if not c.savepoints or not c.host.in_transaction:
            return
        idx = which % len(c.savepoints)
        c.host.execute(f"RELEASE {c.savepoints[idx]}")
        del c.savepoints[idx:]
        if not c.host.in_transaction:  # released the savepoint that began it
            self.transaction_ended(c, committed=True)

    def op_recursive_triggers(self, c: Conn, on: bool) -> None:
        c.host.execute(f"PRAGMA recursive_triggers = {'ON' if on else 'OFF'}")

    def op_tracking_context(self, c: Conn, which: Optional[int]) -> None:
        if c.host.kind == "bare":
            return
        sqlite_ct.set_tracking_context(
            c.host.conn, None if which is None else uuid.UUID(int=which))

    def op_read(self, c: Conn) -> None:
        c.host.execute(f"SELECT count(*) FROM {q(self.table)}")

    def op_enumerate(self, c: Conn, api: str) -> None:
        if c.host.kind == "bare":
            return
        if c.host.in_transaction and c.wrote:
            # Enumerating inside one's own uncommitted write transaction is
            # covered by test_enumerate_inside_own_write_transaction.
            return
        if self.other_writer(c):
            note("enumerated while another connection held uncommitted writes")
        self.enumerate(c, api)

    def enumerate(self, c: Conn, api: str) -> None:
        conn = c.host.conn
        try:
            if api == "list":
                cs = sqlite_ct.enumerate_changes(conn, self.table, self.anchor)
            elif api == "group":
                cs = sqlite_ct.enumerate_group_changes(conn, [self.table], self.anchor)[self.table]
            else:
                buckets: Dict[str, List[dict]] = {"insert": [], "update": [], "delete": []}
                with sqlite_ct.iter_changes(conn, self.table, self.anchor) as stream:
                    for change in stream:
                        buckets[change.kind].append(change.row)
                cs = ChangeSet(self.table, self.anchor, stream.new_anchor,
                               buckets["insert"], buckets["update"], buckets["delete"])
        except AnchorError:
            # Legitimate only for a connection whose read snapshot predates
            # the replica's anchor.
            assert c.host.in_transaction, "AnchorError outside a transaction"
            assert c.host.value("SELECT sqlite_ct_last_committed_csn()") < self.anchor
            note("AnchorError from an older read snapshot")
            return
        committed = check_invariants(self.checker, self.table)
        check_invariants(self.checker, OTHER)
        assert cs.new_anchor >= self.anchor, (
            f"new_anchor went back from {self.anchor} to {cs.new_anchor}")
        assert cs.new_anchor <= committed, (
            f"new_anchor {cs.new_anchor} is above the last committed CSN {committed}")
        self.replica.apply(cs)
        self.anchor = cs.new_anchor
        if not c.host.in_transaction:
            # The enumeration read the latest committed state, as the checker does.
            assert self.replica.rows == table_rows(self.checker.conn, self.table,
                                                   list(self.shape.keys))

    def finish(self, commit: bool) -> None:
        for c in self.conns:
            if c.host.in_transaction:
                c.host.execute("COMMIT" if commit else "ROLLBACK")
                self.transaction_ended(c, committed=commit)
        self.enumerate(self.conns[0], "list")
        check_invariants(self.checker, self.table)
        assert self.replica.rows == table_rows(self.checker.conn, self.table,
                                               list(self.shape.keys))


def run_scenario(shape: Shape, scenario: Dict[str, Any], hosts: List[str],
                 mode: str = "native", defensive: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="ct-convergence-") as directory:
        s = Scenario(shape, directory, hosts[:scenario["connections"]],
                     scenario["preexisting"], scenario["open_before_schema"],
                     scenario["recursive_triggers"], mode, defensive)
        try:
            for op in scenario["ops"]:
                s.run(op)
            s.finish(scenario["finish_with_commit"])
        finally:
            s.close()


# ---------------------------------------------------------------- the properties

APSW_ONLY = ["apsw", "apsw", "apsw"]
MIXED = ["apsw", "sqlite3", "apsw"]
WITH_BARE = ["apsw", "bare", "apsw"]


# Found by this property: INSERT OR REPLACE over an existing key (no DELETE
# trigger fires with recursive_triggers off) re-stamps the key as inserted now,
# so a later DELETE of it in the same sync window is taken for "inserted and
# deleted inside the window" and never enumerated. See
# test_replace_on_key_then_delete_is_enumerated for the SQL.
REPLACE_ON_KEY_THEN_DELETE = {
    "connections": 2, "preexisting": [], "open_before_schema": False,
    "recursive_triggers": [False, False, False],
    "ops": [("insert", 0, "INSERT", [(1, None, 0)]),
            ("enumerate", 0, "list"),
            ("insert", 0, "INSERT OR REPLACE", [(1, None, 1)]),
            ("delete", 0, 1)],
    "finish_with_commit": True,
}
# The same through the UNIQUE column: the first row REPLACEs key 1 in place,
# the second displaces it through u = 'a'. (As shrunk by hypothesis; the
# UPDATE matches no row.)
UPDATE_OR_REPLACE_ONTO_KEY_THEN_DELETE = {
    "connections": 2, "preexisting": [], "open_before_schema": False,
    "recursive_triggers": [False, False, False],
    "ops": [("insert", 0, "INSERT", [(1, None, 0), (2, None, 0)]),
            ("enumerate", 0, "list"),
            ("update_key", 0, "UPDATE OR REPLACE", 1, 2),
            ("delete", 0, 2)],
    "finish_with_commit": True,
}
# Found by this property at 7713d71: with recursive_triggers ON, any OR REPLACE
# that displaces a row through the UNIQUE column failed with "triggers nested
# too deep" (see test_replace_through_unique_with_recursive_triggers).
DISPLACE_WITH_RECURSIVE_TRIGGERS = {
    "connections": 2, "preexisting": [], "open_before_schema": False,
    "recursive_triggers": [True, True, True],
    "ops": [("insert", 0, "INSERT", [(0, "a", 0)]),
            ("insert", 0, "INSERT OR REPLACE", [(1, "a", 1)])],
    "finish_with_commit": True,
}
# Fixed in 605c8f0: the victim capture compared u with the column's collation,
# not the UNIQUE index's (rowid_unique_nocase: 'A' displaces 'a').
DISPLACE_THROUGH_INDEX_COLLATION = {
    "connections": 2, "preexisting": [], "open_before_schema": False,
    "recursive_triggers": [False, False, False],
    "ops": [("insert", 0, "INSERT", [(0, "a", 0)]),
            ("enumerate", 1, "list"),
            ("insert", 0, "INSERT OR REPLACE", [(1, "A", 1)])],
    "finish_with_commit": True,
}
REPLACE_ON_KEY_THEN_DISPLACED = {
    "connections": 2, "preexisting": [], "open_before_schema": False,
    "recursive_triggers": [False, False, False],
    "ops": [("insert", 0, "INSERT", [(1, None, None)]),
            ("commit", 0),
            ("enumerate", 0, "list"),
            ("update_key", 0, "UPDATE", 0, 0),
            ("insert", 0, "INSERT OR REPLACE", [(1, "a", None), (0, "a", None)])],
    "finish_with_commit": False,
}

# Found against layout 7's first cut: the rollback of a failed autocommit
# statement left, through sqlite_ct_txn's xRollback probing the log, a read
# transaction open, and the connection's next enumeration read that old
# snapshot (it missed the other connection's commit).
FAILED_AUTOCOMMIT_THEN_OTHER_COMMITS = {
    "connections": 2, "preexisting": [], "open_before_schema": False,
    "recursive_triggers": [False, False, False],
    "ops": [("begin", 1, "BEGIN"), ("enumerate", 0, "list"), ("commit", 1),
            ("insert", 0, "INSERT", [(0, None, None), (0, None, None)]),
            ("insert", 1, "INSERT", [(0, None, None)])],
    "finish_with_commit": False,
}


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@PROFILE
@given(scenario=SCENARIO)
@example(scenario=FAILED_AUTOCOMMIT_THEN_OTHER_COMMITS)
@example(scenario=REPLACE_ON_KEY_THEN_DELETE)
@example(scenario=REPLACE_ON_KEY_THEN_DISPLACED)
@example(scenario=UPDATE_OR_REPLACE_ONTO_KEY_THEN_DELETE)
@example(scenario=DISPLACE_WITH_RECURSIVE_TRIGGERS)
@example(scenario=DISPLACE_THROUGH_INDEX_COLLATION)
def test_replica_converges(shape, scenario):
    run_scenario(SHAPES[shape], scenario, APSW_ONLY)


@pytest.fixture(scope="module")
def stdlib_sqlite3_loads_extension():
    reason = stdlib_unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("shape", ["rowid_unique", "composite_without_rowid"])
@scaled(0.5)
@given(scenario=SCENARIO)
def test_replica_converges_apsw_and_stdlib_sqlite3(stdlib_sqlite3_loads_extension, shape,
                                                   scenario):
    """Connection 1 is a stdlib sqlite3 connection (its own SQLite library and
    its own copy of the extension), the others apsw."""
    run_scenario(SHAPES[shape], scenario, MIXED)


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@scaled(0.5)
@given(scenario=SCENARIO)
def test_replica_converges_without_stamp_defaults(shape, scenario):
    """Tracking started under SQLITE_DBCONFIG_DEFENSIVE: the stamp columns have
    no DEFAULTs, so the AFTER INSERT trigger's WHEN runs the fix (a stamping
    UPDATE from C, csrc/state.c ctRunFix) for every inserted row."""
    run_scenario(SHAPES[shape], scenario, APSW_ONLY, defensive=True)


def portable_mode_available() -> Optional[str]:
    """None when create_schema(mode="portable") exists in this build."""
    host = open_apsw(":memory:")
    try:
        host.execute("CREATE TABLE probe(id INTEGER PRIMARY KEY)")
        sqlite_ct.create_schema(host.conn, "probe", mode="portable")
    except (TypeError, ValueError, sqlite_ct.Error) as exc:
        return f"this build has no portable mode: {exc}"
    finally:
        host.close()
    return None


@pytest.fixture(scope="module")
def portable_mode():
    reason = portable_mode_available()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@scaled(0.5)
@given(scenario=SCENARIO)
def test_replica_converges_portable_mode(portable_mode, shape, scenario):
    """Tables tracked with create_schema(mode="portable") (pure-SQL triggers),
    written also by connection 1, which never loads the extension."""
    run_scenario(SHAPES[shape], scenario, WITH_BARE, mode="portable")


# ---------------------------------------------------------------- pinned cases


@pytest.mark.parametrize("recursive_triggers", ["OFF", "ON"])
def test_replace_on_key_then_delete_is_enumerated(tmp_path, recursive_triggers):
    """A replica synced after the INSERT must see the row go: REPLACE on the
    key, then DELETE, both after the anchor. Fails with recursive_triggers
    OFF (the tombstone carries the REPLACE's BSN as the row's insert BSN)."""
    host = open_apsw(str(tmp_path / "replace.db"))
    try:
        host.execute(f"PRAGMA recursive_triggers = {recursive_triggers}")
        host.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        sqlite_ct.create_schema(host.conn, "t")
        host.execute("INSERT INTO t(id, v) VALUES (1, 0)")
        first = sqlite_ct.enumerate_changes(host.conn, "t", 0)
        assert first.inserts == [{"id": 1, "v": 0}]
        host.execute("INSERT OR REPLACE INTO t(id, v) VALUES (1, 1)")
        host.execute("DELETE FROM t WHERE id = 1")
        second = sqlite_ct.enumerate_changes(host.conn, "t", first.new_anchor)
        assert second.deletes == [{"id": 1}]
    finally:
        host.close()


@pytest.mark.parametrize("statement", [
    "INSERT OR REPLACE INTO t(id, u) VALUES (1, 'a')",
    "INSERT OR REPLACE INTO t(id, u) VALUES (2, 'c'), (3, 'c')",
    "UPDATE OR REPLACE t SET u = 'a' WHERE id = 5",
])
def test_replace_through_unique_with_recursive_triggers(tmp_path, statement):
    """With recursive_triggers ON (Debian's default) a REPLACE that deletes
    another row through a UNIQUE index fires the DELETE trigger; the tracker
    must not recurse ("triggers nested too deep" at 7713d71) and the
    displaced row must reach the replica as a delete."""
    host = open_apsw(str(tmp_path / "recursive.db"))
    try:
        host.execute("PRAGMA recursive_triggers = ON")
        host.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v)")
        sqlite_ct.create_schema(host.conn, "t")
        host.execute("INSERT INTO t(id, u, v) VALUES (0, 'a', NULL), (5, 'x', 0)")
        replica = Replica(["id"])
        first = sqlite_ct.enumerate_changes(host.conn, "t", 0)
        replica.apply(first)
        host.execute(statement)
        replica.apply(sqlite_ct.enumerate_changes(host.conn, "t", first.new_anchor))
        assert replica.rows == table_rows(host.conn, "t", ["id"])
    finally:
        host.close()


def test_update_or_replace_onto_a_key_then_delete_is_enumerated(tmp_path):
    """The same loss through UPDATE OR REPLACE: moving row 1 onto key 2
    deletes the old row 2 without a tombstone and stamps key 2 as inserted
    now; deleting key 2 before the next sync then leaves it on the replica."""
    host = open_apsw(str(tmp_path / "update-replace.db"))
    try:
        host.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        sqlite_ct.create_schema(host.conn, "t")
        host.execute("INSERT INTO t(id, v) VALUES (1, 0), (2, 0)")
        replica = Replica(["id"])
        first = sqlite_ct.enumerate_changes(host.conn, "t", 0)
        replica.apply(first)
        host.execute("UPDATE OR REPLACE t SET id = 2 WHERE id = 1")
        host.execute("DELETE FROM t WHERE id = 2")
        replica.apply(sqlite_ct.enumerate_changes(host.conn, "t", first.new_anchor))
        assert replica.rows == table_rows(host.conn, "t", ["id"]) == {}
    finally:
        host.close()


def test_enumerate_inside_own_write_transaction(tmp_path):
    """enumerate_changes() promises every change committed in (since,
    new_anchor]. Inside a transaction that has re-stamped a committed row,
    the committed change is hidden behind the uncommitted stamp; if that
    transaction then rolls back, the change is never enumerated. Either the
    enumeration refuses to run there (a sqlite_ct.Error) or it must include
    the committed row."""
    host = open_apsw(str(tmp_path / "own-txn.db"))
    try:
        host.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        sqlite_ct.create_schema(host.conn, "t")
        replica = Replica(["id"])
        start = sqlite_ct.enumerate_changes(host.conn, "t", 0)
        replica.apply(start)
        host.execute("INSERT INTO t(id, v) VALUES (1, 0)")   # committed
        anchor = start.new_anchor
        host.execute("BEGIN")
        host.execute("UPDATE t SET v = 1 WHERE id = 1")      # uncommitted re-stamp
        try:
            inside = sqlite_ct.enumerate_changes(host.conn, "t", anchor)
        except sqlite_ct.Error:
            inside = None
        host.execute("ROLLBACK")
        if inside is not None:
            replica.apply(inside)
            anchor = inside.new_anchor
        replica.apply(sqlite_ct.enumerate_changes(host.conn, "t", anchor))
        assert replica.rows == table_rows(host.conn, "t", ["id"]) == {(1,): {"id": 1, "v": 0}}
    finally:
        host.close()
