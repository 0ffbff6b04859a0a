
/*
 * Copyright (C) ngx_llm developers
 *
 * ngx_http_llm_limit_module: request and token limits per key, shared
 * by every worker and node through Redis.
 *
 *     llm_redis       ADDRESS [password=P] [db=N] [timeout=T];    http
 *     llm_limit_zone  name=NAME key=VALUE [requests=N r/s|r/m]
 *                     [tokens=N t/m] [burst=N] [fail=open|closed]
 *                     [size=SIZE];                                http
 *     llm_limit       NAME;                        http, server, location
 *
 * Each key of a zone has two buckets, refilled continuously: requests
 * (N per second or minute, N + burst deep) and tokens (N per minute, N
 * deep).  A request is admitted when every bucket of every zone of its
 * location holds at least one; it then takes one request from each.
 * Tokens are paid when the request ends, with the prompt and completion
 * counts the engine reported, and a bucket may go below zero: the key
 * waits until it has refilled.
 *
 * The check runs in the preaccess phase as one EVALSHA of the script
 * below over every zone at once, atomic across workers and nodes; the
 * request is parked until the reply and resumed from it.  When Redis is
 * unavailable (down, slow, or not configured) fail=open zones count in a
 * shared memory zone of this node, and fail=closed zones answer 503.
 * The token charge is a second call of the same script from the log
 * phase.  Every response of a limited location carries the x-ratelimit-*
 * headers of its tightest zone; refusals are 429 with Retry-After and an
 * OpenAI error object.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"
#include "ngx_http_llm_redis.h"


#define NGX_HTTP_LLM_LIMIT_KEY_MAX      4096
#define NGX_HTTP_LLM_LIMIT_TIMEOUT      200
#define NGX_HTTP_LLM_LIMIT_SIZE         1048576
#define NGX_HTTP_LLM_DAY_MS             86400000

#define NGX_HTTP_LLM_LIMIT_CHECKING     0
#define NGX_HTTP_LLM_LIMIT_WAITING      1
#define NGX_HTTP_LLM_LIMIT_DONE         2

/* what the local limiter does to a bucket */
#define NGX_HTTP_LLM_LIMIT_PEEK         0
#define NGX_HTTP_LLM_LIMIT_TAKE         1
#define NGX_HTTP_LLM_LIMIT_CHARGE       2


typedef struct {
    ngx_rbtree_t                    rbtree;
    ngx_rbtree_node_t               sentinel;
    ngx_queue_t                     queue;        /* least recently used
                                                     last */
} ngx_http_llm_limit_shctx_t;


/* one key's buckets in the local limiter */
typedef struct {
    ngx_str_node_t                  sn;           /* sn.str is data */
    ngx_queue_t                     queue;
    ngx_msec_t                      last;         /* when refilled */
    double                          requests;     /* in the bucket */
    double                          tokens;
    u_char                          data[1];
} ngx_http_llm_limit_node_t;


typedef struct {
    ngx_str_t                       name;
    ngx_http_complex_value_t        key;
    ngx_uint_t                      requests;     /* per period, 0: none */
    ngx_msec_t                      period;       /* 1000 or 60000 */
    ngx_uint_t                      burst;
    ngx_uint_t                      tokens;       /* per minute, 0: none */
    ngx_flag_t                      fail_closed;
    size_t                          size;

    ngx_shm_zone_t                 *shm_zone;
    ngx_http_llm_limit_shctx_t     *sh;
    ngx_slab_pool_t                *shpool;

    /* where a zone was first named, for an llm_limit of an unknown one */
    u_char                         *file;
    ngx_uint_t                      line;
    unsigned                        defined:1;
} ngx_http_llm_limit_zone_t;


typedef struct {
    ngx_http_llm_redis_t           *redis;        /* NULL: this node only */
    ngx_http_llm_redis_script_t    *script;
    ngx_array_t                     zones;        /* ngx_http_llm_limit_
                                                     zone_t * */
} ngx_http_llm_limit_main_conf_t;


typedef struct {
    ngx_array_t                    *limits;       /* ngx_http_llm_limit_
                                                     zone_t * */
} ngx_http_llm_limit_loc_conf_t;


/* a zone's buckets for this request's key, as last counted */
typedef struct {
    ngx_http_llm_limit_zone_t      *zone;
    ngx_str_t                       key;
    ngx_int_t                       requests;     /* left, -1: no limit */
    ngx_msec_int_t                  requests_reset;   /* ms until full */
    ngx_int_t                       tokens;
    ngx_msec_int_t                  tokens_reset;
    unsigned                        refused_requests:1;
    unsigned                        refused_tokens:1;
} ngx_http_llm_limit_state_t;


typedef struct {
    ngx_http_request_t             *request;
    ngx_http_llm_limit_state_t     *states;
    ngx_uint_t                      n;
    ngx_http_llm_redis_token_t      token;
    ngx_uint_t                      phase;        /* NGX_HTTP_LLM_LIMIT_* */
    ngx_int_t                       status;       /* NGX_DECLINED: admitted,
                                                     429 or 503 */
    ngx_msec_t                      retry;        /* 429: ms to wait */
    unsigned                        counted:1;    /* states hold counts */
    unsigned                        charged:1;
} ngx_http_llm_limit_ctx_t;


static ngx_int_t ngx_http_llm_limit_handler(ngx_http_request_t *r);
static ngx_http_llm_limit_ctx_t *ngx_http_llm_limit_get_ctx(
    ngx_http_request_t *r);
static ngx_http_llm_limit_ctx_t *ngx_http_llm_limit_create_ctx(
    ngx_http_request_t *r, ngx_array_t *limits);
static void ngx_http_llm_limit_cleanup(void *data);
static ngx_str_t *ngx_http_llm_limit_args(ngx_http_request_t *r,
    ngx_http_llm_limit_ctx_t *ctx, const char *mode, uint64_t amount,
    ngx_uint_t tokens_only, ngx_uint_t *nkeys);
static void ngx_http_llm_limit_reply(void *data, redisReply *reply);
static ngx_int_t ngx_http_llm_limit_parse(ngx_http_llm_limit_ctx_t *ctx,
    redisReply *reply);
static void ngx_http_llm_limit_fallback(ngx_http_llm_limit_ctx_t *ctx);
static ngx_int_t ngx_http_llm_limit_local(ngx_http_llm_limit_state_t *st,
    ngx_uint_t op, uint64_t amount, ngx_msec_t *wait);
static void ngx_http_llm_limit_expire(ngx_http_llm_limit_zone_t *zone,
    ngx_uint_t force);
static ngx_int_t ngx_http_llm_limit_decide(ngx_http_request_t *r,
    ngx_http_llm_limit_ctx_t *ctx);
static ngx_int_t ngx_http_llm_limit_refuse(ngx_http_request_t *r,
    ngx_http_llm_limit_ctx_t *ctx);
static ngx_int_t ngx_http_llm_limit_log_handler(ngx_http_request_t *r);
static void ngx_http_llm_limit_charged(void *data, redisReply *reply);
static void ngx_http_llm_limit_script_error(ngx_log_t *log,
    redisReply *reply);
static ngx_int_t ngx_http_llm_limit_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_limit_add_header(ngx_http_request_t *r,
    const char *name, ngx_int_t value, ngx_msec_int_t ms);
static u_char *ngx_http_llm_limit_duration(u_char *p, ngx_msec_int_t ms);

static ngx_int_t ngx_http_llm_limit_init(ngx_conf_t *cf);
static void *ngx_http_llm_limit_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_llm_limit_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_llm_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_llm_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_http_llm_limit_zone_t *ngx_http_llm_limit_zone_add(ngx_conf_t *cf,
    ngx_str_t *name);
static char *ngx_http_llm_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_limit_rate(ngx_str_t *value, ngx_str_t *next,
    char unit, ngx_uint_t *n, ngx_msec_t *period, ngx_uint_t *used_next);
static char *ngx_http_llm_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_limit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_llm_limit_init_process(ngx_cycle_t *cycle);
static void ngx_http_llm_limit_exit_process(ngx_cycle_t *cycle);


/*
 * KEYS: each zone's hash for the request's key {r, t, ts}.
 * ARGV: "check" or "charge", tokens to charge, then for each key:
 * requests per period, period (ms), request depth, tokens per minute;
 * a zero depth is no limit.  Returns allowed, ms to wait, and for each
 * key: requests left, ms until full, tokens left, ms until full (-1 for
 * no limit).  Time is Redis's, the same for every node.
 */

static ngx_str_t  ngx_http_llm_limit_lua = ngx_string(
    "local mode, amount = ARGV[1], tonumber(ARGV[2])\n"
    "local clock = redis.call('TIME')\n"
    "local now = tonumber(clock[1]) * 1000"
    " + math.floor(tonumber(clock[2]) / 1000)\n"
    "local ok, wait, z = 1, 0, {}\n"
    "for i = 1, #KEYS do\n"
    "  local a = 2 + (i - 1) * 4\n"
    "  local b = {rd = tonumber(ARGV[a + 3]), td = tonumber(ARGV[a + 4])}\n"
    "  b.rr = tonumber(ARGV[a + 1]) / tonumber(ARGV[a + 2])\n"
    "  b.tr = b.td / 60000\n"
    "  local v = redis.call('HMGET', KEYS[i], 'r', 't', 'ts')\n"
    "  local dt = math.max(0, now - (tonumber(v[3]) or now))\n"
    "  b.r = math.min(b.rd, (tonumber(v[1]) or b.rd) + dt * b.rr)\n"
    "  b.t = math.min(b.td, (tonumber(v[2]) or b.td) + dt * b.tr)\n"
    "  if mode == 'check' then\n"
    "    if b.rd > 0 and b.r < 1 then\n"
    "      ok = 0; wait = math.max(wait, (1 - b.r) / b.rr)\n"
    "    end\n"
    "    if b.td > 0 and b.t < 1 then\n"
    "      ok = 0; wait = math.max(wait, (1 - b.t) / b.tr)\n"
    "    end\n"
    "  end\n"
    "  z[i] = b\n"
    "end\n"
    "local out = {ok, math.ceil(wait)}\n"
    "for i = 1, #KEYS do\n"
    "  local b, rs, ts = z[i], -1, -1\n"
    "  if mode == 'charge' then\n"
    "    b.t = b.t - amount\n"
    "  elseif ok == 1 and b.rd > 0 then\n"
    "    b.r = b.r - 1\n"
    "  end\n"
    "  if b.rd > 0 then rs = math.ceil((b.rd - b.r) / b.rr) end\n"
    "  if b.td > 0 then ts = math.ceil((b.td - b.t) / b.tr) end\n"
    "  if mode == 'charge' or ok == 1 then\n"
    "    redis.call('HSET', KEYS[i], 'r', b.r, 't', b.t, 'ts', now)\n"
    "    redis.call('PEXPIRE', KEYS[i], math.max(rs, ts, 0) + 1000)\n"
    "  end\n"
    "  out[#out + 1] = b.rd > 0 and math.max(0, math.floor(b.r)) or -1\n"
    "  out[#out + 1] = rs\n"
    "  out[#out + 1] = b.td > 0 and math.max(0, math.floor(b.t)) or -1\n"
    "  out[#out + 1] = ts\n"
    "end\n"
    "return out\n");


static ngx_command_t  ngx_http_llm_limit_commands[] = {

    { ngx_string("llm_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_llm_limit_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_llm_limit_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_llm_limit_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_llm_limit_init,               /* postconfiguration */

    ngx_http_llm_limit_create_main_conf,   /* create main configuration */
    ngx_http_llm_limit_init_main_conf,     /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_llm_limit_create_loc_conf,    /* create location configuration */
    ngx_http_llm_limit_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_llm_limit_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_limit_module_ctx,        /* module context */
    ngx_http_llm_limit_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_llm_limit_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_llm_limit_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/* --- the check ------------------------------------------------------------ */


static ngx_int_t
ngx_http_llm_limit_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                       *args;
    ngx_uint_t                       nkeys;
    ngx_http_llm_limit_ctx_t        *ctx;
    ngx_http_llm_limit_loc_conf_t   *lllcf;
    ngx_http_llm_limit_main_conf_t  *lmcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_llm_limit_get_ctx(r);

    if (ctx != NULL) {
        /* resumed by the reply, or after an internal redirect */

        if (ctx->phase == NGX_HTTP_LLM_LIMIT_WAITING) {
            return NGX_AGAIN;
        }

        return ngx_http_llm_limit_decide(r, ctx);
    }

    lllcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_limit_module);

    if (lllcf->limits == NULL) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_llm_limit_create_ctx(r, lllcf->limits);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->n == 0) {
        /* every key was empty: nothing limits this request */
        ctx->phase = NGX_HTTP_LLM_LIMIT_DONE;
        ctx->status = NGX_DECLINED;
        return NGX_DECLINED;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_limit_module);

    if (ngx_http_llm_redis_usable(lmcf->redis)) {

        args = ngx_http_llm_limit_args(r, ctx, "check", 0, 0, &nkeys);
        if (args == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        rc = ngx_http_llm_redis_eval(lmcf->redis, lmcf->script, nkeys, args,
                                     nkeys + 2 + 4 * nkeys,
                                     ngx_http_llm_limit_reply, ctx,
                                     &ctx->token);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_OK) {
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                           "llm limit: %ui zones asked of redis", ctx->n);

            /* parked, as limit_req parks a delayed request */

            ctx->phase = NGX_HTTP_LLM_LIMIT_WAITING;

            r->main->count++;
            r->read_event_handler = ngx_http_test_reading;
            r->write_event_handler = ngx_http_request_empty_handler;

            return NGX_DONE;
        }
    }

    ngx_http_llm_limit_fallback(ctx);

    return ngx_http_llm_limit_decide(r, ctx);
}


/* the context survives internal redirects through its pool cleanup */

static ngx_http_llm_limit_ctx_t *
ngx_http_llm_limit_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_http_llm_limit_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_limit_module);

    if (ctx != NULL || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_llm_limit_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_llm_limit_module);
            return ctx;
        }
    }

    return NULL;
}


static ngx_http_llm_limit_ctx_t *
ngx_http_llm_limit_create_ctx(ngx_http_request_t *r, ngx_array_t *limits)
{
    ngx_str_t                    key;
    ngx_uint_t                   i;
    ngx_pool_cleanup_t          *cln;
    ngx_http_llm_limit_ctx_t    *ctx;
    ngx_http_llm_limit_zone_t  **zones;
    ngx_http_llm_limit_state_t  *st;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_limit_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     ctx->n = 0;
     *     ctx->token = { NULL, 0 };
     *     ctx->phase = NGX_HTTP_LLM_LIMIT_CHECKING;
     *     ctx->counted = 0;
     *     ctx->charged = 0;
     */

    ctx->request = r;
    ctx->status = NGX_DECLINED;

    ctx->states = ngx_pcalloc(r->pool,
                              limits->nelts
                              * sizeof(ngx_http_llm_limit_state_t));
    if (ctx->states == NULL) {
        return NULL;
    }

    zones = limits->elts;

    for (i = 0; i < limits->nelts; i++) {
        if (ngx_http_complex_value(r, &zones[i]->key, &key) != NGX_OK) {
            return NULL;
        }

        if (key.len == 0) {
            continue;
        }

        if (key.len > NGX_HTTP_LLM_LIMIT_KEY_MAX) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "the key of llm_limit_zone \"%V\" is more than "
                          "%d bytes, the zone does not count it",
                          &zones[i]->name, NGX_HTTP_LLM_LIMIT_KEY_MAX);
            continue;
        }

        st = &ctx->states[ctx->n++];

        st->zone = zones[i];
        st->key = key;
        st->requests = -1;
        st->requests_reset = -1;
        st->tokens = -1;
        st->tokens_reset = -1;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_llm_limit_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_llm_limit_module);

    return ctx;
}


/* the request is gone: a reply still on its way must find no one */

static void
ngx_http_llm_limit_cleanup(void *data)
{
    ngx_http_llm_limit_ctx_t *ctx = data;

    ngx_http_llm_redis_cancel(&ctx->token);
}


/*
 * The script's arguments: "llm:limit:ZONE:KEY" for every zone (with a
 * token limit only, if asked), then mode, amount and four numbers per
 * key.
 */

static ngx_str_t *
ngx_http_llm_limit_args(ngx_http_request_t *r, ngx_http_llm_limit_ctx_t *ctx,
    const char *mode, uint64_t amount, ngx_uint_t tokens_only,
    ngx_uint_t *nkeys)
{
    u_char                      *p;
    ngx_str_t                   *args, *a;
    ngx_uint_t                   i, n;
    ngx_http_llm_limit_zone_t   *zone;
    ngx_http_llm_limit_state_t  *st;

    args = ngx_palloc(r->pool, (2 + 5 * ctx->n) * sizeof(ngx_str_t));
    if (args == NULL) {
        return NULL;
    }

    n = 0;

    for (i = 0; i < ctx->n; i++) {
        st = &ctx->states[i];

        if (tokens_only && st->zone->tokens == 0) {
            continue;
        }

        a = &args[n++];

        a->len = sizeof("llm:limit::") - 1 + st->zone->name.len + st->key.len;
        a->data = ngx_pnalloc(r->pool, a->len);
        if (a->data == NULL) {
            return NULL;
        }

        p = ngx_sprintf(a->data, "llm:limit:%V:", &st->zone->name);
        ngx_memcpy(p, st->key.data, st->key.len);
    }

    *nkeys = n;

    a = &args[n];

    a[0].data = (u_char *) mode;
    a[0].len = ngx_strlen(mode);

    a[1].data = ngx_pnalloc(r->pool, NGX_INT64_LEN
                                     + ctx->n * 4 * NGX_INT_T_LEN);
    if (a[1].data == NULL) {
        return NULL;
    }

    p = a[1].data;
    a[1].len = ngx_sprintf(p, "%uL", amount) - p;
    p += a[1].len;

    a += 2;

    for (i = 0; i < ctx->n; i++) {
        zone = ctx->states[i].zone;

        if (tokens_only && zone->tokens == 0) {
            continue;
        }

        a[0].data = p;
        p = ngx_sprintf(p, "%ui", zone->requests);
        a[0].len = p - a[0].data;

        a[1].data = p;
        p = ngx_sprintf(p, "%M", zone->period);
        a[1].len = p - a[1].data;

        a[2].data = p;
        p = ngx_sprintf(p, "%ui",
                        zone->requests ? zone->requests + zone->burst : 0);
        a[2].len = p - a[2].data;

        a[3].data = p;
        p = ngx_sprintf(p, "%ui", zone->tokens);
        a[3].len = p - a[3].data;

        a += 4;
    }

    return args;
}


/* Redis answered (or not): decide, and resume the request */

static void
ngx_http_llm_limit_reply(void *data, redisReply *reply)
{
    ngx_http_llm_limit_ctx_t *ctx = data;

    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = r->connection;

    ctx->token.cmd = NULL;

    if (reply == NULL || ngx_http_llm_limit_parse(ctx, reply) != NGX_OK) {
        ngx_http_llm_limit_fallback(ctx);
    }

    ctx->phase = NGX_HTTP_LLM_LIMIT_DONE;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "llm limit: resumed, status %i", ctx->status);

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    /* our reference; the request still holds its own */
    ngx_http_finalize_request(r, NGX_DONE);

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


static long long
ngx_http_llm_limit_clamp(long long v, long long lo, long long hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}


static ngx_int_t
ngx_http_llm_limit_parse(ngx_http_llm_limit_ctx_t *ctx, redisReply *reply)
{
    ngx_uint_t                   i, j;
    redisReply                 **e;
    ngx_http_llm_limit_state_t  *st;

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_llm_limit_script_error(ctx->request->connection->log,
                                        reply);
        return NGX_ERROR;
    }

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2 + 4 * ctx->n)
    {
        goto invalid;
    }

    e = reply->element;

    for (i = 0; i < reply->elements; i++) {
        if (e[i]->type != REDIS_REPLY_INTEGER) {
            goto invalid;
        }
    }

    /*
     * Whatever the server says, the counts stay within the zone's
     * bucket and the waits within a day, so that a broken or hostile
     * Redis cannot put absurd numbers into the headers.
     */

    ctx->status = e[0]->integer ? NGX_DECLINED : NGX_HTTP_TOO_MANY_REQUESTS;
    ctx->retry = (ngx_msec_t) ngx_http_llm_limit_clamp(e[1]->integer, 0,
                                                       NGX_HTTP_LLM_DAY_MS);
    ctx->counted = 1;

    for (i = 0; i < ctx->n; i++) {
        st = &ctx->states[i];
        j = 2 + 4 * i;

        st->requests = -1;
        st->tokens = -1;

        if (st->zone->requests) {
            st->requests = (ngx_int_t) ngx_http_llm_limit_clamp(
                               e[j]->integer, 0,
                               st->zone->requests + st->zone->burst);
        }

        if (st->zone->tokens) {
            st->tokens = (ngx_int_t) ngx_http_llm_limit_clamp(
                             e[j + 2]->integer, 0, st->zone->tokens);
        }

        st->requests_reset = (ngx_msec_int_t) ngx_http_llm_limit_clamp(
                                 e[j + 1]->integer, 0, NGX_HTTP_LLM_DAY_MS);
        st->tokens_reset = (ngx_msec_int_t) ngx_http_llm_limit_clamp(
                               e[j + 3]->integer, 0, NGX_HTTP_LLM_DAY_MS);

        if (ctx->status != NGX_DECLINED) {
            st->refused_requests = (st->requests == 0
                                    && st->zone->requests != 0);
            st->refused_tokens = (st->tokens == 0 && st->zone->tokens != 0);
        }
    }

    return NGX_OK;

invalid:

    ngx_http_llm_limit_script_error(ctx->request->connection->log, reply);

    return NGX_ERROR;
}


/*
 * Redis is unavailable: zones with fail=closed refuse (503), the others
 * count on this node, all or none as far as the shared zones allow.
 */

static void
ngx_http_llm_limit_fallback(ngx_http_llm_limit_ctx_t *ctx)
{
    ngx_int_t                    allowed;
    ngx_msec_t                   wait, w;
    ngx_uint_t                   i;
    ngx_http_llm_limit_state_t  *st;

    for (i = 0; i < ctx->n; i++) {
        if (ctx->states[i].zone->fail_closed) {
            ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
            ctx->counted = 0;
            return;
        }
    }

    allowed = 1;
    wait = 0;

    for (i = 0; i < ctx->n; i++) {
        st = &ctx->states[i];

        if (!ngx_http_llm_limit_local(st, NGX_HTTP_LLM_LIMIT_PEEK, 0, &w)) {
            allowed = 0;
            wait = ngx_max(wait, w);
        }
    }

    if (allowed) {
        for (i = 0; i < ctx->n; i++) {
            (void) ngx_http_llm_limit_local(&ctx->states[i],
                                            NGX_HTTP_LLM_LIMIT_TAKE, 0, &w);
        }
    }

    ctx->status = allowed ? NGX_DECLINED : NGX_HTTP_TOO_MANY_REQUESTS;
    ctx->retry = wait;
    ctx->counted = 1;
}


/*
 * The local limiter: the script's buckets in this node's shared memory.
 * Returns whether the key may pass (PEEK), and fills st.
 */

static ngx_int_t
ngx_http_llm_limit_local(ngx_http_llm_limit_state_t *st, ngx_uint_t op,
    uint64_t amount, ngx_msec_t *wait)
{
    double                      rr, rd, tr, td, r, t, w;
    uint32_t                    hash;
    ngx_int_t                   ok;
    ngx_msec_t                  now;
    ngx_msec_int_t              dt;
    ngx_http_llm_limit_node_t  *node;
    ngx_http_llm_limit_zone_t  *zone;

    zone = st->zone;

    rd = zone->requests ? (double) (zone->requests + zone->burst) : 0;
    rr = (double) zone->requests / zone->period;
    td = (double) zone->tokens;
    tr = td / 60000;

    now = ngx_current_msec;
    hash = ngx_crc32_short(st->key.data, st->key.len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_http_llm_limit_expire(zone, 0);

    node = (ngx_http_llm_limit_node_t *)
               ngx_str_rbtree_lookup(&zone->sh->rbtree, &st->key, hash);

    if (node == NULL) {
        node = ngx_slab_alloc_locked(zone->shpool,
                                     offsetof(ngx_http_llm_limit_node_t, data)
                                     + st->key.len);

        if (node == NULL) {
            ngx_http_llm_limit_expire(zone, 1);

            node = ngx_slab_alloc_locked(zone->shpool,
                                      offsetof(ngx_http_llm_limit_node_t, data)
                                      + st->key.len);
        }

        if (node == NULL) {
            ngx_shmtx_unlock(&zone->shpool->mutex);

            /* a full zone admits rather than refuse everyone */

            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "llm_limit_zone \"%V\" is full", &zone->name);
            *wait = 0;
            return 1;
        }

        ngx_memcpy(node->data, st->key.data, st->key.len);

        node->sn.node.key = hash;
        node->sn.str.len = st->key.len;
        node->sn.str.data = node->data;
        node->last = now;
        node->requests = rd;
        node->tokens = td;

        ngx_rbtree_insert(&zone->sh->rbtree, &node->sn.node);

    } else {
        ngx_queue_remove(&node->queue);
    }

    ngx_queue_insert_head(&zone->sh->queue, &node->queue);

    dt = (ngx_msec_int_t) (now - node->last);
    if (dt < 0) {
        dt = 0;
    }

    r = ngx_min(rd, node->requests + dt * rr);
    t = ngx_min(td, node->tokens + dt * tr);

    ok = 1;
    w = 0;

    if (op == NGX_HTTP_LLM_LIMIT_PEEK) {
        if (rd > 0 && r < 1) {
            ok = 0;
            w = ngx_max(w, (1 - r) / rr);
            st->refused_requests = 1;
        }

        if (td > 0 && t < 1) {
            ok = 0;
            w = ngx_max(w, (1 - t) / tr);
            st->refused_tokens = 1;
        }

    } else if (op == NGX_HTTP_LLM_LIMIT_TAKE) {
        if (rd > 0) {
            r -= 1;
        }

    } else {
        t -= (double) amount;
    }

    node->requests = r;
    node->tokens = t;
    node->last = now;

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (rd > 0) {
        st->requests = (r < 0) ? 0 : (ngx_int_t) r;
        st->requests_reset = (ngx_msec_int_t) ((rd - r) / rr + 0.999);
    }

    if (td > 0) {
        st->tokens = (t < 0) ? 0 : (ngx_int_t) t;
        st->tokens_reset = (ngx_msec_int_t) ((td - t) / tr + 0.999);
    }

    *wait = (ngx_msec_t) (w + 0.999);

    return ok;
}


/*
 * Frees the least recently used keys: up to two whose buckets are full
 * again (as good as absent), or, when the zone is out of memory, up to
 * eight whatever their state.
 */

static void
ngx_http_llm_limit_expire(ngx_http_llm_limit_zone_t *zone, ngx_uint_t force)
{
    double                      rr, rd, tr, td;
    ngx_uint_t                  n;
    ngx_queue_t                *q;
    ngx_msec_int_t              dt;
    ngx_http_llm_limit_node_t  *node;

    rd = zone->requests ? (double) (zone->requests + zone->burst) : 0;
    rr = (double) zone->requests / zone->period;
    td = (double) zone->tokens;
    tr = td / 60000;

    for (n = 0; n < (force ? 8 : 2); n++) {

        if (ngx_queue_empty(&zone->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&zone->sh->queue);
        node = ngx_queue_data(q, ngx_http_llm_limit_node_t, queue);

        if (!force) {
            dt = (ngx_msec_int_t) (ngx_current_msec - node->last);

            if ((rd > 0 && node->requests + dt * rr < rd)
                || (td > 0 && node->tokens + dt * tr < td))
            {
                return;
            }
        }

        ngx_queue_remove(q);
        ngx_rbtree_delete(&zone->sh->rbtree, &node->sn.node);
        ngx_slab_free_locked(zone->shpool, node);
    }
}


/* admitted: on to the next handler; otherwise the refusal, and done */

static ngx_int_t
ngx_http_llm_limit_decide(ngx_http_request_t *r,
    ngx_http_llm_limit_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->status == NGX_DECLINED) {
        return NGX_DECLINED;
    }

    rc = ngx_http_llm_limit_refuse(r, ctx);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_llm_limit_refuse(ngx_http_request_t *r,
    ngx_http_llm_limit_ctx_t *ctx)
{
    u_char                      *p, *last;
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_table_elt_t             *h;
    ngx_http_llm_error_t         err;
    ngx_http_llm_limit_state_t  *st;

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ctx->status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        ngx_http_llm_error(&err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                           NULL, NULL,
                           "Rate limits cannot be checked right now. "
                           "Please try again later.");

        /* ngx_http_llm_send_error() adds Retry-After: 1 to a 503 */

        return ngx_http_llm_send_error(r, &err);
    }

    /* name the first refusing zone and what ran out */

    st = &ctx->states[0];

    for (i = 0; i < ctx->n; i++) {
        if (ctx->states[i].refused_requests
            || ctx->states[i].refused_tokens)
        {
            st = &ctx->states[i];
            break;
        }
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm limit: zone \"%V\" refused the request (%s)",
                  &st->zone->name,
                  st->refused_requests ? "requests" : "tokens");

    p = ngx_pnalloc(r->pool, 256 + st->zone->name.len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (st->refused_requests) {
        last = ngx_sprintf(p, "Rate limit reached for requests in zone "
                           "\"%V\": limit %ui per %s. Please try again in ",
                           &st->zone->name,
                           st->zone->requests + st->zone->burst,
                           st->zone->period == 1000 ? "second" : "minute");
    } else {
        last = ngx_sprintf(p, "Rate limit reached for tokens in zone "
                           "\"%V\": limit %ui per minute. "
                           "Please try again in ",
                           &st->zone->name, st->zone->tokens);
    }

    last = ngx_http_llm_limit_duration(last, (ngx_msec_int_t) ctx->retry);
    *last++ = '.';

    ngx_http_llm_error(&err, NGX_HTTP_TOO_MANY_REQUESTS,
                       "rate_limit_exceeded", NULL, "rate_limit_exceeded",
                       "");

    err.message.data = p;
    err.message.len = last - p;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (h->value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.len = ngx_sprintf(h->value.data, "%M",
                               ngx_max((ctx->retry + 999) / 1000, 1))
                   - h->value.data;

    return ngx_http_llm_send_error(r, &err);
}


/* --- the charge ----------------------------------------------------------- */


/*
 * The request ends, streamed or not: its tokens are paid, with the
 * counts the engine reported (those of a stream cut short too).
 */

static ngx_int_t
ngx_http_llm_limit_log_handler(ngx_http_request_t *r)
{
    uint64_t                         amount;
    ngx_int_t                        rc;
    ngx_str_t                       *args;
    ngx_msec_t                       wait;
    ngx_uint_t                       i, nkeys, need;
    ngx_http_llm_ctx_t              *lctx;
    ngx_http_llm_usage_t             u;
    ngx_http_llm_limit_ctx_t        *ctx;
    ngx_http_llm_limit_main_conf_t  *lmcf;

    ctx = ngx_http_llm_limit_get_ctx(r);

    if (ctx == NULL || ctx->status != NGX_DECLINED || ctx->charged) {
        return NGX_OK;
    }

    ctx->charged = 1;

    need = 0;

    for (i = 0; i < ctx->n; i++) {
        if (ctx->states[i].zone->tokens) {
            need = 1;
        }
    }

    lctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (!need || lctx == NULL) {
        return NGX_OK;
    }

    ngx_http_llm_usage(lctx, &u);

    amount = u.prompt + u.completion;

    if (amount == 0) {
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm limit: charging %uL tokens", amount);

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_limit_module);

    if (ngx_http_llm_redis_usable(lmcf->redis)) {

        args = ngx_http_llm_limit_args(r, ctx, "charge", amount, 1, &nkeys);
        if (args == NULL) {
            return NGX_ERROR;
        }

        /* nobody waits for this one: no token */

        rc = ngx_http_llm_redis_eval(lmcf->redis, lmcf->script, nkeys, args,
                                     nkeys + 2 + 4 * nkeys,
                                     ngx_http_llm_limit_charged, NULL, NULL);

        if (rc == NGX_OK) {
            return NGX_OK;
        }
    }

    for (i = 0; i < ctx->n; i++) {
        if (ctx->states[i].zone->tokens && !ctx->states[i].zone->fail_closed)
        {
            (void) ngx_http_llm_limit_local(&ctx->states[i],
                                            NGX_HTTP_LLM_LIMIT_CHARGE,
                                            amount, &wait);
        }
    }

    return NGX_OK;
}


static void
ngx_http_llm_limit_charged(void *data, redisReply *reply)
{
    /* a charge lost with the link is lost: the outage was logged */

    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        ngx_http_llm_limit_script_error(ngx_cycle->log, reply);
    }
}


/*
 * Redis refused the script (out of memory, a read-only replica after a
 * failover, ...): the request falls back as if Redis were down, and the
 * reason is logged at most once a minute, not once per request.
 */

/*
 * The script failed, or answered what it cannot have: once a minute in
 * each worker, since a broken Redis answers every request the same way.
 */

static void
ngx_http_llm_limit_script_error(ngx_log_t *log, redisReply *reply)
{
    static time_t  logged;

    if (ngx_time() - logged < 60) {
        return;
    }

    logged = ngx_time();

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "llm limit script failed in redis: %*s",
                      (size_t) reply->len, reply->str);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "llm limit script returned an unexpected reply "
                  "(type %d, %uz elements)", reply->type,
                  (size_t) (reply->type == REDIS_REPLY_ARRAY
                            ? reply->elements : 0));
}


/* --- headers -------------------------------------------------------------- */


/*
 * x-ratelimit-{limit,remaining,reset}-{requests,tokens}, from the zone
 * with the fewest left of each.
 */

static ngx_int_t
ngx_http_llm_limit_header_filter(ngx_http_request_t *r)
{
    ngx_uint_t                   i;
    ngx_http_llm_limit_ctx_t    *ctx;
    ngx_http_llm_limit_state_t  *st, *req, *tok;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_llm_limit_get_ctx(r);

    if (ctx == NULL || !ctx->counted) {
        return ngx_http_next_header_filter(r);
    }

    req = NULL;
    tok = NULL;

    for (i = 0; i < ctx->n; i++) {
        st = &ctx->states[i];

        if (st->requests >= 0
            && (req == NULL || st->requests < req->requests))
        {
            req = st;
        }

        if (st->tokens >= 0 && (tok == NULL || st->tokens < tok->tokens)) {
            tok = st;
        }
    }

    if (req) {
        if (ngx_http_llm_limit_add_header(r, "x-ratelimit-limit-requests",
                                          req->zone->requests
                                          + req->zone->burst, -1)
            != NGX_OK
            || ngx_http_llm_limit_add_header(r,
                                             "x-ratelimit-remaining-requests",
                                             req->requests, -1)
               != NGX_OK
            || ngx_http_llm_limit_add_header(r, "x-ratelimit-reset-requests",
                                             0, req->requests_reset)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (tok) {
        if (ngx_http_llm_limit_add_header(r, "x-ratelimit-limit-tokens",
                                          tok->zone->tokens, -1)
            != NGX_OK
            || ngx_http_llm_limit_add_header(r,
                                             "x-ratelimit-remaining-tokens",
                                             tok->tokens, -1)
               != NGX_OK
            || ngx_http_llm_limit_add_header(r, "x-ratelimit-reset-tokens",
                                             0, tok->tokens_reset)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


/* a number, or with ms >= 0 a duration */

static ngx_int_t
ngx_http_llm_limit_add_header(ngx_http_request_t *r, const char *name,
    ngx_int_t value, ngx_msec_int_t ms)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->value.data = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 16);
    if (h->value.data == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);

    if (ms >= 0) {
        h->value.len = ngx_http_llm_limit_duration(h->value.data, ms)
                       - h->value.data;

    } else {
        h->value.len = ngx_sprintf(h->value.data, "%i", value)
                       - h->value.data;
    }

    return NGX_OK;
}


/* as OpenAI writes them: "20ms", "1s", "1.5s", "6m0s" */

static u_char *
ngx_http_llm_limit_duration(u_char *p, ngx_msec_int_t ms)
{
    ngx_int_t  frac;

    if (ms < 0) {
        ms = 0;
    }

    if (ms < 1000) {
        return ngx_sprintf(p, "%ims", (ngx_int_t) ms);
    }

    if (ms >= 60000) {
        p = ngx_sprintf(p, "%im", (ngx_int_t) (ms / 60000));
        ms %= 60000;
    }

    p = ngx_sprintf(p, "%i", (ngx_int_t) (ms / 1000));

    frac = ms % 1000;

    if (frac) {
        p = ngx_sprintf(p, ".%03i", frac);

        while (p[-1] == '0') {
            p--;
        }
    }

    *p++ = 's';

    return p;
}


/* --- configuration -------------------------------------------------------- */


static ngx_int_t
ngx_http_llm_limit_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt             *h;
    ngx_http_core_main_conf_t       *cmcf;
    ngx_http_llm_limit_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_limit_module);

    if (lmcf->zones.nelts == 0) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_limit_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_limit_log_handler;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_llm_limit_header_filter;

    return NGX_OK;
}


static void *
ngx_http_llm_limit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_llm_limit_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_limit_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lmcf->redis = NULL;
     *     lmcf->script = NULL;
     */

    if (ngx_array_init(&lmcf->zones, cf->pool, 4,
                       sizeof(ngx_http_llm_limit_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return lmcf;
}


/* every zone llm_limit named must have been defined by llm_limit_zone */

static char *
ngx_http_llm_limit_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_llm_limit_main_conf_t *lmcf = conf;

    ngx_uint_t                   i;
    ngx_http_llm_limit_zone_t  **zones;

    zones = lmcf->zones.elts;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        if (!zones[i]->defined) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown llm_limit_zone \"%V\" in %s:%ui",
                          &zones[i]->name, zones[i]->file, zones[i]->line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_llm_limit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_llm_limit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_limit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->limits = NULL;
     */

    return conf;
}


/* as limit_req: a level with no llm_limit inherits all of its parent's */

static char *
ngx_http_llm_limit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_llm_limit_loc_conf_t *prev = parent;
    ngx_http_llm_limit_loc_conf_t *conf = child;

    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    return NGX_CONF_OK;
}


static ngx_http_llm_limit_zone_t *
ngx_http_llm_limit_zone_add(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                        i;
    ngx_http_llm_limit_zone_t        *zone, **zp;
    ngx_http_llm_limit_main_conf_t   *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_limit_module);

    zp = lmcf->zones.elts;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        if (zp[i]->name.len == name->len
            && ngx_strncmp(zp[i]->name.data, name->data, name->len) == 0)
        {
            return zp[i];
        }
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_limit_zone_t));
    if (zone == NULL) {
        return NULL;
    }

    zone->name = *name;
    zone->file = cf->conf_file->file.name.data;
    zone->line = cf->conf_file->line;

    zp = ngx_array_push(&lmcf->zones);
    if (zp == NULL) {
        return NULL;
    }

    *zp = zone;

    return zone;
}


/* llm_redis ADDRESS [password=P] [db=N] [timeout=T]; */

static char *
ngx_http_llm_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_limit_main_conf_t *lmcf = conf;

    u_char                *p;
    size_t                 len;
    ngx_int_t              n;
    ngx_str_t             *value, s;
    ngx_url_t              u;
    ngx_uint_t             i;
    ngx_http_llm_redis_t  *rd;

    if (lmcf->redis) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rd = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_redis_t));
    if (rd == NULL) {
        return NGX_CONF_ERROR;
    }

    rd->address = value[1];
    rd->timeout = NGX_CONF_UNSET_MSEC;

    if (value[1].len > sizeof("unix:") - 1
        && ngx_strncmp(value[1].data, "unix:", sizeof("unix:") - 1) == 0)
    {
        len = value[1].len - (sizeof("unix:") - 1);

        if (len >= sizeof(((struct sockaddr_un *) 0)->sun_path)
            || ngx_strlchr(value[1].data, value[1].data + value[1].len, '\0'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid llm_redis address \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }

        rd->host = ngx_pnalloc(cf->pool, len + 1);
        if (rd->host == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(rd->host, value[1].data + sizeof("unix:") - 1, len + 1);
        rd->port = 0;

    } else {

        /* resolved now: hiredis must never resolve in a worker */

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = value[1];
        u.default_port = 6379;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0
            || u.family == AF_UNIX)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in llm_redis address \"%V\"",
                               u.err ? u.err : "no address", &value[1]);
            return NGX_CONF_ERROR;
        }

        rd->host = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
        if (rd->host == NULL) {
            return NGX_CONF_ERROR;
        }

        len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                            rd->host, NGX_SOCKADDR_STRLEN, 0);
        rd->host[len] = '\0';
        rd->port = (int) ngx_inet_get_port(u.addrs[0].sockaddr);
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rd->password.data = value[i].data + 9;
            rd->password.len = value[i].len - 9;

            if (rd->password.len == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            n = ngx_atoi(value[i].data + 3, value[i].len - 3);

            if (n == NGX_ERROR) {
                goto invalid;
            }

            rd->db = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            n = ngx_parse_time(&s, 0);

            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            rd->timeout = (ngx_msec_t) n;
            continue;
        }

        goto invalid;
    }

    if (rd->timeout == NGX_CONF_UNSET_MSEC) {
        rd->timeout = NGX_HTTP_LLM_LIMIT_TIMEOUT;
    }

    lmcf->script = ngx_http_llm_redis_add_script(cf, rd,
                                                 &ngx_http_llm_limit_lua);
    if (lmcf->script == NULL) {
        return NGX_CONF_ERROR;
    }

    lmcf->redis = rd;

    return NGX_CONF_OK;

invalid:

    p = (u_char *) ngx_strlchr(value[i].data, value[i].data + value[i].len,
                               '=');

    if (p && ngx_strncmp(value[i].data, "password=", 9) == 0) {
        /* never echo a password */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid llm_redis parameter \"password=\"");

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid llm_redis parameter \"%V\"", &value[i]);
    }

    return NGX_CONF_ERROR;
}


/*
 * llm_limit_zone name=NAME key=VALUE [requests=N r/s|r/m] [tokens=N t/m]
 *                [burst=N] [fail=open|closed] [size=SIZE];
 */

static char *
ngx_http_llm_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    u_char                            *p;
    ssize_t                            size;
    ngx_int_t                          n;
    ngx_str_t                         *value, name, s, shm_name, *next;
    ngx_uint_t                         i, used, requests, tokens, burst;
    ngx_uint_t                         fail_closed;
    ngx_msec_t                         period, tperiod;
    ngx_http_llm_limit_zone_t         *zone;
    ngx_http_compile_complex_value_t   ccv;
    ngx_http_complex_value_t           key;

    value = cf->args->elts;

    ngx_str_null(&name);
    ngx_memzero(&key, sizeof(ngx_http_complex_value_t));

    requests = 0;
    tokens = 0;
    burst = 0;
    period = 0;
    fail_closed = 0;
    size = NGX_HTTP_LLM_LIMIT_SIZE;

    for (i = 1; i < cf->args->nelts; i++) {

        next = (i + 1 < cf->args->nelts) ? &value[i + 1] : NULL;

        if (ngx_strncmp(value[i].data, "name=", 5) == 0) {
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;

            if (name.len == 0) {
                goto invalid;
            }

            for (p = name.data; p < name.data + name.len; p++) {
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
                      || (*p >= '0' && *p <= '9') || *p == '_'
                      || *p == '-' || *p == '.'))
                {
                    goto invalid;
                }
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            if (s.len == 0) {
                goto invalid;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = &key;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "requests=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            if (ngx_http_llm_limit_rate(&s, next, 'r', &requests, &period,
                                        &used)
                != NGX_OK)
            {
                goto invalid;
            }

            i += used;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tokens=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            if (ngx_http_llm_limit_rate(&s, next, 't', &tokens, &tperiod,
                                        &used)
                != NGX_OK
                || tperiod != 60000)
            {
                goto invalid;
            }

            i += used;
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);

            if (n == NGX_ERROR) {
                goto invalid;
            }

            burst = n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fail=open") == 0) {
            fail_closed = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fail=closed") == 0) {
            fail_closed = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "size=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            size = ngx_parse_size(&s);

            if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"name=\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (key.value.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"key=\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (requests == 0 && tokens == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_limit_zone \"%V\" limits nothing: "
                           "give \"requests=\" or \"tokens=\"", &name);
        return NGX_CONF_ERROR;
    }

    if (burst && requests == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"burst=\" of llm_limit_zone \"%V\" needs "
                           "\"requests=\"", &name);
        return NGX_CONF_ERROR;
    }

    zone = ngx_http_llm_limit_zone_add(cf, &name);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->defined) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate llm_limit_zone \"%V\"", &name);
        return NGX_CONF_ERROR;
    }

    zone->defined = 1;
    zone->key = key;
    zone->requests = requests;
    zone->period = requests ? period : 1;
    zone->burst = burst;
    zone->tokens = tokens;
    zone->fail_closed = fail_closed;
    zone->size = size;

    shm_name.len = sizeof("llm_limit_") - 1 + name.len;
    shm_name.data = ngx_pnalloc(cf->pool, shm_name.len);
    if (shm_name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_sprintf(shm_name.data, "llm_limit_%V", &name);

    zone->shm_zone = ngx_shared_memory_add(cf, &shm_name, size,
                                           &ngx_http_llm_limit_module);
    if (zone->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->shm_zone->init = ngx_http_llm_limit_init_zone;
    zone->shm_zone->data = zone;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid llm_limit_zone parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


/*
 * "10r/s", or "10" with "r/s" as the next argument; unit is 'r' (per
 * second or minute) or 't' (per minute).
 */

static ngx_int_t
ngx_http_llm_limit_rate(ngx_str_t *value, ngx_str_t *next, char unit,
    ngx_uint_t *n, ngx_msec_t *period, ngx_uint_t *used_next)
{
    u_char     *p, *last;
    ngx_int_t   v;
    ngx_str_t   u;

    p = value->data;
    last = value->data + value->len;

    while (p < last && *p >= '0' && *p <= '9') {
        p++;
    }

    v = ngx_atoi(value->data, p - value->data);

    if (v == NGX_ERROR || v == 0) {
        return NGX_ERROR;
    }

    *used_next = 0;

    if (p < last) {
        u.data = p;
        u.len = last - p;

    } else if (next != NULL) {
        u = *next;
        *used_next = 1;

    } else {
        return NGX_ERROR;
    }

    if (u.len != 3 || u.data[0] != (u_char) unit || u.data[1] != '/') {
        return NGX_ERROR;
    }

    if (u.data[2] == 'm') {
        *period = 60000;

    } else if (u.data[2] == 's' && unit == 'r') {
        *period = 1000;

    } else {
        return NGX_ERROR;
    }

    *n = (ngx_uint_t) v;

    return NGX_OK;
}


/* llm_limit NAME; */

static char *
ngx_http_llm_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_limit_loc_conf_t *lllcf = conf;

    ngx_str_t                   *value;
    ngx_uint_t                   i;
    ngx_http_llm_limit_zone_t   *zone, **zp;

    value = cf->args->elts;

    zone = ngx_http_llm_limit_zone_add(cf, &value[1]);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (lllcf->limits == NULL) {
        lllcf->limits = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_http_llm_limit_zone_t *));
        if (lllcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    zp = lllcf->limits->elts;

    for (i = 0; i < lllcf->limits->nelts; i++) {
        if (zp[i] == zone) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate llm_limit \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    zp = ngx_array_push(lllcf->limits);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;

    return NGX_CONF_OK;
}


/* the local limiter's zone; a reload keeps the old one's counts */

static ngx_int_t
ngx_http_llm_limit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_llm_limit_zone_t  *ozone = data;

    size_t                      len;
    ngx_http_llm_limit_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_llm_limit_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_str_rbtree_insert_value);

    ngx_queue_init(&zone->sh->queue);

    len = sizeof(" in llm_limit_zone \"\"") + zone->name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in llm_limit_zone \"%V\"%Z",
                &zone->name);

    /* a full zone frees its oldest keys: no "no memory" on every miss */
    zone->shpool->log_nomem = 0;

    return NGX_OK;
}


/* --- the worker's link ---------------------------------------------------- */


static ngx_int_t
ngx_http_llm_limit_init_process(ngx_cycle_t *cycle)
{
    ngx_http_llm_limit_main_conf_t  *lmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_limit_module);

    if (lmcf == NULL || lmcf->redis == NULL || lmcf->zones.nelts == 0) {
        return NGX_OK;
    }

    return ngx_http_llm_redis_init(lmcf->redis, cycle);
}


static void
ngx_http_llm_limit_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_llm_limit_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_limit_module);

    if (lmcf == NULL || lmcf->redis == NULL || lmcf->redis->log == NULL) {
        return;
    }

    ngx_http_llm_redis_exit(lmcf->redis);
}
