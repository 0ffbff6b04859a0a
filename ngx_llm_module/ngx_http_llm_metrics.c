
/*
 * Copyright (C) ngx_llm developers
 *
 * Metrics.  A shared zone ("llm_metrics", kept across reloads) holds, per
 * engine and model version, requests by HTTP status, token counters and
 * histograms of time to first token, time per output token and request
 * duration; every worker adds to it in the log phase, under the slab
 * pool's mutex.  `llm_metrics` serves it as Prometheus text, with what
 * this worker sees of each engine: its slots by state, the requests
 * waiting for a slot, and every counter of the engine's header
 * (LLM_STAT_*).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_module.h"


#define NGX_HTTP_LLM_SERIES_MAX       64      /* engine and model pairs */
#define NGX_HTTP_LLM_STATUSES_MAX     16      /* statuses per pair */
#define NGX_HTTP_LLM_ENGINES_MAX      16
#define NGX_HTTP_LLM_BUCKETS_MAX      16
#define NGX_HTTP_LLM_NAME_MAX         LLM_MODEL_NAME_MAX

/* room left in the output buffer before a line is printed */
#define NGX_HTTP_LLM_LINE_MAX         1024
#define NGX_HTTP_LLM_OUT_SIZE         16384


typedef struct {
    uint64_t                   count[NGX_HTTP_LLM_BUCKETS_MAX];
    uint64_t                   n;
    uint64_t                   sum_us;
} ngx_http_llm_histogram_t;


typedef struct {
    u_char                     engine[NGX_HTTP_LLM_NAME_MAX];
    size_t                     engine_len;
    u_char                     model[NGX_HTTP_LLM_NAME_MAX];
    size_t                     model_len;

    ngx_uint_t                 n_statuses;
    ngx_uint_t                 status[NGX_HTTP_LLM_STATUSES_MAX];
    uint64_t                   requests[NGX_HTTP_LLM_STATUSES_MAX];

    uint64_t                   prompt_tokens;
    uint64_t                   completion_tokens;
    uint64_t                   cached_tokens;

    ngx_http_llm_histogram_t   ttft;
    ngx_http_llm_histogram_t   tpot;
    ngx_http_llm_histogram_t   duration;
} ngx_http_llm_series_t;


typedef struct {
    u_char                     name[NGX_HTTP_LLM_NAME_MAX];
    size_t                     len;
    ngx_atomic_t               waiting;
} ngx_http_llm_engine_gauge_t;


typedef struct {
    ngx_uint_t                 n_series;
    ngx_uint_t                 n_engines;
    ngx_uint_t                 dropped;      /* no room for a series */
    ngx_http_llm_series_t      series[NGX_HTTP_LLM_SERIES_MAX];
    ngx_http_llm_engine_gauge_t  engines[NGX_HTTP_LLM_ENGINES_MAX];
} ngx_http_llm_metrics_sh_t;


/* bucket upper bounds in microseconds, and as Prometheus writes them */
typedef struct {
    uint64_t                   us;
    const char                *le;
} ngx_http_llm_bound_t;


typedef struct {
    const char                *name;
    const char                *help;
    size_t                     offset;        /* of the histogram */
    ngx_http_llm_bound_t      *bounds;        /* ended by { 0, NULL } */
} ngx_http_llm_histogram_def_t;


/* an engine counter from its header, LLM_STAT_* */
typedef struct {
    ngx_uint_t                 index;
    const char                *name;
    const char                *type;
    const char                *help;
} ngx_http_llm_stat_def_t;


typedef struct {
    const char                *name;
    const char                *help;
    ngx_uint_t                 num;
    ngx_uint_t                 den;
} ngx_http_llm_ratio_def_t;


/* the text being built: a chain of buffers */
typedef struct {
    ngx_http_request_t        *request;
    ngx_chain_t               *first;
    ngx_chain_t               *last;
} ngx_http_llm_out_t;


static ngx_int_t ngx_http_llm_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_llm_metrics_log(ngx_http_request_t *r);
static ngx_http_llm_series_t *ngx_http_llm_series(
    ngx_http_llm_metrics_sh_t *sh, ngx_str_t *engine, ngx_str_t *model);
static void ngx_http_llm_series_add(ngx_http_llm_series_t *s,
    ngx_http_llm_ctx_t *ctx, ngx_uint_t status);
static void ngx_http_llm_observe(ngx_http_llm_histogram_t *h,
    ngx_http_llm_bound_t *bounds, uint64_t us);
static ngx_int_t ngx_http_llm_metrics_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_print_series(ngx_http_llm_out_t *out,
    ngx_http_llm_metrics_sh_t *sh);
static ngx_int_t ngx_http_llm_print_histograms(ngx_http_llm_out_t *out,
    ngx_http_llm_metrics_sh_t *sh);
static ngx_int_t ngx_http_llm_print_engines(ngx_http_llm_out_t *out,
    ngx_http_llm_metrics_sh_t *sh);
static ngx_int_t ngx_http_llm_print_stats(ngx_http_llm_out_t *out);
static uint64_t ngx_http_llm_stat(ngx_http_llm_engine_t *e,
    ngx_uint_t index);
static ngx_int_t ngx_http_llm_print(ngx_http_llm_out_t *out,
    const char *fmt, ...);


static ngx_str_t  ngx_http_llm_metrics_name = ngx_string("llm_metrics");
static ngx_str_t  ngx_http_llm_metrics_type =
    ngx_string("text/plain; version=0.0.4");


static ngx_http_llm_bound_t  ngx_http_llm_ttft_bounds[] = {
    { 1000, "0.001" }, { 5000, "0.005" }, { 10000, "0.01" },
    { 25000, "0.025" }, { 50000, "0.05" }, { 100000, "0.1" },
    { 250000, "0.25" }, { 500000, "0.5" }, { 1000000, "1" },
    { 2500000, "2.5" }, { 5000000, "5" }, { 10000000, "10" },
    { 30000000, "30" }, { 0, NULL }
};

static ngx_http_llm_bound_t  ngx_http_llm_tpot_bounds[] = {
    { 100, "0.0001" }, { 250, "0.00025" }, { 500, "0.0005" },
    { 1000, "0.001" }, { 2500, "0.0025" }, { 5000, "0.005" },
    { 10000, "0.01" }, { 25000, "0.025" }, { 50000, "0.05" },
    { 100000, "0.1" }, { 250000, "0.25" }, { 500000, "0.5" },
    { 1000000, "1" }, { 0, NULL }
};

static ngx_http_llm_bound_t  ngx_http_llm_duration_bounds[] = {
    { 10000, "0.01" }, { 25000, "0.025" }, { 50000, "0.05" },
    { 100000, "0.1" }, { 250000, "0.25" }, { 500000, "0.5" },
    { 1000000, "1" }, { 2500000, "2.5" }, { 5000000, "5" },
    { 10000000, "10" }, { 30000000, "30" }, { 60000000, "60" },
    { 120000000, "120" }, { 0, NULL }
};


static ngx_http_llm_histogram_def_t  ngx_http_llm_histograms[] = {

    { "llm_time_to_first_token_seconds",
      "Request start to the first token, as nginx saw it.",
      offsetof(ngx_http_llm_series_t, ttft), ngx_http_llm_ttft_bounds },

    { "llm_time_per_output_token_seconds",
      "Engine time per generated token after the first, per choice.",
      offsetof(ngx_http_llm_series_t, tpot), ngx_http_llm_tpot_bounds },

    { "llm_request_duration_seconds",
      "Request start to its end, as nginx saw it.",
      offsetof(ngx_http_llm_series_t, duration),
      ngx_http_llm_duration_bounds },

    { NULL, NULL, 0, NULL }
};


/*
 * The engine's counters by LLM_STAT_* index.  An index the engine fills
 * that is not listed here is still exported, as llm_engine_stat{index}.
 */

static ngx_http_llm_stat_def_t  ngx_http_llm_stats[] = {

    { LLM_STAT_REQUESTS, "llm_engine_requests_total", "counter",
      "Requests the engine accepted." },

    { LLM_STAT_REQUESTS_FAILED, "llm_engine_requests_failed_total",
      "counter", "Requests the engine answered with an error." },

    { LLM_STAT_PROMPT_TOKENS, "llm_engine_prompt_tokens_total", "counter",
      "Prompt tokens the engine processed." },

    { LLM_STAT_COMPLETION_TOKENS, "llm_engine_completion_tokens_total",
      "counter", "Tokens the engine generated." },

    { LLM_STAT_CACHED_TOKENS, "llm_engine_cached_tokens_total", "counter",
      "Prompt tokens found in the prefix cache." },

    { LLM_STAT_RUNNING, "llm_engine_running", "gauge",
      "Sequences running now." },

    { LLM_STAT_CANCELLED, "llm_engine_cancelled_total", "counter",
      "Sequences ended by cancellation." },

    { LLM_STAT_RECLAIMED, "llm_engine_reclaimed_slots_total", "counter",
      "Slots reclaimed from workers that died." },

    { LLM_STAT_STEPS, "llm_engine_steps_total", "counter",
      "Forward steps run." },

    { LLM_STAT_WAITING, "llm_engine_waiting", "gauge",
      "Requests submitted to the engine and not admitted yet." },

    { LLM_STAT_KV_BLOCKS, "llm_engine_kv_blocks", "gauge",
      "KV cache blocks, all models." },

    { LLM_STAT_KV_USED, "llm_engine_kv_blocks_used", "gauge",
      "KV cache blocks in use by sequences." },

    { LLM_STAT_KV_CACHED, "llm_engine_kv_blocks_cached", "gauge",
      "Unused KV cache blocks kept for the prefix cache." },

    { LLM_STAT_PREFIX_LOOKUPS, "llm_engine_prefix_lookups_total", "counter",
      "KV blocks looked up in the prefix cache." },

    { LLM_STAT_PREFIX_HITS, "llm_engine_prefix_hits_total", "counter",
      "KV blocks found in the prefix cache." },

    { LLM_STAT_PREEMPTIONS, "llm_engine_preemptions_total", "counter",
      "Sequences preempted for KV room." },

    { LLM_STAT_STEP_TOKENS, "llm_engine_step_tokens_total", "counter",
      "Tokens run through forward passes." },

    { LLM_STAT_STEP_US, "llm_engine_step_microseconds_total", "counter",
      "Time spent in forward passes." },

    { 0, NULL, NULL, NULL }
};


/* gauges the engine's counters make: numerator over denominator */

static ngx_http_llm_ratio_def_t  ngx_http_llm_ratios[] = {

    { "llm_engine_kv_usage_ratio",
      "KV cache blocks in use over all blocks.",
      LLM_STAT_KV_USED, LLM_STAT_KV_BLOCKS },

    { "llm_engine_prefix_cache_hit_ratio",
      "KV blocks found in the prefix cache over blocks looked up.",
      LLM_STAT_PREFIX_HITS, LLM_STAT_PREFIX_LOOKUPS },

    { "llm_engine_cached_tokens_ratio",
      "Prompt tokens found in the prefix cache over all prompt tokens.",
      LLM_STAT_CACHED_TOKENS, LLM_STAT_PROMPT_TOKENS },

    { NULL, NULL, 0, 0 }
};


static const char  *ngx_http_llm_slot_states[] = {
    "free", "claimed", "submitted", "running", "finished", "cancelled"
};


ngx_shm_zone_t *
ngx_http_llm_metrics_zone(ngx_conf_t *cf)
{
    size_t           size;
    ngx_shm_zone_t  *shm_zone;

    /* a fixed size, so that a reload finds the same zone and keeps it */

    size = ngx_align(sizeof(ngx_http_llm_metrics_sh_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    shm_zone = ngx_shared_memory_add(cf, &ngx_http_llm_metrics_name, size,
                                     &ngx_http_llm_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    shm_zone->init = ngx_http_llm_metrics_init_zone;

    return shm_zone;
}


static ngx_int_t
ngx_http_llm_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t            *shpool;
    ngx_http_llm_metrics_sh_t  *sh;

    if (data) {
        /* a reload: the old zone and its counters go on */
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_llm_metrics_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    shpool->data = sh;
    shm_zone->data = sh;

    return NGX_OK;
}


/* the log phase handler counts every completion and chat request */

ngx_int_t
ngx_http_llm_metrics_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_metrics_log;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_metrics_log(ngx_http_request_t *r)
{
    ngx_str_t                   model;
    ngx_uint_t                  status;
    ngx_slab_pool_t            *shpool;
    ngx_http_llm_ctx_t         *ctx;
    ngx_http_llm_series_t      *s;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_http_llm_metrics_sh_t  *sh;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_module);

    if (ctx == NULL || ctx->endpoint == 0) {
        return NGX_OK;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);

    if (lmcf->metrics == NULL) {
        return NGX_OK;
    }

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (status == 0) {
        /* nothing was sent: the client went away first */
        status = NGX_HTTP_CLIENT_CLOSED_REQUEST;
    }

    if (ctx->model_known) {
        model = ctx->model;

    } else {
        ngx_str_null(&model);
    }

    shpool = (ngx_slab_pool_t *) lmcf->metrics->shm.addr;
    sh = lmcf->metrics->data;

    ngx_shmtx_lock(&shpool->mutex);

    s = ngx_http_llm_series(sh, &ctx->engine->name, &model);

    if (s) {
        ngx_http_llm_series_add(s, ctx, status);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


/* the series of an engine and model; under the mutex */

static ngx_http_llm_series_t *
ngx_http_llm_series(ngx_http_llm_metrics_sh_t *sh, ngx_str_t *engine,
    ngx_str_t *model)
{
    size_t                  elen, mlen;
    ngx_uint_t              i;
    ngx_http_llm_series_t  *s;

    elen = ngx_min(engine->len, NGX_HTTP_LLM_NAME_MAX);
    mlen = ngx_min(model->len, NGX_HTTP_LLM_NAME_MAX);

    for (i = 0; i < sh->n_series; i++) {
        s = &sh->series[i];

        if (s->engine_len == elen && s->model_len == mlen
            && ngx_memcmp(s->engine, engine->data, elen) == 0
            && ngx_memcmp(s->model, model->data, mlen) == 0)
        {
            return s;
        }
    }

    if (sh->n_series == NGX_HTTP_LLM_SERIES_MAX) {
        sh->dropped++;
        return NULL;
    }

    s = &sh->series[sh->n_series++];

    ngx_memcpy(s->engine, engine->data, elen);
    s->engine_len = elen;
    ngx_memcpy(s->model, model->data, mlen);
    s->model_len = mlen;

    return s;
}


static void
ngx_http_llm_series_add(ngx_http_llm_series_t *s, ngx_http_llm_ctx_t *ctx,
    ngx_uint_t status)
{
    uint64_t                tokens, us;
    ngx_uint_t              i;
    ngx_time_t             *tp;
    ngx_msec_int_t          ms;
    ngx_http_request_t     *r;
    llm_ev_done_t          *d;
    ngx_http_llm_usage_t    u;

    for (i = 0; i < s->n_statuses; i++) {
        if (s->status[i] == status) {
            break;
        }
    }

    if (i == s->n_statuses && i < NGX_HTTP_LLM_STATUSES_MAX) {
        s->status[s->n_statuses++] = status;
    }

    if (i < s->n_statuses) {
        s->requests[i]++;
    }

    if (!ctx->started) {
        return;
    }

    ngx_http_llm_usage(ctx, &u);

    s->prompt_tokens += u.prompt;
    s->completion_tokens += u.completion;
    s->cached_tokens += u.cached;

    if (ctx->first_token) {
        ngx_http_llm_observe(&s->ttft, ngx_http_llm_ttft_bounds,
                             (uint64_t) ctx->ttft * 1000);
    }

    r = ctx->request;
    tp = ngx_timeofday();

    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    ngx_http_llm_observe(&s->duration, ngx_http_llm_duration_bounds,
                         (uint64_t) ngx_max(ms, 0) * 1000);

    /* the engine's own decode time, per choice that made two tokens */

    for (i = 0; i < ctx->n_choices; i++) {
        d = &ctx->choices[i].done;
        tokens = d->completion_tokens;

        if (!ctx->choices[i].finished || tokens < 2
            || d->total_us < d->ttft_us)
        {
            continue;
        }

        us = (d->total_us - d->ttft_us) / (tokens - 1);

        ngx_http_llm_observe(&s->tpot, ngx_http_llm_tpot_bounds, us);
    }
}


static void
ngx_http_llm_observe(ngx_http_llm_histogram_t *h,
    ngx_http_llm_bound_t *bounds, uint64_t us)
{
    ngx_uint_t  i;

    for (i = 0; bounds[i].le; i++) {
        if (us <= bounds[i].us) {
            break;
        }
    }

    /* i is the bucket; the one past the last bound is +Inf */

    h->count[i]++;
    h->n++;
    h->sum_us += us;
}


/* requests waiting for a slot, summed over the workers */

void
ngx_http_llm_metrics_waiting(ngx_http_llm_engine_t *e, ngx_int_t delta)
{
    size_t                        len;
    ngx_uint_t                    i;
    ngx_slab_pool_t              *shpool;
    ngx_http_llm_main_conf_t     *lmcf;
    ngx_http_llm_metrics_sh_t    *sh;
    ngx_http_llm_engine_gauge_t  *g;

    if (e->waiting_gauge == NULL) {
        lmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                                   ngx_http_llm_module);
        if (lmcf == NULL || lmcf->metrics == NULL) {
            return;
        }

        shpool = (ngx_slab_pool_t *) lmcf->metrics->shm.addr;
        sh = lmcf->metrics->data;
        len = ngx_min(e->name.len, NGX_HTTP_LLM_NAME_MAX);

        ngx_shmtx_lock(&shpool->mutex);

        for (i = 0; i < sh->n_engines; i++) {
            g = &sh->engines[i];

            if (g->len == len && ngx_memcmp(g->name, e->name.data, len) == 0)
            {
                e->waiting_gauge = &g->waiting;
                break;
            }
        }

        if (e->waiting_gauge == NULL
            && sh->n_engines < NGX_HTTP_LLM_ENGINES_MAX)
        {
            g = &sh->engines[sh->n_engines++];
            ngx_memcpy(g->name, e->name.data, len);
            g->len = len;
            e->waiting_gauge = &g->waiting;
        }

        ngx_shmtx_unlock(&shpool->mutex);

        if (e->waiting_gauge == NULL) {
            return;
        }
    }

    (void) ngx_atomic_fetch_add(e->waiting_gauge, delta);
}


/* llm_metrics; */

char *
ngx_http_llm_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_metrics_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_slab_pool_t            *shpool;
    ngx_http_llm_out_t          out;
    ngx_http_llm_main_conf_t   *lmcf;
    ngx_http_llm_metrics_sh_t  *sh, *copy;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_module);

    out.request = r;
    out.first = NULL;
    out.last = NULL;

    /* a copy taken under the mutex, printed without it */

    copy = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_metrics_sh_t));
    if (copy == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (lmcf->metrics) {
        shpool = (ngx_slab_pool_t *) lmcf->metrics->shm.addr;
        sh = lmcf->metrics->data;

        ngx_shmtx_lock(&shpool->mutex);
        ngx_memcpy(copy, sh, sizeof(ngx_http_llm_metrics_sh_t));
        ngx_shmtx_unlock(&shpool->mutex);
    }

    if (ngx_http_llm_print_series(&out, copy) != NGX_OK
        || ngx_http_llm_print_histograms(&out, copy) != NGX_OK
        || ngx_http_llm_print_engines(&out, copy) != NGX_OK
        || ngx_http_llm_print_stats(&out) != NGX_OK
        || ngx_http_llm_print(&out, "") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out.last->buf->last_buf = (r == r->main) ? 1 : 0;
    out.last->buf->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    r->headers_out.content_type_len = ngx_http_llm_metrics_type.len;
    r->headers_out.content_type = ngx_http_llm_metrics_type;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out.first);
}


static ngx_int_t
ngx_http_llm_print_series(ngx_http_llm_out_t *out,
    ngx_http_llm_metrics_sh_t *sh)
{
    uint64_t                v;
    ngx_uint_t              i, k, f;
    ngx_http_llm_series_t  *s;

    static const char  *names[] = {
        "llm_prompt_tokens_total", "llm_completion_tokens_total",
        "llm_cached_tokens_total"
    };

    static const char  *helps[] = {
        "Prompt tokens, once per distinct prompt of a request.",
        "Tokens generated, summed over choices.",
        "Prompt tokens the engine found in its prefix cache."
    };

    if (ngx_http_llm_print(out,
            "# HELP llm_requests_total Completion and chat requests by "
            "engine, model version and HTTP status.\n"
            "# TYPE llm_requests_total counter\n")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < sh->n_series; i++) {
        s = &sh->series[i];

        for (k = 0; k < s->n_statuses; k++) {
            if (ngx_http_llm_print(out,
                    "llm_requests_total{engine=\"%*s\",model=\"%*s\","
                    "status=\"%ui\"} %uL\n",
                    s->engine_len, s->engine, s->model_len, s->model,
                    s->status[k], s->requests[k])
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    if (ngx_http_llm_print(out,
            "# HELP llm_series_dropped_total Requests not counted: "
            "no room for another engine and model pair.\n"
            "# TYPE llm_series_dropped_total counter\n"
            "llm_series_dropped_total %ui\n", sh->dropped)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (f = 0; f < 3; f++) {
        if (ngx_http_llm_print(out, "# HELP %s %s\n# TYPE %s counter\n",
                               names[f], helps[f], names[f])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (i = 0; i < sh->n_series; i++) {
            s = &sh->series[i];

            v = (f == 0) ? s->prompt_tokens
                : (f == 1) ? s->completion_tokens : s->cached_tokens;

            if (ngx_http_llm_print(out,
                    "%s{engine=\"%*s\",model=\"%*s\"} %uL\n", names[f],
                    s->engine_len, s->engine, s->model_len, s->model, v)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_print_histograms(ngx_http_llm_out_t *out,
    ngx_http_llm_metrics_sh_t *sh)
{
    uint64_t                       sum;
    ngx_uint_t                     i, b;
    ngx_http_llm_series_t         *s;
    ngx_http_llm_histogram_t      *h;
    ngx_http_llm_histogram_def_t  *def;

    for (def = ngx_http_llm_histograms; def->name; def++) {

        if (ngx_http_llm_print(out, "# HELP %s %s\n# TYPE %s histogram\n",
                               def->name, def->help, def->name)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (i = 0; i < sh->n_series; i++) {
            s = &sh->series[i];
            h = (ngx_http_llm_histogram_t *) ((u_char *) s + def->offset);

            sum = 0;

            for (b = 0; ; b++) {
                sum += h->count[b];

                if (ngx_http_llm_print(out,
                        "%s_bucket{engine=\"%*s\",model=\"%*s\","
                        "le=\"%s\"} %uL\n", def->name,
                        s->engine_len, s->engine, s->model_len, s->model,
                        def->bounds[b].le ? def->bounds[b].le : "+Inf", sum)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                if (def->bounds[b].le == NULL) {
                    break;
                }
            }

            if (ngx_http_llm_print(out,
                    "%s_sum{engine=\"%*s\",model=\"%*s\"} %uL.%06uL\n"
                    "%s_count{engine=\"%*s\",model=\"%*s\"} %uL\n",
                    def->name, s->engine_len, s->engine,
                    s->model_len, s->model,
                    h->sum_us / 1000000, h->sum_us % 1000000,
                    def->name, s->engine_len, s->engine,
                    s->model_len, s->model, h->n)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/*
 * What this worker sees of each engine: whether it is attached, its
 * slots by state, the requests waiting for one.  Each family is printed
 * whole, as Prometheus wants.
 */

static ngx_int_t
ngx_http_llm_print_engines(ngx_http_llm_out_t *out,
    ngx_http_llm_metrics_sh_t *sh)
{
    size_t                     len;
    ngx_uint_t                 i, k, f, v, *st;
    ngx_http_llm_engine_t     *e, **engines;
    ngx_http_llm_main_conf_t  *lmcf;

    static const char  *families[] = {
        "llm_engine_up", "gauge", "Whether the engine is attached.",
        "llm_queue_waiting", "gauge",
            "Requests waiting in nginx for a free slot.",
        "llm_queue_depth", "gauge",
            "Requests waiting in nginx for a slot, and in the engine for "
            "admission."
    };

    lmcf = ngx_http_get_module_main_conf(out->request, ngx_http_llm_module);
    engines = lmcf->engines.elts;

    /* per engine: up, waiting, then slots by state */

    st = ngx_pcalloc(out->request->pool, lmcf->engines.nelts
                                         * (LLM_SLOT_CANCELLED + 3)
                                         * sizeof(ngx_uint_t));
    if (st == NULL && lmcf->engines.nelts) {
        return NGX_ERROR;
    }

    for (i = 0; i < lmcf->engines.nelts; i++) {
        e = engines[i];
        v = i * (LLM_SLOT_CANCELLED + 3);
        len = ngx_min(e->name.len, NGX_HTTP_LLM_NAME_MAX);

        st[v] = (e->state == NGX_HTTP_LLM_READY);

        if (st[v]) {
            ngx_http_llm_slot_count(e, &st[v + 2]);
        }

        for (k = 0; k < sh->n_engines; k++) {
            if (sh->engines[k].len == len
                && ngx_memcmp(sh->engines[k].name, e->name.data, len) == 0)
            {
                st[v + 1] = sh->engines[k].waiting;
            }
        }
    }

    for (f = 0; f < 3; f++) {
        if (ngx_http_llm_print(out, "# HELP %s %s\n# TYPE %s %s\n",
                               families[3 * f], families[3 * f + 2],
                               families[3 * f], families[3 * f + 1])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (i = 0; i < lmcf->engines.nelts; i++) {
            v = i * (LLM_SLOT_CANCELLED + 3);

            if (ngx_http_llm_print(out, "%s{engine=\"%V\"} %ui\n",
                                   families[3 * f], &engines[i]->name,
                                   (f < 2) ? st[v + f]
                                   : st[v + 1]
                                     + ngx_max(st[v + 2 + LLM_SLOT_SUBMITTED],
                                         (ngx_uint_t) ngx_http_llm_stat(
                                             engines[i], LLM_STAT_WAITING)))
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    if (ngx_http_llm_print(out,
            "# HELP llm_engine_slots Request slots by state.\n"
            "# TYPE llm_engine_slots gauge\n")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < lmcf->engines.nelts; i++) {
        v = i * (LLM_SLOT_CANCELLED + 3);

        for (k = 0; st[v] && k <= LLM_SLOT_CANCELLED; k++) {
            if (ngx_http_llm_print(out,
                    "llm_engine_slots{engine=\"%V\",state=\"%s\"} %ui\n",
                    &engines[i]->name, ngx_http_llm_slot_states[k],
                    st[v + 2 + k])
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/*
 * The engine's header counters, read from this worker's mapping, then
 * the ratios they make (KV usage, prefix cache hits), then any index
 * without a name here that is not zero, as llm_engine_stat{index}.
 */

static ngx_int_t
ngx_http_llm_print_stats(ngx_http_llm_out_t *out)
{
    uint64_t                   v, num, den;
    ngx_uint_t                 i, k, named;
    ngx_http_llm_engine_t     *e, **engines;
    ngx_http_llm_stat_def_t   *def;
    ngx_http_llm_ratio_def_t  *ratio;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(out->request, ngx_http_llm_module);
    engines = lmcf->engines.elts;

    for (def = ngx_http_llm_stats; def->name; def++) {

        if (ngx_http_llm_print(out, "# HELP %s %s\n# TYPE %s %s\n",
                               def->name, def->help, def->name, def->type)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (i = 0; i < lmcf->engines.nelts; i++) {
            e = engines[i];

            if (e->state != NGX_HTTP_LLM_READY) {
                continue;
            }

            v = ngx_http_llm_stat(e, def->index);

            if (ngx_http_llm_print(out, "%s{engine=\"%V\"} %uL\n",
                                   def->name, &e->name, v)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    for (ratio = ngx_http_llm_ratios; ratio->name; ratio++) {

        if (ngx_http_llm_print(out, "# HELP %s %s\n# TYPE %s gauge\n",
                               ratio->name, ratio->help, ratio->name)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        for (i = 0; i < lmcf->engines.nelts; i++) {
            e = engines[i];

            if (e->state != NGX_HTTP_LLM_READY) {
                continue;
            }

            num = ngx_http_llm_stat(e, ratio->num);
            den = ngx_http_llm_stat(e, ratio->den);

            if (ngx_http_llm_print(out, "%s{engine=\"%V\"} %.6f\n",
                                   ratio->name, &e->name,
                                   den ? (double) num / den : 0.0)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    if (ngx_http_llm_print(out,
            "# HELP llm_engine_stat Engine counters this module has no "
            "name for, by index.\n"
            "# TYPE llm_engine_stat untyped\n")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < lmcf->engines.nelts; i++) {
        e = engines[i];

        if (e->state != NGX_HTTP_LLM_READY) {
            continue;
        }

        for (k = 0; k < LLM_STAT_MAX; k++) {
            named = 0;

            for (def = ngx_http_llm_stats; def->name; def++) {
                if (def->index == k) {
                    named = 1;
                    break;
                }
            }

            v = ngx_http_llm_stat(e, k);

            if (named || v == 0) {
                continue;
            }

            if (ngx_http_llm_print(out,
                    "llm_engine_stat{engine=\"%V\",index=\"%ui\"} %uL\n",
                    &e->name, k, v)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* a counter from the engine's header, as this worker maps it */

static uint64_t
ngx_http_llm_stat(ngx_http_llm_engine_t *e, ngx_uint_t index)
{
    llm_shm_header_t  *h;

    if (e->state != NGX_HTTP_LLM_READY || index >= LLM_STAT_MAX) {
        return 0;
    }

    h = (llm_shm_header_t *) e->base;

    return atomic_load_explicit(&h->stats[index], memory_order_relaxed);
}


/* appends a line (at most NGX_HTTP_LLM_LINE_MAX bytes) to the output */

static ngx_int_t
ngx_http_llm_print(ngx_http_llm_out_t *out, const char *fmt, ...)
{
    ngx_buf_t    *b;
    va_list       args;
    ngx_chain_t  *cl;

    if (out->last == NULL
        || (size_t) (out->last->buf->end - out->last->buf->last)
           < NGX_HTTP_LLM_LINE_MAX)
    {
        b = ngx_create_temp_buf(out->request->pool, NGX_HTTP_LLM_OUT_SIZE);
        if (b == NULL) {
            return NGX_ERROR;
        }

        cl = ngx_alloc_chain_link(out->request->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;

        if (out->last) {
            out->last->next = cl;

        } else {
            out->first = cl;
        }

        out->last = cl;
    }

    b = out->last->buf;

    va_start(args, fmt);
    b->last = ngx_vslprintf(b->last, b->end, fmt, args);
    va_end(args);

    return NGX_OK;
}
