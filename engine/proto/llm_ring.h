/*
 * Copyright (C) ngx_llm developers
 *
 * The per-slot event ring: single producer (the engine), single consumer
 * (the worker that owns the slot), a byte ring of ring_size bytes (a power
 * of two) indexed by two monotonic 64-bit counters on separate cache
 * lines.  Header-only; both sides include it.
 *
 * Memory order: the producer copies a record, then publishes head with
 * release; the consumer loads head with acquire before reading the bytes
 * below it, then publishes tail with release after copying them out; the
 * producer loads tail with acquire before reusing those bytes.
 *
 * The consumer treats every index and length as hostile: a peer that
 * writes garbage makes llm_ring_get() return LLM_RING_CORRUPT, never read
 * outside the ring.
 */

#ifndef LLM_RING_H
#define LLM_RING_H

#include <string.h>

#include "llm_proto.h"


#define LLM_RING_OK        1
#define LLM_RING_EMPTY     0
#define LLM_RING_FULL      0
#define LLM_RING_CORRUPT  (-1)
#define LLM_RING_TOOBIG   (-2)


static inline void
llm_ring_copy_in(unsigned char *ring, uint32_t size, uint64_t pos,
    const void *src, size_t n)
{
    size_t  off, first;

    off = (size_t) (pos & (size - 1));
    first = size - off;
    if (first > n) {
        first = n;
    }
    memcpy(ring + off, src, first);
    memcpy(ring, (const unsigned char *) src + first, n - first);
}


static inline void
llm_ring_copy_out(const unsigned char *ring, uint32_t size, uint64_t pos,
    void *dst, size_t n)
{
    size_t  off, first;

    off = (size_t) (pos & (size - 1));
    first = size - off;
    if (first > n) {
        first = n;
    }
    memcpy(dst, ring + off, first);
    memcpy((unsigned char *) dst + first, ring, n - first);
}


/*
 * Producer: writes one record of type with payload a (alen bytes)
 * followed by b (blen bytes).  Returns LLM_RING_OK, LLM_RING_FULL when
 * there is no room now (nothing written), or LLM_RING_TOOBIG.
 */
static inline int
llm_ring_put(llm_slot_t *s, unsigned char *ring, uint32_t size,
    uint16_t type, const void *a, uint32_t alen, const void *b, uint32_t blen)
{
    uint64_t     head, tail;
    size_t       len, rec;
    llm_event_t  ev;

    len = (size_t) alen + blen;
    if (len > LLM_EVENT_MAX) {
        return LLM_RING_TOOBIG;
    }
    rec = llm_event_size(len);

    head = atomic_load_explicit(&s->head, memory_order_relaxed);
    tail = atomic_load_explicit(&s->tail, memory_order_acquire);

    if (head - tail > size || size - (head - tail) < rec) {
        return LLM_RING_FULL;
    }

    ev.type = type;
    ev.flags = 0;
    ev.len = (uint32_t) len;

    llm_ring_copy_in(ring, size, head, &ev, sizeof(ev));
    if (alen) {
        llm_ring_copy_in(ring, size, head + sizeof(ev), a, alen);
    }
    if (blen) {
        llm_ring_copy_in(ring, size, head + sizeof(ev) + alen, b, blen);
    }

    atomic_store_explicit(&s->head, head + rec, memory_order_release);
    return LLM_RING_OK;
}


/* bytes free for the producer now */
static inline uint64_t
llm_ring_space(llm_slot_t *s, uint32_t size)
{
    uint64_t  used;

    used = atomic_load_explicit(&s->head, memory_order_relaxed)
           - atomic_load_explicit(&s->tail, memory_order_acquire);
    return used > size ? 0 : size - used;
}


/*
 * Consumer: takes the next record.  Its header goes to *ev and its
 * payload (ev->len bytes) to buf, which must hold LLM_EVENT_MAX bytes.
 * Returns LLM_RING_OK, LLM_RING_EMPTY or LLM_RING_CORRUPT.
 */
static inline int
llm_ring_get(llm_slot_t *s, const unsigned char *ring, uint32_t size,
    llm_event_t *ev, void *buf)
{
    uint64_t  head, tail;
    size_t    rec;

    tail = atomic_load_explicit(&s->tail, memory_order_relaxed);
    head = atomic_load_explicit(&s->head, memory_order_acquire);

    if (head == tail) {
        return LLM_RING_EMPTY;
    }
    if (head - tail > size || head - tail < sizeof(llm_event_t)
        || (tail & 7) != 0)
    {
        return LLM_RING_CORRUPT;
    }

    llm_ring_copy_out(ring, size, tail, ev, sizeof(llm_event_t));

    if (ev->len > LLM_EVENT_MAX) {
        return LLM_RING_CORRUPT;
    }
    rec = llm_event_size(ev->len);
    if (rec > head - tail) {
        return LLM_RING_CORRUPT;
    }

    llm_ring_copy_out(ring, size, tail + sizeof(llm_event_t), buf, ev->len);

    atomic_store_explicit(&s->tail, tail + rec, memory_order_release);
    return LLM_RING_OK;
}


#endif /* LLM_RING_H */
