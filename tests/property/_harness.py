"""Shared machinery of the property tests: table shapes, connections to one
database file through apsw or the stdlib sqlite3, a replica, and the checks of
DESIGN.md §4 that hold after every enumeration.

Nothing here is mocked: every scenario runs against a real database file in
WAL mode, with the extension loaded into every connection.
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import apsw

import sqlite_ct
from sqlite_ct import ChangeSet

SQLITE_BUSY = 5
SQLITE_CONSTRAINT = 19

Key = Tuple[Any, ...]


def q(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------- replica

try:  # tests/replica.py, when another helper has written it
    from replica import Replica, table_rows  # type: ignore  # noqa: F401
    REPLICA_SOURCE = "tests/replica.py"
except ImportError:
    REPLICA_SOURCE = "tests/property/_harness.py"

    class Replica:  # type: ignore[no-redef]
        """A copy of one table kept by applying ChangeSets: deletes, then
        inserts, then updates, inserts and updates as upserts by key."""

        def __init__(self, key_columns: Sequence[str]) -> None:
            self.key_columns = list(key_columns)
            self.rows: Dict[Key, Dict[str, Any]] = {}

        def _key(self, row: Dict[str, Any]) -> Key:
            return tuple(row[k] for k in self.key_columns)

        def apply(self, changeset: ChangeSet) -> None:
            for row in changeset.deletes:
                self.rows.pop(self._key(row), None)
            for row in list(changeset.inserts) + list(changeset.updates):
                self.rows[self._key(row)] = dict(row)

    def table_rows(conn: Any, table: str, key_columns: Sequence[str]
                   ) -> Dict[Key, Dict[str, Any]]:
        """The table's rows without the __sys columns, keyed like Replica.rows."""
        cols = [r[0] for r in conn.execute(
            "SELECT name FROM pragma_table_xinfo(?) ORDER BY cid", (table,))
            if not r[0].lower().startswith("__sys")]
        sql = f"SELECT {', '.join(q(c) for c in cols)} FROM {q(table)}"
        out: Dict[Key, Dict[str, Any]] = {}
        for values in conn.execute(sql):
            row = dict(zip(cols, values))
            out[tuple(row[k] for k in key_columns)] = row
        return out


# ---------------------------------------------------------------- shapes

@dataclasses.dataclass(frozen=True)
class Shape:
    """A table layout. Operations name keys by index (0..7); key() maps an
    index to the key values, so one list of operations runs on every shape."""
    name: str
    table: str
    ddl: str
    keys: Tuple[str, ...]
    has_unique: bool
    range_column: str        # integer key column for BETWEEN and key shifts
    # the text key part of composite keys, by index parity
    key_texts: Tuple[str, str] = ("x", "y")
    # run after create_schema() (an index created later); portable mode then
    # runs create_schema() again
    later_ddl: str = ""

    def key(self, i: int) -> Key:
        if len(self.keys) == 1:
            return (i,)
        return (self.key_texts[i % 2], i // 2)

    @property
    def columns(self) -> Tuple[str, ...]:
        return self.keys + (("u",) if self.has_unique else ()) + ("v",)

    def row(self, i: int, u: Any, v: Any) -> Tuple[Any, ...]:
        return self.key(i) + ((u,) if self.has_unique else ()) + (v,)

    def key_match(self) -> str:
        return " AND ".join(f"{q(k)} = ?" for k in self.keys)


# 'bad' violates a CHECK; 'raise' makes a user trigger RAISE(ABORT); 'skip'
# makes a user BEFORE trigger RAISE(IGNORE) (the row is silently not written).
_CHECK = "CHECK (v IS NOT 'bad')"

SHAPES = {
    "rowid_unique": Shape(
        "rowid_unique", "items",
        f"CREATE TABLE items(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v, {_CHECK})",
        ("id",), True, "id"),
    "composite_without_rowid": Shape(
        "composite_without_rowid", "order lines",
        f'CREATE TABLE "order lines"(k1 TEXT NOT NULL, k2 INTEGER NOT NULL, v, {_CHECK},'
        " PRIMARY KEY(k1, k2)) WITHOUT ROWID",
        ("k1", "k2"), False, "k2"),
    # The UNIQUE index compares case-insensitively: REPLACE of u = 'A'
    # displaces the row holding 'a'.
    "rowid_unique_nocase": Shape(
        "rowid_unique_nocase", "tags",
        f"CREATE TABLE tags(id INTEGER PRIMARY KEY, u TEXT, v, {_CHECK});"
        " CREATE UNIQUE INDEX tags_u ON tags(u COLLATE NOCASE)",
        ("id",), True, "id"),
    "composite_unique": Shape(
        "composite_unique", "pairs",
        f"CREATE TABLE pairs(k1 TEXT NOT NULL, k2 INTEGER NOT NULL, u TEXT UNIQUE, v,"
        f" {_CHECK}, PRIMARY KEY(k1, k2)) WITHOUT ROWID",
        ("k1", "k2"), True, "k2"),
    # A NOCASE key in a rowid table: keys 'x' and 'X' are one key to SQLite,
    # so writes change a key's spelling (a delete plus an insert to a replica)
    # and OR REPLACE displaces the other spelling.
    "composite_nocase_key": Shape(
        "composite_nocase_key", "spellings",
        f"CREATE TABLE spellings(k1 TEXT COLLATE NOCASE NOT NULL, k2 INTEGER NOT NULL,"
        f" u TEXT UNIQUE, v, {_CHECK}, PRIMARY KEY(k1, k2))",
        ("k1", "k2"), True, "k2", key_texts=("x", "X")),
    # The UNIQUE index is created after tracking began (in portable mode
    # create_schema() runs again, as the refusal of writes asks; native mode
    # needs nothing).
    "unique_added_later": Shape(
        "unique_added_later", "later",
        f"CREATE TABLE later(id INTEGER PRIMARY KEY, u TEXT, v, {_CHECK})",
        ("id",), True, "id",
        later_ddl="UPDATE later SET u = NULL WHERE rowid NOT IN"
                  " (SELECT min(rowid) FROM later GROUP BY u);"
                  " CREATE UNIQUE INDEX later_u ON later(u)"),
}


def user_trigger_ddl(shape: Shape) -> List[str]:
    t = q(shape.table)
    n = shape.table.replace(" ", "_")
    return [
        f'CREATE TRIGGER "user_raise_ins_{n}" AFTER INSERT ON {t} WHEN NEW.v IS \'raise\''
        " BEGIN SELECT RAISE(ABORT, 'user trigger refused the row'); END",
        f'CREATE TRIGGER "user_raise_upd_{n}" AFTER UPDATE ON {t} WHEN NEW.v IS \'raise\''
        " BEGIN SELECT RAISE(ABORT, 'user trigger refused the row'); END",
        f'CREATE TRIGGER "user_skip_ins_{n}" BEFORE INSERT ON {t} WHEN NEW.v IS \'skip\''
        " BEGIN SELECT RAISE(IGNORE); END",
        f'CREATE TRIGGER "user_skip_upd_{n}" BEFORE UPDATE ON {t} WHEN NEW.v IS \'skip\''
        " BEGIN SELECT RAISE(IGNORE); END",
    ]


def user_spawn_ddl(shape: Shape) -> List[str]:
    """A user AFTER INSERT trigger, created after create_schema() so that it
    fires before sqlite-ct's, that inserts into the same table under OR
    REPLACE: a row 100 keys up, with the same UNIQUE value (which deletes the
    row that fired it, or another). The nested write runs in the middle of
    the outer row's write, between the rows SQLite deleted for it and
    sqlite-ct's AFTER INSERT trigger."""
    t = q(shape.table)
    n = shape.table.replace(" ", "_")
    keys = [f"NEW.{q(k)} + 100" if k == shape.range_column else f"NEW.{q(k)}"
            for k in shape.keys]
    values = keys + (["NEW.u"] if shape.has_unique else []) + ["'child'"]
    return [
        f'CREATE TRIGGER "user_spawn_{n}" AFTER INSERT ON {t} WHEN NEW.v IS \'spawn\' BEGIN'
        f" INSERT OR REPLACE INTO {t}({', '.join(q(c) for c in shape.columns)})"
        f" VALUES ({', '.join(values)}); END",
    ]


def user_touch_ddl(shape: Shape) -> List[str]:
    """A user AFTER UPDATE trigger, created after create_schema() so that it
    fires before sqlite-ct's, that writes the row again whenever its
    __sysInsertTxBsn changed: after sqlite-ct's restamp of a row whose key
    changed and after the fix of an inserted row, while the capture holds
    those writes' images (an "updated_at" trigger does the same on every
    update). Its own write keeps __sysInsertTxBsn, so it does not recurse."""
    t = q(shape.table)
    n = shape.table.replace(" ", "_")
    match = " AND ".join(f"{q(k)} IS NEW.{q(k)}" for k in shape.keys)
    return [
        f'CREATE TRIGGER "user_touch_{n}" AFTER UPDATE ON {t}'
        ' WHEN NEW."__sysInsertTxBsn" IS NOT OLD."__sysInsertTxBsn" BEGIN'
        f" UPDATE {t} SET v = v WHERE {match}; END",
    ]


# ---------------------------------------------------------------- connections

class Host:
    """One connection (apsw or stdlib sqlite3) to the database file."""

    def __init__(self, conn: Any, kind: str) -> None:
        self.conn = conn
        self.kind = kind

    def execute(self, sql: str, params: Sequence[Any] = ()) -> List[tuple]:
        return [tuple(r) for r in self.conn.execute(sql, tuple(params))]

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.execute(sql, params)
        return rows[0][0] if rows else None

    @property
    def in_transaction(self) -> bool:
        return bool(self.conn.in_transaction)

    def close(self) -> None:
        self.conn.close()


def open_apsw(path: str) -> Host:
    conn = apsw.Connection(path)
    conn.setbusytimeout(0)
    sqlite_ct.load(conn)
    return Host(conn, "apsw")


def open_bare(path: str) -> Host:
    """An apsw connection that never loads the extension (the sqlite3 shell,
    a DB browser): it can write only tables tracked in portable mode."""
    conn = apsw.Connection(path)
    conn.setbusytimeout(0)
    return Host(conn, "bare")


def stdlib_unavailable_reason() -> Optional[str]:
    """None when stdlib sqlite3 connections get the extension, else why not."""
    try:
        sqlite_ct.register_auto_extension()
        probe = sqlite3.connect(":memory:")
        try:
            sqlite_ct.load(probe)
        finally:
            probe.close()
    except Exception as exc:  # any failure means the variant cannot run
        return f"sqlite_ct.register_auto_extension() does not work here: {exc}"
    return None


def open_stdlib(path: str) -> Host:
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    sqlite_ct.load(conn)  # registered by register_auto_extension(): checks the version
    return Host(conn, "sqlite3")


def result_code(exc: BaseException) -> Optional[int]:
    """The primary SQLite result code of a host exception, None if not SQLite's."""
    if isinstance(exc, apsw.Error):
        return getattr(exc, "result", None)
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return None if code is None else code & 0xFF
    return None


HOST_ERRORS = (apsw.Error, sqlite3.Error)


# ---------------------------------------------------------------- invariants

def committed_state(checker: Host, table: str) -> Dict[str, Any]:
    """Read, in one snapshot of a connection outside any transaction, what
    the invariants need."""
    assert not checker.in_transaction
    checker.execute("BEGIN")
    try:
        t = q(table)
        seq = checker.execute(
            "SELECT __sysTxCsn, __sysTxBsn FROM __sysTxCommitSequence ORDER BY 1")
        state = dict(
            seq=seq,
            last_committed=checker.value("SELECT sqlite_ct_last_committed_csn()"),
            stamps=checker.execute(
                f'SELECT "__sysChangeTxBsn", "__sysInsertTxBsn" FROM {t}'),
            tombstones=checker.execute(
                "SELECT __sysDeleteTxBsn, __sysInsertTxCsn FROM __sysOCSDeletedRows"
                " WHERE __sysTName = ?", (table,)),
            enable_bsn=checker.value(
                "SELECT __sysEnableTxBsn FROM __sysOCSTrackedObjects WHERE __sysTName = ?",
                (table,)),
        )
    finally:
        checker.execute("COMMIT")
    return state


def check_invariants(checker: Host, table: str) -> int:
    """DESIGN §4.2/§4.4 on the committed state; returns the last committed CSN.

    - sqlite_ct_last_committed_csn() is the newest logged CSN, and CSN == BSN;
    - no committed row or tombstone carries a BSN above it;
    - every stamped BSN > 0 (change, insert, delete, tombstone insert) is a
      logged transaction.
    """
    s = committed_state(checker, table)
    csns = [csn for csn, _ in s["seq"]]
    last = max(csns, default=0)
    assert s["last_committed"] == last, (
        f"sqlite_ct_last_committed_csn() is {s['last_committed']}, the newest "
        f"logged CSN is {last}")
    assert all(csn == bsn for csn, bsn in s["seq"]), s["seq"]
    logged = set(csns)
    stamped = set()
    for change, insert in s["stamps"]:
        stamped.update(x for x in (change, insert) if x is not None)
    for delete, insert in s["tombstones"]:
        stamped.update(x for x in (delete, insert) if x is not None)
    assert s["enable_bsn"] in logged, "the enabling transaction is not logged"
    above = sorted(b for b in stamped if b > last)
    assert not above, f"committed BSNs {above} are above the last committed CSN {last}"
    unlogged = sorted(b for b in stamped if b > 0 and b not in logged)
    assert not unlogged, f"stamped BSNs {unlogged} have no row in __sysTxCommitSequence"
    return last


# ---------------------------------------------------------------- value helpers

def typed(value: Any) -> Tuple[str, Any]:
    """A value with its SQLite type, so 1, 1.0, 0.0 and -0.0 compare unequal."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        raise TypeError("bool is not an SQLite value")
    if isinstance(value, int):
        return ("integer", value)
    if isinstance(value, float):
        return ("real", struct.pack("<d", value))
    if isinstance(value, str):
        return ("text", value)
    return ("blob", bytes(value))


def fresh_db(directory: str, name: str = "db.sqlite") -> str:
    path = os.path.join(directory, name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return path
