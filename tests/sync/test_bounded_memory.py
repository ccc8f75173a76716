"""A sync's memory follows its batch sizes, not the number of changes: the
client's changes are read batch by batch from one snapshot, in runs of whole
client transactions (cut exactly as upload_batches cuts them all), and a
default SyncAgent downloads in batches."""
from __future__ import annotations

import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent, SyncTable
from sqlite_ct.sync.agent import upload_batches

from .conftest import connect, user_rows

ROWS = 100_000
FILL = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) "
        "INSERT INTO t(id, v) SELECT i, printf('%0200d', i) FROM n")
FILL_FROM = ("WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
             "INSERT INTO t(id, v) SELECT i, printf('%0200d', i) FROM n")
# Every changed row as a Python tuple (int, 200-character str) takes well over
# 250 bytes; all of them at once would be more than this many bytes.
ALL_ROWS = ROWS * 250


def _peak(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_an_upload_holds_one_batch_of_changes_at_a_time(conns):
    hub = conns()
    hub.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    server = ServerSyncProvider(hub)
    client = conns()
    agent = SyncAgent(ClientSyncProvider(client), server, ["t"], upload_batch_size=1000)
    agent.synchronize()
    for first in range(1, ROWS + 1, 250):   # client transactions of 250 rows, 4 per batch
        client.execute(FILL_FROM, (first, first + 249))
    sizes = []
    apply = server.apply_changes

    def counting(upload):
        sizes.append(sum(len(tc) for tc in upload.tables))
        return apply(upload)
    server.apply_changes = counting
    peak = _peak(agent.synchronize)
    assert sizes == [1000] * (ROWS // 1000)
    assert hub.execute("SELECT count(*) FROM t").fetchone()[0] == ROWS
    # Reading all the changes first held every row at once (more than ALL_ROWS).
    assert peak < ALL_ROWS / 4, (peak, ALL_ROWS)   # 1000 rows: about 3 MB


def test_a_default_agent_downloads_in_batches_of_bounded_memory(conns):
    hub = conns()
    hub.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    hub.execute(FILL.format(n=ROWS))
    server = ServerSyncProvider(hub)
    client = conns()
    agent = SyncAgent(ClientSyncProvider(client), server, ["t"])
    assert agent.batch_size == 10_000
    stats = []
    peak = _peak(lambda: stats.append(agent.synchronize()))
    assert stats[0].download_batches == ROWS // 10_000 + 1   # the last one says "no more"
    assert client.execute("SELECT count(*) FROM t").fetchone()[0] == ROWS
    assert peak < ALL_ROWS / 2, (peak, ALL_ROWS)   # 10,000 rows: about 7 MB


TABLES = ("CREATE TABLE a(id INTEGER PRIMARY KEY, v)",
          "CREATE TABLE b(x TEXT, y INTEGER, v, PRIMARY KEY(y, x)) WITHOUT ROWID")
OPS = st.lists(st.tuples(st.sampled_from(["insert", "replace", "update", "delete"]),
                         st.sampled_from(["a", "b"]), st.integers(0, 6),
                         st.one_of(st.integers(0, 3), st.text(max_size=2))),
               max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=OPS, after=OPS, size=st.one_of(st.none(), st.integers(1, 7)))
def test_streamed_batches_are_the_batches_of_all_the_changes(before, after, size):
    """Whatever the changes (deletes, keys deleted and inserted again, values
    of any type), the streamed batches are upload_batches of get_changes."""
    def run(conn, ops):
        for op, table, k, v in ops:
            key = {"a": "id = ?", "b": "x = 'k' || ? AND y = ?"}[table]
            kp = (k,) if table == "a" else (k, k)
            if op in ("insert", "replace"):
                verb = "INSERT OR IGNORE" if op == "insert" else "INSERT OR REPLACE"
                row = ("(id, v) VALUES (?, ?)", (k, v)) if table == "a" else \
                    ("(x, y, v) VALUES ('k' || ?, ?, ?)", (k, k, v))
                conn.execute(f"{verb} INTO {table}{row[0]}", row[1])
            elif op == "update":
                conn.execute(f"UPDATE {table} SET v = ? WHERE {key}", (v, *kp))
            else:
                conn.execute(f"DELETE FROM {table} WHERE {key}", kp)

    hub, client = connect(), connect()
    try:
        for sql in TABLES:
            hub.execute(sql)
        tables = [SyncTable("a"), SyncTable("b")]
        provider = ClientSyncProvider(client)
        agent = SyncAgent(provider, ServerSyncProvider(hub), tables)
        agent.synchronize()
        run(client, before)
        agent.synchronize()                     # some rows are on the hub now
        run(client, after)
        expected = provider.get_changes(tables)
        with provider.stream_changes(tables) as stream:
            got = list(stream.batches(size))
        assert stream.new_anchor == expected.new_anchor
        assert got == upload_batches(expected.tables, size)
        assert stream.total == len(expected)
        agent.synchronize()
        assert user_rows(hub, "a") == user_rows(client, "a")
        assert user_rows(hub, "b") == user_rows(client, "b")
    finally:
        client.close()
        hub.close()
