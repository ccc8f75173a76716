"""The exceptions sqlite-ct raises.

Every one derives from Error, so `except sqlite_ct.Error` catches anything
sqlite-ct itself reports. Messages say what is wrong and what to do about it;
tests assert them exactly. Errors from the host library that sqlite-ct does not
translate (apsw.Error, sqlite3.Error: a locked database, a full disk) propagate
unchanged.
"""

__all__ = [
    "Error",
    "ExtensionError",
    "TableError",
    "NotTrackedError",
    "KeyFormatError",
    "AnchorError",
    "AnchorExpiredError",
    "LayoutError",
]


class Error(Exception):
    """Base class of every error sqlite-ct raises."""


class ExtensionError(Error):
    """The C extension cannot be used on this connection.

    Raised when the compiled library is missing or fails to load, when this
    Python's sqlite3 module cannot load extensions, when the loaded extension's
    sqlite_ct_version() differs from the Python package's version, when a
    function needs the extension on a connection that does not have it, and
    when a stdlib sqlite3 connection's text_factory does not return str.
    """


class TableError(Error):
    """A table cannot be tracked (or untracked) as asked.

    Raised for a table that does not exist, is not an ordinary table, has no
    PRIMARY KEY, has a UNIQUE index on an expression (portable mode), or lost
    its tracking triggers to a rebuild by another tool.
    """


class NotTrackedError(TableError):
    """An operation that needs change tracking named a table that is not tracked."""


class KeyFormatError(Error):
    """A packed tombstone key (__sysRK) is malformed: truncated, with an unknown
    type tag, or with a column count that does not match the table's key."""


class AnchorError(Error):
    """A sync anchor cannot be used: it is malformed, it was issued by another
    database, it is older than the oldest change still kept (purged), or it lies
    in the future of this database's commit sequence."""


class AnchorExpiredError(AnchorError):
    """The anchor is older than the table's minimum valid anchor: tombstones it
    needs were purged (or a rebuild re-armed the table), so the changes since
    it can no longer be listed. The replica must reinitialise: download the
    table afresh and start again from the new anchor."""


class LayoutError(Error):
    """The database's sqlite-ct layout (__sysCtMeta) was written by a newer
    sqlite-ct than this one; upgrade sqlite-ct to use it."""


# The C extension reports failures as SQL errors, which reach Python as
# apsw.Error or sqlite3.Error depending on the host; sqlite_ct._conn.translate()
# maps them to the classes above, and every module raises through it.
