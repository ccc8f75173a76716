"""Purging tombstones and the transaction sequence, and the minimum valid anchor."""
import pytest

import sqlite_ct


@pytest.fixture
def conn(apsw_conn):
    apsw_conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(apsw_conn, "t")
    apsw_conn.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    return apsw_conn


def test_purge_by_csn_raises_min_valid_anchor(conn):
    since = sqlite_ct.last_committed_csn(conn)
    conn.execute("DELETE FROM t WHERE id = 1")
    first_delete = sqlite_ct.last_committed_csn(conn)
    conn.execute("DELETE FROM t WHERE id = 2")
    assert sqlite_ct.purge_tombstones(conn, "t", up_to_csn=first_delete) == 1
    # A replica at `since` would miss the purged delete of id 1: refused.
    with pytest.raises(sqlite_ct.AnchorExpiredError) as err:
        sqlite_ct.enumerate_changes(conn, "t", since)
    assert str(err.value) == (
        f'sqlite-ct: anchor {since} of table "t" is older than its oldest kept change '
        f"(CSN {first_delete}): tombstones it needs were purged; reinitialise the replica")
    # From the first delete on, nothing is missing.
    assert sqlite_ct.enumerate_changes(conn, "t", first_delete).deletes == [{"id": 2}]


def test_purge_by_age(conn):
    conn.execute("DELETE FROM t WHERE id = 1")
    assert sqlite_ct.purge_tombstones(conn, "t", older_than_days=1) == 0
    conn.execute("UPDATE __sysOCSDeletedRows SET __sysDeletedTime = __sysDeletedTime - 2 * 86400000")
    assert sqlite_ct.purge_tombstones(conn, "t", older_than_days=1) == 1
    assert conn.execute("SELECT count(*) FROM __sysOCSDeletedRows").get == 0


def test_purge_needs_a_criterion(conn):
    with pytest.raises(ValueError, match="older_than_days= or up_to_csn="):
        sqlite_ct.purge_tombstones(conn, "t")
    with pytest.raises(ValueError, match="exactly one of"):
        sqlite_ct.purge_transaction_sequence(conn, older_than_days=1, up_to_csn=3)
    with pytest.raises(sqlite_ct.NotTrackedError):
        sqlite_ct.purge_tombstones(conn, "nope", up_to_csn=3)


def test_purge_by_age_and_csn_purges_what_is_both(conn):
    """What a sync client purges: old tombstones it has already uploaded."""
    conn.execute("DELETE FROM t WHERE id = 1")
    uploaded = sqlite_ct.last_committed_csn(conn)
    conn.execute("DELETE FROM t WHERE id = 2")
    conn.execute("UPDATE __sysOCSDeletedRows SET __sysDeletedTime = __sysDeletedTime - 2 * 86400000")
    conn.execute("DELETE FROM t WHERE id = 3")          # uploaded? no; old? no
    assert sqlite_ct.purge_tombstones(conn, "t", older_than_days=1, up_to_csn=uploaded) == 1
    assert [r[0] for r in conn.execute(
        "SELECT sqlite_ct_unpack_key(__sysRK, 0) FROM __sysOCSDeletedRows ORDER BY 1")] == [2, 3]


def test_transaction_sequence_after_tombstones_only(conn):
    conn.execute("DELETE FROM t WHERE id = 1")
    deleted_at = sqlite_ct.last_committed_csn(conn)
    conn.execute("UPDATE t SET v = 'z' WHERE id = 2")
    with pytest.raises(sqlite_ct.Error) as err:
        sqlite_ct.purge_transaction_sequence(conn, up_to_csn=deleted_at)
    assert str(err.value) == ("sqlite-ct: 1 tombstone(s) belong to the transactions being "
                              "purged; purge tombstones first (purge_tombstones), then the "
                              "transaction sequence")
    sqlite_ct.purge_tombstones(conn, "t", up_to_csn=deleted_at)
    assert sqlite_ct.purge_transaction_sequence(conn, up_to_csn=deleted_at) == deleted_at


def test_newest_commit_is_never_purged_so_bsns_are_not_reused(conn):
    last = sqlite_ct.last_committed_csn(conn)
    sqlite_ct.purge_transaction_sequence(conn, up_to_csn=last + 100)
    assert sqlite_ct.last_committed_csn(conn) == last
    conn.execute("UPDATE t SET v = 'n' WHERE id = 3")
    assert sqlite_ct.last_committed_csn(conn) == last + 1
    assert conn.execute('SELECT "__sysChangeTxBsn" FROM t WHERE id = 3').get == last + 1
