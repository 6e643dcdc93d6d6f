// Kernels chosen in the cluster's processes: a plugin variant given to `troupe serve` with
// --plugin and --kernel is the one that runs (the example plugin counts its calls and
// reports them when unloaded), the worker's start-up line names each op's variant (the
// backend's description lists the variants it runs), a --config file
// can carry several --kernel and --plugin values, and bad choices fail naming what is wrong.
#include <gtest/gtest.h>

#include <fstream>

#include "cluster_support.h"

using namespace troupe::test;

namespace {

const std::string k_prompt = "Once upon a time";
const std::string k_plugin_ran = "example_cpu_plugin: plugin.silu_mul ran ";

// `troupe submit --json` against the gateway at `port`: the greedy ids.
std::vector<int32_t> submit_ids(int port, int max_tokens) {
  auto r = run_command(troupe_bin() + " submit --json --gateway " + tcp(port) + " --prompt " + shell_quote(k_prompt) +
                       " --max-tokens " + std::to_string(max_tokens) + " 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return nlohmann::json::parse(r.out).at("ids").get<std::vector<int32_t>>();
}

// `troupe generate --json` with `flags`: its JSON line comes first; the plugin's report, on
// stderr at exit, after it.
std::vector<int32_t> generate_ids_with(const std::string& flags, int max_tokens, std::string* out = nullptr) {
  auto r = run_command(troupe_bin() + " --log-level off generate --json --model " + model_path() + " --prompt " +
                       shell_quote(k_prompt) + " --max-tokens " + std::to_string(max_tokens) + " " + flags);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  if (out) *out = r.out;
  return nlohmann::json::parse(r.out.substr(0, r.out.find('\n'))).at("ids").get<std::vector<int32_t>>();
}

// Serves the shared model with `flags`, submits one prompt, stops; returns the log.
std::string serve_one_prompt(const std::string& name, std::vector<std::string> flags, std::vector<int32_t>* ids) {
  auto dir = temp_dir(name);
  const int port = free_port();
  std::vector<std::string> args = {"serve", "--model", model_path(), "--listen", tcp(port)};
  args.insert(args.end(), flags.begin(), flags.end());
  child_process serve(args, dir / "serve.log");
  EXPECT_TRUE(serve.wait_for_log("ready on")) << serve.log();
  *ids = submit_ids(port, 24);
  serve.signal(SIGTERM);
  EXPECT_EQ(serve.wait(20), 0) << serve.log();
  const std::string log = serve.log();
  std::filesystem::remove_all(dir);
  return log;
}

}  // namespace

TEST(KernelSelectCli, PluginVariantRunsInsideServe) {
  TROUPE_REQUIRE_MODELS();
  std::vector<int32_t> ids;
  const std::string log =
      serve_one_prompt("kernel_plugin", {"--plugin", EXAMPLE_PLUGIN, "--kernel", "silu_mul=plugin.silu_mul"}, &ids);
  const size_t at = log.find("worker worker-0: cpu (");  // the worker's start-up line
  ASSERT_NE(at, std::string::npos) << log;
  const std::string worker_line = log.substr(at);
  EXPECT_NE(worker_line.substr(0, worker_line.find('\n')).find("silu_mul=plugin.silu_mul"), std::string::npos) << log;
  EXPECT_NE(log.find(k_plugin_ran), std::string::npos) << "the plugin's variant never ran:\n" << log;
  // The plugin's silu_mul is a valid one: the answer is `troupe generate`'s with the same
  // kernels, token for token.
  std::string gen_out;
  EXPECT_EQ(ids, generate_ids_with(std::string("--plugin ") + EXAMPLE_PLUGIN + " --kernel silu_mul=plugin.silu_mul", 24,
                                   &gen_out));
  EXPECT_NE(gen_out.find(k_plugin_ran), std::string::npos) << gen_out;
}

// The same plugin loaded, but a config file picks the reference for silu_mul (and rope): the
// plugin's variant never runs. Repeatable flags take TOML arrays.
TEST(KernelSelectCli, ConfigFileChoicesWinOverThePluginsDefault) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("kernel_config");
  const auto toml = dir / "serve.toml";
  std::ofstream(toml) << "plugin = [\"" << EXAMPLE_PLUGIN << "\"]\nkernel = [\"silu_mul=ref\", \"rope=ref\"]\n";
  std::vector<int32_t> ids;
  const std::string log = serve_one_prompt("kernel_config_serve", {"--config", toml.string()}, &ids);
  EXPECT_NE(log.find("silu_mul=ref "), std::string::npos) << log;
  EXPECT_NE(log.find("rope=ref "), std::string::npos) << log;
  EXPECT_EQ(log.find(k_plugin_ran), std::string::npos) << "silu_mul=ref was asked for:\n" << log;
  EXPECT_EQ(ids, generate_ids_with("--kernel silu_mul=ref --kernel rope=ref", 24));
  std::filesystem::remove_all(dir);
}

// A loaded plugin with no --kernel: its variant is the op's default, as `troupe kernels list`
// marks it, and the worker's start-up line names it.
TEST(KernelSelectCli, WorkerLogsTheVariantOfEachOp) {
  TROUPE_REQUIRE_MODELS();
  auto dir = temp_dir("kernel_worker");
  child_process worker({"worker", "--model", model_path(), "--scheduler", tcp(free_port()), "--name", "wk", "--plugin",
                        EXAMPLE_PLUGIN, "--kernel", "rmsnorm=ref"},
                       dir / "worker.log");
  ASSERT_TRUE(worker.wait_for_log("worker wk: cpu (")) << worker.log();
  std::string line = worker.log();
  line = line.substr(line.find("worker wk: cpu ("));
  line = line.substr(0, line.find('\n'));
  EXPECT_NE(line.find("silu_mul=plugin.silu_mul"), std::string::npos) << line;
  EXPECT_NE(line.find("rmsnorm=ref"), std::string::npos) << line;
  EXPECT_NE(line.find("rope=cpu."), std::string::npos) << line;
  auto list = run_command(troupe_bin() + " kernels list --plugin " + EXAMPLE_PLUGIN);
  EXPECT_NE(list.out.find("*plugin.silu_mul"), std::string::npos) << list.out;
  std::filesystem::remove_all(dir);
}

TEST(KernelSelectCli, BadChoicesFailNamingWhatIsWrong) {
  TROUPE_REQUIRE_MODELS();
  const std::string serve = troupe_bin() + " serve --model " + model_path() + " --listen " + tcp(free_port());
  auto op = run_command(serve + " --kernel no_such_op=ref");
  EXPECT_NE(op.exit_code, 0) << op.out;
  EXPECT_NE(op.out.find("unknown op 'no_such_op'"), std::string::npos) << op.out;
  auto variant = run_command(serve + " --kernel silu_mul=nonesuch");
  EXPECT_NE(variant.exit_code, 0) << variant.out;
  EXPECT_NE(variant.out.find("no variant 'nonesuch'"), std::string::npos) << variant.out;
  EXPECT_NE(variant.out.find("known: ref"), std::string::npos) << variant.out;
  auto plugin = run_command(troupe_bin() + " worker --model " + model_path() + " --plugin /nonexistent/libnone.so");
  EXPECT_NE(plugin.exit_code, 0) << plugin.out;
  EXPECT_NE(plugin.out.find("/nonexistent/libnone.so: cannot load"), std::string::npos) << plugin.out;
  auto abi = run_command(troupe_bin() + " generate --model " + model_path() + " --prompt x --plugin " +
                         EXAMPLE_PLUGIN_BAD_ABI);
  EXPECT_NE(abi.exit_code, 0) << abi.out;
  EXPECT_NE(abi.out.find("ABI version 99"), std::string::npos) << abi.out;
}
