"""Scopes hold, for any interleaving of edits and syncs of two users sharing a
filtered hub table: a sync of user U changes only hub rows that were U's
before (or absent) and are U's after (or absent), and leaves U's client equal
to the hub restricted to U's rows."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Client, connect, user_rows

SCHEMA = "CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT, body TEXT)"
USERS = ("alice", "bob")
KEYS = st.integers(1, 6)
OPS = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(USERS), KEYS, st.sampled_from(USERS)),
    st.tuples(st.just("update"), st.sampled_from(USERS), KEYS, st.sampled_from(USERS)),
    st.tuples(st.just("delete"), st.sampled_from(USERS), KEYS, st.just("")),
    st.tuples(st.just("sync"), st.sampled_from(USERS), st.just(0), st.just("")),
    st.tuples(st.just("hub"), st.sampled_from(USERS), KEYS, st.sampled_from(USERS)),
)


def snapshot(conn):
    return {r[0]: r for r in user_rows(conn, "notes")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=30))
def test_a_user_never_writes_outside_its_scope(ops):
    from sqlite_ct.sync import ServerSyncProvider
    hub = connect()
    hub.execute(SCHEMA)
    hub.execute("INSERT INTO notes VALUES (1, 'alice', 'seed'), (2, 'bob', 'seed')")
    server = ServerSyncProvider(hub, filters={"notes": "owner = :user"})
    clients = {u: Client(connect(), server, ["notes"], parameters={"user": u}) for u in USERS}
    for c in clients.values():
        c.sync()
    n = 0
    for op, user, key, owner in ops:
        n += 1
        conn = clients[user].conn
        if op == "insert":
            conn.execute("INSERT OR REPLACE INTO notes(id, owner, body) VALUES (?, ?, ?)",
                         (key, owner, f"{user} {n}"))
        elif op == "update":
            conn.execute("UPDATE notes SET owner = ?, body = ? WHERE id = ?",
                         (owner, f"{user} {n}", key))
        elif op == "delete":
            conn.execute("DELETE FROM notes WHERE id = ?", (key,))
        elif op == "hub":
            hub.execute("INSERT OR REPLACE INTO notes(id, owner, body) VALUES (?, ?, ?)",
                        (key, owner, f"hub {n}"))
        else:
            before = snapshot(hub)
            clients[user].sync()
            after = snapshot(hub)
            for k in set(before) | set(after):
                if before.get(k) != after.get(k):
                    assert before.get(k) is None or before[k][1] == user, (k, before, after)
                    assert after.get(k) is None or after[k][1] == user, (k, before, after)
            assert user_rows(clients[user].conn, "notes") == [
                r for r in user_rows(hub, "notes") if r[1] == user]
    for c in clients.values():
        c.conn.close()
    hub.close()
