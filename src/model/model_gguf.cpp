// Llama models from GGUF files: the llama.* hyperparameters, the blk.N.* tensors and the
// tokenizer.ggml.* vocabulary. Matrices are views into the map; norms are converted to
// f32 when stored otherwise.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "src/model/gguf.h"
#include "src/model/model_loaders.h"
#include "src/model/tokenizer_files.h"
#include "troupe/error.h"

namespace troupe {

namespace {

// ---- tokenizer ------------------------------------------------------------------

int32_t token_id(const gguf::file& f, const std::string& key, size_t n_tokens) {
  const gguf::value* v = f.find(key);
  if (!v) return -1;
  if (!gguf::is_integer(v->type)) f.fail("key " + key + " is not an integer (expected a token id)", key);
  if (v->type == gguf::value_type::u32 && static_cast<uint32_t>(v->i) == 0xffffffffu) return -1;  // "none"
  if (v->i < 0 || static_cast<uint64_t>(v->i) >= n_tokens)
    f.fail(
        "key " + key + " is " + std::to_string(v->i) + " (expected a token id below " + std::to_string(n_tokens) + ")",
        key);
  return static_cast<int32_t>(v->i);
}

tokenizer_data read_tokenizer(const gguf::file& f) {
  tokenizer_data t;
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama") {
    t.type = tokenizer_data::kind::sentencepiece_bpe;
  } else if (model == "gpt2") {
    t.type = tokenizer_data::kind::byte_level_bpe;
  } else {
    throw error(error_kind::unimplemented,
                f.path() + ": key tokenizer.ggml.model is \"" + model + "\" (expected \"llama\" or \"gpt2\")",
                "tokenizer.ggml.model");
  }
  t.tokens = f.get_array("tokenizer.ggml.tokens", "string").strs;
  const size_t n = t.tokens.size();
  if (n == 0) f.fail("key tokenizer.ggml.tokens is empty (expected the vocabulary)", "tokenizer.ggml.tokens");
  if (f.find("tokenizer.ggml.scores")) {
    const auto& s = f.get_array("tokenizer.ggml.scores", "float").floats;
    if (s.size() != n)
      f.fail("key tokenizer.ggml.scores has " + std::to_string(s.size()) + " entries, expected " + std::to_string(n),
             "tokenizer.ggml.scores");
    t.scores.assign(s.begin(), s.end());
  }
  if (f.find("tokenizer.ggml.token_type")) {
    const auto& s = f.get_array("tokenizer.ggml.token_type", "integer").ints;
    if (s.size() != n)
      f.fail(
          "key tokenizer.ggml.token_type has " + std::to_string(s.size()) + " entries, expected " + std::to_string(n),
          "tokenizer.ggml.token_type");
    t.token_types.assign(s.begin(), s.end());
  }
  if (f.find("tokenizer.ggml.merges")) t.merges = f.get_array("tokenizer.ggml.merges", "string").strs;
  t.bos_id = token_id(f, "tokenizer.ggml.bos_token_id", n);
  t.eos_id = token_id(f, "tokenizer.ggml.eos_token_id", n);
  t.unk_id = token_id(f, "tokenizer.ggml.unknown_token_id", n);
  t.pre = f.opt_string("tokenizer.ggml.pre").value_or("");
  const bool spm = t.type == tokenizer_data::kind::sentencepiece_bpe;
  t.add_bos = f.opt_bool("tokenizer.ggml.add_bos_token").value_or(spm || t.pre == "llama-bpe");
  t.add_space_prefix = f.opt_bool("tokenizer.ggml.add_space_prefix").value_or(spm);
  // Llama 3 chat ends a turn with <|eot_id|>, not with its eos <|end_of_text|>; files that do
  // not say so get it by name.
  t.eot_id = token_id(f, "tokenizer.ggml.eot_token_id", n);
  if (const int32_t eom = token_id(f, "tokenizer.ggml.eom_token_id", n); eom >= 0 && eom != t.eos_id)
    t.extra_eos_ids.push_back(eom);
  t.chat_template = f.opt_string("tokenizer.chat_template").value_or("");
  complete_stop_tokens(t);
  return t;
}

// ---- hyperparameters --------------------------------------------------------------

int64_t get_dim(const gguf::file& f, const std::string& key) {
  const uint64_t v = f.get_uint(key);
  if (v == 0 || v > (uint64_t{1} << 31)) f.fail("key " + key + " is " + std::to_string(v) + " (expected 1..2^31)", key);
  return static_cast<int64_t>(v);
}

void read_rope_scaling(const gguf::file& f, const std::string& arch, model_config& c) {
  const std::string p = arch + ".rope.scaling.";
  const std::string type = f.opt_string(p + "type").value_or("");
  const auto low = f.opt_float(p + "low_freq_factor"), high = f.opt_float(p + "high_freq_factor");
  if (type == "llama3" || (low && high)) {
    c.scaling.enabled = true;
    c.scaling.factor = static_cast<float>(f.opt_float(p + "factor").value_or(c.scaling.factor));
    c.scaling.low_freq_factor = static_cast<float>(low.value_or(c.scaling.low_freq_factor));
    c.scaling.high_freq_factor = static_cast<float>(high.value_or(c.scaling.high_freq_factor));
    c.scaling.original_max_position =
        static_cast<int64_t>(f.opt_uint(p + "original_context_length").value_or(c.scaling.original_max_position));
    if (!(c.scaling.factor > 0.0f) || !(c.scaling.high_freq_factor > c.scaling.low_freq_factor))
      f.fail("key " + p + "*: llama3 rope scaling needs factor > 0 and high_freq_factor > low_freq_factor",
             p + "factor");
    return;
  }
  if (!type.empty() && type != "none")
    throw error(error_kind::unimplemented,
                f.path() + ": key " + p + "type is \"" + type + "\" (supported: none, llama3)", p + "type");
  // Llama 3.1+ GGUFs from llama.cpp carry the scaling only as per-frequency divisors:
  // recover the parameters, assuming Llama 3's low/high factors and original context, and
  // insist that they reproduce the stored divisors.
  const gguf::tensor_info* rf = f.find_tensor("rope_freqs.weight");
  if (!rf) return;
  if (rf->dtype != TROUPE_F32 || rf->ne.size() != 1 || rf->ne[0] != c.head_dim / 2)
    f.fail("tensor rope_freqs.weight: expected f32 of shape (" + std::to_string(c.head_dim / 2) + ")",
           "rope_freqs.weight");
  std::vector<float> stored(static_cast<size_t>(c.head_dim / 2));
  std::memcpy(stored.data(), rf->data, stored.size() * sizeof(float));
  const float max_factor = *std::max_element(stored.begin(), stored.end());
  if (max_factor <= 1.0f) return;  // all ones: no scaling
  c.scaling.enabled = true;
  c.scaling.factor = max_factor;
  const std::vector<float> expected = llama3_rope_factors(c);
  for (size_t i = 0; i < stored.size(); ++i)
    if (std::fabs(expected[i] - stored[i]) > 1e-3f * stored[i])
      throw error(error_kind::unimplemented,
                  f.path() + ": tensor rope_freqs.weight does not match Llama 3 rope scaling (factor " +
                      std::to_string(max_factor) + ", low 1, high 4, original context 8192) at index " +
                      std::to_string(i) + "; set " + p + "* metadata",
                  "rope_freqs.weight");
}

// ---- tensors ------------------------------------------------------------------------

// An empty view when the tensor is absent: validate_model() reports it with its expected shape.
tensor_view view(const gguf::file& f, const std::string& name) {
  tensor_view v;
  v.name = name;
  const gguf::tensor_info* t = f.find_tensor(name);
  if (!t) return v;
  if (t->ne.size() > 2)
    f.fail("tensor " + name + " has " + std::to_string(t->ne.size()) + " dimensions (expected 1 or 2)", name);
  v.data = t->data;
  v.dtype = t->dtype;
  v.rows = t->rows();
  v.cols = t->cols();
  return v;
}

void norm_view(loaded_model& m, const gguf::file& f, tensor_view& out, const std::string& name) {
  out = view(f, name);
  if (out.dtype != TROUPE_F32) m.convert_to_f32(out);
}

}  // namespace

std::unique_ptr<model_file> open_gguf(const std::string& path) {
  auto f = std::make_shared<const gguf::file>(path);
  auto m = std::make_unique<loaded_model>();
  m->path_ = path;
  m->format_ = "gguf v" + std::to_string(f->version());
  m->resources.push_back(f);

  // Mistral's GGUF files are "llama" files (with a sliding window key where the model has one).
  const std::string arch = f->get_string("general.architecture");
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3")
    throw error(error_kind::unimplemented,
                path + ": key general.architecture is \"" + arch +
                    "\" (supported: llama, qwen2, qwen3; Mistral files are \"llama\")",
                "general.architecture");
  model_config& c = m->config_;
  c.arch = arch;
  c.name = f->opt_string("general.name").value_or("");
  c.dim = get_dim(*f, arch + ".embedding_length");
  c.n_layers = get_dim(*f, arch + ".block_count");
  c.n_heads = get_dim(*f, arch + ".attention.head_count");
  c.n_kv_heads =
      f->find(arch + ".attention.head_count_kv") ? get_dim(*f, arch + ".attention.head_count_kv") : c.n_heads;
  c.hidden_dim = get_dim(*f, arch + ".feed_forward_length");
  c.max_seq_len = get_dim(*f, arch + ".context_length");
  c.head_dim =
      f->find(arch + ".attention.key_length") ? get_dim(*f, arch + ".attention.key_length") : c.dim / c.n_heads;
  c.rms_eps = static_cast<float>(f->opt_float(arch + ".attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_theta = static_cast<float>(f->opt_float(arch + ".rope.freq_base").value_or(10000.0));
  // llama.cpp's converter permutes Llama's q and k rows into interleaved pairs, and leaves
  // Qwen's as Hugging Face has them (rotated in halves, llama.cpp's "neox" RoPE).
  c.rope_neox = arch != "llama";
  c.qkv_bias = arch == "qwen2" || f->find_tensor("blk.0.attn_q.bias");  // a Llama with attention_bias too
  c.qk_norm = arch == "qwen3";
  if (auto sw = f->opt_uint(arch + ".attention.sliding_window"); sw && *sw > 0) {
    c.sliding_window = static_cast<int64_t>(*sw);
    if (arch == "llama") c.arch = "mistral";
  }
  if (auto rot = f->opt_uint(arch + ".rope.dimension_count"); rot && static_cast<int64_t>(*rot) != c.head_dim)
    throw error(error_kind::unimplemented,
                path + ": key " + arch + ".rope.dimension_count is " + std::to_string(*rot) +
                    " (partial rotary embeddings are not supported; expected head_dim " + std::to_string(c.head_dim) +
                    ")",
                arch + ".rope.dimension_count");
  read_rope_scaling(*f, arch, c);

  model_weights& w = m->weights_;
  w.tok_embd = view(*f, "token_embd.weight");
  if (!w.tok_embd.data)
    f->fail("missing tensor token_embd.weight (expected shape (vocab, " + std::to_string(c.dim) + "))",
            "token_embd.weight");
  c.vocab_size = w.tok_embd.rows;
  if (auto nv = f->opt_uint(arch + ".vocab_size"); nv && static_cast<int64_t>(*nv) != c.vocab_size)
    f->fail("key " + arch + ".vocab_size is " + std::to_string(*nv) + " but token_embd.weight has " +
                std::to_string(c.vocab_size) + " rows",
            arch + ".vocab_size");
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    layer_weights& l = w.layers[i];
    norm_view(*m, *f, l.attn_norm, b + "attn_norm.weight");
    l.wq = view(*f, b + "attn_q.weight");
    l.wk = view(*f, b + "attn_k.weight");
    l.wv = view(*f, b + "attn_v.weight");
    l.wo = view(*f, b + "attn_output.weight");
    if (c.qkv_bias) {
      norm_view(*m, *f, l.bq, b + "attn_q.bias");
      norm_view(*m, *f, l.bk, b + "attn_k.bias");
      norm_view(*m, *f, l.bv, b + "attn_v.bias");
    }
    if (c.qk_norm) {
      norm_view(*m, *f, l.q_norm, b + "attn_q_norm.weight");
      norm_view(*m, *f, l.k_norm, b + "attn_k_norm.weight");
    }
    for (const char* unsupported : {"attn_output.bias", "ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"})
      if (f->find_tensor(b + unsupported))
        throw error(error_kind::unimplemented,
                    path + ": tensor " + b + unsupported +
                        ": biases on the output and feed-forward projections are not supported (only q, k, v)",
                    b + unsupported);
    norm_view(*m, *f, l.ffn_norm, b + "ffn_norm.weight");
    l.w_gate = view(*f, b + "ffn_gate.weight");
    l.w_up = view(*f, b + "ffn_up.weight");
    l.w_down = view(*f, b + "ffn_down.weight");
  }
  norm_view(*m, *f, w.output_norm, "output_norm.weight");
  w.output = view(*f, "output.weight");
  if (!w.output.data) {
    c.tied_embeddings = true;
    w.output = w.tok_embd;
  }
  validate_model(path, c, w);
  m->tokenizer_ = read_tokenizer(*f);
  validate_tokenizer(path, m->config_, m->tokenizer_);
  return m;
}

}  // namespace troupe
