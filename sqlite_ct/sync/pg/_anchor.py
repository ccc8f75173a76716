"""The received anchors the PostgreSQL hub hands out (opaque to clients).

WHY A SNAPSHOT. PostgreSQL transaction ids are handed out when a transaction
first writes, not when it commits, so "every change with an id above N" is
not a safe anchor: a transaction that started first (lower id) and commits
after a client read a later one would be skipped forever. A snapshot
(pg_current_snapshot(): xmin, xmax and the ids in progress) says exactly
which transactions were visible when the changes were read. The anchor is the
snapshot the download read in: the client has every change whose id is
visible in it. The next download sends the changes not visible in it and
visible now. A transaction in progress at the first read is invisible then,
and visible at a later read: it is sent then, whatever its id. Every id below
the snapshot's xmin had finished, so nothing can appear below xmin later;
between xmin and xmax, the in-progress list keeps the anchor exact, so a
change is neither skipped nor sent twice (re-sending would be harmless:
downloads apply as idempotent upserts and deletes).

A table's anchor holds the snapshot up to which the client has everything
(`complete`, None before the first download) and, while a batched download is
under way, its window: the session's upper snapshot, the phase, and the
position (change xid, key) of the last change sent, so the next batch
continues after it. The rows of a window are those visible in `upper` and not
in `complete`; a row changed again after `upper` leaves the window and comes
with the next one.

  phase 0  tombstones, by (change_xid, key)      (not on a first download)
  phase 1  live rows, by (change_xid, key)
  phase 2  snapshot tables: every row, by key

An anchor whose snapshot is ahead of the hub's current one (the hub was
restored from a backup older than the client's last sync, so the ids it hands
out next would look already received) is refused.

FORMAT (big-endian):
  "sqpg" u8 version=1, 16-byte server id, 8-byte filter fingerprint,
  text complete (u16 length, 0xFFFF: none), u8 has_window;
  window: text upper, u8 flags (1 move_all, 2 snapshot), u8 phase,
          u64 cursor_xid, u8 key columns (0: no cursor key), then per key
          column a text (its value as PostgreSQL prints it).
A session token is "sqps" text upper.
"""
from __future__ import annotations

import dataclasses
import re
import struct
from typing import List, Optional, Tuple

from ..errors import ReinitialiseRequired, SyncError

MAGIC, SESSION_MAGIC, VERSION = b"sqpg", b"sqps", 1
PHASE_DELETES, PHASE_ROWS, PHASE_SNAPSHOT = 0, 1, 2
_HEAD = struct.Struct(">4sB16s8s")
_NONE = 0xFFFF
_SNAPSHOT = re.compile(r"\d+:\d+:(\d+(,\d+)*)?")


def snapshot_xmin(snap: str) -> int:
    return int(snap.split(":", 1)[0])


def snapshot_xmax(snap: str) -> int:
    return int(snap.split(":", 2)[1])


def check_not_ahead(anchor: Optional["PgAnchor"], session: Optional[str], now: str,
                    table: str) -> None:
    """Refuse an anchor that saw transactions the hub has not started yet: the
    hub was restored from a backup taken before the client's last sync, and
    the ids it hands out next would look already received."""
    snaps = [session]
    if anchor is not None:
        snaps.append(anchor.complete)
        if anchor.window is not None:
            snaps.append(anchor.window.upper)
    if any(s is not None and snapshot_xmax(s) > snapshot_xmax(now) for s in snaps):
        raise ReinitialiseRequired(
            table,
            f'sqlite-ct sync: the received anchor of table "{table}" is ahead of the hub '
            f"(the hub was restored from an older backup, or its database was replaced); "
            f"reinitialise the table on the client "
            f"(SyncAgent.reinitialise() or `sqlite-ct reinitialise`; it keeps unsent "
            f"local changes)")


@dataclasses.dataclass(frozen=True)
class Window:
    upper: str
    move_all: bool
    snapshot: bool
    phase: int
    cursor_xid: int
    cursor_key: Optional[Tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class PgAnchor:
    server: bytes
    fingerprint: bytes
    complete: Optional[str]
    window: Optional[Window] = None

    def encode(self) -> bytes:
        out = bytearray(_HEAD.pack(MAGIC, VERSION, self.server, self.fingerprint))
        _put_text(out, self.complete)
        w = self.window
        out.append(w is not None)
        if w is not None:
            _put_text(out, w.upper)
            out.append((1 if w.move_all else 0) | (2 if w.snapshot else 0))
            out.append(w.phase)
            out += struct.pack(">Q", w.cursor_xid)
            key = w.cursor_key or ()
            out.append(len(key))
            for v in key:
                _put_text(out, v)
        return bytes(out)

    @classmethod
    def decode(cls, blob: bytes, table: str) -> "PgAnchor":
        try:
            magic, version, server, fp = _HEAD.unpack_from(blob)
            if magic != MAGIC or version != VERSION:
                raise ValueError
            pos = _HEAD.size
            complete, pos = _get_text(blob, pos)
            _check(complete)
            window = None
            if blob[pos]:
                upper, pos = _get_text(blob, pos + 1)
                _check(upper)
                if upper is None:
                    raise ValueError
                flags, phase = blob[pos], blob[pos + 1]
                (xid,) = struct.unpack_from(">Q", blob, pos + 2)
                n = blob[pos + 10]
                pos += 11
                key: List[str] = []
                for _ in range(n):
                    v, pos = _get_text(blob, pos)
                    if v is None:
                        raise ValueError
                    key.append(v)
                if phase > PHASE_SNAPSHOT:
                    raise ValueError
                window = Window(upper, bool(flags & 1), bool(flags & 2), phase, xid,
                                tuple(key) if n else None)
            else:
                pos += 1
            if pos != len(blob):
                raise ValueError
        except (struct.error, ValueError, IndexError, UnicodeDecodeError):
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" was not '
                       f"issued by a sqlite-ct PostgreSQL hub; reinitialise the table") from None
        return cls(server, fp, complete, window)


def _check(snap: Optional[str]) -> None:
    if snap is not None and not _SNAPSHOT.fullmatch(snap):
        raise ValueError


def _put_text(out: bytearray, text: Optional[str]) -> None:
    if text is None:
        out += struct.pack(">H", _NONE)
        return
    data = text.encode()
    if len(data) >= _NONE:
        raise SyncError("sqlite-ct sync: a value in a PostgreSQL hub anchor is too long "
                        "(a snapshot with too many transactions in progress, or a key over "
                        "64 KB)")
    out += struct.pack(">H", len(data)) + data


def _get_text(blob: bytes, pos: int) -> Tuple[Optional[str], int]:
    (n,) = struct.unpack_from(">H", blob, pos)
    pos += 2
    if n == _NONE:
        return None, pos
    if pos + n > len(blob):
        raise ValueError
    return bytes(blob[pos:pos + n]).decode(), pos + n


def encode_session(upper: str) -> bytes:
    return SESSION_MAGIC + upper.encode()


def decode_session(blob: Optional[bytes]) -> Optional[str]:
    if not blob:
        return None
    text = bytes(blob[4:]).decode(errors="replace")
    if bytes(blob[:4]) != SESSION_MAGIC or not _SNAPSHOT.fullmatch(text):
        raise SyncError("sqlite-ct sync: malformed download session token")
    return text
