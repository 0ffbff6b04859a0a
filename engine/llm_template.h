/*
 * Copyright (C) ngx_llm developers
 *
 * A Jinja interpreter for the subset that chat templates use, so that
 * the engine renders each model's own tokenizer.chat_template the way
 * HF transformers' apply_chat_template does: jinja2 with trim_blocks,
 * lstrip_blocks, loop controls, an immutable sandbox, tojson keeping
 * non-ASCII, raise_exception() and strftime_now().
 *
 * A parsed template is immutable and may be rendered by several threads
 * at once; each render allocates from its own arena, freed at its end.
 * Every limit (template size, output size, memory, steps, nesting) is a
 * clean error, never a crash: templates and messages are hostile input.
 */

#ifndef LLM_TEMPLATE_H
#define LLM_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "llm_common.h"


#define LLM_TEMPLATE_MAX_SRC      (1024 * 1024)         /* template bytes */
#define LLM_TEMPLATE_MAX_OUTPUT   (16 * 1024 * 1024)    /* default */
#define LLM_TEMPLATE_MAX_MEMORY   (256 * 1024 * 1024)   /* default */
#define LLM_TEMPLATE_MAX_STEPS    20000000              /* default */
#define LLM_TEMPLATE_MAX_DEPTH    100    /* syntax nesting in a template */
#define LLM_TEMPLATE_MAX_CALLS    40     /* macro calls in progress */
#define LLM_TEMPLATE_MAX_NEST     200    /* nesting of data and values */


typedef struct llm_template_s  llm_template_t;

typedef struct {
    json_t       *messages;     /* array of message objects; not changed */
    const char   *bos_token;    /* NULL: "" */
    const char   *eos_token;    /* NULL: "" */
    int           add_generation_prompt;
    const char   *date;         /* "15 Jan 2026" or "2026-01-15" for
                                   strftime_now(); NULL: today */
    json_t       *extra;        /* NULL or an object of more variables
                                   (tools, documents, enable_thinking...);
                                   they override the ones above */

    /* 0 means the LLM_TEMPLATE_MAX_* default */
    size_t        max_output;   /* bytes of rendered text */
    size_t        max_memory;   /* bytes the render may allocate */
    uint64_t      max_steps;    /* evaluation steps */
} llm_template_vars_t;


/*
 * Parses a template.  Syntax errors, unknown filters and unknown tests
 * fail here with err->err LLM_EFORMAT and a message naming the line.
 */
int llm_template_parse(llm_template_t **out, const char *src, size_t len,
    llm_err_t *err);

/*
 * Renders into a malloc()ed, NUL-terminated string of *out_len bytes,
 * which the caller frees.  On failure *out is NULL and err is set:
 * LLM_EINVAL with exactly the message when the template called
 * raise_exception(msg) (the conversation was rejected by the template),
 * LLM_ENOMEM when malloc failed, otherwise LLM_EFORMAT with the line.
 */
int llm_template_render(const llm_template_t *t,
    const llm_template_vars_t *vars, char **out, size_t *out_len,
    llm_err_t *err);

void llm_template_free(llm_template_t *t);

/*
 * The "render" command of llm-engine; argv[0] is the command name:
 *
 *   render --template FILE --messages JSON|@FILE [--bos S] [--eos S]
 *          [--date D] [--vars JSON|@FILE] [--no-generation-prompt]
 *
 * Prints the rendering to stdout exactly as rendered.  Returns the exit
 * status: 0, 1 when rendering failed (the message, on one line, goes to
 * stderr), 2 for bad usage.
 */
int llm_template_render_main(int argc, char **argv);


#endif /* LLM_TEMPLATE_H */
