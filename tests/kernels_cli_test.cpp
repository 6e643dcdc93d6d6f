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

}  // namespace
