/* src/engines/mysql/bulk.h - MySQL batches: MariaDB bulk execution of parameter arrays, atomic. */
#ifndef KEEL_ENGINES_MYSQL_BULK_H
#define KEEL_ENGINES_MYSQL_BULK_H

#include "engines/mysql/mysql.h"

/*
 * Binds rows [ra, rb) and starts their execution. A batch asked to stop starts no further
 * range: a KILL QUERY that lands between two executions stops nothing on the server.
 */
int keel__my_batch_exec(my_impl *p);

/* The statement is prepared: the first range runs, wrapped when more are to follow. */
int keel__my_batch_start(my_impl *p);

/* The running range of the batch succeeded: runs the next one, or ends the batch. */
int keel__my_batch_next(my_impl *p);

/*
 * A range of rows failed. An execution is one statement, which InnoDB undoes as a whole, so
 * the failing row is found by running the two halves in turn (the first half that fails is
 * split again): a few extra round trips, only when a batch fails.
 */
int keel__my_batch_failed(my_impl *p);

#endif
