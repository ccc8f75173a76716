"""sqlite-ct in Debian's sqlite3 command-line shell (/usr/bin/sqlite3).

The shell is a separate process with its own SQLite library, so `.load` of
loadable_path() there never meets the copy apsw has in this process. The SQL
below is the README's shell quick start: QUICK_START runs verbatim and must
print QUICK_START_OUTPUT, and the enumeration queries it is built from must
agree with sqlite_ct.enumerate_changes() on the same file.
"""
import json
import os
import re
import subprocess
from typing import Dict, List

import pytest

import sqlite_ct

from ._support import Replica, keys_of, table_rows

SQLITE3_SHELL = "/usr/bin/sqlite3"

pytestmark = pytest.mark.skipif(
    not os.access(SQLITE3_SHELL, os.X_OK),
    reason=f"Debian's sqlite3 shell ({SQLITE3_SHELL}, apt package sqlite3) is not installed")

# Where the README's snippet loads the extension from; the tests put
# loadable_path() minus ".so" in its place.
EXTENSION_PLACEHOLDER = "/path/to/sqlite_ct/sqlitect"

# --- the README's shell quick start ------------------------------------------

# Rows inserted or updated after :since, from the change contract
# sqlite_ct_changes(), joined to the table by rowid.
CHANGED_ROWS_SQL = """\
SELECT o.id, o.item, o.qty,
       CASE c.op WHEN 'I' THEN 'insert' ELSE 'update' END AS change
  FROM sqlite_ct_changes('orders', :since) AS c
  JOIN orders AS o ON o.rowid = c.row_rowid
 ORDER BY o.id;"""

# Keys deleted after :since (not those of rows inserted after :since as
# well: the replica never had them).
DELETED_ROWS_SQL = """\
SELECT sqlite_ct_unpack_key(pk, 0) AS deleted_id
  FROM sqlite_ct_changes('orders', :since)
 WHERE op = 'D';"""

NEW_ANCHOR_SQL = "SELECT sqlite_ct_last_committed_csn() AS new_anchor;"

QUICK_START = f"""\
-- Load sqlite-ct: the path that
--   python3 -c "import sqlite_ct; print(sqlite_ct.loadable_path())"
-- prints, with or without its .so suffix.
.load {EXTENSION_PLACEHOLDER}
.headers on

-- Track a table; it needs a PRIMARY KEY. Tracking adds three __sys columns,
-- so name the columns in INSERT statements.
CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER NOT NULL);
SELECT sqlite_ct_create_schema('orders');

-- Write as usual. Every write transaction gets one commit sequence number
-- (CSN); the last committed one is the anchor a replica keeps.
INSERT INTO orders(id, item, qty) VALUES (1, 'apple', 3), (2, 'pear', 1);
SELECT sqlite_ct_last_committed_csn() AS anchor;

INSERT INTO orders(id, item, qty) VALUES (3, 'plum', 7);
UPDATE orders SET qty = 5 WHERE id = 1;
DELETE FROM orders WHERE id = 2;

-- What changed since that anchor? sqlite_ct_changes() lists each change:
-- op 'I', 'U' or 'D' and the key; join the table for a row's values. Read
-- the changes and the new anchor in one transaction, so that they agree.
.parameter set :since 2
BEGIN;
{CHANGED_ROWS_SQL}
{DELETED_ROWS_SQL}
{NEW_ANCHOR_SQL}
COMMIT;
"""

QUICK_START_OUTPUT = """\
sqlite_ct_create_schema('orders')
1
anchor
2
id|item|qty|change
1|apple|5|update
3|plum|7|insert
deleted_id
2
new_anchor
5
"""

ORDERS_COLUMNS = ["id", "item", "qty"]


def shell_script(sql: str, ext_path: str) -> str:
    assert ext_path.endswith(".so")
    return sql.replace(EXTENSION_PLACEHOLDER, ext_path[:-len(".so")])


def run_shell(db_path: str, sql: str, *, bail: bool = True) -> subprocess.CompletedProcess:
    args = [SQLITE3_SHELL] + (["-bail"] if bail else []) + [db_path]
    # errors="replace": reporting an error raised in the guard index's WHERE,
    # the 3.40 shell prints "error here" context from the function's offset in
    # the index's SQL, which can lie past the end of the statement it shows.
    return subprocess.run(args, input=sql, capture_output=True, text=True, timeout=60,
                          errors="replace")


def run_shell_ok(db_path: str, sql: str) -> str:
    proc = run_shell(db_path, sql)
    assert proc.returncode == 0 and proc.stderr == "", (
        f"sqlite3 shell failed ({proc.returncode}):\n{proc.stderr}\n--- script\n{sql}")
    return proc.stdout


def shell_enumerate(db_path: str, ext_path: str, since: int, writes: str) -> Dict[str, list]:
    """Run `writes` and then the README's enumeration queries since `since` in
    one shell process; returns the three result sets, parsed from JSON mode."""
    script = shell_script(f"""\
.load {EXTENSION_PLACEHOLDER}
{writes}
.mode json
.parameter set :since {since}
BEGIN;
.print @changed
{CHANGED_ROWS_SQL}
.print @deleted
{DELETED_ROWS_SQL}
.print @anchor
{NEW_ANCHOR_SQL}
COMMIT;
""", ext_path)
    output = run_shell_ok(db_path, script)
    sections: Dict[str, str] = {}
    name = None
    for line in output.splitlines():
        if line.startswith("@"):
            name = line[1:]
            sections[name] = ""
        elif name is not None:
            sections[name] += line + "\n"
    assert set(sections) == {"changed", "deleted", "anchor"}, output
    # JSON mode prints nothing at all for an empty result.
    return {key: json.loads(text) if text.strip() else [] for key, text in sections.items()}


def shell_changes(shell: Dict[str, list], since: int) -> sqlite_ct.ChangeSet:
    """The shell's three result sets as a ChangeSet, rows sorted by key."""
    rows: Dict[str, List[dict]] = {"insert": [], "update": []}
    for row in shell["changed"]:
        rows[row["change"]].append({c: row[c] for c in ORDERS_COLUMNS})
    [anchor] = shell["anchor"]
    return sqlite_ct.ChangeSet("orders", since, anchor["new_anchor"], rows["insert"],
                               rows["update"], [{"id": r["deleted_id"]} for r in
                                                sorted(shell["deleted"],
                                                       key=lambda r: r["deleted_id"])])


def sorted_changes(changes: sqlite_ct.ChangeSet) -> sqlite_ct.ChangeSet:
    def by_id(rows):
        return sorted(rows, key=lambda r: r["id"])
    return sqlite_ct.ChangeSet(changes.table, changes.since, changes.new_anchor,
                               by_id(changes.inserts), by_id(changes.updates),
                               by_id(changes.deletes))


# --- tests --------------------------------------------------------------------

def test_quick_start_runs_verbatim_and_prints_the_documented_output(db_path, ext_path):
    output = run_shell_ok(db_path, shell_script(QUICK_START, ext_path))
    assert output == QUICK_START_OUTPUT


def test_python_enumerates_exactly_what_the_quick_start_shows(db_path, ext_path, apsw_conn):
    run_shell_ok(db_path, shell_script(QUICK_START, ext_path))

    changes = sqlite_ct.enumerate_changes(apsw_conn, "orders", since=2)
    assert changes.inserts == [{"id": 3, "item": "plum", "qty": 7}]
    assert changes.updates == [{"id": 1, "item": "apple", "qty": 5}]
    assert changes.deletes == [{"id": 2}]
    assert changes.new_anchor == 5
    assert sqlite_ct.tracked_tables(apsw_conn) == ["orders"]


ROUND_1 = """\
CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER NOT NULL);
SELECT sqlite_ct_create_schema('orders');
INSERT INTO orders(id, item, qty)
  VALUES (1, 'apple', 3), (2, 'pear', 1), (3, 'plum', 7), (4, 'fig', 2);
BEGIN;
UPDATE orders SET qty = qty + 1 WHERE id IN (1, 2);
DELETE FROM orders WHERE id = 4;
INSERT INTO orders(id, item, qty) VALUES (5, 'kiwi', 9);
COMMIT;
BEGIN;
DELETE FROM orders;
ROLLBACK;
"""

ROUND_2 = """\
UPDATE orders SET qty = 10 WHERE id = 1;
DELETE FROM orders WHERE id = 2;
DELETE FROM orders WHERE id = 3;
INSERT INTO orders(id, item, qty) VALUES (3, 'plum', 70);
INSERT INTO orders(id, item, qty) VALUES (6, 'lime', 1);
DELETE FROM orders WHERE id = 6;
UPDATE orders SET id = 50 WHERE id = 5;
INSERT INTO orders(id, item, qty) VALUES (7, 'date', 4), (1, 'apple', 11)
  ON CONFLICT(id) DO UPDATE SET qty = excluded.qty;
BEGIN;
INSERT INTO orders(id, item, qty) VALUES (8, 'yuzu', 1);
ROLLBACK;
"""

ROUND_3 = """\
BEGIN;
INSERT OR REPLACE INTO orders(id, item, qty) VALUES (1, 'apricot', 12);
INSERT OR IGNORE INTO orders(id, item, qty) VALUES (3, 'ignored', 0), (9, 'sloe', 2);
DELETE FROM orders WHERE id = 50;
COMMIT;
"""


def test_shell_and_python_enumerate_the_same_changes_round_by_round(
        db_path, ext_path, apsw_conn):
    shell_replica = Replica(["id"])
    python_replica = Replica(["id"])
    expected = [
        # round 1 since 0: one CSN for the enabling transaction, one per commit;
        # the rolled-back DELETE gets none.
        dict(anchor=3, inserts=[1, 2, 3, 5], updates=[], deletes=[]),
        # round 2: delete + re-insert of 3 and the key change 5 -> 50 are a
        # delete plus an insert; 6 came and went; the upsert of 1 is an update;
        # the rolled-back insert of 8 is nothing.
        dict(anchor=11, inserts=[3, 7, 50], updates=[1], deletes=[2, 3, 5]),
        # round 3: one explicit transaction, one CSN. REPLACE of 1 is a delete
        # and an insert; OR IGNORE inserted 9 only.
        dict(anchor=12, inserts=[1, 9], updates=[], deletes=[1, 50]),
    ]
    for writes, want in zip((ROUND_1, ROUND_2, ROUND_3), expected):
        since = python_replica.anchor
        shell = shell_changes(shell_enumerate(db_path, ext_path, since, writes), since)
        changes = sqlite_ct.enumerate_changes(apsw_conn, "orders", since=since)
        assert shell == sorted_changes(changes)
        assert changes.new_anchor == want["anchor"]
        assert keys_of(changes.inserts) == want["inserts"]
        assert keys_of(changes.updates) == want["updates"]
        assert keys_of(changes.deletes) == want["deletes"]

        python_replica.apply(changes)
        shell_replica.apply(shell)
        table = table_rows(apsw_conn, "orders", ORDERS_COLUMNS, ["id"])
        assert python_replica.rows == table
        assert shell_replica.rows == table

    # Every committed write transaction, and only those, has one CSN.
    csns = [r[0] for r in apsw_conn.execute(
        "SELECT __sysTxCsn FROM __sysTxCommitSequence ORDER BY 1")]
    assert csns == list(range(1, 13))


# Writes to a tracked table; every one of them needs the extension.
UNLOADED_WRITES = [
    "INSERT INTO orders(id, item, qty) VALUES (10, 'quince', 1);",
    "UPDATE orders SET qty = 0 WHERE id = 1;",
    "UPDATE orders SET qty = 0 WHERE id = 12345;",
    "DELETE FROM orders WHERE id = 3;",
    "INSERT OR REPLACE INTO orders(id, item, qty) VALUES (1, 'apple', 0);",
    "INSERT INTO orders(id, item, qty) VALUES (1, 'apple', 0) "
    "ON CONFLICT(id) DO UPDATE SET qty = excluded.qty;",
    # One statement a line: the shell skips the rest of a line after an error.
    "BEGIN;\nINSERT INTO orders(id, item, qty) VALUES (11, 'medlar', 1);\nCOMMIT;",
]


def database_state(conn) -> dict:
    """Everything tracking depends on: the table with its __sys columns, the
    tombstones and the commit log."""
    return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()
            for table in ("orders", "__sysOCSDeletedRows", "__sysTxCommitSequence")}


@pytest.mark.parametrize("statement", UNLOADED_WRITES, ids=[
    "insert", "update", "update-no-row", "delete", "insert-or-replace", "upsert",
    "explicit-transaction"])
def test_shell_without_load_cannot_write_to_a_tracked_table(
        db_path, ext_path, apsw_conn, statement):
    run_shell_ok(db_path, shell_script(QUICK_START, ext_path) + """
CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
""")
    before = database_state(apsw_conn)

    # No -bail: like a user at the prompt, the shell carries on after the
    # error (a COMMIT after a failed INSERT commits nothing).
    proc = run_shell(db_path, statement + "\nINSERT INTO notes(body) VALUES ('untracked');\n",
                     bail=False)
    assert "sqlite_ct" in proc.stderr, proc.stderr
    assert re.search(r"(no such|unknown) function: sqlite_ct_\w+", proc.stderr), proc.stderr
    assert database_state(apsw_conn) == before
    # The shell itself works: an untracked table takes the write.
    assert apsw_conn.execute("SELECT body FROM notes").fetchall() == [("untracked",)]


def test_shell_loads_the_extension_without_an_entry_point_or_suffix(db_path, ext_path):
    # `.load` derives sqlite3_sqlitect_init from the file name; both spellings work.
    for path in (ext_path, ext_path[:-len(".so")]):
        output = run_shell_ok(db_path, f".load {path}\nSELECT sqlite_ct_version();\n")
        assert output == sqlite_ct.__version__ + "\n"


@pytest.mark.parametrize("recursive_triggers", ["OFF", "ON"])
def test_replaced_rows_deleted_in_the_same_window_reach_the_replica(
        db_path, ext_path, apsw_conn, recursive_triggers):
    # INSERT OR REPLACE of an existing key, then a DELETE or a key change of
    # that row before the replica syncs again: the replica had the row, so
    # it must get the delete. The shell leaves recursive_triggers OFF, where
    # REPLACE fires no DELETE trigger.
    run_shell_ok(db_path, shell_script(f"""\
.load {EXTENSION_PLACEHOLDER}
CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER NOT NULL);
SELECT sqlite_ct_create_schema('orders');
INSERT INTO orders(id, item, qty) VALUES (1, 'apple', 1), (2, 'pear', 2), (3, 'plum', 3);
""", ext_path))
    replica = Replica(["id"])
    replica.apply(sqlite_ct.enumerate_changes(apsw_conn, "orders", since=0))
    writes = f"""\
PRAGMA recursive_triggers = {recursive_triggers};
INSERT OR REPLACE INTO orders(id, item, qty) VALUES (1, 'apple', 10);
DELETE FROM orders WHERE id = 1;
BEGIN;
INSERT OR REPLACE INTO orders(id, item, qty) VALUES (2, 'pear', 20);
UPDATE orders SET id = 22 WHERE id = 2;
COMMIT;
INSERT OR REPLACE INTO orders(id, item, qty) VALUES (3, 'plum', 30);
"""
    since = replica.anchor
    shell = shell_changes(shell_enumerate(db_path, ext_path, since, writes), since)
    changes = sqlite_ct.enumerate_changes(apsw_conn, "orders", since=since)
    assert shell == sorted_changes(changes)
    # REPLACE is a delete and an insert, with or without recursive triggers.
    assert keys_of(changes.deletes) == [1, 2, 3]
    assert keys_of(changes.inserts) == [3, 22]
    assert changes.updates == []
    replica.apply(changes)
    assert replica.rows == table_rows(apsw_conn, "orders", ORDERS_COLUMNS, ["id"]) == {
        (3,): {"id": 3, "item": "plum", "qty": 30},
        (22,): {"id": 22, "item": "pear", "qty": 20}}
