/*
 * Copyright (C) ngx_llm developers
 *
 * The Redis KV tier: one I/O thread, hiredis's blocking API with
 * timeouts, a bounded write queue and a lookup queue.
 *
 * A stored value is an llm_rkv_hdr_t, the block's tokens and the KV bytes;
 * the checksum covers tokens and bytes.  The key is
 * "llmkv:<fingerprint>:<prefix hash>" in hex.
 */

#define _GNU_SOURCE

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "llm_log.h"
#include "llm_rkv.h"


#define LLM_RKV_MAGIC     0x31564b4cu     /* "LKV1" */
#define LLM_RKV_VERSION   1
#define LLM_RKV_KEY_MAX   64


typedef struct {
    uint32_t  magic;
    uint32_t  version;
    uint64_t  fingerprint;
    uint64_t  hash;
    uint32_t  block_size;
    uint32_t  reserved;
    uint64_t  len;              /* KV bytes after the tokens */
    uint64_t  checksum;         /* over tokens and KV bytes */
} llm_rkv_hdr_t;


typedef struct llm_rkv_req_s  llm_rkv_req_t;

struct llm_rkv_req_s {
    llm_rkv_req_t     *next;
    int                get;          /* 1: lookup, 0: write */
    uint64_t           fingerprint;
    uint64_t           hash;         /* write: the block's prefix hash */
    int                n;            /* blocks */
    int                block_size;
    size_t             len;          /* KV bytes per block */
    void              *ctx;
    uint64_t          *hashes;       /* n */
    int32_t           *tokens;       /* n * block_size */
    void              *value;        /* write: header, tokens, bytes */
    size_t             value_len;
    llm_rkv_result_t   res;
};


struct llm_rkv_s {
    llm_rkv_conf_t     conf;
    char              *addr;
    char              *password;
    pthread_t          thread;
    pthread_mutex_t    lock;
    pthread_cond_t     cond;
    int                stop;
    int                started;

    /* queues, under lock */
    llm_rkv_req_t     *gets, **gets_tail;
    llm_rkv_req_t     *puts, **puts_tail;
    llm_rkv_req_t     *done, **done_tail;
    size_t             queued_bytes;
    int                pending;      /* lookups not yet taken by poll */

    /* the I/O thread's own */
    redisContext      *rc;
    uint64_t           next_connect;  /* llm_now_us() of the next try */

    llm_rkv_stats_t    stats;         /* under lock */
};


static void *llm_rkv_thread(void *arg);
static int llm_rkv_connect(llm_rkv_t *r);
static void llm_rkv_do_put(llm_rkv_t *r, llm_rkv_req_t *q);
static void llm_rkv_do_get(llm_rkv_t *r, llm_rkv_req_t *q);
static void llm_rkv_key(char *key, uint64_t fp, uint64_t hash);
static uint64_t llm_rkv_checksum(const void *a, size_t alen, const void *b,
    size_t blen);
static void llm_rkv_req_free(llm_rkv_req_t *q);


int
llm_rkv_open(llm_rkv_t **out, const llm_rkv_conf_t *conf, llm_err_t *err)
{
    llm_rkv_t  *r;

    *out = NULL;

    r = calloc(1, sizeof(llm_rkv_t));
    if (r == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "redis: out of memory");
    }

    r->conf = *conf;
    r->addr = strdup(conf->addr);
    r->password = conf->password ? strdup(conf->password) : NULL;
    if (r->addr == NULL || (conf->password && r->password == NULL)) {
        llm_rkv_close(r);
        return llm_err_set(err, LLM_ENOMEM, "redis: out of memory");
    }
    if (r->conf.ttl <= 0) {
        r->conf.ttl = 3600;
    }
    if (r->conf.queue_max == 0) {
        r->conf.queue_max = (size_t) 64 << 20;
    }
    if (r->conf.timeout_ms <= 0) {
        r->conf.timeout_ms = 500;
    }

    r->gets_tail = &r->gets;
    r->puts_tail = &r->puts;
    r->done_tail = &r->done;

    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);

    if (pthread_create(&r->thread, NULL, llm_rkv_thread, r) != 0) {
        llm_rkv_close(r);
        return llm_err_set(err, LLM_EIO, "redis: cannot start its thread");
    }
    r->started = 1;

    *out = r;
    return LLM_OK;
}


void
llm_rkv_close(llm_rkv_t *r)
{
    llm_rkv_req_t  *q, *next;

    if (r == NULL) {
        return;
    }

    if (r->started) {
        pthread_mutex_lock(&r->lock);
        r->stop = 1;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
        pthread_mutex_destroy(&r->lock);
        pthread_cond_destroy(&r->cond);
    }

    for (q = r->gets; q != NULL; q = next) {
        next = q->next;
        llm_rkv_req_free(q);
    }
    for (q = r->puts; q != NULL; q = next) {
        next = q->next;
        llm_rkv_req_free(q);
    }
    for (q = r->done; q; q = next) {
        next = q->next;
        for (int i = 0; i < q->res.n_found; i++) {
            free(q->res.data[i]);
        }
        llm_rkv_req_free(q);
    }

    if (r->rc != NULL) {
        redisFree(r->rc);
    }
    free(r->addr);
    free(r->password);
    free(r);
}


void
llm_rkv_put(llm_rkv_t *r, uint64_t fingerprint, uint64_t hash,
    const int32_t *tokens, int block_size, const void *data, size_t len)
{
    size_t          tlen;
    llm_rkv_req_t  *q;
    llm_rkv_hdr_t   h;
    unsigned char  *v;

    tlen = (size_t) block_size * sizeof(int32_t);

    pthread_mutex_lock(&r->lock);
    if (r->queued_bytes + sizeof(h) + tlen + len > r->conf.queue_max) {
        r->stats.put_drops++;
        pthread_mutex_unlock(&r->lock);
        return;
    }
    pthread_mutex_unlock(&r->lock);

    q = calloc(1, sizeof(llm_rkv_req_t));
    v = malloc(sizeof(h) + tlen + len);
    if (q == NULL || v == NULL) {
        free(q);
        free(v);
        return;
    }

    memset(&h, 0, sizeof(h));
    h.magic = LLM_RKV_MAGIC;
    h.version = LLM_RKV_VERSION;
    h.fingerprint = fingerprint;
    h.hash = hash;
    h.block_size = (uint32_t) block_size;
    h.len = len;
    h.checksum = llm_rkv_checksum(tokens, tlen, data, len);

    memcpy(v, &h, sizeof(h));
    memcpy(v + sizeof(h), tokens, tlen);
    memcpy(v + sizeof(h) + tlen, data, len);

    q->fingerprint = fingerprint;
    q->n = 1;
    q->value = v;
    q->value_len = sizeof(h) + tlen + len;
    q->hash = hash;

    pthread_mutex_lock(&r->lock);
    r->queued_bytes += q->value_len;
    *r->puts_tail = q;
    r->puts_tail = &q->next;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}


int
llm_rkv_get(llm_rkv_t *r, uint64_t fingerprint, const uint64_t *hashes,
    const int32_t *tokens, int n, int block_size, size_t len, void *ctx)
{
    llm_rkv_req_t  *q;

    if (n <= 0 || n > LLM_RKV_CHAIN_MAX) {
        return LLM_ERR;
    }

    q = calloc(1, sizeof(llm_rkv_req_t));
    if (q == NULL) {
        return LLM_ERR;
    }
    q->hashes = malloc((size_t) n * sizeof(uint64_t));
    q->tokens = malloc((size_t) n * (size_t) block_size * sizeof(int32_t));
    if (q->hashes == NULL || q->tokens == NULL) {
        llm_rkv_req_free(q);
        return LLM_ERR;
    }

    q->get = 1;
    q->fingerprint = fingerprint;
    q->n = n;
    q->block_size = block_size;
    q->len = len;
    q->ctx = ctx;
    memcpy(q->hashes, hashes, (size_t) n * sizeof(uint64_t));
    memcpy(q->tokens, tokens,
           (size_t) n * (size_t) block_size * sizeof(int32_t));

    pthread_mutex_lock(&r->lock);
    r->pending++;
    *r->gets_tail = q;
    r->gets_tail = &q->next;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);

    return LLM_OK;
}


int
llm_rkv_poll(llm_rkv_t *r, llm_rkv_result_t *res)
{
    llm_rkv_req_t  *q;

    pthread_mutex_lock(&r->lock);
    q = r->done;
    if (q != NULL) {
        r->done = q->next;
        if (r->done == NULL) {
            r->done_tail = &r->done;
        }
        r->pending--;
    }
    pthread_mutex_unlock(&r->lock);

    if (q == NULL) {
        return 0;
    }

    *res = q->res;
    res->ctx = q->ctx;
    llm_rkv_req_free(q);
    return 1;
}


int
llm_rkv_pending(llm_rkv_t *r)
{
    int  n;

    pthread_mutex_lock(&r->lock);
    n = r->pending;
    pthread_mutex_unlock(&r->lock);

    return n;
}


void
llm_rkv_stats(llm_rkv_t *r, llm_rkv_stats_t *st)
{
    pthread_mutex_lock(&r->lock);
    *st = r->stats;
    pthread_mutex_unlock(&r->lock);
}


static void *
llm_rkv_thread(void *arg)
{
    llm_rkv_t      *r = arg;
    llm_rkv_req_t  *q;

    /* connect at once, so that writes are accepted from the start */
    llm_rkv_connect(r);

    pthread_mutex_lock(&r->lock);

    for ( ;; ) {
        while (!r->stop && r->gets == NULL && r->puts == NULL) {
            pthread_cond_wait(&r->cond, &r->lock);
        }
        if (r->stop) {
            break;
        }

        /* lookups first: a request waits on them, nobody waits on writes */
        if (r->gets != NULL) {
            q = r->gets;
            r->gets = q->next;
            if (r->gets == NULL) {
                r->gets_tail = &r->gets;
            }
        } else {
            q = r->puts;
            r->puts = q->next;
            if (r->puts == NULL) {
                r->puts_tail = &r->puts;
            }
            r->queued_bytes -= q->value_len;
        }
        q->next = NULL;

        pthread_mutex_unlock(&r->lock);

        if (q->get) {
            llm_rkv_do_get(r, q);
        } else {
            llm_rkv_do_put(r, q);
        }

        pthread_mutex_lock(&r->lock);

        if (q->get) {
            *r->done_tail = q;
            r->done_tail = &q->next;
        } else {
            llm_rkv_req_free(q);
        }
    }

    pthread_mutex_unlock(&r->lock);
    return NULL;
}


/* (re)connects when needed, at most once a second; returns 0 when
 * connected */
static int
llm_rkv_connect(llm_rkv_t *r)
{
    int              port;
    char            *colon, host[256];
    uint64_t         now;
    redisReply      *reply;
    struct timeval   tv;

    if (r->rc != NULL) {
        return 0;
    }

    now = llm_now_us();
    if (now < r->next_connect) {
        return -1;
    }
    r->next_connect = now + 1000000;

    tv.tv_sec = r->conf.timeout_ms / 1000;
    tv.tv_usec = (r->conf.timeout_ms % 1000) * 1000;

    if (strncmp(r->addr, "unix:", 5) == 0) {
        r->rc = redisConnectUnixWithTimeout(r->addr + 5, tv);
    } else {
        snprintf(host, sizeof(host), "%s", r->addr);
        colon = strrchr(host, ':');
        port = 6379;
        if (colon != NULL) {
            *colon = '\0';
            port = atoi(colon + 1);
        }
        r->rc = redisConnectWithTimeout(host, port, tv);
    }

    if (r->rc == NULL || r->rc->err) {
        if (r->rc != NULL) {
            llm_log(LLM_LOG_WARN, "redis %s: %s", r->addr, r->rc->errstr);
            redisFree(r->rc);
            r->rc = NULL;
        }
        goto failed;
    }

    redisSetTimeout(r->rc, tv);

    if (r->password != NULL) {
        reply = redisCommand(r->rc, "AUTH %s", r->password);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            /* the password itself is never logged */
            llm_log(LLM_LOG_WARN, "redis %s: AUTH failed", r->addr);
            freeReplyObject(reply);
            redisFree(r->rc);
            r->rc = NULL;
            goto failed;
        }
        freeReplyObject(reply);
    }

    if (r->conf.db != 0) {
        reply = redisCommand(r->rc, "SELECT %d", r->conf.db);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            llm_log(LLM_LOG_WARN, "redis %s: SELECT %d failed", r->addr,
                    r->conf.db);
            freeReplyObject(reply);
            redisFree(r->rc);
            r->rc = NULL;
            goto failed;
        }
        freeReplyObject(reply);
    }

    llm_log(LLM_LOG_INFO, "redis %s: connected for the KV tier", r->addr);

    pthread_mutex_lock(&r->lock);
    r->stats.connected = 1;
    pthread_mutex_unlock(&r->lock);
    return 0;

failed:

    pthread_mutex_lock(&r->lock);
    r->stats.connected = 0;
    r->stats.errors++;
    pthread_mutex_unlock(&r->lock);
    return -1;
}


/* a command failed: drop the connection, reconnect later */
static void
llm_rkv_broken(llm_rkv_t *r)
{
    llm_log(LLM_LOG_WARN, "redis %s: %s", r->addr,
            r->rc->err ? r->rc->errstr : "bad reply");
    redisFree(r->rc);
    r->rc = NULL;

    pthread_mutex_lock(&r->lock);
    r->stats.connected = 0;
    r->stats.errors++;
    pthread_mutex_unlock(&r->lock);
}


static void
llm_rkv_do_put(llm_rkv_t *r, llm_rkv_req_t *q)
{
    char         key[LLM_RKV_KEY_MAX], ttl[32];
    const char  *argv[5];
    size_t       argl[5];
    redisReply  *reply;

    if (llm_rkv_connect(r) != 0) {
        pthread_mutex_lock(&r->lock);
        r->stats.put_drops++;
        pthread_mutex_unlock(&r->lock);
        return;
    }

    llm_rkv_key(key, q->fingerprint, q->hash);
    snprintf(ttl, sizeof(ttl), "%d", r->conf.ttl);

    argv[0] = "SET";   argl[0] = 3;
    argv[1] = key;     argl[1] = strlen(key);
    argv[2] = q->value;
    argl[2] = q->value_len;
    argv[3] = "EX";    argl[3] = 2;
    argv[4] = ttl;     argl[4] = strlen(ttl);

    reply = redisCommandArgv(r->rc, 5, argv, argl);
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        freeReplyObject(reply);
        llm_rkv_broken(r);
        return;
    }
    freeReplyObject(reply);

    pthread_mutex_lock(&r->lock);
    r->stats.puts++;
    pthread_mutex_unlock(&r->lock);
}


static void
llm_rkv_do_get(llm_rkv_t *r, llm_rkv_req_t *q)
{
    int             found, rejected;
    size_t          tlen;
    const char    **argv;
    size_t         *argl;
    char           *keys;
    redisReply     *reply, *e;
    llm_rkv_hdr_t   h;
    const int32_t  *toks;

    q->res.n_found = 0;
    q->res.len = q->len;

    if (llm_rkv_connect(r) != 0) {
        return;
    }

    argv = malloc((size_t) (q->n + 1) * sizeof(char *));
    argl = malloc((size_t) (q->n + 1) * sizeof(size_t));
    keys = malloc((size_t) q->n * LLM_RKV_KEY_MAX);
    if (argv == NULL || argl == NULL || keys == NULL) {
        free(argv);
        free(argl);
        free(keys);
        return;
    }

    argv[0] = "MGET";
    argl[0] = 4;
    for (int i = 0; i < q->n; i++) {
        llm_rkv_key(keys + (size_t) i * LLM_RKV_KEY_MAX, q->fingerprint,
                    q->hashes[i]);
        argv[i + 1] = keys + (size_t) i * LLM_RKV_KEY_MAX;
        argl[i + 1] = strlen(argv[i + 1]);
    }

    reply = redisCommandArgv(r->rc, q->n + 1, argv, argl);
    free(argv);
    free(argl);
    free(keys);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != (size_t) q->n)
    {
        freeReplyObject(reply);
        llm_rkv_broken(r);
        return;
    }

    tlen = (size_t) q->block_size * sizeof(int32_t);
    found = 0;
    rejected = 0;

    for (int i = 0; i < q->n; i++) {
        e = reply->element[i];
        if (e->type != REDIS_REPLY_STRING) {
            break;                            /* absent or evicted */
        }

        toks = q->tokens + (size_t) i * (size_t) q->block_size;

        if ((size_t) e->len != sizeof(h) + tlen + q->len) {
            rejected = 1;
            break;
        }
        memcpy(&h, e->str, sizeof(h));
        if (h.magic != LLM_RKV_MAGIC || h.version != LLM_RKV_VERSION
            || h.fingerprint != q->fingerprint || h.hash != q->hashes[i]
            || h.block_size != (uint32_t) q->block_size || h.len != q->len
            || memcmp(e->str + sizeof(h), toks, tlen) != 0
            || h.checksum != llm_rkv_checksum(e->str + sizeof(h), tlen,
                                              e->str + sizeof(h) + tlen,
                                              q->len))
        {
            rejected = 1;
            break;
        }

        q->res.data[i] = malloc(q->len);
        if (q->res.data[i] == NULL) {
            break;
        }
        memcpy(q->res.data[i], e->str + sizeof(h) + tlen, q->len);
        found++;
    }

    freeReplyObject(reply);
    q->res.n_found = found;

    pthread_mutex_lock(&r->lock);
    r->stats.gets += (uint64_t) q->n;
    r->stats.hits += (uint64_t) found;
    r->stats.rejects += (uint64_t) rejected;
    pthread_mutex_unlock(&r->lock);
}


static void
llm_rkv_key(char *key, uint64_t fp, uint64_t hash)
{
    snprintf(key, LLM_RKV_KEY_MAX, "llmkv:%016llx:%016llx",
             (unsigned long long) fp, (unsigned long long) hash);
}


/* a 64-bit checksum over two byte ranges */
static uint64_t
llm_rkv_checksum(const void *a, size_t alen, const void *b, size_t blen)
{
    return llm_hash_data(llm_hash_data(LLM_RKV_MAGIC, a, alen), b, blen);
}


static void
llm_rkv_req_free(llm_rkv_req_t *q)
{
    free(q->hashes);
    free(q->tokens);
    free(q->value);
    free(q);
}
