/*
 * Copyright (C) ngx_llm developers
 *
 * Shared memory, the unix socket, the handshake and the doorbells.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "llm_ipc.h"
#include "llm_log.h"


#define LLM_EP_LISTEN   0
#define LLM_EP_BELL     1
#define LLM_EP_CLIENT   2            /* + client index */

#define llm_align(n, a)  (((n) + (a) - 1) & ~((uint64_t) (a) - 1))


static int llm_ipc_listen(llm_ipc_t *ipc, const llm_ipc_conf_t *conf,
    llm_err_t *err);
static void llm_ipc_accept(llm_ipc_t *ipc);
static void llm_ipc_read(llm_ipc_t *ipc, llm_ipc_client_t *c,
    llm_ipc_reclaim_pt reclaim, void *data);
static int llm_ipc_welcome(llm_ipc_t *ipc, llm_ipc_client_t *c);
static void llm_ipc_close(llm_ipc_t *ipc, llm_ipc_client_t *c,
    llm_ipc_reclaim_pt reclaim, void *data);


int
llm_ipc_init(llm_ipc_t *ipc, const llm_ipc_conf_t *conf, llm_err_t *err)
{
    uint64_t           req_off, ring_off, slot_size, slots_off, size;
    llm_shm_header_t  *h;
    struct timespec    ts;
    struct epoll_event ev;

    memset(ipc, 0, sizeof(*ipc));
    ipc->listen_fd = -1;
    ipc->epoll_fd = -1;
    ipc->shm_fd = -1;
    ipc->bell = -1;
    ipc->next_worker_id = 1;
    for (int i = 0; i < LLM_IPC_MAX_CLIENTS; i++) {
        ipc->clients[i].fd = -1;
        ipc->clients[i].bell = -1;
    }

    if (conf->n_slots == 0 || conf->n_slots > 4096) {
        return llm_err_set(err, LLM_EINVAL, "slots must be 1..4096, not %u",
                           conf->n_slots);
    }
    if (conf->ring_size < 2 * LLM_EVENT_MAX || conf->ring_size > (1u << 24)
        || (conf->ring_size & (conf->ring_size - 1)) != 0)
    {
        return llm_err_set(err, LLM_EINVAL,
                           "ring size must be a power of two in 8K..16M");
    }
    if (conf->req_max < 1024 || conf->req_max > (64u << 20)) {
        return llm_err_set(err, LLM_EINVAL,
                           "request area must be 1K..64M bytes");
    }

    /* geometry */
    req_off = llm_align(sizeof(llm_slot_t), LLM_CACHE_LINE);
    ring_off = llm_align(req_off + conf->req_max, LLM_CACHE_LINE);
    slot_size = llm_align(ring_off + conf->ring_size, 4096);
    slots_off = llm_align(sizeof(llm_shm_header_t), 4096);
    size = slots_off + slot_size * conf->n_slots;

    ipc->shm_fd = memfd_create("llm-engine", MFD_CLOEXEC);
    if (ipc->shm_fd == -1) {
        return llm_err_set(err, LLM_EIO, "memfd_create: %s", strerror(errno));
    }
    if (ftruncate(ipc->shm_fd, (off_t) size) == -1) {
        llm_err_set(err, LLM_EIO, "ftruncate(%llu): %s",
                    (unsigned long long) size, strerror(errno));
        goto failed;
    }
    ipc->base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED,
                     ipc->shm_fd, 0);
    if (ipc->base == MAP_FAILED) {
        ipc->base = NULL;
        llm_err_set(err, LLM_EIO, "mmap: %s", strerror(errno));
        goto failed;
    }
    ipc->size = size;

    /* the region is zero-filled: every slot starts FREE, generation 0 */
    clock_gettime(CLOCK_REALTIME, &ts);
    h = ipc->base;
    h->magic = LLM_PROTO_MAGIC;
    h->version = LLM_PROTO_VERSION;
    h->n_models = 0;
    h->n_slots = conf->n_slots;
    h->header_size = sizeof(llm_shm_header_t);
    h->epoch = ((uint64_t) ts.tv_sec << 20) ^ (uint64_t) ts.tv_nsec
               ^ ((uint64_t) getpid() << 40);
    h->shm_size = size;
    h->slots_off = slots_off;
    h->slot_size = slot_size;
    h->req_off = (uint32_t) req_off;
    h->req_max = conf->req_max;
    h->ring_off = (uint32_t) ring_off;
    h->ring_size = conf->ring_size;
    ipc->hdr = h;

    ipc->bell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ipc->bell == -1) {
        llm_err_set(err, LLM_EIO, "eventfd: %s", strerror(errno));
        goto failed;
    }

    ipc->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (ipc->epoll_fd == -1) {
        llm_err_set(err, LLM_EIO, "epoll_create1: %s", strerror(errno));
        goto failed;
    }

    ev.events = EPOLLIN;
    ev.data.u64 = LLM_EP_BELL;
    if (epoll_ctl(ipc->epoll_fd, EPOLL_CTL_ADD, ipc->bell, &ev) == -1) {
        llm_err_set(err, LLM_EIO, "epoll_ctl: %s", strerror(errno));
        goto failed;
    }

    if (llm_ipc_listen(ipc, conf, err) != LLM_OK) {
        goto failed;
    }

    return LLM_OK;

failed:

    llm_ipc_free(ipc);
    return LLM_ERR;
}


static int
llm_ipc_listen(llm_ipc_t *ipc, const llm_ipc_conf_t *conf, llm_err_t *err)
{
    int                 fd, probe;
    char                tmp[sizeof(((struct sockaddr_un *) 0)->sun_path)];
    struct stat         st;
    struct sockaddr_un  sa;
    struct epoll_event  ev;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(conf->socket_path) >= sizeof(sa.sun_path)) {
        return llm_err_set(err, LLM_EINVAL, "socket path too long: %s",
                           conf->socket_path);
    }
    strcpy(sa.sun_path, conf->socket_path);

    /* a stale socket from a dead engine is replaced; a live one is not */
    if (lstat(conf->socket_path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return llm_err_set(err, LLM_EINVAL,
                               "%s exists and is not a socket",
                               conf->socket_path);
        }
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe != -1
            && connect(probe, (struct sockaddr *) &sa, sizeof(sa)) == 0)
        {
            close(probe);
            return llm_err_set(err, LLM_EINVAL,
                               "another engine is listening on %s",
                               conf->socket_path);
        }
        if (probe != -1) {
            close(probe);
        }
        unlink(conf->socket_path);
    }

    /*
     * Bound, given its mode and listening under a name of its own, then
     * renamed into place: whoever sees the path can connect (bound
     * under the path itself, a connect between bind() and listen() is
     * refused).  A path too long for the suffix is bound as it is.
     */
    if (snprintf(tmp, sizeof(tmp), "%s.%ld", conf->socket_path,
                 (long) getpid()) >= (int) sizeof(sa.sun_path))
    {
        strcpy(tmp, conf->socket_path);
    }
    strcpy(sa.sun_path, tmp);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        return llm_err_set(err, LLM_EIO, "socket: %s", strerror(errno));
    }
    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == -1) {
        llm_err_set(err, LLM_EIO, "bind(%s): %s", tmp, strerror(errno));
        close(fd);
        return LLM_ERR;
    }
    if (chmod(tmp, conf->socket_mode) == -1
        || (conf->socket_group != (gid_t) -1
            && chown(tmp, (uid_t) -1, conf->socket_group) == -1)
        || listen(fd, 128) == -1
        || rename(tmp, conf->socket_path) == -1)
    {
        llm_err_set(err, LLM_EIO, "listen(%s): %s", conf->socket_path,
                    strerror(errno));
        close(fd);
        unlink(tmp);
        return LLM_ERR;
    }

    ev.events = EPOLLIN;
    ev.data.u64 = LLM_EP_LISTEN;
    if (epoll_ctl(ipc->epoll_fd, EPOLL_CTL_ADD, fd, &ev) == -1) {
        llm_err_set(err, LLM_EIO, "epoll_ctl: %s", strerror(errno));
        close(fd);
        unlink(conf->socket_path);
        return LLM_ERR;
    }

    ipc->listen_fd = fd;
    ipc->socket_path = conf->socket_path;
    ipc->n_allow = conf->n_allow;
    memcpy(ipc->allow, conf->allow, sizeof(ipc->allow));
    return LLM_OK;
}


void
llm_ipc_free(llm_ipc_t *ipc)
{
    for (int i = 0; i < LLM_IPC_MAX_CLIENTS; i++) {
        if (ipc->clients[i].fd != -1) {
            close(ipc->clients[i].fd);
            ipc->clients[i].fd = -1;
        }
        if (ipc->clients[i].bell != -1) {
            close(ipc->clients[i].bell);
            ipc->clients[i].bell = -1;
        }
    }
    if (ipc->listen_fd != -1) {
        close(ipc->listen_fd);
        unlink(ipc->socket_path);
        ipc->listen_fd = -1;
    }
    if (ipc->epoll_fd != -1) {
        close(ipc->epoll_fd);
        ipc->epoll_fd = -1;
    }
    if (ipc->bell != -1) {
        close(ipc->bell);
        ipc->bell = -1;
    }
    if (ipc->base != NULL) {
        munmap(ipc->base, ipc->size);
        ipc->base = NULL;
    }
    if (ipc->shm_fd != -1) {
        close(ipc->shm_fd);
        ipc->shm_fd = -1;
    }
}


int
llm_ipc_add_model(llm_ipc_t *ipc, const char *name, uint32_t n_ctx,
    uint32_t n_vocab, llm_err_t *err)
{
    size_t            len;
    llm_shm_model_t  *m;

    if (ipc->hdr->n_models >= LLM_MAX_MODELS) {
        return llm_err_set(err, LLM_EINVAL, "more than %d models",
                           LLM_MAX_MODELS);
    }

    len = strlen(name);
    if (len == 0 || len >= LLM_MODEL_NAME_MAX
        || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789._:-") != len)
    {
        return llm_err_set(err, LLM_EINVAL,
                           "bad model name \"%s\": 1..%d of [A-Za-z0-9._:-]",
                           name, LLM_MODEL_NAME_MAX - 1);
    }

    for (int i = 0; i < ipc->hdr->n_models; i++) {
        if (strcmp(ipc->hdr->models[i].name, name) == 0) {
            return llm_err_set(err, LLM_EINVAL, "model \"%s\" given twice",
                               name);
        }
    }

    m = &ipc->hdr->models[ipc->hdr->n_models++];
    memcpy(m->name, name, len + 1);
    m->n_ctx = n_ctx;
    m->n_vocab = n_vocab;
    m->created = (uint64_t) time(NULL);

    return LLM_OK;
}


int
llm_ipc_poll(llm_ipc_t *ipc, int timeout_ms, llm_ipc_reclaim_pt reclaim,
    void *data)
{
    int                 n;
    uint64_t            v;
    struct epoll_event  evs[64];

    n = epoll_wait(ipc->epoll_fd, evs, 64, timeout_ms);
    if (n == -1) {
        return -1;
    }

    for (int i = 0; i < n; i++) {
        switch (evs[i].data.u64) {

        case LLM_EP_LISTEN:
            llm_ipc_accept(ipc);
            break;

        case LLM_EP_BELL:
            while (read(ipc->bell, &v, sizeof(v)) == sizeof(v)) {
                /* drain: the caller scans the slots after every poll */
            }
            break;

        default:
            llm_ipc_read(ipc, &ipc->clients[evs[i].data.u64 - LLM_EP_CLIENT],
                         reclaim, data);
            break;
        }
    }

    return n;
}


static void
llm_ipc_accept(llm_ipc_t *ipc)
{
    int                 fd, slot;
    struct ucred        cred;
    socklen_t           len;
    llm_ipc_client_t   *c;
    struct epoll_event  ev;

    for ( ;; ) {
        fd = accept4(ipc->listen_fd, NULL, NULL,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                llm_log(LLM_LOG_WARN, "accept: %s", strerror(errno));
            }
            return;
        }

        slot = -1;
        for (int i = 0; i < LLM_IPC_MAX_CLIENTS; i++) {
            if (ipc->clients[i].fd == -1) {
                slot = i;
                break;
            }
        }
        if (slot == -1) {
            llm_log(LLM_LOG_WARN, "too many workers connected, refusing one");
            close(fd);
            continue;
        }

        c = &ipc->clients[slot];
        memset(c, 0, sizeof(*c));
        c->fd = fd;
        c->bell = -1;

        len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
            c->pid = cred.pid;
            c->uid = cred.uid;
        } else {
            c->uid = (uid_t) -1;       /* unknown: never in an allow list */
        }

        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u64 = LLM_EP_CLIENT + (uint64_t) slot;
        if (epoll_ctl(ipc->epoll_fd, EPOLL_CTL_ADD, fd, &ev) == -1) {
            llm_log(LLM_LOG_WARN, "epoll_ctl: %s", strerror(errno));
            close(fd);
            c->fd = -1;
            continue;
        }

        ipc->n_clients++;
    }
}


static void
llm_ipc_read(llm_ipc_t *ipc, llm_ipc_client_t *c, llm_ipc_reclaim_pt reclaim,
    void *data)
{
    char     buf[64];
    ssize_t  n;

    if (c->fd == -1) {
        return;
    }

    for ( ;; ) {
        if (c->worker_id == 0) {
            n = read(c->fd, c->hello + c->got, sizeof(c->hello) - c->got);
        } else {
            n = read(c->fd, buf, sizeof(buf));
        }

        if (n == 0) {
            llm_ipc_close(ipc, c, reclaim, data);
            return;
        }

        if (n == -1) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            llm_ipc_close(ipc, c, reclaim, data);
            return;
        }

        if (c->worker_id != 0) {
            /* nothing but the handshake travels on the socket */
            llm_log(LLM_LOG_WARN, "worker pid %d sent data after the "
                    "handshake, closing it", (int) c->pid);
            llm_ipc_close(ipc, c, reclaim, data);
            return;
        }

        c->got += (size_t) n;
        if (c->got == sizeof(c->hello)) {
            if (llm_ipc_welcome(ipc, c) != LLM_OK) {
                llm_ipc_close(ipc, c, reclaim, data);
                return;
            }
        }
    }
}


static int
llm_ipc_welcome(llm_ipc_t *ipc, llm_ipc_client_t *c)
{
    int             fds[3], allowed;
    struct iovec    iov;
    struct msghdr   msg;
    llm_hello_t     hello;
    llm_welcome_t   w;
    struct cmsghdr *cm;
    union {
        struct cmsghdr  align;
        char            buf[CMSG_SPACE(sizeof(fds))];
    } ctl;

    memcpy(&hello, c->hello, sizeof(hello));

    memset(&w, 0, sizeof(w));
    w.magic = LLM_PROTO_MAGIC;
    w.version = LLM_PROTO_VERSION;
    w.shm_size = ipc->size;
    w.epoch = ipc->hdr->epoch;

    /* SO_PEERCRED says who the peer is */
    allowed = ipc->n_allow == 0;
    for (int i = 0; i < ipc->n_allow; i++) {
        allowed |= ipc->allow[i] == c->uid;
    }

    if (!allowed) {
        w.status = LLM_HELLO_DENIED;
    } else if (hello.magic != LLM_PROTO_MAGIC) {
        w.status = LLM_HELLO_BAD_MAGIC;
    } else if (hello.version != LLM_PROTO_VERSION) {
        w.status = LLM_HELLO_BAD_VERSION;
    } else {
        w.status = LLM_HELLO_OK;
    }

    memset(&msg, 0, sizeof(msg));
    iov.iov_base = &w;
    iov.iov_len = sizeof(w);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;

    if (w.status == LLM_HELLO_OK) {
        c->bell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (c->bell == -1) {
            llm_log(LLM_LOG_WARN, "eventfd: %s", strerror(errno));
            return LLM_ERR;
        }

        w.worker_id = ipc->next_worker_id;

        fds[0] = ipc->shm_fd;
        fds[1] = ipc->bell;
        fds[2] = c->bell;

        memset(&ctl, 0, sizeof(ctl));
        msg.msg_control = ctl.buf;
        msg.msg_controllen = sizeof(ctl.buf);
        cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(fds));
        memcpy(CMSG_DATA(cm), fds, sizeof(fds));
    }

    if (sendmsg(c->fd, &msg, MSG_NOSIGNAL) != (ssize_t) sizeof(w)) {
        llm_log(LLM_LOG_WARN, "welcome to pid %d: %s", (int) c->pid,
                strerror(errno));
        return LLM_ERR;
    }

    if (w.status != LLM_HELLO_OK) {
        llm_log(LLM_LOG_WARN, "refused pid %d uid %d: %s", (int) c->pid,
                (int) c->uid,
                w.status == LLM_HELLO_DENIED ? "user not allowed"
                : w.status == LLM_HELLO_BAD_MAGIC ? "bad magic"
                : "protocol version mismatch");
        return LLM_ERR;
    }

    c->worker_id = ipc->next_worker_id++;
    if (ipc->next_worker_id > LLM_MAX_WORKER_ID) {
        ipc->next_worker_id = 1;
    }

    llm_log(LLM_LOG_INFO, "worker pid %d attached as %u", (int) c->pid,
            c->worker_id);
    return LLM_OK;
}


static void
llm_ipc_close(llm_ipc_t *ipc, llm_ipc_client_t *c, llm_ipc_reclaim_pt reclaim,
    void *data)
{
    uint32_t     w, n;
    llm_slot_t  *s;

    epoll_ctl(ipc->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->bell != -1) {
        close(c->bell);
        c->bell = -1;
    }
    ipc->n_clients--;

    if (c->worker_id == 0) {
        return;
    }

    /* the worker is gone: every slot it owned comes back */
    n = 0;
    for (uint32_t i = 0; i < ipc->hdr->n_slots; i++) {
        s = llm_shm_slot(ipc->base, ipc->hdr, i);
        w = atomic_load_explicit(&s->state, memory_order_acquire);
        if (llm_slot_state(w) == LLM_SLOT_FREE
            || llm_slot_owner(w) != c->worker_id)
        {
            continue;
        }
        if (reclaim != NULL) {
            reclaim(data, i);
        }
        atomic_store_explicit(&s->state, llm_slot_word(LLM_SLOT_FREE, 0),
                              memory_order_release);
        n++;
    }

    if (n) {
        atomic_fetch_add_explicit(&ipc->hdr->stats[LLM_STAT_RECLAIMED], n,
                                  memory_order_relaxed);
    }

    llm_log(LLM_LOG_INFO, "worker %u (pid %d) detached, %u slots reclaimed",
            c->worker_id, (int) c->pid, n);
    c->worker_id = 0;
}


void
llm_ipc_mark(llm_ipc_t *ipc, uint32_t owner)
{
    for (int i = 0; i < LLM_IPC_MAX_CLIENTS; i++) {
        if (ipc->clients[i].fd != -1 && ipc->clients[i].worker_id == owner) {
            ipc->clients[i].rung = 1;
            return;
        }
    }
}


void
llm_ipc_ring(llm_ipc_t *ipc)
{
    uint64_t  one = 1;

    for (int i = 0; i < LLM_IPC_MAX_CLIENTS; i++) {
        llm_ipc_client_t  *c = &ipc->clients[i];

        if (c->rung && c->bell != -1) {
            if (write(c->bell, &one, sizeof(one)) != sizeof(one)
                && errno != EAGAIN)
            {
                llm_log(LLM_LOG_WARN, "doorbell of worker %u: %s",
                        c->worker_id, strerror(errno));
            }
        }
        c->rung = 0;
    }
}
