/* src/core/db_int.h - what pools and connections need from their keel_db. */
#ifndef KEEL_CORE_DB_INT_H
#define KEEL_CORE_DB_INT_H

#include <keel/db.h>
#include "loop/worker.h"

/* The db's worker pool, started on first use; NULL when it cannot be created. */
keel__workers *keel__db_workers(keel_db *db);

/* True (1) once keel_db_close was called on db, even while that close waits to run. */
int keel__db_closing(const keel_db *db);

#endif
