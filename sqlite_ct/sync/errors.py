"""The error the sync layer raises.

SyncError derives from sqlite_ct.Error, so `except sqlite_ct.Error` still
catches everything sqlite-ct reports. Errors of the tracking core (AnchorError,
NotTrackedError, ...) propagate unchanged.
"""
from ..errors import Error

__all__ = ["SyncError", "ReinitialiseRequired", "ReplicaCopied"]


class SyncError(Error):
    """A synchronisation step cannot go on: a table cannot be created as its
    TableCreationOption asks, an anchor belongs to another server, a filter
    lacks a parameter, a conflict was left unresolved, a row cannot be applied.
    The transaction of the step that raised it is rolled back and no anchor
    moves, so the next synchronize() retries the same changes."""


class ReinitialiseRequired(SyncError):
    """The hub cannot serve a table from what this client holds: its received
    anchor is corrupt, forged, from another hub, from a hub since restored from
    an older backup, or older than the hub's purged tombstones. Nothing was
    changed; SyncAgent.reinitialise(tables) brings the table back in line
    without losing the client's unsent changes. `table` names the table."""

    def __init__(self, table: str, message: str) -> None:
        super().__init__(message)
        self.table = table


class ReplicaCopied(SyncError):
    """The hub has seen this client id with a later replica generation than
    the one this database holds: the database is a copy of another client's
    (a file copy, VACUUM INTO, a device provisioned from a synced template) or
    was restored from a backup. Two databases under one client id would never
    see each other's changes, so nothing is synchronised; call
    SyncAgent.reidentify() to give this database its own client id and
    reinitialise its tables (its unsent changes are kept)."""
