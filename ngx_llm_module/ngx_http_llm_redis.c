
/*
 * Copyright (C) ngx_llm developers
 *
 * hiredis's asynchronous API on nginx's event loop: one link to Redis
 * per worker, opened in init_process.
 *
 * The adapter binds hiredis's event hooks to an ngx_connection_t that
 * wraps the context's socket.  The hooks are idempotent flag flips; the
 * socket is registered level-triggered, since redisAsyncHandleRead()
 * reads once per call and an edge would be lost.  When hiredis frees
 * the context from inside one of our handlers, the connection is given
 * back only once the handler has returned.
 *
 * hiredis 0.14 has no timeouts: every command carries its own timer.  A
 * command that times out is answered NULL and takes the link down with
 * it, since a Redis that does not answer one command answers none after
 * it; the link comes back on a backoff timer.  Connecting, AUTH, SELECT
 * and SCRIPT LOAD go through the same commands, so a Redis that accepts
 * connections but never answers (stopped, overloaded) costs at most one
 * timeout.  Nothing here blocks: the address is numeric by the time
 * hiredis resolves it.
 *
 * Commands are reused from a free list; a command returns to it only
 * when hiredis has called its callback, which it does exactly once
 * (NULL when the context is freed).  The callers' handlers are reached
 * through the command, and a token {command, generation} lets a request
 * that goes away cancel its handler without owning the command.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_sha1.h>

#include "ngx_http_llm_redis.h"


struct ngx_http_llm_redis_cmd_s {
    ngx_http_llm_redis_t           *redis;
    ngx_http_llm_redis_handler_pt   handler;      /* NULL once it was called
                                                     or cancelled */
    void                           *data;
    ngx_event_t                     timer;
    ngx_queue_t                     queue;        /* in redis->free when
                                                     idle */
    ngx_uint_t                      generation;   /* bumped on every reuse */

    /* EVALSHA, sent again as EVAL when Redis lost the script */
    ngx_http_llm_redis_script_t    *script;
    ngx_uint_t                      nelts;        /* numkeys and after */
    u_char                         *tail;         /* those, in RESP */
    size_t                          tail_len;
    size_t                          tail_size;

    unsigned                        retried:1;
};


static void ngx_http_llm_redis_connect(ngx_http_llm_redis_t *rd);
static ngx_int_t ngx_http_llm_redis_attach(ngx_http_llm_redis_t *rd,
    redisAsyncContext *ac);
static void ngx_http_llm_redis_handshake(void *data, redisReply *reply);
static void ngx_http_llm_redis_down(ngx_http_llm_redis_t *rd,
    const redisAsyncContext *ac, const char *reason);
static void ngx_http_llm_redis_close(ngx_http_llm_redis_t *rd,
    const char *reason);
static void ngx_http_llm_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_llm_redis_broken_handler(ngx_event_t *ev);
static void ngx_http_llm_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_llm_redis_disconnected(const redisAsyncContext *ac,
    int status);

static ngx_http_llm_redis_cmd_t *ngx_http_llm_redis_cmd_get(
    ngx_http_llm_redis_t *rd, ngx_http_llm_redis_handler_pt handler,
    void *data);
static void ngx_http_llm_redis_cmd_put(ngx_http_llm_redis_cmd_t *cmd);
static void ngx_http_llm_redis_cmd_sent(ngx_http_llm_redis_cmd_t *cmd);
static ngx_int_t ngx_http_llm_redis_command(ngx_http_llm_redis_t *rd,
    ngx_http_llm_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen);
static ngx_int_t ngx_http_llm_redis_send_script(ngx_http_llm_redis_cmd_t *cmd,
    ngx_uint_t by_sha);
static void ngx_http_llm_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_llm_redis_timeout_handler(ngx_event_t *ev);

static void ngx_http_llm_redis_read_handler(ngx_event_t *rev);
static void ngx_http_llm_redis_write_handler(ngx_event_t *wev);
static void ngx_http_llm_redis_add_read(void *privdata);
static void ngx_http_llm_redis_del_read(void *privdata);
static void ngx_http_llm_redis_add_write(void *privdata);
static void ngx_http_llm_redis_del_write(void *privdata);
static void ngx_http_llm_redis_cleanup(void *privdata);
static void ngx_http_llm_redis_free_connection(ngx_connection_t *c);


/* config time: the script and its SHA1, which EVALSHA names */

ngx_http_llm_redis_script_t *
ngx_http_llm_redis_add_script(ngx_conf_t *cf, ngx_http_llm_redis_t *rd,
    ngx_str_t *text)
{
    u_char                        digest[20];
    ngx_sha1_t                    sha1;
    ngx_http_llm_redis_script_t  *s, **sp;

    s = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_redis_script_t));
    if (s == NULL) {
        return NULL;
    }

    s->text = *text;

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, text->data, text->len);
    ngx_sha1_final(digest, &sha1);

    ngx_hex_dump(s->sha1, digest, sizeof(digest));

    if (rd->scripts.elts == NULL
        && ngx_array_init(&rd->scripts, cf->pool, 2,
                          sizeof(ngx_http_llm_redis_script_t *))
           != NGX_OK)
    {
        return NULL;
    }

    sp = ngx_array_push(&rd->scripts);
    if (sp == NULL) {
        return NULL;
    }

    *sp = s;

    return s;
}


ngx_int_t
ngx_http_llm_redis_init(ngx_http_llm_redis_t *rd, ngx_cycle_t *cycle)
{
    rd->log = cycle->log;
    rd->pool = cycle->pool;
    rd->state = NGX_HTTP_LLM_REDIS_DOWN;
    rd->backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    ngx_queue_init(&rd->free);

    rd->reconnect.handler = ngx_http_llm_redis_reconnect_handler;
    rd->reconnect.data = rd;
    rd->reconnect.log = cycle->log;
    rd->reconnect.cancelable = 1;

    rd->broken.handler = ngx_http_llm_redis_broken_handler;
    rd->broken.data = rd;
    rd->broken.log = cycle->log;

    ngx_http_llm_redis_connect(rd);

    return NGX_OK;
}


void
ngx_http_llm_redis_exit(ngx_http_llm_redis_t *rd)
{
    redisAsyncContext         *ac;
    ngx_queue_t               *q;
    ngx_http_llm_redis_cmd_t  *cmd;

    rd->exiting = 1;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    if (rd->broken.posted) {
        ngx_delete_posted_event(&rd->broken);
    }

    /* callbacks answered NULL now reach no handler: rd->exiting */

    ac = rd->ac;

    if (ac != NULL) {
        rd->ac = NULL;
        redisAsyncFree(ac);
    }

    while (!ngx_queue_empty(&rd->free)) {
        q = ngx_queue_head(&rd->free);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_llm_redis_cmd_t, queue);

        if (cmd->tail) {
            ngx_free(cmd->tail);
        }
    }

    if (rd->buf) {
        ngx_free(rd->buf);
        rd->buf = NULL;
    }
}


/*
 * A command may be sent when the link is ready, or while the first
 * connect since it was last ready is in progress: commands queue behind
 * the handshake, each with its own timer.  After a failure, requests do
 * not wait for a link that may fail again: they fall back until it is
 * ready.
 */

ngx_uint_t
ngx_http_llm_redis_usable(ngx_http_llm_redis_t *rd)
{
    if (rd == NULL || rd->ac == NULL || rd->exiting) {
        return 0;
    }

    return rd->state == NGX_HTTP_LLM_REDIS_READY
           || (rd->state == NGX_HTTP_LLM_REDIS_CONNECTING
               && rd->failures == 0);
}


/*
 * EVALSHA script nkeys args...: the first nkeys of args are keys.
 * Returns NGX_OK when handler will be called, NGX_DECLINED when Redis
 * cannot take the command now (the caller falls back at once).
 */

ngx_int_t
ngx_http_llm_redis_eval(ngx_http_llm_redis_t *rd,
    ngx_http_llm_redis_script_t *script, ngx_uint_t nkeys, ngx_str_t *args,
    ngx_uint_t nargs, ngx_http_llm_redis_handler_pt handler, void *data,
    ngx_http_llm_redis_token_t *token)
{
    size_t                     size, len;
    u_char                    *p;
    ngx_uint_t                 i;
    ngx_http_llm_redis_cmd_t  *cmd;
    u_char                     nk[NGX_INT_T_LEN];

    if (!ngx_http_llm_redis_usable(rd)) {
        return NGX_DECLINED;
    }

    cmd = ngx_http_llm_redis_cmd_get(rd, handler, data);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    size = sizeof("$20\r\n") - 1 + NGX_INT_T_LEN + 2;

    for (i = 0; i < nargs; i++) {
        size += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + args[i].len;
    }

    if (size > cmd->tail_size) {
        if (cmd->tail) {
            ngx_free(cmd->tail);
        }

        cmd->tail_size = 0;

        cmd->tail = ngx_alloc(size, rd->log);
        if (cmd->tail == NULL) {
            ngx_http_llm_redis_cmd_put(cmd);
            return NGX_ERROR;
        }

        cmd->tail_size = size;
    }

    len = ngx_sprintf(nk, "%ui", nkeys) - nk;

    p = ngx_sprintf(cmd->tail, "$%uz\r\n", len);
    p = ngx_cpymem(p, nk, len);
    *p++ = CR; *p++ = LF;

    for (i = 0; i < nargs; i++) {
        p = ngx_sprintf(p, "$%uz\r\n", args[i].len);
        p = ngx_cpymem(p, args[i].data, args[i].len);
        *p++ = CR; *p++ = LF;
    }

    cmd->tail_len = p - cmd->tail;
    cmd->nelts = 1 + nargs;
    cmd->script = script;

    if (ngx_http_llm_redis_send_script(cmd, 1) != NGX_OK) {
        ngx_http_llm_redis_cmd_put(cmd);
        return NGX_DECLINED;
    }

    ngx_http_llm_redis_cmd_sent(cmd);

    if (token) {
        token->cmd = cmd;
        token->generation = cmd->generation;
    }

    return NGX_OK;
}


/* the request that waited went away: its handler must not be called */

void
ngx_http_llm_redis_cancel(ngx_http_llm_redis_token_t *token)
{
    ngx_http_llm_redis_cmd_t  *cmd;

    cmd = token->cmd;
    token->cmd = NULL;

    if (cmd == NULL || cmd->generation != token->generation) {
        return;
    }

    /* the timer stays: a Redis that does not answer is still found out */

    cmd->handler = NULL;
    cmd->data = NULL;
}


static void
ngx_http_llm_redis_connect(ngx_http_llm_redis_t *rd)
{
    int                            argc;
    u_char                        *p;
    ngx_uint_t                     i, n;
    const char                    *argv[3];
    redisAsyncContext             *ac;
    size_t                         argvlen[3];
    u_char                         db[NGX_INT_T_LEN];
    ngx_http_llm_redis_script_t  **sp;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                   "llm redis connect to %V, backoff %M",
                   &rd->address, rd->backoff);

    if (rd->port == 0) {
        ac = redisAsyncConnectUnix((const char *) rd->host);

    } else {
        ac = redisAsyncConnect((const char *) rd->host, rd->port);
    }

    if (ac == NULL) {
        ngx_http_llm_redis_down(rd, NULL, "out of memory");
        return;
    }

    if (ac->err) {
        /* connect(2) failed at once, as it may on a local address */
        ngx_http_llm_redis_down(rd, NULL, ac->errstr);
        redisAsyncFree(ac);
        return;
    }

    if (ngx_http_llm_redis_attach(rd, ac) != NGX_OK) {
        ngx_http_llm_redis_down(rd, NULL, "cannot attach to the event loop");
        redisAsyncFree(ac);
        return;
    }

    rd->ac = ac;
    rd->state = NGX_HTTP_LLM_REDIS_CONNECTING;
    rd->handshake = 0;

    /* the handshake queues behind connect(2), before any other command */

    n = 0;

    if (rd->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = sizeof("AUTH") - 1;
        argv[1] = (const char *) rd->password.data;
        argvlen[1] = rd->password.len;
        argc = 2;

        if (ngx_http_llm_redis_command(rd, ngx_http_llm_redis_handshake, rd,
                                       argc, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }

        n++;
    }

    if (rd->db) {
        p = ngx_sprintf(db, "%ui", rd->db);

        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (const char *) db;
        argvlen[1] = p - db;
        argc = 2;

        if (ngx_http_llm_redis_command(rd, ngx_http_llm_redis_handshake, rd,
                                       argc, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }

        n++;
    }

    sp = rd->scripts.elts;

    for (i = 0; i < rd->scripts.nelts; i++) {
        argv[0] = "SCRIPT";
        argvlen[0] = sizeof("SCRIPT") - 1;
        argv[1] = "LOAD";
        argvlen[1] = sizeof("LOAD") - 1;
        argv[2] = (const char *) sp[i]->text.data;
        argvlen[2] = sp[i]->text.len;
        argc = 3;

        if (ngx_http_llm_redis_command(rd, ngx_http_llm_redis_handshake, rd,
                                       argc, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }

        n++;
    }

    if (n == 0) {
        /* nothing to ask: ready once connect(2) is done; PING finds out */
        argv[0] = "PING";
        argvlen[0] = sizeof("PING") - 1;

        if (ngx_http_llm_redis_command(rd, ngx_http_llm_redis_handshake, rd,
                                       1, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }

        n++;
    }

    rd->handshake = n;

    return;

failed:

    ngx_http_llm_redis_close(rd, "cannot queue the handshake");
}


/* binds hiredis's hooks to a connection; a context is attached once */

static ngx_int_t
ngx_http_llm_redis_attach(ngx_http_llm_redis_t *rd, redisAsyncContext *ac)
{
    ngx_event_t       *rev, *wev;
    ngx_connection_t  *c;

    if (ac->ev.data != NULL) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = rd;

    rev = c->read;
    wev = c->write;

    rev->log = rd->log;
    wev->log = rd->log;

    rev->handler = ngx_http_llm_redis_read_handler;
    wev->handler = ngx_http_llm_redis_write_handler;

    rd->conn = c;
    rd->reading = 0;
    rd->writing = 0;

    ac->data = rd;

    ac->ev.data = rd;
    ac->ev.addRead = ngx_http_llm_redis_add_read;
    ac->ev.delRead = ngx_http_llm_redis_del_read;
    ac->ev.addWrite = ngx_http_llm_redis_add_write;
    ac->ev.delWrite = ngx_http_llm_redis_del_write;
    ac->ev.cleanup = ngx_http_llm_redis_cleanup;

    /* the first write event tells that connect(2) is done */

    if (redisAsyncSetConnectCallback(ac, ngx_http_llm_redis_connected)
        != REDIS_OK
        || redisAsyncSetDisconnectCallback(ac,
                                           ngx_http_llm_redis_disconnected)
           != REDIS_OK)
    {
        /* redisAsyncFree() calls the cleanup hook, which frees c */
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_llm_redis_handshake(void *data, redisReply *reply)
{
    ngx_http_llm_redis_t *rd = data;

    u_char                         err[128], *p;
    ngx_uint_t                     i, ok;
    ngx_http_llm_redis_script_t  **sp;

    if (reply == NULL) {
        /* the link is down already, and said why */
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        p = ngx_snprintf(err, sizeof(err) - 1, "%*s",
                         (size_t) reply->len, reply->str);
        *p = '\0';

        ngx_http_llm_redis_close(rd, (const char *) err);
        return;
    }

    if (reply->type == REDIS_REPLY_STRING && reply->len == 40) {

        /* SCRIPT LOAD names the script it loaded: it must be ours */

        sp = rd->scripts.elts;
        ok = 0;

        for (i = 0; i < rd->scripts.nelts; i++) {
            if (ngx_strncasecmp(sp[i]->sha1, (u_char *) reply->str, 40)
                == 0)
            {
                ok = 1;
            }
        }

        if (!ok) {
            ngx_http_llm_redis_close(rd, "SCRIPT LOAD returned another SHA1");
            return;
        }
    }

    if (--rd->handshake) {
        return;
    }

    rd->state = NGX_HTTP_LLM_REDIS_READY;
    rd->failures = 0;
    rd->backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MIN;

    if (rd->logged) {
        rd->logged = 0;
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "llm redis %V is back", &rd->address);

    } else {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                       "llm redis %V ready", &rd->address);
    }
}


/*
 * The link is lost (ac is the context it was, NULL if it never was one):
 * no command is sent on it any more and the reconnect timer is armed.
 * An outage is logged once, at its start; hiredis frees ac itself.
 */

static void
ngx_http_llm_redis_down(ngx_http_llm_redis_t *rd,
    const redisAsyncContext *ac, const char *reason)
{
    if (ac != NULL && ac != rd->ac) {
        return;
    }

    rd->ac = NULL;
    rd->state = NGX_HTTP_LLM_REDIS_DOWN;
    rd->failures++;

    if (rd->exiting || ngx_exiting) {
        return;
    }

    if (!rd->logged) {
        rd->logged = 1;
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "llm redis %V is unavailable: %s; "
                      "limits with fail=open count on this node, "
                      "fail=closed ones answer 503 until it is back",
                      &rd->address, reason);

    } else {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                       "llm redis %V still unavailable: %s",
                       &rd->address, reason);
    }

    if (!rd->reconnect.timer_set) {
        ngx_add_timer(&rd->reconnect, rd->backoff);

        rd->backoff *= 2;
        if (rd->backoff > NGX_HTTP_LLM_REDIS_BACKOFF_MAX) {
            rd->backoff = NGX_HTTP_LLM_REDIS_BACKOFF_MAX;
        }
    }
}


/* we give up on the link: every pending command is answered NULL */

static void
ngx_http_llm_redis_close(ngx_http_llm_redis_t *rd, const char *reason)
{
    redisAsyncContext  *ac;

    ac = rd->ac;

    if (ac == NULL) {
        return;
    }

    ngx_http_llm_redis_down(rd, ac, reason);

    /* inside one of its callbacks, hiredis frees after it returns */

    redisAsyncFree(ac);
}


static void
ngx_http_llm_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_llm_redis_t *rd = ev->data;

    if (rd->exiting || rd->ac != NULL) {
        return;
    }

    ngx_http_llm_redis_connect(rd);
}


static void
ngx_http_llm_redis_broken_handler(ngx_event_t *ev)
{
    ngx_http_llm_redis_t *rd = ev->data;

    ngx_http_llm_redis_close(rd, "cannot add its socket's events");
}


static void
ngx_http_llm_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_http_llm_redis_t *rd = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees ac when this returns */
        ngx_http_llm_redis_down(rd, ac, ac->err ? ac->errstr
                                                   : "connect failed");
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, rd->log, 0,
                   "llm redis %V connected", &rd->address);
}


static void
ngx_http_llm_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_llm_redis_t *rd = ac->data;

    ngx_http_llm_redis_down(rd, ac, (status == REDIS_OK || ac->err == 0)
                                    ? "connection closed" : ac->errstr);
}


/* --- commands ------------------------------------------------------------ */


static ngx_http_llm_redis_cmd_t *
ngx_http_llm_redis_cmd_get(ngx_http_llm_redis_t *rd,
    ngx_http_llm_redis_handler_pt handler, void *data)
{
    ngx_queue_t               *q;
    ngx_http_llm_redis_cmd_t  *cmd;

    if (!ngx_queue_empty(&rd->free)) {
        q = ngx_queue_head(&rd->free);
        ngx_queue_remove(q);

        cmd = ngx_queue_data(q, ngx_http_llm_redis_cmd_t, queue);

    } else {
        cmd = ngx_pcalloc(rd->pool, sizeof(ngx_http_llm_redis_cmd_t));
        if (cmd == NULL) {
            return NULL;
        }

        cmd->redis = rd;

        /*
         * Not cancelable: a worker shutting down waits for the answer
         * (or the timeout) of a request that waits for it.
         */

        cmd->timer.handler = ngx_http_llm_redis_timeout_handler;
        cmd->timer.data = cmd;
        cmd->timer.log = rd->log;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->script = NULL;
    cmd->retried = 0;

    return cmd;
}


static void
ngx_http_llm_redis_cmd_put(ngx_http_llm_redis_cmd_t *cmd)
{
    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    cmd->generation++;
    cmd->handler = NULL;
    cmd->data = NULL;

    ngx_queue_insert_head(&cmd->redis->free, &cmd->queue);
}


static void
ngx_http_llm_redis_cmd_sent(ngx_http_llm_redis_cmd_t *cmd)
{
    ngx_add_timer(&cmd->timer, cmd->redis->timeout);
}


static ngx_int_t
ngx_http_llm_redis_command(ngx_http_llm_redis_t *rd,
    ngx_http_llm_redis_handler_pt handler, void *data, int argc,
    const char **argv, const size_t *argvlen)
{
    ngx_http_llm_redis_cmd_t  *cmd;

    cmd = ngx_http_llm_redis_cmd_get(rd, handler, data);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    if (redisAsyncCommandArgv(rd->ac, ngx_http_llm_redis_reply, cmd,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
        ngx_http_llm_redis_cmd_put(cmd);
        return NGX_ERROR;
    }

    ngx_http_llm_redis_cmd_sent(cmd);

    return NGX_OK;
}


/* "EVALSHA sha" or "EVAL text", then the arguments kept in cmd->tail */

static ngx_int_t
ngx_http_llm_redis_send_script(ngx_http_llm_redis_cmd_t *cmd,
    ngx_uint_t by_sha)
{
    size_t                        size, len;
    u_char                       *p;
    ngx_http_llm_redis_t         *rd;
    ngx_http_llm_redis_script_t  *s;

    rd = cmd->redis;
    s = cmd->script;

    if (rd->ac == NULL) {
        return NGX_DECLINED;
    }

    size = sizeof("*\r\n$7\r\nEVALSHA\r\n$\r\n\r\n") - 1
           + 2 * NGX_SIZE_T_LEN + s->text.len + cmd->tail_len;

    if (size > rd->buf_size) {
        if (rd->buf) {
            ngx_free(rd->buf);
        }

        rd->buf_size = 0;

        rd->buf = ngx_alloc(size, rd->log);
        if (rd->buf == NULL) {
            return NGX_ERROR;
        }

        rd->buf_size = size;
    }

    if (by_sha) {
        p = ngx_sprintf(rd->buf, "*%ui\r\n$7\r\nEVALSHA\r\n$40\r\n",
                        cmd->nelts + 2);
        p = ngx_cpymem(p, s->sha1, 40);

    } else {
        p = ngx_sprintf(rd->buf, "*%ui\r\n$4\r\nEVAL\r\n$%uz\r\n",
                        cmd->nelts + 2, s->text.len);
        p = ngx_cpymem(p, s->text.data, s->text.len);
    }

    *p++ = CR; *p++ = LF;
    p = ngx_cpymem(p, cmd->tail, cmd->tail_len);

    len = p - rd->buf;

    /* hiredis copies the command into its output buffer */

    if (redisAsyncFormattedCommand(rd->ac, ngx_http_llm_redis_reply, cmd,
                                   (const char *) rd->buf, len)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* hiredis calls this once per command sent: a reply, or NULL */

static void
ngx_http_llm_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                *reply = r;
    ngx_http_llm_redis_cmd_t  *cmd = privdata;

    void                           *data;
    ngx_http_llm_redis_t           *rd;
    ngx_http_llm_redis_handler_pt   handler;

    rd = cmd->redis;

    if (reply == NULL) {
        /* hiredis is freeing ac: say so before anyone sends again */
        ngx_http_llm_redis_down(rd, ac, ac->err ? ac->errstr
                                                   : "connection closed");

    } else if (cmd->script && !cmd->retried
               && reply->type == REDIS_REPLY_ERROR
               && reply->len >= sizeof("NOSCRIPT") - 1
               && ngx_strncmp(reply->str, "NOSCRIPT", sizeof("NOSCRIPT") - 1)
                  == 0)
    {
        /* a flush or a failover lost the script: send its text */

        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "llm redis %V lost script %*s, sending it again",
                      &rd->address, (size_t) 40, cmd->script->sha1);

        cmd->retried = 1;

        if (ngx_http_llm_redis_send_script(cmd, 0) == NGX_OK) {
            /* this callback comes again, under the same timer */
            return;
        }

        reply = NULL;
    }

    handler = cmd->handler;
    data = cmd->data;

    ngx_http_llm_redis_cmd_put(cmd);

    if (handler && !rd->exiting) {
        handler(data, reply);
    }
}


/*
 * Redis did not answer in time.  A command cannot be taken back from
 * hiredis: the link is closed, which answers the commands queued behind
 * this one NULL and frees it, then its own caller is answered NULL.
 */

static void
ngx_http_llm_redis_timeout_handler(ngx_event_t *ev)
{
    ngx_http_llm_redis_cmd_t *cmd = ev->data;

    void                           *data;
    ngx_http_llm_redis_t           *rd;
    ngx_http_llm_redis_handler_pt   handler;

    rd = cmd->redis;

    handler = cmd->handler;
    data = cmd->data;

    cmd->handler = NULL;
    cmd->data = NULL;

    /* first the link, so that the handler sends nothing more on it */

    ngx_http_llm_redis_close(rd, "timed out");

    if (handler) {
        handler(data, NULL);
    }
}


/* --- the adapter ---------------------------------------------------------- */


static void
ngx_http_llm_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t      *c;
    ngx_http_llm_redis_t  *rd;

    c = rev->data;
    rd = c->data;

    if (rd->ac == NULL || rd->conn != c) {
        return;
    }

    rd->entered = 1;
    redisAsyncHandleRead(rd->ac);
    rd->entered = 0;

    if (rd->dead) {
        ngx_http_llm_redis_free_connection(rd->dead);
        rd->dead = NULL;
    }
}


static void
ngx_http_llm_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t      *c;
    ngx_http_llm_redis_t  *rd;

    c = wev->data;
    rd = c->data;

    if (rd->ac == NULL || rd->conn != c) {
        return;
    }

    rd->entered = 1;
    redisAsyncHandleWrite(rd->ac);
    rd->entered = 0;

    if (rd->dead) {
        ngx_http_llm_redis_free_connection(rd->dead);
        rd->dead = NULL;
    }
}


/* level-triggered: redisAsyncHandleRead() reads once, then waits */

static void
ngx_http_llm_redis_add_read(void *privdata)
{
    ngx_http_llm_redis_t *rd = privdata;

    if (rd->reading || rd->conn == NULL) {
        return;
    }

    rd->reading = 1;

    if (ngx_add_event(rd->conn->read, NGX_READ_EVENT, NGX_LEVEL_EVENT)
        != NGX_OK)
    {
        ngx_post_event(&rd->broken, &ngx_posted_events);
    }
}


static void
ngx_http_llm_redis_del_read(void *privdata)
{
    ngx_http_llm_redis_t *rd = privdata;

    if (!rd->reading || rd->conn == NULL) {
        return;
    }

    rd->reading = 0;

    if (ngx_del_event(rd->conn->read, NGX_READ_EVENT, 0) != NGX_OK) {
        ngx_post_event(&rd->broken, &ngx_posted_events);
    }
}


static void
ngx_http_llm_redis_add_write(void *privdata)
{
    ngx_http_llm_redis_t *rd = privdata;

    if (rd->writing || rd->conn == NULL) {
        return;
    }

    rd->writing = 1;

    if (ngx_add_event(rd->conn->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT)
        != NGX_OK)
    {
        ngx_post_event(&rd->broken, &ngx_posted_events);
    }
}


static void
ngx_http_llm_redis_del_write(void *privdata)
{
    ngx_http_llm_redis_t *rd = privdata;

    if (!rd->writing || rd->conn == NULL) {
        return;
    }

    rd->writing = 0;

    if (ngx_del_event(rd->conn->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
        ngx_post_event(&rd->broken, &ngx_posted_events);
    }
}


/*
 * hiredis frees the context and closes the socket right after this: the
 * events go without a system call, and the connection is given back now
 * or, inside one of our handlers, when it returns.
 */

static void
ngx_http_llm_redis_cleanup(void *privdata)
{
    ngx_http_llm_redis_t *rd = privdata;

    ngx_connection_t  *c;

    c = rd->conn;

    if (c == NULL) {
        return;
    }

    rd->conn = NULL;

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    rd->reading = 0;
    rd->writing = 0;

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    if (rd->broken.posted) {
        ngx_delete_posted_event(&rd->broken);
    }

    if (rd->entered) {
        rd->dead = c;
        return;
    }

    ngx_http_llm_redis_free_connection(c);
}


static void
ngx_http_llm_redis_free_connection(ngx_connection_t *c)
{
    c->read->closed = 1;
    c->write->closed = 1;

    ngx_free_connection(c);

    /* hiredis closes the socket; stale events see fd -1 */
    c->fd = (ngx_socket_t) -1;
}
