"""A column added on the hub reaches clients that sync through HTTP, each
with the hub's values of the rows in its own scope; a dropped column stops
the sync with instructions, as in process."""
from __future__ import annotations

import os

import pytest

import sqlite_ct
from sqlite_ct.sync import SyncError

from .conftest import ALICE, BOB, connect


def tagged(conn, where="1"):
    return conn.execute(f"SELECT id, owner, body, tag FROM notes WHERE {where} "
                        f"ORDER BY id").fetchall()


def test_a_column_added_on_the_hub_reaches_each_client_in_its_scope(start_service, clients):
    service = start_service()
    alice = clients("alice", service.url, ALICE)
    bob = clients("bob", service.url, BOB)
    alice.sync()
    bob.sync()
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (10, 'alice', 'unsent')")
    hub = connect(os.path.join(service.workdir, "hub.db"))
    hub.execute("ALTER TABLE notes ADD COLUMN tag TEXT DEFAULT 'none'")
    hub.execute("UPDATE notes SET tag = 'hub' WHERE id IN (3, 4)")
    alice.sync()
    bob.sync()
    assert tagged(alice.conn) == tagged(hub, "owner = 'alice'") == [
        (1, "alice", "a1", "none"), (3, "alice", "a2", "hub"), (10, "alice", "unsent", "none")]
    assert tagged(bob.conn) == tagged(hub, "owner = 'bob'") == [
        (2, "bob", "b1", "none"), (4, "bob", "b2", "hub")]
    bob.conn.execute("UPDATE notes SET tag = 'bob' WHERE id = 2")
    bob.sync()
    assert tagged(hub, "id = 2") == [(2, "bob", "b1", "bob")]
    hub.close()


def test_a_column_dropped_on_the_hub_is_refused_with_instructions(start_service, clients):
    service = start_service()
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    hub = connect(os.path.join(service.workdir, "hub.db"))
    sqlite_ct.drop_column(hub, "notes", "body")
    with pytest.raises(SyncError, match="has no column 'body' \\(dropped on the hub"):
        alice.sync()
    hub.close()
