"""The anchor marks of the PostgreSQL hub (sqlite_ct/sync/pg/_marks.py): what
a sync writes, which snapshot a client with nothing new keeps, how marks are
pruned, and the anchors of hubs from before marks (version 2)."""
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pg_fixtures import sqlite_client, user_rows
from sqlite_ct.sync import ClientSyncProvider, SyncAgent
from sqlite_ct.sync.errors import ReinitialiseRequired
from sqlite_ct.sync.pg import _marks
from sqlite_ct.sync.pg._anchor import HubKey, PgAnchor


def _marks_count(pg_exec):
    return pg_exec("SELECT count(*) FROM sqlite_ct.anchor_marks")[0][0]


def _key(pg_exec):
    sid, lineage, secret = pg_exec("SELECT server_id, lineage, secret FROM sqlite_ct.hub_info")[0]
    return HubKey(sid.bytes, lineage.bytes, bytes(secret))


def _anchor(pg_exec, provider, table="t"):
    return PgAnchor.decode(provider.get_table_received_anchor(table), table, _key(pg_exec))


def _setup(pg_exec, pg_provider, *tables):
    for t in tables or ("t",):
        pg_exec(f"CREATE TABLE {t} (id integer PRIMARY KEY, v text)")
        pg_exec(f"INSERT INTO {t} VALUES (1, 'a')")
    server = pg_provider()
    client = sqlite_client()
    provider = ClientSyncProvider(client)
    agent = SyncAgent(provider, server, list(tables or ("t",)))
    agent.synchronize()
    return server, client, provider, agent


def test_a_sync_with_nothing_new_writes_no_mark(pg_exec, pg_provider):
    server, client, provider, agent = _setup(pg_exec, pg_provider)
    before = _marks_count(pg_exec)
    first = _anchor(pg_exec, provider)
    for _ in range(3):
        agent.synchronize()
    assert _marks_count(pg_exec) == before
    assert _anchor(pg_exec, provider).mark == first.mark
    # Changes: one mark per download that moves the anchor, at most.
    pg_exec("INSERT INTO t VALUES (2, 'b')")
    agent.synchronize()
    assert _marks_count(pg_exec) == before + 1
    moved = _anchor(pg_exec, provider)
    assert moved.mark != first.mark and moved.complete != first.complete
    assert user_rows(client, "t") == [(1, "a"), (2, "b")]


def test_a_stale_newest_mark_is_renewed_by_the_next_sync(pg_exec, pg_provider):
    """A client with nothing new moves to a new mark once the newest is
    older than REFRESH_SECONDS (so the snapshots clients hold keep moving)."""
    server, client, provider, agent = _setup(pg_exec, pg_provider)
    before = _marks_count(pg_exec)
    first = _anchor(pg_exec, provider)
    pg_exec("UPDATE sqlite_ct.anchor_marks SET made_at = made_at - make_interval(secs => %s)",
            (_marks.REFRESH_SECONDS + 1,))
    agent.synchronize()
    assert _marks_count(pg_exec) == before + 1
    renewed = _anchor(pg_exec, provider)
    assert renewed.mark[0] > first.mark[0]
    agent.synchronize()                                 # fresh again: nothing written
    assert _marks_count(pg_exec) == before + 1


def test_a_quiet_table_follows_the_newest_mark_and_does_not_expire(pg_dsn, pg_exec,
                                                                   pg_provider):
    """A client whose table has nothing new takes the newest mark's snapshot,
    so a transaction that was running at its last real change does not hold
    its anchor back: a tombstone purged later does not expire it."""
    server, client, provider, agent = _setup(pg_exec, pg_provider, "t", "u")
    long = psycopg.connect(pg_dsn)
    long.execute("INSERT INTO u VALUES (100, 'running')")      # has an id, holds xmin back
    pg_exec("DELETE FROM t WHERE id = 1")
    agent.synchronize()
    held_back = _anchor(pg_exec, provider)
    long.commit()
    long.close()
    # Another client moves the newest mark past the long transaction.
    other = sqlite_client()
    SyncAgent(ClientSyncProvider(other), server, ["u"]).synchronize()
    assert user_rows(other, "u") == [(1, "a"), (100, "running")]
    agent.synchronize()                 # brings u's row; t has nothing new
    quiet = _anchor(pg_exec, provider)
    assert int(quiet.complete.split(":")[0]) > int(held_back.complete.split(":")[0])
    assert server.purge_tombstones("t", older_than_days=0) == 1
    agent.synchronize()                 # not ReinitialiseRequired
    pg_exec("INSERT INTO t VALUES (2, 'b')")
    agent.synchronize()
    assert user_rows(client, "t") == [(2, "b")]


def test_marks_are_pruned_with_the_tombstones(pg_exec, pg_provider):
    server, client, provider, agent = _setup(pg_exec, pg_provider)
    for i in range(2, 7):
        pg_exec("INSERT INTO t VALUES (%s, 'x')", (i,))
        pg_exec("DELETE FROM t WHERE id = %s", (i - 1,))
        agent.synchronize()
    first, newest = pg_exec("SELECT min(id), max(id) FROM sqlite_ct.anchor_marks")[0]
    count = _marks_count(pg_exec)
    assert count >= 6
    assert server.purge_tombstones("t", older_than_days=0) == 5
    assert pg_exec("SELECT id FROM sqlite_ct.anchor_marks ORDER BY id") == [(first,), (newest,)]
    # The client's anchor (the newest mark) is still served.
    pg_exec("INSERT INTO t VALUES (10, 'y')")
    agent.synchronize()
    assert user_rows(client, "t") == [(6, "x"), (10, "y")]


def test_marks_stay_while_a_table_has_purged_nothing(pg_exec, pg_provider):
    """Anchors of a table whose tombstones were never purged never expire,
    and they may carry any mark: none is pruned."""
    server, client, provider, agent = _setup(pg_exec, pg_provider, "t", "u")
    for i in range(2, 5):
        pg_exec("INSERT INTO t VALUES (%s, 'x')", (i,))
        pg_exec("DELETE FROM t WHERE id = %s", (i - 1,))
        agent.synchronize()
    count = _marks_count(pg_exec)
    assert server.purge_tombstones("t", older_than_days=0) == 3
    assert _marks_count(pg_exec) == count


def _version_2(blob, table, key):
    """`blob` re-signed as a hub before marks issued it (version 2)."""
    from sqlite_ct.sync._anchor import _mac
    body = blob[:-16]
    head = 4 + 1 + 16 + 16 + 8
    body = body[:4] + bytes([2]) + body[5:head] + body[head + 16:]
    return body + _mac(key.secret, table, body)


def test_anchors_from_before_marks_are_served_once_and_upgraded(pg_exec, pg_provider):
    """A hub upgraded to marks: sqlite_ct.anchor_marks is made with its first
    mark, which every anchor issued before covers; such an anchor is served
    (nothing lost) and the client gets a marked one back."""
    server, client, provider, agent = _setup(pg_exec, pg_provider)
    key = _key(pg_exec)
    old = _version_2(provider.get_table_received_anchor("t"), "t", key)
    pg_exec("DROP TABLE sqlite_ct.anchor_marks")           # the hub before marks
    provider.set_table_received_anchor("t", old)
    pg_exec("INSERT INTO t VALUES (2, 'b')")
    agent.synchronize()                                 # the first call makes the table
    assert user_rows(client, "t") == [(1, "a"), (2, "b")]
    assert _key(pg_exec) == key                         # no new lineage
    upgraded = _anchor(pg_exec, provider)
    assert upgraded.mark[0] and not upgraded.legacy
    # An anchor of an older version issued after that (a service process
    # left on the old version) is refused, and the client recovers.
    provider.set_table_received_anchor("t", _version_2(
        provider.get_table_received_anchor("t"), "t", key))
    client.execute("INSERT INTO t (id, v) VALUES (3, 'unsent')")
    with pytest.raises(ReinitialiseRequired, match="older version of sqlite-ct"):
        agent.synchronize()
    agent.reinitialise()
    assert user_rows(client, "t") == pg_exec("SELECT * FROM t ORDER BY id") == [
        (1, "a"), (2, "b"), (3, "unsent")]


def test_a_missing_mark_refuses_an_upload_under_that_anchor(pg_exec, pg_provider):
    """An upload under an anchor whose mark the hub lacks (a restored hub) is
    refused (SyncAgent then uploads without trusting the anchor), and the
    download asks for reinitialisation."""
    from sqlite_ct.sync import Upload
    server, client, provider, agent = _setup(pg_exec, pg_provider)
    mark = _anchor(pg_exec, provider).mark
    pg_exec("DELETE FROM sqlite_ct.anchor_marks WHERE id = %s", (mark[0],))
    upload = Upload(provider.client_id, "t", [], {"t": provider.get_table_received_anchor("t")})
    with pytest.raises(ReinitialiseRequired, match="restored from a backup"):
        server.apply_changes(upload)
    with pytest.raises(ReinitialiseRequired, match="restored from a backup"):
        agent.synchronize()
    agent.reinitialise()
    assert user_rows(client, "t") == [(1, "a")]


def _snap(xmin, span, xs):
    return f"{xmin}:{xmin + span}:" + ",".join(str(xmin + x) for x in sorted(xs) if x < span)


SNAPS = st.builds(_snap, st.integers(3, 40), st.integers(0, 12), st.sets(st.integers(0, 11)))


def _visible(x, snap):
    xmin, xmax, xip = snap.split(":")
    return x < int(xmin) or (x < int(xmax) and str(x) not in xip.split(","))


@given(SNAPS, SNAPS)
def test_contains_is_sound(outer, inner):
    if _marks.contains(outer, inner):
        assert all(_visible(x, outer) for x in range(1, 60) if _visible(x, inner))
    assert _marks.contains(inner, inner)


def test_a_quiet_table_never_takes_a_mark_past_its_sessions_snapshot(pg_exec, pg_provider):
    """In a batched download, a table with nothing new up to the session's
    snapshot does not take a newer mark's snapshot (written by another client
    meanwhile): a change between the two would be skipped."""
    from sqlite_ct.sync import DownloadRequest, DownloadTable
    server, client, provider, agent = _setup(pg_exec, pg_provider, "t", "u")
    pg_exec("INSERT INTO u VALUES (2, 'b'), (3, 'c')")
    agent.synchronize()
    anchors = {t: provider.get_table_received_anchor(t) for t in ("t", "u")}
    # Tombstones go first, the last table's first: u's fill the first
    # batches, and t's window opens only after the other client's mark.
    pg_exec("DELETE FROM u")

    def batch(session):
        got = server.get_changes(DownloadRequest(provider.client_id, "g", [
            DownloadTable(t, anchors[t]) for t in ("t", "u")], 1, {}, session))
        anchors.update(got.anchors)
        return got

    first = batch(None)
    assert first.more
    pg_exec("INSERT INTO t VALUES (2, 'after the session began')")
    other = sqlite_client()
    SyncAgent(ClientSyncProvider(other), server, ["t"]).synchronize()   # a newer mark
    session = first.session
    while True:
        got = batch(session)
        session = got.session
        if not got.more:
            break
    later = server.get_changes(DownloadRequest(provider.client_id, "g", [
        DownloadTable("t", anchors["t"])], None, {}, None))
    assert [row[0] for tc in later.tables for row in tc.inserts + tc.updates] == [2]
