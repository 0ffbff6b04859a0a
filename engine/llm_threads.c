/*
 * Copyright (C) ngx_llm developers
 *
 * A job is published by bumping a generation counter; workers spin on
 * it for a while after each job (the next matmul is usually
 * microseconds away while a token is computed) and then sleep on it
 * with a futex, so that an idle engine costs no CPU.  The caller works
 * on the job too and then waits, the same way, for the workers that
 * took part to check in.
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
#define LLM_THREADS_SPIN_US  300     /* how long a worker spins before it
                                      * sleeps; a token's matmuls are
                                      * closer together than this */


typedef struct {
    /* the job: written by the caller before gen is bumped (release),
     * read by workers after they see the bump (acquire) */
    llm_task_pt            fn;
    void                  *arg;
    int64_t                n_tasks;
    int                    n_workers;      /* workers taking part */

    _Atomic int64_t        next;           /* next task to claim */

    _Alignas(64)
    _Atomic uint32_t       gen;            /* futex word: job number */
    _Atomic int            n_asleep;       /* workers in futex_wait */
    _Atomic int            stop;

    _Alignas(64)
    _Atomic uint32_t       done;           /* futex word: workers done */
    _Atomic int            caller_asleep;

    _Alignas(64)
    int                    started;
    int                    n_threads;      /* the caller included */
    pthread_t             *workers;        /* (n_threads - 1) */
    pthread_mutex_t        lock;           /* one caller at a time */
} llm_pool_t;


static void *llm_worker(void *data);
static void llm_pool_work(int thread);
static int llm_pool_start(int n, llm_err_t *err);
static void llm_pool_stop(void);
static int llm_cpus_online(void);
static void llm_futex_wait(_Atomic uint32_t *addr, uint32_t val);
static void llm_futex_wake(_Atomic uint32_t *addr);
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
    uint32_t  d;
    uint64_t  t0;

    if (n_tasks <= 0) {
        return;
    }

    if (llm_in_pool || n_tasks == 1) {
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

    llm_pool.fn = fn;
    llm_pool.arg = arg;
    llm_pool.n_tasks = n_tasks;
    llm_pool.n_workers = n_workers;
    atomic_store_explicit(&llm_pool.next, 0, memory_order_relaxed);
    atomic_store_explicit(&llm_pool.done, 0, memory_order_relaxed);

    /* seq_cst against the workers' n_asleep++ then gen check: either
     * they see the new gen or we see them asleep */
    atomic_fetch_add(&llm_pool.gen, 1);

    if (n_workers > 0 && atomic_load(&llm_pool.n_asleep) > 0) {
        llm_futex_wake(&llm_pool.gen);
    }

    llm_in_pool = 1;
    llm_pool_work(0);
    llm_in_pool = 0;

    t0 = 0;

    for (uint32_t spins = 0; ; spins++) {
        d = atomic_load_explicit(&llm_pool.done, memory_order_acquire);
        if ((int) d >= n_workers) {
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
        if ((int) d < n_workers) {
            llm_futex_wait(&llm_pool.done, d);
        }
        atomic_store(&llm_pool.caller_asleep, 0);
    }

    pthread_mutex_unlock(&llm_pool.lock);
}


/* claims tasks until none is left */
static void
llm_pool_work(int thread)
{
    int64_t  i;

    for ( ;; ) {
        i = atomic_fetch_add_explicit(&llm_pool.next, 1,
                                      memory_order_relaxed);
        if (i >= llm_pool.n_tasks) {
            return;
        }

        llm_pool.fn(llm_pool.arg, i, thread);
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

        if (thread > llm_pool.n_workers) {
            continue;    /* a small job: not needed */
        }

        llm_pool_work(thread);

        /* release: our tasks' stores happen before the caller's return;
         * seq_cst against the caller's caller_asleep store */
        if ((int) atomic_fetch_add(&llm_pool.done, 1) + 1
            == llm_pool.n_workers
            && atomic_load(&llm_pool.caller_asleep))
        {
            llm_futex_wake(&llm_pool.done);
        }
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
        llm_futex_wake(&llm_pool.gen);

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
llm_futex_wake(_Atomic uint32_t *addr)
{
    (void) syscall(SYS_futex, (uint32_t *) addr, FUTEX_WAKE_PRIVATE,
                   LLM_THREADS_MAX, NULL, NULL, 0);
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
