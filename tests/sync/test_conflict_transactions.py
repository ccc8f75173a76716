"""The conflict inbox by client transaction: every entry of an upload keeps
the client transaction its change came from (TxGroup), conflicts() lists and
filters by it, and resolve_transaction() settles a whole transaction at once,
writing what it keeps as one local transaction again. Inboxes written by
earlier versions (without TxGroup) are read and extended without loss."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import sqlite_ct
from sqlite_ct.sync import Conflict, ConflictType, SyncError, SyncStage
from sqlite_ct.sync.client import store_conflicts

from .conftest import Client, connect, user_rows

UP, DOWN = SyncStage.UPLOADING_CHANGES, SyncStage.DOWNLOADING_CHANGES
ERR = ConflictType.ERRORS_OCCURRED


@pytest.fixture
def client(tmp_path, hub_with):
    """A client database file synced with a hub: t = (1,a) (2,b) (3,c), u = (1,x)."""
    hub, server = hub_with("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                           seed=("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
                                 "CREATE TABLE u(id INTEGER PRIMARY KEY, w TEXT)",
                                 "INSERT INTO u VALUES (1, 'x')"))
    x = Client(connect(str(tmp_path / "client.db")), server, ["t", "u"])
    x.sync()
    x.hub = hub
    yield x
    x.conn.close()


def conflict(table, key, client_row, server_row, *, transaction=None, stage=UP, error="no"):
    return Conflict(ERR, stage, table, key, client_row, server_row, error, deferred=True,
                    transaction=transaction)


def store(conn, conflicts):
    with conn:
        store_conflicts(conn, conflicts)


def local_bsns(conn):
    """The change BSNs of the local changes not uploaded yet, over t and u."""
    found = set()
    for table in ("t", "u"):
        sent = sqlite_ct.get_sent_anchor(conn, table)
        found |= {r[0] for r in conn.execute(
            "SELECT change_bsn FROM sqlite_ct_changes(?, ?)", (table, sent))}
    return found


def inbox(x):
    return [(c.table, c.key, c.stage, c.transaction) for c in x.provider.conflicts()]


# -- storage ---------------------------------------------------------------------

OLD_INBOX = ("CREATE TABLE __sysSyncConflicts(Id INTEGER PRIMARY KEY, Type TEXT NOT NULL, "
             "Stage TEXT NOT NULL, TableName TEXT NOT NULL, KeyJson TEXT NOT NULL, "
             "ClientJson TEXT, ServerJson TEXT, Error TEXT, Time INTEGER NOT NULL)")


def test_an_inbox_of_the_previous_layout_is_read_and_extended_without_loss(client):
    x = client
    x.conn.execute(OLD_INBOX)
    x.conn.execute("INSERT INTO __sysSyncConflicts(Type, Stage, TableName, KeyJson, ClientJson, "
                   "ServerJson, Error, Time) VALUES "
                   "('ErrorsOccurred', 'UploadingChanges', 't', '{\"id\": 1}', "
                   "'{\"id\": 1, \"v\": \"bad\"}', '{\"id\": 1, \"v\": \"a\"}', 'CHECK', 1000), "
                   "('ErrorsOccurred', 'DownloadingChanges', 'u', '{\"id\": 1}', "
                   "'{\"id\": 1, \"w\": \"x\"}', '{\"id\": 1, \"w\": \"y\"}', 'FK', 2000)")
    before = x.provider.conflicts()
    assert [(c.id, c.table, c.stage, c.client_row, c.transaction) for c in before] == [
        (1, "t", UP, {"id": 1, "v": "bad"}, None), (2, "u", DOWN, {"id": 1, "w": "x"}, None)]
    assert x.provider.conflicts(transaction=1) == []
    with pytest.raises(SyncError, match="no deferred conflicts of client transaction 1 in"):
        x.provider.resolve_transaction(1, "none")
    # The column is added inside the caller's transaction: rolled back with it.
    with pytest.raises(ZeroDivisionError):
        with x.conn:
            store_conflicts(x.conn, [conflict("t", {"id": 2}, {"id": 2, "v": "q"}, None,
                                              transaction=7)])
            1 / 0
    assert "TxGroup" not in [r[1] for r in x.conn.execute(
        "PRAGMA table_info(__sysSyncConflicts)")]
    assert x.provider.conflicts() == before
    store(x.conn, [conflict("t", {"id": 2}, {"id": 2, "v": "q"}, None, transaction=7)])
    after = x.provider.conflicts()
    assert after[:2] == before
    assert (after[2].id, after[2].key, after[2].transaction) == (3, {"id": 2}, 7)
    assert x.provider.conflicts(transaction=7) == after[2:]
    assert x.conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND "
                          "tbl_name = '__sysSyncConflicts'").fetchone() == (1,)
    # The old entries resolve as before.
    x.provider.resolve_conflict(1, before[0].client_row)
    assert user_rows(x.conn, "t")[0] == (1, "bad")


def test_store_list_and_filter_by_transaction(client, tmp_path):
    x = client
    store(x.conn, [conflict("t", {"id": 1}, {"id": 1, "v": "p"}, {"id": 1, "v": "a"},
                            transaction=7),
                   conflict("u", {"id": 1}, {"id": 1, "w": "p"}, {"id": 1, "w": "x"},
                            transaction=7),
                   conflict("t", {"id": 2}, {"id": 2, "v": "q"}, {"id": 2, "v": "b"},
                            transaction=9),
                   # A download belongs to no client transaction.
                   conflict("t", {"id": 3}, {"id": 3, "v": "c"}, {"id": 3, "v": "r"},
                            transaction=7, stage=DOWN)])
    assert inbox(x) == [("t", {"id": 1}, UP, 7), ("u", {"id": 1}, UP, 7),
                        ("t", {"id": 2}, UP, 9), ("t", {"id": 3}, DOWN, None)]
    assert [c.key for c in x.provider.conflicts(transaction=7)] == [{"id": 1}, {"id": 1}]
    assert [c.table for c in x.provider.conflicts("U", transaction=7)] == ["u"]
    assert x.provider.conflicts("u", transaction=9) == []
    # Listed by transaction through an index.
    (plan,) = x.conn.execute("EXPLAIN QUERY PLAN SELECT * FROM main.__sysSyncConflicts "
                             "WHERE TxGroup = ? ORDER BY Id", (7,)).fetchall()
    assert "USING INDEX __sysSyncConflictsTxGroup (TxGroup=?)" in plan[3]
    assert x.provider.conflicts(transaction=8) == []
    for bad in ("7", 7.0, True):
        with pytest.raises(SyncError, match="a client transaction is an integer"):
            x.provider.conflicts(transaction=bad)
    # Durable: a new connection reads the same.
    other = connect(str(tmp_path / "client.db"))
    try:
        from sqlite_ct.sync import ClientSyncProvider
        assert ClientSyncProvider(other).conflicts() == x.provider.conflicts()
    finally:
        other.close()
    # A newer conflict of the same row and side replaces the older, with its
    # own transaction.
    store(x.conn, [conflict("t", {"id": 1}, {"id": 1, "v": "p2"}, {"id": 1, "v": "a"},
                            transaction=11)])
    assert [c.table for c in x.provider.conflicts(transaction=7)] == ["u"]
    assert x.provider.conflicts(transaction=11)[0].client_row == {"id": 1, "v": "p2"}


def test_only_uploads_are_settled_by_transaction(client):
    # A download entry with a transaction (not written by store_conflicts,
    # which keeps none for downloads) is not part of it.
    x = client
    transaction_seven(x)
    x.conn.execute("UPDATE __sysSyncConflicts SET TxGroup = 9 WHERE Stage = ?", (DOWN.value,))
    assert [c.key for c in x.provider.resolve_transaction(9, "none")] == [{"id": 3}]
    assert [(c.stage, c.transaction) for c in x.provider.conflicts(transaction=9)] == [
        (DOWN, 9)]
    with pytest.raises(SyncError, match="no deferred conflicts of client transaction 9 in"):
        x.provider.resolve_transaction(9, "none")


def test_a_malformed_transaction_is_not_stored(client):
    with pytest.raises(SyncError, match="a client transaction is an integer"):
        store(client.conn, [conflict("t", {"id": 1}, None, None, transaction="7")])
    assert client.provider.conflicts() == []


# -- resolve_transaction ------------------------------------------------------------

def transaction_seven(x):
    """Client transaction 7 lost on the hub: an update of t 1, a delete of t 2
    (the hub sent its row back), an insert of t 4 and an update of u 1; plus
    transaction 9 and a download of the same keys, which stay."""
    store(x.conn, [conflict("t", {"id": 1}, {"id": 1, "v": "mine"}, {"id": 1, "v": "a"},
                            transaction=7),
                   conflict("t", {"id": 2}, None, {"id": 2, "v": "b"}, transaction=7),
                   conflict("t", {"id": 4}, {"id": 4, "v": "new"}, None, transaction=7),
                   conflict("u", {"id": 1}, {"id": 1, "w": "mine"}, {"id": 1, "w": "x"},
                            transaction=7),
                   conflict("t", {"id": 3}, {"id": 3, "v": "other"}, {"id": 3, "v": "c"},
                            transaction=9),
                   conflict("t", {"id": 1}, {"id": 1, "v": "a"}, {"id": 1, "v": "srv"},
                            stage=DOWN)])


def test_keeping_the_clients_side_writes_one_local_transaction(client):
    x = client
    transaction_seven(x)
    assert local_bsns(x.conn) == set()
    settled = x.provider.resolve_transaction(7, "client")
    assert [(c.table, c.key) for c in settled] == [
        ("t", {"id": 1}), ("t", {"id": 2}), ("t", {"id": 4}), ("u", {"id": 1})]
    assert user_rows(x.conn, "t") == [(1, "mine"), (3, "c"), (4, "new")]
    assert user_rows(x.conn, "u") == [(1, "mine")]
    assert inbox(x) == [("t", {"id": 3}, UP, 9), ("t", {"id": 1}, DOWN, None)]
    (bsn,) = local_bsns(x.conn)  # one client transaction, delete included
    counts = {t: x.conn.execute("SELECT group_concat(op, '') FROM (SELECT op FROM "
                                "sqlite_ct_changes(?, ?) ORDER BY op)",
                                (t, sqlite_ct.get_sent_anchor(x.conn, t))).fetchone()[0]
              for t in ("t", "u")}
    assert counts == {"t": "DIU", "u": "U"}
    x.sync()
    assert user_rows(x.hub, "t") == user_rows(x.conn, "t")
    assert user_rows(x.hub, "u") == user_rows(x.conn, "u")


def test_taking_the_servers_side_writes_nothing(client):
    """The hub kept its version of an upload's conflict, and the client holds
    it (the upload's corrections and downloads bring it): "server" removes
    the entries and writes nothing, since the stored server_row is only what
    the hub had then (see tests/conformance/test_client_transactions.py for
    a newer hub version that writing it back would overwrite)."""
    x = client
    transaction_seven(x)
    csn = sqlite_ct.last_committed_csn(x.conn)
    t, u = user_rows(x.conn, "t"), user_rows(x.conn, "u")
    assert len(x.provider.resolve_transaction(7, "server")) == 4
    assert (user_rows(x.conn, "t"), user_rows(x.conn, "u")) == (t, u)
    assert local_bsns(x.conn) == set()
    assert sqlite_ct.last_committed_csn(x.conn) == csn
    assert inbox(x) == [("t", {"id": 3}, UP, 9), ("t", {"id": 1}, DOWN, None)]


def test_leaving_the_tables_removes_the_entries_only(client):
    x = client
    transaction_seven(x)
    csn = sqlite_ct.last_committed_csn(x.conn)
    t, u = user_rows(x.conn, "t"), user_rows(x.conn, "u")
    assert len(x.provider.resolve_transaction(7, "none")) == 4
    assert (user_rows(x.conn, "t"), user_rows(x.conn, "u")) == (t, u)
    assert local_bsns(x.conn) == set()
    assert sqlite_ct.last_committed_csn(x.conn) == csn
    assert inbox(x) == [("t", {"id": 3}, UP, 9), ("t", {"id": 1}, DOWN, None)]
    with pytest.raises(SyncError, match="no deferred conflicts of client transaction 7 in"):
        x.provider.resolve_transaction(7, "none")


def test_a_delete_of_a_key_the_client_lacks_refuses_the_whole_transaction(client):
    x = client
    transaction_seven(x)
    x.conn.execute("DELETE FROM t WHERE id = 2")
    x.sync()  # the hub deletes 2 too; the entry still holds the hub's old row
    t, u, entries = user_rows(x.conn, "t"), user_rows(x.conn, "u"), x.provider.conflicts()
    with pytest.raises(SyncError) as info:
        x.provider.resolve_transaction(7, "client")
    assert str(info.value) == (
        f"sqlite-ct sync: client transaction 7: conflict {entries[1].id}: table \"t\" key "
        f"{{'id': 2}} is not on the client, so deleting it is no change to upload and the "
        f"hub would keep its row; nothing was written: take the hub's rows "
        f"(resolve_transaction(7, \"server\")), sync, then delete it, or settle the entries "
        f"one by one with resolve_conflict()")
    assert (user_rows(x.conn, "t"), user_rows(x.conn, "u")) == (t, u)
    assert local_bsns(x.conn) == set()
    assert x.provider.conflicts() == entries
    # The hub's side stands: nothing is written, the entries leave.
    x.provider.resolve_transaction(7, "server")
    assert (user_rows(x.conn, "t"), user_rows(x.conn, "u")) == (t, u)
    assert 7 not in [c.transaction for c in x.provider.conflicts()]


def test_unknown_transactions_and_bad_arguments(client):
    x = client
    with pytest.raises(SyncError, match="no deferred conflicts of client transaction 5 in"):
        x.provider.resolve_transaction(5, "client")  # no inbox at all
    transaction_seven(x)
    with pytest.raises(SyncError, match="no deferred conflicts of client transaction 8 in"):
        x.provider.resolve_transaction(8, "client")
    with pytest.raises(SyncError, match="use must be one of 'client', 'server', 'none', "
                                        "not 'local'"):
        x.provider.resolve_transaction(7, "local")
    with pytest.raises(SyncError, match="a client transaction is an integer"):
        x.provider.resolve_transaction("7", "client")
    assert len(x.provider.conflicts()) == 6


def test_inside_the_callers_transaction_the_writes_are_the_callers(client):
    x = client
    transaction_seven(x)
    with x.conn:
        x.conn.execute("UPDATE u SET w = 'before' WHERE id = 1")
        x.provider.resolve_transaction(7, "client")
        x.conn.execute("UPDATE t SET v = 'after' WHERE id = 3")
    assert len(local_bsns(x.conn)) == 1
    with pytest.raises(ZeroDivisionError):
        with x.conn:
            x.provider.resolve_transaction(9, "client")
            1 / 0
    assert 7 not in [c.transaction for c in x.provider.conflicts()]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(st.sampled_from([7, 8]), st.integers(1, 6),
                                  st.one_of(st.none(), st.text(max_size=3)),
                                  st.one_of(st.none(), st.text(max_size=3))),
                        min_size=1, max_size=8, unique_by=lambda e: e[1]),
       use=st.sampled_from(["client", "server", "none"]))
def test_resolve_transaction_settles_exactly_its_entries(tmp_path_factory, hub_with, entries,
                                                         use):
    """For any entries of two transactions: resolving 7 either refuses and
    changes nothing, or writes exactly 7's chosen images as one local
    transaction and removes exactly 7's entries."""
    hub, server = hub_with("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                           seed=("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
                                 "CREATE TABLE u(id INTEGER PRIMARY KEY, w TEXT)"))
    x = Client(connect(str(tmp_path_factory.mktemp("p") / "c.db")), server, ["t", "u"])
    try:
        x.sync()
        store(x.conn, [conflict("t", {"id": k}, None if c is None else {"id": k, "v": c},
                                None if s is None else {"id": k, "v": s}, transaction=n)
                       for n, k, c, s in entries])
        mine = [e for e in entries if e[0] == 7]
        before_rows, before_inbox = user_rows(x.conn, "t"), x.provider.conflicts()
        expected = dict(before_rows)
        refused = wrote = False
        for _, k, c, s in mine:
            # "server" and "none" write nothing (the hub's version stands).
            image = c if use == "client" else expected.get(k)
            if use == "client" and image is None and s is not None and k not in expected:
                refused = True
            # a write, or a delete of a row the client has, is a change
            wrote |= use == "client" and (image is not None or k in expected)
            if image is None:
                expected.pop(k, None)
            else:
                expected[k] = image
        if not mine:
            with pytest.raises(SyncError, match="no deferred conflicts"):
                x.provider.resolve_transaction(7, use)
            refused = True
        elif refused:
            with pytest.raises(SyncError, match="is not on the client"):
                x.provider.resolve_transaction(7, use)
        else:
            x.provider.resolve_transaction(7, use)
        if refused:
            assert user_rows(x.conn, "t") == before_rows
            assert x.provider.conflicts() == before_inbox
            assert local_bsns(x.conn) == set()
            return
        assert user_rows(x.conn, "t") == sorted(expected.items())
        assert [c.transaction for c in x.provider.conflicts()] == [8] * (len(entries) -
                                                                         len(mine))
        assert len(local_bsns(x.conn)) == (1 if wrote else 0)
    finally:
        x.conn.close()


@pytest.fixture
def family(tmp_path, hub_with):
    """A client with foreign keys on: child(pid) references parent(id)."""
    hub, server = hub_with("CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)",
                           seed=("INSERT INTO parent VALUES (1, 'p1')",
                                 "CREATE TABLE child(id INTEGER PRIMARY KEY, pid INTEGER)",
                                 "INSERT INTO child VALUES (1, 1)"))
    conn = connect(str(tmp_path / "family.db"))
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("CREATE TABLE child(id INTEGER PRIMARY KEY, pid INTEGER "
                 "REFERENCES parent(id))")
    x = Client(conn, server, ["parent", "child"])
    x.sync()
    yield x
    conn.close()


def test_rows_are_written_referenced_tables_first_and_deleted_children_first(family):
    x = family
    # The hub reported the child before its parent.
    images = [("child", {"id": 2, "pid": 2}), ("parent", {"id": 2, "name": "p2"})]
    store(x.conn, [conflict(t, {"id": r["id"]}, r, None, transaction=7) for t, r in images])
    x.provider.resolve_transaction(7, "client")
    assert (user_rows(x.conn, "parent"), user_rows(x.conn, "child")) == (
        [(1, "p1"), (2, "p2")], [(1, 1), (2, 2)])
    # The client's side of a transaction that deleted both deletes the child
    # first.
    store(x.conn, [conflict(t, {"id": r["id"]}, None, r, transaction=8)
                   for t, r in reversed(images)])
    x.provider.resolve_transaction(8, "client")
    assert (user_rows(x.conn, "parent"), user_rows(x.conn, "child")) == (
        [(1, "p1")], [(1, 1)])
    assert x.conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_row_the_clients_table_refuses_writes_nothing(family):
    x = family
    store(x.conn, [conflict("parent", {"id": 3}, {"id": 3, "name": "p3"}, None, transaction=7),
                   conflict("child", {"id": 3}, {"id": 3, "pid": 9}, None, transaction=7)])
    entries = x.provider.conflicts()
    with pytest.raises(SyncError) as info:
        x.provider.resolve_transaction(7, "client")
    assert str(info.value).startswith(
        f"sqlite-ct sync: client transaction 7: conflict {entries[1].id}: writing table "
        f"\"child\" key {{'id': 3}} failed (")
    assert "FOREIGN KEY constraint failed" in str(info.value)
    assert str(info.value).endswith(
        "); nothing was written: fix what the client's table refuses, or settle the entries "
        "one by one with resolve_conflict()")
    assert user_rows(x.conn, "parent") == [(1, "p1")]
    assert x.provider.conflicts() == entries
    assert local_bsns_of(x.conn, ("parent", "child")) == set()


def local_bsns_of(conn, tables):
    return {r[0] for t in tables for r in conn.execute(
        "SELECT change_bsn FROM sqlite_ct_changes(?, ?)",
        (t, sqlite_ct.get_sent_anchor(conn, t)))}
