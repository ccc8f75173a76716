"""Two sync-service processes on one PostgreSQL hub serve clients at the same
time, and everything converges: the provider keeps no state of its own
outside the database."""
import os
import subprocess
import sys

from pg_fixtures import user_rows

WORKER = r"""
import random, sys
import apsw, sqlite_ct
from sqlite_ct.sync import ClientSyncProvider, SyncAgent
from sqlite_ct.sync.pg import PostgresServerProvider

dsn, seed, *paths = sys.argv[1:]
rng = random.Random(int(seed))
server = PostgresServerProvider(dsn, max_connections=2)
agents = []
for path in paths:
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    conn.setbusytimeout(5000)
    agents.append((conn, SyncAgent(ClientSyncProvider(conn), server, ["t"], batch_size=5)))
for rnd in range(12):
    for conn, agent in agents:
        for _ in range(rng.randint(0, 4)):
            k = rng.randint(1, 25)
            op = rng.random()
            if op < 0.5:
                conn.execute("INSERT INTO t (id, v) VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                             "SET v = excluded.v", (k, f"{seed}.{rnd}"))
            elif op < 0.8:
                conn.execute("UPDATE t SET v = v || '+' WHERE id = ?", (k,))
            else:
                conn.execute("DELETE FROM t WHERE id = ?", (k,))
        agent.synchronize()
server.close()
print("ok")
"""


def test_two_service_processes_serve_one_hub_and_everything_converges(pg_dsn, pg_exec,
                                                                     pg_provider, tmp_path):
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    pg_exec("INSERT INTO t SELECT g, 'seed' FROM generate_series(1, 10) g")
    server = pg_provider()
    import apsw
    import sqlite_ct
    from sqlite_ct.sync import ClientSyncProvider, SyncAgent
    paths = [str(tmp_path / f"c{i}.db") for i in range(4)]
    agents = []
    for path in paths:
        conn = apsw.Connection(path)
        sqlite_ct.load(conn)
        conn.setbusytimeout(5000)
        agents.append((conn, SyncAgent(ClientSyncProvider(conn), server, ["t"])))
        agents[-1][1].synchronize()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, pg_dsn, str(seed), *paths[i::2]],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i, seed in enumerate((1, 2))]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    for _ in range(2):
        for conn, agent in agents:
            agent.synchronize()
    hub = [tuple(r) for r in pg_exec("SELECT id, v FROM t ORDER BY id")]
    assert len(hub) > 0
    for conn, _ in agents:
        assert user_rows(conn, "t") == hub


def test_one_provider_serves_clients_from_several_threads(pg_exec, pg_provider):
    """What an HTTP service does with one provider: concurrent calls, each on
    a connection of the pool."""
    import threading

    import apsw
    import sqlite_ct
    from sqlite_ct.sync import ClientSyncProvider, SyncAgent
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    server = pg_provider()
    errors = []

    def run(n):
        try:
            conn = apsw.Connection(":memory:")
            sqlite_ct.load(conn)
            agent = SyncAgent(ClientSyncProvider(conn), server, ["t"], batch_size=4)
            agent.synchronize()
            for rnd in range(8):
                conn.execute("INSERT INTO t (id, v) VALUES (?, ?) ON CONFLICT (id) DO UPDATE "
                             "SET v = excluded.v", (n * 100 + rnd % 3, f"{n}.{rnd}"))
                conn.execute("UPDATE t SET v = v || '!' WHERE id = ?", (rnd % 5,))
                agent.synchronize()
            results[n] = (conn, agent)
        except Exception as exc:       # reported below, with the thread's number
            errors.append((n, exc))
    results = {}
    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    for conn, agent in results.values():
        agent.synchronize()
    hub = [tuple(r) for r in pg_exec("SELECT id, v FROM t ORDER BY id")]
    assert len(hub) == 12
    for conn, _ in results.values():
        assert user_rows(conn, "t") == hub
