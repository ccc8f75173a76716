"""SyncAgent: drives one synchronisation session between a client provider and
a server provider (Sync Services' SyncAgent).

First the client database claims its next replica generation with the
server (a copied or restored database is refused: ReplicaCopied). Then, for
each group, in the order its first table was given:
  1. first sync of a table: the server describes it, the client creates or
     prepares it (TableCreationOption) and stores its first anchors;
  2. upload (UPLOAD_ONLY and BIDIRECTIONAL tables): the client's changes since
     the sent anchors, applied by the server in one transaction; then, in one
     client transaction, the sent anchors move and the server's corrections
     (its version of rows it rejected) are applied;
  3. download (DOWNLOAD_ONLY, BIDIRECTIONAL, SNAPSHOT): batches of at most
     batch_size changes, each applied with its anchors in one client
     transaction, until the server says there is no more. An interrupted
     session resumes from the last applied batch;
  4. retention: the client purges old, already uploaded tombstones.
Last, deferred downloads in the conflict inbox are retried.
Anchors move only after the step that needs them committed, so any failure
leaves a state from which the next synchronize() converges.
"""
from __future__ import annotations

import datetime
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from ._apply import ApplyResult
from .client import ClientSyncProvider
from .enums import SyncDirection, SyncStage
from .errors import ReinitialiseRequired, SyncError
from .messages import DownloadRequest, DownloadTable, Upload
from .model import SyncProgress, SyncStatistics, SyncTable
from .server import ServerProvider

__all__ = ["SyncAgent"]

Progress = Callable[[SyncProgress], None]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class SyncAgent:
    """Synchronise `tables` (SyncTable objects, or names for bidirectional
    tables) between `client` and `server`.

    batch_size: at most this many changes per download transaction (None: one
      batch). parameters: values for the server's row filters.
    progress: called with a SyncProgress after each committed step."""

    def __init__(self, client: ClientSyncProvider, server: ServerProvider,
                 tables: Sequence[Union[SyncTable, str]], *, batch_size: Optional[int] = None,
                 parameters: Optional[Mapping[str, Any]] = None,
                 progress: Optional[Progress] = None) -> None:
        if batch_size is not None and (isinstance(batch_size, bool)
                                       or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError("batch_size must be a positive integer or None")
        self.client = client
        self.server = server
        self.tables: List[SyncTable] = [t if isinstance(t, SyncTable) else SyncTable(t)
                                        for t in tables]
        seen = set()
        for t in self.tables:
            if t.name.lower() in seen:
                raise ValueError(f'table "{t.name}" is listed twice')
            seen.add(t.name.lower())
        self.batch_size = batch_size
        self.parameters = dict(parameters or {})
        self.progress = progress
        self._server_id: Optional[uuid.UUID] = None

    def groups(self) -> List[Tuple[str, List[SyncTable]]]:
        """(group name, tables) in the order each group's first table was given;
        a table without a group is a group of its own, named after it."""
        order: List[str] = []
        members: Dict[str, List[SyncTable]] = {}
        for t in self.tables:
            name = t.group.name if t.group is not None else t.name
            if name not in members:
                order.append(name)
                members[name] = []
            members[name].append(t)
        return [(name, members[name]) for name in order]

    def synchronize(self) -> SyncStatistics:
        """Run one session; returns its SyncStatistics."""
        stats = SyncStatistics(sync_start_time=_now())
        self._claim_replica()
        for name, tables in self.groups():
            self._initialize(name, tables, stats)
            uploads = [t for t in tables if t.direction.uploads]
            if uploads:
                self._upload(name, uploads, stats)
            downloads = [t for t in tables if t.direction.downloads]
            if downloads:
                self._download(name, downloads, stats)
            self.client.cleanup(tables)
        self._retry_deferred()
        stats.sync_complete_time = _now()
        return stats

    def _retry_deferred(self) -> None:
        """After every group: deferred downloads that apply now (a parent
        arrived with a later group) leave the conflict inbox. (They were
        counted when deferred; SyncStatistics.conflicts_deferred counts the
        session's deferrals, the inbox what is still open.)"""
        self.client.retry_deferred([t for t in self.tables if t.direction.downloads])

    def reinitialise(self, *names: str) -> SyncStatistics:
        """Bring tables back in line with the hub without losing local work:
        the answer to ReinitialiseRequired (a hub restored from a backup, a
        purge, a corrupt anchor), to a client restored from a backup, and after
        anything that removed rows from a client table behind sync's back.

        `names` are table or group names (none: every table). For each group
        concerned: upload its unsent changes (if the hub refuses the stored
        anchors, they are uploaded as from a client that has seen nothing, so
        every hub row another client changed is a conflict, resolved as
        usual), then remove every other row of the chosen tables on the
        client, and download everything now in the client's scope, its own
        uploads included. Returns the session's SyncStatistics."""
        chosen = self._select(names)
        stats = SyncStatistics(sync_start_time=_now())
        self._claim_replica()
        for group, tables in self.groups():
            picked = [t for t in tables if t.name.lower() in chosen]
            if not picked:
                continue
            self._initialize(group, tables, stats)
            uploads = [t for t in tables if t.direction.uploads]
            if uploads:
                try:
                    self._upload(group, uploads, stats)
                except ReinitialiseRequired:
                    self._upload(group, uploads, stats, trust_anchors=False)
            reset = [t for t in picked if t.direction.downloads
                     and t.direction is not SyncDirection.SNAPSHOT]
            if reset:
                self.client.reinitialise(reset, self.server.get_schema([t.name for t in reset]))
            downloads = [t for t in tables if t.direction.downloads]
            if downloads:
                self._download(group, downloads, stats)
            self.client.cleanup(tables)
        self._retry_deferred()
        stats.sync_complete_time = _now()
        return stats

    def reidentify(self) -> SyncStatistics:
        """The answer to ReplicaCopied: give the client database a new client
        id (ClientSyncProvider.reidentify) and reinitialise every table, so
        the copy and the original become two clients that see each other's
        changes. Unsent changes are kept and uploaded under the new id."""
        self.client.reidentify()
        return self.reinitialise()

    def _claim_replica(self) -> None:
        """Move the client database to its next replica generation with the
        server (ServerProvider.claim_replica): a copied or restored database
        is refused with ReplicaCopied before anything is exchanged. Not inside
        the caller's transaction on the client: a rollback there would undo
        the client's step after the server recorded it."""
        if self.client.in_transaction():
            return
        if self._server_id is None:
            self._server_id = self.server.get_server_info().server_id
        current, pending = self.client.replica_generation(self._server_id)
        self.server.claim_replica(self.client.client_id, current, pending)
        self.client.store_replica_generation(self._server_id, pending)

    def _select(self, names: Sequence[str]) -> Set[str]:
        if not names:
            return {t.name.lower() for t in self.tables}
        out: Set[str] = set()
        for n in names:
            hit = [t for t in self.tables if t.name.lower() == n.lower()
                   or (t.group is not None and t.group.name == n)]
            if not hit:
                raise SyncError(f'sqlite-ct sync: "{n}" is neither a table nor a group of '
                                f"this SyncAgent")
            out.update(t.name.lower() for t in hit)
        return out

    def _report(self, stage: SyncStage, group: str, tables: Sequence[SyncTable], changes: int,
                stats: SyncStatistics, batch: int = 0, more: bool = False) -> None:
        if self.progress is not None:
            self.progress(SyncProgress(stage, group, tuple(t.name for t in tables), changes,
                                       batch, stats.total_changes_uploaded,
                                       stats.total_changes_downloaded, more))

    def _initialize(self, group: str, tables: Sequence[SyncTable],
                    stats: SyncStatistics) -> None:
        new = self.client.tables_needing_schema(tables)
        if not new:
            return
        schema = self.server.get_schema([t.name for t in new])
        with self.client.transaction():
            for t in new:
                self.client.create_schema(t, schema)
        self._report(SyncStage.CREATING_SCHEMA, group, new, 0, stats)

    def _upload(self, group: str, tables: Sequence[SyncTable], stats: SyncStatistics,
                trust_anchors: bool = True) -> None:
        client = self.client
        changes = client.get_changes(tables)
        total = len(changes)
        stats.total_changes_uploaded += total
        corrections = []
        result = None
        if total:
            received = (client.received_anchors(tables) if trust_anchors
                        else {t.name: None for t in tables})
            result = self.server.apply_changes(Upload(
                client.client_id, group, [tc for tc in changes.tables if len(tc)], received,
                self.parameters))
            if result.applied + result.failed != total:
                raise SyncError(f"sqlite-ct sync: the server accounted for "
                                f"{result.applied + result.failed} of {total} uploaded changes")
            stats.upload_changes_applied += result.applied
            stats.upload_changes_failed += result.failed
            stats.conflicts.extend(result.conflicts)
            # Upload-only tables take nothing from the server, corrections neither.
            bidirectional = {t.name.lower() for t in tables
                             if t.direction is SyncDirection.BIDIRECTIONAL}
            corrections = [c for c in result.corrections if c.table.lower() in bidirectional]
        deferred = [c for c in result.conflicts if c.deferred] if result is not None else []
        stats.conflicts_deferred += len(deferred)
        applied = client.complete_upload(tables, changes.new_anchor, corrections, deferred)
        moved = sum(len(c) for c in corrections)
        stats.total_changes_downloaded += moved
        stats.download_changes_applied += applied.applied
        stats.download_changes_failed += applied.failed
        stats.conflicts.extend(applied.conflicts)
        stats.conflicts_deferred += sum(1 for c in applied.conflicts if c.deferred)
        self._report(SyncStage.UPLOADING_CHANGES, group, tables, total, stats)

    def _download(self, group: str, tables: Sequence[SyncTable],
                  stats: SyncStatistics) -> None:
        client = self.client
        snapshots: Dict[str, Optional[bytes]] = {t.name: None for t in tables
                                                 if t.direction is SyncDirection.SNAPSHOT}
        session: Optional[bytes] = None
        received = client.received_anchors([t for t in tables if t.name not in snapshots])
        batch_no = 0
        while True:
            request = DownloadRequest(
                client.client_id, group,
                [DownloadTable(t.name, snapshots[t.name], True) if t.name in snapshots
                 else DownloadTable(t.name, received[t.name]) for t in tables],
                self.batch_size, self.parameters, session)
            batch = self.server.get_changes(request)
            unchanged = all(batch.anchors.get(t.name) == received.get(t.name, snapshots.get(t.name))
                            for t in tables)
            if len(batch) or not unchanged or any(tc.reset for tc in batch.tables):
                result = client.apply_changes(tables, batch)
            else:
                result = ApplyResult()
            for t in tables:
                if t.name in batch.anchors:
                    if t.name in snapshots:
                        snapshots[t.name] = batch.anchors[t.name]
                    else:
                        received[t.name] = batch.anchors[t.name]
            batch_no += 1
            stats.download_batches += 1
            stats.total_changes_downloaded += len(batch)
            stats.download_changes_applied += result.applied
            stats.download_changes_failed += result.failed
            stats.conflicts.extend(result.conflicts)
            stats.conflicts_deferred += sum(1 for c in result.conflicts if c.deferred)
            self._report(SyncStage.DOWNLOADING_CHANGES, group, tables, len(batch), stats,
                         batch_no, batch.more)
            session = batch.session
            if not batch.more:
                return
