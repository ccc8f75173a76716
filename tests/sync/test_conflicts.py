"""The conflict matrix: every conflict type x every resolution, on the server
(during upload) and on the client (during download); plus merges, retries
that succeed, and the no-conflict cases (a client's own earlier upload)."""
from __future__ import annotations

import pytest

from sqlite_ct.sync import (ApplyAction, ConflictResolver, ConflictType, ResolveAction,
                            SyncError, SyncStage, TableSchema)

from .conftest import Client, user_rows

TYPES = ["cisi", "cusu", "cusd", "cdsu", "error"]
RESOLUTIONS = ["client_wins", "server_wins", "continue", "force", "retry"]
CTYPE = {"cisi": ConflictType.CLIENT_INSERT_SERVER_INSERT,
         "cusu": ConflictType.CLIENT_UPDATE_SERVER_UPDATE,
         "cusd": ConflictType.CLIENT_UPDATE_SERVER_DELETE,
         "cdsu": ConflictType.CLIENT_DELETE_SERVER_UPDATE,
         "error": ConflictType.ERRORS_OCCURRED}
SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT{check})"
NO_BAD = " CHECK (v IS NOT 'bad')"

# The client's and the server's version of each conflict.
CLIENT_EDIT = {
    "cisi": "INSERT INTO t(id, v) VALUES (10, 'client')",
    "cusu": "UPDATE t SET v = 'client' WHERE id = 1",
    "cusd": "UPDATE t SET v = 'client' WHERE id = 1",
    "cdsu": "DELETE FROM t WHERE id = 1",
    "error": "UPDATE t SET v = 'bad' WHERE id = 1",
}
SERVER_EDIT = {
    "cisi": "INSERT INTO t(id, v) VALUES (10, 'server')",
    "cusu": "UPDATE t SET v = 'server' WHERE id = 1",
    "cusd": "DELETE FROM t WHERE id = 1",
    "cdsu": "UPDATE t SET v = 'server' WHERE id = 1",
    "error": "UPDATE t SET v = 'bad' WHERE id = 1",
}
CLIENT_VERSION = {"cisi": [(1, "orig"), (10, "client")], "cusu": [(1, "client")],
                  "cusd": [(1, "client")], "cdsu": []}
SERVER_VERSION = {"cisi": [(1, "orig"), (10, "server")], "cusu": [(1, "server")],
                  "cusd": [], "cdsu": [(1, "server")]}


def resolution(res, calls):
    """(ConflictResolver, handler) for a resolution of the matrix."""
    if res in ("client_wins", "server_wins"):
        action = ResolveAction.CLIENT_WINS if res == "client_wins" else ResolveAction.SERVER_WINS
        return ConflictResolver(action, action, action, action, action), None

    def handler(conflict):
        calls.append(conflict)
        assert conflict.connection is not None
        if res == "continue":
            return ApplyAction.CONTINUE
        if res == "force":
            return ApplyAction.RETRY_WITH_FORCE_WRITE
        return ApplyAction.RETRY_APPLYING_ROW if len(calls) == 1 else ApplyAction.CONTINUE

    fire = ResolveAction.FIRE_EVENT
    return ConflictResolver(fire, fire, fire, fire, fire), handler


def incoming_wins(res, side):
    """Whether the resolution applies the incoming change (the client's on the
    server, the server's on the client)."""
    if res == "force":
        return True
    return res == ("client_wins" if side == "server" else "server_wins")


@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("kind", TYPES)
def test_upload_conflict(conns, hub_with, kind, res):
    calls = []
    resolver, handler = resolution(res, calls)
    hub, server = hub_with(SCHEMA.format(check=NO_BAD), conflict_resolver=resolver,
                           on_apply_change_failed=handler)
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute(CLIENT_EDIT[kind])
    if kind != "error":
        hub.execute(SERVER_EDIT[kind])
    client_wins = incoming_wins(res, "server")
    if kind == "error" and client_wins:
        # Forcing a row the hub's CHECK rejects cannot succeed: after the
        # attempts the sync stops and nothing moves.
        before = user_rows(hub, "t")
        with pytest.raises(SyncError, match="still unresolved after 5 attempts"):
            x.sync()
        assert user_rows(hub, "t") == before
        assert x.provider.get_changes(["t"]).tables[0].updates  # still pending
        return
    stats = x.sync()
    [conflict] = stats.conflicts
    assert conflict.type is CTYPE[kind]
    assert conflict.stage is SyncStage.UPLOADING_CHANGES
    assert conflict.connection is None
    if kind == "error":
        assert "CHECK constraint failed" in conflict.error
        expected = [(1, "orig")]  # the hub kept its row and sent it back
    else:
        expected = (CLIENT_VERSION if client_wins else SERVER_VERSION)[kind]
    assert user_rows(hub, "t") == expected
    assert user_rows(x.conn, "t") == expected
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == \
        ((1, 0) if client_wins else (0, 1))
    if res == "retry":
        assert [c.attempts for c in calls] == [1, 2]
        assert conflict.action is ApplyAction.CONTINUE
    if res in ("continue", "force"):
        assert len(calls) == 1 and calls[0].type is CTYPE[kind]
    after = x.sync()
    assert (after.total_changes_uploaded, after.total_changes_downloaded) == (0, 0)


@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("kind", TYPES)
def test_download_conflict(conns, hub_with, kind, res):
    """The client's change is made while the sync runs, between upload and
    download (a progress callback), so it is pending when the server's
    conflicting change arrives."""
    calls = []
    resolver, handler = resolution(res, calls)
    hub, server = hub_with(SCHEMA.format(check=""))

    def strict(table, schema):  # the client, not the hub, rejects 'bad'
        return TableSchema(schema.name, schema.columns, schema.primary_key,
                           constraints=("CHECK (v IS NOT 'bad')",))

    edit = {"pending": kind != "error"}

    def progress(event):
        if event.stage is SyncStage.UPLOADING_CHANGES and edit["pending"]:
            edit["pending"] = False
            x.conn.execute(CLIENT_EDIT[kind])

    x = Client(conns(), server, ["t"], conflict_resolver=resolver,
               on_apply_change_failed=handler, creating_schema=strict, progress=progress)
    edit["pending"] = False
    x.sync()
    edit["pending"] = kind != "error"
    hub.execute(SERVER_EDIT[kind])
    server_wins = incoming_wins(res, "client")
    if kind == "error" and server_wins:
        with pytest.raises(SyncError, match="still unresolved after 5 attempts"):
            x.sync()
        assert user_rows(x.conn, "t") == [(1, "orig")]
        return
    stats = x.sync()
    [conflict] = stats.conflicts
    assert conflict.type is CTYPE[kind]
    assert conflict.stage is SyncStage.DOWNLOADING_CHANGES
    if kind == "error":
        assert user_rows(x.conn, "t") == [(1, "orig")]
        assert stats.download_changes_failed == 1
        # Nothing pending on either side: the row differs until it changes again.
        again = x.sync()
        assert (again.total_changes_uploaded, again.total_changes_downloaded) == (0, 0)
        assert user_rows(hub, "t") == [(1, "bad")]
        return
    assert user_rows(x.conn, "t") == (SERVER_VERSION if server_wins else CLIENT_VERSION)[kind]
    assert stats.download_changes_failed == (0 if server_wins else 1)
    if kind == "cusu" and handler is not None:
        assert calls[0].client_row == {"id": 1, "v": "client"}
        assert calls[0].server_row == {"id": 1, "v": "server"}
    x.sync()  # uploads what the client kept; the hub (server wins) may answer
    if server_wins:
        final = SERVER_VERSION[kind]
    elif kind == "cusd":
        final = []  # the hub's resolver (server wins) keeps its delete and sends it back
    else:
        final = CLIENT_VERSION[kind]
    assert user_rows(x.conn, "t") == final
    assert user_rows(hub, "t") == final
    quiet = x.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)


def test_own_earlier_upload_is_not_a_conflict(conns, hub_with):
    """The newer server version is this client's own upload (its sent anchor
    was lost, so it uploads again): no conflict, even though the client has
    not downloaded since."""
    hub, server = hub_with(SCHEMA.format(check=""),
                           conflict_resolver=ConflictResolver(*[ResolveAction.FIRE_EVENT] * 5))
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("UPDATE t SET v = 'mine' WHERE id = 1")
    x.conn.execute("INSERT INTO t(id, v) VALUES (2, 'new')")
    sent = x.provider.get_table_sent_anchor("t")
    changes = x.provider.get_changes(["t"])
    from sqlite_ct.sync import Upload
    server.apply_changes(Upload(x.provider.client_id, "t", changes.tables,
                                x.provider.received_anchors(["t"])))
    assert x.provider.get_table_sent_anchor("t") == sent  # as if it died here
    x.conn.execute("UPDATE t SET v = 'mine again' WHERE id = 1")
    stats = x.sync()  # FIRE_EVENT with no handler would raise on any conflict
    assert stats.conflicts == []
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(1, "mine again"), (2, "new")]


def test_server_merge_is_sent_back_to_the_client(conns, hub_with):
    """A handler that edits the client's row and forces it: the merged row is
    written without the client's context, so the same sync downloads it."""
    def merge(conflict):
        conflict.client_row["v"] = conflict.client_row["v"] + "+" + conflict.server_row["v"]
        return ApplyAction.RETRY_WITH_FORCE_WRITE

    hub, server = hub_with(SCHEMA.format(check=""),
                           conflict_resolver=ConflictResolver(*[ResolveAction.FIRE_EVENT] * 5),
                           on_apply_change_failed=merge)
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("UPDATE t SET v = 'c' WHERE id = 1")
    hub.execute("UPDATE t SET v = 's' WHERE id = 1")
    x.sync()
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(1, "c+s")]
    quiet = x.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)


def test_client_merge_is_uploaded(conns, hub_with):
    """A client handler that edits the server's row and retries: the merged row
    is a local change and reaches the hub with the next sync."""
    hub, server = hub_with(SCHEMA.format(check=""))

    def strict(table, schema):
        return TableSchema(schema.name, schema.columns, schema.primary_key,
                           constraints=("CHECK (v IS NOT 'bad')",))

    def fix(conflict):
        assert conflict.type is ConflictType.ERRORS_OCCURRED
        conflict.server_row["v"] = "fixed"
        return ApplyAction.RETRY_APPLYING_ROW

    x = Client(conns(), server, ["t"], creating_schema=strict, on_apply_change_failed=fix)
    x.sync()
    hub.execute("UPDATE t SET v = 'bad' WHERE id = 1")
    stats = x.sync()
    assert stats.conflicts[0].action is ApplyAction.RETRY_APPLYING_ROW
    assert user_rows(x.conn, "t") == [(1, "fixed")]
    x.sync()
    assert user_rows(hub, "t") == [(1, "fixed")]


def test_retry_after_the_handler_fixed_the_data(conns, hub_with):
    """RETRY_APPLYING_ROW re-detects: a handler that removes the hub's row lets
    the client's insert through."""
    def make_room(conflict):
        conflict.connection.execute("DELETE FROM t WHERE id = ?", (conflict.key["id"],))
        return ApplyAction.RETRY_APPLYING_ROW

    hub, server = hub_with(SCHEMA.format(check=""),
                           conflict_resolver=ConflictResolver(*[ResolveAction.FIRE_EVENT] * 5),
                           on_apply_change_failed=make_room)
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (10, 'client')")
    hub.execute("INSERT INTO t(id, v) VALUES (10, 'server')")
    stats = x.sync()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (1, 0)
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(1, "orig"), (10, "client")]


def test_fire_event_without_handler_stops_the_sync(conns, hub_with):
    hub, server = hub_with(SCHEMA.format(check=""),
                           conflict_resolver=ConflictResolver(*[ResolveAction.FIRE_EVENT] * 5))
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("UPDATE t SET v = 'c' WHERE id = 1")
    hub.execute("UPDATE t SET v = 's' WHERE id = 1")
    with pytest.raises(SyncError) as info:
        x.sync()
    assert str(info.value) == (
        'sqlite-ct sync: ClientUpdateServerUpdate conflict on table "t" key {\'id\': 1} on '
        "the server; the conflict resolver says FIRE_EVENT but the provider has no "
        "on_apply_change_failed handler")
    assert user_rows(hub, "t") == [(1, "s")]


def test_unique_value_moving_between_rows_is_not_an_error(conns, hub_with):
    """A UNIQUE value moves to a row that comes first in the batch: the
    set-based statement fails, the row-by-row pass succeeds on its second
    round. (A cycle, two rows swapping values, cannot be applied row by row
    and is reported as ErrorsOccurred.)"""
    hub, server = hub_with("CREATE TABLE u(id INTEGER PRIMARY KEY, code TEXT UNIQUE)", seed=())

    def unique(table, schema):
        return TableSchema(schema.name, schema.columns, schema.primary_key,
                           constraints=("UNIQUE(code)",))

    x = Client(conns(), server, ["u"], creating_schema=unique)
    hub.execute("INSERT INTO u VALUES (1, 'x'), (2, 'a')")
    x.sync()
    hub.execute("BEGIN; UPDATE u SET code = 'c' WHERE id = 2; UPDATE u SET code = 'a' "
                "WHERE id = 1; COMMIT")
    stats = x.sync()
    assert stats.conflicts == [] and stats.download_changes_applied == 2
    assert user_rows(x.conn, "u") == [(1, "a"), (2, "c")]


def test_server_wins_over_a_pending_insert_then_a_local_delete(conns, hub_with):
    """The client's pending insert loses to the server's row; deleting that
    row locally before the next upload must still delete it on the hub (the
    overwrite reset the row's insert stamp, so the delete is not mistaken for
    an insert and delete that never left the client)."""
    hub, server = hub_with(SCHEMA.format(check=""))
    state = {"edit": False}

    def progress(event):
        if event.stage is SyncStage.UPLOADING_CHANGES and state["edit"]:
            state["edit"] = False
            x.conn.execute("INSERT INTO t(id, v) VALUES (10, 'client')")

    x = Client(conns(), server, ["t"], progress=progress)
    x.sync()
    hub.execute("INSERT INTO t(id, v) VALUES (10, 'server')")
    state["edit"] = True
    stats = x.sync()
    assert [c.type for c in stats.conflicts] == [ConflictType.CLIENT_INSERT_SERVER_INSERT]
    x.conn.execute("DELETE FROM t WHERE id = 10")
    x.sync()
    assert user_rows(hub, "t") == user_rows(x.conn, "t") == [(1, "orig")]
