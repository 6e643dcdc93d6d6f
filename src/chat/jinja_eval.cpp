// Evaluation of expressions and rendering of statements, with Jinja2's semantics: a missing
// variable, attribute or key is undefined (falsy, prints nothing, iterates as empty), and
// using it any further (an attribute of it, arithmetic, calling it) is an error.
#include <cmath>

#include <nlohmann/json.hpp>

#include "src/chat/jinja.h"
#include "src/chat/jinja_ast.h"
#include "src/chat/jinja_builtins.h"
#include "src/chat/jinja_lexer.h"
#include "troupe/error.h"

namespace troupe::jinja {

// ---------------------------------------------------------------------------------------
// Scopes and errors
// ---------------------------------------------------------------------------------------

const value* scope::find(const std::string& name) const {
  for (const scope* s = this; s; s = s->parent.get()) {
    auto it = s->vars.find(name);
    if (it != s->vars.end()) return &it->second;
  }
  return nullptr;
}

void render_context::fail(std::string_view message) const { fail_at(source, pos, "error", message); }

namespace {

// Makes `inner` the current scope until destroyed.
class scope_guard {
 public:
  scope_guard(render_context& ctx, std::shared_ptr<scope> inner) : ctx_(ctx), outer_(ctx.current) {
    ctx_.current = std::move(inner);
  }
  ~scope_guard() { ctx_.current = std::move(outer_); }
  scope_guard(const scope_guard&) = delete;
  scope_guard& operator=(const scope_guard&) = delete;

 private:
  render_context& ctx_;
  std::shared_ptr<scope> outer_;
};

std::shared_ptr<scope> child_scope(const render_context& ctx) {
  auto s = std::make_shared<scope>();
  s->parent = ctx.current;
  return s;
}

value missing_attribute(const value& obj, std::string_view name) {
  std::string message = "'";
  message += obj.type_name();
  message += " object' has no attribute '";
  message += name;
  message += "'";
  return value(undefined_value{std::move(message)});
}

// Python's slice.indices(): clamps start and stop for a sequence of `n` items.
void slice_indices(int64_t n, const value& start, const value& stop, const value& step, int64_t& b, int64_t& e,
                   int64_t& s, render_context& ctx) {
  const auto as_index = [&](const value& v, int64_t fallback) {
    if (v.is_undefined() || v.is_none()) return fallback;
    if (!v.is_int()) ctx.fail("slice indices must be integers or None");
    return v.as_int();
  };
  s = as_index(step, 1);
  if (s == 0) ctx.fail("slice step cannot be zero");
  const auto clamp = [&](int64_t i) {
    if (i < 0) i += n;
    return s > 0 ? std::min(std::max<int64_t>(i, 0), n) : std::min(std::max<int64_t>(i, -1), n - 1);
  };
  b = start.is_undefined() || start.is_none() ? (s > 0 ? 0 : n - 1) : clamp(as_index(start, 0));
  e = stop.is_undefined() || stop.is_none() ? (s > 0 ? n : -1) : clamp(as_index(stop, 0));
}

bool int_like(const value& v) { return v.is_int() || v.is_bool(); }
int64_t to_int64(const value& v) { return v.is_bool() ? int64_t(v.as_bool()) : v.as_int(); }

[[noreturn]] void unsupported(std::string_view op, const value& a, const value& b, render_context& ctx) {
  ctx.fail("unsupported operand type(s) for " + std::string(op) + ": '" + a.type_name() + "' and '" + b.type_name() +
           "'");
}

value repeat(const value& seq, int64_t times) {
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.as_string();
    return value(std::move(out));
  }
  value_list out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.as_list().begin(), seq.as_list().end());
  return value::list(std::move(out));
}

value arithmetic(const std::string& op, const value& a, const value& b, render_context& ctx) {
  if (a.is_undefined()) ctx.fail_undefined(a);
  if (b.is_undefined()) ctx.fail_undefined(b);
  const bool numbers = (a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool());
  if (numbers && int_like(a) && int_like(b) && op != "/") {
    const int64_t x = to_int64(a), y = to_int64(b);
    if (op == "+") return value(x + y);
    if (op == "-") return value(x - y);
    if (op == "*") return value(x * y);
    if ((op == "//" || op == "%") && y == 0) ctx.fail("integer division or modulo by zero");
    if (op == "//") return value(x / y - ((x % y != 0 && ((x < 0) != (y < 0))) ? 1 : 0));
    if (op == "%") return value(((x % y) + y) % y);
    if (op == "**") {
      if (y < 0) return value(std::pow(double(x), double(y)));
      uint64_t r = 1, base = uint64_t(x);  // by squaring; wraps on overflow where Python would grow
      for (int64_t e = y; e > 0; e >>= 1, base *= base)
        if (e & 1) r *= base;
      return value(int64_t(r));
    }
  }
  if (numbers) {
    const double x = a.as_double(), y = b.as_double();
    if (op == "+") return value(x + y);
    if (op == "-") return value(x - y);
    if (op == "*") return value(x * y);
    if (op == "**") return value(std::pow(x, y));
    if (y == 0) ctx.fail("float division by zero");
    if (op == "/") return value(x / y);
    if (op == "//") return value(std::floor(x / y));
    if (op == "%") {
      const double m = std::fmod(x, y);
      return value(m != 0 && ((m < 0) != (y < 0)) ? m + y : m);
    }
  }
  if (op == "+" && a.is_string() && b.is_string()) return value(a.as_string() + b.as_string());
  if (op == "+" && a.is_list() && b.is_list()) {
    value_list out = a.as_list();
    out.insert(out.end(), b.as_list().begin(), b.as_list().end());
    return value::list(std::move(out));
  }
  if (op == "*" && (a.is_string() || a.is_list()) && int_like(b)) return repeat(a, to_int64(b));
  if (op == "*" && (b.is_string() || b.is_list()) && int_like(a)) return repeat(b, to_int64(a));
  unsupported(op, a, b, ctx);
}

bool contains(const value& container, const value& item, render_context& ctx) {
  if (container.is_string()) {
    if (!item.is_string()) ctx.fail("'in <string>' requires string as left operand, not " + item.type_name());
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_list()) {
    for (const auto& e : container.as_list())
      if (equal(e, item)) return true;
    return false;
  }
  if (container.is_dict()) return item.is_string() && container.as_dict().find(item.as_string()) != nullptr;
  if (container.is_undefined()) return false;  // iterates as empty
  ctx.fail("argument of type '" + container.type_name() + "' is not iterable");
}

bool compare_op(const std::string& op, const value& a, const value& b, render_context& ctx) {
  if (op == "==") return equal(a, b);
  if (op == "!=") return !equal(a, b);
  if (op == "in") return contains(b, a, ctx);
  if (op == "not in") return !contains(b, a, ctx);
  if (a.is_undefined()) ctx.fail_undefined(a);
  if (b.is_undefined()) ctx.fail_undefined(b);
  const auto c = compare(a, b);
  if (!c)
    ctx.fail("'" + op + "' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
  if (op == "<") return *c < 0;
  if (op == "<=") return *c <= 0;
  if (op == ">") return *c > 0;
  return *c >= 0;
}

void assign(const assign_target& target, const value& v, render_context& ctx) {
  if (!target.attribute.empty()) {
    const value* ns = ctx.current->find(target.names[0]);
    if (!ns || !ns->is_namespace())
      ctx.fail("cannot assign attribute on non-namespace object '" + target.names[0] + "'");
    ns->as_namespace().attributes.set(target.attribute, v);
    return;
  }
  if (!target.tuple) {
    ctx.current->vars[target.names[0]] = v;
    return;
  }
  const value_list items = iterate(v, ctx);
  if (items.size() != target.names.size())
    ctx.fail(items.size() < target.names.size()
                 ? "not enough values to unpack (expected " + std::to_string(target.names.size()) + ", got " +
                       std::to_string(items.size()) + ")"
                 : "too many values to unpack (expected " + std::to_string(target.names.size()) + ")");
  for (size_t i = 0; i < items.size(); ++i) ctx.current->vars[target.names[i]] = items[i];
}

}  // namespace

value get_attribute(const value& obj, const std::string& name, render_context& ctx) {
  if (obj.is_undefined()) ctx.fail_undefined(obj);
  const value* found = nullptr;
  if (obj.is_dict()) found = obj.as_dict().find(name);
  if (obj.is_namespace()) found = obj.as_namespace().attributes.find(name);
  return found ? *found : missing_attribute(obj, name);
}

// ---------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------

value name_expr::eval(render_context& ctx) const {
  const value* v = ctx.current->find(name);
  return v ? *v : value(undefined_value{"'" + name + "' is undefined"});
}

value list_expr::eval(render_context& ctx) const {
  value_list out;
  out.reserve(items.size());
  for (const auto& e : items) out.push_back(e->eval(ctx));
  return tuple ? value::tuple(std::move(out)) : value::list(std::move(out));
}

value dict_expr::eval(render_context& ctx) const {
  value_dict out;
  for (const auto& [k, v] : entries) {
    const value key = k->eval(ctx);
    out.set(key.is_string() ? key.as_string() : to_str(key), v->eval(ctx));
  }
  return value::dict(std::move(out));
}

value attribute_expr::eval(render_context& ctx) const {
  const value obj = object->eval(ctx);
  ctx.pos = pos;
  return get_attribute(obj, name, ctx);
}

value subscript_expr::eval(render_context& ctx) const {
  const value obj = object->eval(ctx);
  const value key = index->eval(ctx);
  ctx.pos = pos;
  if (obj.is_undefined()) ctx.fail_undefined(obj);
  if (obj.is_dict() || obj.is_namespace())
    return get_attribute(obj, key.is_string() ? key.as_string() : to_str(key), ctx);
  if ((obj.is_list() || obj.is_string()) && int_like(key)) {
    int64_t i = to_int64(key);
    if (obj.is_list()) {
      const auto& items = obj.as_list();
      if (i < 0) i += int64_t(items.size());
      if (i >= 0 && i < int64_t(items.size())) return items[size_t(i)];
    } else {
      const auto chars = code_points(obj.as_string());
      if (i < 0) i += int64_t(chars.size());
      if (i >= 0 && i < int64_t(chars.size())) return value(chars[size_t(i)]);
    }
    return value(undefined_value{obj.type_name() + " index " + std::to_string(to_int64(key)) + " out of range"});
  }
  if (key.is_string()) return missing_attribute(obj, key.as_string());
  return value(undefined_value{"'" + obj.type_name() + " object' has no item " + to_repr(key)});
}

value slice_expr::eval(render_context& ctx) const {
  const value obj = object->eval(ctx);
  const value b = start ? start->eval(ctx) : value(), e = stop ? stop->eval(ctx) : value(),
              s = step ? step->eval(ctx) : value();
  ctx.pos = pos;
  if (obj.is_undefined()) ctx.fail_undefined(obj);
  if (!obj.is_list() && !obj.is_string()) ctx.fail("'" + obj.type_name() + "' object is not subscriptable");
  std::vector<std::string_view> chars;
  if (obj.is_string()) chars = code_points(obj.as_string());
  const int64_t n = obj.is_list() ? int64_t(obj.as_list().size()) : int64_t(chars.size());
  int64_t first, last, stride;
  slice_indices(n, b, e, s, first, last, stride, ctx);
  value_list items;
  std::string text;
  for (int64_t i = first; stride > 0 ? i < last : i > last; i += stride) {
    if (obj.is_list())
      items.push_back(obj.as_list()[size_t(i)]);
    else
      text += chars[size_t(i)];
  }
  return obj.is_list() ? value::list(std::move(items)) : value(std::move(text));
}

call_args call_arg_exprs::eval(render_context& ctx) const {
  call_args out;
  for (const auto& e : positional) out.positional.push_back(e->eval(ctx));
  for (const auto& [k, e] : keyword) out.keyword.emplace_back(k, e->eval(ctx));
  return out;
}

value call_expr::eval(render_context& ctx) const {
  value fn;
  if (const auto* attr = dynamic_cast<const attribute_expr*>(callee.get())) {
    const value obj = attr->object->eval(ctx);
    const call_args a = args.eval(ctx);
    ctx.pos = pos;
    if (obj.is_undefined()) ctx.fail_undefined(obj);
    if (auto result = call_method(obj, attr->name, a, ctx)) return *result;
    fn = get_attribute(obj, attr->name, ctx);
    if (fn.is_undefined()) ctx.fail("'" + obj.type_name() + " object' has no method '" + attr->name + "'");
    if (!fn.is_function()) ctx.fail("'" + fn.type_name() + "' object is not callable");
    return fn.as_function().call(a, ctx);
  }
  fn = callee->eval(ctx);
  const call_args a = args.eval(ctx);
  ctx.pos = pos;
  if (fn.is_undefined()) ctx.fail_undefined(fn);
  if (!fn.is_function()) ctx.fail("'" + fn.type_name() + "' object is not callable");
  return fn.as_function().call(a, ctx);
}

value filter_expr::eval(render_context& ctx) const {
  call_args a = args.eval(ctx);
  a.positional.insert(a.positional.begin(), operand->eval(ctx));
  ctx.pos = pos;
  return apply_filter(name, a, ctx);
}

value test_expr::eval(render_context& ctx) const {
  call_args a = args.eval(ctx);
  a.positional.insert(a.positional.begin(), operand->eval(ctx));
  ctx.pos = pos;
  return value(apply_test(name, a, ctx) != negated);
}

value unary_expr::eval(render_context& ctx) const {
  const value v = operand->eval(ctx);
  ctx.pos = pos;
  if (op == "not") return value(!v.truthy());
  if (v.is_undefined()) ctx.fail_undefined(v);
  if (int_like(v)) return value(op == "-" ? -to_int64(v) : to_int64(v));
  if (v.is_float()) return value(op == "-" ? -v.as_double() : v.as_double());
  ctx.fail("bad operand type for unary " + op + ": '" + v.type_name() + "'");
}

value binary_expr::eval(render_context& ctx) const {
  value a = left->eval(ctx);
  if (op == "and") return a.truthy() ? right->eval(ctx) : a;
  if (op == "or") return a.truthy() ? a : right->eval(ctx);
  const value b = right->eval(ctx);
  ctx.pos = pos;
  if (op == "~") return value(to_str(a) + to_str(b));
  return arithmetic(op, a, b, ctx);
}

value compare_expr::eval(render_context& ctx) const {
  value a = first->eval(ctx);
  for (const auto& [op, e] : rest) {
    value b = e->eval(ctx);
    ctx.pos = pos;
    if (!compare_op(op, a, b, ctx)) return value(false);
    a = std::move(b);
  }
  return value(true);
}

value conditional_expr::eval(render_context& ctx) const {
  if (condition->eval(ctx).truthy()) return then->eval(ctx);
  return otherwise ? otherwise->eval(ctx) : value(undefined_value{"the inline if's else branch is undefined"});
}

// ---------------------------------------------------------------------------------------
// Statements
// ---------------------------------------------------------------------------------------

flow sequence_node::render(render_context& ctx, std::string& out) const {
  for (const auto& child : children) {
    const flow f = child->render(ctx, out);
    if (f != flow::normal) return f;
  }
  return flow::normal;
}

flow output_node::render(render_context& ctx, std::string& out) const {
  out += to_str(expression->eval(ctx));
  return flow::normal;
}

flow if_node::render(render_context& ctx, std::string& out) const {
  for (const auto& [condition, body] : branches)
    if (condition->eval(ctx).truthy()) return body.render(ctx, out);
  return otherwise ? otherwise->render(ctx, out) : flow::normal;
}

flow for_node::render(render_context& ctx, std::string& out) const {
  const value seq = iterable->eval(ctx);
  ctx.pos = pos;
  value_list items = iterate(seq, ctx);
  if (condition) {  // filtered first: loop.index and loop.length count only what passes
    value_list kept;
    for (auto& item : items) {
      scope_guard guard(ctx, child_scope(ctx));
      assign(target, item, ctx);
      if (condition->eval(ctx).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) return otherwise ? otherwise->render(ctx, out) : flow::normal;

  const int64_t n = int64_t(items.size());
  for (int64_t i = 0; i < n; ++i) {
    scope_guard guard(ctx, child_scope(ctx));  // one scope per iteration, as in Jinja
    assign(target, items[size_t(i)], ctx);
    value_dict loop;
    loop.entries = {{"index", value(i + 1)},    {"index0", value(i)},
                    {"revindex", value(n - i)}, {"revindex0", value(n - i - 1)},
                    {"first", value(i == 0)},   {"last", value(i == n - 1)},
                    {"length", value(n)},       {"depth", value(1)},
                    {"depth0", value(0)}};
    if (i > 0) loop.entries.emplace_back("previtem", items[size_t(i - 1)]);
    if (i + 1 < n) loop.entries.emplace_back("nextitem", items[size_t(i + 1)]);
    loop.entries.emplace_back("cycle", value::function("cycle", [i](const call_args& a, render_context& c) {
                                if (a.positional.empty()) c.fail("no items for cycling given");
                                return a.positional[size_t(i) % a.positional.size()];
                              }));
    ctx.current->vars["loop"] = value::dict(std::move(loop));
    const flow f = body.render(ctx, out);
    if (f == flow::break_loop) break;
  }
  return flow::normal;
}

flow set_node::render(render_context& ctx, std::string& out) const {
  (void)out;
  value v;
  if (body) {
    std::string captured;
    body->render(ctx, captured);
    v = value(std::move(captured));
  } else {
    v = expression->eval(ctx);
  }
  ctx.pos = pos;
  assign(target, v, ctx);
  return flow::normal;
}

flow macro_node::render(render_context& ctx, std::string&) const {
  // The macro sees the scope it was defined in (held weakly: a macro stored in its own
  // scope must not keep that scope alive).
  std::weak_ptr<scope> defined_in = ctx.current;
  ctx.current->vars[name] = value::function(name, [this, defined_in](const call_args& a, render_context& c) {
    if (a.positional.size() > params.size())
      c.fail("macro '" + name + "' takes not more than " + std::to_string(params.size()) + " argument(s)");
    for (const auto& [k, v] : a.keyword) {
      bool known = false;
      for (const auto& p : params) known = known || p.first == k;
      if (!known) c.fail("macro '" + name + "' takes no keyword argument '" + k + "'");
    }
    if (c.call_depth >= 100) c.fail("macro '" + name + "' recursed more than 100 calls deep");
    auto frame = std::make_shared<scope>();
    frame->parent = defined_in.lock();
    if (!frame->parent) frame->parent = c.current;
    scope_guard guard(c, frame);
    ++c.call_depth;
    for (size_t i = 0; i < params.size(); ++i) {
      const value* given = a.get(i, params[i].first);
      frame->vars[params[i].first] = given ? *given
                                     : params[i].second
                                         ? params[i].second->eval(c)
                                         : value(undefined_value{"'" + params[i].first + "' is undefined"});
    }
    std::string out;
    body.render(c, out);
    --c.call_depth;
    return value(std::move(out));
  });
  return flow::normal;
}

flow filter_block_node::render(render_context& ctx, std::string& out) const {
  std::string captured;
  body.render(ctx, captured);
  call_args a = args.eval(ctx);
  a.positional.insert(a.positional.begin(), value(std::move(captured)));
  ctx.pos = pos;
  out += to_str(apply_filter(name, a, ctx));
  return flow::normal;
}

// ---------------------------------------------------------------------------------------
// template_program
// ---------------------------------------------------------------------------------------

template_program::template_program(std::string_view source, options o) : source_(source) { root_ = parse(source_, o); }
template_program::~template_program() = default;
template_program::template_program(template_program&&) noexcept = default;
template_program& template_program::operator=(template_program&&) noexcept = default;

std::string template_program::render(const nlohmann::ordered_json& context,
                                     std::optional<std::chrono::system_clock::time_point> now) const {
  if (!context.is_object())
    throw error(error_kind::failed, "chat template: the render context must be a JSON object", "chat_template");
  auto globals = std::make_shared<scope>();
  add_globals(*globals);
  render_context ctx;
  ctx.source = source_;
  ctx.current = std::make_shared<scope>();
  ctx.current->parent = globals;
  for (const auto& [k, v] : context.items()) ctx.current->vars[k] = from_json(v);
  ctx.now = now.value_or(std::chrono::system_clock::now());
  std::string out;
  root_->render(ctx, out);
  return out;
}

}  // namespace troupe::jinja
