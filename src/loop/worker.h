/* src/loop/worker.h - the worker pool that runs blocking engine calls off the loop thread. */
#ifndef KEEL_LOOP_WORKER_H
#define KEEL_LOOP_WORKER_H

#include <stddef.h>
#include <keel/loop.h>

/*
 * A fixed set of threads (started lazily, up to max_threads) that run jobs; each job's done
 * callback is then called on the loop thread, woken through an eventfd watched on the loop. This
 * is the only place keel starts threads.
 */
typedef struct keel__workers keel__workers;

/* Runs on a worker thread: must not touch loop-owned state. */
typedef void (*keel__job_run)(void *arg);
/* Runs on the loop thread after run returned. */
typedef void (*keel__job_done)(void *arg);

/* NULL when out of memory or when the eventfd cannot be created or watched. Never blocks. */
keel__workers *keel__workers_new(keel_loop *loop, size_t max_threads);

/*
 * Queues a job; jobs run in submission order per thread availability. Returns 0, or -1 when out
 * of memory or the pool is shutting down (then neither callback runs).
 */
int keel__workers_submit(keel__workers *w, keel__job_run run, keel__job_done done, void *arg);

/* Jobs queued or running, whose done callback has not run yet. */
size_t keel__workers_pending(const keel__workers *w);

/*
 * Waits for queued and running jobs to finish, calls their done callbacks, joins the threads and
 * frees. Blocks until running jobs finish. Accepts NULL.
 */
void keel__workers_free(keel__workers *w);

#endif
