"""Paging through sqlite_ct_changes() (csrc/changes.c): the documented order
of the live rows (NULL stamps by rowid or key, then stamped rows by change_bsn
and rowid or key), the `stamped` column, the resume arguments after_bsn and
after_key, and tombstones = 'each' (one row per tombstone, in the order of
the tombstones' primary key). The SQLite hub's downloads read their phases
this way (sqlite_ct/sync/_download.py)."""
import re
import uuid

import pytest

import sqlite_ct
from sqlhelpers import vm_steps
from sqlite_ct import errors

LIVE = ("SELECT change_bsn, row_rowid, pk, op, insert_bsn, context FROM "
        "sqlite_ct_changes(?1, ?2, ?3, NULL, NULL, ?4, ?5) WHERE stamped = {s} LIMIT ?6")
EACH = ("SELECT change_bsn, pk, insert_bsn, context FROM "
        "sqlite_ct_changes(?1, ?2, ?3, ?7, 'each', ?4, ?5) WHERE op = 'D' LIMIT ?6")


def rows(conn, sql, params=()):
    return [tuple(r) for r in conn.execute(sql, params)]


def one(conn, sql, params=()):
    return rows(conn, sql, params)[0][0]


def csn(conn):
    return sqlite_ct.last_committed_csn(conn)


def position(conn, table, row):
    """The resume position of a live row read by LIVE: (change_bsn, key) with
    the key the packed rowid, or the packed key of a WITHOUT ROWID table."""
    wr = one(conn, "SELECT wr FROM pragma_table_list WHERE name = ?", (table,))
    key = row[2] if wr else one(conn, "SELECT sqlite_ct_pack_key(?)", (row[1],))
    return row[0], key


def pages(conn, table, since, until, stamped, size, enable):
    """Every row of one live phase, read `size` at a time, each page resumed
    after the last row of the previous one."""
    out, after = [], (None, None)
    while True:
        page = rows(conn, LIVE.format(s=stamped), (table, since, until, *after, size))
        out += page
        if len(page) < size:
            return out
        after = position(conn, table, page[-1])


@pytest.fixture(params=["rowid", "text key", "without rowid"])
def history(request, conn):
    """A table with rows that predate tracking, then transactions of several
    rows each (inserts, updates, deletes, a key deleted and inserted again),
    with a tracking context on some. Returns (table, enabling BSN, last CSN,
    context)."""
    kind = request.param
    if kind == "rowid":
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    elif kind == "text key":
        conn.execute("CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT)")
    else:
        conn.execute("CREATE TABLE t(a INTEGER, b TEXT, v TEXT, PRIMARY KEY(b, a)) WITHOUT ROWID")
    cols = "id, v" if kind != "without rowid" else "a, b, v"

    def vals(i, v):
        if kind == "rowid":
            return f"({i}, '{v}')"
        if kind == "text key":
            return f"('k{(i * 7919) % 1000:04d}', '{v}')"
        return f"({i % 3}, 'b{(i * 31) % 17:02d}-{i}', '{v}')"
    conn.execute(f"INSERT INTO t({cols}) VALUES " + ", ".join(vals(i, "old") for i in range(40)))
    sqlite_ct.create_schema(conn, "t")
    enable = csn(conn)
    ctx = uuid.uuid4()
    for n in range(6):
        sqlite_ct.set_tracking_context(conn, ctx if n % 2 else None)
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO t({cols}) VALUES "
                     + ", ".join(vals(100 + 20 * n + i, f"n{n}") for i in range(20)))
        conn.execute(f"UPDATE t SET v = 'u{n}' WHERE v = 'old' AND rowid % 7 = {n}"
                     if kind != "without rowid" else
                     f"UPDATE t SET v = 'u{n}' WHERE v = 'old' AND a = {n % 3} AND b < 'b0{n}'")
        conn.execute(f"DELETE FROM t WHERE v = 'n{max(n - 1, 0)}' AND "
                     + ("rowid % 3 = 0" if kind != "without rowid" else "a = 0"))
        conn.execute("COMMIT")
    sqlite_ct.set_tracking_context(conn, None)
    return "t", enable, csn(conn), ctx


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_pages_resumed_after_a_position_read_each_live_row_once_in_order(conn, history,
                                                                        size):
    table, enable, last, _ = history
    for since in (0, enable, enable + 2):
        for stamped in (0, 1):
            whole = rows(conn, LIVE.format(s=stamped), (table, since, last, None, None, -1))
            assert pages(conn, table, since, last, stamped, size, enable) == whole
        # The two phases are exactly the live rows of the window, with the
        # same op, insert_bsn and context, NULL stamps first.
        both = (rows(conn, LIVE.format(s=0), (table, since, last, None, None, -1))
                + rows(conn, LIVE.format(s=1), (table, since, last, None, None, -1)))
        assert both == rows(conn, "SELECT change_bsn, row_rowid, pk, op, insert_bsn, context "
                                  "FROM sqlite_ct_changes(?, ?) WHERE op <> 'D'",
                            (table, since))
    # The documented order: NULL stamps by the table's order, stamped rows by
    # change_bsn and then the table's order (rowid, or the PRIMARY KEY).
    wr = one(conn, "SELECT wr FROM pragma_table_list WHERE name = 't'")
    order, key = ("b, a", "NULL, sqlite_ct_pack_key(b, a)") if wr else (
        "rowid", "rowid, sqlite_ct_pack_key(id)")
    chg = '"__sysChangeTxBsn"'
    expect = rows(conn, f"SELECT {chg} IS NOT NULL, coalesce({chg}, ?), {key} FROM t "
                        f"ORDER BY {chg} IS NOT NULL, {chg}, {order}", (enable,))
    assert rows(conn, "SELECT stamped, change_bsn, row_rowid, pk FROM "
                      "sqlite_ct_changes('t', 0) WHERE op <> 'D'") == expect


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_each_tombstone_is_a_row_in_the_order_of_the_tombstones(conn, history, size):
    table, enable, last, ctx = history
    for exclude in (None, ctx.bytes_le):
        expect = rows(conn, "SELECT __sysDeleteTxBsn, __sysRK, __sysInsertTxCsn, "
                            "__sysTrackingContext FROM __sysOCSDeletedRows WHERE __sysTName = 't' "
                            "AND (?1 IS NULL OR __sysTrackingContext IS NOT ?1) ORDER BY 1, 2",
                      (exclude,))
        assert len(expect) > 5
        out, after = [], (None, None)
        while True:
            page = rows(conn, EACH, (table, 0, last, *after, size, exclude))
            out += page
            if len(page) < size:
                break
            after = page[-1][:2]
        assert out == expect
        # after_bsn alone: the tombstones of later transactions.
        mid = expect[len(expect) // 2][0]
        assert rows(conn, EACH, (table, 0, last, mid, None, -1, exclude)) == [
            r for r in expect if r[0] > mid]


def test_a_page_of_a_huge_transaction_reads_only_that_page(apsw_conn):
    """Linear paging: rows that predate tracking, and rows written in one
    transaction, read 500 at a time: a late page costs what the first does."""
    conn = apsw_conn
    conn.execute("CREATE TEMP VIEW generate_series(value) AS WITH RECURSIVE s(value) AS "
                 "(SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < 40000) "
                 "SELECT value FROM s")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE TABLE w(a INTEGER, b TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID")
    conn.execute("INSERT INTO t(id, v) SELECT value, 'x' FROM generate_series WHERE value <= 20000")
    sqlite_ct.create_schema(conn, "t")
    sqlite_ct.create_schema(conn, "w")
    enable = csn(conn)
    with conn:
        conn.execute("INSERT INTO t(id, v) SELECT value, 'y' FROM generate_series WHERE value > 20000")
        conn.execute("INSERT INTO w(a, b) SELECT value % 10, 'k' || value FROM generate_series "
                     "WHERE value <= 20000")
    with conn:
        conn.execute("DELETE FROM t WHERE id > 30000")
    last = csn(conn)
    cost = {}
    for table, stamped in (("t", 0), ("t", 1), ("w", 1)):
        got = []
        after = (None, None)
        while True:
            params = (table, 0, last, *after, 500)
            page = rows(conn, LIVE.format(s=stamped), params)
            if not page:
                break
            steps = vm_steps(conn, LIVE.format(s=stamped), params)
            cost.setdefault((table, stamped), []).append(steps)
            got += page
            after = position(conn, table, page[-1])
        assert len(got) == (20000 if table == "w" else 20000 if stamped == 0 else 10000)
        first, late = cost[(table, stamped)][0], max(cost[(table, stamped)][1:])
        assert late < 2 * first + 20, (table, stamped, cost[(table, stamped)])
    after = (None, None)
    steps = []
    while True:
        params = ("t", enable, last, *after, 500, None)
        page = rows(conn, EACH, params)
        if not page:
            break
        steps.append(vm_steps(conn, EACH, params))
        after = page[-1][:2]
    assert len(steps) == 20 and max(steps[1:]) < 2 * steps[0] + 20, steps
    # Without the resume arguments a late page reads every earlier row.
    late = ("t", 0, last, None, None, 500)
    assert vm_steps(conn, "SELECT change_bsn FROM sqlite_ct_changes(?1, ?2, ?3) "
                          "WHERE stamped = 1 LIMIT ?6 OFFSET 9000", late) > 10 * steps[0]


def test_the_hub_reads_the_function_as_the_outer_loop_with_no_sort(apsw_conn):
    """The plans of the SQLite hub's download reads: sqlite_ct_changes() first,
    the table looked up by rowid or key, no temporary b-tree (a LIMIT stops
    the function)."""
    from sqlite_ct.sync import _download, _sql
    from sqlite_ct.sync._anchor import PHASE_STAMPED, PHASE_UNSTAMPED, Window
    conn = apsw_conn
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, owner TEXT, v TEXT)")
    conn.execute("CREATE TABLE w(a INTEGER, b TEXT, v TEXT, PRIMARY KEY(a, b)) WITHOUT ROWID")
    for name in ("t", "w"):
        sqlite_ct.create_schema(conn, name)
    upper = csn(conn)
    for name, lookup in (("t", "USING INTEGER PRIMARY KEY"), ("w", "USING PRIMARY KEY")):
        info = _sql.table_info(conn, name)
        for where in (None, "owner = :user" if name == "t" else "a = :user"):
            flt = _download.row_filter(name, where, {"user": 1})
            reader = _download._TableReader(conn, info, flt, b"\1" * 16, None)
            for phase, key in ((PHASE_UNSTAMPED, None), (PHASE_STAMPED, b"\1"),
                               (PHASE_STAMPED, None)):
                w = Window(upper, 1, False, False, phase, 1, key)
                sql, params = reader._changes_select(w)
                plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql,
                                                   {**params, "sqlite_ct_lim": 10})]
                assert plan[0].startswith("SCAN c VIRTUAL TABLE"), plan
                assert any(p.startswith("SEARCH t") and lookup in p for p in plan), plan
                assert not any("TEMP B-TREE" in p for p in plan), plan


BAD = [
    ("tombstones = 'all'", (), errors.Error, "tombstones is 'key' or 'each'"),
    ("tombstones = 1", (), errors.Error, "tombstones is 'key' or 'each'"),
    ("stamped = 1 AND after_bsn = 'x'", (), errors.Error, "after_bsn is an integer BSN"),
    ("stamped = 1 AND after_bsn = 1.5", (), errors.Error, "after_bsn is an integer BSN"),
    ("stamped = 1 AND after_bsn = 1 AND after_key = 7", (), errors.Error,
     r"after_key is a packed key \(sqlite_ct_pack_key\(\)\) or NULL"),
    ("stamped = 1 AND after_key = sqlite_ct_pack_key(1)", (), errors.Error,
     "after_key needs after_bsn"),
    ("after_bsn = 1", (), errors.Error, "after_bsn resumes live rows and tombstones = 'each'"),
]


@pytest.mark.parametrize("where, params, cls, message", BAD)
def test_bad_paging_arguments_get_the_functions_errors(conn, where, params, cls, message):
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'a')")
    with pytest.raises(Exception) as err:
        from sqlite_ct import _conn
        with _conn.translated():
            rows(conn, f"SELECT * FROM sqlite_ct_changes('t', 0) WHERE {where}", params)
    assert isinstance(err.value, cls), err.value
    assert str(err.value).startswith("sqlite-ct: "), err.value
    assert re.search(message, str(err.value)), err.value


def test_after_bsn_with_deletes_left_out_by_op_is_accepted(conn):
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'a')")
    b = csn(conn)
    conn.execute("INSERT INTO t(id, v) VALUES (2, 'b')")
    assert rows(conn, "SELECT row_rowid FROM sqlite_ct_changes('t', 0) "
                      "WHERE op <> 'D' AND after_bsn = ?", (b,)) == [(2,)]
    assert rows(conn, "SELECT row_rowid FROM sqlite_ct_changes('t', 0) "
                      "WHERE op = 'I' AND after_bsn = ? AND after_key = sqlite_ct_pack_key(0)",
                (b,)) == [(1,), (2,)]


def test_each_tombstone_refuses_a_portable_table_and_resuming_a_hidden_rowid(conn):
    conn.execute("CREATE TABLE p(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "p", mode="portable")
    conn.execute('CREATE TABLE h(k TEXT PRIMARY KEY, "rowid" INT, "_rowid_" INT, "oid" INT)')
    sqlite_ct.create_schema(conn, "h")
    conn.execute('INSERT INTO h(k, "rowid", "_rowid_", "oid") VALUES (\'a\', 1, 2, 3)')
    from sqlite_ct import _conn
    with pytest.raises(errors.Error, match="tracked in portable mode"):
        with _conn.translated():
            rows(conn, "SELECT * FROM sqlite_ct_changes('p', 0) WHERE tombstones = 'each'")
    with pytest.raises(errors.Error, match="hide the rowid that orders it"):
        with _conn.translated():
            rows(conn, "SELECT * FROM sqlite_ct_changes('h', 0) WHERE stamped = 1 "
                       "AND after_bsn = 0 AND after_key = sqlite_ct_pack_key(1)")
    # Without a key to resume after, such a table still reads.
    assert len(rows(conn, "SELECT * FROM sqlite_ct_changes('h', 0) WHERE stamped = 1 "
                          "AND after_bsn = 0")) == 1


def test_expiry_is_judged_by_what_a_read_needs(conn):
    """A read of live rows alone (stamped = 0 or 1) needs no tombstone and is
    not refused as expired; tombstones = 'each' needs those after
    max(since, after_bsn)."""
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    for i in range(4):
        conn.execute("INSERT INTO t(id, v) VALUES (?, 'a')", (i,))
        conn.execute("DELETE FROM t WHERE id = ?", (i - 1,))
    old = csn(conn) - 3
    sqlite_ct.purge_tombstones(conn, "t", up_to_csn=csn(conn) - 1)
    valid = one(conn, "SELECT __sysMinValidCsn FROM __sysOCSTrackedObjects")
    assert valid > old
    from sqlite_ct import _conn
    with pytest.raises(errors.AnchorExpiredError):
        with _conn.translated():
            rows(conn, "SELECT * FROM sqlite_ct_changes('t', ?)", (old,))
    assert rows(conn, "SELECT row_rowid FROM sqlite_ct_changes('t', ?) WHERE stamped = 1",
                (old,)) == [(3,)]
    with pytest.raises(errors.AnchorExpiredError):
        with _conn.translated():
            rows(conn, "SELECT * FROM sqlite_ct_changes('t', ?) WHERE tombstones = 'each' "
                       "AND after_bsn = ?", (old, old))
    assert rows(conn, "SELECT change_bsn FROM sqlite_ct_changes('t', ?) "
                      "WHERE tombstones = 'each' AND after_bsn = ? AND op = 'D'",
                (old, valid)) == rows(conn, "SELECT __sysDeleteTxBsn FROM __sysOCSDeletedRows "
                                            "WHERE __sysDeleteTxBsn > ? ORDER BY 1", (valid,))
