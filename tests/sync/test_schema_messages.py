"""A schema message is checked at the boundary and nothing of it is pasted
into SQL: a crafted default or type cannot run SQL on the client; literal
defaults of every kind still arrive."""
from __future__ import annotations

import dataclasses

import pytest

from sqlite_ct.sync import ColumnSchema, ServerSyncProvider, SyncError

from .conftest import Client

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"


class Tampering(ServerSyncProvider):
    """A server (or a man in the middle) sending an edited schema."""

    def __init__(self, conn, edit):
        super().__init__(conn)
        self.edit = edit

    def get_schema(self, tables):
        schema = super().get_schema(tables)
        return dataclasses.replace(schema, tables={
            name: self.edit(ts) for name, ts in schema.tables.items()})


def with_column(ts, **changes):
    cols = tuple(dataclasses.replace(c, **changes) if c.name == "v" else c for c in ts.columns)
    return dataclasses.replace(ts, columns=cols)


def tables(conn):
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' "
                                       "AND name NOT LIKE '\\_\\_sys%' ESCAPE '\\'")]


def test_a_crafted_default_runs_no_sql(conns, hub_with):
    hub, _ = hub_with(SCHEMA)
    evil = "1); CREATE TABLE evil(x); CREATE TABLE u(y DEFAULT (2"
    x = Client(conns(), Tampering(hub, lambda ts: with_column(ts, default=evil)), ["t"])
    with pytest.raises(SyncError) as info:
        x.sync()
    assert str(info.value) == (
        f'sqlite-ct sync: column "v" of table "t" has DEFAULT {evil!r}, which is not a '
        "literal; the client creates literal defaults only: create the table on the client "
        "yourself (TableCreationOption.USE_EXISTING_TABLE_OR_FAIL)")
    assert tables(x.conn) == []


@pytest.mark.parametrize("ctype", ["TEXT, evil INTEGER", "TEXT) ; DROP TABLE x; --",
                                   "INT DEFAULT 5", "TEXT CHECK(1)",
                                   "TEXT COLLATE nocase", "INT REFERENCES x"])
def test_a_crafted_type_is_refused(conns, hub_with, ctype):
    hub, _ = hub_with(SCHEMA)
    x = Client(conns(), Tampering(hub, lambda ts: with_column(ts, type=ctype)), ["t"])
    with pytest.raises(SyncError, match="which is not a type name"):
        x.sync()
    assert tables(x.conn) == []


def test_server_sent_constraints_and_odd_columns_are_refused(conns, hub_with):
    hub, _ = hub_with(SCHEMA)
    cases = [
        lambda ts: dataclasses.replace(ts, constraints=("CHECK(1)",)),
        lambda ts: dataclasses.replace(ts, columns=ts.columns + (ColumnSchema("__sysX"),)),
        lambda ts: dataclasses.replace(ts, columns=ts.columns + (ColumnSchema("V"),)),
        lambda ts: dataclasses.replace(ts, primary_key=("nope",)),
        lambda ts: dataclasses.replace(ts, name="other"),
    ]
    for edit in cases:
        x = Client(conns(), Tampering(hub, edit), ["t"])
        with pytest.raises(SyncError):
            x.sync()
        assert tables(x.conn) == []


def test_literal_defaults_arrive(conns, hub_with):
    hub, server = hub_with(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, a INTEGER DEFAULT -5, b REAL DEFAULT (1.5e3), "
        "c TEXT DEFAULT 'it''s; DROP TABLE t', d BLOB DEFAULT x'00ff', e DEFAULT NULL, "
        "f TEXT DEFAULT CURRENT_DATE, g VARCHAR(20) DEFAULT 0x10, h NUMERIC(10, 2) NOT NULL "
        "DEFAULT TRUE)", seed=())
    x = Client(conns(), server, ["t"])
    x.sync()
    x.conn.execute("INSERT INTO t(id) VALUES (1)")
    row = x.conn.execute("SELECT a, b, c, d, e, f IS NOT NULL, g, h FROM t").fetchone()
    assert row == (-5, 1500.0, "it's; DROP TABLE t", b"\x00\xff", None, 1, "16", 1)
    types = [r[0] for r in x.conn.execute("SELECT type FROM pragma_table_info('t') "
                                          "WHERE name NOT LIKE '\\_\\_sys%' ESCAPE '\\'")]
    assert types == ["INTEGER", "INTEGER", "REAL", "TEXT", "BLOB", "", "TEXT", "VARCHAR(20)",
                     "NUMERIC(10, 2)"]
