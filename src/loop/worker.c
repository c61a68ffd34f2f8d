/* src/loop/worker.c - the worker pool: blocking jobs on threads, completions on the loop thread. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop/loop_int.h"
#include "loop/worker.h"

typedef struct job {
    keel__job_run run;
    keel__job_done done;
    void *arg;
    struct job *next;
} job;

/* A FIFO of jobs linked through next. */
typedef struct job_queue {
    job *head, *tail;
} job_queue;

struct keel__workers {
    keel_loop *loop;
    keel_watch *watch; /* the eventfd, readable when finished jobs wait for done() */
    int efd;
    size_t max_threads;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* signalled when a job is queued or on shutdown */
    job_queue queued;
    job_queue finished;
    size_t nthreads, idle_threads;
    pthread_t *threads;
    size_t pending; /* submitted jobs whose done() has not run; loop thread only */
    int shutting_down;
};

static void queue_push(job_queue *q, job *j) {
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static job *queue_pop(job_queue *q) {
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
    }
    return j;
}

static void *worker_main(void *arg) {
    keel__workers *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        job *j = queue_pop(&w->queued);
        if (!j) {
            if (w->shutting_down)
                break;
            w->idle_threads++;
            pthread_cond_wait(&w->wake, &w->lock);
            w->idle_threads--;
            continue;
        }
        pthread_mutex_unlock(&w->lock);
        j->run(j->arg);
        pthread_mutex_lock(&w->lock);
        int was_empty = w->finished.head == NULL;
        queue_push(&w->finished, j);
        if (was_empty) {
            /* One wake-up per batch: the loop drains every finished job when it reads. The
             * write happens outside the lock, so that the loop thread it wakes does not block
             * on the lock at once; a drain that runs before the write only makes the wake-up
             * find nothing, and a job pushed meanwhile is covered by this same write. */
            pthread_mutex_unlock(&w->lock);
            uint64_t one = 1;
            ssize_t rc = write(w->efd, &one, sizeof one);
            (void)rc; /* the counter cannot overflow with one write per batch */
            pthread_mutex_lock(&w->lock);
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* Runs done() for every finished job, on the loop thread. */
static void drain_finished(keel__workers *w) {
    pthread_mutex_lock(&w->lock);
    job *list = w->finished.head;
    w->finished.head = w->finished.tail = NULL;
    pthread_mutex_unlock(&w->lock);
    while (list) {
        job *j = list;
        list = j->next;
        w->pending--;
        keel__job_done done = j->done;
        void *arg = j->arg;
        free(j);
        if (done)
            done(arg);
    }
}

static void on_eventfd(void *arg, int events) {
    keel__workers *w = arg;
    (void)events;
    uint64_t count;
    ssize_t rc = read(w->efd, &count, sizeof count);
    (void)rc; /* EAGAIN only means another drain already consumed the wake-up */
    drain_finished(w);
}

keel__workers *keel__workers_new(keel_loop *loop, size_t max_threads) {
    keel__workers *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->loop = loop;
    w->max_threads = max_threads ? max_threads : 1;
    w->threads = calloc(w->max_threads, sizeof *w->threads);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!w->threads || w->efd < 0)
        goto fail;
    if (pthread_mutex_init(&w->lock, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&w->wake, NULL) != 0) {
        pthread_mutex_destroy(&w->lock);
        goto fail;
    }
    w->watch = keel__watch_new(loop, w->efd, on_eventfd, w);
    if (!w->watch || keel__watch_set(w->watch, KEEL_READ) != 0) {
        keel__watch_free(w->watch);
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        goto fail;
    }
    return w;
fail:
    if (w->efd >= 0)
        close(w->efd);
    free(w->threads);
    free(w);
    return NULL;
}

int keel__workers_submit(keel__workers *w, keel__job_run run, keel__job_done done, void *arg) {
    job *j = malloc(sizeof *j);
    if (!j)
        return -1;
    j->run = run;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->lock);
    if (w->shutting_down) {
        pthread_mutex_unlock(&w->lock);
        free(j);
        return -1;
    }
    queue_push(&w->queued, j);
    /* Start another thread only when no idle one can take the job. */
    if (w->idle_threads == 0 && w->nthreads < w->max_threads) {
        if (pthread_create(&w->threads[w->nthreads], NULL, worker_main, w) == 0)
            w->nthreads++;
    }
    int have_thread = w->nthreads > 0;
    if (!have_thread)
        w->queued.head = w->queued.tail = NULL; /* no thread could start: take the job back */
    pthread_mutex_unlock(&w->lock);
    if (!have_thread) {
        free(j);
        return -1;
    }
    /* Signalled after the unlock: a worker woken while the lock is still held would only block
     * on it again, one more context switch per job. The job is queued under the lock, so a
     * worker about to wait either sees it or is already waiting when the signal comes. */
    pthread_cond_signal(&w->wake);
    w->pending++;
    return 0;
}

size_t keel__workers_pending(const keel__workers *w) { return w ? w->pending : 0; }

void keel__workers_free(keel__workers *w) {
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->shutting_down = 1;
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->lock);
    /* Threads finish the queued jobs before they see the queue empty and exit. */
    for (size_t i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    drain_finished(w);
    keel__watch_free(w->watch);
    close(w->efd);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w->threads);
    free(w);
}
