"""Inserts stamped by the stamp columns' DEFAULTs (docs/architecture.md, "The
triggers"): when create_schema() writes them, when it cannot and the AFTER
INSERT trigger stamps instead, and the cases where the DEFAULT's value is stale
and must be corrected (first row after a commit, another connection's commit,
values the statement wrote itself, a log row undone by a failed statement)."""

import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import q, run, val

DEFAULT_BSN = "DEFAULT (sqlite_ct_default_bsn())"
DEFAULT_CTX = "DEFAULT (sqlite_ct_tracking_context())"


def table_sql(conn, table="t"):
    return val(conn, "SELECT sql FROM sqlite_schema WHERE type='table' AND name=?", (table,))


def has_defaults(conn, table="t"):
    sql = table_sql(conn, table)
    n = sql.count(DEFAULT_BSN)
    assert n in (0, 2) and sql.count(DEFAULT_CTX) == n // 2, sql
    return n == 2


def stamps(conn, table="t"):
    return q(conn, f'SELECT id, __sysChangeTxBsn, __sysInsertTxBsn FROM "{table}" ORDER BY id')


def log(conn):
    return [r[0] for r in q(conn, "SELECT __sysTxCsn FROM __sysTxCommitSequence ORDER BY 1")]


def assert_rows_logged(conn, table="t"):
    """Every stamp a committed row carries is a logged CSN."""
    logged = set(log(conn))
    for _id, chg, ins in stamps(conn, table):
        assert chg in logged and ins in logged, (stamps(conn, table), logged)


def test_create_schema_gives_the_stamp_columns_defaults(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    assert has_defaults(conn)
    # a plain insert is stamped without the trigger's second write
    run(conn, "BEGIN", "INSERT INTO t(id, v) VALUES (1, 'a')", "INSERT INTO t(id, v) VALUES (2, 'b')",
        "COMMIT")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert stamps(conn) == [(1, bsn, bsn), (2, bsn, bsn)]
    assert_rows_logged(conn)


def test_create_schema_twice_keeps_one_copy_of_the_defaults(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    before = table_sql(conn)
    sqlite_ct.create_schema(conn, "t")
    assert table_sql(conn) == before


@pytest.mark.parametrize("options", [2, 4, 6])
def test_no_defaults_when_inserts_are_not_tracked(conn, options):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t", options=options)
    assert not has_defaults(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    assert stamps(conn) == [(1, None, None)]


def test_changing_the_options_adds_and_removes_the_defaults(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    sqlite_ct.create_schema(conn, "t", options=6)
    assert not has_defaults(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    assert stamps(conn) == [(1, None, None)]
    sqlite_ct.create_schema(conn, "t", options=7)
    assert has_defaults(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b')")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert stamps(conn)[1] == (2, bsn, bsn)


def test_portable_tables_get_no_defaults(conn):
    """A portable table is written by hosts without the extension: a DEFAULT
    calling it would make their inserts fail."""
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t", mode="portable")
    assert not has_defaults(conn)


def test_disable_tracking_drops_the_columns_with_their_defaults(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    sqlite_ct.disable_tracking(conn, "t")
    assert "sqlite_ct" not in table_sql(conn)


def test_first_row_after_our_own_commit_gets_the_new_bsn(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    first = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b')")
    second = sqlite_ct.last_committed_csn(conn)
    assert second == first + 1
    assert stamps(conn) == [(1, first, first), (2, second, second)]


def test_first_row_after_another_connections_commit(apsw_conn, db_path):
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    other = apsw.Connection(db_path)
    sqlite_ct.load(other)
    try:
        run(apsw_conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
        run(other, "INSERT INTO t(id, v) VALUES (2, 'b')")
        run(apsw_conn, "INSERT INTO t(id, v) VALUES (3, 'c')")
        run(other, "INSERT INTO t(id, v) VALUES (4, 'd')")
    finally:
        other.close()
    assert [r[1] for r in stamps(apsw_conn)] == [2, 3, 4, 5]
    assert_rows_logged(apsw_conn)


def test_a_connection_opened_before_create_schema_stamps_its_inserts(apsw_conn, db_path):
    """It picks up the edited table definition through the new schema_version."""
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    other = apsw.Connection(db_path)
    sqlite_ct.load(other)
    try:
        run(other, "INSERT INTO t(id, v) VALUES (1, 'old')")
        sqlite_ct.create_schema(apsw_conn, "t")
        run(other, "INSERT INTO t(id, v) VALUES (2, 'new')")
        assert "sqlite_ct_default_bsn" in val(
            other, "SELECT sql FROM sqlite_schema WHERE name='t'")
    finally:
        other.close()
    bsn = sqlite_ct.last_committed_csn(apsw_conn)
    assert stamps(apsw_conn) == [(1, None, None), (2, bsn, bsn)]


def test_values_the_statement_writes_are_replaced_by_the_stamps(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, v, __sysChangeTxBsn, __sysInsertTxBsn, __sysTrackingContext)"
              " VALUES (1, 'a', 999, NULL, x'00')")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert stamps(conn) == [(1, bsn, bsn)]
    assert val(conn, "SELECT __sysTrackingContext FROM t") is None


def test_failed_first_statement_of_a_transaction_does_not_lose_the_log_row(conn):
    """The DEFAULT offers the BSN the failed statement handed out; the log row
    that statement wrote is gone with it, and the next row logs it again."""
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "BEGIN")
    with pytest.raises(Exception, match="NOT NULL"):
        run(conn, "INSERT INTO t(id, v) VALUES (1, 'a'), (2, NULL)")
    run(conn, "INSERT INTO t(id, v) VALUES (3, 'c')", "COMMIT")
    assert [r[0] for r in stamps(conn)] == [3]
    assert_rows_logged(conn)


def test_rollback_to_a_savepoint_that_held_the_log_row(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "BEGIN", "SAVEPOINT s", "INSERT INTO t(id, v) VALUES (1, 'gone')",
        "ROLLBACK TO s", "INSERT INTO t(id, v) VALUES (2, 'kept')", "RELEASE s", "COMMIT")
    assert_rows_logged(conn)
    assert len(stamps(conn)) == 1


def test_apply_mode_inserts_are_stamped_zero(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    q(conn, "SELECT sqlite_ct_set_apply_mode(1)")
    try:
        run(conn, "INSERT INTO t(id, v) VALUES (1, 'from server')")
    finally:
        q(conn, "SELECT sqlite_ct_set_apply_mode(0)")
    assert stamps(conn) == [(1, 0, 0)]


def test_defensive_mode_falls_back_to_the_trigger(apsw_conn):
    """SQLITE_DBCONFIG_DEFENSIVE forbids editing sqlite_schema: the table keeps
    plain columns and the AFTER INSERT trigger stamps every row."""
    apsw_conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    assert not has_defaults(apsw_conn)
    run(apsw_conn, "BEGIN", "INSERT INTO t(id, v) VALUES (1, 'a')",
        "INSERT INTO t(id, v) VALUES (2, 'b')", "COMMIT")
    bsn = sqlite_ct.last_committed_csn(apsw_conn)
    assert stamps(apsw_conn) == [(1, bsn, bsn), (2, bsn, bsn)]
    # Removing DEFAULTs is not optional, so that fails clearly instead.
    apsw_conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 0)
    sqlite_ct.create_schema(apsw_conn, "t")
    assert has_defaults(apsw_conn)
    apsw_conn.config(apsw.SQLITE_DBCONFIG_DEFENSIVE, 1)
    with pytest.raises(sqlite_ct.Error, match="DEFENSIVE"):
        sqlite_ct.create_schema(apsw_conn, "t", options=6)
    assert has_defaults(apsw_conn)


def test_writable_schema_setting_is_restored(apsw_conn):
    run(apsw_conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    assert val(apsw_conn, "PRAGMA writable_schema") == 0
    run(apsw_conn, "PRAGMA writable_schema=ON")
    sqlite_ct.create_schema(apsw_conn, "u")
    assert val(apsw_conn, "PRAGMA writable_schema") == 1
    run(apsw_conn, "PRAGMA writable_schema=OFF")
    assert has_defaults(apsw_conn, "u")
    assert val(apsw_conn, "PRAGMA integrity_check") == "ok"


def test_a_rebuilt_table_without_our_column_text_is_stamped_by_the_trigger(conn):
    """Column definitions another tool wrote are left alone."""
    run(conn, 'CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, [__sysChangeTxBsn] INT,'
              ' [__sysInsertTxBsn] INT, [__sysTrackingContext] BLOB)')
    sqlite_ct.create_schema(conn, "t")
    assert not has_defaults(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    bsn = sqlite_ct.last_committed_csn(conn)
    assert stamps(conn) == [(1, bsn, bsn)]


def test_or_replace_victim_while_a_user_trigger_inserts_into_another_tracked_table(conn):
    """The victims of t are swept by t's AFTER INSERT trigger even when a user
    trigger's insert into tracked table u ran in between (each table keeps its
    own mark)."""
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)",
        "CREATE TABLE u(id INTEGER PRIMARY KEY, note TEXT)")
    sqlite_ct.create_schema(conn, "t")
    sqlite_ct.create_schema(conn, "u")
    run(conn, "INSERT INTO t(id, u, v) VALUES (1, 'a', 'x')")
    anchor = sqlite_ct.last_committed_csn(conn)
    replica = Replica(["id"], table_rows(conn, "t", ["id"]))
    run(conn, "CREATE TRIGGER audit BEFORE INSERT ON t BEGIN"
              " INSERT INTO u(note) VALUES ('insert ' || NEW.id); END")
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (2, 'a', 'y')")
    cs = sqlite_ct.enumerate_changes(conn, "t", anchor)
    assert [d["id"] for d in cs.deletes] == [1]
    replica.apply(cs)
    assert replica.rows == table_rows(conn, "t", ["id"])
    assert val(conn, "SELECT count(*) FROM u") == 1


def test_inserts_do_not_fire_the_applications_update_triggers(conn):
    """The DEFAULTs stamp the row as it is written, so an insert is not
    followed by a stamping UPDATE: not in a transaction's first row, not in
    autocommit, not in a multi-row statement."""
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE fired(n INTEGER)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "CREATE TRIGGER app_au AFTER UPDATE ON t BEGIN INSERT INTO fired VALUES (NEW.id); END")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b'), (3, 'c')")
    run(conn, "BEGIN", "INSERT INTO t(id, v) VALUES (4, 'd')", "INSERT INTO t(id, v) VALUES (5, 'e')",
        "COMMIT")
    assert val(conn, "SELECT count(*) FROM fired") == 0
    assert_rows_logged(conn)
    assert len(set(log(conn))) == len(log(conn))


def test_last_insert_rowid_is_the_inserted_row(conn):
    """The log row the first insert of a transaction writes (a nested
    statement) does not leak into last_insert_rowid()."""
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    for v in ("a", "b"):
        cur = conn.cursor()
        cur.execute("INSERT INTO t(v) VALUES (?)", (v,))
        rowid = val(conn, "SELECT id FROM t WHERE v = ?", (v,))
        assert val(conn, "SELECT last_insert_rowid()") == rowid
        if not isinstance(conn, apsw.Connection):
            assert cur.lastrowid == rowid
    run(conn, "UPDATE t SET v = 'c' WHERE id = 1")
    assert val(conn, "SELECT last_insert_rowid()") == 2
