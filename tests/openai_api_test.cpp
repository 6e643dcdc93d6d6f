// src/api/openai.h without a server: request bodies into jobs (every refusal naming its
// field), server messages into OpenAI's response and stream shapes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "src/api/openai.h"
#include "src/model/tokenizer.h"

using namespace troupe;
using json = nlohmann::json;

namespace {

struct fixture {
  tokenizer tok{byte_vocabulary()};
  std::vector<api::api_model> models{{"m", &tok, 64, 0}};
  api::chat_renderer render = [](const std::string&, const std::string& messages, const std::string&, bool gen) {
    std::string out;
    for (const auto& m : json::parse(messages))
      out += m.at("role").get<std::string>() + ": " + m.at("content").get<std::string>() + "\n";
    return gen ? out + "assistant:" : out;
  };
  std::variant<api::parsed_request, api::api_error> parse(api::kind k, const std::string& body) {
    return api::parse_request(k, body, models, "key", render);
  }
  api::api_error error(api::kind k, const std::string& body) {
    auto r = parse(k, body);
    EXPECT_TRUE(std::holds_alternative<api::api_error>(r)) << body;
    return std::holds_alternative<api::api_error>(r) ? std::get<api::api_error>(r) : api::api_error{};
  }
};

proto::token_chunk chunk(size_t choice, std::vector<int32_t> ids, std::string text) {
  proto::token_chunk c;
  c.client_request_id = std::to_string(choice);
  c.ids = std::move(ids);
  c.text_delta = std::move(text);
  c.logprobs.assign(c.ids.size(), -0.5f);
  return c;
}

proto::job_done done(size_t choice, uint32_t prompt, uint32_t completion) {
  proto::job_done d;
  d.client_request_id = std::to_string(choice);
  d.reason = finish_reason::length;
  d.prompt_tokens = prompt;
  d.completion_tokens = completion;
  return d;
}

}  // namespace

TEST(OpenAIRequests, FieldsBecomeTheJobsSamplingAndBadOnesAreNamed) {
  fixture f;
  auto r = f.parse(api::kind::completion,
                   R"({"prompt":["a","b"],"n":2,"max_tokens":5,"temperature":0.5,"top_p":0.9,"top_k":3,)"
                   R"("stop":"x","seed":10,"presence_penalty":0.5,"stop_token_ids":[7],"unknown_field":1,)"
                   R"("logit_bias":{"65":-100,"66":5.5},"min_tokens":2})");
  ASSERT_TRUE(std::holds_alternative<api::parsed_request>(r));
  const auto& p = std::get<api::parsed_request>(r);
  ASSERT_EQ(p.jobs.size(), 4u);  // 2 prompts x n = 2
  EXPECT_EQ(p.jobs[2].prompt_text, "b");
  EXPECT_EQ(p.jobs[3].client_request_id, "3");
  EXPECT_EQ(p.jobs[0].sampling.max_tokens, 5);
  EXPECT_FLOAT_EQ(p.jobs[0].sampling.temperature, 0.5f);
  EXPECT_EQ(p.jobs[0].sampling.top_k, 3);
  EXPECT_EQ(p.jobs[0].sampling.stop_strings, std::vector<std::string>{"x"});
  EXPECT_EQ(p.jobs[0].sampling.stop_ids, std::vector<int32_t>{7});
  EXPECT_EQ(p.jobs[0].sampling.seed, 10u);
  EXPECT_EQ(p.jobs[1].sampling.seed, 11u);  // each choice its own draw
  EXPECT_EQ(p.jobs[0].api_key, "key");
  EXPECT_EQ(p.jobs[0].sampling.logit_bias, (std::vector<std::pair<int32_t, float>>{{65, -100.0f}, {66, 5.5f}}));
  EXPECT_EQ(p.jobs[0].sampling.min_tokens, 2);

  EXPECT_EQ(f.error(api::kind::completion, R"({"prompt":"a","top_p":"x"})").param, "top_p");
  EXPECT_EQ(f.error(api::kind::completion, R"({"prompt":"a","n":0})").param, "n");
  EXPECT_EQ(f.error(api::kind::completion, R"({"prompt":"a","stop":[""]})").param, "stop");
  EXPECT_EQ(f.error(api::kind::completion, R"({"prompt":"a","stream_options":{"include_usage":true}})").param,
            "stream_options");
  EXPECT_EQ(f.error(api::kind::completion, R"({"prompt":"a","logit_bias":{"x":1}})").param, "logit_bias");
  EXPECT_EQ(f.error(api::kind::completion, R"({"prompt":"a","logit_bias":{"5":101}})").param, "logit_bias");
  EXPECT_EQ(f.error(api::kind::completion, R"({"prompt":"a","max_tokens":4,"min_tokens":5})").param, "min_tokens");
  EXPECT_EQ(f.error(api::kind::chat, R"({"messages":[{"role":"user","content":"a"}],"tools":[{}]})").param, "tools");
  EXPECT_EQ(f.error(api::kind::chat, R"({"messages":[{"role":"robot","content":"a"}]})").param, "messages[0].role");
  EXPECT_EQ(f.error(api::kind::chat, R"({"messages":[]})").param, "messages");
  const auto missing = f.error(api::kind::completion, R"({"prompt":"a","model":"other"})");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.code, "model_not_found");
}

TEST(OpenAIRequests, ChatsAreRenderedAndTokenizedWithoutAnExtraBos) {
  fixture f;
  auto r = f.parse(api::kind::chat, R"({"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]})");
  ASSERT_TRUE(std::holds_alternative<api::parsed_request>(r));
  const auto& p = std::get<api::parsed_request>(r);
  ASSERT_EQ(p.jobs.size(), 1u);
  EXPECT_TRUE(p.jobs[0].prompt_is_ids);
  EXPECT_EQ(p.jobs[0].prompt_ids, f.tok.encode("user: hi\nassistant:", false));
  EXPECT_EQ(p.jobs[0].sampling.max_tokens, 64);           // a chat runs to the context unless told
  EXPECT_FLOAT_EQ(p.jobs[0].sampling.temperature, 1.0f);  // OpenAI's default
  // A template's own error is the request's 400.
  f.render = [](const std::string&, const std::string&, const std::string&, bool) -> std::string {
    throw error(error_kind::failed, "Conversation roles must alternate", "chat_template");
  };
  const auto e = f.error(api::kind::chat, R"({"messages":[{"role":"user","content":"a"}]})");
  EXPECT_EQ(e.status, 400);
  EXPECT_NE(e.message.find("Conversation roles must alternate"), std::string::npos);
}

TEST(OpenAIResponses, AStreamWithTwoChoicesEndsWithItsUsageThenDone) {
  fixture f;
  auto p = std::get<api::parsed_request>(f.parse(
      api::kind::chat,
      R"({"messages":[{"role":"user","content":"a"}],"n":2,"stream":true,"stream_options":{"include_usage":true}})"));
  api::response r(std::move(p), f.models[0], "chatcmpl-1", 100);
  std::string all = r.on_message(1, chunk(1, {104}, "h"));
  all += r.on_message(0, chunk(0, {105}, "i"));
  all += r.on_message(0, done(0, 9, 1));
  EXPECT_FALSE(r.finished());
  all += r.on_message(1, done(1, 9, 1));
  EXPECT_TRUE(r.finished());
  std::vector<json> events;
  std::istringstream in(all);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("data: ", 0) == 0 && line != "data: [DONE]") events.push_back(json::parse(line.substr(6)));
  EXPECT_NE(all.find("data: [DONE]\n\n"), std::string::npos);
  ASSERT_GE(events.size(), 6u);
  EXPECT_EQ(events[0].at("choices")[0].at("delta").at("role"), "assistant");  // the role comes first
  EXPECT_EQ(events[1].at("choices")[0].at("delta").at("content"), "h");
  EXPECT_EQ(events[1].at("object"), "chat.completion.chunk");
  EXPECT_TRUE(events[1].at("usage").is_null());
  const json& last = events.back();
  EXPECT_TRUE(last.at("choices").empty());
  EXPECT_EQ(last.at("usage").at("prompt_tokens"), 9);  // the prompt counted once, not per choice
  EXPECT_EQ(last.at("usage").at("completion_tokens"), 2);
}

TEST(OpenAIResponses, AnErrorEndsTheResponseInOpenAIsShape) {
  fixture f;
  auto p = std::get<api::parsed_request>(f.parse(api::kind::completion, R"({"prompt":"a","max_tokens":3})"));
  api::response r(std::move(p), f.models[0], "cmpl-1", 100);
  r.on_message(0, proto::job_error{0, "0", {error_kind::overloaded, "tenant t is over its limit", "tenant"}});
  EXPECT_TRUE(r.finished());
  EXPECT_EQ(r.status(), 429);
  const auto body = json::parse(r.body());
  EXPECT_EQ(body.at("error").at("type"), "rate_limit_error");
  EXPECT_EQ(body.at("error").at("message"), "tenant t is over its limit");
  // Mid-stream: the error is an event, then the stream ends.
  auto ps = std::get<api::parsed_request>(f.parse(api::kind::completion, R"({"prompt":"a","stream":true})"));
  api::response s(std::move(ps), f.models[0], "cmpl-2", 100);
  EXPECT_NE(s.on_message(0, chunk(0, {97}, "a")).find("\"text\":\"a\""), std::string::npos);
  const std::string tail = s.on_message(0, proto::job_error{1, "0", {error_kind::disconnected, "worker lost", ""}});
  EXPECT_NE(tail.find("data: {\"error\":"), std::string::npos) << tail;
  EXPECT_NE(tail.find("data: [DONE]"), std::string::npos) << tail;
  EXPECT_TRUE(s.finished());
}

TEST(OpenAIErrors, ClusterErrorKindsMapToHttpStatuses) {
  EXPECT_EQ(api::from_cluster({error_kind::failed, "bad", "temperature"}).status, 400);
  EXPECT_EQ(api::from_cluster({error_kind::failed, "unknown API key", "api_key"}).status, 401);
  EXPECT_EQ(api::from_cluster({error_kind::failed, "unknown model", "model"}).status, 404);
  EXPECT_EQ(api::from_cluster({error_kind::overloaded, "queue full", "queue"}).status, 429);
  EXPECT_EQ(api::from_cluster({error_kind::overloaded, "no scheduler", "scheduler"}).status, 503);
  EXPECT_EQ(api::from_cluster({error_kind::overloaded, "the gateway is shutting down", ""}).status, 503);
  EXPECT_EQ(api::from_cluster({error_kind::disconnected, "worker lost", ""}).status, 503);
  const auto e = json::parse(api::error_body({404, "nope", "invalid_request_error", "model", "model_not_found"}));
  EXPECT_EQ(e, json::parse(R"({"error":{"message":"nope","type":"invalid_request_error","param":"model",)"
                           R"("code":"model_not_found"}})"));
}
