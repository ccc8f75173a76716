"""Received anchors are opaque hub blobs with a MAC and bounds: a corrupt,
forged or replayed anchor, and an anchor from before a hub restore, get a
ReinitialiseRequired error, never a hang or silently skipped rows."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct

import pytest

from sqlite_ct.sync import (DownloadRequest, DownloadTable, ReinitialiseRequired,
                            ServerSyncProvider, SyncError)

from .conftest import Client, connect, user_rows

SCHEMA = "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
SEED = ("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b')",)
HEAD = struct.Struct(">4sB16s8sqqB")


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging: the hub used to loop for ever on a bad anchor."""
    def on_alarm(signum, frame):
        raise TimeoutError("the server did not answer (infinite loop?)")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def batched_client(conns, hub_with, rows=50):
    hub, server = hub_with(SCHEMA, seed=())
    server.provision("t")
    hub.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO t(id, v) SELECT i, 'v' || i FROM n", (rows,))
    x = Client(conns(), server, ["t"], batch_size=10)
    return hub, server, x


def request(x, anchor, session=None, batch_size=None):
    return DownloadRequest(x.provider.client_id, "t", [DownloadTable("t", anchor)],
                           batch_size, {}, session)


def test_a_flipped_byte_anywhere_is_refused_without_hanging(conns, hub_with):
    hub, server, x = batched_client(conns, hub_with)
    first = server.get_changes(request(x, None, batch_size=10))
    anchor = first.anchors["t"]
    assert first.more and len(anchor) > HEAD.size  # a window with a cursor
    for i in range(len(anchor)):
        bad = bytearray(anchor)
        bad[i] ^= 0x40
        with deadline(5), pytest.raises(ReinitialiseRequired) as info:
            server.get_changes(request(x, bytes(bad)))
        assert info.value.table == "t"
        assert "reinitialise the table" in str(info.value)


def test_a_forged_phase_is_refused(conns, hub_with):
    """Phase 7 used to make the hub step through phases for ever."""
    hub, server, x = batched_client(conns, hub_with)
    anchor = bytearray(server.get_changes(request(x, None, batch_size=10)).anchors["t"])
    phase_at = HEAD.size + 8 * 3 + 1
    anchor[phase_at] = 7
    with deadline(5), pytest.raises(ReinitialiseRequired) as info:
        server.get_changes(request(x, bytes(anchor)))
    assert str(info.value) == ('sqlite-ct sync: the received anchor of table "t" is corrupt '
                               "or forged (its MAC does not match this hub's); reinitialise "
                               "the table")


def test_a_forged_complete_above_the_hub_does_not_skip_rows(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    x = Client(conns(), server, ["t"])
    x.sync()
    anchor = bytearray(x.provider.get_table_received_anchor("t"))
    struct.pack_into(">q", anchor, 4 + 1 + 16 + 8, 10**9)
    x.provider.set_table_received_anchor("t", bytes(anchor))
    hub.execute("INSERT INTO t(id, v) VALUES (3, 'c')")
    with pytest.raises(ReinitialiseRequired):
        x.sync()
    assert user_rows(x.conn, "t") == [(1, "a"), (2, "b")]


def test_an_anchor_of_another_table_is_refused(conns, hub_with):
    hub, server = hub_with(SCHEMA, seed=SEED)
    hub.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)")
    x = Client(conns(), server, ["t", "u"])
    x.sync()
    x.provider.set_table_received_anchor("u", x.provider.get_table_received_anchor("t"))
    with pytest.raises(ReinitialiseRequired) as info:
        x.sync()
    assert info.value.table == "u"


def test_a_tampered_session_token_is_refused(conns, hub_with):
    hub, server, x = batched_client(conns, hub_with)
    first = server.get_changes(request(x, None, batch_size=10))
    token = bytearray(first.session)
    struct.pack_into(">q", token, 4, 10**9)
    with deadline(5), pytest.raises(SyncError) as info:
        server.get_changes(request(x, first.anchors["t"], bytes(token), 10))
    assert str(info.value) == ("sqlite-ct sync: malformed download session token; start the "
                               "download again (session=None)")


def test_the_secret_lives_in_the_hub_database(conns, hub_with, tmp_path):
    """Two providers over the same hub file accept each other's anchors."""
    path = str(tmp_path / "hub.db")
    hub = connect(path)
    hub.execute(SCHEMA)
    hub.execute(SEED[0])
    x = Client(conns(), ServerSyncProvider(hub), ["t"])
    x.sync()
    hub.execute("INSERT INTO t(id, v) VALUES (3, 'c')")
    other = connect(path)
    x.agent.server = ServerSyncProvider(other)
    assert x.sync().total_changes_downloaded == 1
    assert user_rows(x.conn, "t") == user_rows(hub, "t")


# -- a hub restored from an older backup ---------------------------------------

def restored_hub(conns, tmp_path, writes_after_restore):
    """A client synced past a hub backup; the hub is restored from it, then
    takes `writes_after_restore` transactions. Returns (hub conn, client)."""
    path = str(tmp_path / "hub.db")
    hub = connect(path)
    hub.execute(SCHEMA)
    hub.execute(SEED[0])
    x = Client(conns(), ServerSyncProvider(hub), ["t"])
    x.sync()
    hub.close()
    shutil.copy(path, path + ".bak")
    hub = connect(path)
    for i in range(3):
        hub.execute("INSERT INTO t(id, v) VALUES (?, 'lost')", (10 + i,))
    x.agent.server = ServerSyncProvider(hub)
    x.sync()
    assert len(user_rows(x.conn, "t")) == 5
    hub.close()
    os.replace(path + ".bak", path)
    hub = connect(path)
    for i in range(writes_after_restore):
        hub.execute("INSERT INTO t(id, v) VALUES (?, 'new')", (20 + i,))
    x.agent.server = ServerSyncProvider(hub)
    return hub, x


@pytest.mark.parametrize("writes", [1, 5])
def test_an_anchor_from_before_a_hub_restore_is_refused(conns, tmp_path, writes):
    """With 1 write the anchor is above the hub's newest CSN; with 5 the hub
    reused the anchor's CSN for another transaction (another commit time)."""
    hub, x = restored_hub(conns, tmp_path, writes)
    with pytest.raises(ReinitialiseRequired) as info:
        x.sync()
    assert "the hub was restored from an older backup or replaced" in str(info.value)
    hub.close()

