"""The tombstone key codec (csrc/keycodec.c, sqlite_ct.pack_key/unpack_key).

- pack_key then unpack_key gives back the same values with the same SQLite
  types, for tuples of any SQLite values: int64 extremes, floats (not NaN,
  which SQLite binds as NULL) including -0.0 and +-inf, text with NUL bytes
  and any non-surrogate unicode, blobs, NULL;
- a row with such a key, deleted, comes back from enumerate_changes as exactly
  the key SQLite stored (DESIGN §5: keys of every SQLite type);
- sqlite_ct_key_count() and sqlite_ct_unpack_key() on arbitrary bytes (random,
  and valid keys mutated) never crash: they return, or fail with
  "sqlite-ct: malformed tombstone key" (an index out of range has its own
  message); what they accept is self-consistent, and the Python unpack_key
  raises KeyFormatError for malformed input.
"""
from __future__ import annotations

import re
import struct
import tempfile

import apsw
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import sqlite_ct
from sqlite_ct import KeyFormatError

from ._harness import fresh_db, open_apsw, typed
from ._settings import scaled

MAX_WIDTH = 4

SQL_VALUE = st.one_of(
    st.none(),
    st.integers(-2**63, 2**63 - 1),
    st.sampled_from([-2**63, 2**63 - 1, 0, -1]),
    st.floats(allow_nan=False),
    st.sampled_from([-0.0, 0.0, float("inf"), float("-inf"), 5e-324, -1.7976931348623157e308]),
    st.text(st.characters(blacklist_categories=("Cs",))),
    st.text(st.sampled_from("\x00a\u00e9\U0001F600"), max_size=5),
    st.binary(),
)
KEY_VALUES = st.lists(SQL_VALUE, min_size=1, max_size=MAX_WIDTH).map(tuple)


@pytest.fixture(scope="module")
def keyed_db():
    """One database with tracked tables k1..k4 whose keys are 1..4 columns
    wide (untyped columns: values keep their type), the same tracked in
    portable mode as p1..p4 when this build has it, and an apsw connection."""
    with tempfile.TemporaryDirectory(prefix="ct-keys-") as directory:
        host = open_apsw(fresh_db(directory))
        host.portable = True
        for width in range(1, MAX_WIDTH + 1):
            cols = ", ".join(f"c{i}" for i in range(width))
            for prefix, mode in (("k", "native"), ("p", "portable")):
                # A rowid table: its non-INTEGER PRIMARY KEY columns accept NULL.
                host.execute(f"CREATE TABLE {prefix}{width}({cols}, payload,"
                             f" PRIMARY KEY({cols}))")
                if mode == "native":
                    sqlite_ct.create_schema(host.conn, f"{prefix}{width}")
                    continue
                try:
                    sqlite_ct.create_schema(host.conn, f"{prefix}{width}", mode=mode)
                except (TypeError, ValueError, sqlite_ct.Error):
                    host.portable = False
        yield host
        host.close()


def same(a, b) -> bool:
    return [typed(x) for x in a] == [typed(x) for x in b]


@scaled(3)
@given(values=KEY_VALUES)
@example(values=(-0.0,))
@example(values=("a\x00b", b"", ""))
@example(values=(2**63 - 1, -2**63, float("-inf"), None))
def test_pack_unpack_roundtrip(keyed_db, values):
    conn = keyed_db.conn
    table = f"k{len(values)}"
    packed = sqlite_ct.pack_key(conn, table, values)
    assert isinstance(packed, bytes)
    assert keyed_db.value("SELECT sqlite_ct_key_count(?)", (packed,)) == len(values)
    assert same(sqlite_ct.unpack_key(conn, table, packed), values)
    # The packing is a function of the values: packing again gives the same bytes.
    assert sqlite_ct.pack_key(conn, table, values) == packed


def zero_signless(values):
    """Portable mode records a REAL -0.0 as 0.0 (the same key for SQLite)."""
    return [0.0 if isinstance(v, float) and v == 0 else v for v in values]


@pytest.mark.parametrize("mode", ["native", "portable"])
@scaled(1)
@given(values=KEY_VALUES)
@example(values=(-0.0, "x"))
@example(values=(None, b"\x00"))
@example(values=(5e-324, -2.2250738585072014e-308, 1.7976931348623157e308, float("-inf")))
@example(values=(-2**63, 2**63 - 1, 0.1, -1.5))
def test_deleted_key_is_enumerated_as_stored(keyed_db, mode, values):
    """A row with this key, inserted and deleted, is enumerated with exactly
    the key SQLite stored, and its tombstone key unpacks to it. In portable
    mode the pure-SQL triggers write the text form, which must be exactly the
    documented text of the stored values."""
    if mode == "portable" and not keyed_db.portable:
        pytest.skip("this build has no portable mode")
    conn = keyed_db.conn
    table = f"{'k' if mode == 'native' else 'p'}{len(values)}"
    cols = [f"c{i}" for i in range(len(values))]
    col_list = ", ".join(cols)
    fix = zero_signless if mode == "portable" else list
    keyed_db.execute(f"DELETE FROM {table}")
    since = sqlite_ct.last_committed_csn(conn)
    insert = (f"INSERT INTO {table}({col_list}, payload) VALUES"
              f" ({', '.join('?' for _ in values)}, 1)")
    if len(values) > 1 and any(v is None for v in values):
        # NULL in a composite key: a replica could never match the row by key
        with pytest.raises(apsw.ConstraintError, match="NULL in the PRIMARY KEY"):
            keyed_db.execute(insert, values)
        assert keyed_db.execute(f"SELECT count(*) FROM {table}") == [(0,)]
        return
    keyed_db.execute(insert, values)
    stored = keyed_db.execute(f"SELECT {col_list} FROM {table}")[0]
    inserted = sqlite_ct.enumerate_changes(conn, table, since)
    assert [same([r[c] for c in cols], stored) for r in inserted.inserts] == [True]
    keyed_db.execute(f"DELETE FROM {table}")
    deleted = sqlite_ct.enumerate_changes(conn, table, inserted.new_anchor)
    assert [same(fix([r[c] for c in cols]), fix(stored)) for r in deleted.deletes] == [True]
    (rk,) = keyed_db.execute(
        "SELECT __sysRK FROM __sysOCSDeletedRows WHERE __sysTName = ?"
        " AND __sysDeleteTxBsn > ?", (table, inserted.new_anchor))[0]
    assert same(fix(sqlite_ct.unpack_key(conn, table, rk)), fix(stored))
    if mode == "portable":
        assert rk == text_key(stored), (stored, rk)


# ---------------------------------------------------------------- malformed keys

def mutations(draw_key: bytes, how: int, pos: int, data: bytes) -> bytes:
    """Valid key `draw_key` damaged one way: truncated, extended, a byte
    replaced, a 4-byte length or count overwritten."""
    n = len(draw_key)
    p = pos % (n + 1)
    if how == 0:
        return draw_key[:p]
    if how == 1:
        return draw_key + data
    if how == 2 and n:
        p = pos % n
        return draw_key[:p] + bytes([data[0] if data else 0xFF]) + draw_key[p + 1:]
    if how == 3:
        word = struct.pack("<I", int.from_bytes((data + b"\xff" * 4)[:4], "little"))
        return draw_key[:p] + word + draw_key[p + 4:]
    return draw_key[:p] + data + draw_key[p:]


@st.composite
def damaged_keys(draw):
    values = draw(KEY_VALUES)
    # The pack format is documented (keycodec.c FORMAT); build it here so the
    # strategy does not need a connection.
    fields = []
    for v in values:
        if v is None:
            body = b"\x05"
        elif isinstance(v, int):
            body = b"\x01" + struct.pack("<q", v)
        elif isinstance(v, float):
            body = b"\x02" + struct.pack("<d", v)
        elif isinstance(v, str):
            body = b"\x03" + v.encode("utf-8")
        else:
            body = b"\x04" + v
        fields.append(struct.pack("<I", len(body)) + body)
    key = struct.pack("<I", len(values)) + b"".join(fields)
    return mutations(key, draw(st.integers(0, 4)), draw(st.integers(0, 1 << 16)),
                     draw(st.binary(max_size=8)))


ANY_BYTES = st.one_of(st.binary(max_size=64), damaged_keys())
MALFORMED = "sqlite-ct: malformed tombstone key"


def reference_decode(blob: bytes):
    """The FORMAT of csrc/keycodec.c, decoded in Python: a list of
    (typeof, value) as SQL sees each value (text as upper-case hex of its
    bytes, so nothing is decoded), or None when the key is malformed."""
    def u32(at: int) -> int:
        return struct.unpack_from("<I", blob, at)[0]
    if len(blob) < 4 or u32(0) < 1:
        return None
    off, out = 4, []
    for _ in range(u32(0)):
        if len(blob) - off < 4:
            return None
        length = u32(off)
        off += 4
        if length < 1 or length > len(blob) - off:
            return None
        tag, payload = blob[off], blob[off + 1:off + length]
        if tag in (1, 2) and length != 9 or tag == 5 and length != 1 or tag not in range(1, 6):
            return None
        if tag == 1:
            out.append(("integer", struct.unpack("<q", payload)[0]))
        elif tag == 2:
            r = struct.unpack("<d", payload)[0]
            # SQLite turns a NaN result into NULL (sqlite3_result_double).
            out.append(("null", None) if r != r else ("real", r))
        elif tag == 3:
            out.append(("text", payload.hex().upper()))
        elif tag == 4:
            out.append(("blob", payload))
        else:
            out.append(("null", None))
        off += length
    return out if off == len(blob) else None


def c_level(host, blob: bytes, index: int):
    """(key_count, (typeof, value) of value `index`) through SQL, text read
    as hex so no decoding happens in Python; an error becomes its message."""
    try:
        count = host.value("SELECT sqlite_ct_key_count(?)", (blob,))
    except apsw.Error as exc:
        count = str(exc)
    try:
        item = host.execute(
            "SELECT typeof(x), CASE typeof(x) WHEN 'text' THEN hex(x) ELSE x END"
            " FROM (SELECT sqlite_ct_unpack_key(?, ?) AS x)", (blob, index))[0]
    except apsw.Error as exc:
        item = str(exc)
    return count, item


@scaled(3)
@given(blob=ANY_BYTES, index=st.integers(-2, 6))
@example(blob=b"", index=0)
@example(blob=b"\x01\x00\x00\x00", index=0)
@example(blob=b"\xff\xff\xff\xff", index=0)
@example(blob=b"\x01\x00\x00\x00\xff\xff\xff\xff\x01", index=0)
@example(blob=b"\x01\x00\x00\x00\x09\x00\x00\x00\x01" + b"\x00" * 8, index=2**31)
@example(blob=b"\x01\x00\x00\x00\x09\x00\x00\x00\x02" + b"\x00" * 6 + b"\xf8\x7f", index=0)
def test_malformed_keys_never_crash(keyed_db, blob, index):
    """The C walker agrees with the documented FORMAT on every input."""
    expected = reference_decode(blob)
    count, item = c_level(keyed_db, blob, index)
    if expected is None:
        assert isinstance(count, str) and MALFORMED in count, count
        assert isinstance(item, str) and MALFORMED in item, item
        return
    assert count == len(expected)
    if 0 <= index < count:
        assert typed_item(item) == typed_item(expected[index])
    else:
        assert isinstance(item, str) and "out of range" in item, item
    for i in range(count):
        assert typed_item(c_level(keyed_db, blob, i)[1]) == typed_item(expected[i])


def typed_item(item):
    kind, value = item
    return (kind, struct.pack("<d", value) if kind == "real" else value)


@scaled(2)
@given(blob=ANY_BYTES, width=st.integers(1, MAX_WIDTH))
def test_python_unpack_key_raises_key_format_error(keyed_db, blob, width):
    expected = reference_decode(blob)
    try:
        values = sqlite_ct.unpack_key(keyed_db.conn, f"k{width}", blob)
    except KeyFormatError as exc:
        assert str(exc).startswith(MALFORMED), str(exc)
        assert expected is None or len(expected) != width
        return
    except UnicodeDecodeError:
        # A well-formed key whose TEXT payload is not UTF-8: the extension
        # returns the bytes as stored and the host cannot make a str of them.
        assert expected is not None and len(expected) == width
        assert any(kind == "text" for kind, _ in expected)
        return
    assert expected is not None and len(values) == width
    # A key that unpacks packs back to the same bytes (one encoding per key),
    # except a REAL field holding a NaN, which reads back as NULL.
    if not any(kind == "null" and tag_is_real(blob, i) for i, (kind, _) in enumerate(expected)):
        assert sqlite_ct.pack_key(keyed_db.conn, f"k{width}", values) == blob


def tag_is_real(blob: bytes, index: int) -> bool:
    off = 4
    for _ in range(index):
        off += 4 + struct.unpack_from("<I", blob, off)[0]
    return blob[off + 4] == 2


@pytest.mark.parametrize("arg", [7, 1.5, None])
def test_keys_of_other_types_are_malformed(keyed_db, arg):
    for sql in ("SELECT sqlite_ct_key_count(?)", "SELECT sqlite_ct_unpack_key(?, 0)"):
        with pytest.raises(apsw.Error, match="malformed tombstone key: not a BLOB"):
            keyed_db.execute(sql, (arg,))


# ---------------------------------------------------------------- the text form

TEXT_TAGS = "irtuvbn"
_PAYLOAD = {
    "i": re.compile(r"-?(0|[1-9][0-9]*)"),
    "r": re.compile(r"[0-9A-F]{16}"),
    "t": re.compile(r"([0-9A-F]{2})*"),
    "b": re.compile(r"([0-9A-F]{2})*"),
    "u": re.compile(r"([0-9A-F]{4})*"),
    "v": re.compile(r"([0-9A-F]{4})*"),
    "n": re.compile(r""),
}


def reference_decode_text(key: str):
    """The text FORMAT of csrc/keycodec.c, decoded in Python like
    reference_decode(); None when malformed. UTF-16 fields ('u', 'v') come
    back as ("text", None): only their type is compared."""
    if not key or key[0] not in TEXT_TAGS:
        return None
    out = []
    for field in re.findall(r"[a-z][^a-z]*", key):
        tag, payload = field[0], field[1:]
        if tag not in TEXT_TAGS or not _PAYLOAD[tag].fullmatch(payload):
            return None
        if tag == "i":
            value = int(payload)
            if payload == "-0" or not -2**63 <= value < 2**63:
                return None
            out.append(("integer", value))
        elif tag == "r":
            bits = int(payload, 16)
            r = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
            if r != r:
                return None
            out.append(("real", r))
        elif tag == "t":
            out.append(("text", payload))
        elif tag == "b":
            out.append(("blob", bytes.fromhex(payload)))
        elif tag in "uv":
            out.append(("text", None))
        else:
            out.append(("null", None))
    return out


def text_key(values) -> str:
    """The text form of a key, as the portable triggers write it."""
    parts = []
    for v in values:
        if v is None:
            parts.append("n")
        elif isinstance(v, int):
            parts.append(f"i{v}")
        elif isinstance(v, float):
            v = 0.0 if v == 0 else v   # pure SQL cannot see the sign of a zero
            parts.append("r" + struct.pack(">d", v).hex().upper())
        elif isinstance(v, str):
            parts.append("t" + v.encode("utf-8").hex().upper())
        else:
            parts.append("b" + bytes(v).hex().upper())
    return "".join(parts)


@st.composite
def damaged_text_keys(draw):
    key = text_key(draw(KEY_VALUES))
    how = draw(st.integers(0, 3))
    pos = draw(st.integers(0, len(key)))
    junk = draw(st.text(alphabet=TEXT_TAGS + "0123456789ABCDEFaf-x ", max_size=4))
    if how == 0:
        return key[:pos]
    if how == 1:
        return key[:pos] + junk + key[pos:]
    if how == 2:
        return key[:pos] + junk + key[pos + len(junk):]
    return key


ANY_TEXT = st.one_of(
    st.text(alphabet=TEXT_TAGS + "0123456789ABCDEF-", max_size=40),
    st.text(max_size=20),
    damaged_text_keys(),
)


@pytest.fixture(scope="module")
def text_form(keyed_db):
    try:
        keyed_db.value("SELECT sqlite_ct_key_count('i7')")
    except apsw.Error as exc:
        pytest.skip(f"this build has no text key form: {exc}")


def text_item(item):
    """A C-level (typeof, value) with UTF-16 text reduced to its type."""
    if isinstance(item, tuple) and item[0] == "text":
        return ("text", item[1])
    return item


@scaled(3)
@given(key=ANY_TEXT, index=st.integers(-1, 5))
@example(key="i9223372036854775807", index=0)
@example(key="i-9223372036854775808", index=0)
@example(key="i9223372036854775808", index=0)
@example(key="i-9223372036854775809", index=0)
@example(key="i99999999999999999999", index=0)
@example(key="i-0", index=0)
@example(key="i007", index=0)
@example(key="r7FF8000000000000", index=0)
@example(key="r8000000000000000", index=0)
@example(key="t6", index=0)
@example(key="u00410042", index=0)
@example(key="nn", index=1)
def test_text_keys_follow_the_format(keyed_db, text_form, key, index):
    """The text form (portable mode): never a crash, and the C walker agrees
    with the documented FORMAT on every input."""
    expected = reference_decode_text(key)
    count, item = c_level(keyed_db, key, index)
    if expected is None:
        assert isinstance(count, str) and MALFORMED in count, (key, count)
        assert isinstance(item, str) and MALFORMED in item, (key, item)
        return
    assert count == len(expected), (key, count)
    if not 0 <= index < count:
        assert isinstance(item, str) and "out of range" in item, item
        return
    kind, value = expected[index]
    if kind == "text" and value is None:
        assert item[0] == "text", (key, item)
    else:
        assert typed_item(item) == typed_item(expected[index]), key


@scaled(2)
@given(values=KEY_VALUES)
def test_text_and_binary_forms_unpack_alike(keyed_db, text_form, values):
    """Both forms of one key unpack to the same values (a -0.0 in the text
    form reads back as 0.0, the same key for SQLite)."""
    binary = sqlite_ct.pack_key(keyed_db.conn, f"k{len(values)}", values)
    text = text_key(values)
    for i in range(len(values)):
        from_binary = c_level(keyed_db, binary, i)[1]
        from_text = c_level(keyed_db, text, i)[1]
        if from_binary[0] == "real" and from_binary[1] == 0:
            from_binary = ("real", 0.0)
        assert typed_item(from_text) == typed_item(from_binary), (values, i)
