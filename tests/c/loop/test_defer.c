/* tests/c/loop/test_defer.c - deferred calls: later turn only, once per schedule, cancel, free. */
#include <unistd.h>

#include "loop/defer.h"
#include "loop/loop_int.h"
#include "test.h"

typedef struct ctx {
    keel__defer *d;
    int runs;
    int done;
    int watch_runs;
    int runs_before_watch;
    int reschedule_until_watch;
    int free_in_callback;
} ctx;

static void on_defer(void *arg) {
    ctx *c = arg;
    c->runs++;
    if (c->free_in_callback) {
        keel__defer_free(c->d);
        c->d = NULL;
        c->done = 1;
        return;
    }
    CHECK(!keel__defer_pending(c->d));
    if (c->reschedule_until_watch && !c->watch_runs && c->runs < 1000) {
        CHECK_INT(keel__defer_schedule(c->d), 0);
        return;
    }
    c->done = 1;
}

TEST(scheduled_call_runs_once_from_the_loop_not_from_the_caller) {
    ctx c = { 0 };
    keel_loop *loop = keel_loop_new_blocking();
    c.d = keel__defer_new(loop, on_defer, &c);
    CHECK(c.d != NULL);
    CHECK(!keel__defer_pending(c.d));
    CHECK_INT(keel__defer_schedule(c.d), 0);
    CHECK_INT(c.runs, 0);
    CHECK(keel__defer_pending(c.d));
    CHECK_INT(keel__defer_schedule(c.d), 0); /* idempotent while pending */
    CHECK_INT(keel_loop_run(loop, &c.done), KEEL_OK);
    CHECK_INT(c.runs, 1);
    CHECK(!keel__defer_pending(c.d));
    /* Nothing is left to run: the loop says so instead of running the call a second time. */
    int never = 0;
    CHECK_INT(keel_loop_run(loop, &never), KEEL_ERR_INTERNAL);
    CHECK_INT(c.runs, 1);
    /* Scheduling again after it ran runs it again. */
    c.done = 0;
    CHECK_INT(keel__defer_schedule(c.d), 0);
    CHECK_INT(keel_loop_run(loop, &c.done), KEEL_OK);
    CHECK_INT(c.runs, 2);
    keel__defer_free(c.d);
    keel_loop_free(loop);
}

TEST(cancelled_call_does_not_run) {
    ctx c = { 0 }, other = { 0 };
    keel_loop *loop = keel_loop_new_blocking();
    c.d = keel__defer_new(loop, on_defer, &c);
    other.d = keel__defer_new(loop, on_defer, &other);
    keel__defer_cancel(c.d); /* nothing pending: no effect */
    CHECK_INT(keel__defer_schedule(c.d), 0);
    keel__defer_cancel(c.d);
    CHECK(!keel__defer_pending(c.d));
    CHECK_INT(keel__defer_schedule(other.d), 0);
    CHECK_INT(keel_loop_run(loop, &other.done), KEEL_OK);
    CHECK_INT(other.runs, 1);
    CHECK_INT(c.runs, 0);
    keel__defer_free(c.d);
    keel__defer_free(other.d);
    keel_loop_free(loop);
}

TEST(freeing_a_pending_call_unschedules_it) {
    ctx c = { 0 }, other = { 0 };
    keel_loop *loop = keel_loop_new_blocking();
    c.d = keel__defer_new(loop, on_defer, &c);
    other.d = keel__defer_new(loop, on_defer, &other);
    CHECK_INT(keel__defer_schedule(c.d), 0);
    keel__defer_free(c.d); /* the loop must not fire freed memory (ASan) */
    CHECK_INT(keel__defer_schedule(other.d), 0);
    CHECK_INT(keel_loop_run(loop, &other.done), KEEL_OK);
    CHECK_INT(c.runs, 0);
    keel__defer_free(other.d);
    keel__defer_free(NULL);
    keel_loop_free(loop);
}

TEST(callback_may_free_its_own_call) {
    ctx c = { .free_in_callback = 1 };
    keel_loop *loop = keel_loop_new_blocking();
    c.d = keel__defer_new(loop, on_defer, &c);
    CHECK_INT(keel__defer_schedule(c.d), 0);
    CHECK_INT(keel_loop_run(loop, &c.done), KEEL_OK);
    CHECK_INT(c.runs, 1);
    CHECK(c.d == NULL);
    keel_loop_free(loop);
}

static void on_readable(void *arg, int events) {
    ctx *c = arg;
    (void)events;
    if (!c->watch_runs)
        c->runs_before_watch = c->runs;
    c->watch_runs++;
}

/*
 * A call that schedules itself again runs on a later turn: the loop polls its descriptors in
 * between, so work continued this way cannot starve I/O (the blocking loop used to fire such a
 * timer again in the same pass, forever).
 */
TEST(rescheduling_from_the_callback_lets_the_loop_poll_in_between) {
    ctx c = { .reschedule_until_watch = 1 };
    int fds[2];
    CHECK_INT(pipe(fds), 0);
    CHECK_INT(write(fds[1], "x", 1), 1);
    keel_loop *loop = keel_loop_new_blocking();
    keel_watch *w = keel__watch_new(loop, fds[0], on_readable, &c);
    CHECK_INT(keel__watch_set(w, KEEL_READ), 0);
    c.d = keel__defer_new(loop, on_defer, &c);
    CHECK_INT(keel__defer_schedule(c.d), 0);
    CHECK_INT(keel_loop_run(loop, &c.done), KEEL_OK);
    CHECK_INT(c.runs_before_watch, 1);
    CHECK_INT(c.runs, 2);
    keel__defer_free(c.d);
    keel__watch_free(w);
    keel_loop_free(loop);
    close(fds[0]);
    close(fds[1]);
}

/* A host loop written to keel/loop.h alone: it records the armed timer and fires it later. */
typedef struct host {
    keel_timer *armed;
    int64_t deadline;
    int arms, disarms;
    int refuse;
} host;

static int host_watch(void *h, keel_watch *w, int fd, int events) {
    (void)h, (void)w, (void)fd, (void)events;
    return -1;
}

static int host_timer(void *hp, keel_timer *t, int64_t deadline_ms) {
    host *h = hp;
    if (h->refuse)
        return -1;
    if (deadline_ms < 0) {
        h->disarms++;
        h->armed = NULL;
        return 0;
    }
    h->arms++;
    h->armed = t;
    h->deadline = deadline_ms;
    return 0;
}

TEST(any_host_loop_runs_the_call_from_its_own_turn) {
    host h = { 0 };
    static const keel_loop_ops ops = { host_watch, host_timer };
    keel_loop *loop = keel_loop_new(&ops, &h);
    ctx c = { 0 };
    c.d = keel__defer_new(loop, on_defer, &c);
    CHECK_INT(keel__defer_schedule(c.d), 0);
    CHECK_INT(keel__defer_schedule(c.d), 0);
    CHECK_INT(h.arms, 1); /* the second schedule does not reach the host */
    CHECK(h.armed != NULL);
    CHECK(h.deadline <= keel_now_ms()); /* due at once */
    CHECK_INT(c.runs, 0);
    keel_timer *t = h.armed;
    h.armed = NULL;
    keel_timer_fire(t); /* the host's next turn */
    CHECK_INT(c.runs, 1);
    CHECK(!keel__defer_pending(c.d));
    /* A host that refuses the timer: schedule fails and nothing is pending. */
    h.refuse = 1;
    CHECK_INT(keel__defer_schedule(c.d), -1);
    CHECK(!keel__defer_pending(c.d));
    h.refuse = 0;
    keel__defer_free(c.d);
    keel_loop_free(loop);
}

int main(void) {
    RUN(scheduled_call_runs_once_from_the_loop_not_from_the_caller);
    RUN(cancelled_call_does_not_run);
    RUN(freeing_a_pending_call_unschedules_it);
    RUN(callback_may_free_its_own_call);
    RUN(rescheduling_from_the_callback_lets_the_loop_poll_in_between);
    RUN(any_host_loop_runs_the_call_from_its_own_turn);
    return TEST_SUMMARY();
}
