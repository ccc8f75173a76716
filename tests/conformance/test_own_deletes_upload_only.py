"""On an upload-only table, an own delete the hub's foreign key refuses is
reported (a deferred conflict), as the same delete as a plain delete is."""
from sqlite_ct.sync import SyncDirection, SyncGroup, SyncTable

G = SyncGroup("g")


def setup(hub, client_of):
    if hub.kind == "sqlite":
        hub.execute("PRAGMA foreign_keys = ON")
    hub.execute("CREATE TABLE p (id integer PRIMARY KEY, body text)")
    hub.execute("CREATE TABLE c (id integer PRIMARY KEY, pid integer REFERENCES p (id), "
                "body text)")
    hub.execute("INSERT INTO p (id, body) VALUES (1, 'seed')")
    server = hub.server()
    a, sync_a = client_of(server, [SyncTable("p", group=G,
                                             direction=SyncDirection.UPLOAD_ONLY)])
    sync_a.synchronize()
    a.execute("CREATE TABLE IF NOT EXISTS p (id integer PRIMARY KEY, body text)")
    return a, sync_a


def test_plain_delete_refused_is_reported(hub, client_of):
    a, sync_a = setup(hub, client_of)
    a.execute("INSERT INTO p (id, body) VALUES (4, 'mine')")
    sync_a.synchronize()
    hub.execute("INSERT INTO c (id, pid, body) VALUES (40, 4, 'child')")
    a.execute("DELETE FROM p WHERE id = 4")
    stats = sync_a.synchronize()
    assert (4, "mine") in hub.rows("p")
    assert stats.upload_changes_failed == 1 and stats.conflicts


def test_own_delete_refused_is_reported(hub, client_of):
    a, sync_a = setup(hub, client_of)
    a.execute("INSERT INTO p (id, body) VALUES (4, 'mine')")
    a.execute("BEGIN")
    sync_a.synchronize()
    a.execute("ROLLBACK")
    hub.execute("INSERT INTO c (id, pid, body) VALUES (40, 4, 'child')")
    a.execute("DELETE FROM p WHERE id = 4")
    stats = sync_a.synchronize()
    assert (4, "mine") in hub.rows("p")
    assert stats.conflicts, "the hub kept the row the client deleted; nothing reported"
