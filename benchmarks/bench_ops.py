#!/usr/bin/env python3
"""What change tracking costs per write operation: sqlite-ct against an
untracked table, the SQLite session extension and the trigger-dispatch floor,
checked against the write path's targets (benchlib.TARGETS).

The operations, on one fresh database file per variant and repetition, in order:
  a. insert  INSERT 100,000 rows in one transaction (executemany)
  b. autocommit  10,000 single-row autocommit UPDATE items SET qty=? WHERE id=?
  c. update  UPDATE items SET qty=qty+1, price=price*1.01 WHERE id % 2 = 0, one txn
  d. delete  DELETE FROM items WHERE id % 10 = 5, one transaction
  e. autoinsert  10,000 new rows, one autocommit INSERT each
and the file size after PRAGMA wal_checkpoint(TRUNCATE), after (a) and at the
end; and, once per variant (sizes do not vary), the file size after loading
--size-rows (1,000,000) rows in one transaction.

Variants (see README.md "Method"):
  untracked  the plain table: the physical limit
  sqlite-ct  sqlite_ct.create_schema(conn, "items") on the empty table
  session    apsw.Session(conn, "main") + attach("items") before each operation,
             changeset() after it; its figure is operation + changeset (apsw only)
  floor      AFTER INSERT/UPDATE/DELETE triggers whose body is SELECT abs(NEW.id)
--explore adds ablations of sqlite-ct (what each part of its triggers costs);
they rewrite the installed triggers and are not the product.

--callgrind runs the same workload once per variant under valgrind's callgrind
instead of timing it, and reports instructions per row of each operation, whole
process (Python's calls included, the session's changeset included): exact and
repeatable on a busy machine, where wall-time medians move by 20-30%.

    python3 benchmarks/bench_ops.py --reps 11                 # apsw, all variants
    python3 benchmarks/bench_ops.py --reps 11 --host sqlite3  # stdlib sqlite3
    python3 benchmarks/bench_ops.py --callgrind               # instructions, 20k rows
    python3 benchmarks/bench_ops.py --quick                   # CI smoke run
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402
import sqlite_ct  # noqa: E402

OPS = ("insert", "autocommit", "update", "delete", "autoinsert")
OP_TITLES = {
    "insert": "a. insert {insert_k}k rows, one transaction (executemany)",
    "autocommit": "b. {auto_k}k single-row autocommit UPDATEs",
    "update": "c. UPDATE 50% of rows ({half_k}k), one transaction",
    "delete": "d. DELETE 10% of rows ({tenth_k}k), one transaction",
    "autoinsert": "e. {auto_k}k single-row autocommit INSERTs of new rows",
}
UPDATE_HALF_SQL, DELETE_TENTH_SQL, AUTOCOMMIT_SQL = (
    bl.UPDATE_HALF_SQL, bl.DELETE_TENTH_SQL, bl.AUTOCOMMIT_SQL)

# Peer figures from shared/reference/peer-bench.md (not measured by this script).
PEER_REF = {
    "insert": {"pure-SQL triggers": 3.5, "cr-sqlite": 21.0},
    "autocommit": {"pure-SQL triggers": 2.65, "cr-sqlite": 3.4},
    "update": {"pure-SQL triggers": 4.3, "cr-sqlite": 23.0},
    "delete": {"pure-SQL triggers": 2.7, "cr-sqlite": 8.5},
}


# ---- variants ----------------------------------------------------------------

class Variant:
    name = ""
    label = ""
    hosts = ("apsw", "sqlite3")

    def setup(self, conn: Any) -> None:
        """Runs on the empty table, before the operations, not timed."""

    def before_op(self, conn: Any) -> Any:
        return None

    def after_op(self, conn: Any, state: Any) -> Dict[str, float]:
        return {}

    def op_func(self, op: str) -> Any:
        """The operation as this variant runs it (the same for all but x5)."""
        return OP_FUNCS[op]


class Untracked(Variant):
    name, label = "untracked", "0 untracked"


class SqliteCt(Variant):
    name, label = "sqlite-ct", "1 sqlite-ct"
    writes_tombstones = True  # checked after the run

    def setup(self, conn: Any) -> None:
        sqlite_ct.create_schema(conn, "items")


class Session(Variant):
    name, label = "session", "2 session ext"
    hosts = ("apsw",)

    @staticmethod
    def available() -> bool:
        import apsw
        return hasattr(apsw, "Session")

    def before_op(self, conn: Any) -> Any:
        import apsw
        session = apsw.Session(conn, "main")
        session.attach("items")
        return session

    def after_op(self, conn: Any, session: Any) -> Dict[str, float]:
        seconds, changeset = bl.timed(session.changeset)
        session.close()
        return {"changeset_s": seconds, "changeset_bytes": len(changeset)}


class Floor(Variant):
    name, label = "floor", "3 trigger floor"

    def setup(self, conn: Any) -> None:
        for when, ref in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD")):
            conn.execute(f"CREATE TRIGGER floor_{when.lower()} AFTER {when} ON items "
                         f"BEGIN SELECT abs({ref}.id); END")


# -- ablations (--explore): what each part of sqlite-ct's triggers costs.

class CtNoIndex(SqliteCt):
    name, label = "ct-noidx", "x1 sqlite-ct without the change-BSN index"

    def setup(self, conn: Any) -> None:
        super().setup(conn)
        conn.execute('DROP INDEX "__sysct_chg_items"')


class CtNoVictims(SqliteCt):
    name, label = ("ct-novictims", "x2 sqlite-ct without the capture index that remembers "
                   "OR REPLACE victims, deleted rows and old keys (not correct: OR REPLACE "
                   "victims and key changes get no tombstone)")

    def setup(self, conn: Any) -> None:
        super().setup(conn)
        conn.execute('DROP INDEX "__sysct_cap_items"')


class CtNoAfterInsert(SqliteCt):
    name, label = ("ct-noai", "x3 sqlite-ct without the AFTER INSERT trigger: inserts "
                   "stamped by the DEFAULTs alone (not correct: nothing logs the "
                   "inserting transactions)")

    def setup(self, conn: Any) -> None:
        super().setup(conn)
        conn.execute('DROP TRIGGER "__sysct_ai_items"')


class CtNoTriggers(SqliteCt):
    name, label = ("ct-notrig", "x6 sqlite-ct without any trigger: inserts stamped by the "
                   "DEFAULTs, the index kept (not correct: no log row, no OR REPLACE "
                   "victims, no guard; updates and deletes are not tracked)")
    writes_tombstones = False

    def setup(self, conn: Any) -> None:
        super().setup(conn)
        for trigger in ("ai", "au", "ad"):
            conn.execute(f'DROP TRIGGER "__sysct_{trigger}_items"')


class FloorProbe(Floor):
    name, label = ("floor-probe", "x4 the floor's triggers calling "
                   "sqlite_ct_write_bsn((SELECT max(..))): the per-row probe and C call "
                   "every sqlite-ct trigger makes (logs once per transaction)")

    def setup(self, conn: Any) -> None:
        conn.execute("SELECT sqlite_ct_create_system_tables()").fetchall()
        # The database's identity, written into the trigger as sqlite-ct's are.
        dbid = int(bl.scalar(conn, "SELECT value FROM __sysCtMeta WHERE key='database_id'"))
        for when in ("INSERT", "UPDATE", "DELETE"):
            conn.execute(f"CREATE TRIGGER floor_{when.lower()} AFTER {when} ON items BEGIN "
                         "SELECT sqlite_ct_write_bsn((SELECT max(__sysTxCsn) FROM "
                         f"__sysTxCommitSequence), {dbid}); END")


class DataOnly(Variant):
    """The rows sqlite-ct writes, written by the operations' own statements, with
    no trigger at all: the three stamp columns and their index, one log row per
    transaction, a tombstone per deleted row. What this design costs if trigger
    dispatch and per-row checks were free. Its operations differ from the
    others' (they carry the stamps), so it runs through apsw only. Two figures
    are upper bounds: its autocommit transactions are five statements from Python
    where the others run one (about 4 µs of the ~30 µs), and its delete reads
    the table twice (once for the tombstones, once to delete)."""
    name, label = ("data-only", "x5 sqlite-ct's writes without triggers: stamp columns, "
                   "index, log row, tombstones written by the statements themselves")
    hosts = ("apsw",)

    def setup(self, conn: Any) -> None:
        conn.execute("SELECT sqlite_ct_create_system_tables()").fetchall()
        for sql in ['ALTER TABLE items ADD COLUMN "__sysChangeTxBsn" INTEGER',
                    'ALTER TABLE items ADD COLUMN "__sysInsertTxBsn" INTEGER',
                    'ALTER TABLE items ADD COLUMN "__sysTrackingContext" BLOB',
                    'CREATE INDEX chg ON items("__sysChangeTxBsn")']:
            conn.execute(sql)

    @staticmethod
    def _log(cur: Any) -> int:
        bsn = cur.execute("SELECT coalesce(max(__sysTxCsn), 0) + 1"
                          " FROM __sysTxCommitSequence").fetchall()[0][0]
        cur.execute("INSERT INTO __sysTxCommitSequence VALUES (?, ?, ?)",
                    (bsn, bsn, int(time.time() * 1000)))
        return bsn

    def op_func(self, op: str) -> Any:
        def insert(cur: Any, data: Dict[str, Any]) -> None:
            cur.execute("BEGIN")
            bsn = self._log(cur)
            # The BSN as a literal: the rows bind as the other variants' do,
            # with no per-row Python work added to the timed region.
            cur.executemany(
                'INSERT INTO items(id, name, qty, price, note, "__sysChangeTxBsn",'
                f' "__sysInsertTxBsn") VALUES (?, ?, ?, ?, ?, {int(bsn)}, {int(bsn)})',
                data["rows"])
            cur.execute("COMMIT")

        def autocommit(cur: Any, data: Dict[str, Any]) -> None:
            for qty, key in data["autocommit"]:
                cur.execute("BEGIN")
                bsn = self._log(cur)
                cur.execute('UPDATE items SET qty=?, "__sysChangeTxBsn"=? WHERE id=?',
                            (qty, bsn, key))
                cur.execute("COMMIT")

        def update(cur: Any, data: Dict[str, Any]) -> None:
            cur.execute("BEGIN")
            bsn = self._log(cur)
            cur.execute('UPDATE items SET qty=qty+1, price=price*1.01, "__sysChangeTxBsn"=?'
                        " WHERE id % 2 = 0", (bsn,))
            cur.execute("COMMIT")

        def delete(cur: Any, data: Dict[str, Any]) -> None:
            cur.execute("BEGIN")
            bsn = self._log(cur)
            cur.execute("INSERT INTO __sysOCSDeletedRows SELECT 'items', sqlite_ct_pack_key(id),"
                        ' ?, "__sysInsertTxBsn", ?, NULL FROM items WHERE id % 10 = 5',
                        (bsn, int(time.time() * 1000)))
            cur.execute(DELETE_TENTH_SQL)
            cur.execute("COMMIT")

        def autoinsert(cur: Any, data: Dict[str, Any]) -> None:
            for row in data["autoinsert"]:
                cur.execute("BEGIN")
                bsn = self._log(cur)
                cur.execute(
                    'INSERT INTO items(id, name, qty, price, note, "__sysChangeTxBsn",'
                    ' "__sysInsertTxBsn") VALUES (?, ?, ?, ?, ?, ?, ?)', row + (bsn, bsn))
                cur.execute("COMMIT")

        return {"insert": insert, "autocommit": autocommit, "update": update,
                "delete": delete, "autoinsert": autoinsert}[op]


MAIN_VARIANTS: List[Variant] = [Untracked(), SqliteCt(), Session(), Floor()]
EXPLORE_VARIANTS: List[Variant] = [CtNoIndex(), CtNoVictims(), CtNoAfterInsert(),
                                   CtNoTriggers(), FloorProbe(), DataOnly()]


# ---- operations ------------------------------------------------------------

OP_FUNCS = bl.OP_FUNCS


def op_rows(op: str, n: int, n_auto: int) -> int:
    return {"insert": n, "autocommit": n_auto, "update": n // 2,
            "delete": len([i for i in range(1, n + 1) if i % 10 == 5]),
            "autoinsert": n_auto}[op]


def open_variant(host: str, variant: Variant, path: str) -> Tuple[Any, Any]:
    """A fresh database at `path` with the benchmark table set up for
    `variant`: its connection and a cursor."""
    bl.remove_db(path)
    conn = bl.CONNECT[host](path)
    try:
        conn.execute(bl.TABLE_SQL)
        variant.setup(conn)
    except BaseException:
        conn.close()
        raise
    return conn, conn.cursor()


def run_variant(host: str, variant: Variant, path: str, data: Dict[str, Any]
                ) -> Dict[str, Any]:
    conn, cur = open_variant(host, variant, path)
    try:
        out: Dict[str, Any] = {}
        for op in OPS:
            state = variant.before_op(conn)
            seconds, _ = bl.timed(lambda: variant.op_func(op)(cur, data))
            extra = variant.after_op(conn, state)
            out[op] = {"op_s": seconds, **extra,
                       "s": seconds + extra.get("changeset_s", 0.0)}
            if op == "insert":
                out["size_after_insert"] = bl.size_after_checkpoint(conn, path)
        out["size_end"] = bl.size_after_checkpoint(conn, path)
        n = len(data["rows"])
        expect = n - op_rows("delete", n, 0) + len(data["autoinsert"])
        have = bl.scalar(conn, "SELECT count(*) FROM items")
        if have != expect:
            raise AssertionError(f"{variant.name}: {have} rows at the end, expected {expect}")
        if isinstance(variant, SqliteCt) and variant.writes_tombstones:
            tombstones = bl.scalar(conn, "SELECT count(*) FROM __sysOCSDeletedRows")
            if tombstones != op_rows("delete", n, 0):
                raise AssertionError(f"{variant.name}: {tombstones} tombstones, "
                                     f"expected {op_rows('delete', n, 0)}")
        return out
    finally:
        conn.close()
        bl.remove_db(path)


def load_size(host: str, variant: Variant, path: str, n: int) -> int:
    """File size after loading n rows in one transaction into a fresh file
    (after wal_checkpoint(TRUNCATE)); not timed, run once: sizes do not vary."""
    bl.remove_db(path)
    conn = bl.CONNECT[host](path)
    try:
        conn.execute(bl.TABLE_SQL)
        variant.setup(conn)
        variant.op_func("insert")(conn.cursor(), {"rows": bl.iter_rows(n)})
        have = bl.scalar(conn, "SELECT count(*) FROM items")
        if have != n:
            raise AssertionError(f"{variant.name}: {have} rows after the load, expected {n}")
        return bl.size_after_checkpoint(conn, path)
    finally:
        conn.close()
        bl.remove_db(path)


# ---- callgrind: instructions per row ---------------------------------------

def callgrind_child(host: str, variant: Variant, path: str, data: Dict[str, Any]) -> None:
    """The workload of run_variant, once, for callgrind (--dump-before=getppid):
    os.getppid() right before and right after each operation (the session's
    changeset included), so operation i is counted alone in dump 2 + 2 * i.
    gc stays off, as inside the timed regions."""
    import gc
    conn, cur = open_variant(host, variant, path)
    try:
        gc.collect()
        gc.disable()
        for op in OPS:
            state = variant.before_op(conn)
            fn = variant.op_func(op)
            os.getppid()
            fn(cur, data)
            variant.after_op(conn, state)
            os.getppid()
            if op == "insert":
                bl.size_after_checkpoint(conn, path)
    finally:
        conn.close()
        bl.remove_db(path)


def callgrind_total(out_file: str) -> int:
    """The total instruction count (Ir) of one callgrind dump."""
    with open(out_file) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def run_callgrind(args: argparse.Namespace, variant: Variant, tmp: str) -> Dict[str, int]:
    """Instructions (Ir) of each operation of one variant, whole process."""
    import glob
    import subprocess
    base = os.path.join(tmp, f"callgrind-{variant.name}.out")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={base}",
           "--dump-before=getppid", sys.executable, os.path.abspath(__file__),
           "--callgrind-child", variant.name, "--host", args.host,
           "--rows", str(args.rows), "--autocommit", str(args.autocommit),
           "--db", os.path.join(tmp, f"{variant.name}.db")]
    # A fixed hash seed: the same dict and set layouts, hence the same counts, every run.
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"callgrind of {variant.name} failed:\n{proc.stderr[-3000:]}")
    counts = {op: callgrind_total(f"{base}.{2 + 2 * i}") for i, op in enumerate(OPS)}
    keep = os.path.join(bl.RESULTS_DIR, "callgrind")
    os.makedirs(keep, exist_ok=True)
    for i, op in enumerate(OPS):
        os.replace(f"{base}.{2 + 2 * i}",
                   os.path.join(keep, f"ops-{args.host}-{op}-{variant.name}.out"))
    for leftover in glob.glob(base + "*"):
        os.remove(leftover)
    return counts


def render_callgrind(counts: Dict[str, Dict[str, int]], variants: List[Variant],
                     args: argparse.Namespace, env: Dict[str, Any], spread: float) -> str:
    n, n_auto = args.rows, args.autocommit
    fmt = {"insert_k": f"{n / 1000:g}", "auto_k": f"{n_auto / 1000:g}",
           "half_k": f"{n // 2 / 1000:g}", "tenth_k": f"{op_rows('delete', n, 0) / 1000:g}"}
    runs = args.callgrind_runs
    out = [f"_{bl.env_line(env, args.host)} callgrind, whole process (Python's calls and the "
           f"session's changeset included); {n:,}-row workload; "
           + (f"{runs} runs per variant, the median count of each (the runs differed by at "
              f"most {spread * 100:.2f}%)._" if runs > 1 else "one run per variant._"), ""]
    out.append(f"**Instructions per row ({args.host}): Ir/row, extra over untracked, "
               "x untracked**")
    out.append("")
    header = ["variant"] + [OP_TITLES[op].format(**fmt).split(" ", 1)[1] for op in OPS]
    rows = []
    for v in variants:
        row = [v.label]
        for op in OPS:
            per = counts[v.name][op] / op_rows(op, n, n_auto)
            base = counts["untracked"][op] / op_rows(op, n, n_auto)
            row.append(f"{per:,.0f}" if v.name == "untracked"
                       else f"{per:,.0f}, {per - base:+,.0f}, {per / base:.2f}x")
        rows.append(row)
    out.append(bl.md_table(header, rows))
    out.append("")
    out.append("Wall-time targets for reference (instructions leave out I/O and waits): "
               + "; ".join(f"{op} {bl.fmt_target(op)}" for op in OPS) + ".")
    return "\n".join(out) + "\n"


# ---- summary ---------------------------------------------------------------

def summarize(reps: List[Dict[str, Any]], variants: List[Variant],
              load_sizes: Dict[str, int]) -> Dict[str, Any]:
    summary: Dict[str, Any] = {}
    base = "untracked"
    for v in variants:
        vs: Dict[str, Any] = {}
        for op in OPS:
            times = [r[v.name][op]["s"] for r in reps]
            ratios = [r[v.name][op]["s"] / r[base][op]["s"] for r in reps]
            entry = {"s": bl.spread(times), "ratio": bl.spread(ratios)}
            if "changeset_s" in reps[0][v.name][op]:
                entry["op_ratio"] = bl.spread([r[v.name][op]["op_s"] / r[base][op]["s"]
                                               for r in reps])
                entry["changeset_s"] = bl.spread([r[v.name][op]["changeset_s"] for r in reps])
                entry["changeset_bytes"] = bl.spread(
                    [r[v.name][op]["changeset_bytes"] for r in reps])
            vs[op] = entry
        for key in ("size_after_insert", "size_end"):
            size = reps[0][v.name][key]
            vs[key] = {"bytes": size, "ratio": size / reps[0][base][key]}
        vs["size_after_load"] = {"bytes": load_sizes[v.name],
                                 "ratio": load_sizes[v.name] / load_sizes[base]}
        summary[v.name] = vs
    return summary


def render(summary: Dict[str, Any], variants: List[Variant], args: argparse.Namespace,
           env: Dict[str, Any], n: int, n_auto: int) -> str:
    fmt = {"insert_k": f"{n / 1000:g}", "auto_k": f"{n_auto / 1000:g}",
           "half_k": f"{n // 2 / 1000:g}", "tenth_k": f"{op_rows('delete', n, 0) / 1000:g}"}
    names = [v.name for v in variants]
    out = [f"_{bl.env_line(env, args.host)} {args.reps} interleaved repetitions._", ""]

    if args.explore:
        out.append(f"**Summary ({args.host}): median ratio to untracked per operation; "
                   "file size at the end of the workload**")
        out.append("")
        rows = [[v.label] + [f"{summary[v.name][op]['ratio']['median']:.2f}x" for op in OPS]
                + [f"{summary[v.name]['size_end']['ratio']:.2f}x"] for v in variants]
        out.append(bl.md_table(["variant", "a. insert", "b. autocommit", "c. update 50%",
                                "d. delete 10%", "e. autocommit insert", "file size"], rows))
        out.append("")
    elif "sqlite-ct" in names:
        out.append(f"**Headline ({args.host}): median ratio to untracked (min..max), "
                   "sqlite-ct against the write path's targets (must reach, aim)**")
        out.append("")
        header = ["operation", "sqlite-ct", "target", "met?"]
        if "session" in names:
            header.append("session ext (op + changeset)")
        if "floor" in names:
            header.append("trigger floor")
        header += ["pure-SQL triggers (peer-bench)", "cr-sqlite (peer-bench)"]
        rows = []
        for op in OPS:
            ct = summary["sqlite-ct"][op]["ratio"]
            row = [OP_TITLES[op].format(**fmt).split(" ", 1)[1], bl.fmt_x(ct),
                   bl.fmt_target(op), bl.target_verdict(op, ct["median"])]
            if "session" in names:
                row.append(bl.fmt_x(summary["session"][op]["ratio"]))
            if "floor" in names:
                row.append(bl.fmt_x(summary["floor"][op]["ratio"]))
            peers = PEER_REF.get(op)
            row += ([f"{peers['pure-SQL triggers']}x", f"{peers['cr-sqlite']}x"] if peers
                    else ["", ""])
            rows.append(row)
        for key, title in (("size_after_load", f"file size after {args.size_rows:,} inserts"),
                           ("size_end", "file size at the end of the workload")):
            ratio = summary["sqlite-ct"][key]["ratio"]
            row = [title, f"{ratio:.2f}x", bl.fmt_target("size"),
                   bl.target_verdict("size", ratio)]
            row += [f"{summary[name][key]['ratio']:.2f}x"
                    for name in ("session", "floor") if name in names]
            rows.append(row + ["", ""])
        out.append(bl.md_table(header, rows))
        out.append("")

    for op in OPS:
        out.append(f"#### {OP_TITLES[op].format(**fmt)}")
        out.append("")
        rows = []
        touched = op_rows(op, n, n_auto)
        for v in variants:
            e = summary[v.name][op]
            med = e["s"]["median"]
            note = ""
            if "op_ratio" in e:
                note = (f"op alone {bl.fmt_x(e['op_ratio'])}; changeset "
                        f"{e['changeset_s']['median'] * 1000:.0f} ms, "
                        f"{e['changeset_bytes']['median'] / 1024:.0f} KB")
            rows.append([v.label, f"{med:.3f}", f"{touched / med:,.0f}",
                         f"**{bl.fmt_x(e['ratio'])}**", note])
        out.append(bl.md_table(["variant", "median s", "rows/s",
                                "ratio to untracked, median (min..max)", "notes"], rows))
        out.append("")

    out.append("#### file size after `wal_checkpoint(TRUNCATE)`")
    out.append("")
    rows = []
    for v in variants:
        a, e = summary[v.name]["size_after_insert"], summary[v.name]["size_end"]
        big = summary[v.name]["size_after_load"]
        rows.append([v.label, f"{a['bytes'] / 1024:.0f}", f"{a['ratio']:.2f}x",
                     f"{e['bytes'] / 1024:.0f}", f"{e['ratio']:.2f}x",
                     f"{big['bytes'] / 1024:.0f}", f"{big['ratio']:.2f}x"])
    out.append(bl.md_table(["variant", f"after {fmt['insert_k']}k inserts, KB", "x untracked",
                            "end of workload, KB", "x untracked",
                            f"after {args.size_rows:,} inserts (one transaction, once), KB",
                            "x untracked"], rows))
    return "\n".join(out) + "\n"


# ---- main ------------------------------------------------------------------

def usable(host: str, variant: Variant) -> bool:
    """An ablation whose trigger rewrite no longer applies is skipped, not fatal:
    the product's trigger text is free to change."""
    with tempfile.TemporaryDirectory(prefix="sqlitect-bench-check-") as tmp:
        conn = bl.CONNECT[host](os.path.join(tmp, "check.db"))
        try:
            conn.execute(bl.TABLE_SQL)
            variant.setup(conn)
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means "skip it"
            bl.progress(f"skipping {variant.name}: {exc}")
            return False
        finally:
            conn.close()


def make_data(rows: int, autocommit: int) -> Dict[str, Any]:
    """The operations' rows and parameters, from fixed seeds."""
    rng = random.Random(bl.SEED + 1)
    return {"rows": bl.make_rows(rows),
            "autocommit": [(rng.randrange(1000), rng.randint(1, rows))
                           for _ in range(autocommit)],
            "autoinsert": [(rows + i,) + row[1:] for i, row in
                           enumerate(bl.make_rows(autocommit, bl.SEED + 2), start=1)]}


def main_callgrind(args: argparse.Namespace, variants: List[Variant],
                   env: Dict[str, Any]) -> int:
    t_start = time.perf_counter()
    runs: Dict[str, List[Dict[str, int]]] = {v.name: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="sqlitect-bench-", dir=args.dir) as tmp:
        for run in range(args.callgrind_runs):
            for v in variants:
                runs[v.name].append(run_callgrind(args, v, tmp))
                bl.progress(f"run {run + 1}/{args.callgrind_runs} {v.name}: " + ", ".join(
                    f"{op} {runs[v.name][-1][op] / op_rows(op, args.rows, args.autocommit):,.0f}"
                    for op in OPS) + " Ir/row")
    bl.finish_environment(env)
    # The median run per count: through stdlib sqlite3 an occasional run differs
    # by up to ~0.7% (see README.md, Method).
    counts = {name: {op: int(statistics.median_low([r[op] for r in rs])) for op in OPS}
              for name, rs in runs.items()}
    spread = max((max(r[op] for r in rs) - min(r[op] for r in rs)) / counts[name][op]
                 for name, rs in runs.items() for op in OPS)
    text = render_callgrind(counts, variants, args, env, spread)
    print(text)
    bl.progress(f"wall time {time.perf_counter() - t_start:.1f} s")
    record = {"script": "bench_ops", "mode": "callgrind", "env": env, "args": vars(args),
              "variants": {v.name: v.label for v in variants}, "counts": counts,
              "runs": runs, "spread": spread,
              "per_op_rows": {op: op_rows(op, args.rows, args.autocommit) for op in OPS},
              "markdown": text}
    bl.write_json(args.json or bl.default_json_path(
        "bench_ops", args.host + "-callgrind" + ("-quick" if args.quick else "")), record)
    if args.write_readme:
        bl.update_readme(f"bench_ops:callgrind:{args.host}"
                         + (":explore" if args.explore else ""), text)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--reps", type=int, default=11, help="interleaved repetitions (11)")
    ap.add_argument("--host", choices=("apsw", "sqlite3"), default="apsw",
                    help="apsw (bundled SQLite) or stdlib sqlite3 via "
                         "sqlite_ct.register_auto_extension() (default apsw)")
    ap.add_argument("--rows", type=int, default=None,
                    help="rows inserted in (a) (100,000; --callgrind 20,000)")
    ap.add_argument("--autocommit", type=int, default=None,
                    help="single-row autocommit updates in (b) and inserts in (e) "
                         "(10,000; --callgrind 2,000)")
    ap.add_argument("--size-rows", type=int, default=1_000_000,
                    help="rows of the one-transaction load whose file size is reported "
                         "(1,000,000)")
    ap.add_argument("--variants", default=None,
                    help="comma-separated subset (untracked is always run); default: "
                         "untracked,sqlite-ct,session,floor for apsw, "
                         "untracked,sqlite-ct,floor for sqlite3")
    ap.add_argument("--explore", action="store_true",
                    help="add the ablations of sqlite-ct's triggers (x1..x6)")
    ap.add_argument("--callgrind", action="store_true",
                    help="count instructions per row under valgrind's callgrind (one run "
                         "per variant) instead of timing repetitions")
    ap.add_argument("--callgrind-runs", type=int, default=3,
                    help="runs per variant under --callgrind; the median count is reported (3)")
    ap.add_argument("--quick", action="store_true",
                    help="CI smoke run: small sizes, 2 repetitions; asserts nothing about speed")
    ap.add_argument("--json", metavar="PATH", help="write raw per-repetition results here "
                    "(default: benchmarks/results/bench_ops-HOST-DATE.json)")
    ap.add_argument("--write-readme", action="store_true",
                    help="replace this host's results block in benchmarks/README.md")
    ap.add_argument("--dir", help="directory for the database files (default: a temp dir)")
    ap.add_argument("--callgrind-child", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.size_rows, args.callgrind_runs = 2, 10_000, 1
        args.rows = args.rows or (2_000 if args.callgrind else 5_000)
        args.autocommit = args.autocommit or args.rows // 10
    args.rows = args.rows or (20_000 if args.callgrind or args.callgrind_child else 100_000)
    args.autocommit = args.autocommit or (args.rows // 10 if args.callgrind
                                          or args.callgrind_child else 10_000)

    pool = MAIN_VARIANTS + EXPLORE_VARIANTS
    by_name = {v.name: v for v in pool}
    if args.callgrind_child:
        callgrind_child(args.host, by_name[args.callgrind_child], args.db,
                        make_data(args.rows, args.autocommit))
        return 0
    if args.variants:
        wanted = ["untracked"] + [w for w in args.variants.split(",") if w != "untracked"]
    elif args.host == "apsw":
        wanted = [v.name for v in MAIN_VARIANTS]
    else:
        wanted = [v.name for v in MAIN_VARIANTS if args.host in v.hosts]
    if args.explore:
        wanted += [v.name for v in EXPLORE_VARIANTS if v.name not in wanted
                   and args.host in v.hosts]
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {sorted(by_name)}")
    variants = [by_name[w] for w in wanted]
    for v in variants:
        if args.host not in v.hosts:
            ap.error(f"variant {v.name} needs host {'/'.join(v.hosts)}")
    if args.callgrind and not shutil.which("valgrind"):
        ap.error("--callgrind needs valgrind (apt-get install valgrind)")

    if "session" in wanted and not Session.available():
        bl.progress("skipping session: this apsw was built without the session extension")
        variants = [v for v in variants if v.name != "session"]
    variants = [v for v in variants if v in MAIN_VARIANTS or usable(args.host, v)]
    env = bl.environment()
    if args.callgrind:
        return main_callgrind(args, variants, env)
    data = make_data(args.rows, args.autocommit)

    reps: List[Dict[str, Any]] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sqlitect-bench-", dir=args.dir) as tmp:
        for rep in range(args.reps):
            order = bl.rotated(variants, rep)
            result: Dict[str, Any] = {"order": [v.name for v in order]}
            for v in order:
                result[v.name] = run_variant(args.host, v, os.path.join(tmp, f"{v.name}.db"),
                                             data)
            reps.append(result)
            base = result["untracked"]
            bl.progress(f"rep {rep + 1}/{args.reps}: " + "; ".join(
                f"{v.name} " + "/".join(f"{result[v.name][op]['s'] / base[op]['s']:.2f}"
                                        for op in OPS) for v in variants))
        load_sizes = {v.name: load_size(args.host, v, os.path.join(tmp, f"{v.name}-load.db"),
                                        args.size_rows) for v in variants}
        bl.progress("file size after the load: " + "; ".join(
            f"{name} {size / load_sizes['untracked']:.2f}x" for name, size in load_sizes.items()))
    bl.finish_environment(env)
    summary = summarize(reps, variants, load_sizes)
    text = render(summary, variants, args, env, args.rows, args.autocommit)
    print(text)
    bl.progress(f"wall time {time.perf_counter() - t_start:.1f} s")

    record = {"script": "bench_ops", "env": env, "args": vars(args),
              "variants": {v.name: v.label for v in variants},
              "reps": reps, "summary": summary, "markdown": text}
    bl.write_json(args.json or bl.default_json_path(
        "bench_ops", args.host + ("-explore" if args.explore else "")
        + ("-quick" if args.quick else "")), record)
    if args.write_readme:
        key = f"bench_ops:{args.host}" + (":explore" if args.explore else "")
        bl.update_readme(key, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
