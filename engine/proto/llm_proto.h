/*
 * Copyright (C) ngx_llm developers
 *
 * The one header the nginx module and the engine both include: the
 * handshake on the unix socket, the shared-memory layout, the slot state
 * machine and the events the engine writes into each slot's ring.
 *
 * Everything here is fixed-width, little-endian (both sides run on the
 * same host), addressed by offsets from the region base, and checked by
 * static_assert.  Bump LLM_PROTO_VERSION on any change of layout or
 * meaning.
 */

#ifndef LLM_PROTO_H
#define LLM_PROTO_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>


#define LLM_PROTO_MAGIC       0x314d4c4cu    /* "LLM1" */
#define LLM_PROTO_VERSION     2

#define LLM_CACHE_LINE        64
#define LLM_MAX_MODELS        16
#define LLM_MODEL_NAME_MAX    64             /* with the NUL */
#define LLM_MAX_WORKER_ID     0x00ffffffu


/*
 * Handshake.  A worker connects to the engine's unix socket and sends
 * llm_hello_t.  The engine answers llm_welcome_t; when status is
 * LLM_HELLO_OK the same message carries three descriptors (SCM_RIGHTS),
 * in this order:
 *
 *   [0] the shared-memory region (memfd), map shm_size bytes read/write;
 *   [1] the engine's doorbell (eventfd): the worker writes 1 to it after
 *       submitting or cancelling a slot, or after draining a slot whose
 *       engine_waiting flag is set;
 *   [2] this worker's doorbell (eventfd): the engine writes to it after
 *       writing events into a slot this worker owns.
 *
 * Nothing else travels on the socket.  Its closing tells each side that
 * the other is gone: the engine then reclaims every slot the worker owned.
 */

typedef struct {
    uint32_t  magic;        /* LLM_PROTO_MAGIC */
    uint16_t  version;      /* LLM_PROTO_VERSION */
    uint16_t  reserved;     /* zero */
    int32_t   pid;          /* the worker's pid, for the engine's log */
    uint32_t  reserved2;    /* zero */
} llm_hello_t;

static_assert(sizeof(llm_hello_t) == 16, "llm_hello_t layout");


enum {
    LLM_HELLO_OK = 0,
    LLM_HELLO_BAD_MAGIC,
    LLM_HELLO_BAD_VERSION,
    LLM_HELLO_DENIED,
    LLM_HELLO_FULL
};

typedef struct {
    uint32_t  magic;        /* LLM_PROTO_MAGIC */
    uint16_t  version;      /* LLM_PROTO_VERSION */
    uint16_t  status;       /* LLM_HELLO_* */
    uint32_t  worker_id;    /* 1..LLM_MAX_WORKER_ID, owner id for slots */
    uint32_t  reserved;
    uint64_t  shm_size;     /* bytes to map from descriptor [0] */
    uint64_t  epoch;        /* changes every time the engine starts */
} llm_welcome_t;

static_assert(sizeof(llm_welcome_t) == 32, "llm_welcome_t layout");


/*
 * Shared memory.  The region is created by the engine (memfd) and is
 * laid out as:
 *
 *   [0, header_size)            llm_shm_header_t
 *   [slots_off + i * slot_size) slot i: llm_slot_t, then the request
 *                               area (req_max bytes at req_off from the
 *                               slot), then the event ring (ring_size
 *                               bytes at ring_off from the slot)
 *
 * The engine writes the header once before the first welcome and never
 * changes it afterwards, except for the stats counters.
 */

typedef struct {
    char      name[LLM_MODEL_NAME_MAX];  /* NUL-terminated, [A-Za-z0-9._:-] */
    uint32_t  n_ctx;                     /* context length in tokens */
    uint32_t  n_vocab;
    uint64_t  created;                   /* unix time the model was loaded */
} llm_shm_model_t;

static_assert(sizeof(llm_shm_model_t) == 80, "llm_shm_model_t layout");


/* counters the engine keeps for the module's metrics */
enum {
    LLM_STAT_REQUESTS = 0,        /* requests accepted */
    LLM_STAT_REQUESTS_FAILED,     /* requests answered with ERROR */
    LLM_STAT_PROMPT_TOKENS,
    LLM_STAT_COMPLETION_TOKENS,
    LLM_STAT_CACHED_TOKENS,
    LLM_STAT_RUNNING,             /* gauge: sequences running now */
    LLM_STAT_CANCELLED,           /* sequences ended by cancellation */
    LLM_STAT_RECLAIMED,           /* slots reclaimed from dead workers */
    LLM_STAT_STEPS,               /* forward steps run */
    LLM_STAT_WAITING,             /* gauge: submitted, not yet admitted */
    LLM_STAT_KV_BLOCKS,           /* KV blocks, all models */
    LLM_STAT_KV_USED,             /* gauge: blocks in use by sequences */
    LLM_STAT_KV_CACHED,           /* gauge: unused blocks kept as prefix */
    LLM_STAT_PREFIX_LOOKUPS,      /* blocks looked up in the prefix cache */
    LLM_STAT_PREFIX_HITS,         /* ... and found */
    LLM_STAT_PREEMPTIONS,         /* sequences preempted for KV room */
    LLM_STAT_STEP_TOKENS,         /* tokens run through forward passes */
    LLM_STAT_STEP_US,             /* microseconds spent in them */
    LLM_STAT_REDIS_HITS,          /* KV blocks loaded from Redis */
    LLM_STAT_MAX = 32
};


typedef struct {
    uint32_t          magic;           /* LLM_PROTO_MAGIC, checked first */
    uint16_t          version;         /* LLM_PROTO_VERSION */
    uint16_t          n_models;        /* entries used in models[] */
    uint32_t          n_slots;
    uint32_t          header_size;     /* sizeof(llm_shm_header_t) */
    uint64_t          epoch;           /* as in llm_welcome_t */
    uint64_t          shm_size;        /* whole region */
    uint64_t          slots_off;       /* offset of slot 0 from the base */
    uint64_t          slot_size;       /* stride between slots */
    uint32_t          req_off;         /* request area, from slot start */
    uint32_t          req_max;         /* request area bytes */
    uint32_t          ring_off;        /* ring data, from slot start */
    uint32_t          ring_size;       /* ring bytes, a power of two */
    llm_shm_model_t   models[LLM_MAX_MODELS];
    _Atomic uint64_t  stats[LLM_STAT_MAX];  /* relaxed; engine writes */
} llm_shm_header_t;

static_assert(offsetof(llm_shm_header_t, models) == 64,
              "llm_shm_header_t models offset");
static_assert(sizeof(llm_shm_header_t) == 64 + 80 * LLM_MAX_MODELS
                                          + 8 * LLM_STAT_MAX,
              "llm_shm_header_t layout");
static_assert(sizeof(_Atomic uint64_t) == 8 && sizeof(_Atomic uint32_t) == 4,
              "atomics are plain-sized");


/*
 * Slot life.  The state word holds the state in its low 8 bits and the
 * owning worker's id in the upper 24, so the owner travels with every
 * transition (a worker that dies right after claiming still owns the
 * slot and the engine can reclaim it).
 *
 *   FREE      -> CLAIMED    worker, CAS; bumps generation, resets indices
 *   CLAIMED   -> SUBMITTED  worker, release, after writing the request
 *   SUBMITTED -> RUNNING    engine, CAS
 *   RUNNING   -> FINISHED   engine, CAS, after its last event (DONE/ERROR)
 *   FINISHED  -> FREE       worker, after draining the ring
 *   SUBMITTED/RUNNING -> CANCELLED   worker, CAS, when its client is gone
 *                                    or it gives up; it never touches the
 *                                    slot again
 *   CANCELLED -> FREE       engine, after dropping the sequence
 *   CLAIMED   -> FREE       worker, when it could not submit
 *   any       -> FREE       engine, for slots of a worker whose socket
 *                           closed
 *
 * A CAS that fails tells its maker that the other side moved first: a
 * worker whose SUBMITTED/RUNNING -> CANCELLED fails finds FINISHED and
 * frees the slot itself; an engine whose RUNNING -> FINISHED fails finds
 * CANCELLED and frees it.  A worker may read DONE before the slot is
 * FINISHED; it then cancels, which ends the same way.  A FREE slot's
 * owner bits are zero.
 *
 * Back-pressure: when the ring has no room the engine stores
 * engine_waiting = 1, issues a seq_cst fence and looks at tail again; the
 * worker, after publishing tail, issues a seq_cst fence and reads
 * engine_waiting, and if it is set clears it and rings the engine's
 * doorbell.  The two fences make a lost wake-up impossible.  Doorbells
 * are non-blocking eventfds shared by both processes.
 */

enum {
    LLM_SLOT_FREE = 0,
    LLM_SLOT_CLAIMED,
    LLM_SLOT_SUBMITTED,
    LLM_SLOT_RUNNING,
    LLM_SLOT_FINISHED,
    LLM_SLOT_CANCELLED
};

#define llm_slot_state(w)        ((uint32_t) (w) & 0xffu)
#define llm_slot_owner(w)        ((uint32_t) (w) >> 8)
#define llm_slot_word(st, owner) (((uint32_t) (owner) << 8) | (uint32_t) (st))


typedef struct {
    /* line 0: control, written by both sides */
    _Atomic uint32_t  state;           /* llm_slot_word(), acq_rel CAS */
    _Atomic uint32_t  generation;      /* bumped by the worker on claim */
    uint32_t          req_len;         /* request bytes; before SUBMITTED */
    _Atomic uint32_t  engine_waiting;  /* engine: ring full, ring my bell */
    uint8_t           pad0[LLM_CACHE_LINE - 16];

    /* line 1: producer index, engine writes (release), worker reads */
    _Atomic uint64_t  head;            /* bytes ever written */
    uint8_t           pad1[LLM_CACHE_LINE - 8];

    /* line 2: consumer index, worker writes (release), engine reads */
    _Atomic uint64_t  tail;            /* bytes ever consumed */
    uint8_t           pad2[LLM_CACHE_LINE - 8];
} llm_slot_t;

static_assert(sizeof(llm_slot_t) == 3 * LLM_CACHE_LINE, "llm_slot_t layout");
static_assert(offsetof(llm_slot_t, head) == LLM_CACHE_LINE, "head line");
static_assert(offsetof(llm_slot_t, tail) == 2 * LLM_CACHE_LINE, "tail line");


/*
 * Request (worker -> engine): compact JSON of req_len bytes in the
 * request area, validated by the module and again by the engine.  Unknown
 * fields are ignored; a field of the wrong type or out of range is an
 * ERROR event (400, invalid_request_error, the field's name in code).
 *
 *   "id"                 string, the request id for logs ("cmpl-...")
 *   "model"              string, a name from the header's model table
 *   exactly one of:
 *   "prompt"             string: a completion, tokenized with BOS
 *   "prompt_tokens"      array of token ids: a completion, used as given
 *   "messages"           array of {"role": string, "content": string}:
 *                        a chat, rendered with the model's own template
 *                        and the generation prompt, special tokens parsed
 *   "max_tokens"         integer >= 1 (16)
 *   "temperature"        number 0..2 (1); 0 is greedy
 *   "top_p"              number (0, 1] (1)
 *   "top_k"              integer >= 0 (0: off)
 *   "min_p"              number 0..1 (0: off)
 *   "seed"               integer (from the clock)
 *   "presence_penalty"   number -2..2 (0)
 *   "frequency_penalty"  number -2..2 (0)
 *   "repetition_penalty" number (0, 10] (1)
 *   "logit_bias"         object {"TOKEN_ID": number -100..100}
 *   "stop"               array of at most 4 non-empty strings
 *   "logprobs"           integer 0..20: send a LOGPROBS event before each
 *                        TOKEN, with that many alternatives (absent: none)
 *   "priority"           integer, higher is admitted first (0)
 *   "stream"             boolean, for the engine's log only
 */


/*
 * Events (engine -> worker): records in the slot's byte ring, each an
 * llm_event_t header followed by len payload bytes, padded to 8 bytes.
 * A record is written whole or not at all, and may wrap around the end
 * of the ring.  No record is larger than LLM_EVENT_MAX.
 */

enum {
    LLM_EV_TOKEN = 1,
    LLM_EV_DONE,
    LLM_EV_ERROR,
    LLM_EV_LOGPROBS
};

typedef struct {
    uint16_t  type;         /* LLM_EV_* */
    uint16_t  flags;        /* zero */
    uint32_t  len;          /* payload bytes after this header */
} llm_event_t;

static_assert(sizeof(llm_event_t) == 8, "llm_event_t layout");

#define LLM_EVENT_MAX         8192
#define llm_event_size(len)   ((sizeof(llm_event_t) + (len) + 7) & ~(size_t) 7)


/* TOKEN: this header, then the token's text bytes (may be empty while a
 * UTF-8 character is incomplete; never a split character) */
typedef struct {
    int32_t   token;        /* token id */
    float     logprob;      /* log-probability of the token, if the
                             * request asked for "logprobs"; else 0 */
} llm_ev_token_t;

static_assert(sizeof(llm_ev_token_t) == 8, "llm_ev_token_t layout");


/*
 * LOGPROBS, when the request asked for them, right before the TOKEN it
 * describes: this header and the sampled token's own piece (piece_len
 * bytes, at most LLM_PIECE_MAX), then n_top alternatives, most likely
 * first, each an llm_ev_alt_t followed by its piece.  Log-probabilities
 * are under the model's distribution (temperature 1, before truncation).
 */
#define LLM_PIECE_MAX         256
#define LLM_LOGPROBS_MAX      20

typedef struct {
    int32_t   token;
    float     logprob;
    uint16_t  n_top;        /* 0..LLM_LOGPROBS_MAX */
    uint16_t  piece_len;
} llm_ev_logprobs_t;

typedef struct {
    int32_t   token;
    float     logprob;
    uint16_t  piece_len;
    uint16_t  reserved;
} llm_ev_alt_t;

static_assert(sizeof(llm_ev_logprobs_t) == 12, "llm_ev_logprobs_t layout");
static_assert(sizeof(llm_ev_alt_t) == 12, "llm_ev_alt_t layout");
static_assert(sizeof(llm_ev_logprobs_t) + LLM_PIECE_MAX
              + LLM_LOGPROBS_MAX * (sizeof(llm_ev_alt_t) + LLM_PIECE_MAX)
              <= LLM_EVENT_MAX, "a LOGPROBS event fits in one record");


enum {
    LLM_FINISH_STOP = 1,    /* end of sequence or stop string */
    LLM_FINISH_LENGTH,      /* max_tokens or context length */
    LLM_FINISH_CANCELLED
};

typedef struct {
    uint32_t  finish_reason;      /* LLM_FINISH_* */
    uint32_t  prompt_tokens;
    uint32_t  completion_tokens;
    uint32_t  cached_tokens;
    uint64_t  queue_us;           /* submitted -> first step */
    uint64_t  ttft_us;            /* submitted -> first token */
    uint64_t  total_us;           /* submitted -> done */
} llm_ev_done_t;

static_assert(sizeof(llm_ev_done_t) == 40, "llm_ev_done_t layout");


/* ERROR: this header, then the message bytes (UTF-8, not NUL-terminated);
 * the slot goes FINISHED right after */
typedef struct {
    uint16_t  status;             /* HTTP status for the client */
    uint16_t  reserved;
    char      type[28];           /* OpenAI error type, NUL-padded */
    char      code[32];           /* OpenAI error code, NUL-padded or "" */
} llm_ev_error_t;

static_assert(sizeof(llm_ev_error_t) == 64, "llm_ev_error_t layout");


/* geometry helpers both sides use */

static inline llm_slot_t *
llm_shm_slot(void *base, const llm_shm_header_t *h, uint32_t i)
{
    return (llm_slot_t *) ((char *) base + h->slots_off + h->slot_size * i);
}


static inline char *
llm_slot_req(llm_slot_t *s, const llm_shm_header_t *h)
{
    return (char *) s + h->req_off;
}


static inline unsigned char *
llm_slot_ring(llm_slot_t *s, const llm_shm_header_t *h)
{
    return (unsigned char *) s + h->ring_off;
}


/*
 * Checks a header read from a region of size bytes before anything else
 * in it is trusted.  Returns NULL when it is sound, else what is wrong.
 */
static inline const char *
llm_shm_header_check(const llm_shm_header_t *h, uint64_t size)
{
    uint64_t  end;

    if (size < sizeof(llm_shm_header_t)) {
        return "region smaller than its header";
    }
    if (h->magic != LLM_PROTO_MAGIC) {
        return "bad magic";
    }
    if (h->version != LLM_PROTO_VERSION) {
        return "protocol version mismatch";
    }
    if (h->header_size != sizeof(llm_shm_header_t)
        || h->shm_size != size
        || h->n_models > LLM_MAX_MODELS
        || h->n_slots == 0 || h->n_slots > 65536)
    {
        return "bad header fields";
    }
    if (h->ring_size < 2 * LLM_EVENT_MAX
        || (h->ring_size & (h->ring_size - 1)) != 0
        || h->req_off < sizeof(llm_slot_t)
        || (uint64_t) h->req_off + h->req_max > h->ring_off
        || (uint64_t) h->ring_off + h->ring_size > h->slot_size
        || h->slot_size % LLM_CACHE_LINE != 0
        || h->slots_off % LLM_CACHE_LINE != 0
        || h->slots_off < sizeof(llm_shm_header_t))
    {
        return "bad slot geometry";
    }
    if (h->slot_size > (UINT64_MAX - h->slots_off) / h->n_slots) {
        return "slot geometry overflows";
    }
    end = h->slots_off + h->slot_size * h->n_slots;
    if (end > size) {
        return "slots beyond the region";
    }
    return NULL;
}


#endif /* LLM_PROTO_H */
