// The checks and conversions shared by every model format.
#include <cmath>
#include <string>

#include "kernels/ref/dtype.h"
#include "src/model/model_loaders.h"
#include "troupe/error.h"

namespace troupe {

void loaded_model::convert_to_f32(tensor_view& t) {
  const int64_t n = t.rows * t.cols;
  auto buf = std::make_unique<float[]>(static_cast<size_t>(n));
  const int64_t row_bytes = kern::row_bytes(t.dtype, t.cols);
  for (int64_t r = 0; r < t.rows; ++r)
    kern::dequantize_row(t.dtype, static_cast<const uint8_t*>(t.data) + r * row_bytes, buf.get() + r * t.cols, t.cols);
  t.data = buf.get();
  t.dtype = TROUPE_F32;
  buffers.push_back(std::move(buf));
}

namespace {

std::string shape(int64_t rows, int64_t cols) {
  std::string s = "(";
  s += std::to_string(rows) + ", " + std::to_string(cols) + ")";
  return s;
}

void check(const std::string& path, const tensor_view& t, int64_t rows, int64_t cols, bool must_be_f32) {
  if (!t.data)
    throw error(error_kind::failed, path + ": missing tensor " + t.name + " (expected shape " + shape(rows, cols) + ")",
                t.name);
  if (t.rows != rows || t.cols != cols)
    throw error(error_kind::failed,
                path + ": tensor " + t.name + " has shape " + shape(t.rows, t.cols) + ", expected " +
                    shape(rows, cols) + " (rows, cols)",
                t.name);
  if (must_be_f32 && t.dtype != TROUPE_F32)
    throw error(error_kind::failed, path + ": tensor " + t.name + " must be f32 for the model", t.name);
}

void positive(const std::string& path, const char* what, int64_t v) {
  if (v <= 0 || v > (int64_t{1} << 31))
    throw error(error_kind::failed, path + ": " + what + " is " + std::to_string(v) + " (expected 1..2^31)", what);
}

}  // namespace

void validate_model(const std::string& path, const model_config& c, const model_weights& w) {
  positive(path, "dim", c.dim);
  positive(path, "n_layers", c.n_layers);
  positive(path, "n_heads", c.n_heads);
  positive(path, "n_kv_heads", c.n_kv_heads);
  positive(path, "head_dim", c.head_dim);
  positive(path, "hidden_dim", c.hidden_dim);
  positive(path, "vocab_size", c.vocab_size);
  positive(path, "max_seq_len", c.max_seq_len);
  if (c.n_heads % c.n_kv_heads != 0)
    throw error(error_kind::failed,
                path + ": n_heads " + std::to_string(c.n_heads) + " is not a multiple of n_kv_heads " +
                    std::to_string(c.n_kv_heads),
                "n_kv_heads");
  if (c.head_dim % 2 != 0)
    throw error(error_kind::failed, path + ": head_dim " + std::to_string(c.head_dim) + " (expected even)", "head_dim");
  if (!(c.rms_eps > 0.0f) || !(c.rope_theta > 0.0f))
    throw error(error_kind::failed, path + ": rms_eps and rope_theta must be positive", "rms_eps");
  if (c.arch != "llama" && c.arch != "mistral" && c.arch != "qwen2" && c.arch != "qwen3")
    throw error(error_kind::unimplemented,
                path + ": architecture \"" + c.arch + "\" (supported: " + kSupportedArchs + ")", "architecture");
  if (c.sliding_window < 0)
    throw error(error_kind::failed,
                path + ": sliding_window is " + std::to_string(c.sliding_window) + " (expected 0 = none, or > 0)",
                "sliding_window");
  if (static_cast<int64_t>(w.layers.size()) != c.n_layers)
    throw error(
        error_kind::failed,
        path + ": " + std::to_string(w.layers.size()) + " layers of weights, expected " + std::to_string(c.n_layers),
        "n_layers");
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  check(path, w.tok_embd, c.vocab_size, c.dim, false);
  for (const layer_weights& l : w.layers) {
    check(path, l.attn_norm, 1, c.dim, true);
    check(path, l.wq, q_dim, c.dim, false);
    check(path, l.wk, kv_dim, c.dim, false);
    check(path, l.wv, kv_dim, c.dim, false);
    check(path, l.wo, c.dim, q_dim, false);
    if (c.qkv_bias) {
      check(path, l.bq, 1, q_dim, true);
      check(path, l.bk, 1, kv_dim, true);
      check(path, l.bv, 1, kv_dim, true);
    }
    if (c.qk_norm) {
      check(path, l.q_norm, 1, c.head_dim, true);
      check(path, l.k_norm, 1, c.head_dim, true);
    }
    check(path, l.ffn_norm, 1, c.dim, true);
    check(path, l.w_gate, c.hidden_dim, c.dim, false);
    check(path, l.w_up, c.hidden_dim, c.dim, false);
    check(path, l.w_down, c.dim, c.hidden_dim, false);
  }
  check(path, w.output_norm, 1, c.dim, true);
  check(path, w.output, c.vocab_size, c.dim, false);
}

void validate_tokenizer(const std::string& path, const model_config& c, const tokenizer_data& t) {
  if (t.tokens.empty()) throw error(error_kind::failed, path + ": the tokenizer has no tokens", "tokenizer");
  if (static_cast<int64_t>(t.tokens.size()) > c.vocab_size)
    throw error(error_kind::failed,
                path + ": the tokenizer has " + std::to_string(t.tokens.size()) +
                    " tokens, more than the embedding table's " + std::to_string(c.vocab_size) + " rows",
                "tokenizer");
  std::vector<int32_t> ids = {t.bos_id, t.eos_id, t.unk_id};
  ids.insert(ids.end(), t.extra_eos_ids.begin(), t.extra_eos_ids.end());
  for (int32_t id : ids)
    if (id >= static_cast<int32_t>(t.tokens.size()))
      throw error(error_kind::failed,
                  path + ": special token id " + std::to_string(id) + " is past the tokenizer's " +
                      std::to_string(t.tokens.size()) + " tokens",
                  "tokenizer");
}

std::vector<float> llama3_rope_factors(const model_config& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> f(static_cast<size_t>(half), 1.0f);
  if (!c.scaling.enabled) return f;
  const rope_scaling& s = c.scaling;
  const double pi = 3.14159265358979323846;
  const double low_wavelen = static_cast<double>(s.original_max_position) / s.low_freq_factor;
  const double high_wavelen = static_cast<double>(s.original_max_position) / s.high_freq_factor;
  for (int64_t i = 0; i < half; ++i) {
    const double freq = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / static_cast<double>(c.head_dim));
    const double wavelen = 2.0 * pi / freq;
    if (wavelen < high_wavelen) {
      f[i] = 1.0f;
    } else if (wavelen > low_wavelen) {
      f[i] = s.factor;
    } else {  // smooth blend between the scaled and unscaled frequency
      const double smooth =
          (s.original_max_position / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f[i] = static_cast<float>(1.0 / ((1.0 - smooth) / s.factor + smooth));
    }
  }
  return f;
}

}  // namespace troupe
