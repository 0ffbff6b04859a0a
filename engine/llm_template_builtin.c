/*
 * Copyright (C) ngx_llm developers
 *
 * Template builtins: jinja2's filters and tests, the dict and list
 * methods templates call, and the globals HF provides (range,
 * namespace, dict, raise_exception, strftime_now).  String methods and
 * formatting are in llm_template_string.c.
 *
 * As in HF's ImmutableSandboxedEnvironment, methods that would modify a
 * list or dict (append, update ...) are refused.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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


static int llm_tpl_lookup(const llm_tpl_name_t *t, llm_tpl_str_t name);
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
static int llm_tpl_call_method(llm_tpl_render_t *r, int id,
    const llm_tpl_val_t *self, llm_tpl_args_t *a, llm_tpl_val_t *out);
static int llm_tpl_kwargs_dict(llm_tpl_render_t *r, llm_tpl_args_t *a,
    size_t first_pos, llm_tpl_dict_t **out);



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
int
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
int
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
int
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


int
llm_tpl_arg_bool(const llm_tpl_args_t *a, size_t pos, const char *name,
    int def)
{
    llm_tpl_val_t  v;

    if (!llm_tpl_arg(a, pos, name, &v)) {
        return def;
    }

    return llm_tpl_truthy(&v);
}


/*
 * The join filter str()s every item; str.join() (strict) wants strings.
 */
int
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
                                     " '%.*s'", LLM_TPL_PREC(s.len), s.p);
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

        return llm_tpl_fail(r, "%.*s", LLM_TPL_PREC(s.len), s.p);

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
