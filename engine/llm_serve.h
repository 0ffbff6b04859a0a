/*
 * Copyright (C) ngx_llm developers
 *
 * `llm-engine serve`: the daemon nginx talks to.
 */

#ifndef LLM_SERVE_H
#define LLM_SERVE_H

/* argv[0] is "serve"; returns the process exit status */
int llm_serve_main(int argc, char **argv);

#endif /* LLM_SERVE_H */
