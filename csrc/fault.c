/*
** fault.c -- allocation fault injection, compiled only with
** -DSQLITE_CT_FAULT_INJECT (tests/test_nomem.py builds such a library; the
** normal build has none of this).
**
** sqlite_ct.h routes every allocation the extension makes itself
** (sqlite3_malloc, _malloc64, _realloc64, _mprintf, _vmprintf, and
** sqlite3_str_finish of a non-empty builder, where an sqlite3_str builder's
** allocations surface) to
** the wrappers below. sqlite_ct_fault_inject(N) returns how many allocations
** were made since its previous call, restarts the count, and makes the Nth
** allocation from now fail (once; 0: none), the way SQLite's allocator fails
** when out of memory: NULL, the original block kept by a failed realloc, a
** builder's text lost, SQLITE_NOMEM from a bind that copies (ctBindText(),
** ctBindValue(): the binds whose result their caller checks). The counter is process-wide: a test uses one
** connection at a time.
*/
#include "sqlite_ct.h"

#ifdef SQLITE_CT_FAULT_INJECT

static sqlite3_int64 nCtFaultCount = 0;
static sqlite3_int64 iCtFaultAt = 0;

static int ctFaultNow(void){
  nCtFaultCount++;
  return iCtFaultAt>0 && nCtFaultCount==iCtFaultAt;
}

void *ctFaultMalloc(int n){
  return ctFaultNow() ? 0 : sqlite3_api->malloc(n);
}

void *ctFaultMalloc64(sqlite3_uint64 n){
  return ctFaultNow() ? 0 : sqlite3_api->malloc64(n);
}

void *ctFaultRealloc64(void *p, sqlite3_uint64 n){
  return ctFaultNow() ? 0 : sqlite3_api->realloc64(p, n);
}

char *ctFaultVmprintf(const char *zFmt, va_list ap){
  return ctFaultNow() ? 0 : sqlite3_api->vmprintf(zFmt, ap);
}

char *ctFaultMprintf(const char *zFmt, ...){
  va_list ap;
  char *z;
  va_start(ap, zFmt);
  z = ctFaultVmprintf(zFmt, ap);
  va_end(ap);
  return z;
}

char *ctFaultStrFinish(sqlite3_str *s){
  char *z = sqlite3_api->str_finish(s);
  if( z==0 ) return 0;   /* nothing appended (or a real failure): no allocation */
  if( ctFaultNow() ){
    sqlite3_api->free(z);
    return 0;
  }
  return z;
}

/* A bind that copies a TEXT or BLOB allocates (SQLite's allocator, which
** the wrappers above do not reach): counted, and failed as SQLite fails it,
** SQLITE_NOMEM with the parameter left NULL. Only a parameter the statement
** has: for any other SQLite says SQLITE_RANGE before it allocates. */
static int ctFaultBindFails(sqlite3_stmt *pStmt, int i){
  if( i<1 || i>sqlite3_api->bind_parameter_count(pStmt) || !ctFaultNow() ) return 0;
  sqlite3_api->bind_null(pStmt, i);
  return 1;
}

int ctFaultBindText(sqlite3_stmt *pStmt, int i, const char *z, int n, void (*xDel)(void*)){
  if( z && xDel==SQLITE_TRANSIENT && ctFaultBindFails(pStmt, i) ) return SQLITE_NOMEM;
  return sqlite3_api->bind_text(pStmt, i, z, n, xDel);
}

int ctFaultBindValue(sqlite3_stmt *pStmt, int i, const sqlite3_value *pVal){
  int eType = sqlite3_api->value_type((sqlite3_value*)pVal);
  if( (eType==SQLITE_TEXT || eType==SQLITE_BLOB) && ctFaultBindFails(pStmt, i) ){
    return SQLITE_NOMEM;
  }
  return sqlite3_api->bind_value(pStmt, i, pVal);
}

static void ctFuncFaultInject(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  (void)argc;
  sqlite3_result_int64(ctx, nCtFaultCount);
  nCtFaultCount = 0;
  iCtFaultAt = sqlite3_value_int64(argv[0]);
}

/* Registered by ext.c's entry point, outside the table of the SQL surface. */
int ctFaultRegister(sqlite3 *db){
  return sqlite3_create_function_v2(db, "sqlite_ct_fault_inject", 1,
                                    SQLITE_UTF8|SQLITE_DIRECTONLY, 0,
                                    ctFuncFaultInject, 0, 0, 0);
}

#else
typedef int ctFaultInjectionNotBuilt;  /* ISO C wants a non-empty translation unit */
#endif
