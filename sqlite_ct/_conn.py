"""What sqlite-ct needs from a connection, for apsw and stdlib sqlite3 alike.

The library never opens a connection of its own: every public function takes the
caller's connection first. This module hides the differences between the two
hosts (cursor shapes, exception classes) and maps the C extension's errors to
sqlite_ct.Error subclasses, so every module raises through one mapping.

Work that must see one snapshot or change several rows runs inside a SAVEPOINT,
so it works the same inside or outside the caller's transaction.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Type

from . import errors

_savepoint_ids = itertools.count(1)

# The C extension's messages (csrc/) -> error class. Each pattern is the
# message's template, anchored at "sqlite-ct: ", with ".*" where the extension
# prints a name: a table named "malformed tombstone key" must not turn "no such
# table" into a KeyFormatError. The first match wins; anything else the
# extension reports becomes the base Error.
_NAME = r'".*"'
_MESSAGE_CLASSES: Tuple[Tuple["re.Pattern[str]", Type[errors.Error]], ...] = tuple(
    (re.compile(r"sqlite-ct: " + pattern, re.DOTALL), cls) for pattern, cls in (
        (r"malformed tombstone key: ", errors.KeyFormatError),
        (r"this database was written by a newer sqlite-ct \(layout ", errors.LayoutError),
        (r"no such table: " + _NAME + r"$", errors.TableError),
        (r"table " + _NAME + r" is not tracked$", errors.NotTrackedError),
        (r"table " + _NAME + r" has no PRIMARY KEY; ", errors.TableError),
        (r"table " + _NAME + r" has rows with NULL in its PRIMARY KEY column ",
         errors.TableError),
        (r"table " + _NAME + r" has a UNIQUE index on an expression ", errors.TableError),
        (_NAME + r" is a (view, not a table|virtual table|shadow table of a virtual table"
         r"|[a-z]+); only ordinary tables can be tracked$", errors.TableError),
        (_NAME + r" is a system table; only user tables can be tracked$", errors.TableError),
        (r"sqlite_ct_[a-z_]+\(\) needs a table name$", errors.TableError),
        (r"sqlite_ct_[a-z_]+\(\): a table name cannot contain a NUL character$",
         errors.TableError),
        # sqlite_ct_changes() (csrc/changes.c): the change contract's refusals.
        (r"table " + _NAME + r" is not tracked; call sqlite_ct_create_schema\(",
         errors.NotTrackedError),
        (r"table " + _NAME + r" lost its tracking triggers ", errors.TableError),
        (r"sqlite_ct_changes\(\) needs a table name", errors.TableError),
        (r"an anchor is a non-negative integer CSN, got ", errors.AnchorError),
        (r"anchor [0-9]+ is newer than the last committed CSN [0-9]+ ", errors.AnchorError),
        (r"anchor [0-9]+ of table " + _NAME + r" is older than its oldest kept change ",
         errors.AnchorExpiredError),
        (r"sqlite_ct_changes\(\): until ", errors.AnchorError),
    ))

NOT_LOADED = ("sqlite-ct: the extension is not loaded on this connection; "
              "call sqlite_ct.load(conn) first")


def _host_errors() -> Tuple[Type[BaseException], ...]:
    import sqlite3
    classes: List[Type[BaseException]] = [sqlite3.Error]
    try:
        import apsw
        classes.append(apsw.Error)
    except ImportError:
        pass
    return tuple(classes)


def host_errors() -> Tuple[Type[BaseException], ...]:
    """The exception base classes of the hosts (apsw, stdlib sqlite3)."""
    return _host_errors()


def translate(exc: BaseException) -> Optional[errors.Error]:
    """The sqlite_ct.Error for a host exception raised by the extension, or None
    when the exception is not sqlite-ct's (a locked database, a full disk)."""
    message = str(exc)
    if re.search(r"(no such|unknown) function: sqlite_ct_", message):
        return errors.ExtensionError(NOT_LOADED)
    start = message.find("sqlite-ct: ")
    if start < 0:
        return None
    message = message[start:]
    for pattern, cls in _MESSAGE_CLASSES:
        if pattern.match(message):
            return cls(message)
    return errors.Error(message)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise the extension's errors as sqlite_ct.Error subclasses."""
    try:
        yield
    except _host_errors() as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc


def check_text_factory(conn: Any) -> None:
    """Raise ExtensionError when conn is a stdlib sqlite3 connection whose
    text_factory does not give str: sqlite-ct reads table and column names,
    keys and messages as TEXT, and bytes there would make names mismatch
    (check() would call every tracked table missing) instead of failing."""
    factory = getattr(conn, "text_factory", str)
    if factory is str:
        return
    try:
        ok = isinstance(factory(b"sqlite-ct"), str)
    except Exception:
        ok = False
    if not ok:
        raise errors.ExtensionError(
            f"sqlite-ct: this connection's text_factory ({factory!r}) does not return str;"
            " sqlite-ct reads names and keys as text: set conn.text_factory = str, or use"
            " another connection for sqlite-ct's calls")


def rows(conn: Any, sql: str, params: Sequence[Any] = ()) -> Iterator[Tuple[Any, ...]]:
    """Iterate the rows of one statement (tuples), errors translated."""
    check_text_factory(conn)
    with translated():
        cursor = conn.cursor()
        result = cursor.execute(sql, tuple(params))
        # apsw's execute returns the cursor; a statement without result
        # columns leaves nothing to fetch.
        yield from (result if result is not None else ())


def execute(conn: Any, sql: str, params: Sequence[Any] = ()) -> None:
    for _ in rows(conn, sql, params):
        pass


def value(conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row, or None."""
    for row in rows(conn, sql, params):
        return row[0]
    return None


@contextlib.contextmanager
def savepoint(conn: Any, name: str = "sqlite_ct_py") -> Iterator[None]:
    """Run the block inside a SAVEPOINT: released on success, rolled back on error.

    Outside a transaction the savepoint is the transaction, and its first read
    fixes the snapshot every later statement of the block sees."""
    label = f"{name}_{next(_savepoint_ids)}"
    outermost = not in_transaction(conn)
    execute(conn, f'SAVEPOINT "{label}"')
    try:
        yield
    except BaseException:
        with contextlib.suppress(*_host_errors()):
            execute(conn, f'ROLLBACK TO "{label}"')
            execute(conn, f'RELEASE "{label}"')
        raise
    end_block(conn, f'RELEASE "{label}"', outermost)


def end_block(conn: Any, sql: str, commits: bool) -> None:
    """Run the statement that ends a block (COMMIT, or the RELEASE of an
    outermost savepoint). When it commits and fails (SQLITE_BUSY once the
    busy timeout ran out, a full disk), the transaction is rolled back before
    the error propagates: left open, a later COMMIT of the caller's would
    commit the work of a call that raised."""
    try:
        execute(conn, sql)
    except BaseException:
        if commits and in_transaction(conn):
            with contextlib.suppress(*_host_errors()):
                execute(conn, "ROLLBACK")
        raise


def in_transaction(conn: Any) -> bool:
    """Whether conn has an open transaction (apsw or stdlib sqlite3)."""
    get_autocommit = getattr(conn, "get_autocommit", None)
    if get_autocommit is not None:
        return not get_autocommit()
    return bool(conn.in_transaction)


@contextlib.contextmanager
def writing(conn: Any, name: str = "sqlite_ct_py") -> Iterator[None]:
    """savepoint() for a block that writes. Outside a transaction it starts
    one with BEGIN IMMEDIATE: a transaction that reads first and then writes
    asks for the write lock as an upgrade, which SQLite never retries through
    the busy handler, so the caller's busy timeout would not apply. Inside the
    caller's transaction, a savepoint (the caller chose how it began)."""
    if in_transaction(conn):
        with savepoint(conn, name):
            yield
        return
    execute(conn, "BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(*_host_errors()):
            execute(conn, "ROLLBACK")
        raise
    end_block(conn, "COMMIT", True)


TOMBSTONES_OWNED = "tombstones_owned"     # csrc/schema.c, CT_META_TOMB_OWNED


@contextlib.contextmanager
def owning_tombstones(conn: Any) -> Iterator[None]:
    """The block, inside a write transaction, may delete (or re-key) rows of
    __sysOCSDeletedRows: the guard triggers refuse that to plain SQL
    (csrc/schema.c), since a tombstone removed without expiring the anchors
    that need it is a delete replicas never see. The mark is a __sysCtMeta
    row of this transaction's own, which no other connection sees. Only the
    core's own calls use it."""
    owned = value(conn, "SELECT count(*) FROM main.__sysCtMeta WHERE key = ?",
                  (TOMBSTONES_OWNED,))
    if not owned:
        execute(conn, "INSERT INTO main.__sysCtMeta(key, value) VALUES (?, 1)",
                (TOMBSTONES_OWNED,))
    try:
        yield
    finally:
        if not owned:
            with contextlib.suppress(*_host_errors()):
                execute(conn, "DELETE FROM main.__sysCtMeta WHERE key = ?", (TOMBSTONES_OWNED,))


def require_loaded(conn: Any) -> None:
    """Raise ExtensionError unless the extension is loaded on conn."""
    value(conn, "SELECT sqlite_ct_version()")


def open_database(path: str, *, create: bool = True, busy_timeout_ms: int = 5000) -> Any:
    """A connection to the file `path` with sqlite-ct loaded, for the package's
    own tools (the CLI, the demos): an apsw.Connection when apsw is installed,
    else a stdlib sqlite3.Connection in autocommit mode (isolation_level=None),
    so a user of the stdlib alone can run them; on a Python whose sqlite3
    cannot load extensions that means register_auto_extension(), which loads
    sqlite-ct into every sqlite3 connection the process opens afterwards.
    Without `create`, a missing file is an error of the host (SQLITE_CANTOPEN).
    The library's API never opens connections; callers pass their own."""
    try:
        import apsw
    except ImportError:
        return _open_sqlite3(path, create=create, busy_timeout_ms=busy_timeout_ms)
    from .loader import load

    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
    conn = apsw.Connection(path, flags=flags)
    try:
        conn.set_busy_timeout(busy_timeout_ms)
        load(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _open_sqlite3(path: str, *, create: bool, busy_timeout_ms: int) -> Any:
    import pathlib
    import sqlite3

    from .loader import load, register_auto_extension

    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        # This Python's sqlite3 cannot load extensions; SQLite's auto-extension
        # list puts sqlite-ct into every connection opened from now on.
        register_auto_extension()
    uri = pathlib.Path(os.path.abspath(path)).as_uri() + ("?mode=rwc" if create else "?mode=rw")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None,
                           timeout=busy_timeout_ms / 1000)
    try:
        load(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
