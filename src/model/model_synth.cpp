// Synthetic models. Weights come from a counter-based generator (splitmix64 over seed,
// tensor name and row) through Box-Muller, so rows are independent and reproducible.
#include "src/model/model_synth.h"

#include <algorithm>
#include <cmath>

#include "troupe/error.h"

namespace troupe {

model_config synth_preset(const std::string& name) {
  model_config c;
  c.arch = "llama";
  c.name = "troupe-synth-" + name;
  auto shape = [&c](int64_t dim, int64_t layers, int64_t heads, int64_t kv_heads, int64_t hidden, int64_t vocab,
                    int64_t context) {
    c.dim = dim;
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.hidden_dim = hidden;
    c.vocab_size = vocab;
    c.max_seq_len = context;
  };
  if (name == "tiny") {
    shape(64, 2, 4, 2, 192, 512, 512);  // hidden 192 rather than 172: a multiple of 32 for q8_0/q4_0
  } else if (name == "110m") {
    shape(768, 12, 12, 12, 2048, 32000, 1024);  // llama2.c's stories110M
  } else if (name == "1b") {
    shape(2048, 16, 32, 8, 8192, 128256, 2048);  // Llama 3.2 1B
    c.rope_theta = 500000.0f;
    c.tied_embeddings = true;
  } else {
    throw error(error_kind::failed, "preset \"" + name + "\" (expected tiny, 110m or 1b)", "preset");
  }
  c.head_dim = c.dim / c.n_heads;
  c.rms_eps = 1e-5f;
  c.rope_neox = false;
  return c;
}

void apply_arch(model_config& c, const std::string& arch) {
  if (arch != "llama" && arch != "mistral" && arch != "qwen2" && arch != "qwen3")
    throw error(error_kind::failed, "arch \"" + arch + "\" (expected " + kSupportedArchs + ")", "arch");
  c.arch = arch;
  c.qkv_bias = arch == "qwen2";
  c.qk_norm = arch == "qwen3";
  c.rope_neox = arch == "qwen2" || arch == "qwen3";  // as their GGUF files rotate
  c.sliding_window = arch == "mistral" ? std::max<int64_t>(1, std::min<int64_t>(4096, c.max_seq_len / 2)) : 0;
  if (arch != "llama") {
    c.rope_theta = arch == "mistral" ? 10000.0f : 1000000.0f;
    c.rms_eps = 1e-6f;
  }
  c.name = "troupe-synth-" + arch;
}

model_config synth_preset(const std::string& name, const tokenizer_data& tokenizer) {
  if (tokenizer.tokens.empty()) throw error(error_kind::failed, "synth: the tokenizer has no tokens", "tokenizer");
  model_config c = synth_preset(name);
  c.vocab_size = static_cast<int64_t>(tokenizer.tokens.size());
  return c;
}

tokenizer_data synth_vocab(int64_t vocab) {
  if (vocab < 259) throw error(error_kind::failed, "vocab " + std::to_string(vocab) + " (expected at least 259)");
  tokenizer_data t;
  t.type = tokenizer_data::kind::sentencepiece_bpe;
  t.bos_id = 1;
  t.eos_id = 2;
  t.unk_id = 0;
  auto add = [&](std::string piece, float score, int32_t type) {
    t.tokens.push_back(std::move(piece));
    t.scores.push_back(score);
    t.token_types.push_back(type);
  };
  add("<unk>", 0.0f, 2);
  add("<s>", 0.0f, 3);
  add("</s>", 0.0f, 3);
  static const char hex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) add(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">", 0.0f, 6);
  // Generated pieces: letter strings in order of length ("a".."z", "aa", ...), each once bare
  // and once after SentencePiece's space mark; earlier (shorter) pieces merge first.
  const std::string space = "\xE2\x96\x81";
  for (int64_t k = 0; static_cast<int64_t>(t.tokens.size()) < vocab; ++k) {
    std::string word;
    for (int64_t n = k / 2 + 1; n > 0; n = (n - 1) / 26)
      word.insert(word.begin(), static_cast<char>('a' + (n - 1) % 26));
    add(k % 2 ? word : space + word, -static_cast<float>(k), 1);
  }
  return t;
}

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// Fills out(n) with normal(0, stddev) values from (seed, name, row).
void normal_row(uint64_t seed, uint64_t name_hash, int64_t row, float stddev, float* out, int64_t n) {
  uint64_t state = seed ^ name_hash ^ (static_cast<uint64_t>(row) * 0xd1b54a32d192ed03ull);
  for (int64_t i = 0; i < n; i += 2) {
    const double u1 = (static_cast<double>(splitmix64(state) >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
    out[i] = static_cast<float>(r * std::cos(2.0 * M_PI * u2));
    if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
  }
}

}  // namespace

std::vector<tensor_source> synth_tensors(const model_config& c, troupe_dtype dtype, uint64_t seed) {
  std::vector<tensor_source> out;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const uint64_t h = hash_name(name);
    out.push_back(tensor_source{name, rows, cols, storable_type(dtype, cols), false,
                                [seed, h, cols](int64_t r, float* o) { normal_row(seed, h, r, 0.02f, o, cols); }});
  };
  auto norm = [&](const std::string& name) {
    const int64_t n = c.dim;
    out.push_back(tensor_source{name, 1, n, TROUPE_F32, true, [n](int64_t, float* o) { std::fill(o, o + n, 1.0f); }});
  };
  // Vectors around `mean` (biases around 0, per-head norms around 1), so that leaving one
  // out or applying it to the wrong rows changes the logits.
  auto vector = [&](const std::string& name, int64_t n, float mean, float stddev) {
    const uint64_t h = hash_name(name);
    out.push_back(tensor_source{name, 1, n, TROUPE_F32, true, [seed, h, n, mean, stddev](int64_t, float* o) {
                                  normal_row(seed, h, 0, stddev, o, n);
                                  for (int64_t i = 0; i < n; ++i) o[i] += mean;
                                }});
  };
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  matrix("token_embd.weight", c.vocab_size, c.dim);
  norm("output_norm.weight");
  if (!c.tied_embeddings) matrix("output.weight", c.vocab_size, c.dim);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    norm(b + "attn_norm.weight");
    matrix(b + "attn_q.weight", q_dim, c.dim);
    matrix(b + "attn_k.weight", kv_dim, c.dim);
    matrix(b + "attn_v.weight", kv_dim, c.dim);
    matrix(b + "attn_output.weight", c.dim, q_dim);
    if (c.qkv_bias) {
      vector(b + "attn_q.bias", q_dim, 0.0f, 0.1f);
      vector(b + "attn_k.bias", kv_dim, 0.0f, 0.1f);
      vector(b + "attn_v.bias", kv_dim, 0.0f, 0.1f);
    }
    if (c.qk_norm) {
      vector(b + "attn_q_norm.weight", c.head_dim, 1.0f, 0.2f);
      vector(b + "attn_k_norm.weight", c.head_dim, 1.0f, 0.2f);
    }
    norm(b + "ffn_norm.weight");
    matrix(b + "ffn_gate.weight", c.hidden_dim, c.dim);
    matrix(b + "ffn_up.weight", c.hidden_dim, c.dim);
    matrix(b + "ffn_down.weight", c.dim, c.hidden_dim);
  }
  if (c.scaling.enabled) out.push_back(rope_freqs_tensor(c));
  return out;
}

}  // namespace troupe
