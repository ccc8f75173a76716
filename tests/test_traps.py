"""The traps of DESIGN §5 (all but ALTER / DROP / rebuilds, which
test_schema_changes.py covers): OR REPLACE deleting other rows, OR IGNORE,
UPSERT, key changes, NULLs, composite and WITHOUT ROWID keys, values of every
type, identifiers that need quoting, trusted_schema=OFF, connections without
the extension, the connection's hook slots."""
import math
import sqlite3

import apsw
import pytest

import sqlite_ct
from replica import Replica, table_rows
from sqlhelpers import q, run, val

# Tracking needs a few levels of trigger nesting (a stamping UPDATE inside an
# AFTER INSERT trigger fires the AFTER UPDATE one), never dozens. With a lower
# limit than SQLite's 1000 a runaway recursion fails in milliseconds instead of
# seconds; it fails either way.
TRIGGER_DEPTH = 32


@pytest.fixture(params=["OFF", "ON"])
def recursive(request, conn):
    """PRAGMA recursive_triggers (stock SQLite: off; Debian's build: on)."""
    q(conn, f"PRAGMA recursive_triggers={request.param}")
    assert val(conn, "PRAGMA recursive_triggers") == (request.param == "ON")
    if isinstance(conn, apsw.Connection):
        conn.limit(apsw.SQLITE_LIMIT_TRIGGER_DEPTH, TRIGGER_DEPTH)
    else:
        conn.setlimit(sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH, TRIGGER_DEPTH)
    return request.param


def quote(name):
    return '"' + name.replace('"', '""') + '"'


class Tracked:
    """A tracked table with committed rows, an anchor and a replica in sync
    with it; `changes()` enumerates since the anchor, applies the changes to
    the replica and checks that it converged."""

    def __init__(self, conn, ddl, table, keys, rows=(), before_tracking=False, mode="native"):
        self.conn, self.table, self.keys = conn, table, list(keys)
        run(conn, ddl)
        if before_tracking:
            self.insert(rows)
            sqlite_ct.create_schema(conn, table, mode=mode)
        else:
            sqlite_ct.create_schema(conn, table, mode=mode)
            self.insert(rows)
        self.anchor = sqlite_ct.last_committed_csn(conn)
        self.replica = Replica(self.keys, table_rows(conn, table, self.keys))
        self.tombstones = self.tombstone_count()

    def insert(self, rows):
        for row in rows:
            cols = ", ".join(quote(c) for c in row)
            marks = ", ".join("?" for _ in row)
            q(self.conn, f"INSERT INTO {quote(self.table)}({cols}) VALUES ({marks})",
              tuple(row.values()))

    def tombstone_count(self):
        return val(self.conn, "SELECT count(*) FROM __sysOCSDeletedRows WHERE __sysTName=?",
                   (self.table,))

    def changes(self):
        cs = sqlite_ct.enumerate_changes(self.conn, self.table, self.anchor)
        self.replica.apply(cs)
        assert self.replica.rows == table_rows(self.conn, self.table, self.keys)
        self.anchor = cs.new_anchor
        return cs


def by(key):
    return lambda rows: sorted(rows, key=lambda r: tuple(str(r[k]) for k in key))


UNIQUE_T = "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)"
AB = [{"id": 1, "u": "a", "v": "x"}, {"id": 2, "u": "b", "v": "y"}]


# --------------------------------------------------------------- OR REPLACE

@pytest.mark.parametrize("before_tracking", [False, True], ids=["tracked-rows", "older-rows"])
def test_insert_or_replace_deleting_another_key(conn, recursive, before_tracking):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB, before_tracking)
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'z')")
    assert q(conn, "SELECT id FROM t ORDER BY id") == [(2,), (3,)]
    cs = t.changes()
    assert cs.deletes == [{"id": 1}]
    assert cs.inserts == [{"id": 3, "u": "a", "v": "z"}]
    assert cs.updates == []


def test_insert_or_replace_deleting_two_other_keys(conn, recursive):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, w TEXT UNIQUE)",
                "t", ["id"], [{"id": 1, "u": "a", "w": "p"}, {"id": 2, "u": "b", "w": "q"},
                              {"id": 3, "u": "c", "w": "r"}])
    run(conn, "REPLACE INTO t(id, u, w) VALUES (4, 'a', 'q')")
    cs = t.changes()
    assert by(["id"])(cs.deletes) == [{"id": 1}, {"id": 2}]
    assert cs.inserts == [{"id": 4, "u": "a", "w": "q"}]


def test_insert_or_replace_through_a_composite_unique_index(conn, recursive):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT, UNIQUE(a, b))",
                "t", ["id"], [{"id": 1, "a": "x", "b": "y"}, {"id": 2, "a": "x", "b": "z"},
                              {"id": 3, "a": "x", "b": None}])
    run(conn, "INSERT OR REPLACE INTO t(id, a, b) VALUES (4, 'x', 'y')",
        "INSERT OR REPLACE INTO t(id, a, b) VALUES (5, 'x', NULL)")  # NULLs never conflict
    cs = t.changes()
    assert cs.deletes == [{"id": 1}]
    assert by(["id"])(cs.inserts) == [{"id": 4, "a": "x", "b": "y"},
                                      {"id": 5, "a": "x", "b": None}]


def test_update_or_replace_deleting_another_key(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB + [{"id": 3, "u": "c", "v": "w"}])
    run(conn, "UPDATE OR REPLACE t SET u = 'a' WHERE id = 2")
    assert q(conn, "SELECT id, u FROM t ORDER BY id") == [(2, "a"), (3, "c")]
    cs = t.changes()
    assert cs.deletes == [{"id": 1}]
    assert cs.updates == [{"id": 2, "u": "a", "v": "y"}]
    assert cs.inserts == []


def test_unique_on_conflict_replace_column(conn, recursive):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, "
                      "u TEXT UNIQUE ON CONFLICT REPLACE, v TEXT)",
                "t", ["id"], AB + [{"id": 3, "u": "c", "v": "w"}])
    run(conn, "INSERT INTO t(id, u, v) VALUES (4, 'a', 'z')")   # plain INSERT
    cs = t.changes()
    assert cs.deletes == [{"id": 1}]
    assert cs.inserts == [{"id": 4, "u": "a", "v": "z"}]
    run(conn, "UPDATE t SET u = 'c' WHERE id = 2")              # plain UPDATE
    cs = t.changes()
    assert cs.deletes == [{"id": 3}]
    assert cs.updates == [{"id": 2, "u": "c", "v": "y"}]


@pytest.mark.parametrize("ddl", [UNIQUE_T, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT, v TEXT)"],
                         ids=["with-unique", "key-only"])
def test_insert_or_replace_of_the_same_key(conn, recursive, ddl):
    t = Tracked(conn, ddl, "t", ["id"], AB)
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (1, 'c', 'new')")
    cs = t.changes()
    new = {"id": 1, "u": "c", "v": "new"}
    assert new in cs.inserts + cs.updates
    assert {"id": 2, "u": "b", "v": "y"} not in cs.inserts + cs.updates
    assert cs.deletes in ([], [{"id": 1}])


def test_insert_or_replace_of_the_same_key_and_another(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (1, 'b', 'new')")
    assert q(conn, "SELECT id, u, v FROM t") == [(1, "b", "new")]
    cs = t.changes()
    assert {"id": 2} in cs.deletes
    assert {"id": 1, "u": "b", "v": "new"} in cs.inserts + cs.updates


# ---------------------------------------------------------------- OR IGNORE

@pytest.mark.parametrize("statement", [
    "INSERT OR IGNORE INTO t(id, u, v) VALUES (1, 'q', 'dup-key')",
    "INSERT OR IGNORE INTO t(id, u, v) VALUES (7, 'a', 'dup-unique')",
    "INSERT INTO t(id, u, v) VALUES (7, 'a', 'dup-unique') ON CONFLICT DO NOTHING",
    "UPDATE OR IGNORE t SET u = 'a' WHERE id = 2",
], ids=["insert-key", "insert-unique", "upsert-do-nothing", "update-unique"])
def test_or_ignore_conflict_leaves_no_tombstone_and_no_change(conn, recursive, statement):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    table_before = q(conn, "SELECT * FROM t ORDER BY id")
    log_before = q(conn, "SELECT * FROM __sysTxCommitSequence")
    run(conn, statement)
    assert q(conn, "SELECT * FROM t ORDER BY id") == table_before
    assert q(conn, "SELECT * FROM __sysTxCommitSequence") == log_before
    assert t.tombstone_count() == 0
    cs = t.changes()
    assert len(cs) == 0 and cs.new_anchor == cs.since


def test_or_ignore_conflict_leaves_nothing_for_later_transactions(conn, recursive):
    """The conflicting row the ignored INSERT did not touch is deleted later;
    after that delete was enumerated, nothing more is said about it."""
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB + [{"id": 3, "u": "c", "v": "w"}])
    run(conn, "INSERT OR IGNORE INTO t(id, u, v) VALUES (7, 'a', 'ignored')")
    run(conn, "DELETE FROM t WHERE id = 1")
    assert t.changes().deletes == [{"id": 1}]
    run(conn, "UPDATE t SET v = 'Y' WHERE id = 2")
    cs = t.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [{"id": 2, "u": "b", "v": "Y"}], [])
    assert t.tombstone_count() == 1


def test_or_ignore_conflict_then_server_delete_is_not_echoed(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "INSERT OR IGNORE INTO t(id, u, v) VALUES (7, 'a', 'ignored')")
    with sqlite_ct.applying_server_changes(conn):
        run(conn, "DELETE FROM t WHERE id = 1")
    t.replica.rows.pop((1,))  # the server's delete reached the replica from the server
    run(conn, "UPDATE t SET v = 'Y' WHERE id = 2")
    cs = t.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [{"id": 2, "u": "b", "v": "Y"}], [])


# ------------------------------------------------------------------- UPSERT

@pytest.mark.parametrize("before_tracking", [False, True], ids=["tracked-rows", "older-rows"])
@pytest.mark.parametrize("target", ["id", "u"])
def test_upsert_do_update_is_an_update(conn, recursive, target, before_tracking):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB, before_tracking)
    row = "(1, 'a', 'new')" if target == "id" else "(9, 'a', 'new')"
    run(conn, f"INSERT INTO t(id, u, v) VALUES {row} "
              f"ON CONFLICT({target}) DO UPDATE SET v = excluded.v")
    cs = t.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [{"id": 1, "u": "a", "v": "new"}], [])
    assert t.tombstone_count() == 0


def test_upsert_without_conflict_is_an_insert(conn, recursive):
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB)
    run(conn, "INSERT INTO t(id, u, v) VALUES (3, 'c', 'z') "
              "ON CONFLICT(id) DO UPDATE SET v = excluded.v")
    cs = t.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([{"id": 3, "u": "c", "v": "z"}], [], [])


# ---------------------------------------------------------- key changes

KEY_SHAPES = {
    "integer-primary-key": ("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", ["id"],
                            {"id": 1}, {"id": 10}, {"id": 2}),
    "text-key": ("CREATE TABLE t(k TEXT PRIMARY KEY, v TEXT)", ["k"],
                 {"k": "a"}, {"k": "z"}, {"k": "b"}),
    "composite": ("CREATE TABLE t(a INTEGER, b TEXT, v TEXT, PRIMARY KEY(a, b))", ["a", "b"],
                  {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}),
    "without-rowid": ("CREATE TABLE t(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID", ["k"],
                      {"k": "a"}, {"k": "z"}, {"k": "b"}),
    # key order differs from column order
    "without-rowid-composite": (
        "CREATE TABLE t(a BLOB, b INTEGER, v TEXT, PRIMARY KEY(b, a)) WITHOUT ROWID", ["b", "a"],
        {"a": b"\x00k", "b": 1}, {"a": b"\x00k", "b": 7}, {"a": b"", "b": 1}),
}


def assignments(key):
    return ", ".join(f"{quote(c)} = ?" for c in key), tuple(key.values())


def where(key):
    return " AND ".join(f"{quote(c)} = ?" for c in key), tuple(key.values())


@pytest.mark.parametrize("shape", list(KEY_SHAPES))
def test_update_changing_the_primary_key(conn, shape):
    ddl, keys, old, new, other = KEY_SHAPES[shape]
    t = Tracked(conn, ddl, "t", keys, [dict(old, v="moved"), dict(other, v="stays")])
    sets, set_args = assignments(new)
    cond, cond_args = where(old)
    q(conn, f"UPDATE t SET {sets} WHERE {cond}", set_args + cond_args)
    cs = t.changes()
    assert cs.deletes == [{k: old[k] for k in keys}]
    assert cs.inserts == [dict(new, v="moved")]
    assert cs.updates == []
    assert list(cs.deletes[0]) == keys  # key columns in PRIMARY KEY order


@pytest.mark.parametrize("shape", list(KEY_SHAPES))
def test_insert_update_delete_by_key_shape(conn, shape):
    ddl, keys, old, new, other = KEY_SHAPES[shape]
    t = Tracked(conn, ddl, "t", keys, [dict(old, v="one"), dict(other, v="two")])
    t.insert([dict(new, v="three")])
    cond, args = where(old)
    q(conn, f"UPDATE t SET v = 'ONE' WHERE {cond}", args)
    cond, args = where(other)
    q(conn, f"DELETE FROM t WHERE {cond}", args)
    cs = t.changes()
    assert [{k: r[k] for k in keys} for r in cs.inserts] == [{k: new[k] for k in keys}]
    assert [r["v"] for r in cs.updates] == ["ONE"]
    assert cs.deletes == [{k: other[k] for k in keys}]


def test_key_changed_twice_in_one_transaction(conn):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}])
    run(conn, "BEGIN", "UPDATE t SET id = 5 WHERE id = 1", "UPDATE t SET id = 9 WHERE id = 5",
        "COMMIT")
    cs = t.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([{"id": 9, "v": "a"}], [], [{"id": 1}])


def test_delete_and_reinsert_of_a_key_in_one_transaction(conn):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}])
    run(conn, "BEGIN", "DELETE FROM t WHERE id = 1", "INSERT INTO t(id, v) VALUES (1, 'b')",
        "DELETE FROM t WHERE id = 1", "INSERT INTO t(id, v) VALUES (1, 'c')", "COMMIT")
    cs = t.changes()
    assert cs.deletes == [{"id": 1}]
    assert cs.inserts == [{"id": 1, "v": "c"}]


@pytest.mark.parametrize("policy", ["REPLACE", "ABORT", "FAIL", "ROLLBACK", "IGNORE"])
def test_second_delete_of_a_key_under_an_outer_conflict_policy(conn, recursive, policy):
    """The second tombstone of one key in one transaction merges into the first
    (keeping the older insert BSN) even when the statement that fired the
    trigger carries an OR clause, which SQLite applies to the statements
    inside triggers: here a user trigger deletes, under INSERT OR <policy>."""
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}])
    run(conn, "CREATE TABLE cmd(id INTEGER)",
        "CREATE TRIGGER cmd_delete AFTER INSERT ON cmd BEGIN"
        " DELETE FROM t WHERE id = NEW.id; END")
    original = val(conn, "SELECT __sysInsertTxBsn FROM t WHERE id = 1")
    run(conn, "BEGIN", "DELETE FROM t WHERE id = 1", "INSERT INTO t(id, v) VALUES (1, 'b')",
        f"INSERT OR {policy} INTO cmd VALUES (1)", "COMMIT")
    assert q(conn, "SELECT __sysInsertTxCsn FROM __sysOCSDeletedRows") == [(original,)]
    cs = t.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [], [{"id": 1}])


def test_second_delete_of_a_key_by_insert_or_replace(conn, recursive):
    """Under recursive_triggers the rows OR REPLACE deletes fire the DELETE
    trigger inside the INSERT OR REPLACE."""
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)", "t",
                ["id"], [{"id": 1, "u": "a", "v": "x"}])
    original = val(conn, "SELECT __sysInsertTxBsn FROM t WHERE id = 1")
    run(conn, "BEGIN", "DELETE FROM t WHERE id = 1",
        "INSERT INTO t(id, u, v) VALUES (1, 'a', 'y')",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (2, 'a', 'z')", "COMMIT")
    assert q(conn, "SELECT __sysRK, __sysInsertTxCsn FROM __sysOCSDeletedRows") == [
        (sqlite_ct.pack_key(conn, "t", [1]), original)]
    cs = t.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([{"id": 2, "u": "a", "v": "z"}], [],
                                                    [{"id": 1}])


COPY_TRIGGER = ("CREATE TRIGGER user_copy BEFORE INSERT ON t WHEN NEW.v = 'copy' BEGIN"
                " INSERT OR REPLACE INTO t(id, u, v) VALUES (NEW.id + 100, NEW.u || '-copy',"
                " 'inner'); END")


@pytest.mark.parametrize("mode", ["native", "portable"])
@pytest.mark.parametrize("order", ["user-trigger-newer", "user-trigger-older",
                                   "user-trigger-newer-then-anchored"])
def test_insert_or_replace_with_a_user_trigger_inserting_into_the_same_table(
        request, conn, recursive, order, mode):
    """A user BEFORE INSERT trigger that inserts into the same tracked table.
    SQLite fires the newest trigger first; sqlite-ct's are the newest when
    create_schema() ran after the user's trigger was created, and again after
    any call that writes tracking metadata, such as set_sent_anchor() (which
    puts them first). Then the user trigger's insert
    runs between sqlite-ct's BEFORE and AFTER INSERT triggers of the outer row.
    Native mode (layout 5) captures the rows the outer OR REPLACE deletes
    with the capture index, after the BEFORE triggers ran. Known limit of
    portable mode (README): with recursive_triggers off the inner insert clears
    the rows the outer OR REPLACE is about to delete from the portable
    triggers' memory, and their delete is never recorded."""
    if order != "user-trigger-newer" and recursive == "OFF" and mode == "portable":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "known limit: OR REPLACE victims lost when a user BEFORE INSERT trigger"
            " inserts into the same table between sqlite-ct's triggers")))
    if order == "user-trigger-older":
        run(conn, UNIQUE_T)
        t = Tracked(conn, COPY_TRIGGER, "t", ["id"], AB, mode=mode)
    else:
        t = Tracked(conn, UNIQUE_T, "t", ["id"], AB, mode=mode)
        run(conn, COPY_TRIGGER)
        if order == "user-trigger-newer-then-anchored":
            sqlite_ct.set_sent_anchor(conn, "t", t.changes().new_anchor)
    run(conn, "INSERT OR REPLACE INTO t(id, u, v) VALUES (3, 'a', 'copy')")
    assert q(conn, "SELECT id FROM t ORDER BY id") == [(2,), (3,), (103,)]
    cs = t.changes()
    assert cs.deletes == [{"id": 1}]
    assert sorted(cs.inserts, key=lambda r: r["id"]) == [
        {"id": 3, "u": "a", "v": "copy"}, {"id": 103, "u": "a-copy", "v": "inner"}]


# ------------------------------------------------------------------- NULLs

def test_null_transitions_of_values(conn):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "x"}, {"id": 2, "v": None}, {"id": 3, "v": None},
                 {"id": 4, "v": None}])
    run(conn, "UPDATE t SET v = NULL WHERE id = 1")   # value -> NULL
    assert t.changes().updates == [{"id": 1, "v": None}]
    run(conn, "UPDATE t SET v = 'y' WHERE id = 2")    # NULL -> value
    assert t.changes().updates == [{"id": 2, "v": "y"}]
    # NULL -> NULL: an UPDATE statement still marks the row (as SQL CE did)
    run(conn, "UPDATE t SET v = NULL WHERE id = 3")
    cs = t.changes()
    assert (cs.inserts, cs.updates, cs.deletes) == ([], [{"id": 3, "v": None}], [])
    # a statement that matches no row (v = NULL is never true) changes nothing
    run(conn, "UPDATE t SET v = 'z' WHERE v = NULL")
    assert len(t.changes()) == 0


@pytest.mark.parametrize("transition", ["value-to-null", "null-to-value", "null-to-null"])
def test_null_transitions_of_a_nullable_key(conn, transition):
    # a rowid table's non-INTEGER PRIMARY KEY accepts NULL (an SQLite quirk)
    t = Tracked(conn, "CREATE TABLE t(k TEXT PRIMARY KEY, v TEXT)", "t", ["k"],
                [{"k": "a", "v": "1"}, {"k": None, "v": "2"}])
    if transition == "value-to-null":
        run(conn, "DELETE FROM t WHERE k IS NULL")
        t.changes()
        run(conn, "UPDATE t SET k = NULL WHERE k = 'a'")
        cs = t.changes()
        assert (cs.inserts, cs.updates, cs.deletes) == ([{"k": None, "v": "1"}], [], [{"k": "a"}])
    elif transition == "null-to-value":
        run(conn, "UPDATE t SET k = 'b' WHERE k IS NULL")
        cs = t.changes()
        assert (cs.inserts, cs.updates, cs.deletes) == ([{"k": "b", "v": "2"}], [], [{"k": None}])
    else:
        run(conn, "UPDATE t SET k = NULL, v = '3' WHERE k IS NULL")
        cs = t.changes()
        assert (cs.inserts, cs.updates, cs.deletes) == ([], [{"k": None, "v": "3"}], [])


# ------------------------------------------------------------ value types

KEY_VALUES = {
    "int-zero": 0, "int-one": 1, "int-minus-one": -1,
    "int64-max": 2**63 - 1, "int64-min": -2**63,
    "text": "key", "text-empty": "", "text-nul-bytes": "a\x00b\x00", "text-unicode": "ünï\u2603😀",
    "blob": b"\x00\x01\xff", "blob-empty": b"", "blob-1mb": bytes(range(256)) * 4096,
    "real": 0.5, "real-minus-zero": -0.0, "real-inf": math.inf, "real-minus-inf": -math.inf,
    "real-integral": 3.0, "real-tiny": 5e-324,
}


def same_value(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


@pytest.mark.parametrize("name", list(KEY_VALUES))
@pytest.mark.parametrize("ddl", ["CREATE TABLE t(k PRIMARY KEY, v)",
                                 "CREATE TABLE t(k PRIMARY KEY, v) WITHOUT ROWID"],
                         ids=["rowid", "without-rowid"])
def test_key_values_of_every_type(conn, ddl, name):
    value = KEY_VALUES[name]
    t = Tracked(conn, ddl, "t", ["k"], [{"k": value, "v": 1}, {"k": "other", "v": 2}])
    assert same_value(q(conn, "SELECT k FROM t WHERE v = 1")[0][0], value)

    run(conn, "UPDATE t SET v = 10 WHERE v = 1")
    cs = t.changes()
    assert len(cs.updates) == 1 and same_value(cs.updates[0]["k"], value)

    run(conn, "DELETE FROM t WHERE v = 10")
    cs = t.changes()
    assert len(cs.deletes) == 1 and list(cs.deletes[0]) == ["k"]
    assert same_value(cs.deletes[0]["k"], value)

    packed = sqlite_ct.pack_key(conn, "t", [value])
    assert q(conn, "SELECT __sysRK FROM __sysOCSDeletedRows") == [(packed,)]
    (back,) = sqlite_ct.unpack_key(conn, "t", packed)
    assert same_value(back, value)


@pytest.mark.parametrize("value", [0, 1, -1, 2**63 - 1, -2**63], ids=str)
def test_integer_primary_key_extremes(conn, value):
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": value, "v": "a"}])
    run(conn, "DELETE FROM t")
    assert t.changes().deletes == [{"id": value}]
    assert sqlite_ct.unpack_key(conn, "t", sqlite_ct.pack_key(conn, "t", [value])) == (value,)


# ------------------------------------------------------------- identifiers

IDENTIFIERS = {
    "double-quote": ('a"b', 'with space', 'ünï', 'a""b'),
    "space": ("with space", "key col", "uniq col", "val col"),
    "unicode": ("ünï", "ключ", "独特", "värde"),
    "single-quote": ("it's", "it's key", "o'u", "v'v"),
    "rowid-named-key": ("t", "rowid", "u", "v"),
    "sql-keywords": ("select", "from", "where", "order"),
}


@pytest.mark.parametrize("names", list(IDENTIFIERS))
def test_identifiers_that_need_quoting(conn, recursive, names):
    table, key, uniq, value = IDENTIFIERS[names]
    key_type = "TEXT" if key == "rowid" else "INTEGER"
    ddl = (f"CREATE TABLE {quote(table)}({quote(key)} {key_type} PRIMARY KEY, "
           f"{quote(uniq)} TEXT UNIQUE, {quote(value)} TEXT)")
    k = (lambda i: f"k{i}") if key_type == "TEXT" else (lambda i: i)
    t = Tracked(conn, ddl, table, [key],
                [{key: k(1), uniq: "a", value: "x"}, {key: k(2), uniq: "b", value: "y"},
                 {key: k(3), uniq: "c", value: "z"}])
    T, K, U, V = map(quote, (table, key, uniq, value))
    q(conn, f"INSERT INTO {T}({K}, {U}, {V}) VALUES (?, 'd', 'w')", (k(4),))
    q(conn, f"UPDATE {T} SET {V} = 'Y' WHERE {K} = ?", (k(2),))
    q(conn, f"DELETE FROM {T} WHERE {K} = ?", (k(3),))
    q(conn, f"UPDATE {T} SET {K} = ? WHERE {K} = ?", (k(5), k(4)))
    q(conn, f"INSERT OR REPLACE INTO {T}({K}, {U}, {V}) VALUES (?, 'a', 'r')", (k(6),))
    cs = t.changes()
    assert by([key])(cs.deletes) == [{key: k(1)}, {key: k(3)}]
    assert by([key])(cs.inserts) == [{key: k(5), uniq: "d", value: "w"},
                                     {key: k(6), uniq: "a", value: "r"}]
    assert cs.updates == [{key: k(2), uniq: "b", value: "Y"}]
    assert sqlite_ct.tracked_tables(conn) == [table]
    assert sqlite_ct.unpack_key(conn, table, sqlite_ct.pack_key(conn, table, [k(7)])) == (k(7),)


@pytest.mark.parametrize("mode", ["native", "portable"])
def test_columns_shadowing_rowid_oid_and__rowid_(conn, mode):
    """Every alias of the rowid is a user column: the triggers must still find
    the row they stamp, and only that row (all rows share the oid value)."""
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, rowid TEXT, _rowid_ TEXT, "
                      "oid TEXT, u TEXT UNIQUE)", "t", ["id"],
                [{"id": 1, "rowid": "r", "_rowid_": "s", "oid": "o", "u": "a"},
                 {"id": 2, "rowid": "r", "_rowid_": "s", "oid": "o", "u": "b"},
                 {"id": 5, "rowid": "r", "_rowid_": "s", "oid": "o", "u": "e"}], mode=mode)
    run(conn, "INSERT INTO t(id, rowid, _rowid_, oid, u) VALUES (3, 'r', 's', 'o', 'c')",
        "UPDATE t SET oid = 'p' WHERE id = 1",
        "INSERT OR REPLACE INTO t(id, rowid, _rowid_, oid, u) VALUES (4, 'r', 's', 'o', 'b')")
    cs = t.changes()
    assert [r["id"] for r in by(["id"])(cs.inserts)] == [3, 4]
    assert [r["id"] for r in cs.updates] == [1]
    assert cs.deletes == [{"id": 2}]
    stamps = q(conn, "SELECT id, __sysChangeTxBsn FROM t ORDER BY id")
    assert all(bsn is not None and bsn > 0 for _, bsn in stamps), stamps


# ----------------------------------------------------- trusted_schema=OFF

def test_trusted_schema_off(conn, recursive):
    run(conn, "PRAGMA trusted_schema=OFF")
    assert val(conn, "PRAGMA trusted_schema") == 0
    t = Tracked(conn, UNIQUE_T, "t", ["id"], AB + [{"id": 3, "u": "c", "v": "w"}])
    run(conn, "INSERT INTO t(id, u, v) VALUES (4, 'd', 'new')",
        "UPDATE t SET v = 'Y' WHERE id = 2",
        "DELETE FROM t WHERE id = 3",
        "UPDATE t SET id = 5 WHERE id = 4",
        "INSERT OR REPLACE INTO t(id, u, v) VALUES (6, 'a', 'r')")
    cs = t.changes()
    assert by(["id"])(cs.deletes) == [{"id": 1}, {"id": 3}]
    assert by(["id"])(cs.inserts) == [{"id": 5, "u": "d", "v": "new"},
                                      {"id": 6, "u": "a", "v": "r"}]
    assert cs.updates == [{"id": 2, "u": "b", "v": "Y"}]


# -------------------------------------------- connections without sqlite-ct

@pytest.mark.parametrize("ddl", [UNIQUE_T, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT, v TEXT)"],
                         ids=["with-unique", "key-only"])
@pytest.mark.parametrize("statement", [
    "INSERT INTO t(id, u, v) VALUES (9, 'n', 'new')",
    "INSERT OR REPLACE INTO t(id, u, v) VALUES (1, 'n', 'new')",
    "UPDATE t SET v = 'changed' WHERE id = 1",
    "UPDATE t SET id = 7 WHERE id = 1",
    "DELETE FROM t WHERE id = 1",
], ids=["insert", "replace", "update", "update-key", "delete"])
def test_connection_without_the_extension_cannot_write(apsw_conn, db_path, ddl, statement):
    Tracked(apsw_conn, ddl, "t", ["id"], AB)
    snapshot = [q(apsw_conn, f"SELECT * FROM {name}") for name in
                ("t", "__sysTxCommitSequence", "__sysOCSDeletedRows")]
    plain = apsw.Connection(db_path)
    try:
        with pytest.raises(apsw.Error) as exc:
            plain.execute(statement)
        assert "sqlite_ct" in str(exc.value)
        assert plain.get_autocommit()
    finally:
        plain.close()
    assert [q(apsw_conn, f"SELECT * FROM {name}") for name in
            ("t", "__sysTxCommitSequence", "__sysOCSDeletedRows")] == snapshot


# ------------------------------------------------------- the hook slots

def test_user_commit_and_rollback_hooks_do_not_disturb_numbering(apsw_conn):
    conn = apsw_conn
    seen = []

    def on_commit() -> bool:
        seen.append("commit")
        return False  # let the commit proceed

    conn.set_commit_hook(on_commit)
    conn.set_rollback_hook(lambda: seen.append("rollback"))
    t = Tracked(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "t", ["id"],
                [{"id": 1, "v": "a"}])
    first = sqlite_ct.last_committed_csn(conn)
    run(conn, "BEGIN", "INSERT INTO t(id, v) VALUES (2, 'gone')", "ROLLBACK")
    run(conn, "INSERT INTO t(id, v) VALUES (3, 'c')")
    run(conn, "UPDATE t SET v = 'A' WHERE id = 1")
    assert "commit" in seen and "rollback" in seen
    bsns = [r[0] for r in q(conn, "SELECT __sysTxCsn FROM __sysTxCommitSequence "
                                  "WHERE __sysTxCsn > ? ORDER BY 1", (first,))]
    assert bsns == [first + 1, first + 2]
    cs = t.changes()
    assert (cs.inserts, cs.updates) == ([{"id": 3, "v": "c"}], [{"id": 1, "v": "A"}])


@pytest.mark.parametrize("mode", ["native", "portable"])
@pytest.mark.parametrize("recursive", ["OFF", "ON"])
def test_replace_through_a_unique_index_with_its_own_collation(conn, mode, recursive):
    """The index decides what conflicts: UNIQUE(u COLLATE NOCASE) on a BINARY
    column makes 'A' displace 'a', and that row must reach the tombstones."""
    run(conn, f"PRAGMA recursive_triggers={recursive}",
        "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT)",
        "CREATE UNIQUE INDEX t_u ON t(u COLLATE NOCASE)",
        "INSERT INTO t(id, u) VALUES (1, 'a')")
    sqlite_ct.create_schema(conn, "t", mode=mode)
    since = sqlite_ct.last_committed_csn(conn)
    run(conn, "INSERT OR REPLACE INTO t(id, u) VALUES (2, 'A')")
    changes = sqlite_ct.enumerate_changes(conn, "t", since)
    assert (changes.inserts, changes.updates, changes.deletes) == (
        [{"id": 2, "u": "A"}], [], [{"id": 1}])
