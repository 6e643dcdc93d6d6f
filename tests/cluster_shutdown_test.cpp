// SIGTERM on `troupe serve`: it stops accepting (new jobs get overloaded), lets the jobs in
// flight finish within --drain-timeout, cancels the rest with a reason, and exits 0.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "actors/client.h"
#include "cluster_support.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct job_threads {
  std::vector<actors::job_result> results;
  std::vector<std::thread> threads;
  std::atomic<int> chunks{0};

  job_threads(const std::string& gateway, int n, int max_tokens) : results(n) {
    for (int i = 0; i < n; ++i)
      threads.emplace_back([this, gateway, i, max_tokens] {
        proto::job j;
        j.client_request_id = "j";
        j.client_request_id += std::to_string(i);
        j.prompt_text = "Once upon a time";
        j.sampling.max_tokens = max_tokens;
        j.sampling.ignore_eos = true;
        try {
          actors::gateway_client c(gateway);
          results[i] = actors::run_job(c, j, 30000, [this](const proto::token_chunk&) { ++chunks; });
        } catch (const std::exception& e) {
          results[i].error.message = e.what();
        }
      });
  }
  void join() {
    for (auto& t : threads) t.join();
  }
  void wait_for_chunks(int n) {
    while (chunks < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
};

}  // namespace

TEST(ClusterShutdown, SigtermLetsJobsInFlightFinishAndRefusesNewOnes) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("drain");
  const int port = free_port();
  child_process serve({"serve", "--model", model_path(), "--listen", tcp(port), "--max-batch", "1"}, dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  job_threads jobs(tcp(port), 16, 120);  // one batch slot: some hundred milliseconds of work
  jobs.wait_for_chunks(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // every job has reached the gateway
  serve.signal(SIGTERM);
  ASSERT_TRUE(serve.wait_for_log("draining")) << serve.log();

  actors::gateway_client late(tcp(port));
  proto::job j;
  j.client_request_id = "late";
  j.prompt_text = "Once upon a time";
  auto r = actors::run_job(late, j, 10000);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error.kind, error_kind::overloaded);

  jobs.join();
  for (const auto& res : jobs.results) {
    ASSERT_TRUE(res.ok) << res.error.message;
    EXPECT_EQ(res.done.reason, finish_reason::length);
    EXPECT_EQ(res.ids.size(), 120u);
  }
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  std::filesystem::remove_all(dir);
}

TEST(ClusterShutdown, PastTheDeadlineJobsAreCancelledWithAReason) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("deadline");
  const int port = free_port();
  child_process serve(
      {"serve", "--model", model_path(), "--listen", tcp(port), "--max-batch", "1", "--drain-timeout", "0.05"},
      dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  job_threads jobs(tcp(port), 16, 120);
  jobs.wait_for_chunks(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // every job has reached the gateway
  serve.signal(SIGTERM);
  jobs.join();
  int cancelled = 0;
  for (const auto& res : jobs.results) {
    ASSERT_TRUE(res.ok) << res.error.message;
    if (res.done.reason == finish_reason::cancelled) {
      ++cancelled;
      EXPECT_NE(res.done.detail.find("shutting down"), std::string::npos) << res.done.detail;
    }
  }
  EXPECT_GT(cancelled, 0);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  std::filesystem::remove_all(dir);
}

TEST(ClusterShutdown, SubmitCancelsOnSigintAndExitsAfterTheReply) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("sigint");
  const int port = free_port();
  child_process serve({"serve", "--model", model_path(), "--listen", tcp(port), "--max-batch", "1"}, dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  job_threads busy(tcp(port), 16, 120);  // one batch slot: the submitted job waits behind these
  busy.wait_for_chunks(1);
  child_process submit({"submit", "--gateway", tcp(port), "--prompt", "Once upon a time", "--max-tokens", "100"},
                       dir / "submit.log");
  ASSERT_TRUE(submit.wait_for_log("Once upon a time", 10)) << submit.log();  // printed once submitted
  submit.signal(SIGINT);
  EXPECT_EQ(submit.wait(20), 130) << submit.log();
  EXPECT_NE(submit.log().find("cancelled"), std::string::npos) << submit.log();
  busy.join();
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  std::filesystem::remove_all(dir);
}

TEST(ClusterShutdown, SubmitPrintsTheServersErrorAndFails) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("submit-error");
  const int port = free_port();
  child_process serve({"serve", "--model", model_path(), "--listen", tcp(port)}, dir / "serve.log");
  ASSERT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  auto r = run_command(troupe_bin() + " submit --gateway " + tcp(port) + " --prompt hi --top-p 1.5");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("top_p"), std::string::npos) << r.out;
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  std::filesystem::remove_all(dir);
}
