"""sqlite-ct's stamping UPDATEs and the application's BEFORE UPDATE triggers
(layout 6; csrc/state.c, sqlite_ct_stamp_check; docs/architecture.md, "The
triggers").

A tracked row is stamped by an UPDATE of sqlite-ct's own: the AFTER UPDATE
trigger's body after every tracked update, the AFTER UPDATE OF key trigger's
after a key change, the fix of an inserted row that its DEFAULTs did not
stamp, and every stamp in portable mode. SQLite runs the table's BEFORE
UPDATE triggers for those UPDATEs as for any other. A trigger that skips
updates leaving its columns as they were (`WHEN NEW.v IS OLD.v ...
RAISE(IGNORE)`, a common way to drop no-op writes) then skips sqlite-ct's
stamping: through layout 5 the change kept its old stamp and no replica ever
heard of it, while check() was clean. Now the statement fails with an error
that says how to write such a trigger, and nothing is changed untracked.
"""
import apsw
import pytest

import sqlite_ct
from sqlhelpers import HOST_ERRORS, q, run

SKIPPED = "skipped sqlite-ct's stamping"
NOOP = ("CREATE TRIGGER noop BEFORE UPDATE ON t WHEN NEW.v IS OLD.v AND NEW.w IS OLD.w"
        " BEGIN SELECT RAISE(IGNORE); END")
NOOP_OF = ("CREATE TRIGGER noop BEFORE UPDATE OF v, w ON t WHEN NEW.v IS OLD.v"
           " AND NEW.w IS OLD.w BEGIN SELECT RAISE(IGNORE); END")
# The other way the error message offers: leave sqlite-ct's writes alone.
NOOP_SYS = ("CREATE TRIGGER noop BEFORE UPDATE ON t WHEN NEW.v IS OLD.v AND NEW.w IS OLD.w"
            ' AND NEW."__sysChangeTxBsn" IS OLD."__sysChangeTxBsn"'
            ' AND NEW."__sysInsertTxBsn" IS OLD."__sysInsertTxBsn"'
            ' AND NEW."__sysTrackingContext" IS OLD."__sysTrackingContext"'
            " BEGIN SELECT RAISE(IGNORE); END")

TABLES = {
    "integer": "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, w TEXT)",
    "text": "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT, w TEXT)",
    "without-rowid": "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT, w TEXT) WITHOUT ROWID",
}


def changes(conn, since):
    cs = sqlite_ct.enumerate_changes(conn, "t", since)
    return (sorted((r["id"], r["v"]) for r in cs.inserts),
            sorted((r["id"], r["v"]) for r in cs.updates), sorted(d["id"] for d in cs.deletes))


def track(conn, shape, mode, trigger, order):
    run(conn, TABLES[shape])
    if order == "trigger-first":
        run(conn, trigger)
    sqlite_ct.create_schema(conn, "t", mode=mode)
    if order == "trigger-later":
        run(conn, trigger)


@pytest.mark.parametrize("order", ["trigger-first", "trigger-later"])
@pytest.mark.parametrize("shape", sorted(TABLES))
@pytest.mark.parametrize("mode", ["native", "portable"])
def test_a_trigger_that_skips_no_op_updates_cannot_leave_an_update_unstamped(
        conn, mode, shape, order):
    run(conn, TABLES[shape])
    sqlite_ct.create_schema(conn, "t", mode=mode)
    run(conn, "INSERT INTO t(id, v, w) VALUES ('1', 'a', 'b')")
    if order == "trigger-first":
        sqlite_ct.disable_tracking(conn, "t")
        run(conn, NOOP)
        sqlite_ct.create_schema(conn, "t", mode=mode)
    else:
        run(conn, NOOP)
    since = sqlite_ct.last_committed_csn(conn)
    with pytest.raises(HOST_ERRORS, match=SKIPPED):
        run(conn, "UPDATE t SET v = 'z' WHERE id = '1'")
    assert q(conn, "SELECT v FROM t") == [("a",)]      # nothing changed untracked
    run(conn, "UPDATE t SET v = 'a' WHERE id = '1'")   # the trigger's own no-op: skipped
    assert changes(conn, since) == ([], [], [])


@pytest.mark.parametrize("trigger", [NOOP_OF, NOOP_SYS], ids=["update-of", "sys-columns"])
@pytest.mark.parametrize("mode", ["native", "portable"])
def test_the_trigger_written_as_the_error_says_keeps_every_change_tracked(conn, mode, trigger):
    track(conn, "integer", mode, trigger, "trigger-later")
    run(conn, "INSERT INTO t(id, v, w) VALUES (1, 'a', 'b'), (2, 'c', 'd')")
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "UPDATE t SET v = 'z' WHERE id = 1",
        "UPDATE t SET v = 'c' WHERE id = 2",           # a no-op the trigger skips
        "UPDATE t SET id = 5, v = 'y' WHERE id = 1",
        "INSERT INTO t(id, v, w) VALUES (3, 'e', 'f')")
    assert changes(conn, since) == ([(3, "e"), (5, "y")], [], [1])


@pytest.mark.parametrize("mode", ["native", "portable"])
def test_an_insert_stamped_by_an_update_is_checked_too(conn, mode):
    """Portable mode stamps every inserted row with an UPDATE; through layout
    5 the no-op trigger left every new row with NULL stamps, which count as
    rows that predate tracking (no replica tracking since then gets them)."""
    track(conn, "integer", mode, NOOP, "trigger-first")
    since = sqlite_ct.last_committed_csn(conn)
    if mode == "portable":
        with pytest.raises(HOST_ERRORS, match=SKIPPED):
            run(conn, "INSERT INTO t(id, v, w) VALUES (1, 'a', 'b')")
        assert q(conn, "SELECT count(*) FROM t") == [(0,)]
    else:
        # Native mode stamps an insert with the columns' DEFAULTs: no UPDATE.
        run(conn, "INSERT INTO t(id, v, w) VALUES (1, 'a', 'b')")
        assert changes(conn, since) == ([(1, "a")], [], [])


def test_a_key_change_under_a_trigger_that_skips_unchanged_keys(apsw_conn):
    """A trigger that skips updates keeping the key (`WHEN NEW.id IS
    OLD.id`) lets the application's key change through and skips both of
    sqlite-ct's stamping UPDATEs: the key change fails instead of reaching
    replicas as an update of a key they do not have."""
    conn = apsw_conn
    track(conn, "integer", "native", "CREATE TRIGGER keyed BEFORE UPDATE ON t"
          " WHEN NEW.id IS OLD.id BEGIN SELECT RAISE(IGNORE); END", "trigger-later")
    run(conn, "INSERT INTO t(id, v, w) VALUES (1, 'a', 'b')")
    since = sqlite_ct.last_committed_csn(conn)
    with pytest.raises(apsw.ConstraintError, match=SKIPPED):
        run(conn, "UPDATE t SET id = 5 WHERE id = 1")
    assert q(conn, "SELECT id FROM t") == [(1,)]
    assert changes(conn, since) == ([], [], [])


@pytest.mark.parametrize("recursive", ["ON", "OFF"])
@pytest.mark.parametrize("mode", ["native", "portable"])
def test_a_row_a_trigger_deleted_first_is_not_taken_for_a_skipped_one(conn, mode, recursive):
    """The stamping UPDATE also changes no row when an AFTER UPDATE trigger
    of the application, created after sqlite-ct's (so it fires first),
    deleted the row: that is a delete, tracked, not an error."""
    run(conn, f"PRAGMA recursive_triggers={recursive}")
    track(conn, "integer", mode, "CREATE TRIGGER done AFTER UPDATE ON t WHEN NEW.v = 'done'"
          " BEGIN DELETE FROM t WHERE id = NEW.id; END", "trigger-later")
    run(conn, "INSERT INTO t(id, v, w) VALUES (1, 'a', 'b'), (2, 'c', 'd')")
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "UPDATE t SET v = 'done' WHERE id = 1", "UPDATE t SET v = 'x' WHERE id = 2")
    assert changes(conn, since) == ([], [(2, "x")], [1])


def test_an_error_in_an_explicit_transaction_keeps_the_transactions_other_changes(apsw_conn):
    """The refused statement is undone alone; the transaction's other
    changes commit, tracked."""
    conn = apsw_conn
    track(conn, "integer", "native", NOOP, "trigger-later")
    run(conn, "INSERT INTO t(id, v, w) VALUES (1, 'a', 'b')")
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "BEGIN", "INSERT INTO t(id, v, w) VALUES (2, 'c', 'd')")
    with pytest.raises(apsw.ConstraintError, match=SKIPPED):
        run(conn, "UPDATE t SET w = 'q'")
    run(conn, "COMMIT")
    assert q(conn, "SELECT id, w FROM t ORDER BY id") == [(1, "b"), (2, "d")]
    assert changes(conn, since) == ([(2, "c")], [], [])
    assert [p.code for p in sqlite_ct.check(conn)] == ["trigger-order"]
