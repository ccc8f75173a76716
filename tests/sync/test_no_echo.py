"""No echo: what a client uploads is not downloaded back to it, and what it
downloads is not uploaded back."""
from __future__ import annotations

import sqlite_ct

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",)


def moved(stats):
    return stats.total_changes_uploaded, stats.total_changes_downloaded


def test_a_second_sync_moves_nothing(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    y = Client(conns(), server, ["t"])
    assert moved(x.sync()) == (0, 3)
    assert moved(x.sync()) == (0, 0)
    x.conn.execute("UPDATE t SET v = 'x' WHERE id = 1")
    x.conn.execute("DELETE FROM t WHERE id = 2")
    x.conn.execute("INSERT INTO t(id, v) VALUES (4, 'd')")
    assert moved(x.sync()) == (3, 0)   # its own uploads do not come back
    assert moved(x.sync()) == (0, 0)
    assert moved(y.sync()) == (0, 3)   # y gets all of it (the delete included)
    assert moved(y.sync()) == (0, 0)
    hub.execute("UPDATE t SET v = 'hub' WHERE id = 3")
    assert moved(x.sync()) == (0, 1)
    assert moved(x.sync()) == (0, 0)
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(1, "x"), (3, "hub"), (4, "d")]


def test_downloaded_rows_are_not_local_changes_but_later_edits_are(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    hub.execute("DELETE FROM t WHERE id = 3")
    hub.execute("UPDATE t SET v = 'B' WHERE id = 2")
    x.sync()
    sent = x.provider.get_table_sent_anchor("t")
    assert len(sqlite_ct.enumerate_changes(x.conn, "t", sent)) == 0
    assert x.conn.execute("SELECT count(*) FROM __sysOCSDeletedRows").fetchone()[0] == 0
    x.conn.execute("UPDATE t SET v = 'edited' WHERE id = 2")
    assert [r["v"] for r in sqlite_ct.enumerate_changes(x.conn, "t", sent).updates] == ["edited"]
    assert moved(x.sync()) == (1, 0)
    assert user_rows(hub, "t") == [(1, "a"), (2, "edited")]


def test_a_delete_before_the_clients_own_reinsert_is_not_sent_to_it(conns, hub_with):
    """The hub deletes a key, then the client re-inserts it: the client's
    download must not carry the older delete (its own insert is left out)."""
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    hub.execute("DELETE FROM t WHERE id = 1")
    x.conn.execute("DELETE FROM t WHERE id = 1")
    x.conn.execute("INSERT INTO t(id, v) VALUES (1, 'again')")
    x.sync()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [(1, "again"), (2, "b"), (3, "c")]


def test_a_portable_mode_client_table_is_refused_until_switched_to_native(conns, hub_with):
    """Portable triggers have no apply mode: downloaded rows would be sent
    back as local changes (and could overwrite a newer hub version), so sync
    refuses the table and says how to switch; pending changes survive."""
    from sqlite_ct.sync import SyncError
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.conn.execute(SCHEMA)
    sqlite_ct.create_schema(x.conn, "t", mode="portable")
    x.conn.execute("INSERT INTO t(id, v) VALUES (9, 'mine')")
    try:
        x.sync()
    except SyncError as exc:
        assert str(exc) == (
            'sqlite-ct sync: table "t" is tracked in portable mode, which cannot tell rows '
            'applied by sync from local changes; switch it to native mode with '
            'sqlite_ct.create_schema(conn, "t") (its pending changes are kept)')
    else:
        raise AssertionError("a portable-mode table was synchronised")
    assert user_rows(hub, "t") == [(1, "a"), (2, "b"), (3, "c")]
    sqlite_ct.create_schema(x.conn, "t")
    assert moved(x.sync())[0] == 1
    assert moved(x.sync()) == (0, 0)   # nothing applied comes back as a change
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [
        (1, "a"), (2, "b"), (3, "c"), (9, "mine")]


def test_a_portable_mode_hub_table_is_refused(conns):
    from sqlite_ct.sync import ServerSyncProvider, SyncError
    hub = conns()
    hub.execute(SCHEMA)
    sqlite_ct.create_schema(hub, "t", mode="portable")
    x = Client(conns(), ServerSyncProvider(hub), ["t"])
    try:
        x.sync()
    except SyncError as exc:
        assert 'table "t" is tracked in portable mode' in str(exc)
    else:
        raise AssertionError("a portable-mode hub table was served")
