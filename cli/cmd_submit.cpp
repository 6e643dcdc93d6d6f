// troupe submit: a client of the gateway. One prompt, streamed to stdout as tokens arrive
// (or one JSON object with --json); or --file prompts.jsonl with --concurrency N jobs in
// flight, one JSON result per line in input order. Ctrl-C cancels the job(s) and exits
// after the gateway's answer. A job that fails prints the server's error and exits 1.
#include <CLI/CLI.hpp>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "actors/client.h"
#include "commands.h"
#include "troupe/request.h"
#include "troupe/error.h"

namespace troupe::cli {

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

struct submit_args {
  std::string gateway = "tcp://127.0.0.1:5555";
  std::string prompt, model, api_key, file;
  sampling_params sampling;
  int32_t priority = 0;
  int concurrency = 8;
  int timeout_s = 120;
  bool json = false;
};

nlohmann::json to_json(const actors::job_result& r) {
  nlohmann::json j = {{"id", r.client_request_id}};
  if (!r.ok) {
    j["error"] = {{"kind", to_string(r.error.kind)}, {"message", r.error.message}, {"field", r.error.field}};
    return j;
  }
  j["ids"] = r.ids;
  j["text"] = r.text;
  j["finish_reason"] = to_string(r.done.reason);
  if (!r.done.detail.empty()) j["detail"] = r.done.detail;
  j["prompt_tokens"] = r.done.prompt_tokens;
  j["completion_tokens"] = r.done.completion_tokens;
  j["timings"] = {{"queue_ms", r.done.queue_ms}, {"ttft_ms", r.done.ttft_ms}, {"total_ms", r.done.total_ms}};
  return j;
}

std::string dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

void print_error(const error_info& e) {
  std::fprintf(stderr, "troupe submit: %s: %s%s%s\n", std::string(to_string(e.kind)).c_str(), e.message.c_str(),
               e.field.empty() ? "" : " (field: ", e.field.empty() ? "" : (e.field + ")").c_str());
}

// Waits for messages until every job in `jobs` is over; cancels them all once on Ctrl-C.
void pump(actors::gateway_client& c, std::map<std::string, actors::job_result>& jobs, size_t until_open, int timeout_s,
          bool stream, std::vector<actors::job_result>& finished) {
  bool cancelled = false;
  int idle_ms = 0;
  while (jobs.size() > until_open) {
    if (g_interrupted && !cancelled) {
      for (const auto& [id, r] : jobs) c.cancel(id);
      cancelled = true;
    }
    auto m = c.receive(100);
    if (!m) {
      if ((idle_ms += 100) > timeout_s * 1000)
        throw error(error_kind::disconnected, "no answer from the gateway in " + std::to_string(timeout_s) + " s");
      continue;
    }
    idle_ms = 0;
    const std::string& id = std::visit([](const auto& x) -> const std::string& { return x.client_request_id; }, *m);
    auto it = jobs.find(id);
    if (it == jobs.end()) {
      // An error about a frame the gateway could not read names no job: it concerns us all.
      if (const auto* e = std::get_if<proto::job_error>(&*m); e && jobs.size() == 1) it = jobs.begin();
      if (it == jobs.end()) continue;
    }
    if (stream)
      if (const auto* ch = std::get_if<proto::token_chunk>(&*m)) {
        std::fwrite(ch->text_delta.data(), 1, ch->text_delta.size(), stdout);
        std::fflush(stdout);
      }
    if (actors::apply_message(it->second, *m)) {
      finished.push_back(std::move(it->second));
      jobs.erase(it);
    }
  }
}

proto::job job_from_json(const nlohmann::json& line, const submit_args& a, size_t n) {
  proto::job j;
  j.model = a.model;
  j.api_key = a.api_key;
  j.priority = a.priority;
  j.sampling = a.sampling;
  j.client_request_id = "line-" + std::to_string(n);
  if (line.is_string()) {
    j.prompt_text = line.get<std::string>();
    return j;
  }
  if (!line.is_object())
    throw error(error_kind::failed, "line " + std::to_string(n) + ": expected a JSON object or string", "file");
  if (line.contains("id")) j.client_request_id = line["id"].get<std::string>();
  if (line.contains("prompt_ids")) {
    j.prompt_is_ids = true;
    j.prompt_ids = line["prompt_ids"].get<std::vector<int32_t>>();
  } else {
    j.prompt_text = line.value("prompt", "");
  }
  j.model = line.value("model", j.model);
  j.priority = line.value("priority", j.priority);
  auto& s = j.sampling;
  s.max_tokens = line.value("max_tokens", s.max_tokens);
  s.temperature = line.value("temperature", s.temperature);
  s.top_k = line.value("top_k", s.top_k);
  s.top_p = line.value("top_p", s.top_p);
  s.min_p = line.value("min_p", s.min_p);
  s.seed = line.value("seed", s.seed);
  if (line.contains("stop")) s.stop_strings = line["stop"].get<std::vector<std::string>>();
  return j;
}

int run_file(actors::gateway_client& c, const submit_args& a) {
  std::ifstream in(a.file);
  if (!in) throw error(error_kind::failed, "cannot open " + a.file, "file");
  std::vector<proto::job> todo;
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json parsed;
    try {
      parsed = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw error(error_kind::failed, a.file + ":" + std::to_string(n) + ": not JSON: " + e.what(), "file");
    }
    todo.push_back(job_from_json(parsed, a, n));
  }
  std::map<std::string, actors::job_result> open;
  std::vector<actors::job_result> finished;
  size_t next = 0;
  while (next < todo.size() && !g_interrupted) {
    while (next < todo.size() && open.size() < static_cast<size_t>(a.concurrency)) {
      open[todo[next].client_request_id].client_request_id = todo[next].client_request_id;
      c.submit(todo[next++]);
    }
    pump(c, open, open.size() - 1, a.timeout_s, false, finished);
  }
  pump(c, open, 0, a.timeout_s, false, finished);
  std::map<std::string, size_t> order;
  for (size_t i = 0; i < todo.size(); ++i) order[todo[i].client_request_id] = i;
  std::sort(finished.begin(), finished.end(),
            [&](const auto& x, const auto& y) { return order[x.client_request_id] < order[y.client_request_id]; });
  int failures = 0;
  for (const auto& r : finished) {
    std::printf("%s\n", dump(to_json(r)).c_str());
    failures += !r.ok;
  }
  std::fflush(stdout);
  if (g_interrupted) return 130;
  return failures ? 1 : 0;
}

int run_submit(const submit_args& a) {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, nullptr);  // no SA_RESTART: zmq_poll returns EINTR at once
  actors::gateway_client c(a.gateway);
  if (!a.file.empty()) return run_file(c, a);
  if (a.prompt.empty()) throw error(error_kind::failed, "submit: give --prompt TEXT or --file FILE", "prompt");

  proto::job j;
  j.client_request_id = "submit-1";
  j.model = a.model;
  j.prompt_text = a.prompt;
  j.sampling = a.sampling;
  j.priority = a.priority;
  j.api_key = a.api_key;
  j.stream = true;
  std::map<std::string, actors::job_result> open;
  open[j.client_request_id].client_request_id = j.client_request_id;
  c.submit(j);
  if (!a.json) {
    std::fwrite(a.prompt.data(), 1, a.prompt.size(), stdout);
    std::fflush(stdout);
  }
  std::vector<actors::job_result> finished;
  pump(c, open, 0, a.timeout_s, !a.json, finished);
  const auto& r = finished.at(0);
  if (a.json) {
    std::printf("%s\n", dump(to_json(r)).c_str());
  } else {
    std::printf("\n");
  }
  std::fflush(stdout);
  if (!r.ok) {
    print_error(r.error);
    return 1;
  }
  if (!a.json)
    std::fprintf(stderr, "troupe submit: %s, %u tokens; queue %.1f ms, first token %.1f ms, total %.1f ms\n",
                 to_string(r.done.reason), r.done.completion_tokens, r.done.queue_ms, r.done.ttft_ms, r.done.total_ms);
  return r.done.reason == finish_reason::cancelled && g_interrupted ? 130 : 0;
}

}  // namespace

void add_submit(CLI::App& app) {
  auto a = std::make_shared<submit_args>();
  auto* sub = app.add_subcommand("submit", "Submit a job to a gateway and stream the answer");
  sub->add_option("--gateway", a->gateway, "Gateway address")->capture_default_str();
  sub->add_option("--prompt", a->prompt, "Text to continue");
  sub->add_option("--file", a->file, "JSONL file: one job per line ({\"prompt\": ..., \"max_tokens\": ...})");
  sub->add_option("--concurrency", a->concurrency, "Jobs in flight with --file")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  sub->add_option("--model", a->model, "Model name (default: the gateway's first)");
  add_sampling_flags(*sub, a->sampling);
  sub->add_option("--priority", a->priority, "Higher runs first")->capture_default_str();
  sub->add_option("--api-key", a->api_key, "API key");
  sub->add_option("--timeout", a->timeout_s, "Seconds without any answer before giving up")->capture_default_str();
  sub->add_flag("--json", a->json, "Print one JSON object per job instead of streaming text");
  sub->callback([a] { set_runner([a] { return run_submit(*a); }); });
}

}  // namespace troupe::cli
