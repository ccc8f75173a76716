"""Layout 7's write path (docs/architecture.md, "How a BSN is handed out and
validated"): the triggers no longer probe __sysTxCommitSequence on every row.
The first tracked write of a transaction enlists the virtual table
sqlite_ct_txn; while it is enlisted the cached BSN is trusted, its
xRollbackTo makes the next write probe again, its xSync writes the log row
back if a rollback took it, and its xCommit/xRollback forget the BSN.
tests/test_review_txn.py holds the savepoint and rollback sequences this must
survive, tests/test_sqlite_pins_writepath.py the SQLite behaviours it rests on."""
import os

import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import HOST_ERRORS, TxModule, q, run, val


def make(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    sqlite_ct.create_schema(conn, "t")


def log(conn):
    return [r[0] for r in q(conn, "SELECT __sysTxCsn FROM __sysTxCommitSequence ORDER BY 1")]


def assert_logged(conn):
    """Every stamp committed in t has its log row and is at most the last
    committed CSN (invariant 4), and check() finds nothing."""
    logged = set(log(conn))
    last = sqlite_ct.last_committed_csn(conn)
    for chg, ins in q(conn, 'SELECT "__sysChangeTxBsn", "__sysInsertTxBsn" FROM t'):
        assert chg in logged and ins in logged and chg <= last and ins <= last
    for (bsn,) in q(conn, "SELECT __sysDeleteTxBsn FROM __sysOCSDeletedRows"):
        assert bsn in logged and bsn <= last
    assert sqlite_ct.check(conn) == []


def test_the_triggers_pass_no_probe(conn):
    make(conn)
    triggers = [sql for (sql,) in q(conn, "SELECT sql FROM sqlite_schema WHERE type='trigger'"
                                          " AND name GLOB '__sysct_a*_t'")]
    assert len(triggers) == 4
    for sql in triggers:
        when = sql.split(" BEGIN ", 1)[0]
        assert "__sysTxCommitSequence" not in when and "(NULL, " in when


def test_a_write_after_a_rollback_that_took_the_log_row_logs_it_again(conn):
    """ROLLBACK TO a savepoint opened before the transaction's first write takes
    its log row; sqlite_ct_txn's xRollbackTo makes the next write probe and log
    it again at once, so the open transaction sees its own BSN as written
    (sqlite_ct_current_bsn(), sqlite_ct_uncommitted_writes()) before its
    commit writes anything."""
    make(conn)
    before = log(conn)
    run(conn, "BEGIN", "SAVEPOINT s", "INSERT INTO t(id, v) VALUES (1, 'a')",
        "ROLLBACK TO s", "INSERT INTO t(id, v) VALUES (2, 'b')")
    bsn = val(conn, "SELECT sqlite_ct_current_bsn()")
    assert bsn == before[-1] + 1
    assert log(conn) == before + [bsn]
    assert val(conn, "SELECT sqlite_ct_uncommitted_writes()") == 1
    run(conn, "UPDATE t SET v = 'c' WHERE id = 2", "COMMIT")
    assert log(conn) == before + [bsn]
    assert q(conn, 'SELECT id, "__sysChangeTxBsn" FROM t') == [(2, bsn)]
    assert_logged(conn)


@pytest.mark.parametrize("op", ["INSERT INTO t(id, v) VALUES (5, 'e')",
                                "UPDATE t SET v = 'e' WHERE id = 1", "DELETE FROM t WHERE id = 1"])
def test_a_transaction_whose_every_write_was_rolled_back_logs_nothing(conn, op):
    """sqlite_ct_txn's xSync finds the log row gone and no row or tombstone
    carrying the BSN: the commit writes no log row, and the next transaction
    gets the number."""
    make(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    before = log(conn)
    run(conn, "BEGIN", "SAVEPOINT s", op, "ROLLBACK TO s", "RELEASE s", "COMMIT")
    assert log(conn) == before
    run(conn, "BEGIN", "SAVEPOINT s", op)
    with pytest.raises(HOST_ERRORS):
        run(conn, "INSERT INTO t(id, v) VALUES (9, NULL)")
    run(conn, "ROLLBACK TO s", "COMMIT")
    assert log(conn) == before
    run(conn, op)
    assert log(conn) == before + [before[-1] + 1]
    assert_logged(conn)


def test_one_statement_rolled_back_inside_a_transaction(conn):
    """The statement that wrote the log row fails (its statement savepoint is
    rolled back, the log row with it); the transaction goes on and commits."""
    make(conn)
    before = log(conn)
    run(conn, "BEGIN")
    with pytest.raises(HOST_ERRORS):
        run(conn, "INSERT INTO t(id, v) VALUES (1, 'a'), (2, NULL)")
    assert log(conn) == before
    run(conn, "INSERT INTO t(id, v) VALUES (3, 'c')", "DELETE FROM t WHERE id = 3",
        "INSERT INTO t(id, v) VALUES (4, 'd')", "COMMIT")
    assert log(conn) == before + [before[-1] + 1]
    assert_logged(conn)


def test_a_bulk_autocommit_statement(conn):
    """An autocommit statement probes for its first row, which enlists
    sqlite_ct_txn, then trusts; one failing at a later row leaves nothing."""
    make(conn)
    run(conn, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 500)"
              " INSERT INTO t(id, v) SELECT i, 'x' FROM n")
    run(conn, "UPDATE t SET v = v || 'y'")
    before = log(conn)
    with pytest.raises(HOST_ERRORS):
        run(conn, "UPDATE t SET v = CASE WHEN id = 300 THEN NULL ELSE 'z' END")
    assert log(conn) == before
    assert val(conn, "SELECT count(*) FROM t WHERE v = 'xy'") == 500
    run(conn, "DELETE FROM t WHERE id % 2 = 0")
    assert len(log(conn)) == len(before) + 1
    assert len({r[0] for r in q(conn, 'SELECT "__sysChangeTxBsn" FROM t')}) == 1
    assert_logged(conn)
    replica = Replica(["id"])
    replica.apply(sqlite_ct.enumerate_changes(conn, "t", 0))
    assert replica.rows == table_rows(conn, "t", ["id"])


def test_the_virtual_table_is_empty_and_direct_only(apsw_conn):
    make(apsw_conn)
    run(apsw_conn, "BEGIN", "INSERT INTO t(id, v) VALUES (1, 'a')")
    assert q(apsw_conn, "SELECT * FROM sqlite_ct_txn") == []
    run(apsw_conn, "COMMIT", "CREATE VIEW planted AS SELECT * FROM sqlite_ct_txn")
    with pytest.raises(apsw.SQLError, match="unsafe use of virtual table"):
        q(apsw_conn, "SELECT * FROM planted")


def test_a_commit_that_fails_busy_and_is_retried(db_path):
    """In rollback-journal mode a reader makes COMMIT fail with SQLITE_BUSY
    after xSync ran; the transaction and its savepoints stay open. A ROLLBACK
    TO then takes the log row, later writes probe (xSync has run), and the
    retried COMMIT runs xSync again: the commit carries its log row."""
    conn = apsw.Connection(db_path)
    reader = apsw.Connection(db_path)
    try:
        sqlite_ct.load(conn)
        run(conn, "PRAGMA journal_mode=DELETE")
        make(conn)
        before = log(conn)
        run(conn, "BEGIN", "SAVEPOINT s", "INSERT INTO t(id, v) VALUES (1, 'a')")
        run(reader, "BEGIN", "SELECT count(*) FROM sqlite_schema")
        with pytest.raises(apsw.BusyError):
            run(conn, "COMMIT")
        assert not conn.getautocommit()
        run(conn, "ROLLBACK TO s", "INSERT INTO t(id, v) VALUES (2, 'b')")
        assert log(conn) == before + [before[-1] + 1]
        run(reader, "COMMIT")
        run(conn, "COMMIT")
        assert log(conn) == before + [before[-1] + 1]
        assert [r[0] for r in q(conn, "SELECT id FROM t")] == [2]
        assert_logged(conn)
    finally:
        reader.close()
        conn.close()


def sync_writer(conn, statements):
    """An application's eponymous virtual table `flush` whose xSync runs
    `statements` on conn; returns the list their errors are collected in."""
    module = TxModule()
    conn.create_module("flush", module, iVersion=3, eponymous=True, eponymous_only=True)
    errors = []

    def flush():
        for sql in statements:
            try:
                q(conn, sql)
            except HOST_ERRORS as exc:
                errors.append(str(exc))
    module.table.on_sync = flush
    return errors


def test_writes_from_another_virtual_tables_xsync_after_sqlite_ct_txns(apsw_conn):
    """sqlite_ct_txn joined first, so its xSync runs first; an application's
    virtual table then writes the tracked table from its own xSync, once
    failing after a row was written: those writes probe, and what commits is
    logged."""
    make(apsw_conn)
    errors = sync_writer(apsw_conn, [
        "INSERT INTO t(id, v) VALUES (10, 'x'), (11, NULL)",
        "INSERT INTO t(id, v) VALUES (12, 'y')", "DELETE FROM t WHERE id = 1"])
    run(apsw_conn, "INSERT INTO t(id, v) VALUES (1, 'a')")
    before = log(apsw_conn)
    run(apsw_conn, "BEGIN", "INSERT INTO t(id, v) VALUES (2, 'b')",
        "INSERT INTO flush VALUES (1)", "COMMIT")
    assert errors == ["NOT NULL constraint failed: t.v"]
    assert [r[0] for r in q(apsw_conn, "SELECT id FROM t ORDER BY id")] == [2, 12]
    assert log(apsw_conn) == before + [before[-1] + 1]
    assert_logged(apsw_conn)


@pytest.mark.parametrize("joins", ["first", "last"])
def test_a_rollback_from_another_virtual_tables_xsync(apsw_conn, joins):
    """An application's virtual table rolls back, from its xSync, to a
    savepoint opened before the transaction's first write (the log row goes,
    and SQLite tells no virtual table while xSync runs), then writes the
    tracked table. Joined last, its xSync runs after sqlite_ct_txn's, whose
    writes probe from then on; joined first, before it, while the explicit
    transaction reports autocommit mode, so its write does not trust the BSN
    either: it probes and logs the transaction again."""
    make(apsw_conn)
    errors = sync_writer(apsw_conn, ["ROLLBACK TO s", "INSERT INTO t(id, v) VALUES (12, 'y')"])
    before = log(apsw_conn)
    writes = ["INSERT INTO flush VALUES (1)", "INSERT INTO t(id, v) VALUES (2, 'b')"]
    run(apsw_conn, "BEGIN", "SAVEPOINT s", *(writes if joins == "first" else writes[::-1]),
        "COMMIT")
    assert errors == []
    assert [r[0] for r in q(apsw_conn, "SELECT id FROM t ORDER BY id")] == [12]
    assert log(apsw_conn) == before + [before[-1] + 1]
    assert_logged(apsw_conn)
