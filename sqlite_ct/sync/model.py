"""What an application configures and gets back: tables and groups, conflict
resolution, statistics, progress events, and the schema description the server
hands the client on a first synchronisation.
"""
from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any, Dict, List, Optional, Tuple

from .._conn import quote_identifier
from .errors import SyncError
from .enums import (ApplyAction, ConflictType, ResolveAction, SyncDirection, SyncStage,
                    TableCreationOption)

__all__ = ["SyncGroup", "SyncTable", "ConflictResolver", "Conflict", "StoredConflict",
           "SyncStatistics",
           "SyncProgress", "ColumnSchema", "TableSchema", "SyncSchema"]

Row = Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SyncGroup:
    """Tables whose changes travel together: one upload transaction on the
    server and one download transaction (per batch) on the client."""
    name: str


@dataclasses.dataclass(frozen=True)
class SyncTable:
    """One table to synchronise. Tables without a group are each their own
    group. The default creation option never discards client data: it creates
    a missing table and uploads the rows of an existing one."""
    name: str
    direction: SyncDirection = SyncDirection.BIDIRECTIONAL
    creation_option: TableCreationOption = TableCreationOption.UPLOAD_EXISTING_OR_CREATE_NEW_TABLE
    group: Optional[SyncGroup] = None


_RESOLVER_FIELDS = {
    ConflictType.CLIENT_INSERT_SERVER_INSERT: "client_insert_server_insert",
    ConflictType.CLIENT_UPDATE_SERVER_UPDATE: "client_update_server_update",
    ConflictType.CLIENT_UPDATE_SERVER_DELETE: "client_update_server_delete",
    ConflictType.CLIENT_DELETE_SERVER_UPDATE: "client_delete_server_update",
    ConflictType.ERRORS_OCCURRED: "store_error",
    ConflictType.UNKNOWN: "store_error",
}


@dataclasses.dataclass(frozen=True)
class ConflictResolver:
    """Per conflict type: who wins, or FIRE_EVENT to ask the provider's
    on_apply_change_failed callback.

    The default lets the server win every conflict on both sides, so replicas
    converge with no configuration. Sync Services defaulted to FIRE_EVENT, and
    with no handler its rows were skipped (ApplyAction.Continue) and counted as
    failed while the anchors moved on: the replicas disagreed until the row
    changed again. A store error (a constraint the row violates) has no winner
    to pick: by default it fires the event, and without a handler it is
    deferred (as ResolveAction.DEFER): the row is skipped, counted as failed
    and kept with both images and the reason in the client's durable conflict
    inbox, and the rest of the sync goes on, so one failing row neither
    blocks the client nor is lost silently. For
    store_error, the local side winning skips the row (counted as failed); the
    incoming side winning retries it with a forced write, and a row that keeps
    failing stops the sync after 5 attempts."""
    client_insert_server_insert: ResolveAction = ResolveAction.SERVER_WINS
    client_update_server_update: ResolveAction = ResolveAction.SERVER_WINS
    client_update_server_delete: ResolveAction = ResolveAction.SERVER_WINS
    client_delete_server_update: ResolveAction = ResolveAction.SERVER_WINS
    store_error: ResolveAction = ResolveAction.FIRE_EVENT

    def action_for(self, conflict_type: ConflictType) -> ResolveAction:
        return getattr(self, _RESOLVER_FIELDS[conflict_type])


@dataclasses.dataclass
class Conflict:
    """A change that could not be applied as it came (SQL CE's Conflict plus
    the event arguments of ApplyChangeFailed).

    client_row and server_row hold the user columns of each side's version,
    None where that side deleted the row; key holds the key columns. The
    incoming side's row (server_row during download, client_row during upload)
    may be edited by on_apply_change_failed before it returns a RETRY action:
    the edited row is what gets written, and because it differs from what the
    other side has, it is written as a new change that travels back.
    `connection` is the connection being written, inside the sync transaction;
    it is None once the conflict is resolved."""
    type: ConflictType
    stage: SyncStage
    table: str
    key: Row
    client_row: Optional[Row]
    server_row: Optional[Row]
    error: Optional[str] = None
    connection: Any = None
    action: Optional[ApplyAction] = None
    attempts: int = 0
    deferred: bool = False  # kept in the client's conflict inbox (ResolveAction.DEFER)
    # The client transaction an uploaded change belongs to (the client's BSN
    # of it), None for downloads. A client transaction is applied on the hub
    # whole or not at all: when one of its changes is not applied, the
    # others are not either, and each is reported with the same transaction.
    transaction: Optional[int] = None


@dataclasses.dataclass
class SyncStatistics:
    """SyncStatistics of reference §5.3; totals include failed changes.

    Changes the server rejected and returned to the client (its own version of
    a row whose upload lost a conflict) count as downloaded. `conflicts` lists
    every conflict of the session, on both sides, with the action taken."""
    sync_start_time: Optional[datetime.datetime] = None
    sync_complete_time: Optional[datetime.datetime] = None
    total_changes_uploaded: int = 0
    upload_changes_applied: int = 0
    upload_changes_failed: int = 0
    total_changes_downloaded: int = 0
    download_changes_applied: int = 0
    download_changes_failed: int = 0
    download_batches: int = 0
    conflicts: List[Conflict] = dataclasses.field(default_factory=list)
    conflicts_deferred: int = 0  # of `conflicts`, those stored in the conflict inbox


@dataclasses.dataclass(frozen=True)
class SyncProgress:
    """Sent to SyncAgent(progress=...) after each committed step: a table's
    schema created, a group's upload applied, a download batch applied.
    `changes` counts the changes of that step; `more` says whether further
    download batches of the group follow."""
    stage: SyncStage
    group: str
    tables: Tuple[str, ...]
    changes: int
    batch: int
    total_uploaded: int
    total_downloaded: int
    more: bool = False


@dataclasses.dataclass(frozen=True)
class StoredConflict:
    """A deferred conflict in the client's inbox (ClientSyncProvider.conflicts):
    the change that could not be applied, both sides' images as they were,
    and why. `stage` says which side failed: UPLOADING_CHANGES (the server
    kept its version; client_row is the client's lost change) or
    DOWNLOADING_CHANGES (the client could not apply server_row)."""
    id: int
    type: ConflictType
    stage: SyncStage
    table: str
    key: Row
    client_row: Optional[Row]
    server_row: Optional[Row]
    error: Optional[str]
    time: datetime.datetime
    transaction: Optional[int] = None  # see Conflict.transaction


@dataclasses.dataclass(frozen=True)
class ColumnSchema:
    name: str
    type: str = ""
    not_null: bool = False
    default: Optional[str] = None  # SQL text of the DEFAULT expression


@dataclasses.dataclass(frozen=True)
class TableSchema:
    """A server table as the client creates it: columns with their declared
    type, NOT NULL and DEFAULT, the primary key and WITHOUT ROWID. Like Sync
    Services, UNIQUE, CHECK and FOREIGN KEY constraints are not copied; add
    them as `constraints` (table-constraint SQL) in the client provider's
    creating_schema callback."""
    name: str
    columns: Tuple[ColumnSchema, ...]
    primary_key: Tuple[str, ...]
    without_rowid: bool = False
    constraints: Tuple[str, ...] = ()

    def validate(self, expected_name: Optional[str] = None) -> None:
        """Check a schema that came in a message; SyncError if anything in it
        is not what create_table_sql() can render safely. A server sends no
        `constraints` (those are the client application's own SQL)."""
        where = f'table "{expected_name or self.name}" in the server\'s schema'
        if not isinstance(self.name, str) or (
                expected_name is not None and self.name.lower() != expected_name.lower()):
            raise SyncError(f"sqlite-ct sync: {where} is named {self.name!r}")
        if self.constraints:
            raise SyncError(f"sqlite-ct sync: {where} carries table constraints; a server "
                            f"sends none (add them in ClientSyncProvider(creating_schema=...))")
        if not isinstance(self.without_rowid, bool) or not self.columns:
            raise SyncError(f"sqlite-ct sync: {where} is malformed")
        names = set()
        for col in self.columns:
            if not isinstance(col, ColumnSchema) or not _is_name(col.name) \
                    or not isinstance(col.not_null, bool) or col.name.lower() in names \
                    or col.name.lower().startswith("__sys"):
                raise SyncError(f"sqlite-ct sync: {where} has a malformed column "
                                f"{getattr(col, 'name', col)!r}")
            names.add(col.name.lower())
            _column_type(col, self.name)
            _literal_default(col, self.name)
        if not self.primary_key or any(not isinstance(k, str) or k.lower() not in names
                                       for k in self.primary_key):
            raise SyncError(f"sqlite-ct sync: {where} has a primary key "
                            f"{self.primary_key!r} that is not among its columns")

    def create_table_sql(self) -> str:
        """CREATE TABLE for this schema. Names are quoted, the type must be a
        type name and a default a literal, re-rendered from its parsed value:
        nothing of a message is pasted into SQL. `constraints` are appended as
        given: they are the client application's own SQL."""
        parts = [self._column_sql(col) for col in self.columns]
        parts.append("PRIMARY KEY(" + ", ".join(quote_identifier(k) for k in self.primary_key)
                     + ")")
        parts.extend(self.constraints)
        sql = f"CREATE TABLE {quote_identifier(self.name)} ({', '.join(parts)})"
        return sql + (" WITHOUT ROWID" if self.without_rowid else "")

    def _column_sql(self, col: ColumnSchema) -> str:
        text = quote_identifier(col.name)
        ctype = _column_type(col, self.name)
        if ctype:
            text += f" {ctype}"
        if col.not_null:
            text += " NOT NULL"
        default = _literal_default(col, self.name)
        if default is not None:
            text += f" DEFAULT {default}"
        return text

    def add_column_sql(self, table: str, column: str) -> str:
        """ALTER TABLE `table` ADD COLUMN for this schema's `column`, rendered
        as create_table_sql() renders it. SyncError when SQLite cannot add it
        to a table that has rows: NOT NULL without a non-NULL default, or a
        CURRENT_TIME/DATE/TIMESTAMP default."""
        col = next((c for c in self.columns if c.name.lower() == column.lower()), None)
        if col is None:
            raise SyncError(f'sqlite-ct sync: table "{self.name}" in the server\'s schema has '
                            f"no column {column!r}")
        default = _literal_default(col, self.name)
        why = None
        if col.not_null and default in (None, "NULL"):
            why = "NOT NULL without a default"
        elif default is not None and default.startswith("CURRENT_"):
            why = f"DEFAULT {default}"
        if why is not None:
            raise SyncError(
                f'sqlite-ct sync: the hub\'s table "{self.name}" has a new column "{col.name}" '
                f"({why}) that SQLite cannot add to a table that has rows; add it to the "
                f"client table yourself (ALTER TABLE ... ADD COLUMN with a constant default), "
                f"then synchronise")
        return f"ALTER TABLE main.{quote_identifier(table)} ADD COLUMN {self._column_sql(col)}"


@dataclasses.dataclass(frozen=True)
class SyncSchema:
    """ServerProvider.get_schema(): the tables, plus per table the anchor that
    stands for "nothing received yet" (a first download starts there) and the
    anchor that stands for "everything up to now" (an upload-only table starts
    there, so the server's older rows do not count as unseen)."""
    tables: Dict[str, TableSchema]
    initial_anchors: Dict[str, bytes]
    current_anchors: Dict[str, bytes]


# A declared type: one or more words, optionally (n) or (n, m). SQLite takes
# any text here, which is why it may not come from a message unchecked.
_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?: +[A-Za-z_][A-Za-z0-9_]*)*"
                   r"(?: *\( *[+-]?[0-9]+ *(?:, *[+-]?[0-9]+ *)?\))?")
# Words that would end the type and start a column constraint.
_CONSTRAINT_WORDS = {"constraint", "primary", "not", "null", "unique", "check", "default",
                     "collate", "references", "generated", "as", "on", "autoincrement"}
_LITERAL = re.compile(r"""(?P<null>NULL)|(?P<bool>TRUE|FALSE)
    |(?P<now>CURRENT_TIMESTAMP|CURRENT_DATE|CURRENT_TIME)
    |(?P<num>[+-]?(?:0X[0-9A-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:E[+-]?[0-9]+)?))
    |'(?P<str>(?:[^']|'')*)'
    |X'(?P<blob>(?:[0-9A-F][0-9A-F])*)'""", re.X | re.I | re.S)


def _is_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 1000 and "\0" not in name


def _column_type(col: "ColumnSchema", table: str) -> str:
    ctype = col.type
    if ctype is None or ctype == "":
        return ""
    if not isinstance(ctype, str) or len(ctype) > 200 or not _TYPE.fullmatch(ctype.strip()) \
            or _CONSTRAINT_WORDS & set(re.findall(r"[a-z_]+", ctype.lower())):
        raise SyncError(f'sqlite-ct sync: column "{col.name}" of table "{table}" has type '
                        f"{ctype!r}, which is not a type name; the client creates only "
                        f"declared types like TEXT, INTEGER or VARCHAR(20)")
    return ctype.strip()


def _literal_default(col: "ColumnSchema", table: str) -> Optional[str]:
    """The column's DEFAULT re-rendered from the literal it holds (a number,
    a string, a blob, NULL, TRUE/FALSE, CURRENT_TIME/DATE/TIMESTAMP, possibly
    in parentheses), or None; SyncError for anything else."""
    text = col.default
    if text is None:
        return None
    if isinstance(text, str):
        text = text.strip()
        while text.startswith("(") and text.endswith(")"):
            text = text[1:-1].strip()
        m = _LITERAL.fullmatch(text)
    else:
        m = None
    if m is None:
        raise SyncError(
            f'sqlite-ct sync: column "{col.name}" of table "{table}" has DEFAULT {col.default!r}, '
            f"which is not a literal; the client creates literal defaults only: create the "
            f"table on the client yourself (TableCreationOption.USE_EXISTING_TABLE_OR_FAIL)")
    if m.group("str") is not None:
        return "'" + m.group("str").replace("''", "'").replace("'", "''") + "'"
    if m.group("blob") is not None:
        return "X'" + m.group("blob").upper() + "'"
    return m.group(0).upper()
