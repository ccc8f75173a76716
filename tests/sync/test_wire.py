"""The JSON wire format (sqlite_ct.sync.wire, docs/wire-format.md): every
message round-trips exactly, SQLite values keep their type and bits, and
malformed or hostile input is refused with WireError, never another exception."""
import json
import math
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlite_ct import Error
from sqlite_ct.sync import (ApplyAction, ColumnSchema, Conflict, ConflictType, DownloadBatch,
                            DownloadRequest, DownloadTable, ServerInfo, SyncError, SyncSchema,
                            SyncStage, TableChanges, TableSchema, Upload, UploadResult)
from sqlite_ct.sync import wire
from sqlite_ct.sync.wire import ErrorReply, ReplicaClaim, SchemaRequest, TableList, WireError

INT64 = st.integers(-2 ** 63, 2 ** 63 - 1)
# Text as SQLite can hold it: any code point but lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
VALUES = st.one_of(st.none(), INT64, st.floats(allow_nan=False), TEXT, st.binary(max_size=20))
NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                min_size=1, max_size=8)
BLOBS = st.binary(max_size=40)


def same(a, b):
    """Equal including value types and float bits (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if hasattr(a, "__dataclass_fields__"):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


@st.composite
def table_changes(draw):
    columns = draw(st.lists(NAMES, min_size=1, max_size=4, unique_by=str.lower))
    nkey = draw(st.integers(1, len(columns)))
    key = tuple(columns[:nkey])
    row = st.tuples(*[VALUES] * len(columns))
    return TableChanges(draw(NAMES), tuple(columns), key,
                        draw(st.lists(st.tuples(*[VALUES] * nkey), max_size=3)),
                        draw(st.lists(row, max_size=3)), draw(st.lists(row, max_size=3)),
                        draw(st.booleans()))


ROWS = st.dictionaries(NAMES, VALUES, max_size=3)
CONFLICTS = st.builds(Conflict, st.sampled_from(ConflictType), st.sampled_from(SyncStage), NAMES,
                      ROWS, st.none() | ROWS, st.none() | ROWS, st.none() | TEXT,
                      st.none(), st.none() | st.sampled_from(ApplyAction),
                      st.integers(0, 10), st.booleans())
COLUMNS = st.builds(ColumnSchema, NAMES, TEXT, st.booleans(), st.none() | TEXT)


@st.composite
def table_schemas(draw):
    columns = draw(st.lists(COLUMNS, min_size=1, max_size=4,
                            unique_by=lambda c: c.name.lower()))
    return TableSchema(draw(NAMES), tuple(columns), (columns[0].name,), draw(st.booleans()),
                       tuple(draw(st.lists(TEXT, max_size=2))))


MESSAGES = st.one_of(
    st.builds(ServerInfo, st.uuids()),
    st.builds(SchemaRequest, st.lists(NAMES, max_size=3, unique_by=str.lower).map(tuple)),
    st.builds(TableList, st.lists(NAMES, max_size=3, unique_by=str.lower).map(tuple)),
    st.builds(ErrorReply, NAMES, TEXT, st.booleans()),
    st.builds(ReplicaClaim, st.uuids(), st.none() | BLOBS, BLOBS),
    st.builds(SyncSchema, st.dictionaries(NAMES, table_schemas(), max_size=2),
              st.dictionaries(NAMES, BLOBS, max_size=2),
              st.dictionaries(NAMES, BLOBS, max_size=2)),
    st.builds(Upload, st.uuids(), TEXT, st.lists(table_changes(), max_size=2),
              st.dictionaries(NAMES, st.none() | BLOBS, max_size=2),
              st.dictionaries(NAMES, VALUES, max_size=2), st.none() | BLOBS,
              st.integers(0, 2 ** 40)),
    st.builds(UploadResult, st.integers(0, 10 ** 9), st.integers(0, 10 ** 9),
              st.lists(CONFLICTS, max_size=2), st.lists(table_changes(), max_size=2)),
    st.builds(DownloadRequest, st.uuids(), TEXT,
              st.lists(st.builds(DownloadTable, NAMES, st.none() | BLOBS, st.booleans()),
                       max_size=3),
              st.none() | st.integers(1, 10 ** 6), st.dictionaries(NAMES, VALUES, max_size=2),
              st.none() | BLOBS),
    st.builds(DownloadBatch, st.lists(table_changes(), max_size=2),
              st.dictionaries(NAMES, BLOBS, max_size=2), BLOBS, st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(MESSAGES)
def test_every_message_round_trips_exactly(message):
    data = wire.encode(message)
    back = wire.decode(data, type(message))
    assert same(back, message)
    assert wire.encode(back) == data
    assert json.loads(data)["v"] == wire.WIRE_VERSION


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, max_size=8))
def test_sqlite_values_keep_type_and_bits(values):
    tc = TableChanges("t", ("k",), ("k",), inserts=[(v,) for v in values])
    back = wire.decode(wire.encode(DownloadBatch([tc], {}, b"s", False)), DownloadBatch)
    assert same(back.tables[0].inserts, [(v,) for v in values])


@pytest.mark.parametrize("value, text", [
    (None, "null"), (0, "0"), (2 ** 53 - 1, str(2 ** 53 - 1)),
    (2 ** 53, '{"i":"9007199254740992"}'), (-2 ** 63, '{"i":"-9223372036854775808"}'),
    (2 ** 63 - 1, '{"i":"9223372036854775807"}'), (1.0, "1.0"), (-0.0, "-0.0"),
    (float("inf"), '{"f":"inf"}'), (float("-inf"), '{"f":"-inf"}'), (b"\0\xff", '{"b":"AP8="}'),
    ("a\0b", '"a\\u0000b"'), (True, "1"),
])
def test_value_encoding_is_the_documented_one(value, text):
    tc = TableChanges("t", ("k",), ("k",), inserts=[(value,)])
    data = json.loads(wire.encode(DownloadBatch([tc], {}, b"", False)))
    assert json.dumps(data["tables"][0]["inserts"][0][0], separators=(",", ":")) == text


@pytest.mark.parametrize("value, message", [
    (float("nan"), "NaN has no SQLite value"),
    (2 ** 63, "outside SQLite's 64-bit range"),
    (object(), "is not a SQLite value"),
])
def test_values_sqlite_cannot_hold_are_refused_on_encode(value, message):
    tc = TableChanges("t", ("k",), ("k",), inserts=[(value,)])
    with pytest.raises(WireError, match=message):
        wire.encode(DownloadBatch([tc], {}, b"", False))


def batch_with(value_json):
    return ('{"v":2,"type":"DownloadBatch","tables":[{"table":"t","columns":["k"],'
            '"key_columns":["k"],"deletes":[],"inserts":[[' + value_json + ']],"updates":[],'
            '"reset":false}],"anchors":{},"session":"","more":false}')


def test_a_valid_hand_written_message_decodes():
    batch = wire.decode(batch_with('{"i":"-9223372036854775808"}'), DownloadBatch)
    assert batch.tables[0].inserts == [(-2 ** 63,)]


@pytest.mark.parametrize("value_json, message", [
    ("9007199254740992", "must be sent as"),
    ('{"i":"12"}', "beyond"),
    ('{"i":"9223372036854775808"}', "within int64"),
    ('{"i":"0012345678901234567"}', '"i" must hold'),
    ('{"f":"nan"}', '"f" must be'),
    ('{"b":"!!!"}', "malformed base64"),
    ('{"b":"YQ"}', "malformed base64"),
    ('{"b":"YQ==","i":"1"}', "not a SQLite value"),
    ('{"x":"1"}', "not a SQLite value"),
    ("[1]", "not a SQLite value"),
    ("true", "not a SQLite value"),
    ('"\\ud800"', "lone UTF-16 surrogate"),
])
def test_malformed_values_are_refused_with_their_path(value_json, message):
    with pytest.raises(WireError, match=message) as info:
        wire.decode(batch_with(value_json), DownloadBatch)
    assert "DownloadBatch.tables[0].inserts[0][0]" in str(info.value)


UPLOAD = json.loads(wire.encode(Upload(
    uuid.UUID(int=7), "g", [TableChanges("t", ("k", "v"), ("k",), [(1,)], [(2, "x")], [])],
    {"t": b"anchor"}, {"user": "alice"}, b"sess", 2)))


def mutated(path, value, delete=False):
    doc = json.loads(json.dumps(UPLOAD))
    target = doc
    for p in path[:-1]:
        target = target[p]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(doc)


@pytest.mark.parametrize("data, message", [
    (mutated(["v"], 1), "unsupported wire version 1; this sqlite-ct speaks version 2"),
    (mutated(["v"], True), "unsupported wire version"),
    (mutated(["type"], "Nope"), "unknown message type"),
    (mutated(["type"], "DownloadBatch"), "expected a Upload message, got DownloadBatch"),
    (mutated(["extra"], 1), "Upload: unknown field 'extra'"),
    (mutated(["group"], None, delete=True), "Upload: missing field 'group'"),
    (mutated(["client_id"], "0000000000000000000000000000007"), "Upload.client_id: expected a UUID"),
    (mutated(["client_id"], "{00000000-0000-0000-0000-000000000007}"), "expected a UUID"),
    (mutated(["batch"], -1), "Upload.batch: expected an integer"),
    (mutated(["batch"], 1.0), "Upload.batch: expected an integer"),
    (mutated(["session"], 5), "Upload.session: expected a base64 string"),
    (mutated(["tables", 0, "inserts", 0], [2]), r"Upload.tables\[0\].inserts\[0\]: expected an "
                                                r"array of 2 values, got 1"),
    (mutated(["tables", 0, "deletes", 0], [1, 2]), "array of 1 values, got 2"),
    (mutated(["tables", 0, "key_columns"], ["nope"]), "every key column must be one of"),
    (mutated(["tables", 0, "key_columns"], []), "at least one key column"),
    (mutated(["tables", 0, "columns"], ["k", "K"]), "names repeat"),
    (mutated(["tables", 0, "table"], ""), "non-empty string"),
    (mutated(["tables", 0, "reset"], 0), "expected true or false"),
    (mutated(["tables"], {}), "Upload.tables: expected an array"),
    (mutated(["parameters", "user"], {"b": 1}), "Upload.parameters.user: not a SQLite value"),
    (mutated(["received_anchors", "t"], 1), "expected a base64 string"),
    ('{"v":1,"v":1,"type":"Upload"}', "repeats a key"),
    ('{"v":1,"type":"DownloadBatch","tables":[],"anchors":{},"session":"","more":NaN}',
     "NaN is not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ("", "not a JSON message"),
    ("{", "not a JSON message"),
    (b"\xff\xfe", "not a JSON message"),
    ("[" * 100000 + "]" * 100000, "not a JSON message"),
    ("1" * 5000, "not a JSON message"),
])
def test_hostile_messages_are_refused(data, message):
    with pytest.raises(WireError, match=message):
        wire.decode(data, Upload)


def test_wire_error_is_a_sqlite_ct_error():
    assert issubclass(WireError, SyncError) and issubclass(WireError, Error)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda s: s.encode("utf-8", "replace")))
def test_arbitrary_bytes_never_raise_anything_but_wire_error(data):
    for expect in (None, Upload, DownloadRequest):
        try:
            wire.decode(data, expect)
        except WireError:
            pass


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5),
                                                                      children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["Upload", "DownloadRequest", "DownloadBatch", "UploadResult",
                        "SyncSchema"]), st.dictionaries(st.sampled_from(
                            ["client_id", "group", "tables", "received_anchors", "parameters",
                             "session", "batch", "batch_size", "anchors", "more", "applied",
                             "failed", "conflicts", "corrections", "initial_anchors",
                             "current_anchors"]), JSONS))
def test_well_formed_json_of_the_wrong_shape_is_wire_error(name, fields):
    doc = {"v": wire.WIRE_VERSION, "type": name, **fields}
    try:
        wire.decode(json.dumps(doc))
    except WireError:
        pass


def test_encoding_something_else_is_refused():
    with pytest.raises(WireError, match="dict is not a wire message"):
        wire.encode({"v": 1})
    assert math.isinf(wire.decode(batch_with('{"f":"-inf"}')).tables[0].inserts[0][0])


def test_transactions_round_trip_and_are_checked():
    tc = TableChanges("t", ("k", "v"), ("k",), deletes=[(1,)], inserts=[(2, "a")],
                      updates=[(3, "b")], transactions=[7, 9, 9], own_deletes=[(4,), (5,)])
    back = wire.decode(wire.encode(DownloadBatch([tc], {}, b"", False)), DownloadBatch)
    assert back.tables[0].transactions == [7, 9, 9]
    assert back.tables[0].own_deletes == [(4,), (5,)] and len(back.tables[0]) == 3
    with pytest.raises(WireError, match=r"own_deletes\[0\]"):
        wire.decode(batch_with("1").replace('"reset":false', '"reset":false,'
                                            '"own_deletes":[[1,2]]'), DownloadBatch)
    # Absent (a message that groups nothing): every change stands alone.
    assert wire.decode(batch_with("1"), DownloadBatch).tables[0].transactions == []
    with pytest.raises(WireError, match="one transaction per change"):
        wire.decode(batch_with("1").replace('"reset":false', '"reset":false,'
                                            '"transactions":[1,2]'), DownloadBatch)
    with pytest.raises(WireError, match=r"transactions\[0\]"):
        wire.decode(batch_with("1").replace('"reset":false', '"reset":false,'
                                            '"transactions":[-1]'), DownloadBatch)


def test_a_conflict_keeps_its_transaction():
    c = Conflict(ConflictType.ERRORS_OCCURRED, SyncStage.UPLOADING_CHANGES, "t", {"k": 1},
                 {"k": 1}, None, "x", deferred=True, transaction=42)
    back = wire.decode(wire.encode(UploadResult(0, 1, [c], [])), UploadResult)
    assert back.conflicts[0].transaction == 42 and back.conflicts[0].deferred
