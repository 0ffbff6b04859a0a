/*
 * Copyright (C) ngx_llm developers
 *
 * The protocol's event ring and slot states under two processes: a
 * producer and a consumer in separate processes over a shared mapping,
 * records of every size wrapping around a small ring; hostile indices and
 * lengths; the shared-memory header check; claims racing from two
 * processes.
 */

#define _GNU_SOURCE

#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "tap.h"
#include "llm_ring.h"


#define RING_SIZE   16384
#define N_RECORDS   200000


typedef struct {
    llm_slot_t     slot;
    unsigned char  ring[RING_SIZE];
} shared_t;


/* deterministic record i: its length and bytes, as both sides compute */
static uint32_t
rec_len(uint32_t i)
{
    uint32_t  x = i * 2654435761u;

    return (x >> 7) % (LLM_EVENT_MAX - 4 + 1);
}


static unsigned char
rec_byte(uint32_t i, uint32_t k)
{
    return (unsigned char) ((i * 31 + k * 7) ^ (k >> 3));
}


static void
producer(shared_t *sh)
{
    unsigned char  buf[LLM_EVENT_MAX];

    for (uint32_t i = 0; i < N_RECORDS; i++) {
        uint32_t  len = rec_len(i);

        for (uint32_t k = 0; k < len; k++) {
            buf[k] = rec_byte(i, k);
        }

        /* payload in two parts, as the engine writes header + text */
        while (llm_ring_put(&sh->slot, sh->ring, RING_SIZE, LLM_EV_TOKEN,
                            &i, sizeof(i), buf, len)
               != LLM_RING_OK)
        {
            /* spin: the consumer is another process */
        }
    }
}


static void
test_two_processes(void)
{
    int            status, bad;
    pid_t          pid;
    uint32_t       got_i;
    shared_t      *sh;
    llm_event_t    ev;
    unsigned char  buf[LLM_EVENT_MAX];

    sh = mmap(NULL, sizeof(shared_t), PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!ok(sh != MAP_FAILED, "shared mapping")) {
        return;
    }
    memset(sh, 0, sizeof(*sh));

    pid = fork();
    if (pid == 0) {
        producer(sh);
        _exit(0);
    }

    bad = 0;
    for (uint32_t i = 0; i < N_RECORDS && bad == 0; i++) {
        int  rc;

        while ((rc = llm_ring_get(&sh->slot, sh->ring, RING_SIZE, &ev, buf))
               == LLM_RING_EMPTY)
        {
            /* spin */
        }

        if (rc != LLM_RING_OK || ev.type != LLM_EV_TOKEN
            || ev.len != sizeof(uint32_t) + rec_len(i))
        {
            diag("record %u: rc %d type %u len %u", i, rc, ev.type, ev.len);
            bad = 1;
            break;
        }

        memcpy(&got_i, buf, sizeof(got_i));
        if (got_i != i) {
            diag("record %u arrived as %u", i, got_i);
            bad = 1;
            break;
        }

        for (uint32_t k = 0; k < rec_len(i); k++) {
            if (buf[4 + k] != rec_byte(i, k)) {
                diag("record %u byte %u differs", i, k);
                bad = 1;
                break;
            }
        }
    }

    waitpid(pid, &status, 0);
    ok(bad == 0, "%d records of 4..%d bytes cross an %d-byte ring intact "
       "and in order", N_RECORDS, LLM_EVENT_MAX, RING_SIZE);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0, "producer exited");
    is_int(llm_ring_get(&sh->slot, sh->ring, RING_SIZE, &ev, buf),
           LLM_RING_EMPTY, "ring empty at the end");

    munmap(sh, sizeof(shared_t));
}


static void
test_full_and_toobig(void)
{
    int            n;
    shared_t      *sh;
    llm_event_t    ev;
    unsigned char  buf[LLM_EVENT_MAX];

    sh = calloc(1, sizeof(shared_t));
    memset(buf, 0x5a, sizeof(buf));

    is_int(llm_ring_put(&sh->slot, sh->ring, RING_SIZE, LLM_EV_TOKEN, buf,
                        LLM_EVENT_MAX + 1, NULL, 0),
           LLM_RING_TOOBIG, "a record over LLM_EVENT_MAX is refused");

    n = 0;
    while (llm_ring_put(&sh->slot, sh->ring, RING_SIZE, LLM_EV_TOKEN, buf,
                        100, NULL, 0)
           == LLM_RING_OK)
    {
        n++;
    }
    is_int(n, RING_SIZE / llm_event_size(100), "fills exactly to capacity");
    ok(llm_ring_space(&sh->slot, RING_SIZE) < llm_event_size(100),
       "no space left when full");

    ok(llm_ring_get(&sh->slot, sh->ring, RING_SIZE, &ev, buf) == LLM_RING_OK,
       "one record read");
    ok(llm_ring_put(&sh->slot, sh->ring, RING_SIZE, LLM_EV_DONE, buf, 100,
                    NULL, 0)
       == LLM_RING_OK, "room again after a read");

    free(sh);
}


static void
test_hostile(void)
{
    shared_t      *sh;
    llm_event_t    ev, bad;
    unsigned char  buf[LLM_EVENT_MAX];

    sh = calloc(1, sizeof(shared_t));

    /* head far beyond tail: more bytes than the ring holds */
    atomic_store(&sh->slot.head, RING_SIZE * 4);
    is_int(llm_ring_get(&sh->slot, sh->ring, RING_SIZE, &ev, buf),
           LLM_RING_CORRUPT, "head past the ring's size is corrupt");

    /* head behind tail */
    atomic_store(&sh->slot.head, 8);
    atomic_store(&sh->slot.tail, 16);
    is_int(llm_ring_get(&sh->slot, sh->ring, RING_SIZE, &ev, buf),
           LLM_RING_CORRUPT, "head behind tail is corrupt");

    /* a record whose length is huge */
    atomic_store(&sh->slot.head, 64);
    atomic_store(&sh->slot.tail, 0);
    bad.type = LLM_EV_TOKEN;
    bad.flags = 0;
    bad.len = 0xfffffff0u;
    memcpy(sh->ring, &bad, sizeof(bad));
    is_int(llm_ring_get(&sh->slot, sh->ring, RING_SIZE, &ev, buf),
           LLM_RING_CORRUPT, "a huge record length is corrupt");

    /* a record longer than what was published */
    bad.len = 200;
    memcpy(sh->ring, &bad, sizeof(bad));
    is_int(llm_ring_get(&sh->slot, sh->ring, RING_SIZE, &ev, buf),
           LLM_RING_CORRUPT, "a record beyond head is corrupt");

    /* misaligned tail */
    atomic_store(&sh->slot.head, 64);
    atomic_store(&sh->slot.tail, 3);
    is_int(llm_ring_get(&sh->slot, sh->ring, RING_SIZE, &ev, buf),
           LLM_RING_CORRUPT, "a misaligned tail is corrupt");

    free(sh);
}


static void
test_header_check(void)
{
    size_t             size;
    llm_shm_header_t   h, g;

    memset(&h, 0, sizeof(h));
    h.magic = LLM_PROTO_MAGIC;
    h.version = LLM_PROTO_VERSION;
    h.n_slots = 4;
    h.header_size = sizeof(llm_shm_header_t);
    h.slots_off = 4096;
    h.req_off = 192;
    h.req_max = 4096;
    h.ring_off = 4352;
    h.ring_size = 16384;
    h.slot_size = 4352 + 16384;
    size = h.slots_off + h.slot_size * 4;
    h.shm_size = size;

    ok(llm_shm_header_check(&h, size) == NULL, "a sound header passes");

    g = h; g.magic ^= 1;
    ok(llm_shm_header_check(&g, size) != NULL, "bad magic refused");
    g = h; g.version++;
    ok(llm_shm_header_check(&g, size) != NULL, "other version refused");
    g = h; g.n_slots = 100;
    ok(llm_shm_header_check(&g, size) != NULL, "slots past the end refused");
    g = h; g.ring_size = 12288;
    ok(llm_shm_header_check(&g, size) != NULL, "ring not a power of 2");
    g = h; g.ring_off = 100;
    ok(llm_shm_header_check(&g, size) != NULL, "ring over the request area");
    g = h; g.slot_size = UINT64_MAX / 2 + 64; g.n_slots = 3;
    ok(llm_shm_header_check(&g, size) != NULL, "overflowing geometry");
    g = h; g.n_models = LLM_MAX_MODELS + 1;
    ok(llm_shm_header_check(&g, size) != NULL, "too many models");
    ok(llm_shm_header_check(&h, size - 1) != NULL, "size mismatch refused");
}


/* two processes claim and free slots as fast as they can: no slot is ever
 * held by both */
static void
test_claim_race(void)
{
    int                n_slots = 8, rounds = 200000, status[2];
    pid_t              pid[2];
    _Atomic uint32_t  *states;
    _Atomic uint32_t  *holders;
    _Atomic uint32_t  *errors;

    states = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(states, 0, 4096);
    holders = states + 64;
    errors = states + 128;

    for (int p = 0; p < 2; p++) {
        pid[p] = fork();
        if (pid[p] != 0) {
            continue;
        }
        for (int r = 0; r < rounds; r++) {
            int       i = (r * 5 + p) % n_slots;
            uint32_t  w = llm_slot_word(LLM_SLOT_FREE, 0);

            if (!atomic_compare_exchange_strong(&states[i], &w,
                    llm_slot_word(LLM_SLOT_CLAIMED, p + 1)))
            {
                continue;
            }
            if (atomic_fetch_add(&holders[i], 1) != 0) {
                atomic_fetch_add(&errors[0], 1);
            }
            atomic_fetch_sub(&holders[i], 1);
            if (llm_slot_owner(atomic_load(&states[i])) != (uint32_t) p + 1) {
                atomic_fetch_add(&errors[0], 1);
            }
            atomic_store(&states[i], llm_slot_word(LLM_SLOT_FREE, 0));
        }
        _exit(0);
    }

    waitpid(pid[0], &status[0], 0);
    waitpid(pid[1], &status[1], 0);
    is_int(atomic_load(&errors[0]), 0, "no slot claimed by two processes");

    munmap(states, 4096);
}


int
main(void)
{
    test_two_processes();
    test_full_and_toobig();
    test_hostile();
    test_header_check();
    test_claim_race();
    return done_testing();
}
