/*
 * Copyright (C) ngx_llm developers
 *
 * Request parsing and stop strings.  The module validates a request
 * before it submits it; the engine checks everything again, since shared
 * memory is written by another process.
 */

#define _GNU_SOURCE

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_request.h"


static int llm_request_fail(llm_request_err_t *e, const char *field,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int llm_request_number(json_t *root, const char *key, double lo,
    double hi, int integer, double *out, llm_request_err_t *e);
static int llm_request_prompt(llm_request_t *rq, llm_request_err_t *e);
static int llm_request_stop(llm_request_t *rq, llm_request_err_t *e);
static int llm_request_bias(llm_request_t *rq, llm_request_err_t *e);


static int
llm_request_fail(llm_request_err_t *e, const char *field, const char *fmt,
    ...)
{
    va_list  ap;

    e->status = 400;
    e->type = "invalid_request_error";
    e->code = field;

    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);

    return LLM_ERR;
}


/* absent or null: leaves *out alone; else a number in [lo, hi] */
static int
llm_request_number(json_t *root, const char *key, double lo, double hi,
    int integer, double *out, llm_request_err_t *e)
{
    double   v;
    json_t  *j;

    j = json_object_get(root, key);
    if (j == NULL || json_is_null(j)) {
        return LLM_OK;
    }

    if (integer ? !json_is_integer(j) : !json_is_number(j)) {
        return llm_request_fail(e, key, "'%s' must be %s", key,
                                integer ? "an integer" : "a number");
    }

    v = json_number_value(j);
    if (!(v >= lo && v <= hi)) {
        return llm_request_fail(e, key, "'%s' is %g, outside %g..%g", key, v,
                                lo, hi);
    }

    *out = v;
    return LLM_OK;
}


int
llm_request_parse(llm_request_t *rq, const char *p, size_t len,
    uint64_t seed_default, llm_request_err_t *e)
{
    double        v;
    json_t       *j;
    json_error_t  jerr;

    memset(rq, 0, sizeof(llm_request_t));

    rq->root = json_loadb(p, len, JSON_REJECT_DUPLICATES, &jerr);
    if (rq->root == NULL || !json_is_object(rq->root)) {
        llm_request_free(rq);
        return llm_request_fail(e, "invalid_json",
                                "the request is not a JSON object");
    }

    j = json_object_get(rq->root, "id");
    if (json_is_string(j)) {
        snprintf(rq->id, sizeof(rq->id), "%s", json_string_value(j));
    }

    j = json_object_get(rq->root, "model");
    if (!json_is_string(j)) {
        llm_request_free(rq);
        return llm_request_fail(e, "model", "'model' must be a string");
    }
    rq->model = json_string_value(j);

    if (llm_request_prompt(rq, e) != LLM_OK) {
        llm_request_free(rq);
        return LLM_ERR;
    }

    rq->max_tokens = 16;
    rq->temperature = 1.0f;
    rq->top_p = 1.0f;
    rq->repetition_penalty = 1.0f;
    rq->seed = seed_default;
    rq->logprobs = -1;

#define NUMBER(key, lo, hi, integer, field, type)                           \
    v = (double) rq->field;                                                 \
    if (llm_request_number(rq->root, key, lo, hi, integer, &v, e)           \
        != LLM_OK)                                                          \
    {                                                                       \
        llm_request_free(rq);                                               \
        return LLM_ERR;                                                     \
    }                                                                       \
    rq->field = (type) v

    /* top_p and repetition_penalty must be above 0: one that is, but
     * below the smallest float, is that float rather than 0 */

    NUMBER("max_tokens", 1, 1 << 24, 1, max_tokens, int);
    NUMBER("temperature", 0, 2, 0, temperature, float);
    NUMBER("top_p", 0, 1, 0, top_p, float);
    if (v > 0.0 && rq->top_p == 0.0f) {
        rq->top_p = FLT_MIN;
    }
    NUMBER("top_k", 0, 1 << 24, 1, top_k, int);
    NUMBER("min_p", 0, 1, 0, min_p, float);
    NUMBER("presence_penalty", -2, 2, 0, presence_penalty, float);
    NUMBER("frequency_penalty", -2, 2, 0, frequency_penalty, float);
    NUMBER("repetition_penalty", 0, 10, 0, repetition_penalty, float);
    if (v > 0.0 && rq->repetition_penalty == 0.0f) {
        rq->repetition_penalty = FLT_MIN;
    }
    NUMBER("logprobs", 0, LLM_LOGPROBS_MAX, 1, logprobs, int);
    NUMBER("priority", -1000000, 1000000, 1, priority, int);

#undef NUMBER

    if (rq->top_p <= 0.0f) {
        llm_request_free(rq);
        return llm_request_fail(e, "top_p", "'top_p' must be above 0");
    }
    if (rq->repetition_penalty <= 0.0f) {
        llm_request_free(rq);
        return llm_request_fail(e, "repetition_penalty",
                                "'repetition_penalty' must be above 0");
    }

    /* any 64-bit integer; negative ones as their two's complement */
    j = json_object_get(rq->root, "seed");
    if (j != NULL && !json_is_null(j)) {
        if (!json_is_integer(j)) {
            llm_request_free(rq);
            return llm_request_fail(e, "seed", "'seed' must be an integer");
        }
        rq->seed = (uint64_t) json_integer_value(j);
    }

    j = json_object_get(rq->root, "stream");
    if (j != NULL && !json_is_null(j)) {
        if (!json_is_boolean(j)) {
            llm_request_free(rq);
            return llm_request_fail(e, "stream", "'stream' must be a boolean");
        }
        rq->stream = json_is_true(j);
    }

    if (llm_request_stop(rq, e) != LLM_OK
        || llm_request_bias(rq, e) != LLM_OK)
    {
        llm_request_free(rq);
        return LLM_ERR;
    }

    return LLM_OK;
}


static int
llm_request_prompt(llm_request_t *rq, llm_request_err_t *e)
{
    int      n;
    json_t  *prompt, *tokens, *messages, *m, *v;
    size_t   i;

    prompt = json_object_get(rq->root, "prompt");
    tokens = json_object_get(rq->root, "prompt_tokens");
    messages = json_object_get(rq->root, "messages");

    n = (prompt != NULL) + (tokens != NULL) + (messages != NULL);
    if (n != 1) {
        return llm_request_fail(e, "prompt", "a request needs exactly one of "
                                "'prompt', 'prompt_tokens' and 'messages'");
    }

    if (prompt != NULL) {
        if (!json_is_string(prompt)) {
            return llm_request_fail(e, "prompt", "'prompt' must be a string");
        }
        rq->kind = LLM_PROMPT_TEXT;
        rq->prompt = json_string_value(prompt);
        rq->prompt_len = json_string_length(prompt);
        return LLM_OK;
    }

    if (tokens != NULL) {
        if (!json_is_array(tokens) || json_array_size(tokens) == 0) {
            return llm_request_fail(e, "prompt_tokens", "'prompt_tokens' "
                                    "must be a non-empty array of integers");
        }
        json_array_foreach(tokens, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0
                || json_integer_value(v) > INT32_MAX)
            {
                return llm_request_fail(e, "prompt_tokens",
                                        "'prompt_tokens' must hold token ids");
            }
        }
        rq->kind = LLM_PROMPT_TOKENS;
        rq->tokens = tokens;
        return LLM_OK;
    }

    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        return llm_request_fail(e, "messages",
                                "'messages' must be a non-empty array");
    }
    json_array_foreach(messages, i, m) {
        if (!json_is_object(m)
            || !json_is_string(json_object_get(m, "role"))
            || !json_is_string(json_object_get(m, "content")))
        {
            return llm_request_fail(e, "messages", "each message needs a "
                                    "string 'role' and a string 'content'");
        }
    }
    rq->kind = LLM_PROMPT_CHAT;
    rq->messages = messages;
    return LLM_OK;
}


static int
llm_request_stop_add(llm_request_t *rq, json_t *v, llm_request_err_t *e)
{
    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > LLM_STOP_LEN_MAX - 1)
    {
        return llm_request_fail(e, "stop", "each stop string must have "
                                "1..%d bytes", LLM_STOP_LEN_MAX - 1);
    }

    rq->stop[rq->n_stop] = json_string_value(v);
    rq->stop_len[rq->n_stop] = json_string_length(v);
    rq->n_stop++;

    return LLM_OK;
}


static int
llm_request_stop(llm_request_t *rq, llm_request_err_t *e)
{
    json_t  *stop, *v;
    size_t   i;

    stop = json_object_get(rq->root, "stop");
    if (stop == NULL || json_is_null(stop)) {
        return LLM_OK;
    }

    if (json_is_string(stop)) {
        return llm_request_stop_add(rq, stop, e);
    }

    if (!json_is_array(stop) || json_array_size(stop) > LLM_STOP_MAX) {
        return llm_request_fail(e, "stop", "'stop' must be a string or an "
                                "array of at most %d strings", LLM_STOP_MAX);
    }

    json_array_foreach(stop, i, v) {
        if (llm_request_stop_add(rq, v, e) != LLM_OK) {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


static int
llm_request_bias(llm_request_t *rq, llm_request_err_t *e)
{
    long         id;
    char        *end;
    double       b;
    json_t      *bias, *v;
    const char  *key;

    bias = json_object_get(rq->root, "logit_bias");
    if (bias == NULL || json_is_null(bias)) {
        return LLM_OK;
    }

    if (!json_is_object(bias) || json_object_size(bias) > LLM_BIAS_MAX) {
        return llm_request_fail(e, "logit_bias", "'logit_bias' must be an "
                                "object of at most %d entries", LLM_BIAS_MAX);
    }

    json_object_foreach(bias, key, v) {
        id = strtol(key, &end, 10);
        if (*key == '\0' || *end != '\0' || id < 0 || id > INT32_MAX) {
            return llm_request_fail(e, "logit_bias",
                                    "'logit_bias' keys must be token ids");
        }
        if (!json_is_number(v)) {
            return llm_request_fail(e, "logit_bias",
                                    "'logit_bias' values must be numbers");
        }
        b = json_number_value(v);
        if (!(b >= -100 && b <= 100)) {
            return llm_request_fail(e, "logit_bias",
                                    "'logit_bias' values must be -100..100");
        }
        rq->bias_ids[rq->n_bias] = (int32_t) id;
        rq->bias[rq->n_bias] = (float) b;
        rq->n_bias++;
    }

    return LLM_OK;
}


void
llm_request_free(llm_request_t *rq)
{
    json_decref(rq->root);
    rq->root = NULL;
}


void
llm_stop_init(llm_stop_t *st, const llm_request_t *rq)
{
    memset(st, 0, sizeof(llm_stop_t));

    /* copied: the request's document is gone before the output ends */
    st->n = rq->n_stop;
    for (int i = 0; i < rq->n_stop; i++) {
        memcpy(st->s[i], rq->stop[i], rq->stop_len[i]);
        st->len[i] = rq->stop_len[i];
    }
}


/*
 * How long the longest tail of buf[0..n) is that begins some stop string
 * (and is shorter than it: a whole one was found already).
 */
static size_t
llm_stop_partial(const llm_stop_t *st, const char *buf, size_t n)
{
    size_t  best, k;

    best = 0;
    for (int i = 0; i < st->n; i++) {
        k = st->len[i] - 1 < n ? st->len[i] - 1 : n;
        for ( /* void */ ; k > best; k--) {
            if (memcmp(buf + n - k, st->s[i], k) == 0) {
                best = k;
                break;
            }
        }
    }

    return best;
}


int
llm_stop_feed(llm_stop_t *st, const char *text, size_t len, char *out,
    size_t *out_len)
{
    char    *buf, *hit, *first;
    size_t   n, keep, emit;

    if (st->n == 0) {
        memcpy(out, text, len);
        *out_len = len;
        return 0;
    }

    /* what is held, then the new text: out has room for both */
    buf = out;
    memmove(buf + st->n_held, text, len);
    memcpy(buf, st->held, st->n_held);
    n = st->n_held + len;
    st->n_held = 0;

    /* the earliest completed stop string ends the output */
    first = NULL;
    for (int i = 0; i < st->n; i++) {
        hit = memmem(buf, n, st->s[i], st->len[i]);
        if (hit != NULL && (first == NULL || hit < first)) {
            first = hit;
        }
    }
    if (first != NULL) {
        *out_len = (size_t) (first - buf);
        return 1;
    }

    keep = llm_stop_partial(st, buf, n);
    emit = n - keep;
    memcpy(st->held, buf + emit, keep);
    st->n_held = keep;
    *out_len = emit;

    return 0;
}


size_t
llm_stop_flush(llm_stop_t *st, char *out)
{
    size_t  n;

    n = st->n_held;
    memcpy(out, st->held, n);
    st->n_held = 0;

    return n;
}
