"""Recovery over HTTP: the service's anchor and replica errors reach the
client as the same exceptions an in-process hub raises, so SyncAgent's
answers (reinitialise(), reidentify()) work through the network too."""
from __future__ import annotations

import os
import shutil

import pytest

import sqlite_ct
from sqlite_ct.sync import ReinitialiseRequired, ReplicaCopied
from sqlite_ct.sync.http import RemoteReinitialiseRequired, RemoteReplicaCopied

from .conftest import ALICE, connect, rows


@pytest.fixture
def service(start_service):
    return start_service()


def test_a_purged_anchor_is_reinitialise_required_and_reinitialise_converges(service,
                                                                            clients):
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (10, 'alice', 'unsent')")
    hub = connect(os.path.join(service.workdir, "hub.db"))
    hub.execute("DELETE FROM notes WHERE id = 3")
    sqlite_ct.purge_tombstones(hub, "notes", up_to_csn=sqlite_ct.last_committed_csn(hub))
    with pytest.raises(ReinitialiseRequired) as info:
        alice.sync()
    assert isinstance(info.value, RemoteReinitialiseRequired)
    assert (info.value.status, info.value.code) == (410, "reinitialise")
    alice.agent.reinitialise()
    # The unsent insert reached the hub, the hub's delete reached alice.
    assert rows(alice.conn) == rows(hub, "owner = 'alice'") == [
        (1, "alice", "a1"), (10, "alice", "unsent")]
    hub.close()


def test_a_copied_client_database_is_refused_until_reidentified(service, clients, tmp_path):
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (11, 'alice', 'before the copy')")
    alice.sync()
    alice.conn.close()
    shutil.copy(tmp_path / "alice.db", tmp_path / "tablet.db")
    alice = clients("alice", service.url, ALICE)       # the original, reopened
    tablet = clients("tablet", service.url, ALICE)     # the copy, same client id
    assert tablet.agent.client.client_id == alice.agent.client.client_id
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (12, 'alice', 'from the phone')")
    alice.sync()
    tablet.conn.execute("INSERT INTO notes(id, owner, body) VALUES (13, 'alice', 'from the tablet')")
    with pytest.raises(ReplicaCopied) as info:
        tablet.sync()
    assert isinstance(info.value, RemoteReplicaCopied)
    assert (info.value.status, info.value.code) == (409, "replica_copied")
    assert "reidentify()" in str(info.value)
    tablet.agent.reidentify()
    assert tablet.agent.client.client_id != alice.agent.client.client_id
    alice.sync()
    hub = connect(os.path.join(service.workdir, "hub.db"))
    expected = rows(hub, "owner = 'alice'")
    hub.close()
    assert [r[0] for r in expected] == [1, 3, 11, 12, 13]
    assert rows(alice.conn) == rows(tablet.conn) == expected
