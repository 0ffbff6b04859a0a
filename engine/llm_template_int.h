/*
 * Copyright (C) ngx_llm developers
 *
 * Internals of the template interpreter, shared by llm_template*.c:
 * arenas, values, the syntax tree and the render state.
 *
 *   llm_template.c          arenas, public API, JSON input, CLI
 *   llm_template_lex.c      source text -> tokens (whitespace control)
 *   llm_template_parse.c    tokens -> syntax tree
 *   llm_template_eval.c     statements and expressions
 *   llm_template_value.c    values: strings, UTF-8, str(), repr(), JSON,
 *                           equality and ordering, lists, dicts, frames
 *   llm_template_builtin.c  filters, tests, dict and list methods, globals
 *   llm_template_string.c   str methods, "%" and str.format(), dates
 */

#ifndef LLM_TEMPLATE_INT_H
#define LLM_TEMPLATE_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "llm_common.h"
#include "llm_template.h"


/* evaluation depth (C recursion) allowed while rendering */
#define LLM_TPL_MAX_EVAL_DEPTH  600

/* exec() results besides LLM_OK and LLM_ERR */
#define LLM_TPL_BREAK     1
#define LLM_TPL_CONTINUE  2

/* a precision for "%.*s" that stays positive for any length */
#define LLM_TPL_PREC(len)  ((int) ((len) > 1024 ? 1024 : (len)))

/* a byte that is not valid UTF-8 decodes to this plus its value */
#define LLM_TPL_BADCP     0x110000


/* ---- arena ------------------------------------------------------------ */

typedef struct llm_tpl_chunk_s  llm_tpl_chunk_t;

typedef struct {
    llm_tpl_chunk_t  *head;
    size_t            total;    /* bytes taken from malloc() */
    size_t            limit;    /* 0: none */
    int               oom;      /* malloc() failed, not the limit */
} llm_tpl_arena_t;

void *llm_tpl_alloc(llm_tpl_arena_t *a, size_t size);
void *llm_tpl_calloc(llm_tpl_arena_t *a, size_t n, size_t size);
void llm_tpl_arena_free(llm_tpl_arena_t *a);


/* ---- values ----------------------------------------------------------- */

typedef enum {
    LLM_TPL_UNDEF = 0,
    LLM_TPL_NONE,
    LLM_TPL_BOOL,
    LLM_TPL_INT,
    LLM_TPL_FLOAT,
    LLM_TPL_STR,
    LLM_TPL_LIST,
    LLM_TPL_DICT,
    LLM_TPL_NS,
    LLM_TPL_MACRO,
    LLM_TPL_FUNC,
    LLM_TPL_LOOP
} llm_tpl_type_e;

typedef struct llm_tpl_list_s   llm_tpl_list_t;
typedef struct llm_tpl_dict_s   llm_tpl_dict_t;
typedef struct llm_tpl_macro_s  llm_tpl_macro_t;
typedef struct llm_tpl_func_s   llm_tpl_func_t;
typedef struct llm_tpl_loop_s   llm_tpl_loop_t;
typedef struct llm_tpl_frame_s  llm_tpl_frame_t;
typedef struct llm_tpl_node_s   llm_tpl_node_t;

/* not NUL-terminated; may point into the template, JSON or the arena */
typedef struct {
    const char  *p;
    size_t       len;
} llm_tpl_str_t;

typedef struct {
    int                   type;     /* llm_tpl_type_e */
    union {
        int               b;
        int64_t           i;
        double            f;
        llm_tpl_str_t     s;        /* STR; UNDEF: the error to raise
                                       when it is used (len 0: none) */
        llm_tpl_list_t   *list;     /* LIST (and tuples) */
        llm_tpl_dict_t   *dict;     /* DICT, NS */
        llm_tpl_macro_t  *macro;
        llm_tpl_func_t   *func;
        llm_tpl_loop_t   *loop;
    } u;
} llm_tpl_val_t;

struct llm_tpl_list_s {
    llm_tpl_val_t   *items;
    size_t           n;
    size_t           cap;
    int              tuple;
};

/* insertion-ordered; keys compare with Python's == */
struct llm_tpl_dict_s {
    llm_tpl_val_t   *keys;
    llm_tpl_val_t   *vals;
    size_t           n;
    size_t           cap;
};

/* a macro, or the body of a {% call %} block bound as caller() */
struct llm_tpl_macro_s {
    const llm_tpl_node_t  *node;
    llm_tpl_frame_t       *closure;
};

/* a global function or a method bound to self */
struct llm_tpl_func_s {
    int              id;            /* LLM_TPL_FN_* */
    llm_tpl_val_t    self;
};

struct llm_tpl_loop_s {
    llm_tpl_list_t  *items;
    size_t           index0;
    int              depth0;
};

struct llm_tpl_frame_s {
    llm_tpl_frame_t  *parent;
    llm_tpl_str_t    *names;
    llm_tpl_val_t    *vals;
    size_t            n;
    size_t            cap;
    int               captured;     /* a macro closes over it: keep it */
};

typedef struct {
    llm_tpl_val_t   *pos;
    size_t           npos;
    llm_tpl_str_t   *kwnames;
    llm_tpl_val_t   *kwvals;
    size_t           nkw;
} llm_tpl_args_t;


static inline llm_tpl_val_t
llm_tpl_v_none(void)
{
    llm_tpl_val_t  v;

    v.type = LLM_TPL_NONE;
    v.u.i = 0;
    return v;
}


static inline llm_tpl_val_t
llm_tpl_v_bool(int b)
{
    llm_tpl_val_t  v;

    v.type = LLM_TPL_BOOL;
    v.u.i = 0;
    v.u.b = b != 0;
    return v;
}


static inline llm_tpl_val_t
llm_tpl_v_int(int64_t i)
{
    llm_tpl_val_t  v;

    v.type = LLM_TPL_INT;
    v.u.i = i;
    return v;
}


static inline llm_tpl_val_t
llm_tpl_v_float(double f)
{
    llm_tpl_val_t  v;

    v.type = LLM_TPL_FLOAT;
    v.u.f = f;
    return v;
}


static inline llm_tpl_val_t
llm_tpl_v_str(const char *p, size_t len)
{
    llm_tpl_val_t  v;

    v.type = LLM_TPL_STR;
    v.u.s.p = p;
    v.u.s.len = len;
    return v;
}


static inline int
llm_tpl_is_num(const llm_tpl_val_t *v)
{
    return v->type == LLM_TPL_INT || v->type == LLM_TPL_FLOAT
           || v->type == LLM_TPL_BOOL;
}


static inline int
llm_tpl_str_eq(llm_tpl_str_t s, const char *lit)
{
    size_t  i;

    for (i = 0; i < s.len; i++) {
        if (lit[i] == '\0' || lit[i] != s.p[i]) {
            return 0;
        }
    }
    return lit[i] == '\0';
}


/* ---- syntax tree ------------------------------------------------------ */

typedef enum {
    /* expressions */
    LLM_TPL_N_CONST = 1,    /* val */
    LLM_TPL_N_NAME,         /* name */
    LLM_TPL_N_GETATTR,      /* a.name */
    LLM_TPL_N_GETITEM,      /* a[b] */
    LLM_TPL_N_SLICE,        /* a[b:c:d], each of b, c, d may be NULL */
    LLM_TPL_N_CALL,         /* a(args, kw) */
    LLM_TPL_N_FILTER,       /* a | name(args, kw), op: filter id;
                               a is NULL in {% filter %} and set blocks */
    LLM_TPL_N_TEST,         /* a is [not] name(args, kw), op: test id,
                               neg */
    LLM_TPL_N_KWARG,        /* name=a, inside kw[] */
    LLM_TPL_N_NEG,          /* -a */
    LLM_TPL_N_POS,          /* +a */
    LLM_TPL_N_NOT,          /* not a */
    LLM_TPL_N_BINOP,        /* a op b */
    LLM_TPL_N_AND,
    LLM_TPL_N_OR,
    LLM_TPL_N_CMP,          /* a ops[0] args[0] ops[1] args[1] ... */
    LLM_TPL_N_COND,         /* a if b else c (c may be NULL) */
    LLM_TPL_N_LIST,         /* [args] */
    LLM_TPL_N_TUPLE,        /* (args) */
    LLM_TPL_N_DICT,         /* {args[0]: args[1], ...} */

    /* statements */
    LLM_TPL_N_DATA,         /* val: text */
    LLM_TPL_N_PRINT,        /* {{ a }} */
    LLM_TPL_N_IF,           /* if a: body else orelse */
    LLM_TPL_N_FOR,          /* for args(targets) in a if b: body
                               else orelse */
    LLM_TPL_N_SET,          /* args(targets) = a; a target is a NAME or
                               a GETATTR of a NAME (namespace) */
    LLM_TPL_N_SETBLOCK,     /* args[0] = body | filters */
    LLM_TPL_N_MACRO,        /* name(args: NAMEs, a: default): body */
    LLM_TPL_N_CALLBLOCK,    /* call(args) a: body */
    LLM_TPL_N_FILTERBLOCK,  /* body | filters */
    LLM_TPL_N_WITH,         /* args: NAMEs with a: value; body */
    LLM_TPL_N_BREAK,
    LLM_TPL_N_CONTINUE,
    LLM_TPL_N_BLOCK         /* body in the same scope: {% generation %} */
} llm_tpl_kind_e;

/* binary operators, and token codes of operators longer than a char */
enum {
    LLM_TPL_OP_FLOORDIV = 256,  /* // */
    LLM_TPL_OP_POW,             /* ** */
    LLM_TPL_OP_EQ,              /* == */
    LLM_TPL_OP_NE,              /* != */
    LLM_TPL_OP_GE,              /* >= */
    LLM_TPL_OP_LE,              /* <= */
    LLM_TPL_OP_IN,
    LLM_TPL_OP_NOTIN
};

struct llm_tpl_node_s {
    int               kind;         /* llm_tpl_kind_e */
    int               op;
    int               line;
    int               neg;
    llm_tpl_val_t     val;
    llm_tpl_str_t     name;
    llm_tpl_node_t   *a;
    llm_tpl_node_t   *b;
    llm_tpl_node_t   *c;
    llm_tpl_node_t   *d;
    llm_tpl_node_t  **args;
    size_t            nargs;
    int              *ops;          /* CMP: nargs operators */
    llm_tpl_node_t  **kw;           /* KWARG nodes */
    size_t            nkw;
    llm_tpl_node_t  **filters;      /* FILTER nodes with a == NULL */
    size_t            nfilters;
    llm_tpl_node_t  **body;
    size_t            nbody;
    llm_tpl_node_t  **orelse;
    size_t            norelse;
};

struct llm_template_s {
    llm_tpl_arena_t    arena;
    llm_tpl_node_t   **body;
    size_t             nbody;
};


/* ---- lexer and parser ------------------------------------------------- */

typedef enum {
    LLM_TPL_T_EOF = 0,
    LLM_TPL_T_DATA,
    LLM_TPL_T_VAR_BEGIN,
    LLM_TPL_T_VAR_END,
    LLM_TPL_T_BLOCK_BEGIN,
    LLM_TPL_T_BLOCK_END,
    LLM_TPL_T_NAME,
    LLM_TPL_T_STRING,
    LLM_TPL_T_INT,
    LLM_TPL_T_FLOAT,
    LLM_TPL_T_OP
} llm_tpl_tok_e;

typedef struct {
    int              type;          /* llm_tpl_tok_e */
    int              op;            /* OP: a char or LLM_TPL_OP_* */
    int              line;
    llm_tpl_str_t    s;             /* NAME, STRING, DATA */
    int64_t          i;
    double           f;
} llm_tpl_tok_t;

typedef struct {
    llm_tpl_arena_t  *arena;
    llm_err_t        *err;
    llm_tpl_tok_t    *toks;
    size_t            ntoks;
    size_t            cap;
    size_t            pos;
    int               depth;
    int               loops;        /* enclosing for loops, for break */
} llm_tpl_parser_t;

int llm_tpl_lex(llm_tpl_parser_t *p, const char *src, size_t len);
int llm_tpl_parse_body(llm_tpl_parser_t *p, llm_tpl_node_t ***body,
    size_t *nbody);


/* ---- render ----------------------------------------------------------- */

typedef struct {
    char    *p;
    size_t   len;
    size_t   cap;
} llm_tpl_buf_t;

typedef struct {
    llm_tpl_arena_t    arena;
    uint64_t           steps;
    uint64_t           max_steps;
    size_t             max_output;
    int                depth;
    int                calls;
    int                line;        /* where the error happened */
    int                failed;
    int                raised;      /* raise_exception() */
    int                nomem;       /* malloc() itself failed */
    char               msg[LLM_ERRSTR_MAX];
    llm_tpl_buf_t     *out;
    llm_tpl_frame_t   *globals;
    struct tm          date;
} llm_tpl_render_t;


/* json.dumps() arguments, as HF's tojson filter passes them */
typedef struct {
    const llm_tpl_str_t  *indent;       /* NULL: no newlines */
    llm_tpl_str_t         item_sep;
    llm_tpl_str_t         key_sep;
    int                   sort_keys;
    int                   ensure_ascii;
} llm_tpl_json_opts_t;


/* llm_template_value.c */
int llm_tpl_fail(llm_tpl_render_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int llm_tpl_steps(llm_tpl_render_t *r, uint64_t n);
void *llm_tpl_ralloc(llm_tpl_render_t *r, size_t n, size_t size);
int llm_tpl_strdup(llm_tpl_render_t *r, const char *p, size_t len,
    llm_tpl_val_t *out);
llm_tpl_val_t llm_tpl_undef(llm_tpl_render_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int llm_tpl_fail_undef(llm_tpl_render_t *r, const llm_tpl_val_t *v);

int llm_tpl_buf_add(llm_tpl_render_t *r, llm_tpl_buf_t *b, const char *p,
    size_t len);
int llm_tpl_buf_addc(llm_tpl_render_t *r, llm_tpl_buf_t *b, char c);
int llm_tpl_buf_adds(llm_tpl_render_t *r, llm_tpl_buf_t *b, const char *s);
int llm_tpl_buf_addcp(llm_tpl_render_t *r, llm_tpl_buf_t *b, uint32_t cp);
llm_tpl_val_t llm_tpl_buf_val(llm_tpl_buf_t *b);

size_t llm_tpl_utf8_dec(const char *p, size_t len, uint32_t *cp);
size_t llm_tpl_utf8_enc(uint32_t cp, char *out);
size_t llm_tpl_utf8_len(const char *p, size_t len);
int llm_tpl_is_space(uint32_t cp);
uint32_t llm_tpl_cp_upper(uint32_t cp);
uint32_t llm_tpl_cp_lower(uint32_t cp);
int llm_tpl_is_cased(uint32_t cp);
int llm_tpl_is_alpha(uint32_t cp);
int llm_tpl_is_digit(uint32_t cp);

void llm_tpl_fmt_float(double d, char *buf, size_t size);
const char *llm_tpl_type_name(const llm_tpl_val_t *v);
int llm_tpl_truthy(const llm_tpl_val_t *v);
int llm_tpl_num(const llm_tpl_val_t *v, int64_t *i, double *f);
int llm_tpl_to_str(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_str_t *out);
int llm_tpl_add_str(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, int depth);
int llm_tpl_add_repr(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, int depth);
int llm_tpl_add_json(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    const llm_tpl_val_t *v, const llm_tpl_json_opts_t *o, int level);
int llm_tpl_equal(llm_tpl_render_t *r, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, int *eq, int depth);
int llm_tpl_compare(llm_tpl_render_t *r, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, int *cmp, int depth);
int llm_tpl_contains(llm_tpl_render_t *r, const llm_tpl_val_t *item,
    const llm_tpl_val_t *seq, int *in);
int llm_tpl_length(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    int64_t *len);
int llm_tpl_iterate(llm_tpl_render_t *r, const llm_tpl_val_t *v,
    llm_tpl_list_t **out);

typedef int (*llm_tpl_cmp_pt)(llm_tpl_render_t *r, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, int *cmp, void *ctx);

int llm_tpl_sort(llm_tpl_render_t *r, llm_tpl_val_t *v, size_t n,
    llm_tpl_cmp_pt cmp, void *ctx);

llm_tpl_list_t *llm_tpl_list_new(llm_tpl_render_t *r, size_t cap);
int llm_tpl_list_push(llm_tpl_render_t *r, llm_tpl_list_t *l,
    const llm_tpl_val_t *v);
llm_tpl_val_t llm_tpl_v_list(llm_tpl_list_t *l);
llm_tpl_dict_t *llm_tpl_dict_new(llm_tpl_render_t *r, size_t cap);
int llm_tpl_dict_set(llm_tpl_render_t *r, llm_tpl_dict_t *d,
    const llm_tpl_val_t *key, const llm_tpl_val_t *val);
int llm_tpl_dict_get(llm_tpl_render_t *r, const llm_tpl_dict_t *d,
    const llm_tpl_val_t *key, llm_tpl_val_t *val);
int llm_tpl_dict_gets(llm_tpl_render_t *r, const llm_tpl_dict_t *d,
    llm_tpl_str_t key, llm_tpl_val_t *val);
int llm_tpl_from_json(llm_tpl_render_t *r, json_t *j, llm_tpl_val_t *out,
    int depth);

llm_tpl_frame_t *llm_tpl_frame_new(llm_tpl_render_t *r,
    llm_tpl_frame_t *parent);
int llm_tpl_frame_set(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_str_t name, const llm_tpl_val_t *val);
int llm_tpl_frame_get(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_str_t name, llm_tpl_val_t *val);

/* llm_template_eval.c */
int llm_tpl_exec(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_node_t **body, size_t n);
int llm_tpl_getattr(llm_tpl_render_t *r, const llm_tpl_val_t *obj,
    llm_tpl_str_t name, llm_tpl_val_t *out);
int llm_tpl_getitem(llm_tpl_render_t *r, const llm_tpl_val_t *obj,
    const llm_tpl_val_t *key, llm_tpl_val_t *out);
int llm_tpl_call(llm_tpl_render_t *r, const llm_tpl_val_t *callee,
    llm_tpl_args_t *args, llm_tpl_val_t *out);
int llm_tpl_binary(llm_tpl_render_t *r, int op, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, llm_tpl_val_t *out);

/* global functions and methods: llm_tpl_func_t ids */
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


/* llm_template_builtin.c */
int llm_tpl_filter_id(llm_tpl_str_t name);
int llm_tpl_test_id(llm_tpl_str_t name);
int llm_tpl_filter(llm_tpl_render_t *r, int id, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, llm_tpl_val_t *out);
int llm_tpl_test(llm_tpl_render_t *r, int id, const llm_tpl_val_t *v,
    llm_tpl_args_t *a, int *res);
int llm_tpl_method(llm_tpl_render_t *r, const llm_tpl_val_t *obj,
    llm_tpl_str_t name, llm_tpl_val_t *out);
int llm_tpl_call_func(llm_tpl_render_t *r, const llm_tpl_func_t *fn,
    llm_tpl_args_t *a, llm_tpl_val_t *out);
int llm_tpl_add_globals(llm_tpl_render_t *r, llm_tpl_frame_t *f);
int llm_tpl_arg(const llm_tpl_args_t *a, size_t pos, const char *name,
    llm_tpl_val_t *out);
int llm_tpl_arg_str(llm_tpl_render_t *r, const llm_tpl_args_t *a,
    size_t pos, const char *name, llm_tpl_str_t *out);
int llm_tpl_arg_int(llm_tpl_render_t *r, const llm_tpl_args_t *a,
    size_t pos, const char *name, int64_t *out);
int llm_tpl_arg_bool(const llm_tpl_args_t *a, size_t pos, const char *name,
    int def);
int llm_tpl_join(llm_tpl_render_t *r, const llm_tpl_val_t *seq,
    llm_tpl_str_t sep, const llm_tpl_str_t *attr, int strict,
    llm_tpl_val_t *out);

/* llm_template_string.c */
llm_tpl_str_t llm_tpl_strip(llm_tpl_str_t s, const llm_tpl_str_t *chars,
    int which);
int llm_tpl_case(llm_tpl_render_t *r, llm_tpl_str_t s, int mode,
    llm_tpl_val_t *out);
int llm_tpl_replace(llm_tpl_render_t *r, llm_tpl_str_t s,
    llm_tpl_str_t from, llm_tpl_str_t to, int64_t count,
    llm_tpl_val_t *out);
int llm_tpl_splitlines(llm_tpl_render_t *r, llm_tpl_str_t s, int keepends,
    llm_tpl_list_t **out);
int llm_tpl_parse_int(llm_tpl_str_t s, int base, int64_t *out);
int llm_tpl_parse_float(llm_tpl_str_t s, double *out);
int llm_tpl_call_str_method(llm_tpl_render_t *r, int id, llm_tpl_str_t s,
    llm_tpl_args_t *a, llm_tpl_val_t *out);
int llm_tpl_format_percent(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t fmt, const llm_tpl_val_t *args);
int llm_tpl_strftime(llm_tpl_render_t *r, llm_tpl_buf_t *b,
    llm_tpl_str_t fmt, const struct tm *tm);
int llm_tpl_parse_date(const char *s, struct tm *tm);


#endif /* LLM_TEMPLATE_INT_H */
