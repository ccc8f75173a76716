"""Upload batches are runs of whole client transactions: every uploaded
change carries the client transaction that last changed its row
(TableChanges.transactions, sqlite_ct_changes()'s change_bsn), a batch never
splits a transaction, the batches come in BSN order and hold at most
upload_batch_size changes unless one transaction has more, and together they
are get_changes(). Database files, real syncs against a SQLite hub."""
from __future__ import annotations

import sqlite3
from typing import Any, Dict, List, Sequence

import apsw
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import sqlite_ct
from sqlite_ct import loader
from sqlite_ct.sync import (ClientSyncProvider, ServerSyncProvider, SyncAgent, SyncGroup,
                            SyncTable, TableChanges)
from sqlite_ct.sync.agent import upload_batches

from .conftest import connect, user_rows

TABLES = {
    "a": "CREATE TABLE a(id INTEGER PRIMARY KEY, v)",
    "b": "CREATE TABLE b(x TEXT, y INTEGER, v, PRIMARY KEY(y, x)) WITHOUT ROWID",
    "c": "CREATE TABLE c(k TEXT PRIMARY KEY, v)",
}
NAMES = list(TABLES)
GROUP = [SyncTable(n, group=SyncGroup("g")) for n in NAMES]   # one upload per batch


def _key(table: str, k: int) -> Dict[str, Any]:
    return {"a": {"id": k}, "b": {"x": f"k{k}", "y": k}, "c": {"k": f"c{k}"}}[table]


def _run(conn: Any, transactions: Sequence[Sequence[tuple]]) -> None:
    """Each inner list in one client transaction: inserts (OR IGNORE),
    INSERT OR REPLACE, updates, deletes and key changes (a key change onto an
    existing key fails its statement, not the transaction)."""
    for ops in transactions:
        conn.execute("BEGIN")
        for op, table, k, v, k2 in ops:
            key = _key(table, k)
            where = " AND ".join(f"{c} = :{c}" for c in key)
            if op in ("insert", "replace"):
                verb = "INSERT OR IGNORE" if op == "insert" else "INSERT OR REPLACE"
                cols = [*key, "v"]
                conn.execute(f"{verb} INTO {table}({', '.join(cols)}) VALUES "
                             f"({', '.join(':' + c for c in cols)})", {**key, "v": v})
            elif op == "update":
                conn.execute(f"UPDATE {table} SET v = :v WHERE {where}", {**key, "v": v})
            elif op == "delete":
                conn.execute(f"DELETE FROM {table} WHERE {where}", key)
            else:
                new = _key(table, k2)
                sets = ", ".join(f"{c} = :n_{c}" for c in new)
                try:
                    conn.execute(f"UPDATE {table} SET {sets} WHERE {where}",
                                 {**key, **{f"n_{c}": val for c, val in new.items()}})
                except apsw.ConstraintError:
                    pass
        conn.execute("COMMIT")


def _stdlib(path: str) -> Any:
    loader.register_auto_extension()
    conn = sqlite3.connect(path, isolation_level=None)
    loader.load(conn)
    return conn


def _setup(tmp_path, host: str = "apsw"):
    """A hub file and a client file (apsw, or stdlib sqlite3 for the client),
    the tables created on the client by a first sync."""
    hub = connect(str(tmp_path / "hub.db"))
    client = (connect if host == "apsw" else _stdlib)(str(tmp_path / "client.db"))
    for sql in TABLES.values():
        hub.execute(sql)
    provider = ClientSyncProvider(client)
    agent = SyncAgent(provider, ServerSyncProvider(hub), GROUP)
    agent.synchronize()
    return hub, client, provider, agent


def _flat(batch: Sequence[Any]) -> List[tuple]:
    """(table, kind, row, transaction) of every change of a batch."""
    out = []
    for tc in batch:
        rows = ([("delete", r) for r in tc.deletes] + [("insert", r) for r in tc.inserts]
                + [("update", r) for r in tc.updates])
        assert len(tc.transactions) == len(rows)
        out += [(tc.table, kind, r, t) for (kind, r), t in zip(rows, tc.transactions)]
    return out


def _apply(replica: Any, batch: Sequence[Any]) -> None:
    """Apply one batch as the hub orders it: deletes in reverse table order,
    then inserts and updates (as upserts) in table order. A delete or an
    update of a key the replica lacks is an error: the hub would report a
    conflict for it."""
    by_table = {tc.table: tc for tc in batch}
    order = [n for n in NAMES if n in by_table]
    for name in reversed(order):
        tc = by_table[name]
        where = " AND ".join(f"{c} IS ?" for c in tc.key_columns)
        for key in tc.deletes:
            cur = replica.execute(f"DELETE FROM {name} WHERE {where}", key)
            assert cur.rowcount == 1, (name, "delete of a key the replica lacks", key)
    for kind in ("inserts", "updates"):
        for name in order:
            tc = by_table[name]
            pos = [tc.columns.index(k) for k in tc.key_columns]
            where = " AND ".join(f"{c} IS ?" for c in tc.key_columns)
            for row in getattr(tc, kind):
                if kind == "updates":
                    held = replica.execute(f"SELECT count(*) FROM {name} WHERE {where}",
                                           [row[p] for p in pos]).fetchone()[0]
                    assert held == 1, (name, "update of a key the replica lacks", row)
                replica.execute(f"INSERT OR REPLACE INTO {name}({', '.join(tc.columns)}) "
                                f"VALUES ({', '.join('?' for _ in tc.columns)})", row)


def _rows(conn: Any, table: str) -> List[tuple]:
    return user_rows(conn, table)


def _change_bsns(client: Any, provider: ClientSyncProvider, changes: Any) -> Dict[tuple, int]:
    """(table, kind, key) -> the BSN each change must carry: a live row's
    __sysChangeTxBsn, a delete's newest tombstone after the sent anchor."""
    out = {}
    for tc in changes.tables:
        since = provider.get_table_sent_anchor(tc.table) or 0
        pos = [tc.columns.index(k) for k in tc.key_columns]
        where = " AND ".join(f"{c} IS ?" for c in tc.key_columns)
        for kind, rows in (("insert", tc.inserts), ("update", tc.updates)):
            for row in rows:
                key = tuple(row[p] for p in pos)
                out[(tc.table, kind, key)] = client.execute(
                    f'SELECT "__sysChangeTxBsn" FROM {tc.table} WHERE {where}',
                    key).fetchone()[0]
        for key in tc.deletes:
            out[(tc.table, "delete", tuple(key))] = client.execute(
                "SELECT max(__sysDeleteTxBsn) FROM __sysOCSDeletedRows WHERE __sysTName = ? "
                f"AND __sysRK = sqlite_ct_pack_key({', '.join('?' for _ in key)}) "
                "AND __sysDeleteTxBsn > ?", (tc.table, *key, since)).fetchone()[0]
    return out


OP = st.tuples(st.sampled_from(["insert", "replace", "update", "delete", "rekey"]),
               st.sampled_from(NAMES), st.integers(0, 5),
               st.one_of(st.integers(0, 3), st.text(max_size=2)), st.integers(0, 5))
HISTORY = st.lists(st.lists(OP, min_size=1, max_size=4), max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(before=HISTORY, after=HISTORY, size=st.one_of(st.none(), st.integers(1, 6)))
# A REPLACE of a key the hub has in a transaction that also wrote another
# table: its delete, sent as the insert alone, is left out of its table's
# count only.
@example(before=[[("insert", "a", 0, 0, 0)]],
         after=[[("insert", "a", 1, 0, 0)],
                [("insert", "b", 0, 0, 0), ("replace", "a", 0, 0, 0)]], size=2)
def test_batches_are_runs_of_whole_transactions(tmp_path_factory, before, after, size):
    tmp_path = tmp_path_factory.mktemp("batches")
    hub, client, provider, agent = _setup(tmp_path)
    try:
        _run(client, before)
        agent.synchronize()                      # what the hub holds: the starting state
        start = {n: _rows(client, n) for n in NAMES}
        _run(client, after)
        tables = GROUP
        expected = provider.get_changes(tables)
        with provider.stream_changes(tables) as stream:
            batches = list(stream.batches(size))
        assert stream.new_anchor == expected.new_anchor
        assert stream.total == len(expected)

        # Each change carries the transaction that last changed its row.
        want = _change_bsns(client, provider, expected)
        got = {}
        for tc in expected.tables:
            pos = [tc.columns.index(k) for k in tc.key_columns]
            for t, kind, r, tx in _flat([tc]):
                key = tuple(r) if kind == "delete" else tuple(r[p] for p in pos)
                got[(t, kind, key)] = tx
        assert got == want

        # Whole transactions, in BSN order, at most `size` changes each; a
        # transaction of more than `size` changes travels in consecutive
        # batches of its own.
        where: Dict[int, set] = {}
        sizes: Dict[int, int] = {}
        for tc in expected.tables:
            for tx in tc.transactions:
                sizes[tx] = sizes.get(tx, 0) + 1
        # The keys inserted and deleted again come first, in batches of
        # their own of at most `size` keys.
        own = [b for b in batches if not any(len(tc) for tc in b)]
        assert batches[:len(own)] == own
        sent_own = sorted((tc.table, k) for b in batches for tc in b for k in tc.own_deletes)
        assert sent_own == sorted((tc.table, k) for tc in expected.tables
                                  for k in tc.own_deletes)
        if size is not None:
            assert all(sum(len(tc.own_deletes) for tc in b) <= size for b in own)
            assert sent_own == sorted((tc.table, k) for b in own for tc in b
                                      for k in tc.own_deletes)
        changing = batches[len(own):]
        for i, batch in enumerate(changing):
            flat = _flat(batch)
            assert flat, "an empty batch"
            txns = {tx for *_, tx in flat}
            for tx in txns:
                where.setdefault(tx, set()).add(i)
            if size is not None:
                assert len(flat) <= size, (size, len(flat), txns)
            if i:
                before_max = max(tx for *_, tx in _flat(changing[i - 1]))
                assert min(txns) >= before_max
                if min(txns) == before_max:             # a transaction cut in parts
                    assert txns == {before_max} and sizes[before_max] > size
        for tx, found in where.items():
            assert len(found) == 1 or (size is not None and sizes[tx] > size and
                                       found == set(range(min(found), max(found) + 1))), \
                (tx, found)
        assert sorted(where) == sorted({tx for tc in expected.tables for tx in tc.transactions})

        # Together they are get_changes(), cut as upload_batches() cuts it.
        assert sorted(c for b in batches for c in _flat(b)) == sorted(
            c for tc in expected.tables for c in _flat([tc]))
        assert batches == upload_batches(expected.tables, size)

        # Applied one after another to the starting state: the client's state.
        replica = sqlite3.connect(":memory:")
        for sql in TABLES.values():
            replica.execute(sql)
        for n in NAMES:
            for row in start[n]:
                replica.execute(f"INSERT INTO {n} VALUES ({', '.join('?' for _ in row)})", row)
        for batch in batches:
            _apply(replica, batch)
        assert {n: _rows(replica, n) for n in NAMES} == {n: _rows(client, n) for n in NAMES}

        # And a real sync in those batches: no conflict, the hub converges.
        agent.upload_batch_size = size
        stats = agent.synchronize()
        assert (stats.upload_changes_failed, stats.conflicts) == (0, [])
        for n in NAMES:
            assert _rows(hub, n) == _rows(client, n)
    finally:
        client.close()
        hub.close()


def _csn(conn: Any) -> int:
    return sqlite_ct.last_committed_csn(conn)


@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
def test_a_row_inserted_in_one_window_and_updated_in_a_later_one_uploads_as_an_insert(
        tmp_path, host):
    hub, client, provider, agent = _setup(tmp_path, host)
    try:
        client.execute("INSERT INTO a(id, v) VALUES (1, 'first')")
        t1 = _csn(client)
        client.execute("INSERT INTO a(id, v) VALUES (2, 'x'), (3, 'y')")
        client.execute("UPDATE a SET v = 'second' WHERE id = 1")
        t3 = _csn(client)
        assert t3 == t1 + 2
        tables = GROUP
        with provider.stream_changes(tables) as stream:
            assert stream.windows(2) == [t1 + 1, t3]
            batches = list(stream.batches(2))
        # Row 1 was inserted in the first window, (start, t1 + 1], and its
        # change belongs to t3, the transaction that last changed it; the hub
        # never had it, so it is an insert (as an update, classified against
        # the window's start, it would be a ClientUpdateServerDelete conflict).
        assert batches == [
            [TableChanges("a", ("id", "v"), ("id",), inserts=[(2, "x"), (3, "y")],
                          transactions=[t1 + 1, t1 + 1])],
            [TableChanges("a", ("id", "v"), ("id",), inserts=[(1, "second")],
                          transactions=[t3])]]
        agent.upload_batch_size = 2
        stats = agent.synchronize()
        assert (stats.upload_changes_applied, stats.upload_changes_failed) == (3, 0)
        assert _rows(hub, "a") == [(1, "second"), (2, "x"), (3, "y")]
    finally:
        client.close()
        hub.close()


@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
def test_a_key_deleted_again_in_a_later_window_is_one_delete(tmp_path, host):
    """A key the hub has, deleted (t1), inserted again (t2) and deleted again
    (t3): one delete, of t3, in t3's window only. (Each window reads the
    key's tombstones of the whole session: a window that ended at its own
    bound would also see t1's tombstone as the key's newest and send the
    delete twice.)"""
    hub, client, provider, agent = _setup(tmp_path, host)
    try:
        client.execute("INSERT INTO a(id, v) VALUES (1, 'a'), (2, 'b')")
        agent.synchronize()
        client.execute("DELETE FROM a WHERE id = 1")
        t1 = _csn(client)
        client.execute("INSERT INTO a(id, v) VALUES (1, 'again')")
        client.execute("UPDATE a SET v = 'c' WHERE id = 2")
        client.execute("DELETE FROM a WHERE id = 1")
        t3 = _csn(client)
        tables = GROUP
        assert provider.get_changes(tables).tables[0] == TableChanges(
            "a", ("id", "v"), ("id",), deletes=[(1,)], updates=[(2, "c")],
            transactions=[t3, t1 + 2])
        with provider.stream_changes(tables) as stream:
            assert stream.windows(1) == [t1 + 2, t3]
            batches = list(stream.batches(1))
        assert batches == [
            [TableChanges("a", ("id", "v"), ("id",), updates=[(2, "c")], transactions=[t1 + 2])],
            [TableChanges("a", ("id", "v"), ("id",), deletes=[(1,)], transactions=[t3])]]
        agent.upload_batch_size = 1
        stats = agent.synchronize()
        assert (stats.upload_changes_applied, stats.upload_changes_failed) == (2, 0)
        assert _rows(hub, "a") == [(2, "c")]
    finally:
        client.close()
        hub.close()


def test_a_key_deleted_and_inserted_again_in_a_later_window_is_the_insert_alone(tmp_path):
    """A REPLACE spread over two windows: the delete (t1) is dropped, the
    insert travels in its own transaction's window as an upsert; t1, left
    with nothing to send, makes no batch."""
    hub, client, provider, agent = _setup(tmp_path)
    try:
        client.execute("INSERT INTO a(id, v) VALUES (1, 'a')")
        agent.synchronize()
        client.execute("DELETE FROM a WHERE id = 1")
        t1 = _csn(client)
        client.execute("INSERT INTO c(k, v) VALUES ('x', 1)")
        client.execute("INSERT INTO a(id, v) VALUES (1, 'back')")
        tables = GROUP
        with provider.stream_changes(tables) as stream:
            assert stream.windows(1) == [t1 + 1, t1 + 2]
            batches = list(stream.batches(1))
        assert batches == [
            [TableChanges("c", ("k", "v"), ("k",), inserts=[("x", 1)], transactions=[t1 + 1])],
            [TableChanges("a", ("id", "v"), ("id",), inserts=[(1, "back")],
                          transactions=[t1 + 2])]]
        agent.upload_batch_size = 1
        stats = agent.synchronize()
        assert (stats.upload_changes_applied, stats.upload_changes_failed) == (2, 0)
        assert _rows(hub, "a") == [(1, "back")]
    finally:
        client.close()
        hub.close()


def test_a_transaction_larger_than_the_batch_size_travels_in_parts_of_its_own(tmp_path):
    """Memory and the hub's write lock follow upload_batch_size whatever the
    client's transactions: a transaction larger than it is sent in parts of
    at most that size, each holding that transaction only (each part is
    applied whole)."""
    hub, client, provider, agent = _setup(tmp_path)
    try:
        client.execute("INSERT INTO a(id, v) VALUES (1, 'one')")
        client.execute("BEGIN")
        client.execute("INSERT INTO a(id, v) VALUES (10, 'big'), (11, 'big'), (12, 'big'), "
                       "(13, 'big'), (14, 'big')")
        client.execute("INSERT INTO c(k, v) VALUES ('big', 1)")
        client.execute("COMMIT")
        client.execute("INSERT INTO c(k, v) VALUES ('after', 2)")
        sizes = []
        server = agent.server
        apply = server.apply_changes

        def counting(upload):
            sizes.append([(tc.table, len(tc), sorted(set(tc.transactions)))
                          for tc in upload.tables])
            return apply(upload)
        server.apply_changes = counting
        agent.upload_batch_size = 3
        agent.synchronize()
        big = sizes[1][0][2]
        assert sizes == [[("a", 1, [big[0] - 1])], [("a", 3, big)], [("a", 2, big), ("c", 1, big)],
                         [("c", 1, [big[0] + 1])]]
        for n in NAMES:
            assert _rows(hub, n) == _rows(client, n)
    finally:
        client.close()
        hub.close()


def test_windows_are_taken_in_order_once(tmp_path):
    hub, client, provider, agent = _setup(tmp_path)
    try:
        client.execute("INSERT INTO a(id, v) VALUES (1, 'x')")
        t1 = _csn(client)
        client.execute("INSERT INTO a(id, v) VALUES (2, 'y')")
        with provider.stream_changes(GROUP) as stream:
            assert [len(tc) for tc in stream.window(t1)] == [1, 0, 0]
            with pytest.raises(ValueError, match="windows are taken in BSN order, once"):
                stream.window(t1)
            assert [len(tc) for tc in stream.window(None)] == [1, 0, 0]
            with pytest.raises(ValueError, match="windows are taken in BSN order, once"):
                stream.window(None)
    finally:
        client.close()
        hub.close()


def test_keys_inserted_and_deleted_again_go_first_in_batches_of_their_own(tmp_path):
    hub, client, provider, agent = _setup(tmp_path)
    try:
        for k in range(5):
            client.execute("INSERT INTO a(id, v) VALUES (?, 'tmp')", (100 + k,))
            client.execute("DELETE FROM a WHERE id = ?", (100 + k,))
        client.execute("INSERT INTO a(id, v) VALUES (1, 'kept')")
        with provider.stream_changes(GROUP) as stream:
            batches = list(stream.batches(2))
        assert [[(tc.table, len(tc), tc.own_deletes) for tc in b] for b in batches] == [
            [("a", 0, [(100,), (101,)])], [("a", 0, [(102,), (103,)])], [("a", 0, [(104,)])],
            [("a", 1, [])]]
        # Nothing else to upload: the own deletes still go (a sync of them
        # alone), and change nothing on a hub that never had those rows.
        agent.synchronize()
        for n in NAMES:
            assert _rows(hub, n) == _rows(client, n)
    finally:
        client.close()
        hub.close()
