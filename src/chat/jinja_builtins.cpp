// Filters, tests, methods and globals, each with Jinja2's (or Python's) meaning. Case
// mapping (upper, lower, title, capitalize) is ASCII only; whitespace is Unicode's.
#include "src/chat/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <unordered_map>

#include "src/model/unicode_text.h"
#include "troupe/error.h"

namespace troupe::jinja {

// ---------------------------------------------------------------------------------------
// Iteration and arguments
// ---------------------------------------------------------------------------------------

value_list iterate(const value& v, render_context& ctx) {
  if (v.is_list()) return v.as_list();
  if (v.is_undefined()) return {};
  value_list out;
  if (v.is_dict()) {
    for (const auto& [k, e] : v.as_dict().entries) out.emplace_back(k);
    return out;
  }
  if (v.is_string()) {
    for (auto c : code_points(v.as_string())) out.emplace_back(c);
    return out;
  }
  ctx.fail("'" + v.type_name() + "' object is not iterable");
}

int64_t length(const value& v, render_context& ctx) {
  if (v.is_string()) return int64_t(code_points(v.as_string()).size());
  if (v.is_list()) return int64_t(v.as_list().size());
  if (v.is_dict()) return int64_t(v.as_dict().entries.size());
  if (v.is_undefined()) return 0;
  ctx.fail("object of type '" + v.type_name() + "' has no len()");
}

namespace {

value arg(const call_args& a, size_t i, std::string_view name, value fallback = {}) {
  const value* v = a.get(i, name);
  return v ? *v : fallback;
}

int64_t int_arg(const call_args& a, size_t i, std::string_view name, int64_t fallback, render_context& ctx) {
  const value v = arg(a, i, name);
  if (v.is_undefined() || v.is_none()) return fallback;
  if (v.is_bool()) return v.as_bool();
  if (!v.is_int()) ctx.fail("argument '" + std::string(name) + "' must be an integer, not " + v.type_name());
  return v.as_int();
}

std::string string_arg(const call_args& a, size_t i, std::string_view name, render_context& ctx) {
  const value v = arg(a, i, name);
  if (!v.is_string()) ctx.fail("argument '" + std::string(name) + "' must be a string, not " + v.type_name());
  return v.as_string();
}

// attribute="a.b.0" as Jinja's make_attrgetter reads it.
value attribute_path(const value& obj, const std::string& path, render_context& ctx) {
  value v = obj;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = std::min(path.find('.', start), path.size());
    const std::string part = path.substr(start, dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    if (numeric && v.is_list()) {
      const size_t i = std::stoul(part);
      v = i < v.as_list().size() ? v.as_list()[i] : value();
    } else {
      v = get_attribute(v, part, ctx);
    }
    start = dot + 1;
  }
  return v;
}

// ---------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------

char ascii_upper(char c) { return c >= 'a' && c <= 'z' ? char(c - 32) : c; }
char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? char(c + 32) : c; }
bool ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), ascii_upper);
  return s;
}
std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), ascii_lower);
  return s;
}
std::string capitalize(std::string s) {
  s = lower(std::move(s));
  if (!s.empty()) s[0] = ascii_upper(s[0]);
  return s;
}
// str.title(): a letter after a letter is lower case, any other letter upper case.
std::string python_title(std::string s) {
  bool after_letter = false;
  for (char& c : s) {
    if (ascii_letter(c)) c = after_letter ? ascii_lower(c) : ascii_upper(c);
    after_letter = ascii_letter(c);
  }
  return s;
}
// Jinja's title filter: words begin after runs of whitespace, '-', '(', '{', '[' or '<'.
std::string jinja_title(std::string s) {
  bool word_start = true;
  for (char& c : s) {
    const bool separator = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == '-' ||
                           c == '(' || c == '{' || c == '[' || c == '<';
    if (!separator) c = word_start ? ascii_upper(c) : ascii_lower(c);
    word_start = separator;
  }
  return s;
}

bool is_python_space(std::string_view ch) {
  size_t i = 0;
  return unicode::is_space(unicode::next_code_point(ch, i));
}

// str.strip(chars): `chars` none strips whitespace.
std::string strip(std::string_view s, const value& chars, bool left, bool right) {
  const auto cps = code_points(s);
  const auto stripped = [&](std::string_view c) {
    if (chars.is_string()) return chars.as_string().find(c) != std::string::npos;
    return is_python_space(c);
  };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && stripped(cps[b])) ++b;
  if (right)
    while (e > b && stripped(cps[e - 1])) --e;
  if (b == e) return "";
  return std::string(
      s.substr(size_t(cps[b].data() - s.data()), size_t(cps[e - 1].data() + cps[e - 1].size() - cps[b].data())));
}

std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  int64_t done = 0;
  if (from.empty()) {  // Python inserts `to` around every character
    for (auto c : code_points(s)) {
      if (count < 0 || done < count) out += to, ++done;
      out += c;
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t pos = 0;
  while (true) {
    const size_t hit = (count < 0 || done < count) ? s.find(from, pos) : std::string::npos;
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
    ++done;
  }
  out.append(s, pos);
  return out;
}

value split(const std::string& s, const value& sep, int64_t maxsplit, render_context& ctx) {
  value_list parts;
  if (sep.is_string()) {
    if (sep.as_string().empty()) ctx.fail("empty separator");
    size_t pos = 0;
    while (maxsplit < 0 || int64_t(parts.size()) < maxsplit) {
      const size_t hit = s.find(sep.as_string(), pos);
      if (hit == std::string::npos) break;
      parts.emplace_back(s.substr(pos, hit - pos));
      pos = hit + sep.as_string().size();
    }
    parts.emplace_back(s.substr(pos));
    return value::list(std::move(parts));
  }
  // Runs of whitespace; none at the ends; the rest after maxsplit keeps its trailing space.
  const auto cps = code_points(s);
  size_t i = 0;
  while (true) {
    while (i < cps.size() && is_python_space(cps[i])) ++i;
    if (i == cps.size()) break;
    const size_t begin = size_t(cps[i].data() - s.data());
    if (maxsplit >= 0 && int64_t(parts.size()) == maxsplit) {
      parts.emplace_back(s.substr(begin));
      break;
    }
    while (i < cps.size() && !is_python_space(cps[i])) ++i;
    const size_t end = i < cps.size() ? size_t(cps[i].data() - s.data()) : s.size();
    parts.emplace_back(s.substr(begin, end - begin));
  }
  return value::list(std::move(parts));
}

bool affix_matches(const std::string& s, const value& affix, bool prefix, render_context& ctx) {
  const auto one = [&](const value& a) {
    if (!a.is_string()) ctx.fail("startswith/endswith takes a string or a tuple of strings, not " + a.type_name());
    const std::string& t = a.as_string();
    if (t.size() > s.size()) return false;
    return prefix ? s.compare(0, t.size(), t) == 0 : s.compare(s.size() - t.size(), t.size(), t) == 0;
  };
  if (affix.is_list()) return std::any_of(affix.as_list().begin(), affix.as_list().end(), one);
  return one(affix);
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Jinja's indent: every line but the first (unless `first`), blank lines only with `blank`.
std::string indent(std::string s, const std::string& pad, bool first, bool blank) {
  s += '\n';  // as Jinja does, so that a trailing newline survives splitlines()
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < s.size()) {  // str.splitlines() on \n, \r\n and \r
    size_t e = s.find_first_of("\r\n", pos);
    if (e == std::string::npos) e = s.size();
    lines.push_back(s.substr(pos, e - pos));
    pos = e + (s.compare(e, 2, "\r\n") == 0 ? 2 : 1);
  }
  if (lines.empty()) lines.emplace_back();
  std::string out = lines[0];
  for (size_t i = 1; i < lines.size(); ++i) out += "\n" + ((blank || !lines[i].empty()) ? pad : "") + lines[i];
  return first ? pad + out : out;
}

// Python's round(x, n): correctly rounded (half to even on the exact binary value), which
// is what printf's %.*f computes.
double python_round(double x, int64_t digits) {
  if (!std::isfinite(x) || digits > 300) return x;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", int(std::max<int64_t>(digits, 0)), x);
  if (digits >= 0) return std::strtod(buf, nullptr);
  const double scale = std::pow(10.0, double(-digits));
  return std::nearbyint(x / scale) * scale;
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

using test_fn = bool (*)(const value& v, const call_args& a, render_context& ctx);

bool compare_test(const char* op, const value& v, const call_args& a, render_context& ctx) {
  const value other = arg(a, 1, "other");
  if (std::string_view(op) == "==") return equal(v, other);
  if (std::string_view(op) == "!=") return !equal(v, other);
  const auto c = compare(v, other);
  if (!c)
    ctx.fail("'" + std::string(op) + "' not supported between '" + v.type_name() + "' and '" + other.type_name() + "'");
  const std::string_view o(op);
  return o == "<" ? *c < 0 : o == "<=" ? *c <= 0 : o == ">" ? *c > 0 : *c >= 0;
}

const std::unordered_map<std::string_view, test_fn>& tests() {
  static const std::unordered_map<std::string_view, test_fn> table = {
      {"defined", [](const value& v, const call_args&, render_context&) { return !v.is_undefined(); }},
      {"undefined", [](const value& v, const call_args&, render_context&) { return v.is_undefined(); }},
      {"none", [](const value& v, const call_args&, render_context&) { return v.is_none(); }},
      {"string", [](const value& v, const call_args&, render_context&) { return v.is_string(); }},
      {"mapping", [](const value& v, const call_args&, render_context&) { return v.is_dict(); }},
      {"iterable", [](const value& v, const call_args&,
                      render_context&) { return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined(); }},
      {"sequence", [](const value& v, const call_args&,
                      render_context&) { return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined(); }},
      {"number", [](const value& v, const call_args&, render_context&) { return v.is_number() || v.is_bool(); }},
      {"integer", [](const value& v, const call_args&, render_context&) { return v.is_int(); }},
      {"float", [](const value& v, const call_args&, render_context&) { return v.is_float(); }},
      {"boolean", [](const value& v, const call_args&, render_context&) { return v.is_bool(); }},
      {"true", [](const value& v, const call_args&, render_context&) { return v.is_bool() && v.as_bool(); }},
      {"false", [](const value& v, const call_args&, render_context&) { return v.is_bool() && !v.as_bool(); }},
      {"callable", [](const value& v, const call_args&, render_context&) { return v.is_function(); }},
      {"odd",
       [](const value& v, const call_args&, render_context& ctx) {
         if (!v.is_int()) ctx.fail("the odd test needs an integer, not " + v.type_name());
         return v.as_int() % 2 != 0;
       }},
      {"even",
       [](const value& v, const call_args&, render_context& ctx) {
         if (!v.is_int()) ctx.fail("the even test needs an integer, not " + v.type_name());
         return v.as_int() % 2 == 0;
       }},
      {"divisibleby",
       [](const value& v, const call_args& a, render_context& ctx) {
         const int64_t d = int_arg(a, 1, "num", 0, ctx);
         if (!v.is_int() || d == 0) ctx.fail("divisibleby needs an integer and a non-zero divisor");
         return v.as_int() % d == 0;
       }},
      {"sameas", [](const value& v, const call_args& a, render_context&) { return equal(v, arg(a, 1, "other")); }},
      {"in",
       [](const value& v, const call_args& a, render_context& ctx) {
         const value seq = arg(a, 1, "seq");
         if (seq.is_string()) return v.is_string() && seq.as_string().find(v.as_string()) != std::string::npos;
         if (seq.is_dict()) return v.is_string() && seq.as_dict().find(v.as_string()) != nullptr;
         const value_list items = iterate(seq, ctx);
         return std::any_of(items.begin(), items.end(), [&](const value& e) { return equal(e, v); });
       }},
      {"lower", [](const value& v, const call_args&,
                   render_context&) { return v.is_string() && lower(v.as_string()) == v.as_string(); }},
      {"upper", [](const value& v, const call_args&,
                   render_context&) { return v.is_string() && upper(v.as_string()) == v.as_string(); }},
      {"escaped", [](const value&, const call_args&, render_context&) { return false; }},
      {"eq", [](const value& v, const call_args& a, render_context& c) { return compare_test("==", v, a, c); }},
      {"equalto", [](const value& v, const call_args& a, render_context& c) { return compare_test("==", v, a, c); }},
      {"==", [](const value& v, const call_args& a, render_context& c) { return compare_test("==", v, a, c); }},
      {"ne", [](const value& v, const call_args& a, render_context& c) { return compare_test("!=", v, a, c); }},
      {"!=", [](const value& v, const call_args& a, render_context& c) { return compare_test("!=", v, a, c); }},
      {"lt", [](const value& v, const call_args& a, render_context& c) { return compare_test("<", v, a, c); }},
      {"lessthan", [](const value& v, const call_args& a, render_context& c) { return compare_test("<", v, a, c); }},
      {"<", [](const value& v, const call_args& a, render_context& c) { return compare_test("<", v, a, c); }},
      {"le", [](const value& v, const call_args& a, render_context& c) { return compare_test("<=", v, a, c); }},
      {"<=", [](const value& v, const call_args& a, render_context& c) { return compare_test("<=", v, a, c); }},
      {"gt", [](const value& v, const call_args& a, render_context& c) { return compare_test(">", v, a, c); }},
      {"greaterthan", [](const value& v, const call_args& a, render_context& c) { return compare_test(">", v, a, c); }},
      {">", [](const value& v, const call_args& a, render_context& c) { return compare_test(">", v, a, c); }},
      {"ge", [](const value& v, const call_args& a, render_context& c) { return compare_test(">=", v, a, c); }},
      {">=", [](const value& v, const call_args& a, render_context& c) { return compare_test(">=", v, a, c); }},
  };
  return table;
}

// select/reject(test, args...) and selectattr/rejectattr(attr, test, args...): `first_test`
// is where the test's name is among the positional arguments.
value select_items(const call_args& a, render_context& ctx, bool by_attribute, bool keep_matching) {
  const size_t first_test = by_attribute ? 2 : 1;
  const std::string attr = by_attribute ? string_arg(a, 1, "attribute", ctx) : "";
  call_args test_args;
  test_args.positional.emplace_back();
  for (size_t i = first_test + 1; i < a.positional.size(); ++i) test_args.positional.push_back(a.positional[i]);
  test_fn test = nullptr;
  if (a.positional.size() > first_test) {
    const value name = a.positional[first_test];
    auto it = name.is_string() ? tests().find(name.as_string()) : tests().end();
    if (it == tests().end()) ctx.fail("no test named " + to_repr(name));
    test = it->second;
  }
  value_list out;
  for (const auto& item : iterate(a.positional[0], ctx)) {
    const value subject = by_attribute ? attribute_path(item, attr, ctx) : item;
    test_args.positional[0] = subject;
    const bool match = test ? test(subject, test_args, ctx) : subject.truthy();
    if (match == keep_matching) out.push_back(item);
  }
  return value::list(std::move(out));
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

using filter_fn = value (*)(const call_args& a, render_context& ctx);

std::optional<int64_t> parse_int(std::string s, int base) {
  s = strip(s, value(), true, true);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, base);
  if (errno || *end) return std::nullopt;
  return int64_t(v);
}

std::optional<double> parse_float(std::string s) {
  s = strip(s, value(), true, true);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (*end) return std::nullopt;
  return v;
}

value sort_key(const value& item, const call_args& a, render_context& ctx) {
  const value attr = arg(a, 3, "attribute");
  value key = attr.is_string() ? attribute_path(item, attr.as_string(), ctx) : item;
  if (!arg(a, 2, "case_sensitive", value(false)).truthy() && key.is_string()) key = value(lower(key.as_string()));
  return key;
}

value filter_tojson(const call_args& a, render_context& ctx) {
  // Hugging Face's tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  // json.dumps, which keeps key order and non-ASCII text, unlike Jinja's HTML-safe one.
  json_dump_options o;
  o.ensure_ascii = arg(a, 1, "ensure_ascii", value(false)).truthy();
  const value ind = arg(a, 2, "indent");
  if (!ind.is_undefined() && !ind.is_none()) {
    if (!ind.is_int()) ctx.fail("tojson: indent must be an integer");
    o.indent = int(ind.as_int());
    o.item_separator = ",";
  }
  const value seps = arg(a, 3, "separators");
  if (seps.is_list()) {
    if (seps.as_list().size() != 2 || !seps.as_list()[0].is_string() || !seps.as_list()[1].is_string())
      ctx.fail("tojson: separators must be two strings");
    o.item_separator = seps.as_list()[0].as_string();
    o.key_separator = seps.as_list()[1].as_string();
  }
  o.sort_keys = arg(a, 4, "sort_keys", value(false)).truthy();
  if (a.positional[0].is_undefined()) ctx.fail("tojson: Object of type Undefined is not JSON serializable");
  return value(json_dumps(a.positional[0], o));
}

value filter_map(const call_args& a, render_context& ctx) {
  const value attr = arg(a, size_t(-1), "attribute");
  value_list out;
  if (attr.is_string()) {
    const value fallback = arg(a, size_t(-1), "default");
    for (const auto& item : iterate(a.positional[0], ctx)) {
      value v = attribute_path(item, attr.as_string(), ctx);
      out.push_back(v.is_undefined() && !fallback.is_undefined() ? fallback : v);
    }
    return value::list(std::move(out));
  }
  if (a.positional.size() < 2 || !a.positional[1].is_string()) ctx.fail("map needs a filter name or attribute=");
  call_args inner;
  inner.positional.emplace_back();
  inner.positional.insert(inner.positional.end(), a.positional.begin() + 2, a.positional.end());
  inner.keyword = a.keyword;
  for (const auto& item : iterate(a.positional[0], ctx)) {
    inner.positional[0] = item;
    out.push_back(apply_filter(a.positional[1].as_string(), inner, ctx));
  }
  return value::list(std::move(out));
}

value filter_min_max(const call_args& a, render_context& ctx, bool want_max) {
  const value_list items = iterate(a.positional[0], ctx);
  call_args key_args;  // sort_key reads case_sensitive at 2 and attribute at 3
  key_args.keyword = a.keyword;
  const value* best = nullptr;
  value best_key;
  for (const auto& item : items) {
    value k = sort_key(item, key_args, ctx);
    const auto c = best ? compare(k, best_key) : std::optional<int>(0);
    if (!c) ctx.fail("min/max: values of type " + k.type_name() + " and " + best_key.type_name() + " do not compare");
    if (!best || (want_max ? *c > 0 : *c < 0)) best = &item, best_key = std::move(k);
  }
  return best ? *best : value(undefined_value{"min/max of an empty sequence"});
}

const std::unordered_map<std::string_view, filter_fn>& filters() {
  static const std::unordered_map<std::string_view, filter_fn> table = {
      {"tojson", filter_tojson},
      {"map", filter_map},
      {"trim", [](const call_args& a,
                  render_context&) { return value(strip(to_str(a.positional[0]), arg(a, 1, "chars"), true, true)); }},
      {"length", [](const call_args& a, render_context& ctx) { return value(length(a.positional[0], ctx)); }},
      {"count", [](const call_args& a, render_context& ctx) { return value(length(a.positional[0], ctx)); }},
      {"items",
       [](const call_args& a, render_context& ctx) {
         const value& v = a.positional[0];
         if (v.is_undefined()) return value::list();
         if (!v.is_dict()) ctx.fail("items: expected a mapping, got " + v.type_name());
         value_list out;
         for (const auto& [k, e] : v.as_dict().entries) out.push_back(value::tuple({value(k), e}));
         return value::list(std::move(out));
       }},
      {"first",
       [](const call_args& a, render_context& ctx) {
         const value_list items = iterate(a.positional[0], ctx);
         return items.empty() ? value(undefined_value{"first of an empty sequence"}) : items.front();
       }},
      {"last",
       [](const call_args& a, render_context& ctx) {
         const value_list items = iterate(a.positional[0], ctx);
         return items.empty() ? value(undefined_value{"last of an empty sequence"}) : items.back();
       }},
      {"join",
       [](const call_args& a, render_context& ctx) {
         const value sep = arg(a, 1, "d", value(""));
         const value attr = arg(a, 2, "attribute");
         std::string out;
         bool first = true;
         for (const auto& item : iterate(a.positional[0], ctx)) {
           if (!first) out += to_str(sep);
           first = false;
           out += to_str(attr.is_string() ? attribute_path(item, attr.as_string(), ctx) : item);
         }
         return value(std::move(out));
       }},
      {"upper", [](const call_args& a, render_context&) { return value(upper(to_str(a.positional[0]))); }},
      {"lower", [](const call_args& a, render_context&) { return value(lower(to_str(a.positional[0]))); }},
      {"title", [](const call_args& a, render_context&) { return value(jinja_title(to_str(a.positional[0]))); }},
      {"capitalize", [](const call_args& a, render_context&) { return value(capitalize(to_str(a.positional[0]))); }},
      {"replace",
       [](const call_args& a, render_context& ctx) {
         return value(replace(to_str(a.positional[0]), to_str(arg(a, 1, "old")), to_str(arg(a, 2, "new")),
                              int_arg(a, 3, "count", -1, ctx)));
       }},
      {"default",
       [](const call_args& a, render_context&) {
         const value& v = a.positional[0];
         const bool use_default = v.is_undefined() || (arg(a, 2, "boolean", value(false)).truthy() && !v.truthy());
         return use_default ? arg(a, 1, "default_value", value("")) : v;
       }},
      {"list", [](const call_args& a, render_context& ctx) { return value::list(iterate(a.positional[0], ctx)); }},
      {"string", [](const call_args& a, render_context&) { return value(to_str(a.positional[0])); }},
      {"int",
       [](const call_args& a, render_context& ctx) {
         const value& v = a.positional[0];
         const value fallback = arg(a, 1, "default", value(0));
         if (v.is_int()) return v;
         if (v.is_bool()) return value(int64_t(v.as_bool()));
         if (v.is_float()) return std::isfinite(v.as_double()) ? value(int64_t(v.as_double())) : fallback;
         if (!v.is_string()) return fallback;
         if (auto i = parse_int(v.as_string(), int(int_arg(a, 2, "base", 10, ctx)))) return value(*i);
         if (auto d = parse_float(v.as_string()); d && std::isfinite(*d)) return value(int64_t(*d));
         return fallback;
       }},
      {"float",
       [](const call_args& a, render_context&) {
         const value& v = a.positional[0];
         const value fallback = arg(a, 1, "default", value(0.0));
         if (v.is_number() || v.is_bool()) return value(v.as_double());
         if (v.is_string())
           if (auto d = parse_float(v.as_string())) return value(*d);
         return fallback;
       }},
      {"abs",
       [](const call_args& a, render_context& ctx) {
         const value& v = a.positional[0];
         if (v.is_int()) return value(v.as_int() < 0 ? -v.as_int() : v.as_int());
         if (v.is_float()) return value(std::fabs(v.as_double()));
         if (v.is_bool()) return value(int64_t(v.as_bool()));
         ctx.fail("bad operand type for abs(): '" + v.type_name() + "'");
       }},
      {"round",
       [](const call_args& a, render_context& ctx) {
         const value& v = a.positional[0];
         const int64_t digits = int_arg(a, 1, "precision", 0, ctx);
         const value method = arg(a, 2, "method", value("common"));
         if (!v.is_number() && !v.is_bool()) ctx.fail("round: expected a number, got " + v.type_name());
         const std::string m = to_str(method);
         if (m == "common") return v.is_float() ? value(python_round(v.as_double(), digits)) : v;
         if (m != "floor" && m != "ceil") ctx.fail("round: method must be 'common', 'ceil' or 'floor'");
         const double scale = std::pow(10.0, double(digits));
         const double x = v.as_double() * scale;
         return value((m == "floor" ? std::floor(x) : std::ceil(x)) / scale);
       }},
      {"reverse",
       [](const call_args& a, render_context& ctx) {
         const value& v = a.positional[0];
         if (v.is_string()) {
           auto cps = code_points(v.as_string());
           std::string out;
           for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
           return value(std::move(out));
         }
         value_list items = iterate(v, ctx);
         std::reverse(items.begin(), items.end());
         return value::list(std::move(items));
       }},
      {"sort",
       [](const call_args& a, render_context& ctx) {
         value_list items = iterate(a.positional[0], ctx);
         std::vector<std::pair<value, value>> keyed;  // (key, item)
         for (auto& item : items) keyed.emplace_back(sort_key(item, a, ctx), std::move(item));
         const bool reverse = arg(a, 1, "reverse", value(false)).truthy();
         std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
           const auto c = compare(x.first, y.first);
           if (!c)
             ctx.fail("sort: values of type " + x.first.type_name() + " and " + y.first.type_name() +
                      " do not compare");
           return reverse ? *c > 0 : *c < 0;
         });
         value_list out;
         for (auto& [k, item] : keyed) out.push_back(std::move(item));
         return value::list(std::move(out));
       }},
      {"unique",
       [](const call_args& a, render_context& ctx) {
         call_args key_args;  // unique(case_sensitive, attribute) -> sort_key's slots 2 and 3
         key_args.keyword = a.keyword;
         if (a.positional.size() > 1) key_args.keyword.emplace_back("case_sensitive", a.positional[1]);
         if (a.positional.size() > 2) key_args.keyword.emplace_back("attribute", a.positional[2]);
         value_list out, seen;
         for (const auto& item : iterate(a.positional[0], ctx)) {
           const value k = sort_key(item, key_args, ctx);
           if (std::any_of(seen.begin(), seen.end(), [&](const value& s) { return equal(s, k); })) continue;
           seen.push_back(k);
           out.push_back(item);
         }
         return value::list(std::move(out));
       }},
      {"select", [](const call_args& a, render_context& ctx) { return select_items(a, ctx, false, true); }},
      {"reject", [](const call_args& a, render_context& ctx) { return select_items(a, ctx, false, false); }},
      {"selectattr", [](const call_args& a, render_context& ctx) { return select_items(a, ctx, true, true); }},
      {"rejectattr", [](const call_args& a, render_context& ctx) { return select_items(a, ctx, true, false); }},
      {"indent",
       [](const call_args& a, render_context& ctx) {
         const value width = arg(a, 1, "width", value(4));
         const std::string pad =
             width.is_string() ? width.as_string() : std::string(size_t(int_arg(a, 1, "width", 4, ctx)), ' ');
         return value(indent(to_str(a.positional[0]), pad, arg(a, 2, "first", value(false)).truthy(),
                             arg(a, 3, "blank", value(false)).truthy()));
       }},
      {"safe",
       [](const call_args& a, render_context&) {
         return a.positional[0].is_string() ? a.positional[0] : value(to_str(a.positional[0]));
       }},
      {"escape", [](const call_args& a, render_context&) { return value(html_escape(to_str(a.positional[0]))); }},
      {"e", [](const call_args& a, render_context&) { return value(html_escape(to_str(a.positional[0]))); }},
      {"min", [](const call_args& a, render_context& ctx) { return filter_min_max(a, ctx, false); }},
      {"max", [](const call_args& a, render_context& ctx) { return filter_min_max(a, ctx, true); }},
      {"attr", [](const call_args& a,
                  render_context& ctx) { return get_attribute(a.positional[0], string_arg(a, 1, "name", ctx), ctx); }},
  };
  return table;
}

// ---------------------------------------------------------------------------------------
// Globals
// ---------------------------------------------------------------------------------------

value global_range(const call_args& a, render_context& ctx) {
  int64_t start = 0, stop = 0, step = 1;
  if (a.positional.size() == 1) {
    stop = int_arg(a, 0, "stop", 0, ctx);
  } else {
    start = int_arg(a, 0, "start", 0, ctx);
    stop = int_arg(a, 1, "stop", 0, ctx);
    step = int_arg(a, 2, "step", 1, ctx);
  }
  if (step == 0) ctx.fail("range() arg 3 must not be zero");
  value_list out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    if (out.size() >= 1'000'000) ctx.fail("range() longer than 1,000,000 items");
    out.emplace_back(i);
  }
  return value::list(std::move(out));
}

value global_strftime_now(const call_args& a, render_context& ctx) {
  const std::string format = string_arg(a, 0, "format", ctx);
  const std::time_t t = std::chrono::system_clock::to_time_t(ctx.now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[512];
  const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
  if (n == 0 && !format.empty()) ctx.fail("strftime_now: the format gives an empty or too long text");
  return value(std::string(buf, n));
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

value apply_filter(std::string_view name, const call_args& args, render_context& ctx) {
  const auto& table = filters();
  auto it = table.find(name == "d" ? std::string_view("default") : name);
  if (it == table.end()) ctx.fail("no filter named '" + std::string(name) + "'");
  return it->second(args, ctx);
}

bool apply_test(std::string_view name, const call_args& args, render_context& ctx) {
  auto it = tests().find(name);
  if (it == tests().end()) ctx.fail("no test named '" + std::string(name) + "'");
  return it->second(args.positional[0], args, ctx);
}

bool is_filter(std::string_view name) { return name == "d" || filters().count(name); }
bool is_test(std::string_view name) { return tests().count(name) != 0; }

std::optional<value> call_method(const value& obj, std::string_view name, const call_args& a, render_context& ctx) {
  if (obj.is_string()) {
    // Shift so that the method's first argument is at positional 1, as for filters.
    const std::string& s = obj.as_string();
    call_args m;
    m.positional.push_back(obj);
    m.positional.insert(m.positional.end(), a.positional.begin(), a.positional.end());
    m.keyword = a.keyword;
    if (name == "startswith" || name == "endswith")
      return value(affix_matches(s, arg(m, 1, name == "startswith" ? "prefix" : "suffix"), name == "startswith", ctx));
    if (name == "strip" || name == "lstrip" || name == "rstrip")
      return value(strip(s, arg(m, 1, "chars"), name != "rstrip", name != "lstrip"));
    if (name == "split") return split(s, arg(m, 1, "sep"), int_arg(m, 2, "maxsplit", -1, ctx), ctx);
    if (name == "upper") return value(upper(s));
    if (name == "lower") return value(lower(s));
    if (name == "title") return value(python_title(s));
    if (name == "capitalize") return value(capitalize(s));
    if (name == "replace")
      return value(
          replace(s, string_arg(m, 1, "old", ctx), string_arg(m, 2, "new", ctx), int_arg(m, 3, "count", -1, ctx)));
    if (name == "join") {
      std::string out;
      bool first = true;
      for (const auto& item : iterate(arg(m, 1, "iterable"), ctx)) {
        if (!item.is_string()) ctx.fail("join: expected str instance, " + item.type_name() + " found");
        if (!first) out += s;
        first = false;
        out += item.as_string();
      }
      return value(std::move(out));
    }
    if (name == "find" || name == "count") {
      const std::string sub = string_arg(m, 1, "sub", ctx);
      if (name == "find") {
        const size_t hit = s.find(sub);
        return value(hit == std::string::npos ? int64_t(-1) : int64_t(code_points(s.substr(0, hit)).size()));
      }
      if (sub.empty()) return value(int64_t(code_points(s).size()) + 1);
      int64_t n = 0;
      for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size())) ++n;
      return value(n);
    }
    return std::nullopt;
  }
  if (obj.is_dict()) {
    const auto& d = obj.as_dict();
    if (name == "items" || name == "keys" || name == "values") {
      value_list out;
      for (const auto& [k, v] : d.entries)
        out.push_back(name == "items" ? value::tuple({value(k), v}) : name == "keys" ? value(k) : v);
      return value::list(std::move(out));
    }
    if (name == "get") {
      const value key = arg(a, 0, "key");
      const value* found = key.is_string() ? d.find(key.as_string()) : nullptr;
      return found ? *found : arg(a, 1, "default", value::none());
    }
  }
  return std::nullopt;
}

void add_globals(scope& globals) {
  globals.vars["range"] = value::function("range", global_range);
  globals.vars["strftime_now"] = value::function("strftime_now", global_strftime_now);
  globals.vars["raise_exception"] =
      value::function("raise_exception", [](const call_args& a, render_context&) -> value {
        // The template's own message, verbatim: it is addressed to whoever sent the request.
        throw error(error_kind::failed, to_str(arg(a, 0, "message")), "chat_template");
      });
  const auto make_namespace = [](const call_args& a, render_context& ctx) {
    auto ns = std::make_shared<namespace_value>();
    for (const auto& p : a.positional) {
      if (!p.is_dict()) ctx.fail("namespace() takes only a mapping as positional argument");
      for (const auto& [k, v] : p.as_dict().entries) ns->attributes.set(k, v);
    }
    for (const auto& [k, v] : a.keyword) ns->attributes.set(k, v);
    return value(ns);
  };
  globals.vars["namespace"] = value::function("namespace", make_namespace);
  globals.vars["dict"] = value::function("dict", [](const call_args& a, render_context&) {
    value_dict d;
    for (const auto& [k, v] : a.keyword) d.set(k, v);
    return value::dict(std::move(d));
  });
}

}  // namespace troupe::jinja
