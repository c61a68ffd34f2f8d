/* tests/c/loop/test_worker.c - the worker pool: jobs off the loop thread, completions on it. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "loop/worker.h"
#include "test.h"

#define NJOBS 2000

typedef struct job_state {
    pthread_t loop_thread;
    atomic_int ran;
    int done_count;
    int done_on_loop_thread;
    int done_flag;
    int ran_off_loop_thread[NJOBS];
    int values[NJOBS];
} job_state;

typedef struct job_arg {
    job_state *s;
    int index;
} job_arg;

static void job_run(void *arg) {
    job_arg *a = arg;
    a->s->ran_off_loop_thread[a->index] = !pthread_equal(pthread_self(), a->s->loop_thread);
    a->s->values[a->index] = a->index * 2;
    atomic_fetch_add(&a->s->ran, 1);
}

static void job_done(void *arg) {
    job_arg *a = arg;
    job_state *s = a->s;
    s->done_on_loop_thread += pthread_equal(pthread_self(), s->loop_thread) ? 1 : 0;
    if (++s->done_count == NJOBS)
        s->done_flag = 1;
}

TEST(jobs_run_on_workers_and_complete_on_the_loop) {
    static job_state s;
    static job_arg args[NJOBS];
    memset(&s, 0, sizeof s);
    s.loop_thread = pthread_self();
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 4);
    CHECK(w != NULL);
    for (int i = 0; i < NJOBS; i++) {
        args[i].s = &s;
        args[i].index = i;
        CHECK_INT(keel__workers_submit(w, job_run, job_done, &args[i]), 0);
    }
    CHECK_INT(keel_loop_run(loop, &s.done_flag), KEEL_OK);
    CHECK_INT(atomic_load(&s.ran), NJOBS);
    CHECK_INT(s.done_count, NJOBS);
    CHECK_INT(s.done_on_loop_thread, NJOBS);
    CHECK_INT(keel__workers_pending(w), 0);
    int off = 0, right = 0;
    for (int i = 0; i < NJOBS; i++) {
        off += s.ran_off_loop_thread[i];
        right += s.values[i] == i * 2;
    }
    CHECK_INT(off, NJOBS);
    CHECK_INT(right, NJOBS);
    keel__workers_free(w);
    keel_loop_free(loop);
}

static void slow_run(void *arg) {
    (void)arg;
    usleep(20000);
}

static void count_done(void *arg) { (*(int *)arg)++; }

TEST(free_waits_for_queued_jobs_and_runs_their_completions) {
    int completed = 0;
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 2);
    for (int i = 0; i < 6; i++)
        CHECK_INT(keel__workers_submit(w, slow_run, count_done, &completed), 0);
    CHECK_INT(keel__workers_pending(w), 6);
    keel__workers_free(w);
    CHECK_INT(completed, 6);
    keel_loop_free(loop);
    keel__workers_free(NULL);
}

int main(void) {
    RUN(jobs_run_on_workers_and_complete_on_the_loop);
    RUN(free_waits_for_queued_jobs_and_runs_their_completions);
    return TEST_SUMMARY();
}
