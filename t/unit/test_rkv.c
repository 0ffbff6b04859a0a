/*
 * Copyright (C) ngx_llm developers
 *
 * The Redis KV tier against a real redis-server started here: blocks go
 * in and come back byte for byte; a wrong model, wrong tokens, a damaged
 * value or an evicted key is a miss; a dead Redis is a miss, not a hang,
 * and the tier comes back when Redis does.
 */

#define _GNU_SOURCE

#include "tap.h"
#include "llm_test_redis.h"
#include "llm_rkv.h"


#define BS    4
#define LEN   1000


static void
block(unsigned char *buf, int seed)
{
    for (int i = 0; i < LEN; i++) {
        buf[i] = (unsigned char) (seed * 31 + i * 7);
    }
}


/* waits for one lookup's result */
static int
wait_result(llm_rkv_t *r, llm_rkv_result_t *res)
{
    for (int i = 0; i < 400; i++) {
        if (llm_rkv_poll(r, res)) {
            return 0;
        }
        redis_sleep_ms(10);
    }
    return -1;
}


/* waits until the writes queued so far are done */
static void
settle(llm_rkv_t *r, uint64_t puts)
{
    llm_rkv_stats_t  st;

    for (int i = 0; i < 200; i++) {
        llm_rkv_stats(r, &st);
        if (st.puts + st.put_drops >= puts) {
            return;
        }
        redis_sleep_ms(10);
    }
}


static void
free_result(llm_rkv_result_t *res)
{
    for (int i = 0; i < res->n_found; i++) {
        free(res->data[i]);
    }
}


int
main(void)
{
    int               same;
    int32_t           toks[4 * BS];
    uint64_t          hashes[4] = { 11, 22, 33, 44 };
    llm_err_t         err;
    llm_rkv_t        *r;
    llm_rkv_conf_t    conf;
    llm_rkv_stats_t   st;
    llm_rkv_result_t  res;
    char              addr[64];
    unsigned char     data[4][LEN];

    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        skip_all("redis-server is not installed");
    }

    port = free_port();
    if (!ok(redis_start() == 0, "redis-server started")) {
        return done_testing();
    }

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    memset(&conf, 0, sizeof(conf));
    conf.addr = addr;
    conf.ttl = 60;
    conf.timeout_ms = 200;
    ok(llm_rkv_open(&r, &conf, &err) == LLM_OK, "tier opened");

    for (int i = 0; i < 4 * BS; i++) {
        toks[i] = 100 + i;
    }
    for (int b = 0; b < 3; b++) {
        block(data[b], b);
        llm_rkv_put(r, 7, hashes[b], toks + b * BS, BS, data[b], LEN);
    }
    settle(r, 3);

    ok(llm_rkv_get(r, 7, hashes, toks, 4, BS, LEN, &port) == LLM_OK,
       "lookup of a chain of four");
    ok(wait_result(r, &res) == 0, "its result arrives");
    ok(res.ctx == &port, "with the caller's context");
    is_int(res.n_found, 3, "the three stored blocks are found, in order");
    same = res.n_found == 3;
    for (int b = 0; b < res.n_found; b++) {
        same &= memcmp(res.data[b], data[b], LEN) == 0;
    }
    ok(same, "byte for byte");
    free_result(&res);

    llm_rkv_get(r, 8, hashes, toks, 3, BS, LEN, NULL);
    wait_result(r, &res);
    is_int(res.n_found, 0, "another model's fingerprint: a miss");

    toks[BS + 1] = 9999;
    llm_rkv_get(r, 7, hashes, toks, 3, BS, LEN, NULL);
    wait_result(r, &res);
    is_int(res.n_found, 1, "other tokens in block 2: only block 1 counts");
    free_result(&res);
    toks[BS + 1] = 100 + BS + 1;

    llm_rkv_get(r, 7, hashes, toks, 3, BS, LEN + 1, NULL);
    wait_result(r, &res);
    is_int(res.n_found, 0, "another block size in bytes: a miss");

    /* damage block 1's bytes inside Redis */
    {
        char           key[64];
        redisContext  *c = redisConnect("127.0.0.1", port);
        redisReply    *rep;

        snprintf(key, sizeof(key), "llmkv:%016llx:%016llx", 7ULL, 22ULL);
        rep = redisCommand(c, "SETRANGE %s 500 XYZ", key);
        freeReplyObject(rep);
        snprintf(key, sizeof(key), "llmkv:%016llx:%016llx", 7ULL, 33ULL);
        rep = redisCommand(c, "DEL %s", key);
        freeReplyObject(rep);
        redisFree(c);
    }
    llm_rkv_get(r, 7, hashes, toks, 3, BS, LEN, NULL);
    wait_result(r, &res);
    is_int(res.n_found, 1, "a damaged block 2 ends the chain there");
    free_result(&res);
    llm_rkv_stats(r, &st);
    ok(st.rejects >= 2, "rejections counted (%llu)",
       (unsigned long long) st.rejects);

    /* Redis gone: lookups miss at once, writes are dropped */
    redis_stop();
    llm_rkv_get(r, 7, hashes, toks, 1, BS, LEN, NULL);
    ok(wait_result(r, &res) == 0 && res.n_found == 0,
       "Redis down: a lookup is a miss, and returns");
    llm_rkv_stats(r, &st);
    ok(!st.connected && st.errors > 0, "the tier knows it is down");

    if (!ok(redis_start() == 0, "redis-server restarted")) {
        llm_rkv_close(r);
        return done_testing();
    }
    redis_sleep_ms(1100);       /* reconnects are at most once a second */
    llm_rkv_stats(r, &st);
    llm_rkv_put(r, 7, hashes[0], toks, BS, data[0], LEN);
    settle(r, st.puts + st.put_drops + 1);
    llm_rkv_get(r, 7, hashes, toks, 1, BS, LEN, NULL);
    wait_result(r, &res);
    is_int(res.n_found, 1, "back when Redis is back");
    free_result(&res);

    llm_rkv_close(r);
    redis_stop();

    return done_testing();
}
