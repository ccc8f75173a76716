"""`sqlite-ct conflicts` and `sqlite-ct resolve` by client transaction, as
`python3 -m sqlite_ct` subprocesses against real client and hub files: the
inbox shows each entry's transaction and filters by it, and `resolve
--transaction N` settles every entry of it as one local transaction."""
import json

import pytest

import sqlite_ct
from sqlite_ct.sync import Conflict, ConflictType, SyncStage
from sqlite_ct.sync.client import store_conflicts

from test_cli import connect, requires_sync, run
from test_cli_recovery import hub, rows, synced, write  # noqa: F401 (fixture)

pytestmark = requires_sync

UP = SyncStage.UPLOADING_CHANGES


def conflict(key, client_row, server_row, transaction, stage=UP):
    return Conflict(ConflictType.ERRORS_OCCURRED, stage, "items", {"id": key}, client_row,
                    server_row, "CHECK constraint failed", deferred=True,
                    transaction=transaction)


@pytest.fixture
def client(tmp_path, hub):  # noqa: F811
    """A client of items (1 apple, 2 pear, 3 plum) whose inbox holds client
    transaction 7 (an update of 1, a delete of 2, an insert of 4), transaction
    9 (an update of 3) and a download of 3, which has none."""
    path = synced(tmp_path, hub)
    conn = connect(path)
    try:
        with conn:
            store_conflicts(conn, [
                conflict(1, {"id": 1, "name": "mine", "data": None},
                         {"id": 1, "name": "apple", "data": b"\x00\xff"}, 7),
                conflict(2, None, {"id": 2, "name": "pear", "data": None}, 7),
                conflict(4, {"id": 4, "name": "new", "data": None}, None, 7),
                conflict(3, {"id": 3, "name": "other", "data": None},
                         {"id": 3, "name": "plum", "data": None}, 9),
                conflict(3, {"id": 3, "name": "other", "data": None},
                         {"id": 3, "name": "plum", "data": None}, None,
                         SyncStage.DOWNLOADING_CHANGES)])
    finally:
        conn.close()
    return path


def ok(*args):
    result = run(*args)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def listed(path, *args):
    return [(c["id"], c["key"]["id"], c["stage"], c["transaction"])
            for c in json.loads(ok("conflicts", path, "--json", *args))["conflicts"]]


def local_bsns(path):
    conn = connect(path)
    try:
        sent = sqlite_ct.get_sent_anchor(conn, "items")
        return {r[0] for r in conn.execute("SELECT change_bsn FROM sqlite_ct_changes(?, ?)",
                                           ("items", sent))}
    finally:
        conn.close()


def test_conflicts_shows_and_filters_by_transaction(client):
    header, _, *lines = ok("conflicts", client).splitlines()
    assert header.split() == ["id", "table", "key", "stage", "transaction", "type", "time",
                              "error"]
    at = header.index("transaction")
    assert [line[at:at + 11].strip() for line in lines] == ["7", "7", "7", "9", ""]
    assert listed(client) == [(1, 1, "UploadingChanges", 7), (2, 2, "UploadingChanges", 7),
                              (3, 4, "UploadingChanges", 7), (4, 3, "UploadingChanges", 9),
                              (5, 3, "DownloadingChanges", None)]
    assert listed(client, "--transaction", "9") == [(4, 3, "UploadingChanges", 9)]
    assert listed(client, "--transaction", "7", "--table", "ITEMS") == listed(client)[:3]
    assert ok("conflicts", client, "--transaction", "8") == (
        "no deferred conflicts of client transaction 8\n")
    result = run("conflicts", client, "--transaction", "x")
    assert result.returncode == 2 and "--transaction: not an integer: 'x'" in result.stderr


def test_keep_local_writes_the_transaction_as_one_local_transaction(client, hub):  # noqa: F811
    assert ok("resolve", client, "--transaction", "7", "--keep-local") == (
        "resolved client transaction 7 (keep-local): 3 conflict(s) written as one local "
        "transaction; the next sync uploads it\n"
        '  conflict 1: wrote items {"id": 1, "name": "mine", "data": null}\n'
        '  conflict 2: deleted items {"id": 2}\n'
        '  conflict 3: wrote items {"id": 4, "name": "new", "data": null}\n')
    assert rows(client) == [(1, "mine", None), (3, "plum", None), (4, "new", None)]
    assert len(local_bsns(client)) == 1
    assert listed(client) == [(4, 3, "UploadingChanges", 9), (5, 3, "DownloadingChanges", None)]
    ok("sync", client, hub)
    assert rows(hub) == rows(client)


def test_take_server_as_json(client):
    """An upload's conflicts: the hub kept its version and the client has it
    (or gets it with its next sync), so taking the server's side writes
    nothing stale back (a newer hub version would be overwritten)."""
    write(client, "INSERT INTO items(id, name) VALUES (4, 'new')")
    before = rows(client)
    document = json.loads(ok("resolve", client, "--transaction", "7", "--take-server",
                             "--json"))
    assert document == {
        "database": client, "transaction": 7, "resolution": "take-server",
        "conflicts": [
            {"id": 1, "table": "items", "key": {"id": 1}, "deleted": False, "row": None},
            {"id": 2, "table": "items", "key": {"id": 2}, "deleted": False, "row": None},
            {"id": 3, "table": "items", "key": {"id": 4}, "deleted": False, "row": None}]}
    assert rows(client) == before
    assert len(local_bsns(client)) == 1  # only the insert of 4 made above


def test_leave_removes_the_entries_and_writes_nothing(client):
    before = rows(client)
    assert ok("resolve", client, "--transaction", "7", "--leave") == (
        "resolved client transaction 7 (leave): removed 3 conflict(s) from the inbox; the "
        "tables stay as they are\n"
        '  conflict 1: items {"id": 1}\n'
        '  conflict 2: items {"id": 2}\n'
        '  conflict 3: items {"id": 4}\n')
    assert ok("resolve", client, "4", "--leave") == (
        'resolved conflict 4 (leave): removed it from the inbox; items {"id": 3} stays as '
        'it is\n')
    assert json.loads(ok("resolve", client, "5", "--leave", "--json")) == {
        "database": client, "id": 5, "table": "items", "key": {"id": 3},
        "resolution": "leave", "row": None, "deleted": False}
    assert rows(client) == before and local_bsns(client) == set()
    assert ok("conflicts", client) == "no deferred conflicts\n"


def test_a_refused_delete_writes_and_removes_nothing(client, hub):  # noqa: F811
    write(client, "DELETE FROM items WHERE id = 2")
    ok("sync", client, hub)
    before, inbox = rows(client), listed(client)
    result = run("resolve", client, "--transaction", "7", "--keep-local")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f'sqlite-ct: error: client transaction 7: conflict 2: items {{"id": 2}} is not on the '
        f"client, so deleting it is no change to upload and the hub would keep its row; "
        f"nothing was written: use --take-server (then sync and delete it to remove it from "
        f"the hub too), or settle the conflicts one by one with sqlite-ct resolve {client} "
        f"ID\n")
    assert rows(client) == before and listed(client) == inbox
    assert local_bsns(client) == set()


def test_only_uploads_are_settled_by_transaction(client):
    write(client, "UPDATE __sysSyncConflicts SET TxGroup = 9 WHERE Stage = 'DownloadingChanges'")
    ok("resolve", client, "--transaction", "9", "--leave")
    assert listed(client, "--transaction", "9") == [(5, 3, "DownloadingChanges", 9)]
    result = run("resolve", client, "--transaction", "9", "--leave")
    assert (result.returncode, result.stderr) == (
        1, f"sqlite-ct: error: no deferred conflicts of client transaction 9 in {client}; "
           f"list them with: sqlite-ct conflicts {client}\n")


@pytest.mark.parametrize("args, code, message", [
    (["1", "--transaction", "7", "--keep-local"], 2,
     "sqlite-ct resolve: error: give a conflict ID or --transaction N (one of them)\n"),
    (["--keep-local"], 2,
     "sqlite-ct resolve: error: give a conflict ID or --transaction N (one of them)\n"),
    (["--transaction", "7", "--delete"], 1,
     "sqlite-ct: error: --transaction settles every conflict of a client transaction with "
     "--keep-local, --take-server or --leave; --delete and --row settle one conflict: give "
     "its ID instead\n"),
    (["--transaction", "7", "--row", "{}"], 1, "--delete and --row settle one conflict"),
    (["--transaction", "8", "--keep-local"], 1,
     "sqlite-ct: error: no deferred conflicts of client transaction 8 in {db}; list them "
     "with: sqlite-ct conflicts {db}\n"),
    (["--transaction", "-1", "--leave"], 2, "--transaction: must be an integer >= 0"),
])
def test_resolve_usage_errors_change_nothing(client, args, code, message):
    before = rows(client)
    result = run("resolve", client, *args)
    assert (result.returncode, result.stdout) == (code, "")
    assert message.format(db=client) in result.stderr
    assert rows(client) == before and len(listed(client)) == 5
