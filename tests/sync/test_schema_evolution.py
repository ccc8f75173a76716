"""Schema changes on a SQLite hub, per direction: a downloading or snapshot
client table takes the hub's new columns; an upload-only one keeps its own and
its uploads leave the hub's new columns alone; a different key or a column of
another type stops the sync with instructions; a new column comes through the
same boundary checks as a first sync's schema."""
from __future__ import annotations

import dataclasses

import pytest

from sqlite_ct.sync import (ColumnSchema, ConflictResolver, ConflictType, ResolveAction,
                            ServerSyncProvider, SyncDirection, SyncError, SyncTable,
                            TableCreationOption)

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b')",)


def names(conn, table="t"):
    return [r[0] for r in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))
            if not r[0].startswith("__sys")]


@pytest.mark.parametrize("direction", [SyncDirection.DOWNLOAD_ONLY, SyncDirection.SNAPSHOT])
def test_download_and_snapshot_tables_take_the_new_column(conns, hub_with, direction):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", direction)])
    x.sync()
    hub.execute("ALTER TABLE t ADD COLUMN n REAL DEFAULT 1.5")
    hub.execute("UPDATE t SET n = -0.25 WHERE id = 2")
    x.sync()
    assert names(x.conn) == ["id", "v", "n"]
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(1, "a", 1.5), (2, "b", -0.25)]


def test_a_pending_download_only_edit_meets_the_hubs_row_as_a_conflict(conns, hub_with):
    """The table is downloaded whole again: a local edit kept as a pending
    change conflicts with the hub's row, and the resolver decides."""
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", SyncDirection.DOWNLOAD_ONLY)],
               conflict_resolver=ConflictResolver(
                   client_update_server_update=ResolveAction.CLIENT_WINS))
    x.sync()
    x.conn.execute("UPDATE t SET v = 'local' WHERE id = 1")
    hub.execute("ALTER TABLE t ADD COLUMN n INTEGER DEFAULT 3")
    stats = x.sync()
    assert [c.type for c in stats.conflicts] == [ConflictType.CLIENT_UPDATE_SERVER_UPDATE]
    assert user_rows(x.conn, "t") == [(1, "local", 3), (2, "b", 3)]


def test_an_upload_only_table_keeps_its_columns_and_leaves_the_hubs_alone(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, [SyncTable("t", SyncDirection.UPLOAD_ONLY)])
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (5, 'new')")
    x.sync()
    hub.execute("ALTER TABLE t ADD COLUMN n INTEGER DEFAULT 3")
    hub.execute("UPDATE t SET n = 4 WHERE id = 2")
    x.conn.execute("UPDATE t SET v = 'edited' WHERE id = 5")
    x.conn.execute("INSERT INTO t(id, v) VALUES (6, 'six')")
    x.sync()
    assert names(x.conn) == ["id", "v"]
    assert user_rows(hub, "t") == [(1, "a", 3), (2, "b", 4), (5, "edited", 3), (6, "six", 3)]


def test_a_different_key_is_refused_with_instructions(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    conn = conns()
    conn.execute("CREATE TABLE t(id INTEGER, v TEXT, PRIMARY KEY(id, v))")
    x = Client(conn, server, [SyncTable(
        "t", creation_option=TableCreationOption.USE_EXISTING_TABLE_OR_FAIL)])
    with pytest.raises(SyncError) as info:
        x.sync()
    assert str(info.value) == (
        'sqlite-ct sync: table "t" has primary key (id) on the hub but (id, v) on the '
        "client; upload the table's changes, then drop the client table "
        "(sqlite_ct.disable_tracking() and DROP TABLE) and synchronise: it is created again "
        "from the hub's schema")


def test_a_column_of_another_affinity_is_refused(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    conn = conns()
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    x = Client(conn, server, [SyncTable(
        "t", creation_option=TableCreationOption.USE_EXISTING_TABLE_OR_FAIL)])
    with pytest.raises(SyncError, match='column "v" of table "t" is TEXT on the hub but BLOB '
                                        'on the client'):
        x.sync()
    # The same affinity under another spelling is no difference.
    other = conns()
    other.execute("CREATE TABLE t(id INT PRIMARY KEY, v VARCHAR(20))")
    y = Client(other, server, [SyncTable(
        "t", creation_option=TableCreationOption.USE_EXISTING_TABLE_OR_FAIL)])
    y.sync()
    assert user_rows(other, "t") == [(1, "a"), (2, "b")]


class NewColumn(ServerSyncProvider):
    """A hub (or a man in the middle) describing a new column of its own."""

    def __init__(self, conn, column):
        super().__init__(conn)
        self.column = column

    def describe_schema(self, tables):
        schema = super().describe_schema(tables)
        return dataclasses.replace(schema, tables={
            name: dataclasses.replace(ts, columns=ts.columns + (self.column,))
            for name, ts in schema.tables.items()})


@pytest.mark.parametrize("column, message", [
    (ColumnSchema("w", "TEXT", False, "1); CREATE TABLE evil(x); CREATE TABLE u(y DEFAULT (2"),
     "which is not a literal"),
    (ColumnSchema("w", "TEXT); CREATE TABLE evil(x", False, None), "which is not a type name"),
    (ColumnSchema("__sysChangeTxBsn", "INTEGER", False, None), "malformed column"),
    (ColumnSchema("w", "TEXT", False, "CURRENT_TIMESTAMP"), "DEFAULT CURRENT_TIMESTAMP"),
])
def test_a_new_column_passes_the_schema_checks(conns, hub_with, column, message):
    hub, _ = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), NewColumn(hub, column), ["t"])
    x.agent.server.describe_schema = ServerSyncProvider.describe_schema.__get__(x.agent.server)
    x.sync()
    del x.agent.server.describe_schema
    with pytest.raises(SyncError, match=message):
        x.sync()
    assert names(x.conn) == ["id", "v"]
    assert [r[0] for r in x.conn.execute(
        "SELECT name FROM sqlite_schema WHERE name IN ('evil', 'u')")] == []


def test_an_odd_column_name_is_quoted(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    odd = 'x"); DROP TABLE t; --'
    hub.execute(f'ALTER TABLE t ADD COLUMN "{odd.replace(chr(34), chr(34) * 2)}" TEXT '
                f"DEFAULT 'it''s'")
    x.sync()
    assert names(x.conn) == ["id", "v", odd]
    assert user_rows(x.conn, "t") == [(1, "a", "it's"), (2, "b", "it's")]


def test_reinitialise_takes_the_new_column_too(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (7, 'unsent')")
    hub.execute("ALTER TABLE t ADD COLUMN n INTEGER")
    hub.execute("UPDATE t SET n = 8 WHERE id = 1")
    x.agent.reinitialise()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [
        (1, "a", 8), (2, "b", None), (7, "unsent", None)]


class AltersMidSync(ServerSyncProvider):
    """A hub whose table gains a column between the comparison and the
    download of a sync (another application's migration)."""

    def __init__(self, conn):
        super().__init__(conn)
        self.migrate = False

    def get_changes(self, request):
        if self.migrate:
            self.migrate = False
            self.conn.execute("ALTER TABLE t ADD COLUMN n INTEGER DEFAULT 6")
            self.conn.execute("UPDATE t SET n = 9 WHERE id = 2")
        return super().get_changes(request)


def test_a_column_added_during_a_sync_is_taken_by_the_next(conns, hub_with):
    hub, _ = hub_with(SCHEMA, seed=SEED)
    server = AltersMidSync(hub)
    x = Client(conns(), server, ["t"])
    x.sync()
    server.migrate = True
    with pytest.raises(SyncError) as info:
        x.sync()
    assert str(info.value) == ("sqlite-ct sync: table \"t\" on the client has no column 'n'; "
                               "synchronise again: a sync adds the hub's new columns")
    x.sync()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(1, "a", 6), (2, "b", 9)]
