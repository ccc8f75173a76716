"""Gap-free anchors on the PostgreSQL hub: a transaction that started first
and committed after a client synced a later one is never skipped, with two
real sessions writing to the hub."""
import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed "
                                               "(pip install 'sqlite-ct[postgres]')")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg_fixtures import sqlite_client
from sqlite_ct.sync import ClientSyncProvider, SyncAgent


def rows(conn, sql="SELECT id, v FROM t ORDER BY id"):
    return [tuple(r) for r in conn.execute(sql).fetchall()]


@pytest.fixture
def hub(pg_dsn, pg_exec, pg_provider):
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    return pg_provider()


@pytest.mark.parametrize("batch_size", [None, 1])
def test_transaction_that_commits_after_a_later_one_was_synced_is_not_skipped(
        hub, pg_dsn, batch_size):
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), hub, ["t"], batch_size=batch_size)
    agent.synchronize()
    early = psycopg.connect(pg_dsn)
    late = psycopg.connect(pg_dsn)
    early.execute("INSERT INTO t VALUES (1, 'early')")           # takes its xid first
    late.execute("INSERT INTO t VALUES (2, 'late')")
    early_xid = early.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    late_xid = late.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    assert early_xid < late_xid
    late.commit()
    agent.synchronize()
    assert rows(client) == [(2, "late")]
    early.commit()          # an anchor of max(xid) = late_xid would skip this row forever
    stats = agent.synchronize()
    assert rows(client) == [(1, "early"), (2, "late")]
    assert stats.total_changes_downloaded == 1
    assert agent.synchronize().total_changes_downloaded == 0
    early.close()
    late.close()


def test_late_update_and_delete_of_existing_rows_arrive(hub, pg_dsn, pg_exec):
    pg_exec("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g")
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), hub, ["t"])
    agent.synchronize()
    early = psycopg.connect(pg_dsn)
    early.execute("UPDATE t SET v = 'early' WHERE id = 1")
    early.execute("DELETE FROM t WHERE id = 2")
    pg_exec("UPDATE t SET v = 'late' WHERE id = 3")
    agent.synchronize()
    assert rows(client) == [(1, "v1"), (2, "v2"), (3, "late"), (4, "v4"), (5, "v5")]
    early.commit()
    agent.synchronize()
    assert rows(client) == [(1, "early"), (3, "late"), (4, "v4"), (5, "v5")]
    early.close()


def test_in_progress_rows_are_not_sent_twice(hub, pg_dsn, pg_exec):
    """The anchor is the whole snapshot (xmin, xmax, in-progress list), so a
    row committed between xmin and xmax is sent once, not re-sent."""
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), hub, ["t"])
    agent.synchronize()
    open_tx = psycopg.connect(pg_dsn)
    open_tx.execute("INSERT INTO t VALUES (100, 'held')")     # keeps xmin low
    pg_exec("INSERT INTO t VALUES (1, 'a')")
    assert agent.synchronize().total_changes_downloaded == 1
    assert agent.synchronize().total_changes_downloaded == 0
    open_tx.commit()
    assert agent.synchronize().total_changes_downloaded == 1
    open_tx.close()


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["write", "commit", "sync"]), st.integers(0, 2),
                          st.integers(1, 6), st.sampled_from(["ins", "upd", "del"])),
                min_size=1, max_size=25))
def test_any_interleaving_of_sessions_and_syncs_converges(hub, pg_dsn, pg_exec, steps):
    """Three sessions keep transactions open across client syncs; whatever
    the interleaving, a final sync leaves the client equal to the hub."""
    pg_exec("DELETE FROM t")
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), hub, ["t"], batch_size=2)
    agent.synchronize()
    # Two sessions writing one row: the second gives up instead of waiting
    # for a commit this single thread would never reach.
    sessions = [psycopg.connect(pg_dsn, options="-c lock_timeout=50") for _ in range(3)]
    try:
        for action, s, key, kind in steps:
            conn = sessions[s]
            if action == "write":
                try:
                    with conn.transaction():      # a savepoint inside the open transaction
                        if kind == "ins":
                            conn.execute("INSERT INTO t VALUES (%s, %s) ON CONFLICT (id) DO "
                                         "UPDATE SET v = excluded.v", (key, f"s{s}"))
                        elif kind == "upd":
                            conn.execute("UPDATE t SET v = v || %s WHERE id = %s", (s, key))
                        else:
                            conn.execute("DELETE FROM t WHERE id = %s", (key,))
                except psycopg.errors.LockNotAvailable:
                    pass
            elif action == "commit":
                conn.commit()
            else:
                agent.synchronize()
        for conn in sessions:
            conn.commit()
        agent.synchronize()
        assert rows(client) == [tuple(r) for r in pg_exec("SELECT id, v FROM t ORDER BY id")]
    finally:
        for conn in sessions:
            conn.rollback()
            conn.close()


def test_an_insert_racing_an_uploaded_insert_of_the_same_key_is_a_conflict(hub, pg_dsn,
                                                                          pg_exec):
    """Detection cannot see a key another transaction has inserted but not
    committed; the upload's insert waits for it and must then report
    ClientInsertServerInsert instead of overwriting the row."""
    import threading
    import time

    from sqlite_ct.sync import ConflictType
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), hub, ["t"])
    agent.synchronize()
    client.execute("INSERT INTO t (id, v) VALUES (5, 'client')")
    other = psycopg.connect(pg_dsn)
    other.execute("INSERT INTO t VALUES (5, 'other app')")
    result = {}
    sync = threading.Thread(target=lambda: result.update(stats=agent.synchronize()))
    sync.start()
    deadline = time.monotonic() + 20
    while not pg_exec("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                      "AND datname = current_database()"):
        assert time.monotonic() < deadline, "the upload never waited for the other insert"
        time.sleep(0.02)
    other.commit()
    other.close()
    sync.join(30)
    stats = result["stats"]
    assert [c.type for c in stats.conflicts] == [ConflictType.CLIENT_INSERT_SERVER_INSERT]
    assert stats.conflicts[0].server_row == {"id": 5, "v": "other app"}
    assert pg_exec("SELECT v FROM t WHERE id = 5") == [("other app",)]
    assert rows(client) == [(5, "other app")]
