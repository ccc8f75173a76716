"""The sqlite-utils and Datasette plugins, with the real tools.

Each run turns off the tools' loading of installed entry points
(`sys._called_from_test`, which both tools honour), registers the plugin
module with the tool's plugin manager (`pm.register`) by hand, and then runs
the tool's own command line, in a fresh interpreter: this one, whose sqlite3
cannot load extensions. So the runs are the same whether or not the package
is installed (an editable install registers the plugins through its entry
points); the last test checks the entry points themselves.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

import sqlite_ct

from ._support import PACKAGE_PARENT, Replica, describe, run_python, table_rows

pytest.importorskip("sqlite_utils", reason="sqlite-utils is not installed")

# `sqlite-utils ...` as an installed package runs it: the plugin registered,
# then sqlite-utils' own command line.
SQLITE_UTILS = """
import sys
sys._called_from_test = True
import sqlite_utils.plugins
import sqlite_ct.integrations.sqlite_utils as plugin
sqlite_utils.plugins.pm.register(plugin)
from sqlite_utils.cli import cli
sys.argv[0] = "sqlite-utils"
cli()
"""

PLAIN_SQLITE_UTILS = """
import sys
sys._called_from_test = True
from sqlite_utils.cli import cli
sys.argv[0] = "sqlite-utils"
cli()
"""


def sqlite_utils_cli(*args, stdin=None, plugin=True):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    return subprocess.run(
        [sys.executable, "-c", SQLITE_UTILS if plugin else PLAIN_SQLITE_UTILS, *args],
        input=stdin, env=env, capture_output=True, text=True, timeout=120)


def ok(proc):
    assert proc.returncode == 0, describe(proc)
    return proc.stdout


@pytest.fixture
def tracked(apsw_conn):
    apsw_conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
    sqlite_ct.create_schema(apsw_conn, "items")
    return apsw_conn


def test_sqlite_utils_cli_writes_to_a_tracked_table(db_path, tracked):
    replica = Replica(["id"])

    def sync():
        changes = sqlite_ct.enumerate_changes(tracked, "items", since=replica.anchor)
        replica.apply(changes)
        assert replica.rows == table_rows(tracked, "items", ["id", "name", "qty"], ["id"])
        return ([r["id"] for r in changes.inserts], [r["id"] for r in changes.updates],
                [r["id"] for r in changes.deletes])

    rows = [{"id": i, "name": f"n{i}", "qty": i} for i in (1, 2, 3)]
    ok(sqlite_utils_cli("insert", db_path, "items", "-", stdin=json.dumps(rows)))
    assert sync() == ([1, 2, 3], [], [])

    ok(sqlite_utils_cli("upsert", db_path, "items", "-", "--pk", "id",
                        stdin=json.dumps([{"id": 2, "qty": 20}, {"id": 4, "name": "n4"}])))
    assert sync() == ([4], [2], [])

    ok(sqlite_utils_cli("insert", db_path, "items", "-", "--replace",
                        stdin=json.dumps([{"id": 3, "name": "three", "qty": 3}])))
    assert sync() == ([3], [], [3])

    out = ok(sqlite_utils_cli("query", db_path, "DELETE FROM items WHERE id = 1"))
    assert json.loads(out) == [{"rows_affected": 1}]
    assert sync() == ([], [], [1])

    out = ok(sqlite_utils_cli("query", db_path,
                              "SELECT sqlite_ct_last_committed_csn() AS csn"))
    assert json.loads(out) == [{"csn": replica.anchor}]
    assert sqlite_ct.check(tracked) == []


def test_without_the_plugin_a_write_to_a_tracked_table_fails(db_path, tracked):
    """What the plugin fixes: sqlite-utils alone cannot write to the table
    (the write is refused, not left untracked)."""
    proc = sqlite_utils_cli("insert", db_path, "items", "-", plugin=False,
                            stdin=json.dumps([{"id": 1, "name": "one", "qty": 1}]))
    assert proc.returncode != 0
    assert "sqlite_ct_" in proc.stdout + proc.stderr
    assert tracked.execute("SELECT count(*) FROM items").fetchone()[0] == 0


LIBRARY_SCRIPT = r"""
import json, sys
PATH, ORDER = sys.argv[1], sys.argv[2]
sys._called_from_test = True
import sqlite_utils
import sqlite_utils.plugins
import sqlite_ct

if ORDER == "plugin-first":
    import sqlite_ct.integrations.sqlite_utils as plugin
    sqlite_utils.plugins.pm.register(plugin)
    db = sqlite_utils.Database(PATH)
else:
    early = sqlite_utils.Database(PATH, execute_plugins=False)
    import sqlite_ct.integrations.sqlite_utils as plugin
    sqlite_utils.plugins.pm.register(plugin)
    try:
        sqlite_utils.plugins.pm.hook.prepare_connection(conn=early.conn)
        print(json.dumps({"error": None}))
    except sqlite_ct.Error as exc:
        print(json.dumps({"error": str(exc)}))
    sys.exit(0)
db["items"].insert_all([{"id": 1, "name": "one", "qty": 1}])
db["items"].upsert({"id": 1, "qty": 2}, pk="id")
changes = sqlite_ct.enumerate_changes(db.conn, "items", since=0)
print(json.dumps({"inserts": changes.inserts}))
"""


def test_sqlite_utils_database_in_python(db_path, tracked):
    out = run_python(LIBRARY_SCRIPT, db_path, "plugin-first")
    assert out == {"inserts": [{"id": 1, "name": "one", "qty": 2}]}


@pytest.mark.skipif(hasattr(__import__("sqlite3").Connection, "enable_load_extension"),
                    reason="this Python's sqlite3 loads extensions into open connections")
def test_a_connection_opened_before_the_plugin_is_refused_on_a_tracked_database(
        db_path, tracked):
    out = run_python(LIBRARY_SCRIPT, db_path, "connection-first")
    assert out == {"error": (
        "sqlite-ct: this sqlite-utils connection was opened before sqlite-ct was "
        "registered, and this Python's sqlite3 cannot load extensions into an open "
        "connection; call sqlite_ct.register_auto_extension() (or import the "
        "integration) before the first connection is opened")}


# --- Datasette ---------------------------------------------------------------------

DATASETTE = """
import sys
sys._called_from_test = True
import datasette.plugins
import sqlite_ct.integrations.datasette as plugin
datasette.plugins.pm.register(plugin)
from datasette.cli import cli
sys.argv[0] = "datasette"
cli()
"""

DATASETTE_WRITE = r"""
import asyncio, json, sys
sys._called_from_test = True
import datasette.plugins
import sqlite_ct.integrations.datasette as plugin
datasette.plugins.pm.register(plugin)
from datasette.app import Datasette


async def main():
    ds = Datasette([sys.argv[1]])
    await ds.invoke_startup()
    db = ds.get_database("test")
    await db.execute_write("INSERT INTO items(id, name, qty) VALUES (7, 'seven', 7)")
    await db.execute_write("UPDATE items SET qty = 8 WHERE id = 7")
    result = await db.execute("SELECT sqlite_ct_last_committed_csn()")
    print(json.dumps({"csn": result.rows[0][0]}))


asyncio.run(main())
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_datasette_writes_and_queries_a_tracked_database(db_path, tracked):
    pytest.importorskip("datasette", reason="Datasette is not installed")
    out = run_python(DATASETTE_WRITE, db_path)
    changes = sqlite_ct.enumerate_changes(tracked, "items", since=0)
    assert changes.inserts == [{"id": 7, "name": "seven", "qty": 8}]
    assert out == {"csn": changes.new_anchor}

    # `datasette serve` over HTTP on 127.0.0.1: SQL can call sqlite-ct.
    port = free_port()
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    server = subprocess.Popen(
        [sys.executable, "-c", DATASETTE, "serve", db_path, "--host", "127.0.0.1",
         "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        url = (f"http://127.0.0.1:{port}/test.json?_shape=array&sql=" +
               urllib.parse.quote("SELECT sqlite_ct_last_committed_csn() AS csn, "
                                  "sqlite_ct_version() AS version"))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.loads(response.read())
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"datasette did not answer: {server.stdout.read()}")
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert body == [{"csn": changes.new_anchor, "version": sqlite_ct.__version__}]


# --- the entry points --------------------------------------------------------------

def test_the_packages_entry_points_register_both_plugins(tmp_path, db_path, tracked):
    """setup.py's entry points, as an installed package has them: the
    metadata setup.py writes (egg_info) on the path, and the tools' own
    command lines with no registration by hand."""
    setup_py = os.path.join(PACKAGE_PARENT, "setup.py")
    if not os.path.exists(setup_py):
        pytest.skip("not a source checkout: the installed package has its entry points")
    meta = tmp_path / "meta"
    meta.mkdir()
    subprocess.run([sys.executable, setup_py, "-q", "egg_info", "--egg-base", str(meta)],
                   cwd=PACKAGE_PARENT, check=True, capture_output=True, timeout=120)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(meta), PACKAGE_PARENT]))

    def tool(script, *args, stdin=None):
        proc = subprocess.run([sys.executable, "-c", script, *args], input=stdin, env=env,
                              capture_output=True, text=True, timeout=120)
        return ok(proc)

    # sqlite-utils' own command line, loading the installed entry points.
    installed = PLAIN_SQLITE_UTILS.replace("sys._called_from_test = True\n", "")
    assert installed != PLAIN_SQLITE_UTILS
    plugins = json.loads(tool(installed, "plugins"))
    assert {"name": "sqlite-ct", "hooks": ["prepare_connection"],
            "version": sqlite_ct.__version__} in plugins
    tool(installed, "insert", db_path, "items", "-",
         stdin=json.dumps([{"id": 1, "name": "one", "qty": 1}]))
    assert sqlite_ct.enumerate_changes(tracked, "items", since=0).inserts == [
        {"id": 1, "name": "one", "qty": 1}]
    pytest.importorskip("datasette", reason="Datasette is not installed")
    plugins = json.loads(tool("import sys\nfrom datasette.cli import cli\n"
                              "sys.argv[0] = 'datasette'\ncli()", "plugins"))
    assert [(p["version"], p["hooks"]) for p in plugins if p["name"] == "sqlite-ct"
            ] == [(sqlite_ct.__version__, ["prepare_connection"])]
