// The troupe binary: --version, --help on each subcommand, no subcommand is an error.
#include <gtest/gtest.h>

#include "test_support.h"

using troupe::test::run_command;
using troupe::test::troupe_bin;

TEST(Cli, VersionNamesTheProtocol) {
  auto r = run_command(troupe_bin() + " --version");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("troupe 0."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("protocol"), std::string::npos) << r.out;
}

TEST(Cli, EverySubcommandHasHelp) {
  for (const char* sub :
       {"serve", "gateway", "scheduler", "worker", "submit", "generate", "bench", "sim", "kernels", "model"}) {
    auto r = run_command(troupe_bin() + " " + sub + " --help");
    EXPECT_EQ(r.exit_code, 0) << sub << ": " << r.out;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub << ": " << r.out;
  }
}

TEST(Cli, NoSubcommandIsAnError) {
  auto r = run_command(troupe_bin());
  EXPECT_NE(r.exit_code, 0);
}
