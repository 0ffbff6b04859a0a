/*
 * Copyright (C) ngx_llm developers
 *
 * The engine through its protocol, as a worker sees it: a real
 * `llm-engine serve` on the shipped model in another process, a client
 * written here from engine/proto/llm_proto.h (handshake with descriptors,
 * slots, doorbells, events), and requests for each protocol-v2 feature:
 * text and token prompts, chat, stop strings, logprobs, errors, a full
 * ring, cancellation and a worker that dies holding a slot.
 */

#define _GNU_SOURCE

#include <sys/inotify.h>

#include "tap.h"
#include "llm_test_client.h"


#define REF  ", there was a little girl named Lily. She loved to play " \
             "outside in the p"


static pid_t  engine_pid;
static char   sock_path[108];


static int
start_engine(void)
{
    snprintf(sock_path, sizeof(sock_path), "/tmp/llm_test_engine_%d.sock",
             (int) getpid());
    engine_pid = start_engine_as(sock_path, (unsigned) getuid());
    return engine_pid > 0 ? 0 : -1;
}


/* an engine that admits another user refuses us at the handshake */
static void
test_denied(void)
{
    int                 fd, status;
    pid_t               pid;
    ssize_t             n;
    llm_hello_t         hello;
    llm_welcome_t       w;
    struct sockaddr_un  sa;
    char                path[108];

    snprintf(path, sizeof(path), "/tmp/llm_test_denied_%d.sock",
             (int) getpid());
    pid = start_engine_as(path, (unsigned) getuid() + 4242);
    if (!ok(pid > 0, "a second engine, for another user")) {
        return;
    }

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    memset(&hello, 0, sizeof(hello));
    hello.magic = LLM_PROTO_MAGIC;
    hello.version = LLM_PROTO_VERSION;

    memset(&w, 0, sizeof(w));
    n = -1;
    if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0
        && write(fd, &hello, sizeof(hello)) == sizeof(hello))
    {
        n = read(fd, &w, sizeof(w));
    }
    ok(n == sizeof(w) && w.status == LLM_HELLO_DENIED,
       "a peer whose uid is not allowed is denied (status %u)", w.status);
    ok(read(fd, &w, sizeof(w)) == 0, "and disconnected");
    close(fd);

    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
}


/*
 * The socket's path appears only once the engine listens on it: a
 * client that connects as soon as it sees the path is not refused.
 * Watched with inotify in a directory of its own: the path must arrive
 * by a rename (IN_MOVED_TO), never be created by bind() (IN_CREATE),
 * which left a window before listen() where connect() failed.
 */
static void
test_socket_appears(void)
{
    int                 in, fd, status, how;
    char                dir[] = "/tmp/llm_test_sock_XXXXXX", path[108];
    char                buf[4096] __attribute__((aligned(8)));
    pid_t               pid;
    ssize_t             n;
    struct sockaddr_un  sa;
    const struct inotify_event  *ev;

    if (!ok(mkdtemp(dir) != NULL, "a directory for the socket")) {
        return;
    }
    snprintf(path, sizeof(path), "%s/e.sock", dir);

    in = inotify_init1(IN_CLOEXEC);
    if (!ok(in != -1 && inotify_add_watch(in, dir, IN_CREATE | IN_MOVED_TO)
                        != -1, "watched"))
    {
        return;
    }

    pid = start_engine_as(path, (unsigned) getuid());
    how = 0;

    while (pid > 0 && how == 0 && (n = read(in, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n; p += sizeof(*ev) + ev->len) {
            ev = (const struct inotify_event *) p;
            if (ev->len > 0 && strcmp(ev->name, "e.sock") == 0) {
                how = (int) (ev->mask & (IN_CREATE | IN_MOVED_TO));
                break;
            }
        }
    }

    ok(how == IN_MOVED_TO, "the path arrives by a rename, listening "
       "(inotify mask %#x)", (unsigned) how);

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    ok(connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0,
       "connect() at once is accepted");
    close(fd);
    close(in);

    if (pid > 0) {
        kill(pid, SIGTERM);
        waitpid(pid, &status, 0);
    }
    unlink(path);
    ok(rmdir(dir) == 0, "nothing else left in the directory");
}


static void
test_requests(client_t *c)
{
    result_t  r, r2;

    ok(run(c, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
              "\"max_tokens\":24,\"temperature\":0}", &r) == 0
       && r.done, "text prompt: DONE");
    ok(strcmp(r.text, REF) == 0, "text prompt: the reference text");
    is_int(r.d.finish_reason, LLM_FINISH_LENGTH, "finish: length");
    is_int(r.d.prompt_tokens, 5, "5 prompt tokens");
    is_int(r.d.completion_tokens, 24, "24 completion tokens");
    ok(r.d.ttft_us <= r.d.total_us, "ttft within total");

    ok(run(c, "{\"model\":\"stories\",\"prompt_tokens\":[1,403,407,261,378],"
              "\"max_tokens\":24,\"temperature\":0}", &r2) == 0
       && strcmp(r2.text, REF) == 0,
       "the same prompt as token ids gives the same text");

    ok(run(c, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
              "\"max_tokens\":24,\"temperature\":0,\"stop\":[\"Lily\","
              "\"zzz\"]}", &r) == 0 && r.done, "stop: DONE");
    ok(strcmp(r.text, ", there was a little girl named ") == 0,
       "stop: the text before the stop string: \"%s\"", r.text);
    is_int(r.d.finish_reason, LLM_FINISH_STOP, "stop: finish stop");

    ok(run(c, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
              "\"max_tokens\":24,\"temperature\":0,\"logprobs\":5}", &r) == 0
       && strcmp(r.text, REF) == 0, "logprobs: same text");
    is_int(r.n_logprobs, 24, "one LOGPROBS per token");
    ok(r.logprobs_before_token, "each right before its TOKEN");
    ok(r.first_top_matches, "greedy: the token is the top alternative");

    /* ChatML (stories260K's GGUF has no template): the rendering is text
     * to this vocabulary, so the prompt is the tokens of that text */
    ok(run(c, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
              "\"content\":\"Hi\"}],\"max_tokens\":4,\"temperature\":0}",
           &r) == 0 && r.done, "chat: DONE");
    ok(r.d.prompt_tokens > 10, "chat: the template's text was added (%u "
       "tokens)", r.d.prompt_tokens);

    ok(run(c, "{\"model\":\"nosuch\",\"prompt\":\"x\"}", &r) == 0 && r.error,
       "unknown model: ERROR");
    is_int(r.e.status, 404, "unknown model: 404");
    ok(strcmp(r.e.code, "model_not_found") == 0, "code model_not_found");

    ok(run(c, "{\"model\":\"stories\",\"prompt\":\"x\",\"top_p\":7}", &r) == 0
       && r.error && r.e.status == 400 && strcmp(r.e.code, "top_p") == 0,
       "bad field: 400 naming it");

    ok(run(c, "{\"model\":\"stories\",\"prompt_tokens\":[1,99999]}", &r) == 0
       && r.error && r.e.status == 400, "token outside the vocabulary: 400");

    ok(run(c, "not json", &r) == 0 && r.error && r.e.status == 400,
       "garbage in the request area: 400");
}


/* a reader that stops reading: the engine pauses, then resumes */
static void
test_full_ring(client_t *c)
{
    int          slot;
    uint64_t     v;
    result_t     r;
    llm_slot_t  *s;

    memset(&r, 0, sizeof(r));
    r.logprobs_before_token = 1;
    r.first_top_matches = 1;

    slot = submit(c, "{\"model\":\"stories\",\"prompt\":\"Once\","
                     "\"max_tokens\":600,\"temperature\":0,"
                     "\"logprobs\":20}");
    s = llm_shm_slot(c->base, c->h, (uint32_t) slot);

    for (int i = 0; i < 6000 && !atomic_load(&s->engine_waiting); i++) {
        sleep_ms(5);
    }
    ok(atomic_load(&s->engine_waiting) == 1,
       "the engine waits on a full ring");
    ok(atomic_load(&s->head) - atomic_load(&s->tail) <= c->h->ring_size,
       "and never overfills it");

    for (int i = 0; i < 2000 && !drain(c, slot, &r); i++) {
        struct pollfd  p = { c->my_bell, POLLIN, 0 };

        poll(&p, 1, 20);
        (void) !read(c->my_bell, &v, sizeof(v));
    }
    ok(r.done && r.d.completion_tokens == 600,
       "every token arrives once the reader drains (%u)",
       r.d.completion_tokens);
    is_int(r.n_logprobs, 600, "with every LOGPROBS event");

    for (int i = 0; i < 100; i++) {
        uint32_t  w = atomic_load(&s->state);

        if (llm_slot_state(w) == LLM_SLOT_FINISHED) {
            atomic_store(&s->state, llm_slot_word(LLM_SLOT_FREE, 0));
            break;
        }
        sleep_ms(5);
    }
}


static void
test_cancel(client_t *c)
{
    int          slot;
    uint32_t     w;
    uint64_t     before;
    llm_slot_t  *s;

    before = stat(c, LLM_STAT_CANCELLED);
    slot = submit(c, "{\"model\":\"stories\",\"prompt\":\"Once\","
                     "\"max_tokens\":1500,\"temperature\":0,"
                     "\"logprobs\":20}");
    s = llm_shm_slot(c->base, c->h, (uint32_t) slot);

    /* wait until it runs, then cancel */
    for (int i = 0; i < 200; i++) {
        if (llm_slot_state(atomic_load(&s->state)) == LLM_SLOT_RUNNING) {
            break;
        }
        sleep_ms(5);
    }
    w = atomic_load(&s->state);
    ok(llm_slot_state(w) == LLM_SLOT_RUNNING
       && atomic_compare_exchange_strong(&s->state, &w,
              llm_slot_word(LLM_SLOT_CANCELLED, c->worker_id)),
       "cancelled while running");
    ring_engine(c);

    for (int i = 0; i < 200; i++) {
        if (llm_slot_state(atomic_load(&s->state)) == LLM_SLOT_FREE) {
            break;
        }
        sleep_ms(5);
    }
    is_int(llm_slot_state(atomic_load(&s->state)), LLM_SLOT_FREE,
           "the engine freed the slot");
    is_int(stat(c, LLM_STAT_CANCELLED), before + 1, "and counted it");
}


/* a worker that dies holding slots: the engine takes them back */
static void
test_dead_worker(client_t *c)
{
    int       status, busy;
    pid_t     pid;
    uint64_t  before;

    before = stat(c, LLM_STAT_RECLAIMED);

    pid = fork();
    if (pid == 0) {
        client_t  d;

        if (client_connect(&d, sock_path) != 0) {
            _exit(1);
        }
        submit(&d, "{\"model\":\"stories\",\"prompt\":\"Once\","
                   "\"max_tokens\":1500,\"temperature\":0,"
                   "\"logprobs\":20}");
        submit(&d, "{\"model\":\"stories\",\"prompt\":\"Twice\","
                   "\"max_tokens\":1500,\"temperature\":0}");
        sleep_ms(50);
        kill(getpid(), SIGKILL);
    }
    waitpid(pid, &status, 0);
    ok(WIFSIGNALED(status), "the worker died");

    for (int i = 0; i < 200; i++) {
        if (stat(c, LLM_STAT_RECLAIMED) >= before + 2) {
            break;
        }
        sleep_ms(10);
    }
    is_int(stat(c, LLM_STAT_RECLAIMED), before + 2,
           "both of its slots reclaimed");

    busy = 0;
    for (uint32_t i = 0; i < c->h->n_slots; i++) {
        llm_slot_t  *s = llm_shm_slot(c->base, c->h, i);

        busy += llm_slot_state(atomic_load(&s->state)) != LLM_SLOT_FREE;
    }
    is_int(busy, 0, "every slot is free again");
    is_int(stat(c, LLM_STAT_RUNNING), 0, "no sequence running");
}


int
main(void)
{
    int       status;
    client_t  c;

    if (access("models/stories260K.gguf", R_OK) != 0) {
        skip_all("run from the repository root");
    }
    if (start_engine() != 0) {
        ok(0, "the engine started");
        return done_testing();
    }

    if (!ok(client_connect(&c, sock_path) == 0, "handshake, descriptors, mapping")) {
        kill(engine_pid, SIGKILL);
        return done_testing();
    }
    ok(c.h->n_models == 1 && strcmp(c.h->models[0].name, "stories") == 0,
       "the model table names the model");
    is_int(c.h->models[0].n_vocab, 512, "and its vocabulary");

    test_requests(&c);
    test_full_ring(&c);
    test_cancel(&c);
    test_dead_worker(&c);
    test_denied();
    test_socket_appears();

    kill(engine_pid, SIGTERM);
    waitpid(engine_pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "the engine stops cleanly on SIGTERM");
    ok(access(sock_path, F_OK) != 0, "and removes its socket");

    return done_testing();
}
