// A Jinja engine for chat templates: the subset that Hugging Face chat templates use, with
// Jinja2's meaning (Python's str(), truthiness and errors), parsed once and rendered many
// times. Supported: {{ }}, {% if/elif/else %}, {% for %} (tuple targets, `if` filter, else,
// the `loop` variable, break/continue), {% set %} (names, `ns.attr`, block set), {% macro %}
// and calls, {% raw %}, {% generation %} (rendered as its body), comments, whitespace
// control (-, +, trim_blocks, lstrip_blocks), Python-like expressions, the common filters,
// tests and str/dict methods, and the globals raise_exception, range, namespace and
// strftime_now. What is outside the subset is a syntax error naming line and column.
#pragma once
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

namespace troupe::jinja {

struct options {
  // Hugging Face's apply_chat_template and @huggingface/jinja both use true for both; Jinja2's
  // own defaults are false. Either way a single trailing newline of the source is dropped.
  bool trim_blocks = true;    // the first newline after a block or comment tag is removed
  bool lstrip_blocks = true;  // spaces and tabs before a block or comment tag on its line are removed
};

struct node;

class template_program {
 public:
  // Parses `source`; throws troupe::error (failed, field "chat_template") with the line and
  // column of a syntax error.
  explicit template_program(std::string_view source, options o = {});
  ~template_program();
  template_program(template_program&&) noexcept;
  template_program& operator=(template_program&&) noexcept;

  // Renders with the members of `context` (a JSON object) as variables. `now` is what
  // strftime_now() formats (UTC); unset, the current time. Thread-safe: the parsed template
  // is not modified. Throws troupe::error (failed, "chat_template"): raise_exception(msg)
  // with `msg` verbatim, other errors with their line and column.
  std::string render(const nlohmann::ordered_json& context,
                     std::optional<std::chrono::system_clock::time_point> now = std::nullopt) const;

 private:
  std::string source_;  // error messages point into it
  std::unique_ptr<node> root_;
};

}  // namespace troupe::jinja
