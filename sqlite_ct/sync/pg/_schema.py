"""Change tracking on the PostgreSQL hub: what provisioning installs, and the
shape of a served table.

HOW IT WORKS. Everything lives in the schema `sqlite_ct`; the application's
tables keep their columns:

  sqlite_ct.hub_info        one row: the hub's id and lineage (every anchor
                            carries both), the anchor secret, and where the
                            hub lives (bound; see bind_hub)
  sqlite_ct.anchor_marks    marks committed after the snapshots anchors name,
                            which a physically restored hub lacks (_marks.py)
  sqlite_ct.tracked_tables  one row per served table: its side table, the
                            transaction that provisioned it, and the newest
                            purged tombstone (the minimum valid anchor)
  sqlite_ct.upload_receipts the result of each upload batch of a client's
                            latest session (exactly-once uploads)
  sqlite_ct.client_owners   the sync service's record of which user owns
                            each client id
  sqlite_ct.client_keys     the keys of filtered tables each client may
                            hold (_held.py)
  sqlite_ct."c_<table>"     the side table: one row per key the table ever
                            held: the key columns, change_xid (the xid8 of
                            the last transaction that wrote the row),
                            insert_xid, context (the writer's tracking
                            context, a uuid or NULL), deleted and deleted_at
                            (a tombstone)

Four statement-level triggers on the table (AFTER INSERT / UPDATE / DELETE
with transition tables, and BEFORE TRUNCATE), enabled ALWAYS, keep the side
table current for every writer: psql, other applications, migrations,
replication (session_replication_role = replica). Per statement, one
INSERT ... ON CONFLICT writes every touched key, so a bulk statement costs
one extra set-based write, not one per row. An UPDATE that changes a key
leaves a tombstone for the old key. TRUNCATE cannot be tracked row by row
and is refused (use DELETE).

The tracking context is the custom setting sqlite_ct.context, set for one
transaction with set_config(..., true); the sync provider sets it to the
uploading client's id, so its downloads leave out that client's own changes.

A side table instead of extra columns in the application's table: the
application's inserts and ORMs see their table unchanged, the stamps cost no
second write of the row, and tombstones and live rows share one index on
change_xid, which is what downloads scan.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import uuid
from typing import Any, Callable, Optional, Tuple

from ..errors import SyncError
from . import _types

SCHEMA = "sqlite_ct"
CONTEXT_SETTING = "sqlite_ct.context"
MARKS = "anchor_marks"
# The anchor marks (_marks.py): made_by is the writing transaction, snap the
# snapshot its INSERT ran in (taken before made_by was handed out).
_MARKS_DDL = ("id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, token bytea NOT NULL, "
              "made_by xid8 NOT NULL DEFAULT pg_current_xact_id(), "
              "snap text NOT NULL DEFAULT pg_current_snapshot()::text, "
              "made_at timestamptz NOT NULL DEFAULT now()")


def qi(name: str) -> str:
    """A quoted PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclasses.dataclass(frozen=True)
class PgTable:
    """A served table: its user columns (types as format_type spells them),
    primary key, side table and minimum valid anchor."""
    schema: str
    name: str
    columns: Tuple[str, ...]
    types: Tuple[str, ...]
    cats: Tuple[str, ...]
    not_null: Tuple[bool, ...]
    defaults: Tuple[Optional[str], ...]
    key: Tuple[str, ...]
    side: str
    tracked: bool
    min_valid: Optional[int]   # newest purged tombstone's xid, as an int

    @property
    def qname(self) -> str:
        return f"{qi(self.schema)}.{qi(self.name)}"

    @property
    def qside(self) -> str:
        return f"{qi(SCHEMA)}.{qi(self.side)}"

    def type_of(self, column: str) -> str:
        return self.types[self.columns.index(column)]

    @property
    def key_pos(self) -> Tuple[int, ...]:
        return tuple(self.columns.index(k) for k in self.key)

    def to_sqlite(self) -> Tuple[Optional[Callable[[Any], Any]], ...]:
        return tuple(_types.converter(c) for c in self.cats)

    def key_join(self, a: str, b: str) -> str:
        return " AND ".join(f"{a}.{qi(k)} = {b}.{qi(k)}" for k in self.key)


def side_name(schema: str, table: str, *, hashed: bool = False) -> str:
    """c_<table> for a table in public, c_<schema>.<table> elsewhere; a
    shortened name with a digest of both when that is too long for an
    identifier or already taken."""
    full = table if schema == "public" else f"{schema}.{table}"
    name = "c_" + full
    if len(name.encode()) <= 63 and not hashed:
        return name
    digest = hashlib.sha256(f"{schema}\0{table}".encode()).hexdigest()[:12]
    cut = full.encode()[:40].decode(errors="ignore")
    return f"c_{cut}_{digest}"


def ensure_base(cur: Any) -> None:
    """The sqlite_ct schema and its registry tables (idempotent). Serialised:
    two first uses at once would both try to create them (IF NOT EXISTS does
    not wait for the other's uncommitted CREATE)."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('sqlite_ct:base'))")
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {qi(SCHEMA)}")
    cur.execute(f"CREATE TABLE IF NOT EXISTS {qi(SCHEMA)}.hub_info ("
                "one boolean PRIMARY KEY DEFAULT true CHECK (one), server_id uuid NOT NULL)")
    cur.execute(f"INSERT INTO {qi(SCHEMA)}.hub_info (server_id) VALUES (gen_random_uuid()) "
                "ON CONFLICT DO NOTHING")
    if cur.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = "
                   "'sqlite_ct.hub_info'::regclass AND attname IN ('lineage', 'secret', 'bound') "
                   "AND NOT attisdropped").fetchone()[0] < 3:
        cur.execute(f"ALTER TABLE {qi(SCHEMA)}.hub_info ADD COLUMN IF NOT EXISTS lineage uuid, "
                    "ADD COLUMN IF NOT EXISTS secret bytea, ADD COLUMN IF NOT EXISTS bound text")
    cur.execute(f"CREATE TABLE IF NOT EXISTS {qi(SCHEMA)}.tracked_tables ("
                "table_schema text NOT NULL, table_name text NOT NULL, side_table text NOT NULL, "
                "enabled_xid xid8 NOT NULL, min_valid_xid xid8, "
                "PRIMARY KEY (table_schema, table_name))")
    cur.execute(f"CREATE TABLE IF NOT EXISTS {qi(SCHEMA)}.{qi(MARKS)} ({_MARKS_DDL})")
    _first_mark(cur)


def _first_mark(cur: Any) -> None:
    """The first mark: anchors of older versions (issued before it) adopt it."""
    cur.execute(f"INSERT INTO {qi(SCHEMA)}.{qi(MARKS)} (token) "
                f"SELECT substr(uuid_send(gen_random_uuid()), 1, 8) "
                f"WHERE NOT EXISTS (SELECT 1 FROM {qi(SCHEMA)}.{qi(MARKS)})")


RECEIPTS = "upload_receipts"
OWNERS = "client_owners"
REPLICAS = "client_replicas"
HELD = "client_keys"
_SERVICE_TABLES = {
    # Exactly-once uploads: one row per applied upload batch of a client's
    # latest session, with the result it was answered with.
    RECEIPTS: "client_id uuid NOT NULL, session bytea NOT NULL, batch bigint NOT NULL, "
              "digest bytea NOT NULL, result text NOT NULL, "
              "applied_at timestamptz NOT NULL DEFAULT now(), "
              "PRIMARY KEY (client_id, session, batch)",
    # Replica generations per client id (ServerProvider.claim_replica): the
    # current one and the one it replaced.
    REPLICAS: "client_id uuid PRIMARY KEY, generation bytea NOT NULL, previous bytea, "
              "last_seen timestamptz NOT NULL DEFAULT now()",
    # The sync service: which user a client id is registered to.
    OWNERS: "client_id uuid PRIMARY KEY, owner text NOT NULL, "
            "registered_at timestamptz NOT NULL DEFAULT now()",
    # The keys of a filtered table each client may hold (_held.py).
    HELD: "client_id uuid NOT NULL, table_schema text NOT NULL, table_name text NOT NULL, "
          "rk bytea NOT NULL, gone xid8, acked bigint, "
          "PRIMARY KEY (client_id, table_schema, table_name, rk)",
}


def ensure_service_table(cur: Any, name: str) -> str:
    """The qualified name of sqlite_ct.<name> (RECEIPTS, OWNERS or HELD), created
    on first use; serialised like ensure_base()."""
    qname = f"{qi(SCHEMA)}.{qi(name)}"
    if not cur.execute("SELECT to_regclass(%s)", (qname,)).fetchone()[0]:
        ensure_base(cur)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {qname} ({_SERVICE_TABLES[name]})")
    return qname


def describe(cur: Any, schema: str, table: str) -> PgTable:
    """The shape of `schema`.`table` (exact name first, then case-insensitive)."""
    found = cur.execute(
        "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND lower(c.relname) = lower(%s) "
        "ORDER BY c.relname = %s DESC LIMIT 1", (schema, table, table)).fetchone()
    if found is None:
        raise SyncError(f'sqlite-ct sync: table "{table}" does not exist in schema "{schema}" '
                        f"of the PostgreSQL hub")
    oid, name = found
    cols = cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "AND a.attgenerated = '' ORDER BY a.attnum", (oid,)).fetchall()
    key = [r[0] for r in cur.execute(
        "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n), "
        "pg_attribute a WHERE i.indrelid = %s AND i.indisprimary AND a.attrelid = i.indrelid "
        "AND a.attnum = k.attnum ORDER BY k.n", (oid,)).fetchall()]
    if not key:
        raise SyncError(f'sqlite-ct sync: table "{name}" has no PRIMARY KEY; '
                        f"sync needs one to identify rows")
    columns = tuple(r[0] for r in cols)
    types = tuple(r[1] for r in cols)
    cats = tuple(_types.require_supported(name, c, t) for c, t in zip(columns, types))
    reg = None
    if cur.execute("SELECT to_regclass(%s)", (f"{qi(SCHEMA)}.tracked_tables",)).fetchone()[0]:
        reg = cur.execute(f"SELECT side_table, min_valid_xid::text FROM "
                          f"{qi(SCHEMA)}.tracked_tables WHERE table_schema = %s "
                          f"AND table_name = %s", (schema, name)).fetchone()
    if reg is not None:
        _check_triggers(cur, oid, name)
    return PgTable(schema, name, columns, types, cats, tuple(bool(r[2]) for r in cols),
                   tuple(r[3] for r in cols), tuple(key),
                   reg[0] if reg else side_name(schema, name), reg is not None,
                   int(reg[1]) if reg and reg[1] is not None else None)


TRIGGERS = ("sqlite_ct_delete", "sqlite_ct_insert", "sqlite_ct_truncate", "sqlite_ct_update")


def _check_triggers(cur: Any, oid: int, table: str) -> None:
    """A served table whose tracking triggers are gone or disabled is writing
    changes no client will hear of: refuse to serve it."""
    state = dict(cur.execute("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s "
                             "AND tgname LIKE 'sqlite\\_ct\\_%%'", (oid,)).fetchall())
    bad = [f"{t} {'missing' if t not in state else 'disabled'}" for t in TRIGGERS
           if state.get(t) != "A"]
    if bad:
        raise SyncError(
            f'sqlite-ct sync: the tracking triggers of table "{table}" are not all enabled '
            f"({', '.join(bad)}), so writes to it are not tracked; re-enable them (ALTER TABLE "
            f"... ENABLE ALWAYS TRIGGER ...), or if the table was recreated, call "
            f'PostgresServerProvider.deprovision("{table}") and provision it again; then '
            f"reinitialise the clients of the table")


def provision(cur: Any, info: PgTable) -> PgTable:
    """Track `info`'s table (idempotent; the caller holds a transaction).
    Rows already in the table are stamped with this transaction."""
    ensure_base(cur)
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sqlite_ct:{info.qname}",))
    done = cur.execute(f"SELECT 1 FROM {qi(SCHEMA)}.tracked_tables WHERE table_schema = %s "
                       f"AND table_name = %s", (info.schema, info.name)).fetchone()
    if done:
        return dataclasses.replace(info, tracked=True)
    # Writers wait from here to the commit, so the backfill below sees every
    # row committed before the triggers existed and none is stamped twice.
    cur.execute(f"LOCK TABLE {info.qname} IN SHARE ROW EXCLUSIVE MODE")
    for hashed in (False, True):
        side = side_name(info.schema, info.name, hashed=hashed)
        if not cur.execute("SELECT to_regclass(%s)", (f"{qi(SCHEMA)}.{qi(side)}",)
                           ).fetchone()[0]:
            break
    else:
        raise SyncError(f'sqlite-ct sync: cannot name the side table of table "{info.name}": '
                        f'sqlite_ct."{side}" exists already; drop it if nothing uses it')
    info = dataclasses.replace(info, side=side)
    keys = ", ".join(qi(k) for k in info.key)
    keydefs = ", ".join(f"{qi(k)} {info.type_of(k)} NOT NULL" for k in info.key)
    cur.execute(f"CREATE TABLE {info.qside} ({keydefs}, "
                "change_xid xid8 NOT NULL, insert_xid xid8 NOT NULL, context uuid, "
                "deleted boolean NOT NULL DEFAULT false, deleted_at timestamptz, "
                f"PRIMARY KEY ({keys}))")
    cur.execute(f"CREATE INDEX ON {info.qside} (change_xid, {keys})")
    fn = trigger_function(info.side)
    nk = ", ".join(f"n.{qi(k)}" for k in info.key)
    ok = ", ".join(f"o.{qi(k)}" for k in info.key)
    cols = f"{keys}, change_xid, insert_xid, context, deleted, deleted_at"
    gone = " AND ".join(f"n.{qi(k)} = o.{qi(k)}" for k in info.key)
    tomb = (f"INSERT INTO {info.qside} AS s ({cols}) SELECT {ok}, x, x, ctx, true, now() "
            f"FROM old_rows o WHERE {{where}} ON CONFLICT ({keys}) DO UPDATE SET "
            "change_xid = x, context = ctx, deleted = true, deleted_at = now()")
    body = f"""
DECLARE
  x xid8 := pg_current_xact_id();
  ctx uuid := nullif(current_setting('{CONTEXT_SETTING}', true), '')::uuid;
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {info.qside} AS s ({cols}) SELECT {nk}, x, x, ctx, false, NULL FROM new_rows n
      ON CONFLICT ({keys}) DO UPDATE SET change_xid = x, insert_xid = x, context = ctx,
      deleted = false, deleted_at = NULL;
  ELSIF TG_OP = 'UPDATE' THEN
    {tomb.format(where=f"NOT EXISTS (SELECT 1 FROM new_rows n WHERE {gone})")};
    INSERT INTO {info.qside} AS s ({cols}) SELECT {nk}, x, x, ctx, false, NULL FROM new_rows n
      ON CONFLICT ({keys}) DO UPDATE SET change_xid = x, context = ctx,
      insert_xid = CASE WHEN s.deleted THEN x ELSE s.insert_xid END,
      deleted = false, deleted_at = NULL;
  ELSIF TG_OP = 'DELETE' THEN
    {tomb.format(where="true")};
  ELSE
    RAISE EXCEPTION 'sqlite-ct: TRUNCATE of table % is not tracked, so clients would keep '
      'the rows; delete them with DELETE FROM instead', TG_TABLE_NAME
      USING ERRCODE = 'feature_not_supported';
  END IF;
  RETURN NULL;
END"""
    # A fixed search_path: the writer's own cannot swap now() or the casts.
    cur.execute(f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql "
                "SET search_path = pg_catalog, pg_temp AS "
                + "$sqlite_ct$" + body + "$sqlite_ct$")
    t = info.qname
    for name, event, refs in (("sqlite_ct_insert", "AFTER INSERT", "NEW TABLE AS new_rows"),
                              ("sqlite_ct_update", "AFTER UPDATE",
                               "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                              ("sqlite_ct_delete", "AFTER DELETE", "OLD TABLE AS old_rows")):
        cur.execute(f"DROP TRIGGER IF EXISTS {name} ON {t}")
        cur.execute(f"CREATE TRIGGER {name} {event} ON {t} REFERENCING {refs} "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")
    cur.execute(f"DROP TRIGGER IF EXISTS sqlite_ct_truncate ON {t}")
    cur.execute(f"CREATE TRIGGER sqlite_ct_truncate BEFORE TRUNCATE ON {t} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")
    # ALWAYS: also under session_replication_role = replica (logical
    # replication into the hub, pg_restore --disable-triggers style loads),
    # which would otherwise write rows no client ever hears of.
    for name in ("sqlite_ct_insert", "sqlite_ct_update", "sqlite_ct_delete",
                 "sqlite_ct_truncate"):
        cur.execute(f"ALTER TABLE {t} ENABLE ALWAYS TRIGGER {name}")
    cur.execute(f"INSERT INTO {info.qside} ({cols}) SELECT {keys}, pg_current_xact_id(), "
                f"pg_current_xact_id(), NULL, false, NULL FROM {t} ON CONFLICT DO NOTHING")
    cur.execute(f"INSERT INTO {qi(SCHEMA)}.tracked_tables VALUES (%s, %s, %s, "
                "pg_current_xact_id(), NULL)", (info.schema, info.name, info.side))
    return dataclasses.replace(info, tracked=True)


def trigger_function(side: str) -> str:
    return f"{qi(SCHEMA)}.{qi('t_' + side[2:])}"


def deprovision(cur: Any, schema: str, table: str) -> bool:
    """Stop tracking `schema`.`table`: drop its triggers (if the table still
    exists), trigger function, side table and registry row. False if it was
    not tracked."""
    if not cur.execute("SELECT to_regclass(%s)", (f"{qi(SCHEMA)}.tracked_tables",)
                       ).fetchone()[0]:
        return False
    row = cur.execute(f"SELECT table_name, side_table FROM {qi(SCHEMA)}.tracked_tables "
                      f"WHERE table_schema = %s AND lower(table_name) = lower(%s) "
                      f"ORDER BY table_name = %s DESC LIMIT 1",
                      (schema, table, table)).fetchone()
    if row is None:
        return False
    name, side = row
    qname = f"{qi(schema)}.{qi(name)}"
    if cur.execute("SELECT to_regclass(%s)", (qname,)).fetchone()[0]:
        for trigger in TRIGGERS:
            cur.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {qname}")
    cur.execute(f"DROP FUNCTION IF EXISTS {trigger_function(side)}()")
    cur.execute(f"DROP TABLE IF EXISTS {qi(SCHEMA)}.{qi(side)}")
    cur.execute(f"DELETE FROM {qi(SCHEMA)}.tracked_tables WHERE table_schema = %s "
                f"AND table_name = %s", (schema, name))
    if cur.execute("SELECT to_regclass(%s)", (f"{qi(SCHEMA)}.{qi(HELD)}",)).fetchone()[0]:
        cur.execute(f"DELETE FROM {qi(SCHEMA)}.{qi(HELD)} WHERE table_schema = %s "
                    f"AND table_name = %s", (schema, name))
    return True


def server_id(cur: Any) -> Any:
    """The hub's id, created with the sqlite_ct schema on first use (a role
    without the right to create it can serve a hub provisioned by another)."""
    if not cur.execute("SELECT to_regclass(%s)", (f"{qi(SCHEMA)}.hub_info",)).fetchone()[0]:
        ensure_base(cur)
    return cur.execute(f"SELECT server_id FROM {qi(SCHEMA)}.hub_info").fetchone()[0]


# Where the hub lives: the cluster (its system identifier), the database and
# the sqlite_ct.hub_info table itself. A restore (pg_dump into another
# database or cluster, or a schema dropped and restored) changes at least one.
_WHERE = ("(SELECT system_identifier FROM pg_control_system())::text || ':' || "
          "(SELECT oid FROM pg_database WHERE datname = current_database())::text || ':' || "
          "to_regclass('sqlite_ct.hub_info')::oid::text")


def hub_key(cur: Any) -> Optional[Tuple[Any, bytes, bytes]]:
    """(server id, lineage, secret) of the hub, or None when it must be bound
    first (bind_hub): a new hub, one made by an older version (or without
    sqlite_ct.anchor_marks), or one that no longer lives where it was bound
    (restored or copied)."""
    if not all(cur.execute("SELECT to_regclass(%s), to_regclass(%s)",
                           (f"{qi(SCHEMA)}.hub_info", f"{qi(SCHEMA)}.{qi(MARKS)}")
                           ).fetchone()):
        return None
    row = cur.execute(f"SELECT h.server_id, j->>'lineage', j->>'secret', "
                      f"j->>'bound' IS NOT DISTINCT FROM {_WHERE} FROM {qi(SCHEMA)}.hub_info h, "
                      f"to_jsonb(h) j").fetchone()
    if row is None or row[1] is None or row[2] is None or not row[3]:
        return None
    return row[0], uuid.UUID(row[1]).bytes, bytes.fromhex(row[2][2:])


def bind_hub(cur: Any) -> bool:
    """Give the hub a lineage and an anchor secret bound to where it lives;
    a new lineage when it was bound elsewhere (restored from a dump, copied):
    every anchor of the old lineage is then refused. Returns whether a lineage
    was replaced. The stamps a restore into another cluster brings from its
    future (transaction ids the new cluster has not reached) become this
    transaction's, so every restored row is visible to the clients'
    downloads from now on."""
    if hub_key(cur) is not None:
        return False
    ensure_base(cur)
    lineage, secret, bound, here = cur.execute(
        f"SELECT lineage, secret, bound, {_WHERE} FROM {qi(SCHEMA)}.hub_info FOR UPDATE"
    ).fetchone()
    if lineage is not None and secret is not None and bound == here:
        return False
    moved = lineage is not None
    if moved:
        sides = [qi(r[0]) for r in cur.execute(
            f"SELECT side_table FROM {qi(SCHEMA)}.tracked_tables").fetchall()]
        for side in sides:
            cur.execute(f"UPDATE {qi(SCHEMA)}.{side} SET "
                        f"change_xid = least(change_xid, pg_current_xact_id()), "
                        f"insert_xid = least(insert_xid, pg_current_xact_id()) "
                        f"WHERE greatest(change_xid, insert_xid) > pg_current_xact_id()")
        cur.execute(f"UPDATE {qi(SCHEMA)}.tracked_tables SET min_valid_xid = NULL, "
                    f"enabled_xid = least(enabled_xid, pg_current_xact_id())")
        # The marks came with the old lineage (whose anchors are all refused
        # now), from transaction ids of wherever it ran: start over.
        cur.execute(f"DELETE FROM {qi(SCHEMA)}.{qi(MARKS)}")
        _first_mark(cur)
    cur.execute(f"UPDATE {qi(SCHEMA)}.hub_info SET lineage = gen_random_uuid(), "
                f"secret = coalesce(secret, %s), bound = {_WHERE}", (os.urandom(32),))
    return moved


def sqlite_default(pg_default: Optional[str]) -> Optional[str]:
    """A PostgreSQL column DEFAULT the client can use: plain numbers and
    string literals; anything else (now(), nextval(...)) is left to the hub."""
    if pg_default is None:
        return None
    m = re.fullmatch(r"\(?(-?\d+(?:\.\d+)?)\)?(?:::[\w ]+)?", pg_default.strip())
    if m:
        return m.group(1)
    m = re.fullmatch(r"('(?:[^']|'')*')(?:::([\w ]+))?", pg_default.strip())
    if m:
        number = re.fullmatch(r"'(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)'", m.group(1))
        if number and m.group(2) in ("smallint", "integer", "bigint", "numeric", "real",
                                     "double precision"):
            return number.group(1)
        return m.group(1)
    if pg_default.strip() in ("true", "false"):
        return "1" if pg_default.strip() == "true" else "0"
    return None

