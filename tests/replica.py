"""A minimal sync replica for tests: applies sqlite_ct ChangeSets to a dict.

    replica = Replica(["id"])                 # key columns, in PRIMARY KEY order
    replica.apply(sqlite_ct.enumerate_changes(conn, "t", since))
    assert replica.rows == table_rows(conn, "t", ["id"])

A replica applies deletes, then inserts, then updates; inserts and updates are
upserts (the whole row replaces what the replica holds for that key), deletes
of keys the replica does not hold are no-ops. Rows are dicts of the user
columns (no __sys* columns), keyed by the tuple of their key values.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

Key = Tuple[Any, ...]
Row = Dict[str, Any]

__all__ = ["Replica", "table_rows"]


class Replica:
    """{key tuple: row dict}, updated by apply(changeset)."""

    def __init__(self, key_columns: Sequence[str],
                 rows: Optional[Dict[Key, Row]] = None) -> None:
        self.key_columns = list(key_columns)
        self.rows: Dict[Key, Row] = {k: dict(v) for k, v in (rows or {}).items()}

    def key_of(self, row: Row) -> Key:
        return tuple(row[c] for c in self.key_columns)

    def apply(self, changeset: Any) -> None:
        """Apply a ChangeSet (anything with .deletes, .inserts, .updates)."""
        for row in changeset.deletes:
            self.rows.pop(self.key_of(row), None)
        for row in _chain(changeset.inserts, changeset.updates):
            self.rows[self.key_of(row)] = dict(row)


def _chain(*parts: Iterable[Row]) -> Iterable[Row]:
    for part in parts:
        yield from part


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_rows(conn: Any, table: str, key_columns: Sequence[str]) -> Dict[Key, Row]:
    """The real table's rows as {key tuple: row dict}, without __sys* columns.
    Works with apsw and stdlib sqlite3 connections."""
    columns = [r[0] for r in conn.execute(
        "SELECT name FROM pragma_table_xinfo(?) ORDER BY cid", (table,))
        if not r[0].lower().startswith("__sys")]
    sql = "SELECT {} FROM {}".format(", ".join(_quote(c) for c in columns), _quote(table))
    result: Dict[Key, Row] = {}
    for values in conn.execute(sql):
        row = dict(zip(columns, values))
        result[tuple(row[c] for c in key_columns)] = row
    return result
