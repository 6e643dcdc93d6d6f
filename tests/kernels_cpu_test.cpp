// The fast CPU kernels: every variant of every op, each instruction set forced in turn,
// against the reference on random and awkward shapes, on pools of 1 and 3 threads; and
// the thread pool itself.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <cstdio>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ref/ref.h"
#include "troupe/kernel_registry.h"

namespace cpu = troupe::kern::cpu;

namespace {

void add_all(troupe::kernel_registry& reg) {
  for (const auto& v : troupe::kern::ref::variants()) reg.add(v);
  cpu::register_all(reg);
}

class CpuKernels : public ::testing::TestWithParam<int> {};

TEST_P(CpuKernels, EveryVariantMatchesTheReference) {
  troupe::kernel_registry reg;
  add_all(reg);
  cpu::thread_pool pool(GetParam());
  const troupe_kctx ctx = cpu::make_kctx(pool);
  // Each supported instruction set is checked by name, not only the one selected.
  std::vector<std::string> expected;
  for (auto i : {cpu::isa::generic, cpu::isa::avx2, cpu::isa::avx512})
    if (cpu::isa_supported(i)) expected.push_back(std::string("cpu.") + cpu::isa_name(i));
  int checked = 0;
  for (const auto& want : expected) {
    troupe::kern::check_options opt;
    opt.variant = want;
    const auto results = troupe::kern::check_variants(reg, &ctx, opt);
    EXPECT_EQ((int)results.size(), (int)TROUPE_OP_COUNT) << want << " should implement every op";
    for (const auto& r : results) {
      std::printf("  %-15s %-12s cases %3d  worst |err| %.3g  worst err/allowed %.3f  (%s)\n",
                  std::string(troupe::op_name(r.op)).c_str(), r.variant.c_str(), r.cases, r.max_abs_err, r.worst_ratio,
                  troupe::kern::tolerance_summary(r.op).c_str());
      EXPECT_TRUE(r.pass) << troupe::op_name(r.op) << " " << r.variant << ": " << r.first_failure;
      EXPECT_GT(r.cases, 0);
      ++checked;
    }
  }
  EXPECT_EQ(checked, (int)expected.size() * TROUPE_OP_COUNT);
}

INSTANTIATE_TEST_SUITE_P(Threads, CpuKernels, ::testing::Values(1, 3));

// The ABI lets a caller pass no context at all (no pool): every variant runs inline.
TEST(CpuKernels, EveryVariantRunsWithoutAContext) {
  troupe::kernel_registry reg;
  add_all(reg);
  const auto results = troupe::kern::check_variants(reg, nullptr);
  EXPECT_GE(results.size(), (size_t)TROUPE_OP_COUNT);
  for (const auto& r : results)
    EXPECT_TRUE(r.pass) << troupe::op_name(r.op) << " " << r.variant << ": " << r.first_failure;
}

// The checks above only test the threaded paths if the kernels hand work to the pool:
// each op must do so on its larger cases (small ones run inline on purpose).
TEST(CpuKernels, EveryOpSplitsItsLargerCasesOverThePool) {
  troupe::kernel_registry reg;
  add_all(reg);
  cpu::thread_pool pool(3);
  struct counting {
    cpu::thread_pool* pool;
    std::atomic<int> calls{0};
  } counter{&pool};
  troupe_kctx ctx = cpu::make_kctx(pool);
  ctx.pool = &counter;
  ctx.parallel_for = [](void* p, int64_t n, troupe_range_fn fn, void* arg) {
    auto* c = static_cast<counting*>(p);
    c->calls.fetch_add(1);
    c->pool->parallel_for(n, fn, arg);
  };
  for (auto i : {cpu::isa::generic, cpu::isa::avx2, cpu::isa::avx512}) {
    if (!cpu::isa_supported(i)) continue;
    for (int op = 0; op < TROUPE_OP_COUNT; ++op) {
      troupe::kern::check_options opt;
      opt.op = troupe::op_name(static_cast<troupe_op>(op));
      opt.variant = std::string("cpu.") + cpu::isa_name(i);
      counter.calls = 0;
      const auto results = troupe::kern::check_variants(reg, &ctx, opt);
      ASSERT_EQ(results.size(), 1u);
      EXPECT_TRUE(results[0].pass) << results[0].first_failure;
      EXPECT_GT(counter.calls.load(), 0) << opt.op << " " << opt.variant << " never used the pool";
    }
  }
}

TEST(CpuKernels, BestInstructionSetIsTheDefault) {
  troupe::kernel_registry reg;
  add_all(reg);
  const std::string best = std::string("cpu.") + cpu::isa_name(cpu::best_isa());
  for (int op = 0; op < TROUPE_OP_COUNT; ++op) EXPECT_EQ(reg.selected(static_cast<troupe_op>(op)).name, best);
  EXPECT_NE(cpu::describe(2).find(std::string(cpu::isa_name(cpu::best_isa())) + ", 2 threads"), std::string::npos);
}

TEST(ThreadPool, CoversTheRangeExactlyOnce) {
  for (int threads : {1, 2, 3, 5}) {
    cpu::thread_pool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {1, 2, 3, 7, 100, 1001, 100003}) {  // 1001 on: chunks of falling sizes
      for (int rep = 0; rep < 20; ++rep) {               // many jobs in a row: the hand-over between jobs
        std::vector<std::atomic<int>> hits(n);
        struct arg_t {
          std::vector<std::atomic<int>>* hits;
        } arg{&hits};
        pool.parallel_for(
            n,
            [](void* a, int64_t b, int64_t e) {
              for (int64_t i = b; i < e; ++i) (*static_cast<arg_t*>(a)->hits)[i].fetch_add(1);
            },
            &arg);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "threads " << threads << " n " << n;
      }
    }
  }
}

// Jobs far apart, so the workers have stopped spinning and block: a job must still be
// covered exactly once, whether a worker wakes in time to help or only after it ended.
TEST(ThreadPool, JobsAfterTheWorkersSleptAreCoveredOnce) {
  cpu::thread_pool pool(3);
  for (int rep = 0; rep < 10; ++rep) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    const int64_t n = 64 + rep;
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(
        n,
        [](void* a, int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) (*static_cast<std::vector<std::atomic<int>>*>(a))[i].fetch_add(1);
        },
        &hits);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "rep " << rep;
  }
}

TEST(ThreadPool, NestedCallRunsInline) {
  cpu::thread_pool pool(3);
  struct arg_t {
    cpu::thread_pool* pool;
    std::atomic<int64_t> inner_total{0};
  } arg{&pool};
  pool.parallel_for(
      4,
      [](void* a, int64_t b, int64_t e) {
        auto* s = static_cast<arg_t*>(a);
        for (int64_t i = b; i < e; ++i)
          s->pool->parallel_for(
              10, [](void* a2, int64_t b2, int64_t e2) { static_cast<arg_t*>(a2)->inner_total += e2 - b2; }, s);
      },
      &arg);
  EXPECT_EQ(arg.inner_total.load(), 40);
}

TEST(ThreadPool, KctxRoutesThroughThePool) {
  cpu::thread_pool pool(2);
  const troupe_kctx ctx = cpu::make_kctx(pool);
  EXPECT_EQ(ctx.n_threads, 2);
  EXPECT_EQ(ctx.pool, &pool);
  std::atomic<int64_t> sum{0};
  ctx.parallel_for(
      ctx.pool, 50, [](void* a, int64_t b, int64_t e) { *static_cast<std::atomic<int64_t>*>(a) += e - b; }, &sum);
  EXPECT_EQ(sum.load(), 50);
}

}  // namespace
