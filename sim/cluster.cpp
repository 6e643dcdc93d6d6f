#include "sim/cluster.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "kernels/dtypes.h"
#include "kernels/gpu_datasheet.h"
#include "troupe/error.h"
#include "troupe/model.h"

namespace troupe::sim {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

// ---- devices ---------------------------------------------------------------------
// The published figures of kernels/gpu_datasheet.h, in the simulator's units (bytes/s,
// FLOP/s, bytes): dense BF16 (no 2:4 sparsity), memory and interconnect bandwidth.

device_spec device_preset(const std::string& name) {
  const std::string n = lower(name);
  if (const kern::gpu_datasheet* g = kern::find_gpu_by_preset(n)) {
    const std::string_view first = g->presets.substr(0, g->presets.find(' '));  // "h100" for "h100-sxm"
    return {std::string(first), g->mem_gb_s * 1e9, g->fp16_tflop_s * 1e12,
            g->link_gb_s * 1e9, g->link_latency_s, g->memory_gb * 1e9};
  }
  if (n == "cpu")
    throw error(error_kind::failed,
                "device 'cpu' has no published figures: use a fitted cost model (--cost-model fitted FILE)", "device");
  const auto names = device_preset_names();
  std::string expected;
  for (size_t i = 0; i < names.size(); ++i) expected += (i == 0 ? "" : i + 1 < names.size() ? ", " : " or ") + names[i];
  throw error(error_kind::failed, "unknown device '" + name + "' (expected " + expected + ")", "device");
}

std::vector<std::string> device_preset_names() {
  std::vector<std::string> out;
  for (const kern::gpu_datasheet& g : kern::gpu_datasheets())
    if (!g.presets.empty()) out.emplace_back(g.presets.substr(0, g.presets.find(' ')));
  out.push_back("cpu");  // from a fitted profile, not a datasheet
  return out;
}

// ---- models ----------------------------------------------------------------------

double model_shape::matmul_params() const {
  const double q = double(n_heads) * head_dim * dim;
  const double kv = 2.0 * double(n_kv_heads) * head_dim * dim;
  const double o = double(dim) * n_heads * head_dim;
  const double ffn = 3.0 * double(dim) * hidden_dim;
  return n_layers * (q + kv + o + ffn) + double(vocab_size) * dim;
}

double model_shape::total_params() const {
  const double embd = double(vocab_size) * dim;
  const double norms = (2.0 * n_layers + 1) * dim;
  return matmul_params() + (tied_embeddings ? 0.0 : embd) + norms;
}

// Shapes from the models' config.json files.
model_shape model_preset(const std::string& name) {
  const std::string n = lower(name);
  if (n == "llama-3-8b" || n == "llama3-8b" || n == "llama-3.1-8b")
    return {"llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, false};
  if (n == "llama-3-70b" || n == "llama3-70b" || n == "llama-3.1-70b")
    return {"llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256, false};
  if (n == "llama-3.2-1b" || n == "llama3.2-1b") return {"llama-3.2-1b", 16, 2048, 32, 8, 64, 8192, 128256, true};
  if (n == "llama-2-7b" || n == "llama2-7b") return {"llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000, false};
  throw error(error_kind::failed,
              "unknown model preset '" + name + "' (expected llama-3-8b, llama-3-70b, llama-3.2-1b or llama-2-7b)",
              "model");
}

std::vector<std::string> model_preset_names() { return {"llama-3-8b", "llama-3-70b", "llama-3.2-1b", "llama-2-7b"}; }

model_file_shape read_model_file(const std::string& path) {
  const auto file = open_model(path);
  const model_config& c = file->config();
  model_file_shape out;
  out.shape = {c.name.empty() ? path : c.name,
               c.n_layers,
               c.dim,
               c.n_heads,
               c.n_kv_heads,
               c.head_dim > 0 ? c.head_dim : c.dim / std::max<int64_t>(c.n_heads, 1),
               c.hidden_dim,
               c.vocab_size,
               c.tied_embeddings};
  const auto& w = file->weights();
  const troupe_dtype t = w.layers.empty() ? TROUPE_F32 : w.layers[0].wq.dtype;
  const kern::dtype_info* d = kern::find_dtype(t);
  if (!d || !d->runs)
    throw error(error_kind::failed, path + ": unknown weight type " + std::to_string(int(t)), "model-file");
  out.weight_dtype = d->name;
  out.weight_bytes = kern::bytes_per_element(*d);
  return out;
}

double dtype_bytes(const std::string& dtype) {
  const kern::dtype_info* d = kern::find_dtype(lower(dtype), /*aliases=*/true);
  if (d && d->priced) return kern::bytes_per_element(*d);
  std::string expected;
  for (const auto& n : kern::priced_dtype_names()) expected += (expected.empty() ? "" : ", ") + n;
  throw error(error_kind::failed, "unknown dtype '" + dtype + "' (expected " + expected + ")", "dtype");
}

// ---- the cluster -----------------------------------------------------------------

double cluster_spec::weight_bytes_per_device() const { return model.total_params() * weight_bytes / tp; }

double cluster_spec::kv_bytes_per_token() const { return model.kv_elems_per_token() * kv_bytes; }

int64_t cluster_spec::kv_tokens_per_replica() const {
  const double usable = tp * (device.memory_bytes * mem_utilization - reserve_bytes - weight_bytes_per_device());
  if (usable <= 0) return 0;
  return static_cast<int64_t>(std::floor(usable / kv_bytes_per_token()));
}

double cluster_spec::step_period(double compute, int32_t max_inflight_steps) const {
  return max_inflight_steps > 1 ? std::max(compute, loop_latency) : compute + loop_latency;
}

void cluster_spec::validate() const {
  if (!(loop_latency >= 0))
    throw error(error_kind::failed, "loop latency must be >= 0 seconds, got " + std::to_string(loop_latency),
                "loop_latency");
  if (tp < 1) throw error(error_kind::failed, "tensor-parallel size must be >= 1, got " + std::to_string(tp), "tp");
  if (n_devices < tp || n_devices % tp != 0)
    throw error(error_kind::failed,
                "device count " + std::to_string(n_devices) + " is not a multiple of tp " + std::to_string(tp),
                "count");
  if (model.n_kv_heads % tp != 0 && tp % model.n_kv_heads != 0)
    throw error(
        error_kind::failed,
        "tp " + std::to_string(tp) + " does not divide the model's " + std::to_string(model.n_kv_heads) + " KV heads",
        "tp");
  if (block_size < 1) throw error(error_kind::failed, "block size must be >= 1", "block_size");
  if (kv_blocks_per_replica() < 1)
    throw error(error_kind::failed,
                model.name + " does not fit on " + std::to_string(tp) + " x " + device.name + ": weights need " +
                    std::to_string(weight_bytes_per_device() / 1e9) + " GB per device",
                "tp");
}

}  // namespace troupe::sim
