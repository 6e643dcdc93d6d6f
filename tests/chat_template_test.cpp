// Chat templates (src/chat/chat_template.h): the real Llama 3 and Qwen3 templates from
// ../shared/tokenizers render every reference chat byte for byte as @huggingface/jinja did
// (tools/reference.mjs there), and the API's own rules.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "src/chat/chat_template.h"
#include "test_support.h"
#include "troupe/error.h"

namespace troupe {
namespace {

using ojson = nlohmann::ordered_json;

ojson read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  EXPECT_TRUE(in) << "cannot open " << p;
  return ojson::parse(in);
}

// "bos_token": "<s>" or {"content": "<s>", ...}; "" when null or absent (as reference.mjs).
std::string special_token(const ojson& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  return it->is_object() ? it->at("content").get<std::string>() : it->get<std::string>();
}

struct model_files {
  ojson config, reference;
};

model_files load(const std::string& model) {
  const auto dir = test::shared_dir() / "tokenizers";
  return {read_json(dir / model / "tokenizer_config.json"), read_json(dir / "reference" / (model + ".json"))};
}

// The variables reference.mjs passed: messages, add_generation_prompt, tools (undefined when
// absent there; none here, which every `{% if tools %}` reads alike), bos_token, eos_token.
chat_template_inputs inputs_of(const ojson& chat, const ojson& config) {
  chat_template_inputs in;
  in.messages = chat.at("messages");
  in.add_generation_prompt = chat.at("add_generation_prompt").get<bool>();
  if (chat.contains("tools")) in.tools = chat.at("tools");
  in.bos_token = special_token(config, "bos_token");
  in.eos_token = special_token(config, "eos_token");
  return in;
}

void expect_references_match(const std::string& model, jinja::options o) {
  const model_files f = load(model);
  const chat_template tmpl(f.config.at("chat_template").get<std::string>(), o);
  const auto& chats = f.reference.at("chats");
  ASSERT_FALSE(chats.empty());
  for (size_t i = 0; i < chats.size(); ++i) {
    SCOPED_TRACE(model + " chat " + std::to_string(i));
    EXPECT_EQ(tmpl.render(inputs_of(chats[i], f.config)), chats[i].at("rendered").get<std::string>());
  }
}

// ---------------------------------------------------------------------------------------
// The real templates
// ---------------------------------------------------------------------------------------

TEST(chat_template_real, llama3_renders_every_reference_chat_exactly) {
  TROUPE_REQUIRE_SHARED(::troupe::test::shared_dir() / "tokenizers/reference/llama3.json");
  expect_references_match("llama3", {});
}

TEST(chat_template_real, qwen3_renders_every_reference_chat_exactly) {
  TROUPE_REQUIRE_SHARED(::troupe::test::shared_dir() / "tokenizers/reference/qwen3.json");
  expect_references_match("qwen3", {});
}

// Which Jinja settings reproduce the references: Hugging Face's (trim_blocks and
// lstrip_blocks on, the default here) and also all three other combinations, because both
// templates control whitespace with `-` or keep no newline after a tag.
TEST(chat_template_real, the_references_do_not_depend_on_trim_or_lstrip_blocks) {
  TROUPE_REQUIRE_SHARED(::troupe::test::shared_dir() / "tokenizers/reference/qwen3.json");
  TROUPE_REQUIRE_SHARED(::troupe::test::shared_dir() / "tokenizers/reference/llama3.json");
  for (const bool trim : {false, true})
    for (const bool lstrip : {false, true}) {
      SCOPED_TRACE("trim_blocks=" + std::to_string(trim) + " lstrip_blocks=" + std::to_string(lstrip));
      expect_references_match("llama3", {trim, lstrip});
      expect_references_match("qwen3", {trim, lstrip});
    }
}

TEST(chat_template_real, qwen3_renders_tool_calls_thinking_and_tool_responses) {
  TROUPE_REQUIRE_SHARED(::troupe::test::shared_dir() / "tokenizers/qwen3/tokenizer_config.json");
  const model_files f = load("qwen3");
  const chat_template tmpl(f.config.at("chat_template").get<std::string>());
  chat_template_inputs in;
  in.messages = ojson::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "<think>\nneed a tool\n</think>\n\nChecking.",
     "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
    {"role": "tool", "content": "{\"temp\": 21}"},
    {"role": "tool", "content": "sunny"}
  ])");
  in.extra = {{"enable_thinking", false}};
  // Expected text from Python's Jinja2 with Hugging Face's settings: the assistant turn comes
  // after the last user query, so its reasoning stays; arguments go through tojson in key
  // order; consecutive tool messages share one user turn.
  EXPECT_EQ(tmpl.render(in),
            "<|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nneed a tool\n</think>\n\nChecking.\n<tool_call>\n{\"name\": "
            "\"get_weather\", \"arguments\": "
            "{\"city\": \"Paris\", \"unit\": \"C\"}}\n</tool_call><|im_end|>\n"
            "<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\nsunny\n"
            "</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

// ---------------------------------------------------------------------------------------
// The API
// ---------------------------------------------------------------------------------------

TEST(chat_template_api, passes_the_standard_variables_and_extra_ones) {
  const chat_template tmpl(
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
      "{{ tools is none }}{% if add_generation_prompt %}>{% endif %}{{ eos_token }}{{ enable_thinking }}");
  chat_template_inputs in;
  in.messages = {{{"role", "user"}, {"content", "hi"}}};
  in.bos_token = "<s>";
  in.eos_token = "</s>";
  in.extra = {{"enable_thinking", true}};
  EXPECT_EQ(tmpl.render(in), "<s>[user:hi]True></s>True");
  in.add_generation_prompt = false;
  in.extra = ojson::object();
  EXPECT_EQ(tmpl.render(in), "<s>[user:hi]True</s>");
}

TEST(chat_template_api, refuses_extra_variables_that_replace_standard_ones) {
  const chat_template tmpl("{{ messages }}");
  chat_template_inputs in;
  in.extra = {{"messages", 1}};
  EXPECT_THROW(tmpl.render(in), error);
}

TEST(chat_template_api, a_template_refusal_reaches_the_caller_verbatim) {
  const chat_template tmpl(
      "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with a user message') }}"
      "{% endif %}ok");
  chat_template_inputs in;
  in.messages = {{{"role", "assistant"}, {"content", "x"}}};
  try {
    tmpl.render(in);
    ADD_FAILURE() << "no error";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::failed);
    EXPECT_EQ(e.field(), "chat_template");
    EXPECT_STREQ(e.what(), "Conversation must start with a user message");
  }
}

TEST(chat_template_api, strftime_now_uses_the_given_date) {
  const chat_template tmpl("Today Date: {{ strftime_now('%d %b %Y') }}");
  chat_template_inputs in;
  in.now = std::chrono::system_clock::from_time_t(1721865600);  // 2024-07-25 00:00 UTC
  EXPECT_EQ(tmpl.render(in), "Today Date: 25 Jul 2024");
}

}  // namespace
}  // namespace troupe
