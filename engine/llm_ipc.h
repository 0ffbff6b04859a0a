/*
 * Copyright (C) ngx_llm developers
 *
 * The engine's side of the transport: the shared-memory region, the unix
 * socket workers connect to, the handshake that passes descriptors, and
 * the doorbells.  It moves messages only; the model is not its business.
 */

#ifndef LLM_IPC_H
#define LLM_IPC_H

#include <sys/types.h>

#include "llm_common.h"
#include "llm_proto.h"


#define LLM_IPC_MAX_CLIENTS  256


typedef struct {
    int        fd;             /* -1 when the entry is unused */
    int        bell;           /* this worker's doorbell (eventfd) */
    uint32_t   worker_id;      /* 0 until the handshake is done */
    pid_t      pid;            /* from SO_PEERCRED */
    uid_t      uid;
    size_t     got;            /* hello bytes received so far */
    unsigned   rung:1;         /* events written since the last ring */
    char       hello[sizeof(llm_hello_t)];
} llm_ipc_client_t;


#define LLM_IPC_MAX_ALLOW  16


typedef struct {
    const char          *socket_path;
    int                  n_allow;       /* 0: whoever can open the socket */
    uid_t                allow[LLM_IPC_MAX_ALLOW];
    int                  listen_fd;
    int                  epoll_fd;
    int                  shm_fd;
    int                  bell;          /* the engine's doorbell (eventfd) */
    void                *base;          /* mapped region */
    size_t               size;
    llm_shm_header_t    *hdr;
    uint32_t             next_worker_id;
    int                  n_clients;
    llm_ipc_client_t     clients[LLM_IPC_MAX_CLIENTS];
} llm_ipc_t;


typedef struct {
    const char  *socket_path;
    unsigned     socket_mode;    /* e.g. 0660 */
    gid_t        socket_group;   /* (gid_t) -1: leave it */
    int          n_allow;        /* peers' uids let in; 0: any */
    uid_t        allow[LLM_IPC_MAX_ALLOW];
    uint32_t     n_slots;
    uint32_t     req_max;        /* request area bytes per slot */
    uint32_t     ring_size;      /* event ring bytes per slot, power of 2 */
} llm_ipc_conf_t;


int llm_ipc_init(llm_ipc_t *ipc, const llm_ipc_conf_t *conf, llm_err_t *err);
void llm_ipc_free(llm_ipc_t *ipc);

/* adds a model to the header's table; before the first worker attaches */
int llm_ipc_add_model(llm_ipc_t *ipc, const char *name, uint32_t n_ctx,
    uint32_t n_vocab, llm_err_t *err);

/*
 * Waits up to timeout_ms (-1: forever) for sockets and the doorbell and
 * handles them: accepts workers, completes handshakes, and on a closed
 * worker calls reclaim(owner) for each of its slots before freeing them.
 * Returns the number of events seen or -1 on EINTR.
 */
typedef void (*llm_ipc_reclaim_pt)(void *data, uint32_t slot);

int llm_ipc_poll(llm_ipc_t *ipc, int timeout_ms, llm_ipc_reclaim_pt reclaim,
    void *data);

/* marks that the owner of a slot has events to read */
void llm_ipc_mark(llm_ipc_t *ipc, uint32_t owner);

/* rings the doorbells of every marked worker */
void llm_ipc_ring(llm_ipc_t *ipc);


#endif /* LLM_IPC_H */
