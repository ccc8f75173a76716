/*
** txn.c -- the transaction's boundaries, told by SQLite itself: the
** eponymous virtual table sqlite_ct_txn (layout 4).
**
** The first tracked write of a transaction hands out its BSN and logs it in
** __sysTxCommitSequence (state.c, ctWriteLog). The BSN stays valid while that
** log row exists: a ROLLBACK, a ROLLBACK TO a savepoint opened before the row
** was written, or the failure of the statement that wrote it (SQLite rolls
** back to that statement's own savepoint) removes the row, and the number
** must then be handed out again. Layout 3's triggers found out by probing
** the log's newest row on every row they wrote, a b-tree seek each time.
**
** ctWriteLog also inserts a row into sqlite_ct_txn (the row goes nowhere).
** That enlists the table in the transaction, as FTS5 tables are: SQLite calls
** its xBegin, then xSavepoint for every savepoint the transaction opens
** (statement savepoints included), xRelease and xRollbackTo, and xCommit or
** xRollback at the end. So the connection knows without a query whether the
** log row is still there (CtState.bLogLive), and the triggers of layout 4
** pass NULL instead of the probe (state.c, ctMaxCsnArg).
**
** Conservative by construction: the row is taken as written inside the
** innermost savepoint open at the time (iLogLevel), or inside one opened
** later, never an earlier one, so any rollback that may have removed it ends
** bLogLive; when unsure (the table could not be enlisted, a rollback to a
** savepoint opened after the write), the write path probes the log as
** before. No commit or rollback hook is used.
*/
#include "sqlite_ct.h"
#include <string.h>

typedef struct CtTxnVtab CtTxnVtab;
struct CtTxnVtab {
  sqlite3_vtab base;
  CtState *p;
};

static int ctTxnConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                        sqlite3_vtab **ppVtab, char **pzErr){
  CtTxnVtab *v;
  int rc;
  (void)argc; (void)argv; (void)pzErr;
  rc = sqlite3_declare_vtab(db, "CREATE TABLE x(v)");
  if( rc!=SQLITE_OK ) return rc;
  /* Written by the extension's own statements only, never from a trigger or
  ** view planted in a database file. */
  sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
  v = sqlite3_malloc(sizeof(*v));
  if( v==0 ) return SQLITE_NOMEM;
  memset(v, 0, sizeof(*v));
  v->p = (CtState*)pAux;
  *ppVtab = &v->base;
  return SQLITE_OK;
}

static int ctTxnDisconnect(sqlite3_vtab *pVtab){
  CtTxnVtab *v = (CtTxnVtab*)pVtab;
  v->p->bLogLive = 0;
  v->p->bTxnJoined = 0;
  sqlite3_free(v);
  return SQLITE_OK;
}

static int ctTxnBestIndex(sqlite3_vtab *pVtab, sqlite3_index_info *pInfo){
  (void)pVtab;
  pInfo->estimatedCost = 1.0;
  pInfo->estimatedRows = 0;
  return SQLITE_OK;
}

static int ctTxnOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCursor){
  sqlite3_vtab_cursor *c = sqlite3_malloc(sizeof(*c));
  (void)pVtab;
  if( c==0 ) return SQLITE_NOMEM;
  memset(c, 0, sizeof(*c));
  *ppCursor = c;
  return SQLITE_OK;
}

static int ctTxnClose(sqlite3_vtab_cursor *pCur){
  sqlite3_free(pCur);
  return SQLITE_OK;
}

/* It holds no rows. */
static int ctTxnFilter(sqlite3_vtab_cursor *pCur, int idxNum, const char *idxStr,
                       int argc, sqlite3_value **argv){
  (void)pCur; (void)idxNum; (void)idxStr; (void)argc; (void)argv;
  return SQLITE_OK;
}
static int ctTxnNext(sqlite3_vtab_cursor *pCur){ (void)pCur; return SQLITE_OK; }
static int ctTxnEof(sqlite3_vtab_cursor *pCur){ (void)pCur; return 1; }
static int ctTxnColumn(sqlite3_vtab_cursor *pCur, sqlite3_context *ctx, int i){
  (void)pCur; (void)ctx; (void)i;
  return SQLITE_OK;
}
static int ctTxnRowid(sqlite3_vtab_cursor *pCur, sqlite3_int64 *piRowid){
  (void)pCur;
  *piRowid = 0;
  return SQLITE_OK;
}

/* The insert that enlists the table; it stores nothing. */
static int ctTxnUpdate(sqlite3_vtab *pVtab, int argc, sqlite3_value **argv,
                       sqlite3_int64 *piRowid){
  (void)pVtab; (void)argc; (void)argv;
  *piRowid = 0;
  return SQLITE_OK;
}

/* Enlisted in a transaction; SQLite calls xSavepoint next when savepoints
** are open. */
static int ctTxnBegin(sqlite3_vtab *pVtab){
  CtState *p = ((CtTxnVtab*)pVtab)->p;
  p->bTxnJoined = 1;
  p->iSvpTop = -1;
  p->bLogLive = 0;
  return SQLITE_OK;
}

static int ctTxnSync(sqlite3_vtab *pVtab){ (void)pVtab; return SQLITE_OK; }

static int ctTxnEnd(sqlite3_vtab *pVtab){
  CtState *p = ((CtTxnVtab*)pVtab)->p;
  p->bTxnJoined = 0;
  p->bLogLive = 0;
  p->iSvpTop = -1;
  return SQLITE_OK;
}

static int ctTxnSavepoint(sqlite3_vtab *pVtab, int iSavepoint){
  ((CtTxnVtab*)pVtab)->p->iSvpTop = iSavepoint;
  return SQLITE_OK;
}

/* Savepoint i and the ones inside it are released: what they wrote now
** belongs to savepoint i-1. */
static int ctTxnRelease(sqlite3_vtab *pVtab, int iSavepoint){
  CtState *p = ((CtTxnVtab*)pVtab)->p;
  p->iSvpTop = iSavepoint-1;
  if( p->iLogLevel>iSavepoint-1 ) p->iLogLevel = iSavepoint-1;
  return SQLITE_OK;
}

/* Back to the start of savepoint i, which stays open: a log row written
** inside it (or inside one it holds) is gone. */
static int ctTxnRollbackTo(sqlite3_vtab *pVtab, int iSavepoint){
  CtState *p = ((CtTxnVtab*)pVtab)->p;
  p->iSvpTop = iSavepoint;
  if( p->iLogLevel>=iSavepoint ) p->bLogLive = 0;
  return SQLITE_OK;
}

/* Designated initializers, as in stmtcache.c: the members after xRowid differ
** between SQLite versions. iVersion 2: the savepoint methods are called. */
static const sqlite3_module ctTxnModule = {
  .iVersion = 2,
  .xConnect = ctTxnConnect,
  .xBestIndex = ctTxnBestIndex,
  .xDisconnect = ctTxnDisconnect,
  .xOpen = ctTxnOpen,
  .xClose = ctTxnClose,
  .xFilter = ctTxnFilter,
  .xNext = ctTxnNext,
  .xEof = ctTxnEof,
  .xColumn = ctTxnColumn,
  .xRowid = ctTxnRowid,
  .xUpdate = ctTxnUpdate,
  .xBegin = ctTxnBegin,
  .xSync = ctTxnSync,
  .xCommit = ctTxnEnd,
  .xRollback = ctTxnEnd,
  .xSavepoint = ctTxnSavepoint,
  .xRelease = ctTxnRelease,
  .xRollbackTo = ctTxnRollbackTo,
};

int ctTxnRegister(sqlite3 *db, CtState *p){
  ctStateRef(p);
  /* On failure SQLite calls the destructor itself. */
  return sqlite3_create_module_v2(db, "sqlite_ct_txn", &ctTxnModule, p, ctStateUnref);
}
