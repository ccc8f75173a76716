"""The enumerations of Sync Services for ADO.NET, in Python spelling.

Each member's value is the .NET name, so documentation and logs can be read
against the reference (docs/sync.md, reference §5.2).
"""
from __future__ import annotations

import enum

__all__ = ["SyncDirection", "TableCreationOption", "ConflictType", "ApplyAction",
           "ResolveAction", "SyncStage"]


class SyncDirection(enum.Enum):
    """Which way a table's changes travel, from the client's point of view."""
    DOWNLOAD_ONLY = "DownloadOnly"
    UPLOAD_ONLY = "UploadOnly"
    BIDIRECTIONAL = "Bidirectional"
    SNAPSHOT = "Snapshot"

    @property
    def uploads(self) -> bool:
        return self in (SyncDirection.UPLOAD_ONLY, SyncDirection.BIDIRECTIONAL)

    @property
    def downloads(self) -> bool:
        return self is not SyncDirection.UPLOAD_ONLY


class TableCreationOption(enum.Enum):
    """What the first synchronisation of a table does with the client table."""
    CREATE_NEW_TABLE_OR_FAIL = "CreateNewTableOrFail"
    DROP_EXISTING_OR_CREATE_NEW_TABLE = "DropExistingOrCreateNewTable"
    TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE = "TruncateExistingOrCreateNewTable"
    UPLOAD_EXISTING_OR_CREATE_NEW_TABLE = "UploadExistingOrCreateNewTable"
    USE_EXISTING_TABLE_OR_FAIL = "UseExistingTableOrFail"


class ConflictType(enum.Enum):
    """Why a change could not be applied as it came. A conflict is always
    between this client and the server, whichever client made the server's
    change."""
    UNKNOWN = "Unknown"
    ERRORS_OCCURRED = "ErrorsOccurred"
    CLIENT_UPDATE_SERVER_UPDATE = "ClientUpdateServerUpdate"
    CLIENT_UPDATE_SERVER_DELETE = "ClientUpdateServerDelete"
    CLIENT_DELETE_SERVER_UPDATE = "ClientDeleteServerUpdate"
    CLIENT_INSERT_SERVER_INSERT = "ClientInsertServerInsert"


class ApplyAction(enum.Enum):
    """What to do with a change that hit a conflict, from the point of view of
    the side applying it (the server during upload, the client during download).

    CONTINUE: skip the incoming change; the local version stays and the change
    counts as failed. RETRY_APPLYING_ROW: detect and apply the (possibly edited)
    change again. RETRY_WITH_FORCE_WRITE: write the (possibly edited) incoming
    change over the local version."""
    CONTINUE = "Continue"
    RETRY_APPLYING_ROW = "RetryApplyingRow"
    RETRY_WITH_FORCE_WRITE = "RetryWithForceWrite"


class ResolveAction(enum.Enum):
    """A ConflictResolver's answer for one conflict type. On the client,
    CLIENT_WINS is ApplyAction.CONTINUE and SERVER_WINS is
    RETRY_WITH_FORCE_WRITE; on the server the other way round. FIRE_EVENT calls
    the provider's on_apply_change_failed callback. DEFER skips the change
    without stopping the sync and keeps it in the client's durable conflict
    inbox (ClientSyncProvider.conflicts()), to be resolved later."""
    CLIENT_WINS = "ClientWins"
    SERVER_WINS = "ServerWins"
    FIRE_EVENT = "FireEvent"
    DEFER = "Defer"


class SyncStage(enum.Enum):
    """The step a progress event or a conflict belongs to."""
    CREATING_SCHEMA = "CreatingSchema"
    UPLOADING_CHANGES = "UploadingChanges"
    DOWNLOADING_CHANGES = "DownloadingChanges"
