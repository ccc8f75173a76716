"""Type checking: the package ships py.typed, and `mypy --strict` (configured in
pyproject.toml) passes on the package and on tests/typing/consumer.py, a typed
application of the public API whose assert_type() calls fail when a result is
Any or of another type. The consumer also runs, so its calls are real."""
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSUMER = os.path.join(REPO_ROOT, "tests", "typing", "consumer.py")

mypy = pytest.importorskip("mypy", reason="mypy is in the [test] extra")


def run(argv, **kwargs):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    env.pop("PYTHONHOME", None)
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300, **kwargs)


def test_the_package_is_marked_typed():
    assert os.path.isfile(os.path.join(REPO_ROOT, "sqlite_ct", "py.typed"))


def test_mypy_strict_passes_on_the_package_and_the_typed_consumer(tmp_path):
    proc = run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found")


def test_mypy_strict_catches_a_wrong_type_in_the_consumer(tmp_path):
    # The check can fail: a consumer that expects the wrong type is reported.
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import sqlite3\nfrom typing import assert_type\nimport sqlite_ct\n"
                     "conn = sqlite3.connect(':memory:')\n"
                     "assert_type(sqlite_ct.enumerate_changes(conn, 't', 0).new_anchor, str)\n")
    proc = run([sys.executable, "-m", "mypy", "--strict", "--cache-dir",
                str(tmp_path / "cache"), str(wrong)])
    assert proc.returncode == 1
    assert 'Expression is of type "int", not "str"' in proc.stdout


def test_the_typed_consumer_runs():
    proc = run([sys.executable, CONSUMER])
    assert (proc.returncode, proc.stdout) == (0, "ok\n"), proc.stderr
