"""The mapping between client SQLite values and PostgreSQL columns
(docs/postgres.md#types): exact both ways, and a value that does not fit is
refused with a message naming it, with nothing written."""
import datetime
import decimal
import math
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pg_fixtures import sqlite_client, user_rows
from sqlite_ct.sync import ApplyAction, ClientSyncProvider, ConflictType, SyncAgent, SyncError
from sqlite_ct.sync.pg import _types

COLUMNS = {
    "i2": "smallint", "i4": "integer", "i8": "bigint", "f4": "real", "f8": "double precision",
    "num": "numeric", "num2": "numeric(6,2)", "b": "boolean", "t": "text",
    "vc": "varchar(5)", "blob": "bytea", "u": "uuid", "j": "jsonb", "d": "date",
    "ts": "timestamp", "tstz": "timestamptz",
}


@pytest.fixture
def typed(pg_exec, pg_provider):
    cols = ", ".join(f"{c} {t}" for c, t in COLUMNS.items())
    pg_exec(f"CREATE TABLE v (id integer PRIMARY KEY, {cols})")
    return pg_provider


def agent(server):
    conn = sqlite_client()
    return conn, SyncAgent(ClientSyncProvider(conn), server, ["v"])


GOOD = {"i2": -32768, "i4": 2 ** 31 - 1, "i8": -2 ** 63, "f4": 0.5, "f8": 0.1, "num": 12345,
        "num2": 1234.5, "b": 1, "t": "h\u00e9llo \U0001f600", "vc": "five!",
        "blob": b"\x00\xff\x00", "u": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
        "j": '{"b": [1, 2], "a": null}', "d": "2026-12-07",
        "ts": "2026-12-07 04:40:00.123456", "tstz": "2026-12-07T06:40:00+02:00"}
# What every client gets back (text forms are normalised by the hub).
BACK = dict(GOOD, u="6f9619ff-8b86-d011-b42d-00c04fc964ff", j='{"a": null, "b": [1, 2]}',
            tstz="2026-12-07 04:40:00+00:00")


def test_supported_values_upload_and_download_exactly(typed, pg_exec):
    server = typed()
    a, sync_a = agent(server)
    b, sync_b = agent(server)
    sync_a.synchronize()
    sync_b.synchronize()
    cols = ", ".join(GOOD)
    marks = ", ".join("?" for _ in GOOD)
    a.execute(f"INSERT INTO v (id, {cols}) VALUES (1, {marks})", tuple(GOOD.values()))
    a.execute("INSERT INTO v (id) VALUES (2)")      # NULL everywhere
    sync_a.synchronize()
    hub = pg_exec(f"SELECT {cols} FROM v WHERE id = 1")[0]
    assert hub == (-32768, 2 ** 31 - 1, -2 ** 63, 0.5, 0.1, decimal.Decimal(12345),
                   decimal.Decimal("1234.50"), True, GOOD["t"], "five!", b"\x00\xff\x00",
                   uuid.UUID(GOOD["u"]), {"a": None, "b": [1, 2]}, datetime.date(2026, 12, 7),
                   datetime.datetime(2026, 12, 7, 4, 40, 0, 123456),
                   datetime.datetime(2026, 12, 7, 4, 40, tzinfo=datetime.timezone.utc))
    assert pg_exec(f"SELECT {cols} FROM v WHERE id = 2")[0] == (None,) * len(GOOD)
    sync_b.synchronize()
    got = dict(zip(GOOD, user_rows(b, "v")[0][1:]))
    assert got == BACK
    assert [type(got[k]) for k in ("i8", "f8", "num", "num2", "b", "blob")] == \
        [int, float, int, float, int, bytes]
    assert user_rows(b, "v")[1] == (2,) + (None,) * len(GOOD)


def test_numeric_that_a_real_cannot_hold_arrives_as_text(typed, pg_exec):
    server = typed()
    a, sync_a = agent(server)
    pg_exec("INSERT INTO v (id, num) VALUES (1, 0.1), (2, 12345678901234567890.123456789), "
            "(3, 99999999999999999999)")
    sync_a.synchronize()
    assert [r[6] for r in user_rows(a, "v")] == [
        0.1, "12345678901234567890.123456789", "99999999999999999999"]
    assert pg_exec("SELECT count(*) FROM v WHERE num IS NULL") == [(0,)]


@pytest.mark.parametrize("column, value, message", [
    ("i2", 40000, "is out of the range of smallint"),
    ("i4", 1.5, "is not an integer"),
    ("i8", "twelve", "is not an integer"),
    ("f8", "abc", "is not a number"),
    ("f4", 0.1, "would be rounded by a real (4-byte) column; use double precision"),
    ("num2", 1.005, "has more than 2 decimal places"),
    ("num2", 123456.0, "has more than 6 significant digits"),
    ("b", 2, "is not 0 or 1"),
    ("t", "nul\x00byte", "contains a NUL character"),
    ("t", b"bytes", "is not text (a blob)"),
    ("blob", "text", "is not a blob"),
    ("u", "not-a-uuid", "is not a UUID"),
    ("j", "{bad json", "is not valid JSON"),
    ("d", "07/12/2026", "is not an ISO 8601 date"),
    ("ts", "2026-12-07 04:40:00+02:00", "has a UTC offset"),
    ("tstz", "yesterday", "is not an ISO 8601 timestamp"),
])
def test_a_value_that_does_not_fit_is_refused_and_nothing_is_lost(typed, pg_exec, column,
                                                                  value, message):
    server = typed()
    a, sync_a = agent(server)
    sync_a.synchronize()
    a.execute("INSERT INTO v (id, t) VALUES (1, 'fine')")
    a.execute(f"INSERT INTO v (id, {column}) VALUES (2, ?)", (value,))
    # Refused, not converted: the row goes to the client's conflict inbox
    # with the reason, and the rest of the upload goes through.
    stats = sync_a.synchronize()
    assert (stats.upload_changes_applied, stats.upload_changes_failed,
            stats.conflicts_deferred) == (1, 1, 1)
    assert pg_exec("SELECT id FROM v") == [(1,)]
    [stored] = sync_a.client.conflicts("v")
    assert stored.key == {"id": 2} and stored.client_row[column] == value
    assert f'column "{column}"' in stored.error and message in stored.error
    # With a handler, the handler is asked instead.
    seen = []

    def skip(conflict):
        seen.append((conflict.type, conflict.key, message in conflict.error))
        return ApplyAction.CONTINUE
    server2 = typed(on_apply_change_failed=skip)
    sync_a.server = server2
    a.execute(f"INSERT INTO v (id, {column}) VALUES (3, ?)", (value,))
    stats = sync_a.synchronize()
    assert seen == [(ConflictType.ERRORS_OCCURRED, {"id": 3}, True)]
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 1)
    assert pg_exec("SELECT id FROM v") == [(1,)]


def test_varchar_overflow_is_a_row_error_from_the_server(typed, pg_exec):
    server = typed()
    a, sync_a = agent(server)
    sync_a.synchronize()
    a.execute("INSERT INTO v (id, vc) VALUES (1, 'toolong')")
    stats = sync_a.synchronize()
    assert stats.conflicts_deferred == 1
    [stored] = sync_a.client.conflicts("v")
    assert (stored.type, stored.key) == (ConflictType.ERRORS_OCCURRED, {"id": 1})
    assert "too long for type character varying" in stored.error


def test_every_type_maps_to_a_client_declared_type(typed):
    schema = typed().get_schema(["v"]).tables["v"]
    assert {c.name: c.type for c in schema.columns} == {
        "id": "INTEGER", "i2": "INTEGER", "i4": "INTEGER", "i8": "INTEGER", "f4": "REAL",
        "f8": "REAL", "num": "", "num2": "", "b": "BOOLEAN", "t": "TEXT",
        "vc": "TEXT", "blob": "BLOB", "u": "TEXT", "j": "TEXT", "d": "TEXT", "ts": "TEXT",
        "tstz": "TEXT"}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(-2 ** 63, 2 ** 63 - 1),
                          st.floats(allow_nan=False),
                          st.text(alphabet=st.characters(blacklist_characters="\x00",
                                                         blacklist_categories=("Cs",))),
                          st.binary()), min_size=1, max_size=5))
def test_any_int_real_text_blob_round_trips_through_the_hub(pg_exec, pg_provider, values):
    pg_exec("DROP TABLE IF EXISTS r")
    pg_exec("DROP TABLE IF EXISTS sqlite_ct.c_r")
    pg_exec("DELETE FROM sqlite_ct.tracked_tables WHERE table_name = 'r'") \
        if pg_exec("SELECT to_regclass('sqlite_ct.tracked_tables')")[0][0] else None
    pg_exec("CREATE TABLE r (id integer PRIMARY KEY, i bigint, f double precision, t text, "
            "b bytea)")
    server = pg_provider()
    a = sqlite_client()
    b = sqlite_client()
    sync_a = SyncAgent(ClientSyncProvider(a), server, ["r"])
    sync_b = SyncAgent(ClientSyncProvider(b), server, ["r"])
    sync_a.synchronize()
    for n, row in enumerate(values):
        a.execute("INSERT INTO r (id, i, f, t, b) VALUES (?, ?, ?, ?, ?)", (n, *row))
    sync_a.synchronize()
    sync_b.synchronize()
    got = user_rows(b, "r")
    want = user_rows(a, "r")
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[:2] == w[:2] and g[3:] == w[3:]
        assert g[2] == w[2] and math.copysign(1, g[2]) == math.copysign(1, w[2])


def test_unit_conversions_without_a_server():
    # Reachable from a client table with its own declared types.
    with pytest.raises(_types.Unfit, match="cannot be represented exactly"):
        _types.to_pg(2 ** 53 + 1, "float", "double precision", "t", "c")
    assert _types.to_pg(1.0, "int", "integer", "t", "c") == 1
    assert _types.to_pg("1.10", "numeric", "numeric(5,2)", "t", "c") == decimal.Decimal("1.10")
    with pytest.raises(_types.Unfit, match='value 1.5 for column "c" \\(integer\\) of table '
                                           '"t" is not an integer'):
        _types.to_pg(1.5, "int", "integer", "t", "c")


def test_a_handler_can_fix_a_value_that_does_not_fit(typed, pg_exec):
    def fix(conflict):
        conflict.client_row["i2"] = 32767
        return ApplyAction.RETRY_APPLYING_ROW
    server = typed(on_apply_change_failed=fix)
    a, sync_a = agent(server)
    sync_a.synchronize()
    a.execute("INSERT INTO v (id, i2) VALUES (1, 99999)")
    stats = sync_a.synchronize()
    assert [c.type for c in stats.conflicts] == [ConflictType.ERRORS_OCCURRED]
    assert pg_exec("SELECT id, i2 FROM v") == [(1, 32767)]
    sync_a.synchronize()
    assert user_rows(a, "v")[0][:2] == (1, 32767)    # the edited row travelled back


def test_column_defaults_the_client_can_use_are_passed_on(pg_exec, pg_provider):
    pg_exec("CREATE TABLE d (id serial PRIMARY KEY, n integer NOT NULL DEFAULT 7, "
            "s text DEFAULT 'it''s', f boolean DEFAULT false, r double precision DEFAULT -1.5, "
            "at timestamptz DEFAULT now())")
    schema = pg_provider().get_schema(["d"]).tables["d"]
    assert {c.name: (c.default, c.not_null) for c in schema.columns} == {
        "id": (None, True), "n": ("7", True), "s": ("'it''s'", False), "f": ("0", False),
        "r": ("-1.5", False), "at": (None, False)}


def test_values_are_exact_whatever_the_sessions_defaults(pg_dsn, pg_exec, pg_provider):
    pg_exec("CREATE TABLE s (id double precision PRIMARY KEY, at timestamptz, d date)")
    db = pg_exec("SELECT current_database()")[0][0]
    pg_exec(f'ALTER DATABASE "{db}" SET extra_float_digits = -3')
    pg_exec(f'ALTER DATABASE "{db}" SET DateStyle = \'SQL, DMY\'')
    pg_exec(f'ALTER DATABASE "{db}" SET TimeZone = \'America/New_York\'')
    try:
        pg_exec("INSERT INTO s VALUES (0.1::float8 + 0.2::float8, '2026-12-07 04:40:00+00', "
                "'2026-12-07'), (0.3, NULL, NULL)")
        server = pg_provider()
        client = sqlite_client()
        agent = SyncAgent(ClientSyncProvider(client), server, ["s"], batch_size=1)
        agent.synchronize()
        assert user_rows(client, "s") == [(0.3, None, None), (0.30000000000000004,
                                          "2026-12-07 04:40:00+00:00", "2026-12-07")]
    finally:
        pg_exec(f'ALTER DATABASE "{db}" RESET ALL')
