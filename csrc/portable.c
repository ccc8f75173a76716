/*
** portable.c -- pure-SQL triggers for tables tracked in portable mode.
**
** SQL SURFACE: none of its own. sqlite_ct_create_schema(T, OPTIONS,
** 'portable') (schema.c) stores CT_TRACKOPT_PORTABLE for the table and
** installs the triggers ctPortableTriggerSql() returns instead of the native
** ones, under the same names:
**
**   __sysct_ai_T  AFTER INSERT   tombstones for rows OR REPLACE removed; stamps
**                                the new row
**   __sysct_au_T  AFTER UPDATE   guards the __sys columns; a key change is a
**                                tombstone plus an insert; tombstones for rows
**                                OR REPLACE removed; re-stamps the row
**   __sysct_ad_T  AFTER DELETE   the tombstone
**   __sysct_bi_T, __sysct_bu_T   (deletes tracked) BEFORE INSERT / UPDATE OF key
**                                and UNIQUE columns: remember the rows an OR
**                                REPLACE may delete (SQLite fires no DELETE
**                                trigger for them unless recursive_triggers is on)
**
** The trigger bodies call no sqlite_ct_* function and no SQL function newer
** than SQLite 3.37 (typeof, hex, printf, abs, instr, substr, max, min,
** coalesce, char, round, julianday: all built in and innocuous, so they also
** run under PRAGMA trusted_schema=OFF). A writer that never loaded the
** extension (the sqlite3 shell without .load, Python's sqlite3, DB browsers,
** other languages) is tracked like one that did, and the enumeration
** (sqlite_ct/changes.py) reads its changes with the same queries.
**
** HOW IT WORKS. The semantics are the native ones (schema.c): stamps
** (__sysInsertTxBsn = __sysChangeTxBsn = BSN on insert, __sysChangeTxBsn on
** update; without INSERT tracking an inserted row keeps NULL stamps), a key
** change is a tombstone for the old key plus an insert of the new, tombstones
** carry coalesce(OLD.__sysInsertTxBsn, enabling BSN) as insert CSN, rows an OR
** REPLACE deletes (through the key or a UNIQUE index) get tombstones with
** recursive_triggers on and off. These differences are forced by pure SQL:
**
** One BSN per row change, not per transaction (invariant 3 does not hold).
**   Pure SQL cannot tell a log row written earlier in the open transaction
**   from one committed by an earlier transaction of the same connection:
**   nothing observable changes at a commit (PRAGMA data_version does not move
**   for a connection's own commits, there is no commit hook, and a trigger
**   of the main schema cannot reach per-connection temp tables). No number
**   can be proven to be "this transaction's", so every trigger invocation
**   that writes a stamp or a tombstone takes a new number,
**   P = max(__sysTxCsn) + 1, and logs it in __sysTxCommitSequence (CSN = BSN
**   = P). SQLite serialises writers, so every BSN of a transaction is above
**   everything committed before it and below everything committed after it:
**   commit order (invariant 2) and convergence (invariant 1) hold, and a
**   rollback of any extent removes the stamps with their log rows (invariant
**   4). A transaction that changes n rows gets n consecutive BSNs and n log
**   rows. Anchors stay correct: an anchor is the newest CSN of a committed
**   snapshot, which never falls between two BSNs of one transaction.
**
** Stamp first, log last. Each trigger computes P, uses it for every stamp and
**   tombstone it writes, and inserts the log row last. The AFTER UPDATE
**   trigger fired by a stamping UPDATE (always for the AFTER INSERT one's,
**   with recursive_triggers on also for its own) thus still sees P as the
**   number being handed out, and recognises the row as stamped:
**   NEW.__sysChangeTxBsn IS P, context NULL. Stamps at rest are logged, so a
**   user update never looks stamped; only a user who writes P itself (which
**   the guard accepts, as native accepts the pending BSN) leaves P unlogged,
**   and the row then counts as changed by whichever transaction logs P, as in
**   native. Should a user trigger fired by a stamping UPDATE log a number
**   itself, the final log insert logs the next one: P is logged either way
**   (each log row is the previous maximum plus one).
**
** Guard (invariant 7): as native, the AFTER UPDATE trigger RAISEs when a user
**   statement gives a __sys column a value tracking would not write: P into
**   __sysInsertTxBsn (inserts tracked), P into __sysChangeTxBsn (inserts or
**   updates tracked), NULL into __sysTrackingContext.
**
** Tracking context: always NULL. Writers without the extension have none,
**   and pure SQL cannot read the context of a connection that has one.
**
** Tombstones: P is fresh, so a tombstone's primary key (table, P, key) never
**   exists already: plain INSERTs, immune to the outer statement's conflict
**   policy (SQLite imposes the outer INSERT OR REPLACE / OR IGNORE on
**   statements inside triggers). A key deleted twice in one transaction gets
**   two tombstones where native merges them under its shared BSN; the
**   enumeration groups by key, so a replica sees no difference.
**
** Key: the text form of keycodec.c (pure SQL cannot build the binary form on
**   SQLite < 3.41: no unhex()). REAL values are encoded by their exact
**   IEEE-754 bits, computed with power-of-two arithmetic, which is exact;
**   printf('%!.17g') is not (SQLite 3.40 prints 1.7976931348623157e308 as
**   ...156e+308, and 3.40 and 3.54 print 0.1 differently, which would split
**   GROUP BY __sysRK between writers of two versions). The exponent estimate
**   comes from printf('%e') and is made exact by the bit length of the scaled
**   integer; should the estimate ever miss, the trigger RAISEs instead of
**   writing a wrong key. TEXT is hex() of the value in the database's
**   encoding, tagged by that encoding.
**
** OR REPLACE victims: the BEFORE triggers record in __sysCtReplaceVictims,
**   per row a REPLACE could delete (the one holding NEW's key, those holding
**   NEW's values of a UNIQUE index), its text key and insert BSN (row "T"),
**   and each of its key values exactly (rows "T" || char(0) || i || char(0)
**   || key, the value in __sysRK, whose BLOB affinity keeps every type; a
**   table name cannot contain NUL, so these rows never meet another table's).
**   The AFTER INSERT / UPDATE trigger writes a tombstone for each recorded
**   row that is gone (its key is NEW's and the statement put NEW there, or no
**   row has its key any more: an index lookup with the recorded values) and
**   clears the scratch rows, before its stamping UPDATE. With
**   recursive_triggers on, SQLite fires the DELETE trigger for those rows; it
**   writes the tombstone and drops the row from the scratch table, so the
**   tombstone is not written twice.
**
** LIMITS (portable tables): no tracking context and no apply mode (rows a
** sync provider applies through a connection with the extension are tracked
** as local changes); sqlite_ct_current_bsn() and
** sqlite_ct_last_committed_csn() do not know the BSNs portable triggers hand
** out in the connection's own open transaction (enumerate outside a write
** transaction that touched portable tables); a REAL key -0.0 is recorded as
** 0.0 (pure SQL cannot see the sign of a zero; the same key for SQLite).
*/
#include "sqlite_ct.h"
#include <string.h>

#define PT_COL_CHANGE  "\"__sysChangeTxBsn\""
#define PT_COL_INSERT  "\"__sysInsertTxBsn\""
#define PT_COL_CONTEXT "\"__sysTrackingContext\""

/* The BSN being handed out: the next number after the newest log row. */
#define PT_P "(SELECT coalesce(max(__sysTxCsn),0)+1 FROM __sysTxCommitSequence)"

/* Milliseconds since the Unix epoch (sqlite_ct_now()'s scale). julianday()
** is iJD/86400000.0, off by far less than half a millisecond, hence round(). */
#define PT_NOW "CAST(round((julianday('now')-2440587.5)*86400000.0) AS INTEGER)"

/* Log P; the last statement of every trigger that wrote a stamp or tombstone. */
#define PT_LOG_SQL \
  "INSERT INTO __sysTxCommitSequence(__sysTxCsn, __sysTxBsn, __sysCommitTime)" \
  " VALUES(" PT_P ", " PT_P ", " PT_NOW ");"

#define PT_TOMBSTONE_COLS \
  "INSERT INTO __sysOCSDeletedRows(__sysTName, __sysRK, __sysDeleteTxBsn," \
  " __sysInsertTxCsn, __sysDeletedTime, __sysTrackingContext)"

/* Alias of the table scanned in victim capture and lookup. */
#define PT_ALIAS "\"__sysct_t\""

/* 2^62, the largest power of two that is an exact integer literal. */
#define PT_2P62 "4611686018427387904.0"

/*
** 2^(62*q) for an integer expression q in 0..15, as a product of exact powers
** of two (every product of powers of two in range is exact).
*/
static void ptAppendPow62(sqlite3_str *s, const char *zQ){
  static const int aBit[] = { 1, 2, 4, 8 };
  size_t i;
  int j;
  for(i=0; i<sizeof(aBit)/sizeof(aBit[0]); i++){
    sqlite3_str_appendf(s, "%s(CASE WHEN (%s)&%d THEN ", i ? "*" : "", zQ, aBit[i]);
    for(j=0; j<aBit[i]; j++) sqlite3_str_appendf(s, "%s" PT_2P62, j ? "*" : "");
    sqlite3_str_appendall(s, " ELSE 1.0 END)");
  }
}

/* 2^n, exactly, for an integer expression n in -991..991 (ptAppendRealBits
** needs -486..567). */
static void ptAppendPow2(sqlite3_str *s, const char *zN){
  char *zQ = sqlite3_mprintf("(%s)/62", zN);
  char *zNegQ = sqlite3_mprintf("(-(%s))/62", zN);
  if( zQ==0 || zNegQ==0 ){
    ctStrOom(s);
  }else{
    sqlite3_str_appendf(s, "(CASE WHEN (%s)>=0 THEN (1<<((%s)%%62))*", zN, zN);
    ptAppendPow62(s, zQ);
    sqlite3_str_appendf(s, " ELSE 1.0/((1<<((-(%s))%%62))*", zN);
    ptAppendPow62(s, zNegQ);
    sqlite3_str_appendall(s, ") END)");
  }
  sqlite3_free(zQ);
  sqlite3_free(zNegQ);
}

/*
** The text form ('r' + 16 hex digits) of the REAL value zX, a column
** reference, which is finite and not zero. For ax = abs(zX):
**   k   = 56 - floor(D*log2(10)), D the decimal exponent printf('%e') shows,
**         so that ax*2^k lies in [2^53, 2^62) (the estimate is within -1..+4
**         of the binary exponent; the window allows -3..+5);
**   iy  = ax*2^k, scaled in two exact steps (2^k alone may overflow), an
**         integer because its top bit is at 2^53 or above;
**   L   = bit length of iy, so the binary exponent is e = L-1-k;
**   E   = biased exponent max(e+1023, 0) (0: subnormal);
**   F   = iy >> (k-1075+max(E,1)), the shift that leaves the 52-bit fraction
**         (plus the implicit bit, masked off) or the subnormal significand;
**         only zero bits are shifted out.
** Each step is a LIMIT 1 subquery so that SQLite binds its values once
** instead of flattening (which would copy each expression into every use).
*/
static void ptAppendRealBits(sqlite3_str *s, const char *zX){
  int j;
  sqlite3_str_appendall(s,
      "(SELECT CASE WHEN __sysct_iy<9007199254740992 OR __sysct_iy>=4611686018427387904"
      " THEN RAISE(ABORT, 'sqlite-ct: internal error: cannot encode a REAL key')"
      " ELSE 'r'||printf('%016X', (CASE WHEN __sysct_x<0 THEN -9223372036854775807-1"
      " ELSE 0 END)|(__sysct_e<<52)|((__sysct_iy>>(__sysct_k-1075+max(__sysct_e,1)))"
      "&4503599627370495)) END"
      " FROM (SELECT __sysct_x, __sysct_k, __sysct_iy, max(54");
  for(j=54; j<62; j++){
    sqlite3_str_appendf(s, "+(__sysct_iy>=%lld)", (sqlite3_int64)1<<j);
  }
  sqlite3_str_appendall(s,
      "-1-__sysct_k+1023,0) AS __sysct_e"
      " FROM (SELECT __sysct_x, __sysct_k, CAST(abs(__sysct_x)*");
  ptAppendPow2(s, "__sysct_k/2");
  sqlite3_str_appendall(s, "*");
  ptAppendPow2(s, "__sysct_k-__sysct_k/2");
  sqlite3_str_appendf(s,
      " AS INTEGER) AS __sysct_iy"
      " FROM (SELECT __sysct_x, 56-(CAST(CAST(substr(printf('%%e',abs(__sysct_x)),"
      "instr(printf('%%e',abs(__sysct_x)),'e')+1) AS INTEGER)*3.321928094887362+2000.0"
      " AS INTEGER)-2000) AS __sysct_k"
      " FROM (SELECT %s AS __sysct_x LIMIT 1) LIMIT 1) LIMIT 1) LIMIT 1) LIMIT 1)", zX);
}

/* The tag of a TEXT value: hex() shows text in the database's encoding, and
** so does hex('a'): 61 (UTF-8), 6100 (UTF-16le) or 0061 (UTF-16be). A
** constant, which SQLite evaluates once per statement. */
#define PT_TEXT_TAG "(CASE hex('a') WHEN '61' THEN 't' WHEN '6100' THEN 'u' ELSE 'v' END)"

/* The text form of one key value zX (a column reference, evaluated several
** times). bInteger: the value is known to be an integer (a rowid key). */
static void ptAppendEncodeValue(sqlite3_str *s, const char *zX, int bInteger){
  if( bInteger ){
    sqlite3_str_appendf(s, "('i'||%s)", zX);
    return;
  }
  sqlite3_str_appendf(s,
      "(CASE typeof(%s) WHEN 'integer' THEN 'i'||%s WHEN 'text' THEN " PT_TEXT_TAG "||hex(%s)"
      " WHEN 'blob' THEN 'b'||hex(%s) WHEN 'real' THEN (CASE WHEN %s=0"
      " THEN 'r0000000000000000' WHEN %s=9e999 THEN 'r7FF0000000000000'"
      " WHEN %s=-9e999 THEN 'rFFF0000000000000' ELSE ",
      zX, zX, zX, zX, zX, zX, zX);
  ptAppendRealBits(s, zX);
  sqlite3_str_appendall(s, " END) ELSE 'n' END)");
}

/* The text key of a row: zRef is "OLD", "NEW" or a table alias. */
static void ptAppendEncodeKey(sqlite3_str *s, const CtTable *p, const char *zRef){
  int i;
  if( p->nPk>1 ) sqlite3_str_appendall(s, "(");
  for(i=0; i<p->nPk; i++){
    char *zX = sqlite3_mprintf("%s.\"%w\"", zRef, p->aCol[p->aiPk[i]].zName);
    if( zX==0 ){ ctStrOom(s); return; }
    if( i ) sqlite3_str_appendall(s, "||");
    ptAppendEncodeValue(s, zX, p->bRowidAlias);
    sqlite3_free(zX);
  }
  if( p->nPk>1 ) sqlite3_str_appendall(s, ")");
}

/* The name under which the rowid of p can be referenced, or NULL when user
** columns shadow all three (as schema.c): then "oid" would be a user column
** that many rows can share. */
static const char *ptRowidName(const CtTable *p){
  if( !ctTableHasColumn(p, "rowid") ) return "rowid";
  if( !ctTableHasColumn(p, "_rowid_") ) return "_rowid_";
  if( !ctTableHasColumn(p, "oid") ) return "oid";
  return 0;
}

/* Match the row REF (NEW or OLD) by rowid when the table has one and bRowid
** is set, else by key: "k1" OP REF."k1" AND ... (as schema.c). zAlias
** qualifies the table's columns when not NULL. */
static void ptAppendKeyMatch(sqlite3_str *s, const CtTable *p, const char *zAlias,
                             const char *zRef, const char *zOp, int bRowid){
  const char *zA = zAlias ? zAlias : "";
  const char *zDot = zAlias ? "." : "";
  const char *zRowid = !p->bWithoutRowid && bRowid ? ptRowidName(p) : 0;
  int i;
  if( zRowid ){
    sqlite3_str_appendf(s, "%s%s%s %s %s.%s", zA, zDot, zRowid, zOp, zRef, zRowid);
    return;
  }
  for(i=0; i<p->nPk; i++){
    const char *zCol = p->aCol[p->aiPk[i]].zName;
    sqlite3_str_appendf(s, "%s%s%s\"%w\" %s %s.\"%w\"", i ? " AND " : "", zA, zDot,
                        zCol, zOp, zRef, zCol);
  }
}

/* After a stamping UPDATE of NEW's row (layout 6): fail the statement when
** the UPDATE changed no row while the row is there, skipped by a BEFORE
** UPDATE trigger's RAISE(IGNORE), which would leave the change unstamped
** (as schema.c, ctAppendStampEnd). */
static void ptAppendStampCheck(sqlite3_str *s, const CtTable *p){
  sqlite3_str_appendf(s,
      "SELECT RAISE(ABORT, 'sqlite-ct: a BEFORE UPDATE trigger on table %q skipped"
      " sqlite-ct''s stamping of a changed row with RAISE(IGNORE), so the change would never"
      " reach a replica; declare that trigger BEFORE UPDATE OF the columns it is about')"
      " WHERE CASE WHEN changes() THEN 0 ELSE EXISTS(SELECT 1 FROM \"%w\" WHERE ",
      p->zName, p->zName);
  ptAppendKeyMatch(s, p, 0, "NEW", "=", 1);
  sqlite3_str_appendall(s, ") END;");
}

/* Delete the table's scratch rows, when zWhen holds: its victims ("T") and
** their key values ("T" || char(0) || ...), one range of the primary key. */
static void ptAppendVictimClear(sqlite3_str *s, const CtTable *p, const char *zWhen){
  sqlite3_str_appendf(s,
      "DELETE FROM __sysCtReplaceVictims WHERE __sysTName>=%Q"
      " AND __sysTName<%Q||char(1) AND (%s);", p->zName, p->zName, zWhen);
}

/* Key value i of the victim v, from its scratch row. */
static void ptAppendVictimValue(sqlite3_str *s, const CtTable *p, int i){
  sqlite3_str_appendf(s,
      "(SELECT x.__sysRK FROM __sysCtReplaceVictims AS x"
      " WHERE x.__sysTName=%Q||char(0)||%d||char(0)||v.__sysRK)", p->zName, i);
}

/*
** Remember the rows an OR REPLACE of NEW could delete (as schema.c): the row
** holding NEW's key and the rows holding NEW's values of a UNIQUE index;
** zExclude (NULL for an insert) matches the row being updated itself. Per
** victim one scratch row (T, text key, insert BSN) and one (T\0 i \0 text
** key, key value i) per key value that is not NULL. Two victims share a text
** key only when their keys hold NULLs, which only a rowid table whose key is
** not the rowid allows: its capture groups by text key (a sorter per
** statement, which the others save).
*/
static void ptAppendVictimCapture(sqlite3_str *s, const CtTable *p,
                                  sqlite3_int64 iEnable, const char *zExclude){
  const int bNullKeys = !p->bWithoutRowid && !p->bRowidAlias;
  int i, j;
  ptAppendVictimClear(s, p, "1");
  sqlite3_str_appendf(s,
      "INSERT INTO __sysCtReplaceVictims(__sysTName, __sysRK, __sysInsertTxCsn)"
      " SELECT CASE j.column1 WHEN 0 THEN %Q ELSE %Q||char(0)||(j.column1-1)||char(0)||c.rk END,"
      " CASE j.column1 WHEN 0 THEN c.rk", p->zName, p->zName);
  for(i=0; i<p->nPk; i++) sqlite3_str_appendf(s, " WHEN %d THEN c.v%d", i+1, i);
  sqlite3_str_appendall(s, " END, CASE j.column1 WHEN 0 THEN c.ins END FROM (SELECT ");
  if( bNullKeys ){
    sqlite3_str_appendall(s, "rk");
    for(i=0; i<p->nPk; i++) sqlite3_str_appendf(s, ", min(v%d) AS v%d", i, i);
    sqlite3_str_appendall(s, ", min(ins) AS ins FROM (SELECT ");
  }
  ptAppendEncodeKey(s, p, PT_ALIAS);
  sqlite3_str_appendall(s, " AS rk");
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(s, ", " PT_ALIAS ".\"%w\" AS v%d", p->aCol[p->aiPk[i]].zName, i);
  }
  sqlite3_str_appendf(s, ", coalesce(" PT_ALIAS "." PT_COL_INSERT ", %lld) AS ins"
                      " FROM \"%w\" AS " PT_ALIAS " WHERE ((", iEnable, p->zName);
  for(i=0; i<p->nPk; i++){
    const char *zCol = p->aCol[p->aiPk[i]].zName;
    sqlite3_str_appendf(s, "%s" PT_ALIAS ".\"%w\"=NEW.\"%w\"", i ? " AND " : "", zCol, zCol);
  }
  sqlite3_str_appendall(s, ")");
  for(i=0; i<p->nUnique; i++){
    const CtUnique *u = &p->aUnique[i];
    sqlite3_str_appendall(s, " OR (");
    for(j=0; j<u->nCol; j++){
      const char *zCol = p->aCol[u->aiCol[j]].zName;
      sqlite3_str_appendf(s, "%s" PT_ALIAS ".\"%w\"=NEW.\"%w\" COLLATE \"%w\"",
                          j ? " AND " : "", zCol, zCol, u->azColl[j]);
    }
    sqlite3_str_appendall(s, ")");
  }
  if( ctReplaceRowid(p) ){
    /* OR REPLACE through the rowid of a table keyed otherwise (schema.c) */
    sqlite3_str_appendf(s, " OR " PT_ALIAS ".%s=NEW.%s", ctReplaceRowid(p), ctReplaceRowid(p));
  }
  sqlite3_str_appendall(s, ")");
  if( zExclude ) sqlite3_str_appendf(s, " AND NOT (%s)", zExclude);
  if( bNullKeys ) sqlite3_str_appendall(s, ") GROUP BY rk");
  sqlite3_str_appendall(s, ") AS c, (VALUES(0)");
  for(i=0; i<p->nPk; i++) sqlite3_str_appendf(s, ",(%d)", i+1);
  /* No scratch row for a NULL key value (__sysRK is NOT NULL): the lookup
  ** reads a missing row as NULL. */
  sqlite3_str_appendall(s, ") AS j WHERE CASE j.column1 WHEN 0 THEN 1");
  for(i=0; i<p->nPk; i++) sqlite3_str_appendf(s, " WHEN %d THEN c.v%d IS NOT NULL", i+1, i);
  sqlite3_str_appendall(s, " END;");
}

/*
** Tombstones (delete BSN P) for the remembered rows that are gone, then clear
** the scratch rows; both only when zWhen holds (as schema.c: an AFTER UPDATE
** trigger sweeps only when a key or UNIQUE value changed, which is exactly
** when its own BEFORE UPDATE trigger captured). A remembered row is gone when
** its key is NEW's and zSameKeyGone holds (an insert replaced it; an update
** moved the row onto its key; "=": keys with a NULL never conflict), or when
** no row has its key any more: an index lookup of the key values kept in the
** scratch rows.
*/
static void ptAppendVictimSweep(sqlite3_str *s, const CtTable *p,
                                const char *zSameKeyGone, const char *zWhen){
  int i;
  sqlite3_str_appendf(s,
      PT_TOMBSTONE_COLS " SELECT %Q, v.__sysRK, " PT_P ", v.__sysInsertTxCsn, " PT_NOW
      ", NULL FROM __sysCtReplaceVictims AS v WHERE v.__sysTName=%Q AND (%s)"
      " AND (((%s)", p->zName, p->zName, zWhen, zSameKeyGone);
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendall(s, " AND ");
    ptAppendVictimValue(s, p, i);
    sqlite3_str_appendf(s, "=NEW.\"%w\"", p->aCol[p->aiPk[i]].zName);
  }
  sqlite3_str_appendf(s, ") OR NOT EXISTS(SELECT 1 FROM \"%w\" AS " PT_ALIAS " WHERE ",
                      p->zName);
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(s, "%s" PT_ALIAS ".\"%w\" IS ", i ? " AND " : "",
                        p->aCol[p->aiPk[i]].zName);
    ptAppendVictimValue(s, p, i);
  }
  sqlite3_str_appendall(s, "));");
  ptAppendVictimClear(s, p, zWhen);
}

/* A tombstone (delete BSN P) for the key of OLD, when zCond holds. */
static void ptAppendTombstone(sqlite3_str *s, const CtTable *p, sqlite3_int64 iEnable,
                              const char *zCond){
  sqlite3_str_appendf(s, PT_TOMBSTONE_COLS " SELECT %Q, ", p->zName);
  ptAppendEncodeKey(s, p, "OLD");
  sqlite3_str_appendf(s, ", " PT_P ", coalesce(OLD." PT_COL_INSERT ", %lld), " PT_NOW
                      ", NULL WHERE %s;", iEnable, zCond);
}

/* Log P when zCond holds (a tombstone or stamp carries it). */
static void ptAppendLogWhen(sqlite3_str *s, const char *zCond){
  sqlite3_str_appendf(s,
      "INSERT INTO __sysTxCommitSequence(__sysTxCsn, __sysTxBsn, __sysCommitTime)"
      " SELECT " PT_P ", " PT_P ", " PT_NOW " WHERE %s;", zCond);
}

/*
** A user statement gave a __sys column a value tracking would not write.
** Tracking writes P into __sysInsertTxBsn when inserts are tracked, P into
** __sysChangeTxBsn when inserts or updates are, and NULL into
** __sysTrackingContext; any other change is a lie.
*/
static void ptAppendLie(sqlite3_str *s, int eOpt){
  sqlite3_str_appendall(s, "((NEW." PT_COL_INSERT " IS NOT OLD." PT_COL_INSERT);
  if( eOpt & CT_TRACK_INSERT ){
    sqlite3_str_appendall(s, " AND NEW." PT_COL_INSERT " IS NOT " PT_P);
  }
  sqlite3_str_appendall(s, ") OR (NEW." PT_COL_CHANGE " IS NOT OLD." PT_COL_CHANGE);
  if( eOpt & (CT_TRACK_INSERT|CT_TRACK_UPDATE) ){
    sqlite3_str_appendall(s, " AND NEW." PT_COL_CHANGE " IS NOT " PT_P);
  }
  sqlite3_str_appendall(s,
      ") OR (NEW." PT_COL_CONTEXT " IS NOT OLD." PT_COL_CONTEXT
      " AND NEW." PT_COL_CONTEXT " IS NOT NULL))");
}

/* A composite key that accepts NULL (ctKeyAcceptsNull) refuses a row whose
** key holds one, as the native WHENs do: a replica cannot match it by key. */
static void ptAppendKeyNullGuard(sqlite3_str *s, const CtTable *p){
  int i;
  if( !ctKeyAcceptsNull(p) ) return;
  sqlite3_str_appendf(s, "SELECT RAISE(ABORT, 'sqlite-ct: NULL in the PRIMARY KEY of"
      " tracked table \"%q\"; a replica cannot match such a row by key: give every"
      " key column a value') WHERE ", p->zName);
  for(i=0; i<p->nPk; i++){
    sqlite3_str_appendf(s, "%sNEW.\"%w\" IS NULL", i ? " OR " : "", p->aCol[p->aiPk[i]].zName);
  }
  sqlite3_str_appendall(s, ";");
}

/*
** Refuse the write when the table has a UNIQUE index its victim capture does
** not know (created after the triggers): OR REPLACE through it would delete
** rows no tombstone records. The native WHENs ask C (state.c); pure SQL under
** trusted_schema=OFF cannot read pragma_index_list in a trigger, so this
** reads sqlite_schema: an index that is not one of those the table had when
** the triggers were installed, and whose SQL is missing (a UNIQUE constraint
** of a rebuilt table) or starts with CREATE UNIQUE (SQLite stores the first
** two keywords of a CREATE statement separated by a single space).
*/
static void ptAppendUniqueGuard(sqlite3_str *s, const CtTable *p){
  int i;
  sqlite3_str_appendf(s, "SELECT RAISE(ABORT, 'sqlite-ct: table \"%q\" has a UNIQUE index"
      " created after tracking began; run create_schema on it again so that OR REPLACE"
      " through it is tracked') WHERE EXISTS(SELECT 1 FROM"
      " sqlite_schema WHERE type='index' AND tbl_name=%Q AND (sql IS NULL OR sql LIKE"
      " 'create unique %%') AND name NOT GLOB '__sysct_*'", p->zName, p->zName);
  if( p->nIndex ){
    sqlite3_str_appendall(s, " AND name NOT IN (");
    for(i=0; i<p->nIndex; i++){
      sqlite3_str_appendf(s, "%s%Q", i ? ", " : "", p->azIndex[i]);
    }
    sqlite3_str_appendall(s, ")");
  }
  sqlite3_str_appendall(s, ");");
}

char *ctPortableTriggerSql(const CtTable *p, int eOpt, sqlite3_int64 iEnable){
  const char *zT = p->zName;
  /* Rows deleted by OR REPLACE must reach the tombstones (as schema.c). */
  const int bVictims = (eOpt & CT_TRACK_DELETE)!=0;
  sqlite3_str *s, *x;
  char *zChanged, *zWatched, *zExclude, *zCond;

  zChanged = ctAppended(ctAppendKeyChanged, p);
  zWatched = ctWatchedChangedSql(p);
  x = sqlite3_str_new(0);
  ptAppendKeyMatch(x, p, PT_ALIAS, "OLD", "IS", 1);
  zExclude = sqlite3_str_finish(x);
  zCond = sqlite3_mprintf("EXISTS(SELECT 1 FROM __sysOCSDeletedRows WHERE __sysTName=%Q"
                          " AND __sysDeleteTxBsn=" PT_P ")", zT);
  if( zChanged==0 || zWatched==0 || zExclude==0 || zCond==0 ){
    sqlite3_free(zChanged); sqlite3_free(zWatched);
    sqlite3_free(zExclude); sqlite3_free(zCond);
    return 0;
  }
  s = sqlite3_str_new(0);

  /* AFTER INSERT: tombstones for REPLACE victims, stamp, log. Without INSERT
  ** tracking the row keeps NULL stamps, as native (schema.c). */
  sqlite3_str_appendf(s,
      "CREATE TRIGGER main.\"__sysct_ai_%w\" AFTER INSERT ON \"%w\" BEGIN ", zT, zT);
  ptAppendKeyNullGuard(s, p);
  if( bVictims ) ptAppendUniqueGuard(s, p);
  if( bVictims ) ptAppendVictimSweep(s, p, "1", "1");
  if( eOpt & CT_TRACK_INSERT ){
    sqlite3_str_appendf(s,
        "UPDATE \"%w\" SET " PT_COL_INSERT "=" PT_P ", " PT_COL_CHANGE "=" PT_P ", "
        PT_COL_CONTEXT "=NULL WHERE ", zT);
    ptAppendKeyMatch(s, p, 0, "NEW", "=", 1);
    sqlite3_str_appendall(s, ";");
    ptAppendStampCheck(s, p);
    sqlite3_str_appendall(s, PT_LOG_SQL);
  }else if( bVictims ){
    ptAppendLogWhen(s, zCond);
  }else{
    sqlite3_str_appendall(s, "SELECT 1;");   /* a body is required */
  }
  sqlite3_str_appendall(s, " END;");

  /* AFTER UPDATE. Fires for a user statement that lies, changes the key or a
  ** UNIQUE value (a REPLACE may have removed a row), or (updates tracked)
  ** leaves the row not stamped with P; never for the stamping UPDATEs of
  ** these triggers, which stamp P and NULL. */
  sqlite3_str_appendf(s,
      "CREATE TRIGGER main.\"__sysct_au_%w\" AFTER UPDATE ON \"%w\" WHEN ", zT, zT);
  ptAppendLie(s, eOpt);
  sqlite3_str_appendf(s, " OR %s", bVictims ? zWatched : zChanged);
  if( eOpt & CT_TRACK_UPDATE ){
    sqlite3_str_appendall(s,
        " OR NEW." PT_COL_CHANGE " IS NOT " PT_P " OR NEW." PT_COL_CONTEXT " IS NOT NULL");
  }
  sqlite3_str_appendf(s,
      " BEGIN SELECT RAISE(ABORT, 'sqlite-ct: the __sys columns of table %q are"
      " written by change tracking only; leave them out of INSERT and UPDATE') WHERE ",
      zT);
  ptAppendLie(s, eOpt);
  sqlite3_str_appendall(s, ";");
  ptAppendKeyNullGuard(s, p);
  if( bVictims ) ptAppendUniqueGuard(s, p);
  if( eOpt & CT_TRACK_DELETE ){
    /* A key change is a delete of the old key plus an insert of the new. */
    ptAppendTombstone(s, p, iEnable, zChanged);
  }
  /* Before the stamping UPDATE, so that no victims are pending while it runs. */
  if( bVictims ) ptAppendVictimSweep(s, p, zChanged, zWatched);
  sqlite3_str_appendf(s, "UPDATE \"%w\" SET " PT_COL_CONTEXT "=NULL", zT);
  if( eOpt & CT_TRACK_UPDATE ){
    sqlite3_str_appendall(s, ", " PT_COL_CHANGE "=" PT_P);
  }else if( eOpt & CT_TRACK_INSERT ){
    /* The row under its new key is an insert: without a change stamp in the
    ** window no enumeration would ever return it. */
    sqlite3_str_appendf(s, ", " PT_COL_CHANGE "=CASE WHEN %s THEN " PT_P " ELSE "
                        PT_COL_CHANGE " END", zChanged);
  }
  if( eOpt & CT_TRACK_INSERT ){
    /* The row under its new key counts as inserted now. */
    sqlite3_str_appendf(s, ", " PT_COL_INSERT "=CASE WHEN %s THEN " PT_P " ELSE "
                        PT_COL_INSERT " END", zChanged);
  }
  sqlite3_str_appendall(s, " WHERE ");
  ptAppendKeyMatch(s, p, 0, "NEW", "=", 1);
  sqlite3_str_appendall(s, ";");
  ptAppendStampCheck(s, p);
  if( eOpt & CT_TRACK_UPDATE ){
    sqlite3_str_appendall(s, PT_LOG_SQL);
  }else if( eOpt & CT_TRACK_INSERT ){
    char *z = sqlite3_mprintf("%s OR %s", zChanged, zCond);
    if( z ) ptAppendLogWhen(s, z);
    else ctStrOom(s);
    sqlite3_free(z);
  }else{
    ptAppendLogWhen(s, zCond);
  }
  sqlite3_str_appendall(s, " END;");

  /* AFTER DELETE: the tombstone; a row a REPLACE deleted (recursive_triggers
  ** on) leaves the scratch table, so the sweep does not write it again. */
  if( eOpt & CT_TRACK_DELETE ){
    sqlite3_str_appendf(s,
        "CREATE TRIGGER main.\"__sysct_ad_%w\" AFTER DELETE ON \"%w\" BEGIN ", zT, zT);
    ptAppendTombstone(s, p, iEnable, "1");
    sqlite3_str_appendf(s,
        "DELETE FROM __sysCtReplaceVictims WHERE __sysTName=%Q AND __sysRK=("
        "SELECT __sysRK FROM __sysOCSDeletedRows WHERE __sysTName=%Q"
        " AND __sysDeleteTxBsn=" PT_P ");", zT, zT);
    sqlite3_str_appendall(s, PT_LOG_SQL " END;");
  }

  /* BEFORE INSERT / UPDATE OF key and UNIQUE columns: remember the rows an OR
  ** REPLACE may delete. An update excludes the row itself (by rowid, or by key
  ** in a WITHOUT ROWID table). */
  if( bVictims ){
    sqlite3_str_appendf(s,
        "CREATE TRIGGER main.\"__sysct_bi_%w\" BEFORE INSERT ON \"%w\" BEGIN ", zT, zT);
    ptAppendVictimCapture(s, p, iEnable, 0);
    sqlite3_str_appendall(s, " END;");
    char *zCols = ctWatchedListSql(p);
    if( zCols==0 ) ctStrOom(s);
    sqlite3_str_appendf(s, "CREATE TRIGGER main.\"__sysct_bu_%w\" BEFORE UPDATE OF %s"
                        " ON \"%w\" BEGIN ", zT, zCols ? zCols : "", zT);
    sqlite3_free(zCols);
    ptAppendVictimCapture(s, p, iEnable, zExclude);
    sqlite3_str_appendall(s, " END;");
  }
  sqlite3_free(zChanged); sqlite3_free(zWatched);
  sqlite3_free(zExclude); sqlite3_free(zCond);
  return sqlite3_str_finish(s);
}
