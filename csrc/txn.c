/*
** txn.c -- the end of the write transaction, told by SQLite itself: the
** eponymous virtual table sqlite_ct_txn (layout 7).
**
** The first tracked write of a transaction hands out its BSN and writes its
** __sysTxCommitSequence row (state.c, ctBeginLogged). A ROLLBACK TO a
** savepoint opened before that write, or the failure of the statement that
** made it, takes the log row back with the rows it numbered; the next write
** gets the same number again. Layouts 1 to 6 found out by probing the log's
** newest row on every row (a b-tree seek in every trigger's WHEN).
**
** Layout 7's triggers do not probe. The first tracked write of a transaction
** (the one that writes its log row) also inserts a row into sqlite_ct_txn,
** which stores nothing: that enlists the table in the transaction, as FTS5
** tables are, and SQLite then calls
**   xRollbackTo  after every ROLLBACK TO and every failed statement's
**                rollback (statement savepoints included), once the pager
**                has rolled back: the log row may be gone (bTxnSuspect), so
**                the next write probes the log from C and writes it again;
**   xSync        when the transaction commits, inside it, before SQLite
**                writes anything: after such a rollback, the log row is
**                written again if it is missing while a row or tombstone
**                carries the BSN (ctEnsureLog);
**   xCommit / xRollback  at the end: the BSN is forgotten, so the next
**                transaction probes for its own (after a rollback, the log
**                row is written back first if another virtual table's
**                xRollback, called first, wrote a tracked table). A BSN is
**                never carried from one transaction to the next on the
**                strength of the pager's data version alone, which a
**                database image deserialized into the connection resets.
** While the table is enlisted, its xSync has not run and no rollback is
** pending, the write path trusts the cached BSN without a probe (state.c,
** ctMaxCsnArg). Everything else probes from C as the triggers did in SQL: a
** transaction's first tracked write, one the table could not join (SQLite
** refuses to enlist a virtual table while another one's xSync runs), and the
** writes SQLite lets other virtual tables make while COMMIT runs.
**
** Three orders SQLite does not let this table choose, and why they are safe:
** (1) Another virtual table that joined first has its xRollbackTo called
** first, and may write a tracked table before this one hears of the rollback
** (a trusted write while the log row is gone): the rollback then makes this
** table's xSync probe, and it writes the row back. (2) Another virtual
** table's xSync runs after this one's: its writes probe (bTxnSynced). (3) It
** runs before this one's, and SQLite hides the transaction's virtual tables
** from the statements it runs, so a rollback there (a failed statement, even
** ROLLBACK TO) tells nobody: an explicit transaction reports autocommit mode
** while COMMIT runs, so its writes there probe too (bTxnExplicit); an
** autocommit statement's transaction has no savepoint older than its log row
** to roll back to. The one sequence left is pathological: in (1), the other
** table also opens a savepoint after its write, and a third one rolls that
** savepoint back from an xSync that runs after this one's (the log row,
** written back inside the savepoint, goes again while the earlier write
** stays). docs/architecture.md and README.md say so.
**
** No commit or rollback hook is used, so there is no hook slot to be displaced
** from (the application's and the session extension's hooks keep working).
*/
#include "sqlite_ct.h"
#include <string.h>

static int ctTxnConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                        sqlite3_vtab **ppVtab, char **pzErr){
  (void)argc; (void)argv; (void)pzErr;
  return ctStateVtabConnect(db, pAux, "CREATE TABLE x(v)", ppVtab);
}

/* Disconnected (the connection closes, or the module is registered again
** when the extension is loaded twice): the write path probes from now on. */
static int ctTxnDisconnect(sqlite3_vtab *pVtab){
  CtStateVtab *v = (CtStateVtab*)pVtab;
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

/* Enlisted: the log row was written just before (state.c, ctWriteLog) or
** probed and found. */
static int ctTxnBegin(sqlite3_vtab *pVtab){
  CtState *p = ((CtStateVtab*)pVtab)->p;
  p->bTxnJoined = 1;
  p->bTxnSynced = 0;
  p->bTxnSuspect = 0;
  p->bLogPending = 0;
  p->bTxnExplicit = !sqlite3_get_autocommit(p->db);
  return SQLITE_OK;
}

/* The transaction commits: its log row must be there (written back after a
** rollback that may have taken it). From now on every write probes (another
** virtual table's xSync may still write). An error fails the commit, and
** SQLite rolls the transaction back. */
static int ctTxnSync(sqlite3_vtab *pVtab){
  CtState *p = ((CtStateVtab*)pVtab)->p;
  char *zErr = 0;
  int rc, bLogged;
  p->bTxnSynced = 1;
  p->iSyncBsn = p->iBsn;
  rc = ctEnsureLog(p, 1, &bLogged, &zErr);
  if( rc!=SQLITE_OK ){
    sqlite3_free(pVtab->zErrMsg);
    pVtab->zErrMsg = zErr;
  }else{
    sqlite3_free(zErr);
  }
  return rc;
}

static void ctTxnForget(CtState *p){
  p->bTxnJoined = 0;
  p->bTxnSynced = 0;
  p->bTxnSuspect = 0;
  p->bLogPending = 0;
}

/* Committed: the BSN is spent, and the next transaction probes for its own.
** Unless a write made after this table's xSync (from another virtual table's
** xSync or xCommit, called after it) was handed the next number: SQLite keeps
** such a write in a transaction that commits later, which holds that BSN and
** its log row. */
static int ctTxnCommit(sqlite3_vtab *pVtab){
  CtState *p = ((CtStateVtab*)pVtab)->p;
  if( p->iBsn==p->iSyncBsn ) p->iBsn = 0;
  ctTxnForget(p);
  return SQLITE_OK;
}

/* The transaction rolled back (or the connection closes with it open: then
** SQLite calls this before it rolls back). Another virtual table that joined
** first had its xRollback called first, and may have written a tracked table
** there, trusting the BSN whose log row the rollback took: SQLite keeps such
** a write in a transaction of its own, which commits later. The log row is
** written back into it when a row or tombstone carries the BSN (ctEnsureLog),
** as xSync would. SQLite ignores what this returns. */
static int ctTxnRollback(sqlite3_vtab *pVtab){
  CtState *p = ((CtStateVtab*)pVtab)->p;
  char *zErr = 0;
  int bLogged = 0;
  p->bTxnSynced = 1;         /* what runs from here on probes */
  /* Only when the main database is in a write transaction now: such a
  ** write, or a connection closing with its transaction open (SQLite calls
  ** this before it rolls back). Otherwise a statement run here would leave
  ** a read transaction open, which SQLite does not end while it calls
  ** xRollback, and the application's next statement would read that
  ** snapshot. */
  if( sqlite3_txn_state(p->db, "main")==SQLITE_TXN_WRITE ){
    /* Statements prepared here are finalized here: when the connection
    ** closes, SQLite has already disconnected sqlite_ct_stmt_cache (and
    ** finalized what it kept), and a statement kept now would leave
    ** sqlite3_close_v2() a zombie holding the file and its locks. */
    p->bNoCache = 1;
    ctEnsureLog(p, 0, &bLogged, &zErr);
    p->bNoCache = 0;
    sqlite3_free(zErr);
  }
  /* The BSN stays only for such a write's transaction, whose log row is
  ** there now. */
  if( !bLogged ) p->iBsn = 0;
  ctTxnForget(p);
  return SQLITE_OK;
}

/* Nothing to do, but it must exist: SQLite records the savepoint level a
** table joined at only for a module with xSavepoint, and calls xRollbackTo
** only for rollbacks below that level (sqlite3VtabBegin). Without it, a
** failed statement that enlisted this table would roll the log row back
** untold. (No xRelease: SQLite skips a module without one.) */
static int ctTxnSavepoint(sqlite3_vtab *pVtab, int iSavepoint){
  (void)pVtab; (void)iSavepoint;
  return SQLITE_OK;
}

/* A savepoint or a failed statement rolled back: the log row may have gone
** with it. Nothing is written here (SQLite calls this from inside the
** rollback of a failed statement); the next write, or xSync, probes. */
static int ctTxnRollbackTo(sqlite3_vtab *pVtab, int iSavepoint){
  (void)iSavepoint;
  ((CtStateVtab*)pVtab)->p->bTxnSuspect = 1;
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
  .xCommit = ctTxnCommit,
  .xRollback = ctTxnRollback,
  .xSavepoint = ctTxnSavepoint,
  .xRollbackTo = ctTxnRollbackTo,
};

int ctTxnRegister(sqlite3 *db, CtState *p){
  ctStateRef(p);
  /* On failure SQLite calls the destructor itself. */
  return sqlite3_create_module_v2(db, "sqlite_ct_txn", &ctTxnModule, p, ctStateUnref);
}
