/*
** keycodec.c -- the packed row key stored in __sysOCSDeletedRows.__sysRK.
**
** SQL SURFACE:
**   sqlite_ct_pack_key(V1, V2, ...)  -> BLOB   pack key values, in PRIMARY KEY order
**   sqlite_ct_unpack_key(RK, I)      -> value  the I-th (0-based) value of RK
**   sqlite_ct_key_count(RK)          -> INT    how many values RK holds
** unpack_key and key_count raise an error (SQLITE_CORRUPT) on a malformed key:
** short buffers, lengths running past the end, unknown type tags, wrong
** payload sizes for fixed-size types, trailing bytes. Never a crash, never a
** guess. An index out of range is an error too.
**
** FORMAT (SQL CE's PackTombstoneKey layout for TrackingKeyType.PrimaryKey,
** with a one-byte type tag added to each value because an SQLite column may
** hold any type; all integers little-endian):
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

void ctFuncPackKey(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3_int64 nByte = 4;
  unsigned char *aOut, *a;
  int i;
  if( argc<1 ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_pack_key() needs at least one value", -1);
    return;
  }
  for(i=0; i<argc; i++) nByte += 4 + ctFieldSize(argv[i]);
  if( nByte>sqlite3_limit(sqlite3_context_db_handle(ctx), SQLITE_LIMIT_LENGTH, -1) ){
    sqlite3_result_error_toobig(ctx);
    return;
  }
  aOut = sqlite3_malloc64(nByte);
  if( aOut==0 ){ sqlite3_result_error_nomem(ctx); return; }
  a = aOut;
  ctPut32(a, (sqlite3_uint64)argc); a += 4;
  for(i=0; i<argc; i++){
    sqlite3_value *v = argv[i];
    sqlite3_int64 nField = ctFieldSize(v);
    ctPut32(a, (sqlite3_uint64)nField); a += 4;
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
        if( z==0 && n>0 ){ sqlite3_free(aOut); sqlite3_result_error_nomem(ctx); return; }
        *a++ = CT_TAG_TEXT;
        if( n ) memcpy(a, z, n);
        a += n;
        break;
      }
      case SQLITE_BLOB: {
        const void *z = sqlite3_value_blob(v);
        int n = sqlite3_value_bytes(v);
        if( z==0 && n>0 ){ sqlite3_free(aOut); sqlite3_result_error_nomem(ctx); return; }
        *a++ = CT_TAG_BLOB;
        if( n ) memcpy(a, z, n);
        a += n;
        break;
      }
      default:
        *a++ = CT_TAG_NULL;
        break;
    }
    (void)nField;
  }
  sqlite3_result_blob64(ctx, aOut, (sqlite3_uint64)nByte, sqlite3_free);
}

/*
** Walk a packed key. Returns SQLITE_OK and sets *pnField when the whole key is
** well formed; when iWant>=0 also sets *ppField and *pnByte to that field (tag
** included). SQLITE_CORRUPT with *pzWhy set otherwise.
*/
static int ctKeyWalk(const unsigned char *a, sqlite3_int64 n, sqlite3_int64 iWant,
                     sqlite3_int64 *pnField, const unsigned char **ppField,
                     sqlite3_int64 *pnByte, const char **pzWhy){
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
    if( i==iWant ){ *ppField = a+off; *pnByte = nLen; }
    off += nLen;
  }
  if( off!=n ){ *pzWhy = "has trailing bytes"; return SQLITE_CORRUPT; }
  *pnField = nField;
  return SQLITE_OK;
}

static int ctKeyArg(sqlite3_context *ctx, sqlite3_value *v, sqlite3_int64 iWant,
                    sqlite3_int64 *pnField, const unsigned char **ppField,
                    sqlite3_int64 *pnByte){
  const char *zWhy = 0;
  int rc;
  if( sqlite3_value_type(v)!=SQLITE_BLOB ){
    sqlite3_result_error(ctx, "sqlite-ct: malformed tombstone key: not a BLOB", -1);
    sqlite3_result_error_code(ctx, SQLITE_CORRUPT);
    return SQLITE_CORRUPT;
  }
  rc = ctKeyWalk(sqlite3_value_blob(v), sqlite3_value_bytes(v), iWant,
                 pnField, ppField, pnByte, &zWhy);
  if( rc!=SQLITE_OK ){
    char *z = sqlite3_mprintf("sqlite-ct: malformed tombstone key: it %s", zWhy);
    if( z==0 ){ sqlite3_result_error_nomem(ctx); return SQLITE_NOMEM; }
    sqlite3_result_error(ctx, z, -1);
    sqlite3_result_error_code(ctx, SQLITE_CORRUPT);
    sqlite3_free(z);
  }
  return rc;
}

void ctFuncKeyCount(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3_int64 nField = 0, nByte = 0;
  const unsigned char *pField = 0;
  (void)argc;
  if( ctKeyArg(ctx, argv[0], -1, &nField, &pField, &nByte)!=SQLITE_OK ) return;
  sqlite3_result_int64(ctx, nField);
}

void ctFuncUnpackKey(sqlite3_context *ctx, int argc, sqlite3_value **argv){
  sqlite3_int64 nField = 0, nByte = 0, iWant;
  const unsigned char *p = 0;
  (void)argc;
  if( sqlite3_value_type(argv[1])!=SQLITE_INTEGER ){
    sqlite3_result_error(ctx, "sqlite-ct: sqlite_ct_unpack_key(): the index must be an integer", -1);
    return;
  }
  iWant = sqlite3_value_int64(argv[1]);
  if( ctKeyArg(ctx, argv[0], iWant, &nField, &p, &nByte)!=SQLITE_OK ) return;
  if( iWant<0 || iWant>=nField ){
    char *z = sqlite3_mprintf(
        "sqlite-ct: sqlite_ct_unpack_key(): index %lld is out of range; the key holds %lld value%s",
        iWant, nField, nField==1 ? "" : "s");
    if( z==0 ){ sqlite3_result_error_nomem(ctx); return; }
    sqlite3_result_error(ctx, z, -1);
    sqlite3_free(z);
    return;
  }
  switch( p[0] ){
    case CT_TAG_INTEGER:
      sqlite3_result_int64(ctx, (sqlite3_int64)ctGet64(p+1));
      break;
    case CT_TAG_REAL: {
      sqlite3_uint64 u = ctGet64(p+1);
      double r;
      memcpy(&r, &u, 8);
      sqlite3_result_double(ctx, r);
      break;
    }
    case CT_TAG_TEXT:
      sqlite3_result_text64(ctx, (const char*)p+1, (sqlite3_uint64)(nByte-1),
                            SQLITE_TRANSIENT, SQLITE_UTF8);
      break;
    case CT_TAG_BLOB:
      sqlite3_result_blob64(ctx, p+1, (sqlite3_uint64)(nByte-1), SQLITE_TRANSIENT);
      break;
    default:
      sqlite3_result_null(ctx);
      break;
  }
}
