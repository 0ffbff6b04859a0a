
/*
 * Copyright (C) ngx_llm developers
 */


#ifndef _NGX_HTTP_LLM_MODULE_H_INCLUDED_
#define _NGX_HTTP_LLM_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sys/un.h>
#include <jansson.h>

#include "llm_proto.h"


/* per-worker state of an engine connection */
#define NGX_HTTP_LLM_DISCONNECTED     0
#define NGX_HTTP_LLM_CONNECTING       1
#define NGX_HTTP_LLM_READY            2

#define NGX_HTTP_LLM_BACKOFF_MIN      100
#define NGX_HTTP_LLM_BACKOFF_MAX      2000
#define NGX_HTTP_LLM_HANDSHAKE_TIME   5000

/* how often requests waiting for a slot look for one freed elsewhere */
#define NGX_HTTP_LLM_QUEUE_RETRY      50

/* streaming: text gathered in one drain before a chunk is sent anyway */
#define NGX_HTTP_LLM_CHUNK_TEXT_MAX   16384

/* what a request may ask for, checked before any engine limit */
#define NGX_HTTP_LLM_MAX_TOKENS_MAX   1048576
#define NGX_HTTP_LLM_MAX_N            128
#define NGX_HTTP_LLM_MAX_PROMPTS      128
#define NGX_HTTP_LLM_MAX_CHOICES      256       /* prompts times n */
#define NGX_HTTP_LLM_MAX_STOP         4
#define NGX_HTTP_LLM_MAX_STOP_LEN     255       /* bytes, the engine's */
#define NGX_HTTP_LLM_MAX_BIAS         1024

/* the endpoints */
#define NGX_HTTP_LLM_COMPLETIONS      1
#define NGX_HTTP_LLM_CHAT             2


typedef struct ngx_http_llm_engine_s  ngx_http_llm_engine_t;
typedef struct ngx_http_llm_ctx_s     ngx_http_llm_ctx_t;
typedef struct ngx_http_llm_choice_s  ngx_http_llm_choice_t;


struct ngx_http_llm_engine_s {
    ngx_str_t                  name;
    ngx_str_t                  path;          /* "unix:..." as written */
    struct sockaddr_un         sockaddr;
    socklen_t                  socklen;

    /* where an engine was first named, for an undefined llm_pass name */
    u_char                    *file;
    ngx_uint_t                 line;
    unsigned                   defined:1;

    /* per-worker state, from init_process on */

    ngx_uint_t                 state;         /* NGX_HTTP_LLM_* */
    ngx_log_t                 *log;

    ngx_connection_t          *sock;          /* the engine's unix socket */
    ngx_connection_t          *bell;          /* this worker's doorbell */
    ngx_fd_t                   engine_bell;   /* the engine's doorbell */

    u_char                    *base;          /* mapped region, or NULL */
    size_t                     size;
    llm_shm_header_t           hdr;           /* a checked copy of the header */
    uint32_t                   worker_id;
    ngx_uint_t                 serial;        /* bumped on every handshake */
    ngx_uint_t                 next_slot;

    ngx_queue_t                requests;      /* ngx_http_llm_choice_t in
                                                 flight */
    ngx_queue_t                waiting;       /* ngx_http_llm_ctx_t waiting
                                                 for a free slot */
    ngx_event_t                kick;          /* posted: a slot was freed */
    ngx_event_t                retry;         /* slots freed elsewhere */
    ngx_atomic_t              *waiting_gauge; /* in the metrics zone */

    ngx_event_t                reconnect;
    ngx_msec_t                 backoff;
    ngx_uint_t                 failures;      /* connects failed in a row */

    /* the welcome as it arrives, and the descriptors that came with it */
    u_char                     welcome[sizeof(llm_welcome_t)];
    size_t                     welcome_len;
    unsigned                   hello_sent:1;
    int                        fds[3];
    ngx_uint_t                 nfds;
};


typedef struct {
    ngx_array_t                engines;       /* ngx_http_llm_engine_t * */
    ngx_shm_zone_t            *metrics;       /* counters and histograms */
} ngx_http_llm_main_conf_t;


typedef struct {
    ngx_http_llm_engine_t     *engine;
    ngx_http_complex_value_t  *model;         /* llm_model, or NULL */
    ngx_uint_t                 max_tokens;
    ngx_uint_t                 max_n;
    ngx_msec_t                 timeout;
    ngx_msec_t                 queue_timeout;
} ngx_http_llm_loc_conf_t;


/*
 * A completion or chat request, validated.  The engine's request is
 * built from "fields", which holds every sampling field in the form the
 * engine reads; each choice adds its id, model, prompt and seed.  All
 * json_t here are owned by pool cleanups.
 */
typedef struct {
    json_t                    *json;          /* the body */
    json_t                    *fields;        /* for the engine */
    json_t                    *prompts;       /* completions: the prompts,
                                                 each a string or token
                                                 ids; chat: NULL */
    json_t                    *messages;      /* chat: {role, content} */
    ngx_str_t                  model;         /* as the client asked */
    ngx_uint_t                 n;
    int64_t                    seed;
    ngx_int_t                  logprobs;      /* alternatives, -1: none */
    unsigned                   has_seed:1;
    unsigned                   stream:1;
    unsigned                   include_usage:1;
} ngx_http_llm_completion_t;


/* an OpenAI error object, before it is sent */
typedef struct {
    ngx_uint_t                 status;
    const char                *type;
    const char                *param;        /* NULL: null */
    const char                *code;         /* NULL: null */
    ngx_str_t                  message;
} ngx_http_llm_error_t;


/* usage of a whole request, summed over its choices */
typedef struct {
    uint64_t                   prompt;
    uint64_t                   completion;
    uint64_t                   cached;
} ngx_http_llm_usage_t;


/* one sequence of a request: one slot, one entry of "choices" */
struct ngx_http_llm_choice_s {
    ngx_http_llm_ctx_t        *ctx;
    ngx_uint_t                 index;         /* in "choices" */
    ngx_uint_t                 prompt;        /* which prompt it continues */

    ngx_str_t                  req;           /* the engine's request */

    /* while attached: in engine->requests and holding slot/generation */
    ngx_queue_t                queue;
    ngx_uint_t                 serial;
    uint32_t                   slot;
    uint32_t                   generation;

    /* text not sent yet (all of it unless streaming), bytes before it */
    u_char                    *text;
    size_t                     text_len;
    size_t                     text_size;
    size_t                     offset;

    /* logprobs not sent yet, and the entry waiting for its TOKEN */
    json_t                    *logprobs;
    json_t                    *lp_pending;

    ngx_uint_t                 tokens;        /* TOKEN events seen */
    llm_ev_done_t              done;

    unsigned                   attached:1;
    unsigned                   submitted:1;
    unsigned                   finished:1;    /* DONE arrived */
    unsigned                   role_sent:1;   /* chat stream: first delta */
};


struct ngx_http_llm_ctx_s {
    ngx_http_request_t        *request;
    ngx_http_llm_engine_t     *engine;
    ngx_uint_t                 endpoint;      /* NGX_HTTP_LLM_COMPLETIONS.. */

    ngx_str_t                  id;            /* "cmpl-...", "chatcmpl-..." */
    ngx_str_t                  request_model; /* what the client asked */
    ngx_str_t                  model;         /* the version serving it */
    time_t                     created;
    json_t                    *fields;        /* the engine's request */
    json_t                    *prompts;
    json_t                    *messages;
    ngx_uint_t                 n;             /* choices per prompt */
    int64_t                    seed;
    ngx_int_t                  logprobs;      /* alternatives, -1: none */

    ngx_http_llm_choice_t     *choices;
    ngx_uint_t                 n_choices;
    ngx_uint_t                 n_submitted;   /* choices 0..n-1 submitted */
    ngx_uint_t                 n_finished;

    ngx_queue_t                wait;          /* in engine->waiting */
    ngx_event_t                queue_timer;   /* llm_queue_timeout */
    ngx_event_t                deadline;      /* llm_timeout */

    ngx_msec_t                 ttft;          /* request start -> token */

    /* streaming chunk buffers, reused once sent */
    ngx_chain_t               *free;
    ngx_chain_t               *busy;

    /* nginx's own error page, turned into an OpenAI error object */
    ngx_buf_t                 *error_page;

    unsigned                   has_seed:1;
    unsigned                   stream:1;
    unsigned                   include_usage:1;
    unsigned                   model_known:1; /* model names a served one */
    unsigned                   waiting:1;
    unsigned                   started:1;     /* a choice was submitted */
    unsigned                   first_token:1; /* ttft is set */
    unsigned                   blocked:1;     /* output returned NGX_AGAIN */
    unsigned                   cleanup:1;     /* cleanups registered */
    unsigned                   json_page:1;   /* error_page replaces nginx's */
};


/* ngx_http_llm_module.c */
ngx_http_llm_engine_t *ngx_http_llm_engine_add(ngx_conf_t *cf,
    ngx_str_t *name);

/* ngx_http_llm_shm.c */
ngx_int_t ngx_http_llm_engine_init(ngx_http_llm_engine_t *e, ngx_log_t *log);
void ngx_http_llm_engine_exit(ngx_http_llm_engine_t *e);
llm_shm_model_t *ngx_http_llm_engine_model(ngx_http_llm_engine_t *e,
    ngx_str_t *name);
ngx_int_t ngx_http_llm_slot_submit(ngx_http_llm_choice_t *ch);
ngx_int_t ngx_http_llm_slot_state(ngx_http_llm_choice_t *ch);
ngx_int_t ngx_http_llm_slot_event(ngx_http_llm_choice_t *ch, llm_event_t *ev,
    u_char *buf);
void ngx_http_llm_slot_drained(ngx_http_llm_choice_t *ch);
void ngx_http_llm_slot_release(ngx_http_llm_choice_t *ch);
void ngx_http_llm_slot_count(ngx_http_llm_engine_t *e, ngx_uint_t *states);

/* ngx_http_llm_handler.c */
ngx_int_t ngx_http_llm_handler(ngx_http_request_t *r);
void ngx_http_llm_process(ngx_http_llm_choice_t *ch,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_dispatch(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_queue_handler(ngx_event_t *ev);
void ngx_http_llm_fail(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err);
void ngx_http_llm_detach(ngx_http_llm_ctx_t *ctx);

/* ngx_http_llm_openai.c */
ngx_int_t ngx_http_llm_parse(ngx_http_request_t *r, ngx_uint_t endpoint,
    u_char *p, size_t len, ngx_http_llm_completion_t *cp,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_choice_request(ngx_http_llm_choice_t *ch);
ngx_int_t ngx_http_llm_invalid(ngx_http_request_t *r,
    ngx_http_llm_error_t *err, const char *param, const char *code,
    const char *fmt, ...);
void ngx_http_llm_error(ngx_http_llm_error_t *err, ngx_uint_t status,
    const char *type, const char *param, const char *code,
    const char *message);
json_t *ngx_http_llm_error_json(ngx_http_request_t *r,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_send_error(ngx_http_request_t *r,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *json);
ngx_buf_t *ngx_http_llm_json_buf(ngx_pool_t *pool, json_t *json);
json_t *ngx_http_llm_json_string(ngx_pool_t *pool, u_char *p, size_t len);
void ngx_http_llm_json_cleanup(void *data);

/* ngx_http_llm_reply.c */
ngx_int_t ngx_http_llm_append(ngx_http_llm_choice_t *ch, u_char *p,
    size_t len);
void ngx_http_llm_usage(ngx_http_llm_ctx_t *ctx, ngx_http_llm_usage_t *u);
const char *ngx_http_llm_finish_reason(uint32_t reason);
json_t *ngx_http_llm_response_json(ngx_http_llm_ctx_t *ctx);
json_t *ngx_http_llm_chunk_json(ngx_http_llm_choice_t *ch,
    const char *finish);
json_t *ngx_http_llm_usage_chunk_json(ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_logprobs_event(ngx_http_llm_choice_t *ch,
    u_char *buf, size_t len);
ngx_int_t ngx_http_llm_logprobs_token(ngx_http_llm_choice_t *ch);
ngx_int_t ngx_http_llm_send_models(ngx_http_request_t *r,
    ngx_http_llm_engine_t *e, ngx_str_t *id);

/* ngx_http_llm_variables.c */
ngx_int_t ngx_http_llm_add_variables(ngx_conf_t *cf);

/* ngx_http_llm_metrics.c */
ngx_shm_zone_t *ngx_http_llm_metrics_zone(ngx_conf_t *cf);
ngx_int_t ngx_http_llm_metrics_init(ngx_conf_t *cf);
char *ngx_http_llm_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_http_llm_metrics_waiting(ngx_http_llm_engine_t *e, ngx_int_t delta);

/* ngx_http_llm_filter.c */
ngx_int_t ngx_http_llm_filter_init(ngx_conf_t *cf);


extern ngx_module_t  ngx_http_llm_module;


#endif /* _NGX_HTTP_LLM_MODULE_H_INCLUDED_ */
