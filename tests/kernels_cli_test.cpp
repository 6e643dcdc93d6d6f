// troupe kernels list|check|bench as a user runs them.
#include <gtest/gtest.h>

#include "test_support.h"

using troupe::test::run_command;
using troupe::test::troupe_bin;

namespace {

TEST(KernelsCli, ListShowsEveryOpWithItsDefault) {
  auto r = run_command(troupe_bin() + " kernels list");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("matmul_q4_0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("embedding_bf16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("*cpu."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cpu.generic"), std::string::npos) << r.out;
}

TEST(KernelsCli, CheckPassesOnTheBuiltInVariants) {
  auto r = run_command(troupe_bin() + " kernels check --op rope --threads 2");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("cpu.generic"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 failed"), std::string::npos) << r.out;
}

TEST(KernelsCli, CheckPassesOnThePlugin) {
  auto r = run_command(troupe_bin() + " kernels check --plugin " + EXAMPLE_PLUGIN + " --variant plugin.silu_mul");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("plugin.silu_mul"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pass"), std::string::npos) << r.out;
}

// A variant that loads but computes the wrong thing: the check is what stands between it and
// a served model.
TEST(KernelsCli, CheckFailsAWrongVariantAndNamesIt) {
  auto r = run_command(troupe_bin() + " kernels check --plugin " + EXAMPLE_PLUGIN_WRONG + " --variant plugin.silu_mul");
  EXPECT_NE(r.exit_code, 0) << r.out;
  const size_t at = r.out.find("plugin.silu_mul");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("FAIL", at), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(" 0 failed"), std::string::npos) << r.out;
}

TEST(KernelsCli, BadPluginAndUnknownOpFail) {
  auto bad = run_command(troupe_bin() + " kernels check --plugin " + EXAMPLE_PLUGIN_BAD_ABI);
  EXPECT_NE(bad.exit_code, 0) << bad.out;
  EXPECT_NE(bad.out.find("ABI version 99"), std::string::npos) << bad.out;
  auto op = run_command(troupe_bin() + " kernels check --op no_such_op");
  EXPECT_NE(op.exit_code, 0) << op.out;
  EXPECT_NE(op.out.find("no_such_op"), std::string::npos) << op.out;
}

TEST(KernelsCli, BenchPrintsBandwidthAndThroughput) {
  // The reference alone, matrix-vector only: a fraction of a second.
  auto r = run_command(troupe_bin() + " kernels bench --op matmul_q8_0 --variant ref --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("stream copy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GB/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 x 2048 x 2048"), std::string::npos) << r.out;
}

// CUDA variants: checked on the device when one is usable; otherwise listed as skipped with
// the reason, without changing the exit status, unless --variant names one of them.
TEST(KernelsCli, CheckRunsOrSkipsTheCudaVariants) {
  auto r = run_command(troupe_bin() + " kernels check --op add --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("0 failed"), std::string::npos) << r.out;
#ifdef TROUPE_TEST_WITH_CUDA
  EXPECT_NE(r.out.find("cuda.v1"), std::string::npos) << r.out;
  const bool no_device = r.out.find("cuda: unavailable") != std::string::npos;
  if (no_device) {
    EXPECT_NE(r.out.find("skipped"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("1 skipped ("), std::string::npos) << r.out;
    auto named = run_command(troupe_bin() + " kernels check --op add --variant cuda.v1");
    EXPECT_NE(named.exit_code, 0) << named.out;
    EXPECT_NE(named.out.find("--variant cuda.v1 is a CUDA variant and no CUDA device is usable"), std::string::npos)
        << named.out;
  } else {
    EXPECT_EQ(r.out.find("skipped"), std::string::npos) << r.out;
  }
#else
  EXPECT_EQ(r.out.find("cuda"), std::string::npos) << "no CUDA variant in this build: " << r.out;
#endif
}

#ifdef TROUPE_TEST_WITH_CUDA
TEST(KernelsCli, CudaPluginVariantGoesThroughTheSamePath) {
  auto r = run_command(troupe_bin() + " kernels check --plugin " + EXAMPLE_CUDA_PLUGIN +
                       " --variant example_cuda.silu_mul --threads 1");
  ASSERT_NE(r.out.find("example_cuda.silu_mul"), std::string::npos) << r.out;
  if (r.out.find("no CUDA device is usable") != std::string::npos) {
    EXPECT_NE(r.exit_code, 0) << r.out;
  } else {
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("pass"), std::string::npos) << r.out;
  }
}
#endif

TEST(KernelsCli, BenchShowsTheRooflineAndSkipsCudaWithoutADevice) {
  auto r = run_command(troupe_bin() + " kernels bench --op matmul_q8_0 --shape 1x64x64 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("roofline cpu:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("TFLOP/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("of roof"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 x 64 x 64"), std::string::npos) << r.out;
#ifdef TROUPE_TEST_WITH_CUDA
  if (r.out.find("cuda: unavailable") != std::string::npos) {
    EXPECT_NE(r.out.find("cuda.v1"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("cuda    skipped: "), std::string::npos) << r.out;
    auto named = run_command(troupe_bin() + " kernels bench --op matmul_f16 --variant cuda.v1 --shape 1x64x64");
    EXPECT_NE(named.exit_code, 0) << named.out;
    EXPECT_NE(named.out.find("no CUDA device is usable"), std::string::npos) << named.out;
  } else {
    EXPECT_NE(r.out.find("roofline cuda:"), std::string::npos) << r.out;
  }
#endif
}

}  // namespace
