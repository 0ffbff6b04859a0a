/*
 * Copyright (C) ngx_llm developers
 *
 * Byte-level BPE (tokenizer.ggml.model "gpt2"), as GPT-2 defined it and
 * HF tokenizers and llama.cpp apply it to GGUF vocabularies:
 *
 *   1. the pre-tokenizer that tokenizer.ggml.pre names cuts the text into
 *      words: a list of regexes, each splitting every piece left by the
 *      previous one into its matches and the stretches between them
 *      (HF's Split with behaviour "Isolated");
 *   2. each byte of a word becomes one symbol, spelled as GPT-2's byte
 *      mapping spells it: printable Latin-1 bytes as themselves, the
 *      others (controls, space, 0x7f-0xa0, 0xad) as U+0100 onwards;
 *   3. the adjacent pair that tokenizer.ggml.merges lists first is merged,
 *      leftmost first on ties, until no listed pair remains;
 *   4. each symbol is a token.
 *
 * The regexes run on PCRE2 in UTF mode with Unicode properties; invalid
 * UTF-8 is allowed (PCRE2_MATCH_INVALID_UTF): no pattern matches it, so
 * it ends up in the stretches between matches and is tokenized by its
 * bytes like anything else.  Every byte string round-trips.
 *
 * Costs are linear in the text up to log factors: each regex scans each
 * piece once, and the merges of a word go through a binary heap over a
 * linked list of symbols, with the merge ranks in a hash table.
 */

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "llm_tokenizer_int.h"


/*
 * The pre-tokenizers' regexes.  They are the ones the models' HF
 * tokenizer.json files give (llama.cpp uses the same lists), rewritten
 * only where PCRE2 would read them differently or slowly; each rewrite
 * is noted.
 */

/* GPT-2 (encoder.py; HF ByteLevel with use_regex).  "\s+(?!\S)" takes
 * a run of whitespace but its last character when a word follows, so
 * that " ?\p{L}+" gives the word its space; PCRE2 has the look-ahead,
 * so this and the patterns below run as written (llama.cpp hand-codes
 * them for std::regex) */
#define LLM_RE_GPT2                                                         \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"      \
    "|\\s+(?!\\S)|\\s+"

/* Llama 3's (?i:'s|'t|'re|'ve|'m|'ll|'d), with the cases spelled out:
 * PCRE2's Unicode caseless matching would also take U+017F (long s)
 * for s, which neither HF nor llama.cpp does */
#define LLM_RE_APOS                                                         \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

/* Llama 3: numbers in groups of up to three digits */
#define LLM_RE_LLAMA3                                                       \
    LLM_RE_APOS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"                \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* Qwen 2: the same with single digits */
#define LLM_RE_QWEN2                                                        \
    LLM_RE_APOS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"                     \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* DeepSeek LLM: cased letters of an older Unicode, as listed in its
 * tokenizer.json (not \p{L}: scripts without case are left out) */
#define LLM_RE_DEEPSEEK_LETTERS                                             \
    "\\s?["                                                                 \
    "A-Za-z\\x{b5}\\x{c0}-\\x{d6}\\x{d8}-\\x{f6}\\x{f8}-\\x{1ba}"           \
    "\\x{1bc}-\\x{1bf}\\x{1c4}-\\x{293}\\x{295}-\\x{2af}\\x{370}-\\x{373}"  \
    "\\x{376}\\x{377}\\x{37b}-\\x{37d}\\x{37f}\\x{386}\\x{388}-\\x{38a}"    \
    "\\x{38c}\\x{38e}-\\x{3a1}\\x{3a3}-\\x{3f5}\\x{3f7}-\\x{481}"           \
    "\\x{48a}-\\x{52f}\\x{531}-\\x{556}\\x{10a0}-\\x{10c5}"                 \
    "\\x{13a0}-\\x{13f5}\\x{13f8}-\\x{13fd}\\x{1c90}-\\x{1cba}"             \
    "\\x{1cbd}-\\x{1cbf}\\x{1d00}-\\x{1d2b}\\x{1d6b}-\\x{1d77}"             \
    "\\x{1d79}-\\x{1d9a}\\x{1e00}-\\x{1f15}\\x{1f18}-\\x{1f1d}"             \
    "\\x{1f20}-\\x{1f45}\\x{1f48}-\\x{1f4d}\\x{1f50}-\\x{1f57}\\x{1f59}"    \
    "\\x{1f5b}\\x{1f5d}\\x{1f5f}-\\x{1f7d}\\x{1f80}-\\x{1fb4}"              \
    "\\x{1fb6}-\\x{1fbc}\\x{1fbe}\\x{1fc2}-\\x{1fc4}\\x{1fc6}-\\x{1fcc}"    \
    "\\x{1fd0}-\\x{1fd3}\\x{1fd6}-\\x{1fdb}\\x{1fe0}-\\x{1fec}"             \
    "\\x{1ff2}-\\x{1ff4}\\x{1ff6}-\\x{1ffc}\\x{2102}\\x{2107}"              \
    "\\x{210a}-\\x{2113}\\x{2115}\\x{2119}-\\x{211d}\\x{2124}\\x{2126}"     \
    "\\x{2128}\\x{212a}-\\x{212d}\\x{212f}-\\x{2134}\\x{2139}"              \
    "\\x{213c}-\\x{213f}\\x{2145}-\\x{2149}\\x{214e}\\x{2183}\\x{2184}"     \
    "\\x{2c00}-\\x{2c7b}\\x{2c7e}-\\x{2ce4}\\x{2ceb}-\\x{2cee}\\x{2cf2}"    \
    "\\x{2cf3}\\x{a640}-\\x{a66d}\\x{a680}-\\x{a69b}\\x{a722}-\\x{a76f}"    \
    "\\x{a771}-\\x{a787}\\x{a78b}-\\x{a78e}\\x{ab70}-\\x{abbf}"             \
    "\\x{fb00}-\\x{fb06}\\x{fb13}-\\x{fb17}\\x{ff21}-\\x{ff3a}"             \
    "\\x{ff41}-\\x{ff5a}\\x{10400}-\\x{1044f}\\x{104b0}-\\x{104d3}"         \
    "\\x{104d8}-\\x{104fb}\\x{10c80}-\\x{10cb2}\\x{10cc0}-\\x{10cf2}"       \
    "\\x{118a0}-\\x{118df}\\x{1e900}-\\x{1e943}"                            \
    "]+"

/* ASCII punctuation and symbols with their fullwidth forms, curly
 * quotes, the ideographic space, comma and full stop */
#define LLM_RE_DEEPSEEK_PUNCT                                               \
    "\\s?[!-/:-~\\x{ff01}-\\x{ff0f}\\x{ff1a}-\\x{ff5e}\\x{2018}-\\x{201f}"  \
    "\\x{3000}-\\x{3002}]+"

/* CJK ideographs, U+0800 up to them, and Hangul, as listed */
#define LLM_RE_DEEPSEEK_CJK                                                 \
    "[\\x{4e00}-\\x{9fa5}\\x{800}-\\x{4e00}\\x{ac00}-\\x{d7ff}]+"

/* "\s+$" finds trailing whitespace; the look-behind only makes PCRE2
 * give up at once inside a run, where "\s+$" alone rescans the run
 * from every position and still finds the same match: 50 KB of spaces
 * before a CJK character took a minute in PCRE2's interpreter (without
 * JIT), 5 ms with the look-behind */
#define LLM_RE_TRAILING_SPACE  "(?<!\\s)\\s+$"


typedef struct {
    const char  *re[LLM_PRE_MAX_RE + 1];    /* NULL-terminated */
} llm_pre_set_t;


enum {
    LLM_PRE_DEFAULT = 0,
    LLM_PRE_GPT2,
    LLM_PRE_LLAMA3,
    LLM_PRE_QWEN2,
    LLM_PRE_DEEPSEEK_LLM,
    LLM_PRE_DEEPSEEK_CODER,
    LLM_PRE_FALCON,
    LLM_PRE_STARCODER
};


static const llm_pre_set_t  llm_pre_sets[] = {

    /* LLM_PRE_DEFAULT: llama.cpp's for a byte-level vocabulary that
     * names no pre-tokenizer */
    { { "[\\p{P}\\$\\+<=>\\^~\\|]+", LLM_RE_GPT2, "\\p{N}+",
        "[0-9][0-9][0-9]", NULL } },

    /* LLM_PRE_GPT2 */
    { { LLM_RE_GPT2, NULL } },

    /* LLM_PRE_LLAMA3 */
    { { LLM_RE_LLAMA3, NULL } },

    /* LLM_PRE_QWEN2 */
    { { LLM_RE_QWEN2, NULL } },

    /* LLM_PRE_DEEPSEEK_LLM */
    { { "[\\r\\n]", LLM_RE_DEEPSEEK_LETTERS, LLM_RE_DEEPSEEK_PUNCT,
        LLM_RE_TRAILING_SPACE, LLM_RE_DEEPSEEK_CJK, "\\p{N}+", NULL } },

    /* LLM_PRE_DEEPSEEK_CODER */
    { { "[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", LLM_RE_DEEPSEEK_CJK,
        "\\p{N}", NULL } },

    /* LLM_PRE_FALCON: punctuation runs first, then GPT-2's split, then
     * digits in threes */
    { { "[\\p{P}\\$\\+<=>\\^~\\|`]+", LLM_RE_GPT2, "[0-9][0-9][0-9]",
        NULL } },

    /* LLM_PRE_STARCODER: single digits, then GPT-2's split */
    { { "\\p{N}", LLM_RE_GPT2, NULL } },
};


#define LLM_PRE_IGNORE_MERGES  0x1
#define LLM_PRE_ADD_BOS        0x2


/* the names tokenizer.ggml.pre uses (llama.cpp's convert script writes
 * them), and the regexes each stands for */
static const struct {
    const char  *name;
    int          set;
    int          flags;
} llm_pre_names[] = {
    { "default",           LLM_PRE_DEFAULT,        0 },
    { "gpt-2",             LLM_PRE_GPT2,           0 },
    { "gpt-neox",          LLM_PRE_GPT2,           0 },
    { "mpt",               LLM_PRE_GPT2,           0 },
    { "olmo",              LLM_PRE_GPT2,           0 },
    { "phi-2",             LLM_PRE_GPT2,           0 },
    { "jais",              LLM_PRE_GPT2,           0 },
    { "roberta-bpe",       LLM_PRE_GPT2,           0 },
    { "llama-bpe",         LLM_PRE_LLAMA3,
      LLM_PRE_IGNORE_MERGES | LLM_PRE_ADD_BOS },
    { "llama3",            LLM_PRE_LLAMA3,
      LLM_PRE_IGNORE_MERGES | LLM_PRE_ADD_BOS },
    { "llama-v3",          LLM_PRE_LLAMA3,
      LLM_PRE_IGNORE_MERGES | LLM_PRE_ADD_BOS },
    { "falcon3",           LLM_PRE_LLAMA3,
      LLM_PRE_IGNORE_MERGES | LLM_PRE_ADD_BOS },
    { "dbrx",              LLM_PRE_LLAMA3,         0 },
    { "smaug-bpe",         LLM_PRE_LLAMA3,         0 },
    { "qwen2",             LLM_PRE_QWEN2,          0 },
    { "stablelm2",         LLM_PRE_QWEN2,          0 },
    { "deepseek-r1-qwen",  LLM_PRE_QWEN2,          0 },
    { "deepseek-llm",      LLM_PRE_DEEPSEEK_LLM,   0 },
    { "deepseek-coder",    LLM_PRE_DEEPSEEK_CODER, 0 },
    { "falcon",            LLM_PRE_FALCON,         0 },
    { "starcoder",         LLM_PRE_STARCODER,      0 },
    { "refact",            LLM_PRE_STARCODER,      0 },
    { "command-r",         LLM_PRE_STARCODER,      0 },
    { "smollm",            LLM_PRE_STARCODER,      0 },
    { "codeshell",         LLM_PRE_STARCODER,      0 },
};


/* a symbol of a word being merged: a run of the mapped word's bytes */
typedef struct {
    uint32_t     off;        /* in the mapped word */
    uint32_t     len;        /* 0 once merged into its left neighbour */
    int32_t      id;         /* the token it spells, -1 if none */
    int32_t      prev;
    int32_t      next;
} llm_bpe_sym_t;


/* a candidate merge: the pair (left, left's next) as it was pushed */
typedef struct {
    int32_t      rank;
    int32_t      left;
    int32_t      right;
    int32_t      left_id;
    int32_t      right_id;
    int32_t      id;
} llm_bpe_pair_t;


/* scratch of one llm_bpe_fragment() call, sized by the fragment */
typedef struct {
    uint32_t           *pieces;      /* (off, len) pairs, 2 * (len + 1) */
    uint32_t           *next;        /* the same for the next regex */
    char               *word;        /* the mapped word, 2 * len */
    llm_bpe_sym_t      *syms;        /* len */
    llm_bpe_pair_t     *heap;        /* 3 * len */
    size_t              n_heap;
    pcre2_match_data   *md;
} llm_bpe_work_t;


static void llm_bpe_tables(void);
static int llm_bpe_merges(llm_tokenizer_t *t, const llm_gguf_t *g,
    llm_err_t *err);
static const llm_merge_t *llm_bpe_merge_find(const llm_tokenizer_t *t,
    int32_t left, int32_t right);
static int llm_bpe_split(const llm_tokenizer_t *t, pcre2_code *re,
    const char *text, llm_bpe_work_t *w, size_t *n_pieces,
    llm_err_t *err);
static void llm_bpe_word(const llm_tokenizer_t *t, llm_bpe_work_t *w,
    const unsigned char *s, size_t n, llm_tokout_t *o);
static void llm_bpe_push(const llm_tokenizer_t *t, llm_bpe_work_t *w,
    int32_t left);
static llm_bpe_pair_t llm_bpe_pop(llm_bpe_work_t *w);
static int llm_bpe_before(const llm_bpe_pair_t *a, const llm_bpe_pair_t *b);


/* GPT-2's byte mapping, built once: each byte's code point spelled in
 * UTF-8 (at most two bytes, since the code points stay below U+0144),
 * and the way back */
#define LLM_BPE_CP_MAX  0x144

static char            llm_byte_utf8[256][2];
static uint8_t         llm_byte_utf8_len[256];
static int16_t         llm_cp_byte[LLM_BPE_CP_MAX];
static pthread_once_t  llm_bpe_once = PTHREAD_ONCE_INIT;


int
llm_bpe_pre(llm_tokenizer_t *t, const char *name, size_t len,
    const char *path, llm_err_t *err)
{
    for (size_t i = 0; i < sizeof(llm_pre_names) / sizeof(llm_pre_names[0]);
         i++)
    {
        if (strlen(llm_pre_names[i].name) != len
            || memcmp(llm_pre_names[i].name, name, len) != 0)
        {
            continue;
        }

        t->pre_set = llm_pre_names[i].set;
        t->ignore_merges = (llm_pre_names[i].flags
                            & LLM_PRE_IGNORE_MERGES) != 0;
        t->add_bos = (llm_pre_names[i].flags & LLM_PRE_ADD_BOS) != 0;
        memcpy(t->pre, name, len);
        t->pre[len] = '\0';

        return LLM_OK;
    }

    return llm_err_set(err, LLM_EUNSUPPORTED,
                       "%s: pre-tokenizer '%.*s' (tokenizer.ggml.pre) is "
                       "not supported", path, (int) (len > 64 ? 64 : len),
                       name);
}


int
llm_bpe_init(llm_tokenizer_t *t, const llm_gguf_t *g, llm_err_t *err)
{
    int                 code;
    char                msg[128];
    PCRE2_SIZE          at;
    const char         *re;
    const llm_pre_set_t  *set;

    pthread_once(&llm_bpe_once, llm_bpe_tables);

    set = &llm_pre_sets[t->pre_set];

    for (int i = 0; set->re[i] != NULL; i++) {
        re = set->re[i];

        t->re[i] = pcre2_compile((PCRE2_SPTR) re, PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP
                                 | PCRE2_MATCH_INVALID_UTF
                                 | PCRE2_DOLLAR_ENDONLY,
                                 &code, &at, NULL);
        if (t->re[i] == NULL) {
            pcre2_get_error_message(code, (PCRE2_UCHAR *) msg, sizeof(msg));
            return llm_err_set(err, LLM_EINVAL, "pre-tokenizer '%s': regex "
                               "%d at %zu: %s", t->pre, i, (size_t) at,
                               msg);
        }

        t->n_re = i + 1;

        /* without JIT (not built in, or no executable memory) the
         * interpreter gives the same matches, only slower */
        (void) pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE);
    }

    for (int b = 0; b < 256; b++) {
        t->byte_tok[b] = llm_tok_text_to_id(t, llm_byte_utf8[b],
                                            llm_byte_utf8_len[b]);
    }

    return llm_bpe_merges(t, g, err);
}


void
llm_bpe_free(llm_tokenizer_t *t)
{
    for (int i = 0; i < t->n_re; i++) {
        pcre2_code_free(t->re[i]);
    }

    t->n_re = 0;
    free(t->merges);
    t->merges = NULL;
}


/*
 * Bytes that print as a visible Latin-1 character keep it as their code
 * point; the other 68 get U+0100, U+0101, ... in byte order.
 */
static void
llm_bpe_tables(void)
{
    uint32_t  cp, next;

    next = 0x100;

    for (int i = 0; i < LLM_BPE_CP_MAX; i++) {
        llm_cp_byte[i] = -1;
    }

    for (int b = 0; b < 256; b++) {
        if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac)
            || b >= 0xae)
        {
            cp = (uint32_t) b;

        } else {
            cp = next++;
        }

        llm_cp_byte[cp] = (int16_t) b;

        if (cp < 0x80) {
            llm_byte_utf8[b][0] = (char) cp;
            llm_byte_utf8_len[b] = 1;

        } else {
            llm_byte_utf8[b][0] = (char) (0xc0 | (cp >> 6));
            llm_byte_utf8[b][1] = (char) (0x80 | (cp & 0x3f));
            llm_byte_utf8_len[b] = 2;
        }
    }
}


size_t
llm_bpe_unmap(const char *text, size_t len, char *out)
{
    size_t                w, i, n;
    uint32_t              cp;
    const unsigned char  *s;

    pthread_once(&llm_bpe_once, llm_bpe_tables);

    s = (const unsigned char *) text;
    w = 0;

    for (i = 0; i < len; i += n) {

        /* the mapping's code points take one or two bytes */

        if (s[i] < 0x80) {
            cp = s[i];
            n = 1;

        } else if (s[i] >= 0xc2 && s[i] <= 0xdf && i + 1 < len
                   && (s[i + 1] & 0xc0) == 0x80)
        {
            cp = ((uint32_t) (s[i] & 0x1f) << 6) | (s[i + 1] & 0x3f);
            n = 2;

        } else {
            cp = LLM_BPE_CP_MAX;
            n = 1;
        }

        if (cp < LLM_BPE_CP_MAX && llm_cp_byte[cp] >= 0) {
            out[w++] = (char) llm_cp_byte[cp];
            continue;
        }

        /* not part of the mapping: a vocabulary may hold such texts;
         * they print as they are spelled */
        memcpy(out + w, s + i, n);
        w += n;
    }

    return w;
}


/* reads tokenizer.ggml.merges into a table of (left id, right id) ->
 * rank and merged id */
static int
llm_bpe_merges(llm_tokenizer_t *t, const llm_gguf_t *g, llm_err_t *err)
{
    int                   rc;
    char                 *buf;
    size_t                size, len, sp, h, cap;
    int32_t               a, b, c;
    uint64_t              key;
    const char           *s;
    const llm_gguf_kv_t  *kv;

    rc = llm_gguf_get_arr(g, "tokenizer.ggml.merges", LLM_GGUF_STRING, &kv,
                          err);
    if (rc == LLM_ERR) {
        return LLM_ERR;
    }

    if (rc == LLM_GGUF_MISSING) {
        return llm_err_set(err, LLM_EFORMAT, "%s: a gpt2 tokenizer needs "
                           "tokenizer.ggml.merges", llm_gguf_path(g));
    }

    if (kv->arr_n > INT32_MAX / 4) {
        return llm_err_set(err, LLM_EFORMAT, "%s: %llu merges is too many",
                           llm_gguf_path(g),
                           (unsigned long long) kv->arr_n);
    }

    size = 16;
    while (size < 2 * (size_t) kv->arr_n) {
        size *= 2;
    }

    t->merges = malloc(size * sizeof(llm_merge_t));
    if (t->merges == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    for (size_t i = 0; i < size; i++) {
        t->merges[i].key = UINT64_MAX;
    }

    t->merge_mask = size - 1;

    cap = 256;
    buf = malloc(cap);
    if (buf == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "out of memory");
    }

    for (uint64_t i = 0; i < kv->arr_n; i++) {
        s = llm_gguf_arr_str(kv, i, &len);

        /* "left right": the first space after the first byte, so that a
         * left part may itself be a space */
        sp = 1;
        while (sp < len && s[sp] != ' ') {
            sp++;
        }

        if (sp >= len) {
            free(buf);
            return llm_err_set(err, LLM_EFORMAT, "%s: merge %llu '%.*s' "
                               "is not two tokens", llm_gguf_path(g),
                               (unsigned long long) i,
                               (int) (len > 64 ? 64 : len), s);
        }

        if (len > cap) {
            char  *nb;

            cap = len;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                return llm_err_set(err, LLM_ENOMEM, "out of memory");
            }

            buf = nb;
        }

        memcpy(buf, s, sp);
        memcpy(buf + sp, s + sp + 1, len - sp - 1);

        a = llm_tok_text_to_id(t, s, sp);
        b = llm_tok_text_to_id(t, s + sp + 1, len - sp - 1);
        c = llm_tok_text_to_id(t, buf, len - 1);

        /* a merge whose parts or result are not tokens could never
         * produce a token; HF refuses such files, llama.cpp carries the
         * text along: either way no real vocabulary has them */
        if (a < 0 || b < 0 || c < 0) {
            continue;
        }

        key = (uint64_t) (uint32_t) a << 32 | (uint32_t) b;
        h = (size_t) ((key * 0x9e3779b97f4a7c15ULL) >> 20) & t->merge_mask;

        while (t->merges[h].key != UINT64_MAX && t->merges[h].key != key) {
            h = (h + 1) & t->merge_mask;
        }

        /* listed twice: the first (best) rank stands */
        if (t->merges[h].key == key) {
            continue;
        }

        t->merges[h].key = key;
        t->merges[h].rank = (int32_t) i;
        t->merges[h].id = c;
    }

    free(buf);
    return LLM_OK;
}


static const llm_merge_t *
llm_bpe_merge_find(const llm_tokenizer_t *t, int32_t left, int32_t right)
{
    size_t    h;
    uint64_t  key;

    key = (uint64_t) (uint32_t) left << 32 | (uint32_t) right;
    h = (size_t) ((key * 0x9e3779b97f4a7c15ULL) >> 20) & t->merge_mask;

    while (t->merges[h].key != UINT64_MAX) {
        if (t->merges[h].key == key) {
            return &t->merges[h];
        }

        h = (h + 1) & t->merge_mask;
    }

    return NULL;
}


int
llm_bpe_fragment(const llm_tokenizer_t *t, const char *text, size_t len,
    llm_tokout_t *o, llm_err_t *err)
{
    int              rc;
    size_t           n_pieces, n;
    llm_bpe_work_t   w;

    if (len == 0) {
        return LLM_OK;
    }

    memset(&w, 0, sizeof(w));

    if (llm_mul_size(len + 1, 2 * sizeof(uint32_t), &n) != 0) {
        return llm_err_set(err, LLM_EINVAL, "text too long");
    }

    w.pieces = malloc(n);
    w.next = malloc(n);
    w.word = malloc(2 * len);
    w.syms = malloc(len * sizeof(llm_bpe_sym_t));
    w.heap = malloc(3 * len * sizeof(llm_bpe_pair_t));
    w.md = pcre2_match_data_create(1, NULL);

    rc = LLM_ERR;

    if (w.pieces == NULL || w.next == NULL || w.word == NULL
        || w.syms == NULL || w.heap == NULL || w.md == NULL)
    {
        llm_err_set(err, LLM_ENOMEM, "out of memory");
        goto done;
    }

    /* the fragment is one piece; each regex splits every piece */

    w.pieces[0] = 0;
    w.pieces[1] = (uint32_t) len;
    n_pieces = 1;

    for (int i = 0; i < t->n_re; i++) {
        if (llm_bpe_split(t, t->re[i], text, &w, &n_pieces, err)
            != LLM_OK)
        {
            goto done;
        }
    }

    for (size_t i = 0; i < n_pieces; i++) {
        llm_bpe_word(t, &w, (const unsigned char *) text + w.pieces[2 * i],
                     w.pieces[2 * i + 1], o);
    }

    rc = LLM_OK;

done:

    free(w.pieces);
    free(w.next);
    free(w.word);
    free(w.syms);
    free(w.heap);
    pcre2_match_data_free(w.md);

    return rc;
}


/* replaces each piece by its matches and the non-empty stretches
 * between them, in order; pieces never grow in number past the bytes */
static int
llm_bpe_split(const llm_tokenizer_t *t, pcre2_code *re, const char *text,
    llm_bpe_work_t *w, size_t *n_pieces, llm_err_t *err)
{
    int          rc;
    char         msg[128];
    size_t       n, pos, end, ms, me;
    uint32_t    *tmp;
    PCRE2_SIZE  *ov;

    n = 0;
    ov = pcre2_get_ovector_pointer(w->md);

    for (size_t i = 0; i < *n_pieces; i++) {
        const char  *s = text + w->pieces[2 * i];

        end = w->pieces[2 * i + 1];
        pos = 0;

        /* the piece is the whole subject: "$" and look-arounds see its
         * ends, as they do in HF and llama.cpp */

        while (pos < end) {
            rc = pcre2_match(re, (PCRE2_SPTR) s, end, pos, 0, w->md, NULL);

            if (rc == PCRE2_ERROR_NOMATCH) {
                break;
            }

            if (rc < 0) {
                pcre2_get_error_message(rc, (PCRE2_UCHAR *) msg,
                                        sizeof(msg));
                return llm_err_set(err, LLM_EINVAL, "pre-tokenizer '%s': "
                                   "%s", t->pre, msg);
            }

            ms = ov[0];
            me = ov[1];

            /* no pattern here matches the empty string; if one did, the
             * rest of the piece stays as it is */
            if (me <= ms || ms < pos || me > end) {
                break;
            }

            if (ms > pos) {
                w->next[2 * n] = w->pieces[2 * i] + (uint32_t) pos;
                w->next[2 * n + 1] = (uint32_t) (ms - pos);
                n++;
            }

            w->next[2 * n] = w->pieces[2 * i] + (uint32_t) ms;
            w->next[2 * n + 1] = (uint32_t) (me - ms);
            n++;

            pos = me;
        }

        if (pos < end) {
            w->next[2 * n] = w->pieces[2 * i] + (uint32_t) pos;
            w->next[2 * n + 1] = (uint32_t) (end - pos);
            n++;
        }
    }

    tmp = w->pieces;
    w->pieces = w->next;
    w->next = tmp;
    *n_pieces = n;

    return LLM_OK;
}


static void
llm_bpe_word(const llm_tokenizer_t *t, llm_bpe_work_t *w,
    const unsigned char *s, size_t n, llm_tokout_t *o)
{
    size_t           wl;
    int32_t          id;
    llm_bpe_sym_t   *l, *r;
    llm_bpe_pair_t   p;

    /* the word in mapped characters, one symbol per byte */

    wl = 0;

    for (size_t i = 0; i < n; i++) {
        memcpy(w->word + wl, llm_byte_utf8[s[i]], llm_byte_utf8_len[s[i]]);

        w->syms[i].off = (uint32_t) wl;
        w->syms[i].len = llm_byte_utf8_len[s[i]];
        w->syms[i].id = t->byte_tok[s[i]];
        w->syms[i].prev = (int32_t) i - 1;
        w->syms[i].next = i + 1 < n ? (int32_t) i + 1 : -1;

        wl += llm_byte_utf8_len[s[i]];
    }

    if (t->ignore_merges && n > 1) {
        id = llm_tok_text_to_id(t, w->word, wl);
        if (id >= 0) {
            llm_tokout_push(o, id);
            return;
        }
    }

    w->n_heap = 0;

    for (size_t i = 0; i + 1 < n; i++) {
        llm_bpe_push(t, w, (int32_t) i);
    }

    while (w->n_heap > 0) {
        p = llm_bpe_pop(w);
        l = &w->syms[p.left];
        r = &w->syms[p.right];

        /* stale: a side was merged since the pair was pushed */
        if (l->len == 0 || r->len == 0 || l->next != p.right
            || l->id != p.left_id || r->id != p.right_id)
        {
            continue;
        }

        l->len += r->len;
        l->id = p.id;
        l->next = r->next;
        r->len = 0;

        if (r->next >= 0) {
            w->syms[r->next].prev = p.left;
        }

        if (l->prev >= 0) {
            llm_bpe_push(t, w, l->prev);
        }

        llm_bpe_push(t, w, p.left);
    }

    /* only a byte whose mapped character the vocabulary lacks is left
     * without a token (Falcon's and StarCoder's lack a few that UTF-8
     * text rarely or never holds): it is dropped, as HF and llama.cpp
     * drop it.  Their unknown token is often end-of-text, which would
     * be worse */

    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = w->syms[i].next) {
        if (w->syms[i].id >= 0) {
            llm_tokout_push(o, w->syms[i].id);
        }
    }
}


/* pushes the pair of symbol left and its right neighbour, if the
 * merges list it */
static void
llm_bpe_push(const llm_tokenizer_t *t, llm_bpe_work_t *w, int32_t left)
{
    size_t                i, parent;
    int32_t               right;
    llm_bpe_pair_t        p, tmp;
    const llm_merge_t    *m;

    right = w->syms[left].next;

    if (right < 0 || w->syms[left].id < 0 || w->syms[right].id < 0) {
        return;
    }

    m = llm_bpe_merge_find(t, w->syms[left].id, w->syms[right].id);
    if (m == NULL) {
        return;
    }

    p.rank = m->rank;
    p.left = left;
    p.right = right;
    p.left_id = w->syms[left].id;
    p.right_id = w->syms[right].id;
    p.id = m->id;

    i = w->n_heap++;
    w->heap[i] = p;

    while (i > 0) {
        parent = (i - 1) / 2;

        if (!llm_bpe_before(&w->heap[i], &w->heap[parent])) {
            break;
        }

        tmp = w->heap[parent];
        w->heap[parent] = w->heap[i];
        w->heap[i] = tmp;
        i = parent;
    }
}


static llm_bpe_pair_t
llm_bpe_pop(llm_bpe_work_t *w)
{
    size_t          i, l, r, best, n;
    llm_bpe_pair_t  top, tmp;

    top = w->heap[0];
    n = --w->n_heap;
    w->heap[0] = w->heap[n];

    i = 0;
    for ( ;; ) {
        l = 2 * i + 1;
        r = l + 1;
        best = i;

        if (l < n && llm_bpe_before(&w->heap[l], &w->heap[best])) {
            best = l;
        }

        if (r < n && llm_bpe_before(&w->heap[r], &w->heap[best])) {
            best = r;
        }

        if (best == i) {
            break;
        }

        tmp = w->heap[best];
        w->heap[best] = w->heap[i];
        w->heap[i] = tmp;
        i = best;
    }

    return top;
}


/* the lower rank merges first; on a tie (the same merge twice), the
 * leftmost */
static int
llm_bpe_before(const llm_bpe_pair_t *a, const llm_bpe_pair_t *b)
{
    if (a->rank != b->rank) {
        return a->rank < b->rank;
    }

    return a->left < b->left;
}
