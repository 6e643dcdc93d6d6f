#include "sim/cluster.h"

#include <algorithm>
#include <cctype>
#include <cmath>

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
// Figures from the vendors' data sheets: dense BF16 (no 2:4 sparsity), memory bandwidth,
// and interconnect bandwidth per direction (NVLink 4 on H100/H200 is 900 GB/s both ways).

device_spec device_preset(const std::string& name) {
  const std::string n = lower(name);
  if (n == "h100" || n == "h100-sxm") return {"h100", 3.35e12, 989e12, 450e9, 10e-6, 80e9};
  if (n == "h200" || n == "h200-sxm") return {"h200", 4.8e12, 989e12, 450e9, 10e-6, 141e9};
  if (n == "a100" || n == "a100-80gb") return {"a100", 2.039e12, 312e12, 300e9, 10e-6, 80e9};
  if (n == "l4") return {"l4", 300e9, 121e12, 32e9, 30e-6, 24e9};
  if (n == "cpu")
    throw error(error_kind::failed,
                "device 'cpu' has no published figures: use a fitted cost model (--cost-model fitted FILE)", "device");
  throw error(error_kind::failed, "unknown device '" + name + "' (expected h100, h200, a100, l4 or cpu)", "device");
}

std::vector<std::string> device_preset_names() { return {"h100", "h200", "a100", "l4", "cpu"}; }

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
  switch (t) {
    case TROUPE_F32:
      out.weight_dtype = "f32";
      break;
    case TROUPE_F16:
      out.weight_dtype = "f16";
      break;
    case TROUPE_BF16:
      out.weight_dtype = "bf16";
      break;
    case TROUPE_Q8_0:
      out.weight_dtype = "q8_0";
      break;
    case TROUPE_Q4_0:
      out.weight_dtype = "q4_0";
      break;
    default:
      throw error(error_kind::failed, path + ": unknown weight type " + std::to_string(int(t)), "model-file");
  }
  out.weight_bytes = dtype_bytes(out.weight_dtype);
  return out;
}

double dtype_bytes(const std::string& dtype) {
  const std::string d = lower(dtype);
  if (d == "f32" || d == "fp32") return 4.0;
  if (d == "bf16" || d == "f16" || d == "fp16") return 2.0;
  if (d == "fp8" || d == "int8" || d == "f8") return 1.0;
  if (d == "q8_0") return 34.0 / 32.0;  // 32 int8 + one f16 scale per block
  if (d == "q4_0") return 18.0 / 32.0;  // 32 nibbles + one f16 scale
  if (d == "q4_k") return 144.0 / 256.0;
  throw error(error_kind::failed,
              "unknown dtype '" + dtype + "' (expected f32, bf16, f16, fp8, int8, q8_0, q4_0, q4_k)", "dtype");
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
