
/*
 * Copyright (C) ngx_llm developers
 *
 * The content handler: routes a request by its URI's suffix, reads and
 * validates a completion or chat request, picks the model version that
 * serves it (llm_model), submits one slot per choice, then turns the
 * slots' events into one JSON body or a stream of SSE chunks.  A request
 * that finds no free slot waits for one (llm_queue_timeout): it is
 * retried when this worker frees a slot, and on a short timer for slots
 * freed by other workers or the engine.
 *
 * A request in flight is held by the reference ngx_http_read_client_
 * request_body() took (as upstream does): it is released by exactly one
 * ngx_http_finalize_request(), always after ngx_http_llm_detach() gave
 * the slots back.  When nginx itself ends the request (client gone,
 * HTTP/2 reset, shutdown) the cleanups below detach it; the engine never
 * holds a request pointer, only {slot, generation}.
 *
 * Functions that may end the request return NGX_DONE when they did:
 * the request may be freed by then and nothing of it may be touched.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"
#include "llm_ring.h"


#define NGX_HTTP_LLM_ROUTE_NONE         0
#define NGX_HTTP_LLM_ROUTE_MODELS       3
#define NGX_HTTP_LLM_ROUTE_MODEL        4


static ngx_uint_t ngx_http_llm_route(ngx_http_request_t *r, ngx_str_t *id);
static ngx_int_t ngx_http_llm_get(ngx_http_request_t *r, ngx_uint_t route,
    ngx_str_t *id);
static ngx_int_t ngx_http_llm_reject(ngx_http_request_t *r,
    ngx_uint_t status, const char *allow, const char *code,
    const char *message);
static void ngx_http_llm_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_prepare(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_set_model(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_completion_t *cp,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_set_choices(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_completion_t *cp);
static ngx_int_t ngx_http_llm_read_body(ngx_http_request_t *r,
    ngx_str_t *body, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value);
static ngx_int_t ngx_http_llm_wait(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_start(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_start_stream(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_set_id(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_cleanup(void *data);
static void ngx_http_llm_release(ngx_http_llm_choice_t *ch);
static ngx_int_t ngx_http_llm_drain(ngx_http_llm_choice_t *ch);
static ngx_int_t ngx_http_llm_token(ngx_http_llm_choice_t *ch, u_char *buf,
    size_t len);
static void ngx_http_llm_event_error(ngx_http_llm_choice_t *ch, u_char *buf,
    size_t len, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_choice_done(ngx_http_llm_choice_t *ch);
static ngx_int_t ngx_http_llm_finish_stream(ngx_http_llm_choice_t *ch,
    const char *finish);
static ngx_int_t ngx_http_llm_corrupt(ngx_http_llm_choice_t *ch,
    const char *why);
static ngx_int_t ngx_http_llm_abort(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_send_chunk(ngx_http_llm_choice_t *ch);
static ngx_chain_t *ngx_http_llm_sse_buf(ngx_http_llm_ctx_t *ctx,
    json_t *json, ngx_uint_t last);
static ngx_int_t ngx_http_llm_output(ngx_http_llm_ctx_t *ctx,
    ngx_chain_t *out);
static void ngx_http_llm_write_handler(ngx_http_request_t *r);
static void ngx_http_llm_deadline_handler(ngx_event_t *ev);
static void ngx_http_llm_queue_timeout_handler(ngx_event_t *ev);
static void ngx_http_llm_timed_out(ngx_http_llm_ctx_t *ctx, ngx_uint_t level,
    ngx_http_llm_error_t *err, const char *what, ngx_msec_t ms);


static ngx_str_t  ngx_http_llm_sse_type = ngx_string("text/event-stream");

/* one event's payload, LLM_EVENT_MAX bytes, aligned for the event structs */
static uint64_t  ngx_http_llm_event_buf[LLM_EVENT_MAX / sizeof(uint64_t)];


ngx_int_t
ngx_http_llm_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_str_t                 id;
    ngx_uint_t                route;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    route = ngx_http_llm_route(r, &id);

    if ((route == NGX_HTTP_LLM_COMPLETIONS || route == NGX_HTTP_LLM_CHAT)
        && r->method == NGX_HTTP_POST)
    {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /*
         * set by ngx_pcalloc():
         *
         *     ctx->choices = NULL;
         *     ctx->n_submitted = 0;
         *     ctx->waiting = 0;
         *     ctx->started = 0;
         *     ctx->free = NULL;
         *     ctx->busy = NULL;
         */

        ctx->request = r;
        ctx->engine = llcf->engine;
        ctx->endpoint = route;

        ngx_http_set_ctx(r, ctx, ngx_http_llm_module);

        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r, ngx_http_llm_body_handler);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    switch (route) {

    case NGX_HTTP_LLM_COMPLETIONS:
    case NGX_HTTP_LLM_CHAT:
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_ALLOWED, "POST",
                                   "method_not_allowed",
                                   "Method not allowed: use POST");

    case NGX_HTTP_LLM_ROUTE_MODELS:
    case NGX_HTTP_LLM_ROUTE_MODEL:
        return ngx_http_llm_get(r, route, &id);

    default:
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_FOUND, NULL,
                                   "unknown_url", "Unknown request URL");
    }
}


/*
 * The endpoint is the URI's suffix, so the API works under "location /"
 * or "/api/": .../v1/completions, .../v1/chat/completions, .../v1/models
 * and .../v1/models/ID.
 */

static ngx_uint_t
ngx_http_llm_route(ngx_http_request_t *r, ngx_str_t *id)
{
    u_char     *p, *last;
    ngx_uint_t  i;

    static struct {
        ngx_str_t   suffix;
        ngx_uint_t  route;
    } routes[] = {
        { ngx_string("/v1/completions"), NGX_HTTP_LLM_COMPLETIONS },
        { ngx_string("/v1/chat/completions"), NGX_HTTP_LLM_CHAT },
        { ngx_string("/v1/models"), NGX_HTTP_LLM_ROUTE_MODELS }
    };

    for (i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (r->uri.len >= routes[i].suffix.len
            && ngx_strncmp(r->uri.data + r->uri.len - routes[i].suffix.len,
                           routes[i].suffix.data, routes[i].suffix.len)
               == 0)
        {
            return routes[i].route;
        }
    }

    /* .../v1/models/ID: the ID is the last path segment */

    last = r->uri.data + r->uri.len;

    for (p = last; p > r->uri.data && p[-1] != '/'; p--) {
        /* void */
    }

    if (p == last || (size_t) (p - r->uri.data) < sizeof("/v1/models/") - 1
        || ngx_strncmp(p - (sizeof("/v1/models/") - 1), "/v1/models/",
                       sizeof("/v1/models/") - 1)
           != 0)
    {
        return NGX_HTTP_LLM_ROUTE_NONE;
    }

    id->data = p;
    id->len = last - p;

    return NGX_HTTP_LLM_ROUTE_MODEL;
}


/* GET .../v1/models and .../v1/models/ID */

static ngx_int_t
ngx_http_llm_get(ngx_http_request_t *r, ngx_uint_t route, ngx_str_t *id)
{
    ngx_http_llm_error_t      err;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_ALLOWED, "GET, HEAD",
                                   "method_not_allowed",
                                   "Method not allowed: use GET");
    }

    if (llcf->engine->state != NGX_HTTP_LLM_READY) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm engine \"%V\" is not connected",
                      &llcf->engine->name);

        ngx_http_llm_error(&err, NGX_HTTP_SERVICE_UNAVAILABLE,
                           "server_error", NULL, "engine_unavailable",
                           "The inference engine is not available, "
                           "retry later");
        return ngx_http_llm_send_error(r, &err);
    }

    return ngx_http_llm_send_models(r, llcf->engine,
                                    route == NGX_HTTP_LLM_ROUTE_MODEL
                                    ? id : NULL);
}


static ngx_int_t
ngx_http_llm_reject(ngx_http_request_t *r, ngx_uint_t status,
    const char *allow, const char *code, const char *message)
{
    u_char                *p;
    ngx_str_t              value;
    ngx_http_llm_error_t   err;

    /* "Unknown request URL (POST /v1/foo)", as OpenAI words it */

    p = ngx_pnalloc(r->pool, ngx_strlen(message) + r->method_name.len
                             + r->uri.len + sizeof(" ( )") - 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_llm_error(&err, status, "invalid_request_error", NULL, code,
                       message);

    err.message.data = p;
    err.message.len = ngx_sprintf(p, "%s (%V %V)", message, &r->method_name,
                                  &r->uri)
                      - p;

    if (allow) {
        value.data = (u_char *) allow;
        value.len = ngx_strlen(allow);

        if (ngx_http_llm_header(r, "Allow", &value) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_llm_send_error(r, &err);
}


static void
ngx_http_llm_body_handler(ngx_http_request_t *r)
{
    ngx_int_t              rc;
    ngx_http_llm_ctx_t    *ctx;
    ngx_http_llm_error_t   err;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    rc = ngx_http_llm_prepare(r, ctx, &err);

    if (rc == NGX_OK) {
        /* from here on the request ends by itself: it finalizes or waits */
        (void) ngx_http_llm_dispatch(ctx);
        return;
    }

    if (rc == NGX_DECLINED) {
        rc = ngx_http_llm_send_error(r, &err);

    } else {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_finalize_request(r, rc);
}


/*
 * Reads and validates the request, chooses the model version and sets
 * the choices up.  NGX_DECLINED: err is the answer.
 */

static ngx_int_t
ngx_http_llm_prepare(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err)
{
    ngx_int_t                   rc;
    ngx_str_t                   body;
    ngx_http_llm_engine_t      *e;
    ngx_http_llm_completion_t   cp;

    e = ctx->engine;

    rc = ngx_http_llm_read_body(r, &body, err);

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_llm_parse(r, ctx->endpoint, body.data, body.len, &cp, err);

    /* what the client asked for is logged even when the rest is wrong */
    ctx->request_model = cp.model;

    if (rc != NGX_OK) {
        return rc;
    }

    if (e->state != NGX_HTTP_LLM_READY) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm engine \"%V\" is not connected", &e->name);

        ngx_http_llm_error(err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                           NULL, "engine_unavailable",
                           "The inference engine is not available, "
                           "retry later");
        return NGX_DECLINED;
    }

    rc = ngx_http_llm_set_model(r, ctx, &cp, err);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_llm_set_id(r, ctx) != NGX_OK
        || ngx_http_llm_set_choices(r, ctx, &cp) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * llm_model, when it is set and not empty, names the version that
 * serves the request (split_clients, map); else the client's "model"
 * does.  The response and X-LLM-Model name that version.
 */

static ngx_int_t
ngx_http_llm_set_model(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    ngx_str_t                 model;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    model = cp->model;

    if (llcf->model) {
        if (ngx_http_complex_value(r, llcf->model, &model) != NGX_OK) {
            return NGX_ERROR;
        }

        if (model.len == 0) {
            model = cp->model;
        }
    }

    if (ngx_http_llm_engine_model(ctx->engine, &model) == NULL) {
        err->status = NGX_HTTP_NOT_FOUND;
        err->type = "invalid_request_error";
        err->param = "model";
        err->code = "model_not_found";

        err->message.data = ngx_pnalloc(r->pool, model.len + 64);
        if (err->message.data == NULL) {
            return NGX_ERROR;
        }

        err->message.len = ngx_sprintf(err->message.data,
                                       "The model `%V` does not exist",
                                       &model)
                           - err->message.data;

        return NGX_DECLINED;
    }

    ctx->model = model;
    ctx->model_known = 1;

    if (ngx_http_llm_header(r, "X-LLM-Model", &ctx->model) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* one choice per prompt and n; cleanups that give their slots back */

static ngx_int_t
ngx_http_llm_set_choices(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_completion_t *cp)
{
    ngx_uint_t              i, prompts;
    ngx_pool_cleanup_t     *cln;
    ngx_http_cleanup_t     *hcln;
    ngx_http_llm_choice_t  *ch;

    ctx->created = ngx_time();
    ctx->fields = cp->fields;
    ctx->prompts = cp->prompts;
    ctx->messages = cp->messages;
    ctx->n = cp->n;
    ctx->seed = cp->seed;
    ctx->has_seed = cp->has_seed;
    ctx->logprobs = cp->logprobs;
    ctx->stream = cp->stream;
    ctx->include_usage = cp->include_usage;

    prompts = cp->prompts ? json_array_size(cp->prompts) : 1;

    ctx->n_choices = prompts * cp->n;

    ctx->choices = ngx_pcalloc(r->pool,
                               ctx->n_choices * sizeof(ngx_http_llm_choice_t));
    if (ctx->choices == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < ctx->n_choices; i++) {
        ch = &ctx->choices[i];
        ch->ctx = ctx;
        ch->index = i;
        ch->prompt = i / cp->n;
    }

    ctx->deadline.handler = ngx_http_llm_deadline_handler;
    ctx->deadline.data = ctx;
    ctx->deadline.log = r->connection->log;

    ctx->queue_timer.handler = ngx_http_llm_queue_timeout_handler;
    ctx->queue_timer.data = ctx;
    ctx->queue_timer.log = r->connection->log;

    /*
     * The pool cleanup runs on every way a request ends; the request
     * cleanup also runs when nginx terminates a request, before the
     * request is actually freed, so the slots go back at once.
     */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_llm_cleanup;
    cln->data = ctx;

    hcln = ngx_http_cleanup_add(r, 0);
    if (hcln == NULL) {
        return NGX_ERROR;
    }

    hcln->handler = ngx_http_llm_cleanup;
    hcln->data = ctx;

    ctx->cleanup = 1;

    return NGX_OK;
}


/* the body as one contiguous string; bodies spooled to disk are too big */

static ngx_int_t
ngx_http_llm_read_body(ngx_http_request_t *r, ngx_str_t *body,
    ngx_http_llm_error_t *err)
{
    u_char       *p;
    size_t        len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        goto empty;
    }

    if (r->request_body->temp_file) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm request body is larger than "
                      "client_body_buffer_size");

        ngx_http_llm_error(err, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                           "invalid_request_error", NULL, "request_too_large",
                           "The request body is too large");
        return NGX_DECLINED;
    }

    cl = r->request_body->bufs;
    b = cl->buf;

    if (cl->next == NULL) {
        body->data = b->pos;
        body->len = b->last - b->pos;

        if (body->len == 0) {
            goto empty;
        }

        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;
    }

    if (len == 0) {
        goto empty;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    return NGX_OK;

empty:

    ngx_http_llm_error(err, NGX_HTTP_BAD_REQUEST, "invalid_request_error",
                       NULL, "invalid_json",
                       "The request body is empty: send a JSON object");
    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_llm_header(ngx_http_request_t *r, const char *key, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;

    return NGX_OK;
}


/*
 * Submits the choices not submitted yet, in order, while slots are free.
 * NGX_OK: all are submitted; NGX_AGAIN: the request waits for a slot;
 * NGX_DONE: it ended (an error was sent).
 */

ngx_int_t
ngx_http_llm_dispatch(ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t               rc;
    ngx_http_request_t     *r;
    ngx_http_llm_error_t    err;
    ngx_http_llm_choice_t  *ch;
    ngx_http_llm_engine_t  *e;

    r = ctx->request;
    e = ctx->engine;

    /* first come, first served: a newcomer queues behind waiting ones */

    if (!ctx->waiting && !ngx_queue_empty(&e->waiting)) {
        ngx_post_event(&e->kick, &ngx_posted_events);
        return ngx_http_llm_wait(ctx);
    }

    while (ctx->n_submitted < ctx->n_choices) {
        ch = &ctx->choices[ctx->n_submitted];

        if (ch->req.data == NULL && ngx_http_llm_choice_request(ch) != NGX_OK)
        {
            return ngx_http_llm_abort(ctx);
        }

        rc = ngx_http_llm_slot_submit(ch);

        if (rc == NGX_BUSY) {
            return ngx_http_llm_wait(ctx);
        }

        if (rc == NGX_DECLINED) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "llm request of %uz bytes is larger than engine "
                          "\"%V\" accepts (%uD)", ch->req.len, &e->name,
                          e->hdr.req_max);

            ngx_http_llm_error(&err, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                               "invalid_request_error",
                               ctx->messages ? "messages" : "prompt",
                               "request_too_large",
                               "The request is too large for the engine");
            ngx_http_llm_fail(ctx, &err);
            return NGX_DONE;
        }

        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "llm submitted %V choice %ui to slot %uD gen %uD",
                       &ctx->id, ch->index, ch->slot, ch->generation);

        ch->submitted = 1;
        ctx->n_submitted++;

        if (!ctx->started && ngx_http_llm_start(ctx) != NGX_OK) {
            return ngx_http_llm_abort(ctx);
        }
    }

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_queue_remove(&ctx->wait);
        ngx_http_llm_metrics_waiting(e, -1);

        if (ctx->queue_timer.timer_set) {
            ngx_del_timer(&ctx->queue_timer);
        }
    }

    return NGX_OK;
}


/* no free slot: wait in engine->waiting for llm_queue_timeout */

static ngx_int_t
ngx_http_llm_wait(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_request_t       *r;
    ngx_http_llm_error_t      err;
    ngx_http_llm_engine_t    *e;
    ngx_http_llm_loc_conf_t  *llcf;

    if (ctx->waiting) {
        return NGX_AGAIN;
    }

    r = ctx->request;
    e = ctx->engine;
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    if (llcf->queue_timeout == 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm engine \"%V\" has no free slot", &e->name);

        ngx_http_llm_error(&err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                           NULL, "engine_overloaded",
                           "The inference engine is busy, retry later");
        ngx_http_llm_fail(ctx, &err);
        return NGX_DONE;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm %V waits for a slot", &ctx->id);

    ctx->waiting = 1;
    ngx_queue_insert_tail(&e->waiting, &ctx->wait);
    ngx_http_llm_metrics_waiting(e, 1);

    ngx_add_timer(&ctx->queue_timer, llcf->queue_timeout);

    if (!e->retry.timer_set) {
        ngx_add_timer(&e->retry, NGX_HTTP_LLM_QUEUE_RETRY);
    }

    if (!ctx->started) {
        /* the client may go away meanwhile */
        r->read_event_handler = ngx_http_test_reading;
        r->write_event_handler = ngx_http_request_empty_handler;
    }

    return NGX_AGAIN;
}


/*
 * engine->kick (posted when this worker frees a slot) and engine->retry
 * (a timer, for slots freed elsewhere): the waiting requests, in order,
 * take the free slots.
 */

void
ngx_http_llm_queue_handler(ngx_event_t *ev)
{
    ngx_int_t               rc;
    ngx_queue_t            *q;
    ngx_connection_t       *c;
    ngx_http_llm_ctx_t     *ctx;
    ngx_http_llm_engine_t  *e;

    e = ev->data;

    while (!ngx_queue_empty(&e->waiting) && e->state == NGX_HTTP_LLM_READY) {
        q = ngx_queue_head(&e->waiting);
        ctx = ngx_queue_data(q, ngx_http_llm_ctx_t, wait);
        c = ctx->request->connection;

        ngx_http_set_log_request(c->log, ctx->request);

        rc = ngx_http_llm_dispatch(ctx);

        ngx_http_run_posted_requests(c);

        if (rc == NGX_AGAIN) {
            /* no slot is free: the first in line keeps its place */
            break;
        }
    }

    if (!ngx_queue_empty(&e->waiting) && !e->retry.timer_set) {
        ngx_add_timer(&e->retry, NGX_HTTP_LLM_QUEUE_RETRY);
    }
}


/* after the first submit: the deadline runs, a stream starts */

static ngx_int_t
ngx_http_llm_start(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_request_t       *r;
    ngx_http_llm_loc_conf_t  *llcf;

    r = ctx->request;
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    ctx->started = 1;

    ngx_add_timer(&ctx->deadline, llcf->timeout);

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_llm_write_handler;

    if (!ctx->stream) {
        return NGX_OK;
    }

    return ngx_http_llm_start_stream(ctx);
}


/* the stream's headers go out before the first token */

static ngx_int_t
ngx_http_llm_start_stream(ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_buf_t           *b;
    ngx_str_t            value;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    r = ctx->request;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    r->headers_out.content_type_len = ngx_http_llm_sse_type.len;
    r->headers_out.content_type = ngx_http_llm_sse_type;
    r->headers_out.content_type_lowcase = NULL;

    ngx_str_set(&value, "no-cache");

    if (ngx_http_llm_header(r, "Cache-Control", &value) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a proxy in front of us must not buffer the stream either */

    ngx_str_set(&value, "no");

    if (ngx_http_llm_header(r, "X-Accel-Buffering", &value) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK) {
        return NGX_ERROR;
    }

    /* the header buffer waits for a body unless something flushes it */

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->flush = 1;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    if (ngx_http_llm_output(ctx, cl) == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_set_id(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    const char       *prefix;
    static uint32_t   counter;

    prefix = (ctx->endpoint == NGX_HTTP_LLM_CHAT) ? "chatcmpl" : "cmpl";

    ctx->id.data = ngx_pnalloc(r->pool, sizeof("chatcmpl-") - 1 + 32);
    if (ctx->id.data == NULL) {
        return NGX_ERROR;
    }

    ctx->id.len = ngx_sprintf(ctx->id.data, "%s-%08xD%08xD%08xD%08xD",
                              prefix, (uint32_t) ngx_time(),
                              (uint32_t) ngx_pid, counter++,
                              (uint32_t) ngx_random())
                  - ctx->id.data;

    return NGX_OK;
}


static void
ngx_http_llm_cleanup(void *data)
{
    ngx_http_llm_ctx_t  *ctx = data;

    ngx_uint_t              i;
    ngx_http_llm_choice_t  *ch;

    ngx_http_llm_detach(ctx);

    for (i = 0; i < ctx->n_choices; i++) {
        ch = &ctx->choices[i];

        if (ch->logprobs) {
            json_decref(ch->logprobs);
            ch->logprobs = NULL;
        }

        if (ch->lp_pending) {
            json_decref(ch->lp_pending);
            ch->lp_pending = NULL;
        }
    }
}


/*
 * Gives every slot back (the engine stops generating where it is still
 * at it), leaves the queue and stops every timer; after it, nothing
 * refers to the request.  Idempotent.
 */

void
ngx_http_llm_detach(ngx_http_llm_ctx_t *ctx)
{
    ngx_uint_t  i;

    if (ctx->deadline.timer_set) {
        ngx_del_timer(&ctx->deadline);
    }

    if (ctx->queue_timer.timer_set) {
        ngx_del_timer(&ctx->queue_timer);
    }

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_queue_remove(&ctx->wait);
        ngx_http_llm_metrics_waiting(ctx->engine, -1);
    }

    for (i = 0; i < ctx->n_choices; i++) {
        ngx_http_llm_release(&ctx->choices[i]);
    }
}


static void
ngx_http_llm_release(ngx_http_llm_choice_t *ch)
{
    if (!ch->attached) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ch->ctx->request->connection->log, 0,
                   "llm detach slot %uD gen %uD", ch->slot, ch->generation);

    ch->attached = 0;
    ngx_queue_remove(&ch->queue);

    ngx_http_llm_slot_release(ch);
}


/*
 * Called by the engine side (ngx_http_llm_shm.c) for a choice in flight:
 * drain its slot after a doorbell, or end the request with err.
 */

void
ngx_http_llm_process(ngx_http_llm_choice_t *ch, ngx_http_llm_error_t *err)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ch->ctx->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    if (err) {
        ngx_http_llm_fail(ch->ctx, err);

    } else if (!ch->ctx->blocked) {
        (void) ngx_http_llm_drain(ch);
    }

    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_llm_drain(ngx_http_llm_choice_t *ch)
{
    u_char                *buf;
    ngx_int_t              rc, state;
    llm_event_t            ev;
    ngx_http_llm_ctx_t    *ctx;
    ngx_http_llm_error_t   err;

    ctx = ch->ctx;
    buf = (u_char *) ngx_http_llm_event_buf;

    state = ngx_http_llm_slot_state(ch);

    if (state == NGX_ERROR) {
        return ngx_http_llm_corrupt(ch, "the slot is no longer ours");
    }

    for ( ;; ) {

        if (ctx->blocked) {
            /* the client is slow: leave the rest in the ring */
            ngx_http_llm_slot_drained(ch);
            return NGX_OK;
        }

        rc = ngx_http_llm_slot_event(ch, &ev, buf);

        if (rc == LLM_RING_EMPTY) {
            break;
        }

        if (rc != LLM_RING_OK) {
            return ngx_http_llm_corrupt(ch, "corrupt event ring");
        }

        switch (ev.type) {

        case LLM_EV_TOKEN:

            if (ev.len < sizeof(llm_ev_token_t)) {
                return ngx_http_llm_corrupt(ch, "short TOKEN event");
            }

            if (ngx_http_llm_token(ch, buf, ev.len) != NGX_OK) {
                return ngx_http_llm_abort(ctx);
            }

            if (ctx->stream && ch->text_len >= NGX_HTTP_LLM_CHUNK_TEXT_MAX
                && ngx_http_llm_send_chunk(ch) == NGX_ERROR)
            {
                return ngx_http_llm_abort(ctx);
            }

            continue;

        case LLM_EV_LOGPROBS:

            rc = ngx_http_llm_logprobs_event(ch, buf, ev.len);

            if (rc == NGX_DECLINED) {
                return ngx_http_llm_corrupt(ch, "malformed LOGPROBS event");
            }

            if (rc != NGX_OK) {
                return ngx_http_llm_abort(ctx);
            }

            continue;

        case LLM_EV_DONE:

            if (ev.len < sizeof(llm_ev_done_t)) {
                return ngx_http_llm_corrupt(ch, "short DONE event");
            }

            ngx_memcpy(&ch->done, buf, sizeof(llm_ev_done_t));

            return ngx_http_llm_choice_done(ch);

        case LLM_EV_ERROR:

            if (ev.len < sizeof(llm_ev_error_t)) {
                return ngx_http_llm_corrupt(ch, "short ERROR event");
            }

            ngx_http_llm_event_error(ch, buf, ev.len, &err);
            ngx_http_llm_fail(ctx, &err);
            return NGX_DONE;

        default:
            ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                          "llm engine \"%V\" slot %uD: ignored an event "
                          "of unknown type %uD",
                          &ctx->engine->name, ch->slot, (uint32_t) ev.type);
            continue;
        }
    }

    /* the ring is empty */

    ngx_http_llm_slot_drained(ch);

    if (state == LLM_SLOT_FINISHED) {
        /* FINISHED was stored after the last event: there is no more */
        return ngx_http_llm_corrupt(ch, "finished without DONE or ERROR");
    }

    if (ctx->stream && (ch->text_len || ch->logprobs)
        && ngx_http_llm_send_chunk(ch) == NGX_ERROR)
    {
        return ngx_http_llm_abort(ctx);
    }

    return NGX_OK;
}


/* TOKEN: llm_ev_token_t, then the text */

static ngx_int_t
ngx_http_llm_token(ngx_http_llm_choice_t *ch, u_char *buf, size_t len)
{
    ngx_time_t          *tp;
    ngx_msec_int_t       ms;
    ngx_http_request_t  *r;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ch->ctx;

    ch->tokens++;

    if (!ctx->first_token) {
        r = ctx->request;
        tp = ngx_timeofday();

        ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                               + (tp->msec - r->start_msec));

        ctx->ttft = (ngx_msec_t) ngx_max(ms, 0);
        ctx->first_token = 1;
    }

    if (ch->lp_pending && ngx_http_llm_logprobs_token(ch) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_llm_append(ch, buf + sizeof(llm_ev_token_t),
                               len - sizeof(llm_ev_token_t));
}


/* ERROR: llm_ev_error_t, then the message */

static void
ngx_http_llm_event_error(ngx_http_llm_choice_t *ch, u_char *buf, size_t len,
    ngx_http_llm_error_t *err)
{
    size_t               n;
    u_char              *p;
    llm_ev_error_t       ee;
    ngx_http_request_t  *r;

    r = ch->ctx->request;

    ngx_memcpy(&ee, buf, sizeof(llm_ev_error_t));

    err->status = (ee.status >= 400 && ee.status <= 599)
                  ? ee.status : NGX_HTTP_INTERNAL_SERVER_ERROR;
    err->param = NULL;
    err->type = "server_error";
    err->code = NULL;

    /* type and code: NUL-padded, maybe without a NUL; copied to the pool */

    n = ngx_strnlen((u_char *) ee.type, sizeof(ee.type));
    p = ngx_pnalloc(r->pool, sizeof(ee.type) + 1 + sizeof(ee.code) + 1);

    if (p != NULL) {
        if (n) {
            *ngx_cpymem(p, ee.type, n) = '\0';
            err->type = (char *) p;
        }

        p += sizeof(ee.type) + 1;

        n = ngx_strnlen((u_char *) ee.code, sizeof(ee.code));
        if (n) {
            *ngx_cpymem(p, ee.code, n) = '\0';
            err->code = (char *) p;
        }
    }

    err->message.data = buf + sizeof(llm_ev_error_t);
    err->message.len = len - sizeof(llm_ev_error_t);

    if (err->message.len == 0) {
        ngx_str_set(&err->message, "The engine failed to complete the request");
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm engine \"%V\" slot %uD answered %ui %s",
                  &ch->ctx->engine->name, ch->slot, err->status, err->type);
}


/* a malformed slot or event: this request ends, the engine stays */

static ngx_int_t
ngx_http_llm_corrupt(ngx_http_llm_choice_t *ch, const char *why)
{
    ngx_http_llm_error_t  err;

    ngx_log_error(NGX_LOG_ERR, ch->ctx->request->connection->log, 0,
                  "llm engine \"%V\" slot %uD: %s",
                  &ch->ctx->engine->name, ch->slot, why);

    ngx_http_llm_error(&err, NGX_HTTP_BAD_GATEWAY, "server_error", NULL,
                       "engine_error", "The inference engine failed");

    ngx_http_llm_fail(ch->ctx, &err);

    return NGX_DONE;
}


/* out of memory mid-request: the connection is closed */

static ngx_int_t
ngx_http_llm_abort(ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_detach(ctx);
    ngx_http_finalize_request(ctx->request, NGX_ERROR);

    return NGX_DONE;
}


/* DONE: the choice is complete; the request is when all of them are */

static ngx_int_t
ngx_http_llm_choice_done(ngx_http_llm_choice_t *ch)
{
    ngx_int_t              rc;
    const char            *finish;
    ngx_http_request_t    *r;
    ngx_http_llm_ctx_t    *ctx;
    ngx_http_llm_error_t   err;

    ctx = ch->ctx;
    r = ctx->request;

    ngx_http_llm_release(ch);

    finish = ngx_http_llm_finish_reason(ch->done.finish_reason);

    ngx_log_debug6(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm done %V choice %ui: %s, %uD+%uD tokens, %uL us",
                   &ctx->id, ch->index, finish ? finish : "?",
                   ch->done.prompt_tokens, ch->done.completion_tokens,
                   ch->done.total_us);

    if (finish == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "llm engine \"%V\" slot %uD: finish reason %uD",
                      &ctx->engine->name, ch->slot, ch->done.finish_reason);

        ngx_http_llm_error(&err, NGX_HTTP_BAD_GATEWAY, "server_error", NULL,
                           "engine_error",
                           "The inference engine stopped the request");
        ngx_http_llm_fail(ctx, &err);
        return NGX_DONE;
    }

    ch->finished = 1;
    ctx->n_finished++;

    if (ctx->stream) {
        return ngx_http_llm_finish_stream(ch, finish);
    }

    if (ctx->n_finished < ctx->n_choices) {
        return NGX_OK;
    }

    ngx_http_llm_detach(ctx);

    rc = ngx_http_llm_send_json(r, NGX_HTTP_OK,
                                ngx_http_llm_response_json(ctx));

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/*
 * A choice's last text and its finish reason; after the last choice,
 * the usage chunk when asked for, and [DONE].
 */

static ngx_int_t
ngx_http_llm_finish_stream(ngx_http_llm_choice_t *ch, const char *finish)
{
    ngx_int_t            rc;
    ngx_uint_t           last;
    ngx_chain_t         *out, **ll;
    ngx_http_request_t  *r;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ch->ctx;
    r = ctx->request;

    last = (ctx->n_finished == ctx->n_choices);

    out = NULL;
    ll = &out;

    if (ch->text_len || ch->logprobs) {
        *ll = ngx_http_llm_sse_buf(ctx, ngx_http_llm_chunk_json(ch, NULL), 0);
        if (*ll == NULL) {
            return ngx_http_llm_abort(ctx);
        }

        ll = &(*ll)->next;
    }

    *ll = ngx_http_llm_sse_buf(ctx, ngx_http_llm_chunk_json(ch, finish), 0);
    if (*ll == NULL) {
        return ngx_http_llm_abort(ctx);
    }

    ll = &(*ll)->next;

    if (last && ctx->include_usage) {
        *ll = ngx_http_llm_sse_buf(ctx, ngx_http_llm_usage_chunk_json(ctx),
                                   0);
        if (*ll == NULL) {
            return ngx_http_llm_abort(ctx);
        }

        ll = &(*ll)->next;
    }

    if (last) {
        *ll = ngx_http_llm_sse_buf(ctx, NULL, 1);
        if (*ll == NULL) {
            return ngx_http_llm_abort(ctx);
        }
    }

    rc = ngx_http_llm_output(ctx, out);

    if (last) {
        ngx_http_llm_detach(ctx);
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    if (rc == NGX_ERROR) {
        return ngx_http_llm_abort(ctx);
    }

    return NGX_OK;
}


/*
 * Ends a request in flight with an error: a JSON error object while no
 * header went out, else an SSE error event that ends the stream.
 */

void
ngx_http_llm_fail(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    ngx_int_t            rc;
    ngx_chain_t         *out;
    ngx_http_request_t  *r;

    r = ctx->request;

    ngx_http_llm_detach(ctx);

    if (!r->header_sent) {
        rc = ngx_http_llm_send_error(r, err);

    } else if (ctx->stream) {
        out = ngx_http_llm_sse_buf(ctx, ngx_http_llm_error_json(r, err), 1);
        rc = (out == NULL) ? NGX_ERROR : ngx_http_llm_output(ctx, out);

    } else {
        rc = NGX_ERROR;
    }

    ngx_http_finalize_request(r, rc);
}


/* one SSE chunk with the text and logprobs a choice gathered */

static ngx_int_t
ngx_http_llm_send_chunk(ngx_http_llm_choice_t *ch)
{
    ngx_chain_t  *out;

    out = ngx_http_llm_sse_buf(ch->ctx, ngx_http_llm_chunk_json(ch, NULL), 0);
    if (out == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_llm_output(ch->ctx, out);
}


/*
 * "data: <json>\n\n" in a buffer of its own with flush set; json is
 * consumed.  last: the stream ends with this buffer; with json NULL it
 * is "data: [DONE]".  Buffers come back through ctx->free once sent.
 */

static ngx_chain_t *
ngx_http_llm_sse_buf(ngx_http_llm_ctx_t *ctx, json_t *json, ngx_uint_t last)
{
    size_t               size, len;
    u_char              *p;
    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    static u_char        done[] = "[DONE]";

    r = ctx->request;

    if (json) {
        size = json_dumpb(json, NULL, 0, JSON_COMPACT);
        if (size == 0) {
            json_decref(json);
            return NULL;
        }

    } else if (last) {
        size = sizeof(done) - 1;

    } else {
        /* the JSON object could not be built */
        return NULL;
    }

    len = sizeof("data: ") - 1 + size + 2;

    cl = ngx_chain_get_free_buf(r->pool, &ctx->free);
    if (cl == NULL) {
        goto failed;
    }

    b = cl->buf;

    if ((size_t) (b->end - b->start) < len) {
        size_t  n = ngx_max(len, 1024);

        p = ngx_palloc(r->pool, n);
        if (p == NULL) {
            goto failed;
        }

        b->start = p;
        b->end = p + n;
    }

    b->pos = b->start;
    b->last = ngx_cpymem(b->start, "data: ", sizeof("data: ") - 1);

    if (json) {
        b->last += json_dumpb(json, (char *) b->last, size, JSON_COMPACT);
        json_decref(json);

    } else {
        b->last = ngx_cpymem(b->last, done, size);
    }

    *b->last++ = LF;
    *b->last++ = LF;

    b->temporary = 1;
    b->flush = 1;
    b->last_buf = last;
    b->last_in_chain = 1;
    b->tag = (ngx_buf_tag_t) &ngx_http_llm_module;

    cl->next = NULL;

    return cl;

failed:

    if (json) {
        json_decref(json);
    }

    return NULL;
}


/*
 * Passes stream output on.  NGX_AGAIN: the client is slow, and no slot
 * is drained until the write handler has sent what is pending.
 */

static ngx_int_t
ngx_http_llm_output(ngx_http_llm_ctx_t *ctx, ngx_chain_t *out)
{
    ngx_int_t                  rc;
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_core_loc_conf_t  *clcf;

    r = ctx->request;
    c = r->connection;
    wev = c->write;

    rc = ngx_http_output_filter(r, out);

    ngx_chain_update_chains(r->pool, &ctx->free, &ctx->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_llm_module);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (rc == NGX_AGAIN) {
        if (!ctx->blocked) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "llm %V blocked by the client", &ctx->id);
        }

        ctx->blocked = 1;

        if (!wev->delayed) {
            ngx_add_timer(wev, clcf->send_timeout);
        }

        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            return NGX_ERROR;
        }

        return NGX_AGAIN;
    }

    if (ctx->blocked) {
        ctx->blocked = 0;

        if (wev->timer_set && !wev->delayed) {
            ngx_del_timer(wev);
        }
    }

    return rc;
}


static void
ngx_http_llm_write_handler(ngx_http_request_t *r)
{
    ngx_uint_t                 i;
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_llm_ctx_t        *ctx;
    ngx_http_llm_choice_t     *ch;
    ngx_http_core_loc_conf_t  *clcf;

    c = r->connection;
    wev = c->write;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (ctx == NULL || !ctx->blocked) {
        return;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (wev->timedout) {

        if (!wev->delayed) {
            ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                          "client timed out");
            c->timedout = 1;

            ngx_http_llm_detach(ctx);
            ngx_http_finalize_request(r, NGX_HTTP_REQUEST_TIME_OUT);
            return;
        }

        /* limit_rate's delay is over */

        wev->timedout = 0;
        wev->delayed = 0;

    } else if (wev->delayed) {
        if (ngx_handle_write_event(wev, clcf->send_lowat) != NGX_OK) {
            (void) ngx_http_llm_abort(ctx);
        }

        return;
    }

    switch (ngx_http_llm_output(ctx, NULL)) {

    case NGX_ERROR:
        (void) ngx_http_llm_abort(ctx);
        return;

    case NGX_AGAIN:
        return;

    default:
        break;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "llm %V unblocked", &ctx->id);

    for (i = 0; i < ctx->n_choices; i++) {
        ch = &ctx->choices[i];

        if (ch->attached && ngx_http_llm_drain(ch) == NGX_DONE) {
            return;
        }

        if (ctx->blocked) {
            return;
        }
    }
}


static void
ngx_http_llm_deadline_handler(ngx_event_t *ev)
{
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_error_t      err;
    ngx_http_llm_loc_conf_t  *llcf;

    ctx = ev->data;
    llcf = ngx_http_get_module_loc_conf(ctx->request, ngx_http_llm_module);

    ngx_http_llm_error(&err, NGX_HTTP_GATEWAY_TIME_OUT, "server_error", NULL,
                       "timeout", "The inference engine did not finish "
                       "in time");

    ngx_http_llm_timed_out(ctx, NGX_LOG_ERR, &err,
                           "passed its deadline of", llcf->timeout);
}


static void
ngx_http_llm_queue_timeout_handler(ngx_event_t *ev)
{
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_error_t      err;
    ngx_http_llm_loc_conf_t  *llcf;

    ctx = ev->data;
    llcf = ngx_http_get_module_loc_conf(ctx->request, ngx_http_llm_module);

    ngx_http_llm_error(&err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                       NULL, "queue_timeout",
                       "The inference engine is busy: no slot was free "
                       "in time, retry later");

    ngx_http_llm_timed_out(ctx, NGX_LOG_WARN, &err,
                           "found no free slot in", llcf->queue_timeout);
}


/* a timer of the request ran out: it ends with err */

static void
ngx_http_llm_timed_out(ngx_http_llm_ctx_t *ctx, ngx_uint_t level,
    ngx_http_llm_error_t *err, const char *what, ngx_msec_t ms)
{
    ngx_connection_t  *c;

    c = ctx->request->connection;

    ngx_http_set_log_request(c->log, ctx->request);

    ngx_log_error(level, c->log, 0, "llm %V on engine \"%V\" %s %M ms",
                  &ctx->id, &ctx->engine->name, what, ms);

    ngx_http_llm_fail(ctx, err);

    ngx_http_run_posted_requests(c);
}


