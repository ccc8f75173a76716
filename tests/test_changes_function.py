"""sqlite_ct_changes(tbl, since [, until [, exclude_context]]), the change
contract as a table-valued function (csrc/changes.c), used directly from
stdlib sqlite3 and apsw: its rows, its refusals (each message exactly, and the
class sqlite_ct maps it to), its snapshot, and the query plans of the joins
readers run."""
import sqlite3
import uuid

import apsw
import pytest

import sqlite_ct
from sqlhelpers import vm_steps
from sqlite_ct import _conn, loader

COLS = "op, change_bsn, insert_bsn, context, pk, row_rowid"


def rows(conn, sql, params=()):
    return [tuple(r) for r in conn.execute(sql, params)]


def changes(conn, table, since, *extra):
    marks = ", ".join("?" for _ in (table, since, *extra))
    return rows(conn, f"SELECT {COLS} FROM sqlite_ct_changes({marks})", (table, since, *extra))


def keys(conn, table, since, n=1):
    unpack = ", ".join(f"sqlite_ct_unpack_key(pk, {i})" for i in range(n))
    return sorted(rows(conn, f"SELECT op, {unpack} FROM sqlite_ct_changes(?, ?)",
                       (table, since)))


def csn(conn):
    return sqlite_ct.last_committed_csn(conn)


def raised(conn, sql, params=()):
    """The message of the error the host raises, and sqlite_ct's class for it."""
    with pytest.raises((apsw.Error, sqlite3.Error)) as info:
        rows(conn, sql, params)
    mapped = _conn.translate(info.value)
    return str(mapped), type(mapped)


@pytest.fixture
def t(conn):
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'old'), (2, 'old2')")
    enable = sqlite_ct.create_schema(conn, "t")
    return enable


def test_rows_ops_stamps_keys_and_rowids(conn, t):
    enable = csn(conn)
    conn.execute("INSERT INTO t(id, v) VALUES (3, 'new')")
    a = csn(conn)
    conn.execute("UPDATE t SET v = 'x' WHERE id = 1")
    b = csn(conn)
    conn.execute("DELETE FROM t WHERE id = 2")
    c = csn(conn)
    pack = lambda k: bytes(conn.execute("SELECT sqlite_ct_pack_key(?)", (k,)).fetchone()[0])
    got = changes(conn, "t", a)
    assert [(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in got] == [
        ("D", c, enable, None, pack(2), None),
        ("U", b, enable, None, pack(1), 1),
    ]
    # From 0 every live row is an insert (rows that predate tracking count as
    # inserted by the enabling transaction) and no delete is due.
    assert sorted((r[0], r[5]) for r in changes(conn, "t", 0)) == [("I", 1), ("I", 3)]
    # until bounds the window.
    assert [r[0] for r in changes(conn, "t", enable, a)] == ["I"]
    # Rows with NULL stamps: change and insert BSN are the enabling BSN.
    conn.execute("CREATE TABLE u(id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO u VALUES (7)")
    e = sqlite_ct.create_schema(conn, "u")
    assert changes(conn, "u", e - 1) == [("I", e, e, None, pack(7), 7)]
    assert changes(conn, "u", e) == []


def test_joined_rows_and_the_query_plans_readers_depend_on(conn, t):
    since = csn(conn)
    conn.execute("UPDATE t SET v = 'y' WHERE id = 2")
    sql = ("SELECT t.id, t.v, c.op FROM sqlite_ct_changes('t', ?) AS c "
           "JOIN main.t AS t ON t.rowid = c.row_rowid")
    assert rows(conn, sql, (since,)) == [(2, "y", "U")]
    plan = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, (since,))]
    # The changes drive the join and the table is looked up per change; a
    # plan that scanned the table would cost its size, not the changes.
    assert plan[0].startswith("SCAN c VIRTUAL TABLE INDEX ")
    assert plan[1] == "SEARCH t USING INTEGER PRIMARY KEY (rowid=?)"
    conn.execute("CREATE TABLE w(a TEXT, b BLOB, v, PRIMARY KEY(a, b)) WITHOUT ROWID")
    sqlite_ct.create_schema(conn, "w")
    since = csn(conn)
    conn.execute("INSERT INTO w(a, b, v) VALUES ('k', x'00ff', 1)")
    sql = ("SELECT w.a, w.b, w.v, c.op, c.row_rowid FROM sqlite_ct_changes('w', ?) AS c "
           "JOIN main.w AS w ON w.a = sqlite_ct_unpack_key(c.pk, 0) "
           "AND w.b = sqlite_ct_unpack_key(c.pk, 1)")
    assert rows(conn, sql, (since,)) == [("k", b"\x00\xff", 1, "I", None)]
    plan = [r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, (since,))]
    assert plan[0].startswith("SCAN c VIRTUAL TABLE INDEX ")
    assert plan[1] == "SEARCH w USING PRIMARY KEY (a=? AND b=?)"


def test_reads_follow_the_changes_not_the_table(conn, t):
    """The function's statements read rows through the change index and
    tombstones through their primary key: one change in a 20,000-row table
    costs about what it costs in a 2-row table (a full scan would run some
    hundred thousand instructions)."""
    small = csn(conn)
    conn.execute("UPDATE t SET v = 'a' WHERE id = 1")
    sql = ("SELECT t.v, c.op FROM sqlite_ct_changes('t', ?) AS c "
           "JOIN main.t AS t ON t.rowid = c.row_rowid")
    few = vm_steps(conn, sql, (small,))
    conn.execute("BEGIN")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n "
                 "WHERE i < 20010) INSERT INTO t(id, v) SELECT i, 'x' FROM n")
    conn.execute("COMMIT")
    big = csn(conn)
    conn.execute("INSERT INTO t(id, v) VALUES (5, 'b')")
    conn.execute("DELETE FROM t WHERE id = 2")
    assert [r[0] for r in changes(conn, "t", big)] == ["D", "I"]
    assert vm_steps(conn, sql, (big,)) < few + 20
    assert vm_steps(conn, "SELECT count(v) FROM t NOT INDEXED WHERE "
                          '"__sysChangeTxBsn" > ?', (big,)) > 500


@pytest.mark.parametrize("sql, params, message, cls", [
    ("SELECT * FROM sqlite_ct_changes", (),
     "sqlite-ct: sqlite_ct_changes() needs a table name and an anchor: "
     "sqlite_ct_changes('table', since [, until [, exclude_context]])", sqlite_ct.TableError),
    ("SELECT * FROM sqlite_ct_changes('t')", (),
     "sqlite-ct: sqlite_ct_changes() needs a table name and an anchor: "
     "sqlite_ct_changes('table', since [, until [, exclude_context]])", sqlite_ct.TableError),
    ("SELECT * FROM sqlite_ct_changes(?, 0)", ("nope",),
     "sqlite-ct: table \"nope\" is not tracked; call sqlite_ct_create_schema('nope') first",
     sqlite_ct.NotTrackedError),
    ("SELECT * FROM sqlite_ct_changes(NULL, 0)", (),
     "sqlite-ct: sqlite_ct_changes() needs a table name", sqlite_ct.TableError),
    ("SELECT * FROM sqlite_ct_changes(?, 0)", ("t\x00x",),
     "sqlite-ct: sqlite_ct_changes(): a table name cannot contain a NUL character",
     sqlite_ct.TableError),
    ("SELECT * FROM sqlite_ct_changes('t', -1)", (),
     "sqlite-ct: an anchor is a non-negative integer CSN, got -1", sqlite_ct.AnchorError),
    ("SELECT * FROM sqlite_ct_changes('t', '1')", (),
     "sqlite-ct: an anchor is a non-negative integer CSN, got '1'", sqlite_ct.AnchorError),
    ("SELECT * FROM sqlite_ct_changes('t', 1.5)", (),
     "sqlite-ct: an anchor is a non-negative integer CSN, got 1.5", sqlite_ct.AnchorError),
    ("SELECT * FROM sqlite_ct_changes('t', NULL)", (),
     "sqlite-ct: an anchor is a non-negative integer CSN, got NULL", sqlite_ct.AnchorError),
    ("SELECT * FROM sqlite_ct_changes('t', 99)", (),
     "sqlite-ct: anchor 99 is newer than the last committed CSN 1 of this database (was it "
     "restored from an older copy?); reinitialise the replica of \"t\"", sqlite_ct.AnchorError),
    ("SELECT * FROM sqlite_ct_changes('T', 0, 2)", (),
     "sqlite-ct: sqlite_ct_changes(): until 2 is outside the window from the anchor 0 to "
     "the last committed CSN 1", sqlite_ct.AnchorError),
    ("SELECT * FROM sqlite_ct_changes('t', 1, 0)", (),
     "sqlite-ct: sqlite_ct_changes(): until 0 is outside the window from the anchor 1 to "
     "the last committed CSN 1", sqlite_ct.AnchorError),
    ("SELECT * FROM sqlite_ct_changes('t', 0, 'x')", (),
     "sqlite-ct: sqlite_ct_changes(): until is an integer CSN or NULL, got 'x'", sqlite_ct.AnchorError),
    ("SELECT * FROM sqlite_ct_changes('t', 0, 1, x'00')", (),
     "sqlite-ct: sqlite_ct_changes(): exclude_context must be a 16-byte GUID blob or NULL",
     sqlite_ct.Error),
])
def test_refusals(conn, t, sql, params, message, cls):
    assert raised(conn, sql, params) == (message, cls)


def test_expired_anchor_and_anchor_zero(conn, t):
    conn.execute("DELETE FROM t WHERE id = 1")
    old = csn(conn)
    conn.execute("DELETE FROM t WHERE id = 2")
    assert sqlite_ct.purge_tombstones(conn, "t", up_to_csn=csn(conn)) == 2
    message, cls = raised(conn, "SELECT * FROM sqlite_ct_changes('t', ?)", (old,))
    assert cls is sqlite_ct.AnchorExpiredError
    assert message == (f'sqlite-ct: anchor {old} of table "t" is older than its oldest kept '
                       f"change (CSN {csn(conn)}): tombstones it needs were purged; "
                       f"reinitialise the replica")
    # A replica holding nothing needs no tombstone.
    assert changes(conn, "t", 0) == []


def test_untracked_rebuild_is_refused(conn, t):
    conn.execute("DROP TRIGGER __sysct_au_t")
    assert raised(conn, "SELECT * FROM sqlite_ct_changes('t', 0)") == (
        'sqlite-ct: table "t" lost its tracking triggers (was it rebuilt by another tool, '
        "such as sqlite-utils transform()?); changes made since were not tracked. Call "
        "create_schema() on it to re-arm it; replicas with older anchors will then be asked "
        "to reinitialise", sqlite_ct.TableError)


REFUSED_IN_OWN_WRITE = (
    "sqlite-ct: cannot enumerate changes inside a transaction that has written to "
    "tracked tables; commit or roll it back first", sqlite_ct.Error)


def test_refused_inside_a_transaction_that_wrote(conn, t):
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = 'mine' WHERE id = 1")
    assert raised(conn, "SELECT * FROM sqlite_ct_changes('t', 0)") == REFUSED_IN_OWN_WRITE
    conn.execute("ROLLBACK")


def test_refused_whenever_the_python_readers_refuse(conn, t):
    """Writes that leave no BSN on the table read are refused as the Python
    readers refuse them (sqlite_ct_uncommitted_writes()): in apply mode (any
    table), to a table that does not track every kind of write while the
    transaction holds a BSN, and anything while a table is portable."""
    since = csn(conn)
    conn.execute("UPDATE t SET v = 'committed' WHERE id = 1")
    refused = lambda table: raised(conn, "SELECT * FROM sqlite_ct_changes(?, ?)",
                                   (table, since)) == REFUSED_IN_OWN_WRITE
    py_refuses = lambda table: pytest.raises(sqlite_ct.Error,
                                             sqlite_ct.enumerate_changes, conn, table, since)
    conn.execute("BEGIN")
    with sqlite_ct.applying_server_changes(conn):
        conn.execute("UPDATE t SET v = 'server' WHERE id = 1")
    assert refused("t")
    py_refuses("t")
    conn.execute("ROLLBACK")
    assert [r[0] for r in changes(conn, "t", since)] == ["U"]

    conn.execute("CREATE TABLE nd(id INTEGER PRIMARY KEY, v)")
    sqlite_ct.create_schema(conn, "nd", options=sqlite_ct.TrackingOptions.INSERT
                            | sqlite_ct.TrackingOptions.UPDATE)
    conn.execute("INSERT INTO nd(id, v) VALUES (1, 'a')")
    since = csn(conn)
    conn.execute("UPDATE nd SET v = 'committed' WHERE id = 1")
    conn.execute("BEGIN")
    conn.execute("UPDATE t SET v = 'other table' WHERE id = 2")
    conn.execute("DELETE FROM nd WHERE id = 1")   # no tombstone, no stamp
    assert refused("nd")
    py_refuses("nd")
    conn.execute("ROLLBACK")
    assert [r[0] for r in changes(conn, "nd", since)] == ["U"]

    conn.execute("CREATE TABLE p(id INTEGER PRIMARY KEY, v)")
    sqlite_ct.create_schema(conn, "p", mode="portable")
    since = csn(conn)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t(id, v) VALUES (9, 'uncommitted')")
    conn.execute("INSERT INTO p(id, v) VALUES (1, 'x')")   # the BSN is no longer current
    assert refused("t")
    py_refuses("t")
    conn.execute("ROLLBACK")
    assert changes(conn, "t", since) == []


def test_a_transaction_that_wrote_other_tables_reads_this_one(conn, t):
    """Only the tables whose rows or tombstones carry the open transaction's
    BSN are refused: their committed changes are hidden. Another table reads
    as committed, inside the same transaction."""
    conn.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, w)")
    conn.execute("INSERT INTO u VALUES (1, 'a'), (2, 'b')")
    sqlite_ct.create_schema(conn, "u")
    since = csn(conn)
    conn.execute("UPDATE t SET v = 'committed' WHERE id = 1")
    conn.execute("UPDATE u SET w = 'committed' WHERE id = 1")
    conn.execute("BEGIN")
    conn.execute("UPDATE u SET w = 'mine' WHERE id = 1")
    assert [r[0] for r in changes(conn, "t", since)] == ["U"]
    assert raised(conn, "SELECT * FROM sqlite_ct_changes('u', ?)", (since,)) == \
        REFUSED_IN_OWN_WRITE
    conn.execute("ROLLBACK")
    # A delete leaves only a tombstone with the transaction's BSN: refused too.
    conn.execute("BEGIN")
    conn.execute("DELETE FROM u WHERE id = 1")
    assert raised(conn, "SELECT * FROM sqlite_ct_changes('u', ?)", (since,)) == \
        REFUSED_IN_OWN_WRITE
    assert [r[0] for r in changes(conn, "t", since)] == ["U"]
    conn.execute("ROLLBACK")
    assert [r[0] for r in changes(conn, "u", since)] == ["U"]


def test_one_snapshot(db_path, conn, t):
    conn.execute("PRAGMA journal_mode=WAL")
    since = csn(conn)
    other = apsw.Connection(db_path)
    loader.load(other)
    conn.execute("BEGIN")
    assert changes(conn, "t", since) == []
    other.execute("UPDATE t SET v = 'later' WHERE id = 1")
    # The reader's transaction still sees its snapshot: no change, and the
    # later CSN is beyond it.
    assert changes(conn, "t", since) == []
    assert raised(conn, "SELECT * FROM sqlite_ct_changes('t', ?)", (since + 1,))[1] \
        is sqlite_ct.AnchorError
    conn.execute("COMMIT")
    assert [r[0] for r in changes(conn, "t", since)] == ["U"]
    other.close()


def test_deletes_reinserts_and_rows_born_after_since(conn, t):
    since = csn(conn)
    conn.execute("DELETE FROM t WHERE id = 1")
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'again')")   # deleted, then re-inserted
    conn.execute("INSERT INTO t(id, v) VALUES (5, 'brief')")
    conn.execute("DELETE FROM t WHERE id = 5")                 # born and gone after since
    conn.execute("DELETE FROM t WHERE id = 2")
    conn.execute("INSERT INTO t(id, v) VALUES (2, 'back')")
    conn.execute("DELETE FROM t WHERE id = 2")                 # deleted twice: one delete
    assert keys(conn, "t", since) == [("D", 1), ("D", 2), ("I", 1)]
    # op narrows what is read; an unknown op matches nothing but the
    # arguments are still checked.
    assert rows(conn, "SELECT op FROM sqlite_ct_changes('t', ?) WHERE op = 'D'",
                (since,)) == [("D",), ("D",)]
    assert rows(conn, "SELECT op FROM sqlite_ct_changes('t', ?) WHERE op <> 'D'",
                (since,)) == [("I",)]
    assert rows(conn, "SELECT count(*) FROM sqlite_ct_changes('t', ?) WHERE op = ''",
                (since,)) == [(0,)]
    assert raised(conn, "SELECT count(*) FROM sqlite_ct_changes('t', -5) WHERE op = ''")[1] \
        is sqlite_ct.AnchorError


def test_composite_text_blob_and_nocase_keys(conn):
    conn.execute("CREATE TABLE c(a INTEGER, b TEXT, c BLOB, v, PRIMARY KEY(a, b, c))")
    conn.execute("CREATE TABLE n(k TEXT COLLATE NOCASE PRIMARY KEY, v) WITHOUT ROWID")
    sqlite_ct.create_schema(conn, "c")
    sqlite_ct.create_schema(conn, "n")
    conn.execute("INSERT INTO c(a, b, c, v) VALUES (1, 'x', x'00', 'v'), (2, 'y', x'', 'w')")
    conn.execute("INSERT INTO n(k, v) VALUES ('abc', 1)")
    since = csn(conn)
    conn.execute("DELETE FROM c WHERE a = 2")
    conn.execute("UPDATE n SET k = 'ABC'")     # a case-only key change
    assert keys(conn, "c", since, 3) == [("D", 2, "y", b"")]
    assert keys(conn, "n", since) == [("D", "abc"), ("I", "ABC")]
    assert [r[5] for r in changes(conn, "n", since)] == [None, None]


def test_exclude_context(conn, t):
    since = csn(conn)
    mine = uuid.uuid4()
    sqlite_ct.set_tracking_context(conn, mine)
    conn.execute("UPDATE t SET v = 'mine' WHERE id = 1")
    conn.execute("DELETE FROM t WHERE id = 2")
    sqlite_ct.set_tracking_context(conn, None)
    assert [(r[0], uuid.UUID(bytes_le=bytes(r[3]))) for r in changes(conn, "t", since)] == [
        ("D", mine), ("U", mine)]
    assert changes(conn, "t", since, csn(conn), mine.bytes_le) == []
    assert len(changes(conn, "t", since, csn(conn), uuid.uuid4().bytes_le)) == 2


@pytest.mark.parametrize("mode", ["native", "portable"])
def test_exclude_context_leaves_out_the_delete_of_a_key_that_is_live_again(conn, mode):
    # Another writer deletes a key the reader holds, then the reader's own
    # upload re-inserts it: the live row is the reader's own (left out), and
    # a delete would remove the row it holds. For another reader the live row
    # is an insert: its upsert replaces the old row, no delete needed.
    conn.execute("CREATE TABLE c(a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b))")
    sqlite_ct.create_schema(conn, "c", mode=mode)
    conn.execute("INSERT INTO c(a, b, v) VALUES ('k', 1, 'old'), ('k', 2, 'old')")
    since = csn(conn)
    conn.execute("DELETE FROM c")
    mine = uuid.uuid4()
    sqlite_ct.set_tracking_context(conn, mine)
    conn.execute("INSERT INTO c(a, b, v) VALUES ('k', 1, 'mine')")
    sqlite_ct.set_tracking_context(conn, None)
    now = csn(conn)
    unpack = "op, sqlite_ct_unpack_key(pk, 0), sqlite_ct_unpack_key(pk, 1)"
    got = lambda x: sorted(rows(conn, f"SELECT {unpack} FROM sqlite_ct_changes(?, ?, ?, ?)",
                                ("c", since, now, x)))
    # Portable triggers write no context: there the row is nobody's own.
    own = [] if mode == "native" else [("I", "k", 1)]
    assert got(mine.bytes_le) == [("D", "k", 2)] + own
    assert got(uuid.uuid4().bytes_le) == [("D", "k", 2), ("I", "k", 1)]
    # Without a context to leave out, the contract is unchanged: the delete
    # and the row.
    assert got(None) == [("D", "k", 1), ("D", "k", 2), ("I", "k", 1)]
    cs = sqlite_ct.enumerate_changes(conn, "c", since, exclude_context=mine)
    assert (len(cs.inserts), cs.updates, cs.deletes) == (len(own), [], [{"a": "k", "b": 2}])


def test_a_delete_carries_the_context_of_the_keys_newest_tombstone(conn, t):
    since = csn(conn)
    a, b = uuid.uuid4(), uuid.uuid4()
    for ctx in (a, None, b, None):   # four deletes of key 1, newest without context
        sqlite_ct.set_tracking_context(conn, ctx)
        conn.execute("DELETE FROM t WHERE id = 1")
        conn.execute("INSERT INTO t(id, v) VALUES (1, 'again')")
    conn.execute("DELETE FROM t WHERE id = 1")
    sqlite_ct.set_tracking_context(conn, None)
    (op, change, ctx), = rows(conn, "SELECT op, change_bsn, context FROM sqlite_ct_changes(?, ?)",
                              ("t", since))
    assert (op, change, ctx) == ("D", csn(conn), None)
    before_b = csn(conn)
    sqlite_ct.set_tracking_context(conn, b)
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'b')")
    conn.execute("DELETE FROM t WHERE id = 1")
    sqlite_ct.set_tracking_context(conn, None)
    got = lambda x: rows(conn, "SELECT change_bsn, context FROM sqlite_ct_changes(?, ?, ?, ?)",
                         ("t", since, csn(conn), x))
    assert got(uuid.uuid4().bytes_le) == [(csn(conn), b.bytes_le)]
    # With b's tombstones left out, the newest of the rest has no context.
    assert got(b.bytes_le) == [(before_b, None)]


@pytest.mark.parametrize("where, expected", [
    ("op = 'i' COLLATE NOCASE", ["I"]),
    ("op COLLATE NOCASE = 'i'", ["I"]),
    ("op <> 'i' COLLATE NOCASE", ["U"]),
    ("op = 'i'", []),
    ("op = 'I'", ["I"]),
    ("op <> 'I'", ["U"]),
])
def test_an_op_constraint_under_another_collation_is_compared_by_sqlite(conn, t, where,
                                                                         expected):
    since = csn(conn)
    conn.execute("INSERT INTO t(id, v) VALUES (3, 'new')")
    conn.execute("UPDATE t SET v = 'x' WHERE id = 1")
    assert sorted(r[0] for r in rows(
        conn, f"SELECT op FROM sqlite_ct_changes('t', ?) WHERE {where}", (since,))) == expected


@pytest.mark.parametrize("since", [2**63, 2**64 + 5, -2**70])
def test_an_anchor_no_sqlite_integer_holds_is_an_anchor_error(conn, t, since):
    big = "a CSN below 2**63" if since > 0 else "a non-negative integer CSN"
    message = f"sqlite-ct: an anchor is {big}, got {since!r}"
    for call in (lambda: sqlite_ct.enumerate_changes(conn, "t", since),
                 lambda: sqlite_ct.enumerate_group_changes(conn, ["t"], since)):
        with pytest.raises(sqlite_ct.AnchorError) as info:
            call()
        assert str(info.value) == message
    with pytest.raises(sqlite_ct.AnchorError) as info:
        with sqlite_ct.iter_changes(conn, "t", since):
            pass
    assert str(info.value) == message
    if since > 0:
        with pytest.raises(sqlite_ct.AnchorError) as info:
            sqlite_ct.set_sent_anchor(conn, "t", since)
        assert str(info.value) == f"sqlite-ct: a sent anchor is a CSN below 2**63, got {since}"
        with pytest.raises(sqlite_ct.AnchorError) as info:
            sqlite_ct.forget_pending_deletes(conn, "t", [1], after=since)
        assert str(info.value) == ("sqlite-ct: forget_pending_deletes(): after is a CSN "
                                   f"below 2**63, got {since}")


def test_portable_tombstones_come_back_in_the_binary_form(conn):
    conn.execute("CREATE TABLE p(k TEXT PRIMARY KEY, v)")
    sqlite_ct.create_schema(conn, "p", mode="portable")
    conn.execute("INSERT INTO p(k, v) VALUES ('a', 1)")
    since = csn(conn)
    conn.execute("DELETE FROM p")
    (op, pk), = rows(conn, "SELECT op, pk FROM sqlite_ct_changes('p', ?)", (since,))
    assert (op, bytes(pk)) == ("D", bytes(conn.execute(
        "SELECT sqlite_ct_pack_key('a')").fetchone()[0]))


def test_rowid_hidden_by_columns_joins_by_key(conn):
    conn.execute('CREATE TABLE h(rowid TEXT, _rowid_ TEXT, oid TEXT, k TEXT PRIMARY KEY)')
    sqlite_ct.create_schema(conn, "h")
    conn.execute("INSERT INTO h(rowid, _rowid_, oid, k) VALUES ('r', 'r_', 'o', 'key')")
    assert [(r[0], r[5]) for r in changes(conn, "h", 0)] == [("I", None)]
    assert sqlite_ct.enumerate_changes(conn, "h", 0).inserts == [
        {"rowid": "r", "_rowid_": "r_", "oid": "o", "k": "key"}]


def reader_plans(conn, table, since):
    """EXPLAIN QUERY PLAN of the queries sqlite_ct.changes runs for `table`:
    its deletes, its live rows, and the group stream's insert-only rows."""
    from sqlite_ct import changes as core
    info = core._table_info(conn, table, "test")
    (deletes, params), (live, _) = core._queries(info, since, csn(conn), None)
    out = []
    for sql in (deletes, live, core._row_query(info, "c.op = 'I'")):
        out.append([r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)])
    return out


def test_the_readers_queries_keep_their_plans_on_an_analyzed_database(conn):
    """The queries enumerate_changes, iter_changes and the group stream run:
    sqlite_ct_changes() is the outer loop and each change looks its row up by
    rowid or primary key, also once ANALYZE has told the planner the table is
    large and its change index holds one value (every row's NULL stamp), the
    statistics under which a planner may prefer a full scan. The function's
    own reads stay on the change index: one change among 20,000 rows costs a
    few hundred instructions."""
    conn.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("CREATE TABLE wr(a TEXT, b INTEGER, v, PRIMARY KEY(a, b)) WITHOUT ROWID")
    conn.execute("CREATE TABLE hid(rowid TEXT, _rowid_ TEXT, oid TEXT, k TEXT PRIMARY KEY)")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                 "WHERE i < 20000) INSERT INTO big(id, v) SELECT i, 'x' FROM n")
    conn.execute("INSERT INTO wr(a, b, v) SELECT 'k' || id, id, v FROM big")
    conn.execute("INSERT INTO hid(k) SELECT 'k' || id FROM big")
    for name in ("big", "wr", "hid"):
        sqlite_ct.create_schema(conn, name)
    conn.execute("ANALYZE")
    assert rows(conn, "SELECT stat FROM sqlite_stat1 WHERE idx = '__sysct_chg_big'") == [
        ("20000 20000",)]
    since = csn(conn)
    conn.execute("UPDATE big SET v = 'y' WHERE id = 7")
    conn.execute("UPDATE wr SET v = 'y' WHERE a = 'k7'")
    conn.execute("UPDATE hid SET oid = 'y' WHERE k = 'k7'")
    for name, lookup in (("big", "SEARCH t USING INTEGER PRIMARY KEY (rowid=?)"),
                         ("wr", "SEARCH t USING PRIMARY KEY (a=? AND b=?)"),
                         ("hid", "SEARCH t USING INDEX sqlite_autoindex_hid_1 (k=?)")):
        deletes, live, inserts = reader_plans(conn, name, since)
        assert len(deletes) == 1 and deletes[0].startswith("SCAN sqlite_ct_changes VIRTUAL "
                                                           "TABLE INDEX "), (name, deletes)
        for plan in (live, inserts):
            assert plan[0].startswith("SCAN c VIRTUAL TABLE INDEX "), (name, plan)
            assert plan[1:] == [lookup], (name, plan)
    cs = sqlite_ct.enumerate_changes(conn, "big", since)
    assert (cs.updates, cs.inserts, cs.deletes) == ([{"id": 7, "v": "y"}], [], [])
    sql = ("SELECT t.v, c.op FROM sqlite_ct_changes('big', ?) AS c "
           "JOIN main.big AS t ON t.rowid = c.row_rowid")
    assert vm_steps(conn, sql, (since,)) < 20
    # Without the change index the same read scans the table (check() reports
    # the missing index): the bound above measures the index, not luck.
    conn.execute("DROP INDEX __sysct_chg_big")
    assert vm_steps(conn, sql, (since,)) > 200


def test_keys_born_and_deleted_in_the_window_only_when_asked_by_name(conn, t):
    """op = 'B': every tombstone in the window is of a row inserted after
    since and the key is not live; no other query sees them."""
    since = csn(conn)
    conn.execute("INSERT INTO t(id, v) VALUES (7, 'x')")     # born and deleted: 'B'
    conn.execute("DELETE FROM t WHERE id = 7")
    conn.execute("DELETE FROM t WHERE id = 1")               # existed at since: 'D'
    conn.execute("INSERT INTO t(id, v) VALUES (8, 'y')")     # born, deleted, born again
    conn.execute("DELETE FROM t WHERE id = 8")
    conn.execute("INSERT INTO t(id, v) VALUES (8, 'z')")
    born = "SELECT op, sqlite_ct_unpack_key(pk, 0) FROM sqlite_ct_changes(?, ?) WHERE op = 'B'"
    assert rows(conn, born, ("t", since)) == [("B", 7)]
    assert keys(conn, "t", since) == [("D", 1), ("I", 8)]
    assert sorted(rows(conn, "SELECT op, sqlite_ct_unpack_key(pk, 0) FROM "
                             "sqlite_ct_changes(?, ?) WHERE op <> 'B'", ("t", since))) == [
        ("D", 1), ("I", 8)]
    # Outside the window it is nothing at all.
    assert rows(conn, born, ("t", csn(conn))) == []


def test_the_local_change_of_one_key(conn, t):
    """sqlite_ct_local_change(tbl, since, key...): 'I', 'U', 'D' or NULL, what
    a sync client asks of each incoming key; errors say what is wrong."""
    since = csn(conn)
    conn.execute("UPDATE t SET v = 'new' WHERE id = 1")          # inserted before since: 'U'
    conn.execute("INSERT INTO t(id, v) VALUES (3, 'x')")
    conn.execute("INSERT INTO t(id, v) VALUES (4, 'y')")
    conn.execute("DELETE FROM t WHERE id = 4")                    # born and deleted: 'D'
    conn.execute("DELETE FROM t WHERE id = 2")
    later = csn(conn)
    conn.execute("UPDATE t SET v = 'again' WHERE id = 3")
    probe = "SELECT sqlite_ct_local_change('t', ?, ?)"
    assert [rows(conn, probe, (since, k))[0][0] for k in (1, 2, 3, 4, 5)] == [
        "U", "D", "I", "D", None]
    # From anchor 0 a row that predates tracking counts as inserted by the
    # enabling transaction.
    assert rows(conn, probe, (0, 1)) == [("I",)]
    assert [rows(conn, probe, (later, k))[0][0] for k in (1, 2, 3, 4)] == [None, None, "U", None]
    # One statement over many keys keeps its probe (auxiliary data of the name).
    assert rows(conn, "SELECT id, sqlite_ct_local_change('t', ?, id) FROM t ORDER BY id",
                (since,)) == [(1, "U"), (3, "I")]
    for sql, params, message in [
            ("SELECT sqlite_ct_local_change('nope', 0, 1)", (), 'table "nope" is not tracked'),
            ("SELECT sqlite_ct_local_change('t', -1, 1)", (), "non-negative integer CSN"),
            ("SELECT sqlite_ct_local_change('t', 0, 1, 2)", (), "has 1 key column"),
            ("SELECT sqlite_ct_local_change('t', 0)", (), "give the table")]:
        with pytest.raises((apsw.Error, sqlite3.Error), match=message):
            rows(conn, sql, params)
