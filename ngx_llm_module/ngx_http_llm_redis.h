
/*
 * Copyright (C) ngx_llm developers
 */


#ifndef _NGX_HTTP_LLM_REDIS_H_INCLUDED_
#define _NGX_HTTP_LLM_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>


/* the link of one worker */
#define NGX_HTTP_LLM_REDIS_DOWN          0    /* no context, reconnect
                                                 timer armed */
#define NGX_HTTP_LLM_REDIS_CONNECTING    1    /* connect and handshake
                                                 (AUTH, SELECT, SCRIPT
                                                 LOAD) in flight */
#define NGX_HTTP_LLM_REDIS_READY         2

#define NGX_HTTP_LLM_REDIS_BACKOFF_MIN   100
#define NGX_HTTP_LLM_REDIS_BACKOFF_MAX   2000


typedef struct ngx_http_llm_redis_s      ngx_http_llm_redis_t;
typedef struct ngx_http_llm_redis_cmd_s  ngx_http_llm_redis_cmd_t;


/*
 * Called exactly once for every command accepted, unless its token was
 * cancelled first.  reply is NULL when the command timed out or the link
 * went down, and is valid only during the call.
 */
typedef void (*ngx_http_llm_redis_handler_pt)(void *data, redisReply *reply);


/* a Lua script, loaded on every connect and run by EVALSHA */
typedef struct {
    ngx_str_t                       text;
    u_char                          sha1[40];     /* hex */
} ngx_http_llm_redis_script_t;


/*
 * What a request keeps of a command it waits for: the request's pool
 * cleanup cancels it, so a late reply never reaches a freed request.
 */
typedef struct {
    ngx_http_llm_redis_cmd_t       *cmd;
    ngx_uint_t                      generation;
} ngx_http_llm_redis_token_t;


struct ngx_http_llm_redis_s {
    ngx_str_t                       address;      /* as written */
    u_char                         *host;         /* numeric address or
                                                     unix path, with NUL */
    int                             port;         /* 0: unix socket */
    ngx_str_t                       password;     /* empty: no AUTH */
    ngx_uint_t                      db;           /* 0: no SELECT */
    ngx_msec_t                      timeout;      /* every command */
    ngx_array_t                     scripts;      /* ngx_http_llm_redis_
                                                     script_t * */

    /* per worker, from init_process on */

    ngx_log_t                      *log;
    ngx_pool_t                     *pool;
    ngx_uint_t                      state;        /* NGX_HTTP_LLM_REDIS_* */
    redisAsyncContext              *ac;           /* NULL while down */
    ngx_connection_t               *conn;         /* wraps ac's socket */
    ngx_connection_t               *dead;         /* freed after the handler
                                                     that closed it */
    ngx_uint_t                      handshake;    /* replies awaited */
    ngx_queue_t                     free;         /* idle commands */
    ngx_event_t                     reconnect;
    ngx_event_t                     broken;       /* posted: event setup
                                                     failed */
    ngx_msec_t                      backoff;
    ngx_uint_t                      failures;     /* links lost since the
                                                     last handshake */

    u_char                         *buf;          /* a formatted command */
    size_t                          buf_size;

    unsigned                        reading:1;    /* hiredis wants reads */
    unsigned                        writing:1;    /* hiredis wants writes */
    unsigned                        entered:1;    /* inside our handler */
    unsigned                        logged:1;     /* this outage was logged */
    unsigned                        exiting:1;
};


ngx_http_llm_redis_script_t *ngx_http_llm_redis_add_script(ngx_conf_t *cf,
    ngx_http_llm_redis_t *rd, ngx_str_t *text);
ngx_int_t ngx_http_llm_redis_init(ngx_http_llm_redis_t *rd,
    ngx_cycle_t *cycle);
void ngx_http_llm_redis_exit(ngx_http_llm_redis_t *rd);
ngx_uint_t ngx_http_llm_redis_usable(ngx_http_llm_redis_t *rd);
ngx_int_t ngx_http_llm_redis_eval(ngx_http_llm_redis_t *rd,
    ngx_http_llm_redis_script_t *script, ngx_uint_t nkeys, ngx_str_t *args,
    ngx_uint_t nargs, ngx_http_llm_redis_handler_pt handler, void *data,
    ngx_http_llm_redis_token_t *token);
void ngx_http_llm_redis_cancel(ngx_http_llm_redis_token_t *token);


#endif /* _NGX_HTTP_LLM_REDIS_H_INCLUDED_ */
