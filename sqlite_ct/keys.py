"""Packed row keys (__sysRK), SQL CE's PackTombstoneKey / UnpackTombstoneKey.

The codec lives in the extension (csrc/keycodec.c, which documents the FORMAT);
these wrappers add the table's key shape so the number of values is checked.
"""
from __future__ import annotations

from typing import Any, List, Sequence, Tuple, Union

from . import _conn
from .errors import KeyFormatError
from .tracking import require_tracked

__all__ = ["pack_key", "unpack_key", "key_columns", "user_columns"]

SYSTEM_PREFIX = "__sys"


def key_columns(conn: Any, table: str) -> List[str]:
    """The table's PRIMARY KEY columns in key order."""
    cols = [(pk, name) for name, pk in _conn.rows(
        conn, "SELECT name, pk FROM pragma_table_xinfo(?, 'main') WHERE pk > 0", (table,))]
    return [name for _, name in sorted(cols)]


def user_columns(conn: Any, table: str) -> List[str]:
    """The table's columns without sqlite-ct's __sys* columns, in table order."""
    return [name for (name,) in _conn.rows(
        conn, "SELECT name FROM pragma_table_xinfo(?, 'main') ORDER BY cid", (table,))
        if not name.lower().startswith(SYSTEM_PREFIX.lower())]


def key_values(conn: Any, name: str, values: Sequence[Any]
               ) -> Tuple[List[str], Tuple[Any, ...]]:
    """Table `name`'s key columns and `values` (in PRIMARY KEY order) as a
    tuple of the same length; KeyFormatError when the lengths differ."""
    keys = key_columns(conn, name)
    values = tuple(values)
    if len(values) != len(keys):
        raise KeyFormatError(
            f'sqlite-ct: table "{name}" has {len(keys)} key column(s) '
            f'({", ".join(keys)}); got {len(values)} value(s)')
    return keys, values


def pack_key(conn: Any, table: str, values: Sequence[Any]) -> bytes:
    """Pack the key `values` (in PRIMARY KEY order) of a row of tracked `table`
    into the __sysRK format; runs sqlite_ct_pack_key()."""
    name = require_tracked(conn, table, "pack_key")
    _, values = key_values(conn, name, values)
    marks = ", ".join("?" for _ in values)
    return bytes(_conn.value(conn, f"SELECT sqlite_ct_pack_key({marks})", values))


def unpack_key(conn: Any, table: str, packed: Union[bytes, str]) -> Tuple[Any, ...]:
    """The key values of a __sysRK of tracked `table`, in PRIMARY KEY order;
    runs sqlite_ct_key_count() and sqlite_ct_unpack_key(). `packed` is the
    binary form (bytes) or, for tables tracked in portable mode, the text form
    (str) that pure-SQL triggers write (see csrc/keycodec.c). KeyFormatError
    when it is malformed or holds a different number of values."""
    name = require_tracked(conn, table, "unpack_key")
    if isinstance(packed, (bytearray, memoryview)):
        packed = bytes(packed)
    if not isinstance(packed, (bytes, str)):
        raise KeyFormatError("sqlite-ct: malformed tombstone key: not bytes or str")
    count = _conn.value(conn, "SELECT sqlite_ct_key_count(?)", (packed,))
    keys = key_columns(conn, name)
    if count != len(keys):
        raise KeyFormatError(
            f'sqlite-ct: malformed tombstone key: it holds {count} value(s) but '
            f'table "{name}" has {len(keys)} key column(s)')
    cols = ", ".join(f"sqlite_ct_unpack_key(?1, {i})" for i in range(count))
    for row in _conn.rows(conn, f"SELECT {cols}", (packed,)):
        return tuple(row)
    raise AssertionError("unreachable: SELECT without FROM returns one row")
