/*
 * Copyright (C) ngx_llm developers
 *
 * Template interpreter: arenas, the public API and the "render" command.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llm_template_int.h"


#define LLM_TPL_CHUNK         (64 * 1024)
#define LLM_TPL_PARSE_MEMORY  (256 * 1024 * 1024)

struct llm_tpl_chunk_s {
    llm_tpl_chunk_t  *next;
    size_t            size;     /* usable bytes after the header */
    size_t            used;
};

/* chunk headers keep the data 16-byte aligned */
#define LLM_TPL_HDR  ((sizeof(llm_tpl_chunk_t) + 15) & ~(size_t) 15)


static int llm_tpl_set_var(llm_tpl_render_t *r, llm_tpl_frame_t *f,
    const char *name, const llm_tpl_val_t *v);
static int llm_tpl_render_err(llm_tpl_render_t *r, llm_err_t *err);
static int llm_tpl_read_file(const char *path, size_t max, char **out,
    size_t *len, llm_err_t *err);
static json_t *llm_tpl_load_json(const char *arg, const char *what,
    llm_err_t *err);
static void llm_tpl_print_err(const char *s);


void *
llm_tpl_alloc(llm_tpl_arena_t *a, size_t size)
{
    char             *p;
    size_t            csize, need;
    llm_tpl_chunk_t  *c;

    if (size > SIZE_MAX / 2) {
        return NULL;
    }

    size = (size + 15) & ~(size_t) 15;
    if (size == 0) {
        size = 16;
    }

    c = a->head;
    if (c != NULL && c->size - c->used >= size) {
        p = (char *) c + LLM_TPL_HDR + c->used;
        c->used += size;
        return p;
    }

    csize = size > LLM_TPL_CHUNK / 4 ? size : LLM_TPL_CHUNK;
    need = csize + LLM_TPL_HDR;

    if (a->limit != 0 && (need > a->limit || a->total > a->limit - need)) {
        return NULL;
    }

    c = malloc(need);
    if (c == NULL) {
        a->oom = 1;
        return NULL;
    }

    a->total += need;
    c->size = csize;
    c->used = size;

    /* a large block goes behind the head, whose free space stays usable */
    if (csize != LLM_TPL_CHUNK && a->head != NULL) {
        c->next = a->head->next;
        a->head->next = c;

    } else {
        c->next = a->head;
        a->head = c;
    }

    return (char *) c + LLM_TPL_HDR;
}


void *
llm_tpl_calloc(llm_tpl_arena_t *a, size_t n, size_t size)
{
    void    *p;
    size_t   total;

    if (llm_mul_size(n, size, &total) != 0) {
        return NULL;
    }

    p = llm_tpl_alloc(a, total);
    if (p == NULL) {
        return NULL;
    }

    memset(p, 0, total);
    return p;
}


void
llm_tpl_arena_free(llm_tpl_arena_t *a)
{
    llm_tpl_chunk_t  *c, *next;

    for (c = a->head; c != NULL; c = next) {
        next = c->next;
        free(c);
    }

    a->head = NULL;
    a->total = 0;
}


int
llm_template_parse(llm_template_t **out, const char *src, size_t len,
    llm_err_t *err)
{
    int                rc;
    llm_template_t    *t;
    llm_tpl_parser_t   p;

    *out = NULL;

    if (src == NULL && len != 0) {
        return llm_err_set(err, LLM_EINVAL, "template: no source");
    }

    if (len > LLM_TEMPLATE_MAX_SRC) {
        return llm_err_set(err, LLM_EFORMAT,
                           "template is %zu bytes, more than the %d allowed",
                           len, LLM_TEMPLATE_MAX_SRC);
    }

    t = calloc(1, sizeof(llm_template_t));
    if (t == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "template: out of memory");
    }

    t->arena.limit = LLM_TPL_PARSE_MEMORY;

    memset(&p, 0, sizeof(p));
    p.arena = &t->arena;
    p.err = err;

    rc = llm_tpl_lex(&p, src == NULL ? "" : src, len);
    if (rc == LLM_OK) {
        rc = llm_tpl_parse_body(&p, &t->body, &t->nbody);
    }

    free(p.toks);

    if (rc != LLM_OK) {
        llm_template_free(t);
        return LLM_ERR;
    }

    *out = t;
    return LLM_OK;
}


void
llm_template_free(llm_template_t *t)
{
    if (t == NULL) {
        return;
    }

    llm_tpl_arena_free(&t->arena);
    free(t);
}


int
llm_template_render(const llm_template_t *t,
    const llm_template_vars_t *vars, char **out, size_t *out_len,
    llm_err_t *err)
{
    int                 rc;
    char               *s;
    time_t              now;
    const char         *key, *tok;
    json_t             *jv;
    llm_tpl_val_t       v;
    llm_tpl_buf_t       buf;
    llm_tpl_frame_t    *top;
    llm_tpl_render_t   *r;

    *out = NULL;
    *out_len = 0;

    if (t == NULL || vars == NULL) {
        return llm_err_set(err, LLM_EINVAL, "template: no template");
    }

    r = calloc(1, sizeof(llm_tpl_render_t));
    if (r == NULL) {
        return llm_err_set(err, LLM_ENOMEM, "template: out of memory");
    }

    r->arena.limit = vars->max_memory ? vars->max_memory
                                      : LLM_TEMPLATE_MAX_MEMORY;
    r->max_steps = vars->max_steps ? vars->max_steps
                                   : LLM_TEMPLATE_MAX_STEPS;
    r->max_output = vars->max_output ? vars->max_output
                                     : LLM_TEMPLATE_MAX_OUTPUT;

    if (vars->date != NULL) {
        if (llm_tpl_parse_date(vars->date, &r->date) != LLM_OK) {
            free(r);
            return llm_err_set(err, LLM_EINVAL,
                               "template: cannot parse the date \"%.64s\"",
                               vars->date);
        }

    } else {
        now = time(NULL);
        if (localtime_r(&now, &r->date) == NULL) {
            memset(&r->date, 0, sizeof(struct tm));
            r->date.tm_mday = 1;
            r->date.tm_year = 70;
        }
    }

    rc = LLM_ERR;
    memset(&buf, 0, sizeof(buf));

    r->globals = llm_tpl_frame_new(r, NULL);
    if (r->globals == NULL || llm_tpl_add_globals(r, r->globals) != LLM_OK) {
        goto done;
    }

    if (vars->messages != NULL) {
        if (llm_tpl_from_json(r, vars->messages, &v, 0) != LLM_OK) {
            goto done;
        }

    } else {
        v = llm_tpl_v_list(llm_tpl_list_new(r, 0));
        if (v.u.list == NULL) {
            goto done;
        }
    }

    if (llm_tpl_set_var(r, r->globals, "messages", &v) != LLM_OK) {
        goto done;
    }

    tok = vars->bos_token ? vars->bos_token : "";
    v = llm_tpl_v_str(tok, strlen(tok));
    if (llm_tpl_set_var(r, r->globals, "bos_token", &v) != LLM_OK) {
        goto done;
    }

    tok = vars->eos_token ? vars->eos_token : "";
    v = llm_tpl_v_str(tok, strlen(tok));
    if (llm_tpl_set_var(r, r->globals, "eos_token", &v) != LLM_OK) {
        goto done;
    }

    v = llm_tpl_v_bool(vars->add_generation_prompt);
    if (llm_tpl_set_var(r, r->globals, "add_generation_prompt", &v)
        != LLM_OK)
    {
        goto done;
    }

    v = llm_tpl_v_none();
    if (llm_tpl_set_var(r, r->globals, "tools", &v) != LLM_OK) {
        goto done;
    }

    if (vars->extra != NULL) {
        if (!json_is_object(vars->extra)) {
            llm_tpl_fail(r, "template variables must be a JSON object");
            goto done;
        }

        json_object_foreach(vars->extra, key, jv) {
            if (llm_tpl_from_json(r, jv, &v, 0) != LLM_OK
                || llm_tpl_set_var(r, r->globals, key, &v) != LLM_OK)
            {
                goto done;
            }
        }
    }

    top = llm_tpl_frame_new(r, r->globals);
    if (top == NULL) {
        goto done;
    }

    r->out = &buf;

    rc = llm_tpl_exec(r, top, t->body, t->nbody);
    if (rc == LLM_ERR) {
        goto done;
    }

    /* the parser lets break and continue appear only inside loops */
    rc = LLM_ERR;

    s = malloc(buf.len + 1);
    if (s == NULL) {
        r->nomem = 1;
        llm_tpl_fail(r, "template: out of memory");
        goto done;
    }

    if (buf.len) {
        memcpy(s, buf.p, buf.len);
    }
    s[buf.len] = '\0';

    *out = s;
    *out_len = buf.len;
    rc = LLM_OK;

done:

    if (rc != LLM_OK) {
        llm_tpl_render_err(r, err);
    }

    llm_tpl_arena_free(&r->arena);
    free(r);

    return rc;
}


static int
llm_tpl_set_var(llm_tpl_render_t *r, llm_tpl_frame_t *f, const char *name,
    const llm_tpl_val_t *v)
{
    llm_tpl_str_t  s;

    s.p = name;
    s.len = strlen(name);

    return llm_tpl_frame_set(r, f, s, v);
}


static int
llm_tpl_render_err(llm_tpl_render_t *r, llm_err_t *err)
{
    if (!r->failed) {
        return llm_err_set(err, LLM_EFORMAT, "template: render failed");
    }

    if (r->raised) {
        return llm_err_set(err, LLM_EINVAL, "%s", r->msg);
    }

    if (r->nomem || r->arena.oom) {
        return llm_err_set(err, LLM_ENOMEM, "template: out of memory");
    }

    if (r->line > 0) {
        return llm_err_set(err, LLM_EFORMAT, "template line %d: %s",
                           r->line, r->msg);
    }

    return llm_err_set(err, LLM_EFORMAT, "template: %s", r->msg);
}


/* ---- the render command ----------------------------------------------- */

static const char  llm_tpl_usage[] =
    "usage: llm-engine render --template FILE --messages JSON|@FILE\n"
    "           [--bos S] [--eos S] [--date D] [--vars JSON|@FILE]\n"
    "           [--no-generation-prompt]\n";


int
llm_template_render_main(int argc, char **argv)
{
    int                   i, rc, gen;
    char                 *src, *out, *arg, *val;
    size_t                len, out_len, n;
    json_t               *messages, *extra;
    llm_err_t             err;
    const char           *tpl_path, *msgs, *bos, *eos, *date, *xvars;
    llm_template_t       *t;
    llm_template_vars_t   vars;

    static const char  *opts[] = {
        "--template", "--messages", "--bos", "--eos", "--date", "--vars"
    };
    const char        **dest[] = {
        &tpl_path, &msgs, &bos, &eos, &date, &xvars
    };

    tpl_path = msgs = bos = eos = date = xvars = NULL;
    gen = 1;

    for (i = 1; i < argc; i++) {
        arg = argv[i];

        if (strcmp(arg, "--no-generation-prompt") == 0) {
            gen = 0;
            continue;
        }

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(llm_tpl_usage, stdout);
            return 0;
        }

        val = NULL;

        for (n = 0; n < sizeof(opts) / sizeof(opts[0]); n++) {
            len = strlen(opts[n]);

            if (strncmp(arg, opts[n], len) != 0) {
                continue;
            }

            if (arg[len] == '=') {
                val = arg + len + 1;
                break;
            }

            if (arg[len] == '\0' && i + 1 < argc) {
                val = argv[++i];
                break;
            }
        }

        if (val == NULL) {
            fprintf(stderr, "render: bad argument \"%s\"\n%s", arg,
                    llm_tpl_usage);
            return 2;
        }

        *dest[n] = val;
    }

    if (tpl_path == NULL || msgs == NULL) {
        fputs(llm_tpl_usage, stderr);
        return 2;
    }

    memset(&err, 0, sizeof(err));

    if (llm_tpl_read_file(tpl_path, LLM_TEMPLATE_MAX_SRC, &src, &len, &err)
        != LLM_OK)
    {
        llm_tpl_print_err(err.errstr);
        return 1;
    }

    messages = llm_tpl_load_json(msgs, "messages", &err);
    if (messages == NULL) {
        free(src);
        llm_tpl_print_err(err.errstr);
        return 1;
    }

    extra = NULL;

    if (xvars != NULL) {
        extra = llm_tpl_load_json(xvars, "vars", &err);
        if (extra == NULL || !json_is_object(extra)) {
            if (extra != NULL) {
                llm_err_set(&err, LLM_EINVAL,
                            "render: --vars must be a JSON object");
            }
            json_decref(extra);
            json_decref(messages);
            free(src);
            llm_tpl_print_err(err.errstr);
            return 1;
        }
    }

    rc = 1;
    out = NULL;

    if (llm_template_parse(&t, src, len, &err) == LLM_OK) {
        memset(&vars, 0, sizeof(vars));
        vars.messages = messages;
        vars.bos_token = bos;
        vars.eos_token = eos;
        vars.add_generation_prompt = gen;
        vars.date = date;
        vars.extra = extra;

        if (llm_template_render(t, &vars, &out, &out_len, &err) == LLM_OK) {
            rc = 0;
        }

        llm_template_free(t);
    }

    if (rc == 0) {
        if (fwrite(out, 1, out_len, stdout) != out_len
            || fflush(stdout) != 0)
        {
            llm_tpl_print_err("render: cannot write the output");
            rc = 1;
        }

    } else {
        llm_tpl_print_err(err.errstr);
    }

    free(out);
    json_decref(extra);
    json_decref(messages);
    free(src);

    return rc;
}


static int
llm_tpl_read_file(const char *path, size_t max, char **out, size_t *len,
    llm_err_t *err)
{
    char    *buf;
    FILE    *fp;
    size_t   n;

    *out = NULL;
    *len = 0;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        return llm_err_set(err, LLM_EIO, "render: cannot open \"%s\": %s",
                           path, strerror(errno));
    }

    buf = malloc(max + 1);
    if (buf == NULL) {
        fclose(fp);
        return llm_err_set(err, LLM_ENOMEM, "render: out of memory");
    }

    n = fread(buf, 1, max + 1, fp);

    if (ferror(fp)) {
        fclose(fp);
        free(buf);
        return llm_err_set(err, LLM_EIO, "render: cannot read \"%s\"",
                           path);
    }

    fclose(fp);

    if (n > max) {
        free(buf);
        return llm_err_set(err, LLM_EFORMAT,
                           "render: \"%s\" is larger than %zu bytes",
                           path, max);
    }

    buf[n] = '\0';
    *out = buf;
    *len = n;

    return LLM_OK;
}


/* JSON text, or "@FILE" to read it from a file */
static json_t *
llm_tpl_load_json(const char *arg, const char *what, llm_err_t *err)
{
    char          *text;
    size_t         len;
    json_t        *j;
    json_error_t   jerr;

    if (arg[0] == '@') {
        if (llm_tpl_read_file(arg + 1, 64 * 1024 * 1024, &text, &len, err)
            != LLM_OK)
        {
            return NULL;
        }

        j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        free(text);

    } else {
        j = json_loadb(arg, strlen(arg), JSON_REJECT_DUPLICATES, &jerr);
    }

    if (j == NULL) {
        llm_err_set(err, LLM_EFORMAT, "render: bad %s JSON: line %d: %s",
                    what, jerr.line, jerr.text);
    }

    return j;
}


static void
llm_tpl_print_err(const char *s)
{
    char  c;

    for ( /* void */ ; *s != '\0'; s++) {
        c = *s;
        fputc(c == '\n' || c == '\r' ? ' ' : c, stderr);
    }

    fputc('\n', stderr);
}
