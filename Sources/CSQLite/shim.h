#ifndef ONDEMAND_CSQLITE_SHIM_H
#define ONDEMAND_CSQLITE_SHIM_H
#include <sqlite3.h>

/// SQLITE_TRANSIENT is a function-pointer-cast macro Swift cannot import: exported here as a function.
static inline sqlite3_destructor_type csqlite_transient(void) { return SQLITE_TRANSIENT; }

#endif
