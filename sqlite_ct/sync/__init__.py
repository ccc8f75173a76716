"""Hub-and-spoke synchronisation over sqlite-ct change tracking, after Sync
Services for ADO.NET: a ClientSyncProvider over the client database, a server
provider (ServerSyncProvider over a SQLite hub database, or anything that
implements ServerProvider), and a SyncAgent that drives a session.

    from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent
    agent = SyncAgent(ClientSyncProvider(client_conn), ServerSyncProvider(hub_conn),
                      ["orders"])
    stats = agent.synchronize()

docs/sync.md describes the model; sqlite_ct.sync.demo.run() is a worked example.
"""
from .agent import SyncAgent
from .client import ClientSyncProvider
from .enums import (ApplyAction, ConflictType, ResolveAction, SyncDirection, SyncStage,
                    TableCreationOption)
from .errors import ReinitialiseRequired, ReplicaCopied, SyncError
from .messages import (ClientChanges, DownloadBatch, DownloadRequest, DownloadTable,
                       ServerInfo, TableChanges, Upload, UploadResult)
from .model import (ColumnSchema, Conflict, ConflictResolver, StoredConflict, SyncGroup,
                    SyncProgress, SyncSchema, SyncStatistics, SyncTable, TableSchema)
from .server import ServerProvider, ServerSyncProvider

__all__ = [
    # roles
    "SyncAgent", "ClientSyncProvider", "ServerProvider", "ServerSyncProvider",
    # configuration
    "SyncTable", "SyncGroup", "SyncDirection", "TableCreationOption",
    "ConflictResolver", "ResolveAction", "ApplyAction",
    # results and events
    "SyncStatistics", "SyncProgress", "SyncStage", "Conflict", "ConflictType",
    "StoredConflict",
    # schema and messages (for ServerProvider implementations)
    "SyncSchema", "TableSchema", "ColumnSchema", "TableChanges", "ClientChanges",
    "ServerInfo", "Upload", "UploadResult", "DownloadRequest", "DownloadTable",
    "DownloadBatch",
    # errors
    "SyncError", "ReinitialiseRequired", "ReplicaCopied",
]
