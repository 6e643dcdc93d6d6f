// The OpenAI-compatible HTTP API without sockets: request bodies (JSON) in, gateway jobs
// (proto::job value types) out, and the jobs' server messages back into OpenAI's response
// and stream shapes. The HTTP server (actors/http_server.cpp) owns connections and timing;
// everything it says to a client is made here, so it is tested without a server.
//
// One HTTP request becomes one job per choice: prompts x n, choice index = prompt x n + k.
// Every field OpenAI documents for /v1/completions and /v1/chat/completions is either
// honoured or refused with a 400 naming it (tools, response_format, ...); unknown fields
// are ignored, as OpenAI's own server does.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "src/cluster/protocol.h"

namespace troupe {
class tokenizer;
}

namespace troupe::api {

// An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
struct api_error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;         // the offending field, or empty (null)
  std::string code;          // empty: null
  double retry_after_s = 0;  // > 0: a Retry-After header (429, 503)
};
std::string error_body(const api_error& e);
// The HTTP status of a cluster error: failed 400, overloaded 429 (a tenant's limit or a full
// queue) or 503 (no worker, no scheduler, shutting down), disconnected 503, unimplemented 400;
// an unknown model 404, a bad API key 401.
api_error from_cluster(const error_info& e);

// A model the API serves: its name, tokenizer, context and chat template (rendering is
// the caller's: see chat_renderer).
struct api_model {
  std::string name;
  const tokenizer* tok = nullptr;
  int64_t max_context = 0;
  int64_t created = 0;  // unix seconds, for /v1/models
};

// Renders a chat template: the messages (and tools) JSON text, add_generation_prompt; returns
// the prompt text, or throws troupe::error (its message becomes a 400). Empty: no template.
using chat_renderer = std::function<std::string(const std::string& model, const std::string& messages_json,
                                                const std::string& tools_json, bool add_generation_prompt)>;

enum class kind : unsigned char { completion, chat };

// A request, parsed and validated: its jobs and how to answer.
struct parsed_request {
  kind k = kind::completion;
  std::string model;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions: the prompt's text before each choice's text
  int32_t logprobs = -1;       // completions: alternatives per token (-1: no logprobs); chat: top_logprobs
  bool chat_logprobs = false;  // chat: logprobs true
  int32_t n = 1;
  std::vector<proto::job> jobs;          // one per choice, client_request_id = the choice index
                                         // (a response needs only the fields below: the jobs may be moved out)
  std::vector<std::string> echo_prefix;  // per choice, with echo
  std::vector<uint32_t> prompt_tokens;   // per choice, known here for token-id prompts and chats
};

// Parses a /v1/completions or /v1/chat/completions body for `models` (the first is the
// default when the request names none). `api_key` is the bearer token (may be empty).
std::variant<parsed_request, api_error> parse_request(kind k, const std::string& body,
                                                      const std::vector<api_model>& models, const std::string& api_key,
                                                      const chat_renderer& render);

// The answer to one parsed request, fed the server messages of its jobs in arrival order.
// Streaming: each call returns the SSE bytes to send now ("data: {...}\n\n" events); the
// last ends with "data: [DONE]\n\n". Not streaming: nothing until the end, then body().
class response {
 public:
  response(parsed_request req, const api_model& model, std::string id, int64_t created);
  ~response();
  // A message for job `choice`: the SSE bytes to write now (streaming), else "".
  std::string on_message(size_t choice, const proto::server_message& m);
  bool finished() const;
  // Not streaming, once finished: the status and JSON body (an error when any choice failed
  // before it produced anything... see .cpp).
  int status() const;
  std::string body() const;
  // Streaming: whether the response has started (after the first event the status is 200
  // for good, and errors go into the stream).
  const parsed_request& request() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// /v1/models and /v1/models/{id}.
std::string models_body(const std::vector<api_model>& models);
std::optional<std::string> model_body(const std::vector<api_model>& models, const std::string& id);

// /tokenize and /detokenize, vLLM's shapes: {"model", "prompt"} or {"model", "messages",
// "add_generation_prompt"} -> {"tokens": [...], "count": N, "max_model_len": L};
// {"model", "tokens": [...]} -> {"prompt": "..."}.
std::variant<std::string, api_error> tokenize(const std::string& body, const std::vector<api_model>& models,
                                              const chat_renderer& render);
std::variant<std::string, api_error> detokenize(const std::string& body, const std::vector<api_model>& models);

}  // namespace troupe::api
