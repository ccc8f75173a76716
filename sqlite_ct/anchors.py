"""Sync anchors and the client identity (__sysSyncArticles, __sysSyncSubscriptions).

As SqlCeClientSyncProvider stored them: per table a sent anchor (the CSN up to
which local changes were uploaded, 8 bytes little-endian int64) and a received
anchor (opaque bytes the server handed out), and one client id per database.
"""
from __future__ import annotations

import struct
import uuid
from typing import Any, Optional

from . import _conn
from .errors import AnchorError
from .tracking import require_tracked

__all__ = ["get_sent_anchor", "set_sent_anchor", "get_received_anchor",
           "set_received_anchor", "client_id"]

_INT64 = struct.Struct("<q")


def client_id(conn: Any) -> uuid.UUID:
    """This database's client id (a GUID), created on first use; stored in
    __sysSyncSubscriptions.ClientId in .NET byte order."""
    with _conn.writing(conn, "sqlite_ct_client_id"):
        _conn.value(conn, "SELECT sqlite_ct_create_system_tables()")
        blob = _conn.value(conn, "SELECT ClientId FROM main.__sysSyncSubscriptions "
                                 "ORDER BY rowid LIMIT 1")
        if blob is None:
            new = uuid.uuid4()
            _conn.execute(conn, "INSERT INTO main.__sysSyncSubscriptions(ClientId) VALUES (?)",
                          (new.bytes_le,))
            return new
        return uuid.UUID(bytes_le=bytes(blob))


def _store(conn: Any, table: str, column: str, blob: Optional[bytes], func: str) -> None:
    with _conn.writing(conn, "sqlite_ct_anchor"):
        name = require_tracked(conn, table, func, writing=True)
        cid = client_id(conn).bytes_le
        _conn.execute(
            conn,
            f"INSERT INTO main.__sysSyncArticles(TableName, {column}, ClientId) VALUES (?, ?, ?) "
            f"ON CONFLICT(TableName) DO UPDATE SET {column} = excluded.{column}",
            (name, blob, cid))


def _load(conn: Any, table: str, column: str, func: str) -> Optional[bytes]:
    name = require_tracked(conn, table, func)
    blob = _conn.value(conn, f"SELECT {column} FROM main.__sysSyncArticles WHERE TableName = ?",
                       (name,))
    return None if blob is None else bytes(blob)


def get_sent_anchor(conn: Any, table: str) -> Optional[int]:
    """The CSN up to which `table`'s local changes were sent, or None if never."""
    blob = _load(conn, table, "SentAnchor", "get_sent_anchor")
    if blob is None:
        return None
    if len(blob) != _INT64.size:
        raise AnchorError(f'sqlite-ct: the sent anchor of table "{table}" is '
                          f"{len(blob)} bytes, not 8; reset it with set_sent_anchor()")
    return int(_INT64.unpack(blob)[0])


def set_sent_anchor(conn: Any, table: str, anchor: Optional[int]) -> None:
    """Record that `table`'s local changes up to CSN `anchor` were sent."""
    if anchor is not None and (isinstance(anchor, bool) or not isinstance(anchor, int)
                               or anchor < 0):
        raise AnchorError(f"sqlite-ct: a sent anchor is a non-negative integer CSN, "
                          f"got {anchor!r}")
    blob = None if anchor is None else _INT64.pack(anchor)
    _store(conn, table, "SentAnchor", blob, "set_sent_anchor")


def get_received_anchor(conn: Any, table: str) -> Optional[bytes]:
    """The opaque anchor the server gave with the last download, or None."""
    return _load(conn, table, "ReceivedAnchor", "get_received_anchor")


def set_received_anchor(conn: Any, table: str, anchor: Optional[bytes]) -> None:
    """Store the server's anchor for `table` (bytes, kept verbatim)."""
    if anchor is not None and not isinstance(anchor, (bytes, bytearray, memoryview)):
        raise AnchorError(f"sqlite-ct: a received anchor is bytes, got {type(anchor).__name__}")
    _store(conn, table, "ReceivedAnchor", None if anchor is None else bytes(anchor),
           "set_received_anchor")
