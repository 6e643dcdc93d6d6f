// What the simulator simulates: devices with their published figures, a model's shape,
// the dtypes it runs in, and how many devices form one tensor-parallel replica. From
// these follow the weight bytes per device and the KV cache each replica can hold.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace troupe::sim {

// ---- devices ---------------------------------------------------------------------

struct device_spec {
  std::string name;
  double mem_bw = 0;        // bytes/s of device memory (HBM, GDDR or DRAM)
  double peak_flops = 0;    // dense BF16 FLOP/s (no sparsity)
  double link_bw = 0;       // bytes/s per direction between devices of one replica
  double link_latency = 0;  // seconds per all-reduce hop chain (launch + sync)
  double memory_bytes = 0;  // device memory
};

// "h100", "h200", "a100", "l4". "cpu" has no published figures: it comes from a
// fitted profile (see cost_model.h); asking for it here throws troupe::error.
device_spec device_preset(const std::string& name);
std::vector<std::string> device_preset_names();

// ---- models ----------------------------------------------------------------------

struct model_shape {
  std::string name;
  int64_t n_layers = 0;
  int64_t dim = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t hidden_dim = 0;  // SwiGLU intermediate size
  int64_t vocab_size = 0;
  bool tied_embeddings = false;

  // Parameters touched per token: every layer's matrices plus the output head (the
  // embedding lookup reads one row, so it is left out).
  double matmul_params() const;
  // Every parameter, as stored (embedding + layers + head unless tied + norms).
  double total_params() const;
  // K and V of one token over all layers, in elements.
  double kv_elems_per_token() const { return 2.0 * n_layers * n_kv_heads * head_dim; }
};

// "llama-3-8b", "llama-3-70b", "llama-3.2-1b", "llama-2-7b" (case-insensitive).
model_shape model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

// The shape of a model file (GGUF, Hugging Face directory or llama2.c checkpoint, read
// through troupe::open_model) and the bytes per element of its matmul weights as stored.
struct model_file_shape {
  model_shape shape;
  double weight_bytes = 2.0;
  std::string weight_dtype;
};
model_file_shape read_model_file(const std::string& path);

// Bytes per element of a storage type: "f32" 4, "bf16"/"f16" 2, "fp8"/"int8" 1,
// "q8_0" 34/32, "q4_0" 18/32, "q4_k" 144/256.
double dtype_bytes(const std::string& dtype);

// ---- the cluster -----------------------------------------------------------------

struct cluster_spec {
  device_spec device;
  model_shape model;
  int32_t n_devices = 1;
  int32_t tp = 1;                 // devices per replica
  double weight_bytes = 2.0;      // per element
  double kv_bytes = 2.0;          // per element
  double mem_utilization = 0.90;  // share of device memory the server may use
  double reserve_bytes = 2e9;     // per device: activations, workspace, CUDA context
  int32_t block_size = 16;        // tokens per KV block
  int32_t max_batch = 256;        // sequences per step
  // The control loop around each step: worker -> scheduler (result), planning, scheduler
  // -> worker (next plan). Seconds per step, measured on the worker as the gap between
  // sending a result and receiving the next plan (`troupe sim fit` fits it from a step log).
  double loop_latency = 0;

  int32_t replicas() const { return n_devices / tp; }
  double weight_bytes_per_device() const;
  double kv_bytes_per_token() const;  // whole replica (all tp shards together)
  // KV tokens one replica holds: tp devices' usable memory minus weights and reserve.
  int64_t kv_tokens_per_replica() const;
  int64_t kv_blocks_per_replica() const { return kv_tokens_per_replica() / block_size; }
  // Seconds between the starts of two back-to-back steps on one replica, given the step's
  // compute time and the steps the scheduler keeps in flight per replica (the policy's
  // sched::policy_config::max_inflight_steps, the one place it is set): compute +
  // loop_latency when synchronous (1: the loop waits for the result), max(compute,
  // loop_latency) when pipelined (>= 2: the loop overlaps the compute).
  double step_period(double compute, int32_t max_inflight_steps) const;
  // Throws troupe::error naming the field when the cluster cannot work at all
  // (tp not dividing the devices or the heads, weights not fitting).
  void validate() const;
};

}  // namespace troupe::sim
