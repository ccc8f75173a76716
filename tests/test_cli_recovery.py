"""Recovering a client from the command line, against a real hub file:
`sync` names the command to run when the hub refuses the client
(ReinitialiseRequired: exit 3, ReplicaCopied: exit 4), `reinitialise` and
`reidentify` run it, and `conflicts` / `resolve` list and settle the
client's conflict inbox. (The same over HTTP: tests/server/test_cli_recovery.py.)"""
import json
import shutil

import apsw
import pytest

import sqlite_ct
from sqlite_ct import cli

from test_cli import call, connect, requires_sync, run

pytestmark = requires_sync


@pytest.fixture
def hub(tmp_path):
    """A hub whose items table refuses the name 'bad' (so an upload can fail)."""
    path = str(tmp_path / "hub.db")
    conn = connect(path)
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT CHECK (name IS NOT "
                 "'bad'), data BLOB)")
    conn.execute("INSERT INTO items(id, name, data) VALUES (1, 'apple', x'00ff'), "
                 "(2, 'pear', NULL), (3, 'plum', NULL)")
    conn.close()
    return path


def write(path, sql):
    conn = connect(path)
    try:
        conn.execute(sql)
    finally:
        conn.close()


def rows(path):
    conn = apsw.Connection(str(path))
    try:
        return conn.execute("SELECT id, name, data FROM items ORDER BY id").fetchall()
    finally:
        conn.close()


def synced(tmp_path, hub, name="a"):
    path = str(tmp_path / f"{name}.db")
    code, _, err = call("sync", path, hub, "--table", "items")
    assert (code, err) == (0, ""), err
    return path


def purge_hub_tombstones(hub):
    conn = connect(hub)
    try:
        sqlite_ct.purge_tombstones(conn, "items", up_to_csn=sqlite_ct.last_committed_csn(conn))
    finally:
        conn.close()


# --- reinitialise ---------------------------------------------------------------------

def test_a_purged_hub_makes_sync_name_reinitialise_which_converges_keeping_local_work(
        tmp_path, hub):
    a = synced(tmp_path, hub)
    write(a, "INSERT INTO items(id, name) VALUES (10, 'unsent')")
    write(a, "UPDATE items SET name = 'pear, edited' WHERE id = 2")
    write(hub, "DELETE FROM items WHERE id = 3")
    purge_hub_tombstones(hub)
    code, out, err = call("sync", a, hub)
    assert (code, out) == (3, "")
    first, second = err.splitlines()
    assert first.startswith('sqlite-ct: error: sync: the hub purged tombstones of table "items"')
    assert second == (f"sqlite-ct: run: sqlite-ct reinitialise {a} {hub} --table items "
                      f"(brings the client back in line with the hub; unsent changes are kept)")
    assert rows(a)[2][0] == 3          # the hub's delete never arrived
    # Work done after the refusal is unsent when reinitialise starts.
    write(a, "INSERT INTO items(id, name) VALUES (20, 'after the refusal')")
    write(a, "UPDATE items SET name = 'apple, edited' WHERE id = 1")
    code, out, err = call("reinitialise", a, hub, "--table", "items")
    assert (code, err) == (0, "")
    assert out == (f"reinitialised {a} from {hub}: items\n"
                   "uploaded 2 change(s): 2 applied, 0 failed\n"
                   "downloaded 4 change(s): 4 applied, 0 failed, in 1 batch(es)\n"
                   "conflicts: 0\n")
    assert rows(a) == rows(hub) == [(1, "apple, edited", b"\x00\xff"),
                                    (2, "pear, edited", None), (10, "unsent", None),
                                    (20, "after the refusal", None)]
    code, out, err = call("sync", a, hub)
    assert (code, err) == (0, "")
    assert "uploaded 0 change(s)" in out and "downloaded 0 change(s)" in out


def test_reinitialise_defaults_to_every_table_the_client_synced_and_prints_json(tmp_path,
                                                                                hub):
    write(hub, "CREATE TABLE other(id INTEGER PRIMARY KEY, v TEXT)")
    write(hub, "CREATE TABLE unsynced(id INTEGER PRIMARY KEY)")
    a = str(tmp_path / "a.db")
    assert call("sync", a, hub, "--table", "items", "--table", "other")[0] == 0
    code, out, err = call("reinitialise", a, hub, "--json")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert document["tables"] == ["items", "other"]
    assert (document["client"], document["hub"]) == (a, hub)
    assert document["downloaded"] == {"total": 3, "applied": 3, "failed": 0, "batches": 2}
    assert document["client_id"] == str(sqlite_ct.client_id(connect(a)))


def test_reinitialise_of_a_copied_database_names_reidentify(tmp_path, hub):
    a = synced(tmp_path, hub)
    b = str(tmp_path / "b.db")
    shutil.copy(a, b)
    assert call("sync", a, hub)[0] == 0
    code, out, err = call("reinitialise", b, hub)
    assert (code, out) == (4, "")
    assert err.splitlines()[-1] == (f"sqlite-ct: run: sqlite-ct reidentify {b} {hub} (gives "
                                    f"{b} its own client id; unsent changes are kept)")


@pytest.mark.parametrize("command", ["reinitialise", "reidentify"])
def test_recovery_commands_refuse_what_they_cannot_do(tmp_path, hub, command):
    missing = str(tmp_path / "missing.db")
    assert call(command, missing, hub) == (
        1, "", f'sqlite-ct: error: database "{missing}" does not exist\n')
    assert not (tmp_path / "missing.db").exists()
    fresh = str(tmp_path / "fresh.db")
    apsw.Connection(fresh).close()
    assert call(command, fresh, hub) == (
        1, "", f'sqlite-ct: error: the client "{fresh}" has not synced any table yet; '
               f"run: sqlite-ct sync {fresh} {hub}\n")
    a = synced(tmp_path, hub)
    assert call(command, a, hub, "--table", "nope") == (
        1, "", f'sqlite-ct: error: no such table on the hub "{hub}": "nope"\n')
    assert call(command, a, hub, "--token", "x") == (
        2, "", "sqlite-ct: error: --token is for a sync service URL; HUB_DB is a database "
               "file\n")
    assert call(command, a, a) == (
        2, "", "sqlite-ct: error: the client and the hub must be different databases\n")


# --- reidentify ----------------------------------------------------------------------------

def test_a_copied_client_makes_sync_name_reidentify_which_makes_two_clients(tmp_path, hub):
    a = synced(tmp_path, hub)
    b = str(tmp_path / "b.db")
    shutil.copy(a, b)
    write(a, "INSERT INTO items(id, name) VALUES (11, 'from a')")
    assert call("sync", a, hub)[0] == 0
    write(b, "INSERT INTO items(id, name) VALUES (12, 'from the copy')")
    code, out, err = call("sync", b, hub)
    assert (code, out) == (4, "")
    first, second = err.splitlines()
    assert first.startswith("sqlite-ct: error: sync: client ")
    assert "this database is a copy of another client database" in first
    assert second == (f"sqlite-ct: run: sqlite-ct reidentify {b} {hub} (gives {b} its own "
                      f"client id; unsent changes are kept)")
    before = str(sqlite_ct.client_id(connect(b)))
    proc = run("reidentify", b, hub, "--json")     # the real command, in a process
    assert (proc.returncode, proc.stderr) == (0, "")
    document = json.loads(proc.stdout)
    assert document["previous_client_id"] == before
    assert document["client_id"] not in (before, str(sqlite_ct.client_id(connect(a))))
    assert document["uploaded"] == {"total": 1, "applied": 1, "failed": 0}
    assert call("sync", a, hub)[0] == 0
    expected = [(1, "apple", b"\x00\xff"), (2, "pear", None), (3, "plum", None),
                (11, "from a", None), (12, "from the copy", None)]
    assert rows(a) == rows(b) == rows(hub) == expected


def test_reidentify_text_output(tmp_path, hub):
    a = synced(tmp_path, hub)
    before = sqlite_ct.client_id(connect(a))
    code, out, err = call("reidentify", a, hub)
    assert (code, err) == (0, "")
    after = sqlite_ct.client_id(connect(a))
    assert after != before
    assert out == (f"{a} has a new client id: {after} (was {before})\n"
                   f"reinitialised {a} from {hub}: items\n"
                   "uploaded 0 change(s): 0 applied, 0 failed\n"
                   "downloaded 3 change(s): 3 applied, 0 failed, in 1 batch(es)\n"
                   "conflicts: 0\n")


# --- the conflict inbox ------------------------------------------------------------------

@pytest.fixture
def rejected(tmp_path, hub):
    """A client whose update of item 1 the hub rejected (CHECK): conflict 1."""
    a = synced(tmp_path, hub)
    write(a, "UPDATE items SET name = 'bad', data = x'0102' WHERE id = 1")
    code, out, _ = call("sync", a, hub)
    assert code == 0 and "uploaded 1 change(s): 0 applied, 1 failed" in out
    return a


def test_conflicts_lists_the_inbox(rejected):
    code, out, err = call("conflicts", rejected)
    assert (code, err) == (0, "")
    header, rule, line = out.splitlines()
    assert header.split() == ["id", "table", "key", "stage", "transaction", "type", "time",
                              "error"]
    # The client transaction of the refused upload, as the hub reports it.
    txn = json.loads(call("conflicts", rejected, "--json")[1])["conflicts"][0]["transaction"]
    assert txn is None or type(txn) is int
    assert line.startswith('1   items  {"id": 1}  UploadingChanges  '
                           + f"{'' if txn is None else txn:<11}  ErrorsOccurred  ")
    assert line.endswith("CHECK constraint failed: name IS NOT 'bad'")
    code, out, err = call("conflicts", rejected, "--json")
    assert (code, err) == (0, "")
    (c,) = json.loads(out)["conflicts"]
    assert c.pop("time").endswith("+00:00")
    assert c.pop("transaction") == txn
    assert c == {"id": 1, "table": "items", "key": {"id": 1}, "stage": "UploadingChanges",
                 "type": "ErrorsOccurred", "error": "CHECK constraint failed: name IS NOT 'bad'",
                 "client_row": {"id": 1, "name": "bad",
                                "data": {"$base64": True, "encoded": "AQI="}},
                 "server_row": {"id": 1, "name": "apple",
                                "data": {"$base64": True, "encoded": "AP8="}}}
    assert json.loads(call("conflicts", rejected, "--table", "ITEMS", "--json")[1]
                      )["conflicts"][0]["id"] == 1


def test_conflicts_of_a_client_without_any(tmp_path, hub):
    a = synced(tmp_path, hub)
    assert call("conflicts", a) == (0, "no deferred conflicts\n", "")
    assert json.loads(call("conflicts", a, "--json")[1]) == {"database": a, "conflicts": []}
    plain = str(tmp_path / "plain.db")
    apsw.Connection(plain).close()
    assert call("conflicts", plain) == (0, "no deferred conflicts\n", "")
    assert call("conflicts", a, "--table", "nope") == (
        1, "", 'sqlite-ct: error: no such table: "nope"\n')


def test_resolve_with_a_row_writes_it_and_the_next_sync_uploads_it(rejected, hub):
    code, out, err = call("resolve", rejected, "1", "--row",
                          '{"id": 1, "name": "fixed", "data": {"$base64": true, '
                          '"encoded": "AQI="}}')
    assert (code, err) == (0, "")
    assert out == ('resolved conflict 1 (row): wrote items {"id": 1, "name": "fixed", "data": '
                   '{"$base64": true, "encoded": "AQI="}} as a local change; the next sync '
                   'uploads it\n')
    assert call("conflicts", rejected) == (0, "no deferred conflicts\n", "")
    assert call("sync", rejected, hub)[0] == 0
    assert rows(hub)[0] == rows(rejected)[0] == (1, "fixed", b"\x01\x02")


def test_resolve_take_server_and_delete(tmp_path, rejected, hub):
    write(rejected, "UPDATE items SET name = 'bad' WHERE id = 2")
    assert call("sync", rejected, hub)[0] == 0
    code, out, err = call("resolve", rejected, "1", "--take-server", "--json")
    assert (code, err) == (0, "")
    # An upload's conflict: the hub's version stands, the client has it.
    assert json.loads(out) == {"database": rejected, "id": 1, "table": "items",
                               "key": {"id": 1}, "resolution": "take-server",
                               "row": None, "deleted": False}
    assert call("resolve", rejected, "2", "--delete") == (
        0, 'resolved conflict 2 (delete): deleted items {"id": 2} as a local change; the '
           'next sync uploads it\n', "")
    assert call("sync", rejected, hub)[0] == 0
    assert rows(hub) == rows(rejected) == [(1, "apple", b"\x00\xff"), (3, "plum", None)]


def test_resolve_keep_local_writes_the_clients_row(tmp_path, hub):
    # The client's own table refuses what the hub sends: a deferred download.
    a = str(tmp_path / "a.db")
    write(a, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT CHECK (name IS NOT "
             "'evil'), data BLOB)")
    assert call("sync", a, hub, "--table", "items")[0] == 0
    write(hub, "UPDATE items SET name = 'evil' WHERE id = 2")
    assert call("sync", a, hub)[0] == 0
    (c,) = json.loads(call("conflicts", a, "--json")[1])["conflicts"]
    assert (c["stage"], c["server_row"]["name"], c["client_row"]["name"]) == (
        "DownloadingChanges", "evil", "pear")
    assert call("resolve", a, str(c["id"]), "--keep-local") == (
        0, f'resolved conflict {c["id"]} (keep-local): wrote items {{"id": 2, "name": "pear", '
           f'"data": null}} as a local change; the next sync uploads it\n', "")
    assert call("sync", a, hub)[0] == 0
    assert rows(hub) == rows(a)
    assert rows(a)[1] == (2, "pear", None)


@pytest.mark.parametrize("row, message", [
    ("{", "--row is not valid JSON: Expecting property name enclosed in double quotes: "
          "line 1 column 2 (char 1)"),
    ("[1]", '--row must be a JSON object of the row\'s columns, e.g. {"id": 1, "name": "x"}'),
    ('{"id": 1, "name": "x", "data": null, "nope": 1}', 'no column "nope"'),
    ('{"id": 1, "name": "x"}', "--row must be a full row; it lacks: data"),
    ('{"id": 2, "name": "x", "data": null}',
     '--row: the key {"id": 1} of conflict 1 cannot change; the row has id = 2'),
    ('{"id": "1", "name": "x", "data": null}',
     '--row: the key {"id": 1} of conflict 1 cannot change; the row has id = "1"'),
    ('{"id": 1, "name": "x", "data": {"$base64": true, "encoded": "***"}}',
     '--row: column "data": "encoded" is not base64'),
    ('{"id": 1, "name": "x", "data": {"a": 1}}', '--row: column "data": an object value'),
    ('{"id": 1, "name": [1], "data": null}', '--row: column "name": a value is a number'),
])
def test_resolve_refuses_a_bad_row_and_changes_nothing(rejected, row, message):
    before = rows(rejected)
    code, out, err = call("resolve", rejected, "1", "--row", row)
    assert (code, out) == (1, "")
    assert err.startswith("sqlite-ct: error: ") and message in err
    assert rows(rejected) == before
    assert len(json.loads(call("conflicts", rejected, "--json")[1])["conflicts"]) == 1


def test_resolve_usage_errors(rejected):
    assert call("resolve", rejected, "7", "--delete") == (
        1, "", f"sqlite-ct: error: no deferred conflict 7 in {rejected}; list them with: "
               f"sqlite-ct conflicts {rejected}\n")
    code, _, err = call("resolve", rejected, "1")
    assert code == 2 and "one of the arguments --keep-local --take-server --delete --leave --row " \
                         "is required" in err
    code, _, err = call("resolve", rejected, "1", "--delete", "--take-server")
    assert code == 2 and "not allowed with argument" in err
    assert len(json.loads(call("conflicts", rejected, "--json")[1])["conflicts"]) == 1


def test_exit_codes_are_in_the_help():
    text = cli.build_parser().format_help()
    assert "  3  sync, reinitialise: the hub cannot serve the client" in text
    assert "  4  sync, reinitialise: the client database is a copy" in text


def test_resolve_refuses_a_delete_that_would_leave_the_hubs_row(tmp_path, hub):
    # The hub's new row cannot be applied on the client: the client has no
    # row of that key, so deleting it would change nothing and the replicas
    # would differ for good.
    a = str(tmp_path / "a.db")
    write(a, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT CHECK (name IS NOT "
             "'evil'), data BLOB)")
    assert call("sync", a, hub, "--table", "items")[0] == 0
    write(hub, "INSERT INTO items(id, name) VALUES (5, 'evil')")
    assert call("sync", a, hub)[0] == 0
    (c,) = json.loads(call("conflicts", a, "--json")[1])["conflicts"]
    assert (c["key"], c["client_row"]) == ({"id": 5}, None)
    message = (f'sqlite-ct: error: conflict {c["id"]}: items {{"id": 5}} is not on the client, '
               f"so deleting it is no change to upload and the hub would keep its row; to "
               f"apply the hub's row use --take-server (then sync and delete it to remove it "
               f"from the hub too), or write a row with --row\n")
    for option in ("--keep-local", "--delete"):
        assert call("resolve", a, str(c["id"]), option) == (1, "", message)
    assert len(json.loads(call("conflicts", a, "--json")[1])["conflicts"]) == 1
    assert call("resolve", a, str(c["id"]), "--row",
                '{"id": 5, "name": "good", "data": null}')[0] == 0
    assert call("sync", a, hub)[0] == 0
    assert rows(a) == rows(hub)
    assert rows(hub)[-1] == (5, "good", None)


def test_reidentify_reinitialises_every_synced_table_or_refuses(tmp_path, hub):
    write(hub, "CREATE TABLE other(id INTEGER PRIMARY KEY, v TEXT)")
    a = str(tmp_path / "a.db")
    assert call("sync", a, hub, "--table", "items", "--table", "other")[0] == 0
    before = sqlite_ct.client_id(connect(a))
    assert call("reidentify", a, hub, "--table", "items") == (
        1, "", f"sqlite-ct: error: reidentify gives all of {a} a new client id, so every "
               f"table it has synced is reinitialised; add --table other, or leave out "
               f"--table\n")
    assert sqlite_ct.client_id(connect(a)) == before
    code, out, err = call("reidentify", a, hub, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["tables"] == ["items", "other"]


def test_resolve_row_reads_the_json_value_encoding_of_changes(rejected):
    assert call("resolve", rejected, "1", "--row",
                '{"id": 1, "name": "x", "data": {"$float": "-Infinity"}}')[0] == 0
    assert rows(rejected)[0] == (1, "x", float("-inf"))
