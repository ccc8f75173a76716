"""Hub tombstones take the hub's time, not the clock of the process that
syncs (an embedded hub runs in the client's process)."""
from __future__ import annotations

import time

import sqlite_ct

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b')",)


DAY_MS = 86_400_000


def test_tombstone_times_do_not_follow_a_syncing_clock_that_is_behind(conns, hub_with):
    """An embedded hub runs in the syncing client's process: a client 400 days
    behind used to leave hub tombstones that a 30-day purge removed at once,
    forcing every other client to reinitialise."""
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    y = Client(conns(), server, ["t"])
    x.sync()
    y.sync()
    hub.execute("INSERT INTO t(id, v) VALUES (3, 'c')")  # a commit with the right time
    x.sync()
    y.sync()
    behind = int(time.time() * 1000) - 400 * DAY_MS
    hub.create_scalar_function("sqlite_ct_now", lambda: behind, 0)
    x.conn.execute("DELETE FROM t WHERE id = 1")
    x.sync()
    (deleted_at,) = hub.execute("SELECT __sysDeletedTime FROM __sysOCSDeletedRows").fetchone()
    assert deleted_at > int(time.time() * 1000) - DAY_MS
    assert sqlite_ct.purge_tombstones(hub, "t", older_than_days=30) == 0
    y.sync()  # no ReinitialiseRequired
    assert user_rows(y.conn, "t") == user_rows(hub, "t") == [(2, "b"), (3, "c")]
