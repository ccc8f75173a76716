"""The provider conformance suite: every scenario runs against the SQLite hub
(ServerSyncProvider) and the PostgreSQL hub (PostgresServerProvider), with
real clients, through the same `hub` fixture.

A HubUnderTest offers what the scenarios need and nothing hub-specific:
make the server provider, run SQL on the hub the way another application
would (`?` placeholders), open a second session that keeps a transaction
open, read a table's rows, purge tombstones.
"""
from __future__ import annotations

import os
import subprocess
from typing import Any, List

import apsw
import pytest

import sqlite_ct
from pg_fixtures import (pg_dsn, pg_server, pg_test_database, sqlite_client,  # noqa: F401
                         user_rows)
from sqlite_ct.retention import purge_tombstones
from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent


class SqliteHub:
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = self.session()
        self.providers: List[Any] = []

    def session(self) -> apsw.Connection:
        conn = apsw.Connection(self.path)
        sqlite_ct.load(conn)
        conn.setbusytimeout(5000)
        return conn

    def server(self, **kwargs: Any) -> ServerSyncProvider:
        return ServerSyncProvider(self.conn, **kwargs)

    def execute(self, sql: str, params: tuple = ()) -> List[tuple]:
        return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]

    def begin(self) -> "Session":
        return Session(self.session(), "?")

    def rows(self, table: str) -> List[tuple]:
        return user_rows(self.conn, table)

    def purge(self, server: Any, table: str) -> int:
        return purge_tombstones(self.conn, table, older_than_days=0)

    def receipt_sessions(self) -> List[bytes]:
        """The sessions the hub keeps upload receipts of."""
        from sqlite_ct.sync.server import RECEIPTS
        return [bytes(r[0]) for r in self.conn.execute(
            f'SELECT DISTINCT Session FROM "{RECEIPTS}" ORDER BY 1').fetchall()]

    def held(self, client: Any, table: str, keys: Any) -> Any:
        """(those of `keys` (single-column) recorded as held by `client`,
        how many keys are recorded in all)."""
        from sqlite_ct.sync._held import HELD
        rows = [r[0] for r in self.conn.execute(
            f'SELECT sqlite_ct_unpack_key(RK, 0) FROM "{HELD}" WHERE ClientId = ? '
            f"AND TName = ? AND RK <> x''", (client.bytes_le, table)).fetchall()]
        return {k for k in keys if k in rows}, len(rows)

    def drop_pruning_columns(self, columns: Any) -> None:
        """The record of held keys as a hub made before pruning (Gone,
        Acked), or before the replica generations of acknowledgements
        (Acked), has it."""
        from sqlite_ct.sync._held import HELD
        for column in columns:
            self.conn.execute(f'ALTER TABLE "{HELD}" DROP COLUMN "{column}"')

    def age_client(self, client: Any, days: float) -> None:
        """Make `client`'s latest session `days` days older."""
        self.conn.execute("UPDATE __sysSyncClients SET LastSeen = LastSeen - ? "
                          "WHERE ClientId = ?", (int(days * 86_400_000), client.bytes_le))

    def backup(self, path: str) -> str:
        """A copy of the hub as it is now (the SQLite backup API)."""
        dest = apsw.Connection(path)
        with dest.backup("main", self.conn, "main") as b:
            b.step()
        dest.close()
        return path

    def restore(self, backup: str) -> None:
        """Put the backup back over the hub, under its running providers."""
        src = apsw.Connection(backup)
        with self.conn.backup("main", src, "main") as b:
            b.step()
        src.close()

    def close(self) -> None:
        self.conn.close()


class PostgresHub:
    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        import psycopg
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.providers: List[Any] = []

    def server(self, **kwargs: Any) -> Any:
        from sqlite_ct.sync.pg import PostgresServerProvider
        p = PostgresServerProvider(self.dsn, max_connections=2, **kwargs)
        self.providers.append(p)
        return p

    def execute(self, sql: str, params: tuple = ()) -> List[tuple]:
        cur = self.conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def begin(self) -> "Session":
        import psycopg
        return Session(psycopg.connect(self.dsn), "%s")

    def rows(self, table: str) -> List[tuple]:
        cols = [r[0] for r in self.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = ? ORDER BY ordinal_position", (table,))]
        names = ", ".join(f'"{c}"' for c in cols)
        return [tuple(int(v) if isinstance(v, bool) else v for v in r)
                for r in self.execute(f'SELECT {names} FROM "{table}" ORDER BY 1, 2')]

    def purge(self, server: Any, table: str) -> int:
        return server.purge_tombstones(table, older_than_days=0)

    def receipt_sessions(self) -> List[bytes]:
        return [bytes(r[0]) for r in self.execute(
            "SELECT DISTINCT session FROM sqlite_ct.upload_receipts ORDER BY 1")]

    def held(self, client: Any, table: str, keys: Any) -> Any:
        from sqlite_ct.sync.pg._held import digest
        rows = {bytes(r[0]) for r in self.execute(
            "SELECT rk FROM sqlite_ct.client_keys WHERE client_id = ? AND table_name = ? "
            "AND rk <> ''::bytea", (client, table))}
        return {k for k in keys if digest((k,)) in rows}, len(rows)

    def drop_pruning_columns(self, columns: Any) -> None:
        for column in columns:
            self.execute(f'ALTER TABLE sqlite_ct.client_keys DROP COLUMN "{column.lower()}"')

    def age_client(self, client: Any, days: float) -> None:
        self.execute("UPDATE sqlite_ct.client_replicas SET last_seen = last_seen - "
                     "make_interval(secs => ?) WHERE client_id = ?", (days * 86400.0, client))

    def backup(self, path: str) -> str:
        """pg_dump of the hub database as it is now."""
        subprocess.run([_pg_bin("pg_dump"), "-Fc", "-f", path, self.dsn], check=True)
        return path

    def restore(self, backup: str) -> None:
        """pg_restore --clean of the backup over the hub, under its running
        providers."""
        subprocess.run([_pg_bin("pg_restore"), "--clean", "--if-exists", "-n", "public",
                        "-n", "sqlite_ct", "-d", self.dsn, backup], check=True)

    def close(self) -> None:
        for p in self.providers:
            p.close()
        self.conn.close()


def _pg_bin(name: str) -> str:
    import pg_cluster
    bin_dir = pg_cluster.find_bin_dir()
    if bin_dir is None:
        pytest.skip(f"needs the PostgreSQL client binaries ({name})")
    return os.path.join(bin_dir, name)


class Session:
    """A second connection to the hub with an open write transaction."""

    def __init__(self, conn: Any, mark: str) -> None:
        self.conn = conn
        self.mark = mark
        if mark == "?":
            conn.execute("BEGIN IMMEDIATE")

    def execute(self, sql: str, params: tuple = ()) -> None:
        if self.mark != "?":
            sql = sql.replace("%", "%%").replace("?", self.mark)
        self.conn.execute(sql, params)

    def commit(self) -> None:
        self.conn.execute("COMMIT") if self.mark == "?" else self.conn.commit()
        self.conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def hub(request, tmp_path):
    if request.param == "sqlite":
        h: Any = SqliteHub(os.path.join(tmp_path, "hub.db"))
    else:
        h = PostgresHub(request.getfixturevalue("pg_dsn"))
    yield h
    h.close()


@pytest.fixture
def client_of():
    """client_of(server, tables, **agent_kwargs) -> (client conn, SyncAgent)."""
    def make(server: Any, tables: Any, **kwargs: Any):
        conn = sqlite_client()
        return conn, SyncAgent(ClientSyncProvider(conn), server, tables, **kwargs)
    return make
