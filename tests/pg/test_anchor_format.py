"""The PostgreSQL hub's anchors and session tokens (sqlite_ct/sync/pg/_anchor.py):
they round-trip under the hub's key, and any bytes a client sends back are
either an anchor that hub issued for that table or ReinitialiseRequired (anchors
are client input): a corrupt, forged or foreign anchor is never used."""

from hypothesis import given
from hypothesis import strategies as st

import pytest

from sqlite_ct.sync import SyncError
from sqlite_ct.sync.errors import ReinitialiseRequired
from sqlite_ct.sync.pg._anchor import (NO_MARK, HubKey, PgAnchor, Window, adopt_legacy,
                                       check_marks, decode_session, encode_session,
                                       snapshot_xmin)

KEY = HubKey(b"S" * 16, b"L" * 16, b"k" * 32)
MARK = (7, b"tokentok")


def A(server, fp, complete, window=None, mark=MARK):
    """An anchor; one that names a snapshot carries `mark`."""
    return PgAnchor(server, fp, complete, window,
                    mark if complete is not None or window is not None else NO_MARK)


def _snap(a, b, xs):
    return f"{a}:{a + b}:" + ",".join(str(a + x) for x in sorted(xs) if x < b)


SNAP = st.builds(_snap, st.integers(3, 2 ** 40), st.integers(0, 1000),
                 st.sets(st.integers(0, 999), max_size=5))
KEYS = st.lists(st.text(max_size=20), min_size=1, max_size=3).map(tuple)


@st.composite
def anchors(draw):
    complete = draw(st.one_of(st.none(), SNAP))
    window = None
    if draw(st.booleans()):
        base = 3 if complete is None else int(complete.split(":")[1])
        upper = _snap(base, draw(st.integers(1, 1000)), draw(st.sets(st.integers(0, 999),
                                                                      max_size=5)))
        phase = draw(st.integers(0 if complete is not None else 1, 2))
        xmax = int(upper.split(":")[1])
        if phase == 2:
            window = Window(upper, False, True, 2, 0, draw(st.one_of(st.none(), KEYS)))
        else:
            xid = draw(st.integers(0, xmax - 1))
            window = Window(upper, draw(st.booleans()), False, phase, xid,
                            draw(KEYS) if xid else None)
    mark = (draw(st.integers(1, 2 ** 64 - 1)), draw(st.binary(min_size=8, max_size=8)))
    return A(KEY.server, draw(st.binary(min_size=8, max_size=8)), complete, window, mark)


@given(anchors())
def test_anchors_round_trip(anchor):
    assert PgAnchor.decode(anchor.encode(KEY, "t"), "t", KEY) == anchor


@given(st.binary(max_size=120))
def test_any_bytes_raise_reinitialise_required(blob):
    with pytest.raises(ReinitialiseRequired, match="SyncAgent.reinitialise()"):
        PgAnchor.decode(blob, "t", KEY)


@given(anchors(), st.integers(0, 400), st.integers(1, 255))
def test_any_corrupted_byte_is_refused(anchor, pos, flip):
    blob = bytearray(anchor.encode(KEY, "t"))
    blob[pos % len(blob)] ^= flip
    with pytest.raises(ReinitialiseRequired):
        PgAnchor.decode(bytes(blob), "t", KEY)


@given(anchors())
def test_an_anchor_is_bound_to_its_table_secret_and_lineage(anchor):
    blob = anchor.encode(KEY, "t")
    with pytest.raises(ReinitialiseRequired, match="corrupt or forged"):
        PgAnchor.decode(blob, "other", KEY)
    with pytest.raises(ReinitialiseRequired, match="corrupt or forged"):
        PgAnchor.decode(blob, "t", HubKey(KEY.server, KEY.lineage, b"x" * 32))
    with pytest.raises(ReinitialiseRequired, match="earlier generation of this hub"):
        PgAnchor.decode(blob, "t", HubKey(KEY.server, b"M" * 16, KEY.secret))
    with pytest.raises(ReinitialiseRequired, match="issued by another server"):
        PgAnchor.decode(blob, "t", HubKey(b"T" * 16, KEY.lineage, KEY.secret))


def test_a_forged_anchor_that_skips_rows_is_refused():
    """A client that moves its anchor forward (to skip rows it was never sent)
    cannot produce the MAC."""
    real = A(KEY.server, b"\0" * 8, "100:100:").encode(KEY, "t")
    forged = real.replace(b"100:100:", b"900:900:")
    with pytest.raises(ReinitialiseRequired, match="corrupt or forged"):
        PgAnchor.decode(forged, "t", KEY)


@pytest.mark.parametrize("anchor", [
    A(KEY.server, b"\0" * 8, "10:5:"),                          # xmin > xmax
    A(KEY.server, b"\0" * 8, "10:20:25"),                       # xip past xmax
    A(KEY.server, b"\0" * 8, "10:20:12,11"),                    # xip not ascending
    A(KEY.server, b"\0" * 8, "0:20:"),                          # xmin 0
    A(KEY.server, b"\0" * 8, f"10:{2 ** 64}:"),                 # over xid8
    A(KEY.server, b"\0" * 8, "10:30:",                          # complete past upper
             Window("10:20:", False, False, 0, 0, None)),
    A(KEY.server, b"\0" * 8, "10:20:",                          # cursor past upper
             Window("10:20:", False, False, 1, 20, ("1",))),
    A(KEY.server, b"\0" * 8, "10:20:",                          # cursor xid, no key
             Window("10:20:", False, False, 1, 15, None)),
    A(KEY.server, b"\0" * 8, None,                              # deletes, no complete
             Window("10:20:", False, False, 0, 0, None)),
    A(KEY.server, b"\0" * 8, None,                              # snapshot flag, phase 1
             Window("10:20:", False, True, 1, 0, None)),
    A(KEY.server, b"\0" * 8, None,                              # phase 3
             Window("10:20:", False, False, 3, 0, None)),
])
def test_out_of_bounds_fields_are_refused_even_with_a_valid_mac(anchor):
    with pytest.raises(ReinitialiseRequired, match="is malformed; reinitialise"):
        PgAnchor.decode(anchor.encode(KEY, "t"), "t", KEY)


def test_trailing_bytes_under_a_valid_mac_are_refused():
    body = A(KEY.server, b"\0" * 8, "10:20:").encode(KEY, "t")[:-16] + b"x"
    from sqlite_ct.sync._anchor import _mac
    with pytest.raises(ReinitialiseRequired, match="is malformed"):
        PgAnchor.decode(body + _mac(KEY.secret, "t", body), "t", KEY)


def test_session_tokens():
    token = encode_session("10:12:11", MARK, KEY)
    assert decode_session(token, KEY) == ("10:12:11", MARK)
    assert decode_session(encode_session("10:12:11", NO_MARK, KEY), KEY) == ("10:12:11", NO_MARK)
    assert decode_session(None, KEY) == (None, NO_MARK)
    with pytest.raises(SyncError, match="malformed download session token"):
        decode_session(b"sqps10:x:", KEY)
    with pytest.raises(SyncError, match="malformed download session token"):
        decode_session(token.replace(b"10:12:11", b"10:99:11"), KEY)
    with pytest.raises(SyncError, match="malformed download session token"):
        decode_session(token.replace(b"tokentok", b"tokentoc"), KEY)
    with pytest.raises(SyncError, match="malformed download session token"):
        decode_session(token, HubKey(KEY.server, KEY.lineage, b"x" * 32))
    with pytest.raises(SyncError, match="earlier generation of this hub"):
        decode_session(token, HubKey(KEY.server, b"M" * 16, KEY.secret))
    assert snapshot_xmin("10:12:11") == 10


def test_a_mark_is_carried_under_the_mac_and_checked():
    blob = A(KEY.server, b"\0" * 8, "10:20:").encode(KEY, "t")
    assert b"tokentok" in blob
    with pytest.raises(ReinitialiseRequired, match="corrupt or forged"):
        PgAnchor.decode(blob.replace(b"tokentok", b"tokentoc"), "t", KEY)
    anchor = PgAnchor.decode(blob, "t", KEY)
    assert anchor.mark == MARK
    check_marks([("t", anchor)], {MARK})
    with pytest.raises(ReinitialiseRequired, match="restored from a backup"):
        check_marks([("t", anchor)], set())
    with pytest.raises(ReinitialiseRequired, match="restored from a backup"):
        check_marks([("t", anchor)], {(7, b"othertok")})
    # An anchor that names no snapshot needs no mark.
    check_marks([("t", PgAnchor.decode(A(KEY.server, b"\0" * 8, None).encode(KEY, "t"),
                                       "t", KEY))], set())
    with pytest.raises(AssertionError):
        PgAnchor(KEY.server, b"\0" * 8, "10:20:").encode(KEY, "t")


def _version_2(anchor, table="t"):
    """`anchor` as a hub before marks issued it (version 2: no mark)."""
    from sqlite_ct.sync._anchor import _mac
    body = anchor.encode(KEY, table)[:-16]
    body = body[:4] + bytes([2]) + body[5:4 + 1 + 16 + 16 + 8] + body[4 + 1 + 16 + 16 + 8 + 16:]
    return body + _mac(KEY.secret, table, body)


@given(anchors())
def test_version_2_anchors_adopt_the_first_mark_when_it_covers_them(anchor):
    got = PgAnchor.decode(_version_2(anchor), "t", KEY)
    assert (got.complete, got.window) == (anchor.complete, anchor.window)
    assert got.mark == NO_MARK and got.legacy == (anchor.latest is not None)
    genesis = (3, b"genesis!")
    if anchor.latest is None:
        assert adopt_legacy(got, None, "t") is got
        return
    xmax = int(anchor.latest.split(":")[1])
    adopted = adopt_legacy(got, (genesis, xmax), "t")
    assert adopted.mark == genesis and not adopted.legacy
    assert PgAnchor.decode(adopted.encode(KEY, "t"), "t", KEY) == adopted
    # Issued after the first mark (an older version still serving), or a
    # hub without marks: refused.
    with pytest.raises(ReinitialiseRequired, match="older version of sqlite-ct"):
        adopt_legacy(got, (genesis, xmax - 1), "t")
    with pytest.raises(ReinitialiseRequired, match="older version of sqlite-ct"):
        adopt_legacy(got, None, "t")
    with pytest.raises(AssertionError):
        got.encode(KEY, "t")


ANY_SNAP = st.one_of(st.none(), SNAP, st.from_regex(r"\d{1,20}:\d{1,20}:(\d{1,20}(,\d{1,20})*)?",
                                                    fullmatch=True), st.text(max_size=12))
ANY_WINDOW = st.builds(Window, ANY_SNAP.filter(lambda s: s is not None), st.booleans(),
                       st.booleans(), st.integers(0, 255), st.integers(0, 2 ** 64 - 1),
                       st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=3)
                                 .map(tuple)))


@given(ANY_SNAP, st.one_of(st.none(), ANY_WINDOW))
def test_fields_under_a_valid_mac_decode_within_bounds_or_are_refused(complete, window):
    """Whatever a hub bug could sign, decode() returns only anchors within
    bounds; anything else is ReinitialiseRequired, never another error."""
    try:
        blob = A(KEY.server, b"\0" * 8, complete, window).encode(KEY, "t")
    except SyncError:
        return                                  # too long to encode
    try:
        got = PgAnchor.decode(blob, "t", KEY)
    except ReinitialiseRequired as exc:
        assert "is malformed" in str(exc)
        return
    snaps = [s for s in (got.complete, got.window and got.window.upper) if s]
    for s in snaps:
        xmin, xmax, xip = s.split(":")
        ids = [int(x) for x in xip.split(",")] if xip else []
        assert 0 < int(xmin) <= int(xmax) < 2 ** 63
        assert ids == sorted(set(ids)) and all(int(xmin) <= x < int(xmax) for x in ids)
    w = got.window
    if w is not None:
        assert w.phase in (0, 1, 2) and w.snapshot == (w.phase == 2)
        assert w.cursor_xid < int(w.upper.split(":")[1])
        if got.complete is not None:
            assert int(got.complete.split(":")[1]) <= int(w.upper.split(":")[1])
        else:
            assert w.phase != 0
