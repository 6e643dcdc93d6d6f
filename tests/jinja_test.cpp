// The Jinja engine (src/chat/jinja.h): a conformance table whose expected outputs come from
// Python's Jinja2 3.1.6 (an ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks,
// loopcontrols and Hugging Face's json.dumps tojson, as transformers' apply_chat_template
// builds it), then errors, whitespace settings, strftime_now and concurrent renders.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "src/chat/jinja.h"
#include "troupe/error.h"

namespace troupe::jinja {
namespace {

using ojson = nlohmann::ordered_json;

std::string render(std::string_view source, const ojson& context = ojson::object(), options o = {}) {
  return template_program(source, o).render(context);
}

// The message of the troupe::error that rendering (or parsing) throws, or "no error".
std::string error_of(std::string_view source, const ojson& context = ojson::object()) {
  try {
    render(source, context);
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::failed);
    EXPECT_EQ(e.field(), "chat_template");
    return e.what();
  }
  return "no error";
}

// ---------------------------------------------------------------------------------------
// Conformance with Jinja2
// ---------------------------------------------------------------------------------------

struct conformance_case {
  const char* name;
  bool jinja2_defaults;  // trim_blocks and lstrip_blocks off (Jinja2's own defaults)
  const char* source;
  const char* context;  // JSON
  const char* expected;
};

// clang-format off
const conformance_case conformance_cases[] = {
    {"text", false,
     R"~(hello)~",
     R"~({})~",
     R"~(hello)~"},
    {"expr_var", false,
     R"~({{ x }})~",
     R"~({"x": "v"})~",
     R"~(v)~"},
    {"undefined_prints_empty", false,
     R"~([{{ nope }}])~",
     R"~({})~",
     R"~([])~"},
    {"literals", false,
     R"~({{ 1 }} {{ 2.5 }} {{ 'a\tb\n' }} {{ "q'" }} {{ true }} {{ True }} {{ none }} {{ None }} {{ false }})~",
     R"~({})~",
     R"~(1 2.5 a	b
 q' True True None None False)~"},
    {"list_dict_repr", false,
     R"~({{ [1, 'a', 2.5, none, true, {'k': [1]}] }})~",
     R"~({})~",
     R"~([1, 'a', 2.5, None, True, {'k': [1]}])~"},
    {"floats", false,
     R"~({{ 1e20 }} {{ 1.5e-5 }} {{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ 1e16 }} {{ 123456789012345678.0 }} {{ 3.0 }} {{ -0.0001 }})~",
     R"~({})~",
     R"~(1e+20 1.5e-05 0.30000000000000004 2.5 1e+16 1.2345678901234568e+17 3.0 -0.0001)~"},
    {"arith", false,
     R"~({{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 2 ** -1 }} {{ 1 + 2 * 3 - 4 }} {{ (1 + 2) * 3 }} {{ -3 + 1 }})~",
     R"~({})~",
     R"~(3 -4 2 1024 3.0 0.5 0.5 3 9 -2)~"},
    {"string_ops", false,
     R"~({{ 'a' + 'b' }} {{ 'x' * 3 }} {{ [1] * 2 }} {{ [1] + [2] }} {{ 'a' ~ 1 ~ none ~ nope }})~",
     R"~({})~",
     R"~(ab xxx [1, 1] [1, 2] a1None)~"},
    {"compare", false,
     R"~({{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 'ab' < 'b' }} {{ [1, 2] == [1, 2] }} {{ 1 >= 1 }})~",
     R"~({})~",
     R"~(True False True True True True True)~"},
    {"in_not_in", false,
     R"~({{ 'b' in 'abc' }} {{ 1 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ 'a' in nope }})~",
     R"~({})~",
     R"~(True True True True False)~"},
    {"logic", false,
     R"~({{ true and 'x' }} {{ 0 or 'y' }} {{ not 0 }} {{ not 'a' }} {{ none or [] }} {{ 1 and 0 }})~",
     R"~({})~",
     R"~(x y True False [] 0)~"},
    {"inline_if", false,
     R"~({{ 'y' if x else 'n' }} {{ 'y' if not x else 'n' }} [{{ 'only' if false }}])~",
     R"~({"x": 1})~",
     R"~(y n [])~"},
    {"attr_subscript", false,
     R"~({{ m.role }} {{ m['content'] }} {{ m.nope }}|{{ xs[0] }} {{ xs[-1] }} {{ xs[9] }}|{{ 'héllo'[1] }})~",
     R"~({"m": {"role": "user", "content": "hi"}, "xs": [1, 2, 3]})~",
     R"~(user hi |1 3 |é)~"},
    {"slices", false,
     R"~({{ xs[::-1] }} {{ xs[1:] }} {{ xs[:-1] }} {{ xs[::2] }} {{ 'abcdef'[1:4] }} {{ 'héllo'[::-1] }} {{ xs[5:] }} {{ xs[-2::-1] }})~",
     R"~({"xs": [1, 2, 3, 4]})~",
     R"~([4, 3, 2, 1] [2, 3, 4] [1, 2, 3] [1, 3] bcd olléh [] [3, 2, 1])~"},
    {"if_elif_else", false,
     R"~({% for x in [1, 2, 3] %}{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %},{% endfor %})~",
     R"~({})~",
     R"~(one,two,many,)~"},
    {"for_loop_vars", false,
     R"~({% for a in ['x', 'y', 'z'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %})~",
     R"~({})~",
     R"~(1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;)~"},
    {"for_prev_next", false,
     R"~({% for a in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.previtem is defined }};{% endfor %})~",
     R"~({})~",
     R"~(-2-False;1-3-True;2--True;)~"},
    {"for_else", false,
     R"~({% for a in [] %}x{% else %}empty{% endfor %}|{% for a in nope %}x{% else %}undef{% endfor %})~",
     R"~({})~",
     R"~(empty|undef)~"},
    {"for_if_filter", false,
     R"~({% for a in [1, 2, 3, 4] if a is even %}{{ a }}{{ loop.index }}/{{ loop.length }} {% else %}E{% endfor %})~",
     R"~({})~",
     R"~(21/2 42/2 )~"},
    {"for_items", false,
     R"~({% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for (a, b) in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %})~",
     R"~({"d": {"b": 1, "a": 2}})~",
     R"~(b=1;a=2;ba37)~"},
    {"for_nested_loop", false,
     R"~({% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }}|{% endfor %})~",
     R"~({})~",
     R"~(1x2y1|1x2y2|)~"},
    {"for_cycle", false,
     R"~({% for a in range(5) %}{{ loop.cycle('o', 'e') }}{% endfor %})~",
     R"~({})~",
     R"~(oeoeo)~"},
    {"break_continue", false,
     R"~({% for a in range(10) %}{% if a == 2 %}{% continue %}{% endif %}{% if a == 5 %}{% break %}{% endif %}{{ a }}{% endfor %})~",
     R"~({})~",
     R"~(0134)~"},
    {"set_scoping", false,
     R"~({% set x = 1 %}{% for i in [2, 3] %}{{ x }}{% set x = i %}{{ x }};{% endfor %}{{ x }}{% if true %}{% set x = 9 %}{% endif %}{{ x }})~",
     R"~({})~",
     R"~(12;13;19)~"},
    {"namespace", false,
     R"~({% set ns = namespace(n=0, last=none) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% set ns.last = i %}{% endfor %}{{ ns.n }} {{ ns.last }})~",
     R"~({})~",
     R"~(6 3)~"},
    {"set_block", false,
     R"~({% set s %}a{{ 1 + 1 }}b{% endset %}[{{ s }}])~",
     R"~({})~",
     R"~([a2b])~"},
    {"set_tuple", false,
     R"~({% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = (1, 2) %}{{ t[1] }})~",
     R"~({})~",
     R"~(122)~"},
    {"macro", false,
     R"~({% macro f(a, b=2, c='z') %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ f(1) }} {{ f(1, 3) }} {{ f(1, c='q') }} {{ f(a=5) }})~",
     R"~({})~",
     R"~(12z 13z 12q 52z)~"},
    {"macro_recursion", false,
     R"~({% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% endmacro %}{{ fact(5) }})~",
     R"~({})~",
     R"~(120)~"},
    {"macro_sees_globals", false,
     R"~({% set g = 'G' %}{% macro f() %}{{ g }}{{ bos_token }}{% endmacro %}{{ f() }})~",
     R"~({"bos_token": "<s>"})~",
     R"~(G<s>)~"},
    {"raw", false,
     R"~({% raw %}{{ not evaluated }}{% if %}{% endraw %}!)~",
     R"~({})~",
     R"~({{ not evaluated }}{% if %}!)~"},
    {"comment", false,
     R"~(a{# a comment {{ x }} #}b)~",
     R"~({})~",
     R"~(ab)~"},
    {"ws_control", false,
     R"~(a  {{- ' b ' -}}  c {%- if true -%}  d  {%- endif -%}  e)~",
     R"~({})~",
     R"~(a b cde)~"},
    {"ws_trim_lstrip", false,
     R"~(<ul>
  {% for x in [1, 2] %}
    <li>{{ x }}</li>
  {% endfor %}
</ul>
)~",
     R"~({})~",
     R"~(<ul>
    <li>1</li>
    <li>2</li>
</ul>)~"},
    {"ws_trim_lstrip_plain", true,
     R"~(<ul>
  {% for x in [1, 2] %}
    <li>{{ x }}</li>
  {% endfor %}
</ul>
)~",
     R"~({})~",
     R"~(<ul>
  
    <li>1</li>
  
    <li>2</li>
  
</ul>)~"},
    {"ws_comment_lines", false,
     R"~(a
  {# note #}
b
)~",
     R"~({})~",
     R"~(a
b)~"},
    {"ws_plus", false,
     R"~(a
  {%+ if true +%}
b
{% endif %})~",
     R"~({})~",
     R"~(a
  
b
)~"},
    {"ws_var_not_lstripped", false,
     R"~(a
  {{ 'x' }}
b)~",
     R"~({})~",
     R"~(a
  x
b)~"},
    {"ws_inline_block_not_lstripped", false,
     R"~(a {% if true %}b{% endif %}
c)~",
     R"~({})~",
     R"~(a bc)~"},
    {"tests", false,
     R"~({{ x is defined }} {{ nope is undefined }} {{ n is none }} {{ 's' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is sequence }} {{ 1.5 is number }} {{ true is boolean }} {{ true is true }} {{ false is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby(3) }} {{ 1 is not string }} {{ x is not none }})~",
     R"~({"x": 1, "n": null})~",
     R"~(True True True True True True True True True True True True True True True True)~"},
    {"test_bare_arg", false,
     R"~({{ 9 is divisibleby 3 }} {{ 2 is eq 2 }} {{ x is sameas none }} {{ 5 is gt 3 }})~",
     R"~({"x": null})~",
     R"~(True True True True)~"},
    {"filter_precedence", false,
     R"~({{ xs|length - 1 }} {{ 'a' ~ ' b '|trim }} {{ -3|abs }} {{ not x is defined }})~",
     R"~({"xs": [1, 2, 3]})~",
     R"~(2 ab 3 True)~"},
    {"filters_str", false,
     R"~({{ '  a b \n'|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 'hELLO wOrld'|upper }}|{{ 'HeLLo'|lower }}|{{ "they're 1st-class (x) hi"|title }}|{{ 'hELLO'|capitalize }}|{{ 'a b a'|replace('a', 'c') }}|{{ 'aaa'|replace('a', 'b', 2) }})~",
     R"~({})~",
     R"~(a b|a|HELLO WORLD|hello|They're 1st-Class (X) Hi|Hello|c b c|bba)~"},
    {"filters_default", false,
     R"~({{ nope|default('d') }} {{ ''|default('d', true) }} {{ ''|d('e') }} {{ none|default('d') }} {{ 0|default(5, boolean=true) }})~",
     R"~({})~",
     R"~(d d  None 5)~"},
    {"filters_seq", false,
     R"~({{ xs|length }} {{ 'héllo'|length }} {{ d|count }} {{ xs|first }} {{ xs|last }} {{ xs|join(', ') }} {{ xs|join }} {{ xs|reverse|list }} {{ 'abc'|reverse }} {{ 'ab'|list }} {{ d|list }} {{ d|items|list }})~",
     R"~({"xs": [3, 1, 2], "d": {"k": 1, "j": 2}})~",
     R"~(3 5 2 3 2 3, 1, 2 312 [2, 1, 3] cba ['a', 'b'] ['k', 'j'] [('k', 1), ('j', 2)])~"},
    {"filters_sort_unique", false,
     R"~({{ xs|sort }} {{ xs|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ ms|sort(attribute='n')|map(attribute='n')|list }} {{ [1, 2, 1, 3]|unique|list }} {{ ['a', 'A']|unique|list }})~",
     R"~({"xs": [3, 1, 2], "ms": [{"n": 2}, {"n": 1}]})~",
     R"~([1, 2, 3] [3, 2, 1] ['A', 'b', 'c'] ['A', 'b', 'c'] [1, 2] [1, 2, 3] ['a'])~"},
    {"filters_numbers", false,
     R"~({{ '3'|int + 1 }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 2.7|int }} {{ '42.9'|int }} {{ '2.5'|float }} {{ 'x'|float }} {{ 3|float }} {{ -3|abs }} {{ -2.5|abs }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 2.5|round(0, 'floor') }} {{ 2.1|round(0, 'ceil') }} {{ 7|round }})~",
     R"~({})~",
     R"~(4 0 7 2 42 2.5 0.0 3.0 3 2.5 2.0 4.0 2.67 2.0 3.0 7)~"},
    {"filters_string_conv", false,
     R"~({{ 3|string ~ 1 }} {{ [1, 'a']|string }} {{ none|string }} {{ true|string }})~",
     R"~({})~",
     R"~(31 [1, 'a'] None True)~"},
    {"filters_map_select", false,
     R"~({{ ms|map(attribute='name')|join(',') }} {{ ms|selectattr('ok')|map(attribute='name')|list }} {{ ms|rejectattr('ok')|map(attribute='name')|list }} {{ ms|selectattr('name', 'equalto', 'b')|list }} {{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ ['a', 'B']|map('upper')|list }} {{ [1, 2]|map('string')|list }} {{ ms|map(attribute='nope', default='-')|list }})~",
     R"~({"ms": [{"name": "a", "ok": true}, {"name": "b", "ok": false}]})~",
     R"~(a,b ['a'] ['b'] [{'name': 'b', 'ok': False}] [1, 3] [2, 4] ['A', 'B'] ['1', '2'] ['-', '-'])~"},
    {"filters_indent", false,
     R"~({{ 'x'|indent(2) }}|{{ 'a\nb\n\nc'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}|{{ 'a\n\nb'|indent(2, blank=true) }}|{{ 'a\nb'|indent('> ') }}|{{ 'a\n'|indent }})~",
     R"~({})~",
     R"~(x|a
  b

  c|  a
  b|a
  
  b|a
> b|a
)~"},
    {"filters_escape_safe", false,
     R"~({{ '<a href="x">&\'</a>'|e }} {{ '<b>'|escape }} {{ '<b>'|safe }})~",
     R"~({})~",
     R"~(&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt; &lt;b&gt; <b>)~"},
    {"filters_minmax", false,
     R"~({{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ ['b', 'A']|max }})~",
     R"~({})~",
     R"~(1 3 b)~"},
    {"tojson", false,
     R"~({{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ [1, 'é', none, true, 1.5, 'q"\\\n']|tojson }}|{{ {}|tojson }} {{ []|tojson(indent=2) }}|{{ d|tojson(sort_keys=true) }}|{{ 'é'|tojson(ensure_ascii=true) }}|{{ d|tojson(separators=(',', ':')) }})~",
     R"~({"d": {"z": 1, "a": [1, {"b": null}], "e": {}}})~",
     R"~({"z": 1, "a": [1, {"b": null}], "e": {}}|{
  "z": 1,
  "a": [
    1,
    {
      "b": null
    }
  ],
  "e": {}
}|[1, "é", null, true, 1.5, "q\"\\\n"]|{} []|{"a": [1, {"b": null}], "e": {}, "z": 1}|"\u00e9"|{"z":1,"a":[1,{"b":null}],"e":{}})~"},
    {"str_methods", false,
     R"~({{ 'abc'.startswith('a') }} {{ 'abc'.endswith('bc') }} {{ 'abc'.startswith(('x', 'ab')) }} [{{ '  x  '.strip() }}] [{{ '\n\nx\n'.lstrip('\n') }}] [{{ 'x\n\n'.rstrip() }}] {{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ ' a b '.split(none, 1) }} {{ 'Ab'.upper() }} {{ 'Ab'.lower() }} {{ 'aXb'.replace('X', '-') }} {{ "they're 1st".title() }} {{ 'hi there'.capitalize() }} {{ ', '.join(['a', 'b']) }} {{ 'héllo'.find('l') }} {{ 'banana'.count('an') }})~",
     R"~({})~",
     R"~(True True True [x] [x
] [x] ['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a', 'b '] AB ab a-b They'Re 1St Hi there a, b 2 2)~"},
    {"think_split", false,
     R"~({{ c.split('</think>')[-1].lstrip('\n') }}|{{ c.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') }})~",
     R"~({"c": "<think>\nreason\n</think>\n\nanswer"})~",
     R"~(answer|reason)~"},
    {"dict_methods", false,
     R"~({{ d.keys()|list }} {{ d.values()|list }} {{ d.get('a') }} {{ d.get('x') }} {{ d.get('x', 5) }} {% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %})~",
     R"~({"d": {"a": 1, "b": 2}})~",
     R"~(['a', 'b'] [1, 2] 1 None 5 a1b2)~"},
    {"dict_literal", false,
     R"~({% set d = {'x': 1, 'y': [1, 2]} %}{{ d.x }} {{ d['y'][1] }} {{ d }})~",
     R"~({})~",
     R"~(1 2 {'x': 1, 'y': [1, 2]})~"},
    {"range", false,
     R"~({{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(3, 0, -1)|list }})~",
     R"~({})~",
     R"~([0, 1, 2] [1, 3, 5] [3, 2, 1])~"},
    {"filter_block", false,
     R"~({% filter upper %}abc {{ 'd' }}{% endfilter %})~",
     R"~({})~",
     R"~(ABC D)~"},
    {"string_escapes", false,
     R"~({{ 'a\\b' }} {{ "\u00e9\x41" }} {{ 'it\'s' }} {{ 'a' 'b' }})~",
     R"~({})~",
     R"~(a\b éA it's ab)~"},
    {"trailing_newline_dropped", false,
     R"~(a
)~",
     R"~({})~",
     R"~(a)~"},
    {"generation_block", false,
     R"~({% generation %}x{% endgeneration %}y)~",
     R"~({})~",
     R"~(xy)~"},
    {"loop_in_macro_call", false,
     R"~({% macro li(x) %}<{{ x }}>{% endmacro %}{% for m in ms %}{{ li(m.role) }}{% endfor %})~",
     R"~({"ms": [{"role": "user"}, {"role": "assistant"}]})~",
     R"~(<user><assistant>)~"},
    {"none_attribute", false,
     R"~({{ n.x }}|{{ n.x is defined }})~",
     R"~({"n": null})~",
     R"~(|False)~"},
    {"numbers_from_json", false,
     R"~({{ i }} {{ f }} {{ i / 2 }} {{ f * 2 }} {{ big }})~",
     R"~({"i": 3, "f": 2.5, "big": 12345678901234})~",
     R"~(3 2.5 1.5 5.0 12345678901234)~"},
};
// clang-format on

TEST(jinja_conformance, every_case_renders_as_jinja2_does) {
  for (const auto& c : conformance_cases) {
    SCOPED_TRACE(c.name);
    const options o{!c.jinja2_defaults, !c.jinja2_defaults};
    try {
      EXPECT_EQ(render(c.source, ojson::parse(c.context), o), c.expected);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw: " << e.what();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Whitespace settings
// ---------------------------------------------------------------------------------------

TEST(jinja_whitespace, trim_blocks_and_lstrip_blocks_each_alone) {
  const std::string src = "a\n  {% if true %}\nb\n  {% endif %}\nc";
  EXPECT_EQ(render(src, ojson::object(), {false, false}), "a\n  \nb\n  \nc");
  EXPECT_EQ(render(src, ojson::object(), {true, false}), "a\n  b\n  c");
  EXPECT_EQ(render(src, ojson::object(), {false, true}), "a\n\nb\n\nc");
  EXPECT_EQ(render(src, ojson::object(), {true, true}), "a\nb\nc");
}

TEST(jinja_whitespace, minus_strips_newlines_too_and_plus_keeps_them) {
  EXPECT_EQ(render("x\n\n  {%- if true -%}\n\n  y  {%- endif %}"), "xy");
  EXPECT_EQ(render("a\n  {%+ if true %}b{% endif %}"), "a\n  b");
  EXPECT_EQ(render("{% if true +%}\nb{% endif %}"), "\nb");
  EXPECT_EQ(render("{{- ' x ' -}}"), " x ");  // strips template text, never a value
}

TEST(jinja_whitespace, raw_keeps_its_body_and_honours_its_own_minus) {
  EXPECT_EQ(render("{% raw -%}  {{ x }}  {%- endraw %}"), "{{ x }}");
  EXPECT_EQ(render("{% raw %}{% endraw %}\nz"), "z");  // trim_blocks after endraw
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

TEST(jinja_errors, syntax_errors_name_line_and_column) {
  EXPECT_EQ(error_of("ab\n  {% if %}"),
            "chat template: syntax error at line 2, column 9: expected an expression, got end of statement block");
  EXPECT_EQ(error_of("{% for x in xs %}"),
            "chat template: syntax error at line 1, column 18: unexpected end of template, expected 'else'");
  EXPECT_EQ(error_of("{{ x | nosuchfilter }}"),
            "chat template: syntax error at line 1, column 8: no filter named 'nosuchfilter'");
  EXPECT_EQ(error_of("{{ x is nosuchtest }}"),
            "chat template: syntax error at line 1, column 9: no test named 'nosuchtest'");
  EXPECT_EQ(error_of("{% endif %}"), "chat template: syntax error at line 1, column 4: unexpected 'endif'");
  EXPECT_EQ(error_of("{% include 'x' %}"),
            "chat template: syntax error at line 1, column 4: unsupported statement 'include'");
  EXPECT_EQ(error_of("{{ 'abc }}"), "chat template: syntax error at line 1, column 4: unterminated string literal");
  EXPECT_EQ(error_of("{# never closed"), "chat template: syntax error at line 1, column 1: unterminated comment");
  EXPECT_EQ(error_of("{{ x "),
            "chat template: syntax error at line 1, column 6: unexpected end of template, expected '}}'");
  EXPECT_EQ(error_of("{% break %}"), "chat template: syntax error at line 1, column 4: 'break' outside a loop");
  EXPECT_EQ(error_of("{{ a ? b }}"), "chat template: syntax error at line 1, column 6: unexpected character '?'");
}

TEST(jinja_errors, raise_exception_message_is_verbatim) {
  EXPECT_EQ(error_of("x{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"),
            "Conversation roles must alternate user/assistant/user/assistant/...");
}

TEST(jinja_errors, using_undefined_values_fails_with_position) {
  EXPECT_EQ(error_of("{{ x.y }}"), "chat template: error at line 1, column 5: 'x' is undefined");
  EXPECT_EQ(error_of("{{ d.a.b }}", {{"d", ojson::object()}}),
            "chat template: error at line 1, column 7: 'dict object' has no attribute 'a'");
  EXPECT_EQ(error_of("\n{{ x + 1 }}"), "chat template: error at line 2, column 6: 'x' is undefined");
  EXPECT_EQ(error_of("{{ m.content.startswith('a') }}", {{"m", {{"role", "user"}}}}),
            "chat template: error at line 1, column 24: 'dict object' has no attribute 'content'");
}

TEST(jinja_errors, type_errors_say_what_python_says) {
  EXPECT_EQ(error_of("{{ 'a' + 1 }}"),
            "chat template: error at line 1, column 8: unsupported operand type(s) for +: 'str' and 'int'");
  EXPECT_EQ(error_of("{{ 1 < 'a' }}"),
            "chat template: error at line 1, column 4: '<' not supported between instances of 'int' and 'str'");
  EXPECT_EQ(error_of("{{ 1 // 0 }}"), "chat template: error at line 1, column 6: integer division or modulo by zero");
  EXPECT_EQ(error_of("{{ 'a' in none }}"),
            "chat template: error at line 1, column 4: argument of type 'NoneType' is not iterable");
  EXPECT_EQ(error_of("{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}"),
            "chat template: error at line 1, column 35: macro 'f' takes not more than 1 argument(s)");
  EXPECT_EQ(error_of("{% for a, b in [[1]] %}{% endfor %}"),
            "chat template: error at line 1, column 4: not enough values to unpack (expected 2, got 1)");
  EXPECT_EQ(error_of("{{ x|tojson }}"),
            "chat template: error at line 1, column 5: tojson: Object of type Undefined is not JSON serializable");
  EXPECT_EQ(error_of("{% set x = 1 %}{% set x.a = 2 %}"),
            "chat template: error at line 1, column 19: cannot assign attribute on non-namespace object 'x'");
  EXPECT_EQ(error_of("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"),
            "chat template: error at line 1, column 21: macro 'f' recursed more than 100 calls deep");
}

TEST(jinja_errors, the_render_context_must_be_an_object) {
  EXPECT_THROW(template_program("x").render(ojson::array()), error);
}

// ---------------------------------------------------------------------------------------
// Globals, JSON, concurrency
// ---------------------------------------------------------------------------------------

TEST(jinja_globals, strftime_now_formats_the_given_time_in_utc) {
  const template_program t("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M') }}");
  const auto when = std::chrono::system_clock::from_time_t(1721865600 + 3600 + 60);  // 2024-07-25 01:01 UTC
  EXPECT_EQ(t.render(ojson::object(), when), "25 Jul 2024|2024-07-25 01:01");
}

TEST(jinja_values, json_in_keeps_key_order_and_number_kinds) {
  const ojson ctx = ojson::parse(R"({"d": {"z": 1, "a": 2.0, "m": [true, null, "é"]}, "u": 18446744073709551615})");
  EXPECT_EQ(render("{{ d|tojson }} {{ d }} {{ u }}", ctx),
            "{\"z\": 1, \"a\": 2.0, \"m\": [true, null, \"é\"]} {'z': 1, 'a': 2.0, 'm': [True, None, 'é']} "
            "1.8446744073709552e+19");
}

TEST(jinja_values, namespaces_and_lists_are_shared_by_reference) {
  EXPECT_EQ(render("{% set ns = namespace(items=[]) %}{% set alias = ns %}{% set alias.x = 1 %}{{ ns.x }}"), "1");
}

TEST(jinja_concurrency, one_parsed_template_renders_on_many_threads) {
  const template_program t(
      "{% set ns = namespace(total=0) %}{% for m in messages %}{% set ns.total = ns.total + m %}{% endfor %}"
      "{{ ns.total }}");
  std::vector<std::thread> threads;
  std::vector<std::string> got(8);
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      ojson msgs = ojson::array();
      for (int k = 0; k <= i * 100; ++k) msgs.push_back(k);
      for (int rep = 0; rep < 20; ++rep) got[size_t(i)] = t.render({{"messages", msgs}});
    });
  for (auto& th : threads) th.join();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(got[size_t(i)], std::to_string((i * 100) * (i * 100 + 1) / 2));
}

}  // namespace
}  // namespace troupe::jinja
