
/*
 * Copyright (C) ngx_llm developers
 *
 * The OpenAI API's answers: text_completion and chat.completion objects,
 * their streaming chunks, usage, logprobs built from LOGPROBS events, and
 * the models list.  Every string from the engine goes through
 * ngx_http_llm_json_string(), which repairs invalid UTF-8.
 *
 *   completions logprobs: {"tokens", "token_logprobs", "top_logprobs",
 *                          "text_offset"} (text_offset in bytes of text)
 *   chat logprobs:        {"content": [{"token", "logprob", "bytes",
 *                          "top_logprobs": [{"token", "logprob",
 *                          "bytes"}]}]}
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <math.h>

#include "ngx_http_llm_module.h"


static json_t *ngx_http_llm_object(ngx_http_llm_ctx_t *ctx,
    const char *object);
static json_t *ngx_http_llm_choice_json(ngx_http_llm_choice_t *ch,
    const char *finish, ngx_uint_t chunk);
static json_t *ngx_http_llm_usage_json(ngx_http_llm_ctx_t *ctx);
static json_t *ngx_http_llm_take_logprobs(ngx_http_llm_choice_t *ch,
    ngx_uint_t always);
static json_t *ngx_http_llm_logprobs_new(ngx_http_llm_ctx_t *ctx);
static json_t *ngx_http_llm_piece(ngx_pool_t *pool, u_char *p, size_t len,
    float logprob, ngx_uint_t chat);
static json_t *ngx_http_llm_logprob(float logprob);


/* an event's text, at the end of its choice's */

ngx_int_t
ngx_http_llm_append(ngx_http_llm_choice_t *ch, u_char *p, size_t len)
{
    u_char              *text;
    size_t               size;
    ngx_http_request_t  *r;

    if (len == 0) {
        return NGX_OK;
    }

    if (ch->text_size - ch->text_len < len) {
        r = ch->ctx->request;

        size = ngx_max(ch->text_size * 2, ch->text_len + len);
        size = ngx_max(size, 256);

        text = ngx_pnalloc(r->pool, size);
        if (text == NULL) {
            return NGX_ERROR;
        }

        if (ch->text) {
            ngx_memcpy(text, ch->text, ch->text_len);
            ngx_pfree(r->pool, ch->text);
        }

        ch->text = text;
        ch->text_size = size;
    }

    ngx_memcpy(ch->text + ch->text_len, p, len);
    ch->text_len += len;

    return NGX_OK;
}


/*
 * The request's usage: completion tokens of every choice (those still
 * running count what arrived), prompt and cached tokens once per prompt.
 */

void
ngx_http_llm_usage(ngx_http_llm_ctx_t *ctx, ngx_http_llm_usage_t *u)
{
    ngx_uint_t              i, counted;
    ngx_http_llm_choice_t  *ch;

    ngx_memzero(u, sizeof(ngx_http_llm_usage_t));

    /* choices come in the order of their prompts */

    counted = NGX_CONF_UNSET_UINT;

    for (i = 0; i < ctx->n_choices; i++) {
        ch = &ctx->choices[i];

        if (!ch->finished) {
            u->completion += ch->tokens;
            continue;
        }

        u->completion += ch->done.completion_tokens;

        if (ch->prompt != counted) {
            counted = ch->prompt;
            u->prompt += ch->done.prompt_tokens;
            u->cached += ch->done.cached_tokens;
        }
    }
}


const char *
ngx_http_llm_finish_reason(uint32_t reason)
{
    switch (reason) {

    case LLM_FINISH_STOP:
        return "stop";

    case LLM_FINISH_LENGTH:
        return "length";

    default:
        return NULL;
    }
}


/* {"id", "object", "created", "model"}: what every answer starts with */

static json_t *
ngx_http_llm_object(ngx_http_llm_ctx_t *ctx, const char *object)
{
    return json_pack("{s:s%,s:s,s:I,s:s%}",
                     "id", (const char *) ctx->id.data, ctx->id.len,
                     "object", object,
                     "created", (json_int_t) ctx->created,
                     "model", (const char *) ctx->model.data,
                     ctx->model.len);
}


/* the whole answer, once every choice is done */

json_t *
ngx_http_llm_response_json(ngx_http_llm_ctx_t *ctx)
{
    ngx_uint_t   i, chat;
    json_t      *json, *choices;

    chat = (ctx->endpoint == NGX_HTTP_LLM_CHAT);

    json = ngx_http_llm_object(ctx, chat ? "chat.completion"
                                         : "text_completion");
    if (json == NULL) {
        return NULL;
    }

    choices = json_array();

    if (json_object_set_new(json, "choices", choices) != 0) {
        goto failed;
    }

    for (i = 0; i < ctx->n_choices; i++) {
        if (json_array_append_new(choices,
                ngx_http_llm_choice_json(&ctx->choices[i],
                    ngx_http_llm_finish_reason(
                        ctx->choices[i].done.finish_reason), 0))
            != 0)
        {
            goto failed;
        }
    }

    if (json_object_set_new(json, "usage", ngx_http_llm_usage_json(ctx))
        != 0)
    {
        goto failed;
    }

    return json;

failed:

    json_decref(json);
    return NULL;
}


/*
 * One streaming chunk for a choice: the text and logprobs gathered
 * since the last one (which it consumes), or with finish set, the
 * choice's end.
 */

json_t *
ngx_http_llm_chunk_json(ngx_http_llm_choice_t *ch, const char *finish)
{
    json_t              *json;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ch->ctx;

    json = ngx_http_llm_object(ctx, (ctx->endpoint == NGX_HTTP_LLM_CHAT)
                                    ? "chat.completion.chunk"
                                    : "text_completion");
    if (json == NULL) {
        return NULL;
    }

    if (json_object_set_new(json, "choices",
                            json_pack("[o]",
                                      ngx_http_llm_choice_json(ch, finish,
                                                               1)))
        != 0
        || (ctx->include_usage
            && json_object_set_new(json, "usage", json_null()) != 0))
    {
        json_decref(json);
        return NULL;
    }

    ch->offset += ch->text_len;
    ch->text_len = 0;

    return json;
}


/* the last chunk of a stream with stream_options.include_usage */

json_t *
ngx_http_llm_usage_chunk_json(ngx_http_llm_ctx_t *ctx)
{
    json_t  *json;

    json = ngx_http_llm_object(ctx, (ctx->endpoint == NGX_HTTP_LLM_CHAT)
                                    ? "chat.completion.chunk"
                                    : "text_completion");
    if (json == NULL) {
        return NULL;
    }

    if (json_object_set_new(json, "choices", json_array()) != 0
        || json_object_set_new(json, "usage", ngx_http_llm_usage_json(ctx))
           != 0)
    {
        json_decref(json);
        return NULL;
    }

    return json;
}


/*
 * An entry of "choices".  chunk: the text since the last chunk, a chat
 * "delta" (the role in the first one, nothing in the last), else all of
 * the text or the chat "message".
 */

static json_t *
ngx_http_llm_choice_json(ngx_http_llm_choice_t *ch, const char *finish,
    ngx_uint_t chunk)
{
    json_t              *text, *logprobs, *msg;
    ngx_pool_t          *pool;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ch->ctx;
    pool = ctx->request->pool;

    text = ngx_http_llm_json_string(pool, ch->text, ch->text_len);
    logprobs = ngx_http_llm_take_logprobs(ch, !chunk);

    if (ctx->endpoint != NGX_HTTP_LLM_CHAT) {
        return json_pack("{s:o,s:I,s:o,s:s?}",
                         "text", text,
                         "index", (json_int_t) ch->index,
                         "logprobs", logprobs,
                         "finish_reason", finish);
    }

    if (!chunk) {
        msg = json_pack("{s:s,s:o}", "role", "assistant", "content", text);

    } else if (finish) {
        json_decref(text);
        msg = json_object();

    } else if (!ch->role_sent) {
        ch->role_sent = 1;
        msg = json_pack("{s:s,s:o}", "role", "assistant", "content", text);

    } else {
        msg = json_pack("{s:o}", "content", text);
    }

    return json_pack("{s:I,s:o,s:o,s:s?}",
                     "index", (json_int_t) ch->index,
                     chunk ? "delta" : "message", msg,
                     "logprobs", logprobs,
                     "finish_reason", finish);
}


/* {"prompt_tokens", "completion_tokens", "total_tokens", details} */

static json_t *
ngx_http_llm_usage_json(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_usage_t  u;

    ngx_http_llm_usage(ctx, &u);

    return json_pack("{s:I,s:I,s:I,s:{s:I}}",
                     "prompt_tokens", (json_int_t) u.prompt,
                     "completion_tokens", (json_int_t) u.completion,
                     "total_tokens", (json_int_t) (u.prompt + u.completion),
                     "prompt_tokens_details",
                         "cached_tokens", (json_int_t) u.cached);
}


/*
 * The choice's logprobs gathered so far, handed over to the caller:
 * null when the request did not ask for them, or (unless always) when
 * there are none.
 */

static json_t *
ngx_http_llm_take_logprobs(ngx_http_llm_choice_t *ch, ngx_uint_t always)
{
    json_t  *lp;

    if (ch->ctx->logprobs < 0) {
        return json_null();
    }

    lp = ch->logprobs;
    ch->logprobs = NULL;

    if (lp == NULL) {
        lp = always ? ngx_http_llm_logprobs_new(ch->ctx) : json_null();
    }

    return lp;
}


static json_t *
ngx_http_llm_logprobs_new(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->endpoint == NGX_HTTP_LLM_CHAT) {
        return json_pack("{s:[]}", "content");
    }

    return json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs",
                     "top_logprobs", "text_offset");
}


/*
 * LOGPROBS: llm_ev_logprobs_t and the sampled token's piece, then n_top
 * times llm_ev_alt_t and a piece.  The entry waits in ch->lp_pending for
 * the TOKEN it describes.  NGX_DECLINED: the event is malformed.
 */

ngx_int_t
ngx_http_llm_logprobs_event(ngx_http_llm_choice_t *ch, u_char *buf,
    size_t len)
{
    u_char              *p, *last;
    json_t              *entry, *top, *alt;
    ngx_uint_t           i, chat;
    const char          *key;
    llm_ev_alt_t         a;
    ngx_pool_t          *pool;
    llm_ev_logprobs_t    lp;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ch->ctx;
    pool = ctx->request->pool;
    chat = (ctx->endpoint == NGX_HTTP_LLM_CHAT);

    if (len < sizeof(llm_ev_logprobs_t)) {
        return NGX_DECLINED;
    }

    ngx_memcpy(&lp, buf, sizeof(llm_ev_logprobs_t));

    p = buf + sizeof(llm_ev_logprobs_t);
    last = buf + len;

    if (lp.n_top > LLM_LOGPROBS_MAX || lp.piece_len > LLM_PIECE_MAX
        || (size_t) (last - p) < lp.piece_len)
    {
        return NGX_DECLINED;
    }

    if (ch->lp_pending && ngx_http_llm_logprobs_token(ch) != NGX_OK) {
        return NGX_ERROR;
    }

    entry = ngx_http_llm_piece(pool, p, lp.piece_len, lp.logprob, chat);
    top = chat ? json_array() : json_object();

    if (entry == NULL || top == NULL
        || json_object_set_new(entry, "top_logprobs", top) != 0)
    {
        json_decref(entry);
        return NGX_ERROR;
    }

    ch->lp_pending = entry;

    p += lp.piece_len;

    for (i = 0; i < lp.n_top; i++) {

        if ((size_t) (last - p) < sizeof(llm_ev_alt_t)) {
            return NGX_DECLINED;
        }

        ngx_memcpy(&a, p, sizeof(llm_ev_alt_t));
        p += sizeof(llm_ev_alt_t);

        if (a.piece_len > LLM_PIECE_MAX || (size_t) (last - p) < a.piece_len)
        {
            return NGX_DECLINED;
        }

        alt = ngx_http_llm_piece(pool, p, a.piece_len, a.logprob, chat);
        if (alt == NULL) {
            return NGX_ERROR;
        }

        if (chat) {
            if (json_array_append_new(top, alt) != 0) {
                return NGX_ERROR;
            }

        } else {
            /* {"piece": logprob}: pieces that repeat keep the first */

            key = json_string_value(json_object_get(alt, "token"));

            if (json_object_get(top, key) == NULL
                && json_object_set(top, key, json_object_get(alt, "logprob"))
                   != 0)
            {
                json_decref(alt);
                return NGX_ERROR;
            }

            json_decref(alt);
        }

        p += a.piece_len;
    }

    return NGX_OK;
}


/* the TOKEN that ch->lp_pending describes arrived: the entry is kept */

ngx_int_t
ngx_http_llm_logprobs_token(ngx_http_llm_choice_t *ch)
{
    json_t  *entry, *lp;

    entry = ch->lp_pending;
    ch->lp_pending = NULL;

    if (ch->logprobs == NULL) {
        ch->logprobs = ngx_http_llm_logprobs_new(ch->ctx);
        if (ch->logprobs == NULL) {
            json_decref(entry);
            return NGX_ERROR;
        }
    }

    lp = ch->logprobs;

    if (ch->ctx->endpoint == NGX_HTTP_LLM_CHAT) {
        return json_array_append_new(json_object_get(lp, "content"), entry)
               ? NGX_ERROR : NGX_OK;
    }

    if (json_array_append(json_object_get(lp, "tokens"),
                          json_object_get(entry, "token"))
        || json_array_append(json_object_get(lp, "token_logprobs"),
                             json_object_get(entry, "logprob"))
        || json_array_append(json_object_get(lp, "top_logprobs"),
                             json_object_get(entry, "top_logprobs"))
        || json_array_append_new(json_object_get(lp, "text_offset"),
                                 json_integer((json_int_t)
                                              (ch->offset + ch->text_len))))
    {
        json_decref(entry);
        return NGX_ERROR;
    }

    json_decref(entry);

    return NGX_OK;
}


/* {"token", "logprob"} and, for chat, "bytes" */

static json_t *
ngx_http_llm_piece(ngx_pool_t *pool, u_char *p, size_t len, float logprob,
    ngx_uint_t chat)
{
    size_t   i;
    json_t  *json, *bytes;

    json = json_pack("{s:o,s:o}",
                     "token", ngx_http_llm_json_string(pool, p, len),
                     "logprob", ngx_http_llm_logprob(logprob));
    if (json == NULL || !chat) {
        return json;
    }

    bytes = json_array();

    if (json_object_set_new(json, "bytes", bytes) != 0) {
        json_decref(json);
        return NULL;
    }

    for (i = 0; i < len; i++) {
        if (json_array_append_new(bytes, json_integer(p[i])) != 0) {
            json_decref(json);
            return NULL;
        }
    }

    return json;
}


/* JSON has no -inf: OpenAI writes -9999.0 for "impossible" */

static json_t *
ngx_http_llm_logprob(float logprob)
{
    if (!isfinite(logprob) || logprob < -9999.0f) {
        logprob = -9999.0f;
    }

    return json_real(logprob);
}


/*
 * {"object":"list","data":[{"id","object":"model","created","owned_by"}]}
 * or, with id, the one model, or 404.
 */

ngx_int_t
ngx_http_llm_send_models(ngx_http_request_t *r, ngx_http_llm_engine_t *e,
    ngx_str_t *id)
{
    size_t                 len;
    json_t                *data, *name, *model;
    ngx_uint_t             i;
    llm_shm_model_t       *m;
    ngx_http_llm_error_t   err;

    data = json_array();
    if (data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < e->hdr.n_models; i++) {
        m = &e->hdr.models[i];

        len = ngx_strnlen((u_char *) m->name, LLM_MODEL_NAME_MAX);
        if (len == 0 || len == LLM_MODEL_NAME_MAX) {
            continue;
        }

        if (id && (id->len != len
                   || ngx_strncmp(id->data, m->name, len) != 0))
        {
            continue;
        }

        name = ngx_http_llm_json_string(r->pool, (u_char *) m->name, len);
        if (name == NULL) {
            json_decref(data);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        model = json_pack("{s:o,s:s,s:I,s:s}",
                          "id", name,
                          "object", "model",
                          "created", (json_int_t) m->created,
                          "owned_by", "ngx_llm");

        if (json_array_append_new(data, model) != 0) {
            json_decref(data);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (id == NULL) {
        return ngx_http_llm_send_json(r, NGX_HTTP_OK,
                                      json_pack("{s:s,s:o}",
                                                "object", "list",
                                                "data", data));
    }

    if (json_array_size(data) == 1) {
        model = json_incref(json_array_get(data, 0));
        json_decref(data);

        return ngx_http_llm_send_json(r, NGX_HTTP_OK, model);
    }

    json_decref(data);

    ngx_http_llm_error(&err, NGX_HTTP_NOT_FOUND, "invalid_request_error",
                       "model", "model_not_found",
                       "The model does not exist");

    return ngx_http_llm_send_error(r, &err);
}
