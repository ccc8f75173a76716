"""The PostgreSQL hub: capture overhead and sync throughput.

    python3 benchmarks/bench_pg.py [--quick] [--dsn postgresql://...] [--json out.json]

Without --dsn it starts a throwaway cluster (tests/pg_cluster.py; fsync off,
so the numbers are CPU and trigger cost, not disk). Measured, median of
--reps runs:

  capture  the same table tracked (sqlite_ct triggers and side table) and
           untracked: a bulk INSERT of N rows in one statement, an UPDATE of
           half of them, a DELETE of a tenth, and 2,000 single-row
           autocommit INSERTs; the ratio tracked/untracked
  upload   a client uploads N new rows: rows/s of apply_changes
  download a fresh client downloads N rows: rows/s (in-process, no HTTP)
  incr     with --hub-rows rows on the hub, 10 rows change; one incremental
           sync (upload nothing, download 10): milliseconds
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import apsw  # noqa: E402
import psycopg  # noqa: E402

import sqlite_ct  # noqa: E402
from sqlite_ct.sync import ClientSyncProvider, SyncAgent  # noqa: E402
from sqlite_ct.sync.pg import PostgresServerProvider  # noqa: E402

TABLE = "CREATE TABLE {name} (id integer PRIMARY KEY, owner text, qty integer, note text)"


def client() -> apsw.Connection:
    conn = apsw.Connection(":memory:")
    sqlite_ct.load(conn)
    return conn


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def capture(dsn: str, n: int, reps: int) -> dict:
    out: dict = {}
    ops = {
        f"insert {n} rows, one statement":
            lambda c, t: c.execute(f"INSERT INTO {t} SELECT g, 'o' || (g % 10), g, 'note' "
                                   f"FROM generate_series(1, {n}) g"),
        f"update {n // 2} rows, one statement":
            lambda c, t: c.execute(f"UPDATE {t} SET qty = qty + 1 WHERE id % 2 = 0"),
        f"delete {n // 10} rows, one statement":
            lambda c, t: c.execute(f"DELETE FROM {t} WHERE id % 10 = 0"),
        "2000 single-row autocommit inserts":
            lambda c, t: [c.execute(f"INSERT INTO {t} VALUES (%s, 'x', 1, 'n')", (n + i,))
                          for i in range(1, 2001)],
    }
    times: dict = {op: {"untracked": [], "tracked": []} for op in ops}
    server = PostgresServerProvider(dsn, max_connections=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for rep in range(reps):
            for variant in ("untracked", "tracked"):
                name = f"cap_{variant}_{rep}"
                conn.execute(TABLE.format(name=name))
                if variant == "tracked":
                    server.provision(name)
                conn.execute(f"VACUUM ANALYZE {name}")
                for op, fn in ops.items():
                    times[op][variant].append(timed(lambda: fn(conn, name)))
    server.close()
    for op, t in times.items():
        u, k = statistics.median(t["untracked"]), statistics.median(t["tracked"])
        out[op] = {"untracked_ms": round(u * 1000, 1), "tracked_ms": round(k * 1000, 1),
                   "ratio": round(k / u, 2)}
    return out


def sync_throughput(dsn: str, n: int, hub_rows: int, reps: int) -> dict:
    up, down, incr = [], [], []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for rep in range(reps):
            name = f"sync_{rep}"
            conn.execute(TABLE.format(name=name))
            server = PostgresServerProvider(dsn, max_connections=2)
            server.provision(name)
            a = client()
            agent = SyncAgent(ClientSyncProvider(a), server, [name])
            agent.synchronize()
            with a:
                a.executemany(f"INSERT INTO {name} (id, owner, qty, note) VALUES (?, ?, ?, ?)",
                              ((i, f"o{i % 10}", i, "note") for i in range(1, n + 1)))
            t = time.perf_counter()
            stats = agent.synchronize()
            up.append(n / (time.perf_counter() - t))
            assert stats.upload_changes_applied == n
            b = client()
            agent_b = SyncAgent(ClientSyncProvider(b), server, [name], batch_size=10000)
            t = time.perf_counter()
            stats = agent_b.synchronize()
            down.append(n / (time.perf_counter() - t))
            assert stats.total_changes_downloaded == n
            server.close()
        name = "incr"
        conn.execute(TABLE.format(name=name))
        conn.execute(f"INSERT INTO {name} SELECT g, 'o', g, 'note' "
                     f"FROM generate_series(1, {hub_rows}) g")
        server = PostgresServerProvider(dsn, max_connections=2)
        server.provision(name)
        conn.execute(f"VACUUM ANALYZE sqlite_ct.c_{name}")
        c = client()
        agent = SyncAgent(ClientSyncProvider(c), server, [name], batch_size=50000)
        agent.synchronize()
        for rep in range(max(reps, 3)):
            conn.execute(f"UPDATE {name} SET qty = qty + 1 WHERE id IN "
                         f"(SELECT (random() * {hub_rows})::int + 1 FROM generate_series(1, 10))")
            t = time.perf_counter()
            agent.synchronize()
            incr.append((time.perf_counter() - t) * 1000)
        server.close()
    return {"upload_rows_per_s": round(statistics.median(up)),
            "download_rows_per_s": round(statistics.median(down)),
            f"incremental_sync_ms_with_{hub_rows}_rows": round(statistics.median(incr), 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--dsn", help="a PostgreSQL server to use (default: a throwaway one)")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--dir", help="unused; accepted like the other benchmarks")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args(argv)
    n = 2000 if args.quick else 100_000
    sync_n = 1000 if args.quick else 20_000
    hub_rows = 5000 if args.quick else 1_000_000
    reps = args.reps or (1 if args.quick else 3)
    with contextlib.ExitStack() as stack:
        dsn = args.dsn
        if not dsn:
            import pg_cluster
            dsn = stack.enter_context(pg_cluster.cluster())
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS sqlite_ct_bench")
            admin.execute("CREATE DATABASE sqlite_ct_bench")
        bench_dsn = psycopg.conninfo.make_conninfo(dsn, dbname="sqlite_ct_bench")
        version = psycopg.connect(bench_dsn).execute("SHOW server_version").fetchone()[0]
        results = {"server_version": version, "capture": capture(bench_dsn, n, reps),
                   "sync": sync_throughput(bench_dsn, sync_n, hub_rows, reps),
                   "args": {"quick": args.quick, "n": n, "sync_n": sync_n,
                            "hub_rows": hub_rows, "reps": reps}}
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP DATABASE sqlite_ct_bench WITH (FORCE)")
    print(f"PostgreSQL {results['server_version']}, median of {reps}\n")
    print("#### capture overhead (tracked vs untracked table)\n")
    print("| operation | untracked ms | tracked ms | ratio |\n|---|---:|---:|---:|")
    for op, r in results["capture"].items():
        print(f"| {op} | {r['untracked_ms']} | {r['tracked_ms']} | {r['ratio']}x |")
    print("\n#### sync\n\n| measure | value |\n|---|---:|")
    for k, v in results["sync"].items():
        print(f"| {k} | {v} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
