"""Applying a client's upload on the PostgreSQL hub, with conflict detection:
the same steps and rules as sqlite_ct/sync/_apply.py and server.py.

HOW IT WORKS. Each table's incoming rows are converted to the columns' types
(_types.py; a value that does not fit makes its row an ErrorsOccurred
conflict) and COPYed into a temporary staging table with the target's column
types. The target rows with those keys are locked (FOR UPDATE), so a
concurrent writer cannot slip between detection and write. One set-based
query per table finds the conflicts: a hub row conflicts with an uploaded
change when someone other than this client wrote it (the side table's
context) and the client has not received that version (its change_xid is not
visible in the client's anchor snapshot, nor already read by a batched
download in progress); an update of a row that is gone is
ClientUpdateServerDelete. The other rows are applied with one statement per
table and kind (an uploaded insert of a key that was not on the hub is
inserted without overwriting: a key another transaction inserted meanwhile
is detected again instead), deletes in reverse table order, then inserts, then updates,
inserts and updates as INSERT ... ON CONFLICT DO UPDATE. If such a statement
fails on a row (a constraint, a value the column rejects), it is rolled back
to a savepoint and that table's rows of that kind are applied one by one,
retrying failures while others succeed; the rest become ErrorsOccurred
conflicts. Conflicts are resolved last by the provider's ConflictResolver or
its on_apply_change_failed callback. Client transactions travel whole, as on
the SQLite hub (sqlite_ct/sync/_apply.py, CLIENT TRANSACTIONS): the provider
runs the Applier under apply_atomic(), and the changes of an excluded
transaction are staged with _ct = 3, neither detected nor applied, and
reported.

All of it runs in the caller's transaction, with the tracking context set to
the client's id (a resolution that writes an edited row clears it, so the row
travels back to the client).
"""
from __future__ import annotations

import dataclasses
import itertools
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from .._apply import decide, left_out, left_out_error
from ..enums import ApplyAction, ConflictType, ResolveAction, SyncStage
from ..errors import SyncError
from ..messages import TableChanges
from ..model import Conflict, ConflictResolver, Row
from . import _types
from ._anchor import PHASE_ROWS, PgAnchor
from ._schema import CONTEXT_SETTING, PgTable, qi

OP_DELETE, OP_INSERT, OP_UPDATE = 0, 1, 2
MAX_ATTEMPTS = 5
CISI, CUSU, CUSD, CDSU = 1, 2, 3, 4
CODES = {CISI: ConflictType.CLIENT_INSERT_SERVER_INSERT,
         CUSU: ConflictType.CLIENT_UPDATE_SERVER_UPDATE,
         CUSD: ConflictType.CLIENT_UPDATE_SERVER_DELETE,
         CDSU: ConflictType.CLIENT_DELETE_SERVER_UPDATE}
_stage_ids = itertools.count(1)


def row_errors() -> Tuple[Type[BaseException], ...]:
    """psycopg errors that mean "this row cannot be written": constraints, a
    value the column rejects, RAISE EXCEPTION in a user trigger."""
    import psycopg
    return (psycopg.IntegrityError, psycopg.DataError, psycopg.errors.RaiseException)


@dataclasses.dataclass
class Staged:
    info: PgTable
    changes: TableChanges
    stage: str
    columns: Tuple[str, ...]              # incoming columns, hub spelling
    key_pos: Tuple[int, ...]
    rows: Dict[int, Tuple[int, tuple]]    # seq -> (op, incoming values)
    counts: Dict[int, int]
    conflicts: Dict[int, Tuple[ConflictType, Optional[str]]] = dataclasses.field(
        default_factory=dict)
    convert: Tuple[Any, ...] = ()         # per column: client value -> PostgreSQL value
    txns: Dict[int, int] = dataclasses.field(default_factory=dict)      # seq -> transaction
    excluded: Dict[int, int] = dataclasses.field(default_factory=dict)  # seq -> transaction

    def pending(self, seq: int) -> bool:
        """Neither a conflict nor excluded with its transaction."""
        return seq not in self.conflicts and seq not in self.excluded

    def key_of(self, values: tuple) -> Row:
        return {self.columns[i]: values[i] for i in self.key_pos}

    def join(self, alias: str) -> str:
        return " AND ".join(f"{alias}.{qi(k)} = s.c{self.columns.index(k)}"
                            for k in self.info.key)


def check_columns(info: PgTable, tc: TableChanges) -> Tuple[str, ...]:
    local = {c.lower(): c for c in info.columns}
    missing = [c for c in tc.columns if c.lower() not in local]
    if missing:
        raise SyncError(
            f'sqlite-ct sync: table "{info.name}" on the server has no column '
            f"{', '.join(repr(c) for c in missing)}; add it (ALTER TABLE ... ADD COLUMN) "
            f"or reinitialise the table")
    if [k.lower() for k in tc.key_columns] != [k.lower() for k in info.key]:
        raise SyncError(
            f'sqlite-ct sync: table "{info.name}" has primary key ({", ".join(info.key)}) on '
            f'the server but ({", ".join(tc.key_columns)}) on the other side')
    return tuple(local[c.lower()] for c in tc.columns)


class Applier:
    def __init__(self, conn: Any, infos: Mapping[str, PgTable], client: uuid.UUID,
                 anchors: Mapping[str, Optional[PgAnchor]], resolver: ConflictResolver,
                 handler: Any, scopes: Optional[Mapping[str, Any]] = None,
                 excluded: Optional[Mapping[int, Conflict]] = None) -> None:
        self.conn = conn
        # Client transactions left out (transaction -> the conflict that
        # failed it), and those failed in this attempt.
        self.excluded: Dict[int, Conflict] = dict(excluded or {})
        self.failed_transactions: Dict[int, Conflict] = {}
        self.scopes = scopes or {}      # table (lower case) -> the uploader's RowFilter
        self.refused: List[Conflict] = []
        self.held: Dict[str, List[tuple]] = {}     # filtered table -> uploaded keys
        self.deleted: Dict[str, List[tuple]] = {}  # filtered table -> uploaded deletes applied
        self._refused_rows: List[Tuple[PgTable, tuple, Any]] = []
        self.cur = conn.cursor()
        self.infos = infos
        self.client = client
        self.anchors = anchors
        self.resolver = resolver
        self.handler = handler
        self.applied = 0
        self.failed = 0
        self.conflicts: List[Conflict] = []
        self.corrections: Dict[str, TableChanges] = {}

    # -- values -------------------------------------------------------------
    def _convert(self, st: Staged, values: Sequence[Any], op: int) -> tuple:
        if op == OP_DELETE:
            out: List[Any] = [None] * len(st.columns)
            for i in st.key_pos:
                out[i] = st.convert[i](values[i])
            return tuple(out)
        return tuple([f(v) for f, v in zip(st.convert, values)])

    def _set_context(self, client: Optional[uuid.UUID]) -> None:
        self.cur.execute("SELECT set_config(%s, %s, true)",
                         (CONTEXT_SETTING, str(client) if client else ""))

    # -- staging ------------------------------------------------------------
    def _stage(self, tc: TableChanges) -> Staged:
        info = self.infos[tc.table.lower()]
        columns = check_columns(info, tc)
        key_pos = tuple(columns.index(k) for k in info.key)
        stage = qi(f"sqlite_ct_stage_{next(_stage_ids)}")
        defs = "".join(f", c{i} {info.type_of(c)}" for i, c in enumerate(columns))
        self.cur.execute(f"CREATE TEMP TABLE {stage} (_seq integer PRIMARY KEY, "
                         f"_op integer NOT NULL, _ct integer{defs}) ON COMMIT DROP")
        convert = tuple(_types.column_converter(info.cats[j], info.types[j], info.name, c)
                        for c, j in ((c, info.columns.index(c)) for c in columns))
        st = Staged(info, tc, stage, columns, key_pos, {}, {}, convert=convert)
        seq = itertools.count(1)
        blank = (None,) * len(columns)
        if tc.transactions and len(tc.transactions) != len(tc):
            raise SyncError(f'sqlite-ct sync: table "{tc.table}": {len(tc.transactions)} '
                            f"transaction id(s) for {len(tc)} change(s)")
        given = iter(tc.transactions)
        staged: List[tuple] = []
        for k in tc.deletes:
            values = list(blank)
            for pos, v in zip(key_pos, k):
                values[pos] = v
            staged.append((OP_DELETE, tuple(values)))
        staged += [(OP_INSERT, tuple(r)) for r in tc.inserts]
        staged += [(OP_UPDATE, tuple(r)) for r in tc.updates]
        out: List[tuple] = []
        for op, values in staged:
            n = next(seq)
            st.rows[n] = (op, values)
            txn = next(given, None) or None   # 0: the change stands alone
            ct = None
            if txn is not None:
                st.txns[n] = txn
                if txn in self.excluded:
                    st.excluded[n] = txn
                    ct = 3
            try:
                out.append((n, op, ct, *self._convert(st, values, op)))
            except _types.Unfit as exc:
                if ct is None:
                    st.conflicts[n] = (ConflictType.ERRORS_OCCURRED, str(exc))
        names = "".join(f", c{i}" for i in range(len(columns)))
        copy_sql = f"COPY {stage} (_seq, _op, _ct{names}) FROM STDIN"
        try:
            with self.conn.transaction():
                with self.cur.copy(copy_sql) as copy:
                    for row in out:
                        copy.write_row(row)
        except row_errors():
            # A value the column type rejects (varchar(n) too long, ...):
            # stage row by row, and the rows that fail are ErrorsOccurred.
            marks = ", ".join(["%s"] * (len(columns) + 3))
            for row in out:
                try:
                    with self.conn.transaction():
                        self.cur.execute(f"INSERT INTO {stage} (_seq, _op, _ct{names}) "
                                         f"VALUES ({marks})", row)
                except row_errors() as exc:
                    if row[0] not in st.excluded:
                        st.conflicts[row[0]] = (ConflictType.ERRORS_OCCURRED,
                                                str(exc).strip())
        st.counts = {OP_DELETE: len(tc.deletes), OP_INSERT: len(tc.inserts),
                     OP_UPDATE: len(tc.updates)}
        # A temporary table has no statistics until analysed: the planner
        # would take it for one row and join it by nested loops.
        self.cur.execute(f"ANALYZE {stage}")
        return st

    # -- detection ----------------------------------------------------------
    def _seen(self, info: PgTable) -> Tuple[str, Dict[str, Any]]:
        """SQL true for a side row `c` whose version the client has received."""
        anchor = self.anchors.get(info.name.lower())
        if anchor is None:
            return "false", {}
        parts, params = [], {}
        if anchor.complete is not None:
            parts.append("coalesce(pg_visible_in_snapshot(c.change_xid, "
                         "%(sq_complete)s::pg_snapshot), false)")
            params["sq_complete"] = anchor.complete
        w = anchor.window
        if w is not None and not w.snapshot and w.phase == PHASE_ROWS and w.cursor_key:
            cols = ["c.change_xid"] + [f"c.{qi(k)}" for k in info.key]
            vals = ["%(sq_cx)s::text::xid8"] + [f"%(sq_ck{i})s::{info.type_of(k)}"
                                               for i, k in enumerate(info.key)]
            parts.append("coalesce(pg_visible_in_snapshot(c.change_xid, %(sq_up)s::pg_snapshot)"
                         f" AND ({', '.join(cols)}) <= ({', '.join(vals)}), false)")
            params.update(sq_cx=str(w.cursor_xid), sq_up=w.upper,
                          **{f"sq_ck{i}": v for i, v in enumerate(w.cursor_key)})
        return (" OR ".join(parts) or "false"), params

    def _detect(self, st: Staged, only: Optional[int] = None) -> Dict[int, ConflictType]:
        info = st.info
        seen, params = self._seen(info)
        k0 = qi(info.key[0])
        sql = (f"SELECT s._seq, CASE WHEN t.{k0} IS NOT NULL THEN (CASE s._op WHEN 0 THEN {CDSU} "
               f"WHEN 1 THEN {CISI} ELSE {CUSU} END) ELSE {CUSD} END "
               f"FROM {st.stage} AS s LEFT JOIN {info.qname} AS t ON {st.join('t')} "
               f"LEFT JOIN {info.qside} AS c ON {st.join('c')} "
               f"WHERE ((t.{k0} IS NOT NULL AND c.context IS DISTINCT FROM %(sq_x)s::uuid "
               f"AND NOT ({seen})) OR (t.{k0} IS NULL AND s._op = 2))")
        params["sq_x"] = str(self.client)
        if only is not None:
            sql += " AND s._seq = %(sq_seq)s"
            params["sq_seq"] = only
        else:
            sql += " AND s._ct IS NULL"
        return {seq: CODES[code] for seq, code in self.cur.execute(sql, params)}

    # -- statements -----------------------------------------------------------
    def _delete_sql(self, st: Staged, where: str) -> str:
        return (f"DELETE FROM {st.info.qname} AS t USING {st.stage} AS s "
                f"WHERE {st.join('t')} AND {where}")

    def _upsert_sql(self, st: Staged, where: str) -> str:
        cols = ", ".join(qi(c) for c in st.columns)
        scols = ", ".join(f"s.c{i}" for i in range(len(st.columns)))
        keys = ", ".join(qi(k) for k in st.info.key)
        sets = [f"{qi(c)} = excluded.{qi(c)}" for i, c in enumerate(st.columns)
                if i not in st.key_pos]
        action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
        return (f"INSERT INTO {st.info.qname} AS t ({cols}) SELECT {scols} FROM {st.stage} AS s "
                f"WHERE {where} ORDER BY s._seq ON CONFLICT ({keys}) {action}")

    def _row_sql(self, st: Staged, op: int) -> str:
        where = "s._seq = %(seq)s"
        return self._delete_sql(st, where) if op == OP_DELETE else self._upsert_sql(st, where)

    # -- the group ------------------------------------------------------------
    def apply(self, tables: Sequence[TableChanges]) -> None:
        self._set_context(self.client)
        for tc in tables:
            if tc.own_deletes:
                self._delete_own(tc)
        staged = [self._stage(tc) for tc in tables if len(tc)]
        for st in staged:
            # In key order, so two uploads lock common rows in the same order.
            keys = ", ".join(f"t.{qi(k)}" for k in st.info.key)
            self.cur.execute(f"SELECT 1 FROM {st.info.qname} AS t JOIN {st.stage} AS s "
                             f"ON {st.join('t')} ORDER BY {keys} FOR UPDATE OF t")
            self._refuse_out_of_scope(st)
            for seq, ctype in self._detect(st).items():
                st.conflicts[seq] = (ctype, None)
            self._mark_conflicts(st, list(st.conflicts))
        steps = ([(st, OP_DELETE) for st in reversed(staged)]
                 + [(st, OP_INSERT) for st in staged] + [(st, OP_UPDATE) for st in staged])
        for st, op in steps:
            self._apply_set(st, op)
        for st, op in steps:
            for seq in sorted(s for s in st.conflicts if st.rows[s][0] == op):
                self._resolve(st, seq)
        for st, op in steps:
            for seq in sorted(s for s in st.excluded if st.rows[s][0] == op):
                self._left_out(st, seq)
        for st in staged:
            if st.info.name.lower() in self.scopes:
                self._held_uploaded(st)
            self.cur.execute(f"DROP TABLE IF EXISTS pg_temp.{st.stage}")
        self._send_back_refused()

    def _delete_own(self, tc: TableChanges) -> None:
        """TableChanges.own_deletes, as on the SQLite hub (server.py
        _delete_own): a key the client inserted and deleted again is deleted
        where the hub's row is the client's own latest write (the side
        table's context); a delete the hub's constraints refuse leaves the
        row, and the client gets it back."""
        info = self.infos[tc.table.lower()]
        check_columns(info, tc)
        local = {c.lower(): c for c in info.columns}
        names = [local[k.lower()] for k in tc.key_columns]
        flt = self.scopes.get(info.name.lower())
        # Inside the uploader's scope only (its filter's unqualified columns
        # are the target row's: the side table is read in a subquery).
        scope = "" if flt is None else f" AND coalesce(({flt.sql}), false)"
        for key in tc.own_deletes:
            parts, params = [], {"sq_x": str(self.client), **(flt.params if flt else {})}
            try:
                for i, (k, v) in enumerate(zip(names, key)):
                    j = info.columns.index(k)
                    params[f"k{i}"] = _types.to_pg(v, info.cats[j], info.types[j], info.name, k)
                    parts.append(f"t.{qi(k)} = %(k{i})s::{info.types[j]}")
            except _types.Unfit:
                continue                    # a key the hub cannot hold is not there
            where = " AND ".join(parts)
            own = (f"{where} AND EXISTS (SELECT 1 FROM {info.qside} AS c "
                   f"WHERE {info.key_join('c', 't')} AND c.context = %(sq_x)s::uuid){scope}")
            try:
                with self.conn.transaction():
                    self.cur.execute(f"DELETE FROM {info.qname} AS t WHERE {own}", params)
            except row_errors() as exc:
                cols = ", ".join(_types.select_expr(cat, f"t.{qi(c)}")
                                 for c, cat in zip(info.columns, info.cats))
                back = self.corrections.setdefault(info.name, TableChanges(
                    info.name, info.columns, info.key))
                for row in self.cur.execute(f"SELECT {cols} FROM {info.qname} AS t "
                                            f"WHERE {own}", params).fetchall():
                    values = _types.row_to_sqlite(row, info.to_sqlite())
                    back.updates.append(values)
                    # Reported, deferred, not counted: an own delete is no change.
                    self.refused.append(Conflict(
                        ConflictType.ERRORS_OCCURRED, SyncStage.UPLOADING_CHANGES, info.name,
                        dict(zip(info.key, (values[j] for j in info.key_pos))), None,
                        dict(zip(info.columns, values)),
                        f"the delete of a row this client uploaded in a session it has since "
                        f"lost was refused: {str(exc).strip()}", action=ApplyAction.CONTINUE,
                        deferred=True))

    # -- scope --------------------------------------------------------------------
    def _refuse_out_of_scope(self, st: Staged) -> None:
        """With a row filter bound by the uploader's parameters, a change to a
        key whose hub row is outside the filter, or whose new version would
        be, is refused: taken out of the stage (never applied, never
        resolved), counted as failed and reported as an ErrorsOccurred
        conflict that names the scope. Runs after the rows are locked, so the
        hub rows it judges are the ones the upload would write."""
        info = st.info
        flt = self.scopes.get(info.name.lower())
        if flt is None:
            return
        k0 = qi(info.key[0])
        pos = {c: i for i, c in enumerate(st.columns)}
        # The filter's unqualified columns resolve in x (the hub row) and in
        # the derived table n (the row as the upload would leave it).
        new = ", ".join(f"s.c{pos[c]} AS {qi(c)}" if c in pos else f"t.{qi(c)} AS {qi(c)}"
                        for c in info.columns)
        match = f"coalesce(({flt.sql}), false)"
        rows = self.cur.execute(
            f"SELECT sqlite_ct_seq, sqlite_ct_present, sqlite_ct_old_in FROM "
            f"(SELECT s._seq AS sqlite_ct_seq, s._op AS sqlite_ct_op, "
            f"t.{k0} IS NOT NULL AS sqlite_ct_present, "
            f"(SELECT {match} FROM {info.qname} AS x WHERE {info.key_join('x', 't')}) "
            f"AS sqlite_ct_old_in, {new} "
            f"FROM {st.stage} AS s LEFT JOIN {info.qname} AS t ON {st.join('t')}) AS n "
            f"WHERE (sqlite_ct_present AND NOT sqlite_ct_old_in) "
            f"OR (sqlite_ct_op <> {OP_DELETE} AND NOT {match})", flt.params).fetchall()
        if not rows:
            return
        self.cur.execute(f"DELETE FROM {st.stage} WHERE _seq = ANY(%s)",
                         ([seq for seq, _, _ in rows],))
        for seq, present, old_in in rows:
            op, values = st.rows.pop(seq)
            st.excluded.pop(seq, None)
            st.conflicts.pop(seq, None)
            txn = st.txns.get(seq)
            st.counts[op] -= 1
            key = st.key_of(values)
            why = ("the hub's row is outside this client's filter" if present and not old_in
                   else "the new version is outside this client's filter")
            self.failed += 1
            self.refused.append(Conflict(
                ConflictType.ERRORS_OCCURRED, SyncStage.UPLOADING_CHANGES, info.name, key,
                None if op == OP_DELETE else dict(zip(st.columns, values)), None,
                f"refused: {why}; a client writes only rows in its scope",
                action=ApplyAction.CONTINUE, transaction=txn,
                deferred=txn is not None))
            if txn is not None:
                self.failed_transactions.setdefault(txn, self.refused[-1])
            if op != OP_DELETE:
                self._refused_rows.append((info, st.key_of(values), flt))

    def _held_uploaded(self, st: Staged) -> None:
        """The keys of the uploaded inserts and updates (not the refused ones)
        that the hub holds, as a download sends them: the client holds them
        (its own version, or the hub's once a conflict is resolved). And the
        keys of uploaded deletes the hub applied: the client no longer holds
        them."""
        info = st.info
        cols = ", ".join(_types.select_expr(info.cats[j], f"t.{qi(info.columns[j])}")
                         for j in info.key_pos)
        convs = tuple(info.to_sqlite()[j] for j in info.key_pos)
        self.held.setdefault(info.name.lower(), []).extend(
            _types.row_to_sqlite(tuple(r), convs) for r in self.cur.execute(
                f"SELECT {cols} FROM {st.stage} AS s JOIN {info.qname} AS t "
                f"ON {st.join('t')} WHERE s._op <> {OP_DELETE}"))
        scols = ", ".join(_types.select_expr(info.cats[j], f"s.c{st.columns.index(k)}")
                          for j, k in zip(info.key_pos, info.key))
        self.deleted.setdefault(info.name.lower(), []).extend(
            _types.row_to_sqlite(tuple(r), convs) for r in self.cur.execute(
                f"SELECT {scols} FROM {st.stage} AS s WHERE s._op = {OP_DELETE} "
                f"AND NOT EXISTS (SELECT 1 FROM {info.qname} AS t WHERE {st.join('t')})"))

    def _send_back_refused(self) -> None:
        """For each refused insert or update, the hub's row as it is now if
        the client may see it, else a delete of the key (the client must not
        keep a row the hub does not give it)."""
        for info, key, flt in self._refused_rows:
            tc = self.corrections.setdefault(info.name, TableChanges(info.name, info.columns,
                                                                     info.key))
            parts, kp = [], {}
            for i, k in enumerate(info.key):
                j = info.columns.index(k)
                kp[f"sqlite_ct_k{i}"] = _types.to_pg(key[k], info.cats[j], info.types[j],
                                                     info.name, k)
                parts.append(f"{qi(k)} = %(sqlite_ct_k{i})s::{info.types[j]}")
            where = " AND ".join(parts)
            cols = ", ".join(_types.select_expr(cat, qi(c))
                             for c, cat in zip(info.columns, info.cats))
            found = self.cur.execute(
                f"SELECT {cols} FROM {info.qname} WHERE {where} "
                f"AND coalesce(({flt.sql}), false)", {**flt.params, **kp}).fetchone()
            if found is None:
                tc.deletes.append(tuple(key[k] for k in info.key))
            else:
                tc.updates.append(_types.row_to_sqlite(found, info.to_sqlite()))

    def _mark_conflicts(self, st: Staged, seqs: Sequence[int]) -> None:
        if seqs:
            self.cur.execute(f"UPDATE {st.stage} SET _ct = 1 WHERE _seq = ANY(%s)", (list(seqs),))

    def _insert_new(self, st: Staged) -> None:
        """Insert the uploaded inserts whose key was not on the hub at
        detection, and nothing else. A key another transaction inserted in
        the meantime (detection could not see it, the row was not locked)
        is left alone and its row detected again: a conflict, not a silent
        overwrite. The rows inserted are marked done (_ct = 2)."""
        info = st.info
        cols = ", ".join(qi(c) for c in st.columns)
        ccols = ", ".join(f"c{i}" for i in range(len(st.columns)))
        keys = ", ".join(qi(k) for k in info.key)
        back = " AND ".join(f"i.{qi(k)} = cand.c{st.columns.index(k)}" for k in info.key)
        skey = ", ".join(f"s.c{st.columns.index(k)}" for k in info.key)
        rows = self.cur.execute(
            f"WITH cand AS (SELECT s._seq, {', '.join(f's.c{i}' for i in range(len(st.columns)))} "
            f"FROM {st.stage} AS s WHERE s._op = {OP_INSERT} AND s._ct IS NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {info.qname} AS t WHERE {st.join('t')})), "
            f"ins AS (INSERT INTO {info.qname} ({cols}) SELECT {ccols} FROM cand ORDER BY _seq "
            f"ON CONFLICT ({keys}) DO NOTHING RETURNING {keys}), "
            f"done AS (UPDATE {st.stage} AS s SET _ct = 2 FROM ins AS i "
            f"WHERE s._op = {OP_INSERT} AND ({skey}) = ({', '.join(f'i.{qi(k)}' for k in info.key)}) "
            f"RETURNING s._seq) "
            f"SELECT cand._seq FROM cand LEFT JOIN ins AS i ON {back} "
            f"WHERE i.{qi(info.key[0])} IS NULL").fetchall()
        lost = [seq for (seq,) in rows]
        for seq in lost:
            ctype = self._detect(st, seq).get(seq)
            if ctype is not None:
                st.conflicts[seq] = (ctype, None)
        self._mark_conflicts(st, [s for s in lost if s in st.conflicts])

    def _pending(self, st: Staged, op: int) -> int:
        return sum(1 for s, (o, _) in st.rows.items() if o == op and st.pending(s))

    def _apply_set(self, st: Staged, op: int) -> None:
        count = self._pending(st, op)
        if not count:
            return
        sql = (self._delete_sql if op == OP_DELETE else self._upsert_sql)(
            st, f"s._op = {op} AND s._ct IS NULL")
        before = dict(st.conflicts)
        try:
            with self.conn.transaction():
                if op == OP_INSERT:
                    self._insert_new(st)
                    count = self._pending(st, op)
                self.cur.execute(sql)
            self.applied += count
            return
        except row_errors():
            st.conflicts.clear()           # the savepoint undid what was found in it
            st.conflicts.update(before)
        row_sql = self._row_sql(st, op)
        pending = [s for s, (o, _) in st.rows.items() if o == op and st.pending(s)]
        errors: Dict[int, str] = {}
        while pending:
            failed = []
            for seq in pending:
                try:
                    with self.conn.transaction():
                        self.cur.execute(row_sql, {"seq": seq})
                    self.applied += 1
                except row_errors() as exc:
                    failed.append(seq)
                    errors[seq] = str(exc).strip()
            if len(failed) == len(pending):
                break
            pending = failed
        for seq in pending:
            st.conflicts[seq] = (ConflictType.ERRORS_OCCURRED, errors[seq])

    # -- conflicts ------------------------------------------------------------
    def _local_row(self, st: Staged, key: Row) -> Optional[Row]:
        info = st.info
        cols = ", ".join(_types.select_expr(cat, qi(c)) for c, cat in zip(info.columns,
                                                                          info.cats))
        where, params = self._key_where(st, key)
        row = self.cur.execute(f"SELECT {cols} FROM {info.qname} WHERE {where}",
                               params).fetchone()
        if row is None:
            return None
        return dict(zip(info.columns, _types.row_to_sqlite(row, info.to_sqlite())))

    def _key_where(self, st: Staged, key: Row, alias: str = "") -> Tuple[str, Dict[str, Any]]:
        info = st.info
        parts, params = [], {}
        for i, k in enumerate(info.key):
            j = info.columns.index(k)
            try:
                params[f"k{i}"] = _types.to_pg(key[k], info.cats[j], info.types[j], info.name, k)
            except _types.Unfit:
                return "false", {}
            parts.append(f"{alias}{qi(k)} = %(k{i})s::{info.types[j]}")
        return " AND ".join(parts), params

    def _decide(self, conflict: Conflict) -> ApplyAction:
        return decide(self.resolver, self.handler, conflict, "server",
                      ResolveAction.CLIENT_WINS)

    def _conflict(self, st: Staged, ctype: ConflictType, key: Row, incoming: Optional[Row],
                  error: Optional[str]) -> Conflict:
        c = Conflict(ctype, SyncStage.UPLOADING_CHANGES, st.info.name, key,
                     None if incoming is None else dict(incoming), self._local_row(st, key),
                     error)
        c.connection = self.conn
        return c

    def _left_out(self, st: Staged, seq: int) -> None:
        """A change of an excluded client transaction: not applied; reported
        as the conflict that failed the transaction (for that change) or as
        an ErrorsOccurred conflict naming it, deferred."""
        op, values = st.rows[seq]
        key = st.key_of(values)
        txn = st.excluded[seq]
        cause = self.excluded[txn]
        self.failed += 1
        self._skipped(st, key)
        if cause.table.lower() == st.info.name.lower() and cause.key == key:
            self.conflicts.append(cause)
            return
        conflict = self._conflict(st, ConflictType.ERRORS_OCCURRED, key,
                                  None if op == OP_DELETE else dict(zip(st.columns, values)),
                                  left_out_error(txn, cause, "server"))
        conflict.connection = None
        self.conflicts.append(left_out(conflict, txn))

    def _resolve(self, st: Staged, seq: int) -> None:
        op, values = st.rows[seq]
        ctype, error = st.conflicts[seq]
        key = st.key_of(values)
        incoming = None if op == OP_DELETE else dict(zip(st.columns, values))
        conflict = self._conflict(st, ctype, key, incoming, error)
        txn = conflict.transaction = st.txns.get(seq)
        action = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            conflict.attempts = attempt
            action = self._decide(conflict)
            conflict.action = action
            if action is ApplyAction.CONTINUE:
                self.failed += 1
                self._skipped(st, key)
                conflict.transaction = txn
                if txn is not None:
                    self.failed_transactions.setdefault(txn, conflict)
                break
            row = conflict.client_row
            merged = row != incoming
            try:
                with self.conn.transaction():
                    if merged:
                        self._set_context(None)
                    try:
                        if action is ApplyAction.RETRY_WITH_FORCE_WRITE:
                            self._force(st, key, row)
                            done = True
                        else:
                            done = self._retry(st, seq, op, row, key)
                    finally:
                        if merged:
                            self._set_context(self.client)
            except _types.Unfit as exc:
                conflict = self._conflict(st, ConflictType.ERRORS_OCCURRED, key, row, str(exc))
                continue
            except row_errors() as exc:
                conflict = self._conflict(st, ConflictType.ERRORS_OCCURRED, key, row,
                                          str(exc).strip())
                continue
            if done:
                self.applied += 1
                break
            new_type = self._detect(st, seq).get(seq)
            conflict = self._conflict(st, new_type or ctype, key, row, None)
        else:
            raise SyncError(
                f'sqlite-ct sync: the {conflict.type.value} conflict on table "{st.info.name}" '
                f"key {key!r} on the server is still unresolved after {MAX_ATTEMPTS} "
                f"attempts (last action {action.value if action else None})"
                + (f"; last error: {conflict.error}" if conflict.error else ""))
        conflict.connection = None
        conflict.transaction = txn
        self.conflicts.append(conflict)

    def _force(self, st: Staged, key: Row, row: Optional[Row]) -> None:
        info = st.info
        if row is None:
            where, params = self._key_where(st, key)
            self.cur.execute(f"DELETE FROM {info.qname} WHERE {where}", params)
            return
        local = {c.lower(): c for c in info.columns}
        cols = [local[c.lower()] for c in row if c.lower() in local]
        params = {}
        marks = []
        for i, c in enumerate(cols):
            j = info.columns.index(c)
            params[f"v{i}"] = _types.to_pg(row[next(k for k in row if k.lower() == c.lower())],
                                           info.cats[j], info.types[j], info.name, c)
            marks.append(f"%(v{i})s::{info.types[j]}")
        keys = ", ".join(qi(k) for k in info.key)
        sets = [f"{qi(c)} = excluded.{qi(c)}" for c in cols if c not in info.key]
        action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
        self.cur.execute(f"INSERT INTO {info.qname} ({', '.join(qi(c) for c in cols)}) "
                         f"VALUES ({', '.join(marks)}) ON CONFLICT ({keys}) {action}", params)

    def _retry(self, st: Staged, seq: int, op: int, row: Optional[Row], key: Row) -> bool:
        """Stage the (possibly edited) change again, detect, and apply it if
        the conflict is gone; False if it is not."""
        source = row if row is not None else key
        values = tuple(source.get(c) for c in st.columns)
        converted = self._convert(st, values, op if row is not None else OP_DELETE)
        n = len(st.columns)
        names = "".join(f", c{i}" for i in range(n))
        marks = "".join(f", %(v{i})s" for i in range(n))
        sets = ", ".join(f"c{i} = excluded.c{i}" for i in range(n))
        self.cur.execute(f"INSERT INTO {st.stage} (_seq, _op, _ct{names}) "
                         f"VALUES (%(seq)s, %(op)s, 1{marks}) ON CONFLICT (_seq) DO UPDATE "
                         f"SET {sets}", {"seq": seq, "op": op,
                                         **{f"v{i}": v for i, v in enumerate(converted)}})
        if self._detect(st, seq):
            return False
        self.cur.execute(self._row_sql(st, OP_DELETE if row is None else op), {"seq": seq})
        return True

    def _skipped(self, st: Staged, key: Row) -> None:
        """The hub kept its version. The client gets it with its next download
        if the row is unseen and someone else's; otherwise send it back now."""
        info = st.info
        seen, params = self._seen(info)
        where, kp = self._key_where(st, key, "t.")
        cols = ", ".join(_types.select_expr(cat, f"t.{qi(c)}")
                         for c, cat in zip(info.columns, info.cats))
        tc = self.corrections.setdefault(info.name, TableChanges(info.name, info.columns,
                                                                 info.key))
        found = self.cur.execute(
            f"SELECT {cols}, c.context IS NOT DISTINCT FROM %(sq_x)s::uuid, ({seen}) "
            f"FROM {info.qname} AS t LEFT JOIN {info.qside} AS c ON {info.key_join('c', 't')} "
            f"WHERE {where}",
            {**params, **kp, "sq_x": str(self.client)}).fetchone()
        if found is None:
            tc.deletes.append(tuple(key[st.columns[p]] for p in st.key_pos))
        elif found[-2] or found[-1]:
            tc.updates.append(_types.row_to_sqlite(found[:-2], info.to_sqlite()))

