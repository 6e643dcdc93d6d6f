// Each subcommand of the troupe binary registers itself on the CLI11 app from its own
// file, so that a subcommand's flags, parsing and run function read top to bottom.
#pragma once
#include <functional>
#include <string>

#include "troupe/sampling.h"
#include <vector>

namespace troupe::kern {
struct kernel_registry_options;
}

namespace CLI {
class App;
}

namespace troupe::cli {

// A subcommand's body returns the process exit code. main() sets it as the app's
// callback target; the first subcommand that ran sets it.
using run_fn = std::function<int()>;
void set_runner(run_fn fn);

// Turns each `--config FILE` (TOML/INI) into flags of the chosen subcommand (common_flags.cpp).
std::vector<std::string> expand_config_files(const std::vector<std::string>& args);

// --config FILE on a subcommand: TOML/INI keys named as its long flags, expanded into flags
// before parsing (cli/common_flags.cpp); flags given on the command line win.
void add_config_flag(CLI::App& sub);

// The sampling flags shared by generate and submit (--max-tokens, --temperature, --top-k,
// --top-p, --min-p, --repeat-penalty, --frequency-penalty, --presence-penalty, --seed,
// --stop, --stop-id, --top-logprobs).
void add_sampling_flags(CLI::App& sub, sampling_params& p);

// The KV cache flags beside --kv-mb (generate, worker, serve):
//   --kv-dtype auto|f32|f16: the pool's element type; auto is f32 on the CPU (logits within
//     1e-4 of the reference) and f16 on CUDA;
//   --kv-fraction F: with --kv-mb 0, the share of physical RAM (CPU) or of the GPU memory
//     left after the weights (CUDA) the pool takes; 0 keeps the backend's default (5% of
//     RAM, 85% of the GPU's free memory).
void add_kv_cache_flags(CLI::App& sub, std::string& kv_dtype, double& kv_fraction);

// The kernel flags (generate, serve, worker, kernels): --plugin LIB.so and --kernel OP=VARIANT,
// each repeatable (in a --config file: `kernel = ["silu_mul=ref", "rope=ref"]`).
void add_kernel_flags(CLI::App& sub, kern::kernel_registry_options& k);

void add_generate(CLI::App& app);
void add_serve(CLI::App& app);
void add_gateway(CLI::App& app);
void add_scheduler(CLI::App& app);
void add_worker(CLI::App& app);
void add_submit(CLI::App& app);
void add_model(CLI::App& app);
void add_kernels(CLI::App& app);
void add_sim(CLI::App& app);
void add_bench(CLI::App& app);

}  // namespace troupe::cli
