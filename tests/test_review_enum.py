"""Adversarial checks of enumerate_changes()'s one kept statement.

enumerate_changes() keeps, per connection and table, one statement built from
the table's columns, and trusts it while the schema token it reads (the
connection, main's schema_version) stays the same. These tests change what the
statement was built from without moving that token (another database
deserialized into the same connection at the same schema version), and commit
from another connection at every point of the one statement's execution (its
anchor, its deletes, its live rows are one snapshot: a change is either in the
rows and at or below the anchor, or after the anchor and in the next call's
rows, never lost and never reported twice)."""
import sqlite3

import apsw
import pytest

import sqlite_ct
from sqlite_ct import loader
from test_enum_cache import open_conn




def build(path, columns):
    """A database with tracked table items(columns) and one row; the same
    schema changes whatever the columns, so the same schema_version."""
    conn = open_conn("apsw", path)
    conn.execute(f"CREATE TABLE items({columns})")
    sqlite_ct.create_schema(conn, "items")
    conn.execute("INSERT INTO items(id) VALUES(1)")
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.close()
    with open(path, "rb") as f:
        return version, f.read()


def test_a_database_deserialized_at_the_same_schema_version_is_read_again(tmp_path):
    # apsw only: the stdlib sqlite3's SQLite 3.40 crashes in its own
    # sqlite3GenerateColumnNames() when an eponymous virtual table used before
    # sqlite3_deserialize() is used after it (with or without sqlite-ct's kept
    # statements; bde8b7a crashes the same way).
    one, two = str(tmp_path / "one.db"), str(tmp_path / "two.db")
    v1, _ = build(one, "id INTEGER PRIMARY KEY, name TEXT")
    v2, image = build(two, "id INTEGER PRIMARY KEY, name TEXT, extra TEXT DEFAULT 'E'")
    assert v1 == v2   # the token's schema version cannot tell them apart
    conn = open_conn("apsw", one)
    try:
        assert sqlite_ct.enumerate_changes(conn, "items", 0).inserts == [
            {"id": 1, "name": None}]
        conn.deserialize("main", image)
        assert sqlite_ct.enumerate_changes(conn, "items", 0).inserts == [
            {"id": 1, "name": None, "extra": "E"}]
    finally:
        conn.close()


# ---- a commit by another connection at every point of the statement ----------

STEPS = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987]


@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
@pytest.mark.parametrize("primed", [False, True])
def test_a_commit_during_the_statement_is_neither_lost_nor_reported_twice(
        host, primed, tmp_path):
    path = str(tmp_path / "t.db")
    setup = open_conn(host, path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    sqlite_ct.create_schema(setup, "items")
    for i in range(1, 40):
        setup.execute("INSERT INTO items(id, name) VALUES(?, 'a')", (i,))
    setup.execute("DELETE FROM items WHERE id <= 5")
    setup.close()
    other = open_conn(host, path)
    next_key = [1000]
    outcomes = set()
    try:
        for n in STEPS:
            reader = open_conn(host, path)
            try:
                since = sqlite_ct.last_committed_csn(reader) - 3
                if primed:
                    sqlite_ct.enumerate_changes(reader, "items", since)
                key = next_key[0]
                next_key[0] += 1
                committed = []

                def commit_once():
                    if not committed:
                        other.execute("UPDATE items SET name = 'u' WHERE id = 30")
                        other.execute("DELETE FROM items WHERE id = ?", (key - 990,))
                        other.execute("INSERT INTO items(id, name) VALUES(?, 'c')", (key,))
                        committed.append(sqlite_ct.last_committed_csn(other))
                    return 0

                reader.set_progress_handler(commit_once, n)
                try:
                    got = sqlite_ct.enumerate_changes(reader, "items", since)
                finally:
                    reader.set_progress_handler(None, 0)
                if not committed:   # the statement ran fewer than n steps
                    assert n > 50, f"the handler never ran at n={n}"
                    break
                csn = committed[0]
                outcomes.add(csn <= got.new_anchor)
                seen = [r["id"] for r in got.inserts]
                if csn <= got.new_anchor:
                    assert key in seen, (n, csn, got.new_anchor)
                    assert {"id": key - 990} in got.deletes or key - 990 > 39
                else:
                    assert key not in seen, (n, csn, got.new_anchor)
                    assert {"id": key - 990} not in got.deletes
                after = sqlite_ct.enumerate_changes(reader, "items", got.new_anchor)
                assert (key in [r["id"] for r in after.inserts]) == (key not in seen), n
                assert after.new_anchor >= csn
            finally:
                reader.close()
    finally:
        other.close()
    if primed:
        # The kept statement is all there is: the commit landed inside it, after
        # its read transaction began.
        assert False in outcomes


def test_a_deserialized_database_whose_table_lost_its_triggers_is_refused(tmp_path):
    # sqlite_ct_changes() keeps a table's shape (its triggers among it) per
    # schema version; after sqlite3_deserialize() under SQLite 3.54 it is read
    # again, and the refusal stands (apsw only, as above).
    one, two = str(tmp_path / "one.db"), str(tmp_path / "two.db")
    for path, lose in ((one, False), (two, True)):
        conn = open_conn("apsw", path)
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        sqlite_ct.create_schema(conn, "items")
        if lose:   # a rebuild by another tool: two schema changes
            conn.execute('DROP TRIGGER "__sysct_au_items"')
            conn.execute('DROP TRIGGER "__sysct_ai_items"')
            conn.execute("INSERT INTO items(id, name) VALUES(1, 'untracked')")
        else:      # two schema changes that keep the triggers
            conn.execute("CREATE TABLE spare(x)")
            conn.execute("DROP TABLE spare")
        conn.close()
    with open(two, "rb") as f:
        image = f.read()
    conn = open_conn("apsw", one)
    try:
        assert (conn.execute("PRAGMA schema_version").fetchone()
                == apsw.Connection(two).execute("PRAGMA schema_version").fetchone())
        sqlite_ct.enumerate_changes(conn, "items", 0)
        conn.deserialize("main", image)
        with pytest.raises(sqlite_ct.Error, match="lost its tracking triggers"):
            sqlite_ct.enumerate_changes(conn, "items", 0)
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
def test_an_interrupt_of_the_kept_statement_is_raised_not_read_again(host, tmp_path):
    """sqlite3_interrupt() during the kept statement stops the call, as it
    did before the statement was kept: the fallback that reads everything
    again after another error must not run the enumeration to its end."""
    conn = open_conn(host, str(tmp_path / "t.db"))
    try:
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        sqlite_ct.create_schema(conn, "items")
        conn.execute("INSERT INTO items(id, name) VALUES(1, 'a')")
        sqlite_ct.enumerate_changes(conn, "items", 0)   # the statement is kept
        fired = []

        def interrupt_once():
            if not fired:
                fired.append(1)
                conn.interrupt()
            return 0

        conn.set_progress_handler(interrupt_once, 1)
        with pytest.raises((apsw.InterruptError, sqlite3.OperationalError),
                           match="interrupted"):
            sqlite_ct.enumerate_changes(conn, "items", 0)
        conn.set_progress_handler(None, 0)
        assert sqlite_ct.enumerate_changes(conn, "items", 0).inserts == [
            {"id": 1, "name": "a"}]
    finally:
        conn.close()


@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
@pytest.mark.parametrize("write", ["native", "apply", "portable"])
def test_the_kept_statement_refuses_inside_the_callers_own_write(host, write, tmp_path):
    """The kept statement skips the Python-side refusal; sqlite_ct_snapshot()
    in it refuses instead, for a native write, a write in apply mode, and any
    write while a table is tracked in portable mode."""
    conn = open_conn(host, str(tmp_path / "t.db"))
    try:
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE other(id INTEGER PRIMARY KEY, name TEXT)")
        sqlite_ct.create_schema(conn, "items")
        if write == "portable":
            sqlite_ct.create_schema(conn, "other", mode="portable")
        conn.execute("INSERT INTO items(id, name) VALUES(1, 'a')")
        sqlite_ct.enumerate_changes(conn, "items", 0)   # the statement is kept
        conn.execute("BEGIN")
        if write == "apply":
            with sqlite_ct.applying_server_changes(conn):
                conn.execute("UPDATE items SET name = 'server' WHERE id = 1")
        elif write == "portable":
            conn.execute("INSERT INTO other(id, name) VALUES(1, 'p')")
        else:
            conn.execute("UPDATE items SET name = 'local' WHERE id = 1")
        with pytest.raises(sqlite_ct.Error, match="cannot enumerate changes inside a transaction"):
            sqlite_ct.enumerate_changes(conn, "items", 0)
        conn.execute("ROLLBACK")
        assert sqlite_ct.enumerate_changes(conn, "items", 0).inserts == [
            {"id": 1, "name": "a"}]
    finally:
        conn.close()


def test_the_kept_statement_refuses_inside_sqlite3s_implicit_transaction(tmp_path):
    """The stdlib's legacy transaction control opens a transaction before
    DML: the kept statement refuses there as the first call did."""
    loader.register_auto_extension()
    conn = sqlite3.connect(str(tmp_path / "t.db"))
    loader.load(conn)
    try:
        conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        sqlite_ct.create_schema(conn, "items")
        conn.execute("INSERT INTO items(id, name) VALUES(1, 'a')")
        conn.commit()
        sqlite_ct.enumerate_changes(conn, "items", 0)   # the statement is kept
        conn.execute("UPDATE items SET name = 'b' WHERE id = 1")
        assert conn.in_transaction
        with pytest.raises(sqlite_ct.Error, match="cannot enumerate changes inside a transaction"):
            sqlite_ct.enumerate_changes(conn, "items", 0)
        conn.rollback()
    finally:
        conn.close()
