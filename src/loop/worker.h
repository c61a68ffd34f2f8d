/* src/loop/worker.h - the worker pool that runs blocking engine calls off the loop thread. */
#ifndef KEEL_LOOP_WORKER_H
#define KEEL_LOOP_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <keel/loop.h>

/*
 * Threads (started lazily) that run jobs; each job's done callback is then called on the loop
 * thread, woken through an eventfd watched on the loop. This is the only place keel starts
 * threads.
 *
 * Jobs come in classes, each with a queue and threads of its own, so that jobs of one class
 * can never keep another class waiting: a host name lookup or a cancel request stuck on a
 * silent server does not hold up SQLite statements or new connections.
 *
 * A job may have a deadline. A job still running past its deadline (stuck in a blocking
 * library call) stops counting against its class's thread limit: the next job of the class
 * gets a thread of its own, up to KEEL__WORKERS_MAX_THREADS threads in all. The job itself
 * cannot be stopped: it runs to its end, and its requester, which gave up on it at the same
 * deadline, lets it free itself (each requester keeps its own timer for that).
 */
typedef struct keel__workers keel__workers;

typedef enum keel__job_class {
    /* A connection's own blocking calls (SQLite statements, libmongoc commands), one at a
     * time per connection; as many threads as the db has connections of blocking engines. */
    KEEL__JOB_ENGINE = 0,
    /* What a new connection waits for: host name lookups, blocking TLS handshakes. */
    KEEL__JOB_CONNECT = 1,
    /* Requests that stop a statement (MySQL's KILL QUERY, MongoDB's killOp), each on a
     * short-lived connection of its own. */
    KEEL__JOB_CANCEL = 2
} keel__job_class;

#define KEEL__JOB_CLASSES 3
/* Threads of the CONNECT and of the CANCEL class, past which their jobs queue. */
#define KEEL__WORKERS_CLASS_THREADS 4
/* Threads in all, overdue ones included: the limit of what stuck library calls may hold. */
#define KEEL__WORKERS_MAX_THREADS 64
/* How long keel__workers_free waits for jobs of the ENGINE class. */
#define KEEL__WORKERS_CLOSE_WAIT_MS 2000

/* Runs on a worker thread: must not touch loop-owned state. */
typedef void (*keel__job_run)(void *arg);
/* Runs on the loop thread after run returned. */
typedef void (*keel__job_done)(void *arg);
/*
 * Runs instead of done when the pool was freed before the job's end could be delivered: on the
 * worker thread, after run returned (or in place of it, see keel__workers_free). It frees what
 * arg owns and must touch nothing else: the loop and the db are gone.
 */
typedef void (*keel__job_drop)(void *arg);

/* What keel__workers_submit queues; copied. */
typedef struct keel__job {
    keel__job_class cls;
    int64_t deadline_ms; /* keel_now_ms clock; < 0: none */
    keel__job_run run;
    keel__job_done done; /* NULL: nothing to do on the loop thread */
    keel__job_drop drop; /* NULL: arg owns nothing */
    void *arg;
} keel__job;

/*
 * A pool whose ENGINE class has up to engine_threads threads (at least one). NULL when out of
 * memory or when the eventfd cannot be created or watched. Never blocks.
 */
keel__workers *keel__workers_new(keel_loop *loop, size_t engine_threads);

/*
 * Queues a job; jobs of one class start in submission order as threads of the class become
 * free. Returns 0, or -1 when out of memory or no thread could be started (then neither
 * callback runs). Loop thread only; also legal from done callbacks that keel__workers_free
 * runs.
 */
int keel__workers_submit(keel__workers *w, const keel__job *job);

/*
 * A lane: one thread of its own that runs the jobs submitted to it, one at a time and in
 * order, for a connection whose engine blocks (MongoDB's). A connection with a lane never
 * waits for a thread: however many connections are busy at once, each has its thread, and no
 * class's limit applies. Its jobs count as the ENGINE class's for keel__workers_free (waited
 * for, then dropped), and their done callbacks run on the loop thread like any job's.
 */
typedef struct keel__lane keel__lane;

/*
 * Starts a lane's thread. NULL when out of memory, when the thread cannot be started or the
 * pool is being freed: the caller may then submit its jobs to the ENGINE class instead. Loop
 * thread only.
 */
keel__lane *keel__lane_new(keel__workers *w);

/*
 * Queues a job on the lane (job->cls and job->deadline_ms are ignored: a lane's thread is its
 * own). Returns 0, or -1 when out of memory or the lane was released (then neither callback
 * runs). Loop thread only; also legal from done callbacks that keel__workers_free runs.
 */
int keel__lane_submit(keel__lane *l, const keel__job *job);

/*
 * Gives the lane up: its thread runs the jobs still queued, delivers them as usual and ends.
 * The lane must not be used afterwards. Any thread (also from a job's drop callback on the
 * lane's own thread). Accepts NULL.
 */
void keel__lane_release(keel__lane *l);

/* Jobs queued or running, whose done callback has not run yet. */
size_t keel__workers_pending(const keel__workers *w);

/*
 * Frees the pool. Waits up to KEEL__WORKERS_CLOSE_WAIT_MS for the jobs of the ENGINE class and
 * of lanes, queued or running (a connection's last statement, or its close), and calls the done
 * callback
 * of every job that finished by then, from inside this call. It never waits for jobs of the
 * other classes. Jobs still queued or running after that are left to the threads, which go on
 * in the background, call drop instead of done, and exit when their queues are empty; the last
 * one frees what remains of the pool. Blocks at most that long. Accepts NULL.
 */
void keel__workers_free(keel__workers *w);

#endif
