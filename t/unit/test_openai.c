/*
 * Copyright (C) ngx_llm developers
 *
 * The module's JSON code (ngx_http_llm_openai.c, ngx_http_llm_reply.c)
 * outside nginx: compiled against the headers of the nginx tree the
 * module is built in, with fuzz/fuzz_ngx.c standing in for the few
 * nginx core functions it calls.  What the fuzz targets found in it.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <string.h>

#include "ngx_http_llm_module.h"
#include "fuzz_ngx.h"
#include "tap.h"


/* a /v1/completions body refused: the error's message, NUL-terminated */
static int
refused(const char *body, const char *param, char *msg, size_t size)
{
    ngx_int_t                   rc;
    ngx_http_request_t         *r;
    ngx_http_llm_error_t        err;
    ngx_http_llm_completion_t   cp;

    r = fuzz_ngx_request(256, 8);

    ngx_memzero(&err, sizeof(ngx_http_llm_error_t));

    rc = ngx_http_llm_parse(r, NGX_HTTP_LLM_COMPLETIONS, (u_char *) body,
                            strlen(body), &cp, &err);

    snprintf(msg, size, "%.*s", (int) err.message.len,
             err.message.data ? (char *) err.message.data : "");

    fuzz_ngx_request_free();

    return rc == NGX_DECLINED && err.status == NGX_HTTP_BAD_REQUEST
           && err.param != NULL && strcmp(err.param, param) == 0;
}


/*
 * A number out of range is named in the message as nginx's "%f" can
 * print it; one beyond what "%f" can print (its integer part goes
 * through an int64_t) was printed as 9223372036854775808.000.
 */
static void
test_number_message(void)
{
    char  msg[600];

    ok(refused("{\"model\":\"m\",\"prompt\":\"a\",\"temperature\":2.5}",
               "temperature", msg, sizeof(msg))
       && strstr(msg, "2.500") != NULL, "temperature 2.5: \"%s\"", msg);

    ok(refused("{\"model\":\"m\",\"prompt\":\"a\",\"temperature\":1e300}",
               "temperature", msg, sizeof(msg))
       && strstr(msg, "between 0 and 2") != NULL
       && strstr(msg, "922337203685477") == NULL,
       "temperature 1e300 is not printed as 2^63: \"%s\"", msg);

    ok(refused("{\"model\":\"m\",\"prompt\":\"a\",\"top_p\":-1e19}",
               "top_p", msg, sizeof(msg))
       && strstr(msg, "between 0 and 1") != NULL
       && strstr(msg, "922337203685477") == NULL,
       "top_p -1e19 neither: \"%s\"", msg);

    ok(refused("{\"model\":\"m\",\"prompt\":\"a\","
               "\"presence_penalty\":-123456789012.5}",
               "presence_penalty", msg, sizeof(msg))
       && strstr(msg, "-123456789012.500") != NULL,
       "a large value that fits is printed: \"%s\"", msg);
}


/*
 * A stop sequence longer than the engine takes (255 bytes) was passed
 * on: the engine refused the request after a stream had answered 200.
 */
static void
test_stop_length(void)
{
    char    body[512], msg[600];
    size_t  n;

    n = (size_t) snprintf(body, sizeof(body),
                          "{\"model\":\"m\",\"prompt\":\"a\",\"stream\":true,"
                          "\"stop\":[\"end\",\"");
    memset(body + n, 'x', 256);
    snprintf(body + n + 256, sizeof(body) - n - 256, "\"]}");

    ok(refused(body, "stop", msg, sizeof(msg))
       && strstr(msg, "256 bytes") != NULL,
       "a stop sequence of 256 bytes: \"%s\"", msg);

    /* 255 are fine: the same body a byte shorter */
    memmove(body + n + 255, body + n + 256, strlen(body + n + 256) + 1);

    ok(!refused(body, "stop", msg, sizeof(msg)) && msg[0] == '\0',
       "one of 255 bytes is taken");
}


/* a choice that ended without text: DONE and no TOKEN with any */
static json_t *
reply_without_text(ngx_uint_t endpoint, const char *finish)
{
    json_t                 *json;
    ngx_http_request_t     *r;
    ngx_http_llm_ctx_t      ctx;
    ngx_http_llm_choice_t   ch;

    r = fuzz_ngx_request(256, 8);

    ngx_memzero(&ctx, sizeof(ngx_http_llm_ctx_t));
    ngx_memzero(&ch, sizeof(ngx_http_llm_choice_t));

    ctx.request = r;
    ctx.endpoint = endpoint;
    ngx_str_set(&ctx.id, "cmpl-1");
    ngx_str_set(&ctx.model, "stories");
    ctx.n = 1;
    ctx.logprobs = -1;
    ctx.choices = &ch;
    ctx.n_choices = 1;

    ch.ctx = &ctx;
    ch.tokens = 1;
    ch.finished = 1;
    ch.done.finish_reason = LLM_FINISH_STOP;
    ch.done.prompt_tokens = 5;
    ch.done.completion_tokens = 1;

    json = finish ? ngx_http_llm_chunk_json(&ch, finish)
                  : ngx_http_llm_response_json(&ctx);

    fuzz_ngx_request_free();

    return json;
}


/*
 * A completion whose text is empty (a stop string right at the start,
 * or a first token that is part of a character) was answered with a
 * 500: jansson refuses the NULL that stands for no text.
 */
static void
test_empty_text(void)
{
    json_t      *json, *c;
    const char  *text;

    json = reply_without_text(NGX_HTTP_LLM_COMPLETIONS, NULL);
    c = json_array_get(json_object_get(json, "choices"), 0);
    text = json_string_value(json_object_get(c, "text"));

    ok(json != NULL && text != NULL && text[0] == '\0',
       "a completion without text has \"text\": \"\"");
    json_decref(json);

    json = reply_without_text(NGX_HTTP_LLM_CHAT, NULL);
    c = json_array_get(json_object_get(json, "choices"), 0);
    text = json_string_value(json_object_get(json_object_get(c, "message"),
                                             "content"));

    ok(json != NULL && text != NULL && text[0] == '\0',
       "a chat without text has \"content\": \"\"");
    json_decref(json);

    json = reply_without_text(NGX_HTTP_LLM_COMPLETIONS, "stop");
    c = json_array_get(json_object_get(json, "choices"), 0);
    text = json_string_value(json_object_get(c, "text"));

    ok(json != NULL && text != NULL && text[0] == '\0',
       "so has the last chunk of such a stream");
    json_decref(json);
}


int
main(void)
{
    test_number_message();
    test_stop_length();
    test_empty_text();
    return done_testing();
}
