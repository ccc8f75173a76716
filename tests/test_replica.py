"""The core's functions for what a sync provider does to a replica's tracking
state (sqlite_ct.replica, and the anchor, client id and apply mode helpers
sync uses): each one's promise, its transaction, its errors."""
import uuid

import apsw
import pytest

import sqlite_ct
from sqlite_ct.errors import AnchorError, KeyFormatError, NotTrackedError, TableError
from sqlhelpers import HOST_ERRORS, in_transaction, q, run, val


@pytest.fixture
def tracked(conn):
    """conn with tracked t (rows 1, 2, 3), a tracked two-column-key table k,
    a table p tracked in portable mode and an untracked one, plain."""
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE k(a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b))",
        "CREATE TABLE p(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE plain(id INTEGER PRIMARY KEY, v TEXT)")
    for name in ("t", "k"):
        sqlite_ct.create_schema(conn, name)
    sqlite_ct.create_schema(conn, "p", mode="portable")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "INSERT INTO p(id, v) VALUES (1, 'a')")
    return conn


def tombstones(conn, table):
    return q(conn, "SELECT __sysDeleteTxBsn, __sysRK FROM __sysOCSDeletedRows "
                   "WHERE __sysTName = ? ORDER BY 1, 2", (table,))


def pending(conn, table, since):
    cs = sqlite_ct.enumerate_changes(conn, table, since)
    return {"inserts": sorted(r["id"] for r in cs.inserts),
            "updates": sorted(r["id"] for r in cs.updates),
            "deletes": sorted(k["id"] for k in cs.deletes)}


# -- forget_pending_deletes ------------------------------------------------------

def test_forget_pending_deletes_removes_only_the_keys_deletes_after_the_anchor(tracked):
    conn = tracked
    run(conn, "DELETE FROM t WHERE id = 1")
    sent = sqlite_ct.last_committed_csn(conn)
    run(conn, "DELETE FROM t WHERE id = 2", "DELETE FROM t WHERE id = 3",
        "INSERT INTO t(id, v) VALUES (1, 'again')", "DELETE FROM t WHERE id = 1")
    before = tombstones(conn, "t")
    assert len(before) == 4
    assert sqlite_ct.forget_pending_deletes(conn, "t", [1], after=sent) == 1
    # the older delete of 1 (sent already) and the other keys' deletes stay
    assert tombstones(conn, "t") == [row for row in before
                                     if not (row[0] > sent and row[1] == before[-1][1])]
    assert pending(conn, "t", sent)["deletes"] == [2, 3]
    assert sqlite_ct.forget_pending_deletes(conn, "t", [1], after=sent) == 0


def test_forget_pending_deletes_with_a_composite_key(tracked):
    conn = tracked
    run(conn, "INSERT INTO k(a, b, v) VALUES ('x', 1, 'v'), ('x', 2, 'v')")
    sent = sqlite_ct.last_committed_csn(conn)
    run(conn, "DELETE FROM k")
    assert sqlite_ct.forget_pending_deletes(conn, "k", ("x", 2), after=sent) == 1
    assert [(d["a"], d["b"]) for d in sqlite_ct.enumerate_changes(conn, "k", sent).deletes] == [
        ("x", 1)]


def test_forget_pending_deletes_joins_the_callers_transaction(tracked):
    conn = tracked
    run(conn, "DELETE FROM t WHERE id = 1")
    run(conn, "BEGIN")
    assert sqlite_ct.forget_pending_deletes(conn, "t", [1], after=0) == 1
    assert in_transaction(conn)
    run(conn, "ROLLBACK")
    assert len(tombstones(conn, "t")) == 1


@pytest.mark.parametrize("key, after, error", [
    (1, 0, KeyFormatError), ("1", 0, KeyFormatError), ([1, 2], 0, KeyFormatError),
    ([], 0, KeyFormatError), ([1], -1, AnchorError), ([1], True, AnchorError),
    ([1], 1.5, AnchorError)])
def test_forget_pending_deletes_refuses_bad_input(tracked, key, after, error):
    run(tracked, "DELETE FROM t WHERE id = 1")
    with pytest.raises(error):
        sqlite_ct.forget_pending_deletes(tracked, "t", key, after=after)
    assert len(tombstones(tracked, "t")) == 1


# -- stamp_applied ---------------------------------------------------------------

def test_stamp_applied_makes_a_pending_insert_the_servers_row(tracked):
    conn = tracked
    sent = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT INTO t(id, v) VALUES (4, 'mine'), (5, 'mine too')")
    assert pending(conn, "t", sent)["inserts"] == [4, 5]
    assert sqlite_ct.stamp_applied(conn, "t", [4]) is True
    assert q(conn, 'SELECT "__sysInsertTxBsn", "__sysChangeTxBsn" FROM t WHERE id = 4') == [
        (0, 0)]
    assert pending(conn, "t", sent) == {"inserts": [5], "updates": [], "deletes": []}
    # a later local delete of it is a delete to upload, not an insert+delete
    # that never reached the server
    run(conn, "DELETE FROM t WHERE id = 4")
    assert pending(conn, "t", sent)["deletes"] == [4]
    # a later local update is an update
    sqlite_ct.stamp_applied(conn, "t", [5])
    run(conn, "UPDATE t SET v = 'edited' WHERE id = 5")
    assert pending(conn, "t", sent) == {"inserts": [], "updates": [5], "deletes": [4]}


@pytest.mark.parametrize("options", ["INSERT|DELETE", "INSERT"])
def test_stamp_applied_without_update_tracking_resets_both_stamps(conn, options):
    # No trigger re-stamps the change column of a table that does not track
    # updates: left as it was, the row would stay a pending change and the
    # server's version would be uploaded back.
    opts = sqlite_ct.TrackingOptions.INSERT
    if "DELETE" in options:
        opts |= sqlite_ct.TrackingOptions.DELETE
    run(conn, "CREATE TABLE n(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "n", options=opts)
    sent = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT INTO n(id, v) VALUES (1, 'a')")
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "UPDATE n SET v = 'server' WHERE id = 1")
    assert sqlite_ct.stamp_applied(conn, "n", [1]) is True
    assert q(conn, 'SELECT "__sysInsertTxBsn", "__sysChangeTxBsn" FROM n') == [(0, 0)]
    cs = sqlite_ct.enumerate_changes(conn, "n", sent)
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [], [])
    assert sqlite_ct.enumerate_changes(conn, "n", 0).inserts == []


def test_stamp_applied_of_a_missing_row_is_false_and_writes_nothing(tracked):
    csn = sqlite_ct.last_committed_csn(tracked)
    assert sqlite_ct.stamp_applied(tracked, "t", [99]) is False
    assert sqlite_ct.last_committed_csn(tracked) == csn


def test_stamp_applied_leaves_the_apply_mode_as_it_was(tracked):
    with sqlite_ct.applying_server_changes(tracked):
        sqlite_ct.stamp_applied(tracked, "t", [1])
        assert val(tracked, "SELECT sqlite_ct_apply_mode()") == 1
    assert val(tracked, "SELECT sqlite_ct_apply_mode()") == 0
    run(tracked, "UPDATE t SET v = 'local' WHERE id = 1")
    assert val(tracked, 'SELECT "__sysChangeTxBsn" FROM t WHERE id = 1') > 0


# -- reinitialise_table ------------------------------------------------------------

def test_reinitialise_table_keeps_only_what_was_never_sent(tracked):
    conn = tracked
    run(conn, "DELETE FROM t WHERE id = 3", "INSERT INTO t(id, v) VALUES (7, 'sent')")
    sqlite_ct.set_sent_anchor(conn, "t", sqlite_ct.last_committed_csn(conn))
    sent = sqlite_ct.get_sent_anchor(conn, "t")
    run(conn, "UPDATE t SET v = 'unsent' WHERE id = 2", "INSERT INTO t(id, v) VALUES (4, 'new')",
        "DELETE FROM t WHERE id = 1")
    graves = tombstones(conn, "t")
    assert len(graves) == 2
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "INSERT INTO t(id, v) VALUES (6, 'from the server')")
    assert sqlite_ct.reinitialise_table(conn, "t", b"anchor-0") == 2  # rows 6 and 7
    assert q(conn, "SELECT id, v FROM t ORDER BY id") == [(2, "unsent"), (4, "new")]
    # no tombstone for what was dropped; the sent and pending ones are still there
    assert tombstones(conn, "t") == graves
    assert pending(conn, "t", sent) == {"inserts": [4], "updates": [2], "deletes": [1]}
    assert sqlite_ct.get_received_anchor(conn, "t") == b"anchor-0"
    assert sqlite_ct.get_sent_anchor(conn, "t") == sent


def test_reinitialise_table_never_sent_keeps_every_row_changed_since_tracking(conn):
    # Rows that predate tracking (NULL stamps) count as changed by the
    # enabling transaction: with no sent anchor they are unsent, so they stay.
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "INSERT INTO t(id, v) VALUES (1, 'old')")
    sqlite_ct.create_schema(conn, "t")
    assert sqlite_ct.reinitialise_table(conn, "t", b"a") == 0
    assert q(conn, "SELECT id FROM t") == [(1,)]
    sqlite_ct.set_sent_anchor(conn, "t", sqlite_ct.last_committed_csn(conn))
    assert sqlite_ct.reinitialise_table(conn, "t", b"b") == 1
    assert q(conn, "SELECT id FROM t") == []
    assert tombstones(conn, "t") == []


def test_reinitialise_table_is_all_or_nothing_in_the_callers_transaction(tracked):
    sqlite_ct.set_sent_anchor(tracked, "t", sqlite_ct.last_committed_csn(tracked))
    run(tracked, "BEGIN")
    assert sqlite_ct.reinitialise_table(tracked, "t", b"x") == 3
    run(tracked, "ROLLBACK")
    assert val(tracked, "SELECT count(*) FROM t") == 3
    assert sqlite_ct.get_received_anchor(tracked, "t") is None


def fk_family(conn, action, *, child_tracked=True):
    """Tracked parent p2 (rows 1, 2, 3, all sent) and child c2 referring to
    it with ON DELETE `action`; c2 row 10 (to parent 1) was sent, row 11 (to
    parent 2) is an unsent local insert. Returns p2's sent anchor."""
    run(conn, "PRAGMA foreign_keys = ON",
        "CREATE TABLE p2(id INTEGER PRIMARY KEY, v TEXT)",
        f"CREATE TABLE c2(id INTEGER PRIMARY KEY, pid INTEGER DEFAULT 3 "
        f"REFERENCES p2(id) ON DELETE {action}, v TEXT)",
        "INSERT INTO p2(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
        "INSERT INTO c2(id, pid, v) VALUES (10, 1, 'sent')")
    sqlite_ct.create_schema(conn, "p2")
    if child_tracked:
        sqlite_ct.create_schema(conn, "c2")
    sent = sqlite_ct.last_committed_csn(conn)
    sqlite_ct.set_sent_anchor(conn, "p2", sent)
    if child_tracked:
        sqlite_ct.set_sent_anchor(conn, "c2", sent)
    run(conn, "INSERT INTO c2(id, pid, v) VALUES (11, 2, 'unsent')")
    return sent


@pytest.mark.parametrize("action", ["CASCADE", "SET NULL", "SET DEFAULT", "NO ACTION",
                                    "RESTRICT"])
def test_reinitialise_table_keeps_the_rows_other_rows_refer_to(conn, action):
    # Deleting parent rows in apply mode would delete or change the rows that
    # refer to them in apply mode too: the unsent insert would be gone with
    # no tombstone, a SET NULL would re-stamp the child as applied.
    sent = fk_family(conn, action)
    run(conn, "UPDATE c2 SET v = 'edited' WHERE id = 10")
    assert sqlite_ct.reinitialise_table(conn, "p2", b"a") == 1  # row 3
    assert q(conn, "SELECT id FROM p2 ORDER BY id") == [(1,), (2,)]
    assert q(conn, "SELECT id, pid, v FROM c2 ORDER BY id") == [(10, 1, "edited"),
                                                                 (11, 2, "unsent")]
    assert pending(conn, "c2", sent) == {"inserts": [11], "updates": [10], "deletes": []}
    assert pending(conn, "p2", sent) == {"inserts": [], "updates": [], "deletes": []}


def test_reinitialise_table_keeps_rows_an_untracked_table_refers_to(conn):
    # A local-only table's rows have no way back from the server.
    fk_family(conn, "CASCADE", child_tracked=False)
    assert sqlite_ct.reinitialise_table(conn, "p2", b"a") == 1
    assert q(conn, "SELECT id FROM c2 ORDER BY id") == [(10,), (11,)]


def test_reinitialise_table_with_a_composite_foreign_key_to_a_unique_column(conn):
    run(conn, "PRAGMA foreign_keys = ON",
        "CREATE TABLE p2(id INTEGER PRIMARY KEY, a TEXT, b INTEGER, UNIQUE (a, b))",
        "CREATE TABLE c2(id INTEGER PRIMARY KEY, x TEXT, y INTEGER, "
        "FOREIGN KEY (x, y) REFERENCES p2(a, b) ON DELETE CASCADE)",
        "INSERT INTO p2 VALUES (1, 'k', 1), (2, 'k', 2), (3, NULL, NULL)",
        "INSERT INTO c2 VALUES (10, 'k', 2), (11, NULL, NULL)")
    sqlite_ct.create_schema(conn, "p2")
    sqlite_ct.set_sent_anchor(conn, "p2", sqlite_ct.last_committed_csn(conn))
    assert sqlite_ct.reinitialise_table(conn, "p2", b"a") == 2
    assert q(conn, "SELECT id FROM p2") == [(2,)]
    assert q(conn, "SELECT id FROM c2 ORDER BY id") == [(10,), (11,)]


def test_reinitialise_table_with_a_foreign_key_to_the_primary_key_by_default(conn):
    run(conn, "PRAGMA foreign_keys = ON",
        "CREATE TABLE p2(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TABLE c2(id INTEGER PRIMARY KEY, pid INTEGER REFERENCES p2 ON DELETE CASCADE)",
        "INSERT INTO p2(id, v) VALUES (1, 'a'), (2, 'b')", "INSERT INTO c2 VALUES (10, 2)")
    sqlite_ct.create_schema(conn, "p2")
    sqlite_ct.set_sent_anchor(conn, "p2", sqlite_ct.last_committed_csn(conn))
    assert sqlite_ct.reinitialise_table(conn, "p2", b"a") == 1
    assert q(conn, "SELECT id FROM p2") == [(2,)]
    assert q(conn, "SELECT id FROM c2") == [(10,)]


def test_reinitialise_table_with_foreign_keys_off_deletes_referenced_rows(conn):
    # Nothing cascades: the referring rows stay as they are, and the download
    # brings the parents back.
    fk_family(conn, "CASCADE")
    run(conn, "PRAGMA foreign_keys = OFF")
    assert sqlite_ct.reinitialise_table(conn, "p2", b"a") == 3
    assert q(conn, "SELECT id, pid FROM c2 ORDER BY id") == [(10, 1), (11, 2)]


@pytest.mark.parametrize("anchor", ["text", None, 5])
def test_reinitialise_table_refuses_an_anchor_that_is_not_bytes(tracked, anchor):
    sqlite_ct.set_sent_anchor(tracked, "t", sqlite_ct.last_committed_csn(tracked))
    with pytest.raises(AnchorError):
        sqlite_ct.reinitialise_table(tracked, "t", anchor)
    assert val(tracked, "SELECT count(*) FROM t") == 3


# -- errors shared by the per-table functions ------------------------------------

CALLS = {
    "forget_pending_deletes": lambda c, t: sqlite_ct.forget_pending_deletes(c, t, [1], after=0),
    "stamp_applied": lambda c, t: sqlite_ct.stamp_applied(c, t, [1]),
    "reinitialise_table": lambda c, t: sqlite_ct.reinitialise_table(c, t, b"a"),
}


@pytest.mark.parametrize("func", sorted(CALLS))
def test_an_untracked_table_is_refused(tracked, func):
    for table in ("plain", "missing"):
        with pytest.raises(NotTrackedError, match=table):
            CALLS[func](tracked, table)


@pytest.mark.parametrize("func", sorted(CALLS))
def test_a_portable_table_is_refused_with_what_to_do(tracked, func):
    # Portable triggers have no apply mode: a reinitialise would leave
    # tombstones (uploaded as deletes), a stamp cannot be written, and the
    # tombstone keys are text, so a forget would silently find nothing.
    sqlite_ct.set_sent_anchor(tracked, "p", sqlite_ct.last_committed_csn(tracked))
    run(tracked, "DELETE FROM p WHERE id = 1", "INSERT INTO p(id, v) VALUES (1, 'b')")
    graves = tombstones(tracked, "p")
    with pytest.raises(TableError, match='mode="native"'):
        CALLS[func](tracked, "p")
    assert tombstones(tracked, "p") == graves
    assert q(tracked, "SELECT id, v FROM p") == [(1, "b")]


def test_the_functions_need_the_extension(db_path):
    conn = apsw.Connection(db_path)
    try:
        for call in CALLS.values():
            with pytest.raises(sqlite_ct.ExtensionError):
                call(conn, "t")
    finally:
        conn.close()


# -- floor_tombstone_times ---------------------------------------------------------

DAY_MS = 86_400_000


def test_floor_tombstone_times_lifts_a_clock_that_is_behind_to_the_log(apsw_conn):
    conn = apsw_conn
    run(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    run(conn, "INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    now = val(conn, "SELECT max(__sysCommitTime) FROM __sysTxCommitSequence")
    behind = now - 400 * DAY_MS
    conn.create_scalar_function("sqlite_ct_now", lambda: behind, 0)
    run(conn, "DELETE FROM t WHERE id = 1")  # another transaction, not lifted
    floor = val(conn, "SELECT max(__sysCommitTime) FROM __sysTxCommitSequence")
    assert floor >= now
    run(conn, "BEGIN", "DELETE FROM t WHERE id IN (2, 3)")
    assert sqlite_ct.floor_tombstone_times(conn) == 2
    assert sqlite_ct.floor_tombstone_times(conn) == 0
    run(conn, "COMMIT")
    assert sorted(r[0] for r in q(conn, "SELECT __sysDeletedTime FROM __sysOCSDeletedRows")) \
        == [behind, floor, floor]
    assert sqlite_ct.purge_tombstones(conn, "t", older_than_days=30) == 1


def test_floor_tombstone_times_does_nothing_without_tracked_writes(tracked):
    assert sqlite_ct.floor_tombstone_times(tracked) == 0
    run(tracked, "BEGIN")
    assert sqlite_ct.floor_tombstone_times(tracked) == 0
    assert sqlite_ct.current_bsn(tracked) is None
    run(tracked, "ROLLBACK")


# -- release_context ---------------------------------------------------------------

def contexts(conn, table):
    return (q(conn, f'SELECT id, "__sysTrackingContext" FROM "{table}" ORDER BY id'),
            q(conn, "SELECT __sysRK, __sysTrackingContext FROM __sysOCSDeletedRows "
                    "WHERE __sysTName = ? ORDER BY 1", (table,)))


def test_release_context_hands_all_but_the_kept_keys_back_to_no_context(tracked):
    conn = tracked
    client = uuid.uuid4()
    run(conn, "INSERT INTO t(id, v) VALUES (5, 'x')")
    before = sqlite_ct.last_committed_csn(conn)
    run(conn, "BEGIN")
    sqlite_ct.set_tracking_context(conn, client)
    run(conn, "UPDATE t SET v = 'sent' WHERE id = 1", "UPDATE t SET v = 'side' WHERE id = 2",
        "INSERT INTO t(id, v) VALUES (4, 'side')", "DELETE FROM t WHERE id = 3",
        "DELETE FROM t WHERE id = 5")
    sqlite_ct.release_context(conn, "t", client, keep_rows=[(1,)], keep_deletes=[[3]])
    assert sqlite_ct.tracking_context(conn) == client  # restored
    run(conn, "COMMIT")
    sqlite_ct.set_tracking_context(conn, None)
    x = client.bytes_le
    rows, graves = contexts(conn, "t")
    assert rows == [(1, x), (2, None), (4, None)]
    rk = {sqlite_ct.unpack_key(conn, "t", r)[0]: c for r, c in graves}
    assert rk == {3: x, 5: None}
    # The client's own changes stay out of its download; the rest reach it.
    cs = sqlite_ct.enumerate_changes(conn, "t", before, exclude_context=client)
    assert sorted(r["id"] for r in cs.updates) == [2]
    assert sorted(r["id"] for r in cs.inserts) == [4]
    assert [k["id"] for k in cs.deletes] == [5]


@pytest.mark.parametrize("options", ["INSERT|DELETE", "INSERT"])
def test_release_context_on_a_table_that_does_not_track_updates(conn, options):
    # No trigger re-stamps an update there: the context is set directly.
    opts = sqlite_ct.TrackingOptions.INSERT
    if "DELETE" in options:
        opts |= sqlite_ct.TrackingOptions.DELETE
    run(conn, "CREATE TABLE n(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "n", options=opts)
    client = uuid.uuid4()
    run(conn, "BEGIN")
    sqlite_ct.set_tracking_context(conn, client)
    run(conn, "INSERT INTO n(id, v) VALUES (1, 'sent'), (2, 'from a hub trigger')")
    sqlite_ct.release_context(conn, "n", client, keep_rows=[(1,)])
    run(conn, "COMMIT")
    sqlite_ct.set_tracking_context(conn, None)
    assert contexts(conn, "n")[0] == [(1, client.bytes_le), (2, None)]
    cs = sqlite_ct.enumerate_changes(conn, "n", 0, exclude_context=client)
    assert [r["id"] for r in cs.inserts] == [2]


def test_release_context_without_kept_keys_releases_everything(tracked):
    client = uuid.uuid4()
    run(tracked, "BEGIN")
    sqlite_ct.set_tracking_context(tracked, client)
    run(tracked, "UPDATE t SET v = 'z'", "DELETE FROM t WHERE id = 3")
    sqlite_ct.release_context(tracked, "t", client)
    run(tracked, "COMMIT")
    sqlite_ct.set_tracking_context(tracked, None)
    rows, graves = contexts(tracked, "t")
    assert [c for _, c in rows] == [None, None]
    assert [c for _, c in graves] == [None]


def test_release_context_leaves_other_contexts_and_transactions_alone(tracked):
    client, other = uuid.uuid4(), uuid.uuid4()
    sqlite_ct.set_tracking_context(tracked, client)
    run(tracked, "UPDATE t SET v = 'earlier' WHERE id = 1")  # its own transaction
    run(tracked, "BEGIN")
    sqlite_ct.set_tracking_context(tracked, other)
    run(tracked, "UPDATE t SET v = 'other' WHERE id = 2")
    sqlite_ct.release_context(tracked, "t", client)
    run(tracked, "COMMIT")
    sqlite_ct.set_tracking_context(tracked, None)
    rows, _ = contexts(tracked, "t")
    assert rows == [(1, client.bytes_le), (2, other.bytes_le), (3, None)]


def test_release_context_outside_a_writing_transaction_does_nothing(tracked):
    csn = sqlite_ct.last_committed_csn(tracked)
    sqlite_ct.release_context(tracked, "t", uuid.uuid4())
    assert sqlite_ct.last_committed_csn(tracked) == csn


def test_release_context_refuses_bad_input(tracked):
    run(tracked, "BEGIN", "UPDATE t SET v = 'w' WHERE id = 1")
    with pytest.raises(TypeError):
        sqlite_ct.release_context(tracked, "t", uuid.uuid4().bytes_le)
    with pytest.raises(NotTrackedError):
        sqlite_ct.release_context(tracked, "plain", uuid.uuid4())
    with pytest.raises(KeyFormatError):
        sqlite_ct.release_context(tracked, "t", uuid.uuid4(), keep_rows=[(1, 2)])
    assert in_transaction(tracked)
    run(tracked, "ROLLBACK")


# -- the client id, batch anchors, local writes in apply mode ---------------------

def test_set_client_id_changes_it_everywhere_it_is_stored(tracked):
    old = sqlite_ct.client_id(tracked)
    sqlite_ct.set_sent_anchor(tracked, "t", 1)
    new = uuid.uuid4()
    sqlite_ct.set_client_id(tracked, new)
    assert sqlite_ct.client_id(tracked) == new
    assert q(tracked, "SELECT DISTINCT ClientId FROM __sysSyncArticles") == [(new.bytes_le,)]
    assert q(tracked, "SELECT ClientId FROM __sysSyncSubscriptions") == [(new.bytes_le,)]
    assert old != new
    assert sqlite_ct.get_sent_anchor(tracked, "t") == 1


def test_set_client_id_on_a_database_without_one(tracked):
    new = uuid.uuid4()
    sqlite_ct.set_client_id(tracked, new)
    assert sqlite_ct.client_id(tracked) == new


@pytest.mark.parametrize("bad", [str(uuid.uuid4()), uuid.uuid4().bytes_le, None])
def test_set_client_id_refuses_what_is_not_a_uuid(tracked, bad):
    old = sqlite_ct.client_id(tracked)
    with pytest.raises(TypeError):
        sqlite_ct.set_client_id(tracked, bad)
    assert sqlite_ct.client_id(tracked) == old


def test_batch_anchors_store_several_tables_at_once(tracked):
    sqlite_ct.set_sent_anchor(tracked, "t", 1)  # an article that exists
    sqlite_ct.set_sent_anchors(tracked, {"t": 7, "K": 8})  # and one that does not
    assert (sqlite_ct.get_sent_anchor(tracked, "t"), sqlite_ct.get_sent_anchor(tracked, "k")) \
        == (7, 8)
    sqlite_ct.set_received_anchors(tracked, {"T": b"r1", "k": bytearray(b"r2")})
    assert (sqlite_ct.get_received_anchor(tracked, "t"),
            sqlite_ct.get_received_anchor(tracked, "k")) == (b"r1", b"r2")


@pytest.mark.parametrize("call, error", [
    (lambda c: sqlite_ct.set_sent_anchors(c, {"t": 9, "k": -1}), AnchorError),
    (lambda c: sqlite_ct.set_sent_anchors(c, {"t": 9, "k": "1"}), AnchorError),
    (lambda c: sqlite_ct.set_sent_anchors(c, {"t": 9, "plain": 1}), NotTrackedError),
    (lambda c: sqlite_ct.set_received_anchors(c, {"t": b"9", "k": "x"}), AnchorError),
    (lambda c: sqlite_ct.set_received_anchors(c, {"t": b"9", "plain": b"x"}),
     NotTrackedError),
])
def test_batch_anchors_are_all_or_nothing(tracked, call, error):
    sqlite_ct.set_sent_anchor(tracked, "t", 1)
    sqlite_ct.set_received_anchor(tracked, "t", b"1")
    with pytest.raises(error):
        call(tracked)
    assert sqlite_ct.get_sent_anchor(tracked, "t") == 1
    assert sqlite_ct.get_received_anchor(tracked, "t") == b"1"


def test_applying_local_changes_tracks_writes_inside_apply_mode(tracked):
    sent = sqlite_ct.last_committed_csn(tracked)
    with sqlite_ct.applying_server_changes(tracked):
        run(tracked, "UPDATE t SET v = 'server' WHERE id = 1")
        with sqlite_ct.applying_local_changes(tracked):
            run(tracked, "UPDATE t SET v = 'merged' WHERE id = 2")
        assert val(tracked, "SELECT sqlite_ct_apply_mode()") == 1
        run(tracked, "DELETE FROM t WHERE id = 3")
    assert val(tracked, "SELECT sqlite_ct_apply_mode()") == 0
    assert pending(tracked, "t", sent) == {"inserts": [], "updates": [2], "deletes": []}


def test_applying_local_changes_restores_the_mode_after_an_error(tracked):
    with sqlite_ct.applying_server_changes(tracked):
        with pytest.raises(HOST_ERRORS):
            with sqlite_ct.applying_local_changes(tracked):
                run(tracked, "INSERT INTO t(id, v) VALUES (1, 'dup')")
        assert val(tracked, "SELECT sqlite_ct_apply_mode()") == 1
