"""Two clients synchronising through a hub, as a transcript.

    >>> from sqlite_ct.sync import demo
    >>> print(demo.run("/tmp/sqlite-ct-demo"))

run() creates hub.db, alice.db and bob.db in `workdir` (replacing earlier
ones), serves a `tasks` table from the hub, and syncs both clients: the first
sync creates their tables from the hub's schema, then each edits, syncs, meets
a conflict (the server wins by default), and all three databases end equal.
"""
from __future__ import annotations

import os
from typing import Any, List

from .._conn import open_database
from .agent import SyncAgent
from .client import ClientSyncProvider
from .enums import ApplyAction, SyncStage
from .model import SyncStatistics
from .server import ServerSyncProvider

__all__ = ["run"]


def _open(path: str) -> Any:
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return open_database(path)


def _rows(conn: Any) -> List[tuple]:
    return conn.execute("SELECT id, title, done FROM tasks ORDER BY id").fetchall()


def _table(conn: Any) -> str:
    return "\n".join(f"     {i:<4} {title:<26} {'done' if done else 'open'}"
                     for i, title, done in _rows(conn))


def _moved(stats: SyncStatistics) -> str:
    text = (f"uploaded {stats.total_changes_uploaded} "
            f"(applied {stats.upload_changes_applied}, failed {stats.upload_changes_failed}), "
            f"downloaded {stats.total_changes_downloaded}")
    for c in stats.conflicts:
        uploading = c.stage is SyncStage.UPLOADING_CHANGES
        kept = (c.action is ApplyAction.CONTINUE) == uploading
        text += (f"\n     conflict {c.type.value} on {c.table} {c.key}:"
                 f"\n       client {c.client_row}"
                 f"\n       server {c.server_row}"
                 f"\n       -> {'server' if kept else 'client'} wins ({c.action.value})")
    return text


def run(workdir: str) -> str:
    """Run the demo in `workdir` and return its transcript."""
    os.makedirs(workdir, exist_ok=True)
    out: List[str] = []
    say = out.append
    hub = _open(os.path.join(workdir, "hub.db"))
    alice = _open(os.path.join(workdir, "alice.db"))
    bob = _open(os.path.join(workdir, "bob.db"))
    try:
        hub.execute("CREATE TABLE tasks(id TEXT PRIMARY KEY, title TEXT NOT NULL, "
                    "done INTEGER NOT NULL DEFAULT 0)")
        hub.execute("INSERT INTO tasks(id, title) VALUES ('t1', 'Write the spec'), "
                    "('t2', 'Review the spec')")
        server = ServerSyncProvider(hub)
        agents = {name: SyncAgent(ClientSyncProvider(conn), server, ["tasks"])
                  for name, conn in (("alice", alice), ("bob", bob))}
        conns = {"hub": hub, "alice": alice, "bob": bob}

        def sync(name: str) -> None:
            say(f"   {name} syncs: {_moved(agents[name].synchronize())}")

        say("1. The hub has a tasks table; alice and bob sync for the first time.")
        say("   Their tables are created from the hub's schema and filled.")
        sync("alice")
        sync("bob")
        say("2. Offline, alice adds a task and bob finishes one.")
        alice.execute("INSERT INTO tasks(id, title) VALUES ('t3', 'Ship it')")
        bob.execute("UPDATE tasks SET done = 1 WHERE id = 't1'")
        sync("alice")
        sync("bob")
        sync("alice")
        say("   Nobody gets their own change back (no echo).")
        say("3. Both rename task t2 before syncing: a conflict.")
        alice.execute("UPDATE tasks SET title = 'Review the spec (alice)' WHERE id = 't2'")
        bob.execute("UPDATE tasks SET title = 'Review the spec (bob)' WHERE id = 't2'")
        sync("alice")
        sync("bob")
        say("   The server wins by default: bob's rename loses and he gets alice's.")
        say("4. A second round with no edits moves nothing.")
        sync("alice")
        sync("bob")
        say("5. All three databases hold the same tasks:")
        for name, conn in conns.items():
            say(f"   {name}:")
            say(_table(conn))
        same = _rows(hub) == _rows(alice) == _rows(bob)
        say("    all three databases are equal" if same else "    THE DATABASES DIFFER")
    finally:
        for conn in (hub, alice, bob):
            conn.close()
    return "\n".join(out) + "\n"
