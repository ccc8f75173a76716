"""Helpers for the sync tests: connections with sqlite-ct loaded, a hub with
its server provider, clients with their agents, and table snapshots to
compare replicas."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import apsw
import pytest

import sqlite_ct
from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent


def pytest_configure(config):
    config.addinivalue_line("markers", "large: a large data set (tests/sync/test_large.py)")


def connect(path: str = ":memory:") -> apsw.Connection:
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    conn.setbusytimeout(5000)
    return conn


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def user_rows(conn: Any, table: str) -> List[tuple]:
    """The table's user columns (no __sys*), sorted: what replicas must agree on."""
    cols = [r[0] for r in conn.execute("SELECT name FROM pragma_table_info(?) ORDER BY cid",
                                       (table,))
            if not r[0].startswith("__sys")]
    names = ", ".join(quote(c) for c in cols)
    return sorted(conn.execute(f"SELECT {names} FROM {quote(table)}").fetchall(),
                  key=lambda r: tuple((v is None, str(type(v)), v) for v in r))


class Hub:
    def __init__(self, conn: Any, **kwargs: Any) -> None:
        self.conn = conn
        self.server = ServerSyncProvider(conn, **kwargs)


class Client:
    def __init__(self, conn: Any, server: Any, tables: Sequence[Any], **kwargs: Any) -> None:
        agent_kwargs = {k: kwargs.pop(k) for k in ("batch_size", "parameters", "progress")
                        if k in kwargs}
        self.conn = conn
        self.provider = ClientSyncProvider(conn, **kwargs)
        self.agent = SyncAgent(self.provider, server, tables, **agent_kwargs)

    def sync(self):
        return self.agent.synchronize()


@pytest.fixture
def hub_with(conns):
    """hub_with(schema_sql, seed=(...), **server_kwargs) -> (hub conn, ServerSyncProvider).
    The default seed is row (1, 'orig') of table t, written before tracking."""
    def make(schema: str, seed: Sequence[str] = ("INSERT INTO t VALUES (1, 'orig')",),
             **kwargs: Any):
        conn = conns()
        conn.execute(schema)
        for sql in seed:
            conn.execute(sql)
        return conn, ServerSyncProvider(conn, **kwargs)
    return make


@pytest.fixture
def conns():
    """A factory of in-memory apsw connections with sqlite-ct loaded, closed
    at teardown."""
    made: List[apsw.Connection] = []

    def make(path: Optional[str] = None) -> apsw.Connection:
        conn = connect(path or ":memory:")
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()
