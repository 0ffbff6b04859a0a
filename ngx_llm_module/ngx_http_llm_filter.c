
/*
 * Copyright (C) ngx_llm developers
 *
 * OpenAI clients read every error body as JSON.  In an llm_pass location
 * the errors nginx answers by itself (413 from client_max_body_size,
 * 429 from limit_req, 400 for a bad request line, 500 on a failure)
 * come with its HTML page; these filters put an OpenAI error object in
 * its place.  The module's own answers are never HTML and pass through.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"


static ngx_int_t ngx_http_llm_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static void ngx_http_llm_error_page(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_llm_error_t *err);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


ngx_int_t
ngx_http_llm_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_llm_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_llm_body_filter;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_header_filter(ngx_http_request_t *r)
{
    ngx_buf_t                *b;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_error_t      err;
    ngx_http_llm_loc_conf_t  *llcf;

    static ngx_str_t  type = ngx_string("application/json");

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    /* err_status is set only for nginx's own error pages */

    if (llcf->engine == NULL || r != r->main || r->err_status < 400
        || r->headers_out.content_length_n <= 0
        || r->headers_out.content_type.len != sizeof("text/html") - 1
        || ngx_strncmp(r->headers_out.content_type.data, "text/html",
                       sizeof("text/html") - 1) != 0)
    {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_ctx_t));
        if (ctx == NULL) {
            return NGX_ERROR;
        }

        ctx->request = r;
        ctx->engine = llcf->engine;

        ngx_http_set_ctx(r, ctx, ngx_http_llm_module);
    }

    ngx_http_llm_error_page(r, r->err_status, &err);

    b = ngx_http_llm_json_buf(r->pool, ngx_http_llm_error_json(r, &err));
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    ctx->error_page = b;
    ctx->json_page = 1;

    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type_len = type.len;
    r->headers_out.content_type = type;
    r->headers_out.content_type_lowcase = NULL;

    return ngx_http_next_header_filter(r);
}


/* the HTML goes unsent; its last buffer brings the JSON */

static ngx_int_t
ngx_http_llm_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_uint_t           last;
    ngx_chain_t         *cl, out;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (ctx == NULL || !ctx->json_page || in == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;

        if (cl->buf->last_buf || cl->buf->last_in_chain) {
            last = 1;
        }
    }

    if (!last || ctx->error_page == NULL) {
        return NGX_OK;
    }

    out.buf = ctx->error_page;
    out.next = NULL;

    ctx->error_page = NULL;

    return ngx_http_next_body_filter(r, &out);
}


static void
ngx_http_llm_error_page(ngx_http_request_t *r, ngx_uint_t status,
    ngx_http_llm_error_t *err)
{
    switch (status) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        ngx_http_llm_error(err, status, "invalid_request_error", NULL,
                           "request_too_large",
                           "The request body is too large");
        return;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        ngx_http_llm_error(err, status, "requests", NULL,
                           "rate_limit_exceeded",
                           "Rate limit reached, retry later");
        return;

    case NGX_HTTP_REQUEST_TIME_OUT:
        ngx_http_llm_error(err, status, "invalid_request_error", NULL,
                           "timeout", "The request was not read in time");
        return;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        ngx_http_llm_error(err, status, "server_error", NULL,
                           "service_unavailable",
                           "The service is unavailable, retry later");
        return;

    default:
        break;
    }

    if (status < NGX_HTTP_INTERNAL_SERVER_ERROR) {
        ngx_http_llm_error(err, status, "invalid_request_error", NULL, NULL,
                           "The request was refused");

    } else {
        ngx_http_llm_error(err, status, "server_error", NULL, NULL,
                           "The server failed to answer the request");
    }
}
