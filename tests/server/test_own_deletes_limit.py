"""Keys inserted and deleted again between two syncs (a staging table, a
queue) travel as own deletes in batches of at most upload_batch_size, so
they fit the service's request limit."""
from __future__ import annotations

from .conftest import ALICE, clients, start_service  # noqa: F401


def test_many_keys_inserted_and_deleted_again_sync_under_the_limit(start_service, clients):
    service = start_service(max_request_bytes=100_000)
    alice = clients("alice", service.url, ALICE, upload_batch_size=50)
    alice.sync()
    alice.conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                       "WHERE i < 20000) INSERT INTO notes(id, owner, body) "
                       "SELECT 100000 + i, 'alice', 'tmp' FROM n")
    alice.conn.execute("DELETE FROM notes WHERE id > 100000")
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (99999, 'alice', 'kept')")
    stats = alice.sync()
    assert stats.upload_changes_applied == 1
