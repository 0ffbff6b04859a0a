/*
 * Copyright (C) ngx_llm developers
 *
 * A request as the engine receives it from shared memory (protocol v2,
 * engine/proto/llm_proto.h): parsed from hostile JSON and checked field
 * by field.  Also the stop-string matcher that holds back text only while
 * it could still become a stop string.
 */

#ifndef LLM_REQUEST_H
#define LLM_REQUEST_H

#include <jansson.h>

#include "llm_common.h"
#include "llm_proto.h"


#define LLM_STOP_MAX       4
#define LLM_STOP_LEN_MAX   256
#define LLM_BIAS_MAX       1024
#define LLM_ID_MAX         64


enum {
    LLM_PROMPT_TEXT = 1,     /* "prompt": text, BOS added */
    LLM_PROMPT_TOKENS,       /* "prompt_tokens": ids, used as given */
    LLM_PROMPT_CHAT          /* "messages": rendered by the chat template */
};


typedef struct {
    json_t      *root;           /* owns every string below */

    char         id[LLM_ID_MAX];
    const char  *model;
    int          kind;           /* LLM_PROMPT_* */
    const char  *prompt;         /* TEXT */
    size_t       prompt_len;
    json_t      *tokens;         /* TOKENS: array of integers */
    json_t      *messages;       /* CHAT: array of {role, content} */

    int          max_tokens;
    float        temperature;
    float        top_p;
    int          top_k;
    float        min_p;
    uint64_t     seed;
    float        presence_penalty;
    float        frequency_penalty;
    float        repetition_penalty;
    int          n_bias;
    int32_t      bias_ids[LLM_BIAS_MAX];
    float        bias[LLM_BIAS_MAX];
    int          n_stop;
    const char  *stop[LLM_STOP_MAX];
    size_t       stop_len[LLM_STOP_MAX];
    int          logprobs;       /* -1: none, else alternatives 0..20 */
    int          priority;
    int          stream;
} llm_request_t;


/* what is wrong with a request, for the ERROR event */
typedef struct {
    uint16_t     status;
    const char  *type;
    const char  *code;           /* the field's name, or a reason */
    char         message[256];
} llm_request_err_t;


/*
 * Parses len bytes of request JSON.  On success the request holds a
 * reference to the parsed document: free it with llm_request_free().
 * seed_default is used when the request gives no seed.
 */
int llm_request_parse(llm_request_t *rq, const char *p, size_t len,
    uint64_t seed_default, llm_request_err_t *e);
void llm_request_free(llm_request_t *rq);


/*
 * Stop strings.  llm_stop_feed() takes the next piece of output text and
 * writes to out (room for len + LLM_STOP_LEN_MAX bytes) what may be shown
 * now: everything except a tail that is
 * still the beginning of some stop string.  It returns 1 when a stop
 * string was completed (out then holds the text before it, and the rest
 * is dropped), else 0.  llm_stop_flush() gives back what is held when the
 * output ends for another reason.
 */
typedef struct {
    int          n;
    char         s[LLM_STOP_MAX][LLM_STOP_LEN_MAX];
    size_t       len[LLM_STOP_MAX];
    char         held[LLM_STOP_LEN_MAX];
    size_t       n_held;
} llm_stop_t;

void llm_stop_init(llm_stop_t *st, const llm_request_t *rq);
int llm_stop_feed(llm_stop_t *st, const char *text, size_t len, char *out,
    size_t *out_len);
size_t llm_stop_flush(llm_stop_t *st, char *out);


#endif /* LLM_REQUEST_H */
