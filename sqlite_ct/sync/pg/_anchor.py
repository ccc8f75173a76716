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

INTEGRITY. Clients store anchors and send them back; a client bug, a damaged
file or a forger can change them. Every anchor ends with a MAC (HMAC-SHA256,
16 bytes) over the table name and the anchor, keyed by a 32-byte secret that
only the hub database holds (sqlite_ct.hub_info), so an anchor the hub did not
issue for that table is refused before anything in it is used; then every
field is bounds-checked (snapshots well formed, the window inside its
snapshots, the cursor inside the window).

GENERATION. A valid MAC says nothing about a hub restored from an older
backup (the secret is restored with it), which issued the anchor in a timeline
it has since lost. Every anchor carries the hub's lineage (a uuid in
sqlite_ct.hub_info), and the hub records with it where it lives: the cluster's
system identifier, the database's oid and the oid of sqlite_ct.hub_info. A
pg_dump restored into another database or cluster, or a hub schema dropped
and restored, no longer lives where its row says: before it serves anything,
the hub takes a new lineage (HubKey, _schema.bind_hub), and every anchor of
the old one is refused, whatever the transaction ids do.

MARKS. A physical restore (a base backup or point-in-time recovery of the
whole cluster, or a standby promoted while it lagged) keeps all three, and
once the restored hub's transaction ids pass a client's anchor, ids it hands
out again would count as received. So an anchor that names a snapshot also
names a mark: a row of sqlite_ct.anchor_marks (an id and a random token)
committed after that snapshot was taken (_marks.py). A hub that holds the
mark was restored, if at all, to a point after the snapshot: it has every
transaction the snapshot saw and its ids are past the snapshot's. A hub that
lacks it (restored to an earlier point) refuses the anchor. A newer mark
serves an anchor as well as its own (see _marks.py for which marks anchors
take). Version-2 anchors (hubs before marks) have no mark: adopt_legacy().

FORMAT (big-endian):
  "sqpg" u8 version=3, 16-byte server id, 16-byte lineage, 8-byte filter
  fingerprint, u64 mark id, 8-byte mark token (id 0: no mark, exactly when
  the anchor names no snapshot), text complete (u16 length, 0xFFFF: none), u8 has_window;
  window: text upper, u8 flags (1 move_all, 2 snapshot), u8 phase,
          u64 cursor_xid, u8 key columns (0: no cursor key), then per key
          column a text (its value as PostgreSQL prints it);
  16-byte MAC.
Version 2 is the same without the mark fields (decoded, never issued).
A session token is "sqps" 16-byte lineage, u64 mark id, 8-byte mark token
(the mark of upper), text upper, 16-byte MAC (over an empty table name).
"""
from __future__ import annotations

import dataclasses
import hmac
import re
import struct
from typing import Container, Iterable, List, Optional, Tuple

from .._anchor import _mac
from ..errors import ReinitialiseRequired, SyncError

MAGIC, SESSION_MAGIC, VERSION = b"sqpg", b"sqps", 3
PHASE_DELETES, PHASE_ROWS, PHASE_SNAPSHOT = 0, 1, 2
_HEAD = struct.Struct(">4sB16s16s8sQ8s")
# Version 2 (hubs before marks): the same without the mark.
LEGACY_VERSION = 2
_HEAD_V2 = struct.Struct(">4sB16s16s8s")
_SESSION = struct.Struct(">4s16sQ8s")
_MAC_SIZE = 16
_NONE = 0xFFFF
_SNAPSHOT = re.compile(r"(\d{1,19}):(\d{1,19}):((\d{1,19})(,\d{1,19})*)?")
_XID_MAX = 2 ** 63 - 1
_RECOVER = ("reinitialise the table on the client (SyncAgent.reinitialise() or "
            "`sqlite-ct reinitialise`; it keeps unsent local changes)")


# A mark (sqlite_ct.anchor_marks): its id and token; NO_MARK in an anchor
# that names no snapshot.
Mark = Tuple[int, bytes]
NO_MARK: Mark = (0, b"\0" * 8)


@dataclasses.dataclass(frozen=True)
class HubKey:
    """What the anchors of one hub are bound to: its id, its current lineage
    and its anchor secret (sqlite_ct.hub_info)."""
    server: bytes
    lineage: bytes
    secret: bytes


def snapshot_xmin(snap: str) -> int:
    return int(snap.split(":", 1)[0])


def snapshot_xmax(snap: str) -> int:
    return int(snap.split(":", 2)[1])


def check_not_ahead(anchor: Optional["PgAnchor"], session: Optional[str], now: str,
                    table: str) -> None:
    """Refuse an anchor that saw transactions the hub has not started yet: the
    hub was restored (physically) from a backup taken before the client's last
    sync, and the ids it hands out next would look already received."""
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
            f"{_RECOVER}")


def check_key_width(anchor: Optional["PgAnchor"], width: int, table: str) -> None:
    """Refuse an anchor whose cursor key has not as many columns as the
    table's primary key (the key changed since it was issued)."""
    w = anchor.window if anchor is not None else None
    if w is not None and w.cursor_key is not None and len(w.cursor_key) != width:
        raise ReinitialiseRequired(
            table, f'sqlite-ct sync: the received anchor of table "{table}" does not match '
                   f"the table's primary key (changed since?); {_RECOVER}")


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
    mark: Mark = NO_MARK
    # A version-2 anchor (issued before this hub had marks) that names a
    # snapshot but no mark: used only through adopt_legacy().
    legacy: bool = dataclasses.field(default=False, compare=False)

    @property
    def latest(self) -> Optional[str]:
        """The newest snapshot the anchor names (the one its mark covers)."""
        return self.window.upper if self.window is not None else self.complete

    def encode(self, hub: HubKey, table: str) -> bytes:
        if (self.mark[0] == 0) != (self.latest is None):
            raise AssertionError("an anchor names a mark exactly when it names a snapshot")
        out = bytearray(_HEAD.pack(MAGIC, VERSION, self.server, hub.lineage,
                                   self.fingerprint, *self.mark))
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
        return bytes(out) + _mac(hub.secret, table, bytes(out))

    @classmethod
    def decode(cls, blob: bytes, table: str, hub: HubKey) -> "PgAnchor":
        """The anchor `blob` of `table`, once its MAC, its structure, its
        bounds and its lineage check out (ReinitialiseRequired otherwise)."""
        blob = bytes(blob)
        body, mac = blob[:-_MAC_SIZE], blob[-_MAC_SIZE:]
        version = body[4] if len(body) > 4 else None
        head = _HEAD_V2 if version == LEGACY_VERSION else _HEAD
        try:
            magic, version, server, lineage, fp, *mark = head.unpack_from(body)
        except struct.error:
            magic = version = server = lineage = fp = None
            mark = [0, NO_MARK[1]]
        if magic != MAGIC or version not in (VERSION, LEGACY_VERSION):
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" was not '
                       f"issued by a sqlite-ct PostgreSQL hub (or by an older version); "
                       f"{_RECOVER}")
        if server != hub.server:
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" was issued '
                       f"by another server; {_RECOVER}")
        if not hmac.compare_digest(mac, _mac(hub.secret, table, body)):
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" is corrupt or '
                       f"forged (its MAC does not match this hub's); {_RECOVER}")
        try:
            anchor = cls._parse(body, head.size, server, fp,
                                (mark[0], mark[1]) if mark else None)
        except (struct.error, ValueError, IndexError, UnicodeDecodeError):
            # Only a hub that lost its secret, or a bug, gets here.
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" is malformed; '
                       f"{_RECOVER}") from None
        if lineage != hub.lineage:
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" was issued '
                       f"by an earlier generation of this hub: the hub was restored from a "
                       f"backup, or its database copied or replaced, since; {_RECOVER}")
        return anchor

    @classmethod
    def _parse(cls, body: bytes, pos: int, server: bytes, fp: bytes,
               mark: Optional[Mark]) -> "PgAnchor":
        complete, pos = _get_text(body, pos)
        _check(complete)
        window = None
        if body[pos]:
            upper, pos = _get_text(body, pos + 1)
            if upper is None:
                raise ValueError
            _check(upper)
            flags, phase = body[pos], body[pos + 1]
            (xid,) = struct.unpack_from(">Q", body, pos + 2)
            n = body[pos + 10]
            pos += 11
            key: List[str] = []
            for _ in range(n):
                v, pos = _get_text(body, pos)
                if v is None:
                    raise ValueError
                key.append(v)
            snapshot = bool(flags & 2)
            if (flags & ~3 or phase > PHASE_SNAPSHOT or snapshot != (phase == PHASE_SNAPSHOT)
                    or (snapshot and flags & 1)
                    or (phase == PHASE_DELETES and complete is None)
                    or (complete is not None
                        and snapshot_xmax(complete) > snapshot_xmax(upper))
                    or xid >= snapshot_xmax(upper)
                    or (xid != 0 if snapshot else (xid == 0) != (n == 0))):
                raise ValueError
            window = Window(upper, bool(flags & 1), snapshot, phase, xid,
                            tuple(key) if n else None)
        else:
            pos += 1
        if pos != len(body):
            raise ValueError
        if mark is None:
            # Version 2: no mark; adopt_legacy() decides what it may carry.
            return cls(server, fp, complete, window, NO_MARK, legacy=complete is not None
                       or window is not None)
        anchor = cls(server, fp, complete, window, mark)
        if (mark[0] == 0) != (anchor.latest is None) or (mark[0] == 0 and mark != NO_MARK):
            raise ValueError
        return anchor


def _check(snap: Optional[str]) -> None:
    """A snapshot as pg_current_snapshot() prints it: xmin <= every id in
    progress < xmax, the ids ascending and distinct, all valid xid8s."""
    if snap is None:
        return
    m = _SNAPSHOT.fullmatch(snap)
    if m is None:
        raise ValueError
    xmin, xmax = int(m.group(1)), int(m.group(2))
    xip = [int(x) for x in m.group(3).split(",")] if m.group(3) else []
    if not 0 < xmin <= xmax <= _XID_MAX or any(
            not xmin <= x < xmax for x in xip) or any(a >= b for a, b in zip(xip, xip[1:])):
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


def encode_session(upper: str, mark: Mark, hub: HubKey) -> bytes:
    body = _SESSION.pack(SESSION_MAGIC, hub.lineage, *mark) + upper.encode()
    return body + _mac(hub.secret, "", body)


def decode_session(blob: Optional[bytes], hub: HubKey) -> Tuple[Optional[str], Mark]:
    """The upper snapshot of a download session and its mark (NO_MARK when no
    anchor of the session needed one yet); (None, NO_MARK) without a session."""
    if not blob:
        return None, NO_MARK
    blob = bytes(blob)
    body, mac = blob[:-_MAC_SIZE], blob[-_MAC_SIZE:]
    bad = SyncError("sqlite-ct sync: malformed download session token; start the "
                    "download again (session=None)")
    if len(body) < _SESSION.size or not hmac.compare_digest(mac, _mac(hub.secret, "", body)):
        raise bad
    magic, lineage, mark_id, token = _SESSION.unpack_from(body)
    try:
        text = body[_SESSION.size:].decode()
        _check(text)
    except (ValueError, UnicodeDecodeError):
        raise bad from None
    if magic != SESSION_MAGIC or (mark_id == 0 and token != NO_MARK[1]):
        raise bad
    if lineage != hub.lineage:
        raise SyncError("sqlite-ct sync: the download session token was issued by an "
                        "earlier generation of this hub (restored from a backup?); start "
                        "the download again (session=None)")
    return text, (mark_id, token)


def adopt_legacy(anchor: Optional["PgAnchor"], genesis: Optional[Tuple[Mark, int]],
                 table: str) -> Optional["PgAnchor"]:
    """A version-2 anchor (issued before the hub kept marks) with the hub's
    first mark (`genesis`: mark and the transaction that wrote it, committed
    when the hub first ran with marks) when that mark covers its snapshot,
    which holds for every anchor the hub issued before. Any other version-2
    anchor (one an older sqlite-ct issued after this hub took marks, or one
    that names a point a restored hub has not reached) is refused."""
    if anchor is None or not anchor.legacy:
        return anchor
    latest = anchor.latest
    if genesis is None or latest is None or genesis[1] < snapshot_xmax(latest):
        raise ReinitialiseRequired(
            table, f'sqlite-ct sync: the received anchor of table "{table}" was issued by an '
                   f"older version of sqlite-ct after this hub started marking its anchors "
                   f"(a service process left running on the old version?), or names a hub "
                   f"state this hub does not have (restored from a backup?); {_RECOVER}")
    return dataclasses.replace(anchor, mark=genesis[0], legacy=False)


def check_marks(anchors: Iterable[Tuple[str, Optional["PgAnchor"]]],
                found: Container[Mark]) -> None:
    """Refuse an anchor whose mark the hub does not hold (`found`: the marks
    of the request the hub holds): the hub was restored to a point before the
    anchor's snapshot was taken, and has lost transactions the client saw."""
    for table, anchor in anchors:
        if anchor is not None and anchor.mark[0] and anchor.mark not in found:
            raise ReinitialiseRequired(
                table,
                f'sqlite-ct sync: the received anchor of table "{table}" names a hub state '
                f"(anchor mark {anchor.mark[0]}) that this hub does not have: the hub was "
                f"restored from a backup taken before this client's last sync (a base "
                f"backup, point-in-time recovery, or a standby promoted while it lagged "
                f"behind), or the anchor expired; {_RECOVER}")
