"""Uploads hold the client's scope, are cut into batches, and are applied
exactly once per (client, session, batch)."""
from __future__ import annotations

import uuid

import pytest

from sqlite_ct.sync import SyncAgent, TableChanges, Upload
from sqlite_ct.sync.agent import upload_batches
from sqlite_ct.sync.server import RECEIPTS

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT, body TEXT)"
SEED = ("INSERT INTO notes VALUES (1, 'alice', 'a1'), (2, 'bob', 'b1')",)
FILTER = {"notes": "owner = :user"}


def test_inserting_a_key_that_exists_outside_the_filter_never_overwrites_it(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED, filters=FILTER)
    alice = Client(conns(), server, ["notes"], parameters={"user": "alice"})
    alice.sync()
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (2, 'alice', 'mine')")
    stats = alice.sync()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 1)
    assert stats.conflicts[0].error.startswith(
        "refused: the hub's row is outside this client's filter")
    assert stats.conflicts[0].server_row is None          # nothing of bob's leaks
    assert user_rows(hub, "notes") == [(1, "alice", "a1"), (2, "bob", "b1")]
    assert user_rows(alice.conn, "notes") == [(1, "alice", "a1")]


def test_deleting_or_updating_a_row_outside_the_filter_is_refused(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED, filters=FILTER)
    alice = Client(conns(), server, ["notes"], parameters={"user": "alice"})
    alice.sync()
    client = alice.provider.client_id
    tc = TableChanges("notes", ("id", "owner", "body"), ("id",), deletes=[(2,)],
                      updates=[(2, "bob", "edited by alice")])
    result = server.apply_changes(Upload(client, "notes", [tc], {"notes": None},
                                         {"user": "alice"}))
    assert (result.applied, result.failed) == (0, 2)
    assert user_rows(hub, "notes") == [(1, "alice", "a1"), (2, "bob", "b1")]
    # The update is answered with a delete of the key alice may not hold.
    assert [(c.table, c.deletes, c.updates) for c in result.corrections] == [
        ("notes", [(2,)], [])]


def test_a_retried_upload_is_applied_once_and_answered_with_the_stored_result(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=())
    client = uuid.uuid4()
    tc = TableChanges("notes", ("id", "owner", "body"), ("id",), inserts=[(1, "a", "x")])
    upload = Upload(client, "notes", [tc], {"notes": None}, {}, b"session-1", 0)
    first = server.apply_changes(upload)
    csn = hub.execute("SELECT sqlite_ct_last_committed_csn()").fetchone()[0]
    hub.execute("UPDATE notes SET body = 'changed on the hub' WHERE id = 1")
    again = server.apply_changes(upload)
    assert (again.applied, again.failed) == (first.applied, first.failed) == (1, 0)
    assert user_rows(hub, "notes") == [(1, "a", "changed on the hub")]   # not re-applied
    assert hub.execute("SELECT sqlite_ct_last_committed_csn()").fetchone()[0] == csn + 1
    # Another batch of the session, or the same batch with other changes, is applied.
    other = Upload(client, "notes", [TableChanges("notes", ("id", "owner", "body"), ("id",),
                                                  inserts=[(2, "a", "y")])],
                   {"notes": None}, {}, b"session-1", 0)
    assert server.apply_changes(other).applied == 1
    assert user_rows(hub, "notes") == [(1, "a", "changed on the hub"), (2, "a", "y")]
    # A new session drops the receipts of the client's older ones.
    server.apply_changes(Upload(client, "notes", [], {}, {}, b"session-2", 0))
    assert hub.execute(f'SELECT Session FROM "{RECEIPTS}"').fetchall() == [(b"session-2",)]


def test_an_upload_without_a_session_keeps_no_receipt(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=())
    tc = TableChanges("notes", ("id", "owner", "body"), ("id",), inserts=[(1, "a", "x")])
    server.apply_changes(Upload(uuid.uuid4(), "notes", [tc], {"notes": None}))
    assert not hub.execute("SELECT count(*) FROM sqlite_schema WHERE name = ?",
                           (RECEIPTS,)).fetchone()[0]


def test_upload_batches_cut_runs_of_whole_transactions():
    """Windows of BSNs of at most `size` changes, a transaction never split
    unless it is larger than `size` (then in parts of its own, in the order
    a transaction applies them), each table's changes in its order."""
    a = TableChanges("a", ("k",), ("k",), deletes=[(1,), (2,)], inserts=[(3,)], updates=[(4,)],
                     transactions=[10, 12, 11, 13])
    b = TableChanges("b", ("k",), ("k",), deletes=[(5,)], inserts=[(6,), (7,)],
                     transactions=[11, 12, 12])
    assert upload_batches([a, b], 2) == [
        [TableChanges("a", ("k",), ("k",), deletes=[(1,)], transactions=[10])],
        [TableChanges("a", ("k",), ("k",), inserts=[(3,)], transactions=[11]),
         TableChanges("b", ("k",), ("k",), deletes=[(5,)], transactions=[11])],
        # transaction 12 has 3 > 2 changes: two parts of its own
        [TableChanges("a", ("k",), ("k",), deletes=[(2,)], transactions=[12]),
         TableChanges("b", ("k",), ("k",), inserts=[(6,)], transactions=[12])],
        [TableChanges("b", ("k",), ("k",), inserts=[(7,)], transactions=[12])],
        [TableChanges("a", ("k",), ("k",), updates=[(4,)], transactions=[13])]]
    assert [sum(map(len, batch)) for batch in upload_batches([a, b], 3)] == [3, 3, 1]
    own = TableChanges("b", ("k",), ("k",), own_deletes=[(9,)])
    # Keys inserted and deleted again go first, in batches of their own.
    assert upload_batches([a, own], 2)[:2] == [
        [TableChanges("b", ("k",), ("k",), own_deletes=[(9,)])],
        [TableChanges("a", ("k",), ("k",), deletes=[(1,)], inserts=[(3,)],
                      transactions=[10, 11])]]
    assert upload_batches([a, b], 7) == upload_batches([a, b], None) == [[a, b]]
    assert upload_batches([], 3) == []
    with pytest.raises(ValueError, match='table "a": 0 transaction'):
        upload_batches([TableChanges("a", ("k",), ("k",), deletes=[(1,)])], 2)


class LosingServer:
    """A server whose answer to the n-th upload is lost after it applied it."""

    def __init__(self, server, lose):
        self.server = server
        self.lose = set(lose)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.server, name)

    def apply_changes(self, upload):
        self.calls += 1
        result = self.server.apply_changes(upload)
        if self.calls in self.lose:
            raise ConnectionError("the answer was lost")
        return result


def test_a_sync_retried_after_a_lost_answer_applies_nothing_twice(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=())
    flaky = LosingServer(server, lose=[2])
    client = Client(conns(), flaky, ["notes"], parameters={})
    client.agent.upload_batch_size = 2
    client.sync()
    for i, body in enumerate("xyzwv", 1):   # five client transactions: batches 2, 2, 1
        client.conn.execute("INSERT INTO notes(id, owner, body) VALUES (?, 'a', ?)", (i, body))
    with pytest.raises(ConnectionError):
        client.sync()
    stamps = hub.execute("SELECT id, __sysChangeTxBsn FROM notes ORDER BY id").fetchall()
    assert len(stamps) == 4
    stats = client.sync()
    assert (stats.total_changes_uploaded, stats.upload_changes_applied) == (5, 5)
    # Batches 0 and 1 came from their receipts: the rows keep their stamps.
    assert hub.execute("SELECT id, __sysChangeTxBsn FROM notes WHERE id <= 4 "
                       "ORDER BY id").fetchall() == stamps
    assert user_rows(hub, "notes") == user_rows(client.conn, "notes")


def test_upload_batch_size_is_checked(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=())
    with pytest.raises(ValueError, match="upload_batch_size must be a positive integer"):
        SyncAgent(Client(conns(), server, []).provider, server, ["notes"], upload_batch_size=0)
