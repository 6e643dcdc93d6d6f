// The KV block pool, the prefix cache on top of it, and prefix-aware routing.
#include <gtest/gtest.h>

#include <set>

#include "src/sched/block_manager.h"
#include "src/sched/policy.h"
#include "tests/sched_test_support.h"

namespace troupe::sched::test {
namespace {

// ---- block pool -----------------------------------------------------------------------------

void expect_balanced(const block_pool& p) { EXPECT_EQ(p.free_count() + p.used_count() + p.cached_count(), p.total()); }

TEST(SchedBlockPool, AllocatesEachBlockOnceAndRunsOut) {
  block_pool p(4, 0);
  std::vector<int32_t> got;
  for (int i = 0; i < 4; ++i) got.push_back(p.allocate());
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(p.allocate(), -1);
  expect_balanced(p);
  p.release(2);
  EXPECT_EQ(p.free_count(), 1);
  EXPECT_EQ(p.allocate(), 2);
}

TEST(SchedBlockPool, CachedBlocksAreEvictedLeastRecentlyReleasedFirst) {
  block_pool p(3, 0);
  const int32_t a = p.allocate(), b = p.allocate(), c = p.allocate();
  ASSERT_TRUE(p.register_block(a, 11));
  ASSERT_TRUE(p.register_block(b, 22));
  EXPECT_FALSE(p.register_block(c, 11));  // the hash is taken
  p.release(b);
  p.release(a);
  EXPECT_EQ(p.cached_count(), 2);
  EXPECT_EQ(p.free_count(), 0);
  expect_balanced(p);
  // A hit takes a block out of the LRU.
  EXPECT_EQ(p.lookup(22), b);
  p.acquire(b);
  EXPECT_EQ(p.cached_count(), 1);
  p.release(b);                // b is now the most recent
  EXPECT_EQ(p.allocate(), a);  // a was released before b
  EXPECT_EQ(p.lookup(11), -1);
  EXPECT_EQ(p.lookup(22), b);
  EXPECT_EQ(p.allocate(), b);
  EXPECT_EQ(p.allocate(), -1);
  expect_balanced(p);
}

TEST(SchedBlockPool, HashChainDependsOnTheWholePrefix) {
  const std::vector<int32_t> x = {1, 2, 3, 4};
  const uint64_t h0 = hash_block(0, x.data(), 4);
  EXPECT_EQ(h0, hash_block(0, x.data(), 4));
  EXPECT_NE(hash_block(h0, x.data(), 4), hash_block(h0 + 1, x.data(), 4));
  EXPECT_NE(h0, hash_block(0, x.data(), 3));
  block_pool p(2, 0);
  p.register_block(p.allocate(), h0);
  EXPECT_EQ(p.count_hits({h0, 5}, 2), 1);
  EXPECT_EQ(p.count_hits({h0}, 0), 0);
  EXPECT_EQ(p.count_hits({7, h0}, 2), 0);
}

TEST(SchedBlockPool, HostPoolIsCounted) {
  block_pool p(1, 3);
  const auto two = p.host_allocate(2);
  EXPECT_EQ(two.size(), 2u);
  EXPECT_TRUE(p.host_allocate(2).empty());
  p.host_release(two);
  const auto three = p.host_allocate(3);
  EXPECT_EQ(std::set<int32_t>(three.begin(), three.end()), (std::set<int32_t>{0, 1, 2}));
}

// ---- prefix cache in the policy -------------------------------------------------------------

replica_info replica(uint32_t id, int64_t blocks, int32_t max_batch = 64) {
  replica_info r;
  r.id = id;
  r.kv_blocks = blocks;
  r.block_size = 16;
  r.max_batch = max_batch;
  return r;
}

request with_prompt(uint64_t id, std::vector<int32_t> prompt, int32_t max_tokens = 4) {
  request r = make_request(id, 1, max_tokens);
  r.prompt = std::move(prompt);
  return r;
}

std::vector<int32_t> tokens(int32_t n, int32_t first) {
  std::vector<int32_t> v;
  for (int32_t i = 0; i < n; ++i) v.push_back(first + i);
  return v;
}

TEST(SchedPrefix, SecondRequestSharesTheCachedPrefix) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  std::vector<int32_t> a = tokens(40, 100);  // two full blocks and a tail
  ASSERT_TRUE(p.submit(with_prompt(1, a, 50), 0.0).accepted);
  fake_worker w;
  auto first = w.step(p, 0, 0.1);
  ASSERT_TRUE(first);
  const std::vector<int32_t> table_a = first->plan.seqs[0].block_table;

  std::vector<int32_t> b = tokens(32, 100);
  b.push_back(7);  // same two blocks, then different
  ASSERT_TRUE(p.submit(with_prompt(2, b), 0.2).accepted);
  auto second = w.step(p, 0, 0.3);
  ASSERT_TRUE(second);
  const seq_work& wb = second->plan.seqs.back();
  ASSERT_EQ(wb.seq_id, 2u);
  EXPECT_EQ(wb.start_pos, 32);
  EXPECT_EQ(wb.tokens, std::vector<int32_t>{7});
  ASSERT_EQ(wb.block_table.size(), 3u);
  EXPECT_EQ(wb.block_table[0], table_a[0]);
  EXPECT_EQ(wb.block_table[1], table_a[1]);
  EXPECT_NE(wb.block_table[2], table_a[2]);
  EXPECT_EQ(p.stats(0)->prefix_hit_tokens, 32u);
  EXPECT_EQ(p.check_invariants(), "");
}

TEST(SchedPrefix, TheLastPromptTokenIsAlwaysComputed) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  ASSERT_TRUE(p.submit(with_prompt(1, tokens(32, 5), 1), 0.0).accepted);
  fake_worker w;
  w.step(p, 0, 0.1);  // finishes: its blocks stay cached
  EXPECT_EQ(p.stats(0)->used_blocks, 0);
  EXPECT_EQ(p.stats(0)->cached_blocks, 2);
  ASSERT_TRUE(p.submit(with_prompt(2, tokens(32, 5), 1), 0.2).accepted);
  auto ps = w.step(p, 0, 0.3);
  ASSERT_TRUE(ps);
  EXPECT_EQ(ps->plan.seqs[0].start_pos, 16);  // one block reused, the second recomputed
  EXPECT_EQ(ps->plan.seqs[0].tokens.size(), 16u);
  EXPECT_TRUE(ps->plan.seqs[0].sample);
}

TEST(SchedPrefix, OffMeansNoSharing) {
  policy_config cfg;
  cfg.prefix_caching = false;
  policy p(cfg);
  p.add_replica(replica(0, 100), 0.0);
  ASSERT_TRUE(p.submit(with_prompt(1, tokens(40, 5), 1), 0.0).accepted);
  fake_worker w;
  w.step(p, 0, 0.1);
  EXPECT_EQ(p.stats(0)->cached_blocks, 0);
  ASSERT_TRUE(p.submit(with_prompt(2, tokens(40, 5), 1), 0.2).accepted);
  EXPECT_EQ(w.step(p, 0, 0.3)->plan.seqs[0].start_pos, 0);
}

TEST(SchedPrefix, CachedBlocksGiveWayWhenFreeBlocksRunOut) {
  policy p({});
  p.add_replica(replica(0, 6), 0.0);
  fake_worker w;
  ASSERT_TRUE(p.submit(with_prompt(1, tokens(64, 1000), 1), 0.0).accepted);
  w.step(p, 0, 0.1);
  EXPECT_EQ(p.stats(0)->cached_blocks, 4);
  ASSERT_TRUE(p.submit(with_prompt(2, tokens(64, 5000), 1), 0.2).accepted);
  auto ps = w.step(p, 0, 0.3);
  ASSERT_TRUE(ps);
  EXPECT_EQ(ps->plan.seqs[0].start_pos, 0);
  EXPECT_EQ(ps->plan.seqs[0].block_table.size(), 4u);
  EXPECT_EQ(p.stats(0)->cached_blocks + p.stats(0)->free_blocks, 6);
  EXPECT_EQ(p.check_invariants(), "");
}

// ---- routing --------------------------------------------------------------------------------

TEST(SchedRouting, PrefersTheReplicaHoldingThePrefix) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  p.add_replica(replica(1, 100), 0.0);
  fake_worker w;
  ASSERT_TRUE(p.submit(with_prompt(1, tokens(64, 1), 1), 0.0).accepted);
  ASSERT_TRUE(w.step(p, 0, 0.1));  // request 1 ran on replica 0, cached there
  std::vector<int32_t> b = tokens(64, 1);
  b.push_back(9);
  ASSERT_TRUE(p.submit(with_prompt(2, b, 1), 0.2).accepted);
  EXPECT_FALSE(p.schedule(1, 0.3));  // replica 1 leaves it to replica 0
  auto ps = w.step(p, 0, 0.4);
  ASSERT_TRUE(ps);
  EXPECT_EQ(ps->plan.seqs[0].start_pos, 64);
}

TEST(SchedRouting, ARequestWaitsForItsPreferredReplicaOnlySoLong) {
  policy p({});
  p.add_replica(replica(0, 100), 0.0);
  p.add_replica(replica(1, 100), 0.0);
  fake_worker w;
  ASSERT_TRUE(p.submit(with_prompt(1, tokens(64, 1), 1), 0.0).accepted);
  ASSERT_TRUE(w.step(p, 0, 0.1));
  ASSERT_TRUE(p.submit(with_prompt(2, tokens(65, 1), 1), 0.2).accepted);
  EXPECT_FALSE(p.schedule(1, 0.3));
  auto ps = p.schedule(1, 1.25);  // replica 0 never asked: after affinity_wait_s, take it
  ASSERT_TRUE(ps);
  EXPECT_EQ(ps->plan.seqs[0].start_pos, 0);
}

TEST(SchedRouting, AnOverloadedCacheHolderLosesToTheLeastLoaded) {
  for (double factor : {1.0, 100.0}) {
    policy_config cfg;
    cfg.max_step_tokens = 16;
    cfg.affinity_load_factor = factor;
    policy p(cfg);
    p.add_replica(replica(0, 1000), 0.0);
    p.add_replica(replica(1, 1000), 0.0);
    fake_worker w;
    ASSERT_TRUE(p.submit(with_prompt(1, tokens(32, 1), 1), 0.0).accepted);
    w.step(p, 0, 0.1);
    w.step(p, 0, 0.2);  // finished, cached on replica 0
    ASSERT_TRUE(p.submit(with_prompt(10, tokens(200, 1000), 4), 0.3).accepted);
    w.step(p, 0, 0.4);  // replica 0 now has 184 prefill tokens to go
    std::vector<int32_t> b = tokens(32, 1);
    b.push_back(9);
    ASSERT_TRUE(p.submit(with_prompt(2, b, 1), 0.5).accepted);
    auto ps = p.schedule(1, 0.6);
    // 184 > 1 x 0 + 16: the idle replica takes it; with a factor of 100 it waits for the cache.
    EXPECT_EQ(ps.has_value(), factor == 1.0) << "factor " << factor;
  }
}

}  // namespace
}  // namespace troupe::sched::test
