/*
 * Copyright (C) ngx_llm developers
 *
 * A job is published by bumping a generation counter; workers spin on
 * it for a short while after each job (while a token is computed, the
 * next matmul is a few microseconds away) and then sleep on it with a
 * futex, so that an idle engine costs no CPU and a small model, whose
 * matmuls run on the caller alone (llm_matmul), leaves the other CPUs
 * to nginx.  The caller works on the job too and then waits, the same
 * way, for the tasks that others claimed to finish.  It never waits for
 * a worker that has not claimed anything: on a busy machine a worker
 * may not get a CPU for milliseconds, and the caller simply does its
 * share.
 *
 * A job of few tasks wants few workers: it has that many seats, taken
 * by whichever workers come first, and wakes only that many sleepers.
 *
 * Tasks are claimed with a compare-and-swap on (job, next task), so a
 * worker that wakes late, when its job is over and maybe the next one
 * published, claims nothing of a job whose fields it did not read.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "llm_threads.h"


#define LLM_THREADS_MAX      256
#define LLM_THREADS_SPIN_US  50      /* how long a worker spins before it
                                      * sleeps: a token's matmuls are
                                      * closer together than this, and
                                      * spinning longer takes a CPU from
                                      * nginx on a shared machine */


typedef struct {
    /* the job: written by the caller before gen is bumped (release),
     * read by workers after they see the bump (acquire) */
    _Atomic(llm_task_pt)   fn;             /* relaxed: a late worker */
    _Atomic(void *)        arg;            /* may read them while the */
    _Atomic int64_t        n_tasks;        /* next job is written, and
                                            * then fails its claim */

    _Atomic uint64_t       seats;          /* job << 32 | workers that
                                            * may still join it */
    _Atomic uint64_t       claim;          /* job << 32 | next task */

    _Alignas(64)
    _Atomic uint32_t       gen;            /* futex word: job number */
    _Atomic int            n_asleep;       /* workers in futex_wait */
    _Atomic int            stop;

    _Alignas(64)
    _Atomic uint32_t       done;           /* futex word: tasks done */
    _Atomic int            caller_asleep;

    _Alignas(64)
    int                    started;
    int                    n_threads;      /* the caller included */
    pthread_t             *workers;        /* (n_threads - 1) */
    pthread_mutex_t        lock;           /* one caller at a time */
} llm_pool_t;


static void *llm_worker(void *data);
static int llm_pool_join(uint32_t job);
static void llm_pool_work(uint32_t job, int thread);
static int llm_pool_start(int n, llm_err_t *err);
static void llm_pool_stop(void);
static int llm_cpus_online(void);
static void llm_futex_wait(_Atomic uint32_t *addr, uint32_t val);
static void llm_futex_wake(_Atomic uint32_t *addr, int n);
static void llm_cpu_relax(void);


static llm_pool_t          llm_pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER
};

/* set on workers for good and on the caller during a job: a call to
 * llm_threads_run() from a task runs inline */
static _Thread_local int   llm_in_pool;


int
llm_threads_init(int n, llm_err_t *err)
{
    int  rc;

    pthread_mutex_lock(&llm_pool.lock);
    llm_pool_stop();
    rc = llm_pool_start(n, err);
    pthread_mutex_unlock(&llm_pool.lock);

    return rc;
}


int
llm_threads_count(void)
{
    int  n;

    if (llm_in_pool) {
        /* inside a task, whose caller holds the lock: the pool cannot
         * change until the job is over */
        return llm_pool.n_threads;
    }

    pthread_mutex_lock(&llm_pool.lock);

    if (!llm_pool.started) {
        (void) llm_pool_start(0, NULL);
    }

    n = llm_pool.n_threads;
    pthread_mutex_unlock(&llm_pool.lock);

    return n;
}


void
llm_threads_free(void)
{
    pthread_mutex_lock(&llm_pool.lock);
    llm_pool_stop();
    pthread_mutex_unlock(&llm_pool.lock);
}


void
llm_threads_run(llm_task_pt fn, void *arg, int64_t n_tasks)
{
    int       n_workers;
    uint32_t  d, job;
    uint64_t  t0;

    if (n_tasks <= 0) {
        return;
    }

    if (llm_in_pool || n_tasks == 1 || n_tasks >= INT32_MAX) {
        for (int64_t i = 0; i < n_tasks; i++) {
            fn(arg, i, 0);
        }
        return;
    }

    pthread_mutex_lock(&llm_pool.lock);

    if (!llm_pool.started) {
        (void) llm_pool_start(0, NULL);
    }

    n_workers = llm_pool.n_threads - 1;
    if (n_workers > n_tasks - 1) {
        n_workers = (int) (n_tasks - 1);
    }

    job = atomic_load_explicit(&llm_pool.gen, memory_order_relaxed) + 1;

    atomic_store_explicit(&llm_pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&llm_pool.arg, arg, memory_order_relaxed);
    atomic_store_explicit(&llm_pool.n_tasks, n_tasks, memory_order_relaxed);
    atomic_store_explicit(&llm_pool.seats,
                          (uint64_t) job << 32 | (uint32_t) n_workers,
                          memory_order_relaxed);
    atomic_store_explicit(&llm_pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&llm_pool.claim, (uint64_t) job << 32,
                          memory_order_relaxed);

    /* release for the fields above; seq_cst against the workers'
     * n_asleep++ then gen check: they see the new gen or we see them
     * asleep */
    atomic_store(&llm_pool.gen, job);

    if (n_workers > 0 && atomic_load(&llm_pool.n_asleep) > 0) {
        llm_futex_wake(&llm_pool.gen, n_workers);
    }

    llm_in_pool = 1;
    llm_pool_work(job, 0);
    llm_in_pool = 0;

    t0 = 0;

    for (uint32_t spins = 0; ; spins++) {
        d = atomic_load_explicit(&llm_pool.done, memory_order_acquire);
        if ((int64_t) d >= n_tasks) {
            break;
        }

        if ((spins & 63) != 63) {
            llm_cpu_relax();
            continue;
        }

        if (t0 == 0) {
            t0 = llm_now_us();
            continue;
        }

        if (llm_now_us() - t0 < LLM_THREADS_SPIN_US) {
            continue;
        }

        atomic_store(&llm_pool.caller_asleep, 1);
        d = atomic_load(&llm_pool.done);
        if ((int64_t) d < n_tasks) {
            llm_futex_wait(&llm_pool.done, d);
        }
        atomic_store(&llm_pool.caller_asleep, 0);
    }

    pthread_mutex_unlock(&llm_pool.lock);
}


/* takes one of job's seats, if it has one left and is still the job */
static int
llm_pool_join(uint32_t job)
{
    uint64_t  s;

    s = atomic_load_explicit(&llm_pool.seats, memory_order_relaxed);

    for ( ;; ) {
        if ((uint32_t) (s >> 32) != job || (uint32_t) s == 0) {
            return 0;
        }

        if (atomic_compare_exchange_weak_explicit(&llm_pool.seats, &s, s - 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        {
            return 1;
        }
    }
}


/*
 * Claims tasks of job until none is left.  The fields are read before
 * the claim succeeds: a claim of job's task i means the job was not
 * finished, so it had not been replaced, when they were read.  Each
 * finished task counts in done (release: its stores happen before the
 * caller returns); the last one wakes a caller that went to sleep.
 */
static void
llm_pool_work(uint32_t job, int thread)
{
    void         *arg;
    int64_t       n;
    uint64_t      c;
    llm_task_pt   fn;

    fn = atomic_load_explicit(&llm_pool.fn, memory_order_relaxed);
    arg = atomic_load_explicit(&llm_pool.arg, memory_order_relaxed);
    n = atomic_load_explicit(&llm_pool.n_tasks, memory_order_relaxed);

    c = atomic_load_explicit(&llm_pool.claim, memory_order_relaxed);

    for ( ;; ) {
        if ((uint32_t) (c >> 32) != job || (int64_t) (uint32_t) c >= n) {
            return;
        }

        if (!atomic_compare_exchange_weak_explicit(&llm_pool.claim, &c,
                                                   c + 1,
                                                   memory_order_acquire,
                                                   memory_order_relaxed))
        {
            continue;
        }

        fn(arg, (int64_t) (uint32_t) c, thread);

        if ((int64_t) atomic_fetch_add(&llm_pool.done, 1) + 1 == n
            && thread != 0 && atomic_load(&llm_pool.caller_asleep))
        {
            llm_futex_wake(&llm_pool.done, 1);
        }

        c = atomic_load_explicit(&llm_pool.claim, memory_order_relaxed);
    }
}


static void *
llm_worker(void *data)
{
    int       thread;
    uint32_t  seen, g;
    uint64_t  t0;

    thread = (int) ((intptr_t) data >> 32);
    seen = (uint32_t) (intptr_t) data;
    llm_in_pool = 1;

    for ( ;; ) {
        t0 = 0;

        for (uint32_t spins = 0; ; spins++) {
            g = atomic_load_explicit(&llm_pool.gen, memory_order_acquire);
            if (g != seen) {
                break;
            }

            if ((spins & 63) != 63) {
                llm_cpu_relax();
                continue;
            }

            if (t0 == 0) {
                t0 = llm_now_us();
                continue;
            }

            if (llm_now_us() - t0 < LLM_THREADS_SPIN_US) {
                continue;
            }

            atomic_fetch_add(&llm_pool.n_asleep, 1);
            if (atomic_load(&llm_pool.gen) == seen) {
                llm_futex_wait(&llm_pool.gen, seen);
            }
            atomic_fetch_sub(&llm_pool.n_asleep, 1);
        }

        seen = g;

        if (atomic_load_explicit(&llm_pool.stop, memory_order_acquire)) {
            return NULL;
        }

        if (!llm_pool_join(g)) {
            continue;    /* a small job, or over: not needed */
        }

        llm_pool_work(g, thread);
    }
}


/* under the lock, with no pool running */
static int
llm_pool_start(int n, llm_err_t *err)
{
    int         rc;
    char       *end;
    uint32_t    gen;
    const char  *env;

    if (n <= 0) {
        env = getenv("LLM_THREADS");
        if (env != NULL && *env != '\0') {
            n = (int) strtol(env, &end, 10);
            if (*end != '\0') {
                n = 0;
            }
        }
    }

    if (n <= 0) {
        n = llm_cpus_online();
    }

    if (n > LLM_THREADS_MAX) {
        n = LLM_THREADS_MAX;
    }

    llm_pool.started = 1;
    llm_pool.n_threads = 1;
    atomic_store(&llm_pool.stop, 0);

    if (n == 1) {
        return LLM_OK;
    }

    llm_pool.workers = calloc((size_t) n - 1, sizeof(pthread_t));
    if (llm_pool.workers == NULL) {
        return llm_err_set(err, LLM_ENOMEM,
                           "no memory for %d compute threads", n);
    }

    gen = atomic_load(&llm_pool.gen);

    for (int i = 1; i < n; i++) {
        rc = pthread_create(&llm_pool.workers[i - 1], NULL, llm_worker,
                            (void *) (((intptr_t) i << 32) | gen));
        if (rc != 0) {
            return llm_err_set(err, LLM_ENOMEM,
                               "could not start compute thread %d of %d: "
                               "%s", i, n, strerror(rc));
        }

        llm_pool.n_threads = i + 1;
    }

    return LLM_OK;
}


/* under the lock */
static void
llm_pool_stop(void)
{
    if (!llm_pool.started) {
        return;
    }

    if (llm_pool.n_threads > 1) {
        atomic_store(&llm_pool.stop, 1);
        atomic_fetch_add(&llm_pool.gen, 1);
        llm_futex_wake(&llm_pool.gen, LLM_THREADS_MAX);

        for (int i = 0; i < llm_pool.n_threads - 1; i++) {
            pthread_join(llm_pool.workers[i], NULL);
        }
    }

    free(llm_pool.workers);
    llm_pool.workers = NULL;
    llm_pool.n_threads = 1;
    llm_pool.started = 0;
}


/* the CPUs this process may run on, which taskset and cgroups limit */
static int
llm_cpus_online(void)
{
    int        n;
    cpu_set_t  set;

    if (sched_getaffinity(0, sizeof(cpu_set_t), &set) == 0) {
        n = CPU_COUNT(&set);
        if (n > 0) {
            return n;
        }
    }

    n = (int) sysconf(_SC_NPROCESSORS_ONLN);

    return n > 0 ? n : 1;
}


static void
llm_futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    /* EAGAIN (the value moved on) and EINTR both mean: look again */
    (void) syscall(SYS_futex, (uint32_t *) addr, FUTEX_WAIT_PRIVATE, val,
                   NULL, NULL, 0);
}


static void
llm_futex_wake(_Atomic uint32_t *addr, int n)
{
    (void) syscall(SYS_futex, (uint32_t *) addr, FUTEX_WAKE_PRIVATE, n,
                   NULL, NULL, 0);
}


static void
llm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
