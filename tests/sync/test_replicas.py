"""A copied client database (a file copy, VACUUM INTO, a device provisioned
from a synced template) or one restored from a backup keeps the client id;
the hub recognises it by its replica generation and refuses it with
ReplicaCopied until SyncAgent.reidentify() gives it its own id."""
from __future__ import annotations

import shutil

import pytest

from sqlite_ct.sync import ReplicaCopied, SyncError

from .conftest import Client, connect, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b')",)


def test_a_vacuum_into_copy_is_refused_then_reidentified(conns, hub_with, tmp_path):
    hub, server = hub_with(SCHEMA, seed=SEED)
    original = Client(connect(str(tmp_path / "a.db")), server, ["t"])
    original.sync()
    original.conn.execute("VACUUM INTO ?", (str(tmp_path / "copy.db"),))
    copy = Client(connect(str(tmp_path / "copy.db")), server, ["t"])
    assert copy.provider.client_id == original.provider.client_id
    original.conn.execute("INSERT INTO t(id, v) VALUES (3, 'from the original')")
    original.sync()
    copy.conn.execute("INSERT INTO t(id, v) VALUES (4, 'from the copy')")
    with pytest.raises(ReplicaCopied) as info:
        copy.sync()
    assert str(info.value) == (
        f"sqlite-ct sync: client {copy.provider.client_id} was last synchronised from a "
        "later state of its database: this database is a copy of another client database, "
        "or was restored from a backup; call SyncAgent.reidentify() to give it its own "
        "client id and reinitialise its tables")
    assert isinstance(info.value, SyncError)
    assert user_rows(hub, "t") == [(1, "a"), (2, "b"), (3, "from the original")]
    copy.agent.reidentify()
    assert copy.provider.client_id != original.provider.client_id
    original.sync()
    expected = [(1, "a"), (2, "b"), (3, "from the original"), (4, "from the copy")]
    for c in (original, copy):
        assert user_rows(c.conn, "t") == user_rows(hub, "t") == expected
    # From now on they are two clients: each sees the other's edits.
    copy.conn.execute("UPDATE t SET v = 'copy edit' WHERE id = 1")
    copy.sync()
    original.sync()
    assert user_rows(original.conn, "t")[0] == (1, "copy edit")


def test_devices_provisioned_from_a_synced_template(conns, hub_with, tmp_path):
    hub, server = hub_with(SCHEMA, seed=SEED)
    template = str(tmp_path / "template.db")
    t = Client(connect(template), server, ["t"])
    t.sync()
    t.conn.close()
    devices = []
    for n in range(3):
        shutil.copy(template, tmp_path / f"device{n}.db")
        devices.append(Client(connect(str(tmp_path / f"device{n}.db")), server, ["t"]))
    devices[0].sync()
    for d in devices[1:]:
        with pytest.raises(ReplicaCopied):
            d.sync()
        d.agent.reidentify()
    ids = {d.provider.client_id for d in devices}
    assert len(ids) == 3
    for n, d in enumerate(devices):
        d.conn.execute("INSERT INTO t(id, v) VALUES (?, 'device')", (10 + n,))
        d.sync()
    for d in devices:
        d.sync()
        assert user_rows(d.conn, "t") == user_rows(hub, "t")
    assert len(user_rows(hub, "t")) == 5


def test_a_session_that_died_after_the_hub_recorded_its_generation(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    server_id = server.get_server_info().server_id
    current, pending = x.provider.replica_generation(server_id)
    server.claim_replica(x.provider.client_id, current, pending)
    # ... the client died before store_replica_generation(): it claims again.
    x.conn.execute("INSERT INTO t(id, v) VALUES (3, 'c')")
    x.sync()
    assert user_rows(hub, "t") == user_rows(x.conn, "t")
    assert x.sync().total_changes_uploaded == 0
