/*
 * Copyright (C) ngx_llm developers
 *
 * The SentencePiece tokenizer against HF tokenizers' outputs for the
 * vocabularies in the fixtures, and the incremental detokenizer.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "gguf_buf.h"
#include "utf8_check.h"
#include "llm_tokenizer.h"


#define SEP  "\n__ggml_vocab_test__\n"


static char *read_file(const char *path, size_t *len);
static const char *fixtures(void);
static void test_vocabs(void);
static void test_vocab(const char *name);
static void test_unsupported(void);
static void test_synthetic(void);
static void test_bpe_vocabs(void);
static void test_speed(void);
static void test_fuzz_findings(void);
static void test_pre_names(void);
static int round_trips(const llm_tokenizer_t *t, const char *text,
    size_t len);
static void test_detok(void);
static void test_api(void);
static void test_special(void);
static int32_t byte_token(const llm_tokenizer_t *t, int b);
static int streams_as(const llm_tokenizer_t *t, const int32_t *ids, int n,
    const char *want, size_t wlen);


int
main(void)
{
    struct stat  st;

    if (stat(fixtures(), &st) != 0) {
        skip_all("no fixtures directory (set LLM_FIXTURES)");
    }

    test_vocabs();
    test_unsupported();
    test_synthetic();
    test_bpe_vocabs();
    test_speed();
    test_pre_names();
    test_fuzz_findings();
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


static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


/* every X.gguf in the vocab fixtures that has X.gguf.inp and .out */
static void
test_vocabs(void)
{
    int             n;
    char            path[1024], *names[64];
    size_t          len;
    DIR            *d;
    struct stat     st;
    struct dirent  *e;

    snprintf(path, sizeof(path), "%s/vocab", fixtures());

    d = opendir(path);
    if (!ok(d != NULL, "vocab fixtures directory %s", path)) {
        return;
    }

    n = 0;
    while ((e = readdir(d)) != NULL && n < 64) {
        len = strlen(e->d_name);

        if (len <= 5 || strcmp(e->d_name + len - 5, ".gguf") != 0) {
            continue;
        }

        snprintf(path, sizeof(path), "%s/vocab/%s.inp", fixtures(),
                 e->d_name);
        if (stat(path, &st) != 0) {
            continue;
        }

        names[n++] = strndup(e->d_name, len - 5);
    }

    closedir(d);

    qsort(names, (size_t) n, sizeof(char *), cmp_str);
    ok(n >= 8, "%d vocabularies with test strings", n);

    for (int i = 0; i < n; i++) {
        test_vocab(names[i]);
        free(names[i]);
    }
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

        /* decoding gives the text back: behind the prefixed space for
         * SentencePiece, exactly for byte-level BPE; streamed, the same
         * bytes in whole characters */
        if (n > 0) {
            char    dec[8192];
            size_t  w = 0, sp;

            for (int i = 0; i < n; i++) {
                piece = llm_token_piece(t, ids[i], &plen);
                if (w + plen < sizeof(dec)) {
                    memcpy(dec + w, piece, plen);
                    w += plen;
                }
            }

            sp = strcmp(llm_tokenizer_model(t), "llama") == 0;

            ok(w == (size_t) (e - s) + sp && (sp == 0 || dec[0] == ' ')
               && memcmp(dec + sp, s, w - sp) == 0,
               "%s: string %d decodes back", name, k);

            ok(streams_as(t, ids, n, dec, w), "%s: string %d streams back "
               "in whole characters", name, k);
        }

        s = e + strlen(SEP);
        line = nl + 1;
    }

    free(inp);
    free(outp);
    llm_tokenizer_free(t);
}


/* the incremental detokenizer emits only whole characters, and all of
 * them: the concatenation is want (valid UTF-8) */
static int
streams_as(const llm_tokenizer_t *t, const int32_t *ids, int n,
    const char *want, size_t wlen)
{
    int           good;
    char         *all, *out;
    size_t        cap, k, w;
    llm_detok_t   d;

    cap = llm_tokenizer_max_piece(t) + 64;
    out = malloc(cap);
    all = malloc(wlen + 1);
    good = out != NULL && all != NULL;
    w = 0;

    llm_detok_init(&d);

    for (int i = 0; good && i <= n; i++) {
        k = i < n ? llm_detok_push(&d, t, ids[i], out, cap)
                  : llm_detok_flush(&d, out, cap);

        if (!utf8_whole(out, k) || k > wlen - w) {
            good = 0;
            break;
        }

        memcpy(all + w, out, k);
        w += k;
    }

    good = good && w == wlen && memcmp(all, want, wlen) == 0;

    free(out);
    free(all);
    return good;
}


/* a GGUF file with tokenizer metadata only, written by the tests */


static void
kv_str(buf_t *b, const char *key, const char *v)
{
    put_str(b, key);
    put_u32(b, 8);                  /* string */
    put_str(b, v);
}


static void
kv_u32(buf_t *b, const char *key, uint32_t v)
{
    put_str(b, key);
    put_u32(b, 4);                  /* u32 */
    put_u32(b, v);
}


static void
kv_bool(buf_t *b, const char *key, int v)
{
    unsigned char  c = (unsigned char) (v != 0);

    put_str(b, key);
    put_u32(b, 7);                  /* bool */
    put(b, &c, 1);
}


static void
kv_strs(buf_t *b, const char *key, char **v, size_t n)
{
    put_str(b, key);
    put_u32(b, 9);                  /* array */
    put_u32(b, 8);                  /* of strings */
    put_u64(b, n);

    for (size_t i = 0; i < n; i++) {
        put_str(b, v[i]);
    }
}


static void
kv_i32s(buf_t *b, const char *key, const int32_t *v, size_t n)
{
    put_str(b, key);
    put_u32(b, 9);                  /* array */
    put_u32(b, 5);                  /* of i32 */
    put_u64(b, n);
    put(b, v, 4 * n);
}


/*
 * A small byte-level vocabulary: ids 0-255 are the bytes, in GPT-2's
 * mapping, then the tokens below; merges build "hello" from its
 * letters.  The options change one thing each.
 */
typedef struct {
    const char  *model;          /* tokenizer.ggml.model */
    const char  *pre;            /* tokenizer.ggml.pre; NULL: none */
    const char  *bad_merge;      /* appended to the merges */
    int          no_merges;
    int          eot;            /* token ids, or -1 for no key */
    int          eom;
    int          add_eos;        /* -1: no key */
} synth_t;

enum {
    S_HE = 256, S_LL, S_HELL, S_HELLO, S_XYZ, S_EOT_TEXT, S_ENDOFTEXT,
    S_CUSTOM_EOT, S_CUSTOM_EOM, S_USER, S_AB, S_BCD, S_N
};


static void
byte_text(int b, char *out)
{
    int  cp, next;

    /* GPT-2: visible Latin-1 bytes are themselves, the others U+0100
     * onwards in byte order */
    next = 0x100;
    cp = -1;

    for (int i = 0; i <= b; i++) {
        if ((i >= '!' && i <= '~') || (i >= 0xa1 && i <= 0xac)
            || i >= 0xae)
        {
            cp = i;

        } else {
            cp = next++;
        }
    }

    if (cp < 0x80) {
        out[0] = (char) cp;
        out[1] = '\0';

    } else {
        out[0] = (char) (0xc0 | (cp >> 6));
        out[1] = (char) (0x80 | (cp & 0x3f));
        out[2] = '\0';
    }
}


static int
synth_load(llm_tokenizer_t **t, const synth_t *o, llm_err_t *err)
{
    int          fd, rc;
    char        *toks[S_N], path[] = "/tmp/llm_tok_XXXXXX", bytes[256][3];
    char        *merges[8];
    buf_t        b = { 0 };
    int32_t      types[S_N];
    size_t       n_kv, n_merges;

    for (int i = 0; i < 256; i++) {
        byte_text(i, bytes[i]);
        toks[i] = bytes[i];
        types[i] = LLM_TOKEN_NORMAL;
    }

    toks[S_HE] = (char *) "he";
    toks[S_LL] = (char *) "ll";
    toks[S_HELL] = (char *) "hell";
    toks[S_HELLO] = (char *) "hello";
    toks[S_XYZ] = (char *) "xyz";
    toks[S_EOT_TEXT] = (char *) "<|im_end|>";
    toks[S_ENDOFTEXT] = (char *) "<|endoftext|>";
    toks[S_CUSTOM_EOT] = (char *) "<|my_eot|>";
    toks[S_CUSTOM_EOM] = (char *) "<|my_eom|>";
    toks[S_USER] = (char *) "<u>";
    toks[S_AB] = (char *) "ab";
    toks[S_BCD] = (char *) "bcd";

    for (int i = 256; i < S_N; i++) {
        types[i] = LLM_TOKEN_CONTROL;
    }

    types[S_HE] = types[S_LL] = types[S_HELL] = types[S_HELLO]
        = types[S_XYZ] = LLM_TOKEN_NORMAL;
    types[S_USER] = types[S_AB] = types[S_BCD] = LLM_TOKEN_USER_DEFINED;

    n_merges = 0;
    merges[n_merges++] = (char *) "h e";
    merges[n_merges++] = (char *) "l l";
    merges[n_merges++] = (char *) "he ll";
    merges[n_merges++] = (char *) "hell o";
    if (o->bad_merge != NULL) {
        merges[n_merges++] = (char *) o->bad_merge;
    }

    n_kv = 5 + (o->pre != NULL) + !o->no_merges + (o->eot >= 0)
           + (o->eom >= 0) + (o->add_eos >= 0);

    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, n_kv);

    kv_str(&b, "tokenizer.ggml.model", o->model);
    if (o->pre != NULL) {
        kv_str(&b, "tokenizer.ggml.pre", o->pre);
    }

    kv_strs(&b, "tokenizer.ggml.tokens", toks, S_N);
    kv_i32s(&b, "tokenizer.ggml.token_type", types, S_N);
    if (!o->no_merges) {
        kv_strs(&b, "tokenizer.ggml.merges", merges, n_merges);
    }

    kv_u32(&b, "tokenizer.ggml.eos_token_id", S_ENDOFTEXT);
    kv_u32(&b, "tokenizer.ggml.bos_token_id", S_ENDOFTEXT);
    if (o->eot >= 0) {
        kv_u32(&b, "tokenizer.ggml.eot_token_id", (uint32_t) o->eot);
    }

    if (o->eom >= 0) {
        kv_u32(&b, "tokenizer.ggml.eom_token_id", (uint32_t) o->eom);
    }

    if (o->add_eos >= 0) {
        kv_bool(&b, "tokenizer.ggml.add_eos_token", o->add_eos);
    }

    fd = mkstemp(path);
    if (fd < 0 || write(fd, b.p, b.n) != (ssize_t) b.n) {
        abort();
    }

    close(fd);
    free(b.p);

    rc = llm_tokenizer_load(t, path, err);
    unlink(path);

    return rc;
}


static const synth_t  synth_default = {
    "gpt2", "gpt-2", NULL, 0, -1, -1, -1
};


static void
test_unsupported(void)
{
    synth_t           o;
    llm_err_t         err = { 0 };
    llm_tokenizer_t  *t;

    o = synth_default;
    o.model = "bert";
    ok(synth_load(&t, &o, &err) == LLM_ERR && t == NULL,
       "tokenizer model 'bert' is refused");
    is_int(err.err, LLM_EUNSUPPORTED, "as unsupported");
    ok(strstr(err.errstr, "'bert'") != NULL, "naming the model: %s",
       err.errstr);

    o = synth_default;
    o.pre = "no-such-pre";
    ok(synth_load(&t, &o, &err) == LLM_ERR && t == NULL,
       "an unknown pre-tokenizer is refused");
    ok(strstr(err.errstr, "'no-such-pre'") != NULL, "naming it: %s",
       err.errstr);

    o = synth_default;
    o.no_merges = 1;
    ok(synth_load(&t, &o, &err) == LLM_ERR
       && strstr(err.errstr, "merges") != NULL,
       "a gpt2 vocabulary without merges is refused: %s", err.errstr);

    o = synth_default;
    o.bad_merge = "hello";
    ok(synth_load(&t, &o, &err) == LLM_ERR
       && strstr(err.errstr, "'hello'") != NULL,
       "a merge that is not two tokens is refused: %s", err.errstr);

    o = synth_default;
    o.pre = NULL;
    if (ok(synth_load(&t, &o, &err) == LLM_OK, "no pre-tokenizer named: "
           "loads"))
    {
        ok(strcmp(llm_tokenizer_pre(t), "default") == 0
           && strcmp(llm_tokenizer_model(t), "gpt2") == 0,
           "as gpt2 with the default pre-tokenizer");
        llm_tokenizer_free(t);
    }

    ok(llm_tokenizer_load(&t, "/nonexistent.gguf", &err) == LLM_ERR,
       "missing file is an error");
    is_int(err.err, LLM_EIO, "an I/O error");
}


static int
ids_are(const int32_t *ids, int n, const int32_t *want, int n_want)
{
    return n == n_want && memcmp(ids, want, (size_t) n * sizeof(int32_t))
                          == 0;
}


static int
tok_is(const llm_tokenizer_t *t, const char *text, int flags,
    const int32_t *want, int n_want)
{
    int        n;
    int32_t    ids[64];
    llm_err_t  err = { 0 };

    n = llm_tokenize_ex(t, text, strlen(text), flags, ids, 64, &err);

    if (!ids_are(ids, n, want, n_want)) {
        diag("'%s': got %d ids:", text, n);
        for (int i = 0; i < n && i < 64; i++) {
            diag("  %d", ids[i]);
        }

        return 0;
    }

    return 1;
}


/* merges, ignore_merges, special tokens, EOG and EOS on the synthetic
 * byte-level vocabulary */
static void
test_synthetic(void)
{
    synth_t           o;
    llm_err_t         err = { 0 };
    llm_tokenizer_t  *t;

    o = synth_default;
    if (!ok(synth_load(&t, &o, &err) == LLM_OK, "synthetic gpt2 loads")) {
        diag("%s", err.errstr);
        return;
    }

    ok(tok_is(t, "hello", 0, (int32_t[]) { S_HELLO }, 1),
       "merges build hello");
    ok(tok_is(t, "hello hello", 0, (int32_t[]) { S_HELLO, ' ', S_HELLO },
              3), "a space is its own byte token without a merge");
    ok(tok_is(t, "hell", 0, (int32_t[]) { S_HELL }, 1), "hell");
    ok(tok_is(t, "helo", 0, (int32_t[]) { S_HE, 'l', 'o' }, 3),
       "he l o");
    ok(tok_is(t, "xyz", 0, (int32_t[]) { 'x', 'y', 'z' }, 3),
       "a token no merge reaches is not used");

    ok(tok_is(t, "a<u>b", 0, (int32_t[]) { 'a', S_USER, 'b' }, 3),
       "a user-defined token is always cut out");
    ok(tok_is(t, "<|im_end|>", 0,
              (int32_t[]) { '<', '|', 'i', 'm', '_', 'e', 'n', 'd', '|',
                            '>' }, 10),
       "a control token is spelled out");
    ok(tok_is(t, "<|im_end|>", LLM_TOK_PARSE_SPECIAL,
              (int32_t[]) { S_EOT_TEXT }, 1),
       "and cut out with PARSE_SPECIAL");
    ok(tok_is(t, "abcd", 0, (int32_t[]) { 'a', S_BCD }, 2),
       "the longer special token goes first");
    ok(tok_is(t, "abab", 0, (int32_t[]) { S_AB, S_AB }, 2),
       "at all its places");
    ok(tok_is(t, "", LLM_TOK_ADD_BOS | LLM_TOK_ADD_EOS,
              (int32_t[]) { S_ENDOFTEXT, S_ENDOFTEXT }, 2),
       "BOS and EOS on an empty text");

    ok(!llm_tokenizer_wants_bos(t), "gpt-2 wants no BOS by default");
    ok(!llm_tokenizer_wants_eos(t), "nor EOS");

    ok(llm_tokenizer_is_eog(t, S_ENDOFTEXT), "eos ends generation");
    ok(llm_tokenizer_is_eog(t, S_EOT_TEXT), "<|im_end|> ends generation");
    ok(!llm_tokenizer_is_eog(t, S_CUSTOM_EOT)
       && !llm_tokenizer_is_eog(t, S_CUSTOM_EOM),
       "an unknown control token does not");
    ok(!llm_tokenizer_is_eog(t, S_USER) && !llm_tokenizer_is_eog(t, 'a')
       && !llm_tokenizer_is_eog(t, -1) && !llm_tokenizer_is_eog(t, S_N),
       "nor do others, nor ids out of range");

    llm_tokenizer_free(t);

    o = synth_default;
    o.eot = S_CUSTOM_EOT;
    o.eom = S_CUSTOM_EOM;
    o.add_eos = 1;
    if (ok(synth_load(&t, &o, &err) == LLM_OK, "with eot, eom and "
           "add_eos_token"))
    {
        ok(llm_tokenizer_is_eog(t, S_CUSTOM_EOT), "eot_token_id ends "
           "generation");
        ok(llm_tokenizer_is_eog(t, S_CUSTOM_EOM), "eom_token_id too");
        ok(llm_tokenizer_wants_eos(t), "add_eos_token is read");
        ok(tok_is(t, "hello", LLM_TOK_ADD_EOS,
                  (int32_t[]) { S_HELLO, S_ENDOFTEXT }, 2),
           "ADD_EOS appends EOS");
        llm_tokenizer_free(t);
    }

    o = synth_default;
    o.pre = "llama-bpe";
    if (ok(synth_load(&t, &o, &err) == LLM_OK, "as llama-bpe")) {
        ok(tok_is(t, "xyz", 0, (int32_t[]) { S_XYZ }, 1),
           "a word that is a token is taken whole (ignore_merges)");
        ok(tok_is(t, "hello", 0, (int32_t[]) { S_HELLO }, 1), "hello");
        ok(llm_tokenizer_wants_bos(t), "Llama 3 wants BOS by default");
        llm_tokenizer_free(t);
    }
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


static llm_tokenizer_t *
load_vocab(const char *name)
{
    char              path[1024];
    llm_err_t         err = { 0 };
    llm_tokenizer_t  *t;

    snprintf(path, sizeof(path), "%s/vocab/%s.gguf", fixtures(), name);

    if (llm_tokenizer_load(&t, path, &err) != LLM_OK) {
        ok(0, "%s loads: %s", name, err.errstr);
        return NULL;
    }

    return t;
}


static int32_t
id_of(const llm_tokenizer_t *t, const char *text)
{
    size_t       len;
    const char  *s;

    for (int32_t id = 0; id < llm_tokenizer_n_vocab(t); id++) {
        s = llm_tokenizer_token_text(t, id, &len);
        if (len == strlen(text) && memcmp(s, text, len) == 0) {
            return id;
        }
    }

    return -1;
}


/* the real byte-level vocabularies: their end-of-generation tokens,
 * special tokens, any bytes in and out, characters split over tokens */
static void
test_bpe_vocabs(void)
{
    int               n;
    char              out[512], dec[256];
    size_t            w, len;
    int32_t           ids[256], eot;
    llm_err_t         err = { 0 };
    const char       *p;
    llm_detok_t       d;
    llm_tokenizer_t  *t;

    static const char  bytes[] = "\xff\xfe\x80 abc\xc3\x00\xed\xa0\x80"
                                 "\xf0\x9f\x98 \t\r\n\xe2\x82";

    t = load_vocab("ggml-vocab-gpt-2");
    if (t != NULL) {
        ok(strcmp(llm_tokenizer_model(t), "gpt2") == 0
           && strcmp(llm_tokenizer_pre(t), "gpt-2") == 0,
           "gpt-2: model gpt2, pre-tokenizer gpt-2");
        ok(llm_tokenizer_is_eog(t, 50256), "gpt-2: <|endoftext|> ends "
           "generation");
        ok(!llm_tokenizer_wants_bos(t), "gpt-2: no BOS by default");

        n = llm_tokenize_ex(t, "a<|endoftext|>b", 15, 0, ids, 256, &err);
        ok(n > 3, "gpt-2: without PARSE_SPECIAL the control token is "
           "spelled out (%d ids)", n);
        n = llm_tokenize_ex(t, "a<|endoftext|>b", 15, LLM_TOK_PARSE_SPECIAL,
                            ids, 256, &err);
        ok(n == 3 && ids[1] == 50256, "gpt-2: with it, one id");
        p = llm_token_piece(t, 50256, &len);
        is_int(len, 0, "gpt-2: a control token prints nothing");

        /* any bytes: the byte mapping covers them all */
        n = llm_tokenize(t, bytes, sizeof(bytes) - 1, 0, ids, 256, &err);
        w = 0;
        for (int i = 0; i < n; i++) {
            p = llm_token_piece(t, ids[i], &len);
            memcpy(dec + w, p, len);
            w += len;
        }

        ok(n > 0 && w == sizeof(bytes) - 1
           && memcmp(dec, bytes, w) == 0,
           "gpt-2: invalid UTF-8 round-trips byte for byte");

        /* U+1F601 is two tokens, neither a whole character */
        n = llm_tokenize(t, "\xf0\x9f\x98\x81", 4, 0, ids, 256, &err);
        if (ok(n == 2, "gpt-2: an emoji in two tokens")) {
            llm_detok_init(&d);
            is_int(llm_detok_push(&d, t, ids[0], out, sizeof(out)), 0,
                   "gpt-2: the first is held back");
            w = llm_detok_push(&d, t, ids[1], out, sizeof(out));
            ok(w == 4 && memcmp(out, "\xf0\x9f\x98\x81", 4) == 0,
               "gpt-2: the second completes the character");
        }

        /* "\xc3\xa9" (U+00E9) in byte tokens: "Ã" then "©" */
        llm_detok_init(&d);
        is_int(llm_detok_push(&d, t, id_of(t, "\xc3\x83"), out,
                              sizeof(out)), 0,
               "gpt-2: byte token 0xc3 is held back");
        w = llm_detok_push(&d, t, id_of(t, "\xc2\xa9"), out, sizeof(out));
        ok(w == 2 && memcmp(out, "\xc3\xa9", 2) == 0,
           "gpt-2: byte token 0xa9 completes U+00E9");

        llm_detok_init(&d);
        is_int(llm_detok_push(&d, t, id_of(t, "\xc3\x83"), out,
                              sizeof(out)), 0, "gpt-2: 0xc3 held again");
        w = llm_detok_push(&d, t, id_of(t, "a"), out, sizeof(out));
        ok(w == 4 && memcmp(out, "\xef\xbf\xbd" "a", 4) == 0,
           "gpt-2: cut short by 'a', it becomes U+FFFD");

        llm_tokenizer_free(t);
    }

    t = load_vocab("ggml-vocab-deepseek-coder");
    if (t != NULL) {
        eot = id_of(t, "<|EOT|>");
        ok(eot == 32021 && llm_tokenizer_is_eog(t, eot),
           "deepseek-coder: <|EOT|> ends generation");
        ok(llm_tokenizer_is_eog(t, 32014) && !llm_tokenizer_is_eog(t, 32013),
           "deepseek-coder: eos does, bos does not");
        ok(llm_tokenizer_wants_bos(t) && llm_tokenizer_bos(t) == 32013,
           "deepseek-coder: add_bos_token is read");

        /* user-defined tokens are cut out of the text always */
        n = llm_tokenize(t, "<|User|>hi", 10, 0, ids, 256, &err);
        ok(n >= 2 && ids[0] == 32019, "deepseek-coder: <|User|> is cut "
           "out without PARSE_SPECIAL");
        p = llm_token_piece(t, 32019, &len);
        ok(len == 8 && memcmp(p, "<|User|>", 8) == 0,
           "deepseek-coder: and prints as its text");
        llm_tokenizer_free(t);
    }

    t = load_vocab("ggml-vocab-starcoder");
    if (t != NULL) {
        ok(llm_tokenizer_is_eog(t, 0) && !llm_tokenizer_is_eog(t, 1),
           "starcoder: <|endoftext|> ends generation, <fim_prefix> not");
        n = llm_tokenize_ex(t, "<fim_prefix>x", 13, LLM_TOK_PARSE_SPECIAL,
                            ids, 256, &err);
        ok(n == 2 && ids[0] == 1, "starcoder: <fim_prefix> parsed");
        llm_tokenizer_free(t);
    }

    t = load_vocab("ggml-vocab-falcon");
    if (t != NULL) {
        ok(llm_tokenizer_is_eog(t, 11) && !llm_tokenizer_is_eog(t, 0),
           "falcon: <|endoftext|> ends generation, >>TITLE<< not");
        llm_tokenizer_free(t);
    }

    t = load_vocab("ggml-vocab-llama-spm");
    if (t != NULL) {
        ok(llm_tokenizer_is_eog(t, 2) && !llm_tokenizer_is_eog(t, 1)
           && !llm_tokenizer_is_eog(t, 0),
           "llama-spm: </s> ends generation, <s> and <unk> not");
        ok(strcmp(llm_tokenizer_model(t), "llama") == 0,
           "llama-spm: model llama");
        llm_tokenizer_free(t);
    }
}


/*
 * Tokenizing is not quadratic: 100 KB of each kind of text, in every
 * vocabulary, well under a second.  The kinds are the ones that would
 * hurt: one long word, one run of spaces, digits, a special token over
 * and over, mixed text, random bytes.
 */
static void
test_speed(void)
{
    int               n;
    char              path[1024], *text, *inp;
    size_t            len, inlen;
    uint32_t          x;
    uint64_t          t0, worst_us;
    int32_t           dummy;
    llm_err_t         err = { 0 };
    llm_tokenizer_t  *t;
    const char       *worst;

    static const char  *vocabs[] = {
        "ggml-vocab-llama-spm", "ggml-vocab-gpt-2",
        "ggml-vocab-deepseek-coder", "ggml-vocab-falcon",
        "ggml-vocab-starcoder", "synthetic-gpt2-as-llama-bpe",
        "synthetic-gpt2-as-qwen2"
    };
    static const char  *kinds[] = {
        "letters", "spaces", "digits", "special", "mixed", "random",
        "newlines and spaces", "punctuation", "deepseek user tokens"
    };

    len = 100 * 1024;
    text = malloc(len);
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-gpt-2.gguf.inp",
             fixtures());
    inp = read_file(path, &inlen);

    if (text == NULL || inp == NULL || inlen == 0) {
        ok(0, "speed test inputs");
        free(text);
        free(inp);
        return;
    }

    worst_us = 0;
    worst = "";

    for (size_t v = 0; v < sizeof(vocabs) / sizeof(vocabs[0]); v++) {
        t = load_vocab(vocabs[v]);
        if (t == NULL) {
            continue;
        }

        for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
            x = 12345;

            for (size_t i = 0; i < len; i++) {
                switch (k) {
                case 0: text[i] = 'a'; break;
                case 1: text[i] = ' '; break;
                case 2: text[i] = '3'; break;
                case 3: text[i] = "<|endoftext|>"[i % 13]; break;
                case 4: text[i] = inp[i % inlen]; break;
                case 5:
                    x = x * 1103515245 + 12345;
                    text[i] = (char) (x >> 16);
                    break;
                case 6: text[i] = " \n"[(i / 7) % 2]; break;
                case 7: text[i] = "!.,;"[i % 4]; break;
                default: text[i] = "\xc3\xb5"[i % 2]; break;
                }
            }

            t0 = llm_now_us();
            n = llm_tokenize_ex(t, text, len, LLM_TOK_PARSE_SPECIAL, &dummy,
                                0, &err);
            t0 = llm_now_us() - t0;

            if (n < 0) {
                ok(0, "%s: %s: %s", vocabs[v], kinds[k], err.errstr);
            }

            if (t0 > worst_us) {
                worst_us = t0;
                worst = kinds[k];
            }

            if (t0 >= 1000000) {
                ok(0, "%s: 100 KB of %s in %.3f s", vocabs[v], kinds[k],
                   t0 / 1e6);
            }
        }

        llm_tokenizer_free(t);
    }

    ok(worst_us < 1000000, "100 KB texts tokenize in under a second each "
       "(slowest %.3f s, %s)", worst_us / 1e6, worst);

    free(text);
    free(inp);
}


/* tokenizes without BOS and decodes: the text must come back, behind
 * SentencePiece's space in front of each stretch of text */
static int
round_trips(const llm_tokenizer_t *t, const char *text, size_t len)
{
    int          n, start, spm, type, good;
    char        *dec;
    size_t       w, plen;
    int32_t     *ids;
    llm_err_t    err = { 0 };
    const char  *p;

    n = llm_tokenize(t, text, len, 0, NULL, 0, &err);
    if (n < 0) {
        diag("%s", err.errstr);
        return 0;
    }

    ids = malloc(((size_t) n + 1) * sizeof(int32_t));
    dec = malloc(((size_t) n + 1) * (llm_tokenizer_max_piece(t) + 1));
    if (ids == NULL || dec == NULL) {
        abort();
    }

    (void) llm_tokenize(t, text, len, 0, ids, n, &err);

    spm = strcmp(llm_tokenizer_model(t), "llama") == 0;
    start = 1;
    w = 0;

    for (int i = 0; i < n; i++) {
        p = llm_token_piece(t, ids[i], &plen);
        type = llm_tokenizer_token_type(t, ids[i]);

        if (type == LLM_TOKEN_USER_DEFINED || type == LLM_TOKEN_CONTROL) {
            start = 1;

        } else {
            if (spm && start && plen > 0 && p[0] == ' ') {
                p++;
                plen--;
            }

            start = 0;
        }

        memcpy(dec + w, p, plen);
        w += plen;
    }

    good = w == len && memcmp(dec, text, len) == 0;
    if (!good) {
        diag("%zu bytes decode to %zu: '%.*s'", len, w, (int) w, dec);
    }

    free(ids);
    free(dec);
    return good;
}


/* inputs the fuzzer (make fuzz) found wrong, one test each */
static void
test_fuzz_findings(void)
{
    llm_tokenizer_t  *t;

    /* a stray UTF-8 lead byte before a space took two bytes of the
     * space's U+2581 into its symbol: SentencePiece decoded the space as
     * "\xe2\x96\x81" */
    static const char  lead_space[] = "  \xe6 \xe6\x97\x8futtoeo";

    t = load_vocab("ggml-vocab-phi-3");
    if (t != NULL) {
        ok(round_trips(t, lead_space, sizeof(lead_space) - 1),
           "phi-3: a stray lead byte before a space round-trips");
        ok(round_trips(t, "\xf0 \xe2", 4),
           "phi-3: so does a 4-byte lead byte, and one at the end");
        llm_tokenizer_free(t);
    }
}


/*
 * Every pre-tokenizer name on the synthetic vocabulary: it loads, any
 * bytes round-trip, and 100 KB of the texts that stress its regexes
 * (long runs of spaces, letters, digits, newlines) take under a second.
 */
static void
test_pre_names(void)
{
    int               n, good, fast;
    char             *text;
    size_t            len;
    uint32_t          x;
    uint64_t          t0, worst_us;
    int32_t           dummy;
    synth_t           o;
    llm_err_t         err = { 0 };
    llm_tokenizer_t  *t;

    static const char  *names[] = {
        "default", "gpt-2", "gpt-neox", "mpt", "olmo", "phi-2",
        "llama-bpe", "llama3", "qwen2", "stablelm2", "deepseek-llm",
        "deepseek-coder", "falcon", "starcoder", "refact", "command-r",
        "smollm", "dbrx", "smaug-bpe", NULL
    };
    static const char  *fills[] = {
        " ", "a", "3", "\n", " \t", "  \n", "\xe4\xb8\x80", "!", NULL
    };

    len = 100 * 1024;
    text = malloc(len);
    if (text == NULL) {
        abort();
    }

    for (int i = 0; names[i] != NULL; i++) {
        o = synth_default;
        o.pre = names[i];

        if (!ok(synth_load(&t, &o, &err) == LLM_OK, "pre-tokenizer %s "
                "loads", names[i]))
        {
            diag("%s", err.errstr);
            continue;
        }

        ok(strcmp(llm_tokenizer_pre(t), names[i]) == 0, "%s: named",
           names[i]);

        /* random bytes, then the same ending in spaces */
        x = 1;
        good = 1;
        for (int round = 0; round < 20; round++) {
            char  buf[64];

            for (size_t j = 0; j < sizeof(buf); j++) {
                x = x * 1103515245 + 12345;
                buf[j] = (char) (x >> 16);
                if (round % 2 && j > 40) {
                    buf[j] = " \n"[j % 2];
                }
            }

            good &= round_trips(t, buf, sizeof(buf));
        }

        ok(good, "%s: random bytes round-trip", names[i]);

        worst_us = 0;
        fast = 1;

        for (int f = 0; fills[f] != NULL; f++) {
            size_t  fl = strlen(fills[f]);

            for (size_t j = 0; j < len; j++) {
                text[j] = fills[f][j % fl];
            }

            /* and one other character at the end: the runs then do
             * not reach the end of the text */
            text[len - 1] = 'x';

            t0 = llm_now_us();
            n = llm_tokenize(t, text, len, 0, &dummy, 0, &err);
            t0 = llm_now_us() - t0;

            if (n < 0 || t0 >= 1000000) {
                fast = 0;
                diag("%s: 100 KB of '%s': %.3f s", names[i], fills[f],
                     t0 / 1e6);
            }

            if (t0 > worst_us) {
                worst_us = t0;
            }
        }

        ok(fast, "%s: 100 KB runs tokenize in under a second (slowest "
           "%.3f s)", names[i], worst_us / 1e6);

        llm_tokenizer_free(t);
    }

    free(text);
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
