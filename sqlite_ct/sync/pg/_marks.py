"""Anchor marks: how the PostgreSQL hub recognises that it was restored
physically (a base backup, point-in-time recovery, a standby promoted while
it lagged), which keeps every identifier the lineage is bound to.

A mark is a row of sqlite_ct.anchor_marks: an id, a random token, the
transaction that wrote it (made_by), the snapshot it was written in (snap)
and when (made_at). An anchor that names a snapshot S carries the id and
token of a mark committed after S was taken (under the anchor's MAC):

- A hub restored to a point after the mark's commit holds every transaction
  visible in S (they committed before S, so before the mark), and its
  transaction ids continue past S's (the mark's own id is at least S's xmax
  and is in the restored WAL): nothing the client saw is missing, and no id
  the client counts as received is handed out again. The anchor is served.
- A hub restored to an earlier point lacks the mark (or holds another row
  under its id, with another token, written after the restore): the anchor
  is refused with ReinitialiseRequired (_anchor.check_marks), whatever the
  transaction ids do.

Marks are written only when an anchor moves to a newer snapshot, after the
download's read transaction (in the one that follows it); a mark some other
call committed after the snapshot serves as well (made_by >= the snapshot's
xmax: its id was handed out after the snapshot was taken, so it committed
after it). A download that finds nothing new for a table (no side-table row
between the client's snapshot and the download's) writes nothing: the client
takes the newest mark with that mark's own snapshot when that lies between
the two (so the client's xmin moves on with the hub's), else keeps its
snapshot. The newest mark is used so only while it is younger than
REFRESH_SECONDS; after that a download writes a new one, so a hub whose
clients have nothing new writes about one mark per REFRESH_SECONDS.

A download's mark commits without waiting for its WAL flush
(synchronous_commit off, unless the transaction writes more): a crash of the
hub can lose a mark a client already holds, and then that client is refused
and reinitialises, which is safe. What the anchor covers cannot outlive a
lost mark the other way round: WAL is flushed in order, so a mark that
survives a crash (or reached a standby) brings everything committed before
it, the snapshot's transactions included.

Cheaper signals were weighed: the system identifier is part of the lineage
already (_schema.bind_hub) and a physical restore keeps it; the timeline id
changes on every promotion, a lossless failover included, and not when a
backup is started as it is, so it would both refuse clients that lost
nothing and miss restores. A mark tells exactly which anchors a restore
lost.

The first mark is written with the table (_schema.ensure_base): on a hub
that ran an older version, the anchors issued before (version 2, without a
mark) adopt it when it covers their snapshot (_anchor.adopt_legacy).

Retention: an anchor is expired for a table when its snapshot's xmin is not
above the table's min_valid_xid (purged tombstones); every anchor's xmin is
at most its mark's made_by. So purge_tombstones() deletes the marks whose
made_by is at or below the min_valid_xid of every served table: the anchors
that carry them are refused for every table anyway. The newest mark and the
first stay.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Optional, Set, Tuple

from ._anchor import NO_MARK, Mark
from ._schema import MARKS, SCHEMA, qi

TABLE = f"{qi(SCHEMA)}.{qi(MARKS)}"
# A client with nothing new takes the newest mark's snapshot while that mark
# is younger than this; after, its download writes a new one (see above).
REFRESH_SECONDS = 60

_NEWEST = (f"(SELECT m.id, m.token, m.made_by, m.snap FROM {TABLE} m "
           f"ORDER BY m.id DESC LIMIT 1)")


@dataclasses.dataclass(frozen=True)
class Seen:
    """What one statement read: the current snapshot, which of the asked
    marks the hub holds (same id, same token), the newest mark (mark, made_by,
    snap) and the first one (mark, made_by), None when there are none."""
    now: str
    found: Set[Mark]
    newest: Optional[Tuple[Mark, int, str]]
    genesis: Optional[Tuple[Mark, int]]
    fresh: bool = False             # the newest mark is younger than REFRESH_SECONDS


def snapshot_and_marks(cur: Any, marks: Iterable[Mark]) -> Seen:
    """The current snapshot and the marks, in one statement (see Seen)."""
    wanted = sorted({m for m in marks if m[0]})
    if wanted:
        found_sql = (f"array(SELECT m.id FROM {TABLE} m JOIN unnest(%s::bigint[], "
                     f"%s::bytea[]) AS a(id, token) ON m.id = a.id AND m.token = a.token)")
        params: Tuple[Any, ...] = ([m[0] for m in wanted], [m[1] for m in wanted])
    else:
        found_sql, params = "'{}'::bigint[]", ()
    now, ids, last, first = cur.execute(
        f"SELECT pg_current_snapshot()::text, {found_sql}, "
        f"(SELECT array[n.id::text, encode(n.token, 'hex'), n.made_by::text, n.snap, "
        f"(n.made_at > now() - make_interval(secs => {REFRESH_SECONDS}))::text] "
        f"FROM {TABLE} n ORDER BY n.id DESC LIMIT 1), "
        f"(SELECT array[n.id::text, encode(n.token, 'hex'), n.made_by::text] "
        f"FROM {TABLE} n ORDER BY n.id LIMIT 1)", params).fetchone()
    held = set(ids)
    newest = genesis = None
    if last is not None:
        newest = ((int(last[0]), bytes.fromhex(last[1])), int(last[2]), last[3])
    if first is not None:
        genesis = ((int(first[0]), bytes.fromhex(first[1])), int(first[2]))
    return Seen(now, {m for m in wanted if m[0] in held}, newest, genesis,
                last is not None and last[4] == "true")


def contains(outer: str, inner: str) -> bool:
    """Whether every transaction visible in snapshot `inner` is visible in
    `outer` (a sufficient test: `outer` ends no earlier, and what it still
    saw in progress below `inner`'s end was in progress for `inner` too)."""
    oxmin, oxmax, oxip = outer.split(":")
    ixmin, ixmax, ixip = inner.split(":")
    in_progress = {int(x) for x in ixip.split(",") if x}
    return int(oxmax) >= int(ixmax) and all(
        int(x) >= int(ixmax) or int(x) in in_progress for x in oxip.split(",") if x)


def covers(made_by: int, snap: str) -> bool:
    """Whether a mark written by transaction `made_by` was committed after
    `snap` was taken (its id was handed out after)."""
    return made_by >= int(snap.split(":", 2)[1])


def make(cur: Any, upper: str, *, alone: bool) -> Mark:
    """A mark committed after `upper` was taken, for the caller's transaction
    to commit (in a transaction begun after `upper` was taken): the newest
    mark if it already is one, else a new row. `alone`: the transaction
    writes nothing else, and commits without waiting for its flush (see the
    module comment)."""
    if alone:
        cur.execute("SELECT set_config('synchronous_commit', 'off', true)")
    row = cur.execute(
        f"WITH found AS (SELECT n.id, n.token FROM {_NEWEST} n "
        f"WHERE n.made_by >= pg_snapshot_xmax(%s::pg_snapshot)), "
        f"made AS (INSERT INTO {TABLE} (token) SELECT %s WHERE NOT EXISTS "
        f"(SELECT 1 FROM found) RETURNING id, token) "
        f"SELECT id, token FROM found UNION ALL SELECT id, token FROM made",
        (upper, os.urandom(8))).fetchone()
    return int(row[0]), bytes(row[1])


def make_here(cur: Any) -> Mark:
    """A new mark written by the caller's transaction, which covers every
    snapshot the transaction took before (it commits after them)."""
    row = cur.execute(f"INSERT INTO {TABLE} (token) VALUES (%s) RETURNING id, token",
                      (os.urandom(8),)).fetchone()
    return int(row[0]), bytes(row[1])


def prune(cur: Any) -> int:
    """Delete the marks every anchor of which is expired for every served
    table (made_by at or below each table's min_valid_xid); the newest mark
    and the first (the one anchors of older versions adopt) stay. Returns how many were deleted."""
    return cur.execute(
        f"DELETE FROM {TABLE} WHERE made_by::text::numeric <= (SELECT "
        f"min(min_valid_xid::text::numeric) FROM {qi(SCHEMA)}.tracked_tables "
        f"HAVING count(*) = count(min_valid_xid)) "
        f"AND id < (SELECT max(id) FROM {TABLE}) "
        f"AND id > (SELECT min(id) FROM {TABLE})").rowcount


__all__ = ["NO_MARK", "REFRESH_SECONDS", "Seen", "contains", "covers", "make", "make_here", "prune",
           "snapshot_and_marks"]
