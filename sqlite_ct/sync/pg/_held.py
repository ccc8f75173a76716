"""Which keys of a filtered table a client may hold, so that deletes and
move-outs reach only those clients (the counterpart of __sysSyncClientKeys of
the SQLite hub, sqlite_ct/sync/server.py).

HOW IT WORKS. sqlite_ct.client_keys has one row per (client, table, key) that
the hub sent the client in a download or that the client wrote itself (an
uploaded insert or update of a key the hub holds): a superset of what the
client holds. The key is stored as a digest of its values in the form the
client receives them (the download's conversion to SQLite values), so a key
read from a live row and the same key read from a tombstone match. Recording
starts with the client's first download of the table (the row with the empty
digest says "this client's keys are all recorded"); a download batch for a
client with that row keeps only the deletes of keys it may hold, so other
users' keys do not leave the hub. A client whose first download predates the
record gets every delete.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Any, Iterable, List, Sequence

from ._schema import HELD, PgTable, ensure_service_table

_COMPLETE = b""     # the digest of the row that says "all recorded"


def digest(key: Sequence[Any]) -> bytes:
    """A key's values as the client receives them (int, float, str, bytes,
    None), digested."""
    return hashlib.sha256(repr(tuple(key)).encode("utf-8", "surrogatepass")).digest()[:16]


def hold(cur: Any, client: uuid.UUID, info: PgTable, keys: Iterable[Sequence[Any]]) -> None:
    """Record that `client` may hold `keys` of `info`."""
    digests = sorted({digest(k) for k in keys})
    if not digests:
        return
    table = ensure_service_table(cur, HELD)
    cur.execute(f"INSERT INTO {table} (client_id, table_schema, table_name, rk) "
                f"SELECT %s, %s, %s, unnest(%s::bytea[]) ON CONFLICT DO NOTHING",
                (client, info.schema, info.name, digests))


def held_deletes(cur: Any, client: uuid.UUID, info: PgTable, deletes: List[tuple],
                 first: bool) -> List[tuple]:
    """`deletes` without the keys `client` cannot hold; on the client's first
    download of the table, start the record."""
    table = ensure_service_table(cur, HELD)
    complete = first or cur.execute(
        f"SELECT 1 FROM {table} WHERE client_id = %s AND table_schema = %s "
        f"AND table_name = %s AND rk = %s", (client, info.schema, info.name, _COMPLETE)
    ).fetchone() is not None
    if first:
        cur.execute(f"INSERT INTO {table} (client_id, table_schema, table_name, rk) "
                    f"VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (client, info.schema, info.name, _COMPLETE))
    if not complete or not deletes:
        return deletes
    wanted = {digest(k): k for k in deletes}
    found = {bytes(rk) for (rk,) in cur.execute(
        f"SELECT rk FROM {table} WHERE client_id = %s AND table_schema = %s "
        f"AND table_name = %s AND rk = ANY(%s::bytea[])",
        (client, info.schema, info.name, list(wanted)))}
    return [k for k in deletes if digest(k) in found]
