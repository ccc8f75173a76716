"""ClientSyncProvider: the SqlCeClientSyncProvider role over a SQLite database.

It creates client tables from the server's schema, reads local changes since
each table's sent anchor, and applies the server's changes without echo: they
are written in apply mode (sqlite_ct.applying_server_changes), so they carry
stamp 0 and leave no tombstones, and are never read back as local changes. A
later local edit of such a row is tracked as usual.

A server change conflicts on the client only with a *pending* local change:
a row changed, or a tombstone written, after the table's sent anchor. Upload
runs before download, so that only happens for changes made while a sync runs,
changes whose upload the server rejected, and local edits of download-only
tables. A row the client merely has (say, its own upload that another client
changed since) is overwritten without a conflict.
"""
from __future__ import annotations

import contextlib
import datetime
import heapq
import itertools
import json
import os
import struct
import time
import uuid
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple,
                    Union)

from .. import _conn
from ..anchors import (get_received_anchor, get_sent_anchor, set_client_id,
                       set_received_anchor, set_received_anchors, set_sent_anchor,
                       set_sent_anchors)
from ..changes import GroupChangeStream
from ..replica import forget_pending_deletes, reinitialise_table, stamp_applied, unreferenced
from ..retention import purge_tombstones
from ..tracking import (applying_local_changes, applying_server_changes,
                        create_schema as track_table, disable_tracking, is_tracked,
                        last_committed_csn, tracked_tables)
from . import _sql
from ._apply import CDSU, CISI, CUSD, CUSU, ApplyResult, Applier, Handler, Side, Staged
from ._sql import q
from .enums import ConflictType, ResolveAction, SyncDirection, SyncStage, TableCreationOption
from .errors import SyncError
from ..errors import AnchorError
from .messages import ClientChanges, DownloadBatch, TableChanges
from .model import (Conflict, ConflictResolver, Row, StoredConflict, SyncSchema, SyncTable,
                    TableSchema)

__all__ = ["ClientSyncProvider"]

TableLike = Union[SyncTable, str]
_INT64 = struct.Struct("<q")  # SentAnchor: 8 bytes, little-endian (reference §5.4)


def _name(table: TableLike) -> str:
    return table.name if isinstance(table, SyncTable) else table


class _ClientSide(Side):
    stage = SyncStage.DOWNLOADING_CHANGES
    where = "client"
    incoming_wins = ResolveAction.SERVER_WINS

    def __init__(self, conn: Any, resolver: ConflictResolver, handler: Optional[Handler],
                 infos: _sql.TableInfoCache, sent: Dict[str, int]) -> None:
        super().__init__(conn, resolver, handler, infos)
        self.sent = sent
        self.deferred: set = set()

    def _sent(self, st: Staged) -> int:
        return self.sent.get(st.info.name.lower(), 0)

    def detect_sql(self, st: Staged, extra: str):
        info = st.info
        if not info.tracked:
            return None  # snapshot tables: the server's copy, nothing pending
        present = f"t.{q(info.key[0] if info.without_rowid else info.rowid)} IS NOT NULL"
        # The key's local change since the sent anchor, from the core's
        # contract for one key (csrc/changes.c): 'I', 'U', 'D' or NULL.
        sql = (f"SELECT s._seq, CASE WHEN {present} THEN (CASE WHEN s._op = 0 THEN {CUSD} "
               f"WHEN s._op = 1 AND s.sqlite_ct_lc = 'I' THEN {CISI} ELSE {CUSU} END) "
               f"ELSE {CDSU} END "
               f"FROM (SELECT *, sqlite_ct_local_change(:sq_t, :sq_s, {', '.join(st.skey())}) "
               f"AS sqlite_ct_lc FROM {st.stage} AS s) AS s LEFT JOIN main.{q(info.name)} AS t "
               f"ON {info.key_match('t', st.skey())} "
               f"WHERE s.sqlite_ct_lc IS NOT NULL AND (({present} AND s.sqlite_ct_lc <> 'D') "
               f"OR (NOT {present} AND s._op > 0 AND s.sqlite_ct_lc = 'D'))")
        if extra:
            sql += f" AND ({extra})"
        return sql, {"sq_s": self._sent(st), "sq_t": info.name}

    def conflict(self, ctype: ConflictType, st: Staged, key: Row, incoming: Optional[Row],
                 local: Optional[Row], error: Optional[str]) -> Conflict:
        return Conflict(ctype, self.stage, st.info.name, key, local, incoming, error)

    def incoming_row(self, conflict: Conflict) -> Optional[Row]:
        return conflict.server_row

    @contextlib.contextmanager
    def writing(self, merged: bool) -> Iterator[None]:
        # A row the resolution changed is not the server's: written as a
        # local change (apply mode off), it is uploaded with the next sync.
        if not merged:
            yield
            return
        with applying_local_changes(self.conn):
            yield

    def force_extra(self, st: Staged, key: Row) -> None:
        # The server's version replaces the pending local change, a delete
        # included: drop the key's pending tombstones so it is not uploaded.
        if not st.info.tracked:
            return
        forget_pending_deletes(self.conn, st.info.name,
                               [key[st.columns[p]] for p in st.key_pos], after=self._sent(st))

    def defer(self, conflict: Conflict) -> None:
        store_conflicts(self.conn, [conflict])
        self.deferred.add((conflict.table.lower(), _dumps(conflict.key)))

    def finish(self, staged: Sequence[Staged]) -> None:
        # A server change of a key that applied makes an older deferred
        # download of that key stale: the inbox entry goes.
        if not _inbox_has(self.conn, SyncStage.DOWNLOADING_CHANGES):
            return
        stale = []
        for st in staged:
            for op, values in st.rows.values():
                key = _dumps(st.key_of(values))
                if (st.info.name.lower(), key) not in self.deferred:
                    stale.append((st.info.name, key))
        _sql.executemany(self.conn, f"DELETE FROM main.{_INBOX} WHERE TableName = ? "
                                    f"COLLATE NOCASE AND KeyJson = ? AND Stage = "
                                    f"'{SyncStage.DOWNLOADING_CHANGES.value}'", stale)

    def force_done(self, st: Staged, key: Row, merged: bool) -> None:
        # The server's version of an overwritten pending insert is the
        # server's row: without resetting its insert stamp, a later local
        # delete would look like an insert+delete that never reached the server.
        if st.info.tracked and not merged:
            stamp_applied(self.conn, st.info.name, [key[st.columns[p]] for p in st.key_pos])


class ClientSyncProvider:
    """The client side of synchronisation, over the caller's connection.

    conflict_resolver: per conflict type, who wins (default: the server).
    on_apply_change_failed(conflict) -> ApplyAction: called for FIRE_EVENT.
    retention_days: tombstones of synchronised tables older than this, and
      already uploaded, are purged after each sync of their group (0: never).
      Unlike SQL CE, a tombstone that was never uploaded is never purged.
    creating_schema(sync_table, table_schema) -> TableSchema or None: may
      return an edited schema before a client table is created.
    schema_created(conn, sync_table, table_schema): runs in the same
      transaction after a table was created or prepared.
    Deferred conflicts (ResolveAction.DEFER; store errors without a handler)
    are kept in the conflict inbox: conflicts(), resolve_conflict()."""

    def __init__(self, conn: Any, *, conflict_resolver: Optional[ConflictResolver] = None,
                 on_apply_change_failed: Optional[Handler] = None, retention_days: int = 10,
                 creating_schema: Optional[Callable[[SyncTable, TableSchema],
                                                    Optional[TableSchema]]] = None,
                 schema_created: Optional[Callable[[Any, SyncTable, TableSchema], None]] = None
                 ) -> None:
        _conn.require_loaded(conn)
        if isinstance(retention_days, bool) or not isinstance(retention_days, int) \
                or retention_days < 0:
            raise ValueError("retention_days must be a non-negative integer (0: never purge)")
        self.conn = conn
        self.conflict_resolver = conflict_resolver or ConflictResolver()
        self.on_apply_change_failed = on_apply_change_failed
        self.retention_days = retention_days
        self.creating_schema = creating_schema
        self.schema_created = schema_created
        self._client_id: Optional[uuid.UUID] = None
        self._infos = _sql.TableInfoCache()

    @property
    def client_id(self) -> uuid.UUID:
        """This database's id, created on first use (__sysSyncSubscriptions)."""
        if self._client_id is None:
            self._client_id = _sql.database_id(self.conn)
        return self._client_id

    # -- replica generations --------------------------------------------------
    def replica_generation(self, server_id: uuid.UUID) -> Tuple[Optional[bytes], bytes]:
        """(current, next) replica generation of this database with the server
        `server_id` (__sysSyncReplica). `next` is drawn once and kept until
        store_replica_generation() makes it current, so a session that died
        after the server accepted it claims the same one again; a copy of the
        file at rest has none and draws its own, which the server refuses."""
        sid = server_id.bytes_le
        with _sql.transaction(self.conn, "sqlite_ct_sync_replica"):
            _sql.execute(self.conn, "CREATE TABLE IF NOT EXISTS main.__sysSyncReplica("
                                    "ServerId BLOB PRIMARY KEY NOT NULL, Generation BLOB, "
                                    "Pending BLOB)")
            row = next(iter(_sql.rows(self.conn, "SELECT Generation, Pending FROM "
                                                 "__sysSyncReplica WHERE ServerId = ?", (sid,))),
                       (None, None))
            current, pending = _blob(row[0]), _blob(row[1])
            if pending is None:
                count = 0 if current is None else int.from_bytes(current[:8], "big")
                pending = (count + 1).to_bytes(8, "big") + os.urandom(16)
                _sql.execute(self.conn, "INSERT INTO __sysSyncReplica(ServerId, Generation, "
                                        "Pending) VALUES (?, ?, ?) ON CONFLICT(ServerId) DO "
                                        "UPDATE SET Pending = excluded.Pending",
                             (sid, current, pending))
        return current, pending

    def store_replica_generation(self, server_id: uuid.UUID, generation: bytes) -> None:
        """The server accepted `generation`: it is current now."""
        with _sql.transaction(self.conn, "sqlite_ct_sync_replica"):
            _sql.execute(self.conn, "UPDATE __sysSyncReplica SET Generation = ?, Pending = NULL "
                                    "WHERE ServerId = ? AND Pending IS ?",
                         (generation, server_id.bytes_le, generation))

    def reidentify(self) -> uuid.UUID:
        """Give this database a new client id and forget its replica
        generations: for a database that is a copy of another client's, or was
        restored from a backup (ReplicaCopied). Its tables then need
        reinitialising (SyncAgent.reidentify() does both). Returns the new id."""
        new = uuid.uuid4()
        with _sql.transaction(self.conn, "sqlite_ct_sync_reidentify"):
            set_client_id(self.conn, new)
            if _sql.table_exists(self.conn, "__sysSyncReplica"):
                _sql.execute(self.conn, "DELETE FROM __sysSyncReplica")
        self._client_id = new
        return new

    def in_transaction(self) -> bool:
        """Whether the connection is inside a transaction (the caller's)."""
        return _sql.in_transaction(self.conn)

    def transaction(self):
        """A write transaction (a savepoint inside the caller's)."""
        return _sql.transaction(self.conn)

    # -- anchors -----------------------------------------------------------
    def get_table_sent_anchor(self, table: str) -> Optional[int]:
        return get_sent_anchor(self.conn, table)

    def set_table_sent_anchor(self, table: str, anchor: Optional[int]) -> None:
        set_sent_anchor(self.conn, table, anchor)

    def get_table_received_anchor(self, table: str) -> Optional[bytes]:
        return get_received_anchor(self.conn, table)

    def set_table_received_anchor(self, table: str, anchor: Optional[bytes]) -> None:
        set_received_anchor(self.conn, table, anchor)

    # -- schema --------------------------------------------------------------
    def _articles(self) -> Dict[str, Tuple[Optional[bytes], Optional[bytes]]]:
        """Every table's (SentAnchor, ReceivedAnchor) blobs, by lower-case name,
        read from __sysSyncArticles in one query (the per-table getters look
        each table up through the tracking registry: too slow per batch)."""
        if not _sql.table_exists(self.conn, "__sysSyncArticles"):
            return {}
        return {name.lower(): (sent, received) for name, sent, received in _sql.rows(
            self.conn, "SELECT TableName, SentAnchor, ReceivedAnchor FROM __sysSyncArticles")}

    def received_anchors(self, tables: Sequence[TableLike]) -> Dict[str, Optional[bytes]]:
        """The received anchor of each of `tables` (None: never received)."""
        articles = self._articles()
        return {_name(t): _blob(articles.get(_name(t).lower(), (None, None))[1])
                for t in tables}

    def _sent_anchors(self, names: Sequence[str]) -> Dict[str, int]:
        articles = self._articles()
        out: Dict[str, int] = {}
        for n in names:
            blob = articles.get(n.lower(), (None, None))[0]
            if blob is None:
                out[n.lower()] = 0
            elif len(blob) == _INT64.size:
                out[n.lower()] = _INT64.unpack(blob)[0]
            else:  # let the core report the malformed anchor
                out[n.lower()] = get_sent_anchor(self.conn, n) or 0
        return out

    def _store_received(self, name: str, anchor: bytes) -> None:
        set_received_anchors(self.conn, {name: anchor})

    def _store_sent(self, name: str, anchor: int) -> None:
        set_sent_anchors(self.conn, {name: anchor})

    def tables_needing_schema(self, tables: Sequence[SyncTable]) -> List[SyncTable]:
        """Those of `tables` not yet initialised for sync on this client: missing,
        not tracked, or never given a received anchor (snapshot tables: missing)."""
        tracked = {t.lower() for t in tracked_tables(self.conn)}  # also reconciles renames
        articles = self._articles()
        out = []
        for t in tables:
            name = _sql.table_exists(self.conn, t.name)
            if name is None:
                out.append(t)
            elif t.direction is not SyncDirection.SNAPSHOT and (
                    name.lower() not in tracked
                    or articles.get(name.lower(), (None, None))[1] is None):
                out.append(t)
        return out

    def create_schemas(self, tables: Sequence[SyncTable], schema: SyncSchema) -> None:
        """create_schema() for each of `tables`, in one transaction, after
        checking, before anything is written, that none whose creation
        option drops or truncates it holds changes never uploaded: once the
        transaction has re-created one table (in apply mode for a truncate),
        the change contract refuses to read the others inside it."""
        with _sql.transaction(self.conn, "sqlite_ct_sync_schemas"):
            for t in tables:
                if t.creation_option in (TableCreationOption.DROP_EXISTING_OR_CREATE_NEW_TABLE,
                                         TableCreationOption.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE):
                    name = _sql.table_exists(self.conn, t.name)
                    if name is not None and is_tracked(self.conn, name):
                        self._refuse_unsent(name, t.creation_option)
            for t in tables:
                self._create_schema(t, schema, checked=True)

    def create_schema(self, table: SyncTable, schema: SyncSchema) -> None:
        """Prepare `table` for its first synchronisation as its creation option
        says, track it (except snapshot tables) and store its first anchors."""
        self._create_schema(table, schema, checked=False)

    def _create_schema(self, table: SyncTable, schema: SyncSchema, *, checked: bool) -> None:
        schema_table = _lookup(schema.tables, table.name)
        if schema_table is None:
            raise SyncError(f'sqlite-ct sync: the server sent no schema for table "{table.name}"')
        # The schema is a message from the server: checked before anything
        # of it reaches the application's callback or SQL.
        schema_table.validate(table.name)
        if self.creating_schema is not None:
            schema_table = self.creating_schema(table, schema_table) or schema_table
        opt = table.creation_option
        with _sql.transaction(self.conn, "sqlite_ct_sync_schema"):
            name = _sql.table_exists(self.conn, table.name)
            tracked = name is not None and is_tracked(self.conn, name)
            created = truncated = False
            if name is None:
                if opt is TableCreationOption.USE_EXISTING_TABLE_OR_FAIL:
                    raise SyncError(f'sqlite-ct sync: table "{table.name}" does not exist on the '
                                    f"client (TableCreationOption.USE_EXISTING_TABLE_OR_FAIL)")
                _sql.execute(self.conn, schema_table.create_table_sql())
                created = True
            elif opt is TableCreationOption.CREATE_NEW_TABLE_OR_FAIL:
                raise SyncError(f'sqlite-ct sync: table "{name}" already exists on the client '
                                f"(TableCreationOption.CREATE_NEW_TABLE_OR_FAIL)")
            elif opt in (TableCreationOption.DROP_EXISTING_OR_CREATE_NEW_TABLE,
                         TableCreationOption.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE):
                if tracked and not checked:
                    self._refuse_unsent(name, opt)
                if opt is TableCreationOption.DROP_EXISTING_OR_CREATE_NEW_TABLE:
                    self._refuse_referenced(name)
                    if tracked:
                        disable_tracking(self.conn, name)
                    _sql.execute(self.conn, f"DROP TABLE main.{q(name)}")
                    _sql.execute(self.conn, schema_table.create_table_sql())
                    created = True
                else:
                    # Rows other rows refer to stay (replica.unreferenced):
                    # the delete would cascade to them without tombstones.
                    with applying_server_changes(self.conn):
                        _sql.execute(self.conn, f'DELETE FROM main.{q(name)} AS "ct_row" WHERE 1'
                                     + unreferenced(self.conn, name, "ct_row"))
                    truncated = True
            name = _sql.table_exists(self.conn, table.name)
            if table.direction is not SyncDirection.SNAPSHOT:
                self._start_tracking(name, table, schema, created, truncated)
            if self.schema_created is not None:
                self.schema_created(self.conn, table, schema_table)

    def _refuse_referenced(self, name: str) -> None:
        """DROP TABLE deletes every row first: with foreign keys on, that
        deletes or changes the rows of other tables that refer to them (ON
        DELETE CASCADE, SET NULL, SET DEFAULT), tracked ones as local deletes
        and updates the next upload sends to the hub. Refused while any row
        of another table refers to a row of `name`."""
        terms = unreferenced(self.conn, name, "ct_row", others_only=True)
        if terms and _sql.value(self.conn, f'SELECT EXISTS (SELECT 1 FROM main.{q(name)} AS '
                                           f'"ct_row" WHERE NOT (1{terms}))'):
            raise SyncError(
                f'sqlite-ct sync: table "{name}" is not dropped and re-created '
                f"(DROP_EXISTING_OR_CREATE_NEW_TABLE): rows of other tables refer to its rows "
                f"and foreign keys are on, so dropping it would delete or change them too; "
                f"use TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE, which keeps the rows referred "
                f"to, or remove the referring rows first")

    def _start_tracking(self, name: str, table: SyncTable, schema: SyncSchema,
                        created: bool, truncated: bool) -> None:
        if not is_tracked(self.conn, name):
            track_table(self.conn, name)
        enable = self._infos.get(self.conn, name).enable_bsn
        sent = get_sent_anchor(self.conn, name)
        again = False
        if created or truncated:
            # Nothing here is a local change: not the new rows (none), not
            # the truncated ones, not older tombstones.
            set_sent_anchor(self.conn, name, max(enable, last_committed_csn(self.conn)))
        elif sent is not None:
            # Synchronised before, and now starting again from the hub's
            # initial anchor: what the client holds from earlier syncs may be
            # gone from the hub; keep only what was never uploaded.
            again = True
        else:
            upload_existing = (table.creation_option
                               is TableCreationOption.UPLOAD_EXISTING_OR_CREATE_NEW_TABLE
                               and table.direction.uploads)
            # Rows that predate tracking count as inserted by the enabling
            # transaction: anchor 0 uploads them, the enabling BSN does not.
            set_sent_anchor(self.conn, name, 0 if upload_existing else enable)
        anchors = schema.initial_anchors if table.direction.downloads else schema.current_anchors
        anchor = _lookup(anchors, table.name)
        if anchor is None:
            raise SyncError(f'sqlite-ct sync: the server sent no anchor for table "{table.name}"')
        if again:
            reinitialise_table(self.conn, name, anchor)
        else:
            set_received_anchor(self.conn, name, anchor)

    def reinitialise(self, tables: Sequence[TableLike], schema: SyncSchema) -> int:
        """Start `tables` over from the server's initial anchors (in `schema`,
        from ServerProvider.get_schema), keeping the client's unsent changes:
        rows changed after the sent anchor and pending tombstones stay, every
        other row is removed (without tombstones) and comes back with the next
        download if it is still on the server and in this client's scope,
        the client's own uploads included. Upload the pending changes first
        (SyncAgent.reinitialise does): a download that finds a pending row
        treats it as a conflict. Returns how many rows were removed."""
        removed = 0
        with _sql.transaction(self.conn, "sqlite_ct_sync_reinitialise"):
            todo = []
            for t in tables:
                name = _sql.table_exists(self.conn, _name(t))
                if name is None or not is_tracked(self.conn, name):
                    continue  # created by the next sync, or a snapshot table
                anchor = _lookup(schema.initial_anchors, _name(t))
                if anchor is None:
                    raise SyncError(f'sqlite-ct sync: the server sent no anchor for table '
                                    f'"{_name(t)}"')
                todo.append((name, anchor))
            # A row another row refers to stays (with foreign keys on) while
            # that row is there: once a later table of the group has dropped
            # its rows, another round drops the rows only they referred to.
            for _ in range(len(todo)):
                got = sum(reinitialise_table(self.conn, name, anchor) for name, anchor in todo)
                removed += got
                if not got:
                    break
        return removed

    def schema_changes(self, tables: Sequence[SyncTable], schema: SyncSchema
                       ) -> Dict[str, Tuple[str, ...]]:
        """Compare the client tables of `tables` with the hub's (`schema`, from
        ServerProvider.get_schema). Returns, per table, the hub columns the
        client table lacks and takes (add_columns()): every table that
        downloads; an upload-only table keeps its columns, so its uploads
        leave the hub's new columns alone. Any other difference is a SyncError
        that says what to do: a different primary key, a column whose type
        has another affinity, and, on a table that uploads, a column the hub
        lacks. Missing tables are skipped (created from the schema)."""
        out: Dict[str, Tuple[str, ...]] = {}
        for t in tables:
            name = _sql.table_exists(self.conn, t.name)
            if name is None:
                continue
            hub = _lookup(schema.tables, t.name)
            if hub is None:
                raise SyncError(f'sqlite-ct sync: the server sent no schema for table '
                                f'"{t.name}"')
            hub.validate(t.name)
            info = self._infos.get(self.conn, name)
            rebuild = ("upload the table's changes, then drop the client table "
                       "(sqlite_ct.disable_tracking() and DROP TABLE) and synchronise: it "
                       "is created again from the hub's schema")
            if [k.lower() for k in hub.primary_key] != [k.lower() for k in info.key]:
                raise SyncError(
                    f'sqlite-ct sync: table "{name}" has primary key '
                    f'({", ".join(hub.primary_key)}) on the hub but ({", ".join(info.key)}) '
                    f"on the client; {rebuild}")
            local = {c.lower(): c for c in info.columns}
            types = {str(n).lower(): str(ct or "") for n, ct in _sql.rows(
                self.conn, "SELECT name, type FROM pragma_table_xinfo(?)", (name,))}
            missing = []
            for col in hub.columns:
                mine = local.get(col.name.lower())
                if mine is None:
                    missing.append(col.name)
                elif _affinity(col.type) != _affinity(types[mine.lower()]):
                    raise SyncError(
                        f'sqlite-ct sync: column "{mine}" of table "{name}" is '
                        f"{col.type or 'untyped'} on the hub but "
                        f"{types[mine.lower()] or 'untyped'} on the client, which stores "
                        f"values differently; {rebuild}")
            hub_names = {c.name.lower() for c in hub.columns}
            extra = [c for c in info.columns if c.lower() not in hub_names]
            if extra and t.direction.uploads:
                raise SyncError(
                    f'sqlite-ct sync: table "{name}" on the server has no column '
                    f"{', '.join(repr(c) for c in extra)} (dropped on the hub, or added on the "
                    f"client only), so the client cannot upload it; add it to the hub table, "
                    f"or drop it from the client table (sqlite_ct.drop_column())")
            if missing and t.direction is not SyncDirection.UPLOAD_ONLY:
                for col in missing:  # checked before anything changes
                    hub.add_column_sql(name, col)
                out[name] = tuple(missing)
        return out

    def add_columns(self, table: str, columns: Sequence[str], schema: SyncSchema) -> None:
        """Add the hub's `columns` (from `schema`) to the client table `table`,
        in one transaction: declared as the hub declares them (a type name, a
        literal default re-rendered from its value, names quoted). Tracking
        follows ADD COLUMN by itself; rows the client holds get the default,
        so the caller reinitialises a downloading table in the same
        transaction (SyncAgent does) to get the hub's values."""
        hub = _lookup(schema.tables, table)
        if hub is None:
            raise SyncError(f'sqlite-ct sync: the server sent no schema for table "{table}"')
        hub.validate(table)
        with _sql.transaction(self.conn, "sqlite_ct_sync_add_columns"):
            for col in columns:
                _sql.execute(self.conn, hub.add_column_sql(table, col))

    def _refuse_unsent(self, name: str, opt: TableCreationOption) -> None:
        sent = get_sent_anchor(self.conn, name)
        if sent is None:
            return
        # What the next upload would send: the change contract's rows since
        # the sent anchor. It runs before the schema transaction writes
        # anything (create_schemas()): once it has re-created a table, the
        # contract refuses to read inside it.
        try:
            pending = _sql.value(self.conn, "SELECT count(*) FROM sqlite_ct_changes(?, ?)",
                                 (name, sent))
        except AnchorError as exc:
            # Unsent tombstones purged (or a database restored from an older
            # copy): what was never uploaded cannot be known, so it is not
            # discarded silently.
            raise SyncError(
                f'sqlite-ct sync: the local changes of table "{name}" that were never '
                f"uploaded cannot be counted ({str(exc).replace('sqlite-ct: ', '', 1)}) "
                f"and TableCreationOption.{opt.name} "
                f"would discard them; call accept_changes() to discard them") from exc
        if pending:
            raise SyncError(
                f'sqlite-ct sync: table "{name}" has {pending} local change(s) that were never '
                f"uploaded and TableCreationOption.{opt.name} would discard them; synchronise "
                f"it first, or call accept_changes() to discard them")

    # -- upload ----------------------------------------------------------------
    def get_changes(self, tables: Sequence[TableLike]) -> ClientChanges:
        """Local changes of `tables` since each one's sent anchor, in one
        snapshot (SqlCeClientSyncProvider.GetChanges): one TableChanges per
        table, each change with its client transaction (transactions)."""
        with self.stream_changes(tables) as changes:
            return ClientChanges(changes.window(None), changes.new_anchor)

    @contextlib.contextmanager
    def stream_changes(self, tables: Sequence[TableLike]) -> Iterator["ChangeBatches"]:
        """The changes get_changes() returns, read batch by batch in one
        snapshot held until the `with` block ends (see ChangeBatches)."""
        names = [_name(t) for t in tables]
        sent = self._sent_anchors(names)
        since = {n: sent[n.lower()] for n in names}
        with GroupChangeStream(self.conn, names, since) as group:
            yield ChangeBatches(self, names, group)

    def complete_upload(self, tables: Sequence[TableLike], new_anchor: int,
                        corrections: Sequence[TableChanges] = (),
                        deferred: Sequence[Conflict] = (),
                        superseded: Sequence[int] = ()) -> ApplyResult:
        """After the server committed an upload: move the sent anchors to
        `new_anchor`, keep the changes the server deferred in the conflict
        inbox, drop the inbox entries `superseded` (ids from
        superseded_downloads()) and apply the server's corrections, in one
        transaction."""
        with _sql.transaction(self.conn, "sqlite_ct_sync_sent"):
            for t in tables:
                self._store_sent(_name(t), new_anchor)
            if superseded:
                _sql.executemany(self.conn, f"DELETE FROM main.{_INBOX} WHERE Id = ?",
                                 [(i,) for i in superseded])
            store_conflicts(self.conn, deferred)
            if not any(len(c) for c in corrections):
                return ApplyResult()
            return self._apply(corrections)

    def deferred_downloads(self, tables: Sequence[TableLike]) -> Dict[Tuple[str, tuple], int]:
        """The inbox's deferred downloads of `tables`, as (table lowercased,
        key values in key order) -> entry id: what superseded_downloads()
        looks up."""
        if not _inbox_has(self.conn, SyncStage.DOWNLOADING_CHANGES):
            return {}
        wanted = {_name(t).lower() for t in tables}
        return {(c.table.lower(), tuple(c.key.values())): c.id for c in self.conflicts()
                if c.stage is SyncStage.DOWNLOADING_CHANGES and c.table.lower() in wanted}

    @staticmethod
    def superseded_downloads(part: Sequence[TableChanges], conflicts: Sequence[Conflict],
                             deferred: Dict[Tuple[str, tuple], int]) -> List[int]:
        """The ids of the entries in `deferred` (deferred_downloads()) whose
        key the uploaded `part` changed and the server applied without a
        conflict: the hub now holds the client's version (or its delete), so
        the older server row waiting in the inbox is stale; retried, it would
        overwrite the client's row (or bring back the deleted one) in apply
        mode, and the replicas would stay different."""
        if not deferred:
            return []
        refused = {(c.table.lower(), tuple(c.key.values())) for c in conflicts}
        found = []
        for tc in part:
            name = tc.table.lower()
            at = [tc.columns.index(k) for k in tc.key_columns]
            keys = [tuple(v) for v in tc.deletes]
            keys += [tuple(row[i] for i in at) for row in (*tc.inserts, *tc.updates)]
            for key in keys:
                entry = deferred.get((name, key))
                if entry is not None and (name, key) not in refused:
                    found.append(entry)
        return found

    def accept_changes(self, tables: Sequence[TableLike]) -> None:
        """Treat the current local changes of `tables` as uploaded: they will
        not be sent (SqlCeClientSyncProvider.AcceptChanges)."""
        with _sql.transaction(self.conn, "sqlite_ct_sync_accept"):
            now = last_committed_csn(self.conn)
            for t in tables:
                set_sent_anchor(self.conn, _name(t), now)

    # -- download --------------------------------------------------------------
    def apply_changes(self, tables: Sequence[TableLike], batch: DownloadBatch) -> ApplyResult:
        """Apply a download batch and store its anchors (for tracked tables;
        snapshot tables keep none), in one transaction: deletes in reverse
        table order, then inserts, then updates, without echo."""
        with _sql.transaction(self.conn, "sqlite_ct_sync_download"):
            result = self._apply(batch.tables)
            for t in tables:
                anchor = batch.anchors.get(_name(t))
                name = _sql.table_exists(self.conn, _name(t))
                if anchor is not None and name is not None and \
                        self._infos.get(self.conn, name).tracked:
                    self._store_received(name, anchor)
        return result

    def _apply(self, tables: Sequence[TableChanges]) -> ApplyResult:
        sent = self._sent_anchors([tc.table for tc in tables])
        side = _ClientSide(self.conn, self.conflict_resolver, self.on_apply_change_failed,
                           self._infos, sent)
        with applying_server_changes(self.conn):
            return Applier(side).apply(tables)

    # -- conflict inbox ------------------------------------------------------------
    def conflicts(self, table: Optional[str] = None, *,
                  transaction: Optional[int] = None) -> List[StoredConflict]:
        """The deferred conflicts in this database's inbox (__sysSyncConflicts),
        oldest first; only `table`'s when given, only those of the client
        transaction `transaction` (StoredConflict.transaction) when given."""
        if transaction is not None:
            _check_transaction(transaction)
        if _sql.table_exists(self.conn, _INBOX) is None:
            return []
        has_group = _inbox_has_group(self.conn)
        if transaction is not None and not has_group:
            return []  # an inbox of an earlier version: no entry has a transaction
        sql = (f"SELECT Id, Type, Stage, TableName, KeyJson, ClientJson, ServerJson, Error, "
               f"Time, {'TxGroup' if has_group else 'NULL'} FROM main.{_INBOX}")
        where: List[str] = []
        params: List[Any] = []
        if table is not None:
            where.append("TableName = ? COLLATE NOCASE")
            params.append(table)
        if transaction is not None:
            where.append("TxGroup = ?")
            params.append(transaction)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [StoredConflict(int(i), ConflictType(ctype), SyncStage(stage), name,
                               _loads(key), _loads(crow), _loads(srow), error,
                               datetime.datetime.fromtimestamp(ms / 1000,
                                                               datetime.timezone.utc),
                               None if group is None else int(group))
                for i, ctype, stage, name, key, crow, srow, error, ms, group in
                _sql.rows(self.conn, sql + " ORDER BY Id", tuple(params))]

    def retry_deferred(self, tables: Sequence[TableLike]) -> int:
        """Apply again the server rows of `tables` whose download was
        deferred (a child that came before its parent, a constraint fixed
        since), each as the download would have: in apply mode, unless the
        row has a pending local change. Entries that apply leave the inbox;
        the others stay. The stored row is the newest server version the
        client has received (a later download of the key replaces or removes
        the entry). Returns how many applied."""
        if not _inbox_has(self.conn, SyncStage.DOWNLOADING_CHANGES):
            return 0
        wanted = {_name(t).lower() for t in tables}
        entries = [c for c in self.conflicts() if c.stage is SyncStage.DOWNLOADING_CHANGES
                   and c.table.lower() in wanted]
        applied = 0
        with _sql.transaction(self.conn, "sqlite_ct_sync_retry"):
            sent = self._sent_anchors([c.table for c in entries])
            for c in entries:
                info = self._infos.get(self.conn, c.table)
                marks = [f":k{i}" for i in range(len(info.key))]
                keys = {f"k{i}": c.key.get(k) for i, k in enumerate(info.key)}
                # A local change since, or a local delete of the key (the
                # row written back would hide the pending tombstone): the
                # user decides.
                if info.tracked and _sql.value(
                        self.conn, f"SELECT sqlite_ct_local_change(:t, :s, "
                                   f"{', '.join(marks)}) IS NOT NULL",
                        {**keys, "s": sent[info.name.lower()], "t": info.name}):
                    continue
                try:
                    with _sql.savepoint(self.conn), applying_server_changes(self.conn):
                        self._write_row(info, c.key, c.server_row)
                except _sql.host_errors() as exc:
                    if not _sql.is_row_error(exc):
                        raise
                    continue
                _sql.execute(self.conn, f"DELETE FROM main.{_INBOX} WHERE Id = ?", (c.id,))
                applied += 1
        return applied

    def _write_row(self, info: _sql.TableInfo, key: Row, row: Optional[Row]) -> None:
        """Upsert `row` into `info`'s table, or delete `key` when row is None."""
        t = q(info.name)
        if row is None:
            marks = [f":k{i}" for i in range(len(info.key))]
            _sql.execute(self.conn, f"DELETE FROM main.{t} WHERE {info.key_match('', marks)}",
                         {f"k{i}": key[k] for i, k in enumerate(info.key)})
            return
        cols = [col for col in info.columns if col in row]
        names = ", ".join(q(col) for col in cols)
        marks_v = ", ".join(f":v{i}" for i in range(len(cols)))
        keys = ", ".join(q(k) for k in info.key)
        sets = ", ".join(f"{q(col)} = excluded.{q(col)}" for col in cols if col not in info.key)
        action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
        _sql.execute(self.conn, f"INSERT INTO main.{t} ({names}) VALUES ({marks_v}) "
                                f"ON CONFLICT ({keys}) {action}",
                     {f"v{i}": row[col] for i, col in enumerate(cols)})

    def holds(self, table: str, key: Row) -> bool:
        """Whether the client's `table` has a row with `key` (a conflict's key)."""
        return self._holds(self._infos.get(self.conn, table), key)

    def _holds(self, info: _sql.TableInfo, key: Row) -> bool:
        marks = [f":k{i}" for i in range(len(info.key))]
        return _sql.value(self.conn, f"SELECT 1 FROM main.{q(info.name)} "
                                     f"WHERE {info.key_match('', marks)}",
                          {f"k{i}": key[k] for i, k in enumerate(info.key)}) is not None

    def resolve_conflict(self, conflict_id: int, row: Optional[Row] = None, *,
                         delete: bool = False) -> None:
        """Settle a deferred conflict and remove it from the inbox, in one
        transaction. With `row` (a full row: the stored client_row or
        server_row, possibly edited), it is written to the table as a local
        change; with delete=True the key is deleted as a local change; the
        next sync uploads either. With neither, the table stays as it is.
        delete=True of a key the client does not hold while the hub has a row
        raises SyncError: it would upload nothing and leave the hub's row."""
        found = [c for c in self.conflicts() if c.id == conflict_id]
        if not found:
            raise SyncError(f"sqlite-ct sync: no deferred conflict {conflict_id} in the inbox")
        c = found[0]
        with _sql.transaction(self.conn, "sqlite_ct_sync_resolve"):
            info = self._infos.get(self.conn, c.table)
            if delete and c.server_row is not None and not self._holds(info, c.key):
                # Deleting a key the client does not hold is no change to
                # upload: the hub would keep its row and the two would differ.
                raise SyncError(
                    f"sqlite-ct sync: conflict {c.id}: table \"{c.table}\" key {c.key!r} is "
                    f"not on the client, so deleting it is no change to upload and the hub "
                    f"would keep its row; write the hub's row instead "
                    f"(resolve_conflict(id, conflict.server_row)), sync, then delete it")
            if delete or row is not None:
                self._write_row(info, c.key, None if delete else row)
            _sql.execute(self.conn, f"DELETE FROM main.{_INBOX} WHERE Id = ?", (conflict_id,))

    def resolve_transaction(self, transaction: int, use: str) -> List[StoredConflict]:
        """Settle every deferred conflict of the client transaction
        `transaction` (StoredConflict.transaction) and remove them from the
        inbox, in one transaction. `use` "client" writes each entry's stored
        client_row (deletes its key where client_row is None) as local
        changes of that one transaction, so the next sync uploads them
        together, as one client transaction again. "server" lets the hub's
        version stand: nothing is written, because the client already holds
        the hub's current rows (the upload's corrections and downloads bring
        them) and the stored server_row is only what the hub had then:
        written back, it would overwrite a newer version another client made
        since (an upload-only table gets no hub rows: there the client's
        refused rows stay as they are). "none" leaves the tables as they are
        (for these upload entries, the same as "server"). Refused with
        SyncError, before anything is written or removed, for an unknown
        transaction and, as in resolve_conflict(), for a delete of a key the
        client does not hold while the hub has a row. Returns the entries
        settled, oldest first."""
        _check_transaction(transaction)
        if use not in _USES:
            raise SyncError(f"sqlite-ct sync: resolve_transaction(): use must be one of "
                            f"{', '.join(map(repr, _USES))}, not {use!r}")
        with _sql.transaction(self.conn, "sqlite_ct_sync_resolve"):
            # Only uploads carry a transaction (store_conflicts).
            entries = [c for c in self.conflicts(transaction=transaction)
                       if c.stage is SyncStage.UPLOADING_CHANGES]
            if not entries:
                raise SyncError(f"sqlite-ct sync: no deferred conflicts of client transaction "
                                f"{transaction} in the inbox")
            writes: List[Tuple[_sql.TableInfo, StoredConflict, Optional[Row]]] = []
            for c in entries:
                if use != "client":
                    continue
                info = self._infos.get(self.conn, c.table)
                row = c.client_row if use == "client" else c.server_row
                if row is None and c.server_row is not None and not self._holds(info, c.key):
                    raise SyncError(
                        f"sqlite-ct sync: client transaction {transaction}: conflict {c.id}: "
                        f"table \"{c.table}\" key {c.key!r} is not on the client, so "
                        f"deleting it is no change to upload and the hub would keep its row; "
                        f"nothing was written: take the hub's rows "
                        f"(resolve_transaction({transaction}, \"server\")), sync, then delete "
                        f"it, or settle the entries one by one with resolve_conflict()")
                writes.append((info, c, row))
            # As a download applies: deletes first, child tables before the
            # tables their foreign keys reference, then the rows, referenced
            # tables first; within a table in the order the hub reported them.
            rank = {n.lower(): i for i, n in enumerate(
                _referenced_first(self.conn, [info.name for info, _, _ in writes]))}
            for info, c, row in (sorted((w for w in writes if w[2] is None),
                                        key=lambda w: -rank[w[0].name.lower()])
                                 + sorted((w for w in writes if w[2] is not None),
                                          key=lambda w: rank[w[0].name.lower()])):
                try:
                    self._write_row(info, c.key, row)
                except _sql.host_errors() as exc:
                    if not _sql.is_row_error(exc):
                        raise
                    raise SyncError(
                        f"sqlite-ct sync: client transaction {transaction}: conflict {c.id}: "
                        f"{'deleting' if row is None else 'writing'} table \"{c.table}\" key "
                        f"{c.key!r} failed ({exc}); nothing was written: fix what the "
                        f"client's table refuses, or settle the entries one by one with "
                        f"resolve_conflict()") from exc
            _sql.executemany(self.conn, f"DELETE FROM main.{_INBOX} WHERE Id = ?",
                             [(c.id,) for c in entries])
        return entries

    # -- retention ---------------------------------------------------------------
    def cleanup(self, tables: Sequence[TableLike]) -> int:
        """Purge tombstones of `tables` older than retention_days that were
        already uploaded. Returns how many were purged."""
        if not self.retention_days:
            return 0
        names = [_name(t) for t in tables]
        sent = self._sent_anchors(names)
        due = [n for n in names if sent[n.lower()]]
        if not due:
            return 0
        purged = 0
        # The write lock is taken up front (a purge is a read, then a write).
        # The core purges what is both old and uploaded (up to the sent anchor).
        with _sql.transaction(self.conn, "sqlite_ct_sync_cleanup"):
            for n in due:
                purged += purge_tombstones(self.conn, n, older_than_days=self.retention_days,
                                           up_to_csn=sent[n.lower()])
        return purged


class ChangeBatches:
    """A group's local changes since the sent anchors, as batches(size)
    cuts them: runs of whole client transactions. Each change carries its
    client transaction (TableChanges.transactions: the client's BSN of the
    transaction that last changed the row, sqlite_ct_changes()'s change_bsn),
    and a batch holds the changes whose transaction lies in one window
    (b_{k-1}, b_k] of BSNs, the windows chosen, in BSN order, to hold at most
    `size` changes each (None: one batch); a transaction of more than `size`
    changes is sent in batches of its own of at most `size` changes. Rows
    that predate tracking (change BSN = the enabling BSN) carry transaction
    0: they stand alone. Within a batch the changes
    keep the order one transaction applies them (deletes in reverse table
    order, then inserts, then updates, in table order), each batch listing
    its tables in table order; the same batches as
    upload_batches(get_changes().tables). The same local state gives the
    same batches.

    The windows are planned first from a count of the changes per BSN
    (GroupChangeStream.bsn_counts(), which reads no row), then each window's
    rows are read on their own (rows(after=, up_to=): a range of the change
    index), and the deletes from one pass over them in BSN order (a slice of
    the deletes would read every tombstone of the session): no window reads
    again what an earlier one read.

    A change is what it is in the whole session window (since, new_anchor]:
    a row inserted in one window and updated in a later one uploads as an
    insert. Only the batch being filled is held in memory, and the keys
    deleted and inserted again (_replaced).
    .new_anchor is the snapshot's CSN; .total and .counts (table ->
    [inserts, updates, deletes]) grow as batches are read."""

    def __init__(self, provider: "ClientSyncProvider", names: Sequence[str],
                 group: GroupChangeStream) -> None:
        self._provider = provider
        self._names = list(names)
        self._group = group
        assert group.new_anchor is not None
        self.new_anchor: int = group.new_anchor
        self.total = 0
        self.counts: Dict[str, List[int]] = {}
        self._replaced_keys: Dict[int, Dict[tuple, int]] = {}
        # Per table: its deletes in BSN order, read once across the windows,
        # and the first one past the last window taken.
        self._deletes: Dict[int, Iterator[tuple]] = {}
        self._ahead: Dict[int, tuple] = {}
        self._taken: Optional[int] = None
        self._started = False
        self._done = False

    def _rows(self, name: str, kind: str, order: Sequence[str], after: Optional[int] = None,
              up_to: Optional[int] = None, bsn_order: bool = False) -> Iterator[tuple]:
        """rows(name, kind) in (after, up_to] as tuples of the columns
        `order`, each followed by its change BSN."""
        cols, keys = self._group.columns(name)
        have = keys if kind == "delete" else cols
        rows = self._group.rows(name, kind, after=after, up_to=up_to, with_bsn=True,
                                bsn_order=bsn_order)
        if list(have) == list(order):
            return rows
        pos = [list(have).index(c) for c in order] + [len(have)]
        return (tuple(r[i] for i in pos) for r in rows)

    def _replaced(self, i: int) -> Dict[tuple, int]:
        """The keys (strict) of table `i` both deleted and inserted again in
        the session window, each with its delete's BSN: sent as the insert
        alone, in the insert's transaction. A key both deleted (a row the
        server has) and inserted since the sent anchor is an INSERT OR
        REPLACE of an existing key, or a delete and a re-insert: the insert
        alone, applied as an upsert, updates the server's row in place (and
        inserts it if the server deleted it meanwhile). As a delete and an
        insert it would fire the hub's delete actions (ON DELETE CASCADE) for
        a row that stays. Found over the whole session window, whatever
        windows the delete and the insert fall in."""
        if i not in self._replaced_keys:
            name = self._names[i]
            info = self._provider._infos.get(self._provider.conn, name)
            have = list(self._group.columns(name)[1])
            pos = [have.index(k) for k in info.key]
            self._replaced_keys[i] = {_strict([r[p] for p in pos]): r[-1]
                                      for r in self._group.reinserted(name)}
        return self._replaced_keys[i]

    def windows(self, size: Optional[int]) -> List[Optional[int]]:
        """The upper bounds b_1 < b_2 < ... of the batches' windows
        (b_{k-1}, b_k], b_0 being the start of the session; empty when there
        is nothing to upload. size None: [None], one window of everything."""
        if size is None:
            return [None]
        return _cut_windows(heapq.merge(*(self._sendable_counts(i)
                                          for i in range(len(self._names)))), size)

    def _sendable_counts(self, i: int) -> Iterator[Tuple[int, int]]:
        """bsn_counts() of table `i` less its deletes sent as the insert alone
        (_replaced), which are counted under their own BSN."""
        dropped: Dict[int, int] = {}
        for bsn in self._replaced(i).values():
            dropped[bsn] = dropped.get(bsn, 0) + 1
        for bsn, n in self._group.bsn_counts(self._names[i]):
            yield bsn, n - dropped.get(bsn, 0)

    def _deletes_up_to(self, i: int, key: Sequence[str], up_to: Optional[int]
                       ) -> Iterator[tuple]:
        """Table `i`'s next deletes, up to BSN `up_to` (None: all)."""
        stream = self._deletes.get(i)
        if stream is None:
            stream = self._deletes[i] = self._rows(self._names[i], "delete", key,
                                                   bsn_order=True)
        ahead = self._ahead.pop(i, None)
        for r in itertools.chain([ahead] if ahead is not None else [], stream):
            if up_to is not None and r[-1] > up_to:
                self._ahead[i] = r
                return
            yield r

    def window(self, up_to: Optional[int]) -> List[TableChanges]:
        """The changes of the next window: those whose transaction lies
        after the previous window's bound, up to `up_to` (None: to the end),
        one TableChanges per table of the group, in table order. Windows are
        taken in order (the deletes are one pass in BSN order)."""
        parts = list(self._parts(up_to, None))
        return parts[0] if parts else []

    def _parts(self, up_to: Optional[int], size: Optional[int]
               ) -> Iterator[List[TableChanges]]:
        """The next window's changes (see window()), cut into parts of at
        most `size` changes (None: one part) in the order a transaction
        applies them; a window holds more than `size` changes only when it
        is one transaction larger than that, which is then sent in parts.
        Each part lists every table of the group, in table order."""
        if self._done or (up_to is not None and self._taken is not None
                          and up_to <= self._taken):
            raise ValueError("ChangeBatches.window(): windows are taken in BSN order, once")
        first = self._taken is None and not self._started
        self._started = True
        after = self._taken
        self._taken = up_to
        self._done = up_to is None
        conn = self._provider.conn
        infos = [self._provider._infos.get(conn, n) for n in self._names]
        # In one part of everything (get_changes()), the keys inserted and
        # deleted again since the sent anchor come along; batches() sends
        # them first, in batches of their own (own_batches()).
        own = ([list(self._group.born_deleted(n)) for n in self._names]
               if first and size is None else [[] for _ in self._names])
        # A row that predates tracking (its change BSN is the enabling one)
        # was written by no client transaction: it stands alone (0).
        enabled = [info.enable_bsn for info in infos]

        def steps() -> Iterator[Tuple[int, str, tuple, int]]:
            for i in reversed(range(len(infos))):
                replaced = self._replaced(i)
                for r in self._deletes_up_to(i, infos[i].key, up_to):
                    key = r[:-1]
                    if not replaced or _strict(key) not in replaced:
                        yield i, "deletes", key, r[-1]
            for kind in ("insert", "update"):
                for i, info in enumerate(infos):
                    for r in self._rows(self._names[i], kind, info.columns, after, up_to):
                        yield i, kind + "s", r[:-1], r[-1]

        def empty() -> List[Dict[str, Any]]:
            return [{"deletes": [], "inserts": [], "updates": [],
                     "t": {"deletes": [], "inserts": [], "updates": []}} for _ in infos]

        def done(parts: List[Dict[str, Any]]) -> List[TableChanges]:
            result = []
            for i, info in enumerate(infos):
                d, ins, u, t = (parts[i]["deletes"], parts[i]["inserts"], parts[i]["updates"],
                                parts[i]["t"])
                result.append(TableChanges(info.name, info.columns, info.key, deletes=d,
                                           inserts=ins, updates=u,
                                           transactions=t["deletes"] + t["inserts"]
                                           + t["updates"], own_deletes=own[i]))
                own[i] = []
                if d or ins or u:
                    c = self.counts.setdefault(info.name, [0, 0, 0])
                    c[0] += len(ins)
                    c[1] += len(u)
                    c[2] += len(d)
                    self.total += len(d) + len(ins) + len(u)
            return result

        current, filled = empty(), 0
        for i, kind, row, bsn in steps():
            current[i][kind].append(row)
            current[i]["t"][kind].append(0 if bsn == enabled[i] else bsn)
            filled += 1
            if size is not None and filled == size:
                yield done(current)
                current, filled = empty(), 0
        if filled or size is None or any(own):
            yield done(current)

    def own_batches(self, size: int) -> Iterator[List[TableChanges]]:
        """The keys inserted and deleted again since the sent anchor
        (TableChanges.own_deletes), in batches of at most `size` keys, tables
        in table order, read as they are sent."""
        conn = self._provider.conn
        infos = [self._provider._infos.get(conn, n) for n in self._names]
        current: Dict[int, TableChanges] = {}
        filled = 0
        for i, info in enumerate(infos):
            for key in self._group.born_deleted(self._names[i]):
                tc = current.get(i)
                if tc is None:
                    tc = current[i] = TableChanges(info.name, info.columns, info.key)
                tc.own_deletes.append(key)
                filled += 1
                if filled == size:
                    yield [current[k] for k in sorted(current)]
                    current, filled = {}, 0
        if current:
            yield [current[k] for k in sorted(current)]

    def batches(self, size: Optional[int]) -> Iterator[List[TableChanges]]:
        """The upload's batches: with a size, first the keys inserted and
        deleted again (own_batches()), then the windows of transactions;
        without, one batch of everything."""
        if size is not None:
            yield from self.own_batches(size)
        bounds = self.windows(size)
        for up_to in bounds:
            for part in self._parts(up_to, size):
                batch = [tc for tc in part if len(tc) or tc.own_deletes]
                if batch:
                    yield batch


def _cut_windows(counts: Iterable[Tuple[int, int]], size: int) -> List[Optional[int]]:
    """The upper bounds of the windows of transactions given as (BSN, number
    of changes) in BSN order, a BSN possibly more than once (once per table):
    a window closes before the transaction that would take it over `size`
    changes, so a transaction of more than `size` changes is a window of its
    own. A window's bound is its last transaction with a change to send."""
    bounds: List[Optional[int]] = []
    filled = 0
    last: Optional[int] = None
    for bsn, n in _summed(counts):
        if n <= 0:
            continue
        if filled and filled + n > size:
            bounds.append(last)
            filled = 0
        filled += n
        last = bsn
    if filled:
        bounds.append(last)
    return bounds


def _summed(counts: Iterable[Tuple[int, int]]) -> Iterator[Tuple[int, int]]:
    """(BSN, count) pairs in BSN order with the counts of one BSN added up."""
    last: Optional[int] = None
    total = 0
    for bsn, n in counts:
        if last is not None and bsn != last:
            yield last, total
            total = 0
        last = bsn
        total += n
    if last is not None:
        yield last, total


def _strict(values: Sequence[Any]) -> tuple:
    """A key compared by type and value (1, 1.0 and '1' are three keys)."""
    return tuple((type(v).__name__, v) for v in values)


_INBOX = "__sysSyncConflicts"


def store_conflicts(conn: Any, conflicts: Sequence[Conflict]) -> None:
    """Add deferred conflicts to the inbox, inside the caller's transaction
    (the one that moves the anchors past them). An entry keeps the client
    transaction of an uploaded change (TxGroup); a download has none."""
    if not conflicts:
        return
    _sql.execute(conn, f"CREATE TABLE IF NOT EXISTS main.{_INBOX}("
                       f"Id INTEGER PRIMARY KEY, Type TEXT NOT NULL, Stage TEXT NOT NULL, "
                       f"TableName TEXT NOT NULL, KeyJson TEXT NOT NULL, ClientJson TEXT, "
                       f"ServerJson TEXT, Error TEXT, Time INTEGER NOT NULL, TxGroup INTEGER)")
    if not _inbox_has_group(conn):
        # An inbox of an earlier version: its entries keep TxGroup NULL.
        _sql.execute(conn, f"ALTER TABLE main.{_INBOX} ADD COLUMN TxGroup INTEGER")
    _sql.execute(conn, f"CREATE INDEX IF NOT EXISTS main.{_INBOX}TxGroup "
                       f"ON {_INBOX}(TxGroup) WHERE TxGroup IS NOT NULL")
    for c in conflicts:
        if c.transaction is not None and c.stage is SyncStage.UPLOADING_CHANGES:
            _check_transaction(c.transaction)
    # A newer conflict of the same row and side replaces the older one.
    _sql.executemany(conn, f"DELETE FROM main.{_INBOX} WHERE TableName = ? AND KeyJson = ? "
                           f"AND Stage = ?",
                     [(c.table, _dumps(c.key), c.stage.value) for c in conflicts])
    _sql.executemany(conn, f"INSERT INTO main.{_INBOX}(Type, Stage, TableName, KeyJson, "
                           f"ClientJson, ServerJson, Error, Time, TxGroup) "
                           f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(c.type.value, c.stage.value, c.table, _dumps(c.key),
                       _dumps(c.client_row), _dumps(c.server_row), c.error,
                       int(time.time() * 1000),
                       c.transaction if c.stage is SyncStage.UPLOADING_CHANGES else None)
                      for c in conflicts])


def _inbox_has_group(conn: Any) -> bool:
    """Whether the inbox has the TxGroup column (earlier versions created it
    without; store_conflicts adds it)."""
    return _sql.value(conn, f"SELECT 1 FROM pragma_table_info('{_INBOX}', 'main') "
                            f"WHERE name = 'TxGroup' COLLATE NOCASE") is not None


_USES = ("client", "server", "none")


def _referenced_first(conn: Any, tables: Sequence[str]) -> List[str]:
    """The distinct `tables`, each after the others of them that its foreign
    keys reference (in order of first appearance otherwise; a cycle keeps
    the order found)."""
    names: Dict[str, str] = {}
    for t in tables:
        names.setdefault(t.lower(), t)
    parents = {key: [str(r[0]).lower() for r in _sql.rows(
        conn, "SELECT \"table\" FROM pragma_foreign_key_list(?, 'main') ORDER BY id",
        (name,))] for key, name in names.items()}
    order: List[str] = []
    done: set = set()

    def visit(key: str, path: set) -> None:
        if key in done or key in path:
            return
        path.add(key)
        for parent in parents[key]:
            if parent in names and parent != key:
                visit(parent, path)
        path.discard(key)
        done.add(key)
        order.append(names[key])

    for key in names:
        visit(key, set())
    return order


def _check_transaction(transaction: Any) -> None:
    if isinstance(transaction, bool) or not isinstance(transaction, int):
        raise SyncError(f"sqlite-ct sync: a client transaction is an integer (the client's "
                        f"BSN of it), not {transaction!r}")


def _inbox_has(conn: Any, stage: SyncStage) -> bool:
    return (_sql.table_exists(conn, _INBOX) is not None
            and bool(_sql.value(conn, f"SELECT EXISTS (SELECT 1 FROM main.{_INBOX} "
                                      f"WHERE Stage = ?)", (stage.value,))))


def _dumps(row: Optional[Row]) -> Optional[str]:
    """A row as JSON; blobs as {"$blob": hex} (SQLite values are NULL,
    integers, reals, text and blobs)."""
    if row is None:
        return None
    return json.dumps({k: {"$blob": bytes(v).hex()} if isinstance(v, (bytes, bytearray,
                                                                      memoryview)) else v
                       for k, v in row.items()})


def _loads(text: Optional[str]) -> Optional[Row]:
    if text is None:
        return None
    return {k: bytes.fromhex(v["$blob"]) if isinstance(v, dict) else v
            for k, v in json.loads(text).items()}


def _blob(value: Any) -> Optional[bytes]:
    return None if value is None else bytes(value)


def _affinity(declared: Optional[str]) -> str:
    """SQLite's column affinity of a declared type (datatype3.html, 3.1)."""
    t = (declared or "").upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t.strip():
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


def _lookup(mapping: Dict[str, Any], name: str) -> Any:
    if name in mapping:
        return mapping[name]
    for key, value in mapping.items():
        if key.lower() == name.lower():
            return value
    return None
