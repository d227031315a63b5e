/*
 * The helper pool of nk_threadpool_create: every index runs exactly once and
 * has returned when parallel_for returns, for every size and thread count;
 * a task that stalls does not stall the rest of its thread's share; two
 * thousand calls in a row; two callers on one pool (serialised) and on two
 * pools (side by side); create/destroy cycles; argument errors and a thread
 * that cannot be started leave *out untouched. Tasks write plain memory that
 * the caller reads after the call, so ThreadSanitizer (tools/tsan.sh) checks
 * that the pool orders the tasks' writes before its return.
 */
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nk_test.h"

/* The start-failure test caps the address space, which sanitizers (they
 * reserve terabytes of shadow memory) cannot run under. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#  define NKT_SANITIZED 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
      __has_feature(memory_sanitizer)
#    define NKT_SANITIZED 1
#  endif
#endif

static nk_threadpool *make_pool(int num_threads)
{
    nk_threadpool *pool = NULL;
    nk_status st = nk_threadpool_create(num_threads, &pool);
    if (st != NK_OK)
        print_error("nk_threadpool_create(%d): %s\n", num_threads, nk_last_error());
    assert_int_equal(st, NK_OK);
    assert_non_null(pool);
    return pool;
}

static void run(const nk_threadpool *pool, void (*task)(void *, size_t), void *arg, size_t n)
{
    pool->parallel_for(pool->ctx, task, arg, n);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */

typedef struct counting {
    atomic_int *hits; /* per index */
    size_t n;
    pthread_t caller;
    atomic_int stray;      /* indices >= n */
    atomic_int off_caller; /* tasks run on another thread than the caller */
} counting;

static void count_task(void *arg, size_t i)
{
    counting *c = arg;
    if (i >= c->n) {
        atomic_fetch_add(&c->stray, 1);
        return;
    }
    /* now and then a task takes a while, so that a pool returning before
     * its tasks have returned is caught with counts still zero */
    if (i % 61 == 5)
        sched_yield();
    atomic_fetch_add_explicit(&c->hits[i], 1, memory_order_relaxed);
    if (!pthread_equal(pthread_self(), c->caller))
        atomic_fetch_add(&c->off_caller, 1);
}

static void every_index_once(void **state)
{
    (void)state;
    static const int threads[] = {1, 2, 3, 4, 8};
    static const size_t sizes[] = {0, 1, 2, 3, 7, 64, 1000, 100003};
    atomic_int *hits = malloc(100003 * sizeof *hits);
    assert_non_null(hits);
    for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
        nk_threadpool *pool = make_pool(threads[t]);
        assert_non_null(pool->ctx);
        assert_int_equal(pool->num_threads(pool->ctx), threads[t]);
        /* twice: the second pass reuses shares the first one used up */
        for (int pass = 0; pass < 2; pass++)
            for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
                size_t n = sizes[s];
                counting c = {hits, n, pthread_self(), 0, 0};
                for (size_t i = 0; i < n; i++)
                    atomic_init(&hits[i], 0);
                run(pool, count_task, &c, n);
                assert_int_equal(atomic_load(&c.stray), 0);
                for (size_t i = 0; i < n; i++)
                    if (atomic_load_explicit(&hits[i], memory_order_relaxed) != 1) {
                        print_error("%d threads, n = %zu: index %zu ran %d times\n", threads[t], n,
                                    i, atomic_load(&hits[i]));
                        fail();
                    }
                /* one index, or one thread: inline on the caller */
                if (n <= 1 || threads[t] == 1)
                    assert_int_equal(atomic_load(&c.off_caller), 0);
            }
        nk_threadpool_destroy(pool);
    }
    free(hits);
}

/* ------------------------------------------------------------------------ */

/* The first index of one share waits until every other index has run; only
 * threads taking over the rest of that share let it finish in time. */
typedef struct stall {
    size_t n, stalled;
    atomic_size_t others_done;
    atomic_int timed_out;
} stall;

static void stall_task(void *arg, size_t i)
{
    stall *s = arg;
    if (i != s->stalled) {
        atomic_fetch_add(&s->others_done, 1);
        return;
    }
    double deadline = now_s() + 10.0;
    while (atomic_load(&s->others_done) < s->n - 1) {
        if (now_s() > deadline) {
            atomic_store(&s->timed_out, 1);
            return;
        }
        sched_yield();
    }
}

static void stalled_task_is_worked_around(void **state)
{
    (void)state;
    for (int t = 2; t <= 4; t++) {
        nk_threadpool *pool = make_pool(t);
        size_t n = 8 * (size_t)t + 3;
        /* the first index of each share (the longer shares come first) */
        size_t q = n / (size_t)t, r = n % (size_t)t;
        for (size_t p = 0; p < (size_t)t; p++) {
            stall s = {n, p * q + (p < r ? p : r), 0, 0};
            run(pool, stall_task, &s, n);
            if (atomic_load(&s.timed_out)) {
                print_error("%d threads: index %zu waited 10 s for the other %zu\n", t, s.stalled,
                            n - 1);
                fail();
            }
            assert_int_equal(atomic_load(&s.others_done), n - 1);
        }
        nk_threadpool_destroy(pool);
    }
}

/* ------------------------------------------------------------------------ */

/* Plain stores: the caller reads them after the call without atomics. */
typedef struct stamping {
    int *stamp;
    int call;
    atomic_int *running;      /* tasks of this caller now running */
    const atomic_int *rival;  /* the other caller's, or NULL */
    atomic_int overlap;       /* a rival task ran beside one of ours */
} stamping;

static void stamp_task(void *arg, size_t i)
{
    stamping *s = arg;
    if (s->running)
        atomic_fetch_add(s->running, 1);
    if (s->rival && atomic_load(s->rival) != 0)
        atomic_store(&s->overlap, 1);
    if (i % 17 == 3)
        sched_yield();
    s->stamp[i] = s->call;
    if (s->running)
        atomic_fetch_sub(s->running, 1);
}

#define MAX_N 64

/* calls: how many; returns 0 when every call saw its own stamps, all of them. */
static int stamp_calls(const nk_threadpool *pool, int calls, atomic_int *running,
                       const atomic_int *rival, int *overlap)
{
    int stamp[MAX_N];
    memset(stamp, 0xff, sizeof stamp);
    for (int k = 0; k < calls; k++) {
        /* 1 .. MAX_N: fewer indices than threads and many more */
        size_t n = 1 + (size_t)(k * 37 % MAX_N);
        stamping s = {stamp, k, running, rival, 0};
        run(pool, stamp_task, &s, n);
        for (size_t i = 0; i < n; i++)
            if (stamp[i] != k) {
                print_error("call %d (n = %zu): index %zu holds stamp %d\n", k, n, i, stamp[i]);
                return 1;
            }
        if (atomic_load(&s.overlap))
            *overlap = 1;
    }
    return 0;
}

static void many_calls_in_a_row(void **state)
{
    (void)state;
    for (int t = 2; t <= 4; t += 2) {
        nk_threadpool *pool = make_pool(t);
        int overlap = 0;
        assert_int_equal(stamp_calls(pool, 2000, NULL, NULL, &overlap), 0);
        nk_threadpool_destroy(pool);
    }
}

typedef struct caller {
    const nk_threadpool *pool;
    atomic_int running;
    const atomic_int *rival;
    int failed, overlap;
} caller;

static void *caller_main(void *arg)
{
    caller *c = arg;
    c->failed = stamp_calls(c->pool, 300, &c->running, c->rival, &c->overlap);
    return NULL;
}

/* shared: both callers on one pool, else one pool each */
static void two_callers(int shared)
{
    nk_threadpool *a = make_pool(3), *b = shared ? a : make_pool(3);
    caller c[2] = {{a, 0, NULL, 0, 0}, {b, 0, NULL, 0, 0}};
    if (shared) {
        c[0].rival = &c[1].running;
        c[1].rival = &c[0].running;
    }
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, caller_main, &c[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(c[i].failed, 0);
        if (c[i].overlap)
            print_error("caller %d: a task of the other caller ran beside one of its own\n", i);
        assert_int_equal(c[i].overlap, 0);
    }
    nk_threadpool_destroy(a);
    if (!shared)
        nk_threadpool_destroy(b);
}

static void two_callers_one_pool(void **state)
{
    (void)state;
    two_callers(1);
}

static void two_callers_two_pools(void **state)
{
    (void)state;
    two_callers(0);
}

/* ------------------------------------------------------------------------ */

static void create_destroy_cycles(void **state)
{
    (void)state;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t want0 = cpus < 1 ? 1 : cpus > 1024 ? 1024 : (size_t)cpus;
    int stamp[MAX_N];
    for (int k = 0; k < 100; k++) {
        int t = k % 5; /* 0: one per online CPU */
        nk_threadpool *pool = make_pool(t);
        assert_int_equal(pool->num_threads(pool->ctx), t ? (size_t)t : want0);
        /* every other pool is destroyed before its workers have run */
        if (k % 2) {
            stamping s = {stamp, k, NULL, NULL, 0};
            run(pool, stamp_task, &s, 10);
            for (int i = 0; i < 10; i++)
                assert_int_equal(stamp[i], k);
        }
        nk_threadpool_destroy(pool);
    }
    nk_threadpool_destroy(NULL);
}

static void bad_arguments(void **state)
{
    (void)state;
    static const int bad[] = {-1, 1025, INT_MIN, INT_MAX};
    nk_threadpool sentinel_pool, *sentinel = &sentinel_pool;
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        nk_threadpool *out = sentinel;
        char value[16];
        snprintf(value, sizeof value, "%d", bad[k]);
        assert_int_equal(nk_threadpool_create(bad[k], &out), NK_ERR_BAD_PARAM);
        assert_ptr_equal(out, sentinel);
        const char *msg = nk_last_error();
        if (!strstr(msg, "num_threads") || !strstr(msg, value)) {
            print_error("message \"%s\" should name num_threads and %s\n", msg, value);
            fail();
        }
    }
    assert_int_equal(nk_threadpool_create(2, NULL), NK_ERR_NULL_POINTER);
    assert_non_null(strstr(nk_last_error(), "out"));
    /* success clears the message of the failure before */
    nk_threadpool *pool = make_pool(2);
    assert_string_equal(nk_last_error(), "");
    nk_threadpool_destroy(pool);
    nk_threadpool_destroy(NULL);
}

/* ------------------------------------------------------------------------ */

#ifndef NKT_SANITIZED
static int count_tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

#define CHILD_SKIP 77

/* A pool of 64 under the address-space cap: 0 when create failed with
 * NK_ERR_OUT_OF_MEMORY, left *out alone and has no thread left behind; the
 * worker it could not start in *reached. */
static int failed_create(unsigned long *reached)
{
    nk_threadpool sentinel_pool, *out = &sentinel_pool;
    nk_status st = nk_threadpool_create(64, &out);
    if (st == NK_OK) {
        nk_threadpool_destroy(out);
        return CHILD_SKIP;
    }
    if (st != NK_ERR_OUT_OF_MEMORY || out != &sentinel_pool)
        return 2;
    const char *msg = nk_last_error();
    const char *at = strstr(msg, "worker thread ");
    if (!at) {
        fprintf(stderr, "child: %s\n", msg);
        return 3;
    }
    *reached = strtoul(at + strlen("worker thread "), NULL, 10);
    /* a stopped thread leaves the task list at once; one left waiting stays */
    double deadline = now_s() + 2.0;
    while (count_tasks() != 1) {
        if (now_s() > deadline)
            return 4;
        sched_yield();
    }
    return 0;
}

/* In a forked child (one thread): an address space with room for a few
 * thread stacks besides those glibc keeps cached, then a pool of 64, twice.
 * Exit status 0 when both creates failed cleanly after starting some
 * workers, and the second got as far as the first: the first joined its
 * workers, which releases their stacks (an unjoined thread keeps its stack
 * mapped after it exits). */
static int start_failure_child(void)
{
    size_t stack = 0;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) || pthread_attr_getstacksize(&attr, &stack) || !stack)
        return CHILD_SKIP;
    pthread_attr_destroy(&attr);
    long page = sysconf(_SC_PAGESIZE);
    unsigned long vm_pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || count_tasks() != 1)
        return CHILD_SKIP;
    int got = fscanf(f, "%lu", &vm_pages);
    fclose(f);
    if (got != 1)
        return CHILD_SKIP;
    struct rlimit lim, now;
    lim.rlim_cur = lim.rlim_max = (rlim_t)vm_pages * (rlim_t)page + 7 * (rlim_t)stack / 2;
    /* qemu-user accepts the call and ignores it */
    if (setrlimit(RLIMIT_AS, &lim) || getrlimit(RLIMIT_AS, &now) || now.rlim_cur != lim.rlim_cur)
        return CHILD_SKIP;

    unsigned long first = 0, second = 0;
    int rc = failed_create(&first);
    if (rc)
        return rc;
    /* worker 1 started at least: the failure path had threads to join */
    if (first < 2)
        return 5;
    rc = failed_create(&second);
    if (rc)
        return rc;
    if (second < first) {
        fprintf(stderr, "child: the first failed create got to worker %lu, the second to %lu\n",
                first, second);
        return 6;
    }
    return 0;
}
#endif

static void thread_start_failure(void **state)
{
    (void)state;
#ifdef NKT_SANITIZED
    skip();
#else
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* the parent's alarm does not carry over a fork */
        alarm(30);
        _exit(start_failure_child());
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status))
        print_error("child ended by signal %d\n", WTERMSIG(status));
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == CHILD_SKIP)
        skip();
    if (WEXITSTATUS(status))
        print_error("child failed check %d\n", WEXITSTATUS(status));
    assert_int_equal(WEXITSTATUS(status), 0);
#endif
}

int main(void)
{
    /* a lost wakeup hangs a call: fail after two minutes, not at the
     * harness's timeout */
    alarm(120);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_index_once),
        cmocka_unit_test(stalled_task_is_worked_around),
        cmocka_unit_test(many_calls_in_a_row),
        cmocka_unit_test(two_callers_one_pool),
        cmocka_unit_test(two_callers_two_pools),
        cmocka_unit_test(create_destroy_cycles),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(thread_start_failure),
    };
    return cmocka_run_group_tests_name("threadpool", tests, NULL, NULL);
}
