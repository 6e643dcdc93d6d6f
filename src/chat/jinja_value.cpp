#include "src/chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "src/model/unicode_text.h"
#include "troupe/error.h"

namespace troupe::jinja {

// ---------------------------------------------------------------------------------------
// Containers and arguments
// ---------------------------------------------------------------------------------------

const value* value_dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

void value_dict::set(std::string key, value v) {
  for (auto& [k, old] : entries)
    if (k == key) {
      old = std::move(v);
      return;
    }
  entries.emplace_back(std::move(key), std::move(v));
}

const value* call_args::get(size_t i, std::string_view name) const {
  if (i < positional.size()) return &positional[i];
  for (const auto& [k, v] : keyword)
    if (k == name) return &v;
  return nullptr;
}

value value::function(std::string name, std::function<value(const call_args&, render_context&)> f) {
  return value(std::make_shared<const function_value>(function_value{std::move(name), std::move(f)}));
}

bool value::truthy() const {
  if (is_undefined() || is_none()) return false;
  if (is_bool()) return as_bool();
  if (is_int()) return as_int() != 0;
  if (is_float()) return as_double() != 0.0;
  if (is_string()) return !as_string().empty();
  if (is_list()) return !as_list().empty();
  if (is_dict()) return !as_dict().entries.empty();
  return true;  // namespaces and functions
}

std::string value::type_name() const {
  if (is_undefined()) return "Undefined";
  if (is_none()) return "NoneType";
  if (is_bool()) return "bool";
  if (is_int()) return "int";
  if (is_float()) return "float";
  if (is_string()) return "str";
  if (is_list()) return tuple_ ? "tuple" : "list";
  if (is_dict()) return "dict";
  if (is_namespace()) return "Namespace";
  return "function";
}

// ---------------------------------------------------------------------------------------
// JSON in and out
// ---------------------------------------------------------------------------------------

value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return value::none();
    case nlohmann::json::value_t::boolean:
      return value(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return value(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      return u > uint64_t(INT64_MAX) ? value(double(u)) : value(int64_t(u));
    }
    case nlohmann::json::value_t::number_float:
      return value(j.get<double>());
    case nlohmann::json::value_t::string:
      return value(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      value_list items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_json(e));
      return value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      value_dict d;
      d.entries.reserve(j.size());
      for (const auto& [k, e] : j.items()) d.entries.emplace_back(k, from_json(e));
      return value::dict(std::move(d));
    }
    default:
      throw error(error_kind::failed, "chat template: JSON of type " + std::string(j.type_name()) + " not supported",
                  "chat_template");
  }
}

nlohmann::ordered_json to_json(const value& v) {
  if (v.is_none()) return nullptr;
  if (v.is_bool()) return v.as_bool();
  if (v.is_int()) return v.as_int();
  if (v.is_float()) return v.as_double();
  if (v.is_string()) return v.as_string();
  if (v.is_list()) {
    auto a = nlohmann::ordered_json::array();
    for (const auto& e : v.as_list()) a.push_back(to_json(e));
    return a;
  }
  if (v.is_dict()) {
    auto o = nlohmann::ordered_json::object();
    for (const auto& [k, e] : v.as_dict().entries) o[k] = to_json(e);
    return o;
  }
  throw error(error_kind::failed, "chat template: a value of type " + v.type_name() + " is not JSON serializable",
              "chat_template");
}

// ---------------------------------------------------------------------------------------
// str() and repr()
// ---------------------------------------------------------------------------------------

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  // Shortest round-trip digits, as Python's repr; then Python's layout of them: fixed
  // notation for exponents in [-4, 16), scientific outside.
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  (void)ec;
  std::string s(buf, end);  // "-1.2345e+17"
  const bool negative = s[0] == '-';
  if (negative) s.erase(0, 1);
  const size_t e = s.find('e');
  const int exponent = std::atoi(s.c_str() + e + 1);
  std::string digits = s.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(size_t(-exponent - 1), '0') + digits;
    } else if (size_t(exponent) + 1 >= digits.size()) {
      out += digits + std::string(size_t(exponent) + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, size_t(exponent) + 1) + "." + digits.substr(size_t(exponent) + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_text[16];
  std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp_text;
}

namespace {

std::string string_repr(const std::string& s) {
  const char quote = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (const unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == quote) {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += char(c);
    }
  }
  return out + quote;
}

}  // namespace

std::string to_str(const value& v) {
  if (v.is_undefined()) return "";
  if (v.is_none()) return "None";
  if (v.is_bool()) return v.as_bool() ? "True" : "False";
  if (v.is_int()) return std::to_string(v.as_int());
  if (v.is_float()) return float_repr(v.as_double());
  if (v.is_string()) return v.as_string();
  if (v.is_list()) {
    const auto& items = v.as_list();
    std::string out = v.is_tuple() ? "(" : "[";
    for (size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + to_repr(items[i]);
    if (v.is_tuple()) return out + (items.size() == 1 ? ",)" : ")");
    return out + "]";
  }
  if (v.is_dict() || v.is_namespace()) {
    const auto& entries = v.is_dict() ? v.as_dict().entries : v.as_namespace().attributes.entries;
    std::string out = "{";
    for (size_t i = 0; i < entries.size(); ++i)
      out += (i ? ", " : "") + string_repr(entries[i].first) + ": " + to_repr(entries[i].second);
    out += "}";
    return v.is_dict() ? out : "<Namespace " + out + ">";
  }
  return "<function " + v.as_function().name + ">";
}

std::string to_repr(const value& v) { return v.is_string() ? string_repr(v.as_string()) : to_str(v); }

// ---------------------------------------------------------------------------------------
// json.dumps
// ---------------------------------------------------------------------------------------

namespace {

void dump_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const auto escape_u = [&](unsigned u) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "\\u%04x", u & 0xFFFFu);
      out += hex;
    };
    if (c >= 0x80 && ensure_ascii) {
      const char32_t cp = unicode::next_code_point(s, i);
      if (cp >= 0x10000) {
        escape_u(0xD800 + ((cp - 0x10000) >> 10));
        escape_u(0xDC00 + ((cp - 0x10000) & 0x3FF));
      } else {
        escape_u(unsigned(cp));
      }
      continue;
    }
    ++i;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20 || (c == 0x7f && ensure_ascii))
          escape_u(c);
        else
          out += char(c);
    }
  }
  out += '"';
}

void dump(std::string& out, const value& v, const json_dump_options& o, int depth) {
  const auto newline = [&](int level) {
    if (!o.indent) return;
    out += '\n';
    out.append(size_t(*o.indent) * size_t(level), ' ');
  };
  if (v.is_none()) {
    out += "null";
  } else if (v.is_bool()) {
    out += v.as_bool() ? "true" : "false";
  } else if (v.is_int()) {
    out += std::to_string(v.as_int());
  } else if (v.is_float()) {
    const double d = v.as_double();
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d < 0 ? "-Infinity" : "Infinity") : float_repr(d);
  } else if (v.is_string()) {
    dump_string(out, v.as_string(), o.ensure_ascii);
  } else if (v.is_list()) {
    const auto& items = v.as_list();
    if (items.empty()) {
      out += "[]";
      return;
    }
    out += '[';
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += o.item_separator;
      newline(depth + 1);
      dump(out, items[i], o, depth + 1);
    }
    newline(depth);
    out += ']';
  } else if (v.is_dict()) {
    auto entries = v.as_dict().entries;
    if (entries.empty()) {
      out += "{}";
      return;
    }
    if (o.sort_keys)
      std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    out += '{';
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i) out += o.item_separator;
      newline(depth + 1);
      dump_string(out, entries[i].first, o.ensure_ascii);
      out += o.key_separator;
      dump(out, entries[i].second, o, depth + 1);
    }
    newline(depth);
    out += '}';
  } else {
    throw error(error_kind::failed,
                "chat template: tojson: a value of type " + v.type_name() + " is not JSON serializable",
                "chat_template");
  }
}

}  // namespace

std::string json_dumps(const value& v, const json_dump_options& o) {
  std::string out;
  dump(out, v, o, 0);
  return out;
}

// ---------------------------------------------------------------------------------------
// Equality and order
// ---------------------------------------------------------------------------------------

namespace {
bool numeric(const value& v) { return v.is_number() || v.is_bool(); }
}  // namespace

bool equal(const value& a, const value& b) {
  if (numeric(a) && numeric(b)) {
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.is_string() && b.is_string()) return a.as_string() == b.as_string();
  if (a.is_none() || b.is_none()) return a.is_none() && b.is_none();
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_list() && b.is_list()) {
    const auto &x = a.as_list(), &y = b.as_list();
    if (x.size() != y.size() || a.is_tuple() != b.is_tuple()) return false;
    for (size_t i = 0; i < x.size(); ++i)
      if (!equal(x[i], y[i])) return false;
    return true;
  }
  if (a.is_dict() && b.is_dict()) {
    const auto &x = a.as_dict(), &y = b.as_dict();
    if (x.entries.size() != y.entries.size()) return false;
    for (const auto& [k, e] : x.entries) {
      const value* other = y.find(k);
      if (!other || !equal(e, *other)) return false;
    }
    return true;
  }
  if (a.is_namespace() && b.is_namespace()) return &a.as_namespace() == &b.as_namespace();
  if (a.is_function() && b.is_function()) return &a.as_function() == &b.as_function();
  return false;
}

std::optional<int> compare(const value& a, const value& b) {
  if (numeric(a) && numeric(b)) {
    if (a.is_int() && b.is_int()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    const double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list()) {
    const auto &x = a.as_list(), &y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equal(x[i], y[i])) continue;
      return compare(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  return std::nullopt;
}

std::vector<std::string_view> code_points(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::min(s.size() - i, size_t(unicode::utf8_length(static_cast<unsigned char>(s[i]))));
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace troupe::jinja
