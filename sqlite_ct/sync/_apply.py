"""Applying a group's incoming changes, with conflict detection: the engine
the client (downloads) and the server (uploads) share.

HOW IT WORKS. Each table's incoming rows are copied into a TEMP staging table
(executemany; columns without affinity so values arrive unchanged). One
set-based query per table joins the staging table to the target table and
returns the conflicting rows; the side (client or server) supplies that
query, because each side defines "conflict" differently (see client.py and
server.py). The remaining rows are applied with one statement per table and
kind, in Sync Services' order: deletes in reverse table order, then inserts,
then updates, inserts and updates as upserts. If such a statement fails on a
row (a constraint, a datatype), it is undone and that table's rows of that
kind are applied one by one, each in a savepoint; rows that fail are retried
while others succeed (a UNIQUE value moving from one row to another succeeds
on the second pass), and the rest become ErrorsOccurred conflicts. Conflicts
are resolved last, one at a time, by the side's ConflictResolver or its
on_apply_change_failed callback.

CLIENT TRANSACTIONS. An upload's changes carry the client transaction each
belongs to (TableChanges.transactions). Apply.failed_transactions lists the
transactions one of whose changes was not applied (a conflict resolved with
CONTINUE or DEFER, a row error). The hub then rolls the attempt back and
applies the upload again with those transactions excluded (apply_atomic):
their changes are staged but neither detected nor applied, and each is
reported as failed, with the conflict that failed its transaction or, for
the others, an ErrorsOccurred conflict naming it, deferred to the client's
inbox. Changes without a transaction stand alone.

All of it runs inside the caller's transaction.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import itertools
from typing import (Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence,
                    Tuple, TypeVar)

from . import _sql
from ._sql import TableInfo, q
from .enums import ApplyAction, ConflictType, ResolveAction, SyncStage
from .errors import SyncError
from .messages import TableChanges
from .model import Conflict, ConflictResolver, Row

OP_DELETE, OP_INSERT, OP_UPDATE = 0, 1, 2
MAX_ATTEMPTS = 5

# Codes the detection queries return for each conflict type.
CODES = {
    1: ConflictType.CLIENT_INSERT_SERVER_INSERT,
    2: ConflictType.CLIENT_UPDATE_SERVER_UPDATE,
    3: ConflictType.CLIENT_UPDATE_SERVER_DELETE,
    4: ConflictType.CLIENT_DELETE_SERVER_UPDATE,
}
CISI, CUSU, CUSD, CDSU = 1, 2, 3, 4

_stage_ids = itertools.count(1)
Handler = Callable[[Conflict], ApplyAction]


@dataclasses.dataclass
class Staged:
    """One table's incoming changes, staged."""
    info: TableInfo
    changes: TableChanges
    stage: str                          # quoted TEMP table name
    columns: Tuple[str, ...]            # incoming columns, local spelling
    key_pos: Tuple[int, ...]            # positions of the key in `columns`
    rows: Dict[int, Tuple[int, tuple]]  # _seq -> (op, values in `columns` order)
    counts: Dict[int, int]              # op -> number of staged rows
    conflicts: Dict[int, Tuple[ConflictType, Optional[str]]] = dataclasses.field(
        default_factory=dict)
    txns: Dict[int, int] = dataclasses.field(default_factory=dict)   # _seq -> transaction
    excluded: Dict[int, int] = dataclasses.field(default_factory=dict)  # _seq -> transaction

    def pending(self, seq: int) -> bool:
        """Neither a detected conflict nor excluded with its transaction."""
        return seq not in self.conflicts and seq not in self.excluded

    def scol(self, i: int) -> str:
        return f"s.c{i}"

    def skey(self) -> List[str]:
        return [self.scol(i) for i in self.key_pos]

    def key_of(self, values: tuple) -> Row:
        return {self.columns[i]: values[i] for i in self.key_pos}


@dataclasses.dataclass
class ApplyResult:
    applied: int = 0
    failed: int = 0
    conflicts: List[Conflict] = dataclasses.field(default_factory=list)
    corrections: List[TableChanges] = dataclasses.field(default_factory=list)

    def add(self, other: "ApplyResult") -> None:
        self.applied += other.applied
        self.failed += other.failed
        self.conflicts.extend(other.conflicts)
        self.corrections.extend(other.corrections)


class Side(abc.ABC):
    """What differs between applying on the client and on the server."""
    stage: SyncStage
    where: str                       # "client" or "server", for messages
    incoming_wins: ResolveAction     # the ResolveAction that means "force it"

    def __init__(self, conn: Any, resolver: ConflictResolver, handler: Optional[Handler],
                 infos: _sql.TableInfoCache) -> None:
        self.conn = conn
        self.resolver = resolver
        self.handler = handler
        self.infos = infos

    @abc.abstractmethod
    def detect_sql(self, st: Staged, extra: str) -> Optional[Tuple[str, Dict[str, Any]]]:
        """SELECT s._seq, <conflict code> for the conflicting staged rows (AND
        `extra`), or None when this table has no conflicts to detect."""

    @abc.abstractmethod
    def conflict(self, ctype: ConflictType, st: Staged, key: Row,
                 incoming: Optional[Row], local: Optional[Row],
                 error: Optional[str]) -> Conflict:
        """A Conflict with client_row and server_row in their places."""

    @abc.abstractmethod
    def incoming_row(self, conflict: Conflict) -> Optional[Row]:
        """The incoming side's (possibly edited) row of a conflict."""

    @abc.abstractmethod
    @contextlib.contextmanager
    def writing(self, merged: bool) -> Iterator[None]:
        """Around a resolution's write; `merged` when the row written differs
        from the incoming one, so it must travel back as a new change."""

    def force_extra(self, st: Staged, key: Row) -> None:
        """Extra work of a forced write (the client drops pending tombstones)."""

    def skipped(self, st: Staged, op: int, key: Row, result: ApplyResult) -> None:
        """An incoming change was not applied (CONTINUE)."""

    def force_done(self, st: Staged, key: Row, merged: bool) -> None:
        """After a forced write of `key` (the client stamps the server's
        version as applied)."""

    def defer(self, conflict: Conflict) -> None:
        """Keep a conflict the resolver deferred (ResolveAction.DEFER)."""

    def finish(self, staged: Sequence[Staged]) -> None:
        """After every change and conflict of the group, with the staging
        tables still there."""


class _Again(Exception):
    """An attempt failed client transactions it had not excluded."""

    def __init__(self, failed: Dict[int, Conflict]) -> None:
        super().__init__("client transactions failed")
        self.failed = failed


T = TypeVar("T")


def apply_atomic(savepoint: Callable[[], ContextManager[Any]],
                 attempt: Callable[[Dict[int, Conflict]], Tuple[T, Dict[int, Conflict]]]) -> T:
    """Run `attempt(excluded)` in `savepoint()` until it fails no client
    transaction it did not exclude; each time it does, the savepoint is rolled
    back and those transactions are excluded too. `attempt` returns its
    result and the transactions it failed (transaction -> the conflict that
    failed it). Every round excludes at least one more transaction, so this
    ends. The resolver is asked again about the conflicts of the next round."""
    excluded: Dict[int, Conflict] = {}
    while True:
        try:
            with savepoint():
                out, failed = attempt(dict(excluded))
                new = {t: c for t, c in failed.items() if t not in excluded}
                if new:
                    raise _Again(new)
                return out
        except _Again as again:
            excluded.update(again.failed)


def left_out_error(txn: int, cause: Conflict, where: str) -> str:
    """The error of a change not applied because another change of its client
    transaction `txn` was not (`cause`), the same on every hub."""
    why = f"{cause.type.value} on the {where}" if cause.error is None else cause.error
    return (f"not applied with the rest of its client transaction {txn}: the change of table "
            f'"{cause.table}" key {cause.key!r} in it was not ({why})')


def left_out(conflict: Conflict, txn: int) -> Conflict:
    """Mark `conflict` as a change left out with its transaction: skipped and
    deferred to the client's inbox, where the whole transaction can be
    settled together."""
    conflict.transaction = txn
    conflict.action = ApplyAction.CONTINUE
    conflict.deferred = True
    return conflict


def decide(resolver: ConflictResolver, handler: Optional[Handler], conflict: Conflict,
           where: str, incoming_wins: ResolveAction) -> ApplyAction:
    """What to do with a conflict, for every hub and the client: the
    resolver's choice for its type, asking `handler` on FIRE_EVENT.
    `where` ("client"/"server") names the side in errors; `incoming_wins` is
    the choice by which the incoming change wins there."""
    choice = resolver.action_for(conflict.type)
    if choice is ResolveAction.FIRE_EVENT and handler is None \
            and conflict.type in (ConflictType.ERRORS_OCCURRED, ConflictType.UNKNOWN):
        # A store error has no winner to pick: kept in the inbox, the rest of
        # the sync goes on (a row that cannot be applied must not block every
        # later sync).
        choice = ResolveAction.DEFER
    if choice is ResolveAction.FIRE_EVENT:
        if handler is None:
            raise SyncError(
                f'sqlite-ct sync: {conflict.type.value} conflict on table "{conflict.table}" '
                f"key {conflict.key!r} on the {where}"
                + (f" ({conflict.error})" if conflict.error else "")
                + "; the conflict resolver says FIRE_EVENT but the provider has no "
                  "on_apply_change_failed handler")
        action = handler(conflict)
        if not isinstance(action, ApplyAction):
            raise SyncError(f"sqlite-ct sync: on_apply_change_failed returned {action!r}, "
                            f"not an ApplyAction")
        return action
    if choice is ResolveAction.DEFER:
        conflict.deferred = True
        return ApplyAction.CONTINUE
    if choice is incoming_wins:
        return ApplyAction.RETRY_WITH_FORCE_WRITE
    return ApplyAction.CONTINUE


class Applier:
    """Applies a group's TableChanges on one side, inside the caller's transaction."""

    def __init__(self, side: Side, excluded: Optional[Dict[int, Conflict]] = None) -> None:
        self.side = side
        self.conn = side.conn
        self.result = ApplyResult()
        # Transactions left out (see CLIENT TRANSACTIONS): transaction -> the
        # conflict that failed it.
        self.excluded: Dict[int, Conflict] = dict(excluded or {})
        # Transactions one of whose changes was not applied in this attempt.
        self.failed_transactions: Dict[int, Conflict] = {}

    # -- staging ---------------------------------------------------------
    def _stage(self, tc: TableChanges) -> Staged:
        info = self.side.infos.get(self.conn, tc.table)
        _sql.check_columns(info, tc.columns, tc.key_columns, self.side.where)
        local = {c.lower(): c for c in info.columns}
        columns = tuple(local[c.lower()] for c in tc.columns)
        lower = [c.lower() for c in columns]
        key_pos = tuple(lower.index(k.lower()) for k in info.key)
        stage = q(f"ct_sync_stage_{next(_stage_ids)}")
        ncol = len(columns)
        defs = "".join(f", c{i}" for i in range(ncol))
        _sql.execute(self.conn, f"CREATE TEMP TABLE {stage}(_seq INTEGER PRIMARY KEY, "
                                f"_op INTEGER NOT NULL, _ct INTEGER{defs})")
        rows: Dict[int, Tuple[int, tuple]] = {}
        seq = itertools.count(1)
        if tc.transactions and len(tc.transactions) != len(tc):
            raise SyncError(f'sqlite-ct sync: table "{tc.table}": {len(tc.transactions)} '
                            f"transaction id(s) for {len(tc)} change(s)")
        txns: Dict[int, int] = {}
        excluded: Dict[int, int] = {}
        out = self.excluded

        def gen() -> Iterator[tuple]:
            blank = [None] * ncol
            given = iter(tc.transactions)
            for op, lst in ((OP_DELETE, tc.deletes), (OP_INSERT, tc.inserts),
                            (OP_UPDATE, tc.updates)):
                for r in lst:
                    if op == OP_DELETE:
                        values = list(blank)
                        for pos, v in zip(key_pos, r):
                            values[pos] = v
                        r = tuple(values)
                    n = next(seq)
                    rows[n] = (op, tuple(r))
                    txn = next(given, None) or None   # 0: the change stands alone
                    ct = None
                    if txn is not None:
                        txns[n] = txn
                        if txn in out:
                            excluded[n] = txn
                            ct = 2
                    yield (n, op, ct, *r)

        marks = ", ".join("?" for _ in range(ncol + 3))
        names = "".join(f", c{i}" for i in range(ncol))
        _sql.executemany(self.conn, f"INSERT INTO {stage}(_seq, _op, _ct{names}) "
                                    f"VALUES ({marks})", gen())
        counts = {OP_DELETE: len(tc.deletes), OP_INSERT: len(tc.inserts),
                  OP_UPDATE: len(tc.updates)}
        return Staged(info, tc, stage, columns, key_pos, rows, counts, txns=txns,
                      excluded=excluded)

    def _detect(self, st: Staged, extra: str = "") -> Dict[int, ConflictType]:
        built = self.side.detect_sql(st, extra)
        if built is None:
            return {}
        sql, params = built
        return {seq: CODES[code] for seq, code in _sql.rows(self.conn, sql, params)}

    # -- statements --------------------------------------------------------
    def _delete_sql(self, st: Staged, where: str) -> str:
        info, t = st.info, q(st.info.name)
        if info.without_rowid:
            keys = ", ".join(q(k) for k in info.key)
            return (f"DELETE FROM main.{t} WHERE ({keys}) IN "
                    f"(SELECT {', '.join(st.skey())} FROM {st.stage} AS s WHERE {where})")
        rid = q(info.rowid)
        return (f"DELETE FROM main.{t} WHERE {rid} IN (SELECT t.{rid} FROM {st.stage} AS s "
                f"JOIN main.{t} AS t ON {info.key_match('t', st.skey())} WHERE {where})")

    def _upsert_sql(self, st: Staged, where: str, extra_set: str = "") -> str:
        t = q(st.info.name)
        cols = ", ".join(q(c) for c in st.columns)
        scols = ", ".join(st.scol(i) for i in range(len(st.columns)))
        keys = ", ".join(q(k) for k in st.info.key)
        sets = [f"{q(c)} = excluded.{q(c)}" for i, c in enumerate(st.columns)
                if i not in st.key_pos]
        if extra_set:
            sets.append(extra_set)
        action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
        return (f"INSERT INTO main.{t} ({cols}) SELECT {scols} FROM {st.stage} AS s "
                f"WHERE {where} ORDER BY s._seq ON CONFLICT ({keys}) {action}")

    def _row_sql(self, st: Staged, op: int, extra_set: str = "") -> str:
        where = "s._seq = :seq"
        if op == OP_DELETE:
            return self._delete_sql(st, where)
        return self._upsert_sql(st, where, extra_set)

    # -- the group ---------------------------------------------------------
    def apply(self, tables: Sequence[TableChanges]) -> ApplyResult:
        staged = [self._stage(tc) for tc in tables if len(tc) or tc.reset]
        try:
            for st in staged:
                for seq, ctype in self._detect(st, "s._ct IS NULL" if st.excluded
                                               else "").items():
                    st.conflicts[seq] = (ctype, None)
                if st.conflicts:
                    _sql.executemany(self.conn, f"UPDATE {st.stage} SET _ct = 1 WHERE _seq = ?",
                                     [(s,) for s in st.conflicts])
            steps = ([(st, OP_DELETE) for st in reversed(staged)]
                     + [(st, OP_INSERT) for st in staged] + [(st, OP_UPDATE) for st in staged])
            for st, op in steps:
                if op == OP_DELETE and st.changes.reset:
                    _sql.execute(self.conn, f"DELETE FROM main.{q(st.info.name)}")
                self._apply_set(st, op)
            for st, op in steps:
                for seq in sorted(s for s in st.conflicts if st.rows[s][0] == op):
                    self._resolve(st, seq)
            for st, op in steps:
                for seq in sorted(s for s in st.excluded if st.rows[s][0] == op):
                    self._left_out(st, seq)
            self.side.finish(staged)
        finally:
            for st in staged:
                _sql.execute(self.conn, f"DROP TABLE IF EXISTS temp.{st.stage}")
        return self.result

    def _apply_set(self, st: Staged, op: int) -> None:
        count = sum(1 for s, (o, _) in st.rows.items() if o == op and st.pending(s))
        if not count:
            return
        where = f"s._op = {op} AND s._ct IS NULL"
        sql = self._delete_sql(st, where) if op == OP_DELETE else self._upsert_sql(st, where)
        try:
            with _sql.savepoint(self.conn):
                _sql.execute(self.conn, sql)
            self.result.applied += count
            return
        except _sql.host_errors() as exc:
            if not _sql.is_row_error(exc):
                raise
        # Row by row, retrying failures while others succeed.
        row_sql = self._row_sql(st, op)
        pending = [s for s, (o, _) in st.rows.items() if o == op and st.pending(s)]
        errors: Dict[int, str] = {}
        while pending:
            failed = []
            for seq in pending:
                try:
                    with _sql.savepoint(self.conn):
                        _sql.execute(self.conn, row_sql, {"seq": seq})
                    self.result.applied += 1
                except _sql.host_errors() as exc:
                    if not _sql.is_row_error(exc):
                        raise
                    failed.append(seq)
                    errors[seq] = str(exc)
            if len(failed) == len(pending):
                break
            pending = failed
        for seq in pending:
            st.conflicts[seq] = (ConflictType.ERRORS_OCCURRED, errors[seq])

    # -- conflicts ---------------------------------------------------------
    def _local_row(self, st: Staged, key: Row) -> Optional[Row]:
        info = st.info
        cols = ", ".join(q(c) for c in info.columns)
        marks = [f":k{i}" for i in range(len(info.key))]
        params = {f"k{i}": key[c] for i, c in
                  enumerate(st.columns[p] for p in st.key_pos)}
        for row in _sql.rows(self.conn, f"SELECT {cols} FROM main.{q(info.name)} "
                                         f"WHERE {info.key_match('', marks)}", params):
            return dict(zip(info.columns, row))
        return None

    def _decide(self, conflict: Conflict) -> ApplyAction:
        side = self.side
        return decide(side.resolver, side.handler, conflict, side.where, side.incoming_wins)

    def _resolve(self, st: Staged, seq: int) -> None:
        side = self.side
        op, values = st.rows[seq]
        ctype, error = st.conflicts[seq]
        key = st.key_of(values)
        incoming = None if op == OP_DELETE else dict(zip(st.columns, values))
        # The handler may edit the conflict's copy; `incoming` stays as it came.
        conflict = side.conflict(ctype, st, key, None if incoming is None else dict(incoming),
                                 self._local_row(st, key), error)
        conflict.transaction = st.txns.get(seq)
        conflict.connection = self.conn
        for attempt in range(1, MAX_ATTEMPTS + 1):
            conflict.attempts = attempt
            action = self._decide(conflict)
            conflict.action = action
            if action is ApplyAction.CONTINUE:
                self.result.failed += 1
                side.skipped(st, op, key, self.result)
                if conflict.deferred:
                    side.defer(conflict)
                if conflict.transaction is not None:
                    self.failed_transactions.setdefault(conflict.transaction, conflict)
                break
            row = side.incoming_row(conflict)
            merged = row != incoming
            try:
                with _sql.savepoint(self.conn), side.writing(merged):
                    if action is ApplyAction.RETRY_WITH_FORCE_WRITE:
                        self._force(st, key, row, merged)
                        done = True
                    else:
                        done = self._retry(st, seq, op, row, merged)
            except _sql.host_errors() as exc:
                if not _sql.is_row_error(exc):
                    raise
                conflict = self._refresh(conflict, st, key, ConflictType.ERRORS_OCCURRED,
                                         str(exc))
                continue
            if done:
                self.result.applied += 1
                break
            new_type = self._detect(st, f"s._seq = {seq}").get(seq)
            conflict = self._refresh(conflict, st, key, new_type or ctype, None)
        else:
            raise SyncError(
                f'sqlite-ct sync: the {conflict.type.value} conflict on table "{st.info.name}" '
                f"key {key!r} on the {side.where} is still unresolved after {MAX_ATTEMPTS} "
                f"attempts (last action {action.value})"
                + (f"; last error: {conflict.error}" if conflict.error else ""))
        conflict.connection = None
        self.result.conflicts.append(conflict)

    def _refresh(self, old: Conflict, st: Staged, key: Row, ctype: ConflictType,
                 error: Optional[str]) -> Conflict:
        incoming = self.side.incoming_row(old)
        new = self.side.conflict(ctype, st, key, None if incoming is None else dict(incoming),
                                 self._local_row(st, key), error)
        new.transaction = old.transaction
        new.connection = self.conn
        return new

    def _left_out(self, st: Staged, seq: int) -> None:
        """A change of a transaction excluded after another of its changes
        failed: not applied, reported as that failure (for the change that
        failed) or as an ErrorsOccurred conflict naming it, deferred."""
        op, values = st.rows[seq]
        key = st.key_of(values)
        txn = st.excluded[seq]
        cause = self.excluded[txn]
        self.result.failed += 1
        self.side.skipped(st, op, key, self.result)
        if cause.table.lower() == st.info.name.lower() and cause.key == key:
            self.result.conflicts.append(cause)
            return
        incoming = None if op == OP_DELETE else dict(zip(st.columns, values))
        conflict = self.side.conflict(ConflictType.ERRORS_OCCURRED, st, key, incoming,
                                      self._local_row(st, key),
                                      left_out_error(txn, cause, self.side.where))
        left_out(conflict, txn)
        self.side.defer(conflict)
        self.result.conflicts.append(conflict)

    def _force(self, st: Staged, key: Row, row: Optional[Row], merged: bool) -> None:
        self.side.force_extra(st, key)
        info, t = st.info, q(st.info.name)
        if row is None:
            marks = [f":k{i}" for i in range(len(info.key))]
            params = {f"k{i}": key[st.columns[p]] for i, p in enumerate(st.key_pos)}
            _sql.execute(self.conn, f"DELETE FROM main.{t} WHERE {info.key_match('', marks)}",
                          params)
            return
        cols = [c for c in st.columns if c in row]
        names = ", ".join(q(c) for c in cols)
        marks = ", ".join(f":v{i}" for i in range(len(cols)))
        keys = ", ".join(q(k) for k in info.key)
        sets = [f"{q(c)} = excluded.{q(c)}" for c in cols if c not in info.key]
        action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
        _sql.execute(self.conn, f"INSERT INTO main.{t} ({names}) VALUES ({marks}) "
                                 f"ON CONFLICT ({keys}) {action}",
                      {f"v{i}": row[c] for i, c in enumerate(cols)})
        self.side.force_done(st, key, merged)

    def _retry(self, st: Staged, seq: int, op: int, row: Optional[Row], merged: bool) -> bool:
        """Detect again and apply if the conflict is gone; False if it is not."""
        if merged and row is not None:
            sets = ", ".join(f"c{i} = :v{i}" for i in range(len(st.columns)))
            _sql.execute(self.conn, f"UPDATE {st.stage} SET {sets} WHERE _seq = :seq",
                          {"seq": seq, **{f"v{i}": row.get(c) for i, c in enumerate(st.columns)}})
        if self._detect(st, f"s._seq = {seq}"):
            return False
        _sql.execute(self.conn, self._row_sql(st, OP_DELETE if row is None else op),
                      {"seq": seq})
        return True
