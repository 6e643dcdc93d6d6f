// Flags shared by several subcommands. --config FILE for every subcommand: CLI11 reads config
// files for the main app only, so the
// file's keys become flags of the subcommand before parsing. Flags given on the command line
// win over the file; keys may sit at the top level or in a [SUBCOMMAND] section.
#include <CLI/CLI.hpp>

#include <set>

#include "commands.h"
#include "kernels/make_registry.h"
#include "troupe/error.h"

namespace troupe::cli {

std::vector<std::string> expand_config_files(const std::vector<std::string>& args) {
  std::vector<std::string> out;
  std::set<std::string> given;
  for (const auto& a : args)
    if (a.rfind("--", 0) == 0) given.insert(a.substr(2, a.find('=') - 2));
  std::string subcommand;
  for (size_t i = 0; i < args.size(); ++i) {
    out.push_back(args[i]);
    if (i > 0 && subcommand.empty() && args[i].rfind("-", 0) != 0 && args[i - 1] != "--log-level") subcommand = args[i];
    std::string path;
    if (args[i] == "--config" && i + 1 < args.size()) {
      path = args[++i];
      out.push_back(path);
    } else if (args[i].rfind("--config=", 0) == 0) {
      path = args[i].substr(9);
    }
    if (path.empty()) continue;
    std::vector<CLI::ConfigItem> items;
    try {
      items = CLI::ConfigTOML().from_file(path);
    } catch (const std::exception& e) {
      throw error(error_kind::failed, "--config " + path + ": " + e.what(), "config");
    }
    for (const auto& item : items) {
      const bool mine = item.parents.empty() || (item.parents.size() == 1 && item.parents[0] == subcommand);
      if (!mine || item.name == "++" || item.name == "--" || given.count(item.name)) continue;
      for (const auto& v : item.inputs) out.push_back("--" + item.name + "=" + v);
      if (item.inputs.empty()) out.push_back("--" + item.name);
    }
  }
  return out;
}

void add_config_flag(CLI::App& sub) {
  // Read before parsing by expand_config_files (CLI11 reads config files for the main app only).
  sub.add_option("--config", "Read flags from a TOML or INI file (keys: the long flag names; flags given here win)")
      ->type_name("FILE");
}

void add_kv_cache_flags(CLI::App& sub, std::string& kv_dtype, double& kv_fraction) {
  sub.add_option("--kv-dtype", kv_dtype,
                 "KV cache element type: auto (f32 on the CPU, f16 on CUDA), f32, or f16 (half the memory per token)")
      ->check(CLI::IsMember({"auto", "f32", "f16"}))
      ->capture_default_str();
  sub.add_option("--kv-fraction", kv_fraction,
                 "With --kv-mb 0: the KV cache's share of physical RAM (CPU) or of the GPU memory left after the "
                 "weights (CUDA); 0 = the backend's default (0.05 of RAM, 0.85 of the GPU's)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
}

void add_kernel_flags(CLI::App& sub, kern::kernel_registry_options& k) {
  sub.add_option("--plugin", k.plugins, "Load a kernel plugin (.so exporting troupe_kernel_plugin_v1; repeatable)")
      ->type_name("LIB.so");
  sub.add_option("--kernel", k.kernels,
                 "OP=VARIANT: run this variant of an op (repeatable; `troupe kernels list` shows them)")
      ->type_name("OP=VARIANT");
}

void add_sampling_flags(CLI::App& sub, sampling_params& p) {
  sub.add_option("--max-tokens", p.max_tokens, "Most tokens to generate")->capture_default_str();
  sub.add_option("--temperature", p.temperature, "0 = greedy")->capture_default_str();
  sub.add_option("--top-k", p.top_k, "0 = off")->capture_default_str();
  sub.add_option("--top-p", p.top_p, "1 = off")->capture_default_str();
  sub.add_option("--min-p", p.min_p, "0 = off")->capture_default_str();
  sub.add_option("--repeat-penalty", p.repetition_penalty, "1 = off")->capture_default_str();
  sub.add_option("--frequency-penalty", p.frequency_penalty, "OpenAI style, over generated tokens; 0 = off")
      ->capture_default_str();
  sub.add_option("--presence-penalty", p.presence_penalty, "OpenAI style, over generated tokens; 0 = off")
      ->capture_default_str();
  sub.add_option("--seed", p.seed, "Seed of the sampler")->capture_default_str();
  sub.add_option("--stop", p.stop_strings, "Stop string (repeatable)");
  sub.add_option("--stop-id", p.stop_ids, "Stop token id (repeatable)");
  sub.add_option("--top-logprobs", p.top_logprobs, "Alternatives reported per token (0-20)")->capture_default_str();
}

}  // namespace troupe::cli
