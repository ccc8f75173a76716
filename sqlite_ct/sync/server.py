"""The server side: the interface the agent talks to, and ServerSyncProvider,
its implementation over a SQLite hub database.

The interface is four calls with plain-value messages (messages.py), so an
HTTP transport or another hub database can implement it without any change
to the client or the agent.

ServerSyncProvider tracks the hub's tables with the same extension, so direct
writes on the hub are tracked too. It applies each client's upload with the
client's id as tracking context (not in apply mode: other clients must get
those changes), which is what lets it
- leave a client's own uploads out of its downloads (no echo), and
- tell a real conflict from a row whose newer version is this client's own
  earlier upload (the row's __sysTrackingContext is the client's id).
A hub row conflicts with an uploaded change when it was changed by someone
else after what the client has received: its stamp is above the client's
received anchor, or above the position a batched download stopped at.
"""
from __future__ import annotations

import abc
import contextlib
import uuid
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

from .. import _conn
from ..tracking import create_schema as track_table
from ..tracking import is_tracked, set_tracking_context, tracking_context
from . import _sql
from ._anchor import HubAnchor, HubGuard, hub_secret
from ._apply import CDSU, CISI, CUSD, CUSU, Applier, Handler, Side, Staged
from ._download import read_batch, record_upload, row_filter, seen_condition
from ._sql import TableInfo, q
from .enums import ConflictType, ResolveAction, SyncStage
from .errors import ReplicaCopied
from .messages import (DownloadBatch, DownloadRequest, ServerInfo, TableChanges, Upload,
                       UploadResult)
from .model import ColumnSchema, Conflict, ConflictResolver, Row, SyncSchema, TableSchema

__all__ = ["ServerProvider", "ServerSyncProvider"]

# The fingerprint of an anchor that has never downloaded (upload-only tables):
# it matches no filter, so a first download from it re-reads the whole table.
_UNSCOPED = b"\xff" * 8


class ServerProvider(abc.ABC):
    """What SyncAgent needs from a server. Implementations keep their own
    anchor format: clients store received anchors verbatim."""

    @abc.abstractmethod
    def get_server_info(self) -> ServerInfo:
        """The server's identity."""

    @abc.abstractmethod
    def get_schema(self, tables: Sequence[str]) -> SyncSchema:
        """Describe `tables` for a client's first synchronisation (and make
        them ready to serve)."""

    @abc.abstractmethod
    def apply_changes(self, upload: Upload) -> UploadResult:
        """Apply a group's client changes in one transaction."""

    @abc.abstractmethod
    def get_changes(self, request: DownloadRequest) -> DownloadBatch:
        """The next download batch for a client."""

    def claim_replica(self, client_id: uuid.UUID, generation: Optional[bytes],
                      next_generation: bytes) -> None:
        """Called before each session: the client database holding
        `generation` (None the first time) moves to `next_generation`.
        Generations are 24 bytes: a big-endian 8-byte counter, then random
        bytes. A server that tracks replicas raises ReplicaCopied when the
        client id's current generation is another one with a counter not
        below the client's (a copied or restored database); a retry of an
        accepted claim is accepted. The default tracks nothing."""


class _ServerSide(Side):
    stage = SyncStage.UPLOADING_CHANGES
    where = "server"
    incoming_wins = ResolveAction.CLIENT_WINS

    def __init__(self, conn: Any, resolver: ConflictResolver, handler: Optional[Handler],
                 infos: _sql.TableInfoCache, client: uuid.UUID,
                 anchors: Mapping[str, Optional[HubAnchor]],
                 filters: Optional[Mapping[str, Optional[str]]] = None,
                 parameters: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(conn, resolver, handler, infos)
        self.client = client
        self.anchors = anchors
        self.filters = filters or {}
        self.parameters = parameters or {}
        self.corrections: Dict[str, TableChanges] = {}

    def _present(self, info: TableInfo) -> str:
        return f"t.{q(info.key[0] if info.without_rowid else info.rowid)} IS NOT NULL"

    def detect_sql(self, st: Staged, extra: str):
        info = st.info
        seen, params = seen_condition(info, self.anchors.get(info.name.lower()), "t")
        present = self._present(info)
        sql = (f"SELECT s._seq, CASE WHEN {present} THEN (CASE s._op WHEN 0 THEN {CDSU} "
               f"WHEN 1 THEN {CISI} ELSE {CUSU} END) ELSE {CUSD} END "
               f"FROM {st.stage} AS s LEFT JOIN main.{q(info.name)} AS t "
               f"ON {info.key_match('t', st.skey())} "
               f'WHERE (({present} AND t."__sysTrackingContext" IS NOT :sq_x AND NOT ({seen})) '
               f"OR (NOT {present} AND s._op = 2))")
        if extra:
            sql += f" AND ({extra})"
        return sql, {**params, "sq_x": self.client.bytes_le}

    def conflict(self, ctype: ConflictType, st: Staged, key: Row, incoming: Optional[Row],
                 local: Optional[Row], error: Optional[str]) -> Conflict:
        return Conflict(ctype, self.stage, st.info.name, key, incoming, local, error)

    def incoming_row(self, conflict: Conflict) -> Optional[Row]:
        return conflict.client_row

    @contextlib.contextmanager
    def writing(self, merged: bool) -> Iterator[None]:
        # A row the resolution changed is not what the client has: written
        # without the client's context, it is downloaded back to the client.
        if not merged:
            yield
            return
        set_tracking_context(self.conn, None)
        try:
            yield
        finally:
            set_tracking_context(self.conn, self.client)

    def finish(self, staged: Sequence[Staged]) -> None:
        """Hand the hub's own changes made during the upload to the uploader.

        The upload runs with the client's id as tracking context, so whatever
        the hub's triggers, ON DELETE CASCADE / SET NULL actions and column
        affinities changed carries that id too, and downloads would leave it
        out for the one client that never had it. Every row and tombstone of
        this transaction that carries the client's id but is not exactly
        what the client sent is written again under no context (a no-op
        UPDATE re-stamps a row; a tombstone's context is cleared): the client
        downloads the hub's version with the same sync. One set-based
        statement per table and kind, joined with the staging tables."""
        conn = self.conn
        bsn = _sql.value(conn, "SELECT sqlite_ct_current_bsn()")
        if bsn is None:
            return
        by_table = {st.info.name.lower(): st for st in staged}
        x = self.client.bytes_le
        set_tracking_context(conn, None)
        try:
            for (name,) in list(_sql.rows(conn, "SELECT __sysTName FROM __sysOCSTrackedObjects")):
                info = self.infos.get(conn, name)
                _release(conn, info, by_table.get(info.name.lower()), bsn, x)
        finally:
            set_tracking_context(conn, self.client)

    def skipped(self, st: Staged, op: int, key: Row, result: Any) -> None:
        """The hub kept its version. The client gets it with its next download
        if the row is unseen, someone else's and in the client's scope;
        otherwise send it back now, as a delete when it is out of scope (a
        download sends no move-out for a row others inserted since the
        client's last download: the client's losing insert would stay)."""
        info = st.info
        seen, params = seen_condition(info, self.anchors.get(info.name.lower()), "t")
        flt = row_filter(info.name, self.filters.get(info.name.lower()), self.parameters)
        cols = ", ".join(f"t.{q(c)}" for c in info.columns)
        marks = [f":sqlite_ct_k{i}" for i in range(len(info.key))]
        params.update({f"sqlite_ct_k{i}": key[st.columns[p]]
                       for i, p in enumerate(st.key_pos)},
                      sqlite_ct_x=self.client.bytes_le, **flt.params)
        tc = self.corrections.setdefault(info.name, TableChanges(info.name, info.columns,
                                                                 info.key))
        for row in _sql.rows(self.conn,
                              f'SELECT {cols}, t."__sysTrackingContext" IS :sqlite_ct_x, '
                              f"{seen}, {flt.match} FROM main.{q(info.name)} AS t "
                              f"WHERE {info.key_match('t', marks)}", params):
            if not row[-1]:
                break
            if row[-3] or row[-2]:
                tc.updates.append(tuple(row[:-3]))
            return
        tc.deletes.append(tuple(key[st.columns[p]] for p in st.key_pos))


class ServerSyncProvider(ServerProvider):
    """A SQLite hub database as the server of hub-and-spoke synchronisation.

    `filters` maps a table to a row filter: an SQL expression over the table's
    columns with named parameters (``"owner = :user"``) that each client binds
    through SyncAgent(parameters=...). A row that leaves a client's filter is
    deleted on that client; when a client's parameters change, its next
    download re-reads the table and moves out what no longer matches.

    The default conflict resolver lets the server win."""

    def __init__(self, conn: Any, *, conflict_resolver: Optional[ConflictResolver] = None,
                 on_apply_change_failed: Optional[Handler] = None,
                 filters: Optional[Mapping[str, str]] = None) -> None:
        _conn.require_loaded(conn)
        self.conn = conn
        self.conflict_resolver = conflict_resolver or ConflictResolver()
        self.on_apply_change_failed = on_apply_change_failed
        self._filters: Dict[str, Optional[str]] = {}
        for table, where in (filters or {}).items():
            self.set_filter(table, where)
        self._server_id: Optional[uuid.UUID] = None
        self._guard: Optional[HubGuard] = None
        self._infos = _sql.TableInfoCache()

    @property
    def server_id(self) -> uuid.UUID:
        """The hub database's id (its __sysSyncSubscriptions row), which every
        anchor it issues carries."""
        if self._server_id is None:
            self._server_id = _sql.database_id(self.conn)
        return self._server_id

    @property
    def guard(self) -> HubGuard:
        """Issues and checks this hub's anchors (see _anchor.py)."""
        if self._guard is None:
            self._guard = HubGuard(self.conn, self.server_id.bytes, hub_secret(self.conn))
        return self._guard

    def set_filter(self, table: str, where: Optional[str]) -> None:
        """Filter the rows of `table` sent to each client (None: no filter)."""
        self._filters[table.lower()] = where or None

    def provision(self, *tables: str) -> None:
        """Track `tables` on the hub (idempotent). get_schema() and
        apply_changes() provision the tables they are asked about."""
        with _sql.transaction(self.conn, "sqlite_ct_sync_provision"):
            for table in tables:
                info = self._infos.get(self.conn, table)
                if not is_tracked(self.conn, info.name):
                    track_table(self.conn, info.name)

    def get_server_info(self) -> ServerInfo:
        return ServerInfo(self.server_id)

    def get_schema(self, tables: Sequence[str]) -> SyncSchema:
        self.provision(*tables)
        result: Dict[str, TableSchema] = {}
        initial: Dict[str, bytes] = {}
        current: Dict[str, bytes] = {}
        guard = self.guard
        server = guard.server
        with _conn.savepoint(self.conn, "sqlite_ct_sync_schema"):
            now = int(_sql.value(self.conn, "SELECT sqlite_ct_last_committed_csn()"))
            for table in tables:
                info = self._infos.get(self.conn, table)
                result[table] = self._table_schema(info)
                initial[table] = guard.encode(HubAnchor(server, b"\0" * 8, 0), table)
                current[table] = guard.encode(HubAnchor(server, _UNSCOPED, now), table)
        return SyncSchema(result, initial, current)

    def _table_schema(self, info: TableInfo) -> TableSchema:
        wanted = set(info.columns)
        columns = tuple(
            ColumnSchema(name, ctype or "", bool(notnull), default)
            for name, ctype, notnull, default in _sql.rows(
                self.conn, "SELECT name, type, \"notnull\", dflt_value FROM pragma_table_xinfo(?) "
                           "ORDER BY cid", (info.name,))
            if name in wanted)
        return TableSchema(info.name, columns, info.key, info.without_rowid)

    def apply_changes(self, upload: Upload) -> UploadResult:
        conn = self.conn
        guard = self.guard
        anchors: Dict[str, Optional[HubAnchor]] = {}
        with _conn.savepoint(conn, "sqlite_ct_sync_anchors"):
            for table, blob in upload.received_anchors.items():
                # After a hub restore an upload still goes through: only
                # what the client saw of the shared history counts as seen.
                anchors[table.lower()] = (guard.decode(blob, table, common_history=True)
                                          if blob else None)
        side = _ServerSide(conn, self.conflict_resolver, self.on_apply_change_failed,
                           self._infos, upload.client_id, anchors, self._filters,
                           upload.parameters)
        with _sql.transaction(conn, "sqlite_ct_sync_upload"):
            for tc in upload.tables:
                info = self._infos.get(conn, tc.table)
                if not info.tracked:
                    track_table(conn, info.name)
            previous = tracking_context(conn)
            set_tracking_context(conn, upload.client_id)
            try:
                result = Applier(side).apply(upload.tables)
            finally:
                set_tracking_context(conn, previous)
            _hub_time_floor(conn)
            bsn = _sql.value(conn, "SELECT sqlite_ct_current_bsn()")
            if bsn is not None:
                for tc in upload.tables:
                    if len(tc):
                        info = self._infos.get(conn, tc.table)
                        anchor = anchors.get(info.name.lower())
                        record_upload(conn, upload.client_id.bytes_le, info.name, int(bsn),
                                      anchor.complete if anchor else 0)
        corrections = [tc for tc in side.corrections.values() if len(tc)]
        return UploadResult(result.applied, result.failed, result.conflicts, corrections)

    def claim_replica(self, client_id: uuid.UUID, generation: Optional[bytes],
                      next_generation: bytes) -> None:
        """Replica generations per client id live in the hub's
        __sysSyncClients (Generation: the current one; Previous: the one it
        replaced, so that a client that died before storing its new
        generation can claim it again)."""
        cid = client_id.bytes_le
        with _sql.transaction(self.conn, "sqlite_ct_sync_replica"):
            _sql.execute(self.conn, "CREATE TABLE IF NOT EXISTS main.__sysSyncClients("
                                    "ClientId BLOB PRIMARY KEY NOT NULL, Generation BLOB NOT NULL, "
                                    "Previous BLOB, LastSeen INTEGER NOT NULL)")
            row = next(iter(_sql.rows(self.conn, "SELECT Generation, Previous FROM "
                                                 "__sysSyncClients WHERE ClientId = ?", (cid,))),
                       None)
            if row is not None:
                current, previous = bytes(row[0]), None if row[1] is None else bytes(row[1])
                if current == next_generation and previous == generation:
                    return  # the same claim again
                # Generations count up (8-byte big-endian prefix): a hub
                # behind the client was restored from a backup (its anchors
                # tell the client to reinitialise), a client behind the hub,
                # or beside it, is a copy or restored.
                if current != generation and (generation is None
                                              or current[:8] >= generation[:8]):
                    raise ReplicaCopied(
                        f"sqlite-ct sync: client {client_id} was last synchronised from a later "
                        f"state of its database: this database is a copy of another client "
                        f"database, or was restored from a backup; call SyncAgent.reidentify() "
                        f"to give it its own client id and reinitialise its tables")
            _sql.execute(self.conn, "INSERT INTO __sysSyncClients(ClientId, Generation, Previous, "
                                    "LastSeen) VALUES (?, ?, ?, sqlite_ct_now()) "
                                    "ON CONFLICT(ClientId) DO UPDATE SET Generation = "
                                    "excluded.Generation, Previous = excluded.Previous, "
                                    "LastSeen = excluded.LastSeen",
                         (cid, next_generation, generation))

    def get_changes(self, request: DownloadRequest) -> DownloadBatch:
        return read_batch(self.conn, self.guard, request, self._filters, self._infos)


def _hub_time_floor(conn: Any) -> None:
    """Give the upload's tombstones a time no earlier than the hub's newest
    earlier commit. An embedded hub writes them with the clock of the process
    that syncs, and a client whose clock is months behind would otherwise leave
    tombstones that a routine purge by age (purge_tombstones(older_than_days=))
    removes at once, forcing every other client to reinitialise. The hub's
    commit log is the hub's clock: times only move forward in it."""
    bsn = _sql.value(conn, "SELECT sqlite_ct_current_bsn()")
    if bsn is None:
        return
    floor = _sql.value(conn, "SELECT coalesce(max(__sysCommitTime), 0) "
                             "FROM __sysTxCommitSequence WHERE __sysTxCsn < ?", (bsn,))
    # Per table: the tombstones' primary key starts with the table name.
    _sql.executemany(conn, "UPDATE __sysOCSDeletedRows SET __sysDeletedTime = ? "
                           "WHERE __sysTName = ? AND __sysDeleteTxBsn = ? "
                           "AND __sysDeletedTime < ?",
                     [(floor, name, bsn, floor) for (name,) in list(_sql.rows(
                         conn, "SELECT __sysTName FROM __sysOCSTrackedObjects"))])


def _release(conn: Any, info: TableInfo, st: Optional[Staged], bsn: int, x: bytes) -> None:
    """_ServerSide.finish() for one table (`st`: its staged upload, if any)."""
    t = q(info.name)
    cursor = ", ".join(q(c) for c in info.cursor)
    sent_rows = sent_keys = ""
    if st is not None:
        same = " AND ".join(f"u.{q(c)} IS {st.scol(i)} AND typeof(u.{q(c)}) = typeof({st.scol(i)})"
                            for i, c in enumerate(st.columns))
        inner = ", ".join(f"u.{q(c)}" for c in info.cursor)
        sent_rows = (f" AND ({cursor}) NOT IN (SELECT {inner} FROM {st.stage} AS s "
                     f"JOIN main.{t} AS u ON {info.key_match('u', st.skey())} "
                     f"WHERE s._op > 0 AND {same})")
        sent_keys = (f" AND __sysRK NOT IN (SELECT sqlite_ct_pack_key({', '.join(st.skey())}) "
                     f"FROM {st.stage} AS s WHERE s._op = 0)")
    first = q(info.columns[0])
    _sql.execute(conn, f"UPDATE main.{t} SET {first} = {first} "
                       f'WHERE "__sysChangeTxBsn" = :b AND "__sysTrackingContext" IS :x'
                       + sent_rows, {"b": bsn, "x": x})
    _sql.execute(conn, "UPDATE __sysOCSDeletedRows SET __sysTrackingContext = NULL "
                       "WHERE __sysTName = :t AND __sysDeleteTxBsn = :b "
                       "AND __sysTrackingContext IS :x" + sent_keys,
                 {"t": info.name, "b": bsn, "x": x})
