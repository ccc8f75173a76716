"""Through the sync service, upload batches follow upload_batch_size whatever
the client's transactions: small transactions travel whole, several to a
batch; a transaction larger than the batch size is sent in parts of that
size, each within the service's request limit, so a client that bulk-loads
in one transaction still syncs (413 too_large would leave it stuck until
the limit was raised)."""
from __future__ import annotations

import os

from .conftest import ALICE, connect, rows

BIG = 500          # rows of one client transaction: about 200 KB of JSON


def hub_rows(service):
    hub = connect(os.path.join(service.workdir, "hub.db"))
    try:
        return rows(hub, "owner = 'alice'")
    finally:
        hub.close()


def hub_count(service):
    return sum(1 for r in hub_rows(service) if r[0] >= 1000)


def test_a_transaction_larger_than_the_batch_size_is_sent_in_parts_under_the_limit(
        start_service, clients):
    service = start_service(max_request_bytes=100_000)
    alice = clients("alice", service.url, ALICE, upload_batch_size=50)
    alice.sync()
    # Small transactions first: they travel in batches under the limit.
    for first in range(0, 100, 10):
        alice.conn.execute("WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n "
                           "WHERE i < ?) INSERT INTO notes(id, owner, body) "
                           "SELECT 1000 + i, 'alice', printf('%0300d', i) FROM n",
                           (first, first + 9))
    assert alice.sync().upload_changes_applied == 100
    alice.conn.execute("WITH RECURSIVE n(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM n "
                       "WHERE i < ?) INSERT INTO notes(id, owner, body) "
                       "SELECT 1000 + i, 'alice', printf('%0300d', i) FROM n", (99 + BIG,))
    with alice.agent.client.stream_changes(["notes"]) as stream:
        assert [sum(map(len, b)) for b in stream.batches(50)] == [50] * (BIG // 50)
    stats = alice.sync()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (BIG, 0)
    assert hub_count(service) == 100 + BIG
    assert rows(alice.conn) == hub_rows(service)
