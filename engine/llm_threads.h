/*
 * Copyright (C) ngx_llm developers
 *
 * The process-wide pool of compute threads: workers are created once
 * and parked between jobs, so that handing out a job costs a few
 * microseconds (a counter bump, and a futex wake only for workers that
 * have gone to sleep).  llm_matmul() runs on it; model code may run its
 * own loops on it (attention over heads, norms over tokens ...):
 *
 *     static void
 *     head_task(void *arg, int64_t task, int thread)
 *     {
 *         my_job_t  *job = arg;
 *
 *         attend(job, (int) task, job->scratch[thread]);
 *     }
 *
 *     llm_threads_run(head_task, &job, n_heads);
 *
 * Tasks are numbered 0..n_tasks-1 and claimed one at a time by whichever
 * thread is free (the caller takes part as thread 0), so they may be of
 * uneven cost; make them a few microseconds each at least.  thread is
 * in 0..llm_threads_count()-1 and indexes per-thread scratch: two tasks
 * never run at once on the same thread number.  llm_threads_run()
 * returns when every task has returned; its stores are visible to the
 * caller then.
 *
 * A call from inside a task runs its tasks inline on that thread, and
 * two threads calling at once take turns, so nesting and concurrent
 * callers are safe, just not parallel.  Nothing here allocates after
 * the pool has started.
 */

#ifndef LLM_THREADS_H
#define LLM_THREADS_H

#include "llm_common.h"


typedef void (*llm_task_pt)(void *arg, int64_t task, int thread);


/*
 * Starts the pool with n threads in all, the caller included (n - 1
 * workers); n <= 0 takes $LLM_THREADS, else the number of online CPUs.
 * Optional: the first llm_threads_run() starts the default pool.  A
 * pool that is running is stopped first, so this also resizes it; do
 * not call it while another thread is inside llm_threads_run().  On
 * failure the pool runs with the workers it could start (maybe none:
 * everything on the caller's thread) and err says why.
 */
int llm_threads_init(int n, llm_err_t *err);

/* threads a job may use, the caller included; starts the default pool
 * if none is running */
int llm_threads_count(void);

/* runs fn(arg, task, thread) for every task in 0..n_tasks-1 */
void llm_threads_run(llm_task_pt fn, void *arg, int64_t n_tasks);

/* joins the workers; a later llm_threads_run() starts a new pool */
void llm_threads_free(void);


#endif /* LLM_THREADS_H */
