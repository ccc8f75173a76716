"""sqlite_ct.sync.demo.run(): the README's two-clients-through-a-hub example."""
from __future__ import annotations

import os

import apsw

from sqlite_ct.sync import demo


def test_demo_transcript(tmp_path):
    text = demo.run(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["alice.db", "bob.db", "hub.db"]
    lines = text.splitlines()
    assert lines[0] == "1. The hub has a tasks table; alice and bob sync for the first time."
    assert lines[1] == ("   The hub is served by the sync service over HTTP on loopback "
                        "(sqlite-ct serve); each client has its own token.")
    assert "   alice syncs: uploaded 1 (applied 1, failed 0), downloaded 0" in lines
    assert "     conflict ClientUpdateServerUpdate on tasks {'id': 't2'}:" in lines
    assert "       -> server wins (Continue)" in lines
    round4 = lines.index("4. A second round with no edits moves nothing.")
    assert lines[round4 + 1:round4 + 3] == [
        "   alice syncs: uploaded 0 (applied 0, failed 0), downloaded 0",
        "   bob syncs: uploaded 0 (applied 0, failed 0), downloaded 0"]
    assert lines[-1] == "    all three databases are equal"
    rows = [apsw.Connection(str(tmp_path / f"{n}.db")).execute(
        "SELECT id, title, done FROM tasks ORDER BY id").fetchall()
        for n in ("hub", "alice", "bob")]
    assert rows[0] == rows[1] == rows[2] == [
        ("t1", "Write the spec", 1), ("t2", "Review the spec (alice)", 0), ("t3", "Ship it", 0)]


def test_demo_runs_again_in_the_same_directory(tmp_path):
    first = demo.run(str(tmp_path))
    assert demo.run(str(tmp_path)) == first


def test_demo_without_http_opens_the_hub_in_process(tmp_path):
    text = demo.run(str(tmp_path), http=False)
    assert "over HTTP" not in text
    assert text.splitlines()[-1] == "    all three databases are equal"
