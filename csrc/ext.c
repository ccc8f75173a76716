/*
** ext.c -- entry point and the registration table of sqlite-ct.
**
** sqlite-ct gives SQLite the change tracking SQL Server Compact had in its
** engine: tracked tables carry __sysChangeTxBsn, __sysInsertTxBsn and
** __sysTrackingContext, deletes leave tombstones in __sysOCSDeletedRows, every
** write transaction that touches tracked data is logged in
** __sysTxCommitSequence, and sync anchors live in __sysSyncArticles and
** __sysSyncSubscriptions. docs/sql-reference.md documents every function below;
** docs/architecture.md explains how the pieces fit.
**
** LOADING: the shared library exports exactly one symbol, the entry point
** sqlite3_sqlitect_init, which is also the name SQLite derives from the file
** name "sqlitect.so", so ".load /path/to/sqlitect" needs no entry point.
**
** FLAGS: every function is UTF8. Functions that triggers call (begin, bsn,
** context, now, pack_key, unpack_key, ...) are SQLITE_INNOCUOUS so that they
** keep working under PRAGMA trusted_schema=OFF, where SQLite refuses
** non-innocuous functions inside triggers. That flag is a promise that a
** hostile schema gains nothing by calling them: they only read or hand out
** numbers from this connection's tracking state (the one write a trigger makes
** with them goes to sqlite-ct's own log tables, which a hostile trigger could
** write directly anyway). Functions that change the schema or the connection's
** settings (create_schema, disable_tracking, rename_tracking,
** create_system_tables, set_tracking_context, set_apply_mode) are SQLITE_DIRECTONLY: they run only from top-level SQL, never
** from a trigger or view planted in a database file. Nothing is
** SQLITE_DETERMINISTIC except the key codec and sqlite_ct_guard (a partial
** index's WHERE calls it; see state.c); the BSN and clock functions must
** be evaluated per row.
*/
#include "sqlite_ct.h"
#include <string.h>

SQLITE_EXTENSION_INIT1

static void ctFuncVersion(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  (void)argc; (void)argv;
  sqlite3_result_text(ctx, SQLITE_CT_VERSION, -1, SQLITE_STATIC);
}

static void ctFuncDebug(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  char *z;
  (void)argc; (void)argv;
  z = sqlite3_mprintf(
      "version=%s\nlayout=%d\nsqlite_lib=%s\nsqlite_headers=%s\ncompiler=%s",
      SQLITE_CT_VERSION, CT_LAYOUT_VERSION, sqlite3_libversion(),
      SQLITE_VERSION,
#ifdef __VERSION__
      __VERSION__
#else
      "unknown"
#endif
  );
  if( z==0 ){ sqlite3_result_error_nomem(ctx); return; }
  sqlite3_result_text(ctx, z, -1, sqlite3_free);
}

#define CT_INNOCUOUS  (SQLITE_UTF8|SQLITE_INNOCUOUS)
#define CT_DIRECT     (SQLITE_UTF8|SQLITE_DIRECTONLY)
#define CT_PURE       (SQLITE_UTF8|SQLITE_INNOCUOUS|SQLITE_DETERMINISTIC)

/* The whole SQL surface, one line each. bState: the function gets the
** per-connection CtState as its user data. */
static const struct CtFuncDef {
  const char *zName;
  int nArg;
  int eFlags;
  int bState;
  void (*xFunc)(sqlite3_context*, int, sqlite3_value**);
} aCtFunc[] = {
  /* name                           nArg flags         state  implementation */
  { "sqlite_ct_version",              0, CT_INNOCUOUS, 0, ctFuncVersion },
  { "sqlite_ct_debug",                0, CT_INNOCUOUS, 0, ctFuncDebug },
  { "sqlite_ct_layout_version",       0, CT_INNOCUOUS, 0, ctFuncLayoutVersion },
  { "sqlite_ct_check_layout",         0, CT_INNOCUOUS, 0, ctFuncCheckLayout },
  { "sqlite_ct_create_system_tables", 0, CT_DIRECT,    1, ctFuncCreateSystemTables },
  { "sqlite_ct_create_schema",        1, CT_DIRECT,    1, ctFuncCreateSchema },
  { "sqlite_ct_create_schema",        2, CT_DIRECT,    1, ctFuncCreateSchema },
  { "sqlite_ct_create_schema",        3, CT_DIRECT,    1, ctFuncCreateSchema },
  { "sqlite_ct_disable_tracking",     1, CT_DIRECT,    1, ctFuncDisableTracking },
  { "sqlite_ct_is_tracked",           1, CT_INNOCUOUS, 0, ctFuncIsTracked },
  { "sqlite_ct_local_change",        -1, CT_INNOCUOUS, 0, ctLocalChangeFunc },
  { "sqlite_ct_rename_tracking",      2, CT_DIRECT,    1, ctFuncRenameTracking },
  { "sqlite_ct_begin",                1, CT_INNOCUOUS, 1, ctFuncBegin },
  { "sqlite_ct_take_log",             0, CT_INNOCUOUS, 1, ctFuncTakeLog },
  { "sqlite_ct_bsn",                  0, CT_INNOCUOUS, 1, ctFuncBsn },
  { "sqlite_ct_needs_stamp",          8, CT_INNOCUOUS, 1, ctFuncNeedsStamp },
  { "sqlite_ct_write_bsn",            2, CT_INNOCUOUS, 1, ctFuncWriteBsn },
  { "sqlite_ct_insert_when",          8, CT_INNOCUOUS, 1, ctFuncInsertWhen },
  { "sqlite_ct_insert_when",         10, CT_INNOCUOUS, 1, ctFuncInsertWhen },
  { "sqlite_ct_update_when",         11, CT_INNOCUOUS, 1, ctFuncUpdateWhen },
  { "sqlite_ct_update_when",         13, CT_INNOCUOUS, 1, ctFuncUpdateWhen },
  /* any other argument count: triggers of a newer layout (LayoutError) */
  /* layout 4 (variadic: NEW's key follows), or a newer layout's triggers */
  { "sqlite_ct_insert_when",         -1, CT_INNOCUOUS, 1, ctFuncInsertWhenAny },
  { "sqlite_ct_update_when",         -1, CT_INNOCUOUS, 1, ctFuncUpdateWhenAny },
  { "sqlite_ct_write_bsn",           -1, CT_INNOCUOUS, 0, ctFuncNewerLayout },
  { "sqlite_ct_default_bsn",          0, CT_INNOCUOUS, 1, ctFuncDefaultBsn },
  { "sqlite_ct_victim",               2, CT_INNOCUOUS, 1, ctFuncVictim },
  { "sqlite_ct_stamp_end",            1, CT_INNOCUOUS, 1, ctFuncStampEnd },
  { "sqlite_ct_stamp_check",          2, CT_INNOCUOUS, 1, ctFuncStampCheck },
  { "sqlite_ct_current_bsn",          0, CT_INNOCUOUS, 1, ctFuncCurrentBsn },
  { "sqlite_ct_uncommitted_writes",   0, CT_INNOCUOUS, 1, ctFuncUncommittedWrites },
  { "sqlite_ct_last_committed_csn",   0, CT_INNOCUOUS, 1, ctFuncLastCommittedCsn },
  { "sqlite_ct_snapshot",             0, CT_INNOCUOUS, 1, ctFuncSnapshot },
  { "sqlite_ct_schema_token",         0, CT_INNOCUOUS, 1, ctFuncSchemaToken },
  { "sqlite_ct_changes_sql",          2, CT_INNOCUOUS, 0, ctFuncChangesSql },
  { "sqlite_ct_tombstone_key_match",  1, CT_INNOCUOUS, 0, ctFuncTombstoneKeyMatch },
  { "sqlite_ct_tracking_context",     0, CT_INNOCUOUS, 1, ctFuncContext },
  { "sqlite_ct_set_tracking_context", 1, CT_DIRECT,    1, ctFuncSetContext },
  { "sqlite_ct_apply_mode",           0, CT_INNOCUOUS, 1, ctFuncApplyMode },
  { "sqlite_ct_set_apply_mode",       1, CT_DIRECT,    1, ctFuncSetApplyMode },
  { "sqlite_ct_now",                  0, CT_INNOCUOUS, 0, ctFuncNow },
  { "sqlite_ct_guard",               -1, CT_PURE,      0, ctFuncGuard },
  { "sqlite_ct_capture",             -1, CT_PURE,      1, ctFuncCapture },
  { "sqlite_ct_delete_when",         -1, CT_INNOCUOUS, 1, ctFuncDeleteWhen },
  { "sqlite_ct_rekey_when",           4, CT_INNOCUOUS, 1, ctFuncRekeyWhen },
  { "sqlite_ct_rekey_when",          -1, CT_INNOCUOUS, 1, ctFuncRekeyWhen },   /* layout 6 */
  { "sqlite_ct_pack_key",            -1, CT_PURE,      0, ctFuncPackKey },
  { "sqlite_ct_unpack_key",           2, CT_PURE,      0, ctFuncUnpackKey },
  { "sqlite_ct_key_count",            1, CT_PURE,      0, ctFuncKeyCount },
};

#ifdef _WIN32
__declspec(dllexport)
#else
__attribute__((visibility("default")))
#endif
int sqlite3_sqlitect_init(sqlite3 *db, char **pzErrMsg,
                          const sqlite3_api_routines *pApi){
  int rc = SQLITE_OK;
  size_t i;
  CtState *pState;
  SQLITE_EXTENSION_INIT2(pApi);

  if( sqlite3_libversion_number()<3037000 ){
    /* pragma_table_list (3.37) for WITHOUT ROWID detection; DROP COLUMN (3.35). */
    if( pzErrMsg ){
      *pzErrMsg = sqlite3_mprintf(
          "sqlite-ct needs SQLite 3.37.0 or newer; this host runs %s",
          sqlite3_libversion());
    }
    return SQLITE_ERROR;
  }
#ifdef SQLITE_CT_FAULT_INJECT
  rc = ctFaultRegister(db);   /* test builds only: fault.c */
  if( rc!=SQLITE_OK ) return rc;
#endif
  pState = ctStateNew(db);
  if( pState==0 ) return SQLITE_NOMEM;
  for(i=0; i<sizeof(aCtFunc)/sizeof(aCtFunc[0]) && rc==SQLITE_OK; i++){
    const struct CtFuncDef *p = &aCtFunc[i];
    if( p->bState ){
      ctStateRef(pState);
      rc = sqlite3_create_function_v2(db, p->zName, p->nArg, p->eFlags,
                                      pState, p->xFunc, 0, 0, ctStateUnref);
      /* On failure SQLite has already called the destructor. */
    }else{
      rc = sqlite3_create_function_v2(db, p->zName, p->nArg, p->eFlags,
                                      0, p->xFunc, 0, 0, 0);
    }
  }
  if( rc==SQLITE_OK ) rc = ctStmtCacheRegister(db, pState);
  if( rc==SQLITE_OK ) rc = ctTxnRegister(db, pState);
  if( rc==SQLITE_OK ) rc = ctChangesRegister(db, pState);
  ctStateUnref(pState);  /* drop the reference ctStateNew() returned */
  if( rc!=SQLITE_OK && pzErrMsg ){
    *pzErrMsg = sqlite3_mprintf("sqlite-ct: registering SQL functions failed: %s",
                                sqlite3_errmsg(db));
  }
  return rc;
}
