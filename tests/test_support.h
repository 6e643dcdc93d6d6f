// Helpers shared by the tests: where the shared models are, and running the troupe binary.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace troupe::test {

inline std::filesystem::path models_dir() { return TROUPE_MODELS_DIR; }

// Skips the test with a visible message when ../shared/models is missing; fails instead
// when CI=true (CI always has the models).
#define TROUPE_REQUIRE_MODELS()                                                                        \
  do {                                                                                                 \
    if (!std::filesystem::exists(::troupe::test::models_dir() / "stories260K")) {                      \
      const char* ci = std::getenv("CI");                                                              \
      if (ci && std::string(ci) == "true") FAIL() << "shared models missing at " << TROUPE_MODELS_DIR; \
      GTEST_SKIP() << "shared models not found at " << TROUPE_MODELS_DIR << ": skipping";              \
    }                                                                                                  \
  } while (0)

struct run_output {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

// Runs a shell command line and captures its output.
inline run_output run_command(const std::string& cmd) {
  run_output r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

inline std::string troupe_bin() { return TROUPE_BINARY; }

}  // namespace troupe::test
