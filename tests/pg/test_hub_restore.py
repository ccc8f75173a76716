"""A PostgreSQL hub restored from a backup (pg_dump restored into another
database, or over the hub's own schema) is recognised from the anchors its
clients hold, whatever its transaction ids do: the clients get
ReinitialiseRequired, and SyncAgent.reinitialise() converges without losing
their unsent changes. Anchors the hub did not issue are refused the same way."""
import os
import subprocess

import pytest

import pg_cluster
from pg_fixtures import sqlite_client, user_rows
from sqlite_ct.sync import ClientSyncProvider, SyncAgent
from sqlite_ct.sync.errors import ReinitialiseRequired


def _bin(name):
    bin_dir = pg_cluster.find_bin_dir()
    if bin_dir is None:
        pytest.skip("needs the server binaries (pg_dump, pg_restore)")
    return os.path.join(bin_dir, name)


def _hub_with_a_client_past_a_backup(pg_exec, pg_provider, pg_dsn, tmp_path):
    """A client that synced after the hub's backup was taken, with a local
    change not sent yet. Returns (provider, client, agent, dump file)."""
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    pg_exec("INSERT INTO t VALUES (1, 'backed up')")
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["t"])
    agent.synchronize()
    dump = tmp_path / "hub.dump"
    subprocess.run([_bin("pg_dump"), "-Fc", "-f", str(dump), pg_dsn], check=True)
    pg_exec("INSERT INTO t VALUES (2, 'after the backup')")
    agent.synchronize()
    assert user_rows(client, "t") == [(1, "backed up"), (2, "after the backup")]
    client.execute("INSERT INTO t (id, v) VALUES (10, 'unsent')")
    return server, client, agent, dump


def _refused_then_reinitialised(agent, client, rows):
    with pytest.raises(ReinitialiseRequired) as info:
        agent.synchronize()
    assert info.value.table == "t"
    assert ('anchor of table "t" was issued by an earlier generation of this hub'
            in str(info.value))
    assert "SyncAgent.reinitialise()" in str(info.value)
    assert user_rows(client, "t")[-1] == (10, "unsent")
    agent.reinitialise()
    agent.synchronize()
    hub_rows = rows()
    assert (10, "unsent") in hub_rows
    assert user_rows(client, "t") == hub_rows


def test_a_dump_restored_into_another_database_of_the_cluster(
        pg_exec, pg_provider, pg_dsn, pg_server, tmp_path):
    """The restored database shares the cluster's transaction ids, which are
    ahead of every anchor: only the lineage tells the restore apart."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from sqlite_ct.sync.pg import PostgresServerProvider
    server, client, agent, dump = _hub_with_a_client_past_a_backup(
        pg_exec, pg_provider, pg_dsn, tmp_path)
    name = f"sqlite_ct_restored_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_dsn)
    params["dbname"] = name
    restored = make_conninfo(**params)
    dumped_marks = set(pg_exec("SELECT id, token FROM sqlite_ct.anchor_marks"))
    try:
        subprocess.run([_bin("pg_restore"), "-d", restored, str(dump)], check=True)
        with psycopg.connect(restored, autocommit=True) as conn, \
                PostgresServerProvider(restored, max_connections=2) as other:
            conn.execute("INSERT INTO t VALUES (3, 'after the restore')")
            assert other.server_id == server.server_id
            agent.server = other
            _refused_then_reinitialised(
                agent, client, lambda: conn.execute("SELECT * FROM t ORDER BY id").fetchall())
            assert user_rows(client, "t") == [(1, "backed up"), (3, "after the restore"),
                                              (10, "unsent")]
            # The new lineage starts its own marks: the dump's (made by
            # another database's transactions) cannot vouch for anything.
            marks = set(conn.execute("SELECT id, token FROM sqlite_ct.anchor_marks").fetchall())
            assert marks and not marks & dumped_marks
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_dump_restored_over_the_hub_under_a_running_provider(
        pg_exec, pg_provider, pg_dsn, tmp_path):
    """pg_restore --clean into the hub's own database, while the provider
    keeps serving it: the next call sees the new generation."""
    server, client, agent, dump = _hub_with_a_client_past_a_backup(
        pg_exec, pg_provider, pg_dsn, tmp_path)
    subprocess.run([_bin("pg_restore"), "--clean", "--if-exists", "-n", "public",
                    "-n", "sqlite_ct", "-d", pg_dsn, str(dump)], check=True)
    assert pg_exec("SELECT * FROM t ORDER BY id") == [(1, "backed up")]
    _refused_then_reinitialised(agent, client,
                                lambda: pg_exec("SELECT * FROM t ORDER BY id"))
    assert user_rows(client, "t") == [(1, "backed up"), (10, "unsent")]
    # Every later call of the running provider works in the new generation.
    client.execute("UPDATE t SET v = 'again' WHERE id = 1")
    agent.synchronize()
    assert pg_exec("SELECT v FROM t WHERE id = 1") == [("again",)]


def test_an_unchanged_hub_keeps_its_lineage(pg_exec, pg_provider):
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    server = pg_provider()
    agent = SyncAgent(ClientSyncProvider(sqlite_client()), server, ["t"])
    agent.synchronize()
    before = pg_exec("SELECT lineage, secret FROM sqlite_ct.hub_info")
    assert before[0][0] is not None and len(before[0][1]) == 32
    pg_exec("INSERT INTO t VALUES (1, 'x')")
    agent.synchronize()
    assert pg_provider().get_schema(["t"])
    assert pg_exec("SELECT lineage, secret FROM sqlite_ct.hub_info") == before


def test_a_forged_anchor_cannot_skip_rows(pg_exec, pg_provider):
    """A client that rewrites its anchor to a later snapshot (to skip rows)
    is refused, and nothing it skipped is lost: it reinitialises."""
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    pg_exec("INSERT INTO t VALUES (1, 'a')")
    server = pg_provider()
    client = sqlite_client()
    provider = ClientSyncProvider(client)
    agent = SyncAgent(provider, server, ["t"])
    agent.synchronize()
    pg_exec("INSERT INTO t VALUES (2, 'b')")
    anchor = provider.get_table_received_anchor("t")
    snap = pg_exec("SELECT pg_current_snapshot()::text")[0][0]
    xmax = int(snap.split(":")[1]) + 10
    from sqlite_ct.sync.pg._anchor import _HEAD
    text_len = int.from_bytes(anchor[_HEAD.size:_HEAD.size + 2], "big")
    new = f"{xmax}:{xmax}:".encode()
    forged = (anchor[:_HEAD.size] + len(new).to_bytes(2, "big") + new
              + anchor[_HEAD.size + 2 + text_len:])
    provider.set_table_received_anchor("t", forged)
    with pytest.raises(ReinitialiseRequired, match="corrupt or forged"):
        agent.synchronize()
    agent.reinitialise()
    assert user_rows(client, "t") == [(1, "a"), (2, "b")]


def test_a_new_lineage_by_hand_after_a_physical_restore(pg_exec, pg_provider):
    """What docs/postgres.md says to run after a base backup or point-in-time
    recovery, which keep every identifier the lineage is bound to."""
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    pg_exec("INSERT INTO t VALUES (1, 'a')")
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["t"])
    agent.synchronize()
    pg_exec("UPDATE sqlite_ct.hub_info SET bound = NULL")
    client.execute("INSERT INTO t (id, v) VALUES (10, 'unsent')")
    with pytest.raises(ReinitialiseRequired, match="earlier generation of this hub"):
        agent.synchronize()
    agent.reinitialise()
    assert user_rows(client, "t") == [(1, "a"), (10, "unsent")]
    assert pg_exec("SELECT * FROM t ORDER BY id") == [(1, "a"), (10, "unsent")]


def test_a_cursor_key_of_another_width_is_refused(pg_exec, pg_provider):
    """An anchor with a valid MAC whose cursor key does not fit the table's
    primary key (the key changed since) is refused, not used."""
    from sqlite_ct.sync import DownloadRequest, DownloadTable
    from sqlite_ct.sync.pg._anchor import HubKey, PgAnchor, Window
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    pg_exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    server = pg_provider()
    server.provision("t")
    provider = ClientSyncProvider(sqlite_client())
    first = server.get_changes(DownloadRequest(
        provider.client_id, "t", [DownloadTable("t", None)], 1, {}, None))
    sid, lineage, secret = pg_exec("SELECT server_id, lineage, secret FROM sqlite_ct.hub_info")[0]
    key = HubKey(sid.bytes, lineage.bytes, bytes(secret))
    anchor = PgAnchor.decode(first.anchors["t"], "t", key)
    assert anchor.window.cursor_key == ("1",)
    wide = PgAnchor(anchor.server, anchor.fingerprint, anchor.complete,
                    Window(**{**anchor.window.__dict__, "cursor_key": ("1", "x")}),
                    mark=anchor.mark)
    with pytest.raises(ReinitialiseRequired, match="does not match the table's primary key"):
        server.get_changes(DownloadRequest(provider.client_id, "t", [
            DownloadTable("t", wide.encode(key, "t"))], 1, {}, first.session))


def test_the_documented_statement_keeps_anchors_across_a_move(pg_exec, pg_provider):
    """docs/postgres.md: after pg_upgrade (another system identifier, same
    data and ids) one statement records the new location, and the clients'
    anchors stay valid."""
    import re
    doc = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs",
                            "postgres.md")).read()
    statement = re.search(r"```sql\n(UPDATE sqlite_ct.hub_info SET bound =.*?)```", doc,
                          re.S).group(1)
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    pg_exec("INSERT INTO t VALUES (1, 'a')")
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["t"])
    agent.synchronize()
    pg_exec("UPDATE sqlite_ct.hub_info SET bound = '1:' || split_part(bound, ':', 2) || ':' "
            "|| split_part(bound, ':', 3)")        # what pg_upgrade's new cluster looks like
    pg_exec(statement)
    pg_exec("INSERT INTO t VALUES (2, 'b')")
    agent.synchronize()
    assert user_rows(client, "t") == [(1, "a"), (2, "b")]


def test_an_upload_with_a_cursor_key_of_another_width_is_refused(pg_exec, pg_provider):
    from sqlite_ct.sync import DownloadRequest, DownloadTable
    from sqlite_ct.sync.pg._anchor import HubKey, PgAnchor, Window
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    pg_exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    server = pg_provider()
    client = sqlite_client()
    provider = ClientSyncProvider(client)
    agent = SyncAgent(provider, server, ["t"])
    agent.synchronize()
    pg_exec("INSERT INTO t VALUES (3, 'c'), (4, 'd')")
    batch = server.get_changes(DownloadRequest(provider.client_id, "t", [
        DownloadTable("t", provider.get_table_received_anchor("t"))], 1, {}, None))
    sid, lineage, secret = pg_exec("SELECT server_id, lineage, secret FROM sqlite_ct.hub_info")[0]
    key = HubKey(sid.bytes, lineage.bytes, bytes(secret))
    anchor = PgAnchor.decode(batch.anchors["t"], "t", key)
    assert anchor.window.cursor_key is not None
    wide = PgAnchor(anchor.server, anchor.fingerprint, anchor.complete,
                    Window(**{**anchor.window.__dict__, "cursor_key": ("3", "x")}),
                    mark=anchor.mark)
    provider.set_table_received_anchor("t", wide.encode(key, "t"))
    client.execute("INSERT INTO t (id, v) VALUES (10, 'client')")
    with pytest.raises(ReinitialiseRequired, match="does not match the table's primary key"):
        agent.synchronize()
    assert pg_exec("SELECT v FROM t WHERE id = 10") == []      # not applied under it
    agent.reinitialise()
    assert pg_exec("SELECT v FROM t WHERE id = 10") == [("client",)]
    assert user_rows(client, "t") == pg_exec("SELECT * FROM t ORDER BY id")
