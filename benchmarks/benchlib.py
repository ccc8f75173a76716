"""Shared pieces of the sqlite-ct benchmarks: hosts (apsw, stdlib sqlite3),
the test table and its rows, timing, statistics, the environment record and
the README writer.

Method (the same as ../../shared/reference/peer-bench.md, so the ratios are
comparable): WAL, synchronous=NORMAL, everything else at the host's defaults;
a fresh database file per variant and repetition; gc disabled inside timed
regions; repetitions interleaved (each repetition runs every variant once, in
an order that rotates), and every ratio is the median of per-repetition ratios
to the untracked variant of the same repetition, with min..max.
"""
from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import random
import re
import statistics
import string
import subprocess
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import sqlite_ct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
README = os.path.join(HERE, "README.md")
RESULTS_DIR = os.path.join(HERE, "results")

TABLE_SQL = ("CREATE TABLE items(id INTEGER PRIMARY KEY NOT NULL, name TEXT, "
             "qty INTEGER, price REAL, note TEXT)")
INSERT_SQL = "INSERT INTO items(id, name, qty, price, note) VALUES(?, ?, ?, ?, ?)"
COLUMNS = ("id", "name", "qty", "price", "note")
SEED = 20240611

# Targets of the write path, as ratios to untracked (enumeration: to fetching
# the same rows by key): (must reach, aim). None: no aim beyond the bound.
TARGETS: Dict[str, Tuple[float, Optional[float]]] = {
    "insert": (1.4, 1.2),
    "autocommit": (2.0, 1.5),
    "autoinsert": (1.8, 1.4),
    "update": (2.3, 2.0),
    "delete": (1.8, 1.5),
    "size": (1.2, 1.1),
    "enumerate": (1.2, None),
    "create_schema": (2.0, None),
}


def fmt_target(key: str) -> str:
    """'≤ 1.4x (aim ≤ 1.2x)' for TARGETS[key]."""
    must, aim = TARGETS[key]
    return f"≤ {must}x" + (f" (aim ≤ {aim}x)" if aim is not None else "")


def target_verdict(key: str, value: float) -> str:
    """'aim met', 'met' or '**not met**' for a ratio against TARGETS[key]."""
    must, aim = TARGETS[key]
    if aim is not None and value <= aim:
        return "aim met"
    return verdict(value, must)


def iter_rows(n: int, seed: int = SEED) -> Iterator[tuple]:
    """Rows 1..n: name-0000001, random qty, random price, a 15-45 char note."""
    rng = random.Random(seed)
    letters = string.ascii_letters + " "
    for i in range(1, n + 1):
        yield (i, f"name-{i:07d}", rng.randrange(1000), round(rng.uniform(0, 1000), 2),
               "".join(rng.choices(letters, k=rng.randint(15, 45))))


def make_rows(n: int, seed: int = SEED) -> List[tuple]:
    """iter_rows(n, seed) as a list."""
    return list(iter_rows(n, seed))


# ---- hosts -----------------------------------------------------------------

def _configure(conn: Any) -> None:
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL").fetchall()


def connect_apsw(path: str) -> Any:
    """apsw connection (apsw's bundled SQLite) with sqlite-ct loaded."""
    import apsw
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    _configure(conn)
    return conn


_auto_registered = False


def connect_sqlite3(path: str) -> Any:
    """stdlib sqlite3 connection (autocommit, explicit BEGIN/COMMIT), with
    sqlite-ct loaded through register_auto_extension()."""
    global _auto_registered
    import sqlite3
    if not _auto_registered:
        sqlite_ct.register_auto_extension()
        _auto_registered = True
    conn = sqlite3.connect(path, isolation_level=None)
    _configure(conn)
    return conn


CONNECT: Dict[str, Callable[[str], Any]] = {"apsw": connect_apsw, "sqlite3": connect_sqlite3}


def host_sqlite_version(host: str) -> str:
    if host == "apsw":
        import apsw
        return apsw.sqlite_lib_version()
    import sqlite3
    return sqlite3.sqlite_version


def scalar(conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(sql, tuple(params)).fetchone()
    return None if row is None else row[0]


def size_after_checkpoint(conn: Any, path: str) -> int:
    """Database file size in bytes after PRAGMA wal_checkpoint(TRUNCATE)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return os.path.getsize(path)


def remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


# ---- timing and statistics -------------------------------------------------

def timed(fn: Callable[[], Any]) -> Tuple[float, Any]:
    """Wall-clock seconds of fn(), with gc collected before and disabled inside."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    return elapsed, result


def spread(values: Sequence[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_x(s: Dict[str, float], digits: int = 2) -> str:
    return f"{s['median']:.{digits}f}x ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "**not met**"


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rotated(items: Sequence[Any], rep: int) -> List[Any]:
    k = rep % len(items)
    return list(items[k:]) + list(items[:k])


# ---- environment -----------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> Optional[str]:
    # Read-only queries; --no-optional-locks keeps `status` from touching the index.
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", REPO, *args],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _product_digest() -> str:
    """sha256 (12 hex digits) of what is measured: the loaded extension and the
    imported sqlite_ct package's Python files."""
    import hashlib
    h = hashlib.sha256()
    pkg = os.path.dirname(os.path.abspath(sqlite_ct.__file__))
    for name in sorted(n for n in os.listdir(pkg) if n.endswith(".py")):
        with open(os.path.join(pkg, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    with open(sqlite_ct.loadable_path(), "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:12]


def _package_source() -> str:
    """Where the measured sqlite_ct comes from: this checkout (commit, dirty or
    not) or another directory, e.g. a snapshot of a commit built on its own."""
    pkg = os.path.dirname(os.path.abspath(sqlite_ct.__file__))
    if os.path.dirname(pkg) == REPO:
        status = _git("status", "--porcelain", "--", "csrc", "sqlite_ct")
        dirty = " + uncommitted changes in csrc/ or sqlite_ct/" if status else ""
        return f"this checkout at commit {_git('rev-parse', '--short', 'HEAD')}{dirty}"
    return f"{os.path.dirname(pkg)}"


def environment() -> Dict[str, Any]:
    import apsw
    import sqlite3
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": _cpu_model(),
        "ram_gib": _ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "apsw": apsw.apswversion(),
        "sqlite_apsw": apsw.sqlite_lib_version(),
        "sqlite_stdlib": sqlite3.sqlite_version,
        "sqlite_ct": sqlite_ct.__version__,
        "sqlite_ct_source": _package_source(),
        "product_digest": _product_digest(),
    }


def finish_environment(env: Dict[str, Any]) -> None:
    """Record the end of a run: load average, and whether what was measured
    changed under it (a rebuild of the extension in the middle of a run)."""
    env["loadavg_end"] = os.getloadavg()
    env["product_digest_end"] = _product_digest()


def env_line(env: Dict[str, Any], host: str) -> str:
    changed = ("" if env.get("product_digest_end", env["product_digest"]) == env["product_digest"]
               else " (WARNING: the extension or the package changed during the run)")
    return (f"Run {env['date_utc']} on {env['nproc']} cores ({env['cpu']}), "
            f"{env['ram_gib']} GiB RAM, {env['os']}; Python {env['python']}, "
            f"host {host} with SQLite {host_sqlite_version(host)}"
            f"{' (apsw ' + env['apsw'] + ')' if host == 'apsw' else ''}; "
            f"sqlite-ct {env['sqlite_ct']} from {env['sqlite_ct_source']} "
            f"(.so + package digest {env['product_digest']}){changed}; "
            f"load average at start {env['loadavg_start'][0]:.2f}, "
            f"at end {env.get('loadavg_end', os.getloadavg())[0]:.2f}.")


# ---- output ----------------------------------------------------------------

def write_json(path: str, data: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    progress(f"raw results: {path}")


def default_json_path(script: str, tag: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join(RESULTS_DIR, f"{script}-{tag}-{stamp}.json")


def update_readme(key: str, text: str, path: str = README) -> None:
    """Replace the block between <!-- BEGIN key --> and <!-- END key --> in
    the README (appended at the end when the markers are missing)."""
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    try:
        with open(path) as f:
            doc = f.read()
    except FileNotFoundError:
        doc = ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: block, doc)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)
    progress(f"README block {key!r} updated: {path}")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---- the four peer-bench operations (peer-bench.md), shared by the scripts ----

UPDATE_HALF_SQL = "UPDATE items SET qty=qty+1, price=price*1.01 WHERE id % 2 = 0"
DELETE_TENTH_SQL = "DELETE FROM items WHERE id % 10 = 5"
AUTOCOMMIT_SQL = "UPDATE items SET qty=? WHERE id=?"


def op_insert(cur: Any, data: Dict[str, Any]) -> None:
    cur.execute("BEGIN")
    cur.executemany(INSERT_SQL, data["rows"])
    cur.execute("COMMIT")


def op_autocommit(cur: Any, data: Dict[str, Any]) -> None:
    for params in data["autocommit"]:
        cur.execute(AUTOCOMMIT_SQL, params)


def op_autoinsert(cur: Any, data: Dict[str, Any]) -> None:
    """New rows, one autocommit INSERT each (data["autoinsert"])."""
    for row in data.get("autoinsert", ()):
        cur.execute(INSERT_SQL, row)


def op_update(cur: Any, data: Dict[str, Any]) -> None:
    cur.execute("BEGIN")
    cur.execute(UPDATE_HALF_SQL)
    cur.execute("COMMIT")


def op_delete(cur: Any, data: Dict[str, Any]) -> None:
    cur.execute("BEGIN")
    cur.execute(DELETE_TENTH_SQL)
    cur.execute("COMMIT")


OP_FUNCS: Dict[str, Callable[[Any, Dict[str, Any]], None]] = {
    "insert": op_insert, "autocommit": op_autocommit, "update": op_update,
    "delete": op_delete, "autoinsert": op_autoinsert}
