"""Sync over HTTP on loopback: `sqlite-ct serve` over a SQLite hub (or, with
--hub postgres, a PostgreSQL hub) in its own process, clients with
HttpServerProvider.

Measures (each client phase in a fresh subprocess, so its peak RSS is its own):
  1. initial download of --rows rows into a new client (rows/s, peak client RSS);
  2. a sync with nothing to do, repeated (p50, p90);
  3. incremental sync: 10 random hub rows updated (by another connection to
     the hub, not timed), then one sync downloading them, repeated (p50, p90);
  4. --clients clients syncing concurrently against the one server process,
     each a thread with its own client database and token: every round, each
     writes a row and syncs (throughput, p50/p99 latency, errors).

With --hub postgres the hub is a throwaway PostgreSQL cluster
(tests/pg_cluster.py: initdb, fsync off, removed at the end) unless --dsn names
a server; the benchmark creates and drops its own database on it. The service
provisions (tracks) the hub's tables when it starts; the benchmark then runs
ANALYZE (--no-analyze: not), as autovacuum would shortly after.

    python3 benchmarks/bench_http.py [--quick] [--hub sqlite|postgres] [--dsn URL]
        [--rows N] [--clients N] [--rounds N] [--dir DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import apsw  # noqa: E402

import sqlite_ct  # noqa: E402

TARGETS = {"rows_per_s": 20_000, "rss_mib": 200, "noop_p50_ms": 10}
CHANGED = 10  # hub rows changed before each incremental sync


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_hub(path: str, rows: int, clients: int) -> None:
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, "
                 "price REAL, note TEXT)")
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, body TEXT)")
    conn.execute("BEGIN")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                 "INSERT INTO items SELECT i, printf('name-%07d', i), i % 1000, "
                 "(i % 100000) / 100.0, printf('note %d of the benchmark rows', i) FROM n",
                 (rows,))
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                 "INSERT INTO notes(owner, body) SELECT 'user' || (i % ?), 'seed' FROM n",
                 (clients * 10 - 1, clients))
    conn.execute("COMMIT")
    sqlite_ct.create_schema(conn, "items")
    sqlite_ct.create_schema(conn, "notes")
    conn.close()


def make_pg_hub(dsn: str, rows: int, clients: int) -> None:
    """The same two tables in PostgreSQL, rows written before the service
    provisions (tracks) them."""
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items(id bigint PRIMARY KEY, name text, qty integer, "
                     "price double precision, note text)")
        conn.execute("CREATE TABLE notes(id bigint PRIMARY KEY, owner text NOT NULL, body text)")
        conn.execute("INSERT INTO items SELECT i, 'name-' || lpad(i::text, 7, '0'), i %% 1000, "
                     "(i %% 100000) / 100.0, 'note ' || i || ' of the benchmark rows' "
                     "FROM generate_series(1, %s) i", (rows,))
        conn.execute("INSERT INTO notes(id, owner, body) SELECT i + 1, 'user' || (i %% %s), "
                     "'seed' FROM generate_series(0, %s) i", (clients, clients * 10 - 1))
        conn.execute("VACUUM ANALYZE items")
        conn.execute("VACUUM ANALYZE notes")


@contextlib.contextmanager
def pg_database(dsn: Optional[str]):
    """Yields (the URL of a new, empty database, the server's version); drops it
    at the end. Without `dsn`, on a throwaway cluster."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    with contextlib.ExitStack() as stack:
        if not dsn:
            sys.path.insert(0, os.path.join(REPO, "tests"))
            import pg_cluster
            dsn = stack.enter_context(pg_cluster.cluster())
        name = f"sqlite_ct_bench_http_{os.getpid()}"
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
            admin.execute(f"CREATE DATABASE {name}")
            version = admin.execute("SHOW server_version").fetchone()[0]
        try:
            if dsn.startswith(("postgresql://", "postgres://")):
                from urllib.parse import urlsplit, urlunsplit
                parts = urlsplit(dsn)
                url = urlunsplit(parts._replace(path="/" + name))
            else:
                from urllib.parse import urlencode
                params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if k != "dbname"}
                url = f"postgresql:///{name}?{urlencode(params)}"
            assert conninfo_to_dict(make_conninfo(url))["dbname"] == name
            yield url, version
        finally:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def change_hub_rows(hub: str, rows: int, count: int) -> None:
    """Update `count` random rows of the hub's items table, as another
    application writing to the hub would (one transaction)."""
    import random
    ids = random.sample(range(1, rows + 1), count)
    if hub.startswith(("postgresql://", "postgres://")):
        import psycopg
        with psycopg.connect(hub) as conn:
            conn.execute("UPDATE items SET qty = qty + 1 WHERE id = ANY(%s)", (ids,))
        return
    conn = apsw.Connection(hub)
    sqlite_ct.load(conn)
    conn.setbusytimeout(30_000)
    with conn:
        conn.executemany("UPDATE items SET qty = qty + 1 WHERE id = ?", [(i,) for i in ids])
    conn.close()


class Service:
    def __init__(self, workdir: str, config: Dict[str, Any]) -> None:
        self.config = os.path.join(workdir, "server.json")
        with open(self.config, "w") as f:
            json.dump(config, f)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(workdir, "serve.log"), "ab")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sqlite_ct", "serve", "--config", self.config, "--port",
             str(self.port), "--log-level", "warning"], env=env, stdout=self.log,
            stderr=self.log)
        import httpx
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the service did not start; see serve.log")
                time.sleep(0.05)

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


# --- client phases (run in a subprocess) ------------------------------------------

def _client(path: str, url: str, token: str, tables: List[str], **agent: Any):
    from sqlite_ct.sync import ClientSyncProvider, SyncAgent
    from sqlite_ct.sync.http import HttpServerProvider
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    conn.setbusytimeout(30_000)
    server = HttpServerProvider(url, token=token, timeout=120, retries=3)
    return conn, server, SyncAgent(ClientSyncProvider(conn), server, tables, **agent)


def phase_download(args: argparse.Namespace) -> Dict[str, Any]:
    conn, server, agent = _client(args.db, args.url, args.token, ["items"])
    start = time.perf_counter()
    stats = agent.synchronize()
    elapsed = time.perf_counter() - start
    count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
    if count != stats.total_changes_downloaded:
        raise SystemExit(f"the client has {count} rows after downloading "
                         f"{stats.total_changes_downloaded}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(args.noop):
        t0 = time.perf_counter()
        agent.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    incremental = []
    for _ in range(args.incremental):
        change_hub_rows(args.hub_db, count, CHANGED)
        t0 = time.perf_counter()
        st = agent.synchronize()
        incremental.append((time.perf_counter() - t0) * 1000)
        if st.total_changes_downloaded != CHANGED:
            raise SystemExit(f"an incremental sync downloaded {st.total_changes_downloaded} "
                             f"changes, not {CHANGED}")
    server.close()
    conn.close()
    return {"rows": count, "downloaded": stats.total_changes_downloaded,
            "batches": stats.download_batches, "seconds": elapsed,
            "rows_per_s": count / elapsed, "peak_rss_mib": rss,
            "noop_ms": times, "incremental_ms": incremental}


def phase_concurrent(args: argparse.Namespace) -> Dict[str, Any]:
    tokens = json.loads(args.tokens)
    clients = []
    for i, token in enumerate(tokens):
        conn, server, agent = _client(os.path.join(args.db, f"c{i}.db"), args.url, token,
                                      ["notes"])
        agent.synchronize()
        clients.append((conn, server, agent))
    latencies: List[float] = []
    errors: List[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(clients))

    def work(i: int) -> None:
        conn, _, agent = clients[i]
        barrier.wait()
        for r in range(args.rounds):
            conn.execute("INSERT INTO notes(owner, body) VALUES (?, ?)",
                         (f"user{i}", f"round {r}"))
            t0 = time.perf_counter()
            try:
                agent.synchronize()
            except Exception as exc:  # counted, reported
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(work, range(len(clients))))
    elapsed = time.perf_counter() - start
    for conn, server, _ in clients:
        server.close()
        conn.close()
    return {"clients": len(clients), "rounds": args.rounds, "syncs": len(latencies),
            "errors": len(errors), "first_errors": errors[:3], "seconds": elapsed,
            "syncs_per_s": len(latencies) / elapsed, "latency_ms": latencies}


# --- the driver ------------------------------------------------------------------

def pct(values: List[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_phase(name: str, **kw: Any) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", name]
    for k, v in kw.items():
        cmd.append(f"--{k.replace('_', '-')}={v}")  # a token may start with "-"
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment() -> Dict[str, Any]:
    load = os.getloadavg()
    import httpx
    import starlette
    import uvicorn
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
                       f"{platform.release()}",
            "python": platform.python_version(), "sqlite": apsw.sqlite_lib_version(),
            "apsw": apsw.apsw_version(), "starlette": starlette.__version__,
            "uvicorn": uvicorn.__version__, "httpx": httpx.__version__,
            "loadavg": [round(x, 2) for x in load]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="20k rows, 20 clients x 3 rounds, 20 no-op syncs")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--noop", type=int, default=50)
    ap.add_argument("--incremental", type=int, default=20,
                    help=f"incremental syncs ({CHANGED} hub rows changed before each)")
    ap.add_argument("--hub", choices=["sqlite", "postgres"], default="sqlite",
                    help="the hub's database (postgres: a throwaway cluster unless --dsn)")
    ap.add_argument("--no-analyze", action="store_true",
                    help="with --hub postgres: no ANALYZE of the hub after the service "
                         "provisioned its tables (measure before autovacuum has run)")
    ap.add_argument("--dsn", default=None,
                    help="with --hub postgres: a server to use (postgresql://...)")
    ap.add_argument("--dir", default=None, help="directory for the databases")
    ap.add_argument("--json", default=None, help="write the raw numbers here")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    ap.add_argument("--hub-db", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        phase = {"download": phase_download, "concurrent": phase_concurrent}[args.phase]
        print(json.dumps(phase(args)))
        return 0
    if args.quick:
        args.rows, args.clients, args.rounds, args.noop = 20_000, 20, 3, 20
        args.incremental = min(args.incremental, 5)
    if args.dsn and args.hub != "postgres":
        ap.error("--dsn needs --hub postgres")
    workdir = tempfile.mkdtemp(prefix="bench-http-", dir=args.dir)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        env = environment()
        print(f"building a {args.hub} hub of {args.rows} rows ...", file=sys.stderr)
        t0 = time.perf_counter()
        if args.hub == "postgres":
            hub, env["postgresql"] = stack.enter_context(pg_database(args.dsn))
            make_pg_hub(hub, args.rows, args.clients)
            import psycopg
            env["psycopg"] = f"{psycopg.__version__} ({psycopg.pq.__impl__})"
            env["analyze_after_provisioning"] = not args.no_analyze
        else:
            hub = os.path.join(workdir, "hub.db")
            make_hub(hub, args.rows, args.clients)
        env["hub_build_seconds"] = round(time.perf_counter() - t0, 1)
        tokens = {f"user{i}": secrets.token_urlsafe(24) for i in range(args.clients)}
        reader = secrets.token_urlsafe(24)
        config = {"hub": hub, "tables": ["items", "notes"],
                  "filters": {"notes": "owner = :user"},
                  "tokens": {reader: {"user": "reader"},
                             **{t: {"user": u} for u, t in tokens.items()}}}
        service = Service(workdir, config)
        try:
            if args.hub == "postgres" and not args.no_analyze:
                # The service provisioned the tables at its start, writing one side-table
                # row per existing row; give the planner statistics of them now, as
                # autovacuum does within about a minute on a running hub.
                import psycopg
                with psycopg.connect(hub, autocommit=True) as conn:
                    conn.execute("ANALYZE")
            print("initial download and no-op syncs ...", file=sys.stderr)
            down = run_phase("download", db=os.path.join(workdir, "client.db"),
                             url=service.url, token=reader, noop=args.noop,
                             incremental=args.incremental, hub_db=hub)
            os.makedirs(os.path.join(workdir, "many"))
            print(f"{args.clients} concurrent clients ...", file=sys.stderr)
            conc = run_phase("concurrent", db=os.path.join(workdir, "many"), url=service.url,
                             tokens=json.dumps(list(tokens.values())), rounds=args.rounds)
            server_rss = service.rss_mib()
        finally:
            service.stop()
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = {
        "rows_per_s": down["rows_per_s"], "peak_client_rss_mib": down["peak_rss_mib"],
        "noop_p50_ms": statistics.median(down["noop_ms"]), "noop_p90_ms": pct(down["noop_ms"], 90),
        "incremental_p50_ms": pct(down["incremental_ms"], 50),
        "incremental_p90_ms": pct(down["incremental_ms"], 90),
        "concurrent_syncs_per_s": conc["syncs_per_s"], "concurrent_p50_ms":
            pct(conc["latency_ms"], 50), "concurrent_p99_ms": pct(conc["latency_ms"], 99),
        "concurrent_errors": conc["errors"], "server_peak_rss_mib": server_rss}
    ok = lambda good: "meets target" if good else "MISSES target"  # noqa: E731
    hub_name = "SQLite hub" if args.hub == "sqlite" else "PostgreSQL hub"
    print(f"### Sync over HTTP (loopback, {hub_name}), {env['date']}\n")
    if args.hub == "postgres":
        print(f"PostgreSQL {env['postgresql']}, psycopg {env['psycopg']}; ", end="")
    print(f"{env['machine']}; Python {env['python']}, SQLite {env['sqlite']}, "
          f"starlette {env['starlette']}, uvicorn {env['uvicorn']}, httpx {env['httpx']}; "
          f"load {env['loadavg']} -> {env['loadavg_end']}\n")
    print("| measure | result | target |")
    print("|---|---|---|")
    print(f"| initial download, {down['rows']} rows in {down['batches']} batches | "
          f"{down['seconds']:.1f} s, {summary['rows_per_s']:,.0f} rows/s | >= 20,000 rows/s, "
          f"{ok(summary['rows_per_s'] >= TARGETS['rows_per_s'])} |")
    print(f"| peak client RSS (initial download) | {summary['peak_client_rss_mib']:.0f} MiB | "
          f"<= 200 MB, {ok(summary['peak_client_rss_mib'] <= TARGETS['rss_mib'])} |")
    print(f"| sync with nothing to do, {len(down['noop_ms'])} runs | p50 "
          f"{summary['noop_p50_ms']:.1f} ms, p90 {summary['noop_p90_ms']:.1f} ms | <= 10 ms p50, "
          f"{ok(summary['noop_p50_ms'] <= TARGETS['noop_p50_ms'])} |")
    print(f"| incremental sync, {CHANGED} hub rows changed, {down['rows']} rows on the hub, "
          f"{len(down['incremental_ms'])} runs | p50 {summary['incremental_p50_ms']:.1f} ms, "
          f"p90 {summary['incremental_p90_ms']:.1f} ms | |")
    print(f"| {conc['clients']} concurrent clients x {conc['rounds']} rounds (write a row, "
          f"sync) | {summary['concurrent_syncs_per_s']:.1f} syncs/s, p50 "
          f"{summary['concurrent_p50_ms']:.0f} ms, p99 {summary['concurrent_p99_ms']:.0f} ms, "
          f"{conc['errors']} errors | no errors, "
          f"{ok(conc['errors'] == 0)} |")
    print(f"| server process peak RSS | {server_rss:.0f} MiB | |")
    if conc["first_errors"]:
        print("\nfirst errors: " + "; ".join(conc["first_errors"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "environment": env, "summary": summary,
                       "download": down, "concurrent": conc}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
