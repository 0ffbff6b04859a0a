/*
 * Copyright (C) ngx_llm developers
 *
 * The SentencePiece tokenizer against HF tokenizers' outputs for the
 * vocabularies in the fixtures, and the incremental detokenizer.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tap.h"
#include "llm_tokenizer.h"


#define SEP  "\n__ggml_vocab_test__\n"


static char *read_file(const char *path, size_t *len);
static const char *fixtures(void);
static void test_vocab(const char *name);
static void test_unsupported(void);
static void test_detok(void);
static void test_api(void);
static void test_special(void);
static int32_t byte_token(const llm_tokenizer_t *t, int b);


int
main(void)
{
    struct stat  st;

    if (stat(fixtures(), &st) != 0) {
        skip_all("no fixtures directory (set LLM_FIXTURES)");
    }

    test_vocab("ggml-vocab-llama-spm");
    test_vocab("ggml-vocab-phi-3");
    test_unsupported();
    test_api();
    test_special();
    test_detok();

    return done_testing();
}


static const char *
fixtures(void)
{
    const char  *p = getenv("LLM_FIXTURES");

    return p != NULL && *p != '\0' ? p : "../shared/fixtures";
}


static char *
read_file(const char *path, size_t *len)
{
    FILE  *f;
    char  *buf;
    long   n;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc((size_t) n + 1);
    if (buf == NULL || fread(buf, 1, (size_t) n, f) != (size_t) n) {
        free(buf);
        fclose(f);
        return NULL;
    }

    buf[n] = '\0';
    fclose(f);
    *len = (size_t) n;
    return buf;
}


/* every test string of X.gguf.inp must tokenize (no BOS) to the line of
 * X.gguf.out with the same index */
static void
test_vocab(const char *name)
{
    int               n, n_in, n_out, same;
    char              path[1024], got[8192], *inp, *outp, *s, *e, *line;
    size_t            inlen, outlen, dlen, plen;
    int32_t           ids[4096];
    llm_err_t         err = { 0 };
    const char       *piece;
    llm_tokenizer_t  *t;

    snprintf(path, sizeof(path), "%s/vocab/%s.gguf", fixtures(), name);

    if (!ok(llm_tokenizer_load(&t, path, &err) == LLM_OK,
            "%s: loads", name))
    {
        diag("%s", err.errstr);
        return;
    }

    snprintf(path, sizeof(path), "%s/vocab/%s.gguf.inp", fixtures(), name);
    inp = read_file(path, &inlen);
    snprintf(path, sizeof(path), "%s/vocab/%s.gguf.out", fixtures(), name);
    outp = read_file(path, &outlen);

    if (!ok(inp != NULL && outp != NULL, "%s: test files read", name)) {
        llm_tokenizer_free(t);
        return;
    }

    /* strings are each followed by the separator */

    n_in = 0;
    for (s = inp; (e = strstr(s, SEP)) != NULL; s = e + strlen(SEP)) {
        n_in++;
    }

    n_out = 0;
    for (size_t i = 0; i < outlen; i++) {
        n_out += outp[i] == '\n';
    }

    is_int(n_in, n_out, "%s: %d strings, as many expected lines", name,
           n_in);

    s = inp;
    line = outp;

    for (int k = 0; k < n_in && k < n_out; k++) {
        char  *nl;

        e = strstr(s, SEP);
        nl = strchr(line, '\n');
        *nl = '\0';

        n = llm_tokenize(t, s, (size_t) (e - s), 0, ids, 4096, &err);

        got[0] = '\0';
        dlen = 0;
        for (int i = 0; i < n && dlen < sizeof(got) - 16; i++) {
            dlen += (size_t) snprintf(got + dlen, sizeof(got) - dlen,
                                      " %d", ids[i]);
        }

        /* the .out lines start with a space when not empty */
        same = strcmp(got, line) == 0;

        if (!ok(same, "%s: string %d (%zu bytes)", name, k,
                (size_t) (e - s)))
        {
            diag("text: '%.*s'", (int) (e - s), s);
            diag("got:  '%s'", got);
            diag("want: '%s'", line);
        }

        /* decoding gives the text back, behind the prefixed space */
        if (n > 0) {
            char    dec[8192];
            size_t  w = 0;

            for (int i = 0; i < n; i++) {
                piece = llm_token_piece(t, ids[i], &plen);
                if (w + plen < sizeof(dec)) {
                    memcpy(dec + w, piece, plen);
                    w += plen;
                }
            }

            ok(w == (size_t) (e - s) + 1 && dec[0] == ' '
               && memcmp(dec + 1, s, w - 1) == 0,
               "%s: string %d decodes back", name, k);
        }

        s = e + strlen(SEP);
        line = nl + 1;
    }

    free(inp);
    free(outp);
    llm_tokenizer_free(t);
}


static void
test_unsupported(void)
{
    char              path[1024];
    llm_err_t         err = { 0 };
    llm_tokenizer_t  *t;

    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-gpt-2.gguf",
             fixtures());

    ok(llm_tokenizer_load(&t, path, &err) == LLM_ERR && t == NULL,
       "gpt2 tokenizer is refused");
    is_int(err.err, LLM_EUNSUPPORTED, "as unsupported");
    ok(strstr(err.errstr, "gpt2") != NULL, "naming the model: %s",
       err.errstr);

    ok(llm_tokenizer_load(&t, "/nonexistent.gguf", &err) == LLM_ERR,
       "missing file is an error");
    is_int(err.err, LLM_EIO, "an I/O error");
}


static int32_t
byte_token(const llm_tokenizer_t *t, int b)
{
    char     name[8];
    size_t   len;

    snprintf(name, sizeof(name), "<0x%02X>", b);

    for (int32_t id = 0; id < llm_tokenizer_n_vocab(t); id++) {
        const char  *s = llm_tokenizer_token_text(t, id, &len);

        if (len == 6 && memcmp(s, name, 6) == 0) {
            return id;
        }
    }

    return -1;
}


static void
test_api(void)
{
    int               n;
    size_t            len;
    int32_t           ids[64];
    llm_err_t         err = { 0 };
    const char       *p;
    llm_tokenizer_t  *t;

    if (!ok(llm_tokenizer_load(&t, "models/stories260K.gguf", &err)
            == LLM_OK, "stories260K tokenizer loads"))
    {
        diag("%s", err.errstr);
        return;
    }

    is_int(llm_tokenizer_n_vocab(t), 512, "512 tokens");
    is_int(llm_tokenizer_bos(t), 1, "bos 1");
    is_int(llm_tokenizer_eos(t), 2, "eos 2");
    ok(llm_tokenizer_is_eog(t, 2) && !llm_tokenizer_is_eog(t, 1),
       "eos ends generation, bos does not");
    ok(llm_tokenizer_wants_bos(t), "wants bos by default");

    n = llm_tokenize(t, "Once upon a time", 16, 1, ids, 64, &err);
    is_int(n, 5, "prompt is 5 tokens with bos");
    ok(n == 5 && ids[0] == 1 && ids[1] == 403 && ids[2] == 407
       && ids[3] == 261 && ids[4] == 378, "as llama.cpp tokenizes it");

    n = llm_tokenize(t, "Once upon a time", 16, 1, ids, 2, &err);
    is_int(n, 5, "a short buffer still gets the full count");

    is_int(llm_tokenize(t, "", 0, 0, ids, 64, &err), 0,
           "empty text, no bos: no tokens");
    is_int(llm_tokenize(t, "", 0, 1, ids, 64, &err), 1,
           "empty text with bos: just bos");

    p = llm_token_piece(t, 1, &len);
    is_int(len, 0, "control token has an empty piece");
    p = llm_token_piece(t, byte_token(t, 0x0a), &len);
    ok(len == 1 && p[0] == '\n', "byte token <0x0A> is a newline");
    p = llm_token_piece(t, 403, &len);
    ok(len == 5 && memcmp(p, " Once", 5) == 0, "U+2581 decodes to space");

    /* invalid UTF-8 goes byte by byte */
    n = llm_tokenize(t, "\xff", 1, 0, ids, 64, &err);
    ok(n >= 1 && ids[n - 1] == byte_token(t, 0xff),
       "an invalid byte falls back to its byte token");

    llm_tokenizer_free(t);
}


static int
ids_are(const int32_t *ids, int n, const int32_t *want, int n_want)
{
    return n == n_want && memcmp(ids, want, (size_t) n * sizeof(int32_t))
                          == 0;
}


/* phi-3: "</s>" is user-defined (always cut out of the text), "<|end|>"
 * is a control token (only when asked) and ends generation */
static void
test_special(void)
{
    int               n;
    char              path[1024];
    size_t            len;
    int32_t           ids[64];
    llm_err_t         err = { 0 };
    const char       *p;
    llm_tokenizer_t  *t;
    static const int32_t  plain[] = { 6324, 29966, 29989, 355, 29989, 29958,
                                      2, 921 };
    static const int32_t  special[] = { 6324, 32007, 2, 921 };

    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-phi-3.gguf",
             fixtures());

    if (llm_tokenizer_load(&t, path, &err) != LLM_OK) {
        ok(0, "phi-3 loads: %s", err.errstr);
        return;
    }

    n = llm_tokenize_ex(t, "Hi<|end|></s>x", 14, 0, ids, 64, &err);
    ok(ids_are(ids, n, plain, 8), "user-defined token cut out, control "
       "token spelled out, a space prefix after the special token");

    n = llm_tokenize_ex(t, "Hi<|end|></s>x", 14, LLM_TOK_PARSE_SPECIAL,
                        ids, 64, &err);
    ok(ids_are(ids, n, special, 4), "with PARSE_SPECIAL the control token "
       "is one id");

    ok(llm_tokenizer_is_eog(t, 32007) && llm_tokenizer_is_eog(t, 32000),
       "<|end|> and <|endoftext|> end generation");
    ok(!llm_tokenizer_is_eog(t, 32001), "<|assistant|> does not");

    p = llm_token_piece(t, 2, &len);
    ok(len == 4 && memcmp(p, "</s>", 4) == 0,
       "a user-defined token prints as its text");
    p = llm_token_piece(t, 32007, &len);
    is_int(len, 0, "a control token prints nothing");

    llm_tokenizer_free(t);
}


static void
test_detok(void)
{
    char              out[256];
    size_t            n;
    llm_err_t         err = { 0 };
    llm_detok_t       d;
    llm_tokenizer_t  *t;

    if (llm_tokenizer_load(&t, "models/stories260K.gguf", &err) != LLM_OK) {
        ok(0, "stories260K tokenizer loads: %s", err.errstr);
        return;
    }

    /* U+00E9: c3 a9 */
    llm_detok_init(&d);
    n = llm_detok_push(&d, t, byte_token(t, 0xc3), out, sizeof(out));
    is_int(n, 0, "first byte of a 2-byte character is held");
    n = llm_detok_push(&d, t, byte_token(t, 0xa9), out, sizeof(out));
    ok(n == 2 && memcmp(out, "\xc3\xa9", 2) == 0,
       "second byte completes it");

    /* U+1F600: f0 9f 98 80, one byte per token */
    n = llm_detok_push(&d, t, byte_token(t, 0xf0), out, sizeof(out));
    n += llm_detok_push(&d, t, byte_token(t, 0x9f), out, sizeof(out));
    n += llm_detok_push(&d, t, byte_token(t, 0x98), out, sizeof(out));
    is_int(n, 0, "three bytes of a 4-byte character are held");
    n = llm_detok_push(&d, t, byte_token(t, 0x80), out, sizeof(out));
    ok(n == 4 && memcmp(out, "\xf0\x9f\x98\x80", 4) == 0,
       "the fourth completes it");

    /* a cut-off character followed by text */
    n = llm_detok_push(&d, t, byte_token(t, 0xe2), out, sizeof(out));
    is_int(n, 0, "lead byte held");
    n = llm_detok_push(&d, t, 403, out, sizeof(out));
    ok(n == 8 && memcmp(out, "\xef\xbf\xbd Once", 8) == 0,
       "an interrupted character becomes U+FFFD, the text follows");

    n = llm_detok_push(&d, t, byte_token(t, 0xff), out, sizeof(out));
    ok(n == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0,
       "a byte that never starts UTF-8 is U+FFFD");

    n = llm_detok_push(&d, t, byte_token(t, 0x80), out, sizeof(out));
    ok(n == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0,
       "a stray continuation byte is U+FFFD");

    /* surrogates are not characters */
    n = llm_detok_push(&d, t, byte_token(t, 0xed), out, sizeof(out));
    n += llm_detok_push(&d, t, byte_token(t, 0xa0), out, sizeof(out));
    ok(n >= 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0,
       "an encoded surrogate is refused");
    llm_detok_flush(&d, out, sizeof(out));

    n = llm_detok_push(&d, t, byte_token(t, 0xc3), out, sizeof(out));
    n = llm_detok_flush(&d, out, sizeof(out));
    ok(n == 3 && memcmp(out, "\xef\xbf\xbd", 3) == 0,
       "flush turns a pending lead byte into U+FFFD");
    is_int(llm_detok_flush(&d, out, sizeof(out)), 0, "then nothing");

    n = llm_detok_push(&d, t, 1, out, sizeof(out));
    is_int(n, 0, "control tokens print nothing");

    llm_tokenizer_free(t);
}
