// The OpenAI-compatible HTTP API of a real `troupe serve` on loopback, in three clients:
// curl, the official openai npm package (tests/openai: its version pinned in
// package-lock.json, installed with `npm ci` on first use) and a raw socket for malformed
// HTTP. Greedy answers must equal `troupe generate`'s.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cluster_support.h"

using namespace troupe::test;
using json = nlohmann::json;

namespace {

constexpr const char* kKey = "sk-troupe-test";
constexpr const char* kLimitedKey = "sk-limited";

struct http_serve {
  std::filesystem::path dir = temp_dir("http_api");
  int port = free_port();
  int zmq_port = free_port();
  std::unique_ptr<child_process> serve;

  http_serve() {
    serve = std::make_unique<child_process>(
        std::vector<std::string>{"serve", "--model", model_path(), "--listen", tcp(zmq_port), "--http-listen",
                                 "127.0.0.1:" + std::to_string(port), "--api-key", kKey, "--api-key",
                                 std::string(kLimitedKey) + "=limited", "--tenant", "limited:1:1:8", "--trace",
                                 (dir / "trace.jsonl").string(), "--http-request-timeout", "3"},
        dir / "serve.log");
    EXPECT_TRUE(serve->wait_for_log("ready on")) << serve->log();
    // /health is 200 once the worker has registered.
    for (int i = 0; i < 100 && curl("/health").find("\"ok\"") == std::string::npos; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ~http_serve() { std::filesystem::remove_all(dir); }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port) + path; }
  // curl's body (-s), with `-w` appending the status after a newline.
  std::string curl(const std::string& path, const std::string& args = "") const {
    return run_command("(curl -s -m 30 " + args + " " + shell_quote(url(path)) + " 2>/dev/null)").out;
  }
  // POSTs JSON with the test key; returns {status, body}.
  std::pair<int, std::string> post(const std::string& path, const std::string& body,
                                   const std::string& key = kKey) const {
    const std::string out = curl(path, "-w '\\n%{http_code}' -H 'Authorization: Bearer " + key +
                                           "' -H 'Content-Type: application/json' --data-binary " + shell_quote(body));
    const auto nl = out.rfind('\n');
    if (nl == std::string::npos) return {0, out};
    return {std::atoi(out.c_str() + nl + 1), out.substr(0, nl)};
  }
};

http_serve& server() {
  static http_serve s;
  return s;
}

// One raw HTTP exchange: sends `bytes`, returns what comes back until the server closes
// the connection or `timeout_s` passes.
std::string raw(int port, const std::string& bytes, double timeout_s = 5, bool half_close = false) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "connect failed";
  }
  for (size_t off = 0; off < bytes.size();) {
    const ssize_t n = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  if (half_close) ::shutdown(fd, SHUT_WR);
  timeval tv{static_cast<time_t>(timeout_s), static_cast<suseconds_t>((timeout_s - std::floor(timeout_s)) * 1e6)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::string post_request(const std::string& path, const std::string& body, const std::string& extra = "") {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kKey +
         "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + extra + "\r\n" + body;
}

int status_of(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(response.c_str() + 9) : 0;
}

// `troupe generate --json`'s answer: text and ids.
json generate_json(const std::string& prompt, int max_tokens) {
  auto r = run_command("(" + troupe_bin() + " --log-level off generate --json --model " + model_path() + " --prompt " +
                       shell_quote(prompt) + " --max-tokens " + std::to_string(max_tokens) + " 2>/dev/null)");
  return json::parse(r.out);
}
std::string generate_text(const std::string& prompt, int max_tokens) {
  return generate_json(prompt, max_tokens).at("text").get<std::string>();
}

}  // namespace

TEST(HttpApi, CurlGetsTheGreedyAnswerOfTroupeGenerate) {
  TROUPE_REQUIRE_MODELS();
  auto& s = server();
  const std::string expected = generate_text("Once upon a time", 24);
  auto [status, body] = s.post("/v1/completions", R"({"prompt":"Once upon a time","max_tokens":24,"temperature":0})");
  ASSERT_EQ(status, 200) << body << s.serve->log();
  const auto j = json::parse(body);
  EXPECT_EQ(j.at("choices").at(0).at("text"), expected);
  EXPECT_EQ(j.at("usage").at("completion_tokens"), 24);
  // Streamed with curl -N: SSE events, then [DONE].
  const std::string sse =
      s.curl("/v1/completions", std::string("-N -H 'Authorization: Bearer ") + kKey + "' --data-binary " +
                                    shell_quote(R"({"prompt":"Once upon a time","max_tokens":24,)"
                                                R"("temperature":0,"stream":true})"));
  std::string text;
  std::istringstream lines(sse);
  bool done = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("data: ", 0) != 0) continue;
    if (line == "data: [DONE]") {
      done = true;
      continue;
    }
    text += json::parse(line.substr(6)).at("choices").at(0).at("text").get<std::string>();
  }
  EXPECT_TRUE(done) << sse;
  EXPECT_EQ(text, expected);
}

TEST(HttpApi, HealthModelsVersionTokenize) {
  TROUPE_REQUIRE_MODELS();
  auto& s = server();
  EXPECT_EQ(s.curl("/health"), "{\"status\":\"ok\"}");
  EXPECT_NE(s.curl("/version").find("\"version\""), std::string::npos);
  const std::string auth = std::string("-H 'Authorization: Bearer ") + kKey + "'";
  const auto models = json::parse(s.curl("/v1/models", auth));
  EXPECT_EQ(models.at("data").at(0).at("id"), "stories260K");
  EXPECT_EQ(json::parse(s.curl("/v1/models/stories260K", auth)).at("id"), "stories260K");
  auto [st, tok] = s.post("/tokenize", R"({"model":"stories260K","prompt":"Once upon a time"})");
  ASSERT_EQ(st, 200) << tok;
  const auto t = json::parse(tok);
  const auto r = run_command("(" + troupe_bin() + " --log-level off generate --json --model " + model_path() +
                             " --prompt 'Once upon a time' --max-tokens 1 2>/dev/null)");
  EXPECT_EQ(t.at("tokens"), json::parse(r.out).at("prompt_ids"));
  EXPECT_EQ(t.at("count"), t.at("tokens").size());
  auto [st2, detok] = s.post("/detokenize", json{{"model", "stories260K"}, {"tokens", t.at("tokens")}}.dump());
  ASSERT_EQ(st2, 200) << detok;
  EXPECT_EQ(json::parse(detok).at("prompt"), "Once upon a time");
}

TEST(HttpApi, ErrorsHaveOpenAIsShapeAndStatus) {
  TROUPE_REQUIRE_MODELS();
  auto& s = server();
  auto check = [&](const std::pair<int, std::string>& r, int status, const std::string& param, const char* what) {
    EXPECT_EQ(r.first, status) << what << ": " << r.second;
    const auto j = json::parse(r.second);
    ASSERT_TRUE(j.contains("error")) << r.second;
    const auto& e = j.at("error");
    EXPECT_TRUE(e.at("message").is_string());
    EXPECT_TRUE(e.at("type").is_string());
    if (param.empty())
      EXPECT_TRUE(e.at("param").is_null()) << r.second;
    else
      EXPECT_EQ(e.at("param"), param) << r.second;
    EXPECT_TRUE(e.contains("code"));
  };
  check(s.post("/v1/completions", R"({"prompt":"x","temperature":"hot"})"), 400, "temperature", "wrong type");
  check(s.post("/v1/completions", R"({"prompt":"x","max_tokens":0})"), 400, "max_tokens", "out of range");
  check(s.post("/v1/completions", R"({"prompt":"x","response_format":{"type":"json_object"}})"), 400, "response_format",
        "not yet supported");
  check(s.post("/v1/completions", R"({"prompt":[]})"), 400, "prompt", "empty prompt list");
  check(s.post("/v1/completions", R"({"prompt":[1,2,99999]})"), 400, "prompt", "token outside the vocabulary");
  check(s.post("/v1/completions", R"({"prompt":"x", "model":"nope"})"), 404, "model", "unknown model");
  check(s.post("/v1/completions", R"({"prompt":"x"})", "sk-wrong"), 401, "", "bad key");
  check(s.post("/v1/completions", R"({"prompt": "x",)"), 400, "", "bad JSON");
  check(s.post("/v1/nothing", R"({})"), 404, "", "unknown route");
  const std::string long_prompt = std::string(R"({"prompt":")") + [] {
    std::string p;
    for (int i = 0; i < 60; ++i) p += "Once upon a time ";
    return p;
  }() + R"("})";
  auto r = s.post("/v1/completions", long_prompt);
  check(r, 400, "prompt", "prompt over the context");
  EXPECT_NE(r.second.find("does not fit the context of 128 tokens"), std::string::npos) << r.second;
}

TEST(HttpApi, MalformedHttpGetsAClearErrorAndTheServerStaysUp) {
  TROUPE_REQUIRE_MODELS();
  auto& s = server();
  // Not HTTP at all.
  EXPECT_EQ(status_of(raw(s.port, "HELLO THERE\r\n\r\n")), 400);
  // A body over the limit (8 MiB): 413, before it is all read.
  EXPECT_EQ(status_of(raw(s.port, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" +
                                      std::string(1 << 16, 'x'))),
            413);
  // Headers over the limit: 431.
  EXPECT_EQ(
      status_of(raw(s.port, "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n")),
      431);
  // Invalid UTF-8 in a prompt: a 400 that says so.
  const std::string bad_utf8 = post_request("/v1/completions", "{\"prompt\":\"caf\xC3\x28\",\"max_tokens\":2}");
  const std::string reply = raw(s.port, bad_utf8);
  EXPECT_EQ(status_of(reply), 400) << reply;
  EXPECT_NE(reply.find("UTF-8"), std::string::npos) << reply;
  // Token ids that make a frame over the gateway's 1 MiB message limit: a clear 400, not a hang.
  {
    std::string ids = "1";
    for (int i = 0; i < 300000; ++i) ids += ",1";
    const std::string huge = raw(s.port, post_request("/v1/completions", "{\"prompt\":[" + ids + "]}"), 20);
    EXPECT_EQ(status_of(huge), 400) << huge.substr(0, 400);
  }
  // Wrong method.
  EXPECT_EQ(status_of(raw(s.port, std::string("GET /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ") +
                                      kKey + "\r\nConnection: close\r\n\r\n")),
            405);
  // Slowloris: headers that never end are cut off (--http-request-timeout 3 here), while
  // others are served.
  std::thread slow([&] {
    const std::string got = raw(s.port, "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ", 20);
    EXPECT_EQ(got, "") << "a request whose headers never end got an answer";
  });
  auto [st, body] = s.post("/v1/completions", R"({"prompt":"Once upon a time","max_tokens":4,"temperature":0})");
  EXPECT_EQ(st, 200) << body;
  slow.join();
  EXPECT_EQ(s.curl("/health"), "{\"status\":\"ok\"}");
}

TEST(HttpApi, KeepAliveServesSeveralRequestsOnOneConnection) {
  TROUPE_REQUIRE_MODELS();
  auto& s = server();
  const std::string body = R"({"prompt":"Once upon a time","max_tokens":3,"temperature":0})";
  std::string req = post_request("/v1/completions", body);
  const std::string keep = req.substr(0, req.find("Connection: close")) + "Connection: keep-alive" +
                           req.substr(req.find("Connection: close") + 17);
  const std::string got = raw(s.port, keep + keep + req, 10);
  size_t answers = 0;
  for (size_t at = got.find("HTTP/1.1 200"); at != std::string::npos; at = got.find("HTTP/1.1 200", at + 1)) ++answers;
  EXPECT_EQ(answers, 3u) << got;
}

TEST(HttpApi, AClientThatDisconnectsMidStreamHasItsJobCancelled) {
  TROUPE_REQUIRE_MODELS();
  auto& s = server();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(s.port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string req =
      post_request("/v1/completions",
                   R"({"prompt":"Once upon a time","max_tokens":120,"temperature":0,"stream":true,"ignore_eos":true})");
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  char buf[512];
  ASSERT_GT(::recv(fd, buf, sizeof buf, 0), 0);  // the stream has started
  ::close(fd);
  EXPECT_TRUE(s.serve->wait_for_log("went away; cancelling its jobs")) << s.serve->log();
  EXPECT_TRUE(s.serve->wait_for_log("client disconnected; cancelled its 1 jobs")) << s.serve->log();
  // The policy trace: the job (the one submitted with max_tokens 120) is cancelled with its
  // KV blocks freed, and no step after the cancel carries it.
  std::vector<json> trace;
  int64_t id = -1;
  bool cancelled = false;
  for (int tries = 0; tries < 100 && !cancelled; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the scheduler writes the trace every 100 ms
    trace.clear();
    std::ifstream in(s.dir / "trace.jsonl");
    for (std::string l; std::getline(in, l);) trace.push_back(json::parse(l));
    for (const auto& j : trace) {
      if (j.at("ev") == "submit" && j.at("max_tokens") == 120) id = j.at("id");
      if (j.at("ev") == "cancel" && j.at("id") == id) cancelled = true;
    }
  }
  ASSERT_TRUE(cancelled) << "no cancel in the trace for request " << id;
  bool after_cancel = false;
  for (const auto& j : trace) {
    if (j.at("ev") == "cancel" && j.at("id") == id) {
      after_cancel = true;
      EXPECT_FALSE(j.at("freed").empty()) << j.dump();
    }
    if (after_cancel && j.at("ev") == "step")
      for (const auto& q : j.at("seqs"))
        EXPECT_NE(q.at("id"), id) << "a step after the cancel still runs it: " << j.dump();
  }
}

TEST(HttpApi, TheOpenaiSdkPassesItsTests) {
  TROUPE_REQUIRE_MODELS();
  if (run_command("command -v node && command -v npm").exit_code != 0) {
    const char* ci = std::getenv("CI");
    if (ci && std::string(ci) == "true") FAIL() << "node and npm are needed for the openai SDK tests";
    GTEST_SKIP() << "node/npm not found: skipping the openai SDK tests";
  }
  auto& s = server();
  const std::filesystem::path sdk = TROUPE_OPENAI_TEST_DIR;
  if (!std::filesystem::exists(sdk / "node_modules" / "openai" / "package.json")) {
    const auto install =
        run_command("cd " + shell_quote(sdk.string()) + " && npm ci --no-audit --no-fund --loglevel=error");
    ASSERT_EQ(install.exit_code, 0) << "npm ci (the openai SDK pinned in tests/openai/package-lock.json):\n"
                                    << install.out;
  }
  const int max_tokens = 24;
  const json reference = generate_json("Once upon a time", max_tokens);
  const std::string text = reference.at("text");
  // A stop string across token boundaries: " girl" is " g" "ir" "l" in this vocabulary.
  const std::string stop = "girl";
  ASSERT_NE(text.find(stop), std::string::npos) << text;
  const json expect = {
      {"prompt", "Once upon a time"}, {"max_tokens", max_tokens}, {"text", text}, {"ids", reference.at("ids")}};
  const json stop_case = {{"stop", stop}, {"text", text.substr(0, text.find(stop))}};
  const std::string env = "TROUPE_URL=" + shell_quote(s.url("/v1")) + " TROUPE_KEY=" + kKey +
                          " TROUPE_LIMITED_KEY=" + kLimitedKey +
                          " TROUPE_MODEL=stories260K TROUPE_EXPECT=" + shell_quote(expect.dump()) +
                          " TROUPE_STOP=" + shell_quote(stop_case.dump());
  // The chat tests' model: the Llama 3 vocabulary and template, random weights.
  std::unique_ptr<child_process> chat;
  std::string chat_env;
  if (std::filesystem::exists(tokenizers_dir() / "llama3")) {
    const std::string model = (s.dir / "llama3.gguf").string();
    const auto synth = run_command(troupe_bin() + " --log-level warn model synth --out " + model +
                                   " --preset tiny --dtype q8_0 --tokenizer " + (tokenizers_dir() / "llama3").string());
    ASSERT_EQ(synth.exit_code, 0) << synth.out;
    const int chat_port = free_port();
    chat = std::make_unique<child_process>(
        std::vector<std::string>{"serve", "--model", model, "--listen", tcp(free_port()), "--http-listen",
                                 "127.0.0.1:" + std::to_string(chat_port)},
        s.dir / "chat.log");
    ASSERT_TRUE(chat->wait_for_log("ready on")) << chat->log();
    chat_env = " TROUPE_CHAT_URL=http://127.0.0.1:" + std::to_string(chat_port) + "/v1 TROUPE_CHAT_MODEL=llama3";
  }
  const auto r = run_command("cd " + shell_quote(sdk.string()) + " && " + env + chat_env + " node --test sdk_test.mjs");
  EXPECT_EQ(r.exit_code, 0) << r.out << "\n" << s.serve->log();
  EXPECT_NE(r.out.find("# fail 0"), std::string::npos) << r.out;
  if (chat) EXPECT_NE(r.out.find("# skipped 0"), std::string::npos) << "the chat tests did not run\n" << r.out;
}

// The chat path with a real vocabulary and template: a model synthesized from the Llama 3 and
// Qwen3 tokenizers (random weights), each reference chat of ../shared/tokenizers rendered by
// the model's template and tokenized by /tokenize to exactly the reference ids, and a chat
// completion answered in OpenAI's shape, streamed too.
TEST(HttpApi, ChatsRenderTheModelsTemplateToTheReferenceIds) {
  TROUPE_REQUIRE_TOKENIZERS();
  for (const std::string name : {"llama3", "qwen3"}) {
    const auto dir = temp_dir("http_chat_" + name);
    const std::string model = (dir / (name + ".gguf")).string();
    const auto synth = run_command(troupe_bin() + " --log-level warn model synth --out " + model +
                                   " --preset tiny --dtype q8_0 --tokenizer " + (tokenizers_dir() / name).string());
    ASSERT_EQ(synth.exit_code, 0) << synth.out;
    const int port = free_port();
    child_process serve(
        {"serve", "--model", model, "--listen", tcp(free_port()), "--http-listen", "127.0.0.1:" + std::to_string(port)},
        dir / "serve.log");
    ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
    auto post = [&](const std::string& path, const json& body) {
      const auto r =
          run_command("(curl -s -m 60 -H 'Content-Type: application/json' --data-binary " + shell_quote(body.dump()) +
                      " http://127.0.0.1:" + std::to_string(port) + path + " 2>/dev/null)");
      return r.out;
    };
    std::ifstream in(tokenizers_dir() / "reference" / (name + ".json"));
    const json ref = json::parse(in);
    int checked = 0;
    for (const auto& c : ref.at("chats")) {
      if (c.contains("tools") && !c.at("tools").is_null()) continue;  // tools: refused until structured output
      json body = {{"model", name}, {"messages", c.at("messages")}};
      if (c.contains("add_generation_prompt")) body["add_generation_prompt"] = c.at("add_generation_prompt");
      const auto got = json::parse(post("/tokenize", body));
      EXPECT_EQ(got.at("tokens"), c.at("ids")) << name << " chat " << checked << ": " << c.at("rendered");
      ++checked;
    }
    EXPECT_GT(checked, 0);
    const json chat = {{"model", name},
                       {"messages", {{{"role", "user"}, {"content", "Hello"}}}},
                       {"max_tokens", 4},
                       {"temperature", 0}};
    const auto r = json::parse(post("/v1/chat/completions", chat));
    ASSERT_TRUE(r.contains("choices")) << r.dump() << serve.log();
    EXPECT_EQ(r.at("object"), "chat.completion");
    EXPECT_EQ(r.at("choices").at(0).at("message").at("role"), "assistant");
    EXPECT_TRUE(r.at("choices").at(0).at("message").at("content").is_string());
    json streamed = chat;
    streamed["stream"] = true;
    const std::string sse = post("/v1/chat/completions", streamed);
    EXPECT_NE(sse.find("\"role\":\"assistant\""), std::string::npos) << sse;
    EXPECT_NE(sse.find("chat.completion.chunk"), std::string::npos) << sse;
    EXPECT_NE(sse.find("data: [DONE]"), std::string::npos) << sse;
    std::filesystem::remove_all(dir);
  }
}

// A gateway whose scheduler never answers: /health says 503 with why, and a job ends with a
// 503 naming the scheduler (after the gateway's --scheduler-timeout) instead of hanging.
TEST(HttpApi, WithoutASchedulerHealthIs503AndJobsFailNamingIt) {
  TROUPE_REQUIRE_MODELS();
  const auto dir = temp_dir("http_no_scheduler");
  const int port = free_port();
  child_process gw({"gateway", "--model", model_path(), "--listen", tcp(free_port()), "--scheduler", tcp(free_port()),
                    "--http-listen", "127.0.0.1:" + std::to_string(port), "--scheduler-timeout", "1"},
                   dir / "gateway.log");
  ASSERT_TRUE(gw.wait_for_log("ready on")) << gw.log();
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  const auto health = run_command("(curl -s -m 10 -w '\\n%{http_code}' " + url + "/health 2>/dev/null)").out;
  EXPECT_NE(health.find("\n503"), std::string::npos) << health;
  EXPECT_NE(health.find("scheduler"), std::string::npos) << health;
  const auto job = run_command("(curl -s -m 20 -w '\\n%{http_code}' --data-binary " +
                               shell_quote(R"({"prompt":"Once upon a time","max_tokens":4})") + " " + url +
                               "/v1/completions 2>/dev/null)")
                       .out;
  EXPECT_NE(job.find("\n503"), std::string::npos) << job;
  EXPECT_NE(job.find("scheduler"), std::string::npos) << job;
  std::filesystem::remove_all(dir);
}

// A long prefill (a 110m model synthesized with random weights, a 1,000-token prompt in
// 32-token chunks): the stream's headers and SSE comments keep the client company before the
// first token, and a client that leaves during the prefill has its job cancelled then, with
// its KV blocks freed and no later step carrying it.
TEST(HttpApi, ALongPrefillSendsKeepAlivesAndLeavingCancelsItMidPrefill) {
  const auto dir = temp_dir("http_long_prefill");
  const std::string model = (dir / "m110.gguf").string();
  const auto synth =
      run_command(troupe_bin() + " --log-level warn model synth --out " + model + " --preset 110m --dtype q8_0");
  ASSERT_EQ(synth.exit_code, 0) << synth.out;
  const int port = free_port();
  child_process serve({"serve", "--model", model, "--listen", tcp(free_port()), "--http-listen",
                       "127.0.0.1:" + std::to_string(port), "--max-step-tokens", "32", "--kv-mb", "160",
                       "--http-sse-keepalive", "0.1", "--trace", (dir / "trace.jsonl").string()},
                      dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on", 60)) << serve.log();
  for (int i = 0; i < 200; ++i) {
    const auto h = run_command("(curl -s -m 5 http://127.0.0.1:" + std::to_string(port) + "/health 2>/dev/null)").out;
    if (h.find("\"ok\"") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  constexpr int kPrompt = 1000;
  json prompt = json::array();
  for (int i = 0; i < kPrompt; ++i) prompt.push_back(100 + (i * 37) % 20000);
  const json body = {{"prompt", prompt}, {"max_tokens", 8}, {"stream", true}, {"ignore_eos", true}};

  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string req = post_request("/v1/completions", body.dump());
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  timeval tv{30, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  char buf[1024];
  while (got.find(": keep-alive\n\n") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);  // gone in the middle of the prefill
  ASSERT_EQ(status_of(got), 200) << got << serve.log();
  EXPECT_NE(got.find("text/event-stream"), std::string::npos) << got;
  const auto comment = got.find(": keep-alive\n\n");
  ASSERT_NE(comment, std::string::npos) << "no SSE comment before the first token: " << got;
  EXPECT_EQ(got.find("data:"), std::string::npos) << "a token came before the comment: " << got;

  EXPECT_TRUE(serve.wait_for_log("client disconnected; cancelled its 1 jobs", 30)) << serve.log();
  std::vector<json> trace;
  int64_t id = -1;
  bool cancelled = false;
  for (int tries = 0; tries < 200 && !cancelled; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the scheduler writes the trace every 100 ms
    trace.clear();
    std::ifstream in(dir / "trace.jsonl");
    for (std::string l; std::getline(in, l);) trace.push_back(json::parse(l));
    for (const auto& j : trace) {
      if (j.at("ev") == "submit" && j.at("max_tokens") == 8) id = j.at("id");
      if (j.at("ev") == "cancel" && j.at("id") == id) cancelled = true;
    }
  }
  ASSERT_TRUE(cancelled) << "no cancel in the trace for request " << id << "\n" << serve.log();
  int chunks_before = 0;
  int64_t prefilled = 0;
  bool after_cancel = false;
  for (const auto& j : trace) {
    if (j.at("ev") == "cancel" && j.at("id") == id) {
      after_cancel = true;
      EXPECT_FALSE(j.at("freed").empty()) << "the cancel freed no KV blocks: " << j.dump();
    }
    if (j.at("ev") != "step") continue;
    for (const auto& q : j.at("seqs")) {
      if (q.at("id") != id) continue;
      EXPECT_FALSE(after_cancel) << "a step after the cancel still runs it: " << j.dump();
      if (after_cancel) continue;
      ++chunks_before;
      prefilled = std::max<int64_t>(prefilled, q.at("pos").get<int64_t>() + q.at("n").get<int64_t>());
      EXPECT_FALSE(q.at("sample").get<bool>()) << "the prefill finished before the client left: " << j.dump();
    }
  }
  EXPECT_GT(chunks_before, 0) << "the prefill never started";
  EXPECT_LT(prefilled, kPrompt) << "cancelled only after the whole prompt was prefilled";
  std::filesystem::remove_all(dir);
}
