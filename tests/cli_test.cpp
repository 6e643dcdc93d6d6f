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

// systemd sends SIGKILL TimeoutStopSec after SIGTERM: for each example unit that must be
// longer than the role's own shutdown deadline, or a draining role is killed mid-drain.
TEST(Cli, SystemdUnitsWaitLongerThanTheDrainDeadline) {
  struct unit_case {
    const char* file;
    const char* role;
    const char* flag;  // the role's drain deadline flag
  };
  for (const unit_case u : {unit_case{"troupe-worker@.service", "worker", "--drain-timeout"},
                            unit_case{"troupe-gateway.service", "gateway", "--drain-timeout"}}) {
    const std::string path = std::string(TROUPE_SOURCE_DIR) + "/deploy/examples/" + u.file;
    auto unit = run_command("grep -oP '^TimeoutStopSec=\\K[0-9]+' '" + path + "'");
    ASSERT_EQ(unit.exit_code, 0) << path << ": no TimeoutStopSec line";
    // The default as --help prints it: "--drain-timeout FLOAT=60".
    auto help = run_command(troupe_bin() + " " + u.role + " --help | grep -oP -- '" + u.flag + "\\s+\\w+=\\K[0-9.]+'");
    ASSERT_EQ(help.exit_code, 0) << u.role << " --help names no default for " << u.flag << ": " << help.out;
    EXPECT_GT(std::stod(unit.out), std::stod(help.out))
        << u.file << ": TimeoutStopSec=" << unit.out << " is not longer than " << u.role << "'s " << u.flag << " "
        << help.out;
  }
}
