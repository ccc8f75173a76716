"""A first sync of 100,000 rows (marked `large`: deselect with -m "not large").

It runs in the normal suite because it is fast (about 1 s here, much of it the
client's tracking triggers, which stamp every applied row). The time is
printed; run with -s to see it."""
from __future__ import annotations

import time

import pytest

from .conftest import Client, Hub, connect

N = 100_000


@pytest.mark.large
@pytest.mark.parametrize("batch_size", [None, 10_000])
def test_first_sync_of_100k_rows(batch_size):
    hub_conn = connect()
    hub_conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "qty INTEGER, price REAL, note TEXT)")
    hub_conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                     f"WHERE i < {N}) INSERT INTO items SELECT i, 'item ' || i, i % 97, "
                     f"i * 0.25, CASE WHEN i % 3 THEN hex(randomblob(8)) END FROM n")
    client = Client(connect(), Hub(hub_conn).server, ["items"], batch_size=batch_size)
    start = time.perf_counter()
    stats = client.sync()
    elapsed = time.perf_counter() - start
    print(f"\nfirst sync of {N} rows, batch_size={batch_size}: {elapsed:.2f} s")
    assert stats.total_changes_downloaded == stats.download_changes_applied == N
    check = ("SELECT count(*), sum(id), sum(qty), sum(price), "
             "sum(length(name) + coalesce(length(note), 0)), group_concat(note, '') "
             "FROM (SELECT * FROM items ORDER BY id)")
    assert client.conn.execute(check).fetchall() == hub_conn.execute(check).fetchall()
    quiet = client.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)
