"""Each SyncDirection: what the first sync does and what later syncs move."""
from __future__ import annotations

import sqlite_ct
from sqlite_ct.sync import SyncDirection, SyncTable

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b')",)


def test_download_only(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", SyncDirection.DOWNLOAD_ONLY)])
    first = x.sync()
    assert first.total_changes_downloaded == 2
    assert user_rows(x.conn, "t") == [(1, "a"), (2, "b")]
    x.conn.execute("INSERT INTO t(id, v) VALUES (3, 'local')")
    hub.execute("UPDATE t SET v = 'A' WHERE id = 1")
    stats = x.sync()
    assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (0, 1)
    assert user_rows(hub, "t") == [(1, "A"), (2, "b")]
    assert user_rows(x.conn, "t") == [(1, "A"), (2, "b"), (3, "local")]


def test_upload_only(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", SyncDirection.UPLOAD_ONLY)])
    first = x.sync()
    assert first.total_changes_downloaded == 0
    assert user_rows(x.conn, "t") == []  # schema only
    x.conn.execute("INSERT INTO t(id, v) VALUES (3, 'c')")
    hub.execute("UPDATE t SET v = 'B' WHERE id = 2")
    stats = x.sync()
    assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (1, 0)
    assert user_rows(hub, "t") == [(1, "a"), (2, "B"), (3, "c")]
    assert user_rows(x.conn, "t") == [(3, "c")]
    # The hub's older rows do not count as unseen: editing an uploaded row is
    # no conflict.
    x.conn.execute("UPDATE t SET v = 'C' WHERE id = 3")
    stats = x.sync()
    assert stats.conflicts == [] and user_rows(hub, "t")[-1] == (3, "C")


def test_bidirectional(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", SyncDirection.BIDIRECTIONAL)])
    x.sync()
    x.conn.execute("DELETE FROM t WHERE id = 1")
    hub.execute("INSERT INTO t(id, v) VALUES (5, 'e')")
    stats = x.sync()
    assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (1, 1)
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(2, "b"), (5, "e")]


def test_snapshot(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", SyncDirection.SNAPSHOT)], batch_size=1)
    first = x.sync()
    assert first.total_changes_downloaded == 2 and first.download_batches >= 2
    assert not sqlite_ct.is_tracked(x.conn, "t")
    x.conn.execute("INSERT INTO t(id, v) VALUES (9, 'local')")  # a snapshot is replaced
    hub.execute("DELETE FROM t WHERE id = 1")
    hub.execute("INSERT INTO t(id, v) VALUES (3, 'c')")
    stats = x.sync()
    assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (0, 2)
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(2, "b"), (3, "c")]


def test_mixed_directions_in_one_group(conns, hub_with):
    from sqlite_ct.sync import SyncGroup
    hub, server = hub_with(SCHEMA, seed=SEED)
    hub.execute("CREATE TABLE log(id INTEGER PRIMARY KEY, msg TEXT)")
    group = SyncGroup("g")
    x = Client(conns(), server, [SyncTable("t", SyncDirection.DOWNLOAD_ONLY, group=group),
                                 SyncTable("log", SyncDirection.UPLOAD_ONLY, group=group)])
    x.sync()
    x.conn.execute("INSERT INTO log(msg) VALUES ('hello')")
    hub.execute("UPDATE t SET v = 'z' WHERE id = 2")
    stats = x.sync()
    assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (1, 1)
    assert user_rows(hub, "log") == [(1, "hello")]
    assert user_rows(x.conn, "t") == [(1, "a"), (2, "z")]
