"""The PostgreSQL hub: no-op and incremental sync latency of two revisions,
interleaved on one throwaway cluster (A/B, so that the load of a shared
machine falls on both alike).

    python3 benchmarks/bench_pg_ab.py REV_A [REV_B] [--rounds 3] [--hub-rows 200000]
                                      [--fsync] [--json out.json]

Each revision (a git revision of this repository; REV_B defaults to the
working tree) is exported to a temporary directory (`git archive`; the
loaded extension `sqlite_ct/sqlitect.so` of the working tree is copied in,
so csrc/ must not differ). Per round and revision, in a fresh process and a
fresh database: a table of --hub-rows rows is provisioned and analysed, one
client downloads it, then (in process, no HTTP):

  noop  --noop syncs with nothing to do: milliseconds each
  incr  --incr times: another connection updates 10 random rows, the client
        syncs (downloads those 10): milliseconds each

and the marks the hub holds (sqlite_ct.anchor_marks) at the end. The
revisions alternate A, B, B, A, A, B, ... Medians over all rounds are
printed. --fsync runs the cluster with fsync on (the default cluster of
tests/pg_cluster.py has it off, which hides the cost of a commit's flush).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

CHILD = r"""
import json, sys, time
import apsw, psycopg, sqlite_ct
from sqlite_ct.sync import ClientSyncProvider, SyncAgent
from sqlite_ct.sync.pg import PostgresServerProvider
dsn, rows, noop_n, incr_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
conn = psycopg.connect(dsn, autocommit=True)
conn.execute("CREATE TABLE items (id integer PRIMARY KEY, owner text, qty integer, note text)")
conn.execute(f"INSERT INTO items SELECT g, 'o', g, 'note' FROM generate_series(1, {rows}) g")
server = PostgresServerProvider(dsn, max_connections=2)
server.provision("items")
conn.execute("VACUUM ANALYZE sqlite_ct.c_items")
c = apsw.Connection(":memory:")
sqlite_ct.load(c)
agent = SyncAgent(ClientSyncProvider(c), server, ["items"], batch_size=50000)
agent.synchronize()
agent.synchronize()
noop, incr = [], []
for _ in range(noop_n):
    t = time.perf_counter()
    agent.synchronize()
    noop.append((time.perf_counter() - t) * 1000)
for _ in range(incr_n):
    conn.execute(f"UPDATE items SET qty = qty + 1 WHERE id IN "
                 f"(SELECT (random() * {rows - 1})::int + 1 FROM generate_series(1, 10))")
    t = time.perf_counter()
    stats = agent.synchronize()
    incr.append((time.perf_counter() - t) * 1000)
    assert 1 <= stats.total_changes_downloaded <= 10, stats.total_changes_downloaded
marks = None
if conn.execute("SELECT to_regclass('sqlite_ct.anchor_marks')").fetchone()[0]:
    marks = conn.execute("SELECT count(*) FROM sqlite_ct.anchor_marks").fetchone()[0]
server.close()
print(json.dumps({"noop": noop, "incr": incr, "marks": marks}))
"""


def export(rev: str, into: str) -> str:
    path = os.path.join(into, rev.replace("/", "_"))
    os.makedirs(path)
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev], check=True,
                             stdout=subprocess.PIPE).stdout
    subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    shutil.copy(os.path.join(ROOT, "sqlite_ct", "sqlitect.so"),
                os.path.join(path, "sqlite_ct", "sqlitect.so"))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev_a")
    ap.add_argument("rev_b", nargs="?", default=None, help="default: the working tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hub-rows", type=int, default=200_000)
    ap.add_argument("--noop", type=int, default=30)
    ap.add_argument("--incr", type=int, default=20)
    ap.add_argument("--fsync", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import psycopg
    import pg_cluster
    trees = {}
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sqlite-ct-ab-"))
        trees["A " + args.rev_a] = export(args.rev_a, tmp)
        trees["B " + (args.rev_b or "working tree")] = (export(args.rev_b, tmp) if args.rev_b
                                                       else ROOT)
        c = stack.enter_context(pg_cluster.cluster_files())
        if args.fsync:
            c.stop()
            c.start(options="-c fsync=on")
        results = {name: {"noop": [], "incr": [], "marks": []} for name in trees}
        names = list(trees)
        order = []
        for r in range(args.rounds):
            order += names if r % 2 == 0 else names[::-1]
        for i, name in enumerate(order):
            db = f"ab_{i}"
            with psycopg.connect(c.dsn, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {db}")
            dsn = psycopg.conninfo.make_conninfo(c.dsn, dbname=db)
            env = dict(os.environ, PYTHONPATH=trees[name])
            out = subprocess.run([sys.executable, "-c", CHILD, dsn, str(args.hub_rows),
                                  str(args.noop), str(args.incr)], env=env, check=True,
                                 stdout=subprocess.PIPE, text=True, cwd=tmp).stdout
            got = json.loads(out.splitlines()[-1])
            for k in ("noop", "incr"):
                results[name][k] += got[k]
            results[name]["marks"].append(got["marks"])
            print(f"{name}: noop p50 {statistics.median(got['noop']):.1f} ms, incr p50 "
                  f"{statistics.median(got['incr']):.1f} ms, marks {got['marks']}", flush=True)
            with psycopg.connect(c.dsn, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE {db} WITH (FORCE)")
    print(f"\n{args.hub_rows} hub rows, {args.rounds} rounds, fsync "
          f"{'on' if args.fsync else 'off'}\n")
    print("| revision | no-op sync p50 (p90) | incremental sync, 10 rows, p50 (p90) | marks |")
    print("|---|---|---|---|")
    for name, r in results.items():
        def q(xs, p):
            return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
        print(f"| {name} | {statistics.median(r['noop']):.1f} ms ({q(r['noop'], 0.9):.1f}) | "
              f"{statistics.median(r['incr']):.1f} ms ({q(r['incr'], 0.9):.1f}) | "
              f"{r['marks']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
