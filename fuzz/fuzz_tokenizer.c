/*
 * Copyright (C) ngx_llm developers
 *
 * libFuzzer target for the tokenizers (make fuzz).
 *
 * An input is text.  Every vocabulary of the fixtures (the .gguf files
 * in LLM_FIXTURES/vocab, LLM_FIXTURES defaulting to ../shared/fixtures)
 * and the shipped model's are loaded once; each input goes through each
 * of them:
 *
 *   - tokenized plain, and with PARSE_SPECIAL, BOS and EOS: the count is
 *     the same with and without room for the ids, every id in range;
 *   - the plain ids decode back to the text wherever that must hold:
 *     byte-level BPE gives back every byte string exactly, SentencePiece
 *     too once the space it puts in front of each stretch of text is
 *     taken off, as long as each byte of the text has a token of its own
 *     (Falcon's and StarCoder's vocabularies lack a few, which are
 *     dropped) and, for SentencePiece, the text holds no U+2581 (which
 *     decodes to a space);
 *   - the incremental detokenizer emits only whole, valid UTF-8, and for
 *     valid UTF-8 text exactly the decoded bytes.
 *
 * Built with -DLLM_TOKENIZER_SEED_MAIN this file is instead the program
 * that writes the seed corpus (the test strings of the vocabularies) and
 * a libFuzzer dictionary (their special tokens, regex-relevant bits).
 */

#define _GNU_SOURCE                     /* memmem() */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_tokenizer.h"

#include "fuzz_seed.h"
#include "../t/unit/utf8_check.h"


#define SEP  "\n__ggml_vocab_test__\n"

#define MAX_VOCABS  16


static const char *
fixtures(void)
{
    const char  *p = getenv("LLM_FIXTURES");

    return p != NULL && *p != '\0' ? p : "../shared/fixtures";
}


#ifndef LLM_TOKENIZER_SEED_MAIN

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


typedef struct {
    llm_tokenizer_t  *t;
    char              name[256];
    int               spm;          /* "llama": the space prefix */
    uint8_t           good[256];    /* byte b alone decodes back to b */
} vocab_t;


static vocab_t  vocabs[MAX_VOCABS];
static int      n_vocabs;


/*
 * The text the ids decode to, with SentencePiece's prefixed space taken
 * off each stretch of text: at the start and after each special token.
 * Returns its length; out has room for the pieces.
 */
static size_t
decode(const vocab_t *v, const int32_t *ids, int n, char *out)
{
    int          start, type;
    size_t       w, len;
    const char  *p;

    w = 0;
    start = 1;

    for (int i = 0; i < n; i++) {
        p = llm_token_piece(v->t, ids[i], &len);
        type = llm_tokenizer_token_type(v->t, ids[i]);

        if (type == LLM_TOKEN_USER_DEFINED || type == LLM_TOKEN_CONTROL) {
            start = 1;

        } else {
            if (v->spm && start && len > 0 && p[0] == ' ') {
                p++;
                len--;
            }

            start = 0;
        }

        memcpy(out + w, p, len);
        w += len;
    }

    return w;
}


static int32_t *
tokenize(const vocab_t *v, const uint8_t *data, size_t size, int flags,
    int *n)
{
    int        m;
    int32_t   *ids;
    llm_err_t  err = { 0 };

    *n = llm_tokenize_ex(v->t, (const char *) data, size, flags, NULL, 0,
                         &err);
    if (*n < 0) {
        /* only allocation fails, and libFuzzer's inputs are small */
        fprintf(stderr, "%s: %s\n", v->name, err.errstr);
        abort();
    }

    ids = malloc(((size_t) *n + 1) * sizeof(int32_t));
    if (ids == NULL) {
        abort();
    }

    m = llm_tokenize_ex(v->t, (const char *) data, size, flags, ids, *n,
                        &err);
    if (m != *n) {
        fprintf(stderr, "%s: %d ids counted, %d written\n", v->name, *n, m);
        abort();
    }

    for (int i = 0; i < m; i++) {
        if (ids[i] < 0 || ids[i] >= llm_tokenizer_n_vocab(v->t)) {
            fprintf(stderr, "%s: id %d out of range\n", v->name, ids[i]);
            abort();
        }
    }

    return ids;
}


static void
load(const char *path, const char *name)
{
    int        n;
    char      *dec;
    size_t     len;
    int32_t   *ids;
    uint8_t    b;
    llm_err_t  err = { 0 };
    vocab_t   *v;

    if (n_vocabs == MAX_VOCABS) {
        return;
    }

    v = &vocabs[n_vocabs];

    if (llm_tokenizer_load(&v->t, path, &err) != LLM_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err.errstr);
        exit(1);
    }

    snprintf(v->name, sizeof(v->name), "%s", name);
    v->spm = strcmp(llm_tokenizer_model(v->t), "llama") == 0;

    dec = malloc(llm_tokenizer_max_piece(v->t) * 8 + 8);
    if (dec == NULL) {
        abort();
    }

    for (int i = 0; i < 256; i++) {
        b = (uint8_t) i;
        ids = tokenize(v, &b, 1, 0, &n);
        len = decode(v, ids, n, dec);
        v->good[i] = len == 1 && (uint8_t) dec[0] == b;
        free(ids);
    }

    free(dec);
    n_vocabs++;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char            path[4096];
    size_t          len;
    DIR            *d;
    struct dirent  *de;

    (void) argc;
    (void) argv;

    snprintf(path, sizeof(path), "%s/vocab", fixtures());
    d = opendir(path);
    if (d == NULL) {
        fprintf(stderr, "fuzz_tokenizer: no vocabularies in %s (set "
                "LLM_FIXTURES)\n", path);
        exit(1);
    }

    while ((de = readdir(d)) != NULL) {
        len = strlen(de->d_name);
        if (len > 5 && strcmp(de->d_name + len - 5, ".gguf") == 0) {
            snprintf(path, sizeof(path), "%s/vocab/%s", fixtures(),
                     de->d_name);
            load(path, de->d_name);
        }
    }

    closedir(d);

    /* SentencePiece with a small vocabulary: more byte fallback */
    load("models/stories260K.gguf", "stories260K");

    fprintf(stderr, "fuzz_tokenizer: %d vocabularies\n", n_vocabs);
    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int           n, all_good, utf8;
    char         *dec, *stream, *chunk;
    size_t        len, cap, k, w;
    int32_t      *ids;
    llm_detok_t   d;
    const vocab_t  *v;

    utf8 = utf8_whole((const char *) data, size);

    for (int i = 0; i < n_vocabs; i++) {
        v = &vocabs[i];

        ids = tokenize(v, data, size,
                       LLM_TOK_PARSE_SPECIAL | LLM_TOK_ADD_BOS
                       | LLM_TOK_ADD_EOS, &n);
        free(ids);

        ids = tokenize(v, data, size, 0, &n);

        /* pieces are never longer than token texts, and each byte of
         * the text is in at most one token, or is spelled by one */
        cap = llm_tokenizer_max_piece(v->t) + 64;
        dec = malloc((size_t) n * cap + 1);
        stream = malloc(((size_t) n + 1) * cap);
        chunk = malloc(cap);
        if (dec == NULL || stream == NULL || chunk == NULL) {
            abort();
        }

        len = decode(v, ids, n, dec);

        all_good = 1;
        for (size_t j = 0; j < size; j++) {
            all_good &= v->good[data[j]];
        }

        if (v->spm && memmem(data, size, "\xe2\x96\x81", 3) != NULL) {
            all_good = 0;
        }

        if (all_good && (len != size || memcmp(dec, data, size) != 0)) {
            fprintf(stderr, "%s: %zu bytes decode to %zu others\n",
                    v->name, size, len);
            abort();
        }

        /* streamed: whole characters only */

        llm_detok_init(&d);
        w = 0;

        for (int j = 0; j <= n; j++) {
            k = j < n ? llm_detok_push(&d, v->t, ids[j], chunk, cap)
                      : llm_detok_flush(&d, chunk, cap);

            if (k > cap || !utf8_whole(chunk, k)) {
                fprintf(stderr, "%s: the detokenizer emitted a split or "
                        "invalid character\n", v->name);
                abort();
            }

            memcpy(stream + w, chunk, k);
            w += k;
        }

        /* SentencePiece's prefixed spaces are in the stream */
        if (utf8 && all_good && !v->spm
            && (w != size || memcmp(stream, data, size) != 0))
        {
            fprintf(stderr, "%s: the stream differs from the text\n",
                    v->name);
            abort();
        }

        free(dec);
        free(stream);
        free(chunk);
        free(ids);
    }

    return 0;
}


#else /* LLM_TOKENIZER_SEED_MAIN */


static int
write_seed(const char *dir, int n, const char *p, size_t len)
{
    char  path[4096];

    snprintf(path, sizeof(path), "%s/seed-%d", dir, n);

    return fuzz_seed_write(path, p, len, NULL, 0);
}


static void
dict_word(FILE *fp, const char *p, size_t len)
{
    fputc('"', fp);

    for (size_t i = 0; i < len; i++) {
        unsigned char  c = (unsigned char) p[i];

        if (c == '"' || c == '\\') {
            fputc('\\', fp);
            fputc(c, fp);

        } else if (c < 0x20 || c >= 0x7f) {
            fprintf(fp, "\\x%02X", c);

        } else {
            fputc(c, fp);
        }
    }

    fputs("\"\n", fp);
}


int
main(int argc, char **argv)
{
    int               n, type;
    char              path[4096], *buf, *s, *e;
    long              size;
    FILE             *fp, *dict;
    size_t            len, tlen;
    DIR              *d;
    llm_err_t         err = { 0 };
    const char       *text;
    struct dirent    *de;
    llm_tokenizer_t  *t;

    static const char *const  words[] = {
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", " ",
        "  ", "\t", "\n", "\r\n", "\n\n", "   \n", "333", "3333", "\xc2\xbd",
        "\xe2\x96\x81", "\xef\xbd\x9c", "\xe3\x80\x82", "\xe4\xb8\x80",
        "\xea\xb0\x80", "\xf0\x9f\xa6\x99", "\xe2\x80\x8d", "\xef\xb8\x8f",
        "\xc3\xb5", "\xff", "\xc3", NULL
    };

    if (argc != 4) {
        fprintf(stderr, "usage: %s FIXTURES/vocab CORPUS_DIR DICT\n",
                argv[0]);
        return 2;
    }

    dict = fopen(argv[3], "w");
    if (dict == NULL) {
        perror(argv[3]);
        return 1;
    }

    for (int i = 0; words[i] != NULL; i++) {
        dict_word(dict, words[i], strlen(words[i]));
    }

    n = 0;

    d = opendir(argv[1]);
    if (d == NULL) {
        fprintf(stderr, "%s: no vocabularies at %s\n", argv[0], argv[1]);
        fclose(dict);
        return 1;
    }

    while ((de = readdir(d)) != NULL) {
        len = strlen(de->d_name);

        /* the test strings; every vocabulary has the same ones, so one
         * file is enough */
        if (n == 0 && len > 9
            && strcmp(de->d_name + len - 9, ".gguf.inp") == 0)
        {
            snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);
            fp = fopen(path, "rb");
            if (fp == NULL) {
                continue;
            }

            fseek(fp, 0, SEEK_END);
            size = ftell(fp);
            fseek(fp, 0, SEEK_SET);
            buf = malloc((size_t) size + 1);
            if (buf == NULL || fread(buf, 1, (size_t) size, fp)
                               != (size_t) size)
            {
                free(buf);
                fclose(fp);
                continue;
            }

            buf[size] = '\0';
            fclose(fp);

            for (s = buf; (e = strstr(s, SEP)) != NULL;
                 s = e + strlen(SEP))
            {
                if (write_seed(argv[2], n, s, (size_t) (e - s)) != 0) {
                    return 1;
                }

                n++;
            }

            free(buf);
        }

        /* the special tokens of every vocabulary */
        if (len > 5 && strcmp(de->d_name + len - 5, ".gguf") == 0) {
            snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);

            if (llm_tokenizer_load(&t, path, &err) != LLM_OK) {
                fprintf(stderr, "%s\n", err.errstr);
                continue;
            }

            for (int32_t id = 0; id < llm_tokenizer_n_vocab(t); id++) {
                type = llm_tokenizer_token_type(t, id);
                if (type != LLM_TOKEN_CONTROL
                    && type != LLM_TOKEN_USER_DEFINED)
                {
                    continue;
                }

                text = llm_tokenizer_token_text(t, id, &tlen);
                if (tlen > 0 && tlen < 64) {
                    dict_word(dict, text, tlen);
                }
            }

            llm_tokenizer_free(t);
        }
    }

    closedir(d);

    if (fclose(dict) != 0) {
        perror(argv[3]);
        return 1;
    }

    printf("%d seeds in %s, dictionary %s\n", n, argv[2], argv[3]);
    return 0;
}


#endif /* LLM_TOKENIZER_SEED_MAIN */
