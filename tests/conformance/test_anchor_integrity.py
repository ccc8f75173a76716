"""Anchors on both hubs: an anchor the hub did not issue (a flipped byte, a
forgery) and an anchor issued before the hub was restored from a backup get
ReinitialiseRequired, never a hang or skipped rows; SyncAgent.reinitialise()
then converges without losing the client's unsent changes."""
import pytest

from pg_fixtures import user_rows
from sqlite_ct.sync import ClientSyncProvider
from sqlite_ct.sync.errors import ReinitialiseRequired


def test_every_flipped_byte_of_an_anchor_is_refused(hub, client_of):
    hub.execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    hub.execute("INSERT INTO t (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    server = hub.server()
    server.provision("t")
    conn, agent = client_of(server, ["t"], batch_size=1)
    provider = agent.client
    assert isinstance(provider, ClientSyncProvider)
    first = server.get_changes(_request(provider, None))
    assert first.more            # an anchor with a window and a cursor
    agent.synchronize()
    hub.execute("INSERT INTO t (id, v) VALUES (4, 'd')")
    for anchor in (first.anchors["t"], provider.get_table_received_anchor("t")):
        for i in range(len(anchor)):
            bad = bytearray(anchor)
            bad[i] ^= 0x21
            provider.set_table_received_anchor("t", bytes(bad))
            with pytest.raises(ReinitialiseRequired) as info:
                agent.synchronize()
            assert info.value.table == "t"
            assert "reinitialise" in str(info.value)
    provider.set_table_received_anchor("t", anchor)
    agent.synchronize()
    assert user_rows(conn, "t") == hub.rows("t")


def _request(provider, anchor):
    from sqlite_ct.sync import DownloadRequest, DownloadTable
    return DownloadRequest(provider.client_id, "t", [DownloadTable("t", anchor)], 1, {}, None)


def test_a_hub_restored_from_an_older_backup(hub, client_of, tmp_path):
    hub.execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    hub.execute("INSERT INTO t (id, v) VALUES (1, 'backed up')")
    server = hub.server()
    conn, agent = client_of(server, ["t"])
    agent.synchronize()
    backup = hub.backup(str(tmp_path / "hub.backup"))
    hub.execute("INSERT INTO t (id, v) VALUES (2, 'after the backup')")
    agent.synchronize()
    assert user_rows(conn, "t") == [(1, "backed up"), (2, "after the backup")]
    conn.execute("INSERT INTO t (id, v) VALUES (10, 'unsent')")
    hub.restore(backup)
    hub.execute("INSERT INTO t (id, v) VALUES (3, 'after the restore')")
    with pytest.raises(ReinitialiseRequired) as info:
        agent.synchronize()
    assert info.value.table == "t"
    assert "restored" in str(info.value) and "SyncAgent.reinitialise" in str(info.value)
    agent.reinitialise()
    agent.synchronize()
    assert hub.rows("t") == [(1, "backed up"), (3, "after the restore"), (10, "unsent")]
    assert user_rows(conn, "t") == hub.rows("t")


def test_a_hub_restored_to_before_a_session_that_changed_nothing_tracked(hub, client_of,
                                                                          tmp_path):
    """A session after the backup only downloaded (the hub's tracked data did
    not change, so every anchor is still valid after the restore), but the
    hub recorded in it which keys of the filtered table the client holds.
    The restored hub lost that: without noticing, it would never send the
    client the delete of a key it downloaded then. The client's replica claim
    is ahead of the restored hub's record: the hub forgets the client's
    record, and the next download asks the client to reinitialise."""
    hub.execute("CREATE TABLE t (id integer PRIMARY KEY, owner text, v text)")
    hub.execute("INSERT INTO t (id, owner, v) VALUES (1, 'alice', 'a')")
    server = hub.server(filters={"t": "owner = :user"})
    conn, agent = client_of(server, ["t"], parameters={"user": "alice"})
    agent.synchronize()
    hub.execute("INSERT INTO t (id, owner, v) VALUES (2, 'alice', 'b')")
    backup = hub.backup(str(tmp_path / "hub.backup"))
    agent.synchronize()
    assert user_rows(conn, "t") == [(1, "alice", "a"), (2, "alice", "b")]
    hub.restore(backup)
    hub.execute("DELETE FROM t WHERE id = 2")
    with pytest.raises(ReinitialiseRequired) as info:
        agent.synchronize()
    assert info.value.table == "t" and "reinitialise" in str(info.value)
    agent.reinitialise()
    agent.synchronize()
    assert user_rows(conn, "t") == hub.rows("t") == [(1, "alice", "a")]


def test_an_anchor_of_another_table_and_a_tampered_session_are_refused(hub, client_of):
    from sqlite_ct.sync import DownloadRequest, DownloadTable, SyncError
    hub.execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    hub.execute("CREATE TABLE u (id integer PRIMARY KEY, v text)")
    hub.execute("INSERT INTO t (id, v) VALUES (1, 'a'), (2, 'b')")
    server = hub.server()
    server.provision("t")
    server.provision("u")
    conn, agent = client_of(server, ["t", "u"])
    agent.synchronize()
    provider = agent.client
    provider.set_table_received_anchor("u", provider.get_table_received_anchor("t"))
    with pytest.raises(ReinitialiseRequired) as info:
        agent.synchronize()
    assert info.value.table == "u"
    first = server.get_changes(_request(provider, None))
    assert first.more and first.session
    for i in range(len(first.session)):
        bad = bytearray(first.session)
        bad[i] ^= 0x21
        with pytest.raises(SyncError, match="malformed download session token"):
            server.get_changes(DownloadRequest(provider.client_id, "t", [
                DownloadTable("t", first.anchors["t"])], 1, {}, bytes(bad)))
