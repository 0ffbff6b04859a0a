
/*
 * Copyright (C) ngx_llm developers
 *
 * Variables for log_format and routing:
 *
 *   $llm_request_model      the "model" the client asked for (set once
 *                           the body is read: map and split_clients may
 *                           use it in llm_model)
 *   $llm_model              the version that served the request
 *   $llm_prompt_tokens      usage, summed over the request's choices
 *   $llm_completion_tokens
 *   $llm_cached_tokens      prompt tokens found in the prefix cache
 *   $llm_ttft_ms            request start to the first token, in ms
 *   $llm_finish_reason      per choice, comma-separated: stop, length
 *
 * Each is "not found" (a "-" in logs) until it has a value.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"


#define NGX_HTTP_LLM_VAR_REQUEST_MODEL       0
#define NGX_HTTP_LLM_VAR_MODEL               1
#define NGX_HTTP_LLM_VAR_PROMPT_TOKENS       2
#define NGX_HTTP_LLM_VAR_COMPLETION_TOKENS   3
#define NGX_HTTP_LLM_VAR_CACHED_TOKENS       4
#define NGX_HTTP_LLM_VAR_TTFT                5
#define NGX_HTTP_LLM_VAR_FINISH_REASON       6


static ngx_int_t ngx_http_llm_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_variable_finish(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_variable_value_t *v);


static ngx_http_variable_t  ngx_http_llm_vars[] = {

    { ngx_string("llm_request_model"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_REQUEST_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_model"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_prompt_tokens"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_PROMPT_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_completion_tokens"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_COMPLETION_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_cached_tokens"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_CACHED_TOKENS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_ttft_ms"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_TTFT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_finish_reason"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_FINISH_REASON, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_llm_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_llm_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                *p;
    uint64_t               n;
    ngx_http_llm_ctx_t    *ctx;
    ngx_http_llm_usage_t   u;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    v->not_found = 1;

    if (ctx == NULL) {
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_LLM_VAR_REQUEST_MODEL:
    case NGX_HTTP_LLM_VAR_MODEL:

        if (data == NGX_HTTP_LLM_VAR_MODEL && !ctx->model_known) {
            return NGX_OK;
        }

        p = (data == NGX_HTTP_LLM_VAR_MODEL) ? ctx->model.data
                                             : ctx->request_model.data;
        if (p == NULL) {
            return NGX_OK;
        }

        v->data = p;
        v->len = (data == NGX_HTTP_LLM_VAR_MODEL) ? ctx->model.len
                                                  : ctx->request_model.len;
        goto found;

    case NGX_HTTP_LLM_VAR_FINISH_REASON:

        if (ctx->n_finished == 0) {
            return NGX_OK;
        }

        if (ngx_http_llm_variable_finish(r, ctx, v) != NGX_OK) {
            return NGX_ERROR;
        }

        goto found;

    case NGX_HTTP_LLM_VAR_TTFT:

        if (!ctx->first_token) {
            return NGX_OK;
        }

        n = ctx->ttft;
        break;

    default:

        /* the token counts, once the request reached the engine */

        if (!ctx->started) {
            return NGX_OK;
        }

        ngx_http_llm_usage(ctx, &u);

        n = (data == NGX_HTTP_LLM_VAR_PROMPT_TOKENS) ? u.prompt
            : (data == NGX_HTTP_LLM_VAR_COMPLETION_TOKENS) ? u.completion
            : u.cached;
        break;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%uL", n) - p;

found:

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_variable_finish(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_variable_value_t *v)
{
    u_char      *p;
    ngx_uint_t   i;
    const char  *reason;

    p = ngx_pnalloc(r->pool, ctx->n_choices * sizeof("length,"));
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;

    for (i = 0; i < ctx->n_choices; i++) {
        reason = ctx->choices[i].finished
                 ? ngx_http_llm_finish_reason(
                       ctx->choices[i].done.finish_reason)
                 : NULL;

        p = ngx_sprintf(p, "%s%s", i ? "," : "", reason ? reason : "-");
    }

    v->len = p - v->data;

    return NGX_OK;
}
