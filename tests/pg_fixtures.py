"""The PostgreSQL server the PostgreSQL hub tests use (tests/pg, tests/conformance).

SQLITE_CT_TEST_PG_DSN names a server to use (the run creates one database
on it, emptied before each test); otherwise one throwaway cluster (tests/pg_cluster.py) is started for
the test session. Without a PostgreSQL server the tests skip, saying what to
install; with SQLITE_CT_REQUIRE_PG=1 (set by CI) that skip is a failure.
"""
from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import pg_cluster  # noqa: E402

if os.environ.get("SQLITE_CT_REQUIRE_PG") == "1":
    import psycopg  # noqa: F401,E402  (required: fail loudly at collection)
    import psycopg_pool  # noqa: F401,E402

def _unavailable(reason: str) -> None:
    if os.environ.get("SQLITE_CT_REQUIRE_PG") == "1":
        pytest.fail(f"SQLITE_CT_REQUIRE_PG=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The DSN of a PostgreSQL server (its maintenance database)."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        _unavailable("psycopg and psycopg-pool are not installed "
                     "(pip install 'sqlite-ct[postgres]')")
    dsn = os.environ.get("SQLITE_CT_TEST_PG_DSN")
    if dsn:
        yield dsn
        return
    if pg_cluster.find_bin_dir() is None:
        _unavailable(f"no PostgreSQL server for the PostgreSQL hub tests: "
                     f"{pg_cluster.INSTALL_HINT}")
    try:
        with pg_cluster.cluster() as dsn:
            yield dsn
    except pg_cluster.ClusterError as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="session")
def pg_test_database(pg_server: str) -> Iterator[str]:
    """A database of this test session on the server; dropped at its end."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    name = f"sqlite_ct_test_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_server)
    params["dbname"] = name
    yield make_conninfo(**params)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_dsn(pg_test_database: str) -> str:
    """The session's database, emptied: no other connection, no tables, no
    sqlite_ct schema (cheaper than a database per test)."""
    import psycopg
    with psycopg.connect(pg_test_database, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        conn.execute("DROP SCHEMA IF EXISTS sqlite_ct CASCADE")
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return pg_test_database

def sqlite_client():
    """An in-memory SQLite client database with sqlite-ct loaded."""
    import apsw
    import sqlite_ct
    conn = apsw.Connection(":memory:")
    sqlite_ct.load(conn)
    return conn


@pytest.fixture
def pg_exec(pg_dsn):
    """pg_exec(sql, params=()) -> rows: one autocommit statement on the hub
    (what psql or another application does)."""
    import psycopg
    conn = psycopg.connect(pg_dsn, autocommit=True)

    def run(sql, params=None):
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []
    yield run
    conn.close()


@pytest.fixture
def pg_provider(pg_dsn):
    """pg_provider(**kwargs) -> PostgresServerProvider on the test database."""
    from sqlite_ct.sync.pg import PostgresServerProvider
    made = []

    def make(**kwargs):
        p = PostgresServerProvider(pg_dsn, max_connections=2, **kwargs)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()



def _q(name):
    return '"' + name.replace('"', '""') + '"'


def user_rows(conn, table):
    """A client table's user columns (no __sys*), ordered by its first columns."""
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({_q(table)})")
            if not r[1].startswith("__sys")]
    names = ", ".join(_q(c) for c in cols)
    return [tuple(r) for r in conn.execute(
        f"SELECT {names} FROM {_q(table)} ORDER BY "
        f"{', '.join(str(i + 1) for i in range(min(2, len(cols))))}").fetchall()]
