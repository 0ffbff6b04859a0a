/*
 * Copyright (C) ngx_llm developers
 *
 * Template values: errors and limits, buffers, UTF-8, Python's str(),
 * repr() and json.dumps(), equality and ordering, lists, dicts, frames.
 * Values live in the render arena; nothing here frees.
 */

#define _GNU_SOURCE             /* memmem() */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm_template_int.h"


static void *llm_tpl_raw(llm_tpl_render_t *r, size_t size);
static int llm_tpl_add_qstr(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t s);
static int llm_tpl_json_str(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t s, int ensure_ascii);
static int llm_tpl_json_key(llm_tpl_render_t *r, const llm_tpl_val_t *k,
    llm_tpl_val_t *out);
static int llm_tpl_json_newline(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_str_t *indent, int level);
static int llm_tpl_key_cmp(llm_tpl_render_t *r, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, int *cmp, void *ctx);
static int llm_tpl_hashable(llm_tpl_render_t *r, const llm_tpl_val_t *k);


int
llm_tpl_fail(llm_tpl_render_t *r, const char *fmt, ...)
{
    va_list  ap;

    /* the first error is the one reported */
    if (!r->failed) {
        r->failed = 1;
        va_start(ap, fmt);
        vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
        va_end(ap);
    }

    return LLM_ERR;
}


int
llm_tpl_steps(llm_tpl_render_t *r, uint64_t n)
{
    r->steps += n;

    if (r->steps > r->max_steps) {
        return llm_tpl_fail(r, "template render exceeds %llu steps",
                            (unsigned long long) r->max_steps);
    }

    return LLM_OK;
}


static void *
llm_tpl_raw(llm_tpl_render_t *r, size_t size)
{
    void  *p;

    p = llm_tpl_alloc(&r->arena, size);
    if (p == NULL) {
        if (r->arena.oom) {
            r->nomem = 1;
            llm_tpl_fail(r, "out of memory");

        } else {
            llm_tpl_fail(r, "template render needs more than %zu bytes"
                         " of memory", r->arena.limit);
        }
    }

    return p;
}


void *
llm_tpl_ralloc(llm_tpl_render_t *r, size_t n, size_t size)
{
    void    *p;
    size_t   total;

    if (llm_mul_size(n, size, &total) != 0) {
        llm_tpl_fail(r, "template render needs more than %zu bytes"
                     " of memory", r->arena.limit);
        return NULL;
    }

    p = llm_tpl_raw(r, total);
    if (p != NULL) {
        memset(p, 0, total);
    }

    return p;
}


int
llm_tpl_strdup(llm_tpl_render_t *r, const char *p, size_t len,
    llm_tpl_val_t *out)
{
    char  *s;

    s = llm_tpl_raw(r, len + 1);
    if (s == NULL) {
        return LLM_ERR;
    }

    if (len) {
        memcpy(s, p, len);
    }
    s[len] = '\0';

    *out = llm_tpl_v_str(s, len);
    return LLM_OK;
}


/*
 * An undefined value remembers why it is undefined; the message is the
 * error when the value is later used where jinja2 would raise.
 */
llm_tpl_val_t
llm_tpl_undef(llm_tpl_render_t *r, const char *fmt, ...)
{
    int             n;
    char           *p, tmp[LLM_ERRSTR_MAX];
    va_list         ap;
    llm_tpl_val_t   v;

    v.type = LLM_TPL_UNDEF;
    v.u.s.p = NULL;
    v.u.s.len = 0;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);

    if (n <= 0) {
        return v;
    }

    if ((size_t) n >= sizeof(tmp)) {
        n = sizeof(tmp) - 1;
    }

    /* no error on failure: the message is only a hint */
    p = llm_tpl_alloc(&r->arena, n);
    if (p != NULL) {
        memcpy(p, tmp, n);
        v.u.s.p = p;
        v.u.s.len = n;
    }

    return v;
}


int
llm_tpl_fail_undef(llm_tpl_render_t *r, const llm_tpl_val_t *v)
{
    if (v->type == LLM_TPL_UNDEF && v->u.s.len != 0) {
        return llm_tpl_fail(r, "%.*s", LLM_TPL_PREC(v->u.s.len), v->u.s.p);
    }

    return llm_tpl_fail(r, "value is undefined");
}


/* ---- buffers ---------------------------------------------------------- */

int
llm_tpl_buf_add(llm_tpl_render_t *r, llm_tpl_buf_t *b, const char *p,
    size_t len)
{
    char    *np;
    size_t   total, cap;

    if (len == 0) {
        return LLM_OK;
    }

    if (llm_add_size(b->len, len, &total) != 0 || total > r->max_output) {
        return llm_tpl_fail(r, "template output exceeds %zu bytes",
                            r->max_output);
    }

    if (total > b->cap) {
        cap = b->cap ? b->cap : 64;

        while (cap < total) {
            if (cap > SIZE_MAX / 4) {
                cap = total;
                break;
            }
            cap *= 2;
        }

        /* the old block stays in the arena: at most doubles the cost */
        np = llm_tpl_raw(r, cap);
        if (np == NULL) {
            return LLM_ERR;
        }

        if (b->len) {
            memcpy(np, b->p, b->len);
        }

        b->p = np;
        b->cap = cap;
    }

    memcpy(b->p + b->len, p, len);
    b->len = total;

    return LLM_OK;
}


int
llm_tpl_buf_addc(llm_tpl_render_t *r, llm_tpl_buf_t *b, char c)
{
    return llm_tpl_buf_add(r, b, &c, 1);
}


int
llm_tpl_buf_adds(llm_tpl_render_t *r, llm_tpl_buf_t *b, const char *s)
{
    return llm_tpl_buf_add(r, b, s, strlen(s));
}


int
llm_tpl_buf_addcp(llm_tpl_render_t *r, llm_tpl_buf_t *b, uint32_t cp)
{
    char  tmp[4];

    return llm_tpl_buf_add(r, b, tmp, llm_tpl_utf8_enc(cp, tmp));
}


llm_tpl_val_t
llm_tpl_buf_val(llm_tpl_buf_t *b)
{
    if (b->p == NULL) {
        return llm_tpl_v_str("", 0);
    }

    return llm_tpl_v_str(b->p, b->len);
}


/* ---- UTF-8 and characters --------------------------------------------- */

size_t
llm_tpl_utf8_dec(const char *s, size_t len, uint32_t *cp)
{
    size_t                n, i;
    uint32_t              c;
    const unsigned char  *p;

    p = (const unsigned char *) s;

    if (len == 0) {
        *cp = 0;
        return 0;
    }

    c = p[0];

    if (c < 0x80) {
        *cp = c;
        return 1;
    }

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        c &= 0x1f;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        c &= 0x0f;

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        c &= 0x07;

    } else {
        goto bad;
    }

    if (n > len) {
        goto bad;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            goto bad;
        }
        c = (c << 6) | (p[i] & 0x3f);
    }

    if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff))
        || (c >= 0xd800 && c <= 0xdfff))
    {
        goto bad;
    }

    *cp = c;
    return n;

bad:

    /* a byte that is not UTF-8 stays one character and round-trips */
    *cp = LLM_TPL_BADCP + p[0];
    return 1;
}


size_t
llm_tpl_utf8_enc(uint32_t cp, char *out)
{
    unsigned char  *p;

    p = (unsigned char *) out;

    if (cp >= LLM_TPL_BADCP) {
        p[0] = (unsigned char) (cp - LLM_TPL_BADCP);
        return 1;
    }

    if (cp < 0x80) {
        p[0] = (unsigned char) cp;
        return 1;
    }

    if (cp < 0x800) {
        p[0] = (unsigned char) (0xc0 | (cp >> 6));
        p[1] = (unsigned char) (0x80 | (cp & 0x3f));
        return 2;
    }

    if (cp < 0x10000) {
        p[0] = (unsigned char) (0xe0 | (cp >> 12));
        p[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        p[2] = (unsigned char) (0x80 | (cp & 0x3f));
        return 3;
    }

    p[0] = (unsigned char) (0xf0 | (cp >> 18));
    p[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
    p[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
    p[3] = (unsigned char) (0x80 | (cp & 0x3f));
    return 4;
}


size_t
llm_tpl_utf8_len(const char *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp;

    n = 0;

    for (i = 0; i < len; i += k) {
        if ((unsigned char) p[i] < 0x80) {
            k = 1;

        } else {
            k = llm_tpl_utf8_dec(p + i, len - i, &cp);
        }
        n++;
    }

    return n;
}


/* Python's str.isspace() */
int
llm_tpl_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20)
           || c == 0x85 || c == 0xa0 || c == 0x1680
           || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029
           || c == 0x202f || c == 0x205f || c == 0x3000;
}


/*
 * Case mapping covers ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic,
 * Armenian and fullwidth Latin: the scripts chat templates and their
 * messages case-convert in practice.
 */
uint32_t
llm_tpl_cp_upper(uint32_t c)
{
    if (c < 0x80) {
        return (c >= 'a' && c <= 'z') ? c - 32 : c;
    }

    if (c >= 0xe0 && c <= 0xfe && c != 0xf7) {
        return c - 32;
    }

    if (c == 0xff) {
        return 0x178;
    }

    if (c == 0xb5) {
        return 0x39c;
    }

    if (c >= 0x100 && c <= 0x17f) {
        if (c <= 0x12f || (c >= 0x132 && c <= 0x137)
            || (c >= 0x14a && c <= 0x177))
        {
            return c & ~(uint32_t) 1;
        }

        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) {
            return (c & 1) ? c : c - 1;
        }

        if (c == 0x131) {
            return 'I';
        }

        if (c == 0x17f) {
            return 'S';
        }

        return c;
    }

    if (c >= 0x3b1 && c <= 0x3c9) {
        return c == 0x3c2 ? 0x3a3 : c - 32;
    }

    if (c == 0x3ac) {
        return 0x386;
    }

    if (c >= 0x3ad && c <= 0x3af) {
        return c - 37;
    }

    if (c == 0x3cc) {
        return 0x38c;
    }

    if (c == 0x3cd || c == 0x3ce) {
        return c - 63;
    }

    if (c >= 0x430 && c <= 0x44f) {
        return c - 32;
    }

    if (c >= 0x450 && c <= 0x45f) {
        return c - 80;
    }

    if (((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf)
         || (c >= 0x4d0 && c <= 0x52f)) && (c & 1))
    {
        return c - 1;
    }

    if (c >= 0x561 && c <= 0x586) {
        return c - 48;
    }

    if (c >= 0xff41 && c <= 0xff5a) {
        return c - 32;
    }

    return c;
}


uint32_t
llm_tpl_cp_lower(uint32_t c)
{
    if (c < 0x80) {
        return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    }

    if (c >= 0xc0 && c <= 0xde && c != 0xd7) {
        return c + 32;
    }

    if (c == 0x178) {
        return 0xff;
    }

    if (c >= 0x100 && c <= 0x17f) {
        if (c <= 0x12f || (c >= 0x132 && c <= 0x137)
            || (c >= 0x14a && c <= 0x177))
        {
            return c | 1;
        }

        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) {
            return (c & 1) ? c + 1 : c;
        }

        if (c == 0x130) {
            return 'i';
        }

        return c;
    }

    if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) {
        return c + 32;
    }

    if (c == 0x386) {
        return 0x3ac;
    }

    if (c >= 0x388 && c <= 0x38a) {
        return c + 37;
    }

    if (c == 0x38c) {
        return 0x3cc;
    }

    if (c == 0x38e || c == 0x38f) {
        return c + 63;
    }

    if (c >= 0x410 && c <= 0x42f) {
        return c + 32;
    }

    if (c >= 0x400 && c <= 0x40f) {
        return c + 80;
    }

    if (((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf)
         || (c >= 0x4d0 && c <= 0x52f)) && !(c & 1))
    {
        return c + 1;
    }

    if (c >= 0x531 && c <= 0x556) {
        return c + 48;
    }

    if (c >= 0xff21 && c <= 0xff3a) {
        return c + 32;
    }

    return c;
}


int
llm_tpl_is_cased(uint32_t c)
{
    return llm_tpl_cp_upper(c) != c || llm_tpl_cp_lower(c) != c
           || c == 0xdf;
}


int
llm_tpl_is_alpha(uint32_t c)
{
    if (c < 0x80) {
        return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    }

    return llm_tpl_is_cased(c) || c == 0xaa || c == 0xba
           || (c >= 0x3040 && c <= 0x30ff) || (c >= 0x3400 && c <= 0x9fff)
           || (c >= 0xac00 && c <= 0xd7a3) || (c >= 0x5d0 && c <= 0x5ea)
           || (c >= 0x620 && c <= 0x64a) || (c >= 0xe01 && c <= 0xe30)
           || (c >= 0x905 && c <= 0x939);
}


int
llm_tpl_is_digit(uint32_t c)
{
    return c >= '0' && c <= '9';
}


/* ---- conversions ------------------------------------------------------ */

/* Python's repr() of a float: the shortest string that reads back */
void
llm_tpl_fmt_float(double d, char *buf, size_t size)
{
    int     prec, exp, nd, decpt, i;
    char    tmp[40], digits[24], *p, *e, *o, *end;

    if (isnan(d)) {
        snprintf(buf, size, "nan");
        return;
    }

    if (isinf(d)) {
        snprintf(buf, size, d < 0 ? "-inf" : "inf");
        return;
    }

    if (d == 0) {
        snprintf(buf, size, signbit(d) ? "-0.0" : "0.0");
        return;
    }

    for (prec = 1; prec < 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d) {
            break;
        }
    }

    snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, d);

    /* tmp is [-]D[.DDD]e(+|-)XX */
    p = tmp;
    o = buf;
    end = buf + size - 1;

    if (*p == '-') {
        *o++ = '-';
        p++;
    }

    nd = 0;
    for ( /* void */ ; *p != 'e' && *p != '\0'; p++) {
        if (*p >= '0' && *p <= '9' && nd < (int) sizeof(digits)) {
            digits[nd++] = *p;
        }
    }

    e = p;
    exp = (*e == 'e') ? atoi(e + 1) : 0;

    while (nd > 1 && digits[nd - 1] == '0') {
        nd--;
    }

    decpt = exp + 1;

#define LLM_TPL_PUT(ch)  do { if (o < end) { *o++ = (ch); } } while (0)

    if (decpt > 16 || decpt < -3) {
        LLM_TPL_PUT(digits[0]);
        if (nd > 1) {
            LLM_TPL_PUT('.');
            for (i = 1; i < nd; i++) {
                LLM_TPL_PUT(digits[i]);
            }
        }
        *o = '\0';
        snprintf(o, end + 1 - o, "e%c%02d", exp < 0 ? '-' : '+',
                 exp < 0 ? -exp : exp);
        return;
    }

    if (decpt <= 0) {
        LLM_TPL_PUT('0');
        LLM_TPL_PUT('.');
        for (i = 0; i < -decpt; i++) {
            LLM_TPL_PUT('0');
        }
        for (i = 0; i < nd; i++) {
            LLM_TPL_PUT(digits[i]);
        }

    } else if (decpt >= nd) {
        for (i = 0; i < nd; i++) {
            LLM_TPL_PUT(digits[i]);
        }
        for (i = nd; i < decpt; i++) {
            LLM_TPL_PUT('0');
        }
        LLM_TPL_PUT('.');
        LLM_TPL_PUT('0');

    } else {
        for (i = 0; i < nd; i++) {
            if (i == decpt) {
                LLM_TPL_PUT('.');
            }
            LLM_TPL_PUT(digits[i]);
        }
    }

#undef LLM_TPL_PUT

    *o = '\0';
}


const char *
llm_tpl_type_name(const llm_tpl_val_t *v)
{
    switch (v->type) {
    case LLM_TPL_UNDEF:
        return "Undefined";
    case LLM_TPL_NONE:
        return "NoneType";
    case LLM_TPL_BOOL:
        return "bool";
    case LLM_TPL_INT:
        return "int";
    case LLM_TPL_FLOAT:
        return "float";
    case LLM_TPL_STR:
        return "str";
    case LLM_TPL_LIST:
        return v->u.list->tuple ? "tuple" : "list";
    case LLM_TPL_DICT:
        return "dict";
    case LLM_TPL_NS:
        return "Namespace";
    case LLM_TPL_MACRO:
        return "Macro";
    case LLM_TPL_FUNC:
        return "builtin_function_or_method";
    default:
        return "LoopContext";
    }
}


int
llm_tpl_truthy(const llm_tpl_val_t *v)
{
    switch (v->type) {
    case LLM_TPL_UNDEF:
    case LLM_TPL_NONE:
        return 0;
    case LLM_TPL_BOOL:
        return v->u.b;
    case LLM_TPL_INT:
        return v->u.i != 0;
    case LLM_TPL_FLOAT:
        return v->u.f != 0;
    case LLM_TPL_STR:
        return v->u.s.len != 0;
    case LLM_TPL_LIST:
        return v->u.list->n != 0;
    case LLM_TPL_DICT:
        return v->u.dict->n != 0;
    default:
        return 1;
    }
}


/* 1: an int (bools are ints, as in Python), 2: a float, 0: neither */
int
llm_tpl_num(const llm_tpl_val_t *v, int64_t *i, double *f)
{
    switch (v->type) {
    case LLM_TPL_BOOL:
        *i = v->u.b;
        *f = v->u.b;
        return 1;
    case LLM_TPL_INT:
        *i = v->u.i;
        *f = (double) v->u.i;
        return 1;
    case LLM_TPL_FLOAT:
        *i = 0;
        *f = v->u.f;
        return 2;
    default:
        return 0;
    }
}


int
llm_tpl_to_str(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_str_t *out)
{
    llm_tpl_buf_t  b;

    if (v->type == LLM_TPL_STR) {
        *out = v->u.s;
        return LLM_OK;
    }

    memset(&b, 0, sizeof(b));

    if (llm_tpl_add_str(r, &b, v, 0) != LLM_OK) {
        return LLM_ERR;
    }

    *out = llm_tpl_buf_val(&b).u.s;
    return LLM_OK;
}


/* Python's str() */
int
llm_tpl_add_str(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, int depth)
{
    char  tmp[64];

    switch (v->type) {
    case LLM_TPL_UNDEF:
        return LLM_OK;
    case LLM_TPL_NONE:
        return llm_tpl_buf_adds(r, b, "None");
    case LLM_TPL_BOOL:
        return llm_tpl_buf_adds(r, b, v->u.b ? "True" : "False");
    case LLM_TPL_INT:
        snprintf(tmp, sizeof(tmp), "%lld", (long long) v->u.i);
        return llm_tpl_buf_adds(r, b, tmp);
    case LLM_TPL_FLOAT:
        llm_tpl_fmt_float(v->u.f, tmp, sizeof(tmp));
        return llm_tpl_buf_adds(r, b, tmp);
    case LLM_TPL_STR:
        return llm_tpl_buf_add(r, b, v->u.s.p, v->u.s.len);
    case LLM_TPL_MACRO:
        return llm_tpl_buf_adds(r, b, "<Macro>");
    case LLM_TPL_FUNC:
        return llm_tpl_buf_adds(r, b, "<built-in function>");
    case LLM_TPL_LOOP:
        snprintf(tmp, sizeof(tmp), "<LoopContext %zu/%zu>",
                 v->u.loop->index0 + 1, v->u.loop->items->n);
        return llm_tpl_buf_adds(r, b, tmp);
    default:
        return llm_tpl_add_repr(r, b, v, depth);
    }
}


/* Python's repr() */
int
llm_tpl_add_repr(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, int depth)
{
    size_t           i;
    llm_tpl_list_t  *l;
    llm_tpl_dict_t  *d;

    if (depth > LLM_TEMPLATE_MAX_NEST) {
        return llm_tpl_fail(r, "value nested more than %d deep",
                            LLM_TEMPLATE_MAX_NEST);
    }

    if (llm_tpl_steps(r, 1) != LLM_OK) {
        return LLM_ERR;
    }

    switch (v->type) {
    case LLM_TPL_UNDEF:
        return llm_tpl_buf_adds(r, b, "Undefined");

    case LLM_TPL_STR:
        return llm_tpl_add_qstr(r, b, v->u.s);

    case LLM_TPL_LIST:
        l = v->u.list;

        if (llm_tpl_buf_addc(r, b, l->tuple ? '(' : '[') != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < l->n; i++) {
            if ((i && llm_tpl_buf_add(r, b, ", ", 2) != LLM_OK)
                || llm_tpl_add_repr(r, b, &l->items[i], depth + 1) != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        if (l->tuple && l->n == 1 && llm_tpl_buf_addc(r, b, ',') != LLM_OK) {
            return LLM_ERR;
        }

        return llm_tpl_buf_addc(r, b, l->tuple ? ')' : ']');

    case LLM_TPL_DICT:
    case LLM_TPL_NS:
        d = v->u.dict;

        if (v->type == LLM_TPL_NS
            && llm_tpl_buf_adds(r, b, "<Namespace ") != LLM_OK)
        {
            return LLM_ERR;
        }

        if (llm_tpl_buf_addc(r, b, '{') != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < d->n; i++) {
            if ((i && llm_tpl_buf_add(r, b, ", ", 2) != LLM_OK)
                || llm_tpl_add_repr(r, b, &d->keys[i], depth + 1) != LLM_OK
                || llm_tpl_buf_add(r, b, ": ", 2) != LLM_OK
                || llm_tpl_add_repr(r, b, &d->vals[i], depth + 1) != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        if (llm_tpl_buf_addc(r, b, '}') != LLM_OK) {
            return LLM_ERR;
        }

        return v->type == LLM_TPL_NS ? llm_tpl_buf_addc(r, b, '>') : LLM_OK;

    default:
        return llm_tpl_add_str(r, b, v, depth);
    }
}


/* a string as Python's repr() quotes it */
static int
llm_tpl_add_qstr(llm_tpl_render_t *r, llm_tpl_buf_t *b, llm_tpl_str_t s)
{
    int       rc;
    char      q, tmp[16];
    size_t    i, k;
    uint32_t  c;

    q = '\'';
    if (memchr(s.p, '\'', s.len) != NULL && memchr(s.p, '"', s.len) == NULL)
    {
        q = '"';
    }

    if (llm_tpl_buf_addc(r, b, q) != LLM_OK) {
        return LLM_ERR;
    }

    for (i = 0; i < s.len; i += k) {
        k = llm_tpl_utf8_dec(s.p + i, s.len - i, &c);

        if (c == (uint32_t) q || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char) c;
            rc = llm_tpl_buf_add(r, b, tmp, 2);

        } else if (c == '\n') {
            rc = llm_tpl_buf_add(r, b, "\\n", 2);

        } else if (c == '\r') {
            rc = llm_tpl_buf_add(r, b, "\\r", 2);

        } else if (c == '\t') {
            rc = llm_tpl_buf_add(r, b, "\\t", 2);

        } else if (c >= LLM_TPL_BADCP) {
            snprintf(tmp, sizeof(tmp), "\\x%02x", c - LLM_TPL_BADCP);
            rc = llm_tpl_buf_adds(r, b, tmp);

        } else if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) {
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
            rc = llm_tpl_buf_adds(r, b, tmp);

        } else if ((c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f)
                   || (c >= 0x205f && c <= 0x206f) || c == 0x3000
                   || c == 0xfeff || c == 0x1680
                   || (c >= 0xe000 && c <= 0xf8ff))
        {
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
            rc = llm_tpl_buf_adds(r, b, tmp);

        } else {
            rc = llm_tpl_buf_add(r, b, s.p + i, k);
        }

        if (rc != LLM_OK) {
            return LLM_ERR;
        }
    }

    return llm_tpl_buf_addc(r, b, q);
}


/* json.dumps(v, ...) as HF's tojson filter calls it */
int
llm_tpl_add_json(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, const llm_tpl_json_opts_t *o, int level)
{
    char             tmp[64];
    size_t           i, n, *order;
    llm_tpl_val_t    key, *keys;
    llm_tpl_list_t  *l;
    llm_tpl_dict_t  *d;

    if (level > LLM_TEMPLATE_MAX_NEST) {
        return llm_tpl_fail(r, "value nested more than %d deep",
                            LLM_TEMPLATE_MAX_NEST);
    }

    if (llm_tpl_steps(r, 1) != LLM_OK) {
        return LLM_ERR;
    }

    switch (v->type) {
    case LLM_TPL_NONE:
        return llm_tpl_buf_adds(r, b, "null");

    case LLM_TPL_BOOL:
        return llm_tpl_buf_adds(r, b, v->u.b ? "true" : "false");

    case LLM_TPL_INT:
        snprintf(tmp, sizeof(tmp), "%lld", (long long) v->u.i);
        return llm_tpl_buf_adds(r, b, tmp);

    case LLM_TPL_FLOAT:
        if (isnan(v->u.f)) {
            return llm_tpl_buf_adds(r, b, "NaN");
        }
        if (isinf(v->u.f)) {
            return llm_tpl_buf_adds(r, b, v->u.f < 0 ? "-Infinity"
                                                       : "Infinity");
        }
        llm_tpl_fmt_float(v->u.f, tmp, sizeof(tmp));
        return llm_tpl_buf_adds(r, b, tmp);

    case LLM_TPL_STR:
        return llm_tpl_json_str(r, b, v->u.s, o->ensure_ascii);

    case LLM_TPL_LIST:
        l = v->u.list;

        if (l->n == 0) {
            return llm_tpl_buf_add(r, b, "[]", 2);
        }

        if (llm_tpl_buf_addc(r, b, '[') != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < l->n; i++) {
            if ((i && llm_tpl_buf_add(r, b, o->item_sep.p, o->item_sep.len)
                      != LLM_OK)
                || llm_tpl_json_newline(r, b, o->indent, level + 1) != LLM_OK
                || llm_tpl_add_json(r, b, &l->items[i], o, level + 1)
                   != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        if (llm_tpl_json_newline(r, b, o->indent, level) != LLM_OK) {
            return LLM_ERR;
        }

        return llm_tpl_buf_addc(r, b, ']');

    case LLM_TPL_DICT:
        d = v->u.dict;
        n = d->n;

        if (n == 0) {
            return llm_tpl_buf_add(r, b, "{}", 2);
        }

        /* keys converted first, as json.dumps() does, then sorted */
        keys = llm_tpl_ralloc(r, n, sizeof(llm_tpl_val_t));
        order = llm_tpl_ralloc(r, n, sizeof(size_t));
        if (keys == NULL || order == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < n; i++) {
            if (llm_tpl_json_key(r, &d->keys[i], &keys[i]) != LLM_OK) {
                return LLM_ERR;
            }
            order[i] = i;
        }

        if (o->sort_keys) {
            /* sort (key, index) pairs: an int key carries the index */
            llm_tpl_val_t  *pairs;

            pairs = llm_tpl_ralloc(r, n, sizeof(llm_tpl_val_t));
            if (pairs == NULL) {
                return LLM_ERR;
            }

            for (i = 0; i < n; i++) {
                pairs[i] = llm_tpl_v_int((int64_t) i);
            }

            if (llm_tpl_sort(r, pairs, n, llm_tpl_key_cmp, keys) != LLM_OK) {
                return LLM_ERR;
            }

            for (i = 0; i < n; i++) {
                order[i] = (size_t) pairs[i].u.i;
            }
        }

        if (llm_tpl_buf_addc(r, b, '{') != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < n; i++) {
            key = keys[order[i]];

            if ((i && llm_tpl_buf_add(r, b, o->item_sep.p, o->item_sep.len)
                      != LLM_OK)
                || llm_tpl_json_newline(r, b, o->indent, level + 1) != LLM_OK
                || llm_tpl_json_str(r, b, key.u.s, o->ensure_ascii) != LLM_OK
                || llm_tpl_buf_add(r, b, o->key_sep.p, o->key_sep.len)
                   != LLM_OK
                || llm_tpl_add_json(r, b, &d->vals[order[i]], o, level + 1)
                   != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        if (llm_tpl_json_newline(r, b, o->indent, level) != LLM_OK) {
            return LLM_ERR;
        }

        return llm_tpl_buf_addc(r, b, '}');

    default:
        return llm_tpl_fail(r, "Object of type %s is not JSON serializable",
                            llm_tpl_type_name(v));
    }
}


static int
llm_tpl_key_cmp(llm_tpl_render_t *r, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, int *cmp, void *ctx)
{
    llm_tpl_val_t  *keys;

    keys = ctx;

    return llm_tpl_compare(r, &keys[a->u.i], &keys[b->u.i], cmp, 0);
}


/* json.dumps() turns int, float, bool and None keys into strings */
static int
llm_tpl_json_key(llm_tpl_render_t *r, const llm_tpl_val_t *k,
    llm_tpl_val_t *out)
{
    llm_tpl_buf_t        b;
    llm_tpl_json_opts_t  o;

    switch (k->type) {
    case LLM_TPL_STR:
        *out = *k;
        return LLM_OK;

    case LLM_TPL_NONE:
        *out = llm_tpl_v_str("null", 4);
        return LLM_OK;

    case LLM_TPL_BOOL:
        *out = k->u.b ? llm_tpl_v_str("true", 4) : llm_tpl_v_str("false", 5);
        return LLM_OK;

    case LLM_TPL_INT:
    case LLM_TPL_FLOAT:
        memset(&b, 0, sizeof(b));
        memset(&o, 0, sizeof(o));
        if (llm_tpl_add_json(r, &b, k, &o, 0) != LLM_OK) {
            return LLM_ERR;
        }
        *out = llm_tpl_buf_val(&b);
        return LLM_OK;

    default:
        return llm_tpl_fail(r, "keys must be str, int, float, bool or None,"
                            " not %s", llm_tpl_type_name(k));
    }
}


static int
llm_tpl_json_newline(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_str_t *indent, int level)
{
    int  i;

    if (indent == NULL) {
        return LLM_OK;
    }

    if (llm_tpl_buf_addc(r, b, '\n') != LLM_OK) {
        return LLM_ERR;
    }

    for (i = 0; i < level; i++) {
        if (llm_tpl_buf_add(r, b, indent->p, indent->len) != LLM_OK) {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


static int
llm_tpl_json_str(llm_tpl_render_t *r, llm_tpl_buf_t *b, llm_tpl_str_t s,
    int ensure_ascii)
{
    char           tmp[16];
    size_t         i, run, k;
    uint32_t       cp;
    unsigned char  c;

    if (llm_tpl_buf_addc(r, b, '"') != LLM_OK) {
        return LLM_ERR;
    }

    run = 0;

    for (i = 0; i < s.len; i++) {
        c = (unsigned char) s.p[i];

        if (c >= 0x80 && ensure_ascii) {
            if (llm_tpl_buf_add(r, b, s.p + run, i - run) != LLM_OK) {
                return LLM_ERR;
            }

            k = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);
            if (cp >= LLM_TPL_BADCP) {
                cp = 0xfffd;
            }

            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(tmp, sizeof(tmp), "\\u%04x\\u%04x",
                         0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));

            } else {
                snprintf(tmp, sizeof(tmp), "\\u%04x", cp);
            }

            if (llm_tpl_buf_adds(r, b, tmp) != LLM_OK) {
                return LLM_ERR;
            }

            i += k - 1;
            run = i + 1;
            continue;
        }

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }

        if (llm_tpl_buf_add(r, b, s.p + run, i - run) != LLM_OK) {
            return LLM_ERR;
        }
        run = i + 1;

        switch (c) {
        case '"':
            strcpy(tmp, "\\\"");
            break;
        case '\\':
            strcpy(tmp, "\\\\");
            break;
        case '\n':
            strcpy(tmp, "\\n");
            break;
        case '\r':
            strcpy(tmp, "\\r");
            break;
        case '\t':
            strcpy(tmp, "\\t");
            break;
        case '\b':
            strcpy(tmp, "\\b");
            break;
        case '\f':
            strcpy(tmp, "\\f");
            break;
        default:
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
        }

        if (llm_tpl_buf_adds(r, b, tmp) != LLM_OK) {
            return LLM_ERR;
        }
    }

    if (llm_tpl_buf_add(r, b, s.p + run, s.len - run) != LLM_OK) {
        return LLM_ERR;
    }

    return llm_tpl_buf_addc(r, b, '"');
}


/* ---- equality and ordering -------------------------------------------- */

/* Python's ==; Undefined equals only Undefined, as in jinja2 */
int
llm_tpl_equal(llm_tpl_render_t *r, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, int *eq, int depth)
{
    int              ka, kb, e;
    double           fa, fb;
    size_t           i;
    int64_t          ia, ib;
    llm_tpl_val_t    v;
    llm_tpl_list_t  *la, *lb;
    llm_tpl_dict_t  *da, *db;

    *eq = 0;

    if (depth > LLM_TEMPLATE_MAX_NEST) {
        return llm_tpl_fail(r, "value nested more than %d deep",
                            LLM_TEMPLATE_MAX_NEST);
    }

    ka = llm_tpl_num(a, &ia, &fa);
    kb = llm_tpl_num(b, &ib, &fb);

    if (ka && kb) {
        if (ka == 1 && kb == 1) {
            *eq = ia == ib;

        } else if (ka == 1) {
            /* exact, as Python compares an int with a float */
            *eq = fb == fa && (fabs(fb) >= 9.2e18 || (int64_t) fb == ia);

        } else if (kb == 1) {
            *eq = fa == fb && (fabs(fa) >= 9.2e18 || (int64_t) fa == ib);

        } else {
            *eq = fa == fb;
        }

        return LLM_OK;
    }

    if (a->type != b->type) {
        return LLM_OK;
    }

    switch (a->type) {
    case LLM_TPL_UNDEF:
    case LLM_TPL_NONE:
        *eq = 1;
        return LLM_OK;

    case LLM_TPL_STR:
        *eq = a->u.s.len == b->u.s.len
              && (a->u.s.len == 0
                  || memcmp(a->u.s.p, b->u.s.p, a->u.s.len) == 0);
        return LLM_OK;

    case LLM_TPL_LIST:
        la = a->u.list;
        lb = b->u.list;

        if (la->tuple != lb->tuple || la->n != lb->n) {
            return LLM_OK;
        }

        if (llm_tpl_steps(r, la->n / 8 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < la->n; i++) {
            if (llm_tpl_equal(r, &la->items[i], &lb->items[i], &e, depth + 1)
                != LLM_OK)
            {
                return LLM_ERR;
            }
            if (!e) {
                return LLM_OK;
            }
        }

        *eq = 1;
        return LLM_OK;

    case LLM_TPL_DICT:
        da = a->u.dict;
        db = b->u.dict;

        if (da->n != db->n) {
            return LLM_OK;
        }

        for (i = 0; i < da->n; i++) {
            e = llm_tpl_dict_get(r, db, &da->keys[i], &v);
            if (e < 0) {
                return LLM_ERR;
            }
            if (e == 0) {
                return LLM_OK;
            }
            if (llm_tpl_equal(r, &da->vals[i], &v, &e, depth + 1) != LLM_OK)
            {
                return LLM_ERR;
            }
            if (!e) {
                return LLM_OK;
            }
        }

        *eq = 1;
        return LLM_OK;

    case LLM_TPL_NS:
        *eq = a->u.dict == b->u.dict;
        return LLM_OK;

    case LLM_TPL_MACRO:
        *eq = a->u.macro == b->u.macro;
        return LLM_OK;

    case LLM_TPL_LOOP:
        *eq = a->u.loop == b->u.loop;
        return LLM_OK;

    default:
        *eq = a->u.func == b->u.func;
        return LLM_OK;
    }
}


/* Python's ordering: numbers, strings, lists and tuples; else an error */
int
llm_tpl_compare(llm_tpl_render_t *r, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, int *cmp, int depth)
{
    int              ka, kb, c, e;
    double           fa, fb;
    size_t           i, n;
    int64_t          ia, ib;
    llm_tpl_list_t  *la, *lb;

    *cmp = 0;

    if (depth > LLM_TEMPLATE_MAX_NEST) {
        return llm_tpl_fail(r, "value nested more than %d deep",
                            LLM_TEMPLATE_MAX_NEST);
    }

    if (a->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, a);
    }

    if (b->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, b);
    }

    ka = llm_tpl_num(a, &ia, &fa);
    kb = llm_tpl_num(b, &ib, &fb);

    if (ka && kb) {
        if (ka == 1 && kb == 1) {
            *cmp = (ia > ib) - (ia < ib);

        } else {
            *cmp = (fa > fb) - (fa < fb);
        }

        return LLM_OK;
    }

    if (a->type == LLM_TPL_STR && b->type == LLM_TPL_STR) {
        n = a->u.s.len < b->u.s.len ? a->u.s.len : b->u.s.len;
        c = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;

        if (c == 0) {
            c = (a->u.s.len > b->u.s.len) - (a->u.s.len < b->u.s.len);
        }

        *cmp = (c > 0) - (c < 0);
        return LLM_OK;
    }

    if (a->type == LLM_TPL_LIST && b->type == LLM_TPL_LIST
        && a->u.list->tuple == b->u.list->tuple)
    {
        la = a->u.list;
        lb = b->u.list;
        n = la->n < lb->n ? la->n : lb->n;

        if (llm_tpl_steps(r, n / 8 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < n; i++) {
            if (llm_tpl_equal(r, &la->items[i], &lb->items[i], &e, depth + 1)
                != LLM_OK)
            {
                return LLM_ERR;
            }

            if (!e) {
                return llm_tpl_compare(r, &la->items[i], &lb->items[i], cmp,
                                       depth + 1);
            }
        }

        *cmp = (la->n > lb->n) - (la->n < lb->n);
        return LLM_OK;
    }

    return llm_tpl_fail(r, "'<' not supported between instances of '%s'"
                        " and '%s'", llm_tpl_type_name(a),
                        llm_tpl_type_name(b));
}


/* item in seq */
int
llm_tpl_contains(llm_tpl_render_t *r, const llm_tpl_val_t *item,
    const llm_tpl_val_t *seq, int *in)
{
    int              e;
    size_t           i;
    llm_tpl_val_t    v;
    llm_tpl_list_t  *l;

    *in = 0;

    switch (seq->type) {
    case LLM_TPL_UNDEF:
        /* jinja2's Undefined iterates as empty */
        return LLM_OK;

    case LLM_TPL_STR:
        if (item->type != LLM_TPL_STR) {
            return llm_tpl_fail(r, "'in <string>' requires string as left"
                                " operand, not %s", llm_tpl_type_name(item));
        }

        if (llm_tpl_steps(r, seq->u.s.len / 64 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        *in = item->u.s.len == 0
              || (item->u.s.len <= seq->u.s.len
                  && memmem(seq->u.s.p, seq->u.s.len, item->u.s.p,
                            item->u.s.len) != NULL);
        return LLM_OK;

    case LLM_TPL_LIST:
        l = seq->u.list;

        if (llm_tpl_steps(r, l->n / 8 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < l->n; i++) {
            if (llm_tpl_equal(r, item, &l->items[i], &e, 0) != LLM_OK) {
                return LLM_ERR;
            }
            if (e) {
                *in = 1;
                return LLM_OK;
            }
        }

        return LLM_OK;

    case LLM_TPL_DICT:
        e = llm_tpl_dict_get(r, seq->u.dict, item, &v);
        if (e < 0) {
            return LLM_ERR;
        }
        *in = e;
        return LLM_OK;

    default:
        return llm_tpl_fail(r, "argument of type '%s' is not iterable",
                            llm_tpl_type_name(seq));
    }
}


int
llm_tpl_length(llm_tpl_render_t *r, const llm_tpl_val_t *v, int64_t *len)
{
    switch (v->type) {
    case LLM_TPL_UNDEF:
        *len = 0;
        return LLM_OK;

    case LLM_TPL_STR:
        if (llm_tpl_steps(r, v->u.s.len / 64 + 1) != LLM_OK) {
            return LLM_ERR;
        }
        *len = (int64_t) llm_tpl_utf8_len(v->u.s.p, v->u.s.len);
        return LLM_OK;

    case LLM_TPL_LIST:
        *len = (int64_t) v->u.list->n;
        return LLM_OK;

    case LLM_TPL_DICT:
        *len = (int64_t) v->u.dict->n;
        return LLM_OK;

    default:
        return llm_tpl_fail(r, "object of type '%s' has no len()",
                            llm_tpl_type_name(v));
    }
}


/* the items a for loop or a filter walks: list items, dict keys, chars */
int
llm_tpl_iterate(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_list_t **out)
{
    size_t           i, k, n;
    uint32_t         cp;
    llm_tpl_list_t  *l;

    switch (v->type) {
    case LLM_TPL_LIST:
        *out = v->u.list;
        return LLM_OK;

    case LLM_TPL_UNDEF:
        l = llm_tpl_list_new(r, 0);
        break;

    case LLM_TPL_DICT:
        n = v->u.dict->n;
        l = llm_tpl_list_new(r, n);
        if (l == NULL) {
            return LLM_ERR;
        }
        if (n) {
            memcpy(l->items, v->u.dict->keys, n * sizeof(llm_tpl_val_t));
        }
        l->n = n;
        break;

    case LLM_TPL_STR:
        n = llm_tpl_utf8_len(v->u.s.p, v->u.s.len);

        if (llm_tpl_steps(r, n / 8 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        l = llm_tpl_list_new(r, n);
        if (l == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < v->u.s.len; i += k) {
            k = llm_tpl_utf8_dec(v->u.s.p + i, v->u.s.len - i, &cp);
            l->items[l->n++] = llm_tpl_v_str(v->u.s.p + i, k);
        }
        break;

    default:
        return llm_tpl_fail(r, "'%s' object is not iterable",
                            llm_tpl_type_name(v));
    }

    if (l == NULL) {
        return LLM_ERR;
    }

    *out = l;
    return LLM_OK;
}


/* a stable merge sort that stops at the first failed comparison */
int
llm_tpl_sort(llm_tpl_render_t *r, llm_tpl_val_t *v, size_t n,
    llm_tpl_cmp_pt cmp, void *ctx)
{
    int             c;
    size_t          width, lo, mid, hi, i, j, k;
    llm_tpl_val_t  *tmp, *src, *dst, *t;

    if (n < 2) {
        return LLM_OK;
    }

    tmp = llm_tpl_ralloc(r, n, sizeof(llm_tpl_val_t));
    if (tmp == NULL) {
        return LLM_ERR;
    }

    src = v;
    dst = tmp;

    for (width = 1; width < n; width *= 2) {
        if (llm_tpl_steps(r, n / 8 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        for (lo = 0; lo < n; lo += 2 * width) {
            mid = lo + width < n ? lo + width : n;
            hi = lo + 2 * width < n ? lo + 2 * width : n;
            i = lo;
            j = mid;
            k = lo;

            while (i < mid && j < hi) {
                if (cmp(r, &src[j], &src[i], &c, ctx) != LLM_OK) {
                    return LLM_ERR;
                }
                dst[k++] = c < 0 ? src[j++] : src[i++];
            }

            while (i < mid) {
                dst[k++] = src[i++];
            }

            while (j < hi) {
                dst[k++] = src[j++];
            }
        }

        t = src;
        src = dst;
        dst = t;
    }

    if (src != v) {
        memcpy(v, src, n * sizeof(llm_tpl_val_t));
    }

    return LLM_OK;
}


/* ---- lists and dicts -------------------------------------------------- */

llm_tpl_list_t *
llm_tpl_list_new(llm_tpl_render_t *r, size_t cap)
{
    llm_tpl_list_t  *l;

    l = llm_tpl_ralloc(r, 1, sizeof(llm_tpl_list_t));
    if (l == NULL) {
        return NULL;
    }

    if (cap) {
        l->items = llm_tpl_ralloc(r, cap, sizeof(llm_tpl_val_t));
        if (l->items == NULL) {
            return NULL;
        }
        l->cap = cap;
    }

    return l;
}


int
llm_tpl_list_push(llm_tpl_render_t *r, llm_tpl_list_t *l,
    const llm_tpl_val_t *v)
{
    size_t          cap;
    llm_tpl_val_t  *items;

    if (l->n == l->cap) {
        cap = l->cap ? l->cap * 2 : 4;

        items = llm_tpl_ralloc(r, cap, sizeof(llm_tpl_val_t));
        if (items == NULL) {
            return LLM_ERR;
        }

        if (l->n) {
            memcpy(items, l->items, l->n * sizeof(llm_tpl_val_t));
        }

        l->items = items;
        l->cap = cap;
    }

    l->items[l->n++] = *v;
    return LLM_OK;
}


llm_tpl_val_t
llm_tpl_v_list(llm_tpl_list_t *l)
{
    llm_tpl_val_t  v;

    v.type = LLM_TPL_LIST;
    v.u.list = l;
    return v;
}


llm_tpl_dict_t *
llm_tpl_dict_new(llm_tpl_render_t *r, size_t cap)
{
    llm_tpl_dict_t  *d;

    d = llm_tpl_ralloc(r, 1, sizeof(llm_tpl_dict_t));
    if (d == NULL) {
        return NULL;
    }

    if (cap) {
        d->keys = llm_tpl_ralloc(r, cap, sizeof(llm_tpl_val_t));
        d->vals = llm_tpl_ralloc(r, cap, sizeof(llm_tpl_val_t));
        if (d->keys == NULL || d->vals == NULL) {
            return NULL;
        }
        d->cap = cap;
    }

    return d;
}


static int
llm_tpl_hashable(llm_tpl_render_t *r, const llm_tpl_val_t *k)
{
    if (k->type == LLM_TPL_DICT
        || (k->type == LLM_TPL_LIST && !k->u.list->tuple))
    {
        return llm_tpl_fail(r, "unhashable type: '%s'",
                            llm_tpl_type_name(k));
    }

    return LLM_OK;
}


/* 1: found, 0: not found, -1: error */
int
llm_tpl_dict_get(llm_tpl_render_t *r, const llm_tpl_dict_t *d,
    const llm_tpl_val_t *key, llm_tpl_val_t *val)
{
    int     e;
    size_t  i;

    if (key->type == LLM_TPL_STR) {
        return llm_tpl_dict_gets(r, d, key->u.s, val);
    }

    if (llm_tpl_hashable(r, key) != LLM_OK
        || llm_tpl_steps(r, d->n / 16 + 1) != LLM_OK)
    {
        return -1;
    }

    for (i = 0; i < d->n; i++) {
        if (llm_tpl_equal(r, &d->keys[i], key, &e, 0) != LLM_OK) {
            return -1;
        }

        if (e) {
            *val = d->vals[i];
            return 1;
        }
    }

    return 0;
}


int
llm_tpl_dict_gets(llm_tpl_render_t *r, const llm_tpl_dict_t *d,
    llm_tpl_str_t key, llm_tpl_val_t *val)
{
    size_t                i;
    const llm_tpl_val_t  *k;

    if (llm_tpl_steps(r, d->n / 16 + 1) != LLM_OK) {
        return -1;
    }

    for (i = 0; i < d->n; i++) {
        k = &d->keys[i];

        if (k->type == LLM_TPL_STR && k->u.s.len == key.len
            && (key.len == 0 || memcmp(k->u.s.p, key.p, key.len) == 0))
        {
            *val = d->vals[i];
            return 1;
        }
    }

    return 0;
}


int
llm_tpl_dict_set(llm_tpl_render_t *r, llm_tpl_dict_t *d,
    const llm_tpl_val_t *key, const llm_tpl_val_t *val)
{
    int             e;
    size_t          i, cap;
    llm_tpl_val_t  *keys, *vals;

    if (llm_tpl_hashable(r, key) != LLM_OK
        || llm_tpl_steps(r, d->n / 16 + 1) != LLM_OK)
    {
        return LLM_ERR;
    }

    for (i = 0; i < d->n; i++) {
        if (llm_tpl_equal(r, &d->keys[i], key, &e, 0) != LLM_OK) {
            return LLM_ERR;
        }

        if (e) {
            d->vals[i] = *val;
            return LLM_OK;
        }
    }

    if (d->n == d->cap) {
        cap = d->cap ? d->cap * 2 : 4;

        keys = llm_tpl_ralloc(r, cap, sizeof(llm_tpl_val_t));
        vals = llm_tpl_ralloc(r, cap, sizeof(llm_tpl_val_t));
        if (keys == NULL || vals == NULL) {
            return LLM_ERR;
        }

        if (d->n) {
            memcpy(keys, d->keys, d->n * sizeof(llm_tpl_val_t));
            memcpy(vals, d->vals, d->n * sizeof(llm_tpl_val_t));
        }

        d->keys = keys;
        d->vals = vals;
        d->cap = cap;
    }

    d->keys[d->n] = *key;
    d->vals[d->n] = *val;
    d->n++;

    return LLM_OK;
}


/* JSON input becomes values; strings point into the JSON, not copied */
int
llm_tpl_from_json(llm_tpl_render_t *r, json_t *j, llm_tpl_val_t *out,
    int depth)
{
    void            *it;
    size_t           i, n, klen;
    const char      *key;
    llm_tpl_val_t    v;
    llm_tpl_list_t  *l;
    llm_tpl_dict_t  *d;

    if (depth > LLM_TEMPLATE_MAX_NEST) {
        return llm_tpl_fail(r, "JSON input nested more than %d deep",
                            LLM_TEMPLATE_MAX_NEST);
    }

    if (llm_tpl_steps(r, 1) != LLM_OK) {
        return LLM_ERR;
    }

    switch (json_typeof(j)) {
    case JSON_OBJECT:
        n = json_object_size(j);

        d = llm_tpl_dict_new(r, n);
        if (d == NULL) {
            return LLM_ERR;
        }

        /* keys of a JSON object are unique: append without searching */
        for (it = json_object_iter(j); it != NULL && d->n < n;
             it = json_object_iter_next(j, it))
        {
            key = json_object_iter_key(it);
#if JANSSON_VERSION_HEX >= 0x020e00
            klen = json_object_iter_key_len(it);
#else
            klen = strlen(key);
#endif

            if (llm_tpl_from_json(r, json_object_iter_value(it), &v,
                                  depth + 1) != LLM_OK)
            {
                return LLM_ERR;
            }

            d->keys[d->n] = llm_tpl_v_str(key, klen);
            d->vals[d->n] = v;
            d->n++;
        }

        out->type = LLM_TPL_DICT;
        out->u.dict = d;
        return LLM_OK;

    case JSON_ARRAY:
        n = json_array_size(j);

        l = llm_tpl_list_new(r, n);
        if (l == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < n; i++) {
            if (llm_tpl_from_json(r, json_array_get(j, i), &l->items[i],
                                  depth + 1) != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        l->n = n;
        *out = llm_tpl_v_list(l);
        return LLM_OK;

    case JSON_STRING:
        *out = llm_tpl_v_str(json_string_value(j), json_string_length(j));
        return LLM_OK;

    case JSON_INTEGER:
        *out = llm_tpl_v_int((int64_t) json_integer_value(j));
        return LLM_OK;

    case JSON_REAL:
        *out = llm_tpl_v_float(json_real_value(j));
        return LLM_OK;

    case JSON_TRUE:
        *out = llm_tpl_v_bool(1);
        return LLM_OK;

    case JSON_FALSE:
        *out = llm_tpl_v_bool(0);
        return LLM_OK;

    default:
        *out = llm_tpl_v_none();
        return LLM_OK;
    }
}


/* ---- frames: one per scope (template, loop iteration, macro call) ----- */

llm_tpl_frame_t *
llm_tpl_frame_new(llm_tpl_render_t *r, llm_tpl_frame_t *parent)
{
    llm_tpl_frame_t  *f;

    f = llm_tpl_ralloc(r, 1, sizeof(llm_tpl_frame_t));
    if (f == NULL) {
        return NULL;
    }

    f->parent = parent;
    return f;
}


int
llm_tpl_frame_set(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_str_t name, const llm_tpl_val_t *val)
{
    size_t           i, cap;
    llm_tpl_str_t   *names;
    llm_tpl_val_t   *vals;

    if (llm_tpl_steps(r, f->n / 16 + 1) != LLM_OK) {
        return LLM_ERR;
    }

    for (i = 0; i < f->n; i++) {
        if (f->names[i].len == name.len
            && memcmp(f->names[i].p, name.p, name.len) == 0)
        {
            f->vals[i] = *val;
            return LLM_OK;
        }
    }

    if (f->n == f->cap) {
        cap = f->cap ? f->cap * 2 : 8;

        names = llm_tpl_ralloc(r, cap, sizeof(llm_tpl_str_t));
        vals = llm_tpl_ralloc(r, cap, sizeof(llm_tpl_val_t));
        if (names == NULL || vals == NULL) {
            return LLM_ERR;
        }

        if (f->n) {
            memcpy(names, f->names, f->n * sizeof(llm_tpl_str_t));
            memcpy(vals, f->vals, f->n * sizeof(llm_tpl_val_t));
        }

        f->names = names;
        f->vals = vals;
        f->cap = cap;
    }

    f->names[f->n] = name;
    f->vals[f->n] = *val;
    f->n++;

    return LLM_OK;
}


/* 1: found, 0: not found, -1: error */
int
llm_tpl_frame_get(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_str_t name, llm_tpl_val_t *val)
{
    size_t  i;

    for ( /* void */ ; f != NULL; f = f->parent) {
        if (llm_tpl_steps(r, f->n / 16 + 1) != LLM_OK) {
            return -1;
        }

        for (i = 0; i < f->n; i++) {
            if (f->names[i].len == name.len
                && memcmp(f->names[i].p, name.p, name.len) == 0)
            {
                *val = f->vals[i];
                return 1;
            }
        }
    }

    return 0;
}
