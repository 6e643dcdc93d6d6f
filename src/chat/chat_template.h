// A model's chat template (the Jinja `chat_template` of its tokenizer_config.json) applied
// to a conversation, byte for byte as Hugging Face renders it: the variables that
// apply_chat_template passes, and its Jinja settings (trim_blocks and lstrip_blocks on).
// Parsed once; render() is const and safe to call from many threads at once.
#pragma once
#include <chrono>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "src/chat/jinja.h"

namespace troupe {

struct chat_template_inputs {
  // [{"role": ..., "content": ...}, ...]. Ordered JSON because `tojson` prints objects in
  // the order given (tool schemas, tool-call arguments); a sorted nlohmann::json converts.
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: no tools; the template sees `tools` as none
  bool add_generation_prompt = true;
  std::string bos_token, eos_token;  // "" where the model has none (Qwen3's BOS)
  // More variables, e.g. {"enable_thinking": false}; they may not replace the ones above.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  // What strftime_now() formats (UTC), for reproducible prompts; unset: the current time.
  std::optional<std::chrono::system_clock::time_point> now;
};

class chat_template {
 public:
  // Throws troupe::error(failed, ..., "chat_template") naming line and column of a syntax error.
  explicit chat_template(std::string source, jinja::options o = {});

  // Throws troupe::error(failed, ..., "chat_template"): the template's raise_exception()
  // message verbatim (a request the template refuses), or an error with line and column.
  std::string render(const chat_template_inputs& in) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  jinja::template_program program_;
};

}  // namespace troupe
