/*
** schema.c -- system tables, the on-disk layout version, and turning tracking
** on and off for a table.
**
** SQL SURFACE:
**   sqlite_ct_create_schema(TABLE [, OPTIONS [, MODE]])  turn tracking on
**       (idempotent); OPTIONS is SQL CE's TrackingOptions: 1 insert, 2 update,
**       4 delete, 7 all (default). MODE 'native' (default) installs triggers
**       that call this extension; 'portable' installs pure-SQL triggers (see
**       portable.c) so writers that never load it are tracked too. Returns the
**       BSN of the enabling transaction. __sysTrackOpt stores OPTIONS*16 as SQL
**       CE did, plus CT_TRACKOPT_PORTABLE for portable tables.
**   sqlite_ct_disable_tracking(TABLE)           turn it off: drops the triggers,
**       the index and the three columns, the table's tombstones and sync article.
**   sqlite_ct_is_tracked(TABLE)                 1 or 0.
**   sqlite_ct_rename_tracking(OLD, NEW)         follow ALTER TABLE OLD RENAME TO
**       NEW: move the registry, tombstones and sync article to NEW and
**       re-install the triggers (the Python layer calls it when it sees the
**       AFTER INSERT trigger of OLD now belongs to NEW).
**   sqlite_ct_layout_version()                  the layout this build writes.
**   sqlite_ct_check_layout()                    the layout recorded in this
**       database (0 if none); an error when a newer sqlite-ct wrote it.
**   sqlite_ct_create_system_tables()            create the __sys* tables if
**       missing (create_schema does it too); errors on a newer layout.
** Both actions run inside a SAVEPOINT, so they work with or without an open
** transaction and leave nothing half done.
**
** HOW IT WORKS: a tracked table gets three columns, an index on
** __sysChangeTxBsn (enumeration reads changed rows through it, so its cost
** follows the number of changes, not the table size) and these triggers:
**
**   __sysct_ai_T  AFTER INSERT: stamps the new row with the transaction's BSN
**                 (insert and change) and the tracking context.
**   __sysct_au_T  AFTER UPDATE, WHEN the row is not yet stamped by this
**                 transaction, its key changed, or a __sys column was given a
**                 value the tracker would not write (then RAISE): re-stamps
**                 the change BSN; after a key change the row counts as
**                 inserted now.
**   __sysct_ak_T  AFTER UPDATE OF the key and UNIQUE columns, WHEN one of them
**                 changed: the tombstone of the old key, and the rows an
**                 UPDATE OR REPLACE removed.
**   __sysct_ad_T  AFTER DELETE: writes the tombstone.
**   __sysct_bi_T, __sysct_bu_T  BEFORE INSERT / UPDATE OF the key and UNIQUE
**                 columns: remember the rows an OR REPLACE could delete (the
**                 row holding the new key, rows holding its UNIQUE values);
**                 the AFTER triggers tombstone those that are gone. SQLite
**                 fires no DELETE trigger for such rows unless
**                 recursive_triggers is on.
** (ak, ad, bi and bu exist when deletes are tracked.)
**
** Every trigger starts by logging the transaction in __sysTxCommitSequence the
** first time it writes tracked data (see state.c). Rows that existed before
** tracking was enabled keep NULL stamps; they count as inserted by the
** enabling transaction, whose BSN __sysOCSTrackedObjects.__sysEnableTxBsn
** keeps and the trigger text embeds. Rows the sync provider applies (apply
** mode) get stamp 0: older than any anchor, so they are never echoed back.
*/
#include "sqlite_ct.h"
#include <string.h>

#define CT_COL_CHANGE  "__sysChangeTxBsn"
#define CT_COL_INSERT  "__sysInsertTxBsn"
#define CT_COL_CONTEXT "__sysTrackingContext"

/* __sysCtMeta key prefix, followed by a table name: anchor 0 of that table is
** expired too. Anchor 0 means "the replica holds nothing", and so needs no
** tombstone, except those of rows a sync provider applied (stamped 0): a
** client uploads their deletes from anchor 0. A re-arm after untracked writes
** (here) and a purge of such tombstones (sqlite_ct/retention.py) set it;
** otherwise anchor 0 stays valid whatever __sysMinValidCsn says, so a new
** replica can always start. (Layout 2.) */
#define CT_META_ANCHOR0_EXPIRED "anchor0_expired:"

/* __sysCtMeta key that marks a write transaction as one of sqlite-ct's own
** calls removing or renaming tombstones, while it does (the guard triggers of
** __sysOCSDeletedRows below; sqlite_ct/_conn.py, owning_tombstones()).
** (Layout 6.) */
#define CT_META_TOMB_OWNED "tombstones_owned"

#define CT_LOG_GUARD_MSG "'sqlite-ct: the newest row of __sysTxCommitSequence" \
  " numbers the next transaction; it cannot be deleted or changed" \
  " (purge_transaction_sequence() keeps it)'"
#define CT_TOMB_NOT_OWNED "NOT EXISTS(SELECT 1 FROM __sysCtMeta WHERE key='" \
  CT_META_TOMB_OWNED "')"
#define CT_TOMB_GUARD_MSG "'sqlite-ct: tombstones in __sysOCSDeletedRows are removed" \
  " by sqlite_ct.purge_tombstones(), which also expires the anchors that still need" \
  " them; deleting or changing them otherwise would make replicas miss deletes'"

static const char *azCtSystemDdl =
  "CREATE TABLE IF NOT EXISTS main.__sysCtMeta("
    "key TEXT PRIMARY KEY NOT NULL, value);"
  "CREATE TABLE IF NOT EXISTS main.__sysOCSTrackedObjects("
    "__sysTName TEXT PRIMARY KEY NOT NULL,"
    "__sysTrackOpt INTEGER NOT NULL,"
    "__sysTrackType INTEGER NOT NULL,"
    "__sysTrackColOrd INTEGER,"
    "__sysEnableTxBsn INTEGER NOT NULL,"
    "__sysMinValidCsn INTEGER NOT NULL DEFAULT 0);"
  "CREATE TABLE IF NOT EXISTS main.__sysOCSDeletedRows("
    "__sysTName TEXT NOT NULL,"
    "__sysRK BLOB NOT NULL,"
    "__sysDeleteTxBsn INTEGER NOT NULL,"
    "__sysInsertTxCsn INTEGER,"
    "__sysDeletedTime INTEGER NOT NULL,"
    "__sysTrackingContext BLOB,"
    "PRIMARY KEY(__sysTName, __sysDeleteTxBsn, __sysRK)) WITHOUT ROWID;"
  "CREATE TABLE IF NOT EXISTS main.__sysTxCommitSequence("
    "__sysTxCsn INTEGER PRIMARY KEY,"
    "__sysTxBsn INTEGER NOT NULL,"
    "__sysCommitTime INTEGER NOT NULL);"
  "CREATE TABLE IF NOT EXISTS main.__sysSyncSubscriptions("
    "ClientId BLOB PRIMARY KEY NOT NULL, ServerId BLOB, MachineId BLOB);"
  "CREATE TABLE IF NOT EXISTS main.__sysSyncArticles("
    "TableName TEXT PRIMARY KEY NOT NULL, SentAnchor BLOB, ReceivedAnchor BLOB,"
    " ClientId BLOB);"
  "CREATE TABLE IF NOT EXISTS main.__sysCtReplaceVictims("
    "__sysTName TEXT NOT NULL, __sysRK BLOB NOT NULL, __sysInsertTxCsn INTEGER,"
    "PRIMARY KEY(__sysTName, __sysRK)) WITHOUT ROWID;"
  /* The newest log row numbers the next transaction (BSN = newest CSN + 1):
  ** deleting or lowering it would hand a number out twice, and a replica
  ** holding that anchor would miss a change. Pure SQL, so connections
  ** without the extension are held to it too; purge_transaction_sequence()
  ** deletes older rows only. (Layout 2.) */
  "CREATE TRIGGER IF NOT EXISTS main.__sysct_log_guard_delete"
    " BEFORE DELETE ON __sysTxCommitSequence"
    " WHEN OLD.__sysTxCsn>=(SELECT max(__sysTxCsn) FROM __sysTxCommitSequence)"
    " BEGIN SELECT RAISE(ABORT, " CT_LOG_GUARD_MSG "); END;"
  "CREATE TRIGGER IF NOT EXISTS main.__sysct_log_guard_update"
    " BEFORE UPDATE ON __sysTxCommitSequence"
    " BEGIN SELECT RAISE(ABORT, " CT_LOG_GUARD_MSG "); END;"
  /* A tombstone removed or changed by plain SQL would make every replica
  ** whose anchor is older than the delete miss it, silently: only
  ** sqlite-ct's own calls (purge_tombstones(), which also expires the
  ** anchors that still need the tombstones, forget_pending_deletes(),
  ** disable_tracking(), rename_tracking()) may, and they mark their write
  ** transaction with the __sysCtMeta key CT_META_TOMB_OWNED while they do
  ** (inside it: no other connection sees the mark). Its own upsert lowers
  ** __sysInsertTxCsn only; the other columns (__sysDeletedTime,
  ** __sysTrackingContext) are free. Pure SQL, so that connections without
  ** the extension (portable mode's writers) can prepare every statement that
  ** may fire it, and are held to it too. (Layout 6.) */
  "CREATE TRIGGER IF NOT EXISTS main.__sysct_tomb_guard_delete"
    " BEFORE DELETE ON __sysOCSDeletedRows WHEN " CT_TOMB_NOT_OWNED
    " BEGIN SELECT RAISE(ABORT, " CT_TOMB_GUARD_MSG "); END;"
  "CREATE TRIGGER IF NOT EXISTS main.__sysct_tomb_guard_update"
    " BEFORE UPDATE OF __sysTName, __sysRK, __sysDeleteTxBsn, __sysInsertTxCsn"
    " ON __sysOCSDeletedRows WHEN (NEW.__sysTName IS NOT OLD.__sysTName"
    " OR NEW.__sysRK IS NOT OLD.__sysRK OR NEW.__sysDeleteTxBsn IS NOT OLD.__sysDeleteTxBsn"
    " OR (NEW.__sysInsertTxCsn IS NOT OLD.__sysInsertTxCsn"
    " AND NOT coalesce(NEW.__sysInsertTxCsn < OLD.__sysInsertTxCsn, 0)))"
    " AND " CT_TOMB_NOT_OWNED
    " BEGIN SELECT RAISE(ABORT, " CT_TOMB_GUARD_MSG "); END;";

static int ctInstallTriggers(sqlite3 *db, CtState *pState, const CtTable *p, int eStored,
                             sqlite3_int64 iEnable, char **pzErr);

/*
** Upgrade an older layout in place (the caller's savepoint makes it all or
** nothing). The system DDL has created what is new (the commit log's guard
** triggers); here every armed tracked table gets the triggers of this
** layout, with its options and enabling BSN, so nothing it recorded changes:
** stamps, tombstones, the log and the anchors stay as they are. A table whose
** triggers are gone stays as it is: create_schema() re-arms it (and expires
** older anchors), as it would have on the older layout.
*/
static int ctMigrate(sqlite3 *db, CtState *pState, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  char **azTab = 0;
  int *aOpt = 0;
  sqlite3_int64 *aEnable = 0;
  int i, n = 0;
  /* Read the list first: re-installing triggers writes sqlite_schema, which
  ** the query reads. */
  int rc = sqlite3_prepare_v2(db,
      "SELECT o.__sysTName, o.__sysTrackOpt, o.__sysEnableTxBsn"
      " FROM main.__sysOCSTrackedObjects AS o WHERE EXISTS(SELECT 1 FROM main.sqlite_schema"
      " WHERE type='trigger' AND name='__sysct_ai_' || o.__sysTName"
      " AND tbl_name=o.__sysTName)", -1, &pStmt, 0);
  while( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
    char **azNew = sqlite3_realloc64(azTab, sizeof(char*)*(n+1));
    int *aNewOpt;
    sqlite3_int64 *aNewEnable;
    if( azNew==0 ){ rc = SQLITE_NOMEM; break; }
    azTab = azNew;
    aNewOpt = sqlite3_realloc64(aOpt, sizeof(int)*(n+1));
    if( aNewOpt==0 ){ rc = SQLITE_NOMEM; break; }
    aOpt = aNewOpt;
    aNewEnable = sqlite3_realloc64(aEnable, sizeof(sqlite3_int64)*(n+1));
    if( aNewEnable==0 ){ rc = SQLITE_NOMEM; break; }
    aEnable = aNewEnable;
    azTab[n] = sqlite3_mprintf("%s", (const char*)sqlite3_column_text(pStmt, 0));
    if( azTab[n]==0 ){ rc = SQLITE_NOMEM; break; }
    aOpt[n] = sqlite3_column_int(pStmt, 1);
    aEnable[n] = sqlite3_column_int64(pStmt, 2);
    n++;
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
  }
  if( rc!=SQLITE_OK && rc!=SQLITE_NOMEM && *pzErr==0 ){
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  }
  for(i=0; rc==SQLITE_OK && i<n; i++){
    CtTable *p = 0;
    rc = ctTableLoad(db, azTab[i], &p, pzErr);
    if( rc==SQLITE_OK ) rc = ctInstallTriggers(db, pState, p, aOpt[i], aEnable[i], pzErr);
    ctTableFree(p);
  }
  for(i=0; i<n; i++) sqlite3_free(azTab[i]);
  sqlite3_free(azTab);
  sqlite3_free(aOpt);
  sqlite3_free(aEnable);
  return rc;
}

/*
** Check the layout version recorded in the database. A database written by a
** newer sqlite-ct is refused. With bCreate, create the system tables when they
** are missing, upgrade an older layout, and record this build's layout.
*/
int ctCheckLayout(sqlite3 *db, CtState *pState, int bCreate, char **pzErr){
  sqlite3_int64 iHave = 0, iMeta = 0;
  int bNull = 1;
  int rc = ctQueryInt64(db, &iMeta, 0, pzErr,
      "SELECT count(*) FROM main.sqlite_schema"
      " WHERE type='table' AND name='__sysCtMeta'");
  if( rc==SQLITE_OK && iMeta ){
    rc = ctQueryInt64(db, &iHave, &bNull, pzErr,
        "SELECT value FROM main.__sysCtMeta WHERE key='layout_version'");
  }
  if( rc!=SQLITE_OK ) return rc;
  if( !bNull && iHave>CT_LAYOUT_VERSION ){
    *pzErr = sqlite3_mprintf(
        "sqlite-ct: this database was written by a newer sqlite-ct (layout %lld;"
        " this build reads layouts up to %d); upgrade sqlite-ct",
        iHave, CT_LAYOUT_VERSION);
    return SQLITE_ERROR;
  }
  if( bCreate ){
    rc = ctExecf(db, pzErr, "%s", azCtSystemDdl);
    if( rc==SQLITE_OK ){
      /* The database's identity, written into its triggers: see
      ** ctFuncInsertWhen, which refuses writes through an ATTACH alias. A
      ** database of a layout that had none gets it before the migration
      ** re-installs its triggers. */
      sqlite3_int64 iId = 0;
      sqlite3_randomness(sizeof(iId), &iId);
      iId = (iId & 0x3fffffffffffffffLL) | 1;
      rc = ctExecf(db, pzErr,
          "INSERT OR IGNORE INTO main.__sysCtMeta(key, value)"
          " VALUES('database_id', %lld)", iId);
    }
    if( rc==SQLITE_OK && !bNull && iHave<CT_LAYOUT_VERSION ){
      rc = ctMigrate(db, pState, pzErr);
    }
    if( rc==SQLITE_OK && (bNull || iHave<CT_LAYOUT_VERSION) ){
      rc = ctExecf(db, pzErr,
          "INSERT OR REPLACE INTO main.__sysCtMeta(key, value)"
          " VALUES('layout_version', %d)", CT_LAYOUT_VERSION);
    }
  }
  return rc;
}

/* The identity of the main database (0 when it has none yet). */
int ctDatabaseId(sqlite3 *db, sqlite3_int64 *piId, char **pzErr){
  sqlite3_int64 iMeta = 0;
  int rc = ctQueryInt64(db, &iMeta, 0, pzErr,
      "SELECT count(*) FROM main.sqlite_schema WHERE type='table' AND name='__sysCtMeta'");
  *piId = 0;
  if( rc==SQLITE_OK && iMeta ){
    rc = ctQueryInt64(db, piId, 0, pzErr,
        "SELECT value FROM main.__sysCtMeta WHERE key='database_id'");
  }
  return rc;
}

/* ---- SQL text builders. All identifiers go through %w, literals through %Q. */

/* What the triggers pass where layouts 1 to 6 passed a probe of the newest
** log row: NULL, since layout 7 (state.c, ctMaxCsnArg; txn.c). */
#define CT_MAXCSN_SQL "NULL"

/* No INSERT .. SELECT in a trigger reads the table it writes: SQLite copies
** such a statement through a temporary b-tree, opened per row even when the
** SELECT yields nothing. */


/* The name under which the rowid of p can be referenced, or NULL when the
** table has no rowid or user columns shadow all three names. */
static const char *ctRowidName(const CtTable *p){
  if( p->bWithoutRowid ) return 0;
  if( !ctTableHasColumn(p, "rowid") ) return "rowid";
  if( !ctTableHasColumn(p, "_rowid_") ) return "_rowid_";
  if( !ctTableHasColumn(p, "oid") ) return "oid";
  return 0;
}

/* Match the row REF (NEW or OLD) by rowid when bRowid is set and the rowid
** can be named, else by key: "k1" OP REF."k1" AND ... (zOp: "=" or "IS"). */
static void ctAppendKeyMatch(sqlite3_str *s, const CtTable *p, const char *zRef,
                             const char *zOp, int bRowid){
  const char *zRowid = bRowid ? ctRowidName(p) : 0;
  int i;
  if( zRowid ){
    sqlite3_str_appendf(s, "%s %s %s.%s", zRowid, zOp, zRef, zRowid);
    return;
  }
  for(i=0; i<p->nPk; i++){
    const char *zCol = p->aCol[p->aiPk[i]].zName;
    sqlite3_str_appendf(s, "%s\"%w\" %s %s.\"%w\"", i ? " AND " : "", zCol, zOp,
                        zRef, zCol);
  }
}

/*
** The end of a stamping body whose UPDATE matched NEW's row by its key alone
** (layout 6): takes the stamping mark, and fails the statement when that
** UPDATE changed no row while the row is there, skipped by a BEFORE UPDATE
** trigger's RAISE(IGNORE) (state.c, sqlite_ct_stamp_check). changes() is the
** count of the body's previous statement; the EXISTS runs only when it is 0
** (a row deleted by a trigger that fired first is gone, not skipped).
*/
static void ctAppendStampEnd(sqlite3_str *s, const CtTable *p, const char *zT){
  sqlite3_str_appendf(s, "; SELECT sqlite_ct_stamp_end(%Q), sqlite_ct_stamp_check(%Q,"
                      " CASE WHEN changes() THEN 0 ELSE EXISTS(SELECT 1 FROM \"%w\" WHERE ",
                      zT, zT, zT);
  ctAppendKeyMatch(s, p, "NEW", "=", 1);
  sqlite3_str_appendall(s, ") END); END;");
}

/* sqlite_ct_pack_key(REF."k1", ...) */
static void ctAppendPack(sqlite3_str *s, const CtTable *p, const char *zRef){
  int i;
  sqlite3_str_appendall(s, "sqlite_ct_pack_key(");
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(s, "%s%s%s\"%w\"", i ? ", " : "", zRef ? zRef : "",
                        zRef ? "." : "", p->aCol[p->aiPk[i]].zName);
  }
  sqlite3_str_appendall(s, ")");
}

/* (OLD."k1" IS NOT NEW."k1" COLLATE BINARY OR ...). BINARY whatever the
** column's collation: under a NOCASE key, 'abc' becoming 'ABC' is a new key
** to a replica (a delete of the old spelling plus an insert), not an update. */
void ctAppendKeyChanged(sqlite3_str *s, const CtTable *p){
  int i;
  sqlite3_str_appendall(s, "(");
  for(i=0; i<p->nPk; i++){
    const char *zCol = p->aCol[p->aiPk[i]].zName;
    sqlite3_str_appendf(s, "%sOLD.\"%w\" IS NOT NEW.\"%w\" COLLATE BINARY",
                        i ? " OR " : "", zCol, zCol);
  }
  sqlite3_str_appendall(s, ")");
}

/* sqlite_ct_pack_key(REF."k1", ...), owned by caller. */
static char *ctPackSql(const CtTable *p, const char *zRef){
  sqlite3_str *x = sqlite3_str_new(0);
  ctAppendPack(x, p, zRef);
  return sqlite3_str_finish(x);
}

/* Whether the key or a UNIQUE-index column changed:
** (OLD."a" IS NOT NEW."a" COLLATE BINARY OR ...). */
void ctAppendWatchedChanged(sqlite3_str *s, const CtTable *p){
  int i, n = 0;
  sqlite3_str_appendall(s, "(");
  for(i=0; i<p->nCol; i++){
    if( ctColumnIsWatched(p, i) ){
      sqlite3_str_appendf(s, "%sOLD.\"%w\" IS NOT NEW.\"%w\" COLLATE BINARY",
                          n++ ? " OR " : "", p->aCol[i].zName, p->aCol[i].zName);
    }
  }
  sqlite3_str_appendall(s, ")");
}

/* The list of key and UNIQUE-index columns: "a", "b", ... */
void ctAppendWatchedList(sqlite3_str *s, const CtTable *p){
  int i, n = 0;
  for(i=0; i<p->nCol; i++){
    if( ctColumnIsWatched(p, i) ) sqlite3_str_appendf(s, "%s\"%w\"", n++ ? ", " : "", p->aCol[i].zName);
  }
}

/* An appender's output as a string, owned by the caller. */
char *ctAppended(void (*xAppend)(sqlite3_str*, const CtTable*), const CtTable *p){
  sqlite3_str *x = sqlite3_str_new(0);
  xAppend(x, p);
  return sqlite3_str_finish(x);
}

/*
** The rowid name through which an OR REPLACE can delete a row of p that its
** key does not find, or NULL. In a rowid table whose key is not the rowid
** (a TEXT key, an INTEGER PRIMARY KEY DESC, a composite key), INSERT OR
** REPLACE INTO t(rowid, ...) and UPDATE OR REPLACE t SET rowid=... delete
** the row that holds that rowid, whatever its key.
*/
const char *ctReplaceRowid(const CtTable *p){
  if( p->bWithoutRowid || p->bRowidAlias ) return 0;
  return ctRowidName(p);
}

/* The key and UNIQUE columns, plus the rowid's names a SET clause can write
** when OR REPLACE can delete through the rowid: SQLite matches the column
** list of an UPDATE OF trigger against the names the SET clause writes, so
** "rowid" alone would miss SET oid=... (tests/test_silent_paths.py pins it). */
char *ctWatchedListSql(const CtTable *p){
  static const char *azRowid[] = { "rowid", "_rowid_", "oid" };
  sqlite3_str *x = sqlite3_str_new(0);
  size_t i;
  ctAppendWatchedList(x, p);
  if( ctReplaceRowid(p) ){
    for(i=0; i<sizeof(azRowid)/sizeof(azRowid[0]); i++){
      if( !ctTableHasColumn(p, azRowid[i]) ) sqlite3_str_appendf(x, ", %s", azRowid[i]);
    }
  }
  return sqlite3_str_finish(x);
}

/* Whether a key, UNIQUE or (see ctReplaceRowid) rowid value changed. */
char *ctWatchedChangedSql(const CtTable *p){
  const char *zRowid = ctReplaceRowid(p);
  sqlite3_str *x = sqlite3_str_new(0);
  if( zRowid ) sqlite3_str_appendall(x, "(");
  ctAppendWatchedChanged(x, p);
  if( zRowid ) sqlite3_str_appendf(x, " OR OLD.%s IS NOT NEW.%s)", zRowid, zRowid);
  return sqlite3_str_finish(x);
}

/* (NEW."a" IS NULL OR ...) for a composite key that accepts NULL
** (ctKeyAcceptsNull), else 0. */
static char *ctKeyNullSql(const CtTable *p){
  sqlite3_str *x;
  int i;
  if( !ctKeyAcceptsNull(p) ) return sqlite3_mprintf("0");
  x = sqlite3_str_new(0);
  sqlite3_str_appendall(x, "(");
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(x, "%sNEW.\"%w\" IS NULL", i ? " OR " : "", p->aCol[p->aiPk[i]].zName);
  }
  sqlite3_str_appendall(x, ")");
  return sqlite3_str_finish(x);
}

/*
** Tombstones for remembered rows that are gone now. A remembered row is gone
** when its key no longer exists, or when its key is NEW's and zSameKeyGone
** holds (an insert always: the old row was replaced; an update when it moved
** the row onto that key). zWhen guards the sweep: an AFTER UPDATE trigger
** sweeps only when the update changed a key or UNIQUE value, which is exactly
** when its own BEFORE UPDATE trigger captured, so it never consumes rows
** remembered for a statement that IGNOREd its conflict.
*/
static void ctAppendVictimSweep(sqlite3_str *s, const CtTable *p, const char *zTName,
                                const char *zDb, const char *zPackNew,
                                const char *zSameKeyGone, const char *zWhen){
  int i;
  /* A victim this transaction has tombstoned already (the DELETE trigger with
  ** recursive_triggers on, or an earlier incarnation of the key deleted in
  ** this transaction, whose insert BSN is the older one) keeps that tombstone.
  ** Dropping those victims first keeps the INSERT below from reading the
  ** tombstone table it writes (see CT_MAXCSN_SQL). */
  sqlite3_str_appendf(s,
      "DELETE FROM %s__sysCtReplaceVictims WHERE __sysTName=%Q AND (%s)"
      " AND EXISTS(SELECT 1 FROM %s__sysOCSDeletedRows AS d WHERE d.__sysTName=%Q"
      " AND d.__sysDeleteTxBsn=sqlite_ct_bsn() AND d.__sysRK=__sysCtReplaceVictims.__sysRK);",
      zDb, zTName, zWhen, zDb, zTName);
  sqlite3_str_appendf(s,
      "INSERT INTO %s__sysOCSDeletedRows(__sysTName, __sysRK, __sysDeleteTxBsn,"
      " __sysInsertTxCsn, __sysDeletedTime, __sysTrackingContext)"
      " SELECT %Q, v.__sysRK, sqlite_ct_bsn(), v.__sysInsertTxCsn, sqlite_ct_now(),"
      " sqlite_ct_tracking_context() FROM %s__sysCtReplaceVictims AS v"
      " WHERE v.__sysTName=%Q AND sqlite_ct_bsn()>0 AND (%s)"
      " AND ((v.__sysRK=%s AND (%s)) OR NOT EXISTS(SELECT 1 FROM %s\"%w\" WHERE ",
      zDb, zTName, zDb, zTName, zWhen, zPackNew, zSameKeyGone, zDb, p->zName);
  /* Gone means no row holds the key spelled as remembered: under a NOCASE
  ** (or other non-BINARY) key, OR REPLACE with another spelling deletes the
  ** row and inserts one that the key's own collation calls equal. The first
  ** comparison finds the row through the key's index, the second is exact. */
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(s, "%s\"%w\" IS sqlite_ct_unpack_key(v.__sysRK, %d)"
                        " AND \"%w\" IS sqlite_ct_unpack_key(v.__sysRK, %d) COLLATE BINARY",
                        i ? " AND " : "", p->aCol[p->aiPk[i]].zName, i,
                        p->aCol[p->aiPk[i]].zName, i);
  }
  sqlite3_str_appendf(s,
      "));DELETE FROM %s__sysCtReplaceVictims WHERE __sysTName=%Q AND (%s);",
      zDb, zTName, zWhen);
}

/* The row the fix stamps, when it lacks this transaction's stamps: matched by
** :r, NEW's rowid, or by :k0, :k1, ..., NEW's key. */
static void ctAppendFixRow(sqlite3_str *s, const CtTable *p){
  const char *zRowid = ctRowidName(p);
  int i;
  if( zRowid ){
    sqlite3_str_appendf(s, "%s = :r", zRowid);
  }else{
    for(i=0; i<p->nPk; i++){
      sqlite3_str_appendf(s, "%s\"%w\" = :k%d", i ? " AND " : "",
                          p->aCol[p->aiPk[i]].zName, i);
    }
  }
  sqlite3_str_appendall(s,
      " AND (\"" CT_COL_INSERT "\" IS NOT sqlite_ct_bsn()"
      " OR \"" CT_COL_CHANGE "\" IS NOT sqlite_ct_bsn()"
      " OR \"" CT_COL_CONTEXT "\" IS NOT sqlite_ct_tracking_context())");
}

/*
** The fix of a row inserted into p (layout 4): what the AFTER INSERT trigger's
** body did in layout 3, run from C by sqlite_ct_insert_when() when its checks
** find work (state.c, ctRunFix). Statements separated by ';', whose
** parameters are :r, NEW's rowid (NULL when it cannot be named) and :k0,
** :k1, ..., NEW's key. zTName is the table's name as the trigger knows it
** (the name its rows in the system tables carry until a rename is followed);
** p is the table as it is now. bVictims: tombstone the rows the BEFORE
** INSERT trigger remembered that are gone; bTrack: stamp the row. sqlite-ct's
** own tables and the table are named in main: a top-level statement would
** find a TEMP table of the same name first. NULL when out of memory.
*/
char *ctFixSql(const CtTable *p, const char *zTName, int fKind){
  sqlite3_str *s = sqlite3_str_new(0);
  const int bTrack = (fKind & CT_FIX_STAMP)!=0;
  int i;
  if( fKind & CT_FIX_SWEEP ){
    /* One captured row (layout 5; state.c, "Captured rows"): :rk its packed
    ** key, :ins its insert BSN, :same whether it is under the key of the row
    ** being written. Its tombstone, when :same or unless a row holds its key
    ** spelled exactly so (the first comparison finds the row through the key's
    ** index, the second is exact, as in the layout-4 sweep), whatever that
    ** row's insert BSN: the capture cannot tell a row's new image from a
    ** removed one, and a row UPDATE OR IGNORE or INSERT OR IGNORE skipped
    ** after its new image was captured leaves that image, under the key of the
    ** row it collided with, for the next row's sweep. A row that predates
    ** tracking (NULL) counts as inserted by the enabling transaction. Nothing
    ** in apply mode. */
    sqlite3_str_appendf(s,
        "INSERT INTO main.__sysOCSDeletedRows(__sysTName, __sysRK, __sysDeleteTxBsn,"
        " __sysInsertTxCsn, __sysDeletedTime, __sysTrackingContext)"
        " SELECT %Q, :rk, sqlite_ct_bsn(), coalesce(:ins, (SELECT __sysEnableTxBsn"
        " FROM main.__sysOCSTrackedObjects WHERE __sysTName=%Q)), sqlite_ct_now(),"
        " sqlite_ct_tracking_context() WHERE sqlite_ct_bsn()>0"
        " AND (:same OR NOT EXISTS(SELECT 1 FROM main.\"%w\" AS c WHERE ", zTName, zTName, p->zName);
    /* Columns named through the alias: a double-quoted name that names no
    ** column would otherwise be read as a string (a __sys column renamed by
    ** hand must fail the statement, not make every row look gone). */
    for(i=0; i<p->nPk; i++){
      sqlite3_str_appendf(s, "%sc.\"%w\" IS sqlite_ct_unpack_key(:rk, %d)"
                          " AND c.\"%w\" IS sqlite_ct_unpack_key(:rk, %d) COLLATE BINARY",
                          i ? " AND " : "", p->aCol[p->aiPk[i]].zName, i,
                          p->aCol[p->aiPk[i]].zName, i);
    }
    sqlite3_str_appendall(s, "))"
        " ON CONFLICT(__sysTName, __sysDeleteTxBsn, __sysRK) DO UPDATE"
        " SET __sysInsertTxCsn=min(__sysInsertTxCsn, excluded.__sysInsertTxCsn);");
  }
  if( fKind & CT_FIX_VICTIMS ){
    sqlite3_str *x = sqlite3_str_new(0);
    char *zPack;
    sqlite3_str_appendall(x, "sqlite_ct_pack_key(");
    for(i=0; i<p->nPk; i++) sqlite3_str_appendf(x, "%s:k%d", i ? ", " : "", i);
    sqlite3_str_appendall(x, ")");
    zPack = sqlite3_str_finish(x);
    if( zPack==0 ) ctStrOom(s);
    else ctAppendVictimSweep(s, p, zTName, "main.", zPack, "1", "1");
    sqlite3_free(zPack);
  }
  if( bTrack ){
    sqlite3_str_appendf(s,
        "UPDATE main.\"%w\" SET \"" CT_COL_INSERT "\"=sqlite_ct_bsn(),"
        " \"" CT_COL_CHANGE "\"=sqlite_ct_bsn(),"
        " \"" CT_COL_CONTEXT "\"=sqlite_ct_tracking_context() WHERE ", p->zName);
    ctAppendFixRow(s, p);
    /* Layout 6: a BEFORE UPDATE trigger's RAISE(IGNORE) must not leave the
    ** row unstamped (state.c, sqlite_ct_stamp_check): when the UPDATE changed
    ** nothing, is the row there with other stamps? changes() is the UPDATE's
    ** count (SQLite sets it when that statement ends). */
    sqlite3_str_appendf(s, ";SELECT sqlite_ct_stamp_check(%Q, CASE WHEN changes() THEN 0"
                        " ELSE EXISTS(SELECT 1 FROM main.\"%w\" WHERE ", zTName, p->zName);
    ctAppendFixRow(s, p);
    sqlite3_str_appendall(s, ") END);");
  }
  return sqlite3_str_finish(s);
}

static char *ctTriggerSql(const CtTable *p, int eOpt, sqlite3_int64 iEnable,
                          sqlite3_int64 iDbId){
  const char *zT = p->zName;
  /* Rows deleted by OR REPLACE, cascades and key changes must reach the
  ** tombstones: every table whose deletes are tracked has the capture index
  ** (ctCaptureSql), and its AFTER triggers sweep what it captured. */
  const int bCapture = (eOpt & CT_TRACK_DELETE)!=0;
  char *zChanged = ctAppended(ctAppendKeyChanged, p);
  char *zPackOld = ctPackSql(p, "OLD");
  char *zInsOld = sqlite3_mprintf("coalesce(OLD.\"" CT_COL_INSERT "\", %lld)", iEnable);
  /* The argument of the WHENs after the UNIQUE list (none in layout 5: the
  ** capture sees every index): whether NEW's composite key holds a NULL. */
  char *zKeyNull = ctKeyNullSql(p);
  sqlite3_str *s;
  char *zOut;
  int i;

  if( zChanged==0 || zPackOld==0 || zInsOld==0 || zKeyNull==0 ){
    sqlite3_free(zChanged); sqlite3_free(zPackOld);
    sqlite3_free(zInsOld); sqlite3_free(zKeyNull);
    return 0;
  }
  s = sqlite3_str_new(0);

  /* AFTER INSERT. The stamp columns' DEFAULTs (ctSetStampDefaults) stamp the
  ** row as SQLite writes it; the WHEN, one call into C, logs the transaction,
  ** checks the row and sweeps what the capture index captured while the row
  ** was written (OR REPLACE victims). The rare work, when the row still needs
  ** stamping (no DEFAULT, values the statement wrote), is the fix (ctFixSql),
  ** which the WHEN runs itself from C: the body stays empty. SQLite allocates
  ** and clears a frame sized by the whole trigger program for every row,
  ** whether the WHEN holds or not, so a body that is almost never run still
  ** cost every insert (about a third of an insert's instructions in layout 3).
  ** Without INSERT tracking the row keeps NULL stamps, like the rows that
  ** predate tracking: it is enumerated as an insert only for anchors older
  ** than the enabling transaction. The arguments after KEY_NULL: the shape
  ** number, then the values the fix and the sweep need, NEW's rowid (NULL when
  ** it cannot be named) and NEW's key. */
  sqlite3_str_appendf(s,
      "CREATE TRIGGER main.\"__sysct_ai_%w\" AFTER INSERT ON \"%w\" WHEN "
      "sqlite_ct_insert_when(" CT_MAXCSN_SQL ", %Q, %d, %d,"
      " NEW.\"" CT_COL_CHANGE "\", NEW.\"" CT_COL_INSERT "\", NEW.\"" CT_COL_CONTEXT "\","
      " %lld, NULL, %s, %d, ", zT, zT, zT, (eOpt & CT_TRACK_INSERT) ? 1 : 0, bCapture, iDbId,
      zKeyNull, CT_WHEN_SHAPE_TRUSTED);
  if( ctRowidName(p) ) sqlite3_str_appendf(s, "NEW.%s", ctRowidName(p));
  else sqlite3_str_appendall(s, "NULL");
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(s, ", NEW.\"%w\"", p->aCol[p->aiPk[i]].zName);
  }
  sqlite3_str_appendall(s, ") BEGIN SELECT 1; END;");

  /* AFTER UPDATE OF the key (and the rowid's names): after a key change the
  ** row counts as inserted now. A trigger of its own, so that the AFTER
  ** UPDATE trigger's stamping names neither the key nor __sysInsertTxBsn:
  ** the capture index is evaluated for no ordinary update, and SQLite
  ** allocates this trigger's frame only for an UPDATE whose SET clause names
  ** the key. Its WHEN hands out the BSN and marks the stamping write.
  ** Created before the AFTER UPDATE trigger, so that SQLite (newest trigger
  ** first) runs that one's sweep of the key change first: the restamp's own
  ** AFTER UPDATE triggers, an application's among them, may write the table,
  ** and their sweep would otherwise find the row's new image, still listed,
  ** under the key of the row and tombstone a live row. */
  if( eOpt & CT_TRACK_INSERT ){
    static const char *azRowid[] = { "rowid", "_rowid_", "oid" };
    size_t k;
    sqlite3_str_appendf(s, "CREATE TRIGGER main.\"__sysct_ak_%w\" AFTER UPDATE OF ", zT);
    for(i=0; i<p->nPk; i++){
      sqlite3_str_appendf(s, "%s\"%w\"", i ? ", " : "", p->aCol[p->aiPk[i]].zName);
    }
    /* SQLite matches an UPDATE OF list with the names the SET clause
    ** writes: SET rowid=... changes an INTEGER PRIMARY KEY too. */
    for(k=0; !p->bWithoutRowid && k<sizeof(azRowid)/sizeof(azRowid[0]); k++){
      if( !ctTableHasColumn(p, azRowid[k]) ) sqlite3_str_appendf(s, ", %s", azRowid[k]);
    }
    sqlite3_str_appendf(s, " ON \"%w\" WHEN sqlite_ct_rekey_when(" CT_MAXCSN_SQL ", %lld, %Q, %s,"
                        " NEW.\"" CT_COL_INSERT "\"", zT, iDbId, zT, zChanged);
    for(i=0; i<p->nPk; i++){
      sqlite3_str_appendf(s, ", NEW.\"%w\"", p->aCol[p->aiPk[i]].zName);
    }
    sqlite3_str_appendf(s, ") BEGIN UPDATE \"%w\" SET \"" CT_COL_INSERT "\"=sqlite_ct_bsn() WHERE ",
                        zT);
    ctAppendKeyMatch(s, p, "NEW", "=", 1);
    ctAppendStampEnd(s, p, zT);
  }

  /* AFTER UPDATE. Fires when the row is not stamped by this transaction yet or
  ** its key changed; its WHEN logs the transaction, fails the statement when
  ** it wrote a __sys column with a value the tracker would not write, and
  ** sweeps the captured rows (the old key of a key change, OR REPLACE
  ** victims). Its own stamping UPDATE, and the ones of the AFTER UPDATE OF
  ** key trigger and of the AFTER INSERT trigger's fix, leave the WHEN
  ** false. */
  sqlite3_str_appendf(s,
      "CREATE TRIGGER main.\"__sysct_au_%w\" AFTER UPDATE ON \"%w\" WHEN "
      "sqlite_ct_update_when(" CT_MAXCSN_SQL ", %Q, %s, %d,"
      " NEW.\"" CT_COL_CHANGE "\", OLD.\"" CT_COL_CHANGE "\","
      " NEW.\"" CT_COL_INSERT "\", OLD.\"" CT_COL_INSERT "\","
      " NEW.\"" CT_COL_CONTEXT "\", OLD.\"" CT_COL_CONTEXT "\", %lld, NULL, %s, %d",
      zT, zT, zT, zChanged, (eOpt & CT_TRACK_UPDATE) ? 1 : 0, iDbId, zKeyNull,
      CT_WHEN_SHAPE_TRUSTED);
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(s, ", NEW.\"%w\"", p->aCol[p->aiPk[i]].zName);
  }
  sqlite3_str_appendf(s, ") BEGIN UPDATE \"%w\" SET ", zT);
  if( eOpt & CT_TRACK_UPDATE ){
    sqlite3_str_appendall(s, "\"" CT_COL_CHANGE "\"=sqlite_ct_bsn(), ");
  }else if( eOpt & CT_TRACK_INSERT ){
    /* Updates are not tracked, but the row under a new key is an insert:
    ** enumeration finds rows through the change stamp. */
    sqlite3_str_appendf(s, "\"" CT_COL_CHANGE "\"=CASE WHEN %s THEN sqlite_ct_bsn()"
                        " ELSE \"" CT_COL_CHANGE "\" END, ", zChanged);
  }
  sqlite3_str_appendall(s, "\"" CT_COL_CONTEXT "\"=sqlite_ct_tracking_context() WHERE ");
  ctAppendKeyMatch(s, p, "NEW", "=", 1);
  ctAppendStampEnd(s, p, zT);

  /* AFTER DELETE: the tombstone. The WHEN sweeps the captured rows (dropping
  ** this row's own entry) and hands out (and logs) the BSN, 0 in apply mode,
  ** which writes none; the body is one upsert (its DO UPDATE wins over the OR
  ** clause of the statement that fired the trigger, which SQLite otherwise
  ** applies to the statements inside triggers; one key deleted twice in a
  ** transaction keeps the older insert BSN) as one
  ** VALUES row (no subquery to run per row, a smaller frame). */
  if( eOpt & CT_TRACK_DELETE ){
    sqlite3_str_appendf(s,
        "CREATE TRIGGER main.\"__sysct_ad_%w\" AFTER DELETE ON \"%w\" WHEN "
        "sqlite_ct_delete_when(" CT_MAXCSN_SQL ", %lld, %Q, OLD.\"" CT_COL_INSERT "\"",
        zT, zT, iDbId, zT);
    for(i=0; i<p->nPk; i++){
      sqlite3_str_appendf(s, ", OLD.\"%w\"", p->aCol[p->aiPk[i]].zName);
    }
    sqlite3_str_appendf(s, ")>0 BEGIN"
        " INSERT INTO __sysOCSDeletedRows(__sysTName, __sysRK, __sysDeleteTxBsn,"
        " __sysInsertTxCsn, __sysDeletedTime, __sysTrackingContext)"
        " VALUES(%Q, %s, sqlite_ct_bsn(), %s, sqlite_ct_now(), sqlite_ct_tracking_context())"
        " ON CONFLICT(__sysTName, __sysDeleteTxBsn, __sysRK) DO UPDATE"
        " SET __sysInsertTxCsn=min(__sysInsertTxCsn, excluded.__sysInsertTxCsn); END;",
        zT, zPackOld, zInsOld);
  }
  sqlite3_free(zChanged); sqlite3_free(zPackOld);
  sqlite3_free(zInsOld); sqlite3_free(zKeyNull);
  zOut = sqlite3_str_finish(s);
  return zOut;
}

static int ctDropTriggers(sqlite3 *db, const char *zTab, char **pzErr){
  static const char *azKind[] = { "ai", "au", "ak", "ad", "bi", "bu" };
  int rc = SQLITE_OK;
  size_t i;
  for(i=0; rc==SQLITE_OK && i<sizeof(azKind)/sizeof(azKind[0]); i++){
    rc = ctExecf(db, pzErr, "DROP TRIGGER IF EXISTS main.\"__sysct_%s_%w\"",
                 azKind[i], zTab);
  }
  return rc;
}

/*
** The guard of a native-mode table (layout 3): an always-empty partial index
**   CREATE INDEX "__sysct_guard_T" ON "T"("c1" COLLATE BINARY, ...,
**     "cN" COLLATE BINARY) WHERE sqlite_ct_guard('T')=0
** whose key columns are every column the table has (generated columns aside:
** no statement writes them), the __sys columns included. SQLite evaluates a
** partial index's WHERE for every row an INSERT writes or a DELETE removes
** (OR REPLACE victims and cascades too), and for every row an UPDATE writes
** when the UPDATE sets a column the index names, hence every column; it does
** so before it reads the columns for the key. sqlite_ct_guard() returns 1,
** so the index stays empty. A connection without the extension cannot
** evaluate it ("unknown function"), triggers on or off, and a connection with
** it refuses the write when triggers are off (state.c). Because every column
** is indexed, sqlite3_blob_open() refuses to open any of them for writing
** ("cannot open indexed column for writing"): an incremental blob write
** would change the row without a trigger or the guard. Key columns, not a
** WHERE naming them in a function call: SQLite before 3.48 allows 127
** arguments to a function and refuses to load a schema that passes more,
** whereas an index takes as many columns as a table has (SQLITE_MAX_COLUMN).
** COLLATE BINARY: an index column otherwise takes the column's collation,
** and a connection without an application's own collation could then not
** write the table (nor create the guard). A column added later is not
** indexed until create_schema() re-installs the guard. NULL when out of
** memory.
*/
static char *ctGuardSql(const CtTable *p){
  sqlite3_str *x = sqlite3_str_new(0);
  int i, bFirst = 1;
  sqlite3_str_appendf(x, "CREATE INDEX main.\"__sysct_guard_%w\" ON \"%w\"(",
                      p->zName, p->zName);
  for(i=0; i<p->nCol; i++){
    if( p->aCol[i].bHidden ) continue;
    sqlite3_str_appendf(x, "%s\"%w\" COLLATE BINARY", bFirst ? "" : ", ", p->aCol[i].zName);
    bFirst = 0;
  }
  sqlite3_str_appendf(x, ") WHERE sqlite_ct_guard(%Q)=0", p->zName);
  return sqlite3_str_finish(x);
}

static int ctDropGuard(sqlite3 *db, const char *zTab, char **pzErr){
  return ctExecf(db, pzErr, "DROP INDEX IF EXISTS main.\"__sysct_guard_%w\"", zTab);
}

/*
** The capture index of a native-mode table whose deletes are tracked (layout
** 5; state.c, "Captured rows"): an always-empty partial index
**   CREATE INDEX "__sysct_cap_T" ON "T"("k1" COLLATE BINARY, ...)
**     WHERE sqlite_ct_capture('T', "__sysInsertTxBsn", "k1", ...)=0
** SQLite evaluates its WHERE for each row whose entry it would remove (a
** DELETE, an OR REPLACE through any index or the rowid, a cascade) or add (an
** INSERT), and for both images of a row an UPDATE writes when it sets a column
** the index or its WHERE names: the key, the rowid, __sysInsertTxBsn. An
** ordinary update sets none of them, the trigger's stamping included, and is
** not slowed down. NULL when out of memory.
*/
static char *ctCaptureSql(const CtTable *p){
  sqlite3_str *x = sqlite3_str_new(0);
  int i;
  sqlite3_str_appendf(x, "CREATE INDEX main.\"__sysct_cap_%w\" ON \"%w\"(", p->zName, p->zName);
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(x, "%s\"%w\" COLLATE BINARY", i ? ", " : "", p->aCol[p->aiPk[i]].zName);
  }
  sqlite3_str_appendf(x, ") WHERE sqlite_ct_capture(%Q, \"" CT_COL_INSERT "\"", p->zName);
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(x, ", \"%w\"", p->aCol[p->aiPk[i]].zName);
  }
  sqlite3_str_appendall(x, ")=0");
  return sqlite3_str_finish(x);
}

static int ctDropCapture(sqlite3 *db, const char *zTab, char **pzErr){
  return ctExecf(db, pzErr, "DROP INDEX IF EXISTS main.\"__sysct_cap_%w\"", zTab);
}

/*
** Create the always-empty partial index "__sysct_<zKind>_<table>" as zSql
** makes it, or replace the one there when its SQL differs (columns added since,
** an earlier shape). Building it scans the table and evaluates its WHERE for
** every row: pState->nCapQuiet keeps the capture from taking those rows for
** written ones.
*/
static int ctInstallPartialIndex(sqlite3 *db, CtState *pState, const char *zKind,
                                 const char *zTab, const char *zSql, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  char *zQuery;
  int rc, bSame = 0;
  zQuery = sqlite3_mprintf("SELECT sql FROM main.sqlite_schema WHERE type='index'"
                           " AND name='__sysct_%s_' || %Q AND tbl_name=%Q",
                           zKind, zTab, zTab);
  if( zQuery==0 ) return SQLITE_NOMEM;
  rc = sqlite3_prepare_v2(db, zQuery, -1, &pStmt, 0);
  sqlite3_free(zQuery);
  if( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
    const char *zHave = (const char*)sqlite3_column_text(pStmt, 0);
    /* sqlite_schema keeps the text after "CREATE INDEX <schema>." as typed,
    ** without the schema name. */
    bSame = zHave && strlen(zSql)>18 && strcmp(zHave+13, zSql+18)==0;
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
  }
  if( rc!=SQLITE_OK && *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  if( rc==SQLITE_OK && !bSame ){
    rc = ctExecf(db, pzErr, "DROP INDEX IF EXISTS main.\"__sysct_%w_%w\"", zKind, zTab);
    if( (rc & 0xff)==SQLITE_LOCKED ){
      /* SQLite drops no b-tree while another statement (the caller's, when it
      ** reads a table) is reading. */
      sqlite3_free(*pzErr);
      *pzErr = sqlite3_mprintf("sqlite-ct: the %s index \"__sysct_%s_%s\" must be"
          " replaced, which SQLite refuses while the calling statement reads a table"
          " (database table is locked); call sqlite_ct_create_schema() in a statement"
          " that reads no table", strcmp(zKind, "cap")==0 ? "capture" : zKind, zKind, zTab);
    }
    if( rc==SQLITE_OK ){
      if( pState ) pState->nCapQuiet++;
      rc = ctExecf(db, pzErr, "%s", zSql);
      if( pState ) pState->nCapQuiet--;
    }
  }
  return rc;
}

/* Install the guard of p and, when its deletes are tracked, its capture
** index; a portable-mode table has neither (they call the extension, which
** portable mode does without), and drops them. */
static int ctInstallGuard(sqlite3 *db, CtState *pState, const CtTable *pTab, int eStored,
                          char **pzErr){
  CtTable *p = 0;
  char *zSql;
  int rc;
  if( eStored & CT_TRACKOPT_PORTABLE ){
    rc = ctDropGuard(db, pTab->zName, pzErr);
    if( rc==SQLITE_OK ) rc = ctDropCapture(db, pTab->zName, pzErr);
    return rc;
  }
  /* The columns as they are now: create_schema() may have just added the
  ** __sys columns. */
  rc = ctTableLoad(db, pTab->zName, &p, pzErr);
  if( rc!=SQLITE_OK ) return rc;
  zSql = ctGuardSql(p);
  if( zSql==0 ) rc = SQLITE_NOMEM;
  else rc = ctInstallPartialIndex(db, pState, "guard", p->zName, zSql, pzErr);
  sqlite3_free(zSql);
  if( rc==SQLITE_OK && ((eStored & 0xF0)/16 & CT_TRACK_DELETE) ){
    zSql = ctCaptureSql(p);
    if( zSql==0 ) rc = SQLITE_NOMEM;
    else rc = ctInstallPartialIndex(db, pState, "cap", p->zName, zSql, pzErr);
    sqlite3_free(zSql);
  }else if( rc==SQLITE_OK ){
    rc = ctDropCapture(db, p->zName, pzErr);
  }
  ctTableFree(p);
  return rc;
}

/* eStored: the __sysTrackOpt value (options*16, plus CT_TRACKOPT_PORTABLE). */
static int ctInstallTriggers(sqlite3 *db, CtState *pState, const CtTable *p, int eStored,
                             sqlite3_int64 iEnable, char **pzErr){
  char *zSql;
  int eOpt = (eStored & 0xF0)/16;
  sqlite3_int64 iDbId = 0;
  int rc = ctDropTriggers(db, p->zName, pzErr);
  if( rc==SQLITE_OK ) rc = ctDatabaseId(db, &iDbId, pzErr);
  if( rc!=SQLITE_OK ) return rc;
  zSql = (eStored & CT_TRACKOPT_PORTABLE) ? ctPortableTriggerSql(p, eOpt, iEnable)
                                          : ctTriggerSql(p, eOpt, iEnable, iDbId);
  if( zSql==0 ) return SQLITE_NOMEM;
  rc = ctExecf(db, pzErr, "%s", zSql);
  sqlite3_free(zSql);
  if( rc==SQLITE_OK ) rc = ctInstallGuard(db, pState, p, eStored, pzErr);
  return rc;
}

/*
** The stamp columns' DEFAULTs. A table whose inserts are tracked gets
**   "__sysChangeTxBsn" INTEGER DEFAULT (sqlite_ct_default_bsn())
** (and the same for __sysInsertTxBsn, and sqlite_ct_tracking_context() for
** the context), so SQLite writes an inserted row stamped and the AFTER INSERT
** trigger need not write it a second time. ALTER TABLE cannot add a column
** with such a DEFAULT, so the column definitions ALTER TABLE wrote are edited
** in sqlite_schema, the procedure SQLite documents as safe for changing a
** DEFAULT (stored records do not change): writable_schema, the UPDATE, a new
** schema_version, all inside the caller's savepoint.
**
** Best effort by design: when the definitions are not the ones ALTER TABLE
** wrote (a table rebuilt by another tool), or SQLITE_DBCONFIG_DEFENSIVE
** forbids the edit, the table keeps plain columns and the AFTER INSERT
** trigger stamps every row itself, as correct and slower. Removing the
** DEFAULTs (inserts no longer tracked) is not optional: it fails instead.
*/
static const char *const azCtStampCol[3][2] = {
  { "\"" CT_COL_CHANGE "\" INTEGER",  " DEFAULT (sqlite_ct_default_bsn())" },
  { "\"" CT_COL_INSERT "\" INTEGER",  " DEFAULT (sqlite_ct_default_bsn())" },
  { "\"" CT_COL_CONTEXT "\" BLOB",    " DEFAULT (sqlite_ct_tracking_context())" },
};

/* The number of times zNeedle occurs in zHay. */
static int ctCountOf(const char *zHay, const char *zNeedle){
  int n = 0;
  size_t nNeedle = strlen(zNeedle);
  const char *z = zHay;
  while( (z = strstr(z, zNeedle))!=0 ){ n++; z += nNeedle; }
  return n;
}

/* zIn with its one occurrence of zFrom replaced by zTo (sqlite3_malloc'd). */
static char *ctReplaceOnce(const char *zIn, const char *zFrom, const char *zTo){
  const char *z = strstr(zIn, zFrom);
  if( z==0 ) return 0;
  return sqlite3_mprintf("%.*s%s%s", (int)(z-zIn), zIn, zTo, z+strlen(zFrom));
}

/* The stamp DEFAULTs a table has: 3 (all), 0 (none) or -1 (anything else);
** -2 when out of memory. */
static int ctStampDefaultCount(const char *zSql){
  int i, n = 0;
  for(i=0; i<3; i++){
    char *zWith = sqlite3_mprintf("%s%s", azCtStampCol[i][0], azCtStampCol[i][1]);
    if( zWith==0 ) return -2;
    n += ctCountOf(zSql, zWith)==1;
    sqlite3_free(zWith);
  }
  return n==3 ? 3 : n==0 ? 0 : -1;
}

static int ctSetStampDefaults(sqlite3 *db, const char *zTab, int bOn, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  char *zSql = 0, *zNew = 0;
  int rc, i, bDefensive = 0, bWritable = 0;
  sqlite3_int64 iCookie = 0;
  char *zQuery = sqlite3_mprintf(
      "SELECT sql FROM main.sqlite_schema WHERE type='table' AND name=%Q", zTab);
  if( zQuery==0 ) return SQLITE_NOMEM;
  rc = sqlite3_prepare_v2(db, zQuery, -1, &pStmt, 0);
  sqlite3_free(zQuery);
  if( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW && sqlite3_column_text(pStmt, 0) ){
    zSql = sqlite3_mprintf("%s", (const char*)sqlite3_column_text(pStmt, 0));
    if( zSql==0 ) rc = SQLITE_NOMEM;
  }
  sqlite3_finalize(pStmt);
  if( rc!=SQLITE_OK || zSql==0 ){ sqlite3_free(zSql); return rc; }

  i = ctStampDefaultCount(zSql);
  if( i==-2 ){ sqlite3_free(zSql); return SQLITE_NOMEM; }
  if( (bOn && i==3) || (!bOn && i==0) ){ sqlite3_free(zSql); return SQLITE_OK; }
  zNew = zSql; zSql = 0;
  for(i=0; zNew && i<3; i++){
    char *zWith = sqlite3_mprintf("%s%s", azCtStampCol[i][0], azCtStampCol[i][1]);
    char *zNext = 0;
    int bBuilt = 1;   /* zNext was built: NULL means out of memory */
    if( zWith==0 ){ sqlite3_free(zNew); return SQLITE_NOMEM; }
    if( bOn ){
      if( ctCountOf(zNew, zWith)==0 && ctCountOf(zNew, azCtStampCol[i][0])==1 ){
        zNext = ctReplaceOnce(zNew, azCtStampCol[i][0], zWith);
      }else if( ctCountOf(zNew, zWith)==1 ){
        zNext = sqlite3_mprintf("%s", zNew);
      }else{
        bBuilt = 0;       /* definitions this code did not write */
      }
    }else if( ctCountOf(zNew, zWith)==1 ){
      zNext = ctReplaceOnce(zNew, zWith, azCtStampCol[i][0]);
    }else{
      zNext = sqlite3_mprintf("%s", zNew);
    }
    sqlite3_free(zWith);
    sqlite3_free(zNew);
    if( bBuilt && zNext==0 ) return SQLITE_NOMEM;
    zNew = zNext;
  }
  if( zNew && (i = ctStampDefaultCount(zNew))==-2 ){
    sqlite3_free(zNew);
    return SQLITE_NOMEM;
  }
  if( zNew==0 || i!=(bOn ? 3 : 0) ){
    /* Column definitions this code did not write. */
    sqlite3_free(zNew);
    if( bOn ) return SQLITE_OK;
    *pzErr = sqlite3_mprintf("sqlite-ct: cannot remove the DEFAULTs of the __sys"
                             " columns of table \"%s\"", zTab);
    return SQLITE_ERROR;
  }
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, -1, &bDefensive);
  if( bDefensive ){
    sqlite3_free(zNew);
    if( bOn ) return SQLITE_OK;
    *pzErr = sqlite3_mprintf("sqlite-ct: SQLITE_DBCONFIG_DEFENSIVE is on, so the"
        " DEFAULTs of the __sys columns of table \"%s\" cannot be removed;"
        " turn it off for this call", zTab);
    return SQLITE_ERROR;
  }
  rc = ctQueryInt64(db, &iCookie, 0, pzErr, "PRAGMA main.schema_version");
  if( rc==SQLITE_OK ){
    sqlite3_db_config(db, SQLITE_DBCONFIG_WRITABLE_SCHEMA, -1, &bWritable);
    sqlite3_db_config(db, SQLITE_DBCONFIG_WRITABLE_SCHEMA, 1, 0);
    rc = ctExecf(db, pzErr,
        "UPDATE main.sqlite_schema SET sql=%Q WHERE type='table' AND name=%Q;"
        "PRAGMA main.schema_version=%lld;", zNew, zTab, iCookie+1);
    sqlite3_db_config(db, SQLITE_DBCONFIG_WRITABLE_SCHEMA, bWritable, 0);
  }
  sqlite3_free(zNew);
  return rc;
}

/* Refuse a table with rows whose composite key holds NULL (see
** ctKeyAcceptsNull): a replica cannot match them by key. */
static int ctRefuseNullKeys(sqlite3 *db, const CtTable *p, char **pzErr){
  int i, rc = SQLITE_OK;
  if( !ctKeyAcceptsNull(p) ) return SQLITE_OK;
  for(i=0; rc==SQLITE_OK && i<p->nPk; i++){
    const char *zCol = p->aCol[p->aiPk[i]].zName;
    sqlite3_int64 n = 0;
    rc = ctQueryInt64(db, &n, 0, pzErr,
        "SELECT EXISTS(SELECT 1 FROM main.\"%w\" WHERE \"%w\" IS NULL)", p->zName, zCol);
    if( rc==SQLITE_OK && n ){
      *pzErr = sqlite3_mprintf("sqlite-ct: table \"%s\" has rows with NULL in its PRIMARY"
          " KEY column \"%s\"; SQLite allows NULL there in rowid tables, but a replica"
          " cannot match such rows by key: fill in the key or delete those rows, and"
          " declare the key columns NOT NULL", p->zName, zCol);
      rc = *pzErr ? SQLITE_ERROR : SQLITE_NOMEM;
    }
  }
  return rc;
}

/* Set the __sys columns p has to NULL, in every row that has a value. */
static int ctClearStamps(sqlite3 *db, const CtTable *p, char **pzErr){
  static const char *azCol[] = { CT_COL_CHANGE, CT_COL_INSERT, CT_COL_CONTEXT };
  int rc = SQLITE_OK;
  size_t i;
  for(i=0; rc==SQLITE_OK && i<sizeof(azCol)/sizeof(azCol[0]); i++){
    if( ctTableHasColumn(p, azCol[i]) ){
      rc = ctExecf(db, pzErr, "UPDATE main.\"%w\" SET \"%w\"=NULL WHERE \"%w\" IS NOT NULL",
                   p->zName, azCol[i], azCol[i]);
    }
  }
  return rc;
}

/*
** Turn tracking on for zTab, or refresh it when it is on already: re-install
** the triggers (new options take effect) and recreate what is missing.
**
** A tracked table that lost a tracking trigger was rebuilt behind
** sqlite-ct's back (sqlite-utils transform(), the 12-step ALTER procedure) or
** had its triggers dropped: writes since then were not tracked. Re-arming it
** also raises the table's minimum valid anchor to the re-arming transaction,
** so every replica with an older anchor is told to reinitialise
** (AnchorError) instead of silently missing those changes.
*/
/*
** After ALTER TABLE T RENAME TO X, sqlite-ct's triggers, change index and
** guard keep their names ("__sysct_ai_T") on table X until the rename is
** followed (sqlite_ct_rename_tracking(T, X); the Python API does it when it
** reconciles). Tracking a new table T before that would drop X's objects by
** name and leave X untracked without a word: refused, naming X.
*/
static int ctRefuseRenamedObjects(sqlite3 *db, const char *zTab, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  char *zSql = sqlite3_mprintf(
      "SELECT tbl_name FROM main.sqlite_schema WHERE name IN ('__sysct_ai_' || %Q,"
      " '__sysct_au_' || %Q, '__sysct_ad_' || %Q, '__sysct_chg_' || %Q,"
      " '__sysct_guard_' || %Q, '__sysct_cap_' || %Q) AND tbl_name <> %Q COLLATE NOCASE LIMIT 1",
      zTab, zTab, zTab, zTab, zTab, zTab, zTab);
  int rc;
  if( zSql==0 ) return SQLITE_NOMEM;
  rc = sqlite3_prepare_v2(db, zSql, -1, &pStmt, 0);
  sqlite3_free(zSql);
  if( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
    const char *zOwner = (const char*)sqlite3_column_text(pStmt, 0);
    *pzErr = sqlite3_mprintf("sqlite-ct: table \"%s\" was renamed to \"%s\" and its tracking"
        " has not followed yet; call sqlite_ct_rename_tracking('%q', '%q') (the Python"
        " API does it: sqlite_ct.tracked_tables() or check()) before tracking a new"
        " table \"%s\"", zTab, zOwner ? zOwner : "", zTab, zOwner ? zOwner : "", zTab);
    rc = *pzErr ? SQLITE_ERROR : SQLITE_NOMEM;
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
  }
  if( rc!=SQLITE_OK && rc!=SQLITE_NOMEM && *pzErr==0 ){
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  }
  return rc;
}

static int ctCreateSchema(CtState *pState, const char *zTab, int eOpt, int bPortable,
                          sqlite3_int64 *piEnable, char **pzErr){
  const int eStored = eOpt*16 | (bPortable ? CT_TRACKOPT_PORTABLE : 0);
  sqlite3 *db = pState->db;
  CtTable *p = 0;
  sqlite3_int64 iOpt = 0, iEnable = 0, iArmed = 0, iNow = 0;
  int bTracked = 0, bNull = 1;
  int rc = ctCheckLayout(db, pState, 1, pzErr);
  if( rc==SQLITE_OK ) rc = ctTableLoad(db, zTab, &p, pzErr);
  if( rc==SQLITE_OK && bPortable && p->zExprUnique ){
    *pzErr = sqlite3_mprintf(
        "sqlite-ct: table \"%s\" has a UNIQUE index on an expression (\"%s\");"
        " in portable mode INSERT OR REPLACE through it would delete rows sqlite-ct"
        " cannot see; index plain columns instead, or track the table in native mode",
        p->zName, p->zExprUnique);
    rc = *pzErr ? SQLITE_ERROR : SQLITE_NOMEM;
  }
  if( rc==SQLITE_OK ) rc = ctRefuseNullKeys(db, p, pzErr);
  if( rc==SQLITE_OK ) rc = ctRefuseRenamedObjects(db, p->zName, pzErr);
  if( rc==SQLITE_OK ){
    rc = ctQueryInt64(db, &iOpt, &bNull, pzErr,
        "SELECT __sysTrackOpt FROM main.__sysOCSTrackedObjects WHERE __sysTName=%Q",
        p->zName);
    bTracked = !bNull;
  }
  if( rc==SQLITE_OK && bTracked ){
    rc = ctQueryInt64(db, &iEnable, 0, pzErr,
        "SELECT __sysEnableTxBsn FROM main.__sysOCSTrackedObjects WHERE __sysTName=%Q",
        p->zName);
    if( rc==SQLITE_OK ){
      rc = ctQueryInt64(db, &iArmed, 0, pzErr,
          "SELECT count(*) FROM main.sqlite_schema WHERE type='trigger' AND tbl_name=%Q"
          " AND name IN ('__sysct_ai_' || %Q, '__sysct_au_' || %Q, '__sysct_ad_' || %Q)",
          p->zName, p->zName, p->zName, p->zName);
    }
    if( rc==SQLITE_OK
     && (iArmed<2+(((iOpt & 0xF0)/16 & CT_TRACK_DELETE)!=0)
         || !ctTableHasColumn(p, CT_COL_CHANGE)) ){
      rc = ctAllocateBsn(pState, &iNow, pzErr);
      /* Writes went untracked, deletes of rows a sync provider applied (stamp
      ** 0) included: even anchor 0 cannot list them (see
      ** CT_META_ANCHOR0_EXPIRED). */
      if( rc==SQLITE_OK ){
        rc = ctExecf(db, pzErr,
            "UPDATE main.__sysOCSTrackedObjects SET __sysMinValidCsn=%lld"
            " WHERE __sysTName=%Q;"
            "INSERT OR REPLACE INTO main.__sysCtMeta(key, value)"
            " VALUES('" CT_META_ANCHOR0_EXPIRED "' || %Q, 1);", iNow, p->zName, p->zName);
      }
    }
    if( rc==SQLITE_OK && iOpt!=eStored ){
      rc = ctExecf(db, pzErr,
          "UPDATE main.__sysOCSTrackedObjects SET __sysTrackOpt=%d WHERE __sysTName=%Q",
          eStored, p->zName);
    }
  }else if( rc==SQLITE_OK ){
    sqlite3_int64 iRetired = 0;
    rc = ctAllocateBsn(pState, &iEnable, pzErr);
    /* Tracked before under this name (disable_tracking(), or a DROP TABLE
    ** followed): changes since then went unrecorded, so an anchor from that
    ** time must not be taken for a valid one. */
    if( rc==SQLITE_OK ){
      rc = ctQueryInt64(db, &iRetired, 0, pzErr,
          "SELECT count(*) FROM main.__sysCtMeta WHERE key='retired_table:' || %Q",
          p->zName);
    }
    if( rc==SQLITE_OK ){
      rc = ctExecf(db, pzErr,
          "INSERT INTO main.__sysOCSTrackedObjects(__sysTName, __sysTrackOpt,"
          " __sysTrackType, __sysTrackColOrd, __sysEnableTxBsn, __sysMinValidCsn)"
          " VALUES(%Q, %d, 1, NULL, %lld, %lld);"
          "DELETE FROM main.__sysCtMeta WHERE key='retired_table:' || %Q;",
          p->zName, eStored, iEnable, iRetired ? iEnable : 0, p->zName);
    }
    /* Stamps the table carries already are not this database's: columns
    ** copied from a tracked table (CREATE TABLE AS, INSERT ... SELECT *), or
    ** left by a tool. Adopting them could hide rows from every enumeration;
    ** without them the rows count as inserted by the enabling transaction. */
    if( rc==SQLITE_OK ) rc = ctDropTriggers(db, p->zName, pzErr);
    if( rc==SQLITE_OK ) rc = ctClearStamps(db, p, pzErr);
  }
  if( rc==SQLITE_OK && !ctTableHasColumn(p, CT_COL_CHANGE) ){
    rc = ctExecf(db, pzErr, "ALTER TABLE main.\"%w\" ADD COLUMN \"" CT_COL_CHANGE
                 "\" INTEGER", p->zName);
  }
  if( rc==SQLITE_OK && !ctTableHasColumn(p, CT_COL_INSERT) ){
    rc = ctExecf(db, pzErr, "ALTER TABLE main.\"%w\" ADD COLUMN \"" CT_COL_INSERT
                 "\" INTEGER", p->zName);
  }
  if( rc==SQLITE_OK && !ctTableHasColumn(p, CT_COL_CONTEXT) ){
    rc = ctExecf(db, pzErr, "ALTER TABLE main.\"%w\" ADD COLUMN \"" CT_COL_CONTEXT
                 "\" BLOB", p->zName);
  }
  if( rc==SQLITE_OK ){
    rc = ctExecf(db, pzErr,
        "CREATE INDEX IF NOT EXISTS main.\"__sysct_chg_%w\" ON \"%w\"(\"" CT_COL_CHANGE "\")",
        p->zName, p->zName);
  }
  if( rc==SQLITE_OK ){
    rc = ctSetStampDefaults(db, p->zName, !bPortable && (eOpt & CT_TRACK_INSERT)!=0, pzErr);
  }
  if( rc==SQLITE_OK ) rc = ctInstallTriggers(db, pState, p, eStored, iEnable, pzErr);
  *piEnable = iEnable;
  ctTableFree(p);
  return rc;
}

/* Close SAVEPOINT sqlite_ct: release it when the work succeeded (rc is
** SQLITE_OK), otherwise roll it back so nothing is left half done. */
static int ctEndSavepoint(sqlite3 *db, char **pzErr, int rc){
  if( rc==SQLITE_OK ){
    rc = sqlite3_exec(db, "RELEASE sqlite_ct", 0, 0, 0);
    if( rc!=SQLITE_OK && *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  }else{
    sqlite3_exec(db, "ROLLBACK TO sqlite_ct; RELEASE sqlite_ct", 0, 0, 0);
  }
  return rc;
}

static void ctResultErr(sqlite3_context *ctx, int rc, char *zErr){
  if( rc==SQLITE_NOMEM ){
    sqlite3_result_error_nomem(ctx);
  }else{
    sqlite3_result_error(ctx, zErr ? zErr : "sqlite-ct: internal error", -1);
    sqlite3_result_error_code(ctx, rc==SQLITE_SCHEMA ? SQLITE_ERROR : rc);
  }
  sqlite3_free(zErr);
}

static const char *ctTableArg(sqlite3_context *ctx, sqlite3_value *v, const char *zFunc){
  /* The type first: sqlite3_value_text() would convert a BLOB argument. */
  const char *z = sqlite3_value_type(v)==SQLITE_TEXT ? (const char*)sqlite3_value_text(v) : 0;
  if( z==0 || z[0]==0 ){
    char *zErr = sqlite3_mprintf("sqlite-ct: %s() needs a table name", zFunc);
    ctResultErr(ctx, zErr ? SQLITE_ERROR : SQLITE_NOMEM, zErr);
    return 0;
  }
  /* The C string ends at the first NUL: "t\0x" would name table "t". */
  if( (int)strlen(z)!=sqlite3_value_bytes(v) ){
    char *zErr = sqlite3_mprintf("sqlite-ct: %s(): a table name cannot contain a NUL"
                                 " character", zFunc);
    ctResultErr(ctx, zErr ? SQLITE_ERROR : SQLITE_NOMEM, zErr);
    return 0;
  }
  return z;
}

void ctFuncCreateSchema(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *pState = (CtState*)sqlite3_user_data(ctx);
  sqlite3 *db = pState->db;
  const char *zTab = ctTableArg(ctx, argv[0], "sqlite_ct_create_schema");
  int eOpt = CT_TRACK_ALL;
  int bPortable = 0;
  sqlite3_int64 iEnable = 0;
  char *zErr = 0;
  int rc;
  if( zTab==0 ) return;
  if( argc>1 ){
    if( sqlite3_value_type(argv[1])!=SQLITE_INTEGER
     || sqlite3_value_int64(argv[1])<1 || sqlite3_value_int64(argv[1])>CT_TRACK_ALL ){
      ctResultErr(ctx, SQLITE_ERROR, sqlite3_mprintf(
          "sqlite-ct: tracking options must be an integer from 1 to 7"
          " (1 insert, 2 update, 4 delete, 7 all)"));
      return;
    }
    eOpt = (int)sqlite3_value_int64(argv[1]);
  }
  if( argc>2 ){
    const char *zMode = (const char*)sqlite3_value_text(argv[2]);
    if( zMode && sqlite3_stricmp(zMode, "portable")==0 ) bPortable = 1;
    else if( zMode==0 || sqlite3_stricmp(zMode, "native")!=0 ){
      ctResultErr(ctx, SQLITE_ERROR, sqlite3_mprintf(
          "sqlite-ct: tracking mode must be 'native' or 'portable'"));
      return;
    }
  }
  if( pState->bApply ){
    ctResultErr(ctx, SQLITE_ERROR, sqlite3_mprintf(
        "sqlite-ct: cannot enable tracking while the connection is in apply mode"));
    return;
  }
  rc = sqlite3_exec(db, "SAVEPOINT sqlite_ct", 0, 0, 0);
  if( rc!=SQLITE_OK ){
    ctResultErr(ctx, rc, sqlite3_mprintf("sqlite-ct: %s", sqlite3_errmsg(db)));
    return;
  }
  rc = ctEndSavepoint(db, &zErr, ctCreateSchema(pState, zTab, eOpt, bPortable, &iEnable, &zErr));
  if( rc!=SQLITE_OK ){ ctResultErr(ctx, rc, zErr); return; }
  sqlite3_result_int64(ctx, iEnable);
}

/* Mark (bOn) or unmark the write transaction as one of sqlite-ct's own calls
** that remove or rename tombstones, which the guard triggers of
** __sysOCSDeletedRows let through (azCtSystemDdl). Inside the caller's
** savepoint: a failure rolls the mark back with the rest. */
static int ctOwnTombstones(sqlite3 *db, int bOn, char **pzErr){
  return bOn ? ctExecf(db, pzErr, "INSERT OR REPLACE INTO main.__sysCtMeta(key, value)"
                                  " VALUES('" CT_META_TOMB_OWNED "', 1)")
             : ctExecf(db, pzErr, "DELETE FROM main.__sysCtMeta WHERE key='"
                                  CT_META_TOMB_OWNED "'");
}

static int ctDisable(sqlite3 *db, const char *zTab, char **pzErr){
  sqlite3_int64 n = 0;
  char *zName = 0;
  int rc = ctCheckLayout(db, 0, 0, pzErr);
  if( rc==SQLITE_OK ){
    rc = ctQueryInt64(db, &n, 0, pzErr,
        "SELECT count(*) FROM main.sqlite_schema"
        " WHERE type='table' AND name='__sysOCSTrackedObjects'");
  }
  if( rc==SQLITE_OK && n ){
    rc = ctQueryText(db, "SELECT __sysTName FROM main.__sysOCSTrackedObjects"
                     " WHERE __sysTName=?1 COLLATE NOCASE", zTab, &zName, pzErr);
  }
  if( rc==SQLITE_OK && zName==0 ){
    *pzErr = sqlite3_mprintf("sqlite-ct: table \"%s\" is not tracked", zTab);
    return SQLITE_ERROR;
  }
  if( rc==SQLITE_OK ) rc = ctDropTriggers(db, zName, pzErr);
  if( rc==SQLITE_OK ) rc = ctDropGuard(db, zName, pzErr);
  if( rc==SQLITE_OK ) rc = ctDropCapture(db, zName, pzErr);
  if( rc==SQLITE_OK ){
    rc = ctExecf(db, pzErr, "DROP INDEX IF EXISTS main.\"__sysct_chg_%w\"", zName);
  }
  if( rc==SQLITE_OK ){
    rc = ctQueryInt64(db, &n, 0, pzErr,
        "SELECT count(*) FROM main.sqlite_schema WHERE type='table' AND name=%Q", zName);
  }
  if( rc==SQLITE_OK && n ){
    CtTable *p = 0;
    rc = ctTableLoad(db, zName, &p, pzErr);
    if( rc==SQLITE_OK && ctTableHasColumn(p, CT_COL_CONTEXT) ){
      rc = ctExecf(db, pzErr, "ALTER TABLE main.\"%w\" DROP COLUMN \"" CT_COL_CONTEXT "\"", zName);
    }
    if( rc==SQLITE_OK && ctTableHasColumn(p, CT_COL_INSERT) ){
      rc = ctExecf(db, pzErr, "ALTER TABLE main.\"%w\" DROP COLUMN \"" CT_COL_INSERT "\"", zName);
    }
    if( rc==SQLITE_OK && ctTableHasColumn(p, CT_COL_CHANGE) ){
      rc = ctExecf(db, pzErr, "ALTER TABLE main.\"%w\" DROP COLUMN \"" CT_COL_CHANGE "\"", zName);
    }
    ctTableFree(p);
  }
  if( rc==SQLITE_OK ) rc = ctOwnTombstones(db, 1, pzErr);
  if( rc==SQLITE_OK ){
    rc = ctExecf(db, pzErr,
        "DELETE FROM main.__sysOCSDeletedRows WHERE __sysTName=%Q;"
        "DELETE FROM main.__sysCtReplaceVictims WHERE __sysTName=%Q;"
        "DELETE FROM main.__sysSyncArticles WHERE TableName=%Q;"
        "DELETE FROM main.__sysOCSTrackedObjects WHERE __sysTName=%Q;"
        "INSERT OR REPLACE INTO main.__sysCtMeta(key, value)"
        " VALUES('retired_table:' || %Q, 1);"
        "DELETE FROM main.__sysCtMeta WHERE key='" CT_META_ANCHOR0_EXPIRED "' || %Q;",
        zName, zName, zName, zName, zName, zName);
  }
  if( rc==SQLITE_OK ) rc = ctOwnTombstones(db, 0, pzErr);
  sqlite3_free(zName);
  return rc;
}

void ctFuncDisableTracking(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *pState = (CtState*)sqlite3_user_data(ctx);
  sqlite3 *db = pState->db;
  const char *zTab = ctTableArg(ctx, argv[0], "sqlite_ct_disable_tracking");
  char *zErr = 0;
  int rc;
  (void)argc;
  if( zTab==0 ) return;
  rc = sqlite3_exec(db, "SAVEPOINT sqlite_ct", 0, 0, 0);
  if( rc!=SQLITE_OK ){
    ctResultErr(ctx, rc, sqlite3_mprintf("sqlite-ct: %s", sqlite3_errmsg(db)));
    return;
  }
  rc = ctEndSavepoint(db, &zErr, ctDisable(db, zTab, &zErr));
  if( rc!=SQLITE_OK ){ ctResultErr(ctx, rc, zErr); return; }
  sqlite3_result_int(ctx, 1);
}

void ctFuncIsTracked(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  const char *zTab = ctTableArg(ctx, argv[0], "sqlite_ct_is_tracked");
  sqlite3_int64 n = 0;
  char *zErr = 0;
  int rc;
  (void)argc;
  if( zTab==0 ) return;
  rc = ctQueryInt64(db, &n, 0, &zErr,
      "SELECT count(*) FROM main.sqlite_schema"
      " WHERE type='table' AND name='__sysOCSTrackedObjects'");
  if( rc==SQLITE_OK && n ){
    rc = ctQueryInt64(db, &n, 0, &zErr,
        "SELECT count(*) FROM main.__sysOCSTrackedObjects"
        " WHERE __sysTName=%Q COLLATE NOCASE", zTab);
  }
  if( rc!=SQLITE_OK ){ ctResultErr(ctx, rc, zErr); return; }
  sqlite3_result_int(ctx, n>0);
}

/*
** Follow an ALTER TABLE RENAME TO: SQLite renamed the table inside the trigger
** bodies, but not the table name sqlite-ct keeps as data (registry, tombstones,
** sync article, trigger and index names). Move all of it to the new name and
** re-install the triggers, keeping the enabling BSN and the options.
*/
static int ctRename(CtState *pState, const char *zOld, const char *zNew, char **pzErr){
  sqlite3 *db = pState->db;
  sqlite3_int64 iOpt = 0, iEnable = 0;
  int bNull = 1;
  CtTable *p = 0;
  int rc = ctCheckLayout(db, 0, 0, pzErr);
  if( rc==SQLITE_OK ){
    rc = ctQueryInt64(db, &iOpt, &bNull, pzErr,
        "SELECT __sysTrackOpt FROM main.__sysOCSTrackedObjects WHERE __sysTName=%Q", zOld);
  }
  if( rc==SQLITE_OK && bNull ){
    *pzErr = sqlite3_mprintf("sqlite-ct: table \"%s\" is not tracked", zOld);
    return SQLITE_ERROR;
  }
  if( rc==SQLITE_OK ) rc = ctTableLoad(db, zNew, &p, pzErr);
  if( rc==SQLITE_OK ){
    rc = ctQueryInt64(db, &iEnable, 0, pzErr,
        "SELECT __sysEnableTxBsn FROM main.__sysOCSTrackedObjects WHERE __sysTName=%Q", zOld);
  }
  if( rc==SQLITE_OK ) rc = ctDropTriggers(db, zOld, pzErr);
  if( rc==SQLITE_OK ) rc = ctDropGuard(db, zOld, pzErr);
  if( rc==SQLITE_OK ) rc = ctDropCapture(db, zOld, pzErr);
  if( rc==SQLITE_OK ) rc = ctOwnTombstones(db, 1, pzErr);
  if( rc==SQLITE_OK ){
    rc = ctExecf(db, pzErr,
        "DROP INDEX IF EXISTS main.\"__sysct_chg_%w\";"
        "UPDATE main.__sysOCSTrackedObjects SET __sysTName=%Q WHERE __sysTName=%Q;"
        "UPDATE main.__sysOCSDeletedRows SET __sysTName=%Q WHERE __sysTName=%Q;"
        "UPDATE main.__sysSyncArticles SET TableName=%Q WHERE TableName=%Q;"
        "DELETE FROM main.__sysCtReplaceVictims WHERE __sysTName=%Q;"
        "UPDATE main.__sysCtMeta SET key='" CT_META_ANCHOR0_EXPIRED "' || %Q"
        " WHERE key='" CT_META_ANCHOR0_EXPIRED "' || %Q;"
        "CREATE INDEX IF NOT EXISTS main.\"__sysct_chg_%w\" ON \"%w\"(\"" CT_COL_CHANGE "\");",
        zOld, p->zName, zOld, p->zName, zOld, p->zName, zOld, zOld, p->zName, zOld,
        p->zName, p->zName);
  }
  if( rc==SQLITE_OK ) rc = ctOwnTombstones(db, 0, pzErr);
  if( rc==SQLITE_OK ) rc = ctInstallTriggers(db, pState, p, (int)iOpt, iEnable, pzErr);
  ctTableFree(p);
  return rc;
}

void ctFuncRenameTracking(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *pState = (CtState*)sqlite3_user_data(ctx);
  sqlite3 *db = pState->db;
  const char *zOld = ctTableArg(ctx, argv[0], "sqlite_ct_rename_tracking");
  const char *zNew = zOld ? ctTableArg(ctx, argv[1], "sqlite_ct_rename_tracking") : 0;
  char *zErr = 0;
  int rc;
  (void)argc;
  if( zNew==0 ) return;
  rc = sqlite3_exec(db, "SAVEPOINT sqlite_ct", 0, 0, 0);
  if( rc!=SQLITE_OK ){
    ctResultErr(ctx, rc, sqlite3_mprintf("sqlite-ct: %s", sqlite3_errmsg(db)));
    return;
  }
  rc = ctEndSavepoint(db, &zErr, ctRename(pState, zOld, zNew, &zErr));
  if( rc!=SQLITE_OK ){ ctResultErr(ctx, rc, zErr); return; }
  sqlite3_result_int(ctx, 1);
}

void ctFuncCreateSystemTables(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *pState = (CtState*)sqlite3_user_data(ctx);
  sqlite3 *db = pState->db;
  char *zErr = 0;
  int rc;
  (void)argc; (void)argv;
  rc = sqlite3_exec(db, "SAVEPOINT sqlite_ct", 0, 0, 0);
  if( rc!=SQLITE_OK ){
    ctResultErr(ctx, rc, sqlite3_mprintf("sqlite-ct: %s", sqlite3_errmsg(db)));
    return;
  }
  rc = ctEndSavepoint(db, &zErr, ctCheckLayout(db, pState, 1, &zErr));
  if( rc!=SQLITE_OK ){ ctResultErr(ctx, rc, zErr); return; }
  sqlite3_result_int(ctx, CT_LAYOUT_VERSION);
}

void ctFuncCheckLayout(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  sqlite3_int64 iHave = 0, iMeta = 0;
  char *zErr = 0;
  int rc;
  (void)argc; (void)argv;
  rc = ctCheckLayout(db, 0, 0, &zErr);
  if( rc==SQLITE_OK ){
    rc = ctQueryInt64(db, &iMeta, 0, &zErr,
        "SELECT count(*) FROM main.sqlite_schema WHERE type='table' AND name='__sysCtMeta'");
  }
  if( rc==SQLITE_OK && iMeta ){
    rc = ctQueryInt64(db, &iHave, 0, &zErr,
        "SELECT value FROM main.__sysCtMeta WHERE key='layout_version'");
  }
  if( rc!=SQLITE_OK ){ ctResultErr(ctx, rc, zErr); return; }
  sqlite3_result_int64(ctx, iHave);
}

void ctFuncLayoutVersion(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  (void)argc; (void)argv;
  sqlite3_result_int(ctx, CT_LAYOUT_VERSION);
}
