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

INTEGRITY. Clients store anchors and send them back; a client bug, a damaged
file or a forger can change them. Every anchor ends with a MAC (HMAC-SHA256,
16 bytes) over the table name and the anchor, keyed by a 32-byte secret that
only the hub database holds (__sysSyncHub), so an anchor the hub did not
issue for that table is refused before anything in it is used. A valid MAC
still says nothing about a hub restored from an older backup, which issued
the anchor in a timeline it has since lost; that is what the generation is
for (HubGuard.check): the anchor carries the commit time the hub logged for
each CSN it names (complete and, in a window, upper). A CSN above the hub's
newest one, or one whose log row holds another time, means the hub is not
the one that issued the anchor: the client must reinitialise.

FORMAT (big-endian):
  "sqct" u8 version=2, 16-byte server id, 8-byte filter fingerprint,
  i64 complete, i64 complete_time, u8 has_window;
  window: i64 upper, i64 upper_time, i64 row_since, u8 flags (1 move_all,
          2 snapshot), u8 phase, i64 cursor_bsn, u8 has_key, u32 key length,
          the cursor key (sqlite_ct_pack_key format);
  16-byte MAC.
A session token is "sqcs" i64 upper, i64 upper_time, 16-byte MAC.
A commit time is the __sysTxCommitSequence.__sysCommitTime of the CSN, 0 for
CSN 0, -1 when the log row was purged.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import struct
from typing import Any, Optional

from . import _sql
from ..tracking import commit_time, newest_csn_committed_by
from .errors import ReinitialiseRequired, SyncError

_HEAD = struct.Struct(">4sB16s8sqqB")
_WINDOW = struct.Struct(">qqqBBqBI")
_SESSION = struct.Struct(">4sqq")
_MAC_SIZE = 16
MAGIC, SESSION_MAGIC, VERSION = b"sqct", b"sqcs", 2

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


def _mac(secret: bytes, label: str, body: bytes) -> bytes:
    msg = label.lower().encode("utf-8") + b"\0" + body
    return hmac.new(secret, msg, hashlib.sha256).digest()[:_MAC_SIZE]


class HubGuard:
    """Encodes, authenticates and bounds-checks the anchors and session tokens
    of one hub database (see the module comment)."""

    def __init__(self, conn: Any, server: bytes, secret: bytes) -> None:
        self.conn = conn
        self.server = server
        self.secret = secret

    # -- generation --------------------------------------------------------
    def commit_time(self, csn: int) -> int:
        if csn == 0:
            return 0
        t = commit_time(self.conn, csn)
        return -1 if t is None else t

    def _last_csn(self) -> int:
        return int(_sql.value(self.conn, "SELECT sqlite_ct_last_committed_csn()"))

    def _same_timeline(self, csn: int, issued_time: int, last: int) -> bool:
        if csn > last:
            return False
        now = self.commit_time(csn)
        # A purged log row cannot be compared; the tombstone purge bound
        # (min_valid) still refuses anchors that are too old to serve.
        return now == issued_time or now == -1 or issued_time == -1

    def _fork_point(self, csn: int, issued_time: int) -> int:
        """The newest CSN that the timeline which issued an anchor (CSN `csn`
        committed at `issued_time`) shares with this hub: a restored hub's log
        holds the backup's transactions, all committed before the anchor was
        issued, and then its own, committed after the restore. (Assumes the
        hub's clock did not go back across the restore.)"""
        if issued_time < 0:
            return 0
        return min(csn, newest_csn_committed_by(self.conn, issued_time))

    # -- anchors -------------------------------------------------------------
    def encode(self, anchor: HubAnchor, table: str) -> bytes:
        out = _HEAD.pack(MAGIC, VERSION, anchor.server, anchor.fingerprint, anchor.complete,
                         self.commit_time(anchor.complete), anchor.window is not None)
        w = anchor.window
        if w is not None:
            flags = (1 if w.move_all else 0) | (2 if w.snapshot else 0)
            key = w.cursor_key or b""
            out += _WINDOW.pack(w.upper, self.commit_time(w.upper), w.row_since, flags,
                                w.phase, w.cursor_bsn, w.cursor_key is not None,
                                len(key)) + key
        return out + _mac(self.secret, table, out)

    def decode(self, blob: bytes, table: str, *, common_history: bool = False) -> HubAnchor:
        """The anchor `blob` of `table`, once its MAC, its structure, its
        bounds and its generation check out. With `common_history`, an anchor
        of a lost timeline is not refused but cut back to the history the
        client and the restored hub share (see _fork_point): what an upload's
        conflict detection needs to know what the client has seen."""
        blob = bytes(blob)
        body, mac = blob[:-_MAC_SIZE], blob[-_MAC_SIZE:]
        try:
            magic, version, server, fp, complete, complete_time, has_window = \
                _HEAD.unpack_from(body)
        except struct.error:
            magic = version = server = None
        if magic != MAGIC or version != VERSION or len(blob) < _HEAD.size + _MAC_SIZE:
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" was not '
                       f"issued by a sqlite-ct hub (or by an older version); reinitialise "
                       f"the table")
        if server != self.server:
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" was issued '
                       f"by another server; reinitialise the table")
        if not hmac.compare_digest(mac, _mac(self.secret, table, body)):
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" is corrupt or '
                       f"forged (its MAC does not match this hub's); reinitialise the table")
        window = None
        malformed = False
        if has_window:
            try:
                (upper, upper_time, row_since, flags, phase, bsn, has_key,
                 klen) = _WINDOW.unpack_from(body, _HEAD.size)
            except struct.error:
                malformed = True
            else:
                key = body[_HEAD.size + _WINDOW.size:]
                malformed = (len(key) != klen or (not has_key and klen)
                             or flags & ~3 or phase > PHASE_SNAPSHOT
                             or bool(flags & 2) != (phase == PHASE_SNAPSHOT)
                             or not 0 <= complete <= upper or row_since not in (0, complete)
                             or not 0 <= bsn <= upper)
                window = Window(upper, row_since, bool(flags & 1), bool(flags & 2), phase,
                                bsn, key if has_key else None)
        else:
            malformed = len(body) != _HEAD.size or complete < 0
        if malformed:
            # Only a hub that lost its secret, or a bug, gets here.
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" is malformed; '
                       f"reinitialise the table")
        last = self._last_csn()
        current = self._same_timeline(complete, complete_time, last)
        if window is not None:
            current = current and self._same_timeline(window.upper, upper_time, last)
        if not current and common_history:
            return HubAnchor(server, fp, self._fork_point(complete, complete_time), None)
        if not current:
            raise ReinitialiseRequired(
                table, f'sqlite-ct sync: the received anchor of table "{table}" names hub '
                       f"transaction {max(complete, window.upper if window else 0)}, which "
                       f"this hub does not have (its newest is {last}): the hub was restored "
                       f"from an older backup or replaced; reinitialise the table "
                       f"(SyncAgent.reinitialise)")
        return HubAnchor(server, fp, complete, window)

    # -- sessions ------------------------------------------------------------
    def encode_session(self, upper: int) -> bytes:
        body = _SESSION.pack(SESSION_MAGIC, upper, self.commit_time(upper))
        return body + _mac(self.secret, "", body)

    def decode_session(self, blob: Optional[bytes]) -> Optional[int]:
        if not blob:
            return None
        blob = bytes(blob)
        body, mac = blob[:-_MAC_SIZE], blob[-_MAC_SIZE:]
        if len(body) != _SESSION.size or not hmac.compare_digest(mac, _mac(self.secret, "",
                                                                           body)):
            raise SyncError("sqlite-ct sync: malformed download session token; start the "
                            "download again (session=None)")
        _, upper, upper_time = _SESSION.unpack(body)
        if not self._same_timeline(upper, upper_time, self._last_csn()):
            raise SyncError("sqlite-ct sync: the download session token names a hub "
                            "transaction this hub does not have (restored from a backup?); "
                            "start the download again (session=None)")
        return upper


_HUB_TABLE = "__sysSyncHub"


def hub_secret(conn: Any) -> bytes:
    """The hub database's anchor secret, created on first use (in a write
    transaction taken up front, so a busy timeout is honoured)."""
    secret = _read_secret(conn)
    if secret is None:
        with _sql.transaction(conn, "sqlite_ct_sync_hub"):
            _sql.execute(conn, f"CREATE TABLE IF NOT EXISTS main.{_HUB_TABLE}("
                               f"Secret BLOB NOT NULL)")
            secret = _read_secret(conn)
            if secret is None:
                secret = os.urandom(32)
                _sql.execute(conn, f"INSERT INTO main.{_HUB_TABLE}(Secret) VALUES (?)",
                             (secret,))
    return secret


def _read_secret(conn: Any) -> Optional[bytes]:
    if _sql.table_exists(conn, _HUB_TABLE) is None:
        return None
    blob = _sql.value(conn, f"SELECT Secret FROM main.{_HUB_TABLE} ORDER BY rowid LIMIT 1")
    return None if blob is None else bytes(blob)

