/*
 * Copyright (C) ngx_llm developers
 *
 * libFuzzer target for the protocol's event ring (make fuzz): the ring
 * of engine/proto/llm_ring.h with both of its ends, the region header
 * check of engine/proto/llm_proto.h, and the module's decoding of the
 * events it reads (ngx_http_llm_reply.c, through fuzz/fuzz_ngx.c), all
 * driven by a peer that may write anything anywhere.
 *
 * An input is a mode byte, a setup, then operations until it ends.
 *
 *   mode bit 0 clear: a ring alone, of 1 << (4 + b % 11) bytes (16 up
 *     to 16384, b the next byte) in an allocation of exactly that size;
 *   mode bit 0 set: a region: a u64 size (up to 1 MB), the header's
 *     first 64 bytes (its model table and counters are zero), a u16
 *     slot.  llm_shm_header_check() must refuse a header whose slots
 *     do not lie in the region: every slot's control lines, request
 *     area and ring are touched when it accepts one.  The slot taken
 *     modulo n_slots then carries the operations;
 *   mode bits 1..5: the reply the events go to: chat, stream,
 *     include_usage, and logprobs (none, 0, 2 or 20 alternatives).
 *
 * Operations (a byte, then its arguments):
 *
 *   0 put: type, u16 length, split, payload (what the input lacks is
 *     a pattern): llm_ring_put() of two parts;
 *   1 get: llm_ring_get(), and a record it returns to the module;
 *   2 head = u64, 3 tail = u64: a peer writing the indices;
 *   4 head or tail += i8;
 *   5 poke: u16 offset, n, n bytes written into the ring;
 *   6 drain: gets until the ring is empty or corrupt, which must take
 *     fewer than size / 8 + 2 of them;
 *   7 llm_ring_space().
 *
 * While no peer has written indices or bytes, the ring must behave as
 * a FIFO of the records put (a model of it is kept); whatever was
 * written, a get never reads outside the ring, never moves head, moves
 * tail by exactly the record it returns, and a record it returns has a
 * length the indices allow.
 *
 * Built with -DLLM_RING_SEED_MAIN this file is instead the program that
 * writes the seed corpus: the engine's traffic (TOKEN, LOGPROBS, DONE,
 * ERROR records around small rings and a region's slot) and the hostile
 * cases of t/unit/test_ring.c.
 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_ring.h"
#include "fuzz_seed.h"


#define FUZZ_REGION_MAX  (1 << 20)


#ifndef LLM_RING_SEED_MAIN

#include "fuzz_ngx.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


typedef struct {
    const uint8_t  *p;
    size_t          n;
} input_t;


/* the records put and not yet got, while no peer has interfered */
typedef struct {
    int             valid;
    uint8_t        *q;             /* records: llm_event_t, payload */
    size_t          head;
    size_t          tail;
    size_t          cap;
} model_t;


static uint8_t
in_u8(input_t *in)
{
    uint8_t  v;

    if (in->n == 0) {
        return 0;
    }

    v = in->p[0];
    in->p++;
    in->n--;

    return v;
}


static uint64_t
in_uint(input_t *in, int bytes)
{
    uint64_t  v;

    v = 0;

    for (int i = 0; i < bytes; i++) {
        v |= (uint64_t) in_u8(in) << (8 * i);
    }

    return v;
}


static void
model_push(model_t *m, const llm_event_t *ev, const uint8_t *payload)
{
    if (m->head + sizeof(llm_event_t) + ev->len > m->cap) {
        /* compact, then grow */
        memmove(m->q, m->q + m->tail, m->head - m->tail);
        m->head -= m->tail;
        m->tail = 0;

        if (m->head + sizeof(llm_event_t) + ev->len > m->cap) {
            m->cap = m->head + sizeof(llm_event_t) + ev->len + 4096;
            m->q = realloc(m->q, m->cap);
            if (m->q == NULL) {
                abort();
            }
        }
    }

    memcpy(m->q + m->head, ev, sizeof(llm_event_t));
    memcpy(m->q + m->head + sizeof(llm_event_t), payload, ev->len);
    m->head += sizeof(llm_event_t) + ev->len;
}


static void
fail(const char *what, uint64_t head, uint64_t tail)
{
    fprintf(stderr, "fuzz_ring: %s (head %llu, tail %llu)\n", what,
            (unsigned long long) head, (unsigned long long) tail);
    abort();
}


/* a get, with everything it must and must not do checked */
static int
get(llm_slot_t *s, const uint8_t *ring, uint32_t size, model_t *m,
    uint8_t *buf, int *module)
{
    int           rc;
    uint64_t      h0, t0, h1, t1;
    llm_event_t   ev, want;

    h0 = atomic_load(&s->head);
    t0 = atomic_load(&s->tail);

    rc = llm_ring_get(s, ring, size, &ev, buf);

    h1 = atomic_load(&s->head);
    t1 = atomic_load(&s->tail);

    if (h1 != h0) {
        fail("the consumer moved head", h1, t1);
    }

    switch (rc) {

    case LLM_RING_EMPTY:
        if (h0 != t0 || t1 != t0) {
            fail("empty, but head and tail differ", h0, t0);
        }
        break;

    case LLM_RING_CORRUPT:
        if (t1 != t0) {
            fail("a corrupt ring's tail moved", h0, t1);
        }
        break;

    case LLM_RING_OK:
        if (ev.len > LLM_EVENT_MAX || h0 - t0 > size || (t0 & 7) != 0
            || llm_event_size(ev.len) > h0 - t0
            || t1 != t0 + llm_event_size(ev.len))
        {
            fail("a record the indices do not allow", h0, t0);
        }
        break;

    default:
        fail("llm_ring_get() returned something else", h0, t0);
    }

    if (m->valid) {
        if (rc == LLM_RING_CORRUPT || (rc == LLM_RING_EMPTY) != (m->head
                                                                == m->tail))
        {
            fail("a ring nobody tampered with disagrees with its model",
                 h0, t0);
        }

        if (rc == LLM_RING_OK) {
            memcpy(&want, m->q + m->tail, sizeof(llm_event_t));

            if (ev.type != want.type || ev.flags != 0 || ev.len != want.len
                || memcmp(buf, m->q + m->tail + sizeof(llm_event_t),
                          ev.len) != 0)
            {
                fail("a record came back changed", h0, t0);
            }

            m->tail += sizeof(llm_event_t) + ev.len;
        }
    }

    if (rc == LLM_RING_OK && *module) {
        *module = fuzz_ngx_event(ev.type, buf, ev.len);
    }

    return rc;
}


static void
put(llm_slot_t *s, uint8_t *ring, uint32_t size, model_t *m, input_t *in,
    uint8_t *payload)
{
    int           rc;
    size_t        len, split, k;
    uint16_t      type;
    uint64_t      h0, t0, h1, t1;
    llm_event_t   ev;

    type = in_u8(in) % 6;
    len = (size_t) (in_uint(in, 2) % (LLM_EVENT_MAX + 16));
    split = in_u8(in);

    for (k = 0; k < len; k++) {
        payload[k] = in->n ? in_u8(in) : (uint8_t) (k * 7 + len);
    }

    if (split > len) {
        split = len;
    }

    h0 = atomic_load(&s->head);
    t0 = atomic_load(&s->tail);

    rc = llm_ring_put(s, ring, size, type, payload, (uint32_t) split,
                      payload + split, (uint32_t) (len - split));

    h1 = atomic_load(&s->head);
    t1 = atomic_load(&s->tail);

    if (t1 != t0) {
        fail("the producer moved tail", h1, t1);
    }

    if (rc == LLM_RING_TOOBIG) {
        if (len <= LLM_EVENT_MAX || h1 != h0) {
            fail("a record refused as too big", h0, t0);
        }
        return;
    }

    if (rc == LLM_RING_FULL) {
        if (h1 != h0) {
            fail("a full ring's head moved", h1, t1);
        }

        if (m->valid && h0 - t0 <= size
            && size - (h0 - t0) >= llm_event_size(len))
        {
            fail("a ring with room refused a record", h0, t0);
        }
        return;
    }

    if (rc != LLM_RING_OK || len > LLM_EVENT_MAX
        || h1 != h0 + llm_event_size(len))
    {
        fail("a put that went wrong", h1, t1);
    }

    if (m->valid) {
        ev.type = type;
        ev.flags = 0;
        ev.len = (uint32_t) len;
        model_push(m, &ev, payload);
    }
}


static void
run(llm_slot_t *s, uint8_t *ring, uint32_t size, input_t *in)
{
    int        module, rc, n;
    size_t     off, len;
    int8_t     delta;
    uint8_t    op, *buf, *payload;
    uint64_t   v, used;
    model_t    m;

    memset(&m, 0, sizeof(model_t));
    m.valid = 1;
    m.cap = 4 * LLM_EVENT_MAX;
    m.q = malloc(m.cap);

    /* exactly what the API asks for, so that ASan sees any more */
    buf = malloc(LLM_EVENT_MAX);
    payload = malloc(LLM_EVENT_MAX + 16);
    if (buf == NULL || payload == NULL || m.q == NULL) {
        abort();
    }

    module = 1;

    while (in->n > 0) {
        op = in_u8(in) & 7;

        switch (op) {

        case 0:
            put(s, ring, size, &m, in, payload);
            break;

        case 1:
            (void) get(s, ring, size, &m, buf, &module);
            break;

        case 2:
            atomic_store(&s->head, in_uint(in, 8));
            m.valid = 0;
            break;

        case 3:
            atomic_store(&s->tail, in_uint(in, 8));
            m.valid = 0;
            break;

        case 4:
            v = in_u8(in);
            delta = (int8_t) in_u8(in);
            if (v & 1) {
                atomic_fetch_add(&s->head, (uint64_t) (int64_t) delta);
            } else {
                atomic_fetch_add(&s->tail, (uint64_t) (int64_t) delta);
            }
            m.valid = m.valid && delta == 0;
            break;

        case 5:
            off = (size_t) in_uint(in, 2);
            len = in_u8(in);
            for (size_t k = 0; k < len && in->n > 0; k++) {
                ring[(off + k) & (size - 1)] = in_u8(in);
            }
            m.valid = 0;
            break;

        case 6:
            n = 0;
            do {
                rc = get(s, ring, size, &m, buf, &module);

                if (++n > (int) (size / 8) + 2) {
                    fail("the ring never empties", atomic_load(&s->head),
                         atomic_load(&s->tail));
                }
            } while (rc == LLM_RING_OK);
            break;

        default:
            v = llm_ring_space(s, size);
            used = atomic_load(&s->head) - atomic_load(&s->tail);

            if (v > size || (m.valid && v != size - used)) {
                fail("llm_ring_space() is wrong", atomic_load(&s->head),
                     atomic_load(&s->tail));
            }
            break;
        }
    }

    free(buf);
    free(payload);
    free(m.q);
}


/* a region as a worker maps it: the header checked before anything */
static void
region(input_t *in)
{
    uint8_t                 *base;
    uint32_t                 slot;
    uint64_t                 size;
    llm_slot_t              *s;
    const char              *why;
    llm_shm_header_t        *h;
    volatile const uint8_t  *p;

    size = in_uint(in, 8);

    if (size < sizeof(llm_shm_header_t) || size > FUZZ_REGION_MAX) {
        return;
    }

    base = calloc(1, (size_t) size);
    if (base == NULL) {
        abort();
    }

    for (size_t i = 0; i < offsetof(llm_shm_header_t, models); i++) {
        base[i] = in_u8(in);
    }

    slot = (uint32_t) in_uint(in, 2);

    h = (llm_shm_header_t *) base;

    why = llm_shm_header_check(h, size);

    if (why == NULL) {
        for (uint32_t i = 0; i < h->n_slots; i++) {
            s = llm_shm_slot(base, h, i);

            p = (const uint8_t *) s;
            (void) p[0];
            (void) p[sizeof(llm_slot_t) - 1];

            if (h->req_max) {
                p = (const uint8_t *) llm_slot_req(s, h);
                (void) p[0];
                (void) p[h->req_max - 1];
            }

            p = llm_slot_ring(s, h);
            (void) p[0];
            (void) p[h->ring_size - 1];
        }

        s = llm_shm_slot(base, h, slot % h->n_slots);
        run(s, llm_slot_ring(s, h), h->ring_size, in);
    }

    free(base);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t      mode, *ring;
    uint32_t     ring_size;
    input_t      in;
    llm_slot_t  *s;

    static const int  logprobs[] = { -1, 0, 2, LLM_LOGPROBS_MAX };

    in.p = data;
    in.n = size;

    mode = in_u8(&in);

    fuzz_ngx_reply_begin(mode & 2, logprobs[(mode >> 4) & 3], mode & 4,
                         mode & 8);

    if (mode & 1) {
        region(&in);

    } else {
        ring_size = 1u << (4 + in_u8(&in) % 11);

        s = calloc(1, sizeof(llm_slot_t));
        ring = calloc(1, ring_size);
        if (s == NULL || ring == NULL) {
            abort();
        }

        run(s, ring, ring_size, &in);

        free(s);
        free(ring);
    }

    fuzz_ngx_reply_end();

    return 0;
}


#else /* LLM_RING_SEED_MAIN */


typedef struct {
    uint8_t  p[65536];
    size_t   n;
} seed_t;


static void
b(seed_t *sd, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes && sd->n < sizeof(sd->p); i++) {
        sd->p[sd->n++] = (uint8_t) (v >> (8 * i));
    }
}


static void
op_put(seed_t *sd, uint16_t type, const void *payload, size_t len,
    size_t split)
{
    b(sd, 0, 1);
    b(sd, type, 1);
    b(sd, len, 2);
    b(sd, split, 1);

    for (size_t i = 0; i < len; i++) {
        b(sd, ((const uint8_t *) payload)[i], 1);
    }
}


static void
op_token(seed_t *sd, int32_t id, const char *text)
{
    uint8_t         p[512];
    llm_ev_token_t  t;

    t.token = id;
    t.logprob = -0.25f;

    memcpy(p, &t, sizeof(t));
    memcpy(p + sizeof(t), text, strlen(text));

    op_put(sd, LLM_EV_TOKEN, p, sizeof(t) + strlen(text), 3);
}


static void
op_logprobs(seed_t *sd, const char *piece, int n_top)
{
    size_t             n;
    uint8_t            p[LLM_EVENT_MAX];
    llm_ev_alt_t       a;
    llm_ev_logprobs_t  lp;

    static const char *const  alts[] = {
        " girl", "\xe2\x96\x81", "\xff\xfe", "\xc3", "", "\xf0\x9f\xa6\x99"
    };

    lp.token = 42;
    lp.logprob = -1.5f;
    lp.n_top = (uint16_t) n_top;
    lp.piece_len = (uint16_t) strlen(piece);

    memcpy(p, &lp, sizeof(lp));
    n = sizeof(lp);
    memcpy(p + n, piece, strlen(piece));
    n += strlen(piece);

    for (int i = 0; i < n_top; i++) {
        const char  *s = alts[i % 6];

        a.token = i;
        a.logprob = i == 3 ? -INFINITY : -0.5f * (float) i;
        a.piece_len = (uint16_t) strlen(s);
        a.reserved = 0;

        memcpy(p + n, &a, sizeof(a));
        n += sizeof(a);
        memcpy(p + n, s, strlen(s));
        n += strlen(s);
    }

    op_put(sd, LLM_EV_LOGPROBS, p, n, n / 2);
}


static void
op_done(seed_t *sd, uint32_t finish)
{
    llm_ev_done_t  d;

    memset(&d, 0, sizeof(d));
    d.finish_reason = finish;
    d.prompt_tokens = 5;
    d.completion_tokens = 3;
    d.cached_tokens = 1;
    d.total_us = 1234;

    op_put(sd, LLM_EV_DONE, &d, sizeof(d), 0);
}


static void
op_error(seed_t *sd)
{
    uint8_t         p[256];
    llm_ev_error_t  e;

    static const char  msg[] = "the prompt is longer than the context";

    memset(&e, 0, sizeof(e));
    e.status = 400;
    memcpy(e.type, "invalid_request_error", 21);
    memcpy(e.code, "context_length_exceeded", 23);

    memcpy(p, &e, sizeof(e));
    memcpy(p + sizeof(e), msg, sizeof(msg) - 1);

    op_put(sd, LLM_EV_ERROR, p, sizeof(e) + sizeof(msg) - 1, 10);
}


static void
op(seed_t *sd, int o)
{
    b(sd, (uint64_t) o, 1);
}


static void
op_u64(seed_t *sd, int o, uint64_t v)
{
    b(sd, (uint64_t) o, 1);
    b(sd, v, 8);
}


/* the region of t/unit/test_ring.c's sound header, smaller */
static void
region(seed_t *sd, uint32_t n_slots, uint16_t slot)
{
    llm_shm_header_t  h;

    memset(&h, 0, sizeof(h));
    h.magic = LLM_PROTO_MAGIC;
    h.version = LLM_PROTO_VERSION;
    h.n_models = 1;
    h.n_slots = n_slots;
    h.header_size = sizeof(llm_shm_header_t);
    h.slots_off = 1664;
    h.req_off = 192;
    h.req_max = 1024;
    h.ring_off = 1216;
    h.ring_size = 2 * LLM_EVENT_MAX;
    h.slot_size = h.ring_off + h.ring_size;
    h.shm_size = h.slots_off + h.slot_size * n_slots;

    b(sd, h.shm_size, 8);

    for (size_t i = 0; i < offsetof(llm_shm_header_t, models); i++) {
        b(sd, ((uint8_t *) &h)[i], 1);
    }

    b(sd, slot, 2);
}


static int
write_seed(const char *dir, const char *name, const seed_t *sd)
{
    char  path[4096];

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    return fuzz_seed_write(path, sd->p, sd->n, NULL, 0);
}


/* a completion as the engine streams it: text, logprobs, the end */
static void
traffic(seed_t *sd, int logprobs, int end)
{
    static const char *const  words[] = {
        "Once", " upon", " a", " time", ",", " there", " was", " a",
        " little", " girl", "\xe2\x80", "\x99s", " \xf0\x9f", "",
        "\xa6\x99", " Lily", "\n"
    };

    for (int i = 0; i < 17; i++) {
        if (logprobs >= 0) {
            op_logprobs(sd, words[i], logprobs);
        }

        op_token(sd, 100 + i, words[i]);

        /* a consumer that keeps up now and then */
        if (i % 3 == 2) {
            op(sd, 6);
        }
    }

    if (end == 0) {
        op_done(sd, LLM_FINISH_LENGTH);

    } else if (end == 1) {
        op_done(sd, LLM_FINISH_STOP);

    } else {
        op_error(sd);
    }

    op(sd, 7);
    op(sd, 6);
}


int
main(int argc, char **argv)
{
    int      n;
    char     name[64];
    seed_t  *sd;

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }

    sd = malloc(sizeof(seed_t));
    if (sd == NULL) {
        return 1;
    }

    n = 0;

    /* rings alone, 64 bytes to 16K: mode, size, traffic */
    for (int ring = 2; ring <= 10; ring += 4) {
        for (int mode = 0; mode < 64; mode += 2) {
            if ((mode & 0x0c) == 0x08) {
                continue;               /* include_usage without stream */
            }

            sd->n = 0;
            b(sd, (uint64_t) mode, 1);
            b(sd, (uint64_t) ring, 1);
            traffic(sd, (mode >> 4) == 0 ? -1 : (mode >> 4) == 1 ? 0 : 2,
                    mode % 3);

            snprintf(name, sizeof(name), "ring-%d-%d", ring, mode);
            if (write_seed(argv[1], name, sd) != 0) {
                return 1;
            }

            n++;
        }
    }

    /* a region's slot */
    for (uint32_t slots = 1; slots <= 3; slots++) {
        sd->n = 0;
        b(sd, 0x1f, 1);
        region(sd, slots, (uint16_t) (slots - 1));
        traffic(sd, 2, 0);

        snprintf(name, sizeof(name), "region-%u", slots);
        if (write_seed(argv[1], name, sd) != 0) {
            return 1;
        }

        n++;
    }

    /* wrapping records in a 64-byte ring, then a full one */
    sd->n = 0;
    b(sd, 0, 1);
    b(sd, 2, 1);
    for (int i = 0; i < 20; i++) {
        op_token(sd, i, i % 2 ? "abcdefghijkl" : "xy");
        op(sd, 1);
    }
    op_token(sd, 1, "0123456789012345678901234567890123456789");
    op_token(sd, 2, "full");
    op(sd, 7);
    op(sd, 6);
    write_seed(argv[1], "wrap", sd);
    n++;

    /* t/unit/test_ring.c's hostile cases */
    {
        llm_event_t  bad;

        sd->n = 0;
        b(sd, 0, 1);
        b(sd, 10, 1);
        op_u64(sd, 2, 16384 * 4);
        op(sd, 1);
        op_u64(sd, 2, 8);
        op_u64(sd, 3, 16);
        op(sd, 1);
        op_u64(sd, 2, 64);
        op_u64(sd, 3, 0);
        bad.type = LLM_EV_TOKEN;
        bad.flags = 0;
        bad.len = 0xfffffff0u;
        op(sd, 5);
        b(sd, 0, 2);
        b(sd, sizeof(bad), 1);
        for (size_t i = 0; i < sizeof(bad); i++) {
            b(sd, ((uint8_t *) &bad)[i], 1);
        }
        op(sd, 1);
        bad.len = 200;
        op(sd, 5);
        b(sd, 0, 2);
        b(sd, sizeof(bad), 1);
        for (size_t i = 0; i < sizeof(bad); i++) {
            b(sd, ((uint8_t *) &bad)[i], 1);
        }
        op(sd, 1);
        op_u64(sd, 2, 64);
        op_u64(sd, 3, 3);
        op(sd, 1);
        op(sd, 6);
        write_seed(argv[1], "hostile", sd);
        n++;
    }

    /* indices near the top of the counters: they wrap */
    sd->n = 0;
    b(sd, 0, 1);
    b(sd, 6, 1);
    op_u64(sd, 2, UINT64_MAX - 63);
    op_u64(sd, 3, UINT64_MAX - 63);
    traffic(sd, -1, 0);
    write_seed(argv[1], "top", sd);
    n++;

    free(sd);

    printf("%d seeds in %s\n", n, argv[1]);
    return 0;
}


#endif /* LLM_RING_SEED_MAIN */
