"""Deletes and move-outs of a filtered table reach only clients that may hold
the row: no other user's keys leave the hub, and no client misses a delete of
a row it holds (downloaded, or written and uploaded itself)."""
from __future__ import annotations

import pytest

from sqlite_ct.sync import ReinitialiseRequired
from sqlite_ct.sync._held import HELD

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT, body TEXT)"
USERS = ("alice", "bob", "carol")


class Counting:
    """A server provider that counts the deletes each download carries."""

    def __init__(self, server):
        self.server = server
        self.deletes = []

    def __getattr__(self, name):
        return getattr(self.server, name)

    def get_changes(self, request):
        batch = self.server.get_changes(request)
        self.deletes.extend(k for tc in batch.tables for k in tc.deletes)
        return batch


def setup(hub_with, conns):
    seed = ", ".join(f"({i}, '{USERS[i % 3]}', 'seed')" for i in range(1, 31))
    hub, server = hub_with(SCHEMA, seed=(f"INSERT INTO notes VALUES {seed}",),
                           filters={"notes": "owner = :user"})
    counters = {u: Counting(server) for u in USERS}
    clients = {u: Client(conns(), counters[u], ["notes"], parameters={"user": u})
               for u in USERS}
    for c in clients.values():
        c.sync()
    return hub, counters, clients


def test_other_users_deletes_and_move_outs_are_not_sent(conns, hub_with):
    hub, counters, clients = setup(hub_with, conns)
    alice = clients["alice"]
    # Ten changes in alice's scope: deletes, and rows moved out by the hub.
    alice.conn.execute("DELETE FROM notes WHERE id IN (3, 6, 9, 12, 15)")
    alice.sync()
    hub.execute("UPDATE notes SET owner = 'nobody' WHERE id IN (18, 21, 24, 27, 30)")
    hub.execute("DELETE FROM notes WHERE id = 1")      # bob's, by the hub
    for u in USERS:
        counters[u].deletes.clear()
    for c in clients.values():
        c.sync()
    assert sorted(counters["alice"].deletes) == [(18,), (21,), (24,), (27,), (30,)]
    assert counters["bob"].deletes == [(1,)]
    assert counters["carol"].deletes == []
    for u, c in clients.items():
        assert user_rows(c.conn, "notes") == [r for r in user_rows(hub, "notes") if r[1] == u]


def test_a_row_the_client_wrote_itself_is_deleted_when_it_moves_out(conns, hub_with):
    hub, counters, clients = setup(hub_with, conns)
    bob = clients["bob"]
    bob.conn.execute("INSERT INTO notes(id, owner, body) VALUES (100, 'bob', 'mine')")
    bob.sync()                                  # never downloaded: no echo
    hub.execute("UPDATE notes SET owner = 'carol' WHERE id = 100")
    bob.sync()
    clients["carol"].sync()
    assert (100, "bob", "mine") not in user_rows(bob.conn, "notes")
    assert (100, "carol", "mine") in user_rows(clients["carol"].conn, "notes")


def test_a_client_without_a_complete_record_is_told_to_reinitialise(conns, hub_with):
    """A client whose first download predates the record of held keys (or
    whose record the hub forgot) gets no delete it may not hold: it is told
    to reinitialise, and afterwards gets exactly the deletes of its keys."""
    hub, counters, clients = setup(hub_with, conns)
    bob = clients["bob"]
    hub.execute(f'DELETE FROM "{HELD}" WHERE RK = x\'\'')
    hub.execute("DELETE FROM notes WHERE id IN (1, 2)")    # bob's and carol's
    counters["bob"].deletes.clear()
    with pytest.raises(ReinitialiseRequired, match='no record of which rows of filtered '
                                                   'table "notes" this client holds'):
        bob.sync()
    assert counters["bob"].deletes == []
    bob.agent.reinitialise()
    assert counters["bob"].deletes == []
    assert user_rows(bob.conn, "notes") == [r for r in user_rows(hub, "notes") if r[1] == "bob"]
    hub.execute("DELETE FROM notes WHERE id IN (4, 5)")    # bob's and carol's
    bob.sync()
    assert counters["bob"].deletes == [(4,)]
    assert user_rows(bob.conn, "notes") == [r for r in user_rows(hub, "notes") if r[1] == "bob"]
