
/*
 * Copyright (C) ngx_llm developers
 *
 * The OpenAI API's JSON: request parsing and validation, and every object
 * the module answers with.  All of it goes through jansson, so untrusted
 * text (prompts, model names, engine messages, URIs) is always escaped;
 * what is not valid UTF-8 is repaired first, because jansson refuses it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"


static void ngx_http_llm_json_cleanup(void *data);
static ngx_int_t ngx_http_llm_invalid(ngx_http_request_t *r,
    ngx_http_llm_error_t *err, const char *param, const char *code,
    const char *fmt, ...);
static ngx_int_t ngx_http_llm_get_number(ngx_http_request_t *r, json_t *root,
    const char *name, double *value, ngx_http_llm_error_t *err);
static size_t ngx_http_llm_utf8_valid(u_char *p, size_t len);


static ngx_str_t  ngx_http_llm_json_type = ngx_string("application/json");


ngx_int_t
ngx_http_llm_parse_completion(ngx_http_request_t *r, u_char *p, size_t len,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    json_int_t                n;
    json_t                   *root, *v;
    json_error_t              jerr;
    ngx_pool_cleanup_t       *cln;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    ngx_memzero(cp, sizeof(ngx_http_llm_completion_t));

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    root = json_loadb((const char *) p, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        return ngx_http_llm_invalid(r, err, NULL, "invalid_json",
                   "We could not parse the JSON body of your request: "
                   "%s (line %d, column %d)",
                   jerr.text, jerr.line, jerr.column);
    }

    cln->handler = ngx_http_llm_json_cleanup;
    cln->data = root;
    cp->json = root;

    if (!json_is_object(root)) {
        return ngx_http_llm_invalid(r, err, NULL, "invalid_type",
                   "The request body must be a JSON object");
    }

    /* model */

    v = json_object_get(root, "model");

    if (v == NULL || json_is_null(v)) {
        return ngx_http_llm_invalid(r, err, "model",
                   "missing_required_parameter",
                   "You must provide a model parameter");
    }

    if (!json_is_string(v)) {
        return ngx_http_llm_invalid(r, err, "model", "invalid_type",
                   "Invalid type for 'model': expected a string");
    }

    cp->model.data = (u_char *) json_string_value(v);
    cp->model.len = json_string_length(v);

    /* prompt */

    v = json_object_get(root, "prompt");

    if (v == NULL || json_is_null(v)) {
        return ngx_http_llm_invalid(r, err, "prompt",
                   "missing_required_parameter",
                   "You must provide a prompt parameter");
    }

    if (!json_is_string(v)) {
        return ngx_http_llm_invalid(r, err, "prompt", "invalid_type",
                   "Invalid type for 'prompt': expected a string");
    }

    cp->prompt.data = (u_char *) json_string_value(v);
    cp->prompt.len = json_string_length(v);

    /* max_tokens: llm_max_tokens is both the default and the cap */

    cp->max_tokens = llcf->max_tokens;

    v = json_object_get(root, "max_tokens");

    if (v != NULL && !json_is_null(v)) {

        if (!json_is_integer(v)) {
            return ngx_http_llm_invalid(r, err, "max_tokens", "invalid_type",
                       "Invalid type for 'max_tokens': expected an integer");
        }

        n = json_integer_value(v);

        if (n < 1) {
            return ngx_http_llm_invalid(r, err, "max_tokens",
                       "invalid_value",
                       "Invalid 'max_tokens': %L, it must be at least 1",
                       (int64_t) n);
        }

        if ((uint64_t) n > llcf->max_tokens) {
            return ngx_http_llm_invalid(r, err, "max_tokens",
                       "invalid_value",
                       "Invalid 'max_tokens': %L is more than the limit "
                       "of %ui", (int64_t) n, llcf->max_tokens);
        }

        cp->max_tokens = (ngx_uint_t) n;
    }

    /* temperature, [0, 2] */

    cp->temperature = 1.0;

    switch (ngx_http_llm_get_number(r, root, "temperature", &cp->temperature,
                                    err))
    {
    case NGX_OK:
        break;
    default:
        return NGX_DECLINED;
    }

    if (!(cp->temperature >= 0.0 && cp->temperature <= 2.0)) {
        return ngx_http_llm_invalid(r, err, "temperature", "invalid_value",
                   "Invalid 'temperature': %.3f, it must be between 0 and 2",
                   cp->temperature);
    }

    /* top_p, (0, 1] */

    cp->top_p = 1.0;

    switch (ngx_http_llm_get_number(r, root, "top_p", &cp->top_p, err)) {
    case NGX_OK:
        break;
    default:
        return NGX_DECLINED;
    }

    if (!(cp->top_p > 0.0 && cp->top_p <= 1.0)) {
        return ngx_http_llm_invalid(r, err, "top_p", "invalid_value",
                   "Invalid 'top_p': %.3f, it must be more than 0 and "
                   "at most 1", cp->top_p);
    }

    /* seed: the engine always gets one, so sampling is reproducible */

    v = json_object_get(root, "seed");

    if (v != NULL && !json_is_null(v)) {

        if (!json_is_integer(v)) {
            return ngx_http_llm_invalid(r, err, "seed", "invalid_type",
                       "Invalid type for 'seed': expected an integer");
        }

        cp->seed = json_integer_value(v);

    } else {
        cp->seed = (int64_t) ngx_random();
    }

    /* stream */

    v = json_object_get(root, "stream");

    if (v != NULL && !json_is_null(v)) {

        if (!json_is_boolean(v)) {
            return ngx_http_llm_invalid(r, err, "stream", "invalid_type",
                       "Invalid type for 'stream': expected a boolean");
        }

        cp->stream = json_is_true(v) ? 1 : 0;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_get_number(ngx_http_request_t *r, json_t *root, const char *name,
    double *value, ngx_http_llm_error_t *err)
{
    json_t  *v;

    v = json_object_get(root, name);

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (!json_is_number(v)) {
        (void) ngx_http_llm_invalid(r, err, name, "invalid_type",
                   "Invalid type for '%s': expected a number", name);
        return NGX_DECLINED;
    }

    *value = json_number_value(v);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_invalid(ngx_http_request_t *r, ngx_http_llm_error_t *err,
    const char *param, const char *code, const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;

    /* messages are short; the longest part is jansson's error text */

    p = ngx_pnalloc(r->pool, 512);
    if (p == NULL) {
        return NGX_ERROR;
    }

    va_start(args, fmt);
    last = ngx_vslprintf(p, p + 512, fmt, args);
    va_end(args);

    err->status = NGX_HTTP_BAD_REQUEST;
    err->type = "invalid_request_error";
    err->param = param;
    err->code = code;
    err->message.data = p;
    err->message.len = last - p;

    return NGX_DECLINED;
}


static void
ngx_http_llm_json_cleanup(void *data)
{
    json_decref(data);
}


/*
 * The request as the engine reads it, compact JSON in r->pool:
 * {"id","model","prompt","max_tokens","temperature","top_p","seed","stream"}
 */

ngx_int_t
ngx_http_llm_request_json(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_completion_t *cp, ngx_str_t *out)
{
    size_t   size;
    json_t  *json;

    json = json_pack("{s:s%,s:O,s:O,s:I,s:f,s:f,s:I,s:b}",
                     "id", (const char *) ctx->id.data, ctx->id.len,
                     "model", json_object_get(cp->json, "model"),
                     "prompt", json_object_get(cp->json, "prompt"),
                     "max_tokens", (json_int_t) cp->max_tokens,
                     "temperature", cp->temperature,
                     "top_p", cp->top_p,
                     "seed", (json_int_t) cp->seed,
                     "stream", (int) cp->stream);
    if (json == NULL) {
        return NGX_ERROR;
    }

    size = json_dumpb(json, NULL, 0, JSON_COMPACT);

    out->data = ngx_pnalloc(r->pool, size ? size : 1);
    if (size == 0 || out->data == NULL) {
        json_decref(json);
        return NGX_ERROR;
    }

    out->len = json_dumpb(json, (char *) out->data, size, JSON_COMPACT);

    json_decref(json);

    return NGX_OK;
}


void
ngx_http_llm_error(ngx_http_llm_error_t *err, ngx_uint_t status,
    const char *type, const char *param, const char *code,
    const char *message)
{
    err->status = status;
    err->type = type;
    err->param = param;
    err->code = code;
    err->message.data = (u_char *) message;
    err->message.len = ngx_strlen(message);
}


/* {"error":{"message","type","param","code"}} */

json_t *
ngx_http_llm_error_json(ngx_http_request_t *r, ngx_http_llm_error_t *err)
{
    json_t  *msg;

    msg = ngx_http_llm_json_string(r->pool, err->message.data,
                                   err->message.len);
    if (msg == NULL) {
        return NULL;
    }

    return json_pack("{s:{s:o,s:s,s:s?,s:s?}}",
                     "error",
                     "message", msg,
                     "type", err->type,
                     "param", err->param,
                     "code", err->code);
}


ngx_int_t
ngx_http_llm_send_error(ngx_http_request_t *r, ngx_http_llm_error_t *err)
{
    ngx_table_elt_t  *h;

    if (err->status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    return ngx_http_llm_send_json(r, err->status,
                                  ngx_http_llm_error_json(r, err));
}


/* sends a whole JSON response; consumes json, which may be NULL (ENOMEM) */

ngx_int_t
ngx_http_llm_send_json(ngx_http_request_t *r, ngx_uint_t status, json_t *json)
{
    size_t        size;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    size = json_dumpb(json, NULL, 0, JSON_COMPACT);

    b = (size == 0) ? NULL : ngx_create_temp_buf(r->pool, size + 1);
    if (b == NULL) {
        json_decref(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last += json_dumpb(json, (char *) b->last, size, JSON_COMPACT);
    *b->last++ = LF;

    json_decref(json);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type_len = ngx_http_llm_json_type.len;
    r->headers_out.content_type = ngx_http_llm_json_type;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
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


/*
 * A text_completion object: the whole answer (usage != 0) or one
 * streaming chunk (finish NULL: still running).
 */

json_t *
ngx_http_llm_completion_json(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    const char *finish, ngx_uint_t usage)
{
    json_t    *text, *json;
    uint32_t   prompt, completion;

    text = ngx_http_llm_json_string(r->pool, ctx->text, ctx->text_len);
    if (text == NULL) {
        return NULL;
    }

    json = json_pack("{s:s%,s:s,s:I,s:s%,s:[{s:o,s:i,s:n,s:s?}]}",
                     "id", (const char *) ctx->id.data, ctx->id.len,
                     "object", "text_completion",
                     "created", (json_int_t) ctx->created,
                     "model", (const char *) ctx->model.data, ctx->model.len,
                     "choices",
                         "text", text,
                         "index", 0,
                         "logprobs",
                         "finish_reason", finish);
    if (json == NULL || !usage) {
        return json;
    }

    prompt = ctx->done.prompt_tokens;
    completion = ctx->done.completion_tokens;

    if (json_object_set_new(json, "usage",
                            json_pack("{s:I,s:I,s:I}",
                                      "prompt_tokens", (json_int_t) prompt,
                                      "completion_tokens",
                                      (json_int_t) completion,
                                      "total_tokens",
                                      (json_int_t) prompt + completion))
        != 0)
    {
        json_decref(json);
        return NULL;
    }

    return json;
}


/* {"object":"list","data":[{"id","object":"model","created","owned_by"}]} */

ngx_int_t
ngx_http_llm_send_models(ngx_http_request_t *r, ngx_http_llm_engine_t *e)
{
    size_t            len;
    json_t           *data, *name, *model;
    ngx_uint_t        i;
    llm_shm_model_t  *m;

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

    return ngx_http_llm_send_json(r, NGX_HTTP_OK,
                                  json_pack("{s:s,s:o}",
                                            "object", "list",
                                            "data", data));
}


/*
 * A JSON string from bytes that should be UTF-8 but come from a client
 * or the engine: invalid sequences become U+FFFD, as a browser would
 * show them, instead of failing the whole response.
 */

json_t *
ngx_http_llm_json_string(ngx_pool_t *pool, u_char *p, size_t len)
{
    size_t   n;
    u_char  *dst, *d, *last;
    json_t  *json;

    if (ngx_http_llm_utf8_valid(p, len) == len) {
        return json_stringn((const char *) p, len);
    }

    /* every byte may become the 3 bytes of U+FFFD */

    dst = ngx_pnalloc(pool, len * 3);
    if (dst == NULL) {
        return NULL;
    }

    d = dst;
    last = p + len;

    while (p < last) {
        n = ngx_http_llm_utf8_valid(p, last - p);

        d = ngx_cpymem(d, p, n);
        p += n;

        if (p < last) {
            /* skip one invalid sequence: a byte, then its continuations */
            p++;
            while (p < last && (*p & 0xc0) == 0x80) {
                p++;
            }

            *d++ = 0xef; *d++ = 0xbf; *d++ = 0xbd;
        }
    }

    json = json_stringn((const char *) dst, d - dst);

    ngx_pfree(pool, dst);

    return json;
}


/* the length of the valid UTF-8 prefix of p */

static size_t
ngx_http_llm_utf8_valid(u_char *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  c, min;

    i = 0;

    while (i < len) {
        c = p[i];

        if (c < 0x80) {
            i++;
            continue;
        }

        if ((c & 0xe0) == 0xc0) {
            n = 1; c &= 0x1f; min = 0x80;

        } else if ((c & 0xf0) == 0xe0) {
            n = 2; c &= 0x0f; min = 0x800;

        } else if ((c & 0xf8) == 0xf0) {
            n = 3; c &= 0x07; min = 0x10000;

        } else {
            return i;
        }

        if (len - i <= n) {
            return i;
        }

        for (k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return i;
            }

            c = (c << 6) | (p[i + k] & 0x3f);
        }

        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
            return i;
        }

        i += n + 1;
    }

    return i;
}
