"""pandas' DataFrame.to_sql() on tracked tables, with the real pandas, through
a SQLAlchemy engine and through a stdlib sqlite3 connection.

sqlite_ct.integrations.pandas.to_sql(..., if_exists="replace") replaces the
rows, each old row tombstoned and each new one tracked, so a replica
converges. pandas' own "replace" drops the table: refused on an enabled
engine; on a plain sqlite3 connection it cannot be stopped, and the next
enumeration says so.
"""
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlite_ct

from ._support import Replica, table_rows

pd = pytest.importorskip("pandas", reason="pandas is not installed")
pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")

from sqlalchemy import create_engine  # noqa: E402

from sqlite_ct.integrations import pandas as ct_pandas  # noqa: E402
from sqlite_ct.integrations import sqlalchemy as ct_sqlalchemy  # noqa: E402

COLUMNS = ["id", "name", "qty"]


def create_tracked(conn, rows=((1, "one", 1), (2, "two", 2), (3, "three", 3))):
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER)")
    sqlite_ct.create_schema(conn, "items")
    conn.executemany("INSERT INTO items(id, name, qty) VALUES (?, ?, ?)", rows)


def frame(rows):
    return pd.DataFrame(list(rows), columns=COLUMNS)


def synced_replica(conn):
    replica = Replica(["id"])
    replica.apply(sqlite_ct.enumerate_changes(conn, "items", since=0))
    return replica


def apply_next(replica, conn):
    changes = sqlite_ct.enumerate_changes(conn, "items", since=replica.anchor)
    replica.apply(changes)
    assert replica.rows == table_rows(conn, "items", COLUMNS, ["id"])
    return changes


def csns(conn):
    return [r[0] for r in conn.execute("SELECT __sysTxCsn FROM __sysTxCommitSequence")]


@pytest.fixture
def engine(db_path):
    engine = create_engine(f"sqlite:///{db_path}")
    ct_sqlalchemy.enable(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("via", ["engine", "connection", "transaction", "sqlite3",
                                 "sqlite3-legacy"])
def test_replace_tombstones_every_old_row_and_tracks_every_new_one(via, db_path, engine,
                                                                    sqlite3_conn):
    create_tracked(sqlite3_conn)
    replica = synced_replica(sqlite3_conn)
    before = csns(sqlite3_conn)
    new = frame([(2, "TWO", 20), (4, "four", 4)])
    if via == "engine":
        written = ct_pandas.to_sql(new, "items", engine, if_exists="replace", index=False)
    elif via == "connection":
        with engine.connect() as c:
            written = ct_pandas.to_sql(new, "items", c, if_exists="replace", index=False)
            c.commit()
    elif via == "transaction":
        with engine.begin() as c:  # the caller's transaction: a SAVEPOINT inside it
            c.exec_driver_sql("UPDATE items SET qty = 0 WHERE id = 1")
            written = ct_pandas.to_sql(new, "items", c, if_exists="replace", index=False)
    elif via == "sqlite3":
        written = ct_pandas.to_sql(new, "items", sqlite3_conn, if_exists="replace", index=False)
    else:
        legacy = sqlite3.connect(db_path)  # the default, implicit transactions
        try:
            written = ct_pandas.to_sql(new, "items", legacy, if_exists="replace", index=False)
            assert not legacy.in_transaction
        finally:
            legacy.close()
    assert written == 2
    changes = apply_next(replica, sqlite3_conn)
    assert sorted(r["id"] for r in changes.deletes) == [1, 2, 3]
    assert changes.inserts == [{"id": 2, "name": "TWO", "qty": 20},
                               {"id": 4, "name": "four", "qty": 4}]
    # One transaction: the deletes and the inserts share one CSN.
    assert len(csns(sqlite3_conn)) == len(before) + 1
    assert sqlite_ct.is_tracked(sqlite3_conn, "items")
    assert sqlite_ct.check(sqlite3_conn) == []


@pytest.mark.parametrize("via", ["engine", "sqlite3"])
def test_replace_with_columns_the_table_lacks_changes_nothing(via, engine, sqlite3_conn):
    create_tracked(sqlite3_conn)
    replica = synced_replica(sqlite3_conn)
    before = csns(sqlite3_conn)
    bad = pd.DataFrame({"id": [9], "colour": ["red"]})
    with pytest.raises(Exception) as info:
        ct_pandas.to_sql(bad, "items", engine if via == "engine" else sqlite3_conn,
                         if_exists="replace", index=False)
    assert "colour" in f"{info.value} {info.value.__cause__}"
    assert not sqlite3_conn.in_transaction
    assert csns(sqlite3_conn) == before
    assert len(apply_next(replica, sqlite3_conn)) == 0
    assert len(replica.rows) == 3


def test_pandas_own_replace_on_an_enabled_engine_is_refused(engine, sqlite3_conn):
    create_tracked(sqlite3_conn)
    with pytest.raises(sqlite_ct.TableError, match='refusing to drop tracked table "items"'):
        frame([(5, "five", 5)]).to_sql("items", engine, if_exists="replace", index=False)
    assert sorted(table_rows(sqlite3_conn, "items", COLUMNS, ["id"])) == [(1,), (2,), (3,)]
    assert sqlite_ct.check(sqlite3_conn) == []


def test_pandas_own_replace_on_a_sqlite3_connection_is_reported_at_the_next_enumeration(
        sqlite3_conn):
    """The path that cannot be guarded (docs/orm.md says so): pandas drops the
    table through the connection itself. Tracking is not lost silently: the
    next enumeration and check() report it."""
    create_tracked(sqlite3_conn)
    frame([(5, "five", 5)]).to_sql("items", sqlite3_conn, if_exists="replace", index=False)
    with pytest.raises(sqlite_ct.TableError, match='table "items" lost its tracking triggers'):
        sqlite_ct.enumerate_changes(sqlite3_conn, "items", since=0)
    assert "trigger-missing" in {p.code for p in sqlite_ct.check(sqlite3_conn)}


@pytest.mark.parametrize("via", ["engine", "sqlite3"])
def test_pandas_delete_rows_is_tracked_as_it_stands(via, engine, sqlite3_conn):
    create_tracked(sqlite3_conn)
    replica = synced_replica(sqlite3_conn)
    frame([(1, "uno", 1)]).to_sql("items", engine if via == "engine" else sqlite3_conn,
                                  if_exists="delete_rows", index=False)
    changes = apply_next(replica, sqlite3_conn)
    assert sorted(r["id"] for r in changes.deletes) == [1, 2, 3]
    assert changes.inserts == [{"id": 1, "name": "uno", "qty": 1}]


@pytest.mark.parametrize("via", ["engine", "sqlite3"])
def test_other_modes_and_untracked_tables_are_pandas_own(via, engine, sqlite3_conn):
    con = engine if via == "engine" else sqlite3_conn
    ct_pandas.to_sql(frame([(1, "one", 1)]), "plain", con, index=False)
    ct_pandas.to_sql(frame([(2, "two", 2)]), "plain", con, if_exists="append", index=False)
    with pytest.raises(ValueError, match="already exists"):
        ct_pandas.to_sql(frame([(3, "three", 3)]), "plain", con, index=False)
    # An untracked table is replaced as pandas does it: a new table.
    ct_pandas.to_sql(pd.DataFrame({"other": ["x"]}), "plain", con, if_exists="replace",
                     index=False)
    assert sqlite3_conn.execute("SELECT * FROM plain").fetchall() == [("x",)]


ROWS = st.lists(st.tuples(st.integers(1, 12), st.sampled_from(["a", "b", "c"]),
                          st.integers(-3, 3) | st.none()),
                max_size=8, unique_by=lambda r: r[0])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["replace", "append"]), ROWS),
                      min_size=1, max_size=5),
       sync_every=st.integers(1, 3))
def test_a_replica_converges_over_any_sequence_of_replaces(steps, sync_every, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pandas") / "p.db")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        sqlite_ct.load(conn)
        create_tracked(conn, rows=())
        replica = Replica(["id"])
        for i, (mode, rows) in enumerate(steps):
            if mode == "append":
                existing = {r[0] for r in conn.execute("SELECT id FROM items")}
                rows = [r for r in rows if r[0] not in existing]
            ct_pandas.to_sql(frame(rows), "items", conn, if_exists=mode, index=False)
            if i % sync_every == 0:
                apply_next(replica, conn)
        apply_next(replica, conn)
        assert replica.rows == table_rows(conn, "items", COLUMNS, ["id"])
    finally:
        conn.close()
