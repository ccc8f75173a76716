"""The received anchors ServerSyncProvider hands out (opaque to clients).

A table's anchor says up to which hub CSN the client has everything
(`complete`), and, while a batched download of the next window is under way,
where in that window it stopped. The window is (complete, upper] and is read in
phases, each in a fixed order, so the last row sent (the cursor) says exactly
what the client has, whatever changes on the hub in between:

  phase 0  tombstones, by (__sysDeleteTxBsn, __sysRK)
  phase 1  rows that predate tracking (NULL stamps), by rowid or key
  phase 2  stamped rows, by (__sysChangeTxBsn, rowid or key)
  phase 3  snapshot tables: every row, by rowid or key

A row that changes after it was read gets a stamp above `upper` and comes
again in the next window.

FORMAT (big-endian):
  "sqct" u8 version=1, 16-byte server id, 8-byte filter fingerprint,
  i64 complete, u8 has_window;
  window: i64 upper, i64 row_since, u8 flags (1 move_all, 2 snapshot), u8 phase,
          i64 cursor_bsn, u8 has_key, then the cursor key (sqlite_ct_pack_key
          format) to the end.
A session token is "sqcs" i64 upper.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Optional

from .errors import SyncError

_HEAD = struct.Struct(">4sB16s8sqB")
_WINDOW = struct.Struct(">qqBBqB")
_SESSION = struct.Struct(">4sq")
MAGIC, SESSION_MAGIC, VERSION = b"sqct", b"sqcs", 1

PHASE_DELETES, PHASE_UNSTAMPED, PHASE_STAMPED, PHASE_SNAPSHOT = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Window:
    upper: int
    row_since: int        # rows changed after this are sent (0 when rescoping)
    move_all: bool        # every changed row outside the filter is a delete
    snapshot: bool
    phase: int
    cursor_bsn: int
    cursor_key: Optional[bytes]


@dataclasses.dataclass(frozen=True)
class HubAnchor:
    server: bytes
    fingerprint: bytes
    complete: int
    window: Optional[Window] = None

    def encode(self) -> bytes:
        out = _HEAD.pack(MAGIC, VERSION, self.server, self.fingerprint, self.complete,
                         self.window is not None)
        w = self.window
        if w is not None:
            flags = (1 if w.move_all else 0) | (2 if w.snapshot else 0)
            out += _WINDOW.pack(w.upper, w.row_since, flags, w.phase, w.cursor_bsn,
                                w.cursor_key is not None) + (w.cursor_key or b"")
        return out

    @classmethod
    def decode(cls, blob: bytes, table: str) -> "HubAnchor":
        try:
            magic, version, server, fp, complete, has_window = _HEAD.unpack_from(blob)
            if magic != MAGIC or version != VERSION:
                raise ValueError
            window = None
            if has_window:
                upper, row_since, flags, phase, bsn, has_key = _WINDOW.unpack_from(
                    blob, _HEAD.size)
                key = bytes(blob[_HEAD.size + _WINDOW.size:]) if has_key else None
                window = Window(upper, row_since, bool(flags & 1), bool(flags & 2), phase,
                                bsn, key)
        except (struct.error, ValueError):
            raise SyncError(f'sqlite-ct sync: the received anchor of table "{table}" was not '
                            f"issued by a sqlite-ct hub; reinitialise the table") from None
        return cls(server, fp, complete, window)


def encode_session(upper: int) -> bytes:
    return _SESSION.pack(SESSION_MAGIC, upper)


def decode_session(blob: Optional[bytes]) -> Optional[int]:
    if not blob:
        return None
    try:
        magic, upper = _SESSION.unpack(blob)
    except struct.error:
        magic = None
    if magic != SESSION_MAGIC:
        raise SyncError("sqlite-ct sync: malformed download session token")
    return upper
