/*
** keycodec.c -- the packed row key stored in __sysOCSDeletedRows.__sysRK.
**
** SQL SURFACE:
**   sqlite_ct_pack_key(V1, V2, ...)  -> BLOB   pack key values, in PRIMARY KEY order
**   sqlite_ct_unpack_key(RK, I)      -> value  the I-th (0-based) value of RK
**   sqlite_ct_key_count(RK)          -> INT    how many values RK holds
** A key has two forms: the binary form (a BLOB), which pack_key writes and the
** native triggers store, and the text form (TEXT), which the pure-SQL triggers
** of portable mode store because pure SQL on SQLite < 3.41 cannot build a
** binary (no unhex()). One table always uses one form: all its writers run
** the same triggers, so GROUP BY __sysRK groups the same key. unpack_key and
** key_count accept both and return identical values, with one exception: the
** text form cannot tell -0.0 from 0.0 (pure SQL cannot see the sign of a
** zero), so a -0.0 key comes back as 0.0, the same key for SQLite.
** unpack_key and key_count raise an error (SQLITE_ERROR, not SQLITE_CORRUPT:
** the key is a value a user can pass, and SQLITE_CORRUPT from a function
** makes SQLite roll back the caller's whole transaction) on a malformed key:
** for the binary form short buffers, lengths running past the end,
** unknown type tags, wrong payload sizes for fixed-size types, trailing bytes;
** for the text form an empty key, unknown tags (any byte that is not part of
** the form), integers not written exactly as SQLite prints them or outside
** the int64 range, REAL fields that are not 16 upper-case hex digits or are a
** NaN, hex fields of odd length (or, for UTF-16, not whole code units).
** Never a crash, never a guess. An index out of range is an error too, and so
** is a key that is neither a BLOB nor TEXT.
**
** FORMAT, binary form (SQL CE's PackTombstoneKey layout for
** TrackingKeyType.PrimaryKey, with a one-byte type tag added to each value
** because an SQLite column may hold any type; all integers little-endian):
**
**   key   := u32 count, count x field            (count >= 1)
**   field := u32 length, then length bytes: tag payload   (length >= 1)
**   tag 0x01 INTEGER  payload: 8 bytes, two's complement int64
**   tag 0x02 REAL     payload: 8 bytes, IEEE-754 binary64
**   tag 0x03 TEXT     payload: the UTF-8 bytes, no terminator (NUL bytes kept)
**   tag 0x04 BLOB     payload: the raw bytes
**   tag 0x05 NULL     payload: none (rowid tables allow NULL in non-integer keys)
**
** Example: the integer key 7 packs to
**   01 00 00 00  09 00 00 00  01  07 00 00 00 00 00 00 00
**
** FORMAT, text form (ASCII; one field per key value, in key order, no
** separators: a field starts with a lower-case tag letter, which no payload
** contains; what portable.c generates, in pure SQL, for each value X):
**
**   key   := field field ...             (at least one field, concatenated)
**   'i' INTEGER  payload: X in decimal, exactly as SQLite prints an integer
**                ('i' || X): optional '-', no leading zeros, no "-0",
**                within the int64 range
**   'r' REAL     payload: the IEEE-754 binary64 bits of X as exactly 16
**                upper-case hex digits, sign bit first (pure SQL computes
**                them with exact power-of-two arithmetic; a NaN pattern is
**                malformed; -0.0 is written as 0000000000000000)
**   't' TEXT     payload: hex(X), the UTF-8 bytes as upper-case hex digit
**                pairs (NUL bytes kept)
**   'u' TEXT     the same in a UTF-16le database, where hex(X) shows the
**                UTF-16le bytes (a multiple of 4 hex digits)
**   'v' TEXT     the same in a UTF-16be database
**   'b' BLOB     payload: hex(X), upper-case hex digit pairs
**   'n' NULL     payload: none
**
** Examples: the integer key 7 is "i7"; the key (7, 'ab') is "i7t6162"; the
** key 1.5 is "r3FF8000000000000"; the key (NULL, x'00FF') is "nb00FF".
*/
#include "sqlite_ct.h"
#include <string.h>

#define CT_TAG_INTEGER 1
#define CT_TAG_REAL    2
#define CT_TAG_TEXT    3
#define CT_TAG_BLOB    4
#define CT_TAG_NULL    5

static void ctPut32(unsigned char *a, sqlite3_uint64 v){
  int i;
  for(i=0; i<4; i++){ a[i] = (unsigned char)(v & 0xff); v >>= 8; }
}
static void ctPut64(unsigned char *a, sqlite3_uint64 v){
  int i;
  for(i=0; i<8; i++){ a[i] = (unsigned char)(v & 0xff); v >>= 8; }
}
static sqlite3_uint64 ctGet32(const unsigned char *a){
  return (sqlite3_uint64)a[0] | ((sqlite3_uint64)a[1]<<8)
       | ((sqlite3_uint64)a[2]<<16) | ((sqlite3_uint64)a[3]<<24);
}
static sqlite3_uint64 ctGet64(const unsigned char *a){
  sqlite3_uint64 v = 0;
  int i;
  for(i=7; i>=0; i--) v = (v<<8) | a[i];
  return v;
}

static sqlite3_int64 ctFieldSize(sqlite3_value *v){
  switch( sqlite3_value_type(v) ){
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:   return 1 + 8;
    case SQLITE_TEXT:    return 1 + (sqlite3_int64)sqlite3_value_bytes(v);
    case SQLITE_BLOB:    return 1 + (sqlite3_int64)sqlite3_value_bytes(v);
    default:             return 1;
  }
}

/* The size of the packed key of nVal values (ctPackInto). */
sqlite3_int64 ctPackSize(int nVal, sqlite3_value **apVal){
  sqlite3_int64 nByte = 4;
  int i;
  for(i=0; i<nVal; i++) nByte += 4 + ctFieldSize(apVal[i]);
  return nByte;
}

/*
** Write the packed key of nVal values (sqlite_ct_pack_key()'s format, which
** the write path also uses for the rows it captures, state.c) into aOut,
** ctPackSize() bytes. SQLITE_NOMEM (a TEXT or BLOB value that could not be
** read), or SQLITE_OK.
*/
int ctPackInto(int nVal, sqlite3_value **apVal, unsigned char *aOut){
  unsigned char *a = aOut;
  int i;
  ctPut32(a, (sqlite3_uint64)nVal); a += 4;
  for(i=0; i<nVal; i++){
    sqlite3_value *v = apVal[i];
    ctPut32(a, (sqlite3_uint64)ctFieldSize(v)); a += 4;
    switch( sqlite3_value_type(v) ){
      case SQLITE_INTEGER:
        *a++ = CT_TAG_INTEGER;
        ctPut64(a, (sqlite3_uint64)sqlite3_value_int64(v)); a += 8;
        break;
      case SQLITE_FLOAT: {
        double r = sqlite3_value_double(v);
        sqlite3_uint64 u;
        memcpy(&u, &r, 8);
        *a++ = CT_TAG_REAL;
        ctPut64(a, u); a += 8;
        break;
      }
      case SQLITE_TEXT: {
        const unsigned char *z = sqlite3_value_text(v);
        int n = sqlite3_value_bytes(v);
        if( z==0 && n>0 ) return SQLITE_NOMEM;
        *a++ = CT_TAG_TEXT;
        if( n ) memcpy(a, z, n);
        a += n;
        break;
      }
      case SQLITE_BLOB: {
        const void *z = sqlite3_value_blob(v);
        int n = sqlite3_value_bytes(v);
        if( z==0 && n>0 ) return SQLITE_NOMEM;
        *a++ = CT_TAG_BLOB;
        if( n ) memcpy(a, z, n);
        a += n;
        break;
      }
      default:
        *a++ = CT_TAG_NULL;
        break;
    }
  }
  return SQLITE_OK;
}

void ctFuncPackKey(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  unsigned char aBuf[128];
  sqlite3_int64 nByte;
  unsigned char *aOut;
  if( argc<1 ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_pack_key() needs at least one value", -1);
    return;
  }
  nByte = ctPackSize(argc, argv);
  if( nByte>sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1) ){
    sqlite3_result_error_toobig(ctx);
    return;
  }
  if( nByte<=(sqlite3_int64)sizeof(aBuf) ){
    /* A short key (the usual case: the DELETE trigger packs one per row)
    ** is built on the stack and copied by SQLite, without an allocation of
    ** its own. */
    if( ctPackInto(argc, argv, aBuf) ){ sqlite3_result_error_nomem(ctx); return; }
    sqlite3_result_blob(ctx, aBuf, (int)nByte, SQLITE_TRANSIENT);
    return;
  }
  aOut = sqlite3_malloc64(nByte);
  if( aOut==0 ){ sqlite3_result_error_nomem(ctx); return; }
  if( ctPackInto(argc, argv, aOut) ){
    sqlite3_free(aOut);
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_blob64(ctx, aOut, (sqlite3_uint64)nByte, sqlite3_free);
}

/*
** One value of a key, as ctKeyArg() finds it: where its payload is and how to
** read it. For the binary form cTag is a CT_TAG_* byte, for the text form the
** tag letter.
*/
typedef struct CtField CtField;
struct CtField {
  int bText;                  /* the key is in the text form */
  unsigned char cTag;
  const unsigned char *z;     /* payload */
  sqlite3_int64 n;            /* payload bytes */
};

/*
** Walk a binary key. Returns SQLITE_OK and sets *pnField when the whole key is
** well formed; when iWant>=0 also fills *pField with that field.
** SQLITE_CORRUPT with *pzWhy set otherwise.
*/
static int ctKeyWalk(const unsigned char *a, sqlite3_int64 n, sqlite3_int64 iWant,
                     sqlite3_int64 *pnField, CtField *pField, const char **pzWhy){
  sqlite3_int64 nField, i, off = 4;
  if( a==0 || n<4 ){ *pzWhy = "is shorter than its 4-byte header"; return SQLITE_CORRUPT; }
  nField = (sqlite3_int64)ctGet32(a);
  if( nField<1 ){ *pzWhy = "holds no values"; return SQLITE_CORRUPT; }
  for(i=0; i<nField; i++){
    sqlite3_int64 nLen;
    if( n-off<4 ){ *pzWhy = "ends inside a length prefix"; return SQLITE_CORRUPT; }
    nLen = (sqlite3_int64)ctGet32(a+off);
    off += 4;
    if( nLen<1 ){ *pzWhy = "has an empty field"; return SQLITE_CORRUPT; }
    if( nLen>n-off ){ *pzWhy = "has a field running past its end"; return SQLITE_CORRUPT; }
    switch( a[off] ){
      case CT_TAG_INTEGER:
      case CT_TAG_REAL:
        if( nLen!=9 ){ *pzWhy = "has a numeric field of the wrong size"; return SQLITE_CORRUPT; }
        break;
      case CT_TAG_NULL:
        if( nLen!=1 ){ *pzWhy = "has a NULL field with a payload"; return SQLITE_CORRUPT; }
        break;
      case CT_TAG_TEXT:
      case CT_TAG_BLOB:
        break;
      default:
        *pzWhy = "has an unknown type tag";
        return SQLITE_CORRUPT;
    }
    if( i==iWant ){
      pField->bText = 0;
      pField->cTag = a[off];
      pField->z = a+off+1;
      pField->n = nLen-1;
    }
    off += nLen;
  }
  if( off!=n ){ *pzWhy = "has trailing bytes"; return SQLITE_CORRUPT; }
  *pnField = nField;
  return SQLITE_OK;
}

/* ---- The text form. */

static int ctIsHexDigit(unsigned char c){
  return (c>='0' && c<='9') || (c>='A' && c<='F');
}
static unsigned int ctHexValue(unsigned char c){
  return c<='9' ? (unsigned int)(c-'0') : (unsigned int)(c-'A'+10);
}

/* The payload of an 'i' field, which must be exactly how SQLite prints an
** int64. Returns 0 when it is not. */
static int ctTextInteger(const unsigned char *z, sqlite3_int64 n, sqlite3_int64 *piOut){
  const sqlite3_uint64 mMax = (sqlite3_uint64)1<<63;   /* |INT64_MIN| */
  sqlite3_uint64 v = 0;
  sqlite3_int64 i = 0;
  int bNeg = 0;
  if( n>0 && z[0]=='-' ){ bNeg = 1; i = 1; }
  if( n-i<1 || n-i>19 ) return 0;            /* 19 digits always fit a u64 */
  if( z[i]=='0' && (n-i>1 || bNeg) ) return 0;
  for(; i<n; i++){
    if( z[i]<'0' || z[i]>'9' ) return 0;
    v = v*10 + (sqlite3_uint64)(z[i]-'0');
  }
  if( v>(bNeg ? mMax : mMax-1) ) return 0;
  if( bNeg ){
    *piOut = v==mMax ? (sqlite3_int64)(-9223372036854775807LL - 1) : -(sqlite3_int64)v;
  }else{
    *piOut = (sqlite3_int64)v;
  }
  return 1;
}

/* The 16 hex digits of an 'r' field. */
static sqlite3_uint64 ctTextBits(const unsigned char *z){
  sqlite3_uint64 u = 0;
  int i;
  for(i=0; i<16; i++) u = (u<<4) | ctHexValue(z[i]);
  return u;
}

/*
** Walk a text key, as ctKeyWalk() walks a binary one.
*/
static int ctTextKeyWalk(const unsigned char *z, sqlite3_int64 n, sqlite3_int64 iWant,
                         sqlite3_int64 *pnField, CtField *pField, const char **pzWhy){
  sqlite3_int64 off = 0, nField = 0;
  if( z==0 || n<1 ){ *pzWhy = "holds no values"; return SQLITE_CORRUPT; }
  while( off<n ){
    const unsigned char cTag = z[off++];
    const sqlite3_int64 iStart = off;
    switch( cTag ){
      case 'n':
        break;
      case 'i': {
        sqlite3_int64 iVal;
        if( off<n && z[off]=='-' ) off++;
        while( off<n && z[off]>='0' && z[off]<='9' ) off++;
        if( !ctTextInteger(z+iStart, off-iStart, &iVal) ){
          *pzWhy = "has a malformed integer field";
          return SQLITE_CORRUPT;
        }
        break;
      }
      case 'r': {
        sqlite3_uint64 u;
        while( off<n && ctIsHexDigit(z[off]) ) off++;
        if( off-iStart!=16 ){
          *pzWhy = "has a real field that is not 16 hex digits";
          return SQLITE_CORRUPT;
        }
        u = ctTextBits(z+iStart);
        if( ((u>>52) & 0x7ff)==0x7ff && (u & (((sqlite3_uint64)1<<52)-1))!=0 ){
          *pzWhy = "has a NaN real field";
          return SQLITE_CORRUPT;
        }
        break;
      }
      case 't':
      case 'b':
        while( off<n && ctIsHexDigit(z[off]) ) off++;
        if( (off-iStart) & 1 ){
          *pzWhy = "has a hex field of odd length";
          return SQLITE_CORRUPT;
        }
        break;
      case 'u':
      case 'v':
        while( off<n && ctIsHexDigit(z[off]) ) off++;
        if( (off-iStart) & 3 ){
          *pzWhy = "has a UTF-16 field of odd length";
          return SQLITE_CORRUPT;
        }
        break;
      default:
        *pzWhy = "has an unknown type tag";
        return SQLITE_CORRUPT;
    }
    if( nField==iWant ){
      pField->bText = 1;
      pField->cTag = cTag;
      pField->z = z+iStart;
      pField->n = off-iStart;
    }
    nField++;
  }
  *pnField = nField;
  return SQLITE_OK;
}

/* Validate the key RK (either form) and find its field iWant (when >= 0).
** On error, sets the function's result to the error and returns it. */
static int ctKeyArg(sqlite3_context *ctx, sqlite3_value *v, sqlite3_int64 iWant,
                    sqlite3_int64 *pnField, CtField *pField){
  const char *zWhy = 0;
  int rc;
  switch( sqlite3_value_type(v) ){
    case SQLITE_BLOB:
      rc = ctKeyWalk(sqlite3_value_blob(v), sqlite3_value_bytes(v), iWant,
                     pnField, pField, &zWhy);
      break;
    case SQLITE_TEXT: {
      const unsigned char *z = sqlite3_value_text(v);
      if( z==0 ){ sqlite3_result_error_nomem(ctx); return SQLITE_NOMEM; }
      rc = ctTextKeyWalk(z, sqlite3_value_bytes(v), iWant, pnField, pField, &zWhy);
      break;
    }
    default:
      sqlite3_result_error(ctx, "sqlite-ct: malformed tombstone key: not a BLOB or TEXT", -1);
      return SQLITE_CORRUPT;
  }
  if( rc!=SQLITE_OK ){
    char *z = sqlite3_mprintf("sqlite-ct: malformed tombstone key: it %s", zWhy);
    if( z==0 ){ sqlite3_result_error_nomem(ctx); return SQLITE_NOMEM; }
    sqlite3_result_error(ctx, z, -1);
    sqlite3_free(z);
  }
  return rc;
}

void ctFuncKeyCount(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3_int64 nField = 0;
  CtField f;
  (void)argc;
  memset(&f, 0, sizeof(f));
  if( ctKeyArg(ctx, argv[0], -1, &nField, &f)!=SQLITE_OK ) return;
  sqlite3_result_int64(ctx, nField);
}

/* Set the result to the hex payload of a 't', 'u', 'v' or 'b' field, decoded. */
static void ctResultHex(sqlite3_context *ctx, const CtField *f){
  sqlite3_int64 nByte = f->n/2, i;
  unsigned char *a = sqlite3_malloc64((sqlite3_uint64)nByte + 1);
  if( a==0 ){ sqlite3_result_error_nomem(ctx); return; }
  for(i=0; i<nByte; i++){
    a[i] = (unsigned char)((ctHexValue(f->z[2*i])<<4) | ctHexValue(f->z[2*i+1]));
  }
  if( f->cTag!='b' ){
    a[nByte] = 0;
    sqlite3_result_text64(ctx, (const char*)a, (sqlite3_uint64)nByte, sqlite3_free,
        f->cTag=='t' ? SQLITE_UTF8 : f->cTag=='u' ? SQLITE_UTF16LE : SQLITE_UTF16BE);
  }else{
    sqlite3_result_blob64(ctx, a, (sqlite3_uint64)nByte, sqlite3_free);
  }
}

static void ctResultDouble(sqlite3_context *ctx, sqlite3_uint64 u){
  double r;
  memcpy(&r, &u, 8);
  sqlite3_result_double(ctx, r);
}

void ctFuncUnpackKey(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3_int64 nField = 0, iWant;
  CtField f;
  (void)argc;
  memset(&f, 0, sizeof(f));
  if( sqlite3_value_type(argv[1])!=SQLITE_INTEGER ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_unpack_key(): the index must be an integer", -1);
    return;
  }
  iWant = sqlite3_value_int64(argv[1]);
  if( ctKeyArg(ctx, argv[0], iWant, &nField, &f)!=SQLITE_OK ) return;
  if( iWant<0 || iWant>=nField ){
    char *z = sqlite3_mprintf(
        "sqlite-ct: sqlite_ct_unpack_key(): index %lld is out of range; the key holds %lld value%s",
        iWant, nField, nField==1 ? "" : "s");
    if( z==0 ){ sqlite3_result_error_nomem(ctx); return; }
    sqlite3_result_error(ctx, z, -1);
    sqlite3_free(z);
    return;
  }
  if( f.bText ){
    switch( f.cTag ){
      case 'i': {
        sqlite3_int64 iVal = 0;
        ctTextInteger(f.z, f.n, &iVal);   /* validated by ctTextKeyWalk() */
        sqlite3_result_int64(ctx, iVal);
        break;
      }
      case 'r':
        ctResultDouble(ctx, ctTextBits(f.z));
        break;
      case 't':
      case 'u':
      case 'v':
      case 'b':
        ctResultHex(ctx, &f);
        break;
      default:
        sqlite3_result_null(ctx);
        break;
    }
    return;
  }
  switch( f.cTag ){
    case CT_TAG_INTEGER:
      sqlite3_result_int64(ctx, (sqlite3_int64)ctGet64(f.z));
      break;
    case CT_TAG_REAL:
      ctResultDouble(ctx, ctGet64(f.z));
      break;
    case CT_TAG_TEXT:
      sqlite3_result_text64(ctx, (const char*)f.z, (sqlite3_uint64)f.n,
                            SQLITE_TRANSIENT, SQLITE_UTF8);
      break;
    case CT_TAG_BLOB:
      sqlite3_result_blob64(ctx, f.z, (sqlite3_uint64)f.n, SQLITE_TRANSIENT);
      break;
    default:
      sqlite3_result_null(ctx);
      break;
  }
}
