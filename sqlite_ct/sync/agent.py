"""SyncAgent: drives one synchronisation session between a client provider and
a server provider (Sync Services' SyncAgent).

First the client database claims its next replica generation with the
server (a copied or restored database is refused: ReplicaCopied). Then, for
each group, in the order its first table was given:
  1. first sync of a table: the server describes it, the client creates or
     prepares it (TableCreationOption) and stores its first anchors; every
     table is compared with the hub's (describe_schema): a column added on
     the hub is added on the client after the upload and the table is
     reinitialised, any other difference is a SyncError;
  2. upload (UPLOAD_ONLY and BIDIRECTIONAL tables): the client's changes since
     the sent anchors, in batches of at most upload_batch_size changes that
     never split a client transaction (each change carries its transaction;
     one larger than the batch size is sent in parts of its own), each applied by
     the server in one transaction and named by (client, session,
     batch) so that a batch sent again is not applied twice; then, in one
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

import contextlib
import datetime
import hashlib
import logging
import uuid
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set,
                    Tuple, Union)

from ._apply import ApplyResult
from .client import ClientSyncProvider, _cut_windows
from .enums import ConflictType, SyncDirection, SyncStage
from .errors import ReinitialiseRequired, SyncError
from .messages import DownloadRequest, DownloadTable, TableChanges, Upload
from .model import Conflict, SyncProgress, SyncSchema, SyncStatistics, SyncTable
from .server import ServerProvider

__all__ = ["SyncAgent"]

Progress = Callable[[SyncProgress], None]

log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class SyncAgent:
    """Synchronise `tables` (SyncTable objects, or names for bidirectional
    tables) between `client` and `server`.

    batch_size: at most this many changes per download transaction (None: one
      batch, held in memory whole). parameters: values for the server's row filters.
    upload_batch_size: at most this many changes per server upload
      transaction (None: one), so the hub's write lock is held per batch.
      A batch never splits a client transaction of up to this many changes:
      it holds the changes of a run of whole client transactions, in BSN
      order; a larger transaction is sent in batches of its own of this
      size. Within a batch the deletes come first, then inserts, then
      updates, in table order, as one transaction would apply them. They are
      read from the client batch by batch, so memory follows the two batch
      sizes, not the number of changes.
    progress: called with a SyncProgress after each committed step."""

    def __init__(self, client: ClientSyncProvider, server: ServerProvider,
                 tables: Sequence[Union[SyncTable, str]], *, batch_size: Optional[int] = 10_000,
                 parameters: Optional[Mapping[str, Any]] = None,
                 progress: Optional[Progress] = None,
                 upload_batch_size: Optional[int] = 10_000) -> None:
        for name, size in (("batch_size", batch_size), ("upload_batch_size", upload_batch_size)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                     or size < 1):
                raise ValueError(f"{name} must be a positive integer or None")
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
        self.upload_batch_size = upload_batch_size
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
        log.info("sync: client %s, tables %s", self.client.client_id,
                 ", ".join(t.name for t in self.tables))
        self._claim_replica()
        for name, tables in self.groups():
            self._initialize(name, tables, stats)
            schema, added = self._schema_changes(tables)
            uploads = [t for t in tables if t.direction.uploads]
            if uploads:
                self._upload(name, uploads, stats, superseded=added)
            self._add_columns(name, tables, schema, added, stats)
            downloads = [t for t in tables if t.direction.downloads]
            if downloads:
                self._download(name, downloads, stats)
            self.client.cleanup(tables)
        self._retry_deferred()
        stats.sync_complete_time = _now()
        log.info("sync: done: uploaded %d (applied %d, failed %d), downloaded %d (applied %d, "
                 "failed %d) in %d batch(es), %d conflict(s)", stats.total_changes_uploaded,
                 stats.upload_changes_applied, stats.upload_changes_failed,
                 stats.total_changes_downloaded, stats.download_changes_applied,
                 stats.download_changes_failed, stats.download_batches, len(stats.conflicts))
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
            schema, added = self._schema_changes(tables)
            uploads = [t for t in tables if t.direction.uploads]
            if uploads:
                try:
                    self._upload(group, uploads, stats, superseded=added)
                except ReinitialiseRequired:
                    self._upload(group, uploads, stats, trust_anchors=False,
                                 superseded=added)
            self._add_columns(group, tables, schema, added, stats)
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
        self.client.create_schemas(new, schema)
        log.info("sync %s: first sync of %s: tables created or prepared (%s)", group,
                 ", ".join(t.name for t in new),
                 ", ".join(f"{t.name}: {t.creation_option.name}" for t in new))
        self._report(SyncStage.CREATING_SCHEMA, group, new, 0, stats)

    def _schema_changes(self, tables: Sequence[SyncTable]
                        ) -> Tuple[Optional[SyncSchema], Dict[str, Tuple[str, ...]]]:
        """The hub's schema of `tables` and, per client table, the hub columns
        it lacks and takes (ClientSyncProvider.schema_changes); any other
        difference raises SyncError before anything is exchanged."""
        schema = self.server.describe_schema([t.name for t in tables])
        if schema is None:
            return None, {}
        return schema, self.client.schema_changes(tables, schema)

    def _add_columns(self, group: str, tables: Sequence[SyncTable],
                     schema: Optional[SyncSchema], added: Dict[str, Tuple[str, ...]],
                     stats: SyncStatistics) -> None:
        """Columns added on the hub reach the client: after the upload, in one
        client transaction, they are added to the client tables, and each
        tracked table is reinitialised (its unsent changes stay), so the
        download that follows brings the hub's values of the rows in scope.
        (ADD COLUMN does not stamp rows on the hub: an incremental download
        would miss every row not changed since.)"""
        if not added or schema is None:
            return
        by_name = {t.name.lower(): t for t in tables}
        with self.client.transaction():
            for name, columns in added.items():
                self.client.add_columns(name, columns, schema)
            reset = [by_name[n.lower()] for n in added
                     if by_name[n.lower()].direction is not SyncDirection.SNAPSHOT]
            if reset:
                self.client.reinitialise(reset, schema)
        log.info("sync %s: columns added on the hub: %s", group,
                 "; ".join(f"{n}: {', '.join(c)}" for n, c in added.items()))
        self._report(SyncStage.CREATING_SCHEMA, group, [by_name[n.lower()] for n in added], 0,
                     stats)

    def _upload(self, group: str, tables: Sequence[SyncTable], stats: SyncStatistics,
                trust_anchors: bool = True,
                superseded: Optional[Mapping[str, Any]] = None) -> None:
        client = self.client
        corrections: List[TableChanges] = []
        deferred: List[Any] = []
        received = (client.received_anchors(tables) if trust_anchors
                    else {t.name: None for t in tables})
        bidirectional = {t.name.lower() for t in tables
                         if t.direction is SyncDirection.BIDIRECTIONAL}
        skip = {n.lower() for n in superseded or ()}
        order = [t.name.lower() for t in tables]
        applied_before, failed_before = (stats.upload_changes_applied,
                                         stats.upload_changes_failed)
        conflicts_before = len(stats.conflicts)
        waiting = client.deferred_downloads(tables)
        superseded: List[int] = []
        # The changes are read batch by batch from one snapshot, so memory
        # follows upload_batch_size, not the number of changes.
        with client.stream_changes(tables) as changes, \
                contextlib.closing(changes.batches(self.upload_batch_size)) as batches:
            # The same local changes give the same session, so a sync retried
            # after a lost answer sends batches the server recognises.
            session = hashlib.sha256(b"sqlite-ct upload\0" + client.client_id.bytes
                                     + group.encode("utf-8", "surrogatepass") + b"\0"
                                     + str(changes.new_anchor).encode()).digest()[:16]
            # A client transaction that failed only on store errors the hub
            # deferred (a parent row that travels in a later batch, say) is
            # sent once more after the last batch, in batches of its own; its
            # failure then stands. Sent once more only: a change that can
            # never apply costs one more attempt, not one per later batch.
            again: List[TableChanges] = []
            retrying = False
            stream: Iterator[List[TableChanges]] = iter(batches)
            number = 0
            while True:
                part = next(stream, None)
                if part is None:
                    if retrying or not again:
                        break
                    retrying = True
                    stream = iter(upload_batches(merge_changes(again, order),
                                                 self.upload_batch_size))
                    continue
                sent = sum(len(tc) for tc in part)
                result = self.server.apply_changes(Upload(
                    client.client_id, group, part, received, self.parameters, session, number))
                number += 1
                if result.applied + result.failed != sent:
                    raise SyncError(f"sqlite-ct sync: the server accounted for "
                                    f"{result.applied + result.failed} of {sent} uploaded "
                                    f"changes")
                later, alone = (set(), set()) if retrying else retriable(result.conflicts)
                carried = take_transactions(part, later, alone)
                again.extend(carried)
                alone = {(tc.table.lower(), k) for tc in carried for k in _standalone_keys(tc)}
                conflicts = [c for c in result.conflicts if not (
                    c.transaction in later
                    or (c.transaction is None and (c.table.lower(), _key(c)) in alone))]
                stats.upload_changes_applied += result.applied
                stats.upload_changes_failed += result.failed - sum(len(tc) for tc in carried)
                stats.conflicts.extend(conflicts)
                deferred.extend(in_the_inbox(conflicts))
                superseded += client.superseded_downloads(part, result.conflicts, waiting)
                # Upload-only tables take nothing from the server, corrections neither.
                # Tables that take new hub columns next are downloaded whole
                # (_add_columns): their corrections, which carry those
                # columns, come with that download.
                corrections.extend(without_keys(c, carried) for c in result.corrections
                                   if c.table.lower() in bidirectional
                                   and c.table.lower() not in skip)
                del part
        total = changes.total
        stats.total_changes_uploaded += total
        log.info("sync %s: upload up to CSN %s: %s", group, changes.new_anchor,
                 "; ".join(f"{t}: {i} insert(s), {u} update(s), {d} delete(s)"
                           for t, (i, u, d) in changes.counts.items()) or "no changes")
        if total:
            log.info("sync %s: upload: server applied %d, failed %d, sent back %d "
                     "correction(s)", group, stats.upload_changes_applied - applied_before,
                     stats.upload_changes_failed - failed_before,
                     sum(len(c) for c in corrections))
            for c in stats.conflicts[conflicts_before:]:
                log.debug("sync %s: upload conflict %s on %s %r -> %s", group, c.type.value,
                          c.table, c.key, None if c.action is None else c.action.value)
        stats.conflicts_deferred += len(deferred)
        applied = client.complete_upload(tables, changes.new_anchor, corrections, deferred,
                                         superseded)
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
        log.debug("sync %s: download from received anchors %s", group,
                  {t: _anchor(a) for t, a in received.items()})
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
            log.info("sync %s: download batch %d: %s; applied %d, failed %d%s", group,
                     batch_no, _counts(batch.tables), result.applied, result.failed,
                     ", more to come" if batch.more else "")
            log.debug("sync %s: download batch %d: received anchors -> %s", group, batch_no,
                      {t: _anchor(a) for t, a in batch.anchors.items()})
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


def _counts(tables: Sequence[Any]) -> str:
    """Per table: inserts, updates, deletes (TableChanges)."""
    if not tables:
        return "no changes"
    return "; ".join(f"{t.table}: {len(t.inserts)} insert(s), {len(t.updates)} update(s), "
                     f"{len(t.deletes)} delete(s)" for t in tables)


def _anchor(anchor: Optional[bytes]) -> Optional[str]:
    """A received anchor (opaque bytes from the server) for a log line."""
    return None if anchor is None else anchor.hex()


def upload_batches(tables: Sequence[TableChanges], size: Optional[int]
                   ) -> List[List[TableChanges]]:
    """A group's changes (get_changes().tables: each change with its client
    transaction) cut into batches as ClientSyncProvider.stream_changes()
    cuts them (ChangeBatches.batches): each batch holds the changes whose
    transaction lies in one window of BSNs, of at most `size` changes unless
    the window is one transaction that has more; no transaction is split.
    Within a batch the order of `tables` is kept (deletes, inserts and
    updates of each table, tables in table order), so applying a batch in
    one transaction (deletes in reverse table order, then inserts, then
    updates) and the batches one after another is that order per window.
    ValueError when a table's transactions do not give one per change."""
    own = {tc.table.lower(): tc.own_deletes for tc in tables if tc.own_deletes}
    tables = [tc for tc in tables if len(tc) or tc.own_deletes]
    for tc in tables:
        if len(tc.transactions) != len(tc):
            raise ValueError(f'table "{tc.table}": {len(tc.transactions)} transaction(s) for '
                             f"{len(tc)} change(s); upload_batches() needs one per change")
    if size is None:
        return [tables] if tables else []
    # The keys inserted and deleted again go first, in batches of their own
    # of at most `size` keys (ChangeBatches.own_batches()).
    batches: List[List[TableChanges]] = []
    current: Dict[str, TableChanges] = {}
    filled = 0
    for tc in tables:
        for key in own.get(tc.table.lower(), []):
            part = current.get(tc.table.lower())
            if part is None:
                part = current[tc.table.lower()] = TableChanges(tc.table, tc.columns,
                                                                tc.key_columns)
            part.own_deletes.append(key)
            filled += 1
            if filled == size:
                batches.append(list(current.values()))
                current, filled = {}, 0
    if current:
        batches.append(list(current.values()))
    return batches + _windows(tables, size)


def _windows(tables: Sequence[TableChanges], size: int) -> List[List[TableChanges]]:
    counts: Dict[int, int] = {}
    for tc in tables:
        for t in tc.transactions:
            counts[t] = counts.get(t, 0) + 1
    batches: List[List[TableChanges]] = []
    after: Optional[int] = None
    for up_to in _cut_windows(sorted(counts.items()), size):
        def inside(t: int) -> bool:
            return (after is None or t > after) and (up_to is None or t <= up_to)
        batch = []
        for tc in tables:
            nd, ni = len(tc.deletes), len(tc.inserts)
            parts = [[(r, t) for r, t in zip(rows, txns) if inside(t)] for rows, txns in (
                (tc.deletes, tc.transactions[:nd]), (tc.inserts, tc.transactions[nd:nd + ni]),
                (tc.updates, tc.transactions[nd + ni:]))]
            if any(parts):
                batch.append(TableChanges(
                    tc.table, tc.columns, tc.key_columns, deletes=[r for r, _ in parts[0]],
                    inserts=[r for r, _ in parts[1]], updates=[r for r, _ in parts[2]],
                    transactions=[t for part in parts for _, t in part]))
        batches.extend(_split(batch, size))
        after = up_to
    return batches


def _split(batch: List[TableChanges], size: int) -> List[List[TableChanges]]:
    """A window of one transaction larger than `size`, in parts of at most
    `size` changes, in the order a transaction applies them (deletes in
    reverse table order, then inserts, then updates, in table order; a
    table's changes are appended deletes, inserts, updates, so its
    transactions stay in that order)."""
    if sum(len(tc) for tc in batch) <= size:
        return [batch]
    steps = []
    for i in reversed(range(len(batch))):
        steps.append((i, "deletes", 0))
    for kind, at in (("inserts", 1), ("updates", 2)):
        steps.extend((i, kind, at) for i in range(len(batch)))
    parts: List[List[TableChanges]] = []
    current: Dict[int, TableChanges] = {}
    filled = 0
    for i, kind, at in steps:
        tc = batch[i]
        nd, ni = len(tc.deletes), len(tc.inserts)
        offset = (0, nd, nd + ni)[at]
        for j, row in enumerate(getattr(tc, kind)):
            part = current.get(i)
            if part is None:
                part = current[i] = TableChanges(tc.table, tc.columns, tc.key_columns)
            getattr(part, kind).append(row)
            part.transactions.append(tc.transactions[offset + j])
            filled += 1
            if filled == size:
                parts.append([current[k] for k in sorted(current)])
                current, filled = {}, 0
    if current:
        parts.append([current[k] for k in sorted(current)])
    return parts


def _key(c: Conflict) -> tuple:
    return tuple(c.key.values())


def _standalone_keys(tc: TableChanges) -> List[tuple]:
    """The keys of tc's changes that stand alone (transaction 0)."""
    at = [tc.columns.index(k) for k in tc.key_columns]
    rows = ([tuple(r) for r in tc.deletes]
            + [tuple(r[i] for i in at) for r in (*tc.inserts, *tc.updates)])
    return [k for k, t in zip(rows, tc.transactions) if t == 0]


def in_the_inbox(conflicts: Sequence[Conflict]) -> List[Conflict]:
    """The conflicts of an upload result that go to the client's inbox: the
    deferred ones, and with them every other conflict of a client
    transaction one of whose changes was deferred. The hub defers the changes
    it left out with their transaction, but the conflict that failed the
    transaction may be one the resolver settled (a ClientUpdateServerDelete,
    server wins): without it in the inbox, resolve_transaction(t, "client")
    would write the rest of the transaction without it (a child without its
    parent). Marked deferred, so the statistics count them."""
    waiting = {c.transaction for c in conflicts if c.deferred and c.transaction is not None}
    out = []
    for c in conflicts:
        if not c.deferred and c.transaction is not None and c.transaction in waiting:
            c.deferred = True
        if c.deferred:
            out.append(c)
    return out


def retriable(conflicts: Sequence[Conflict]) -> Tuple[Set[int], Set[Tuple[str, tuple]]]:
    """What of an upload result is worth sending again once later changes
    are in: the client transactions that failed only on store errors the hub
    deferred (every change of it an ErrorsOccurred conflict kept for the
    inbox), and the changes standing alone (rows that predate tracking,
    transaction 0) that did, as (table lower-cased, key). A conflict the
    resolver decided, or a handler's choice, is final."""
    final: Set[int] = set()
    seen: Set[int] = set()
    alone: Set[Tuple[str, tuple]] = set()
    for c in conflicts:
        if c.transaction is None:
            if c.type is ConflictType.ERRORS_OCCURRED and c.deferred \
                    and c.client_row is not None:
                alone.add((c.table.lower(), _key(c)))
            continue
        seen.add(c.transaction)
        if c.type is not ConflictType.ERRORS_OCCURRED or not c.deferred:
            final.add(c.transaction)
    return seen - final, alone


def take_transactions(part: Sequence[TableChanges], txns: Set[int],
                      alone: Set[Tuple[str, tuple]] = frozenset()) -> List[TableChanges]:
    """The changes of `part` that belong to the client transactions `txns`,
    and those standing alone (transaction 0) whose (table, key) is in
    `alone`."""
    if not txns and not alone:
        return []
    out = []
    for tc in part:
        if not tc.transactions:
            continue
        kept = TableChanges(tc.table, tc.columns, tc.key_columns)
        given = iter(tc.transactions)
        at = [tc.columns.index(k) for k in tc.key_columns]
        name = tc.table.lower()
        for kind in ("deletes", "inserts", "updates"):
            for row in getattr(tc, kind):
                txn = next(given)
                key = tuple(row) if kind == "deletes" else tuple(row[i] for i in at)
                if txn in txns or (txn == 0 and (name, key) in alone):
                    getattr(kept, kind).append(row)
                    kept.transactions.append(txn)
        if len(kept):
            out.append(kept)
    return out


def merge_changes(parts: Sequence[TableChanges], order: Sequence[str]) -> List[TableChanges]:
    """Changes taken from several batches (take_transactions(): each with
    its transactions) as one TableChanges per table, each kind's changes in
    the order given; tables in `order` (lower-case names)."""
    merged: Dict[str, TableChanges] = {}
    for tc in parts:
        have = merged.get(tc.table.lower())
        if have is None:
            have = merged[tc.table.lower()] = TableChanges(tc.table, tc.columns,
                                                           tc.key_columns)
        if tuple(tc.columns) != tuple(have.columns):
            raise SyncError(f'sqlite-ct sync: table "{tc.table}" changed its columns during '
                            f"the upload")
    out = []
    for name in sorted(merged, key=lambda n: order.index(n) if n in order else len(order)):
        tc = merged[name]
        for kind, at in (("deletes", 0), ("inserts", 1), ("updates", 2)):
            for part in parts:
                if part.table.lower() != name:
                    continue
                nd, ni = len(part.deletes), len(part.inserts)
                start = (0, nd, nd + ni)[at]
                rows = getattr(part, kind)
                getattr(tc, kind).extend(rows)
                tc.transactions.extend(part.transactions[start:start + len(rows)])
        out.append(tc)
    return out


def without_keys(tc: TableChanges, carried: Sequence[TableChanges]) -> TableChanges:
    """The corrections `tc` without the keys of changes sent again
    (`carried`): their answer comes with the batches sent after the last."""
    keys = set()
    for c in carried:
        if c.table.lower() != tc.table.lower():
            continue
        at = [c.columns.index(k) for k in c.key_columns]
        keys.update(tuple(k) for k in c.deletes)
        keys.update(tuple(r[i] for i in at) for r in (*c.inserts, *c.updates))
    if not keys:
        return tc
    at = [tc.columns.index(k) for k in tc.key_columns]
    return TableChanges(tc.table, tc.columns, tc.key_columns,
                        deletes=[k for k in tc.deletes if tuple(k) not in keys],
                        inserts=[r for r in tc.inserts if tuple(r[i] for i in at) not in keys],
                        updates=[r for r in tc.updates if tuple(r[i] for i in at) not in keys],
                        reset=tc.reset)
