"""One owner for each piece of state: the tracking state (the core-owned
system tables and the stamp columns of tracked tables) is written only by the
core (csrc/ and the sqlite_ct modules), never by the layers on top of it
(sqlite_ct.sync, sqlite_ct.server, the CLI), which call the core's public
functions instead (docs/architecture.md, "Who writes what").

Two checks, each of which fails when a direct write comes back:
- a scan of those layers' source for SQL that writes a core-owned table or
  column, or sets the connection's tracking state by SQL; and
- real syncs (upload, download, hub side effects, conflicts forced and
  merged, reinitialise, reidentify, purge, creation options), and the CLI's
  commands run in this process, under an SQLite authorizer that attributes
  every write to a core-owned table or column to the Python code that
  prepared it: each must come from a core module.
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
import sys
from typing import Any, List, Optional, Set, Tuple

import apsw
import pytest

import sqlite_ct
from sqlite_ct.sync import (ApplyAction, ConflictResolver, ResolveAction, SyncAgent,
                            SyncDirection, SyncGroup, SyncTable, TableCreationOption)
from sqlite_ct.sync import ClientSyncProvider, ServerSyncProvider

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "sqlite_ct")

CORE_TABLES = ("__sysOCSDeletedRows", "__sysTxCommitSequence", "__sysOCSTrackedObjects",
               "__sysSyncArticles", "__sysSyncSubscriptions", "__sysCtMeta",
               "__sysCtReplaceVictims")
CORE_COLUMNS = ("__sysChangeTxBsn", "__sysInsertTxBsn", "__sysTrackingContext")
STATE_FUNCTIONS = ("sqlite_ct_set_apply_mode", "sqlite_ct_set_tracking_context")
# The layers on top of the core, as paths under sqlite_ct/.
CLIENT_LAYERS = ("sync/", "server/", "cli.py")


# -- the source scan ----------------------------------------------------------

_TABLES = "|".join(CORE_TABLES)
_COLUMNS = "|".join(CORE_COLUMNS)
_WRITE_TABLE = re.compile(
    r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM"
    r"|DROP\s+TABLE(?:\s+IF\s+EXISTS)?|CREATE\s+TABLE(?:\s+IF\s+NOT\s+EXISTS)?|ALTER\s+TABLE)"
    r"\s+(?:\"?main\"?\.)?\"?(?:" + _TABLES + r")\b", re.IGNORECASE)
# A stamp column assigned: at the start of a SET clause or after a comma in
# one, or as a SET term built on its own (a string that starts with it).
_WRITE_COLUMN = re.compile(r"(?:^|\bSET\b|,)\s*(?:\w+\.)?\"?(?:" + _COLUMNS + r")\"?\s*=(?!=)",
                           re.IGNORECASE)
_ADD_COLUMN = re.compile(r"\bADD\s+(?:COLUMN\s+)?\"?(?:" + _COLUMNS + r")\b", re.IGNORECASE)
_STATE = re.compile(r"\b(?:" + "|".join(STATE_FUNCTIONS) + r")\s*\(", re.IGNORECASE)


def _strings(node: ast.AST) -> Optional[str]:
    """The text of a string expression: constants, f-strings (placeholders
    as "{}") and + of those; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _strings(node.left), _strings(node.right)
        if left is not None and right is not None:
            return left + right
    return None


def core_writes_in(source: str) -> List[Tuple[int, str]]:
    """(line, SQL) of every string in `source` that writes core-owned state."""
    found = []
    for node in ast.walk(ast.parse(source)):
        text = _strings(node)
        if text is None:
            continue
        if any(p.search(text) for p in (_WRITE_TABLE, _WRITE_COLUMN, _ADD_COLUMN, _STATE)):
            found.append((node.lineno, text))
    return found


def layer_files() -> List[str]:
    out = []
    for layer in CLIENT_LAYERS:
        path = os.path.join(PACKAGE, layer)
        if os.path.isfile(path):
            out.append(path)
            continue
        for root, _, files in os.walk(path):
            out.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))
    return sorted(out)


def test_the_scan_covers_the_layers():
    rel = {os.path.relpath(p, PACKAGE) for p in layer_files()}
    assert {"cli.py", "sync/client.py", "sync/server.py", "sync/_apply.py",
            "server/app.py"} <= rel


@pytest.mark.parametrize("sql", [
    # what sqlite_ct.sync wrote itself before the core offered it
    'DELETE FROM __sysOCSDeletedRows WHERE __sysTName = ? AND __sysRK = sqlite_ct_pack_key(?)',
    "UPDATE __sysOCSDeletedRows SET __sysDeletedTime = ? WHERE __sysTName = ?",
    "UPDATE __sysOCSDeletedRows SET __sysTrackingContext = NULL WHERE __sysTName = :t",
    "UPDATE __sysSyncArticles SET ReceivedAnchor = ? WHERE TableName = ?",
    "UPDATE __sysSyncSubscriptions SET ClientId = ? WHERE ClientId = ?",
    '"__sysInsertTxBsn" = 0',
    "SELECT sqlite_ct_set_apply_mode(0)",
    'UPDATE main."t" SET "v" = 1, "__sysChangeTxBsn" = 0 WHERE "id" = 1',
    "INSERT OR REPLACE INTO main.__sysCtMeta(key, value) VALUES (?, 1)",
    'ALTER TABLE main."t" ADD COLUMN "__sysTrackingContext" BLOB',
    "CREATE TABLE IF NOT EXISTS main.__sysSyncArticles(TableName TEXT)",
])
def test_the_scan_finds_a_direct_write(sql):
    assert core_writes_in(f"x = {sql!r}\n") == [(1, sql)]
    # also when built as an f-string or by +
    assert core_writes_in(f"y = 1\nx = f{sql!r} + ''\n")


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM __sysOCSDeletedRows WHERE __sysTName = ? AND __sysDeleteTxBsn > ?",
    'SELECT 1 FROM t WHERE "__sysChangeTxBsn" = :b AND "__sysTrackingContext" IS :x',
    'DELETE FROM main."t" WHERE coalesce("__sysChangeTxBsn", :e) <= :s',
    "INSERT INTO __sysSyncConflicts(Type) VALUES (?)",
    "UPDATE __sysSyncReplica SET Generation = ?",
    "SELECT sqlite_ct_apply_mode()",
])
def test_the_scan_lets_reads_and_sync_owned_tables_through(sql):
    assert core_writes_in(f"x = {sql!r}\n") == []


def test_no_layer_above_the_core_writes_core_owned_state_in_its_source():
    found = []
    for path in layer_files():
        with open(path, encoding="utf-8") as f:
            for line, sql in core_writes_in(f.read()):
                found.append(f"{os.path.relpath(path, REPO)}:{line}: {sql}")
    assert found == [], ("these write the core's tracking state directly; call the core's "
                         "public function for it (sqlite_ct.replica, anchors, tracking):\n"
                         + "\n".join(found))


# -- the authorizer over real syncs --------------------------------------------

_WRITE_OPS = {apsw.SQLITE_INSERT: "INSERT", apsw.SQLITE_UPDATE: "UPDATE",
              apsw.SQLITE_DELETE: "DELETE", apsw.SQLITE_CREATE_TABLE: "CREATE",
              apsw.SQLITE_DROP_TABLE: "DROP", apsw.SQLITE_ALTER_TABLE: "ALTER"}
_CORE_TABLES = {t.lower() for t in CORE_TABLES}
_CORE_COLUMNS = {c.lower() for c in CORE_COLUMNS}
_PLUMBING = os.path.join(PACKAGE, "_conn.py")
_SYNC_PLUMBING = os.path.join(PACKAGE, "sync", "_sql.py")


def _author() -> Tuple[Optional[str], str]:
    """The sqlite_ct module (path under sqlite_ct/) whose code prepared the
    statement being authorized: the innermost package frame other than the
    statement helpers of _conn.py (None for code outside the package); and,
    for the report, the innermost frame outside the statement helpers."""
    frame = sys._getframe(2)
    author, where = None, ""
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if author is None and path.startswith(PACKAGE + os.sep) and path != _PLUMBING:
            author = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
        if not where and path not in (_PLUMBING, _SYNC_PLUMBING):
            where = f"{os.path.relpath(path, REPO)}:{frame.f_lineno}"
        if author is not None and where:
            break
        frame = frame.f_back
    return author, where


# The first statement the extension runs when it prepares the fix of an
# inserted row (csrc/state.c, ctFixPrepare): from it until the first statement
# that writes starts, only the extension's C code runs, preparing the fix's
# statements (which write core-owned state) from inside a trigger's WHEN.
_FIX_LOOKUP = "SELECT tbl_name FROM main.sqlite_schema WHERE type='trigger' AND name='__sysct_ai_'"


class Recorder:
    """An authorizer that records, for every statement prepared directly (not
    by a trigger) that writes a core-owned table or column or sets the
    connection's tracking state, which module prepared it. Statements the
    extension prepares from C inside a trigger's function call cannot be told
    from direct ones by the authorizer: the log row (see _target) and the fix
    of an inserted row, which the SQLite trace marks (_FIX_LOOKUP); those are
    the core's."""

    def __init__(self) -> None:
        self.core: Set[Tuple[str, str, str]] = set()
        self.violations: Set[Tuple[str, str, str]] = set()
        self.where: Set[str] = set()
        # statement ids the extension started while preparing a fix, or None
        self.fixing: Optional[Set[int]] = None

    def trace(self, event: dict) -> None:
        if event["code"] == apsw.SQLITE_TRACE_STMT and event["sql"].startswith(_FIX_LOOKUP):
            self.fixing = {event["id"]}
        elif self.fixing is not None:
            if event["code"] == apsw.SQLITE_TRACE_STMT and event["readonly"]:
                self.fixing.add(event["id"])      # reading the table's definition
            elif not (event["code"] == apsw.SQLITE_TRACE_PROFILE
                      and event["id"] in self.fixing):
                self.fixing = None                # anything else ends it

    def __call__(self, op: int, a: Optional[str], b: Optional[str], db: Optional[str],
                 trigger: Optional[str]) -> int:
        target = self._target(op, a, b)
        if target is not None and trigger is None and self.fixing is not None:
            self.core.add((target[0], target[1], "csrc/state.c:ctRunFix"))
        elif target is not None and trigger is None:
            author, where = _author()
            if author is not None:
                record = (target[0], target[1], author)
                if author.startswith(CLIENT_LAYERS):
                    self.violations.add(record)
                    self.where.add(f"{target[0]} {target[1]} at {where}")
                else:
                    self.core.add(record)
        return apsw.SQLITE_OK

    @staticmethod
    def _target(op: int, a: Optional[str], b: Optional[str]) -> Optional[Tuple[str, str]]:
        if op == apsw.SQLITE_FUNCTION:
            return ("CALL", b or "") if (b or "").lower() in STATE_FUNCTIONS else None
        kind = _WRITE_OPS.get(op)
        if kind is None:
            return None
        table = (b if kind == "ALTER" else a) or ""
        if kind == "INSERT" and table.lower() == "__systxcommitsequence":
            # The log row: the extension inserts it from C, nested in a
            # trigger's function call, which the authorizer cannot tell from
            # a direct statement. The source scan covers this table.
            return None
        if table.lower() in _CORE_TABLES:
            return kind, table
        if kind == "UPDATE" and (b or "").lower() in _CORE_COLUMNS:
            return kind, f"{a}.{b}"
        return None

    def connect(self, path: str) -> apsw.Connection:
        # No statement cache: every execution is prepared, so authorized.
        conn = apsw.Connection(path, statementcachesize=0)
        sqlite_ct.load(conn)
        conn.setbusytimeout(5000)
        conn.authorizer = self
        conn.trace_v2(apsw.SQLITE_TRACE_STMT | apsw.SQLITE_TRACE_PROFILE, self.trace)
        return conn


def _rows(conn: Any, table: str) -> List[tuple]:
    cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')
            if not r[1].startswith("__sys")]
    names = ", ".join(f'"{c}"' for c in cols)
    return sorted(conn.execute(f'SELECT {names} FROM "{table}"').fetchall())


def _merge(conflict):
    conflict.server_row["v"] = f"{conflict.server_row['v']}+{conflict.client_row['v']}"
    return ApplyAction.RETRY_WITH_FORCE_WRITE


def test_real_syncs_write_core_owned_state_only_through_the_core(tmp_path):
    rec = Recorder()
    hub = rec.connect(str(tmp_path / "hub.db"))
    hub.execute("PRAGMA foreign_keys = ON")
    hub.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY, name TEXT);"
                "CREATE TABLE child(id INTEGER PRIMARY KEY, "
                "parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE, v TEXT);"
                "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
                "CREATE TABLE d(id INTEGER PRIMARY KEY, v TEXT);"
                "INSERT INTO parent VALUES (1, 'p1'), (2, 'p2');"
                "INSERT INTO child VALUES (10, 1, 'a'), (20, 2, 'b');"
                "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three');"
                "INSERT INTO d VALUES (1, 'd1'), (2, 'd2');"
                # a hub side effect on uploaded rows
                "CREATE TRIGGER up AFTER INSERT ON t BEGIN "
                "UPDATE t SET v = upper(v) WHERE id = new.id; END")
    server = ServerSyncProvider(hub)
    family = SyncGroup("family")
    tables = [SyncTable("parent", group=family), SyncTable("child", group=family),
              SyncTable("t"), SyncTable("d", SyncDirection.DOWNLOAD_ONLY)]
    fire = ResolveAction.FIRE_EVENT
    resolver = ConflictResolver(client_update_server_update=fire)

    def client(name: str, tables=tables, **kwargs: Any) -> Tuple[Any, SyncAgent]:
        conn = rec.connect(str(tmp_path / f"{name}.db"))
        provider = ClientSyncProvider(conn, conflict_resolver=resolver,
                                      on_apply_change_failed=_merge, **kwargs)
        return conn, SyncAgent(provider, server, tables)

    x, ax = client("x", retention_days=1)
    y, ay = client("y")
    ax.synchronize()
    ay.synchronize()
    # upload and download, with a hub trigger and a cascade
    x.execute("INSERT INTO t(id, v) VALUES (4, 'four'); UPDATE t SET v = 'TWO' WHERE id = 2; "
              "DELETE FROM t WHERE id = 3; DELETE FROM parent WHERE id = 1")
    ax.synchronize()
    ay.synchronize()
    assert _rows(y, "t") == _rows(hub, "t") == [(1, "one"), (2, "TWO"), (4, "FOUR")]
    assert _rows(x, "child") == _rows(hub, "child") == [(20, 2, "b")]
    # download conflicts on a download-only table: a pending delete and a
    # pending insert the server's version replaces, and a merge
    x.execute("DELETE FROM d WHERE id = 1; INSERT INTO d(id, v) VALUES (10, 'x10'); "
              "UPDATE d SET v = 'x2' WHERE id = 2")
    hub.execute("UPDATE d SET v = 'h1' WHERE id = 1; INSERT INTO d(id, v) VALUES (10, 'h10'); "
                "UPDATE d SET v = 'h2' WHERE id = 2")
    stats = ax.synchronize()
    assert len(stats.conflicts) == 3
    assert _rows(x, "d") == [(1, "h1"), (2, "h2+x2"), (10, "h10")]
    # retention: x's uploaded tombstones, aged, are purged after a sync
    x.execute("UPDATE __sysOCSDeletedRows SET __sysDeletedTime = 0")
    ax.synchronize()
    assert x.execute("SELECT count(*) FROM __sysOCSDeletedRows WHERE __sysTName = 't'"
                     ).fetchone()[0] == 0
    # reinitialise, reidentify
    ax.reinitialise("t")
    ax.reidentify()
    ax.synchronize()
    assert _rows(x, "t") == _rows(hub, "t")
    # creation options over existing tables
    z = rec.connect(str(tmp_path / "z.db"))
    z.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (9, 'z');"
              "CREATE TABLE d(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO d VALUES (9, 'z')")
    z.close()
    z, az = client("z", tables=[
        SyncTable("t", creation_option=TableCreationOption.DROP_EXISTING_OR_CREATE_NEW_TABLE),
        SyncTable("d", SyncDirection.DOWNLOAD_ONLY,
                  creation_option=TableCreationOption.TRUNCATE_EXISTING_OR_CREATE_NEW_TABLE)])
    az.synchronize()
    assert _rows(z, "t") == _rows(hub, "t")
    assert _rows(z, "d") == _rows(hub, "d")

    assert sorted(rec.where) == [], "core-owned state written by the sync layer itself"
    assert not rec.violations
    # The syncs did write core-owned state, through the core: the recorder
    # saw it, so it would have seen a direct write.
    by_module = {(module, table.split(".")[0]) for _, table, module in rec.core}
    assert {("replica.py", "__sysOCSDeletedRows"), ("replica.py", "d"),
            ("anchors.py", "__sysSyncArticles"), ("anchors.py", "__sysSyncSubscriptions"),
            ("retention.py", "__sysOCSDeletedRows"),
            ("tracking.py", "sqlite_ct_set_apply_mode")} <= by_module, sorted(by_module)


@pytest.mark.parametrize("sql", [
    "UPDATE __sysSyncArticles SET SentAnchor = NULL",
    "DELETE FROM __sysOCSDeletedRows",
    "SELECT sqlite_ct_set_apply_mode(0)",
    'UPDATE t SET "__sysInsertTxBsn" = 0',
])
def test_the_authorizer_attributes_a_direct_write_to_the_sync_layer(tmp_path, sql):
    from sqlite_ct.sync import _sql

    rec = Recorder()
    conn = rec.connect(str(tmp_path / "x.db"))
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    sqlite_ct.set_sent_anchor(conn, "t", 0)
    with sqlite_ct.applying_server_changes(conn):
        _sql.execute(conn, sql)
    assert {module for _, _, module in rec.violations} == {"sync/_sql.py"}


def test_the_cli_writes_core_owned_state_only_through_the_core(tmp_path, monkeypatch):
    """The sqlite-ct commands, run in this process on connections that carry
    the recorder: enable, sync, purge, conflicts and resolve, reinitialise,
    reidentify, disable."""
    from sqlite_ct import _conn, cli

    rec = Recorder()
    monkeypatch.setattr(_conn, "open_database",
                        lambda path, create=True, busy_timeout_ms=5000: rec.connect(path))

    def run(*args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        code = cli.main(list(args), stdout=out, stderr=err)
        assert code == 0, (args, err.getvalue())
        return out.getvalue()

    hub_path, client_path = str(tmp_path / "hub.db"), str(tmp_path / "client.db")
    hub = rec.connect(hub_path)
    hub.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
                "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    run("enable", hub_path, "t")
    run("sync", client_path, hub_path, "--table", "t")
    client = rec.connect(client_path)
    client.execute("UPDATE t SET v = 'client' WHERE id = 1; DELETE FROM t WHERE id = 3")
    run("sync", client_path, hub_path)
    # a deferred conflict (the Python API), settled by the CLI
    hub.execute("UPDATE t SET v = 'hub' WHERE id = 2")
    client.execute("UPDATE t SET v = 'mine' WHERE id = 2")
    defer = ConflictResolver(client_update_server_update=ResolveAction.DEFER)
    SyncAgent(ClientSyncProvider(client, conflict_resolver=defer), ServerSyncProvider(hub),
              [SyncTable("t", SyncDirection.DOWNLOAD_ONLY)]).synchronize()
    (conflict,) = json.loads(run("conflicts", client_path, "--json"))["conflicts"]
    run("resolve", client_path, str(conflict["id"]), "--keep-local")
    run("sync", client_path, hub_path)
    assert _rows(hub, "t") == [(1, "client"), (2, "mine")]
    client.execute("UPDATE __sysOCSDeletedRows SET __sysDeletedTime = 0")
    run("purge", client_path, "t", "--older-than-days", "1")
    run("reinitialise", client_path, hub_path)
    run("reidentify", client_path, hub_path)
    assert _rows(client, "t") == _rows(hub, "t")
    run("disable", client_path, "t")

    assert sorted(rec.where) == [], "core-owned state written by the CLI or sync itself"
    modules = {module for _, _, module in rec.core}
    assert {"replica.py", "anchors.py", "retention.py", "tracking.py"} <= modules, modules
