/*
** changes.c -- the change contract: what changed in a tracked table in the
** anchor window (since, until].
**
** SQL SURFACE: the eponymous, read-only table-valued function
**
**   sqlite_ct_changes(TBL, SINCE [, UNTIL [, EXCLUDE_CONTEXT [, TOMBSTONES
**                     [, AFTER_BSN [, AFTER_KEY]]]]])
**
** one row per change of tracked table TBL committed after anchor SINCE, up to
** UNTIL (omitted or NULL: the last committed CSN of the reading snapshot), with the
** columns
**
**   op          'D' delete, 'I' insert, 'U' update (TEXT)
**   change_bsn  the BSN of the change: a row's __sysChangeTxBsn, the enabling
**               BSN for a row with NULL stamps (it predates tracking and counts
**               as written by the enabling transaction), a delete's newest
**               tombstone in the window
**   insert_bsn  the BSN that inserted the row (NULL stamps: the enabling BSN);
**               for a delete the oldest insert BSN of the key's tombstones in
**               the window (at or before SINCE: the replica had the row)
**   context     the tracking context (16-byte GUID) of the latest change, or
**               NULL
**   pk          the key, packed as sqlite_ct_pack_key() packs it (the binary
**               form, for portable tables too); unpack with
**               sqlite_ct_unpack_key(pk, i)
**   row_rowid   the rowid of the live row, to join the table for the row's
**               values; NULL for deletes, WITHOUT ROWID tables and tables whose
**               columns named rowid, _rowid_ and oid all hide the rowid (join
**               those by key)
**   stamped     1 for a row stamped in the window, 0 for a row with NULL
**               stamps, NULL for a delete
**
** and the hidden argument columns tbl, since, until, exclude_context,
** tombstones, after_bsn, after_key.
**
** ORDER. Rows come in this order, which readers may rely on (a LIMIT stops
** the reads there; SQLite is promised nothing, so an ORDER BY still sorts):
** the deletes (one per key: in no promised order; TOMBSTONES = 'each': by
** change_bsn, then the key as stored), then the rows with NULL stamps, then
** the rows stamped in the window by change_bsn; live rows with the same
** change_bsn by the table's order: rowid, or the PRIMARY KEY columns of a
** WITHOUT ROWID table (in key order, each with its collation). A constraint
** stamped = 0 or stamped = 1 reads that phase alone (and no delete).
**
** PAGING. AFTER_BSN (an INTEGER) and AFTER_KEY (a packed key, or NULL)
** resume after a position read before: only rows after (AFTER_BSN,
** AFTER_KEY) in the order above, within their phase, come. The position of a
** live row is (change_bsn, its packed rowid: sqlite_ct_pack_key(row_rowid))
** or, for a WITHOUT ROWID table, (change_bsn, pk); of a tombstone
** (TOMBSTONES = 'each') (change_bsn, pk). AFTER_KEY NULL: after every row of
** AFTER_BSN. Each phase seeks its index to the position, so a window is read
** page by page (LIMIT) without reading the earlier pages again, also when
** all its rows were written by one transaction or predate tracking. The one
** delete per key (TOMBSTONES 'key') has no position: AFTER_BSN with those
** deletes asked for is refused (leave them out with stamped = 0 or 1, or
** op <> 'D'). A table whose columns named rowid, _rowid_ and oid hide the
** rowid cannot resume after a key (refused).
**
** TOMBSTONES: NULL or 'key' (the default), one delete per key, by the rules
** below; 'each', every tombstone in the window as a row, with no rule
** applied: op 'D', change_bsn the delete BSN, insert_bsn the insert CSN the
** tombstone carries, context the deleting transaction's, pk the key. A
** reader with a delete rule of its own reads these: the SQLite hub's
** downloads send every tombstone another client wrote (EXCLUDE_CONTEXT) whose
** key is not back in the client's scope, also of rows inserted inside the
** window (the client's own uploads land there). A portable table stores its
** tombstones' keys in another form: 'each' is refused for it.
**
** A constraint op = 'D' / 'I' / 'U' (or op <> 'D'), compared
** with the BINARY collation, is used to skip what is not asked for (under
** another collation SQLite compares each row); any other op value matches nothing, and the
** arguments are still checked: "WHERE op = ''" validates an anchor and reads
** nothing.
**
** A lower bound change_bsn > X (or >= X) and an upper bound change_bsn < Y
** (or <= Y) narrow what is read, so that a reader can take the window in
** slices (the sync client's upload batches, one run of client transactions
** each) without reading the earlier slices again: the stamped rows' index
** range starts above max(SINCE, X) and ends at min(UNTIL, Y); the rows with
** NULL stamps are read only when the enabling BSN is inside the bounds; the
** deletes phase keeps the keys whose newest tombstone in (SINCE, UNTIL] is
** inside the bounds (HAVING max(delete BSN) > X ...), and so still reads the
** tombstones of the whole window, grouped by key (a key's newest tombstone
** and its oldest insert BSN are those of the window, not of the slice). The
** bounds change nothing else: insert or update is decided against SINCE, and
** change_bsn is the one of the window (SINCE, UNTIL], so the slices of a
** window are exactly its rows, each in one slice. An INTEGER or REAL bound
** narrows the reads (a REAL one to the integers it admits); a bound of
** another type narrows nothing. The constraints are not omitted: SQLite
** compares every row with them too, so a bound means what SQLite says.
**
** THE RULES (the one place that spells them out; the Python enumeration, the
** CLI, the sync client's uploads and the SQLite hub's download windows read
** through here: see tests/test_change_contract_scan.py):
**   insert   a live row with since < change BSN <= until whose insert BSN is
**            above since
**   update   the same with the insert BSN at or below since
**   delete   a key with tombstones since < delete BSN <= until, one of which is
**            for a row inserted at or before since (one row per key, however
**            many times it was deleted in the window)
**   nothing  a row inserted and deleted inside the window
**   born     (op 'B', reported only to "WHERE op = 'B'", never otherwise) a key
**            with tombstones since < delete BSN <= until, every one of them for
**            a row inserted after since, that is not live: a row the window
**            saw born and deleted. A replica that never saw the row has nothing
**            to do; a sync client uploads these keys so that the hub can drop
**            a row it holds from an upload the client has since lost (a session
**            inside the caller's transaction rolled back, a restored backup).
** Rows with NULL stamps (present before tracking was enabled) count as
** inserted and changed by the enabling transaction. EXCLUDE_CONTEXT (a 16-byte
** GUID, or NULL) leaves out rows and tombstones whose latest writer carried
** that tracking context (what a hub skips when a client downloads its own
** uploads); with it, a key that is live again is no delete, as in the hub's
** downloads: its row is the reader's own (which a delete would remove from
** the reader) or reported, to be upserted. A replica that applies the deletes, then the inserts and updates
** as upserts, and next reads from UNTIL, ends equal to the table.
**
** ARGUMENTS AND ERRORS: TBL is the name of a tracked table of main (any
** case); SINCE a non-negative INTEGER no newer than the last committed CSN;
** UNTIL an INTEGER between SINCE and the last committed CSN, or NULL (the
** default, the last committed CSN). An anchor older
** than the table's oldest kept change (purge_tombstones(), a re-arm) is
** refused as expired, as the Python layer's AnchorExpiredError: anchor 0
** stays valid unless __sysCtMeta holds anchor0_expired:TBL. A read of live
** rows alone (stamped = 0 or 1) needs no tombstone and is not refused as
** expired; TOMBSTONES = 'each' is judged from max(SINCE, AFTER_BSN), where
** its reads start. A table that lost
** its triggers to a rebuild is refused. So is reading inside a transaction
** that holds a BSN (it wrote tracked rows of a native table: their
** uncommitted stamps hide the committed changes of those rows): commit or roll
** back first. So is any transaction that wrote in apply mode, or wrote
** anything while a table is tracked in portable mode (those writes leave no
** BSN to see), as the Python readers refuse (sqlite_ct_uncommitted_writes());
** one that natively wrote only other tables reads this one, unless this
** table does not track every kind of write. Every message starts
** with "sqlite-ct: " and is the one sqlite_ct/_conn.py maps to an error
** class.
**
** HOW IT WORKS: xFilter validates the arguments and reads the registry, the
** last committed CSN and then the changes with statements of the same
** connection, so they all read the caller's one snapshot (the read
** transaction of the statement that runs the function, or of the caller's
** transaction). It reads in phases, each one statement prepared in
** xFilter: tombstones grouped by key (the tombstone primary key starts with
** table and delete BSN; with 'each', that key's order, the rest of AFTER_BSN
** first; only when the registry statement found a tombstone of the table
** deleted after SINCE), rows with NULL stamps through the change index (only when the
** enabling BSN is in the window), and stamped rows through the change index
** __sysct_chg_TBL (the rest of AFTER_BSN first, then the later BSNs). Each
** statement's ORDER BY is the order above, which the index gives (no sort). Only
** the columns the query uses are computed (colUsed): a reader that joins on
** row_rowid pays no key packing, and a query of change_bsn and row_rowid
** alone (a count per transaction) reads the change index and no row (the
** insert BSN is read only for op, the context only when one is left out).
** xBestIndex requires TBL and SINCE (an error
** naming the function when they are missing) and accepts no constraint on
** row_rowid or pk, so in a join the changes are always the outer loop and
** the table is looked up by rowid or key; its cost estimate says the work
** follows the number of changes.
**
** STATEMENTS KEPT: the connection's one sqlite_ct_changes table (eponymous,
** connected once, disconnected at sqlite3_close() before SQLite looks for
** unfinalized statements, like stmtcache.c's) keeps the statements xFilter
** runs, prepared persistent and found again by their SQL text (a pool of
** CT_CHG_POOL; a statement in use by another cursor is not handed out
** twice), and what the schema alone says of a table (which system tables
** exist; its triggers, WITHOUT ROWID, key columns) with the schema version
** it was read at, which every schema change of any connection moves. Nothing
** read inside a write transaction is kept: a schema change rolled back
** leaves schema_version where it was. The layout, the registry row and the
** newest log row are data, read on every call (one statement). Before, each
** call prepared about a dozen statements, one of them again at every bind.
** The phases' statements of one query (its columns, constraints and kinds of
** arguments, ctChgPlanKey) on one kept shape are kept as a plan (CT_CHG_PLANS),
** and the next cursor of that query takes them by their pool slots, without
** formatting and comparing their text; a plan names the shape's generation
** and each statement's, so a slot that now holds another table's shape or
** another statement is a miss. The schema version is read with the
** connection's statement that sqlite_ct_schema_token() runs (stmtcache.c).
**
** The same file defines sqlite_ct_changes_sql(), sqlite_ct_snapshot() and
** sqlite_ct_schema_token() (below), with which enumerate_changes() reads
** anchor, deletes and live rows in one statement, and
** sqlite_ct_local_change().
**
** The storage behind this function (triggers, stamps, tombstones) may change;
** readers that use this function do not.
*/
#include "sqlite_ct.h"
#include <stdarg.h>
#include <string.h>

/* Output and argument columns, in declaration order. */
#define CTC_OP         0
#define CTC_CHANGE     1
#define CTC_INSERT     2
#define CTC_CONTEXT    3
#define CTC_PK         4
#define CTC_ROWID      5
#define CTC_STAMPED    6
#define CTC_TBL        7
#define CTC_SINCE      8
#define CTC_UNTIL      9
#define CTC_EXCLUDE    10
#define CTC_TOMBS      11
#define CTC_AFTER_BSN  12
#define CTC_AFTER_KEY  13
#define CT_NARG        7     /* hidden arguments, tbl ... after_key */

/* idxNum bits: the output columns used (bits 0-5, colUsed), which optional
** arguments are bound, and the op constraint. */
#define CTX_UNTIL    0x0100
#define CTX_EXCLUDE  0x0200
#define CTX_OP_EQ    0x0400
#define CTX_OP_NE    0x0800
#define CTX_LO_GT    0x1000    /* change_bsn > X */
#define CTX_LO_GE    0x2000    /* change_bsn >= X */
#define CTX_HI_LT    0x4000    /* change_bsn < Y */
#define CTX_HI_LE    0x8000    /* change_bsn <= Y */
#define CTX_TOMBS    0x10000   /* tombstones bound */
#define CTX_AFTER_B  0x20000   /* after_bsn bound */
#define CTX_AFTER_K  0x40000   /* after_key bound */
#define CTX_STAMPED  0x80000   /* stamped = X */
#define CTX_COLS     0x007f

/* Phases of a cursor. */
#define CTP_DELETES_AT 0    /* tombstones='each': the rest of after_bsn */
#define CTP_DELETES    1
#define CTP_UNSTAMPED  2
#define CTP_STAMPED_AT 3    /* the rest of after_bsn's rows */
#define CTP_STAMPED    4
#define CTP_EOF        5
#define CTP_N          5

/* Statements kept by the connection's one sqlite_ct_changes table (see
** STATEMENTS KEPT in the header comment). */
#define CT_CHG_POOL 32
#define CT_CHG_SHAPES 8
#define CT_CHG_PLANS 8

/* A statement of the pool remembered by where it is (slot + 1, 0: none) and
** the generation it had there: found again without formatting or comparing
** its SQL text, and missed once the slot holds another statement. */
typedef struct CtChgRef CtChgRef;
struct CtChgRef {
  int iSlot1;
  unsigned int iGen;
};

/* The phases' statements ctChgPreparePhases() prepared for one query shape
** (see ctChgPlanKey) of one table at one schema version. */
typedef struct CtChgPlan CtChgPlan;
struct CtChgPlan {
  int iShape1;                 /* the kept shape it was made from (slot + 1), 0: none */
  unsigned int iShapeGen;      /* the generation of that shape */
  sqlite3_int64 iSchema;       /* at this schema version */
  unsigned int aKey[4];        /* ctChgPlanKey() */
  CtChgRef aPhase[CTP_N];
};

typedef struct CtChangesVtab CtChangesVtab;
struct CtChangesVtab {
  sqlite3_vtab base;
  sqlite3 *db;
  CtState *p;
  unsigned int iClock;         /* advances at each use, for eviction */
  struct CtChgPooled {
    sqlite3_stmt *pStmt;       /* prepared persistent, or 0 */
    unsigned int iHash;        /* of its SQL text */
    unsigned int iUsed;        /* iClock at its last use */
    unsigned int iGen;         /* iGenNext when it came into the slot */
    int bBusy;                 /* handed out and not yet given back */
  } aPool[CT_CHG_POOL];
  unsigned int iGenNext;
  CtChgRef rRegistry;          /* ctChgLoadTable()'s one statement */
  CtChgPlan aPlan[CT_CHG_PLANS];
  int iPlanNext;               /* the slot a new plan takes */
  /* What the schema says (ctChgLoadTable), valid at one schema version. */
  int bSysKnown;               /* fSys was read ... */
  sqlite3_int64 iSysSchema;    /* ... at this schema version */
  int fSys;                    /* CT_SYS_*: which system tables exist */
  struct CtChgShape {
    char *zName;               /* the table's stored name, or 0 */
    sqlite3_int64 iSchema;     /* the schema version it was read at */
    unsigned int iGen;         /* iShapeGen when it was kept */
    int nTrig;                 /* its tracking triggers */
    int bWithoutRowid;
    const char *zRowid;        /* a static string, or 0 */
    int nPk;
    char **azPk;
  } aShape[CT_CHG_SHAPES];
  int iShapeNext;              /* the slot a new table takes */
  unsigned int iShapeGen;
};

static int ctChgRelease(CtChangesVtab *v, sqlite3_stmt *pStmt);
static void ctChgShapeClear(CtChangesVtab *v, int i);

typedef struct CtChangesCursor CtChangesCursor;
struct CtChangesCursor {
  sqlite3_vtab_cursor base;
  CtChangesVtab *pTab;
  int iPhase;                  /* CTP_* */
  sqlite3_stmt *apStmt[CTP_N]; /* one statement per phase, 0 when skipped */
  sqlite3_int64 iSince;
  sqlite3_int64 iEnable;
  sqlite3_int64 iLow;          /* read change_bsn > iLow ... */
  sqlite3_int64 iHigh;         /* ... and <= iHigh */
  int bEach;                   /* tombstones='each': one row per tombstone */
  int bAfter;                  /* resume after (iAfterBsn, pAfterKey) */
  sqlite3_int64 iAfterBsn;
  sqlite3_value *pAfterKey;    /* the argument (or 0): bound, not kept */
  int bNoDeletes;              /* stamped = X leaves the deletes out */
  int eStamped;                /* -1 any; 0 or 1: only that live phase */
  char cOpWant;                /* 0: any; 'D', 'I', 'U'; 'X': none */
  char cOpNot;                 /* 0, or an op to leave out */
  char cOp;                    /* op of the current row */
  sqlite3_int64 iRow;          /* xRowid: a counter */
};

/* The table as xFilter needs it: stored name, registry values, key. */
typedef struct CtChgTable CtChgTable;
struct CtChgTable {
  char *zName;
  sqlite3_int64 iEnable;
  sqlite3_int64 iMinValid;
  int bZeroExpired;
  int bPortable;
  int eOpt;                    /* TrackingOptions */
  int bWithoutRowid;
  int bLog;                    /* __sysTxCommitSequence exists */
  int bMaxCsn;                 /* iMaxCsn was read with the registry row */
  sqlite3_int64 iMaxCsn;       /* the newest log row's CSN, then */
  const char *zRowid;          /* a name of the rowid, or 0 */
  int nPk;
  char **azPk;                 /* key columns in PRIMARY KEY order */
  int bTombs;                  /* it may have a tombstone after SINCE (ctChgLoadTable) */
  int iShape1;                 /* the kept shape it came from or went to (slot + 1), or 0 */
  sqlite3_int64 iSchema;       /* the schema version it was read at */
};

static void ctChgTableClear(CtChgTable *t){
  int i;
  sqlite3_free(t->zName);
  for(i=0; i<t->nPk; i++) sqlite3_free(t->azPk[i]);
  sqlite3_free(t->azPk);
  memset(t, 0, sizeof(*t));
}

/* Set the vtab's error message (takes ownership of zErr); the code for it. */
static int ctChgError(sqlite3_vtab *pVtab, int rc, char *zErr){
  sqlite3_free(pVtab->zErrMsg);
  pVtab->zErrMsg = zErr;
  if( rc==SQLITE_OK ) rc = SQLITE_ERROR;
  if( rc==SQLITE_SCHEMA ) rc = SQLITE_ERROR;   /* never SQLITE_SCHEMA */
  if( zErr==0 && rc!=SQLITE_NOMEM ){
    pVtab->zErrMsg = sqlite3_mprintf("sqlite-ct: sqlite_ct_changes(): %s",
                                     sqlite3_errstr(rc));
  }
  return rc;
}

static int ctChgConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                        sqlite3_vtab **ppVtab, char **pzErr){
  CtChangesVtab *v;
  int rc;
  (void)argc; (void)argv; (void)pzErr;
  rc = sqlite3_declare_vtab(db,
      "CREATE TABLE x(op TEXT, change_bsn INTEGER, insert_bsn INTEGER, context BLOB,"
      " pk BLOB, row_rowid INTEGER, stamped INTEGER, tbl HIDDEN, since HIDDEN,"
      " until HIDDEN, exclude_context HIDDEN, tombstones HIDDEN, after_bsn HIDDEN,"
      " after_key HIDDEN)");
  if( rc!=SQLITE_OK ) return rc;
  /* Innocuous: it only reads, and only tracking data a caller could read by
  ** plain SELECTs. It is not SQLITE_VTAB_DIRECTONLY, so views may use it. */
  sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
  v = sqlite3_malloc(sizeof(*v));
  if( v==0 ) return SQLITE_NOMEM;
  memset(v, 0, sizeof(*v));
  v->db = db;
  v->p = (CtState*)pAux;
  *ppVtab = &v->base;
  return SQLITE_OK;
}

/* The connection is closing (sqlite3_close() disconnects its virtual tables
** before it checks for unfinalized statements) or the module is replaced:
** finalize the kept statements that the connection still lists. */
static int ctChgDisconnect(sqlite3_vtab *pVtab){
  CtChangesVtab *v = (CtChangesVtab*)pVtab;
  int i;
  for(i=0; i<CT_CHG_POOL; i++){
    if( v->aPool[i].pStmt && ctStmtListed(v->db, v->aPool[i].pStmt) ){
      sqlite3_finalize(v->aPool[i].pStmt);
    }
  }
  for(i=0; i<CT_CHG_SHAPES; i++) ctChgShapeClear(v, i);
  sqlite3_free(pVtab);
  return SQLITE_OK;
}

/*
** TBL and SINCE are required: with no constraint on one of them the query
** is an error that says how to call the function; with one that cannot be
** used in this plan (a join column of a later table), SQLITE_CONSTRAINT
** makes the planner choose another order. Nothing else is accepted but op
** and bounds on change_bsn, so a join never drives this table from the other
** side. The bounds are never omitted: they only narrow the reads, SQLite
** still compares each row (the exact rule for a value of any type).
*/
static int ctChgBestIndex(sqlite3_vtab *pVtab, sqlite3_index_info *pInfo){
  /* tbl, since, until, exclude, tombstones, after_bsn, after_key */
  int aiArg[CT_NARG] = { -1, -1, -1, -1, -1, -1, -1 };
  int bSeen[CT_NARG] = { 0, 0, 0, 0, 0, 0, 0 };
  int iOp = -1, eOp = 0, iStamped = -1;
  int iLo = -1, eLo = 0, iHi = -1, eHi = 0;
  int i, nArg = 0, idxNum;
  double nRow;
  for(i=0; i<pInfo->nConstraint; i++){
    const struct sqlite3_index_constraint *c = &pInfo->aConstraint[i];
    if( c->iColumn>=CTC_TBL && c->iColumn<=CTC_AFTER_KEY ){
      int j = c->iColumn - CTC_TBL;
      if( c->op!=SQLITE_INDEX_CONSTRAINT_EQ ) continue;
      bSeen[j] = 1;
      if( c->usable && aiArg[j]<0 ) aiArg[j] = i;
    }else if( c->iColumn==CTC_OP && c->usable && iOp<0
           && (c->op==SQLITE_INDEX_CONSTRAINT_EQ || c->op==SQLITE_INDEX_CONSTRAINT_NE)
           && sqlite3_stricmp(sqlite3_vtab_collation(pInfo, i), "BINARY")==0 ){
      /* Only a BINARY comparison is the exact match xFilter applies; under
      ** another collation (op = 'i' COLLATE NOCASE) SQLite checks it. */
      iOp = i;
      eOp = c->op==SQLITE_INDEX_CONSTRAINT_EQ ? CTX_OP_EQ : CTX_OP_NE;
    }else if( c->iColumn==CTC_STAMPED && c->usable && iStamped<0
           && c->op==SQLITE_INDEX_CONSTRAINT_EQ ){
      iStamped = i;
    }else if( c->iColumn==CTC_CHANGE && c->usable ){
      if( iLo<0 && (c->op==SQLITE_INDEX_CONSTRAINT_GT || c->op==SQLITE_INDEX_CONSTRAINT_GE) ){
        iLo = i;
        eLo = c->op==SQLITE_INDEX_CONSTRAINT_GT ? CTX_LO_GT : CTX_LO_GE;
      }else if( iHi<0 && (c->op==SQLITE_INDEX_CONSTRAINT_LT
                          || c->op==SQLITE_INDEX_CONSTRAINT_LE) ){
        iHi = i;
        eHi = c->op==SQLITE_INDEX_CONSTRAINT_LT ? CTX_HI_LT : CTX_HI_LE;
      }
    }
  }
  if( !bSeen[0] || !bSeen[1] ){
    return ctChgError(pVtab, SQLITE_ERROR, sqlite3_mprintf(
        "sqlite-ct: sqlite_ct_changes() needs a table name and an anchor:"
        " sqlite_ct_changes('table', since [, until [, exclude_context]])"));
  }
  if( aiArg[0]<0 || aiArg[1]<0 ) return SQLITE_CONSTRAINT;
  idxNum = (int)(pInfo->colUsed & CTX_COLS);
  for(i=0; i<CT_NARG; i++){
    static const int aFlag[CT_NARG] = { 0, 0, CTX_UNTIL, CTX_EXCLUDE, CTX_TOMBS,
                                        CTX_AFTER_B, CTX_AFTER_K };
    if( aiArg[i]<0 ) continue;
    pInfo->aConstraintUsage[aiArg[i]].argvIndex = ++nArg;
    pInfo->aConstraintUsage[aiArg[i]].omit = 1;
    idxNum |= aFlag[i];
  }
  if( iOp>=0 ){
    pInfo->aConstraintUsage[iOp].argvIndex = ++nArg;
    /* EQ is applied exactly; NE only skips a phase, SQLite still checks. */
    pInfo->aConstraintUsage[iOp].omit = eOp==CTX_OP_EQ;
    idxNum |= eOp;
  }
  if( iLo>=0 ){
    pInfo->aConstraintUsage[iLo].argvIndex = ++nArg;
    idxNum |= eLo;
  }
  if( iHi>=0 ){
    pInfo->aConstraintUsage[iHi].argvIndex = ++nArg;
    idxNum |= eHi;
  }
  if( iStamped>=0 ){
    /* Only skips phases; SQLite still compares (a value of any type). */
    pInfo->aConstraintUsage[iStamped].argvIndex = ++nArg;
    idxNum |= CTX_STAMPED;
  }
  pInfo->idxNum = idxNum;
  /* The work follows the number of changes in the window, which is not known
  ** here: a guess, cheaper with op or change_bsn narrowed, never a
  ** full-table figure. */
  nRow = (idxNum & CTX_OP_EQ) ? 250.0 : 1000.0;
  if( iLo>=0 ) nRow /= 4.0;
  if( iHi>=0 ) nRow /= 4.0;
  if( idxNum & CTX_AFTER_B ) nRow /= 4.0;
  pInfo->estimatedRows = (sqlite3_int64)nRow;
  pInfo->estimatedCost = nRow * 4.0;
  return SQLITE_OK;
}

static int ctChgOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCursor){
  CtChangesCursor *c = sqlite3_malloc(sizeof(*c));
  if( c==0 ) return SQLITE_NOMEM;
  memset(c, 0, sizeof(*c));
  c->pTab = (CtChangesVtab*)pVtab;
  c->iPhase = CTP_EOF;
  *ppCursor = &c->base;
  return SQLITE_OK;
}

static void ctChgReset(CtChangesCursor *c){
  int i;
  for(i=0; i<CTP_N; i++){
    ctChgRelease(c->pTab, c->apStmt[i]);
    c->apStmt[i] = 0;
  }
  c->iPhase = CTP_EOF;
  c->iRow = 0;
}

static int ctChgClose(sqlite3_vtab_cursor *pCur){
  ctChgReset((CtChangesCursor*)pCur);
  sqlite3_free(pCur);
  return SQLITE_OK;
}

/* An argument value as the error message shows it. */
static char *ctChgShow(sqlite3_value *v){
  switch( sqlite3_value_type(v) ){
    case SQLITE_NULL:    return sqlite3_mprintf("NULL");
    case SQLITE_TEXT:    return sqlite3_mprintf("%Q", (const char*)sqlite3_value_text(v));
    case SQLITE_BLOB:    return sqlite3_mprintf("a BLOB");
    default:             return sqlite3_mprintf("%s", (const char*)sqlite3_value_text(v));
  }
}

/* FNV-1a of a statement's SQL text: the pool's first comparison. */
static unsigned int ctChgHash(const char *z){
  unsigned int h = 2166136261u;
  while( *z ){ h = (h ^ (unsigned char)*z++) * 16777619u; }
  return h;
}

/* Sticky helpers: no-ops once *pRc is set. With a vtab v, the statement for
** the SQL text is taken from v's pool, or prepared persistent and kept there
** (an idle one of the same text is reused; a full pool evicts its least
** recently used idle statement); give it back with ctChgFinish(). Without
** one (sqlite_ct_local_change(), which keeps its own), it is prepared for
** the caller alone. */
static sqlite3_stmt *ctChgPrepare(CtChangesVtab *v, sqlite3 *db, int *pRc, char **pzErr,
                                  const char *zFmt, ...){
  va_list ap;
  char *zSql;
  sqlite3_stmt *pStmt = 0;
  unsigned int iHash = 0;
  int i, iSlot = -1;
  if( *pRc!=SQLITE_OK ) return 0;
  va_start(ap, zFmt);
  zSql = sqlite3_vmprintf(zFmt, ap);
  va_end(ap);
  if( zSql==0 ){ *pRc = SQLITE_NOMEM; return 0; }
  if( v ){
    iHash = ctChgHash(zSql);
    for(i=0; i<CT_CHG_POOL; i++){
      struct CtChgPooled *e = &v->aPool[i];
      if( e->pStmt==0 || e->bBusy ) continue;
      if( e->iHash==iHash && strcmp(sqlite3_sql(e->pStmt), zSql)==0 ){
        e->bBusy = 1;
        e->iUsed = ++v->iClock;
        sqlite3_free(zSql);
        return e->pStmt;
      }
    }
    for(i=0; i<CT_CHG_POOL; i++){
      struct CtChgPooled *e = &v->aPool[i];
      if( e->pStmt==0 ){ iSlot = i; break; }
      if( !e->bBusy && (iSlot<0 || e->iUsed<v->aPool[iSlot].iUsed) ) iSlot = i;
    }
  }
  *pRc = sqlite3_prepare_v3(db, zSql, -1, iSlot>=0 ? SQLITE_PREPARE_PERSISTENT : 0,
                            &pStmt, 0);
  sqlite3_free(zSql);
  if( *pRc!=SQLITE_OK ){
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
    sqlite3_finalize(pStmt);
    return 0;
  }
  if( iSlot>=0 ){
    struct CtChgPooled *e = &v->aPool[iSlot];
    if( e->pStmt ) sqlite3_finalize(e->pStmt);
    e->pStmt = pStmt;
    e->iHash = iHash;
    e->iUsed = ++v->iClock;
    e->iGen = ++v->iGenNext;
    e->bBusy = 1;
  }
  return pStmt;
}

/* Remember where pStmt, a statement of ctChgPrepare(), is kept in *r; 0 (and
** *r none) when it is not kept (a full pool of statements in use). */
static int ctChgRemember(CtChangesVtab *v, sqlite3_stmt *pStmt, CtChgRef *r){
  int i;
  r->iSlot1 = 0;
  for(i=0; pStmt && i<CT_CHG_POOL; i++){
    if( v->aPool[i].pStmt==pStmt ){
      r->iSlot1 = i + 1;
      r->iGen = v->aPool[i].iGen;
      return 1;
    }
  }
  return 0;
}

/* The statement remembered in *r, handed out as ctChgPrepare() hands it out;
** 0 when its slot holds another statement by now, or it is in use (then the
** caller prepares it by its text). Sticky like ctChgPrepare(). */
static sqlite3_stmt *ctChgTake(CtChangesVtab *v, const CtChgRef *r, const int *pRc){
  struct CtChgPooled *e;
  if( *pRc!=SQLITE_OK || r->iSlot1<=0 ) return 0;
  e = &v->aPool[r->iSlot1-1];
  if( e->pStmt==0 || e->bBusy || e->iGen!=r->iGen ) return 0;
  e->bBusy = 1;
  e->iUsed = ++v->iClock;
  return e->pStmt;
}

/* Give back a statement of ctChgPrepare(): reset (kept, its bindings
** cleared) or finalized (the caller's alone). The error of its last step,
** if any, and its message go to *pRc and *pzErr. */
static int ctChgRelease(CtChangesVtab *v, sqlite3_stmt *pStmt){
  int i;
  if( pStmt==0 ) return SQLITE_OK;
  if( v ){
    for(i=0; i<CT_CHG_POOL; i++){
      if( v->aPool[i].pStmt==pStmt ){
        int rc = sqlite3_reset(pStmt);
        sqlite3_clear_bindings(pStmt);
        v->aPool[i].bBusy = 0;
        return rc;
      }
    }
  }
  return sqlite3_finalize(pStmt);
}

static char *ctChgDup(int *pRc, const unsigned char *z){
  char *zOut;
  if( *pRc!=SQLITE_OK ) return 0;
  zOut = sqlite3_mprintf("%s", z ? (const char*)z : "");
  if( zOut==0 ) *pRc = SQLITE_NOMEM;
  return zOut;
}

/* Give a statement back (ctChgRelease), its error into *pRc. */
static void ctChgFinish(CtChangesVtab *v, sqlite3 *db, sqlite3_stmt *pStmt, int *pRc,
                        char **pzErr){
  int rc = ctChgRelease(v, pStmt);
  if( *pRc==SQLITE_OK && rc!=SQLITE_OK ){
    *pRc = rc;
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  }
}

/* PRAGMA main.schema_version of the reading snapshot, with the connection's
** kept statement (stmtcache.c) that sqlite_ct_schema_token() also runs: a
** reader that reads the token and this function in one statement runs one
** statement for both. */
static sqlite3_int64 ctChgSchemaVersion(CtChangesVtab *v, int *pRc, char **pzErr){
  sqlite3_int64 iSchema = -1;
  sqlite3_stmt *pStmt = 0;
  int bOwned = 0, rc;
  if( *pRc!=SQLITE_OK ) return iSchema;
  rc = ctCachedStmt(v->p, CT_STMT_SCHEMA, "PRAGMA main.schema_version", &pStmt, &bOwned);
  if( rc==SQLITE_OK ){
    if( sqlite3_step(pStmt)==SQLITE_ROW ) iSchema = sqlite3_column_int64(pStmt, 0);
    rc = ctStmtRelease(pStmt, bOwned);
  }
  if( rc!=SQLITE_OK ){
    *pRc = rc;
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(v->db));
  }
  return iSchema;
}

/* Which system tables exist (CT_SYS_* bits), in one pass over sqlite_schema. */
#define CT_SYS_REGISTRY 1
#define CT_SYS_META     2
#define CT_SYS_LOG      4
#define CT_SYS_TOMBS    8
#define CT_SYS_ALL      15
static int ctChgSystemTables(CtChangesVtab *v, sqlite3 *db, int *pRc, char **pzErr){
  int fSys = 0;
  sqlite3_stmt *pStmt = ctChgPrepare(v, db, pRc, pzErr,
      "SELECT total(name='__sysOCSTrackedObjects'), total(name='__sysCtMeta'),"
      " total(name='__sysTxCommitSequence'), total(name='__sysOCSDeletedRows')"
      " FROM main.sqlite_schema WHERE type='table' AND name IN ('__sysOCSTrackedObjects',"
      " '__sysCtMeta', '__sysTxCommitSequence', '__sysOCSDeletedRows')");
  if( pStmt && sqlite3_step(pStmt)==SQLITE_ROW ){
    if( sqlite3_column_int(pStmt, 0)>0 ) fSys |= CT_SYS_REGISTRY;
    if( sqlite3_column_int(pStmt, 1)>0 ) fSys |= CT_SYS_META;
    if( sqlite3_column_int(pStmt, 2)>0 ) fSys |= CT_SYS_LOG;
    if( sqlite3_column_int(pStmt, 3)>0 ) fSys |= CT_SYS_TOMBS;
  }
  ctChgFinish(v, db, pStmt, pRc, pzErr);
  return fSys;
}

/* What the schema says of tracked table t->zName: its tracking triggers (in
** *pnTrig), WITHOUT ROWID, a name of the rowid, the key columns. */
static int ctChgLoadShape(CtChangesVtab *v, sqlite3 *db, CtChgTable *t, int *pnTrig,
                          char **pzErr){
  int rc = SQLITE_OK, bRowid = 1, b_Rowid = 1, bOid = 1;
  sqlite3_stmt *pStmt;
  *pnTrig = 0;
  pStmt = ctChgPrepare(v, db, &rc, pzErr,
      "SELECT count(*) FROM main.sqlite_schema WHERE type='trigger' AND tbl_name=?1"
      " AND name IN ('__sysct_ai_' || ?1, '__sysct_au_' || ?1, '__sysct_ad_' || ?1)");
  if( pStmt ){
    sqlite3_bind_text(pStmt, 1, t->zName, -1, SQLITE_STATIC);
    if( sqlite3_step(pStmt)==SQLITE_ROW ) *pnTrig = sqlite3_column_int(pStmt, 0);
  }
  ctChgFinish(v, db, pStmt, &rc, pzErr);
  pStmt = ctChgPrepare(v, db, &rc, pzErr,
      "SELECT wr FROM pragma_table_list WHERE schema='main' AND name=?1");
  if( pStmt ){
    sqlite3_bind_text(pStmt, 1, t->zName, -1, SQLITE_STATIC);
    if( sqlite3_step(pStmt)==SQLITE_ROW ) t->bWithoutRowid = sqlite3_column_int(pStmt, 0);
  }
  ctChgFinish(v, db, pStmt, &rc, pzErr);
  pStmt = ctChgPrepare(v, db, &rc, pzErr,
      "SELECT name, pk FROM pragma_table_xinfo(?1, 'main') ORDER BY pk");
  if( pStmt ){
    sqlite3_bind_text(pStmt, 1, t->zName, -1, SQLITE_STATIC);
    while( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
      const char *zCol = (const char*)sqlite3_column_text(pStmt, 0);
      if( zCol==0 ){ rc = SQLITE_NOMEM; break; }
      if( sqlite3_stricmp(zCol, "rowid")==0 ) bRowid = 0;
      if( sqlite3_stricmp(zCol, "_rowid_")==0 ) b_Rowid = 0;
      if( sqlite3_stricmp(zCol, "oid")==0 ) bOid = 0;
      if( sqlite3_column_int(pStmt, 1)>0 ){
        char **azNew = sqlite3_realloc64(t->azPk, sizeof(char*)*(t->nPk+1));
        if( azNew==0 ){ rc = SQLITE_NOMEM; break; }
        t->azPk = azNew;
        t->azPk[t->nPk] = ctChgDup(&rc, (const unsigned char*)zCol);
        if( rc==SQLITE_OK ) t->nPk++;
      }
    }
  }
  ctChgFinish(v, db, pStmt, &rc, pzErr);
  if( !t->bWithoutRowid ){
    t->zRowid = bRowid ? "rowid" : b_Rowid ? "_rowid_" : bOid ? "oid" : 0;
  }
  return rc;
}

/* Forget the kept shape in slot i. */
static void ctChgShapeClear(CtChangesVtab *v, int i){
  struct CtChgShape *e = &v->aShape[i];
  int j;
  sqlite3_free(e->zName);
  for(j=0; j<e->nPk; j++) sqlite3_free(e->azPk[j]);
  sqlite3_free(e->azPk);
  memset(e, 0, sizeof(*e));
}

/* Copy the shape of t into a slot of v (its own, or the next in turn), for
** schema version iSchema, and name the slot in t->iShape1. SQLITE_NOMEM when
** a copy fails (nothing kept). */
static int ctChgShapeKeep(CtChangesVtab *v, CtChgTable *t, int nTrig,
                          sqlite3_int64 iSchema){
  struct CtChgShape *e;
  int i, rc = SQLITE_OK;
  int iSlot = v->iShapeNext;
  for(i=0; i<CT_CHG_SHAPES; i++){
    if( v->aShape[i].zName && strcmp(v->aShape[i].zName, t->zName)==0 ) break;
  }
  if( i<CT_CHG_SHAPES ){
    iSlot = i;
  }else{
    v->iShapeNext = (iSlot+1) % CT_CHG_SHAPES;
  }
  ctChgShapeClear(v, iSlot);
  e = &v->aShape[iSlot];
  e->azPk = sqlite3_malloc64(sizeof(char*)*(t->nPk+1));
  if( e->azPk==0 ) rc = SQLITE_NOMEM;
  for(i=0; rc==SQLITE_OK && i<t->nPk; i++){
    e->azPk[i] = ctChgDup(&rc, (const unsigned char*)t->azPk[i]);
    if( rc==SQLITE_OK ) e->nPk++;
  }
  e->zName = ctChgDup(&rc, (const unsigned char*)t->zName);
  if( rc!=SQLITE_OK ){
    ctChgShapeClear(v, iSlot);
    return rc;
  }
  e->iSchema = iSchema;
  e->iGen = ++v->iShapeGen;
  e->nTrig = nTrig;
  e->bWithoutRowid = t->bWithoutRowid;
  e->zRowid = t->zRowid;
  t->iShape1 = iSlot + 1;
  return SQLITE_OK;
}

/* Whether t->iShape1 names a kept shape of t's table at t's schema version. */
static int ctChgShapeHolds(CtChangesVtab *v, const CtChgTable *t){
  const struct CtChgShape *e;
  if( t->iShape1<=0 ) return 0;
  e = &v->aShape[t->iShape1-1];
  return e->zName && e->iSchema==t->iSchema && strcmp(e->zName, t->zName)==0;
}

/* The kept shape of t->zName at schema version iSchema, copied into t (its
** slot in t->iShape1); 0 when none is kept (or out of memory: then t has no
** key columns). */
static int ctChgShapeFind(CtChangesVtab *v, CtChgTable *t, int *pnTrig,
                          sqlite3_int64 iSchema, int *pRc){
  int i, j;
  for(i=0; i<CT_CHG_SHAPES; i++){
    struct CtChgShape *e = &v->aShape[i];
    if( e->zName==0 || e->iSchema!=iSchema || strcmp(e->zName, t->zName)!=0 ) continue;
    t->azPk = sqlite3_malloc64(sizeof(char*)*(e->nPk+1));
    if( t->azPk==0 ){ *pRc = SQLITE_NOMEM; return 0; }
    for(j=0; j<e->nPk; j++){
      t->azPk[j] = ctChgDup(pRc, (const unsigned char*)e->azPk[j]);
      if( *pRc!=SQLITE_OK ) return 0;
      t->nPk++;
    }
    t->bWithoutRowid = e->bWithoutRowid;
    t->zRowid = e->zRowid;
    t->iShape1 = i + 1;
    *pnTrig = e->nTrig;
    return 1;
  }
  return 0;
}

/*
** Look TBL up: registry row (any case), armed triggers, layout, key columns
** and a usable name of the rowid. With a vtab v, what depends on the schema
** alone (which system tables exist, the table's triggers, WITHOUT ROWID, key
** columns) is kept in v for the schema version it was read at (see
** STATEMENTS KEPT); the layout and the registry row are read every time.
** iAfter >= 0: t->bTombs says whether the table has a tombstone deleted
** after BSN iAfter (read with the registry row; 1 when not read), so a
** reader of a window with none skips its deletes phase, a GROUP BY that
** opens a sorter even to read nothing.
*/
static int ctChgLoadTable(CtChangesVtab *v, sqlite3 *db, const char *zArg, CtChgTable *t,
                          sqlite3_int64 iAfter, char **pzErr){
  int rc = SQLITE_OK;
  int fSys = 0, nTrig = 0, bLayoutOk = 0, bKeep = 0;
  sqlite3_int64 iSchema = -1;
  sqlite3_stmt *pStmt;

  if( v ){
    /* Inside a write transaction a schema read may be taken back by a
    ** ROLLBACK, which leaves schema_version as it was: read, never kept. */
    bKeep = sqlite3_txn_state(db, "main")!=SQLITE_TXN_WRITE;
    iSchema = ctChgSchemaVersion(v, &rc, pzErr);
    if( rc==SQLITE_OK && v->bSysKnown && v->iSysSchema==iSchema ){
      fSys = v->fSys;
    }else{
      fSys = ctChgSystemTables(v, db, &rc, pzErr);
      if( rc==SQLITE_OK && bKeep ){
        v->bSysKnown = 1;
        v->iSysSchema = iSchema;
        v->fSys = fSys;
      }
    }
  }else{
    fSys = ctChgSystemTables(0, db, &rc, pzErr);
  }
  t->bLog = (fSys & CT_SYS_LOG)!=0;
  t->bTombs = 1;
  if( rc==SQLITE_OK && fSys==CT_SYS_ALL ){
    /* The usual case, in one statement: the layout, the newest log row (the
    ** last committed CSN outside a write transaction, see ctChgFilter) and
    ** the registry row. */
    pStmt = v ? ctChgTake(v, &v->rRegistry, &rc) : 0;
    if( pStmt==0 ){
      pStmt = ctChgPrepare(v, db, &rc, pzErr,
        "SELECT (SELECT value FROM main.__sysCtMeta WHERE key='layout_version'),"
        " (SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence),"
        " r.__sysTName, r.__sysEnableTxBsn, r.__sysMinValidCsn, r.__sysTrackOpt,"
        " EXISTS(SELECT 1 FROM main.__sysCtMeta WHERE key = %Q || r.__sysTName),"
        " EXISTS(SELECT 1 FROM main.__sysOCSDeletedRows WHERE __sysTName = r.__sysTName"
        " AND __sysDeleteTxBsn > ?2)"
        " FROM (SELECT 1) LEFT JOIN main.__sysOCSTrackedObjects AS r"
        " ON r.__sysTName = ?1 COLLATE NOCASE", "anchor0_expired:");
      if( v ) ctChgRemember(v, pStmt, &v->rRegistry);
    }
    if( pStmt ){
      sqlite3_bind_text(pStmt, 1, zArg, -1, SQLITE_STATIC);
      sqlite3_bind_int64(pStmt, 2, iAfter);
      if( sqlite3_step(pStmt)==SQLITE_ROW ){
        bLayoutOk = sqlite3_column_type(pStmt, 0)==SQLITE_NULL
                 || (sqlite3_column_type(pStmt, 0)==SQLITE_INTEGER
                     && sqlite3_column_int64(pStmt, 0)<=CT_LAYOUT_VERSION);
        t->iMaxCsn = sqlite3_column_int64(pStmt, 1);
        t->bMaxCsn = 1;
        if( bLayoutOk && sqlite3_column_type(pStmt, 2)!=SQLITE_NULL ){
          int eStored = sqlite3_column_int(pStmt, 5);
          t->zName = ctChgDup(&rc, sqlite3_column_text(pStmt, 2));
          t->iEnable = sqlite3_column_int64(pStmt, 3);
          t->iMinValid = sqlite3_column_int64(pStmt, 4);
          t->bPortable = (eStored & CT_TRACKOPT_PORTABLE)!=0;
          t->eOpt = (eStored & ~CT_TRACKOPT_PORTABLE) / 16;
          t->bZeroExpired = sqlite3_column_int(pStmt, 6);
          t->bTombs = iAfter<0 || sqlite3_column_int(pStmt, 7)!=0;
        }
      }
    }
    ctChgFinish(v, db, pStmt, &rc, pzErr);
    if( rc==SQLITE_OK && !bLayoutOk ) rc = ctCheckLayout(db, 0, 0, pzErr);
    fSys = 0;   /* read: nothing more below */
  }
  /* The layout check of ctCheckLayout() with a kept statement: a recorded
  ** layout this build reads (or none) passes; anything else is left to
  ** ctCheckLayout(), which words the refusal. */
  if( rc==SQLITE_OK && (fSys & CT_SYS_META) ){
    pStmt = ctChgPrepare(v, db, &rc, pzErr,
        "SELECT value FROM main.__sysCtMeta WHERE key='layout_version'");
    if( pStmt ){
      int e = sqlite3_step(pStmt);
      bLayoutOk = e==SQLITE_DONE || (e==SQLITE_ROW
          && (sqlite3_column_type(pStmt, 0)==SQLITE_NULL
              || (sqlite3_column_type(pStmt, 0)==SQLITE_INTEGER
                  && sqlite3_column_int64(pStmt, 0)<=CT_LAYOUT_VERSION)));
    }
    ctChgFinish(v, db, pStmt, &rc, pzErr);
  }else if( rc==SQLITE_OK ){
    bLayoutOk = 1;
  }
  if( rc==SQLITE_OK && !bLayoutOk ) rc = ctCheckLayout(db, 0, 0, pzErr);
  if( rc==SQLITE_OK && (fSys & CT_SYS_REGISTRY) ){
    pStmt = ctChgPrepare(v, db, &rc, pzErr,
        "SELECT __sysTName, __sysEnableTxBsn, __sysMinValidCsn, __sysTrackOpt,"
        " EXISTS(SELECT 1 FROM main.__sysCtMeta WHERE key = %Q || __sysTName)"
        " FROM main.__sysOCSTrackedObjects WHERE __sysTName = ?1 COLLATE NOCASE",
        "anchor0_expired:");
    if( pStmt ){
      sqlite3_bind_text(pStmt, 1, zArg, -1, SQLITE_STATIC);
      if( sqlite3_step(pStmt)==SQLITE_ROW ){
        int eStored = sqlite3_column_int(pStmt, 3);
        t->zName = ctChgDup(&rc, sqlite3_column_text(pStmt, 0));
        t->iEnable = sqlite3_column_int64(pStmt, 1);
        t->iMinValid = sqlite3_column_int64(pStmt, 2);
        t->bPortable = (eStored & CT_TRACKOPT_PORTABLE)!=0;
        t->eOpt = (eStored & ~CT_TRACKOPT_PORTABLE) / 16;
        t->bZeroExpired = sqlite3_column_int(pStmt, 4);
      }
    }
    ctChgFinish(v, db, pStmt, &rc, pzErr);
  }
  if( rc!=SQLITE_OK ) return rc;
  if( t->zName==0 ){
    *pzErr = sqlite3_mprintf("sqlite-ct: table \"%s\" is not tracked;"
                             " call sqlite_ct_create_schema('%q') first", zArg, zArg);
    return SQLITE_ERROR;
  }
  t->iSchema = iSchema;
  if( v==0 || !ctChgShapeFind(v, t, &nTrig, iSchema, &rc) ){
    if( rc==SQLITE_OK ) rc = ctChgLoadShape(v, db, t, &nTrig, pzErr);
    if( rc==SQLITE_OK && v && bKeep ) rc = ctChgShapeKeep(v, t, nTrig, iSchema);
  }
  if( rc!=SQLITE_OK ) return rc;
  /* A rebuild by another tool (a new table renamed into place) drops the
  ** triggers: what was written since is untracked, and enumerating would
  ** miss it silently. */
  if( nTrig < 2 + ((t->eOpt & CT_TRACK_DELETE)!=0) ){
    *pzErr = sqlite3_mprintf(
        "sqlite-ct: table \"%s\" lost its tracking triggers (was it rebuilt by another"
        " tool, such as sqlite-utils transform()?); changes made since were not tracked."
        " Call create_schema() on it to re-arm it; replicas with older anchors will then"
        " be asked to reinitialise", t->zName);
    return SQLITE_ERROR;
  }
  if( t->nPk==0 ){
    *pzErr = sqlite3_mprintf("sqlite-ct: table \"%s\" has no PRIMARY KEY", t->zName);
    return SQLITE_ERROR;
  }
  return SQLITE_OK;
}

/* "k1", "k2", ... of the key, quoted. */
static char *ctChgKeyList(const CtChgTable *t, const char *zPrefix, const char *zSuffix){
  sqlite3_str *s = sqlite3_str_new(0);
  int i;
  for(i=0; i<t->nPk; i++){
    sqlite3_str_appendf(s, "%s%s\"%w\"%s", i ? ", " : "", zPrefix, t->azPk[i], zSuffix);
  }
  return sqlite3_str_finish(s);
}

/* The key of a tombstone in the binary form: portable tables store the text
** form, which is re-packed so pk is one form whatever wrote it. */
static char *ctChgTombstoneKey(const CtChgTable *t){
  sqlite3_str *s;
  int i;
  if( !t->bPortable ) return sqlite3_mprintf("__sysRK");
  s = sqlite3_str_new(0);
  sqlite3_str_appendall(s, "sqlite_ct_pack_key(");
  for(i=0; i<t->nPk; i++){
    sqlite3_str_appendf(s, "%ssqlite_ct_unpack_key(__sysRK, %d)", i ? ", " : "", i);
  }
  sqlite3_str_appendall(s, ")");
  return sqlite3_str_finish(s);
}

/* A WHERE clause on the table that finds the live row of the tombstone's
** key __sysRK (either form: sqlite_ct_unpack_key() reads both), through the
** primary key. */
static char *ctChgLiveKey(const CtChgTable *t){
  sqlite3_str *s = sqlite3_str_new(0);
  int i;
  for(i=0; i<t->nPk; i++){
    sqlite3_str_appendf(s, "%s\"%w\" IS sqlite_ct_unpack_key(__sysOCSDeletedRows.__sysRK, %d)",
                        i ? " AND " : "", t->azPk[i], i);
  }
  return sqlite3_str_finish(s);
}

/*
** *piWrote: whether the open transaction wrote what would make reading this
** table inside it wrong (its uncommitted stamps hide the committed changes of
** the rows they overwrote, and a rollback would leave the reader's anchor past
** what it saw), so reading is refused. Refused whenever the Python readers
** refuse (sqlite_ct_uncommitted_writes(), ctUncommittedWrites()), except after
** native writes to other tables only: a sync client checks a table's unsent
** changes after re-creating another in the same transaction. Those are seen
** through this transaction's BSN: the change index and the tombstones' primary
** key (table, delete BSN), two index lookups. A table that does not track
** every kind of write may have been written without a trace (a delete that
** leaves no tombstone): refused whenever the transaction holds a BSN. Writes
** in apply mode (stamps 0) and to portable tables (pure-SQL triggers) leave
** no BSN to see: refused whatever table they wrote.
*/
static int ctChgOwnWrites(CtChangesVtab *v, sqlite3 *db, CtState *p, const CtChgTable *t,
                          sqlite3_int64 *piWrote, char **pzErr){
  sqlite3_int64 iBsn = 0;
  int bNull = 1, rc, fWrote = 0;
  sqlite3_stmt *pStmt;
  *piWrote = 0;
  rc = ctUncommittedWrites(p, &fWrote, pzErr);
  if( rc!=SQLITE_OK || fWrote==0 ) return rc;
  if( fWrote & (CT_WROTE_APPLY|CT_WROTE_PORTABLE) ){ *piWrote = 1; return SQLITE_OK; }
  if( (t->eOpt & CT_TRACK_ALL)!=CT_TRACK_ALL ){ *piWrote = 1; return SQLITE_OK; }
  rc = ctQueryInt64(db, &iBsn, &bNull, pzErr, "SELECT sqlite_ct_current_bsn()");
  if( rc!=SQLITE_OK || bNull ) return rc;
  pStmt = ctChgPrepare(v, db, &rc, pzErr,
      "SELECT EXISTS(SELECT 1 FROM main.\"%w\" WHERE \"__sysChangeTxBsn\" = ?1)"
      " OR EXISTS(SELECT 1 FROM main.__sysOCSDeletedRows"
      " WHERE __sysTName = ?2 AND __sysDeleteTxBsn = ?1)", t->zName);
  if( pStmt ){
    sqlite3_bind_int64(pStmt, 1, iBsn);
    sqlite3_bind_text(pStmt, 2, t->zName, -1, SQLITE_STATIC);
    if( sqlite3_step(pStmt)==SQLITE_ROW ) *piWrote = sqlite3_column_int64(pStmt, 0);
  }
  ctChgFinish(v, db, pStmt, &rc, pzErr);
  return rc;
}

/* The columns that order a live row within its BSN, quoted: the rowid, or
** the PRIMARY KEY columns of a WITHOUT ROWID table; 0 when the rowid has no
** usable name (then only change_bsn orders). */
static char *ctChgOrderKey(const CtChgTable *t){
  if( !t->bWithoutRowid ) return t->zRowid ? sqlite3_mprintf("%s", t->zRowid) : 0;
  return ctChgKeyList(t, "", "");
}

/* (k1, k2, ...) > (the packed position ?9, unpacked), for nKey columns. */
static char *ctChgAfterKey(const char *zKeys, int nKey){
  sqlite3_str *s = sqlite3_str_new(0);
  int i;
  sqlite3_str_appendf(s, "(%s) > (", zKeys);
  for(i=0; i<nKey; i++){
    sqlite3_str_appendf(s, "%ssqlite_ct_unpack_key(?9, %d)", i ? ", " : "", i);
  }
  sqlite3_str_appendall(s, ")");
  return sqlite3_str_finish(s);
}

/* What the phases' SQL text depends on besides the table's shape (kept with
** its schema version): the columns and constraints the query uses (idxNum),
** the kinds of its arguments, the registry's options. */
static void ctChgPlanKey(const CtChangesCursor *c, const CtChgTable *t, int idxNum,
                         unsigned int *aKey){
  unsigned int eAfter = !c->bAfter ? 0 : c->iAfterBsn>c->iEnable ? 3
                      : c->iAfterBsn==c->iEnable ? 2 : 1;
  unsigned int bAfterKey = c->bAfter && c->pAfterKey
                        && sqlite3_value_type(c->pAfterKey)!=SQLITE_NULL;
  aKey[0] = (unsigned int)idxNum;
  aKey[1] = (unsigned int)c->bEach | bAfterKey<<1 | eAfter<<2
          | (unsigned int)c->bNoDeletes<<4 | (unsigned int)(c->eStamped+1)<<5
          | (unsigned int)t->bPortable<<8 | (unsigned int)t->bTombs<<9;
  aKey[2] = (unsigned int)(unsigned char)c->cOpWant
          | (unsigned int)(unsigned char)c->cOpNot<<8;
  aKey[3] = (unsigned int)t->eOpt;
}

/* The plan kept for t's kept shape (ctChgShapeHolds()) and query aKey, or 0. */
static CtChgPlan *ctChgPlanFind(CtChangesVtab *v, const CtChgTable *t,
                                const unsigned int *aKey){
  int i;
  for(i=0; i<CT_CHG_PLANS; i++){
    CtChgPlan *pl = &v->aPlan[i];
    if( pl->iShape1==t->iShape1 && pl->iShapeGen==v->aShape[t->iShape1-1].iGen
     && pl->iSchema==t->iSchema && memcmp(pl->aKey, aKey, sizeof(pl->aKey))==0 ){
      return pl;
    }
  }
  return 0;
}

/* The phases of the plan kept for this table, shape and query, taken into
** c->apStmt: 1, or 0 (nothing taken) when there is none or one of its
** statements is gone or in use. */
static int ctChgPlanTake(CtChangesCursor *c, const CtChgTable *t, const unsigned int *aKey){
  CtChangesVtab *v = c->pTab;
  CtChgPlan *pl = ctChgPlanFind(v, t, aKey);
  int j, rc = SQLITE_OK;
  if( pl ){
    for(j=0; j<CTP_N; j++){
      if( pl->aPhase[j].iSlot1==0 ) continue;
      c->apStmt[j] = ctChgTake(v, &pl->aPhase[j], &rc);
      if( c->apStmt[j]==0 ) break;
    }
    if( j==CTP_N ) return 1;
    for(j=0; j<CTP_N; j++){
      ctChgRelease(v, c->apStmt[j]);
      c->apStmt[j] = 0;
    }
  }
  return 0;
}

/* Keep the phases just prepared into c->apStmt as the plan for aKey (all of
** them kept in the pool, or no plan). */
static void ctChgPlanKeep(CtChangesCursor *c, const CtChgTable *t, const unsigned int *aKey){
  CtChangesVtab *v = c->pTab;
  CtChgPlan *pl = ctChgPlanFind(v, t, aKey);
  int j;
  if( pl==0 ){
    pl = &v->aPlan[v->iPlanNext];
    v->iPlanNext = (v->iPlanNext + 1) % CT_CHG_PLANS;
  }
  for(j=0; j<CTP_N; j++){
    if( c->apStmt[j] && !ctChgRemember(v, c->apStmt[j], &pl->aPhase[j]) ){
      memset(pl, 0, sizeof(*pl));
      return;
    }
    if( c->apStmt[j]==0 ) pl->aPhase[j].iSlot1 = 0;
  }
  pl->iShape1 = t->iShape1;
  pl->iShapeGen = v->aShape[t->iShape1-1].iGen;
  pl->iSchema = t->iSchema;
  memcpy(pl->aKey, aKey, sizeof(pl->aKey));
}

/*
** Prepare the phases. Every phase's statement returns
**   change_bsn, insert_bsn, context, pk, rowid
** with NULL in place of what the query does not use. Parameters: ?1 since,
** ?2 until, ?3 enabling BSN, ?4 context to leave out (or NULL), ?5 table,
** ?6 and ?7 the bounds on change_bsn: read change_bsn in (?6, ?7] (since and
** until when no bound narrows them; after_bsn when it is above them), ?8
** after_bsn, ?9 after_key. A stamped row's insert BSN (for op) and context
** (for exclude_context) are read only when asked for, so a query of
** change_bsn and row_rowid alone (a count per transaction) reads the change
** index and no row. The ORDER BY of each statement is the order the header
** comment promises; the indexes satisfy it (no sorting), so each phase reads
** from where it resumes and stops where the caller stops.
*/
static int ctChgPrepareText(CtChangesCursor *c, const CtChgTable *t, int idxNum,
                            char **pzErr){
  CtChangesVtab *v = c->pTab;
  sqlite3 *db = v->db;
  int rc = SQLITE_OK;
  int bCtx = (idxNum & (1<<CTC_CONTEXT))!=0;
  int bPk = (idxNum & (1<<CTC_PK))!=0;
  int bRowid = (idxNum & (1<<CTC_ROWID))!=0 && t->zRowid!=0;
  int bIns = (idxNum & ((1<<CTC_OP)|(1<<CTC_INSERT)|CTX_OP_EQ|CTX_OP_NE))!=0;
  int bAfterKey = c->bAfter && c->pAfterKey
               && sqlite3_value_type(c->pAfterKey)!=SQLITE_NULL;
  int bLive = c->cOpWant!='D' && c->cOpWant!='X' && c->cOpWant!='B';
  char *zKeys = bPk ? ctChgKeyList(t, "", "") : 0;
  char *zRk = bPk ? ctChgTombstoneKey(t) : 0;
  char *zLive = ctChgLiveKey(t);
  char *zOrder = ctChgOrderKey(t);
  char *zAfter = (bAfterKey && zOrder) ? ctChgAfterKey(zOrder, t->bWithoutRowid ? t->nPk : 1)
                                       : 0;
  char *zPkExpr = bPk ? sqlite3_mprintf("sqlite_ct_pack_key(%s)", zKeys ? zKeys : "") : 0;
  /* ?4 first: with none given, a row read through the change index is
  ** not looked up (SQLite defers the seek until a column needs it). */
  const char *zNotExcluded = "(?4 IS NULL OR __sysTrackingContext IS NOT ?4)";
  const char *zCols;     /* insert_bsn, context, pk, rowid of a live row */
  char *zLiveCols = 0;
  int bDeletes = c->cOpWant!='I' && c->cOpWant!='U' && c->cOpWant!='X' && c->cOpNot!='D'
              && !c->bNoDeletes && (t->eOpt & CT_TRACK_DELETE) && t->bTombs;
  if( (bPk && (zKeys==0 || zRk==0 || zPkExpr==0)) || zLive==0
   || ((t->bWithoutRowid || t->zRowid) && zOrder==0) || (bAfterKey && zOrder && zAfter==0) ){
    rc = SQLITE_NOMEM;
  }
  if( rc==SQLITE_OK ){
    zLiveCols = sqlite3_mprintf("%s, %s, %s",
        bCtx ? "\"__sysTrackingContext\"" : "NULL", bPk ? zPkExpr : "NULL",
        bRowid ? t->zRowid : "NULL");
    if( zLiveCols==0 ) rc = SQLITE_NOMEM;
  }
  zCols = zLiveCols;
  if( bDeletes && c->bEach ){
    /* Every tombstone of the window, by (delete BSN, key as stored): the
    ** tombstones' primary key. No rule is applied. */
    const char *zTombCols = "__sysDeleteTxBsn, __sysInsertTxCsn, %s, %s, NULL";
    char *zSel = sqlite3_mprintf(zTombCols, bCtx ? "__sysTrackingContext" : "NULL",
                                 bPk ? "__sysRK" : "NULL");
    if( zSel==0 && rc==SQLITE_OK ) rc = SQLITE_NOMEM;
    if( bAfterKey ){
      c->apStmt[CTP_DELETES_AT] = ctChgPrepare(v, db, &rc, pzErr,
          "SELECT %s FROM main.__sysOCSDeletedRows WHERE __sysTName = ?5"
          " AND __sysDeleteTxBsn = ?8 AND ?8 > ?6 AND ?8 <= ?7 AND __sysRK > ?9 AND %s"
          " ORDER BY __sysRK", zSel, zNotExcluded);
    }
    c->apStmt[CTP_DELETES] = ctChgPrepare(v, db, &rc, pzErr,
        "SELECT %s FROM main.__sysOCSDeletedRows WHERE __sysTName = ?5"
        " AND __sysDeleteTxBsn > ?6 AND __sysDeleteTxBsn <= ?7 AND %s"
        " ORDER BY __sysDeleteTxBsn, __sysRK", zSel, zNotExcluded);
    sqlite3_free(zSel);
  }else if( bDeletes ){
    /* The key's newest tombstone gives change_bsn and context: looked up by
    ** its primary key (a bare column next to both max() and min() would come
    ** from either row). With a context left out, a key that is live again
    ** is no delete: its row is either the reader's own (left out, and the
    ** reader holds it: a delete would remove it) or in the window (an
    ** upsert). */
    c->apStmt[CTP_DELETES] = ctChgPrepare(v, db, &rc, pzErr,
        "SELECT g.bsn, g.ins, %s, %s, NULL FROM ("
        "SELECT max(__sysDeleteTxBsn) AS bsn, min(__sysInsertTxCsn) AS ins, __sysRK"
        " FROM main.__sysOCSDeletedRows"
        " WHERE __sysTName = %Q AND __sysDeleteTxBsn > ?1 AND __sysDeleteTxBsn <= ?2"
        " AND %s GROUP BY __sysRK HAVING min(__sysInsertTxCsn) %s ?1"
        " AND max(__sysDeleteTxBsn) > ?6 AND max(__sysDeleteTxBsn) <= ?7"
        " AND (%s NOT EXISTS (SELECT 1 FROM main.\"%w\" WHERE %s))) AS g",
        bCtx ? "(SELECT n.__sysTrackingContext FROM main.__sysOCSDeletedRows AS n"
               " WHERE n.__sysTName = ?5 AND n.__sysDeleteTxBsn = g.bsn"
               " AND n.__sysRK = g.__sysRK)" : "NULL",
        bPk ? zRk : "NULL", t->zName, zNotExcluded, c->cOpWant=='B' ? ">" : "<=",
        c->cOpWant=='B' ? "" : "?4 IS NULL OR", t->zName, zLive ? zLive : "0");
  }
  if( bLive && c->eStamped!=1 && !(c->bAfter && c->iAfterBsn>c->iEnable) ){
    /* Rows with NULL stamps: position (enabling BSN, key). After a position
    ** of the enabling BSN, those above its key; after an older one, all;
    ** after a newer one, none (xFilter skips the phase). */
    c->apStmt[CTP_UNSTAMPED] = ctChgPrepare(v, db, &rc, pzErr,
        "SELECT ?3, ?3, %s"
        " FROM main.\"%w\" WHERE \"__sysChangeTxBsn\" IS NULL AND ?3 > ?6 AND ?3 <= ?7%s%s%s%s",
        zCols, t->zName,
        (c->bAfter && c->iAfterBsn==c->iEnable) ? " AND " : "",
        (c->bAfter && c->iAfterBsn==c->iEnable) ? (zAfter ? zAfter : "0") : "",
        zOrder ? " ORDER BY " : "", zOrder ? zOrder : "");
  }
  if( bLive && c->eStamped!=0 ){
    if( bAfterKey ){
      c->apStmt[CTP_STAMPED_AT] = ctChgPrepare(v, db, &rc, pzErr,
          "SELECT \"__sysChangeTxBsn\", %s, %s FROM main.\"%w\""
          " WHERE \"__sysChangeTxBsn\" = ?8 AND ?8 > ?6 AND ?8 <= ?7 AND %s AND %s"
          " ORDER BY %s",
          bIns ? "coalesce(\"__sysInsertTxBsn\", ?3)" : "NULL", zCols, t->zName,
          zAfter ? zAfter : "0", zNotExcluded, zOrder ? zOrder : "1");
    }
    c->apStmt[CTP_STAMPED] = ctChgPrepare(v, db, &rc, pzErr,
        "SELECT \"__sysChangeTxBsn\", %s, %s"
        " FROM main.\"%w\" WHERE \"__sysChangeTxBsn\" > ?6 AND \"__sysChangeTxBsn\" <= ?7"
        " AND %s ORDER BY \"__sysChangeTxBsn\"%s%s",
        bIns ? "coalesce(\"__sysInsertTxBsn\", ?3)" : "NULL", zCols, t->zName,
        zNotExcluded, zOrder ? ", " : "", zOrder ? zOrder : "");
  }
  sqlite3_free(zKeys);
  sqlite3_free(zRk);
  sqlite3_free(zLive);
  sqlite3_free(zOrder);
  sqlite3_free(zAfter);
  sqlite3_free(zPkExpr);
  sqlite3_free(zLiveCols);
  return rc;
}

/* The phases of ctChgPrepareText(). Their text depends on the table's shape
** and the query's (ctChgPlanKey), so the statements prepared for them are
** kept as a plan (CT_CHG_PLANS) with the kept shape and its schema version,
** and the next cursor of the same query takes them without formatting and
** comparing their text. Not inside a write transaction (nothing read there is
** kept, see STATEMENTS KEPT). */
static int ctChgPreparePhases(CtChangesCursor *c, const CtChgTable *t, int idxNum,
                              char **pzErr){
  unsigned int aKey[4];
  int bPlan = ctChgShapeHolds(c->pTab, t);
  int rc;
  if( bPlan ){
    ctChgPlanKey(c, t, idxNum, aKey);
    if( ctChgPlanTake(c, t, aKey) ) return SQLITE_OK;
  }
  rc = ctChgPrepareText(c, t, idxNum, pzErr);
  if( rc==SQLITE_OK && bPlan && sqlite3_txn_state(c->pTab->db, "main")!=SQLITE_TXN_WRITE ){
    ctChgPlanKeep(c, t, aKey);
  }
  return rc;
}

/* Bind the phases' parameters. An index a statement does not use is
** SQLITE_RANGE, harmless; any other failure (SQLITE_NOMEM from a copied TEXT
** or BLOB) is returned: the statement would read with a NULL in its place,
** which matches nothing (a silent empty result). The statements that resume
** after a position read change_bsn above it: ?6 is max(lower bound,
** after_bsn) for them. */
static int ctChgBind(CtChangesCursor *c, sqlite3_int64 iUntil, sqlite3_value *pExclude,
                     const char *zName){
  int i, j;
  for(i=0; i<CTP_N; i++){
    sqlite3_stmt *s = c->apStmt[i];
    sqlite3_int64 iLow = c->iLow;
    int aRc[9];
    if( s==0 ) continue;
    if( c->bAfter && (i==CTP_STAMPED || i==CTP_DELETES) && c->iAfterBsn>iLow ){
      iLow = c->iAfterBsn;
    }
    aRc[0] = sqlite3_bind_int64(s, 1, c->iSince);
    aRc[1] = sqlite3_bind_int64(s, 2, iUntil);
    aRc[2] = sqlite3_bind_int64(s, 3, c->iEnable);
    aRc[3] = pExclude ? ctBindValue(s, 4, pExclude) : SQLITE_OK;
    aRc[4] = ctBindText(s, 5, zName, -1, SQLITE_TRANSIENT);
    aRc[5] = sqlite3_bind_int64(s, 6, iLow);
    aRc[6] = sqlite3_bind_int64(s, 7, c->iHigh);
    aRc[7] = c->bAfter ? sqlite3_bind_int64(s, 8, c->iAfterBsn) : SQLITE_OK;
    aRc[8] = c->pAfterKey ? ctBindValue(s, 9, c->pAfterKey) : SQLITE_OK;
    for(j=0; j<9; j++){
      if( aRc[j]!=SQLITE_OK && aRc[j]!=SQLITE_RANGE ) return aRc[j];
    }
  }
  return SQLITE_OK;
}

/* The integer bounds a bound on change_bsn admits, folded into *piLow
** (exclusive) and *piHigh (inclusive). A bound that is not a number narrows
** nothing (SQLite compares it with each row); a REAL one is rounded to the
** integers it admits. eOp: CTX_LO_GT, CTX_LO_GE, CTX_HI_LT or CTX_HI_LE. */
static void ctChgBound(sqlite3_value *pVal, int eOp, sqlite3_int64 *piLow,
                       sqlite3_int64 *piHigh){
  const sqlite3_int64 iMax = (sqlite3_int64)(((sqlite3_uint64)1<<63)-1);
  const sqlite3_int64 iMin = -iMax-1;
  sqlite3_int64 iFloor, iCeil, iBound;
  switch( sqlite3_value_type(pVal) ){
    case SQLITE_INTEGER:
      iFloor = iCeil = sqlite3_value_int64(pVal);
      break;
    case SQLITE_FLOAT: {
      double r = sqlite3_value_double(pVal);
      if( r>=9223372036854775807.0 ){
        iFloor = iCeil = iMax;
      }else if( r<-9223372036854775808.0 ){
        iFloor = iCeil = iMin;
      }else{
        sqlite3_int64 iTrunc = (sqlite3_int64)r;
        iFloor = (double)iTrunc>r ? iTrunc-1 : iTrunc;
        iCeil = (double)iTrunc<r ? iTrunc+1 : iTrunc;
      }
      break;
    }
    default:
      return;
  }
  switch( eOp ){
    case CTX_LO_GT:   /* > r: above floor(r) */
    case CTX_LO_GE:   /* >= r: above ceil(r) - 1 */
      iBound = eOp==CTX_LO_GT ? iFloor : iCeil==iMin ? iMin : iCeil-1;
      if( iBound>*piLow ) *piLow = iBound;
      break;
    default:          /* < r: up to ceil(r) - 1; <= r: up to floor(r) */
      iBound = eOp==CTX_HI_LE ? iFloor : iCeil==iMin ? iMin : iCeil-1;
      if( iBound<*piHigh ) *piHigh = iBound;
      break;
  }
}

/* Advance to the next row that passes the op constraint, through the phases. */
static int ctChgStep(CtChangesCursor *c){
  while( c->iPhase<CTP_EOF ){
    sqlite3_stmt *s = c->apStmt[c->iPhase];
    int rc;
    if( s==0 ){ c->iPhase++; continue; }
    rc = sqlite3_step(s);
    if( rc==SQLITE_ROW ){
      char cOp = c->iPhase<=CTP_DELETES ? (c->cOpWant=='B' && !c->bEach ? 'B' : 'D')
               : sqlite3_column_int64(s, 1)>c->iSince ? 'I' : 'U';
      if( (c->cOpWant && cOp!=c->cOpWant) || cOp==c->cOpNot ) continue;
      c->cOp = cOp;
      c->iRow++;
      return SQLITE_OK;
    }
    if( rc!=SQLITE_DONE ){
      sqlite3_vtab *v = &c->pTab->base;
      return ctChgError(v, rc, sqlite3_mprintf("%s", sqlite3_errmsg(c->pTab->db)));
    }
    c->iPhase++;
  }
  return SQLITE_OK;
}

static int ctChgFilter(sqlite3_vtab_cursor *pCur, int idxNum, const char *idxStr,
                       int argc, sqlite3_value **argv){
  CtChangesCursor *c = (CtChangesCursor*)pCur;
  CtChangesVtab *v = c->pTab;
  sqlite3 *db = v->db;
  sqlite3_value *pTbl, *pSince, *pUntil = 0, *pExclude = 0, *pOp = 0, *pLo = 0, *pHi = 0;
  sqlite3_value *pTombs = 0, *pAfterBsn = 0, *pAfterKey = 0, *pStamped = 0;
  const char *zArg;
  CtChgTable t;
  sqlite3_int64 iLast = 0, iUntil = 0, iWrote = 0, iFrom;
  char *zErr = 0;
  int rc = SQLITE_OK, iArg = 2;
  (void)idxStr; (void)argc;

  ctChgReset(c);
  memset(&t, 0, sizeof(t));
  c->cOpWant = 0;
  c->cOpNot = 0;
  c->bEach = 0;
  c->bAfter = 0;
  c->iAfterBsn = 0;
  c->pAfterKey = 0;
  c->bNoDeletes = 0;
  c->eStamped = -1;
  pTbl = argv[0];
  pSince = argv[1];
  if( idxNum & CTX_UNTIL ) pUntil = argv[iArg++];
  if( idxNum & CTX_EXCLUDE ) pExclude = argv[iArg++];
  if( idxNum & CTX_TOMBS ) pTombs = argv[iArg++];
  if( idxNum & CTX_AFTER_B ) pAfterBsn = argv[iArg++];
  if( idxNum & CTX_AFTER_K ) pAfterKey = argv[iArg++];
  if( idxNum & (CTX_OP_EQ|CTX_OP_NE) ) pOp = argv[iArg++];
  if( idxNum & (CTX_LO_GT|CTX_LO_GE) ) pLo = argv[iArg++];
  if( idxNum & (CTX_HI_LT|CTX_HI_LE) ) pHi = argv[iArg++];
  if( idxNum & CTX_STAMPED ) pStamped = argv[iArg++];

  /* Arguments. */
  zArg = (const char*)sqlite3_value_text(pTbl);
  if( sqlite3_value_type(pTbl)!=SQLITE_TEXT || zArg==0 || zArg[0]==0 ){
    if( sqlite3_value_type(pTbl)==SQLITE_TEXT && zArg==0 ) return SQLITE_NOMEM;
    return ctChgError(&v->base, SQLITE_ERROR,
        sqlite3_mprintf("sqlite-ct: sqlite_ct_changes() needs a table name"));
  }
  if( (int)strlen(zArg)!=sqlite3_value_bytes(pTbl) ){
    return ctChgError(&v->base, SQLITE_ERROR, sqlite3_mprintf(
        "sqlite-ct: sqlite_ct_changes(): a table name cannot contain a NUL character"));
  }
  if( sqlite3_value_type(pSince)!=SQLITE_INTEGER || sqlite3_value_int64(pSince)<0 ){
    char *zShow = ctChgShow(pSince);
    if( zShow==0 ) return SQLITE_NOMEM;
    zErr = sqlite3_mprintf("sqlite-ct: an anchor is a non-negative integer CSN, got %s",
                           zShow);
    sqlite3_free(zShow);
    return ctChgError(&v->base, SQLITE_ERROR, zErr);
  }
  c->iSince = sqlite3_value_int64(pSince);
  /* NULL is the default, as for the other optional arguments: a caller
  ** passes one positionally to give EXCLUDE_CONTEXT or those after it. */
  if( pUntil && sqlite3_value_type(pUntil)==SQLITE_NULL ) pUntil = 0;
  if( pUntil && sqlite3_value_type(pUntil)!=SQLITE_INTEGER ){
    char *zShow = ctChgShow(pUntil);
    if( zShow==0 ) return SQLITE_NOMEM;
    zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_changes(): until is an integer CSN or NULL, got %s",
                           zShow);
    sqlite3_free(zShow);
    return ctChgError(&v->base, SQLITE_ERROR, zErr);
  }
  if( pExclude && sqlite3_value_type(pExclude)!=SQLITE_NULL
   && (sqlite3_value_type(pExclude)!=SQLITE_BLOB || sqlite3_value_bytes(pExclude)!=16) ){
    return ctChgError(&v->base, SQLITE_ERROR, sqlite3_mprintf(
        "sqlite-ct: sqlite_ct_changes(): exclude_context must be a 16-byte GUID blob"
        " or NULL"));
  }
  if( pTombs && sqlite3_value_type(pTombs)!=SQLITE_NULL ){
    const char *zT = (const char*)sqlite3_value_text(pTombs);
    if( sqlite3_value_type(pTombs)==SQLITE_TEXT && zT==0 ) return SQLITE_NOMEM;
    if( sqlite3_value_type(pTombs)==SQLITE_TEXT && strcmp(zT, "each")==0 ){
      c->bEach = 1;
    }else if( sqlite3_value_type(pTombs)!=SQLITE_TEXT || strcmp(zT, "key")!=0 ){
      char *zShow = ctChgShow(pTombs);
      if( zShow==0 ) return SQLITE_NOMEM;
      zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_changes(): tombstones is 'key' or"
                             " 'each' (or NULL), got %s", zShow);
      sqlite3_free(zShow);
      return ctChgError(&v->base, SQLITE_ERROR, zErr);
    }
  }
  if( pAfterBsn && sqlite3_value_type(pAfterBsn)!=SQLITE_NULL ){
    if( sqlite3_value_type(pAfterBsn)!=SQLITE_INTEGER ){
      char *zShow = ctChgShow(pAfterBsn);
      if( zShow==0 ) return SQLITE_NOMEM;
      zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_changes(): after_bsn is an integer"
                             " BSN or NULL, got %s", zShow);
      sqlite3_free(zShow);
      return ctChgError(&v->base, SQLITE_ERROR, zErr);
    }
    c->bAfter = 1;
    c->iAfterBsn = sqlite3_value_int64(pAfterBsn);
  }
  if( pAfterKey && sqlite3_value_type(pAfterKey)!=SQLITE_NULL ){
    if( sqlite3_value_type(pAfterKey)!=SQLITE_BLOB ){
      return ctChgError(&v->base, SQLITE_ERROR, sqlite3_mprintf(
          "sqlite-ct: sqlite_ct_changes(): after_key is a packed key"
          " (sqlite_ct_pack_key()) or NULL"));
    }
    if( !c->bAfter ){
      return ctChgError(&v->base, SQLITE_ERROR, sqlite3_mprintf(
          "sqlite-ct: sqlite_ct_changes(): after_key needs after_bsn, the change_bsn"
          " of the row it resumes after"));
    }
    c->pAfterKey = pAfterKey;
  }
  if( pStamped && sqlite3_value_type(pStamped)==SQLITE_INTEGER ){
    sqlite3_int64 iSt = sqlite3_value_int64(pStamped);
    c->bNoDeletes = 1;
    c->eStamped = iSt==0 ? 0 : iSt==1 ? 1 : 2;   /* 2: no live row either */
  }
  if( pOp ){
    const char *zOp = (const char*)sqlite3_value_text(pOp);
    char cOp = (zOp && (strcmp(zOp, "D")==0 || strcmp(zOp, "I")==0 || strcmp(zOp, "U")==0
                        || strcmp(zOp, "B")==0)
                && sqlite3_value_type(pOp)==SQLITE_TEXT) ? zOp[0] : 'X';
    /* 'B' rows exist only when asked for by name: op <> 'B' is every row. */
    if( idxNum & CTX_OP_EQ ) c->cOpWant = cOp;
    else if( cOp!='X' && cOp!='B' ) c->cOpNot = cOp;
  }

  /* The table, the snapshot's last committed CSN, the window. */
  rc = ctChgLoadTable(v, db, zArg, &t, c->iSince, &zErr);
  if( rc==SQLITE_OK ) rc = ctChgOwnWrites(v, db, v->p, &t, &iWrote, &zErr);
  if( rc==SQLITE_OK ){
    if( iWrote ){
      rc = SQLITE_ERROR;
      zErr = sqlite3_mprintf("sqlite-ct: cannot enumerate changes inside a transaction"
                             " that has written to tracked tables; commit or roll it"
                             " back first");
    }
  }
  if( rc==SQLITE_OK && t.bMaxCsn && sqlite3_txn_state(db, "main")!=SQLITE_TXN_WRITE ){
    /* No write transaction: every log row this snapshot sees is committed,
    ** and the newest, read with the registry row, is the last committed CSN
    ** (ctLastCommittedCsn() without statements of its own). */
    iLast = t.iMaxCsn;
  }else if( rc==SQLITE_OK && t.bLog && sqlite3_txn_state(db, "main")!=SQLITE_TXN_WRITE ){
    sqlite3_stmt *pMax = ctChgPrepare(v, db, &rc, &zErr,
        "SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence");
    if( pMax && sqlite3_step(pMax)==SQLITE_ROW ) iLast = sqlite3_column_int64(pMax, 0);
    ctChgFinish(v, db, pMax, &rc, &zErr);
  }else if( rc==SQLITE_OK ){
    rc = ctLastCommittedCsn(db, v->p, &iLast, &zErr);
  }
  if( rc==SQLITE_OK && c->iSince>iLast ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf(
        "sqlite-ct: anchor %lld is newer than the last committed CSN %lld of this"
        " database (was it restored from an older copy?); reinitialise the replica"
        " of \"%s\"", c->iSince, iLast, t.zName);
  }
  iUntil = pUntil ? sqlite3_value_int64(pUntil) : iLast;
  if( rc==SQLITE_OK && (iUntil<c->iSince || iUntil>iLast) ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf(
        "sqlite-ct: sqlite_ct_changes(): until %lld is outside the window from the"
        " anchor %lld to the last committed CSN %lld", iUntil, c->iSince, iLast);
  }
  /* Anchor 0 (a replica that holds nothing) needs no tombstone but those of
  ** rows applied from a server (stamp 0), whose deletes a client uploads; it
  ** expires only when those were lost (schema.c, CT_META_ANCHOR0_EXPIRED). */
  /* A read of live rows alone (stamped = 0 or 1) needs no tombstone; a read
  ** of each tombstone needs those after its start, max(SINCE, after_bsn). */
  iFrom = c->iSince;
  if( c->bEach && c->bAfter && c->iAfterBsn>iFrom ) iFrom = c->iAfterBsn;
  if( rc==SQLITE_OK && !c->bNoDeletes && iFrom<t.iMinValid
   && (iFrom>0 || t.bZeroExpired) ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf(
        "sqlite-ct: anchor %lld of table \"%s\" is older than its oldest kept change"
        " (CSN %lld): tombstones it needs were purged; reinitialise the replica",
        iFrom, t.zName, t.iMinValid);
  }
  c->iEnable = t.iEnable;
  c->iLow = c->iSince;
  c->iHigh = iUntil;
  if( pLo ) ctChgBound(pLo, idxNum & (CTX_LO_GT|CTX_LO_GE), &c->iLow, &c->iHigh);
  if( pHi ) ctChgBound(pHi, idxNum & (CTX_HI_LT|CTX_HI_LE), &c->iLow, &c->iHigh);
  if( rc==SQLITE_OK && c->bEach && t.bPortable ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_changes(): tombstones = 'each' reads"
                           " the key as stored; table \"%s\" is tracked in portable"
                           " mode, which stores another form", t.zName);
  }
  if( rc==SQLITE_OK && c->pAfterKey && !t.bWithoutRowid && t.zRowid==0 ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_changes(): cannot resume after a key"
                           " in table \"%s\": its columns named rowid, _rowid_ and oid"
                           " hide the rowid that orders it", t.zName);
  }
  if( rc==SQLITE_OK && c->bAfter && !c->bEach && !c->bNoDeletes && c->cOpNot!='D'
   && c->cOpWant!='I' && c->cOpWant!='U' && c->cOpWant!='X' && (t.eOpt & CT_TRACK_DELETE) ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_changes(): after_bsn resumes live rows"
                           " and tombstones = 'each', not deletes one per key: leave the"
                           " deletes out (stamped = 0 or 1, op <> 'D') or read"
                           " tombstones = 'each'");
  }
  if( rc==SQLITE_OK ) rc = ctChgPreparePhases(c, &t, idxNum, &zErr);
  if( rc==SQLITE_OK ) rc = ctChgBind(c, iUntil, pExclude, t.zName);
  if( rc==SQLITE_OK ){
    c->iPhase = CTP_DELETES_AT;
    rc = ctChgStep(c);
  }else{
    ctChgReset(c);
    rc = ctChgError(&v->base, rc, zErr);
  }
  ctChgTableClear(&t);
  return rc;
}

static int ctChgNext(sqlite3_vtab_cursor *pCur){
  return ctChgStep((CtChangesCursor*)pCur);
}

static int ctChgEof(sqlite3_vtab_cursor *pCur){
  return ((CtChangesCursor*)pCur)->iPhase>=CTP_EOF;
}

static int ctChgColumn(sqlite3_vtab_cursor *pCur, sqlite3_context *ctx, int i){
  CtChangesCursor *c = (CtChangesCursor*)pCur;
  sqlite3_stmt *s = c->apStmt[c->iPhase];
  switch( i ){
    case CTC_OP: {
      static const char azOp[4][2] = { "D", "I", "U", "B" };
      sqlite3_result_text(ctx, azOp[c->cOp=='D' ? 0 : c->cOp=='I' ? 1 : c->cOp=='U' ? 2 : 3],
                          1, SQLITE_STATIC);
      break;
    }
    case CTC_CHANGE:  sqlite3_result_value(ctx, sqlite3_column_value(s, 0)); break;
    case CTC_INSERT:  sqlite3_result_value(ctx, sqlite3_column_value(s, 1)); break;
    case CTC_CONTEXT: sqlite3_result_value(ctx, sqlite3_column_value(s, 2)); break;
    case CTC_PK:      sqlite3_result_value(ctx, sqlite3_column_value(s, 3)); break;
    case CTC_ROWID:   sqlite3_result_value(ctx, sqlite3_column_value(s, 4)); break;
    case CTC_STAMPED:
      if( c->iPhase>=CTP_STAMPED_AT ) sqlite3_result_int(ctx, 1);
      else if( c->iPhase==CTP_UNSTAMPED ) sqlite3_result_int(ctx, 0);
      break;
    default: break;   /* hidden arguments: not read back */
  }
  return SQLITE_OK;
}

static int ctChgRowid(sqlite3_vtab_cursor *pCur, sqlite3_int64 *piRowid){
  *piRowid = ((CtChangesCursor*)pCur)->iRow;
  return SQLITE_OK;
}

/* Eponymous-only (no xCreate), read-only. Designated initializers: later
** members differ between SQLite versions' headers. */
static const sqlite3_module ctChangesModule = {
  .iVersion = 0,
  .xConnect = ctChgConnect,
  .xBestIndex = ctChgBestIndex,
  .xDisconnect = ctChgDisconnect,
  .xOpen = ctChgOpen,
  .xClose = ctChgClose,
  .xFilter = ctChgFilter,
  .xNext = ctChgNext,
  .xEof = ctChgEof,
  .xColumn = ctChgColumn,
  .xRowid = ctChgRowid,
};

/*
** sqlite_ct_local_change(TBL, SINCE, KEY1 [, KEY2 ...]) -- the change contract
** for one key, as a sync client asks it of each incoming row: what its table
** holds for that key since anchor SINCE.
**
**   'I'   a live row changed after SINCE and inserted after it (NULL stamps:
**         the enabling BSN)
**   'U'   a live row changed after SINCE and inserted at or before it
**   'D'   no live row, and a tombstone of the key deleted after SINCE (any,
**         also of a row inserted after SINCE: the local delete of a row the
**         reader would otherwise write back)
**   NULL  none of these
**
** Keys are matched as the table compares them (IS, the columns' collations).
** The table's registry row and two statements are kept as auxiliary data of
** the TBL argument, so a probe per row of a batch costs two index seeks.
** Unlike sqlite_ct_changes() it reads inside the caller's write transaction
** (a download applies and probes in one): rows written there in apply mode
** carry stamp 0, no change.
*/
typedef struct CtProbe CtProbe;
struct CtProbe {
  CtChgTable t;
  sqlite3_stmt *pLive;
  sqlite3_stmt *pTomb;
};

static void ctProbeFree(void *pArg){
  CtProbe *pr = (CtProbe*)pArg;
  if( pr==0 ) return;
  sqlite3_finalize(pr->pLive);
  sqlite3_finalize(pr->pTomb);
  ctChgTableClear(&pr->t);
  sqlite3_free(pr);
}

/*
** A tombstone's packed key is compared byte for byte; the table compares its
** key with the PRIMARY KEY's collations. When one is not BINARY (a NOCASE key:
** 'abc' and 'ABC' are one row), *pzOut is " OR (<each unpacked key value IS
** the asked one under its collation>)", else NULL: the probe's tombstones
** match as the table's rows do. ?3 on are the key's values.
*/
static int ctProbeTombMatch(sqlite3 *db, const CtChgTable *t, char **pzOut, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  sqlite3_str *s = 0;
  int rc, i = 0, bOther = 0;
  *pzOut = 0;
  rc = sqlite3_prepare_v2(db, "SELECT x.coll FROM pragma_index_list(?1, 'main') AS l,"
                              " pragma_index_xinfo(l.name, 'main') AS x"
                              " WHERE l.origin = 'pk' AND x.key ORDER BY x.seqno", -1, &pStmt, 0);
  if( rc==SQLITE_OK ) rc = sqlite3_bind_text(pStmt, 1, t->zName, -1, SQLITE_STATIC);
  if( rc==SQLITE_OK ) s = sqlite3_str_new(db);
  while( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW && i<t->nPk ){
    const char *zColl = (const char*)sqlite3_column_text(pStmt, 0);
    if( zColl==0 ) zColl = "BINARY";
    if( sqlite3_stricmp(zColl, "BINARY")!=0 ) bOther = 1;
    sqlite3_str_appendf(s, " AND sqlite_ct_unpack_key(__sysRK, %d) IS ?%d COLLATE \"%w\"",
                        i, i+3, zColl);
    i++;
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
  }
  if( rc==SQLITE_OK && bOther && i==t->nPk ){
    char *zConds = sqlite3_str_finish(s);
    s = 0;
    *pzOut = zConds ? sqlite3_mprintf(" OR (sqlite_ct_key_count(__sysRK) = %d%s)", t->nPk,
                                      zConds) : 0;
    sqlite3_free(zConds);
    if( *pzOut==0 ) rc = SQLITE_NOMEM;
  }
  sqlite3_free(sqlite3_str_finish(s));
  if( rc!=SQLITE_OK && rc!=SQLITE_NOMEM && *pzErr==0 ){
    *pzErr = sqlite3_mprintf("sqlite-ct: %s", sqlite3_errmsg(db));
  }
  return rc;
}

/*
** sqlite_ct_tombstone_key_match(TBL) -- ctProbeTombMatch()'s condition for
** tracked table TBL as text ("" when every key column compares BINARY), for
** a statement of the caller's whose ?3, ?4, ... are the key's values and
** that already compares __sysRK with sqlite_ct_pack_key() of them:
** forget_pending_deletes() (sqlite_ct/replica.py) matches tombstones as
** sqlite_ct_local_change() does.
*/
void ctFuncTombstoneKeyMatch(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  const char *zArg = (const char*)sqlite3_value_text(argv[0]);
  CtChgTable t;
  char *zErr = 0, *zOut = 0;
  int rc;
  (void)argc;
  if( zArg==0 ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_tombstone_key_match() needs a table name",
                         -1);
    return;
  }
  memset(&t, 0, sizeof(t));
  rc = ctChgLoadTable(0, db, zArg, &t, -1, &zErr);
  if( rc==SQLITE_OK ) rc = ctProbeTombMatch(db, &t, &zOut, &zErr);
  if( rc==SQLITE_OK ){
    if( zOut ) sqlite3_result_text(ctx, zOut, -1, sqlite3_free);
    else sqlite3_result_text(ctx, "", 0, SQLITE_STATIC);
  }else if( rc==SQLITE_NOMEM ){
    sqlite3_result_error_nomem(ctx);
  }else{
    sqlite3_result_error(ctx, zErr ? zErr : "sqlite-ct: sqlite_ct_tombstone_key_match() failed",
                         -1);
  }
  sqlite3_free(zErr);
  ctChgTableClear(&t);
}

static CtProbe *ctProbeOpen(sqlite3_context *ctx, sqlite3 *db, const char *zTbl, int nKey){
  CtProbe *pr = sqlite3_malloc(sizeof(*pr));
  char *zErr = 0;
  int rc = SQLITE_OK, i;
  sqlite3_str *pMatch, *pMarks;
  char *zMatch, *zMarks, *zTombMatch = 0;
  if( pr==0 ){ sqlite3_result_error_nomem(ctx); return 0; }
  memset(pr, 0, sizeof(*pr));
  rc = ctChgLoadTable(0, db, zTbl, &pr->t, -1, &zErr);
  if( rc==SQLITE_OK && pr->t.bPortable ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_local_change(): \"%s\" is tracked in"
                           " portable mode", zTbl);
  }
  if( rc==SQLITE_OK && nKey!=pr->t.nPk ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_local_change(): \"%s\" has %d key"
                           " column(s), got %d value(s)", zTbl, pr->t.nPk, nKey);
  }
  if( rc!=SQLITE_OK ){
    if( rc==SQLITE_NOMEM && zErr==0 ) sqlite3_result_error_nomem(ctx);
    else sqlite3_result_error(ctx, zErr ? zErr : "sqlite-ct: sqlite_ct_local_change() failed",
                              -1);
    sqlite3_free(zErr);
    ctProbeFree(pr);
    return 0;
  }
  pMatch = sqlite3_str_new(0);
  pMarks = sqlite3_str_new(0);
  for(i=0; i<pr->t.nPk; i++){
    sqlite3_str_appendf(pMatch, "%s\"%w\" IS ?%d", i ? " AND " : "", pr->t.azPk[i], i+3);
    sqlite3_str_appendf(pMarks, "%s?%d", i ? ", " : "", i+3);
  }
  zMatch = sqlite3_str_finish(pMatch);
  zMarks = sqlite3_str_finish(pMarks);
  if( zMatch==0 || zMarks==0 ) rc = SQLITE_NOMEM;
  if( rc==SQLITE_OK ) rc = ctProbeTombMatch(db, &pr->t, &zTombMatch, &zErr);
  /* ?1 the enabling BSN, ?2 the table's name; keys from ?3. */
  pr->pLive = ctChgPrepare(0, db, &rc, &zErr,
      "SELECT coalesce(\"__sysChangeTxBsn\", ?1), coalesce(\"__sysInsertTxBsn\", ?1), ?2"
      " FROM main.\"%w\" WHERE %s", pr->t.zName, zMatch ? zMatch : "0");
  pr->pTomb = ctChgPrepare(0, db, &rc, &zErr,
      "SELECT 1 FROM main.__sysOCSDeletedRows WHERE __sysTName = ?2"
      " AND __sysDeleteTxBsn > ?1 AND (__sysRK = sqlite_ct_pack_key(%s)%s)",
      zMarks ? zMarks : "0", zTombMatch ? zTombMatch : "");
  sqlite3_free(zMatch);
  sqlite3_free(zMarks);
  sqlite3_free(zTombMatch);
  if( rc!=SQLITE_OK ){
    if( rc==SQLITE_NOMEM ) sqlite3_result_error_nomem(ctx);
    else sqlite3_result_error(ctx, zErr ? zErr : "sqlite-ct: sqlite_ct_local_change() failed",
                              -1);
    sqlite3_free(zErr);
    ctProbeFree(pr);
    return 0;
  }
  return pr;
}

/* Bind the key's values (argv[2] on) from ?3 on. The first failure
** (SQLITE_NOMEM copying a TEXT or BLOB) is returned: a NULL in a value's
** place matches no row, which would answer "no change" for a key that has
** one. */
static int ctProbeBindKey(sqlite3_stmt *pStmt, int argc, sqlite3_value **argv){
  int i, rc = SQLITE_OK;
  for(i=2; i<argc && rc==SQLITE_OK; i++) rc = ctBindValue(pStmt, i+1, argv[i]);
  return rc;
}

void ctLocalChangeFunc(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  CtProbe *pr;
  sqlite3_int64 iSince;
  const char *zTbl;
  const char *zOp = 0;
  int rc;
  if( argc<3 ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_local_change(): give the table, an"
                              " anchor and the key's values", -1);
    return;
  }
  if( sqlite3_value_type(argv[1])!=SQLITE_INTEGER || sqlite3_value_int64(argv[1])<0 ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_local_change(): the anchor is a"
                              " non-negative integer CSN", -1);
    return;
  }
  iSince = sqlite3_value_int64(argv[1]);
  pr = (CtProbe*)sqlite3_get_auxdata(ctx, 0);
  if( pr==0 ){
    if( sqlite3_value_type(argv[0])!=SQLITE_TEXT ){
      sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_local_change(): the table is a name",
                           -1);
      return;
    }
    zTbl = (const char*)sqlite3_value_text(argv[0]);
    if( zTbl==0 ){ sqlite3_result_error_nomem(ctx); return; }
    pr = ctProbeOpen(ctx, db, zTbl, argc-2);
    if( pr==0 ) return;
    /* On failure SQLite frees it at once: look it up again. */
    sqlite3_set_auxdata(ctx, 0, pr, ctProbeFree);
    pr = (CtProbe*)sqlite3_get_auxdata(ctx, 0);
    if( pr==0 ){ sqlite3_result_error_nomem(ctx); return; }
  }
  sqlite3_bind_int64(pr->pLive, 1, pr->t.iEnable);
  sqlite3_bind_text(pr->pLive, 2, pr->t.zName, -1, SQLITE_STATIC);
  rc = ctProbeBindKey(pr->pLive, argc, argv);
  if( rc==SQLITE_OK ){
    rc = sqlite3_step(pr->pLive);
    if( rc==SQLITE_ROW ){
      if( sqlite3_column_int64(pr->pLive, 0)>iSince ){
        zOp = sqlite3_column_int64(pr->pLive, 1)>iSince ? "I" : "U";
      }
      rc = sqlite3_reset(pr->pLive);
      if( rc==SQLITE_OK && zOp ) sqlite3_result_text(ctx, zOp, 1, SQLITE_STATIC);
    }else{
      rc = sqlite3_reset(pr->pLive);
      if( rc==SQLITE_OK ){
        sqlite3_bind_int64(pr->pTomb, 1, iSince);
        sqlite3_bind_text(pr->pTomb, 2, pr->t.zName, -1, SQLITE_STATIC);
        rc = ctProbeBindKey(pr->pTomb, argc, argv);
      }
      if( rc==SQLITE_OK ){
        rc = sqlite3_step(pr->pTomb);
        if( rc==SQLITE_ROW ) zOp = "D";
        rc = sqlite3_reset(pr->pTomb);
        if( rc==SQLITE_OK && zOp ) sqlite3_result_text(ctx, zOp, 1, SQLITE_STATIC);
      }
    }
  }
  if( rc!=SQLITE_OK ){
    if( rc==SQLITE_NOMEM ) sqlite3_result_error_nomem(ctx);
    else{
      char *zErr = sqlite3_mprintf("sqlite-ct: sqlite_ct_local_change(): %s",
                                   sqlite3_errmsg(db));
      if( zErr==0 ){ sqlite3_result_error_nomem(ctx); return; }
      sqlite3_result_error(ctx, zErr, -1);
      sqlite3_free(zErr);
    }
  }
}

/*
** sqlite_ct_changes_sql(TBL, COLUMNS) -- the text of a compound SELECT that
** reads the live rows of sqlite_ct_changes(TBL, ?2) straight from TBL: for
** each row inserted or updated in the window (?2, sqlite_ct_snapshot()], by
** the rules above, the result columns COLUMNS (SQL text over the table's
** alias t, as the caller would write them: 't."id", t."name"'), then op, 'I'
** or 'U'; rows whose latest change carries the tracking context ?3 (a
** 16-byte GUID, or NULL for none) are left out. ?2 and ?3 are parameters of
** the statement it becomes part of (the caller's own SQL, which it runs); the
** window's end and the enabling BSN are read by that statement, in its
** snapshot. Rows come as sqlite_ct_changes() gives them: NULL stamps first,
** then by change BSN and the table's order. The columns are the caller's, not
** t.*, and the text is meant as an arm of the caller's compound SELECT, not a
** subquery in FROM: SQLite looks up the collation of every column of a
** subquery in FROM, which a connection without a column's application
** collation cannot.
**
** It checks nothing and reads no tombstone: a reader runs it in the same
** statement as sqlite_ct_changes(TBL, ?2, ...) WHERE op = 'D', whose
** xFilter makes every check of the window (tracked, armed, layout, the
** anchor neither newer than the database nor expired) before any live row is
** read, and as sqlite_ct_snapshot(), which refuses inside the caller's own
** write transaction. What it saves is the join: the rows are read where the
** change index points, once, instead of through the virtual table and then
** again by rowid. The text depends on TBL's name and stamps alone, so a
** reader may keep it as long as sqlite_ct_schema_token() stays the same.
*/
void ctFuncChangesSql(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  CtChgTable t;
  char *zErr = 0, *zEnable = 0, *zSql = 0;
  const char *zArg = (const char*)sqlite3_value_text(argv[0]);
  const char *zCols = (const char*)sqlite3_value_text(argv[1]);
  int rc;
  (void)argc;
  if( (sqlite3_value_type(argv[0])==SQLITE_TEXT && zArg==0)
   || (sqlite3_value_type(argv[1])==SQLITE_TEXT && zCols==0) ){
    sqlite3_result_error_nomem(ctx);
    return;
  }
  if( sqlite3_value_type(argv[0])!=SQLITE_TEXT || zArg[0]==0 ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_changes_sql() needs a table name", -1);
    return;
  }
  if( sqlite3_value_type(argv[1])!=SQLITE_TEXT || zCols[0]==0 ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_changes_sql() needs the result columns"
                              " (SQL text over the alias t)", -1);
    return;
  }
  memset(&t, 0, sizeof(t));
  rc = ctChgLoadTable(0, db, zArg, &t, -1, &zErr);
  if( rc==SQLITE_OK ){
    zEnable = sqlite3_mprintf("SELECT (SELECT __sysEnableTxBsn FROM"
                              " main.__sysOCSTrackedObjects WHERE __sysTName = %Q) AS e,"
                              " sqlite_ct_snapshot() AS u LIMIT 1", t.zName);
    if( zEnable==0 ) rc = SQLITE_NOMEM;
  }
  if( rc==SQLITE_OK ){
    /* The phases CTP_UNSTAMPED and CTP_STAMPED of ctChgPreparePhases(), with
    ** the window (?2, snapshot] and the enabling BSN in place of ?6, ?7, ?3.
    ** Both read them from w, a one-row subquery that LIMIT keeps from being
    ** flattened: the planner then tests the window of the rows with NULL
    ** stamps once, before it reads any of them. */
    zSql = sqlite3_mprintf(
        "SELECT %s, 'I' FROM (%s) AS w, main.\"%w\" AS t"
        " WHERE w.e > ?2 AND w.e <= w.u AND t.\"__sysChangeTxBsn\" IS NULL"
        " UNION ALL "
        "SELECT %s, CASE WHEN coalesce(t.\"__sysInsertTxBsn\", w.e) > ?2 THEN 'I' ELSE 'U'"
        " END FROM (%s) AS w, main.\"%w\" AS t WHERE t.\"__sysChangeTxBsn\" > ?2"
        " AND t.\"__sysChangeTxBsn\" <= w.u"
        " AND (?3 IS NULL OR t.\"__sysTrackingContext\" IS NOT ?3)",
        zCols, zEnable, t.zName, zCols, zEnable, t.zName);
    if( zSql==0 ) rc = SQLITE_NOMEM;
  }
  if( rc==SQLITE_OK ){
    sqlite3_result_text(ctx, zSql, -1, sqlite3_free);
  }else if( rc==SQLITE_NOMEM ){
    sqlite3_result_error_nomem(ctx);
  }else{
    sqlite3_result_error(ctx, zErr ? zErr : "sqlite-ct: sqlite_ct_changes_sql() failed", -1);
    sqlite3_result_error_code(ctx, rc==SQLITE_SCHEMA ? SQLITE_ERROR : rc);
  }
  sqlite3_free(zErr);
  sqlite3_free(zEnable);
  ctChgTableClear(&t);
}

/*
** sqlite_ct_snapshot() -- the new anchor of a reader: the last committed CSN
** of the snapshot the calling statement reads (sqlite_ct_last_committed_csn(),
** which is also sqlite_ct_changes()'s default UNTIL in the same statement),
** refused inside a transaction that has written what an enumeration in it
** cannot see past (sqlite_ct_uncommitted_writes()), with the message the
** Python readers give. A reader that reads it and sqlite_ct_changes() in one
** statement reads both in one snapshot, with no transaction of its own.
** Outside a write transaction every log row the snapshot holds is committed,
** and the newest one is read with a kept statement (stmtcache.c).
*/
void ctFuncSnapshot(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  sqlite3_int64 iCsn = 0;
  char *zErr = 0;
  int fWrote = 0, rc, bDone = 0;
  (void)argc; (void)argv;
  rc = ctUncommittedWrites(p, &fWrote, &zErr);
  if( rc==SQLITE_OK && fWrote ){
    rc = SQLITE_ERROR;
    zErr = sqlite3_mprintf("sqlite-ct: cannot enumerate changes inside a transaction that"
                           " has written to tracked tables; commit or roll it back first");
  }
  if( rc==SQLITE_OK && sqlite3_txn_state(db, "main")!=SQLITE_TXN_WRITE ){
    /* A database without the log fails to prepare this (then
    ** ctLastCommittedCsn() below says 0). */
    sqlite3_stmt *pStmt = 0;
    int bOwned = 0;
    if( ctCachedStmt(p, CT_STMT_MAXCSN,
            "SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence", &pStmt, &bOwned)
        ==SQLITE_OK ){
      if( sqlite3_step(pStmt)==SQLITE_ROW ) iCsn = sqlite3_column_int64(pStmt, 0);
      rc = ctStmtRelease(pStmt, bOwned);
      if( rc!=SQLITE_OK ) zErr = sqlite3_mprintf("sqlite-ct: %s", sqlite3_errmsg(db));
      bDone = 1;
    }
  }
  if( rc==SQLITE_OK && !bDone ) rc = ctLastCommittedCsn(db, p, &iCsn, &zErr);
  if( rc!=SQLITE_OK ){
    if( rc==SQLITE_NOMEM || zErr==0 ){
      sqlite3_result_error_nomem(ctx);
    }else{
      sqlite3_result_error(ctx, zErr, -1);
      sqlite3_result_error_code(ctx, rc==SQLITE_SCHEMA ? SQLITE_ERROR : rc);
    }
    sqlite3_free(zErr);
    return;
  }
  sqlite3_result_int64(ctx, iCsn);
}

/*
** sqlite_ct_schema_token() -- TEXT naming this connection and the version of
** main's schema its statement reads ("<connection>:<schema_version>"): two
** equal tokens mean the same connection read the same schema, for any
** connection open or closed before in this process (the connection part is
** random). NULL inside a write transaction: a schema changed there and
** rolled back leaves schema_version where it was, and the next committed
** change gives its number to another schema (SQLite expires its own
** prepared statements at such a rollback). A reader that keeps what it derived from the schema (column lists,
** generated SQL) reads the token in the statement that uses what it kept and
** starts over when it differs. Another connection's schema change, a backup
** restored into the file (SQLite moves the schema cookie on) and ATTACH-free
** schema edits of any kind move schema_version, as they do for SQLite's own
** prepared statements.
*/
void ctFuncSchemaToken(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  sqlite3_stmt *pStmt = 0;
  sqlite3_int64 iSchema = 0;
  int bOwned = 0, rc;
  char *zOut;
  (void)argc; (void)argv;
  if( sqlite3_txn_state(sqlite3_context_db_handle(ctx), "main")==SQLITE_TXN_WRITE ){
    return;   /* NULL: the schema read may be one a ROLLBACK takes back */
  }
  while( p->iConnNonce==0 ) sqlite3_randomness(sizeof(p->iConnNonce), &p->iConnNonce);
  rc = ctCachedStmt(p, CT_STMT_SCHEMA, "PRAGMA main.schema_version", &pStmt, &bOwned);
  if( rc==SQLITE_OK ){
    if( sqlite3_step(pStmt)==SQLITE_ROW ) iSchema = sqlite3_column_int64(pStmt, 0);
    rc = ctStmtRelease(pStmt, bOwned);
  }
  if( rc!=SQLITE_OK ){
    if( rc==SQLITE_NOMEM ){
      sqlite3_result_error_nomem(ctx);
    }else{
      sqlite3_result_error(ctx, sqlite3_errmsg(sqlite3_context_db_handle(ctx)), -1);
    }
    return;
  }
  zOut = sqlite3_mprintf("%016llx:%lld", p->iConnNonce, iSchema);
  if( zOut==0 ){ sqlite3_result_error_nomem(ctx); return; }
  sqlite3_result_text(ctx, zOut, -1, sqlite3_free);
}

int ctChangesRegister(sqlite3 *db, CtState *p){
  ctStateRef(p);
  /* On failure SQLite calls the destructor itself. */
  return sqlite3_create_module_v2(db, "sqlite_ct_changes", &ctChangesModule, p,
                                  ctStateUnref);
}
