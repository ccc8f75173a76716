"""What the agent and the server provider exchange.

Plain values only (strings, numbers, bytes, tuples of SQLite values), so the
same messages can later travel over HTTP without touching the client.
Anchors handed out by the server are opaque to the client: it stores them in
__sysSyncArticles.ReceivedAnchor and passes them back verbatim.
"""
from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .model import Conflict

__all__ = ["TableChanges", "ClientChanges", "ServerInfo", "Upload", "UploadResult", "DownloadTable",
           "DownloadRequest", "DownloadBatch"]


@dataclasses.dataclass(frozen=True)
class TableChanges:
    """Changes of one table. inserts and updates are tuples in `columns`
    order; deletes are tuples in `key_columns` order. reset (snapshot tables)
    means: delete every client row first.

    transactions (uploads): for each change, in the order deletes, inserts,
    updates, the client transaction it belongs to (the client's BSN of the
    transaction that last changed the row); the hub applies the changes of
    one client transaction together or not at all. 0: this change stands
    alone (a row that predates tracking). Empty: no transactions given, every
    change stands alone (downloads, corrections).

    own_deletes (uploads): keys, in `key_columns` order, the client inserted
    and deleted again since its last upload (no change to a hub that never
    saw them, and not counted in len()). The hub deletes such a key only
    where its row is the uploading client's own latest write: a row it
    received in an upload the client has since lost (a session inside the
    caller's transaction that was rolled back, a restored backup), which no
    download would send back to it."""
    table: str
    columns: Tuple[str, ...]
    key_columns: Tuple[str, ...]
    deletes: List[tuple] = dataclasses.field(default_factory=list)
    inserts: List[tuple] = dataclasses.field(default_factory=list)
    updates: List[tuple] = dataclasses.field(default_factory=list)
    reset: bool = False
    transactions: List[int] = dataclasses.field(default_factory=list)
    own_deletes: List[tuple] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.deletes) + len(self.inserts) + len(self.updates)


@dataclasses.dataclass(frozen=True)
class ClientChanges:
    """ClientSyncProvider.get_changes(): the group's local changes since each
    table's sent anchor, read in one snapshot; new_anchor is the sent anchor
    to store once the server has applied them."""
    tables: List[TableChanges]
    new_anchor: int

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables)


@dataclasses.dataclass(frozen=True)
class ServerInfo:
    server_id: uuid.UUID


@dataclasses.dataclass(frozen=True)
class Upload:
    """A group's client changes. received_anchors tell the server what the
    client has seen, which is how it tells a conflict from an edit of a row the
    client already had.

    session and batch identify this upload for exactly-once delivery: a
    server that has already applied (client_id, session, batch) answers with
    the stored result and applies nothing (see ServerSyncProvider). session
    None: no receipt is kept."""
    client_id: uuid.UUID
    group: str
    tables: Sequence[TableChanges]
    received_anchors: Mapping[str, Optional[bytes]]
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    session: Optional[bytes] = None
    batch: int = 0


@dataclasses.dataclass(frozen=True)
class UploadResult:
    """applied + failed == changes uploaded. corrections hold the server's
    version of rows whose upload it did not apply and that the client would
    not otherwise download again (apply them like a download batch)."""
    applied: int
    failed: int
    conflicts: List[Conflict]
    corrections: List[TableChanges]


@dataclasses.dataclass(frozen=True)
class DownloadTable:
    table: str
    anchor: Optional[bytes]
    snapshot: bool = False


@dataclasses.dataclass(frozen=True)
class DownloadRequest:
    """One batch request. session is None on the first request of a sync
    session and the previous batch's session afterwards: it fixes the upper
    bound of the session, so a hub under constant writes still ends it."""
    client_id: uuid.UUID
    group: str
    tables: Sequence[DownloadTable]
    batch_size: Optional[int] = None
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    session: Optional[bytes] = None


@dataclasses.dataclass(frozen=True)
class DownloadBatch:
    """At most batch_size changes. anchors (one per requested table) are to be
    stored in the same client transaction that applies the batch; more says
    whether another request is needed."""
    tables: List[TableChanges]
    anchors: Dict[str, bytes]
    session: bytes
    more: bool

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables)
