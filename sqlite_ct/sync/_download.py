"""Reading download batches on the hub: changes in an anchor window, for one
client, through its row filter, at most batch_size at a time.

What a client is sent for the window (complete, upper] of a table:
- a delete for each tombstone in the window whose key is not on the hub any
  more inside the client's filter and that the client did not write itself
  (tracking context), except
  on a first download (complete = 0), when the client holds no hub rows;
- every row changed in the window that matches the client's filter and whose
  latest change is not the client's own (no echo); on a first download and
  a rescope, the client's own rows too: it may not hold them any more (it was
  reinitialised, restored, or its scope moved away from them and back);
- a delete ("move-out") for each row changed in the window that does not match
  the filter and that the client may hold: inserted before the window (an
  older version may have matched), its own latest change, or inserted at or
  after the client's upload floor (record_upload); a row others inserted in
  the window never reached it. On a first download (complete = 0) the client
  holds no hub rows, so only rows it uploaded itself can be out of scope.
Phases 0-2 read through sqlite_ct_changes() (csrc/changes.c): the tombstones
with tombstones = 'each', the rows with NULL stamps (stamped = 0) and the
stamped rows (stamped = 1), each resumed after the anchor's cursor with
after_bsn/after_key, the function's index seeks making every page cost the
same; the table is looked up by rowid or key for the row's values. The
snapshot phase (3) reads the table itself. See _anchor.py for the cursor.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import _conn
from ..tracking import row_stamps
from . import _sql
from ._anchor import (PHASE_DELETES, PHASE_SNAPSHOT, PHASE_STAMPED, PHASE_UNSTAMPED,
                      HubAnchor, HubGuard, Window)
from ._sql import TableInfo, q
from .errors import ReinitialiseRequired, SyncError
from .messages import DownloadBatch, DownloadRequest, DownloadTable, TableChanges

_PARAM = re.compile(r"[:@$]([A-Za-z_][A-Za-z0-9_]*)")
_NO_FILTER = b"\0" * 8
_KIND_DELETE, _KIND_INSERT, _KIND_UPDATE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class RowFilter:
    """A table's filter for one client: SQL over the table's columns, its
    bound parameters, and a fingerprint that changes when either does."""
    sql: str
    params: Dict[str, Any]
    fingerprint: bytes

    @property
    def match(self) -> str:
        return f"coalesce(({self.sql}), 0)"


def row_filter(table: str, where: Optional[str], parameters: Mapping[str, Any]) -> RowFilter:
    if not where:
        return RowFilter("1", {}, _NO_FILTER)
    if "?" in where:
        raise SyncError(f'sqlite-ct sync: the filter of table "{table}" uses "?"; '
                        f"name its parameters (owner = :user)")
    params: Dict[str, Any] = {}
    for name in sorted(set(_PARAM.findall(where))):
        if name.lower().startswith(_RESERVED):
            raise SyncError(f'sqlite-ct sync: the filter of table "{table}" uses parameter '
                            f'":{name}"; names starting with sqlite_ct_ are reserved')
        if name not in parameters:
            raise SyncError(f'sqlite-ct sync: the filter of table "{table}" needs parameter '
                            f'":{name}"; pass it in SyncAgent(parameters={{"{name}": ...}})')
        params[name] = parameters[name]
    digest = hashlib.sha256(repr((where, sorted(params.items()))).encode()).digest()[:8]
    return RowFilter(where, params, digest)


def _unpack(param: str, n: int) -> List[str]:
    return [f"sqlite_ct_unpack_key(:{param}, {i})" for i in range(n)]


def seen_condition(info: TableInfo, anchor: Optional[HubAnchor],
                   alias: str = "t") -> Tuple[str, Dict[str, Any]]:
    """SQL true for a hub row the client has already received, given the
    client's anchor: changed at or before `complete`, or already read in the
    window being downloaded (its position is at or before the cursor)."""
    chg = row_stamps(alias).change_bsn
    eff = f"coalesce({chg}, :sq_e)"
    params: Dict[str, Any] = {"sq_e": info.enable_bsn,
                              "sq_c": anchor.complete if anchor else 0}
    base = f"{eff} <= :sq_c"
    w = anchor.window if anchor else None
    if w is None or w.snapshot or w.phase == PHASE_DELETES or w.cursor_key is None:
        return base, params
    cols = ", ".join(f"{alias}.{q(c)}" for c in info.cursor)
    pos = f"(CASE WHEN {chg} IS NULL THEN 1 ELSE 2 END, coalesce({chg}, 0), {cols})"
    cur = f"(:sq_ph, :sq_cb, {', '.join(_unpack('sq_ck', len(info.cursor)))})"
    params.update(sq_m=w.upper, sq_ph=w.phase, sq_cb=w.cursor_bsn, sq_ck=w.cursor_key)
    return f"({base} OR ({eff} <= :sq_m AND coalesce({pos} <= {cur}, 0)))", params


_RESERVED = "sqlite_ct_"


def _p(sql: str) -> str:
    """Internal parameters are written :@name and bound as :sqlite_ct_name, a
    prefix row filters may not use, so they never collide with a filter's."""
    return sql.replace(":@", ":" + _RESERVED)


def _bind(**params: Any) -> Dict[str, Any]:
    return {_RESERVED + k: v for k, v in params.items()}


class _TableReader:
    """One table's part of a batch."""

    def __init__(self, conn: Any, info: TableInfo, flt: RowFilter, client: bytes,
                 upload_floor: Optional[int]) -> None:
        self.conn = conn
        self.info = info
        self.flt = flt
        self.client = client
        # Rows inserted at or after this hub CSN may be the client's own
        # uploads (see upload_floor()); None: no upload of this table known.
        self.upload_floor = upload_floor
        self.changes = TableChanges(info.name, info.columns, info.key)
        self._sent_deletes: set = set()
        self._key_pos = [info.columns.index(k) for k in info.key]
        self._cursor = ", ".join(q(c) for c in info.cursor)

    def _snapshot_select(self, w: Window) -> Tuple[str, Dict[str, Any]]:
        """SELECT 0, cursor..., kind, columns... of the snapshot phase (3):
        every row of the table in the client's filter, by rowid or key."""
        info = self.info
        cols = ", ".join(q(c) for c in info.columns)
        sql = (f"SELECT 0, {self._cursor}, {_KIND_INSERT}, {cols} FROM main.{q(info.name)} "
               f"WHERE ({self.flt.match})")
        if w.cursor_key is not None:
            unpacked = ", ".join(_unpack(_RESERVED + "ck", len(info.cursor)))
            sql += f" AND ({self._cursor}) > ({unpacked})"
        return (sql + _p(f" ORDER BY {self._cursor} LIMIT :@lim"),
                {**self.flt.params, **_bind(ck=w.cursor_key)})

    def _changes_select(self, w: Window) -> Tuple[str, Dict[str, Any]]:
        """SELECT lead, position, kind, columns... of phase 1 (rows with NULL
        stamps) or 2 (stamped rows) of the window, read through
        sqlite_ct_changes() from the cursor on, in its order (NULL stamps by
        rowid or key; stamped rows by change BSN, then rowid or key): the
        function is the outer loop, the table is looked up by rowid or key,
        and the LIMIT stops both. The position is the row_rowid, or the packed
        key of a WITHOUT ROWID table (the cursor key, packed)."""
        info, m = self.info, self.flt.match
        cols = ", ".join(f"t.{q(c)}" for c in info.columns)
        if info.without_rowid:
            pos = "c.pk"
            join = info.key_match("t", [f"sqlite_ct_unpack_key(c.pk, {i})"
                                        for i in range(len(info.key))])
        elif info.rowid.lower() in (c.lower() for c in info.columns):
            # No name reaches the rowid that orders the rows: refused, not
            # read without them (row_rowid would be NULL, joining nothing).
            raise SyncError(f'sqlite-ct sync: table "{info.name}" has columns named rowid, '
                            f"_rowid_ and oid, which hide its rowid; the hub cannot page its "
                            f"downloads: rename one of them, or make the table WITHOUT ROWID")
        else:
            pos = "c.row_rowid"
            join = f"t.{q(info.rowid)} = c.row_rowid"
        unstamped = w.phase == PHASE_UNSTAMPED
        # op is 'I' when the row was inserted after row_since (the function's
        # since): an insert for the client, else an update.
        kind = (f"CASE WHEN NOT {m} THEN {_KIND_DELETE} WHEN c.op = 'I' THEN {_KIND_INSERT} "
                f"ELSE {_KIND_UPDATE} END")
        # A client's own latest writes are left out only when it is known
        # to hold them: not on a first download or a rescope (row_since 0),
        # which a reinitialised, restored or rescoped client starts with.
        # A move-out only for a row the client may hold: one it had before
        # the window (inserted at or before row_since, or predating
        # tracking), one it may have uploaded itself (inserted at or after
        # its upload floor, or its latest change is its own), or any, on a
        # rescope. A row inserted in the window by others and outside the
        # filter never reached the client: no delete, and its key does not
        # leave the hub.
        emit = (f"({m} AND (:@row_since = 0 OR c.context IS NOT :@x)) "
                f"OR (NOT {m} AND (:@move_all OR c.context IS :@x "
                f"OR (:@row_since > 0 AND (c.stamped = 0 OR c.insert_bsn <= :@row_since "
                f"OR c.insert_bsn >= :@floor))))")
        if self.flt.fingerprint == _NO_FILTER:
            # Every row matches: no move-out, and on a first download or a
            # rescope every row is sent, so the function reads no context
            # (the change index alone, for rows with NULL stamps).
            kind = f"CASE WHEN c.op = 'I' THEN {_KIND_INSERT} ELSE {_KIND_UPDATE} END"
            emit = "1" if w.row_since == 0 else "c.context IS NOT :@x"
        floor = self.upload_floor if self.upload_floor is not None else 2**63 - 1
        if w.cursor_key is None:
            after_bsn = None if unstamped else w.cursor_bsn
        else:
            # Phase 1's cursor keeps BSN 0 (anchors hold it so); its rows'
            # position in the function is the enabling BSN.
            after_bsn = info.enable_bsn if unstamped else w.cursor_bsn
        lead = "0" if unstamped else "c.change_bsn"
        sql = _p(f"SELECT {lead}, {pos}, {kind}, {cols} "
                 f"FROM sqlite_ct_changes(:@tname, :@row_since, :@upper, NULL, NULL, "
                 f":@ab, :@ak) AS c JOIN main.{q(info.name)} AS t ON {join} "
                 f"WHERE c.stamped = {0 if unstamped else 1} AND ({emit}) LIMIT :@lim")
        params = {**_bind(tname=info.name, row_since=w.row_since, upper=w.upper,
                          ab=after_bsn, ak=w.cursor_key, move_all=int(w.move_all),
                          x=self.client, floor=floor), **self.flt.params}
        return sql, params

    def fetch(self, w: Window, budget: Optional[int]) -> Tuple[int, bool, Window]:
        """Read up to `budget` changes of the window's phase. Returns how many
        were emitted, whether the phase is exhausted, and the advanced window."""
        if w.phase == PHASE_DELETES:
            return self._fetch_deletes(w, budget)
        if w.phase == PHASE_UNSTAMPED and not w.row_since < self.info.enable_bsn <= w.upper:
            return 0, True, w
        if w.phase == PHASE_SNAPSHOT:
            ncur = len(self.info.cursor)
            sql, params = self._snapshot_select(w)
            got, last = self._run([(sql, params)], budget, lambda row: self._emit_row(
                row[1 + ncur], row[2 + ncur:]))
            if last is not None:
                w = dataclasses.replace(w, cursor_bsn=int(last[0]),
                                        cursor_key=self._pack(last[1:1 + ncur]))
        else:
            sql, params = self._changes_select(w)
            got, last = self._read_changes(sql, params, budget)
            if last is not None:
                key = bytes(last[1]) if self.info.without_rowid else self._pack(last[1:2])
                w = dataclasses.replace(w, cursor_bsn=int(last[0]), cursor_key=key)
        return got, budget is None or got < budget, w

    def _fetch_deletes(self, w: Window, budget: Optional[int]) -> Tuple[int, bool, Window]:
        """Phase 0: every tombstone of the window (sqlite_ct_changes() with
        tombstones = 'each', by delete BSN and key) that the client did not
        write itself and whose key is not back on the hub in its scope.
        Not the contract's delete rule, which drops keys inserted inside the
        window: the client's own uploads land inside the hub's window, so a
        row it uploaded and another client deleted must reach it as a delete."""
        info = self.info
        keys = ", ".join(f"sqlite_ct_unpack_key(c.pk, {i})" for i in range(len(info.key)))
        gone = " AND ".join(f"t.{q(k)} IS sqlite_ct_unpack_key(c.pk, {i})"
                            for i, k in enumerate(info.key))
        # Not sent when the key is back on the hub in the client's scope (the
        # row itself is sent; it may be the client's own re-insert). A key
        # back outside the scope is a delete for a client that may hold the
        # old row: the new row, inserted in the window, gets no move-out.
        sql = _p(f"SELECT c.change_bsn, c.pk, {keys} FROM sqlite_ct_changes(:@tname, "
                 f":@row_since, :@upper, :@x, 'each', :@cb, :@ck) AS c "
                 f"WHERE c.op = 'D' AND NOT EXISTS (SELECT 1 FROM main.{q(info.name)} AS t "
                 f"WHERE {gone} AND {self.flt.match}) LIMIT :@lim")
        params = {**_bind(tname=info.name, row_since=w.row_since, upper=w.upper,
                          x=self.client, cb=w.cursor_bsn, ck=w.cursor_key), **self.flt.params}
        got, last = self._run([(sql, params)], budget, lambda row: self._delete(tuple(row[2:])))
        if last is not None:
            w = dataclasses.replace(w, cursor_bsn=int(last[0]), cursor_key=bytes(last[1]))
        return got, budget is None or got < budget, w

    def _read_changes(self, sql: str, params: Dict[str, Any],
                      budget: Optional[int]) -> Tuple[int, Optional[tuple]]:
        """Phases 1-2: rows of (lead, position, kind, columns...), emitted
        as _emit_row does, in one loop (the hot path of a download)."""
        inserts, updates = self.changes.inserts.append, self.changes.updates.append
        got, last = 0, None
        with _conn.translated():
            cursor = self.conn.cursor()
            result = cursor.execute(sql, {**params, **_bind(lim=-1 if budget is None
                                                           else budget)})
            for last in (result if result is not None else ()):
                kind = last[2]
                if kind == _KIND_INSERT:
                    inserts(last[3:])
                elif kind == _KIND_UPDATE:
                    updates(last[3:])
                else:
                    self._delete(tuple(last[3 + i] for i in self._key_pos))
                got += 1
        return got, last

    def _run(self, queries: List[Tuple[str, Dict[str, Any]]], budget: Optional[int],
             emit: Any) -> Tuple[int, Optional[tuple]]:
        got, last = 0, None
        for sql, params in queries:
            room = -1 if budget is None else budget - got
            if room == 0:
                break
            for row in _sql.rows(self.conn, sql, {**params, **_bind(lim=room)}):
                got += 1
                last = row
                emit(row)
        return got, last

    def _emit_row(self, kind: int, values: tuple) -> None:
        if kind == _KIND_DELETE:
            self._delete(tuple(values[i] for i in self._key_pos))
        elif kind == _KIND_INSERT:
            self.changes.inserts.append(tuple(values))
        else:
            self.changes.updates.append(tuple(values))

    def _delete(self, key: tuple) -> None:
        if key not in self._sent_deletes:
            self._sent_deletes.add(key)
            self.changes.deletes.append(key)

    def _pack(self, values: Sequence[Any]) -> bytes:
        marks = ", ".join("?" for _ in values)
        return bytes(_sql.value(self.conn, f"SELECT sqlite_ct_pack_key({marks})", values))


def _next_phase(w: Window) -> Optional[Window]:
    if w.snapshot or w.phase == PHASE_STAMPED:
        return None
    start = w.row_since if w.phase == PHASE_UNSTAMPED else 0
    return dataclasses.replace(w, phase=w.phase + 1, cursor_bsn=start, cursor_key=None)


@dataclasses.dataclass
class _TableState:
    """One requested table while a batch is read."""
    snapshot: bool
    info: TableInfo
    flt: RowFilter
    anchor: HubAnchor
    reader: "_TableReader"
    reset: bool

    def pending(self, upper: int) -> bool:
        """Whether anything of this table is left to read up to `upper`."""
        a = self.anchor
        if a.window is not None:
            return True
        if self.snapshot:
            return False
        return a.complete < upper or self.rescope

    @property
    def rescope(self) -> bool:
        a = self.anchor
        return bool(a.complete) and a.fingerprint != self.flt.fingerprint


def read_batch(conn: Any, guard: HubGuard, request: DownloadRequest,
               filters: Mapping[str, Optional[str]], infos: _sql.TableInfoCache
               ) -> DownloadBatch:
    """One batch for `request`, read in one snapshot of the hub.

    Deletes are read for the tables in reverse order before any rows, and
    rows in table order, so that across batches a child row is deleted before
    its parent and inserted after it, as within one batch."""
    client = request.client_id.bytes_le
    budget = request.batch_size
    if budget is not None and budget < 1:
        raise SyncError("sqlite-ct sync: batch_size must be at least 1 (or None)")
    with _conn.savepoint(conn, "sqlite_ct_sync_read"):
        upper = guard.decode_session(request.session)
        if upper is None:
            upper = int(_sql.value(conn, "SELECT sqlite_ct_last_committed_csn()"))
        states = [_state(conn, infos, guard, client, upper, dt, filters, request.parameters)
                  for dt in request.tables]
        for st in reversed(states):
            budget = _advance(st, upper, budget, deletes_only=True)
        for st in states:
            budget = _advance(st, upper, budget, deletes_only=False)
        anchors = {st.info.name: guard.encode(st.anchor, st.info.name) for st in states}
        session = guard.encode_session(upper)
    out = [dataclasses.replace(st.reader.changes, reset=st.reset) for st in states
           if len(st.reader.changes) or st.reset]
    more = any(st.pending(upper) for st in states)
    return DownloadBatch(out, anchors, session, more)


def _state(conn: Any, infos: _sql.TableInfoCache, guard: HubGuard, client: bytes, upper: int,
           dt: DownloadTable, filters: Mapping[str, Optional[str]],
           parameters: Mapping[str, Any]) -> _TableState:
    info = infos.get(conn, dt.table)
    flt = row_filter(info.name, filters.get(info.name.lower()), parameters)
    server = guard.server
    anchor = (guard.decode(dt.anchor, info.name) if dt.anchor
              else HubAnchor(server, flt.fingerprint, 0))
    w = anchor.window
    if w is not None and (w.upper > upper or w.snapshot != dt.snapshot):
        raise ReinitialiseRequired(
            info.name, f'sqlite-ct sync: the received anchor of table "{info.name}" does not '
                       f"belong to this download session; reinitialise the table")
    if not dt.snapshot and not info.tracked:
        raise SyncError(f'sqlite-ct sync: table "{info.name}" is not provisioned on the hub; '
                        f'call ServerSyncProvider.provision("{info.name}")')
    reset = dt.snapshot and not dt.anchor
    if reset:
        anchor = HubAnchor(server, flt.fingerprint, 0,
                           Window(upper, 0, False, True, PHASE_SNAPSHOT, 0, None))
    reader = _TableReader(conn, info, flt, client, upload_floor(conn, client, info.name))
    return _TableState(dt.snapshot, info, flt, anchor, reader,
                       reset)


def _advance(st: _TableState, upper: int, budget: Optional[int],
             deletes_only: bool) -> Optional[int]:
    """Read `st` forward within `budget`; returns what is left of it."""
    while budget is None or budget > 0:
        w = st.anchor.window
        if w is None:
            if not st.pending(upper):
                break
            w = _open_window(st.info, st.flt, st.anchor, upper)
            st.anchor = dataclasses.replace(st.anchor, window=w)
        if deletes_only and w.phase != PHASE_DELETES:
            break
        n, exhausted, w = st.reader.fetch(w, budget)
        if budget is not None:
            budget -= n
        nxt = _next_phase(w) if exhausted else w
        st.anchor = (HubAnchor(st.anchor.server, st.flt.fingerprint, w.upper) if nxt is None
                     else dataclasses.replace(st.anchor, window=nxt))
    return budget


def _open_window(info: TableInfo, flt: RowFilter, anchor: HubAnchor, upper: int) -> Window:
    complete = anchor.complete
    if complete and complete < info.min_valid:
        raise ReinitialiseRequired(
            info.name,
            f'sqlite-ct sync: the hub purged tombstones of table "{info.name}" newer than '
            f"this client's anchor (CSN {complete} < {info.min_valid}); reinitialise the "
            f"table on the client (SyncAgent.reinitialise() or `sqlite-ct reinitialise`; "
            f"it keeps unsent local changes)")
    rescope = bool(complete) and anchor.fingerprint != flt.fingerprint
    window = Window(upper, 0 if rescope else complete, rescope, False, PHASE_DELETES,
                    complete, None)
    if not complete:
        # A first download: the client holds no hub rows, so no deletes to
        # send (Sync Services skipped them too, @sync_initialized = 0).
        window = _next_phase(window)
    return window


UPLOADS_TABLE = "__sysSyncUploads"


def upload_floor(conn: Any, client: bytes, table: str) -> Optional[int]:
    """The hub CSN of the client's earliest upload of `table` that its
    downloads may not have covered yet (__sysSyncUploads), or None."""
    if _sql.table_exists(conn, UPLOADS_TABLE) is None:
        return None
    value = _sql.value(conn, f"SELECT Floor FROM main.{UPLOADS_TABLE} "
                             f"WHERE ClientId = ? AND TName = ?", (client, table))
    return None if value is None else int(value)


def record_upload(conn: Any, client: bytes, table: str, bsn: int, complete: int) -> None:
    """In the upload's transaction: an upload of `table` at hub CSN `bsn` from
    a client whose anchor had `complete`. The floor moves up to `bsn` only
    once that anchor covers the previous floor (its download got past it);
    until then every upload since the floor may be the client's own."""
    _sql.execute(conn, f"CREATE TABLE IF NOT EXISTS main.{UPLOADS_TABLE}("
                       f"ClientId BLOB NOT NULL, TName TEXT NOT NULL, Floor INTEGER NOT NULL, "
                       f"PRIMARY KEY(ClientId, TName)) WITHOUT ROWID")
    _sql.execute(conn, f"INSERT INTO main.{UPLOADS_TABLE}(ClientId, TName, Floor) "
                       f"VALUES (:c, :t, :b) ON CONFLICT(ClientId, TName) DO UPDATE SET "
                       f"Floor = :b WHERE Floor <= :complete",
                 {"c": client, "t": table, "b": bsn, "complete": complete})
