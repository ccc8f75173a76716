"""The five TableCreationOptions, for a missing and for an existing client table."""
from __future__ import annotations

import pytest

import sqlite_ct
from sqlite_ct.sync import SyncDirection, SyncError, SyncGroup, SyncTable, TableCreationOption as T

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL DEFAULT 'd', n REAL)"
SEED = ("INSERT INTO t VALUES (1, 'hub', 1.5), (2, 'hub2', NULL)",)
HUB_ROWS = [(1, "hub", 1.5), (2, "hub2", None)]


def existing_client(conns, rows=((1, "mine", 0.0), (7, "only mine", 7.0))):
    conn = conns()
    conn.execute(SCHEMA)
    for r in rows:
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", r)
    return conn


@pytest.mark.parametrize("option", list(T))
def test_missing_table_is_created_from_the_server_schema(conns, hub_with, option):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", creation_option=option)])
    if option is T.USE_EXISTING_TABLE_OR_FAIL:
        with pytest.raises(SyncError) as info:
            x.sync()
        assert str(info.value) == ('sqlite-ct sync: table "t" does not exist on the client '
                                   '(TableCreationOption.USE_EXISTING_TABLE_OR_FAIL)')
        return
    x.sync()
    assert user_rows(x.conn, "t") == HUB_ROWS
    cols = x.conn.execute("SELECT name, type, \"notnull\", dflt_value, pk "
                          "FROM pragma_table_info('t') WHERE name NOT LIKE '__sys%'").fetchall()
    assert cols == [("id", "INTEGER", 0, None, 1), ("v", "TEXT", 1, "'d'", 0),
                    ("n", "REAL", 0, None, 0)]
    assert sqlite_ct.is_tracked(x.conn, "t")


def test_create_new_or_fail_with_an_existing_table(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(existing_client(conns), server,
               [SyncTable("t", creation_option=T.CREATE_NEW_TABLE_OR_FAIL)])
    with pytest.raises(SyncError) as info:
        x.sync()
    assert str(info.value) == ('sqlite-ct sync: table "t" already exists on the client '
                               '(TableCreationOption.CREATE_NEW_TABLE_OR_FAIL)')


def test_drop_existing(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    conn = conns()
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, other BLOB)")
    conn.execute("INSERT INTO t VALUES (9, x'00')")
    x = Client(conn, server, [SyncTable("t", creation_option=T.DROP_EXISTING_OR_CREATE_NEW_TABLE)])
    stats = x.sync()
    assert stats.total_changes_uploaded == 0
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == HUB_ROWS


def test_truncate_existing(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(existing_client(conns), server,
               [SyncTable("t", creation_option=T.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE)])
    stats = x.sync()
    assert stats.total_changes_uploaded == 0  # the truncated rows are not deletes to send
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == HUB_ROWS


def test_upload_existing(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(existing_client(conns), server,
               [SyncTable("t", creation_option=T.UPLOAD_EXISTING_OR_CREATE_NEW_TABLE)])
    stats = x.sync()
    # Both rows go up; key 1 clashes with the hub's row and the server wins it.
    assert stats.total_changes_uploaded == 2
    assert [c.type.value for c in stats.conflicts] == ["ClientInsertServerInsert"]
    expected = HUB_ROWS + [(7, "only mine", 7.0)]
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == expected


def test_use_existing(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(existing_client(conns), server,
               [SyncTable("t", creation_option=T.USE_EXISTING_TABLE_OR_FAIL)])
    stats = x.sync()
    assert stats.total_changes_uploaded == 0  # rows from before tracking stay local
    assert user_rows(x.conn, "t") == HUB_ROWS + [(7, "only mine", 7.0)]
    assert user_rows(hub, "t") == HUB_ROWS
    x.conn.execute("UPDATE t SET v = 'edited' WHERE id = 1")  # a later edit is a change
    assert x.sync().total_changes_uploaded == 1
    assert user_rows(hub, "t") == [(1, "edited", 1.5), (2, "hub2", None)]
    # Row 7 never reached the hub: to the server an edit of it is an update of
    # a row it does not have, and by default the server wins.
    x.conn.execute("UPDATE t SET v = 'edited' WHERE id = 7")
    stats = x.sync()
    assert [c.type.value for c in stats.conflicts] == ["ClientUpdateServerDelete"]
    assert user_rows(x.conn, "t") == user_rows(hub, "t")


@pytest.mark.parametrize("option", [T.DROP_EXISTING_OR_CREATE_NEW_TABLE,
                                    T.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE])
def test_reinitialising_refuses_to_discard_unsent_changes(conns, hub_with, option):
    """The Sync Services trap: a table whose anchors were lost looks new, and
    DropExisting silently discarded its unsynced changes."""
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", creation_option=option)])
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (5, 'unsent')")
    x.provider.set_table_received_anchor("t", None)  # the anchor is lost
    with pytest.raises(SyncError) as info:
        x.sync()
    assert str(info.value) == (
        'sqlite-ct sync: table "t" has 1 local change(s) that were never uploaded and '
        f"TableCreationOption.{option.name} would discard them; synchronise it first, or "
        "call accept_changes() to discard them")
    x.provider.accept_changes(["t"])
    x.sync()
    assert user_rows(x.conn, "t") == HUB_ROWS


def test_snapshot_table_existing_is_refreshed(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(existing_client(conns), server,
               [SyncTable("t", SyncDirection.SNAPSHOT, T.CREATE_NEW_TABLE_OR_FAIL)])
    x.sync()
    assert user_rows(x.conn, "t") == HUB_ROWS


def test_reinitialising_a_group_of_tables(conns, hub_with):
    """Two tables of a group reinitialised together: the unsent-changes check
    of the second runs after the first was re-created."""
    from sqlite_ct.sync import SyncGroup
    hub, server = hub_with(SCHEMA, seed=SEED)
    hub.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, w TEXT)")
    group = SyncGroup("g")
    tables = [SyncTable(n, creation_option=T.DROP_EXISTING_OR_CREATE_NEW_TABLE, group=group)
              for n in ("t", "u")]
    x = Client(conns(), server, tables)
    x.sync()
    for n in ("t", "u"):
        x.provider.set_table_received_anchor(n, None)  # both anchors lost
    x.sync()
    assert user_rows(x.conn, "t") == HUB_ROWS


@pytest.mark.parametrize("option", [T.DROP_EXISTING_OR_CREATE_NEW_TABLE,
                                    T.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE])
def test_reinitialising_refuses_when_unsent_changes_cannot_be_counted(conns, hub_with, option):
    """A delete never uploaded whose tombstone was purged by hand: the table's
    unsent changes can no longer be counted (sqlite_ct_changes() refuses the
    expired sent anchor), so re-creating the table refuses instead of finding
    nothing pending and dropping the delete; accept_changes() is the way on."""
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", creation_option=option)])
    x.sync()
    x.conn.execute("DELETE FROM t WHERE id = 2")
    deleted = sqlite_ct.last_committed_csn(x.conn)
    assert sqlite_ct.purge_tombstones(x.conn, "t", up_to_csn=deleted) == 1
    x.provider.set_table_received_anchor("t", None)  # the anchor is lost
    sent = sqlite_ct.get_sent_anchor(x.conn, "t")
    with pytest.raises(SyncError) as info:
        x.sync()
    assert str(info.value) == (
        f'sqlite-ct sync: the local changes of table "t" that were never uploaded cannot be '
        f'counted (anchor {sent} of table "t" is older than its oldest kept change (CSN '
        f"{deleted}): tombstones it needs were purged; reinitialise the replica) and "
        f"TableCreationOption.{option.name} would discard them; call accept_changes() to "
        f"discard them")
    x.provider.accept_changes(["t"])
    x.sync()
    assert user_rows(x.conn, "t") == HUB_ROWS


def test_truncate_existing_keeps_rows_a_local_table_refers_to(conns, hub_with):
    # With foreign keys on, deleting row 7 would cascade to the local-only
    # notes table without a trace: it stays (as a row the hub does not
    # have), the rest of the table is truncated.
    hub, server = hub_with(SCHEMA, seed=SEED)
    conn = existing_client(conns, rows=((1, "mine", 0.0), (7, "noted", 7.0), (8, "x", 8.0)))
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, "
                 "tid INTEGER REFERENCES t(id) ON DELETE CASCADE, note TEXT)")
    conn.execute("INSERT INTO notes VALUES (1, 7, 'keep me')")
    x = Client(conn, server, [SyncTable("t", creation_option=T.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE)])
    stats = x.sync()
    assert stats.total_changes_uploaded == 0
    assert user_rows(conn, "notes") == [(1, 7, "keep me")]
    assert user_rows(conn, "t") == HUB_ROWS + [(7, "noted", 7.0)]
    assert user_rows(hub, "t") == HUB_ROWS


def tracked_before(conns, rows=((1, "mine", 0.0),)):
    """A client table t2 and t tracked and sent before (no received anchor:
    their first sync is still to come)."""
    conn = existing_client(conns, rows)
    conn.execute("CREATE TABLE t2(id INTEGER PRIMARY KEY, v TEXT NOT NULL DEFAULT 'd', n REAL)")
    conn.execute("INSERT INTO t2 VALUES (5, 'old', 5.0)")
    for name in ("t", "t2"):
        sqlite_ct.create_schema(conn, name)
        sqlite_ct.set_sent_anchor(conn, name, sqlite_ct.last_committed_csn(conn))
    return conn


def test_truncating_a_group_checks_every_table_before_writing(conns, hub_with):
    # The change contract refuses to read inside a transaction that wrote in
    # apply mode: the unsent changes of every table are counted before the
    # first one is truncated.
    hub, server = hub_with(SCHEMA, seed=SEED)
    hub.execute("CREATE TABLE t2(id INTEGER PRIMARY KEY, v TEXT NOT NULL DEFAULT 'd', n REAL)")
    g = SyncGroup("g")
    tables = [SyncTable(n, group=g, creation_option=T.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE)
              for n in ("t", "t2")]
    x = Client(tracked_before(conns), server, tables)
    x.sync()
    assert user_rows(x.conn, "t") == HUB_ROWS
    assert user_rows(x.conn, "t2") == []
    y = Client(tracked_before(conns), server, tables)
    y.conn.execute("UPDATE t2 SET v = 'unsent' WHERE id = 5")
    with pytest.raises(SyncError) as info:
        y.sync()
    assert str(info.value) == (
        'sqlite-ct sync: table "t2" has 1 local change(s) that were never uploaded and '
        'TableCreationOption.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE would discard them; '
        'synchronise it first, or call accept_changes() to discard them')
    assert user_rows(y.conn, "t") == [(1, "mine", 0.0)]   # nothing was written


def test_drop_existing_is_refused_while_other_rows_refer_to_the_table(conns, hub_with):
    # DROP TABLE deletes every row first; with foreign keys on that cascades
    # to the tracked notes table, whose deletes the next upload would send.
    hub, server = hub_with(SCHEMA, seed=SEED)
    hub.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, tid INTEGER, note TEXT)")
    hub.execute("INSERT INTO notes VALUES (1, 1, 'on the hub')")
    conn = existing_client(conns, rows=((1, "mine", 0.0),))
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, "
                 "tid INTEGER REFERENCES t(id) ON DELETE CASCADE, note TEXT)")
    x = Client(conn, server, ["notes"])
    x.sync()
    assert user_rows(conn, "notes") == [(1, 1, "on the hub")]
    y = Client(conn, server, [SyncTable("t", creation_option=T.DROP_EXISTING_OR_CREATE_NEW_TABLE)])
    with pytest.raises(SyncError, match='table "t" is not dropped and re-created'):
        y.sync()
    assert user_rows(conn, "notes") == [(1, 1, "on the hub")]
    assert user_rows(conn, "t") == [(1, "mine", 0.0)]
    x.sync()
    assert user_rows(hub, "notes") == [(1, 1, "on the hub")]
    conn.execute("DELETE FROM notes")  # nothing refers to t any more: the drop goes ahead
    y.sync()
    assert user_rows(conn, "t") == user_rows(hub, "t")
