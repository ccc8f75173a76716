"""What enumeration keeps between calls, and what makes it read again.

enumerate_changes() keeps, per connection and table, its one statement (built
from the table's columns and sqlite_ct_changes_sql()) with the schema token
it was built at; sqlite_ct_changes() keeps its prepared statements and each
table's shape (triggers, WITHOUT ROWID, key columns) per schema version.
Each test here changes what a kept thing was derived from, mostly through
another connection between two calls, and fails if the kept thing were used
as it was: a column added elsewhere shows up, a table disabled or renamed
elsewhere is refused, a rebuilt key is unpacked as it is now, purged
tombstones expire the anchor, another connection that takes a closed one's
id() is not mistaken for it. A hypothesis test checks that enumerate_changes()
gives exactly what sqlite_ct_changes() joined back to the table gives."""
import sqlite3
import uuid

import apsw
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sqlite_ct
from sqlite_ct import changes as changes_mod
from sqlite_ct import loader


def open_conn(host, path):
    if host == "apsw":
        conn = apsw.Connection(path)
    else:
        loader.register_auto_extension()
        conn = sqlite3.connect(path, isolation_level=None)
    loader.load(conn)
    conn.execute("PRAGMA synchronous=OFF")
    return conn


@pytest.fixture(params=["apsw", "sqlite3"])
def two(request, db_path):
    """Two connections to one file, on the same host: the reader (kept
    statements) and the other one (schema changes)."""
    a, b = open_conn(request.param, db_path), open_conn(request.param, db_path)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def setup_items(conn):
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    sqlite_ct.create_schema(conn, "items")
    conn.execute("INSERT INTO items(id, name) VALUES(1, 'a')")
    conn.execute("INSERT INTO items(id, name) VALUES(2, 'b')")


def plain(cs):
    return (cs.inserts, cs.updates, cs.deletes, cs.new_anchor)


def statements(conn, fn):
    """The SQL statements fn() runs on conn (the host's trace)."""
    seen = []
    if isinstance(conn, apsw.Connection):
        conn.exec_trace = lambda cursor, sql, bindings: seen.append(sql) or True
        try:
            fn()
        finally:
            conn.exec_trace = None
    else:
        conn.set_trace_callback(seen.append)
        try:
            fn()
        finally:
            conn.set_trace_callback(None)
    return [s for s in seen if not s.startswith("--")]


def test_a_primed_enumeration_runs_one_statement(conn):
    setup_items(conn)
    sqlite_ct.enumerate_changes(conn, "items", 0)
    ran = statements(conn, lambda: sqlite_ct.enumerate_changes(conn, "items", 0))
    assert len(ran) == 1 and "sqlite_ct_snapshot()" in ran[0], ran


def test_a_column_added_by_another_connection_shows_up(two):
    reader, other = two
    setup_items(other)
    first = sqlite_ct.enumerate_changes(reader, "items", 0)
    assert first.inserts == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    other.execute("ALTER TABLE items ADD COLUMN qty INTEGER DEFAULT 7")
    other.execute("UPDATE items SET qty = 9 WHERE id = 2")
    second = sqlite_ct.enumerate_changes(reader, "items", 0)
    assert second.inserts == [{"id": 1, "name": "a", "qty": 7},
                              {"id": 2, "name": "b", "qty": 9}]
    third = sqlite_ct.enumerate_changes(reader, "items", first.new_anchor)
    assert third.updates == [{"id": 2, "name": "b", "qty": 9}]


def test_a_column_dropped_by_another_connection_goes(two):
    reader, other = two
    setup_items(other)
    other.execute("ALTER TABLE items ADD COLUMN extra TEXT")
    assert sqlite_ct.enumerate_changes(reader, "items", 0).inserts[0] == {
        "id": 1, "name": "a", "extra": None}
    other.execute("ALTER TABLE items DROP COLUMN extra")
    assert sqlite_ct.enumerate_changes(reader, "items", 0).inserts[0] == {"id": 1, "name": "a"}


def test_a_table_disabled_by_another_connection_is_refused(two):
    reader, other = two
    setup_items(other)
    sqlite_ct.enumerate_changes(reader, "items", 0)
    sqlite_ct.disable_tracking(other, "items")
    with pytest.raises(sqlite_ct.NotTrackedError):
        sqlite_ct.enumerate_changes(reader, "items", 0)
    # and through the virtual table, whose kept shape is of the old schema
    with pytest.raises((apsw.Error, sqlite3.Error), match="is not tracked"):
        list(reader.execute("SELECT * FROM sqlite_ct_changes('items', 0)"))


def test_a_table_renamed_by_another_connection(two):
    reader, other = two
    setup_items(other)
    sqlite_ct.enumerate_changes(reader, "items", 0)
    other.execute("ALTER TABLE items RENAME TO goods")
    with pytest.raises(sqlite_ct.NotTrackedError):
        sqlite_ct.enumerate_changes(reader, "items", 0)
    assert sqlite_ct.enumerate_changes(reader, "goods", 0).inserts == [
        {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def test_a_table_rebuilt_with_another_key_elsewhere(two):
    """The same name, a new shape: a composite key in a WITHOUT ROWID table.
    The kept rowid join, key list and unpacking would all be wrong."""
    reader, other = two
    setup_items(other)
    other.execute("DELETE FROM items WHERE id = 1")
    assert sqlite_ct.enumerate_changes(reader, "items", 0).inserts == [{"id": 2, "name": "b"}]
    assert list(reader.execute("SELECT row_rowid FROM sqlite_ct_changes('items', 0)")) == [(2,)]
    sqlite_ct.disable_tracking(other, "items")
    other.execute("DROP TABLE items")
    other.execute("CREATE TABLE items(a TEXT, b INTEGER, v TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID")
    sqlite_ct.create_schema(other, "items")
    start = sqlite_ct.last_committed_csn(other)
    other.execute("INSERT INTO items(a, b, v) VALUES('x', 1, 'one'), ('y', 2, 'two')")
    other.execute("DELETE FROM items WHERE a = 'y'")
    other.execute("UPDATE items SET v = 'uno' WHERE a = 'x'")
    got = sqlite_ct.enumerate_changes(reader, "items", start)
    assert got.inserts == [{"a": "x", "b": 1, "v": "uno"}]
    assert got.deletes == []
    assert [tuple(r) for r in reader.execute(
        "SELECT op, sqlite_ct_unpack_key(pk, 0), sqlite_ct_unpack_key(pk, 1), row_rowid "
        "FROM sqlite_ct_changes('items', ?)", (start,))] == [("I", "x", 1, None)]


def test_purged_tombstones_expire_a_kept_anchor(two):
    """The registry's oldest kept change is data, not schema: read every call."""
    reader, other = two
    setup_items(other)
    anchor = sqlite_ct.last_committed_csn(other)
    other.execute("DELETE FROM items WHERE id = 1")
    assert sqlite_ct.enumerate_changes(reader, "items", anchor).deletes == [{"id": 1}]
    sqlite_ct.purge_tombstones(other, "items", up_to_csn=sqlite_ct.last_committed_csn(other))
    with pytest.raises(sqlite_ct.AnchorExpiredError):
        sqlite_ct.enumerate_changes(reader, "items", anchor)


def test_own_write_transaction_is_refused_after_priming(conn):
    setup_items(conn)
    sqlite_ct.enumerate_changes(conn, "items", 0)
    conn.execute("BEGIN")
    conn.execute("UPDATE items SET name = 'z' WHERE id = 1")
    with pytest.raises(sqlite_ct.Error) as err:
        sqlite_ct.enumerate_changes(conn, "items", 0)
    assert str(err.value) == ("sqlite-ct: cannot enumerate changes inside a transaction "
                              "that has written to tracked tables; commit or roll it back "
                              "first")
    conn.execute("ROLLBACK")


def test_a_column_added_inside_the_callers_transaction(conn):
    setup_items(conn)
    sqlite_ct.enumerate_changes(conn, "items", 0)
    conn.execute("BEGIN")
    conn.execute("ALTER TABLE items ADD COLUMN w")
    assert sqlite_ct.enumerate_changes(conn, "items", 0).inserts[0] == {
        "id": 1, "name": "a", "w": None}
    conn.execute("ROLLBACK")
    assert sqlite_ct.enumerate_changes(conn, "items", 0).inserts[0] == {"id": 1, "name": "a"}


def test_a_schema_rolled_back_is_not_kept(two):
    """A schema change rolled back leaves schema_version where it was, and
    the next committed change gives that number to another schema: what was
    read inside the rolled-back transaction (no column added there, only an
    index) must not stand for the column another connection adds next."""
    reader, other = two
    setup_items(other)
    sqlite_ct.enumerate_changes(reader, "items", 0)
    reader.execute("BEGIN")
    reader.execute("CREATE INDEX items_name ON items(name)")
    assert sqlite_ct.enumerate_changes(reader, "items", 0).inserts[0] == {"id": 1, "name": "a"}
    assert reader.execute("SELECT sqlite_ct_schema_token()").fetchone()[0] is None
    assert list(reader.execute("SELECT row_rowid FROM sqlite_ct_changes('items', 0)")) == [
        (1,), (2,)]
    reader.execute("ROLLBACK")
    other.execute("ALTER TABLE items ADD COLUMN y DEFAULT 5")
    assert sqlite_ct.enumerate_changes(reader, "items", 0).inserts[0] == {
        "id": 1, "name": "a", "y": 5}


def test_a_table_shape_read_in_a_rolled_back_transaction_is_not_kept(two):
    """sqlite_ct_changes() keeps a table's key columns per schema version;
    one read inside a transaction whose schema change is rolled back must
    not stand for the key column another connection renames next."""
    reader, other = two
    setup_items(other)
    reader.execute("BEGIN")
    reader.execute("CREATE INDEX items_name ON items(name)")
    assert list(reader.execute("SELECT sqlite_ct_unpack_key(pk, 0) "
                               "FROM sqlite_ct_changes('items', 0)")) == [(1,), (2,)]
    reader.execute("ROLLBACK")
    other.execute("ALTER TABLE items RENAME COLUMN id TO ident")
    assert list(reader.execute("SELECT sqlite_ct_unpack_key(pk, 0) "
                               "FROM sqlite_ct_changes('items', 0)")) == [(1,), (2,)]
    assert sqlite_ct.enumerate_changes(reader, "items", 0).inserts[0] == {"ident": 1, "name": "a"}


def test_another_connection_with_a_closed_ones_id_is_not_mistaken(db_path, tmp_path):
    """id() of a closed connection may be reused by the next one: the kept
    statement of the first, used on the second, would read its columns.
    Forced here by planting the first one's entry under the second's id."""
    first = open_conn("apsw", db_path)
    setup_items(first)
    sqlite_ct.enumerate_changes(first, "items", 0)
    kept = changes_mod._ENUM[(id(first), "items")]
    other_path = str(tmp_path / "other.db")
    second = open_conn("apsw", other_path)
    try:
        second.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, extra TEXT)")
        sqlite_ct.create_schema(second, "items")
        second.execute("INSERT INTO items(id, name, extra) VALUES(5, 'e', 'x')")
        changes_mod._ENUM[(id(second), "items")] = kept
        assert sqlite_ct.enumerate_changes(second, "items", 0).inserts == [
            {"id": 5, "name": "e", "extra": "x"}]
    finally:
        first.close()
        second.close()


def test_schema_token(two):
    reader, other = two
    setup_items(other)
    token = reader.execute("SELECT sqlite_ct_schema_token()").fetchone()[0]
    assert token == reader.execute("SELECT sqlite_ct_schema_token()").fetchone()[0]
    assert token != other.execute("SELECT sqlite_ct_schema_token()").fetchone()[0]
    other.execute("CREATE INDEX items_name ON items(name)")
    assert token != reader.execute("SELECT sqlite_ct_schema_token()").fetchone()[0]


def test_snapshot_is_the_last_committed_csn_and_refuses_own_writes(conn):
    assert conn.execute("SELECT sqlite_ct_snapshot()").fetchone()[0] == 0
    setup_items(conn)
    assert conn.execute("SELECT sqlite_ct_snapshot(), sqlite_ct_last_committed_csn()"
                        ).fetchone() == (3, 3)
    conn.execute("BEGIN")
    assert conn.execute("SELECT sqlite_ct_snapshot()").fetchone()[0] == 3
    conn.execute("INSERT INTO items(id, name) VALUES(3, 'c')")
    with pytest.raises((apsw.Error, sqlite3.Error),
                       match="cannot enumerate changes inside a transaction"):
        conn.execute("SELECT sqlite_ct_snapshot()").fetchone()
    conn.execute("ROLLBACK")


def test_changes_sql_names_the_table_and_refuses_untracked(conn):
    setup_items(conn)
    conn.execute("UPDATE items SET name = 'bb' WHERE id = 2")
    sql = conn.execute("SELECT sqlite_ct_changes_sql('ITEMS', 't.\"name\"')").fetchone()[0]
    assert 'main."items"' in sql
    assert [tuple(r) for r in conn.execute(sql, (None, 3, None))] == [("bb", "U")]
    assert [tuple(r) for r in conn.execute(sql, (None, 0, None))] == [("a", "I"), ("bb", "I")]
    conn.execute("CREATE TABLE loose(id INTEGER PRIMARY KEY)")
    with pytest.raises((apsw.Error, sqlite3.Error), match='table "loose" is not tracked'):
        conn.execute("SELECT sqlite_ct_changes_sql('loose', 't.id')").fetchone()
    with pytest.raises((apsw.Error, sqlite3.Error), match="needs a table name"):
        conn.execute("SELECT sqlite_ct_changes_sql(NULL, 't.id')").fetchone()
    with pytest.raises((apsw.Error, sqlite3.Error), match="needs the result columns"):
        conn.execute("SELECT sqlite_ct_changes_sql('items', NULL)").fetchone()


# ---- enumerate_changes() against the virtual table joined back --------------

SHAPES = {
    "rowid": "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
    "without_rowid": "CREATE TABLE t(id INTEGER NOT NULL PRIMARY KEY, v TEXT) WITHOUT ROWID",
    "hidden_rowid": 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, rowid, _rowid_, oid)',
}
CTX = uuid.UUID("12345678-1234-5678-1234-567812345678")

ops = st.lists(st.tuples(st.sampled_from(["insert", "update", "delete", "ctx", "anchor"]),
                         st.integers(1, 6)), max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(shape=st.sampled_from(sorted(SHAPES)), preload=st.booleans(), history=ops,
       exclude=st.booleans())
def test_enumerate_changes_equals_the_virtual_table_joined(tmp_path_factory, shape, preload,
                                                            history, exclude):
    path = str(tmp_path_factory.mktemp("eq") / "t.db")
    conn = open_conn("apsw", path)
    try:
        conn.execute(SHAPES[shape])
        if preload:   # rows with NULL stamps, inserted by the enabling transaction
            conn.execute("INSERT INTO t(id, v) VALUES(1, 'p1'), (2, 'p2')")
        sqlite_ct.create_schema(conn, "t")
        anchors = [0]
        for op, key in history:
            if op == "insert":
                conn.execute("INSERT OR REPLACE INTO t(id, v) VALUES(?, 'i')", (key,))
            elif op == "update":
                conn.execute("UPDATE t SET v = coalesce(v, '') || 'u' WHERE id = ?", (key,))
            elif op == "delete":
                conn.execute("DELETE FROM t WHERE id = ?", (key,))
            elif op == "ctx":
                sqlite_ct.set_tracking_context(conn, CTX if key % 2 else None)
            else:
                anchors.append(sqlite_ct.last_committed_csn(conn))
        sqlite_ct.set_tracking_context(conn, None)
        context = CTX if exclude else None
        for since in anchors:
            for _ in range(2):    # the first call builds the statement, the second keeps it
                got = sqlite_ct.enumerate_changes(conn, "t", since, exclude_context=context)
                ref = sqlite_ct.enumerate_group_changes(conn, ["t"], since,
                                                        exclude_context=context)["t"]
                assert plain(got) == plain(ref)
    finally:
        conn.close()
