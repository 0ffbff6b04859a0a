/*
 * Copyright (C) ngx_llm developers
 *
 * The Redis KV tier through real engines: an engine computes a long
 * prompt and writes its blocks to Redis; a restarted engine, its local
 * cache empty, answers the same prompt with cached tokens and the
 * identical text; an engine serving other weights under the same name
 * gets nothing from those blocks.
 */

#define _GNU_SOURCE

#include "tap.h"
#include "llm_test_client.h"
#include "llm_test_redis.h"


static long long
dbsize(void)
{
    long long      n = -1;
    redisContext  *c = redisConnect("127.0.0.1", port);
    redisReply    *r;

    if (c != NULL && !c->err) {
        r = redisCommand(c, "DBSIZE");
        if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
            n = r->integer;
        }
        freeReplyObject(r);
    }
    if (c != NULL) {
        redisFree(c);
    }
    return n;
}


static pid_t
engine(const char *sock, const char *model)
{
    char         addr[64];
    const char  *args[] = { "--model", model, "--redis", addr, NULL };

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    return start_engine_argv(sock, (unsigned) getuid(), args);
}


static void
stop(pid_t pid)
{
    int  status;

    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
}


/* the engine up and this client attached, or the test ends here
 * (a client that is not attached has nothing to submit to) */
static int
attached(client_t *c, const char *sock, pid_t pid, const char *what)
{
    if (ok(pid > 0 && client_connect(c, sock) == 0, "%s", what)) {
        return 1;
    }

    if (pid > 0) {
        stop(pid);
    }
    redis_stop();
    return 0;
}


int
main(void)
{
    pid_t        pid;
    client_t     c;
    result_t     first, again, other;
    char         sock[108], json[8192], prompt[6000], other_model[512];
    const char  *fx;

    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        skip_all("redis-server is not installed");
    }
    fx = getenv("LLM_FIXTURES") ? getenv("LLM_FIXTURES")
                                : "../shared/fixtures";
    snprintf(other_model, sizeof(other_model),
             "stories=%s/models/tiny-llama3-f32.gguf", fx);

    port = free_port();
    if (!ok(redis_start() == 0, "redis-server started")) {
        return done_testing();
    }

    prompt[0] = '\0';
    for (int i = 0; i < 20; i++) {
        strcat(prompt, "The little dog ran to the park and played. ");
    }
    snprintf(json, sizeof(json), "{\"model\":\"stories\",\"prompt\":\"%s\","
             "\"max_tokens\":24,\"temperature\":0}", prompt);
    snprintf(sock, sizeof(sock), "/tmp/llm_rkv_engine_%d.sock",
             (int) getpid());

    pid = engine(sock, "stories=models/stories260K.gguf");
    if (!attached(&c, sock, pid, "first engine")) {
        return done_testing();
    }
    ok(run(&c, json, &first) == 0 && first.done, "a long prompt, cold");
    is_int(first.d.cached_tokens, 0, "nothing cached at first");

    for (int i = 0; i < 400 && dbsize() < 10; i++) {
        sleep_ms(10);
    }
    ok(dbsize() >= 10, "its blocks are in Redis (%lld keys)", dbsize());
    stop(pid);

    pid = engine(sock, "stories=models/stories260K.gguf");
    if (!attached(&c, sock, pid, "a restarted engine, its local cache "
                  "empty"))
    {
        return done_testing();
    }
    ok(run(&c, json, &again) == 0 && again.done, "the same prompt again");
    ok(again.d.cached_tokens >= 160, "%u of %u prompt tokens came from "
       "Redis", again.d.cached_tokens, again.d.prompt_tokens);
    ok(strcmp(again.text, first.text) == 0, "with the identical text");
    ok(stat(&c, LLM_STAT_REDIS_HITS) >= 10, "counted as Redis hits");
    stop(pid);

    if (access(other_model + 8, R_OK) == 0) {
        pid = engine(sock, other_model);
        if (!attached(&c, sock, pid, "an engine with other weights under "
                      "the same name"))
        {
            return done_testing();
        }
        ok(run(&c, json, &other) == 0 && other.done
           && other.d.cached_tokens == 0,
           "gets nothing from the first model's blocks");
        stop(pid);
    }

    redis_stop();
    return done_testing();
}
