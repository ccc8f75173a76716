"""Metadata integrity (DESIGN §4.7), apply mode / no echo (§4.5) and the
tracking context."""
import uuid

import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import HOST_ERRORS, q, run, val

def lie_message(table):
    return (f"sqlite-ct: the __sys columns of table {table} are written by change tracking "
            f"only; leave them out of INSERT and UPDATE")


def sys_row(conn, key, table="t"):
    return q(conn, f'SELECT __sysChangeTxBsn, __sysInsertTxBsn, __sysTrackingContext '
                   f'FROM "{table}" WHERE id = ?', (key,))[0]


def tracked_table(conn, *, name="t", rows=((1, "a"), (2, "b"))):
    run(conn, f'CREATE TABLE "{name}"(id INTEGER PRIMARY KEY, v TEXT)')
    sqlite_ct.create_schema(conn, name)
    if rows:  # one transaction
        marks = ", ".join("(?, ?)" for _ in rows)
        q(conn, f'INSERT INTO "{name}"(id, v) VALUES {marks}', [x for row in rows for x in row])
    return sqlite_ct.last_committed_csn(conn)


# --------------------------------------------------- user writes of __sys

@pytest.mark.parametrize("assignment", [
    "__sysChangeTxBsn = 999",
    "__sysChangeTxBsn = NULL",
    "__sysChangeTxBsn = 0",
    "__sysInsertTxBsn = 999",
    "__sysInsertTxBsn = NULL",
    "__sysTrackingContext = x'00112233445566778899aabbccddeeff'",
    "v = 'changed', __sysChangeTxBsn = __sysChangeTxBsn + 100",
])
def test_update_of_a_sys_column_is_rejected(conn, assignment):
    tracked_table(conn)
    before = q(conn, "SELECT * FROM t ORDER BY id")
    log_before = q(conn, "SELECT * FROM __sysTxCommitSequence")
    with pytest.raises(HOST_ERRORS) as exc:
        run(conn, f"UPDATE t SET {assignment} WHERE id = 1")
    assert str(exc.value) == lie_message("t")
    assert q(conn, "SELECT * FROM t ORDER BY id") == before
    assert q(conn, "SELECT * FROM __sysTxCommitSequence") == log_before


def test_update_of_a_sys_column_to_the_previous_transactions_bsn_is_rejected(conn):
    """That number is committed already; the update's own transaction has a
    newer one, so claiming the older one is a lie too."""
    tracked_table(conn, rows=[(1, "a")])
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b')")
    previous = sqlite_ct.last_committed_csn(conn)
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, "UPDATE t SET v = 'x', __sysChangeTxBsn = ? WHERE id = 1", (previous,))
    assert str(exc.value) == lie_message("t")


def test_update_writing_the_value_tracking_writes_is_accepted(conn):
    tracked_table(conn)
    run(conn, "BEGIN", "UPDATE t SET v = 'A' WHERE id = 1")
    bsn = sqlite_ct.current_bsn(conn)
    q(conn, "UPDATE t SET v = 'B', __sysChangeTxBsn = ? WHERE id = 2", (bsn,))
    run(conn, "COMMIT")
    assert sys_row(conn, 2)[0] == bsn


UPSERT_COPYING_EXCLUDED = (
    "INSERT INTO t(id, v) VALUES (1, 'new') ON CONFLICT(id) DO UPDATE SET v = excluded.v,"
    ' "__sysChangeTxBsn" = excluded."__sysChangeTxBsn",'
    ' "__sysInsertTxBsn" = excluded."__sysInsertTxBsn",'
    ' "__sysTrackingContext" = excluded."__sysTrackingContext"')


@pytest.mark.parametrize("earlier_write", [False, True], ids=["first-write", "mid-transaction"])
def test_upsert_copying_every_excluded_column_is_rejected(conn, earlier_write):
    """The ORM pattern "DO UPDATE SET every column = excluded.column". excluded
    carries the stamp DEFAULTs' values, the transaction's own BSN: accepted,
    the row would look inserted by this transaction and a later delete of it
    would never reach a replica that holds it."""
    anchor = tracked_table(conn)
    replica = Replica(["id"], table_rows(conn, "t", ["id"]))
    before = q(conn, "SELECT * FROM t ORDER BY id")
    run(conn, "BEGIN")
    if earlier_write:
        run(conn, "UPDATE t SET v = 'x' WHERE id = 2")
    with pytest.raises(HOST_ERRORS) as exc:
        run(conn, UPSERT_COPYING_EXCLUDED)
    assert str(exc.value) == lie_message("t")
    run(conn, "COMMIT")
    assert q(conn, "SELECT * FROM t WHERE id = 1") == before[:1]
    run(conn, "DELETE FROM t WHERE id = 1")
    cs = sqlite_ct.enumerate_changes(conn, "t", anchor)
    assert cs.deletes == [{"id": 1}]
    replica.apply(cs)
    assert replica.rows == table_rows(conn, "t", ["id"])
    assert sqlite_ct.check(conn) == []


def test_upsert_copying_only_the_user_columns_is_tracked(conn):
    anchor = tracked_table(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'new') ON CONFLICT(id) DO UPDATE SET v = excluded.v")
    cs = sqlite_ct.enumerate_changes(conn, "t", anchor)
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [{"id": 1, "v": "new"}], [])


def test_change_stamp_set_to_the_pending_bsn_in_a_first_write_is_logged(conn):
    """__sysChangeTxBsn = the BSN the transaction is about to get is what
    tracking writes, so it is accepted; the number is then logged."""
    tracked_table(conn)
    pending = sqlite_ct.last_committed_csn(conn) + 1
    q(conn, "UPDATE t SET __sysChangeTxBsn = ? WHERE id = 1", (pending,))
    assert sys_row(conn, 1)[0] == pending
    assert sqlite_ct.last_committed_csn(conn) == pending
    assert sqlite_ct.check(conn) == []


def test_error_message_names_the_table_verbatim(conn):
    tracked_table(conn, name="it's")
    with pytest.raises(HOST_ERRORS) as exc:
        run(conn, "UPDATE \"it's\" SET __sysInsertTxBsn = 5")
    assert str(exc.value) == lie_message("it's")


@pytest.mark.parametrize("column, value", [
    ("__sysInsertTxBsn", 555),
    ("__sysChangeTxBsn", 555),
    ("__sysInsertTxBsn", 0),
    ("__sysTrackingContext", b"\x01" * 16),
])
def test_insert_with_explicit_sys_values_gets_the_truth(conn, column, value):
    tracked_table(conn)
    q(conn, f"INSERT INTO t(id, v, {column}) VALUES (3, 'c', ?)", (value,))
    bsn = sqlite_ct.last_committed_csn(conn)
    assert sys_row(conn, 3) == (bsn, bsn, None)


def test_insert_with_explicit_sys_values_in_apply_mode_gets_stamp_zero(conn):
    tracked_table(conn)
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "INSERT INTO t(id, v, __sysChangeTxBsn, __sysInsertTxBsn) "
                  "VALUES (3, 'c', 77, 78)")
    assert sys_row(conn, 3) == (0, 0, None)


# ---------------------------------------------------------------- apply mode

def test_apply_mode_rows_are_not_echoed_and_local_edits_are(conn):
    anchor = tracked_table(conn, rows=[(1, "local"), (2, "local")])
    replica = Replica(["id"], table_rows(conn, "t", ["id"]))
    log_before = q(conn, "SELECT * FROM __sysTxCommitSequence")

    assert val(conn, "SELECT sqlite_ct_apply_mode()") == 0
    with sqlite_ct.applying_server_changes(conn):
        assert val(conn, "SELECT sqlite_ct_apply_mode()") == 1
        run(conn, "BEGIN",
            "INSERT INTO t(id, v) VALUES (10, 'server'), (11, 'server')",
            "UPDATE t SET v = 'server' WHERE id = 1",
            "DELETE FROM t WHERE id = 2",
            "COMMIT")
    assert val(conn, "SELECT sqlite_ct_apply_mode()") == 0
    # the server's changes reach the replica from the server
    replica.rows = table_rows(conn, "t", ["id"])

    assert q(conn, "SELECT id, __sysChangeTxBsn, __sysInsertTxBsn FROM t ORDER BY id") == [
        (1, 0, anchor), (10, 0, 0), (11, 0, 0)]
    assert val(conn, "SELECT count(*) FROM __sysOCSDeletedRows") == 0
    assert q(conn, "SELECT * FROM __sysTxCommitSequence") == log_before
    assert sqlite_ct.last_committed_csn(conn) == anchor
    assert len(sqlite_ct.enumerate_changes(conn, "t", anchor)) == 0
    # not even from 0: stamp 0 is older than any anchor
    from_zero = sqlite_ct.enumerate_changes(conn, "t", 0)
    assert (from_zero.inserts, from_zero.updates, from_zero.deletes) == ([], [], [])

    # later local edits of applied rows are local changes: updates
    run(conn, "UPDATE t SET v = 'mine' WHERE id = 10", "DELETE FROM t WHERE id = 11",
        "UPDATE t SET v = 'mine too' WHERE id = 1")
    changes = sqlite_ct.enumerate_changes(conn, "t", anchor)
    assert changes.inserts == []
    assert sorted(changes.updates, key=lambda r: r["id"]) == [
        {"id": 1, "v": "mine too"}, {"id": 10, "v": "mine"}]
    assert changes.deletes == [{"id": 11}]
    replica.apply(changes)
    assert replica.rows == table_rows(conn, "t", ["id"])


def test_apply_mode_delete_of_a_locally_inserted_row_leaves_no_tombstone(conn):
    anchor = tracked_table(conn)
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "DELETE FROM t WHERE id = 1")
    assert val(conn, "SELECT count(*) FROM __sysOCSDeletedRows") == 0
    assert len(sqlite_ct.enumerate_changes(conn, "t", anchor)) == 0
    # the insert itself is still reported to a replica that never saw it
    assert sqlite_ct.enumerate_changes(conn, "t", 0).inserts == [{"id": 2, "v": "b"}]


def test_apply_mode_is_restored_after_an_error(conn):
    tracked_table(conn)
    with pytest.raises(HOST_ERRORS):
        with sqlite_ct.applying_server_changes(conn):
            run(conn, "INSERT INTO t(id, v) VALUES (1, 'duplicate key')")
    assert val(conn, "SELECT sqlite_ct_apply_mode()") == 0
    run(conn, "INSERT INTO t(id, v) VALUES (3, 'c')")
    assert sys_row(conn, 3)[0] == sqlite_ct.last_committed_csn(conn) > 0


def test_apply_mode_is_per_connection(apsw_conn, db_path):
    anchor = tracked_table(apsw_conn)
    other = apsw.Connection(db_path)
    try:
        sqlite_ct.load(other)
        with sqlite_ct.applying_server_changes(apsw_conn):
            run(other, "INSERT INTO t(id, v) VALUES (3, 'other connection')")
        assert sqlite_ct.enumerate_changes(other, "t", anchor).inserts == [
            {"id": 3, "v": "other connection"}]
    finally:
        other.close()


def test_set_apply_mode_sql(conn):
    assert val(conn, "SELECT sqlite_ct_set_apply_mode(5)") == 1
    assert val(conn, "SELECT sqlite_ct_apply_mode()") == 1
    assert val(conn, "SELECT sqlite_ct_set_apply_mode(0)") == 0
    assert val(conn, "SELECT sqlite_ct_apply_mode()") == 0


# ------------------------------------------------------------ tracking context

def test_tracking_context_is_stamped_on_rows_and_tombstones(conn):
    tracked_table(conn, rows=[(1, "a"), (2, "b"), (3, "c")])
    ctx = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    assert sqlite_ct.tracking_context(conn) is None
    sqlite_ct.set_tracking_context(conn, ctx)
    assert sqlite_ct.tracking_context(conn) == ctx
    assert val(conn, "SELECT sqlite_ct_tracking_context()") == ctx.bytes_le
    assert ctx.bytes_le != ctx.bytes  # the test would not see a byte-order mix-up otherwise

    run(conn, "INSERT INTO t(id, v) VALUES (4, 'd')", "UPDATE t SET v = 'A' WHERE id = 1",
        "DELETE FROM t WHERE id = 2")
    assert sys_row(conn, 4)[2] == ctx.bytes_le
    assert sys_row(conn, 1)[2] == ctx.bytes_le
    assert sys_row(conn, 3)[2] is None
    assert q(conn, "SELECT __sysTrackingContext FROM __sysOCSDeletedRows") == [(ctx.bytes_le,)]

    other = uuid.UUID("ffeeddcc-bbaa-9988-7766-554433221100")
    sqlite_ct.set_tracking_context(conn, other)
    run(conn, "BEGIN", "UPDATE t SET v = 'AA' WHERE id = 1", "COMMIT")
    assert sys_row(conn, 1)[2] == other.bytes_le

    sqlite_ct.set_tracking_context(conn, None)
    assert sqlite_ct.tracking_context(conn) is None
    run(conn, "UPDATE t SET v = 'AAA' WHERE id = 1", "INSERT INTO t(id, v) VALUES (5, 'e')",
        "DELETE FROM t WHERE id = 3")
    assert sys_row(conn, 1)[2] is None
    assert sys_row(conn, 5)[2] is None
    assert q(conn, "SELECT __sysTrackingContext FROM __sysOCSDeletedRows "
                   "ORDER BY __sysDeleteTxBsn") == [(ctx.bytes_le,), (None,)]


def test_context_change_within_one_transaction_restamps_the_row(conn):
    tracked_table(conn)
    first, second = uuid.uuid4(), uuid.uuid4()
    run(conn, "BEGIN")
    sqlite_ct.set_tracking_context(conn, first)
    run(conn, "UPDATE t SET v = 'x' WHERE id = 1")
    sqlite_ct.set_tracking_context(conn, second)
    run(conn, "UPDATE t SET v = 'y' WHERE id = 1")
    run(conn, "COMMIT")
    assert sys_row(conn, 1)[2] == second.bytes_le


def test_tracking_context_is_per_connection(apsw_conn, db_path):
    tracked_table(apsw_conn)
    sqlite_ct.set_tracking_context(apsw_conn, uuid.uuid4())
    other = apsw.Connection(db_path)
    try:
        sqlite_ct.load(other)
        assert sqlite_ct.tracking_context(other) is None
        run(other, "INSERT INTO t(id, v) VALUES (3, 'c')")
    finally:
        other.close()
    assert sys_row(apsw_conn, 3)[2] is None


@pytest.mark.parametrize("bad", ["not a uuid", b"\x00" * 16, 5,
                                 str(uuid.UUID(int=1))], ids=repr)
def test_set_tracking_context_wrong_type(conn, bad):
    with pytest.raises(TypeError) as exc:
        sqlite_ct.set_tracking_context(conn, bad)
    assert str(exc.value) == "the tracking context must be a uuid.UUID or None"
    assert sqlite_ct.tracking_context(conn) is None


@pytest.mark.parametrize("bad", ["x''", "x'00'", "x'" + "00" * 15 + "'", "x'" + "00" * 17 + "'",
                                 "'0123456789abcdef'", "16", "1.5"])
def test_set_tracking_context_sql_wrong_value(conn, bad):
    good = uuid.uuid4()
    sqlite_ct.set_tracking_context(conn, good)
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, f"SELECT sqlite_ct_set_tracking_context({bad})")
    assert str(exc.value) == "sqlite-ct: the tracking context must be a 16-byte GUID blob or NULL"
    assert sqlite_ct.tracking_context(conn) == good  # unchanged
