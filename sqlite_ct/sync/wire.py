"""The versioned JSON wire format of the sync messages (docs/wire-format.md).

Every message the agent and a server provider exchange (messages.py, and the
schema and conflicts of model.py) has one JSON form, so that a client and a
server in different processes, machines or languages agree byte for byte on
what was sent. encode() and decode() are the whole surface:

    data = wire.encode(upload)                 # bytes, UTF-8 JSON
    upload = wire.decode(data, wire.Upload)    # WireError if it is not one

FORMAT. A message is a JSON object {"v": 2, "type": "<Name>", ...fields}.
Field names are the dataclass field names. A decoder refuses an unknown
version, an unknown type, a missing or an unknown field, and a field of the
wrong JSON type; nothing is coerced.

SQLite values (row values, keys, filter parameters) keep their exact type:
  NULL                    null
  TEXT                    a JSON string
  INTEGER |n| <= 2^53-1   a JSON integer (exact in every JSON parser)
  INTEGER otherwise       {"i": "<decimal>"}, within int64
  REAL, finite            a JSON number with a "." or an exponent (-0.0 included)
  REAL, +-infinity        {"f": "inf"} / {"f": "-inf"}
  BLOB                    {"b": "<base64, standard alphabet, padded>"}
NaN has no SQLite value (SQLite binds it as NULL) and is refused; a Python
bool is sent as the integer SQLite stores. Fields that are bytes by type
(anchors, session tokens) are base64 strings, UUIDs their canonical
lowercase hyphenated text, enums their value (the .NET name).

HOW IT WORKS. Encoding walks the dataclasses and hands json.dumps plain
lists and dicts. Decoding parses with json.loads (constants such as NaN and
duplicate object keys refused), then checks every field while building the
dataclasses, with the path of the first bad field in the error
("Upload.tables[0].inserts[3][1]: ..."). Malformed input of any kind raises
WireError, never another exception.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from .enums import ApplyAction, ConflictType, SyncStage
from .errors import SyncError
from .messages import (DownloadBatch, DownloadRequest, DownloadTable, ServerInfo, TableChanges,
                       Upload, UploadResult)
from .model import ColumnSchema, Conflict, SyncSchema, TableSchema

__all__ = ["WIRE_VERSION", "WireError", "SchemaRequest", "TableList", "ReplicaClaim", "ErrorReply",
           "encode", "decode", "to_json", "from_json", "MESSAGE_TYPES"]

WIRE_VERSION = 2
_MAX_SAFE = 2 ** 53 - 1
_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,18})\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")

T = TypeVar("T")


class WireError(SyncError):
    """A wire message is malformed: not JSON, another version, another
    message type than expected, a missing, unknown or mistyped field, a value
    that is no SQLite value. The message names the first bad field."""


@dataclasses.dataclass(frozen=True)
class SchemaRequest:
    """ServerProvider.get_schema(tables) as a message."""
    tables: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TableList:
    """The tables a sync service offers."""
    tables: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ReplicaClaim:
    """ServerProvider.claim_replica() as a message: the client database that
    holds replica generation `generation` (None the first time) moves to
    `next_generation`. Answered with the service's ServerInfo."""
    client_id: uuid.UUID
    generation: Optional[bytes]
    next_generation: bytes


@dataclasses.dataclass(frozen=True)
class ErrorReply:
    """An error answered by a sync service: a stable code, a message for
    people, and whether the same request may succeed when retried."""
    code: str
    message: str
    retry: bool = False


# --- values -------------------------------------------------------------------

def _enc_value(v: Any) -> Any:
    t = type(v)
    if t is str or v is None:
        return v
    if t is int:
        if -_MAX_SAFE <= v <= _MAX_SAFE:
            return v
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise WireError(f"integer {v} is outside SQLite's 64-bit range")
        return {"i": str(v)}
    if t is float:
        if v - v == 0.0:  # finite
            return v
        if v != v:
            raise WireError("NaN has no SQLite value (SQLite stores it as NULL); send None")
        return {"f": "inf" if v > 0 else "-inf"}
    if t is bytes or t is bytearray or t is memoryview:
        return {"b": base64.b64encode(bytes(v)).decode("ascii")}
    if t is bool:
        return int(v)
    raise WireError(f"a {t.__name__} is not a SQLite value (None, int, float, str, bytes)")


def _text(v: Any) -> bool:
    return type(v) is str and (v.isascii() or _SURROGATE.search(v) is None)


def _dec_value(v: Any) -> Any:
    t = type(v)
    if t is str:
        if v.isascii() or _SURROGATE.search(v) is None:
            return v
        raise ValueError("text holds a lone UTF-16 surrogate")
    if v is None:
        return None
    if t is int:
        if -_MAX_SAFE <= v <= _MAX_SAFE:
            return v
        raise ValueError(f'integer beyond +-(2^53-1) must be sent as {{"i": "{v}"}}')
    if t is float:
        return v
    if t is dict and len(v) == 1:
        (tag, body), = v.items()
        if type(body) is str:
            if tag == "b":
                try:
                    return base64.b64decode(body, validate=True)
                except (binascii.Error, ValueError):
                    raise ValueError("malformed base64 in a blob") from None
            if tag == "i":
                if _DECIMAL.match(body):
                    n = int(body)
                    if _INT64_MIN <= n <= _INT64_MAX and not -_MAX_SAFE <= n <= _MAX_SAFE:
                        return n
                raise ValueError(f'"i" must hold a decimal integer beyond +-(2^53-1) '
                                 f"within int64, not {body[:40]!r}")
            if tag == "f":
                if body == "inf":
                    return float("inf")
                if body == "-inf":
                    return float("-inf")
                raise ValueError('"f" must be "inf" or "-inf"')
    raise ValueError(f"not a SQLite value: {_short(v)}")


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, (bytes, bytearray)) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# --- decoding helpers ------------------------------------------------------------

class _Path:
    """Where a decoder is, for error messages; built only when one is raised."""

    def __init__(self, parts: Tuple[Any, ...]) -> None:
        self.parts = parts

    def __truediv__(self, part: Any) -> "_Path":
        return _Path(self.parts + (part,))

    def __str__(self) -> str:
        out = ""
        for p in self.parts:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
        return out

    def fail(self, what: str) -> "WireError":
        return WireError(f"sqlite-ct wire: {self}: {what}")


def _obj(v: Any, path: _Path, fields: Tuple[str, ...], optional: Tuple[str, ...] = ()
         ) -> Dict[str, Any]:
    if type(v) is not dict:
        raise path.fail(f"expected an object, got {_kind(v)}")
    unknown = [k for k in v if k not in fields]
    if unknown:
        raise path.fail(f"unknown field {unknown[0]!r}")
    missing = [k for k in fields if k not in v and k not in optional]
    if missing:
        raise path.fail(f"missing field {missing[0]!r}")
    return v


def _kind(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", int: "an integer",
            float: "a number", bool: "a boolean", type(None): "null"}.get(type(v), "?")


def _str(v: Any, path: _Path) -> str:
    if not _text(v):
        raise path.fail(f"expected a string, got {_kind(v)}" if type(v) is not str
                        else "text holds a lone UTF-16 surrogate")
    return v


def _name(v: Any, path: _Path) -> str:
    s = _str(v, path)
    if not s or "\0" in s:
        raise path.fail("a name must be a non-empty string without NUL")
    return s


def _opt_str(v: Any, path: _Path) -> Optional[str]:
    return None if v is None else _str(v, path)


def _bool(v: Any, path: _Path) -> bool:
    if type(v) is not bool:
        raise path.fail(f"expected true or false, got {_kind(v)}")
    return v


def _int(v: Any, path: _Path, low: int = 0, high: int = _MAX_SAFE) -> int:
    if type(v) is not int or not low <= v <= high:
        raise path.fail(f"expected an integer in [{low}, {high}], got {_short(v)}")
    return v


def _list(v: Any, path: _Path) -> list:
    if type(v) is not list:
        raise path.fail(f"expected an array, got {_kind(v)}")
    return v


def _names(v: Any, path: _Path) -> Tuple[str, ...]:
    out = tuple(_name(x, path / i) for i, x in enumerate(_list(v, path)))
    if len({x.lower() for x in out}) != len(out):
        raise path.fail("names repeat (case-insensitively)")
    return out


def _bytes(v: Any, path: _Path) -> bytes:
    if type(v) is not str:
        raise path.fail(f"expected a base64 string, got {_kind(v)}")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise path.fail("malformed base64") from None


def _opt_bytes(v: Any, path: _Path) -> Optional[bytes]:
    return None if v is None else _bytes(v, path)


def _b64(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else base64.b64encode(bytes(b)).decode("ascii")


def _uuid(v: Any, path: _Path) -> uuid.UUID:
    if type(v) is str:
        try:
            u = uuid.UUID(v)
        except ValueError:
            u = None
        if u is not None and str(u) == v:
            return u
    raise path.fail(f"expected a UUID in canonical form, got {_short(v)}")


def _dict(v: Any, path: _Path, value: Callable[[Any, _Path], Any]) -> Dict[str, Any]:
    if type(v) is not dict:
        raise path.fail(f"expected an object, got {_kind(v)}")
    return {_name(k, path): value(x, path / k) for k, x in v.items()}


def _sql_value(v: Any, path: _Path) -> Any:
    try:
        return _dec_value(v)
    except ValueError as exc:
        raise path.fail(str(exc)) from None


def _row(v: Any, path: _Path, n: int) -> tuple:
    if type(v) is not list or len(v) != n:
        raise path.fail(f"expected an array of {n} values, got "
                        + (f"{len(v)}" if type(v) is list else _kind(v)))
    try:
        return tuple(map(_dec_value, v))
    except ValueError:
        for i, x in enumerate(v):
            _sql_value(x, path / i)
        raise  # not reached: one of them failed


def _values(v: Any, path: _Path) -> Dict[str, Any]:
    return _dict(v, path, _sql_value)


def _opt_row(v: Any, path: _Path) -> Optional[Dict[str, Any]]:
    return None if v is None else _values(v, path)


def _enum(cls: Any, v: Any, path: _Path) -> Any:
    try:
        return cls(v)
    except (ValueError, TypeError):
        raise path.fail(f"expected one of {', '.join(repr(m.value) for m in cls)}, "
                        f"got {_short(v)}") from None


def _enc_row(row: Any) -> list:
    return [_enc_value(v) for v in row]


def _enc_values(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: _enc_value(v) for k, v in d.items()}


# --- the messages ---------------------------------------------------------------

def _e_table_changes(tc: TableChanges) -> Dict[str, Any]:
    return {"table": tc.table, "columns": list(tc.columns), "key_columns": list(tc.key_columns),
            "deletes": [_enc_row(r) for r in tc.deletes],
            "inserts": [_enc_row(r) for r in tc.inserts],
            "updates": [_enc_row(r) for r in tc.updates], "reset": tc.reset,
            "transactions": list(tc.transactions),
            "own_deletes": [_enc_row(r) for r in tc.own_deletes]}


_TC = ("table", "columns", "key_columns", "deletes", "inserts", "updates", "reset",
       "transactions", "own_deletes")


def _d_table_changes(v: Any, path: _Path) -> TableChanges:
    o = _obj(v, path, _TC, optional=("transactions", "own_deletes"))
    columns = _names(o["columns"], path / "columns")
    keys = _names(o["key_columns"], path / "key_columns")
    if not keys:
        raise (path / "key_columns").fail("a table needs at least one key column")
    lower = {c.lower() for c in columns}
    if any(k.lower() not in lower for k in keys):
        raise (path / "key_columns").fail("every key column must be one of the columns")
    nc, nk = len(columns), len(keys)
    rows = {}
    for field, n in (("deletes", nk), ("inserts", nc), ("updates", nc)):
        p = path / field
        rows[field] = [_row(r, p / i, n) for i, r in enumerate(_list(o[field], p))]
    p = path / "transactions"
    txns = [_int(t, p / i) for i, t in enumerate(_list(o.get("transactions", []), p))]
    if txns and len(txns) != sum(len(r) for r in rows.values()):
        raise p.fail("expected one transaction per change (deletes, inserts, updates), or none")
    p = path / "own_deletes"
    own = [_row(r, p / i, nk) for i, r in enumerate(_list(o.get("own_deletes", []), p))]
    return TableChanges(_name(o["table"], path / "table"), columns, keys, rows["deletes"],
                        rows["inserts"], rows["updates"], _bool(o["reset"], path / "reset"),
                        txns, own)


def _e_conflict(c: Conflict) -> Dict[str, Any]:
    return {"type": c.type.value, "stage": c.stage.value, "table": c.table,
            "key": _enc_values(c.key),
            "client_row": None if c.client_row is None else _enc_values(c.client_row),
            "server_row": None if c.server_row is None else _enc_values(c.server_row),
            "error": c.error, "action": None if c.action is None else c.action.value,
            "attempts": c.attempts, "deferred": c.deferred, "transaction": c.transaction}


_CONFLICT = ("type", "stage", "table", "key", "client_row", "server_row", "error", "action",
             "attempts", "deferred", "transaction")


def _d_conflict(v: Any, path: _Path) -> Conflict:
    o = _obj(v, path, _CONFLICT, optional=("deferred", "transaction"))
    action = o["action"]
    deferred = _bool(o.get("deferred", False), path / "deferred")
    txn = o.get("transaction")
    txn = None if txn is None else _int(txn, path / "transaction")
    return dataclasses.replace(Conflict(_enum(ConflictType, o["type"], path / "type"),
                    _enum(SyncStage, o["stage"], path / "stage"),
                    _name(o["table"], path / "table"), _values(o["key"], path / "key"),
                    _opt_row(o["client_row"], path / "client_row"),
                    _opt_row(o["server_row"], path / "server_row"),
                    _opt_str(o["error"], path / "error"), None,
                    None if action is None else _enum(ApplyAction, action, path / "action"),
                    _int(o["attempts"], path / "attempts")), deferred=deferred,
                    transaction=txn)


def _e_column(c: ColumnSchema) -> Dict[str, Any]:
    return {"name": c.name, "type": c.type, "not_null": c.not_null, "default": c.default}


def _d_column(v: Any, path: _Path) -> ColumnSchema:
    o = _obj(v, path, ("name", "type", "not_null", "default"))
    return ColumnSchema(_name(o["name"], path / "name"), _str(o["type"], path / "type"),
                        _bool(o["not_null"], path / "not_null"),
                        _opt_str(o["default"], path / "default"))


def _e_table_schema(t: TableSchema) -> Dict[str, Any]:
    return {"name": t.name, "columns": [_e_column(c) for c in t.columns],
            "primary_key": list(t.primary_key), "without_rowid": t.without_rowid,
            "constraints": list(t.constraints)}


def _d_table_schema(v: Any, path: _Path) -> TableSchema:
    o = _obj(v, path, ("name", "columns", "primary_key", "without_rowid", "constraints"))
    p = path / "columns"
    columns = tuple(_d_column(c, p / i) for i, c in enumerate(_list(o["columns"], p)))
    if len({c.name.lower() for c in columns}) != len(columns):
        raise p.fail("column names repeat (case-insensitively)")
    key = _names(o["primary_key"], path / "primary_key")
    if not key or any(k.lower() not in {c.name.lower() for c in columns} for k in key):
        raise (path / "primary_key").fail("the primary key must name one or more columns")
    p = path / "constraints"
    return TableSchema(_name(o["name"], path / "name"), columns, key,
                       _bool(o["without_rowid"], path / "without_rowid"),
                       tuple(_str(c, p / i) for i, c in enumerate(_list(o["constraints"], p))))


def _e_download_table(t: DownloadTable) -> Dict[str, Any]:
    return {"table": t.table, "anchor": _b64(t.anchor), "snapshot": t.snapshot}


def _d_download_table(v: Any, path: _Path) -> DownloadTable:
    o = _obj(v, path, ("table", "anchor", "snapshot"))
    return DownloadTable(_name(o["table"], path / "table"),
                         _opt_bytes(o["anchor"], path / "anchor"),
                         _bool(o["snapshot"], path / "snapshot"))


def _tables_list(v: Any, path: _Path, dec: Callable[[Any, _Path], T]) -> List[T]:
    p = path
    return [dec(x, p / i) for i, x in enumerate(_list(v, p))]


_ENCODERS: Dict[type, Tuple[str, Callable[[Any], Dict[str, Any]]]] = {}
_DECODERS: Dict[str, Tuple[type, Tuple[str, ...], Tuple[str, ...],
                           Callable[[Dict[str, Any], _Path], Any]]] = {}


def _message(cls: type, fields: Tuple[str, ...], optional: Tuple[str, ...] = ()):
    def register(pair):
        enc, dec = pair
        _ENCODERS[cls] = (cls.__name__, enc)
        _DECODERS[cls.__name__] = (cls, fields, optional, dec)
        return pair
    return register


_message(ServerInfo, ("server_id",))((
    lambda m: {"server_id": str(m.server_id)},
    lambda o, p: ServerInfo(_uuid(o["server_id"], p / "server_id"))))

_message(SchemaRequest, ("tables",))((
    lambda m: {"tables": list(m.tables)},
    lambda o, p: SchemaRequest(_names(o["tables"], p / "tables"))))

_message(TableList, ("tables",))((
    lambda m: {"tables": list(m.tables)},
    lambda o, p: TableList(_names(o["tables"], p / "tables"))))

_message(ReplicaClaim, ("client_id", "generation", "next_generation"))((
    lambda m: {"client_id": str(m.client_id), "generation": _b64(m.generation),
               "next_generation": _b64(m.next_generation)},
    lambda o, p: ReplicaClaim(_uuid(o["client_id"], p / "client_id"),
                              _opt_bytes(o["generation"], p / "generation"),
                              _bytes(o["next_generation"], p / "next_generation"))))

_message(ErrorReply, ("code", "message", "retry"))((
    lambda m: {"code": m.code, "message": m.message, "retry": m.retry},
    lambda o, p: ErrorReply(_name(o["code"], p / "code"), _str(o["message"], p / "message"),
                            _bool(o["retry"], p / "retry"))))

_message(SyncSchema, ("tables", "initial_anchors", "current_anchors"))((
    lambda m: {"tables": {k: _e_table_schema(t) for k, t in m.tables.items()},
               "initial_anchors": {k: _b64(a) for k, a in m.initial_anchors.items()},
               "current_anchors": {k: _b64(a) for k, a in m.current_anchors.items()}},
    lambda o, p: SyncSchema(_dict(o["tables"], p / "tables", _d_table_schema),
                            _dict(o["initial_anchors"], p / "initial_anchors", _bytes),
                            _dict(o["current_anchors"], p / "current_anchors", _bytes))))

_UPLOAD = ("client_id", "group", "tables", "received_anchors", "parameters", "session", "batch")
_message(Upload, _UPLOAD)((
    lambda m: {"client_id": str(m.client_id), "group": m.group,
               "tables": [_e_table_changes(t) for t in m.tables],
               "received_anchors": {k: _b64(a) for k, a in m.received_anchors.items()},
               "parameters": _enc_values(m.parameters), "session": _b64(m.session),
               "batch": m.batch},
    lambda o, p: Upload(_uuid(o["client_id"], p / "client_id"), _str(o["group"], p / "group"),
                        _tables_list(o["tables"], p / "tables", _d_table_changes),
                        _dict(o["received_anchors"], p / "received_anchors", _opt_bytes),
                        _values(o["parameters"], p / "parameters"),
                        _opt_bytes(o["session"], p / "session"), _int(o["batch"], p / "batch"))))

_message(UploadResult, ("applied", "failed", "conflicts", "corrections"))((
    lambda m: {"applied": m.applied, "failed": m.failed,
               "conflicts": [_e_conflict(c) for c in m.conflicts],
               "corrections": [_e_table_changes(t) for t in m.corrections]},
    lambda o, p: UploadResult(_int(o["applied"], p / "applied"), _int(o["failed"], p / "failed"),
                              _tables_list(o["conflicts"], p / "conflicts", _d_conflict),
                              _tables_list(o["corrections"], p / "corrections",
                                           _d_table_changes))))

_DOWNLOAD = ("client_id", "group", "tables", "batch_size", "parameters", "session")
_message(DownloadRequest, _DOWNLOAD)((
    lambda m: {"client_id": str(m.client_id), "group": m.group,
               "tables": [_e_download_table(t) for t in m.tables],
               "batch_size": m.batch_size, "parameters": _enc_values(m.parameters),
               "session": _b64(m.session)},
    lambda o, p: DownloadRequest(
        _uuid(o["client_id"], p / "client_id"), _str(o["group"], p / "group"),
        _tables_list(o["tables"], p / "tables", _d_download_table),
        None if o["batch_size"] is None else _int(o["batch_size"], p / "batch_size", 1),
        _values(o["parameters"], p / "parameters"), _opt_bytes(o["session"], p / "session"))))

_message(DownloadBatch, ("tables", "anchors", "session", "more"))((
    lambda m: {"tables": [_e_table_changes(t) for t in m.tables],
               "anchors": {k: _b64(a) for k, a in m.anchors.items()},
               "session": _b64(m.session), "more": m.more},
    lambda o, p: DownloadBatch(_tables_list(o["tables"], p / "tables", _d_table_changes),
                               _dict(o["anchors"], p / "anchors", _bytes),
                               _bytes(o["session"], p / "session"), _bool(o["more"], p / "more"))))

MESSAGE_TYPES: Tuple[type, ...] = tuple(_ENCODERS)


# --- the surface ----------------------------------------------------------------

def to_json(message: Any) -> Dict[str, Any]:
    """The message as a JSON-ready dict (plain lists, dicts, strings, numbers)."""
    try:
        name, enc = _ENCODERS[type(message)]
    except KeyError:
        raise WireError(f"sqlite-ct wire: {type(message).__name__} is not a wire message") \
            from None
    try:
        body = enc(message)
    except WireError as exc:
        raise WireError(f"sqlite-ct wire: cannot encode {name}: {exc}") from None
    except (AttributeError, TypeError) as exc:
        raise WireError(f"sqlite-ct wire: cannot encode {name}: {exc}") from None
    return {"v": WIRE_VERSION, "type": name, **body}


def encode(message: Any) -> bytes:
    """The message as compact UTF-8 JSON."""
    return json.dumps(to_json(message), separators=(",", ":"), allow_nan=False).encode("ascii")


def from_json(obj: Any, expect: Optional[Type[T]] = None) -> T:
    """Check and build a message from parsed JSON; `expect`: the one type
    accepted (None: any wire message)."""
    root = _Path(("message",))
    if type(obj) is not dict:
        raise root.fail(f"expected a JSON object, got {_kind(obj)}")
    version = obj.get("v")
    if version != WIRE_VERSION or type(version) is not int:
        raise WireError(f"sqlite-ct wire: unsupported wire version {_short(version)}; this "
                        f"sqlite-ct speaks version {WIRE_VERSION}")
    name = obj.get("type")
    entry = _DECODERS.get(name) if type(name) is str else None
    if entry is None:
        raise WireError(f"sqlite-ct wire: unknown message type {_short(name)}")
    cls, fields, optional, dec = entry
    if expect is not None and cls is not expect:
        raise WireError(f"sqlite-ct wire: expected a {expect.__name__} message, got {name}")
    path = _Path((name,))
    body = {k: v for k, v in obj.items() if k not in ("v", "type")}
    _obj(body, path, fields, optional)
    try:
        return dec(body, path)
    except RecursionError:
        raise path.fail("nested too deeply") from None


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")


def _pairs(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("an object repeats a key")
    return out


def decode(data: Any, expect: Optional[Type[T]] = None) -> T:
    """Parse and check one message (bytes or str of UTF-8 JSON)."""
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8")
        obj = json.loads(data, parse_constant=_no_constant, object_pairs_hook=_pairs)
    except (UnicodeDecodeError, ValueError, RecursionError, TypeError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise WireError(f"sqlite-ct wire: not a JSON message: {reason[:200]}") from None
    return from_json(obj, expect)
