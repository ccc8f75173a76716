"""Invariant 1 for sync: a hub and three clients, random edits everywhere
(the hub's own writes included), random sync order and batch sizes; after two
rounds of syncs with no edits every client equals the hub, and a third round
moves nothing (no echo)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlite_ct.sync import ConflictResolver, ResolveAction, SyncGroup, SyncTable

from .conftest import Client, Hub, connect, user_rows

ITEMS = "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT, n INTEGER)"
TAGS = "CREATE TABLE tags(a TEXT, b INTEGER, note TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID"
GROUP = SyncGroup("all")
TABLES = [SyncTable("items", group=GROUP), SyncTable("tags", group=GROUP)]

item_key = st.integers(1, 6)
tag_key = st.tuples(st.sampled_from(["p", "q", "r"]), st.integers(0, 1))
value = st.one_of(st.none(), st.text("abc", max_size=2))

edit = st.one_of(
    st.tuples(st.just("item_upsert"), item_key, value),
    st.tuples(st.just("item_update"), item_key, value),
    st.tuples(st.just("item_delete"), item_key),
    st.tuples(st.just("item_rekey"), item_key, item_key),
    st.tuples(st.just("tag_upsert"), tag_key, value),
    st.tuples(st.just("tag_delete"), tag_key),
)
step = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 3), st.lists(edit, min_size=1, max_size=3)),
    st.tuples(st.just("sync"), st.integers(1, 3)),
)


def apply_edit(conn, e) -> None:
    kind = e[0]
    if kind == "item_upsert":
        conn.execute("INSERT INTO items(id, v, n) VALUES (?, ?, 1) ON CONFLICT(id) "
                     "DO UPDATE SET v = excluded.v, n = n + 1", (e[1], e[2]))
    elif kind == "item_update":
        conn.execute("UPDATE items SET v = ?, n = n * 2 WHERE id = ?", (e[2], e[1]))
    elif kind == "item_delete":
        conn.execute("DELETE FROM items WHERE id = ?", (e[1],))
    elif kind == "item_rekey":
        conn.execute("UPDATE OR IGNORE items SET id = ? WHERE id = ?", (e[2], e[1]))
    elif kind == "tag_upsert":
        conn.execute("INSERT INTO tags(a, b, note) VALUES (?, ?, ?) ON CONFLICT(a, b) "
                     "DO UPDATE SET note = excluded.note", (*e[1], e[2]))
    elif kind == "tag_delete":
        conn.execute("DELETE FROM tags WHERE a = ? AND b = ?", e[1])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=25),
       batch_size=st.sampled_from([None, 1, 2, 5]),
       server_side=st.sampled_from([ResolveAction.SERVER_WINS, ResolveAction.CLIENT_WINS]),
       seeded=st.booleans())
def test_hub_and_three_clients_converge(steps, batch_size, server_side, seeded):
    hub_conn = connect()
    hub_conn.execute(ITEMS)
    hub_conn.execute(TAGS)
    if seeded:  # rows that predate tracking on the hub
        hub_conn.execute("INSERT INTO items VALUES (1, 'x', 1), (2, NULL, 2)")
        hub_conn.execute("INSERT INTO tags VALUES ('p', 0, 'seed')")
    resolver = ConflictResolver(*([server_side] * 4))
    hub = Hub(hub_conn, conflict_resolver=resolver)
    clients = [Client(connect(), hub.server, TABLES, batch_size=batch_size) for _ in range(3)]
    for c in clients:
        c.sync()
    nodes = [hub_conn] + [c.conn for c in clients]
    for s in steps:
        if s[0] == "edit":
            with nodes[s[1]]:
                for e in s[2]:
                    apply_edit(nodes[s[1]], e)
        else:
            clients[s[1] - 1].sync()
    for _ in range(2):
        for c in clients:
            c.sync()
    for i, c in enumerate(clients):
        for table in ("items", "tags"):
            assert user_rows(c.conn, table) == user_rows(hub_conn, table), (i, table)
    for c in clients:
        stats = c.sync()
        assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (0, 0)
    for conn in nodes:
        conn.close()
