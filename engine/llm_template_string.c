/*
 * Copyright (C) ngx_llm developers
 *
 * Template strings: Python's str methods (strip, split, replace, case
 * mapping ...), int() and float() of strings, the two formatting
 * languages (printf-style "%" and str.format()), and the dates that
 * strftime_now() formats.
 */

#define _GNU_SOURCE             /* memmem() */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm_template_int.h"


/* a format spec: Python's mini-language, or a printf conversion */
typedef struct {
    uint32_t   fill;
    int        align;       /* '<', '>', '^', '=' or 0 */
    int        sign;        /* '+', ' ' or 0 */
    int        alt;
    int        zero;
    int        grouping;    /* ',', '_' or 0 */
    int64_t    width;       /* -1: none */
    int64_t    prec;        /* -1: none */
    int        type;        /* conversion or 0 */
} llm_tpl_spec_t;

static const char *const  llm_tpl_months[] = {
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December"
};

static const char *const  llm_tpl_days[] = {
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
    "Saturday"
};


static int llm_tpl_in_chars(uint32_t cp, const llm_tpl_str_t *chars);
static const char *llm_tpl_memrmem(const char *h, size_t hlen,
    const char *n, size_t nlen);
static size_t llm_tpl_space_at(const char *p, size_t len);
static int llm_tpl_split(llm_tpl_render_t *r, llm_tpl_str_t s,
    const llm_tpl_str_t *sep, int64_t maxsplit, int right,
    llm_tpl_val_t *out);
static int llm_tpl_find(llm_tpl_render_t *r, llm_tpl_str_t s,
    llm_tpl_str_t sub, int right, int64_t *pos);
static int llm_tpl_pad(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const char *body, size_t len, const llm_tpl_spec_t *sp, int numeric,
    size_t sign_len);
static int llm_tpl_fmt_number(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, const llm_tpl_spec_t *sp);
static int llm_tpl_parse_spec(llm_tpl_render_t *r, llm_tpl_str_t spec,
    llm_tpl_spec_t *sp);
static int llm_tpl_fmt_value(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, llm_tpl_str_t spec);
static int llm_tpl_format_brace(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t fmt, llm_tpl_args_t *a);
static int llm_tpl_leap(int y);
static int llm_tpl_month_days(int y, int m);
static int llm_tpl_month(const char *s, size_t len);


/* ---- strings ---------------------------------------------------------- */

static int
llm_tpl_in_chars(uint32_t cp, const llm_tpl_str_t *chars)
{
    size_t    i, k;
    uint32_t  c;

    if (chars == NULL) {
        return llm_tpl_is_space(cp);
    }

    for (i = 0; i < chars->len; i += k) {
        k = llm_tpl_utf8_dec(chars->p + i, chars->len - i, &c);
        if (c == cp) {
            return 1;
        }
    }

    return 0;
}


/* which: 1 left, 2 right, 3 both; chars NULL strips whitespace */
llm_tpl_str_t
llm_tpl_strip(llm_tpl_str_t s, const llm_tpl_str_t *chars, int which)
{
    size_t    start, end, j, k;
    uint32_t  cp;

    start = 0;
    end = s.len;

    if (which & 1) {
        while (start < end) {
            k = llm_tpl_utf8_dec(s.p + start, end - start, &cp);
            if (!llm_tpl_in_chars(cp, chars)) {
                break;
            }
            start += k;
        }
    }

    if (which & 2) {
        while (end > start) {
            /* the start of the last character */
            j = end - 1;
            while (j > start && end - j < 4
                   && ((unsigned char) s.p[j] & 0xc0) == 0x80)
            {
                j--;
            }

            if (llm_tpl_utf8_dec(s.p + j, end - j, &cp) != end - j) {
                j = end - 1;
                llm_tpl_utf8_dec(s.p + j, 1, &cp);
            }

            if (!llm_tpl_in_chars(cp, chars)) {
                break;
            }
            end = j;
        }
    }

    s.p += start;
    s.len = end - start;

    return s;
}


/* mode: 0 lower, 1 upper, 2 capitalize, 3 str.title(), 4 jinja2 title */
int
llm_tpl_case(llm_tpl_render_t *r, llm_tpl_str_t s, int mode,
    llm_tpl_val_t *out)
{
    int            start;
    size_t         i, k;
    uint32_t       cp, c;
    llm_tpl_buf_t  b;

    memset(&b, 0, sizeof(b));
    start = 1;

    if (llm_tpl_steps(r, s.len / 64 + 1) != LLM_OK) {
        return LLM_ERR;
    }

    for (i = 0; i < s.len; i += k) {
        k = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);

        switch (mode) {
        case 0:
            c = llm_tpl_cp_lower(cp);
            break;

        case 1:
            c = llm_tpl_cp_upper(cp);
            break;

        case 2:
            c = start ? llm_tpl_cp_upper(cp) : llm_tpl_cp_lower(cp);
            start = 0;
            break;

        case 3:
            c = start ? llm_tpl_cp_upper(cp) : llm_tpl_cp_lower(cp);
            start = !llm_tpl_is_cased(cp);
            break;

        default:
            if (llm_tpl_is_space(cp) || cp == '-' || cp == '(' || cp == '{'
                || cp == '[' || cp == '<')
            {
                c = cp;
                start = 1;

            } else {
                c = start ? llm_tpl_cp_upper(cp) : llm_tpl_cp_lower(cp);
                start = 0;
            }
        }

        /* the one common character that upper-cases to two */
        if (cp == 0xdf && c == 0xdf && (mode == 1 || (mode != 0 && start)))
        {
            if (llm_tpl_buf_add(r, &b, mode == 1 ? "SS" : "Ss", 2)
                != LLM_OK)
            {
                return LLM_ERR;
            }
            continue;
        }

        if (c == cp) {
            if (llm_tpl_buf_add(r, &b, s.p + i, k) != LLM_OK) {
                return LLM_ERR;
            }

        } else if (llm_tpl_buf_addcp(r, &b, c) != LLM_OK) {
            return LLM_ERR;
        }
    }

    *out = llm_tpl_buf_val(&b);
    return LLM_OK;
}


int
llm_tpl_replace(llm_tpl_render_t *r, llm_tpl_str_t s, llm_tpl_str_t from,
    llm_tpl_str_t to, int64_t count, llm_tpl_val_t *out)
{
    size_t         i, k;
    uint32_t       cp;
    const char    *hit, *p, *end;
    llm_tpl_buf_t  b;

    memset(&b, 0, sizeof(b));

    if (llm_tpl_steps(r, s.len / 64 + 1) != LLM_OK) {
        return LLM_ERR;
    }

    if (from.len == 0) {
        /* "abc".replace("", "-") is "-a-b-c-" */
        for (i = 0; i <= s.len; i += k) {
            if (count-- != 0
                && llm_tpl_buf_add(r, &b, to.p, to.len) != LLM_OK)
            {
                return LLM_ERR;
            }

            if (i == s.len) {
                break;
            }

            k = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);
            if (llm_tpl_buf_add(r, &b, s.p + i, k) != LLM_OK) {
                return LLM_ERR;
            }
        }

        *out = llm_tpl_buf_val(&b);
        return LLM_OK;
    }

    p = s.p;
    end = s.p + s.len;

    while (count != 0 && (size_t) (end - p) >= from.len) {
        hit = memmem(p, end - p, from.p, from.len);
        if (hit == NULL) {
            break;
        }

        if (llm_tpl_buf_add(r, &b, p, hit - p) != LLM_OK
            || llm_tpl_buf_add(r, &b, to.p, to.len) != LLM_OK)
        {
            return LLM_ERR;
        }

        p = hit + from.len;
        count--;
    }

    if (p == s.p) {
        *out = llm_tpl_v_str(s.p, s.len);
        return LLM_OK;
    }

    if (llm_tpl_buf_add(r, &b, p, end - p) != LLM_OK) {
        return LLM_ERR;
    }

    *out = llm_tpl_buf_val(&b);
    return LLM_OK;
}


static const char *
llm_tpl_memrmem(const char *h, size_t hlen, const char *n, size_t nlen)
{
    const char  *p;

    if (nlen > hlen) {
        return NULL;
    }

    for (p = h + hlen - nlen; ; p--) {
        if (memcmp(p, n, nlen) == 0) {
            return p;
        }

        if (p == h) {
            return NULL;
        }
    }
}


/* the length of the whitespace character at p, or 0 */
static size_t
llm_tpl_space_at(const char *p, size_t len)
{
    size_t    k;
    uint32_t  cp;

    k = llm_tpl_utf8_dec(p, len, &cp);
    return llm_tpl_is_space(cp) ? k : 0;
}


/* str.split() and str.rsplit() */
static int
llm_tpl_split(llm_tpl_render_t *r, llm_tpl_str_t s, const llm_tpl_str_t *sep,
    int64_t maxsplit, int right, llm_tpl_val_t *out)
{
    size_t           i, j, k, start, end;
    const char      *hit;
    llm_tpl_val_t    v;
    llm_tpl_list_t  *l, *rev;

    if (llm_tpl_steps(r, s.len / 32 + 1) != LLM_OK) {
        return LLM_ERR;
    }

    l = llm_tpl_list_new(r, 0);
    if (l == NULL) {
        return LLM_ERR;
    }

    if (sep != NULL && sep->len == 0) {
        return llm_tpl_fail(r, "empty separator");
    }

    if (sep != NULL) {
        start = 0;
        end = s.len;

        while (maxsplit != 0) {
            if (right) {
                hit = llm_tpl_memrmem(s.p + start, end - start, sep->p,
                                      sep->len);
            } else {
                hit = end - start >= sep->len
                      ? memmem(s.p + start, end - start, sep->p, sep->len)
                      : NULL;
            }

            if (hit == NULL) {
                break;
            }

            if (right) {
                v = llm_tpl_v_str(hit + sep->len,
                                  s.p + end - (hit + sep->len));
                end = hit - s.p;

            } else {
                v = llm_tpl_v_str(s.p + start, hit - (s.p + start));
                start = hit + sep->len - s.p;
            }

            if (llm_tpl_list_push(r, l, &v) != LLM_OK) {
                return LLM_ERR;
            }

            maxsplit--;
        }

        v = llm_tpl_v_str(s.p + start, end - start);
        if (llm_tpl_list_push(r, l, &v) != LLM_OK) {
            return LLM_ERR;
        }

    } else if (!right) {
        i = 0;

        for ( ;; ) {
            while (i < s.len && (k = llm_tpl_space_at(s.p + i, s.len - i))) {
                i += k;
            }

            if (i >= s.len) {
                break;
            }

            if (maxsplit == 0) {
                /* the rest, with its trailing whitespace */
                v = llm_tpl_v_str(s.p + i, s.len - i);
                if (llm_tpl_list_push(r, l, &v) != LLM_OK) {
                    return LLM_ERR;
                }
                break;
            }

            for (j = i; j < s.len && !llm_tpl_space_at(s.p + j, s.len - j);
                 j += llm_tpl_utf8_dec(s.p + j, s.len - j, (uint32_t *) &k))
            {
                /* void */
            }

            v = llm_tpl_v_str(s.p + i, j - i);
            if (llm_tpl_list_push(r, l, &v) != LLM_OK) {
                return LLM_ERR;
            }

            maxsplit--;
            i = j;
        }

    } else {
        /* rsplit() on whitespace: work from the end, by characters */
        llm_tpl_str_t  rest;

        rest = llm_tpl_strip(s, NULL, 2);

        while (rest.len > 0) {
            if (maxsplit == 0) {
                v = llm_tpl_v_str(rest.p, rest.len);
                if (llm_tpl_list_push(r, l, &v) != LLM_OK) {
                    return LLM_ERR;
                }
                break;
            }

            /* the last run of non-space characters */
            end = rest.len;
            start = 0;

            for (i = 0; i < end; i += k) {
                k = llm_tpl_space_at(rest.p + i, end - i);
                if (k) {
                    start = i + k;

                } else {
                    k = llm_tpl_utf8_dec(rest.p + i, end - i,
                                         (uint32_t *) &j);
                }
            }

            v = llm_tpl_v_str(rest.p + start, end - start);
            if (llm_tpl_list_push(r, l, &v) != LLM_OK) {
                return LLM_ERR;
            }

            rest.len = start;
            rest = llm_tpl_strip(rest, NULL, 2);
            maxsplit--;
        }
    }

    if (right) {
        rev = llm_tpl_list_new(r, l->n);
        if (rev == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < l->n; i++) {
            rev->items[i] = l->items[l->n - 1 - i];
        }
        rev->n = l->n;
        l = rev;
    }

    *out = llm_tpl_v_list(l);
    return LLM_OK;
}


/* Python's str.splitlines() */
int
llm_tpl_splitlines(llm_tpl_render_t *r, llm_tpl_str_t s, int keepends,
    llm_tpl_list_t **out)
{
    size_t           i, k, start;
    uint32_t         cp;
    llm_tpl_val_t    v;
    llm_tpl_list_t  *l;

    l = llm_tpl_list_new(r, 0);
    if (l == NULL) {
        return LLM_ERR;
    }

    start = 0;

    for (i = 0; i < s.len; /* void */) {
        k = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);

        if (cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f'
            || cp == 0x1c || cp == 0x1d || cp == 0x1e || cp == 0x85
            || cp == 0x2028 || cp == 0x2029)
        {
            if (cp == '\r' && i + 1 < s.len && s.p[i + 1] == '\n') {
                k = 2;
            }

            v = llm_tpl_v_str(s.p + start, (keepends ? i + k : i) - start);
            if (llm_tpl_list_push(r, l, &v) != LLM_OK) {
                return LLM_ERR;
            }

            i += k;
            start = i;
            continue;
        }

        i += k;
    }

    if (start < s.len) {
        v = llm_tpl_v_str(s.p + start, s.len - start);
        if (llm_tpl_list_push(r, l, &v) != LLM_OK) {
            return LLM_ERR;
        }
    }

    *out = l;
    return LLM_OK;
}


/* Python's int(s, base): whitespace around, a sign, "_" between digits */
int
llm_tpl_parse_int(llm_tpl_str_t s, int base, int64_t *out)
{
    int       neg, d, prev_digit;
    size_t    i;
    uint64_t  v, lim;

    s = llm_tpl_strip(s, NULL, 3);

    i = 0;
    neg = 0;

    if (i < s.len && (s.p[i] == '+' || s.p[i] == '-')) {
        neg = s.p[i] == '-';
        i++;
    }

    if (i + 1 < s.len && s.p[i] == '0') {
        d = s.p[i + 1] | 0x20;

        if ((d == 'x' && (base == 16 || base == 0))
            || (d == 'o' && (base == 8 || base == 0))
            || (d == 'b' && (base == 2 || base == 0)))
        {
            base = d == 'x' ? 16 : (d == 'o' ? 8 : 2);
            i += 2;
            if (i < s.len && s.p[i] == '_') {
                i++;
            }
        }
    }

    if (base == 0) {
        base = 10;
    }

    if (i >= s.len) {
        return LLM_ERR;
    }

    v = 0;
    lim = neg ? (uint64_t) INT64_MAX + 1 : (uint64_t) INT64_MAX;
    prev_digit = 0;

    for ( /* void */ ; i < s.len; i++) {
        if (s.p[i] == '_' && prev_digit && i + 1 < s.len) {
            prev_digit = 0;
            continue;
        }

        d = s.p[i];
        if (d >= '0' && d <= '9') {
            d -= '0';
        } else if ((d | 0x20) >= 'a' && (d | 0x20) <= 'z') {
            d = (d | 0x20) - 'a' + 10;
        } else {
            return LLM_ERR;
        }

        if (d >= base) {
            return LLM_ERR;
        }

        if (v > (lim - (uint64_t) d) / (uint64_t) base) {
            return LLM_ERR;
        }

        v = v * base + d;
        prev_digit = 1;
    }

    if (!prev_digit) {
        return LLM_ERR;
    }

    *out = neg ? (int64_t) (0 - v) : (int64_t) v;
    return LLM_OK;
}


/* Python's float(s): decimal, inf, infinity, nan; "_" between digits */
int
llm_tpl_parse_float(llm_tpl_str_t s, double *out)
{
    int     digits, prev_digit;
    char    buf[128];
    size_t  i, n;

    s = llm_tpl_strip(s, NULL, 3);

    if (s.len == 0 || s.len >= sizeof(buf)) {
        return LLM_ERR;
    }

    i = 0;
    if (s.p[0] == '+' || s.p[0] == '-') {
        i = 1;
    }

    n = s.len - i;
    if ((n == 3 && strncasecmp(s.p + i, "inf", 3) == 0)
        || (n == 8 && strncasecmp(s.p + i, "infinity", 8) == 0)
        || (n == 3 && strncasecmp(s.p + i, "nan", 3) == 0))
    {
        memcpy(buf, s.p, s.len);
        buf[s.len] = '\0';
        *out = strtod(buf, NULL);
        return LLM_OK;
    }

    n = 0;
    digits = 0;
    prev_digit = 0;

    for (i = 0; i < s.len; i++) {
        char  c = s.p[i];

        if (c >= '0' && c <= '9') {
            digits = 1;
            prev_digit = 1;
            buf[n++] = c;
            continue;
        }

        if (c == '_' && prev_digit && i + 1 < s.len && s.p[i + 1] >= '0'
            && s.p[i + 1] <= '9')
        {
            prev_digit = 0;
            continue;
        }

        prev_digit = 0;

        if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
            buf[n++] = c;
            continue;
        }

        return LLM_ERR;
    }

    buf[n] = '\0';

    if (!digits) {
        return LLM_ERR;
    }

    {
        char  *end;

        *out = strtod(buf, &end);
        if (*end != '\0') {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


int
llm_tpl_call_str_method(llm_tpl_render_t *r, int id, llm_tpl_str_t s,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int              rc, res, any, cased, lower, upper;
    size_t           i, k;
    int64_t          n, pos;
    uint32_t         cp;
    llm_tpl_str_t    s2, s3;
    llm_tpl_val_t    v;
    llm_tpl_buf_t    b;
    llm_tpl_list_t  *l;

    switch (id) {
    case LLM_TPL_FN_STRIP:
    case LLM_TPL_FN_LSTRIP:
    case LLM_TPL_FN_RSTRIP:
        rc = llm_tpl_arg_str(r, a, 0, "chars", &s2);
        if (rc < 0 || llm_tpl_steps(r, s.len * (rc ? s2.len : 1) / 64 + 1)
                      != LLM_OK)
        {
            return LLM_ERR;
        }

        s = llm_tpl_strip(s, rc ? &s2 : NULL,
                          id == LLM_TPL_FN_STRIP ? 3
                          : id == LLM_TPL_FN_LSTRIP ? 1 : 2);
        *out = llm_tpl_v_str(s.p, s.len);
        return LLM_OK;

    case LLM_TPL_FN_SPLIT:
    case LLM_TPL_FN_RSPLIT:
        rc = llm_tpl_arg_str(r, a, 0, "sep", &s2);
        n = -1;
        if (rc < 0 || llm_tpl_arg_int(r, a, 1, "maxsplit", &n) < 0) {
            return LLM_ERR;
        }
        return llm_tpl_split(r, s, rc ? &s2 : NULL, n < 0 ? -1 : n,
                             id == LLM_TPL_FN_RSPLIT, out);

    case LLM_TPL_FN_SPLITLINES:
        if (llm_tpl_splitlines(r, s, llm_tpl_arg_bool(a, 0, "keepends", 0),
                               &l) != LLM_OK)
        {
            return LLM_ERR;
        }
        *out = llm_tpl_v_list(l);
        return LLM_OK;

    case LLM_TPL_FN_STARTSWITH:
    case LLM_TPL_FN_ENDSWITH:
        if (a->npos != 1) {
            return llm_tpl_fail(r, "%s() takes exactly one argument here",
                                id == LLM_TPL_FN_STARTSWITH ? "startswith"
                                                            : "endswith");
        }

        v = a->pos[0];

        if (v.type == LLM_TPL_STR) {
            l = NULL;

        } else if (v.type == LLM_TPL_LIST && v.u.list->tuple) {
            l = v.u.list;

        } else {
            return llm_tpl_fail(r, "%s first arg must be str or a tuple of"
                                " str, not %s",
                                id == LLM_TPL_FN_STARTSWITH ? "startswith"
                                                            : "endswith",
                                llm_tpl_type_name(&v));
        }

        res = 0;

        for (i = 0; i < (l ? l->n : 1) && !res; i++) {
            if (l != NULL) {
                v = l->items[i];
                if (v.type != LLM_TPL_STR) {
                    return llm_tpl_fail(r, "tuple for startswith must only"
                                        " contain str, not %s",
                                        llm_tpl_type_name(&v));
                }
            }

            s2 = v.u.s;
            res = s2.len <= s.len
                  && (s2.len == 0
                      || memcmp(id == LLM_TPL_FN_STARTSWITH
                                ? s.p : s.p + s.len - s2.len,
                                s2.p, s2.len) == 0);
        }

        *out = llm_tpl_v_bool(res);
        return LLM_OK;

    case LLM_TPL_FN_UPPER:
        return llm_tpl_case(r, s, 1, out);

    case LLM_TPL_FN_LOWER:
        return llm_tpl_case(r, s, 0, out);

    case LLM_TPL_FN_TITLE:
        return llm_tpl_case(r, s, 3, out);

    case LLM_TPL_FN_CAPITALIZE:
        return llm_tpl_case(r, s, 2, out);

    case LLM_TPL_FN_REPLACE:
        if (llm_tpl_arg_str(r, a, 0, "old", &s2) != 1
            || llm_tpl_arg_str(r, a, 1, "new", &s3) != 1)
        {
            return llm_tpl_fail(r, "replace() needs two strings");
        }

        n = -1;
        if (llm_tpl_arg_int(r, a, 2, "count", &n) < 0) {
            return LLM_ERR;
        }

        return llm_tpl_replace(r, s, s2, s3, n, out);

    case LLM_TPL_FN_FORMAT:
        memset(&b, 0, sizeof(b));
        if (llm_tpl_format_brace(r, &b, s, a) != LLM_OK) {
            return LLM_ERR;
        }
        *out = llm_tpl_buf_val(&b);
        return LLM_OK;

    case LLM_TPL_FN_FIND:
    case LLM_TPL_FN_RFIND:
    case LLM_TPL_FN_COUNT:
        if (a->npos != 1 || a->pos[0].type != LLM_TPL_STR) {
            return llm_tpl_fail(r, "expected one string argument");
        }

        s2 = a->pos[0].u.s;

        if (id != LLM_TPL_FN_COUNT) {
            if (llm_tpl_find(r, s, s2, id == LLM_TPL_FN_RFIND, &pos)
                != LLM_OK)
            {
                return LLM_ERR;
            }
            *out = llm_tpl_v_int(pos);
            return LLM_OK;
        }

        if (llm_tpl_steps(r, s.len / 64 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        if (s2.len == 0) {
            *out = llm_tpl_v_int((int64_t) llm_tpl_utf8_len(s.p, s.len) + 1);
            return LLM_OK;
        }

        n = 0;
        for (i = 0; i + s2.len <= s.len; /* void */) {
            const char  *hit;

            hit = memmem(s.p + i, s.len - i, s2.p, s2.len);
            if (hit == NULL) {
                break;
            }
            n++;
            i = hit - s.p + s2.len;
        }

        *out = llm_tpl_v_int(n);
        return LLM_OK;

    case LLM_TPL_FN_JOIN:
        if (a->npos != 1) {
            return llm_tpl_fail(r, "join() takes exactly one argument");
        }
        return llm_tpl_join(r, &a->pos[0], s, NULL, 1, out);

    default:
        break;
    }

    /* isdigit() and the like: true for a non-empty string that matches */
    any = 0;
    res = 1;
    cased = lower = upper = 0;

    for (i = 0; i < s.len; i += k) {
        k = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);
        any = 1;

        switch (id) {
        case LLM_TPL_FN_ISDIGIT:
            res &= llm_tpl_is_digit(cp);
            break;
        case LLM_TPL_FN_ISALPHA:
            res &= llm_tpl_is_alpha(cp);
            break;
        case LLM_TPL_FN_ISALNUM:
            res &= llm_tpl_is_alpha(cp) || llm_tpl_is_digit(cp);
            break;
        case LLM_TPL_FN_ISSPACE:
            res &= llm_tpl_is_space(cp);
            break;
        default:
            if (llm_tpl_is_cased(cp)) {
                cased = 1;
                lower |= llm_tpl_cp_upper(cp) != cp || cp == 0xdf;
                upper |= llm_tpl_cp_lower(cp) != cp;
            }
        }
    }

    if (id == LLM_TPL_FN_ISLOWER) {
        res = cased && !upper;

    } else if (id == LLM_TPL_FN_ISUPPER) {
        res = cased && !lower;

    } else {
        res = res && any;
    }

    *out = llm_tpl_v_bool(res);
    return LLM_OK;
}


/* str.find() and str.rfind(): a character index, or -1 */
static int
llm_tpl_find(llm_tpl_render_t *r, llm_tpl_str_t s, llm_tpl_str_t sub,
    int right, int64_t *pos)
{
    const char  *hit;

    if (llm_tpl_steps(r, s.len / 64 + 1) != LLM_OK) {
        return LLM_ERR;
    }

    if (right) {
        hit = llm_tpl_memrmem(s.p, s.len, sub.p, sub.len);

    } else if (sub.len == 0) {
        hit = s.p;

    } else {
        hit = sub.len <= s.len ? memmem(s.p, s.len, sub.p, sub.len) : NULL;
    }

    *pos = hit == NULL ? -1 : (int64_t) llm_tpl_utf8_len(s.p, hit - s.p);
    return LLM_OK;
}


/* ---- string formatting ------------------------------------------------ */

/* body padded to sp->width; sign_len bytes of sign and prefix go first */
static int
llm_tpl_pad(llm_tpl_render_t *r, llm_tpl_buf_t *b, const char *body,
    size_t len, const llm_tpl_spec_t *sp, int numeric, size_t sign_len)
{
    int       align;
    char      fill[4];
    size_t    ncp, pad, left, fl, i;
    uint32_t  fcp;

    ncp = llm_tpl_utf8_len(body, len);

    if (sp->width < 0 || (uint64_t) sp->width <= ncp) {
        return llm_tpl_buf_add(r, b, body, len);
    }

    pad = (size_t) sp->width - ncp;

    if (pad > r->max_output) {
        return llm_tpl_fail(r, "template output exceeds %zu bytes",
                            r->max_output);
    }

    align = sp->align ? sp->align : (numeric ? '>' : '<');
    fcp = sp->fill ? sp->fill : ' ';

    if (sp->zero && numeric && !sp->align) {
        fcp = '0';
        align = '=';
    }

    fl = llm_tpl_utf8_enc(fcp, fill);

    left = align == '>' || align == '=' ? pad : align == '^' ? pad / 2 : 0;

    if (align == '=' && llm_tpl_buf_add(r, b, body, sign_len) != LLM_OK) {
        return LLM_ERR;
    }

    for (i = 0; i < left; i++) {
        if (llm_tpl_buf_add(r, b, fill, fl) != LLM_OK) {
            return LLM_ERR;
        }
    }

    if (align == '=') {
        body += sign_len;
        len -= sign_len;
    }

    if (llm_tpl_buf_add(r, b, body, len) != LLM_OK) {
        return LLM_ERR;
    }

    for (i = left; i < pad; i++) {
        if (llm_tpl_buf_add(r, b, fill, fl) != LLM_OK) {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


/* an int or float formatted by sp (type already checked) */
static int
llm_tpl_fmt_number(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, const llm_tpl_spec_t *sp)
{
    int        k, type, neg, prec, base;
    char       num[600], out[800], *d, *o, *dot;
    double     f;
    size_t     n, i, intlen, sign_len;
    int64_t    iv;
    uint64_t   u;

    k = llm_tpl_num(v, &iv, &f);
    type = sp->type;
    o = out;

    if (type == 0) {
        type = k == 1 ? 'd' : 0;
    }

    if (k == 1 && strchr("eEfFgG%", type) != NULL) {
        k = 2;
        f = (double) iv;
    }

    if (k == 1) {
        neg = iv < 0;
        u = neg ? 0 - (uint64_t) iv : (uint64_t) iv;

        base = type == 'x' || type == 'X' ? 16 : type == 'o' ? 8
               : type == 'b' ? 2 : 10;

        d = num + sizeof(num);
        *--d = '\0';
        do {
            *--d = (type == 'X' ? "0123456789ABCDEF"
                                : "0123456789abcdef")[u % base];
            u /= base;
        } while (u);

        if (neg) {
            *o++ = '-';
        } else if (sp->sign) {
            *o++ = (char) sp->sign;
        }

        if (sp->alt && base != 10) {
            *o++ = '0';
            *o++ = type == 'b' ? 'b' : type == 'o' ? 'o'
                   : type == 'X' ? 'X' : 'x';
        }

    } else {
        neg = signbit(f) && !isnan(f);
        prec = sp->prec < 0 ? 6 : (sp->prec > 100 ? 100 : (int) sp->prec);

        if (type == 0 && sp->prec < 0) {
            llm_tpl_fmt_float(fabs(f), num, sizeof(num));

        } else if (type == 0) {
            /* like 'g', but with at least one digit after the point */
            snprintf(num, sizeof(num), "%.*g", prec ? prec : 1, fabs(f));
            if (strpbrk(num, ".einn") == NULL) {
                strcat(num, ".0");
            }

        } else if (type == '%') {
            snprintf(num, sizeof(num), "%.*f%%", prec, fabs(f) * 100);

        } else {
            char  fmt[8] = { '%', '.', '*', (char) type, '\0' };

            snprintf(num, sizeof(num), fmt, prec, fabs(f));
        }

        d = num;

        if (neg) {
            *o++ = '-';
        } else if (sp->sign) {
            *o++ = (char) sp->sign;
        }
    }

    sign_len = o - out;

    /* thousands grouping of the integer digits */
    dot = d;
    while (*dot >= '0' && *dot <= '9') {
        dot++;
    }
    intlen = dot - d;

    for (i = 0; i < intlen; i++) {
        *o++ = d[i];
        if (sp->grouping && (intlen - i - 1) % 3 == 0 && i + 1 < intlen) {
            *o++ = (char) sp->grouping;
        }
    }

    n = strlen(d + intlen);
    memcpy(o, d + intlen, n);
    o += n;

    return llm_tpl_pad(r, b, out, o - out, sp, 1, sign_len);
}


/* Python's format mini-language: [[fill]align][sign][#][0][width][,][.p][t] */
static int
llm_tpl_parse_spec(llm_tpl_render_t *r, llm_tpl_str_t spec,
    llm_tpl_spec_t *sp)
{
    size_t       i, k;
    uint32_t     cp;
    const char  *p;

    memset(sp, 0, sizeof(llm_tpl_spec_t));
    sp->width = -1;
    sp->prec = -1;

    p = spec.p;
    i = 0;

    if (spec.len > 0) {
        k = llm_tpl_utf8_dec(p, spec.len, &cp);

        if (k < spec.len && strchr("<>^=", p[k]) != NULL && p[k] != '\0') {
            sp->fill = cp;
            sp->align = p[k];
            i = k + 1;

        } else if (strchr("<>^=", p[0]) != NULL && p[0] != '\0') {
            sp->align = p[0];
            i = 1;
        }
    }

    if (i < spec.len && (p[i] == '+' || p[i] == '-' || p[i] == ' ')) {
        sp->sign = p[i] == '-' ? 0 : p[i];
        i++;
    }

    if (i < spec.len && p[i] == '#') {
        sp->alt = 1;
        i++;
    }

    if (i < spec.len && p[i] == '0') {
        sp->zero = 1;
        i++;
    }

    for ( /* void */ ; i < spec.len && p[i] >= '0' && p[i] <= '9'; i++) {
        sp->width = (sp->width < 0 ? 0 : sp->width) * 10 + (p[i] - '0');
        if (sp->width > 100000000) {
            return llm_tpl_fail(r, "Too many decimal digits in format"
                                " string");
        }
    }

    if (i < spec.len && (p[i] == ',' || p[i] == '_')) {
        sp->grouping = p[i];
        i++;
    }

    if (i < spec.len && p[i] == '.') {
        i++;
        sp->prec = 0;

        if (i >= spec.len || p[i] < '0' || p[i] > '9') {
            return llm_tpl_fail(r, "Format specifier missing precision");
        }

        for ( /* void */ ; i < spec.len && p[i] >= '0' && p[i] <= '9'; i++) {
            sp->prec = sp->prec * 10 + (p[i] - '0');
            if (sp->prec > 100000000) {
                return llm_tpl_fail(r, "Too many decimal digits in format"
                                    " string");
            }
        }
    }

    if (i < spec.len) {
        sp->type = (unsigned char) p[i];
        i++;
    }

    if (i != spec.len) {
        return llm_tpl_fail(r, "Invalid format specifier");
    }

    return LLM_OK;
}


/* format(v, spec) */
static int
llm_tpl_fmt_value(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, llm_tpl_str_t spec)
{
    size_t          i, k, n;
    uint32_t        cp;
    llm_tpl_str_t   s;
    llm_tpl_spec_t  sp;

    if (spec.len == 0) {
        return llm_tpl_add_str(r, b, v, 0);
    }

    if (llm_tpl_parse_spec(r, spec, &sp) != LLM_OK) {
        return LLM_ERR;
    }

    if (llm_tpl_is_num(v) && v->type != LLM_TPL_BOOL) {
        if (sp.type != 0 && strchr("bcdeEfFgGnoxX%", sp.type) == NULL) {
            goto bad;
        }

        if (v->type == LLM_TPL_FLOAT && sp.type != 0
            && strchr("bcdoxX", sp.type) != NULL)
        {
            goto bad;
        }

        return llm_tpl_fmt_number(r, b, v, &sp);
    }

    if (v->type != LLM_TPL_STR || (sp.type != 0 && sp.type != 's')) {
        if (v->type == LLM_TPL_STR || sp.type != 0 || sp.sign || sp.zero) {
            goto bad;
        }
    }

    if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
        return LLM_ERR;
    }

    /* a precision truncates a string to that many characters */
    if (sp.prec >= 0) {
        for (i = 0, n = 0; i < s.len && n < (size_t) sp.prec; i += k, n++) {
            k = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);
        }
        s.len = i;
    }

    return llm_tpl_pad(r, b, s.p, s.len, &sp, 0, 0);

bad:

    return llm_tpl_fail(r, "Unknown format code '%c' for object of type"
                        " '%s'", sp.type ? sp.type : '?',
                        llm_tpl_type_name(v));
}


/* str.format(*args, **kwargs) */
static int
llm_tpl_format_brace(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t fmt, llm_tpl_args_t *a)
{
    int             mode, conv, found;
    size_t          i, j, k, auto_idx, end;
    int64_t         idx;
    const char     *p;
    llm_tpl_str_t   field, spec, part;
    llm_tpl_val_t   v, key;
    llm_tpl_buf_t   tmp;

    p = fmt.p;
    auto_idx = 0;
    mode = 0;       /* 1: automatic numbering, 2: manual */

    for (i = 0; i < fmt.len; i++) {
        if (p[i] == '}') {
            if (i + 1 < fmt.len && p[i + 1] == '}') {
                i++;
                if (llm_tpl_buf_addc(r, b, '}') != LLM_OK) {
                    return LLM_ERR;
                }
                continue;
            }
            return llm_tpl_fail(r, "Single '}' encountered in format"
                                " string");
        }

        if (p[i] != '{') {
            if (llm_tpl_buf_addc(r, b, p[i]) != LLM_OK) {
                return LLM_ERR;
            }
            continue;
        }

        if (i + 1 < fmt.len && p[i + 1] == '{') {
            i++;
            if (llm_tpl_buf_addc(r, b, '{') != LLM_OK) {
                return LLM_ERR;
            }
            continue;
        }

        for (end = i + 1; end < fmt.len && p[end] != '}'; end++) {
            if (p[end] == '{') {
                return llm_tpl_fail(r, "nested format fields are not"
                                    " supported");
            }
        }

        if (end >= fmt.len) {
            return llm_tpl_fail(r, "Single '{' encountered in format"
                                " string");
        }

        /* {field!conv:spec} */
        field.p = p + i + 1;
        for (j = i + 1; j < end && p[j] != '!' && p[j] != ':'; j++) {
            /* void */
        }
        field.len = p + j - field.p;

        conv = 0;
        if (j < end && p[j] == '!') {
            if (j + 1 >= end || (p[j + 1] != 'r' && p[j + 1] != 's'
                                 && p[j + 1] != 'a'))
            {
                return llm_tpl_fail(r, "Unknown conversion specifier");
            }
            conv = p[j + 1];
            j += 2;
        }

        spec.p = p + end;
        spec.len = 0;
        if (j < end) {
            if (p[j] != ':') {
                return llm_tpl_fail(r, "expected ':' after conversion"
                                    " specifier");
            }
            spec.p = p + j + 1;
            spec.len = end - j - 1;
        }

        /* the first part of the field: a number, a name or nothing */
        for (k = 0; k < field.len && field.p[k] != '.' && field.p[k] != '[';
             k++)
        {
            /* void */
        }

        part.p = field.p;
        part.len = k;

        if (part.len == 0) {
            if (mode == 2) {
                return llm_tpl_fail(r, "cannot switch from manual field"
                                    " specification to automatic field"
                                    " numbering");
            }
            mode = 1;
            idx = (int64_t) auto_idx++;
            goto positional;
        }

        if (part.p[0] >= '0' && part.p[0] <= '9') {
            if (mode == 1) {
                return llm_tpl_fail(r, "cannot switch from automatic field"
                                    " numbering to manual field"
                                    " specification");
            }
            mode = 2;

            idx = 0;
            for (j = 0; j < part.len; j++) {
                if (part.p[j] < '0' || part.p[j] > '9' || idx > 1000000) {
                    return llm_tpl_fail(r, "bad format field");
                }
                idx = idx * 10 + (part.p[j] - '0');
            }

        positional:

            if ((uint64_t) idx >= a->npos) {
                return llm_tpl_fail(r, "Replacement index %lld out of range"
                                    " for positional args tuple",
                                    (long long) idx);
            }
            v = a->pos[idx];

        } else {
            found = 0;
            for (j = 0; j < a->nkw; j++) {
                if (a->kwnames[j].len == part.len
                    && memcmp(a->kwnames[j].p, part.p, part.len) == 0)
                {
                    v = a->kwvals[j];
                    found = 1;
                    break;
                }
            }

            if (!found) {
                return llm_tpl_fail(r, "'%.*s'", LLM_TPL_PREC(part.len),
                                    part.p);
            }
        }

        /* .attr and [key] after the first part */
        while (k < field.len) {
            if (field.p[k] == '.') {
                for (j = k + 1; j < field.len && field.p[j] != '.'
                     && field.p[j] != '['; j++)
                {
                    /* void */
                }

                part.p = field.p + k + 1;
                part.len = j - k - 1;

                if (llm_tpl_getattr(r, &v, part, &v) != LLM_OK) {
                    return LLM_ERR;
                }

            } else {
                for (j = k + 1; j < field.len && field.p[j] != ']'; j++) {
                    /* void */
                }

                if (j >= field.len) {
                    return llm_tpl_fail(r, "Missing ']' in format string");
                }

                part.p = field.p + k + 1;
                part.len = j - k - 1;
                key = llm_tpl_v_str(part.p, part.len);

                if (part.len > 0 && part.p[0] >= '0' && part.p[0] <= '9') {
                    if (llm_tpl_parse_int(part, 10, &idx) == LLM_OK) {
                        key = llm_tpl_v_int(idx);
                    }
                }

                if (llm_tpl_getitem(r, &v, &key, &v) != LLM_OK) {
                    return LLM_ERR;
                }

                j++;
            }

            k = j;
        }

        if (conv != 0) {
            memset(&tmp, 0, sizeof(tmp));

            if ((conv == 's' ? llm_tpl_add_str(r, &tmp, &v, 0)
                             : llm_tpl_add_repr(r, &tmp, &v, 0)) != LLM_OK)
            {
                return LLM_ERR;
            }

            v = llm_tpl_buf_val(&tmp);
        }

        if (llm_tpl_fmt_value(r, b, &v, spec) != LLM_OK) {
            return LLM_ERR;
        }

        i = end;
    }

    return LLM_OK;
}


/* printf-style: fmt % args */
int
llm_tpl_format_percent(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t fmt, const llm_tpl_val_t *args)
{
    int              conv, k, depth;
    double           f;
    size_t           i, j, used, nitems;
    int64_t          iv, star;
    const char      *p;
    llm_tpl_val_t    v, key, *items, single;
    llm_tpl_spec_t   sp;
    llm_tpl_buf_t    tmp;
    llm_tpl_str_t    s;

    p = fmt.p;

    if (args->type == LLM_TPL_LIST && args->u.list->tuple) {
        items = args->u.list->items;
        nitems = args->u.list->n;

    } else {
        single = *args;
        items = &single;
        nitems = 1;
    }

    used = 0;

    for (i = 0; i < fmt.len; i++) {
        if (p[i] != '%') {
            if (llm_tpl_buf_addc(r, b, p[i]) != LLM_OK) {
                return LLM_ERR;
            }
            continue;
        }

        if (++i >= fmt.len) {
            return llm_tpl_fail(r, "incomplete format");
        }

        memset(&sp, 0, sizeof(sp));
        sp.width = -1;
        sp.prec = -1;
        key.type = LLM_TPL_UNDEF;

        if (p[i] == '(') {
            if (args->type != LLM_TPL_DICT) {
                return llm_tpl_fail(r, "format requires a mapping");
            }

            depth = 1;
            for (j = i + 1; j < fmt.len && depth; j++) {
                depth += p[j] == '(' ? 1 : p[j] == ')' ? -1 : 0;
            }

            if (depth) {
                return llm_tpl_fail(r, "incomplete format key");
            }

            key = llm_tpl_v_str(p + i + 1, j - i - 2);
            i = j;
        }

        for ( /* void */ ; i < fmt.len && strchr("-+ #0", p[i]) != NULL
                           && p[i] != '\0'; i++)
        {
            switch (p[i]) {
            case '-':
                sp.align = '<';
                break;
            case '+':
                sp.sign = '+';
                break;
            case ' ':
                if (sp.sign != '+') {
                    sp.sign = ' ';
                }
                break;
            case '#':
                sp.alt = 1;
                break;
            default:
                sp.zero = 1;
            }
        }

        for (k = 0; k < 2; k++) {
            if (i < fmt.len && p[i] == '*') {
                if (used >= nitems
                    || llm_tpl_num(&items[used], &star, &f) != 1)
                {
                    return llm_tpl_fail(r, "* wants int");
                }
                used++;
                i++;

            } else {
                star = -1;
                for ( /* void */ ; i < fmt.len && p[i] >= '0' && p[i] <= '9';
                     i++)
                {
                    star = (star < 0 ? 0 : star) * 10 + (p[i] - '0');
                    if (star > 100000000) {
                        return llm_tpl_fail(r, "width too big");
                    }
                }
            }

            if (k == 0) {
                if (star < 0 && sp.width < 0) {
                    sp.width = -1;
                } else {
                    if (star < 0) {
                        star = -star;
                        sp.align = '<';
                    }
                    sp.width = star;
                }

                if (i < fmt.len && p[i] == '.') {
                    i++;
                    if (i >= fmt.len || (p[i] != '*'
                                         && (p[i] < '0' || p[i] > '9')))
                    {
                        sp.prec = 0;
                        break;
                    }
                    continue;
                }
                break;
            }

            sp.prec = star < 0 ? 0 : star;
        }

        while (i < fmt.len && (p[i] == 'h' || p[i] == 'l' || p[i] == 'L')) {
            i++;
        }

        if (i >= fmt.len) {
            return llm_tpl_fail(r, "incomplete format");
        }

        conv = (unsigned char) p[i];

        if (conv == '%') {
            if (llm_tpl_buf_addc(r, b, '%') != LLM_OK) {
                return LLM_ERR;
            }
            continue;
        }

        if (key.type == LLM_TPL_STR) {
            if (llm_tpl_dict_get(r, args->u.dict, &key, &v) != 1) {
                return r->failed ? LLM_ERR
                                 : llm_tpl_fail(r, "'%.*s'",
                                                LLM_TPL_PREC(key.u.s.len),
                                                key.u.s.p);
            }

        } else {
            if (used >= nitems) {
                return llm_tpl_fail(r, "not enough arguments for format"
                                    " string");
            }
            v = items[used++];
        }

        switch (conv) {
        case 's':
        case 'r':
        case 'a':
            memset(&tmp, 0, sizeof(tmp));

            if ((conv == 's' ? llm_tpl_add_str(r, &tmp, &v, 0)
                             : llm_tpl_add_repr(r, &tmp, &v, 0)) != LLM_OK)
            {
                return LLM_ERR;
            }

            s = llm_tpl_buf_val(&tmp).u.s;

            if (sp.prec >= 0) {
                size_t    n, ck;
                uint32_t  cp;

                for (j = 0, n = 0; j < s.len && n < (size_t) sp.prec;
                     j += ck, n++)
                {
                    ck = llm_tpl_utf8_dec(s.p + j, s.len - j, &cp);
                }
                s.len = j;
            }

            /* printf right-aligns strings unless told "-" */
            sp.zero = 0;
            if (sp.align == 0) {
                sp.align = '>';
            }

            if (llm_tpl_pad(r, b, s.p, s.len, &sp, 0, 0) != LLM_OK) {
                return LLM_ERR;
            }
            break;

        case 'd':
        case 'i':
        case 'u':
        case 'x':
        case 'X':
        case 'o':
        case 'e':
        case 'E':
        case 'f':
        case 'F':
        case 'g':
        case 'G':
            k = llm_tpl_num(&v, &iv, &f);

            if (k == 0) {
                return llm_tpl_fail(r, "%%%c format: a real number is"
                                    " required, not %s", conv,
                                    llm_tpl_type_name(&v));
            }

            if (strchr("diu", conv) != NULL) {
                if (k == 2) {
                    if (isnan(f) || isinf(f) || f >= 9.2e18 || f <= -9.2e18)
                    {
                        return llm_tpl_fail(r, "cannot convert float to"
                                            " integer");
                    }
                    iv = (int64_t) f;
                }
                v = llm_tpl_v_int(iv);
                conv = 'd';

            } else if (strchr("xXo", conv) != NULL) {
                if (k == 2) {
                    return llm_tpl_fail(r, "%%%c format: an integer is"
                                        " required, not float", conv);
                }
                v = llm_tpl_v_int(iv);

            } else {
                v = llm_tpl_v_float(f);
            }

            sp.type = conv;
            if (sp.align == '<') {
                sp.zero = 0;
            }

            if (llm_tpl_fmt_number(r, b, &v, &sp) != LLM_OK) {
                return LLM_ERR;
            }
            break;

        case 'c':
            if (v.type == LLM_TPL_STR
                && llm_tpl_utf8_len(v.u.s.p, v.u.s.len) == 1)
            {
                s = v.u.s;

            } else if (llm_tpl_num(&v, &iv, &f) == 1 && iv >= 0
                       && iv <= 0x10ffff)
            {
                char  cbuf[4];

                s.len = llm_tpl_utf8_enc((uint32_t) iv, cbuf);
                if (llm_tpl_strdup(r, cbuf, s.len, &v) != LLM_OK) {
                    return LLM_ERR;
                }
                s = v.u.s;

            } else {
                return llm_tpl_fail(r, "%%c requires an int or a char");
            }

            if (sp.align == 0) {
                sp.align = '>';
            }

            if (llm_tpl_pad(r, b, s.p, s.len, &sp, 0, 0) != LLM_OK) {
                return LLM_ERR;
            }
            break;

        default:
            return llm_tpl_fail(r, "unsupported format character '%c'"
                                " (0x%x)", conv >= 0x20 && conv < 0x7f
                                           ? conv : '?', conv);
        }
    }

    /* Python takes any subscriptable right operand for a mapping */
    if (used < nitems && args->type != LLM_TPL_DICT
        && args->type != LLM_TPL_UNDEF
        && !(args->type == LLM_TPL_LIST && !args->u.list->tuple))
    {
        return llm_tpl_fail(r, "not all arguments converted during string"
                            " formatting");
    }

    return LLM_OK;
}


/* ---- dates ------------------------------------------------------------ */

static int
llm_tpl_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}


static int
llm_tpl_month_days(int y, int m)
{
    static const int  days[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    return m == 1 && llm_tpl_leap(y) ? 29 : days[m];
}


/* the month named by s[0, len): full or three-letter, any case */
static int
llm_tpl_month(const char *s, size_t len)
{
    int  m;

    for (m = 0; m < 12; m++) {
        if ((len == 3 || len == strlen(llm_tpl_months[m]))
            && strncasecmp(s, llm_tpl_months[m], len) == 0)
        {
            return m;
        }
    }

    return -1;
}


/*
 * "15 Jan 2026", "January 15, 2026" or "2026-01-15"; the time of day
 * is midnight.
 */
int
llm_tpl_parse_date(const char *s, struct tm *tm)
{
    int          y, m, d, n, i, k;
    const char  *w;

    y = m = d = -1;

    if (sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) == 3 && s[n] == '\0') {
        m--;

    } else {
        y = m = d = -1;

        /* words and numbers in any of the two English orders */
        for (i = 0; s[i] != '\0'; /* void */) {
            if (s[i] == ' ' || s[i] == ',') {
                i++;
                continue;
            }

            if (s[i] >= '0' && s[i] <= '9') {
                k = 0;
                n = 0;
                while (s[i] >= '0' && s[i] <= '9' && n < 5) {
                    k = k * 10 + (s[i++] - '0');
                    n++;
                }

                if (n >= 3 && y < 0) {
                    y = k;
                } else if (n <= 2 && d < 0) {
                    d = k;
                } else {
                    return LLM_ERR;
                }
                continue;
            }

            w = s + i;
            while ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') {
                i++;
            }

            if (s + i == w || m >= 0) {
                return LLM_ERR;
            }

            m = llm_tpl_month(w, s + i - w);
            if (m < 0) {
                return LLM_ERR;
            }
        }
    }

    if (y < 1 || y > 9999 || m < 0 || m > 11 || d < 1
        || d > llm_tpl_month_days(y, m))
    {
        return LLM_ERR;
    }

    memset(tm, 0, sizeof(struct tm));
    tm->tm_year = y - 1900;
    tm->tm_mon = m;
    tm->tm_mday = d;

    for (k = 0; k < m; k++) {
        tm->tm_yday += llm_tpl_month_days(y, k);
    }
    tm->tm_yday += d - 1;

    /* Sakamoto's day of the week, 0 is Sunday */
    {
        static const int  t[] = { 0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4 };
        int               yy;

        yy = m < 2 ? y - 1 : y;
        tm->tm_wday = (yy + yy / 4 - yy / 100 + yy / 400 + t[m] + d) % 7;
    }

    return LLM_OK;
}


/* strftime() in the C locale, with glibc's "-" for no padding */
int
llm_tpl_strftime(llm_tpl_render_t *r, llm_tpl_buf_t *b, llm_tpl_str_t fmt,
    const struct tm *tm)
{
    int          pad, v, width, h12;
    char         tmp[64], c;
    size_t       i;
    const char  *s;

    for (i = 0; i < fmt.len; i++) {
        if (fmt.p[i] != '%' || i + 1 >= fmt.len) {
            if (llm_tpl_buf_addc(r, b, fmt.p[i]) != LLM_OK) {
                return LLM_ERR;
            }
            continue;
        }

        c = fmt.p[++i];
        pad = 1;

        if (c == '-' && i + 1 < fmt.len) {
            pad = 0;
            c = fmt.p[++i];
        }

        s = NULL;
        v = -1;
        width = 2;
        h12 = tm->tm_hour % 12 ? tm->tm_hour % 12 : 12;

        switch (c) {
        case 'a':
            snprintf(tmp, sizeof(tmp), "%.3s", llm_tpl_days[tm->tm_wday % 7]);
            s = tmp;
            break;
        case 'A':
            s = llm_tpl_days[tm->tm_wday % 7];
            break;
        case 'b':
        case 'h':
            snprintf(tmp, sizeof(tmp), "%.3s", llm_tpl_months[tm->tm_mon % 12]);
            s = tmp;
            break;
        case 'B':
            s = llm_tpl_months[tm->tm_mon % 12];
            break;
        case 'd':
            v = tm->tm_mday;
            break;
        case 'e':
            snprintf(tmp, sizeof(tmp), pad ? "%2d" : "%d", tm->tm_mday);
            s = tmp;
            break;
        case 'm':
            v = tm->tm_mon + 1;
            break;
        case 'y':
            v = (tm->tm_year + 1900) % 100;
            break;
        case 'Y':
            snprintf(tmp, sizeof(tmp), "%d", tm->tm_year + 1900);
            s = tmp;
            break;
        case 'H':
            v = tm->tm_hour;
            break;
        case 'I':
            v = h12;
            break;
        case 'M':
            v = tm->tm_min;
            break;
        case 'S':
            v = tm->tm_sec;
            break;
        case 'p':
            s = tm->tm_hour < 12 ? "AM" : "PM";
            break;
        case 'j':
            v = tm->tm_yday + 1;
            width = 3;
            break;
        case 'w':
            v = tm->tm_wday;
            width = 1;
            break;
        case 'u':
            v = tm->tm_wday ? tm->tm_wday : 7;
            width = 1;
            break;
        case 'F':
            snprintf(tmp, sizeof(tmp), "%d-%02d-%02d", tm->tm_year + 1900,
                     tm->tm_mon + 1, tm->tm_mday);
            s = tmp;
            break;
        case 'D':
        case 'x':
            snprintf(tmp, sizeof(tmp), "%02d/%02d/%02d", tm->tm_mon + 1,
                     tm->tm_mday, (tm->tm_year + 1900) % 100);
            s = tmp;
            break;
        case 'T':
        case 'X':
            snprintf(tmp, sizeof(tmp), "%02d:%02d:%02d", tm->tm_hour,
                     tm->tm_min, tm->tm_sec);
            s = tmp;
            break;
        case 'R':
            snprintf(tmp, sizeof(tmp), "%02d:%02d", tm->tm_hour, tm->tm_min);
            s = tmp;
            break;
        case 'c':
            snprintf(tmp, sizeof(tmp), "%.3s %.3s %2d %02d:%02d:%02d %d",
                     llm_tpl_days[tm->tm_wday % 7],
                     llm_tpl_months[tm->tm_mon % 12], tm->tm_mday,
                     tm->tm_hour, tm->tm_min, tm->tm_sec,
                     tm->tm_year + 1900);
            s = tmp;
            break;
        case 'n':
            s = "\n";
            break;
        case 't':
            s = "\t";
            break;
        case '%':
            s = "%";
            break;
        case 'Z':
        case 'z':
            s = "";
            break;
        default:
            tmp[0] = '%';
            tmp[1] = c;
            tmp[2] = '\0';
            s = tmp;
        }

        if (s == NULL) {
            if (pad) {
                snprintf(tmp, sizeof(tmp), "%0*d", width, v);
            } else {
                snprintf(tmp, sizeof(tmp), "%d", v);
            }
            s = tmp;
        }

        if (llm_tpl_buf_adds(r, b, s) != LLM_OK) {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}
