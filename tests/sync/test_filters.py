"""Row filters per client on the server, with move-outs: a row that leaves a
client's filter is deleted on that client; a row that enters it arrives."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlite_ct.sync import SyncError

from .conftest import Client, Hub, connect, user_rows

SCHEMA = "CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT, body TEXT)"
SEED = ("INSERT INTO notes VALUES (1, 'alice', 'a1'), (2, 'bob', 'b1'), (3, 'alice', 'a2')",)
FILTER = {"notes": "owner = :user"}


def visible(hub, user):
    return [r for r in user_rows(hub, "notes") if r[1] == user]


def test_each_client_gets_its_rows_and_loses_moved_out_ones(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED, filters=FILTER)
    alice = Client(conns(), server, ["notes"], parameters={"user": "alice"})
    bob = Client(conns(), server, ["notes"], parameters={"user": "bob"})
    alice.sync()
    bob.sync()
    assert user_rows(alice.conn, "notes") == visible(hub, "alice")
    assert user_rows(bob.conn, "notes") == [(2, "bob", "b1")]
    hub.execute("UPDATE notes SET owner = 'bob' WHERE id = 3")   # moves from alice to bob
    alice.sync()
    bob.sync()
    assert user_rows(alice.conn, "notes") == [(1, "alice", "a1")]
    assert user_rows(bob.conn, "notes") == [(2, "bob", "b1"), (3, "bob", "a2")]
    # A move-out is applied like any server change: no echo, no tombstone.
    quiet = alice.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)


def test_a_client_edit_that_leaves_its_filter_is_refused(conns, hub_with):
    """Alice may not write a row outside her scope, not even by giving hers
    to bob: the changes are refused (reported, never applied), her note comes
    back as the hub has it, and the row she made for bob is deleted on her side."""
    hub, server = hub_with(SCHEMA, seed=SEED, filters=FILTER)
    alice = Client(conns(), server, ["notes"], parameters={"user": "alice"})
    bob = Client(conns(), server, ["notes"], parameters={"user": "bob"})
    alice.sync()
    bob.sync()
    alice.conn.execute("UPDATE notes SET owner = 'bob' WHERE id = 1")
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (4, 'bob', 'x')")
    stats = alice.sync()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 2)
    assert [(c.type.value, c.key, c.error) for c in stats.conflicts] == [
        ("ErrorsOccurred", {"id": 4}, "refused: the new version is outside this client's "
                                      "filter; a client writes only rows in its scope"),
        ("ErrorsOccurred", {"id": 1}, "refused: the new version is outside this client's "
                                      "filter; a client writes only rows in its scope")]
    assert user_rows(alice.conn, "notes") == visible(hub, "alice") == [
        (1, "alice", "a1"), (3, "alice", "a2")]
    bob.sync()
    assert user_rows(bob.conn, "notes") == visible(hub, "bob") == [(2, "bob", "b1")]


def test_changing_the_parameters_rescopes_the_client(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED, filters=FILTER)
    conn = conns()
    Client(conn, server, ["notes"], parameters={"user": "alice"}).sync()
    assert user_rows(conn, "notes") == visible(hub, "alice")
    stats = Client(conn, server, ["notes"], parameters={"user": "bob"}).sync()
    assert user_rows(conn, "notes") == visible(hub, "bob")
    assert stats.conflicts == []


def test_a_filter_needs_its_parameters(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED, filters=FILTER)
    with pytest.raises(SyncError) as info:
        Client(conns(), server, ["notes"]).sync()
    assert str(info.value) == ('sqlite-ct sync: the filter of table "notes" needs parameter '
                               '":user"; pass it in SyncAgent(parameters={"user": ...})')


def test_moved_out_rows_with_batches(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=(), filters=FILTER)
    hub.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) "
                "INSERT INTO notes SELECT i, CASE i % 3 WHEN 0 THEN 'bob' ELSE 'alice' END, "
                "'n' || i FROM n")
    alice = Client(conns(), server, ["notes"], parameters={"user": "alice"}, batch_size=7)
    alice.sync()
    hub.execute("UPDATE notes SET owner = CASE owner WHEN 'alice' THEN 'bob' ELSE 'alice' END "
                "WHERE id % 5 = 0")
    alice.sync()
    assert user_rows(alice.conn, "notes") == visible(hub, "alice")


users = st.sampled_from(["alice", "bob", "carol"])
edit = st.one_of(
    st.tuples(st.just("insert"), st.integers(1, 8), users),
    st.tuples(st.just("give"), st.integers(1, 8), users),
    st.tuples(st.just("touch"), st.integers(1, 8)),
    st.tuples(st.just("delete"), st.integers(1, 8)),
)
step = st.one_of(st.tuples(st.just("edit"), st.integers(0, 3), edit),
                 st.tuples(st.just("sync"), st.integers(1, 3)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=25), batch_size=st.sampled_from([None, 1, 3]))
def test_filtered_clients_converge_to_their_part_of_the_hub(steps, batch_size):
    hub_conn = connect()
    hub_conn.execute(SCHEMA)
    hub = Hub(hub_conn, filters=FILTER)
    names = ["alice", "bob", "carol"]
    clients = [Client(connect(), hub.server, ["notes"], parameters={"user": u},
                      batch_size=batch_size) for u in names]
    nodes = [hub_conn] + [c.conn for c in clients]
    for c in clients:
        c.sync()
    for s in steps:
        if s[0] == "sync":
            clients[s[1] - 1].sync()
            continue
        conn, e = nodes[s[1]], s[2]
        if e[0] == "insert":
            conn.execute("INSERT OR IGNORE INTO notes(id, owner, body) VALUES (?, ?, 'new')",
                         (e[1], e[2]))
        elif e[0] == "give":
            conn.execute("UPDATE notes SET owner = ? WHERE id = ?", (e[2], e[1]))
        elif e[0] == "touch":
            conn.execute("UPDATE notes SET body = body || '+' WHERE id = ?", (e[1],))
        else:
            conn.execute("DELETE FROM notes WHERE id = ?", (e[1],))
    for _ in range(2):
        for c in clients:
            c.sync()
    for user, c in zip(names, clients):
        assert user_rows(c.conn, "notes") == visible(hub_conn, user), user
    for conn in nodes:
        conn.close()
