"""What the hub itself changes while applying an upload (its triggers, ON
DELETE CASCADE) reaches the uploading client too; an INSERT OR REPLACE of an
existing key uploads as an upsert, so an FK-enforcing hub does not cascade it
away."""
from __future__ import annotations

from sqlite_ct.sync import SyncGroup, SyncTable

from .conftest import Client, user_rows

PARENT = "CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)"
CHILD = ("CREATE TABLE child(id INTEGER PRIMARY KEY, "
         "parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE, v TEXT)")


def family(conns, hub_with, groups=True):
    hub, server = hub_with(PARENT, seed=("INSERT INTO parent VALUES (1, 'p1'), (2, 'p2')",))
    hub.execute(CHILD)
    hub.execute("INSERT INTO child VALUES (10, 1, 'a'), (11, 1, 'b'), (20, 2, 'c')")
    hub.execute("PRAGMA foreign_keys = ON")
    g = SyncGroup("g") if groups else None
    tables = [SyncTable("parent", group=g), SyncTable("child", group=g)]
    x = Client(conns(), server, tables)
    y = Client(conns(), server, tables)
    x.sync()
    y.sync()
    return hub, x, y


def test_a_hub_trigger_on_the_uploaded_row_reaches_the_uploader(conns, hub_with):
    hub, server = hub_with("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", seed=())
    hub.execute("CREATE TRIGGER up AFTER INSERT ON t BEGIN "
                "UPDATE t SET v = upper(v) WHERE id = new.id; END")
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (1, 'abc')")
    x.sync()
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(1, "ABC")]
    quiet = x.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)


def test_a_hub_trigger_writing_another_table_reaches_the_uploader(conns, hub_with):
    hub, server = hub_with("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", seed=())
    hub.execute("CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT)")
    hub.execute("CREATE TRIGGER log AFTER INSERT ON t BEGIN "
                "INSERT INTO audit(what) VALUES ('added ' || new.v); END")
    x = Client(conns(), server, ["t", "audit"])   # two groups
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (1, 'abc')")
    x.sync()
    assert user_rows(x.conn, "audit") == user_rows(hub, "audit") == [(1, "added abc")]


def test_a_cascade_on_the_hub_reaches_the_uploader(conns, hub_with):
    hub, x, y = family(conns, hub_with)
    x.conn.execute("DELETE FROM parent WHERE id = 1")   # the client has no FK
    x.sync()
    y.sync()
    assert user_rows(hub, "child") == [(20, 2, "c")]
    for c in (x, y):
        assert user_rows(c.conn, "child") == user_rows(hub, "child")
        assert user_rows(c.conn, "parent") == user_rows(hub, "parent")


def test_insert_or_replace_of_an_existing_key_does_not_cascade(conns, hub_with):
    hub, x, y = family(conns, hub_with)
    x.conn.execute("INSERT OR REPLACE INTO parent(id, name) VALUES (1, 'renamed')")
    stats = x.sync()
    assert stats.total_changes_uploaded == 1
    y.sync()
    assert user_rows(hub, "child") == [(10, 1, "a"), (11, 1, "b"), (20, 2, "c")]
    for c in (x, y):
        assert user_rows(c.conn, "parent") == user_rows(hub, "parent") == [
            (1, "renamed"), (2, "p2")]
        assert user_rows(c.conn, "child") == user_rows(hub, "child")


def test_a_replaced_key_the_hub_deleted_meanwhile_is_inserted(conns, hub_with):
    hub, x, y = family(conns, hub_with)
    hub.execute("DELETE FROM parent WHERE id = 2")
    x.conn.execute("INSERT OR REPLACE INTO parent(id, name) VALUES (2, 'again')")
    x.sync()
    assert user_rows(hub, "parent") == user_rows(x.conn, "parent") == [(1, "p1"), (2, "again")]
