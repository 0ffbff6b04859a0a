/*
 * Copyright (C) ngx_llm developers
 *
 * Template lexer: source text to tokens, applying jinja2's whitespace
 * control as HF configures it: trim_blocks (the first newline after a
 * block or comment tag goes), lstrip_blocks (spaces and tabs from the
 * start of a line up to a block or comment tag go), "-" on a tag strips
 * all whitespace on that side, "+" keeps it.  Newlines are normalised to
 * "\n" and one trailing newline is dropped, as jinja2 does by default.
 */

#include <stdlib.h>
#include <string.h>

#include "llm_template_int.h"


typedef struct {
    llm_tpl_parser_t  *p;
    const char        *s;          /* normalised source, in the arena */
    size_t             len;
    size_t             pos;
    int                line;       /* at pos */
    int                line_starting;
} llm_tpl_lexer_t;


static int llm_tpl_lex_fail(llm_tpl_lexer_t *lx, int line, const char *fmt,
    ...) __attribute__((format(printf, 3, 4)));
static int llm_tpl_lex_push(llm_tpl_lexer_t *lx, int type, int line,
    const char *p, size_t len);
static void llm_tpl_lex_seek(llm_tpl_lexer_t *lx, size_t pos);
static size_t llm_tpl_lex_skip_ws(llm_tpl_lexer_t *lx, size_t pos);
static size_t llm_tpl_lex_rstrip(const char *s, size_t start, size_t end);
static size_t llm_tpl_lex_lstrip_block(llm_tpl_lexer_t *lx, size_t start,
    size_t end);
static int llm_tpl_lex_data(llm_tpl_lexer_t *lx, size_t start, size_t end);
static int llm_tpl_lex_comment(llm_tpl_lexer_t *lx, size_t q, int line);
static size_t llm_tpl_lex_raw_begin(llm_tpl_lexer_t *lx, size_t q);
static int llm_tpl_lex_raw(llm_tpl_lexer_t *lx, size_t rb_end, int strip,
    int line);
static int llm_tpl_lex_tag(llm_tpl_lexer_t *lx, int block, int line);
static int llm_tpl_lex_token(llm_tpl_lexer_t *lx, char *stack, int *depth);
static int llm_tpl_lex_number(llm_tpl_lexer_t *lx);
static int llm_tpl_lex_string(llm_tpl_lexer_t *lx);
static int llm_tpl_hex(int c);


int
llm_tpl_lex(llm_tpl_parser_t *p, const char *src, size_t len)
{
    int               sign, kind, line;
    char             *s;
    size_t            i, n, tag, q, data_end, rb_end;
    llm_tpl_lexer_t   lx;

    /* newlines normalised to \n, and one trailing newline dropped */
    s = llm_tpl_alloc(p->arena, len + 1);
    if (s == NULL) {
        return llm_err_set(p->err, LLM_ENOMEM, "template: out of memory");
    }

    n = 0;
    for (i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') {
                i++;
            }

        } else {
            s[n++] = src[i];
        }
    }

    if (n > 0 && s[n - 1] == '\n') {
        n--;
    }

    memset(&lx, 0, sizeof(lx));
    lx.p = p;
    lx.s = s;
    lx.len = n;
    lx.line = 1;
    lx.line_starting = 1;

    while (lx.pos < lx.len) {

        /* the next "{{", "{%" or "{#" */
        tag = lx.len;
        for (i = lx.pos; i + 1 < lx.len; i++) {
            if (s[i] == '{'
                && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#'))
            {
                tag = i;
                break;
            }
        }

        if (tag == lx.len) {
            if (llm_tpl_lex_data(&lx, lx.pos, lx.len) != LLM_OK) {
                return LLM_ERR;
            }
            llm_tpl_lex_seek(&lx, lx.len);
            break;
        }

        kind = s[tag + 1];
        sign = 0;
        if (tag + 2 < lx.len && (s[tag + 2] == '-' || s[tag + 2] == '+')) {
            sign = s[tag + 2];
        }

        q = tag + 2 + (sign ? 1 : 0);

        rb_end = 0;
        if (kind == '%') {
            rb_end = llm_tpl_lex_raw_begin(&lx, q);
        }

        data_end = tag;

        if (sign == '-') {
            data_end = llm_tpl_lex_rstrip(s, lx.pos, tag);

        } else if (sign != '+' && kind != '{') {
            data_end = llm_tpl_lex_lstrip_block(&lx, lx.pos, tag);
        }

        if (llm_tpl_lex_data(&lx, lx.pos, data_end) != LLM_OK) {
            return LLM_ERR;
        }

        llm_tpl_lex_seek(&lx, tag);
        line = lx.line;
        lx.line_starting = 0;

        if (kind == '#') {
            if (llm_tpl_lex_comment(&lx, q, line) != LLM_OK) {
                return LLM_ERR;
            }
            continue;
        }

        if (rb_end != 0) {
            llm_tpl_lex_seek(&lx, rb_end);
            if (llm_tpl_lex_raw(&lx, rb_end, s[rb_end - 3] == '-', line)
                != LLM_OK)
            {
                return LLM_ERR;
            }
            continue;
        }

        llm_tpl_lex_seek(&lx, q);

        if (llm_tpl_lex_tag(&lx, kind == '%', line) != LLM_OK) {
            return LLM_ERR;
        }
    }

    return llm_tpl_lex_push(&lx, LLM_TPL_T_EOF, lx.line, NULL, 0);
}


static int
llm_tpl_lex_fail(llm_tpl_lexer_t *lx, int line, const char *fmt, ...)
{
    char     msg[LLM_ERRSTR_MAX];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    return llm_err_set(lx->p->err, LLM_EFORMAT, "template line %d: %s",
                       line, msg);
}


static int
llm_tpl_lex_push(llm_tpl_lexer_t *lx, int type, int line, const char *p,
    size_t len)
{
    size_t              cap;
    llm_tpl_tok_t      *t;
    llm_tpl_parser_t   *ps;

    ps = lx->p;

    if (ps->ntoks == ps->cap) {
        cap = ps->cap ? ps->cap * 2 : 256;

        t = realloc(ps->toks, cap * sizeof(llm_tpl_tok_t));
        if (t == NULL) {
            return llm_err_set(ps->err, LLM_ENOMEM,
                               "template: out of memory");
        }

        ps->toks = t;
        ps->cap = cap;
    }

    t = &ps->toks[ps->ntoks++];
    memset(t, 0, sizeof(llm_tpl_tok_t));
    t->type = type;
    t->line = line;
    t->s.p = p;
    t->s.len = len;

    return LLM_OK;
}


static void
llm_tpl_lex_seek(llm_tpl_lexer_t *lx, size_t pos)
{
    const char  *nl, *end;

    end = lx->s + pos;

    for (nl = lx->s + lx->pos; nl < end; nl++) {
        nl = memchr(nl, '\n', end - nl);
        if (nl == NULL) {
            break;
        }
        lx->line++;
    }

    lx->pos = pos;
}


/* after "-%}", "-}}" or "-#}": all whitespace goes */
static size_t
llm_tpl_lex_skip_ws(llm_tpl_lexer_t *lx, size_t pos)
{
    size_t    k;
    uint32_t  cp;

    lx->line_starting = 0;

    while (pos < lx->len) {
        k = llm_tpl_utf8_dec(lx->s + pos, lx->len - pos, &cp);
        if (!llm_tpl_is_space(cp)) {
            break;
        }
        lx->line_starting = cp == '\n';
        pos += k;
    }

    return pos;
}


/* the end of s[start, end) without trailing whitespace */
static size_t
llm_tpl_lex_rstrip(const char *s, size_t start, size_t end)
{
    size_t    k, last;
    uint32_t  cp;

    last = start;

    for (k = start; k < end; /* void */) {
        k += llm_tpl_utf8_dec(s + k, end - k, &cp);
        if (!llm_tpl_is_space(cp)) {
            last = k;
        }
    }

    return last;
}


/*
 * lstrip_blocks: when only whitespace stands between the start of the
 * line and a block or comment tag, it goes.  A line starts after "\n"
 * in the text, at the start of the template, and after a tag whose
 * match ended with "\n" (trim_blocks ate it).
 */
static size_t
llm_tpl_lex_lstrip_block(llm_tpl_lexer_t *lx, size_t start, size_t end)
{
    size_t       l, k;
    uint32_t     cp;
    const char  *s;

    s = lx->s;

    for (l = end; l > start && s[l - 1] != '\n'; l--) {
        /* void */
    }

    if (l == start && !lx->line_starting) {
        return end;
    }

    if (l == end) {
        return end;
    }

    for (k = l; k < end; /* void */) {
        k += llm_tpl_utf8_dec(s + k, end - k, &cp);
        if (!llm_tpl_is_space(cp)) {
            return end;
        }
    }

    return l;
}


static int
llm_tpl_lex_data(llm_tpl_lexer_t *lx, size_t start, size_t end)
{
    if (end <= start) {
        return LLM_OK;
    }

    llm_tpl_lex_seek(lx, start);

    return llm_tpl_lex_push(lx, LLM_TPL_T_DATA, lx->line, lx->s + start,
                            end - start);
}


static int
llm_tpl_lex_comment(llm_tpl_lexer_t *lx, size_t q, int line)
{
    size_t       e;
    const char  *s, *hit;

    s = lx->s;
    e = lx->len;

    for (hit = s + q; hit < s + lx->len; hit++) {
        hit = memchr(hit, '#', s + lx->len - hit);
        if (hit == NULL) {
            break;
        }

        if (hit + 1 < s + lx->len && hit[1] == '}') {
            e = hit - s;
            break;
        }
    }

    if (e == lx->len) {
        return llm_tpl_lex_fail(lx, line, "comment is not closed");
    }

    llm_tpl_lex_seek(lx, e + 2);

    if (e > q && s[e - 1] == '-') {
        llm_tpl_lex_seek(lx, llm_tpl_lex_skip_ws(lx, e + 2));

    } else if (e > q && s[e - 1] == '+') {
        lx->line_starting = 0;

    } else if (lx->pos < lx->len && s[lx->pos] == '\n') {
        llm_tpl_lex_seek(lx, lx->pos + 1);
        lx->line_starting = 1;

    } else {
        lx->line_starting = 0;
    }

    return LLM_OK;
}


/*
 * The end of "{% raw %}" when the tag at q (after "{%" and its sign) is
 * one, else 0.  The char before "%}" there is never '-' unless the tag
 * ends with "-%}": the caller tests that.
 */
static size_t
llm_tpl_lex_raw_begin(llm_tpl_lexer_t *lx, size_t q)
{
    const char  *s;

    s = lx->s;

    while (q < lx->len && (s[q] == ' ' || s[q] == '\t' || s[q] == '\n')) {
        q++;
    }

    if (lx->len - q < 5 || memcmp(s + q, "raw", 3) != 0) {
        return 0;
    }

    q += 3;

    while (q < lx->len && (s[q] == ' ' || s[q] == '\t' || s[q] == '\n')) {
        q++;
    }

    if (q + 2 < lx->len && (s[q] == '-' || s[q] == '+') && s[q + 1] == '%'
        && s[q + 2] == '}')
    {
        return q + 3;
    }

    if (q + 1 < lx->len && s[q] == '%' && s[q + 1] == '}') {
        return q + 2;
    }

    return 0;
}


static int
llm_tpl_lex_raw(llm_tpl_lexer_t *lx, size_t rb_end, int strip, int line)
{
    int          sign;
    size_t       k, j, start, end;
    const char  *s;

    s = lx->s;
    start = rb_end;
    lx->line_starting = 0;

    if (strip) {
        start = llm_tpl_lex_skip_ws(lx, rb_end);
    }

    for (k = start; k + 1 < lx->len; k++) {
        if (s[k] != '{' || s[k + 1] != '%') {
            continue;
        }

        j = k + 2;
        sign = 0;
        if (j < lx->len && (s[j] == '-' || s[j] == '+')) {
            sign = s[j++];
        }

        while (j < lx->len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n'))
        {
            j++;
        }

        if (lx->len - j < 6 || memcmp(s + j, "endraw", 6) != 0) {
            continue;
        }
        j += 6;

        while (j < lx->len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n'))
        {
            j++;
        }

        if (j + 2 < lx->len && (s[j] == '-' || s[j] == '+')
            && s[j + 1] == '%' && s[j + 2] == '}')
        {
            end = j + 3;

        } else if (j + 1 < lx->len && s[j] == '%' && s[j + 1] == '}') {
            end = j + 2;

        } else {
            continue;
        }

        if (sign == '-') {
            j = llm_tpl_lex_rstrip(s, start, k);

        } else if (sign != '+') {
            j = llm_tpl_lex_lstrip_block(lx, start, k);

        } else {
            j = k;
        }

        if (llm_tpl_lex_data(lx, start, j) != LLM_OK) {
            return LLM_ERR;
        }

        llm_tpl_lex_seek(lx, end);
        lx->line_starting = 0;

        if (s[end - 3] == '-') {
            llm_tpl_lex_seek(lx, llm_tpl_lex_skip_ws(lx, end));

        } else if (s[end - 3] != '+' && end < lx->len && s[end] == '\n') {
            llm_tpl_lex_seek(lx, end + 1);
            lx->line_starting = 1;
        }

        return LLM_OK;
    }

    return llm_tpl_lex_fail(lx, line, "raw block is not closed");
}


/* the inside of "{{ ... }}" or "{% ... %}", lx->pos after the opener */
static int
llm_tpl_lex_tag(llm_tpl_lexer_t *lx, int block, int line)
{
    int          depth;
    char         stack[LLM_TEMPLATE_MAX_DEPTH];
    size_t       pos;
    const char  *s;

    s = lx->s;
    depth = 0;

    if (llm_tpl_lex_push(lx, block ? LLM_TPL_T_BLOCK_BEGIN
                                   : LLM_TPL_T_VAR_BEGIN, line, NULL, 0)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    for ( ;; ) {
        pos = lx->pos;

        while (pos < lx->len
               && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n'
                   || s[pos] == '\r' || s[pos] == '\f' || s[pos] == '\v'))
        {
            pos++;
        }

        llm_tpl_lex_seek(lx, pos);

        if (pos >= lx->len) {
            return llm_tpl_lex_fail(lx, line, "%s is not closed",
                                    block ? "\"{%\"" : "\"{{\"");
        }

        if (depth == 0) {
            if (block && s[pos] == '-' && lx->len - pos >= 3
                && s[pos + 1] == '%' && s[pos + 2] == '}')
            {
                llm_tpl_lex_seek(lx, pos + 3);
                llm_tpl_lex_seek(lx, llm_tpl_lex_skip_ws(lx, pos + 3));
                break;
            }

            if (block && s[pos] == '+' && lx->len - pos >= 3
                && s[pos + 1] == '%' && s[pos + 2] == '}')
            {
                llm_tpl_lex_seek(lx, pos + 3);
                lx->line_starting = 0;
                break;
            }

            if (block && s[pos] == '%' && lx->len - pos >= 2
                && s[pos + 1] == '}')
            {
                llm_tpl_lex_seek(lx, pos + 2);
                lx->line_starting = 0;

                if (lx->pos < lx->len && s[lx->pos] == '\n') {
                    llm_tpl_lex_seek(lx, lx->pos + 1);
                    lx->line_starting = 1;
                }
                break;
            }

            if (!block && s[pos] == '-' && lx->len - pos >= 3
                && s[pos + 1] == '}' && s[pos + 2] == '}')
            {
                llm_tpl_lex_seek(lx, pos + 3);
                llm_tpl_lex_seek(lx, llm_tpl_lex_skip_ws(lx, pos + 3));
                break;
            }

            if (!block && s[pos] == '}' && lx->len - pos >= 2
                && s[pos + 1] == '}')
            {
                llm_tpl_lex_seek(lx, pos + 2);
                lx->line_starting = 0;
                break;
            }
        }

        if (llm_tpl_lex_token(lx, stack, &depth) != LLM_OK) {
            return LLM_ERR;
        }
    }

    return llm_tpl_lex_push(lx, block ? LLM_TPL_T_BLOCK_END
                                      : LLM_TPL_T_VAR_END, lx->line, NULL, 0);
}


static int
llm_tpl_lex_token(llm_tpl_lexer_t *lx, char *stack, int *depth)
{
    int          op;
    char         c, c2, open;
    size_t       pos, n;
    const char  *s;

    s = lx->s;
    pos = lx->pos;
    c = s[pos];
    c2 = pos + 1 < lx->len ? s[pos + 1] : '\0';

    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
        for (n = pos + 1; n < lx->len; n++) {
            c = s[n];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || (c >= '0' && c <= '9') || c == '_'))
            {
                break;
            }
        }

        if (llm_tpl_lex_push(lx, LLM_TPL_T_NAME, lx->line, s + pos, n - pos)
            != LLM_OK)
        {
            return LLM_ERR;
        }

        lx->pos = n;
        return LLM_OK;
    }

    if (c >= '0' && c <= '9') {
        return llm_tpl_lex_number(lx);
    }

    if (c == '\'' || c == '"') {
        return llm_tpl_lex_string(lx);
    }

    n = 2;
    op = 0;

    if (c == '/' && c2 == '/') {
        op = LLM_TPL_OP_FLOORDIV;

    } else if (c == '*' && c2 == '*') {
        op = LLM_TPL_OP_POW;

    } else if (c == '=' && c2 == '=') {
        op = LLM_TPL_OP_EQ;

    } else if (c == '!' && c2 == '=') {
        op = LLM_TPL_OP_NE;

    } else if (c == '>' && c2 == '=') {
        op = LLM_TPL_OP_GE;

    } else if (c == '<' && c2 == '=') {
        op = LLM_TPL_OP_LE;

    } else if (c != '\0' && strchr("+-*/%~[](){}<>=.:|,;", c) != NULL) {
        op = (unsigned char) c;
        n = 1;
    }

    if (op == 0) {
        if ((unsigned char) c >= 0x20 && (unsigned char) c < 0x7f) {
            return llm_tpl_lex_fail(lx, lx->line, "unexpected char '%c'", c);
        }
        return llm_tpl_lex_fail(lx, lx->line, "unexpected byte 0x%02x",
                                (unsigned char) c);
    }

    if (c == '(' || c == '[' || c == '{') {
        if (*depth >= LLM_TEMPLATE_MAX_DEPTH) {
            return llm_tpl_lex_fail(lx, lx->line,
                                    "brackets nested more than %d deep",
                                    LLM_TEMPLATE_MAX_DEPTH);
        }
        stack[(*depth)++] = c;

    } else if (c == ')' || c == ']' || c == '}') {
        open = c == ')' ? '(' : (c == ']' ? '[' : '{');

        if (*depth == 0 || stack[*depth - 1] != open) {
            return llm_tpl_lex_fail(lx, lx->line, "unexpected '%c'", c);
        }
        (*depth)--;
    }

    if (llm_tpl_lex_push(lx, LLM_TPL_T_OP, lx->line, s + pos, n) != LLM_OK) {
        return LLM_ERR;
    }

    lx->p->toks[lx->p->ntoks - 1].op = op;
    lx->pos = pos + n;

    return LLM_OK;
}


static int
llm_tpl_lex_number(llm_tpl_lexer_t *lx)
{
    int              base, is_float, d, after_dot;
    char             buf[64], c;
    size_t           pos, n, k;
    int64_t          v;
    const char      *s;
    llm_tpl_tok_t   *t, *prev;

    s = lx->s;
    pos = lx->pos;
    base = 10;
    is_float = 0;

    /* after "." only an integer: x.0.1 is x[0][1], not x[0.1] */
    prev = lx->p->ntoks ? &lx->p->toks[lx->p->ntoks - 1] : NULL;
    after_dot = prev != NULL && prev->type == LLM_TPL_T_OP && prev->op == '.';

    if (s[pos] == '0' && pos + 1 < lx->len) {
        c = s[pos + 1] | 0x20;
        base = c == 'x' ? 16 : (c == 'o' ? 8 : (c == 'b' ? 2 : 10));
    }

    n = pos;

    if (base != 10) {
        n = pos + 2;
        v = 0;

        for ( /* void */ ; n < lx->len; n++) {
            if (s[n] == '_') {
                continue;
            }

            d = llm_tpl_hex(s[n]);
            if (d < 0 || d >= base) {
                break;
            }

            if (v > (INT64_MAX - d) / base) {
                return llm_tpl_lex_fail(lx, lx->line,
                                        "integer literal too large");
            }
            v = v * base + d;
        }

        if (n == pos + 2) {
            return llm_tpl_lex_fail(lx, lx->line, "bad number literal");
        }

        goto integer;
    }

    while (n < lx->len && ((s[n] >= '0' && s[n] <= '9')
                           || (s[n] == '_' && n + 1 < lx->len
                               && s[n + 1] >= '0' && s[n + 1] <= '9')))
    {
        n++;
    }

    if (!after_dot && n + 1 < lx->len && s[n] == '.'
        && s[n + 1] >= '0' && s[n + 1] <= '9')
    {
        is_float = 1;
        n++;
        while (n < lx->len && ((s[n] >= '0' && s[n] <= '9') || s[n] == '_')) {
            n++;
        }
    }

    if (!after_dot && n < lx->len && (s[n] == 'e' || s[n] == 'E')) {
        k = n + 1;
        if (k < lx->len && (s[k] == '+' || s[k] == '-')) {
            k++;
        }

        if (k < lx->len && s[k] >= '0' && s[k] <= '9') {
            is_float = 1;
            n = k;
            while (n < lx->len
                   && ((s[n] >= '0' && s[n] <= '9') || s[n] == '_'))
            {
                n++;
            }
        }
    }

    if (is_float) {
        if (n - pos >= sizeof(buf)) {
            return llm_tpl_lex_fail(lx, lx->line, "float literal too long");
        }

        d = 0;
        for (k = pos; k < n; k++) {
            if (s[k] != '_') {
                buf[d++] = s[k];
            }
        }
        buf[d] = '\0';

        if (llm_tpl_lex_push(lx, LLM_TPL_T_FLOAT, lx->line, s + pos, n - pos)
            != LLM_OK)
        {
            return LLM_ERR;
        }

        t = &lx->p->toks[lx->p->ntoks - 1];
        t->f = strtod(buf, NULL);
        lx->pos = n;
        return LLM_OK;
    }

    v = 0;
    for (k = pos; k < n; k++) {
        if (s[k] == '_') {
            continue;
        }

        d = s[k] - '0';
        if (v > (INT64_MAX - d) / 10) {
            return llm_tpl_lex_fail(lx, lx->line, "integer literal too large");
        }
        v = v * 10 + d;
    }

integer:

    if (llm_tpl_lex_push(lx, LLM_TPL_T_INT, lx->line, s + pos, n - pos)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    lx->p->toks[lx->p->ntoks - 1].i = v;
    lx->pos = n;

    return LLM_OK;
}


static int
llm_tpl_hex(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* a quoted literal with Python's escapes */
static int
llm_tpl_lex_string(llm_tpl_lexer_t *lx)
{
    int          line, d, nd, i;
    char         q, c, *out;
    size_t       pos, end, k, o;
    uint32_t     cp;
    const char  *s;

    s = lx->s;
    pos = lx->pos;
    q = s[pos];
    line = lx->line;

    for (end = pos + 1; end < lx->len && s[end] != q; end++) {
        if (s[end] == '\\') {
            end++;
        }
    }

    if (end >= lx->len) {
        return llm_tpl_lex_fail(lx, line, "string is not closed");
    }

    if (memchr(s + pos + 1, '\\', end - pos - 1) == NULL) {
        if (llm_tpl_lex_push(lx, LLM_TPL_T_STRING, line, s + pos + 1,
                             end - pos - 1) != LLM_OK)
        {
            return LLM_ERR;
        }

        llm_tpl_lex_seek(lx, end + 1);
        return LLM_OK;
    }

    /* escapes never make the text longer */
    out = llm_tpl_alloc(lx->p->arena, end - pos);
    if (out == NULL) {
        return llm_err_set(lx->p->err, LLM_ENOMEM, "template: out of memory");
    }

    o = 0;

    for (k = pos + 1; k < end; k++) {
        c = s[k];

        if (c != '\\') {
            out[o++] = c;
            continue;
        }

        c = s[++k];

        switch (c) {
        case '\n':
            continue;
        case 'n':
            out[o++] = '\n';
            continue;
        case 't':
            out[o++] = '\t';
            continue;
        case 'r':
            out[o++] = '\r';
            continue;
        case 'a':
            out[o++] = '\a';
            continue;
        case 'b':
            out[o++] = '\b';
            continue;
        case 'f':
            out[o++] = '\f';
            continue;
        case 'v':
            out[o++] = '\v';
            continue;
        case '\\':
        case '\'':
        case '"':
            out[o++] = c;
            continue;
        case 'x':
            nd = 2;
            break;
        case 'u':
            nd = 4;
            break;
        case 'U':
            nd = 8;
            break;
        default:
            if (c >= '0' && c <= '7') {
                cp = 0;
                for (i = 0; i < 3 && k < end && s[k] >= '0' && s[k] <= '7';
                     i++, k++)
                {
                    cp = cp * 8 + (s[k] - '0');
                }
                k--;
                o += llm_tpl_utf8_enc(cp, out + o);
                continue;
            }

            /* an unknown escape stays as written */
            out[o++] = '\\';
            out[o++] = c;
            continue;
        }

        cp = 0;
        for (i = 0; i < nd; i++) {
            d = k + 1 + i < end ? llm_tpl_hex(s[k + 1 + i]) : -1;
            if (d < 0) {
                return llm_tpl_lex_fail(lx, line,
                                        "truncated \\%c escape in a string",
                                        c);
            }
            cp = cp * 16 + d;
        }
        k += nd;

        if (cp > 0x10ffff) {
            return llm_tpl_lex_fail(lx, line,
                                    "bad \\U escape in a string");
        }

        if (cp >= 0xd800 && cp <= 0xdfff) {
            cp = 0xfffd;
        }

        o += llm_tpl_utf8_enc(cp, out + o);
    }

    if (llm_tpl_lex_push(lx, LLM_TPL_T_STRING, line, out, o) != LLM_OK) {
        return LLM_ERR;
    }

    llm_tpl_lex_seek(lx, end + 1);
    return LLM_OK;
}
