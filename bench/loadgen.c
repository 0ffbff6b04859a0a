/*
 * Copyright (C) ngx_llm developers
 *
 * loadgen: drives N concurrent clients of the OpenAI completions API for
 * a time or a number of requests and reports requests/s, tokens/s and
 * percentiles of latency, time to first token (TTFT) and inter-token
 * latency (ITL).
 *
 * One process, one thread, one epoll set.  In HTTP mode each client is a
 * non-blocking HTTP/1.1 keep-alive connection that sends its next request
 * as soon as the previous response has ended; responses are parsed for
 * real (Content-Length and chunked bodies, SSE "data:" events, "[DONE]",
 * the JSON of every body and event).  In --direct mode each client is a
 * slot of the engine's shared memory, driven through its protocol as an
 * nginx worker drives it (bench/llm_client.h), which gives the engine's
 * own rate without HTTP or nginx.
 *
 * Times: a request starts when its first byte is written (or, direct,
 * when a slot is first asked for); TTFT ends at the first SSE event (or
 * batch of TOKEN events) that carries text, or at the end of a
 * non-streamed response; ITL is the gap between successive events that
 * carry text.  Percentiles come from a log-linear histogram with 128
 * sub-buckets per power of two (under 1% error), exact below 256 us.
 *
 * The summary is one "key: value" per line, keys fixed; --markdown LABEL
 * adds a table row.  Exit status: 0 without errors, 1 with errors, 2 on
 * bad usage or when the target cannot be reached at all.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <jansson.h>

#include "llm_client.h"


#define LLM_LG_MAX_CONNS      4096
#define LLM_LG_IN_MAX         (4 * 1024 * 1024)   /* one header block or
                                                     SSE event, at most */
#define LLM_LG_BODY_MAX       (16 * 1024 * 1024)

#define LLM_HIST_EXACT        256
#define LLM_HIST_SUB          128
#define LLM_HIST_OCTAVES      28                  /* 2^8 .. 2^36 us */
#define LLM_HIST_SIZE         (LLM_HIST_EXACT                        \
                               + LLM_HIST_OCTAVES * LLM_HIST_SUB)


typedef struct {
    uint64_t              count[LLM_HIST_SIZE];
    uint64_t              n;
    uint64_t              sum;
    uint64_t              max;
} llm_hist_t;


/* how a request failed; the first failure of a request is the one counted */
enum {
    LLM_LG_OK = 0,
    LLM_LG_ERR_STATUS,       /* HTTP status other than 200 */
    LLM_LG_ERR_EVENT,        /* an error object in a 200 response, or an
                                ERROR event from the engine */
    LLM_LG_ERR_MALFORMED,    /* bad HTTP, JSON, SSE framing, no [DONE] */
    LLM_LG_ERR_IO,           /* connect, reset, closed mid-response */
    LLM_LG_ERR_TIMEOUT,
    LLM_LG_ERR_N
};

static const char  *llm_lg_err_names[LLM_LG_ERR_N] = {
    "ok", "status", "event", "malformed", "io", "timeout"
};


typedef struct {
    char                 *data;
    size_t                len;
    size_t                size;
} llm_buf_t;


/* one request in flight, either mode */
typedef struct {
    uint64_t              t_start;
    uint64_t              t_first;        /* first text, 0 before */
    uint64_t              t_last;         /* latest text */
    uint64_t              tokens;         /* usage, else text events */
    uint64_t              text_events;
    int                   usage;          /* tokens came from usage */
    int                   done;           /* [DONE] or DONE */
    int                   err;            /* LLM_LG_ERR_* */
    int                   status;         /* HTTP status */
} llm_lg_req_t;


enum {
    LLM_CONN_CLOSED = 0,
    LLM_CONN_CONNECTING,
    LLM_CONN_IDLE,
    LLM_CONN_SENDING,
    LLM_CONN_HEADERS,
    LLM_CONN_BODY
};

enum {
    LLM_BODY_LENGTH = 0,
    LLM_BODY_CHUNKED,
    LLM_BODY_EOF
};

enum {
    LLM_CHUNK_SIZE = 0,
    LLM_CHUNK_DATA,
    LLM_CHUNK_CRLF,
    LLM_CHUNK_TRAILER
};


typedef struct {
    int                   fd;
    int                   state;          /* LLM_CONN_* */
    int                   busy;           /* a request is in flight */
    int                   want_out;       /* EPOLLOUT is armed */
    int                   pending;        /* start a request at start_at */
    uint64_t              start_at;

    llm_buf_t             out;            /* the request */
    size_t                out_sent;

    llm_buf_t             in;             /* read, not yet parsed */
    size_t                in_pos;         /* parsed up to here */

    llm_buf_t             body;           /* JSON body, or SSE not yet
                                             split into lines */
    llm_buf_t             event;          /* data of the SSE event being
                                             read */

    int                   close;          /* the server closes after */
    int                   sse;
    int                   body_mode;      /* LLM_BODY_* */
    int                   chunk_state;    /* LLM_CHUNK_* */
    uint64_t              left;           /* body or chunk bytes left */
    uint64_t              t_read;         /* when the bytes were read */

    uint64_t              served;         /* responses on this socket */

    llm_lg_req_t          req;
} llm_lg_conn_t;


/* a client in --direct mode: a slot of the engine's shared memory */
typedef struct {
    int                   busy;
    int                   slot;           /* -1 while waiting for one */
    uint32_t              gen;
    llm_buf_t             body;           /* the request, kept for retries */
    llm_lg_req_t          req;
} llm_lg_stream_t;


typedef struct {
    /* options */
    const char           *url;
    const char           *direct;        /* engine socket */
    const char           *model;
    const char           *prompt;
    const char           *markdown;      /* label of the table row */
    char                  host[256];
    char                  port[16];
    char                  path[1024];
    int                   conns;
    int                   stream;
    int                   chat;
    int                   usage;         /* stream_options.include_usage */
    int                   min_tokens;    /* max_tokens, drawn per request */
    int                   max_tokens;
    double                temperature;
    double                duration;      /* s, measured; 0: --requests */
    double                warmup;        /* s, not measured */
    double                timeout;       /* s per request */
    double                interval;      /* s between progress lines */
    uint64_t              max_requests;  /* 0: --duration */
    uint64_t              seed;
    int                   stats_only;    /* --stats: dump the engine */

    /* run */
    int                   ep;
    struct addrinfo      *addr;
    llm_lg_conn_t        *conn;
    llm_lg_stream_t      *streams;
    llm_client_t          client;
    uint64_t              rng;
    uint64_t              issued;
    uint64_t              inflight;
    uint64_t              reqno;
    int                   stopping;
    uint64_t              t0;
    uint64_t              t_warm;        /* measuring from here */
    uint64_t              t_stop;        /* no new requests from here */
    uint64_t              t_end;         /* end of the measured window */
    uint64_t              t_next_report;

    /* results */
    uint64_t              requests;      /* completed in the window */
    uint64_t              completed;     /* completed at all */
    uint64_t              tokens;        /* in the window */
    uint64_t              tokens_all;
    uint64_t              errors[LLM_LG_ERR_N];
    uint64_t              connects;
    uint64_t              last_report_requests;
    uint64_t              last_report_t;
    llm_hist_t            latency;
    llm_hist_t            ttft;
    llm_hist_t            itl;
    char                  first_error[512];
} llm_lg_t;


static uint64_t llm_now_us(void);
static void llm_hist_add(llm_hist_t *h, uint64_t v);
static uint64_t llm_hist_pct(const llm_hist_t *h, double p);
static int llm_buf_append(llm_buf_t *b, const void *p, size_t n);
static uint64_t llm_lg_rand(llm_lg_t *lg);
static int llm_lg_body(llm_lg_t *lg, llm_buf_t *out, int direct);
static void llm_lg_free(llm_lg_t *lg);
static int llm_lg_may_issue(llm_lg_t *lg, uint64_t now);
static void llm_lg_fail(llm_lg_t *lg, llm_lg_req_t *rq, int err,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void llm_lg_text(llm_lg_t *lg, llm_lg_req_t *rq, uint64_t now);
static void llm_lg_finish(llm_lg_t *lg, llm_lg_req_t *rq, uint64_t now);
static int llm_lg_parse_url(llm_lg_t *lg);

static int llm_http_run(llm_lg_t *lg);
static void llm_http_open(llm_lg_t *lg, llm_lg_conn_t *c);
static void llm_http_close(llm_lg_t *lg, llm_lg_conn_t *c);
static void llm_http_start(llm_lg_t *lg, llm_lg_conn_t *c);
static void llm_http_write(llm_lg_t *lg, llm_lg_conn_t *c);
static void llm_http_read(llm_lg_t *lg, llm_lg_conn_t *c);
static int llm_http_parse(llm_lg_t *lg, llm_lg_conn_t *c);
static int llm_http_headers(llm_lg_t *lg, llm_lg_conn_t *c);
static int llm_http_body(llm_lg_t *lg, llm_lg_conn_t *c, const char *p,
    size_t n);
static int llm_http_sse_event(llm_lg_t *lg, llm_lg_conn_t *c);
static void llm_http_done(llm_lg_t *lg, llm_lg_conn_t *c);
static void llm_http_abort(llm_lg_t *lg, llm_lg_conn_t *c, int err,
    const char *what);
static void llm_http_arm(llm_lg_t *lg, llm_lg_conn_t *c, int out);
static const char *llm_json_text(json_t *root, int chat);

static int llm_direct_run(llm_lg_t *lg);
static void llm_direct_start(llm_lg_t *lg, llm_lg_stream_t *s,
    uint64_t now);
static void llm_direct_drain(llm_lg_t *lg, llm_lg_stream_t *s);
static int llm_direct_stats(llm_lg_t *lg);

static void llm_lg_report(llm_lg_t *lg, uint64_t now);
static void llm_lg_summary(llm_lg_t *lg);
static void llm_lg_usage(FILE *f);


static volatile sig_atomic_t  llm_lg_interrupted;


static void
llm_lg_stop(int signo)
{
    (void) signo;
    llm_lg_interrupted = 1;
}


/* --- time and histograms ------------------------------------------------- */

static uint64_t
llm_now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


static size_t
llm_hist_index(uint64_t v)
{
    int  m;

    if (v < LLM_HIST_EXACT) {
        return (size_t) v;
    }

    m = 63 - __builtin_clzll(v);                  /* 8 <= m */
    if (m >= 8 + LLM_HIST_OCTAVES) {
        return LLM_HIST_SIZE - 1;
    }

    return LLM_HIST_EXACT + (size_t) (m - 8) * LLM_HIST_SUB
           + (size_t) ((v >> (m - 7)) - LLM_HIST_SUB);
}


/* the middle of bucket i */
static uint64_t
llm_hist_value(size_t i)
{
    int       m;
    uint64_t  sub;

    if (i < LLM_HIST_EXACT) {
        return i;
    }

    i -= LLM_HIST_EXACT;
    m = (int) (i / LLM_HIST_SUB) + 8;
    sub = i % LLM_HIST_SUB + LLM_HIST_SUB;

    return (sub << (m - 7)) + ((uint64_t) 1 << (m - 7)) / 2;
}


static void
llm_hist_add(llm_hist_t *h, uint64_t v)
{
    h->count[llm_hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max) {
        h->max = v;
    }
}


/* the p-quantile (0 < p <= 1): the smallest value with p of all at or
 * below it */
static uint64_t
llm_hist_pct(const llm_hist_t *h, double p)
{
    uint64_t  rank, seen;

    if (h->n == 0) {
        return 0;
    }

    rank = (uint64_t) (p * (double) h->n + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > h->n) {
        rank = h->n;
    }

    seen = 0;
    for (size_t i = 0; i < LLM_HIST_SIZE; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            /* never more than the largest value seen */
            return llm_hist_value(i) < h->max ? llm_hist_value(i) : h->max;
        }
    }

    return h->max;
}


/* --- small helpers ------------------------------------------------------- */

static int
llm_buf_reserve(llm_buf_t *b, size_t n, size_t max)
{
    char    *p;
    size_t   size;

    if (b->len + n <= b->size) {
        return 0;
    }
    if (b->len + n > max) {
        return -1;
    }

    size = b->size ? b->size : 4096;
    while (size < b->len + n) {
        size *= 2;
    }
    if (size > max) {
        size = max;
    }

    p = realloc(b->data, size);
    if (p == NULL) {
        return -1;
    }
    b->data = p;
    b->size = size;
    return 0;
}


static int
llm_buf_append(llm_buf_t *b, const void *p, size_t n)
{
    if (llm_buf_reserve(b, n, LLM_LG_BODY_MAX) != 0) {
        return -1;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}


/* xorshift64*: the caller owns the state, so a seed repeats a run */
static uint64_t
llm_lg_rand(llm_lg_t *lg)
{
    lg->rng ^= lg->rng >> 12;
    lg->rng ^= lg->rng << 25;
    lg->rng ^= lg->rng >> 27;
    return lg->rng * 2685821657736338717ull;
}


/*
 * The JSON of the next request into out: for HTTP what a client sends,
 * for --direct what the module would write into the slot.  Returns 0 or
 * -1.
 */
static int
llm_lg_body(llm_lg_t *lg, llm_buf_t *out, int direct)
{
    int      n_tokens;
    char    *s;
    json_t  *root, *msgs, *msg, *opts;

    n_tokens = lg->min_tokens;
    if (lg->max_tokens > lg->min_tokens) {
        n_tokens += (int) (llm_lg_rand(lg)
                           % (uint64_t) (lg->max_tokens - lg->min_tokens + 1));
    }

    root = json_object();
    if (root == NULL) {
        return -1;
    }

    if (direct) {
        char  id[32];

        snprintf(id, sizeof(id), "lg-%llu",
                 (unsigned long long) ++lg->reqno);
        json_object_set_new(root, "id", json_string(id));
    }

    json_object_set_new(root, "model", json_string(lg->model));

    if (lg->chat) {
        msgs = json_array();
        msg = json_object();
        json_object_set_new(msg, "role", json_string("user"));
        json_object_set_new(msg, "content", json_string(lg->prompt));
        json_array_append_new(msgs, msg);
        json_object_set_new(root, "messages", msgs);

    } else {
        json_object_set_new(root, "prompt", json_string(lg->prompt));
    }

    json_object_set_new(root, "max_tokens", json_integer(n_tokens));
    json_object_set_new(root, "temperature", json_real(lg->temperature));

    if (direct) {
        json_object_set_new(root, "seed",
                            json_integer((json_int_t) lg->reqno));
    }

    json_object_set_new(root, "stream", json_boolean(lg->stream));

    if (lg->stream && lg->usage && !direct) {
        opts = json_object();
        json_object_set_new(opts, "include_usage", json_true());
        json_object_set_new(root, "stream_options", opts);
    }

    s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (s == NULL) {
        return -1;
    }

    out->len = 0;
    if (llm_buf_append(out, s, strlen(s)) != 0) {
        free(s);
        return -1;
    }
    free(s);
    return 0;
}


/* may another request start now? */
static int
llm_lg_may_issue(llm_lg_t *lg, uint64_t now)
{
    if (lg->stopping || llm_lg_interrupted) {
        return 0;
    }
    if (lg->max_requests && lg->issued >= lg->max_requests) {
        return 0;
    }
    if (lg->duration > 0 && now >= lg->t_stop) {
        return 0;
    }
    return 1;
}


static void
llm_lg_fail(llm_lg_t *lg, llm_lg_req_t *rq, int err, const char *fmt, ...)
{
    va_list  ap;

    if (rq->err != LLM_LG_OK) {
        return;
    }
    rq->err = err;

    if (lg->first_error[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(lg->first_error, sizeof(lg->first_error), fmt, ap);
        va_end(ap);
    }
}


/* an event with text arrived at now */
static void
llm_lg_text(llm_lg_t *lg, llm_lg_req_t *rq, uint64_t now)
{
    if (rq->t_first == 0) {
        rq->t_first = now;

    } else if (now >= lg->t_warm) {
        llm_hist_add(&lg->itl, now - rq->t_last);
    }

    rq->t_last = now;
    rq->text_events++;
}


/* the request ended at now, well or not */
static void
llm_lg_finish(llm_lg_t *lg, llm_lg_req_t *rq, uint64_t now)
{
    uint64_t  tokens;

    lg->inflight--;

    if (rq->err != LLM_LG_OK) {
        lg->errors[rq->err]++;
        return;
    }

    lg->completed++;

    tokens = rq->usage ? rq->tokens : rq->text_events;
    lg->tokens_all += tokens;

    if (now < lg->t_warm || (lg->duration > 0 && now > lg->t_stop)) {
        return;
    }

    lg->requests++;
    lg->tokens += tokens;
    if (now > lg->t_end) {
        lg->t_end = now;
    }

    llm_hist_add(&lg->latency, now - rq->t_start);

    if (!lg->stream || rq->t_first == 0) {
        llm_hist_add(&lg->ttft, now - rq->t_start);
    } else {
        llm_hist_add(&lg->ttft, rq->t_first - rq->t_start);
    }
}


/* accepts http://host[:port][/path] */
static int
llm_lg_parse_url(llm_lg_t *lg)
{
    size_t       n;
    const char  *p, *host, *colon, *slash;

    p = lg->url;
    if (strncmp(p, "http://", 7) != 0) {
        fprintf(stderr, "loadgen: only http:// URLs: %s\n", lg->url);
        return -1;
    }
    host = p + 7;

    slash = strchr(host, '/');
    if (slash == NULL) {
        slash = host + strlen(host);
    }

    colon = memchr(host, ':', (size_t) (slash - host));
    n = (size_t) ((colon ? colon : slash) - host);
    if (n == 0 || n >= sizeof(lg->host)) {
        fprintf(stderr, "loadgen: bad host in %s\n", lg->url);
        return -1;
    }
    memcpy(lg->host, host, n);
    lg->host[n] = '\0';

    if (colon) {
        n = (size_t) (slash - colon - 1);
        if (n == 0 || n >= sizeof(lg->port)) {
            fprintf(stderr, "loadgen: bad port in %s\n", lg->url);
            return -1;
        }
        memcpy(lg->port, colon + 1, n);
        lg->port[n] = '\0';

    } else {
        strcpy(lg->port, "80");
    }

    if (*slash == '\0') {
        strcpy(lg->path, lg->chat ? "/v1/chat/completions"
                                  : "/v1/completions");

    } else {
        if (strlen(slash) >= sizeof(lg->path)) {
            fprintf(stderr, "loadgen: path too long in %s\n", lg->url);
            return -1;
        }
        strcpy(lg->path, slash);
    }

    return 0;
}


/* --- HTTP mode ----------------------------------------------------------- */

static int
llm_http_run(llm_lg_t *lg)
{
    int                  n, timeout;
    uint64_t             now, grace;
    llm_lg_conn_t       *c;
    struct addrinfo      hints;
    struct epoll_event   evs[256];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    n = getaddrinfo(lg->host, lg->port, &hints, &lg->addr);
    if (n != 0) {
        fprintf(stderr, "loadgen: %s:%s: %s\n", lg->host, lg->port,
                gai_strerror(n));
        return 2;
    }

    lg->conn = calloc((size_t) lg->conns, sizeof(llm_lg_conn_t));
    if (lg->conn == NULL) {
        return 2;
    }

    for (int i = 0; i < lg->conns; i++) {
        lg->conn[i].fd = -1;
        lg->conn[i].pending = 1;
    }

    grace = 0;

    for ( ;; ) {
        now = llm_now_us();

        if (!lg->stopping && !llm_lg_may_issue(lg, now)) {
            lg->stopping = 1;
            grace = now + (uint64_t) (lg->timeout * 1e6);
            if (lg->duration > 0 && now < lg->t_stop) {
                lg->t_stop = now;          /* interrupted */
            }
        }

        if (lg->stopping && lg->inflight == 0) {
            break;
        }

        /*
         * Requests over their time, and everything once grace is over;
         * connections that wait to start their next request.
         */
        timeout = 50;

        for (int i = 0; i < lg->conns; i++) {
            c = &lg->conn[i];

            if (c->busy
                && (now - c->req.t_start > (uint64_t) (lg->timeout * 1e6)
                    || (lg->stopping && now > grace)))
            {
                llm_http_abort(lg, c, LLM_LG_ERR_TIMEOUT, "timed out");
            }

            if (!c->busy && c->pending && !lg->stopping) {
                if (now >= c->start_at) {
                    c->pending = 0;
                    llm_http_start(lg, c);
                } else {
                    timeout = 1;
                }
            }
        }

        if (lg->interval > 0 && now >= lg->t_next_report) {
            llm_lg_report(lg, now);
        }

        n = epoll_wait(lg->ep, evs, 256, timeout);
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
            return 2;
        }

        for (int i = 0; i < n; i++) {
            c = &lg->conn[evs[i].data.u32];

            if (c->state == LLM_CONN_CONNECTING) {
                int        e = 0;
                socklen_t  len = sizeof(e);

                if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) == -1
                    || e != 0)
                {
                    llm_http_abort(lg, c, LLM_LG_ERR_IO,
                                   e ? strerror(e) : "connect failed");
                    continue;
                }
                c->state = LLM_CONN_SENDING;
                llm_http_write(lg, c);
                continue;
            }

            if ((evs[i].events & EPOLLOUT)
                && c->state == LLM_CONN_SENDING)
            {
                llm_http_write(lg, c);
            }

            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                llm_http_read(lg, c);
            }
        }
    }

    return 0;
}


static void
llm_http_open(llm_lg_t *lg, llm_lg_conn_t *c)
{
    int                  one = 1;
    struct epoll_event   ev;

    c->fd = socket(lg->addr->ai_family,
                   SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd == -1) {
        llm_http_abort(lg, c, LLM_LG_ERR_IO, "socket() failed");
        return;
    }

    (void) setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    c->in.len = 0;
    c->in_pos = 0;
    c->served = 0;
    c->want_out = 1;
    lg->connects++;

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u32 = (uint32_t) (c - lg->conn);

    if (epoll_ctl(lg->ep, EPOLL_CTL_ADD, c->fd, &ev) == -1) {
        llm_http_abort(lg, c, LLM_LG_ERR_IO, "epoll_ctl failed");
        return;
    }

    if (connect(c->fd, lg->addr->ai_addr, lg->addr->ai_addrlen) == -1) {
        if (errno != EINPROGRESS) {
            llm_http_abort(lg, c, LLM_LG_ERR_IO, strerror(errno));
            return;
        }
        c->state = LLM_CONN_CONNECTING;
        return;
    }

    c->state = LLM_CONN_SENDING;
}


static void
llm_http_close(llm_lg_t *lg, llm_lg_conn_t *c)
{
    if (c->fd != -1) {
        (void) epoll_ctl(lg->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->state = LLM_CONN_CLOSED;
    c->want_out = 0;
}


/* starts the next request on c, connecting first if need be */
static void
llm_http_start(llm_lg_t *lg, llm_lg_conn_t *c)
{
    int        n;
    llm_buf_t  body = { NULL, 0, 0 };

    memset(&c->req, 0, sizeof(c->req));
    c->busy = 1;
    lg->issued++;
    lg->inflight++;

    if (llm_lg_body(lg, &body, 0) != 0) {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(2);
    }

    c->out.len = 0;
    if (llm_buf_reserve(&c->out, body.len + 1024 + strlen(lg->path)
                        + strlen(lg->host), LLM_LG_BODY_MAX) != 0)
    {
        fprintf(stderr, "loadgen: out of memory\n");
        exit(2);
    }

    n = snprintf(c->out.data, c->out.size,
                 "POST %s HTTP/1.1\r\n"
                 "Host: %s:%s\r\n"
                 "User-Agent: ngx_llm-loadgen\r\n"
                 "Accept: %s\r\n"
                 "Content-Type: application/json\r\n"
                 "Content-Length: %zu\r\n"
                 "\r\n",
                 lg->path, lg->host, lg->port,
                 lg->stream ? "text/event-stream" : "application/json",
                 body.len);
    c->out.len = (size_t) n;
    memcpy(c->out.data + c->out.len, body.data, body.len);
    c->out.len += body.len;
    free(body.data);

    c->out_sent = 0;
    c->close = 0;
    c->body.len = 0;
    c->event.len = 0;

    c->req.t_start = llm_now_us();

    if (c->state == LLM_CONN_CLOSED) {
        llm_http_open(lg, c);
        if (c->state != LLM_CONN_SENDING) {
            return;
        }

    } else {
        c->state = LLM_CONN_SENDING;
    }

    llm_http_write(lg, c);
}


static void
llm_http_arm(llm_lg_t *lg, llm_lg_conn_t *c, int out)
{
    struct epoll_event  ev;

    if (c->want_out == out) {
        return;
    }

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t) (c - lg->conn);

    if (epoll_ctl(lg->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
        c->want_out = out;
    }
}


static void
llm_http_write(llm_lg_t *lg, llm_lg_conn_t *c)
{
    ssize_t  n;

    while (c->out_sent < c->out.len) {
        n = send(c->fd, c->out.data + c->out_sent,
                 c->out.len - c->out_sent, MSG_NOSIGNAL);

        if (n == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                llm_http_arm(lg, c, 1);
                return;
            }
            if (errno == EINTR) {
                continue;
            }
            llm_http_abort(lg, c, LLM_LG_ERR_IO, strerror(errno));
            return;
        }

        c->out_sent += (size_t) n;
    }

    llm_http_arm(lg, c, 0);
    c->state = LLM_CONN_HEADERS;
}


static void
llm_http_read(llm_lg_t *lg, llm_lg_conn_t *c)
{
    ssize_t  n;

    for ( ;; ) {
        if (c->in.size - c->in.len < 4096
            && llm_buf_reserve(&c->in, 16384, LLM_LG_IN_MAX) != 0)
        {
            llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                           "a header block or an event over 4 MB");
            return;
        }

        n = recv(c->fd, c->in.data + c->in.len, c->in.size - c->in.len, 0);

        if (n == -1) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            if (errno == EINTR) {
                continue;
            }
            llm_http_abort(lg, c, LLM_LG_ERR_IO, strerror(errno));
            return;
        }

        if (n == 0) {
            if (c->busy && c->state == LLM_CONN_BODY
                && c->body_mode == LLM_BODY_EOF)
            {
                llm_http_done(lg, c);
                llm_http_close(lg, c);
                if (llm_lg_may_issue(lg, llm_now_us())) {
                    llm_http_start(lg, c);
                }
                return;
            }

            if (c->busy) {
                llm_http_abort(lg, c, LLM_LG_ERR_IO,
                               c->state == LLM_CONN_HEADERS && c->served
                               ? "keep-alive connection closed by the server"
                               : "connection closed mid-response");
                return;
            }

            llm_http_close(lg, c);
            return;
        }

        c->in.len += (size_t) n;
        c->t_read = llm_now_us();

        if (llm_http_parse(lg, c) != 0) {
            return;
        }
    }
}


/*
 * Consumes what was read.  Returns 0 to go on reading, or -1 when the
 * connection was closed or reopened (stop touching its buffers).
 */
static int
llm_http_parse(llm_lg_t *lg, llm_lg_conn_t *c)
{
    int          rc;
    char        *p, *end, *nl;
    uint64_t     size;
    size_t       n;

    for ( ;; ) {
        p = c->in.data + c->in_pos;
        end = c->in.data + c->in.len;

        if (!c->busy) {
            if (p < end) {
                llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                               "bytes after the end of a response");
                return -1;
            }
            break;
        }

        if (c->state == LLM_CONN_SENDING) {
            /* an early answer, before the whole request was sent: read
             * it as usual once the request is out */
            c->state = LLM_CONN_HEADERS;
        }

        if (c->state == LLM_CONN_HEADERS) {
            rc = llm_http_headers(lg, c);
            if (rc == 0) {
                break;             /* more bytes needed */
            }
            if (rc < 0) {
                return -1;
            }
            continue;
        }

        /* LLM_CONN_BODY */

        if (c->body_mode != LLM_BODY_CHUNKED) {
            n = (size_t) (end - p);
            if (c->body_mode == LLM_BODY_LENGTH && n > c->left) {
                n = (size_t) c->left;
            }
            if (n && llm_http_body(lg, c, p, n) != 0) {
                return -1;
            }
            c->in_pos += n;
            c->left -= c->body_mode == LLM_BODY_LENGTH ? n : 0;

            if (c->body_mode == LLM_BODY_LENGTH && c->left == 0) {
                goto done;
            }
            break;
        }

        switch (c->chunk_state) {

        case LLM_CHUNK_SIZE:
        case LLM_CHUNK_TRAILER:
            nl = memchr(p, '\n', (size_t) (end - p));
            if (nl == NULL) {
                if (end - p > 4096) {
                    llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                                   "chunk size line too long");
                    return -1;
                }
                goto more;
            }
            c->in_pos += (size_t) (nl + 1 - p);

            if (c->chunk_state == LLM_CHUNK_TRAILER) {
                if (nl == p || (nl == p + 1 && *p == '\r')) {
                    goto done;
                }
                continue;          /* a trailer field: ignored */
            }

            size = 0;
            n = 0;
            while (p < nl) {
                int  d;

                if (*p >= '0' && *p <= '9') {
                    d = *p - '0';
                } else if ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'f') {
                    d = (*p | 0x20) - 'a' + 10;
                } else {
                    break;
                }
                if (size > (UINT64_MAX >> 4)) {
                    n = 0;
                    break;
                }
                size = size * 16 + (uint64_t) d;
                n++;
                p++;
            }
            if (n == 0 || (p < nl && *p != ';' && *p != '\r'
                           && *p != ' ' && *p != '\t'))
            {
                llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                               "bad chunk size");
                return -1;
            }

            if (size == 0) {
                c->chunk_state = LLM_CHUNK_TRAILER;
            } else {
                c->left = size;
                c->chunk_state = LLM_CHUNK_DATA;
            }
            continue;

        case LLM_CHUNK_DATA:
            n = (size_t) (end - p);
            if (n == 0) {
                goto more;
            }
            if (n > c->left) {
                n = (size_t) c->left;
            }
            if (llm_http_body(lg, c, p, n) != 0) {
                return -1;
            }
            c->in_pos += n;
            c->left -= n;
            if (c->left == 0) {
                c->chunk_state = LLM_CHUNK_CRLF;
            }
            continue;

        default: /* LLM_CHUNK_CRLF */
            if (end - p < 2) {
                goto more;
            }
            if (p[0] != '\r' || p[1] != '\n') {
                llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                               "no CRLF after chunk data");
                return -1;
            }
            c->in_pos += 2;
            c->chunk_state = LLM_CHUNK_SIZE;
            continue;
        }

    done:

        llm_http_done(lg, c);

        if (c->close) {
            llm_http_close(lg, c);
            if (llm_lg_may_issue(lg, llm_now_us())) {
                llm_http_start(lg, c);
            }
            return -1;
        }

        if (c->in_pos < c->in.len) {
            llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                           "bytes after the end of a response");
            return -1;
        }

        c->in.len = 0;
        c->in_pos = 0;

        if (llm_lg_may_issue(lg, llm_now_us())) {
            llm_http_start(lg, c);
            if (c->state == LLM_CONN_CLOSED) {
                return -1;
            }
        }
        return 0;
    }

more:

    /* keep only what is not parsed yet */
    if (c->in_pos > 0) {
        memmove(c->in.data, c->in.data + c->in_pos, c->in.len - c->in_pos);
        c->in.len -= c->in_pos;
        c->in_pos = 0;
    }

    return 0;
}


static int
llm_http_ieq(const char *a, size_t alen, const char *b)
{
    return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}


static int
llm_http_has_token(const char *v, size_t len, const char *tok)
{
    size_t  n = strlen(tok);

    for (size_t i = 0; i + n <= len; i++) {
        if (strncasecmp(v + i, tok, n) == 0) {
            return 1;
        }
    }
    return 0;
}


/*
 * Parses the status line and the header fields once they are all in.
 * Returns 1 when done (state BODY, or the response already ended), 0 when
 * more bytes are needed, -1 when the connection was closed.
 */
static int
llm_http_headers(llm_lg_t *lg, llm_lg_conn_t *c)
{
    int          minor, status, length_seen, chunked;
    char        *p, *end, *hend, *line, *colon, *v, *vend;
    uint64_t     length;

    p = c->in.data + c->in_pos;
    end = c->in.data + c->in.len;

    hend = memmem(p, (size_t) (end - p), "\r\n\r\n", 4);
    if (hend == NULL) {
        if (end - p > 65536) {
            llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                           "header block over 64 KB");
            return -1;
        }
        return 0;
    }

    if (end - p < 12 || memcmp(p, "HTTP/1.", 7) != 0
        || (p[7] != '0' && p[7] != '1') || p[8] != ' '
        || p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9'
        || p[11] < '0' || p[11] > '9')
    {
        llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED, "bad status line");
        return -1;
    }

    minor = p[7] - '0';
    status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');

    c->req.status = status;
    c->close = minor == 0;
    c->sse = 0;
    length_seen = 0;
    chunked = 0;
    length = 0;

    line = (char *) memchr(p, '\n', (size_t) (hend + 2 - p)) + 1;

    while (line < hend + 2) {
        char  *eol = memchr(line, '\n', (size_t) (hend + 2 - line));

        if (eol == NULL) {
            break;
        }
        vend = eol;
        if (vend > line && vend[-1] == '\r') {
            vend--;
        }

        colon = memchr(line, ':', (size_t) (vend - line));
        if (colon == NULL) {
            llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                           "header line without a colon");
            return -1;
        }

        v = colon + 1;
        while (v < vend && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) {
            vend--;
        }

        if (llm_http_ieq(line, (size_t) (colon - line), "content-length")) {
            char  *q;

            errno = 0;
            length = strtoull(v, &q, 10);
            if (q == v || q != vend || errno != 0) {
                llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED,
                               "bad Content-Length");
                return -1;
            }
            length_seen = 1;

        } else if (llm_http_ieq(line, (size_t) (colon - line),
                                "transfer-encoding"))
        {
            chunked = llm_http_has_token(v, (size_t) (vend - v),
                                         "chunked");

        } else if (llm_http_ieq(line, (size_t) (colon - line),
                                "connection"))
        {
            if (llm_http_has_token(v, (size_t) (vend - v), "close")) {
                c->close = 1;
            } else if (llm_http_has_token(v, (size_t) (vend - v),
                                          "keep-alive"))
            {
                c->close = 0;
            }

        } else if (llm_http_ieq(line, (size_t) (colon - line),
                                "content-type"))
        {
            c->sse = llm_http_has_token(v, (size_t) (vend - v),
                                        "text/event-stream");
        }

        line = eol + 1;
    }

    c->in_pos += (size_t) (hend + 4 - p);
    c->state = LLM_CONN_BODY;
    c->served++;

    if (status == 204 || status == 304 || (status >= 100 && status < 200)) {
        if (status < 200) {
            /* an interim response: the real one follows */
            c->state = LLM_CONN_HEADERS;
            return 1;
        }
        c->body_mode = LLM_BODY_LENGTH;
        c->left = 0;

    } else if (chunked) {
        c->body_mode = LLM_BODY_CHUNKED;
        c->chunk_state = LLM_CHUNK_SIZE;

    } else if (length_seen) {
        c->body_mode = LLM_BODY_LENGTH;
        c->left = length;

    } else {
        c->body_mode = LLM_BODY_EOF;
        c->close = 1;
    }

    if (c->body_mode == LLM_BODY_LENGTH && c->left == 0) {
        /* an empty body: finish through the body path */
        llm_http_done(lg, c);

        if (c->close) {
            llm_http_close(lg, c);
            if (llm_lg_may_issue(lg, llm_now_us())) {
                llm_http_start(lg, c);
            }
            return -1;
        }

        c->in.len = 0;
        c->in_pos = 0;
        if (llm_lg_may_issue(lg, llm_now_us())) {
            llm_http_start(lg, c);
            if (c->state == LLM_CONN_CLOSED) {
                return -1;
            }
        }
        return 0;
    }

    return 1;
}


/* n decoded body bytes at p; returns 0, or -1 when c was closed */
static int
llm_http_body(llm_lg_t *lg, llm_lg_conn_t *c, const char *p, size_t n)
{
    char    *line, *nl, *end, *d;
    size_t   len, used;

    if (llm_buf_append(&c->body, p, n) != 0) {
        llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED, "body over 16 MB");
        return -1;
    }

    if (!c->sse || c->req.status != 200) {
        return 0;
    }

    /* SSE: split what is complete into lines, dispatch on blank lines */

    line = c->body.data;
    end = c->body.data + c->body.len;

    while (line < end && (nl = memchr(line, '\n', (size_t) (end - line)))) {
        len = (size_t) (nl - line);
        if (len && line[len - 1] == '\r') {
            len--;
        }

        if (len == 0) {
            if (c->event.len && llm_http_sse_event(lg, c) != 0) {
                return -1;
            }
            c->event.len = 0;

        } else if (len >= 5 && memcmp(line, "data:", 5) == 0) {
            d = line + 5;
            if (len > 5 && *d == ' ') {
                d++;
            }
            if (c->event.len && llm_buf_append(&c->event, "\n", 1) != 0) {
                goto toobig;
            }
            if (llm_buf_append(&c->event, d, len - (size_t) (d - line))
                != 0)
            {
                goto toobig;
            }
        }

        /* comments (":...") and other fields (event:, id:) are ignored */

        line = nl + 1;
    }

    used = (size_t) (line - c->body.data);
    if (used) {
        memmove(c->body.data, line, c->body.len - used);
        c->body.len -= used;
    }

    return 0;

toobig:

    llm_http_abort(lg, c, LLM_LG_ERR_MALFORMED, "SSE event over 16 MB");
    return -1;
}


/* the text of choices[0]: "text", or chat's delta/message "content" */
static const char *
llm_json_text(json_t *root, int chat)
{
    json_t  *choices, *ch, *v;

    choices = json_object_get(root, "choices");
    if (!json_is_array(choices) || json_array_size(choices) == 0) {
        return NULL;
    }

    ch = json_array_get(choices, 0);
    if (!json_is_object(ch)) {
        return NULL;
    }

    if (!chat) {
        v = json_object_get(ch, "text");

    } else {
        v = json_object_get(ch, "delta");
        if (v == NULL) {
            v = json_object_get(ch, "message");
        }
        if (!json_is_object(v)) {
            return NULL;
        }
        v = json_object_get(v, "content");
        if (v == NULL || json_is_null(v)) {
            return "";           /* the last delta, or a role only */
        }
    }

    return json_is_string(v) ? json_string_value(v) : NULL;
}


static void
llm_json_usage(json_t *root, llm_lg_req_t *rq)
{
    json_t  *usage, *v;

    usage = json_object_get(root, "usage");
    if (!json_is_object(usage)) {
        return;
    }

    v = json_object_get(usage, "completion_tokens");
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        rq->tokens = (uint64_t) json_integer_value(v);
        rq->usage = 1;
    }
}


/* one SSE event's data is in c->event */
static int
llm_http_sse_event(llm_lg_t *lg, llm_lg_conn_t *c)
{
    json_t        *root, *choices;
    const char    *text;
    json_error_t   err;

    if (c->event.len == 6 && memcmp(c->event.data, "[DONE]", 6) == 0) {
        if (c->req.done) {
            llm_lg_fail(lg, &c->req, LLM_LG_ERR_MALFORMED,
                        "a second [DONE]");
        }
        c->req.done = 1;
        return 0;
    }

    if (c->req.done) {
        llm_lg_fail(lg, &c->req, LLM_LG_ERR_MALFORMED,
                    "an event after [DONE]");
        return 0;
    }

    root = json_loadb(c->event.data, c->event.len, 0, &err);
    if (!json_is_object(root)) {
        llm_lg_fail(lg, &c->req, LLM_LG_ERR_MALFORMED,
                    "an SSE event that is not a JSON object: %.*s",
                    (int) (c->event.len > 200 ? 200 : c->event.len),
                    c->event.data);
        json_decref(root);
        return 0;
    }

    if (json_object_get(root, "error") != NULL) {
        llm_lg_fail(lg, &c->req, LLM_LG_ERR_EVENT, "an error event: %.*s",
                    (int) (c->event.len > 300 ? 300 : c->event.len),
                    c->event.data);
        json_decref(root);
        return 0;
    }

    llm_json_usage(root, &c->req);

    /* the usage chunk of include_usage has no choices */
    choices = json_object_get(root, "choices");
    text = llm_json_text(root, lg->chat);

    if (text == NULL
        && !(json_is_array(choices) && json_array_size(choices) == 0))
    {
        llm_lg_fail(lg, &c->req, LLM_LG_ERR_MALFORMED,
                    "an SSE event without choices[0] text: %.*s",
                    (int) (c->event.len > 200 ? 200 : c->event.len),
                    c->event.data);

    } else if (text != NULL && text[0] != '\0') {
        llm_lg_text(lg, &c->req, c->t_read);
    }

    json_decref(root);
    return 0;
}


/* the response's body is complete */
static void
llm_http_done(llm_lg_t *lg, llm_lg_conn_t *c)
{
    json_t        *root;
    const char    *text;
    json_error_t   err;

    c->busy = 0;
    c->state = LLM_CONN_IDLE;

    if (c->req.status != 200) {
        llm_lg_fail(lg, &c->req, LLM_LG_ERR_STATUS, "HTTP %d: %.*s",
                    c->req.status,
                    (int) (c->body.len > 300 ? 300 : c->body.len),
                    c->body.data ? c->body.data : "");

    } else if (c->sse) {
        if (c->body.len || c->event.len) {
            llm_lg_fail(lg, &c->req, LLM_LG_ERR_MALFORMED,
                        "the stream ended inside an event");

        } else if (!c->req.done) {
            llm_lg_fail(lg, &c->req, LLM_LG_ERR_MALFORMED,
                        "the stream ended without [DONE]");
        }

    } else {
        root = json_loadb(c->body.data ? c->body.data : "", c->body.len, 0,
                          &err);

        if (!json_is_object(root)) {
            llm_lg_fail(lg, &c->req, LLM_LG_ERR_MALFORMED,
                        "a body that is not a JSON object: %s", err.text);

        } else if (json_object_get(root, "error") != NULL) {
            llm_lg_fail(lg, &c->req, LLM_LG_ERR_EVENT,
                        "an error object with status 200");

        } else {
            text = llm_json_text(root, lg->chat);
            if (text == NULL) {
                llm_lg_fail(lg, &c->req, LLM_LG_ERR_MALFORMED,
                            "a body without choices[0] text");
            } else {
                llm_json_usage(root, &c->req);
                if (!c->req.usage) {
                    c->req.tokens = text[0] != '\0';
                    c->req.text_events = c->req.tokens;
                }
            }
        }

        json_decref(root);
    }

    c->body.len = 0;
    c->event.len = 0;

    llm_lg_finish(lg, &c->req, c->t_read ? c->t_read : llm_now_us());
}


/* the request on c failed in a way that leaves the connection unusable */
static void
llm_http_abort(llm_lg_t *lg, llm_lg_conn_t *c, int err, const char *what)
{
    int  busy = c->busy;

    llm_http_close(lg, c);
    c->in.len = 0;
    c->in_pos = 0;
    c->body.len = 0;
    c->event.len = 0;

    if (!busy) {
        return;
    }

    c->busy = 0;
    llm_lg_fail(lg, &c->req, err, "%s", what);
    llm_lg_finish(lg, &c->req, llm_now_us());

    /* the main loop starts the next one; later if connecting failed */
    c->pending = 1;
    c->start_at = llm_now_us()
                  + (err == LLM_LG_ERR_IO && c->served == 0 ? 10000 : 0);
}


/* --- direct mode: the engine through shared memory ----------------------- */

static int
llm_direct_run(llm_lg_t *lg)
{
    int                  n, waiting, timeout;
    char                 err[256];
    uint64_t             now, grace;
    llm_lg_stream_t     *s;
    struct epoll_event   ev, evs[8];

    if (llm_client_connect(&lg->client, lg->direct, err, sizeof(err)) != 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 2;
    }

    if (fcntl(lg->client.my_bell, F_SETFL,
              fcntl(lg->client.my_bell, F_GETFL) | O_NONBLOCK) == -1)
    {
        fprintf(stderr, "loadgen: fcntl: %s\n", strerror(errno));
        return 2;
    }

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u32 = 0;
    if (epoll_ctl(lg->ep, EPOLL_CTL_ADD, lg->client.my_bell, &ev) == -1) {
        return 2;
    }
    ev.data.u32 = 1;
    if (epoll_ctl(lg->ep, EPOLL_CTL_ADD, lg->client.sock, &ev) == -1) {
        return 2;
    }

    lg->streams = calloc((size_t) lg->conns, sizeof(llm_lg_stream_t));
    if (lg->streams == NULL) {
        return 2;
    }

    now = llm_now_us();
    for (int i = 0; i < lg->conns; i++) {
        lg->streams[i].slot = -1;
        if (llm_lg_may_issue(lg, now)) {
            llm_direct_start(lg, &lg->streams[i], now);
        }
    }

    grace = 0;

    for ( ;; ) {
        now = llm_now_us();

        if (!lg->stopping && !llm_lg_may_issue(lg, now)) {
            lg->stopping = 1;
            grace = now + (uint64_t) (lg->timeout * 1e6);
            if (lg->duration > 0 && now < lg->t_stop) {
                lg->t_stop = now;          /* interrupted */
            }
        }

        if (lg->stopping && lg->inflight == 0) {
            break;
        }

        waiting = 0;
        for (int i = 0; i < lg->conns; i++) {
            s = &lg->streams[i];
            if (!s->busy) {
                continue;
            }

            if (now - s->req.t_start > (uint64_t) (lg->timeout * 1e6)
                || (lg->stopping && now > grace))
            {
                llm_lg_fail(lg, &s->req, LLM_LG_ERR_TIMEOUT, "timed out");
                if (s->slot >= 0) {
                    llm_client_release(&lg->client, (uint32_t) s->slot,
                                       s->gen);
                }
                s->busy = 0;
                s->slot = -1;
                llm_lg_finish(lg, &s->req, now);
                continue;
            }

            if (s->slot < 0) {
                /* no slot was free: try again */
                llm_direct_start(lg, s, now);
                waiting += s->slot < 0;
            }
        }

        if (lg->interval > 0 && now >= lg->t_next_report) {
            llm_lg_report(lg, now);
        }

        timeout = waiting ? 1 : 50;
        n = epoll_wait(lg->ep, evs, 8, timeout);
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            fprintf(stderr, "loadgen: epoll_wait: %s\n", strerror(errno));
            return 2;
        }

        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == 1) {
                char     b;
                ssize_t  r;

                r = recv(lg->client.sock, &b, 1, MSG_DONTWAIT);
                if (r == 0
                    || (r == -1 && errno != EAGAIN && errno != EINTR))
                {
                    fprintf(stderr, "loadgen: the engine closed its "
                            "socket\n");
                    for (int k = 0; k < lg->conns; k++) {
                        s = &lg->streams[k];
                        if (s->busy) {
                            llm_lg_fail(lg, &s->req, LLM_LG_ERR_IO,
                                        "the engine went away");
                            s->busy = 0;
                            llm_lg_finish(lg, &s->req, now);
                        }
                    }
                    return 1;
                }
            }
        }

        /* the bell, or a timer: look at every slot in flight */
        llm_client_clear_bell(&lg->client);

        for (int i = 0; i < lg->conns; i++) {
            s = &lg->streams[i];
            if (s->busy && s->slot >= 0) {
                llm_direct_drain(lg, s);
            }
        }
    }

    return 0;
}


/* starts (or retries) a request on s */
static void
llm_direct_start(llm_lg_t *lg, llm_lg_stream_t *s, uint64_t now)
{
    if (!s->busy) {
        memset(&s->req, 0, sizeof(s->req));
        s->req.t_start = now;
        s->busy = 1;
        lg->issued++;
        lg->inflight++;

        if (llm_lg_body(lg, &s->body, 1) != 0) {
            fprintf(stderr, "loadgen: out of memory\n");
            exit(2);
        }
    }

    s->slot = llm_client_submit(&lg->client, s->body.data, s->body.len,
                                &s->gen);
}


static void
llm_direct_drain(llm_lg_t *lg, llm_lg_stream_t *s)
{
    int              rc, text, end;
    uint64_t         now;
    llm_event_t      ev;
    llm_ev_done_t    d;
    llm_ev_error_t   e;
    static uint64_t  buf[LLM_EVENT_MAX / 8];

    text = 0;
    end = 0;
    now = llm_now_us();

    while (!end) {
        rc = llm_client_event(&lg->client, (uint32_t) s->slot, &ev, buf);

        if (rc == LLM_RING_EMPTY) {
            break;
        }

        if (rc != LLM_RING_OK) {
            llm_lg_fail(lg, &s->req, LLM_LG_ERR_MALFORMED,
                        "corrupt event ring");
            end = 1;
            break;
        }

        switch (ev.type) {

        case LLM_EV_TOKEN:
            if (ev.len < sizeof(llm_ev_token_t)) {
                llm_lg_fail(lg, &s->req, LLM_LG_ERR_MALFORMED,
                            "short TOKEN event");
                end = 1;
                break;
            }
            s->req.tokens++;
            text |= ev.len > sizeof(llm_ev_token_t);
            break;

        case LLM_EV_LOGPROBS:
            break;

        case LLM_EV_DONE:
            if (ev.len < sizeof(d)) {
                llm_lg_fail(lg, &s->req, LLM_LG_ERR_MALFORMED,
                            "short DONE event");
            } else {
                memcpy(&d, buf, sizeof(d));
                s->req.tokens = d.completion_tokens;
                s->req.usage = 1;
                s->req.done = 1;
            }
            end = 1;
            break;

        case LLM_EV_ERROR:
            memset(&e, 0, sizeof(e));
            memcpy(&e, buf, ev.len < sizeof(e) ? ev.len : sizeof(e));
            llm_lg_fail(lg, &s->req, LLM_LG_ERR_EVENT,
                        "ERROR event: %u %.28s: %.*s", e.status, e.type,
                        (int) (ev.len > sizeof(e) ? ev.len - sizeof(e) : 0),
                        (char *) buf + sizeof(e));
            end = 1;
            break;

        default:
            llm_lg_fail(lg, &s->req, LLM_LG_ERR_MALFORMED,
                        "unknown event type %u", ev.type);
            end = 1;
            break;
        }
    }

    /* tokens taken in one pass are one chunk, as the module sends them */
    if (text && lg->stream) {
        llm_lg_text(lg, &s->req, now);
    }

    if (!end) {
        llm_client_drained(&lg->client, (uint32_t) s->slot);
        return;
    }

    llm_client_release(&lg->client, (uint32_t) s->slot, s->gen);
    s->busy = 0;
    s->slot = -1;
    llm_lg_finish(lg, &s->req, now);

    if (llm_lg_may_issue(lg, now)) {
        llm_direct_start(lg, s, now);
    }
}


/* --stats: the engine's counters and its slots by state */
static int
llm_direct_stats(llm_lg_t *lg)
{
    char           err[256];
    uint32_t       states[LLM_SLOT_CANCELLED + 1];
    llm_client_t  *c = &lg->client;

    static const char  *names[LLM_STAT_MAX] = {
        [LLM_STAT_REQUESTS] = "requests",
        [LLM_STAT_REQUESTS_FAILED] = "requests_failed",
        [LLM_STAT_PROMPT_TOKENS] = "prompt_tokens",
        [LLM_STAT_COMPLETION_TOKENS] = "completion_tokens",
        [LLM_STAT_CACHED_TOKENS] = "cached_tokens",
        [LLM_STAT_RUNNING] = "running",
        [LLM_STAT_CANCELLED] = "cancelled",
        [LLM_STAT_RECLAIMED] = "reclaimed",
        [LLM_STAT_STEPS] = "steps",
        [LLM_STAT_WAITING] = "waiting",
        [LLM_STAT_KV_BLOCKS] = "kv_blocks",
        [LLM_STAT_KV_USED] = "kv_used",
        [LLM_STAT_KV_CACHED] = "kv_cached",
        [LLM_STAT_PREFIX_LOOKUPS] = "prefix_lookups",
        [LLM_STAT_PREFIX_HITS] = "prefix_hits",
        [LLM_STAT_PREEMPTIONS] = "preemptions",
        [LLM_STAT_STEP_TOKENS] = "step_tokens",
        [LLM_STAT_STEP_US] = "step_us",
        [LLM_STAT_REDIS_HITS] = "redis_hits"
    };
    static const char  *slot_names[] = {
        "free", "claimed", "submitted", "running", "finished", "cancelled"
    };

    if (llm_client_connect(c, lg->direct, err, sizeof(err)) != 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        return 2;
    }

    printf("engine_epoch: %llu\n", (unsigned long long) c->h->epoch);
    printf("slots: %u\n", c->h->n_slots);

    /* counters this program has no name for go by their index */
    for (int i = 0; i < LLM_STAT_MAX; i++) {
        if (names[i] != NULL) {
            printf("stat_%s: %llu\n", names[i],
                   (unsigned long long) llm_client_stat(c, i));
        } else if (llm_client_stat(c, i) != 0) {
            printf("stat_%d: %llu\n", i,
                   (unsigned long long) llm_client_stat(c, i));
        }
    }

    llm_client_slot_states(c, states);
    for (int i = 0; i <= LLM_SLOT_CANCELLED; i++) {
        printf("slots_%s: %u\n", slot_names[i], states[i]);
    }

    llm_client_close(c);
    return 0;
}


/* --- output -------------------------------------------------------------- */

static void
llm_lg_report(llm_lg_t *lg, uint64_t now)
{
    double    dt;
    uint64_t  errors = 0;

    for (int i = 1; i < LLM_LG_ERR_N; i++) {
        errors += lg->errors[i];
    }

    dt = (double) (now - lg->last_report_t) / 1e6;

    fprintf(stderr, "loadgen: t=%.0fs completed=%llu errors=%llu "
            "inflight=%llu req/s=%.1f\n",
            (double) (now - lg->t0) / 1e6,
            (unsigned long long) lg->completed,
            (unsigned long long) errors,
            (unsigned long long) lg->inflight,
            dt > 0 ? (double) (lg->completed - lg->last_report_requests) / dt
                   : 0.0);

    lg->last_report_requests = lg->completed;
    lg->last_report_t = now;
    lg->t_next_report = now + (uint64_t) (lg->interval * 1e6);
}


static void
llm_lg_pcts(const char *name, const llm_hist_t *h)
{
    printf("%s_ms_p50: %.3f\n", name, (double) llm_hist_pct(h, 0.50) / 1e3);
    printf("%s_ms_p90: %.3f\n", name, (double) llm_hist_pct(h, 0.90) / 1e3);
    printf("%s_ms_p99: %.3f\n", name, (double) llm_hist_pct(h, 0.99) / 1e3);
    printf("%s_ms_max: %.3f\n", name, (double) h->max / 1e3);
    printf("%s_ms_mean: %.3f\n", name,
           h->n ? (double) h->sum / (double) h->n / 1e3 : 0.0);
}


static void
llm_lg_summary(llm_lg_t *lg)
{
    double    secs, rps, tps;
    uint64_t  errors, end;

    errors = 0;
    for (int i = 1; i < LLM_LG_ERR_N; i++) {
        errors += lg->errors[i];
    }

    /* the window: from the end of the warm-up to the stop, or to the
     * last completion when counting requests */
    end = lg->duration > 0 ? lg->t_stop : lg->t_end;
    secs = end > lg->t_warm ? (double) (end - lg->t_warm) / 1e6 : 0.0;
    rps = secs > 0 ? (double) lg->requests / secs : 0.0;
    tps = secs > 0 ? (double) lg->tokens / secs : 0.0;

    printf("mode: %s\n", lg->direct ? "direct" : "http");
    if (lg->direct) {
        printf("target: unix:%s\n", lg->direct);
    } else {
        printf("target: http://%s:%s%s\n", lg->host, lg->port, lg->path);
    }
    printf("connections: %d\n", lg->conns);
    printf("stream: %d\n", lg->stream);
    if (lg->max_tokens > lg->min_tokens) {
        printf("max_tokens: %d..%d\n", lg->min_tokens, lg->max_tokens);
    } else {
        printf("max_tokens: %d\n", lg->min_tokens);
    }
    printf("warmup_s: %.2f\n", lg->warmup);
    printf("duration_s: %.2f\n", secs);
    printf("requests: %llu\n", (unsigned long long) lg->requests);
    printf("requests_issued: %llu\n", (unsigned long long) lg->issued);
    printf("requests_completed: %llu\n",
           (unsigned long long) lg->completed);
    printf("errors: %llu\n", (unsigned long long) errors);
    for (int i = 1; i < LLM_LG_ERR_N; i++) {
        printf("errors_%s: %llu\n", llm_lg_err_names[i],
               (unsigned long long) lg->errors[i]);
    }
    if (!lg->direct) {
        printf("connects: %llu\n", (unsigned long long) lg->connects);
    }
    printf("req_per_s: %.1f\n", rps);
    printf("completion_tokens: %llu\n", (unsigned long long) lg->tokens);
    printf("tokens_per_s: %.1f\n", tps);
    llm_lg_pcts("latency", &lg->latency);
    llm_lg_pcts("ttft", &lg->ttft);
    llm_lg_pcts("itl", &lg->itl);
    printf("itl_samples: %llu\n", (unsigned long long) lg->itl.n);
    if (lg->first_error[0]) {
        printf("first_error: %s\n", lg->first_error);
    }

    if (lg->markdown) {
        printf("| %s | %d | %.1f | %.0f | %.2f | %.2f | %.2f | %.2f "
               "| %.2f | %llu |\n",
               lg->markdown, lg->conns, rps, tps,
               (double) llm_hist_pct(&lg->latency, 0.50) / 1e3,
               (double) llm_hist_pct(&lg->latency, 0.99) / 1e3,
               (double) llm_hist_pct(&lg->ttft, 0.50) / 1e3,
               (double) llm_hist_pct(&lg->itl, 0.50) / 1e3,
               (double) llm_hist_pct(&lg->itl, 0.99) / 1e3,
               (unsigned long long) errors);
    }

    fflush(stdout);
}


static void
llm_lg_usage(FILE *f)
{
    fprintf(f,
        "usage: loadgen [options] [http://HOST:PORT[/PATH]]\n"
        "       loadgen --direct SOCKET [options]\n"
        "       loadgen --direct SOCKET --stats\n"
        "\n"
        "  -c, --connections N   concurrent clients (1)\n"
        "  -d, --duration S      measure for S seconds (10, unless -n)\n"
        "  -n, --requests R      stop after R requests in all\n"
        "  -w, --warmup S        run S seconds first, not measured (0)\n"
        "      --model NAME      model (stories)\n"
        "      --prompt TEXT     prompt (\"Once upon a time\")\n"
        "      --max-tokens N    max_tokens, or MIN..MAX drawn per request"
        " (24)\n"
        "      --temperature T   (0)\n"
        "      --stream          stream with server-sent events\n"
        "      --no-usage        do not ask for usage in streams; count"
        " chunks\n"
        "      --chat            /v1/chat/completions with one user"
        " message\n"
        "      --seed N          for max_tokens ranges (1)\n"
        "      --timeout S       per request, and grace at the end (60)\n"
        "      --interval S      progress line on stderr every S seconds\n"
        "      --markdown LABEL  also print a markdown table row:\n"
        "                        | LABEL | conns | req/s | tok/s | p50 ms |"
        " p99 ms |\n"
        "                        TTFT p50 | ITL p50 | ITL p99 | errors |\n"
        "      --direct SOCKET   drive llm-engine serve through shared"
        " memory\n"
        "      --stats           with --direct: print the engine's"
        " counters\n"
        "                        and slots by state, then exit\n"
        "\n"
        "The URL defaults to http://127.0.0.1:8080/v1/completions.\n");
}


int
main(int argc, char **argv)
{
    int                  c, rc;
    char                *end;
    llm_lg_t            *lg;
    static llm_lg_t      lg_storage;     /* not freed by early returns */
    struct sigaction     sa;

    enum {
        OPT_MODEL = 256, OPT_PROMPT, OPT_MAX_TOKENS, OPT_TEMPERATURE,
        OPT_STREAM, OPT_NO_USAGE, OPT_CHAT, OPT_SEED, OPT_TIMEOUT,
        OPT_INTERVAL, OPT_MARKDOWN, OPT_DIRECT, OPT_STATS
    };

    static const struct option  opts[] = {
        { "connections", required_argument, NULL, 'c' },
        { "duration",    required_argument, NULL, 'd' },
        { "requests",    required_argument, NULL, 'n' },
        { "warmup",      required_argument, NULL, 'w' },
        { "model",       required_argument, NULL, OPT_MODEL },
        { "prompt",      required_argument, NULL, OPT_PROMPT },
        { "max-tokens",  required_argument, NULL, OPT_MAX_TOKENS },
        { "temperature", required_argument, NULL, OPT_TEMPERATURE },
        { "stream",      no_argument,       NULL, OPT_STREAM },
        { "no-usage",    no_argument,       NULL, OPT_NO_USAGE },
        { "chat",        no_argument,       NULL, OPT_CHAT },
        { "seed",        required_argument, NULL, OPT_SEED },
        { "timeout",     required_argument, NULL, OPT_TIMEOUT },
        { "interval",    required_argument, NULL, OPT_INTERVAL },
        { "markdown",    required_argument, NULL, OPT_MARKDOWN },
        { "direct",      required_argument, NULL, OPT_DIRECT },
        { "stats",       no_argument,       NULL, OPT_STATS },
        { "help",        no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    lg = &lg_storage;

    lg->url = "http://127.0.0.1:8080";
    lg->model = "stories";
    lg->prompt = "Once upon a time";
    lg->conns = 1;
    lg->usage = 1;
    lg->min_tokens = 24;
    lg->max_tokens = 24;
    lg->timeout = 60;
    lg->seed = 1;

    while ((c = getopt_long(argc, argv, "c:d:n:w:h", opts, NULL)) != -1) {
        switch (c) {

        case 'c':
            lg->conns = (int) strtol(optarg, &end, 10);
            if (*end || lg->conns < 1 || lg->conns > LLM_LG_MAX_CONNS) {
                fprintf(stderr, "loadgen: bad --connections: %s\n", optarg);
                return 2;
            }
            break;

        case 'd':
            lg->duration = strtod(optarg, &end);
            if (*end || !(lg->duration > 0)) {
                fprintf(stderr, "loadgen: bad --duration: %s\n", optarg);
                return 2;
            }
            break;

        case 'n':
            lg->max_requests = strtoull(optarg, &end, 10);
            if (*end || lg->max_requests == 0) {
                fprintf(stderr, "loadgen: bad --requests: %s\n", optarg);
                return 2;
            }
            break;

        case 'w':
            lg->warmup = strtod(optarg, &end);
            if (*end || lg->warmup < 0) {
                fprintf(stderr, "loadgen: bad --warmup: %s\n", optarg);
                return 2;
            }
            break;

        case OPT_MODEL:
            lg->model = optarg;
            break;

        case OPT_PROMPT:
            lg->prompt = optarg;
            break;

        case OPT_MAX_TOKENS:
            lg->min_tokens = (int) strtol(optarg, &end, 10);
            lg->max_tokens = lg->min_tokens;
            if (strncmp(end, "..", 2) == 0) {
                lg->max_tokens = (int) strtol(end + 2, &end, 10);
            }
            if (*end || lg->min_tokens < 1
                || lg->max_tokens < lg->min_tokens)
            {
                fprintf(stderr, "loadgen: bad --max-tokens: %s\n", optarg);
                return 2;
            }
            break;

        case OPT_TEMPERATURE:
            lg->temperature = strtod(optarg, &end);
            if (*end || lg->temperature < 0) {
                fprintf(stderr, "loadgen: bad --temperature: %s\n", optarg);
                return 2;
            }
            break;

        case OPT_STREAM:
            lg->stream = 1;
            break;

        case OPT_NO_USAGE:
            lg->usage = 0;
            break;

        case OPT_CHAT:
            lg->chat = 1;
            break;

        case OPT_SEED:
            lg->seed = strtoull(optarg, &end, 10);
            if (*end) {
                fprintf(stderr, "loadgen: bad --seed: %s\n", optarg);
                return 2;
            }
            break;

        case OPT_TIMEOUT:
            lg->timeout = strtod(optarg, &end);
            if (*end || !(lg->timeout > 0)) {
                fprintf(stderr, "loadgen: bad --timeout: %s\n", optarg);
                return 2;
            }
            break;

        case OPT_INTERVAL:
            lg->interval = strtod(optarg, &end);
            if (*end || lg->interval < 0) {
                fprintf(stderr, "loadgen: bad --interval: %s\n", optarg);
                return 2;
            }
            break;

        case OPT_MARKDOWN:
            lg->markdown = optarg;
            break;

        case OPT_DIRECT:
            lg->direct = optarg;
            break;

        case OPT_STATS:
            lg->stats_only = 1;
            break;

        case 'h':
            llm_lg_usage(stdout);
            return 0;

        default:
            llm_lg_usage(stderr);
            return 2;
        }
    }

    if (optind < argc) {
        lg->url = argv[optind++];
    }
    if (optind < argc) {
        llm_lg_usage(stderr);
        return 2;
    }

    if (lg->stats_only) {
        if (lg->direct == NULL) {
            fprintf(stderr, "loadgen: --stats needs --direct SOCKET\n");
            return 2;
        }
        return llm_direct_stats(lg);
    }

    if (lg->duration == 0 && lg->max_requests == 0) {
        lg->duration = 10;
    }

    if (lg->direct == NULL && llm_lg_parse_url(lg) != 0) {
        return 2;
    }

    lg->rng = lg->seed * 0x9e3779b97f4a7c15ull + 1;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    /* INT/TERM: stop sending, finish what is in flight, report */
    sa.sa_handler = llm_lg_stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    lg->ep = epoll_create1(EPOLL_CLOEXEC);
    if (lg->ep == -1) {
        fprintf(stderr, "loadgen: epoll_create1: %s\n", strerror(errno));
        return 2;
    }

    lg->t0 = llm_now_us();
    lg->t_warm = lg->t0 + (uint64_t) (lg->warmup * 1e6);
    lg->t_stop = lg->t_warm + (uint64_t) (lg->duration * 1e6);
    lg->last_report_t = lg->t0;
    lg->t_next_report = lg->t0 + (uint64_t) (lg->interval * 1e6);

    rc = lg->direct ? llm_direct_run(lg) : llm_http_run(lg);
    if (rc != 2) {
        llm_lg_summary(lg);

        for (int i = 1; i < LLM_LG_ERR_N; i++) {
            if (lg->errors[i]) {
                rc = 1;
            }
        }
    }

    llm_lg_free(lg);

    return rc;
}


/* what the run allocated, so that LeakSanitizer sees a clean exit */
static void
llm_lg_free(llm_lg_t *lg)
{
    llm_lg_conn_t  *c;

    for (int i = 0; lg->conn != NULL && i < lg->conns; i++) {
        c = &lg->conn[i];
        if (c->fd != -1) {
            close(c->fd);
        }
        free(c->out.data);
        free(c->in.data);
        free(c->body.data);
        free(c->event.data);
    }

    for (int i = 0; lg->streams != NULL && i < lg->conns; i++) {
        free(lg->streams[i].body.data);
    }

    if (lg->addr != NULL) {
        freeaddrinfo(lg->addr);
    }

    llm_client_close(&lg->client);
    free(lg->conn);
    free(lg->streams);
    close(lg->ep);
}
