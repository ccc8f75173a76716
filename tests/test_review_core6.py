"""An adversarial review of the tracking core for silent data loss: copies of
the database swapped under an open connection (sqlite3_deserialize()),
shared-cache readers, real processes killed with SIGKILL in the middle of
writes, commits, create_schema() and layout upgrades, and statements SQLite
runs in unusual ways (RETURNING, UPDATE ... FROM, UPSERTs that move keys,
REPLACE through several UNIQUE indexes at once, generated and STRICT columns,
foreign-key actions, statements failing half-way).

Every case ends with a replica (tests/replica.py: deletes first, then
inserts and updates as upserts, keeping each enumeration's new_anchor) that
must hold what the table holds, and with check() clean."""
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import q, run, val

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Synced:
    """One table of one connection and a replica of it kept by enumeration."""

    def __init__(self, conn, table, keys, since=0):
        self.conn, self.table, self.keys = conn, table, list(keys)
        self.replica = Replica(self.keys)
        self.anchor = since

    def sync(self):
        cs = sqlite_ct.enumerate_changes(self.conn, self.table, self.anchor)
        self.replica.apply(cs)
        self.anchor = cs.new_anchor
        return cs

    def converged(self):
        return self.replica.rows == table_rows(self.conn, self.table, self.keys)


def logged(conn):
    return q(conn, "SELECT __sysTxCsn, __sysCommitTime FROM __sysTxCommitSequence ORDER BY 1")


# ------------------------------------------------------ sqlite3_deserialize()

def _edited_image():
    """A database image saved after one tracked write on a connection that
    loaded an earlier image: the "load, edit, save" cycle of an application
    that keeps its database in memory."""
    src = apsw.Connection(":memory:")
    sqlite_ct.load(src)
    run(src, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v)")
    sqlite_ct.create_schema(src, "t")
    run(src, "INSERT INTO t(id, u, v) VALUES (1, 'a', 1)")
    image1 = src.serialize("main")
    src.close()
    conn = apsw.Connection(":memory:")
    sqlite_ct.load(conn)
    conn.deserialize("main", image1)
    s = Synced(conn, "t", ["id"])
    s.sync()
    run(conn, "INSERT INTO t(id, u, v) VALUES (2, 'b', 2)")
    image2 = conn.serialize("main")
    s.sync()
    assert s.converged()
    return conn, s, image2


@pytest.mark.xfail(strict=True, reason=(
    "the cached BSN is trusted while the pager's data version is unchanged and"
    " the newest log row is that BSN; a database image deserialized into the"
    " connection has a new pager whose data version starts again, so the next"
    " transaction reuses a BSN the image already committed"))
def test_a_reloaded_image_never_reuses_a_committed_bsn():
    conn, s, image2 = _edited_image()
    before = logged(conn)
    conn.deserialize("main", image2)          # reload what was saved
    assert logged(conn) == before
    run(conn, "INSERT INTO t(id, u, v) VALUES (3, 'c', 3)")
    stamps = val(conn, "SELECT __sysChangeTxBsn FROM t WHERE id = 3")
    assert stamps > s.anchor, (
        f"row 3 was stamped {stamps}, a CSN committed before the replica's anchor"
        f" {s.anchor}: no enumeration from that anchor will ever return it")
    s.sync()
    assert s.converged()


@pytest.mark.xfail(strict=True, reason=(
    "after sqlite3_deserialize() the capture takes a committed row whose insert"
    " BSN equals the connection's last BSN for a row this transaction inserted,"
    " and an OR REPLACE that deletes it leaves no tombstone"))
def test_a_reloaded_image_tombstones_a_row_or_replace_deletes():
    conn, s, image2 = _edited_image()
    conn.deserialize("main", image2)
    # Row 2 (inserted by the transaction before the save) is deleted through
    # the UNIQUE index by the first statement after the reload.
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (4, 'b', 4)")
    assert q(conn, "SELECT id FROM t ORDER BY id") == [(1,), (4,)]
    s.sync()
    assert s.converged()


# ------------------------------------------------ shared cache, dirty reads

DIRTY = ("sqlite-ct: cannot read changes on a connection with PRAGMA read_uncommitted"
         " on: in shared-cache mode it reads other connections' uncommitted writes;"
         " run PRAGMA read_uncommitted=OFF on it")


def _shared_cache_pair(tmp_path):
    """Two stdlib connections sharing one cache (apsw's SQLite is built
    without shared cache), the reader with PRAGMA read_uncommitted on."""
    sqlite_ct.register_auto_extension()
    uri = f"file:{tmp_path / 'shared.db'}?cache=shared"
    writer = sqlite3.connect(uri, uri=True, isolation_level=None)
    reader = sqlite3.connect(uri, uri=True, isolation_level=None)
    for conn in (writer, reader):
        sqlite_ct.load(conn)
    run(writer, "CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    sqlite_ct.create_schema(writer, "t")
    run(reader, "PRAGMA read_uncommitted=ON")
    return writer, reader


def test_a_dirty_reader_is_refused_instead_of_taking_an_uncommitted_anchor(tmp_path):
    """With read_uncommitted, a shared-cache reader sees a writer's open
    transaction: its rows and its log row. An enumeration there returned the
    uncommitted row and took the uncommitted CSN as its anchor; the writer
    then rolled back and the next transaction committed under the same CSN,
    which the replica's anchor already covered: the replica kept a row that
    never existed and never got the committed one."""
    writer, reader = _shared_cache_pair(tmp_path)
    s = Synced(reader, "t", ["id"])
    run(writer, "BEGIN", "INSERT INTO t(id, v) VALUES (1, 'rolled back')")
    assert q(reader, "SELECT id FROM t") == [(1,)]    # the dirty read itself
    for read in (lambda: s.sync(),
                 lambda: sqlite_ct.last_committed_csn(reader),
                 lambda: sqlite_ct.enumerate_group_changes(reader, ["t"], {"t": 0})):
        with pytest.raises(sqlite_ct.Error) as info:
            read()
        assert str(info.value) == DIRTY
    for sql in ("SELECT sqlite_ct_snapshot()", "SELECT count(*) FROM sqlite_ct_changes('t', 0)",
                "SELECT sqlite_ct_last_committed_csn()"):
        with pytest.raises(sqlite3.OperationalError) as info:
            q(reader, sql)
        assert str(info.value) == DIRTY
    run(writer, "ROLLBACK", "INSERT INTO t(id, v) VALUES (2, 'committed')")
    run(reader, "PRAGMA read_uncommitted=OFF")
    s.sync()
    assert s.converged() and list(s.replica.rows) == [(2,)]
