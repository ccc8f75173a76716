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
import re
from typing import Any, Iterator, Optional, Sequence, Tuple, Type

from . import errors

_savepoint_ids = itertools.count(1)

# Message fragments of the C extension (csrc/) -> error class. The first match
# wins; anything else the extension reports becomes the base Error.
_MESSAGE_CLASSES: Tuple[Tuple[str, Type[errors.Error]], ...] = (
    ("is not tracked", errors.NotTrackedError),
    ("malformed tombstone key", errors.KeyFormatError),
    ("written by a newer sqlite-ct", errors.LayoutError),
    ("no such table", errors.TableError),
    ("has no PRIMARY KEY", errors.TableError),
    ("has rows with NULL in its PRIMARY KEY", errors.TableError),
    ("not a table", errors.TableError),
    ("is a virtual table", errors.TableError),
    ("is a system table", errors.TableError),
    ("UNIQUE index on an expression", errors.TableError),
    ("needs a table name", errors.TableError),
)

NOT_LOADED = ("sqlite-ct: the extension is not loaded on this connection; "
              "call sqlite_ct.load(conn) first")


def _host_errors() -> Tuple[Type[BaseException], ...]:
    import sqlite3
    classes: list = [sqlite3.Error]
    try:
        import apsw
        classes.append(apsw.Error)
    except ImportError:
        pass
    return tuple(classes)


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
    for fragment, cls in _MESSAGE_CLASSES:
        if fragment in message:
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


def rows(conn: Any, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple]:
    """Iterate the rows of one statement (tuples), errors translated."""
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
    execute(conn, f'SAVEPOINT "{label}"')
    try:
        yield
    except BaseException:
        with contextlib.suppress(*_host_errors()):
            execute(conn, f'ROLLBACK TO "{label}"')
            execute(conn, f'RELEASE "{label}"')
        raise
    execute(conn, f'RELEASE "{label}"')


def require_loaded(conn: Any) -> None:
    """Raise ExtensionError unless the extension is loaded on conn."""
    value(conn, "SELECT sqlite_ct_version()")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
