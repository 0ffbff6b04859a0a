/*
 * Copyright (C) ngx_llm developers
 *
 * libFuzzer target for the chat template interpreter (make fuzz).
 *
 * An input is template text, a NUL byte, then JSON: an array of
 * messages, or an object of variables with the messages inside.  With
 * no NUL the whole input is a template, rendered with one user message.
 * Parsing and rendering must fail cleanly, never crash, leak or hang.
 *
 * Built with -DLLM_TEMPLATE_SEED_MAIN this file is instead the program
 * that writes the seed corpus (the chat fixtures, plus a few templates
 * that use the rest of the language) and a libFuzzer dictionary.
 */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llm_template.h"

#include "fuzz_seed.h"


#ifndef LLM_TEMPLATE_SEED_MAIN

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                 *out;
    size_t                tlen, out_len;
    json_t               *j, *messages;
    llm_err_t             err;
    const uint8_t        *nul;
    llm_template_t       *t;
    llm_template_vars_t   vars;

    static const char  one[] = "[{\"role\": \"user\", \"content\": \"hi\"}]";

    nul = memchr(data, '\0', size);
    tlen = nul != NULL ? (size_t) (nul - data) : size;

    if (nul != NULL) {
        j = json_loadb((const char *) nul + 1, size - tlen - 1,
                       JSON_DECODE_ANY, NULL);
    } else {
        j = json_loads(one, 0, NULL);
    }

    memset(&vars, 0, sizeof(vars));
    messages = j;

    if (json_is_object(j)) {
        messages = json_object_get(j, "messages");
        vars.extra = j;
    }

    vars.messages = messages;
    vars.bos_token = "<s>";
    vars.eos_token = "</s>";
    vars.date = "15 Jan 2026";
    vars.add_generation_prompt = (int) (size & 1);

    /* tight limits keep each run fast; hitting one is a clean error */
    vars.max_output = 256 * 1024;
    vars.max_memory = 16 * 1024 * 1024;
    vars.max_steps = 100000;

    memset(&err, 0, sizeof(err));

    if (llm_template_parse(&t, (const char *) data, tlen, &err) == LLM_OK) {
        out = NULL;

        if (llm_template_render(t, &vars, &out, &out_len, &err) == LLM_OK) {
            /* the result is one string of exactly out_len bytes */
            if (out == NULL || out[out_len] != '\0') {
                abort();
            }

        } else if (out != NULL || err.err == 0 || err.errstr[0] == '\0') {
            abort();
        }

        free(out);
        llm_template_free(t);

    } else if (t != NULL || err.err == 0) {
        abort();
    }

    json_decref(j);

    return 0;
}


#else /* LLM_TEMPLATE_SEED_MAIN */


/* seeds for what the fixtures do not use */
static const char *const  seeds[] = {
    "{% macro m(a, b=2) %}{{ a }}{{ b }}{{ varargs }}{{ kwargs }}"
    "{% endmacro %}{{ m(1) }}{{ m(1, 3, 4, x=5) }}"
    "{% call(v) m(7) %}{{ caller() }}{% endcall %}",
    "{% set ns = namespace(n=0) %}{% for x in messages if x.role %}"
    "{% set ns.n = ns.n + loop.index %}{{ loop.previtem }}{{ loop.nextitem }}"
    "{% if loop.last %}{% break %}{% endif %}{% else %}none{% endfor %}"
    "{{ ns.n }}",
    "{{ 'abc'[::-1] }}{{ [1, 2, 3][1:] }}{{ 'h\xc3\xa9llo'[1:3] }}"
    "{{ 7 // 2 }}{{ -7 % 3 }}{{ 2 ** 10 }}{{ 1 / 3 }}{{ 'a' ~ 1 }}",
    "{{ messages | tojson(indent=2) }}{{ messages | map(attribute='role')"
    " | unique | list }}{{ messages | selectattr('role', 'equalto', 'user')"
    " | list | length }}{{ messages | sort(attribute='role') | first }}",
    "{{ ' a b '.split() }}{{ 'x'.strip('x') }}{{ '{} {:>4}'.format(1, 2) }}"
    "{{ '%s %5.2f' % ('a', 1.5) }}{{ 'ab' | replace('a', 'b') | upper }}",
    "{% for k, v in {'a': 1}.items() %}{{ k }}{{ v }}{% endfor %}"
    "{{ x is defined }}{{ 3 is divisibleby 3 }}{{ none is none }}"
    "{{ 'a' if true else 'b' }}{{ strftime_now('%d %B %Y') }}",
    "  {%- if true -%}\n  x\n  {%+ if 1 +%}\n{% endif %}{% endif %}\n"
    "{# c #}{% raw %}{{ y }}{% endraw %}{% filter upper %}z{% endfilter %}",
    "{% set x %}a{{ 1 }}{% endset %}{{ x | indent(2, true) }}"
    "{% with y = 2 %}{{ y | string | center(5) }}{% endwith %}"
    "{{ range(3) | join(',') }}{{ dict(a=1) | dictsort }}",
    "{{ raise_exception('stop') }}",
};


/* the template (a C string), then, with messages, its NUL and them */
static int
write_file(const char *path, const char *a, size_t alen, const char *b,
    size_t blen)
{
    return fuzz_seed_write(path, a, b != NULL ? alen + 1 : alen, b, blen);
}


static void
write_dict(FILE *fp)
{
    size_t       i;
    const char  *p;

    static const char *const  words[] = {
        "{{", "}}", "{%", "%}", "{#", "#}", "{{-", "-}}", "{%-", "-%}",
        "{%+", "+%}", "if", "elif", "else", "endif", "for", "in", "endfor",
        "set", "endset", "macro", "endmacro", "call", "endcall", "caller",
        "filter", "endfilter", "with", "endwith", "raw", "endraw", "break",
        "continue", "generation", "endgeneration", "recursive", "is", "not",
        "and", "or", "none", "None", "true", "false", "namespace", "loop",
        "index0", "revindex", "first", "last", "length", "previtem",
        "nextitem", "cycle", "varargs", "kwargs", "messages", "message",
        "role", "content", "tool_calls", "add_generation_prompt",
        "bos_token", "eos_token", "tools", "range", "dict",
        "raise_exception", "strftime_now", "tojson", "indent", "trim",
        "join", "map", "attribute", "select", "reject", "selectattr",
        "rejectattr", "unique", "sort", "dictsort", "default", "items",
        "replace", "format", "split", "strip", "defined", "mapping",
        "string", "iterable", "sequence", "divisibleby", "equalto", "|",
        "~", "**", "//", "==", "!=", "[::-1]", "[1:]", "(", ")", "[", "]",
        ".", ",", ":", "=", "'", "\"", "\\n", "\\u00e9", "%s", "%d", "{}",
        "{0}", "%Y", "%B", "\xc3\xa9", NULL
    };

    for (i = 0; words[i] != NULL; i++) {
        fputc('"', fp);
        for (p = words[i]; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\') {
                fputc('\\', fp);
                fputc(*p, fp);
            } else if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
            {
                fprintf(fp, "\\x%02X", (unsigned char) *p);
            } else {
                fputc(*p, fp);
            }
        }
        fputs("\"\n", fp);
    }
}


int
main(int argc, char **argv)
{
    int             n;
    char            path[4096], *msgs;
    size_t          i, k, len;
    DIR            *d;
    FILE           *fp;
    json_t         *f, *c, *vars;
    const char     *text;
    struct dirent  *de;

    if (argc != 4) {
        fprintf(stderr, "usage: %s FIXTURES/chat CORPUS_DIR DICT\n", argv[0]);
        return 2;
    }

    n = 0;

    for (i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        snprintf(path, sizeof(path), "%s/seed-%zu", argv[2], i);
        if (write_file(path, seeds[i], strlen(seeds[i]), NULL, 0) != 0) {
            return 1;
        }
        n++;
    }

    d = opendir(argv[1]);
    if (d == NULL) {
        fprintf(stderr, "%s: no fixtures at %s, built-in seeds only\n",
                argv[0], argv[1]);
    }

    while (d != NULL && (de = readdir(d)) != NULL) {
        len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0) {
            continue;
        }

        snprintf(path, sizeof(path), "%s/%s", argv[1], de->d_name);
        f = json_load_file(path, 0, NULL);
        text = json_string_value(json_object_get(f, "template_text"));
        if (text == NULL) {
            json_decref(f);
            continue;
        }

        snprintf(path, sizeof(path), "%s/%.*s", argv[2], (int) (len - 5),
                 de->d_name);
        if (write_file(path, text, strlen(text), NULL, 0) == 0) {
            n++;
        }

        json_array_foreach(json_object_get(f, "cases"), k, c) {
            vars = json_pack("{s:O, s:O}", "messages",
                             json_object_get(c, "messages"),
                             "add_generation_prompt",
                             json_object_get(c, "add_generation_prompt"));
            msgs = vars != NULL ? json_dumps(vars, 0) : NULL;

            snprintf(path, sizeof(path), "%s/%.*s-%zu", argv[2],
                     (int) (len - 5), de->d_name, k);

            if (msgs != NULL
                && write_file(path, text, strlen(text), msgs, strlen(msgs))
                   == 0)
            {
                n++;
            }

            free(msgs);
            json_decref(vars);
        }

        json_decref(f);
    }

    if (d != NULL) {
        closedir(d);
    }

    fp = fopen(argv[3], "w");
    if (fp == NULL) {
        perror(argv[3]);
        return 1;
    }

    write_dict(fp);
    fclose(fp);

    printf("%d seeds in %s, dictionary %s\n", n, argv[2], argv[3]);
    return 0;
}


#endif /* LLM_TEMPLATE_SEED_MAIN */
