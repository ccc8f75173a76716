"""Rows that predate tracking (transaction 0, each standing alone) whose
foreign key points at a row of a later upload batch are sent once more after
the last batch and apply, as a tracked transaction in the same shape is."""
import pytest
from pg_fixtures import user_rows
from sqlite_ct.sync import SyncGroup, SyncTable

G = SyncGroup("g")
DDL = "CREATE TABLE emp (id integer PRIMARY KEY, boss integer REFERENCES emp (id), name text)"
ROWS = [(1, 3, "a"), (2, None, "b"), (3, None, "c")]


@pytest.mark.parametrize("predates", [False, True])
def test_a_child_before_its_parent_applies(hub, client_of, predates):
    if hub.kind == "sqlite":
        hub.execute("PRAGMA foreign_keys = ON")
    hub.execute(DDL)
    server = hub.server()
    from pg_fixtures import sqlite_client
    from sqlite_ct.sync import ClientSyncProvider, SyncAgent
    a = sqlite_client()
    a.execute(DDL)
    if predates:
        a.executemany("INSERT INTO emp (id, boss, name) VALUES (?, ?, ?)", ROWS)
    sync_a = SyncAgent(ClientSyncProvider(a), server, [SyncTable("emp", group=G)],
                       upload_batch_size=1)
    first = sync_a.synchronize()
    if not predates:
        with a:
            a.executemany("INSERT INTO emp (id, boss, name) VALUES (?, ?, ?)", ROWS)
    stats = sync_a.synchronize()
    assert hub.rows("emp") == ROWS
    assert user_rows(a, "emp") == ROWS
