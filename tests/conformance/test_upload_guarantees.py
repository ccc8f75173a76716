"""The upload guarantees every hub keeps (see conftest.py): a client writes
only rows in its scope, an upload sent again is applied once, and deletes of
a filtered table reach only the clients that may hold the key."""
import itertools
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pg_fixtures import user_rows
from sqlite_ct.sync import (ConflictType, ReinitialiseRequired, SyncError, SyncStage,
                             TableChanges, Upload)

SCHEMA = "CREATE TABLE notes (id integer PRIMARY KEY, owner text, body text)"
FILTER = {"notes": "owner = :user"}
REFUSED_OLD = ("refused: the hub's row is outside this client's filter; a client writes only "
               "rows in its scope")
REFUSED_NEW = ("refused: the new version is outside this client's filter; a client writes "
               "only rows in its scope")


@pytest.fixture
def notes(hub):
    hub.execute(SCHEMA)
    hub.execute("INSERT INTO notes (id, owner, body) VALUES (1, 'alice', 'a1'), "
                "(2, 'bob', 'b1'), (3, 'alice', 'a2')")
    return hub


def changes(**kinds):
    return TableChanges("notes", ("id", "owner", "body"), ("id",), **kinds)


def test_inserting_a_key_held_outside_the_scope_never_overwrites_it(notes, client_of):
    hub = notes
    alice, sync = client_of(hub.server(filters=FILTER), ["notes"],
                            parameters={"user": "alice"})
    sync.synchronize()
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (2, 'alice', 'mine')")
    stats = sync.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 1)
    assert [(c.type, c.key, c.error, c.server_row) for c in stats.conflicts] == [
        (ConflictType.ERRORS_OCCURRED, {"id": 2}, REFUSED_OLD, None)]   # nothing of bob's
    assert hub.rows("notes") == [(1, "alice", "a1"), (2, "bob", "b1"), (3, "alice", "a2")]
    assert user_rows(alice, "notes") == [(1, "alice", "a1"), (3, "alice", "a2")]


def test_changes_to_rows_outside_the_scope_are_refused_and_answered(notes, client_of):
    hub = notes
    server = hub.server(filters=FILTER)
    alice, sync = client_of(server, ["notes"], parameters={"user": "alice"})
    sync.synchronize()
    client = uuid.uuid4()
    result = server.apply_changes(Upload(
        client, "notes", [changes(deletes=[(2,)], updates=[(2, "bob", "edited by alice"),
                                                           (1, "bob", "given to bob")])],
        {"notes": None}, {"user": "alice"}))
    assert (result.applied, result.failed) == (0, 3)
    assert sorted((c.key["id"], c.error) for c in result.conflicts) == [
        (1, REFUSED_NEW), (2, REFUSED_OLD), (2, REFUSED_OLD)]
    assert hub.rows("notes") == [(1, "alice", "a1"), (2, "bob", "b1"), (3, "alice", "a2")]
    # Alice gets her row back as the hub has it, and a delete of bob's key.
    [tc] = result.corrections
    assert (tc.deletes, tc.updates) == ([(2,)], [(1, "alice", "a1")])


def test_a_client_moving_its_row_out_of_its_scope_is_refused(notes, client_of):
    hub = notes
    server = hub.server(filters=FILTER)
    alice, sync_a = client_of(server, ["notes"], parameters={"user": "alice"})
    bob, sync_b = client_of(server, ["notes"], parameters={"user": "bob"})
    sync_a.synchronize()
    sync_b.synchronize()
    alice.execute("UPDATE notes SET owner = 'bob' WHERE id = 1")
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (4, 'bob', 'x')")
    stats = sync_a.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 2)
    assert sorted((c.key["id"], c.error) for c in stats.conflicts) == [
        (1, REFUSED_NEW), (4, REFUSED_NEW)]
    assert user_rows(alice, "notes") == [(1, "alice", "a1"), (3, "alice", "a2")]
    sync_b.synchronize()
    assert user_rows(bob, "notes") == [(2, "bob", "b1")]
    assert hub.rows("notes") == [(1, "alice", "a1"), (2, "bob", "b1"), (3, "alice", "a2")]


def test_a_retried_upload_is_applied_once_with_the_stored_result(notes, client_of):
    hub = notes
    server = hub.server()
    client = uuid.uuid4()
    upload = Upload(client, "notes", [changes(inserts=[(10, "a", "x")])], {"notes": None}, {},
                    b"session-1", 0)
    first = server.apply_changes(upload)
    hub.execute("UPDATE notes SET body = 'changed on the hub' WHERE id = 10")
    again = server.apply_changes(upload)
    assert (again.applied, again.failed) == (first.applied, first.failed) == (1, 0)
    assert (10, "a", "changed on the hub") in hub.rows("notes")       # not applied again
    # The same batch with other changes is another upload, and is applied.
    other = Upload(client, "notes", [changes(inserts=[(11, "a", "y")])], {"notes": None}, {},
                   b"session-1", 0)
    assert server.apply_changes(other).applied == 1
    assert hub.receipt_sessions() == [b"session-1"]
    # A new session of the client drops the receipts of its older ones.
    server.apply_changes(Upload(client, "notes", [], {}, {}, b"session-2", 0))
    assert hub.receipt_sessions() == [b"session-2"]


def test_an_upload_without_a_session_keeps_no_receipt(notes, client_of):
    hub = notes
    server = hub.server()
    server.apply_changes(Upload(uuid.uuid4(), "notes", [changes(inserts=[(10, "a", "x")])],
                                {"notes": None}))
    server.apply_changes(Upload(uuid.uuid4(), "notes", [changes(inserts=[(11, "a", "x")])],
                                {"notes": None}, {}, b"s", 0))
    assert hub.receipt_sessions() == [b"s"]


def test_a_refused_upload_retried_is_answered_the_same(notes, client_of):
    server = notes.server(filters=FILTER)
    upload = Upload(uuid.uuid4(), "notes", [changes(updates=[(2, "bob", "edited")])],
                    {"notes": None}, {"user": "alice"}, b"s", 0)
    first = server.apply_changes(upload)
    again = server.apply_changes(upload)
    assert (first.applied, first.failed) == (again.applied, again.failed) == (0, 1)
    assert [c.error for c in again.conflicts] == [REFUSED_OLD]
    assert [(tc.deletes, tc.updates) for tc in again.corrections] == [([(2,)], [])]


def test_uploads_cannot_reset_a_hub_table(notes, client_of):
    from sqlite_ct.sync import SyncError
    server = notes.server()
    with pytest.raises(SyncError, match="uploads cannot reset tables"):
        server.apply_changes(Upload(uuid.uuid4(), "notes", [changes(reset=True)],
                                    {"notes": None}))
    assert len(notes.rows("notes")) == 3


class Counting:
    """A server provider that counts the deletes each download carries."""

    def __init__(self, server):
        self.server = server
        self.deletes = []
        self.sent = set()       # the keys of every row sent, in downloads or corrections

    def __getattr__(self, name):
        return getattr(self.server, name)

    def _saw(self, tables):
        for tc in tables:
            self.sent |= {row[0] for row in tc.inserts + tc.updates}

    def get_changes(self, request):
        batch = self.server.get_changes(request)
        self.deletes.extend(k for tc in batch.tables for k in tc.deletes)
        self._saw(batch.tables)
        return batch

    def apply_changes(self, upload):
        result = self.server.apply_changes(upload)
        self._saw(result.corrections)
        return result


def test_deletes_and_move_outs_reach_only_clients_that_may_hold_the_key(notes, client_of):
    hub = notes
    server = hub.server(filters=FILTER)
    counted = {u: Counting(server) for u in ("alice", "bob")}
    clients = {u: client_of(counted[u], ["notes"], parameters={"user": u})
               for u in ("alice", "bob")}
    for _, sync in clients.values():
        sync.synchronize()
    hub.execute("DELETE FROM notes WHERE id = 2")                     # bob's
    hub.execute("UPDATE notes SET owner = 'nobody' WHERE id = 3")     # alice's, moved out
    for c in counted.values():
        c.deletes.clear()
    for _, sync in clients.values():
        sync.synchronize()
    assert user_rows(clients["alice"][0], "notes") == [(1, "alice", "a1")]
    assert user_rows(clients["bob"][0], "notes") == []
    assert counted["bob"].deletes == [(2,)]
    assert counted["alice"].deletes == [(3,)]


def test_a_row_a_client_wrote_itself_is_deleted_when_it_moves_out(notes, client_of):
    hub = notes
    server = hub.server(filters=FILTER)
    counted = Counting(server)
    alice, sync = client_of(counted, ["notes"], parameters={"user": "alice"})
    sync.synchronize()
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (7, 'alice', 'mine')")
    sync.synchronize()
    hub.execute("UPDATE notes SET owner = 'bob' WHERE id = 7")
    hub.execute("DELETE FROM notes WHERE id = 1")
    counted.deletes.clear()
    sync.synchronize()
    assert sorted(counted.deletes) == [(1,), (7,)]
    assert user_rows(alice, "notes") == [(3, "alice", "a2")]


def test_a_client_that_inserted_a_key_the_hub_kept_gets_its_delete(notes, client_of):
    """Alice's insert of a key that bob's row took in the meantime (in her
    scope, the hub wins): she holds her own version, so the hub's later
    delete of that key reaches her."""
    hub = notes
    server = hub.server(filters=FILTER)
    alice, sync = client_of(server, ["notes"], parameters={"user": "alice"})
    sync.synchronize()
    hub.execute("INSERT INTO notes (id, owner, body) VALUES (8, 'alice', 'hub')")
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (8, 'alice', 'client')")
    sync.synchronize()
    hub.execute("DELETE FROM notes WHERE id = 8")
    sync.synchronize()
    assert user_rows(alice, "notes") == hub.rows("notes")[:1] + [(3, "alice", "a2")] == [
        (1, "alice", "a1"), (3, "alice", "a2")]


def test_an_insert_that_lost_to_the_hub_gets_a_delete_made_before_its_download(
        notes, client_of):
    """Alice's insert loses to the hub's row of that key (in her scope, the
    hub wins: she keeps her version until her download brings the hub's);
    the hub deletes the key after her upload and before her download. She
    holds the key, so the delete reaches her: every hub records an uploaded
    key it keeps, not only one whose upload landed."""
    hub = notes
    server = hub.server(filters=FILTER)
    counted = Counting(server)
    armed, deleted = [], []

    def between(event):
        if event.stage is SyncStage.UPLOADING_CHANGES and armed and not deleted:
            hub.execute("DELETE FROM notes WHERE id = 8")
            deleted.append(event)

    alice, sync = client_of(counted, ["notes"], parameters={"user": "alice"},
                            progress=between)
    sync.synchronize()
    armed.append(True)
    hub.execute("INSERT INTO notes (id, owner, body) VALUES (8, 'alice', 'hub')")
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (8, 'alice', 'client')")
    counted.deletes.clear()
    stats = sync.synchronize()
    assert deleted, "the hub's delete ran between upload and download"
    assert [c.type for c in stats.conflicts] == [ConflictType.CLIENT_INSERT_SERVER_INSERT]
    assert counted.deletes == [(8,)]
    assert user_rows(alice, "notes") == [r for r in hub.rows("notes") if r[1] == "alice"] == [
        (1, "alice", "a1"), (3, "alice", "a2")]


@pytest.mark.parametrize("where, parameters, change", [
    ("owner = :user", {"user": "alice"}, ("insert", (9, None, "no owner"))),
    ("owner = :user", {"user": "alice"}, ("update", (1, None, "no owner"))),
    ("owner = :user", {"user": None}, ("insert", (9, None, "no owner"))),
    ("owner = :user", {"user": None}, ("delete", (4,))),
    ("nullif(owner, 'alice') IS NULL AND body <> :body", {"body": "x"},
     ("insert", (9, "alice", None))),
])
def test_a_filter_that_evaluates_to_null_refuses_the_change(notes, client_of, where,
                                                           parameters, change):
    """NULL is not "in scope": every hub refuses a change whose hub row, or
    whose new version, makes the filter NULL."""
    hub = notes
    hub.execute("INSERT INTO notes (id, owner, body) VALUES (4, NULL, 'nobody')")
    server = hub.server(filters={"notes": where})
    kind, values = change
    before = hub.rows("notes")
    result = server.apply_changes(Upload(uuid.uuid4(), "notes", [changes(**{kind + "s": [values]})],
                                         {"notes": None}, parameters))
    assert (result.applied, result.failed) == (0, 1)
    assert [(c.type, c.error.split(";")[0]) for c in result.conflicts] == [
        (ConflictType.ERRORS_OCCURRED, (REFUSED_OLD if kind == "delete" else REFUSED_NEW
                                        ).split(";")[0])]
    assert hub.rows("notes") == before


def test_a_key_leaves_the_record_once_its_delete_is_applied(notes, client_of):
    """A key stays recorded as held until the client has applied its delete
    (a download request shows an anchor past it) and has since made two
    replica claims (no restore from before can be accepted any more): hub
    deletes, move-outs and the client's own deletes; the record does not
    grow with the keys a client once held."""
    hub = notes
    server = hub.server(filters=FILTER)
    counted = Counting(server)
    alice, sync = client_of(counted, ["notes"], parameters={"user": "alice"})
    me = sync.client.client_id
    sync.synchronize()
    alice.execute("INSERT INTO notes (id, owner, body) VALUES (10, 'alice', 'a10'), "
                  "(11, 'alice', 'a11'), (12, 'alice', 'a12')")
    sync.synchronize()
    assert hub.held(me, "notes", range(20)) == ({1, 3, 10, 11, 12}, 5)
    hub.execute("DELETE FROM notes WHERE id = 10")
    hub.execute("UPDATE notes SET owner = 'bob' WHERE id = 11")
    alice.execute("DELETE FROM notes WHERE id = 12")
    counted.deletes.clear()
    sync.synchronize()
    assert sorted(counted.deletes) == [(10,), (11,)]
    # Sent, not yet known to be applied: still recorded.
    assert hub.held(me, "notes", range(20))[0] >= {1, 3, 10, 11}
    sync.synchronize()
    # Known to be applied, but a restore of the session that applied the
    # deletes would still be accepted: still recorded.
    assert hub.held(me, "notes", range(20))[0] >= {1, 3, 10, 11}
    sync.synchronize()
    assert hub.held(me, "notes", range(20))[0] >= {1, 3, 10, 11}
    sync.synchronize()
    assert hub.held(me, "notes", range(20)) == ({1, 3}, 2)
    # Held again once it comes back into the scope.
    hub.execute("UPDATE notes SET owner = 'alice' WHERE id = 11")
    sync.synchronize()
    assert hub.held(me, "notes", range(20)) == ({1, 3, 11}, 3)
    hub.execute("DELETE FROM notes WHERE id = 11")
    counted.deletes.clear()
    sync.synchronize()
    assert counted.deletes == [(11,)]
    assert user_rows(alice, "notes") == [r for r in hub.rows("notes") if r[1] == "alice"]


@pytest.mark.parametrize("columns", [("Gone", "Acked"), ("Acked",)])
def test_a_record_made_before_pruning_is_upgraded(notes, client_of, columns):
    """A hub whose record of held keys was made before pruning existed (no
    column for the delete's position nor for the generation that
    acknowledged it), or before acknowledgements had a generation, gets the
    columns on its next sync and prunes from then on."""
    hub = notes
    server = hub.server(filters=FILTER)
    alice, sync = client_of(server, ["notes"], parameters={"user": "alice"})
    sync.synchronize()
    hub.drop_pruning_columns(columns)
    hub.execute("DELETE FROM notes WHERE id = 3")
    sync.synchronize()
    assert user_rows(alice, "notes") == [(1, "alice", "a1")]
    for _ in range(3):
        sync.synchronize()
    assert hub.held(sync.client.client_id, "notes", range(10)) == ({1}, 1)


def test_a_delete_whose_batch_was_lost_is_sent_again(notes, client_of):
    """The record is pruned only once the client's anchor shows the delete
    applied: a batch lost on the way (the client never stored its anchor)
    is answered again with the delete."""
    hub = notes
    server = hub.server(filters=FILTER)

    class Lost(Exception):
        pass

    class LosesOneBatch:
        armed = False

        def __getattr__(self, name):
            return getattr(server, name)

        def get_changes(self, request):
            batch = server.get_changes(request)
            if self.armed and any(tc.deletes for tc in batch.tables):
                self.armed = False
                raise Lost()
            return batch

    lossy = LosesOneBatch()
    alice, sync = client_of(lossy, ["notes"], parameters={"user": "alice"})
    sync.synchronize()
    hub.execute("DELETE FROM notes WHERE id = 3")
    lossy.armed = True
    with pytest.raises(Lost):
        sync.synchronize()
    assert user_rows(alice, "notes") == [(1, "alice", "a1"), (3, "alice", "a2")]
    sync.synchronize()
    assert user_rows(alice, "notes") == [(1, "alice", "a1")]


def test_a_forgotten_client_is_told_to_reinitialise(notes, client_of):
    """forget_clients() drops the record of clients not seen for a retention
    period; such a client (like one whose first download predates the
    record) is told to reinitialise rather than being sent every delete or
    missing one, and afterwards gets exactly the deletes of its keys."""
    hub = notes
    server = hub.server(filters=FILTER)
    counted = Counting(server)
    alice, sync_a = client_of(counted, ["notes"], parameters={"user": "alice"})
    sync_a.synchronize()
    bob, sync_b = client_of(server, ["notes"], parameters={"user": "bob"})
    sync_b.synchronize()
    assert server.forget_clients(older_than_days=1) == 0
    hub.age_client(sync_a.client.client_id, days=2)
    assert server.forget_clients(older_than_days=1) == 1    # alice, not bob
    with pytest.raises(SyncError, match="forget_clients"):
        server.forget_clients(older_than_days=-1)
    assert hub.held(sync_a.client.client_id, "notes", range(10)) == (set(), 0)
    hub.execute("DELETE FROM notes WHERE id IN (1, 2)")    # alice's and bob's
    counted.deletes.clear()
    with pytest.raises(ReinitialiseRequired, match='no record of which rows of filtered '
                                                   'table "notes" this client holds'):
        sync_a.synchronize()
    assert counted.deletes == []
    sync_a.reinitialise()
    assert user_rows(alice, "notes") == [(3, "alice", "a2")]
    hub.execute("DELETE FROM notes WHERE id = 3")
    hub.execute("INSERT INTO notes (id, owner, body) VALUES (4, 'bob', 'b4')")
    hub.execute("DELETE FROM notes WHERE id = 4")
    counted.deletes.clear()
    sync_a.synchronize()
    assert counted.deletes == [(3,)]
    assert user_rows(alice, "notes") == []
    sync_b.synchronize()
    assert user_rows(bob, "notes") == []


_tables = itertools.count(1)
USERS = ("alice", "bob")
KEYS = st.integers(1, 6)
SCOPE_OPS = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(USERS), KEYS, st.sampled_from(USERS)),
    st.tuples(st.just("update"), st.sampled_from(USERS), KEYS, st.sampled_from(USERS)),
    st.tuples(st.just("delete"), st.sampled_from(USERS), KEYS, st.just("")),
    st.tuples(st.just("sync"), st.sampled_from(USERS), st.just(0), st.just("")),
    st.tuples(st.just("hub"), st.sampled_from(USERS), KEYS, st.sampled_from(USERS)),
    st.tuples(st.just("hub-delete"), st.sampled_from(USERS), KEYS, st.just("")),
), max_size=25)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=SCOPE_OPS)
# A key the client deleted and uploaded, then re-inserted for another user (a
# refused insert): the hub's record of the keys alice holds must still drop it.
@example(ops=[("delete", "alice", 1, ""), ("sync", "alice", 0, ""),
              ("insert", "alice", 1, "bob")])
@example(ops=[("hub", "alice", 1, "bob"), ("sync", "alice", 0, ""),
              ("insert", "alice", 1, "bob")])
@example(ops=[("hub", "alice", 1, "bob"), ("sync", "alice", 0, ""),
              ("insert", "alice", 1, "alice")])
def test_scopes_hold_for_any_interleaving(hub, client_of, ops):
    """Whatever two filtered users do: a sync of user U changes only hub rows
    that were U's before (or absent) and are U's after (or absent), leaves
    U's client equal to the hub restricted to U's rows, and sends U deletes
    only of keys U's client held at some point. The hub's record of the keys
    U may hold covers every key U's client holds after each sync (no delete
    can be missed), and once nothing changes it is exactly those keys
    (records of deleted keys are pruned)."""
    table = f"s{next(_tables)}"
    hub.execute(f"CREATE TABLE {table} (id integer PRIMARY KEY, owner text, body text)")
    hub.execute(f"INSERT INTO {table} (id, owner, body) VALUES (1, 'alice', 'seed'), "
                f"(2, 'bob', 'seed')")
    server = hub.server(filters={table: "owner = :user"})
    try:
        check_scopes(hub, server, table, client_of, ops)
    finally:
        if hasattr(server, "close"):        # one pool per example, not per test
            server.close()


def check_scopes(hub, server, table, client_of, ops):
    counted = {u: Counting(server) for u in USERS}
    clients = {u: client_of(counted[u], [table], parameters={"user": u}) for u in USERS}
    ever = {u: set() for u in USERS}

    def sync(user):
        conn, agent = clients[user]
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchall():
            ever[user] |= {r[0] for r in user_rows(conn, table)}
        counted[user].deletes.clear()
        agent.synchronize()
        # The keys the client held during the sync: before, after, and
        # whatever a download brought in between.
        ever[user] |= {r[0] for r in user_rows(conn, table)}
        for (k,) in counted[user].deletes:
            assert k in ever[user] | counted[user].sent, (user, k)
        mine = {r[0] for r in user_rows(conn, table)}
        assert hub.held(agent.client.client_id, table, mine)[0] == mine, user

    for user in USERS:
        sync(user)
    for n, (op, user, key, owner) in enumerate(ops):
        conn = clients[user][0]
        if op == "insert":
            conn.execute(f"INSERT OR REPLACE INTO {table} (id, owner, body) VALUES (?, ?, ?)",
                         (key, owner, f"{user} {n}"))
        elif op == "update":
            conn.execute(f"UPDATE {table} SET owner = ?, body = ? WHERE id = ?",
                         (owner, f"{user} {n}", key))
        elif op == "delete":
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (key,))
        elif op == "hub":
            hub.execute(f"INSERT INTO {table} (id, owner, body) VALUES (?, ?, ?) ON CONFLICT "
                        f"(id) DO UPDATE SET owner = excluded.owner, body = excluded.body",
                        (key, owner, f"hub {n}"))
        elif op == "hub-delete":
            hub.execute(f"DELETE FROM {table} WHERE id = ?", (key,))
        else:
            before = {r[0]: r for r in hub.rows(table)}
            sync(user)
            after = {r[0]: r for r in hub.rows(table)}
            for k in set(before) | set(after):
                if before.get(k) != after.get(k):
                    assert before.get(k) is None or before[k][1] == user, (k, before, after)
                    assert after.get(k) is None or after[k][1] == user, (k, before, after)
            assert user_rows(conn, table) == [r for r in hub.rows(table) if r[1] == user]
    # Settling: the first round uploads what is left and may answer with
    # deletes; the next one shows them applied; a key leaves the record two
    # replica claims after that.
    for _ in range(4):
        for user in USERS:
            sync(user)
    for user in USERS:
        conn, agent = clients[user]
        mine = {r[0] for r in user_rows(conn, table)}
        assert user_rows(conn, table) == [r for r in hub.rows(table) if r[1] == user]
        assert hub.held(agent.client.client_id, table, range(1, 7)) == (mine, len(mine)), user
