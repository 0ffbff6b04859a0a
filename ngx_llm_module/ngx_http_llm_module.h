
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

/* streaming: text gathered in one drain before a chunk is sent anyway */
#define NGX_HTTP_LLM_CHUNK_TEXT_MAX   16384

/* what a request may ask for, checked before any engine limit */
#define NGX_HTTP_LLM_MAX_TOKENS_MAX   1048576


typedef struct ngx_http_llm_engine_s  ngx_http_llm_engine_t;
typedef struct ngx_http_llm_ctx_s     ngx_http_llm_ctx_t;


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

    ngx_queue_t                requests;      /* ngx_http_llm_ctx_t in flight */

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
} ngx_http_llm_main_conf_t;


typedef struct {
    ngx_http_llm_engine_t     *engine;
    ngx_uint_t                 max_tokens;
    ngx_msec_t                 timeout;
} ngx_http_llm_loc_conf_t;


/* a completion request, validated; strings point into json */
typedef struct {
    json_t                    *json;
    ngx_str_t                  model;
    ngx_str_t                  prompt;
    ngx_uint_t                 max_tokens;
    double                     temperature;
    double                     top_p;
    int64_t                    seed;
    unsigned                   stream:1;
} ngx_http_llm_completion_t;


/* an OpenAI error object, before it is sent */
typedef struct {
    ngx_uint_t                 status;
    const char                *type;
    const char                *param;        /* NULL: null */
    const char                *code;         /* NULL: null */
    ngx_str_t                  message;
} ngx_http_llm_error_t;


struct ngx_http_llm_ctx_s {
    ngx_http_request_t        *request;
    ngx_http_llm_engine_t     *engine;

    /* while attached: in engine->requests and holding slot/generation */
    ngx_queue_t                queue;
    ngx_uint_t                 serial;
    uint32_t                   slot;
    uint32_t                   generation;

    ngx_event_t                timeout;       /* no word from the engine */

    ngx_str_t                  id;            /* "cmpl-..." */
    ngx_str_t                  model;
    time_t                     created;

    /* completion text: all of it, or what one streaming drain gathered */
    u_char                    *text;
    size_t                     text_len;
    size_t                     text_size;

    /* streaming chunk buffers, reused once sent */
    ngx_chain_t               *free;
    ngx_chain_t               *busy;

    llm_ev_done_t              done;

    unsigned                   attached:1;
    unsigned                   stream:1;
    unsigned                   blocked:1;     /* output returned NGX_AGAIN */
    unsigned                   cleanup:1;     /* cleanups registered */
};


/* ngx_http_llm_module.c */
ngx_http_llm_engine_t *ngx_http_llm_engine_add(ngx_conf_t *cf,
    ngx_str_t *name);

/* ngx_http_llm_shm.c */
ngx_int_t ngx_http_llm_engine_init(ngx_http_llm_engine_t *e, ngx_log_t *log);
void ngx_http_llm_engine_exit(ngx_http_llm_engine_t *e);
llm_shm_model_t *ngx_http_llm_engine_model(ngx_http_llm_engine_t *e,
    ngx_str_t *name);
ngx_int_t ngx_http_llm_slot_submit(ngx_http_llm_ctx_t *ctx, u_char *req,
    size_t len);
ngx_int_t ngx_http_llm_slot_state(ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_slot_event(ngx_http_llm_ctx_t *ctx, llm_event_t *ev,
    u_char *buf);
void ngx_http_llm_slot_drained(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_slot_release(ngx_http_llm_ctx_t *ctx);

/* ngx_http_llm_handler.c */
ngx_int_t ngx_http_llm_handler(ngx_http_request_t *r);
void ngx_http_llm_process(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err);
void ngx_http_llm_fail(ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err);
void ngx_http_llm_detach(ngx_http_llm_ctx_t *ctx);

/* ngx_http_llm_openai.c */
ngx_int_t ngx_http_llm_parse_completion(ngx_http_request_t *r, u_char *p,
    size_t len, ngx_http_llm_completion_t *cp, ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_request_json(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_completion_t *cp, ngx_str_t *out);
void ngx_http_llm_error(ngx_http_llm_error_t *err, ngx_uint_t status,
    const char *type, const char *param, const char *code,
    const char *message);
json_t *ngx_http_llm_error_json(ngx_http_request_t *r,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_send_error(ngx_http_request_t *r,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *json);
const char *ngx_http_llm_finish_reason(uint32_t reason);
json_t *ngx_http_llm_completion_json(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, const char *finish, ngx_uint_t usage);
ngx_int_t ngx_http_llm_send_models(ngx_http_request_t *r,
    ngx_http_llm_engine_t *e);
json_t *ngx_http_llm_json_string(ngx_pool_t *pool, u_char *p, size_t len);


extern ngx_module_t  ngx_http_llm_module;


#endif /* _NGX_HTTP_LLM_MODULE_H_INCLUDED_ */
