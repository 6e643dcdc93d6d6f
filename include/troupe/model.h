// A loaded model: its shape, its weights (views into memory-mapped files) and its
// tokenizer data; and the backend interface a worker drives with step plans.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "troupe/kernel_abi.h"
#include "troupe/step.h"

namespace troupe {

// Llama 3 "rope_scaling" (rope_type llama3); inactive unless `enabled`.
struct rope_scaling {
  bool enabled = false;
  float factor = 8.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position = 8192;
};

// The architectures the engine computes; every one is the Llama recipe with the options of
// model_config below: "llama" (Llama 1/2/3, 3.1 rope scaling), "mistral" (sliding-window
// attention when sliding_window > 0), "qwen2" (biases on q, k, v), "qwen3" (RMSNorm of
// each head of q and k before RoPE).
inline constexpr const char* kSupportedArchs = "llama, mistral, qwen2, qwen3";

struct model_config {
  std::string arch = "llama";
  std::string name;
  int64_t dim = 0;  // embedding width
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // grouped-query attention when < n_heads
  int64_t head_dim = 0;    // usually dim / n_heads
  int64_t hidden_dim = 0;  // SwiGLU intermediate size
  int64_t vocab_size = 0;
  int64_t max_seq_len = 0;
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  rope_scaling scaling;
  // Pairing of RoPE dimensions: false = (2i, 2i+1) as in GGUF and llama2.c files;
  // true = (i, i + head_dim/2) as in Hugging Face checkpoints (their q/k are not permuted).
  bool rope_neox = false;
  bool tied_embeddings = false;  // output head reuses tok_embd
  bool qkv_bias = false;         // q, k and v projections add a bias (Qwen2, Llama with attention_bias)
  bool qk_norm = false;          // q and k are RMS-normed per head (weights of head_dim) before RoPE (Qwen3)
  // Sliding-window attention: the query at position p attends keys at positions
  // p - sliding_window + 1 .. p; 0 = full causal attention.
  int64_t sliding_window = 0;
};

// A weight matrix of `rows` rows of `cols` elements, row-major, in `dtype`:
// matmul weights are (out_features, in_features); norms are (1, dim) f32.
struct tensor_view {
  std::string name;  // as in the file, for errors and debugging
  const void* data = nullptr;
  troupe_dtype dtype = TROUPE_F32;
  int64_t rows = 0;
  int64_t cols = 0;
};

struct layer_weights {
  tensor_view attn_norm;             // (1, dim)
  tensor_view wq, wk, wv, wo;        // (n_heads*head_dim, dim), (n_kv*head_dim, dim) x2, (dim, n_heads*head_dim)
  tensor_view bq, bk, bv;            // with qkv_bias: (1, n_heads*head_dim), (1, n_kv*head_dim) x2, f32
  tensor_view q_norm, k_norm;        // with qk_norm: (1, head_dim) f32 each
  tensor_view ffn_norm;              // (1, dim)
  tensor_view w_gate, w_up, w_down;  // (hidden, dim) x2, (dim, hidden)
};

struct model_weights {
  tensor_view tok_embd;  // (vocab, dim)
  std::vector<layer_weights> layers;
  tensor_view output_norm;  // (1, dim)
  tensor_view output;       // (vocab, dim); same view as tok_embd when tied
};

// What a tokenizer is built from; filled by each loader from its file format.
struct tokenizer_data {
  enum class kind { sentencepiece_bpe, byte_level_bpe } type = kind::sentencepiece_bpe;
  std::vector<std::string> tokens;   // piece text per id (SentencePiece uses U+2581 for spaces)
  std::vector<float> scores;         // merge priority per id (SentencePiece BPE), may be empty
  std::vector<int32_t> token_types;  // GGUF token types (1 normal, 2 unknown, 3 control, 6 byte), may be empty
  std::vector<std::string> merges;   // "a b" ranked merges (byte-level BPE and HF BPE), may be empty
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  std::vector<int32_t> extra_eos_ids;  // more ids that end generation (holds eot_id when it is not eos_id)
  int32_t eot_id = -1;                 // ends a chat turn: Llama 3's <|eot_id|>, Qwen's <|im_end|>; may be eos_id
  int32_t unk_id = -1;
  bool add_bos = true;
  bool add_space_prefix = true;  // SentencePiece: prepend a space to the text
  std::string pre;               // byte-level pre-tokenizer name (GGUF tokenizer.ggml.pre): "llama-bpe", "qwen2"
  // For a gateway that renders chats: the Jinja template (tokenizer_config.json's chat_template,
  // GGUF tokenizer.chat_template; empty when none) and the texts it knows as bos_token and
  // eos_token (empty when there is none, e.g. Qwen3's bos).
  std::string chat_template;
  std::string bos_token;
  std::string eos_token;
};

// A model file (or directory) opened for reading. Owns its memory maps and any buffer it
// had to convert; every tensor_view stays valid for its lifetime. A resource type.
class model_file {
 public:
  virtual ~model_file() = default;
  virtual const std::string& path() const = 0;
  virtual const model_config& config() const = 0;
  virtual const model_weights& weights() const = 0;
  virtual const tokenizer_data& tokenizer() const = 0;
  virtual std::string format() const = 0;  // "gguf v3", "safetensors", "llama2.c"
};

// Opens a GGUF file, a Hugging Face directory (config.json + safetensors + tokenizer.json)
// or a llama2.c checkpoint (.bin; its tokenizer is `tokenizer_path` or tokenizer.bin /
// tok*.bin beside it). Throws troupe::error naming the file, the key or tensor, and what
// was expected.
std::unique_ptr<model_file> open_model(const std::string& path, const std::string& tokenizer_path = {});

// A worker's execution engine for one model replica (CPU or CUDA): owns the physical KV
// pool and executes step plans. Makes no scheduling decision.
class worker_backend {
 public:
  virtual ~worker_backend() = default;
  virtual step_result step(const step_plan& plan) = 0;
  virtual int64_t kv_blocks() const = 0;     // blocks in the pool
  virtual int32_t block_size() const = 0;    // tokens per block
  virtual std::string describe() const = 0;  // "cpu (avx512, 2 threads)"
  // Copies KV block `src` onto `dst` in every layer (prefix sharing copy-on-write).
  virtual void copy_block(int32_t src, int32_t dst) = 0;
  // Blocks in the host pool that step_plan::swap_out / swap_in name; 0 = no swap support.
  virtual int64_t host_blocks() const { return 0; }
  // Most tokens one step plan may carry (what its scratch buffers hold); 0 = no bound. The
  // worker reports it at registration and the scheduler plans within it.
  virtual int64_t max_step_tokens() const { return 0; }
  // True when step() takes plans whose work may be diffs (seq_work::diff) and expands them
  // itself: a tensor-parallel leader, which relays the diffs and has each rank expand them.
  // worker_core expands them before any other backend sees a plan.
  virtual bool expands_plan_diffs() const { return false; }
};

}  // namespace troupe
