"""Other tools writing to tracked tables: sqlite-utils and the SQLAlchemy ORM.

Both accept only stdlib sqlite3 connections, and this interpreter's sqlite3
cannot load extensions, so each runs in a fresh subprocess that calls
register_auto_extension() before connecting (the auto-extension stays out of
the test process). The subprocess reports each step's ChangeSet and the table
after it; the test process replays the change sets into a replica, which must
equal the table after every step, and re-reads the file with apsw.
"""
import pytest

import sqlite_ct

from ._support import (Replica, describe, keys_of, run_python, run_python_unchecked,
                       table_rows)

pytest.importorskip("sqlite_utils", reason="sqlite-utils is not installed (pip install -e .[test])")
pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed (pip install -e .[test])")

# Shared by both scripts: each step ends with step(name), which records the
# changes since the previous step, the commit log and the table.
STEP_HELPERS = r"""
import dataclasses, json, sqlite3, sys
import sqlite_ct

PATH = sys.argv[1]
sqlite_ct.register_auto_extension()
STEPS = []
_anchor = [0]


def step(conn, name, table="items"):
    changes = sqlite_ct.enumerate_changes(conn, table, since=_anchor[0])
    _anchor[0] = changes.new_anchor
    STEPS.append({
        "name": name,
        "changes": dataclasses.asdict(changes),
        "csns": [r[0] for r in conn.execute(
            "SELECT __sysTxCsn FROM __sysTxCommitSequence ORDER BY 1")],
        "bsns": sorted({r[0] for r in conn.execute(
            f"SELECT __sysChangeTxBsn FROM {table} WHERE __sysChangeTxBsn > ? "
            f"UNION SELECT __sysDeleteTxBsn FROM __sysOCSDeletedRows "
            f"WHERE __sysTName = ? AND __sysDeleteTxBsn > ?",
            (changes.since, table, changes.since))}),
        "table": [list(r) for r in conn.execute(
            f"SELECT id, name, qty FROM {table} ORDER BY id")],
    })
"""

SQLITE_UTILS_SCRIPT = STEP_HELPERS + r"""
import sqlite_utils

SCENARIO = sys.argv[2]
RECURSIVE_TRIGGERS = sys.argv[3] == "on"


class Boom(Exception):
    pass


conn = sqlite3.connect(PATH)  # sqlite-utils wants the default isolation_level
db = sqlite_utils.Database(conn, recursive_triggers=RECURSIVE_TRIGGERS)
items = db["items"]
items.create({"id": int, "name": str, "qty": int}, pk="id")
items.create_index(["name"], unique=True)
sqlite_ct.create_schema(conn, "items")
step(conn, "create_schema")

items.insert_all(({"id": i, "name": f"n{i}", "qty": i} for i in range(1, 251)),
                 batch_size=100)
step(conn, "insert_all")

if SCENARIO == "main":
    items.upsert_all(({"id": i, "name": f"n{i}", "qty": -i} for i in range(241, 261)),
                     pk="id")
    step(conn, "upsert_all")

    items.update(5, {"qty": 99})
    step(conn, "update")

    items.delete_where("id > ?", [255])
    step(conn, "delete_where")

    items.delete(3)
    step(conn, "delete")

    items.insert({"id": 7, "name": "seven", "qty": 7}, replace=True)
    step(conn, "insert_replace_same_key")

    items.insert_all([{"id": 1, "name": "ignored", "qty": 0},
                      {"id": 1001, "name": "new", "qty": 1}], ignore=True)
    step(conn, "insert_ignore")

    with db.atomic():
        items.insert({"id": 2000, "name": "outer", "qty": 1})
        try:
            with db.atomic():
                items.update(9, {"qty": -9})
                items.delete_where("id = ?", [10])
                items.insert({"id": 2001, "name": "inner", "qty": 1})
                raise Boom()
        except Boom:
            pass
        items.update(11, {"qty": 111})
    step(conn, "nested_atomic")

elif SCENARIO == "replace_unique":
    # id 1000 takes row 8's UNIQUE name: REPLACE deletes row 8.
    items.insert({"id": 1000, "name": "n8", "qty": 8}, replace=True)
    step(conn, "insert_replace_unique")

print(json.dumps({"steps": STEPS,
                  "recursive_triggers": conn.execute("PRAGMA recursive_triggers").fetchone()[0]}))
"""

SQLALCHEMY_SCRIPT = STEP_HELPERS + r"""
from sqlalchemy import String, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

MODE = sys.argv[2]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String)
    qty: Mapped[int]


class Boom(Exception):
    pass


engine = create_engine(f"sqlite:///{PATH}")


@event.listens_for(engine, "connect")
def load_sqlite_ct(dbapi_connection, connection_record):
    # register_auto_extension() loaded it already; load() checks the version.
    sqlite_ct.load(dbapi_connection)
    if MODE == "begin-recipe":
        # SQLAlchemy's documented recipe for working SAVEPOINTs with the
        # sqlite3 driver before Python 3.12: let SQLAlchemy emit BEGIN.
        dbapi_connection.isolation_level = None


if MODE == "begin-recipe":
    @event.listens_for(engine, "begin")
    def do_begin(conn):
        conn.exec_driver_sql("BEGIN")


Base.metadata.create_all(engine)
with engine.begin() as c:
    sqlite_ct.create_schema(c.connection.driver_connection, "items")
raw = sqlite3.connect(PATH, isolation_level=None)  # for step(): reads only
step(raw, "create_schema")
out = {}

with Session(engine) as session:
    with session.begin():
        session.add_all([Item(id=i, name=f"n{i}", qty=i) for i in (1, 2, 3)])
        session.flush()
        dbapi = session.connection().connection.driver_connection
        out["outer_bsn"] = sqlite_ct.current_bsn(dbapi)
        inner = session.begin_nested()
        session.add(Item(id=4, name="inner", qty=4))
        session.get(Item, 1).qty = 100
        session.delete(session.get(Item, 2))
        session.flush()
        out["inner_bsn"] = sqlite_ct.current_bsn(dbapi)
        inner.rollback()
        session.get(Item, 3).qty = 33
        session.add(Item(id=5, name="n5", qty=5))
        session.flush()
        out["outer_bsn_after_rollback"] = sqlite_ct.current_bsn(dbapi)
step(raw, "outer_commits_inner_rolled_back")

with Session(engine) as session:
    with session.begin():
        session.get(Item, 1).qty = 10
        session.flush()
        with session.begin_nested():
            session.add(Item(id=6, name="n6", qty=6))
            session.flush()
            try:
                with session.begin_nested():
                    session.delete(session.get(Item, 3))
                    session.get(Item, 5).name = "five"
                    session.flush()
                    raise Boom()
            except Boom:
                pass
        session.delete(session.get(Item, 2))
step(raw, "two_levels_inner_rolled_back")

if MODE == "begin-recipe":
    # The savepoint is the transaction's first statement; with the driver's
    # default handling it would not join the session's transaction (see
    # SQLAlchemy's "Transactions with SQLite and the sqlite3 driver").
    with Session(engine) as session:
        with session.begin():
            with session.begin_nested():
                session.add(Item(id=7, name="n7", qty=7))
            try:
                with session.begin_nested():
                    session.get(Item, 1).qty = -1
                    session.flush()
                    raise Boom()
            except Boom:
                pass
            session.get(Item, 6).qty = 60
    step(raw, "savepoint_first")

    with Session(engine) as session:
        with session.begin():
            session.add(Item(id=8, name="rolled back", qty=8))
            session.flush()
            session.rollback()
    step(raw, "session_rollback")

print(json.dumps({"steps": STEPS, **out}))
"""


def replay(steps, apsw_conn):
    """Apply every step's ChangeSet to a replica, which must equal the table
    after each step; returns the steps by name."""
    replica = Replica(["id"])
    by_name = {}
    for step in steps:
        replica.apply(sqlite_ct.ChangeSet(**step["changes"]))
        table = {(row[0],): {"id": row[0], "name": row[1], "qty": row[2]}
                 for row in step["table"]}
        assert replica.rows == table, f"replica differs from the table after {step['name']}"
        by_name[step["name"]] = step
    # The file, read through apsw: a new replica from anchor 0 gets the same table.
    fresh = Replica(["id"])
    fresh.apply(sqlite_ct.enumerate_changes(apsw_conn, "items", since=0))
    assert fresh.rows == table_rows(apsw_conn, "items", ["id", "name", "qty"], ["id"])
    assert fresh.rows == replica.rows
    return by_name


def one_new_csn(step, previous):
    """The step committed exactly one tracked transaction, and every row and
    tombstone it changed carries that one BSN."""
    new = step["csns"][len(previous["csns"]):]
    assert len(new) == 1, f"{step['name']}: CSNs {new}"
    assert step["bsns"] == new, f"{step['name']}: BSNs {step['bsns']} for CSN {new}"
    assert step["changes"]["new_anchor"] == new[0]
    return new[0]


def kinds(step):
    changes = step["changes"]
    return (keys_of(changes["inserts"]), keys_of(changes["updates"]),
            keys_of(changes["deletes"]))


def test_sqlite_utils_writes_are_tracked_and_a_replica_converges(db_path, apsw_conn):
    out = run_python(SQLITE_UTILS_SCRIPT, db_path, "main", "on")
    steps = out["steps"]
    assert [s["name"] for s in steps] == [
        "create_schema", "insert_all", "upsert_all", "update", "delete_where", "delete",
        "insert_replace_same_key", "insert_ignore", "nested_atomic"]
    by_name = replay(steps, apsw_conn)
    for previous, step in zip(steps, steps[1:]):
        if step["name"] != "insert_all":
            one_new_csn(step, previous)

    # sqlite-utils turns recursive_triggers on, so REPLACE fires delete triggers.
    assert out["recursive_triggers"] == 1
    # insert_all commits each batch of 100 rows: three transactions, three CSNs.
    insert_all = by_name["insert_all"]
    assert insert_all["csns"] == [1, 2, 3, 4]
    assert insert_all["bsns"] == [2, 3, 4]
    assert kinds(insert_all) == (list(range(1, 251)), [], [])
    # upsert_all is INSERT ... ON CONFLICT DO UPDATE: existing keys are updates.
    assert kinds(by_name["upsert_all"]) == (list(range(251, 261)), list(range(241, 251)), [])
    assert kinds(by_name["update"]) == ([], [5], [])
    assert kinds(by_name["delete_where"]) == ([], [], list(range(256, 261)))
    assert kinds(by_name["delete"]) == ([], [], [3])
    # REPLACE of an existing key deletes the old row and inserts the new one.
    assert kinds(by_name["insert_replace_same_key"]) == ([7], [], [7])
    # INSERT OR IGNORE: the ignored row is no change.
    assert kinds(by_name["insert_ignore"]) == ([1001], [], [])
    # Nested atomic(): the inner savepoint rolled back, the outer committed.
    assert kinds(by_name["nested_atomic"]) == ([2000], [11], [])


@pytest.mark.parametrize("recursive_triggers", ["on", "off"])
def test_sqlite_utils_replace_that_deletes_another_row_by_a_unique_column(
        db_path, apsw_conn, recursive_triggers):
    # DESIGN §5: INSERT OR REPLACE whose conflict is on a UNIQUE column other
    # than the key deletes a different row. sqlite-utils turns
    # recursive_triggers on unless told otherwise.
    out = run_python(SQLITE_UTILS_SCRIPT, db_path, "replace_unique", recursive_triggers)
    steps = out["steps"]
    by_name = replay(steps, apsw_conn)
    step = by_name["insert_replace_unique"]
    one_new_csn(step, by_name["insert_all"])
    assert out["recursive_triggers"] == (recursive_triggers == "on")
    assert kinds(step) == ([1000], [], [8])


@pytest.mark.parametrize("mode", ["driver-default", "begin-recipe"])
def test_sqlalchemy_orm_nested_transactions(mode, db_path, apsw_conn):
    proc, out = run_python_unchecked(SQLALCHEMY_SCRIPT, db_path, mode)
    assert out is not None, describe(proc)
    steps = out["steps"]
    by_name = replay(steps, apsw_conn)
    for previous, step in zip(steps, steps[1:]):
        if step["name"] != "session_rollback":
            one_new_csn(step, previous)

    # One BSN from the first flush to the commit, savepoint or not.
    first = by_name["outer_commits_inner_rolled_back"]
    bsn = first["csns"][-1]
    assert out["outer_bsn"] == out["inner_bsn"] == out["outer_bsn_after_rollback"] == bsn
    assert kinds(first) == ([1, 2, 3, 5], [], [])
    assert sorted(map(tuple, first["table"])) == [
        (1, "n1", 1), (2, "n2", 2), (3, "n3", 33), (5, "n5", 5)]

    assert kinds(by_name["two_levels_inner_rolled_back"]) == ([6], [1], [2])
    if mode == "begin-recipe":
        assert kinds(by_name["savepoint_first"]) == ([7], [6], [])
        rolled_back = by_name["session_rollback"]
        assert rolled_back["csns"] == by_name["savepoint_first"]["csns"]
        assert kinds(rolled_back) == ([], [], [])

    # Last, so that the tracking checks above report first: the interpreter
    # must exit cleanly although SQLAlchemy's pool still holds connections
    # that sqlite-ct was auto-loaded into when it shuts down.
    assert proc.returncode == 0, describe(proc)
