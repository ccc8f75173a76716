"""The sqlite-ct command as a user meets it: --help complete without the docs,
--json on every command that prints results, status that diagnoses one broken
table without failing for all, blobs that sqlite-utils reads back as blobs,
progress only on a terminal, and the command on a Python without apsw."""
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import textwrap

import apsw
import pytest

import sqlite_ct
from sqlite_ct import cli

from test_cli import COMMANDS, PACKAGE_PARENT, call, connect, db, run  # noqa: F401


def env_with_package():
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    env.pop("PYTHONHOME", None)
    return env


# --- help ---------------------------------------------------------------------

def test_help_is_complete_without_the_docs():
    proc = run("--help")
    assert proc.returncode == 0
    text = proc.stdout
    assert "docs/" not in text
    for line in ("exit codes:",
                 "  0  success (check: no problem found)",
                 '  1  an error, named on stderr as "sqlite-ct: error: ..."; check: problems found',
                 "  2  a usage error (bad option or argument), or the command is not available",
                 "--json prints one JSON object"):
        assert line in text, line


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_does_not_point_to_files_that_are_not_installed(command):
    code, out, _ = call(command, "--help")
    assert code == 0 and "docs/" not in out


def test_changes_help_describes_the_json_value_encoding():
    out = " ".join(call("changes", "--help")[1].split())
    assert '{"$base64": true, "encoded": BASE64}' in out
    assert '{"$float": "Infinity"}' in out


# --- --json everywhere ----------------------------------------------------------

def test_every_command_that_prints_results_has_json():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        if name in ("demo", "serve"):   # a transcript for people; a service
            continue
        assert any("--json" in a.option_strings for a in p._actions), name


def test_enable_disable_json(db):
    conn = connect(db)
    conn.execute("CREATE TABLE more(id INTEGER PRIMARY KEY)")
    conn.close()
    code, out, err = call("enable", db, "plain", "more", "--options", "insert,delete", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"database": db, "tables": [
        {"table": "plain", "options": ["insert", "delete"], "mode": "native", "enable_bsn": 6},
        {"table": "more", "options": ["insert", "delete"], "mode": "native", "enable_bsn": 6}]}
    code, out, err = call("disable", db, "plain", "more", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"database": db, "disabled": ["plain", "more"]}


def test_purge_json(db):
    code, out, _ = call("purge", db, "items", "--up-to-csn", "5", "--json")
    assert code == 0
    assert json.loads(out) == {"database": db, "tombstones": {"items": 1}}
    code, out, _ = call("purge", db, "--transactions", "--up-to-csn", "5", "--json")
    assert code == 0
    assert json.loads(out) == {"database": db, "transactions": 4}


# --- status diagnoses per table ---------------------------------------------------

def test_status_reports_a_disarmed_table_and_the_others(db):
    conn = connect(db)
    conn.execute("CREATE TABLE other(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "other")
    # A rebuild by another tool (or a hand) removed one of its triggers.
    conn.execute('DROP TRIGGER "__sysct_ad_other"')
    conn.close()
    code, out, err = call("status", db, "--json")
    assert (code, err) == (0, "")
    tables = {t["table"]: t for t in json.loads(out)["tables"]}
    assert tables["items"]["pending"] == {"inserts": 2, "updates": 0, "deletes": 0, "total": 2}
    assert tables["items"]["problem"] is None
    assert tables["other"]["pending"] is None
    assert tables["other"]["problem"] == (
        'table "other" lost its tracking triggers (was it rebuilt by another tool, such as '
        "sqlite-utils transform()?); changes made since were not tracked. Call "
        'create_schema(conn, "other") to re-arm it; replicas with older anchors will then '
        "be asked to reinitialise")
    code, out, err = call("status", db)
    assert (code, err) == (0, "")
    assert f"\nproblem: {tables['other']['problem']}\n" in out
    assert "\nitems  all " in out


# --- blobs as sqlite-utils encodes them -------------------------------------------

def test_changes_json_blobs_are_read_back_as_blobs_by_sqlite_utils(tmp_path):
    source = str(tmp_path / "source.db")
    conn = connect(source)
    conn.execute("CREATE TABLE files(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
    sqlite_ct.create_schema(conn, "files")
    conn.execute("INSERT INTO files(id, name, data) VALUES (1, 'a', x'00ff10'), (2, 'b', NULL)")
    conn.close()
    code, out, _ = call("changes", source, "files")
    assert code == 0
    rows = json.loads(out)["inserts"]
    target = str(tmp_path / "target.db")
    proc = subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "insert", target, "files", "-", "--pk", "id"],
        input=json.dumps(rows), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check = apsw.Connection(target)
    try:
        assert check.execute("SELECT id, name, data, typeof(data) FROM files ORDER BY id"
                             ).fetchall() == [(1, "a", b"\x00\xff\x10", "blob"),
                                              (2, "b", None, "null")]
    finally:
        check.close()


# --- progress on a terminal only ----------------------------------------------------

def run_with_stderr_on_a_terminal(*args):
    """`python3 -m sqlite_ct ARGS` with stderr on a pseudo-terminal: (code, stdout, what
    the terminal received)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "sqlite_ct", *[str(a) for a in args]],
                            env=env_with_package(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    received = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:   # EIO: the process closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    out = proc.stdout.read().decode()
    proc.stdout.close()
    return proc.wait(timeout=60), out, received.decode(errors="replace")


@pytest.fixture
def big(tmp_path):
    path = str(tmp_path / "big.db")
    conn = connect(path)
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                 "WHERE i < 20000) INSERT INTO big(id, v) SELECT i, 'row ' || i FROM n")
    conn.close()
    return path


def test_enable_and_purge_show_progress_on_a_terminal(big):
    code, out, terminal = run_with_stderr_on_a_terminal("enable", big, "big")
    assert code == 0, terminal
    assert out.startswith('tracking "big"')
    assert 'enabling tracking on "big" (20,000 rows)' in terminal
    code, out, terminal = run_with_stderr_on_a_terminal("purge", big, "big", "--up-to-csn", "1")
    assert code == 0, terminal
    assert 'purging the tombstones of "big"' in terminal


def test_no_progress_when_stderr_is_not_a_terminal(big):
    proc = run("enable", big, "big")
    assert (proc.returncode, proc.stderr) == (0, "")
    proc = run("purge", big, "--transactions", "--up-to-csn", "1")
    assert (proc.returncode, proc.stderr) == (0, "")


# --- without apsw ------------------------------------------------------------------

WITHOUT_APSW = textwrap.dedent("""
    import sys
    sys.modules["apsw"] = None      # as on an install without the [apsw] extra
    from sqlite_ct.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def run_without_apsw(*args):
    return subprocess.run([sys.executable, "-c", WITHOUT_APSW, *[str(a) for a in args]],
                          env=env_with_package(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_the_command_works_with_the_stdlib_sqlite3_when_apsw_is_missing(db):
    conn = connect(db)
    conn.execute("CREATE TABLE nokey(v TEXT)")
    conn.close()
    # One transaction on the stdlib's sqlite3 too: all tables or none.
    proc = run_without_apsw("enable", db, "plain", "nokey")
    assert proc.returncode == 1
    assert proc.stderr.startswith('sqlite-ct: error: table "nokey" has no PRIMARY KEY')
    conn = connect(db)
    assert not sqlite_ct.is_tracked(conn, "plain")
    conn.close()
    proc = run_without_apsw("enable", db, "plain")
    assert (proc.returncode, proc.stderr) == (0, "")
    proc = run_without_apsw("changes", db, "items", "--since", "2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["new_anchor"] == 6
    proc = run_without_apsw("status", db, "--json")
    assert proc.returncode == 0, proc.stderr
    assert [t["table"] for t in json.loads(proc.stdout)["tables"]] == ["items", "plain"]
    proc = run_without_apsw("status", str(db) + ".missing")
    assert (proc.returncode, proc.stderr) == (
        1, f'sqlite-ct: error: database "{db}.missing" does not exist\n')


# --- the README's command-line example -------------------------------------------

def readme_cli_example():
    readme_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "README.md")
    with open(readme_path, encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## Command line"):]
    block = section[section.index("```console\n") + 11:]
    return [line[2:] for line in block[:block.index("```")].splitlines()]


@pytest.mark.skipif(not shutil.which("sqlite3"), reason="no sqlite3 shell")
def test_the_readme_sync_example_creates_the_hub_it_uses(tmp_path):
    lines = readme_cli_example()
    sync_part = lines[next(i for i, l in enumerate(lines) if "hub.db" in l):]
    assert sync_part[0].startswith("sqlite3 hub.db ")
    conn = connect(str(tmp_path / "app.db"))
    conn.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT NOT NULL, "
                 "qty INTEGER NOT NULL)")
    conn.execute("INSERT INTO orders(id, item, qty) VALUES (1, 'apple', 3)")
    conn.close()
    script = (f'sqlite-ct() {{ "{sys.executable}" -m sqlite_ct "$@"; }}\nset -e\n'
              + "\n".join(sync_part) + "\n")
    proc = subprocess.run(["bash", "-c", script], cwd=str(tmp_path), env=env_with_package(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    phone = apsw.Connection(str(tmp_path / "phone.db"))
    try:
        assert phone.execute("SELECT id, item, qty FROM orders").fetchall() == [(1, "apple", 3)]
    finally:
        phone.close()
