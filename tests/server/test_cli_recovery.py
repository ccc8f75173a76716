"""The recovery commands against a real `sqlite-ct serve` process: `sqlite-ct
sync CLIENT URL` that the service refuses (410 reinitialise, 409
replica_copied) exits 3 or 4 naming the command to run, and that command,
run as a process too, makes the client converge without losing its unsent
changes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import sqlite_ct

from .conftest import ALICE, REPO, connect, rows


@pytest.fixture
def service(start_service):
    return start_service()


def cli(*args: str, token=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("SQLITE_CT_TOKEN", None)
    if token is not None:
        env["SQLITE_CT_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "sqlite_ct", *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def write(path: str, sql: str) -> None:
    conn = connect(path)
    conn.execute(sql)
    conn.close()


def notes(path: str, where: str = "1"):
    conn = connect(path)
    try:
        return rows(conn, where)
    finally:
        conn.close()


def test_purged_hub_tombstones_name_reinitialise_which_converges(service, tmp_path):
    alice = str(tmp_path / "alice.db")
    hub = os.path.join(service.workdir, "hub.db")
    proc = cli("sync", alice, service.url, "--token", ALICE)
    assert proc.returncode == 0, proc.stderr
    conn = connect(hub)
    conn.execute("DELETE FROM notes WHERE id = 3")
    sqlite_ct.purge_tombstones(conn, "notes", up_to_csn=sqlite_ct.last_committed_csn(conn))
    conn.close()
    proc = cli("sync", alice, service.url, "--token", ALICE)
    assert (proc.returncode, proc.stdout) == (3, "")
    first, second = proc.stderr.splitlines()
    assert first.startswith("sqlite-ct: error: ") and "reinitialise" in first
    assert second == (f"sqlite-ct: run: sqlite-ct reinitialise {alice} {service.url} "
                      f"--token TOKEN (brings the client back in line with the hub; unsent "
                      f"changes are kept)")
    assert [r[0] for r in notes(alice)] == [1, 3]
    write(alice, "INSERT INTO notes(id, owner, body) VALUES (10, 'alice', 'unsent')")
    proc = cli("reinitialise", alice, service.url, "--token", ALICE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == [
        f"reinitialised {alice} from {service.url}: notes",
        "uploaded 1 change(s): 1 applied, 0 failed"]
    assert notes(alice) == notes(hub, "owner = 'alice'") == [
        (1, "alice", "a1"), (10, "alice", "unsent")]
    assert cli("sync", alice, service.url, "--token", ALICE).returncode == 0


def test_a_copied_client_database_names_reidentify_which_converges(service, tmp_path):
    alice, tablet = str(tmp_path / "alice.db"), str(tmp_path / "tablet.db")
    hub = os.path.join(service.workdir, "hub.db")
    assert cli("sync", alice, service.url, token=ALICE).returncode == 0
    shutil.copy(alice, tablet)
    write(alice, "INSERT INTO notes(id, owner, body) VALUES (12, 'alice', 'from the phone')")
    assert cli("sync", alice, service.url, token=ALICE).returncode == 0
    write(tablet, "INSERT INTO notes(id, owner, body) VALUES (13, 'alice', 'from the tablet')")
    proc = cli("sync", tablet, service.url, token=ALICE)
    assert (proc.returncode, proc.stdout) == (4, "")
    # The token came from SQLITE_CT_TOKEN, so the command to run needs no --token.
    assert proc.stderr.splitlines()[-1] == (
        f"sqlite-ct: run: sqlite-ct reidentify {tablet} {service.url} (gives {tablet} its "
        f"own client id; unsent changes are kept)")
    proc = cli("reidentify", tablet, service.url, token=ALICE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{tablet} has a new client id: ")
    assert cli("sync", alice, service.url, token=ALICE).returncode == 0
    expected = notes(hub, "owner = 'alice'")
    assert [r[0] for r in expected] == [1, 3, 12, 13]
    assert notes(alice) == notes(tablet) == expected


def test_reinitialise_refuses_a_table_the_service_does_not_serve(service, tmp_path):
    alice = str(tmp_path / "alice.db")
    assert cli("sync", alice, service.url, token=ALICE).returncode == 0
    proc = cli("reinitialise", alice, service.url, "--table", "nope", token=ALICE)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (f'sqlite-ct: error: the service at {service.url} does not serve '
                           f'table "nope"; it offers: notes\n')
    proc = cli("reidentify", alice, service.url)
    assert (proc.returncode, proc.stderr) == (
        2, "sqlite-ct: error: syncing with a service needs a token: --token TOKEN (or the "
           "SQLITE_CT_TOKEN environment variable)\n")
