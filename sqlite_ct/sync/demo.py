"""Two clients synchronising through a hub, as a transcript.

    >>> from sqlite_ct.sync import demo
    >>> print(demo.run("/tmp/sqlite-ct-demo"))

run() creates hub.db, alice.db and bob.db in `workdir` (replacing earlier
ones), serves a `tasks` table from the hub, and syncs both clients: the first
sync creates their tables from the hub's schema, then each edits, syncs, meets
a conflict (the server wins by default), and all three databases end equal.

The hub is served by the sync service (sqlite_ct.server) over HTTP on a free
loopback port, and each client syncs through HttpServerProvider with its own
token, as a deployment would. Without the "server" extra (starlette, uvicorn,
httpx), or with run(http=False), the clients open the hub in-process.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
from typing import Any, Iterator, List, Optional

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
    # The hub is written by the service's threads and read here at once.
    return open_database(path, busy_timeout_ms=10_000)


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


def _http_available() -> bool:
    return all(importlib.util.find_spec(m) is not None
               for m in ("httpx", "starlette", "uvicorn"))


@contextlib.contextmanager
def _servers(hub: Any, hub_path: str, http: bool) -> Iterator[dict]:
    """A server provider per client: HTTP clients of a service on loopback,
    or the hub's own provider."""
    if not http:
        server = ServerSyncProvider(hub)
        yield {"alice": server, "bob": server}
        return
    from ..server import running
    from .http import HttpServerProvider
    tokens = {name: secrets.token_urlsafe(24) for name in ("alice", "bob")}
    config = {"hub": hub_path, "tables": ["tasks"],
              "tokens": {token: {"user": name} for name, token in tokens.items()}}
    with running(config) as url, contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(HttpServerProvider(url, token=token))
               for name, token in tokens.items()}


def run(workdir: str, *, http: Optional[bool] = None) -> str:
    """Run the demo in `workdir` and return its transcript. http: serve the
    hub over HTTP (default: when the "server" extra is installed)."""
    os.makedirs(workdir, exist_ok=True)
    if http is None:
        http = _http_available()
    out: List[str] = []
    say = out.append
    hub_path = os.path.join(workdir, "hub.db")
    hub = _open(hub_path)
    alice = _open(os.path.join(workdir, "alice.db"))
    bob = _open(os.path.join(workdir, "bob.db"))
    stack = contextlib.ExitStack()
    for conn in (bob, alice, hub):
        stack.callback(conn.close)
    with stack:
        hub.execute("CREATE TABLE tasks(id TEXT PRIMARY KEY, title TEXT NOT NULL, "
                    "done INTEGER NOT NULL DEFAULT 0)")
        hub.execute("INSERT INTO tasks(id, title) VALUES ('t1', 'Write the spec'), "
                    "('t2', 'Review the spec')")
        servers = stack.enter_context(_servers(hub, hub_path, http))
        agents = {name: SyncAgent(ClientSyncProvider(conn), servers[name], ["tasks"])
                  for name, conn in (("alice", alice), ("bob", bob))}
        conns = {"hub": hub, "alice": alice, "bob": bob}

        def sync(name: str) -> None:
            say(f"   {name} syncs: {_moved(agents[name].synchronize())}")

        say("1. The hub has a tasks table; alice and bob sync for the first time.")
        if http:
            say("   The hub is served by the sync service over HTTP on loopback "
                "(sqlite-ct serve); each client has its own token.")
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
    return "\n".join(out) + "\n"
