// Megatron-style tensor-parallel sharding of a Llama model, as views (no copy) where the
// shard is contiguous and as owned copies where it is not:
//   attention: wq/wk/wv split by output rows (heads), wo split by input columns -> all-reduce
//   MLP:       w_gate/w_up split by output rows (intermediate), w_down by input columns -> all-reduce
//   token embedding, norms and the output head: replicated on every rank.
// KV heads are divided among ranks; with fewer KV heads than ranks each KV head is
// replicated on tp / n_kv_heads consecutive ranks.
#pragma once
#include <memory>
#include <vector>

#include "troupe/model.h"

namespace troupe {
class communicator;
}

namespace troupe::tp {

struct shard {
  int rank = 0;
  int size = 1;
  model_config config;    // n_heads, n_kv_heads and hidden_dim are this rank's
  model_weights weights;  // views into the model file or into `owned`
  std::vector<std::unique_ptr<char[]>> owned;
  int64_t first_head = 0;     // global index of this rank's first query head
  int64_t first_kv_head = 0;  // global index of this rank's first KV head
  int64_t bytes_owned = 0;
};

// Throws troupe::error(failed) naming the dimension when the model cannot be split `size`
// ways (heads, KV heads or intermediate size not divisible; a quantized column split that
// is not block-aligned).
shard make_shard(const model_config& cfg, const model_weights& w, int rank, int size);

// What a backend (CPU or CUDA) is given for tensor parallelism: its shard and its group's
// communicator, both or neither, for the same rank and size. Throws troupe::error(failed)
// otherwise, naming `backend` ("cpu backend", "cuda backend").
void check_shard_and_comm(const shard* s, const communicator* comm, const std::string& backend);

// The config and weights a backend runs: the shard's when given, else the whole model's.
inline const model_config& config_of(const model_file& m, const shard* s) { return s ? s->config : m.config(); }
inline const model_weights& weights_of(const model_file& m, const shard* s) { return s ? s->weights : m.weights(); }

}  // namespace troupe::tp
