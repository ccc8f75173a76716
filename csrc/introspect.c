/*
** introspect.c -- what a table looks like, read from SQLite's own pragmas.
**
** ctTableLoad() fills a CtTable for a table of the main schema: its columns
** (PRAGMA table_xinfo), its primary key in key order, whether it is WITHOUT
** ROWID (PRAGMA table_list), whether the key is the rowid itself, and the
** UNIQUE indexes other than the primary key (PRAGMA index_list/index_xinfo),
** which the triggers need to see rows that INSERT OR REPLACE removes.
**
** It refuses, with a message that says what to do, every table sqlite-ct
** cannot track honestly: missing tables, views, virtual tables, sqlite-ct's own
** __sys* tables, tables without a PRIMARY KEY (their implicit rowids change on
** VACUUM). A UNIQUE index on an expression is noted (zExprUnique): portable
** mode refuses such a table (a REPLACE through it would delete rows its
** triggers cannot find); native mode's capture sees them.
*/
#include "sqlite_ct.h"
#include <string.h>

int ctIsSystemName(const char *zName){
  return sqlite3_strnicmp(zName, "__sys", 5)==0
      || sqlite3_strnicmp(zName, "sqlite_", 7)==0;
}

void ctTableFree(CtTable *p){
  int i;
  if( p==0 ) return;
  for(i=0; i<p->nCol; i++) sqlite3_free(p->aCol[i].zName);
  for(i=0; i<p->nUnique; i++){
    int j;
    for(j=0; j<p->aUnique[i].nCol; j++) sqlite3_free(p->aUnique[i].azColl[j]);
    sqlite3_free(p->aUnique[i].zName);
    sqlite3_free(p->aUnique[i].azColl);
    sqlite3_free(p->aUnique[i].aiCol);
  }
  for(i=0; i<p->nIndex; i++) sqlite3_free(p->azIndex[i]);
  sqlite3_free(p->azIndex);
  sqlite3_free(p->zExprUnique);
  sqlite3_free(p->aCol);
  sqlite3_free(p->aiPk);
  sqlite3_free(p->aUnique);
  sqlite3_free(p->zName);
  sqlite3_free(p);
}

/* Whether column iCol belongs to the key or to a UNIQUE index: the columns
** whose change can make an OR REPLACE delete another row. */
int ctColumnIsWatched(const CtTable *p, int iCol){
  int j, k;
  if( p->aCol[iCol].iPk ) return 1;
  for(j=0; j<p->nUnique; j++){
    for(k=0; k<p->aUnique[j].nCol; k++){
      if( p->aUnique[j].aiCol[k]==iCol ) return 1;
    }
  }
  return 0;
}

/* Whether a key column of p can hold NULL: SQLite allows NULL in the PRIMARY
** KEY of a rowid table (other than an INTEGER PRIMARY KEY) unless the column
** is declared NOT NULL. Only composite keys count here: a replica matches
** them with ON CONFLICT(a, b), which NULL never matches. */
int ctKeyAcceptsNull(const CtTable *p){
  int i;
  if( p->bWithoutRowid || p->bRowidAlias || p->nPk<2 ) return 0;
  for(i=0; i<p->nPk; i++){
    if( !p->aCol[p->aiPk[i]].bNotNull ) return 1;
  }
  return 0;
}

int ctTableHasColumn(const CtTable *p, const char *zCol){
  int i;
  for(i=0; i<p->nCol; i++){
    if( sqlite3_stricmp(p->aCol[i].zName, zCol)==0 ) return 1;
  }
  return 0;
}

static int ctPrepare(sqlite3 *db, sqlite3_stmt **pp, char **pzErr,
                     const char *zFmt, const char *zArg){
  char *zSql = sqlite3_mprintf(zFmt, zArg);
  int rc;
  *pp = 0;   /* callers finalize *pp when set: never a stale handle */
  if( zSql==0 ) return SQLITE_NOMEM;
  rc = sqlite3_prepare_v2(db, zSql, -1, pp, 0);
  sqlite3_free(zSql);
  if( rc!=SQLITE_OK && *pzErr==0 ) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  return rc;
}

/* Read the UNIQUE indexes (other than the PRIMARY KEY) of p. */
static int ctLoadUniques(sqlite3 *db, CtTable *p, char **pzErr){
  sqlite3_stmt *pList = 0;
  int rc = ctPrepare(db, &pList, pzErr,
      "SELECT name, origin FROM pragma_index_list(%Q, 'main') WHERE \"unique\"", p->zName);
  while( rc==SQLITE_OK && sqlite3_step(pList)==SQLITE_ROW ){
    const char *zIdx = (const char*)sqlite3_column_text(pList, 0);
    const char *zOrigin = (const char*)sqlite3_column_text(pList, 1);
    sqlite3_stmt *pInfo = 0;
    CtUnique *aNew;
    CtUnique *pU;
    int bExpr = 0;
    if( zIdx==0 || zOrigin==0 ){ rc = SQLITE_NOMEM; break; }
    if( strcmp(zOrigin, "pk")==0 ) continue;
    aNew = sqlite3_realloc64(p->aUnique, sizeof(CtUnique)*(p->nUnique+1));
    if( aNew==0 ){ rc = SQLITE_NOMEM; break; }
    p->aUnique = aNew;
    pU = &p->aUnique[p->nUnique++];
    memset(pU, 0, sizeof(*pU));
    pU->zName = sqlite3_mprintf("%s", zIdx);
    if( pU->zName==0 ){ rc = SQLITE_NOMEM; break; }
    rc = ctPrepare(db, &pInfo, pzErr,
        "SELECT cid, coll FROM pragma_index_xinfo(%Q, 'main') WHERE key ORDER BY seqno", zIdx);
    while( rc==SQLITE_OK && sqlite3_step(pInfo)==SQLITE_ROW ){
      int cid = sqlite3_column_int(pInfo, 0);
      int *aiNew;
      char **azNew;
      if( cid<0 ){
        /* An expression: only the capture of native mode sees the rows an
        ** OR REPLACE deletes through it; portable mode refuses the table
        ** (schema.c, ctCreateSchema). Not listed among the UNIQUE indexes. */
        bExpr = 1;
        break;
      }
      aiNew = sqlite3_realloc64(pU->aiCol, sizeof(int)*(pU->nCol+1));
      if( aiNew==0 ){ rc = SQLITE_NOMEM; break; }
      pU->aiCol = aiNew;
      azNew = sqlite3_realloc64(pU->azColl, sizeof(char*)*(pU->nCol+1));
      if( azNew==0 ){ rc = SQLITE_NOMEM; break; }
      pU->azColl = azNew;
      pU->azColl[pU->nCol] = sqlite3_mprintf("%s",
          sqlite3_column_text(pInfo, 1) ? (const char*)sqlite3_column_text(pInfo, 1) : "BINARY");
      if( pU->azColl[pU->nCol]==0 ){ rc = SQLITE_NOMEM; break; }
      pU->aiCol[pU->nCol++] = cid;
    }
    if( pInfo ){
      int rc2 = sqlite3_finalize(pInfo);
      if( rc==SQLITE_OK ) rc = rc2;
    }
    if( rc==SQLITE_OK && bExpr ){
      int j;
      if( p->zExprUnique==0 ){
        p->zExprUnique = sqlite3_mprintf("%s", zIdx);
        if( p->zExprUnique==0 ) rc = SQLITE_NOMEM;
      }
      for(j=0; j<pU->nCol; j++) sqlite3_free(pU->azColl[j]);
      sqlite3_free(pU->zName);
      sqlite3_free(pU->azColl);
      sqlite3_free(pU->aiCol);
      p->nUnique--;
    }
  }
  if( pList ){
    int rc2 = sqlite3_finalize(pList);
    if( rc==SQLITE_OK ) rc = rc2;
  }
  return rc;
}

int ctTableLoad(sqlite3 *db, const char *zTab, CtTable **ppTab, char **pzErr){
  sqlite3_stmt *pStmt = 0;
  CtTable *p;
  int rc;
  int bFound = 0, bHasPkIndex = 0;
  const char *zType = 0;

  *ppTab = 0;
  if( ctIsSystemName(zTab) ){
    *pzErr = sqlite3_mprintf(
        "sqlite-ct: \"%s\" is a system table; only user tables can be tracked", zTab);
    return SQLITE_ERROR;
  }
  p = sqlite3_malloc(sizeof(*p));
  if( p==0 ) return SQLITE_NOMEM;
  memset(p, 0, sizeof(*p));

  /* Kind of object, canonical name, WITHOUT ROWID. */
  rc = ctPrepare(db, &pStmt, pzErr,
      "SELECT name, type, wr FROM pragma_table_list WHERE schema='main'"
      " AND name=%Q COLLATE NOCASE", zTab);
  if( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
    bFound = 1;
    p->zName = sqlite3_mprintf("%s", (const char*)sqlite3_column_text(pStmt, 0));
    zType = (const char*)sqlite3_column_text(pStmt, 1);
    p->bWithoutRowid = sqlite3_column_int(pStmt, 2);
    if( p->zName==0 || zType==0 ) rc = SQLITE_NOMEM;
    else if( strcmp(zType, "table")!=0 ){
      *pzErr = sqlite3_mprintf(
          "sqlite-ct: \"%s\" is a %s; only ordinary tables can be tracked", zTab,
          strcmp(zType, "view")==0 ? "view, not a table" :
          strcmp(zType, "virtual")==0 ? "virtual table" :
          strcmp(zType, "shadow")==0 ? "shadow table of a virtual table" : zType);
      rc = SQLITE_ERROR;
    }
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
    pStmt = 0;
  }
  if( rc==SQLITE_OK && !bFound ){
    *pzErr = sqlite3_mprintf("sqlite-ct: no such table: \"%s\"", zTab);
    rc = SQLITE_ERROR;
  }

  /* Columns and primary key. */
  if( rc==SQLITE_OK ){
    rc = ctPrepare(db, &pStmt, pzErr,
        "SELECT name, pk, hidden, \"notnull\" FROM pragma_table_xinfo(%Q, 'main') ORDER BY cid",
        p->zName);
  }
  while( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
    CtColumn *aNew = sqlite3_realloc64(p->aCol, sizeof(CtColumn)*(p->nCol+1));
    if( aNew==0 ){ rc = SQLITE_NOMEM; break; }
    p->aCol = aNew;
    memset(&p->aCol[p->nCol], 0, sizeof(CtColumn));
    p->aCol[p->nCol].zName = sqlite3_mprintf("%s", (const char*)sqlite3_column_text(pStmt, 0));
    p->aCol[p->nCol].iPk = sqlite3_column_int(pStmt, 1);
    p->aCol[p->nCol].bHidden = sqlite3_column_int(pStmt, 2)!=0;
    p->aCol[p->nCol].bNotNull = sqlite3_column_int(pStmt, 3)!=0;
    if( p->aCol[p->nCol].zName==0 ){ rc = SQLITE_NOMEM; break; }
    if( p->aCol[p->nCol].iPk>p->nPk ) p->nPk = p->aCol[p->nCol].iPk;
    p->nCol++;
  }
  if( pStmt ){
    int rc2 = sqlite3_finalize(pStmt);
    if( rc==SQLITE_OK ) rc = rc2;
    pStmt = 0;
  }
  if( rc==SQLITE_OK && p->nCol==0 ){
    *pzErr = sqlite3_mprintf(
        "sqlite-ct: \"%s\" is a virtual table; only ordinary tables can be tracked", zTab);
    rc = SQLITE_ERROR;
  }
  if( rc==SQLITE_OK && p->nPk==0 ){
    *pzErr = sqlite3_mprintf(
        "sqlite-ct: table \"%s\" has no PRIMARY KEY; add one (an INTEGER PRIMARY KEY"
        " keeps today's rowids, which VACUUM may otherwise renumber)", p->zName);
    rc = SQLITE_ERROR;
  }
  if( rc==SQLITE_OK ){
    int i;
    p->aiPk = sqlite3_malloc64(sizeof(int)*p->nPk);
    if( p->aiPk==0 ) rc = SQLITE_NOMEM;
    for(i=0; rc==SQLITE_OK && i<p->nCol; i++){
      if( p->aCol[i].iPk ) p->aiPk[p->aCol[i].iPk-1] = i;
    }
  }

  /* A rowid table whose single key column has no "pk" index is an INTEGER
  ** PRIMARY KEY, i.e. the rowid itself. */
  if( rc==SQLITE_OK ){
    rc = ctPrepare(db, &pStmt, pzErr,
        "SELECT 1 FROM pragma_index_list(%Q, 'main') WHERE origin='pk'", p->zName);
    if( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ) bHasPkIndex = 1;
    if( pStmt ){
      int rc2 = sqlite3_finalize(pStmt);
      if( rc==SQLITE_OK ) rc = rc2;
      pStmt = 0;
    }
    p->bRowidAlias = !p->bWithoutRowid && p->nPk==1 && !bHasPkIndex;
  }
  if( rc==SQLITE_OK ) rc = ctLoadUniques(db, p, pzErr);
  if( rc==SQLITE_OK ){
    rc = ctPrepare(db, &pStmt, pzErr,
        "SELECT name FROM pragma_index_list(%Q, 'main') ORDER BY name", p->zName);
    while( rc==SQLITE_OK && sqlite3_step(pStmt)==SQLITE_ROW ){
      char **azNew = sqlite3_realloc64(p->azIndex, sizeof(char*)*(p->nIndex+1));
      if( azNew==0 ){ rc = SQLITE_NOMEM; break; }
      p->azIndex = azNew;
      p->azIndex[p->nIndex] = sqlite3_mprintf("%s", (const char*)sqlite3_column_text(pStmt, 0));
      if( p->azIndex[p->nIndex]==0 ){ rc = SQLITE_NOMEM; break; }
      p->nIndex++;
    }
    if( pStmt ){
      int rc2 = sqlite3_finalize(pStmt);
      if( rc==SQLITE_OK ) rc = rc2;
      pStmt = 0;
    }
  }

  if( rc!=SQLITE_OK ){
    ctTableFree(p);
    return rc;
  }
  *ppTab = p;
  return SQLITE_OK;
}
