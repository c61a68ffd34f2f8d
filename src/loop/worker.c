/* src/loop/worker.c - the worker pool: blocking jobs on threads, completions on the loop thread. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "loop/loop_int.h"
#include "loop/worker.h"

typedef struct job {
    keel__job j;
    struct job *next;
} job;

/* A FIFO of jobs linked through next. */
typedef struct job_queue {
    job *head, *tail;
    size_t n;
} job_queue;

/*
 * One thread. A class's thread serves its class for its whole life; a lane's thread runs only
 * the jobs of the lane's own queue (a lane is the record of its thread). Everything but w, tid
 * and lane is under the pool's lock.
 */
struct keel__lane {
    keel__workers *w;
    pthread_t tid;
    keel__job_class cls;
    int lane;
    const job *running; /* the job it runs, if any */
    /* keel__workers_free joined or detached it: it must not detach itself when it ends. */
    int claimed;
    /* A lane's own: its jobs, the signal that one was queued (or the lane released or
     * orphaned), and whether its owner gave it up (the thread ends once its queue is empty). */
    job_queue own;
    pthread_cond_t own_wake;
    int released;
    struct keel__lane *prev, *next;
};
typedef struct keel__lane worker;

typedef struct job_class {
    job_queue queued;
    pthread_cond_t wake; /* signalled when a job of the class is queued, and when orphaned */
    size_t nthreads, idle;
    size_t max; /* threads the class may have, overdue ones not counted */
} job_class;

/*
 * The pool lives as long as its loop side (until keel__workers_free) or any of its threads,
 * whichever is last: refs counts them, and whoever drops the last reference frees it. Free
 * joins the threads that have nothing left to do, so that they are gone (with their
 * thread-local state, such as OpenSSL's) when it returns, and detaches the others, so that a
 * thread stuck in a blocking call never holds it up.
 */
struct keel__workers {
    /* Loop thread only. */
    keel_loop *loop;
    keel_watch *watch; /* the eventfd, readable when finished jobs wait for done() */
    keel_timer *timer; /* re-examines classes whose queued jobs wait behind overdue ones */
    size_t pending;    /* submitted jobs whose done() has not run */
    /* Shared: everything below is guarded by lock (efd is written outside it, see below). */
    pthread_mutex_t lock;
    pthread_cond_t settled; /* a job finished while closing (CLOCK_MONOTONIC) */
    job_class cls[KEEL__JOB_CLASSES];
    job_queue finished;
    worker *threads; /* every thread, lanes included */
    size_t nthreads; /* the threads of the classes (lanes are not counted) */
    size_t refs;
    int closing;  /* keel__workers_free is waiting for the ENGINE class */
    int orphaned; /* the loop side is gone: jobs end with drop, idle threads exit */
    int efd;
};

static void queue_push(job_queue *q, job *j) {
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->n++;
}

static job *queue_pop(job_queue *q) {
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
    }
    return j;
}

/* Frees what is left once nothing refers to the pool any more. */
static void pool_destroy(keel__workers *w) {
    for (int c = 0; c < KEEL__JOB_CLASSES; c++) {
        /* Only jobs no thread could take are left (see keel__workers_submit): dropped. */
        job *j;
        while ((j = queue_pop(&w->cls[c].queued))) {
            if (j->j.drop)
                j->j.drop(j->j.arg);
            free(j);
        }
        pthread_cond_destroy(&w->cls[c].wake);
    }
    close(w->efd);
    pthread_cond_destroy(&w->settled);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static void *worker_main(void *arg) {
    worker *t = arg;
    keel__workers *w = t->w;
    job_class *pc = &w->cls[t->cls];
    job_queue *queue = t->lane ? &t->own : &pc->queued;
    pthread_cond_t *wake = t->lane ? &t->own_wake : &pc->wake;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        job *j = queue_pop(queue);
        if (!j) {
            if (w->orphaned || t->released)
                break;
            if (!t->lane)
                pc->idle++;
            pthread_cond_wait(wake, &w->lock);
            if (!t->lane)
                pc->idle--;
            continue;
        }
        t->running = j;
        pthread_mutex_unlock(&w->lock);
        j->j.run(j->j.arg);
        pthread_mutex_lock(&w->lock);
        t->running = NULL;
        if (w->orphaned) {
            pthread_mutex_unlock(&w->lock);
            if (j->j.drop)
                j->j.drop(j->j.arg);
            free(j);
            pthread_mutex_lock(&w->lock);
            continue;
        }
        int was_empty = w->finished.head == NULL;
        queue_push(&w->finished, j);
        if (w->closing)
            pthread_cond_broadcast(&w->settled);
        if (was_empty) {
            /* One wake-up per batch: the loop drains every finished job when it reads. The
             * write happens outside the lock, so that the loop thread it wakes does not block
             * on the lock at once; a drain that runs before the write only makes the wake-up
             * find nothing, and a job pushed meanwhile is covered by this same write. The
             * eventfd stays open as long as this thread holds its reference. */
            pthread_mutex_unlock(&w->lock);
            uint64_t one = 1;
            ssize_t rc = write(w->efd, &one, sizeof one);
            (void)rc; /* the counter cannot overflow with one write per batch */
            pthread_mutex_lock(&w->lock);
        }
    }
    if (t->prev)
        t->prev->next = t->next;
    else
        w->threads = t->next;
    if (t->next)
        t->next->prev = t->prev;
    if (!t->lane) {
        pc->nthreads--;
        w->nthreads--;
    }
    /* A lane released before the pool is freed ends on its own: nobody will join it. Unlinked
     * above, it is out of keel__workers_free's reach from here on. */
    int detach = !t->claimed;
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (t->lane)
        pthread_cond_destroy(&t->own_wake);
    if (detach)
        pthread_detach(pthread_self());
    free(t);
    if (last)
        pool_destroy(w);
    return NULL;
}

/* Under the lock: threads of class c running a job past its deadline. */
static size_t overdue_threads(const keel__workers *w, keel__job_class c, int64_t now) {
    size_t n = 0;
    for (const worker *t = w->threads; t; t = t->next)
        if (!t->lane && t->cls == c && t->running && t->running->j.deadline_ms >= 0 &&
            t->running->j.deadline_ms <= now)
            n++;
    return n;
}

/* Under the lock: whether class c has queued jobs that no idle thread will take, and room for
 * another thread. */
static int wants_thread(const keel__workers *w, keel__job_class c, int64_t now) {
    const job_class *pc = &w->cls[c];
    if (pc->queued.n <= pc->idle || w->nthreads >= KEEL__WORKERS_MAX_THREADS)
        return 0;
    return pc->nthreads - overdue_threads(w, c, now) < pc->max;
}

/* Under the lock: starts the thread of t, filled in by the caller, and links it. 0, or -1 when
 * it could not be started. */
static int start(keel__workers *w, worker *t) {
    t->w = w;
    if (pthread_create(&t->tid, NULL, worker_main, t) != 0)
        return -1;
    /* The new thread blocks on the lock held here until the record is linked. */
    t->next = w->threads;
    if (w->threads)
        w->threads->prev = t;
    w->threads = t;
    w->refs++;
    return 0;
}

/* Under the lock: starts a thread for class c. 0, or -1 when it could not be started. */
static int start_thread(keel__workers *w, keel__job_class c) {
    worker *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->cls = c;
    if (start(w, t) != 0) {
        free(t);
        return -1;
    }
    w->cls[c].nthreads++;
    w->nthreads++;
    return 0;
}

/*
 * Under the lock: starts the threads that queued jobs may have, and returns the earliest
 * deadline, still ahead, of a job whose passing would let a waiting class start another thread
 * (-1 when there is none).
 */
static int64_t rebalance(keel__workers *w) {
    int64_t now = keel_now_ms(), next = -1;
    for (int c = 0; c < KEEL__JOB_CLASSES; c++) {
        while (wants_thread(w, (keel__job_class)c, now))
            if (start_thread(w, (keel__job_class)c) != 0)
                break;
        if (w->cls[c].queued.n <= w->cls[c].idle)
            continue;
        for (const worker *t = w->threads; t; t = t->next)
            if (!t->lane && (int)t->cls == c && t->running && t->running->j.deadline_ms > now &&
                (next < 0 || t->running->j.deadline_ms < next))
                next = t->running->j.deadline_ms;
    }
    return next;
}

/* Loop thread: arms the timer for what rebalance found. */
static void arm_rebalance(keel__workers *w, int64_t deadline) {
    if (w->timer)
        keel__timer_arm(w->timer, deadline);
}

static void on_timer(void *arg) {
    keel__workers *w = arg;
    pthread_mutex_lock(&w->lock);
    int64_t next = rebalance(w);
    pthread_mutex_unlock(&w->lock);
    arm_rebalance(w, next);
}

/* Runs done() for the jobs of list, on the loop thread. */
static void deliver(keel__workers *w, job *list) {
    while (list) {
        job *j = list;
        list = j->next;
        w->pending--;
        keel__job_done done = j->j.done;
        void *arg = j->j.arg;
        free(j);
        if (done)
            done(arg);
    }
}

/* Runs done() for every finished job, on the loop thread. */
static void drain_finished(keel__workers *w) {
    pthread_mutex_lock(&w->lock);
    job *list = w->finished.head;
    w->finished.head = w->finished.tail = NULL;
    w->finished.n = 0;
    pthread_mutex_unlock(&w->lock);
    deliver(w, list);
}

static void on_eventfd(void *arg, int events) {
    keel__workers *w = arg;
    (void)events;
    uint64_t count;
    ssize_t rc = read(w->efd, &count, sizeof count);
    (void)rc; /* EAGAIN only means another drain already consumed the wake-up */
    drain_finished(w);
}

keel__workers *keel__workers_new(keel_loop *loop, size_t engine_threads) {
    keel__workers *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->loop = loop;
    w->refs = 1;
    w->cls[KEEL__JOB_ENGINE].max = engine_threads ? engine_threads : 1;
    w->cls[KEEL__JOB_CONNECT].max = KEEL__WORKERS_CLASS_THREADS;
    w->cls[KEEL__JOB_CANCEL].max = KEEL__WORKERS_CLASS_THREADS;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        free(w);
        return NULL;
    }
    int c = 0, settled = 0;
    pthread_condattr_t attr;
    int attr_ok = pthread_condattr_init(&attr) == 0;
    if (!attr_ok || pthread_mutex_init(&w->lock, NULL) != 0) {
        if (attr_ok)
            pthread_condattr_destroy(&attr);
        close(w->efd);
        free(w);
        return NULL;
    }
    /* free waits against keel_now_ms deadlines: the monotonic clock. */
    settled = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
              pthread_cond_init(&w->settled, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (settled)
        for (; c < KEEL__JOB_CLASSES; c++)
            if (pthread_cond_init(&w->cls[c].wake, NULL) != 0)
                break;
    if (settled && c == KEEL__JOB_CLASSES) {
        w->watch = keel__watch_new(loop, w->efd, on_eventfd, w);
        w->timer = keel__timer_new(loop, on_timer, w);
        if (w->watch && w->timer && keel__watch_set(w->watch, KEEL_READ) == 0)
            return w;
        keel__watch_free(w->watch);
        keel__timer_free(w->timer);
    }
    while (c-- > 0)
        pthread_cond_destroy(&w->cls[c].wake);
    if (settled)
        pthread_cond_destroy(&w->settled);
    pthread_mutex_destroy(&w->lock);
    close(w->efd);
    free(w);
    return NULL;
}

int keel__workers_submit(keel__workers *w, const keel__job *spec) {
    if ((unsigned)spec->cls >= KEEL__JOB_CLASSES || !spec->run)
        return -1;
    job *j = malloc(sizeof *j);
    if (!j)
        return -1;
    j->j = *spec;
    job_class *pc = &w->cls[spec->cls];
    pthread_mutex_lock(&w->lock);
    queue_push(&pc->queued, j);
    int64_t next = rebalance(w);
    int have_thread = pc->nthreads > 0;
    if (!have_thread) {
        /* No thread could start for the class: take the job back (it is the only one). */
        pc->queued.head = pc->queued.tail = NULL;
        pc->queued.n = 0;
    }
    pthread_mutex_unlock(&w->lock);
    if (!have_thread) {
        free(j);
        return -1;
    }
    /* Signalled after the unlock: a worker woken while the lock is still held would only block
     * on it again, one more context switch per job. The job is queued under the lock, so a
     * worker about to wait either sees it or is already waiting when the signal comes. */
    pthread_cond_signal(&pc->wake);
    w->pending++;
    arm_rebalance(w, next);
    return 0;
}

size_t keel__workers_pending(const keel__workers *w) { return w ? w->pending : 0; }

keel__lane *keel__lane_new(keel__workers *w) {
    worker *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    /* Its jobs are a connection's own calls: free waits for them as for the ENGINE class. */
    t->cls = KEEL__JOB_ENGINE;
    t->lane = 1;
    if (pthread_cond_init(&t->own_wake, NULL) != 0) {
        free(t);
        return NULL;
    }
    pthread_mutex_lock(&w->lock);
    int rc = w->orphaned ? -1 : start(w, t);
    pthread_mutex_unlock(&w->lock);
    if (rc != 0) {
        pthread_cond_destroy(&t->own_wake);
        free(t);
        return NULL;
    }
    return t;
}

int keel__lane_submit(keel__lane *l, const keel__job *spec) {
    keel__workers *w = l->w;
    if (!spec->run)
        return -1;
    job *j = malloc(sizeof *j);
    if (!j)
        return -1;
    j->j = *spec;
    j->j.cls = KEEL__JOB_ENGINE;
    pthread_mutex_lock(&w->lock);
    int refused = l->released || w->orphaned;
    if (!refused)
        queue_push(&l->own, j);
    pthread_mutex_unlock(&w->lock);
    if (refused) {
        free(j);
        return -1;
    }
    /* After the unlock, as in keel__workers_submit. The thread cannot be gone: it ends only
     * once the lane is released or the pool freed, and neither happens while its owner, on the
     * loop thread, submits. */
    pthread_cond_signal(&l->own_wake);
    w->pending++;
    return 0;
}

void keel__lane_release(keel__lane *l) {
    if (!l)
        return;
    keel__workers *w = l->w;
    pthread_mutex_lock(&w->lock);
    l->released = 1;
    /* Under the lock: once it is released, the thread may end (and destroy the condition) as
     * soon as the lock is free. */
    pthread_cond_signal(&l->own_wake);
    pthread_mutex_unlock(&w->lock);
}

/* Under the lock: whether a job of the ENGINE class or of a lane is queued or running. */
static int engine_busy(const keel__workers *w) {
    if (w->cls[KEEL__JOB_ENGINE].queued.n)
        return 1;
    for (const worker *t = w->threads; t; t = t->next)
        if ((t->cls == KEEL__JOB_ENGINE && t->running) || t->own.n)
            return 1;
    return 0;
}

void keel__workers_free(keel__workers *w) {
    if (!w)
        return;
    int64_t until = keel_now_ms() + KEEL__WORKERS_CLOSE_WAIT_MS;
    struct timespec ts = { (time_t)(until / 1000), (long)(until % 1000) * 1000000L };
    /* No thread is started for overdue jobs any more: the wait below is bounded anyway. */
    keel__timer_free(w->timer);
    w->timer = NULL;
    pthread_mutex_lock(&w->lock);
    w->closing = 1;
    for (;;) {
        if (w->finished.head) {
            job *list = w->finished.head;
            w->finished.head = w->finished.tail = NULL;
            w->finished.n = 0;
            pthread_mutex_unlock(&w->lock);
            deliver(w, list);
            pthread_mutex_lock(&w->lock);
            continue;
        }
        if (!engine_busy(w) || keel_now_ms() >= until)
            break;
        pthread_cond_timedwait(&w->settled, &w->lock, &ts);
    }
    /* From here on the threads end their jobs with drop, and exit once their queue is empty. */
    w->orphaned = 1;
    for (int c = 0; c < KEEL__JOB_CLASSES; c++)
        pthread_cond_broadcast(&w->cls[c].wake);
    /* A thread without a job and without queued work exits at once: it is joined. One with a
     * job may be stuck in it: it is detached. */
    size_t nall = 0;
    for (worker *t = w->threads; t; t = t->next) {
        if (t->lane)
            pthread_cond_signal(&t->own_wake);
        nall++;
    }
    pthread_t *idle = malloc((nall ? nall : 1) * sizeof *idle);
    size_t nidle = 0;
    for (worker *t = w->threads; t; t = t->next) {
        size_t queued = t->lane ? t->own.n : w->cls[t->cls].queued.n;
        t->claimed = 1;
        if (idle && !t->running && queued == 0)
            idle[nidle++] = t->tid;
        else
            pthread_detach(t->tid);
    }
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < nidle; i++)
        pthread_join(idle[i], NULL);
    free(idle);
    keel__watch_free(w->watch);
    w->watch = NULL;
    pthread_mutex_lock(&w->lock);
    int last = --w->refs == 0;
    pthread_mutex_unlock(&w->lock);
    if (last)
        pool_destroy(w);
}
