/*
** stmtcache.c -- prepared statements kept per connection, and the virtual
** table that finalizes them when the connection closes.
**
** WHY: the first tracked write of every transaction writes its
** __sysTxCommitSequence row from C, and the first tracked insert reads the
** newest log row from C (state.c). Preparing those statements each time cost
** about a tenth of an autocommit update's time (perf: the nested statements at
** 10.6% of the time inside sqlite3_step), so they are prepared once per
** connection and kept.
**
** THE CLOSE PROBLEM: sqlite3_close() refuses to close a connection that still
** has unfinalized statements (sqlite3_close_v2() turns it into a zombie that
** never goes away). SQLite's answer for extensions that keep statements is the
** virtual-table disconnect: sqlite3_close() disconnects every virtual table,
** eponymous ones included, *before* it checks for open statements, precisely so
** that their xDisconnect can finalize what they prepared. FTS5 and R-tree keep
** statements the same way. sqlite-ct registers an eponymous-only table,
** sqlite_ct_stmt_cache(slot, sql) (direct-only; its rows are the cached
** statements, for inspection), connects it before it caches its first
** statement, and finalizes the cache in its xDisconnect. Should a host
** have finalized every statement of the connection itself before closing, the
** cache holds dangling pointers: xDisconnect finalizes only statements the
** connection still lists (sqlite3_next_stmt), so nothing is freed twice.
**
** When the table cannot be connected, nothing is cached and the callers
** prepare their statement each time, as before.
*/
#include "sqlite_ct.h"
#include <string.h>

typedef struct CtCacheCursor CtCacheCursor;
struct CtCacheCursor {
  sqlite3_vtab_cursor base;
  CtState *p;
  int iSlot;                   /* current slot; CT_NSTMT at EOF */
};

/* Whether the connection still lists pStmt (not finalized behind our back);
** also for the statements sqlite_ct_changes keeps (changes.c). */
int ctStmtListed(sqlite3 *db, sqlite3_stmt *pStmt){
  sqlite3_stmt *s;
  for(s=sqlite3_next_stmt(db, 0); s; s=sqlite3_next_stmt(db, s)){
    if( s==pStmt ) return 1;
  }
  return 0;
}

static void ctStmtCacheClear(CtState *p){
  int i;
  for(i=0; i<CT_NSTMT; i++){
    if( p->apStmt[i] && ctStmtListed(p->db, p->apStmt[i]) ){
      sqlite3_finalize(p->apStmt[i]);
    }
    p->apStmt[i] = 0;
  }
  p->bDirtyKnown = 0;          /* its statement is gone (state.c) */
  for(i=0; i<CT_NFIX; i++) ctFixClear(p, i);
}

/* The xConnect of the extension's eponymous, direct-only tables over the
** connection's state (this one and sqlite_ct_txn, txn.c): declared as zDecl,
** usable from the extension's own statements only, never from a trigger or
** view planted in a database file. */
int ctStateVtabConnect(sqlite3 *db, void *pAux, const char *zDecl, sqlite3_vtab **ppVtab){
  CtStateVtab *v;
  int rc = sqlite3_declare_vtab(db, zDecl);
  if( rc!=SQLITE_OK ) return rc;
  sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
  v = sqlite3_malloc(sizeof(*v));
  if( v==0 ) return SQLITE_NOMEM;
  memset(v, 0, sizeof(*v));
  v->p = (CtState*)pAux;
  *ppVtab = &v->base;
  return SQLITE_OK;
}

static int ctCacheConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                          sqlite3_vtab **ppVtab, char **pzErr){
  int rc;
  (void)argc; (void)argv; (void)pzErr;
  rc = ctStateVtabConnect(db, pAux, "CREATE TABLE x(slot INTEGER, sql TEXT)", ppVtab);
  if( rc==SQLITE_OK ) ((CtState*)pAux)->bCacheConnected = 1;
  return rc;
}

/* The connection is closing (or the module is being replaced): finalize. */
static int ctCacheDisconnect(sqlite3_vtab *pVtab){
  CtStateVtab *v = (CtStateVtab*)pVtab;
  ctStmtCacheClear(v->p);
  v->p->bCacheConnected = 0;
  sqlite3_free(v);
  return SQLITE_OK;
}

static int ctCacheBestIndex(sqlite3_vtab *pVtab, sqlite3_index_info *pInfo){
  (void)pVtab;
  pInfo->estimatedCost = 1.0;
  pInfo->estimatedRows = 0;
  return SQLITE_OK;
}

static int ctCacheOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCursor){
  CtCacheCursor *c = sqlite3_malloc(sizeof(*c));
  if( c==0 ) return SQLITE_NOMEM;
  memset(c, 0, sizeof(*c));
  c->p = ((CtStateVtab*)pVtab)->p;
  *ppCursor = &c->base;
  return SQLITE_OK;
}

static int ctCacheClose(sqlite3_vtab_cursor *pCur){
  sqlite3_free(pCur);
  return SQLITE_OK;
}

/* Rows: the slots that hold a statement, with its SQL (for inspection):
** 0 to CT_NSTMT-1 the write path's own statements, then the statements of the
** fixes kept per table (state.c, ctRunFix), CT_FIX_NSTMT slots per fix. */
#define CT_CACHE_NSLOT (CT_NSTMT + CT_NFIX*CT_FIX_NSTMT)

static sqlite3_stmt *ctCacheStmtAt(CtState *p, int iSlot){
  int i, j;
  if( iSlot<CT_NSTMT ) return p->apStmt[iSlot];
  i = (iSlot-CT_NSTMT) / CT_FIX_NSTMT;
  j = (iSlot-CT_NSTMT) % CT_FIX_NSTMT;
  return j<p->aFix[i].nStmt ? p->aFix[i].apStmt[j] : 0;
}

static void ctCacheSkipEmpty(CtCacheCursor *c){
  while( c->iSlot<CT_CACHE_NSLOT && ctCacheStmtAt(c->p, c->iSlot)==0 ) c->iSlot++;
}

static int ctCacheFilter(sqlite3_vtab_cursor *pCur, int idxNum, const char *idxStr,
                         int argc, sqlite3_value **argv){
  CtCacheCursor *c = (CtCacheCursor*)pCur;
  (void)idxNum; (void)idxStr; (void)argc; (void)argv;
  c->iSlot = 0;
  ctCacheSkipEmpty(c);
  return SQLITE_OK;
}

static int ctCacheNext(sqlite3_vtab_cursor *pCur){
  CtCacheCursor *c = (CtCacheCursor*)pCur;
  c->iSlot++;
  ctCacheSkipEmpty(c);
  return SQLITE_OK;
}

static int ctCacheEof(sqlite3_vtab_cursor *pCur){
  return ((CtCacheCursor*)pCur)->iSlot>=CT_CACHE_NSLOT;
}

static int ctCacheColumn(sqlite3_vtab_cursor *pCur, sqlite3_context *ctx, int i){
  CtCacheCursor *c = (CtCacheCursor*)pCur;
  if( i==0 ){
    sqlite3_result_int(ctx, c->iSlot);
  }else{
    sqlite3_result_text(ctx, sqlite3_sql(ctCacheStmtAt(c->p, c->iSlot)), -1, SQLITE_TRANSIENT);
  }
  return SQLITE_OK;
}

static int ctCacheRowid(sqlite3_vtab_cursor *pCur, sqlite3_int64 *piRowid){
  *piRowid = ((CtCacheCursor*)pCur)->iSlot;
  return SQLITE_OK;
}

/* Designated initializers: the members after xRowid differ between SQLite
** versions' headers, and are all zero here (eponymous-only: no xCreate). */
static const sqlite3_module ctCacheModule = {
  .iVersion = 0,
  .xConnect = ctCacheConnect,
  .xBestIndex = ctCacheBestIndex,
  .xDisconnect = ctCacheDisconnect,
  .xOpen = ctCacheOpen,
  .xClose = ctCacheClose,
  .xFilter = ctCacheFilter,
  .xNext = ctCacheNext,
  .xEof = ctCacheEof,
  .xColumn = ctCacheColumn,
  .xRowid = ctCacheRowid,
};

int ctStmtCacheRegister(sqlite3 *db, CtState *p){
  ctStateRef(p);
  /* On failure SQLite calls the destructor itself. */
  return sqlite3_create_module_v2(db, "sqlite_ct_stmt_cache", &ctCacheModule, p,
                                  ctStateUnref);
}

/*
** A statement for zSql, ready to bind, in *ppStmt: the one cached in slot
** iSlot, prepared there on first use; or, when it cannot be cached (the cache
** table cannot be connected) or is in use further up the stack (a user
** trigger on a log table re-entering), a fresh one that *pbOwned says the
** caller owns. Hand it back with ctStmtRelease().
*/
int ctCachedStmt(CtState *p, int iSlot, const char *zSql, sqlite3_stmt **ppStmt,
                 int *pbOwned){
  sqlite3_stmt *pStmt = p->apStmt[iSlot];
  int rc;
  *ppStmt = 0;
  *pbOwned = 0;
  if( pStmt && !sqlite3_stmt_busy(pStmt) ){
    *ppStmt = pStmt;
    return SQLITE_OK;
  }
  if( pStmt==0 && !p->bCacheConnected && !p->bNoCache ){
    sqlite3_stmt *pConnect = 0;
    sqlite3_prepare_v2(p->db, "SELECT 1 FROM main.sqlite_ct_stmt_cache", -1, &pConnect, 0);
    sqlite3_finalize(pConnect);   /* connected, or the statement stays uncached */
  }
  if( pStmt==0 && p->bCacheConnected && !p->bNoCache ){
    rc = sqlite3_prepare_v3(p->db, zSql, -1, SQLITE_PREPARE_PERSISTENT, &pStmt, 0);
    if( rc==SQLITE_OK ) p->apStmt[iSlot] = pStmt;
  }else{
    rc = sqlite3_prepare_v2(p->db, zSql, -1, &pStmt, 0);
    *pbOwned = 1;
  }
  if( rc!=SQLITE_OK ){
    sqlite3_finalize(pStmt);
    *pbOwned = 0;
    return rc;
  }
  *ppStmt = pStmt;
  return SQLITE_OK;
}

/* Reset (cached) or finalize (owned) a statement from ctCachedStmt(); the
** error of its last step, if any. */
int ctStmtRelease(sqlite3_stmt *pStmt, int bOwned){
  return bOwned ? sqlite3_finalize(pStmt) : sqlite3_reset(pStmt);
}

/* Finalize and forget the fix kept in slot i (state.c, ctRunFix). */
void ctFixClear(CtState *p, int i){
  int j;
  for(j=0; j<p->aFix[i].nStmt; j++){
    if( ctStmtListed(p->db, p->aFix[i].apStmt[j]) ) sqlite3_finalize(p->aFix[i].apStmt[j]);
  }
  sqlite3_free(p->aFix[i].zTab);
  memset(&p->aFix[i], 0, sizeof(p->aFix[i]));
}
