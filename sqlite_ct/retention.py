"""Purging old tracking metadata (SqlCeChangeTracking.PurgeTombstoneTableData
and PurgeTransactionSequenceData).

Purging tombstones loses information a replica that has not synced since
needs, so sqlite-ct records it: each purge raises the table's minimum valid
anchor (__sysOCSTrackedObjects.__sysMinValidCsn, like SQL Server's
CHANGE_TRACKING_MIN_VALID_VERSION) to the newest purged delete. Enumerating
from an older anchor raises AnchorError instead of silently dropping deletes.

Order, as SQL CE enforced it (its error 30002): purge tombstones first, then
the transaction sequence. The newest __sysTxCommitSequence row is never purged:
the next transaction's BSN is numbered from it.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Optional, Tuple

from . import _conn
from .changes import ANCHOR0_EXPIRED
from .errors import Error
from .tracking import require_tracked

__all__ = ["purge_tombstones", "purge_transaction_sequence"]

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000


def _condition(older_than_days: Optional[float], up_to_csn: Optional[int],
               time_column: str, csn_column: str, func: str,
               both: bool = False) -> Tuple[str, Tuple[Any, ...]]:
    """The WHERE condition of a purge: one of the two bounds, or (`both`
    allowed) both, meaning rows that meet both."""
    if older_than_days is None and up_to_csn is None:
        raise ValueError(f"{func}() takes older_than_days= or up_to_csn="
                         + (" (or both)" if both else ""))
    if older_than_days is not None and up_to_csn is not None and not both:
        raise ValueError(f"{func}() takes exactly one of older_than_days= and up_to_csn=")
    parts, params = [], []
    if older_than_days is not None:
        if older_than_days < 0:
            raise ValueError(f"{func}(): older_than_days must be >= 0")
        parts.append(f"{time_column} < ?")
        params.append(int(time.time() * 1000) - int(older_than_days * _DAY_MS))
    if up_to_csn is not None:
        if isinstance(up_to_csn, bool) or not isinstance(up_to_csn, int) or up_to_csn < 0:
            raise ValueError(f"{func}(): up_to_csn must be a non-negative integer")
        parts.append(f"{csn_column} <= ?")
        params.append(up_to_csn)
    return " AND ".join(parts), tuple(params)


def purge_tombstones(conn: Any, table: str, *, older_than_days: Optional[float] = None,
                     up_to_csn: Optional[int] = None) -> int:
    """Delete `table`'s tombstones deleted more than `older_than_days` days ago,
    or by transactions with CSN <= `up_to_csn`; given both, those that are
    both (what a sync client purges: old and already uploaded). Returns how
    many were deleted and raises the table's minimum valid anchor to the
    newest purged delete."""
    where, params = _condition(older_than_days, up_to_csn, "__sysDeletedTime",
                               "__sysDeleteTxBsn", "purge_tombstones", both=True)
    with _conn.writing(conn, "sqlite_ct_purge"):
        name = require_tracked(conn, table, "purge_tombstones", writing=True)
        newest, count, applied = next(_conn.rows(
            conn, f"SELECT max(__sysDeleteTxBsn), count(*), "
                  f"coalesce(sum(coalesce(__sysInsertTxCsn, 0) <= 0), 0) "
                  f"FROM main.__sysOCSDeletedRows WHERE __sysTName = ? AND {where}",
            (name, *params)))
        if applied:
            # deletes of rows applied from a server: anchor 0 needed them
            _conn.execute(conn, "INSERT OR REPLACE INTO main.__sysCtMeta(key, value) "
                                "VALUES (? || ?, 1)", (ANCHOR0_EXPIRED, name))
        if count:
            with _conn.owning_tombstones(conn):
                _conn.execute(conn, f"DELETE FROM main.__sysOCSDeletedRows "
                                    f"WHERE __sysTName = ? AND {where}", (name, *params))
            _conn.execute(conn, "UPDATE main.__sysOCSTrackedObjects SET __sysMinValidCsn = "
                                "max(__sysMinValidCsn, ?) WHERE __sysTName = ?",
                          (newest, name))
        log.log(logging.INFO if count else logging.DEBUG,
                'purge_tombstones: purged %d tombstone(s) of "%s" (%s)%s', count, name,
                _describe(older_than_days, up_to_csn),
                f"; the minimum valid anchor is now at least {newest}" if count else "")
        return int(count)


def purge_transaction_sequence(conn: Any, *, older_than_days: Optional[float] = None,
                               up_to_csn: Optional[int] = None) -> int:
    """Delete __sysTxCommitSequence rows committed more than `older_than_days`
    days ago, or with CSN <= `up_to_csn`, keeping the newest. Raises Error when
    tombstones of those transactions still exist: purge them first."""
    where, params = _condition(older_than_days, up_to_csn, "__sysCommitTime",
                               "__sysTxCsn", "purge_transaction_sequence")
    with _conn.writing(conn, "sqlite_ct_purge"):
        _conn.value(conn, "SELECT sqlite_ct_create_system_tables()")
        blocking = _conn.value(
            conn, f"SELECT count(*) FROM main.__sysOCSDeletedRows WHERE __sysDeleteTxBsn IN "
                  f"(SELECT __sysTxCsn FROM main.__sysTxCommitSequence WHERE {where})", params)
        if blocking:
            raise Error(f"sqlite-ct: {blocking} tombstone(s) belong to the transactions "
                        f"being purged; purge tombstones first (purge_tombstones), then "
                        f"the transaction sequence")
        before = _conn.value(conn, "SELECT count(*) FROM main.__sysTxCommitSequence")
        _conn.execute(conn, f"DELETE FROM main.__sysTxCommitSequence WHERE {where} AND "
                            f"__sysTxCsn < (SELECT max(__sysTxCsn) "
                            f"FROM main.__sysTxCommitSequence)",
                      params)
        purged = int(before - _conn.value(conn, "SELECT count(*) FROM main.__sysTxCommitSequence"))
        log.info("purge_transaction_sequence: purged %d transaction record(s) (%s)", purged,
                 _describe(older_than_days, up_to_csn))
        return purged


def _describe(older_than_days: Optional[float], up_to_csn: Optional[int]) -> str:
    parts = []
    if older_than_days is not None:
        parts.append(f"older than {older_than_days:g} days")
    if up_to_csn is not None:
        parts.append(f"up to CSN {up_to_csn}")
    return " and ".join(parts)
