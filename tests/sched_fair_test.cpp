// Tenant fair share, tenant limits and admission by predicted TTFT.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "src/sched/policy.h"
#include "tests/sched_test_support.h"

namespace troupe::sched::test {
namespace {

replica_info one_replica(int32_t max_batch) {
  replica_info r;
  r.kv_blocks = 1000;
  r.block_size = 16;
  r.max_batch = max_batch;
  return r;
}

// Two tenants offering load at a 10:1 ratio, both more than the replica serves; returns
// the tokens served to each (prefill + decode) over steps [from, to).
std::map<std::string, int64_t> served(policy& p, int from, int to) {
  std::map<std::string, int64_t> by_tenant;
  std::map<uint64_t, const char*> tenant_of;
  fake_worker w;
  uint64_t id = 1;
  for (int step = 0; step < to; ++step) {
    const double t = 0.01 * step;
    // "a" offers 10 jobs per "b" job; b alone offers about half the replica's throughput.
    for (int k = 0; k < 10; ++k) {
      tenant_of[id] = "a";
      EXPECT_TRUE(p.submit(make_request(id++, 8, 8, "a"), t).accepted);
    }
    if (step % 2 == 0) {
      tenant_of[id] = "b";
      EXPECT_TRUE(p.submit(make_request(id++, 8, 8, "b"), t).accepted);
    }
    auto ps = w.step(p, 0, t);
    if (!ps || step < from) continue;
    for (const auto& s : ps->plan.seqs) by_tenant[tenant_of[s.seq_id]] += static_cast<int64_t>(s.tokens.size());
  }
  return by_tenant;
}

// Each job is 8 prompt tokens and 8 decodes over 9 steps: 4 slots serve ~0.45 jobs a
// step, "b" alone offers 0.5.
TEST(SchedFairShare, EqualWeightsShareTokensEvenly) {
  policy_config cfg;
  cfg.max_queued = 1'000'000;
  policy p(cfg);
  p.add_replica(one_replica(4), 0.0);
  auto s = served(p, 100, 400);
  ASSERT_GT(s["b"], 0);
  const double ratio = static_cast<double>(s["a"]) / static_cast<double>(s["b"]);
  EXPECT_NEAR(ratio, 1.0, 0.1) << "a " << s["a"] << " b " << s["b"];
}

TEST(SchedFairShare, WeightsSplitTokensTwoToOne) {
  policy_config cfg;
  cfg.max_queued = 1'000'000;
  cfg.tenants = {{"a", 1.0}, {"b", 2.0}};
  policy p(cfg);
  p.add_replica(one_replica(4), 0.0);
  auto s = served(p, 100, 400);
  ASSERT_GT(s["a"], 0);
  const double ratio = static_cast<double>(s["b"]) / static_cast<double>(s["a"]);
  EXPECT_NEAR(ratio, 2.0, 0.2) << "a " << s["a"] << " b " << s["b"];
}

TEST(SchedFairShare, ANewTenantStartsAtTheCurrentMinimum) {
  policy_config cfg;
  cfg.max_queued = 1'000'000;
  policy p(cfg);
  p.add_replica(one_replica(4), 0.0);
  fake_worker w;
  std::map<uint64_t, const char*> tenant_of;
  std::map<std::string, int64_t> late;
  uint64_t id = 1;
  for (int step = 0; step < 300; ++step) {
    const double t = 0.01 * step;
    tenant_of[id] = "a";
    ASSERT_TRUE(p.submit(make_request(id++, 8, 8, "a"), t).accepted);
    if (step >= 200) {  // "b" shows up after "a" has been served alone for 200 steps
      tenant_of[id] = "b";
      ASSERT_TRUE(p.submit(make_request(id++, 8, 8, "b"), t).accepted);
    }
    auto ps = w.step(p, 0, t);
    if (!ps || step < 200) continue;
    for (const auto& s : ps->plan.seqs) late[tenant_of[s.seq_id]] += static_cast<int64_t>(s.tokens.size());
  }
  // Without the reset "b" would hold 200 steps of credit and take everything.
  EXPECT_GT(late["a"], late["b"] / 3) << "a " << late["a"] << " b " << late["b"];
}

// "b" keeps one long job running (so it stays active) but queues nothing while "a" is
// served; when "b" queues again it must not cash in the tokens "a" got meanwhile: it starts
// at the counter of the last admission, and the two alternate from there.
TEST(SchedFairShare, ANewlyBackloggedTenantStartsAtTheLastAdmission) {
  policy_config cfg;
  cfg.max_queued = 1'000'000;
  policy p(cfg);
  p.add_replica(one_replica(2), 0.0);
  fake_worker w;
  std::map<uint64_t, std::string> tenant_of;
  uint64_t id = 1;
  auto submit = [&](const std::string& tenant, int32_t prompt, int32_t out, double t) {
    tenant_of[id] = tenant;
    ASSERT_TRUE(p.submit(make_request(id++, prompt, out, tenant), t).accepted);
  };
  submit("b", 4, 400, 0.0);           // runs throughout in one slot
  std::vector<std::string> admitted;  // tenants in admission order (first plan of each job)
  std::map<uint64_t, bool> seen;
  for (int step = 0; step < 160; ++step) {
    const double t = 0.01 * step;
    if (step < 120 && step % 2 == 0) submit("a", 32, 2, t);  // "a" alone keeps the other slot busy
    if (step == 120)
      for (int k = 0; k < 8; ++k) submit(k % 2 ? "a" : "b", 32, 2, t);
    auto ps = w.step(p, 0, t);
    ASSERT_TRUE(ps);
    for (const auto& s : ps->plan.seqs)
      if (!seen[s.seq_id]) {
        seen[s.seq_id] = true;
        if (step >= 120) admitted.push_back(tenant_of[s.seq_id]);
      }
  }
  ASSERT_GE(admitted.size(), 6u);
  // Before the rule "b" held ~60 jobs' worth of credit and took the first four admissions.
  const auto first4 = std::vector<std::string>(admitted.begin(), admitted.begin() + 4);
  const auto a_first = std::count(first4.begin(), first4.end(), "a");
  EXPECT_GE(a_first, 1) << ::testing::PrintToString(admitted);
  EXPECT_LE(a_first, 3) << ::testing::PrintToString(admitted);
}

TEST(SchedFairShare, TenantLimitsAnswerOverloaded) {
  policy_config cfg;
  tenant_config small;
  small.name = "small";
  small.max_running = 2;
  tenant_config tight;
  tight.name = "tight";
  tight.max_queued_tokens = 100;
  cfg.tenants = {small, tight};
  policy p(cfg);
  p.add_replica(one_replica(4), 0.0);
  EXPECT_TRUE(p.submit(make_request(1, 8, 8, "small"), 0.0).accepted);
  EXPECT_TRUE(p.submit(make_request(2, 8, 8, "small"), 0.0).accepted);
  auto a = p.submit(make_request(3, 8, 8, "small"), 0.0);
  EXPECT_FALSE(a.accepted);
  EXPECT_EQ(a.error.kind, error_kind::overloaded);
  EXPECT_EQ(a.error.field, "tenant");
  EXPECT_NE(a.error.message.find("max_running"), std::string::npos);
  EXPECT_TRUE(p.submit(make_request(4, 8, 8, "other"), 0.0).accepted);  // defaults: no limit
  EXPECT_TRUE(p.submit(make_request(5, 60, 8, "tight"), 0.0).accepted);
  a = p.submit(make_request(6, 60, 8, "tight"), 0.0);
  EXPECT_EQ(a.error.kind, error_kind::overloaded);
  EXPECT_NE(a.error.message.find("max_queued_tokens"), std::string::npos);
  // Once admitted, its tokens no longer count as queued.
  fake_worker w;
  w.step(p, 0, 0.1);
  EXPECT_TRUE(p.submit(make_request(7, 60, 8, "tight"), 0.2).accepted);
  // A finished job frees its tenant's slot.
  for (int i = 0; i < 20; ++i) w.step(p, 0, 0.3 + 0.1 * i);
  EXPECT_TRUE(p.submit(make_request(8, 8, 8, "small"), 3.0).accepted);
}

TEST(SchedFairShare, BadTenantConfigThrows) {
  policy_config cfg;
  cfg.tenants = {{"a", 0.0}};
  EXPECT_THROW(policy p(cfg), error);
  cfg.tenants = {{"a", 1.0}, {"a", 2.0}};
  EXPECT_THROW(policy p(cfg), error);
}

TEST(SchedAdmission, PredictedTtftOverTheBoundIsOverloaded) {
  policy_config cfg;
  cfg.prefill_tokens_per_s = 1000;
  cfg.ttft_slo_s = 0.1;  // 100 queued prefill tokens at most
  policy p(cfg);
  p.add_replica(one_replica(4), 0.0);
  EXPECT_TRUE(p.submit(make_request(1, 40, 8), 0.0).accepted);
  EXPECT_TRUE(p.submit(make_request(2, 40, 8), 0.0).accepted);
  auto a = p.submit(make_request(3, 40, 8), 0.0);
  EXPECT_FALSE(a.accepted);
  EXPECT_EQ(a.error.kind, error_kind::overloaded);
  EXPECT_EQ(a.error.field, "ttft");
  fake_worker w;
  w.step(p, 0, 0.1);  // the queue drains into the replica
  EXPECT_TRUE(p.submit(make_request(3, 40, 8), 0.2).accepted);
}

}  // namespace
}  // namespace troupe::sched::test
