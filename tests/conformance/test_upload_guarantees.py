"""The upload guarantees every hub keeps (see conftest.py): a client writes
only rows in its scope, an upload sent again is applied once, and deletes of
a filtered table reach only the clients that may hold the key."""
import uuid

import pytest

from pg_fixtures import user_rows
from sqlite_ct.sync import ConflictType, TableChanges, Upload

SCHEMA = "CREATE TABLE notes (id integer PRIMARY KEY, owner text, body text)"
FILTER = {"notes": "owner = :user"}
REFUSED_OLD = ("refused: the hub's row is outside this client's filter; a client writes only "
               "rows in its scope")
REFUSED_NEW = ("refused: the new version is outside this client's filter; a client writes "
               "only rows in its scope")


@pytest.fixture
def notes(hub):
    hub.execute(SCHEMA)
    hub.execute("INSERT INTO notes (id, owner, body) VALUES (1, 'alice', 'a1'), "
                "(2, 'bob', 'b1'), (3, 'alice', 'a2')")
    return hub


def changes(**kinds):
    return TableChanges("notes", ("id", "owner", "body"), ("id",), **kinds)


def test_inserting_a_key_held_outside_the_scope_never_overwrites_it(notes, client_of):
    hub = notes
    alice, sync = client_of(hub.server(filters=FILTER), ["notes"],
                            parameters={"user": "alice"})
    sync.synchronize()
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (2, 'alice', 'mine')")
    stats = sync.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 1)
    assert [(c.type, c.key, c.error, c.server_row) for c in stats.conflicts] == [
        (ConflictType.ERRORS_OCCURRED, {"id": 2}, REFUSED_OLD, None)]   # nothing of bob's
    assert hub.rows("notes") == [(1, "alice", "a1"), (2, "bob", "b1"), (3, "alice", "a2")]
    assert user_rows(alice, "notes") == [(1, "alice", "a1"), (3, "alice", "a2")]


def test_changes_to_rows_outside_the_scope_are_refused_and_answered(notes, client_of):
    hub = notes
    server = hub.server(filters=FILTER)
    alice, sync = client_of(server, ["notes"], parameters={"user": "alice"})
    sync.synchronize()
    client = uuid.uuid4()
    result = server.apply_changes(Upload(
        client, "notes", [changes(deletes=[(2,)], updates=[(2, "bob", "edited by alice"),
                                                           (1, "bob", "given to bob")])],
        {"notes": None}, {"user": "alice"}))
    assert (result.applied, result.failed) == (0, 3)
    assert sorted((c.key["id"], c.error) for c in result.conflicts) == [
        (1, REFUSED_NEW), (2, REFUSED_OLD), (2, REFUSED_OLD)]
    assert hub.rows("notes") == [(1, "alice", "a1"), (2, "bob", "b1"), (3, "alice", "a2")]
    # Alice gets her row back as the hub has it, and a delete of bob's key.
    [tc] = result.corrections
    assert (tc.deletes, tc.updates) == ([(2,)], [(1, "alice", "a1")])


def test_a_client_moving_its_row_out_of_its_scope_is_refused(notes, client_of):
    hub = notes
    server = hub.server(filters=FILTER)
    alice, sync_a = client_of(server, ["notes"], parameters={"user": "alice"})
    bob, sync_b = client_of(server, ["notes"], parameters={"user": "bob"})
    sync_a.synchronize()
    sync_b.synchronize()
    alice.execute("UPDATE notes SET owner = 'bob' WHERE id = 1")
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (4, 'bob', 'x')")
    stats = sync_a.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 2)
    assert sorted((c.key["id"], c.error) for c in stats.conflicts) == [
        (1, REFUSED_NEW), (4, REFUSED_NEW)]
    assert user_rows(alice, "notes") == [(1, "alice", "a1"), (3, "alice", "a2")]
    sync_b.synchronize()
    assert user_rows(bob, "notes") == [(2, "bob", "b1")]
    assert hub.rows("notes") == [(1, "alice", "a1"), (2, "bob", "b1"), (3, "alice", "a2")]


def test_a_retried_upload_is_applied_once_with_the_stored_result(notes, client_of):
    hub = notes
    server = hub.server()
    client = uuid.uuid4()
    upload = Upload(client, "notes", [changes(inserts=[(10, "a", "x")])], {"notes": None}, {},
                    b"session-1", 0)
    first = server.apply_changes(upload)
    hub.execute("UPDATE notes SET body = 'changed on the hub' WHERE id = 10")
    again = server.apply_changes(upload)
    assert (again.applied, again.failed) == (first.applied, first.failed) == (1, 0)
    assert (10, "a", "changed on the hub") in hub.rows("notes")       # not applied again
    # The same batch with other changes is another upload, and is applied.
    other = Upload(client, "notes", [changes(inserts=[(11, "a", "y")])], {"notes": None}, {},
                   b"session-1", 0)
    assert server.apply_changes(other).applied == 1
    assert hub.receipt_sessions() == [b"session-1"]
    # A new session of the client drops the receipts of its older ones.
    server.apply_changes(Upload(client, "notes", [], {}, {}, b"session-2", 0))
    assert hub.receipt_sessions() == [b"session-2"]


def test_an_upload_without_a_session_keeps_no_receipt(notes, client_of):
    hub = notes
    server = hub.server()
    server.apply_changes(Upload(uuid.uuid4(), "notes", [changes(inserts=[(10, "a", "x")])],
                                {"notes": None}))
    server.apply_changes(Upload(uuid.uuid4(), "notes", [changes(inserts=[(11, "a", "x")])],
                                {"notes": None}, {}, b"s", 0))
    assert hub.receipt_sessions() == [b"s"]


def test_a_refused_upload_retried_is_answered_the_same(notes, client_of):
    server = notes.server(filters=FILTER)
    upload = Upload(uuid.uuid4(), "notes", [changes(updates=[(2, "bob", "edited")])],
                    {"notes": None}, {"user": "alice"}, b"s", 0)
    first = server.apply_changes(upload)
    again = server.apply_changes(upload)
    assert (first.applied, first.failed) == (again.applied, again.failed) == (0, 1)
    assert [c.error for c in again.conflicts] == [REFUSED_OLD]
    assert [(tc.deletes, tc.updates) for tc in again.corrections] == [([(2,)], [])]


def test_uploads_cannot_reset_a_hub_table(notes, client_of):
    from sqlite_ct.sync import SyncError
    server = notes.server()
    with pytest.raises(SyncError, match="uploads cannot reset tables"):
        server.apply_changes(Upload(uuid.uuid4(), "notes", [changes(reset=True)],
                                    {"notes": None}))
    assert len(notes.rows("notes")) == 3


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


def test_deletes_and_move_outs_reach_only_clients_that_may_hold_the_key(notes, client_of):
    hub = notes
    server = hub.server(filters=FILTER)
    counted = {u: Counting(server) for u in ("alice", "bob")}
    clients = {u: client_of(counted[u], ["notes"], parameters={"user": u})
               for u in ("alice", "bob")}
    for _, sync in clients.values():
        sync.synchronize()
    hub.execute("DELETE FROM notes WHERE id = 2")                     # bob's
    hub.execute("UPDATE notes SET owner = 'nobody' WHERE id = 3")     # alice's, moved out
    for c in counted.values():
        c.deletes.clear()
    for _, sync in clients.values():
        sync.synchronize()
    assert user_rows(clients["alice"][0], "notes") == [(1, "alice", "a1")]
    assert user_rows(clients["bob"][0], "notes") == []
    assert counted["bob"].deletes == [(2,)]
    assert counted["alice"].deletes == [(3,)]


def test_a_row_a_client_wrote_itself_is_deleted_when_it_moves_out(notes, client_of):
    hub = notes
    server = hub.server(filters=FILTER)
    counted = Counting(server)
    alice, sync = client_of(counted, ["notes"], parameters={"user": "alice"})
    sync.synchronize()
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (7, 'alice', 'mine')")
    sync.synchronize()
    hub.execute("UPDATE notes SET owner = 'bob' WHERE id = 7")
    hub.execute("DELETE FROM notes WHERE id = 1")
    counted.deletes.clear()
    sync.synchronize()
    assert sorted(counted.deletes) == [(1,), (7,)]
    assert user_rows(alice, "notes") == [(3, "alice", "a2")]


def test_a_client_that_inserted_a_key_the_hub_kept_gets_its_delete(notes, client_of):
    """Alice's insert of a key that bob's row took in the meantime (in her
    scope, the hub wins): she holds her own version, so the hub's later
    delete of that key reaches her."""
    hub = notes
    server = hub.server(filters=FILTER)
    alice, sync = client_of(server, ["notes"], parameters={"user": "alice"})
    sync.synchronize()
    hub.execute("INSERT INTO notes (id, owner, body) VALUES (8, 'alice', 'hub')")
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (8, 'alice', 'client')")
    sync.synchronize()
    hub.execute("DELETE FROM notes WHERE id = 8")
    sync.synchronize()
    assert user_rows(alice, "notes") == hub.rows("notes")[:1] + [(3, "alice", "a2")] == [
        (1, "alice", "a1"), (3, "alice", "a2")]
