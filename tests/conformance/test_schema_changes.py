"""Schema changes on the hub, on the SQLite hub and on the PostgreSQL hub
alike: a column added on the hub reaches every client on its next sync, with
the hub's values of the rows the client holds; other changes stop the sync
with an error that says what to do."""
import pytest

import sqlite_ct

from pg_fixtures import user_rows
from sqlite_ct.sync import SyncError

SCHEMA = "CREATE TABLE t (id integer PRIMARY KEY, owner text, v text)"


@pytest.fixture
def table(hub):
    hub.execute(SCHEMA)
    hub.execute("INSERT INTO t (id, owner, v) VALUES (1, 'ann', 'one'), (2, 'bob', 'two')")
    return hub


def columns(conn, table="t"):
    """(name, default) of a client table's user columns."""
    return [(r[1], r[4]) for r in conn.execute(f'PRAGMA table_info("{table}")')
            if not r[1].startswith("__sys")]


def test_a_column_added_on_the_hub_reaches_clients_with_its_values(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    b, sync_b = client_of(server, ["t"])
    sync_a.synchronize()
    sync_b.synchronize()
    # Unsent local work of a, made before it knew of the new column.
    a.execute("INSERT INTO t (id, owner, v) VALUES (3, 'ann', 'from a')")
    a.execute("UPDATE t SET v = 'edited by a' WHERE id = 1")
    hub.execute("ALTER TABLE t ADD COLUMN qty integer DEFAULT 5")
    # ADD COLUMN stamps no row: row 1 was never changed on the hub since and
    # must still arrive with the hub's value.
    hub.execute("UPDATE t SET qty = 7 WHERE id = 2")
    sync_a.synchronize()
    assert columns(a) == [("id", None), ("owner", None), ("v", None), ("qty", "5")]
    expected = [(1, "ann", "edited by a", 5), (2, "bob", "two", 7), (3, "ann", "from a", 5)]
    # a's update, uploaded without the column, left the hub's value alone.
    assert hub.rows("t") == user_rows(a, "t") == expected
    sync_b.synchronize()
    assert user_rows(b, "t") == expected
    # Tracking goes on through the new column, both ways, incrementally.
    a.execute("UPDATE t SET qty = 9 WHERE id = 2")
    stats = sync_a.synchronize()
    assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (1, 0)
    hub.execute("UPDATE t SET qty = 11 WHERE id = 3")
    assert sync_b.synchronize().total_changes_downloaded == 2
    expected = [(1, "ann", "edited by a", 5), (2, "bob", "two", 9), (3, "ann", "from a", 11)]
    assert hub.rows("t") == user_rows(b, "t") == expected
    for agent in (sync_a, sync_b):
        agent.synchronize()
        stats = agent.synchronize()
        assert (stats.total_changes_uploaded, stats.total_changes_downloaded) == (0, 0)
    assert user_rows(a, "t") == expected


def test_a_conflict_lost_during_the_upload_comes_back_with_the_new_column(table, client_of):
    """The hub's correction of a rejected upload carries the new column: it
    reaches the client with the download that follows the column's addition."""
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    a.execute("UPDATE t SET v = 'client' WHERE id = 2")
    hub.execute("ALTER TABLE t ADD COLUMN note text")
    hub.execute("UPDATE t SET v = 'hub', note = 'n' WHERE id = 2")
    stats = sync_a.synchronize()
    assert len(stats.conflicts) == 1
    assert hub.rows("t") == user_rows(a, "t") == [(1, "ann", "one", None),
                                                  (2, "bob", "hub", "n")]


def test_a_column_dropped_on_the_hub_stops_uploading_clients(table, client_of):
    hub = table
    server = hub.server()
    a, sync_a = client_of(server, ["t"])
    sync_a.synchronize()
    if hub.kind == "sqlite":
        sqlite_ct.drop_column(hub.conn, "t", "v")
    else:
        hub.execute("ALTER TABLE t DROP COLUMN v")
    with pytest.raises(SyncError) as info:
        sync_a.synchronize()
    assert str(info.value) == (
        "sqlite-ct sync: table \"t\" on the server has no column 'v' (dropped on the hub, "
        "or added on the client only), so the client cannot upload it; add it to the hub "
        "table, or drop it from the client table (sqlite_ct.drop_column())")
    sqlite_ct.drop_column(a, "t", "v")
    a.execute("INSERT INTO t (id, owner) VALUES (5, 'ann')")
    sync_a.synchronize()
    assert hub.rows("t") == user_rows(a, "t") == [(1, "ann"), (2, "bob"), (5, "ann")]
