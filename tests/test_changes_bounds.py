"""Bounds on change_bsn in sqlite_ct_changes() (csrc/changes.c): a constraint
change_bsn > X (>=) and change_bsn < Y (<=) narrows what the function reads,
phase by phase (tombstones, stamped rows, rows with NULL stamps), and changes
nothing else: the rows are exactly those of the whole window whose change_bsn
is inside the bounds, each as it is in the whole window (op against since,
change_bsn the newest of the window). Used by the sync client to read its
upload in runs of whole transactions."""
import itertools
import uuid

import pytest

import sqlite_ct
from sqlhelpers import vm_steps
from sqlite_ct import changes as core

COLS = "op, change_bsn, insert_bsn, context, pk, row_rowid"
OPS = {">": lambda b, x: b > x, ">=": lambda b, x: b >= x,
       "<": lambda b, x: b < x, "<=": lambda b, x: b <= x}


def rows(conn, sql, params=()):
    return sorted((tuple(r) for r in conn.execute(sql, params)),
                  key=lambda r: tuple((v is None, str(type(v)), v) for v in r))


def csn(conn):
    return sqlite_ct.last_committed_csn(conn)


@pytest.fixture
def history(conn):
    """A table with rows that predate tracking (NULL stamps, the enabling
    BSN), then, after `since`, inserts, updates, a key change, deletes, a key
    deleted twice (re-inserted between), a key deleted and inserted again, a
    row born and gone, each in a transaction of its own, with tracking
    contexts on some. Returns (since, enabling BSN, last CSN)."""
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e')")
    sqlite_ct.create_schema(conn, "t")
    enable = csn(conn)
    conn.execute("UPDATE t SET v = 'stamped' WHERE id = 5")
    since = csn(conn)
    ctx = uuid.uuid4()
    steps = [
        "INSERT INTO t(id, v) VALUES (10, 'new')",
        "UPDATE t SET v = 'x' WHERE id = 5",
        "DELETE FROM t WHERE id = 4",
        "INSERT INTO t(id, v) VALUES (4, 'back')",
        "UPDATE t SET id = 20 WHERE id = 10",
        "DELETE FROM t WHERE id = 4",                    # key 4: deleted twice
        "INSERT INTO t(id, v) VALUES (30, 'brief')",
        "DELETE FROM t WHERE id = 30",                   # born and gone
        "INSERT OR REPLACE INTO t(id, v) VALUES (5, 'replaced')",
        "UPDATE t SET v = 'y' WHERE id = 20",
    ]
    for i, sql in enumerate(steps):
        sqlite_ct.set_tracking_context(conn, ctx if i % 3 == 0 else None)
        conn.execute(sql)
    sqlite_ct.set_tracking_context(conn, None)
    return since, enable, csn(conn), ctx


def test_bounds_keep_exactly_the_window_rows_inside_them(conn, history):
    """For every bound and value around the window, alone and paired, with
    and without until, exclude_context and op: the rows of the unbounded
    query whose change_bsn is inside the bounds (each phase: deletes, stamped
    rows, rows with NULL stamps from anchor 0)."""
    since, enable, last, ctx = history
    for start in (0, since):
        for extra, params in (("", ()), (", ?", (last,)), (", ?, ?", (last, ctx.bytes_le)),
                              (", ?, NULL", (last - 2,))):
            for where in ("", " AND op = 'D'", " AND op = 'I'", " AND op <> 'D'"):
                base = f"SELECT {COLS} FROM sqlite_ct_changes('t', ?{extra}) WHERE 1{where}"
                every = rows(conn, base, (start, *params))
                assert every or where
                values = range(max(0, start - 1), last + 2)
                for op, x in itertools.product(OPS, values):
                    got = rows(conn, base + f" AND change_bsn {op} ?", (start, *params, x))
                    assert got == [r for r in every if OPS[op](r[1], x)], (start, extra, where,
                                                                            op, x)
                for (lo, x), (hi, y) in itertools.product(
                        itertools.product((">", ">="), values),
                        itertools.product(("<", "<="), values)):
                    got = rows(conn, base + f" AND change_bsn {lo} ? AND change_bsn {hi} ?",
                               (start, *params, x, y))
                    assert got == [r for r in every if OPS[lo](r[1], x) and OPS[hi](r[1], y)]


def test_a_key_deleted_twice_is_one_delete_of_its_newest_tombstone(conn, history):
    """Key 4 was deleted, inserted again and deleted again after since: one
    delete whose change_bsn is the second delete, inside whatever bounds hold
    it, and nowhere else (bounds that end between the two tombstones do not
    make the first one the key's delete)."""
    since, enable, last, ctx = history
    deletes = rows(conn, "SELECT change_bsn, sqlite_ct_unpack_key(pk, 0) FROM "
                         "sqlite_ct_changes('t', ?) WHERE op = 'D'", (since,))
    first, second = since + 3, since + 6
    assert (second, 4) in deletes and all(k != 4 or b == second for b, k in deletes)
    q = ("SELECT change_bsn FROM sqlite_ct_changes('t', ?) WHERE op = 'D' "
         "AND sqlite_ct_unpack_key(pk, 0) = 4 AND change_bsn > ? AND change_bsn <= ?")
    assert rows(conn, q, (since, since, first)) == []
    assert rows(conn, q, (since, first, second)) == [(second,)]


@pytest.mark.parametrize("bound, expected", [
    ("change_bsn > 2.5", lambda b: b > 2.5),
    ("change_bsn >= 2.5", lambda b: b >= 2.5),
    ("change_bsn < 4.5", lambda b: b < 4.5),
    ("change_bsn <= 4.5", lambda b: b <= 4.5),
    ("change_bsn > -2.5", lambda b: True),
    ("change_bsn > 1e300", lambda b: False),
    ("change_bsn < -1e300", lambda b: False),
    ("change_bsn >= -9223372036854775808", lambda b: True),
    ("change_bsn < -9223372036854775808", lambda b: False),
    ("change_bsn <= 9223372036854775807", lambda b: True),
    ("change_bsn > 9223372036854775807", lambda b: False),
    ("change_bsn > NULL", lambda b: False),
    ("change_bsn > '3'", lambda b: b > 3),      # the INTEGER column's affinity
    ("change_bsn < 'x'", lambda b: True),       # every integer sorts before text
    ("change_bsn > x'00'", lambda b: False),
])
def test_a_bound_of_any_type_is_compared_as_sqlite_compares(conn, history, bound, expected):
    since, enable, last, ctx = history
    every = rows(conn, f"SELECT {COLS} FROM sqlite_ct_changes('t', 0)")
    assert rows(conn, f"SELECT {COLS} FROM sqlite_ct_changes('t', 0) WHERE {bound}") == [
        r for r in every if expected(r[1])]


def test_bounds_narrow_the_reads_of_the_stamped_and_unstamped_phases(conn):
    """Reading above a large transaction costs what its few later changes
    cost: the change index range starts at the bound, and the rows with NULL
    stamps (20,000, present before tracking) are not read when the enabling
    BSN is below it. Without the bound the same query reads them all."""
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                 "WHERE i < 20000) INSERT INTO t(id, v) SELECT i, 'x' FROM n")
    sqlite_ct.create_schema(conn, "t")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 100001 UNION ALL SELECT i + 1 FROM n "
                 "WHERE i < 120000) INSERT INTO t(id, v) SELECT i, 'y' FROM n")
    big = csn(conn)
    conn.execute("UPDATE t SET v = 'z' WHERE id = 7")
    conn.execute("DELETE FROM t WHERE id = 8")
    sql = ("SELECT t.v, c.op, c.change_bsn FROM sqlite_ct_changes('t', 0) AS c "
           "JOIN main.t AS t ON t.rowid = c.row_rowid WHERE c.op <> 'D' AND c.change_bsn > ?")
    assert rows(conn, sql, (big,)) == [("z", "I", big + 1)]
    assert vm_steps(conn, sql, (big,)) < 30
    assert vm_steps(conn, sql.replace("c.change_bsn > ?", "+c.change_bsn > ?"), (big,)) > 1000
    # An upper bound ends the index range: the 20,000 rows of `big` are not read.
    count = "SELECT count(*) FROM sqlite_ct_changes('t', 0) WHERE change_bsn <= ?"
    assert rows(conn, count, (big - 1,)) == [(19998,)]     # the unstamped rows (2 changed)
    assert vm_steps(conn, count, (big - 1,)) < vm_steps(
        conn, count.replace("change_bsn", "+change_bsn"), (big - 1,)) / 2


def test_the_group_streams_bounded_queries_keep_their_plans(conn):
    """The queries GroupChangeStream.rows(after=, up_to=) runs: the bounds go
    to sqlite_ct_changes() (the plan's index number carries them), which
    stays the outer loop; each change looks its row up by rowid, also on an
    analyzed database."""
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                 "WHERE i < 20000) INSERT INTO big(id, v) SELECT i, 'x' FROM n")
    sqlite_ct.create_schema(conn, "big")
    conn.execute("ANALYZE")
    info = core._table_info(conn, "big", "test")
    params = core._params(info, 0, csn(conn), None)
    for kind, query in (("delete", core._delete_query(info, ", change_bsn",
                                                      core._bounds(1, 2)[0])),
                        ("insert", core._row_query(
                            info, "c.op = 'I'" + core._bounds(1, 2, "c.")[0], "c.change_bsn"))):
        plan = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + query, params + (1, 2))]
        scan = "SCAN sqlite_ct_changes" if kind == "delete" else "SCAN c"
        assert plan[0].startswith(scan + " VIRTUAL TABLE INDEX "), plan
        index = int(plan[0].split("INDEX ")[1].split(":")[0])
        assert index & 0x1000 and index & 0x8000, (kind, hex(index))   # > and <= used
        if kind == "insert":
            assert plan[1:] == ["SEARCH t USING INTEGER PRIMARY KEY (rowid=?)"]


def test_group_stream_slices_counts_and_bsn_order(conn, history):
    """GroupChangeStream: bsn_counts() counts each BSN's changes; the slices
    rows(after=, up_to=, with_bsn=True) of consecutive bounds are together
    the whole window's rows, each once, as in the whole window (an insert
    stays an insert); bsn_order sorts by BSN."""
    since, enable, last, ctx = history
    with core.GroupChangeStream(conn, ["t"], since) as group:
        counts = list(group.bsn_counts("t"))
        assert [b for b, _ in counts] == sorted({b for b, _ in counts})
        whole = {kind: sorted(group.rows("t", kind, with_bsn=True))
                 for kind in ("delete", "insert", "update")}
        assert sum(n for _, n in counts) == sum(map(len, whole.values()))
        assert sorted(r[-1] for rs in whole.values() for r in rs) == sorted(
            b for b, n in counts for _ in range(n))
        assert [r[:-1] for r in sorted(whole["insert"])] == sorted(
            group.rows("t", "insert"))                      # without with_bsn: the rows only
        for bounds in ([since, last], [since, since + 4, last], list(range(since, last + 1))):
            for kind in whole:
                sliced = [r for lo, hi in zip(bounds, bounds[1:])
                          for r in group.rows("t", kind, after=lo, up_to=hi, with_bsn=True)]
                assert sorted(sliced) == whole[kind], (bounds, kind)
        for kind in whole:
            ordered = list(group.rows("t", kind, with_bsn=True, bsn_order=True))
            assert [r[-1] for r in ordered] == sorted(r[-1] for r in ordered)
            assert sorted(ordered) == whole[kind]
        assert (20, "y", last) in whole["insert"]           # inserted, re-keyed, updated


def test_a_count_per_transaction_reads_the_change_index_and_no_row(apsw_conn):
    """What the sync client plans its upload batches from: change_bsn alone
    reads the change index (a few hundred pages for 20,000 rows), not the
    rows (each spans an overflow page here), which op needs (the insert BSN
    decides it)."""
    import apsw
    conn = apsw_conn
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                 "WHERE i < 20000) INSERT INTO t(id, v) SELECT i, printf('%05000d', i) FROM n")
    conn.execute("PRAGMA cache_size = 10")

    def pages_read(sql, params=()):
        conn.status(apsw.SQLITE_DBSTATUS_CACHE_MISS, True)
        got = rows(conn, sql, params)
        return got, conn.status(apsw.SQLITE_DBSTATUS_CACHE_MISS, True)[0]

    count = "SELECT change_bsn, count(*) FROM sqlite_ct_changes('t', 0{}) GROUP BY change_bsn"
    for extra, params in (("", ()), (", ?, NULL", (csn(conn),))):
        got, pages = pages_read(count.format(extra), params)
        assert got == [(csn(conn), 20000)]
        assert pages < 500, pages
    got, pages = pages_read("SELECT op, count(*) FROM sqlite_ct_changes('t', 0) GROUP BY op")
    assert got == [("I", 20000)]
    assert pages > 20000, pages


def test_group_stream_reinserted_keys(conn):
    """reinserted(): the keys deleted and inserted again in the window, with
    the delete's BSN, compared by type and value; not a key only deleted,
    only inserted, or inserted again as another type."""
    conn.execute("CREATE TABLE r(k PRIMARY KEY, v) WITHOUT ROWID")
    conn.execute("INSERT INTO r(k, v) VALUES (1, 'a'), (2, 'b'), ('3', 'c'), (4, 'd'), (5, 'e')")
    sqlite_ct.create_schema(conn, "r")
    since = csn(conn)
    conn.execute("INSERT OR REPLACE INTO r(k, v) VALUES (1, 'replaced')")
    replaced = csn(conn)
    conn.execute("DELETE FROM r WHERE k = 2")
    deleted = csn(conn)
    conn.execute("INSERT INTO r(k, v) VALUES (2, 'back')")
    conn.execute("DELETE FROM r WHERE k = '3'")
    conn.execute("INSERT INTO r(k, v) VALUES (3, 'an integer now')")
    conn.execute("DELETE FROM r WHERE k = 4")
    conn.execute("INSERT INTO r(k, v) VALUES (6, 'new')")
    with core.GroupChangeStream(conn, ["r"], since) as group:
        assert sorted(group.reinserted("r")) == [(1, replaced), (2, deleted)]


@pytest.mark.parametrize("bound", [-1, 2**63, 1.5, "3", True])
def test_group_stream_refuses_a_bound_that_is_no_bsn(conn, history, bound):
    since, enable, last, ctx = history
    with core.GroupChangeStream(conn, ["t"], since) as group:
        for kw in ({"after": bound}, {"up_to": bound}):
            with pytest.raises(sqlite_ct.AnchorError) as info:
                list(group.rows("t", "insert", **kw))
            assert str(info.value) == ("sqlite-ct: a change BSN bound is a non-negative "
                                       f"integer below 2**63, got {bound!r}")


@pytest.mark.parametrize("api", ["enumerate_changes", "enumerate_group_changes", "iter_changes",
                                 "GroupChangeStream"])
@pytest.mark.parametrize("context", ["x", b"0123456789abcdef", 7])
def test_an_exclude_context_of_the_wrong_type_is_a_clear_error(apsw_conn, api, context):
    apsw_conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    call = {"enumerate_changes": lambda: sqlite_ct.enumerate_changes(
                apsw_conn, "t", 0, exclude_context=context),
            "enumerate_group_changes": lambda: sqlite_ct.enumerate_group_changes(
                apsw_conn, ["t"], 0, exclude_context=context),
            "iter_changes": lambda: sqlite_ct.iter_changes(
                apsw_conn, "t", 0, exclude_context=context),
            "GroupChangeStream": lambda: core.GroupChangeStream(
                apsw_conn, ["t"], 0, exclude_context=context)}[api]
    for _ in range(2):       # the second call finds enumerate_changes' kept statement
        with pytest.raises(TypeError) as exc:
            call()
        assert str(exc.value) == ("sqlite-ct: exclude_context is a uuid.UUID or None, got "
                                  f"{context!r}")
    assert sqlite_ct.enumerate_changes(apsw_conn, "t", 0).inserts == []
