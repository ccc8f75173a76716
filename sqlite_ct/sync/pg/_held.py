"""Which keys of a filtered table a client may hold, so that deletes and
move-outs reach only those clients (the counterpart of __sysSyncClientKeys of
the SQLite hub, sqlite_ct/sync/_held.py).

HOW IT WORKS. sqlite_ct.client_keys has one row per (client, table, key) that
the hub sent the client in a download or that the client wrote itself (an
uploaded insert or update of a key the hub holds after the upload): a
superset of what the client holds. The key is stored as a digest of its
values in the form the client receives them (the download's conversion to
SQLite values), so a key read from a live row and the same key read from a
tombstone match. Recording starts with the client's first download of the
table (the row with the empty digest says "this client's keys are all
recorded"); a download batch for a client keeps only the deletes of keys it
may hold, so other users' keys do not leave the hub. A later download by a
client without that row (its first download predates the record, the table
was filtered later, or the record was forgotten) raises ReinitialiseRequired:
a reinitialisation is a first download, which starts the record.

PRUNING. A row goes once the client cannot hold the key any more, in any
state of its database the hub would still accept (as on the SQLite hub, see
sqlite_ct/sync/_held.py). When a delete or move-out of a key is sent, the
row's `gone` is set to the first transaction id the client must have seen
for the delete to be applied: the xmax of the download session's snapshot,
or the uploading transaction's id + 1 for a delete an upload result carries
(or an upload's own delete). A request of the client whose anchor has
completed a snapshot whose xmin is at or above `gone` shows the delete
applied: `acked` becomes the client's replica generation counter
(sqlite_ct.client_replicas; 0 before its first claim). A request whose
anchor is behind `gone` again (a restored database, a session the caller
rolled back), or a first download, clears `acked`. The row is deleted once
the client's counter is at least `acked` + 2, when every state of the
client database the hub accepts has applied the delete. A key sent or
uploaded again is held again (gone and acked NULL). forget_clients() drops
the whole record of clients not seen (no replica claim in
sqlite_ct.client_replicas) for a retention period.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Any, Iterable, List, Optional, Sequence

from ._schema import HELD, REPLICAS, PgTable, ensure_service_table

_COMPLETE = b""     # the digest of the row that says "all recorded"


def digest(key: Sequence[Any]) -> bytes:
    """A key's values as the client receives them (int, float, str, bytes,
    None), digested."""
    return hashlib.sha256(repr(tuple(key)).encode("utf-8", "surrogatepass")).digest()[:16]


def _table(cur: Any) -> str:
    """sqlite_ct.client_keys; one made before pruning existed gets `gone`
    and `acked`."""
    table = ensure_service_table(cur, HELD)
    if cur.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                   "AND attname IN ('gone', 'acked') AND NOT attisdropped",
                   (table,)).fetchone()[0] < 2:
        cur.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS gone xid8, "
                    f"ADD COLUMN IF NOT EXISTS acked bigint")
    return table


def recorded(cur: Any, client: uuid.UUID, info: PgTable) -> bool:
    """Whether `client`'s keys of `info` are all recorded."""
    table = _table(cur)
    return cur.execute(
        f"SELECT 1 FROM {table} WHERE client_id = %s AND table_schema = %s "
        f"AND table_name = %s AND rk = %s", (client, info.schema, info.name, _COMPLETE)
    ).fetchone() is not None


def start(cur: Any, client: uuid.UUID, info: PgTable) -> None:
    """The client's first download of `info` begins: its record is complete.
    What earlier requests showed applied says nothing of the table as it
    was before (a reinitialisation): acknowledgements start again."""
    table = _table(cur)
    cur.execute(f"INSERT INTO {table} (client_id, table_schema, table_name, rk) "
                f"VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (client, info.schema, info.name, _COMPLETE))
    cur.execute(f"UPDATE {table} SET acked = NULL WHERE client_id = %s AND table_schema = %s "
                f"AND table_name = %s AND acked IS NOT NULL", (client, info.schema, info.name))


def hold(cur: Any, client: uuid.UUID, info: PgTable, keys: Iterable[Sequence[Any]]) -> None:
    """Record that `client` may hold `keys` of `info`."""
    digests = sorted({digest(k) for k in keys})
    if not digests:
        return
    table = _table(cur)
    cur.execute(f"INSERT INTO {table} (client_id, table_schema, table_name, rk) "
                f"SELECT %s, %s, %s, unnest(%s::bytea[]) "
                f"ON CONFLICT (client_id, table_schema, table_name, rk) DO UPDATE SET gone = NULL, "
                f"acked = NULL",
                (client, info.schema, info.name, digests))


def held_deletes(cur: Any, client: uuid.UUID, info: PgTable,
                 deletes: List[tuple]) -> List[tuple]:
    """`deletes` without the keys `client` cannot hold."""
    if not deletes:
        return deletes
    table = _table(cur)
    wanted = {digest(k): k for k in deletes}
    found = {bytes(rk) for (rk,) in cur.execute(
        f"SELECT rk FROM {table} WHERE client_id = %s AND table_schema = %s "
        f"AND table_name = %s AND rk = ANY(%s::bytea[])",
        (client, info.schema, info.name, list(wanted)))}
    return [k for k in deletes if digest(k) in found]


def gone(cur: Any, client: uuid.UUID, info: PgTable, keys: Iterable[Sequence[Any]],
         upto: Optional[str]) -> None:
    """Deletes of `keys` were sent to `client`: applied once its anchor
    completes a snapshot whose xmin is at least `upto` (an xid8 as text;
    None: the current transaction's id + 1)."""
    bound = ("%s::xid8" if upto is not None
             else "(pg_current_xact_id()::text::numeric + 1)::text::xid8")
    _set_gone(cur, client, info, keys, f"greatest(gone, {bound})",
              (upto,) if upto is not None else ())


def corrected(cur: Any, client: uuid.UUID, info: PgTable,
              keys: Iterable[Sequence[Any]]) -> None:
    """An upload result tells `client` to delete `keys` (its refused rows,
    which are not in its scope on the hub): the client applies them with the
    result, so a request whose anchor completed a snapshot taken after this
    one shows them applied. A key whose earlier delete is still waiting keeps
    that bound: moving it to this transaction would make the record wait a
    round longer than the client does."""
    _set_gone(cur, client, info, keys, "coalesce(gone, pg_snapshot_xmin(pg_current_snapshot()))",
              ())


def _set_gone(cur: Any, client: uuid.UUID, info: PgTable, keys: Iterable[Sequence[Any]],
              value: str, args: tuple) -> None:
    """gone = `value` (SQL, its parameters `args`) for `client`'s `keys`."""
    digests = sorted({digest(k) for k in keys})
    if not digests:
        return
    cur.execute(f"UPDATE {_table(cur)} SET gone = {value} WHERE client_id = %s "
                f"AND table_schema = %s AND table_name = %s AND rk = ANY(%s::bytea[])",
                args + (client, info.schema, info.name, digests))


def generation(cur: Any, client: uuid.UUID) -> int:
    """The counter of `client`'s current replica generation at the hub (the
    first 8 bytes of sqlite_ct.client_replicas.generation, big-endian); 0
    when it has claimed none."""
    table = ensure_service_table(cur, REPLICAS)
    row = cur.execute(f"SELECT generation FROM {table} WHERE client_id = %s",
                      (client,)).fetchone()
    return 0 if row is None else int.from_bytes(bytes(row[0])[:8], "big")


def prune(cur: Any, client: uuid.UUID, info: PgTable, complete: Optional[str],
          counter: int) -> None:
    """A request of `client` whose anchor completed the snapshot `complete`
    (None: none yet), made at replica generation counter `counter`
    (generation()): note which deletes it shows applied, and which not (any
    more), and drop the keys acknowledged two claims ago or earlier."""
    table = _table(cur)
    where = "client_id = %s AND table_schema = %s AND table_name = %s"
    args = (client, info.schema, info.name)
    if complete is None:
        cur.execute(f"UPDATE {table} SET acked = NULL WHERE {where} AND acked IS NOT NULL",
                    args)
    else:
        cur.execute(f"UPDATE {table} SET acked = NULL WHERE {where} AND acked IS NOT NULL "
                    f"AND gone > pg_snapshot_xmin(%s::pg_snapshot)", (*args, complete))
        cur.execute(f"UPDATE {table} SET acked = %s WHERE {where} AND acked IS NULL "
                    f"AND gone <= pg_snapshot_xmin(%s::pg_snapshot)",
                    (counter, *args, complete))
    cur.execute(f"DELETE FROM {table} WHERE {where} AND acked <= %s", (*args, counter - 2))


def forget_client(cur: Any, client: uuid.UUID) -> None:
    """Drop `client`'s whole record (a hub restored from a backup lost part
    of it: server.hub_behind)."""
    cur.execute(f"DELETE FROM {_table(cur)} WHERE client_id = %s", (client,))


def forget_clients(cur: Any, older_than_days: float) -> int:
    """Drop the whole record of every client whose latest replica claim
    (sqlite_ct.client_replicas.last_seen) is older than `older_than_days`
    days. Returns how many clients were forgotten."""
    table = _table(cur)
    replicas = ensure_service_table(cur, REPLICAS)
    return len({r[0] for r in cur.execute(
        f"DELETE FROM {table} AS h USING {replicas} AS r WHERE r.client_id = h.client_id "
        f"AND r.last_seen < now() - make_interval(secs => %s) RETURNING h.client_id",
        (older_than_days * 86400.0,)).fetchall()})
