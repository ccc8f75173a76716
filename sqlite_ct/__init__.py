"""sqlite-ct: SQL Server Compact-style change tracking for SQLite.

Load the extension into a connection, track a table, enumerate what changed
since an anchor:

    import apsw, sqlite_ct
    conn = apsw.Connection("app.db")
    sqlite_ct.load(conn)
    sqlite_ct.create_schema(conn, "orders")
    changes = sqlite_ct.enumerate_changes(conn, "orders", since=0)

Only public names are exported here; docs/python-api.md documents each.
"""
import logging

from ._version import __version__
from .anchors import (client_id, get_received_anchor, get_sent_anchor, set_client_id,
                      set_received_anchor, set_received_anchors, set_sent_anchor,
                      set_sent_anchors)
from .check import Problem, check
from .changes import (Change, ChangeSet, ChangeStream, GroupChangeSet,
                      enumerate_all, enumerate_changes, enumerate_group_changes,
                      iter_changes)
from .errors import (AnchorError, AnchorExpiredError, Error, ExtensionError, KeyFormatError,
                     LayoutError, NotTrackedError, TableError)
from .keys import pack_key, unpack_key
from .loader import is_loaded, load, loadable_path, register_auto_extension
from .replica import (floor_tombstone_times, forget_pending_deletes, reinitialise_table,
                      release_context, stamp_applied)
from .retention import purge_tombstones, purge_transaction_sequence
from .tracking import (RowStamps, TableTracking, TrackingOptions, applying_local_changes,
                       applying_server_changes, commit_time, create_schema,
                       current_bsn, disable_tracking, drop_column, is_tracked,
                       last_committed_csn, newest_csn_committed_by, row_stamps,
                       set_tracking_context, table_tracking, tracked_tables,
                       tracking_context)

__all__ = [
    "__version__",
    # loading
    "loadable_path", "load", "is_loaded", "register_auto_extension",
    # tracking
    "TrackingOptions", "create_schema", "disable_tracking", "drop_column", "is_tracked",
    "tracked_tables", "set_tracking_context", "tracking_context",
    "last_committed_csn", "current_bsn", "applying_server_changes",
    "applying_local_changes",
    # keys
    "pack_key", "unpack_key",
    # enumeration
    "Change", "ChangeSet", "GroupChangeSet", "ChangeStream",
    "enumerate_changes", "enumerate_group_changes", "iter_changes", "enumerate_all",
    # health
    "check", "Problem",
    # retention
    "purge_tombstones", "purge_transaction_sequence",
    # anchors
    "get_sent_anchor", "set_sent_anchor", "get_received_anchor",
    "set_received_anchor", "client_id", "set_client_id", "set_sent_anchors",
    "set_received_anchors",
    # what sync does to a replica's tracking state
    "forget_pending_deletes", "stamp_applied", "reinitialise_table",
    "floor_tombstone_times", "release_context",
    # what sync reads of the tracking state
    "TableTracking", "table_tracking", "RowStamps", "row_stamps", "commit_time",
    "newest_csn_committed_by",
    # errors
    "Error", "ExtensionError", "TableError", "NotTrackedError", "KeyFormatError",
    "AnchorError", "AnchorExpiredError", "LayoutError",
]

# INFO and DEBUG records of sync and maintenance go to the "sqlite_ct" logger
# (and its children); an application that configures no logging sees nothing.
logging.getLogger(__name__).addHandler(logging.NullHandler())
