"""Sync with stdlib sqlite3 connections, alone and mixed with apsw."""
from __future__ import annotations

import sqlite3

import pytest

from sqlite_ct import loader
from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent

from .conftest import connect, user_rows


def stdlib(path):
    loader.register_auto_extension()
    conn = sqlite3.connect(path, isolation_level=None)
    loader.load(conn)
    return conn


def rows(conn, table="t"):
    return sorted(conn.execute(f"SELECT id, v FROM {table}").fetchall())


@pytest.mark.parametrize("hub_host, client_host", [("sqlite3", "sqlite3"), ("apsw", "sqlite3"),
                                                   ("sqlite3", "apsw")])
def test_hosts(tmp_path, hub_host, client_host):
    make = {"sqlite3": stdlib, "apsw": connect}
    hub = make[hub_host](str(tmp_path / "hub.db"))
    a = make[client_host](str(tmp_path / "a.db"))
    b = make[client_host](str(tmp_path / "b.db"))
    hub.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    hub.execute("INSERT INTO t VALUES (1, x'00ff'), (2, 'text')")
    server = ServerSyncProvider(hub)
    agents = [SyncAgent(ClientSyncProvider(c), server, ["t"], batch_size=1) for c in (a, b)]
    for agent in agents:
        agent.synchronize()
    a.execute("UPDATE t SET v = 3.5 WHERE id = 1")
    b.execute("INSERT INTO t(id, v) VALUES (3, NULL)")
    b.execute("DELETE FROM t WHERE id = 2")
    for _ in range(2):
        for agent in agents:
            agent.synchronize()
    assert rows(hub) == rows(a) == rows(b) == [(1, 3.5), (3, None)]
    for conn in (hub, a, b):
        conn.close()


def test_inside_the_callers_transaction(conns, hub_with):
    """The providers work inside an open transaction (savepoints), and a
    rollback of that transaction undoes the sync's client side."""
    hub, server = hub_with("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                           seed=("INSERT INTO t VALUES (1, 'a')",))
    conn = conns()
    agent = SyncAgent(ClientSyncProvider(conn), server, ["t"])
    agent.synchronize()
    hub.execute("UPDATE t SET v = 'b'")
    conn.execute("BEGIN")
    agent.synchronize()
    assert user_rows(conn, "t") == [(1, "b")]
    conn.execute("ROLLBACK")
    assert user_rows(conn, "t") == [(1, "a")]
    agent.synchronize()
    assert user_rows(conn, "t") == [(1, "b")]


@pytest.mark.parametrize("host", ["sqlite3", "apsw"])
def test_copies_reinitialise_and_the_inbox_on_every_host(tmp_path, host):
    """The replica claim, reidentify/reinitialise and the conflict inbox use
    named parameters and their own transactions: the same on both hosts."""
    from sqlite_ct.sync import ReplicaCopied, TableSchema
    make = {"sqlite3": stdlib, "apsw": connect}[host]
    hub = make(str(tmp_path / "hub.db"))
    hub.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    hub.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    server = ServerSyncProvider(hub)

    def strict(table, schema):
        return TableSchema(schema.name, schema.columns, schema.primary_key,
                           constraints=("CHECK (v IS NOT 'bad')",))

    a = make(str(tmp_path / "a.db"))
    agent = SyncAgent(ClientSyncProvider(a, creating_schema=strict), server, ["t"])
    agent.synchronize()
    a.execute("VACUUM INTO ?", (str(tmp_path / "copy.db"),))
    copy = make(str(tmp_path / "copy.db"))
    copy_agent = SyncAgent(ClientSyncProvider(copy), server, ["t"])
    agent.synchronize()
    with pytest.raises(ReplicaCopied):
        copy_agent.synchronize()
    copy.execute("INSERT INTO t(id, v) VALUES (3, 'copy')")
    copy_agent.reidentify()
    hub.execute("UPDATE t SET v = 'bad' WHERE id = 1")
    stats = agent.synchronize()
    assert stats.conflicts_deferred == 1
    (c,) = agent.client.conflicts()
    agent.client.resolve_conflict(c.id, dict(c.server_row, v="good"))
    agent.reinitialise("t")
    copy_agent.synchronize()
    assert rows(hub) == rows(a) == rows(copy) == [(1, "good"), (2, "b"), (3, "copy")]
    for conn in (hub, a, copy):
        conn.close()
