"""An own delete the hub's foreign key refuses (another client's child refers
to the row): the hub keeps the parent, the client gets it back (a
correction) and is told (a conflict)."""
from pg_fixtures import user_rows
from sqlite_ct.sync import SyncTable, SyncGroup

G = SyncGroup("g")


def test_own_delete_refused_by_a_foreign_key_converges(hub, client_of):
    if hub.kind == "sqlite":
        hub.execute("PRAGMA foreign_keys = ON")
    hub.execute("CREATE TABLE p (id integer PRIMARY KEY, body text)")
    hub.execute("CREATE TABLE c (id integer PRIMARY KEY, pid integer REFERENCES p (id), "
                "body text)")
    server = hub.server()
    tables = [SyncTable("p", group=G), SyncTable("c", group=G)]
    a, sync_a = client_of(server, tables)
    b, sync_b = client_of(server, tables)
    sync_a.synchronize()
    sync_b.synchronize()
    a.execute("INSERT INTO p (id, body) VALUES (4, 'mine')")
    a.execute("BEGIN")
    sync_a.synchronize()
    a.execute("ROLLBACK")
    sync_b.synchronize()
    b.execute("INSERT INTO c (id, pid, body) VALUES (40, 4, 'child')")
    sync_b.synchronize()
    a.execute("DELETE FROM p WHERE id = 4")
    stats = sync_a.synchronize()
    sync_a.synchronize()
    assert hub.rows("p") == [(4, "mine")]
    assert user_rows(a, "c") == [(40, 4, "child")]
    # Converged, or reported.
    assert user_rows(a, "p") == [(4, "mine")] or stats.conflicts
