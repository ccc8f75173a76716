"""The PostgreSQL hub: PostgresServerProvider serves clients from a PostgreSQL
database, with the same behaviour as the SQLite hub (ServerSyncProvider).

    from sqlite_ct.sync.pg import PostgresServerProvider
    server = PostgresServerProvider("postgresql://app@db.example/hub")
    SyncAgent(ClientSyncProvider(conn), server, ["orders"]).synchronize()

Needs psycopg 3 and psycopg-pool (pip install 'sqlite-ct[postgres]').
docs/postgres.md describes the setup, the anchors and the type mapping.
"""
from .provider import HubBusyError, HubTimeoutError, PostgresServerProvider

__all__ = ["PostgresServerProvider", "HubTimeoutError", "HubBusyError"]
