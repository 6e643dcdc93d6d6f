// Writing models: synthetic models and quantized rewrites read back with the values
// they were written with; the Hugging Face directory of the shared models.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "kernels/ref/dtype.h"
#include "kernels/ref/ref.h"
#include "src/model/model_export.h"
#include "src/model/model_synth.h"
#include "temp_dir.h"
#include "test_support.h"
#include "troupe/error.h"
#include "troupe/model.h"

namespace troupe {
namespace {

namespace fs = std::filesystem;

using test::temp_dir;

// Every tensor of a model by its GGUF name, as the GGUF writer sees it.
std::vector<std::pair<std::string, const tensor_view*>> gguf_named(const model_file& m) {
  const model_weights& w = m.weights();
  std::vector<std::pair<std::string, const tensor_view*>> out = {{"token_embd.weight", &w.tok_embd},
                                                                 {"output_norm.weight", &w.output_norm}};
  if (!m.config().tied_embeddings) out.emplace_back("output.weight", &w.output);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const layer_weights& l = w.layers[i];
    for (auto [n, v] :
         std::initializer_list<std::pair<const char*, const tensor_view*>>{{"attn_norm.weight", &l.attn_norm},
                                                                           {"attn_q.weight", &l.wq},
                                                                           {"attn_k.weight", &l.wk},
                                                                           {"attn_v.weight", &l.wv},
                                                                           {"attn_output.weight", &l.wo},
                                                                           {"ffn_norm.weight", &l.ffn_norm},
                                                                           {"ffn_gate.weight", &l.w_gate},
                                                                           {"ffn_up.weight", &l.w_up},
                                                                           {"ffn_down.weight", &l.w_down}})
      out.emplace_back(b + n, v);
  }
  return out;
}

std::vector<float> row_f32(const tensor_view& v, int64_t r) {
  std::vector<float> out(static_cast<size_t>(v.cols));
  kern::dequantize_row(v.dtype, static_cast<const uint8_t*>(v.data) + r * kern::row_bytes(v.dtype, v.cols), out.data(),
                       v.cols);
  return out;
}

TEST(ModelWriter, SynthTinyRoundTrips) {
  temp_dir dir;
  const model_config c = synth_preset("tiny");
  const auto tensors = synth_tensors(c, TROUPE_F32, 42);
  write_llama_gguf(dir / "tiny.gguf", c, synth_vocab(c.vocab_size), tensors);

  auto m = open_model(dir / "tiny.gguf");
  const model_config& got = m->config();
  EXPECT_EQ(got.dim, 64);
  EXPECT_EQ(got.n_layers, 2);
  EXPECT_EQ(got.n_heads, 4);
  EXPECT_EQ(got.n_kv_heads, 2);
  EXPECT_EQ(got.hidden_dim, 192);
  EXPECT_EQ(got.vocab_size, 512);
  EXPECT_EQ(got.max_seq_len, 512);
  EXPECT_FALSE(got.tied_embeddings);
  EXPECT_EQ(m->tokenizer().tokens, synth_vocab(512).tokens);
  EXPECT_EQ(m->tokenizer().tokens[3 + 0x0A], "<0x0A>");

  const auto named = gguf_named(*m);
  ASSERT_EQ(named.size(), tensors.size());
  double sum_sq = 0;
  int64_t n = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const tensor_source& t = tensors[i];
    ASSERT_EQ(named[i].first, t.name);
    const tensor_view& v = *named[i].second;
    ASSERT_EQ(v.rows, t.rows) << t.name;
    ASSERT_EQ(v.cols, t.cols) << t.name;
    std::vector<float> want(static_cast<size_t>(t.cols));
    for (int64_t r = 0; r < t.rows; ++r) {
      t.row(r, want.data());
      ASSERT_EQ(row_f32(v, r), want) << t.name << " row " << r;
      if (!t.one_dim)
        for (float x : want) sum_sq += x * x, ++n;
    }
  }
  EXPECT_NEAR(std::sqrt(sum_sq / n), 0.02, 0.002);  // the scale keeps activations sane
}

TEST(ModelWriter, SynthIsSeeded) {
  const model_config c = synth_preset("tiny");
  const auto a = synth_tensors(c, TROUPE_F32, 1), b = synth_tensors(c, TROUPE_F32, 1),
             d = synth_tensors(c, TROUPE_F32, 2);
  std::vector<float> ra(64), rb(64), rd(64);
  ASSERT_EQ(a[4].name, "blk.0.attn_q.weight");
  a[4].row(5, ra.data());
  b[4].row(5, rb.data());
  d[4].row(5, rd.data());
  EXPECT_EQ(ra, rb);
  EXPECT_NE(ra, rd);
}

TEST(ModelWriter, SynthPresetsHaveTheirShapes) {
  const model_config b = synth_preset("1b");
  EXPECT_EQ(b.dim, 2048);
  EXPECT_EQ(b.n_kv_heads, 8);
  EXPECT_EQ(b.vocab_size, 128256);
  EXPECT_TRUE(b.tied_embeddings);
  EXPECT_FLOAT_EQ(b.rope_theta, 500000.0f);
  EXPECT_EQ(synth_preset("110m").hidden_dim, 2048);
  EXPECT_THROW(synth_preset("7b"), error);
  EXPECT_EQ(synth_vocab(128256).tokens.size(), 128256u);
}

// q8_0 stores each block of 32 as d * q with d = amax/127 (rounded to f16): every value
// comes back within half a step, plus what rounding d to f16 moves the largest q by.
TEST(ModelWriter, QuantizeQ8WithinHalfAStep) {
  TROUPE_REQUIRE_MODELS();
  temp_dir dir;
  auto src = open_model((test::models_dir() / "stories260K" / "stories260K.gguf").string());
  std::vector<std::string> notes;
  write_llama_gguf(dir / "q8.gguf", src->config(), src->tokenizer(),
                   gguf_tensors_of(*src, TROUPE_Q8_0, [&](const std::string& s) { notes.push_back(s); }));
  EXPECT_EQ(notes.size(), 5u);  // ffn_down has 172 columns: kept as f16
  auto q = open_model(dir / "q8.gguf");
  EXPECT_EQ(q->tokenizer().tokens, src->tokenizer().tokens);
  const auto a = gguf_named(*src), b = gguf_named(*q);
  ASSERT_EQ(a.size(), b.size());
  int checked = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const tensor_view &orig = *a[i].second, &got = *b[i].second;
    ASSERT_EQ(got.rows, orig.rows);
    ASSERT_EQ(got.cols, orig.cols);
    if (orig.rows == 1) {
      EXPECT_EQ(got.dtype, TROUPE_F32) << a[i].first;  // norms stay f32
    } else {
      EXPECT_EQ(got.dtype, orig.cols % 32 ? TROUPE_F16 : TROUPE_Q8_0) << a[i].first;
    }
    for (int64_t r = 0; r < orig.rows; ++r) {
      const auto x = row_f32(orig, r), y = row_f32(got, r);
      for (int64_t blk = 0; blk < orig.cols; blk += 32) {
        const int64_t end = std::min<int64_t>(blk + 32, orig.cols);
        float amax = 0;
        for (int64_t k = blk; k < end; ++k) amax = std::max(amax, std::fabs(x[k]));
        float tol = 0;
        if (got.dtype == TROUPE_Q8_0) {
          const float d = amax / 127.0f, d16 = kern::f16_to_f32(kern::f32_to_f16(d));
          tol = 0.5f * d + 127.0f * std::fabs(d - d16) + 1e-7f;
        } else if (got.dtype == TROUPE_F16) {
          tol = amax * (1.0f / 1024) + 1e-7f;
        }
        for (int64_t k = blk; k < end; ++k) ASSERT_LE(std::fabs(x[k] - y[k]), tol) << a[i].first << " row " << r;
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked, 48);
}

TEST(ModelWriter, QuantizeFromLlama2cMatchesGguf) {
  TROUPE_REQUIRE_MODELS();
  temp_dir dir;
  auto src = open_model((test::models_dir() / "stories260K" / "stories260K.bin").string());
  write_llama_gguf(dir / "f32.gguf", src->config(), src->tokenizer(), gguf_tensors_of(*src, TROUPE_F32));
  auto a = open_model(dir / "f32.gguf");
  auto ref = open_model((test::models_dir() / "stories260K" / "stories260K.gguf").string());
  EXPECT_TRUE(a->config().tied_embeddings);
  EXPECT_EQ(a->weights().output.data, a->weights().tok_embd.data);
  EXPECT_EQ(row_f32(a->weights().layers[4].wk, 31), row_f32(ref->weights().layers[4].wk, 31));
  EXPECT_EQ(row_f32(a->weights().output, 7), row_f32(ref->weights().output, 7));
}

TEST(ModelWriter, RopeScalingSurvivesAGgufRoundTrip) {
  temp_dir dir;
  model_config c = synth_preset("tiny");
  c.scaling.enabled = true;
  c.scaling.factor = 32.0f;
  c.scaling.original_max_position = 64;  // so that the tiny head_dim has scaled frequencies
  c.rope_theta = 500000.0f;
  write_llama_gguf(dir / "s.gguf", c, synth_vocab(512), synth_tensors(c, TROUPE_F16, 3));
  auto m = open_model(dir / "s.gguf");
  EXPECT_TRUE(m->config().scaling.enabled);
  EXPECT_FLOAT_EQ(m->config().scaling.factor, 32.0f);
  EXPECT_EQ(m->config().scaling.original_max_position, 64);
  EXPECT_EQ(m->weights().layers[0].wq.dtype, TROUPE_F16);
}

// llama.cpp's GGUFs carry Llama 3 scaling only as the rope_freqs tensor: the parameters
// come back from it.
TEST(ModelWriter, RopeScalingFromTheRopeFreqsTensorAlone) {
  temp_dir dir;
  model_config c = synth_preset("tiny");
  c.head_dim = 64;  // one head of 64 so that the frequencies span all three bands
  c.n_heads = 1;
  c.n_kv_heads = 1;
  c.rope_theta = 500000.0f;
  auto tensors = synth_tensors(c, TROUPE_F32, 3);  // unscaled: no rope scaling metadata
  model_config scaled = c;
  scaled.scaling.enabled = true;
  scaled.scaling.factor = 32.0f;
  tensors.push_back(rope_freqs_tensor(scaled));
  std::vector<float> f(32);
  tensors.back().row(0, f.data());
  EXPECT_FLOAT_EQ(f.front(), 1.0f);
  EXPECT_FLOAT_EQ(f.back(), 32.0f);
  write_llama_gguf(dir / "s.gguf", c, synth_vocab(512), tensors);
  auto m = open_model(dir / "s.gguf");
  EXPECT_TRUE(m->config().scaling.enabled);
  EXPECT_FLOAT_EQ(m->config().scaling.factor, 32.0f);
  EXPECT_EQ(m->config().scaling.original_max_position, 8192);

  // Divisors that no Llama 3 parameters produce are refused, not guessed.
  tensors.back().row = [](int64_t, float* o) {
    for (int i = 0; i < 32; ++i) o[i] = i % 2 ? 2.0f : 1.0f;
  };
  write_llama_gguf(dir / "bad.gguf", c, synth_vocab(512), tensors);
  try {
    open_model(dir / "bad.gguf");
    FAIL() << "expected an error";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::unimplemented);
    EXPECT_NE(std::string(e.what()).find("rope_freqs.weight"), std::string::npos) << e.what();
  }
}

TEST(ModelWriter, TinyStoriesHuggingFaceDirectory) {
  TROUPE_REQUIRE_MODELS();
  auto m = open_model((test::models_dir() / "tinystories-656K").string());
  const model_config& c = m->config();
  EXPECT_EQ(m->format(), "safetensors");
  EXPECT_EQ(c.dim, 128);
  EXPECT_EQ(c.hidden_dim, 384);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 2048);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-6f);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_TRUE(c.rope_neox);
  EXPECT_EQ(m->weights().output.data, m->weights().tok_embd.data);
  EXPECT_EQ(m->tokenizer().tokens.size(), 2048u);
}

// Hugging Face q/k rows pair dimension i with i + head_dim/2; the GGUF rewrite interleaves
// them so that rotating (2i, 2i+1) there gives the same numbers, permuted the same way for
// q and k (so every attention score is unchanged).
TEST(ModelWriter, HuggingFaceToGgufKeepsRopeMeaning) {
  TROUPE_REQUIRE_MODELS();
  temp_dir dir;
  auto hf = open_model((test::models_dir() / "tinystories-656K").string());
  write_llama_gguf(dir / "ts.gguf", hf->config(), hf->tokenizer(), gguf_tensors_of(*hf, TROUPE_F32));
  auto gg = open_model(dir / "ts.gguf");
  EXPECT_FALSE(gg->config().rope_neox);
  EXPECT_TRUE(gg->config().tied_embeddings);
  EXPECT_EQ(gg->tokenizer().tokens, hf->tokenizer().tokens);

  troupe_rope_fn rope = nullptr;
  for (const auto& v : kern::ref::variants())
    if (v.op == TROUPE_OP_ROPE) rope = reinterpret_cast<troupe_rope_fn>(v.fn);
  ASSERT_NE(rope, nullptr);
  const model_config& c = hf->config();
  const int64_t hd = c.head_dim;
  std::vector<float> inv_freq(static_cast<size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i) inv_freq[i] = std::pow(c.rope_theta, -2.0f * i / hd);
  std::vector<float> x(static_cast<size_t>(c.dim));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * i);
  const int32_t pos = 11;
  auto project = [&](const tensor_view& w) {
    std::vector<float> y(static_cast<size_t>(w.rows));
    for (int64_t r = 0; r < w.rows; ++r) {
      const auto row = row_f32(w, r);
      for (int64_t k = 0; k < w.cols; ++k) y[r] += row[k] * x[k];
    }
    return y;
  };
  for (int which = 0; which < 2; ++which) {
    const tensor_view& wh = which ? hf->weights().layers[1].wk : hf->weights().layers[1].wq;
    const tensor_view& wg = which ? gg->weights().layers[1].wk : gg->weights().layers[1].wq;
    const int64_t heads = wh.rows / hd;
    auto yh = project(wh), yg = project(wg);
    rope(nullptr, yh.data(), &pos, 1, heads, hd, inv_freq.data(), 1);
    rope(nullptr, yg.data(), &pos, 1, heads, hd, inv_freq.data(), 0);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd / 2; ++i)
        for (int64_t j = 0; j < 2; ++j)
          ASSERT_NEAR(yg[h * hd + 2 * i + j], yh[h * hd + j * hd / 2 + i], 1e-5f) << wh.name << " head " << h;
  }
}

// Norms stored as f16 in a GGUF come out as f32 (the model computes them in f32).
TEST(ModelWriter, F16NormsAreConvertedToF32) {
  temp_dir dir;
  const model_config c = synth_preset("tiny");
  auto tensors = synth_tensors(c, TROUPE_BF16, 5);
  for (auto& t : tensors)
    if (t.one_dim) {
      t.dtype = TROUPE_F16;
      t.row = [](int64_t, float* o) {
        for (int i = 0; i < 64; ++i) o[i] = 0.5f + i;
      };
    }
  write_llama_gguf(dir / "n.gguf", c, synth_vocab(512), tensors);
  auto m = open_model(dir / "n.gguf");
  const tensor_view& n = m->weights().layers[1].ffn_norm;
  EXPECT_EQ(n.dtype, TROUPE_F32);
  EXPECT_EQ(n.name, "blk.1.ffn_norm.weight");
  EXPECT_EQ(static_cast<const float*>(n.data)[63], 63.5f);
  EXPECT_EQ(m->weights().output_norm.dtype, TROUPE_F32);
  EXPECT_EQ(m->weights().layers[1].wq.dtype, TROUPE_BF16);
}

// A Llama 3 style byte-level vocabulary: its chat turns end at <|eot_id|>.
TEST(ModelWriter, ByteLevelTokenizerFromGguf) {
  temp_dir dir;
  const model_config c = synth_preset("tiny");
  tokenizer_data t;
  t.type = tokenizer_data::kind::byte_level_bpe;
  for (int i = 0; i < 510; ++i) t.tokens.push_back(std::string(1, 't').append(std::to_string(i)));
  t.tokens.push_back("<|end_of_text|>");
  t.tokens.push_back("<|eot_id|>");
  t.merges = {"t 1", "t1 0"};
  t.bos_id = 0;
  t.eos_id = 510;
  t.pre = "llama-bpe";
  t.add_space_prefix = false;
  write_llama_gguf(dir / "b.gguf", c, t, synth_tensors(c, TROUPE_F32, 1));
  auto m = open_model(dir / "b.gguf");
  const tokenizer_data& got = m->tokenizer();
  EXPECT_EQ(got.type, tokenizer_data::kind::byte_level_bpe);
  EXPECT_EQ(got.merges, t.merges);
  EXPECT_EQ(got.eos_id, 510);
  EXPECT_EQ(got.extra_eos_ids, std::vector<int32_t>{511});
  EXPECT_EQ(got.pre, "llama-bpe");
  EXPECT_TRUE(got.add_bos);
  EXPECT_FALSE(got.add_space_prefix);
  EXPECT_TRUE(got.scores.empty());
}

}  // namespace
}  // namespace troupe
