"""The PostgreSQL hub's anchors and session tokens (sqlite_ct/sync/pg/_anchor.py):
they round-trip, and any bytes a client sends back are either a valid anchor
or a SyncError (anchors are client input)."""
from hypothesis import given
from hypothesis import strategies as st

import pytest

from sqlite_ct.sync import SyncError
from sqlite_ct.sync.pg._anchor import (PgAnchor, Window, decode_session, encode_session,
                                       snapshot_xmin)

SNAP = st.builds(lambda a, b, xs: f"{a}:{a + b}:" + ",".join(str(a + x) for x in sorted(xs)),
                 st.integers(3, 2 ** 40), st.integers(0, 1000),
                 st.sets(st.integers(0, 999), max_size=5))
WINDOW = st.builds(Window, SNAP, st.booleans(), st.booleans(), st.integers(0, 2),
                   st.integers(0, 2 ** 63), st.one_of(st.none(), st.lists(
                       st.text(max_size=20), min_size=1, max_size=3).map(tuple)))
ANCHOR = st.builds(PgAnchor, st.binary(min_size=16, max_size=16),
                   st.binary(min_size=8, max_size=8), st.one_of(st.none(), SNAP),
                   st.one_of(st.none(), WINDOW))


@given(ANCHOR)
def test_anchors_round_trip(anchor):
    assert PgAnchor.decode(anchor.encode(), "t") == anchor


@given(st.binary(max_size=120))
def test_any_bytes_decode_or_raise_sync_error(blob):
    try:
        PgAnchor.decode(blob, "t")
    except SyncError as exc:
        assert 'anchor of table "t" was not issued by a sqlite-ct PostgreSQL hub' in str(exc)


@given(ANCHOR, st.integers(0, 200), st.integers(0, 255))
def test_corrupted_anchors_decode_or_raise_sync_error(anchor, pos, byte):
    blob = bytearray(anchor.encode())
    blob[pos % len(blob)] = byte
    try:
        PgAnchor.decode(bytes(blob), "t")
    except SyncError:
        pass


def test_session_tokens():
    assert decode_session(encode_session("10:12:11")) == "10:12:11"
    assert decode_session(None) is None
    with pytest.raises(SyncError, match="malformed download session token"):
        decode_session(b"sqps10:x:")
    assert snapshot_xmin("10:12:11") == 10
