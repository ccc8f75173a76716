"""A hub table rebuilt by another tool (the 12-step rebuild of sqlite-utils
transform() copies it into a new table without sqlite-ct's triggers) is
refused loudly by every sync step instead of being served as if nothing
changed; once re-armed, clients reinitialise and converge."""
from __future__ import annotations

import pytest

import sqlite_ct
from sqlite_ct import TableError

from .conftest import Client, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t VALUES (1, 'a'), (2, 'b')",)


def test_a_rebuilt_hub_table_is_refused_until_re_armed(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    # The 12-step rebuild, as sqlite-utils transform() runs it: the copy has
    # the tracking columns but none of the triggers.
    hub.execute("""BEGIN;
        CREATE TABLE t_new(id INTEGER PRIMARY KEY, v TEXT, "__sysChangeTxBsn" INTEGER,
                           "__sysInsertTxBsn" INTEGER, "__sysTrackingContext" BLOB);
        INSERT INTO t_new SELECT id, v, "__sysChangeTxBsn", "__sysInsertTxBsn",
                                 "__sysTrackingContext" FROM t;
        DROP TABLE t;
        ALTER TABLE t_new RENAME TO t;
        COMMIT""")
    hub.execute("INSERT INTO t(id, v) VALUES (3, 'untracked')")
    with pytest.raises(TableError, match="lost its tracking triggers"):
        x.sync()
    x.conn.execute("INSERT INTO t(id, v) VALUES (4, 'from x')")
    with pytest.raises(TableError):
        x.sync()
    sqlite_ct.create_schema(hub, "t")
    for _ in range(2):
        try:
            x.sync()
            break
        except sqlite_ct.sync.ReinitialiseRequired:
            x.agent.reinitialise()
    assert user_rows(x.conn, "t") == user_rows(hub, "t") == [
        (1, "a"), (2, "b"), (3, "untracked"), (4, "from x")]
