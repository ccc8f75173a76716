"""Reinitialising, rescoping, re-creating and restoring never lose a client's
own uploads nor its unsent changes, and leave no row the hub deleted: the
first download (and a rescope) includes the client's own rows, and
SyncAgent.reinitialise uploads what is pending, then starts the tables over."""
from __future__ import annotations

import os
import shutil

import pytest

from sqlite_ct.sync import (ReinitialiseRequired, ReplicaCopied, ServerSyncProvider, SyncError, SyncGroup,
                            SyncTable, TableCreationOption as T)

from .conftest import Client, connect, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b')",)


def test_reinitialise_brings_back_own_uploads_and_keeps_unsent_changes(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (3, 'mine')")
    x.sync()
    # Something removed rows behind sync's back (another tool, a bad restore).
    x.conn.execute("DELETE FROM t")
    x.provider.accept_changes(["t"])
    # Unsent work: an update, an insert and a delete.
    x.conn.execute("INSERT INTO t(id, v) VALUES (1, 'edited'), (4, 'new')")
    hub.execute("DELETE FROM t WHERE id = 2")
    stats = x.agent.reinitialise("t")
    assert stats.conflicts == []
    assert user_rows(hub, "t") == [(1, "edited"), (3, "mine"), (4, "new")]
    assert user_rows(x.conn, "t") == user_rows(hub, "t")
    quiet = x.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)


def test_reinitialise_keeps_a_pending_delete(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("DELETE FROM t WHERE id = 1")
    x.agent.reinitialise()
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(2, "b")]


def test_reinitialise_a_group_by_name(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    hub.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, w TEXT)")
    g = SyncGroup("g")
    x = Client(conns(), server, [SyncTable("t", group=g), SyncTable("u", group=g)])
    x.sync()
    x.conn.execute("INSERT INTO u(id, w) VALUES (1, 'mine')")
    x.sync()
    x.conn.execute("DELETE FROM u")
    x.provider.accept_changes(["u"])
    x.agent.reinitialise("g")
    assert user_rows(x.conn, "u") == [(1, "mine")]
    with pytest.raises(SyncError) as info:
        x.agent.reinitialise("nope")
    assert str(info.value) == ('sqlite-ct sync: "nope" is neither a table nor a group of '
                               'this SyncAgent')


@pytest.mark.parametrize("option", [T.DROP_EXISTING_OR_CREATE_NEW_TABLE,
                                    T.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE])
def test_recreating_a_table_brings_back_own_uploads(conns, hub_with, option):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", creation_option=option)])
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (3, 'mine')")
    x.sync()
    x.provider.set_table_received_anchor("t", None)  # the anchor is lost
    x.sync()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(1, "a"), (2, "b"), (3, "mine")]


def test_upload_existing_on_a_synced_table_drops_what_the_hub_deleted(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", creation_option=T.UPLOAD_EXISTING_OR_CREATE_NEW_TABLE)])
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (3, 'mine')")
    x.sync()
    x.provider.set_table_received_anchor("t", None)  # the anchor is lost
    hub.execute("DELETE FROM t WHERE id = 2")
    x.conn.execute("INSERT INTO t(id, v) VALUES (4, 'unsent')")
    x.sync()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(1, "a"), (3, "mine"),
                                                              (4, "unsent")]


def test_a_rescope_away_and_back_brings_back_own_rows(conns, hub_with):
    schema = "CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT, body TEXT)"
    hub, server = hub_with(schema, seed=("INSERT INTO notes VALUES (1, 'bob', 'b')",),
                           filters={"notes": "owner = :user"})
    x = Client(conns(), server, ["notes"], parameters={"user": "alice"})
    x.sync()
    x.conn.execute("INSERT INTO notes(id, owner, body) VALUES (2, 'alice', 'mine')")
    x.sync()
    x.agent.parameters = {"user": "bob"}
    x.sync()
    assert user_rows(x.conn, "notes") == [(1, "bob", "b")]
    x.agent.parameters = {"user": "alice"}
    x.sync()
    assert user_rows(x.conn, "notes") == [(2, "alice", "mine")]


def test_a_client_restored_from_a_backup_gets_back_its_later_uploads(conns, hub_with,
                                                                     tmp_path):
    hub, server = hub_with(SCHEMA, seed=SEED)
    path = str(tmp_path / "x.db")
    x = Client(connect(path), server, ["t"])
    x.sync()
    x.conn.close()
    shutil.copy(path, path + ".bak")
    x = Client(connect(path), server, ["t"])
    x.conn.execute("INSERT INTO t(id, v) VALUES (3, 'after the backup')")
    x.sync()
    x.conn.close()
    os.replace(path + ".bak", path)
    x = Client(connect(path), server, ["t"])
    x.conn.execute("UPDATE t SET v = 'unsent' WHERE id = 1")
    # The hub has seen a later replica generation of this client id.
    with pytest.raises(ReplicaCopied):
        x.sync()
    x.agent.reidentify()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [
        (1, "unsent"), (2, "b"), (3, "after the backup")]
    x.conn.close()


def test_after_a_hub_restore_reinitialise_converges(conns, tmp_path):
    path = str(tmp_path / "hub.db")
    hub = connect(path)
    hub.execute(SCHEMA)
    hub.execute(SEED[0])
    x = Client(conns(), ServerSyncProvider(hub), ["t"])
    y = Client(conns(), ServerSyncProvider(hub), ["t"])
    x.sync()
    y.sync()
    hub.close()
    shutil.copy(path, path + ".bak")
    hub = connect(path)
    hub.execute("INSERT INTO t(id, v) VALUES (10, 'lost by the restore')")
    for c in (x, y):
        c.agent.server = ServerSyncProvider(hub)
        c.sync()
    hub.close()
    os.replace(path + ".bak", path)
    hub = connect(path)
    for c in (x, y):
        c.agent.server = ServerSyncProvider(hub)
    hub.execute("INSERT INTO t(id, v) VALUES (20, 'after the restore')")
    hub.execute("INSERT INTO t(id, v) VALUES (21, 'after the restore')")
    hub.execute("UPDATE t SET v = 'hub after the restore' WHERE id = 2")
    # Row 1 is as x last saw it; row 2 changed on the hub since: a conflict
    # (the server wins by default).
    x.conn.execute("UPDATE t SET v = 'x unsent' WHERE id = 1")
    x.conn.execute("UPDATE t SET v = 'x loses' WHERE id = 2")
    for c in (x, y):
        with pytest.raises(ReinitialiseRequired):
            c.sync()
        c.agent.reinitialise()
    x.sync()
    assert user_rows(hub, "t") == [(1, "x unsent"), (2, "hub after the restore"),
                                   (20, "after the restore"),
                                   (21, "after the restore")]
    for c in (x, y):
        assert user_rows(c.conn, "t") == user_rows(hub, "t")
    hub.close()


def test_reinitialise_with_foreign_keys_drops_a_parent_once_its_children_are_gone(conns, hub_with):
    # With foreign keys on, a row other rows refer to is kept (deleting it
    # would cascade to them without tombstones); the parent table comes first
    # in the group, so its rows are dropped in a second round, once the child
    # table has dropped the rows that referred to them.
    hub, server = hub_with("CREATE TABLE p(id INTEGER PRIMARY KEY, v TEXT)",
                           seed=("INSERT INTO p VALUES (1, 'a'), (2, 'b')",))
    hub.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, pid INTEGER, v TEXT)")
    hub.execute("INSERT INTO c VALUES (10, 1, 'x'), (20, 2, 'y')")
    conn = conns()
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE p(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE TABLE c(id INTEGER PRIMARY KEY, "
                 "pid INTEGER REFERENCES p(id) ON DELETE CASCADE, v TEXT)")
    g = SyncGroup("g")
    x = Client(conn, server, [SyncTable("p", group=g), SyncTable("c", group=g)])
    x.sync()
    assert user_rows(conn, "c") == [(10, 1, "x"), (20, 2, "y")]
    hub.execute("DELETE FROM c WHERE id = 20")
    hub.execute("DELETE FROM p WHERE id = 2")
    conn.execute("INSERT INTO c(id, pid, v) VALUES (11, 1, 'unsent')")
    x.provider.reinitialise(["p", "c"], server.get_schema(["p", "c"]))
    x.sync()
    assert user_rows(conn, "p") == user_rows(hub, "p") == [(1, "a")]
    assert user_rows(conn, "c") == user_rows(hub, "c") == [(10, 1, "x"), (11, 1, "unsent")]
