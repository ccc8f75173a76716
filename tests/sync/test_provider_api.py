"""The providers' API around a sync: anchors, accept_changes, retention,
errors for anchors from another server, missing columns."""
from __future__ import annotations

import pytest

import sqlite_ct
from sqlite_ct.sync import (ClientSyncProvider, DownloadRequest, DownloadTable, SyncAgent,
                            SyncError)

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b')",)


def test_accept_changes_keeps_local_edits_local(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("UPDATE t SET v = 'local only' WHERE id = 1")
    x.provider.accept_changes(["t"])
    assert x.sync().total_changes_uploaded == 0
    assert user_rows(hub, "t") == [(1, "a"), (2, "b")]


def test_anchors_are_set_by_the_first_sync(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    assert isinstance(x.provider.get_table_sent_anchor("t"), int)
    assert x.provider.get_table_received_anchor("t").startswith(b"sqct")
    assert x.provider.client_id == sqlite_ct.client_id(x.conn)
    assert server.server_id == sqlite_ct.client_id(hub)


def test_retention_purges_only_uploaded_tombstones(conns, hub_with, monkeypatch):
    hub, server = hub_with(SCHEMA, seed=SEED)
    conn = conns()
    x = Client(conn, server, ["t"], retention_days=1)
    x.sync()
    conn.execute("DELETE FROM t WHERE id = 1")
    x.sync()                                   # uploaded
    conn.execute("DELETE FROM t WHERE id = 2")  # not uploaded yet
    count = "SELECT count(*) FROM __sysOCSDeletedRows"
    assert conn.execute(count).fetchone()[0] == 2
    import sqlite_ct.sync.client as client_module
    real = client_module.time.time
    monkeypatch.setattr(client_module.time, "time", lambda: real() + 2 * 86400)
    assert x.provider.cleanup(["t"]) == 1
    assert conn.execute(count).fetchone()[0] == 1
    monkeypatch.undo()
    x.sync()
    assert user_rows(hub, "t") == []
    never = Client(conns(), server, ["t"], retention_days=0)
    assert never.provider.cleanup(["t"]) == 0


def test_an_anchor_from_another_server_is_refused(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    other_hub, other = hub_with(SCHEMA, seed=SEED)
    conn = conns()
    SyncAgent(ClientSyncProvider(conn), server, ["t"]).synchronize()
    with pytest.raises(SyncError) as info:
        SyncAgent(ClientSyncProvider(conn), other, ["t"]).synchronize()
    assert str(info.value) == ('sqlite-ct sync: the received anchor of table "t" was issued '
                               'by another server; reinitialise the table')


def test_a_column_added_on_the_hub_is_added_on_the_client(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    hub.execute("ALTER TABLE t ADD COLUMN extra TEXT DEFAULT 'd'")
    hub.execute("UPDATE t SET extra = 'x' WHERE id = 2")
    x.sync()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(1, "a", "d"), (2, "b", "x")]
    assert x.conn.execute("SELECT dflt_value FROM pragma_table_info('t') "
                          "WHERE name = 'extra'").fetchone() == ("'d'",)


def test_purged_hub_tombstones_ask_for_reinitialisation(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    hub.execute("DELETE FROM t WHERE id = 1")
    assert sqlite_ct.purge_tombstones(hub, "t", up_to_csn=sqlite_ct.last_committed_csn(hub)) == 1
    with pytest.raises(SyncError, match="purged tombstones of table \"t\""):
        x.sync()


def test_server_rejects_bad_batch_size(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    with pytest.raises(SyncError, match="batch_size must be at least 1"):
        server.get_changes(DownloadRequest(ClientSyncProvider(conns()).client_id, "t",
                                           [DownloadTable("t", None)], batch_size=0))
    with pytest.raises(ValueError):
        SyncAgent(ClientSyncProvider(conns()), server, ["t"], batch_size=0)
