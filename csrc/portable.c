/*
** portable.c -- pure-SQL triggers for tables tracked in portable mode.
** (Placeholder while portable mode is being written: refuses the mode.)
*/
#include "sqlite_ct.h"

char *ctPortableTriggerSql(const CtTable *p, int eOpt, sqlite3_int64 iEnable){
  (void)eOpt; (void)iEnable;
  return sqlite3_mprintf(
      "SELECT RAISE(ABORT, 'sqlite-ct: portable mode is not available in this build (table %q)')",
      p->zName);
}
