"""The extension's whole SQL surface, pinned: every function name, its number
of arguments and its flags (the registration table in csrc/ext.c). A change
to the surface must change this file too."""
import os
import re

import pytest

import sqlite_ct
from sqlhelpers import HOST_ERRORS, q


DETERMINISTIC = 0x000000800
DIRECTONLY = 0x000080000
INNOCUOUS = 0x000200000
FLAG_MASK = DETERMINISTIC | DIRECTONLY | INNOCUOUS

PURE = INNOCUOUS | DETERMINISTIC

# (name, number of arguments) -> flags
SURFACE = {
    ("sqlite_ct_version", 0): INNOCUOUS,
    ("sqlite_ct_debug", 0): INNOCUOUS,
    ("sqlite_ct_layout_version", 0): INNOCUOUS,
    ("sqlite_ct_check_layout", 0): INNOCUOUS,
    ("sqlite_ct_create_system_tables", 0): DIRECTONLY,
    ("sqlite_ct_create_schema", 1): DIRECTONLY,
    ("sqlite_ct_create_schema", 2): DIRECTONLY,
    ("sqlite_ct_create_schema", 3): DIRECTONLY,
    ("sqlite_ct_disable_tracking", 1): DIRECTONLY,
    ("sqlite_ct_is_tracked", 1): INNOCUOUS,
    ("sqlite_ct_rename_tracking", 2): DIRECTONLY,
    ("sqlite_ct_begin", 1): INNOCUOUS,
    ("sqlite_ct_take_log", 0): INNOCUOUS,
    ("sqlite_ct_bsn", 0): INNOCUOUS,
    ("sqlite_ct_needs_stamp", 8): INNOCUOUS,
    ("sqlite_ct_write_bsn", 2): INNOCUOUS,
    ("sqlite_ct_uncommitted_writes", 0): INNOCUOUS,
    ("sqlite_ct_insert_when", -1): INNOCUOUS,    # layouts 4, 5; newer layouts: LayoutError
    ("sqlite_ct_update_when", -1): INNOCUOUS,    # layout 5; newer layouts: LayoutError
    ("sqlite_ct_delete_when", -1): INNOCUOUS,    # layout 5
    ("sqlite_ct_rekey_when", 4): INNOCUOUS,
    ("sqlite_ct_rekey_when", -1): INNOCUOUS,     # layout 6: NEW.ins and NEW key follow
    ("sqlite_ct_write_bsn", -1): INNOCUOUS,
    ("sqlite_ct_insert_when", 8): INNOCUOUS,     # layout-1 triggers
    ("sqlite_ct_insert_when", 10): INNOCUOUS,
    ("sqlite_ct_update_when", 11): INNOCUOUS,    # layout-1 triggers
    ("sqlite_ct_update_when", 13): INNOCUOUS,
    ("sqlite_ct_default_bsn", 0): INNOCUOUS,
    ("sqlite_ct_victim", 2): INNOCUOUS,
    ("sqlite_ct_stamp_end", 1): INNOCUOUS,
    ("sqlite_ct_stamp_check", 2): INNOCUOUS,   # layout 6
    ("sqlite_ct_tombstone_key_match", 1): INNOCUOUS,
    ("sqlite_ct_current_bsn", 0): INNOCUOUS,
    ("sqlite_ct_last_committed_csn", 0): INNOCUOUS,
    ("sqlite_ct_snapshot", 0): INNOCUOUS,
    ("sqlite_ct_schema_token", 0): INNOCUOUS,
    ("sqlite_ct_changes_sql", 2): INNOCUOUS,
    ("sqlite_ct_local_change", -1): INNOCUOUS,
    ("sqlite_ct_tracking_context", 0): INNOCUOUS,
    ("sqlite_ct_set_tracking_context", 1): DIRECTONLY,
    ("sqlite_ct_apply_mode", 0): INNOCUOUS,
    ("sqlite_ct_set_apply_mode", 1): DIRECTONLY,
    ("sqlite_ct_now", 0): INNOCUOUS,
    ("sqlite_ct_guard", -1): PURE,
    ("sqlite_ct_capture", -1): PURE,
    ("sqlite_ct_pack_key", -1): PURE,
    ("sqlite_ct_unpack_key", 2): PURE,
    ("sqlite_ct_key_count", 1): PURE,
}

# What changes the schema or the connection's settings: top-level SQL only.
ACTIONS = {"sqlite_ct_create_system_tables", "sqlite_ct_create_schema",
           "sqlite_ct_disable_tracking", "sqlite_ct_rename_tracking",
           "sqlite_ct_set_tracking_context", "sqlite_ct_set_apply_mode"}

EXT_C = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "ext.c")
FLAG_NAMES = {"CT_INNOCUOUS": INNOCUOUS, "CT_DIRECT": DIRECTONLY, "CT_PURE": PURE}


def registered(conn):
    """{(name, narg): flags} of the sqlite_ct_* functions on conn."""
    rows = q(conn, "SELECT name, narg, flags FROM pragma_function_list "
                   "WHERE name LIKE 'sqlite\\_ct\\_%' ESCAPE '\\'")
    result = {}
    for name, narg, flags in rows:
        assert (name, narg) not in result, f"{name}/{narg} listed twice"
        result[(name, narg)] = flags & FLAG_MASK
    return result


def test_the_exact_list_of_functions(conn):
    names = {r[0] for r in q(conn, "SELECT DISTINCT name FROM pragma_function_list "
                                   "WHERE name LIKE 'sqlite_ct_%'")}
    assert names == {name for name, _ in SURFACE}
    assert set(registered(conn)) == set(SURFACE)


def test_the_flags_of_every_function(conn):
    assert registered(conn) == SURFACE


@pytest.mark.skipif(not os.path.exists(EXT_C), reason="needs the source tree (csrc/ext.c)")
def test_the_registration_table_in_ext_c_is_what_is_registered(conn):
    with open(EXT_C, encoding="utf-8") as f:
        source = f.read()
    table = source[source.index("aCtFunc[] = {"):]
    table = table[:table.index("};")]
    entries = re.findall(r'\{\s*"(sqlite_ct_\w+)",\s*(-?\d+),\s*(CT_\w+),\s*[01],\s*\w+\s*\}',
                         table)
    assert len(entries) == table.count('"sqlite_ct_')
    from_source = {(name, int(narg)): FLAG_NAMES[flags] for name, narg, flags in entries}
    assert len(from_source) == len(entries)
    assert from_source == registered(conn)


def test_actions_are_directonly_and_nothing_else_is(conn):
    flags = registered(conn)
    assert {name for (name, _), f in flags.items() if f & DIRECTONLY} == ACTIONS
    for (name, _), f in flags.items():
        if name in ACTIONS:
            assert not f & INNOCUOUS and not f & DETERMINISTIC, name
        else:
            assert f & INNOCUOUS, name


def test_only_the_key_codec_the_guard_and_the_capture_are_deterministic(conn):
    """SQLite refuses a partial index whose WHERE calls a function that is not
    deterministic: the guard's and the capture's indexes (schema.c) need the
    flag."""
    assert {name for (name, _), f in registered(conn).items() if f & DETERMINISTIC} == {
        "sqlite_ct_pack_key", "sqlite_ct_unpack_key", "sqlite_ct_key_count",
        "sqlite_ct_guard", "sqlite_ct_capture"}


def test_every_function_the_schema_calls_is_innocuous(conn):
    """The triggers and the stamp columns' DEFAULTs run under trusted_schema=OFF."""
    q(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    sql = " ".join(r[0] for r in q(conn, "SELECT sql FROM sqlite_schema"
                                         " WHERE sql NOT NULL AND (type='trigger' OR tbl_name='t')"))
    called = set(re.findall(r"\b(sqlite_ct_\w+)\s*\(", sql))
    assert {"sqlite_ct_insert_when", "sqlite_ct_update_when", "sqlite_ct_delete_when",
            "sqlite_ct_rekey_when", "sqlite_ct_default_bsn", "sqlite_ct_capture", "sqlite_ct_bsn",
            "sqlite_ct_pack_key", "sqlite_ct_guard"} <= called
    flags = registered(conn)
    for name in called:
        for (fname, _), f in flags.items():
            if fname == name:
                assert f & INNOCUOUS and not f & DIRECTONLY, name


@pytest.mark.parametrize("call", ["sqlite_ct_set_apply_mode(1)",
                                  "sqlite_ct_set_tracking_context(NULL)",
                                  "sqlite_ct_create_system_tables()",
                                  "sqlite_ct_create_schema('t')",
                                  "sqlite_ct_disable_tracking('t')"])
def test_directonly_functions_refuse_to_run_from_a_view(conn, call):
    q(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    q(conn, f"CREATE VIEW planted AS SELECT {call} AS x")
    name = call[:call.index("(")]
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, "SELECT * FROM planted")
    assert str(exc.value) == f"unsafe use of {name}()"
    assert q(conn, "SELECT sqlite_ct_apply_mode()") == [(0,)]


def test_innocuous_functions_run_from_views_and_triggers_under_trusted_schema_off(conn):
    q(conn, "PRAGMA trusted_schema=OFF")
    q(conn, "CREATE TABLE log(at INTEGER, k BLOB)")
    q(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    q(conn, "CREATE TRIGGER t_log AFTER INSERT ON t BEGIN "
            "INSERT INTO log VALUES (sqlite_ct_now(), sqlite_ct_pack_key(NEW.id)); END")
    q(conn, "CREATE VIEW info AS SELECT sqlite_ct_version(), sqlite_ct_is_tracked('t'), "
            "sqlite_ct_key_count(sqlite_ct_pack_key(1, 2))")
    q(conn, "INSERT INTO t VALUES (7)")
    assert q(conn, "SELECT k FROM log") == [(q(conn, "SELECT sqlite_ct_pack_key(7)")[0][0],)]
    assert q(conn, "SELECT * FROM info") == [(sqlite_ct.__version__, 0, 2)]


def test_version_layout_and_debug(conn):
    assert q(conn, "SELECT sqlite_ct_version()") == [(sqlite_ct.__version__,)]
    assert q(conn, "SELECT sqlite_ct_layout_version()") == [(7,)]
    assert q(conn, "SELECT sqlite_ct_check_layout()") == [(0,)]
    q(conn, "SELECT sqlite_ct_create_system_tables()")
    assert q(conn, "SELECT sqlite_ct_check_layout()") == [(7,)]
    debug = dict(line.split("=", 1) for line in
                 q(conn, "SELECT sqlite_ct_debug()")[0][0].splitlines())
    assert debug["version"] == sqlite_ct.__version__
    assert debug["layout"] == "7"
    assert debug["sqlite_lib"] == q(conn, "SELECT sqlite_version()")[0][0]


@pytest.mark.parametrize("sql, message", [
    ("SELECT sqlite_ct_create_schema(NULL)", "sqlite-ct: sqlite_ct_create_schema() needs a table name"),
    ("SELECT sqlite_ct_create_schema('t', 9)", "sqlite-ct: tracking options must be an integer"
     " from 1 to 7 (1 insert, 2 update, 4 delete, 7 all)"),
    ("SELECT sqlite_ct_create_schema('t', 7, 'x')",
     "sqlite-ct: tracking mode must be 'native' or 'portable'"),
    ("SELECT sqlite_ct_disable_tracking(1)", "sqlite-ct: sqlite_ct_disable_tracking() needs a table name"),
])
def test_bad_arguments_are_ordinary_sql_errors(conn, sql, message):
    """SQLITE_ERROR, not SQLITE_MISUSE: Python's sqlite3 turns MISUSE into an
    InterfaceError ("bad parameter or other API misuse") and drops the message."""
    import sqlite3
    q(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, sql)
    assert str(exc.value) == message
    assert not isinstance(exc.value, sqlite3.InterfaceError)


def test_a_table_name_with_a_nul_character_is_refused(conn):
    q(conn, "CREATE TABLE t(id INTEGER PRIMARY KEY)")
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, "SELECT sqlite_ct_create_schema(?)", ("t\x00x",))
    assert str(exc.value) == ("sqlite-ct: sqlite_ct_create_schema(): a table name cannot"
                              " contain a NUL character")
    with pytest.raises(sqlite_ct.TableError):
        sqlite_ct.create_schema(conn, "t\x00x")
    assert not sqlite_ct.is_tracked(conn, "t")


@pytest.mark.parametrize("name", ["malformed tombstone key", "written by a newer sqlite-ct",
                                  'x" is not tracked'])
def test_error_classes_do_not_depend_on_names_in_messages(conn, name):
    """A missing table whose name reads like another message is a TableError."""
    with pytest.raises(sqlite_ct.TableError) as exc:
        sqlite_ct.create_schema(conn, name)
    assert type(exc.value) is sqlite_ct.TableError
    assert str(exc.value) == f'sqlite-ct: no such table: "{name}"'


@pytest.mark.parametrize("call", ["sqlite_ct_insert_when(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)",
                                  # 13 or more: layout 4's and 5's shape (4, 5) is the 11th
                                  "sqlite_ct_insert_when(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 6, 12,"
                                  " 13)",
                                  "sqlite_ct_update_when(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
                                  " 13, 14)",
                                  # 15 or more: layout 5's shape (5) is the 14th
                                  "sqlite_ct_update_when(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
                                  " 13, 6, 15)",
                                  "sqlite_ct_delete_when(1, 2, 3)",
                                  "sqlite_ct_write_bsn(1, 2, 3)"])
def test_triggers_of_a_newer_layout_fail_with_a_layout_error(conn, call):
    """A newer layout's triggers pass more arguments; this build refuses them
    with the newer-layout message (LayoutError), not "wrong number of
    arguments"."""
    from sqlite_ct import _conn
    with pytest.raises(HOST_ERRORS) as exc:
        q(conn, f"SELECT {call}")
    assert isinstance(_conn.translate(exc.value), sqlite_ct.LayoutError)
    assert "upgrade sqlite-ct" in str(exc.value)
