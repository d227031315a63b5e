/*
 * The helper pool behind nk_threadpool_create: num_threads - 1 pthreads plus
 * the thread that calls parallel_for. Each call publishes one job under the
 * pool's mutex; participant p (0 is the caller, p >= 1 the worker started
 * p-th) first runs its own contiguous share of [0, n), then takes what is
 * left of the other shares one index at a time.
 *
 * Shares depend on n and the thread count only, so consecutive calls of the
 * same size hand a thread the same indices (the data its cache holds from
 * the previous phase); taking from the others' shares keeps one slow task
 * from holding up the rest of its share. Each index is claimed by one
 * compare-and-swap on its share's cursor, so it runs exactly once.
 *
 * Between jobs a worker first watches the job counter for NK_POOL_SPIN_NS
 * (a runtime calls operators back to back, and waking a sleeping thread
 * costs tens of microseconds, more than a small job), then sleeps on its own
 * condition variable. The caller waits for the workers still inside a job
 * the same way. A job closes when the caller has run out of indices to claim: from
 * then on a worker that wakes late stays asleep instead of entering, and the
 * caller waits only for the workers that entered (they finish the indices
 * they claimed). So an oversubscribed machine, where some workers are not
 * scheduled during a call, costs no more than the work itself.
 *
 * Calls from several threads are serialised by one mutex (the job state is
 * the pool's, one job at a time); a call with n == 1, or on a one-thread
 * pool, runs inline on the caller and wakes no one. So a task must not call
 * parallel_for on its own pool (it would wait for itself; normkit never
 * does), and destroy must not overlap a call.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dispatch/status.h"

#define NK_POOL_MAX_THREADS 1024
/* Two 64-byte lines: x86's adjacent-line prefetcher pairs them, and Apple's
 * cores have 128-byte lines; a cursor shares its line with no other cursor. */
#define NK_POOL_LINE 128
/* How long a thread watches for the next job, or for the last worker of the
 * current one, before it sleeps. */
#ifndef NK_POOL_SPIN_NS
#  define NK_POOL_SPIN_NS 200000
#endif

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins until done(arg) or NK_POOL_SPIN_NS have passed; done's result. */
static bool spin_until(bool (*done)(const void *arg), const void *arg)
{
    uint64_t start = 0;
    for (unsigned i = 0;; i++) {
        if (done(arg))
            return true;
        cpu_relax();
        if ((i & 63) == 63) {
            uint64_t t = now_ns();
            if (!start)
                start = t;
            else if (t - start > NK_POOL_SPIN_NS)
                return false;
        }
    }
}

typedef void (*nk_task_fn)(void *arg, size_t i);

/* One participant's share of the current job and, for a worker, its thread. */
typedef struct nk_pool_slot {
    _Alignas(NK_POOL_LINE) atomic_size_t next; /* next unclaimed index of the share */
    size_t end;                                /* one past the share */
    pthread_cond_t wake;                       /* workers only: a job or stop */
    pthread_t thread;
    struct nk_pool *pool;
    size_t id;
} nk_pool_slot;

/* What a participant needs to run its part of a job; copied under the lock. */
typedef struct nk_pool_job {
    nk_task_fn task;
    void *arg;
    size_t active; /* participants 0 .. active - 1 have a share */
} nk_pool_job;

typedef struct nk_pool {
    nk_threadpool iface; /* first: the handle nk_threadpool_create returns */
    size_t nthreads;
    nk_pool_slot *slots;     /* nthreads; slot 0 is the caller's share */
    pthread_mutex_t calls;   /* one parallel_for at a time */
    pthread_mutex_t lock;    /* everything below */
    pthread_cond_t done;     /* the caller waits here for busy == 0 */
    nk_pool_job job;
    uint64_t gen;            /* jobs published so far */
    atomic_uint_fast64_t gen_seen; /* gen, for the spinning workers; stop sets it to ~0 */
    atomic_size_t busy;      /* workers inside the current job (entered under lock) */
    int open;                /* workers may still enter the current job */
    int waiting;             /* the caller sleeps on done */
    int stop;
    size_t nsync;            /* sync objects initialised (teardown order) */
    size_t started;          /* workers running */
} nk_pool;

/* Claims the next index of a share; 0 when the share is used up. */
static int claim(nk_pool_slot *s, size_t *i)
{
    /* relaxed: the read-modify-write alone makes each index go to one
     * thread; the tasks' results reach the caller through the pool's lock */
    size_t cur = atomic_load_explicit(&s->next, memory_order_relaxed);
    while (cur < s->end)
        if (atomic_compare_exchange_weak_explicit(&s->next, &cur, cur + 1, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            *i = cur;
            return 1;
        }
    return 0;
}

/* Own share first, then the others' from the next participant on, so the
 * thieves of a slow share start at different shares. On return every index
 * of the job has been claimed (a share once used up stays used up). */
static void run_shares(nk_pool_slot *slots, const nk_pool_job *job, size_t self)
{
    for (size_t k = 0; k < job->active; k++) {
        size_t p = self + k < job->active ? self + k : self + k - job->active;
        size_t i;
        while (claim(&slots[p], &i))
            job->task(job->arg, i);
    }
}

typedef struct spin_arg {
    const nk_pool *pool;
    uint64_t seen;
} spin_arg;

static bool new_job(const void *arg)
{
    const spin_arg *a = arg;
    return atomic_load_explicit(&((nk_pool *)a->pool)->gen_seen, memory_order_acquire) != a->seen;
}

static bool no_busy(const void *arg)
{
    return atomic_load_explicit(&((nk_pool *)arg)->busy, memory_order_acquire) == 0;
}

static void *worker_main(void *arg)
{
    nk_pool_slot *s = arg;
    nk_pool *pool = s->pool;
    uint64_t seen = 0;
    for (;;) {
        /* watch for the next job a while; the lock decides whether to enter */
        spin_arg sa = {pool, seen};
        spin_until(new_job, &sa);
        pthread_mutex_lock(&pool->lock);
        /* a worker without a share in this job (n < threads) stays asleep;
         * a job that closed before this worker came is skipped */
        while (!pool->stop && !(pool->open && pool->gen != seen && s->id < pool->job.active)) {
            seen = pool->gen;
            pthread_cond_wait(&s->wake, &pool->lock);
        }
        if (pool->stop) {
            pthread_mutex_unlock(&pool->lock);
            break;
        }
        seen = pool->gen;
        nk_pool_job job = pool->job;
        atomic_fetch_add_explicit(&pool->busy, 1, memory_order_relaxed);
        pthread_mutex_unlock(&pool->lock);
        run_shares(pool->slots, &job, s->id);
        /* release: the tasks' writes reach the caller that sees busy == 0 */
        if (atomic_fetch_sub_explicit(&pool->busy, 1, memory_order_release) == 1) {
            pthread_mutex_lock(&pool->lock);
            if (pool->waiting)
                pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->lock);
        }
    }
    return NULL;
}

static void pool_parallel_for(void *ctx, nk_task_fn task, void *arg, size_t n)
{
    nk_pool *pool = ctx;
    if (n == 0)
        return;
    pthread_mutex_lock(&pool->calls);
    if (n == 1 || pool->nthreads == 1) {
        for (size_t i = 0; i < n; i++)
            task(arg, i);
        pthread_mutex_unlock(&pool->calls);
        return;
    }
    /* shares of n / active indices, the first n % active one longer; no
     * worker is inside a job here, so the shares can be rewritten */
    size_t active = n < pool->nthreads ? n : pool->nthreads;
    size_t q = n / active, r = n % active;
    for (size_t p = 0; p < active; p++) {
        size_t begin = p * q + (p < r ? p : r);
        atomic_store_explicit(&pool->slots[p].next, begin, memory_order_relaxed);
        pool->slots[p].end = begin + q + (p < r);
    }
    nk_pool_job job = {task, arg, active};

    pthread_mutex_lock(&pool->lock);
    pool->job = job;
    pool->gen++;
    pool->open = 1;
    atomic_store_explicit(&pool->gen_seen, pool->gen, memory_order_release);
    pthread_mutex_unlock(&pool->lock);
    for (size_t p = 1; p < active; p++)
        pthread_cond_signal(&pool->slots[p].wake);

    run_shares(pool->slots, &job, 0);

    /* every index is claimed; the workers that entered finish theirs */
    pthread_mutex_lock(&pool->lock);
    pool->open = 0;
    pthread_mutex_unlock(&pool->lock);
    if (!spin_until(no_busy, pool)) {
        pthread_mutex_lock(&pool->lock);
        pool->waiting = 1;
        while (atomic_load_explicit(&pool->busy, memory_order_acquire))
            pthread_cond_wait(&pool->done, &pool->lock);
        pool->waiting = 0;
        pthread_mutex_unlock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->calls);
}

static size_t pool_num_threads(void *ctx) { return ((nk_pool *)ctx)->nthreads; }

/* Stops and joins the workers started, destroys the nsync sync objects
 * initialised (calls, lock, done, then the workers' wake in slot order) and
 * frees the pool. */
static void pool_teardown(nk_pool *pool)
{
    if (pool->started) {
        pthread_mutex_lock(&pool->lock);
        pool->stop = 1;
        atomic_store_explicit(&pool->gen_seen, ~(uint_fast64_t)0, memory_order_release);
        pthread_mutex_unlock(&pool->lock);
        for (size_t w = 1; w <= pool->started; w++)
            pthread_cond_signal(&pool->slots[w].wake);
        for (size_t w = 1; w <= pool->started; w++)
            pthread_join(pool->slots[w].thread, NULL);
    }
    for (size_t k = pool->nsync; k-- > 0;) {
        if (k >= 3)
            pthread_cond_destroy(&pool->slots[k - 2].wake);
        else if (k == 2)
            pthread_cond_destroy(&pool->done);
        else
            pthread_mutex_destroy(k ? &pool->lock : &pool->calls);
    }
    free(pool->slots);
    free(pool);
}

/* Initialises the pool's mutexes and condition variables in teardown order,
 * counting them in nsync; 0 on success. */
static int pool_init_sync(nk_pool *pool)
{
    if (pthread_mutex_init(&pool->calls, NULL))
        return -1;
    pool->nsync++;
    if (pthread_mutex_init(&pool->lock, NULL))
        return -1;
    pool->nsync++;
    if (pthread_cond_init(&pool->done, NULL))
        return -1;
    pool->nsync++;
    for (size_t w = 1; w < pool->nthreads; w++) {
        if (pthread_cond_init(&pool->slots[w].wake, NULL))
            return -1;
        pool->nsync++;
    }
    return 0;
}

/* Starts workers 1 .. nthreads - 1; on failure the pthread_create error.
 * Workers inherit the calling thread's signal mask: a caller that keeps
 * signals away from helper threads blocks them before creating the pool,
 * and faults in a task still reach the application's handlers. */
static int pool_start_workers(nk_pool *pool)
{
    int rc = 0;
    for (size_t w = 1; w < pool->nthreads && !rc; w++) {
        pool->slots[w].pool = pool;
        pool->slots[w].id = w;
        rc = pthread_create(&pool->slots[w].thread, NULL, worker_main, &pool->slots[w]);
        if (!rc)
            pool->started++;
    }
    return rc;
}

/* capped at the explicit maximum, so 0 never asks for more than 1024 would */
static size_t online_cpus(void)
{
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    if (c < 1)
        return 1;
    return c > NK_POOL_MAX_THREADS ? NK_POOL_MAX_THREADS : (size_t)c;
}

nk_status nk_threadpool_create(int num_threads, nk_threadpool **out)
{
    if (!out)
        return nk_fail(NK_ERR_NULL_POINTER, "nk_threadpool_create: out is NULL");
    if (num_threads < 0 || num_threads > NK_POOL_MAX_THREADS)
        return nk_fail(NK_ERR_BAD_PARAM, "nk_threadpool_create: num_threads must be in [0, %d], got %d",
                       NK_POOL_MAX_THREADS, num_threads);
    size_t nthreads = num_threads ? (size_t)num_threads : online_cpus();

    nk_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return nk_fail(NK_ERR_OUT_OF_MEMORY, "nk_threadpool_create: cannot allocate the pool");
    /* the slot size is a multiple of its alignment, as aligned_alloc asks */
    pool->slots = aligned_alloc(_Alignof(nk_pool_slot), nthreads * sizeof(nk_pool_slot));
    if (!pool->slots) {
        free(pool);
        return nk_fail(NK_ERR_OUT_OF_MEMORY,
                       "nk_threadpool_create: cannot allocate %zu thread slots", nthreads);
    }
    memset(pool->slots, 0, nthreads * sizeof(nk_pool_slot));
    pool->nthreads = nthreads;
    pool->iface.ctx = pool;
    pool->iface.num_threads = pool_num_threads;
    pool->iface.parallel_for = pool_parallel_for;

    if (pool_init_sync(pool)) {
        pool_teardown(pool);
        return nk_fail(NK_ERR_OUT_OF_MEMORY,
                       "nk_threadpool_create: cannot initialise the pool's mutexes and conditions");
    }
    int rc = pool_start_workers(pool);
    if (rc) {
        size_t started = pool->started;
        pool_teardown(pool);
        return nk_fail(NK_ERR_OUT_OF_MEMORY,
                       "nk_threadpool_create: cannot start worker thread %zu of %zu "
                       "(pthread_create error %d)", started + 1, nthreads - 1, rc);
    }
    *out = &pool->iface;
    nk_clear_error();
    return NK_OK;
}

void nk_threadpool_destroy(nk_threadpool *pool)
{
    if (pool)
        pool_teardown((nk_pool *)pool);
}
