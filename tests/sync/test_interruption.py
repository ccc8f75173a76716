"""A syncing process killed with SIGKILL in the middle of a batched download;
the next sync resumes from the last committed batch and converges."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from sqlite_ct.sync import SyncStage

from .conftest import Client, Hub, connect, user_rows

ROWS = 3000
BATCH = 100

CHILD = textwrap.dedent("""
    import sys, time, apsw, sqlite_ct
    from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent, SyncStage

    def open_db(path):
        conn = apsw.Connection(path)
        sqlite_ct.load(conn)
        conn.setbusytimeout(5000)
        return conn

    KILL_AFTER = int(sys.argv[4])

    def progress(event):
        if event.stage is SyncStage.DOWNLOADING_CHANGES:
            print("batch", event.batch, event.total_downloaded, flush=True)
            time.sleep(0.002)  # the kill lands anywhere in the next batch
            if event.batch > KILL_AFTER + 1:
                time.sleep(60)  # a slow parent still kills this run before its end

    client, hub = open_db(sys.argv[1]), open_db(sys.argv[2])
    SyncAgent(ClientSyncProvider(client), ServerSyncProvider(hub), ["t"],
              batch_size=int(sys.argv[3]), progress=progress).synchronize()
    print("done", flush=True)
""")


@pytest.mark.parametrize("kill_after", [3, 12])
def test_sigkill_mid_download_then_resume(tmp_path, kill_after):
    hub_path, client_path = str(tmp_path / "hub.db"), str(tmp_path / "client.db")
    hub_conn = connect(hub_path)
    hub_conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, pad BLOB)")
    hub_conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                     f"WHERE i < {ROWS}) INSERT INTO t SELECT i, 'v' || i, randomblob(64) FROM n")
    child = subprocess.Popen([sys.executable, "-c", CHILD, client_path, hub_path, str(BATCH),
                              str(kill_after)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = 0
    try:
        for line in child.stdout:
            if line.startswith("batch"):
                seen = int(line.split()[1])
                if seen >= kill_after:
                    os.kill(child.pid, signal.SIGKILL)
                    break
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, child.stderr.read()

    client_conn = connect(client_path)  # a hot journal, if any, is rolled back here
    have = client_conn.execute("SELECT count(*) FROM t").fetchone()[0]
    assert kill_after * BATCH <= have < ROWS
    # The hub moves on while the client is down, on both sides of the cursor.
    hub_conn.execute("UPDATE t SET v = 'changed' WHERE id IN (1, 500, 2500)")
    hub_conn.execute("DELETE FROM t WHERE id IN (2, 2600)")
    hub_conn.execute("INSERT INTO t(id, v) VALUES (5000, 'new')")

    batches = []
    resumed = Client(client_conn, Hub(hub_conn).server, ["t"], batch_size=BATCH,
                     progress=lambda e: batches.append(e)
                     if e.stage is SyncStage.DOWNLOADING_CHANGES else None)
    stats = resumed.sync()
    assert stats.total_changes_downloaded <= ROWS - have + 6   # resumed, not restarted
    assert user_rows(client_conn, "t") == user_rows(hub_conn, "t")
    quiet = resumed.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)
    client_conn.close()
    hub_conn.close()
