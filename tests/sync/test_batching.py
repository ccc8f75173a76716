"""Download batching: each batch its own transaction; a sync stopped after any
batch resumes from there, whatever the hub did in between, and converges."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlite_ct.sync import (ConflictResolver, ResolveAction, SyncError, SyncGroup, SyncStage,
                            SyncTable)

from .conftest import Client, Hub, connect, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
TAGS = "CREATE TABLE tags(a TEXT, b INTEGER, v TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID"
FILL = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) "
        "INSERT INTO t(id, v) SELECT i, 'v' || i FROM n")


class Stop(Exception):
    pass


def stop_after(batches):
    def progress(event):
        if event.stage is SyncStage.DOWNLOADING_CHANGES and event.batch >= batches and event.more:
            raise Stop
    return progress


def test_batches_are_at_most_batch_size_and_resume(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=(FILL.format(n=100),))
    conn = conns()
    sizes = []
    x = Client(conn, server, ["t"], batch_size=7,
               progress=lambda e: sizes.append(e.changes)
               if e.stage is SyncStage.DOWNLOADING_CHANGES else None)
    x.sync()
    assert max(sizes) == 7 and sum(sizes) == 100
    hub.execute("UPDATE t SET v = 'new' WHERE id % 10 = 0")
    hub.execute(FILL.format(n=130).replace("INSERT INTO", "INSERT OR IGNORE INTO"))
    partial = Client(conn, server, ["t"], batch_size=7, progress=stop_after(2))
    with pytest.raises(Stop):
        partial.sync()
    got = len(user_rows(conn, "t"))
    assert 100 < got < 130
    # The hub changes rows on both sides of the cursor, and deletes some.
    hub.execute("UPDATE t SET v = 'later' WHERE id IN (5, 105, 125)")
    hub.execute("DELETE FROM t WHERE id IN (7, 110, 129)")
    stats = Client(conn, server, ["t"], batch_size=7).sync()
    assert stats.total_changes_downloaded < 30 + 6  # resumed, not restarted
    assert user_rows(conn, "t") == user_rows(hub, "t")


def test_an_upload_after_a_partial_download_sees_what_was_received(conns, hub_with):
    """Rows received before the interruption are not unseen: editing one and
    uploading it is no conflict (the resolver would raise on any)."""
    hub, server = hub_with(SCHEMA, seed=(FILL.format(n=20),),
                           conflict_resolver=ConflictResolver(*[ResolveAction.FIRE_EVENT] * 5))
    conn = conns()
    Client(conn, server, ["t"]).sync()
    hub.execute("UPDATE t SET v = v || '!'")   # one transaction: one BSN for all rows
    with pytest.raises(Stop):
        Client(conn, server, ["t"], batch_size=3, progress=stop_after(2)).sync()
    received = [r for r in user_rows(conn, "t") if r[1].endswith("!")]
    assert len(received) == 6
    conn.execute("UPDATE t SET v = 'mine' WHERE id = ?", (received[-1][0],))
    x = Client(conn, server, ["t"], batch_size=3)
    stats = x.sync()
    assert stats.conflicts == []
    assert user_rows(conn, "t") == user_rows(hub, "t")
    # A row changed on the hub after the client received it still conflicts.
    hub.execute("UPDATE t SET v = 'hub' WHERE id = 1")
    conn.execute("UPDATE t SET v = 'client' WHERE id = 1")
    with pytest.raises(SyncError, match="ClientUpdateServerUpdate"):
        x.sync()


op = st.one_of(
    st.tuples(st.just("put"), st.integers(1, 15), st.text("xy", max_size=2)),
    st.tuples(st.just("del"), st.integers(1, 15)),
    st.tuples(st.just("tag"), st.sampled_from("ab"), st.integers(0, 3), st.text("xy", max_size=2)),
    st.tuples(st.just("untag"), st.sampled_from("ab"), st.integers(0, 3)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds=st.lists(st.tuples(st.lists(op, max_size=8), st.integers(1, 4)), max_size=6),
       batch_size=st.integers(1, 4))
def test_interrupted_downloads_converge(rounds, batch_size):
    """Hub edits, then a sync stopped after a random number of batches, with
    more hub edits in between; then a full sync: the client equals the hub."""
    hub_conn = connect()
    hub_conn.execute(SCHEMA)
    hub_conn.execute(TAGS)
    hub = Hub(hub_conn)
    group = SyncGroup("g")
    tables = [SyncTable("t", group=group), SyncTable("tags", group=group)]
    conn = connect()
    Client(conn, hub.server, tables).sync()
    for edits, stop in rounds:
        with hub_conn:
            for e in edits:
                if e[0] == "put":
                    hub_conn.execute("INSERT INTO t(id, v) VALUES (?, ?) ON CONFLICT(id) "
                                     "DO UPDATE SET v = excluded.v", e[1:])
                elif e[0] == "del":
                    hub_conn.execute("DELETE FROM t WHERE id = ?", e[1:])
                elif e[0] == "tag":
                    hub_conn.execute("INSERT OR REPLACE INTO tags(a, b, v) VALUES (?, ?, ?)",
                                     e[1:])
                else:
                    hub_conn.execute("DELETE FROM tags WHERE a = ? AND b = ?", e[1:])
        try:
            Client(conn, hub.server, tables, batch_size=batch_size,
                   progress=stop_after(stop)).sync()
        except Stop:
            pass
    Client(conn, hub.server, tables, batch_size=batch_size).sync()
    assert user_rows(conn, "t") == user_rows(hub_conn, "t")
    assert user_rows(conn, "tags") == user_rows(hub_conn, "tags")
    conn.close()
    hub_conn.close()


def test_foreign_keys_hold_across_batches(conns, hub_with):
    """With batch_size=1 every change is its own transaction: child deletes
    still come before parent deletes, parent inserts before child inserts."""
    hub, server = hub_with("CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)", seed=())
    hub.execute("CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER, note TEXT)")
    hub.execute("INSERT INTO parent VALUES (1, 'p1'), (2, 'p2')")
    hub.execute("INSERT INTO child VALUES (10, 1, 'c10'), (20, 2, 'c20')")
    from sqlite_ct.sync import TableSchema

    def with_fk(table, schema):
        if schema.name != "child":
            return None
        return TableSchema(schema.name, schema.columns, schema.primary_key,
                           constraints=("FOREIGN KEY(parent_id) REFERENCES parent(id)",))

    conn = conns()
    conn.execute("PRAGMA foreign_keys = ON")
    group = SyncGroup("family")
    tables = [SyncTable("parent", group=group), SyncTable("child", group=group)]
    x = Client(conn, server, tables, batch_size=1, creating_schema=with_fk)
    x.sync()
    hub.execute("BEGIN; DELETE FROM child WHERE parent_id = 1; DELETE FROM parent WHERE id = 1; "
                "INSERT INTO parent(id, name) VALUES (3, 'p3'); "
                "INSERT INTO child(id, parent_id, note) VALUES (30, 3, 'c30'); COMMIT")
    stats = x.sync()
    assert stats.conflicts == [] and stats.download_batches >= 4
    assert user_rows(conn, "parent") == [(2, "p2"), (3, "p3")]
    assert user_rows(conn, "child") == [(20, 2, "c20"), (30, 3, "c30")]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
