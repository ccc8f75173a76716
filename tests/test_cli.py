"""The sqlite-ct command line (sqlite_ct/cli.py), in-process through main()
and as `python3 -m sqlite_ct` in a subprocess: every command, its exit codes,
its exact error messages and its output formats (docs/cli.md)."""
import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys

import apsw
import pytest

import sqlite_ct
from sqlite_ct import cli

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(sqlite_ct.__file__)))
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ["enable", "disable", "status", "changes", "purge", "check", "sync", "reinitialise",
            "reidentify", "conflicts", "resolve", "demo", "serve"]


def call(*args):
    """Run main() in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([str(a) for a in args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run(*args, cwd=None, timeout=120):
    """Run `python3 -m sqlite_ct ARGS` in a subprocess with the package under test."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    env.pop("PYTHONHOME", None)
    return subprocess.run([sys.executable, "-m", "sqlite_ct", *[str(a) for a in args]],
                          env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def connect(path):
    conn = apsw.Connection(str(path))
    sqlite_ct.load(conn)
    return conn


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def db(tmp_path):
    """A database with a tracked table `items` and its history:

    CSN 1 enables tracking (apple already exists), CSN 2 inserts pear;
    anchor 2; then CSN 3 updates apple, CSN 4 inserts plum, CSN 5 deletes pear.
    Also an untracked table `plain`."""
    path = str(tmp_path / "app.db")
    conn = connect(path)
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, "
                 "data BLOB, ratio REAL)")
    conn.execute("CREATE TABLE plain(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO items(id, name, qty, data, ratio) "
                 "VALUES (1, 'apple', 3, x'00ff10', 1e999)")
    assert sqlite_ct.create_schema(conn, "items") == 1
    conn.execute("INSERT INTO items(id, name, qty) VALUES (2, 'pear', 5)")
    conn.execute("UPDATE items SET qty = 4 WHERE id = 1")
    conn.execute("INSERT INTO items(id, name, qty, ratio) VALUES (3, 'plum', 7, 0.5)")
    conn.execute("DELETE FROM items WHERE id = 2")
    assert sqlite_ct.last_committed_csn(conn) == 5
    conn.close()
    return path


# --- the command itself ---------------------------------------------------------

def test_module_runs_the_cli_and_lists_every_command():
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: sqlite-ct ")
    listed = [line.split()[0] for line in proc.stdout.splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    for command in COMMANDS:
        assert command in listed


def test_subparsers_are_the_documented_commands():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert sorted(subparsers.choices) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    code, out, err = call(command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: sqlite-ct {command} ")


def test_version():
    code, out, _ = call("--version")
    assert (code, out) == (0, f"sqlite-ct {sqlite_ct.__version__}\n")


def test_no_command_is_a_usage_error():
    code, out, err = call()
    assert code == 2 and out == ""
    assert err.startswith("usage: sqlite-ct ")
    assert err.endswith("sqlite-ct: error: the following arguments are required: COMMAND\n")


def test_console_script_entry_point_is_main():
    with open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8") as f:
        assert '"sqlite-ct = sqlite_ct.cli:main"' in f.read()
    assert callable(cli.main)


# --- databases that are not there -------------------------------------------------

@pytest.mark.parametrize("args", [
    ["enable", "{db}", "items"], ["disable", "{db}", "items"], ["status", "{db}"],
    ["changes", "{db}", "items"], ["purge", "{db}", "items", "--up-to-csn", "1"],
    ["purge", "{db}", "--transactions", "--up-to-csn", "1"], ["check", "{db}"],
], ids=lambda a: " ".join(a[:1] + a[2:]))
def test_a_missing_database_is_an_error_and_is_not_created(tmp_path, args):
    path = str(tmp_path / "missing.db")
    code, out, err = call(*[a.format(db=path) for a in args])
    assert (code, out) == (1, "")
    assert err == f'sqlite-ct: error: database "{path}" does not exist\n'
    assert not os.path.exists(path)


def test_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database, " * 100)
    code, _, err = call("status", path)
    assert code == 1
    assert err == f'sqlite-ct: error: cannot open database "{path}": file is not a database\n'


def test_a_directory_is_not_a_database(tmp_path):
    code, _, err = call("status", tmp_path)
    assert code == 1
    assert err == f'sqlite-ct: error: "{tmp_path}" is a directory, not a database file\n'


# --- enable / disable -------------------------------------------------------------

def test_enable_tracks_each_table(db):
    conn = connect(db)
    conn.execute("CREATE TABLE other(k TEXT PRIMARY KEY, v)")
    conn.close()
    code, out, err = call("enable", db, "plain", "other")
    assert (code, err) == (0, "")
    assert out == ('tracking "plain" (options: insert,update,delete; enabled by BSN 6)\n'
                   'tracking "other" (options: insert,update,delete; enabled by BSN 6)\n')
    conn = connect(db)
    assert sqlite_ct.tracked_tables(conn) == ["items", "other", "plain"]


def test_enable_is_idempotent(db):
    code, out, _ = call("enable", db, "items")
    assert code == 0
    assert out == 'tracking "items" (options: insert,update,delete; enabled by BSN 1)\n'


def test_enable_with_options(db):
    code, out, _ = call("enable", db, "plain", "--options", "insert,delete")
    assert code == 0
    assert out == 'tracking "plain" (options: insert,delete; enabled by BSN 6)\n'
    conn = connect(db)
    assert conn.execute("SELECT __sysTrackOpt FROM __sysOCSTrackedObjects "
                        "WHERE __sysTName = 'plain'").fetchall() == [(5 * 16,)]


def test_enable_rejects_unknown_options(db):
    code, out, err = call("enable", db, "plain", "--options", "insert,upsert")
    assert (code, out) == (2, "")
    assert err.endswith("sqlite-ct enable: error: argument --options: unknown tracking "
                        "option 'upsert'; use insert, update, delete or all, separated "
                        "by commas\n")


def test_enable_mode_is_passed_to_the_library(db, monkeypatch):
    calls = []
    real = sqlite_ct.create_schema

    def spy(conn, table, **kwargs):
        calls.append((table, kwargs))
        return real(conn, table, **kwargs)

    monkeypatch.setattr(sqlite_ct, "create_schema", spy)
    assert call("enable", db, "plain", "--mode", "native")[0] == 0
    assert calls == [("plain", {"options": sqlite_ct.TrackingOptions.ALL, "mode": "native"})]
    code, _, err = call("enable", db, "plain", "--mode", "fast")
    assert code == 2
    assert err.endswith("sqlite-ct enable: error: argument --mode: invalid choice: 'fast' "
                        "(choose from 'native', 'portable')\n")


def test_enable_names_a_missing_table_and_enables_nothing(db):
    code, out, err = call("enable", db, "plain", "nope")
    assert (code, out) == (1, "")
    assert err == 'sqlite-ct: error: no such table: "nope"\n'
    conn = connect(db)
    assert sqlite_ct.tracked_tables(conn) == ["items"]


def test_enable_refuses_a_table_without_primary_key(db):
    conn = connect(db)
    conn.execute("CREATE TABLE log(msg TEXT)")
    conn.close()
    code, _, err = call("enable", db, "log")
    assert code == 1
    assert err == ('sqlite-ct: error: table "log" has no PRIMARY KEY; add one (an INTEGER '
                   'PRIMARY KEY keeps today\'s rowids, which VACUUM may otherwise renumber)\n')


def test_enable_needs_a_table():
    code, _, err = call("enable", "x.db")
    assert code == 2
    assert err.endswith("sqlite-ct enable: error: the following arguments are required: "
                        "TABLE\n")


def test_disable(db):
    code, out, err = call("disable", db, "items")
    assert (code, out, err) == (0, 'stopped tracking "items"\n', "")
    conn = connect(db)
    assert sqlite_ct.tracked_tables(conn) == []
    columns = [r[1] for r in conn.execute("PRAGMA table_xinfo(items)")]
    assert columns == ["id", "name", "qty", "data", "ratio"]


def test_disable_errors_name_the_table(db):
    code, _, err = call("disable", db, "plain")
    assert (code, err) == (1, 'sqlite-ct: error: table "plain" is not tracked\n')
    code, _, err = call("disable", db, "nope")
    assert (code, err) == (1, 'sqlite-ct: error: no such table: "nope"\n')
    # All or nothing: items is still tracked after the failed pair.
    code, _, err = call("disable", db, "items", "nope")
    assert (code, err) == (1, 'sqlite-ct: error: no such table: "nope"\n')
    assert sqlite_ct.tracked_tables(connect(db)) == ["items"]


# --- status -----------------------------------------------------------------------

def test_status_json(db):
    code, out, err = call("status", db, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "database": db, "client_id": None, "layout_version": 7, "last_committed_csn": 5,
        "tables": [{
            "table": "items", "options": ["insert", "update", "delete"], "mode": "native",
            "enable_bsn": 1,
            "min_valid_csn": 0, "sent_anchor": None,
            # Since 0: apple and plum are inserts; pear came and went.
            "pending": {"inserts": 2, "updates": 0, "deletes": 0, "total": 2},
            "tombstones": 1, "problem": None}]}


def test_status_counts_pending_changes_from_the_sent_anchor(db):
    conn = connect(db)
    sqlite_ct.set_sent_anchor(conn, "items", 2)
    client = sqlite_ct.client_id(conn)
    conn.close()
    doc = json.loads(call("status", db, "--json")[1])
    assert doc["client_id"] == str(client)
    assert doc["tables"][0]["sent_anchor"] == 2
    assert doc["tables"][0]["pending"] == {"inserts": 1, "updates": 1, "deletes": 1,
                                           "total": 3}


def test_status_text(db):
    code, out, _ = call("status", db)
    assert code == 0
    assert out == (
        f"database:           {db}\n"
        "client id:          none yet (created by the first sync)\n"
        "last committed CSN: 5\n"
        "tracked tables:     1\n"
        "\n"
        "table  options  enabled_by  min_valid_csn  sent_anchor  pending  inserts  updates"
        "  deletes  tombstones\n"
        "-----  -------  ----------  -------------  -----------  -------  -------  -------"
        "  -------  ----------\n"
        "items  all      1           0              none         2        2        0      "
        "  0        1\n")


def test_status_without_tracking(tmp_path):
    path = str(tmp_path / "empty.db")
    apsw.Connection(path).execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
    code, out, _ = call("status", path)
    assert code == 0
    assert out.endswith("last committed CSN: 0\ntracked tables:     none\n")


def test_status_and_changes_do_not_write(db):
    before = file_digest(db)
    assert call("status", db)[0] == 0
    assert call("status", db, "--json")[0] == 0
    assert call("changes", db, "items", "--since", "2")[0] == 0
    assert call("changes", db, "items", "--csv")[0] == 0
    assert file_digest(db) == before


def test_status_reports_an_anchor_below_the_purged_tombstones(db):
    conn = connect(db)
    sqlite_ct.set_sent_anchor(conn, "items", 2)
    conn.close()
    assert call("purge", db, "items", "--up-to-csn", "5")[0] == 0
    doc = json.loads(call("status", db, "--json")[1])
    table = doc["tables"][0]
    assert table["pending"] is None and table["min_valid_csn"] == 5
    assert table["problem"] == (
        'anchor 2 of table "items" is older than its oldest kept change (CSN 5): '
        "tombstones it needs were purged; reinitialise the replica")


# --- changes ----------------------------------------------------------------------

def test_changes_json_is_the_documented_document(db):
    code, out, err = call("changes", db, "items", "--since", "2", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "table": "items", "since": 2, "new_anchor": 5,
        "inserts": [{"id": 3, "name": "plum", "qty": 7, "data": None, "ratio": 0.5}],
        "updates": [{"id": 1, "name": "apple", "qty": 4,
                     "data": {"$base64": True,
                              "encoded": base64.b64encode(b"\x00\xff\x10").decode()},
                     "ratio": {"$float": "Infinity"}}],
        "deletes": [{"id": 2}]}
    # One row per line.
    assert '    {"id": 3, "name": "plum", "qty": 7, "data": null, "ratio": 0.5}\n' in out


def test_changes_defaults_to_json_since_0(db):
    code, out, _ = call("changes", db, "items")
    assert code == 0
    doc = json.loads(out)
    assert (doc["since"], doc["new_anchor"]) == (0, 5)
    assert sorted(r["id"] for r in doc["inserts"]) == [1, 3]
    assert doc["updates"] == [] and doc["deletes"] == []


def test_changes_json_empty_lists(db):
    code, out, _ = call("changes", db, "items", "--since", "5")
    assert code == 0
    assert out == ('{\n  "table": "items",\n  "since": 5,\n  "new_anchor": 5,\n'
                   '  "inserts": [],\n  "updates": [],\n  "deletes": []\n}\n')


def test_changes_csv(db):
    code, out, err = call("changes", db, "items", "--since", "2", "--csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "__change,id,name,qty,data,ratio"
    assert sorted(lines[1:]) == sorted([
        "delete,2,,,,",
        "update,1,apple,4,AP8Q,inf",
        "insert,3,plum,7,,0.5",
    ])
    assert list(csv.reader(io.StringIO(out)))[0][0] == "__change"
    assert err == '"items" since CSN 2: 1 insert(s), 1 update(s), 1 delete(s); new anchor 5\n'


def test_changes_table(db):
    code, out, err = call("changes", db, "items", "--since", "2", "--table")
    assert (code, err) == (0, "")
    assert out == (
        "change  id  name   qty  data       ratio\n"
        "------  --  -----  ---  ---------  -----\n"
        "insert  3   plum   7               0.5\n"
        "update  1   apple  4    x'00ff10'  inf\n"
        "delete  2\n"
        '"items" since CSN 2: 1 insert(s), 1 update(s), 1 delete(s); new anchor 5\n')


def test_changes_formats_are_exclusive(db):
    code, _, err = call("changes", db, "items", "--csv", "--json")
    assert code == 2
    assert "argument --json: not allowed with argument --csv" in err


def test_changes_errors_name_the_table(db):
    code, out, err = call("changes", db, "nope")
    assert (code, out, err) == (1, "", 'sqlite-ct: error: no such table: "nope"\n')
    code, out, err = call("changes", db, "plain")
    assert (code, out) == (1, "")
    assert err == f'sqlite-ct: error: table "plain" is not tracked; run: sqlite-ct enable {db} plain\n'


@pytest.mark.parametrize("since, message", [
    ("6", "anchor 6 is newer than the last committed CSN 5 of this database (was it "
          'restored from an older copy?); reinitialise the replica of "items"'),
])
def test_changes_rejects_bad_anchors(db, since, message):
    code, out, err = call("changes", db, "items", "--since", since)
    assert (code, out) == (1, "")
    assert err == f"sqlite-ct: error: {message}\n"


@pytest.mark.parametrize("since, message", [
    ("x", "not an integer: 'x'"),
    ("-1", "must be an integer >= 0, got '-1'"),
])
def test_changes_since_must_be_a_non_negative_integer(db, since, message):
    code, out, err = call("changes", db, "items", "--since", since)
    assert (code, out) == (2, "")
    assert err.startswith("usage: sqlite-ct changes ")
    assert err.endswith(f"sqlite-ct changes: error: argument --since: {message}\n")


def test_changes_writes_values_of_every_type(tmp_path):
    path = str(tmp_path / "types.db")
    conn = connect(path)
    conn.execute("CREATE TABLE v(k BLOB PRIMARY KEY, i, r, t, b, n) WITHOUT ROWID")
    sqlite_ct.create_schema(conn, "v")
    conn.execute("INSERT INTO v(k, i, r, t, b, n) VALUES (x'01', ?, ?, ?, ?, NULL)",
                 (-2 ** 63, float("-inf"), "é\u0000x", b""))
    conn.execute("DELETE FROM v")
    conn.execute("INSERT INTO v(k, i) VALUES (x'02', 1)")
    conn.close()
    doc = json.loads(call("changes", path, "v", "--since", "2")[1])
    assert doc["inserts"] == [{"k": {"$base64": True, "encoded": "Ag=="}, "i": 1, "r": None,
                               "t": None, "b": None, "n": None}]
    assert doc["deletes"] == [{"k": {"$base64": True, "encoded": "AQ=="}}]
    doc = json.loads(call("changes", path, "v", "--since", "1")[1])
    assert doc["deletes"] == [] and len(doc["inserts"]) == 1
    conn = connect(path)
    conn.execute("INSERT INTO v(k, i, r, t, b) VALUES (x'03', ?, ?, ?, ?)",
                 (-2 ** 63, float("-inf"), "é\u0000x", b""))
    conn.close()
    doc = json.loads(call("changes", path, "v", "--since", "4")[1])
    assert doc["inserts"] == [{"k": {"$base64": True, "encoded": "Aw=="}, "i": -2 ** 63,
                               "r": {"$float": "-Infinity"}, "t": "é\u0000x",
                               "b": {"$base64": True, "encoded": ""}, "n": None}]


def test_json_value_encoding():
    assert cli.json_value(b"\x00\xff") == {"$base64": True, "encoded": "AP8="}
    assert cli.json_value(memoryview(b"a")) == {"$base64": True, "encoded": "YQ=="}
    assert cli.json_value(float("inf")) == {"$float": "Infinity"}
    assert cli.json_value(float("-inf")) == {"$float": "-Infinity"}
    assert cli.json_value(float("nan")) == {"$float": "NaN"}
    assert [cli.json_value(v) for v in (None, 1, 1.5, "x")] == [None, 1, 1.5, "x"]


# --- purge ------------------------------------------------------------------------

def test_purge_tombstones_up_to_a_csn(db):
    code, out, err = call("purge", db, "items", "--up-to-csn", "5")
    assert (code, out, err) == (0, 'purged 1 tombstone(s) of "items"\n', "")
    conn = connect(db)
    assert conn.execute("SELECT count(*) FROM __sysOCSDeletedRows").fetchall() == [(0,)]
    # Anchors older than the purged delete must reinitialise now.
    code, _, err = call("changes", db, "items", "--since", "2")
    assert code == 1
    assert "reinitialise the replica" in err


def test_purge_tombstones_by_age(db):
    code, out, _ = call("purge", db, "items", "--older-than-days", "1")
    assert (code, out) == (0, 'purged 0 tombstone(s) of "items"\n')
    code, out, _ = call("purge", db, "items", "--older-than-days", "0")
    assert (code, out) == (0, 'purged 1 tombstone(s) of "items"\n')


def test_purge_transactions(db):
    # Tombstones first: the delete of CSN 5 still has one.
    code, out, err = call("purge", db, "--transactions", "--up-to-csn", "5")
    assert (code, out) == (1, "")
    assert err == ("sqlite-ct: error: 1 tombstone(s) belong to the transactions being "
                   "purged; purge tombstones first (purge_tombstones), then the "
                   "transaction sequence\n")
    code, out, _ = call("purge", db, "--transactions", "--up-to-csn", "4")
    assert (code, out) == (0, "purged 4 transaction sequence row(s)\n")
    assert call("purge", db, "items", "--up-to-csn", "5")[0] == 0
    code, out, _ = call("purge", db, "--transactions", "--older-than-days", "0")
    # The newest row is kept: the next transaction is numbered from it.
    assert (code, out) == (0, "purged 0 transaction sequence row(s)\n")
    assert sqlite_ct.last_committed_csn(connect(db)) == 5


@pytest.mark.parametrize("args, message", [
    (["--up-to-csn", "1"], "purge needs a TABLE (tombstones) or --transactions "
                           "(the transaction sequence)"),
    (["items", "--transactions", "--up-to-csn", "1"],
     "purge --transactions takes no table: the transaction sequence is shared by all tables"),
])
def test_purge_usage_errors(db, args, message):
    code, out, err = call("purge", db, *args)
    assert (code, out, err) == (2, "", f"sqlite-ct: error: {message}\n")


@pytest.mark.parametrize("args, tail", [
    (["items"], "error: one of the arguments --older-than-days --up-to-csn is required\n"),
    (["items", "--up-to-csn", "1", "--older-than-days", "1"],
     "error: argument --older-than-days: not allowed with argument --up-to-csn\n"),
    (["items", "--older-than-days", "-1"],
     "error: argument --older-than-days: must be a number >= 0, got '-1'\n"),
    (["items", "--up-to-csn", "x"], "error: argument --up-to-csn: not an integer: 'x'\n"),
])
def test_purge_argument_errors(db, args, tail):
    code, _, err = call("purge", db, *args)
    assert code == 2
    assert err.endswith("sqlite-ct purge: " + tail)


def test_purge_names_an_untracked_table(db):
    code, _, err = call("purge", db, "plain", "--up-to-csn", "1")
    assert (code, err) == (1, f'sqlite-ct: error: table "plain" is not tracked; run: '
                              f"sqlite-ct enable {db} plain\n")


# --- check ------------------------------------------------------------------------

def test_check_without_library_support_is_not_available(db, monkeypatch):
    monkeypatch.delattr(sqlite_ct, "check", raising=False)
    code, out, err = call("check", db)
    assert (code, out) == (2, "")
    assert err == ("sqlite-ct: error: check is not available: this version of sqlite-ct "
                   "has no sqlite_ct.check()\n")


def test_check_reports_problems_and_exit_codes(db, monkeypatch):
    class Problem:
        def __init__(self, table, code, message):
            self.table, self.code, self.message = table, code, message

    found = []
    monkeypatch.setattr(sqlite_ct, "check", lambda conn: list(found), raising=False)
    assert call("check", db) == (0, "ok\n", "")
    found[:] = [Problem("items", "trigger-missing", "sqlite-ct: trigger x is missing"),
                Problem(None, "layout", "sqlite-ct: newer layout")]
    assert call("check", db) == (1, "problem [trigger-missing] table \"items\": trigger x "
                                    "is missing\nproblem [layout]: newer layout\n", "")
    code, out, _ = call("check", db, "--json")
    assert code == 1
    assert json.loads(out) == {"database": db, "ok": False, "problems": [
        {"table": "items", "code": "trigger-missing", "message": "trigger x is missing"},
        {"table": None, "code": "layout", "message": "newer layout"}]}


@pytest.mark.skipif(not hasattr(sqlite_ct, "check"),
                    reason="sqlite_ct.check() is not in this version of the library")
def test_check_with_the_library(db):
    assert call("check", db) == (0, "ok\n", "")
    conn = connect(db)
    conn.execute('DROP TRIGGER "__sysct_ad_items"')
    conn.close()
    code, out, _ = call("check", db)
    assert code == 1
    assert "__sysct_ad_items" in out


# --- sync -------------------------------------------------------------------------

def test_sync_without_the_sync_package_is_not_available(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_sync_module", lambda: None)
    code, out, err = call("sync", tmp_path / "client.db", tmp_path / "hub.db")
    assert (code, out) == (2, "")
    assert err == ("sqlite-ct: error: sync is not available: this version of sqlite-ct "
                   "has no sqlite_ct.sync package\n")


def test_progress_bar():
    stream = io.StringIO()
    bar = cli.Progress(stream, True, width=10, interval=0)
    bar.update("upload items", 5, 10)
    bar.update("upload items", 10, 10)
    bar.update("download items", 7, None)
    bar.finish()
    text = stream.getvalue()
    assert "\rupload items [#####-----] 5/10" in text
    assert "\rupload items [##########] 10/10" in text
    assert "\rdownload items: 7" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    bar = cli.Progress(quiet, False)
    bar.update("x", 1, 2)
    bar.finish()
    assert quiet.getvalue() == ""


def test_progress_bar_redraws_at_most_every_interval():
    stream = io.StringIO()
    bar = cli.Progress(stream, True, width=10, interval=3600)
    for done in range(1, 100):
        bar.update("rows", done, 100)
    bar.update("rows", 100, 100)
    assert stream.getvalue().count("\r") == 2   # the first and the last


requires_sync = pytest.mark.skipif(cli._sync_module() is None,
                                   reason="sqlite_ct.sync is not in this version")


@pytest.fixture
def hub(tmp_path):
    path = str(tmp_path / "hub.db")
    conn = connect(path)
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "qty INTEGER NOT NULL)")
    conn.execute("CREATE TABLE other(id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO items(id, name, qty) VALUES (1, 'apple', 3), (2, 'pear', 5)")
    conn.close()
    return path


def rows(path, table="items"):
    conn = apsw.Connection(str(path))
    try:
        return conn.execute(f"SELECT id, name, qty FROM {table} ORDER BY id").fetchall()
    finally:
        conn.close()


@requires_sync
def test_sync_two_clients_through_a_hub(tmp_path, hub):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    code, out, err = call("sync", a, hub, "--table", "items")
    assert (code, err) == (0, "")
    assert out == (f"synced {a} with {hub}: items\n"
                   "uploaded 0 change(s): 0 applied, 0 failed\n"
                   "downloaded 2 change(s): 2 applied, 0 failed, in 1 batch(es)\n"
                   "conflicts: 0\n")
    assert rows(a) == [(1, "apple", 3), (2, "pear", 5)]
    # The hub tracks items now, so it is synced without --table.
    assert call("sync", b, hub)[0] == 0
    conn = connect(a)
    conn.execute("UPDATE items SET qty = 4 WHERE id = 1")
    conn.close()
    code, out, _ = call("sync", a, hub, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["uploaded"] == {"total": 1, "applied": 1, "failed": 0}
    assert doc["downloaded"] == {"total": 0, "applied": 0, "failed": 0, "batches": 1}
    assert (doc["client"], doc["hub"], doc["tables"], doc["conflicts"]) == (a, hub, ["items"], [])
    assert doc["client_id"] == str(sqlite_ct.client_id(connect(a)))
    assert doc["start_time"] <= doc["complete_time"]
    doc = json.loads(call("sync", b, hub, "--json")[1])
    assert doc["downloaded"]["total"] == 1
    assert rows(b) == rows(a) == rows(hub) == [(1, "apple", 4), (2, "pear", 5)]
    # No echo: nothing comes back to the client that made the change.
    assert json.loads(call("sync", a, hub, "--json")[1])["downloaded"]["total"] == 0


@requires_sync
def test_sync_progress_goes_to_stderr(tmp_path, hub):
    client = tmp_path / "c.db"
    code, _, err = call("sync", client, hub, "--table", "items", "--progress",
                        "--batch-size", "1")
    assert code == 0
    assert "\rsync items: uploaded 0, downloaded 2 (batch 3)" in err
    assert err.endswith("\n")
    code, _, err = call("sync", client, hub, "--no-progress")
    assert (code, err) == (0, "")
    # Default: a bar only when stderr is a terminal (a StringIO is not).
    assert call("sync", client, hub)[2] == ""


@requires_sync
@pytest.mark.parametrize("args, message", [
    (["{client}", "{missing}"], 'database "{missing}" does not exist'),
    (["{client}", "{hub}", "--table", "nope"], 'no such table on the hub "{hub}": "nope"'),
    (["{client}", "{empty}"], 'the hub "{empty}" tracks no table; name the tables to sync '
                              "with --table (the hub starts tracking them)"),
])
def test_sync_errors_name_what_is_wrong_and_leave_no_client_file(tmp_path, hub, args,
                                                                    message):
    empty = str(tmp_path / "empty.db")
    apsw.Connection(empty).execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
    names = dict(client=str(tmp_path / "new.db"), missing=str(tmp_path / "missing.db"),
                 hub=hub, empty=empty)
    code, out, err = call("sync", *[a.format(**names) for a in args])
    assert (code, out) == (1, "")
    assert err == f"sqlite-ct: error: {message.format(**names)}\n"
    assert not os.path.exists(names["client"])
    assert not os.path.exists(names["missing"])


@requires_sync
def test_sync_failure_reports_the_sync_error_and_removes_a_new_client(
        tmp_path, hub, monkeypatch):
    sync = cli._sync_module()

    def fail(self):
        raise sync.SyncError("sqlite-ct sync: the server went away")

    monkeypatch.setattr(sync.SyncAgent, "synchronize", fail)
    client = tmp_path / "new.db"
    code, out, err = call("sync", client, hub, "--table", "items")
    assert (code, out, err) == (1, "", "sqlite-ct: error: sync: the server went away\n")
    assert not os.path.exists(client)


def test_sync_usage_errors(tmp_path, hub):
    code, _, err = call("sync", hub, hub)
    assert (code, err) == (2, "sqlite-ct: error: the client and the hub must be different "
                              "databases\n")
    code, _, err = call("sync", tmp_path / "c.db", hub, "--batch-size", "0")
    assert code == 2
    assert err.endswith("sqlite-ct sync: error: argument --batch-size: must be an integer "
                        ">= 1, got '0'\n")


# --- demo -------------------------------------------------------------------------

def test_demo_runs_from_anywhere_and_cleans_up(tmp_path):
    proc = run("demo", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert out.startswith(f"sqlite-ct demo: change tracking on SQLite (sqlite-ct "
                          f"{sqlite_ct.__version__})\n")
    assert '    insert  {"id": 2, "name": "pear", "qty": 5}\n' in out
    assert '    update  {"id": 1, "name": "apple", "qty": 5}\n' in out
    assert '    delete  {"id": 2}\n' in out
    assert "== 6. Sync two clients through a hub\n" in out
    if cli._sync_module() is not None:
        assert "    all three databases are equal\n" in out
    assert out.endswith("\ndone.\n")
    assert os.listdir(tmp_path) == []
    workdir = next(line.split(": ", 1)[1].split(" (")[0] for line in out.splitlines()
                   if line.startswith("working directory: "))
    assert not os.path.exists(workdir)


def test_demo_keeps_its_databases_with_dir(tmp_path):
    target = tmp_path / "demo"
    code, out, err = call("demo", "--dir", target)
    assert (code, err) == (0, "")
    assert f"working directory: {target}\n" in out
    assert "app.db" in os.listdir(target)
    conn = connect(target / "app.db")
    assert sqlite_ct.tracked_tables(conn) == ["items"]
    code, _, err = call("demo", "--dir", target)
    assert (code, err) == (1, f'sqlite-ct: error: demo directory "{target}" is not empty; '
                              f"name a new or empty directory\n")


@requires_sync
@pytest.mark.parametrize("transcript, printed", [
    ("hub and clients in sync\n", "hub and clients in sync\n"),
    (["line one", "line two"], "line one\nline two\n"),
])
def test_demo_prints_the_sync_packages_own_demo_when_there_is_one(
        tmp_path, monkeypatch, transcript, printed):
    import types
    calls = []
    fake = types.ModuleType("sqlite_ct.sync.demo")
    fake.run = lambda workdir: calls.append(workdir) or transcript
    monkeypatch.setitem(sys.modules, "sqlite_ct.sync.demo", fake)
    monkeypatch.setattr(cli._sync_module(), "demo", fake, raising=False)
    code, out, err = call("demo", "--dir", tmp_path / "d")
    assert (code, err) == (0, "")
    assert calls == [str(tmp_path / "d")]
    assert "== 6. Sync two clients through a hub\n" + printed + "\ndone.\n" in out
