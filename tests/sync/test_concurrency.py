"""Several processes synchronising with one hub file at once: every step
waits for the write lock within the busy timeout (BEGIN IMMEDIATE where a
transaction writes, no read transaction upgraded to a write one), so no sync
fails with "database is locked"; and the clients converge."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import connect, user_rows

WORKERS = 4
ROUNDS = 6

CHILD = textwrap.dedent("""
    import sys, apsw, sqlite_ct
    from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent

    def open_db(path):
        conn = apsw.Connection(path)
        conn.setbusytimeout(20000)
        sqlite_ct.load(conn)
        return conn

    hub_path, client_path, me, rounds, barrier = sys.argv[1:6]
    client = open_db(client_path)
    while not __import__("os").path.exists(barrier):
        pass
    for i in range(int(rounds)):
        # A new hub connection and a new server provider every round: their
        # first calls must wait for the lock too.
        hub = open_db(hub_path)
        if i:
            client.execute("INSERT INTO t(id, who, v) VALUES (?, ?, ?)",
                           (int(me) * 1000 + i, me, "x" * 200))
        hub.execute("INSERT INTO t(id, who, v) VALUES (?, ?, ?)",
                    (int(me) * 1000 + 500 + i, "hub", "direct"))
        SyncAgent(ClientSyncProvider(client), ServerSyncProvider(hub), ["t"],
                  batch_size=7).synchronize()
        hub.close()
    print("ok", flush=True)
""")


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_processes_syncing_at_once_wait_for_each_other(tmp_path, journal):
    hub_path = str(tmp_path / "hub.db")
    hub = connect(hub_path)
    hub.execute(f"PRAGMA journal_mode = {journal}")
    hub.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v TEXT)")
    hub.close()
    barrier = str(tmp_path / "go")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), env.get("PYTHONPATH")] if p)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, hub_path,
                               str(tmp_path / f"c{i}.db"), str(i + 1), str(ROUNDS), barrier],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
             for i in range(WORKERS)]
    open(barrier, "w").close()
    results = [p.communicate(timeout=300) for p in procs]
    failures = [err for (out, err), p in zip(results, procs) if p.returncode != 0]
    assert failures == []
    # One more round each (now serial) brings everyone up to date.
    from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent
    hub = connect(hub_path)
    clients = [connect(str(tmp_path / f"c{i}.db")) for i in range(WORKERS)]
    for c in clients:
        SyncAgent(ClientSyncProvider(c), ServerSyncProvider(hub), ["t"]).synchronize()
    expected = user_rows(hub, "t")
    assert len(expected) == WORKERS * (2 * ROUNDS - 1)
    for c in clients:
        assert user_rows(c, "t") == expected
        c.close()
    hub.close()
