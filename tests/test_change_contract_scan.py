"""The change contract is defined once: sqlite_ct_changes() (csrc/changes.c).

A source scan of the Python package for SQL that spells the contract out
again: a row's change window ("__sysChangeTxBsn" compared with an anchor, or
its NULL stamps), insert versus update ("__sysInsertTxBsn" compared), the
tombstones' window and rules (__sysDeleteTxBsn, __sysInsertTxCsn compared),
or any read of the tombstone table __sysOCSDeletedRows. Statements that write
(DELETE, UPDATE, INSERT) are the write path's business and not scanned here.

Every place that still reads the storage this way is listed in EXCEPTIONS
with its reason; a new one fails the test, and so does an exception whose
place no longer reads the storage (the list stays honest)."""
from __future__ import annotations

import ast
import pathlib
import re
from typing import Dict, List, Set, Tuple

import sqlite_ct

PACKAGE = pathlib.Path(sqlite_ct.__file__).resolve().parent

CONTRACT = re.compile(
    r'__sysChangeTxBsn"?\s*(?:[<>]|IS\s+NULL)'
    r'|__sysInsertTxBsn"?\s*[<>]'
    r"|__sysDeleteTxBsn\s*[<>]"
    r"|__sysInsertTxCsn\s*[<>]"
    r'|coalesce\(\s*[\w.]*"?__sys(?:Change|Insert)TxBsn"?\s*,[^)]*\)\s*[<>]'
    r"|FROM\s+(?:main\.)?__sysOCSDeletedRows", re.IGNORECASE)
WRITE = re.compile(r"^\s*(?:DELETE|UPDATE|INSERT|REPLACE|CREATE|DROP|ALTER)\b", re.IGNORECASE)


# (module, function) -> why it still reads the storage itself.
EXCEPTIONS: Dict[Tuple[str, str], str] = {
    ("check.py", "_table_problems"):
        "check() verifies the storage itself (stamps above the last committed CSN, "
        "tombstones of live rows): it reads the layout as stored and decides nothing "
        "about what changed",
    ("cli.py", "status_document"):
        "counts the tombstones kept, a storage figure `status` shows; its pending "
        "changes come from iter_changes()",
    ("cli.py", "demo_tracking"):
        "the demo shows users the tombstone table",
    ("retention.py", "purge_tombstones"):
        "retention maintains the tombstones it purges",
    ("retention.py", "purge_transaction_sequence"):
        "retention checks no tombstone still needs the log rows it purges",
}


def _text(node: ast.AST) -> str:
    """The SQL text of a string literal or f-string ({} for each field)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return ""


class _Finder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.scope: List[str] = []
        self.found: Dict[str, List[Tuple[int, str]]] = {}

    def _nested(self, node: ast.AST) -> None:
        self.scope.append(node.name)  # type: ignore[attr-defined]
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _nested

    def _check(self, node: ast.AST) -> None:
        sql = _text(node)
        if sql and CONTRACT.search(sql) and not WRITE.match(sql):
            where = ".".join(self.scope) or "<module>"
            self.found.setdefault(where, []).append((node.lineno, " ".join(sql.split())[:90]))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        self._check(node)   # its parts are not scanned again

    def visit_Constant(self, node: ast.Constant) -> None:
        self._check(node)


def scan_source(source: str) -> Dict[str, List[Tuple[int, str]]]:
    finder = _Finder()
    finder.visit(ast.parse(source))
    return finder.found


def scan_package() -> Dict[Tuple[str, str], List[Tuple[int, str]]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        for where, hits in scan_source(path.read_text(encoding="utf-8")).items():
            found[(module, where)] = hits
    return found


def test_no_module_spells_the_change_contract_again():
    found = scan_package()
    new = {k: v for k, v in found.items() if k not in EXCEPTIONS}
    assert not new, (
        "these read the change-tracking storage directly; read through "
        "sqlite_ct_changes(table, since [, until [, exclude_context]]) (sqlite_ct.changes "
        "shows how), or list them in EXCEPTIONS with the reason:\n"
        + "\n".join(f"  {m}:{line} {w}: {sql}" for (m, w), hits in new.items()
                    for line, sql in hits))


def test_every_exception_still_applies():
    found: Set[Tuple[str, str]] = set(scan_package())
    stale = sorted(set(EXCEPTIONS) - found)
    assert not stale, f"no longer read the storage; remove them from EXCEPTIONS: {stale}"


def test_the_readers_of_the_core_have_no_exception():
    assert not [k for k in EXCEPTIONS if k[0] in ("changes.py", "anchors.py", "tracking.py")]


def test_the_scan_finds_the_contract_spelled_out():
    """What the readers of sqlite_ct.changes looked like before the function
    defined the contract, and the forms sync used: each is found; writes and
    reads through sqlite_ct_changes() are not."""
    source = '''
def rows(cols, table):
    return (f'SELECT {cols}, coalesce("__sysInsertTxBsn", ?3) FROM main.{table} '
            f'WHERE "__sysChangeTxBsn" > ?1 AND "__sysChangeTxBsn" <= ?2')

def unstamped(table):
    return f'SELECT * FROM main.{table} WHERE "__sysChangeTxBsn" IS NULL AND ?3 > ?1'

def deletes():
    return ("SELECT __sysRK FROM main.__sysOCSDeletedRows WHERE __sysTName = ?3 "
            "AND __sysDeleteTxBsn > ?1 GROUP BY __sysRK HAVING min(__sysInsertTxCsn) <= ?1")

class Reader:
    def pending(self, t):
        return f'SELECT coalesce(t."__sysChangeTxBsn", :e) > :s FROM {t} AS t'

def write(t):
    return ("DELETE FROM __sysOCSDeletedRows WHERE __sysTName = ? AND __sysDeleteTxBsn > ?",
            f'UPDATE {t} SET "__sysInsertTxBsn" = 0 WHERE "__sysChangeTxBsn" > ?')

def through_the_contract(t):
    return "SELECT op, pk, row_rowid FROM sqlite_ct_changes(?, ?) WHERE op = 'D'"
'''
    assert sorted(scan_source(source)) == ["Reader.pending", "deletes", "rows", "unstamped"]


# -- sync names no tracking storage -------------------------------------------

STORAGE = re.compile(r"__sys(?!Sync)[A-Za-z]")
SYNC = PACKAGE / "sync"


def _storage_names(source: str) -> List[Tuple[int, str]]:
    """String literals (not docstrings) that name the tracking storage:
    any __sys* table or column other than sync's own __sysSync* tables."""
    tree = ast.parse(source)
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docs.add(id(body[0].value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and STORAGE.search(node.value)]


def test_sync_reads_tracking_state_only_through_the_core():
    """Sync (client, hub, PostgreSQL) asks the core for a table's tracking
    (tracking.table_tracking), a row's stamps (tracking.row_stamps), the commit
    log (tracking.commit_time) and changes (sqlite_ct_changes()): no SQL in
    sqlite_ct/sync names the tracking storage itself."""
    found = {path.relative_to(PACKAGE).as_posix(): hits
             for path in sorted(SYNC.rglob("*.py"))
             if (hits := _storage_names(path.read_text(encoding="utf-8")))}
    assert not found, found


def test_the_storage_scan_finds_names_in_code_not_in_docstrings():
    source = '''
def f(t):
    """Reads __sysChangeTxBsn (documented)."""
    return f'SELECT t."__sysTrackingContext" FROM {t} AS t', "__sysSyncClients"
'''
    assert [v for _, v in _storage_names(source)] == ['SELECT t."__sysTrackingContext" FROM ']
