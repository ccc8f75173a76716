"""A change that fails on either side (a constraint the row violates) with no
handler to decide does not block the sync: it is skipped, counted, and kept
in the client's durable conflict inbox with both images and the reason, to be
listed and resolved later."""
from __future__ import annotations

import pytest

from sqlite_ct.sync import ConflictType, SyncError, SyncStage, TableSchema

from .conftest import Client, connect, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b')",)


def strict(table, schema):
    return TableSchema(schema.name, schema.columns, schema.primary_key,
                       constraints=("CHECK (v IS NOT 'bad')",))


def test_a_row_the_client_cannot_apply_is_deferred_not_blocking(conns, hub_with, tmp_path):
    hub, server = hub_with(SCHEMA, seed=SEED)
    path = str(tmp_path / "x.db")
    x = Client(connect(path), server, ["t"], creating_schema=strict)
    x.sync()
    hub.execute("UPDATE t SET v = 'bad' WHERE id = 1")
    hub.execute("UPDATE t SET v = 'good' WHERE id = 2")
    stats = x.sync()
    assert (stats.download_changes_applied, stats.download_changes_failed) == (1, 1)
    assert stats.conflicts_deferred == 1 and stats.conflicts[0].deferred
    assert user_rows(x.conn, "t") == [(1, "a"), (2, "good")]
    hub.execute("INSERT INTO t(id, v) VALUES (3, 'later')")
    x.sync()  # not blocked
    assert user_rows(x.conn, "t") == [(1, "a"), (2, "good"), (3, "later")]
    x.conn.close()
    x = Client(connect(path), server, ["t"], creating_schema=strict)  # survives a restart
    (c,) = x.provider.conflicts()
    assert (c.type, c.stage, c.table, c.key) == (ConflictType.ERRORS_OCCURRED,
                                                 SyncStage.DOWNLOADING_CHANGES, "t", {"id": 1})
    assert c.server_row == {"id": 1, "v": "bad"} and c.client_row == {"id": 1, "v": "a"}
    assert "CHECK constraint failed" in c.error
    x.provider.resolve_conflict(c.id, dict(c.server_row, v="fixed"))
    assert x.provider.conflicts() == []
    x.sync()
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [
        (1, "fixed"), (2, "good"), (3, "later")]
    x.conn.close()


def test_a_row_the_hub_rejects_is_kept_on_the_client(conns, hub_with):
    hub, server = hub_with("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT "
                           "CHECK (v IS NOT 'bad'))", seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("UPDATE t SET v = 'bad' WHERE id = 1")
    x.conn.execute("UPDATE t SET v = 'fine' WHERE id = 2")
    stats = x.sync()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (1, 1)
    assert stats.conflicts_deferred == 1
    # The hub kept its version, and so does the client now; its change is in
    # the inbox, not lost.
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(1, "a"), (2, "fine")]
    (c,) = x.provider.conflicts("t")
    assert c.stage is SyncStage.UPLOADING_CHANGES
    assert c.client_row == {"id": 1, "v": "bad"} and c.server_row == {"id": 1, "v": "a"}
    x.provider.resolve_conflict(c.id, dict(c.client_row, v="not so bad"))
    x.sync()
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(1, "not so bad"), (2, "fine")]


def test_resolving_by_delete_or_by_keeping_the_table(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"], creating_schema=strict)
    x.sync()
    hub.execute("UPDATE t SET v = 'bad'")
    x.sync()
    first, second = x.provider.conflicts()
    x.provider.resolve_conflict(first.id, delete=True)
    x.provider.resolve_conflict(second.id)
    assert x.provider.conflicts() == []
    x.sync()
    assert user_rows(hub, "t") == [(2, "bad")]
    with pytest.raises(SyncError) as info:
        x.provider.resolve_conflict(first.id)
    assert str(info.value) == f"sqlite-ct sync: no deferred conflict {first.id} in the inbox"


def test_deleting_a_key_the_client_does_not_hold_is_refused(conns, hub_with):
    """A hub row the client could not insert: resolving it by a delete would
    upload nothing and leave the hub's row, so the replicas would differ for
    good without an error."""
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"], creating_schema=strict)
    x.sync()
    hub.execute("INSERT INTO t(id, v) VALUES (5, 'bad')")
    x.sync()
    (c,) = x.provider.conflicts()
    assert (c.key, c.client_row) == ({"id": 5}, None)
    with pytest.raises(SyncError) as info:
        x.provider.resolve_conflict(c.id, delete=True)
    assert str(info.value) == (
        f'sqlite-ct sync: conflict {c.id}: table "t" key {{\'id\': 5}} is not on the client, '
        f"so deleting it is no change to upload and the hub would keep its row; write the "
        f"hub's row instead (resolve_conflict(id, conflict.server_row)), sync, then delete it")
    assert [e.id for e in x.provider.conflicts()] == [c.id]
    x.provider.resolve_conflict(c.id, dict(c.server_row, v="good"))
    x.sync()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(1, "a"), (2, "b"), (5, "good")]


def test_blobs_survive_the_inbox(conns, hub_with):
    hub, server = hub_with("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", seed=())
    x = Client(conns(), server, ["t"], creating_schema=lambda t, s: TableSchema(
        s.name, s.columns, s.primary_key, constraints=("CHECK (length(v) < 3)",)))
    x.sync()
    hub.execute("INSERT INTO t(id, v) VALUES (1, x'00ff00ff')")
    x.sync()
    (c,) = x.provider.conflicts()
    assert c.server_row == {"id": 1, "v": b"\x00\xff\x00\xff"}


def test_a_newer_conflict_of_the_same_row_replaces_the_older(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"], creating_schema=strict)
    x.sync()
    hub.execute("UPDATE t SET v = 'bad' WHERE id = 1")
    x.sync()
    hub.execute("UPDATE t SET v = 'bad' WHERE id = 1")  # changed again, fails again
    x.sync()
    (c,) = x.provider.conflicts()
    assert c.server_row == {"id": 1, "v": "bad"}


def test_a_child_before_its_parent_is_applied_once_the_parent_arrives(conns, hub_with):
    """Client-side foreign keys, parent and child in separate groups, the
    child's group first: the child is deferred, then retried after the
    parent's group, in the same sync."""
    from sqlite_ct.sync import SyncTable
    hub, server = hub_with("CREATE TABLE child(id INTEGER PRIMARY KEY, parent_id INTEGER, "
                           "v TEXT)", seed=())
    hub.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)")

    def fk(table, schema):
        if schema.name == "child":
            return TableSchema(schema.name, schema.columns, schema.primary_key,
                               constraints=("FOREIGN KEY(parent_id) REFERENCES parent(id)",))
        return schema

    conn = conns()
    conn.execute("PRAGMA foreign_keys = ON")
    x = Client(conn, server, [SyncTable("child"), SyncTable("parent")], creating_schema=fk)
    x.sync()
    hub.execute("INSERT INTO parent(id, name) VALUES (1, 'p')")
    hub.execute("INSERT INTO child(id, parent_id, v) VALUES (10, 1, 'c')")
    stats = x.sync()
    assert stats.conflicts_deferred == 1
    assert x.provider.conflicts() == []
    assert user_rows(x.conn, "child") == [(10, 1, "c")]


def test_a_later_server_version_that_applies_clears_the_entry(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"], creating_schema=strict)
    x.sync()
    hub.execute("UPDATE t SET v = 'bad' WHERE id = 1")
    x.sync()
    assert len(x.provider.conflicts()) == 1
    hub.execute("UPDATE t SET v = 'good' WHERE id = 1")
    x.sync()
    assert x.provider.conflicts() == []
    assert user_rows(x.conn, "t") == [(1, "good"), (2, "b")]


def test_a_deferred_row_with_a_local_change_waits_for_the_user(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"], creating_schema=strict)
    x.sync()
    hub.execute("UPDATE t SET v = 'bad' WHERE id = 1")
    x.sync()
    x.conn.execute("UPDATE t SET v = 'local' WHERE id = 1")
    assert x.provider.retry_deferred(["t"]) == 0
    assert len(x.provider.conflicts()) == 1


def deferred_by_a_unique_collision(conns, hub_with):
    """A client whose table is UNIQUE on v: the hub's (1, 'c') collides with
    the client's own (2, 'c') and is deferred. Returns (hub, client)."""
    def unique(table, schema):
        return TableSchema(schema.name, schema.columns, schema.primary_key,
                           constraints=("UNIQUE (v)",))
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"], creating_schema=unique)
    x.sync()
    x.conn.execute("UPDATE t SET v = 'c' WHERE id = 2")
    hub.execute("UPDATE t SET v = 'c' WHERE id = 1")
    assert x.sync().conflicts_deferred == 1
    return hub, x


def test_a_deferred_row_whose_key_the_user_deleted_waits_for_the_user(conns, hub_with):
    """The deferred server row's key was deleted locally since: writing the
    row back in apply mode would drop the pending delete without a word (a
    tombstone under a live key is no delete), so the entry waits."""
    hub, x = deferred_by_a_unique_collision(conns, hub_with)
    x.conn.execute("DELETE FROM t WHERE id = 1")
    x.conn.execute("UPDATE t SET v = 'd' WHERE id = 2")  # the row no longer collides
    assert x.provider.retry_deferred(["t"]) == 0
    assert user_rows(x.conn, "t") == [(2, "d")]
    (c,) = x.provider.conflicts()
    assert c.key == {"id": 1} and c.server_row == {"id": 1, "v": "c"}
    x.sync()  # the delete is uploaded, not lost
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(2, "d")]


def test_an_uploaded_change_supersedes_the_deferred_server_row(conns, hub_with):
    """Once the hub applied the client's later change of the key, the older
    server row in the inbox is stale: retried, it would overwrite the
    client's row in apply mode while the hub keeps the client's version."""
    hub, x = deferred_by_a_unique_collision(conns, hub_with)
    x.conn.execute("UPDATE t SET v = 'e' WHERE id = 1")
    x.conn.execute("UPDATE t SET v = 'd' WHERE id = 2")
    x.sync()
    assert x.provider.conflicts() == []
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(1, "e"), (2, "d")]
