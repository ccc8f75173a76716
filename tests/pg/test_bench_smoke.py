"""benchmarks/bench_pg.py runs end to end (--quick) against the test server
and prints its tables; nothing is asserted about speed."""
import json
import os
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "benchmarks", "bench_pg.py")


def test_bench_pg_quick(pg_server, tmp_path):
    out = tmp_path / "pg.json"
    proc = subprocess.run([sys.executable, BENCH, "--quick", "--dsn", pg_server, "--json",
                           str(out)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    assert "#### capture overhead" in proc.stdout and "| upload_rows_per_s |" in proc.stdout
    record = json.loads(out.read_text())
    assert len(record["capture"]) == 4 and record["sync"]["upload_rows_per_s"] > 0
