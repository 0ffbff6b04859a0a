/*
 * Copyright (C) ngx_llm developers
 *
 * The engine's request parser (hostile JSON from shared memory) and the
 * stop-string matcher.
 */

#include <string.h>

#include "tap.h"
#include "llm_request.h"


static int
parse(const char *json, llm_request_t *rq, llm_request_err_t *e)
{
    return llm_request_parse(rq, json, strlen(json), 1234, e);
}


static void
test_good(void)
{
    llm_request_t      rq;
    llm_request_err_t  e;

    ok(parse("{\"id\":\"cmpl-1\",\"model\":\"m\",\"prompt\":\"hi\"}", &rq, &e)
       == LLM_OK, "minimal completion");
    is_int(rq.kind, LLM_PROMPT_TEXT, "a text prompt");
    ok(strcmp(rq.id, "cmpl-1") == 0 && strcmp(rq.model, "m") == 0, "id, model");
    is_int(rq.max_tokens, 16, "max_tokens defaults to 16");
    ok(rq.temperature == 1.0f && rq.top_p == 1.0f, "sampling defaults");
    is_int(rq.seed, 1234, "seed from the caller's default");
    is_int(rq.logprobs, -1, "no logprobs");
    llm_request_free(&rq);

    ok(parse("{\"model\":\"m\",\"prompt_tokens\":[1,2,3],\"max_tokens\":5,"
             "\"temperature\":0,\"top_k\":40,\"min_p\":0.05,\"seed\":-1,"
             "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
             "\"repetition_penalty\":1.1,\"logit_bias\":{\"7\":-100,"
             "\"9\":2.5},\"stop\":[\"\\n\",\"END\"],\"logprobs\":3,"
             "\"priority\":5,\"stream\":true,\"unknown\":{\"x\":[1]}}",
             &rq, &e) == LLM_OK, "every field");
    is_int(rq.kind, LLM_PROMPT_TOKENS, "token prompt");
    is_int(json_array_size(rq.tokens), 3, "three tokens");
    is_int(rq.top_k, 40, "top_k");
    ok(rq.min_p > 0.049f && rq.min_p < 0.051f, "min_p");
    ok(rq.seed == UINT64_MAX, "seed -1 is all ones");
    is_int(rq.n_bias, 2, "two biases");
    ok(rq.bias_ids[0] == 7 && rq.bias[0] == -100.0f
       && rq.bias_ids[1] == 9 && rq.bias[1] == 2.5f, "bias values");
    is_int(rq.n_stop, 2, "two stop strings");
    ok(rq.stop_len[1] == 3 && memcmp(rq.stop[1], "END", 3) == 0, "stop text");
    is_int(rq.logprobs, 3, "logprobs 3");
    is_int(rq.priority, 5, "priority");
    is_int(rq.stream, 1, "stream");
    llm_request_free(&rq);

    ok(parse("{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
             "\"content\":\"hello\"}],\"stop\":\"x\"}", &rq, &e) == LLM_OK,
       "chat with one stop string");
    is_int(rq.kind, LLM_PROMPT_CHAT, "a chat");
    is_int(rq.n_stop, 1, "a single stop string");
    llm_request_free(&rq);

    /* the module passes on any top_p above 0 (fuzz_request) */
    ok(parse("{\"model\":\"m\",\"prompt\":\"a\",\"top_p\":1e-320,"
             "\"repetition_penalty\":4.9e-324}", &rq, &e) == LLM_OK
       && rq.top_p > 0.0f && rq.repetition_penalty > 0.0f,
       "top_p and repetition_penalty too small for a float are taken");
    llm_request_free(&rq);
}


static void
test_bad(void)
{
    static const struct {
        const char  *json;
        const char  *code;
    } cases[] = {
        { "", "invalid_json" },
        { "[]", "invalid_json" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"prompt\":\"b\"}",
          "invalid_json" },
        { "{\"prompt\":\"a\"}", "model" },
        { "{\"model\":\"m\"}", "prompt" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"messages\":[]}", "prompt" },
        { "{\"model\":\"m\",\"prompt\":1}", "prompt" },
        { "{\"model\":\"m\",\"prompt_tokens\":[]}", "prompt_tokens" },
        { "{\"model\":\"m\",\"prompt_tokens\":[1,-2]}", "prompt_tokens" },
        { "{\"model\":\"m\",\"prompt_tokens\":[1,\"2\"]}", "prompt_tokens" },
        { "{\"model\":\"m\",\"prompt_tokens\":[4294967296]}",
          "prompt_tokens" },
        { "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}",
          "messages" },
        { "{\"model\":\"m\",\"messages\":[\"hi\"]}", "messages" },
        { "{\"model\":\"m\",\"messages\":{}}", "messages" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"max_tokens\":0}",
          "max_tokens" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"max_tokens\":1.5}",
          "max_tokens" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"temperature\":2.01}",
          "temperature" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"temperature\":\"1\"}",
          "temperature" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"top_p\":0}", "top_p" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"top_k\":-1}", "top_k" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"min_p\":1.5}", "min_p" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"presence_penalty\":3}",
          "presence_penalty" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"repetition_penalty\":0}",
          "repetition_penalty" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"seed\":1.5}", "seed" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"stream\":1}", "stream" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"logprobs\":21}", "logprobs" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\","
          "\"d\",\"e\"]}", "stop" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"stop\":[\"\"]}", "stop" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"stop\":[1]}", "stop" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"logit_bias\":{\"x\":1}}",
          "logit_bias" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"logit_bias\":{\"1\":101}}",
          "logit_bias" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"logit_bias\":{\"1\":\"1\"}}",
          "logit_bias" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"logit_bias\":[1]}",
          "logit_bias" },
        { "{\"model\":\"m\",\"prompt\":\"a\",\"temperature\":1e999}",
          "invalid_json" },
    };

    llm_request_t      rq;
    llm_request_err_t  e;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&e, 0, sizeof(e));
        if (!ok(parse(cases[i].json, &rq, &e) == LLM_ERR
                && e.status == 400 && e.code != NULL
                && strcmp(e.code, cases[i].code) == 0 && e.message[0],
                "refused with code %s: %s", cases[i].code, cases[i].json))
        {
            diag("got code %s: %s", e.code ? e.code : "(null)", e.message);
        }
    }

    ok(rq.root == NULL, "nothing held after a refusal");
}


/* feeds pieces and collects what is shown */
static int
feed_all(llm_stop_t *st, const char **pieces, char *shown)
{
    int     stopped = 0;
    char    out[512];
    size_t  n;

    shown[0] = '\0';
    for (int i = 0; pieces[i] != NULL && !stopped; i++) {
        stopped = llm_stop_feed(st, pieces[i], strlen(pieces[i]), out, &n);
        strncat(shown, out, n);
    }
    if (!stopped) {
        n = llm_stop_flush(st, out);
        strncat(shown, out, n);
    }
    return stopped;
}


static void
test_stop(void)
{
    char               shown[1024];
    llm_stop_t         st;
    llm_request_t      rq;
    llm_request_err_t  e;

    parse("{\"model\":\"m\",\"prompt\":\"a\",\"stop\":[\"END\",\"\\n\\n\"]}",
          &rq, &e);
    llm_stop_init(&st, &rq);
    llm_request_free(&rq);

    {
        const char  *p[] = { "Hello", " wor", "ld E", "N", "D and more",
                             NULL };

        ok(feed_all(&st, p, shown) == 1, "a stop string across pieces");
        ok(strcmp(shown, "Hello world ") == 0,
           "text before it, not the stop string: \"%s\"", shown);
    }

    llm_stop_init(&st, &(llm_request_t) { .n_stop = 2,
                  .stop = { "END", "\n\n" }, .stop_len = { 3, 2 } });
    {
        const char  *p[] = { "an EN", "igma", NULL };

        ok(feed_all(&st, p, shown) == 0, "a false start is not a stop");
        ok(strcmp(shown, "an ENigma") == 0, "and nothing is lost: \"%s\"",
           shown);
    }

    llm_stop_init(&st, &(llm_request_t) { .n_stop = 2,
                  .stop = { "END", "\n\n" }, .stop_len = { 3, 2 } });
    {
        char    out[512];
        size_t  n;

        llm_stop_feed(&st, "line\n", 5, out, &n);
        ok(n == 4 && memcmp(out, "line", 4) == 0,
           "only the possible start of a stop string is held");
        llm_stop_feed(&st, "x", 1, out, &n);
        ok(n == 2 && memcmp(out, "\nx", 2) == 0,
           "released once it cannot be one");
        ok(llm_stop_feed(&st, "\n\nrest", 6, out, &n) == 1 && n == 0,
           "the earliest stop string wins");
    }

    llm_stop_init(&st, &(llm_request_t) { .n_stop = 0 });
    {
        const char  *p[] = { "plain", " text", NULL };

        ok(feed_all(&st, p, shown) == 0 && strcmp(shown, "plain text") == 0,
           "no stop strings: text passes");
    }
}


int
main(void)
{
    test_good();
    test_bad();
    test_stop();
    return done_testing();
}
