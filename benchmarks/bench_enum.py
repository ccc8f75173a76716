#!/usr/bin/env python3
"""Change enumeration, create_schema on a loaded table, memory and file size
at 1M rows.

1. Load: --rows rows (default 1,000,000) into an untracked table and, through
   sqlite-ct's triggers, into a tracked one, one transaction each; file sizes.
2. create_schema on the loaded (untracked) table against CREATE INDEX on one
   integer column (qty) of the same table, each on a fresh copy, interleaved.
3. For each N in --changes (100, 10k, 100k): a copy of the create_schema'd
   table, N random rows updated in one transaction after anchor A, then,
   interleaved (each timed call right after an untimed one of the same form):
     enumerate   sqlite_ct.enumerate_changes(conn, "items", since=A) (dicts)
     by key      the same N rows fetched by primary key to dicts
                 (WHERE id IN (SELECT value FROM json_each(?)))
     engine-only count(note) through the change-BSN index range, and
                 count(note) of the same rows by key; plus a NOT INDEXED full
                 scan for reference
4. Streaming: iter_changes over every row of the tracked 1M-row table
   (since=0: 1M inserts) against enumerate_changes, peak RSS
   (ru_maxrss) measured in a fresh subprocess each.

    python3 benchmarks/bench_enum.py                  # full run (~2-3 min)
    python3 benchmarks/bench_enum.py --quick          # CI smoke run (20k rows)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import sqlite_ct  # noqa: E402

SELECT_COLS = ", ".join(bl.COLUMNS)
BY_KEY_SQL = (f"SELECT {SELECT_COLS} FROM items "
              "WHERE id IN (SELECT value FROM json_each(?))")
ENGINE_KEY_SQL = "SELECT count(note) FROM items WHERE id IN (SELECT value FROM json_each(?))"
ENGINE_ENUM_SQL = ('SELECT count(note) FROM items '
                   'WHERE "__sysChangeTxBsn" > ? AND "__sysChangeTxBsn" <= ?')
ENGINE_SCAN_SQL = ('SELECT count(note) FROM items NOT INDEXED '
                   'WHERE "__sysChangeTxBsn" > ? AND "__sysChangeTxBsn" <= ?')
FORMS = ("enumerate", "by_key", "engine_enum", "engine_key", "engine_scan")
FORM_LABELS = {
    "enumerate": "sqlite-ct enumerate_changes(since=anchor), to dicts",
    "by_key": "ref: the same rows fetched by primary key, to dicts",
    "engine_enum": "engine-only: count(note) over the change-BSN index range",
    "engine_key": "engine-only ref: count(note) of the same rows by key",
    "engine_scan": "engine-only ref: NOT INDEXED full scan",
}


# ---- the memory child ------------------------------------------------------

def _vm_hwm_kb() -> Optional[int]:
    """Peak RSS of this process image (Linux /proc/self/status VmHWM), in KB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_child(mode: str, path: str, since: int, host: str) -> Dict[str, Any]:
    """Runs in a fresh interpreter: peak RSS of streaming or collecting."""
    conn = bl.CONNECT[host](path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_before = _vm_hwm_kb()
    t0 = time.perf_counter()
    count = 0
    if mode == "iter":
        with sqlite_ct.iter_changes(conn, "items", since) as stream:
            for _ in stream:
                count += 1
    elif mode == "enumerate":
        changes = sqlite_ct.enumerate_changes(conn, "items", since)
        count = len(changes)
    elif mode != "baseline":
        raise SystemExit(f"unknown --rss-child mode {mode}")
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm_after = _vm_hwm_kb()
    conn.close()
    return {"mode": mode, "count": count, "seconds": seconds,
            "maxrss_kb_before": before, "maxrss_kb": after,
            "vmhwm_kb_before": hwm_before, "vmhwm_kb": hwm_after}


# On Linux a process's ru_maxrss starts at the RSS of the process it was
# forked from (it survives fork + exec), so a child of this big parent would
# report the parent's size. A small launcher interpreter starts the measured
# child instead: its ru_maxrss then starts from the launcher's few MB.
_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def run_rss_child(mode: str, path: str, since: int, host: str) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable,
                          os.path.abspath(__file__), "--rss-child", mode,
                          "--db", path, "--since", str(since), "--host", host],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# ---- steps -----------------------------------------------------------------

def load(host: str, path: str, rows: List[tuple], tracked: bool) -> float:
    bl.remove_db(path)
    conn = bl.CONNECT[host](path)
    try:
        conn.execute(bl.TABLE_SQL)
        if tracked:
            sqlite_ct.create_schema(conn, "items")
        cur = conn.cursor()

        def run() -> None:
            cur.execute("BEGIN")
            cur.executemany(bl.INSERT_SQL, rows)
            cur.execute("COMMIT")
        seconds, _ = bl.timed(run)
        bl.size_after_checkpoint(conn, path)
        return seconds
    finally:
        conn.close()


def copy_db(src: str, dst: str) -> None:
    bl.remove_db(dst)
    shutil.copyfile(src, dst)


def ddl_step(host: str, base: str, tmp: str, reps: int) -> Dict[str, Any]:
    """create_schema vs CREATE INDEX on qty, each on a fresh copy of base."""
    res: Dict[str, List[float]] = {"create_schema": [], "create_index": []}
    kinds = ("create_index", "create_schema")
    for rep in range(reps):
        for kind in bl.rotated(kinds, rep):
            path = os.path.join(tmp, f"{kind}.db")
            copy_db(base, path)
            conn = bl.CONNECT[host](path)
            try:
                if kind == "create_index":
                    seconds, _ = bl.timed(
                        lambda: conn.execute("CREATE INDEX items_qty ON items(qty)"))
                else:
                    seconds, _ = bl.timed(lambda: sqlite_ct.create_schema(conn, "items"))
                bl.size_after_checkpoint(conn, path)
            finally:
                conn.close()
            res[kind].append(seconds)
        bl.progress(f"ddl rep {rep + 1}/{reps}: create_schema {res['create_schema'][-1]:.3f} s,"
                    f" CREATE INDEX {res['create_index'][-1]:.3f} s")
    ratios = [a / b for a, b in zip(res["create_schema"], res["create_index"])]
    return {"raw": res, "create_schema_s": bl.spread(res["create_schema"]),
            "create_index_s": bl.spread(res["create_index"]), "ratio": bl.spread(ratios)}


def prepare_changes(host: str, tracked_base: str, path: str, n_rows: int, n: int,
                    seed: int) -> Dict[str, Any]:
    copy_db(tracked_base, path)
    conn = bl.CONNECT[host](path)
    try:
        anchor = sqlite_ct.last_committed_csn(conn)
        ids = random.Random(seed).sample(range(1, n_rows + 1), n)
        ids_json = json.dumps(ids)
        cur = conn.cursor()

        def run() -> None:
            cur.execute("BEGIN")
            cur.execute("UPDATE items SET qty=qty+1 WHERE id IN (SELECT value FROM json_each(?))",
                        (ids_json,))
            cur.execute("COMMIT")
        seconds, _ = bl.timed(run)
        bl.size_after_checkpoint(conn, path)
        new_anchor = sqlite_ct.last_committed_csn(conn)
        plan = [r[-1] for r in conn.execute(
            "EXPLAIN QUERY PLAN " + ENGINE_ENUM_SQL, (anchor, new_anchor)).fetchall()]
        return {"anchor": anchor, "new_anchor": new_anchor, "ids_json": ids_json,
                "update_s": seconds, "plan": plan}
    finally:
        conn.close()


def measure_form(conn: Any, form: str, case: Dict[str, Any]) -> tuple:
    anchor, new_anchor, ids_json = case["anchor"], case["new_anchor"], case["ids_json"]
    cols = bl.COLUMNS
    if form == "enumerate":
        seconds, cs = bl.timed(lambda: sqlite_ct.enumerate_changes(conn, "items", anchor))
        return seconds, len(cs.updates), len(cs)
    if form == "by_key":
        seconds, rows = bl.timed(lambda: [dict(zip(cols, r)) for r in
                                          conn.execute(BY_KEY_SQL, (ids_json,))])
        return seconds, len(rows), len(rows)
    sql, params = {"engine_enum": (ENGINE_ENUM_SQL, (anchor, new_anchor)),
                   "engine_key": (ENGINE_KEY_SQL, (ids_json,)),
                   "engine_scan": (ENGINE_SCAN_SQL, (anchor, new_anchor))}[form]
    seconds, count = bl.timed(lambda: conn.execute(sql, params).fetchone()[0])
    return seconds, count, count


def enum_step(host: str, cases: Dict[int, Dict[str, Any]], paths: Dict[int, str],
              reps: int) -> Dict[str, Any]:
    conns = {n: bl.CONNECT[host](paths[n]) for n in cases}
    raw: Dict[int, Dict[str, List[float]]] = {n: {f: [] for f in FORMS} for n in cases}
    try:
        sizes = list(cases)
        for rep in range(reps):
            for n in bl.rotated(sizes, rep):
                for form in bl.rotated(FORMS, rep):
                    # An untimed call first, so that every form is timed with
                    # its own pages and code in the caches: the rotation keeps
                    # FORMS' cyclic order, so the full scan (which empties
                    # the caches) would otherwise come right before
                    # `enumerate` in most repetitions, and `by_key` right
                    # after it, reading the pages it had just read.
                    measure_form(conns[n], form, cases[n])
                    seconds, got, total = measure_form(conns[n], form, cases[n])
                    if got != n or total != n:
                        raise AssertionError(f"{form} at N={n}: {got} rows of the expected "
                                             f"kind, {total} in all; expected {n}")
                    raw[n][form].append(seconds)
            bl.progress(f"enum rep {rep + 1}/{reps}: " + "; ".join(
                f"N={n} enum/by-key {raw[n]['enumerate'][-1] / raw[n]['by_key'][-1]:.2f}"
                for n in sizes))
    finally:
        for c in conns.values():
            c.close()
    out: Dict[int, Dict[str, Any]] = {}
    for n in cases:
        r = raw[n]
        out[n] = {"raw": r, **{f: bl.spread(r[f]) for f in FORMS},
                  "ratio": bl.spread([a / b for a, b in zip(r["enumerate"], r["by_key"])]),
                  "engine_ratio": bl.spread([a / b for a, b in
                                             zip(r["engine_enum"], r["engine_key"])]),
                  "scan_ratio": bl.spread([a / b for a, b in
                                           zip(r["engine_scan"], r["engine_enum"])])}
    return out


# ---- report ----------------------------------------------------------------

def ms(s: Dict[str, float]) -> str:
    return f"{s['median'] * 1000:.1f} ({s['min'] * 1000:.1f}..{s['max'] * 1000:.1f})"


def render(res: Dict[str, Any], args: argparse.Namespace, env: Dict[str, Any]) -> str:
    n_rows = args.rows
    rows_label = f"{n_rows:,}"
    enum = res["enum"]
    out = [f"_{bl.env_line(env, args.host)} {args.reps} interleaved repetitions "
           f"(create_schema vs CREATE INDEX: {args.ddl_reps}; loads: {args.load_reps})._", ""]

    out.append(f"**Headline ({args.host}, {rows_label}-row table): sqlite-ct against the "
               "write path's targets**")
    out.append("")
    rows = []
    for n, e in enum.items():
        rows.append([f"enumerate {n:,} changed rows, to dicts / same rows by key",
                     bl.fmt_x(e["ratio"]), bl.fmt_target("enumerate"),
                     bl.target_verdict("enumerate", e["ratio"]["median"])])
    s = res["sizes"]
    rows.append(["file size, every row inserted through tracking / untracked",
                 f"{s['tracked_load'] / s['untracked']:.2f}x", bl.fmt_target("size"),
                 bl.target_verdict("size", s["tracked_load"] / s["untracked"])])
    rows.append(["file size, create_schema on the loaded table / untracked",
                 f"{s['create_schema'] / s['untracked']:.2f}x", bl.fmt_target("size"),
                 bl.target_verdict("size", s["create_schema"] / s["untracked"])])
    d = res["ddl"]
    rows.append(["create_schema / CREATE INDEX on qty", bl.fmt_x(d["ratio"]),
                 bl.fmt_target("create_schema"),
                 bl.target_verdict("create_schema", d["ratio"]["median"])])
    if res.get("rss"):
        r = res["rss"]
        it, en = r["iter"], r["enumerate"]
        rows.append([f"peak RSS streaming {it['count']:,} changes (iter_changes)",
                     f"{it['maxrss_kb'] / 1024:.0f} MB (interpreter + connection: "
                     f"{it['maxrss_kb_before'] / 1024:.0f} MB; enumerate_changes: "
                     f"{en['maxrss_kb'] / 1024:.0f} MB)", "bounded (growth < 64 MB)",
                     "met" if it["maxrss_kb"] - it["maxrss_kb_before"] < 64 * 1024
                     else "**not met**"])
    out.append(bl.md_table(["measure", "sqlite-ct", "target", "met?"], rows))
    out.append("")

    out.append(f"#### enumerate changes since an anchor ({rows_label} rows), "
               "median ms (min..max)")
    out.append("")
    header = ["query"] + [f"N = {n:,}" for n in enum]
    rows = [[FORM_LABELS[f]] + [ms(enum[n][f]) for n in enum] for f in FORMS]
    out.append(bl.md_table(header, rows))
    out.append("")
    rows = [["enumerate_changes / by key (to dicts)"] + [bl.fmt_x(enum[n]["ratio"]) for n in enum],
            ["engine-only: index range / by key"] + [bl.fmt_x(enum[n]["engine_ratio"])
                                                    for n in enum],
            ["engine-only: full scan / index range"] + [bl.fmt_x(enum[n]["scan_ratio"])
                                                       for n in enum],
            ["UPDATE of the N rows through the triggers, s (one run)"] +
            [f"{res['cases'][n]['update_s']:.3f}" for n in enum]]
    out.append(bl.md_table(["paired ratio (same repetition)"] + header[1:], rows))
    plan = next(iter(res["cases"].values()))["plan"]
    out.append("")
    out.append(f"Query plan of the index range: `{'; '.join(plan)}`.")
    out.append("")

    out.append(f"#### {rows_label} rows: load, create_schema, file size")
    out.append("")
    ld = res["load"]
    out.append(bl.md_table(
        ["one transaction of " + rows_label + " inserts", "median s (min..max)", "x untracked"],
        [["0 untracked", f"{ld['untracked']['median']:.2f} ({ld['untracked']['min']:.2f}.."
          f"{ld['untracked']['max']:.2f})", "1.00x"],
         ["1 sqlite-ct (through the triggers)", f"{ld['tracked']['median']:.2f} "
          f"({ld['tracked']['min']:.2f}..{ld['tracked']['max']:.2f})",
          bl.fmt_x(ld["ratio"])]]))
    out.append("")
    out.append(bl.md_table(
        ["on the loaded untracked table", "median s (min..max)"],
        [["CREATE INDEX items_qty ON items(qty)",
          f"{d['create_index_s']['median']:.3f} ({d['create_index_s']['min']:.3f}.."
          f"{d['create_index_s']['max']:.3f})"],
         ["sqlite_ct.create_schema(conn, 'items')",
          f"{d['create_schema_s']['median']:.3f} ({d['create_schema_s']['min']:.3f}.."
          f"{d['create_schema_s']['max']:.3f})"],
         ["ratio create_schema / CREATE INDEX (paired)", bl.fmt_x(d["ratio"])]]))
    out.append("")
    out.append(bl.md_table(
        [f"database, {rows_label} rows, after wal_checkpoint(TRUNCATE)", "size MB",
         "x untracked"],
        [["0 untracked", f"{s['untracked'] / 1e6:.1f}", "1.00x"],
         ["1 sqlite-ct, every row inserted through the triggers (stamped)",
          f"{s['tracked_load'] / 1e6:.1f}", f"{s['tracked_load'] / s['untracked']:.2f}x"],
         ["1 sqlite-ct, create_schema on the loaded table (NULL stamps)",
          f"{s['create_schema'] / 1e6:.1f}", f"{s['create_schema'] / s['untracked']:.2f}x"],
         ["untracked + CREATE INDEX on qty (for scale)",
          f"{s['create_index'] / 1e6:.1f}", f"{s['create_index'] / s['untracked']:.2f}x"]]))
    out.append("")

    if res.get("rss"):
        r = res["rss"]
        out.append(f"#### memory: all {r['iter']['count']:,} changes of the tracked table "
                   "(since=0), fresh subprocess each")
        out.append("")
        rows = []
        for mode, label in (("baseline", "interpreter + imports + connection only"),
                            ("iter", "iter_changes, rows consumed one at a time"),
                            ("enumerate", "enumerate_changes (ChangeSet of dicts)")):
            e = r[mode]
            hwm = (f"{e['vmhwm_kb'] / 1024:.0f}" if e.get("vmhwm_kb") is not None else "n/a")
            rows.append([label, f"{e['count']:,}", f"{e['seconds']:.2f}",
                         f"{e['maxrss_kb'] / 1024:.0f}",
                         f"{(e['maxrss_kb'] - e['maxrss_kb_before']) / 1024:.0f}", hwm])
        out.append(bl.md_table(["mode", "changes", "s", "peak RSS (ru_maxrss) MB",
                                "growth over the start MB", "VmHWM MB (cross-check)"], rows))
    return "\n".join(out) + "\n"


# ---- main ------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--rows", type=int, default=1_000_000, help="table size (1,000,000)")
    ap.add_argument("--changes", default="100,10000,100000",
                    help="comma-separated numbers of changed rows (100,10000,100000)")
    ap.add_argument("--reps", type=int, default=7, help="enumeration repetitions (7)")
    ap.add_argument("--ddl-reps", type=int, default=3,
                    help="create_schema vs CREATE INDEX repetitions (3)")
    ap.add_argument("--load-reps", type=int, default=1, help="repetitions of the loads (1)")
    ap.add_argument("--host", choices=("apsw", "sqlite3"), default="apsw")
    ap.add_argument("--no-rss", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run: 20k rows, small N; asserts nothing about speed")
    ap.add_argument("--json", metavar="PATH", help="raw results (default: benchmarks/results/)")
    ap.add_argument("--write-readme", action="store_true",
                    help="replace this host's block in benchmarks/README.md")
    ap.add_argument("--dir", help="directory for the database files (default: a temp dir)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--since", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args.db, args.since, args.host)))
        return 0
    if args.quick:
        args.rows, args.changes, args.reps, args.ddl_reps, args.load_reps = (
            20_000, "100,1000,5000", 2, 1, 1)
    changes = [int(c) for c in args.changes.split(",")]
    if max(changes) > args.rows:
        ap.error("--changes must not exceed --rows")

    env = bl.environment()
    t_start = time.perf_counter()
    res: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sqlitect-enum-", dir=args.dir) as tmp:
        base = os.path.join(tmp, "untracked.db")
        tracked_load = os.path.join(tmp, "tracked-load.db")
        bl.progress(f"generating {args.rows:,} rows")
        rows = bl.make_rows(args.rows)
        loads: Dict[str, List[float]] = {"untracked": [], "tracked": []}
        for rep in range(args.load_reps):
            for kind in bl.rotated(("untracked", "tracked"), rep):
                path = base if kind == "untracked" else tracked_load
                loads[kind].append(load(args.host, path, rows, kind == "tracked"))
            bl.progress(f"load rep {rep + 1}/{args.load_reps}: untracked "
                        f"{loads['untracked'][-1]:.2f} s, tracked {loads['tracked'][-1]:.2f} s")
        del rows
        res["load"] = {"raw": loads, "untracked": bl.spread(loads["untracked"]),
                       "tracked": bl.spread(loads["tracked"]),
                       "ratio": bl.spread([t / u for t, u in zip(loads["tracked"],
                                                                  loads["untracked"])])}

        res["ddl"] = ddl_step(args.host, base, tmp, args.ddl_reps)
        tracked_base = os.path.join(tmp, "create_schema.db")   # left by ddl_step
        res["sizes"] = {"untracked": os.path.getsize(base),
                        "tracked_load": os.path.getsize(tracked_load),
                        "create_schema": os.path.getsize(tracked_base),
                        "create_index": os.path.getsize(os.path.join(tmp, "create_index.db"))}

        cases, paths = {}, {}
        for i, n in enumerate(changes):
            paths[n] = os.path.join(tmp, f"changes-{n}.db")
            cases[n] = prepare_changes(args.host, tracked_base, paths[n], args.rows, n,
                                       bl.SEED + 10 + i)
            bl.progress(f"N={n}: {n} rows updated in {cases[n]['update_s']:.3f} s")
        res["cases"] = cases
        res["enum"] = enum_step(args.host, cases, paths, args.reps)
        for n in changes:
            os.remove(paths[n])

        if not args.no_rss:
            res["rss"] = {}
            for mode in ("baseline", "iter", "enumerate"):
                res["rss"][mode] = run_rss_child(mode, tracked_load, 0, args.host)
                bl.progress(f"rss {mode}: {res['rss'][mode]['maxrss_kb'] / 1024:.0f} MB peak, "
                            f"{res['rss'][mode]['count']} changes, "
                            f"{res['rss'][mode]['seconds']:.2f} s")
    bl.finish_environment(env)
    text = render(res, args, env)
    print(text)
    bl.progress(f"wall time {time.perf_counter() - t_start:.1f} s")
    for case in res["cases"].values():
        case.pop("ids_json")
    record = {"script": "bench_enum", "env": env, "args": vars(args), "results": res,
              "markdown": text}
    bl.write_json(args.json or bl.default_json_path(
        "bench_enum", args.host + ("-quick" if args.quick else "")), record)
    if args.write_readme:
        bl.update_readme(f"bench_enum:{args.host}", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
