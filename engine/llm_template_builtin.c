/*
 * Copyright (C) ngx_llm developers
 *
 * Template builtins: jinja2's filters and tests, the Python str, dict
 * and list methods templates call, the globals HF provides (range,
 * namespace, dict, raise_exception, strftime_now) and the two string
 * formatting languages (printf-style "%" and str.format()).
 *
 * As in HF's ImmutableSandboxedEnvironment, methods that would modify a
 * list or dict (append, update ...) are refused.
 */

#define _GNU_SOURCE             /* memmem() */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm_template_int.h"


typedef struct {
    const char  *name;
    int          id;
} llm_tpl_name_t;

enum {
    LLM_TPL_F_ABS = 0,
    LLM_TPL_F_ATTR,
    LLM_TPL_F_CAPITALIZE,
    LLM_TPL_F_CENTER,
    LLM_TPL_F_DEFAULT,
    LLM_TPL_F_DICTSORT,
    LLM_TPL_F_ESCAPE,
    LLM_TPL_F_FIRST,
    LLM_TPL_F_FLOAT,
    LLM_TPL_F_FORMAT,
    LLM_TPL_F_INDENT,
    LLM_TPL_F_INT,
    LLM_TPL_F_ITEMS,
    LLM_TPL_F_JOIN,
    LLM_TPL_F_LAST,
    LLM_TPL_F_LENGTH,
    LLM_TPL_F_LIST,
    LLM_TPL_F_LOWER,
    LLM_TPL_F_MAP,
    LLM_TPL_F_MAX,
    LLM_TPL_F_MIN,
    LLM_TPL_F_REJECT,
    LLM_TPL_F_REJECTATTR,
    LLM_TPL_F_REPLACE,
    LLM_TPL_F_REVERSE,
    LLM_TPL_F_ROUND,
    LLM_TPL_F_SAFE,
    LLM_TPL_F_SELECT,
    LLM_TPL_F_SELECTATTR,
    LLM_TPL_F_SORT,
    LLM_TPL_F_STRING,
    LLM_TPL_F_SUM,
    LLM_TPL_F_TITLE,
    LLM_TPL_F_TOJSON,
    LLM_TPL_F_TRIM,
    LLM_TPL_F_UNIQUE,
    LLM_TPL_F_UPPER,
    LLM_TPL_F_WORDCOUNT
};

static const llm_tpl_name_t  llm_tpl_filters[] = {
    { "abs", LLM_TPL_F_ABS },
    { "attr", LLM_TPL_F_ATTR },
    { "capitalize", LLM_TPL_F_CAPITALIZE },
    { "center", LLM_TPL_F_CENTER },
    { "count", LLM_TPL_F_LENGTH },
    { "d", LLM_TPL_F_DEFAULT },
    { "default", LLM_TPL_F_DEFAULT },
    { "dictsort", LLM_TPL_F_DICTSORT },
    { "e", LLM_TPL_F_ESCAPE },
    { "escape", LLM_TPL_F_ESCAPE },
    { "first", LLM_TPL_F_FIRST },
    { "float", LLM_TPL_F_FLOAT },
    { "forceescape", LLM_TPL_F_ESCAPE },
    { "format", LLM_TPL_F_FORMAT },
    { "indent", LLM_TPL_F_INDENT },
    { "int", LLM_TPL_F_INT },
    { "items", LLM_TPL_F_ITEMS },
    { "join", LLM_TPL_F_JOIN },
    { "last", LLM_TPL_F_LAST },
    { "length", LLM_TPL_F_LENGTH },
    { "list", LLM_TPL_F_LIST },
    { "lower", LLM_TPL_F_LOWER },
    { "map", LLM_TPL_F_MAP },
    { "max", LLM_TPL_F_MAX },
    { "min", LLM_TPL_F_MIN },
    { "reject", LLM_TPL_F_REJECT },
    { "rejectattr", LLM_TPL_F_REJECTATTR },
    { "replace", LLM_TPL_F_REPLACE },
    { "reverse", LLM_TPL_F_REVERSE },
    { "round", LLM_TPL_F_ROUND },
    { "safe", LLM_TPL_F_SAFE },
    { "select", LLM_TPL_F_SELECT },
    { "selectattr", LLM_TPL_F_SELECTATTR },
    { "sort", LLM_TPL_F_SORT },
    { "string", LLM_TPL_F_STRING },
    { "sum", LLM_TPL_F_SUM },
    { "title", LLM_TPL_F_TITLE },
    { "tojson", LLM_TPL_F_TOJSON },
    { "trim", LLM_TPL_F_TRIM },
    { "unique", LLM_TPL_F_UNIQUE },
    { "upper", LLM_TPL_F_UPPER },
    { "wordcount", LLM_TPL_F_WORDCOUNT },
    { NULL, 0 }
};

enum {
    LLM_TPL_IS_DEFINED = 0,
    LLM_TPL_IS_UNDEFINED,
    LLM_TPL_IS_NONE,
    LLM_TPL_IS_BOOLEAN,
    LLM_TPL_IS_TRUE,
    LLM_TPL_IS_FALSE,
    LLM_TPL_IS_INTEGER,
    LLM_TPL_IS_FLOAT,
    LLM_TPL_IS_NUMBER,
    LLM_TPL_IS_STRING,
    LLM_TPL_IS_MAPPING,
    LLM_TPL_IS_ITERABLE,
    LLM_TPL_IS_SEQUENCE,
    LLM_TPL_IS_CALLABLE,
    LLM_TPL_IS_EVEN,
    LLM_TPL_IS_ODD,
    LLM_TPL_IS_DIVISIBLEBY,
    LLM_TPL_IS_EQ,
    LLM_TPL_IS_NE,
    LLM_TPL_IS_LT,
    LLM_TPL_IS_LE,
    LLM_TPL_IS_GT,
    LLM_TPL_IS_GE,
    LLM_TPL_IS_IN,
    LLM_TPL_IS_SAMEAS,
    LLM_TPL_IS_LOWER,
    LLM_TPL_IS_UPPER,
    LLM_TPL_IS_ESCAPED,
    LLM_TPL_IS_FILTER,
    LLM_TPL_IS_TEST
};

static const llm_tpl_name_t  llm_tpl_tests[] = {
    { "defined", LLM_TPL_IS_DEFINED },
    { "undefined", LLM_TPL_IS_UNDEFINED },
    { "none", LLM_TPL_IS_NONE },
    { "boolean", LLM_TPL_IS_BOOLEAN },
    { "true", LLM_TPL_IS_TRUE },
    { "false", LLM_TPL_IS_FALSE },
    { "integer", LLM_TPL_IS_INTEGER },
    { "float", LLM_TPL_IS_FLOAT },
    { "number", LLM_TPL_IS_NUMBER },
    { "string", LLM_TPL_IS_STRING },
    { "mapping", LLM_TPL_IS_MAPPING },
    { "iterable", LLM_TPL_IS_ITERABLE },
    { "sequence", LLM_TPL_IS_SEQUENCE },
    { "callable", LLM_TPL_IS_CALLABLE },
    { "even", LLM_TPL_IS_EVEN },
    { "odd", LLM_TPL_IS_ODD },
    { "divisibleby", LLM_TPL_IS_DIVISIBLEBY },
    { "eq", LLM_TPL_IS_EQ },
    { "equalto", LLM_TPL_IS_EQ },
    { "ne", LLM_TPL_IS_NE },
    { "lt", LLM_TPL_IS_LT },
    { "lessthan", LLM_TPL_IS_LT },
    { "le", LLM_TPL_IS_LE },
    { "gt", LLM_TPL_IS_GT },
    { "greaterthan", LLM_TPL_IS_GT },
    { "ge", LLM_TPL_IS_GE },
    { "in", LLM_TPL_IS_IN },
    { "sameas", LLM_TPL_IS_SAMEAS },
    { "lower", LLM_TPL_IS_LOWER },
    { "upper", LLM_TPL_IS_UPPER },
    { "escaped", LLM_TPL_IS_ESCAPED },
    { "filter", LLM_TPL_IS_FILTER },
    { "test", LLM_TPL_IS_TEST },
    { NULL, 0 }
};

/* global functions and methods */
enum {
    LLM_TPL_FN_RANGE = 0,
    LLM_TPL_FN_NAMESPACE,
    LLM_TPL_FN_DICT,
    LLM_TPL_FN_RAISE,
    LLM_TPL_FN_STRFTIME,

    LLM_TPL_FN_STRIP,
    LLM_TPL_FN_LSTRIP,
    LLM_TPL_FN_RSTRIP,
    LLM_TPL_FN_SPLIT,
    LLM_TPL_FN_RSPLIT,
    LLM_TPL_FN_SPLITLINES,
    LLM_TPL_FN_STARTSWITH,
    LLM_TPL_FN_ENDSWITH,
    LLM_TPL_FN_UPPER,
    LLM_TPL_FN_LOWER,
    LLM_TPL_FN_TITLE,
    LLM_TPL_FN_CAPITALIZE,
    LLM_TPL_FN_REPLACE,
    LLM_TPL_FN_FORMAT,
    LLM_TPL_FN_FIND,
    LLM_TPL_FN_RFIND,
    LLM_TPL_FN_COUNT,
    LLM_TPL_FN_JOIN,
    LLM_TPL_FN_ISDIGIT,
    LLM_TPL_FN_ISALPHA,
    LLM_TPL_FN_ISALNUM,
    LLM_TPL_FN_ISSPACE,
    LLM_TPL_FN_ISLOWER,
    LLM_TPL_FN_ISUPPER,

    LLM_TPL_FN_ITEMS,
    LLM_TPL_FN_KEYS,
    LLM_TPL_FN_VALUES,
    LLM_TPL_FN_GET,
    LLM_TPL_FN_COPY,

    LLM_TPL_FN_LCOUNT,
    LLM_TPL_FN_INDEX
};

static const llm_tpl_name_t  llm_tpl_globals[] = {
    { "range", LLM_TPL_FN_RANGE },
    { "namespace", LLM_TPL_FN_NAMESPACE },
    { "dict", LLM_TPL_FN_DICT },
    { "raise_exception", LLM_TPL_FN_RAISE },
    { "strftime_now", LLM_TPL_FN_STRFTIME },
    { NULL, 0 }
};

static const llm_tpl_name_t  llm_tpl_str_methods[] = {
    { "strip", LLM_TPL_FN_STRIP },
    { "lstrip", LLM_TPL_FN_LSTRIP },
    { "rstrip", LLM_TPL_FN_RSTRIP },
    { "split", LLM_TPL_FN_SPLIT },
    { "rsplit", LLM_TPL_FN_RSPLIT },
    { "splitlines", LLM_TPL_FN_SPLITLINES },
    { "startswith", LLM_TPL_FN_STARTSWITH },
    { "endswith", LLM_TPL_FN_ENDSWITH },
    { "upper", LLM_TPL_FN_UPPER },
    { "lower", LLM_TPL_FN_LOWER },
    { "title", LLM_TPL_FN_TITLE },
    { "capitalize", LLM_TPL_FN_CAPITALIZE },
    { "replace", LLM_TPL_FN_REPLACE },
    { "format", LLM_TPL_FN_FORMAT },
    { "find", LLM_TPL_FN_FIND },
    { "rfind", LLM_TPL_FN_RFIND },
    { "count", LLM_TPL_FN_COUNT },
    { "join", LLM_TPL_FN_JOIN },
    { "isdigit", LLM_TPL_FN_ISDIGIT },
    { "isalpha", LLM_TPL_FN_ISALPHA },
    { "isalnum", LLM_TPL_FN_ISALNUM },
    { "isspace", LLM_TPL_FN_ISSPACE },
    { "islower", LLM_TPL_FN_ISLOWER },
    { "isupper", LLM_TPL_FN_ISUPPER },
    { NULL, 0 }
};

static const llm_tpl_name_t  llm_tpl_dict_methods[] = {
    { "items", LLM_TPL_FN_ITEMS },
    { "keys", LLM_TPL_FN_KEYS },
    { "values", LLM_TPL_FN_VALUES },
    { "get", LLM_TPL_FN_GET },
    { "copy", LLM_TPL_FN_COPY },
    { NULL, 0 }
};

static const llm_tpl_name_t  llm_tpl_list_methods[] = {
    { "count", LLM_TPL_FN_LCOUNT },
    { "index", LLM_TPL_FN_INDEX },
    { NULL, 0 }
};

/* what the immutable sandbox refuses */
static const char *const  llm_tpl_unsafe_list[] = {
    "append", "extend", "insert", "pop", "remove", "clear", "sort",
    "reverse", NULL
};

static const char *const  llm_tpl_unsafe_dict[] = {
    "pop", "popitem", "setdefault", "update", "clear", NULL
};

static const char *const  llm_tpl_months[] = {
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December"
};

static const char *const  llm_tpl_days[] = {
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
    "Saturday"
};


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


static int llm_tpl_lookup(const llm_tpl_name_t *t, llm_tpl_str_t name);
static int llm_tpl_arg(const llm_tpl_args_t *a, size_t pos,
    const char *name, llm_tpl_val_t *out);
static int llm_tpl_arg_str(llm_tpl_render_t *r, const llm_tpl_args_t *a,
    size_t pos, const char *name, llm_tpl_str_t *out);
static int llm_tpl_arg_int(llm_tpl_render_t *r, const llm_tpl_args_t *a,
    size_t pos, const char *name, int64_t *out);
static int llm_tpl_arg_bool(const llm_tpl_args_t *a, size_t pos,
    const char *name, int def);
static llm_tpl_str_t llm_tpl_strip(llm_tpl_str_t s,
    const llm_tpl_str_t *chars, int which);
static int llm_tpl_case(llm_tpl_render_t *r, llm_tpl_str_t s, int mode,
    llm_tpl_val_t *out);
static int llm_tpl_replace(llm_tpl_render_t *r, llm_tpl_str_t s,
    llm_tpl_str_t from, llm_tpl_str_t to, int64_t count,
    llm_tpl_val_t *out);
static int llm_tpl_split(llm_tpl_render_t *r, llm_tpl_str_t s,
    const llm_tpl_str_t *sep, int64_t maxsplit, int right,
    llm_tpl_val_t *out);
static int llm_tpl_splitlines(llm_tpl_render_t *r, llm_tpl_str_t s,
    int keepends, llm_tpl_list_t **out);
static int llm_tpl_join(llm_tpl_render_t *r, const llm_tpl_val_t *seq,
    llm_tpl_str_t sep, const llm_tpl_str_t *attr, int strict,
    llm_tpl_val_t *out);
static int llm_tpl_attr_path(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_str_t path, llm_tpl_val_t *out);
static int llm_tpl_items(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_val_t *out);
static int llm_tpl_sort_key(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    const llm_tpl_str_t *attr, int case_sensitive, llm_tpl_val_t *key);
static int llm_tpl_filter_sort(llm_tpl_render_t *r, int id,
    const llm_tpl_val_t *v, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_filter_select(llm_tpl_render_t *r, int id,
    const llm_tpl_val_t *v, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_filter_map(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_filter_tojson(llm_tpl_render_t *r,
    const llm_tpl_val_t *v, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_filter_indent(llm_tpl_render_t *r,
    const llm_tpl_val_t *v, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_filter_round(llm_tpl_render_t *r,
    const llm_tpl_val_t *v, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_filter_int(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_filter_float(llm_tpl_render_t *r,
    const llm_tpl_val_t *v, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_parse_int(llm_tpl_str_t s, int base, int64_t *out);
static int llm_tpl_parse_float(llm_tpl_str_t s, double *out);
static int llm_tpl_call_method(llm_tpl_render_t *r, int id,
    const llm_tpl_val_t *self, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_call_str_method(llm_tpl_render_t *r, int id,
    llm_tpl_str_t s, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_find(llm_tpl_render_t *r, llm_tpl_str_t s,
    llm_tpl_str_t sub, int right, int64_t *pos);
static int llm_tpl_kwargs_dict(llm_tpl_render_t *r, llm_tpl_args_t *a,
    size_t first_pos, llm_tpl_dict_t **out);
static int llm_tpl_strftime(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t fmt, const struct tm *tm);
static int llm_tpl_pad(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const char *body, size_t len, const llm_tpl_spec_t *sp, int numeric,
    size_t sign_len);
static int llm_tpl_fmt_number(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, const llm_tpl_spec_t *sp);
static int llm_tpl_fmt_value(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, llm_tpl_str_t spec);
static int llm_tpl_format_brace(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t fmt, llm_tpl_args_t *a);


int
llm_tpl_filter_id(llm_tpl_str_t name)
{
    return llm_tpl_lookup(llm_tpl_filters, name);
}


int
llm_tpl_test_id(llm_tpl_str_t name)
{
    return llm_tpl_lookup(llm_tpl_tests, name);
}


static int
llm_tpl_lookup(const llm_tpl_name_t *t, llm_tpl_str_t name)
{
    for ( /* void */ ; t->name != NULL; t++) {
        if (llm_tpl_str_eq(name, t->name)) {
            return t->id;
        }
    }

    return -1;
}


/* positional argument pos, or keyword argument name: 1 if given */
static int
llm_tpl_arg(const llm_tpl_args_t *a, size_t pos, const char *name,
    llm_tpl_val_t *out)
{
    size_t  i;

    if (pos < a->npos) {
        *out = a->pos[pos];
        return 1;
    }

    if (name != NULL) {
        for (i = 0; i < a->nkw; i++) {
            if (llm_tpl_str_eq(a->kwnames[i], name)) {
                *out = a->kwvals[i];
                return 1;
            }
        }
    }

    return 0;
}


/* 1: a string, 0: absent or None, -1: error */
static int
llm_tpl_arg_str(llm_tpl_render_t *r, const llm_tpl_args_t *a, size_t pos,
    const char *name, llm_tpl_str_t *out)
{
    llm_tpl_val_t  v;

    if (!llm_tpl_arg(a, pos, name, &v) || v.type == LLM_TPL_NONE) {
        return 0;
    }

    if (v.type != LLM_TPL_STR) {
        llm_tpl_fail(r, "expected a string argument, got %s",
                     llm_tpl_type_name(&v));
        return -1;
    }

    *out = v.u.s;
    return 1;
}


/* 1: an int, 0: absent or None, -1: error */
static int
llm_tpl_arg_int(llm_tpl_render_t *r, const llm_tpl_args_t *a, size_t pos,
    const char *name, int64_t *out)
{
    double         f;
    llm_tpl_val_t  v;

    if (!llm_tpl_arg(a, pos, name, &v) || v.type == LLM_TPL_NONE) {
        return 0;
    }

    if (llm_tpl_num(&v, out, &f) != 1) {
        llm_tpl_fail(r, "expected an integer argument, got %s",
                     llm_tpl_type_name(&v));
        return -1;
    }

    return 1;
}


static int
llm_tpl_arg_bool(const llm_tpl_args_t *a, size_t pos, const char *name,
    int def)
{
    llm_tpl_val_t  v;

    if (!llm_tpl_arg(a, pos, name, &v)) {
        return def;
    }

    return llm_tpl_truthy(&v);
}


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
static llm_tpl_str_t
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
static int
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


static int
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
static int
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


/*
 * The join filter str()s every item; str.join() (strict) wants strings.
 */
static int
llm_tpl_join(llm_tpl_render_t *r, const llm_tpl_val_t *seq,
    llm_tpl_str_t sep, const llm_tpl_str_t *attr, int strict,
    llm_tpl_val_t *out)
{
    size_t           i;
    llm_tpl_val_t    v;
    llm_tpl_list_t  *items;
    llm_tpl_buf_t    b;

    if (llm_tpl_iterate(r, seq, &items) != LLM_OK) {
        return LLM_ERR;
    }

    memset(&b, 0, sizeof(b));

    for (i = 0; i < items->n; i++) {
        v = items->items[i];

        if (attr != NULL && llm_tpl_attr_path(r, &v, *attr, &v) != LLM_OK) {
            return LLM_ERR;
        }

        if (strict && v.type != LLM_TPL_STR) {
            return llm_tpl_fail(r, "sequence item %zu: expected str"
                                " instance, %s found", i,
                                llm_tpl_type_name(&v));
        }

        if ((i && llm_tpl_buf_add(r, &b, sep.p, sep.len) != LLM_OK)
            || llm_tpl_add_str(r, &b, &v, 0) != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    *out = llm_tpl_buf_val(&b);
    return LLM_OK;
}


/* "a.b.0": each part as jinja2's getitem(), numbers as indexes */
static int
llm_tpl_attr_path(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_str_t path, llm_tpl_val_t *out)
{
    size_t         i, j, d;
    int64_t        idx;
    llm_tpl_val_t  cur, key;

    cur = *v;

    for (i = 0; i <= path.len; i = j + 1) {
        for (j = i; j < path.len && path.p[j] != '.'; j++) {
            /* void */
        }

        idx = 0;
        for (d = i; d < j && path.p[d] >= '0' && path.p[d] <= '9'; d++) {
            if (idx < INT64_MAX / 10) {
                idx = idx * 10 + (path.p[d] - '0');
            }
        }

        if (d == j && j > i) {
            key = llm_tpl_v_int(idx);

        } else {
            key = llm_tpl_v_str(path.p + i, j - i);
        }

        if (llm_tpl_getitem(r, &cur, &key, &cur) != LLM_OK) {
            return LLM_ERR;
        }
    }

    *out = cur;
    return LLM_OK;
}


/* a dict's (key, value) tuples */
static int
llm_tpl_items(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_val_t *out)
{
    size_t           i;
    llm_tpl_list_t  *l, *pair;
    llm_tpl_dict_t  *d;

    if (v->type == LLM_TPL_UNDEF) {
        l = llm_tpl_list_new(r, 0);
        if (l == NULL) {
            return LLM_ERR;
        }
        *out = llm_tpl_v_list(l);
        return LLM_OK;
    }

    if (v->type != LLM_TPL_DICT) {
        return llm_tpl_fail(r, "Can only get item pairs from a mapping.");
    }

    d = v->u.dict;

    l = llm_tpl_list_new(r, d->n);
    if (l == NULL) {
        return LLM_ERR;
    }

    for (i = 0; i < d->n; i++) {
        pair = llm_tpl_list_new(r, 2);
        if (pair == NULL) {
            return LLM_ERR;
        }

        pair->tuple = 1;
        pair->items[0] = d->keys[i];
        pair->items[1] = d->vals[i];
        pair->n = 2;
        l->items[i] = llm_tpl_v_list(pair);
    }

    l->n = d->n;
    *out = llm_tpl_v_list(l);

    return LLM_OK;
}


/* ---- filters ---------------------------------------------------------- */

int
llm_tpl_filter(llm_tpl_render_t *r, int id, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int              rc, k;
    char            *p;
    double           f;
    size_t           i, n, left;
    int64_t          iv, len;
    uint32_t         cp;
    llm_tpl_str_t    s, s2, s3;
    llm_tpl_val_t    x;
    llm_tpl_buf_t    b;
    llm_tpl_list_t  *items, *l;

    switch (id) {
    case LLM_TPL_F_ABS:
        k = llm_tpl_num(v, &iv, &f);

        if (k == 1) {
            if (iv == INT64_MIN) {
                return llm_tpl_fail(r, "integer overflow");
            }
            *out = llm_tpl_v_int(iv < 0 ? -iv : iv);
            return LLM_OK;
        }

        if (k == 2) {
            *out = llm_tpl_v_float(fabs(f));
            return LLM_OK;
        }

        if (v->type == LLM_TPL_UNDEF) {
            return llm_tpl_fail_undef(r, v);
        }

        return llm_tpl_fail(r, "bad operand type for abs(): '%s'",
                            llm_tpl_type_name(v));

    case LLM_TPL_F_ATTR:
        if (llm_tpl_arg_str(r, a, 0, "name", &s) != 1) {
            return llm_tpl_fail(r, "attr() needs an attribute name");
        }

        /* an attribute only: a dict's keys are not its attributes */
        if (v->type == LLM_TPL_DICT) {
            rc = llm_tpl_method(r, v, s, out);
            if (rc < 0) {
                return LLM_ERR;
            }

            if (rc == 0) {
                *out = llm_tpl_undef(r, "'dict object' has no attribute"
                                     " '%.*s'", (int) s.len, s.p);
            }
            return LLM_OK;
        }

        return llm_tpl_getattr(r, v, s, out);

    case LLM_TPL_F_CAPITALIZE:
    case LLM_TPL_F_LOWER:
    case LLM_TPL_F_UPPER:
    case LLM_TPL_F_TITLE:
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }
        return llm_tpl_case(r, s, id == LLM_TPL_F_LOWER ? 0
                                  : id == LLM_TPL_F_UPPER ? 1
                                  : id == LLM_TPL_F_CAPITALIZE ? 2 : 4, out);

    case LLM_TPL_F_CENTER:
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }

        iv = 80;
        if (llm_tpl_arg_int(r, a, 0, "width", &iv) < 0) {
            return LLM_ERR;
        }

        len = (int64_t) llm_tpl_utf8_len(s.p, s.len);
        if (iv <= len) {
            *out = llm_tpl_v_str(s.p, s.len);
            return LLM_OK;
        }

        if ((uint64_t) (iv - len) > r->max_output) {
            return llm_tpl_fail(r, "template output exceeds %zu bytes",
                                r->max_output);
        }

        /* Python's str.center() puts the odd space on the right
         * unless the width is odd */
        n = (size_t) (iv - len);
        left = n / 2 + (n & (size_t) iv & 1);

        memset(&b, 0, sizeof(b));
        for (i = 0; i < n; i++) {
            if (i == left && llm_tpl_buf_add(r, &b, s.p, s.len) != LLM_OK) {
                return LLM_ERR;
            }
            if (llm_tpl_buf_addc(r, &b, ' ') != LLM_OK) {
                return LLM_ERR;
            }
        }
        if (left == n && llm_tpl_buf_add(r, &b, s.p, s.len) != LLM_OK) {
            return LLM_ERR;
        }

        *out = llm_tpl_buf_val(&b);
        return LLM_OK;

    case LLM_TPL_F_DEFAULT:
        if (v->type == LLM_TPL_UNDEF
            || (llm_tpl_arg_bool(a, 1, "boolean", 0) && !llm_tpl_truthy(v)))
        {
            if (!llm_tpl_arg(a, 0, "default_value", out)) {
                *out = llm_tpl_v_str("", 0);
            }
            return LLM_OK;
        }

        *out = *v;
        return LLM_OK;

    case LLM_TPL_F_DICTSORT:
    case LLM_TPL_F_SORT:
    case LLM_TPL_F_UNIQUE:
    case LLM_TPL_F_MIN:
    case LLM_TPL_F_MAX:
        return llm_tpl_filter_sort(r, id, v, a, out);

    case LLM_TPL_F_ESCAPE:
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }

        memset(&b, 0, sizeof(b));

        for (i = 0; i < s.len; i++) {
            switch (s.p[i]) {
            case '&':
                rc = llm_tpl_buf_adds(r, &b, "&amp;");
                break;
            case '<':
                rc = llm_tpl_buf_adds(r, &b, "&lt;");
                break;
            case '>':
                rc = llm_tpl_buf_adds(r, &b, "&gt;");
                break;
            case '"':
                rc = llm_tpl_buf_adds(r, &b, "&#34;");
                break;
            case '\'':
                rc = llm_tpl_buf_adds(r, &b, "&#39;");
                break;
            default:
                rc = llm_tpl_buf_addc(r, &b, s.p[i]);
            }

            if (rc != LLM_OK) {
                return LLM_ERR;
            }
        }

        *out = llm_tpl_buf_val(&b);
        return LLM_OK;

    case LLM_TPL_F_FIRST:
    case LLM_TPL_F_LAST:
        if (llm_tpl_iterate(r, v, &items) != LLM_OK) {
            return LLM_ERR;
        }

        if (items->n == 0) {
            *out = llm_tpl_undef(r, "No %s item, sequence was empty.",
                                 id == LLM_TPL_F_FIRST ? "first" : "last");
            return LLM_OK;
        }

        *out = items->items[id == LLM_TPL_F_FIRST ? 0 : items->n - 1];
        return LLM_OK;

    case LLM_TPL_F_FLOAT:
        return llm_tpl_filter_float(r, v, a, out);

    case LLM_TPL_F_INT:
        return llm_tpl_filter_int(r, v, a, out);

    case LLM_TPL_F_FORMAT:
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }

        /* value % args, or value % kwargs */
        if (a->nkw) {
            llm_tpl_dict_t  *d;

            if (llm_tpl_kwargs_dict(r, a, 0, &d) != LLM_OK) {
                return LLM_ERR;
            }
            x.type = LLM_TPL_DICT;
            x.u.dict = d;

        } else {
            l = llm_tpl_list_new(r, a->npos);
            if (l == NULL) {
                return LLM_ERR;
            }
            if (a->npos) {
                memcpy(l->items, a->pos, a->npos * sizeof(llm_tpl_val_t));
            }
            l->n = a->npos;
            l->tuple = 1;
            x = llm_tpl_v_list(l);
        }

        memset(&b, 0, sizeof(b));
        if (llm_tpl_format_percent(r, &b, s, &x) != LLM_OK) {
            return LLM_ERR;
        }
        *out = llm_tpl_buf_val(&b);
        return LLM_OK;

    case LLM_TPL_F_INDENT:
        return llm_tpl_filter_indent(r, v, a, out);

    case LLM_TPL_F_ITEMS:
        return llm_tpl_items(r, v, out);

    case LLM_TPL_F_JOIN:
        s.p = "";
        s.len = 0;

        if (llm_tpl_arg_str(r, a, 0, "d", &s) < 0) {
            return LLM_ERR;
        }

        rc = llm_tpl_arg_str(r, a, 1, "attribute", &s2);
        if (rc < 0) {
            return LLM_ERR;
        }

        return llm_tpl_join(r, v, s, rc ? &s2 : NULL, 0, out);

    case LLM_TPL_F_LENGTH:
        if (llm_tpl_length(r, v, &len) != LLM_OK) {
            return LLM_ERR;
        }
        *out = llm_tpl_v_int(len);
        return LLM_OK;

    case LLM_TPL_F_LIST:
        if (llm_tpl_iterate(r, v, &items) != LLM_OK) {
            return LLM_ERR;
        }

        l = llm_tpl_list_new(r, items->n);
        if (l == NULL) {
            return LLM_ERR;
        }
        if (items->n) {
            memcpy(l->items, items->items, items->n * sizeof(llm_tpl_val_t));
        }
        l->n = items->n;

        *out = llm_tpl_v_list(l);
        return LLM_OK;

    case LLM_TPL_F_MAP:
        return llm_tpl_filter_map(r, v, a, out);

    case LLM_TPL_F_SELECT:
    case LLM_TPL_F_REJECT:
    case LLM_TPL_F_SELECTATTR:
    case LLM_TPL_F_REJECTATTR:
        return llm_tpl_filter_select(r, id, v, a, out);

    case LLM_TPL_F_REPLACE:
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }

        if (llm_tpl_arg_str(r, a, 0, "old", &s2) != 1
            || llm_tpl_arg_str(r, a, 1, "new", &s3) != 1)
        {
            return llm_tpl_fail(r, "replace() needs two strings");
        }

        iv = -1;
        if (llm_tpl_arg_int(r, a, 2, "count", &iv) < 0) {
            return LLM_ERR;
        }

        return llm_tpl_replace(r, s, s2, s3, iv, out);

    case LLM_TPL_F_REVERSE:
        if (v->type == LLM_TPL_STR) {
            s = v->u.s;
            p = llm_tpl_ralloc(r, s.len + 1, 1);
            if (p == NULL) {
                return LLM_ERR;
            }

            /* characters, not bytes, in reverse */
            for (i = 0; i < s.len; i += n) {
                n = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);
                memcpy(p + s.len - i - n, s.p + i, n);
            }

            *out = llm_tpl_v_str(p, s.len);
            return LLM_OK;
        }

        if (llm_tpl_iterate(r, v, &items) != LLM_OK) {
            return LLM_ERR;
        }

        l = llm_tpl_list_new(r, items->n);
        if (l == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < items->n; i++) {
            l->items[i] = items->items[items->n - 1 - i];
        }
        l->n = items->n;

        *out = llm_tpl_v_list(l);
        return LLM_OK;

    case LLM_TPL_F_ROUND:
        return llm_tpl_filter_round(r, v, a, out);

    case LLM_TPL_F_SAFE:
    case LLM_TPL_F_STRING:
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }
        *out = llm_tpl_v_str(s.p, s.len);
        return LLM_OK;

    case LLM_TPL_F_SUM:
        x = llm_tpl_v_int(0);
        llm_tpl_arg(a, 1, "start", &x);

        rc = llm_tpl_arg_str(r, a, 0, "attribute", &s);
        if (rc < 0 || llm_tpl_iterate(r, v, &items) != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < items->n; i++) {
            llm_tpl_val_t  item;

            item = items->items[i];

            if ((rc && llm_tpl_attr_path(r, &item, s, &item) != LLM_OK)
                || llm_tpl_binary(r, '+', &x, &item, &x) != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        *out = x;
        return LLM_OK;

    case LLM_TPL_F_TOJSON:
        return llm_tpl_filter_tojson(r, v, a, out);

    case LLM_TPL_F_TRIM:
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }

        rc = llm_tpl_arg_str(r, a, 0, "chars", &s2);
        if (rc < 0 || llm_tpl_steps(r, s.len * (rc ? s2.len : 1) / 64 + 1)
                      != LLM_OK)
        {
            return LLM_ERR;
        }

        s = llm_tpl_strip(s, rc ? &s2 : NULL, 3);
        *out = llm_tpl_v_str(s.p, s.len);
        return LLM_OK;

    case LLM_TPL_F_WORDCOUNT:
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }

        /* runs of \w: letters, digits, underscore */
        len = 0;
        k = 0;

        for (i = 0; i < s.len; i += n) {
            n = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);

            if (llm_tpl_is_alpha(cp) || llm_tpl_is_digit(cp) || cp == '_'
                || (cp >= 0x80 && cp < LLM_TPL_BADCP
                    && !llm_tpl_is_space(cp)
                    && !(cp >= 0x2000 && cp <= 0x206f)
                    && !(cp >= 0x3000 && cp <= 0x303f)
                    && !(cp >= 0xff00 && cp <= 0xff0f)
                    && !(cp >= 0xa1 && cp <= 0xbf)))
            {
                if (!k) {
                    len++;
                }
                k = 1;

            } else {
                k = 0;
            }
        }

        *out = llm_tpl_v_int(len);
        return LLM_OK;

    default:
        return llm_tpl_fail(r, "unknown filter");
    }
}


static int
llm_tpl_sort_key(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    const llm_tpl_str_t *attr, int case_sensitive, llm_tpl_val_t *key)
{
    *key = *v;

    if (attr != NULL && llm_tpl_attr_path(r, v, *attr, key) != LLM_OK) {
        return LLM_ERR;
    }

    if (!case_sensitive && key->type == LLM_TPL_STR) {
        return llm_tpl_case(r, key->u.s, 0, key);
    }

    return LLM_OK;
}


typedef struct {
    llm_tpl_val_t  *keys;
    int             reverse;
} llm_tpl_sort_ctx_t;


static int
llm_tpl_index_cmp(llm_tpl_render_t *r, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, int *cmp, void *data)
{
    llm_tpl_sort_ctx_t  *ctx;

    ctx = data;

    if (llm_tpl_compare(r, &ctx->keys[a->u.i], &ctx->keys[b->u.i], cmp, 0)
        != LLM_OK)
    {
        return LLM_ERR;
    }

    if (ctx->reverse) {
        *cmp = -*cmp;
    }

    return LLM_OK;
}


/* sort, dictsort, unique, min and max: all compare keys */
static int
llm_tpl_filter_sort(llm_tpl_render_t *r, int id, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int                  rc, cs, in, has_attr;
    size_t               i, best, by;
    llm_tpl_str_t        attr, s;
    llm_tpl_val_t        items_v, *keys, *idx;
    llm_tpl_list_t      *items, *l, *seen;
    llm_tpl_sort_ctx_t   ctx;

    rc = 0;
    cs = 0;
    by = 0;
    ctx.reverse = 0;

    switch (id) {
    case LLM_TPL_F_SORT:
        ctx.reverse = llm_tpl_arg_bool(a, 0, "reverse", 0);
        cs = llm_tpl_arg_bool(a, 1, "case_sensitive", 0);
        rc = llm_tpl_arg_str(r, a, 2, "attribute", &attr);
        break;

    case LLM_TPL_F_DICTSORT:
        cs = llm_tpl_arg_bool(a, 0, "case_sensitive", 0);

        rc = llm_tpl_arg_str(r, a, 1, "by", &s);
        if (rc < 0) {
            return LLM_ERR;
        }

        if (rc == 1) {
            if (llm_tpl_str_eq(s, "value")) {
                by = 1;

            } else if (!llm_tpl_str_eq(s, "key")) {
                return llm_tpl_fail(r, "You can only sort by either 'key'"
                                    " or 'value'");
            }
        }

        ctx.reverse = llm_tpl_arg_bool(a, 2, "reverse", 0);
        rc = 0;
        break;

    case LLM_TPL_F_UNIQUE:
    case LLM_TPL_F_MIN:
    case LLM_TPL_F_MAX:
        cs = llm_tpl_arg_bool(a, 0, "case_sensitive", 0);
        rc = llm_tpl_arg_str(r, a, 1, "attribute", &attr);
        break;
    }

    if (rc < 0) {
        return LLM_ERR;
    }

    has_attr = rc;

    if (id == LLM_TPL_F_DICTSORT) {
        if (llm_tpl_items(r, v, &items_v) != LLM_OK) {
            return LLM_ERR;
        }
        items = items_v.u.list;

    } else if (llm_tpl_iterate(r, v, &items) != LLM_OK) {
        return LLM_ERR;
    }

    keys = llm_tpl_ralloc(r, items->n + 1, sizeof(llm_tpl_val_t));
    idx = llm_tpl_ralloc(r, items->n + 1, sizeof(llm_tpl_val_t));
    if (keys == NULL || idx == NULL) {
        return LLM_ERR;
    }

    for (i = 0; i < items->n; i++) {
        if (id == LLM_TPL_F_DICTSORT) {
            rc = llm_tpl_sort_key(r, &items->items[i].u.list->items[by],
                                  NULL, cs, &keys[i]);
        } else {
            rc = llm_tpl_sort_key(r, &items->items[i],
                                  has_attr ? &attr : NULL, cs, &keys[i]);
        }

        if (rc != LLM_OK) {
            return LLM_ERR;
        }

        idx[i] = llm_tpl_v_int((int64_t) i);
    }

    ctx.keys = keys;

    if (id == LLM_TPL_F_UNIQUE) {
        l = llm_tpl_list_new(r, 0);
        seen = llm_tpl_list_new(r, 0);
        if (l == NULL || seen == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < items->n; i++) {
            items_v = llm_tpl_v_list(seen);

            if (llm_tpl_contains(r, &keys[i], &items_v, &in) != LLM_OK) {
                return LLM_ERR;
            }

            if (!in && (llm_tpl_list_push(r, seen, &keys[i]) != LLM_OK
                        || llm_tpl_list_push(r, l, &items->items[i])
                           != LLM_OK))
            {
                return LLM_ERR;
            }
        }

        *out = llm_tpl_v_list(l);
        return LLM_OK;
    }

    if (id == LLM_TPL_F_MIN || id == LLM_TPL_F_MAX) {
        if (items->n == 0) {
            *out = llm_tpl_undef(r, "No aggregated item, sequence was"
                                 " empty.");
            return LLM_OK;
        }

        best = 0;

        for (i = 1; i < items->n; i++) {
            if (llm_tpl_compare(r, &keys[i], &keys[best], &in, 0) != LLM_OK)
            {
                return LLM_ERR;
            }

            if ((id == LLM_TPL_F_MIN && in < 0)
                || (id == LLM_TPL_F_MAX && in > 0))
            {
                best = i;
            }
        }

        *out = items->items[best];
        return LLM_OK;
    }

    if (llm_tpl_sort(r, idx, items->n, llm_tpl_index_cmp, &ctx) != LLM_OK) {
        return LLM_ERR;
    }

    l = llm_tpl_list_new(r, items->n);
    if (l == NULL) {
        return LLM_ERR;
    }

    for (i = 0; i < items->n; i++) {
        l->items[i] = items->items[idx[i].u.i];
    }
    l->n = items->n;

    *out = llm_tpl_v_list(l);
    return LLM_OK;
}


/* select(test, args...), reject(...), selectattr(attr, test, ...) */
static int
llm_tpl_filter_select(llm_tpl_render_t *r, int id, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int              attr_mode, want, tid, res;
    size_t           i, first;
    llm_tpl_str_t    attr, tname;
    llm_tpl_val_t    item;
    llm_tpl_args_t   sub;
    llm_tpl_list_t  *items, *l;

    attr_mode = id == LLM_TPL_F_SELECTATTR || id == LLM_TPL_F_REJECTATTR;
    want = id == LLM_TPL_F_SELECT || id == LLM_TPL_F_SELECTATTR;
    first = 0;

    if (attr_mode) {
        if (a->npos < 1 || a->pos[0].type != LLM_TPL_STR) {
            return llm_tpl_fail(r, "Missing parameter for attribute name");
        }
        attr = a->pos[0].u.s;
        first = 1;
    }

    tid = -1;

    if (a->npos > first) {
        if (a->pos[first].type != LLM_TPL_STR) {
            return llm_tpl_fail(r, "the test name must be a string");
        }

        tname = a->pos[first].u.s;
        tid = llm_tpl_test_id(tname);
        if (tid < 0) {
            return llm_tpl_fail(r, "No test named '%.*s'.",
                                (int) (tname.len > 40 ? 40 : tname.len),
                                tname.p);
        }
        first++;
    }

    /* a->pos is NULL when there are no arguments: no offset on it */
    sub = *a;
    sub.pos = a->npos > first ? a->pos + first : NULL;
    sub.npos = a->npos > first ? a->npos - first : 0;

    l = llm_tpl_list_new(r, 0);
    if (l == NULL) {
        return LLM_ERR;
    }

    /* jinja2 walks the value only when it is true */
    if (!llm_tpl_truthy(v)) {
        *out = llm_tpl_v_list(l);
        return LLM_OK;
    }

    if (llm_tpl_iterate(r, v, &items) != LLM_OK) {
        return LLM_ERR;
    }

    for (i = 0; i < items->n; i++) {
        item = items->items[i];

        if (attr_mode && llm_tpl_attr_path(r, &item, attr, &item) != LLM_OK) {
            return LLM_ERR;
        }

        if (tid < 0) {
            res = llm_tpl_truthy(&item);

        } else if (llm_tpl_test(r, tid, &item, &sub, &res) != LLM_OK) {
            return LLM_ERR;
        }

        if (res == want && llm_tpl_list_push(r, l, &items->items[i])
                           != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    *out = llm_tpl_v_list(l);
    return LLM_OK;
}


/* map(filter, args...) or map(attribute=name, default=value) */
static int
llm_tpl_filter_map(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int              fid, has_default, rc;
    size_t           i;
    llm_tpl_str_t    attr, fname;
    llm_tpl_val_t    def, item;
    llm_tpl_args_t   sub;
    llm_tpl_list_t  *items, *l;

    fid = -1;

    if (a->npos == 0) {
        rc = llm_tpl_arg_str(r, a, (size_t) -1, "attribute", &attr);
        if (rc != 1) {
            return rc < 0 ? LLM_ERR
                          : llm_tpl_fail(r, "map() needs a filter or an"
                                         " attribute");
        }

    } else {
        if (a->pos[0].type != LLM_TPL_STR) {
            return llm_tpl_fail(r, "the filter name must be a string");
        }

        fname = a->pos[0].u.s;
        fid = llm_tpl_filter_id(fname);
        if (fid < 0) {
            return llm_tpl_fail(r, "No filter named '%.*s'.",
                                (int) (fname.len > 40 ? 40 : fname.len),
                                fname.p);
        }

        sub = *a;
        sub.pos = a->pos + 1;
        sub.npos = a->npos - 1;
    }

    has_default = llm_tpl_arg(a, (size_t) -1, "default", &def);

    if (!llm_tpl_truthy(v)) {
        l = llm_tpl_list_new(r, 0);
        if (l == NULL) {
            return LLM_ERR;
        }
        *out = llm_tpl_v_list(l);
        return LLM_OK;
    }

    if (llm_tpl_iterate(r, v, &items) != LLM_OK) {
        return LLM_ERR;
    }

    l = llm_tpl_list_new(r, items->n);
    if (l == NULL) {
        return LLM_ERR;
    }

    for (i = 0; i < items->n; i++) {
        item = items->items[i];

        if (fid >= 0) {
            rc = llm_tpl_filter(r, fid, &item, &sub, &item);

        } else {
            rc = llm_tpl_attr_path(r, &item, attr, &item);
            if (rc == LLM_OK && has_default && item.type == LLM_TPL_UNDEF) {
                item = def;
            }
        }

        if (rc != LLM_OK) {
            return LLM_ERR;
        }

        l->items[l->n++] = item;
    }

    *out = llm_tpl_v_list(l);
    return LLM_OK;
}


/* HF's tojson(x, ensure_ascii=False, indent=None, separators=None,
 * sort_keys=False): json.dumps() keeping non-ASCII */
static int
llm_tpl_filter_tojson(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    char                 *sp;
    double                f;
    int64_t               n;
    llm_tpl_str_t         indent;
    llm_tpl_val_t         x;
    llm_tpl_buf_t         b;
    llm_tpl_json_opts_t   o;

    memset(&o, 0, sizeof(o));

    o.ensure_ascii = llm_tpl_arg_bool(a, 0, "ensure_ascii", 0);
    o.sort_keys = llm_tpl_arg_bool(a, 3, "sort_keys", 0);

    if (llm_tpl_arg(a, 1, "indent", &x) && x.type != LLM_TPL_NONE) {
        if (x.type == LLM_TPL_STR) {
            indent = x.u.s;

        } else if (llm_tpl_num(&x, &n, &f) == 1) {
            if (n < 0) {
                n = 0;
            }

            if ((uint64_t) n > r->max_output) {
                return llm_tpl_fail(r, "template output exceeds %zu bytes",
                                    r->max_output);
            }

            sp = llm_tpl_ralloc(r, (size_t) n + 1, 1);
            if (sp == NULL) {
                return LLM_ERR;
            }

            memset(sp, ' ', (size_t) n);
            indent.p = sp;
            indent.len = (size_t) n;

        } else {
            return llm_tpl_fail(r, "tojson: indent must be an int or a"
                                " string");
        }

        o.indent = &indent;
    }

    o.item_sep = o.indent ? llm_tpl_v_str(",", 1).u.s
                          : llm_tpl_v_str(", ", 2).u.s;
    o.key_sep = llm_tpl_v_str(": ", 2).u.s;

    if (llm_tpl_arg(a, 2, "separators", &x) && x.type != LLM_TPL_NONE) {
        if (x.type != LLM_TPL_LIST || x.u.list->n != 2
            || x.u.list->items[0].type != LLM_TPL_STR
            || x.u.list->items[1].type != LLM_TPL_STR)
        {
            return llm_tpl_fail(r, "tojson: separators must be two strings");
        }

        o.item_sep = x.u.list->items[0].u.s;
        o.key_sep = x.u.list->items[1].u.s;
    }

    memset(&b, 0, sizeof(b));

    if (llm_tpl_add_json(r, &b, v, &o, 0) != LLM_OK) {
        return LLM_ERR;
    }

    *out = llm_tpl_buf_val(&b);
    return LLM_OK;
}


/* jinja2's indent(s, width=4, first=False, blank=False) */
static int
llm_tpl_filter_indent(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int              first, blank;
    char            *sp, *p;
    double           f;
    size_t           i;
    int64_t          n;
    llm_tpl_str_t    s, ind, line;
    llm_tpl_val_t    w;
    llm_tpl_buf_t    b;
    llm_tpl_list_t  *lines;

    /* jinja2 appends "\n" to the value: only a string takes it */
    if (v->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, v);
    }

    if (v->type != LLM_TPL_STR) {
        return llm_tpl_fail(r, "unsupported operand type(s) for +=: '%s'"
                            " and 'str'", llm_tpl_type_name(v));
    }

    s = v->u.s;
    ind.p = "    ";
    ind.len = 4;

    if (llm_tpl_arg(a, 0, "width", &w)) {
        if (w.type == LLM_TPL_STR) {
            ind = w.u.s;

        } else if (llm_tpl_num(&w, &n, &f) == 1) {
            if (n < 0) {
                n = 0;
            }

            if ((uint64_t) n > r->max_output) {
                return llm_tpl_fail(r, "template output exceeds %zu bytes",
                                    r->max_output);
            }

            sp = llm_tpl_ralloc(r, (size_t) n + 1, 1);
            if (sp == NULL) {
                return LLM_ERR;
            }
            memset(sp, ' ', (size_t) n);
            ind.p = sp;
            ind.len = (size_t) n;

        } else {
            return llm_tpl_fail(r, "indent: width must be an int or a"
                                " string");
        }
    }

    first = llm_tpl_arg_bool(a, 1, "first", 0);
    blank = llm_tpl_arg_bool(a, 2, "blank", 0);

    /* s + "\n", split into lines: jinja2 does it this way */
    p = llm_tpl_ralloc(r, s.len + 1, 1);
    if (p == NULL) {
        return LLM_ERR;
    }
    if (s.len) {
        memcpy(p, s.p, s.len);
    }
    p[s.len] = '\n';
    s.p = p;
    s.len++;

    if (llm_tpl_splitlines(r, s, 0, &lines) != LLM_OK) {
        return LLM_ERR;
    }

    memset(&b, 0, sizeof(b));

    if (first && llm_tpl_buf_add(r, &b, ind.p, ind.len) != LLM_OK) {
        return LLM_ERR;
    }

    for (i = 0; i < lines->n; i++) {
        line = lines->items[i].u.s;

        if (i > 0) {
            if (llm_tpl_buf_addc(r, &b, '\n') != LLM_OK) {
                return LLM_ERR;
            }

            if ((blank || line.len)
                && llm_tpl_buf_add(r, &b, ind.p, ind.len) != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        if (llm_tpl_buf_add(r, &b, line.p, line.len) != LLM_OK) {
            return LLM_ERR;
        }
    }

    *out = llm_tpl_buf_val(&b);
    return LLM_OK;
}


/* jinja2's round(value, precision=0, method='common') */
static int
llm_tpl_filter_round(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int            k, rc;
    char           tmp[512];
    double         f, scale;
    int64_t        iv, prec;
    llm_tpl_str_t  method;

    prec = 0;
    if (llm_tpl_arg_int(r, a, 0, "precision", &prec) < 0) {
        return LLM_ERR;
    }

    method.p = "common";
    method.len = 6;

    rc = llm_tpl_arg_str(r, a, 1, "method", &method);
    if (rc < 0) {
        return LLM_ERR;
    }

    if (!llm_tpl_str_eq(method, "common") && !llm_tpl_str_eq(method, "ceil")
        && !llm_tpl_str_eq(method, "floor"))
    {
        return llm_tpl_fail(r, "method must be common, ceil or floor");
    }

    k = llm_tpl_num(v, &iv, &f);
    if (k == 0) {
        if (v->type == LLM_TPL_UNDEF) {
            return llm_tpl_fail_undef(r, v);
        }
        return llm_tpl_fail(r, "type %s doesn't define __round__ method",
                            llm_tpl_type_name(v));
    }

    if (prec > 400) {
        prec = 400;
    }

    if (prec < -400) {
        prec = -400;
    }

    if (method.p[0] != 'c' || method.len != 6) {
        if (method.p[0] == 'f' || method.p[0] == 'c') {
            scale = pow(10.0, (double) prec);
            f = method.p[0] == 'f' ? floor(f * scale) : ceil(f * scale);
            *out = llm_tpl_v_float(f / scale);
            return LLM_OK;
        }
    }

    /* Python's round(): exact, halves to even */
    if (k == 1 && prec >= 0) {
        *out = llm_tpl_v_int(iv);
        return LLM_OK;
    }

    if (isnan(f) || isinf(f)) {
        *out = llm_tpl_v_float(f);
        return LLM_OK;
    }

    if (prec >= 0) {
        if (prec > 300) {
            *out = llm_tpl_v_float(f);
            return LLM_OK;
        }
        snprintf(tmp, sizeof(tmp), "%.*f", (int) prec, f);
        f = strtod(tmp, NULL);

    } else {
        scale = pow(10.0, (double) -prec);
        f = nearbyint(f / scale) * scale;
    }

    if (k == 1) {
        if (f >= 9.2e18 || f <= -9.2e18) {
            return llm_tpl_fail(r, "integer overflow");
        }
        *out = llm_tpl_v_int((int64_t) f);
        return LLM_OK;
    }

    *out = llm_tpl_v_float(f);
    return LLM_OK;
}


/* jinja2's int(value, default=0, base=10) */
static int
llm_tpl_filter_int(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int            k;
    double         f;
    int64_t        iv, base;

    base = 10;
    if (llm_tpl_arg_int(r, a, 1, "base", &base) < 0) {
        return LLM_ERR;
    }

    if (v->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, v);
    }

    k = llm_tpl_num(v, &iv, &f);

    if (k == 1) {
        *out = llm_tpl_v_int(iv);
        return LLM_OK;
    }

    if (k == 2) {
        if (isnan(f) || isinf(f)) {
            return llm_tpl_fail(r, "cannot convert float %s to integer",
                                isnan(f) ? "NaN" : "infinity");
        }

        if (f >= 9.2e18 || f <= -9.2e18) {
            return llm_tpl_fail(r, "integer overflow");
        }

        *out = llm_tpl_v_int((int64_t) f);
        return LLM_OK;
    }

    if (v->type == LLM_TPL_STR) {
        if (base >= 0 && base <= 36 && base != 1
            && llm_tpl_parse_int(v->u.s, (int) base, &iv) == LLM_OK)
        {
            *out = llm_tpl_v_int(iv);
            return LLM_OK;
        }

        if (llm_tpl_parse_float(v->u.s, &f) == LLM_OK && !isnan(f)
            && !isinf(f) && f < 9.2e18 && f > -9.2e18)
        {
            *out = llm_tpl_v_int((int64_t) f);
            return LLM_OK;
        }
    }

    if (!llm_tpl_arg(a, 0, "default", out)) {
        *out = llm_tpl_v_int(0);
    }

    return LLM_OK;
}


static int
llm_tpl_filter_float(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int      k;
    double   f;
    int64_t  iv;

    if (v->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, v);
    }

    k = llm_tpl_num(v, &iv, &f);

    if (k != 0) {
        *out = llm_tpl_v_float(f);
        return LLM_OK;
    }

    if (v->type == LLM_TPL_STR && llm_tpl_parse_float(v->u.s, &f) == LLM_OK)
    {
        *out = llm_tpl_v_float(f);
        return LLM_OK;
    }

    if (!llm_tpl_arg(a, 0, "default", out)) {
        *out = llm_tpl_v_float(0.0);
    }

    return LLM_OK;
}


/* Python's int(s, base): whitespace around, a sign, "_" between digits */
static int
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
static int
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


/* ---- tests ------------------------------------------------------------ */

int
llm_tpl_test(llm_tpl_render_t *r, int id, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, int *res)
{
    int            k, c, cased, lower, upper;
    double         f, fd;
    size_t         i, n;
    int64_t        iv, d;
    uint32_t       cp;
    llm_tpl_str_t  s;
    llm_tpl_val_t  other;

    *res = 0;

    /* the tests up to "odd" take no argument besides the value */
    if (id <= LLM_TPL_IS_ODD && (a->npos || a->nkw)) {
        return llm_tpl_fail(r, "the test takes 1 positional argument but"
                            " %zu were given", a->npos + a->nkw + 1);
    }

    switch (id) {
    case LLM_TPL_IS_DEFINED:
        *res = v->type != LLM_TPL_UNDEF;
        return LLM_OK;

    case LLM_TPL_IS_UNDEFINED:
        *res = v->type == LLM_TPL_UNDEF;
        return LLM_OK;

    case LLM_TPL_IS_NONE:
        *res = v->type == LLM_TPL_NONE;
        return LLM_OK;

    case LLM_TPL_IS_BOOLEAN:
        *res = v->type == LLM_TPL_BOOL;
        return LLM_OK;

    case LLM_TPL_IS_TRUE:
        *res = v->type == LLM_TPL_BOOL && v->u.b;
        return LLM_OK;

    case LLM_TPL_IS_FALSE:
        *res = v->type == LLM_TPL_BOOL && !v->u.b;
        return LLM_OK;

    case LLM_TPL_IS_INTEGER:
        *res = v->type == LLM_TPL_INT;
        return LLM_OK;

    case LLM_TPL_IS_FLOAT:
        *res = v->type == LLM_TPL_FLOAT;
        return LLM_OK;

    case LLM_TPL_IS_NUMBER:
        *res = llm_tpl_is_num(v);
        return LLM_OK;

    case LLM_TPL_IS_STRING:
        *res = v->type == LLM_TPL_STR;
        return LLM_OK;

    case LLM_TPL_IS_MAPPING:
        *res = v->type == LLM_TPL_DICT;
        return LLM_OK;

    case LLM_TPL_IS_ITERABLE:
        /* jinja2's Undefined iterates, as empty */
        *res = v->type == LLM_TPL_STR || v->type == LLM_TPL_LIST
               || v->type == LLM_TPL_DICT || v->type == LLM_TPL_UNDEF
               || v->type == LLM_TPL_LOOP;
        return LLM_OK;

    case LLM_TPL_IS_SEQUENCE:
        *res = v->type == LLM_TPL_STR || v->type == LLM_TPL_LIST
               || v->type == LLM_TPL_DICT || v->type == LLM_TPL_UNDEF;
        return LLM_OK;

    case LLM_TPL_IS_CALLABLE:
        /* jinja2's Undefined is callable: calling it raises */
        *res = v->type == LLM_TPL_MACRO || v->type == LLM_TPL_FUNC
               || v->type == LLM_TPL_UNDEF;
        return LLM_OK;

    case LLM_TPL_IS_EVEN:
    case LLM_TPL_IS_ODD:
    case LLM_TPL_IS_DIVISIBLEBY:
        if (v->type == LLM_TPL_UNDEF) {
            return llm_tpl_fail_undef(r, v);
        }

        k = llm_tpl_num(v, &iv, &f);
        if (k == 0) {
            return llm_tpl_fail(r, "not all arguments converted during"
                                " string formatting");
        }

        if (id == LLM_TPL_IS_DIVISIBLEBY) {
            if (!llm_tpl_arg(a, 0, "num", &other)) {
                return llm_tpl_fail(r, "divisibleby() needs a number");
            }
        } else {
            other = llm_tpl_v_int(2);
        }

        c = llm_tpl_num(&other, &d, &fd);
        if (c == 0) {
            return llm_tpl_fail(r, "unsupported operand type(s) for %%: '%s'"
                                " and '%s'", llm_tpl_type_name(v),
                                llm_tpl_type_name(&other));
        }

        /* value % n as Python computes it; odd is "% 2 == 1" */
        if (k == 1 && c == 1) {
            if (d == 0) {
                return llm_tpl_fail(r, "integer division or modulo by zero");
            }

            iv = d == -1 ? 0 : iv % d;
            if (iv != 0 && ((iv < 0) != (d < 0))) {
                iv += d;
            }

            *res = id == LLM_TPL_IS_ODD ? iv == 1 : iv == 0;

        } else {
            if (fd == 0) {
                return llm_tpl_fail(r, "float modulo");
            }

            f = fmod(f, fd);
            if (f != 0 && ((f < 0) != (fd < 0))) {
                f += fd;
            }

            *res = id == LLM_TPL_IS_ODD ? f == 1.0 : f == 0;
        }
        return LLM_OK;

    case LLM_TPL_IS_EQ:
    case LLM_TPL_IS_NE:
        if (!llm_tpl_arg(a, 0, "other", &other)) {
            return llm_tpl_fail(r, "the test needs a value to compare");
        }
        if (llm_tpl_equal(r, v, &other, res, 0) != LLM_OK) {
            return LLM_ERR;
        }
        *res ^= id == LLM_TPL_IS_NE;
        return LLM_OK;

    case LLM_TPL_IS_LT:
    case LLM_TPL_IS_LE:
    case LLM_TPL_IS_GT:
    case LLM_TPL_IS_GE:
        if (!llm_tpl_arg(a, 0, "other", &other)) {
            return llm_tpl_fail(r, "the test needs a value to compare");
        }
        if (llm_tpl_compare(r, v, &other, &c, 0) != LLM_OK) {
            return LLM_ERR;
        }
        *res = id == LLM_TPL_IS_LT ? c < 0 : id == LLM_TPL_IS_LE ? c <= 0
               : id == LLM_TPL_IS_GT ? c > 0 : c >= 0;
        return LLM_OK;

    case LLM_TPL_IS_IN:
        if (!llm_tpl_arg(a, 0, "seq", &other)) {
            return llm_tpl_fail(r, "the in test needs a sequence");
        }
        return llm_tpl_contains(r, v, &other, res);

    case LLM_TPL_IS_SAMEAS:
        if (!llm_tpl_arg(a, 0, "other", &other)) {
            return llm_tpl_fail(r, "sameas needs a value");
        }

        if (v->type != other.type) {
            return LLM_OK;
        }

        switch (v->type) {
        case LLM_TPL_LIST:
            *res = v->u.list == other.u.list;
            return LLM_OK;
        case LLM_TPL_DICT:
        case LLM_TPL_NS:
            *res = v->u.dict == other.u.dict;
            return LLM_OK;
        case LLM_TPL_STR:
            *res = v->u.s.p == other.u.s.p && v->u.s.len == other.u.s.len;
            return LLM_OK;
        default:
            return llm_tpl_equal(r, v, &other, res, 0);
        }

    case LLM_TPL_IS_LOWER:
    case LLM_TPL_IS_UPPER:
        /* jinja2 tests str(value) */
        if (llm_tpl_to_str(r, v, &s) != LLM_OK) {
            return LLM_ERR;
        }

        cased = lower = upper = 0;

        for (i = 0; i < s.len; i += n) {
            n = llm_tpl_utf8_dec(s.p + i, s.len - i, &cp);

            if (llm_tpl_is_cased(cp)) {
                cased = 1;
                if (llm_tpl_cp_upper(cp) != cp || cp == 0xdf) {
                    lower = 1;
                }
                if (llm_tpl_cp_lower(cp) != cp) {
                    upper = 1;
                }
            }
        }

        *res = cased && (id == LLM_TPL_IS_LOWER ? !upper : !lower);
        return LLM_OK;

    case LLM_TPL_IS_ESCAPED:
        return LLM_OK;

    case LLM_TPL_IS_FILTER:
    case LLM_TPL_IS_TEST:
        if (v->type == LLM_TPL_STR) {
            *res = (id == LLM_TPL_IS_FILTER ? llm_tpl_filter_id(v->u.s)
                                           : llm_tpl_test_id(v->u.s)) >= 0;
        }
        return LLM_OK;

    default:
        return llm_tpl_fail(r, "unknown test");
    }
}


/* ---- methods and global functions ------------------------------------- */

static int
llm_tpl_func(llm_tpl_render_t *r, int id, const llm_tpl_val_t *self,
    llm_tpl_val_t *out)
{
    llm_tpl_func_t  *fn;

    fn = llm_tpl_ralloc(r, 1, sizeof(llm_tpl_func_t));
    if (fn == NULL) {
        return LLM_ERR;
    }

    fn->id = id;
    if (self != NULL) {
        fn->self = *self;
    }

    out->type = LLM_TPL_FUNC;
    out->u.func = fn;

    return LLM_OK;
}


/* 1: obj.name is a method (now in out), 0: it is not, -1: error */
int
llm_tpl_method(llm_tpl_render_t *r, const llm_tpl_val_t *obj,
    llm_tpl_str_t name, llm_tpl_val_t *out)
{
    int                    id;
    size_t                 i;
    const char *const     *unsafe;
    const llm_tpl_name_t  *table;

    switch (obj->type) {
    case LLM_TPL_STR:
        table = llm_tpl_str_methods;
        unsafe = NULL;
        break;

    case LLM_TPL_DICT:
        table = llm_tpl_dict_methods;
        unsafe = llm_tpl_unsafe_dict;
        break;

    case LLM_TPL_LIST:
        table = llm_tpl_list_methods;
        unsafe = llm_tpl_unsafe_list;
        break;

    default:
        return 0;
    }

    for (i = 0; unsafe != NULL && unsafe[i] != NULL; i++) {
        if (llm_tpl_str_eq(name, unsafe[i])) {
            llm_tpl_fail(r, "access to attribute '%s' of '%s' object is"
                         " unsafe.", unsafe[i], llm_tpl_type_name(obj));
            return -1;
        }
    }

    id = llm_tpl_lookup(table, name);
    if (id < 0) {
        return 0;
    }

    return llm_tpl_func(r, id, obj, out) == LLM_OK ? 1 : -1;
}


int
llm_tpl_add_globals(llm_tpl_render_t *r, llm_tpl_frame_t *f)
{
    llm_tpl_val_t          v;
    llm_tpl_str_t          name;
    const llm_tpl_name_t  *g;

    for (g = llm_tpl_globals; g->name != NULL; g++) {
        name.p = g->name;
        name.len = strlen(g->name);

        if (llm_tpl_func(r, g->id, NULL, &v) != LLM_OK
            || llm_tpl_frame_set(r, f, name, &v) != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


/* keyword arguments (and a mapping at first_pos) as a dict */
static int
llm_tpl_kwargs_dict(llm_tpl_render_t *r, llm_tpl_args_t *a,
    size_t first_pos, llm_tpl_dict_t **out)
{
    size_t           i;
    llm_tpl_val_t    k;
    llm_tpl_dict_t  *d, *src;

    d = llm_tpl_dict_new(r, a->nkw);
    if (d == NULL) {
        return LLM_ERR;
    }

    if (first_pos < a->npos) {
        if (a->pos[first_pos].type != LLM_TPL_DICT) {
            return llm_tpl_fail(r, "expected a mapping, got %s",
                                llm_tpl_type_name(&a->pos[first_pos]));
        }

        src = a->pos[first_pos].u.dict;

        for (i = 0; i < src->n; i++) {
            if (llm_tpl_dict_set(r, d, &src->keys[i], &src->vals[i])
                != LLM_OK)
            {
                return LLM_ERR;
            }
        }
    }

    for (i = 0; i < a->nkw; i++) {
        k = llm_tpl_v_str(a->kwnames[i].p, a->kwnames[i].len);
        if (llm_tpl_dict_set(r, d, &k, &a->kwvals[i]) != LLM_OK) {
            return LLM_ERR;
        }
    }

    *out = d;
    return LLM_OK;
}


int
llm_tpl_call_func(llm_tpl_render_t *r, const llm_tpl_func_t *fn,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    double           f;
    int64_t          start, stop, step, n, i;
    llm_tpl_str_t    s;
    llm_tpl_buf_t    b;
    llm_tpl_list_t  *l;
    llm_tpl_dict_t  *d;

    switch (fn->id) {
    case LLM_TPL_FN_RANGE:
        start = 0;
        step = 1;

        if (a->npos == 0 || a->npos > 3 || a->nkw) {
            return llm_tpl_fail(r, "range() takes 1 to 3 arguments");
        }

        for (i = 0; i < (int64_t) a->npos; i++) {
            if (llm_tpl_num(&a->pos[i], &n, &f) != 1) {
                return llm_tpl_fail(r, "'%s' object cannot be interpreted"
                                    " as an integer",
                                    llm_tpl_type_name(&a->pos[i]));
            }
        }

        if (a->npos == 1) {
            llm_tpl_num(&a->pos[0], &stop, &f);

        } else {
            llm_tpl_num(&a->pos[0], &start, &f);
            llm_tpl_num(&a->pos[1], &stop, &f);
            if (a->npos == 3) {
                llm_tpl_num(&a->pos[2], &step, &f);
            }
        }

        if (step == 0) {
            return llm_tpl_fail(r, "range() arg 3 must not be zero");
        }

        /* the item count, computed without overflow */
        if (step > 0) {
            n = start < stop ? (int64_t) (((uint64_t) stop - (uint64_t) start
                                           - 1) / (uint64_t) step + 1) : 0;
        } else {
            n = start > stop ? (int64_t) (((uint64_t) start - (uint64_t) stop
                                           - 1) / (0 - (uint64_t) step) + 1)
                             : 0;
        }

        if (n < 0 || n > 100000) {
            return llm_tpl_fail(r, "Range too big. The sandbox blocks ranges"
                                " larger than MAX_RANGE (100000).");
        }

        l = llm_tpl_list_new(r, (size_t) n);
        if (l == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < n; i++) {
            l->items[i] = llm_tpl_v_int(start + i * step);
        }
        l->n = (size_t) n;

        *out = llm_tpl_v_list(l);
        return LLM_OK;

    case LLM_TPL_FN_NAMESPACE:
    case LLM_TPL_FN_DICT:
        if (a->npos > 1) {
            return llm_tpl_fail(r, "%s() takes at most one positional"
                                " argument",
                                fn->id == LLM_TPL_FN_DICT ? "dict"
                                                          : "namespace");
        }

        if (llm_tpl_kwargs_dict(r, a, 0, &d) != LLM_OK) {
            return LLM_ERR;
        }

        out->type = fn->id == LLM_TPL_FN_DICT ? LLM_TPL_DICT : LLM_TPL_NS;
        out->u.dict = d;
        return LLM_OK;

    case LLM_TPL_FN_RAISE:
        s.p = "";
        s.len = 0;

        if (a->npos > 0 && llm_tpl_to_str(r, &a->pos[0], &s) != LLM_OK) {
            return LLM_ERR;
        }

        if (!r->failed) {
            r->raised = 1;
        }

        return llm_tpl_fail(r, "%.*s", (int) s.len, s.p);

    case LLM_TPL_FN_STRFTIME:
        if (a->npos < 1 || a->pos[0].type != LLM_TPL_STR) {
            return llm_tpl_fail(r, "strftime_now() needs a format string");
        }

        memset(&b, 0, sizeof(b));
        if (llm_tpl_strftime(r, &b, a->pos[0].u.s, &r->date) != LLM_OK) {
            return LLM_ERR;
        }

        *out = llm_tpl_buf_val(&b);
        return LLM_OK;

    default:
        return llm_tpl_call_method(r, fn->id, &fn->self, a, out);
    }
}


static int
llm_tpl_call_method(llm_tpl_render_t *r, int id, const llm_tpl_val_t *self,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int              found, e;
    size_t           i;
    llm_tpl_val_t    key, v;
    llm_tpl_list_t  *l, *src;
    llm_tpl_dict_t  *d;

    if (self->type == LLM_TPL_STR) {
        return llm_tpl_call_str_method(r, id, self->u.s, a, out);
    }

    switch (id) {
    case LLM_TPL_FN_ITEMS:
        return llm_tpl_items(r, self, out);

    case LLM_TPL_FN_KEYS:
    case LLM_TPL_FN_VALUES:
        d = self->u.dict;

        l = llm_tpl_list_new(r, d->n);
        if (l == NULL) {
            return LLM_ERR;
        }

        if (d->n) {
            memcpy(l->items, id == LLM_TPL_FN_KEYS ? d->keys : d->vals,
                   d->n * sizeof(llm_tpl_val_t));
        }
        l->n = d->n;

        *out = llm_tpl_v_list(l);
        return LLM_OK;

    case LLM_TPL_FN_GET:
        if (!llm_tpl_arg(a, 0, "key", &key)) {
            return llm_tpl_fail(r, "get expected at least 1 argument, got 0");
        }

        found = llm_tpl_dict_get(r, self->u.dict, &key, out);
        if (found < 0) {
            return LLM_ERR;
        }

        if (!found && !llm_tpl_arg(a, 1, "default", out)) {
            *out = llm_tpl_v_none();
        }
        return LLM_OK;

    case LLM_TPL_FN_COPY:
        d = llm_tpl_dict_new(r, self->u.dict->n);
        if (d == NULL) {
            return LLM_ERR;
        }

        if (self->u.dict->n) {
            memcpy(d->keys, self->u.dict->keys,
                   self->u.dict->n * sizeof(llm_tpl_val_t));
            memcpy(d->vals, self->u.dict->vals,
                   self->u.dict->n * sizeof(llm_tpl_val_t));
        }
        d->n = self->u.dict->n;

        out->type = LLM_TPL_DICT;
        out->u.dict = d;
        return LLM_OK;

    case LLM_TPL_FN_LCOUNT:
    case LLM_TPL_FN_INDEX:
        if (!llm_tpl_arg(a, 0, "value", &v)) {
            return llm_tpl_fail(r, "expected 1 argument, got 0");
        }

        src = self->u.list;
        found = 0;

        if (llm_tpl_steps(r, src->n / 8 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        for (i = 0; i < src->n; i++) {
            if (llm_tpl_equal(r, &src->items[i], &v, &e, 0) != LLM_OK) {
                return LLM_ERR;
            }

            if (e && id == LLM_TPL_FN_INDEX) {
                *out = llm_tpl_v_int((int64_t) i);
                return LLM_OK;
            }

            found += e;
        }

        if (id == LLM_TPL_FN_INDEX) {
            return llm_tpl_fail(r, "value is not in list");
        }

        *out = llm_tpl_v_int(found);
        return LLM_OK;

    default:
        return llm_tpl_fail(r, "unknown method");
    }
}


static int
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
                return llm_tpl_fail(r, "'%.*s'", (int) part.len, part.p);
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
                                                (int) key.u.s.len,
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
static int
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
