// The template's text as tokens: literal text (whitespace control already applied) and the
// contents of {{ }} and {% %} tags. Comments and {% raw %} are resolved here.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "src/chat/jinja.h"

namespace troupe::jinja {

enum class token_kind {
  text,         // literal output
  var_begin,    // {{
  var_end,      // }}
  block_begin,  // {%
  block_end,    // %}
  name,         // identifiers and keywords (if, in, not, true, ...)
  integer,
  floating,
  string,  // text holds the unescaped value
  op,      // + - * / // % ** ~ == != < <= > >= = ( ) [ ] { } , . : |
  end,     // end of the template
};

struct token {
  token_kind kind;
  std::string text;
  size_t pos;  // byte offset into the source, for error messages
};

std::vector<token> lex(std::string_view source, const options& o);

// "line 3, column 7" of byte offset `pos`.
std::string describe_position(std::string_view source, size_t pos);
// Throws troupe::error(failed, "chat template: <what> at line L, column C: <message>", "chat_template").
[[noreturn]] void fail_at(std::string_view source, size_t pos, std::string_view what, std::string_view message);

}  // namespace troupe::jinja
