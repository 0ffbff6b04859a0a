/*
 * Copyright (C) ngx_llm developers
 *
 * The module's side of the fuzz targets (fuzz/fuzz_ngx.c): its request
 * parsing and its reply building, compiled against nginx's headers but
 * called from the targets without them, so that engine and nginx
 * headers never meet in one file.
 */

#ifndef FUZZ_NGX_H
#define FUZZ_NGX_H

#include <stddef.h>
#include <stdint.h>


/* one engine request the module built for a choice */
typedef void (*fuzz_ngx_req_pt)(void *arg, const char *req, size_t len);


/*
 * A request body through ngx_http_llm_parse() for /v1/chat/completions
 * (chat) or /v1/completions, with llm_max_tokens and llm_max_n as given.
 * Accepted: 1, after handing each choice's engine request to req (the
 * string lives until the call returns).  Refused with a 400: 0.
 */
int fuzz_ngx_parse(int chat, unsigned max_tokens, unsigned max_n,
    const uint8_t *p, size_t len, fuzz_ngx_req_pt req, void *arg);


/*
 * A reply: events as the module's drain hands them on (TOKEN, LOGPROBS,
 * DONE, ERROR), then the response or the last stream chunks built from
 * them.  fuzz_ngx_event() returns 1 when the event was taken, 0 when the
 * module would call it malformed and end the request (no more events
 * then).
 */
void fuzz_ngx_reply_begin(int chat, int logprobs, int stream,
    int include_usage);
int fuzz_ngx_event(uint16_t type, uint8_t *buf, size_t len);
void fuzz_ngx_reply_end(void);


#ifdef _NGX_HTTP_H_INCLUDED_

/*
 * For code built against nginx's headers (t/unit/test_openai.c): a
 * request with a pool of its own and the location's llm_max_tokens and
 * llm_max_n, and its end, which runs the pool's cleanups.  One at a
 * time.
 */
ngx_http_request_t *fuzz_ngx_request(ngx_uint_t max_tokens,
    ngx_uint_t max_n);
void fuzz_ngx_request_free(void);

#endif


#endif /* FUZZ_NGX_H */
