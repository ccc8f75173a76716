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

Scopes hold on upload too: with a row filter bound by the upload's
parameters, a change to a key whose hub row is outside the filter, or whose
new version would be, is refused (an ErrorsOccurred conflict that names the
scope, counted as failed, never applied); the client is sent the hub's
in-scope version back, or a delete of a key it may not hold.

Deletes reach only the clients that may hold the row. For a filtered table
the hub remembers, per client, the keys it sent the client or the client
wrote itself (__sysSyncClientKeys, a superset of what the client holds), from
the client's first download of the table on; a tombstone or a move-out of a
key the client never held is not sent, so other users' keys do not leave the
hub. A client without that record is told to reinitialise; a key leaves the
record once every state of the client database the hub would still accept
has applied its delete (see _held.py).

Uploads are exactly-once: an upload with a session is applied in one hub
transaction together with its receipt in __sysSyncUploadReceipts (client,
session, batch, a digest of the changes, the result). The same upload again,
after a lost response, returns the stored result and applies nothing. Only
the client's latest session is kept.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import itertools
import time
import uuid
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from .. import _conn
from ..replica import floor_tombstone_times, release_context
from ..tracking import create_schema as track_table
from ..tracking import (is_tracked, row_stamps, set_tracking_context, tracked_tables,
                        tracking_context)
from . import _sql
from . import _held
from ._anchor import HubAnchor, HubGuard, hub_secret
from ._apply import (CDSU, CISI, CUSD, CUSU, Applier, ApplyResult, Handler, Side, Staged,
                     apply_atomic)
from ._download import read_batch, record_upload, row_filter, seen_condition
from ._sql import TableInfo, q
from .enums import ApplyAction, ConflictType, ResolveAction, SyncStage
from .errors import ReinitialiseRequired, ReplicaCopied, SyncError
from .messages import (DownloadBatch, DownloadRequest, DownloadTable, ServerInfo, TableChanges,
                       Upload, UploadResult)
from .model import ColumnSchema, Conflict, ConflictResolver, Row, SyncSchema, TableSchema

__all__ = ["ServerProvider", "ServerSyncProvider"]

# The fingerprint of an anchor that has never downloaded (upload-only tables):
# it matches no filter, so a first download from it re-reads the whole table.
_UNSCOPED = b"\xff" * 8

RECEIPTS = "__sysSyncUploadReceipts"
_RECEIPTS_SQL = (f'CREATE TABLE IF NOT EXISTS main."{RECEIPTS}"(ClientId BLOB NOT NULL, '
                 f"Session BLOB NOT NULL, Batch INTEGER NOT NULL, Digest BLOB NOT NULL, "
                 f"Result TEXT NOT NULL, Time INTEGER NOT NULL, "
                 f"PRIMARY KEY(ClientId, Session, Batch)) WITHOUT ROWID")
_scope_ids = itertools.count(1)



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

    def describe_schema(self, tables: Sequence[str]) -> Optional[SyncSchema]:
        """get_schema() for a client's later syncs, which compare their tables
        with it so that columns added on the hub reach them. A hub that serves
        only provisioned tables provisions nothing here (the PostgreSQL hub:
        SyncError for a table that is not). None: this server cannot say (the
        client's tables are then not compared)."""
        return None

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
        self.refused = 0
        self.refused_conflicts: List[Conflict] = []
        self.own_conflicts: List[Conflict] = []     # refused own deletes (not counted)
        self._refused_rows: List[Tuple[TableInfo, tuple, Any]] = []

    def refuse(self, info: TableInfo, columns: Sequence[str], key_pos: Sequence[int], op: int,
               values: tuple, present: bool, old_in_scope: bool, flt: Any,
               transaction: Optional[int] = None) -> None:
        """A change outside the uploader's scope: never applied (see
        send_back_refused for what the client gets)."""
        key = {columns[p]: values[p] for p in key_pos}
        why = ("the hub's row is outside this client's filter" if present and not old_in_scope
               else "the new version is outside this client's filter")
        self.refused += 1
        self.refused_conflicts.append(Conflict(
            ConflictType.ERRORS_OCCURRED, self.stage, info.name, key,
            None if op == 0 else dict(zip(columns, values)), None,
            f"refused: {why}; a client writes only rows in its scope",
            action=ApplyAction.CONTINUE, transaction=transaction,
            # With the rest of its client transaction in the inbox, so the
            # whole transaction is seen and settled together.
            deferred=transaction is not None))
        if op != 0:
            self._refused_rows.append((info, tuple(values[p] for p in key_pos), flt))

    def send_back_refused(self) -> None:
        """After the upload was applied: for each refused insert or update,
        the hub's row as it is now if the client may see it, else a delete of
        the key (the client must not keep a row the hub does not give it)."""
        for info, keyvals, flt in self._refused_rows:
            tc = self.corrections.setdefault(info.name, TableChanges(info.name, info.columns,
                                                                     info.key))
            cols = ", ".join(q(c) for c in info.columns)
            marks = [f":sqlite_ct_k{i}" for i in range(len(info.key))]
            params = {**flt.params, **{f"sqlite_ct_k{i}": v for i, v in enumerate(keyvals)}}
            for row in _sql.rows(self.conn, f"SELECT {cols} FROM main.{q(info.name)} "
                                             f"WHERE {info.key_match('', marks)} "
                                             f"AND {flt.match}", params):
                tc.updates.append(tuple(row))
                break
            else:
                tc.deletes.append(keyvals)

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
               f"WHERE (({present} AND {row_stamps('t').context} IS NOT :sq_x "
               f"AND NOT ({seen})) "
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
            for name in tracked_tables(conn):
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
                              f"SELECT {cols}, {row_stamps('t').context} IS :sqlite_ct_x, "
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
        return self.describe_schema(tables)

    def describe_schema(self, tables: Sequence[str]) -> SyncSchema:
        # This hub tracks tables on demand, as apply_changes() does (tracking
        # a table again expires older anchors); the write lock is taken only
        # then, not on every sync.
        if not all(self._infos.get(self.conn, t).tracked for t in tables):
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
        for tc in upload.tables:
            if tc.reset:
                # reset means "delete every row first": a download's snapshot
                # semantics, never a client's to ask of the hub.
                raise SyncError(f'sqlite-ct sync: the upload of table "{tc.table}" asks to '
                                f"reset the hub table; uploads cannot reset tables")
        guard = self.guard
        anchors: Dict[str, Optional[HubAnchor]] = {}
        with _conn.savepoint(conn, "sqlite_ct_sync_anchors"):
            for table, blob in upload.received_anchors.items():
                # After a hub restore an upload still goes through: only
                # what the client saw of the shared history counts as seen.
                anchors[table.lower()] = (guard.decode(blob, table, common_history=True)
                                          if blob else None)
        digest = None if upload.session is None else _digest(upload)
        with _sql.transaction(conn, "sqlite_ct_sync_upload"):
            if digest is not None:
                stored = self._receipt(upload, digest)
                if stored is not None:
                    return stored

            def attempt(excluded: Dict[int, Conflict]
                        ) -> Tuple[Tuple[_ServerSide, List[TableChanges], ApplyResult],
                                   Dict[int, Conflict]]:
                side = _ServerSide(conn, self.conflict_resolver, self.on_apply_change_failed,
                                   self._infos, upload.client_id, anchors, self._filters,
                                   upload.parameters)
                tables = []
                for tc in upload.tables:
                    info = self._infos.get(conn, tc.table)
                    if not info.tracked:
                        track_table(conn, info.name)
                    tables.append(self._in_scope(info, tc, upload.parameters, side))
                previous = tracking_context(conn)
                set_tracking_context(conn, upload.client_id)
                applier = Applier(side, excluded)
                try:
                    for tc in upload.tables:
                        if tc.own_deletes:
                            self._delete_own(upload.client_id, tc, side, upload.parameters)
                    result = applier.apply(tables)
                finally:
                    set_tracking_context(conn, previous)
                failed = {c.transaction: c for c in side.refused_conflicts
                          if c.transaction is not None}
                failed.update(applier.failed_transactions)
                return (side, tables, result), failed

            # A client transaction is applied whole or not at all.
            side, tables, result = apply_atomic(lambda: _sql.savepoint(conn), attempt)
            side.send_back_refused()
            _hub_time_floor(conn)
            bsn = _sql.value(conn, "SELECT sqlite_ct_current_bsn()")
            if bsn is not None:
                for tc in tables:
                    if len(tc):
                        info = self._infos.get(conn, tc.table)
                        anchor = anchors.get(info.name.lower())
                        record_upload(conn, upload.client_id.bytes_le, info.name, int(bsn),
                                      anchor.complete if anchor else 0)
            corrections = [tc for tc in side.corrections.values() if len(tc)]
            upto = int(bsn if bsn is not None
                       else _sql.value(conn, "SELECT sqlite_ct_last_committed_csn()"))
            self._hold_uploaded(upload.client_id, tables, upto)
            self._hold_sent(upload.client_id, corrections, upto)
            out = UploadResult(result.applied, result.failed + side.refused,
                               side.refused_conflicts + result.conflicts + side.own_conflicts,
                               corrections)
            if digest is not None:
                self._store_receipt(upload, digest, out)
        return out

    def _receipt(self, upload: Upload, digest: bytes) -> Optional[UploadResult]:
        from . import wire
        _sql.execute(self.conn, _RECEIPTS_SQL)
        for stored_digest, result in _sql.rows(
                self.conn, f'SELECT Digest, Result FROM main."{RECEIPTS}" WHERE ClientId = ? '
                           f"AND Session = ? AND Batch = ?",
                (upload.client_id.bytes, upload.session, upload.batch)):
            if bytes(stored_digest) == digest:
                return wire.decode(result, UploadResult)
        return None

    def _store_receipt(self, upload: Upload, digest: bytes, result: UploadResult) -> None:
        from . import wire
        client = upload.client_id.bytes
        _sql.execute(self.conn, f'DELETE FROM main."{RECEIPTS}" WHERE ClientId = ? '
                                f"AND Session <> ?", (client, upload.session))
        _sql.execute(self.conn, f'INSERT OR REPLACE INTO main."{RECEIPTS}"(ClientId, Session, '
                                f"Batch, Digest, Result, Time) VALUES (?, ?, ?, ?, ?, ?)",
                     (client, upload.session, upload.batch, digest,
                      wire.encode(result).decode("ascii"), int(time.time() * 1000)))

    def _delete_own(self, client: uuid.UUID, tc: TableChanges, side: "_ServerSide",
                    parameters: Mapping[str, Any]) -> None:
        """TableChanges.own_deletes: each key the client inserted and deleted
        again since its last upload is deleted where the hub's row is the
        client's own latest write (it came from an upload the client has
        since lost) and inside the client's scope; any other row is left
        alone. Under the client's tracking context, so the delete reaches
        every other client. A delete the hub's constraints refuse (a row
        others refer to) leaves the row: the client gets it back (a
        correction) and a deferred ErrorsOccurred conflict says why (not
        counted among the uploaded changes: an own delete is none)."""
        info = self._infos.get(self.conn, tc.table)
        _sql.check_columns(info, tc.columns, tc.key_columns, "server")
        flt = row_filter(info.name, self._filters.get(info.name.lower()), parameters)
        marks = [f":sqlite_ct_k{i}" for i in range(len(info.key))]
        where = (f'{info.key_match("", marks)} AND {row_stamps("").context} IS :sqlite_ct_x '
                 f"AND {flt.match}")
        for key in tc.own_deletes:
            params = {"sqlite_ct_x": client.bytes_le, **flt.params,
                      **{f"sqlite_ct_k{i}": v for i, v in enumerate(key)}}
            try:
                with _sql.savepoint(self.conn):
                    _sql.execute(self.conn, f"DELETE FROM main.{q(info.name)} WHERE {where}",
                                 params)
            except _sql.host_errors() as exc:
                if not _sql.is_row_error(exc):
                    raise
                cols = ", ".join(q(c) for c in info.columns)
                back = side.corrections.setdefault(info.name, TableChanges(
                    info.name, info.columns, info.key))
                for r in _sql.rows(self.conn, f"SELECT {cols} FROM main.{q(info.name)} "
                                              f"WHERE {where}", params):
                    back.updates.append(tuple(r))
                    side.own_conflicts.append(Conflict(
                        ConflictType.ERRORS_OCCURRED, SyncStage.UPLOADING_CHANGES, info.name,
                        dict(zip(info.key, key)), None, dict(zip(info.columns, r)),
                        f"the delete of a row this client uploaded in a session it has since "
                        f"lost was refused: {exc}", action=ApplyAction.CONTINUE,
                        deferred=True))

    def _in_scope(self, info: TableInfo, tc: TableChanges, parameters: Mapping[str, Any],
                  side: "_ServerSide") -> TableChanges:
        """tc without the changes outside the uploader's filter, which are
        recorded on `side` as refused."""
        where = self._filters.get(info.name.lower())
        if not where or not len(tc):
            return tc
        flt = row_filter(info.name, where, parameters)
        _sql.check_columns(info, tc.columns, tc.key_columns, "server")
        local = {c.lower(): c for c in info.columns}
        columns = [local[c.lower()] for c in tc.columns]
        ncol = len(columns)
        key_pos = [[c.lower() for c in columns].index(k.lower()) for k in info.key]
        stage = q(f"ct_sync_scope_{next(_scope_ids)}")
        _sql.execute(self.conn, f"CREATE TEMP TABLE {stage}(_seq INTEGER PRIMARY KEY, "
                                f"_op INTEGER NOT NULL{''.join(f', c{i}' for i in range(ncol))})")
        ops: List[Tuple[int, tuple]] = []
        for k in tc.deletes:
            values: List[Any] = [None] * ncol
            for p, v in zip(key_pos, k):
                values[p] = v
            ops.append((0, tuple(values)))
        ops.extend((1, tuple(r)) for r in tc.inserts)
        ops.extend((2, tuple(r)) for r in tc.updates)
        txns: List[Optional[int]] = ([t or None for t in tc.transactions]
                                     if len(tc.transactions) == len(ops) else [None] * len(ops))
        t = q(info.name)
        pos = {c: i for i, c in enumerate(columns)}
        # The filter's unqualified columns resolve in the derived tables: x
        # (the hub row) and the outer SELECT (the row as it would be written).
        new = ", ".join(f"s.c{pos[c]} AS {q(c)}" if c in pos else f"t.{q(c)} AS {q(c)}"
                        for c in info.columns)
        present = f"t.{q(info.key[0] if info.without_rowid else info.rowid)} IS NOT NULL"
        same_row = (" AND ".join(f"x.{q(k)} IS t.{q(k)}" for k in info.key)
                    if info.without_rowid else f"x.{q(info.rowid)} = t.{q(info.rowid)}")
        sql = (f"SELECT sqlite_ct_seq, sqlite_ct_present, sqlite_ct_old_in FROM "
               f"(SELECT s._seq AS sqlite_ct_seq, s._op AS sqlite_ct_op, "
               f"{present} AS sqlite_ct_present, (SELECT {flt.match} FROM main.{t} AS x "
               f"WHERE {same_row}) AS sqlite_ct_old_in, {new} "
               f"FROM {stage} AS s LEFT JOIN main.{t} AS t "
               f"ON {info.key_match('t', [f's.c{i}' for i in key_pos])}) "
               f"WHERE (sqlite_ct_present AND NOT sqlite_ct_old_in) "
               f"OR (sqlite_ct_op <> 0 AND NOT {flt.match})")
        try:
            _sql.executemany(self.conn, f"INSERT INTO {stage} VALUES "
                                        f"({', '.join('?' for _ in range(ncol + 2))})",
                             ((n, op, *values) for n, (op, values) in enumerate(ops)))
            refused = {seq: (bool(here), bool(old_in))
                       for seq, here, old_in in _sql.rows(self.conn, sql, flt.params)}
        finally:
            _sql.execute(self.conn, f"DROP TABLE IF EXISTS temp.{stage}")
        if not refused:
            return tc
        kept = TableChanges(tc.table, tc.columns, tc.key_columns, reset=tc.reset)
        lists = {0: kept.deletes, 1: kept.inserts, 2: kept.updates}
        for n, (op, row) in enumerate(ops):
            if n not in refused:
                lists[op].append(tuple(row[p] for p in key_pos) if op == 0 else row)
                if txns[n] is not None:
                    kept.transactions.append(txns[n])
            else:
                side.refuse(info, columns, key_pos, op, row, *refused[n], flt, txns[n])
        return kept

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
            if row is not None and check_replica_claim(
                    client_id, bytes(row[0]), None if row[1] is None else bytes(row[1]),
                    generation, next_generation):
                return  # the same claim again
            if hub_behind(None if row is None else bytes(row[0]), generation):
                _held.forget_client(self.conn, client_id)
            _sql.execute(self.conn, "INSERT INTO __sysSyncClients(ClientId, Generation, Previous, "
                                    "LastSeen) VALUES (?, ?, ?, sqlite_ct_now()) "
                                    "ON CONFLICT(ClientId) DO UPDATE SET Generation = "
                                    "excluded.Generation, Previous = excluded.Previous, "
                                    "LastSeen = excluded.LastSeen",
                         (cid, next_generation, generation))

    def get_changes(self, request: DownloadRequest) -> DownloadBatch:
        filtered = [t for t in request.tables
                    if self._filters.get(t.table.lower()) and not t.snapshot]
        # Deletes of a filtered table reach only clients that may hold the
        # key (_held.py): a client whose keys are not recorded reinitialises.
        anchors = {t.table.lower(): self._request_anchor(request.client_id, t)
                   for t in filtered}
        batch = read_batch(self.conn, self.guard, request, self._filters, self._infos)
        if not filtered:
            return batch
        with _sql.transaction(self.conn, "sqlite_ct_sync_held"):
            _held.ensure(self.conn)
            counter = _held.generation(self.conn, request.client_id)
            for t in filtered:
                complete, first = anchors[t.table.lower()]
                name = self._infos.get(self.conn, t.table).name
                if first:
                    _held.start(self.conn, request.client_id, name)
                else:
                    _held.prune(self.conn, request.client_id, name, complete, counter)
            uppers = {}
            for name, blob in batch.anchors.items():
                a = self.guard.decode(blob, name)
                uppers[name.lower()] = a.window.upper if a.window is not None else a.complete
            tables = [self._hold_batch(request.client_id, tc, uppers[tc.table.lower()])
                      if self._filtered(tc.table) else tc for tc in batch.tables]
        return dataclasses.replace(batch, tables=[tc for tc in tables if len(tc) or tc.reset])

    def forget_clients(self, *, older_than_days: float) -> int:
        """Drop the record of held keys (see get_changes) of every client
        whose latest session (its replica claim) is older than
        `older_than_days` days, by this process's clock. Such a client, if it
        comes back, is told to reinitialise its filtered tables
        (ReinitialiseRequired). Returns how many clients were forgotten."""
        if isinstance(older_than_days, bool) or not isinstance(older_than_days, (int, float)) \
                or not older_than_days >= 0:
            raise SyncError(f"sqlite-ct sync: forget_clients(): older_than_days must be a "
                            f"number >= 0, not {older_than_days!r}")
        cutoff = int(time.time() * 1000 - older_than_days * 86_400_000)
        with _sql.transaction(self.conn, "sqlite_ct_sync_forget"):
            return _held.forget_clients(self.conn, cutoff)

    def _filtered(self, table: str) -> bool:
        return bool(self._filters.get(table.lower()))

    def _request_anchor(self, client: uuid.UUID, t: DownloadTable) -> Tuple[int, bool]:
        """(complete, first) of a filtered table's download request: the hub
        CSN the client's anchor has completed, and whether the request starts
        a first download (no anchor, the initial anchor of get_schema(), or
        the anchor of a table that never downloaded). ReinitialiseRequired
        when the hub has no complete record of the client's keys."""
        decoded = self.guard.decode(t.anchor, t.table) if t.anchor else None
        first = decoded is None or (decoded.window is None and (
            decoded.complete == 0 or decoded.fingerprint == _UNSCOPED))
        name = self._infos.get(self.conn, t.table).name
        if not first and not _held.recorded(self.conn, client, name):
            raise ReinitialiseRequired(
                name, f'sqlite-ct sync: the hub has no record of which rows of filtered table '
                      f'"{name}" this client holds (its first download predates the record, '
                      f"the table was filtered later, or the hub forgot this client after a "
                      f"long absence), so it cannot tell which deletes to send; reinitialise "
                      f"the table (SyncAgent.reinitialise() or `sqlite-ct reinitialise`; it "
                      f"keeps unsent local changes)")
        return (decoded.complete if decoded is not None else 0), first

    def _hold_uploaded(self, client: uuid.UUID, tables: Sequence[TableChanges],
                       upto: int) -> None:
        """Record the keys of a filtered table's uploaded inserts and updates
        (not the refused ones) that the hub holds after the upload, as the hub
        stores them: the client holds them, its own version or, after a
        conflict the hub won, its version until a download brings the hub's.
        An uploaded delete the hub applied is a key the client no longer
        holds: it leaves the record once the client's download completes
        past this upload (`upto`). (The PostgreSQL hub does the same.)"""
        for tc in tables:
            if not self._filtered(tc.table) or not len(tc):
                continue
            _held.ensure(self.conn)
            info = self._infos.get(self.conn, tc.table)
            lower = [c.lower() for c in tc.columns]
            pos = [lower.index(k.lower()) for k in info.key]
            _held.hold_on_hub(self.conn, client, info,
                              (tuple(row[p] for p in pos)
                               for row in itertools.chain(tc.inserts, tc.updates)))
            if tc.deletes:
                marks = [f":k{i}" for i in range(len(info.key))]
                present = f"SELECT 1 FROM main.{q(info.name)} WHERE {info.key_match('', marks)}"
                _held.gone(self.conn, client, info,
                           [k for k in tc.deletes if _sql.value(
                               self.conn, present,
                               {f"k{i}": v for i, v in enumerate(k)}) is None], upto)

    def _hold_sent(self, client: uuid.UUID, tables: Sequence[TableChanges], upto: int) -> None:
        """An upload's corrections: their rows are held, their deletes gone."""
        for tc in tables:
            if self._filtered(tc.table):
                _held.ensure(self.conn)
                self._hold_batch(client, tc, upto, keep_all=True)

    def _hold_batch(self, client: uuid.UUID, tc: TableChanges, upto: int,
                    keep_all: bool = False) -> TableChanges:
        """Record what `tc` sends the client of a filtered table: its rows'
        keys are held, its deletes (only those of keys the client may hold,
        unless keep_all) are applied once the client completes up to `upto`."""
        info = self._infos.get(self.conn, tc.table)
        deletes = tc.deletes if keep_all else _held.held_deletes(self.conn, client, info,
                                                                  tc.deletes)
        _held.gone(self.conn, client, info, deletes, upto, corrected=keep_all)
        lower = [c.lower() for c in tc.columns]
        pos = [lower.index(k.lower()) for k in tc.key_columns]
        _held.hold(self.conn, client, info, (tuple(row[p] for p in pos)
                                             for row in itertools.chain(tc.inserts, tc.updates)))
        return tc if len(deletes) == len(tc.deletes) else dataclasses.replace(tc, deletes=deletes)


def _digest(upload: Upload) -> bytes:
    """What makes a retried upload the same upload: its changes, anchors and
    parameters (not the session and batch that name it)."""
    from . import wire
    return hashlib.sha256(wire.encode(dataclasses.replace(upload, session=None, batch=0))
                          ).digest()


def check_replica_claim(client_id: uuid.UUID, current: bytes, previous: Optional[bytes],
                        generation: Optional[bytes], next_generation: bytes) -> bool:
    """A hub's verdict on a replica claim (ServerProvider.claim_replica),
    given the generation it holds for the client id (`current`) and the one
    that replaced (`previous`): True for a repeat of the accepted claim,
    False for a claim to record, ReplicaCopied for a copy or a restore."""
    if current == next_generation and previous == generation:
        return True
    # Generations count up (8-byte big-endian prefix): a hub behind the
    # client was restored from a backup (its anchors tell the client to
    # reinitialise), a client behind the hub, or beside it, is a copy or
    # restored.
    if current != generation and (generation is None or current[:8] >= generation[:8]):
        raise ReplicaCopied(
            f"sqlite-ct sync: client {client_id} was last synchronised from a later "
            f"state of its database: this database is a copy of another client "
            f"database, or was restored from a backup; call SyncAgent.reidentify() "
            f"to give it its own client id and reinitialise its tables")
    return False


def hub_behind(current: Optional[bytes], generation: Optional[bytes]) -> bool:
    """Whether a replica claim from a client at `generation` shows the hub
    behind the client: the hub's record of the client (`current`, None when
    it has none) is older than what the client last claimed, so the hub was
    restored from a backup taken before some of the client's sessions. Its
    anchors catch the tracked changes those sessions made; what else the hub
    recorded for the client then (which keys of filtered tables it holds) is
    lost, and the hub forgets the rest of that record too: the client's next
    download of a filtered table asks it to reinitialise."""
    if generation is None:
        return False
    return current is None or current[:8] < generation[:8]


def _hub_time_floor(conn: Any) -> None:
    """Give the upload's tombstones a time no earlier than the hub's newest
    earlier commit. An embedded hub writes them with the clock of the process
    that syncs, and a client whose clock is months behind would otherwise leave
    tombstones that a routine purge by age (purge_tombstones(older_than_days=))
    removes at once, forcing every other client to reinitialise. The hub's
    commit log is the hub's clock: times only move forward in it."""
    floor_tombstone_times(conn)


def _release(conn: Any, info: TableInfo, st: Optional[Staged], bsn: int, x: bytes) -> None:
    """_ServerSide.finish() for one table (`st`: its staged upload, if any):
    the client keeps its context on the rows that hold exactly what it sent
    (same values, same types) and on the tombstones of the keys it deleted."""
    kept_rows: Iterable[tuple] = ()
    kept_deletes: Iterable[tuple] = ()
    if st is not None:
        same = " AND ".join(f"u.{q(c)} IS {st.scol(i)} AND typeof(u.{q(c)}) = typeof({st.scol(i)})"
                            for i, c in enumerate(st.columns))
        kept_rows = _sql.rows(conn, f"SELECT {', '.join(f'u.{q(k)}' for k in info.key)} "
                                         f"FROM {st.stage} AS s JOIN main.{q(info.name)} AS u "
                                         f"ON {info.key_match('u', st.skey())} "
                                         f"WHERE s._op > 0 AND {same}")
        kept_deletes = _sql.rows(conn, f"SELECT {', '.join(st.skey())} FROM {st.stage} "
                                       f"AS s WHERE s._op = 0")
    release_context(conn, info.name, uuid.UUID(bytes_le=x), keep_rows=kept_rows,
                    keep_deletes=kept_deletes)
