"""Deletes of a filtered table reach a client whose database went back to an
earlier state that its hub still accepts (see conftest.py for the hubs).

The hub prunes a key from its record of what a client holds once the client
has applied the key's delete. A client database restored from a backup of
its latest session, or a session the caller rolled back, is accepted again
(its replica claim is the hub's current or a repeat of it) and presents an
anchor from before the delete: every hub must still send that delete."""
import itertools
import shutil

import apsw
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sqlite_ct
from pg_fixtures import user_rows
from sqlite_ct.sync import (ClientSyncProvider, ReplicaCopied, SyncAgent, SyncGroup, SyncStage,
                            SyncTable)

FILTER = {"notes": "owner = :user"}
GROUP = SyncGroup("notebook")
TABLES = [SyncTable("notes", group=GROUP), SyncTable("tags", group=GROUP)]
_examples = itertools.count(1)


@pytest.fixture
def notebook(hub):
    hub.execute("CREATE TABLE notes (id integer PRIMARY KEY, owner text, body text)")
    hub.execute("CREATE TABLE tags (id integer PRIMARY KEY, label text)")
    hub.execute("INSERT INTO notes (id, owner, body) VALUES (1, 'alice', 'a1'), "
                "(2, 'bob', 'b1'), (3, 'alice', 'a2')")
    hub.execute("INSERT INTO tags (id, label) VALUES (1, 't1')")
    return hub


def open_client(path):
    conn = apsw.Connection(str(path))
    sqlite_ct.load(conn)
    return conn


def backup(conn, path):
    """A copy of the client database as it is now (the SQLite backup API)."""
    dest = apsw.Connection(str(path))
    with dest.backup("main", conn, "main") as b:
        b.step()
    dest.close()


class BacksUpAtClaim:
    """The hub, and a backup of the client file taken while the client's
    replica claim is on its way (its next generation drawn and stored, not
    yet current): restored, it repeats that accepted claim."""

    def __init__(self, server):
        self.server = server
        self.take = None        # (client connection, backup path) when armed

    def __getattr__(self, name):
        return getattr(self.server, name)

    def claim_replica(self, client_id, generation, next_generation):
        if self.take is not None:
            backup(*self.take)
            self.take = None
        return self.server.claim_replica(client_id, generation, next_generation)


@pytest.mark.parametrize("point", ["claim", "stored"])
def test_a_client_restored_from_its_latest_session_gets_the_delete_again(
        notebook, tmp_path, point):
    """The backup is taken in the session that applies the hub's delete of
    key 3, before its download: while the replica claim is on its way (the
    restored file repeats the claim) or once the new generation is stored
    (the restored file's generation is the hub's current one). In that
    session the first download batch applies the delete and the next
    request's anchor shows it applied. The restored client is accepted and
    must lose key 3 with its next sync."""
    hub = notebook
    server = hub.server(filters=FILTER)
    hooked = BacksUpAtClaim(server)
    path, saved = tmp_path / "alice.db", tmp_path / "alice-backup.db"
    armed = []

    def before_download(event):
        if armed and event.stage is SyncStage.UPLOADING_CHANGES:
            backup(alice, saved)
            armed.clear()

    alice = open_client(path)
    sync = SyncAgent(ClientSyncProvider(alice), hooked, TABLES, parameters={"user": "alice"},
                     batch_size=2, progress=before_download)
    sync.synchronize()
    assert user_rows(alice, "notes") == [(1, "alice", "a1"), (3, "alice", "a2")]
    hub.execute("DELETE FROM notes WHERE id = 3")
    hub.execute("INSERT INTO tags (id, label) VALUES (2, 't2'), (3, 't3'), (4, 't4')")
    if point == "claim":
        hooked.take = (alice, saved)
    else:
        armed.append(True)
    stats = sync.synchronize()
    assert saved.exists() and not armed and hooked.take is None
    assert stats.download_batches >= 2        # the delete's anchor went back to the hub
    assert user_rows(alice, "notes") == [(1, "alice", "a1")]
    alice.close()

    shutil.copyfile(saved, path)
    alice = open_client(path)
    assert user_rows(alice, "notes") == [(1, "alice", "a1"), (3, "alice", "a2")]
    restored = SyncAgent(ClientSyncProvider(alice), server, TABLES,
                         parameters={"user": "alice"}, batch_size=2)
    restored.synchronize()
    assert user_rows(alice, "notes") == [r for r in hub.rows("notes") if r[1] == "alice"] == [
        (1, "alice", "a1")]
    assert user_rows(alice, "tags") == hub.rows("tags")
    # Once the restored client's later sessions have shown the delete applied,
    # the key leaves the record.
    for _ in range(3):
        restored.synchronize()
    assert hub.held(restored.client.client_id, "notes", range(10)) == ({1}, 1)
    alice.close()


def test_a_session_the_caller_rolled_back_gets_the_delete_again(notebook, client_of):
    """Sessions inside the caller's transaction claim no generation. One
    whose first download batch applies a delete, and whose next request
    shows it applied, may still be rolled back: the next session gets the
    delete again."""
    hub = notebook
    server = hub.server(filters=FILTER)
    alice, sync = client_of(server, TABLES, parameters={"user": "alice"}, batch_size=2)
    sync.synchronize()
    hub.execute("DELETE FROM notes WHERE id = 3")
    hub.execute("INSERT INTO tags (id, label) VALUES (2, 't2'), (3, 't3'), (4, 't4')")
    alice.execute("BEGIN")
    stats = sync.synchronize()
    assert stats.download_batches >= 2
    assert user_rows(alice, "notes") == [(1, "alice", "a1")]
    alice.execute("ROLLBACK")
    assert user_rows(alice, "notes") == [(1, "alice", "a1"), (3, "alice", "a2")]
    sync.synchronize()
    assert user_rows(alice, "notes") == [(1, "alice", "a1")]
    assert user_rows(alice, "tags") == hub.rows("tags")


def test_sessions_in_the_callers_transaction_do_not_prune(notebook, client_of):
    """Sessions inside the caller's transaction do not move the client's
    replica generation, so the hub cannot tell which of the client's states
    may still come back: while a client syncs only that way, the keys whose
    deletes it applied stay recorded (their deletes would be sent again).
    Its next two sessions of its own prune them."""
    hub = notebook
    server = hub.server(filters=FILTER)
    alice, sync = client_of(server, ["notes"], parameters={"user": "alice"})
    me = sync.client.client_id
    sync.synchronize()
    hub.execute("DELETE FROM notes WHERE id = 3")
    for _ in range(4):
        alice.execute("BEGIN")
        sync.synchronize()
        alice.execute("COMMIT")
    assert user_rows(alice, "notes") == [(1, "alice", "a1")]
    assert hub.held(me, "notes", range(10)) == ({1, 3}, 2)
    sync.synchronize()
    assert hub.held(me, "notes", range(10)) == ({1, 3}, 2)
    sync.synchronize()
    assert hub.held(me, "notes", range(10)) == ({1}, 1)


RESTORE_OPS = st.lists(st.one_of(
    st.tuples(st.just("hub"), st.integers(1, 5), st.sampled_from(["alice", "bob"])),
    st.tuples(st.just("hub-delete"), st.integers(1, 5), st.just("")),
    st.tuples(st.just("hub-tag"), st.integers(1, 4), st.just("")),
    st.tuples(st.just("local"), st.integers(1, 5), st.sampled_from(["alice", "bob"])),
    st.tuples(st.just("local-delete"), st.integers(1, 5), st.just("")),
    # A session of the client's own, taking a backup of the client while its
    # replica claim is on its way, or after its generation was stored.
    st.tuples(st.just("sync"), st.just(0), st.sampled_from(["", "claim", "stored"])),
    st.tuples(st.just("sync-in-transaction"), st.just(0), st.sampled_from(["commit",
                                                                          "rollback"])),
    st.tuples(st.just("backup"), st.just(0), st.just("")),
    st.tuples(st.just("restore"), st.just(0), st.just("")),
), max_size=20)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=RESTORE_OPS)
@example(ops=[("hub-delete", 1, ""), ("sync", 0, "claim"), ("restore", 0, "")])
@example(ops=[("hub-delete", 3, ""), ("sync", 0, "stored"), ("local", 4, "alice"),
              ("restore", 0, "")])
@example(ops=[("hub-delete", 1, ""), ("sync-in-transaction", 0, "rollback")])
@example(ops=[("local", 4, "alice"), ("sync-in-transaction", 0, "rollback"),
              ("local-delete", 4, "")])
def test_restores_and_rollbacks_converge_or_are_refused(hub, tmp_path_factory, ops):
    """Whatever the hub and the client do, with backups of the client taken
    between sessions, while a replica claim is on its way, or after it was
    stored, restored at any later point, and sessions inside the caller's transaction
    committed or rolled back: after a session of its own the client equals
    the hub's rows in its scope, or the restored database is refused
    (ReplicaCopied) and, reidentified, equals them."""
    table = f"n{next(_examples)}"
    tags = f"{table}_tags"
    hub.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, owner text, body text)")
    hub.execute(f"CREATE TABLE {tags} (id integer PRIMARY KEY, label text)")
    hub.execute(f"INSERT INTO {table} (id, owner, body) VALUES (1, 'alice', 'seed'), "
                f"(2, 'bob', 'seed'), (3, 'alice', 'seed')")
    server = hub.server(filters={table: "owner = :user"})
    try:
        check_restores(hub, server, table, tags, tmp_path_factory.mktemp("restores"), ops)
    finally:
        if hasattr(server, "close"):
            server.close()


def check_restores(hub, server, table, tags, where, ops):
    group = SyncGroup("notebook")
    tables = [SyncTable(table, group=group), SyncTable(tags, group=group)]
    hooked = BacksUpAtClaim(server)
    conn = open_client(where / "alice.db")
    saved = where / "backup.db"
    # unsent: a local change made since the backup; lost: such a change was
    # uploaded by a session inside the caller's transaction since.
    state = {"stored": False, "unsent": False, "lost": False}

    def progress(event):
        if state["stored"] and event.stage is SyncStage.UPLOADING_CHANGES \
                and not conn.in_transaction:
            backup(conn, saved)
            state["stored"] = False

    def agent():
        return SyncAgent(ClientSyncProvider(conn), hooked, tables,
                         parameters={"user": "alice"}, batch_size=2, progress=progress)

    sync = agent()

    def converged():
        assert user_rows(conn, table) == [r for r in hub.rows(table) if r[1] == "alice"]
        assert user_rows(conn, tags) == hub.rows(tags)

    def own_session():
        try:
            sync.synchronize()
        except ReplicaCopied:
            sync.reidentify()
        converged()

    own_session()
    for n, (op, key, arg) in enumerate(ops):
        if op == "hub":
            hub.execute(f"INSERT INTO {table} (id, owner, body) VALUES (?, ?, ?) ON CONFLICT "
                        f"(id) DO UPDATE SET owner = excluded.owner, body = excluded.body",
                        (key, arg, f"hub {n}"))
        elif op == "hub-delete":
            # With tags changed too, the download that brings the delete
            # takes several batches, and the next one shows it applied.
            hub.execute(f"DELETE FROM {table} WHERE id = ?", (key,))
            hub.execute(f"INSERT INTO {tags} (id, label) VALUES (5, ?), (6, ?) ON CONFLICT (id) "
                        f"DO UPDATE SET label = excluded.label", (f"hub {n}", f"hub {n}"))
        elif op == "hub-tag":
            hub.execute(f"INSERT INTO {tags} (id, label) VALUES (?, ?) ON CONFLICT (id) "
                        f"DO UPDATE SET label = excluded.label", (key, f"hub {n}"))
        elif op == "local":
            conn.execute(f"INSERT OR REPLACE INTO {table} (id, owner, body) VALUES (?, ?, ?)",
                         (key, arg, f"alice {n}"))
            state["unsent"] = True
        elif op == "local-delete":
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (key,))
            state["unsent"] = True
        elif op == "sync":
            if arg == "claim":
                hooked.take = (conn, saved)
            state["stored"] = arg == "stored"
            own_session()
            hooked.take, state["stored"] = None, False
            if arg:
                state["unsent"] = state["lost"] = False
        elif op == "sync-in-transaction":
            conn.execute("BEGIN")
            sync.synchronize()
            conn.execute("COMMIT" if arg == "commit" else "ROLLBACK")
            state["lost"] = state["lost"] or state["unsent"]
        elif op == "backup":
            backup(conn, saved)
            state["unsent"] = state["lost"] = False
        elif op == "restore":
            # Not a backup older than an upload of a session inside the
            # caller's transaction: the hub still accepts it (no claim moved)
            # and does not send back what it takes for the client's own rows
            # (a limit, docs/sync.md).
            if saved.exists() and not state["lost"]:
                src = apsw.Connection(str(saved))
                with conn.backup("main", src, "main") as b:
                    b.step()
                src.close()
                sync = agent()
                # A restored database syncs on its own first: sessions inside
                # the caller's transaction claim nothing (docs/sync.md).
                own_session()
    own_session()
    own_session()


def test_a_row_uploaded_by_a_rolled_back_session_then_deleted_leaves_the_hub(hub, client_of):
    """A session inside the caller's transaction uploads a new row; the
    caller rolls back, so the client takes the row for unsent; then deletes
    it. Inserted and deleted since its last upload, the row is no change to
    upload, yet the hub holds it (the client's own write, which no download
    sends back): the client sends the key as an own delete and the hub drops
    the row it got from the lost session, and only such a row."""
    hub.execute("CREATE TABLE r (id integer PRIMARY KEY, body text)")
    hub.execute("INSERT INTO r (id, body) VALUES (1, 'seed')")
    server = hub.server()
    conn, sync = client_of(server, ["r"])
    sync.synchronize()
    other, sync_other = client_of(server, ["r"])
    sync_other.synchronize()
    conn.execute("INSERT INTO r (id, body) VALUES (4, 'mine')")
    conn.execute("BEGIN")
    sync.synchronize()
    conn.execute("ROLLBACK")
    assert hub.rows("r") == [(1, "seed"), (4, "mine")]
    sync_other.synchronize()
    # Another client's row under a key this client also used and deleted
    # (before ever uploading it) is not this client's: it stays.
    other.execute("INSERT INTO r (id, body) VALUES (5, 'theirs')")
    sync_other.synchronize()
    conn.execute("INSERT INTO r (id, body) VALUES (5, 'temp')")
    conn.execute("DELETE FROM r WHERE id = 5")
    conn.execute("DELETE FROM r WHERE id = 4")
    stats = sync.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 0)
    assert hub.rows("r") == [(1, "seed"), (5, "theirs")]
    assert user_rows(conn, "r") == [(1, "seed"), (5, "theirs")]
    sync_other.synchronize()
    assert user_rows(other, "r") == [(1, "seed"), (5, "theirs")]
