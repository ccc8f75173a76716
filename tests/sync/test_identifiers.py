"""Identifiers that need quoting, composite keys of every SQLite type,
WITHOUT ROWID, a column named rowid, values of every kind."""
from __future__ import annotations

import pytest

from .conftest import Client, user_rows

ODD = ('CREATE TABLE "odd ""table"" ü" ("key part" TEXT, "n" REAL, "b" BLOB, "rowid" INTEGER, '
       '"value ""quoted""" ANY, PRIMARY KEY("key part", "n", "b"))')
VALUES = [("a", 1.5, b"\x00\x01", 7, "text\x00nul"), ("a", -0.0, b"", None, 2 ** 63 - 1),
          ("é", float("inf"), b"\xff" * 300, -1, b"blob"), ("", -1e300, b"x", 0, None)]


@pytest.mark.parametrize("without_rowid", [False, True])
@pytest.mark.parametrize("batch_size", [None, 1])
def test_odd_table(conns, hub_with, without_rowid, batch_size):
    schema = ODD + (" WITHOUT ROWID" if without_rowid else "")
    hub, server = hub_with(schema, seed=())
    table = 'odd "table" ü'
    cols = '"key part", "n", "b", "rowid", "value ""quoted"""'
    hub.executemany(f'INSERT INTO "odd ""table"" ü" ({cols}) VALUES (?, ?, ?, ?, ?)', VALUES)
    a = Client(conns(), server, [table], batch_size=batch_size)
    b = Client(conns(), server, [table], batch_size=batch_size)
    a.sync()
    b.sync()
    assert user_rows(a.conn, table) == user_rows(hub, table)
    a.conn.execute('UPDATE "odd ""table"" ü" SET "value ""quoted""" = 42 WHERE "key part" = \'a\'')
    a.conn.execute('DELETE FROM "odd ""table"" ü" WHERE "key part" = \'é\'')
    b.conn.execute(f'INSERT INTO "odd ""table"" ü" ({cols}) VALUES (\'new\', 0, x\'01\', 1, 1)')
    for _ in range(2):
        a.sync()
        b.sync()
    assert user_rows(a.conn, table) == user_rows(b.conn, table) == user_rows(hub, table)
    assert len(user_rows(hub, table)) == 4
