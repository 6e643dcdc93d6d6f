// Recursive descent over the tokens, with Jinja2's grammar and precedence (lowest first):
//   expression  := or ['if' or ['else' expression]]
//   or, and, not, compare (== != < <= > >= in, not in; chained)
//   math1 (+ -), concat (~), math2 (* / // %), pow (**)
//   unary       := ('-' | '+') unary-without-filters | primary postfix* (filter | test | call)*
// so `x | length - 1` is `(x | length) - 1` and `not x is defined` is `not (x is defined)`.
#include <set>

#include "src/chat/jinja_ast.h"
#include "src/chat/jinja_builtins.h"
#include "src/chat/jinja_lexer.h"

namespace troupe::jinja {
namespace {

class parser {
 public:
  parser(std::string_view source, std::vector<token> tokens) : source_(source), tokens_(std::move(tokens)) {}

  std::unique_ptr<sequence_node> parse_template() {
    auto root = std::make_unique<sequence_node>();
    const std::string stop = parse_nodes(*root, {});
    if (!stop.empty()) fail(peek(), "unexpected '" + stop + "'");
    return root;
  }

 private:
  // -------------------------------------------------------------------------------------
  // Tokens
  // -------------------------------------------------------------------------------------

  const token& peek(size_t ahead = 0) const { return tokens_[std::min(at_ + ahead, tokens_.size() - 1)]; }
  const token& next() { return tokens_[std::min(at_++, tokens_.size() - 1)]; }
  bool is_op(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).kind == token_kind::op && peek(ahead).text == op;
  }
  bool is_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).kind == token_kind::name && peek(ahead).text == name;
  }
  bool accept_op(std::string_view op) {
    if (!is_op(op)) return false;
    ++at_;
    return true;
  }
  bool accept_name(std::string_view name) {
    if (!is_name(name)) return false;
    ++at_;
    return true;
  }

  static std::string describe(const token& t) {
    switch (t.kind) {
      case token_kind::block_end:
        return "end of statement block";
      case token_kind::var_end:
        return "end of print statement";
      case token_kind::end:
        return "end of template";
      case token_kind::string:
        return "string";
      case token_kind::text:
        return "template text";
      default:
        return "'" + t.text + "'";
    }
  }
  [[noreturn]] void fail(const token& t, std::string_view message) const {
    fail_at(source_, t.pos, "syntax error", message);
  }
  void expect_op(std::string_view op) {
    if (!accept_op(op)) fail(peek(), "expected '" + std::string(op) + "', got " + describe(peek()));
  }
  void expect_block_end() {
    if (peek().kind != token_kind::block_end) fail(peek(), "expected end of statement block, got " + describe(peek()));
    ++at_;
  }
  std::string expect_identifier() {
    if (peek().kind != token_kind::name) fail(peek(), "expected a name, got " + describe(peek()));
    return next().text;
  }

  template <typename T>
  std::unique_ptr<T> make(size_t pos) {
    auto n = std::make_unique<T>();
    n->pos = pos;
    return n;
  }

  // -------------------------------------------------------------------------------------
  // Statements
  // -------------------------------------------------------------------------------------

  // Parses nodes into `into` until a block tag whose keyword is in `stop`; consumes `{%` and
  // that keyword and returns it (the caller parses the rest of the tag). Returns "" at the
  // end of the template, which is an error when `stop` is not empty.
  std::string parse_nodes(sequence_node& into, const std::set<std::string>& stop) {
    while (true) {
      const token& t = peek();
      if (t.kind == token_kind::end) {
        if (!stop.empty()) fail(t, "unexpected end of template, expected '" + *stop.begin() + "'");
        return "";
      }
      if (t.kind == token_kind::text) {
        auto n = make<text_node>(t.pos);
        n->text = next().text;
        into.children.push_back(std::move(n));
      } else if (t.kind == token_kind::var_begin) {
        ++at_;
        auto n = make<output_node>(t.pos);
        n->expression = parse_expression();
        if (peek().kind != token_kind::var_end) fail(peek(), "expected '}}', got " + describe(peek()));
        ++at_;
        into.children.push_back(std::move(n));
      } else {  // block_begin
        ++at_;
        const token& keyword = peek();
        if (keyword.kind != token_kind::name) fail(keyword, "expected a statement, got " + describe(keyword));
        if (stop.count(keyword.text)) return next().text;
        into.children.push_back(parse_statement());
      }
    }
  }

  node_ptr parse_statement() {
    const token& keyword = next();
    const std::string& k = keyword.text;
    if (k == "if") return parse_if(keyword.pos);
    if (k == "for") return parse_for(keyword.pos);
    if (k == "set") return parse_set(keyword.pos);
    if (k == "macro") return parse_macro(keyword.pos);
    if (k == "filter") return parse_filter_block(keyword.pos);
    if (k == "break" || k == "continue") {
      if (loop_depth_ == 0) fail(keyword, "'" + k + "' outside a loop");
      auto n = make<loop_control_node>(keyword.pos);
      n->kind = k == "break" ? flow::break_loop : flow::continue_loop;
      expect_block_end();
      return n;
    }
    if (k == "generation") {  // Hugging Face's assistant-mask marker: renders its body
      expect_block_end();
      auto n = make<sequence_node>(keyword.pos);
      parse_nodes(*n, {"endgeneration"});
      expect_block_end();
      return n;
    }
    static const std::set<std::string> enders = {"elif",     "else",      "endif",         "endfor",   "endset",
                                                 "endmacro", "endfilter", "endgeneration", "endblock", "endcall"};
    if (enders.count(k)) fail(keyword, "unexpected '" + k + "'");
    fail(keyword, "unsupported statement '" + k + "'");
  }

  node_ptr parse_if(size_t pos) {
    auto n = make<if_node>(pos);
    std::string stop = "elif";
    while (stop == "elif") {
      expr_ptr cond = parse_expression();
      expect_block_end();
      sequence_node body;
      stop = parse_nodes(body, {"elif", "else", "endif"});
      n->branches.emplace_back(std::move(cond), std::move(body));
    }
    parse_else_and_end(stop, n->otherwise, "endif");
    return n;
  }

  // The rest of a body that ended at `stop`: an {% else %} body up to `end_word` when
  // `stop` is else, then the end tag's %}.
  void parse_else_and_end(const std::string& stop, std::optional<sequence_node>& otherwise, const char* end_word) {
    if (stop == "else") {
      expect_block_end();
      otherwise.emplace();
      parse_nodes(*otherwise, {end_word});
    }
    expect_block_end();
  }

  assign_target parse_target(bool allow_attribute) {
    assign_target t;
    const bool parens = accept_op("(");
    t.names.push_back(expect_identifier());
    if (allow_attribute && accept_op(".")) {
      t.attribute = expect_identifier();
      return t;
    }
    while (accept_op(",")) {
      t.tuple = true;
      if (peek().kind != token_kind::name || is_name("in")) break;  // a trailing comma
      t.names.push_back(expect_identifier());
    }
    if (parens) expect_op(")");
    return t;
  }

  node_ptr parse_for(size_t pos) {
    auto n = make<for_node>(pos);
    n->target = parse_target(false);
    if (!accept_name("in")) fail(peek(), "expected 'in', got " + describe(peek()));
    n->iterable = parse_tuple(/*with_condition=*/false);
    if (accept_name("if")) n->condition = parse_expression();
    if (is_name("recursive")) fail(peek(), "recursive loops are not supported");
    expect_block_end();
    ++loop_depth_;
    const std::string stop = parse_nodes(n->body, {"else", "endfor"});
    --loop_depth_;
    parse_else_and_end(stop, n->otherwise, "endfor");
    return n;
  }

  node_ptr parse_set(size_t pos) {
    auto n = make<set_node>(pos);
    n->target = parse_target(true);
    if (accept_op("=")) {
      n->expression = parse_tuple(true);
      expect_block_end();
      return n;
    }
    if (n->target.tuple || !n->target.attribute.empty()) fail(peek(), "a block set assigns to one name");
    expect_block_end();
    n->body.emplace();
    parse_nodes(*n->body, {"endset"});
    expect_block_end();
    return n;
  }

  node_ptr parse_macro(size_t pos) {
    auto n = make<macro_node>(pos);
    n->name = expect_identifier();
    expect_op("(");
    parse_comma_list(")", [&] {
      std::string param = expect_identifier();
      expr_ptr def = accept_op("=") ? parse_expression() : nullptr;
      n->params.emplace_back(std::move(param), std::move(def));
    });
    expect_block_end();
    const int outer_loops = loop_depth_;
    loop_depth_ = 0;  // a break in a macro cannot end the caller's loop
    parse_nodes(n->body, {"endmacro"});
    loop_depth_ = outer_loops;
    if (peek().kind == token_kind::name) ++at_;  // {% endmacro name %}
    expect_block_end();
    return n;
  }

  node_ptr parse_filter_block(size_t pos) {
    auto n = make<filter_block_node>(pos);
    if (!is_filter(peek().text)) fail(peek(), "no filter named '" + peek().text + "'");
    n->name = expect_identifier();
    if (is_op("(")) parse_call_args(n->args);
    expect_block_end();
    parse_nodes(n->body, {"endfilter"});
    expect_block_end();
    return n;
  }

  // -------------------------------------------------------------------------------------
  // Expressions
  // -------------------------------------------------------------------------------------

  // `a, b` as a list (for `for x in a, b` and `set x = a, b`); a single expression otherwise.
  expr_ptr parse_tuple(bool with_condition) {
    const size_t pos = peek().pos;
    expr_ptr first = with_condition ? parse_expression() : parse_or();
    if (!is_op(",")) return first;
    auto list = make<list_expr>(pos);
    list->tuple = true;
    list->items.push_back(std::move(first));
    while (accept_op(",")) {
      if (peek().kind == token_kind::block_end || peek().kind == token_kind::var_end || is_name("if")) break;
      list->items.push_back(with_condition ? parse_expression() : parse_or());
    }
    return list;
  }

  expr_ptr parse_expression() {
    expr_ptr then = parse_or();
    while (is_name("if")) {
      auto n = make<conditional_expr>(next().pos);
      n->then = std::move(then);
      n->condition = parse_or();
      if (accept_name("else")) n->otherwise = parse_expression();
      then = std::move(n);
    }
    return then;
  }

  // Left-associative binary operators of one precedence level: keywords (and, or) when
  // `kind` is name, symbols otherwise.
  template <typename Next>
  expr_ptr parse_binary(token_kind kind, const std::set<std::string>& ops, Next next_level) {
    expr_ptr left = (this->*next_level)();
    while (peek().kind == kind && ops.count(peek().text)) {
      auto n = make<binary_expr>(peek().pos);
      n->op = next().text;
      n->left = std::move(left);
      n->right = (this->*next_level)();
      left = std::move(n);
    }
    return left;
  }

  expr_ptr parse_or() { return parse_binary(token_kind::name, {"or"}, &parser::parse_and); }
  expr_ptr parse_and() { return parse_binary(token_kind::name, {"and"}, &parser::parse_not); }
  expr_ptr parse_not() {
    if (!is_name("not")) return parse_compare();
    auto n = make<unary_expr>(next().pos);
    n->op = "not";
    n->operand = parse_not();
    return n;
  }

  expr_ptr parse_compare() {
    const size_t pos = peek().pos;
    expr_ptr first = parse_math1();
    std::vector<std::pair<std::string, expr_ptr>> rest;
    while (true) {
      std::string op;
      if (peek().kind == token_kind::op && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                            peek().text == "<=" || peek().text == ">" || peek().text == ">=")) {
        op = next().text;
      } else if (accept_name("in")) {
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        at_ += 2;
        op = "not in";
      } else {
        break;
      }
      rest.emplace_back(op, parse_math1());
    }
    if (rest.empty()) return first;
    auto n = make<compare_expr>(pos);
    n->first = std::move(first);
    n->rest = std::move(rest);
    return n;
  }

  expr_ptr parse_math1() { return parse_binary(token_kind::op, {"+", "-"}, &parser::parse_concat); }
  expr_ptr parse_concat() { return parse_binary(token_kind::op, {"~"}, &parser::parse_math2); }
  expr_ptr parse_math2() { return parse_binary(token_kind::op, {"*", "/", "//", "%"}, &parser::parse_pow); }
  expr_ptr parse_pow() { return parse_binary(token_kind::op, {"**"}, &parser::parse_unary_filtered); }
  expr_ptr parse_unary_filtered() { return parse_unary(true); }

  expr_ptr parse_unary(bool with_filter) {
    expr_ptr node;
    if (is_op("-") || is_op("+")) {
      auto n = make<unary_expr>(peek().pos);
      n->op = next().text;
      n->operand = parse_unary(false);
      node = std::move(n);
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    return with_filter ? parse_filters(std::move(node)) : std::move(node);
  }

  expr_ptr parse_primary() {
    const token& t = peek();
    switch (t.kind) {
      case token_kind::name: {
        ++at_;
        static const std::set<std::string> trues = {"true", "True"}, falses = {"false", "False"},
                                           nones = {"none", "None"};
        if (trues.count(t.text) || falses.count(t.text) || nones.count(t.text)) {
          auto n = make<literal_expr>(t.pos);
          n->constant = nones.count(t.text) ? value::none() : value(bool(trues.count(t.text)));
          return n;
        }
        auto n = make<name_expr>(t.pos);
        n->name = t.text;
        return n;
      }
      case token_kind::string: {
        auto n = make<literal_expr>(t.pos);
        std::string s;
        while (peek().kind == token_kind::string) s += next().text;  // 'a' 'b' is 'ab'
        n->constant = value(std::move(s));
        return n;
      }
      case token_kind::integer:
      case token_kind::floating: {
        ++at_;
        auto n = make<literal_expr>(t.pos);
        try {
          n->constant = t.kind == token_kind::integer ? value(int64_t(std::stoll(t.text))) : value(std::stod(t.text));
        } catch (const std::exception&) {
          fail(t, "number out of range: " + t.text);
        }
        return n;
      }
      case token_kind::op:
        if (t.text == "(") {
          ++at_;
          if (accept_op(")")) {  // ()
            auto empty = make<list_expr>(t.pos);
            empty->tuple = true;
            return empty;
          }
          expr_ptr inner = parse_expression();
          if (is_op(",")) {
            auto list = make<list_expr>(t.pos);
            list->tuple = true;
            list->items.push_back(std::move(inner));
            while (accept_op(",") && !is_op(")")) list->items.push_back(parse_expression());
            inner = std::move(list);
          }
          expect_op(")");
          return inner;
        }
        if (t.text == "[") {
          ++at_;
          auto list = make<list_expr>(t.pos);
          parse_comma_list("]", [&] { list->items.push_back(parse_expression()); });
          return list;
        }
        if (t.text == "{") {
          ++at_;
          auto dict = make<dict_expr>(t.pos);
          parse_comma_list("}", [&] {
            expr_ptr key = parse_expression();
            expect_op(":");
            dict->entries.emplace_back(std::move(key), parse_expression());
          });
          return dict;
        }
        break;
      default:
        break;
    }
    fail(t, "expected an expression, got " + describe(t));
  }

  expr_ptr parse_postfix(expr_ptr node) {
    while (true) {
      if (is_op(".")) {
        const size_t pos = next().pos;
        if (peek().kind == token_kind::integer) {  // xs.0 is xs[0]
          auto n = make<subscript_expr>(pos);
          n->object = std::move(node);
          auto index = make<literal_expr>(peek().pos);
          index->constant = value(int64_t(std::stoll(next().text)));
          n->index = std::move(index);
          node = std::move(n);
          continue;
        }
        auto n = make<attribute_expr>(pos);
        n->object = std::move(node);
        n->name = expect_identifier();
        node = std::move(n);
      } else if (is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  expr_ptr parse_call(expr_ptr callee) {
    auto n = make<call_expr>(peek().pos);
    n->callee = std::move(callee);
    parse_call_args(n->args);
    return n;
  }

  expr_ptr parse_subscript(expr_ptr object) {
    const size_t pos = next().pos;  // [
    expr_ptr parts[3];
    int colons = 0;
    while (!is_op("]")) {
      if (accept_op(":")) {
        if (++colons > 2) fail(peek(), "too many ':' in a slice");
        continue;
      }
      if (parts[colons]) fail(peek(), "expected ':' or ']', got " + describe(peek()));
      parts[colons] = parse_expression();
    }
    ++at_;
    if (colons == 0) {
      if (!parts[0]) fail(peek(), "expected a subscript");
      auto n = make<subscript_expr>(pos);
      n->object = std::move(object);
      n->index = std::move(parts[0]);
      return n;
    }
    auto n = make<slice_expr>(pos);
    n->object = std::move(object);
    n->start = std::move(parts[0]);
    n->stop = std::move(parts[1]);
    n->step = std::move(parts[2]);
    return n;
  }

  // Items separated by commas (a trailing one allowed) up to and including `close`; the
  // opening bracket is already consumed.
  template <typename Item>
  void parse_comma_list(std::string_view close, Item item) {
    for (bool first = true; !accept_op(close); first = false) {
      if (!first) {
        expect_op(",");
        if (accept_op(close)) return;
      }
      item();
    }
  }

  void parse_call_args(call_arg_exprs& args) {
    expect_op("(");
    parse_comma_list(")", [&] {
      if (peek().kind == token_kind::name && is_op("=", 1)) {
        std::string name = next().text;
        ++at_;
        args.keyword.emplace_back(std::move(name), parse_expression());
      } else {
        if (!args.keyword.empty()) fail(peek(), "positional argument after a keyword argument");
        args.positional.push_back(parse_expression());
      }
    });
  }

  expr_ptr parse_filters(expr_ptr node) {
    while (true) {
      if (is_op("|")) {
        auto n = make<filter_expr>(next().pos);
        n->operand = std::move(node);
        if (!is_filter(peek().text)) fail(peek(), "no filter named '" + peek().text + "'");
        n->name = expect_identifier();
        if (is_op("(")) parse_call_args(n->args);
        node = std::move(n);
      } else if (is_name("is")) {
        auto n = make<test_expr>(next().pos);
        n->operand = std::move(node);
        n->negated = accept_name("not");
        if (peek().kind != token_kind::name || !is_test(peek().text)) fail(peek(), "no test named " + describe(peek()));
        n->name = next().text;
        if (is_op("(")) {
          parse_call_args(n->args);
        } else if (takes_bare_argument()) {  // `x is divisibleby 3`, `x is sameas none`
          n->args.positional.push_back(parse_postfix(parse_primary()));
        }
        node = std::move(n);
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  bool takes_bare_argument() const {
    const token& t = peek();
    if (t.kind == token_kind::string || t.kind == token_kind::integer || t.kind == token_kind::floating) return true;
    if (t.kind == token_kind::op) return t.text == "[" || t.text == "{";
    static const std::set<std::string> not_arguments = {"else", "or", "and", "if", "is", "in", "not"};
    return t.kind == token_kind::name && !not_arguments.count(t.text);
  }

  std::string_view source_;
  std::vector<token> tokens_;
  size_t at_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

std::unique_ptr<sequence_node> parse(std::string_view source, const options& o) {
  return parser(source, lex(source, o)).parse_template();
}

}  // namespace troupe::jinja
