// The values a template computes with, with Python's meaning (Jinja is Python's): str() and
// repr() text, truthiness, equality, ordering. Lists and dicts are shared by reference, as in
// Python, so `namespace` attributes set inside a loop are seen after it. Internal to
// troupe_chat: callers give and get JSON (jinja.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace troupe::jinja {

class value;
struct render_context;

using value_list = std::vector<value>;

// Insertion-ordered, string-keyed (chat messages and tool schemas are JSON objects, and
// `tojson` must keep their key order). Linear lookup: template dicts have a handful of keys.
struct value_dict {
  std::vector<std::pair<std::string, value>> entries;
  const value* find(std::string_view key) const;
  void set(std::string key, value v);
};

// Arguments of a call, filter or test (the piped value of a filter is positional 0).
struct call_args {
  std::vector<value> positional;
  std::vector<std::pair<std::string, value>> keyword;
  // Positional i, else keyword `name`, else nullptr.
  const value* get(size_t i, std::string_view name) const;
};

struct function_value {
  std::string name;
  std::function<value(const call_args&, render_context&)> call;
};

// `namespace(...)`: an object whose attributes `{% set ns.x = ... %}` may assign.
struct namespace_value {
  value_dict attributes;
};

struct undefined_value {
  std::string message;  // the error when it is used: "'x' is undefined"
};
struct none_value {};

class value {
 public:
  using list_ptr = std::shared_ptr<value_list>;
  using dict_ptr = std::shared_ptr<value_dict>;
  using namespace_ptr = std::shared_ptr<namespace_value>;
  using function_ptr = std::shared_ptr<const function_value>;

  value() : v_(undefined_value{}) {}
  value(undefined_value u) : v_(std::move(u)) {}
  value(none_value) : v_(none_value{}) {}
  value(bool b) : v_(b) {}
  value(int i) : v_(int64_t{i}) {}
  value(int64_t i) : v_(i) {}
  value(double d) : v_(d) {}
  value(std::string s) : v_(std::move(s)) {}
  value(std::string_view s) : v_(std::string(s)) {}
  value(const char* s) : v_(std::string(s)) {}
  value(list_ptr l) : v_(std::move(l)) {}
  value(dict_ptr d) : v_(std::move(d)) {}
  value(namespace_ptr n) : v_(std::move(n)) {}
  value(function_ptr f) : v_(std::move(f)) {}

  static value list(value_list items = {}) { return value(std::make_shared<value_list>(std::move(items))); }
  // A list that prints as Python's tuple, `(1, 2)`: dict items, `(a, b)` literals.
  static value tuple(value_list items) {
    value v = list(std::move(items));
    v.tuple_ = true;
    return v;
  }
  static value dict(value_dict d = {}) { return value(std::make_shared<value_dict>(std::move(d))); }
  static value none() { return value(none_value{}); }
  static value function(std::string name, std::function<value(const call_args&, render_context&)> f);

  bool is_undefined() const { return std::holds_alternative<undefined_value>(v_); }
  bool is_none() const { return std::holds_alternative<none_value>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_int() const { return std::holds_alternative<int64_t>(v_); }  // bool is not an int here
  bool is_float() const { return std::holds_alternative<double>(v_); }
  bool is_number() const { return is_int() || is_float(); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_list() const { return std::holds_alternative<list_ptr>(v_); }  // tuples too
  bool is_tuple() const { return tuple_; }
  bool is_dict() const { return std::holds_alternative<dict_ptr>(v_); }
  bool is_namespace() const { return std::holds_alternative<namespace_ptr>(v_); }
  bool is_function() const { return std::holds_alternative<function_ptr>(v_); }

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const { return std::get<int64_t>(v_); }
  double as_double() const {
    return is_int() ? double(as_int()) : is_bool() ? double(as_bool()) : std::get<double>(v_);
  }
  const std::string& as_string() const { return std::get<std::string>(v_); }
  value_list& as_list() const { return *std::get<list_ptr>(v_); }
  value_dict& as_dict() const { return *std::get<dict_ptr>(v_); }
  namespace_value& as_namespace() const { return *std::get<namespace_ptr>(v_); }
  const function_value& as_function() const { return *std::get<function_ptr>(v_); }
  const std::string& undefined_message() const { return std::get<undefined_value>(v_).message; }

  bool truthy() const;
  std::string type_name() const;  // Python's: "str", "int", "list", "dict", "NoneType", ...

 private:
  std::variant<undefined_value, none_value, bool, int64_t, double, std::string, list_ptr, dict_ptr, namespace_ptr,
               function_ptr>
      v_;
  bool tuple_ = false;
};

// JSON in and out. Out fails (troupe::error) for undefined and functions, as Python's
// json.dumps fails on them.
value from_json(const nlohmann::ordered_json& j);
nlohmann::ordered_json to_json(const value& v);

// Python's float repr: the shortest text that reads back as the same double ("0.1", "1.0",
// "1e+20", "1.5e-05", "inf", "nan").
std::string float_repr(double d);
std::string to_str(const value& v);   // str(): what {{ v }} prints; undefined prints nothing
std::string to_repr(const value& v);  // repr(): how a string prints inside a list or dict

struct json_dump_options {
  std::optional<int> indent;  // none: one line
  std::string item_separator = ", ", key_separator = ": ";
  bool ensure_ascii = false, sort_keys = false;
};
// Python's json.dumps: HF transformers' `tojson` filter (not Jinja's HTML-safe one).
std::string json_dumps(const value& v, const json_dump_options& o);

bool equal(const value& a, const value& b);
// <0, 0, >0 for numbers, strings and lists (lexicographic); nullopt where Python raises.
std::optional<int> compare(const value& a, const value& b);

// Python's code-point view of a UTF-8 string, for len(), indexing, slicing and reversal.
std::vector<std::string_view> code_points(std::string_view s);

}  // namespace troupe::jinja
