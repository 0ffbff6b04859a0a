/*
 * Copyright (C) ngx_llm developers
 *
 * Template evaluation: statements write to r->out, expressions yield
 * values.  Scoping follows jinja2: every loop iteration and macro call
 * has its own frame, "set" writes to the innermost one, "if" has none,
 * and namespaces are the way to carry values out of a loop.
 */

#include <math.h>
#include <string.h>

#include "llm_template_int.h"


static int llm_tpl_eval(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *out);
static int llm_tpl_eval_node(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *out);
static int llm_tpl_eval_args(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_args_t *a, size_t extra_kw);
static int llm_tpl_eval_cmp(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *out);
static int llm_tpl_eval_seq(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *out);
static int llm_tpl_neg(llm_tpl_render_t *r, int kind,
    const llm_tpl_val_t *a, llm_tpl_val_t *out);
static int llm_tpl_arith(llm_tpl_render_t *r, int op,
    const llm_tpl_val_t *a, const llm_tpl_val_t *b, llm_tpl_val_t *out);
static int llm_tpl_repeat(llm_tpl_render_t *r, const llm_tpl_val_t *seq,
    int64_t times, llm_tpl_val_t *out);
static int llm_tpl_slice(llm_tpl_render_t *r, const llm_tpl_val_t *obj,
    const llm_tpl_val_t *start, const llm_tpl_val_t *stop,
    const llm_tpl_val_t *step, llm_tpl_val_t *out);
static int llm_tpl_loop_attr(llm_tpl_render_t *r, llm_tpl_loop_t *loop,
    llm_tpl_str_t name, llm_tpl_val_t *out);
static int llm_tpl_call_macro(llm_tpl_render_t *r, const llm_tpl_macro_t *m,
    llm_tpl_args_t *a, llm_tpl_val_t *out);

static int llm_tpl_exec_stmt(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n);
static int llm_tpl_exec_for(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n);
static int llm_tpl_exec_callblock(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n);
static int llm_tpl_capture(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_node_t **body, size_t nbody, llm_tpl_val_t *out);
static int llm_tpl_apply_filters(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *v);
static int llm_tpl_assign(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_node_t **targets, size_t n, const llm_tpl_val_t *v);
static int llm_tpl_assign_one(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *target, const llm_tpl_val_t *v);


/* ---- expressions ------------------------------------------------------ */

static int
llm_tpl_eval(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *out)
{
    int  rc;

    if (++r->depth > LLM_TPL_MAX_EVAL_DEPTH) {
        rc = llm_tpl_fail(r, "template nested more than %d deep",
                          LLM_TPL_MAX_EVAL_DEPTH);

    } else {
        rc = llm_tpl_steps(r, 1);
        if (rc == LLM_OK) {
            rc = llm_tpl_eval_node(r, f, n, out);
        }
    }

    r->depth--;

    if (rc != LLM_OK && r->line == 0) {
        r->line = n->line;
    }

    return rc;
}


static int
llm_tpl_eval_node(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *out)
{
    int             rc, res;
    llm_tpl_val_t   a, b, c, d;
    llm_tpl_args_t  args;

    switch (n->kind) {
    case LLM_TPL_N_CONST:
        *out = n->val;
        return LLM_OK;

    case LLM_TPL_N_NAME:
        rc = llm_tpl_frame_get(r, f, n->name, out);
        if (rc < 0) {
            return LLM_ERR;
        }
        if (rc == 0) {
            *out = llm_tpl_undef(r, "'%.*s' is undefined",
                                 LLM_TPL_PREC(n->name.len), n->name.p);
        }
        return LLM_OK;

    case LLM_TPL_N_GETATTR:
        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK) {
            return LLM_ERR;
        }
        return llm_tpl_getattr(r, &a, n->name, out);

    case LLM_TPL_N_GETITEM:
        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK
            || llm_tpl_eval(r, f, n->b, &b) != LLM_OK)
        {
            return LLM_ERR;
        }
        return llm_tpl_getitem(r, &a, &b, out);

    case LLM_TPL_N_SLICE:
        b = c = d = llm_tpl_v_none();

        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK
            || (n->b && llm_tpl_eval(r, f, n->b, &b) != LLM_OK)
            || (n->c && llm_tpl_eval(r, f, n->c, &c) != LLM_OK)
            || (n->d && llm_tpl_eval(r, f, n->d, &d) != LLM_OK))
        {
            return LLM_ERR;
        }
        return llm_tpl_slice(r, &a, &b, &c, &d, out);

    case LLM_TPL_N_CALL:
        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK
            || llm_tpl_eval_args(r, f, n, &args, 0) != LLM_OK)
        {
            return LLM_ERR;
        }
        return llm_tpl_call(r, &a, &args, out);

    case LLM_TPL_N_FILTER:
        if (n->a == NULL) {
            return llm_tpl_fail(r, "filter without a value");
        }

        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK
            || llm_tpl_eval_args(r, f, n, &args, 0) != LLM_OK)
        {
            return LLM_ERR;
        }
        return llm_tpl_filter(r, n->op, &a, &args, out);

    case LLM_TPL_N_TEST:
        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK
            || llm_tpl_eval_args(r, f, n, &args, 0) != LLM_OK
            || llm_tpl_test(r, n->op, &a, &args, &res) != LLM_OK)
        {
            return LLM_ERR;
        }
        *out = llm_tpl_v_bool(res ^ n->neg);
        return LLM_OK;

    case LLM_TPL_N_NEG:
    case LLM_TPL_N_POS:
        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK) {
            return LLM_ERR;
        }
        return llm_tpl_neg(r, n->kind, &a, out);

    case LLM_TPL_N_NOT:
        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK) {
            return LLM_ERR;
        }
        *out = llm_tpl_v_bool(!llm_tpl_truthy(&a));
        return LLM_OK;

    case LLM_TPL_N_BINOP:
        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK
            || llm_tpl_eval(r, f, n->b, &b) != LLM_OK)
        {
            return LLM_ERR;
        }
        return llm_tpl_binary(r, n->op, &a, &b, out);

    case LLM_TPL_N_AND:
    case LLM_TPL_N_OR:
        /* Python's and/or yield an operand, not a bool */
        if (llm_tpl_eval(r, f, n->a, &a) != LLM_OK) {
            return LLM_ERR;
        }

        if (llm_tpl_truthy(&a) == (n->kind == LLM_TPL_N_OR)) {
            *out = a;
            return LLM_OK;
        }

        return llm_tpl_eval(r, f, n->b, out);

    case LLM_TPL_N_CMP:
        return llm_tpl_eval_cmp(r, f, n, out);

    case LLM_TPL_N_COND:
        if (llm_tpl_eval(r, f, n->b, &b) != LLM_OK) {
            return LLM_ERR;
        }

        if (llm_tpl_truthy(&b)) {
            return llm_tpl_eval(r, f, n->a, out);
        }

        if (n->c != NULL) {
            return llm_tpl_eval(r, f, n->c, out);
        }

        *out = llm_tpl_undef(r, "the inline if-expression evaluated to"
                             " false and no else section was defined");
        return LLM_OK;

    case LLM_TPL_N_LIST:
    case LLM_TPL_N_TUPLE:
    case LLM_TPL_N_DICT:
        return llm_tpl_eval_seq(r, f, n, out);

    default:
        return llm_tpl_fail(r, "cannot evaluate a statement");
    }
}


static int
llm_tpl_eval_args(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_args_t *a, size_t extra_kw)
{
    size_t  i;

    memset(a, 0, sizeof(llm_tpl_args_t));

    if (n->nargs) {
        a->pos = llm_tpl_ralloc(r, n->nargs, sizeof(llm_tpl_val_t));
        if (a->pos == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < n->nargs; i++) {
            if (llm_tpl_eval(r, f, n->args[i], &a->pos[i]) != LLM_OK) {
                return LLM_ERR;
            }
        }

        a->npos = n->nargs;
    }

    if (n->nkw + extra_kw) {
        a->kwnames = llm_tpl_ralloc(r, n->nkw + extra_kw,
                                    sizeof(llm_tpl_str_t));
        a->kwvals = llm_tpl_ralloc(r, n->nkw + extra_kw,
                                   sizeof(llm_tpl_val_t));
        if (a->kwnames == NULL || a->kwvals == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < n->nkw; i++) {
            a->kwnames[i] = n->kw[i]->name;
            if (llm_tpl_eval(r, f, n->kw[i]->a, &a->kwvals[i]) != LLM_OK) {
                return LLM_ERR;
            }
        }

        a->nkw = n->nkw;
    }

    return LLM_OK;
}


static int
llm_tpl_eval_cmp(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *out)
{
    int            res, c;
    size_t         i;
    llm_tpl_val_t  left, right;

    if (llm_tpl_eval(r, f, n->a, &left) != LLM_OK) {
        return LLM_ERR;
    }

    /* a < b < c is a < b and b < c, and stops at the first false */
    for (i = 0; i < n->nargs; i++) {
        if (llm_tpl_eval(r, f, n->args[i], &right) != LLM_OK) {
            return LLM_ERR;
        }

        switch (n->ops[i]) {
        case LLM_TPL_OP_EQ:
        case LLM_TPL_OP_NE:
            if (llm_tpl_equal(r, &left, &right, &res, 0) != LLM_OK) {
                return LLM_ERR;
            }
            res ^= n->ops[i] == LLM_TPL_OP_NE;
            break;

        case LLM_TPL_OP_IN:
        case LLM_TPL_OP_NOTIN:
            if (llm_tpl_contains(r, &left, &right, &res) != LLM_OK) {
                return LLM_ERR;
            }
            res ^= n->ops[i] == LLM_TPL_OP_NOTIN;
            break;

        default:
            if (llm_tpl_compare(r, &left, &right, &c, 0) != LLM_OK) {
                return LLM_ERR;
            }

            switch (n->ops[i]) {
            case '<':
                res = c < 0;
                break;
            case '>':
                res = c > 0;
                break;
            case LLM_TPL_OP_LE:
                res = c <= 0;
                break;
            default:
                res = c >= 0;
            }
        }

        if (!res) {
            *out = llm_tpl_v_bool(0);
            return LLM_OK;
        }

        left = right;
    }

    *out = llm_tpl_v_bool(1);
    return LLM_OK;
}


static int
llm_tpl_eval_seq(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *out)
{
    size_t           i;
    llm_tpl_val_t    k, v;
    llm_tpl_list_t  *l;
    llm_tpl_dict_t  *d;

    if (n->kind == LLM_TPL_N_DICT) {
        d = llm_tpl_dict_new(r, n->nargs / 2);
        if (d == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i + 1 < n->nargs; i += 2) {
            if (llm_tpl_eval(r, f, n->args[i], &k) != LLM_OK
                || llm_tpl_eval(r, f, n->args[i + 1], &v) != LLM_OK
                || llm_tpl_dict_set(r, d, &k, &v) != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        out->type = LLM_TPL_DICT;
        out->u.dict = d;
        return LLM_OK;
    }

    l = llm_tpl_list_new(r, n->nargs);
    if (l == NULL) {
        return LLM_ERR;
    }

    l->tuple = n->kind == LLM_TPL_N_TUPLE;

    for (i = 0; i < n->nargs; i++) {
        if (llm_tpl_eval(r, f, n->args[i], &l->items[i]) != LLM_OK) {
            return LLM_ERR;
        }
        l->n++;
    }

    *out = llm_tpl_v_list(l);
    return LLM_OK;
}


static int
llm_tpl_neg(llm_tpl_render_t *r, int kind, const llm_tpl_val_t *a,
    llm_tpl_val_t *out)
{
    int      k;
    double   fv;
    int64_t  iv;

    if (a->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, a);
    }

    k = llm_tpl_num(a, &iv, &fv);

    if (k == 0) {
        return llm_tpl_fail(r, "bad operand type for unary %c: '%s'",
                            kind == LLM_TPL_N_NEG ? '-' : '+',
                            llm_tpl_type_name(a));
    }

    if (kind == LLM_TPL_N_POS) {
        *out = k == 1 ? llm_tpl_v_int(iv) : llm_tpl_v_float(fv);
        return LLM_OK;
    }

    if (k == 2) {
        *out = llm_tpl_v_float(-fv);
        return LLM_OK;
    }

    if (iv == INT64_MIN) {
        return llm_tpl_fail(r, "integer overflow");
    }

    *out = llm_tpl_v_int(-iv);
    return LLM_OK;
}


int
llm_tpl_binary(llm_tpl_render_t *r, int op, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, llm_tpl_val_t *out)
{
    double           fv;
    size_t           len;
    int64_t          iv;
    llm_tpl_buf_t    buf;
    llm_tpl_list_t  *l;
    llm_tpl_str_t    sa, sb;
    char            *s;

    if (op == '~') {
        /* str() of both sides; an undefined side is "" */
        if (llm_tpl_to_str(r, a, &sa) != LLM_OK
            || llm_tpl_to_str(r, b, &sb) != LLM_OK)
        {
            return LLM_ERR;
        }
        goto concat;
    }

    if (a->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, a);
    }

    if (b->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, b);
    }

    if (llm_tpl_num(a, &iv, &fv) && llm_tpl_num(b, &iv, &fv)) {
        return llm_tpl_arith(r, op, a, b, out);
    }

    switch (op) {
    case '+':
        if (a->type == LLM_TPL_STR && b->type == LLM_TPL_STR) {
            sa = a->u.s;
            sb = b->u.s;
            goto concat;
        }

        if (a->type == LLM_TPL_LIST && b->type == LLM_TPL_LIST
            && a->u.list->tuple == b->u.list->tuple)
        {
            l = llm_tpl_list_new(r, a->u.list->n + b->u.list->n);
            if (l == NULL) {
                return LLM_ERR;
            }

            if (a->u.list->n) {
                memcpy(l->items, a->u.list->items,
                       a->u.list->n * sizeof(llm_tpl_val_t));
            }

            if (b->u.list->n) {
                memcpy(l->items + a->u.list->n, b->u.list->items,
                       b->u.list->n * sizeof(llm_tpl_val_t));
            }

            l->n = a->u.list->n + b->u.list->n;
            l->tuple = a->u.list->tuple;
            *out = llm_tpl_v_list(l);
            return LLM_OK;
        }

        if (a->type == LLM_TPL_STR || a->type == LLM_TPL_LIST) {
            return llm_tpl_fail(r, "can only concatenate %s (not \"%s\")"
                                " to %s", llm_tpl_type_name(a),
                                llm_tpl_type_name(b), llm_tpl_type_name(a));
        }
        break;

    case '*':
        if ((a->type == LLM_TPL_STR || a->type == LLM_TPL_LIST)
            && llm_tpl_num(b, &iv, &fv) == 1)
        {
            return llm_tpl_repeat(r, a, iv, out);
        }

        if ((b->type == LLM_TPL_STR || b->type == LLM_TPL_LIST)
            && llm_tpl_num(a, &iv, &fv) == 1)
        {
            return llm_tpl_repeat(r, b, iv, out);
        }
        break;

    case '%':
        if (a->type == LLM_TPL_STR) {
            memset(&buf, 0, sizeof(buf));
            if (llm_tpl_format_percent(r, &buf, a->u.s, b) != LLM_OK) {
                return LLM_ERR;
            }
            *out = llm_tpl_buf_val(&buf);
            return LLM_OK;
        }
        break;
    }

    return llm_tpl_fail(r, "unsupported operand type(s) for %s: '%s' and"
                        " '%s'",
                        op == LLM_TPL_OP_FLOORDIV ? "//"
                        : op == LLM_TPL_OP_POW ? "**"
                        : op == '+' ? "+" : op == '-' ? "-"
                        : op == '*' ? "*" : op == '/' ? "/" : "%",
                        llm_tpl_type_name(a), llm_tpl_type_name(b));

concat:

    if (llm_add_size(sa.len, sb.len, &len) != 0) {
        return llm_tpl_fail(r, "string too long");
    }

    if (sb.len == 0) {
        *out = llm_tpl_v_str(sa.p, sa.len);
        return LLM_OK;
    }

    if (sa.len == 0) {
        *out = llm_tpl_v_str(sb.p, sb.len);
        return LLM_OK;
    }

    s = llm_tpl_ralloc(r, len, 1);
    if (s == NULL) {
        return LLM_ERR;
    }

    memcpy(s, sa.p, sa.len);
    memcpy(s + sa.len, sb.p, sb.len);

    *out = llm_tpl_v_str(s, len);
    return LLM_OK;
}


/* numbers: ints stay exact and fail on overflow, as bignums would not */
static int
llm_tpl_arith(llm_tpl_render_t *r, int op, const llm_tpl_val_t *a,
    const llm_tpl_val_t *b, llm_tpl_val_t *out)
{
    int      ka, kb;
    double   fa, fb, m, div;
    int64_t  ia, ib, iv, base, e;

    ka = llm_tpl_num(a, &ia, &fa);
    kb = llm_tpl_num(b, &ib, &fb);

    if (op == '/') {
        if (fb == 0) {
            return llm_tpl_fail(r, "division by zero");
        }
        *out = llm_tpl_v_float(fa / fb);
        return LLM_OK;
    }

    if (ka == 1 && kb == 1) {
        switch (op) {
        case '+':
            if (__builtin_add_overflow(ia, ib, &iv)) {
                goto overflow;
            }
            break;

        case '-':
            if (__builtin_sub_overflow(ia, ib, &iv)) {
                goto overflow;
            }
            break;

        case '*':
            if (__builtin_mul_overflow(ia, ib, &iv)) {
                goto overflow;
            }
            break;

        case LLM_TPL_OP_FLOORDIV:
        case '%':
            if (ib == 0) {
                return llm_tpl_fail(r, "integer division or modulo by zero");
            }

            if (ib == -1) {
                if (op == '%') {
                    iv = 0;
                    break;
                }
                if (ia == INT64_MIN) {
                    goto overflow;
                }
                iv = -ia;
                break;
            }

            if (op == '%') {
                iv = ia % ib;
                if (iv != 0 && ((iv < 0) != (ib < 0))) {
                    iv += ib;
                }

            } else {
                iv = ia / ib;
                if ((ia % ib != 0) && ((ia < 0) != (ib < 0))) {
                    iv--;
                }
            }
            break;

        default:  /* ** */
            if (ib < 0) {
                if (ia == 0) {
                    return llm_tpl_fail(r, "0.0 cannot be raised to a"
                                        " negative power");
                }
                *out = llm_tpl_v_float(pow((double) ia, (double) ib));
                return LLM_OK;
            }

            iv = 1;
            base = ia;

            for (e = ib; e > 0; e >>= 1) {
                if ((e & 1) && __builtin_mul_overflow(iv, base, &iv)) {
                    goto overflow;
                }
                if (e > 1 && __builtin_mul_overflow(base, base, &base)) {
                    goto overflow;
                }
            }
        }

        *out = llm_tpl_v_int(iv);
        return LLM_OK;
    }

    switch (op) {
    case '+':
        m = fa + fb;
        break;

    case '-':
        m = fa - fb;
        break;

    case '*':
        m = fa * fb;
        break;

    case LLM_TPL_OP_FLOORDIV:
    case '%':
        if (fb == 0) {
            return llm_tpl_fail(r, "float %s by zero",
                                op == '%' ? "modulo" : "floor division");
        }

        /* Python's float_divmod() */
        m = fmod(fa, fb);
        div = (fa - m) / fb;

        if (m != 0 && ((m < 0) != (fb < 0))) {
            m += fb;
            div -= 1.0;
        }

        if (op == '%') {
            if (m == 0) {
                m = copysign(0.0, fb);
            }
            break;
        }

        if (div != 0) {
            m = floor(div);
            if (div - m > 0.5) {
                m += 1.0;
            }

        } else {
            m = copysign(0.0, fa / fb);
        }
        break;

    default:  /* ** */
        if (fa == 0 && fb < 0) {
            return llm_tpl_fail(r, "0.0 cannot be raised to a negative"
                                " power");
        }

        if (fa < 0 && fb != floor(fb)) {
            return llm_tpl_fail(r, "complex numbers are not supported");
        }

        m = pow(fa, fb);
    }

    *out = llm_tpl_v_float(m);
    return LLM_OK;

overflow:

    return llm_tpl_fail(r, "integer overflow");
}


static int
llm_tpl_repeat(llm_tpl_render_t *r, const llm_tpl_val_t *seq, int64_t times,
    llm_tpl_val_t *out)
{
    char            *s;
    size_t           len, total, i;
    llm_tpl_list_t  *l, *src;

    if (times < 0) {
        times = 0;
    }

    if (seq->type == LLM_TPL_STR) {
        len = seq->u.s.len;

        if ((uint64_t) times > SIZE_MAX
            || llm_mul_size(len, (size_t) times, &total) != 0
            || total > r->arena.limit)
        {
            return llm_tpl_fail(r, "template render needs more than %zu"
                                " bytes of memory", r->arena.limit);
        }

        if (llm_tpl_steps(r, total / 64) != LLM_OK) {
            return LLM_ERR;
        }

        s = llm_tpl_ralloc(r, total + 1, 1);
        if (s == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < (size_t) times; i++) {
            memcpy(s + i * len, seq->u.s.p, len);
        }

        *out = llm_tpl_v_str(s, total);
        return LLM_OK;
    }

    src = seq->u.list;

    if ((uint64_t) times > SIZE_MAX
        || llm_mul_size(src->n, (size_t) times, &total) != 0
        || total > r->arena.limit / sizeof(llm_tpl_val_t))
    {
        return llm_tpl_fail(r, "template render needs more than %zu bytes"
                            " of memory", r->arena.limit);
    }

    if (llm_tpl_steps(r, total / 8) != LLM_OK) {
        return LLM_ERR;
    }

    l = llm_tpl_list_new(r, total);
    if (l == NULL) {
        return LLM_ERR;
    }

    for (i = 0; i < (size_t) times && src->n; i++) {
        memcpy(l->items + i * src->n, src->items,
               src->n * sizeof(llm_tpl_val_t));
    }

    l->n = total;
    l->tuple = src->tuple;
    *out = llm_tpl_v_list(l);

    return LLM_OK;
}


/* Python's slice.indices(): the clamped start and the item count */
static int
llm_tpl_slice(llm_tpl_render_t *r, const llm_tpl_val_t *obj,
    const llm_tpl_val_t *startv, const llm_tpl_val_t *stopv,
    const llm_tpl_val_t *stepv, llm_tpl_val_t *out)
{
    int                    k;
    double                 fv;
    size_t                 len, i, count, o, *offs, cl;
    int64_t                start, stop, step, n, idx, v;
    uint32_t               cp;
    const char            *s;
    llm_tpl_list_t        *l;
    llm_tpl_buf_t          buf;
    const llm_tpl_val_t   *iv[3];

    if (obj->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, obj);
    }

    if (obj->type != LLM_TPL_STR && obj->type != LLM_TPL_LIST) {
        return llm_tpl_fail(r, "'%s' object is not subscriptable",
                            llm_tpl_type_name(obj));
    }

    iv[0] = startv;
    iv[1] = stopv;
    iv[2] = stepv;

    for (k = 0; k < 3; k++) {
        if (iv[k]->type != LLM_TPL_NONE && llm_tpl_num(iv[k], &v, &fv) != 1) {
            return llm_tpl_fail(r, "slice indices must be integers or None");
        }
    }

    step = 1;
    if (stepv->type != LLM_TPL_NONE) {
        llm_tpl_num(stepv, &step, &fv);
        if (step == 0) {
            return llm_tpl_fail(r, "slice step cannot be zero");
        }
        if (step == INT64_MIN) {
            step = -INT64_MAX;
        }
    }

    if (obj->type == LLM_TPL_STR) {
        if (llm_tpl_steps(r, obj->u.s.len / 64 + 1) != LLM_OK) {
            return LLM_ERR;
        }
        len = llm_tpl_utf8_len(obj->u.s.p, obj->u.s.len);

    } else {
        len = obj->u.list->n;
    }

    n = (int64_t) len;

    if (startv->type == LLM_TPL_NONE) {
        start = step < 0 ? n - 1 : 0;

    } else {
        llm_tpl_num(startv, &start, &fv);
        if (start < 0) {
            start = start < -n ? (step < 0 ? -1 : 0) : start + n;
        } else if (start >= n) {
            start = step < 0 ? n - 1 : n;
        }
    }

    if (stopv->type == LLM_TPL_NONE) {
        stop = step < 0 ? -1 : n;

    } else {
        llm_tpl_num(stopv, &stop, &fv);
        if (stop < 0) {
            stop = stop < -n ? (step < 0 ? -1 : 0) : stop + n;
        } else if (stop >= n) {
            stop = step < 0 ? n - 1 : n;
        }
    }

    if (step < 0) {
        count = stop < start ? (size_t) ((start - stop - 1) / -step + 1) : 0;

    } else {
        count = start < stop ? (size_t) ((stop - start - 1) / step + 1) : 0;
    }

    if (llm_tpl_steps(r, count / 8 + 1) != LLM_OK) {
        return LLM_ERR;
    }

    if (obj->type == LLM_TPL_LIST) {
        l = llm_tpl_list_new(r, count);
        if (l == NULL) {
            return LLM_ERR;
        }

        for (i = 0, idx = start; i < count; i++, idx += step) {
            l->items[i] = obj->u.list->items[idx];
        }

        l->n = count;
        l->tuple = obj->u.list->tuple;
        *out = llm_tpl_v_list(l);
        return LLM_OK;
    }

    if (count == 0) {
        *out = llm_tpl_v_str("", 0);
        return LLM_OK;
    }

    s = obj->u.s.p;

    if (len == obj->u.s.len) {
        /* ASCII: characters are bytes */
        if (step == 1) {
            *out = llm_tpl_v_str(s + start, count);
            return LLM_OK;
        }

        o = 0;
        memset(&buf, 0, sizeof(buf));

        for (i = 0, idx = start; i < count; i++, idx += step) {
            if (llm_tpl_buf_addc(r, &buf, s[idx]) != LLM_OK) {
                return LLM_ERR;
            }
        }

        *out = llm_tpl_buf_val(&buf);
        return LLM_OK;
    }

    /* byte offset of every character, and of the end */
    offs = llm_tpl_ralloc(r, len + 1, sizeof(size_t));
    if (offs == NULL) {
        return LLM_ERR;
    }

    for (i = 0, o = 0; o < obj->u.s.len; i++) {
        offs[i] = o;
        o += llm_tpl_utf8_dec(s + o, obj->u.s.len - o, &cp);
    }
    offs[len] = obj->u.s.len;

    if (step == 1) {
        *out = llm_tpl_v_str(s + offs[start], offs[start + count]
                                              - offs[start]);
        return LLM_OK;
    }

    memset(&buf, 0, sizeof(buf));

    for (i = 0, idx = start; i < count; i++, idx += step) {
        cl = offs[idx + 1] - offs[idx];
        if (llm_tpl_buf_add(r, &buf, s + offs[idx], cl) != LLM_OK) {
            return LLM_ERR;
        }
    }

    *out = llm_tpl_buf_val(&buf);
    return LLM_OK;
}


/*
 * obj.name: methods first, then keys, as jinja2's getattr() tries the
 * Python attribute before the item; a missing one is undefined.
 */
int
llm_tpl_getattr(llm_tpl_render_t *r, const llm_tpl_val_t *obj,
    llm_tpl_str_t name, llm_tpl_val_t *out)
{
    int  rc;

    if (obj->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, obj);
    }

    if (obj->type == LLM_TPL_LOOP) {
        return llm_tpl_loop_attr(r, obj->u.loop, name, out);
    }

    rc = llm_tpl_method(r, obj, name, out);
    if (rc < 0) {
        return LLM_ERR;
    }

    if (rc > 0) {
        return LLM_OK;
    }

    if (obj->type == LLM_TPL_DICT || obj->type == LLM_TPL_NS) {
        rc = llm_tpl_dict_gets(r, obj->u.dict, name, out);
        if (rc < 0) {
            return LLM_ERR;
        }

        if (rc > 0) {
            return LLM_OK;
        }
    }

    *out = llm_tpl_undef(r, "'%s object' has no attribute '%.*s'",
                         llm_tpl_type_name(obj), LLM_TPL_PREC(name.len),
                         name.p);
    return LLM_OK;
}


/* obj[key]: items first, then attributes for string keys */
int
llm_tpl_getitem(llm_tpl_render_t *r, const llm_tpl_val_t *obj,
    const llm_tpl_val_t *key, llm_tpl_val_t *out)
{
    int      rc, k;
    double   fv;
    size_t   i, o, n, len;
    int64_t  idx;
    uint32_t cp;

    if (obj->type == LLM_TPL_UNDEF) {
        return llm_tpl_fail_undef(r, obj);
    }

    k = llm_tpl_num(key, &idx, &fv);

    switch (obj->type) {
    case LLM_TPL_DICT:
        rc = llm_tpl_dict_get(r, obj->u.dict, key, out);
        if (rc < 0) {
            return LLM_ERR;
        }
        if (rc > 0) {
            return LLM_OK;
        }
        break;

    case LLM_TPL_LIST:
        if (k != 1) {
            break;
        }

        n = obj->u.list->n;
        if (idx < 0) {
            idx += (int64_t) n;
        }

        if (idx >= 0 && (uint64_t) idx < n) {
            *out = obj->u.list->items[idx];
            return LLM_OK;
        }

        llm_tpl_num(key, &idx, &fv);
        *out = llm_tpl_undef(r, "%s object has no element %lld",
                             llm_tpl_type_name(obj), (long long) idx);
        return LLM_OK;

    case LLM_TPL_STR:
        if (k != 1) {
            break;
        }

        if (llm_tpl_steps(r, obj->u.s.len / 64 + 1) != LLM_OK) {
            return LLM_ERR;
        }

        len = obj->u.s.len;
        n = llm_tpl_utf8_len(obj->u.s.p, len);

        if (idx < 0) {
            idx += (int64_t) n;
        }

        if (idx < 0 || (uint64_t) idx >= n) {
            llm_tpl_num(key, &idx, &fv);
            *out = llm_tpl_undef(r, "str object has no element %lld",
                                 (long long) idx);
            return LLM_OK;
        }

        for (i = 0, o = 0; o < len; i++) {
            k = llm_tpl_utf8_dec(obj->u.s.p + o, len - o, &cp);
            if (i == (size_t) idx) {
                *out = llm_tpl_v_str(obj->u.s.p + o, k);
                return LLM_OK;
            }
            o += k;
        }
        break;

    default:
        break;
    }

    if (key->type == LLM_TPL_STR) {
        return llm_tpl_getattr(r, obj, key->u.s, out);
    }

    *out = llm_tpl_undef(r, "'%s object' has no element",
                         llm_tpl_type_name(obj));
    return LLM_OK;
}


static int
llm_tpl_loop_attr(llm_tpl_render_t *r, llm_tpl_loop_t *loop,
    llm_tpl_str_t name, llm_tpl_val_t *out)
{
    int64_t          i, n;
    llm_tpl_func_t  *fn;

    i = (int64_t) loop->index0;
    n = (int64_t) loop->items->n;

    if (llm_tpl_str_eq(name, "index")) {
        *out = llm_tpl_v_int(i + 1);

    } else if (llm_tpl_str_eq(name, "index0")) {
        *out = llm_tpl_v_int(i);

    } else if (llm_tpl_str_eq(name, "revindex")) {
        *out = llm_tpl_v_int(n - i);

    } else if (llm_tpl_str_eq(name, "revindex0")) {
        *out = llm_tpl_v_int(n - i - 1);

    } else if (llm_tpl_str_eq(name, "first")) {
        *out = llm_tpl_v_bool(i == 0);

    } else if (llm_tpl_str_eq(name, "last")) {
        *out = llm_tpl_v_bool(i == n - 1);

    } else if (llm_tpl_str_eq(name, "length")) {
        *out = llm_tpl_v_int(n);

    } else if (llm_tpl_str_eq(name, "depth")) {
        *out = llm_tpl_v_int(loop->depth0 + 1);

    } else if (llm_tpl_str_eq(name, "depth0")) {
        *out = llm_tpl_v_int(loop->depth0);

    } else if (llm_tpl_str_eq(name, "previtem")) {
        *out = i > 0 ? loop->items->items[i - 1]
                     : llm_tpl_undef(r, "there is no previous item");

    } else if (llm_tpl_str_eq(name, "nextitem")) {
        *out = i + 1 < n ? loop->items->items[i + 1]
                         : llm_tpl_undef(r, "there is no next item");

    } else if (llm_tpl_str_eq(name, "cycle")) {
        fn = llm_tpl_ralloc(r, 1, sizeof(llm_tpl_func_t));
        if (fn == NULL) {
            return LLM_ERR;
        }

        fn->id = -1;
        fn->self.type = LLM_TPL_LOOP;
        fn->self.u.loop = loop;
        out->type = LLM_TPL_FUNC;
        out->u.func = fn;

    } else {
        *out = llm_tpl_undef(r, "'LoopContext object' has no attribute"
                             " '%.*s'", LLM_TPL_PREC(name.len), name.p);
    }

    return LLM_OK;
}


int
llm_tpl_call(llm_tpl_render_t *r, const llm_tpl_val_t *callee,
    llm_tpl_args_t *args, llm_tpl_val_t *out)
{
    llm_tpl_loop_t  *loop;

    switch (callee->type) {
    case LLM_TPL_MACRO:
        return llm_tpl_call_macro(r, callee->u.macro, args, out);

    case LLM_TPL_FUNC:
        if (callee->u.func->id == -1) {
            /* loop.cycle(a, b, ...) */
            loop = callee->u.func->self.u.loop;

            if (args->npos == 0) {
                return llm_tpl_fail(r, "no items for cycling given");
            }

            *out = args->pos[loop->index0 % args->npos];
            return LLM_OK;
        }

        return llm_tpl_call_func(r, callee->u.func, args, out);

    case LLM_TPL_UNDEF:
        return llm_tpl_fail_undef(r, callee);

    default:
        return llm_tpl_fail(r, "'%s' object is not callable",
                            llm_tpl_type_name(callee));
    }
}


static int
llm_tpl_call_macro(llm_tpl_render_t *r, const llm_tpl_macro_t *m,
    llm_tpl_args_t *a, llm_tpl_val_t *out)
{
    int                    rc;
    char                  *bound;
    size_t                 i, j, np;
    llm_tpl_val_t          v;
    llm_tpl_list_t        *varargs;
    llm_tpl_dict_t        *kwargs;
    llm_tpl_frame_t       *f;
    const llm_tpl_node_t  *node, *param;

    static const llm_tpl_str_t  s_varargs = { "varargs", 7 };
    static const llm_tpl_str_t  s_kwargs = { "kwargs", 6 };

    node = m->node;
    np = node->nargs;

    if (r->calls >= LLM_TEMPLATE_MAX_CALLS) {
        return llm_tpl_fail(r, "macro calls nested more than %d deep",
                            LLM_TEMPLATE_MAX_CALLS);
    }

    f = llm_tpl_frame_new(r, m->closure);
    bound = llm_tpl_ralloc(r, np + 1, 1);
    varargs = llm_tpl_list_new(r, 0);
    kwargs = llm_tpl_dict_new(r, 0);
    if (f == NULL || bound == NULL || varargs == NULL || kwargs == NULL) {
        return LLM_ERR;
    }

    varargs->tuple = 1;

    for (i = 0; i < a->npos; i++) {
        if (i < np) {
            if (llm_tpl_frame_set(r, f, node->args[i]->name, &a->pos[i])
                != LLM_OK)
            {
                return LLM_ERR;
            }
            bound[i] = 1;

        } else if (llm_tpl_list_push(r, varargs, &a->pos[i]) != LLM_OK) {
            return LLM_ERR;
        }
    }

    for (i = 0; i < a->nkw; i++) {
        for (j = 0; j < np; j++) {
            param = node->args[j];
            if (param->name.len == a->kwnames[i].len
                && memcmp(param->name.p, a->kwnames[i].p, param->name.len)
                   == 0)
            {
                break;
            }
        }

        if (j < np) {
            if (bound[j]) {
                return llm_tpl_fail(r, "macro '%.*s' got multiple values for"
                                    " argument '%.*s'",
                                    LLM_TPL_PREC(node->name.len),
                                    node->name.p,
                                    LLM_TPL_PREC(a->kwnames[i].len),
                                    a->kwnames[i].p);
            }

            if (llm_tpl_frame_set(r, f, a->kwnames[i], &a->kwvals[i])
                != LLM_OK)
            {
                return LLM_ERR;
            }
            bound[j] = 1;
            continue;
        }

        if (llm_tpl_str_eq(a->kwnames[i], "caller")) {
            if (llm_tpl_frame_set(r, f, a->kwnames[i], &a->kwvals[i])
                != LLM_OK)
            {
                return LLM_ERR;
            }
            continue;
        }

        v = llm_tpl_v_str(a->kwnames[i].p, a->kwnames[i].len);
        if (llm_tpl_dict_set(r, kwargs, &v, &a->kwvals[i]) != LLM_OK) {
            return LLM_ERR;
        }
    }

    r->calls++;

    /* defaults are evaluated at call time, and see earlier parameters */
    for (j = 0; j < np; j++) {
        if (bound[j]) {
            continue;
        }

        param = node->args[j];

        if (param->a != NULL) {
            rc = llm_tpl_eval(r, f, param->a, &v);
            if (rc != LLM_OK) {
                r->calls--;
                return LLM_ERR;
            }

        } else {
            v = llm_tpl_undef(r, "parameter '%.*s' was not provided",
                              LLM_TPL_PREC(param->name.len), param->name.p);
        }

        if (llm_tpl_frame_set(r, f, param->name, &v) != LLM_OK) {
            r->calls--;
            return LLM_ERR;
        }
    }

    v = llm_tpl_v_list(varargs);
    rc = llm_tpl_frame_set(r, f, s_varargs, &v);

    if (rc == LLM_OK) {
        v.type = LLM_TPL_DICT;
        v.u.dict = kwargs;
        rc = llm_tpl_frame_set(r, f, s_kwargs, &v);
    }

    if (rc == LLM_OK) {
        rc = llm_tpl_capture(r, f, node->body, node->nbody, out);
    }

    r->calls--;

    return rc == LLM_ERR ? LLM_ERR : LLM_OK;
}


/* ---- statements ------------------------------------------------------- */

int
llm_tpl_exec(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_node_t **body, size_t n)
{
    int     rc;
    size_t  i;

    for (i = 0; i < n; i++) {
        rc = llm_tpl_exec_stmt(r, f, body[i]);
        if (rc != LLM_OK) {
            return rc;
        }
    }

    return LLM_OK;
}


static int
llm_tpl_exec_stmt(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n)
{
    int               rc;
    size_t            i;
    llm_tpl_val_t     v;
    llm_tpl_frame_t  *wf;
    llm_tpl_macro_t  *m;

    if (++r->depth > LLM_TPL_MAX_EVAL_DEPTH) {
        r->depth--;
        return llm_tpl_fail(r, "template nested more than %d deep",
                            LLM_TPL_MAX_EVAL_DEPTH);
    }

    rc = llm_tpl_steps(r, 1);
    if (rc != LLM_OK) {
        goto done;
    }

    switch (n->kind) {
    case LLM_TPL_N_DATA:
        rc = llm_tpl_buf_add(r, r->out, n->val.u.s.p, n->val.u.s.len);
        break;

    case LLM_TPL_N_PRINT:
        rc = llm_tpl_eval(r, f, n->a, &v);
        if (rc == LLM_OK) {
            rc = llm_tpl_add_str(r, r->out, &v, 0);
        }
        break;

    case LLM_TPL_N_IF:
        rc = llm_tpl_eval(r, f, n->a, &v);
        if (rc == LLM_OK) {
            rc = llm_tpl_truthy(&v) ? llm_tpl_exec(r, f, n->body, n->nbody)
                                    : llm_tpl_exec(r, f, n->orelse,
                                                   n->norelse);
        }
        break;

    case LLM_TPL_N_FOR:
        rc = llm_tpl_exec_for(r, f, n);
        break;

    case LLM_TPL_N_SET:
        rc = llm_tpl_eval(r, f, n->a, &v);
        if (rc == LLM_OK) {
            rc = llm_tpl_assign(r, f, n->args, n->nargs, &v);
        }
        break;

    case LLM_TPL_N_SETBLOCK:
        rc = llm_tpl_capture(r, llm_tpl_frame_new(r, f), n->body, n->nbody,
                             &v);
        if (rc == LLM_OK) {
            rc = llm_tpl_apply_filters(r, f, n, &v);
        }
        if (rc == LLM_OK) {
            rc = llm_tpl_assign_one(r, f, n->args[0], &v);
        }
        break;

    case LLM_TPL_N_FILTERBLOCK:
        rc = llm_tpl_capture(r, llm_tpl_frame_new(r, f), n->body, n->nbody,
                             &v);
        if (rc == LLM_OK) {
            rc = llm_tpl_apply_filters(r, f, n, &v);
        }
        if (rc == LLM_OK) {
            rc = llm_tpl_add_str(r, r->out, &v, 0);
        }
        break;

    case LLM_TPL_N_MACRO:
        m = llm_tpl_ralloc(r, 1, sizeof(llm_tpl_macro_t));
        if (m == NULL) {
            rc = LLM_ERR;
            break;
        }

        m->node = n;
        m->closure = f;
        f->captured = 1;

        v.type = LLM_TPL_MACRO;
        v.u.macro = m;
        rc = llm_tpl_frame_set(r, f, n->name, &v);
        break;

    case LLM_TPL_N_CALLBLOCK:
        rc = llm_tpl_exec_callblock(r, f, n);
        break;

    case LLM_TPL_N_WITH:
        wf = llm_tpl_frame_new(r, f);
        if (wf == NULL) {
            rc = LLM_ERR;
            break;
        }

        for (i = 0; i < n->nargs && rc == LLM_OK; i++) {
            rc = llm_tpl_eval(r, wf, n->args[i]->a, &v);
            if (rc == LLM_OK) {
                rc = llm_tpl_frame_set(r, wf, n->args[i]->name, &v);
            }
        }

        if (rc == LLM_OK) {
            rc = llm_tpl_exec(r, wf, n->body, n->nbody);
        }
        break;

    case LLM_TPL_N_BREAK:
        rc = LLM_TPL_BREAK;
        break;

    case LLM_TPL_N_CONTINUE:
        rc = LLM_TPL_CONTINUE;
        break;

    case LLM_TPL_N_BLOCK:
        rc = llm_tpl_exec(r, f, n->body, n->nbody);
        break;

    default:
        rc = llm_tpl_fail(r, "cannot execute an expression");
    }

done:

    r->depth--;

    if (rc == LLM_ERR && r->line == 0) {
        r->line = n->line;
    }

    return rc;
}


static int
llm_tpl_exec_for(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n)
{
    int               rc;
    size_t            i;
    llm_tpl_val_t     it, v;
    llm_tpl_list_t   *items, *kept;
    llm_tpl_loop_t   *loop;
    llm_tpl_frame_t  *lf;

    static const llm_tpl_str_t  s_loop = { "loop", 4 };

    if (llm_tpl_eval(r, f, n->a, &it) != LLM_OK
        || llm_tpl_iterate(r, &it, &items) != LLM_OK)
    {
        return LLM_ERR;
    }

    lf = NULL;

    /* "for x in y if cond": loop.index and loop.length count kept items */
    if (n->b != NULL) {
        kept = llm_tpl_list_new(r, 0);
        if (kept == NULL) {
            return LLM_ERR;
        }

        for (i = 0; i < items->n; i++) {
            if (lf == NULL || lf->captured) {
                lf = llm_tpl_frame_new(r, f);
                if (lf == NULL) {
                    return LLM_ERR;
                }
            }
            lf->n = 0;

            if (llm_tpl_assign(r, lf, n->args, n->nargs, &items->items[i])
                != LLM_OK
                || llm_tpl_eval(r, lf, n->b, &v) != LLM_OK)
            {
                return LLM_ERR;
            }

            if (llm_tpl_truthy(&v)
                && llm_tpl_list_push(r, kept, &items->items[i]) != LLM_OK)
            {
                return LLM_ERR;
            }
        }

        items = kept;
    }

    if (items->n == 0) {
        if (n->norelse == 0) {
            return LLM_OK;
        }

        lf = llm_tpl_frame_new(r, f);
        if (lf == NULL) {
            return LLM_ERR;
        }

        return llm_tpl_exec(r, lf, n->orelse, n->norelse);
    }

    loop = llm_tpl_ralloc(r, 1, sizeof(llm_tpl_loop_t));
    if (loop == NULL) {
        return LLM_ERR;
    }

    loop->items = items;

    v.type = LLM_TPL_LOOP;
    v.u.loop = loop;

    for (i = 0; i < items->n; i++) {
        if (llm_tpl_steps(r, 1) != LLM_OK) {
            return LLM_ERR;
        }

        /* a fresh scope per iteration; reused unless a macro kept it */
        if (lf == NULL || lf->captured) {
            lf = llm_tpl_frame_new(r, f);
            if (lf == NULL) {
                return LLM_ERR;
            }
        }
        lf->n = 0;

        loop->index0 = i;

        if (llm_tpl_assign(r, lf, n->args, n->nargs, &items->items[i])
            != LLM_OK
            || llm_tpl_frame_set(r, lf, s_loop, &v) != LLM_OK)
        {
            return LLM_ERR;
        }

        rc = llm_tpl_exec(r, lf, n->body, n->nbody);

        if (rc == LLM_TPL_BREAK) {
            break;
        }

        if (rc == LLM_ERR) {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


static int
llm_tpl_exec_callblock(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n)
{
    llm_tpl_val_t     callee, v;
    llm_tpl_args_t    args;
    llm_tpl_macro_t  *m;

    if (llm_tpl_eval(r, f, n->a->a, &callee) != LLM_OK
        || llm_tpl_eval_args(r, f, n->a, &args, 1) != LLM_OK)
    {
        return LLM_ERR;
    }

    m = llm_tpl_ralloc(r, 1, sizeof(llm_tpl_macro_t));
    if (m == NULL) {
        return LLM_ERR;
    }

    m->node = n;
    m->closure = f;
    f->captured = 1;

    args.kwnames[args.nkw] = n->name;
    args.kwvals[args.nkw].type = LLM_TPL_MACRO;
    args.kwvals[args.nkw].u.macro = m;
    args.nkw++;

    if (llm_tpl_call(r, &callee, &args, &v) != LLM_OK) {
        return LLM_ERR;
    }

    return llm_tpl_add_str(r, r->out, &v, 0);
}


/*
 * Renders body into a string instead of the output.  Set and filter
 * blocks have their own scope in jinja2, so they pass a new frame.
 */
static int
llm_tpl_capture(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_node_t **body, size_t nbody, llm_tpl_val_t *out)
{
    int             rc;
    llm_tpl_buf_t   buf, *saved;

    if (f == NULL) {
        return LLM_ERR;
    }

    memset(&buf, 0, sizeof(buf));

    saved = r->out;
    r->out = &buf;

    rc = llm_tpl_exec(r, f, body, nbody);

    r->out = saved;

    /* an error, or a break or continue leaving the block for its loop */
    if (rc != LLM_OK) {
        return rc;
    }

    *out = llm_tpl_buf_val(&buf);
    return LLM_OK;
}


static int
llm_tpl_apply_filters(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *n, llm_tpl_val_t *v)
{
    size_t                 i;
    llm_tpl_val_t          out;
    llm_tpl_args_t         args;
    const llm_tpl_node_t  *fn;

    for (i = 0; i < n->nfilters; i++) {
        fn = n->filters[i];

        if (llm_tpl_eval_args(r, f, fn, &args, 0) != LLM_OK
            || llm_tpl_filter(r, fn->op, v, &args, &out) != LLM_OK)
        {
            if (r->line == 0) {
                r->line = fn->line;
            }
            return LLM_ERR;
        }

        *v = out;
    }

    return LLM_OK;
}


static int
llm_tpl_assign(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    llm_tpl_node_t **targets, size_t n, const llm_tpl_val_t *v)
{
    size_t           i;
    llm_tpl_list_t  *items;

    if (n == 1) {
        return llm_tpl_assign_one(r, f, targets[0], v);
    }

    if (llm_tpl_iterate(r, v, &items) != LLM_OK) {
        return LLM_ERR;
    }

    if (items->n != n) {
        if (items->n > n) {
            return llm_tpl_fail(r, "too many values to unpack (expected %zu)",
                                n);
        }

        return llm_tpl_fail(r, "not enough values to unpack (expected %zu,"
                            " got %zu)", n, items->n);
    }

    for (i = 0; i < n; i++) {
        if (llm_tpl_assign_one(r, f, targets[i], &items->items[i]) != LLM_OK)
        {
            return LLM_ERR;
        }
    }

    return LLM_OK;
}


static int
llm_tpl_assign_one(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const llm_tpl_node_t *target, const llm_tpl_val_t *v)
{
    int            rc;
    llm_tpl_val_t  ns, key;

    if (target->kind == LLM_TPL_N_NAME) {
        return llm_tpl_frame_set(r, f, target->name, v);
    }

    /* set ns.attr = v */
    rc = llm_tpl_frame_get(r, f, target->a->name, &ns);
    if (rc < 0) {
        return LLM_ERR;
    }

    if (rc == 0 || ns.type != LLM_TPL_NS) {
        return llm_tpl_fail(r, "cannot assign attribute on non-namespace"
                            " object");
    }

    key = llm_tpl_v_str(target->name.p, target->name.len);

    return llm_tpl_dict_set(r, ns.u.dict, &key, v);
}
