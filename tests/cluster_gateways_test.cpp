// Several gateways on one scheduler, as real troupe processes on loopback TCP with the
// stories260K model: each gateway's jobs get their own answers token for token (equal to
// `troupe generate`) although every gateway numbers its requests from 1, a gateway killed
// mid-run takes only its own jobs with it, and a second gateway claiming an id in use is
// refused with an error on both sides instead of being left dead without a word.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "cluster_jobs.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct gateways_cluster {
  std::filesystem::path dir;
  int sched_port = free_port();
  std::unique_ptr<child_process> scheduler;
  std::vector<std::unique_ptr<child_process>> workers;
  std::vector<std::unique_ptr<child_process>> gateways;
  std::vector<int> gateway_ports;

  explicit gateways_cluster(const std::string& name) : dir(temp_dir(name)) {
    scheduler = std::make_unique<child_process>(
        std::vector<std::string>{"scheduler", "--listen", tcp(sched_port), "--heartbeat-timeout", "2"},
        dir / "scheduler.log");
    EXPECT_TRUE(scheduler->wait_for_log("ready on")) << scheduler->log();
    for (int w = 0; w < 2; ++w)  // small batches: the jobs take a while, so the kill lands mid-run
      workers.push_back(std::make_unique<child_process>(
          std::vector<std::string>{"worker", "--model", model_path(), "--scheduler", tcp(sched_port), "--name",
                                   "w" + std::to_string(w), "--max-batch", "4"},
          dir / ("worker" + std::to_string(w) + ".log")));
    EXPECT_TRUE(scheduler->wait_for_log("registered as replica 2")) << scheduler->log();
  }
  // Starts a gateway; returns its index.
  size_t add_gateway(const std::string& id) {
    const int port = free_port();
    const size_t i = gateways.size();
    gateways.push_back(std::make_unique<child_process>(
        std::vector<std::string>{"gateway", "--model", model_path(), "--listen", tcp(port), "--scheduler",
                                 tcp(sched_port), "--gateway-id", id},
        dir / ("gateway" + std::to_string(i) + ".log")));
    gateway_ports.push_back(port);
    EXPECT_TRUE(gateways.back()->wait_for_log("ready on")) << gateways.back()->log();
    return i;
  }
  ~gateways_cluster() { std::filesystem::remove_all(dir); }
};

// `troupe submit --file` with `n` greedy jobs of `max_tokens` at `concurrency`, bounded by
// `timeout` so that a gateway that never answers fails the test instead of hanging it.
run_output submit_file(const gateways_cluster& c, size_t gateway, int n, int max_tokens, int concurrency) {
  const auto file = c.dir / ("prompts" + std::to_string(gateway) + ".jsonl");
  {
    std::ofstream f(file);
    for (int i = 0; i < n; ++i)
      f << nlohmann::json{{"id", "p" + std::to_string(i)}, {"prompt", prompt_number(i)}, {"max_tokens", max_tokens}}
               .dump()
        << "\n";
  }
  // In a subshell: its own stderr goes to a file, so stdout holds only the JSON lines.
  return run_command("(timeout 90 " + troupe_bin() + " submit --timeout 20 --gateway " + tcp(c.gateway_ports[gateway]) +
                     " --concurrency " + std::to_string(concurrency) + " --file " + file.string() + " 2>" +
                     (c.dir / ("submit" + std::to_string(gateway) + ".err")).string() + ")");
}

void expect_file_like_generate(const run_output& r, int n, int max_tokens) {
  EXPECT_EQ(r.exit_code, 0) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  int got = 0;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("id"), "p" + std::to_string(got));
    ASSERT_TRUE(j.contains("ids")) << line;
    EXPECT_EQ(j.at("ids").get<std::vector<int32_t>>(), generate_ids(prompt_number(got), max_tokens)) << line;
    ++got;
  }
  EXPECT_EQ(got, n) << r.out;
}

}  // namespace

TEST(ClusterGateways, ThreeGatewaysServeTheirOwnJobsAndOneKilledLeavesTheOthersUnaffected) {
  TROUPE_REQUIRE_MODELS();
  gateways_cluster c("gateways");
  for (const char* id : {"front-a", "front-b", "front-c"}) c.add_gateway(id);
  constexpr int jobs = 8, tokens = 100;
  run_output a, b;
  std::atomic<int> files_done{0};
  std::thread on_a([&] {
    a = submit_file(c, 0, jobs, tokens, 4);
    ++files_done;
  });
  std::thread on_b([&] {
    b = submit_file(c, 1, jobs, tokens, 4);
    ++files_done;
  });
  // Gateway c's clients count their chunks: once they stream, c is killed mid-run.
  std::atomic<int> chunks{0};
  std::vector<actors::job_result> on_c(jobs);
  std::vector<std::thread> c_clients;
  for (int i = 0; i < jobs; ++i)
    c_clients.emplace_back([&, i] {
      try {
        actors::gateway_client client(tcp(c.gateway_ports[2]));
        on_c[i] = actors::run_job(client, greedy_job(prompt_number(i), tokens, "c-" + std::to_string(i)), 10000,
                                  [&](const proto::token_chunk&) { ++chunks; });
      } catch (const std::exception& e) {
        on_c[i].error.message = e.what();
      }
    });
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (chunks < 16 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_GE(chunks, 16) << "gateway c's jobs never streamed\n" << c.scheduler->log() << c.gateways[2]->log();
  EXPECT_EQ(files_done, 0) << "gateways a and b were done before c was killed: nothing of theirs ran meanwhile";
  c.gateways[2]->signal(SIGKILL);
  for (auto& t : c_clients) t.join();
  on_a.join();
  on_b.join();

  expect_file_like_generate(a, jobs, tokens);
  expect_file_like_generate(b, jobs, tokens);
  int c_finished = 0;
  for (const auto& r : on_c) c_finished += r.ok;
  EXPECT_LT(c_finished, jobs) << "gateway c was killed after all its jobs ended: the kill was not mid-run";
  EXPECT_TRUE(c.scheduler->wait_for_log("gateway front-c#")) << c.scheduler->log();
  EXPECT_TRUE(c.scheduler->wait_for_log("disconnected; cancelled its")) << c.scheduler->log();

  // The two left still serve.
  std::thread again_a([&] { a = submit_file(c, 0, 2, 16, 2); });
  b = submit_file(c, 1, 2, 16, 2);
  again_a.join();
  expect_file_like_generate(a, 2, 16);
  expect_file_like_generate(b, 2, 16);
  for (auto* p :
       {c.gateways[0].get(), c.gateways[1].get(), c.workers[0].get(), c.workers[1].get(), c.scheduler.get()}) {
    p->signal(SIGTERM);
    EXPECT_EQ(p->wait(20), 0) << p->log();
  }
}

TEST(ClusterGateways, ASecondGatewayWithAnIdInUseIsRefusedAndBothSidesSaySo) {
  TROUPE_REQUIRE_MODELS();
  gateways_cluster c("gateway_dup");
  c.add_gateway("front");
  c.add_gateway("front");
  expect_file_like_generate(submit_file(c, 0, 1, 8, 1), 1, 8);
  const auto refused = submit_file(c, 1, 1, 8, 1);
  EXPECT_NE(refused.exit_code, 0) << refused.out;
  EXPECT_NE(refused.out.find("gateway_id"), std::string::npos) << refused.out;
  EXPECT_TRUE(c.scheduler->wait_for_log("gateway id 'front' is already in use")) << c.scheduler->log();
  EXPECT_TRUE(c.gateways[1]->wait_for_log("the scheduler refused this gateway")) << c.gateways[1]->log();
  // Once the first is gone, its id is free and the second serves.
  c.gateways[0]->signal(SIGTERM);
  EXPECT_EQ(c.gateways[0]->wait(20), 0) << c.gateways[0]->log();
  EXPECT_TRUE(c.scheduler->wait_for_log("gateway front disconnected")) << c.scheduler->log();
  expect_file_like_generate(submit_file(c, 1, 1, 8, 1), 1, 8);
  for (auto* p : {c.gateways[1].get(), c.workers[0].get(), c.workers[1].get(), c.scheduler.get()}) {
    p->signal(SIGTERM);
    EXPECT_EQ(p->wait(20), 0) << p->log();
  }
}
