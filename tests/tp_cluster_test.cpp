// Tensor-parallel worker groups in the cluster, as real processes on loopback: a group of
// two ranks (bootstrapped through the scheduler's rendezvous) serves jobs with the same
// greedy output as `troupe generate`; when a rank is killed mid-stream the group leaves,
// its jobs move to the other replica and still match; with no replica left, jobs end with
// a disconnected error instead of hanging.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "cluster_jobs.h"
#include "netns.h"

using namespace troupe;
using namespace troupe::test;

namespace {

struct group_cluster {
  std::filesystem::path dir;
  int sched_port = free_port(), gateway_port = free_port(), rdv_port = free_port();
  std::unique_ptr<child_process> scheduler, gateway, rank0, rank1, single;

  // `scheduler_extra` / `rank_extra`: more flags for the scheduler / each rank.
  group_cluster(const std::string& name, bool with_single_worker, std::vector<std::string> scheduler_extra = {},
                std::vector<std::string> rank_extra = {"--max-batch", "4"})
      : dir(temp_dir(name)) {
    std::vector<std::string> sched_args{
        "scheduler", "--listen", tcp(sched_port), "--rendezvous", tcp(rdv_port), "--heartbeat-timeout", "1"};
    sched_args.insert(sched_args.end(), scheduler_extra.begin(), scheduler_extra.end());
    scheduler = std::make_unique<child_process>(sched_args, dir / "scheduler.log");
    EXPECT_TRUE(scheduler->wait_for_log("ready on")) << scheduler->log();
    auto rank = [&](int r) {
      std::vector<std::string> args{"worker", "--model", model_path(), "--scheduler", tcp(sched_port), "--name",
                                    "g0r" + std::to_string(r), "--tp-size", "2", "--rank", std::to_string(r), "--group",
                                    "g0", "--rendezvous", tcp(rdv_port),
                                    // Gloo fails a send to a dead rank only at its timeout
                                    "--tp-timeout", "3"};
      args.insert(args.end(), rank_extra.begin(), rank_extra.end());
      return std::make_unique<child_process>(args, dir / ("rank" + std::to_string(r) + ".log"));
    };
    rank1 = rank(1);
    rank0 = rank(0);
    if (with_single_worker)
      single = std::make_unique<child_process>(
          std::vector<std::string>{"worker", "--model", model_path(), "--scheduler", tcp(sched_port), "--name", "solo",
                                   "--max-batch", "4"},
          dir / "solo.log");
    gateway =
        std::make_unique<child_process>(std::vector<std::string>{"gateway", "--model", model_path(), "--listen",
                                                                 tcp(gateway_port), "--scheduler", tcp(sched_port)},
                                        dir / "gateway.log");
    EXPECT_TRUE(gateway->wait_for_log("ready on")) << gateway->log();
    EXPECT_TRUE(scheduler->wait_for_log(with_single_worker ? "registered as replica 2" : "registered as replica 1"))
        << scheduler->log();
    EXPECT_TRUE(rank1->wait_for_log("ready")) << rank1->log();
  }
  ~group_cluster() { std::filesystem::remove_all(dir); }
};

}  // namespace

TEST(TensorParallelCluster, GroupServesLikeGenerateAndSurvivesALostRank) {
  TROUPE_REQUIRE_MODELS();
  group_cluster c("tp-cluster", true);
  std::atomic<int> chunks{0};
  std::thread killer([&] {
    while (chunks < 40) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    c.rank1->signal(SIGKILL);
  });
  auto results = run_clients(tcp(c.gateway_port), 8, 100, &chunks);
  killer.join();
  expect_like_generate(results, 100);
  EXPECT_TRUE(c.rank0->wait_for_log("group broken")) << c.rank0->log();
  EXPECT_TRUE(c.scheduler->wait_for_log("(g0r0) removed")) << c.scheduler->log();
}

// Preemption by swap in a group: rank 0 relays each plan with its copy lists and every rank
// swaps its own shard of the KV blocks; a pool too small for the jobs forces swaps.
TEST(TensorParallelCluster, EveryRankSwapsItsShardAndAnswersMatchGenerate) {
  TROUPE_REQUIRE_MODELS();
  const std::string trace = (temp_dir("tp-swap-trace") / "trace.jsonl").string();
  group_cluster c("tp-swap", false, {"--preemption", "swap", "--trace", trace},
                  {"--max-batch", "64", "--kv-mb", "1", "--swap-mb", "8"});
  EXPECT_TRUE(c.rank1->wait_for_log("host swap pool of")) << c.rank1->log();
  auto results = run_clients(tcp(c.gateway_port), 24, 100);
  expect_like_generate(results, 100);
  c.scheduler->signal(SIGTERM);
  c.scheduler->wait(20);
  const std::string text = read_file(trace);
  size_t swapped_in = 0;
  for (size_t at = text.find("\"swapped_in\":["); at != std::string::npos; at = text.find("\"swapped_in\":[", at + 1))
    swapped_in += text[at + 14] != ']';
  EXPECT_GT(swapped_in, 0u) << "no sequence was swapped out and back in";
  std::filesystem::remove_all(std::filesystem::path(trace).parent_path());
}

TEST(TensorParallelCluster, LastGroupLostEndsJobsWithDisconnected) {
  TROUPE_REQUIRE_MODELS();
  group_cluster c("tp-cluster-alone", false);
  std::atomic<int> chunks{0};
  std::thread killer([&] {
    while (chunks < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    c.rank1->signal(SIGKILL);
  });
  auto results = run_clients(tcp(c.gateway_port), 4, 110, &chunks);
  killer.join();
  int disconnected = 0;
  for (const auto& r : results) {
    if (r.ok) continue;  // finished before the group broke
    EXPECT_EQ(r.error.kind, error_kind::disconnected) << r.error.message;
    EXPECT_NE(r.error.message.find("no worker is left"), std::string::npos) << r.error.message;
    ++disconnected;
  }
  EXPECT_GT(disconnected, 0) << "the group broke after every job had finished; the test proves nothing";
}

// Three hosts in network namespaces joined by a bridge: gateway and scheduler on the first,
// a worker group of two ranks on the other two (its Gloo traffic crosses the "network").
TEST(TensorParallelCluster, GroupAcrossNetworkNamespaces) {
  TROUPE_REQUIRE_MODELS();
  std::string why;
  if (!netns_topology::available(&why)) GTEST_SKIP() << why;
  netns_topology net(3, 200 + getpid() % 50);
  ASSERT_TRUE(net.ok()) << "could not build the namespaces and bridge";
  auto dir = temp_dir("tp-netns");
  const std::string ctl = net.address(0);
  const std::string sched = "tcp://" + ctl + ":7001", rdv = "tcp://" + ctl + ":7002", gw = "tcp://" + ctl + ":7000";
  child_process scheduler({"scheduler", "--listen", sched, "--rendezvous", rdv}, dir / "scheduler.log", net.name(0));
  ASSERT_TRUE(scheduler.wait_for_log("ready on")) << scheduler.log();
  child_process gateway({"gateway", "--model", model_path(), "--listen", gw, "--scheduler", sched}, dir / "gateway.log",
                        net.name(0));
  std::vector<std::unique_ptr<child_process>> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.push_back(std::make_unique<child_process>(
        std::vector<std::string>{"worker", "--model", model_path(), "--scheduler", sched, "--tp-size", "2", "--rank",
                                 std::to_string(r), "--group", "g0", "--rendezvous", rdv, "--tp-host",
                                 net.address(1 + r), "--name", "host" + std::to_string(1 + r)},
        dir / ("rank" + std::to_string(r) + ".log"), net.name(1 + r)));
  ASSERT_TRUE(gateway.wait_for_log("ready on")) << gateway.log();
  ASSERT_TRUE(scheduler.wait_for_log("registered as replica 1")) << scheduler.log() << ranks[0]->log();
  // Rank 1 writes its group line after the group formed, which may be after rank 0 registered.
  EXPECT_TRUE(ranks[1]->wait_for_log("gloo tcp " + net.address(2))) << ranks[1]->log();

  actors::gateway_client client(gw);
  proto::job j;
  j.client_request_id = "netns";
  j.prompt_text = "Once upon a time";
  j.sampling.max_tokens = 64;
  auto r = actors::run_job(client, j, 30000);
  ASSERT_TRUE(r.ok) << r.error.message << "\n" << scheduler.log() << ranks[0]->log() << ranks[1]->log();
  EXPECT_EQ(r.ids, generate_ids("Once upon a time", 64));
  scheduler.signal(SIGTERM);
  gateway.signal(SIGTERM);
  EXPECT_EQ(scheduler.wait(20), 0) << scheduler.log();
  EXPECT_EQ(ranks[1]->wait(20), 0) << "a follower ends cleanly when its leader stops: " << ranks[1]->log();
}
