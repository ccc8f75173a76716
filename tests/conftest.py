"""Fixtures every test module can use: the extension's path, a database file,
and connections to it with sqlite-ct loaded, one per Python host."""
import sqlite3

import apsw
import pytest
from hypothesis import HealthCheck, settings

from sqlite_ct import loader

# Every hypothesis test of the suite: no per-example deadline and no
# "input generation is slow" health check. Both time the machine, not the code
# (the suite runs on two cores beside other work, and a draw that waited for
# the CPU failed a test that had found nothing); examples, shrinking and the
# other health checks are hypothesis's defaults or each test's own settings.
settings.register_profile("ct-suite", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ct-suite")


@pytest.fixture
def ext_path() -> str:
    """loadable_path(): the compiled extension, e.g. for the sqlite3 shell's .load."""
    return loader.loadable_path()


@pytest.fixture
def db_path(tmp_path) -> str:
    """A database file that does not exist yet, in a fresh temporary directory."""
    return str(tmp_path / "test.db")


@pytest.fixture
def apsw_conn(db_path):
    """An apsw connection to db_path with sqlite-ct loaded (apsw's own SQLite).
    Commits skip fsync: the tests are about tracking, not durability, and
    fsync dominated their run time."""
    conn = apsw.Connection(db_path)
    try:
        loader.load(conn)
        conn.execute("PRAGMA synchronous=OFF")
        yield conn
    finally:
        conn.close()


@pytest.fixture
def sqlite3_conn(db_path):
    """A stdlib sqlite3 connection to db_path in autocommit mode
    (isolation_level=None), with sqlite-ct loaded by register_auto_extension()."""
    loader.register_auto_extension()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        loader.load(conn)  # already loaded: checks the version only
        conn.execute("PRAGMA synchronous=OFF")
        yield conn
    finally:
        conn.close()


@pytest.fixture(params=["apsw", "sqlite3"])
def conn(request):
    """The same test on an apsw and on a stdlib sqlite3 connection."""
    return request.getfixturevalue(f"{request.param}_conn")
