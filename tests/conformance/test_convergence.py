"""Convergence on both hubs: any sequence of client edits, direct hub writes
and syncs with any batch size ends, after a final round of syncs, with every
client equal to the hub."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg_fixtures import user_rows

OPS = st.lists(st.tuples(
    st.sampled_from(["a", "b", "hub"]),
    st.sampled_from(["upsert", "update", "delete", "sync"]),
    st.integers(1, 8),
    st.sampled_from([None, 1, 3])), min_size=1, max_size=30)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_any_history_converges(hub, client_of, ops):
    table = f"t{abs(hash(tuple(ops))) % 10**9}"
    hub.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, v text)")
    server = hub.server()
    clients = {name: client_of(server, [table]) for name in ("a", "b")}
    for conn, agent in clients.values():
        agent.synchronize()
    for n, (who, op, key, batch) in enumerate(ops):
        if who == "hub":
            run = hub.execute
        else:
            conn, agent = clients[who]
            run = conn.execute
            if op == "sync":
                agent.batch_size = batch
                agent.synchronize()
                continue
        if op == "upsert":
            run(f"INSERT INTO {table} (id, v) VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                f"SET v = excluded.v", (key, f"{who}{n}"))
        elif op == "update":
            run(f"UPDATE {table} SET v = v || ? WHERE id = ?", (who, key))
        elif op == "delete":
            run(f"DELETE FROM {table} WHERE id = ?", (key,))
    for _ in range(2):
        for conn, agent in clients.values():
            agent.synchronize()
    expected = hub.rows(table)
    for conn, _ in clients.values():
        assert user_rows(conn, table) == expected


FILTERED_OPS = st.lists(st.tuples(
    st.sampled_from(["ann", "bob", "hub"]),
    st.sampled_from(["upsert", "give", "delete", "sync"]),
    st.integers(1, 6),
    st.sampled_from(["ann", "bob", "cy"]),
    st.sampled_from([None, 2])), min_size=1, max_size=25)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=FILTERED_OPS)
def test_filtered_clients_converge_to_their_scope(hub, client_of, ops):
    """Each client holds exactly the hub rows its filter selects, whatever
    moved rows in and out of its scope on the hub or on another client."""
    table = f"f{abs(hash(tuple(ops))) % 10**9}"
    hub.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, owner text, v text)")
    server = hub.server(filters={table: "owner = :user"})
    clients = {name: client_of(server, [table], parameters={"user": name})
               for name in ("ann", "bob")}
    for conn, agent in clients.values():
        agent.synchronize()
    for n, (who, op, key, owner, batch) in enumerate(ops):
        if who == "hub":
            run = hub.execute
        else:
            conn, agent = clients[who]
            run = conn.execute
            if op == "sync":
                agent.batch_size = batch
                agent.synchronize()
                continue
            if op == "upsert":
                owner = who     # a client writes rows of its own scope
        if op == "upsert":
            run(f"INSERT INTO {table} (id, owner, v) VALUES (?, ?, ?) ON CONFLICT (id) "
                f"DO UPDATE SET owner = excluded.owner, v = excluded.v", (key, owner, str(n)))
        elif op == "give":
            run(f"UPDATE {table} SET owner = ? WHERE id = ?", (owner, key))
        elif op == "delete":
            run(f"DELETE FROM {table} WHERE id = ?", (key,))
    for _ in range(2):
        for conn, agent in clients.values():
            agent.synchronize()
    for name, (conn, _) in clients.items():
        assert user_rows(conn, table) == [r for r in hub.rows(table) if r[1] == name]
