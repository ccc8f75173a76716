"""The error the sync layer raises.

SyncError derives from sqlite_ct.Error, so `except sqlite_ct.Error` still
catches everything sqlite-ct reports. Errors of the tracking core (AnchorError,
NotTrackedError, ...) propagate unchanged.
"""
from ..errors import Error

__all__ = ["SyncError"]


class SyncError(Error):
    """A synchronisation step cannot go on: a table cannot be created as its
    TableCreationOption asks, an anchor belongs to another server, a filter
    lacks a parameter, a conflict was left unresolved, a row cannot be applied.
    The transaction of the step that raised it is rolled back and no anchor
    moves, so the next synchronize() retries the same changes."""
