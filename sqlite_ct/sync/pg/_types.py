"""Values between a client's SQLite and the hub's PostgreSQL columns.

Clients hold SQLite values (integer, real, text, blob, NULL); the hub's
columns have PostgreSQL types. Each supported column type has a category
with two conversions, both exact or refused:

  category  PostgreSQL types                   to PostgreSQL (upload)        to SQLite (download)
  int       smallint, integer, bigint          int in range; integral real   int
  float     double precision, real             real; int if exact            real
  numeric   numeric[(p,s)]                     int, real (shortest repr),    int if integral, else real
                                               decimal text; must fit p,s    if exact, else text
  bool      boolean                            0 or 1                        0 or 1
  text      text, varchar(n), citext           text; int/real as their text  text
  bytea     bytea                              blob                          blob
  uuid      uuid                               text (any case, canonical)    text, lowercase
  json      json, jsonb                        text that parses as JSON      text (jsonb: normalised)
  date      date                               'YYYY-MM-DD'                  'YYYY-MM-DD'
  ts        timestamp                          ISO 8601 text, no offset      'YYYY-MM-DD HH:MM:SS[.ffffff]'
  tstz      timestamptz                        ISO 8601 text; no offset: UTC 'YYYY-MM-DD HH:MM:SS[.ffffff]+00:00'

NULL is NULL both ways. A value that does not fit (a real into an integer
column, an integer out of range, text into bytea, text with a NUL byte, a
real that a `real` (float4) column would round, a numeric that numeric(p,s)
would round) is refused: the row is reported as an ErrorsOccurred conflict
with a message naming the column, the value and the type, and nothing is
written for it. A table with a column of another type cannot be served.
"""
from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import struct
import uuid
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import SyncError


class Unfit(Exception):
    """A value the column cannot hold exactly."""


_INT_RANGE = {"smallint": 2 ** 15, "integer": 2 ** 31, "bigint": 2 ** 63}

# Declared types the client gets (get_schema), which give the client's
# column the SQLite affinity that keeps the values above unchanged. numeric
# gets none: NUMERIC affinity would turn "12345678901234567890.5" into a
# REAL that keeps 15 digits, so the column keeps int, real or text as sent.
_SQLITE_TYPE = {"int": "INTEGER", "float": "REAL", "numeric": "", "bool": "BOOLEAN",
                "text": "TEXT", "bytea": "BLOB", "uuid": "TEXT", "json": "TEXT",
                "date": "TEXT", "ts": "TEXT", "tstz": "TEXT"}

SUPPORTED = ("smallint, integer, bigint, real, double precision, numeric, boolean, text, "
             "character varying, citext, bytea, uuid, json, jsonb, date, "
             "timestamp, timestamptz")


def category(pg_type: str) -> str:
    """The category of a column type as format_type() spells it, or ''."""
    t = pg_type.lower()
    base = re.sub(r"\(.*\)", "", t).strip()
    if base in _INT_RANGE:
        return "int"
    if base in ("double precision", "real"):
        return "float"
    if base == "numeric":
        return "numeric"
    if base == "boolean":
        return "bool"
    if base in ("text", "character varying", "citext"):
        return "text"
    if base == "bytea":
        return "bytea"
    if base == "uuid":
        return "uuid"
    if base in ("json", "jsonb"):
        return "json"
    if base == "date":
        return "date"
    if base == "timestamp without time zone":
        return "ts"
    if base == "timestamp with time zone":
        return "tstz"
    return ""


def sqlite_type(cat: str) -> str:
    return _SQLITE_TYPE[cat]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _to_int(value: Any, pg_type: str) -> int:
    base = pg_type if pg_type in _INT_RANGE else re.sub(r"\(.*\)", "", pg_type).strip()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unfit("is not an integer")
    limit = _INT_RANGE[base]
    if not -limit <= value < limit:
        raise Unfit(f"is out of the range of {base}")
    return value


def _to_float(value: Any, pg_type: str) -> float:
    if isinstance(value, int) and not isinstance(value, bool):
        f = float(value)
        if int(f) != value:
            raise Unfit("cannot be represented exactly as a floating-point number")
        value = f
    if not isinstance(value, float):
        raise Unfit("is not a number")
    if pg_type == "real" and math.isfinite(value):
        try:
            narrowed = struct.unpack("f", struct.pack("f", value))[0]
        except OverflowError:
            narrowed = None
        if narrowed != value:
            raise Unfit("would be rounded by a real (4-byte) column; use double precision")
    return value


_NUMERIC_TYPMOD = re.compile(r"numeric\((\d+)(?:,\s*(-?\d+))?\)")


def _to_numeric(value: Any, pg_type: str) -> decimal.Decimal:
    if isinstance(value, bool):
        raise Unfit("is not a number")
    try:
        if isinstance(value, int):
            d = decimal.Decimal(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                d = decimal.Decimal(repr(value).replace("inf", "Infinity"))
            else:
                d = decimal.Decimal(repr(value))
        elif isinstance(value, str):
            d = decimal.Decimal(value.strip())
        else:
            raise Unfit("is not a number")
    except decimal.InvalidOperation:
        raise Unfit("is not a number") from None
    m = _NUMERIC_TYPMOD.fullmatch(pg_type)
    if m and d.is_finite():
        precision, scale = int(m.group(1)), int(m.group(2) or 0)
        if d != d.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP,
                           context=decimal.Context(prec=1000)):
            raise Unfit(f"has more than {scale} decimal places")
        digits = len(d.quantize(decimal.Decimal(1).scaleb(-scale),
                                context=decimal.Context(prec=1000)).as_tuple().digits)
        if digits > precision and d != 0:
            raise Unfit(f"has more than {precision} significant digits")
    return d


def _to_bool(value: Any, pg_type: str) -> bool:
    if isinstance(value, float) and value in (0.0, 1.0):
        value = int(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise Unfit("is not 0 or 1")


def _to_text(value: Any, pg_type: str) -> str:
    if isinstance(value, bool):
        raise Unfit("is not text")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise Unfit("is not text (a blob)")
    if "\0" in value:
        raise Unfit("contains a NUL character, which PostgreSQL text cannot hold")
    return value


def _to_bytea(value: Any, pg_type: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise Unfit("is not a blob")
    return bytes(value)


def _to_uuid(value: Any, pg_type: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise Unfit("is not a UUID")


def _to_json(value: Any, pg_type: str) -> str:
    if not isinstance(value, str):
        raise Unfit("is not JSON text")
    try:
        json.loads(value)
    except ValueError:
        raise Unfit("is not valid JSON") from None
    if "\\u0000" in value or "\0" in value:
        raise Unfit("contains a NUL character, which PostgreSQL cannot hold")
    return value


def _to_date(value: Any, pg_type: str) -> datetime.date:
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise Unfit("is not an ISO 8601 date (YYYY-MM-DD)")


def _parse_ts(value: Any) -> datetime.datetime:
    if isinstance(value, str):
        try:
            return datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise Unfit("is not an ISO 8601 timestamp (YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM])")


def _to_ts(value: Any, pg_type: str) -> datetime.datetime:
    ts = _parse_ts(value)
    if ts.tzinfo is not None:
        raise Unfit("has a UTC offset, which a timestamp without time zone column would drop; "
                    "use timestamptz or send local time")
    return ts


def _to_tstz(value: Any, pg_type: str) -> datetime.datetime:
    ts = _parse_ts(value)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=datetime.timezone.utc)


_TO_PG: Dict[str, Callable[[Any, str], Any]] = {
    "int": _to_int, "float": _to_float, "numeric": _to_numeric, "bool": _to_bool,
    "text": _to_text, "bytea": _to_bytea, "uuid": _to_uuid, "json": _to_json,
    "date": _to_date, "ts": _to_ts, "tstz": _to_tstz}


def column_converter(cat: str, pg_type: str, table: str, column: str
                     ) -> Callable[[Any], Any]:
    """to_pg() for one column, with the common exact cases decided first."""
    slow = _TO_PG[cat]
    fast: type = type(None)
    if cat == "int":
        limit = _INT_RANGE.get(pg_type)
        if limit is not None:
            def convert_int(value: Any) -> Any:
                if value is None or (type(value) is int and -limit <= value < limit):
                    return value
                return to_pg(value, cat, pg_type, table, column)
            return convert_int
    elif cat == "text":
        fast = str
    elif cat == "float" and pg_type == "double precision":
        fast = float
    elif cat == "bytea":
        fast = bytes

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is fast and not (isinstance(value, str) and "\0" in value):
            return value
        try:
            return slow(value, pg_type)
        except Unfit as exc:
            raise Unfit(f'value {_describe(value)} for column "{column}" ({pg_type}) of table '
                        f'"{table}" {exc}') from None
    return convert


def to_pg(value: Any, cat: str, pg_type: str, table: str, column: str) -> Any:
    """The PostgreSQL value for a client value, or Unfit with a full message."""
    if value is None:
        return None
    try:
        return _TO_PG[cat](value, pg_type)
    except Unfit as exc:
        raise Unfit(f'value {_describe(value)} for column "{column}" ({pg_type}) of table '
                    f'"{table}" {exc}') from None


def _numeric_to_sqlite(d: decimal.Decimal) -> Any:
    if not d.is_finite():
        return float(d) if not d.is_nan() else str(d)
    if d == d.to_integral_value() and -2 ** 63 <= d < 2 ** 63:
        return int(d)
    f = float(d)
    if decimal.Decimal(repr(f)) == d:
        return f
    return str(d)


def _ts_to_sqlite(ts: datetime.datetime) -> str:
    return ts.isoformat(sep=" ")


_TO_SQLITE: Dict[str, Callable[[Any], Any]] = {
    "numeric": _numeric_to_sqlite, "bool": int, "uuid": str,
    "date": lambda d: d.isoformat(), "ts": _ts_to_sqlite, "tstz": _ts_to_sqlite}


def converter(cat: str) -> Optional[Callable[[Any], Any]]:
    """PostgreSQL value -> SQLite value, or None when the value passes as is."""
    return _TO_SQLITE.get(cat)


def select_expr(cat: str, expr: str) -> str:
    """How a column is selected for download (json as its text)."""
    return f"{expr}::text" if cat == "json" else expr


def require_supported(table: str, column: str, pg_type: str) -> str:
    cat = category(pg_type)
    if not cat:
        raise SyncError(f'sqlite-ct sync: column "{column}" of table "{table}" has type '
                        f"{pg_type}, which the PostgreSQL hub cannot sync exactly; supported: "
                        f"{SUPPORTED}")
    return cat


def row_to_sqlite(row: Tuple[Any, ...], convs: Tuple[Optional[Callable[[Any], Any]], ...]
                  ) -> tuple:
    return tuple(v if v is None or c is None else c(v) for v, c in zip(row, convs))
