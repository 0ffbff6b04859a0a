
/*
 * Copyright (C) ngx_llm developers
 *
 * The OpenAI API's requests: parsing and validation of /v1/completions
 * and /v1/chat/completions bodies into the engine's request (engine/proto
 * llm_proto.h), and the error objects the module answers with.  All of
 * it goes through jansson, so untrusted text (prompts, model names,
 * engine messages, URIs) is always escaped; what is not valid UTF-8 is
 * repaired first, because jansson refuses it.
 *
 * Unknown fields are ignored; a known field of the wrong type or out of
 * range is a 400 that names it in "param".
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"


/* what a field must be */
#define NGX_HTTP_LLM_STRING    0
#define NGX_HTTP_LLM_INTEGER   1
#define NGX_HTTP_LLM_NUMBER    2
#define NGX_HTTP_LLM_BOOLEAN   3
#define NGX_HTTP_LLM_ARRAY     4
#define NGX_HTTP_LLM_OBJECT    5


static ngx_int_t ngx_http_llm_parse_prompt(ngx_http_request_t *r,
    json_t *root, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_token_ids(ngx_http_request_t *r, json_t *ids,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_parse_messages(ngx_http_request_t *r,
    json_t *root, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err);
static json_t *ngx_http_llm_message(ngx_http_request_t *r, json_t *m,
    size_t i, ngx_http_llm_error_t *err);
static json_t *ngx_http_llm_content(ngx_http_request_t *r, json_t *content,
    const char *param, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_parse_limits(ngx_http_request_t *r,
    json_t *root, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_parse_sampling(ngx_http_request_t *r,
    json_t *root, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_parse_stop(ngx_http_request_t *r,
    json_t *root, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_parse_bias(ngx_http_request_t *r,
    json_t *root, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_parse_logprobs(ngx_http_request_t *r,
    ngx_uint_t endpoint, json_t *root, ngx_http_llm_completion_t *cp,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_parse_stream(ngx_http_request_t *r,
    json_t *root, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_field(ngx_http_request_t *r, json_t *root,
    const char *name, ngx_uint_t type, json_t **value,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_integer(ngx_http_request_t *r, json_t *root,
    const char *name, int64_t lo, int64_t hi, int64_t *value,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_number(ngx_http_request_t *r, json_t *root,
    const char *name, double lo, double hi, ngx_http_llm_completion_t *cp,
    ngx_http_llm_error_t *err);
static const char *ngx_http_llm_param(ngx_http_request_t *r,
    const char *name, size_t i, const char *field);
static ngx_int_t ngx_http_llm_own(ngx_http_request_t *r, json_t *json);
static size_t ngx_http_llm_utf8_valid(u_char *p, size_t len);


static ngx_str_t  ngx_http_llm_json_type = ngx_string("application/json");

static const char  *ngx_http_llm_type_names[] = {
    "a string", "an integer", "a number", "a boolean", "an array",
    "an object"
};


ngx_int_t
ngx_http_llm_parse(ngx_http_request_t *r, ngx_uint_t endpoint, u_char *p,
    size_t len, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    ngx_int_t      rc;
    json_t        *root, *v;
    json_error_t   jerr;

    ngx_memzero(cp, sizeof(ngx_http_llm_completion_t));

    root = json_loadb((const char *) p, len, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        return ngx_http_llm_invalid(r, err, NULL, "invalid_json",
                   "We could not parse the JSON body of your request: "
                   "%s (line %d, column %d)",
                   jerr.text, jerr.line, jerr.column);
    }

    if (ngx_http_llm_own(r, root) != NGX_OK) {
        return NGX_ERROR;
    }

    cp->json = root;

    if (!json_is_object(root)) {
        return ngx_http_llm_invalid(r, err, NULL, "invalid_type",
                   "The request body must be a JSON object");
    }

    cp->fields = json_object();
    if (cp->fields == NULL || ngx_http_llm_own(r, cp->fields) != NGX_OK) {
        return NGX_ERROR;
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

    if (endpoint == NGX_HTTP_LLM_CHAT) {
        rc = ngx_http_llm_parse_messages(r, root, cp, err);

    } else {
        rc = ngx_http_llm_parse_prompt(r, root, cp, err);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_llm_parse_limits(r, root, cp, err);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_parse_sampling(r, root, cp, err);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_parse_logprobs(r, endpoint, root, cp, err);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_parse_stream(r, root, cp, err);
    }

    return rc;
}


/*
 * "prompt": a string, a list of strings, token ids, or a list of token
 * id lists.  cp->prompts gets the list of prompts either way.
 */

static ngx_int_t
ngx_http_llm_parse_prompt(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    size_t   i, n;
    json_t  *v, *first, *item;

    v = json_object_get(root, "prompt");

    if (v == NULL || json_is_null(v)) {
        return ngx_http_llm_invalid(r, err, "prompt",
                   "missing_required_parameter",
                   "You must provide a prompt parameter");
    }

    if (json_is_string(v)) {
        cp->prompts = json_pack("[O]", v);
        goto done;
    }

    if (!json_is_array(v)) {
        goto invalid;
    }

    n = json_array_size(v);

    if (n == 0) {
        return ngx_http_llm_invalid(r, err, "prompt", "invalid_value",
                   "Invalid 'prompt': the list is empty");
    }

    first = json_array_get(v, 0);

    if (json_is_integer(first)) {
        if (ngx_http_llm_token_ids(r, v, err) != NGX_OK) {
            return NGX_DECLINED;
        }

        cp->prompts = json_pack("[O]", v);
        goto done;
    }

    if (n > NGX_HTTP_LLM_MAX_PROMPTS) {
        return ngx_http_llm_invalid(r, err, "prompt", "invalid_value",
                   "Invalid 'prompt': %uz prompts, at most %d are allowed",
                   n, NGX_HTTP_LLM_MAX_PROMPTS);
    }

    json_array_foreach(v, i, item) {

        if (json_is_string(first) && json_is_string(item)) {
            continue;
        }

        if (json_is_array(first) && json_is_array(item)) {
            if (ngx_http_llm_token_ids(r, item, err) != NGX_OK) {
                return NGX_DECLINED;
            }

            continue;
        }

        goto invalid;
    }

    cp->prompts = json_incref(v);

done:

    if (cp->prompts == NULL || ngx_http_llm_own(r, cp->prompts) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;

invalid:

    return ngx_http_llm_invalid(r, err, "prompt", "invalid_type",
               "Invalid type for 'prompt': expected a string, a list of "
               "strings, a list of token ids or a list of such lists");
}


static ngx_int_t
ngx_http_llm_token_ids(ngx_http_request_t *r, json_t *ids,
    ngx_http_llm_error_t *err)
{
    size_t      i;
    json_t     *id;
    json_int_t  n;

    if (json_array_size(ids) == 0) {
        return ngx_http_llm_invalid(r, err, "prompt", "invalid_value",
                   "Invalid 'prompt': a list of token ids is empty");
    }

    json_array_foreach(ids, i, id) {

        if (!json_is_integer(id)) {
            return ngx_http_llm_invalid(r, err, "prompt", "invalid_type",
                       "Invalid type for 'prompt': token ids must be "
                       "integers");
        }

        n = json_integer_value(id);

        if (n < 0 || n > NGX_MAX_INT32_VALUE) {
            return ngx_http_llm_invalid(r, err, "prompt", "invalid_value",
                       "Invalid 'prompt': %L is not a token id",
                       (int64_t) n);
        }
    }

    return NGX_OK;
}


/*
 * "messages": [{"role", "content"}], content a string or a list of text
 * parts; the engine gets each content as one string.
 */

static ngx_int_t
ngx_http_llm_parse_messages(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    size_t   i;
    json_t  *v, *m, *out;

    v = json_object_get(root, "messages");

    if (v == NULL || json_is_null(v)) {
        return ngx_http_llm_invalid(r, err, "messages",
                   "missing_required_parameter",
                   "You must provide a messages parameter");
    }

    if (!json_is_array(v)) {
        return ngx_http_llm_invalid(r, err, "messages", "invalid_type",
                   "Invalid type for 'messages': expected an array");
    }

    if (json_array_size(v) == 0) {
        return ngx_http_llm_invalid(r, err, "messages", "invalid_value",
                   "Invalid 'messages': the list is empty");
    }

    cp->messages = json_array();
    if (cp->messages == NULL
        || ngx_http_llm_own(r, cp->messages) != NGX_OK)
    {
        return NGX_ERROR;
    }

    json_array_foreach(v, i, m) {

        err->status = 0;

        out = ngx_http_llm_message(r, m, i, err);
        if (out == NULL) {
            return err->status ? NGX_DECLINED : NGX_ERROR;
        }

        if (json_array_append_new(cp->messages, out) != 0) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* one message as the engine reads it; NULL and err->status set: a 400 */

static json_t *
ngx_http_llm_message(ngx_http_request_t *r, json_t *m, size_t i,
    ngx_http_llm_error_t *err)
{
    json_t      *role, *content;
    const char  *name, *param;

    if (!json_is_object(m)) {
        (void) ngx_http_llm_invalid(r, err,
                   ngx_http_llm_param(r, "messages", i, NULL),
                   "invalid_type",
                   "Invalid type for 'messages[%uz]': expected an object", i);
        return NULL;
    }

    role = json_object_get(m, "role");
    name = json_is_string(role) ? json_string_value(role) : "";

    if (ngx_strcmp(name, "developer") == 0) {
        /* OpenAI's newer name for the system prompt */
        name = "system";
    }

    if (ngx_strcmp(name, "system") != 0 && ngx_strcmp(name, "user") != 0
        && ngx_strcmp(name, "assistant") != 0)
    {
        (void) ngx_http_llm_invalid(r, err,
                   ngx_http_llm_param(r, "messages", i, "role"),
                   json_is_string(role) ? "invalid_value" : "invalid_type",
                   "Invalid 'messages[%uz].role': expected \"system\", "
                   "\"developer\", \"user\" or \"assistant\"", i);
        return NULL;
    }

    param = ngx_http_llm_param(r, "messages", i, "content");
    if (param == NULL) {
        return NULL;
    }

    content = json_object_get(m, "content");

    if ((content == NULL || json_is_null(content))
        && ngx_strcmp(name, "assistant") == 0)
    {
        content = json_string("");

    } else {
        content = ngx_http_llm_content(r, content, param, err);
    }

    if (content == NULL) {
        return NULL;
    }

    return json_pack("{s:s,s:o}", "role", name, "content", content);
}


static json_t *
ngx_http_llm_content(ngx_http_request_t *r, json_t *content,
    const char *param, ngx_http_llm_error_t *err)
{
    u_char   *p, *text;
    size_t    i, len;
    json_t   *part, *type, *t;

    if (json_is_string(content)) {
        return json_incref(content);
    }

    if (!json_is_array(content)) {
        (void) ngx_http_llm_invalid(r, err, param, "invalid_type",
                   "Invalid type for '%s': expected a string or a list "
                   "of text parts", param);
        return NULL;
    }

    /* the parts' text, each part on a line of its own */

    len = 0;

    json_array_foreach(content, i, part) {
        type = json_object_get(part, "type");
        t = json_object_get(part, "text");

        if (!json_is_string(type)
            || ngx_strcmp(json_string_value(type), "text") != 0)
        {
            (void) ngx_http_llm_invalid(r, err, param, "invalid_value",
                       "Invalid '%s[%uz]': only parts of type \"text\" "
                       "are supported", param, i);
            return NULL;
        }

        if (!json_is_string(t)) {
            (void) ngx_http_llm_invalid(r, err, param, "invalid_type",
                       "Invalid type for '%s[%uz].text': expected "
                       "a string", param, i);
            return NULL;
        }

        len += json_string_length(t) + 1;
    }

    text = ngx_pnalloc(r->pool, len + 1);
    if (text == NULL) {
        return NULL;
    }

    p = text;

    json_array_foreach(content, i, part) {
        t = json_object_get(part, "text");

        if (i) {
            *p++ = '\n';
        }

        p = ngx_cpymem(p, json_string_value(t), json_string_length(t));
    }

    return json_stringn((const char *) text, p - text);
}


/* max_tokens, max_completion_tokens, n, user */

static ngx_int_t
ngx_http_llm_parse_limits(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    int64_t                   max_tokens, n;
    json_t                   *v;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_module);

    /* llm_max_tokens is both the default and the cap */

    max_tokens = llcf->max_tokens;

    if (ngx_http_llm_integer(r, root, "max_tokens", 1, llcf->max_tokens,
                             &max_tokens, err)
        != NGX_OK
        || ngx_http_llm_integer(r, root, "max_completion_tokens", 1,
                                llcf->max_tokens, &max_tokens, err)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (json_object_set_new(cp->fields, "max_tokens",
                            json_integer(max_tokens))
        != 0)
    {
        return NGX_ERROR;
    }

    n = 1;

    if (ngx_http_llm_integer(r, root, "n", 1, llcf->max_n, &n, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    cp->n = (ngx_uint_t) n;

    /* each choice takes a slot: prompts times n is bounded too */

    if (cp->prompts
        && json_array_size(cp->prompts) * cp->n > NGX_HTTP_LLM_MAX_CHOICES)
    {
        return ngx_http_llm_invalid(r, err, "n", "invalid_value",
                   "Invalid 'n': %uz prompts times %ui choices is more "
                   "than %d", json_array_size(cp->prompts), cp->n,
                   NGX_HTTP_LLM_MAX_CHOICES);
    }

    /* user: an end user's id for abuse monitoring; checked, not used */

    return ngx_http_llm_field(r, root, "user", NGX_HTTP_LLM_STRING, &v, err);
}


static ngx_int_t
ngx_http_llm_parse_sampling(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    json_t     *v;
    ngx_int_t   rc;

    rc = ngx_http_llm_number(r, root, "temperature", 0, 2, cp, err);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_number(r, root, "top_p", 0, 1, cp, err);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_number(r, root, "presence_penalty", -2, 2, cp, err);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_number(r, root, "frequency_penalty", -2, 2, cp,
                                 err);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    v = json_object_get(cp->fields, "top_p");

    if (v && json_number_value(v) == 0) {
        return ngx_http_llm_invalid(r, err, "top_p", "invalid_value",
                   "Invalid 'top_p': 0, it must be more than 0 and at "
                   "most 1");
    }

    /* seed: without one, each choice gets a random seed */

    if (ngx_http_llm_field(r, root, "seed", NGX_HTTP_LLM_INTEGER, &v, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (v) {
        cp->seed = json_integer_value(v);
        cp->has_seed = 1;
    }

    rc = ngx_http_llm_parse_stop(r, root, cp, err);

    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_llm_parse_bias(r, root, cp, err);
}


/* "stop": a string or up to 4 strings; the engine gets a list */

static ngx_int_t
ngx_http_llm_parse_stop(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    size_t   i, len;
    json_t  *v, *s, *stop;

    v = json_object_get(root, "stop");

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    if (json_is_string(v)) {
        stop = json_pack("[O]", v);

    } else if (json_is_array(v)) {

        if (json_array_size(v) > NGX_HTTP_LLM_MAX_STOP) {
            return ngx_http_llm_invalid(r, err, "stop", "invalid_value",
                       "Invalid 'stop': at most %d sequences are allowed",
                       NGX_HTTP_LLM_MAX_STOP);
        }

        json_array_foreach(v, i, s) {
            if (!json_is_string(s)) {
                goto invalid;
            }
        }

        stop = json_copy(v);

    } else {
        goto invalid;
    }

    if (stop == NULL) {
        return NGX_ERROR;
    }

    /* an empty string would stop before the first token: it is dropped */

    for (i = json_array_size(stop); i > 0; i--) {
        len = json_string_length(json_array_get(stop, i - 1));

        if (len == 0) {
            (void) json_array_remove(stop, i - 1);

        } else if (len > NGX_HTTP_LLM_MAX_STOP_LEN) {
            json_decref(stop);

            return ngx_http_llm_invalid(r, err, "stop", "invalid_value",
                       "Invalid 'stop': a sequence of %uz bytes, at most "
                       "%d are allowed", len, NGX_HTTP_LLM_MAX_STOP_LEN);
        }
    }

    if (json_array_size(stop) == 0) {
        json_decref(stop);
        return NGX_OK;
    }

    return json_object_set_new(cp->fields, "stop", stop) ? NGX_ERROR
                                                           : NGX_OK;

invalid:

    return ngx_http_llm_invalid(r, err, "stop", "invalid_type",
               "Invalid type for 'stop': expected a string or a list of "
               "strings");
}


/* "logit_bias": {"TOKEN_ID": -100..100}, passed on as it is */

static ngx_int_t
ngx_http_llm_parse_bias(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    double       b;
    json_t      *v, *bias;
    ngx_int_t    id;
    const char  *key;

    if (ngx_http_llm_field(r, root, "logit_bias", NGX_HTTP_LLM_OBJECT, &v,
                           err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (v == NULL) {
        return NGX_OK;
    }

    if (json_object_size(v) > NGX_HTTP_LLM_MAX_BIAS) {
        return ngx_http_llm_invalid(r, err, "logit_bias", "invalid_value",
                   "Invalid 'logit_bias': at most %d tokens are allowed",
                   NGX_HTTP_LLM_MAX_BIAS);
    }

    json_object_foreach(v, key, bias) {

        id = ngx_atoi((u_char *) key, ngx_strlen(key));

        if (id == NGX_ERROR || id > NGX_MAX_INT32_VALUE) {
            return ngx_http_llm_invalid(r, err, "logit_bias",
                       "invalid_value",
                       "Invalid 'logit_bias': \"%s\" is not a token id",
                       key);
        }

        if (!json_is_number(bias)) {
            return ngx_http_llm_invalid(r, err, "logit_bias",
                       "invalid_type",
                       "Invalid type for 'logit_bias': the bias of token "
                       "%i must be a number", id);
        }

        b = json_number_value(bias);

        if (!(b >= -100 && b <= 100)) {
            return ngx_http_llm_invalid(r, err, "logit_bias",
                       "invalid_value",
                       "Invalid 'logit_bias': the bias of token %i must be "
                       "between -100 and 100", id);
        }
    }

    return json_object_set(cp->fields, "logit_bias", v) ? NGX_ERROR
                                                          : NGX_OK;
}


/*
 * completions: "logprobs": 0..20 alternatives; chat: "logprobs": true
 * and "top_logprobs": 0..20.  The engine gets "logprobs": alternatives.
 */

static ngx_int_t
ngx_http_llm_parse_logprobs(ngx_http_request_t *r, ngx_uint_t endpoint,
    json_t *root, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    int64_t   n;
    json_t   *v;

    n = -1;
    cp->logprobs = -1;

    if (endpoint == NGX_HTTP_LLM_COMPLETIONS) {
        if (ngx_http_llm_integer(r, root, "logprobs", 0, LLM_LOGPROBS_MAX,
                                 &n, err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

    } else {
        if (ngx_http_llm_field(r, root, "logprobs", NGX_HTTP_LLM_BOOLEAN, &v,
                               err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        if (v && json_is_true(v)) {
            n = 0;
        }

        if (json_object_get(root, "top_logprobs") != NULL
            && !json_is_null(json_object_get(root, "top_logprobs"))
            && n < 0)
        {
            return ngx_http_llm_invalid(r, err, "top_logprobs",
                       "invalid_value",
                       "Invalid 'top_logprobs': it requires 'logprobs' "
                       "to be true");
        }

        if (ngx_http_llm_integer(r, root, "top_logprobs", 0,
                                 LLM_LOGPROBS_MAX, &n, err)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    if (n < 0) {
        return NGX_OK;
    }

    cp->logprobs = (ngx_int_t) n;

    return json_object_set_new(cp->fields, "logprobs", json_integer(n))
           ? NGX_ERROR : NGX_OK;
}


/* "stream" and "stream_options": {"include_usage"} */

static ngx_int_t
ngx_http_llm_parse_stream(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err)
{
    json_t  *v, *options;

    if (ngx_http_llm_field(r, root, "stream", NGX_HTTP_LLM_BOOLEAN, &v, err)
        != NGX_OK
        || ngx_http_llm_field(r, root, "stream_options", NGX_HTTP_LLM_OBJECT,
                              &options, err)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    cp->stream = (v && json_is_true(v)) ? 1 : 0;

    if (options) {
        if (!cp->stream) {
            return ngx_http_llm_invalid(r, err, "stream_options",
                       "invalid_value",
                       "The 'stream_options' parameter is only allowed "
                       "when 'stream' is enabled");
        }

        v = json_object_get(options, "include_usage");

        if (v && !json_is_null(v) && !json_is_boolean(v)) {
            return ngx_http_llm_invalid(r, err,
                       "stream_options.include_usage", "invalid_type",
                       "Invalid type for 'stream_options.include_usage': "
                       "expected a boolean");
        }

        cp->include_usage = (v && json_is_true(v)) ? 1 : 0;
    }

    return json_object_set_new(cp->fields, "stream",
                               json_boolean(cp->stream))
           ? NGX_ERROR : NGX_OK;
}


/*
 * An optional field: *value is NULL when it is absent or null, and a
 * field of another type is a 400.
 */

static ngx_int_t
ngx_http_llm_field(ngx_http_request_t *r, json_t *root, const char *name,
    ngx_uint_t type, json_t **value, ngx_http_llm_error_t *err)
{
    json_t      *v;
    ngx_uint_t   ok;

    *value = NULL;

    v = json_object_get(root, name);

    if (v == NULL || json_is_null(v)) {
        return NGX_OK;
    }

    switch (type) {
    case NGX_HTTP_LLM_STRING:
        ok = json_is_string(v);
        break;
    case NGX_HTTP_LLM_INTEGER:
        ok = json_is_integer(v);
        break;
    case NGX_HTTP_LLM_NUMBER:
        ok = json_is_number(v);
        break;
    case NGX_HTTP_LLM_BOOLEAN:
        ok = json_is_boolean(v);
        break;
    case NGX_HTTP_LLM_ARRAY:
        ok = json_is_array(v);
        break;
    default: /* NGX_HTTP_LLM_OBJECT */
        ok = json_is_object(v);
        break;
    }

    if (!ok) {
        return ngx_http_llm_invalid(r, err, name, "invalid_type",
                   "Invalid type for '%s': expected %s", name,
                   ngx_http_llm_type_names[type]);
    }

    *value = v;

    return NGX_OK;
}


/* an optional integer in [lo, hi]; *value is kept when it is absent */

static ngx_int_t
ngx_http_llm_integer(ngx_http_request_t *r, json_t *root, const char *name,
    int64_t lo, int64_t hi, int64_t *value, ngx_http_llm_error_t *err)
{
    json_t   *v;
    int64_t   n;

    if (ngx_http_llm_field(r, root, name, NGX_HTTP_LLM_INTEGER, &v, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (v == NULL) {
        return NGX_OK;
    }

    n = json_integer_value(v);

    if (n < lo || n > hi) {
        return ngx_http_llm_invalid(r, err, name, "invalid_value",
                   "Invalid '%s': %L, it must be from %L to %L",
                   name, n, lo, hi);
    }

    *value = n;

    return NGX_OK;
}


/* an optional number in [lo, hi], copied into the engine's request */

static ngx_int_t
ngx_http_llm_number(ngx_http_request_t *r, json_t *root, const char *name,
    double lo, double hi, ngx_http_llm_completion_t *cp,
    ngx_http_llm_error_t *err)
{
    double   d;
    json_t  *v;

    if (ngx_http_llm_field(r, root, name, NGX_HTTP_LLM_NUMBER, &v, err)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (v == NULL) {
        return NGX_OK;
    }

    d = json_number_value(v);

    if (!(d >= lo && d <= hi)) {

        /* nginx's "%f" takes the integer part as an int64_t */

        if (d > -1e15 && d < 1e15) {
            return ngx_http_llm_invalid(r, err, name, "invalid_value",
                       "Invalid '%s': %.3f, it must be between %.0f and %.0f",
                       name, d, lo, hi);
        }

        return ngx_http_llm_invalid(r, err, name, "invalid_value",
                   "Invalid '%s': it must be between %.0f and %.0f",
                   name, lo, hi);
    }

    return json_object_set_new(cp->fields, name, json_real(d)) ? NGX_ERROR
                                                                 : NGX_OK;
}


/* "messages[3].content" in r->pool, for an error's param */

static const char *
ngx_http_llm_param(ngx_http_request_t *r, const char *name, size_t i,
    const char *field)
{
    u_char  *p, *last;
    size_t   len;

    len = ngx_strlen(name) + NGX_SIZE_T_LEN + sizeof("[].")
          + (field ? ngx_strlen(field) : 0);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NULL;
    }

    if (field) {
        last = ngx_sprintf(p, "%s[%uz].%s", name, i, field);

    } else {
        last = ngx_sprintf(p, "%s[%uz]", name, i);
    }

    *last = '\0';

    return (const char *) p;
}


/* the request's pool drops its reference to json when it goes */

static ngx_int_t
ngx_http_llm_own(ngx_http_request_t *r, json_t *json)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        json_decref(json);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_llm_json_cleanup;
    cln->data = json;

    return NGX_OK;
}


void
ngx_http_llm_json_cleanup(void *data)
{
    json_decref(data);
}


/*
 * The engine's request for one choice, compact JSON in r->pool: the
 * shared fields plus its id, model, prompt and seed.  A given seed
 * becomes seed + k for the k-th choice of a prompt, so choices differ
 * and each is reproducible.
 */

ngx_int_t
ngx_http_llm_choice_request(ngx_http_llm_choice_t *ch)
{
    size_t               size;
    json_t              *f, *prompt;
    int64_t              seed;
    ngx_http_llm_ctx_t  *ctx;

    ctx = ch->ctx;
    f = ctx->fields;

    /* unsigned: a seed near the top wraps around instead of overflowing */

    seed = ctx->has_seed ? (int64_t) ((uint64_t) ctx->seed
                                      + ch->index % ctx->n)
                         : (int64_t) ngx_random();

    if (json_object_set_new(f, "id", json_stringn((char *) ctx->id.data,
                                                  ctx->id.len))
        || json_object_set_new(f, "model",
                               json_stringn((char *) ctx->model.data,
                                            ctx->model.len))
        || json_object_set_new(f, "seed", json_integer(seed)))
    {
        return NGX_ERROR;
    }

    (void) json_object_del(f, "prompt");
    (void) json_object_del(f, "prompt_tokens");

    if (ctx->messages) {
        if (json_object_set(f, "messages", ctx->messages)) {
            return NGX_ERROR;
        }

    } else {
        prompt = json_array_get(ctx->prompts, ch->prompt);

        if (json_object_set(f, json_is_string(prompt) ? "prompt"
                                                      : "prompt_tokens",
                            prompt))
        {
            return NGX_ERROR;
        }
    }

    size = json_dumpb(f, NULL, 0, JSON_COMPACT);

    ch->req.data = ngx_pnalloc(ctx->request->pool, size ? size : 1);
    if (size == 0 || ch->req.data == NULL) {
        return NGX_ERROR;
    }

    ch->req.len = json_dumpb(f, (char *) ch->req.data, size, JSON_COMPACT);

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_invalid(ngx_http_request_t *r, ngx_http_llm_error_t *err,
    const char *param, const char *code, const char *fmt, ...)
{
    u_char   *p, *last;
    va_list   args;

    /* messages are short; the longest part is jansson's error text */

    p = ngx_pnalloc(r->pool, 512);
    if (p == NULL) {
        err->status = 0;
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
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    b = ngx_http_llm_json_buf(r->pool, json);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

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


/* json and a newline in a buffer; consumes json, which may be NULL */

ngx_buf_t *
ngx_http_llm_json_buf(ngx_pool_t *pool, json_t *json)
{
    size_t      size;
    ngx_buf_t  *b;

    if (json == NULL) {
        return NULL;
    }

    size = json_dumpb(json, NULL, 0, JSON_COMPACT);

    b = (size == 0) ? NULL : ngx_create_temp_buf(pool, size + 1);
    if (b == NULL) {
        json_decref(json);
        return NULL;
    }

    b->last += json_dumpb(json, (char *) b->last, size, JSON_COMPACT);
    *b->last++ = LF;

    json_decref(json);

    return b;
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
        /* no text at all may come as NULL, which jansson refuses */
        return json_stringn(len ? (const char *) p : "", len);
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
