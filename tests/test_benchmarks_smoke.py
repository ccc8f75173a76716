"""The benchmark scripts run end to end (--quick) and print their tables.

Nothing here asserts anything about speed: the point is that benchmarks/ keeps
working as the code under it changes. Each script runs in a subprocess, as a
user would run it, and writes its raw JSON to a temporary directory."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from pg_fixtures import pg_server  # noqa: F401

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "benchmarks")


def run_script(script, tmp_path, *args, timeout=120):
    out_json = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), "--quick", "--json", str(out_json),
         "--dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    with open(out_json) as f:
        record = json.load(f)
    return proc.stdout, record


@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
def test_bench_ops_quick(tmp_path, host):
    stdout, record = run_script("bench_ops.py", tmp_path, "--host", host)
    assert f"**Headline ({host})" in stdout
    for title in ("#### a. insert", "#### b. ", "#### c. UPDATE 50%", "#### d. DELETE 10%",
                  "#### file size"):
        assert title in stdout
    assert "| 1 sqlite-ct |" in stdout and "| 3 trigger floor |" in stdout
    if host == "apsw":
        assert "| 2 session ext |" in stdout
    for target in ("≤ 1.4x (aim ≤ 1.2x)", "≤ 2.0x (aim ≤ 1.5x)", "≤ 1.8x (aim ≤ 1.4x)",
                   "≤ 2.3x (aim ≤ 2.0x)", "≤ 1.8x (aim ≤ 1.5x)", "≤ 1.2x (aim ≤ 1.1x)"):
        assert target in stdout, target
    assert "| file size after 10,000 inserts |" in stdout
    assert "| file size at the end of the workload |" in stdout
    assert len(record["reps"]) == record["args"]["reps"]
    assert set(record["summary"]) == set(record["variants"])
    sizes = {name: v["size_after_load"]["bytes"] for name, v in record["summary"].items()}
    assert sizes["floor"] == sizes["untracked"] < sizes["sqlite-ct"]


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_bench_ops_callgrind_quick(tmp_path):
    """Instructions per row, whole process, one callgrind run per variant: every
    operation gets its own count, and the counts put the variants in the order
    their work does (the floor's empty trigger between untracked and sqlite-ct)."""
    stdout, record = run_script("bench_ops.py", tmp_path, "--callgrind",
                                "--variants", "sqlite-ct,floor", timeout=240)
    assert "**Instructions per row (apsw)" in stdout
    assert "| 1 sqlite-ct |" in stdout and "| 3 trigger floor |" in stdout
    counts = record["counts"]
    assert set(counts) == {"untracked", "sqlite-ct", "floor"}
    for op in ("insert", "autocommit", "update", "delete", "autoinsert"):
        assert counts["untracked"][op] < counts["floor"][op] < counts["sqlite-ct"][op], op


def test_bench_ops_explore_quick(tmp_path):
    """The ablations build their own schemas from sqlite-ct's SQL functions and
    trigger names, so they break when those change: run every one."""
    stdout, record = run_script("bench_ops.py", tmp_path, "--explore")
    for ablation in ("x1 ", "x2 ", "x3 ", "x4 ", "x5 ", "x6 "):
        assert f"| {ablation}" in stdout, ablation
    assert set(record["summary"]) == set(record["variants"])


def test_bench_enum_quick(tmp_path):
    stdout, record = run_script("bench_enum.py", tmp_path)
    assert "**Headline (apsw" in stdout
    assert "#### enumerate changes since an anchor" in stdout
    assert "enumerate_changes / by key (to dicts)" in stdout
    assert "#### memory:" in stdout
    rss = record["results"]["rss"]
    assert rss["iter"]["count"] == rss["enumerate"]["count"] == record["args"]["rows"]


def test_bench_http_quick(tmp_path):
    """A real `sqlite-ct serve` and real HTTP clients, on loopback."""
    stdout, record = run_script("bench_http.py", tmp_path)
    assert "### Sync over HTTP (loopback, SQLite hub)" in stdout
    for measure in ("| initial download, 20000 rows", "| peak client RSS",
                    "| sync with nothing to do", "| incremental sync, 10 hub rows changed",
                    "| 20 concurrent clients x 3 rounds"):
        assert measure in stdout
    assert record["download"]["rows"] == 20000
    assert len(record["download"]["incremental_ms"]) == 5
    assert record["concurrent"]["syncs"] + record["concurrent"]["errors"] == 60


def test_bench_http_postgres_quick(pg_server, tmp_path):  # noqa: F811
    """The same service over a PostgreSQL hub, in a database of its own on the
    test server (created and dropped by the script)."""
    stdout, record = run_script("bench_http.py", tmp_path, "--hub", "postgres", "--dsn",
                                pg_server, timeout=240)
    assert "### Sync over HTTP (loopback, PostgreSQL hub)" in stdout
    assert "| incremental sync, 10 hub rows changed, 20000 rows on the hub" in stdout
    assert record["environment"]["postgresql"]
    assert record["download"]["rows"] == 20000
    assert len(record["download"]["incremental_ms"]) == 5
    assert record["concurrent"]["syncs"] + record["concurrent"]["errors"] == 60


def test_bench_sync_quick(tmp_path):
    """In-process sync: every download and upload phase runs and checks its counts."""
    stdout, record = run_script("bench_sync.py", tmp_path)
    assert "### Sync in process (SQLite hub file, apsw)" in stdout
    for measure in ("| initial download, default batching", "| initial download, 10,000-row",
                    "| upload apply on the hub", "| upload, whole sync"):
        assert measure in stdout
    assert set(record["download"]) == {"default", "10000", "none"}
    assert all(d["rows"] == 20000 for d in record["download"].values())
    assert record["download"]["10000"]["batches"] == 3
    assert record["download"]["default"]["batches"] == 3       # 10,000 by default
    assert record["download"]["none"]["batches"] == 1
    assert [u["rows"] for u in record["upload"]] == [5000]
    assert all(u["peak_rss_mib"] > 0 for u in record["upload"])
    assert "| downloaded deletes per in-scope change |" in stdout
    assert record["scoped"]["deletes_of_keys_never_held"] == 0
    scoped = record["scoped"]
    assert scoped["record_after_next_sync"] == (scoped["client_rows_after"]
                                                + scoped["deletes_downloaded"])
    assert scoped["record_after_three_syncs"] == scoped["client_rows_after"]


def test_benchlib_targets_and_verdicts():
    """The headline tables' verdicts: the aim, the bound, or neither; a median
    exactly at a limit meets it."""
    sys.path.insert(0, BENCH)
    try:
        import benchlib
    finally:
        sys.path.remove(BENCH)
    assert benchlib.fmt_target("insert") == "≤ 1.4x (aim ≤ 1.2x)"
    assert benchlib.fmt_target("enumerate") == "≤ 1.2x"
    assert [benchlib.target_verdict("update", r) for r in (1.9, 2.0, 2.1, 2.3, 2.31)] == [
        "aim met", "aim met", "met", "met", "**not met**"]
    assert [benchlib.target_verdict("enumerate", r) for r in (0.5, 1.2, 1.21)] == [
        "met", "met", "**not met**"]
    assert {op: benchlib.TARGETS[op] for op in
            ("insert", "autocommit", "autoinsert", "update", "delete", "size")} == {
        "insert": (1.4, 1.2), "autocommit": (2.0, 1.5), "autoinsert": (1.8, 1.4),
        "update": (2.3, 2.0), "delete": (1.8, 1.5), "size": (1.2, 1.1)}
