"""What portable mode costs: the four peer-bench operations on an untracked
table, a natively tracked one, and a portable one (pure-SQL triggers,
csrc/portable.c), written once through a connection with sqlite-ct loaded and
once through one without it.

    python3 benchmarks/bench_portable.py            # 100k rows, 10k autocommit, 5 reps
    python3 benchmarks/bench_portable.py --quick    # 5k rows, 500 autocommit, 2 reps

Operations (../shared/reference/peer-bench.md): a. INSERT 100k rows in one
transaction; b. 10k single-row UPDATEs, each its own (autocommit)
transaction; c. UPDATE 50% of the rows in one transaction; d. DELETE 10% in
one transaction. Method as benchlib.py: apsw, WAL, synchronous=NORMAL, a fresh
file per variant and repetition, repetitions interleaved (rotating order),
each ratio the median of per-repetition ratios to untracked (min..max).

Prints a markdown table; --json writes the raw numbers. Nothing is written to
benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import apsw  # noqa: E402

import benchlib as bl  # noqa: E402
import sqlite_ct  # noqa: E402

OPS = ("insert", "autocommit", "update", "delete")
TITLES = {"insert": "a. INSERT {n} rows, one txn",
          "autocommit": "b. {a} autocommit UPDATEs",
          "update": "c. UPDATE 50%, one txn",
          "delete": "d. DELETE 10%, one txn"}
UPDATE_HALF_SQL, DELETE_TENTH_SQL, AUTOCOMMIT_SQL = (
    bl.UPDATE_HALF_SQL, bl.DELETE_TENTH_SQL, bl.AUTOCOMMIT_SQL)

# name -> (tracking mode or None, whether the writing connection loads sqlite-ct)
VARIANTS: Dict[str, tuple] = {
    "untracked": (None, False),
    "native": ("native", True),
    "portable": ("portable", True),
    "portable, writer without extension": ("portable", False),
}


def connect(path: str, load: bool) -> Any:
    conn = apsw.Connection(path)
    if load:
        sqlite_ct.load(conn)
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL").fetchall()
    return conn


OP_FUNCS = bl.OP_FUNCS


def run_variant(name: str, path: str, data: Dict[str, Any]) -> Dict[str, Any]:
    mode, load = VARIANTS[name]
    bl.remove_db(path)
    setup = connect(path, True)
    try:
        setup.execute(bl.TABLE_SQL)
        if mode:
            sqlite_ct.create_schema(setup, "items", mode=mode)
    finally:
        setup.close()
    conn = connect(path, load)
    try:
        cur = conn.cursor()
        out: Dict[str, Any] = {}
        for op in OPS:
            out[op], _ = bl.timed(lambda: OP_FUNCS[op](cur, data))
        n = len(data["rows"])
        deleted = len([i for i in range(1, n + 1) if i % 10 == 5])
        if bl.scalar(conn, "SELECT count(*) FROM items") != n - deleted:
            raise AssertionError(f"{name}: wrong row count at the end")
        if mode:
            if bl.scalar(conn, "SELECT count(*) FROM __sysOCSDeletedRows") != deleted:
                raise AssertionError(f"{name}: wrong tombstone count")
            out["log_rows"] = bl.scalar(conn, "SELECT count(*) FROM __sysTxCommitSequence")
        out["size"] = bl.size_after_checkpoint(conn, path)
        return out
    finally:
        conn.close()
        bl.remove_db(path)


def summarize(reps: List[Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    summary: Dict[str, Any] = {}
    for name in VARIANTS:
        s: Dict[str, Any] = {}
        for key in OPS + ("size",):
            ratios = [rep[name][key] / rep["untracked"][key] for rep in reps]
            s[key] = {"ratio": bl.spread(ratios),
                      "value": statistics.median(rep[name][key] for rep in reps)}
        if "log_rows" in reps[0][name]:
            s["log_rows"] = reps[0][name]["log_rows"]
        summary[name] = s
    return summary


def render(summary: Dict[str, Any], args: argparse.Namespace) -> str:
    lines = [f"**Portable mode cost (apsw {apsw.sqlite_lib_version()}, {args.rows} rows, "
             f"{args.autocommit} autocommit, {args.reps} interleaved reps; median ms and "
             f"ratio to untracked, min..max)**", ""]
    head = ["variant"] + [TITLES[op].format(n=args.rows, a=args.autocommit) for op in OPS] \
        + ["file size", "log rows"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for name, s in summary.items():
        cells = [name]
        for op in OPS:
            ms = s[op]["value"] * 1000
            cells.append(f"{ms:.0f} ms, {bl.fmt_x(s[op]['ratio'])}" if name != "untracked"
                         else f"{ms:.0f} ms")
        size = s["size"]["value"] / 1024 / 1024
        cells.append(f"{size:.1f} MiB" + ("" if name == "untracked"
                                          else f", {s['size']['ratio']['median']:.2f}x"))
        cells.append(str(s.get("log_rows", "")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5k rows, 500 autocommit, 2 reps")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--autocommit", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None, help="directory for the database files")
    ap.add_argument("--json", default=None, help="write the raw numbers here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.autocommit, args.reps = 5_000, 500, 2
    rows = bl.make_rows(args.rows)
    rng = random.Random(bl.SEED)
    data = {"rows": rows,
            "autocommit": [(rng.randrange(1000), rng.randrange(1, args.rows + 1))
                           for _ in range(args.autocommit)]}
    directory = args.dir or tempfile.mkdtemp(prefix="bench_portable_")
    path = os.path.join(directory, "bench_portable.db")
    reps: List[Dict[str, Dict[str, Any]]] = []
    for rep in range(args.reps):
        result: Dict[str, Dict[str, Any]] = {}
        for name in bl.rotated(list(VARIANTS), rep):
            bl.progress(f"rep {rep + 1}/{args.reps}: {name}")
            result[name] = run_variant(name, path, data)
        reps.append(result)
    summary = summarize(reps)
    print(render(summary, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "reps": reps, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
