"""Sync anchors (__sysSyncArticles) and the client id (__sysSyncSubscriptions)."""
import struct
import uuid

import apsw
import pytest

import sqlite_ct
from sqlite_ct.errors import AnchorError, NotTrackedError
from sqlhelpers import q


@pytest.fixture
def tracked(conn):
    """conn with two tracked tables, t and u, and an untracked one, plain."""
    for sql in ("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
                "CREATE TABLE u(id INTEGER PRIMARY KEY, v TEXT)",
                "CREATE TABLE plain(id INTEGER PRIMARY KEY, v TEXT)"):
        q(conn, sql)
    sqlite_ct.create_schema(conn, "t")
    sqlite_ct.create_schema(conn, "u")
    return conn


def articles(conn):
    return q(conn, "SELECT TableName, SentAnchor, ReceivedAnchor, ClientId "
                   "FROM __sysSyncArticles ORDER BY TableName")


# ------------------------------------------------------------------ client id

def test_client_id_is_created_once_and_stable(conn, db_path):
    first = sqlite_ct.client_id(conn)
    assert isinstance(first, uuid.UUID) and first.version == 4
    assert sqlite_ct.client_id(conn) == first
    assert q(conn, "SELECT ClientId, ServerId, MachineId FROM __sysSyncSubscriptions") == [
        (first.bytes_le, None, None)]
    other = apsw.Connection(db_path)
    try:
        sqlite_ct.load(other)
        assert sqlite_ct.client_id(other) == first
    finally:
        other.close()
    assert len(q(conn, "SELECT * FROM __sysSyncSubscriptions")) == 1


def test_client_id_differs_between_databases(apsw_conn, tmp_path):
    other = apsw.Connection(str(tmp_path / "other.db"))
    try:
        sqlite_ct.load(other)
        assert sqlite_ct.client_id(other) != sqlite_ct.client_id(apsw_conn)
    finally:
        other.close()


def test_client_id_reads_a_stored_guid_in_dotnet_byte_order(conn):
    known = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
    q(conn, "SELECT sqlite_ct_create_system_tables()")
    q(conn, "INSERT INTO __sysSyncSubscriptions(ClientId) VALUES (?)", (known.bytes_le,))
    assert sqlite_ct.client_id(conn) == known


def test_client_id_inside_a_transaction(conn):
    q(conn, "BEGIN")
    first = sqlite_ct.client_id(conn)
    q(conn, "COMMIT")
    assert sqlite_ct.client_id(conn) == first


# --------------------------------------------------------------- sent anchor

@pytest.mark.parametrize("anchor", [0, 1, 5, 2**32, 2**63 - 1])
def test_sent_anchor_is_stored_as_8_byte_little_endian(tracked, anchor):
    assert sqlite_ct.get_sent_anchor(tracked, "t") is None
    sqlite_ct.set_sent_anchor(tracked, "t", anchor)
    assert sqlite_ct.get_sent_anchor(tracked, "t") == anchor
    cid = sqlite_ct.client_id(tracked).bytes_le
    assert articles(tracked) == [("t", struct.pack("<q", anchor), None, cid)]


def test_sent_anchor_layout_byte_for_byte(tracked):
    sqlite_ct.set_sent_anchor(tracked, "t", 0x0102030405)
    assert articles(tracked)[0][1] == bytes.fromhex("0504030201000000")


def test_sent_anchor_overwrite_and_clear(tracked):
    sqlite_ct.set_sent_anchor(tracked, "t", 3)
    sqlite_ct.set_sent_anchor(tracked, "t", 9)
    assert sqlite_ct.get_sent_anchor(tracked, "t") == 9
    assert len(articles(tracked)) == 1
    sqlite_ct.set_sent_anchor(tracked, "t", None)
    assert sqlite_ct.get_sent_anchor(tracked, "t") is None
    assert articles(tracked)[0][1] is None


def test_sent_anchor_of_a_corrupt_article(tracked):
    sqlite_ct.set_sent_anchor(tracked, "t", 3)
    q(tracked, "UPDATE __sysSyncArticles SET SentAnchor = x'01020304'")
    with pytest.raises(AnchorError) as exc:
        sqlite_ct.get_sent_anchor(tracked, "t")
    assert str(exc.value) == ('sqlite-ct: the sent anchor of table "t" is 4 bytes, not 8; '
                              "reset it with set_sent_anchor()")


@pytest.mark.parametrize("bad", [-1, True, 1.5, "5", b"\x05" + b"\x00" * 7], ids=repr)
def test_sent_anchor_bad_values(tracked, bad):
    with pytest.raises(AnchorError) as exc:
        sqlite_ct.set_sent_anchor(tracked, "t", bad)
    assert str(exc.value) == (f"sqlite-ct: a sent anchor is a non-negative integer CSN, "
                              f"got {bad!r}")
    assert sqlite_ct.get_sent_anchor(tracked, "t") is None


# ----------------------------------------------------------- received anchor

@pytest.mark.parametrize("anchor", [b"", b"\x00", b"opaque server anchor \xff\x00",
                                    bytes(range(256)) * 40, bytearray(b"ba"), memoryview(b"mv")],
                         ids=lambda a: f"{type(a).__name__}-{len(a)}")
def test_received_anchor_is_kept_verbatim(tracked, anchor):
    assert sqlite_ct.get_received_anchor(tracked, "t") is None
    sqlite_ct.set_received_anchor(tracked, "t", anchor)
    got = sqlite_ct.get_received_anchor(tracked, "t")
    assert type(got) is bytes and got == bytes(anchor)
    assert articles(tracked)[0][2] == bytes(anchor)


@pytest.mark.parametrize("bad, type_name", [("text", "str"), (5, "int"), ([1], "list")])
def test_received_anchor_bad_values(tracked, bad, type_name):
    with pytest.raises(AnchorError) as exc:
        sqlite_ct.set_received_anchor(tracked, "t", bad)
    assert str(exc.value) == f"sqlite-ct: a received anchor is bytes, got {type_name}"


def test_anchors_are_independent_per_kind_and_table(tracked):
    sqlite_ct.set_sent_anchor(tracked, "t", 4)
    sqlite_ct.set_received_anchor(tracked, "t", b"server-t")
    sqlite_ct.set_received_anchor(tracked, "u", b"server-u")
    sqlite_ct.set_sent_anchor(tracked, "t", 6)
    assert sqlite_ct.get_received_anchor(tracked, "t") == b"server-t"
    assert sqlite_ct.get_sent_anchor(tracked, "t") == 6
    assert sqlite_ct.get_sent_anchor(tracked, "u") is None
    assert sqlite_ct.get_received_anchor(tracked, "u") == b"server-u"
    sqlite_ct.set_received_anchor(tracked, "t", None)
    assert sqlite_ct.get_sent_anchor(tracked, "t") == 6
    assert sqlite_ct.get_received_anchor(tracked, "t") is None


def test_anchors_use_the_tables_stored_name(tracked):
    sqlite_ct.set_sent_anchor(tracked, "T", 4)
    assert [a[0] for a in articles(tracked)] == ["t"]
    assert sqlite_ct.get_sent_anchor(tracked, "t") == 4


def test_anchors_are_rolled_back_with_the_callers_transaction(tracked):
    sqlite_ct.set_sent_anchor(tracked, "t", 4)
    q(tracked, "BEGIN")
    sqlite_ct.set_sent_anchor(tracked, "t", 8)
    assert sqlite_ct.get_sent_anchor(tracked, "t") == 8
    q(tracked, "ROLLBACK")
    assert sqlite_ct.get_sent_anchor(tracked, "t") == 4


# ------------------------------------------------------------------- errors

@pytest.mark.parametrize("call", [
    lambda c, t: sqlite_ct.get_sent_anchor(c, t),
    lambda c, t: sqlite_ct.set_sent_anchor(c, t, 1),
    lambda c, t: sqlite_ct.get_received_anchor(c, t),
    lambda c, t: sqlite_ct.set_received_anchor(c, t, b"x"),
], ids=["get-sent", "set-sent", "get-received", "set-received"])
@pytest.mark.parametrize("table", ["plain", "missing"])
def test_anchors_of_an_untracked_table(tracked, call, table):
    with pytest.raises(NotTrackedError) as exc:
        call(tracked, table)
    assert str(exc.value) == (f'sqlite-ct: table "{table}" is not tracked; '
                              f'call create_schema(conn, "{table}") first')
    assert articles(tracked) == []


def test_anchors_on_a_database_without_system_tables(conn):
    q(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    with pytest.raises(NotTrackedError) as exc:
        sqlite_ct.get_sent_anchor(conn, "t")
    assert str(exc.value) == ('sqlite-ct: table "t" is not tracked; '
                              'call create_schema(conn, "t") first')
