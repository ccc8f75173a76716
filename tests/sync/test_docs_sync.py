"""docs/sync.md stays runnable: its first Python block runs as written, and
the filter snippet matches the API."""
from __future__ import annotations

import contextlib
import io
import os
import re

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "sync.md")


def blocks():
    with open(DOC, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def test_the_runnable_example_runs():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks()[0], "docs/sync.md", "exec"), {})
    assert out.getvalue().split("\n") == ["1 0", "1 1", "0 1", ""]


def test_the_filter_snippet_runs(conns):
    hub, conn = conns(), conns()
    hub.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT)")
    hub.execute("INSERT INTO notes VALUES (1, 'alice'), (2, 'bob')")
    from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent
    namespace = {"hub": hub, "conn": conn, "ClientSyncProvider": ClientSyncProvider,
                 "ServerSyncProvider": ServerSyncProvider, "SyncAgent": SyncAgent}
    exec(blocks()[1], namespace)
    namespace["agent"].synchronize()
    assert conn.execute("SELECT id, owner FROM notes").fetchall() == [(1, "alice")]
