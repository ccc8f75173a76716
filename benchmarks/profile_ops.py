#!/usr/bin/env python3
"""Where sqlite-ct's per-row time goes: profiles of the bench_ops operations.

For each operation and variant, the database is prepared in this process
(table, variant setup, and for update/delete/autocommit the rows, inserted in
an earlier transaction, and the operation's data pickled), then the operation
alone runs in a child process under one of:

  --tool callgrind  valgrind --tool=callgrind --toggle-collect=sqlite3_step:
                    instructions (Ir) inside sqlite3_step only (the statement,
                    its triggers, the extension's SQL functions, the b-tree,
                    the commit; not Python). Deterministic, so ablations can be
                    compared exactly; but Ir over-weights memset/memcpy (valgrind
                    counts every iteration of `rep stos`/`rep movs`), so read it
                    together with perf. Keeps <op>-<variant>.out for
                    callgrind_annotate --inclusive=yes [--tree=caller].
  --tool perf       perf record -e cpu-clock --call-graph dwarf (this VM has no
                    hardware counters: `perf stat -e instructions` says <not
                    supported>): the share of the time inside sqlite3_step spent
                    in selected functions (inclusive) and the top self symbols.

    python3 benchmarks/profile_ops.py                        # callgrind, 20k rows
    python3 benchmarks/profile_ops.py --explore --ops insert,update,delete
    python3 benchmarks/profile_ops.py --tool perf --variants untracked,sqlite-ct
    callgrind_annotate --inclusive=yes benchmarks/results/callgrind/insert-sqlite-ct.out
"""
from __future__ import annotations

import argparse
import glob
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import bench_ops  # noqa: E402

PROFILE_OPS = ("insert", "autocommit", "update", "delete")
# Variants that run the common operations (x5 brings its own, not profiled here).
VARIANTS = {v.name: v for v in bench_ops.MAIN_VARIANTS + bench_ops.EXPLORE_VARIANTS
            if type(v).op_func is bench_ops.Variant.op_func}


def data_for(rows: int, autocommit: int) -> Dict[str, Any]:
    rng = random.Random(bl.SEED + 1)
    return {"rows": bl.make_rows(rows),
            "autocommit": [(rng.randrange(1000), rng.randint(1, rows))
                           for _ in range(autocommit)]}


def prepare(variant: str, op: str, path: str, data: Dict[str, Any]) -> str:
    """Set up the database for one operation; returns the pickle of the data
    the operation needs, so the profiled child does not generate it."""
    bl.remove_db(path)
    conn = bl.connect_apsw(path)
    try:
        conn.execute(bl.TABLE_SQL)
        VARIANTS[variant].setup(conn)
        if op != "insert":
            bl.op_insert(conn.cursor(), data)
        bl.size_after_checkpoint(conn, path)
    finally:
        conn.close()
    pickled = path + ".pickle"
    with open(pickled, "wb") as f:
        pickle.dump({k: data[k] if k == {"insert": "rows", "autocommit": "autocommit"}.get(op)
                     else [] for k in data}, f)
    return pickled


def run_op(op: str, path: str, pickled: str) -> None:
    with open(pickled, "rb") as f:
        data = pickle.load(f)
    conn = bl.connect_apsw(path)
    try:
        bench_ops.OP_FUNCS[op](conn.cursor(), data)
    finally:
        conn.close()


def run_all(variant: str, path: str, pickled: str) -> None:
    """All four operations in bench_ops order on one fresh file, for callgrind:
    os.getppid() marks the boundaries (--dump-before=getppid), so each
    operation lands in its own dump file."""
    with open(pickled, "rb") as f:
        data = pickle.load(f)
    bl.remove_db(path)
    conn = bl.connect_apsw(path)
    try:
        conn.execute(bl.TABLE_SQL)
        VARIANTS[variant].setup(conn)
        cur = conn.cursor()
        for op in PROFILE_OPS:
            os.getppid()
            bench_ops.OP_FUNCS[op](cur, data)
        os.getppid()
    finally:
        conn.close()


def child_cmd(op: str, path: str, pickled: str) -> List[str]:
    return [sys.executable, os.path.abspath(__file__), "--run-op", op, "--db", path,
            "--data", pickled]


def total_ir(out_file: str) -> int:
    with open(out_file) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


# Functions whose inclusive share of the time inside sqlite3_step the perf
# summary reports, and what they stand for in sqlite-ct's triggers.
PERF_FUNCS = [
    ("sqlite3DbMallocZero", "zeroed allocations: mostly OP_Program frames of trigger programs"),
    ("sqlite3BtreeOpen", "ephemeral b-tree opened (INSERT..SELECT reading its own table)"),
    ("subjournalPageIfRequired", "statement journal: page copied before a statement's first write"),
    ("sqlite3BtreeInsert", "b-tree inserts (rows, index entries, log, tombstones)"),
    ("sqlite3BtreeDelete", "b-tree deletes (old index entries, rows)"),
    ("sqlite3BtreeIndexMoveto", "index seeks"),
    ("sqlite3VdbeHalt", "statement / sub-program end (and the commit)"),
    ("sqlite3_file_control", "SQLITE_FCNTL_DATA_VERSION (BSN validity check)"),
    ("ctFuncInsertWhen", "sqlite_ct_insert_when() (AFTER INSERT WHEN)"),
    ("ctFuncUpdateWhen", "sqlite_ct_update_when() (AFTER UPDATE WHEN)"),
    ("ctFuncDeleteWhen", "sqlite_ct_delete_when() (AFTER DELETE WHEN)"),
    ("ctFuncCapture", "sqlite_ct_capture() (the capture index's WHERE)"),
    ("ctFuncDefaultBsn", "sqlite_ct_default_bsn() (the stamp DEFAULTs)"),
    ("ctWriteLog|ctReadMaxCsn", "statements nested from C: log row, first-insert probe"),
    ("ctFuncPackKey", "sqlite_ct_pack_key()"),
    ("memset", "memset (all callers)"),
    ("malloc|free|_int_malloc|_int_free", "libc malloc/free (all callers)"),
]


def perf_summary(data_file: str, top: int = 15) -> Dict[str, Any]:
    """Samples inside sqlite3_step: inclusive share of PERF_FUNCS, top self symbols."""
    out = subprocess.run(["perf", "script", "-i", data_file, "-F", "ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    total = 0
    incl = {name: 0 for name, _ in PERF_FUNCS}
    selfs: Dict[str, int] = {}
    for block in out.split("\n\n"):
        frames = []
        for line in block.strip().splitlines():
            parts = line.split(None, 1)       # "<ip> <sym>[+off] [(inlined)]"
            if len(parts) == 2:
                frames.append(parts[1].replace(" (inlined)", "").split("+")[0].strip())
        if "sqlite3_step" not in frames:
            continue
        total += 1
        leaf = frames[0]
        selfs[leaf] = selfs.get(leaf, 0) + 1
        for name, _ in PERF_FUNCS:
            alts = name.split("|")
            if any(any(f == a or f.startswith(a + ".") or (a == "memset" and "memset" in f)
                       for a in alts) for f in frames):
                incl[name] += 1
    return {"samples": total, "inclusive": incl,
            "self_top": sorted(selfs.items(), key=lambda kv: -kv[1])[:top]}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--tool", choices=("callgrind", "perf"), default="callgrind")
    ap.add_argument("--rows", type=int, default=None,
                    help="table size (callgrind 20,000; perf 100,000)")
    ap.add_argument("--autocommit", type=int, default=None,
                    help="autocommit updates (a tenth of --rows)")
    ap.add_argument("--ops", default=",".join(PROFILE_OPS))
    ap.add_argument("--variants", default="untracked,sqlite-ct,floor")
    ap.add_argument("--explore", action="store_true", help="add the ablations x1..x4 and x6 (x5 runs its own operations)")
    ap.add_argument("--out-dir", default=None,
                    help="where profiles are kept (benchmarks/results/<tool>/)")
    ap.add_argument("--write-readme", action="store_true")
    ap.add_argument("--run-op", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--run-all", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_op:
        run_op(args.run_op, args.db, args.data)
        return 0
    if args.run_all:
        run_all(args.run_all, args.db, args.data)
        return 0
    tool = "valgrind" if args.tool == "callgrind" else "perf"
    if not shutil.which(tool):
        ap.error(f"{tool} is not installed")
    rows = args.rows or (20_000 if args.tool == "callgrind" else 100_000)
    autocommit = args.autocommit or rows // 10
    out_dir = args.out_dir or os.path.join(bl.RESULTS_DIR, args.tool)
    variants = args.variants.split(",")
    if args.explore:
        variants += [v for v in VARIANTS if v not in variants
                     and VARIANTS[v] in bench_ops.EXPLORE_VARIANTS]
    variants = [v for v in variants
                if VARIANTS[v] in bench_ops.MAIN_VARIANTS or bench_ops.usable("apsw", VARIANTS[v])]
    ops = args.ops.split(",")
    os.makedirs(out_dir, exist_ok=True)
    env = bl.environment()
    data = data_for(rows, autocommit)
    per = {op: bench_ops.op_rows(op, rows, autocommit) for op in ops}
    results: Dict[str, Dict[str, Any]] = {op: {} for op in ops}
    with tempfile.TemporaryDirectory(prefix="sqlitect-prof-") as tmp:
        if args.tool == "callgrind":
            pickled = os.path.join(tmp, "data.pickle")
            with open(pickled, "wb") as f:
                pickle.dump(data, f)
            for v in variants:
                base = os.path.join(out_dir, f"all-{v}.out")
                for old in glob.glob(base + "*"):
                    os.remove(old)
                subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={base}",
                                "--toggle-collect=sqlite3_step", "--dump-before=getppid",
                                sys.executable, os.path.abspath(__file__), "--run-all", v,
                                "--db", os.path.join(tmp, f"{v}.db"), "--data", pickled],
                               check=True, capture_output=True)
                # Dump 1 is the setup; dumps 2.. are the operations in PROFILE_OPS order.
                for i, op in enumerate(PROFILE_OPS):
                    part = f"{base}.{i + 2}"
                    if op in ops:
                        os.replace(part, os.path.join(out_dir, f"{op}-{v}.out"))
                        results[op][v] = total_ir(os.path.join(out_dir, f"{op}-{v}.out"))
                for leftover in glob.glob(base + "*"):
                    os.remove(leftover)
                bl.progress(f"{v}: " + ", ".join(f"{op} {results[op][v]:,} Ir" for op in ops))
        else:
            for op in ops:
                for v in variants:
                    path = os.path.join(tmp, f"{v}.db")
                    pickled = prepare(v, op, path, data)
                    out_file = os.path.join(out_dir, f"{op}-{v}.data")
                    subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "2000",
                                    "--call-graph", "dwarf,16384", "-o", out_file, "--",
                                    *child_cmd(op, path, pickled)],
                                   check=True, capture_output=True)
                    results[op][v] = perf_summary(out_file)
                    bl.progress(f"{op} {v}: {results[op][v]['samples']} samples "
                                "inside sqlite3_step")
                    bl.remove_db(path)
                    os.remove(pickled)
    bl.finish_environment(env)
    labels = {name: v.label for name, v in VARIANTS.items()}
    if args.tool == "callgrind":
        header = ["variant"] + [f"{op} ({per[op]:,} rows): Ir/row, x untracked" for op in ops]
        table = [[labels[v]] + [f"{results[op][v] / per[op]:,.0f}, "
                                f"{results[op][v] / results[op]['untracked']:.2f}x"
                                for op in ops] for v in variants]
        text = (f"_{bl.env_line(env, 'apsw')} Instructions (Ir) counted inside sqlite3_step "
                f"by callgrind; {rows:,}-row table._\n\n" + bl.md_table(header, table) + "\n")
    else:
        parts = [f"_{bl.env_line(env, 'apsw')} perf record -e cpu-clock -F 2000 "
                 f"--call-graph dwarf; {rows:,}-row table; shares of the samples whose "
                 "stack contains sqlite3_step._", ""]
        for v in variants:
            if v == "untracked":
                continue
            header = ["function (inclusive)", "stands for"] + [
                f"{op}: % of step time" for op in ops]
            table = []
            for name, meaning in PERF_FUNCS:
                table.append([f"`{name}`", meaning] + [
                    f"{100 * results[op][v]['inclusive'][name] / max(1, results[op][v]['samples']):.1f}"
                    for op in ops])
            parts += [f"**{labels[v]}**", "", bl.md_table(header, table), ""]
            for op in ops:
                r = results[op][v]
                tops = ", ".join(f"`{sym}` {100 * n / max(1, r['samples']):.1f}%"
                                 for sym, n in r["self_top"][:10])
                parts.append(f"- {op}, top self time ({r['samples']} samples): {tops}")
            parts.append("")
        text = "\n".join(parts) + "\n"
    print(text)
    bl.write_json(os.path.join(out_dir, f"summary-{args.tool}.json"),
                  {"env": env, "args": vars(args), "rows": rows, "per_op_rows": per,
                   "results": results, "markdown": text})
    if args.write_readme:
        bl.update_readme(f"profile_ops:{args.tool}" + (":explore" if args.explore else ""), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
