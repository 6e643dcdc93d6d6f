#include "src/api/openai.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>

#include "src/model/tokenizer.h"
#include "troupe/error.h"

namespace troupe::api {

using json = nlohmann::json;

namespace {

// Invalid UTF-8 (a token that is half a character, a prompt's bytes) never makes dump throw.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

api_error bad(const std::string& param, const std::string& message) {
  return {400, message, "invalid_request_error", param};
}

// Thrown while parsing a request: becomes its 400.
struct request_error {
  api_error e;
};
[[noreturn]] void fail(const std::string& param, const std::string& message) {
  throw request_error{bad(param, message)};
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}

// Optional fields of a request object, each checked for its type and range; null counts as
// absent, as OpenAI's server treats it.
struct fields {
  const json& j;
  const json* get(const char* name) const {
    auto it = j.find(name);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<double> number(const char* name, double lo, double hi) const {
    const json* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_number()) fail(name, std::string("'") + name + "' must be a number, got " + type_name(*v));
    const double x = v->get<double>();
    if (!(x >= lo && x <= hi))
      fail(name, std::string("'") + name + "' must be between " + fmt_num(lo) + " and " + fmt_num(hi) + ", got " +
                     fmt_num(x));
    return x;
  }
  std::optional<int64_t> integer(const char* name, int64_t lo, int64_t hi) const {
    const json* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_number_integer() && !(v->is_number_float() && std::floor(v->get<double>()) == v->get<double>()))
      fail(name, std::string("'") + name + "' must be an integer, got " + type_name(*v));
    const auto x = v->is_number_integer() ? v->get<int64_t>() : static_cast<int64_t>(v->get<double>());
    if (x < lo || x > hi)
      fail(name, std::string("'") + name + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                     ", got " + std::to_string(x));
    return x;
  }
  std::optional<bool> boolean(const char* name) const {
    const json* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) fail(name, std::string("'") + name + "' must be a boolean, got " + type_name(*v));
    return v->get<bool>();
  }
  std::optional<std::string> string(const char* name) const {
    const json* v = get(name);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(name, std::string("'") + name + "' must be a string, got " + type_name(*v));
    return v->get<std::string>();
  }
  static std::string fmt_num(double x) {
    if (std::floor(x) == x && std::fabs(x) < 1e15) return std::to_string(static_cast<int64_t>(x));
    std::string s = std::to_string(x);
    while (s.size() > 1 && s.back() == '0') s.pop_back();
    return s;
  }
};

// A request body: a JSON object, or a 400 that says what is wrong with it.
json parse_body(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    throw request_error{bad("", std::string("the body is not valid JSON: ") + e.what())};
  }
  if (!j.is_object()) throw request_error{bad("", "the body must be a JSON object")};
  return j;
}

const api_model& find_model(const std::vector<api_model>& models, const std::optional<std::string>& name) {
  if (models.empty()) throw request_error{{503, "no model is served", "server_error"}};
  if (!name || name->empty()) return models.front();
  for (const auto& m : models)
    if (m.name == *name) return m;
  std::string names;
  for (const auto& m : models) names += (names.empty() ? "" : ", ") + m.name;
  throw request_error{{404, "The model '" + *name + "' does not exist; this server serves: " + names,
                       "invalid_request_error", "model", "model_not_found"}};
}

// Fields OpenAI documents that Troupe cannot honour yet: a 400 naming them, never ignored.
void refuse_unsupported(const fields& f, kind k) {
  auto refuse = [](const char* name, const std::string& why) {
    fail(name, std::string("'") + name + "' is not supported by this server yet" + why);
  };
  if (const json* t = f.get("tools"); t && !(t->is_array() && t->empty()))
    refuse("tools", " (tool calling comes with structured output)");
  if (const json* t = f.get("tool_choice"); t && !(t->is_string() && *t == "none")) refuse("tool_choice", "");
  if (f.get("functions")) refuse("functions", "");
  if (f.get("function_call")) refuse("function_call", "");
  if (const json* r = f.get("response_format"); r && !(r->is_object() && r->value("type", "") == "text"))
    refuse("response_format", " (only {\"type\": \"text\"}; JSON modes come with structured output)");
  if (k == kind::completion) {
    if (const json* s = f.get("suffix"); s && !(s->is_string() && s->get<std::string>().empty()))
      refuse("suffix", " (no fill-in-the-middle)");
  }
  if (f.get("audio")) refuse("audio", "");
  if (const json* m = f.get("modalities"); m && !(m->is_array() && m->size() == 1 && (*m)[0] == "text"))
    refuse("modalities", "");
  if (f.get("prediction")) refuse("prediction", "");
}

sampling_params parse_sampling(const fields& f, kind k, const api_model& m) {
  sampling_params p;
  p.temperature = static_cast<float>(f.number("temperature", 0, 2).value_or(1.0));  // OpenAI's default: 1
  p.top_p = static_cast<float>(f.number("top_p", 0, 1).value_or(1.0));
  if (p.top_p <= 0) fail("top_p", "'top_p' must be in (0, 1], got 0");
  p.top_k = static_cast<int32_t>(f.integer("top_k", -1, 1 << 20).value_or(0));
  if (p.top_k < 0) p.top_k = 0;  // vLLM's -1 = off
  p.min_p = static_cast<float>(f.number("min_p", 0, 0.999999).value_or(0));
  p.repetition_penalty = static_cast<float>(f.number("repetition_penalty", 1e-6, 100).value_or(1));
  p.frequency_penalty = static_cast<float>(f.number("frequency_penalty", -2, 2).value_or(0));
  p.presence_penalty = static_cast<float>(f.number("presence_penalty", -2, 2).value_or(0));
  p.ignore_eos = f.boolean("ignore_eos").value_or(false);
  if (const json* lb = f.get("logit_bias")) {
    if (!lb->is_object()) fail("logit_bias", "'logit_bias' must be an object of token id -> bias");
    for (const auto& [key, bias] : lb->items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
      }
      if (id < 0 || id >= m.tok->vocab_size())
        fail("logit_bias", "'logit_bias' keys must be token ids in [0, " + std::to_string(m.tok->vocab_size()) +
                               "), got '" + key + "'");
      if (!bias.is_number() || !(bias.get<double>() >= -100 && bias.get<double>() <= 100))
        fail("logit_bias", "'logit_bias' values must be numbers in [-100, 100]");
      p.logit_bias.emplace_back(static_cast<int32_t>(id), bias.get<float>());
    }
  }
  const int64_t ctx = m.max_context > 0 ? m.max_context : (int64_t{1} << 30);
  // Completions default to 16 tokens as OpenAI's do; a chat runs to its end (or the context).
  std::optional<int64_t> max_tokens = f.integer("max_tokens", 1, int64_t{1} << 30);
  if (k == kind::chat) {
    if (auto mc = f.integer("max_completion_tokens", 1, int64_t{1} << 30)) max_tokens = mc;
  }
  p.max_tokens = static_cast<int32_t>(std::min<int64_t>(max_tokens.value_or(k == kind::chat ? ctx : 16), ctx));
  if (auto mt = f.integer("min_tokens", 0, int64_t{1} << 30)) {
    if (*mt > p.max_tokens)
      fail("min_tokens", "'min_tokens' (" + std::to_string(*mt) + ") must not exceed max_tokens (" +
                             std::to_string(p.max_tokens) + ")");
    p.min_tokens = static_cast<int32_t>(*mt);
  }
  if (const json* s = f.get("stop")) {
    if (s->is_string()) {
      p.stop_strings.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      for (const auto& x : *s) {
        if (!x.is_string()) fail("stop", "'stop' must be a string or an array of strings");
        p.stop_strings.push_back(x.get<std::string>());
      }
    } else {
      fail("stop", std::string("'stop' must be a string or an array of strings, got ") + type_name(*s));
    }
    for (const auto& x : p.stop_strings)
      if (x.empty()) fail("stop", "'stop' strings must not be empty");
  }
  if (const json* s = f.get("stop_token_ids")) {
    if (!s->is_array()) fail("stop_token_ids", "'stop_token_ids' must be an array of token ids");
    for (const auto& x : *s) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= m.tok->vocab_size())
        fail("stop_token_ids",
             "'stop_token_ids' must hold token ids in [0, " + std::to_string(m.tok->vocab_size()) + ")");
      p.stop_ids.push_back(x.get<int32_t>());
    }
  }
  if (k == kind::completion) {
    if (auto lp = f.integer("logprobs", 0, 20)) p.top_logprobs = static_cast<int32_t>(*lp);
  } else {
    const bool lp = f.boolean("logprobs").value_or(false);
    const auto top = f.integer("top_logprobs", 0, 20);
    if (top && !lp) fail("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    p.top_logprobs = static_cast<int32_t>(top.value_or(0));
  }
  return p;
}

// Chat content: a string, or an array of text parts.
std::string content_text(const json& content, size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  if (content.is_null()) return {};
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) fail(param, "'" + param + "' must be a string or an array of content parts");
  std::string text;
  for (const auto& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      fail(param, "'" + param + "': only parts of type \"text\" are supported (this model reads text)");
    text += part["text"].get<std::string>();
  }
  return text;
}

// The messages as the template sees them: roles checked, content flattened to strings.
json normalize_messages(const json* messages) {
  if (!messages) fail("messages", "'messages' is required");
  if (!messages->is_array() || messages->empty()) fail("messages", "'messages' must be a non-empty array");
  json out = json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) fail(at, "'" + at + "' must be an object");
    if (!m.contains("role") || !m["role"].is_string()) fail(at + ".role", "'" + at + ".role' must be a string");
    const std::string role = m["role"];
    static const char* const roles[] = {"system", "developer", "user", "assistant", "tool"};
    if (std::find(std::begin(roles), std::end(roles), role) == std::end(roles))
      fail(at + ".role",
           "'" + at + ".role' must be one of system, developer, user, assistant, tool; got '" + role + "'");
    json n = m;
    n["content"] = content_text(m.contains("content") ? m["content"] : json(), i);
    out.push_back(std::move(n));
  }
  return out;
}

std::vector<int32_t> ids_of(const json& v, const api_model& m, const std::string& param) {
  std::vector<int32_t> ids;
  for (const auto& x : v) {
    if (!x.is_number_integer()) fail(param, "'" + param + "' token ids must be integers");
    const auto id = x.get<int64_t>();
    if (id < 0 || id >= m.tok->vocab_size())
      fail(param, "'" + param + "' holds token " + std::to_string(id) + ", outside the vocabulary [0, " +
                      std::to_string(m.tok->vocab_size()) + ")");
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// A chat's prompt ids: the template's text, special tokens parsed, no BOS added (the
// template writes it when the model wants one).
std::vector<int32_t> render_chat(const api_model& m, const json& messages, bool add_generation_prompt,
                                 const chat_renderer& render) {
  if (!render)
    throw request_error{{400, "model '" + m.name + "' has no chat template; start the server with --chat-template FILE",
                         "invalid_request_error", "messages"}};
  std::string text;
  try {
    text = render(m.name, dump(messages), "[]", add_generation_prompt);
  } catch (const error& e) {
    throw request_error{{400, std::string("chat template: ") + e.what(), "invalid_request_error", "messages"}};
  }
  return m.tok->encode(text, /*add_bos=*/false, /*parse_special=*/true);
}

std::string finish_name(finish_reason r) {
  switch (r) {
    case finish_reason::stop:
      return "stop";
    case finish_reason::length:
      return "length";
    case finish_reason::cancelled:
      return "abort";
    default:
      return "stop";
  }
}

}  // namespace

std::string error_body(const api_error& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return dump(json{{"error", err}});
}

api_error from_cluster(const error_info& e) {
  api_error a;
  a.message = e.message;
  a.param = e.field;
  switch (e.kind) {
    case error_kind::failed:
      if (e.field == "api_key") {
        a.status = 401;
        a.type = "authentication_error";
        a.code = "invalid_api_key";
        a.param.clear();
      } else if (e.field == "model") {
        a.status = 404;
        a.code = "model_not_found";
      } else {
        a.status = 400;
      }
      break;
    case error_kind::overloaded:
      // A tenant over its limit or a full queue: retry later. No scheduler or a gateway
      // shutting down: the service is unavailable.
      if (e.field == "scheduler" || e.message.find("shutting down") != std::string::npos) {
        a.status = 503;
        a.type = "server_error";
        a.retry_after_s = 2;
      } else {
        a.status = 429;
        a.type = "rate_limit_error";
        a.retry_after_s = 1;
      }
      break;
    case error_kind::disconnected:
      a.status = 503;
      a.type = "server_error";
      a.retry_after_s = 2;
      break;
    case error_kind::unimplemented:
      a.status = 400;
      break;
  }
  return a;
}

std::variant<parsed_request, api_error> parse_request(kind k, const std::string& body,
                                                      const std::vector<api_model>& models, const std::string& api_key,
                                                      const chat_renderer& render) {
  try {
    const json j = parse_body(body);
    const fields f{j};
    const api_model& m = find_model(models, f.string("model"));
    refuse_unsupported(f, k);
    parsed_request r;
    r.k = k;
    r.model = m.name;
    r.stream = f.boolean("stream").value_or(false);
    if (const json* so = f.get("stream_options")) {
      if (!so->is_object()) fail("stream_options", "'stream_options' must be an object");
      if (!r.stream) fail("stream_options", "'stream_options' is only allowed with 'stream': true");
      const fields sf{*so};
      r.include_usage = sf.boolean("include_usage").value_or(false);
    }
    r.n = static_cast<int32_t>(f.integer("n", 1, 128).value_or(1));
    if (auto bo = f.integer("best_of", 1, 128); bo && *bo != r.n)
      fail("best_of", "'best_of' other than 'n' is not supported");
    f.string("user");  // checked for its type, then only a label
    const sampling_params base = parse_sampling(f, k, m);
    if (k == kind::completion) {
      r.echo = f.boolean("echo").value_or(false);
      r.logprobs = f.get("logprobs") ? base.top_logprobs : -1;
    } else {
      r.chat_logprobs = f.boolean("logprobs").value_or(false);
      r.logprobs = r.chat_logprobs ? base.top_logprobs : -1;
    }
    const std::optional<int64_t> seed = f.integer("seed", INT64_MIN, INT64_MAX);

    // The prompts: text (tokenized by the gateway, with BOS as `troupe generate` adds it)
    // or ids.
    struct prompt {
      bool ids = false;
      std::string text;
      std::vector<int32_t> tokens;
    };
    std::vector<prompt> prompts;
    if (k == kind::chat) {
      const json messages = normalize_messages(f.get("messages"));
      const bool add_gen = f.boolean("add_generation_prompt").value_or(true);
      prompts.push_back({true, {}, render_chat(m, messages, add_gen, render)});
    } else {
      const json* p = f.get("prompt");
      if (!p) fail("prompt", "'prompt' is required");
      auto is_ids = [](const json& v) {
        return v.is_array() && !v.empty() &&
               std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number(); });
      };
      if (p->is_string()) {
        prompts.push_back({false, p->get<std::string>(), {}});
      } else if (is_ids(*p)) {
        prompts.push_back({true, {}, ids_of(*p, m, "prompt")});
      } else if (p->is_array() && !p->empty()) {
        for (size_t i = 0; i < p->size(); ++i) {
          const json& x = (*p)[i];
          const std::string param = "prompt[" + std::to_string(i) + "]";
          if (x.is_string())
            prompts.push_back({false, x.get<std::string>(), {}});
          else if (is_ids(x))
            prompts.push_back({true, {}, ids_of(x, m, param)});
          else
            fail("prompt", "'" + param + "' must be a string or an array of token ids");
        }
      } else {
        fail("prompt", "'prompt' must be a string, an array of strings, an array of token ids or an array of those");
      }
      if (prompts.size() * static_cast<size_t>(r.n) > 256)
        fail("prompt", "at most 256 choices (prompts x n) per request");
    }
    for (const auto& p : prompts)
      if (!p.ids && p.text.empty()) fail("prompt", "'prompt' must not be empty");

    std::random_device rd;
    for (size_t pi = 0; pi < prompts.size(); ++pi) {
      for (int32_t c = 0; c < r.n; ++c) {
        proto::job job;
        job.client_request_id = std::to_string(r.jobs.size());
        job.model = m.name;
        job.api_key = api_key;
        job.stream = true;  // chunks as they come: the response assembles or streams them
        job.sampling = base;
        // Each choice samples on its own: the request's seed + its index, else a fresh one.
        job.sampling.seed = seed ? static_cast<uint64_t>(*seed) + r.jobs.size() : ((uint64_t{rd()} << 32) | rd());
        if (prompts[pi].ids) {
          job.prompt_is_ids = true;
          job.prompt_ids = prompts[pi].tokens;
        } else {
          job.prompt_text = prompts[pi].text;
        }
        r.echo_prefix.push_back(!r.echo           ? std::string()
                                : prompts[pi].ids ? m.tok->decode(prompts[pi].tokens)
                                                  : prompts[pi].text);
        r.prompt_tokens.push_back(prompts[pi].ids ? static_cast<uint32_t>(prompts[pi].tokens.size()) : 0);
        r.jobs.push_back(std::move(job));
      }
    }
    return r;
  } catch (const request_error& e) {
    return e.e;
  }
}

// ---- responses ------------------------------------------------------------------------------

struct response::impl {
  parsed_request req;
  const api_model& model;
  std::string id;
  int64_t created;
  struct choice {
    std::string text;
    bool started = false;  // chat: its first chunk, the role, was sent
    bool echoed = false;   // completions with echo: the prompt was sent
    bool done = false;
    finish_reason reason = finish_reason::none;
    uint32_t prompt_tokens = 0, completion_tokens = 0;
    json logprobs_content = json::array();  // chat
    json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
    size_t offset = 0;  // completions: text offset of the next token
  };
  std::vector<choice> choices;
  std::optional<api_error> error;
  size_t done = 0;
  bool stream_ended = false;

  impl(parsed_request r, const api_model& m, std::string i, int64_t c)
      : req(std::move(r)), model(m), id(std::move(i)), created(c), choices(req.prompt_tokens.size()) {}

  const char* object(bool chunk) const {
    if (req.k == kind::completion) return "text_completion";
    return chunk ? "chat.completion.chunk" : "chat.completion";
  }
  json head(bool chunk) const {
    json j = {{"id", id}, {"object", object(chunk)}, {"created", created}, {"model", req.model}};
    if (chunk && req.include_usage) j["usage"] = nullptr;
    return j;
  }
  json usage() const {
    uint64_t prompt = 0, completion = 0;
    for (size_t i = 0; i < choices.size(); ++i) {
      if (i % static_cast<size_t>(req.n) == 0) prompt += choices[i].prompt_tokens;  // once per prompt
      completion += choices[i].completion_tokens;
    }
    return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
  }
  std::string token_text(int32_t id) const { return model.tok->token_bytes(id); }
  static json bytes_of(const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(static_cast<int>(c));
    return b;
  }
  // The logprobs of a chunk's tokens, in the request's shape; also kept for the final body.
  json chunk_logprobs(choice& c, const proto::token_chunk& t) {
    if (req.logprobs < 0) return nullptr;
    if (req.k == kind::chat) {
      json content = json::array();
      for (size_t i = 0; i < t.ids.size(); ++i) {
        const std::string s = token_text(t.ids[i]);
        json e = {{"token", s}, {"logprob", i < t.logprobs.size() ? t.logprobs[i] : 0.0f}, {"bytes", bytes_of(s)}};
        json top = json::array();
        if (i < t.top.size())
          for (const auto& a : t.top[i]) {
            const std::string as = token_text(a.id);
            top.push_back({{"token", as}, {"logprob", a.logprob}, {"bytes", bytes_of(as)}});
          }
        e["top_logprobs"] = std::move(top);
        content.push_back(e);
        c.logprobs_content.push_back(std::move(e));
      }
      return json{{"content", std::move(content)}};
    }
    json tokens = json::array(), lps = json::array(), top = json::array(), offs = json::array();
    for (size_t i = 0; i < t.ids.size(); ++i) {
      const std::string s = token_text(t.ids[i]);
      tokens.push_back(s);
      lps.push_back(i < t.logprobs.size() ? t.logprobs[i] : 0.0f);
      json alts = json::object();
      if (i < t.top.size())
        for (const auto& a : t.top[i]) alts[token_text(a.id)] = a.logprob;
      top.push_back(std::move(alts));
      offs.push_back(c.offset);
      c.offset += s.size();
    }
    for (size_t i = 0; i < tokens.size(); ++i) {
      c.tokens.push_back(tokens[i]);
      c.token_logprobs.push_back(lps[i]);
      c.top.push_back(top[i]);
      c.offsets.push_back(offs[i]);
    }
    return json{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", top}, {"text_offset", offs}};
  }
  static std::string event(const json& j) { return "data: " + dump(j) + "\n\n"; }

  // One streamed chunk of choice i: text and/or a finish reason.
  std::string stream_chunk(size_t i, const std::string& text, const json& logprobs, const char* finish) {
    choice& c = choices[i];
    std::string out;
    json ch = {{"index", i}};
    if (req.k == kind::chat) {
      if (!c.started) {  // the role first, as OpenAI's stream does
        json first = head(true);
        first["choices"] = json::array({{{"index", i},
                                         {"delta", {{"role", "assistant"}, {"content", ""}}},
                                         {"logprobs", nullptr},
                                         {"finish_reason", nullptr}}});
        out += event(first);
        c.started = true;
      }
      ch["delta"] = text.empty() ? json::object() : json{{"content", text}};
    } else {
      ch["text"] = text;
    }
    ch["logprobs"] = logprobs;
    ch["finish_reason"] = finish ? json(finish) : json(nullptr);
    json j = head(true);
    j["choices"] = json::array({std::move(ch)});
    out += event(j);
    return out;
  }

  std::string end_stream() {
    std::string out;
    if (req.include_usage) {
      json u = head(false);
      u["object"] = object(true);
      u["choices"] = json::array();
      u["usage"] = usage();
      out += event(u);
    }
    out += "data: [DONE]\n\n";
    stream_ended = true;
    return out;
  }
};

response::response(parsed_request req, const api_model& model, std::string id, int64_t created)
    : impl_(std::make_unique<impl>(std::move(req), model, std::move(id), created)) {
  for (size_t i = 0; i < impl_->choices.size(); ++i) {
    impl_->choices[i].prompt_tokens = impl_->req.prompt_tokens[i];
    if (impl_->req.echo) {
      impl_->choices[i].text = impl_->req.echo_prefix[i];
      impl_->choices[i].offset = impl_->req.echo_prefix[i].size();
    }
  }
}
response::~response() = default;

const parsed_request& response::request() const { return impl_->req; }

bool response::finished() const {
  return impl_->stream_ended || impl_->done == impl_->choices.size() || (impl_->error && !impl_->req.stream);
}

std::string response::on_message(size_t i, const proto::server_message& m) {
  auto& s = *impl_;
  if (i >= s.choices.size() || s.choices[i].done || finished()) return {};
  auto& c = s.choices[i];
  std::string out;
  if (const auto* t = std::get_if<proto::token_chunk>(&m)) {
    json lp = s.chunk_logprobs(c, *t);
    if (s.req.stream) {
      std::string text = t->text_delta;
      if (s.req.echo && !std::exchange(c.echoed, true)) text = s.req.echo_prefix[i] + text;
      out = s.stream_chunk(i, text, lp, nullptr);
    } else {
      c.text += t->text_delta;
    }
  } else if (const auto* d = std::get_if<proto::job_done>(&m)) {
    c.done = true;
    ++s.done;
    c.reason = d->reason;
    c.prompt_tokens = d->prompt_tokens;
    c.completion_tokens = d->completion_tokens;
    if (s.req.stream) {
      std::string text;
      if (s.req.echo && !std::exchange(c.echoed, true)) text = s.req.echo_prefix[i];
      const std::string reason = finish_name(d->reason);
      out = s.stream_chunk(i, text, nullptr, reason.c_str());
      if (s.done == s.choices.size()) out += s.end_stream();
    }
  } else if (const auto* e = std::get_if<proto::job_error>(&m)) {
    c.done = true;
    ++s.done;
    if (!s.error) s.error = from_cluster(e->error);
    if (s.req.stream) {
      // The stream has started (200 sent): the error goes into it, then it ends.
      out = impl::event(json::parse(error_body(*s.error)));
      out += "data: [DONE]\n\n";
      s.stream_ended = true;
    }
  }
  return out;
}

int response::status() const { return impl_->error ? impl_->error->status : 200; }

std::string response::body() const {
  const auto& s = *impl_;
  if (s.error) return error_body(*s.error);
  json j = s.head(false);
  json choices = json::array();
  for (size_t i = 0; i < s.choices.size(); ++i) {
    const auto& c = s.choices[i];
    json ch = {{"index", i}, {"finish_reason", finish_name(c.reason)}};
    if (s.req.k == kind::chat) {
      ch["message"] = {{"role", "assistant"}, {"content", c.text}};
      ch["logprobs"] = s.req.logprobs >= 0 ? json{{"content", c.logprobs_content}} : json(nullptr);
    } else {
      ch["text"] = c.text;
      ch["logprobs"] = s.req.logprobs >= 0 ? json{{"tokens", c.tokens},
                                                  {"token_logprobs", c.token_logprobs},
                                                  {"top_logprobs", c.top},
                                                  {"text_offset", c.offsets}}
                                           : json(nullptr);
    }
    choices.push_back(std::move(ch));
  }
  j["choices"] = std::move(choices);
  j["usage"] = s.usage();
  return dump(j);
}

// ---- models, tokenize --------------------------------------------------------------------

namespace {
json model_json(const api_model& m) {
  return {{"id", m.name},   {"object", "model"}, {"created", m.created},          {"owned_by", "troupe"},
          {"root", m.name}, {"parent", nullptr}, {"max_model_len", m.max_context}};
}
}  // namespace

std::string models_body(const std::vector<api_model>& models) {
  json data = json::array();
  for (const auto& m : models) data.push_back(model_json(m));
  return dump(json{{"object", "list"}, {"data", data}});
}

std::optional<std::string> model_body(const std::vector<api_model>& models, const std::string& id) {
  for (const auto& m : models)
    if (m.name == id) return dump(model_json(m));
  return std::nullopt;
}

std::variant<std::string, api_error> tokenize(const std::string& body, const std::vector<api_model>& models,
                                              const chat_renderer& render) {
  try {
    const json j = parse_body(body);
    const fields f{j};
    const api_model& m = find_model(models, f.string("model"));
    std::vector<int32_t> ids;
    if (f.get("messages")) {
      ids = render_chat(m, normalize_messages(f.get("messages")), f.boolean("add_generation_prompt").value_or(true),
                        render);
    } else {
      const auto prompt = f.string("prompt");
      if (!prompt) fail("prompt", "'prompt' (a string) or 'messages' is required");
      ids = m.tok->encode(*prompt, f.boolean("add_special_tokens").value_or(m.tok->data().add_bos));
    }
    return dump(json{{"tokens", ids}, {"count", ids.size()}, {"max_model_len", m.max_context}});
  } catch (const request_error& e) {
    return e.e;
  }
}

std::variant<std::string, api_error> detokenize(const std::string& body, const std::vector<api_model>& models) {
  try {
    const json j = parse_body(body);
    const fields f{j};
    const api_model& m = find_model(models, f.string("model"));
    const json* t = f.get("tokens");
    if (!t || !t->is_array()) fail("tokens", "'tokens' (an array of token ids) is required");
    return dump(json{{"prompt", m.tok->decode(ids_of(*t, m, "tokens"))}});
  } catch (const request_error& e) {
    return e.e;
  }
}

}  // namespace troupe::api
