
/*
 * Copyright (C) ngx_llm developers
 *
 * The content handler: routes a request by its URI's suffix, reads and
 * validates a completion, submits it to a slot, then turns the slot's
 * events into one JSON body or a stream of SSE chunks.
 *
 * A submitted request is held by the reference ngx_http_read_client_
 * request_body() took (as upstream does): it is released by exactly one
 * ngx_http_finalize_request(), always after ngx_http_llm_detach() gave the
 * slot back.  When nginx itself ends the request (client gone, HTTP/2
 * reset, shutdown) the cleanups below detach it; the engine never holds
 * a request pointer, only {slot, generation}.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"
#include "llm_ring.h"


#define NGX_HTTP_LLM_ROUTE_NONE         0
#define NGX_HTTP_LLM_ROUTE_COMPLETIONS  1
#define NGX_HTTP_LLM_ROUTE_MODELS       2


static ngx_uint_t ngx_http_llm_route(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_reject(ngx_http_request_t *r,
    ngx_uint_t status, const char *allow, const char *code,
    const char *message);
static void ngx_http_llm_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_submit(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_read_body(ngx_http_request_t *r,
    ngx_str_t *body, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_start(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_set_id(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_cleanup(void *data);
static void ngx_http_llm_drain(ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_append(ngx_http_llm_ctx_t *ctx, u_char *p,
    size_t len);
static void ngx_http_llm_event_error(ngx_http_llm_ctx_t *ctx, u_char *buf,
    size_t len, ngx_http_llm_error_t *err);
static void ngx_http_llm_finish(ngx_http_llm_ctx_t *ctx);
static void ngx_http_llm_corrupt(ngx_http_llm_ctx_t *ctx, const char *why);
static ngx_int_t ngx_http_llm_send_text(ngx_http_llm_ctx_t *ctx);
static ngx_chain_t *ngx_http_llm_sse_buf(ngx_http_llm_ctx_t *ctx,
    json_t *json, ngx_uint_t done);
static ngx_int_t ngx_http_llm_output(ngx_http_llm_ctx_t *ctx,
    ngx_chain_t *out);
static void ngx_http_llm_write_handler(ngx_http_request_t *r);
static void ngx_http_llm_timeout_handler(ngx_event_t *ev);


static ngx_str_t  ngx_http_llm_sse_type = ngx_string("text/event-stream");

/* one event's payload, LLM_EVENT_MAX bytes, aligned for the event structs */
static uint64_t  ngx_http_llm_event_buf[LLM_EVENT_MAX / sizeof(uint64_t)];


ngx_int_t
ngx_http_llm_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_uint_t                route;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_error_t      err;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    route = ngx_http_llm_route(r);

    if (route == NGX_HTTP_LLM_ROUTE_COMPLETIONS
        && r->method == NGX_HTTP_POST)
    {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /*
         * set by ngx_pcalloc():
         *
         *     ctx->attached = 0;
         *     ctx->text = NULL;
         *     ctx->free = NULL;
         *     ctx->busy = NULL;
         */

        ctx->request = r;
        ctx->engine = llcf->engine;

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

    case NGX_HTTP_LLM_ROUTE_COMPLETIONS:
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_ALLOWED, "POST",
                                   "method_not_allowed",
                                   "Method not allowed: use POST");

    case NGX_HTTP_LLM_ROUTE_MODELS:

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

        return ngx_http_llm_send_models(r, llcf->engine);

    default:
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_FOUND, NULL,
                                   "unknown_url", "Unknown request URL");
    }
}


/* the endpoint is the URI's suffix: works under "location /" or "/api/" */

static ngx_uint_t
ngx_http_llm_route(ngx_http_request_t *r)
{
    static ngx_str_t  completions = ngx_string("/v1/completions");
    static ngx_str_t  models = ngx_string("/v1/models");

    if (r->uri.len >= completions.len
        && ngx_strncmp(r->uri.data + r->uri.len - completions.len,
                       completions.data, completions.len) == 0)
    {
        return NGX_HTTP_LLM_ROUTE_COMPLETIONS;
    }

    if (r->uri.len >= models.len
        && ngx_strncmp(r->uri.data + r->uri.len - models.len,
                       models.data, models.len) == 0)
    {
        return NGX_HTTP_LLM_ROUTE_MODELS;
    }

    return NGX_HTTP_LLM_ROUTE_NONE;
}


static ngx_int_t
ngx_http_llm_reject(ngx_http_request_t *r, ngx_uint_t status,
    const char *allow, const char *code, const char *message)
{
    u_char                *p;
    ngx_table_elt_t       *h;
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
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");
        h->value.data = (u_char *) allow;
        h->value.len = ngx_strlen(allow);
    }

    return ngx_http_llm_send_error(r, &err);
}


static void
ngx_http_llm_body_handler(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    rc = ngx_http_llm_submit(r, ctx);

    if (rc == NGX_DONE) {
        /* submitted: the body reference now waits for the engine */
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_llm_submit(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_str_t                   body, req;
    ngx_pool_cleanup_t         *cln;
    ngx_http_cleanup_t         *hcln;
    ngx_http_llm_error_t        err;
    ngx_http_llm_engine_t      *e;
    ngx_http_llm_completion_t   cp;

    e = ctx->engine;

    rc = ngx_http_llm_read_body(r, &body, &err);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_parse_completion(r, body.data, body.len, &cp, &err);
    }

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_llm_send_error(r, &err);
    }

    if (e->state != NGX_HTTP_LLM_READY) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm engine \"%V\" is not connected", &e->name);

        ngx_http_llm_error(&err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                           NULL, "engine_unavailable",
                           "The inference engine is not available, "
                           "retry later");
        return ngx_http_llm_send_error(r, &err);
    }

    if (ngx_http_llm_engine_model(e, &cp.model) == NULL) {
        err.status = NGX_HTTP_BAD_REQUEST;
        err.type = "invalid_request_error";
        err.param = "model";
        err.code = "model_not_found";

        err.message.data = ngx_pnalloc(r->pool, cp.model.len + 64);
        if (err.message.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        err.message.len = ngx_sprintf(err.message.data,
                                      "The model `%V` does not exist",
                                      &cp.model)
                          - err.message.data;

        return ngx_http_llm_send_error(r, &err);
    }

    if (ngx_http_llm_set_id(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->model = cp.model;
    ctx->created = ngx_time();
    ctx->stream = cp.stream;

    if (ngx_http_llm_request_json(r, ctx, &cp, &req) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!ctx->cleanup) {

        /*
         * The pool cleanup runs on every way a request ends; the request
         * cleanup also runs when nginx terminates a request, before the
         * request is actually freed, so the slot goes back at once.
         */

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_llm_cleanup;
        cln->data = ctx;

        hcln = ngx_http_cleanup_add(r, 0);
        if (hcln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        hcln->handler = ngx_http_llm_cleanup;
        hcln->data = ctx;

        ctx->cleanup = 1;
    }

    rc = ngx_http_llm_slot_submit(ctx, req.data, req.len);

    switch (rc) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm request of %uz bytes is larger than engine "
                      "\"%V\" accepts (%uD)", req.len, &e->name,
                      e->hdr.req_max);

        ngx_http_llm_error(&err, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                           "invalid_request_error", "prompt",
                           "request_too_large",
                           "The request is too large for the engine");
        return ngx_http_llm_send_error(r, &err);

    case NGX_BUSY:
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm engine \"%V\" has no free slot", &e->name);

        ngx_http_llm_error(&err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                           NULL, "engine_overloaded",
                           "The inference engine is busy, retry later");
        return ngx_http_llm_send_error(r, &err);

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm submitted %V to engine \"%V\" slot %uD gen %uD",
                   &ctx->id, &e->name, ctx->slot, ctx->generation);

    rc = ngx_http_llm_start(r, ctx);

    if (rc != NGX_DONE) {
        ngx_http_llm_detach(ctx);
    }

    return rc;
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


/* after a successful submit: park the request, start a stream */

static ngx_int_t
ngx_http_llm_start(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_buf_t                *b;
    ngx_chain_t              *cl;
    ngx_table_elt_t          *h;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    ctx->timeout.handler = ngx_http_llm_timeout_handler;
    ctx->timeout.data = ctx;
    ctx->timeout.log = r->connection->log;

    ngx_add_timer(&ctx->timeout, llcf->timeout);

    r->read_event_handler = ngx_http_test_reading;
    r->write_event_handler = ngx_http_llm_write_handler;

    if (!ctx->stream) {
        return NGX_DONE;
    }

    /* the stream starts now: headers go out before the first token */

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    r->headers_out.content_type_len = ngx_http_llm_sse_type.len;
    r->headers_out.content_type = ngx_http_llm_sse_type;
    r->headers_out.content_type_lowcase = NULL;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Cache-Control");
    ngx_str_set(&h->value, "no-cache");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    /* a proxy in front of us must not buffer the stream either */

    h->hash = 1;
    ngx_str_set(&h->key, "X-Accel-Buffering");
    ngx_str_set(&h->value, "no");

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

    return NGX_DONE;
}


static ngx_int_t
ngx_http_llm_set_id(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    static uint32_t  counter;

    ctx->id.data = ngx_pnalloc(r->pool, sizeof("cmpl-") - 1 + 32);
    if (ctx->id.data == NULL) {
        return NGX_ERROR;
    }

    ctx->id.len = ngx_sprintf(ctx->id.data, "cmpl-%08xD%08xD%08xD%08xD",
                              (uint32_t) ngx_time(), (uint32_t) ngx_pid,
                              counter++, (uint32_t) ngx_random())
                  - ctx->id.data;

    return NGX_OK;
}


static void
ngx_http_llm_cleanup(void *data)
{
    ngx_http_llm_ctx_t  *ctx = data;

    ngx_http_llm_detach(ctx);
}


/*
 * Gives the slot back (the engine stops generating if it is still at it)
 * and stops every timer; after it, nothing refers to the request.
 * Idempotent.
 */

void
ngx_http_llm_detach(ngx_http_llm_ctx_t *ctx)
{
    if (ctx->timeout.timer_set) {
        ngx_del_timer(&ctx->timeout);
    }

    if (!ctx->attached) {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ctx->request->connection->log, 0,
                   "llm detach slot %uD gen %uD", ctx->slot, ctx->generation);

    ctx->attached = 0;
    ngx_queue_remove(&ctx->queue);

    ngx_http_llm_slot_release(ctx);
}


/*
 * Called by the engine side (ngx_http_llm_shm.c) for a request in flight:
 * drain its slot after a doorbell, or end it with err.
 */

void
ngx_http_llm_process(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    if (err) {
        ngx_http_llm_fail(ctx, err);

    } else if (!ctx->blocked) {
        ngx_http_llm_drain(ctx);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_llm_drain(ngx_http_llm_ctx_t *ctx)
{
    u_char                   *buf;
    ngx_int_t                 rc, state;
    ngx_uint_t                got;
    llm_event_t               ev;
    ngx_http_llm_error_t      err;
    ngx_http_llm_loc_conf_t  *llcf;

    buf = (u_char *) ngx_http_llm_event_buf;

    state = ngx_http_llm_slot_state(ctx);

    if (state == NGX_ERROR) {
        ngx_http_llm_corrupt(ctx, "the slot is no longer ours");
        return;
    }

    got = 0;

    for ( ;; ) {

        if (ctx->blocked) {
            /* the client is slow: leave the rest in the ring */
            ngx_http_llm_slot_drained(ctx);
            return;
        }

        rc = ngx_http_llm_slot_event(ctx, &ev, buf);

        if (rc == LLM_RING_EMPTY) {
            break;
        }

        if (rc != LLM_RING_OK) {
            ngx_http_llm_corrupt(ctx, "corrupt event ring");
            return;
        }

        got = 1;

        switch (ev.type) {

        case LLM_EV_TOKEN:

            if (ev.len < sizeof(llm_ev_token_t)) {
                ngx_http_llm_corrupt(ctx, "short TOKEN event");
                return;
            }

            if (ngx_http_llm_append(ctx, buf + sizeof(llm_ev_token_t),
                                    ev.len - sizeof(llm_ev_token_t))
                != NGX_OK)
            {
                ngx_http_llm_detach(ctx);
                ngx_http_finalize_request(ctx->request, NGX_ERROR);
                return;
            }

            if (ctx->stream && ctx->text_len >= NGX_HTTP_LLM_CHUNK_TEXT_MAX) {
                if (ngx_http_llm_send_text(ctx) == NGX_ERROR) {
                    ngx_http_llm_detach(ctx);
                    ngx_http_finalize_request(ctx->request, NGX_ERROR);
                    return;
                }
            }

            continue;

        case LLM_EV_DONE:

            if (ev.len < sizeof(llm_ev_done_t)) {
                ngx_http_llm_corrupt(ctx, "short DONE event");
                return;
            }

            ngx_memcpy(&ctx->done, buf, sizeof(llm_ev_done_t));

            ngx_http_llm_finish(ctx);
            return;

        case LLM_EV_ERROR:

            if (ev.len < sizeof(llm_ev_error_t)) {
                ngx_http_llm_corrupt(ctx, "short ERROR event");
                return;
            }

            ngx_http_llm_event_error(ctx, buf, ev.len, &err);
            ngx_http_llm_fail(ctx, &err);
            return;

        default:
            ngx_log_error(NGX_LOG_WARN, ctx->request->connection->log, 0,
                          "llm engine \"%V\" slot %uD: ignored an event "
                          "of unknown type %uD",
                          &ctx->engine->name, ctx->slot, (uint32_t) ev.type);
            continue;
        }
    }

    /* the ring is empty */

    ngx_http_llm_slot_drained(ctx);

    if (state == LLM_SLOT_FINISHED) {
        /* FINISHED was stored after the last event: there is no more */
        ngx_http_llm_corrupt(ctx, "finished without DONE or ERROR");
        return;
    }

    if (ctx->stream && ctx->text_len) {
        if (ngx_http_llm_send_text(ctx) == NGX_ERROR) {
            ngx_http_llm_detach(ctx);
            ngx_http_finalize_request(ctx->request, NGX_ERROR);
            return;
        }
    }

    if (got && !ctx->blocked) {
        llcf = ngx_http_get_module_loc_conf(ctx->request, ngx_http_llm_module);
        ngx_add_timer(&ctx->timeout, llcf->timeout);
    }
}


static ngx_int_t
ngx_http_llm_append(ngx_http_llm_ctx_t *ctx, u_char *p, size_t len)
{
    u_char              *text;
    size_t               size;
    ngx_http_request_t  *r;

    if (len == 0) {
        return NGX_OK;
    }

    if (ctx->text_size - ctx->text_len < len) {
        r = ctx->request;

        size = ngx_max(ctx->text_size * 2, ctx->text_len + len);
        size = ngx_max(size, 256);

        text = ngx_pnalloc(r->pool, size);
        if (text == NULL) {
            return NGX_ERROR;
        }

        if (ctx->text) {
            ngx_memcpy(text, ctx->text, ctx->text_len);
            ngx_pfree(r->pool, ctx->text);
        }

        ctx->text = text;
        ctx->text_size = size;
    }

    ngx_memcpy(ctx->text + ctx->text_len, p, len);
    ctx->text_len += len;

    return NGX_OK;
}


/* ERROR: llm_ev_error_t, then the message */

static void
ngx_http_llm_event_error(ngx_http_llm_ctx_t *ctx, u_char *buf, size_t len,
    ngx_http_llm_error_t *err)
{
    size_t               n;
    u_char              *p;
    llm_ev_error_t       ee;
    ngx_http_request_t  *r;

    r = ctx->request;

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
                  &ctx->engine->name, ctx->slot, err->status, err->type);
}


/* a malformed slot or event: this request ends, the engine stays */

static void
ngx_http_llm_corrupt(ngx_http_llm_ctx_t *ctx, const char *why)
{
    ngx_http_llm_error_t  err;

    ngx_log_error(NGX_LOG_ERR, ctx->request->connection->log, 0,
                  "llm engine \"%V\" slot %uD: %s",
                  &ctx->engine->name, ctx->slot, why);

    ngx_http_llm_error(&err, NGX_HTTP_BAD_GATEWAY, "server_error", NULL,
                       "engine_error", "The inference engine failed");

    ngx_http_llm_fail(ctx, &err);
}


static void
ngx_http_llm_finish(ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t              rc;
    const char            *finish;
    ngx_chain_t           *out, **ll;
    ngx_http_request_t    *r;
    ngx_http_llm_error_t   err;

    r = ctx->request;

    ngx_http_llm_detach(ctx);

    finish = ngx_http_llm_finish_reason(ctx->done.finish_reason);

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm done %V: %s, %uD+%uD tokens, %uL us",
                   &ctx->id, finish ? finish : "?",
                   ctx->done.prompt_tokens, ctx->done.completion_tokens,
                   ctx->done.total_us);

    if (finish == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "llm engine \"%V\" slot %uD: finish reason %uD",
                      &ctx->engine->name, ctx->slot,
                      ctx->done.finish_reason);

        ngx_http_llm_error(&err, NGX_HTTP_BAD_GATEWAY, "server_error", NULL,
                           "engine_error",
                           "The inference engine stopped the request");
        ngx_http_llm_fail(ctx, &err);
        return;
    }

    if (!ctx->stream) {
        rc = ngx_http_llm_send_json(r, NGX_HTTP_OK,
                                    ngx_http_llm_completion_json(r, ctx,
                                                                 finish, 1));
        ngx_http_finalize_request(r, rc);
        return;
    }

    /* the last text, a chunk with the finish reason, then [DONE] */

    out = NULL;
    ll = &out;

    if (ctx->text_len) {
        *ll = ngx_http_llm_sse_buf(ctx,
                                   ngx_http_llm_completion_json(r, ctx,
                                                                NULL, 0),
                                   0);
        if (*ll == NULL) {
            ngx_http_finalize_request(r, NGX_ERROR);
            return;
        }

        ll = &(*ll)->next;
        ctx->text_len = 0;
    }

    *ll = ngx_http_llm_sse_buf(ctx,
                               ngx_http_llm_completion_json(r, ctx, finish, 0),
                               0);
    if (*ll == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    ll = &(*ll)->next;

    *ll = ngx_http_llm_sse_buf(ctx, NULL, 1);
    if (*ll == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return;
    }

    rc = ngx_http_llm_output(ctx, out);

    ngx_http_finalize_request(r, rc);
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


/* one SSE chunk with the text one drain gathered */

static ngx_int_t
ngx_http_llm_send_text(ngx_http_llm_ctx_t *ctx)
{
    ngx_chain_t  *out;

    out = ngx_http_llm_sse_buf(ctx,
                               ngx_http_llm_completion_json(ctx->request, ctx,
                                                            NULL, 0),
                               0);
    if (out == NULL) {
        return NGX_ERROR;
    }

    ctx->text_len = 0;

    return ngx_http_llm_output(ctx, out);
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
 * Passes stream output on.  NGX_AGAIN: the client is slow, and the slot
 * is not drained until the write handler has sent what is pending.
 */

static ngx_int_t
ngx_http_llm_output(ngx_http_llm_ctx_t *ctx, ngx_chain_t *out)
{
    ngx_int_t                  rc;
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_llm_loc_conf_t   *llcf;
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
                           "llm slot %uD blocked by the client", ctx->slot);
        }

        ctx->blocked = 1;

        if (ctx->timeout.timer_set) {
            ngx_del_timer(&ctx->timeout);
        }

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

        if (ctx->attached) {
            llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);
            ngx_add_timer(&ctx->timeout, llcf->timeout);
        }
    }

    return rc;
}


static void
ngx_http_llm_write_handler(ngx_http_request_t *r)
{
    ngx_event_t               *wev;
    ngx_connection_t          *c;
    ngx_http_llm_ctx_t        *ctx;
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
            ngx_http_llm_detach(ctx);
            ngx_http_finalize_request(r, NGX_ERROR);
        }

        return;
    }

    switch (ngx_http_llm_output(ctx, NULL)) {

    case NGX_ERROR:
        ngx_http_llm_detach(ctx);
        ngx_http_finalize_request(r, NGX_ERROR);
        return;

    case NGX_AGAIN:
        return;

    default:
        break;
    }

    if (ctx->attached) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "llm slot %uD unblocked", ctx->slot);

        ngx_http_llm_drain(ctx);
    }
}


static void
ngx_http_llm_timeout_handler(ngx_event_t *ev)
{
    ngx_connection_t      *c;
    ngx_http_request_t    *r;
    ngx_http_llm_ctx_t    *ctx;
    ngx_http_llm_error_t   err;

    ctx = ev->data;
    r = ctx->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_log_error(NGX_LOG_ERR, c->log, NGX_ETIMEDOUT,
                  "llm engine \"%V\" slot %uD timed out",
                  &ctx->engine->name, ctx->slot);

    ngx_http_llm_error(&err, NGX_HTTP_GATEWAY_TIME_OUT, "server_error", NULL,
                       "timeout", "The inference engine did not answer "
                       "in time");

    ngx_http_llm_fail(ctx, &err);

    ngx_http_run_posted_requests(c);
}
