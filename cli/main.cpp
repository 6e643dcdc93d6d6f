// troupe: one binary, one subcommand per role or tool (see README.md).
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "troupe/error.h"

#include "commands.h"
#include "troupe/version.h"

namespace troupe::cli {

namespace {
run_fn g_runner;  // set during parsing by the one subcommand that was chosen
}

void set_runner(run_fn fn) { g_runner = std::move(fn); }

}  // namespace troupe::cli

int main(int argc, char** argv) {
  using namespace troupe::cli;
  CLI::App app{"troupe: an actor-based distributed LLM inference cluster"};
  app.set_version_flag("--version", std::string("troupe ") + troupe::version_string());
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));

  add_bench(app);
  add_serve(app);
  add_gateway(app);
  add_scheduler(app);
  add_worker(app);
  add_submit(app);
  add_generate(app);
  add_model(app);
  add_kernels(app);
  add_sim(app);

  try {
    std::vector<std::string> args = expand_config_files(std::vector<std::string>(argv, argv + argc));
    std::reverse(args.begin(), args.end());  // CLI11 takes a vector in reverse order, without argv[0]
    args.pop_back();
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const troupe::error& e) {
    std::fprintf(stderr, "troupe: %s\n", e.what());
    return 2;
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("troupe"));  // stdout carries the commands' output
  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  if (!g_runner) return 2;
  try {
    return g_runner();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
