/*
 * Copyright (C) ngx_llm developers
 *
 * The template interpreter: every case of ../shared/fixtures/chat (real
 * models' chat templates rendered by jinja2 as HF does) must render
 * byte for byte, then focused cases of each language feature, limits
 * and errors.  Fixtures come from $LLM_FIXTURES or ../shared/fixtures.
 */

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "llm_template.h"


typedef struct {
    const char  *name;
    const char  *tpl;
    const char  *vars;      /* JSON object of variables, or NULL */
    const char  *want;      /* the rendering; NULL: an error is expected */
    const char  *err;       /* a part of the expected error message */
} tpl_case_t;


static const tpl_case_t  cases[] = {

    /* ---- whitespace control ---- */

    { "minus strips both sides",
      "a  {{- 'b' -}}  c", NULL, "abc", NULL },
    { "minus strips newlines too",
      "a\n\n{%- if true -%}\n\nb{% endif %}", NULL, "ab", NULL },
    { "trim_blocks eats the newline after a block tag",
      "{% if true %}\nx\n{% endif %}\ny", NULL, "x\ny", NULL },
    { "lstrip_blocks strips indentation before a block tag",
      "a\n    {% if true %}\n    b\n    {% endif %}\nc", NULL,
      "a\n    b\nc", NULL },
    { "lstrip_blocks at the start of the template",
      "  {% if true %}x{% endif %}", NULL, "x", NULL },
    { "lstrip_blocks keeps text before the tag on the line",
      "a  {% if true %}x{% endif %}", NULL, "a  x", NULL },
    { "expression tags are not lstripped or trimmed",
      "  {{ 'x' }}\ny", NULL, "  x\ny", NULL },
    { "plus keeps the indentation",
      "  {%+ if true %}x{% endif %}", NULL, "  x", NULL },
    { "plus keeps the newline",
      "{% if true +%}\nx{% endif %}", NULL, "\nx", NULL },
    { "comments vanish, and take their line with them",
      "a {# note #} b\n  {# line #}\nc", NULL, "a  b\nc", NULL },
    { "comment with minus",
      "a  {#- note -#}  b", NULL, "ab", NULL },
    { "raw block",
      "{% raw %}{{ x }}{% if %}{% endraw %}", NULL, "{{ x }}{% if %}",
      NULL },
    { "raw block keeps the newline after raw, trims after endraw",
      "{% raw %}\na{% endraw %}\nb", NULL, "\nab", NULL },
    { "one trailing newline is dropped",
      "x\n\n", NULL, "x\n", NULL },
    { "CRLF becomes LF",
      "a\r\nb\rc", NULL, "a\nb\nc", NULL },
    { "a loop body on its own lines",
      "{% for x in [1, 2] %}\n  {{ x }}\n{% endfor %}", NULL,
      "  1\n  2\n", NULL },

    /* ---- literals and printing ---- */

    { "scalars print as Python does",
      "{{ 1 }} {{ -2 }} {{ 1.5 }} {{ 'a' }} {{ \"b\" }} {{ true }}"
      " {{ False }} {{ none }} {{ None }}", NULL,
      "1 -2 1.5 a b True False None None", NULL },
    { "containers print as Python's repr",
      "{{ [1, 'a', none, true, 1.5] }} {{ {'k': 'v'} }} {{ (1,) }}"
      " {{ (1, 2) }} {{ () }}", NULL,
      "[1, 'a', None, True, 1.5] {'k': 'v'} (1,) (1, 2) ()", NULL },
    { "repr quotes",
      "{{ [\"it's\", 'a\\nb'] }}", NULL, "[\"it's\", 'a\\nb']", NULL },
    { "floats print shortest",
      "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 10 / 4 }} {{ 3 * 1.0 }} {{ 1e-5 }}",
      NULL, "0.30000000000000004 1e+16 2.5 3.0 1e-05", NULL },
    { "string escapes",
      "{{ 'a\\tb\\x41\\u00e9' }}", NULL, "a\tbA\xc3\xa9", NULL },
    { "adjacent strings join",
      "{{ 'a' 'b' \"c\" }}", NULL, "abc", NULL },
    { "integer literal forms",
      "{{ 0x1F }} {{ 1_000 }} {{ 0b101 }} {{ 1.5e3 }}", NULL,
      "31 1000 5 1500.0", NULL },

    /* ---- access ---- */

    { "attribute, item and index access",
      "{{ d.a.b[1] }}{{ d['a']['b'][-1] }}{{ d.a.b.0 }}",
      "{\"d\": {\"a\": {\"b\": [10, 20, 30]}}}", "203010", NULL },
    { "slices of strings and lists",
      "{{ 'hello'[1:3] }}|{{ 'hello'[::-1] }}|{{ [1, 2, 3, 4][::2] }}|"
      "{{ [1, 2, 3][-2:] }}|{{ [1, 2, 3, 4, 5][4:1:-2] }}|{{ 'abc'[5:] }}",
      NULL, "el|olleh|[1, 3]|[2, 3]|[5, 3]|", NULL },
    { "slices count characters, not bytes",
      "{{ 'h\xc3\xa9llo'[1:3] }}|{{ 'h\xc3\xa9llo'[::-1] }}|"
      "{{ 'h\xc3\xa9llo'[1] }}|{{ 'h\xc3\xa9llo'|length }}", NULL,
      "\xc3\xa9l|oll\xc3\xa9h|\xc3\xa9|5", NULL },
    { "dict methods win over keys with '.', keys win with []",
      "{{ d.items is defined }}{{ d['items'] }}",
      "{\"d\": {\"items\": 5}}", "True5", NULL },

    /* ---- operators ---- */

    { "in and not in",
      "{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in {'k': 1} }}"
      "{{ 'z' not in 'abc' }}{{ 'x' in nope }}", NULL,
      "TrueTrueTrueTrueFalse", NULL },
    { "comparisons chain",
      "{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ 1 == 1.0 }}{{ 'a' != 'b' }}"
      "{{ [1, 2] < [1, 3] }}{{ 'a' <= 'a' }}", NULL,
      "TrueFalseTrueTrueTrueTrue", NULL },
    { "and/or yield an operand",
      "{{ 0 or 'x' }}{{ 'a' and 'b' }}{{ none or [] }}{{ not 0 }}"
      "{{ not 'a' }}", NULL, "xb[]TrueFalse", NULL },
    { "arithmetic is Python's",
      "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }}"
      " {{ 2 ** 10 }} {{ 2 ** 3 ** 2 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }}"
      " {{ 7.5 // 2 }} {{ -1 - -1 }} {{ true + 1 }}", NULL,
      "3 -4 1 2 3.5 1024 64 7 9 3.0 0 2", NULL },
    { "concatenation",
      "{{ 'a' ~ 1 ~ none ~ nope }}{{ 'x' + 'y' }}{{ [1] + [2] }}"
      "{{ 'ab' * 2 }}{{ 2 * [0] }}", NULL,
      "a1Nonexy[1, 2]abab[0, 0]", NULL },
    { "conditional expressions",
      "{{ 'y' if 1 > 0 else 'n' }}{{ 'y' if 0 }}|{{ 'a' if false else"
      " 'b' if true else 'c' }}", NULL, "y|b", NULL },
    { "filters bind tighter than + and unary minus",
      "{{ 'a' + ' b '|trim }}{{ -1|abs }}{{ -x.y|abs }}",
      "{\"x\": {\"y\": 3}}", "ab13", NULL },
    { "printf-style %",
      "{{ '%s-%d-%.2f-%5s|%-4d|%x' % ('a', 3, 1.5, 'r', 7, 255) }}"
      "{{ '%(n)s' % {'n': 1} }}{{ '100%%' % () }}", NULL,
      "a-3-1.50-    r|7   |ff1100%", NULL },

    /* ---- regressions: fuzzer findings, differential tests ---- */

    { "fuzz: select and reject without a test name",
      "{{ [0, 1] | select | list }}{{ [0, 1] | reject | list }}"
      "{{ [] | select | list }}", NULL, "[1][0][]", NULL },
    { "a set block has its own scope",
      "{% set x = 5 %}{% set y %}{% set x = 1 %}{{ x }}{% endset %}"
      "{{ x }}{{ y }}", NULL, "51", NULL },
    { "a filter block has its own scope",
      "{% set x = 5 %}{% filter upper %}{% set x = 1 %}{% endfilter %}"
      "{{ x }}", NULL, "5", NULL },
    { "continue inside a set block skips the rest of the iteration",
      "{% for i in [1, 2] %}a{% set y %}{% if i == 2 %}{% continue %}"
      "{% endif %}{% endset %}b{% endfor %}", NULL, "aba", NULL },
    { "odd is value % 2 == 1",
      "{{ 1.5 is odd }}{{ -3 is odd }}{{ -4 is even }}{{ 3.0 is odd }}",
      NULL, "FalseTrueTrueTrue", NULL },
    { "lower and upper test str(value)",
      "{{ 3 is lower }}{{ none is upper }}{{ nope is lower }}", NULL,
      "FalseFalseFalse", NULL },
    { "select and map of a false value are empty",
      "{{ false | select | list }}{{ 0 | map('upper') | list }}"
      "{{ '' | selectattr('x') | list }}", NULL, "[][][]", NULL },
    { "int and float of undefined fail",
      "{{ nope | int(9) }}", NULL, NULL, "'nope' is undefined" },
    { "indent wants a string",
      "{{ 5 | indent }}", NULL, NULL, "unsupported operand" },
    { "argument-less tests take no argument",
      "{{ 'a' is false not in 'b' }}", NULL, NULL,
      "takes 1 positional argument" },
    { "% with a list right operand is a mapping",
      "{{ '' % [1, 2] }}{{ 'x' % {} }}|", NULL, "x|", NULL },

    /* ---- statements ---- */

    { "if, elif, else",
      "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two"
      "{% else %}many{% endif %} {% endfor %}", NULL,
      "one two many ", NULL },
    { "loop variables",
      "{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}"
      "{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}"
      "{{ loop.revindex0 }};{% endfor %}", NULL,
      "10TrueFalse332;21FalseFalse321;32FalseTrue310;", NULL },
    { "previtem and nextitem",
      "{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }};"
      "{% endfor %}", NULL, "-2;1-3;2-;", NULL },
    { "loop.cycle",
      "{% for i in range(4) %}{{ loop.cycle('a', 'b') }}{% endfor %}",
      NULL, "abab", NULL },
    { "for with a filter counts the kept items",
      "{% for x in [1, 2, 3, 4] if x is even %}{{ x }}/{{ loop.index }}/"
      "{{ loop.length }} {% endfor %}", NULL, "2/1/2 4/2/2 ", NULL },
    { "for else",
      "{% for x in [] %}x{% else %}empty{% endfor %}"
      "{% for x in [1] if false %}x{% else %}!{% endfor %}", NULL,
      "empty!", NULL },
    { "tuple unpacking",
      "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},"
      "{% endfor %}{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}"
      "{% endfor %}", NULL, "a=1,b=2,37", NULL },
    { "items filter, dict iteration, string iteration",
      "{% for k, v in d | items %}{{ k }}{{ v }}{% endfor %}|"
      "{% for k in d %}{{ k }}{% endfor %}|{% for c in 'xy' %}{{ c }}."
      "{% endfor %}", "{\"d\": {\"p\": 1, \"q\": 2}}", "p1q2|pq|x.y.",
      NULL },
    { "break and continue",
      "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}"
      "{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}", NULL,
      "013", NULL },
    { "nested loops",
      "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}"
      "{{ loop.index }}{% endfor %}{{ loop.index }}{% endfor %}", NULL,
      "1x11y212x12y22", NULL },
    { "set in a loop does not leak out",
      "{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + 10 %}{{ x }}"
      "{% endfor %}{{ x }}", NULL, "11111", NULL },
    { "set in an if does",
      "{% if true %}{% set y = 5 %}{% endif %}{{ y }}", NULL, "5", NULL },
    { "namespace carries values out of loops",
      "{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}"
      "{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}"
      "{{ ns.n }} {{ ns.s }}", NULL, "6 123", NULL },
    { "empty namespace, then attributes",
      "{% set ns = namespace() %}{% set ns.a = 'x' %}{{ ns.a }}"
      "{{ ns.b is defined }}{{ ns }}", NULL,
      "xFalse<Namespace {'a': 'x'}>", NULL },
    { "set with unpacking",
      "{% set a, b = [1, 2] %}{{ b }}{{ a }}", NULL, "21", NULL },
    { "block set, with a filter",
      "{% set x %}hello {{ 'world' }}{% endset %}{{ x | upper }}"
      "{% set y | trim %}  pad  {% endset %}[{{ y }}]", NULL,
      "HELLO WORLD[pad]", NULL },
    { "with",
      "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a is defined }}",
      NULL, "3False", NULL },
    { "filter block",
      "{% filter upper %}ab{{ 'c' }}{% endfilter %}", NULL, "ABC",
      NULL },
    { "generation block renders its body",
      "{% generation %}x{% endgeneration %}", NULL, "x", NULL },

    /* ---- macros ---- */

    { "macro with defaults and keywords",
      "{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!"
      "{% endmacro %}{{ greet('Bob') }} {{ greet('Ann', greeting='Hi') }}",
      NULL, "Hello, Bob! Hi, Ann!", NULL },
    { "macro varargs and kwargs",
      "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}"
      "{{ m(1, 2, x=3) }}", NULL, "1(2,){'x': 3}", NULL },
    { "macro sees template variables, not the caller's loop",
      "{% macro m() %}{{ bos_token }}{{ i is defined }}{% endmacro %}"
      "{% for i in [1] %}{{ m() }}{% endfor %}", NULL, "<s>False", NULL },
    { "missing macro argument is undefined",
      "{% macro m(a, b) %}[{{ b }}]{% endmacro %}{{ m(1) }}", NULL, "[]",
      NULL },
    { "call block and caller()",
      "{% macro wrap() %}[{{ caller() }}]{% endmacro %}"
      "{% call wrap() %}inner{% endcall %}", NULL, "[inner]", NULL },
    { "call block with arguments",
      "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}"
      "{% endmacro %}{% call(v) each([1, 2]) %}<{{ v }}>{% endcall %}",
      NULL, "<1><2>", NULL },
    { "recursive macro",
      "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}"
      "{% endmacro %}{{ f(3) }}", NULL, "321", NULL },

    /* ---- tests ---- */

    { "type tests",
      "{{ x is defined }}{{ x is undefined }}{{ none is none }}"
      "{{ 'a' is string }}{{ 1 is number }}{{ 1.5 is number }}"
      "{{ 1 is integer }}{{ 1.0 is integer }}{{ 1.0 is float }}"
      "{{ true is number }}{{ true is integer }}", NULL,
      "FalseTrueTrueTrueTrueTrueTrueFalseTrueTrueFalse", NULL },
    { "container tests",
      "{{ {} is mapping }}{{ [] is mapping }}{{ [] is iterable }}"
      "{{ 'a' is iterable }}{{ 1 is iterable }}{{ [] is sequence }}"
      "{{ 'a' is sequence }}{{ nope is iterable }}", NULL,
      "TrueFalseTrueTrueFalseTrueTrueTrue", NULL },
    { "boolean tests",
      "{{ true is boolean }}{{ 1 is boolean }}{{ true is true }}"
      "{{ false is false }}{{ 0 is false }}{{ 1 is true }}", NULL,
      "TrueFalseTrueTrueFalseFalse", NULL },
    { "number tests, with and without parentheses",
      "{{ 4 is even }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}"
      "{{ 9 is divisibleby(4) }}{{ x is not defined }}"
      "{{ 1 is not none }}", NULL, "TrueTrueTrueFalseTrueTrue", NULL },
    { "comparison tests",
      "{{ 2 is eq 2 }}{{ 2 is equalto 3 }}{{ 'a' is in 'abc' }}"
      "{{ 3 is gt 2 }}{{ 3 is lt 2 }}{{ 'ab' is lower }}"
      "{{ 'AB' is upper }}{{ 'x' is callable }}", NULL,
      "TrueFalseTrueTrueFalseTrueTrueFalse", NULL },

    /* ---- undefined ---- */

    { "undefined is empty, falsy, iterable and has no length",
      "[{{ nope }}]{{ nope is defined }}{% if not nope %}falsy{% endif %}"
      "{% for x in nope %}x{% endfor %}{{ nope | length }}", NULL,
      "[]Falsefalsy0", NULL },
    { "missing keys and attributes are undefined",
      "{{ messages[0].missing is defined }}{{ 'abc'.nothing is defined }}"
      "{{ none.x is defined }}{{ [1][5] is defined }}{{ {}['k'] }}|", NULL,
      "FalseFalseFalseFalse|", NULL },
    { "an attribute of undefined is an error, as in jinja2",
      "{{ nope.attr }}", NULL, NULL, "'nope' is undefined" },
    { "arithmetic on undefined is an error",
      "{{ nope + 1 }}", NULL, NULL, "'nope' is undefined" },
    { "calling undefined is an error",
      "{{ nope() }}", NULL, NULL, "'nope' is undefined" },

    /* ---- string methods ---- */

    { "strip family",
      "{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  x'.lstrip() }}"
      "|{{ 'x  '.rstrip() }}|{{ '\\n\\nx'.lstrip('\\n') }}|"
      "{{ '\xc2\xa0x\xe3\x80\x80'.strip() }}", NULL,
      "x|hi|x|x|x|x", NULL },
    { "split and rsplit",
      "{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}"
      "{{ 'a b c'.split(' ', 1) }}{{ 'a b c'.rsplit(' ', 1) }}"
      "{{ 'x</think>y'.split('</think>')[-1] }}{{ ' a b '.split(None, 1) }}",
      NULL, "['a', 'b', '', 'c']['a', 'b']['a', 'b c']['a b', 'c']y"
      "['a', 'b ']", NULL },
    { "startswith, endswith, case, replace",
      "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}"
      "{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ 'hello world'.title() }}|"
      "{{ \"they're\".title() }}|{{ 'hELLO'.capitalize() }}|"
      "{{ 'a-b-c'.replace('-', '+', 1) }}|{{ 'ab'.replace('', '.') }}",
      NULL, "TrueTrueHIhi|Hello World|They'Re|Hello|a+b-c|.a.b.", NULL },
    { "format, find, count, join",
      "{{ '{} {}'.format('a', 1) }}|{{ '{0}{1}{0}'.format('x', 'y') }}|"
      "{{ '{name}:{n:>3}|{f:.2f}'.format(name='k', n=5, f=2.5) }}|"
      "{{ 'abcb'.find('b') }}{{ 'abcb'.rfind('b') }}{{ 'abcb'.find('z') }}"
      "|{{ 'abab'.count('ab') }}|{{ '-'.join(['a', 'b']) }}", NULL,
      "a 1|xyx|k:  5|2.50|13-1|2|a-b", NULL },
    { "is-methods",
      "{{ '12'.isdigit() }}{{ 'a1'.isdigit() }}{{ 'ab'.isalpha() }}"
      "{{ ' '.isspace() }}{{ ''.isspace() }}{{ 'ab'.islower() }}"
      "{{ 'A1'.isupper() }}", NULL,
      "TrueFalseTrueTrueFalseTrueTrue", NULL },
    { "non-ASCII case mapping",
      "{{ '\xc3\xa9t\xc3\xa9'.upper() }} {{ '\xc3\x89T\xc3\x89'|lower }}"
      " {{ '\xce\xb1\xce\xb2'|upper }} {{ 'stra\xc3\x9f' | upper }}", NULL,
      "\xc3\x89T\xc3\x89 \xc3\xa9t\xc3\xa9 \xce\x91\xce\x92 STRASS", NULL },
    { "dict methods",
      "{% set d = {'a': 1, 'b': 2} %}{{ d.keys() | list }}"
      "{{ d.values() | list }}{{ d.get('a') }}{{ d.get('z', 'def') }}"
      "{{ d.get('z') }}{{ d.items() | list }}", NULL,
      "['a', 'b'][1, 2]1defNone[('a', 1), ('b', 2)]", NULL },
    { "list methods",
      "{{ [1, 2, 1].count(1) }}{{ ['a', 'b'].index('b') }}", NULL, "21",
      NULL },

    /* ---- filters ---- */

    { "trim, length, count",
      "{{ '  ab '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ [1, 2]|count }}|"
      "{{ {'a': 1}|length }}", NULL, "ab|a|2|1", NULL },
    { "tojson keeps non-ASCII and uses Python's separators",
      "{{ {'a': [1, 2.0, '\xc3\xa9\"<&>'], 'b': none, 'c': true} | tojson }}",
      NULL, "{\"a\": [1, 2.0, \"\xc3\xa9\\\"<&>\"], \"b\": null,"
      " \"c\": true}", NULL },
    { "tojson escapes control characters",
      "{{ 'a\\nb\\\\c\\t\\x01' | tojson }}", NULL,
      "\"a\\nb\\\\c\\t\\u0001\"", NULL },
    { "tojson with indent",
      "{{ {'a': [1, 2], 'b': {}, 'c': []} | tojson(indent=2) }}", NULL,
      "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {},\n  \"c\": []\n}",
      NULL },
    { "tojson with sort_keys, ensure_ascii, separators",
      "{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}"
      "{{ '\xc3\xa9' | tojson(ensure_ascii=true) }}"
      "{{ [1, {'k': 2}] | tojson(separators=(',', ':')) }}", NULL,
      "{\"a\": 2, \"b\": 1}\"\\u00e9\"[1,{\"k\":2}]", NULL },
    { "tojson of JSON input",
      "{{ tools | tojson }}",
      "{\"tools\": [{\"name\": \"f\", \"n\": 1.5, \"ok\": false}]}",
      "[{\"name\": \"f\", \"n\": 1.5, \"ok\": false}]", NULL },
    { "join",
      "{{ [1, 'a', none] | join(', ') }}|{{ [{'n': 'x'}, {'n': 'y'}] |"
      " join('-', attribute='n') }}|{{ 'abc' | join('.') }}", NULL,
      "1, a, None|x-y|a.b.c", NULL },
    { "case filters",
      "{{ 'hello WORLD'|capitalize }}|{{ 'hello-world foo'|title }}|"
      "{{ \"they're\"|title }}|{{ 'Ab'|upper }}{{ 'Ab'|lower }}", NULL,
      "Hello world|Hello-World Foo|They're|ABab", NULL },
    { "replace",
      "{{ 'aaa'|replace('a', 'b', 2) }}{{ 'abc'|replace('b', '') }}", NULL,
      "bbaac", NULL },
    { "default and d",
      "{{ nope | default('d') }}|{{ '' | default('d') }}|"
      "{{ '' | default('d', true) }}|{{ none | d('x') }}|"
      "{{ 0 | d('z', boolean=true) }}", NULL, "d||d|None|z", NULL },
    { "first, last",
      "{{ [1, 2, 3]|first }}{{ [1, 2, 3]|last }}{{ 'abc'|first }}"
      "{{ 'abc'|last }}{{ []|first }}", NULL, "13ac", NULL },
    { "conversions",
      "{{ 'ab'|list }}|{{ 12|string ~ 'x' }}|{{ '42'|int + 1 }}|"
      "{{ '3.7'|int }}|{{ 'x'|int(7) }}|{{ '2.5'|float }}|{{ -3|abs }}|"
      "{{ 2.5|round }}|{{ 3.14159|round(2) }}|{{ 2.1|round(0, 'ceil') }}|"
      "{{ 7|round }}|{{ ' 0x1f '|int(0, 16) }}", NULL,
      "['a', 'b']|12x|43|3|7|2.5|3|2.0|3.14|3.0|7|31", NULL },
    { "selectattr, rejectattr, map",
      "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='c')"
      " | list }}{{ ms | rejectattr('role', 'eq', 'user') |"
      " map(attribute='c') | join }}{{ ms | selectattr('x') | list }}"
      "{{ ms | map(attribute='x', default=0) | list }}",
      "{\"ms\": [{\"role\": \"user\", \"c\": 1}, {\"role\": \"assistant\","
      " \"c\": 2}, {\"role\": \"user\", \"c\": 3, \"x\": true}]}",
      "[1, 3]2[{'role': 'user', 'c': 3, 'x': True}][0, 0, True]", NULL },
    { "select, reject, map with a filter",
      "{{ [1, 2, 3, 4] | select('odd') | list }}"
      "{{ [0, 1, '', 2] | select | list }}"
      "{{ [1, 2, 3] | reject('even') | list }}"
      "{{ ['a', 'b'] | map('upper') | join }}"
      "{{ ['code', 'x'] | reject('equalto', 'code') | list }}", NULL,
      "[1, 3][1, 2][1, 3]AB['x']", NULL },
    { "unique, sort, dictsort",
      "{{ [1, 2, 1, 'A', 'a'] | unique | list }}{{ [3, 1, 2] | sort }}"
      "{{ ['b', 'A', 'a'] | sort }}{{ [3, 1, 2] | sort(reverse=true) }}"
      "{{ {'b': 1, 'a': 2} | dictsort }}"
      "{{ [{'k': 2}, {'k': 1}] | sort(attribute='k') | map(attribute='k')"
      " | list }}", NULL,
      "[1, 2, 'A'][1, 2, 3]['A', 'a', 'b'][3, 2, 1][('a', 2), ('b', 1)]"
      "[1, 2]", NULL },
    { "escape",
      "{{ '<a href=\"x\">&\\'</a>' | e }}{{ none | escape }}", NULL,
      "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt;None", NULL },
    { "indent",
      "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}|"
      "{{ 'a\\n\\nb' | indent('> ', blank=true) }}", NULL,
      "a\n  b\n\n  c|  a\n  b|a\n> \n> b", NULL },
    { "wordcount, reverse, sum, min, max",
      "{{ 'Hello, wide world!' | wordcount }}{{ 'abc'|reverse }}"
      "{{ [1, 2]|reverse|list }}{{ [1, 2, 3]|sum }}{{ [3, 1, 2]|min }}"
      "{{ [3, 1, 2]|max }}", NULL, "3cba[2, 1]613", NULL },
    { "format filter, safe, attr",
      "{{ '%s!' | format('hi') }}{{ '<b>' | safe }}"
      "{{ {'k': 'v'} | attr('k') }}|{{ namespace(k=1) | attr('k') }}",
      NULL, "hi!<b>|1", NULL },

    /* ---- globals ---- */

    { "render variables",
      "{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}"
      "{{ messages | length }}{{ tools }}", NULL, "<s></s>True1None", NULL },
    { "strftime_now formats the configured date",
      "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d') }}|"
      "{{ strftime_now('%B %-d, %A') }}|{{ strftime_now('%j %a %y %%') }}",
      NULL, "15 Jan 2026|2026-01-15|January 15, Thursday|015 Thu 26 %",
      NULL },
    { "range, dict, namespace",
      "{{ range(3) | list }}{{ range(1, 10, 4) | list }}"
      "{{ range(5, 0, -2) | list }}{{ dict(a=1) }}"
      "{{ namespace(x=2).x }}", NULL,
      "[0, 1, 2][1, 5, 9][5, 3, 1]{'a': 1}2", NULL },
    { "variables override the defaults",
      "{{ tools | length }}{{ add_generation_prompt }}",
      "{\"tools\": [1, 2], \"add_generation_prompt\": false}", "2False",
      NULL },

    /* ---- errors at render time ---- */

    { "division by zero",
      "{{ 1 / 0 }}", NULL, NULL, "division by zero" },
    { "integer division by zero",
      "{{ 1 // 0 }}", NULL, NULL, "integer division or modulo by zero" },
    { "modulo by zero",
      "{{ 1 % 0 }}", NULL, NULL, "integer division or modulo by zero" },
    { "str + int",
      "{{ 'a' + 1 }}", NULL, NULL, "can only concatenate str" },
    { "ints are 64-bit, and overflow is an error",
      "{{ 9223372036854775807 + 1 }}", NULL, NULL, "integer overflow" },
    { "the sandbox refuses list.append",
      "{% set l = [] %}{{ l.append(1) }}", NULL, NULL,
      "access to attribute 'append' of 'list' object is unsafe." },
    { "the sandbox refuses dict.update",
      "{% set d = {} %}{{ d.update({}) }}", NULL, NULL,
      "access to attribute 'update' of 'dict' object is unsafe." },
    { "attribute assignment needs a namespace",
      "{% set x = 1 %}{% set x.a = 2 %}", NULL, NULL, "non-namespace" },
    { "unpacking counts",
      "{% set a, b = [1, 2, 3] %}", NULL, NULL, "too many values" },
    { "ordering mixed types",
      "{{ 1 < 'a' }}", NULL, NULL, "not supported between" },
    { "runtime errors name the line",
      "a\nb\n{{ 1 / 0 }}", NULL, NULL, "line 3: division by zero" },
    { "not iterable",
      "{% for x in 5 %}{% endfor %}", NULL, NULL, "not iterable" },
    { "range too big",
      "{{ range(1000000) | length }}", NULL, NULL, "Range too big" },
    { "recursion is bounded",
      "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, NULL,
      "macro calls nested" },
    { "items of a list",
      "{{ [1] | items }}", NULL, NULL, "Can only get item pairs" },
    { "format string errors",
      "{{ '%d' % 'x' }}", NULL, NULL, "a real number is required" },

    /* ---- errors at parse time ---- */

    { "unclosed if", "{% if x %}a", NULL, NULL,
      "line 1: unexpected end of template: 'if' at line 1 is not closed" },
    { "unclosed for, later line", "\n\n{% for x in y %}", NULL, NULL,
      "line 3" },
    { "unclosed expression", "{{ x ", NULL, NULL, "is not closed" },
    { "unclosed string", "{{ 'abc }}", NULL, NULL, "string is not closed" },
    { "unclosed comment", "{# abc", NULL, NULL, "comment is not closed" },
    { "unclosed raw", "{% raw %}x", NULL, NULL, "raw block is not closed" },
    { "unknown filter", "a\n{{ x | nosuchfilter }}", NULL, NULL,
      "line 2: no filter named 'nosuchfilter'" },
    { "unknown test", "{{ x is nosuchtest }}", NULL, NULL,
      "no test named 'nosuchtest'" },
    { "unknown tag", "{% frobnicate %}", NULL, NULL,
      "unknown tag 'frobnicate'" },
    { "stray end tag", "{% endif %}", NULL, NULL, "unknown tag 'endif'" },
    { "break outside a loop", "{% break %}", NULL, NULL,
      "'break' outside a loop" },
    { "missing operand", "{{ 1 + }}", NULL, NULL, "unexpected '}}'" },
    { "unbalanced brackets", "{{ (1 }}", NULL, NULL, "unexpected '}'" },
    { "unclosed bracket at the end", "{{ (1", NULL, NULL, "is not closed" },
    { "mismatched brackets", "{{ [1) }}", NULL, NULL, "unexpected ')'" },
    { "bad character", "{{ 1 $ 2 }}", NULL, NULL, "unexpected char '$'" },
    { "empty tag", "{% %}", NULL, NULL, "expected a tag name" },
};


static json_t *
load_vars(const char *text)
{
    json_t        *j;
    json_error_t   jerr;

    if (text == NULL) {
        return json_object();
    }

    j = json_loads(text, 0, &jerr);
    if (j == NULL) {
        diag("bad test JSON: %s", jerr.text);
    }

    return j;
}


/* renders tpl with "<s>", "</s>", "15 Jan 2026", one user message */
static int
render(const char *tpl, const char *vars_json, const llm_template_vars_t *lim,
    char **out, llm_err_t *err)
{
    int                   rc;
    size_t                len;
    json_t               *extra, *msgs;
    llm_template_t       *t;
    llm_template_vars_t   vars;

    *out = NULL;
    memset(err, 0, sizeof(llm_err_t));

    if (llm_template_parse(&t, tpl, strlen(tpl), err) != LLM_OK) {
        return LLM_ERR;
    }

    extra = load_vars(vars_json);
    msgs = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}]", 0, NULL);

    memset(&vars, 0, sizeof(vars));
    if (lim != NULL) {
        vars = *lim;
    }

    vars.messages = msgs;
    vars.bos_token = "<s>";
    vars.eos_token = "</s>";
    vars.add_generation_prompt = 1;
    vars.date = "15 Jan 2026";
    vars.extra = extra;

    rc = llm_template_render(t, &vars, out, &len, err);

    if (rc == LLM_OK && strlen(*out) != len) {
        diag("length %zu but strlen %zu", len, strlen(*out));
    }

    json_decref(extra);
    json_decref(msgs);
    llm_template_free(t);

    return rc;
}


static void
check_case(const tpl_case_t *c)
{
    int         rc;
    char       *out;
    llm_err_t   err;

    rc = render(c->tpl, c->vars, NULL, &out, &err);

    if (c->want != NULL) {
        if (!ok(rc == LLM_OK && strcmp(out, c->want) == 0, "%s", c->name)) {
            diag("template: %s", c->tpl);
            if (rc == LLM_OK) {
                diag("got:  [%s]", out);
                diag("want: [%s]", c->want);
            } else {
                diag("error: %s", err.errstr);
            }
        }

    } else if (!ok(rc == LLM_ERR && strstr(err.errstr, c->err) != NULL,
                   "%s fails", c->name))
    {
        diag("template: %s", c->tpl);
        diag("got %s: [%s]", rc == LLM_OK ? "output" : "error",
             rc == LLM_OK ? out : err.errstr);
        diag("want an error with: [%s]", c->err);
    }

    free(out);
}


/* ---- fixtures --------------------------------------------------------- */

static void
diag_diff(const char *got, size_t got_len, const char *want)
{
    size_t  i, want_len;

    want_len = strlen(want);

    for (i = 0; i < got_len && i < want_len && got[i] == want[i]; i++) {
        /* void */
    }

    diag("first difference at byte %zu (got %zu bytes, want %zu)", i,
         got_len, want_len);
    diag("got:  [%.60s]", got + (i > 20 ? i - 20 : 0));
    diag("want: [%.60s]", want + (i > 20 ? i - 20 : 0));
}


static int
name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


static void
check_fixture(const char *path, int *ncases)
{
    int                   rc, gen;
    char                 *out;
    size_t                i, len;
    json_t               *f, *c, *expected, *error;
    const char           *text, *name;
    llm_err_t             err;
    json_error_t          jerr;
    llm_template_t       *t;
    llm_template_vars_t   vars;

    name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

    f = json_load_file(path, 0, &jerr);
    if (!ok(f != NULL, "%s loads", name)) {
        diag("%s", jerr.text);
        return;
    }

    text = json_string_value(json_object_get(f, "template_text"));
    memset(&err, 0, sizeof(err));

    rc = text != NULL ? llm_template_parse(&t, text, strlen(text), &err)
                      : LLM_ERR;
    if (!ok(rc == LLM_OK, "%s parses", name)) {
        diag("%s", err.errstr);
        json_decref(f);
        return;
    }

    json_array_foreach(json_object_get(f, "cases"), i, c) {
        gen = json_is_true(json_object_get(c, "add_generation_prompt"));
        expected = json_object_get(c, "expected");
        error = json_object_get(c, "error");

        memset(&vars, 0, sizeof(vars));
        vars.messages = json_object_get(c, "messages");
        vars.bos_token = json_string_value(json_object_get(f, "bos_token"));
        vars.eos_token = json_string_value(json_object_get(f, "eos_token"));
        vars.date = json_string_value(json_object_get(f, "date"));
        vars.add_generation_prompt = gen;

        out = NULL;
        rc = llm_template_render(t, &vars, &out, &len, &err);
        (*ncases)++;

        if (json_is_string(expected)) {
            if (!ok(rc == LLM_OK
                    && len == json_string_length(expected)
                    && memcmp(out, json_string_value(expected), len) == 0,
                    "%s case %zu%s renders", name, i,
                    gen ? " (generation prompt)" : ""))
            {
                if (rc == LLM_OK) {
                    diag_diff(out, len, json_string_value(expected));
                } else {
                    diag("error: %s", err.errstr);
                }
            }

        } else if (!ok(rc == LLM_ERR && err.err == LLM_EINVAL
                       && json_is_string(error)
                       && strcmp(err.errstr, json_string_value(error)) == 0,
                       "%s case %zu raises", name, i))
        {
            diag("got: %s", rc == LLM_OK ? out : err.errstr);
            diag("want: %s", json_string_value(error));
        }

        free(out);
    }

    llm_template_free(t);
    json_decref(f);
}


static void
test_fixtures(void)
{
    int             ncases;
    char            dir[1024], path[2048], *names[256];
    size_t          n, i, len;
    DIR            *d;
    const char     *base;
    struct dirent  *de;

    base = getenv("LLM_FIXTURES");
    if (base == NULL || base[0] == '\0') {
        base = "../shared/fixtures";
    }

    snprintf(dir, sizeof(dir), "%s/chat", base);

    d = opendir(dir);
    if (d == NULL) {
        /* the language tests still run without the fixtures */
        ok(1, "# SKIP no fixtures at %s", dir);
        return;
    }

    n = 0;
    while ((de = readdir(d)) != NULL && n < 256) {
        len = strlen(de->d_name);
        if (len > 5 && strcmp(de->d_name + len - 5, ".json") == 0) {
            names[n] = strdup(de->d_name);
            if (names[n] != NULL) {
                n++;
            }
        }
    }
    closedir(d);

    qsort(names, n, sizeof(char *), name_cmp);

    ok(n > 0, "chat fixtures found in %s", dir);

    ncases = 0;
    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        check_fixture(path, &ncases);
        free(names[i]);
    }

    diag("%d fixture cases in %zu templates", ncases, n);
}


/* ---- limits and the API ----------------------------------------------- */

static void
test_limits(void)
{
    int                   rc;
    char                 *out, *big;
    size_t                len;
    llm_err_t             err;
    const char           *src;
    llm_template_t       *t;
    llm_template_vars_t   lim;

    memset(&lim, 0, sizeof(lim));
    lim.max_output = 100;
    rc = render("{% for i in range(100) %}0123456789{% endfor %}", NULL,
                &lim, &out, &err);
    ok(rc == LLM_ERR && strstr(err.errstr, "output exceeds 100 bytes"),
       "output is capped: %s", err.errstr);
    free(out);

    memset(&lim, 0, sizeof(lim));
    lim.max_steps = 1000;
    rc = render("{% for i in range(100000) %}{% endfor %}", NULL, &lim,
                &out, &err);
    ok(rc == LLM_ERR && strstr(err.errstr, "exceeds 1000 steps"),
       "steps are capped: %s", err.errstr);
    free(out);

    memset(&lim, 0, sizeof(lim));
    lim.max_memory = 1024 * 1024;
    rc = render("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", NULL, &lim, &out,
                &err);
    ok(rc == LLM_ERR && strstr(err.errstr, "bytes of memory"),
       "memory is capped: %s", err.errstr);
    free(out);

    rc = render("{{ 'ab' * 9000000000000000000 }}", NULL, NULL, &out, &err);
    ok(rc == LLM_ERR && strstr(err.errstr, "memory"),
       "string repetition is capped: %s", err.errstr);
    free(out);

    /* 10000 nested parentheses: a clean error, not a stack overflow */
    big = malloc(20010);
    if (big != NULL) {
        memset(big, 0, 20010);
        memcpy(big, "{{ ", 3);
        memset(big + 3, '(', 10000);
        big[10003] = '1';
        memset(big + 10004, ')', 10000);
        memcpy(big + 20004, " }}", 3);

        rc = render(big, NULL, NULL, &out, &err);
        ok(rc == LLM_ERR && strstr(err.errstr, "nested more than"),
           "deep nesting is refused: %s", err.errstr);
        free(out);
        free(big);
    }

    /* a long left-leaning chain parses, and evaluates within limits */
    big = malloc(4 * 5000 + 16);
    if (big != NULL) {
        strcpy(big, "{{ 1");
        for (len = 0; len < 5000; len++) {
            strcat(big + len * 4, " + 1");
        }
        strcat(big, " }}");

        rc = render(big, NULL, NULL, &out, &err);
        ok(rc == LLM_ERR && strstr(err.errstr, "nested more than"),
           "a long operator chain is bounded: %s", err.errstr);
        free(out);
        free(big);
    }

    big = malloc(LLM_TEMPLATE_MAX_SRC + 2);
    if (big != NULL) {
        memset(big, 'x', LLM_TEMPLATE_MAX_SRC + 1);
        big[LLM_TEMPLATE_MAX_SRC + 1] = '\0';
        memset(&err, 0, sizeof(err));

        rc = llm_template_parse(&t, big, LLM_TEMPLATE_MAX_SRC + 1, &err);
        ok(rc == LLM_ERR && t == NULL && err.err == LLM_EFORMAT,
           "oversized template refused: %s", err.errstr);
        free(big);
    }

    /* raise_exception: exactly the message, and LLM_EINVAL */
    rc = render("{{ raise_exception('Bad role: ' ~ 'x') }}", NULL, NULL,
                &out, &err);
    ok(rc == LLM_ERR && err.err == LLM_EINVAL
       && strcmp(err.errstr, "Bad role: x") == 0,
       "raise_exception gives exactly its message");
    free(out);

    rc = render("{{ 1 / 0 }}", NULL, NULL, &out, &err);
    ok(rc == LLM_ERR && err.err == LLM_EFORMAT && out == NULL,
       "other render errors are LLM_EFORMAT");
    free(out);

    /* an empty template, no messages, no tokens */
    memset(&err, 0, sizeof(err));
    rc = llm_template_parse(&t, "", 0, &err);
    ok(rc == LLM_OK, "empty template parses");

    if (rc == LLM_OK) {
        memset(&lim, 0, sizeof(lim));
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(rc == LLM_OK && len == 0 && out != NULL && out[0] == '\0',
           "empty template renders to an empty string");
        free(out);
        llm_template_free(t);
    }

    src = "{{ messages|length }}{{ bos_token }}";
    rc = llm_template_parse(&t, src, strlen(src), &err);
    if (ok(rc == LLM_OK, "template parses")) {
        memset(&lim, 0, sizeof(lim));
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(rc == LLM_OK && strcmp(out, "0") == 0,
           "no messages is an empty list, no bos is empty");
        free(out);

        lim.date = "not a date";
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(rc == LLM_ERR && err.err == LLM_EINVAL, "a bad date is refused");
        free(out);

        lim.date = NULL;
        lim.extra = json_array();
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(rc == LLM_ERR, "extra variables must be an object");
        json_decref(lim.extra);
        free(out);

        llm_template_free(t);
    }

    /* the same parsed template renders many times, and identically */
    src = "{% for m in messages %}{{ m.content }}{% endfor %}";
    rc = llm_template_parse(&t, src, strlen(src), &err);
    if (ok(rc == LLM_OK, "loop template parses")) {
        char    *first;
        json_t  *msgs;

        msgs = json_loads("[{\"content\": \"a\"}, {\"content\": \"b\"}]", 0,
                          NULL);
        memset(&lim, 0, sizeof(lim));
        lim.messages = msgs;

        first = NULL;
        llm_template_render(t, &lim, &first, &len, &err);
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(first != NULL && out != NULL && strcmp(first, "ab") == 0
           && strcmp(out, first) == 0, "renders twice the same");

        free(first);
        free(out);
        json_decref(msgs);
        llm_template_free(t);
    }

    /* dates in other spellings */
    memset(&lim, 0, sizeof(lim));
    src = "{{ strftime_now('%F %A') }}";
    rc = llm_template_parse(&t, src, strlen(src), &err);
    if (ok(rc == LLM_OK, "date template parses")) {
        lim.date = "2024-02-29";
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(rc == LLM_OK && strcmp(out, "2024-02-29 Thursday") == 0,
           "ISO date: %s", rc == LLM_OK ? out : err.errstr);
        free(out);

        lim.date = "July 26, 2024";
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(rc == LLM_OK && strcmp(out, "2024-07-26 Friday") == 0,
           "long date: %s", rc == LLM_OK ? out : err.errstr);
        free(out);

        lim.date = "30 Feb 2024";
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(rc == LLM_ERR, "impossible date refused");
        free(out);

        lim.date = NULL;
        rc = llm_template_render(t, &lim, &out, &len, &err);
        ok(rc == LLM_OK && strlen(out) > 10, "no date means today: %s",
           rc == LLM_OK ? out : err.errstr);
        free(out);

        llm_template_free(t);
    }
}


int
main(void)
{
    size_t  i;

    test_fixtures();

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(&cases[i]);
    }

    test_limits();

    return done_testing();
}
