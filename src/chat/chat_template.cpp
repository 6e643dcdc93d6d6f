#include "src/chat/chat_template.h"

#include "troupe/error.h"

namespace troupe {

chat_template::chat_template(std::string source, jinja::options o) : source_(std::move(source)), program_(source_, o) {}

std::string chat_template::render(const chat_template_inputs& in) const {
  if (!in.messages.is_array())
    throw error(error_kind::failed, "chat template: messages must be a JSON array", "chat_template");
  if (!in.extra.is_object())
    throw error(error_kind::failed, "chat template: extra variables must be a JSON object", "chat_template");
  nlohmann::ordered_json context = {{"messages", in.messages},
                                    {"tools", in.tools},
                                    {"add_generation_prompt", in.add_generation_prompt},
                                    {"bos_token", in.bos_token},
                                    {"eos_token", in.eos_token}};
  for (const auto& [k, v] : in.extra.items()) {
    if (context.contains(k))
      throw error(error_kind::failed, "chat template: extra variable '" + k + "' would replace a standard one",
                  "chat_template");
    context[k] = v;
  }
  return program_.render(context, in.now);
}

}  // namespace troupe
