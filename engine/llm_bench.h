/*
 * Copyright (C) ngx_llm developers
 *
 * llm-engine bench: prefill and decode rates of a model on the CPU, and
 * the decode rate as a share of the memory-read ceiling measured in the
 * same run.
 */

#ifndef LLM_BENCH_H
#define LLM_BENCH_H


/* argv[0] is "bench"; returns the process exit status */
int llm_bench_main(int argc, char **argv);


#endif /* LLM_BENCH_H */
