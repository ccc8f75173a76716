"""Foreign keys everywhere, client transactions that move a customer with its
orders: a hub and three clients that all enforce foreign keys, random
transactions on every node, random syncs and upload batch sizes. No sync
fails and no client gets stuck (a change that cannot be applied waits in the
conflict inbox with the rest of its client transaction); once every client
has settled its inbox (resolve_transaction) and synced twice, every client
equals the hub and a further round moves nothing. Settling for the client
writes the client's rows again, unless its table refuses them (an order of a
customer the hub deleted, which the client's transaction did not write):
then it raises SyncError and writes nothing, and settling for the server
(the hub's rows stand) always works."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from sqlite_ct.sync import (ClientSyncProvider, ServerSyncProvider, SyncAgent, SyncError,
                            SyncGroup, SyncStage, SyncTable)

from .conftest import connect, user_rows

CUSTOMERS = "CREATE TABLE customers(id INTEGER PRIMARY KEY, region TEXT NOT NULL)"
ORDERS = ("CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER NOT NULL "
          "REFERENCES customers(id), region TEXT NOT NULL)")
GROUP = SyncGroup("shop")
TABLES = [SyncTable("customers", group=GROUP), SyncTable("orders", group=GROUP)]
REGIONS = ["n", "s", "e"]

customer = st.integers(1, 4)
order = st.integers(1, 8)
edit = st.one_of(
    # a customer and two orders of it, in one transaction
    st.tuples(st.just("open"), customer, order, order, st.sampled_from(REGIONS)),
    # a customer moved with every order it has here
    st.tuples(st.just("move"), customer, st.sampled_from(REGIONS)),
    # a customer closed: its orders deleted, then the customer
    st.tuples(st.just("close"), customer),
    st.tuples(st.just("order"), order, customer),
)
step = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 3), edit),
    st.tuples(st.just("sync"), st.integers(1, 3)),
)


def apply_edit(conn, e) -> None:
    kind = e[0]
    with conn:
        if kind == "open":
            conn.execute("INSERT OR IGNORE INTO customers(id, region) VALUES (?, ?)",
                         (e[1], e[4]))
            for o in (e[2], e[3]):
                conn.execute("INSERT OR IGNORE INTO orders(id, customer, region) "
                             "SELECT ?, id, region FROM customers WHERE id = ?", (o, e[1]))
        elif kind == "move":
            conn.execute("UPDATE customers SET region = ? WHERE id = ?", (e[2], e[1]))
            conn.execute("UPDATE orders SET region = ? WHERE customer = ?", (e[2], e[1]))
        elif kind == "close":
            conn.execute("DELETE FROM orders WHERE customer = ?", (e[1],))
            conn.execute("DELETE FROM customers WHERE id = ?", (e[1],))
        elif kind == "order":
            conn.execute("INSERT OR REPLACE INTO orders(id, customer, region) "
                         "SELECT ?, id, region FROM customers WHERE id = ?", (e[1], e[2]))


def fk_connect():
    conn = connect()
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def settle(conn, provider, txn, use) -> None:
    """resolve_transaction(txn, use); for the client, a refusal writes
    nothing and leaves the transaction for the server's rows."""
    if use == "client":
        before = {t: user_rows(conn, t) for t in ("customers", "orders")}
        try:
            provider.resolve_transaction(txn, use)
            return
        except SyncError as err:
            assert "FOREIGN KEY constraint failed" in str(err), err
            assert {t: user_rows(conn, t) for t in before} == before
            event("settling for the client was refused: the hub deleted a parent")
        use = "server"
    provider.resolve_transaction(txn, use)


@settings(max_examples=int(os.environ.get("SQCT_SYNC_EXAMPLES", 25)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@example(steps=[("edit", 0, ("open", 1, 1, 1, "n")), ("sync", 1), ("edit", 0, ("close", 1)),
                ("edit", 1, ("move", 1, "n"))],
         upload_batch_size=None, batch_size=None, use="client")
@example(steps=[("edit", 0, ("open", 2, 1, 1, "n")), ("sync", 1), ("edit", 0, ("close", 2)),
                ("edit", 1, ("open", 2, 1, 2, "n"))],
         upload_batch_size=None, batch_size=None, use="client")
@given(steps=st.lists(step, max_size=25), upload_batch_size=st.sampled_from([None, 1, 2]),
       batch_size=st.sampled_from([None, 1, 3]), use=st.sampled_from(["client", "server"]))
def test_clients_with_foreign_keys_never_get_stuck_and_converge(steps, upload_batch_size,
                                                                  batch_size, use):
    hub = fk_connect()
    hub.execute(CUSTOMERS)
    hub.execute(ORDERS)
    server = ServerSyncProvider(hub)
    clients = []
    for _ in range(3):
        conn = fk_connect()
        # The client's tables, with the foreign key (sync uploads what they
        # hold: nothing yet).
        conn.execute(CUSTOMERS)
        conn.execute(ORDERS)
        provider = ClientSyncProvider(conn)
        clients.append((conn, provider, SyncAgent(provider, server, TABLES,
                                                  batch_size=batch_size,
                                                  upload_batch_size=upload_batch_size)))
    for _, _, agent in clients:
        agent.synchronize()
    # The client tables enforce the hub's foreign key.
    assert clients[0][0].execute("SELECT count(*) FROM pragma_foreign_key_list('orders')"
                                 ).fetchall() == [(1,)]
    nodes = [hub] + [c[0] for c in clients]
    for s in steps:
        if s[0] == "edit":
            apply_edit(nodes[s[1]], s[2])
        else:
            clients[s[1] - 1][2].synchronize()       # never raises
    # Settle: each client's refused transactions are resolved, then two rounds.
    for _ in range(2):
        for conn, provider, agent in clients:
            agent.synchronize()
            refused = sorted({c.transaction for c in provider.conflicts()
                              if c.stage is SyncStage.UPLOADING_CHANGES
                              and c.transaction is not None})
            if refused:
                event("a client transaction waited in the inbox")
            for txn in refused:
                settle(conn, provider, txn, use)
    for _ in range(2):
        for _, _, agent in clients:
            agent.synchronize()
    for i, (conn, provider, _) in enumerate(clients):
        for table in ("customers", "orders"):
            assert user_rows(conn, table) == user_rows(hub, table), (i, table, use)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert hub.execute("PRAGMA foreign_key_check").fetchall() == []
    for _, _, agent in clients:
        stats = agent.synchronize()
        assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (0, 0)
    for conn in nodes:
        conn.close()


def test_a_transaction_whose_parent_lost_a_conflict_can_be_settled_for_the_client():
    """Found by the property above (steps open 1 on the hub, sync client 1, close 1 on the
    hub, move 1 on client 1): the client's transaction (update customer 1, update its
    order) meets the hub's delete of both; the customer's conflict is settled server-wins
    and the order is left out with its transaction. The order waited alone in the inbox,
    and resolve_transaction(t, "client") wrote it without its customer (FOREIGN KEY
    failed). The client keeps every conflict of a transaction that waits in the inbox
    (sqlite_ct/sync/agent.py, in_the_inbox)."""
    hub = fk_connect()
    hub.execute(CUSTOMERS)
    hub.execute(ORDERS)
    server = ServerSyncProvider(hub)
    conn = fk_connect()
    conn.execute(CUSTOMERS)
    conn.execute(ORDERS)
    provider = ClientSyncProvider(conn)
    agent = SyncAgent(provider, server, TABLES)
    agent.synchronize()
    apply_edit(hub, ("open", 1, 1, 1, "n"))
    agent.synchronize()
    apply_edit(hub, ("close", 1))
    apply_edit(conn, ("move", 1, "n"))
    agent.synchronize()
    refused = sorted({c.transaction for c in provider.conflicts()
                      if c.stage is SyncStage.UPLOADING_CHANGES and c.transaction is not None})
    assert refused
    for txn in refused:
        provider.resolve_transaction(txn, "client")
    agent.synchronize()
    for table in ("customers", "orders"):
        assert user_rows(conn, table) == user_rows(hub, table)
