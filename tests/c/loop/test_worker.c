/* tests/c/loop/test_worker.c - the worker pool: jobs off the loop thread, completions on it. */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <keel/keel.h>

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
        keel__job job = {
            (keel__job_class)(i % KEEL__JOB_CLASSES), -1, job_run, job_done, NULL, &args[i]
        };
        CHECK_INT(keel__workers_submit(w, &job), 0);
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
    keel__job job = { KEEL__JOB_ENGINE, -1, slow_run, count_done, NULL, &completed };
    for (int i = 0; i < 6; i++)
        CHECK_INT(keel__workers_submit(w, &job), 0);
    CHECK_INT(keel__workers_pending(w), 6);
    keel__workers_free(w);
    CHECK_INT(completed, 6);
    keel_loop_free(loop);
    keel__workers_free(NULL);
}

/* A job that blocks until its gate opens, as a call stuck on a silent server does. */
typedef struct gate {
    atomic_int open;
    atomic_int entered;
    atomic_int left;
    atomic_int dropped;
    int done; /* done callbacks run */
    int want; /* all_done is set when done reaches it */
    int all_done;
} gate;

static void gate_run(void *arg) {
    gate *g = arg;
    atomic_fetch_add(&g->entered, 1);
    while (!atomic_load(&g->open))
        usleep(1000);
    atomic_fetch_add(&g->left, 1);
}

static void gate_done(void *arg) {
    gate *g = arg;
    if (++g->done == g->want)
        g->all_done = 1;
}

static void gate_drop(void *arg) { atomic_fetch_add(&((gate *)arg)->dropped, 1); }

static void set_flag(void *arg) { *(int *)arg = 1; }

/* Waits up to ms for *v to reach want (a thread of the pool moves it). */
static int wait_for(atomic_int *v, int want, int ms) {
    for (int i = 0; i < ms && atomic_load(v) < want; i++)
        usleep(1000);
    return atomic_load(v);
}

TEST(stuck_cancels_and_lookups_do_not_hold_up_other_classes) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    gate stuck;
    memset(&stuck, 0, sizeof stuck);
    /* More stuck cancel requests and lookups than their classes have threads. */
    for (int i = 0; i < KEEL__WORKERS_CLASS_THREADS + 2; i++) {
        keel__job cancel = { KEEL__JOB_CANCEL, -1, gate_run, gate_done, gate_drop, &stuck };
        keel__job lookup = { KEEL__JOB_CONNECT, -1, gate_run, gate_done, gate_drop, &stuck };
        CHECK_INT(keel__workers_submit(w, &cancel), 0);
        CHECK_INT(keel__workers_submit(w, &lookup), 0);
    }
    CHECK_INT(wait_for(&stuck.entered, 2 * KEEL__WORKERS_CLASS_THREADS, 5000),
              2 * KEEL__WORKERS_CLASS_THREADS);
    /* A statement of a blocking engine still runs at once. */
    int done = 0;
    keel__job stmt = { KEEL__JOB_ENGINE, -1, slow_run, set_flag, NULL, &done };
    CHECK_INT(keel__workers_submit(w, &stmt), 0);
    CHECK_INT(keel_loop_run(loop, &done), KEEL_OK);
    CHECK_INT(done, 1);
    CHECK_INT(atomic_load(&stuck.left), 0);
    /* Each class keeps to its own threads. */
    usleep(50000);
    CHECK_INT(atomic_load(&stuck.entered), 2 * KEEL__WORKERS_CLASS_THREADS);
    stuck.want = 2 * (KEEL__WORKERS_CLASS_THREADS + 2);
    atomic_store(&stuck.open, 1);
    CHECK_INT(keel_loop_run(loop, &stuck.all_done), KEEL_OK);
    CHECK_INT(stuck.done, stuck.want);
    keel__workers_free(w);
    CHECK_INT(atomic_load(&stuck.dropped), 0);
    keel_loop_free(loop);
}

TEST(a_job_past_its_deadline_gives_up_its_thread) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    gate stuck;
    memset(&stuck, 0, sizeof stuck);
    int64_t t0 = keel_now_ms();
    keel__job first = { KEEL__JOB_CONNECT, t0 + 200, gate_run, gate_done, gate_drop, &stuck };
    for (int i = 0; i < KEEL__WORKERS_CLASS_THREADS; i++)
        CHECK_INT(keel__workers_submit(w, &first), 0);
    CHECK_INT(wait_for(&stuck.entered, KEEL__WORKERS_CLASS_THREADS, 5000),
              KEEL__WORKERS_CLASS_THREADS);
    /* The class is full: this lookup waits until the stuck ones are overdue, then gets a
     * thread of its own while they still run. */
    int done = 0;
    keel__job next = { KEEL__JOB_CONNECT, -1, slow_run, set_flag, NULL, &done };
    CHECK_INT(keel__workers_submit(w, &next), 0);
    CHECK_INT(keel_loop_run(loop, &done), KEEL_OK);
    CHECK(keel_now_ms() - t0 >= 200);
    CHECK_INT(atomic_load(&stuck.left), 0);
    stuck.want = KEEL__WORKERS_CLASS_THREADS;
    atomic_store(&stuck.open, 1);
    CHECK_INT(keel_loop_run(loop, &stuck.all_done), KEEL_OK);
    keel__workers_free(w);
    keel_loop_free(loop);
}

TEST(free_never_waits_for_other_classes_and_gives_up_on_a_stuck_statement) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    static gate cancel, stmt; /* the threads outlive this function's frame */
    memset(&cancel, 0, sizeof cancel);
    memset(&stmt, 0, sizeof stmt);
    keel__job c = { KEEL__JOB_CANCEL, -1, gate_run, gate_done, gate_drop, &cancel };
    CHECK_INT(keel__workers_submit(w, &c), 0);
    CHECK_INT(wait_for(&cancel.entered, 1, 5000), 1);
    int64_t t0 = keel_now_ms();
    keel__workers_free(w);
    CHECK(keel_now_ms() - t0 < 1000);
    /* The request goes on without the pool and ends with drop, on its thread. */
    CHECK_INT(cancel.done, 0);
    atomic_store(&cancel.open, 1);
    CHECK_INT(wait_for(&cancel.dropped, 1, 5000), 1);

    w = keel__workers_new(loop, 1);
    keel__job s = { KEEL__JOB_ENGINE, -1, gate_run, gate_done, gate_drop, &stmt };
    CHECK_INT(keel__workers_submit(w, &s), 0);
    CHECK_INT(keel__workers_submit(w, &s), 0); /* queued behind the stuck one */
    CHECK_INT(wait_for(&stmt.entered, 1, 5000), 1);
    t0 = keel_now_ms();
    keel__workers_free(w);
    int64_t took = keel_now_ms() - t0;
    CHECK(took >= KEEL__WORKERS_CLOSE_WAIT_MS - 10);
    CHECK(took < KEEL__WORKERS_CLOSE_WAIT_MS + 3000);
    CHECK_INT(stmt.done, 0);
    /* Both still run once the stuck call returns, and end with drop. */
    atomic_store(&stmt.open, 1);
    CHECK_INT(wait_for(&stmt.dropped, 2, 5000), 2);
    CHECK_INT(atomic_load(&stmt.left), 2);
    keel_loop_free(loop);
}

static keel__workers *resubmit_pool;
static int resubmitted_done;

static void resubmit_done(void *arg) {
    (void)arg;
    keel__job job = { KEEL__JOB_ENGINE, -1, slow_run, count_done, NULL, &resubmitted_done };
    CHECK_INT(keel__workers_submit(resubmit_pool, &job), 0);
}

TEST(jobs_queued_by_completions_during_free_still_complete) {
    keel_loop *loop = keel_loop_new_blocking();
    resubmit_pool = keel__workers_new(loop, 1);
    resubmitted_done = 0;
    keel__job job = { KEEL__JOB_ENGINE, -1, slow_run, resubmit_done, NULL, NULL };
    CHECK_INT(keel__workers_submit(resubmit_pool, &job), 0);
    keel__workers_free(resubmit_pool); /* a connection's last statement, then its close */
    CHECK_INT(resubmitted_done, 1);
    keel_loop_free(loop);
}

TEST(a_job_without_a_run_function_or_class_is_refused) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    keel__job none = { KEEL__JOB_ENGINE, -1, NULL, NULL, NULL, NULL };
    CHECK_INT(keel__workers_submit(w, &none), -1);
    keel__job bad = { (keel__job_class)KEEL__JOB_CLASSES, -1, slow_run, NULL, NULL, NULL };
    CHECK_INT(keel__workers_submit(w, &bad), -1);
    CHECK_INT(keel__workers_pending(w), 0);
    keel__workers_free(w);
    keel_loop_free(loop);
}

/* What a lane's jobs record: the thread they ran on and the order they ran in. */
typedef struct lane_log {
    pthread_t thread[8];
    int order[8];
    atomic_int ran;
    int done;
    int all_done;
} lane_log;

typedef struct lane_arg {
    lane_log *log;
    int index;
} lane_arg;

static void lane_run(void *arg) {
    lane_arg *a = arg;
    int at = atomic_fetch_add(&a->log->ran, 1);
    a->log->thread[a->index] = pthread_self();
    a->log->order[at] = a->index;
}

static void lane_done(void *arg) {
    lane_arg *a = arg;
    if (++a->log->done == 8)
        a->log->all_done = 1;
}

TEST(a_lane_runs_its_jobs_in_order_on_its_own_thread) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    keel__lane *l = keel__lane_new(w);
    CHECK(l != NULL);
    static lane_log log;
    static lane_arg args[8];
    memset(&log, 0, sizeof log);
    for (int i = 0; i < 8; i++) {
        args[i].log = &log;
        args[i].index = i;
        keel__job job = { KEEL__JOB_CANCEL, -1, lane_run, lane_done, NULL, &args[i] };
        CHECK_INT(keel__lane_submit(l, &job), 0);
    }
    CHECK_INT(keel_loop_run(loop, &log.all_done), KEEL_OK);
    int same = 0, in_order = 0;
    for (int i = 0; i < 8; i++) {
        same += pthread_equal(log.thread[i], log.thread[0]) != 0;
        in_order += log.order[i] == i;
    }
    CHECK_INT(same, 8);
    CHECK_INT(in_order, 8);
    CHECK(!pthread_equal(log.thread[0], pthread_self()));
    keel__lane_release(l);
    keel__workers_free(w);
    keel_loop_free(loop);
}

TEST(lanes_never_wait_for_each_other_or_for_the_engine_class) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    static gate stuck;
    memset(&stuck, 0, sizeof stuck);
    /* The ENGINE class's only thread is stuck, and so are more lanes than the class has
     * threads: a new lane still runs its job at once. */
    keel__job hold = { KEEL__JOB_ENGINE, -1, gate_run, gate_done, gate_drop, &stuck };
    CHECK_INT(keel__workers_submit(w, &hold), 0);
    keel__lane *lanes[5];
    for (int i = 0; i < 4; i++) {
        lanes[i] = keel__lane_new(w);
        CHECK(lanes[i] != NULL);
        CHECK_INT(keel__lane_submit(lanes[i], &hold), 0);
    }
    CHECK_INT(wait_for(&stuck.entered, 5, 5000), 5);
    lanes[4] = keel__lane_new(w);
    CHECK(lanes[4] != NULL);
    int done = 0;
    keel__job quick = { KEEL__JOB_ENGINE, -1, slow_run, set_flag, NULL, &done };
    CHECK_INT(keel__lane_submit(lanes[4], &quick), 0);
    CHECK_INT(keel_loop_run(loop, &done), KEEL_OK);
    CHECK_INT(atomic_load(&stuck.left), 0);
    stuck.want = 5;
    atomic_store(&stuck.open, 1);
    CHECK_INT(keel_loop_run(loop, &stuck.all_done), KEEL_OK);
    for (int i = 0; i < 5; i++)
        keel__lane_release(lanes[i]);
    keel__workers_free(w);
    CHECK_INT(atomic_load(&stuck.dropped), 0);
    keel_loop_free(loop);
}

TEST(a_released_lane_runs_its_queued_jobs_then_ends) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    keel__lane *l = keel__lane_new(w);
    CHECK(l != NULL);
    gate g;
    memset(&g, 0, sizeof g);
    atomic_store(&g.open, 1);
    g.want = 3;
    keel__job job = { KEEL__JOB_ENGINE, -1, gate_run, gate_done, gate_drop, &g };
    for (int i = 0; i < 3; i++)
        CHECK_INT(keel__lane_submit(l, &job), 0);
    /* Released with jobs queued: they all run and complete, and the thread then ends by
     * itself, before the pool is freed. */
    keel__lane_release(l);
    CHECK_INT(keel_loop_run(loop, &g.all_done), KEEL_OK);
    CHECK_INT(g.done, 3);
    CHECK_INT(keel__workers_pending(w), 0);
    usleep(20000);
    keel__workers_free(w);
    CHECK_INT(atomic_load(&g.dropped), 0);
    keel_loop_free(loop);
    keel__lane_release(NULL);
}

TEST(free_waits_for_lanes_then_drops_what_is_stuck) {
    keel_loop *loop = keel_loop_new_blocking();
    keel__workers *w = keel__workers_new(loop, 1);
    keel__lane *quick = keel__lane_new(w), *slow = keel__lane_new(w);
    CHECK(quick != NULL && slow != NULL);
    int completed = 0;
    keel__job job = { KEEL__JOB_ENGINE, -1, slow_run, count_done, NULL, &completed };
    CHECK_INT(keel__lane_submit(quick, &job), 0);
    CHECK_INT(keel__lane_submit(quick, &job), 0);
    static gate stmt;
    memset(&stmt, 0, sizeof stmt);
    keel__job s = { KEEL__JOB_ENGINE, -1, gate_run, gate_done, gate_drop, &stmt };
    CHECK_INT(keel__lane_submit(slow, &s), 0);
    CHECK_INT(keel__lane_submit(slow, &s), 0);
    CHECK_INT(wait_for(&stmt.entered, 1, 5000), 1);
    /* Neither lane was released: free waits for both, completes the quick one's jobs, gives
     * up on the stuck one, whose jobs then end with drop. */
    int64_t t0 = keel_now_ms();
    keel__workers_free(w);
    CHECK(keel_now_ms() - t0 >= KEEL__WORKERS_CLOSE_WAIT_MS - 10);
    CHECK_INT(completed, 2);
    CHECK_INT(stmt.done, 0);
    atomic_store(&stmt.open, 1);
    CHECK_INT(wait_for(&stmt.dropped, 2, 5000), 2);
    keel_loop_free(loop);
}

int main(void) {
    RUN(jobs_run_on_workers_and_complete_on_the_loop);
    RUN(free_waits_for_queued_jobs_and_runs_their_completions);
    RUN(stuck_cancels_and_lookups_do_not_hold_up_other_classes);
    RUN(a_job_past_its_deadline_gives_up_its_thread);
    RUN(free_never_waits_for_other_classes_and_gives_up_on_a_stuck_statement);
    RUN(jobs_queued_by_completions_during_free_still_complete);
    RUN(a_job_without_a_run_function_or_class_is_refused);
    RUN(a_lane_runs_its_jobs_in_order_on_its_own_thread);
    RUN(lanes_never_wait_for_each_other_or_for_the_engine_class);
    RUN(a_released_lane_runs_its_queued_jobs_then_ends);
    RUN(free_waits_for_lanes_then_drops_what_is_stuck);
    return TEST_SUMMARY();
}
