"""Client transactions travel whole, on every hub (see conftest.py): the
changes an upload marks as one client transaction are applied together or
not at all, and when one fails, every change of it comes back as a conflict
with the transaction's id, deferred to the client's inbox."""
import itertools
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlite_ct
from pg_fixtures import user_rows
from sqlite_ct.sync import (ApplyAction, ConflictResolver, ConflictType, DownloadRequest,
                             DownloadTable, ResolveAction, SyncGroup, SyncTable, TableChanges,
                             Upload)

SCHEMA = ["CREATE TABLE customers (id integer PRIMARY KEY, region text, name text)",
          "CREATE TABLE orders (id integer PRIMARY KEY, customer integer NOT NULL "
          "REFERENCES customers (id), region text, item text)"]


@pytest.fixture
def shop(hub):
    if hub.kind == "sqlite":
        hub.execute("PRAGMA foreign_keys = ON")
    for ddl in SCHEMA:
        hub.execute(ddl)
    hub.execute("INSERT INTO customers (id, region, name) VALUES (1, 'north', 'Ann')")
    hub.execute("INSERT INTO orders (id, customer, region, item) VALUES (10, 1, 'north', 'tea')")
    return hub


def customers(txns=(), **kinds):
    return TableChanges("customers", ("id", "region", "name"), ("id",),
                        transactions=list(txns), **kinds)


def orders(txns=(), **kinds):
    return TableChanges("orders", ("id", "customer", "region", "item"), ("id",),
                        transactions=list(txns), **kinds)


def upload(server, tables, client=None, anchors=None, parameters=None):
    return server.apply_changes(Upload(client or uuid.uuid4(), "shop", tables,
                                       anchors or {"customers": None, "orders": None},
                                       parameters or {}))


def test_a_transaction_whose_change_breaks_a_foreign_key_is_applied_not_at_all(shop):
    server = shop.server()
    # Transaction 5: a new customer and an order of it; transaction 6: a new
    # customer and an order of a customer that does not exist.
    result = upload(server, [customers([5, 6], inserts=[(2, "south", "Bo"), (3, "east", "Cy")]),
                             orders([5, 6], inserts=[(20, 2, "south", "jam"),
                                                     (21, 99, "east", "oil")])])
    assert (result.applied, result.failed) == (2, 2)
    assert shop.rows("customers") == [(1, "north", "Ann"), (2, "south", "Bo")]
    assert shop.rows("orders") == [(10, 1, "north", "tea"), (20, 2, "south", "jam")]
    got = sorted((c.table, c.key["id"], c.type, c.transaction, c.deferred,
                  c.action) for c in result.conflicts)
    assert got == [("customers", 3, ConflictType.ERRORS_OCCURRED, 6, True, ApplyAction.CONTINUE),
                   ("orders", 21, ConflictType.ERRORS_OCCURRED, 6, True, ApplyAction.CONTINUE)]
    by_table = {c.table: c for c in result.conflicts}
    assert "FOREIGN KEY" in by_table["orders"].error.upper()
    assert by_table["customers"].error.startswith(
        "not applied with the rest of its client transaction 6: the change of table "
        "\"orders\" key {'id': 21} in it was not")
    assert by_table["customers"].client_row == {"id": 3, "region": "east", "name": "Cy"}
    # The client is told to drop what the hub does not have: its rows of the
    # failed transaction come back as deletes (corrections).
    deleted = {(tc.table, k) for tc in result.corrections for k in tc.deletes}
    assert deleted == {("customers", (3,)), ("orders", (21,))}


def test_a_customer_moved_with_its_orders_is_not_half_applied_when_one_row_loses(shop):
    """The hub edited the customer meanwhile (server wins): the client's
    orders, moved in the same transaction, stay where they were too."""
    server = shop.server()
    shop.execute("UPDATE customers SET name = 'Ann B' WHERE id = 1")
    first = uuid.uuid4()
    result = upload(server, [customers([8], updates=[(1, "south", "Ann")]),
                             orders([8], updates=[(10, 1, "south", "tea")])], client=first)
    assert (result.applied, result.failed) == (0, 2)
    assert shop.rows("customers") == [(1, "north", "Ann B")]
    assert shop.rows("orders") == [(10, 1, "north", "tea")]
    types = sorted((c.table, c.type.value, c.transaction, c.deferred) for c in result.conflicts)
    assert types == [("customers", "ClientUpdateServerUpdate", 8, False),
                     ("orders", "ErrorsOccurred", 8, True)]
    # The client has not seen the hub's rows: its next download brings them,
    # nothing comes back with the upload.
    assert result.corrections == []


def test_when_the_client_wins_the_whole_transaction_applies(shop):
    server = shop.server(conflict_resolver=ConflictResolver(
        client_update_server_update=ResolveAction.CLIENT_WINS))
    shop.execute("UPDATE customers SET name = 'Ann B' WHERE id = 1")
    result = upload(server, [customers([8], updates=[(1, "south", "Ann")]),
                             orders([8], updates=[(10, 1, "south", "tea")])])
    assert (result.applied, result.failed) == (2, 0)
    assert shop.rows("customers") == [(1, "south", "Ann")]
    assert shop.rows("orders") == [(10, 1, "south", "tea")]


def test_a_change_outside_the_scope_fails_its_transaction(shop, client_of):
    server = shop.server(filters={"customers": "region = :region",
                                  "orders": "region = :region"})
    result = upload(server, [customers([4, 4], inserts=[(5, "north", "Di"), (6, "west", "Ed")]),
                             orders([7], inserts=[(50, 1, "north", "rice")])],
                    parameters={"region": "north"})
    assert (result.applied, result.failed) == (1, 2)
    assert shop.rows("customers") == [(1, "north", "Ann")]
    assert shop.rows("orders") == [(10, 1, "north", "tea"), (50, 1, "north", "rice")]
    got = sorted((c.key["id"], c.transaction, c.error.split(":")[0]) for c in result.conflicts)
    assert got == [(5, 4, "not applied with the rest of its client transaction 4"),
                   (6, 4, "refused")]


def test_changes_without_transactions_stand_alone(shop):
    server = shop.server()
    result = upload(server, [customers(inserts=[(2, "south", "Bo"), (3, "east", "Cy")]),
                             orders(inserts=[(20, 2, "south", "jam"), (21, 99, "east", "oil")])])
    assert (result.applied, result.failed) == (3, 1)
    assert [c.key for c in result.conflicts] == [{"id": 21}]
    assert result.conflicts[0].transaction is None


def test_a_failed_transaction_leaves_no_trace_of_its_applied_changes(shop):
    """The hub applies set by set; a transaction that fails after some of its
    changes went in is rolled back with them (and the other transactions,
    applied again, are all there once)."""
    server = shop.server()
    result = upload(server, [
        customers([1, 2, 3], inserts=[(2, "s", "a"), (3, "s", "b"), (4, "s", "c")]),
        orders([1, 2, 3, 3], inserts=[(20, 2, "s", "x"), (21, 3, "s", "y"), (22, 4, "s", "z"),
                                      (23, 98, "s", "bad")])])
    assert (result.applied, result.failed) == (4, 3)
    assert [r[0] for r in shop.rows("customers")] == [1, 2, 3]
    assert [r[0] for r in shop.rows("orders")] == [10, 20, 21]
    assert {c.transaction for c in result.conflicts} == {3}
    assert sorted(c.key["id"] for c in result.conflicts) == [4, 22, 23]


# -- the property: any upload, any failures: transactions are all or nothing ----------

_names = itertools.count(1)
CUSTOMER_IDS = st.integers(1, 6)      # 1-3 are on the hub before the upload
ORDER_IDS = st.integers(1, 6)
CHANGES = st.one_of(
    st.tuples(st.just("customer"), CUSTOMER_IDS, st.sampled_from(["a", "b"])),
    st.tuples(st.just("order"), ORDER_IDS, st.sampled_from([1, 2, 4, 5, 99])),
    st.tuples(st.just("delete-customer"), CUSTOMER_IDS, st.just("")),
)
UPLOADS = st.lists(st.tuples(st.integers(1, 4), CHANGES), min_size=1, max_size=12)
HUB_EDITS = st.sets(st.integers(1, 3), max_size=2)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(upload_spec=UPLOADS, hub_edits=HUB_EDITS, with_txns=st.booleans())
def test_every_client_transaction_is_applied_whole_or_not_at_all(hub, client_of, upload_spec,
                                                                 hub_edits, with_txns):
    """Whatever an upload holds (inserts and updates of customers, orders of
    customers that may not exist, deletes of customers with orders, rows the
    hub changed meanwhile): after it, every client transaction's changes are
    all on the hub or none is; every change of a failed transaction is
    reported with its transaction, at least one of them with a cause of its
    own; applied + failed is what was sent; a fresh client downloads exactly
    the hub; the SQLite hub's tracking is consistent."""
    n = next(_names)
    cust, order = f"c{n}", f"o{n}"
    if hub.kind == "sqlite":
        hub.execute("PRAGMA foreign_keys = ON")
    hub.execute(f"CREATE TABLE {cust} (id integer PRIMARY KEY, name text)")
    hub.execute(f"CREATE TABLE {order} (id integer PRIMARY KEY, customer integer NOT NULL "
                f"REFERENCES {cust} (id), item text)")
    hub.execute(f"INSERT INTO {cust} (id, name) VALUES (1, 'x'), (2, 'x'), (3, 'x')")
    hub.execute(f"INSERT INTO {order} (id, customer, item) VALUES (1, 1, 'x')")
    server = hub.server()
    server.provision(cust, order)
    try:
        check_transactions(hub, server, client_of, cust, order, upload_spec, hub_edits,
                           with_txns)
    finally:
        if hasattr(server, "close"):
            server.close()


def check_transactions(hub, server, client_of, cust, order, upload_spec, hub_edits, with_txns):
    client = uuid.uuid4()
    # The client downloads first, so the hub's edits after it are conflicts.
    first = server.get_changes(DownloadRequest(client, "g", [DownloadTable(cust, None),
                                                             DownloadTable(order, None)]))
    for k in hub_edits:
        hub.execute(f"UPDATE {cust} SET name = 'hub' WHERE id = ?", (k,))
    before = {cust: dict((r[0], r) for r in hub.rows(cust)),
              order: dict((r[0], r) for r in hub.rows(order))}
    # One change per key and table: the latest change of a row is what a
    # client uploads.
    changes = {}
    for txn, (kind, k, v) in upload_spec:
        table = order if kind == "order" else cust
        changes.setdefault((table, k), (txn, kind, v))
    tcs = {t: TableChanges(t, ("id", "name") if t == cust else ("id", "customer", "item"),
                           ("id",)) for t in (cust, order)}
    want = {}                     # (table, key) -> the row after, or None (deleted)
    txn_of = {}
    for (table, k), (txn, kind, v) in sorted(changes.items(), key=repr):
        tc = tcs[table]
        if kind == "delete-customer":
            tc.deletes.append((k,))
            want[(table, k)] = None
        else:
            row = (k, v) if table == cust else (k, v, "item")
            (tc.updates if k in before[table] else tc.inserts).append(row)
            want[(table, k)] = row
        txn_of[(table, k)] = txn
    for tc in tcs.values():
        if with_txns:
            keys = [d[0] for d in tc.deletes] + [r[0] for r in (*tc.inserts, *tc.updates)]
            tc.transactions.extend(txn_of[(tc.table, k)] for k in keys)
    sent = [tc for tc in tcs.values() if len(tc)]
    result = server.apply_changes(Upload(client, "g", sent,
                                         {cust: first.anchors[cust],
                                          order: first.anchors[order]}, {}))
    assert result.applied + result.failed == sum(len(tc) for tc in sent)
    after = {cust: dict((r[0], r) for r in hub.rows(cust)),
             order: dict((r[0], r) for r in hub.rows(order))}
    reported = {(c.table, c.key["id"]): c for c in result.conflicts}
    applied = {key: key not in reported for key in want}
    for key, ok in applied.items():
        # A change applied is on the hub; one reported left the row as it
        # was (nothing fails without a word, nothing half-applies).
        assert after[key[0]].get(key[1]) == (want[key] if ok else before[key[0]].get(key[1])), key
    assert result.failed == len(reported)
    if with_txns:
        for txn in {t for t, _ in upload_spec}:
            mine = [key for key in want if txn_of[key] == txn]
            states = {applied[key] for key in mine}
            assert len(states) <= 1, (txn, {k: applied[k] for k in mine})
            if states == {False}:
                assert all(reported[k].transaction == txn for k in mine)
                assert any(not (reported[k].error or "").startswith("not applied with")
                           for k in mine), txn
    # A client that starts now downloads exactly the hub.
    fresh = server.get_changes(DownloadRequest(uuid.uuid4(), "g", [DownloadTable(cust, None),
                                                                   DownloadTable(order, None)]))
    got = {tc.table: sorted(tc.inserts + tc.updates) for tc in fresh.tables}
    assert got.get(cust, []) == sorted(hub.rows(cust))
    assert got.get(order, []) == sorted(hub.rows(order))
    if hub.kind == "sqlite":
        assert sqlite_ct.check(hub.conn) == []
# -- end to end: a real client, its transactions, batches and inbox ----------------

# A client transaction travels whole within a sync group (tables without a
# group are each uploaded on their own).
SHOP = [SyncTable("customers", group=SyncGroup("shop")),
        SyncTable("orders", group=SyncGroup("shop"))]

def test_a_child_uploaded_before_its_parent_is_sent_again_and_nothing_is_lost(shop, client_of):
    """Batches follow the client's transactions, so an order can travel in
    an earlier batch than its customer (changed again later): the hub fails
    the order's transaction on the foreign key, and the client sends it
    again with the next batch instead of giving up on it."""
    server = shop.server()
    client, sync = client_of(server, SHOP, upload_batch_size=1)
    sync.synchronize()
    client.execute("INSERT INTO customers (id, region, name) VALUES (2, 'south', 'Bo')")
    client.execute("INSERT INTO orders (id, customer, region, item) VALUES (20, 2, 'south', 'jam')")
    client.execute("UPDATE customers SET name = 'Bo B' WHERE id = 2")
    stats = sync.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (2, 0)
    assert stats.conflicts == []
    assert shop.rows("customers") == [(1, "north", "Ann"), (2, "south", "Bo B")]
    assert shop.rows("orders") == [(10, 1, "north", "tea"), (20, 2, "south", "jam")]


def test_a_failed_client_transaction_waits_in_the_inbox_whole(shop, client_of):
    server = shop.server()
    client, sync = client_of(server, SHOP)
    sync.synchronize()
    with client:
        client.execute("INSERT INTO customers (id, region, name) VALUES (3, 'east', 'Cy')")
        client.execute("INSERT INTO orders (id, customer, region, item) "
                       "VALUES (21, 99, 'east', 'oil')")
    client.execute("INSERT INTO customers (id, region, name) VALUES (4, 'west', 'Di')")
    stats = sync.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (1, 2)
    assert shop.rows("customers") == [(1, "north", "Ann"), (4, "west", "Di")]
    inbox = sync.client.conflicts()
    assert sorted((c.table, c.key["id"]) for c in inbox) == [("customers", 3), ("orders", 21)]
    assert len({c.transaction for c in inbox}) == 1 and inbox[0].transaction is not None
    # The client holds what the hub holds; its transaction waits in the inbox.
    assert sorted(r[0] for r in client.execute("SELECT id FROM customers")) == [1, 4]




# -- settling a refused transaction --------------------------------------------------

def test_taking_the_hubs_side_keeps_a_newer_hub_version(shop, client_of):
    """resolve_transaction(N, "server") lets the hub's version stand: the
    client already holds the hub's current rows, so nothing stale (the
    server_row stored when the conflict happened) is written back over a
    version another client made since."""
    server = shop.server()
    a, sync_a = client_of(server, SHOP)
    b, sync_b = client_of(server, SHOP)
    sync_a.synchronize()
    sync_b.synchronize()
    with a:   # one client transaction: a rename and an order of a missing customer
        a.execute("UPDATE customers SET name = 'Ann A' WHERE id = 1")
        a.execute("INSERT INTO orders (id, customer, region, item) VALUES (21, 99, 'x', 'oil')")
    with a:   # and one that adds a customer
        a.execute("INSERT INTO customers (id, region, name) VALUES (5, 'north', 'Di')")
        a.execute("INSERT INTO orders (id, customer, region, item) VALUES (22, 98, 'x', 'oil')")
    sync_a.synchronize()
    txns = sorted({c.transaction for c in sync_a.client.conflicts()})
    assert len(txns) == 2
    b.execute("UPDATE customers SET name = 'Ann B' WHERE id = 1")
    b.execute("INSERT INTO customers (id, region, name) VALUES (5, 'south', 'B5')")
    sync_b.synchronize()
    sync_a.synchronize()
    for txn in txns:
        sync_a.client.resolve_transaction(txn, "server")
    assert sync_a.client.conflicts() == []
    sync_a.synchronize()
    sync_b.synchronize()
    assert shop.rows("customers") == [(1, "north", "Ann B"), (5, "south", "B5")]
    assert user_rows(a, "customers") == user_rows(b, "customers") == shop.rows("customers")


def test_a_refused_change_waits_in_the_inbox_with_its_transaction(shop, client_of):
    """A change outside the client's scope fails its transaction and is kept
    in the inbox with the rest of it, so settling the transaction never
    applies half of it."""
    server = shop.server(filters={"customers": "region = :region",
                                  "orders": "region = :region"})
    a, sync_a = client_of(server, SHOP, parameters={"region": "north"})
    sync_a.synchronize()
    with a:
        a.execute("INSERT INTO customers (id, region, name) VALUES (5, 'north', 'Di')")
        a.execute("INSERT INTO orders (id, customer, region, item) VALUES (50, 1, 'west', 'oil')")
    stats = sync_a.synchronize()
    assert stats.upload_changes_failed == 2
    assert shop.rows("customers") == [(1, "north", "Ann")]
    inbox = sync_a.client.conflicts()
    assert sorted((c.table, c.key["id"]) for c in inbox) == [("customers", 5), ("orders", 50)]
    [txn] = {c.transaction for c in inbox}
    sync_a.client.resolve_transaction(txn, "client")
    sync_a.synchronize()
    # Refused again, whole: the hub holds none of it.
    assert shop.rows("customers") == [(1, "north", "Ann")]
    assert shop.rows("orders") == [(10, 1, "north", "tea")]
    assert sorted((c.table, c.key["id"]) for c in sync_a.client.conflicts()) == [
        ("customers", 5), ("orders", 50)]


def test_a_change_that_can_never_apply_is_sent_once_more_not_with_every_batch(shop, client_of):
    """A transaction failed on a store error is sent once more after the
    last batch (its parent may travel later), not with every later batch:
    the batches stay within upload_batch_size and each failing change costs
    two attempts."""
    server = shop.server()
    sizes = []
    apply = server.apply_changes

    def counting(upload):
        sizes.append(sum(len(tc) for tc in upload.tables))
        return apply(upload)
    server.apply_changes = counting
    a, sync_a = client_of(server, SHOP, upload_batch_size=10)
    sync_a.synchronize()
    for i in range(30):
        a.execute("INSERT INTO customers (id, region, name) VALUES (?, 'north', 'c')",
                  (100 + i,))
        if i % 3 == 0:           # an order of a customer that never exists
            a.execute("INSERT INTO orders (id, customer, region, item) VALUES (?, 999, 'x', 'y')",
                      (100 + i,))
    sizes.clear()
    stats = sync_a.synchronize()
    assert max(sizes) <= 10
    assert sum(sizes) == 40 + 10                 # every change once, the ten orders twice
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (30, 10)
    assert len(sync_a.client.conflicts()) == 10
