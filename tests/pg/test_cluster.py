"""The throwaway-cluster helper (tests/pg_cluster.py) and the test fixtures."""
import os
import subprocess
import sys

import pytest

import pg_cluster


def test_cluster_runs_a_command_with_the_dsn_and_stops(pg_server):
    if pg_cluster.find_bin_dir() is None:
        pytest.skip("the helper needs local server binaries")
    script = os.path.join(os.path.dirname(pg_cluster.__file__), "pg_cluster.py")
    code = ("import os, psycopg; c = psycopg.connect(os.environ['SQLITE_CT_TEST_PG_DSN']); "
            "print(c.execute('select 6*7').fetchone()[0]); "
            "print(os.environ['SQLITE_CT_TEST_PG_DSN'])")
    proc = subprocess.run([sys.executable, script, "--", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    answer, dsn = proc.stdout.split()
    assert answer == "42"
    import psycopg
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_starts_with_an_empty_database(pg_dsn, run):
    import psycopg
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone()[0] == 0
        assert conn.execute("SELECT to_regnamespace('sqlite_ct')").fetchone()[0] is None
        conn.execute("CREATE TABLE left_behind (id integer PRIMARY KEY)")
        conn.execute("CREATE SCHEMA sqlite_ct")


def test_cluster_without_binaries_says_what_to_install(tmp_path):
    with pytest.raises(pg_cluster.ClusterError, match="apt-get install postgresql"):
        with pg_cluster.cluster(bin_dir=str(tmp_path)):
            pass


@pytest.mark.parametrize("require, outcome", [("", "2 skipped"), ("1", "2 error")])
def test_without_a_server_tests_skip_or_fail_when_required(require, outcome, tmp_path):
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, %r); import pg_cluster; "
            "pg_cluster.find_bin_dir = lambda: None; import pytest; "
            "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', %r]))"
            % (tests, os.path.join(tests, "pg", "test_cluster.py") + "::test_each_test_starts_with_an_empty_database"))
    env = {k: v for k, v in os.environ.items() if k != "SQLITE_CT_TEST_PG_DSN"}
    env["SQLITE_CT_REQUIRE_PG"] = require
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=120)
    assert outcome in proc.stdout, proc.stdout + proc.stderr
    assert (proc.returncode != 0) == bool(require)
    assert "apt-get install postgresql" in proc.stdout
