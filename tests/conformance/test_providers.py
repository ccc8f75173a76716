"""Scenarios every server provider passes, on the SQLite hub and on the
PostgreSQL hub alike (see conftest.py)."""
import apsw
import pytest

from pg_fixtures import user_rows
from sqlite_ct.sync import (ApplyAction, ConflictResolver, ConflictType, ResolveAction, SyncError,
                            SyncStage, SyncTable, SyncDirection)

SCHEMA = "CREATE TABLE t (id integer PRIMARY KEY, owner text, v text)"


@pytest.fixture
def table(hub):
    hub.execute(SCHEMA)
    hub.execute("INSERT INTO t (id, owner, v) VALUES (1, 'ann', 'one'), (2, 'bob', 'two')")
    return hub


def test_round_trip_converges_and_then_moves_nothing(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    b, sync_b = client_of(server, ["t"])
    sync_a.synchronize()
    sync_b.synchronize()
    a.execute("INSERT INTO t (id, owner, v) VALUES (3, 'ann', 'from a')")
    b.execute("UPDATE t SET v = 'from b' WHERE id = 1")
    b.execute("DELETE FROM t WHERE id = 2")
    hub.execute("INSERT INTO t (id, owner, v) VALUES (4, 'hub', 'direct')")
    for agent in (sync_a, sync_b, sync_a):
        agent.synchronize()
    expected = [(1, "ann", "from b"), (3, "ann", "from a"), (4, "hub", "direct")]
    assert hub.rows("t") == user_rows(a, "t") == user_rows(b, "t") == expected
    for agent in (sync_a, sync_b):
        stats = agent.synchronize()
        assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (0, 0)


def test_deletes_travel_both_ways_and_reinserts_win(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    hub.execute("DELETE FROM t WHERE id = 1")
    a.execute("DELETE FROM t WHERE id = 2")
    sync_a.synchronize()
    assert hub.rows("t") == user_rows(a, "t") == []
    a.execute("INSERT INTO t (id, owner, v) VALUES (2, 'bob', 'again')")
    sync_a.synchronize()
    assert hub.rows("t") == [(2, "bob", "again")]


@pytest.mark.parametrize("hub_change, client_change, expected_type", [
    ("UPDATE t SET v = 'hub' WHERE id = 1", "UPDATE t SET v = 'client' WHERE id = 1",
     ConflictType.CLIENT_UPDATE_SERVER_UPDATE),
    ("DELETE FROM t WHERE id = 1", "UPDATE t SET v = 'client' WHERE id = 1",
     ConflictType.CLIENT_UPDATE_SERVER_DELETE),
    ("UPDATE t SET v = 'hub' WHERE id = 1", "DELETE FROM t WHERE id = 1",
     ConflictType.CLIENT_DELETE_SERVER_UPDATE),
    ("INSERT INTO t (id, owner, v) VALUES (9, 'hub', 'hub')",
     "INSERT INTO t (id, owner, v) VALUES (9, 'c', 'client')",
     ConflictType.CLIENT_INSERT_SERVER_INSERT),
])
@pytest.mark.parametrize("winner", ["server", "client"])
def test_conflicts_are_detected_and_resolved(table, client_of, hub_change, client_change,
                                             expected_type, winner):
    hub = table
    action = ResolveAction.SERVER_WINS if winner == "server" else ResolveAction.CLIENT_WINS
    resolver = ConflictResolver(action, action, action, action)
    server = hub.server(conflict_resolver=resolver)
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    hub.execute(hub_change)
    a.execute(client_change)
    stats = sync_a.synchronize()
    assert [c.type for c in stats.conflicts] == [expected_type]
    conflict = stats.conflicts[0]
    key = 9 if expected_type is ConflictType.CLIENT_INSERT_SERVER_INSERT else 1
    owner = {9: "hub", 1: "ann"}[key]
    assert conflict.key == {"id": key}
    assert conflict.server_row == (None if "DELETE" in hub_change else
                                   {"id": key, "owner": owner, "v": "hub"})
    assert conflict.client_row == (None if "DELETE" in client_change else
                                   {"id": key, "owner": "c" if key == 9 else "ann",
                                    "v": "client"})
    assert conflict.connection is None and conflict.action is not None
    assert hub.rows("t") == user_rows(a, "t")
    mine = [r for r in hub.rows("t") if r[0] == key]
    if winner == "client":
        assert [r[2] for r in mine] == ([] if "DELETE" in client_change else ["client"])
    else:
        assert [r[2] for r in mine] == ([] if "DELETE" in hub_change else ["hub"])
    assert sync_a.synchronize().conflicts == []


def test_own_earlier_upload_is_no_conflict(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    a.execute("UPDATE t SET v = 'first' WHERE id = 1")
    sync_a.synchronize()
    a.execute("UPDATE t SET v = 'second' WHERE id = 1")
    stats = sync_a.synchronize()
    assert stats.conflicts == []
    assert hub.rows("t")[0] == (1, "ann", "second")


def test_a_row_the_hub_rejects_goes_to_the_inbox_or_to_the_handler(hub, client_of):
    """A row the hub's constraints reject does not block the rest: with no
    handler it is deferred into the client's conflict inbox; a handler is
    asked instead when there is one."""
    hub.execute("CREATE TABLE t (id integer PRIMARY KEY, owner text, v text CHECK (v <> 'bad'))")
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    # Two client transactions (a transaction is applied whole or not at all:
    # see test_client_transactions.py).
    a.execute("INSERT INTO t (id, owner, v) VALUES (1, 'ann', 'ok')")
    a.execute("INSERT INTO t (id, owner, v) VALUES (2, 'ann', 'bad')")
    stats = sync_a.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed,
            stats.conflicts_deferred) == (1, 1, 1)
    assert hub.rows("t") == [(1, "ann", "ok")]
    [stored] = sync_a.client.conflicts("t")
    assert (stored.type, stored.stage, stored.client_row["id"]) == (
        ConflictType.ERRORS_OCCURRED, SyncStage.UPLOADING_CHANGES, 2)
    seen = []

    def handler(conflict):
        seen.append((conflict.type, conflict.client_row["id"]))
        return ApplyAction.CONTINUE
    _, sync_b = client_of(hub.server(on_apply_change_failed=handler), ["t"])
    sync_a.server = sync_b.server
    a.execute("INSERT INTO t (id, owner, v) VALUES (3, 'ann', 'bad')")
    a.execute("INSERT INTO t (id, owner, v) VALUES (4, 'ann', 'ok')")
    stats = sync_a.synchronize()
    assert seen == [(ConflictType.ERRORS_OCCURRED, 3)]
    assert (stats.upload_changes_applied, stats.upload_changes_failed,
            stats.conflicts_deferred) == (1, 1, 0)
    assert hub.rows("t") == [(1, "ann", "ok"), (4, "ann", "ok")]


def test_filters_scope_rows_and_move_rows_out(table, client_of):
    hub = table
    server = hub.server(filters={"t": "owner = :user"})
    a, sync_a = client_of(server, ["t"], parameters={"user": "ann"})
    sync_a.synchronize()
    assert user_rows(a, "t") == [(1, "ann", "one")]
    hub.execute("UPDATE t SET owner = 'ann' WHERE id = 2")
    hub.execute("UPDATE t SET owner = 'bob' WHERE id = 1")
    sync_a.synchronize()
    assert user_rows(a, "t") == [(2, "ann", "two")]
    # A write outside the client's scope is refused, never applied, and the
    # client does not keep the row.
    a.execute("INSERT INTO t (id, owner, v) VALUES (5, 'bob', 'given away')")
    stats = sync_a.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 1)
    assert [(c.type, c.error.split(":")[0]) for c in stats.conflicts] == [
        (ConflictType.ERRORS_OCCURRED, "refused")]
    assert user_rows(a, "t") == [(2, "ann", "two")]
    assert hub.rows("t") == [(1, "bob", "one"), (2, "ann", "two")]


def test_changed_filter_parameters_rescope_the_client(table, client_of):
    hub = table
    server = hub.server(filters={"t": "owner = :user"})
    a, sync_a = client_of(server, ["t"], parameters={"user": "ann"})
    sync_a.synchronize()
    sync_a.parameters = {"user": "bob"}
    sync_a.synchronize()
    assert user_rows(a, "t") == [(2, "bob", "two")]


def test_missing_filter_parameter_is_a_clear_error(table, client_of):
    server = table.server(filters={"t": "owner = :user"})
    a, sync_a = client_of(server, ["t"])
    with pytest.raises(SyncError, match='needs parameter ":user"'):
        sync_a.synchronize()


@pytest.mark.parametrize("batch_size", [1, 7])
def test_batched_download_and_large_upload(hub, client_of, batch_size):
    hub.execute(SCHEMA)
    for i in range(1, 31):
        hub.execute("INSERT INTO t (id, owner, v) VALUES (?, ?, ?)", (i, "o", f"v{i}"))
    server = hub.server()
    a, sync_a = client_of(server, ["t"], batch_size=batch_size)
    stats = sync_a.synchronize()
    assert stats.download_batches >= 30 // batch_size
    assert user_rows(a, "t") == hub.rows("t")
    hub.execute("DELETE FROM t WHERE id % 3 = 0")
    hub.execute("UPDATE t SET v = 'changed' WHERE id % 3 = 1")
    a.execute("WITH RECURSIVE n(i) AS (SELECT 100 UNION ALL SELECT i + 1 FROM n WHERE i < 400) "
              "INSERT INTO t (id, owner, v) SELECT i, 'c', 'up' || i FROM n")
    stats = sync_a.synchronize()
    assert stats.upload_changes_applied == 301
    assert user_rows(a, "t") == hub.rows("t")
    assert len(hub.rows("t")) == 20 + 301


def test_interrupted_batched_download_resumes(table, client_of):
    hub = table
    for i in range(10, 20):
        hub.execute("INSERT INTO t (id, owner, v) VALUES (?, 'o', 'x')", (i,))
    server = hub.server()
    a, sync_a = client_of(server, ["t"], batch_size=3)
    calls = {"n": 0}
    real = server.get_changes

    def flaky(request):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("network down")
        return real(request)
    server.get_changes = flaky
    with pytest.raises(ConnectionError):
        sync_a.synchronize()
    hub.execute("UPDATE t SET v = 'moved on' WHERE id = 1")
    sync_a.synchronize()
    assert user_rows(a, "t") == hub.rows("t")


def test_a_commit_after_the_client_synced_is_not_lost(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    late = hub.begin()
    late.execute("INSERT INTO t (id, owner, v) VALUES (?, ?, ?)", (50, "late", "committed later"))
    if hub.kind == "sqlite":
        # SQLite serialises writers, and a session writes the hub (its replica
        # claim): it waits for the open transaction and, past the busy
        # timeout, fails having changed nothing.
        server.conn.setbusytimeout(100)
        with pytest.raises(apsw.BusyError):
            sync_a.synchronize()
        server.conn.setbusytimeout(5000)
    else:
        sync_a.synchronize()
    assert 50 not in [r[0] for r in user_rows(a, "t")]
    late.commit()
    sync_a.synchronize()
    assert (50, "late", "committed later") in user_rows(a, "t")


def test_purged_tombstones_make_old_anchors_reinitialise(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    b, sync_b = client_of(server, ["t"])
    sync_a.synchronize()
    sync_b.synchronize()
    hub.execute("DELETE FROM t WHERE id = 1")
    sync_a.synchronize()
    assert hub.purge(server, "t") == 1
    hub.execute("INSERT INTO t (id, owner, v) VALUES (7, 'x', 'after purge')")
    sync_a.synchronize()          # a saw the delete: its anchor is still valid
    with pytest.raises(SyncError, match="purged tombstones.*reinitialise the table"):
        sync_b.synchronize()


def test_upload_only_and_download_only_directions(table, client_of):
    hub = table
    server = hub.server()
    up, sync_up = client_of(server, [SyncTable("t", SyncDirection.UPLOAD_ONLY)])
    sync_up.synchronize()
    up.execute("INSERT INTO t (id, owner, v) VALUES (20, 'u', 'up')")
    sync_up.synchronize()
    assert user_rows(up, "t") == [(20, "u", "up")]
    down, sync_down = client_of(server, [SyncTable("t", SyncDirection.DOWNLOAD_ONLY)])
    sync_down.synchronize()
    assert user_rows(down, "t") == hub.rows("t")
    assert len(user_rows(down, "t")) == 3


def test_snapshot_tables_are_reloaded(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, [SyncTable("t", SyncDirection.SNAPSHOT)])
    sync_a.synchronize()
    hub.execute("DELETE FROM t WHERE id = 1")
    sync_a.synchronize()
    assert user_rows(a, "t") == hub.rows("t") == [(2, "bob", "two")]


def test_upload_after_an_interrupted_batched_download_sees_what_arrived(hub, client_of):
    hub.execute(SCHEMA)
    for i in range(1, 11):
        hub.execute("INSERT INTO t (id, owner, v) VALUES (?, 'o', 'hub')", (i,))
    server = hub.server()
    a, sync_a = client_of(server, ["t"], batch_size=3)
    calls = {"n": 0}
    real = server.get_changes

    def stop_after_two(request):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("network down")
        return real(request)
    server.get_changes = stop_after_two
    with pytest.raises(ConnectionError):
        sync_a.synchronize()
    server.get_changes = real
    received = [r[0] for r in user_rows(a, "t")]
    assert len(received) == 6
    a.execute("UPDATE t SET v = 'client' WHERE id = ?", (received[0],))
    stats = sync_a.synchronize()
    assert stats.conflicts == []
    assert (received[0], "o", "client") in hub.rows("t")
    assert user_rows(a, "t") == hub.rows("t")


def test_a_column_the_hub_lacks_is_refused_not_dropped(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    a.execute("ALTER TABLE t ADD COLUMN extra TEXT")
    a.execute("UPDATE t SET extra = 'only here' WHERE id = 1")
    with pytest.raises(SyncError, match="table \"t\" on the server has no column 'extra'"):
        sync_a.synchronize()


def test_a_copied_client_database_is_refused_until_reidentified(table, client_of, tmp_path):
    """Both hubs keep a replica generation per client id: a copy of a client
    database (here VACUUM INTO, as a device provisioned from a synced
    template) is refused with ReplicaCopied, and reidentify() makes it a
    client of its own; every replica then converges."""
    import sqlite_ct
    from sqlite_ct.sync import ClientSyncProvider, ReplicaCopied, SyncAgent
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    a.execute("VACUUM INTO ?", (str(tmp_path / "copy.db"),))
    copy = apsw.Connection(str(tmp_path / "copy.db"))
    sqlite_ct.load(copy)
    sync_copy = SyncAgent(ClientSyncProvider(copy), server, ["t"])
    assert sync_copy.client.client_id == sync_a.client.client_id
    a.execute("INSERT INTO t (id, owner, v) VALUES (30, 'a', 'from the original')")
    sync_a.synchronize()
    copy.execute("INSERT INTO t (id, owner, v) VALUES (31, 'c', 'from the copy')")
    with pytest.raises(ReplicaCopied):
        sync_copy.synchronize()
    assert 31 not in [r[0] for r in hub.rows("t")]
    sync_copy.reidentify()
    assert sync_copy.client.client_id != sync_a.client.client_id
    sync_a.synchronize()
    assert user_rows(a, "t") == user_rows(copy, "t") == hub.rows("t")
    assert {30, 31} <= {r[0] for r in hub.rows("t")}
    copy.close()
