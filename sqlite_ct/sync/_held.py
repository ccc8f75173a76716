"""Which keys of a filtered table a client may hold, on the SQLite hub, so
that deletes and move-outs reach only those clients (the PostgreSQL hub keeps
the same record in sqlite_ct.client_keys: pg/_held.py).

HOW IT WORKS. __sysSyncClientKeys has one row per (client, table, key) that
the hub sent the client in a download, or that the client wrote itself (an
uploaded insert or update of a key the hub holds after the upload): a
superset of what the client holds. The key is stored packed
(sqlite_ct_pack_key), as the tombstones store it. Recording starts with the
client's first download of the table (the row with the empty key, RK = x'',
says "this client's keys are all recorded"); a download batch for the client
keeps only the deletes of keys it may hold, so other users' keys do not leave
the hub. A later download of a filtered table by a client without that row
(its first download predates the record, the table was filtered later, or
its record was forgotten by forget_clients) raises ReinitialiseRequired: a
reinitialisation is a first download, which starts the record.

PRUNING. A row goes once the client cannot hold the key any more, in any
state of its database the hub would still accept. When a delete or move-out
of the key is sent, the row's Gone is set to the hub CSN the client reaches
by applying it (the upper bound of the download session, or the CSN of the
upload whose result carries the delete). A request of that client whose
anchor has completed a window up to Gone (complete >= Gone) shows the delete
applied: the row's Acked becomes the client's replica generation counter at
the hub (__sysSyncClients; 0 before its first claim). A request whose anchor
is behind Gone again (a restored database, a session the caller rolled
back), or a first download (a reinitialisation), clears Acked. The row is
deleted only once the client's counter is at least Acked + 2: the hub then
accepts only states of the database from after the replica claim that
followed the acknowledgement (a claim that repeats the current one is
accepted, one older is refused: check_replica_claim), and those have applied
the delete. A client whose sessions run inside the caller's transaction
claims nothing, so its rows wait for its next two sessions of its own. A row
sent again, or uploaded again, is held again (Gone and Acked NULL). An
upload's own deletes that the hub applied are handled the same way (the
client deleted the key itself). forget_clients() drops the whole record of
clients not seen for a retention period.
"""
from __future__ import annotations

import uuid
from typing import Any, Iterable, List, Sequence

from . import _sql
from ._sql import TableInfo, q

HELD = "__sysSyncClientKeys"
COMPLETE = b""  # the RK of the row that says "this client's keys are all recorded"
_CREATE = (f'CREATE TABLE IF NOT EXISTS main."{HELD}"(ClientId BLOB NOT NULL, '
           f"TName TEXT NOT NULL, RK BLOB NOT NULL, Gone INTEGER, Acked INTEGER, "
           f"PRIMARY KEY(ClientId, TName, RK)) WITHOUT ROWID")


def ensure(conn: Any) -> None:
    """Create the record (inside the caller's write transaction); a record
    made before pruning existed gets its Gone and Acked columns."""
    _sql.execute(conn, _CREATE)
    for column in ("Gone", "Acked"):
        if not _sql.value(conn, f"SELECT 1 FROM pragma_table_info('{HELD}') WHERE name = ?",
                          (column,)):
            _sql.execute(conn, f'ALTER TABLE main."{HELD}" ADD COLUMN {q(column)} INTEGER')


def recorded(conn: Any, client: uuid.UUID, table: str) -> bool:
    """Whether `client`'s keys of `table` are all recorded."""
    if _sql.table_exists(conn, HELD) is None:
        return False
    return _sql.value(conn, f'SELECT 1 FROM main."{HELD}" WHERE ClientId = ? AND TName = ? '
                            f"AND RK = ?", (client.bytes_le, table, COMPLETE)) is not None


def start(conn: Any, client: uuid.UUID, table: str) -> None:
    """The client's first download of `table` begins: its record is complete.
    What earlier requests showed applied says nothing of the table as it
    was before (a reinitialisation): acknowledgements start again."""
    _sql.execute(conn, f'INSERT OR IGNORE INTO main."{HELD}"(ClientId, TName, RK) '
                       f"VALUES (?, ?, ?)", (client.bytes_le, table, COMPLETE))
    _sql.execute(conn, f'UPDATE main."{HELD}" SET Acked = NULL WHERE ClientId = ? '
                       f"AND TName = ? AND Acked IS NOT NULL", (client.bytes_le, table))


def _pack(n: int) -> str:
    return f"sqlite_ct_pack_key({', '.join(f'?{i + 3}' for i in range(n))})"


def hold(conn: Any, client: uuid.UUID, info: TableInfo, keys: Iterable[Sequence[Any]]) -> None:
    """Record that `client` may hold `keys` (tuples in key order)."""
    _sql.executemany(
        conn, f'INSERT INTO main."{HELD}"(ClientId, TName, RK) '
              f"VALUES (?1, ?2, {_pack(len(info.key))}) "
              f"ON CONFLICT(ClientId, TName, RK) DO UPDATE SET Gone = NULL, Acked = NULL",
        ((client.bytes_le, info.name, *k) for k in keys))


def hold_on_hub(conn: Any, client: uuid.UUID, info: TableInfo,
                keys: Iterable[Sequence[Any]]) -> None:
    """hold() for those of `keys` whose row is on the hub, as the hub stores
    the key (an uploaded key of another type or spelling is recorded as the
    tombstone of the hub's row will name it)."""
    cols = ", ".join(f"t.{q(k)}" for k in info.key)
    marks = [f"?{i + 3}" for i in range(len(info.key))]
    _sql.executemany(
        conn, f'INSERT INTO main."{HELD}"(ClientId, TName, RK) '
              f"SELECT ?1, ?2, sqlite_ct_pack_key({cols}) FROM main.{q(info.name)} AS t "
              f"WHERE {info.key_match('t', marks)} "
              f"ON CONFLICT(ClientId, TName, RK) DO UPDATE SET Gone = NULL, Acked = NULL",
        ((client.bytes_le, info.name, *k) for k in keys))


def held_deletes(conn: Any, client: uuid.UUID, info: TableInfo,
                 deletes: List[tuple]) -> List[tuple]:
    """`deletes` without the keys `client` cannot hold."""
    sql = (f'SELECT 1 FROM main."{HELD}" WHERE ClientId = ?1 AND TName = ?2 '
           f"AND RK = {_pack(len(info.key))}")
    cid = client.bytes_le
    return [k for k in deletes if _sql.value(conn, sql, (cid, info.name, *k)) is not None]


def gone(conn: Any, client: uuid.UUID, info: TableInfo, keys: Iterable[Sequence[Any]],
         upto: int, corrected: bool = False) -> None:
    """A delete of `keys` was sent to `client`, applied once the client
    completes a download window up to hub CSN `upto`. `corrected`: the
    deletes of an upload result (the client's refused rows, applied with the
    result); a key whose earlier delete is still waiting keeps that bound
    (moving it up would make the record wait a round longer than the client
    does; the PostgreSQL hub's corrected() does the same)."""
    pack = f"sqlite_ct_pack_key({', '.join(f'?{i + 4}' for i in range(len(info.key)))})"
    bound = "coalesce(Gone, ?3)" if corrected else "max(coalesce(Gone, 0), ?3)"
    _sql.executemany(
        conn, f'UPDATE main."{HELD}" SET Gone = {bound} '
              f"WHERE ClientId = ?1 AND TName = ?2 AND RK = {pack}",
        ((client.bytes_le, info.name, upto, *k) for k in keys))


def generation(conn: Any, client: uuid.UUID) -> int:
    """The counter of `client`'s current replica generation at the hub (the
    first 8 bytes of __sysSyncClients.Generation, big-endian); 0 when it has
    claimed none."""
    if _sql.table_exists(conn, "__sysSyncClients") is None:
        return 0
    current = _sql.value(conn, "SELECT Generation FROM __sysSyncClients WHERE ClientId = ?",
                         (client.bytes_le,))
    return 0 if current is None else int.from_bytes(bytes(current)[:8], "big")


def prune(conn: Any, client: uuid.UUID, table: str, complete: int, counter: int) -> int:
    """A request of `client` whose anchor completed a window up to `complete`,
    made at replica generation counter `counter` (generation()): note which
    deletes it shows applied, and which not (any more), and drop the keys
    acknowledged two claims ago or earlier. Returns how many went."""
    args = (client.bytes_le, table, complete)
    _sql.execute(conn, f'UPDATE main."{HELD}" SET Acked = NULL WHERE ClientId = ? '
                       f"AND TName = ? AND Gone > ? AND Acked IS NOT NULL", args)
    _sql.execute(conn, f'UPDATE main."{HELD}" SET Acked = ? WHERE ClientId = ? AND TName = ? '
                       f"AND Gone <= ? AND Acked IS NULL", (counter, *args))
    _sql.execute(conn, f'DELETE FROM main."{HELD}" WHERE ClientId = ? AND TName = ? '
                       f"AND Acked <= ?", (client.bytes_le, table, counter - 2))
    return int(_sql.value(conn, "SELECT changes()"))


def forget_client(conn: Any, client: uuid.UUID) -> None:
    """Drop `client`'s whole record (a hub restored from a backup lost part
    of it: server.hub_behind)."""
    if _sql.table_exists(conn, HELD) is not None:
        _sql.execute(conn, f'DELETE FROM main."{HELD}" WHERE ClientId = ?', (client.bytes_le,))


def forget_clients(conn: Any, older_than_ms: int) -> int:
    """Drop the whole record of every client whose latest replica claim
    (__sysSyncClients.LastSeen, ms since the epoch) is older than
    `older_than_ms`. Clients that never claimed a generation (sessions run
    inside the caller's transaction) are kept. Returns how many clients were
    forgotten."""
    if _sql.table_exists(conn, HELD) is None or \
            _sql.table_exists(conn, "__sysSyncClients") is None:
        return 0
    stale = [bytes(r[0]) for r in _sql.rows(
        conn, f'SELECT DISTINCT h.ClientId FROM main."{HELD}" AS h '
              f"JOIN main.__sysSyncClients AS c ON c.ClientId = h.ClientId "
              f"WHERE c.LastSeen < ?", (older_than_ms,))]
    _sql.executemany(conn, f'DELETE FROM main."{HELD}" WHERE ClientId = ?',
                     [(c,) for c in stale])
    return len(stale)
