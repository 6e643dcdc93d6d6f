// What the cluster itself costs: gateway + actors + ZeroMQ + Cap'n Proto + scheduling, with
// a benchmark backend (fixed_token_backend: every token at once, no model) behind it. The
// gateway listens on loopback TCP; scheduler and workers sit in the same process (inproc://),
// as in `troupe serve`. Three measurements:
//   per token (one stream): the gap between consecutive chunks of one streaming job (one
//       token each): one full round gateway -> scheduler -> worker -> scheduler -> gateway ->
//       client per token;
//   per token (batched): tokens/s over many concurrent streams;
//   per job: submit -> done of one-token jobs, one at a time;
//   jobs/s: one-token jobs from several clients, each keeping a window of jobs in flight;
//   and per token (one SSE stream) and per job over the HTTP API, for what HTTP adds.
// Usage: bench_cluster [--tokens N] [--jobs N] [--clients N] [--window N] [--workers N]
//                      [--streams N] [--max-inflight-steps N (2: async scheduling, the default)]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "actors/client.h"
#include "actors/components.h"
#include "actors/http_client.h"
#include "actors/http_server.h"
#include "src/model/tokenizer.h"

using namespace troupe;
using clock_type = std::chrono::steady_clock;

namespace {

double since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

proto::job make_job(const std::string& id, int max_tokens) {
  proto::job j;
  j.client_request_id = id;
  j.prompt_text = "hello";
  j.sampling.max_tokens = max_tokens;
  j.sampling.ignore_eos = true;
  return j;
}

// "prefix" + n, written so that GCC 12 sees no -Wrestrict false positive.
std::string name(const char* prefix, long n) {
  std::string s(prefix);
  s.append(std::to_string(n));
  return s;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

}  // namespace

int main(int argc, char** argv) {
  int tokens = 2000, jobs = 20000, clients = 4, window = 256, workers = 1, streams = 64, inflight = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (k == "--tokens") tokens = v;
    if (k == "--jobs") jobs = v;
    if (k == "--clients") clients = v;
    if (k == "--window") window = v;
    if (k == "--workers") workers = v;
    if (k == "--streams") streams = v;
    if (k == "--max-inflight-steps") inflight = v;
  }
  const tokenizer tok(byte_vocabulary());
  actors::node n({.worker_threads = 2}, {});
  scheduler_options so;
  so.policy.max_queued = 1 << 20;
  so.policy.max_step_tokens = 8192;
  so.policy.max_inflight_steps = inflight;
  n.add_scheduler("inproc://bench-scheduler", so);
  for (int w = 0; w < workers; ++w) {
    actors::worker_options wo;
    wo.identity = {"bench", "bench", 1024};
    n.add_worker("inproc://bench-scheduler", name("w", w), std::make_unique<fixed_token_backend>(100, 1 << 20, 16), wo);
  }
  gateway_options go;
  go.max_queue = 1 << 20;
  actors::http_options ho;
  ho.listen = "127.0.0.1:0";
  actors::http_front front{ho, {{"bench", &tok, 0, 0}}, {}};
  const std::string gw =
      n.add_gateway("tcp://127.0.0.1:*", "inproc://bench-scheduler", go, {{"bench", &tok, 0}}, &front);
  const std::string http = n.http_endpoint();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // workers register
  std::printf("bench_cluster: gateway %s, %d worker(s) with the fixed-token benchmark backend, %d step(s) in flight\n",
              gw.c_str(), workers, inflight);

  // ---- per token, one stream -------------------------------------------------------------
  {
    actors::gateway_client c(gw);
    actors::run_job(c, make_job("warm", 50));
    std::vector<double> gaps;
    auto last = clock_type::now(), first = last;
    actors::run_job(c, make_job("one", tokens), 30000, [&](const proto::token_chunk& ch) {
      const auto now = clock_type::now();
      if (ch.index > 0) gaps.push_back(std::chrono::duration<double, std::micro>(now - last).count());
      if (ch.index == 0) first = now;
      last = now;
    });
    // The mean (first to last chunk) holds up when a loaded machine delays the client and
    // chunks arrive in bursts, which drags the gap percentiles towards zero.
    const double mean =
        gaps.empty() ? 0 : std::chrono::duration<double, std::micro>(last - first).count() / gaps.size();
    std::printf("per token, 1 stream:  p50 %.1f us  p90 %.1f us  p99 %.1f us  mean %.1f us  (%zu tokens)\n",
                percentile(gaps, 0.5), percentile(gaps, 0.9), percentile(gaps, 0.99), mean, gaps.size() + 1);
  }

  // ---- the same over HTTP: one SSE stream, and one-token jobs one at a time --------------------
  {
    using kind = actors::http_load_client::event::kind;
    actors::http_load_client c(http);
    auto stream = [&](const std::string& id, int max_tokens, std::vector<clock_type::time_point>* chunks) {
      const std::string body = "{\"prompt\":\"hello\",\"max_tokens\":" + std::to_string(max_tokens) +
                               ",\"ignore_eos\":true,\"temperature\":0,\"stream\":true}";
      c.submit(id, "/v1/completions", body);
      for (;;) {
        auto e = c.next(30000);
        if (!e || e->what == kind::error) {
          std::printf("http: %s\n", e ? e->message.c_str() : "no answer");
          return false;
        }
        if (e->what == kind::done) return true;
        if (chunks) chunks->push_back(e->at);
      }
    };
    stream("warm", 50, nullptr);
    std::vector<clock_type::time_point> at;
    stream("one", tokens, &at);
    std::vector<double> gaps;
    for (size_t i = 1; i < at.size(); ++i)
      gaps.push_back(std::chrono::duration<double, std::micro>(at[i] - at[i - 1]).count());
    const double mean =
        gaps.empty() ? 0 : std::chrono::duration<double, std::micro>(at.back() - at.front()).count() / gaps.size();
    std::printf("HTTP per token, 1 stream:  p50 %.1f us  p90 %.1f us  p99 %.1f us  mean %.1f us  (%zu chunks)\n",
                percentile(gaps, 0.5), percentile(gaps, 0.9), percentile(gaps, 0.99), mean, at.size());
    std::vector<double> lat;
    for (int i = 0; i < 500; ++i) {
      const auto t0 = clock_type::now();
      stream(name("h", i), 1, nullptr);
      lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
    }
    std::printf("HTTP per job, 1 at a time (1 token, a connection each): p50 %.1f us  p90 %.1f us  p99 %.1f us\n",
                percentile(lat, 0.5), percentile(lat, 0.9), percentile(lat, 0.99));
  }

  // ---- per job, one at a time ---------------------------------------------------------------
  {
    actors::gateway_client c(gw);
    std::vector<double> lat;
    for (int i = 0; i < 500; ++i) {
      const auto t0 = clock_type::now();
      actors::run_job(c, make_job(name("seq", i), 1));
      lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
    }
    std::printf("per job, 1 at a time (1 token): p50 %.1f us  p90 %.1f us  p99 %.1f us\n", percentile(lat, 0.5),
                percentile(lat, 0.9), percentile(lat, 0.99));
  }

  // ---- per token, many streams --------------------------------------------------------------
  {
    std::atomic<long> got{0};
    const auto t0 = clock_type::now();
    std::vector<std::thread> th;
    const int per_client = streams / clients;
    for (int c = 0; c < clients; ++c)
      th.emplace_back([&, c] {
        actors::gateway_client cl(gw);
        for (int s = 0; s < per_client; ++s) cl.submit(make_job(name("s", c * 1000 + s), tokens / 4));
        int done = 0;
        while (done < per_client) {
          auto m = cl.receive(30000);
          if (!m) break;
          if (auto* ch = std::get_if<proto::token_chunk>(&*m)) got += static_cast<long>(ch->ids.size());
          if (!std::holds_alternative<proto::token_chunk>(*m)) ++done;
        }
      });
    for (auto& t : th) t.join();
    const double s = since(t0);
    std::printf("per token, %d streams: %.0f tokens/s = %.2f us per token  (%ld tokens in %.2f s)\n",
                per_client * clients, got / s, s * 1e6 / got, got.load(), s);
  }

  // ---- jobs per second ------------------------------------------------------------------------
  {
    std::atomic<long> done{0}, errors{0};
    const auto t0 = clock_type::now();
    std::vector<std::thread> th;
    const int per_client = jobs / clients;
    for (int c = 0; c < clients; ++c)
      th.emplace_back([&, c] {
        actors::gateway_client cl(gw);
        int sent = 0, finished = 0;
        while (finished < per_client) {
          while (sent < per_client && sent - finished < window)
            cl.submit(make_job(name("j", c * 1000000L + sent++), 1));
          auto m = cl.receive(30000);
          if (!m) break;
          if (!std::holds_alternative<proto::token_chunk>(*m)) ++finished;
          if (std::holds_alternative<proto::job_error>(*m)) ++errors;
        }
        done += finished;
      });
    for (auto& t : th) t.join();
    const double s = since(t0);
    std::printf("jobs (1 token each), %d clients x window %d: %.0f jobs/s  (%ld jobs in %.2f s, %ld errors)\n", clients,
                window, done / s, done.load(), s, errors.load());
  }
  n.stop();
  return 0;
}
