"""An own delete holds to the uploader's row filter: the same client, syncing
with parameters whose filter excludes the row, neither deletes it with a
plain delete (refused as outside its scope) nor with an own delete."""
import pytest
from sqlite_ct.sync import SyncAgent, ClientSyncProvider
from pg_fixtures import sqlite_client

FILTER = {"notes": "owner = :user"}


@pytest.mark.parametrize("own", [False, True])
def test_a_delete_outside_the_filter_is_refused(hub, own):
    hub.execute("CREATE TABLE notes (id integer PRIMARY KEY, owner text, body text)")
    server = hub.server(filters=FILTER)
    a = sqlite_client()
    sync_a = SyncAgent(ClientSyncProvider(a), server, ["notes"], parameters={"user": "alice"})
    sync_a.synchronize()
    a.execute("INSERT INTO notes (id, owner, body) VALUES (4, 'alice', 'a')")
    if own:
        a.execute("BEGIN")
        sync_a.synchronize()
        a.execute("ROLLBACK")
    else:
        sync_a.synchronize()
    assert hub.rows("notes") == [(4, "alice", "a")]
    sync_b = SyncAgent(ClientSyncProvider(a), server, ["notes"], parameters={"user": "bob"})
    a.execute("DELETE FROM notes WHERE id = 4")
    stats = sync_b.synchronize()
    assert hub.rows("notes") == [(4, "alice", "a")]
