// The KV cache manager on its own, without the policy: growth and eviction, prefix sharing,
// swap slots and the copies they put in a plan, and its bookkeeping check.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "src/sched/kv_cache_manager.h"

namespace troupe::sched {
namespace {

std::vector<int32_t> tokens(int32_t n, int32_t first = 1) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

TEST(KvCacheManager, GrowsBlockByBlockAndSaysWhenNoneIsLeft) {
  kv_cache_manager m(/*n_blocks=*/4, /*block_size=*/16, /*n_host_blocks=*/0, /*prefix_caching=*/false);
  kv_seq a, b;
  std::vector<int32_t> added;
  ASSERT_TRUE(m.grow(a, 17, added));  // 17 positions: two blocks
  EXPECT_EQ(a.table.size(), 2u);
  EXPECT_EQ(added, a.table);
  EXPECT_EQ(m.available(), 2);
  added.clear();
  ASSERT_TRUE(m.grow(a, 32, added));  // still two blocks: nothing new
  EXPECT_TRUE(added.empty());
  ASSERT_TRUE(m.grow(b, 32, added));
  EXPECT_EQ(m.available(), 0);
  added.clear();
  EXPECT_FALSE(m.grow(a, 33, added));  // a third block for a: none left
  EXPECT_EQ(a.table.size(), 2u);       // it keeps what it had
  EXPECT_EQ(m.check({&a, &b}, {}), "");
  m.free(b);
  EXPECT_EQ(m.available(), 2);
  EXPECT_EQ(m.take_freed().size(), 2u);
  EXPECT_EQ(m.check({&a}, {}), "");
}

TEST(KvCacheManager, SharesARegisteredPrefixAndEvictsItOnlyWhenIdle) {
  kv_cache_manager m(4, 16, 0, true);
  const std::vector<int32_t> prompt = tokens(40);  // two full blocks and a partial one
  kv_seq a;
  std::vector<int32_t> added;
  EXPECT_EQ(m.prefix_hits(a, prompt, 2), 0);  // nothing cached yet
  ASSERT_TRUE(m.grow(a, 40, added));
  m.register_computed(a, prompt, 40);  // its two full blocks become findable

  kv_seq b;
  ASSERT_EQ(m.prefix_hits(b, prompt, 2), 2);
  EXPECT_EQ(m.idle_hits(b, 2), 0);  // a still references them
  m.share_prefix(b, 2);
  EXPECT_EQ(std::vector<int32_t>(b.table.begin(), b.table.end()),
            std::vector<int32_t>(a.table.begin(), a.table.begin() + 2));
  EXPECT_EQ(m.check({&a, &b}, {}), "");

  // Another prompt with the same first block only.
  std::vector<int32_t> other = prompt;
  other[20] = 999;
  kv_seq c;
  EXPECT_EQ(m.prefix_hits(c, other, 2), 1);

  m.free(a);
  m.free(b);
  EXPECT_EQ(m.check({}, {}), "");
  // The two prefix blocks stay cached (idle) and are still found...
  kv_seq d;
  ASSERT_EQ(m.prefix_hits(d, prompt, 2), 2);
  EXPECT_EQ(m.idle_hits(d, 2), 2);
  // ...until growth needs them: with every block wanted, the cached ones are evicted.
  added.clear();
  ASSERT_TRUE(m.grow(d, 64, added));
  EXPECT_EQ(d.table.size(), 4u);
  kv_seq e;
  EXPECT_EQ(m.prefix_hits(e, prompt, 2), 0);
  EXPECT_EQ(m.check({&d}, {}), "");
}

TEST(KvCacheManager, SwapOutAndInPutTheCopiesInTheNextPlan) {
  kv_cache_manager m(4, 16, /*n_host_blocks=*/2, false);
  kv_seq a;
  std::vector<int32_t> added;
  ASSERT_TRUE(m.grow(a, 32, added));
  const std::vector<int32_t> device = a.table;
  ASSERT_TRUE(m.swap_out(a));
  EXPECT_TRUE(a.table.empty());
  EXPECT_EQ(a.host_slots.size(), 2u);
  EXPECT_EQ(m.available(), 4);
  EXPECT_EQ(m.check({}, {&a}), "");

  kv_seq big;  // no host room for a second sequence of two blocks
  ASSERT_TRUE(m.grow(big, 32, added));
  EXPECT_FALSE(m.swap_out(big));
  EXPECT_EQ(big.table.size(), 2u);  // unchanged
  m.free(big);

  step_plan first;
  m.take_copies(first);
  ASSERT_EQ(first.swap_out.size(), 2u);
  EXPECT_EQ(first.swap_out[0].device_block, device[0]);
  EXPECT_EQ(first.swap_out[1].device_block, device[1]);
  EXPECT_TRUE(first.swap_in.empty());

  added.clear();
  m.swap_in(a, added);
  EXPECT_EQ(a.table.size(), 2u);
  EXPECT_TRUE(a.host_slots.empty());
  step_plan second;
  m.take_copies(second);
  ASSERT_EQ(second.swap_in.size(), 2u);
  EXPECT_EQ(second.swap_in[0].device_block, a.table[0]);
  EXPECT_EQ(second.swap_in[0].host_slot, first.swap_out[0].host_slot);
  EXPECT_TRUE(second.swap_out.empty());
  EXPECT_EQ(m.check({&a}, {}), "");
}

TEST(KvCacheManager, CheckFindsABlockHeldTwice) {
  kv_cache_manager m(4, 16, 0, false);
  kv_seq a;
  std::vector<int32_t> added;
  ASSERT_TRUE(m.grow(a, 16, added));
  kv_seq forged = a;  // a table naming a's block without the manager handing it out
  EXPECT_NE(m.check({&a, &forged}, {}), "");
}

}  // namespace
}  // namespace troupe::sched
