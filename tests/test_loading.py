"""Building and loading the extension, in every host: apsw, the stdlib sqlite3
(with and without enable_load_extension), and the sqlite3 shell."""
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import apsw
import pytest

import sqlite_ct
from sqlite_ct import loader
from sqlite_ct._version import __version__
from sqlite_ct.errors import Error, ExtensionError

SYSTEM_PYTHON = "/usr/bin/python3"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.dirname(os.path.abspath(sqlite_ct.__file__))


def package_only_path(tmp_path) -> str:
    """A directory holding nothing but the sqlite_ct package under test, for
    PYTHONPATH: another interpreter then sees this package and none of the
    test interpreter's site-packages (no apsw, no cffi)."""
    root = tmp_path / "pythonpath"
    root.mkdir()
    (root / "sqlite_ct").symlink_to(PACKAGE_DIR, target_is_directory=True)
    return str(root)


def run_python(python, script, tmp_path):
    """Run `script` under `python` with only sqlite_ct on PYTHONPATH; the
    script prints one JSON document, which is returned."""
    env = dict(os.environ, PYTHONPATH=package_only_path(tmp_path))
    env.pop("PYTHONHOME", None)
    proc = subprocess.run(
        [python, "-c", textwrap.dedent(script)], env=env, cwd=str(tmp_path),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def system_python_can_load_extensions() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c",
         "import sqlite3; sqlite3.Connection.enable_load_extension"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return proc.returncode == 0


def load_switch(conn) -> int:
    return conn.config(apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, -1)


# --- the library file -------------------------------------------------------

def test_loadable_path_is_the_library_inside_the_package():
    path = loader.loadable_path()
    assert os.path.isabs(path)
    assert os.path.isfile(path)
    assert os.path.dirname(path) == os.path.realpath(PACKAGE_DIR)
    assert os.path.basename(path) == "sqlitect.so"


@pytest.mark.skipif(shutil.which("nm") is None, reason="nm (binutils) is not installed")
def test_library_exports_only_the_entry_point(ext_path):
    proc = subprocess.run(["nm", "-D", "--defined-only", ext_path],
                          capture_output=True, text=True, check=True)
    symbols = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        symbols[fields[-1]] = fields[-2]
    # Symbols older linkers add to every shared object; none is ours.
    for name in ("_init", "_fini", "_edata", "_end", "__bss_start"):
        symbols.pop(name, None)
    assert symbols == {"sqlite3_sqlitect_init": "T"}


# --- apsw --------------------------------------------------------------------

def test_apsw_connection_gets_the_extension(apsw_conn):
    assert apsw_conn.execute("SELECT sqlite_ct_version()").fetchone()[0] == __version__
    layout = apsw_conn.execute("SELECT sqlite_ct_layout_version()").fetchone()[0]
    assert isinstance(layout, int)
    assert loader.is_loaded(apsw_conn)


def test_extension_version_is_the_package_version(apsw_conn):
    assert sqlite_ct.__version__ == __version__
    assert apsw_conn.execute("SELECT sqlite_ct_version()").fetchone()[0] == sqlite_ct.__version__


def test_version_mismatch_message():
    with pytest.raises(ExtensionError) as info:
        loader._check_version("0.0.0-other")
    assert str(info.value) == (
        f"sqlite-ct: extension version 0.0.0-other does not match the Python "
        f"package version {__version__}; reinstall sqlite-ct")


def test_is_loaded_only_after_load():
    conn = apsw.Connection(":memory:")
    try:
        assert not loader.is_loaded(conn)
        loader.load(conn)
        assert loader.is_loaded(conn)
    finally:
        conn.close()


def test_loading_twice_is_harmless(apsw_conn):
    loader.load(apsw_conn)
    loader.load(apsw_conn)
    assert apsw_conn.execute("SELECT sqlite_ct_version()").fetchone()[0] == __version__


def test_apsw_load_switch_is_switched_back_off():
    conn = apsw.Connection(":memory:")
    try:
        assert load_switch(conn) == 0
        loader.load(conn)
        assert load_switch(conn) == 0
        with pytest.raises(apsw.Error, match="not authorized"):
            conn.load_extension(loader.loadable_path())
        with pytest.raises(apsw.Error, match="not authorized"):
            conn.execute("SELECT load_extension('anything')")
    finally:
        conn.close()


def test_apsw_load_switch_left_on_when_it_was_on():
    conn = apsw.Connection(":memory:")
    try:
        conn.enable_load_extension(True)
        loader.load(conn)
        assert load_switch(conn) == 1
        with pytest.raises(apsw.Error) as info:
            conn.execute("SELECT load_extension('/nonexistent/sqlite-ct-test')")
        assert "not authorized" not in str(info.value)
    finally:
        conn.close()


def test_load_rejects_other_objects():
    with pytest.raises(TypeError) as info:
        loader.load(object())
    assert str(info.value) == (
        "sqlite-ct: expected an apsw.Connection or a sqlite3.Connection, "
        "got builtins.object")


# --- stdlib sqlite3 ------------------------------------------------------------

@pytest.mark.skipif(not system_python_can_load_extensions(),
                    reason=f"{SYSTEM_PYTHON} is missing or its sqlite3 has no "
                           f"enable_load_extension (Debian's python3 package has it)")
def test_stdlib_sqlite3_load_restores_the_switch(tmp_path):
    result = run_python(SYSTEM_PYTHON, """
        import json, sqlite3, sys
        import sqlite_ct
        from sqlite_ct import loader

        off = sqlite3.connect(":memory:")
        loader.load(off)
        loader.load(off)                      # twice
        version = off.execute("SELECT sqlite_ct_version()").fetchone()[0]
        try:
            off.load_extension(loader.loadable_path())
            after_off = "loaded"
        except sqlite3.OperationalError as exc:
            after_off = str(exc)

        on = sqlite3.connect(":memory:")
        on.enable_load_extension(True)
        loader.load(on)
        try:
            on.load_extension("/nonexistent/sqlite-ct-test")
            after_on = "loaded"
        except sqlite3.OperationalError as exc:
            after_on = str(exc)

        print(json.dumps({
            "version": version, "after_off": after_off, "after_on": after_on,
            "imported": sorted(m for m in ("apsw", "cffi") if m in sys.modules),
        }))
    """, tmp_path)
    assert result["version"] == __version__
    assert result["after_off"] == "not authorized"
    assert "not authorized" not in result["after_on"]
    assert result["imported"] == []


def test_register_auto_extension_in_a_fresh_interpreter(tmp_path):
    result = run_python(sys.executable, """
        import json, sqlite3
        from sqlite_ct import loader

        before = sqlite3.connect(":memory:")
        loader.register_auto_extension()
        loader.register_auto_extension()      # twice
        conn = sqlite3.connect(":memory:")
        loader.load(conn)                     # already there: checks the version
        print(json.dumps({
            "version": conn.execute("SELECT sqlite_ct_version()").fetchone()[0],
            "before": loader.is_loaded(before),
        }))
    """, tmp_path)
    assert result == {"version": __version__, "before": False}


@pytest.mark.skipif(hasattr(sqlite3.Connection, "enable_load_extension"),
                    reason="this interpreter's sqlite3 can load extensions")
def test_load_without_enable_load_extension_names_the_fix(tmp_path):
    result = run_python(sys.executable, """
        import json, sqlite3
        from sqlite_ct import loader
        from sqlite_ct.errors import ExtensionError

        try:
            loader.load(sqlite3.connect(":memory:"))
            message = None
        except ExtensionError as exc:
            message = str(exc)
        print(json.dumps(message))
    """, tmp_path)
    assert result == (
        "sqlite-ct: this Python's sqlite3 module cannot load extensions "
        "(sqlite3.Connection has no enable_load_extension); call "
        "sqlite_ct.register_auto_extension() before opening the connection, or use "
        "a Python whose sqlite3 can, such as Debian's /usr/bin/python3")


def test_extension_error_is_a_sqlite_ct_error():
    assert issubclass(ExtensionError, Error)


def test_sqlite3_fixture_has_the_extension(sqlite3_conn):
    assert sqlite3_conn.execute("SELECT sqlite_ct_version()").fetchone()[0] == __version__


@pytest.mark.skipif(apsw.sqlite_lib_version() == sqlite3.sqlite_version,
                    reason="apsw and the stdlib use the same SQLite version here, "
                           "so a mix-up between them would not show")
def test_each_sqlite_library_gets_its_own_api(apsw_conn, sqlite3_conn):
    # Both connections live in this process; each must call its own SQLite.
    # sqlite_ct_debug() reports sqlite3_libversion() through the API pointer
    # the extension was initialised with.
    def library_version(conn):
        debug = conn.execute("SELECT sqlite_ct_debug()").fetchone()[0]
        return dict(line.split("=", 1) for line in debug.splitlines())["sqlite_lib"]

    assert library_version(apsw_conn) == apsw.sqlite_lib_version()
    assert library_version(sqlite3_conn) == sqlite3.sqlite_version
    assert library_version(apsw_conn) == apsw.sqlite_lib_version()


# --- the sqlite3 shell ---------------------------------------------------------

@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="the sqlite3 shell is not installed")
@pytest.mark.parametrize("suffix", ["without suffix", "with suffix"])
def test_sqlite3_shell_loads_the_library(ext_path, suffix):
    path = os.path.splitext(ext_path)[0] if suffix == "without suffix" else ext_path
    proc = subprocess.run(
        [shutil.which("sqlite3"), "-bail", ":memory:"],
        input=f".load '{path}'\nSELECT sqlite_ct_version();\n",
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == __version__


# --- the build's prerequisite check ----------------------------------------------

@pytest.fixture(scope="module")
def setup_module_():
    path = os.path.join(REPO_ROOT, "setup.py")
    if not os.path.exists(path):
        pytest.skip("setup.py is not here (tests run against an installed package)")
    spec = importlib.util.spec_from_file_location("sqlite_ct_setup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # setup() runs only under __main__
    return module


def test_build_names_the_package_when_sqlite3ext_h_is_missing(setup_module_, tmp_path):
    with pytest.raises(setup_module_.PrerequisiteError) as info:
        setup_module_.check_prerequisites(["gcc"], [str(tmp_path), "csrc"])
    assert str(info.value) == (
        "sqlite-ct: building the SQLite extension needs the SQLite headers "
        f"(sqlite3ext.h), which were not found in {tmp_path}{os.pathsep}csrc; install "
        "them (Debian/Ubuntu: apt-get install libsqlite3-dev), or point "
        "CFLAGS=-I<dir> at the directory that holds sqlite3ext.h")


def test_build_names_the_package_when_the_compiler_is_missing(setup_module_):
    with pytest.raises(setup_module_.PrerequisiteError) as info:
        setup_module_.check_prerequisites(["no-such-cc-for-sqlite-ct"], ["/usr/include"])
    assert str(info.value) == (
        "sqlite-ct: building the SQLite extension needs a C compiler, and "
        "'no-such-cc-for-sqlite-ct' was not found; install gcc "
        "(Debian/Ubuntu: apt-get install build-essential)")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_build_finds_sqlite3ext_h_where_gcc_looks(setup_module_):
    dirs = setup_module_.compiler_search_dirs(["gcc"])
    assert dirs, "gcc -E -v printed no include search list"
    if not any(os.path.isfile(os.path.join(d, "sqlite3ext.h")) for d in dirs):
        pytest.skip("libsqlite3-dev is not installed")
    setup_module_.check_prerequisites(["gcc"], dirs)


@pytest.mark.parametrize("factory", [bytes, bytearray, lambda b: 7])
def test_a_text_factory_that_does_not_give_str_is_refused_with_a_clear_error(factory):
    """A stdlib connection whose TEXT comes back as bytes made sqlite-ct
    misread its own names (check() called every tracked table missing,
    tracked_tables() listed bytes) or fail with a bare TypeError."""
    sqlite_ct.register_auto_extension()
    conn = sqlite3.connect(":memory:", isolation_level=None)
    sqlite_ct.load(conn)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t")
    conn.execute("INSERT INTO t(v) VALUES ('a')")
    conn.text_factory = factory
    message = (f"sqlite-ct: this connection's text_factory ({factory!r}) does not return"
               " str; sqlite-ct reads names and keys as text: set conn.text_factory = str,"
               " or use another connection for sqlite-ct's calls")
    for call in (lambda: sqlite_ct.tracked_tables(conn), lambda: sqlite_ct.check(conn),
                 lambda: sqlite_ct.enumerate_changes(conn, "t", 0)):
        with pytest.raises(sqlite_ct.ExtensionError) as exc:
            call()
        assert str(exc.value) == message
    conn.text_factory = lambda b: b.decode("utf-8", "replace")    # gives str: fine
    assert sqlite_ct.tracked_tables(conn) == ["t"]
    assert sqlite_ct.check(conn) == []
    assert sqlite_ct.enumerate_changes(conn, "t", 0).inserts == [{"id": 1, "v": "a"}]
    conn.close()
