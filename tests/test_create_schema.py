"""create_schema / disable_tracking / is_tracked: what turning tracking on and
off does to the schema, the system tables and what is enumerated afterwards."""
import time

import apsw
import pytest

import sqlite_ct
from sqlite_ct import TrackingOptions
from sqlite_ct.errors import Error, NotTrackedError, TableError
from sqlhelpers import HOST_ERRORS, in_transaction, q, run, val


SYSTEM_TABLES = {
    "__sysCtMeta", "__sysOCSTrackedObjects", "__sysOCSDeletedRows",
    "__sysTxCommitSequence", "__sysSyncSubscriptions", "__sysSyncArticles",
    "__sysCtReplaceVictims",   # layout 4's victims, kept for its triggers until upgraded
}
SYS_COLUMNS = [("__sysChangeTxBsn", "INTEGER"), ("__sysInsertTxBsn", "INTEGER"),
               ("__sysTrackingContext", "BLOB")]


def columns(conn, table):
    return [(r[0], r[1]) for r in q(conn, "SELECT name, type FROM pragma_table_xinfo(?) "
                                          "ORDER BY cid", (table,))]


def triggers(conn, table):
    return sorted(r[0] for r in q(conn, "SELECT name FROM sqlite_schema WHERE type='trigger' "
                                        "AND tbl_name=?", (table,)))


def indexes(conn, table):
    return sorted(r[0] for r in q(conn, "SELECT name FROM pragma_index_list(?)", (table,)))


def sys_tables(conn):
    return {r[0] for r in q(conn, "SELECT name FROM sqlite_schema WHERE type='table' "
                                  "AND name LIKE '\\_\\_sys%' ESCAPE '\\'")}


def by_id(rows):
    return sorted(rows, key=lambda r: r["id"])


# ---------------------------------------------------------------- what it adds

ALL_TRIGGERS = ["__sysct_ad_t", "__sysct_ai_t", "__sysct_ak_t", "__sysct_au_t"]


def test_adds_three_columns_the_change_index_and_the_triggers(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    enable = sqlite_ct.create_schema(conn, "t")
    assert isinstance(enable, int) and enable >= 1
    assert columns(conn, "t") == [("id", "INTEGER"), ("v", "TEXT")] + SYS_COLUMNS
    assert indexes(conn, "t") == ["__sysct_cap_t", "__sysct_chg_t", "__sysct_guard_t"]
    assert q(conn, "SELECT name FROM pragma_index_info('__sysct_chg_t')") == [
        ("__sysChangeTxBsn",)]
    # the guard (tests/test_guard.py): empty, every column a key column
    assert q(conn, "SELECT sql FROM sqlite_schema WHERE name='__sysct_guard_t'") == [(
        'CREATE INDEX "__sysct_guard_t" ON "t"("id" COLLATE BINARY, "v" COLLATE BINARY, '
        '"__sysChangeTxBsn" COLLATE BINARY, "__sysInsertTxBsn" COLLATE BINARY, '
        '"__sysTrackingContext" COLLATE BINARY) WHERE sqlite_ct_guard(\'t\')=0',)]
    # the capture (layout 5): rows SQLite deletes through any index, the old
    # key of a key change; every table whose deletes are tracked has it
    assert q(conn, "SELECT sql FROM sqlite_schema WHERE name='__sysct_cap_t'") == [(
        'CREATE INDEX "__sysct_cap_t" ON "t"("id" COLLATE BINARY) WHERE'
        ' sqlite_ct_capture(\'t\', "__sysInsertTxBsn", "id")=0',)]
    assert triggers(conn, "t") == ALL_TRIGGERS
    assert not in_transaction(conn)


def test_unique_index_adds_no_further_triggers(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    assert triggers(conn, "t") == ALL_TRIGGERS


def test_without_delete_tracking_there_is_no_delete_trigger_nor_capture(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    sqlite_ct.create_schema(conn, "t", options=sqlite_ct.TrackingOptions.INSERT
                            | sqlite_ct.TrackingOptions.UPDATE)
    assert triggers(conn, "t") == ["__sysct_ai_t", "__sysct_ak_t", "__sysct_au_t"]
    assert "__sysct_cap_t" not in indexes(conn, "t")


def test_creates_the_system_tables_and_registers_the_table(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    before_ms = int(time.time() * 1000)
    enable = sqlite_ct.create_schema(conn, "t")
    after_ms = int(time.time() * 1000)
    assert sys_tables(conn) == SYSTEM_TABLES
    meta = dict(q(conn, "SELECT key, value FROM __sysCtMeta"))
    assert meta.keys() == {"layout_version", "database_id"}
    assert meta["layout_version"] == 7
    # the database's identity, written into its triggers (see test_attached.py)
    assert isinstance(meta["database_id"], int) and meta["database_id"] > 0
    assert q(conn, "SELECT * FROM __sysOCSTrackedObjects") == [
        ("t", 7 * 16, 1, None, enable, 0)]
    log = q(conn, "SELECT __sysTxCsn, __sysTxBsn, __sysCommitTime FROM __sysTxCommitSequence")
    assert [(csn, bsn) for csn, bsn, _ in log] == [(enable, enable)]
    assert before_ms - 1000 <= log[0][2] <= after_ms + 1000
    assert sqlite_ct.last_committed_csn(conn) == enable


def test_second_call_is_idempotent(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)",
        "INSERT INTO t VALUES (1, 'a', 'x')")
    enable = sqlite_ct.create_schema(conn, "t")
    shape = (columns(conn, "t"), triggers(conn, "t"), indexes(conn, "t"))
    log = q(conn, "SELECT * FROM __sysTxCommitSequence")

    assert sqlite_ct.create_schema(conn, "t") == enable
    assert (columns(conn, "t"), triggers(conn, "t"), indexes(conn, "t")) == shape
    assert val(conn, "SELECT count(*) FROM sqlite_schema WHERE type='trigger' "
                     "AND tbl_name='t'") == len(ALL_TRIGGERS)
    assert q(conn, "SELECT * FROM __sysTxCommitSequence") == log
    assert q(conn, "SELECT __sysTName, __sysEnableTxBsn FROM __sysOCSTrackedObjects") == [
        ("t", enable)]
    # Still tracking, once: an insert is one change.
    run(conn, "INSERT INTO t(id, u, v) VALUES (2, 'b', 'y')")
    changes = sqlite_ct.enumerate_changes(conn, "t", enable)
    assert (changes.inserts, changes.updates, changes.deletes) == (
        [{"id": 2, "u": "b", "v": "y"}], [], [])


def test_second_call_updates_the_options(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    enable = sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.create_schema(
        conn, "t", options=TrackingOptions.INSERT | TrackingOptions.DELETE) == enable
    assert val(conn, "SELECT __sysTrackOpt FROM __sysOCSTrackedObjects") == 5 * 16
    run(conn, "UPDATE t SET v = 'A' WHERE id = 1")
    run(conn, "INSERT INTO t(id, v) VALUES (3, 'c')")
    changes = sqlite_ct.enumerate_changes(conn, "t", enable)
    assert (changes.inserts, changes.updates) == ([{"id": 3, "v": "c"}], [])

    anchor = changes.new_anchor
    sqlite_ct.create_schema(conn, "t", options=TrackingOptions.ALL)
    assert val(conn, "SELECT __sysTrackOpt FROM __sysOCSTrackedObjects") == 7 * 16
    run(conn, "UPDATE t SET v = 'B' WHERE id = 2")
    assert sqlite_ct.enumerate_changes(conn, "t", anchor).updates == [{"id": 2, "v": "B"}]


# ------------------------------------------------------------- transactions

def test_inside_a_transaction_rolled_back_leaves_no_trace(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE)",
        "INSERT INTO t VALUES (1, 'a')")
    run(conn, "BEGIN")
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.is_tracked(conn, "t")
    assert in_transaction(conn)
    run(conn, "ROLLBACK")

    assert sys_tables(conn) == set()
    assert columns(conn, "t") == [("id", "INTEGER"), ("u", "TEXT")]
    assert triggers(conn, "t") == []
    assert indexes(conn, "t") == ["sqlite_autoindex_t_1"]
    assert not sqlite_ct.is_tracked(conn, "t")
    assert sqlite_ct.tracked_tables(conn) == []

    # and tracking can be turned on afterwards, from scratch
    enable = sqlite_ct.create_schema(conn, "t")
    assert q(conn, "SELECT __sysTxCsn FROM __sysTxCommitSequence") == [(enable,)]
    run(conn, "INSERT INTO t(id, u) VALUES (2, 'b')")
    assert sqlite_ct.enumerate_changes(conn, "t", enable).inserts == [{"id": 2, "u": "b"}]


def test_inside_a_transaction_shares_the_transactions_bsn(conn):
    run(conn, "CREATE TABLE t1(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE t2(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t2 VALUES (1, 'old')")
    sqlite_ct.create_schema(conn, "t1")
    log_before = val(conn, "SELECT count(*) FROM __sysTxCommitSequence")
    run(conn, "BEGIN", "INSERT INTO t1(id, v) VALUES (1, 'x')")
    bsn = sqlite_ct.current_bsn(conn)
    assert bsn is not None
    assert sqlite_ct.create_schema(conn, "t2") == bsn
    assert in_transaction(conn)
    run(conn, "INSERT INTO t2(id, v) VALUES (2, 'y')", "COMMIT")
    assert val(conn, "SELECT count(*) FROM __sysTxCommitSequence") == log_before + 1
    assert q(conn, "SELECT id, __sysInsertTxBsn FROM t2 ORDER BY id") == [(1, None), (2, bsn)]
    assert q(conn, "SELECT __sysEnableTxBsn FROM __sysOCSTrackedObjects "
                   "WHERE __sysTName='t2'") == [(bsn,)]


def test_failed_create_schema_leaves_nothing_behind(conn):
    run(conn, "CREATE TABLE np(a, b)")
    with pytest.raises(TableError):
        sqlite_ct.create_schema(conn, "np")
    assert sys_tables(conn) == set()
    assert columns(conn, "np") == [("a", ""), ("b", "")]
    assert not in_transaction(conn)


# ------------------------------------------------------- pre-existing rows

def test_preexisting_rows_count_as_inserted_by_the_enabling_transaction(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    enable = sqlite_ct.create_schema(conn, "t")
    # SQL CE kept NULL stamps for them; so does sqlite-ct.
    assert q(conn, "SELECT __sysChangeTxBsn, __sysInsertTxBsn FROM t") == [(None, None)] * 3

    from_zero = sqlite_ct.enumerate_changes(conn, "t", 0)
    assert from_zero.new_anchor == enable
    assert by_id(from_zero.inserts) == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"},
                                        {"id": 3, "v": "c"}]
    assert (from_zero.updates, from_zero.deletes) == ([], [])
    assert len(sqlite_ct.enumerate_changes(conn, "t", enable)) == 0

    # Later changes to them: an update and a delete of rows the replica has.
    run(conn, "UPDATE t SET v = 'A' WHERE id = 1", "DELETE FROM t WHERE id = 2")
    since_enable = sqlite_ct.enumerate_changes(conn, "t", enable)
    assert (since_enable.inserts, since_enable.updates, since_enable.deletes) == (
        [], [{"id": 1, "v": "A"}], [{"id": 2}])
    # From 0 the deleted row was never seen: nothing for it; row 1 is an insert.
    from_zero = sqlite_ct.enumerate_changes(conn, "t", 0)
    assert by_id(from_zero.inserts) == [{"id": 1, "v": "A"}, {"id": 3, "v": "c"}]
    assert (from_zero.updates, from_zero.deletes) == ([], [])


# ---------------------------------------------------------- option subsets

@pytest.mark.parametrize("options", range(1, 8),
                         ids=lambda o: str(TrackingOptions(o)).split(".")[-1])
def test_tracking_options_subsets(apsw_conn, options):
    conn = apsw_conn
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    enable = sqlite_ct.create_schema(conn, "t", options=TrackingOptions(options))
    assert val(conn, "SELECT __sysTrackOpt FROM __sysOCSTrackedObjects") == options * 16
    assert ("__sysct_ad_t" in triggers(conn, "t")) == bool(options & TrackingOptions.DELETE)

    run(conn, "INSERT INTO t(id, v) VALUES (4, 'd')")
    run(conn, "UPDATE t SET v = 'A' WHERE id = 1")
    run(conn, "DELETE FROM t WHERE id = 2")
    changes = sqlite_ct.enumerate_changes(conn, "t", enable)
    assert changes.inserts == ([{"id": 4, "v": "d"}] if options & 1 else [])
    assert changes.updates == ([{"id": 1, "v": "A"}] if options & 2 else [])
    assert changes.deletes == ([{"id": 2}] if options & 4 else [])

    # The row inserted under these options, updated later: an update exactly
    # when updates are tracked (its insert, tracked or not, is older).
    anchor = changes.new_anchor
    run(conn, "UPDATE t SET v = 'D' WHERE id = 4")
    changes = sqlite_ct.enumerate_changes(conn, "t", anchor)
    assert (changes.inserts, changes.deletes) == ([], [])
    assert changes.updates == ([{"id": 4, "v": "D"}] if options & 2 else [])


# ------------------------------------------------------------------ disable

def test_disable_tracking_removes_everything_of_the_table(conn, db_path):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)",
        "CREATE TABLE other(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'z')",
        "INSERT INTO other VALUES (1, 'o'), (2, 'p')")
    first_enable = sqlite_ct.create_schema(conn, "t")
    sqlite_ct.create_schema(conn, "other")
    run(conn, "DELETE FROM t WHERE id = 3", "DELETE FROM other WHERE id = 2")
    sqlite_ct.set_sent_anchor(conn, "t", 5)
    sqlite_ct.set_sent_anchor(conn, "other", 6)

    assert sqlite_ct.disable_tracking(conn, "t") is None
    assert not in_transaction(conn)
    assert columns(conn, "t") == [("id", "INTEGER"), ("u", "TEXT"), ("v", "TEXT")]
    assert triggers(conn, "t") == []
    assert indexes(conn, "t") == ["sqlite_autoindex_t_1"]
    assert q(conn, "SELECT __sysTName FROM __sysOCSDeletedRows") == [("other",)]
    assert q(conn, "SELECT TableName FROM __sysSyncArticles") == [("other",)]
    assert q(conn, "SELECT __sysTName FROM __sysOCSTrackedObjects") == [("other",)]
    assert not sqlite_ct.is_tracked(conn, "t")
    assert sqlite_ct.tracked_tables(conn) == ["other"]
    assert q(conn, "SELECT * FROM t ORDER BY id") == [(1, "a", "x"), (2, "b", "y")]
    # the other table is still tracked
    assert sqlite_ct.enumerate_changes(conn, "other", 0).inserts == [{"id": 1, "v": "o"}]

    # A connection without the extension may now write the table.
    plain = apsw.Connection(db_path)
    try:
        plain.execute("INSERT INTO t VALUES (4, 'd', 'w'); UPDATE t SET v = 'X' WHERE id = 1;"
                      "DELETE FROM t WHERE id = 2")
    finally:
        plain.close()
    assert q(conn, "SELECT * FROM t ORDER BY id") == [(1, "a", "X"), (4, "d", "w")]

    # ... and tracking can be turned on again.
    enable = sqlite_ct.create_schema(conn, "t")
    assert enable > first_enable
    assert by_id(sqlite_ct.enumerate_changes(conn, "t", 0).inserts) == [
        {"id": 1, "u": "a", "v": "X"}, {"id": 4, "u": "d", "v": "w"}]


def test_disable_tracking_of_an_untracked_table(conn):
    run(conn, "CREATE TABLE u(id INTEGER PRIMARY KEY)")
    # no system tables at all yet
    with pytest.raises(NotTrackedError) as exc:
        sqlite_ct.disable_tracking(conn, "u")
    assert str(exc.value) == 'sqlite-ct: table "u" is not tracked'
    assert sys_tables(conn) == set()
    # system tables present, another table tracked
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    sqlite_ct.create_schema(conn, "t")
    for name in ("u", "missing"):
        with pytest.raises(NotTrackedError) as exc:
            sqlite_ct.disable_tracking(conn, name)
        assert str(exc.value) == f'sqlite-ct: table "{name}" is not tracked'
    # twice
    sqlite_ct.disable_tracking(conn, "t")
    with pytest.raises(NotTrackedError) as exc:
        sqlite_ct.disable_tracking(conn, "t")
    assert str(exc.value) == 'sqlite-ct: table "t" is not tracked'


def test_is_tracked_and_tracked_tables(conn):
    run(conn, "CREATE TABLE b(id INTEGER PRIMARY KEY)", "CREATE TABLE a(id INTEGER PRIMARY KEY)",
        "CREATE TABLE c(id INTEGER PRIMARY KEY)")
    assert sqlite_ct.tracked_tables(conn) == []
    assert not sqlite_ct.is_tracked(conn, "a")
    assert sys_tables(conn) == set()  # asking creates nothing
    sqlite_ct.create_schema(conn, "b")
    sqlite_ct.create_schema(conn, "A")  # names are case-insensitive; the stored one is canonical
    assert sqlite_ct.tracked_tables(conn) == ["a", "b"]
    assert sqlite_ct.is_tracked(conn, "a") and sqlite_ct.is_tracked(conn, "B")
    assert not sqlite_ct.is_tracked(conn, "c")
    assert not sqlite_ct.is_tracked(conn, "nope")
    assert triggers(conn, "a") == [n.replace("_t", "_a") for n in ALL_TRIGGERS]
    assert val(conn, "SELECT sqlite_ct_is_tracked('b')") == 1
    assert val(conn, "SELECT sqlite_ct_is_tracked('c')") == 0


# ------------------------------------------------------------------- errors

REFUSALS = [
    pytest.param("", "nope", 'sqlite-ct: no such table: "nope"', id="no-such-table"),
    pytest.param("CREATE TABLE base(id INTEGER PRIMARY KEY); "
                 "CREATE VIEW v AS SELECT * FROM base", "v",
                 'sqlite-ct: "v" is a view, not a table; only ordinary tables can be tracked',
                 id="view"),
    pytest.param("CREATE TABLE np(a, b)", "np",
                 'sqlite-ct: table "np" has no PRIMARY KEY; add one (an INTEGER PRIMARY KEY'
                 " keeps today's rowids, which VACUUM may otherwise renumber)",
                 id="no-primary-key"),
    pytest.param("", "__sysTxCommitSequence",
                 'sqlite-ct: "__sysTxCommitSequence" is a system table; '
                 "only user tables can be tracked", id="system-table"),
    pytest.param("CREATE TABLE __sysMine(id INTEGER PRIMARY KEY)", "__sysMine",
                 'sqlite-ct: "__sysMine" is a system table; only user tables can be tracked',
                 id="sys-prefixed-user-table"),
    pytest.param("", "sqlite_schema",
                 'sqlite-ct: "sqlite_schema" is a system table; only user tables can be tracked',
                 id="sqlite-schema"),
]


@pytest.mark.parametrize("setup, table, message", REFUSALS)
def test_refusals_python(conn, setup, table, message):
    for sql in filter(None, (s.strip() for s in setup.split(";"))):
        run(conn, sql)
    schema_before = q(conn, "SELECT * FROM sqlite_schema ORDER BY name")
    with pytest.raises(TableError) as exc:
        sqlite_ct.create_schema(conn, table)
    assert str(exc.value) == message
    assert q(conn, "SELECT * FROM sqlite_schema ORDER BY name") == schema_before
    assert not in_transaction(conn)


@pytest.mark.parametrize("setup, table, message", REFUSALS)
def test_refusals_sql(conn, setup, table, message):
    for sql in filter(None, (s.strip() for s in setup.split(";"))):
        run(conn, sql)
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, "SELECT sqlite_ct_create_schema(?)", (table,))
    assert str(exc.value) == message


EXPRESSION_UNIQUE = ("CREATE TABLE e(id INTEGER PRIMARY KEY, u TEXT)",
                     "CREATE UNIQUE INDEX e_lower ON e(lower(u))")


def test_a_unique_index_on_an_expression_is_refused_in_portable_mode(conn):
    run(conn, *EXPRESSION_UNIQUE)
    schema_before = q(conn, "SELECT * FROM sqlite_schema ORDER BY name")
    message = ('sqlite-ct: table "e" has a UNIQUE index on an expression ("e_lower"); in'
               " portable mode INSERT OR REPLACE through it would delete rows sqlite-ct"
               " cannot see; index plain columns instead, or track the table in native mode")
    with pytest.raises(TableError) as exc:
        sqlite_ct.create_schema(conn, "e", mode="portable")
    assert str(exc.value) == message
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, "SELECT sqlite_ct_create_schema('e', 7, 'portable')")
    assert str(exc.value) == message
    assert q(conn, "SELECT * FROM sqlite_schema ORDER BY name") == schema_before


def test_a_unique_index_on_an_expression_is_tracked_in_native_mode(conn):
    """The capture (layout 5) sees the rows OR REPLACE deletes through any
    index, an expression's included."""
    run(conn, *EXPRESSION_UNIQUE)
    sqlite_ct.create_schema(conn, "e")
    run(conn, "INSERT INTO e(id, u) VALUES (1, 'Ab'), (2, 'cd')")
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT OR REPLACE INTO e(id, u) VALUES (3, 'AB')")   # lower() clashes with 1
    changes = sqlite_ct.enumerate_changes(conn, "e", since)
    assert [d["id"] for d in changes.deletes] == [1]
    assert changes.inserts == [{"id": 3, "u": "AB"}]
    # and a table tracked in native mode refuses to switch to portable mode
    with pytest.raises(TableError):
        sqlite_ct.create_schema(conn, "e", mode="portable")
    assert sqlite_ct.check(conn) == []


def test_refuses_a_virtual_table(apsw_conn):
    run(apsw_conn, "CREATE VIRTUAL TABLE f USING fts5(x)")
    with pytest.raises(TableError) as exc:
        sqlite_ct.create_schema(apsw_conn, "f")
    assert str(exc.value) == ('sqlite-ct: "f" is a virtual table; '
                              "only ordinary tables can be tracked")


def test_unique_index_on_plain_columns_is_accepted(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT)",
        "CREATE UNIQUE INDEX t_ab ON t(a, b)")
    sqlite_ct.create_schema(conn, "t")
    assert triggers(conn, "t") == ALL_TRIGGERS
    assert "__sysct_cap_t" in indexes(conn, "t")


def test_create_schema_argument_errors(conn):
    with pytest.raises(TableError) as exc:
        sqlite_ct.create_schema(conn, "")
    assert str(exc.value) == "sqlite-ct: create_schema() needs a table name, got ''"
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    with pytest.raises(ValueError) as exc:
        sqlite_ct.create_schema(conn, "t", options=TrackingOptions(0))
    assert str(exc.value) == "options must include at least one of INSERT, UPDATE, DELETE"
    assert sys_tables(conn) == set()


def test_create_schema_refused_in_apply_mode(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    with sqlite_ct.applying_server_changes(conn):
        with pytest.raises(Error) as exc:
            sqlite_ct.create_schema(conn, "t")
    assert str(exc.value) == ("sqlite-ct: cannot enable tracking while the connection "
                              "is in apply mode")
    assert not sqlite_ct.is_tracked(conn, "t")


# ------------------------------------------------------------ SQL function form

def test_sql_function_form(conn):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE t2(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t VALUES (1, 'a')")
    enable = val(conn, "SELECT sqlite_ct_create_schema('t')")
    assert isinstance(enable, int) and enable == sqlite_ct.last_committed_csn(conn)
    assert sqlite_ct.tracked_tables(conn) == ["t"]
    assert q(conn, "SELECT __sysTName, __sysTrackOpt, __sysEnableTxBsn "
                   "FROM __sysOCSTrackedObjects") == [("t", 112, enable)]
    assert val(conn, "SELECT sqlite_ct_create_schema('t')") == enable
    assert val(conn, "SELECT sqlite_ct_create_schema('t2', 5)") == enable + 1
    assert val(conn, "SELECT __sysTrackOpt FROM __sysOCSTrackedObjects "
                     "WHERE __sysTName='t2'") == 80
    run(conn, "INSERT INTO t(id, v) VALUES (2, 'b')")
    assert sqlite_ct.enumerate_changes(conn, "t", enable + 1).inserts == [{"id": 2, "v": "b"}]
    assert val(conn, "SELECT sqlite_ct_disable_tracking('t2')") == 1
    assert sqlite_ct.tracked_tables(conn) == ["t"]


@pytest.mark.parametrize("options", ["0", "8", "-1", "'7'", "1.5", "NULL"])
def test_sql_function_form_bad_options(conn, options):
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, f"SELECT sqlite_ct_create_schema('t', {options})")
    assert str(exc.value) == ("sqlite-ct: tracking options must be an integer from 1 to 7"
                              " (1 insert, 2 update, 4 delete, 7 all)")
    assert sys_tables(conn) == set()


@pytest.mark.parametrize("func", ["sqlite_ct_create_schema", "sqlite_ct_disable_tracking",
                                  "sqlite_ct_is_tracked"])
@pytest.mark.parametrize("arg", ["NULL", "''", "5", "x'74'"])
def test_sql_functions_need_a_table_name(conn, func, arg):
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, f"SELECT {func}({arg})")
    assert str(exc.value) == f"sqlite-ct: {func}() needs a table name"


def test_key_change_without_update_tracking_is_delete_plus_insert(apsw_conn):
    """Options INSERT|DELETE: a key change is still a delete of the old key and
    an insert of the new one (enumeration finds rows through the change stamp,
    which the key change must set even though updates are not tracked)."""
    conn = apsw_conn
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t", options=sqlite_ct.TrackingOptions.INSERT
                            | sqlite_ct.TrackingOptions.DELETE)
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'a')")
    since = sqlite_ct.last_committed_csn(conn)
    conn.execute("UPDATE t SET v = 'b' WHERE id = 1")      # not tracked
    assert len(sqlite_ct.enumerate_changes(conn, "t", since)) == 0
    conn.execute("UPDATE t SET id = 2 WHERE id = 1")
    changes = sqlite_ct.enumerate_changes(conn, "t", since)
    assert (changes.inserts, changes.updates, changes.deletes) == (
        [{"id": 2, "v": "b"}], [], [{"id": 1}])
