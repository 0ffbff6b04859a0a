
/*
 * Copyright (C) ngx_llm developers
 *
 * The worker's side of engine/proto: the unix-socket handshake (connect
 * without blocking, hello, welcome with three descriptors), the mapped
 * region, both doorbells, slot claim/submit/cancel/free, and reconnecting
 * with backoff when the engine goes away.
 *
 * Every value read from the region is treated as hostile: the header is
 * checked once and copied (e->hdr), and all geometry comes from that
 * copy; rings are read by llm_ring_get(), which bounds every index.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <sys/mman.h>

#include "ngx_http_llm_module.h"
#include "llm_ring.h"


static void ngx_http_llm_connect(ngx_http_llm_engine_t *e);
static void ngx_http_llm_reconnect_handler(ngx_event_t *ev);
static void ngx_http_llm_sock_write_handler(ngx_event_t *wev);
static void ngx_http_llm_sock_read_handler(ngx_event_t *rev);
static ngx_int_t ngx_http_llm_send_hello(ngx_http_llm_engine_t *e);
static ngx_int_t ngx_http_llm_recv_welcome(ngx_http_llm_engine_t *e);
static ngx_int_t ngx_http_llm_attach(ngx_http_llm_engine_t *e);
static void ngx_http_llm_bell_handler(ngx_event_t *rev);
static void ngx_http_llm_process_all(ngx_http_llm_engine_t *e,
    ngx_http_llm_error_t *err);
static void ngx_http_llm_lost(ngx_http_llm_engine_t *e, ngx_err_t err,
    const char *why);
static void ngx_http_llm_failed(ngx_http_llm_engine_t *e, ngx_uint_t level,
    ngx_err_t err, const char *fmt, ...);
static void ngx_http_llm_close(ngx_http_llm_engine_t *e);
static void ngx_http_llm_ring(ngx_http_llm_engine_t *e);
static const char *ngx_http_llm_hello_status(ngx_uint_t status);


ngx_int_t
ngx_http_llm_engine_init(ngx_http_llm_engine_t *e, ngx_log_t *log)
{
    e->log = log;
    e->state = NGX_HTTP_LLM_DISCONNECTED;
    e->engine_bell = NGX_INVALID_FILE;
    e->backoff = NGX_HTTP_LLM_BACKOFF_MIN;

    ngx_queue_init(&e->requests);
    ngx_queue_init(&e->waiting);

    e->kick.handler = ngx_http_llm_queue_handler;
    e->kick.data = e;
    e->kick.log = log;

    e->retry.handler = ngx_http_llm_queue_handler;
    e->retry.data = e;
    e->retry.log = log;

    e->reconnect.handler = ngx_http_llm_reconnect_handler;
    e->reconnect.data = e;
    e->reconnect.log = log;

    /* a pending reconnect must not keep an exiting worker alive */
    e->reconnect.cancelable = 1;

    ngx_http_llm_connect(e);

    return NGX_OK;
}


void
ngx_http_llm_engine_exit(ngx_http_llm_engine_t *e)
{
    ngx_queue_t            *q;
    ngx_http_llm_choice_t  *ch;

    if (e->log == NULL) {
        /* never initialised in this process */
        return;
    }

    /* the engine stops generating for requests this worker abandons */

    while (!ngx_queue_empty(&e->requests)) {
        q = ngx_queue_head(&e->requests);
        ch = ngx_queue_data(q, ngx_http_llm_choice_t, queue);

        ngx_http_llm_detach(ch->ctx);
    }

    while (!ngx_queue_empty(&e->waiting)) {
        q = ngx_queue_head(&e->waiting);

        ngx_http_llm_detach(ngx_queue_data(q, ngx_http_llm_ctx_t, wait));
    }

    if (e->kick.posted) {
        ngx_delete_posted_event(&e->kick);
    }

    if (e->retry.timer_set) {
        ngx_del_timer(&e->retry);
    }

    if (e->reconnect.timer_set) {
        ngx_del_timer(&e->reconnect);
    }

    ngx_http_llm_close(e);
}


static void
ngx_http_llm_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_llm_engine_t  *e = ev->data;

    ngx_http_llm_connect(e);
}


static void
ngx_http_llm_connect(ngx_http_llm_engine_t *e)
{
    int                rc;
    ngx_int_t          event;
    ngx_err_t          err;
    ngx_socket_t       s;
    ngx_connection_t  *c;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, e->log, 0,
                   "llm connect to engine \"%V\"", &e->name);

    s = ngx_socket(AF_UNIX, SOCK_STREAM, 0);

    if (s == (ngx_socket_t) -1) {
        ngx_http_llm_failed(e, NGX_LOG_ALERT, ngx_socket_errno,
                            ngx_socket_n " failed");
        return;
    }

    c = ngx_get_connection(s, e->log);

    if (c == NULL) {
        if (ngx_close_socket(s) == -1) {
            ngx_log_error(NGX_LOG_ALERT, e->log, ngx_socket_errno,
                          ngx_close_socket_n " failed");
        }

        ngx_http_llm_failed(e, NGX_LOG_ERR, 0, "no free connection");
        return;
    }

    c->data = e;
    c->read->handler = ngx_http_llm_sock_read_handler;
    c->write->handler = ngx_http_llm_sock_write_handler;
    c->read->log = e->log;
    c->write->log = e->log;

    /* the handshake timer must not keep an exiting worker alive */
    c->read->cancelable = 1;

    e->sock = c;
    e->state = NGX_HTTP_LLM_CONNECTING;
    e->hello_sent = 0;
    e->welcome_len = 0;
    e->nfds = 0;

    if (ngx_nonblocking(s) == -1) {
        ngx_http_llm_failed(e, NGX_LOG_ALERT, ngx_socket_errno,
                            ngx_nonblocking_n " failed");
        return;
    }

    rc = connect(s, (struct sockaddr *) &e->sockaddr, e->socklen);

    if (rc == -1) {
        err = ngx_socket_errno;

        if (err != NGX_EINPROGRESS) {
            /* EAGAIN: the engine's backlog is full; retry later too */
            ngx_http_llm_failed(e, NGX_LOG_ERR, err, "connect() failed");
            return;
        }
    }

    if (ngx_add_conn) {
        if (ngx_add_conn(c) == NGX_ERROR) {
            ngx_http_llm_failed(e, NGX_LOG_ALERT, 0, "ngx_add_conn() failed");
            return;
        }

    } else {
        event = (ngx_event_flags & NGX_USE_CLEAR_EVENT) ? NGX_CLEAR_EVENT
                                                        : NGX_LEVEL_EVENT;

        if (ngx_add_event(c->read, NGX_READ_EVENT, event) != NGX_OK
            || (rc == -1
                && ngx_add_event(c->write, NGX_WRITE_EVENT, event) != NGX_OK))
        {
            ngx_http_llm_failed(e, NGX_LOG_ALERT, 0,
                                "ngx_add_event() failed");
            return;
        }
    }

    ngx_add_timer(c->read, NGX_HTTP_LLM_HANDSHAKE_TIME);

    if (rc == 0 && ngx_http_llm_send_hello(e) != NGX_OK) {
        return;
    }

    /* connect() in progress: the write handler sends the hello */
}


static void
ngx_http_llm_sock_write_handler(ngx_event_t *wev)
{
    int                     err;
    socklen_t               len;
    ngx_connection_t       *c;
    ngx_http_llm_engine_t  *e;

    c = wev->data;
    e = c->data;

    if (e->state == NGX_HTTP_LLM_CONNECTING && !e->hello_sent) {

        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_http_llm_failed(e, NGX_LOG_ERR, err, "connect() failed");
            return;
        }

        if (ngx_http_llm_send_hello(e) != NGX_OK) {
            return;
        }
    }

    /* nothing else is ever written: stop level-triggered write events */

    if ((ngx_event_flags & NGX_USE_LEVEL_EVENT) && wev->active) {
        if (ngx_del_event(wev, NGX_WRITE_EVENT, 0) != NGX_OK) {
            ngx_http_llm_failed(e, NGX_LOG_ALERT, 0,
                                "ngx_del_event() failed");
        }
    }
}


static ngx_int_t
ngx_http_llm_send_hello(ngx_http_llm_engine_t *e)
{
    ssize_t      n;
    llm_hello_t  hello;

    ngx_memzero(&hello, sizeof(llm_hello_t));

    hello.magic = LLM_PROTO_MAGIC;
    hello.version = LLM_PROTO_VERSION;
    hello.pid = (int32_t) ngx_pid;

    /* 16 bytes into a fresh unix socket: all of it or nothing */

    n = send(e->sock->fd, &hello, sizeof(llm_hello_t), MSG_NOSIGNAL);

    if (n != (ssize_t) sizeof(llm_hello_t)) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, (n == -1) ? ngx_socket_errno : 0,
                            "sending the hello failed");
        return NGX_ERROR;
    }

    e->hello_sent = 1;

    return NGX_OK;
}


static void
ngx_http_llm_sock_read_handler(ngx_event_t *rev)
{
    u_char                  buf[64];
    ssize_t                 n;
    ngx_err_t               err;
    ngx_int_t               rc;
    ngx_connection_t       *c;
    ngx_http_llm_engine_t  *e;

    c = rev->data;
    e = c->data;

    if (e->state == NGX_HTTP_LLM_CONNECTING) {

        if (rev->timedout) {
            ngx_http_llm_failed(e, NGX_LOG_ERR, NGX_ETIMEDOUT,
                                "handshake timed out");
            return;
        }

        rc = ngx_http_llm_recv_welcome(e);

        if (rc == NGX_AGAIN || rc == NGX_ERROR) {
            /* NGX_ERROR: the connection is already closed */
            return;
        }

        if (ngx_http_llm_attach(e) != NGX_OK) {
            return;
        }

        /* the welcome may have come right before the engine closed */
    }

    /*
     * Nothing travels on the socket after the welcome: it is readable
     * only when the engine closed it (or broke the protocol).
     */

    for ( ;; ) {
        n = recv(c->fd, buf, sizeof(buf), 0);

        if (n == 0) {
            ngx_http_llm_lost(e, 0, "the engine closed the connection");
            return;
        }

        if (n > 0) {
            ngx_http_llm_lost(e, 0, "unexpected data on the socket");
            return;
        }

        err = ngx_socket_errno;

        if (err == NGX_EAGAIN) {
            return;
        }

        if (err != NGX_EINTR) {
            ngx_http_llm_lost(e, err, "recv() failed");
            return;
        }
    }
}


/*
 * Reads llm_welcome_t, which may come in pieces; its descriptors come
 * with its first byte.  NGX_OK: all of it is in e->welcome and e->fds.
 */

static ngx_int_t
ngx_http_llm_recv_welcome(ngx_http_llm_engine_t *e)
{
    int             *fds;
    ssize_t          n;
    ngx_err_t        err;
    ngx_uint_t       i, nfds, extra;
    struct iovec     iov;
    struct msghdr    msg;
    struct cmsghdr  *cmsg;

    union {
        struct cmsghdr  cm;
        char            space[CMSG_SPACE(4 * sizeof(int))];
    } control;

    while (e->welcome_len < sizeof(llm_welcome_t)) {

        iov.iov_base = e->welcome + e->welcome_len;
        iov.iov_len = sizeof(llm_welcome_t) - e->welcome_len;

        ngx_memzero(&msg, sizeof(struct msghdr));
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = &control;
        msg.msg_controllen = sizeof(control);

        n = recvmsg(e->sock->fd, &msg, MSG_CMSG_CLOEXEC);

        if (n == -1) {
            err = ngx_socket_errno;

            if (err == NGX_EAGAIN) {
                return NGX_AGAIN;
            }

            if (err == NGX_EINTR) {
                continue;
            }

            ngx_http_llm_failed(e, NGX_LOG_ERR, err, "recvmsg() failed");
            return NGX_ERROR;
        }

        /* keep every descriptor that came, so that none leaks */

        extra = 0;

        for (cmsg = CMSG_FIRSTHDR(&msg);
             cmsg != NULL;
             cmsg = CMSG_NXTHDR(&msg, cmsg))
        {
            if (cmsg->cmsg_level != SOL_SOCKET
                || cmsg->cmsg_type != SCM_RIGHTS
                || cmsg->cmsg_len < CMSG_LEN(0))
            {
                continue;
            }

            fds = (int *) CMSG_DATA(cmsg);
            nfds = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            for (i = 0; i < nfds; i++) {
                if (e->nfds < 3) {
                    e->fds[e->nfds++] = fds[i];

                } else {
                    (void) close(fds[i]);
                    extra = 1;
                }
            }
        }

        if (extra || (msg.msg_flags & MSG_CTRUNC)) {
            ngx_http_llm_failed(e, NGX_LOG_ERR, 0,
                                "the welcome carried too many descriptors");
            return NGX_ERROR;
        }

        if (n == 0) {
            ngx_http_llm_failed(e, NGX_LOG_ERR, 0,
                                "the engine closed the connection "
                                "during the handshake");
            return NGX_ERROR;
        }

        e->welcome_len += n;
    }

    return NGX_OK;
}


/* checks the welcome, maps the region, watches this worker's doorbell */

static ngx_int_t
ngx_http_llm_attach(ngx_http_llm_engine_t *e)
{
    u_char            *base;
    ngx_int_t          event;
    const char        *why;
    llm_welcome_t      w;
    struct stat        st;
    ngx_connection_t  *c;

    ngx_memcpy(&w, e->welcome, sizeof(llm_welcome_t));

    if (w.magic != LLM_PROTO_MAGIC || w.version != LLM_PROTO_VERSION) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, 0,
                            "the engine speaks another protocol: "
                            "magic %08xD version %uD, expected %08xD "
                            "version %uD", w.magic, (uint32_t) w.version,
                            LLM_PROTO_MAGIC, (uint32_t) LLM_PROTO_VERSION);
        return NGX_ERROR;
    }

    if (w.status != LLM_HELLO_OK) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, 0,
                            "the engine refused this worker: %s",
                            ngx_http_llm_hello_status(w.status));
        return NGX_ERROR;
    }

    if (e->nfds != 3) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, 0,
                            "the welcome carried %ui descriptors, not 3",
                            e->nfds);
        return NGX_ERROR;
    }

    if (w.worker_id == 0 || w.worker_id > LLM_MAX_WORKER_ID) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, 0, "bad worker id in welcome");
        return NGX_ERROR;
    }

    if (w.shm_size < sizeof(llm_shm_header_t)
        || w.shm_size > NGX_MAX_SIZE_T_VALUE)
    {
        ngx_http_llm_failed(e, NGX_LOG_ERR, 0, "bad region size in welcome");
        return NGX_ERROR;
    }

    /* touching pages past the end of the memfd would raise SIGBUS */

    if (fstat(e->fds[0], &st) == -1) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, ngx_errno, "fstat() failed");
        return NGX_ERROR;
    }

    if (st.st_size < 0 || (uint64_t) st.st_size < w.shm_size) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, 0,
                            "the region is smaller than the welcome says");
        return NGX_ERROR;
    }

    base = mmap(NULL, (size_t) w.shm_size, PROT_READ|PROT_WRITE, MAP_SHARED,
                e->fds[0], 0);

    if (base == MAP_FAILED) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, ngx_errno, "mmap() failed");
        return NGX_ERROR;
    }

    e->base = base;
    e->size = (size_t) w.shm_size;

    /* the engine never changes the header but its stats: check a copy */

    ngx_memcpy(&e->hdr, base, offsetof(llm_shm_header_t, stats));

    why = llm_shm_header_check(&e->hdr, w.shm_size);

    if (why == NULL && e->hdr.epoch != w.epoch) {
        why = "epoch differs from the welcome's";
    }

    if (why) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, 0, "bad shared memory: %s", why);
        return NGX_ERROR;
    }

    /* the doorbell is drained until EAGAIN */

    if (ngx_nonblocking(e->fds[2]) == -1) {
        ngx_http_llm_failed(e, NGX_LOG_ALERT, ngx_errno,
                            ngx_nonblocking_n " failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(e->fds[2], e->log);

    if (c == NULL) {
        ngx_http_llm_failed(e, NGX_LOG_ERR, 0, "no free connection");
        return NGX_ERROR;
    }

    e->fds[2] = -1;
    e->bell = c;

    c->data = e;
    c->read->handler = ngx_http_llm_bell_handler;
    c->read->log = e->log;
    c->write->log = e->log;

    event = (ngx_event_flags & NGX_USE_CLEAR_EVENT) ? NGX_CLEAR_EVENT
                                                    : NGX_LEVEL_EVENT;

    if (ngx_add_event(c->read, NGX_READ_EVENT, event) != NGX_OK) {
        ngx_http_llm_failed(e, NGX_LOG_ALERT, 0, "ngx_add_event() failed");
        return NGX_ERROR;
    }

    (void) close(e->fds[0]);

    e->engine_bell = e->fds[1];
    e->nfds = 0;

    e->worker_id = w.worker_id;
    e->serial++;
    e->next_slot = (w.worker_id * 7) % e->hdr.n_slots;
    e->state = NGX_HTTP_LLM_READY;
    e->backoff = NGX_HTTP_LLM_BACKOFF_MIN;
    e->failures = 0;

    if (e->sock->read->timer_set) {
        ngx_del_timer(e->sock->read);
    }

    ngx_log_error(NGX_LOG_NOTICE, e->log, 0,
                  "llm engine \"%V\" connected: worker id %uD, epoch %uL, "
                  "%uD slots, %uD models",
                  &e->name, e->worker_id, e->hdr.epoch, e->hdr.n_slots,
                  (uint32_t) e->hdr.n_models);

    return NGX_OK;
}


static void
ngx_http_llm_bell_handler(ngx_event_t *rev)
{
    ssize_t                 n;
    uint64_t                value;
    ngx_err_t               err;
    ngx_connection_t       *c;
    ngx_http_llm_engine_t  *e;

    c = rev->data;
    e = c->data;

    /* edge-triggered: empty the eventfd, then look at every slot */

    for ( ;; ) {
        n = read(c->fd, &value, sizeof(uint64_t));

        if (n == (ssize_t) sizeof(uint64_t)) {
            continue;
        }

        if (n == -1) {
            err = ngx_errno;

            if (err == NGX_EINTR) {
                continue;
            }

            if (err != NGX_EAGAIN) {
                ngx_log_error(NGX_LOG_ALERT, e->log, err,
                              "llm engine \"%V\": read() from the doorbell "
                              "failed", &e->name);
            }
        }

        break;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, e->log, 0,
                   "llm doorbell from engine \"%V\"", &e->name);

    if (e->state == NGX_HTTP_LLM_READY) {
        ngx_http_llm_process_all(e, NULL);
    }
}


/*
 * Drains (err NULL) or fails every choice in flight.  Each is moved back
 * to e->requests before it is handled, so a request that ends, or any
 * other that ends meanwhile, takes its choices off whichever list they
 * are on.
 */

static void
ngx_http_llm_process_all(ngx_http_llm_engine_t *e, ngx_http_llm_error_t *err)
{
    ngx_queue_t             work, *q;
    ngx_http_llm_choice_t  *ch;

    if (ngx_queue_empty(&e->requests)) {
        return;
    }

    ngx_queue_init(&work);
    ngx_queue_add(&work, &e->requests);
    ngx_queue_init(&e->requests);

    while (!ngx_queue_empty(&work)) {
        q = ngx_queue_head(&work);

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&e->requests, q);

        ch = ngx_queue_data(q, ngx_http_llm_choice_t, queue);

        ngx_http_llm_process(ch, err);
    }
}


/* a working connection broke: end what is in flight, reconnect */

static void
ngx_http_llm_lost(ngx_http_llm_engine_t *e, ngx_err_t err, const char *why)
{
    ngx_http_llm_error_t  error;

    ngx_log_error(NGX_LOG_ERR, e->log, err, "llm engine \"%V\" lost: %s",
                  &e->name, why);

    /* results the engine wrote before it went are still delivered */

    ngx_http_llm_process_all(e, NULL);

    /* from here on the region is not touched */

    e->state = NGX_HTTP_LLM_DISCONNECTED;

    ngx_http_llm_error(&error, NGX_HTTP_BAD_GATEWAY, "server_error", NULL,
                       "engine_unavailable",
                       "The inference engine went away");

    ngx_http_llm_process_all(e, &error);

    ngx_http_llm_close(e);

    e->backoff = NGX_HTTP_LLM_BACKOFF_MIN;
    e->failures = 0;

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&e->reconnect, e->backoff);
    }
}


/* connecting or the handshake failed: close, retry with backoff */

static void
ngx_http_llm_failed(ngx_http_llm_engine_t *e, ngx_uint_t level, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    why[NGX_MAX_ERROR_STR];

    va_start(args, fmt);
    p = ngx_vslprintf(why, why + sizeof(why) - 1, fmt, args);
    va_end(args);

    *p = '\0';

    /* an engine that is down is said once, then only at info level */

    if (e->failures++ && level >= NGX_LOG_ERR) {
        level = NGX_LOG_INFO;
    }

    ngx_log_error(level, e->log, err,
                  "llm engine \"%V\" at \"%V\": %s, retry in %M ms",
                  &e->name, &e->path, why, e->backoff);

    ngx_http_llm_close(e);

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&e->reconnect, e->backoff);
    }

    e->backoff = ngx_min(e->backoff * 2, NGX_HTTP_LLM_BACKOFF_MAX);
}


static void
ngx_http_llm_close(ngx_http_llm_engine_t *e)
{
    ngx_uint_t  i;

    e->state = NGX_HTTP_LLM_DISCONNECTED;

    if (e->sock) {
        ngx_close_connection(e->sock);
        e->sock = NULL;
    }

    if (e->bell) {
        /*
         * The engine holds the same open eventfd: close() alone would
         * leave it registered with epoll, so it is removed first.
         */

        if (e->bell->read->active) {
            (void) ngx_del_event(e->bell->read, NGX_READ_EVENT, 0);
        }

        ngx_close_connection(e->bell);
        e->bell = NULL;
    }

    if (e->engine_bell != NGX_INVALID_FILE) {
        (void) close(e->engine_bell);
        e->engine_bell = NGX_INVALID_FILE;
    }

    if (e->base) {
        if (munmap(e->base, e->size) == -1) {
            ngx_log_error(NGX_LOG_ALERT, e->log, ngx_errno,
                          "llm engine \"%V\": munmap() failed", &e->name);
        }

        e->base = NULL;
        e->size = 0;
    }

    for (i = 0; i < e->nfds; i++) {
        if (e->fds[i] != -1) {
            (void) close(e->fds[i]);
        }
    }

    e->nfds = 0;
    e->welcome_len = 0;
    e->hello_sent = 0;
}


static void
ngx_http_llm_ring(ngx_http_llm_engine_t *e)
{
    uint64_t  one = 1;

    if (write(e->engine_bell, &one, sizeof(uint64_t)) == -1
        && ngx_errno != NGX_EAGAIN)
    {
        ngx_log_error(NGX_LOG_ALERT, e->log, ngx_errno,
                      "llm engine \"%V\": write() to the doorbell failed",
                      &e->name);
    }
}


static const char *
ngx_http_llm_hello_status(ngx_uint_t status)
{
    switch (status) {
    case LLM_HELLO_BAD_MAGIC:
        return "bad magic";
    case LLM_HELLO_BAD_VERSION:
        return "protocol version mismatch";
    case LLM_HELLO_DENIED:
        return "denied";
    case LLM_HELLO_FULL:
        return "no room for another worker";
    default:
        return "unknown status";
    }
}


llm_shm_model_t *
ngx_http_llm_engine_model(ngx_http_llm_engine_t *e, ngx_str_t *name)
{
    size_t            len;
    ngx_uint_t        i;
    llm_shm_model_t  *m;

    if (e->state != NGX_HTTP_LLM_READY) {
        return NULL;
    }

    for (i = 0; i < e->hdr.n_models; i++) {
        m = &e->hdr.models[i];

        len = ngx_strnlen((u_char *) m->name, LLM_MODEL_NAME_MAX);

        if (len == name->len && len < LLM_MODEL_NAME_MAX
            && ngx_strncmp(m->name, name->data, len) == 0)
        {
            return m;
        }
    }

    return NULL;
}


/*
 * Claims a free slot, writes the request into it and hands it over.
 * NGX_DECLINED: the request does not fit in req_max; NGX_BUSY: no slot.
 */

ngx_int_t
ngx_http_llm_slot_submit(ngx_http_llm_choice_t *ch)
{
    uint32_t                w, gen, i, k, n;
    llm_slot_t             *s;
    llm_shm_header_t       *h;
    ngx_http_llm_engine_t  *e;

    e = ch->ctx->engine;
    h = &e->hdr;

    if (e->state != NGX_HTTP_LLM_READY) {
        return NGX_BUSY;
    }

    if (ch->req.len > h->req_max) {
        return NGX_DECLINED;
    }

    n = h->n_slots;

    for (k = 0; k < n; k++) {
        i = (uint32_t) ((e->next_slot + k) % n);
        s = llm_shm_slot(e->base, h, i);

        w = atomic_load_explicit(&s->state, memory_order_relaxed);

        if (llm_slot_state(w) != LLM_SLOT_FREE) {
            continue;
        }

        if (!atomic_compare_exchange_strong_explicit(&s->state, &w,
                 llm_slot_word(LLM_SLOT_CLAIMED, e->worker_id),
                 memory_order_acq_rel, memory_order_relaxed))
        {
            continue;
        }

        /* CLAIMED: only this worker writes the slot until SUBMITTED */

        gen = atomic_fetch_add_explicit(&s->generation, 1,
                                        memory_order_relaxed) + 1;

        atomic_store_explicit(&s->head, 0, memory_order_relaxed);
        atomic_store_explicit(&s->tail, 0, memory_order_relaxed);
        atomic_store_explicit(&s->engine_waiting, 0, memory_order_relaxed);

        ngx_memcpy(llm_slot_req(s, h), ch->req.data, ch->req.len);
        s->req_len = (uint32_t) ch->req.len;

        /* publishes all of the above to the engine */

        atomic_store_explicit(&s->state,
                              llm_slot_word(LLM_SLOT_SUBMITTED, e->worker_id),
                              memory_order_release);

        ch->slot = i;
        ch->generation = gen;
        ch->serial = e->serial;
        ch->attached = 1;

        ngx_queue_insert_tail(&e->requests, &ch->queue);

        e->next_slot = i + 1;

        ngx_http_llm_ring(e);

        return NGX_OK;
    }

    return NGX_BUSY;
}


/* the slot's state if it is still this choice's, else NGX_ERROR */

ngx_int_t
ngx_http_llm_slot_state(ngx_http_llm_choice_t *ch)
{
    uint32_t                w, st;
    llm_slot_t             *s;
    ngx_http_llm_engine_t  *e;

    e = ch->ctx->engine;

    if (e->state != NGX_HTTP_LLM_READY || e->serial != ch->serial) {
        return NGX_ERROR;
    }

    s = llm_shm_slot(e->base, &e->hdr, ch->slot);

    /* acquire: FINISHED is stored after the last event was published */

    w = atomic_load_explicit(&s->state, memory_order_acquire);
    st = llm_slot_state(w);

    if (llm_slot_owner(w) != e->worker_id
        || atomic_load_explicit(&s->generation, memory_order_relaxed)
           != ch->generation
        || (st != LLM_SLOT_SUBMITTED && st != LLM_SLOT_RUNNING
            && st != LLM_SLOT_FINISHED))
    {
        return NGX_ERROR;
    }

    return st;
}


/* the next event; buf holds LLM_EVENT_MAX bytes */

ngx_int_t
ngx_http_llm_slot_event(ngx_http_llm_choice_t *ch, llm_event_t *ev,
    u_char *buf)
{
    llm_slot_t             *s;
    ngx_http_llm_engine_t  *e;

    e = ch->ctx->engine;

    if (e->state != NGX_HTTP_LLM_READY || e->serial != ch->serial) {
        return LLM_RING_CORRUPT;
    }

    s = llm_shm_slot(e->base, &e->hdr, ch->slot);

    return llm_ring_get(s, llm_slot_ring(s, &e->hdr), e->hdr.ring_size,
                        ev, buf);
}


/* after consuming events: wake the engine if it waits for ring space */

void
ngx_http_llm_slot_drained(ngx_http_llm_choice_t *ch)
{
    llm_slot_t             *s;
    ngx_http_llm_engine_t  *e;

    e = ch->ctx->engine;

    if (e->state != NGX_HTTP_LLM_READY || e->serial != ch->serial) {
        return;
    }

    s = llm_shm_slot(e->base, &e->hdr, ch->slot);

    /*
     * We stored tail, then load engine_waiting; the engine stores
     * engine_waiting, then loads tail.  The full fences on both sides
     * let at least one of us see the other's store, so no wakeup is lost.
     */

    atomic_thread_fence(memory_order_seq_cst);

    if (atomic_load_explicit(&s->engine_waiting, memory_order_relaxed) == 0) {
        return;
    }

    if (atomic_exchange_explicit(&s->engine_waiting, 0, memory_order_acq_rel))
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, e->log, 0,
                       "llm slot %uD: engine was waiting", ch->slot);

        ngx_http_llm_ring(e);
    }
}


/*
 * Lets go of the slot: FINISHED -> FREE when the engine is done with it,
 * else SUBMITTED/RUNNING -> CANCELLED (the engine frees it).  After this
 * the slot is never touched again by this request.
 */

void
ngx_http_llm_slot_release(ngx_http_llm_choice_t *ch)
{
    uint32_t                w, next;
    ngx_uint_t              bell;
    llm_slot_t             *s;
    ngx_http_llm_engine_t  *e;

    e = ch->ctx->engine;

    if (e->state != NGX_HTTP_LLM_READY || e->serial != ch->serial) {
        /* the engine went away and took its slots with it */
        return;
    }

    s = llm_shm_slot(e->base, &e->hdr, ch->slot);

    if (atomic_load_explicit(&s->generation, memory_order_relaxed)
        != ch->generation)
    {
        return;
    }

    w = atomic_load_explicit(&s->state, memory_order_acquire);

    for ( ;; ) {

        if (llm_slot_owner(w) != e->worker_id) {
            return;
        }

        switch (llm_slot_state(w)) {

        case LLM_SLOT_CLAIMED:
        case LLM_SLOT_FINISHED:
            next = llm_slot_word(LLM_SLOT_FREE, 0);
            bell = 0;
            break;

        case LLM_SLOT_SUBMITTED:
        case LLM_SLOT_RUNNING:
            next = llm_slot_word(LLM_SLOT_CANCELLED, e->worker_id);
            bell = 1;
            break;

        default:
            /* FREE or CANCELLED: not ours to touch */
            return;
        }

        /* on failure w is reloaded: the engine moved first, look again */

        if (atomic_compare_exchange_weak_explicit(&s->state, &w, next,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
        {
            break;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, e->log, 0,
                   "llm slot %uD gen %uD %s", ch->slot, ch->generation,
                   bell ? "cancelled" : "freed");

    if (bell) {
        /* the engine frees it: the retry timer will find it */
        ngx_http_llm_ring(e);

    } else if (!ngx_queue_empty(&e->waiting)) {
        /* the first waiting request takes it, once this event is over */
        ngx_post_event(&e->kick, &ngx_posted_events);
    }
}


/* slots by state, states[0..LLM_SLOT_CANCELLED], for the metrics */

void
ngx_http_llm_slot_count(ngx_http_llm_engine_t *e, ngx_uint_t *states)
{
    uint32_t     i, st;
    llm_slot_t  *s;

    for (i = 0; i < e->hdr.n_slots; i++) {
        s = llm_shm_slot(e->base, &e->hdr, i);
        st = llm_slot_state(atomic_load_explicit(&s->state,
                                                 memory_order_relaxed));

        if (st <= LLM_SLOT_CANCELLED) {
            states[st]++;
        }
    }
}
