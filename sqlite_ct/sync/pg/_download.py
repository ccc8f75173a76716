"""Reading download batches on the PostgreSQL hub (the counterpart of
sqlite_ct/sync/_download.py, same rules, anchors of _anchor.py).

What a client is sent for a table's window (rows visible in the session's
upper snapshot and not in the client's `complete` snapshot):
- a delete for each tombstone in the window that the client did not write
  itself, except on a first download (the client holds no hub rows);
- every live row changed in the window that matches the client's filter and
  whose latest change is not the client's own (no echo), the client's own too
  on a first download or a rescope (a reinitialised or restored client may
  not hold them any more);
- a delete ("move-out") for each row changed in the window that does not
  match the filter (on a first download only the client's own uploads);
- when the filter or its parameters changed (rescope), every row of the
  table is re-read: matching rows are sent, the others are moved out.
One REPEATABLE READ, READ ONLY transaction reads a batch; every query is a
range scan of the side table's (change_xid, key) index resuming after the
anchor's cursor.

An anchor that moves to a newer snapshot needs a mark committed after that
snapshot (_marks.py): read_batch() says whether one is needed, and the
caller writes it after the read transaction, then encodes the anchors
(PendingBatch.finish). A table with nothing new for the client since its
anchor (no side-table row in the window, its own changes included) takes the
newest mark's snapshot, or keeps its own, so a sync with nothing to do writes
nothing (but see _marks.REFRESH_SECONDS).
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import ReinitialiseRequired, SyncError
from ..messages import DownloadBatch, DownloadRequest, DownloadTable, TableChanges
from . import _types
from . import _marks
from ._anchor import (NO_MARK, PHASE_DELETES, PHASE_ROWS, PHASE_SNAPSHOT, HubKey, Mark,
                      PgAnchor, Window, adopt_legacy, check_key_width, check_marks,
                      check_not_ahead, decode_session, encode_session, snapshot_xmin)
from ._schema import PgTable, qi

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_NO_FILTER = b"\0" * 8
_RESERVED = "sqlite_ct_"
_KIND_DELETE, _KIND_INSERT, _KIND_UPDATE = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class RowFilter:
    """A table's filter for one client, as PostgreSQL SQL with psycopg
    placeholders, its parameters and a fingerprint that changes when either
    does."""
    sql: str
    params: Dict[str, Any]
    fingerprint: bytes


def row_filter(table: str, where: Optional[str], parameters: Mapping[str, Any]) -> RowFilter:
    """`where` uses :name parameters (PostgreSQL casts, x::text, are left alone)."""
    if not where:
        return RowFilter("true", {}, _NO_FILTER)
    params: Dict[str, Any] = {}
    for name in sorted(set(_PARAM.findall(where))):
        if name.lower().startswith(_RESERVED):
            raise SyncError(f'sqlite-ct sync: the filter of table "{table}" uses parameter '
                            f'":{name}"; names starting with sqlite_ct_ are reserved')
        if name not in parameters:
            raise SyncError(f'sqlite-ct sync: the filter of table "{table}" needs parameter '
                            f'":{name}"; pass it in SyncAgent(parameters={{"{name}": ...}})')
        params[name] = parameters[name]
    sql = _PARAM.sub(lambda m: f"%({m.group(1)})s", where.replace("%", "%%"))
    digest = hashlib.sha256(repr((where, sorted(params.items()))).encode()).digest()[:8]
    return RowFilter(sql, params, digest)


def _bind(**params: Any) -> Dict[str, Any]:
    return {_RESERVED + k: v for k, v in params.items()}


def _p(name: str) -> str:
    return f"%({_RESERVED}{name})s"


class _TableReader:
    def __init__(self, cur: Any, info: PgTable, flt: RowFilter, client: uuid.UUID) -> None:
        self.cur = cur
        self.info = info
        self.flt = flt
        self.client = client
        self.changes = TableChanges(info.name, info.columns, info.key)
        self._convs = info.to_sqlite()
        self._key_convs = tuple(self._convs[i] for i in info.key_pos)
        self._sent: set = set()

    def _cursor_cond(self, w: Window, with_xid: bool, alias: str) -> Tuple[str, Dict[str, Any]]:
        info = self.info
        if w.cursor_key is None:
            return "", {}
        cols = [f"{alias}.{qi(k)}" for k in info.key]
        vals = [f"{_p(f'ck{i}')}::{info.type_of(k)}" for i, k in enumerate(info.key)]
        params = _bind(**{f"ck{i}": v for i, v in enumerate(w.cursor_key)})
        if with_xid:
            cols.insert(0, f"{alias}.change_xid")
            vals.insert(0, f"{_p('cx')}::text::xid8")
            params.update(_bind(cx=str(w.cursor_xid)))
        return f" AND ({', '.join(cols)}) > ({', '.join(vals)})", params

    def _window_cond(self, w: Window, since: Optional[str]) -> Tuple[str, Dict[str, Any]]:
        cond = (f"pg_visible_in_snapshot(s.change_xid, {_p('up')}::pg_snapshot) "
                f"AND s.change_xid < pg_snapshot_xmax({_p('up')}::pg_snapshot)")
        params = _bind(up=w.upper)
        if since is not None:
            cond += (f" AND s.change_xid >= pg_snapshot_xmin({_p('since')}::pg_snapshot) "
                     f"AND NOT pg_visible_in_snapshot(s.change_xid, {_p('since')}::pg_snapshot)")
            params.update(_bind(since=since))
        return cond, params

    def fetch(self, w: Window, complete: Optional[str], budget: Optional[int]
              ) -> Tuple[int, bool, Window]:
        info = self.info
        keys_text = ", ".join(f"s.{qi(k)}::text" for k in info.key)
        order_keys = ", ".join(f"s.{qi(k)}" for k in info.key)
        limit = "" if budget is None else f" LIMIT {int(budget)}"
        params: Dict[str, Any] = {}
        if w.phase == PHASE_DELETES:
            cond, params = self._window_cond(w, complete)
            cur_cond, cp = self._cursor_cond(w, True, "s")
            keys = ", ".join(f"s.{qi(k)}" for k in info.key)
            sql = (f"SELECT s.change_xid::text, {keys_text}, {keys} FROM {info.qside} AS s "
                   f"WHERE s.deleted AND s.context IS DISTINCT FROM {_p('x')}::uuid "
                   f"AND {cond}{cur_cond} ORDER BY s.change_xid, {order_keys}{limit}")
            params.update(cp, **_bind(x=self.client))
        else:
            match = f"coalesce(({self.flt.sql}), false)"
            inner = ", ".join(qi(c) for c in info.columns)
            t_cols = ", ".join(_types.select_expr(cat, f"t.{qi(c)}")
                               for c, cat in zip(info.columns, info.cats))
            rows_since = None if (w.move_all or complete is None) else complete
            if w.snapshot:
                kind, emit = str(_KIND_INSERT), "t.sqlite_ct_match"
            else:
                ins = ("true" if rows_since is None else
                       f"NOT pg_visible_in_snapshot(s.insert_xid, {_p('since')}::pg_snapshot)")
                kind = (f"CASE WHEN NOT t.sqlite_ct_match THEN {_KIND_DELETE} "
                        f"WHEN {ins} THEN {_KIND_INSERT} ELSE {_KIND_UPDATE} END")
                moves = "true" if rows_since is not None or w.move_all else \
                    f"s.context IS NOT DISTINCT FROM {_p('x')}::uuid"
                # The client's own latest writes are left out only when it is
                # known to hold them: not on a first download or a rescope,
                # which a reinitialised, restored or rescoped client starts with.
                not_own = ("true" if rows_since is None
                           else f"s.context IS DISTINCT FROM {_p('x')}::uuid")
                emit = (f"((t.sqlite_ct_match AND {not_own}) "
                        f"OR (NOT t.sqlite_ct_match AND {moves}))")
            source = (f"(SELECT {inner}, {match} AS sqlite_ct_match FROM {info.qname}) AS t")
            params = {**self.flt.params, **_bind(x=self.client)}
            if w.snapshot:
                cur_cond, cp = self._cursor_cond(w, False, "t")
                sql = (f"SELECT '0', {', '.join(f't.{qi(k)}::text' for k in info.key)}, "
                       f"{kind}, {t_cols} FROM {source} WHERE {emit}{cur_cond} "
                       f"ORDER BY {', '.join(f't.{qi(k)}' for k in info.key)}{limit}")
            else:
                cond, wp = self._window_cond(w, rows_since)
                cur_cond, cp = self._cursor_cond(w, True, "s")
                sql = (f"SELECT s.change_xid::text, {keys_text}, {kind}, {t_cols} "
                       f"FROM {info.qside} AS s JOIN {source} ON {info.key_join('s', 't')} "
                       f"WHERE NOT s.deleted AND {cond} AND {emit}{cur_cond} "
                       f"ORDER BY s.change_xid, {order_keys}{limit}")
                params.update(wp)
                if rows_since is not None:
                    params.update(_bind(since=rows_since))
            params.update(cp)
        nkey = len(info.key)
        got, last = 0, None
        for row in self.cur.execute(sql, params).fetchall():
            got += 1
            last = row
            if w.phase == PHASE_DELETES:
                self._delete(_types.row_to_sqlite(row[1 + nkey:], self._key_convs))
            else:
                values = _types.row_to_sqlite(row[2 + nkey:], self._convs)
                if row[1 + nkey] == _KIND_DELETE:
                    self._delete(tuple(values[i] for i in info.key_pos))
                elif row[1 + nkey] == _KIND_INSERT:
                    self.changes.inserts.append(values)
                else:
                    self.changes.updates.append(values)
        if last is not None:
            w = dataclasses.replace(w, cursor_xid=int(last[0]),
                                    cursor_key=tuple(last[1:1 + nkey]))
        return got, budget is None or got < budget, w

    def _delete(self, key: tuple) -> None:
        if key not in self._sent:
            self._sent.add(key)
            self.changes.deletes.append(key)


@dataclasses.dataclass
class _TableState:
    snapshot: bool
    info: PgTable
    flt: RowFilter
    anchor: PgAnchor
    reader: _TableReader
    reset: bool
    sent: int = 0

    @property
    def rescope(self) -> bool:
        a = self.anchor
        return a.complete is not None and a.fingerprint != self.flt.fingerprint

    def pending(self, upper: str) -> bool:
        a = self.anchor
        if a.window is not None:
            return True
        if self.snapshot:
            return False
        return a.complete != upper or self.rescope


@dataclasses.dataclass
class PendingBatch:
    """A batch read, whose anchors are encoded once the mark of `upper` is
    known: finish(mark) with the mark of `upper` when needs_mark, else
    finish(None)."""
    key: HubKey
    upper: str
    states: List[_TableState]
    more: bool
    needs_mark: bool
    session_mark: Mark

    @property
    def tables(self) -> List[TableChanges]:
        return [dataclasses.replace(st.reader.changes, reset=st.reset) for st in self.states
                if len(st.reader.changes) or st.reset]

    def finish(self, mark: Optional[Mark]) -> DownloadBatch:
        mark = mark or self.session_mark
        anchors = {}
        for st in self.states:
            anchor = st.anchor
            if anchor.latest is not None and anchor.mark == NO_MARK:
                anchor = dataclasses.replace(anchor, mark=mark)
            anchors[st.info.name] = anchor.encode(self.key, st.info.name)
        return DownloadBatch(self.tables, anchors, encode_session(self.upper, mark, self.key),
                             self.more)


def read_batch(cur: Any, key: HubKey, request: DownloadRequest,
               infos: Mapping[str, PgTable], filters: Mapping[str, Optional[str]]
               ) -> PendingBatch:
    """One batch, read by `cur` inside a REPEATABLE READ transaction."""
    budget = request.batch_size
    if budget is not None and budget < 1:
        raise SyncError("sqlite-ct sync: batch_size must be at least 1 (or None)")
    # The anchors first: an anchor of a lost generation asks the client to
    # reinitialise (its session token would only ask it to start again).
    decoded = [PgAnchor.decode(dt.anchor, infos[dt.table.lower()].name, key)
               if dt.anchor else None for dt in request.tables]
    session, session_mark = decode_session(request.session, key)
    seen = _marks.snapshot_and_marks(
        cur, [a.mark for a in decoded if a is not None] + [session_mark])
    now, newest = seen.now, seen.newest
    names = [infos[dt.table.lower()].name for dt in request.tables]
    decoded = [adopt_legacy(a, seen.genesis, name) for a, name in zip(decoded, names)]
    found = seen.found | ({seen.genesis[0]} if seen.genesis else set())
    for dt, anchor in zip(request.tables, decoded):
        if anchor is not None and anchor.mark not in found:
            # Its mark may be gone with the tombstones it predates.
            check_not_expired(anchor.complete, infos[dt.table.lower()])
    check_marks(zip(names, decoded), found)
    if session_mark[0] and session_mark not in found:
        raise SyncError("sqlite-ct sync: the download session token names a hub state this "
                        "hub does not have (restored from a backup?); start the download "
                        "again (session=None)")
    upper = session or now
    states = [_state(cur, key.server, request.client_id, upper, dt, anchor,
                     infos[dt.table.lower()], filters, request.parameters)
              for dt, anchor in zip(request.tables, decoded)]
    for st in states:
        check_not_ahead(st.anchor, session, now, st.info.name)
    for st in reversed(states):
        budget = _advance(st, upper, budget, deletes_only=True)
    for st in states:
        budget = _advance(st, upper, budget, deletes_only=False)
    more = any(st.pending(upper) for st in states)
    needs_mark = False
    for st, old in zip(states, decoded):
        if old is not None and st.anchor.latest == old.latest:
            st.anchor = dataclasses.replace(st.anchor, mark=old.mark)
        elif old is not None and seen.fresh and _unchanged(st, old, upper):
            # Nothing new for the client: no mark to write. It takes the
            # newest mark and that mark's snapshot when that lies between its
            # own and `upper` (so its xmin moves on, and old marks can go),
            # else keeps its snapshot (and takes the newest mark if that
            # covers it). A mark older than REFRESH_SECONDS is not used:
            # then the anchor moves to `upper` under a new mark.
            assert newest is not None and old.latest is not None
            if _marks.contains(upper, newest[2]) and _marks.contains(newest[2], old.latest):
                st.anchor = dataclasses.replace(old, complete=newest[2], mark=newest[0])
            elif newest[0][0] > old.mark[0] and _marks.covers(newest[1], old.latest):
                st.anchor = dataclasses.replace(old, mark=newest[0])
            else:
                st.anchor = old
        elif st.anchor.latest is not None:
            needs_mark = needs_mark or session_mark == NO_MARK
    return PendingBatch(key, upper, states, more, needs_mark, session_mark)


def _unchanged(st: _TableState, old: PgAnchor, upper: str) -> bool:
    """Whether the table's window from `old` to `upper` was read whole and
    held no side-table row at all (nothing sent, nothing left out as the
    client's own or out of scope): then `old` says as much as an anchor at
    `upper` would."""
    if (old.window is not None or old.complete is None or st.snapshot or st.rescope
            or st.sent or st.anchor.window is not None or st.anchor.complete != upper):
        return False
    return not st.reader.cur.execute(
        f"SELECT EXISTS (SELECT 1 FROM {st.info.qside} AS s WHERE "
        f"s.change_xid >= pg_snapshot_xmin(%s::pg_snapshot) "
        f"AND s.change_xid < pg_snapshot_xmax(%s::pg_snapshot) "
        f"AND pg_visible_in_snapshot(s.change_xid, %s::pg_snapshot) "
        f"AND NOT pg_visible_in_snapshot(s.change_xid, %s::pg_snapshot))",
        (old.complete, upper, upper, old.complete)).fetchone()[0]


def _state(cur: Any, server: bytes, client: uuid.UUID, upper: str, dt: DownloadTable,
           decoded: Optional[PgAnchor], info: PgTable, filters: Mapping[str, Optional[str]],
           parameters: Mapping[str, Any]) -> _TableState:
    flt = row_filter(info.name, filters.get(info.name.lower()), parameters)
    anchor = decoded or PgAnchor(server, flt.fingerprint, None)
    check_key_width(anchor, len(info.key), info.name)
    if not dt.snapshot and not info.tracked:
        raise SyncError(f'sqlite-ct sync: table "{info.name}" is not provisioned on the hub; '
                        f'call PostgresServerProvider.provision("{info.name}")')
    reset = dt.snapshot and not dt.anchor
    if reset:
        anchor = PgAnchor(server, flt.fingerprint, None,
                          Window(upper, False, True, PHASE_SNAPSHOT, 0, None))
    return _TableState(dt.snapshot, info, flt, anchor, _TableReader(cur, info, flt, client),
                       reset)


def _advance(st: _TableState, upper: str, budget: Optional[int],
             deletes_only: bool) -> Optional[int]:
    while budget is None or budget > 0:
        w = st.anchor.window
        if w is None:
            if not st.pending(upper):
                break
            w = _open_window(st, upper)
            st.anchor = dataclasses.replace(st.anchor, window=w)
        if deletes_only and w.phase != PHASE_DELETES:
            break
        n, exhausted, w = st.reader.fetch(w, st.anchor.complete, budget)
        st.sent += n
        if budget is not None:
            budget -= n
        if not exhausted:
            st.anchor = dataclasses.replace(st.anchor, window=w)
        elif w.phase == PHASE_DELETES:
            st.anchor = dataclasses.replace(st.anchor, window=dataclasses.replace(
                w, phase=PHASE_ROWS, cursor_xid=0, cursor_key=None))
        else:
            st.anchor = PgAnchor(st.anchor.server, st.flt.fingerprint, w.upper)
    return budget


def _open_window(st: _TableState, upper: str) -> Window:
    check_not_expired(st.anchor.complete, st.info)
    phase = PHASE_ROWS if st.anchor.complete is None else PHASE_DELETES
    return Window(upper, st.rescope, False, phase, 0, None)


def check_not_expired(complete: Optional[str], info: PgTable) -> None:
    """Refuse an anchor older than a purged tombstone of the table."""
    if complete is not None and info.min_valid is not None \
            and snapshot_xmin(complete) <= info.min_valid:
        raise ReinitialiseRequired(
            info.name,
            f'sqlite-ct sync: the hub purged tombstones of table "{info.name}" newer than '
            f"this client's anchor (transaction {snapshot_xmin(complete)} <= "
            f"{info.min_valid}); reinitialise the table on the client "
            f"(SyncAgent.reinitialise() or `sqlite-ct reinitialise`; it keeps unsent "
            f"local changes)")
