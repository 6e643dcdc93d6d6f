// Whitespace control follows Jinja2's lexer: `{%-`/`-%}` strip all whitespace on their side;
// lstrip_blocks removes the spaces and tabs between a line's start and a block or comment
// tag (not `{{`), unless the tag opens with `+`; trim_blocks removes one newline right after
// a block or comment tag, unless it closes with `+`. @huggingface/jinja does the same by
// regular expressions over the raw source (so also inside string literals); on templates
// without `%}` followed by a newline inside a string the two agree.
#include "src/chat/jinja_lexer.h"

#include <cctype>
#include <cstring>

#include "src/model/unicode_text.h"
#include "troupe/error.h"

namespace troupe::jinja {

std::string describe_position(std::string_view source, size_t pos) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < pos && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(source[i]) & 0xC0) != 0x80) {
      ++column;  // count characters, not UTF-8 continuation bytes
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

void fail_at(std::string_view source, size_t pos, std::string_view what, std::string_view message) {
  throw error(
      error_kind::failed,
      "chat template: " + std::string(what) + " at " + describe_position(source, pos) + ": " + std::string(message),
      "chat_template");
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string_view trim_left(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && is_space(s[i])) ++i;
  return s.substr(i);
}

std::string_view trim_right(std::string_view s) {
  size_t n = s.size();
  while (n > 0 && is_space(s[n - 1])) --n;
  return s.substr(0, n);
}

// ---------------------------------------------------------------------------------------
// Inside a tag: names, numbers, strings, operators
// ---------------------------------------------------------------------------------------

class tag_lexer {
 public:
  tag_lexer(std::string_view src, std::vector<token>& out) : src_(src), out_(out) {}

  // Lexes from `pos` to the tag's end; returns the offset just past it. `closer` is '%' for
  // a block tag and '}' for a variable tag. Sets `strip_after` for `-%}`/`-}}` and
  // `keep_newline` for `+%}`.
  size_t lex_until_close(size_t pos, char closer, bool& strip_after, bool& keep_newline) {
    int depth = 0;  // brackets open: a `}}` inside a dict literal is not the tag's end
    strip_after = keep_newline = false;
    while (true) {
      while (pos < src_.size() && is_space(src_[pos])) ++pos;
      if (pos >= src_.size())
        fail_at(
            src_, pos, "syntax error",
            closer == '%' ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'");
      const std::string_view rest = src_.substr(pos);
      const std::string end = closer == '%' ? "%}" : "}}";
      if (closer == '%' || depth == 0) {
        close_pos_ = pos;
        if (rest.substr(0, 1 + end.size()) == "-" + end) {
          strip_after = true;
          return pos + 1 + end.size();
        }
        if (closer == '%' && rest.substr(0, 3) == "+%}") {
          keep_newline = true;
          return pos + 3;
        }
        if (rest.substr(0, end.size()) == end) return pos + end.size();
      }
      const char c = src_[pos];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        out_.push_back({token_kind::name, std::string(src_.substr(pos, e - pos)), pos});
        pos = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = lex_number(pos);
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        static const char* const two[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* t : two)
          if (rest.substr(0, 2) == t) op = t;
        if (op.empty()) {
          if (!std::strchr("+-*/%~<>=()[]{},.:|", c) || c == '\0')
            fail_at(src_, pos, "syntax error", std::string("unexpected character '") + c + "'");
          op = std::string(1, c);
          if (c == '(' || c == '[' || c == '{') ++depth;
          if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        }
        out_.push_back({token_kind::op, op, pos});
        pos += op.size();
      }
    }
  }

  size_t close_pos() const { return close_pos_; }  // where the last tag's closing delimiter began

 private:
  size_t digits(size_t pos, std::string& out) const {
    while (pos < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos])) || src_[pos] == '_')) {
      if (src_[pos] != '_') out += src_[pos];
      ++pos;
    }
    return pos;
  }

  size_t lex_number(size_t pos) {
    const size_t start = pos;
    std::string text;
    pos = digits(pos, text);
    bool is_float = false;
    if (pos + 1 < src_.size() && src_[pos] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos + 1]))) {
      is_float = true;
      text += '.';
      pos = digits(pos + 1, text);
    }
    if (pos < src_.size() && (src_[pos] == 'e' || src_[pos] == 'E')) {
      size_t e = pos + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
        is_float = true;
        text += 'e';
        if (src_[pos + 1] == '-') text += '-';
        pos = digits(e, text);
      }
    }
    out_.push_back({is_float ? token_kind::floating : token_kind::integer, text, start});
    return pos;
  }

  // Python's escapes (Jinja unescapes string literals like Python's unicode-escape).
  size_t lex_string(size_t pos) {
    const size_t start = pos;
    const char quote = src_[pos++];
    std::string value;
    while (true) {
      if (pos >= src_.size()) fail_at(src_, start, "syntax error", "unterminated string literal");
      const char c = src_[pos++];
      if (c == quote) break;
      if (c != '\\' || pos >= src_.size()) {
        value += c;
        continue;
      }
      const char e = src_[pos++];
      const auto hex = [&](size_t n) {
        if (pos + n > src_.size()) fail_at(src_, pos, "syntax error", "truncated \\x, \\u or \\U escape");
        const std::string h(src_.substr(pos, n));
        for (const char d : h)
          if (!std::isxdigit(static_cast<unsigned char>(d)))
            fail_at(src_, pos, "syntax error", "invalid \\x, \\u or \\U escape");
        pos += n;
        unicode::append_utf8(value, char32_t(std::stoul(h, nullptr, 16)));
      };
      switch (e) {
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case 'r':
          value += '\r';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'v':
          value += '\v';
          break;
        case 'a':
          value += '\a';
          break;
        case '0':
          value += '\0';
          break;
        case '\\':
        case '\'':
        case '"':
          value += e;
          break;
        case '\n':
          break;  // a line continuation
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        default:
          value += '\\';  // Python keeps unknown escapes as written
          value += e;
      }
    }
    out_.push_back({token_kind::string, value, start});
    return pos;
  }

  std::string_view src_;
  std::vector<token>& out_;
  size_t close_pos_ = 0;
};

// `{%[-+]? raw [-]?%}` (or endraw) at `pos`: the offset past it, or npos. Sets the modifiers.
size_t match_word_tag(std::string_view src, size_t pos, std::string_view word, char& open_mod, bool& strip_after) {
  if (src.substr(pos, 2) != "{%") return std::string_view::npos;
  size_t i = pos + 2;
  open_mod = (i < src.size() && (src[i] == '-' || src[i] == '+')) ? src[i++] : 0;
  while (i < src.size() && is_space(src[i])) ++i;
  if (src.substr(i, word.size()) != word) return std::string_view::npos;
  i += word.size();
  if (i < src.size() && (std::isalnum(static_cast<unsigned char>(src[i])) || src[i] == '_'))
    return std::string_view::npos;
  while (i < src.size() && is_space(src[i])) ++i;
  strip_after = src.substr(i, 3) == "-%}";
  if (strip_after) return i + 3;
  if (src.substr(i, 2) == "%}") return i + 2;
  if (src.substr(i, 3) == "+%}") return i + 3;
  return std::string_view::npos;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// The template: text between tags, then each tag
// ---------------------------------------------------------------------------------------

std::vector<token> lex(std::string_view source, const options& o) {
  // Jinja's keep_trailing_newline=False: one trailing newline of the source is not output.
  if (source.size() >= 2 && source.substr(source.size() - 2) == "\r\n")
    source.remove_suffix(2);
  else if (!source.empty() && source.back() == '\n')
    source.remove_suffix(1);

  std::vector<token> out;
  tag_lexer tags(source, out);
  size_t pos = 0;
  bool line_starting = true;  // `pos` is at the start of a line
  bool strip_next = false;    // the previous tag ended with `-`
  const auto emit_text = [&](std::string_view text, size_t at) {
    if (!text.empty()) out.push_back({token_kind::text, std::string(text), at});
  };

  while (pos <= source.size()) {
    size_t start = pos;
    while ((start = source.find('{', start)) != std::string_view::npos) {
      if (start + 1 < source.size() && std::strchr("{%#", source[start + 1]) && source[start + 1] != '\0') break;
      ++start;
    }
    std::string_view text = source.substr(pos, start == std::string_view::npos ? std::string_view::npos : start - pos);
    if (strip_next) text = trim_left(text);
    if (start == std::string_view::npos) {
      emit_text(text, pos);
      break;
    }
    const char kind = source[start + 1];
    const char mod =
        start + 2 < source.size() && (source[start + 2] == '-' || source[start + 2] == '+') ? source[start + 2] : 0;
    if (mod == '-') {
      text = trim_right(text);
    } else if (o.lstrip_blocks && kind != '{' && mod != '+') {
      const size_t line_pos = text.rfind('\n') + 1;  // npos + 1 == 0
      const std::string_view tail = text.substr(line_pos);
      if ((line_pos > 0 || line_starting) && trim_left(tail).empty()) text = text.substr(0, line_pos);
    }
    emit_text(text, pos);
    strip_next = false;
    const size_t body = start + 2 + (mod ? 1 : 0);
    size_t raw_body = 0;
    bool strip_raw_start = false;  // `{% raw -%}`

    if (kind == '#') {
      const size_t close = source.find("#}", body);
      if (close == std::string_view::npos) fail_at(source, start, "syntax error", "unterminated comment");
      pos = close + 2;
      strip_next = close > body && source[close - 1] == '-';
      const bool keep = close > body && source[close - 1] == '+';
      if (o.trim_blocks && !strip_next && !keep && pos < source.size() && source[pos] == '\n') ++pos;
    } else if (char raw_mod = 0;
               kind == '%' &&
               (raw_body = match_word_tag(source, start, "raw", raw_mod, strip_raw_start)) != std::string_view::npos) {
      size_t end_tag = raw_body, after = std::string_view::npos;
      char end_mod = 0;
      for (; (end_tag = source.find("{%", end_tag)) != std::string_view::npos; ++end_tag)
        if ((after = match_word_tag(source, end_tag, "endraw", end_mod, strip_next)) != std::string_view::npos) break;
      if (end_tag == std::string_view::npos) fail_at(source, start, "syntax error", "{% raw %} without {% endraw %}");
      std::string_view raw = source.substr(raw_body, end_tag - raw_body);
      if (strip_raw_start) raw = trim_left(raw);
      if (end_mod == '-') raw = trim_right(raw);
      emit_text(raw, raw_body);
      pos = after;
      if (o.trim_blocks && !strip_next && source[after - 3] != '+' && pos < source.size() && source[pos] == '\n') ++pos;
    } else {
      out.push_back({kind == '%' ? token_kind::block_begin : token_kind::var_begin, "", start});
      bool keep_newline = false;
      pos = tags.lex_until_close(body, kind == '%' ? '%' : '}', strip_next, keep_newline);
      out.push_back({kind == '%' ? token_kind::block_end : token_kind::var_end, "", tags.close_pos()});
      if (kind == '%' && o.trim_blocks && !strip_next && !keep_newline && pos < source.size() && source[pos] == '\n')
        ++pos;
    }
    line_starting = pos > 0 && source[pos - 1] == '\n';
  }
  out.push_back({token_kind::end, "", source.size()});
  return out;
}

}  // namespace troupe::jinja
