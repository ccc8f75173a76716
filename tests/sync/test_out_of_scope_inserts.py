"""Move-outs go only to clients that may hold the row: a row inserted on the
hub outside a client's filter since its last download never reached it, so
its key is not sent to it as a delete. Rows the client may hold (older rows,
its own uploads) still get their move-out."""
from __future__ import annotations

from sqlite_ct.sync import SyncStage

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE notes(id INTEGER PRIMARY KEY, region TEXT, body TEXT)"
FILTER = {"notes": "region = :r"}


def setup(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=("INSERT INTO notes VALUES (1, 'n', 'old n'), "
                                         "(2, 's', 'old s')",), filters=FILTER)
    north = Client(conns(), server, ["notes"], parameters={"r": "n"})
    south = Client(conns(), server, ["notes"], parameters={"r": "s"})
    north.sync()
    south.sync()
    return hub, server, north, south


def test_inserts_outside_the_scope_send_no_deletes(conns, hub_with):
    hub, server, north, south = setup(conns, hub_with)
    hub.execute("WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 109) "
                "INSERT INTO notes(id, region, body) SELECT i, 's', 'new s' FROM n")
    hub.execute("INSERT INTO notes(id, region, body) VALUES (200, 'n', 'new n')")
    # One in-scope change, one change downloaded (there were 101).
    assert north.sync().total_changes_downloaded == 1
    assert south.sync().total_changes_downloaded == 100
    south.conn.execute("INSERT INTO notes(id, region, body) VALUES (300, 's', 'from south')")
    south.sync()
    assert north.sync().total_changes_downloaded == 0


def test_older_rows_moving_out_still_reach_the_client(conns, hub_with):
    hub, server, north, south = setup(conns, hub_with)
    hub.execute("UPDATE notes SET region = 's' WHERE id = 1")
    north.sync()
    assert user_rows(north.conn, "notes") == []


def test_a_key_deleted_and_inserted_again_outside_the_scope(conns, hub_with):
    hub, server, north, south = setup(conns, hub_with)
    hub.execute("DELETE FROM notes WHERE id = 1")
    hub.execute("INSERT INTO notes(id, region, body) VALUES (1, 's', 'now south')")
    north.sync()
    south.sync()
    assert user_rows(north.conn, "notes") == []
    assert user_rows(south.conn, "notes") == [(1, "s", "now south"), (2, "s", "old s")]


def test_own_upload_moved_out_between_upload_and_download(conns, hub_with):
    """The client's own insert, moved out of its scope by someone else before
    the same sync downloads: the client holds it, so it gets the move-out."""
    hub, server = hub_with(SCHEMA, seed=(), filters=FILTER)

    def move_after_upload(event):
        if event.stage is SyncStage.UPLOADING_CHANGES:
            hub.execute("UPDATE notes SET region = 's' WHERE id = 5")

    north = Client(conns(), server, ["notes"], parameters={"r": "n"})
    north.sync()
    north.conn.execute("INSERT INTO notes(id, region, body) VALUES (5, 'n', 'mine')")
    north.agent.progress = move_after_upload
    north.sync()
    assert user_rows(hub, "notes") == [(5, "s", "mine")]
    assert user_rows(north.conn, "notes") == []


def test_a_losing_insert_of_a_key_the_hub_has_outside_the_scope(conns, hub_with):
    """South inserts key 10 for the north region; the hub got key 10 from
    someone else first: the write is outside south's scope, so the hub refuses
    it, and south must not keep its copy."""
    hub, server, north, south = setup(conns, hub_with)
    hub.execute("INSERT INTO notes(id, region, body) VALUES (10, 'n', 'hub')")
    south.conn.execute("INSERT INTO notes(id, region, body) VALUES (10, 'n', 'south')")
    stats = south.sync()
    assert [(c.type.value, c.error.split(":")[0]) for c in stats.conflicts] == [
        ("ErrorsOccurred", "refused")]
    assert user_rows(south.conn, "notes") == [(2, "s", "old s")]
    assert user_rows(hub, "notes")[-1] == (10, "n", "hub")
