/*
 * Copyright (C) ngx_llm developers
 *
 * The module's parsing and reply code outside nginx, for the fuzz
 * targets (fuzz/fuzz_request.c, fuzz/fuzz_ring.c) and the module's unit
 * test (t/unit/test_openai.c).
 *
 * ngx_http_llm_openai.c and ngx_http_llm_reply.c are compiled as they
 * are, against the headers of the nginx tree the module is built in
 * ($(BUILD)/nginx).  That tree is Debian's nginx-dev: headers only, no
 * core sources and no core objects, so the few core functions the two
 * files call are written here, each doing what nginx 1.22's is
 * documented to do:
 *
 *   - pools: every allocation is a malloc() of its own, so that ASan
 *     sees the end of each (nginx packs small ones into a block);
 *   - ngx_vslprintf(): nginx's conversions through snprintf(), aborting
 *     on a "%f" that nginx's integer arithmetic could not hold;
 *   - ngx_atoi(), ngx_strnlen(), ngx_create_temp_buf().
 *
 * Sending (ngx_http_send_header, ngx_http_output_filter, ngx_list_push)
 * is never reached from here and aborts.
 */

#include <inttypes.h>
#include <stdio.h>

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"
#include "fuzz_ngx.h"


static void *fuzz_pool_alloc(ngx_pool_t *pool, size_t size);
static void fuzz_json(json_t *json, const char *what);
static void fuzz_finish(ngx_http_llm_choice_t *ch);


ngx_module_t  ngx_http_llm_module;


static ngx_pool_t               *fuzz_pool;
static ngx_http_request_t        fuzz_r;
static ngx_http_llm_loc_conf_t   fuzz_llcf;
static void                     *fuzz_loc_conf[1];

static ngx_http_llm_ctx_t        fuzz_ctx;
static ngx_http_llm_choice_t     fuzz_ch;
static ngx_uint_t                fuzz_ended;


/* nginx core, as far as the module's JSON code uses it */

void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    return fuzz_pool_alloc(pool, size);
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return fuzz_pool_alloc(pool, size);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    p = fuzz_pool_alloc(pool, size);
    ngx_memzero(p, size);

    return p;
}


ngx_int_t
ngx_pfree(ngx_pool_t *pool, void *p)
{
    ngx_pool_large_t  *l;

    for (l = pool->large; l; l = l->next) {
        if (p == l->alloc) {
            free(l->alloc);
            l->alloc = NULL;

            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t  *c;

    c = ngx_palloc(p, sizeof(ngx_pool_cleanup_t));

    c->data = size ? ngx_palloc(p, size) : NULL;
    c->handler = NULL;
    c->next = p->cleanup;

    p->cleanup = c;

    return c;
}


static void *
fuzz_pool_alloc(ngx_pool_t *pool, size_t size)
{
    void              *p;
    ngx_pool_large_t  *l;

    p = malloc(size);
    l = malloc(sizeof(ngx_pool_large_t));

    if ((p == NULL && size != 0) || l == NULL) {
        abort();
    }

    l->alloc = p;
    l->next = pool->large;
    pool->large = l;

    return p;
}


ngx_buf_t *
ngx_create_temp_buf(ngx_pool_t *pool, size_t size)
{
    ngx_buf_t  *b;

    b = ngx_calloc_buf(pool);

    b->start = ngx_palloc(pool, size);
    b->pos = b->start;
    b->last = b->start;
    b->end = b->last + size;
    b->temporary = 1;

    return b;
}


void *
ngx_list_push(ngx_list_t *l)
{
    (void) l;
    abort();
}


ngx_int_t
ngx_http_send_header(ngx_http_request_t *r)
{
    (void) r;
    abort();
}


ngx_int_t
ngx_http_output_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    (void) r;
    (void) in;
    abort();
}


size_t
ngx_strnlen(u_char *p, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (p[i] == '\0') {
            return i;
        }
    }

    return n;
}


/* digits only, and only what fits an ngx_int_t */

ngx_int_t
ngx_atoi(u_char *line, size_t n)
{
    size_t     i;
    ngx_int_t  v, d;

    if (n == 0) {
        return NGX_ERROR;
    }

    v = 0;

    for (i = 0; i < n; i++) {
        if (line[i] < '0' || line[i] > '9') {
            return NGX_ERROR;
        }

        d = line[i] - '0';

        if (v > (NGX_MAX_INT_T_VALUE - d) / 10) {
            return NGX_ERROR;
        }

        v = v * 10 + d;
    }

    return v;
}


u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


/*
 * nginx's formats, %[0][width][u|m|x|X][.frac] then one of s V d i z l
 * D L O T M P f p c Z N %, and %*s, as nginx's documentation describes
 * them, by way of snprintf().  A "%f" of a value that nginx's integer
 * arithmetic could not hold aborts: a real worker would compute nonsense.
 */

u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    int          unsig, hex, prec;
    char         num[128], spec[16];
    size_t       len, width, slen;
    double       f;
    int64_t      i64;
    uint64_t     u64;
    u_char      *s, pad;
    ngx_str_t   *v;

    while (*fmt != '\0' && buf < last) {

        if (*fmt != '%') {
            *buf++ = (u_char) *fmt++;
            continue;
        }

        fmt++;
        pad = ' ';
        width = 0;
        unsig = 0;
        hex = 0;
        prec = -1;
        slen = (size_t) -1;

        if (*fmt == '0') {
            pad = '0';
        }

        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (size_t) (*fmt++ - '0');
        }

        for ( ;; ) {
            if (*fmt == 'u' || *fmt == 'm') {
                unsig |= (*fmt == 'u');

            } else if (*fmt == 'x' || *fmt == 'X') {
                hex = *fmt;
                unsig = 1;

            } else if (*fmt == '.') {
                prec = 0;
                while (fmt[1] >= '0' && fmt[1] <= '9') {
                    prec = prec * 10 + (*++fmt - '0');
                }

            } else if (*fmt == '*') {
                slen = va_arg(args, size_t);

            } else {
                break;
            }

            fmt++;
        }

        num[0] = '\0';
        i64 = 0;
        u64 = 0;

        switch (*fmt++) {

        case 's':
            s = va_arg(args, u_char *);
            len = (slen == (size_t) -1) ? ngx_strlen(s) : slen;
            len = ngx_min(len, (size_t) (last - buf));
            buf = ngx_cpymem(buf, s, len);
            continue;

        case 'V':
            v = va_arg(args, ngx_str_t *);
            len = ngx_min(v->len, (size_t) (last - buf));
            buf = ngx_cpymem(buf, v->data, len);
            continue;

        case 'c':
            *buf++ = (u_char) va_arg(args, int);
            continue;

        case 'Z':
            *buf++ = '\0';
            continue;

        case 'N':
            *buf++ = LF;
            continue;

        case '%':
            *buf++ = '%';
            continue;

        case 'f':
            f = va_arg(args, double);
            if (!(f > -9.2e18 && f < 9.2e18)) {
                fprintf(stderr, "fuzz_ngx: %%f of %g: nginx's integer "
                        "arithmetic overflows\n", f);
                abort();
            }
            snprintf(spec, sizeof(spec), pad == '0' ? "%%0%zu.%df"
                                                    : "%%%zu.%df",
                     width, prec < 0 ? 0 : prec);
            snprintf(num, sizeof(num), spec, f);
            width = 0;
            break;

        case 'p':
            u64 = (uintptr_t) va_arg(args, void *);
            hex = 'X';
            unsig = 1;
            pad = '0';
            width = 2 * sizeof(void *);
            break;

        case 'd':
            i64 = unsig ? (int64_t) va_arg(args, u_int) : va_arg(args, int);
            u64 = (uint64_t) i64;
            break;

        case 'i':
            if (unsig) {
                u64 = va_arg(args, ngx_uint_t);
            } else {
                i64 = va_arg(args, ngx_int_t);
            }
            break;

        case 'z':
            if (unsig) {
                u64 = va_arg(args, size_t);
            } else {
                i64 = va_arg(args, ssize_t);
            }
            break;

        case 'l':
            if (unsig) {
                u64 = va_arg(args, u_long);
            } else {
                i64 = va_arg(args, long);
            }
            break;

        case 'D':
            if (unsig) {
                u64 = va_arg(args, uint32_t);
            } else {
                i64 = va_arg(args, int32_t);
            }
            break;

        case 'L':
            if (unsig) {
                u64 = va_arg(args, uint64_t);
            } else {
                i64 = va_arg(args, int64_t);
            }
            break;

        case 'O':
            i64 = va_arg(args, off_t);
            break;

        case 'T':
            i64 = va_arg(args, time_t);
            break;

        case 'P':
            i64 = va_arg(args, ngx_pid_t);
            break;

        case 'M':
            u64 = va_arg(args, ngx_msec_t);
            unsig = 1;
            break;

        default:
            /* nginx copies an unknown conversion as it is */
            *buf++ = (u_char) fmt[-1];
            continue;
        }

        if (num[0] == '\0') {
            if (hex) {
                snprintf(num, sizeof(num), hex == 'x' ? "%" PRIx64
                                                      : "%" PRIX64, u64);

            } else if (unsig) {
                snprintf(num, sizeof(num), "%" PRIu64, u64);

            } else {
                snprintf(num, sizeof(num), "%" PRId64, i64);
            }
        }

        for (len = ngx_strlen(num); len < width && buf < last; width--) {
            *buf++ = pad;
        }

        len = ngx_min(ngx_strlen(num), (size_t) (last - buf));
        buf = ngx_cpymem(buf, num, len);
    }

    return buf;
}


/* a request: its pool and the location's configuration */

ngx_http_request_t *
fuzz_ngx_request(ngx_uint_t max_tokens, ngx_uint_t max_n)
{
    fuzz_llcf.max_tokens = max_tokens;
    fuzz_llcf.max_n = max_n;

    fuzz_pool = calloc(1, sizeof(ngx_pool_t));
    if (fuzz_pool == NULL) {
        abort();
    }

    ngx_memzero(&fuzz_r, sizeof(ngx_http_request_t));
    fuzz_r.pool = fuzz_pool;
    fuzz_r.main = &fuzz_r;

    fuzz_loc_conf[0] = &fuzz_llcf;
    fuzz_r.loc_conf = fuzz_loc_conf;

    return &fuzz_r;
}


/* as ngx_destroy_pool(): the cleanups, then the memory */

void
fuzz_ngx_request_free(void)
{
    ngx_pool_large_t    *l, *next;
    ngx_pool_cleanup_t  *c;

    for (c = fuzz_pool->cleanup; c; c = c->next) {
        if (c->handler) {
            c->handler(c->data);
        }
    }

    for (l = fuzz_pool->large; l; l = next) {
        next = l->next;
        free(l->alloc);
        free(l);
    }

    free(fuzz_pool);
    fuzz_pool = NULL;
}


/* what the module would send: it must exist and serialize */

static void
fuzz_json(json_t *json, const char *what)
{
    char  *s;

    if (json == NULL) {
        fprintf(stderr, "fuzz_ngx: no JSON for %s\n", what);
        abort();
    }

    s = json_dumps(json, JSON_COMPACT);
    if (s == NULL) {
        fprintf(stderr, "fuzz_ngx: %s does not serialize\n", what);
        abort();
    }

    free(s);
    json_decref(json);
}


int
fuzz_ngx_parse(int chat, unsigned max_tokens, unsigned max_n,
    const uint8_t *p, size_t len, fuzz_ngx_req_pt req, void *arg)
{
    u_char                     *body;
    ngx_int_t                   rc;
    ngx_uint_t                  i, prompts;
    ngx_http_request_t         *r;
    ngx_http_llm_ctx_t          ctx;
    ngx_http_llm_error_t        err;
    ngx_http_llm_choice_t      *ch;
    ngx_http_llm_completion_t   cp;

    r = fuzz_ngx_request(max_tokens, max_n);

    /* the body, exactly as long as it is */
    body = ngx_pnalloc(r->pool, len);
    if (len) {
        ngx_memcpy(body, p, len);
    }

    ngx_memzero(&err, sizeof(ngx_http_llm_error_t));

    rc = ngx_http_llm_parse(r, chat ? NGX_HTTP_LLM_CHAT
                                    : NGX_HTTP_LLM_COMPLETIONS,
                            body, len, &cp, &err);

    if (rc == NGX_DECLINED) {
        /* a 400 naming the parameter, which the client can read */
        if (err.status != NGX_HTTP_BAD_REQUEST || err.type == NULL
            || err.code == NULL || err.message.len == 0
            || err.message.len > 512)
        {
            fprintf(stderr, "fuzz_ngx: a refusal without a proper error\n");
            abort();
        }

        fuzz_json(ngx_http_llm_error_json(r, &err), "the error object");
        fuzz_ngx_request_free();

        return 0;
    }

    if (rc != NGX_OK) {
        fprintf(stderr, "fuzz_ngx: ngx_http_llm_parse() returned %d\n",
                (int) rc);
        abort();
    }

    if (cp.fields == NULL || cp.n < 1 || cp.n > max_n
        || cp.logprobs < -1 || cp.logprobs > LLM_LOGPROBS_MAX
        || (chat ? cp.messages == NULL || cp.prompts != NULL
                 : cp.prompts == NULL || json_array_size(cp.prompts) == 0))
    {
        fprintf(stderr, "fuzz_ngx: an accepted request is incomplete\n");
        abort();
    }

    /* as ngx_http_llm_set_choices() and ngx_http_llm_dispatch() */

    ngx_memzero(&ctx, sizeof(ngx_http_llm_ctx_t));

    ctx.request = r;
    ctx.endpoint = chat ? NGX_HTTP_LLM_CHAT : NGX_HTTP_LLM_COMPLETIONS;
    ngx_str_set(&ctx.id, "cmpl-fuzz");
    ctx.model = cp.model;
    ctx.fields = cp.fields;
    ctx.prompts = cp.prompts;
    ctx.messages = cp.messages;
    ctx.n = cp.n;
    ctx.seed = cp.seed;
    ctx.has_seed = cp.has_seed;
    ctx.logprobs = cp.logprobs;

    prompts = cp.prompts ? json_array_size(cp.prompts) : 1;

    ctx.n_choices = prompts * cp.n;

    if (ctx.n_choices > NGX_HTTP_LLM_MAX_CHOICES && !chat) {
        fprintf(stderr, "fuzz_ngx: %u choices\n", (unsigned) ctx.n_choices);
        abort();
    }

    ctx.choices = ngx_pcalloc(r->pool,
                              ctx.n_choices * sizeof(ngx_http_llm_choice_t));

    for (i = 0; i < ctx.n_choices; i++) {
        ch = &ctx.choices[i];
        ch->ctx = &ctx;
        ch->index = i;
        ch->prompt = i / cp.n;

        if (ngx_http_llm_choice_request(ch) != NGX_OK) {
            fprintf(stderr, "fuzz_ngx: no engine request for choice %u\n",
                    (unsigned) i);
            abort();
        }

        req(arg, (const char *) ch->req.data, ch->req.len);
    }

    fuzz_ngx_request_free();

    return 1;
}


void
fuzz_ngx_reply_begin(int chat, int logprobs, int stream, int include_usage)
{
    ngx_http_request_t  *r;

    r = fuzz_ngx_request(256, 8);

    ngx_memzero(&fuzz_ctx, sizeof(ngx_http_llm_ctx_t));
    ngx_memzero(&fuzz_ch, sizeof(ngx_http_llm_choice_t));

    fuzz_ctx.request = r;
    fuzz_ctx.endpoint = chat ? NGX_HTTP_LLM_CHAT : NGX_HTTP_LLM_COMPLETIONS;
    ngx_str_set(&fuzz_ctx.id, "cmpl-fuzz");
    ngx_str_set(&fuzz_ctx.model, "stories");
    fuzz_ctx.created = 1700000000;
    fuzz_ctx.n = 1;
    fuzz_ctx.logprobs = logprobs;
    fuzz_ctx.stream = stream ? 1 : 0;
    fuzz_ctx.include_usage = (stream && include_usage) ? 1 : 0;
    fuzz_ctx.choices = &fuzz_ch;
    fuzz_ctx.n_choices = 1;

    fuzz_ch.ctx = &fuzz_ctx;

    fuzz_ended = 0;
}


/* as ngx_http_llm_drain() takes each event */

int
fuzz_ngx_event(uint16_t type, uint8_t *buf, size_t len)
{
    ngx_int_t               rc;
    ngx_http_llm_error_t    err;
    ngx_http_llm_choice_t  *ch;

    ch = &fuzz_ch;

    if (fuzz_ended) {
        return 0;
    }

    switch (type) {

    case LLM_EV_TOKEN:

        if (len < sizeof(llm_ev_token_t)) {
            fuzz_ended = 1;
            return 0;
        }

        ch->tokens++;

        if (ch->lp_pending && ngx_http_llm_logprobs_token(ch) != NGX_OK) {
            fprintf(stderr, "fuzz_ngx: ngx_http_llm_logprobs_token()\n");
            abort();
        }

        (void) ngx_http_llm_append(ch, buf + sizeof(llm_ev_token_t),
                                   len - sizeof(llm_ev_token_t));

        if (fuzz_ctx.stream && ch->text_len >= NGX_HTTP_LLM_CHUNK_TEXT_MAX)
        {
            fuzz_json(ngx_http_llm_chunk_json(ch, NULL), "a chunk");
        }

        return 1;

    case LLM_EV_LOGPROBS:

        rc = ngx_http_llm_logprobs_event(ch, buf, len);

        if (rc == NGX_DECLINED) {
            fuzz_ended = 1;
            return 0;
        }

        if (rc != NGX_OK) {
            fprintf(stderr, "fuzz_ngx: ngx_http_llm_logprobs_event()\n");
            abort();
        }

        return 1;

    case LLM_EV_DONE:

        if (len < sizeof(llm_ev_done_t)) {
            fuzz_ended = 1;
            return 0;
        }

        ngx_memcpy(&ch->done, buf, sizeof(llm_ev_done_t));

        fuzz_ended = 1;

        if (ngx_http_llm_finish_reason(ch->done.finish_reason) == NULL) {
            return 0;
        }

        fuzz_finish(ch);

        return 1;

    case LLM_EV_ERROR:

        if (len < sizeof(llm_ev_error_t)) {
            fuzz_ended = 1;
            return 0;
        }

        /* the message goes to the client as the engine wrote it */
        ngx_http_llm_error(&err, NGX_HTTP_INTERNAL_SERVER_ERROR,
                           "server_error", NULL, NULL, "");
        err.message.data = buf + sizeof(llm_ev_error_t);
        err.message.len = len - sizeof(llm_ev_error_t);

        fuzz_json(ngx_http_llm_error_json(fuzz_ctx.request, &err),
                  "an engine's error");

        fuzz_ended = 1;

        return 1;

    default:
        return 1;
    }
}


void
fuzz_ngx_reply_end(void)
{
    ngx_http_llm_choice_t  *ch;

    ch = &fuzz_ch;

    /* the ring ran dry: a stream sends what it has */
    if (!fuzz_ended && fuzz_ctx.stream && (ch->text_len || ch->logprobs)) {
        fuzz_json(ngx_http_llm_chunk_json(ch, NULL), "a chunk");
    }

    /* as ngx_http_llm_cleanup() */
    if (ch->logprobs) {
        json_decref(ch->logprobs);
        ch->logprobs = NULL;
    }

    if (ch->lp_pending) {
        json_decref(ch->lp_pending);
        ch->lp_pending = NULL;
    }

    fuzz_ngx_request_free();
}


/* DONE: the whole response, or a stream's last chunks */

static void
fuzz_finish(ngx_http_llm_choice_t *ch)
{
    const char  *finish;

    finish = ngx_http_llm_finish_reason(ch->done.finish_reason);

    ch->finished = 1;
    fuzz_ctx.n_finished++;

    if (!fuzz_ctx.stream) {
        fuzz_json(ngx_http_llm_response_json(&fuzz_ctx), "the response");
        return;
    }

    if (ch->text_len || ch->logprobs) {
        fuzz_json(ngx_http_llm_chunk_json(ch, NULL), "a chunk");
    }

    fuzz_json(ngx_http_llm_chunk_json(ch, finish), "the last chunk");

    if (fuzz_ctx.include_usage) {
        fuzz_json(ngx_http_llm_usage_chunk_json(&fuzz_ctx), "the usage");
    }
}
