/*
** sqlite_ct.h -- the one internal header of the sqlite-ct loadable extension.
**
** The extension is split by concern, one file each:
**
**   ext.c        entry point, the registration table of every SQL function
**                (name, arguments, flags), sqlite_ct_version(), sqlite_ct_debug()
**   state.c      per-connection state: the transaction's BSN, the tracking context,
**                apply (sync) mode, and the SQL functions that read and set them
**   introspect.c what a table looks like: columns, primary key, UNIQUE indexes
**   schema.c     system tables, on-disk layout version, create_schema and
**                disable_tracking, trigger generation
**   keycodec.c   the packed tombstone key (__sysRK): pack, unpack, validate
**   portable.c   pure-SQL triggers for tables tracked in portable mode
**   stmtcache.c  statements kept per connection, finalized at close by the
**                xDisconnect of the eponymous table sqlite_ct_stmt_cache
**   txn.c        the write transaction's end, told by SQLite to the eponymous
**                table sqlite_ct_txn: its xSync makes sure the log row is
**                there, its xCommit/xRollback end the trust in the BSN
**   changes.c    the change contract: the table-valued function
**                sqlite_ct_changes(tbl, since [, until [, exclude_context]])
**   fault.c      allocation fault injection, in test builds only
**
** Nothing here is exported except the entry point (see ext.c); everything else
** is static or has hidden visibility (the build passes -fvisibility=hidden).
*/
#ifndef SQLITE_CT_H
#define SQLITE_CT_H

#include "sqlite3ext.h"
#include <stddef.h>
#include <stdint.h>

SQLITE_EXTENSION_INIT3

#ifndef SQLITE_CT_VERSION
# error "build with -DSQLITE_CT_VERSION=\"x.y.z\" (setup.py passes the package version)"
#endif

/* On-disk layout version stored in __sysCtMeta; bump it (and add a migration
** in schema.c) whenever a system table or the trigger shape changes.
** Layout 2: the WHENs of the native triggers check the table's UNIQUE indexes
** and NULL in composite keys, OR REPLACE victims include the row holding
** NEW's rowid, key changes compare with BINARY, the commit log's newest row
** is guarded, and __sysCtMeta keeps retired_table: and anchor0_expired: keys.
** Opening a layout-1 database for writing tracking metadata
** (ctCheckLayout with bCreate) upgrades it in place (schema.c, ctMigrate).
** Layout 3: a native-mode table also has the guard, the always-empty partial
** index "__sysct_guard_T" whose WHERE calls sqlite_ct_guard() (schema.c,
** ctGuardSql), so that writes with triggers turned off fail. The migration
** from layouts 1 and 2 is the same: re-install every armed table's triggers,
** which installs its guard.
** Layout 4: the AFTER INSERT trigger's body is empty; the work it did when
** its WHEN held (tombstone OR REPLACE victims, stamp a row the DEFAULTs did
** not) is run from C by sqlite_ct_insert_when() itself (schema.c, ctFixSql;
** state.c, ctRunFix), so that an insert no longer pays for a trigger frame
** sized by that work. The AFTER DELETE trigger writes its tombstone as one
** VALUES row behind a WHEN. The migration is the same again: re-install the
** triggers.
** Layout 5: OR REPLACE victims, rows deleted by any statement and the old key
** of a key change are captured by an always-empty partial index,
** "__sysct_cap_T", whose WHERE calls sqlite_ct_capture() (schema.c,
** ctCaptureSql; state.c, "Captured rows"), and the AFTER triggers of the same
** table sweep them: the BEFORE INSERT / UPDATE triggers that remembered
** victims through the UNIQUE indexes the table had, the AFTER UPDATE OF key
** trigger and the per-row check of the table's UNIQUE indexes are gone, and
** an OR REPLACE through any index, one created later included, is tracked.
** The AFTER DELETE trigger's WHEN is sqlite_ct_delete_when(). The migration
** re-installs the triggers (and with them the capture index).
** Layout 6: every stamping UPDATE of sqlite-ct's own (the AFTER UPDATE and
** AFTER UPDATE OF key triggers' bodies, the fix of an inserted row) is
** followed by sqlite_ct_stamp_check(), which fails the statement when a
** BEFORE UPDATE trigger of the application made SQLite skip the row
** (RAISE(IGNORE)): layout 5 left that change unstamped, never enumerated.
** The migration re-installs the triggers.
** Layout 7: the triggers no longer probe __sysTxCommitSequence on every row
** (they pass NULL where the probe was, and shape CT_WHEN_SHAPE_TRUSTED): the
** first tracked write of a transaction enlists the virtual table
** sqlite_ct_txn (txn.c), and while it is enlisted the cached BSN is trusted;
** its xSync writes the log row again if a rollback took it. The migration
** re-installs the triggers. */
#define CT_LAYOUT_VERSION 7

/* The shape of sqlite_ct_insert_when()'s arguments that layout 4 introduced:
** its 11th argument, followed by NEW's rowid and key. */
#define CT_INSERT_WHEN_SHAPE 4
/* Layout 5's shape of sqlite_ct_insert_when() (same positions as layout 4's,
** no UNIQUE list, victims swept from the capture) and of sqlite_ct_update_when()
** (its 14th argument, then whether inserts are tracked and NEW's key). */
#define CT_WHEN_SHAPE_CAPTURE 5
/* Layout 7's shape: layout 5's arguments, with NULL where the probe of the
** log was (state.c, ctMaxCsnArg). A build of layout 6 or older refuses it as
** a newer layout's. */
#define CT_WHEN_SHAPE_TRUSTED 7
#define CT_SHAPE_CAPTURES(v) ((v)==CT_WHEN_SHAPE_CAPTURE || (v)==CT_WHEN_SHAPE_TRUSTED)
/* Fixes kept prepared per connection (state.c, ctRunFix), and the most
** statements one fix has (schema.c, ctFixSql). */
#define CT_NFIX 4
#define CT_FIX_NSTMT 5
/* The most fixes nested on one stack. Each runs its statements apart from
** the statement whose trigger called it, so SQLite's own limits (trigger
** depth, recursive_triggers=OFF) do not see the nesting: an application
** trigger that the fix's stamping UPDATE fires and that inserts into the same
** table would recurse until the C stack ran out. */
#define CT_FIX_DEPTH_MAX 64

/* TrackingOptions, as SQL CE's public enum. */
#define CT_TRACK_INSERT 1
#define CT_TRACK_UPDATE 2
#define CT_TRACK_DELETE 4
#define CT_TRACK_ALL    7
/* Flag in __sysOCSTrackedObjects.__sysTrackOpt: pure-SQL (portable) triggers. */
#define CT_TRACKOPT_PORTABLE 0x100

/* What the fix of a row runs (state.c, ctRunFix; schema.c, ctFixSql). */
#define CT_FIX_STAMP   1       /* stamp the inserted row */
#define CT_FIX_VICTIMS 2       /* layout 4: sweep __sysCtReplaceVictims */
#define CT_FIX_SWEEP   4       /* layout 5: tombstone one captured row unless live */

/* Slots of the per-connection statement cache (stmtcache.c). */
#define CT_STMT_LOG    0       /* INSERT INTO __sysTxCommitSequence */
#define CT_STMT_MAXCSN 1       /* SELECT max(__sysTxCsn) */
#define CT_STMT_SCHEMA 2       /* PRAGMA main.schema_version */
#define CT_STMT_DIRTY  3       /* SELECT 1: notices PRAGMA read_uncommitted=... */
#define CT_STMT_TXN    4       /* INSERT INTO sqlite_ct_txn: enlists it (txn.c) */
#define CT_NSTMT       5

/* A small list of table names, each with a count of marks (state.c): the
** victim marks and the stamping marks. A name stays listed once it has been
** marked (one entry per tracked table the connection writes), so marking and
** unmarking a row costs a string compare, no allocation. */
typedef struct CtNames CtNames;
struct CtNames {
  int n;          /* entries in az and anMark */
  char **az;      /* table names, each listed once */
  int *anMark;    /* marks each name holds now */
};

/*
** Per-connection state. One instance per connection, shared by every SQL
** function registered on it (pApp) and reference counted: each registration
** that carries it takes a reference and its destructor drops one, so the last
** function SQLite destroys (at sqlite3_close) frees it, whichever that is.
*/
typedef struct CtState CtState;
struct CtState {
  sqlite3 *db;
  int nRef;
  /* The BSN handed to the open write transaction, 0 if none. Valid only while
  ** it is this transaction's (sqlite_ct_txn is enlisted in it, or, where it
  ** could not be, the pager's data version equals uDataVersion: a commit
  ** moves it) and the newest __sysTxCommitSequence row is still iBsn (a
  ** rollback, ROLLBACK TO or failed statement removes it). See state.c. */
  sqlite3_int64 iBsn;
  unsigned int uDataVersion;
  sqlite3_int64 iPendingLog;   /* BSN handed out but not yet logged (state.c) */
  /* What sqlite_ct_txn (txn.c) knows of the open write transaction: it is
  ** enlisted in it (bTxnJoined), its own xSync has run (bTxnSynced), and a
  ** rollback since the log row was last known to exist may have taken it
  ** (bTxnSuspect). iBsn is trusted without a probe only while joined, not
  ** synced and not suspect (state.c, ctMaxCsnArg). */
  int bTxnJoined;
  int bTxnSynced;
  int bTxnSuspect;
  int bTxnExplicit;            /* it joined outside autocommit mode */
  int bLogPending;             /* a DEFAULT handed out iBsn, not logged yet */
  int bNoCache;                /* prepare, do not keep (txn.c, xRollback) */
  sqlite3_int64 iSyncBsn;      /* iBsn when its xSync ran (txn.c) */
  int bApply;                  /* applying server changes: no stamps, no tombstones */
  int bApplyWrote;             /* a tracked row was written in apply mode ... */
  unsigned int uApplyDv;       /* ... while the pager's data version was this */
  int bHasContext;             /* aContext holds a tracking context */
  unsigned char aContext[16];  /* GUID, .NET byte order, as SQL CE stored it */
  /* Tables whose BEFORE trigger remembered rows an OR REPLACE may delete and
  ** whose AFTER INSERT trigger has not swept them yet (state.c, "victims"). */
  CtNames victims;
  /* Tables whose trigger body is writing stamps right now: the AFTER UPDATE
  ** trigger this write fires must not take it for an application's write of
  ** a __sys column (state.c, "stamping marks"). One mark per body. */
  CtNames stamping;
  sqlite3_int64 iStampBsn;     /* the BSN the stamping marks belong to */
  sqlite3_int64 iMainDbId;     /* __sysCtMeta database_id of main, 0: not read */
  /* Tables whose UNIQUE indexes were checked against the ones their triggers
  ** know (state.c, "UNIQUE indexes"), valid while main's schema_version is
  ** iUniqueSchema. */
  CtNames uniquesOk;
  sqlite3_int64 iUniqueSchema;
  int nUniqueReprepare;         /* re-preparations of the schema_version statement */
  /* PRAGMA read_uncommitted as last read (state.c, ctRefuseDirtyReads), valid
  ** while the CT_STMT_DIRTY statement has been re-prepared nDirtyReprepare
  ** times; bDirtyKnown 0: read it again. */
  int bDirtyKnown, bDirty, nDirtyReprepare;
  /* Statements prepared once per connection (stmtcache.c), finalized by the
  ** xDisconnect of sqlite_ct_stmt_cache when the connection closes. */
  sqlite3_stmt *apStmt[CT_NSTMT];
  int bCacheConnected;         /* sqlite_ct_stmt_cache is connected */
  /* The statements of the fix of a row inserted into table zTab (state.c,
  ** ctRunFix), kept the same way while main's schema is the one they were
  ** prepared for; iFixNext is the slot reused next. */
  struct CtFix {
    char *zTab;                /* the table's name as its trigger passes it */
    int fKind;                 /* 1: stamps, 2: victims */
    int nVal;                  /* values passed: NEW's rowid and key */
    sqlite3_int64 iSchema;     /* main's schema_version ... */
    int nReprepare;            /* ... and re-preparations, as in ctCheckUniques */
    int nStmt;
    sqlite3_stmt *apStmt[CT_FIX_NSTMT];
  } aFix[CT_NFIX];
  int iFixNext;
  int nFixDepth;               /* fixes running on the stack (ctFuncInsertWhen) */
  /* Layout 5: the rows whose entry in a capture index ("__sysct_cap_T") SQLite
  ** removed or added, not swept yet (state.c, "Captured rows"). Each belongs
  ** to the program (statement or trigger) that wrote it, through a token kept
  ** as that program's auxiliary data; when the program ends, its rows go. */
  struct CtCap {
    sqlite3_uint64 iTok;       /* the capturing program's token ... */
    void *pTok;                /* ... itself (state.c, CtCapTok) */
    const char *zTab;          /* the table's name (the token's copy) */
    int iKey, nKey;            /* packed key: aCapKey[iKey .. iKey+nKey) */
    sqlite3_int64 iIns;        /* the row's __sysInsertTxBsn ... */
    int bInsNull;              /* ... or NULL, or not an integer */
    int bSameKey;              /* (a sweep's copy) under the sweeping row's key */
  } *aCap;
  int nCap, nCapAlloc;
  unsigned char *aCapKey;      /* the packed keys, appended */
  int nCapKey, nCapKeyAlloc;
  sqlite3_uint64 iTokNext;
  int nCapQuiet;               /* creating a capture index: its scan captures nothing */
  struct CtRestamp *pRestamp;  /* old images sqlite-ct's restamps will capture (state.c) */
  /* Random, drawn at the first sqlite_ct_schema_token() (changes.c): tells
  ** this connection from any other, also from one closed before it. */
  sqlite3_uint64 iConnNonce;
};

/* state.c */
CtState *ctStateNew(sqlite3 *db);
void ctStateRef(CtState *p);
void ctStateUnref(void *p);
int ctAllocateBsn(CtState *p, sqlite3_int64 *piBsn, char **pzErr);
int ctLastCommittedCsn(sqlite3 *db, CtState *p, sqlite3_int64 *piCsn, char **pzErr);
/* What the open write transaction wrote that an enumeration inside it cannot
** see past (sqlite_ct_uncommitted_writes()): CT_WROTE_* bits in *pfWrote. */
#define CT_WROTE_APPLY    1   /* tracked rows in apply mode (stamps 0) */
#define CT_WROTE_NATIVE   2   /* it holds a valid BSN */
#define CT_WROTE_PORTABLE 4   /* any write while a table is tracked in portable mode */
int ctUncommittedWrites(CtState *p, int *pfWrote, char **pzErr);
sqlite3_int64 ctNowMs(void);
void ctFuncBegin(sqlite3_context*, int, sqlite3_value**);
void ctFuncTakeLog(sqlite3_context*, int, sqlite3_value**);
void ctFuncBsn(sqlite3_context*, int, sqlite3_value**);
void ctFuncNeedsStamp(sqlite3_context*, int, sqlite3_value**);
void ctFuncCurrentBsn(sqlite3_context*, int, sqlite3_value**);
void ctFuncUncommittedWrites(sqlite3_context*, int, sqlite3_value**);
void ctFuncLastCommittedCsn(sqlite3_context*, int, sqlite3_value**);
void ctFuncContext(sqlite3_context*, int, sqlite3_value**);
void ctFuncSetContext(sqlite3_context*, int, sqlite3_value**);
void ctFuncApplyMode(sqlite3_context*, int, sqlite3_value**);
void ctFuncSetApplyMode(sqlite3_context*, int, sqlite3_value**);
void ctFuncNow(sqlite3_context*, int, sqlite3_value**);
void ctFuncWriteBsn(sqlite3_context*, int, sqlite3_value**);
void ctFuncInsertWhen(sqlite3_context*, int, sqlite3_value**);
void ctFuncNewerLayout(sqlite3_context*, int, sqlite3_value**);
void ctFuncInsertWhenAny(sqlite3_context*, int, sqlite3_value**);
void ctFuncUpdateWhen(sqlite3_context*, int, sqlite3_value**);
void ctFuncDefaultBsn(sqlite3_context*, int, sqlite3_value**);
void ctFuncVictim(sqlite3_context*, int, sqlite3_value**);
void ctFuncStampEnd(sqlite3_context*, int, sqlite3_value**);
void ctFuncStampCheck(sqlite3_context*, int, sqlite3_value**);
void ctFuncGuard(sqlite3_context*, int, sqlite3_value**);
void ctFuncCapture(sqlite3_context*, int, sqlite3_value**);
void ctFuncDeleteWhen(sqlite3_context*, int, sqlite3_value**);
void ctFuncRekeyWhen(sqlite3_context*, int, sqlite3_value**);
void ctFuncUpdateWhenAny(sqlite3_context*, int, sqlite3_value**);

/* The extension's eponymous tables over a connection's state (stmtcache.c,
** txn.c). */
typedef struct CtStateVtab CtStateVtab;
struct CtStateVtab {
  sqlite3_vtab base;
  CtState *p;
};

/* stmtcache.c */
int ctStmtCacheRegister(sqlite3 *db, CtState *p);
int ctStateVtabConnect(sqlite3 *db, void *pAux, const char *zDecl, sqlite3_vtab **ppVtab);
/* txn.c */
int ctTxnRegister(sqlite3 *db, CtState *p);
/* state.c, for txn.c: write the log row of the open transaction's BSN when it
** is missing and a row or tombstone carries the BSN */
int ctEnsureLog(CtState *p, int bTold, int *pbLogged, char **pzErr);
int ctCachedStmt(CtState *p, int iSlot, const char *zSql, sqlite3_stmt **ppStmt,
                 int *pbOwned);
int ctStmtRelease(sqlite3_stmt *pStmt, int bOwned);
void ctFixClear(CtState *p, int i);
int ctStmtListed(sqlite3 *db, sqlite3_stmt *pStmt);

/* changes.c */
int ctChangesRegister(sqlite3 *db, CtState *p);
void ctLocalChangeFunc(sqlite3_context*, int, sqlite3_value**);
void ctFuncSnapshot(sqlite3_context*, int, sqlite3_value**);
void ctFuncChangesSql(sqlite3_context*, int, sqlite3_value**);
void ctFuncTombstoneKeyMatch(sqlite3_context*, int, sqlite3_value**);
void ctFuncSchemaToken(sqlite3_context*, int, sqlite3_value**);

/* keycodec.c */
void ctFuncPackKey(sqlite3_context*, int, sqlite3_value**);
void ctFuncUnpackKey(sqlite3_context*, int, sqlite3_value**);
void ctFuncKeyCount(sqlite3_context*, int, sqlite3_value**);
sqlite3_int64 ctPackSize(int nVal, sqlite3_value **apVal);
int ctPackInto(int nVal, sqlite3_value **apVal, unsigned char *aOut);

/* introspect.c */
typedef struct CtColumn CtColumn;
struct CtColumn {
  char *zName;
  int iPk;          /* 1-based position in the PRIMARY KEY, 0 if not a key column */
  int bHidden;      /* generated or hidden column: never written by us */
  int bNotNull;     /* declared NOT NULL */
};
typedef struct CtUnique CtUnique;
struct CtUnique {
  char *zName;      /* the index's name */
  int nCol;
  int *aiCol;       /* indexes into CtTable.aCol */
  char **azColl;    /* the index's collation of each column: what "equal" means
                    ** to it, which may differ from the column's own */
};
typedef struct CtTable CtTable;
struct CtTable {
  char *zName;
  int nCol;
  CtColumn *aCol;
  int nPk;
  int *aiPk;        /* aCol indexes of the key columns, in PRIMARY KEY order */
  int bWithoutRowid;
  int bRowidAlias;  /* the key is a single INTEGER PRIMARY KEY (the rowid) */
  int nUnique;      /* UNIQUE indexes other than the primary key */
  CtUnique *aUnique;
  char *zExprUnique; /* a UNIQUE index on an expression (not in aUnique), or NULL */
  int nIndex;       /* every index of the table, by name (portable.c) */
  char **azIndex;
};
int ctTableLoad(sqlite3 *db, const char *zTab, CtTable **ppTab, char **pzErr);
void ctTableFree(CtTable *p);
int ctTableHasColumn(const CtTable *p, const char *zCol);
int ctColumnIsWatched(const CtTable *p, int iCol);
int ctKeyAcceptsNull(const CtTable *p);
int ctIsSystemName(const char *zName);

/* schema.c */
void ctFuncCreateSchema(sqlite3_context*, int, sqlite3_value**);
void ctFuncDisableTracking(sqlite3_context*, int, sqlite3_value**);
void ctFuncIsTracked(sqlite3_context*, int, sqlite3_value**);
void ctFuncRenameTracking(sqlite3_context*, int, sqlite3_value**);
void ctFuncLayoutVersion(sqlite3_context*, int, sqlite3_value**);
void ctFuncCheckLayout(sqlite3_context*, int, sqlite3_value**);
void ctFuncCreateSystemTables(sqlite3_context*, int, sqlite3_value**);
int ctCheckLayout(sqlite3 *db, CtState *pState, int bCreate, char **pzErr);
int ctDatabaseId(sqlite3 *db, sqlite3_int64 *piId, char **pzErr);
char *ctFixSql(const CtTable *p, const char *zTName, int fKind);

/* schema.c, shared with portable.c */
void ctAppendKeyChanged(sqlite3_str *s, const CtTable *p);
void ctAppendWatchedChanged(sqlite3_str *s, const CtTable *p);
void ctAppendWatchedList(sqlite3_str *s, const CtTable *p);
char *ctAppended(void (*xAppend)(sqlite3_str*, const CtTable*), const CtTable *p);
const char *ctReplaceRowid(const CtTable *p);
char *ctWatchedListSql(const CtTable *p);
char *ctWatchedChangedSql(const CtTable *p);

/* portable.c */
char *ctPortableTriggerSql(const CtTable *p, int eOpt, sqlite3_int64 iEnable);

/* Shared helpers (state.c) */
void ctStrOom(sqlite3_str *s);
int ctExecf(sqlite3 *db, char **pzErr, const char *zFmt, ...);
int ctQueryText(sqlite3 *db, const char *zSql, const char *zArg, char **pzOut,
                char **pzErr);
int ctQueryInt64(sqlite3 *db, sqlite3_int64 *piOut, int *pbNull, char **pzErr,
                 const char *zFmt, ...);

/* Fault injection, in test builds only (-DSQLITE_CT_FAULT_INJECT; fault.c,
** tests/test_nomem.py). Every allocation the extension makes itself goes
** through these, and sqlite_ct_fault_inject(N) makes the Nth one from then on
** fail as SQLite's allocator does when out of memory. The normal build has
** neither the wrappers nor the function. */
#ifdef SQLITE_CT_FAULT_INJECT
#include <stdarg.h>
void *ctFaultMalloc(int n);
void *ctFaultMalloc64(sqlite3_uint64 n);
void *ctFaultRealloc64(void *p, sqlite3_uint64 n);
char *ctFaultMprintf(const char *zFmt, ...);
char *ctFaultVmprintf(const char *zFmt, va_list ap);
char *ctFaultStrFinish(sqlite3_str *s);
int ctFaultRegister(sqlite3 *db);
int ctFaultBindText(sqlite3_stmt *pStmt, int i, const char *z, int n, void (*xDel)(void*));
int ctFaultBindValue(sqlite3_stmt *pStmt, int i, const sqlite3_value *pVal);
# undef sqlite3_malloc
# undef sqlite3_malloc64
# undef sqlite3_realloc64
# undef sqlite3_mprintf
# undef sqlite3_vmprintf
# undef sqlite3_str_finish
# define sqlite3_malloc ctFaultMalloc
# define sqlite3_malloc64 ctFaultMalloc64
# define sqlite3_realloc64 ctFaultRealloc64
# define sqlite3_mprintf ctFaultMprintf
# define sqlite3_vmprintf ctFaultVmprintf
# define sqlite3_str_finish ctFaultStrFinish
#endif

/* Binds that copy their value (TEXT or BLOB) allocate inside SQLite, where
** the wrappers above cannot reach: code that checks their result binds
** through these, which the test build can fail (fault.c). */
#ifdef SQLITE_CT_FAULT_INJECT
# define ctBindText ctFaultBindText
# define ctBindValue ctFaultBindValue
#else
# define ctBindText sqlite3_bind_text
# define ctBindValue sqlite3_bind_value
#endif

#endif /* SQLITE_CT_H */
