"""Enumerating what changed since an anchor (SqlCeClientSyncProvider.GetChanges).

An anchor is a commit sequence number (CSN). `enumerate_changes(conn, table,
since)` reads, in one read snapshot, the last committed CSN N of that snapshot
(the new anchor) and every change committed in (since, N], classified as SQL CE's
provider did:

    insert   the row was inserted after `since`
    update   inserted at or before `since`, changed after it
    delete   a tombstone written after `since` for a row inserted at or before it
    nothing  inserted and deleted inside the window

A replica that applies deletes, then inserts, then updates (inserts and updates
as upserts) and starts the next enumeration at `new_anchor` ends equal to the
table. Rows and tombstones are read through indexes on the change BSN, so the
cost follows the number of changes, not the size of the table.

These rules live in one place, the extension's table-valued function
sqlite_ct_changes(table, since, until, exclude_context) (csrc/changes.c),
which also refuses bad and expired anchors; this module reads through it and
only turns its rows into Python values (the row of an insert or update is
joined by rowid, or by key in a WITHOUT ROWID table). enumerate_changes()
reads its live rows through sqlite_ct_changes_sql() instead, the same rules
as SQL text from the same file, which reads each row once.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import operator
import threading
import uuid
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Tuple, Union)

from . import _conn
from .errors import AnchorError, Error
from .keys import key_columns, user_columns
from .reconcile import reconcile
from .tracking import require_tracked

__all__ = ["Change", "ChangeSet", "GroupChangeSet", "enumerate_changes",
           "enumerate_group_changes", "iter_changes", "enumerate_all"]

Row = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Change:
    """One change of `iter_changes`: kind is "insert", "update" or "delete";
    row holds the user columns (for a delete, the key columns only)."""
    kind: str
    table: str
    row: Row


@dataclasses.dataclass(frozen=True)
class ChangeSet:
    """The changes of one table in (since, new_anchor]."""
    table: str
    since: int
    new_anchor: int
    inserts: List[Row]
    updates: List[Row]
    deletes: List[Row]

    def __len__(self) -> int:
        return len(self.inserts) + len(self.updates) + len(self.deletes)


@dataclasses.dataclass(frozen=True)
class GroupChangeSet:
    """The changes of several tables read in one snapshot, sharing new_anchor."""
    new_anchor: int
    tables: Dict[str, ChangeSet]

    def __getitem__(self, table: str) -> ChangeSet:
        return self.tables[table]

    def __len__(self) -> int:
        return sum(len(c) for c in self.tables.values())


@dataclasses.dataclass(frozen=True)
class _TableInfo:
    name: str
    columns: List[str]
    keys: List[str]
    # How the live rows of sqlite_ct_changes() join the table: a name of
    # the rowid (rowid, _rowid_ or oid, whichever no column hides), or None
    # (WITHOUT ROWID, or all three hidden): by key.
    rowid: Optional[str]


# __sysCtMeta key prefix (+ table name): anchor 0 of the table is expired too.
ANCHOR0_EXPIRED = "anchor0_expired:"


def _table_info(conn: Any, table: str, func: str) -> _TableInfo:
    name = require_tracked(conn, table, func)
    columns = user_columns(conn, name)
    without_rowid = _conn.value(
        conn, "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", (name,))
    every = {c.lower() for (c,) in _conn.rows(
        conn, "SELECT name FROM pragma_table_xinfo(?, 'main')", (name,))}
    rowid = None if without_rowid else next(
        (alias for alias in ("rowid", "_rowid_", "oid") if alias not in every), None)
    return _TableInfo(name, columns, key_columns(conn, name), rowid)


def _check_since(since: Any) -> int:
    """The Python side of an anchor: an int (not a bool) that a SQLite
    integer holds (binding a larger one raises OverflowError); a negative one
    gets sqlite_ct_changes()'s message. Every other rule about its value
    (newer than the database, expired) is sqlite_ct_changes()'s."""
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise AnchorError(f"sqlite-ct: an anchor is a non-negative integer CSN, got {since!r}")
    if since >= 2**63:
        raise AnchorError(f"sqlite-ct: an anchor is a CSN below 2**63, got {since!r}")
    return since


# What changed is defined in one place, the table-valued function
# sqlite_ct_changes(table, since, until, exclude_context) (csrc/changes.c):
# which rows and tombstones, insert or update, which deletes a replica needs.
# The readers below only fetch the values: the key of a delete, and the row of
# an insert or update joined by rowid (or key).
_CHANGES = "sqlite_ct_changes(?1, ?2, ?3, ?4)"


def _row_query(info: _TableInfo, where: str, tail: str = "c.op") -> str:
    """The live rows of the changes in `where` (on c), user columns, then
    `tail`: op ('I' or 'U') unless told otherwise."""
    q = _conn.quote_identifier
    cols = ", ".join(f"t.{q(c)}" for c in info.columns)
    if info.rowid is not None:
        on = f"t.{info.rowid} = c.row_rowid"
    else:
        on = " AND ".join(f"t.{q(k)} = sqlite_ct_unpack_key(c.pk, {i})"
                          for i, k in enumerate(info.keys))
    return (f"SELECT {cols}, {tail} FROM {_CHANGES} AS c "
            f"JOIN main.{q(info.name)} AS t ON {on} WHERE {where}")


def _delete_query(info: _TableInfo, tail: str = "", where: str = "") -> str:
    keys = ", ".join(f"sqlite_ct_unpack_key(pk, {i})" for i in range(len(info.keys)))
    return f"SELECT {keys}{tail} FROM {_CHANGES} WHERE op = 'D'{where}"


def _bounds(after: Optional[int], up_to: Optional[int], prefix: str = ""
            ) -> Tuple[str, Tuple[int, ...]]:
    """The terms (after ?4's parameters: ?5, ?6) that keep the changes whose
    change BSN lies in (after, up_to], and their parameters; sqlite_ct_changes()
    narrows its reads to them."""
    terms, params = "", []
    for bound, op in ((after, ">"), (up_to, "<=")):
        if bound is None:
            continue
        if isinstance(bound, bool) or not isinstance(bound, int) or not 0 <= bound < 2**63:
            raise AnchorError(f"sqlite-ct: a change BSN bound is a non-negative integer below "
                              f"2**63, got {bound!r}")
        params.append(bound)
        terms += f" AND {prefix}change_bsn {op} ?{4 + len(params)}"
    return terms, tuple(params)


def _context_bytes(exclude_context: Optional[uuid.UUID]) -> Optional[bytes]:
    """exclude_context as sqlite_ct_changes() takes it: the GUID's bytes in
    .NET order, or None."""
    if exclude_context is None:
        return None
    if not isinstance(exclude_context, uuid.UUID):
        raise TypeError(f"sqlite-ct: exclude_context is a uuid.UUID or None, got "
                        f"{exclude_context!r}")
    return exclude_context.bytes_le


def _params(info: _TableInfo, since: int, new_anchor: int,
            exclude_context: Optional[uuid.UUID]) -> Tuple[Any, ...]:
    return (info.name, since, new_anchor, _context_bytes(exclude_context))


def _queries(info: _TableInfo, since: int, new_anchor: int,
             exclude_context: Optional[uuid.UUID]
             ) -> Tuple[Tuple[str, Tuple[Any, ...]], Tuple[str, Tuple[Any, ...]]]:
    """The deletes' query and the live rows' query, each with its parameters.
    A live row's last column is its op: 'I' insert, 'U' update."""
    params = _params(info, since, new_anchor, exclude_context)
    return ((_delete_query(info), params), (_row_query(info, "c.op <> 'D'"), params))


def _validate(conn: Any, info: _TableInfo, since: int, new_anchor: int) -> None:
    """Have sqlite_ct_changes() check the anchor without reading a change (no
    op is ''), so a stream refuses a bad anchor when it is opened."""
    _conn.value(conn, f"SELECT count(*) FROM {_CHANGES} WHERE op = ''",
                _params(info, since, new_anchor, None))


def _quoted(column: str) -> str:
    """SQL for the literal of a key value; TEXT as a BLOB literal, which
    decodes whatever its bytes."""
    return (f"CASE typeof({column}) WHEN 'text' THEN quote(CAST({column} AS BLOB))"
            f" ELSE quote({column}) END")


def _bad_text(conn: Any, info: _TableInfo, exc: BaseException) -> Error:
    """The Error for TEXT that is not valid UTF-8, which the host cannot turn
    into str (apsw: UnicodeDecodeError; stdlib sqlite3: OperationalError
    "Could not decode to UTF-8 column ..."). Names the first such value of the
    table's rows (the error path only: a scan in Python of its TEXT values)."""
    q = _conn.quote_identifier
    where = ""
    with _conn.translated():
        keys = " || ', ' || ".join(_quoted(q(k)) for k in info.keys)
        for column in info.columns:
            for key, raw in conn.cursor().execute(
                    f"SELECT {keys},"
                    f" CAST({q(column)} AS BLOB) FROM main.{q(info.name)}"
                    f" WHERE typeof({q(column)}) = 'text'"):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    where = f" (column \"{column}\" of the row whose key is {key})"
                    break
            if where:
                break
    return Error(f'sqlite-ct: table "{info.name}" holds TEXT that is not valid UTF-8'
                 f"{where}, which Python cannot decode; store such values as BLOB"
                 f" (CAST(x AS BLOB)) or re-encode them as UTF-8")


def _undecodable(exc: BaseException) -> bool:
    return isinstance(exc, UnicodeDecodeError) or (
        isinstance(exc, _conn.host_errors()) and "Could not decode to UTF-8" in str(exc))


def _iter_rows(conn: Any, info: _TableInfo, since: int, new_anchor: int,
               exclude_context: Optional[uuid.UUID] = None) -> Iterator[Tuple[str, Row]]:
    """(kind, row) for every change: deletes first, then inserts and updates.
    Plain tuples: a frozen dataclass per row cost about a third of the time
    of enumerating 10k changed rows."""
    cols = info.columns
    width = len(cols)
    deletes, live = _queries(info, since, new_anchor, exclude_context)
    try:
        for row in _conn.rows(conn, *deletes):
            yield "delete", dict(zip(info.keys, row))
        for row in _conn.rows(conn, *live):
            yield ("insert" if row[width] == "I" else "update"), dict(zip(cols, row[:width]))
    except Exception as exc:
        if _undecodable(exc):
            raise _bad_text(conn, info, exc) from exc
        raise


def _refuse_in_own_write(conn: Any) -> None:
    """Refuse to enumerate inside a transaction that has written tracked data
    (sqlite_ct_uncommitted_writes()): its uncommitted stamps hide the
    committed changes of the rows it touched, which would be lost if it then
    rolled back. Asked before the enumeration's own savepoint, whose metadata
    writes (following a RENAME TO) are not the caller's. Outside a
    transaction those are made (and committed) first: sqlite_ct_changes()
    refuses as this does, and would refuse the savepoint that made them when a
    table is tracked in portable mode."""
    if not _conn.in_transaction(conn):
        _conn.require_loaded(conn)
        _conn.value(conn, "SELECT sqlite_ct_check_layout()")
        reconcile(conn, order=False)
    if _conn.value(conn, "SELECT sqlite_ct_uncommitted_writes()"):
        raise Error("sqlite-ct: cannot enumerate changes inside a transaction that has "
                    "written to tracked tables; commit or roll it back first")


def _new_anchor(conn: Any) -> int:
    """The last committed CSN, read in the enumeration's snapshot."""
    return int(_conn.value(conn, "SELECT sqlite_ct_last_committed_csn()"))


def _collect(conn: Any, info: _TableInfo, since: int, new_anchor: int,
             exclude_context: Optional[uuid.UUID]) -> ChangeSet:
    """The same rows as _iter_rows, collected. The hot loop of enumeration:
    it reads the cursor directly (no generator between it and the rows) and
    builds nothing but the dict per row; zip() stops at the user columns, so
    the trailing op needs no slice."""
    cols = info.columns
    width = len(cols)
    delete_query, live_query = _queries(info, since, new_anchor, exclude_context)
    inserts: List[Row] = []
    updates: List[Row] = []
    try:
        with _conn.translated():
            deletes = [dict(zip(info.keys, row)) for row in conn.cursor().execute(*delete_query)]
            for row in conn.cursor().execute(*live_query):
                (inserts if row[width] == "I" else updates).append(dict(zip(cols, row)))
    except Exception as exc:
        if _undecodable(exc):
            raise _bad_text(conn, info, exc) from exc
        raise
    return ChangeSet(info.name, since, new_anchor, inserts, updates, deletes)


# enumerate_changes() reads in one statement: the snapshot's new anchor
# (sqlite_ct_snapshot(), which refuses inside the caller's own write
# transaction), the schema token (sqlite_ct_schema_token()), the deletes
# (sqlite_ct_changes(), which checks the table and the anchor) and the live
# rows (sqlite_ct_changes_sql(): the same rules, each row read once). One
# statement reads one snapshot whether or not a transaction is open, so it
# needs no SAVEPOINT of its own. Its text depends on the table's columns and
# key, read once (with the checks of
# require_tracked() and reconcile()) and kept per connection and table with
# the token they were read at: a statement whose token differs (a schema
# change by any connection, another connection that took the id() of a
# closed one) is thrown away and the call starts over from the checks. The
# token is NULL inside a write transaction, whose schema a ROLLBACK may take
# back: what is read there is not kept.
_ENUM: "collections.OrderedDict[Tuple[int, str], Tuple[str, str, _TableInfo, _Reader]]" = (
    collections.OrderedDict())
_ENUM_REMEMBERED = 256
_ENUM_LOCK = threading.Lock()   # for the writers; a lookup is one dict get


def _live_columns(info: _TableInfo) -> str:
    """The live rows' result columns (over alias t), padded to the width of
    _enum_query()'s rows: sqlite_ct_changes_sql()'s COLUMNS."""
    q = _conn.quote_identifier
    width = max(len(info.columns), len(info.keys))
    return ", ".join(f"t.{q(c)}" for c in info.columns) + ", NULL" * (width - len(info.columns))


def _enum_query(info: _TableInfo, live: str, schema_rowid: int) -> str:
    """The one statement of enumerate_changes(): ?1 table, ?2 since, ?3
    exclude_context. Every row has the same width (user columns or key
    columns, whichever are more, then a last column): first (anchor, ...,
    token), then each delete (key columns, ..., 'D') from
    sqlite_ct_changes(), whose checks run before any live row is read, then
    each live row (user columns, ..., op) from `live`, what
    sqlite_ct_changes_sql(table, _live_columns(info)) gives (the same rules,
    each row read once). schema_rowid: the rowid of the table's row in
    main.sqlite_schema."""
    width = max(len(info.columns), len(info.keys))
    nkeys = len(info.keys)
    keys = ", ".join(f"sqlite_ct_unpack_key(d.pk, {i})" for i in range(nkeys))
    # The token carries the table's CREATE statement too: the schema version
    # names a schema only within one database, and a database swapped in
    # under the same connection (sqlite3_deserialize(), which keeps the
    # schema cookie it finds) may have another table at the same version.
    # Read by the rowid the table's row had (one seek, not a scan of the
    # schema): a row there that is not this table's CREATE TABLE, or none,
    # changes the token as another table would.
    return (f"SELECT sqlite_ct_snapshot(){', NULL' * (width - 1)}, sqlite_ct_schema_token()"
            f" || ' ' || coalesce((SELECT sql FROM main.sqlite_schema WHERE rowid = "
            f"{int(schema_rowid)} AND type = 'table' AND name = ?1 COLLATE NOCASE), '') "
            f"UNION ALL SELECT {keys}{', NULL' * (width - nkeys)}, 'D' "
            f"FROM sqlite_ct_changes AS d WHERE d.tbl = ?1 AND d.since = ?2 "
            f"AND d.exclude_context = ?3 AND d.op = 'D' "
            f"UNION ALL {live}")


def _out_of_memory(exc: BaseException) -> bool:
    """SQLITE_NOMEM as the hosts raise it (stdlib sqlite3: MemoryError;
    apsw: NoMemError, result code 7)."""
    return isinstance(exc, MemoryError) or getattr(exc, "result", None) == 7 or (
        getattr(exc, "sqlite_errorcode", None) == 7)


def _interrupted(exc: BaseException) -> bool:
    """SQLITE_INTERRUPT (sqlite3_interrupt(), a progress handler that
    returned non-zero) as the hosts raise it: the caller asked to stop, and
    reading everything again would not."""
    return getattr(exc, "result", None) == 9 or getattr(exc, "sqlite_errorcode", None) == 9 or (
        type(exc).__name__ == "InterruptError")


_Reader = Callable[[List[Tuple[Any, ...]], List[Row], List[Row], List[Row]], None]


@functools.lru_cache(maxsize=_ENUM_REMEMBERED)
def _row_reader(columns: Tuple[str, ...], keys: Tuple[str, ...]) -> _Reader:
    """A function that sorts a block of _enum_query()'s rows (after the
    first) into the lists inserts, updates and deletes, each row a dict of
    the user columns (of the key columns for a delete). The hot loop of
    enumeration, generated for the table's columns: a dict display with the
    names as constants builds a row's dict in one step, where
    dict(zip(columns, row)) made a zip object and a pair per column (at 100
    changes, about a third of the time of the whole call went to the dicts);
    the rows come in runs of one op (the deletes, then the live rows, mostly
    all inserts or all updates), which groupby() hands out without a step per
    row. The names enter the source only as repr() of a str, a literal
    whatever their characters."""
    width = max(len(columns), len(keys))
    row = "{" + ", ".join(f"{c!r}: r[{i}]" for i, c in enumerate(columns)) + "}"
    key = "{" + ", ".join(f"{k!r}: r[{i}]" for i, k in enumerate(keys)) + "}"
    source = (
        "def read(rows, inserts, updates, deletes):\n"
        "    for op, run in groupby(rows, op_of):\n"
        "        if op == 'U':\n"
        f"            updates += [{row} for r in run]\n"
        "        elif op == 'I':\n"
        f"            inserts += [{row} for r in run]\n"
        "        elif op == 'D':\n"
        f"            deletes += [{key} for r in run]\n"
        "        else:\n"
        "            raise Error(f'sqlite-ct: enumerate_changes() read a change of kind {op!r};'\n"
        "                        ' please report this with your SQLite version')\n")
    namespace: Dict[str, Any] = {"groupby": itertools.groupby,
                                 "op_of": operator.itemgetter(width), "Error": Error}
    exec(compile(source, "<sqlite_ct enumerate_changes rows>", "exec"), namespace)
    reader: _Reader = namespace["read"]
    return reader


_BLOCK = 4096


def _enum_read(conn: Any, sql: str, info: _TableInfo, read_rows: _Reader, since: int,
               ctx: Optional[bytes], token: Optional[str]
               ) -> Tuple[Optional[str], Optional[ChangeSet]]:
    """Run _enum_query(info) with exclude_context `ctx` (its bytes): (the
    token it read, the ChangeSet), or (the token, None) when `token` is given
    and differs (nothing else read). read_rows: _row_reader() of info."""
    width = max(len(info.columns), len(info.keys))
    cursor = conn.cursor()
    try:
        rows = iter(cursor.execute(sql, (info.name, since, ctx)))
        first = next(rows)
        read = first[width]
        if token is not None and read != token:
            return read, None
        if read is not None and not (isinstance(read, str) and ":" in read):
            # SQLite runs the arms of a UNION ALL in order; should it not,
            # the first row would be a change, not the anchor.
            raise Error("sqlite-ct: enumerate_changes() read a change where its anchor row "
                        "belongs; please report this with your SQLite version")
        # Fetched a block at a time, then turned into dicts: reading a row
        # and building its dict in turn runs SQLite's, the host's and the
        # interpreter's code for every row, more than the CPU's instruction
        # cache holds (callgrind, the caches emptied before the call: 5k
        # more instruction-cache misses at 100 changes). A block bounds the
        # row tuples held next to the dicts.
        inserts: List[Row] = []
        updates: List[Row] = []
        deletes: List[Row] = []
        while True:
            block = list(itertools.islice(rows, _BLOCK))
            read_rows(block, inserts, updates, deletes)
            if len(block) < _BLOCK:
                break
    finally:
        cursor.close()
    return read, ChangeSet(info.name, since, first[0], inserts, updates, deletes)


def enumerate_changes(conn: Any, table: str, since: int, *,
                      exclude_context: Optional[uuid.UUID] = None) -> ChangeSet:
    """Every change to tracked `table` committed after anchor `since`.

    Returns a ChangeSet with .inserts and .updates (dicts of the user columns),
    .deletes (dicts of the key columns) and .new_anchor, the CSN to pass as
    `since` next time. Rows and new_anchor come from one read snapshot. Raises
    AnchorError for an anchor that is negative, newer than the database, or
    older than its oldest kept tombstone.

    exclude_context leaves out rows and tombstones whose latest change carries
    that tracking context (a hub uses it so a client's own uploads are not sent
    back to it)."""
    # a clear error for a wrong type, first
    ctx = None if exclude_context is None else _context_bytes(exclude_context)
    if getattr(conn, "text_factory", str) is not str:
        _conn.check_text_factory(conn)      # the kept statement reads without _conn
    key = (id(conn), table)
    kept = _ENUM.get(key)
    if kept is not None and type(since) is int and 0 <= since < 2**63:
        kept_token, kept_sql, kept_info, kept_reader = kept
        try:
            _, changes = _enum_read(conn, kept_sql, kept_info, kept_reader, since, ctx,
                                    kept_token)
        except Exception as exc:
            # Whatever went wrong is reported by the checks below, which
            # read everything again; running out of memory and an interrupt
            # are reported now.
            if _out_of_memory(exc) or _interrupted(exc):
                raise
            changes = None
        if changes is not None:
            return changes
        with _ENUM_LOCK:
            _ENUM.pop(key, None)
    _conn.require_loaded(conn)
    _refuse_in_own_write(conn)
    with _conn.savepoint(conn, "sqlite_ct_enum"):
        info = _table_info(conn, table, "enumerate_changes")
        # The checks' errors first, as they come: the anchor's own after them.
        _conn.value(conn, "SELECT sqlite_ct_snapshot()")
        since = _check_since(since)
        sql = _enum_query(info, _conn.value(conn, "SELECT sqlite_ct_changes_sql(?, ?)",
                                            (info.name, _live_columns(info))),
                          _conn.value(conn, "SELECT rowid FROM main.sqlite_schema WHERE "
                                            "type = 'table' AND name = ? COLLATE NOCASE",
                                      (info.name,)))
        reader = _row_reader(tuple(info.columns), tuple(info.keys))
        try:
            with _conn.translated():
                token, changes = _enum_read(conn, sql, info, reader, since, ctx, None)
        except Exception as exc:
            if _undecodable(exc):
                raise _bad_text(conn, info, exc) from exc
            raise
    if token is not None:   # None: read inside a write transaction, not kept
        with _ENUM_LOCK:
            _ENUM[key] = (token, sql, info, reader)
            _ENUM.move_to_end(key)
            while len(_ENUM) > _ENUM_REMEMBERED:
                _ENUM.popitem(last=False)
    assert changes is not None
    return changes


def enumerate_all(conn: Any, table: str) -> ChangeSet:
    """Every live row of tracked `table`, as inserts: what a replica that
    starts (or reinitialises after AnchorExpiredError) loads before it
    enumerates changes since the returned new_anchor.

    Unlike enumerate_changes(since=0) it returns every row whatever its
    stamps (rows applied from a server included) and never raises
    AnchorExpiredError: it needs no tombstone. Rows and new_anchor come from
    one read snapshot; .since is 0 and .deletes is empty."""
    _conn.require_loaded(conn)
    _refuse_in_own_write(conn)
    with _conn.savepoint(conn, "sqlite_ct_enum"):
        info = _table_info(conn, table, "enumerate_all")
        new_anchor = _new_anchor(conn)
        cols = ", ".join(_conn.quote_identifier(c) for c in info.columns)
        try:
            with _conn.translated():
                rows = [dict(zip(info.columns, row)) for row in conn.cursor().execute(
                    f"SELECT {cols} FROM main.{_conn.quote_identifier(info.name)}")]
        except Exception as exc:
            if _undecodable(exc):
                raise _bad_text(conn, info, exc) from exc
            raise
        return ChangeSet(info.name, 0, new_anchor, rows, [], [])


def enumerate_group_changes(conn: Any, tables: Sequence[str],
                            since: Union[int, Mapping[str, int]], *,
                            exclude_context: Optional[uuid.UUID] = None
                            ) -> GroupChangeSet:
    """The changes of several tables in one snapshot, with one new_anchor.

    `since` is one anchor for all tables or a mapping table -> anchor (a table
    missing from the mapping starts at 0)."""
    _context_bytes(exclude_context)
    _conn.require_loaded(conn)
    _refuse_in_own_write(conn)
    with _conn.savepoint(conn, "sqlite_ct_enum"):
        new_anchor = _new_anchor(conn)
        result: Dict[str, ChangeSet] = {}
        for table in tables:
            info = _table_info(conn, table, "enumerate_group_changes")
            start = since.get(table, 0) if isinstance(since, Mapping) else since
            result[table] = _collect(conn, info, _check_since(start), new_anchor,
                                     exclude_context)
        return GroupChangeSet(new_anchor, result)


class ChangeStream:
    """Changes of one table, streamed: one row in memory at a time.

    Use as a context manager; the read snapshot (a SAVEPOINT) is held from
    __enter__ to __exit__, and .new_anchor is known from __enter__ on:

        with sqlite_ct.iter_changes(conn, "orders", since) as stream:
            for change in stream:
                send(change.kind, change.row)
        save(stream.new_anchor)
    """

    def __init__(self, conn: Any, table: str, since: int,
                 exclude_context: Optional[uuid.UUID] = None) -> None:
        _context_bytes(exclude_context)
        self._conn = conn
        self._table = table
        self._since = since
        self._exclude = exclude_context
        self._savepoint: Optional[Any] = None
        self._info: Optional[_TableInfo] = None
        self.new_anchor: Optional[int] = None

    def __enter__(self) -> "ChangeStream":
        _conn.require_loaded(self._conn)
        _refuse_in_own_write(self._conn)
        self._savepoint = _conn.savepoint(self._conn, "sqlite_ct_stream")
        self._savepoint.__enter__()
        try:
            self._info = _table_info(self._conn, self._table, "iter_changes")
            self.new_anchor = _new_anchor(self._conn)
            _validate(self._conn, self._info, _check_since(self._since), self.new_anchor)
        except BaseException as exc:
            self._savepoint.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._savepoint is not None:
            savepoint, self._savepoint = self._savepoint, None
            savepoint.__exit__(*exc_info)

    def __iter__(self) -> Iterator[Change]:
        if self._info is None or self._savepoint is None or self.new_anchor is None:
            raise RuntimeError("iterate a ChangeStream inside its `with` block")
        name = self._info.name
        return (Change(kind, name, row) for kind, row in _iter_rows(
            self._conn, self._info, self._since, self.new_anchor, self._exclude))


def iter_changes(conn: Any, table: str, since: int, *,
                 exclude_context: Optional[uuid.UUID] = None) -> ChangeStream:
    """Stream the changes of `table` since `since` without holding them all in
    memory; see ChangeStream."""
    return ChangeStream(conn, table, since, exclude_context)


class GroupChangeStream:
    """The changes of several tables read in one snapshot, streamed by kind:
    rows(table, kind) yields plain tuples (the key columns of a delete, the
    user columns of an insert or update) one at a time, so a reader holds no
    more of them than it keeps. What a sync client uploads in batches, in the
    order one transaction applies them (every table's deletes before any
    insert).

    Use as a context manager; the read snapshot (a SAVEPOINT) is held from
    __enter__ to __exit__, and .new_anchor is known from __enter__ on. `since`
    is as for enumerate_group_changes.

    Every change has a change BSN: sqlite_ct_changes()'s change_bsn, the BSN
    of the transaction that last changed the row (a delete: the key's newest
    tombstone; a row with NULL stamps: the enabling BSN). bsn_counts() counts
    the changes per BSN, and rows(..., after=, up_to=, with_bsn=) reads the
    changes of a run of BSNs and hands each one's BSN out, so a reader can
    cut the window into runs of whole transactions without reading a run
    twice. Whatever the run, a change is what it is in the whole window
    (since, new_anchor]: an insert is a row inserted after `since`, even when
    the run starts later."""

    def __init__(self, conn: Any, tables: Sequence[str],
                 since: Union[int, Mapping[str, int]], *,
                 exclude_context: Optional[uuid.UUID] = None) -> None:
        _context_bytes(exclude_context)
        self._conn = conn
        self._tables = list(tables)
        self._since = since
        self._exclude = exclude_context
        self._savepoint: Optional[Any] = None
        self._infos: Dict[str, Tuple[_TableInfo, int]] = {}
        self.new_anchor: Optional[int] = None

    def __enter__(self) -> "GroupChangeStream":
        _conn.require_loaded(self._conn)
        _refuse_in_own_write(self._conn)
        self._savepoint = _conn.savepoint(self._conn, "sqlite_ct_group_stream")
        self._savepoint.__enter__()
        try:
            self.new_anchor = new_anchor = _new_anchor(self._conn)
            for table in self._tables:
                info = _table_info(self._conn, table, "GroupChangeStream")
                start = (self._since.get(table, 0) if isinstance(self._since, Mapping)
                         else self._since)
                _validate(self._conn, info, _check_since(start), new_anchor)
                self._infos[table] = (info, start)
        except BaseException as exc:
            self._savepoint.__exit__(type(exc), exc, exc.__traceback__)
            self._savepoint = None
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._savepoint is not None:
            savepoint, self._savepoint = self._savepoint, None
            savepoint.__exit__(*exc_info)

    def columns(self, table: str) -> Tuple[List[str], List[str]]:
        """(user columns, key columns) of `table`, the order of rows()' tuples."""
        info = self._infos[table][0]
        return info.columns, info.keys

    def rows(self, table: str, kind: str, *, after: Optional[int] = None,
             up_to: Optional[int] = None, with_bsn: bool = False,
             bsn_order: bool = False) -> Iterator[Tuple[Any, ...]]:
        """The `kind` ("delete", "insert" or "update") changes of `table`;
        only those whose change BSN lies in (after, up_to] when given. With
        with_bsn each tuple ends with the change's BSN. bsn_order: in change
        BSN order (then by key), sorted once, so one pass can hand out run
        after run of transactions (the deletes, whose slices each read all
        the window's tombstones)."""
        if self._savepoint is None or self.new_anchor is None:
            raise RuntimeError("read a GroupChangeStream inside its `with` block")
        if kind not in ("delete", "insert", "update"):
            raise ValueError(f"kind must be delete, insert or update, not {kind!r}")
        info, since = self._infos[table]
        width = len(info.columns)
        params = _params(info, since, self.new_anchor, self._exclude)
        try:
            if kind == "delete":
                terms, bounds = _bounds(after, up_to)
                tail = ", change_bsn" if with_bsn else ""
                if bsn_order:
                    terms += " ORDER BY change_bsn, pk"
                for row in _conn.rows(self._conn, _delete_query(info, tail, terms),
                                      params + bounds):
                    yield tuple(row)
                return
            op = "I" if kind == "insert" else "U"
            terms, bounds = _bounds(after, up_to, "c.")
            if bsn_order:
                terms += " ORDER BY c.change_bsn, c.pk"
            if with_bsn:
                sql = _row_query(info, f"c.op = '{op}'{terms}", "c.change_bsn")
                for row in _conn.rows(self._conn, sql, params + bounds):
                    yield tuple(row)
                return
            for row in _conn.rows(self._conn, _row_query(info, f"c.op = '{op}'{terms}"),
                                  params + bounds):
                yield tuple(row[:width])
        except Exception as exc:
            if _undecodable(exc):
                raise _bad_text(self._conn, info, exc) from exc
            raise

    def reinserted(self, table: str) -> Iterator[Tuple[Any, ...]]:
        """The keys of `table` both deleted and inserted again in the window
        (an INSERT OR REPLACE of a key the replica had, or a delete and a
        re-insert), each followed by its delete's change BSN. Keys compare as
        their packed form does, by type and value (1, 1.0 and '1' are three
        keys). SQLite matches them (a temporary index of the inserted keys),
        so the reader holds none but these."""
        if self._savepoint is None or self.new_anchor is None:
            raise RuntimeError("read a GroupChangeStream inside its `with` block")
        info, since = self._infos[table]
        params = _params(info, since, self.new_anchor, self._exclude)
        keys = ", ".join(f"sqlite_ct_unpack_key(d.pk, {i})" for i in range(len(info.keys)))
        sql = (f"SELECT {keys}, d.change_bsn FROM {_CHANGES} AS d WHERE d.op = 'D' "
               f"AND d.pk IN (SELECT i.pk FROM {_CHANGES} AS i WHERE i.op = 'I')")
        try:
            for row in _conn.rows(self._conn, sql, params):
                yield tuple(row)
        except Exception as exc:
            if _undecodable(exc):
                raise _bad_text(self._conn, info, exc) from exc
            raise

    def born_deleted(self, table: str) -> Iterator[Tuple[Any, ...]]:
        """The keys of `table` the window saw inserted and deleted again
        (every tombstone of the key in the window is of a row inserted after
        `since`, and the key is not live): op 'B' of sqlite_ct_changes(). No
        change for a replica that never saw the row; a sync client sends
        them so that a hub can drop a row it got from an upload the client
        has since lost (a rolled-back session, a restored backup)."""
        if self._savepoint is None or self.new_anchor is None:
            raise RuntimeError("read a GroupChangeStream inside its `with` block")
        info, since = self._infos[table]
        params = _params(info, since, self.new_anchor, self._exclude)
        keys = ", ".join(f"sqlite_ct_unpack_key(pk, {i})" for i in range(len(info.keys)))
        try:
            for row in _conn.rows(self._conn, f"SELECT {keys} FROM {_CHANGES} WHERE op = 'B'",
                                  params):
                yield tuple(row)
        except Exception as exc:
            if _undecodable(exc):
                raise _bad_text(self._conn, info, exc) from exc
            raise

    def bsn_counts(self, table: str) -> Iterator[Tuple[int, int]]:
        """(change BSN, number of changes) for each BSN of `table`'s changes,
        in BSN order: what a reader needs to plan runs of whole transactions
        (rows(after=, up_to=)). Reads the change index and the tombstones,
        no row of the table."""
        if self._savepoint is None or self.new_anchor is None:
            raise RuntimeError("read a GroupChangeStream inside its `with` block")
        info, since = self._infos[table]
        params = _params(info, since, self.new_anchor, self._exclude)
        for bsn, n in _conn.rows(self._conn, f"SELECT change_bsn, count(*) FROM {_CHANGES} "
                                             f"GROUP BY change_bsn ORDER BY change_bsn", params):
            yield int(bsn), int(n)
