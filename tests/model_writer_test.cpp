// Writing models: synthetic models and quantized rewrites read back with the values
// they were written with; the Hugging Face directory of the shared models.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "kernels/ref/dtype.h"
#include "src/model_export.h"
#include "src/model_synth.h"
#include "test_support.h"
#include "troupe/error.h"
#include "troupe/model.h"

namespace troupe {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with its contents at the end.
struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() / ("troupe-model-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

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
  std::unique_ptr<model_file> m;
  try {
    m = open_model((test::models_dir() / "tinystories-656K").string());
  } catch (const error& e) {
    if (e.kind() == error_kind::unimplemented && std::string(e.what()).find("tokenizer") != std::string::npos)
      GTEST_SKIP() << "tokenizer.json reading not merged yet: " << e.what();
    throw;
  }
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

}  // namespace
}  // namespace troupe
