// Helpers shared by the tests: where the shared models and data are, and running the troupe binary.
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace troupe::test {

inline std::filesystem::path models_dir() { return TROUPE_MODELS_DIR; }
// ../shared beside the checkout: models/, tokenizers/, ...
inline std::filesystem::path shared_dir() { return models_dir().parent_path(); }

// Skips the test with a visible message when `required` (under ../shared) is missing; fails
// instead when CI=true (CI always has ../shared).
#define TROUPE_REQUIRE_SHARED(required)                                                                  \
  do {                                                                                                   \
    const std::filesystem::path troupe_required_ = (required);                                           \
    if (!std::filesystem::exists(troupe_required_)) {                                                    \
      const char* ci = std::getenv("CI");                                                                \
      if (ci && std::string(ci) == "true") FAIL() << "shared test data missing at " << troupe_required_; \
      GTEST_SKIP() << "shared test data not found at " << troupe_required_ << ": skipping";              \
    }                                                                                                    \
  } while (0)

// Skips the test with a visible message when ../shared/models is missing; fails instead
// when CI=true (CI always has the models).
#define TROUPE_REQUIRE_MODELS() TROUPE_REQUIRE_SHARED(::troupe::test::models_dir() / "stories260K")

// The real tokenizers (Llama 3, Qwen3) and their reference ids: ../shared/tokenizers.
inline std::filesystem::path tokenizers_dir() { return shared_dir() / "tokenizers"; }
#define TROUPE_REQUIRE_TOKENIZERS() TROUPE_REQUIRE_SHARED(::troupe::test::tokenizers_dir() / "reference")

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
