// GGUF export: metadata in llama.cpp's key names, tensors streamed row by row.
#include "src/model/model_export.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "kernels/ref/dtype.h"
#include "src/model/gguf_writer.h"
#include "src/model/model_loaders.h"
#include "troupe/error.h"

namespace troupe {

troupe_dtype parse_dtype(const std::string& s) {
  const kern::dtype_info* d = kern::find_dtype(s);
  if (d && d->runs) return static_cast<troupe_dtype>(d->id);
  const auto names = kern::engine_dtype_names();
  std::string expected;
  for (size_t i = 0; i < names.size(); ++i) expected += (i == 0 ? "" : i + 1 < names.size() ? ", " : " or ") + names[i];
  throw error(error_kind::failed, "dtype \"" + s + "\" (expected " + expected + ")", "dtype");
}

// The table's names are string literals, so data() ends in a NUL.
const char* dtype_name(troupe_dtype t) { return kern::dtype_name(t).data(); }

std::string gguf_arch(const model_config& c) { return c.arch == "mistral" ? "llama" : c.arch; }

troupe_dtype storable_type(troupe_dtype target, int64_t cols) {
  if ((target == TROUPE_Q8_0 || target == TROUPE_Q4_0) && cols % kern::QK != 0) return TROUPE_F16;
  return target;
}

namespace {

// ---- metadata -------------------------------------------------------------------------

void set_metadata(gguf_writer& w, const model_config& c, const tokenizer_data& t) {
  using gguf::value;
  const std::string a = gguf_arch(c);
  auto u32 = [](int64_t v) { return value::of_u32(static_cast<uint32_t>(v)); };
  w.set("general.architecture", value::of_string(a));
  w.set("general.name", value::of_string(c.name.empty() ? "troupe" : c.name));
  w.set(a + ".context_length", u32(c.max_seq_len));
  w.set(a + ".embedding_length", u32(c.dim));
  w.set(a + ".block_count", u32(c.n_layers));
  w.set(a + ".feed_forward_length", u32(c.hidden_dim));
  w.set(a + ".attention.head_count", u32(c.n_heads));
  w.set(a + ".attention.head_count_kv", u32(c.n_kv_heads));
  if (c.head_dim != c.dim / c.n_heads) {
    w.set(a + ".attention.key_length", u32(c.head_dim));
    w.set(a + ".attention.value_length", u32(c.head_dim));
  }
  if (c.sliding_window > 0) w.set(a + ".attention.sliding_window", u32(c.sliding_window));
  w.set(a + ".attention.layer_norm_rms_epsilon", value::of_f32(c.rms_eps));
  w.set(a + ".rope.freq_base", value::of_f32(c.rope_theta));
  w.set(a + ".rope.dimension_count", u32(c.head_dim));
  w.set(a + ".vocab_size", u32(c.vocab_size));
  if (c.scaling.enabled) {
    // llama.cpp reads the rope_freqs tensor; troupe reads these keys.
    w.set(a + ".rope.scaling.type", value::of_string("llama3"));
    w.set(a + ".rope.scaling.factor", value::of_f32(c.scaling.factor));
    w.set(a + ".rope.scaling.low_freq_factor", value::of_f32(c.scaling.low_freq_factor));
    w.set(a + ".rope.scaling.high_freq_factor", value::of_f32(c.scaling.high_freq_factor));
    w.set(a + ".rope.scaling.original_context_length", u32(c.scaling.original_max_position));
  }
  const bool spm = t.type == tokenizer_data::kind::sentencepiece_bpe;
  w.set("tokenizer.ggml.model", value::of_string(spm ? "llama" : "gpt2"));
  if (!t.pre.empty()) w.set("tokenizer.ggml.pre", value::of_string(t.pre));
  w.set("tokenizer.ggml.tokens", value::of_strings(t.tokens));
  if (!t.scores.empty()) w.set("tokenizer.ggml.scores", value::of_f32s(t.scores));
  if (!t.token_types.empty()) w.set("tokenizer.ggml.token_type", value::of_i32s(t.token_types));
  if (!t.merges.empty()) w.set("tokenizer.ggml.merges", value::of_strings(t.merges));
  if (t.bos_id >= 0) w.set("tokenizer.ggml.bos_token_id", value::of_u32(static_cast<uint32_t>(t.bos_id)));
  if (t.eos_id >= 0) w.set("tokenizer.ggml.eos_token_id", value::of_u32(static_cast<uint32_t>(t.eos_id)));
  if (t.unk_id >= 0) w.set("tokenizer.ggml.unknown_token_id", value::of_u32(static_cast<uint32_t>(t.unk_id)));
  if (const int32_t eot = t.eot_id >= 0 ? t.eot_id : t.extra_eos_ids.empty() ? -1 : t.extra_eos_ids.front(); eot >= 0)
    w.set("tokenizer.ggml.eot_token_id", value::of_u32(static_cast<uint32_t>(eot)));
  if (!t.chat_template.empty()) w.set("tokenizer.chat_template", value::of_string(t.chat_template));
  w.set("tokenizer.ggml.add_bos_token", value::of_bool(t.add_bos));
  w.set("tokenizer.ggml.add_space_prefix", value::of_bool(t.add_space_prefix));
}

// Converts one f32 row into `dtype`'s bytes.
void store_row(troupe_dtype dtype, const float* x, int64_t n, uint8_t* out) {
  switch (dtype) {
    case TROUPE_F32:
      std::memcpy(out, x, static_cast<size_t>(n) * 4);
      return;
    case TROUPE_F16:
    case TROUPE_BF16: {
      auto* h = reinterpret_cast<uint16_t*>(out);
      for (int64_t i = 0; i < n; ++i) h[i] = dtype == TROUPE_F16 ? kern::f32_to_f16(x[i]) : kern::f32_to_bf16(x[i]);
      return;
    }
    case TROUPE_Q8_0:
      return kern::quantize_row_q8_0(x, reinterpret_cast<kern::block_q8_0*>(out), n);
    case TROUPE_Q4_0:
      return kern::quantize_row_q4_0(x, reinterpret_cast<kern::block_q4_0*>(out), n);
  }
}

}  // namespace

void write_llama_gguf(const std::string& path, const model_config& config, const tokenizer_data& tokenizer,
                      const std::vector<tensor_source>& tensors, const write_progress& progress,
                      const std::vector<std::pair<std::string, gguf::value>>& extra) {
  gguf_writer w(path);
  set_metadata(w, config, tokenizer);
  for (const auto& [key, v] : extra) w.set(key, v);
  uint64_t total = 0;
  for (const tensor_source& t : tensors) {
    if (storable_type(t.dtype, t.cols) != t.dtype)
      throw error(error_kind::failed,
                  path + ": tensor " + t.name + " has " + std::to_string(t.cols) + " columns, not a multiple of 32 (" +
                      dtype_name(t.dtype) + ")",
                  t.name);
    if (t.one_dim) {
      w.add_tensor(t.name, t.dtype, {t.cols});
    } else {
      w.add_tensor(t.name, t.dtype, {t.cols, t.rows});
    }
    total += static_cast<uint64_t>(t.rows * kern::row_bytes(t.dtype, t.cols));
  }
  w.begin_data();
  uint64_t done = 0, reported = 0;
  for (const tensor_source& t : tensors) {
    std::vector<float> row(static_cast<size_t>(t.cols));
    const int64_t nbytes = kern::row_bytes(t.dtype, t.cols);
    std::vector<uint8_t> bytes(static_cast<size_t>(nbytes));
    for (int64_t r = 0; r < t.rows; ++r) {
      t.row(r, row.data());
      store_row(t.dtype, row.data(), t.cols, bytes.data());
      w.write_data(bytes.data(), bytes.size());
      done += static_cast<uint64_t>(nbytes);
      // Within a large tensor too (a 1B model's embedding table is a fifth of it).
      if (progress && (done - reported >= (uint64_t{16} << 20) || r + 1 == t.rows)) {
        progress(t.name, done, total);
        reported = done;
      }
    }
  }
  w.finish();
}

// ---- from a loaded model ------------------------------------------------------------------

namespace {

// Row r of a view, in f32.
std::function<void(int64_t, float*)> rows_of(const tensor_view& v) {
  return [v](int64_t r, float* out) {
    const auto* base = static_cast<const uint8_t*>(v.data);
    kern::dequantize_row(v.dtype, base + r * kern::row_bytes(v.dtype, v.cols), out, v.cols);
  };
}

// Hugging Face q/k rows hold each head's rotated pairs as (i, i + head_dim/2); GGUF wants
// them interleaved as (2i, 2i+1). GGUF row h*hd + 2i + j is HF row h*hd + j*hd/2 + i.
std::function<void(int64_t, float*)> interleaved_rows_of(const tensor_view& v, int64_t head_dim) {
  auto src = rows_of(v);
  return [src, head_dim](int64_t r, float* out) {
    const int64_t h = r / head_dim, k = r % head_dim;
    src(h * head_dim + (k % 2) * (head_dim / 2) + k / 2, out);
  };
}

}  // namespace

tensor_source rope_freqs_tensor(const model_config& c) {
  auto factors = std::make_shared<std::vector<float>>(llama3_rope_factors(c));
  return tensor_source{
      "rope_freqs.weight", 1,    c.head_dim / 2,
      TROUPE_F32,          true, [factors](int64_t, float* o) { std::copy(factors->begin(), factors->end(), o); }};
}

std::vector<tensor_source> gguf_tensors_of(const model_file& m, troupe_dtype target,
                                           const std::function<void(const std::string&)>& note) {
  const model_config& c = m.config();
  const model_weights& w = m.weights();
  std::vector<tensor_source> out;
  auto matrix = [&](const std::string& name, const tensor_view& v, bool rope_rows) {
    tensor_source t{name, v.rows, v.cols, storable_type(target, v.cols)};
    if (t.dtype != target && note)
      note(name + ": " + std::to_string(v.cols) + " columns is not a multiple of 32; kept as f16");
    // GGUF's llama files hold q/k rows interleaved; its qwen files as Hugging Face has them.
    t.row = rope_rows && c.rope_neox && gguf_arch(c) == "llama" ? interleaved_rows_of(v, c.head_dim) : rows_of(v);
    out.push_back(std::move(t));
  };
  auto norm = [&](const std::string& name, const tensor_view& v) {
    out.push_back(tensor_source{name, 1, v.cols, TROUPE_F32, true, rows_of(v)});
  };
  matrix("token_embd.weight", w.tok_embd, false);
  norm("output_norm.weight", w.output_norm);
  if (!c.tied_embeddings) matrix("output.weight", w.output, false);
  if (c.scaling.enabled) out.push_back(rope_freqs_tensor(c));
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const layer_weights& l = w.layers[i];
    norm(b + "attn_norm.weight", l.attn_norm);
    matrix(b + "attn_q.weight", l.wq, true);
    matrix(b + "attn_k.weight", l.wk, true);
    matrix(b + "attn_v.weight", l.wv, false);
    matrix(b + "attn_output.weight", l.wo, false);
    if (c.qkv_bias) {
      norm(b + "attn_q.bias", l.bq);
      norm(b + "attn_k.bias", l.bk);
      norm(b + "attn_v.bias", l.bv);
    }
    if (c.qk_norm) {
      norm(b + "attn_q_norm.weight", l.q_norm);
      norm(b + "attn_k_norm.weight", l.k_norm);
    }
    norm(b + "ffn_norm.weight", l.ffn_norm);
    matrix(b + "ffn_gate.weight", l.w_gate, false);
    matrix(b + "ffn_up.weight", l.w_up, false);
    matrix(b + "ffn_down.weight", l.w_down, false);
  }
  return out;
}

}  // namespace troupe
