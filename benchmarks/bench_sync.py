"""Sync in one process, no HTTP: a SQLite hub file of --rows rows and apsw clients.

Measures, each run in a fresh child process (so `ru_maxrss`, the process's
peak RSS, belongs to that one measurement, hub and client together):

  download  a new client (a new database file) downloads every row of the
            hub's `items` table: rows/s and peak RSS, with the agent's
            default batching (batch_size=10000), with 10,000-row batches
            asked for, and in one batch (batch_size=None);
  upload    a client writes N new rows into an empty tracked table
            (`uploads`, on the same hub file), in one transaction or (with
            --txn-rows) in transactions of that many rows, then syncs: rows/s
            of the hub's apply_changes (the time spent inside it, summed over
            the upload batches: at most 10,000 rows, the agent's default, but
            a batch never splits a client transaction, so one transaction of
            N rows is one batch) and of the whole sync (client enumeration
            included), and peak RSS.

  scoped    deletes under a row filter (`owner = :user`, --users users
            sharing a `notes` table of --scoped-rows rows): one user's client
            downloads its rows, the hub then updates, deletes and moves
            (changes the owner of) 10% of all rows at random, and the client
            syncs: the deletes it downloads per change in its scope (a change
            to a row that was or is its user's), the deletes of keys it never
            held (0: no other user's keys leave the hub), what a client
            without a record of held keys would have got (every delete and
            move-out on the hub), and the size of the hub's record of the
            client's keys after the next sync (the deleted keys still in it:
            a restore of the session that applied them would be accepted)
            and after two more (pruned to the keys it holds).

After each measurement the child checks the row counts on both sides.

    python3 benchmarks/bench_sync.py [--quick] [--rows N] [--upload N,N]
        [--txn-rows N] [--users N] [--scoped-rows N] [--dir DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import random  # noqa: E402

import apsw  # noqa: E402

import sqlite_ct  # noqa: E402
from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider, SyncAgent  # noqa: E402

TARGETS = {"download_rows_per_s": 30_000, "upload_rows_per_s": 15_000,
           "rss_mib": 150e6 / 2**20}  # 150 MB
TABLE = ("CREATE TABLE {name}(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, "
         "note TEXT)")


def connect(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    conn.setbusytimeout(30_000)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def make_hub(path: str, rows: int) -> None:
    """`items` with `rows` rows written before tracking, `uploads` empty; both tracked."""
    conn = connect(path)
    conn.execute(TABLE.format(name="items"))
    conn.execute(TABLE.format(name="uploads"))
    conn.execute("BEGIN")
    conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                 "INSERT INTO items SELECT i, printf('name-%07d', i), i % 1000, "
                 "(i % 100000) / 100.0, printf('note %d of the benchmark rows', i) FROM n",
                 (rows,))
    conn.execute("COMMIT")
    ServerSyncProvider(conn).provision("items", "uploads")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


class TimedServer(ServerSyncProvider):
    """The hub's provider, summing the time spent inside apply_changes."""
    apply_seconds = 0.0

    def apply_changes(self, upload):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return super().apply_changes(upload)
        finally:
            self.apply_seconds += time.perf_counter() - t0


# --- child phases -------------------------------------------------------------------

def phase_download(args: argparse.Namespace) -> Dict[str, Any]:
    hub = connect(args.hub)
    client = connect(args.db)
    kwargs: Dict[str, Any] = {}
    if args.batch != "default":
        kwargs["batch_size"] = None if args.batch == "none" else int(args.batch)
    agent = SyncAgent(ClientSyncProvider(client), ServerSyncProvider(hub), ["items"], **kwargs)
    t0 = time.perf_counter()
    stats = agent.synchronize()
    seconds = time.perf_counter() - t0
    count = client.execute("SELECT count(*) FROM items").fetchone()[0]
    expected = hub.execute("SELECT count(*) FROM items").fetchone()[0]
    if count != expected or stats.download_changes_applied != expected:
        raise SystemExit(f"download: client has {count} rows, applied "
                         f"{stats.download_changes_applied}, hub has {expected}")
    return {"rows": count, "batches": stats.download_batches, "seconds": seconds,
            "rows_per_s": count / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def phase_upload(args: argparse.Namespace) -> Dict[str, Any]:
    hub = connect(args.hub)
    client = connect(args.db)
    server = TimedServer(hub)
    agent = SyncAgent(ClientSyncProvider(client), server, ["uploads"])
    agent.synchronize()  # creates the (empty) table on the client
    n = int(args.n)
    # One client transaction of every row by default; --txn-rows writes them in
    # transactions of that many rows (an upload batch never splits one).
    step = int(args.txn_rows or 0) or n
    for first in range(1, n + 1, step):
        client.execute("BEGIN")
        client.execute("WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n "
                       "WHERE i < ?) INSERT INTO uploads(id, name, qty, price, note) "
                       "SELECT i, printf('up-%07d', i), i % 1000, i / 7.0, "
                       "printf('uploaded row %d', i) FROM n", (first, min(n, first + step - 1)))
        client.execute("COMMIT")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    server.apply_seconds = 0.0
    t0 = time.perf_counter()
    stats = agent.synchronize()
    seconds = time.perf_counter() - t0
    on_hub = hub.execute("SELECT count(*) FROM uploads").fetchone()[0]
    if on_hub != n or stats.upload_changes_applied != n:
        raise SystemExit(f"upload: hub has {on_hub} rows, applied "
                         f"{stats.upload_changes_applied}, expected {n}")
    return {"rows": n, "txn_rows": step, "sync_seconds": seconds, "apply_seconds": server.apply_seconds,
            "apply_rows_per_s": n / server.apply_seconds, "sync_rows_per_s": n / seconds,
            "rss_before_sync_mib": rss_before,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class CountingServer(ServerSyncProvider):
    """The hub's provider, keeping the keys of the deletes its downloads carry."""
    deletes: List[tuple] = []

    def get_changes(self, request):  # type: ignore[no-untyped-def]
        batch = super().get_changes(request)
        self.deletes.extend(k for tc in batch.tables for k in tc.deletes)
        return batch


def phase_scoped(args: argparse.Namespace) -> Dict[str, Any]:
    from sqlite_ct.sync._held import HELD
    users, rows = int(args.users), int(args.n)
    hub = connect(args.hub)
    hub.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT, body TEXT)")
    hub.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO notes SELECT i, printf('u%04d', i % ?), 'body' FROM n",
                (rows, users))
    server = CountingServer(hub, filters={"notes": "owner = :user"})
    server.provision("notes")
    me = "u0000"
    client = connect(args.db)
    agent = SyncAgent(ClientSyncProvider(client), server, ["notes"], parameters={"user": me})
    agent.synchronize()
    held = {r[0] for r in client.execute("SELECT id FROM notes")}
    rng = random.Random(11)
    in_scope = hub_deletes = 0
    hub.execute("BEGIN")
    for key in rng.sample(range(1, rows + 1), rows // 10):
        (owner,) = hub.execute("SELECT owner FROM notes WHERE id = ?", (key,)).fetchone()
        kind = rng.choice(("update", "delete", "move"))
        new = owner if kind == "update" else None if kind == "delete" \
            else f"u{rng.randrange(users):04d}"
        if kind == "delete":
            hub.execute("DELETE FROM notes WHERE id = ?", (key,))
        else:
            hub.execute("UPDATE notes SET owner = ?, body = 'changed' WHERE id = ?", (new, key))
        in_scope += me in (owner, new)
        hub_deletes += kind == "delete" or (kind == "move" and new != owner)
    hub.execute("COMMIT")
    server.deletes = []
    t0 = time.perf_counter()
    agent.synchronize()
    seconds = time.perf_counter() - t0
    deletes = list(server.deletes)
    mine = sorted(hub.execute("SELECT id, owner, body FROM notes WHERE owner = ?", (me,)))
    if sorted(client.execute("SELECT id, owner, body FROM notes")) != mine:
        raise SystemExit("scoped: the client's rows differ from the hub's rows in its scope")
    def record() -> int:
        return hub.execute(f'SELECT count(*) FROM "{HELD}" WHERE ClientId = ? AND RK <> x\'\'',
                           (agent.client.client_id.bytes_le,)).fetchone()[0]

    agent.synchronize()     # its anchor now shows the deletes applied
    after_next = record()
    agent.synchronize()     # two replica claims later the record is pruned
    agent.synchronize()
    pruned = record()
    return {"rows": rows, "users": users, "client_rows_before": len(held),
            "in_scope_changes": in_scope, "deletes_downloaded": len(deletes),
            "deletes_of_keys_never_held": sum(1 for (k,) in deletes if k not in held),
            "deletes_without_record": hub_deletes, "sync_seconds": seconds,
            "client_rows_after": len(mine), "record_after_next_sync": after_next,
            "record_after_three_syncs": pruned}


# --- the driver ---------------------------------------------------------------------

def run_phase(name: str, **kw: Any) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", name]
    cmd += [f"--{k}={v}" for k, v in kw.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"phase {name} {kw} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment() -> Dict[str, Any]:
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
                       f"{platform.release()}",
            "python": platform.python_version(), "sqlite": apsw.sqlite_lib_version(),
            "apsw": apsw.apsw_version(), "sqlite_ct": os.path.dirname(sqlite_ct.__file__),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def ok(good: bool) -> str:
    return "met" if good else "NOT met"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k hub rows, 5k uploaded (a smoke run)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows on the hub")
    ap.add_argument("--upload", default="100000,1000000",
                    help="comma-separated numbers of new client rows to upload")
    ap.add_argument("--txn-rows", type=int, default=0,
                    help="rows per client transaction of the upload (0: one transaction)")
    ap.add_argument("--users", type=int, default=100, help="users sharing the filtered table")
    ap.add_argument("--scoped-rows", type=int, default=100_000,
                    help="rows of the filtered table")
    ap.add_argument("--dir", default=None, help="directory for the databases")
    ap.add_argument("--json", default=None, help="write the raw numbers here")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--hub", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--batch", help=argparse.SUPPRESS)
    ap.add_argument("--n", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase:
        phase = {"download": phase_download, "upload": phase_upload,
                 "scoped": phase_scoped}[args.phase]
        print(json.dumps(phase(args)))
        return 0
    if args.quick:
        args.rows, args.upload, args.scoped_rows = 20_000, "5000", 10_000
    uploads = [int(x) for x in args.upload.split(",") if x.strip()]
    env = environment()
    workdir = tempfile.mkdtemp(prefix="bench-sync-", dir=args.dir)
    downloads: Dict[str, Dict[str, Any]] = {}
    ups: List[Dict[str, Any]] = []
    try:
        hub = os.path.join(workdir, "hub.db")
        print(f"building a hub of {args.rows} rows ...", file=sys.stderr)
        t0 = time.perf_counter()
        make_hub(hub, args.rows)
        env["hub_build_seconds"] = round(time.perf_counter() - t0, 1)
        env["hub_file_mb"] = round(os.path.getsize(hub) / 1e6, 1)
        for batch in ("default", "10000", "none"):
            print(f"initial download, batch {batch} ...", file=sys.stderr)
            db = os.path.join(workdir, f"client-{batch}.db")
            downloads[batch] = run_phase("download", hub=hub, db=db, batch=batch)
            os.remove(db)
        for n in uploads:
            print(f"upload of {n} rows ...", file=sys.stderr)
            hub_copy = os.path.join(workdir, f"hub-up-{n}.db")
            shutil.copyfile(hub, hub_copy)  # every upload starts from the same empty `uploads`
            ups.append(run_phase("upload", hub=hub_copy, db=os.path.join(workdir, f"up-{n}.db"),
                                 n=n, **{"txn-rows": args.txn_rows}))
            for suffix in ("", "-wal", "-shm"):
                for p in (hub_copy + suffix, os.path.join(workdir, f"up-{n}.db") + suffix):
                    if os.path.exists(p):
                        os.remove(p)
        print("scoped deletes ...", file=sys.stderr)
        scoped = run_phase("scoped", hub=os.path.join(workdir, "scoped-hub.db"),
                           db=os.path.join(workdir, "scoped-client.db"), n=args.scoped_rows,
                           users=args.users)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"### Sync in process (SQLite hub file, apsw), {env['date']}\n")
    print(f"{env['machine']}; Python {env['python']}, SQLite {env['sqlite']} (apsw "
          f"{env['apsw']}); hub of {args.rows:,} rows ({env['hub_file_mb']} MB); load "
          f"{env['loadavg']} -> {env['loadavg_end']}\n")
    print("| measure | rows | time | rows/s | peak RSS | target |")
    print("|---|---:|---:|---:|---:|---|")
    for batch, d in downloads.items():
        label = ("default batching" if batch == "default"
                 else "one batch (batch_size=None)" if batch == "none"
                 else f"{int(batch):,}-row batches")
        print(f"| initial download, {label}, {d['batches']} batches | {d['rows']:,} | "
              f"{d['seconds']:.1f} s | {d['rows_per_s']:,.0f} | {d['peak_rss_mib']:.0f} MiB | "
              f">= 30,000 rows/s {ok(d['rows_per_s'] >= TARGETS['download_rows_per_s'])}; "
              f"<= 150 MB {ok(d['peak_rss_mib'] <= TARGETS['rss_mib'])} |")
    for u in ups:
        txns = ("one client transaction" if u["txn_rows"] >= u["rows"]
                else f"client transactions of {u['txn_rows']:,} rows")
        print(f"| upload apply on the hub (apply_changes, {txns}) | "
              f"{u['rows']:,} | {u['apply_seconds']:.1f} s | {u['apply_rows_per_s']:,.0f} | "
              f"{u['peak_rss_mib']:.0f} MiB | >= 15,000 rows/s "
              f"{ok(u['apply_rows_per_s'] >= TARGETS['upload_rows_per_s'])}; <= 150 MB "
              f"{ok(u['peak_rss_mib'] <= TARGETS['rss_mib'])} |")
        print(f"| upload, whole sync (client enumeration included) | {u['rows']:,} | "
              f"{u['sync_seconds']:.1f} s | {u['sync_rows_per_s']:,.0f} | "
              f"{u['rss_before_sync_mib']:.0f} MiB before the sync | |")
    sc = scoped
    print(f"\n#### Deletes under a row filter ({sc['users']} users, {sc['rows']:,} rows, "
          f"10% of them changed on the hub)\n")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| the client's rows before / after | {sc['client_rows_before']:,} / "
          f"{sc['client_rows_after']:,} |")
    print(f"| changes in the client's scope | {sc['in_scope_changes']:,} |")
    print(f"| deletes downloaded | {sc['deletes_downloaded']:,} |")
    print(f"| downloaded deletes per in-scope change | "
          f"{sc['deletes_downloaded'] / max(sc['in_scope_changes'], 1):.2f} |")
    print(f"| deletes of keys the client never held | {sc['deletes_of_keys_never_held']:,} |")
    print(f"| deletes a client without a record of held keys would get | "
          f"{sc['deletes_without_record']:,} |")
    print(f"| the hub's record of the client's keys after the next sync | "
          f"{sc['record_after_next_sync']:,} keys |")
    print(f"| the hub's record of the client's keys two syncs later | "
          f"{sc['record_after_three_syncs']:,} keys |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "environment": env, "download": downloads,
                       "upload": ups, "scoped": scoped}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
