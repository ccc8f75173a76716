"""Alembic autogenerate filters that hide sqlite-ct's objects.

sqlite-ct adds objects no SQLAlchemy model declares: the system tables
(`__sysOCSTrackedObjects`, `__sysTxCommitSequence`, ... and `__sysCtMeta`),
the `__sysChangeTxBsn`, `__sysInsertTxBsn` and `__sysTrackingContext` columns
of each tracked table, and the `__sysct_chg_<table>` indexes (its triggers
Alembic does not compare). Without a filter, autogenerate proposes dropping
them all. In env.py:

    from sqlite_ct.integrations import alembic as sqlite_ct_alembic

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=sqlite_ct_alembic.include_name,
        include_object=sqlite_ct_alembic.include_object,
        render_as_batch=True,
    )

Batch migrations rebuild tables and drop their triggers: give Alembic an
engine passed to sqlite_ct.integrations.sqlalchemy.enable(), which re-arms
them within the migration.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

__all__ = ["include_name", "include_object", "is_sqlite_ct_name"]

_TABLE_PREFIX = "__sys"       # the system tables: __sysOCS..., __sysTx..., __sysSync..., __sysCt...
_COLUMNS = ("__sysChangeTxBsn", "__sysInsertTxBsn", "__sysTrackingContext")
_OBJECT_PREFIX = "__sysct_"   # indexes and triggers


def is_sqlite_ct_name(name: Optional[str], type_: str) -> bool:
    """Whether `name`, an object of kind `type_` ("table", "column", "index",
    "unique_constraint", "foreign_key_constraint", ...), belongs to sqlite-ct."""
    if not name:
        return False
    if type_ == "table":
        return name.startswith(_TABLE_PREFIX)
    if type_ == "column":
        return name in _COLUMNS
    return name.startswith(_OBJECT_PREFIX)


def include_name(name: Optional[str], type_: str, parent_names: Mapping[str, Any]) -> bool:
    """Alembic's include_name hook: False for sqlite-ct's tables, columns and
    indexes, True for everything else."""
    return not is_sqlite_ct_name(name, type_)


def include_object(obj: Any, name: Optional[str], type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """Alembic's include_object hook: False for sqlite-ct's tables, columns and
    indexes, True for everything else."""
    return not is_sqlite_ct_name(name, type_)
