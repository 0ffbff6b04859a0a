/*
 * Copyright (C) ngx_llm developers
 *
 * libFuzzer target for request parsing (make fuzz).
 *
 * An input is one flags byte, then a request body.  The flags pick the
 * module's side: bit 0 /v1/chat/completions (else /v1/completions),
 * bit 1 llm_max_tokens 1048576 (else 256), bit 2 llm_max_n 128 (else
 * 8); the rest seed how the stop-string text is cut into pieces.
 *
 *   - The engine's parser (engine/llm_request.c) takes the body as if
 *     a worker had written it: a refusal is a 400 naming a field, an
 *     accepted request has every field in range.
 *   - Its stop strings (or, when it is refused, up to four strings cut
 *     from the front of the body, "a|b|c|rest") run over the input cut
 *     into pieces: the text shown is the input up to where the first
 *     stop string completes, never a whole stop string, and all of it
 *     when none occurs.
 *   - The module's parser (ngx_http_llm_openai.c, through fuzz_ngx.c)
 *     takes the body as a client's: a refusal is a 400 whose error
 *     object serializes, and every engine request it builds from an
 *     accepted one is accepted by the engine's parser.
 *
 * Built with -DLLM_REQUEST_SEED_MAIN this file is instead the program
 * that writes the seed corpus (the request bodies of the tests) and a
 * libFuzzer dictionary.
 */

#define _GNU_SOURCE                     /* memmem() */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_request.h"
#include "fuzz_seed.h"


#ifndef LLM_REQUEST_SEED_MAIN

#include "fuzz_ngx.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


typedef struct {
    const uint8_t  *body;
    size_t          len;
    int             chat;
} fuzz_module_t;


static uint32_t
next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;

    return *x;
}


/* the earliest occurrence of any stop string in p[0..n), or n */
static size_t
first_stop(const llm_stop_t *st, const uint8_t *p, size_t n)
{
    size_t       best;
    const void  *hit;

    best = n;

    for (int i = 0; i < st->n; i++) {
        hit = memmem(p, n, st->s[i], st->len[i]);
        if (hit != NULL && (size_t) ((const uint8_t *) hit - p) < best) {
            best = (size_t) ((const uint8_t *) hit - p);
        }
    }

    return best;
}


/* st, fresh from llm_stop_init(), over the text cut into pieces */
static void
check_stop(llm_stop_t *st, const uint8_t *text, size_t len, uint32_t seed)
{
    int      stopped, found;
    char    *out, *shown;
    size_t   off, piece, n, w, end;

    shown = malloc(len + LLM_STOP_LEN_MAX);
    if (shown == NULL) {
        abort();
    }

    off = 0;
    w = 0;
    stopped = 0;

    while (off < len && !stopped) {
        piece = next(&seed) % 48;
        if (piece > len - off) {
            piece = len - off;
        }

        /* exactly the room the API promises */
        out = malloc(piece + LLM_STOP_LEN_MAX);
        if (out == NULL) {
            abort();
        }

        stopped = llm_stop_feed(st, (const char *) text + off, piece, out,
                                &n);
        off += piece;

        if (n > off - w || st->n_held >= LLM_STOP_LEN_MAX) {
            fprintf(stderr, "fuzz_request: %zu bytes shown of %zu fed\n",
                    w + n, off);
            abort();
        }

        memcpy(shown + w, out, n);
        w += n;
        free(out);
    }

    if (!stopped) {
        out = malloc(LLM_STOP_LEN_MAX);
        if (out == NULL) {
            abort();
        }

        n = llm_stop_flush(st, out);
        if (n >= LLM_STOP_LEN_MAX || n > off - w) {
            abort();
        }

        memcpy(shown + w, out, n);
        w += n;
        free(out);
    }

    /* what was fed, text[0..off): shown is a prefix of it */

    if (memcmp(shown, text, w) != 0) {
        fprintf(stderr, "fuzz_request: the text shown is not the text\n");
        abort();
    }

    end = first_stop(st, text, off);
    found = end < off;

    if (stopped != found || (found ? w != end : w != off)) {
        fprintf(stderr, "fuzz_request: stop %d, found %d, %zu bytes shown, "
                "first stop string at %zu of %zu\n", stopped, found, w, end,
                off);
        abort();
    }

    free(shown);
}


/* up to four stop strings from the front of the body: "a|b|c|rest" */
static void
cut_stops(llm_request_t *rq, const uint8_t *p, size_t len)
{
    const uint8_t  *bar;

    memset(rq, 0, sizeof(llm_request_t));

    while (rq->n_stop < LLM_STOP_MAX) {
        bar = memchr(p, '|', len);
        if (bar == NULL || bar == p || bar - p > LLM_STOP_LEN_MAX - 1) {
            break;
        }

        rq->stop[rq->n_stop] = (const char *) p;
        rq->stop_len[rq->n_stop] = (size_t) (bar - p);
        rq->n_stop++;

        len -= (size_t) (bar - p) + 1;
        p = bar + 1;
    }
}


static void
check_engine(const uint8_t *body, size_t len, uint32_t seed)
{
    int                rc;
    char              *copy;
    llm_stop_t         st;
    llm_request_t      rq;
    llm_request_err_t  e;

    /* the engine copies the request out of shared memory and ends it
     * with a NUL; the parser is told the length */
    copy = malloc(len + 1);
    if (copy == NULL) {
        abort();
    }

    memcpy(copy, body, len);
    copy[len] = '\0';

    memset(&e, 0, sizeof(e));

    rc = llm_request_parse(&rq, copy, len, 42, &e);

    if (rc != LLM_OK) {
        if (rc != LLM_ERR || rq.root != NULL || e.status != 400
            || e.type == NULL || e.code == NULL || e.message[0] == '\0'
            || memchr(e.message, '\0', sizeof(e.message)) == NULL)
        {
            fprintf(stderr, "fuzz_request: a refusal without an error\n");
            abort();
        }

        cut_stops(&rq, body, len);
        llm_stop_init(&st, &rq);
        check_stop(&st, body, len, seed);

        free(copy);
        return;
    }

    if (rq.root == NULL || rq.model == NULL
        || rq.kind < LLM_PROMPT_TEXT || rq.kind > LLM_PROMPT_CHAT
        || (rq.kind == LLM_PROMPT_TEXT && rq.prompt == NULL)
        || (rq.kind == LLM_PROMPT_TOKENS
            && json_array_size(rq.tokens) == 0)
        || (rq.kind == LLM_PROMPT_CHAT
            && json_array_size(rq.messages) == 0)
        || rq.max_tokens < 1 || rq.max_tokens > (1 << 24)
        || !(rq.temperature >= 0.0f && rq.temperature <= 2.0f)
        || !(rq.top_p > 0.0f && rq.top_p <= 1.0f)
        || rq.top_k < 0 || !(rq.min_p >= 0.0f && rq.min_p <= 1.0f)
        || !(rq.repetition_penalty > 0.0f)
        || rq.logprobs < -1 || rq.logprobs > LLM_LOGPROBS_MAX
        || rq.n_stop < 0 || rq.n_stop > LLM_STOP_MAX
        || rq.n_bias < 0 || rq.n_bias > LLM_BIAS_MAX
        || memchr(rq.id, '\0', sizeof(rq.id)) == NULL)
    {
        fprintf(stderr, "fuzz_request: an accepted request out of range\n");
        abort();
    }

    for (int i = 0; i < rq.n_stop; i++) {
        if (rq.stop_len[i] == 0 || rq.stop_len[i] >= LLM_STOP_LEN_MAX) {
            abort();
        }
    }

    for (int i = 0; i < rq.n_bias; i++) {
        if (rq.bias_ids[i] < 0 || !(rq.bias[i] >= -100.0f
                                    && rq.bias[i] <= 100.0f))
        {
            abort();
        }
    }

    /* the stop strings are copied: the document may go first (and
     * freeing twice is harmless) */
    llm_stop_init(&st, &rq);

    if (st.n != rq.n_stop || st.n_held != 0) {
        abort();
    }

    llm_request_free(&rq);
    llm_request_free(&rq);

    check_stop(&st, body, len, seed);

    free(copy);
}


/* each engine request the module builds: the engine must take it */
static void
module_request(void *arg, const char *req, size_t len)
{
    fuzz_module_t      *m = arg;
    llm_request_t       rq;
    llm_request_err_t   e;

    memset(&e, 0, sizeof(e));

    if (llm_request_parse(&rq, req, len, 42, &e) != LLM_OK) {
        fprintf(stderr, "fuzz_request: the module accepted %s body\n"
                "%.*s\nbut the engine refuses its request\n%.*s\n"
                "(%s: %s)\n", m->chat ? "a chat" : "a completions",
                (int) m->len, (const char *) m->body, (int) len, req,
                e.code, e.message);
        abort();
    }

    llm_request_free(&rq);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t        flags;
    uint32_t       seed;
    fuzz_module_t  m;

    if (size == 0) {
        return 0;
    }

    flags = data[0];
    data++;
    size--;

    seed = 0x9e3779b9u ^ ((uint32_t) flags << 16) ^ (uint32_t) size;

    check_engine(data, size, seed);

    m.body = data;
    m.len = size;
    m.chat = flags & 1;

    (void) fuzz_ngx_parse(flags & 1, (flags & 2) ? 1048576 : 256,
                          (flags & 4) ? 128 : 8, data, size,
                          module_request, &m);

    return 0;
}


#else /* LLM_REQUEST_SEED_MAIN */


/*
 * Bodies of the API tests (t/020-completions-api.t, t/021-chat-api.t,
 * t/022-errors-api.t, t/002-streaming.t) as JSON; the engine's own
 * (t/unit/test_request.c) are read from that file.  0: completions,
 * 1: chat.
 */
static const struct {
    int          chat;
    const char  *body;
} seeds[] = {

    /* t/020-completions-api.t */
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"temperature\":0,\"max_tokens\":24}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":1}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"temperature\":1,\"top_p\":0.01,\"seed\":3,\"max_tokens\":24}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"temperature\":0,\"stop\":\"girl\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"stop\":[\"Lily\",\"little\"]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"stop\":[]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"max_tokens\":100,\"presence_penalty\":2}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"max_tokens\":100,\"frequency_penalty\":-2}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"logit_bias\":{\"400\":100},\"max_tokens\":4,\"logprobs\":0}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"user\":\"user-1234\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"echo\":false,\"best_of\":1,\"suffix\":null,"
         "\"nosuch\":{\"deep\":[1]}}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[1,9038,2501,263,931]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[\"Once upon a time\","
         "\"Lily\"]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[[1,9038,2501,263,931],"
         "[1,365,2354]]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"temperature\":1.2,\"max_tokens\":16,\"n\":3,\"seed\":11}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[\"Once upon a time\","
         "\"Lily\"],\"n\":2,\"seed\":21}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"max_tokens\":6,\"logprobs\":3}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
         "\"max_tokens\":24,\"temperature\":0,\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true}}" },

    /* t/021-chat-api.t */
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Tell me a story.\"}],\"temperature\":0,"
         "\"max_tokens\":16}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"system\","
         "\"content\":\"You tell stories.\"},{\"role\":\"user\","
         "\"content\":\"Hello\"},{\"role\":\"assistant\",\"content\":"
         "\"Hi. What story?\"},{\"role\":\"user\",\"content\":"
         "\"One about a cat.\"}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":[{\"type\":\"text\",\"text\":\"Tell me\"},"
         "{\"type\":\"text\",\"text\":\"a story.\"}]}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"developer\","
         "\"content\":\"Be kind.\"},{\"role\":\"user\",\"content\":"
         "\"Tell me a story.\"}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Tell me a story.\"},{\"role\":\"assistant\","
         "\"content\":null},{\"role\":\"user\",\"content\":\"More.\"}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\",\"name\":\"bob\"}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"max_tokens\":10,"
         "\"max_completion_tokens\":4}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"n\":2,\"temperature\":1.5,\"seed\":8}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"stop\":[\"ere\"]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"logprobs\":true,\"top_logprobs\":2,"
         "\"max_tokens\":5}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"user\":\"u-1\",\"presence_penalty\":0,"
         "\"frequency_penalty\":0,\"logit_bias\":{},\"top_p\":1,"
         "\"response_format\":{},\"nosuch\":1}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"stream\":true,\"stream_options\":"
         "{\"include_usage\":true}}" },

    /* t/022-errors-api.t */
    { 0, "{\"model\":\"stories\",\"max_tokens\":4}" },
    { 0, "{\"model\":\"stories\",\"prompt\":{}}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[1,\"a\"]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[[1],\"a\"]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[[]]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[1,-1]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":[1,2.5]}" },
    { 0, "{\"prompt\":\"Once upon a time\"}" },
    { 0, "{\"model\":[\"stories\"],\"prompt\":\"Once\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":\"4\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":65}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"max_completion_tokens\":1.5}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"max_completion_tokens\":0}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"temperature\":\"0\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"temperature\":2.5}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"top_p\":true}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"top_p\":0}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"top_p\":1.5}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"n\":\"2\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"n\":0}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"n\":5}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"stop\":5}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"stop\":[1]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"seed\":\"1\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"seed\":1.5}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"presence_penalty\":3}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"frequency_penalty\":[]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"logit_bias\":[1]}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"logit_bias\":{\"abc\":1}}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"logit_bias\":{\"-1\":1}}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"logit_bias\":{\"5\":\"x\"}}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"logit_bias\":{\"5\":101}}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"logprobs\":true}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"logprobs\":21}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"user\":5}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"stream\":\"true\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"stream\":true,"
         "\"stream_options\":\"x\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\","
         "\"stream_options\":{\"include_usage\":true}}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\",\"stream\":true,"
         "\"stream_options\":{\"include_usage\":\"yes\"}}" },
    { 1, "{\"model\":\"stories\",\"messages\":\"Hi\"}" },
    { 1, "{\"model\":\"stories\",\"messages\":[]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[\"Hi\"]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"a\"},{\"role\":\"robot\",\"content\":\"b\"}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":1}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\"}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":5}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":[{\"type\":\"image_url\",\"image_url\":"
         "{\"url\":\"x\"}}]}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":[{\"type\":\"text\"}]}]}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"logprobs\":1}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"top_logprobs\":2}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"logprobs\":true,\"top_logprobs\":21}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"max_completion_tokens\":\"2\"}" },
    { 1, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"Hi\"}],\"n\":9}" },
    { 0, "{\"model\":\"nosuch\",\"prompt\":\"Once\"}" },
    { 0, "{\"model\":\"stories\",\"prompt\":\"Once\"" },
    { 0, "not json at all" },

    /* stop strings cut from the front when the engine refuses a body */
    { 0, "END|\n\n|ere|Hello world END and more, there was a little "
         "girl\n\nand so on" },
    { 0, "aab|ab|b|xaaab" },
};


static int
write_seed(const char *dir, int n, int flags, const char *p, size_t len)
{
    char  path[4096], flag;

    snprintf(path, sizeof(path), "%s/seed-%d", dir, n);
    flag = (char) flags;

    return fuzz_seed_write(path, &flag, 1, p, len);
}


/*
 * The JSON string literals of a C file: adjacent literals joined, the
 * usual escapes undone; those that open with '{' or '[' are request
 * bodies.  Returns how many were written.
 */
static int
seeds_from_c(const char *file, const char *dir, int n)
{
    int     c, k, flags;
    char   *buf, *lit;
    long    size;
    FILE   *fp;
    size_t  i, w;

    fp = fopen(file, "rb");
    if (fp == NULL) {
        fprintf(stderr, "%s: not found, its bodies are not seeds\n", file);
        return 0;
    }

    fseek(fp, 0, SEEK_END);
    size = ftell(fp);
    fseek(fp, 0, SEEK_SET);

    buf = malloc((size_t) size + 1);
    lit = malloc((size_t) size + 1);
    if (buf == NULL || lit == NULL
        || fread(buf, 1, (size_t) size, fp) != (size_t) size)
    {
        fclose(fp);
        free(buf);
        free(lit);
        return 0;
    }

    fclose(fp);
    buf[size] = '\0';

    k = 0;
    i = 0;

    while (i < (size_t) size) {
        if (buf[i] != '"' || (i > 0 && buf[i - 1] == '\'')) {
            i++;
            continue;
        }

        /* a run of adjacent literals */
        w = 0;

        while (i < (size_t) size && buf[i] == '"') {
            for (i++; i < (size_t) size && buf[i] != '"'; i++) {
                c = (unsigned char) buf[i];

                if (c == '\\' && i + 1 < (size_t) size) {
                    c = (unsigned char) buf[++i];
                    c = c == 'n' ? '\n' : c == 't' ? '\t'
                        : c == 'r' ? '\r' : c == '0' ? '\0' : c;
                }

                lit[w++] = (char) c;
            }

            i++;

            while (i < (size_t) size
                   && (buf[i] == ' ' || buf[i] == '\n'))
            {
                i++;
            }
        }

        if (w > 0 && (lit[0] == '{' || lit[0] == '[')) {
            flags = strstr(lit, "\"messages\"") != NULL ? 1 : 0;

            if (write_seed(dir, n + k, flags | 6, lit, w) == 0) {
                k++;
            }
        }
    }

    free(buf);
    free(lit);

    return k;
}


int
main(int argc, char **argv)
{
    int          n;
    FILE        *fp;
    size_t       i;
    const char  *p;

    static const char *const  words[] = {
        "\"model\"", "\"prompt\"", "\"prompt_tokens\"", "\"messages\"",
        "\"role\"", "\"content\"", "\"system\"", "\"developer\"",
        "\"user\"", "\"assistant\"", "\"type\"", "\"text\"",
        "\"max_tokens\"", "\"max_completion_tokens\"", "\"temperature\"",
        "\"top_p\"", "\"top_k\"", "\"min_p\"", "\"seed\"",
        "\"presence_penalty\"", "\"frequency_penalty\"",
        "\"repetition_penalty\"", "\"logit_bias\"", "\"stop\"",
        "\"logprobs\"", "\"top_logprobs\"", "\"priority\"", "\"stream\"",
        "\"stream_options\"", "\"include_usage\"", "\"n\"", "\"id\"",
        "true", "false", "null", "1e308", "-1e308", "1e-320", "2.0",
        "-9223372036854775808", "9223372036854775807", "18446744073709551615",
        "2147483647", "2147483648", "4294967296", "16777216", "1048576",
        "\"\\u0000\"", "\"\\ud800\"", "\"\\u2581\"", "\\n", "\xc3\xa9",
        "\xff", "|", NULL
    };

    if (argc != 4) {
        fprintf(stderr, "usage: %s t/unit/test_request.c CORPUS_DIR DICT\n",
                argv[0]);
        return 2;
    }

    n = 0;

    for (i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        if (write_seed(argv[2], n++, seeds[i].chat | 2, seeds[i].body,
                       strlen(seeds[i].body)) != 0)
        {
            return 1;
        }
    }

    n += seeds_from_c(argv[1], argv[2], n);

    fp = fopen(argv[3], "w");
    if (fp == NULL) {
        perror(argv[3]);
        return 1;
    }

    for (i = 0; words[i] != NULL; i++) {
        fputc('"', fp);

        for (p = words[i]; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\') {
                fputc('\\', fp);
                fputc(*p, fp);

            } else if ((unsigned char) *p < 0x20
                       || (unsigned char) *p >= 0x7f)
            {
                fprintf(fp, "\\x%02X", (unsigned char) *p);

            } else {
                fputc(*p, fp);
            }
        }

        fputs("\"\n", fp);
    }

    if (fclose(fp) != 0) {
        perror(argv[3]);
        return 1;
    }

    printf("%d seeds in %s, dictionary %s\n", n, argv[2], argv[3]);
    return 0;
}


#endif /* LLM_REQUEST_SEED_MAIN */
