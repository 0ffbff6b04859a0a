/*
 * Copyright (C) ngx_llm developers
 *
 * A client of the engine's shared-memory protocol, written from
 * engine/proto/llm_proto.h alone, for tools that want to talk to
 * `llm-engine serve` the way an nginx worker does, without nginx: the
 * load generator's --direct mode and its counter dump.  Header-only.
 *
 *     llm_client_t  c;
 *     char          err[256];
 *
 *     if (llm_client_connect(&c, "/run/llm.sock", err, sizeof(err)) != 0)
 *     ...
 *     slot = llm_client_submit(&c, json, len, &gen);     claim + ring
 *     (poll c.my_bell; read it; then for each slot in flight:)
 *     while (llm_client_event(&c, slot, &ev, buf) == LLM_RING_OK) ...
 *     llm_client_drained(&c, slot);                      wake a paused seq
 *     llm_client_release(&c, slot, gen);                 after DONE/ERROR
 *
 * Single-threaded: one client is used by one thread.  The engine is
 * trusted no more than the module trusts it: the header is checked before
 * use and llm_ring_get() bounds every record.
 */

#ifndef LLM_CLIENT_H
#define LLM_CLIENT_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "llm_ring.h"


typedef struct {
    int                 sock;          /* closes when the engine dies */
    int                 engine_bell;   /* eventfd: we write after submits */
    int                 my_bell;       /* eventfd: the engine writes */
    uint32_t            worker_id;
    uint32_t            next_slot;     /* where the next claim starts */
    uint64_t            epoch;
    unsigned char      *base;
    size_t              size;
    llm_shm_header_t   *h;
} llm_client_t;


/*
 * Connects to the engine's socket, says hello, receives the region and
 * the two doorbells, maps the region and checks its header.  Returns 0,
 * or -1 with a message in err.
 */
static inline int
llm_client_connect(llm_client_t *c, const char *path, char *err,
    size_t errlen)
{
    int                 fds[3];
    ssize_t             n;
    const char         *bad;
    struct iovec        iov;
    struct msghdr       msg;
    llm_hello_t         hello;
    llm_welcome_t       w;
    struct cmsghdr     *cm;
    struct sockaddr_un  sa;
    union {
        struct cmsghdr  align;
        char            buf[CMSG_SPACE(sizeof(fds))];
    } ctl;

    memset(c, 0, sizeof(*c));
    c->engine_bell = -1;
    c->my_bell = -1;
    c->base = MAP_FAILED;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);

    c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->sock == -1) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }

    if (connect(c->sock, (struct sockaddr *) &sa, sizeof(sa)) == -1) {
        snprintf(err, errlen, "connect(%s): %s", path, strerror(errno));
        goto failed;
    }

    memset(&hello, 0, sizeof(hello));
    hello.magic = LLM_PROTO_MAGIC;
    hello.version = LLM_PROTO_VERSION;
    hello.pid = (int32_t) getpid();

    if (write(c->sock, &hello, sizeof(hello)) != (ssize_t) sizeof(hello)) {
        snprintf(err, errlen, "hello: %s", strerror(errno));
        goto failed;
    }

    memset(&msg, 0, sizeof(msg));
    memset(&ctl, 0, sizeof(ctl));
    iov.iov_base = &w;
    iov.iov_len = sizeof(w);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.buf;
    msg.msg_controllen = sizeof(ctl.buf);

    n = recvmsg(c->sock, &msg, MSG_CMSG_CLOEXEC);
    if (n != (ssize_t) sizeof(w)) {
        snprintf(err, errlen, "welcome: %s",
                 n == -1 ? strerror(errno) : "short message");
        goto failed;
    }
    if (w.magic != LLM_PROTO_MAGIC || w.version != LLM_PROTO_VERSION) {
        snprintf(err, errlen, "welcome: magic %08x version %u, want %08x %u",
                 w.magic, w.version, LLM_PROTO_MAGIC, LLM_PROTO_VERSION);
        goto failed;
    }
    if (w.status != LLM_HELLO_OK) {
        snprintf(err, errlen, "the engine refused us (status %u)",
                 w.status);
        goto failed;
    }

    cm = CMSG_FIRSTHDR(&msg);
    if (cm == NULL || cm->cmsg_level != SOL_SOCKET
        || cm->cmsg_type != SCM_RIGHTS
        || cm->cmsg_len != CMSG_LEN(sizeof(fds)))
    {
        snprintf(err, errlen, "welcome without its three descriptors");
        goto failed;
    }
    memcpy(fds, CMSG_DATA(cm), sizeof(fds));

    c->engine_bell = fds[1];
    c->my_bell = fds[2];
    c->worker_id = w.worker_id;
    c->epoch = w.epoch;
    c->size = (size_t) w.shm_size;

    c->base = mmap(NULL, c->size, PROT_READ | PROT_WRITE, MAP_SHARED,
                   fds[0], 0);
    close(fds[0]);
    if (c->base == MAP_FAILED) {
        snprintf(err, errlen, "mmap %zu bytes: %s", c->size,
                 strerror(errno));
        goto failed;
    }
    c->h = (llm_shm_header_t *) c->base;

    bad = llm_shm_header_check(c->h, c->size);
    if (bad != NULL) {
        snprintf(err, errlen, "shared memory: %s", bad);
        goto failed;
    }

    return 0;

failed:

    if (c->base != MAP_FAILED) {
        munmap(c->base, c->size);
    }
    if (c->engine_bell != -1) {
        close(c->engine_bell);
    }
    if (c->my_bell != -1) {
        close(c->my_bell);
    }
    close(c->sock);
    memset(c, 0, sizeof(*c));
    c->sock = -1;
    return -1;
}


static inline void
llm_client_close(llm_client_t *c)
{
    if (c->h != NULL) {
        munmap(c->base, c->size);
        close(c->engine_bell);
        close(c->my_bell);
        close(c->sock);
    }
    memset(c, 0, sizeof(*c));
    c->sock = -1;
}


static inline llm_slot_t *
llm_client_slot(llm_client_t *c, uint32_t i)
{
    return llm_shm_slot(c->base, c->h, i);
}


static inline void
llm_client_ring(llm_client_t *c)
{
    uint64_t  one = 1;

    /* EAGAIN: the counter is saturated, the engine is awake anyway */
    (void) !write(c->engine_bell, &one, sizeof(one));
}


/* reads our doorbell until it is empty; non-blocking eventfd */
static inline void
llm_client_clear_bell(llm_client_t *c)
{
    uint64_t  v;

    while (read(c->my_bell, &v, sizeof(v)) == (ssize_t) sizeof(v)) {
        /* void */
    }
}


/*
 * Claims a free slot, writes the request into it, submits it and rings
 * the engine.  Returns the slot and its generation in *gen, or -1 when
 * no slot is free (or the request is larger than the request area).
 */
static inline int
llm_client_submit(llm_client_t *c, const char *req, size_t len,
    uint32_t *gen)
{
    uint32_t     i, w, n;
    llm_slot_t  *s;

    if (len > c->h->req_max) {
        return -1;
    }

    n = c->h->n_slots;

    for (uint32_t k = 0; k < n; k++) {
        i = (c->next_slot + k) % n;
        s = llm_client_slot(c, i);

        w = atomic_load_explicit(&s->state, memory_order_relaxed);
        if (llm_slot_state(w) != LLM_SLOT_FREE) {
            continue;
        }

        if (!atomic_compare_exchange_strong_explicit(&s->state, &w,
                 llm_slot_word(LLM_SLOT_CLAIMED, c->worker_id),
                 memory_order_acq_rel, memory_order_relaxed))
        {
            continue;
        }

        *gen = atomic_fetch_add_explicit(&s->generation, 1,
                                         memory_order_relaxed) + 1;
        atomic_store_explicit(&s->head, 0, memory_order_relaxed);
        atomic_store_explicit(&s->tail, 0, memory_order_relaxed);
        atomic_store_explicit(&s->engine_waiting, 0, memory_order_relaxed);

        memcpy(llm_slot_req(s, c->h), req, len);
        s->req_len = (uint32_t) len;

        /* release: the request and the indices before SUBMITTED */
        atomic_store_explicit(&s->state,
                              llm_slot_word(LLM_SLOT_SUBMITTED,
                                            c->worker_id),
                              memory_order_release);

        c->next_slot = i + 1;
        llm_client_ring(c);
        return (int) i;
    }

    return -1;
}


/*
 * The next event of a slot: LLM_RING_OK with the header in *ev and the
 * payload in buf (LLM_EVENT_MAX bytes), LLM_RING_EMPTY or
 * LLM_RING_CORRUPT.
 */
static inline int
llm_client_event(llm_client_t *c, uint32_t slot, llm_event_t *ev, void *buf)
{
    llm_slot_t  *s;

    s = llm_client_slot(c, slot);
    return llm_ring_get(s, llm_slot_ring(s, c->h), c->h->ring_size, ev, buf);
}


/* after taking events: the engine may be waiting for room in the ring */
static inline void
llm_client_drained(llm_client_t *c, uint32_t slot)
{
    llm_slot_t  *s;

    s = llm_client_slot(c, slot);

    /* pairs with the engine's fence between engine_waiting and tail */
    atomic_thread_fence(memory_order_seq_cst);

    if (atomic_load_explicit(&s->engine_waiting, memory_order_relaxed) != 0
        && atomic_exchange_explicit(&s->engine_waiting, 0,
                                    memory_order_acq_rel) != 0)
    {
        llm_client_ring(c);
    }
}


/*
 * Lets go of a slot, as the module does: FINISHED -> FREE, or
 * SUBMITTED/RUNNING -> CANCELLED for the engine to free (the DONE event
 * can be read before the engine marks the slot FINISHED).  Returns 1 if
 * the slot was cancelled, else 0.
 */
static inline int
llm_client_release(llm_client_t *c, uint32_t slot, uint32_t gen)
{
    uint32_t     w, next;
    llm_slot_t  *s;

    s = llm_client_slot(c, slot);

    if (atomic_load_explicit(&s->generation, memory_order_relaxed) != gen) {
        return 0;
    }

    w = atomic_load_explicit(&s->state, memory_order_acquire);

    for ( ;; ) {
        if (llm_slot_owner(w) != c->worker_id) {
            return 0;
        }

        switch (llm_slot_state(w)) {

        case LLM_SLOT_CLAIMED:
        case LLM_SLOT_FINISHED:
            next = llm_slot_word(LLM_SLOT_FREE, 0);
            break;

        case LLM_SLOT_SUBMITTED:
        case LLM_SLOT_RUNNING:
            next = llm_slot_word(LLM_SLOT_CANCELLED, c->worker_id);
            break;

        default:
            return 0;
        }

        /* on failure w is reloaded: the engine moved first */
        if (atomic_compare_exchange_weak_explicit(&s->state, &w, next,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
        {
            break;
        }
    }

    if (llm_slot_state(next) == LLM_SLOT_CANCELLED) {
        llm_client_ring(c);
        return 1;
    }

    return 0;
}


/* counts slots by state into counts[0..LLM_SLOT_CANCELLED] */
static inline void
llm_client_slot_states(llm_client_t *c, uint32_t *counts)
{
    uint32_t  st;

    memset(counts, 0, sizeof(uint32_t) * (LLM_SLOT_CANCELLED + 1));

    for (uint32_t i = 0; i < c->h->n_slots; i++) {
        st = llm_slot_state(atomic_load_explicit(
                                &llm_client_slot(c, i)->state,
                                memory_order_acquire));
        if (st <= LLM_SLOT_CANCELLED) {
            counts[st]++;
        }
    }
}


static inline uint64_t
llm_client_stat(llm_client_t *c, int i)
{
    return atomic_load_explicit(&c->h->stats[i], memory_order_relaxed);
}


#endif /* LLM_CLIENT_H */
