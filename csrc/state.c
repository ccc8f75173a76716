/*
** state.c -- per-connection tracking state and the SQL functions over it.
**
** SQL SURFACE (see docs/sql-reference.md):
**   The write path, called by the triggers and the stamp columns' DEFAULTs
**   (schema.c); each hands out the transaction's BSN and logs it from C:
**   sqlite_ct_insert_when(...)      the AFTER INSERT trigger's WHEN.
**   sqlite_ct_update_when(...)      the AFTER UPDATE trigger's WHEN, and the
**                                   guard of the __sys columns.
**   sqlite_ct_write_bsn(MAXCSN, DBID) the BSN for a tombstone.
**   sqlite_ct_default_bsn()         the DEFAULT of the stamp columns (no log).
**   sqlite_ct_victim(T, RK)         marks T as having OR REPLACE victims.
**   sqlite_ct_stamp_end(T)          ends a stamping body (stamping marks).
**   sqlite_ct_bsn()                 the BSN handed out for this transaction; 0
**                                   in apply mode. Only meaningful after one of
**                                   the functions above ran for the same row.
**   Kept for the triggers of earlier builds: sqlite_ct_begin(MAXCSN),
**   sqlite_ct_take_log(), sqlite_ct_needs_stamp(...).
**   sqlite_ct_current_bsn()         the open transaction's BSN, NULL if it has not
**                                   written tracked data (SqlCeTransaction.
**                                   CurrentTransactionBsn).
**   sqlite_ct_uncommitted_writes()  1 when the open transaction wrote tracked
**                                   data an enumeration inside it would miss.
**   sqlite_ct_last_committed_csn()  CSN of the newest committed transaction that
**                                   touched tracked data, 0 if none.
**   sqlite_ct_tracking_context()    the connection's tracking context (16-byte
**                                   GUID blob) or NULL.
**   sqlite_ct_set_tracking_context(GUID|NULL)
**   sqlite_ct_apply_mode() / sqlite_ct_set_apply_mode(0|1)
**   sqlite_ct_now()                 wall clock, milliseconds since the Unix epoch.
**
** HOW IT WORKS: BSN = CSN. SQLite has one writer at a time, so a number handed
** out at a transaction's first tracked write (the newest logged CSN plus one) is
** also in commit order. That first write hands out the BSN and writes the log
** row as a statement nested in the trigger's, so the log row is written by the
** same transaction (and undone with it; see "The write path" below). The
** cached BSN is trusted only while
**   (a) the pager's data version (SQLITE_FCNTL_DATA_VERSION) is the one seen
**       when it was handed out: every commit, ours or another connection's,
**       moves it; and
**   (b) the newest log row is still that BSN: ROLLBACK, ROLLBACK TO a savepoint,
**       a failed statement or RAISE() remove the row and the next write gets
**       the number again (nothing committed carries it).
** The triggers of layouts 1 to 6 pass a probe of the log (MAXCSN) on every row
** for (b). Layout 7's pass NULL: while the virtual table sqlite_ct_txn is
** enlisted in the transaction, (b) is known without a query, and its xSync
** writes the log row again if a rollback took it (txn.c). No commit or
** rollback hook is used, so there is no hook slot to be displaced from. The
** statements the write path runs from C are kept prepared per connection and
** finalized at close (stmtcache.c).
*/
#include "sqlite_ct.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void ctNamesFree(CtNames *p);
static int ctWriteLog(CtState *p, char **pzErr);

CtState *ctStateNew(sqlite3 *db){
  CtState *p = sqlite3_malloc(sizeof(*p));
  if( p==0 ) return 0;
  memset(p, 0, sizeof(*p));
  p->db = db;
  p->nRef = 1;
  return p;
}

void ctStateRef(CtState *p){ p->nRef++; }

void ctStateUnref(void *pArg){
  CtState *p = (CtState*)pArg;
  if( p && --p->nRef==0 ){
    ctNamesFree(&p->victims);
    ctNamesFree(&p->stamping);
    ctNamesFree(&p->uniquesOk);
    sqlite3_free(p->aCap);
    sqlite3_free(p->aCapKey);
    sqlite3_free(p);
  }
}

static unsigned int ctDataVersion(sqlite3 *db){
  unsigned int v = 0;
  /* NULL names the main database (documented), without the name lookup
  ** "main" costs: an insert asks up to four times. */
  sqlite3_file_control(db, 0, SQLITE_FCNTL_DATA_VERSION, &v);
  return v;
}

sqlite3_int64 ctNowMs(void){
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (sqlite3_int64)ts.tv_sec*1000 + ts.tv_nsec/1000000;
}

/* sqlite_ct_txn is enlisted in the open transaction and has not synced
** (txn.c): the BSN was handed out in this transaction, which no commit has
** ended, so (a) holds without asking the pager. */
#define CT_TXN_OPEN(p) ((p)->bTxnJoined && !(p)->bTxnSynced)

/* The transaction already holds a BSN: see (a) and (b) above. */
static int ctBsnValid(CtState *p, sqlite3_int64 iMaxCsn){
  return p->iBsn!=0 && iMaxCsn==p->iBsn
      && (CT_TXN_OPEN(p) || p->uDataVersion==ctDataVersion(p->db));
}

/* Hand out a BSN for a transaction whose newest log row is iMaxCsn. Returns
** the BSN the caller must log, or 0 when the transaction already has one. */
static sqlite3_int64 ctBegin(CtState *p, sqlite3_int64 iMaxCsn){
  if( ctBsnValid(p, iMaxCsn) ) return 0;
  p->iBsn = iMaxCsn + 1;
  p->uDataVersion = ctDataVersion(p->db);
  return p->iBsn;
}

/*
** Put s into its error state because an allocation its text needed failed:
** later appends are no-ops and sqlite3_str_finish() returns NULL, which every
** builder's caller reports as SQLITE_NOMEM (never half-built SQL). The
** sqlite3_str interface has no call that sets an error; growing a string past
** SQLITE_MAX_LENGTH is its documented SQLITE_TOOBIG error, and allocates
** nothing.
*/
void ctStrOom(sqlite3_str *s){
  sqlite3_str_appendchar(s, 0x7fffffff, ' ');
}

/*
** Run printf-formatted SQL (one or more statements). The sticky-error idiom:
** callers chain calls with "if( rc==SQLITE_OK ) rc = ...".
*/
int ctExecf(sqlite3 *db, char **pzErr, const char *zFmt, ...){
  va_list ap;
  char *zSql;
  int rc;
  va_start(ap, zFmt);
  zSql = sqlite3_vmprintf(zFmt, ap);
  va_end(ap);
  if( zSql==0 ) return SQLITE_NOMEM;
  rc = sqlite3_exec(db, zSql, 0, 0, 0);
  if( rc!=SQLITE_OK && pzErr && *pzErr==0 ){
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  }
  sqlite3_free(zSql);
  return rc;
}

/* Run a query whose first row's first column is an integer (or NULL). */
int ctQueryInt64(sqlite3 *db, sqlite3_int64 *piOut, int *pbNull, char **pzErr,
                 const char *zFmt, ...){
  va_list ap;
  char *zSql;
  sqlite3_stmt *pStmt = 0;
  int rc;
  va_start(ap, zFmt);
  zSql = sqlite3_vmprintf(zFmt, ap);
  va_end(ap);
  if( zSql==0 ) return SQLITE_NOMEM;
  rc = sqlite3_prepare_v2(db, zSql, -1, &pStmt, 0);
  sqlite3_free(zSql);
  if( rc==SQLITE_OK ){
    *piOut = 0;
    if( pbNull ) *pbNull = 1;
    if( sqlite3_step(pStmt)==SQLITE_ROW ){
      *piOut = sqlite3_column_int64(pStmt, 0);
      if( pbNull ) *pbNull = sqlite3_column_type(pStmt, 0)==SQLITE_NULL;
    }
    rc = sqlite3_finalize(pStmt);
  }
  if( rc!=SQLITE_OK && pzErr && *pzErr==0 ){
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  }
  return rc;
}

/* The text of the first column of the first row zSql returns with zArg bound
** to ?1, in *pzOut (sqlite3_malloc'ed; NULL when no row or a NULL value). */
int ctQueryText(sqlite3 *db, const char *zSql, const char *zArg, char **pzOut,
                char **pzErr){
  sqlite3_stmt *pStmt = 0;
  int rc = sqlite3_prepare_v2(db, zSql, -1, &pStmt, 0);
  *pzOut = 0;
  if( rc==SQLITE_OK ) rc = sqlite3_bind_text(pStmt, 1, zArg, -1, SQLITE_STATIC);
  if( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW
   && sqlite3_column_type(pStmt, 0)!=SQLITE_NULL ){
    *pzOut = sqlite3_mprintf("%s", (const char*)sqlite3_column_text(pStmt, 0));
    if( *pzOut==0 ) rc = SQLITE_NOMEM;
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
  }
  if( rc!=SQLITE_OK ){
    sqlite3_free(*pzOut);
    *pzOut = 0;
    if( rc!=SQLITE_NOMEM && pzErr && *pzErr==0 ){
      *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
    }
  }
  return rc;
}

/* Give the open write transaction a BSN from C (create_schema uses this for
** the enabling transaction), logging it when it is new and enlisting
** sqlite_ct_txn as a trigger's first write does (ctWriteLog), so that the
** BSN is forgotten when the transaction ends. */
int ctAllocateBsn(CtState *p, sqlite3_int64 *piBsn, char **pzErr){
  sqlite3_int64 iMax = 0, iNew;
  int rc = ctQueryInt64(p->db, &iMax, 0, pzErr,
      "SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence");
  if( rc!=SQLITE_OK ) return rc;
  iNew = ctBegin(p, iMax);
  if( iNew ) rc = ctWriteLog(p, pzErr);
  *piBsn = p->iBsn;
  return rc;
}

/*
** Refuse to read changes on a connection that reads other connections'
** uncommitted rows (PRAGMA read_uncommitted, which takes effect in
** shared-cache mode): its snapshot holds another transaction's log row and
** stamps before they commit, so an anchor read there skips what that
** transaction writes after the read, and keeps what its ROLLBACK takes back
** while the next transaction gets the same number.
**
** Every reader asks, up to three times a call, so the pragma (a prepare each
** time: SQLite runs a PRAGMA statement once, then re-prepares it) is read
** only when it may have changed. Setting a flag pragma expires every statement
** of the connection (OP_Expire); the kept CT_STMT_DIRTY statement ("SELECT
** 1") is then re-prepared on its next step, which its re-preparation count
** shows. A schema change does the same: the pragma is read again, needlessly.
** tests/test_review_core6.py sets the pragma after a read and expects the
** refusal, so an SQLite that stopped expiring statements here fails it.
*/
static int ctRefuseDirtyReads(CtState *p, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  int bOwned = 0, nReprepare = -1;
  int rc = ctCachedStmt(p, CT_STMT_DIRTY, "SELECT 1", &pStmt, &bOwned);
  if( rc==SQLITE_OK ){
    sqlite3_step(pStmt);
    if( !bOwned ) nReprepare = sqlite3_stmt_status(pStmt, SQLITE_STMTSTATUS_REPREPARE, 0);
    rc = ctStmtRelease(pStmt, bOwned);
  }
  if( rc!=SQLITE_OK ){
    if( *pzErr==0 ) *pzErr = sqlite3_mprintf("sqlite-ct: %s", sqlite3_errmsg(p->db));
    return rc;
  }
  if( nReprepare<0 || !p->bDirtyKnown || nReprepare!=p->nDirtyReprepare ){
    sqlite3_int64 bOn = 0;
    rc = ctQueryInt64(p->db, &bOn, 0, pzErr, "PRAGMA read_uncommitted");
    if( rc!=SQLITE_OK ) return rc;
    p->bDirty = bOn!=0;
    p->bDirtyKnown = nReprepare>=0;
    p->nDirtyReprepare = nReprepare;
  }
  if( p->bDirty ){
    *pzErr = sqlite3_mprintf("sqlite-ct: cannot read changes on a connection with"
        " PRAGMA read_uncommitted on: in shared-cache mode it reads other"
        " connections' uncommitted writes; run PRAGMA read_uncommitted=OFF on it");
    return *pzErr ? SQLITE_ERROR : SQLITE_NOMEM;
  }
  return SQLITE_OK;
}

/* The newest committed CSN as this connection sees it: the newest log row,
** unless that row is the open transaction's own, uncommitted one. */
int ctLastCommittedCsn(sqlite3 *db, CtState *p, sqlite3_int64 *piCsn, char **pzErr){
  sqlite3_int64 iMax = 0, iLog = 0;
  int rc;
  *piCsn = 0;
  rc = ctRefuseDirtyReads(p, pzErr);
  if( rc!=SQLITE_OK ) return rc;
  rc = ctQueryInt64(db, &iLog, 0, pzErr,
      "SELECT count(*) FROM main.sqlite_schema"
      " WHERE type='table' AND name='__sysTxCommitSequence'");
  if( rc!=SQLITE_OK || iLog==0 ) return rc;   /* never tracked: 0 */
  rc = ctQueryInt64(db, &iMax, 0, pzErr,
      "SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence");
  if( rc==SQLITE_OK && ctBsnValid(p, iMax) ){
    rc = ctQueryInt64(db, &iMax, 0, pzErr,
        "SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence"
        " WHERE __sysTxCsn<%lld", p->iBsn);
  }
  *piCsn = iMax;
  return rc;
}

static void ctResultError(sqlite3_context *ctx, int rc, char *zErr){
  if( rc==SQLITE_NOMEM ){
    sqlite3_result_error_nomem(ctx);
  }else{
    sqlite3_result_error(ctx, zErr ? zErr : "sqlite-ct: internal error", -1);
    /* Never SQLITE_SCHEMA: SQLite would re-run the statement up to 25 times. */
    sqlite3_result_error_code(ctx, rc==SQLITE_SCHEMA ? SQLITE_ERROR : rc);
  }
  sqlite3_free(zErr);
}

void ctFuncBegin(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  sqlite3_int64 iNew;
  (void)argc;
  p->iPendingLog = 0;
  if( p->bApply ) return;  /* NULL: apply mode logs nothing */
  iNew = ctBegin(p, sqlite3_value_int64(argv[0]));
  p->iPendingLog = iNew;
  if( iNew ) sqlite3_result_int64(ctx, iNew);
}

/* The BSN the preceding sqlite_ct_begin() call handed out, which the trigger
** now logs; NULL when that call found the transaction's BSN logged already.
** Split from sqlite_ct_begin() so that the trigger's INSERT into
** __sysTxCommitSequence does not read that table: an INSERT .. SELECT that
** reads its own target is copied through a temporary b-tree, opened for every
** row even when nothing is inserted. It does not clear what it returns:
** SQLite flattens the trigger's subquery and evaluates it more than once per
** row. The next sqlite_ct_begin() clears it, finding that BSN logged. */
void ctFuncTakeLog(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc; (void)argv;
  if( p->iPendingLog ) sqlite3_result_int64(ctx, p->iPendingLog);
}

/* a IS b, as SQL's IS operator compares two values. */
static int ctValueIs(sqlite3_value *a, sqlite3_value *b){
  int ta = sqlite3_value_type(a), tb = sqlite3_value_type(b);
  if( ta==SQLITE_NULL || tb==SQLITE_NULL ) return ta==tb;
  if( ta==SQLITE_INTEGER && tb==SQLITE_INTEGER ){
    return sqlite3_value_int64(a)==sqlite3_value_int64(b);
  }
  if( (ta==SQLITE_INTEGER || ta==SQLITE_FLOAT) && (tb==SQLITE_INTEGER || tb==SQLITE_FLOAT) ){
    return sqlite3_value_double(a)==sqlite3_value_double(b);
  }
  if( ta!=tb ) return 0;
  {
    int n = sqlite3_value_bytes(a);
    const void *pa = ta==SQLITE_TEXT ? (const void*)sqlite3_value_text(a) : sqlite3_value_blob(a);
    const void *pb = ta==SQLITE_TEXT ? (const void*)sqlite3_value_text(b) : sqlite3_value_blob(b);
    return n==sqlite3_value_bytes(b) && (n==0 || memcmp(pa, pb, n)==0);
  }
}

static int ctValueIsInt(sqlite3_value *a, sqlite3_int64 i){
  return sqlite3_value_type(a)==SQLITE_INTEGER && sqlite3_value_int64(a)==i;
}

static int ctValueIsContext(CtState *p, sqlite3_value *a){
  if( !p->bHasContext ) return sqlite3_value_type(a)==SQLITE_NULL;
  return sqlite3_value_type(a)==SQLITE_BLOB && sqlite3_value_bytes(a)==16
      && memcmp(sqlite3_value_blob(a), p->aContext, 16)==0;
}

/*
** sqlite_ct_needs_stamp(MAXCSN, NEW.chg, OLD.chg, NEW.ins, OLD.ins, NEW.ctx,
**                       OLD.ctx, TRACK_UPDATES)
** The AFTER UPDATE trigger's WHEN: true when the updated row does not carry
** this transaction's stamps yet (TRACK_UPDATES), or when the statement wrote a
** __sys column with a value tracking would not write (the body then RAISEs).
** It runs before the trigger body has logged the transaction, so it compares
** with the BSN the transaction holds or is about to be given (MAXCSN+1),
** never with a number cached from an earlier transaction.
*/
void ctFuncNeedsStamp(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  sqlite3_int64 iMax = sqlite3_value_int64(argv[0]);
  sqlite3_int64 iPending;
  int bLie, bUnstamped;
  (void)argc;
  if( p->bApply ) iPending = 0;
  else if( ctBsnValid(p, iMax) ) iPending = p->iBsn;
  else iPending = iMax + 1;
  bLie = (!ctValueIs(argv[3], argv[4]) && !ctValueIsInt(argv[3], iPending))
      || (!ctValueIs(argv[1], argv[2]) && !ctValueIsInt(argv[1], iPending))
      || (!ctValueIs(argv[5], argv[6]) && !ctValueIsContext(p, argv[5]));
  bUnstamped = sqlite3_value_int(argv[7])
      && (!ctValueIsInt(argv[1], iPending) || !ctValueIsContext(p, argv[5]));
  sqlite3_result_int(ctx, bLie || bUnstamped);
}

void ctFuncBsn(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc; (void)argv;
  sqlite3_result_int64(ctx, p->bApply ? 0 : p->iBsn);
}

void ctFuncCurrentBsn(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  sqlite3_int64 iMax = 0;
  char *zErr = 0;
  int rc;
  (void)argc; (void)argv;
  if( p->iBsn==0 || sqlite3_get_autocommit(p->db) ) return;
  rc = ctQueryInt64(p->db, &iMax, 0, &zErr,
      "SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence");
  if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  if( ctBsnValid(p, iMax) ) sqlite3_result_int64(ctx, p->iBsn);
}

/*
** sqlite_ct_uncommitted_writes(): 1 when the open transaction has written
** tracked data whose stamps would hide committed changes from an enumeration
** run inside it (and, after a ROLLBACK, leave a replica's anchor past them):
** a native write (it holds a BSN), a write in apply mode (stamps 0), or, as
** pure-SQL triggers leave no trace in this connection, any write transaction
** while a table is tracked in portable mode. Else 0. ctUncommittedWrites()
** says which of them (CT_WROTE_*), for sqlite_ct_changes().
*/
int ctUncommittedWrites(CtState *p, int *pfWrote, char **pzErr){
  sqlite3_int64 iMax = 0, nPortable = 0;
  int rc;
  *pfWrote = 0;
  /* Every reader asks this first (sqlite_ct_snapshot(), sqlite_ct_changes(),
  ** the Python readers): the place to refuse a connection that reads
  ** uncommitted rows. */
  rc = ctRefuseDirtyReads(p, pzErr);
  if( rc!=SQLITE_OK ) return rc;
  if( sqlite3_get_autocommit(p->db) || sqlite3_txn_state(p->db, "main")!=SQLITE_TXN_WRITE ){
    return SQLITE_OK;
  }
  if( p->bApplyWrote && p->uApplyDv==ctDataVersion(p->db) ) *pfWrote |= CT_WROTE_APPLY;
  if( p->iBsn ){
    rc = ctQueryInt64(p->db, &iMax, 0, pzErr,
        "SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence");
    if( rc==SQLITE_OK && ctBsnValid(p, iMax) ) *pfWrote |= CT_WROTE_NATIVE;
  }
  if( rc==SQLITE_OK ){
    rc = ctQueryInt64(p->db, &nPortable, 0, pzErr,
        "SELECT count(*) FROM main.sqlite_schema WHERE type='table'"
        " AND name='__sysOCSTrackedObjects'");
    if( rc==SQLITE_OK && nPortable ){
      rc = ctQueryInt64(p->db, &nPortable, 0, pzErr,
          "SELECT EXISTS(SELECT 1 FROM main.__sysOCSTrackedObjects"
          " WHERE __sysTrackOpt & %d)", CT_TRACKOPT_PORTABLE);
      if( nPortable ) *pfWrote |= CT_WROTE_PORTABLE;
    }
  }
  return rc;
}

void ctFuncUncommittedWrites(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  char *zErr = 0;
  int fWrote = 0;
  int rc;
  (void)argc; (void)argv;
  rc = ctUncommittedWrites(p, &fWrote, &zErr);
  if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  sqlite3_result_int(ctx, fWrote!=0);
}

void ctFuncLastCommittedCsn(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  sqlite3_int64 iCsn = 0;
  char *zErr = 0;
  int rc;
  (void)argc; (void)argv;
  rc = ctLastCommittedCsn(p->db, p, &iCsn, &zErr);
  if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  sqlite3_result_int64(ctx, iCsn);
}

void ctFuncContext(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc; (void)argv;
  if( p->bHasContext ) sqlite3_result_blob(ctx, p->aContext, 16, SQLITE_TRANSIENT);
}

void ctFuncSetContext(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc;
  if( sqlite3_value_type(argv[0])==SQLITE_NULL ){
    p->bHasContext = 0;
    return;
  }
  if( sqlite3_value_type(argv[0])!=SQLITE_BLOB || sqlite3_value_bytes(argv[0])!=16 ){
    sqlite3_result_error(ctx,
        "sqlite-ct: the tracking context must be a 16-byte GUID blob or NULL", -1);
    return;
  }
  memcpy(p->aContext, sqlite3_value_blob(argv[0]), 16);
  p->bHasContext = 1;
}

void ctFuncApplyMode(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc; (void)argv;
  sqlite3_result_int(ctx, p->bApply);
}

void ctFuncSetApplyMode(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc;
  p->bApply = sqlite3_value_int(argv[0])!=0;
  sqlite3_result_int(ctx, p->bApply);
}

void ctFuncNow(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  (void)argc; (void)argv;
  sqlite3_result_int64(ctx, ctNowMs());
}

/* ---- The write path of the triggers installed since 0.2 (schema.c). ------
**
** Each trigger makes one call into C per row, in its WHEN clause or in the key
** of its first statement, and that call hands out the BSN and writes the log
** row itself, as a statement nested in the trigger's (so a failed statement or
** ROLLBACK TO undoes the log row together with the rows it stamped). Only the
** first write of a transaction pays for that statement. Every other row of
** layouts 1 to 6 pays for the probe of the newest log row that the trigger
** passes as MAXCSN; layout 7's rows pay for nothing more while sqlite_ct_txn
** is enlisted (ctMaxCsnArg). */

/* Enlist sqlite_ct_txn in the open transaction (txn.c): a row inserted into
** it, by a statement kept prepared per connection. When it cannot join
** (SQLite refuses while another virtual table's xSync runs), the write path
** goes on probing the log. Out of memory is returned: SQLite has marked the
** connection (its running statements fail), so the caller must fail its
** statement now rather than run another nested one, whose failure SQLite
** would answer by rolling the whole transaction back. */
static int ctTxnEnlist(CtState *p){
  sqlite3_stmt *pStmt;
  int bOwned;
  int rc = ctCachedStmt(p, CT_STMT_TXN, "INSERT INTO main.sqlite_ct_txn VALUES(NULL)",
                        &pStmt, &bOwned);
  if( rc==SQLITE_OK ){
    sqlite3_step(pStmt);
    rc = ctStmtRelease(pStmt, bOwned);
  }
  return rc==SQLITE_NOMEM ? SQLITE_NOMEM : SQLITE_OK;
}

/* Log the BSN the transaction was just handed: a statement nested in the
** trigger's, prepared once per connection (stmtcache.c). sqlite_ct_txn joins
** the transaction next, and the BSN is trusted from then on (ctMaxCsnArg)
** until the transaction ends (txn.c). */
static int ctWriteLog(CtState *p, char **pzErr){
  sqlite3_stmt *pStmt;
  int bOwned;
  /* OR IGNORE: another path may have logged this number in the transaction
  ** meanwhile (a portable-mode table's trigger, create_schema()) while a
  ** DEFAULT's BSN waited for its log row (bLogPending); the transaction then
  ** shares it, as when a probe finds it. */
  int rc = ctCachedStmt(p, CT_STMT_LOG,
      "INSERT OR IGNORE INTO main.__sysTxCommitSequence(__sysTxCsn, __sysTxBsn,"
      " __sysCommitTime) VALUES(?1, ?1, ?2)", &pStmt, &bOwned);
  if( rc==SQLITE_OK ){
    sqlite3_bind_int64(pStmt, 1, p->iBsn);
    sqlite3_bind_int64(pStmt, 2, ctNowMs());
    sqlite3_step(pStmt);
    rc = ctStmtRelease(pStmt, bOwned);
  }
  if( rc!=SQLITE_OK ){
    if( *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(p->db));
    return rc;
  }
  p->bTxnSuspect = 0;
  p->bLogPending = 0;
  if( !p->bTxnJoined && !p->bTxnSynced ) return ctTxnEnlist(p);
  return SQLITE_OK;
}

/* The newest logged CSN (0 when the log is empty), for the DEFAULT. */
static int ctReadMaxCsn(CtState *p, sqlite3_int64 *piMax, char **pzErr){
  sqlite3_stmt *pStmt;
  int bOwned;
  int rc = ctCachedStmt(p, CT_STMT_MAXCSN,
      "SELECT max(__sysTxCsn) FROM main.__sysTxCommitSequence", &pStmt, &bOwned);
  if( rc==SQLITE_OK ){
    *piMax = sqlite3_step(pStmt)==SQLITE_ROW ? sqlite3_column_int64(pStmt, 0) : 0;
    rc = ctStmtRelease(pStmt, bOwned);
  }
  if( rc!=SQLITE_OK && *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(p->db));
  return rc;
}

/*
** The newest logged CSN for the write path's functions. The triggers of
** layouts 1 to 6 pass it as their first argument (a probe of the log in SQL;
** NULL only when the log is empty, and probing from C finds the same).
** Layout 7's pass NULL: then, while sqlite_ct_txn is enlisted in the
** transaction, has not synced and no rollback is pending (txn.c), the cached
** BSN is taken as logged without a query; otherwise the same probe, from C.
** A probe that finds this transaction's log row while sqlite_ct_txn is not
** enlisted (it could not join when the row was written) enlists it, so that
** later rows probe no more.
*/
static int ctMaxCsnArg(CtState *p, sqlite3_value *pArg, sqlite3_int64 *piMax,
                       char **pzErr){
  int rc;
  if( sqlite3_value_type(pArg)!=SQLITE_NULL ){
    *piMax = sqlite3_value_int64(pArg);
    return SQLITE_OK;
  }
  if( CT_TXN_OPEN(p) && !p->bTxnSuspect && p->iBsn!=0 ){
    if( !p->bTxnExplicit || !sqlite3_get_autocommit(p->db) ){
      /* While the DEFAULT's BSN waits for its log row, the newest log row
      ** is the one the DEFAULT read: the caller writes it. */
      *piMax = p->bLogPending ? p->iBsn-1 : p->iBsn;
      return SQLITE_OK;
    }
    /* An explicit transaction that reports autocommit mode is committing:
    ** this write runs from another virtual table's xSync, called before
    ** sqlite_ct_txn's, where a rollback tells nobody. */
    p->bTxnSuspect = 1;
  }
  rc = ctReadMaxCsn(p, piMax, pzErr);
  if( rc==SQLITE_OK && ctBsnValid(p, *piMax) ){
    p->bTxnSuspect = 0;
    if( !p->bTxnJoined && !p->bTxnSynced ) rc = ctTxnEnlist(p);
  }
  return rc;
}

/*
** Whether a row of a tracked table, or a tombstone, carries BSN iBsn: one
** query over every tracked table (a seek of its stamp index each) and the
** tombstones of the tracked tables (a seek of their primary key each). Run
** only when a rollback took the open transaction's log row before its commit.
*/
static int ctBsnInUse(CtState *p, sqlite3_int64 iBsn, int *pbUsed, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  sqlite3_str *s = sqlite3_str_new(p->db);
  char *zSql;
  int rc;
  *pbUsed = 0;
  sqlite3_str_appendall(s, "SELECT EXISTS(SELECT 1 FROM main.__sysOCSDeletedRows"
      " WHERE __sysTName IN (SELECT __sysTName FROM main.__sysOCSTrackedObjects)"
      " AND __sysDeleteTxBsn=?1");
  /* The tables with a __sysChangeTxBsn column that are tracked, or have a
  ** stamp index (a renamed one, before tracking follows the rename): a seek
  ** of that index each, or a full scan of a tracked table that lost it. An
  ** application's table without the column is never named (its index might
  ** be called like sqlite-ct's). */
  rc = sqlite3_prepare_v2(p->db, "SELECT s.name FROM main.sqlite_schema AS s"
      " WHERE s.type='table' AND (s.name IN (SELECT __sysTName FROM"
      " main.__sysOCSTrackedObjects) OR EXISTS(SELECT 1 FROM main.sqlite_schema AS i"
      " WHERE i.type='index' AND i.tbl_name=s.name AND i.name GLOB '__sysct_chg_*'))"
      " AND EXISTS(SELECT 1 FROM pragma_table_xinfo(s.name, 'main')"
      " WHERE name='__sysChangeTxBsn')", -1, &pStmt, 0);
  while( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
    sqlite3_str_appendf(s, " UNION ALL SELECT 1 FROM main.\"%w\""
                        " WHERE \"__sysChangeTxBsn\"=?1",
                        (const char*)sqlite3_column_text(pStmt, 0));
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
  }
  sqlite3_str_appendall(s, ")");
  zSql = sqlite3_str_finish(s);
  if( rc==SQLITE_OK && zSql==0 ) rc = SQLITE_NOMEM;
  pStmt = 0;
  if( rc==SQLITE_OK ) rc = sqlite3_prepare_v2(p->db, zSql, -1, &pStmt, 0);
  if( rc==SQLITE_OK ){
    sqlite3_bind_int64(pStmt, 1, iBsn);
    if( sqlite3_step(pStmt)==SQLITE_ROW ) *pbUsed = sqlite3_column_int(pStmt, 0);
    rc = sqlite3_finalize(pStmt);
  }
  if( rc!=SQLITE_OK && rc!=SQLITE_NOMEM && *pzErr==0 ){
    *pzErr = sqlite3_mprintf("sqlite-ct: %s", sqlite3_errmsg(p->db));
  }
  sqlite3_free(zSql);
  return rc;
}

/* For xSync and xRollback (txn.c), while sqlite_ct_txn is enlisted (so the
** BSN is the transaction's own): write the log row of the BSN again when a
** rollback took it and a row or tombstone still carries the BSN (a write
** SQLite let through before it told sqlite_ct_txn of the rollback). A
** transaction all of whose tracked writes were rolled back leaves no log row,
** as in layouts 1 to 6. With bTold (xSync), only after a rollback it was told
** of (bTxnSuspect): the log row written by the transaction's first write is
** there otherwise, and the probe would cost every commit a statement. A
** DEFAULT's BSN still waiting for its log row at commit (bLogPending) belongs
** to a row that was not written (OR IGNORE, DO NOTHING, RAISE(IGNORE)):
** checking the tables for it would cost such a statement, which changes
** nothing, several times what it costs untracked. (Or to a row whose AFTER
** INSERT trigger a trigger of the application's, created after sqlite-ct's,
** abandoned: README, "Triggers you add to a tracked table".)
** *pbLogged: whether the log row is there now. */
int ctEnsureLog(CtState *p, int bTold, int *pbLogged, char **pzErr){
  sqlite3_int64 iMax = 0;
  int rc, bUsed = 0;
  *pbLogged = 0;
  if( p->iBsn==0 || !p->bTxnJoined ) return SQLITE_OK;
  if( bTold && !p->bTxnSuspect ){ *pbLogged = 1; return SQLITE_OK; }
  rc = ctReadMaxCsn(p, &iMax, pzErr);
  if( rc!=SQLITE_OK ) return rc;
  if( iMax>=p->iBsn ){ *pbLogged = 1; return SQLITE_OK; }
  rc = ctBsnInUse(p, p->iBsn, &bUsed, pzErr);
  if( rc==SQLITE_OK && bUsed ){
    rc = ctWriteLog(p, pzErr);
    *pbLogged = rc==SQLITE_OK;
  }
  return rc;
}

/* The open transaction's BSN, handed out and logged when it has none yet,
** given the newest logged CSN iMax; 0 in apply mode, which stamps 0 and logs
** nothing. */
static int ctBeginLoggedMax(CtState *p, sqlite3_int64 iMax, sqlite3_int64 *piBsn,
                            char **pzErr){
  *piBsn = 0;
  if( p->bApply ){
    /* Remembered for sqlite_ct_uncommitted_writes(): rows stamped 0 hide
    ** their committed changes from an enumeration in this transaction. */
    p->bApplyWrote = 1;
    p->uApplyDv = ctDataVersion(p->db);
    return SQLITE_OK;
  }
  if( ctBegin(p, iMax) ){
    int rc = ctWriteLog(p, pzErr);
    if( rc!=SQLITE_OK ){ p->iBsn = 0; return rc; }
  }
  *piBsn = p->iBsn;
  return SQLITE_OK;
}

/* The same, given a trigger's MAXCSN argument (ctMaxCsnArg), which apply mode
** does not need. */
static int ctBeginLogged(CtState *p, sqlite3_value *pMaxArg, sqlite3_int64 *piBsn,
                         char **pzErr){
  sqlite3_int64 iMax = 0;
  int rc = p->bApply ? SQLITE_OK : ctMaxCsnArg(p, pMaxArg, &iMax, pzErr);
  if( rc!=SQLITE_OK ){ *piBsn = 0; return rc; }
  return ctBeginLoggedMax(p, iMax, piBsn, pzErr);
}

/*
** The write path's functions take, as their last argument, the identity of
** the database their trigger was created in (__sysCtMeta 'database_id',
** written into the trigger text). The BSN, the log and the statements here
** are the main database's: a trigger of a tracked database that a connection
** ATTACHed under another name would stamp with main's numbers and log into
** main. Such a write is refused, before anything is written.
*/
static int ctIsMainDatabase(sqlite3_context *ctx, CtState *p, sqlite3_value *pId){
  sqlite3_int64 iId = sqlite3_value_int64(pId);
  char *zErr = 0;
  int rc;
  if( iId==p->iMainDbId ) return 1;
  rc = ctDatabaseId(p->db, &p->iMainDbId, &zErr);
  if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return 0; }
  if( iId==p->iMainDbId ) return 1;
  sqlite3_result_error(ctx, "sqlite-ct: this table is tracked in a database attached"
      " to the connection; sqlite-ct tracks the tables of a connection's main database"
      " only: open that database file as the main database to write to it", -1);
  return 0;
}

/* sqlite_ct_write_bsn(MAXCSN, DBID): the transaction's BSN for a trigger about to
** write a tombstone, logging the transaction first when needed. */
void ctFuncWriteBsn(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  sqlite3_int64 iBsn;
  char *zErr = 0;
  int rc;
  (void)argc;
  if( !ctIsMainDatabase(ctx, p, argv[1]) ) return;
  rc = ctBeginLogged(p, argv[0], &iBsn, &zErr);
  if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  sqlite3_result_int64(ctx, iBsn);
}

/* sqlite_ct_default_bsn(): the DEFAULT of the stamp columns of a table whose
** inserts are tracked: the transaction's BSN, so SQLite writes the row
** stamped. A DEFAULT may not hold a subquery, so it cannot take the probe the
** triggers of layouts 1 to 6 pass: while sqlite_ct_txn is enlisted in the
** open transaction (which the BSN was handed out to) it offers that number
** without a query; otherwise (the first tracked insert of a transaction) it
** reads the newest log row itself and hands out the next BSN. Never a number
** kept from an earlier transaction on the strength of the pager's data
** version alone: a database image deserialized into the connection comes
** with a new pager whose data version starts again. It logs nothing:
** the row may yet be IGNOREd, and a transaction that changed nothing leaves no
** log row. The AFTER INSERT trigger's WHEN makes sure of the log row for every
** row that was written (ctMaxCsnArg), logs the BSN (the same number: nothing
** else can commit while this transaction holds the write lock) when it is
** missing (not written yet, or removed by a failed statement or ROLLBACK TO),
** and re-stamps the row only when its stamps differ. */
void ctFuncDefaultBsn(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc; (void)argv;
  if( p->bApply ){
    sqlite3_result_int64(ctx, 0);
  }else if( p->iBsn!=0 && CT_TXN_OPEN(p) ){
    sqlite3_result_int64(ctx, p->iBsn);
  }else{
    sqlite3_int64 iMax = 0;
    char *zErr = 0;
    int rc = ctReadMaxCsn(p, &iMax, &zErr);
    if( rc!=SQLITE_OK ){
      /* NULL: the AFTER INSERT trigger's WHEN stamps the row, or fails the
      ** statement with a message that says why (it is not main's table, or
      ** the error comes back there). */
      sqlite3_free(zErr);
      return;
    }
    if( ctBegin(p, iMax) && !p->bTxnJoined && !p->bTxnSynced ){
      /* A BSN handed out for a transaction that has none: enlist
      ** sqlite_ct_txn now, and leave its log row to the AFTER INSERT
      ** trigger's WHEN (bLogPending: it writes it without probing the log
      ** again); a row that is not written (OR IGNORE) needs none. */
      if( ctTxnEnlist(p)!=SQLITE_OK ){ sqlite3_result_error_nomem(ctx); return; }
      if( p->bTxnJoined ) p->bLogPending = 1;
    }
    sqlite3_result_int64(ctx, p->iBsn);
  }
}

/* ---- Name lists: the victim marks and the stamping marks. */

static int ctNamesFind(const CtNames *p, const char *zTab){
  int i;
  for(i=0; i<p->n; i++){
    if( strcmp(p->az[i], zTab)==0 ) return i;
  }
  return -1;
}

/* Mark zTab: one more mark if bCount, else at most one. Allocates only the
** first time a name is marked. SQLITE_NOMEM or SQLITE_OK. */
static int ctNamesAdd(CtNames *p, const char *zTab, int bCount){
  int i;
  char **az;
  int *an;
  char *z;
  if( zTab==0 ) return SQLITE_OK;
  i = ctNamesFind(p, zTab);
  if( i>=0 ){
    if( bCount || p->anMark[i]==0 ) p->anMark[i]++;
    return SQLITE_OK;
  }
  az = sqlite3_realloc64(p->az, sizeof(char*)*(p->n+1));
  if( az==0 ) return SQLITE_NOMEM;
  p->az = az;
  an = sqlite3_realloc64(p->anMark, sizeof(int)*(p->n+1));
  if( an==0 ) return SQLITE_NOMEM;
  p->anMark = an;
  z = sqlite3_mprintf("%s", zTab);
  if( z==0 ) return SQLITE_NOMEM;
  p->az[p->n] = z;
  p->anMark[p->n++] = 1;
  return SQLITE_OK;
}

/* Take one mark of zTab; whether there was one. */
static int ctNamesTake(CtNames *p, const char *zTab){
  int i;
  if( p->n==0 || zTab==0 ) return 0;
  i = ctNamesFind(p, zTab);
  if( i<0 || p->anMark[i]==0 ) return 0;
  p->anMark[i]--;
  return 1;
}

static void ctNamesClear(CtNames *p){
  int i;
  for(i=0; i<p->n; i++) p->anMark[i] = 0;
}

static void ctNamesFree(CtNames *p){
  int i;
  for(i=0; i<p->n; i++) sqlite3_free(p->az[i]);
  sqlite3_free(p->az);
  sqlite3_free(p->anMark);
  memset(p, 0, sizeof(*p));
}

/* The victim marks: a table name is marked when its BEFORE trigger remembers a
** row in __sysCtReplaceVictims, and unmarked by the AFTER INSERT trigger that
** sweeps them. */

/* sqlite_ct_victim(TNAME, RK): RK, remembering that TNAME has victims. */
void ctFuncVictim(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc;
  if( ctNamesAdd(&p->victims, (const char*)sqlite3_value_text(argv[0]), 0) ){
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_value(ctx, argv[1]);
}

/*
** The stamping marks. An application may not write a __sys column; the
** AFTER UPDATE trigger's WHEN refuses any change of __sysChangeTxBsn or
** __sysInsertTxBsn (an UPSERT's DO UPDATE copying excluded.* would otherwise
** pass the DEFAULTs' values off as stamps). sqlite-ct's own stamping UPDATEs
** change them, and fire that trigger too (the AFTER INSERT body's always, the
** AFTER UPDATE body's under recursive_triggers). So a WHEN that sends its body
** to stamp marks the table, the AFTER UPDATE WHEN that sees a __sys column
** change takes one mark as "this is our write", and the body's last statement,
** sqlite_ct_stamp_end(TNAME), takes the mark if no trigger did. A body that
** fails midway leaves its mark until the next change of a __sys column of that
** table takes it; the mark is dropped with the transaction's BSN.
*/
static int ctStampMark(CtState *p, const char *zTab){
  if( p->iStampBsn!=p->iBsn ){
    ctNamesClear(&p->stamping);
    p->iStampBsn = p->iBsn;
  }
  return ctNamesAdd(&p->stamping, zTab, 1);
}

static int ctStampTake(CtState *p, const char *zTab){
  if( p->iStampBsn!=p->iBsn ) return 0;
  return ctNamesTake(&p->stamping, zTab);
}

/* sqlite_ct_stamp_end(TNAME): the stamping body's last statement. */
void ctFuncStampEnd(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  (void)argc;
  ctStampTake(p, (const char*)sqlite3_value_text(argv[0]));
}

/*
** sqlite_ct_stamp_check(TNAME, LEFT): after a stamping UPDATE of sqlite-ct's
** own (the AFTER UPDATE trigger's, the AFTER UPDATE OF key trigger's, the
** fix of an inserted row), LEFT is true when it changed no row while the row
** it was to stamp is there (schema.c: `CASE WHEN changes() THEN 0 ELSE
** EXISTS(...) END`). SQLite runs the table's BEFORE UPDATE triggers for that
** UPDATE as for any other, and one that ends in RAISE(IGNORE) (a trigger that
** skips updates leaving its columns as they were, or frozen rows) makes
** SQLite skip the row: the change would keep its old stamp and never be
** enumerated. So the statement fails, saying what to do.
*/
void ctFuncStampCheck(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  char *zErr;
  (void)argc;
  if( !sqlite3_value_int(argv[1]) ){
    sqlite3_result_null(ctx);
    return;
  }
  zErr = sqlite3_mprintf("sqlite-ct: a BEFORE UPDATE trigger on table %s skipped sqlite-ct's"
      " stamping of a changed row (RAISE(IGNORE)), so the change would never reach a"
      " replica; declare that trigger BEFORE UPDATE OF the columns it is about, or add"
      " AND NEW.\"__sysChangeTxBsn\" IS OLD.\"__sysChangeTxBsn\" AND"
      " NEW.\"__sysInsertTxBsn\" IS OLD.\"__sysInsertTxBsn\" AND"
      " NEW.\"__sysTrackingContext\" IS OLD.\"__sysTrackingContext\" to its WHEN",
      (const char*)sqlite3_value_text(argv[0]));
  if( zErr==0 ){ sqlite3_result_error_nomem(ctx); return; }
  sqlite3_result_error(ctx, zErr, -1);
  sqlite3_result_error_code(ctx, SQLITE_CONSTRAINT_TRIGGER);
  sqlite3_free(zErr);
}

/* ---- UNIQUE indexes. The BEFORE triggers remember the rows an OR REPLACE
** could delete through the UNIQUE indexes the table had when its triggers were
** installed. An index created later (by any connection, with or without the
** extension, even inside the writing transaction) would let OR REPLACE delete
** rows nobody remembers. So the WHENs pass the indexes their triggers know
** (schema.c, ctUniquesSql: each name as <length>:<name>), and a write to a
** table with a UNIQUE index they do not know is refused until create_schema()
** re-installs the triggers. A dropped index is harmless (its columns are
** still compared; nothing is deleted through it). The check runs once per
** table and schema change: main's schema_version (read through a statement
** kept per connection) moves with every CREATE INDEX, committed or not. */

/* Whether index zIdx is listed in zKnown. */
static int ctUniqueKnown(const char *zKnown, const char *zIdx){
  size_t nIdx = strlen(zIdx);
  const char *z = zKnown;
  while( *z ){
    char *zEnd = 0;
    long n = strtol(z, &zEnd, 10);
    if( zEnd==z || *zEnd!=':' || n<0 || (size_t)n>strlen(zEnd+1) ) return 0;
    if( (size_t)n==nIdx && memcmp(zEnd+1, zIdx, nIdx)==0 ) return 1;
    z = zEnd + 1 + n;
  }
  return 0;
}

/* SQLITE_OK when every UNIQUE index of zTab is in zKnown; otherwise an error
** that says which one is not and what to do. */
/* Main's schema_version, and the re-preparation count of the statement kept
** to read it (-1 when it could not be kept): see ctCheckUniques. */
static int ctSchemaStamp(CtState *p, sqlite3_int64 *piSchema, int *pnReprepare,
                         char **pzErr){
  sqlite3_stmt *pStmt;
  int bOwned;
  int rc = ctCachedStmt(p, CT_STMT_SCHEMA, "PRAGMA main.schema_version", &pStmt, &bOwned);
  *piSchema = 0;
  *pnReprepare = -1;
  if( rc==SQLITE_OK ){
    if( sqlite3_step(pStmt)==SQLITE_ROW ) *piSchema = sqlite3_column_int64(pStmt, 0);
    if( !bOwned ) *pnReprepare = sqlite3_stmt_status(pStmt, SQLITE_STMTSTATUS_REPREPARE, 0);
    rc = ctStmtRelease(pStmt, bOwned);
  }
  if( rc!=SQLITE_OK && *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(p->db));
  return rc;
}

static int ctCheckUniques(CtState *p, const char *zTab, const char *zKnown, char **pzErr){
  sqlite3_stmt *pStmt;
  sqlite3_int64 iSchema = 0;
  int nReprepare = -1;
  int rc = ctSchemaStamp(p, &iSchema, &nReprepare, pzErr);
  if( rc!=SQLITE_OK ) return rc;
  /* The schema_version alone could come back with another schema: a ROLLBACK
  ** undoes a CREATE INDEX and the next one gets the same number. But every
  ** schema change, and the ROLLBACK of one, makes SQLite re-prepare the kept
  ** statement before it runs again: its re-preparation count moves too. A
  ** statement prepared for this call alone (bOwned) has none to offer. */
  if( iSchema!=p->iUniqueSchema || nReprepare<0 || nReprepare!=p->nUniqueReprepare ){
    ctNamesClear(&p->uniquesOk);
    p->iUniqueSchema = iSchema;
    p->nUniqueReprepare = nReprepare;
  }else{
    int i = ctNamesFind(&p->uniquesOk, zTab);
    if( i>=0 && p->uniquesOk.anMark[i] ) return SQLITE_OK;
  }
  pStmt = 0;
  rc = sqlite3_prepare_v2(p->db, "SELECT name FROM pragma_index_list(?1, 'main')"
                          " WHERE \"unique\" AND origin<>'pk'", -1, &pStmt, 0);
  if( rc==SQLITE_OK ) rc = sqlite3_bind_text(pStmt, 1, zTab, -1, SQLITE_STATIC);
  while( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
    const char *zIdx = (const char*)sqlite3_column_text(pStmt, 0);
    if( zIdx==0 ){ rc = SQLITE_NOMEM; break; }
    if( !ctUniqueKnown(zKnown, zIdx) ){
      *pzErr = sqlite3_mprintf("sqlite-ct: table \"%s\" has a UNIQUE index created after"
          " tracking began (\"%s\"); call create_schema() (sqlite_ct_create_schema(%Q))"
          " again so that OR REPLACE through it is tracked", zTab, zIdx, zTab);
      rc = *pzErr ? SQLITE_CONSTRAINT_TRIGGER : SQLITE_NOMEM;
      break;
    }
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
  }
  if( rc==SQLITE_OK ) rc = ctNamesAdd(&p->uniquesOk, zTab, 0);
  else if( *pzErr==0 && rc!=SQLITE_NOMEM ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(p->db));
  return rc;
}

/* The checks of the last two arguments the WHENs of layout 2 pass (argv[iArg]
** the UNIQUE indexes the triggers know or NULL, argv[iArg+1] whether NEW's
** composite key holds a NULL). 1 when the write may go on; else the error is
** set on ctx. */
static int ctWriteAllowed(sqlite3_context *ctx, CtState *p, const char *zTab,
                          sqlite3_value **argv, int iArg){
  char *zErr = 0;
  int rc;
  if( sqlite3_value_int(argv[iArg+1]) ){
    zErr = sqlite3_mprintf("sqlite-ct: NULL in the PRIMARY KEY of tracked table \"%s\";"
        " a replica cannot match such a row by key: give every key column a value", zTab);
    ctResultError(ctx, zErr ? SQLITE_CONSTRAINT_TRIGGER : SQLITE_NOMEM, zErr);
    return 0;
  }
  if( sqlite3_value_type(argv[iArg])!=SQLITE_TEXT || zTab==0 ) return 1;
  rc = ctCheckUniques(p, zTab, (const char*)sqlite3_value_text(argv[iArg]), &zErr);
  if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return 0; }
  return 1;
}

/*
** The write path's functions with an argument count this build does not
** know: triggers installed by a newer sqlite-ct (a newer layout passes more
** arguments). Refused with the message of a newer layout, so that the write
** fails as LayoutError says, not with "wrong number of arguments".
*/
void ctFuncNewerLayout(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  char *zErr;
  (void)argv;
  zErr = sqlite3_mprintf("sqlite-ct: this database was written by a newer sqlite-ct (layout"
      " above %d: its triggers pass %d arguments to a function of this build);"
      " upgrade sqlite-ct", CT_LAYOUT_VERSION, argc);
  ctResultError(ctx, zErr ? SQLITE_ERROR : SQLITE_NOMEM, zErr);
}

/* ---- Captured rows (layout 5). -------------------------------------------
**
** A native-mode table whose deletes are tracked has an always-empty partial
** index (schema.c, ctCaptureSql)
**   CREATE INDEX "__sysct_cap_T" ON "T"("k1" COLLATE BINARY, ...)
**     WHERE sqlite_ct_capture('T', "__sysInsertTxBsn", "k1", ...)=0
** SQLite evaluates its WHERE for every row whose entry it would remove or add:
** each row a DELETE removes, each row an OR REPLACE deletes through the key,
** the rowid or any UNIQUE index (one created after tracking began included),
** foreign-key cascades, each row an INSERT writes, and both images of a row an
** UPDATE writes when it sets the key, the rowid or __sysInsertTxBsn. It does so
** whether or not DELETE triggers fire (recursive_triggers=OFF fires none for
** OR REPLACE). sqlite_ct_capture() returns 1, so the index stays empty, and
** remembers the row (table, packed key, insert BSN) unless the row was
** inserted by this transaction (its delete is nothing a replica can see) or the
** connection is in apply mode (which writes no tombstones).
**
** The AFTER INSERT, UPDATE and DELETE triggers of the same table sweep: their
** WHEN drops the entry of the row they fire for (the new row, the row under
** its new key, the deleted row: its own tombstone is the DELETE trigger's),
** and tombstones every other captured row of the table unless a row holds
** its key spelled exactly so (BINARY), whatever its insert BSN (the capture
** cannot tell a new image from a removed one: an OR IGNORE that skipped a
** row leaves its new image under the key it collided with): a row deleted,
** the old key of a key change, an OR
** REPLACE victim under another key, and one under the same key, which the new
** row replaced. A row is swept before its statement (or trigger) ends: SQLite
** runs a row's AFTER triggers inside the program that wrote it.
**
** A captured row belongs to the program that captured it: a token kept as the
** capture call's auxiliary data (sqlite3_set_auxdata on the constant table
** name), which SQLite frees when that program halts, with an error or not, or
** a trigger program returns. Its destructor drops the program's rows that are
** still listed, so a statement that failed after capturing leaves nothing a
** later sweep could take for a deleted row.
*/
static int ctRestampSkip(CtState *p, const char *zTab, int nKey, sqlite3_value **apKey,
                         sqlite3_value *pIns);

typedef struct CtCapTok CtCapTok;
struct CtCapTok {
  CtState *p;
  sqlite3_uint64 iTok;
  int bQuiet;                  /* its program is not writing: capture nothing */
  int nLive;                   /* rows it captured that are still listed */
  char zTab[1];                /* the table's name, allocated with the token */
};

/* Whether zTab has captured rows waiting. */
static int ctCapPending(CtState *p, const char *zTab){
  int i;
  if( p->nCap==0 || zTab==0 ) return 0;
  for(i=0; i<p->nCap; i++){
    if( strcmp(p->aCap[i].zTab, zTab)==0 ) return 1;
  }
  return 0;
}

static void ctCapRemove(CtState *p, int i){
  ((CtCapTok*)p->aCap[i].pTok)->nLive--;
  p->nCap--;
  if( i<p->nCap ) memmove(&p->aCap[i], &p->aCap[i+1], sizeof(p->aCap[0])*(p->nCap-i));
  if( p->nCap==0 ) p->nCapKey = 0;     /* the keys' space is reused */
}

/* The capturing program ended: its rows that are still listed go. */
static void ctCapTokFree(void *pArg){
  CtCapTok *t = (CtCapTok*)pArg;
  CtState *p = t->p;
  int i;
  for(i=p->nCap-1; i>=0; i--){
    if( p->aCap[i].iTok==t->iTok ) ctCapRemove(p, i);
  }
  sqlite3_free(t);
  ctStateUnref(p);
}

/* Room for n more bytes of packed keys. SQLITE_NOMEM or SQLITE_OK. */
static int ctCapKeyRoom(CtState *p, sqlite3_int64 n){
  sqlite3_int64 nNew;
  unsigned char *aNew;
  if( n>0x3fffffff || p->nCapKey>0x3fffffff-n ) return SQLITE_NOMEM;
  if( p->nCapKey+n<=p->nCapKeyAlloc ) return SQLITE_OK;
  nNew = p->nCapKeyAlloc ? (sqlite3_int64)p->nCapKeyAlloc*2 : 1024;
  while( nNew<p->nCapKey+n ) nNew *= 2;
  aNew = sqlite3_realloc64(p->aCapKey, nNew);
  if( aNew==0 ) return SQLITE_NOMEM;
  p->aCapKey = aNew;
  p->nCapKeyAlloc = (int)nNew;
  return SQLITE_OK;
}

/* Append a captured row. SQLITE_NOMEM or SQLITE_OK. */
static int ctCapAdd(CtState *p, CtCapTok *t, int nKey, sqlite3_value **apKey,
                    sqlite3_value *pIns){
  const sqlite3_int64 nPacked = ctPackSize(nKey, apKey);
  struct CtCap *c;
  if( ctCapKeyRoom(p, nPacked) ) return SQLITE_NOMEM;
  if( p->nCap>=p->nCapAlloc ){
    int nNew = p->nCapAlloc ? p->nCapAlloc*2 : 16;
    struct CtCap *aNew = sqlite3_realloc64(p->aCap, sizeof(p->aCap[0])*nNew);
    if( aNew==0 ) return SQLITE_NOMEM;
    p->aCap = aNew;
    p->nCapAlloc = nNew;
  }
  if( ctPackInto(nKey, apKey, p->aCapKey + p->nCapKey) ) return SQLITE_NOMEM;
  c = &p->aCap[p->nCap++];
  c->iTok = t->iTok;
  c->pTok = t;
  t->nLive++;
  c->zTab = t->zTab;
  c->iKey = p->nCapKey;
  c->nKey = (int)nPacked;
  p->nCapKey += (int)nPacked;
  c->bInsNull = sqlite3_value_type(pIns)!=SQLITE_INTEGER;
  c->iIns = c->bInsNull ? 0 : sqlite3_value_int64(pIns);
  c->bSameKey = 0;
  return SQLITE_OK;
}

/*
** sqlite_ct_capture(TNAME, INS, KEY...): the WHERE of the capture index; always
** 1. Deterministic (SQLite requires it of a partial index's WHERE): its value
** is; what it remembers is the write path's state, like the guard's check.
*/
void ctFuncCapture(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  CtCapTok *t;
  sqlite3_int64 iIns;
  const char *zTab;
  int rc;
  sqlite3_result_int(ctx, 1);
  if( argc<3 || p->bApply || p->nCapQuiet ) return;
  /* This call site captures one row per row its statement writes, and that
  ** row's AFTER trigger sweeps it before the next row. A row of the call
  ** site's still listed belongs to a row the statement skipped after
  ** capturing its new image (OR IGNORE, DO NOTHING: SQLite evaluates the
  ** capture index before the UNIQUE index that makes it skip the row): that
  ** image is no removed row. */
  t = (CtCapTok*)sqlite3_get_auxdata(ctx, 0);
  if( t && t->nLive ){
    int i;
    for(i=p->nCap-1; i>=0 && t->nLive; i--){
      if( p->aCap[i].iTok==t->iTok ) ctCapRemove(p, i);
    }
  }
  /* A row inserted by this transaction: the BSN its DEFAULT gave it is the
  ** one this connection handed out, and no commit happened since. */
  if( sqlite3_value_type(argv[1])==SQLITE_INTEGER && p->iBsn!=0
   && (iIns = sqlite3_value_int64(argv[1]))==p->iBsn && p->uDataVersion==ctDataVersion(p->db) ){
    return;
  }
  if( t==0 ){
    zTab = (const char*)sqlite3_value_text(argv[0]);
    if( zTab==0 ){ sqlite3_result_error_nomem(ctx); return; }
    t = sqlite3_malloc64(sizeof(*t) + strlen(zTab));
    if( t==0 ){ sqlite3_result_error_nomem(ctx); return; }
    t->p = p;
    t->iTok = ++p->iTokNext;
    t->nLive = 0;
    /* Only a write captures: PRAGMA integrity_check evaluates the WHERE of
    ** every row too, in a read transaction. */
    t->bQuiet = sqlite3_txn_state(p->db, "main")!=SQLITE_TXN_WRITE;
    memcpy(t->zTab, zTab, strlen(zTab)+1);
    ctStateRef(p);
    sqlite3_set_auxdata(ctx, 0, t, ctCapTokFree);
    /* SQLite frees it at once when it cannot keep it: the rows captured
    ** under it would be dropped at the wrong time. Fail instead. */
    if( sqlite3_get_auxdata(ctx, 0)!=t ){ sqlite3_result_error_nomem(ctx); return; }
  }
  if( t->bQuiet ) return;
  if( p->pRestamp && ctRestampSkip(p, t->zTab, argc-2, &argv[2], argv[1]) ) return;
  rc = ctCapAdd(p, t, argc-2, &argv[2], argv[1]);
  if( rc!=SQLITE_OK ) sqlite3_result_error_nomem(ctx);
}

static int ctRunFix(CtState *p, const char *zTab, int fKind, int nVal,
                    sqlite3_value **apVal, const struct CtCap *pCap, char **pzErr);

/* Drop one captured row of zTab with packed key aKey and insert BSN pIns;
** whether there was one. */
static int ctCapDropOne(CtState *p, const char *zTab, const unsigned char *aKey,
                        sqlite3_int64 nKey, sqlite3_value *pIns){
  const int bInsNull = sqlite3_value_type(pIns)!=SQLITE_INTEGER;
  const sqlite3_int64 iIns = bInsNull ? 0 : sqlite3_value_int64(pIns);
  int i;
  for(i=p->nCap-1; i>=0; i--){
    struct CtCap *c = &p->aCap[i];
    if( c->nKey==nKey && c->bInsNull==bInsNull && c->iIns==iIns
     && strcmp(c->zTab, zTab)==0 && memcmp(p->aCapKey + c->iKey, aKey, (size_t)nKey)==0 ){
      ctCapRemove(p, i);
      return 1;
    }
  }
  return 0;
}

/*
** The packed key of apKey[0..nKey) in aBuf (128 bytes) or, longer, in a new
** allocation; apart from the list's keys, which a statement the caller runs
** may move. *paOut NULL when out of memory; free with ctOwnKeyFree().
*/
static sqlite3_int64 ctOwnKey(int nKey, sqlite3_value **apKey, unsigned char *aBuf,
                              unsigned char **paOut){
  const sqlite3_int64 n = ctPackSize(nKey, apKey);
  unsigned char *a = n<=128 ? aBuf : sqlite3_malloc64(n);
  if( a && ctPackInto(nKey, apKey, a) ){
    if( a!=aBuf ) sqlite3_free(a);
    a = 0;
  }
  *paOut = a;
  return n;
}

static void ctOwnKeyFree(unsigned char *a, unsigned char *aBuf){
  if( a!=aBuf ) sqlite3_free(a);
}

/*
** Restamps. sqlite-ct's own UPDATEs of __sysInsertTxBsn (the restamp of a row
** whose key changed, in the AFTER UPDATE OF key trigger's body; the fix of an
** inserted row its DEFAULTs did not stamp) make the capture index, which
** reads that column, capture the row's old image (the new one carries this
** transaction's BSN, which the capture never lists). That image is no
** removed row: the AFTER UPDATE trigger that the UPDATE fires drops it. But
** an application's AFTER UPDATE trigger created after sqlite-ct's fires
** first, and when it writes the table, the sweep of that write found the
** image under the live row's key and tombstoned the live row (a sync client
** would upload a delete of it). So the restamp registers the image it is
** about to cause, and the capture skips that image, once. A registration
** made by a trigger's WHEN lasts while that trigger program runs for the row
** (the auxiliary data of its call site, which SQLite frees when the program
** returns, also after an error); the fix's lasts while the fix runs.
*/
typedef struct CtRestamp CtRestamp;
struct CtRestamp {
  struct CtRestamp *pNext;
  CtState *p;
  int bLinked;                 /* in p->pRestamp (not skipped yet) */
  sqlite3_int64 iIns;          /* the image's __sysInsertTxBsn ... */
  int bInsNull;                /* ... or NULL, or not an integer */
  sqlite3_int64 nKey;          /* its packed key: aKey[0 .. nKey) */
  char *zTab;                  /* the table's name, in the same allocation */
  unsigned char aKey[1];
};

static void ctRestampUnlink(CtRestamp *r){
  CtRestamp **pp;
  if( !r->bLinked ) return;
  for(pp=&r->p->pRestamp; *pp; pp=&(*pp)->pNext){
    if( *pp==r ){ *pp = r->pNext; break; }
  }
  r->bLinked = 0;
}

static void ctRestampFree(void *pArg){
  CtRestamp *r = (CtRestamp*)pArg;
  CtState *p = r->p;
  ctRestampUnlink(r);
  sqlite3_free(r);
  ctStateUnref(p);
}

/* Register the image (zTab, key apKey[0..nKey), insert BSN pIns) a restamp is
** about to capture; NULL when out of memory. Free with ctRestampFree(). */
static CtRestamp *ctRestampNew(CtState *p, const char *zTab, int nKey,
                               sqlite3_value **apKey, sqlite3_value *pIns){
  const sqlite3_int64 n = ctPackSize(nKey, apKey);
  const size_t nTab = strlen(zTab) + 1;
  CtRestamp *r = sqlite3_malloc64(sizeof(*r) + n + nTab);
  if( r==0 ) return 0;
  if( ctPackInto(nKey, apKey, r->aKey) ){ sqlite3_free(r); return 0; }
  r->nKey = n;
  r->zTab = (char*)&r->aKey[n];
  memcpy(r->zTab, zTab, nTab);
  r->bInsNull = sqlite3_value_type(pIns)!=SQLITE_INTEGER;
  r->iIns = r->bInsNull ? 0 : sqlite3_value_int64(pIns);
  r->p = p;
  ctStateRef(p);
  r->pNext = p->pRestamp;
  p->pRestamp = r;
  r->bLinked = 1;
  return r;
}

/* Whether the capture of (zTab, key apKey[0..nKey), insert BSN pIns) is the
** image a registered restamp causes: then it is skipped, and the
** registration used up. */
static int ctRestampSkip(CtState *p, const char *zTab, int nKey, sqlite3_value **apKey,
                         sqlite3_value *pIns){
  const int bInsNull = sqlite3_value_type(pIns)!=SQLITE_INTEGER;
  const sqlite3_int64 iIns = bInsNull ? 0 : sqlite3_value_int64(pIns);
  unsigned char aBuf[128], *aKey = 0;
  sqlite3_int64 n = 0;
  CtRestamp *r;
  for(r=p->pRestamp; r; r=r->pNext){
    if( r->bInsNull!=bInsNull || r->iIns!=iIns || strcmp(r->zTab, zTab)!=0 ) continue;
    if( aKey==0 ){
      n = ctOwnKey(nKey, apKey, aBuf, &aKey);
      if( aKey==0 ) return 0;     /* out of memory: capture it, as before */
    }
    if( r->nKey==n && memcmp(r->aKey, aKey, (size_t)n)==0 ){
      ctRestampUnlink(r);
      ctOwnKeyFree(aKey, aBuf);
      return 1;
    }
  }
  if( aKey ) ctOwnKeyFree(aKey, aBuf);
  return 0;
}

/*
** Drop the captured images of the row of zTab with key apKey[0..nKey) and
** insert BSN pIns or pOldIns (a stamping write of sqlite-ct's own: the row
** stays where it is). Nothing is tombstoned.
*/
static int ctCapDropOwn(CtState *p, const char *zTab, int nKey, sqlite3_value **apKey,
                        sqlite3_value *pIns, sqlite3_value *pOldIns){
  unsigned char aBuf[128], *aOwn;
  const sqlite3_int64 nOwn = ctOwnKey(nKey, apKey, aBuf, &aOwn);
  if( aOwn==0 ) return SQLITE_NOMEM;
  ctCapDropOne(p, zTab, aOwn, nOwn, pIns);
  ctCapDropOne(p, zTab, aOwn, nOwn, pOldIns);
  ctOwnKeyFree(aOwn, aBuf);
  return SQLITE_OK;
}

/*
** The sweep of an AFTER trigger of zTab for the row with key apKey[0..nKey)
** and insert BSN pIns as written (NEW's, or OLD's for a delete); pOldIns is
** OLD's insert BSN for an update that kept the key, else NULL. bOwnOnly (the
** DELETE trigger's): only the row's own entry goes.
**
** First the row's own entries go: its new image (or, for a delete, the
** deleted row), and for an update that kept its key, when its images were
** captured at all, the old image too. Then every other captured row of
** zTab is tombstoned (CT_FIX_SWEEP, which writes nothing in apply mode) and
** dropped: one under the same key unconditionally (the row in the table under
** that key is the one being written, so a captured row there is an
** incarnation OR REPLACE deleted), one under another key unless a row holds
** that key spelled exactly so. The transaction's BSN is handed out and
** logged already.
*/
static int ctCapSweep(CtState *p, const char *zTab, int nKey, sqlite3_value **apKey,
                      sqlite3_value *pIns, sqlite3_value *pOldIns, int bOwnOnly,
                      char **pzErr){
  unsigned char aBuf[128], *aOwn;
  const sqlite3_int64 nOwn = ctOwnKey(nKey, apKey, aBuf, &aOwn);
  int rc = SQLITE_OK;
  int i;
  if( aOwn==0 ) return SQLITE_NOMEM;
  if( ctCapDropOne(p, zTab, aOwn, nOwn, pIns) && pOldIns ){
    ctCapDropOne(p, zTab, aOwn, nOwn, pOldIns);
  }
  if( bOwnOnly || p->nCap==0 ){
    ctOwnKeyFree(aOwn, aBuf);
    return SQLITE_OK;
  }
  /* Oldest first. The entry leaves the list before its statement runs (the
  ** statement binds a copy of the key before anything can capture again). */
  i = 0;
  while( rc==SQLITE_OK && i<p->nCap ){
    struct CtCap c = p->aCap[i];
    if( strcmp(c.zTab, zTab)!=0 ){ i++; continue; }
    ctCapRemove(p, i);
    c.bSameKey = c.nKey==nOwn && memcmp(p->aCapKey + c.iKey, aOwn, (size_t)nOwn)==0;
    rc = ctRunFix(p, zTab, CT_FIX_SWEEP, 0, 0, &c, pzErr);
  }
  ctOwnKeyFree(aOwn, aBuf);
  return rc;
}

/* ---- The fix of an inserted row (layout 4). */

/* Whether a statement of fix f is running (further up the stack). */
static int ctFixBusy(const struct CtFix *f){
  int i;
  for(i=0; i<f->nStmt; i++){
    if( sqlite3_stmt_busy(f->apStmt[i]) ) return 1;
  }
  return 0;
}

/* Prepare the statements of the fix of a row of zTab (the name its trigger
** passes) into apStmt, persistent when bKeep. */
static int ctFixPrepare(CtState *p, const char *zTab, int fKind, int bKeep,
                        sqlite3_stmt **apStmt, int *pnStmt, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  char *zName = 0, *zSql = 0;
  const char *zTail;
  CtTable *pTab = 0;
  int rc;
  *pnStmt = 0;
  /* The table's name now: after ALTER TABLE RENAME, and until sqlite-ct
  ** follows it, the trigger still passes the old one, but SQLite moved the
  ** trigger itself to the renamed table. */
  rc = ctQueryText(p->db, "SELECT tbl_name FROM main.sqlite_schema"
                   " WHERE type='trigger' AND name='__sysct_ai_' || ?1", zTab, &zName, pzErr);
  if( rc==SQLITE_OK ) rc = ctTableLoad(p->db, zName ? zName : zTab, &pTab, pzErr);
  if( rc==SQLITE_OK ){
    zSql = ctFixSql(pTab, zTab, fKind);
    if( zSql==0 ) rc = SQLITE_NOMEM;
  }
  zTail = zSql;
  while( rc==SQLITE_OK && zTail && zTail[0] ){
    pStmt = 0;
    rc = sqlite3_prepare_v3(p->db, zTail, -1, bKeep ? SQLITE_PREPARE_PERSISTENT : 0,
                            &pStmt, &zTail);
    if( rc!=SQLITE_OK ){
      if( *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(p->db));
    }else if( pStmt ){
      if( *pnStmt>=CT_FIX_NSTMT ){ sqlite3_finalize(pStmt); rc = SQLITE_INTERNAL; break; }
      apStmt[(*pnStmt)++] = pStmt;
    }
  }
  if( rc!=SQLITE_OK ){
    int i;
    for(i=0; i<*pnStmt; i++) sqlite3_finalize(apStmt[i]);
    *pnStmt = 0;
  }
  sqlite3_free(zSql);
  sqlite3_free(zName);
  ctTableFree(pTab);
  return rc;
}

/*
** Run the fix of the row of zTab an AFTER INSERT trigger of layout 4 fired
** for (schema.c, ctFixSql: tombstone the rows an OR REPLACE deleted when
** fKind&2, stamp the row when fKind&1), with apVal[0] NEW's rowid and
** apVal[1..] NEW's key. Statements nested in the trigger's, as the log
** row's is: a failed statement or ROLLBACK TO undoes what they wrote together
** with the row. They are kept prepared per connection (CT_NFIX tables, the
** least recently prepared making room) while main's schema stays the one
** they were prepared for; prepared for this call alone when they cannot be
** kept or are in use further up the stack (an application's trigger that
** the fix fires inserts into the same table).
*/
static int ctRunFix(CtState *p, const char *zTab, int fKind, int nVal,
                    sqlite3_value **apVal, const struct CtCap *pCap, char **pzErr){
  sqlite3_stmt *aOwned[CT_FIX_NSTMT];
  sqlite3_stmt **apStmt = 0;
  sqlite3_int64 iSchema = 0;
  int nReprepare = -1, nStmt = 0, i, j, iSlot = -1;
  int rc = ctSchemaStamp(p, &iSchema, &nReprepare, pzErr);
  if( rc!=SQLITE_OK ) return rc;
  if( zTab==0 ) return SQLITE_NOMEM;
  for(i=0; i<CT_NFIX; i++){
    struct CtFix *f = &p->aFix[i];
    if( f->zTab==0 || strcmp(f->zTab, zTab)!=0 || f->fKind!=fKind || f->nVal!=nVal ) continue;
    if( ctFixBusy(f) ){ iSlot = i; break; }     /* in use up the stack */
    if( f->iSchema!=iSchema || f->nReprepare!=nReprepare || nReprepare<0 ){
      ctFixClear(p, i);
      continue;
    }
    apStmt = f->apStmt;
    nStmt = f->nStmt;
    break;
  }
  if( apStmt==0 ){
    /* Kept when a slot is free to take it: none in use up the stack, for
    ** this table or another. */
    int bKeep = iSlot<0 && nReprepare>=0 && p->bCacheConnected;
    iSlot = -1;
    for(i=0; bKeep && i<CT_NFIX && iSlot<0; i++){
      int k = (p->iFixNext + i) % CT_NFIX;
      if( !ctFixBusy(&p->aFix[k]) ) iSlot = k;
    }
    if( iSlot>=0 ){
      p->iFixNext = (iSlot+1) % CT_NFIX;
      ctFixClear(p, iSlot);
      rc = ctFixPrepare(p, zTab, fKind, 1, p->aFix[iSlot].apStmt, &nStmt, pzErr);
      if( rc==SQLITE_OK ){
        struct CtFix *f = &p->aFix[iSlot];
        f->zTab = sqlite3_mprintf("%s", zTab);
        f->nStmt = nStmt;
        if( f->zTab==0 ){ ctFixClear(p, iSlot); rc = SQLITE_NOMEM; }
        else{
          f->fKind = fKind; f->nVal = nVal; f->iSchema = iSchema; f->nReprepare = nReprepare;
          apStmt = f->apStmt;
        }
      }
    }else{
      rc = ctFixPrepare(p, zTab, fKind, 0, aOwned, &nStmt, pzErr);
      if( rc==SQLITE_OK ) apStmt = aOwned;
    }
    if( rc!=SQLITE_OK ) return rc;
  }
  for(i=0; rc==SQLITE_OK && i<nStmt; i++){
    sqlite3_stmt *pStmt = apStmt[i];
    int iParam = sqlite3_bind_parameter_index(pStmt, ":r");
    /* A bind that fails (out of memory copying a TEXT or BLOB key) must fail
    ** the fix: with NULL in its place the stamping would match no row. */
    if( iParam ) rc = ctBindValue(pStmt, iParam, apVal[0]);
    for(j=1; rc==SQLITE_OK && j<nVal; j++){
      char zName[24];
      sqlite3_snprintf(sizeof(zName), zName, ":k%d", j-1);
      iParam = sqlite3_bind_parameter_index(pStmt, zName);
      if( iParam ) rc = ctBindValue(pStmt, iParam, apVal[j]);
    }
    if( rc!=SQLITE_OK ){
      if( *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(p->db));
      break;
    }
    if( pCap ){
      /* The captured row of a sweep (CT_FIX_SWEEP): its packed key, its
      ** insert BSN. */
      iParam = sqlite3_bind_parameter_index(pStmt, ":rk");
      if( iParam ){
        rc = sqlite3_bind_blob(pStmt, iParam, p->aCapKey + pCap->iKey, pCap->nKey,
                               SQLITE_TRANSIENT);
      }
      iParam = sqlite3_bind_parameter_index(pStmt, ":ins");
      if( rc==SQLITE_OK && iParam ){
        rc = pCap->bInsNull ? sqlite3_bind_null(pStmt, iParam)
                            : sqlite3_bind_int64(pStmt, iParam, pCap->iIns);
      }
      iParam = sqlite3_bind_parameter_index(pStmt, ":same");
      if( rc==SQLITE_OK && iParam ) rc = sqlite3_bind_int(pStmt, iParam, pCap->bSameKey);
      if( rc!=SQLITE_OK ){
        if( *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(p->db));
        break;
      }
    }
    sqlite3_step(pStmt);
    rc = sqlite3_reset(pStmt);
    if( rc!=SQLITE_OK && *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(p->db));
  }
  if( apStmt==aOwned ){
    for(i=0; i<nStmt; i++) sqlite3_finalize(aOwned[i]);
  }
  return rc;
}

/*
** sqlite_ct_insert_when(MAXCSN, TNAME, TRACK_INSERT, VICTIMS, NEW.chg, NEW.ins,
**                       NEW.ctx, DBID [, UNIQUES, KEY_NULL])
** The AFTER INSERT trigger's WHEN. Gives the transaction its BSN (and logs it)
** when the row is to be stamped or victims swept, and is true when the body
** must run: the row does not carry the stamps the DEFAULTs should have given
** it (no DEFAULT, the transaction's first row, values the statement wrote),
** or the BEFORE trigger remembered rows an OR REPLACE may have deleted.
*/
void ctFuncInsertWhen(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  const int bTrack = sqlite3_value_int(argv[2]);
  const char *zTab = (const char*)sqlite3_value_text(argv[1]);
  /* Layout 5: victims come from the capture (sweep), not from marks. */
  const int bCapture = argc>=13 && CT_SHAPE_CAPTURES(sqlite3_value_int64(argv[10]));
  const int bSweep = bCapture && ctCapPending(p, zTab);
  int bVictims;
  sqlite3_int64 iBsn = 0;
  int bNeed;
  if( !ctIsMainDatabase(ctx, p, argv[7]) ) return;
  if( argc>=10 && !ctWriteAllowed(ctx, p, zTab, argv, 8) ) return;
  bVictims = !bCapture && sqlite3_value_int(argv[3]) && ctNamesTake(&p->victims, zTab);
  bNeed = bVictims;
  if( bTrack || bVictims || bSweep ){
    char *zErr = 0;
    int rc = ctBeginLogged(p, argv[0], &iBsn, &zErr);
    if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  }
  if( bSweep ){
    /* Before the fix: its stamping UPDATE fires the AFTER UPDATE trigger,
    ** whose sweep must not see this row's captures. NEW's key is argv[12..],
    ** NEW's insert BSN as written argv[5]. */
    char *zErr = 0;
    int rc = ctCapSweep(p, zTab, argc-12, &argv[12], argv[5], 0, 0, &zErr);
    if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  }
  if( bTrack && !bNeed ){
    bNeed = !ctValueIsInt(argv[4], iBsn) || !ctValueIsInt(argv[5], iBsn)
         || !ctValueIsContext(p, argv[6]);
  }
  if( bNeed && bTrack && ctStampMark(p, zTab) ){ sqlite3_result_error_nomem(ctx); return; }
  if( bNeed && argc>=13 ){
    /* Layout 4: the body is empty; the fix does its work, and then takes the
    ** stamping mark as the body's sqlite_ct_stamp_end() did. */
    char *zErr = 0;
    int rc;
    if( p->nFixDepth>=CT_FIX_DEPTH_MAX ){
      rc = SQLITE_ERROR;
      zErr = sqlite3_mprintf("sqlite-ct: inserts into tracked tables nested more than %d "
                             "deep through the stamping of rows of \"%s\" (does a trigger "
                             "write into the table whose write fires it?)",
                             CT_FIX_DEPTH_MAX, zTab);
    }else{
      /* The fix's UPDATE of __sysInsertTxBsn captures the row's image as
      ** inserted (NEW's insert BSN, argv[5]): see "Restamps". */
      CtRestamp *r = 0;
      if( bTrack && bCapture ){
        r = ctRestampNew(p, zTab, argc-12, &argv[12], argv[5]);
        if( r==0 ){ sqlite3_result_error_nomem(ctx); return; }
      }
      p->nFixDepth++;
      rc = ctRunFix(p, zTab, (bTrack ? CT_FIX_STAMP : 0)
                    | (sqlite3_value_int(argv[3]) && !bCapture ? CT_FIX_VICTIMS : 0),
                    argc-11, &argv[11], 0, &zErr);
      p->nFixDepth--;
      if( r ) ctRestampFree(r);
    }
    /* Done with the stamping either way: a failed fix fails its statement,
    ** and its mark must not let a later write of a __sys column through. */
    if( bTrack ) ctStampTake(p, zTab);
    if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
    bNeed = 0;
  }
  sqlite3_result_int(ctx, bNeed);
}

/*
** sqlite_ct_insert_when() with any other argument count than layouts 2 and 3
** pass: layout 4's (10 arguments, CT_INSERT_WHEN_SHAPE, NEW's rowid, NEW's
** key columns), or a newer layout's (refused as such).
*/
void ctFuncInsertWhenAny(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  if( argc>=13 && sqlite3_value_type(argv[10])==SQLITE_INTEGER
   && (sqlite3_value_int64(argv[10])==CT_INSERT_WHEN_SHAPE
       || CT_SHAPE_CAPTURES(sqlite3_value_int64(argv[10]))) ){
    ctFuncInsertWhen(ctx, argc, argv);
  }else{
    ctFuncNewerLayout(ctx, argc, argv);
  }
}

/*
** sqlite_ct_update_when(MAXCSN, TNAME, KEY_CHANGED, TRACK_UPDATES, NEW.chg,
**                       OLD.chg, NEW.ins, OLD.ins, NEW.ctx, OLD.ctx, DBID
**                       [, UNIQUES, KEY_NULL])
** The AFTER UPDATE trigger's WHEN. An error (as RAISE(ABORT) would give) when
** the statement changed __sysChangeTxBsn or __sysInsertTxBsn (see the stamping
** marks above), or set the context to another than the connection's.
** True, with the transaction's BSN handed out and logged, when the row must be
** re-stamped: it does not carry this transaction's stamps yet (TRACK_UPDATES),
** or its key changed (it counts as inserted now). The body's own stamping
** UPDATE leaves it false.
*/
void ctFuncUpdateWhen(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  const char *zTab = (const char*)sqlite3_value_text(argv[1]);
  sqlite3_int64 iMax = 0;
  const int bChg = !ctValueIs(argv[4], argv[5]);
  const int bIns = !ctValueIs(argv[6], argv[7]);
  sqlite3_int64 iPending;
  int bNeed, bSweep;
  if( !ctIsMainDatabase(ctx, p, argv[10]) ) return;
  if( argc>=13 && !ctWriteAllowed(ctx, p, zTab, argv, 11) ) return;
  if( (bChg || bIns) && ctStampTake(p, zTab) ){
    /* sqlite-ct's own stamping write. One that sets __sysInsertTxBsn (the
    ** fix of an inserted row, the restamp after a key change) had the row's
    ** old image captured, though the row stays: drop it (and the new image)
    ** here, before the application's AFTER UPDATE triggers that fire after
    ** this one write the table and their sweep takes the image, under the
    ** key of a live row, for an incarnation that is gone. */
    if( bIns && argc>=15 && CT_SHAPE_CAPTURES(sqlite3_value_int64(argv[13]))
     && ctCapPending(p, zTab) ){
      if( ctCapDropOwn(p, zTab, argc-14, &argv[14], argv[6], argv[7]) ){
        sqlite3_result_error_nomem(ctx);
        return;
      }
    }
    sqlite3_result_int(ctx, 0);
    return;
  }
  if( !p->bApply ){
    char *zErr = 0;
    int rc = ctMaxCsnArg(p, argv[0], &iMax, &zErr);
    if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  }
  if( p->bApply ) iPending = 0;
  else if( ctBsnValid(p, iMax) ) iPending = p->iBsn;
  else iPending = iMax + 1;
  /* Any other change is the application's. __sysInsertTxBsn: refused (an
  ** UPSERT copying excluded.* would make a replica's row look inserted now,
  ** and its later delete invisible), except the 0 a sync provider writes in
  ** apply mode. __sysChangeTxBsn: only the value tracking writes itself (then
  ** logged below, like any stamp). The context: only the connection's own. */
  if( (bIns && !(p->bApply && ctValueIsInt(argv[6], 0)))
   || (bChg && !ctValueIsInt(argv[4], iPending))
   || (!ctValueIs(argv[8], argv[9]) && !ctValueIsContext(p, argv[8])) ){
    char *zErr = sqlite3_mprintf("sqlite-ct: the __sys columns of table %s are"
        " written by change tracking only; leave them out of INSERT and UPDATE", zTab);
    if( zErr==0 ){ sqlite3_result_error_nomem(ctx); return; }
    sqlite3_result_error(ctx, zErr, -1);
    sqlite3_result_error_code(ctx, SQLITE_CONSTRAINT_TRIGGER);
    sqlite3_free(zErr);
    return;
  }
  bNeed = sqlite3_value_int(argv[2])
      || (sqlite3_value_int(argv[3])
          && (!ctValueIsInt(argv[4], iPending) || !ctValueIsContext(p, argv[8])));
  /* Layout 5: sweep the rows this update (or an OR REPLACE of it) captured:
  ** NEW's key is argv[14..], NEW's insert BSN as written argv[6]. */
  bSweep = argc>=15 && CT_SHAPE_CAPTURES(sqlite3_value_int64(argv[13]))
        && ctCapPending(p, zTab);
  if( bNeed || bChg || bSweep ){
    /* bChg alone: the row now carries the BSN, which must be logged. */
    sqlite3_int64 iBsn;
    char *zErr = 0;
    int rc = ctBeginLoggedMax(p, iMax, &iBsn, &zErr);
    if( rc==SQLITE_OK && bSweep ){
      rc = ctCapSweep(p, zTab, argc-14, &argv[14], argv[6],
                      sqlite3_value_int(argv[2]) ? 0 : argv[7], 0, &zErr);
    }
    if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
    if( bNeed && ctStampMark(p, zTab) ){ sqlite3_result_error_nomem(ctx); return; }
  }
  sqlite3_result_int(ctx, bNeed);
}

/*
** sqlite_ct_rekey_when(MAXCSN, DBID, TNAME, KEY_CHANGED [, NEW.ins, NEW.key...]):
** the WHEN of the AFTER UPDATE OF key trigger (layout 5; NEW's insert BSN and
** key since layout 6). True when the key changed, with the BSN handed out and
** logged (the body stamps it as the row's insert BSN; 0 in apply mode) and
** the table marked: the body's UPDATE is sqlite-ct's own write of
** __sysInsertTxBsn (see the stamping marks). With NEW's key, the image that
** UPDATE captures is registered for the capture to skip (see "Restamps"),
** for as long as this trigger program runs for the row.
*/
void ctFuncRekeyWhen(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  const char *zTab = (const char*)sqlite3_value_text(argv[2]);
  sqlite3_int64 iBsn;
  char *zErr = 0;
  int rc;
  (void)argc;
  if( !sqlite3_value_int(argv[3]) ){ sqlite3_result_int(ctx, 0); return; }
  if( !ctIsMainDatabase(ctx, p, argv[1]) ) return;
  rc = ctBeginLogged(p, argv[0], &iBsn, &zErr);
  if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  if( ctStampMark(p, zTab) ){ sqlite3_result_error_nomem(ctx); return; }
  if( argc>=6 && !p->bApply ){
    CtRestamp *r = ctRestampNew(p, zTab, argc-5, &argv[5], argv[4]);
    if( r==0 ){ sqlite3_result_error_nomem(ctx); return; }
    /* Kept by SQLite until this trigger program returns (the table name is
    ** a constant argument); freed at once when it cannot keep it. */
    sqlite3_set_auxdata(ctx, 2, r, ctRestampFree);
  }
  sqlite3_result_int(ctx, 1);
}

/*
** sqlite_ct_update_when() with any other argument count than layouts 2 to 4
** pass: layout 5's (CT_WHEN_SHAPE_CAPTURE, then NEW's key), or a newer
** layout's (refused as such).
*/
void ctFuncUpdateWhenAny(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  if( argc>=15 && sqlite3_value_type(argv[13])==SQLITE_INTEGER
   && CT_SHAPE_CAPTURES(sqlite3_value_int64(argv[13])) ){
    ctFuncUpdateWhen(ctx, argc, argv);
  }else{
    ctFuncNewerLayout(ctx, argc, argv);
  }
}

/*
** sqlite_ct_delete_when(MAXCSN, DBID, TNAME, OLD.ins, OLD.key...): the AFTER
** DELETE trigger's WHEN (layout 5). The BSN for the tombstone, handed out and
** logged when needed (0 in apply mode, which writes none); the deleted row's
** own captured entry goes (its tombstone is the trigger body's). The other
** captured rows are left to the AFTER INSERT or UPDATE trigger of the row
** whose write removed them: this row may be an OR REPLACE victim (with
** recursive_triggers on), deleted while the row that displaced it is not in
** the table yet, and that row's captured image would look gone here.
*/
void ctFuncDeleteWhen(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  CtState *p = (CtState*)sqlite3_user_data(ctx);
  const char *zTab = (const char*)sqlite3_value_text(argv[2]);
  sqlite3_int64 iBsn;
  char *zErr = 0;
  int rc;
  if( argc<5 ){ ctFuncNewerLayout(ctx, argc, argv); return; }
  if( !ctIsMainDatabase(ctx, p, argv[1]) ) return;
  rc = ctBeginLogged(p, argv[0], &iBsn, &zErr);
  if( rc==SQLITE_OK && ctCapPending(p, zTab) ){
    rc = ctCapSweep(p, zTab, argc-4, &argv[4], argv[3], 0, 1, &zErr);
  }
  if( rc!=SQLITE_OK ){ ctResultError(ctx, rc, zErr); return; }
  sqlite3_result_int64(ctx, iBsn);
}

/* ---- The guard (layout 3). ------------------------------------------------
**
** A native-mode table has an always-empty partial index (schema.c,
** ctGuardSql) whose key columns are every column of the table and whose
** WHERE is sqlite_ct_guard(TNAME)=0. SQLite evaluates it for every row an
** INSERT writes, a DELETE removes (OR REPLACE victims and cascades included)
** and an UPDATE writes, since the index names every column. The triggers do the tracking;
** the guard covers what they cannot: on a connection without this extension
** the write fails with "unknown function: sqlite_ct_guard()" even when that
** connection turned triggers off, and on a connection with it, triggers off
** are refused here. Deterministic (SQLite requires it of a partial index's
** WHERE; the value is always 1, and were SQLite to evaluate it once per
** statement instead of per row, the error would still stop the statement) and
** innocuous (it reads one setting of its own connection; trusted_schema=OFF
** must not disable it). Arguments after the table name are ignored.
*/
void ctFuncGuard(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  int bOn = 1;
  (void)argc;
  sqlite3_db_config(sqlite3_context_db_handle(ctx), SQLITE_DBCONFIG_ENABLE_TRIGGER, -1, &bOn);
  if( !bOn ){
    char *zErr = sqlite3_mprintf("sqlite-ct: triggers are turned off on this connection"
        " (SQLITE_DBCONFIG_ENABLE_TRIGGER=0, the shell's .dbconfig enable_trigger off),"
        " so this write to tracked table \"%s\" would not be tracked; turn triggers back"
        " on to write to it", argc>0 ? (const char*)sqlite3_value_text(argv[0]) : "?");
    ctResultError(ctx, zErr ? SQLITE_CONSTRAINT_TRIGGER : SQLITE_NOMEM, zErr);
    return;
  }
  sqlite3_result_int(ctx, 1);
}
