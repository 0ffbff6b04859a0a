/*
 * Copyright (C) ngx_llm developers
 *
 * Template parser: tokens to a syntax tree, with jinja2's grammar and
 * operator precedence, lowest first:
 *
 *   a if b else c;  or;  and;  not;  == != < > <= >= in, not in (chained);
 *   + -;  ~;  * / // %;  **;  unary - +;  filters | and tests is;
 *   postfix . [] ();  literals, names, ( ), [ ], { }.
 *
 * Unknown filters and tests are syntax errors, as in jinja2.
 */

#include <stdio.h>
#include <string.h>

#include "llm_template_int.h"


typedef struct {
    llm_tpl_node_t  **items;
    size_t            n;
    size_t            cap;
} llm_tpl_vec_t;


static int llm_tpl_pfail(llm_tpl_parser_t *p, const llm_tpl_tok_t *t,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static const char *llm_tpl_tok_desc(const llm_tpl_tok_t *t, char *buf,
    size_t size);
static llm_tpl_node_t *llm_tpl_node(llm_tpl_parser_t *p, int kind,
    int line);
static int llm_tpl_vec_push(llm_tpl_parser_t *p, llm_tpl_vec_t *v,
    llm_tpl_node_t *n);
static int llm_tpl_is_op(const llm_tpl_tok_t *t, int op);
static int llm_tpl_is_name(const llm_tpl_tok_t *t, const char *name);
static int llm_tpl_expect_op(llm_tpl_parser_t *p, int op);
static int llm_tpl_expect_end(llm_tpl_parser_t *p);
static int llm_tpl_enter(llm_tpl_parser_t *p);

static int llm_tpl_parse_stmts(llm_tpl_parser_t *p, const char *const *ends,
    const char *what, int line, llm_tpl_vec_t *out);
static llm_tpl_node_t *llm_tpl_parse_stmt(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_if(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_for(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_set(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_macro(llm_tpl_parser_t *p, int call);
static llm_tpl_node_t *llm_tpl_parse_filter_block(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_with(llm_tpl_parser_t *p);
static int llm_tpl_parse_params(llm_tpl_parser_t *p, llm_tpl_vec_t *v);
static int llm_tpl_parse_end(llm_tpl_parser_t *p, const char *name);

static llm_tpl_node_t *llm_tpl_parse_tuple(llm_tpl_parser_t *p,
    int condexpr);
static llm_tpl_node_t *llm_tpl_parse_expr(llm_tpl_parser_t *p, int condexpr);
static llm_tpl_node_t *llm_tpl_parse_condexpr(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_or(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_logic(llm_tpl_parser_t *p,
    const char *word, int type);
static llm_tpl_node_t *llm_tpl_parse_not(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_compare(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_binary(llm_tpl_parser_t *p, int level);
static llm_tpl_node_t *llm_tpl_parse_unary(llm_tpl_parser_t *p,
    int with_filter);
static llm_tpl_node_t *llm_tpl_parse_primary(llm_tpl_parser_t *p);
static llm_tpl_node_t *llm_tpl_parse_postfix(llm_tpl_parser_t *p,
    llm_tpl_node_t *n);
static llm_tpl_node_t *llm_tpl_parse_subscript(llm_tpl_parser_t *p,
    llm_tpl_node_t *n);
static int llm_tpl_parse_args(llm_tpl_parser_t *p, llm_tpl_node_t *n);
static llm_tpl_node_t *llm_tpl_parse_filter_expr(llm_tpl_parser_t *p,
    llm_tpl_node_t *n);
static llm_tpl_node_t *llm_tpl_parse_filter(llm_tpl_parser_t *p,
    llm_tpl_node_t *operand);
static llm_tpl_node_t *llm_tpl_parse_test(llm_tpl_parser_t *p,
    llm_tpl_node_t *operand);


#define llm_tpl_cur(p)     (&(p)->toks[(p)->pos])
#define llm_tpl_peek(p)                                                       \
    (&(p)->toks[(p)->pos + 1 < (p)->ntoks ? (p)->pos + 1 : (p)->pos])

/* advances, but never past the EOF token */
#define llm_tpl_next(p)                                                       \
    do { if ((p)->pos + 1 < (p)->ntoks) { (p)->pos++; } } while (0)


int
llm_tpl_parse_body(llm_tpl_parser_t *p, llm_tpl_node_t ***body,
    size_t *nbody)
{
    llm_tpl_vec_t  v;

    memset(&v, 0, sizeof(v));

    if (llm_tpl_parse_stmts(p, NULL, NULL, 0, &v) != LLM_OK) {
        return LLM_ERR;
    }

    *body = v.items;
    *nbody = v.n;

    return LLM_OK;
}


static int
llm_tpl_pfail(llm_tpl_parser_t *p, const llm_tpl_tok_t *t, const char *fmt,
    ...)
{
    char     msg[LLM_ERRSTR_MAX];
    va_list  ap;

    /* the first error stands */
    if (p->err != NULL && p->err->err != 0) {
        return LLM_ERR;
    }

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    return llm_err_set(p->err, LLM_EFORMAT, "template line %d: %s", t->line,
                       msg);
}


static const char *
llm_tpl_tok_desc(const llm_tpl_tok_t *t, char *buf, size_t size)
{
    switch (t->type) {
    case LLM_TPL_T_EOF:
        return "end of template";
    case LLM_TPL_T_DATA:
        return "template text";
    case LLM_TPL_T_VAR_BEGIN:
        return "'{{'";
    case LLM_TPL_T_VAR_END:
        return "'}}'";
    case LLM_TPL_T_BLOCK_BEGIN:
        return "'{%'";
    case LLM_TPL_T_BLOCK_END:
        return "'%}'";
    case LLM_TPL_T_STRING:
        return "a string";
    case LLM_TPL_T_INT:
    case LLM_TPL_T_FLOAT:
        return "a number";
    default:
        snprintf(buf, size, "'%.*s'", (int) (t->s.len > 40 ? 40 : t->s.len),
                 t->s.p);
        return buf;
    }
}


static llm_tpl_node_t *
llm_tpl_node(llm_tpl_parser_t *p, int kind, int line)
{
    llm_tpl_node_t  *n;

    n = llm_tpl_calloc(p->arena, 1, sizeof(llm_tpl_node_t));
    if (n == NULL) {
        llm_err_set(p->err, LLM_ENOMEM, "template: out of memory");
        return NULL;
    }

    n->kind = kind;
    n->line = line;

    return n;
}


static int
llm_tpl_vec_push(llm_tpl_parser_t *p, llm_tpl_vec_t *v, llm_tpl_node_t *n)
{
    size_t            cap;
    llm_tpl_node_t  **items;

    if (n == NULL) {
        return LLM_ERR;
    }

    if (v->n == v->cap) {
        cap = v->cap ? v->cap * 2 : 4;

        items = llm_tpl_calloc(p->arena, cap, sizeof(llm_tpl_node_t *));
        if (items == NULL) {
            return llm_err_set(p->err, LLM_ENOMEM, "template: out of memory");
        }

        if (v->n) {
            memcpy(items, v->items, v->n * sizeof(llm_tpl_node_t *));
        }

        v->items = items;
        v->cap = cap;
    }

    v->items[v->n++] = n;
    return LLM_OK;
}


static int
llm_tpl_is_op(const llm_tpl_tok_t *t, int op)
{
    return t->type == LLM_TPL_T_OP && t->op == op;
}


static int
llm_tpl_is_name(const llm_tpl_tok_t *t, const char *name)
{
    return t->type == LLM_TPL_T_NAME && llm_tpl_str_eq(t->s, name);
}


static int
llm_tpl_expect_op(llm_tpl_parser_t *p, int op)
{
    char            buf[64];
    llm_tpl_tok_t  *t;

    t = llm_tpl_cur(p);

    /* only single-char operators are ever expected */
    if (!llm_tpl_is_op(t, op)) {
        return llm_tpl_pfail(p, t, "expected '%c', got %s", (char) op,
                             llm_tpl_tok_desc(t, buf, sizeof(buf)));
    }

    llm_tpl_next(p);
    return LLM_OK;
}


static int
llm_tpl_expect_end(llm_tpl_parser_t *p)
{
    char            buf[64];
    llm_tpl_tok_t  *t;

    t = llm_tpl_cur(p);

    if (t->type != LLM_TPL_T_BLOCK_END) {
        return llm_tpl_pfail(p, t, "expected the end of the tag, got %s",
                             llm_tpl_tok_desc(t, buf, sizeof(buf)));
    }

    llm_tpl_next(p);
    return LLM_OK;
}


static int
llm_tpl_enter(llm_tpl_parser_t *p)
{
    if (++p->depth > LLM_TEMPLATE_MAX_DEPTH) {
        return llm_tpl_pfail(p, llm_tpl_cur(p), "nested more than %d deep",
                             LLM_TEMPLATE_MAX_DEPTH);
    }

    return LLM_OK;
}


/* ---- statements ------------------------------------------------------- */

/*
 * Statements up to a block tag named in ends (NULL: up to the end of the
 * template); the parser then stands on that tag's name.
 */
static int
llm_tpl_parse_stmts(llm_tpl_parser_t *p, const char *const *ends,
    const char *what, int line, llm_tpl_vec_t *out)
{
    char             buf[64];
    size_t           i;
    llm_tpl_tok_t   *t, *name;
    llm_tpl_node_t  *n;

    for ( ;; ) {
        t = llm_tpl_cur(p);

        switch (t->type) {
        case LLM_TPL_T_EOF:
            if (ends != NULL) {
                return llm_tpl_pfail(p, t, "unexpected end of template:"
                                     " '%s' at line %d is not closed"
                                     " with '%s'", what, line, ends[0]);
            }
            return LLM_OK;

        case LLM_TPL_T_DATA:
            n = llm_tpl_node(p, LLM_TPL_N_DATA, t->line);
            if (n == NULL) {
                return LLM_ERR;
            }
            n->val = llm_tpl_v_str(t->s.p, t->s.len);
            llm_tpl_next(p);
            break;

        case LLM_TPL_T_VAR_BEGIN:
            llm_tpl_next(p);

            n = llm_tpl_node(p, LLM_TPL_N_PRINT, t->line);
            if (n == NULL) {
                return LLM_ERR;
            }

            n->a = llm_tpl_parse_tuple(p, 1);
            if (n->a == NULL) {
                return LLM_ERR;
            }

            t = llm_tpl_cur(p);
            if (t->type != LLM_TPL_T_VAR_END) {
                return llm_tpl_pfail(p, t, "expected '}}', got %s",
                                     llm_tpl_tok_desc(t, buf, sizeof(buf)));
            }
            llm_tpl_next(p);
            break;

        case LLM_TPL_T_BLOCK_BEGIN:
            name = llm_tpl_peek(p);

            if (ends != NULL && name->type == LLM_TPL_T_NAME) {
                for (i = 0; ends[i] != NULL; i++) {
                    if (llm_tpl_str_eq(name->s, ends[i])) {
                        llm_tpl_next(p);
                        return LLM_OK;
                    }
                }
            }

            llm_tpl_next(p);

            n = llm_tpl_parse_stmt(p);
            if (n == NULL) {
                return LLM_ERR;
            }
            break;

        default:
            return llm_tpl_pfail(p, t, "unexpected %s",
                                 llm_tpl_tok_desc(t, buf, sizeof(buf)));
        }

        if (llm_tpl_vec_push(p, out, n) != LLM_OK) {
            return LLM_ERR;
        }
    }
}


/* after "{%": a statement up to and including its end tag */
static llm_tpl_node_t *
llm_tpl_parse_stmt(llm_tpl_parser_t *p)
{
    int              kind;
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    body;
    llm_tpl_node_t  *n;

    static const char *const  gen_ends[] = { "endgeneration", NULL };

    t = llm_tpl_cur(p);

    if (t->type != LLM_TPL_T_NAME) {
        llm_tpl_pfail(p, t, "expected a tag name, got %s",
                      llm_tpl_tok_desc(t, buf, sizeof(buf)));
        return NULL;
    }

    if (llm_tpl_enter(p) != LLM_OK) {
        return NULL;
    }

    n = NULL;

    if (llm_tpl_str_eq(t->s, "if")) {
        n = llm_tpl_parse_if(p);

    } else if (llm_tpl_str_eq(t->s, "for")) {
        n = llm_tpl_parse_for(p);

    } else if (llm_tpl_str_eq(t->s, "set")) {
        n = llm_tpl_parse_set(p);

    } else if (llm_tpl_str_eq(t->s, "macro")) {
        n = llm_tpl_parse_macro(p, 0);

    } else if (llm_tpl_str_eq(t->s, "call")) {
        n = llm_tpl_parse_macro(p, 1);

    } else if (llm_tpl_str_eq(t->s, "filter")) {
        n = llm_tpl_parse_filter_block(p);

    } else if (llm_tpl_str_eq(t->s, "with")) {
        n = llm_tpl_parse_with(p);

    } else if (llm_tpl_str_eq(t->s, "break")
               || llm_tpl_str_eq(t->s, "continue"))
    {
        kind = t->s.len == 5 ? LLM_TPL_N_BREAK : LLM_TPL_N_CONTINUE;

        if (p->loops == 0) {
            llm_tpl_pfail(p, t, "'%.*s' outside a loop", LLM_TPL_PREC(t->s.len),
                          t->s.p);

        } else {
            llm_tpl_next(p);
            n = llm_tpl_node(p, kind, t->line);
            if (n != NULL && llm_tpl_expect_end(p) != LLM_OK) {
                n = NULL;
            }
        }

    } else if (llm_tpl_str_eq(t->s, "generation")) {
        /* HF's AssistantTracker marks assistant text; it renders as is */
        llm_tpl_next(p);
        memset(&body, 0, sizeof(body));
        n = llm_tpl_node(p, LLM_TPL_N_BLOCK, t->line);

        if (n == NULL || llm_tpl_expect_end(p) != LLM_OK
            || llm_tpl_parse_stmts(p, gen_ends, "generation", t->line, &body)
               != LLM_OK
            || llm_tpl_parse_end(p, "endgeneration") != LLM_OK)
        {
            n = NULL;

        } else {
            n->body = body.items;
            n->nbody = body.n;
        }

    } else {
        llm_tpl_pfail(p, t, "unknown tag '%.*s'",
                      (int) (t->s.len > 40 ? 40 : t->s.len), t->s.p);
    }

    p->depth--;
    return n;
}


/* the end tag the parser stands on, then "%}" */
static int
llm_tpl_parse_end(llm_tpl_parser_t *p, const char *name)
{
    llm_tpl_tok_t  *t;

    t = llm_tpl_cur(p);

    if (!llm_tpl_is_name(t, name)) {
        return llm_tpl_pfail(p, t, "expected '%s'", name);
    }

    llm_tpl_next(p);

    return llm_tpl_expect_end(p);
}


static llm_tpl_node_t *
llm_tpl_parse_if(llm_tpl_parser_t *p)
{
    int              line;
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    body, orelse;
    llm_tpl_node_t  *top, *n, *elif;

    static const char *const  ends[] = { "elif", "else", "endif", NULL };
    static const char *const  else_ends[] = { "endif", NULL };

    line = llm_tpl_cur(p)->line;
    llm_tpl_next(p);

    top = llm_tpl_node(p, LLM_TPL_N_IF, line);
    if (top == NULL) {
        return NULL;
    }

    n = top;

    for ( ;; ) {
        n->a = llm_tpl_parse_tuple(p, 1);
        if (n->a == NULL || llm_tpl_expect_end(p) != LLM_OK) {
            return NULL;
        }

        memset(&body, 0, sizeof(body));
        if (llm_tpl_parse_stmts(p, ends, "if", line, &body) != LLM_OK) {
            return NULL;
        }

        n->body = body.items;
        n->nbody = body.n;

        t = llm_tpl_cur(p);

        if (llm_tpl_is_name(t, "elif")) {
            llm_tpl_next(p);

            elif = llm_tpl_node(p, LLM_TPL_N_IF, t->line);
            if (elif == NULL) {
                return NULL;
            }

            memset(&orelse, 0, sizeof(orelse));
            if (llm_tpl_vec_push(p, &orelse, elif) != LLM_OK) {
                return NULL;
            }

            n->orelse = orelse.items;
            n->norelse = 1;
            n = elif;
            continue;
        }

        if (llm_tpl_is_name(t, "else")) {
            llm_tpl_next(p);

            if (llm_tpl_expect_end(p) != LLM_OK) {
                return NULL;
            }

            memset(&orelse, 0, sizeof(orelse));
            if (llm_tpl_parse_stmts(p, else_ends, "if", line, &orelse)
                != LLM_OK)
            {
                return NULL;
            }

            n->orelse = orelse.items;
            n->norelse = orelse.n;
        }

        break;
    }

    if (llm_tpl_parse_end(p, "endif") != LLM_OK) {
        return NULL;
    }

    return top;
}


static llm_tpl_node_t *
llm_tpl_parse_for(llm_tpl_parser_t *p)
{
    int              line, paren;
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    targets, body, orelse;
    llm_tpl_node_t  *n, *name;

    static const char *const  ends[] = { "else", "endfor", NULL };
    static const char *const  else_ends[] = { "endfor", NULL };

    line = llm_tpl_cur(p)->line;
    llm_tpl_next(p);

    n = llm_tpl_node(p, LLM_TPL_N_FOR, line);
    if (n == NULL) {
        return NULL;
    }

    memset(&targets, 0, sizeof(targets));

    paren = llm_tpl_is_op(llm_tpl_cur(p), '(');
    if (paren) {
        llm_tpl_next(p);
    }

    for ( ;; ) {
        t = llm_tpl_cur(p);

        if (t->type != LLM_TPL_T_NAME) {
            llm_tpl_pfail(p, t, "expected a loop variable, got %s",
                          llm_tpl_tok_desc(t, buf, sizeof(buf)));
            return NULL;
        }

        name = llm_tpl_node(p, LLM_TPL_N_NAME, t->line);
        if (name == NULL) {
            return NULL;
        }
        name->name = t->s;

        if (llm_tpl_vec_push(p, &targets, name) != LLM_OK) {
            return NULL;
        }

        llm_tpl_next(p);

        if (!llm_tpl_is_op(llm_tpl_cur(p), ',')) {
            break;
        }
        llm_tpl_next(p);

        if (paren && llm_tpl_is_op(llm_tpl_cur(p), ')')) {
            break;
        }
    }

    if (paren && llm_tpl_expect_op(p, ')') != LLM_OK) {
        return NULL;
    }

    n->args = targets.items;
    n->nargs = targets.n;

    t = llm_tpl_cur(p);
    if (!llm_tpl_is_name(t, "in")) {
        llm_tpl_pfail(p, t, "expected 'in', got %s",
                      llm_tpl_tok_desc(t, buf, sizeof(buf)));
        return NULL;
    }
    llm_tpl_next(p);

    n->a = llm_tpl_parse_tuple(p, 0);
    if (n->a == NULL) {
        return NULL;
    }

    if (llm_tpl_is_name(llm_tpl_cur(p), "if")) {
        llm_tpl_next(p);
        n->b = llm_tpl_parse_expr(p, 1);
        if (n->b == NULL) {
            return NULL;
        }
    }

    if (llm_tpl_is_name(llm_tpl_cur(p), "recursive")) {
        llm_tpl_pfail(p, llm_tpl_cur(p), "recursive loops are not supported");
        return NULL;
    }

    if (llm_tpl_expect_end(p) != LLM_OK) {
        return NULL;
    }

    memset(&body, 0, sizeof(body));

    p->loops++;
    if (llm_tpl_parse_stmts(p, ends, "for", line, &body) != LLM_OK) {
        return NULL;
    }
    p->loops--;

    n->body = body.items;
    n->nbody = body.n;

    if (llm_tpl_is_name(llm_tpl_cur(p), "else")) {
        llm_tpl_next(p);

        if (llm_tpl_expect_end(p) != LLM_OK) {
            return NULL;
        }

        memset(&orelse, 0, sizeof(orelse));
        if (llm_tpl_parse_stmts(p, else_ends, "for", line, &orelse)
            != LLM_OK)
        {
            return NULL;
        }

        n->orelse = orelse.items;
        n->norelse = orelse.n;
    }

    if (llm_tpl_parse_end(p, "endfor") != LLM_OK) {
        return NULL;
    }

    return n;
}


static llm_tpl_node_t *
llm_tpl_parse_set(llm_tpl_parser_t *p)
{
    int              line;
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    targets, filters, body;
    llm_tpl_node_t  *n, *target, *attr, *f;

    static const char *const  ends[] = { "endset", NULL };

    line = llm_tpl_cur(p)->line;
    llm_tpl_next(p);

    n = llm_tpl_node(p, LLM_TPL_N_SET, line);
    if (n == NULL) {
        return NULL;
    }

    memset(&targets, 0, sizeof(targets));

    for ( ;; ) {
        t = llm_tpl_cur(p);

        if (t->type != LLM_TPL_T_NAME) {
            llm_tpl_pfail(p, t, "expected a variable name, got %s",
                          llm_tpl_tok_desc(t, buf, sizeof(buf)));
            return NULL;
        }

        target = llm_tpl_node(p, LLM_TPL_N_NAME, t->line);
        if (target == NULL) {
            return NULL;
        }
        target->name = t->s;
        llm_tpl_next(p);

        if (llm_tpl_is_op(llm_tpl_cur(p), '.')) {
            llm_tpl_next(p);
            t = llm_tpl_cur(p);

            if (t->type != LLM_TPL_T_NAME) {
                llm_tpl_pfail(p, t, "expected an attribute name, got %s",
                              llm_tpl_tok_desc(t, buf, sizeof(buf)));
                return NULL;
            }

            attr = llm_tpl_node(p, LLM_TPL_N_GETATTR, t->line);
            if (attr == NULL) {
                return NULL;
            }
            attr->a = target;
            attr->name = t->s;
            target = attr;
            llm_tpl_next(p);
        }

        if (llm_tpl_vec_push(p, &targets, target) != LLM_OK) {
            return NULL;
        }

        if (!llm_tpl_is_op(llm_tpl_cur(p), ',')) {
            break;
        }
        llm_tpl_next(p);
    }

    n->args = targets.items;
    n->nargs = targets.n;

    if (llm_tpl_is_op(llm_tpl_cur(p), '=')) {
        llm_tpl_next(p);

        n->a = llm_tpl_parse_tuple(p, 1);
        if (n->a == NULL || llm_tpl_expect_end(p) != LLM_OK) {
            return NULL;
        }

        return n;
    }

    /* {% set x | filter %}...{% endset %} */
    if (targets.n != 1 || targets.items[0]->kind != LLM_TPL_N_NAME) {
        llm_tpl_pfail(p, llm_tpl_cur(p), "expected '='");
        return NULL;
    }

    n->kind = LLM_TPL_N_SETBLOCK;
    memset(&filters, 0, sizeof(filters));

    while (llm_tpl_is_op(llm_tpl_cur(p), '|')) {
        llm_tpl_next(p);

        f = llm_tpl_parse_filter(p, NULL);
        if (llm_tpl_vec_push(p, &filters, f) != LLM_OK) {
            return NULL;
        }
    }

    n->filters = filters.items;
    n->nfilters = filters.n;

    if (llm_tpl_expect_end(p) != LLM_OK) {
        return NULL;
    }

    memset(&body, 0, sizeof(body));
    if (llm_tpl_parse_stmts(p, ends, "set", line, &body) != LLM_OK
        || llm_tpl_parse_end(p, "endset") != LLM_OK)
    {
        return NULL;
    }

    n->body = body.items;
    n->nbody = body.n;

    return n;
}


/* "(a, b=default, ...)" of a macro or a call block */
static int
llm_tpl_parse_params(llm_tpl_parser_t *p, llm_tpl_vec_t *v)
{
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_node_t  *param;

    if (llm_tpl_expect_op(p, '(') != LLM_OK) {
        return LLM_ERR;
    }

    while (!llm_tpl_is_op(llm_tpl_cur(p), ')')) {
        t = llm_tpl_cur(p);

        if (t->type != LLM_TPL_T_NAME) {
            return llm_tpl_pfail(p, t, "expected a parameter name, got %s",
                                 llm_tpl_tok_desc(t, buf, sizeof(buf)));
        }

        param = llm_tpl_node(p, LLM_TPL_N_NAME, t->line);
        if (param == NULL) {
            return LLM_ERR;
        }
        param->name = t->s;
        llm_tpl_next(p);

        if (llm_tpl_is_op(llm_tpl_cur(p), '=')) {
            llm_tpl_next(p);
            param->a = llm_tpl_parse_expr(p, 1);
            if (param->a == NULL) {
                return LLM_ERR;
            }
        }

        if (llm_tpl_vec_push(p, v, param) != LLM_OK) {
            return LLM_ERR;
        }

        if (!llm_tpl_is_op(llm_tpl_cur(p), ',')) {
            break;
        }
        llm_tpl_next(p);
    }

    return llm_tpl_expect_op(p, ')');
}


/* {% macro name(params) %} or {% call[(params)] macro(args) %} */
static llm_tpl_node_t *
llm_tpl_parse_macro(llm_tpl_parser_t *p, int call)
{
    int              line, loops;
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    params, body;
    llm_tpl_node_t  *n;

    static const char *const  macro_ends[] = { "endmacro", NULL };
    static const char *const  call_ends[] = { "endcall", NULL };

    line = llm_tpl_cur(p)->line;
    llm_tpl_next(p);

    n = llm_tpl_node(p, call ? LLM_TPL_N_CALLBLOCK : LLM_TPL_N_MACRO, line);
    if (n == NULL) {
        return NULL;
    }

    memset(&params, 0, sizeof(params));

    if (call) {
        if (llm_tpl_is_op(llm_tpl_cur(p), '(')
            && llm_tpl_parse_params(p, &params) != LLM_OK)
        {
            return NULL;
        }

        n->a = llm_tpl_parse_expr(p, 1);
        if (n->a == NULL) {
            return NULL;
        }

        if (n->a->kind != LLM_TPL_N_CALL) {
            llm_tpl_pfail(p, llm_tpl_cur(p), "expected a call in 'call'");
            return NULL;
        }

        n->name.p = "caller";
        n->name.len = 6;

    } else {
        t = llm_tpl_cur(p);

        if (t->type != LLM_TPL_T_NAME) {
            llm_tpl_pfail(p, t, "expected a macro name, got %s",
                          llm_tpl_tok_desc(t, buf, sizeof(buf)));
            return NULL;
        }

        n->name = t->s;
        llm_tpl_next(p);

        if (llm_tpl_parse_params(p, &params) != LLM_OK) {
            return NULL;
        }
    }

    n->args = params.items;
    n->nargs = params.n;

    if (llm_tpl_expect_end(p) != LLM_OK) {
        return NULL;
    }

    /* break and continue do not reach through a macro */
    loops = p->loops;
    p->loops = 0;

    memset(&body, 0, sizeof(body));
    if (llm_tpl_parse_stmts(p, call ? call_ends : macro_ends,
                            call ? "call" : "macro", line, &body) != LLM_OK)
    {
        return NULL;
    }

    p->loops = loops;

    n->body = body.items;
    n->nbody = body.n;

    llm_tpl_next(p);

    /* {% endmacro name %} is allowed */
    if (!call && llm_tpl_cur(p)->type == LLM_TPL_T_NAME) {
        llm_tpl_next(p);
    }

    if (llm_tpl_expect_end(p) != LLM_OK) {
        return NULL;
    }

    return n;
}


static llm_tpl_node_t *
llm_tpl_parse_filter_block(llm_tpl_parser_t *p)
{
    int              line;
    llm_tpl_vec_t    filters, body;
    llm_tpl_node_t  *n, *f;

    static const char *const  ends[] = { "endfilter", NULL };

    line = llm_tpl_cur(p)->line;
    llm_tpl_next(p);

    n = llm_tpl_node(p, LLM_TPL_N_FILTERBLOCK, line);
    if (n == NULL) {
        return NULL;
    }

    memset(&filters, 0, sizeof(filters));

    for ( ;; ) {
        f = llm_tpl_parse_filter(p, NULL);
        if (llm_tpl_vec_push(p, &filters, f) != LLM_OK) {
            return NULL;
        }

        if (!llm_tpl_is_op(llm_tpl_cur(p), '|')) {
            break;
        }
        llm_tpl_next(p);
    }

    n->filters = filters.items;
    n->nfilters = filters.n;

    memset(&body, 0, sizeof(body));
    if (llm_tpl_expect_end(p) != LLM_OK
        || llm_tpl_parse_stmts(p, ends, "filter", line, &body) != LLM_OK
        || llm_tpl_parse_end(p, "endfilter") != LLM_OK)
    {
        return NULL;
    }

    n->body = body.items;
    n->nbody = body.n;

    return n;
}


static llm_tpl_node_t *
llm_tpl_parse_with(llm_tpl_parser_t *p)
{
    int              line;
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    targets, body;
    llm_tpl_node_t  *n, *target;

    static const char *const  ends[] = { "endwith", NULL };

    line = llm_tpl_cur(p)->line;
    llm_tpl_next(p);

    n = llm_tpl_node(p, LLM_TPL_N_WITH, line);
    if (n == NULL) {
        return NULL;
    }

    memset(&targets, 0, sizeof(targets));

    while (llm_tpl_cur(p)->type != LLM_TPL_T_BLOCK_END) {
        t = llm_tpl_cur(p);

        if (t->type != LLM_TPL_T_NAME) {
            llm_tpl_pfail(p, t, "expected a variable name, got %s",
                          llm_tpl_tok_desc(t, buf, sizeof(buf)));
            return NULL;
        }

        target = llm_tpl_node(p, LLM_TPL_N_NAME, t->line);
        if (target == NULL) {
            return NULL;
        }
        target->name = t->s;
        llm_tpl_next(p);

        if (llm_tpl_expect_op(p, '=') != LLM_OK) {
            return NULL;
        }

        target->a = llm_tpl_parse_expr(p, 1);
        if (target->a == NULL
            || llm_tpl_vec_push(p, &targets, target) != LLM_OK)
        {
            return NULL;
        }

        if (!llm_tpl_is_op(llm_tpl_cur(p), ',')) {
            break;
        }
        llm_tpl_next(p);
    }

    n->args = targets.items;
    n->nargs = targets.n;

    memset(&body, 0, sizeof(body));
    if (llm_tpl_expect_end(p) != LLM_OK
        || llm_tpl_parse_stmts(p, ends, "with", line, &body) != LLM_OK
        || llm_tpl_parse_end(p, "endwith") != LLM_OK)
    {
        return NULL;
    }

    n->body = body.items;
    n->nbody = body.n;

    return n;
}


/* ---- expressions ------------------------------------------------------ */

/* an expression, or a tuple when commas follow: {{ a, b }} */
static llm_tpl_node_t *
llm_tpl_parse_tuple(llm_tpl_parser_t *p, int condexpr)
{
    int              line;
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    items;
    llm_tpl_node_t  *first, *n;

    line = llm_tpl_cur(p)->line;

    first = llm_tpl_parse_expr(p, condexpr);
    if (first == NULL || !llm_tpl_is_op(llm_tpl_cur(p), ',')) {
        return first;
    }

    memset(&items, 0, sizeof(items));
    if (llm_tpl_vec_push(p, &items, first) != LLM_OK) {
        return NULL;
    }

    while (llm_tpl_is_op(llm_tpl_cur(p), ',')) {
        llm_tpl_next(p);
        t = llm_tpl_cur(p);

        if (t->type == LLM_TPL_T_VAR_END || t->type == LLM_TPL_T_BLOCK_END
            || llm_tpl_is_op(t, ')') || llm_tpl_is_name(t, "if"))
        {
            break;
        }

        if (llm_tpl_vec_push(p, &items, llm_tpl_parse_expr(p, condexpr))
            != LLM_OK)
        {
            return NULL;
        }
    }

    n = llm_tpl_node(p, LLM_TPL_N_TUPLE, line);
    if (n == NULL) {
        return NULL;
    }

    n->args = items.items;
    n->nargs = items.n;

    return n;
}


static llm_tpl_node_t *
llm_tpl_parse_expr(llm_tpl_parser_t *p, int condexpr)
{
    llm_tpl_node_t  *n;

    if (llm_tpl_enter(p) != LLM_OK) {
        return NULL;
    }

    n = condexpr ? llm_tpl_parse_condexpr(p) : llm_tpl_parse_or(p);

    p->depth--;
    return n;
}


static llm_tpl_node_t *
llm_tpl_parse_condexpr(llm_tpl_parser_t *p)
{
    int              line;
    llm_tpl_node_t  *a, *n;

    a = llm_tpl_parse_or(p);

    while (a != NULL && llm_tpl_is_name(llm_tpl_cur(p), "if")) {
        line = llm_tpl_cur(p)->line;
        llm_tpl_next(p);

        n = llm_tpl_node(p, LLM_TPL_N_COND, line);
        if (n == NULL) {
            return NULL;
        }

        n->a = a;
        n->b = llm_tpl_parse_or(p);
        if (n->b == NULL) {
            return NULL;
        }

        if (llm_tpl_is_name(llm_tpl_cur(p), "else")) {
            llm_tpl_next(p);
            n->c = llm_tpl_parse_expr(p, 1);
            if (n->c == NULL) {
                return NULL;
            }
        }

        a = n;
    }

    return a;
}


/* "a or b" over "a and b" over "not a", both left-associative */
static llm_tpl_node_t *
llm_tpl_parse_or(llm_tpl_parser_t *p)
{
    return llm_tpl_parse_logic(p, "or", LLM_TPL_N_OR);
}


static llm_tpl_node_t *
llm_tpl_parse_logic(llm_tpl_parser_t *p, const char *word, int type)
{
    int              line;
    llm_tpl_node_t  *a, *n;

    a = type == LLM_TPL_N_OR ? llm_tpl_parse_logic(p, "and", LLM_TPL_N_AND)
                             : llm_tpl_parse_not(p);

    while (a != NULL && llm_tpl_is_name(llm_tpl_cur(p), word)) {
        line = llm_tpl_cur(p)->line;
        llm_tpl_next(p);

        n = llm_tpl_node(p, type, line);
        if (n == NULL) {
            return NULL;
        }

        n->a = a;
        n->b = type == LLM_TPL_N_OR
               ? llm_tpl_parse_logic(p, "and", LLM_TPL_N_AND)
               : llm_tpl_parse_not(p);
        if (n->b == NULL) {
            return NULL;
        }

        a = n;
    }

    return a;
}


static llm_tpl_node_t *
llm_tpl_parse_not(llm_tpl_parser_t *p)
{
    int              line;
    llm_tpl_node_t  *n;

    if (!llm_tpl_is_name(llm_tpl_cur(p), "not")) {
        return llm_tpl_parse_compare(p);
    }

    line = llm_tpl_cur(p)->line;
    llm_tpl_next(p);

    if (llm_tpl_enter(p) != LLM_OK) {
        return NULL;
    }

    n = llm_tpl_node(p, LLM_TPL_N_NOT, line);
    if (n != NULL) {
        n->a = llm_tpl_parse_not(p);
        if (n->a == NULL) {
            n = NULL;
        }
    }

    p->depth--;
    return n;
}


static llm_tpl_node_t *
llm_tpl_parse_compare(llm_tpl_parser_t *p)
{
    int              op, line, *ops;
    size_t           i;
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    operands;
    llm_tpl_node_t  *a, *n;
    int              opbuf[64];

    a = llm_tpl_parse_binary(p, 0);
    if (a == NULL) {
        return NULL;
    }

    memset(&operands, 0, sizeof(operands));
    line = llm_tpl_cur(p)->line;

    for ( ;; ) {
        t = llm_tpl_cur(p);
        op = 0;

        if (t->type == LLM_TPL_T_OP
            && (t->op == LLM_TPL_OP_EQ || t->op == LLM_TPL_OP_NE
                || t->op == LLM_TPL_OP_GE || t->op == LLM_TPL_OP_LE
                || t->op == '<' || t->op == '>'))
        {
            op = t->op;
            llm_tpl_next(p);

        } else if (llm_tpl_is_name(t, "in")) {
            op = LLM_TPL_OP_IN;
            llm_tpl_next(p);

        } else if (llm_tpl_is_name(t, "not")
                   && llm_tpl_is_name(llm_tpl_peek(p), "in"))
        {
            op = LLM_TPL_OP_NOTIN;
            llm_tpl_next(p);
            llm_tpl_next(p);
        }

        if (op == 0) {
            break;
        }

        if (operands.n == sizeof(opbuf) / sizeof(opbuf[0])) {
            llm_tpl_pfail(p, t, "too many chained comparisons");
            return NULL;
        }

        opbuf[operands.n] = op;

        if (llm_tpl_vec_push(p, &operands, llm_tpl_parse_binary(p, 0))
            != LLM_OK)
        {
            return NULL;
        }
    }

    if (operands.n == 0) {
        return a;
    }

    n = llm_tpl_node(p, LLM_TPL_N_CMP, line);
    if (n == NULL) {
        return NULL;
    }

    ops = llm_tpl_calloc(p->arena, operands.n, sizeof(int));
    if (ops == NULL) {
        llm_err_set(p->err, LLM_ENOMEM, "template: out of memory");
        return NULL;
    }

    for (i = 0; i < operands.n; i++) {
        ops[i] = opbuf[i];
    }

    n->a = a;
    n->args = operands.items;
    n->nargs = operands.n;
    n->ops = ops;

    return n;
}


/*
 * Left-associative binary levels: 0 is + -, 1 is ~, 2 is * / // %,
 * 3 is ** (left-associative in jinja2, unlike Python).
 */
static llm_tpl_node_t *
llm_tpl_parse_binary(llm_tpl_parser_t *p, int level)
{
    int              op, line;
    llm_tpl_tok_t   *t;
    llm_tpl_node_t  *a, *n;

    a = level == 3 ? llm_tpl_parse_unary(p, 1)
                   : llm_tpl_parse_binary(p, level + 1);

    while (a != NULL) {
        t = llm_tpl_cur(p);

        if (t->type != LLM_TPL_T_OP) {
            break;
        }

        op = t->op;

        if (!((level == 0 && (op == '+' || op == '-'))
              || (level == 1 && op == '~')
              || (level == 2 && (op == '*' || op == '/' || op == '%'
                                 || op == LLM_TPL_OP_FLOORDIV))
              || (level == 3 && op == LLM_TPL_OP_POW)))
        {
            break;
        }

        line = t->line;
        llm_tpl_next(p);

        n = llm_tpl_node(p, LLM_TPL_N_BINOP, line);
        if (n == NULL) {
            return NULL;
        }

        n->op = op;
        n->a = a;
        n->b = level == 3 ? llm_tpl_parse_unary(p, 1)
                          : llm_tpl_parse_binary(p, level + 1);
        if (n->b == NULL) {
            return NULL;
        }

        a = n;
    }

    return a;
}


static llm_tpl_node_t *
llm_tpl_parse_unary(llm_tpl_parser_t *p, int with_filter)
{
    int              line;
    llm_tpl_tok_t   *t;
    llm_tpl_node_t  *n;

    if (llm_tpl_enter(p) != LLM_OK) {
        return NULL;
    }

    t = llm_tpl_cur(p);
    line = t->line;

    if (llm_tpl_is_op(t, '-') || llm_tpl_is_op(t, '+')) {
        llm_tpl_next(p);

        n = llm_tpl_node(p, t->op == '-' ? LLM_TPL_N_NEG : LLM_TPL_N_POS,
                         line);
        if (n != NULL) {
            n->a = llm_tpl_parse_unary(p, 0);
            if (n->a == NULL) {
                n = NULL;
            }
        }

    } else {
        n = llm_tpl_parse_primary(p);
    }

    n = llm_tpl_parse_postfix(p, n);

    if (with_filter) {
        n = llm_tpl_parse_filter_expr(p, n);
    }

    p->depth--;
    return n;
}


static llm_tpl_node_t *
llm_tpl_parse_primary(llm_tpl_parser_t *p)
{
    int              dict;
    char            *s, buf[64];
    size_t           len, i;
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    items;
    llm_tpl_node_t  *n;

    t = llm_tpl_cur(p);

    switch (t->type) {
    case LLM_TPL_T_NAME:
        llm_tpl_next(p);

        if (llm_tpl_str_eq(t->s, "true") || llm_tpl_str_eq(t->s, "True")
            || llm_tpl_str_eq(t->s, "false") || llm_tpl_str_eq(t->s, "False"))
        {
            n = llm_tpl_node(p, LLM_TPL_N_CONST, t->line);
            if (n != NULL) {
                n->val = llm_tpl_v_bool(t->s.p[0] == 't' || t->s.p[0] == 'T');
            }
            return n;
        }

        if (llm_tpl_str_eq(t->s, "none") || llm_tpl_str_eq(t->s, "None")) {
            n = llm_tpl_node(p, LLM_TPL_N_CONST, t->line);
            if (n != NULL) {
                n->val = llm_tpl_v_none();
            }
            return n;
        }

        n = llm_tpl_node(p, LLM_TPL_N_NAME, t->line);
        if (n != NULL) {
            n->name = t->s;
        }
        return n;

    case LLM_TPL_T_STRING:
        n = llm_tpl_node(p, LLM_TPL_N_CONST, t->line);
        if (n == NULL) {
            return NULL;
        }

        /* adjacent literals join: "a" "b" is "ab" */
        len = 0;
        for (i = p->pos; p->toks[i].type == LLM_TPL_T_STRING; i++) {
            len += p->toks[i].s.len;
        }

        if (i == p->pos + 1) {
            n->val = llm_tpl_v_str(t->s.p, t->s.len);
            llm_tpl_next(p);
            return n;
        }

        s = llm_tpl_alloc(p->arena, len + 1);
        if (s == NULL) {
            llm_err_set(p->err, LLM_ENOMEM, "template: out of memory");
            return NULL;
        }

        len = 0;
        while (llm_tpl_cur(p)->type == LLM_TPL_T_STRING) {
            t = llm_tpl_cur(p);
            if (t->s.len) {
                memcpy(s + len, t->s.p, t->s.len);
            }
            len += t->s.len;
            llm_tpl_next(p);
        }

        n->val = llm_tpl_v_str(s, len);
        return n;

    case LLM_TPL_T_INT:
    case LLM_TPL_T_FLOAT:
        llm_tpl_next(p);

        n = llm_tpl_node(p, LLM_TPL_N_CONST, t->line);
        if (n != NULL) {
            n->val = t->type == LLM_TPL_T_INT ? llm_tpl_v_int(t->i)
                                              : llm_tpl_v_float(t->f);
        }
        return n;

    case LLM_TPL_T_OP:
        if (t->op == '(') {
            llm_tpl_next(p);

            if (llm_tpl_is_op(llm_tpl_cur(p), ')')) {
                llm_tpl_next(p);
                return llm_tpl_node(p, LLM_TPL_N_TUPLE, t->line);
            }

            n = llm_tpl_parse_tuple(p, 1);
            if (n == NULL) {
                return NULL;
            }

            /* (a,) is a tuple of one, (a) is a */
            if (llm_tpl_expect_op(p, ')') != LLM_OK) {
                return NULL;
            }
            return n;
        }

        if (t->op != '[' && t->op != '{') {
            break;
        }

        dict = t->op == '{';
        llm_tpl_next(p);

        memset(&items, 0, sizeof(items));

        while (!llm_tpl_is_op(llm_tpl_cur(p), dict ? '}' : ']')) {
            if (llm_tpl_vec_push(p, &items, llm_tpl_parse_expr(p, 1))
                != LLM_OK)
            {
                return NULL;
            }

            if (dict) {
                if (llm_tpl_expect_op(p, ':') != LLM_OK
                    || llm_tpl_vec_push(p, &items, llm_tpl_parse_expr(p, 1))
                       != LLM_OK)
                {
                    return NULL;
                }
            }

            if (!llm_tpl_is_op(llm_tpl_cur(p), ',')) {
                break;
            }
            llm_tpl_next(p);
        }

        if (llm_tpl_expect_op(p, dict ? '}' : ']') != LLM_OK) {
            return NULL;
        }

        n = llm_tpl_node(p, dict ? LLM_TPL_N_DICT : LLM_TPL_N_LIST, t->line);
        if (n != NULL) {
            n->args = items.items;
            n->nargs = items.n;
        }
        return n;

    default:
        break;
    }

    llm_tpl_pfail(p, t, "unexpected %s",
                  llm_tpl_tok_desc(t, buf, sizeof(buf)));
    return NULL;
}


static llm_tpl_node_t *
llm_tpl_parse_postfix(llm_tpl_parser_t *p, llm_tpl_node_t *n)
{
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_node_t  *m, *k;

    while (n != NULL) {
        t = llm_tpl_cur(p);

        if (llm_tpl_is_op(t, '.')) {
            llm_tpl_next(p);
            t = llm_tpl_cur(p);

            if (t->type == LLM_TPL_T_NAME) {
                m = llm_tpl_node(p, LLM_TPL_N_GETATTR, t->line);
                if (m == NULL) {
                    return NULL;
                }
                m->a = n;
                m->name = t->s;

            } else if (t->type == LLM_TPL_T_INT) {
                /* x.0 is x[0] */
                m = llm_tpl_node(p, LLM_TPL_N_GETITEM, t->line);
                k = llm_tpl_node(p, LLM_TPL_N_CONST, t->line);
                if (m == NULL || k == NULL) {
                    return NULL;
                }
                k->val = llm_tpl_v_int(t->i);
                m->a = n;
                m->b = k;

            } else {
                llm_tpl_pfail(p, t, "expected an attribute name, got %s",
                              llm_tpl_tok_desc(t, buf, sizeof(buf)));
                return NULL;
            }

            llm_tpl_next(p);
            n = m;

        } else if (llm_tpl_is_op(t, '[')) {
            n = llm_tpl_parse_subscript(p, n);

        } else if (llm_tpl_is_op(t, '(')) {
            m = llm_tpl_node(p, LLM_TPL_N_CALL, t->line);
            if (m == NULL) {
                return NULL;
            }
            m->a = n;

            if (llm_tpl_parse_args(p, m) != LLM_OK) {
                return NULL;
            }
            n = m;

        } else {
            break;
        }
    }

    return n;
}


static llm_tpl_node_t *
llm_tpl_parse_subscript(llm_tpl_parser_t *p, llm_tpl_node_t *n)
{
    int              line;
    llm_tpl_node_t  *m, *start;

    line = llm_tpl_cur(p)->line;
    llm_tpl_next(p);

    start = NULL;

    if (!llm_tpl_is_op(llm_tpl_cur(p), ':')) {
        start = llm_tpl_parse_expr(p, 1);
        if (start == NULL) {
            return NULL;
        }

        if (!llm_tpl_is_op(llm_tpl_cur(p), ':')) {
            if (llm_tpl_is_op(llm_tpl_cur(p), ',')) {
                llm_tpl_pfail(p, llm_tpl_cur(p),
                              "tuple subscripts are not supported");
                return NULL;
            }

            if (llm_tpl_expect_op(p, ']') != LLM_OK) {
                return NULL;
            }

            m = llm_tpl_node(p, LLM_TPL_N_GETITEM, line);
            if (m != NULL) {
                m->a = n;
                m->b = start;
            }
            return m;
        }
    }

    m = llm_tpl_node(p, LLM_TPL_N_SLICE, line);
    if (m == NULL) {
        return NULL;
    }

    m->a = n;
    m->b = start;

    /* at ':' */
    llm_tpl_next(p);

    if (!llm_tpl_is_op(llm_tpl_cur(p), ']')
        && !llm_tpl_is_op(llm_tpl_cur(p), ':'))
    {
        m->c = llm_tpl_parse_expr(p, 1);
        if (m->c == NULL) {
            return NULL;
        }
    }

    if (llm_tpl_is_op(llm_tpl_cur(p), ':')) {
        llm_tpl_next(p);

        if (!llm_tpl_is_op(llm_tpl_cur(p), ']')) {
            m->d = llm_tpl_parse_expr(p, 1);
            if (m->d == NULL) {
                return NULL;
            }
        }
    }

    if (llm_tpl_expect_op(p, ']') != LLM_OK) {
        return NULL;
    }

    return m;
}


/* "(a, b, k=v)" into n->args and n->kw */
static int
llm_tpl_parse_args(llm_tpl_parser_t *p, llm_tpl_node_t *n)
{
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    args, kw;
    llm_tpl_node_t  *kwarg;

    llm_tpl_next(p);

    memset(&args, 0, sizeof(args));
    memset(&kw, 0, sizeof(kw));

    while (!llm_tpl_is_op(llm_tpl_cur(p), ')')) {
        t = llm_tpl_cur(p);

        if (llm_tpl_is_op(t, '*') || llm_tpl_is_op(t, LLM_TPL_OP_POW)) {
            return llm_tpl_pfail(p, t, "*args and **kwargs are not"
                                 " supported");
        }

        if (t->type == LLM_TPL_T_NAME && llm_tpl_is_op(llm_tpl_peek(p), '='))
        {
            kwarg = llm_tpl_node(p, LLM_TPL_N_KWARG, t->line);
            if (kwarg == NULL) {
                return LLM_ERR;
            }

            kwarg->name = t->s;
            llm_tpl_next(p);
            llm_tpl_next(p);

            kwarg->a = llm_tpl_parse_expr(p, 1);
            if (kwarg->a == NULL
                || llm_tpl_vec_push(p, &kw, kwarg) != LLM_OK)
            {
                return LLM_ERR;
            }

        } else if (llm_tpl_vec_push(p, &args, llm_tpl_parse_expr(p, 1))
                   != LLM_OK)
        {
            return LLM_ERR;
        }

        if (!llm_tpl_is_op(llm_tpl_cur(p), ',')) {
            break;
        }
        llm_tpl_next(p);
    }

    if (llm_tpl_expect_op(p, ')') != LLM_OK) {
        return LLM_ERR;
    }

    n->args = args.items;
    n->nargs = args.n;
    n->kw = kw.items;
    n->nkw = kw.n;

    return LLM_OK;
}


static llm_tpl_node_t *
llm_tpl_parse_filter_expr(llm_tpl_parser_t *p, llm_tpl_node_t *n)
{
    llm_tpl_tok_t   *t;
    llm_tpl_node_t  *m;

    while (n != NULL) {
        t = llm_tpl_cur(p);

        if (llm_tpl_is_op(t, '|')) {
            llm_tpl_next(p);
            n = llm_tpl_parse_filter(p, n);

        } else if (llm_tpl_is_name(t, "is")) {
            n = llm_tpl_parse_test(p, n);

        } else if (llm_tpl_is_op(t, '(')) {
            m = llm_tpl_node(p, LLM_TPL_N_CALL, t->line);
            if (m == NULL) {
                return NULL;
            }
            m->a = n;

            if (llm_tpl_parse_args(p, m) != LLM_OK) {
                return NULL;
            }
            n = m;

        } else {
            break;
        }
    }

    return n;
}


/* after "|": name[(args)] */
static llm_tpl_node_t *
llm_tpl_parse_filter(llm_tpl_parser_t *p, llm_tpl_node_t *operand)
{
    int              id;
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_node_t  *n;

    t = llm_tpl_cur(p);

    if (t->type != LLM_TPL_T_NAME) {
        llm_tpl_pfail(p, t, "expected a filter name, got %s",
                      llm_tpl_tok_desc(t, buf, sizeof(buf)));
        return NULL;
    }

    id = llm_tpl_filter_id(t->s);
    if (id < 0) {
        llm_tpl_pfail(p, t, "no filter named '%.*s'",
                      (int) (t->s.len > 40 ? 40 : t->s.len), t->s.p);
        return NULL;
    }

    n = llm_tpl_node(p, LLM_TPL_N_FILTER, t->line);
    if (n == NULL) {
        return NULL;
    }

    n->a = operand;
    n->op = id;
    n->name = t->s;
    llm_tpl_next(p);

    if (llm_tpl_is_op(llm_tpl_cur(p), '(')
        && llm_tpl_parse_args(p, n) != LLM_OK)
    {
        return NULL;
    }

    return n;
}


/* at "is": [not] name[(args) | single argument] */
static llm_tpl_node_t *
llm_tpl_parse_test(llm_tpl_parser_t *p, llm_tpl_node_t *operand)
{
    int              id, neg;
    char             buf[64];
    llm_tpl_tok_t   *t;
    llm_tpl_vec_t    args;
    llm_tpl_node_t  *n, *arg;

    llm_tpl_next(p);

    neg = 0;
    if (llm_tpl_is_name(llm_tpl_cur(p), "not")) {
        neg = 1;
        llm_tpl_next(p);
    }

    t = llm_tpl_cur(p);

    if (t->type != LLM_TPL_T_NAME) {
        llm_tpl_pfail(p, t, "expected a test name, got %s",
                      llm_tpl_tok_desc(t, buf, sizeof(buf)));
        return NULL;
    }

    id = llm_tpl_test_id(t->s);
    if (id < 0) {
        llm_tpl_pfail(p, t, "no test named '%.*s'",
                      (int) (t->s.len > 40 ? 40 : t->s.len), t->s.p);
        return NULL;
    }

    n = llm_tpl_node(p, LLM_TPL_N_TEST, t->line);
    if (n == NULL) {
        return NULL;
    }

    n->a = operand;
    n->op = id;
    n->neg = neg;
    n->name = t->s;
    llm_tpl_next(p);

    t = llm_tpl_cur(p);

    if (llm_tpl_is_op(t, '(')) {
        if (llm_tpl_parse_args(p, n) != LLM_OK) {
            return NULL;
        }
        return n;
    }

    /* "x is divisibleby 3": one argument without parentheses */
    if ((t->type == LLM_TPL_T_NAME && !llm_tpl_is_name(t, "else")
         && !llm_tpl_is_name(t, "or") && !llm_tpl_is_name(t, "and"))
        || t->type == LLM_TPL_T_STRING || t->type == LLM_TPL_T_INT
        || t->type == LLM_TPL_T_FLOAT || llm_tpl_is_op(t, '[')
        || llm_tpl_is_op(t, '{'))
    {
        if (llm_tpl_is_name(t, "is")) {
            llm_tpl_pfail(p, t, "tests cannot be chained with 'is'");
            return NULL;
        }

        if (llm_tpl_enter(p) != LLM_OK) {
            return NULL;
        }

        arg = llm_tpl_parse_postfix(p, llm_tpl_parse_primary(p));
        p->depth--;

        memset(&args, 0, sizeof(args));
        if (llm_tpl_vec_push(p, &args, arg) != LLM_OK) {
            return NULL;
        }

        n->args = args.items;
        n->nargs = 1;
    }

    return n;
}
