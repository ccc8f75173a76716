"""The PostgreSQL hub: where the capture cost of a bulk statement goes.

    python3 benchmarks/profile_pg_capture.py [--rows 100000]

On a throwaway cluster (tests/pg_cluster.py, fsync off), each statement runs
in a transaction that is rolled back, median of 3, in two rounds:

  - a bulk INSERT into an untracked table, a tracked one, and one with only a
    statement trigger that has a transition table and does nothing;
  - the side-table write alone (the same keys with pg_current_xact_id()
    stamps) into a table shaped like the side table: its primary key and
    (change_xid, key) index with INSERT ... ON CONFLICT (what the trigger
    does), the same with a plain INSERT, the primary key only, no index;
  - an UPDATE of half and a DELETE of a tenth of the rows, untracked and
    tracked.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import psycopg  # noqa: E402

import pg_cluster  # noqa: E402
from sqlite_ct.sync.pg import PostgresServerProvider  # noqa: E402

TABLE = "(id integer PRIMARY KEY, owner text, qty integer, note text)"
SIDE = ("(id integer NOT NULL, change_xid xid8 NOT NULL, insert_xid xid8 NOT NULL, "
        "context uuid, deleted boolean NOT NULL DEFAULT false, deleted_at timestamptz{})")


class _Rollback(Exception):
    pass


def timed(conn: psycopg.Connection, sql: str, pre: tuple = (), reps: int = 3) -> float:
    out = []
    for _ in range(reps):
        try:
            with conn.transaction():
                for statement in pre:
                    conn.execute(statement)
                t = time.perf_counter()
                conn.execute(sql)
                out.append((time.perf_counter() - t) * 1000)
                raise _Rollback
        except _Rollback:
            pass
    return round(statistics.median(out), 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    n = ap.parse_args(argv).rows
    with pg_cluster.cluster() as dsn:
        conn = psycopg.connect(dsn, autocommit=True)
        for name in ("plain", "tracked", "transition_only"):
            conn.execute(f"CREATE TABLE {name} {TABLE}")
        with PostgresServerProvider(dsn, max_connections=1) as server:
            server.provision("tracked")
        conn.execute("CREATE FUNCTION nothing() RETURNS trigger LANGUAGE plpgsql "
                     "AS $$BEGIN RETURN NULL; END$$")
        conn.execute("CREATE TRIGGER t AFTER INSERT ON transition_only REFERENCING NEW TABLE "
                     "AS n FOR EACH STATEMENT EXECUTE FUNCTION nothing()")
        conn.execute(f"CREATE TABLE side_full {SIDE.format(', PRIMARY KEY (id)')}")
        conn.execute("CREATE INDEX ON side_full (change_xid, id)")
        conn.execute(f"CREATE TABLE side_pk {SIDE.format(', PRIMARY KEY (id)')}")
        conn.execute(f"CREATE TABLE side_heap {SIDE.format('')}")
        insert = ("INSERT INTO {} SELECT g, 'o' || (g % 10), g, 'note' "
                  f"FROM generate_series(1, {n}) g")
        stamps = ("INSERT INTO {} SELECT g, pg_current_xact_id(), pg_current_xact_id(), NULL, "
                  f"false, NULL FROM generate_series(1, {n}) g")
        for _ in range(2):
            r = {
                f"insert {n} rows, untracked": timed(conn, insert.format("plain")),
                f"insert {n} rows, tracked": timed(conn, insert.format("tracked")),
                f"insert {n} rows, transition table only": timed(
                    conn, insert.format("transition_only")),
                "side write alone: primary key + (change_xid, key), ON CONFLICT": timed(
                    conn, stamps.format("side_full") + " ON CONFLICT (id) DO UPDATE SET "
                    "change_xid = excluded.change_xid"),
                "side write alone: primary key + (change_xid, key), plain INSERT": timed(
                    conn, stamps.format("side_full")),
                "side write alone: primary key only": timed(conn, stamps.format("side_pk")),
                "side write alone: no index": timed(conn, stamps.format("side_heap")),
                f"update {n // 2} rows, untracked": timed(
                    conn, "UPDATE plain SET qty = qty + 1 WHERE id % 2 = 0",
                    (insert.format("plain"),)),
                f"update {n // 2} rows, tracked": timed(
                    conn, "UPDATE tracked SET qty = qty + 1 WHERE id % 2 = 0",
                    (insert.format("tracked"),)),
                f"delete {n // 10} rows, untracked": timed(
                    conn, "DELETE FROM plain WHERE id % 10 = 0", (insert.format("plain"),)),
                f"delete {n // 10} rows, tracked": timed(
                    conn, "DELETE FROM tracked WHERE id % 10 = 0", (insert.format("tracked"),)),
            }
            print("| statement | ms |\n|---|---:|")
            for k, v in r.items():
                print(f"| {k} | {v} |")
            print(flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
