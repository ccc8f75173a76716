"""A PostgreSQL hub restored physically (a base backup taken with
pg_basebackup and started in place of the hub: same system identifier, same
oids, transaction ids from the backup's point on) is recognised from the
anchor marks its clients hold, also once the restored hub's transaction ids
have passed the clients' anchors: a client that synced after the backup point
gets ReinitialiseRequired and converges by SyncAgent.reinitialise() with
nothing lost; a client that synced only before it goes on syncing.

Each test runs its own throwaway cluster (tests/pg_cluster.py), which it
backs up and replaces."""
import os
import subprocess

import pytest

import pg_cluster
from pg_fixtures import _unavailable, sqlite_client, user_rows
from sqlite_ct.sync import ClientSyncProvider, SyncAgent
from sqlite_ct.sync.errors import ReinitialiseRequired


@pytest.fixture
def own_cluster(pg_server):
    # Its own cluster even when SQLITE_CT_TEST_PG_DSN names a server (as in
    # CI): backing up and restoring needs the server's files.
    if pg_cluster.find_bin_dir() is None:
        _unavailable("the physical restore tests need the PostgreSQL server binaries "
                     f"(pg_ctl, pg_basebackup) to back up and restore a cluster: "
                     f"{pg_cluster.INSTALL_HINT}")
    with pg_cluster.cluster_files() as c:
        yield c


def _exec(dsn, sql, params=None):
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _burn_xids(dsn, n):
    """n committed transactions, each with a transaction id."""
    _exec(dsn, f"DO $$ BEGIN FOR i IN 1..{int(n)} LOOP PERFORM pg_current_xact_id(); "
               f"COMMIT; END LOOP; END $$")


def _xmax(dsn):
    return int(_exec(dsn, "SELECT pg_current_snapshot()::text")[0][0].split(":")[1])


def _base_backup(c):
    backup = os.path.join(c.work, "backup")
    c.run("pg_basebackup", "-D", backup, "-X", "stream", "-c", "fast", "-d", c.dsn)
    return backup


def _hub_and_two_clients(c):
    """Table t with one row on the cluster's hub, and two clients that have
    synchronised it: (hub, early, late, early_agent, late_agent)."""
    from sqlite_ct.sync.pg import PostgresServerProvider
    _exec(c.dsn, "CREATE TABLE t (id integer PRIMARY KEY, v text)")
    _exec(c.dsn, "INSERT INTO t VALUES (1, 'backed up')")
    hub = PostgresServerProvider(c.dsn, max_connections=2)
    early, late = sqlite_client(), sqlite_client()
    early_agent = SyncAgent(ClientSyncProvider(early), hub, ["t"])
    late_agent = SyncAgent(ClientSyncProvider(late), hub, ["t"])
    early_agent.synchronize()
    late_agent.synchronize()
    return hub, early, late, early_agent, late_agent


def test_a_base_backup_started_as_the_hub_is_recognised_after_its_ids_pass_the_anchors(
        own_cluster):
    from sqlite_ct.sync.pg import PostgresServerProvider
    c = own_cluster
    hub, early, late, early_agent, late_agent = _hub_and_two_clients(c)

    backup = _base_backup(c)

    # The hub moves on; `late` syncs past the backup point, `early` does not.
    for i in range(2, 6):
        _exec(c.dsn, "INSERT INTO t VALUES (%s, 'after the backup')", (i,))
    late.execute("INSERT INTO t (id, v) VALUES (20, 'uploaded after the backup')")
    late_agent.synchronize()
    assert [r[0] for r in user_rows(late, "t")] == [1, 2, 3, 4, 5, 20]
    anchor_xmax = _xmax(c.dsn)
    hub.close()

    # The backup becomes the hub (same system identifier, same oids).
    c.stop()
    c.start(backup)
    restored = PostgresServerProvider(c.dsn, max_connections=2)
    try:
        # A write on the restored hub reuses the ids of the transactions it
        # lost, which the clients' anchors count as received ...
        _exec(c.dsn, "INSERT INTO t VALUES (6, 'after the restore')")
        # ... and then its ids pass every anchor the clients hold.
        _burn_xids(c.dsn, 50)
        assert _xmax(c.dsn) > anchor_xmax
        assert _exec(c.dsn, "SELECT * FROM t ORDER BY id") == [(1, "backed up"),
                                                               (6, "after the restore")]

        late_agent.server = restored
        late.execute("INSERT INTO t (id, v) VALUES (21, 'unsent')")
        with pytest.raises(ReinitialiseRequired) as info:
            late_agent.synchronize()
        assert info.value.table == "t"
        assert "restored from a backup" in str(info.value)
        assert "SyncAgent.reinitialise()" in str(info.value)
        late_agent.reinitialise()
        hub_rows = _exec(c.dsn, "SELECT * FROM t ORDER BY id")
        assert hub_rows == [(1, "backed up"), (6, "after the restore"), (21, "unsent")]
        assert user_rows(late, "t") == hub_rows

        # A client that synced only before the backup point lost nothing:
        # it is not refused, and it gets what the restored hub wrote.
        early_agent.server = restored
        early_agent.synchronize()
        assert user_rows(early, "t") == hub_rows

        # Both go on syncing with the restored hub.
        _exec(c.dsn, "UPDATE t SET v = 'later' WHERE id = 1")
        late_agent.synchronize()
        early_agent.synchronize()
        hub_rows = _exec(c.dsn, "SELECT * FROM t ORDER BY id")
        assert user_rows(late, "t") == user_rows(early, "t") == hub_rows
    finally:
        restored.close()


def test_a_hub_restored_to_a_point_after_a_clients_last_sync_serves_it_on(own_cluster):
    """A backup taken after the client's last sync holds everything the
    client's anchor covers: the client is not refused."""
    from sqlite_ct.sync.pg import PostgresServerProvider
    c = own_cluster
    _exec(c.dsn, "CREATE TABLE t (id integer PRIMARY KEY, v text)")
    _exec(c.dsn, "INSERT INTO t VALUES (1, 'a')")
    hub = PostgresServerProvider(c.dsn, max_connections=2)
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), hub, ["t"])
    agent.synchronize()
    hub.close()
    backup = _base_backup(c)
    _exec(c.dsn, "INSERT INTO t VALUES (2, 'lost with the original')")
    c.stop()
    c.start(backup)
    with PostgresServerProvider(c.dsn, max_connections=2) as restored:
        _exec(c.dsn, "INSERT INTO t VALUES (3, 'after the restore')")
        _burn_xids(c.dsn, 20)
        agent.server = restored
        agent.synchronize()
        assert user_rows(client, "t") == [(1, "a"), (3, "after the restore")]


def test_a_stopped_hubs_data_directory_copied_back(own_cluster):
    """The oldest kind of backup: the data directory of the stopped hub,
    copied, and copied back later."""
    from sqlite_ct.sync.pg import PostgresServerProvider
    c = own_cluster
    _exec(c.dsn, "CREATE TABLE t (id integer PRIMARY KEY, v text)")
    hub = PostgresServerProvider(c.dsn, max_connections=2)
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), hub, ["t"])
    agent.synchronize()
    hub.close()
    data = c.data
    c.run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    copy = os.path.join(c.work, "copy")
    subprocess.run(["cp", "-a", data, copy], user=c.user, check=True)
    c.start(data)
    hub = PostgresServerProvider(c.dsn, max_connections=2)
    _exec(c.dsn, "INSERT INTO t VALUES (1, 'lost with the original')")
    agent.server = hub
    agent.synchronize()
    assert user_rows(client, "t") == [(1, "lost with the original")]
    hub.close()
    c.stop()
    c.start(copy)
    with PostgresServerProvider(c.dsn, max_connections=2) as restored:
        _exec(c.dsn, "INSERT INTO t VALUES (2, 'after the restore')")
        _burn_xids(c.dsn, 20)
        agent.server = restored
        with pytest.raises(ReinitialiseRequired, match="restored from a backup"):
            agent.synchronize()
        agent.reinitialise()
        assert user_rows(client, "t") == [(2, "after the restore")]


def test_point_in_time_recovery_to_between_two_clients_syncs(own_cluster):
    """Point-in-time recovery (a base backup, archived WAL replayed up to a
    named restore point, then promoted): the client that synced before the
    restore point syncs on; the one that synced after it is refused, also
    once the recovered hub's ids have passed its anchor."""
    import pwd
    import time
    from sqlite_ct.sync.pg import PostgresServerProvider
    c = own_cluster
    archive = os.path.join(c.work, "archive")
    os.makedirs(archive)
    if c.user:
        pw = pwd.getpwnam(c.user)
        os.chown(archive, pw.pw_uid, pw.pw_gid)
    c.stop()
    c.start(options=f"-c archive_mode=on -c archive_command=\"cp %p {archive}/%f\"")
    hub, early, late, early_agent, late_agent = _hub_and_two_clients(c)
    backup = _base_backup(c)
    _exec(c.dsn, "INSERT INTO t VALUES (2, 'before the restore point')")
    early_agent.synchronize()
    _exec(c.dsn, "SELECT pg_create_restore_point('sqlite_ct_test')")
    _exec(c.dsn, "INSERT INTO t VALUES (3, 'after the restore point')")
    late_agent.synchronize()
    assert [r[0] for r in user_rows(late, "t")] == [1, 2, 3]
    anchor_xmax = _xmax(c.dsn)
    hub.close()
    segment = _exec(c.dsn, "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    for _ in range(300):
        if os.path.exists(os.path.join(archive, segment)):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the WAL segment was not archived: " + repr(
            _exec(c.dsn, "SELECT * FROM pg_stat_archiver")) + open(c.log).read()[-1500:])
    c.stop()

    with open(os.path.join(backup, "postgresql.auto.conf"), "a") as f:
        f.write(f"restore_command = 'cp {archive}/%f %p'\n"
                f"recovery_target_name = 'sqlite_ct_test'\n"
                f"recovery_target_action = 'promote'\n")
    open(os.path.join(backup, "recovery.signal"), "w").close()
    if c.user:
        for name in ("postgresql.auto.conf", "recovery.signal"):
            os.chown(os.path.join(backup, name), pw.pw_uid, pw.pw_gid)
    c.start(backup)
    for _ in range(300):
        if not _exec(c.dsn, "SELECT pg_is_in_recovery()")[0][0]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the recovered cluster was not promoted")
    restored = PostgresServerProvider(c.dsn, max_connections=2)
    try:
        assert _exec(c.dsn, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]
        _exec(c.dsn, "INSERT INTO t VALUES (4, 'after the recovery')")
        _burn_xids(c.dsn, 50)
        assert _xmax(c.dsn) > anchor_xmax
        late_agent.server = early_agent.server = restored
        early_agent.synchronize()
        hub_rows = _exec(c.dsn, "SELECT * FROM t ORDER BY id")
        assert user_rows(early, "t") == hub_rows
        with pytest.raises(ReinitialiseRequired, match="restored from a backup"):
            late_agent.synchronize()
        late_agent.reinitialise()
        assert user_rows(late, "t") == hub_rows == [
            (1, "backed up"), (2, "before the restore point"), (4, "after the recovery")]
    finally:
        restored.close()
