"""The packed tombstone key (__sysRK): round trips, the byte layout of
csrc/keycodec.c's FORMAT, and malformed keys (errors, never a crash)."""
import math
import sqlite3
import struct

import apsw
import pytest

import sqlite_ct
from sqlite_ct.errors import KeyFormatError, NotTrackedError
from sqlhelpers import HOST_ERRORS, q, val

@pytest.fixture
def keyed(conn):
    """conn with tracked tables: one(k) with an untyped single-column key and
    two(a, b) with a composite key."""
    for sql in ("CREATE TABLE one(k PRIMARY KEY, v)",
                "CREATE TABLE two(a, b, v, PRIMARY KEY(a, b))"):
        q(conn, sql)
    sqlite_ct.create_schema(conn, "one")
    sqlite_ct.create_schema(conn, "two")
    return conn


def u32(n):
    return struct.pack("<I", n)


def field(tag, payload=b""):
    return u32(1 + len(payload)) + bytes([tag]) + payload


def key(*fields):
    return u32(len(fields)) + b"".join(fields)


INT7 = bytes.fromhex("01000000" "09000000" "01" "0700000000000000")


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


# ------------------------------------------------------------- layouts

def test_layout_of_the_integer_key_7(keyed):
    # csrc/keycodec.c, FORMAT: "the integer key 7 packs to
    #   01 00 00 00  09 00 00 00  01  07 00 00 00 00 00 00 00"
    assert sqlite_ct.pack_key(keyed, "one", [7]) == INT7
    assert val(keyed, "SELECT sqlite_ct_pack_key(7)") == INT7
    assert sqlite_ct.unpack_key(keyed, "one", INT7) == (7,)


@pytest.mark.parametrize("value, packed", [
    (-1, key(field(1, b"\xff" * 8))),
    (2**63 - 1, key(field(1, b"\xff" * 7 + b"\x7f"))),
    (-2**63, key(field(1, b"\x00" * 7 + b"\x80"))),
    (1.5, key(field(2, struct.pack("<d", 1.5)))),
    (-0.0, key(field(2, b"\x00" * 7 + b"\x80"))),
    (math.inf, key(field(2, struct.pack("<d", math.inf)))),
    ("ab", key(field(3, b"ab"))),
    ("", key(field(3))),
    ("é\x00", key(field(3, "é\x00".encode()))),
    (b"\x00\xff", key(field(4, b"\x00\xff"))),
    (b"", key(field(4))),
    (None, key(field(5))),
], ids=repr)
def test_layout_by_type(keyed, value, packed):
    assert sqlite_ct.pack_key(keyed, "one", [value]) == packed
    assert val(keyed, "SELECT sqlite_ct_pack_key(?)", (value,)) == packed
    (back,) = sqlite_ct.unpack_key(keyed, "one", packed)
    assert same(back, value)


def test_layout_of_a_composite_key(keyed):
    packed = bytes.fromhex("02000000" "09000000" "01" "0700000000000000"
                           "03000000" "03" "6162")
    assert sqlite_ct.pack_key(keyed, "two", [7, "ab"]) == packed
    assert sqlite_ct.unpack_key(keyed, "two", packed) == (7, "ab")
    assert val(keyed, "SELECT sqlite_ct_key_count(?)", (packed,)) == 2
    assert val(keyed, "SELECT sqlite_ct_unpack_key(?, 1)", (packed,)) == "ab"


def test_nan_packs_as_null(keyed):
    # SQLite binds NaN as NULL
    assert sqlite_ct.pack_key(keyed, "one", [math.nan]) == key(field(5))


@pytest.mark.parametrize("values", [
    (0, ""), (-2**63, b""), (2**63 - 1, "ünï😀"), (0.1, b"\x00" * 1000), (None, None),
    ("a\x00b", -0.0), (b"x" * 70000, math.inf), (-math.inf, 3),
], ids=repr)
def test_round_trips(keyed, values):
    packed = sqlite_ct.pack_key(keyed, "two", values)
    assert isinstance(packed, bytes)
    back = sqlite_ct.unpack_key(keyed, "two", packed)
    assert len(back) == 2 and all(same(x, y) for x, y in zip(back, values)), back
    assert sqlite_ct.unpack_key(keyed, "two", bytearray(packed)) == back
    assert sqlite_ct.unpack_key(keyed, "two", memoryview(packed)) == back


def test_the_triggers_pack_the_same_bytes(keyed):
    q(keyed, "INSERT INTO two(a, b, v) VALUES (7, 'ab', 1)")
    q(keyed, "DELETE FROM two")
    assert q(keyed, "SELECT __sysRK FROM __sysOCSDeletedRows") == [
        (sqlite_ct.pack_key(keyed, "two", [7, "ab"]),)]


# ------------------------------------------------------------ malformed keys

def malformed(why):
    return f"sqlite-ct: malformed tombstone key: it {why}"


MALFORMED = [
    pytest.param(b"", malformed("is shorter than its 4-byte header"), id="empty"),
    pytest.param(b"\x01\x00", malformed("is shorter than its 4-byte header"),
                 id="truncated-header"),
    pytest.param(u32(0), malformed("holds no values"), id="zero-count"),
    pytest.param(u32(1), malformed("ends inside a length prefix"), id="no-length"),
    pytest.param(u32(1) + b"\x09\x00", malformed("ends inside a length prefix"),
                 id="truncated-length"),
    pytest.param(u32(0xFFFFFFFF) + field(1, b"\x00" * 8), malformed("ends inside a length prefix"),
                 id="huge-count"),
    pytest.param(u32(1) + u32(0), malformed("has an empty field"), id="empty-field"),
    pytest.param(u32(1) + u32(10) + b"\x01" + b"\x00" * 8,
                 malformed("has a field running past its end"), id="length-past-end"),
    pytest.param(u32(1) + u32(0xFFFFFFFF) + b"\x03abc",
                 malformed("has a field running past its end"), id="huge-length"),
    pytest.param(INT7[:-1], malformed("has a field running past its end"), id="truncated-payload"),
    pytest.param(key(field(9, b"x")), malformed("has an unknown type tag"), id="unknown-tag"),
    pytest.param(key(field(0)), malformed("has an unknown type tag"), id="tag-zero"),
    pytest.param(key(field(1, b"\x07\x00\x00\x00")), malformed("has a numeric field of the wrong size"),
                 id="short-integer"),
    pytest.param(key(field(2, b"\x00" * 9)), malformed("has a numeric field of the wrong size"),
                 id="long-real"),
    pytest.param(key(field(5, b"\x00")), malformed("has a NULL field with a payload"),
                 id="null-with-payload"),
    pytest.param(INT7 + b"\x00", malformed("has trailing bytes"), id="trailing-bytes"),
    pytest.param(u32(1) + field(1, b"\x07" + b"\x00" * 7) + field(3, b"x"),
                 malformed("has trailing bytes"), id="more-fields-than-count"),
]


@pytest.mark.parametrize("packed, message", MALFORMED)
def test_malformed_key_python(keyed, packed, message):
    with pytest.raises(KeyFormatError) as exc:
        sqlite_ct.unpack_key(keyed, "one", packed)
    assert str(exc.value) == message
    assert val(keyed, "SELECT 1") == 1  # the connection is fine


@pytest.mark.parametrize("packed, message", MALFORMED)
@pytest.mark.parametrize("sql", ["SELECT sqlite_ct_unpack_key(?, 0)",
                                 "SELECT sqlite_ct_key_count(?)"], ids=["unpack", "count"])
def test_malformed_key_sql(conn, sql, packed, message):
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, sql, (packed,))
    assert str(exc.value) == message
    # SQLITE_ERROR: SQLITE_CORRUPT would roll back the caller's transaction
    if isinstance(conn, apsw.Connection):
        assert isinstance(exc.value, apsw.SQLError)
    else:
        assert exc.value.sqlite_errorcode == sqlite3.SQLITE_ERROR
    assert val(conn, "SELECT 1") == 1


def test_every_truncation_of_a_valid_key_is_an_error(keyed):
    packed = sqlite_ct.pack_key(keyed, "two", [123456789, "some text"])
    for n in range(len(packed)):
        with pytest.raises(KeyFormatError):
            sqlite_ct.unpack_key(keyed, "two", packed[:n])
        with pytest.raises(HOST_ERRORS):
            q(keyed, "SELECT sqlite_ct_key_count(?)", (packed[:n],))


def test_key_with_the_wrong_number_of_values_for_the_table(keyed):
    with pytest.raises(KeyFormatError) as exc:
        sqlite_ct.unpack_key(keyed, "one", sqlite_ct.pack_key(keyed, "two", [7, "ab"]))
    assert str(exc.value) == ('sqlite-ct: malformed tombstone key: it holds 2 value(s) but '
                              'table "one" has 1 key column(s)')
    with pytest.raises(KeyFormatError) as exc:
        sqlite_ct.unpack_key(keyed, "two", INT7)
    assert str(exc.value) == ('sqlite-ct: malformed tombstone key: it holds 1 value(s) but '
                              'table "two" has 2 key column(s)')


@pytest.mark.parametrize("bad", [5, None, [1, 2]], ids=repr)
def test_key_that_is_not_bytes_python(keyed, bad):
    with pytest.raises(KeyFormatError) as exc:
        sqlite_ct.unpack_key(keyed, "one", bad)
    assert str(exc.value) == "sqlite-ct: malformed tombstone key: not bytes or str"


def test_malformed_text_key_python(keyed):
    # A str is the portable (text) form; "abc" is not a valid one.
    with pytest.raises(KeyFormatError) as exc:
        sqlite_ct.unpack_key(keyed, "one", "abc")
    assert str(exc.value).startswith("sqlite-ct: malformed tombstone key: ")


@pytest.mark.parametrize("bad", ["5", "NULL", "1.5"])
@pytest.mark.parametrize("func", ["sqlite_ct_unpack_key({}, 0)", "sqlite_ct_key_count({})"],
                         ids=["unpack", "count"])
def test_key_that_is_not_a_blob_or_text_sql(conn, func, bad):
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, "SELECT " + func.format(bad))
    assert str(exc.value) == "sqlite-ct: malformed tombstone key: not a BLOB or TEXT"


@pytest.mark.parametrize("func", ["sqlite_ct_unpack_key('abc', 0)", "sqlite_ct_key_count('abc')"],
                         ids=["unpack", "count"])
def test_text_that_is_not_a_text_key_sql(conn, func):
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, "SELECT " + func)
    assert str(exc.value) == "sqlite-ct: malformed tombstone key: it has an unknown type tag"


@pytest.mark.parametrize("index, message", [
    ("1", "sqlite-ct: sqlite_ct_unpack_key(): index 1 is out of range; the key holds 1 value"),
    ("-1", "sqlite-ct: sqlite_ct_unpack_key(): index -1 is out of range; the key holds 1 value"),
    ("'0'", "sqlite-ct: sqlite_ct_unpack_key(): the index must be an integer"),
    ("NULL", "sqlite-ct: sqlite_ct_unpack_key(): the index must be an integer"),
    ("0.0", "sqlite-ct: sqlite_ct_unpack_key(): the index must be an integer"),
])
def test_unpack_key_index_errors(conn, index, message):
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, f"SELECT sqlite_ct_unpack_key(?, {index})", (INT7,))
    assert str(exc.value) == message


def test_unpack_key_index_out_of_range_plural(conn):
    packed = val(conn, "SELECT sqlite_ct_pack_key(1, 2, 3)")
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, "SELECT sqlite_ct_unpack_key(?, 3)", (packed,))
    assert str(exc.value) == ("sqlite-ct: sqlite_ct_unpack_key(): index 3 is out of range; "
                              "the key holds 3 values")
    assert [val(conn, f"SELECT sqlite_ct_unpack_key(?, {i})", (packed,)) for i in range(3)] == [
        1, 2, 3]


def test_pack_key_errors(keyed):
    with pytest.raises(HOST_ERRORS) as exc:
        q(keyed, "SELECT sqlite_ct_pack_key()")
    assert str(exc.value) == "sqlite-ct: sqlite_ct_pack_key() needs at least one value"
    with pytest.raises(KeyFormatError) as exc:
        sqlite_ct.pack_key(keyed, "one", [1, 2])
    assert str(exc.value) == 'sqlite-ct: table "one" has 1 key column(s) (k); got 2 value(s)'
    with pytest.raises(KeyFormatError) as exc:
        sqlite_ct.pack_key(keyed, "two", [1])
    assert str(exc.value) == 'sqlite-ct: table "two" has 2 key column(s) (a, b); got 1 value(s)'


def test_pack_and_unpack_need_a_tracked_table(keyed):
    q(keyed, "CREATE TABLE plain(id INTEGER PRIMARY KEY)")
    for call in (lambda: sqlite_ct.pack_key(keyed, "plain", [1]),
                 lambda: sqlite_ct.unpack_key(keyed, "plain", INT7)):
        with pytest.raises(NotTrackedError) as exc:
            call()
        assert str(exc.value) == ('sqlite-ct: table "plain" is not tracked; '
                                  'call create_schema(conn, "plain") first')


@pytest.mark.parametrize("sql", ["SELECT sqlite_ct_unpack_key(x'0100', 0)",
                                 "SELECT sqlite_ct_key_count('zz')",
                                 "SELECT sqlite_ct_key_count(5)"])
def test_malformed_key_inside_a_write_transaction_keeps_the_transaction(conn, sql):
    """A bad user-supplied key is an error of that statement only: not
    SQLITE_CORRUPT, which makes SQLite roll back the caller's transaction and
    fail every later statement with "database disk image is malformed"."""
    q(conn, "CREATE TABLE mine(id INTEGER PRIMARY KEY)")
    q(conn, "BEGIN")
    q(conn, "INSERT INTO mine(id) VALUES (1)")
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, sql)
    assert "sqlite-ct: malformed tombstone key" in str(exc.value)
    q(conn, "INSERT INTO mine(id) VALUES (2)")
    q(conn, "COMMIT")
    assert q(conn, "SELECT id FROM mine") == [(1,), (2,)]
