"""Find the sqlite-ct C extension and load it into a connection.

    loadable_path()            the compiled library's file, for `.load` in the
                               sqlite3 shell or any host's load_extension()
    load(conn)                 load it into an apsw or stdlib sqlite3 connection
    is_loaded(conn)            whether the connection has sqlite_ct_version()
    register_auto_extension()  load it into every stdlib sqlite3 connection
                               opened from now on (for Pythons whose sqlite3
                               cannot load extensions)

EXTENSION-LOADING SWITCH: load() turns SQLite's extension-loading switch on
only for its own load and leaves it as it found it. apsw: read and set through
sqlite3_db_config(SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION) (Connection.config
with -1 reads it), which covers the C API only and never enables the SQL
function load_extension(). stdlib sqlite3 on Python 3.12+: the same through
Connection.getconfig()/setconfig(). stdlib sqlite3 before 3.12 has no getter,
so load() asks SQLite: `SELECT load_extension(<a path that does not exist>)`
fails with "not authorized" exactly when the switch is off
(enable_load_extension() sets the C API and the SQL function switch together),
and otherwise fails to find the file. It then uses enable_load_extension() to
turn the switch on and back off. An authorizer that denies load_extension()
makes the switch look off; load() then switches it off after loading.

ONE FILE PER SQLITE LIBRARY: an extension keeps the SQLite API its host gave
it in one global (sqlite3ext.h's sqlite3_api), and every load of the same file
in one process shares that global. apsw carries its own SQLite; the stdlib's
sqlite3 uses another. Loading one file into both would leave the first host's
connections calling the second library's functions on their own handles. So
the first SQLite library in a process gets the installed file and any other
gets a private copy (same file name, so the same entry point) in a temporary
directory removed at exit. This covers load() and register_auto_extension();
loading loadable_path() by hand into two libraries of one process does not get
that protection.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import sys
import tempfile
import threading
from typing import Any, Dict, Optional, Tuple

from ._version import __version__
from .errors import ExtensionError

__all__ = ["loadable_path", "load", "is_loaded", "register_auto_extension"]

_LIB_NAME = "sqlitect"               # SQLite derives sqlite3_sqlitect_init from it
_ENTRY_POINT = "sqlite3_sqlitect_init"
_SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION = 1005
_NO_SUCH_EXTENSION = os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                  "no-such-extension")

_NO_LOAD_EXTENSION = (
    "sqlite-ct: this Python's sqlite3 module cannot load extensions "
    "(sqlite3.Connection has no enable_load_extension); call "
    "sqlite_ct.register_auto_extension() before opening the connection, or use "
    "a Python whose sqlite3 can, such as Debian's /usr/bin/python3")

_lock = threading.RLock()
_host_paths: Dict[str, str] = {}     # SQLite library ("apsw", "sqlite3") -> file loaded into it
_copies_dir: Optional[str] = None
_auto_extension: Optional[Tuple[ctypes.CDLL, ctypes.CDLL]] = None  # kept for the process


def _suffix() -> str:
    if sys.platform == "darwin":
        return ".dylib"
    if sys.platform.startswith(("win", "cygwin")):
        return ".dll"
    return ".so"


def loadable_path() -> str:
    """The absolute path of the compiled extension (…/sqlite_ct/sqlitect.so).

    The sqlite3 shell's `.load` accepts it with or without the suffix and needs
    no entry point. When the imported package has no library (Python imported
    an unbuilt source tree, e.g. `python3 -m sqlite_ct` run from a clone after
    `pip install .`), the library of the installed sqlite-ct distribution of
    the same version is used (see _installed_library). Raises ExtensionError
    when neither exists.
    """
    here = os.path.dirname(os.path.realpath(__file__))
    path = os.path.join(here, _LIB_NAME + _suffix())
    if os.path.isfile(path):
        return path
    installed, note = _installed_library()
    if installed is not None:
        return installed
    raise ExtensionError(
        f"sqlite-ct: the compiled extension {_LIB_NAME + _suffix()} is not in {here}"
        f"{note}; build it in place with `python3 -m pip install -e .` (needs a C "
        f"compiler and SQLite's headers: apt-get install gcc libsqlite3-dev), or "
        f"install sqlite-ct with `python3 -m pip install .` and run Python outside "
        f"the source tree")


def _installed_library() -> Tuple[Optional[str], str]:
    """(path, "") of the library in an installed sqlite-ct distribution, or
    (None, why not) as a clause for the error message.

    Python puts the current directory first on sys.path, so a source checkout
    shadows the installed package; their Python code is the same when their
    versions are, and then the installed library serves the checkout. Another
    version's library would fail the version check in load(), so it is not
    offered. Every distribution named sqlite-ct on sys.path is looked at: the
    first one found can be the checkout's own build metadata
    (sqlite_ct.egg-info), which lists no library."""
    from importlib import metadata

    wanted = f"sqlite_ct/{_LIB_NAME}{_suffix()}"
    versions = []
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name != "sqlite-ct":
            continue
        versions.append(dist.version)
        if dist.version != __version__:
            continue
        for file in dist.files or ():
            if file.as_posix() == wanted:
                path = os.path.realpath(str(dist.locate_file(file)))
                if os.path.isfile(path):
                    return path, ""
    if not versions:
        return None, " (a source tree that was not built), and sqlite-ct is not installed"
    if __version__ not in versions:
        return None, (f", and the installed sqlite-ct is version "
                      f"{', '.join(sorted(set(versions)))}, not {__version__}")
    return None, ", nor in an installed sqlite-ct distribution"


def _host_of(conn: Any) -> str:
    """"apsw" or "sqlite3", without importing either module."""
    for cls in type(conn).__mro__:
        if cls.__name__ == "Connection" and cls.__module__ in ("apsw", "sqlite3"):
            return cls.__module__
    raise TypeError(
        f"sqlite-ct: expected an apsw.Connection or a sqlite3.Connection, got "
        f"{type(conn).__module__}.{type(conn).__qualname__}")


def _extension_version(conn: Any) -> Optional[str]:
    """SELECT sqlite_ct_version(), or None when the function does not exist."""
    try:
        row = conn.execute("SELECT sqlite_ct_version()").fetchone()
    except Exception as exc:  # apsw.SQLError / sqlite3.OperationalError
        if "no such function" in str(exc):
            return None
        raise
    return str(row[0])


def _check_version(version: Optional[str]) -> None:
    if version != __version__:
        raise ExtensionError(
            f"sqlite-ct: extension version {version} does not match the Python "
            f"package version {__version__}; reinstall sqlite-ct")


def _path_for_host(host: str) -> str:
    """The file to load into `host`'s SQLite library (see ONE FILE PER SQLITE LIBRARY)."""
    global _copies_dir
    with _lock:
        path = _host_paths.get(host)
        if path is not None:
            return path
        original = loadable_path()
        if not _host_paths:
            path = original
        else:
            try:
                if _copies_dir is None:
                    _copies_dir = tempfile.mkdtemp(prefix="sqlite-ct-")
                    atexit.register(shutil.rmtree, _copies_dir, True)
                directory = os.path.join(_copies_dir, host)
                os.mkdir(directory)
                path = os.path.join(directory, os.path.basename(original))
                shutil.copyfile(original, path)
            except OSError as exc:
                raise ExtensionError(
                    f"sqlite-ct: this process already uses the extension with another "
                    f"SQLite library, and making a private copy of {original} for "
                    f"{host} failed: {exc}; set TMPDIR to a writable directory that "
                    f"allows executables") from exc
        _host_paths[host] = path
        return path


def is_loaded(conn: Any) -> bool:
    """Whether sqlite_ct_version() exists on `conn` (apsw or stdlib sqlite3).

    Runs `SELECT sqlite_ct_version()`.
    """
    _host_of(conn)
    return _extension_version(conn) is not None


def load(conn: Any) -> None:
    """Load the sqlite-ct extension into `conn` (apsw.Connection or sqlite3.Connection).

    Idempotent: on a connection that has the extension already (an earlier
    load(), or register_auto_extension()) it only checks the version. Leaves
    the connection's extension-loading switch as it found it. Raises
    ExtensionError when the extension cannot be loaded, when this Python's
    sqlite3 cannot load extensions, or when the loaded extension's
    sqlite_ct_version() differs from sqlite_ct.__version__; TypeError for an
    object that is neither connection type.
    """
    host = _host_of(conn)
    if _extension_version(conn) is None:
        if host == "apsw":
            _load_apsw(conn)
        else:
            _load_sqlite3(conn)
    _check_version(_extension_version(conn))


def _load_apsw(conn: Any) -> None:
    import apsw  # already imported: conn is an apsw.Connection

    path = _path_for_host("apsw")
    op = getattr(apsw, "SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION",
                 _SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION)
    was_on = conn.config(op, -1)
    if not was_on:
        conn.config(op, 1)
    try:
        conn.load_extension(path)
    except apsw.Error as exc:
        raise ExtensionError(f"sqlite-ct: loading {path} failed: {exc}") from exc
    finally:
        if not was_on:
            conn.config(op, 0)


def _load_sqlite3(conn: Any) -> None:
    if not hasattr(conn, "enable_load_extension"):
        raise ExtensionError(_NO_LOAD_EXTENSION)
    import sqlite3

    op = getattr(sqlite3, "SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION", None)
    has_config = op is not None and hasattr(conn, "getconfig")

    def set_switch(on: bool) -> None:
        if has_config:
            conn.setconfig(op, on)
        else:
            conn.enable_load_extension(on)

    path = _path_for_host("sqlite3")
    was_on = conn.getconfig(op) if has_config else _sqlite3_switch_is_on(conn)
    if not was_on:
        set_switch(True)
    try:
        conn.load_extension(path)
    except sqlite3.Error as exc:
        raise ExtensionError(f"sqlite-ct: loading {path} failed: {exc}") from exc
    finally:
        if not was_on:
            set_switch(False)


def _sqlite3_switch_is_on(conn: Any) -> bool:
    """Python < 3.12: read the switch through the SQL function's authorization."""
    import sqlite3

    try:
        conn.execute("SELECT load_extension(?)", (_NO_SUCH_EXTENSION,))
    except sqlite3.Error as exc:
        return "not authorized" not in str(exc)
    return True


def register_auto_extension() -> None:
    """Load sqlite-ct into every stdlib sqlite3 connection opened after this call.

    For Pythons whose sqlite3 module cannot load extensions (no
    Connection.enable_load_extension). Calls sqlite3_auto_extension() of the
    SQLite library the stdlib's _sqlite3 module uses, through ctypes, with the
    extension's entry point; connections opened earlier are unaffected.
    Idempotent. Checks the version on a private :memory: connection. Raises
    ExtensionError when that SQLite library or the extension lacks the needed
    symbol, or on a version mismatch.
    """
    global _auto_extension
    with _lock:
        if _auto_extension is None:
            _auto_extension = _register_auto_extension()
    import sqlite3

    conn = sqlite3.connect(":memory:")
    try:
        version = _extension_version(conn)
    finally:
        conn.close()
    if version is None:
        raise ExtensionError(
            "sqlite-ct: sqlite3_auto_extension() accepted the extension, but a new "
            "sqlite3 connection has no sqlite_ct_version(); the stdlib's sqlite3 "
            "does not use the SQLite library sqlite-ct registered with")
    _check_version(version)


def _register_auto_extension() -> Tuple[ctypes.CDLL, ctypes.CDLL]:
    import _sqlite3

    # Look sqlite3_auto_extension up through the _sqlite3 module's own handle:
    # dlsym() on a handle searches that object and then its dependencies, so
    # this finds the SQLite _sqlite3 actually calls, whether it links
    # libsqlite3 dynamically or has SQLite built in, and never a second SQLite
    # that the process may also hold (apsw's). /proc/self/maps would be
    # Linux-only and could not tell two SQLite copies apart. A _sqlite3 built
    # into the interpreter has no __file__: dlopen(NULL) is the interpreter.
    host_file = getattr(_sqlite3, "__file__", None)
    host = ctypes.CDLL(host_file)
    try:
        auto_extension = host.sqlite3_auto_extension
    except AttributeError as exc:
        raise ExtensionError(
            f"sqlite-ct: register_auto_extension() found no sqlite3_auto_extension "
            f"in the SQLite library that {host_file or 'this interpreter'} uses; "
            f"use load() on a Python whose sqlite3 can load extensions, or apsw"
        ) from exc
    auto_extension.argtypes = [ctypes.c_void_p]
    auto_extension.restype = ctypes.c_int
    path = _path_for_host("sqlite3")
    # RTLD_NODELETE: the library must outlive every connection that registered
    # its functions, including connections closed during interpreter shutdown,
    # after this module's globals (and so the ctypes handle) are gone: closing a
    # connection calls the functions' destructors, which live in the library.
    mode = ctypes.RTLD_LOCAL | getattr(os, "RTLD_NOW", 0) | getattr(os, "RTLD_NODELETE", 0)
    ext = ctypes.CDLL(path, mode=mode)
    try:
        entry_point = getattr(ext, _ENTRY_POINT)
    except AttributeError as exc:
        raise ExtensionError(
            f"sqlite-ct: {path} does not export {_ENTRY_POINT}; reinstall sqlite-ct"
        ) from exc
    rc = auto_extension(ctypes.cast(entry_point, ctypes.c_void_p))
    if rc != 0:
        raise ExtensionError(
            f"sqlite-ct: sqlite3_auto_extension() failed with SQLite result code {rc}")
    # SQLite calls entry_point for every new connection for the rest of the
    # process; the handles are kept as well, so nothing is unloaded early.
    return (host, ext)
