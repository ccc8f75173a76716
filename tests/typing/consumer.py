"""A typed application of sqlite-ct's public API. tests/test_typing.py checks
it with `mypy --strict` (every result has a precise type, not Any) and runs it.
assert_type() fails the type check when a result's type differs, Any included."""
import sqlite3
import sys
import tempfile
import uuid
from typing import Any, Dict, List, Optional, Tuple

import sqlite_ct
from sqlite_ct import sync

if sys.version_info >= (3, 11):
    from typing import assert_type
else:
    from typing_extensions import assert_type


def main(workdir: str) -> None:
    assert_type(sqlite_ct.__version__, str)
    assert_type(sqlite_ct.loadable_path(), str)
    sqlite_ct.register_auto_extension()
    conn = sqlite3.connect(f"{workdir}/app.db", isolation_level=None)
    sqlite_ct.load(conn)
    assert_type(sqlite_ct.is_loaded(conn), bool)

    conn.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
    bsn = assert_type(sqlite_ct.create_schema(
        conn, "orders", options=sqlite_ct.TrackingOptions.ALL, mode="native"), int)
    assert bsn == 1
    assert_type(sqlite_ct.is_tracked(conn, "orders"), bool)
    assert_type(sqlite_ct.tracked_tables(conn), List[str])
    conn.execute("INSERT INTO orders(id, item, qty) VALUES (1, 'apple', 3)")
    assert_type(sqlite_ct.last_committed_csn(conn), int)
    assert_type(sqlite_ct.current_bsn(conn), Optional[int])
    sqlite_ct.set_tracking_context(conn, uuid.uuid4())
    assert_type(sqlite_ct.tracking_context(conn), Optional[uuid.UUID])

    changes = assert_type(sqlite_ct.enumerate_changes(conn, "orders", since=0),
                          sqlite_ct.ChangeSet)
    anchor: int = changes.new_anchor
    rows: List[Dict[str, Any]] = changes.inserts
    assert rows == [{"id": 1, "item": "apple", "qty": 3}] and anchor == 2
    group = assert_type(sqlite_ct.enumerate_group_changes(conn, ["orders"], since=0),
                        sqlite_ct.GroupChangeSet)
    assert_type(group["orders"], sqlite_ct.ChangeSet)
    with sqlite_ct.iter_changes(conn, "orders", 0) as stream:
        for change in stream:
            assert_type(change, sqlite_ct.Change)
            assert_type(change.kind, str)
        assert_type(stream.new_anchor, Optional[int])   # None before the block

    assert_type(sqlite_ct.get_sent_anchor(conn, "orders"), Optional[int])
    sqlite_ct.set_sent_anchor(conn, "orders", anchor)
    assert_type(sqlite_ct.get_received_anchor(conn, "orders"), Optional[bytes])
    assert_type(sqlite_ct.client_id(conn), uuid.UUID)
    packed = assert_type(sqlite_ct.pack_key(conn, "orders", [1]), bytes)
    assert_type(sqlite_ct.unpack_key(conn, "orders", packed), Tuple[Any, ...])
    assert_type(sqlite_ct.purge_tombstones(conn, "orders", up_to_csn=anchor), int)
    assert_type(sqlite_ct.purge_transaction_sequence(conn, older_than_days=30.0), int)
    problems = assert_type(sqlite_ct.check(conn), List[sqlite_ct.Problem])
    assert problems == []
    with sqlite_ct.applying_server_changes(conn):
        conn.execute("UPDATE orders SET qty = 4 WHERE id = 1")
        with sqlite_ct.applying_local_changes(conn):
            conn.execute("UPDATE orders SET qty = 5 WHERE id = 1")
    sqlite_ct.set_sent_anchors(conn, {"orders": anchor})
    sqlite_ct.set_received_anchors(conn, {"orders": b"anchor"})
    sqlite_ct.set_client_id(conn, uuid.uuid4())
    assert_type(sqlite_ct.stamp_applied(conn, "orders", (1,)), bool)
    assert_type(sqlite_ct.forget_pending_deletes(conn, "orders", [1], after=anchor), int)
    assert_type(sqlite_ct.reinitialise_table(conn, "orders", b"anchor"), int)
    assert_type(sqlite_ct.floor_tombstone_times(conn), int)
    sqlite_ct.release_context(conn, "orders", uuid.uuid4(), keep_rows=[(1,)])

    hub = sqlite3.connect(f"{workdir}/hub.db", isolation_level=None)
    client = sqlite3.connect(f"{workdir}/client.db", isolation_level=None)
    hub.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    hub.execute("INSERT INTO items(id, name) VALUES (1, 'pear')")
    agent = sync.SyncAgent(sync.ClientSyncProvider(client), sync.ServerSyncProvider(hub),
                           [sync.SyncTable("items", sync.SyncDirection.BIDIRECTIONAL)],
                           batch_size=100)
    stats = assert_type(agent.synchronize(), sync.SyncStatistics)
    downloaded: int = stats.total_changes_downloaded
    assert downloaded == 1
    conflicts: List[sync.Conflict] = stats.conflicts
    assert conflicts == []

    try:
        sqlite_ct.enumerate_changes(conn, "orders", since=-1)
    except sqlite_ct.Error as exc:
        message: str = str(exc)
        assert message
    for c in (conn, hub, client):
        c.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d:
        main(d)
    print("ok")
