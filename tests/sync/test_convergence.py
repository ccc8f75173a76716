"""Invariant 1 for sync: a hub and three clients, random edits everywhere
(the hub's own writes included), random sync order and batch sizes; after two
rounds of syncs with no edits every client equals the hub, and a third round
moves nothing (no echo)."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sqlite_ct.sync import (ConflictResolver, ResolveAction, SyncDirection, SyncGroup,
                            SyncStage, SyncTable)

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


# -- restores, copies, rescopes and hub triggers --------------------------------

REGIONAL = "CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT, region TEXT)"
AUDIT = "CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT)"
HUB_TRIGGERS = (
    # the hub rewrites some values itself, and logs every insert
    "CREATE TRIGGER shout AFTER UPDATE OF v ON items WHEN new.v = 'c' BEGIN "
    "UPDATE items SET v = 'C' WHERE id = new.id; END",
    "CREATE TRIGGER shout_new AFTER INSERT ON items WHEN new.v = 'c' BEGIN "
    "UPDATE items SET v = 'C' WHERE id = new.id; END",
    "CREATE TRIGGER log AFTER INSERT ON items BEGIN "
    "INSERT INTO audit(what) VALUES ('added ' || new.id); END",
)
REGIONS = ["n", "s"]
SCOPED = [SyncTable("items"), SyncTable("audit", SyncDirection.DOWNLOAD_ONLY)]

regional_edit = st.one_of(
    st.tuples(st.just("upsert"), item_key, value, st.sampled_from(REGIONS)),
    st.tuples(st.just("replace"), item_key, value, st.sampled_from(REGIONS)),
    st.tuples(st.just("update"), item_key, value),
    st.tuples(st.just("move"), item_key, st.sampled_from(REGIONS)),
    st.tuples(st.just("delete"), item_key),
)
event_ = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 3), st.lists(regional_edit, min_size=1,
                                                           max_size=3)),
    st.tuples(st.just("sync"), st.integers(1, 3)),
    # the hub is written between a sync's upload and its download
    st.tuples(st.just("sync_race"), st.integers(1, 3), st.lists(regional_edit, min_size=1,
                                                                max_size=2)),
    st.tuples(st.just("rescope"), st.integers(1, 3), st.sampled_from(REGIONS)),
    st.tuples(st.just("backup"), st.integers(0, 3)),
    st.tuples(st.just("restore"), st.integers(0, 3)),
    st.tuples(st.just("copy"), st.integers(1, 3), st.integers(1, 3)),
)


def apply_regional(conn, e) -> None:
    kind = e[0]
    if kind == "upsert":
        conn.execute("INSERT INTO items(id, v, region) VALUES (?, ?, ?) ON CONFLICT(id) "
                     "DO UPDATE SET v = excluded.v", e[1:])
    elif kind == "replace":
        conn.execute("INSERT OR REPLACE INTO items(id, v, region) VALUES (?, ?, ?)", e[1:])
    elif kind == "update":
        conn.execute("UPDATE items SET v = ? WHERE id = ?", (e[2], e[1]))
    elif kind == "move":
        conn.execute("UPDATE items SET region = ? WHERE id = ?", (e[2], e[1]))
    elif kind == "delete":
        conn.execute("DELETE FROM items WHERE id = ?", (e[1],))


@settings(max_examples=int(os.environ.get("SQCT_SYNC_EXAMPLES", 25)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event_, max_size=20), batch_size=st.sampled_from([None, 1, 3]))
@example(
    events=[('sync', 1),
     ('sync', 2),
     ('sync', 2),
     ('edit', 0, [('update', 2, None)]),
     ('rescope', 2, 'n'),
     ('sync', 2),
     ('sync_race', 3, [('upsert', 2, None, 'n'), ('update', 1, None)]),
     ('rescope', 3, 's'),
     ('edit', 2, [('upsert', 2, 'cc', 'n')]),
     ('edit', 3, [('move', 3, 'n')]),
     ('backup', 2),
     ('backup', 0),
     ('edit', 2, [('move', 6, 'n'), ('update', 2, 'c'), ('delete', 5)]),
     ('restore', 1),
     ('sync', 2),
     ('rescope', 2, 's'),
     ('sync_race', 1, [('delete', 6)]),
     ('edit', 0, [('delete', 4), ('delete', 5), ('upsert', 2, 'cc', 'n')]),
     ('restore', 0),
     ('edit', 3, [('delete', 6), ('replace', 4, 'ab', 's')])],
    batch_size=None,
)
def test_restores_copies_rescopes_and_hub_triggers_converge(events, batch_size):
    """Every client ends equal to the hub restricted to its scope, whatever
    restores (of the hub or a client), copies of client databases, parameter
    changes and hub triggers happened; refused syncs are answered with
    reinitialise() or reidentify(), as the errors say."""
    import shutil
    import tempfile
    from sqlite_ct.sync import ReinitialiseRequired, ReplicaCopied, ServerSyncProvider
    work = tempfile.mkdtemp()
    paths = [os.path.join(work, f"n{i}.db") for i in range(4)]
    hub_conn = connect(paths[0])
    hub_conn.execute(REGIONAL)
    hub_conn.execute(AUDIT)
    for sql in HUB_TRIGGERS:
        hub_conn.execute(sql)
    filters = {"items": "region = :r"}
    server = ServerSyncProvider(hub_conn, filters=filters)
    regions = {1: "n", 2: "s", 3: "n"}
    clients = {i: Client(connect(paths[i]), server, SCOPED, batch_size=batch_size,
                         parameters={"r": regions[i]}) for i in (1, 2, 3)}
    backups = {}
    taken = 0
    for c in clients.values():
        c.sync()

    def node(i):
        return hub_conn if i == 0 else clients[i].conn

    def sync(c):
        for _ in range(3):
            try:
                return c.sync()
            except ReplicaCopied:
                c.agent.reidentify()
            except ReinitialiseRequired:
                c.agent.reinitialise()
        raise AssertionError("still refused after reinitialising")

    def reopen(i):
        nonlocal hub_conn, server
        if i == 0:
            hub_conn = connect(paths[0])
            server = ServerSyncProvider(hub_conn, filters=filters)
            for c in clients.values():
                c.agent.server = server
        else:
            clients[i] = Client(connect(paths[i]), server, SCOPED, batch_size=batch_size,
                                parameters={"r": regions[i]})

    for ev in events:
        kind = ev[0]
        if kind == "edit":
            conn = node(ev[1])
            with conn:
                for e in ev[2]:
                    apply_regional(conn, e)
        elif kind == "sync":
            sync(clients[ev[1]])
        elif kind == "sync_race":
            def interfere(progress, edits=ev[2], done=[]):
                if progress.stage is SyncStage.UPLOADING_CHANGES and not done:
                    done.append(1)
                    with hub_conn:
                        for e in edits:
                            apply_regional(hub_conn, e)
            clients[ev[1]].agent.progress = interfere
            try:
                sync(clients[ev[1]])
            finally:
                clients[ev[1]].agent.progress = None
        elif kind == "rescope":
            regions[ev[1]] = ev[2]
            clients[ev[1]].agent.parameters = {"r": ev[2]}
        elif kind == "backup":
            taken += 1
            backups[ev[1]] = paths[ev[1]] + f".bak{taken}"
            node(ev[1]).execute("VACUUM INTO ?", (backups[ev[1]],))
        elif kind == "restore" and ev[1] in backups:
            node(ev[1]).close()
            for suffix in ("-wal", "-shm"):
                if os.path.exists(paths[ev[1]] + suffix):
                    os.remove(paths[ev[1]] + suffix)
            shutil.copy(backups[ev[1]], paths[ev[1]])
            reopen(ev[1])
        elif kind == "copy" and ev[1] != ev[2]:
            clients[ev[2]].conn.close()
            os.remove(paths[ev[2]])
            clients[ev[1]].conn.execute("VACUUM INTO ?", (paths[ev[2]],))
            reopen(ev[2])
    for _ in range(2):
        for c in clients.values():
            sync(c)
    hub_items = user_rows(hub_conn, "items")
    for i, c in clients.items():
        assert user_rows(c.conn, "items") == [r for r in hub_items if r[2] == regions[i]], i
        assert user_rows(c.conn, "audit") == user_rows(hub_conn, "audit"), i
    for c in clients.values():
        stats = c.sync()
        assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (0, 0)
        c.conn.close()
    hub_conn.close()
    shutil.rmtree(work)
