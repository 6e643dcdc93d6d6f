// The parsed template: expression and statement nodes, each able to evaluate or render
// itself against a render_context. Nodes are immutable after parsing, so one tree serves any
// number of concurrent renders; all per-render state lives in the render_context.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "src/chat/jinja.h"
#include "src/chat/jinja_value.h"

namespace troupe::jinja {

// ---------------------------------------------------------------------------------------
// Per-render state
// ---------------------------------------------------------------------------------------

// Variables of one scope: the template's, a loop iteration's or a macro call's. `set`
// writes into the innermost one, so a loop's assignments end with the iteration, as in Jinja.
struct scope {
  std::unordered_map<std::string, value> vars;
  std::shared_ptr<scope> parent;

  const value* find(const std::string& name) const;
};

struct render_context {
  std::string_view source;  // for the line and column of an error
  std::shared_ptr<scope> current;
  std::chrono::system_clock::time_point now;  // strftime_now()
  size_t pos = 0;                             // the node being evaluated, for errors
  int call_depth = 0;                         // macro recursion guard

  // Throws troupe::error naming the current node's line and column.
  [[noreturn]] void fail(std::string_view message) const;
  [[noreturn]] void fail_undefined(const value& v) const { fail(v.undefined_message()); }
};

// ---------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------

struct expr {
  size_t pos = 0;
  virtual ~expr() = default;
  virtual value eval(render_context& ctx) const = 0;
};
using expr_ptr = std::unique_ptr<expr>;

struct literal_expr : expr {
  value constant;  // a scalar: lists and dicts are built fresh by list_expr/dict_expr
  value eval(render_context&) const override { return constant; }
};

struct name_expr : expr {
  std::string name;
  value eval(render_context& ctx) const override;
};

struct list_expr : expr {
  std::vector<expr_ptr> items;
  bool tuple = false;  // (a, b) or a bare a, b
  value eval(render_context& ctx) const override;
};

struct dict_expr : expr {
  std::vector<std::pair<expr_ptr, expr_ptr>> entries;
  value eval(render_context& ctx) const override;
};

struct attribute_expr : expr {  // obj.name
  expr_ptr object;
  std::string name;
  value eval(render_context& ctx) const override;
};

struct subscript_expr : expr {  // obj[index]
  expr_ptr object, index;
  value eval(render_context& ctx) const override;
};

struct slice_expr : expr {  // obj[start:stop:step], each part optional
  expr_ptr object, start, stop, step;
  value eval(render_context& ctx) const override;
};

struct call_arg_exprs {
  std::vector<expr_ptr> positional;
  std::vector<std::pair<std::string, expr_ptr>> keyword;
  call_args eval(render_context& ctx) const;
};

struct call_expr : expr {  // f(args); obj.method(args) when callee is an attribute_expr
  expr_ptr callee;
  call_arg_exprs args;
  value eval(render_context& ctx) const override;
};

struct filter_expr : expr {  // operand | name(args)
  expr_ptr operand;
  std::string name;
  call_arg_exprs args;
  value eval(render_context& ctx) const override;
};

struct test_expr : expr {  // operand is [not] name(args)
  expr_ptr operand;
  std::string name;
  call_arg_exprs args;
  bool negated = false;
  value eval(render_context& ctx) const override;
};

struct unary_expr : expr {  // not x, -x, +x
  std::string op;
  expr_ptr operand;
  value eval(render_context& ctx) const override;
};

struct binary_expr : expr {  // arithmetic, ~, and, or
  std::string op;
  expr_ptr left, right;
  value eval(render_context& ctx) const override;
};

struct compare_expr : expr {  // a < b <= c, chained as in Python; also in, not in
  expr_ptr first;
  std::vector<std::pair<std::string, expr_ptr>> rest;
  value eval(render_context& ctx) const override;
};

struct conditional_expr : expr {        // then if condition else otherwise
  expr_ptr condition, then, otherwise;  // otherwise may be null: undefined
  value eval(render_context& ctx) const override;
};

// ---------------------------------------------------------------------------------------
// Statements
// ---------------------------------------------------------------------------------------

enum class flow { normal, break_loop, continue_loop };

struct node {
  size_t pos = 0;
  virtual ~node() = default;
  virtual flow render(render_context& ctx, std::string& out) const = 0;
};
using node_ptr = std::unique_ptr<node>;

struct sequence_node : node {
  std::vector<node_ptr> children;
  flow render(render_context& ctx, std::string& out) const override;
};

struct text_node : node {
  std::string text;
  flow render(render_context&, std::string& out) const override {
    out += text;
    return flow::normal;
  }
};

struct output_node : node {  // {{ expr }}
  expr_ptr expression;
  flow render(render_context& ctx, std::string& out) const override;
};

struct if_node : node {
  std::vector<std::pair<expr_ptr, sequence_node>> branches;  // if, then each elif
  std::optional<sequence_node> otherwise;
  flow render(render_context& ctx, std::string& out) const override;
};

// A name, `ns.attr`, or a tuple of names (for k, v in ...).
struct assign_target {
  std::vector<std::string> names;  // one, or the tuple's
  std::string attribute;           // set when the target is names[0].attribute
  bool tuple = false;
};

struct for_node : node {
  assign_target target;
  expr_ptr iterable, condition;  // condition may be null
  sequence_node body;
  std::optional<sequence_node> otherwise;  // rendered when nothing was iterated
  flow render(render_context& ctx, std::string& out) const override;
};

struct set_node : node {
  assign_target target;
  expr_ptr expression;                // {% set x = expr %}
  std::optional<sequence_node> body;  // {% set x %}body{% endset %}
  flow render(render_context& ctx, std::string& out) const override;
};

struct macro_node : node {
  std::string name;
  std::vector<std::pair<std::string, expr_ptr>> params;  // default may be null
  sequence_node body;
  flow render(render_context& ctx, std::string& out) const override;  // defines the macro
};

struct filter_block_node : node {  // {% filter name(args) %}body{% endfilter %}
  std::string name;
  call_arg_exprs args;
  sequence_node body;
  flow render(render_context& ctx, std::string& out) const override;
};

struct loop_control_node : node {  // {% break %}, {% continue %}
  flow kind = flow::break_loop;
  flow render(render_context&, std::string&) const override { return kind; }
};

// obj.name: a dict's key or a namespace's attribute, else undefined; an error on undefined.
value get_attribute(const value& obj, const std::string& name, render_context& ctx);

// Parses the lexed template (jinja_parser.cpp).
std::unique_ptr<sequence_node> parse(std::string_view source, const options& o);

}  // namespace troupe::jinja
