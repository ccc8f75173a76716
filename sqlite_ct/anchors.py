"""Sync anchors and the client identity (__sysSyncArticles, __sysSyncSubscriptions).

As SqlCeClientSyncProvider stored them: per table a sent anchor (the CSN up to
which local changes were uploaded, 8 bytes little-endian int64) and a received
anchor (opaque bytes the server handed out), and one client id per database.
"""
from __future__ import annotations

import struct
import uuid
from typing import Any, Callable, Dict, Mapping, Optional

from . import _conn
from .errors import AnchorError
from .tracking import require_tracked

__all__ = ["get_sent_anchor", "set_sent_anchor", "get_received_anchor",
           "set_received_anchor", "client_id", "set_client_id", "set_sent_anchors",
           "set_received_anchors"]

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


def set_client_id(conn: Any, new_id: uuid.UUID) -> None:
    """Give this database the client id `new_id`, everywhere it is stored
    (__sysSyncSubscriptions and every table's __sysSyncArticles row): for a
    database that is a copy of another client's, or restored from a backup."""
    if not isinstance(new_id, uuid.UUID):
        raise TypeError(f"set_client_id(): the client id must be a uuid.UUID, "
                        f"got {type(new_id).__name__}")
    with _conn.writing(conn, "sqlite_ct_client_id"):
        old = client_id(conn)
        _conn.execute(conn, "UPDATE main.__sysSyncSubscriptions SET ClientId = ? "
                            "WHERE ClientId = ?", (new_id.bytes_le, old.bytes_le))
        _conn.execute(conn, "UPDATE main.__sysSyncArticles SET ClientId = ?",
                      (new_id.bytes_le,))


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


def _store_many(conn: Any, column: str, blobs: Mapping[str, Optional[bytes]],
                setter: Callable[[str, Optional[bytes]], None]) -> None:
    # One statement per table whose article exists; the full path (which
    # checks that the table is tracked and creates the article) otherwise.
    with _conn.writing(conn, "sqlite_ct_anchor"):
        if not _conn.value(conn, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' "
                                 "AND name = '__sysSyncArticles'"):
            for table, blob in blobs.items():
                setter(table, blob)
            return
        for table, blob in blobs.items():
            _conn.execute(conn, f"UPDATE main.__sysSyncArticles SET {column} = ? "
                                f"WHERE TableName = ? COLLATE NOCASE", (blob, table))
            if not _conn.value(conn, "SELECT changes()"):
                setter(table, blob)


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
    if anchor is not None and anchor >= 2**63:
        raise AnchorError(f"sqlite-ct: a sent anchor is a CSN below 2**63, got {anchor!r}")
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


def set_sent_anchors(conn: Any, anchors: Mapping[str, int]) -> None:
    """set_sent_anchor() for several tables (table -> CSN) in one savepoint;
    a table that already has anchors costs one UPDATE, so a sync can store
    them with every batch."""
    blobs: Dict[str, Optional[bytes]] = {}
    for table, anchor in anchors.items():
        if isinstance(anchor, bool) or not isinstance(anchor, int) or anchor < 0:
            raise AnchorError(f"sqlite-ct: a sent anchor is a non-negative integer CSN, "
                              f"got {anchor!r}")
        if anchor >= 2**63:
            raise AnchorError(f"sqlite-ct: a sent anchor is a CSN below 2**63, got {anchor!r}")
        blobs[table] = _INT64.pack(anchor)
    _store_many(conn, "SentAnchor", blobs,
                lambda t, b: _store(conn, t, "SentAnchor", b, "set_sent_anchors"))


def set_received_anchors(conn: Any, anchors: Mapping[str, bytes]) -> None:
    """set_received_anchor() for several tables (table -> bytes) in one
    savepoint; a table that already has anchors costs one UPDATE."""
    blobs: Dict[str, Optional[bytes]] = {}
    for table, anchor in anchors.items():
        if not isinstance(anchor, (bytes, bytearray, memoryview)):
            raise AnchorError(f"sqlite-ct: a received anchor is bytes, "
                              f"got {type(anchor).__name__}")
        blobs[table] = bytes(anchor)
    _store_many(conn, "ReceivedAnchor", blobs,
                lambda t, b: _store(conn, t, "ReceivedAnchor", b, "set_received_anchors"))
