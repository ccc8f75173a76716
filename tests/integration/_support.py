"""Helpers for the integration tests: run a script in a fresh interpreter, read
a table, and keep a replica that applies change sets the way a sync client
does (deletes, then inserts, then updates; inserts and updates as upserts)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import sqlite_ct

# The checkout (or site-packages directory) holding the sqlite_ct under test:
# PYTHONPATH for interpreters that do not have it installed.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(sqlite_ct.__file__)))

Key = Tuple[Any, ...]


def start_python(script: str, *args: str, python: str = sys.executable,
                 env: Optional[Dict[str, str]] = None, **popen: Any) -> subprocess.Popen:
    """Start `script` in a fresh `python` with sqlite_ct importable (PYTHONPATH).
    A fresh interpreter keeps register_auto_extension() and stdlib sqlite3 work
    out of the test process."""
    full_env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    full_env.pop("PYTHONHOME", None)
    full_env.update(env or {})
    return subprocess.Popen([python, "-c", textwrap.dedent(script), *args], env=full_env,
                            stdin=subprocess.DEVNULL, text=True, **popen)


def run_python_unchecked(script: str, *args: str, python: str = sys.executable,
                         env: Optional[Dict[str, str]] = None, timeout: float = 60
                         ) -> Tuple[subprocess.CompletedProcess, Any]:
    """Run `script` to the end; returns the process and the JSON document it
    printed as its last line of output (None when it printed none)."""
    proc = start_python(script, *args, python=python, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    lines = stdout.strip().splitlines()
    return done, (json.loads(lines[-1]) if lines else None)


def describe(proc: subprocess.CompletedProcess) -> str:
    return (f"python exited with {proc.returncode}\n--- stdout\n{proc.stdout}"
            f"\n--- stderr\n{proc.stderr}")


def run_python(script: str, *args: str, python: str = sys.executable,
               env: Optional[Dict[str, str]] = None, timeout: float = 60) -> Any:
    """Run `script`, which must exit with status 0 after printing one JSON
    document as its last line of output; returns that document."""
    proc, document = run_python_unchecked(script, *args, python=python, env=env,
                                          timeout=timeout)
    assert proc.returncode == 0, describe(proc)
    assert document is not None, describe(proc)
    return document


def table_rows(conn: Any, table: str, columns: Sequence[str], keys: Sequence[str]
               ) -> Dict[Key, Dict[str, Any]]:
    """The user columns of every row of `table`, by key (apsw or sqlite3)."""
    cols = ", ".join(f'"{c}"' for c in columns)
    result = {}
    for row in conn.execute(f'SELECT {cols} FROM "{table}"').fetchall():
        record = dict(zip(columns, row))
        result[tuple(record[k] for k in keys)] = record
    return result


class Replica:
    """A copy of one table kept up to date from ChangeSets only."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self.rows: Dict[Key, Dict[str, Any]] = {}
        self.anchor = 0

    def key(self, row: Dict[str, Any]) -> Key:
        return tuple(row[k] for k in self.keys)

    def apply(self, changes: Any) -> None:
        """Apply one ChangeSet, which must start at this replica's anchor.
        A key appears at most once in a change set (nothing duplicated)."""
        assert changes.since == self.anchor, (changes.since, self.anchor)
        assert changes.new_anchor >= self.anchor
        seen: List[Key] = [self.key(r) for r in changes.inserts + changes.updates]
        assert len(seen) == len(set(seen)), f"a key appears twice: {changes}"
        deleted = [self.key(r) for r in changes.deletes]
        assert len(deleted) == len(set(deleted)), f"a key is deleted twice: {changes}"
        for key in deleted:
            self.rows.pop(key, None)
        for row in changes.inserts + changes.updates:
            self.rows[self.key(row)] = dict(row)
        self.anchor = changes.new_anchor


def keys_of(rows: Iterable[Dict[str, Any]], key: str = "id") -> List[Any]:
    return sorted(r[key] for r in rows)
