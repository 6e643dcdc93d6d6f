// Broken model files, made here in a temp dir: each must give a troupe::error naming the
// file, the key or tensor, and what was expected; none may crash the loader.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <unistd.h>

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

// open_model(path) must throw a troupe::error of `kind` whose message holds every one of `parts`.
void expect_error(const std::string& path, error_kind kind, const std::vector<std::string>& parts) {
  try {
    open_model(path);
    ADD_FAILURE() << path << ": loaded, expected an error";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "want \"" << p << "\" in: " << e.what();
  }
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& b) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
}

// The tiny synthetic model, with a chance to change its tensors or metadata first.
std::string write_tiny(const temp_dir& dir, const std::string& name,
                       const std::function<void(std::vector<tensor_source>&)>& edit = {},
                       const std::vector<std::pair<std::string, gguf::value>>& extra = {}) {
  const model_config c = synth_preset("tiny");
  auto tensors = synth_tensors(c, TROUPE_F32, 7);
  if (edit) edit(tensors);
  write_llama_gguf(dir / name, c, synth_vocab(c.vocab_size), tensors, {}, extra);
  return dir / name;
}

// ---- GGUF ------------------------------------------------------------------------------

TEST(ModelErrors, UnsupportedArchitecture) {
  temp_dir dir;
  const auto p = write_tiny(dir, "gpt2.gguf", {}, {{"general.architecture", gguf::value::of_string("gpt2")}});
  expect_error(p, error_kind::unimplemented, {p, "general.architecture", "\"gpt2\"", "\"llama\""});
}

TEST(ModelErrors, UnsupportedTensorType) {
  temp_dir dir;
  const auto p = write_tiny(dir, "q4k.gguf");
  std::string b = read_bytes(p);
  // The tensor directory entry: name, u32 n_dims (2), 2 x u64 dims, then the u32 type.
  const std::string name = "blk.0.attn_q.weight";
  const size_t at = b.find(name);
  ASSERT_NE(at, std::string::npos);
  const uint32_t q4_k = 12;
  std::memcpy(&b[at + name.size() + 4 + 16], &q4_k, 4);
  write_bytes(p, b);
  expect_error(p, error_kind::unimplemented, {p, name, "q4_k", "supported: f32, f16, bf16, q8_0, q4_0"});
}

TEST(ModelErrors, TruncatedFile) {
  temp_dir dir;
  const auto p = write_tiny(dir, "short.gguf");
  fs::resize_file(p, fs::file_size(p) - 100);
  expect_error(p, error_kind::failed, {p, "truncated file", "tensor blk.1.ffn_down.weight", "bytes"});
  fs::resize_file(p, 5000);  // inside the vocabulary
  expect_error(p, error_kind::failed, {p, "truncated file", "the file is 5000 bytes"});
  fs::resize_file(p, 300);
  expect_error(p, error_kind::failed, {p, "truncated file", "the file is 300 bytes"});
}

TEST(ModelErrors, BadMagic) {
  temp_dir dir;
  const auto p = write_tiny(dir, "magic.gguf");
  std::string b = read_bytes(p);
  b.replace(0, 4, "GGML");
  write_bytes(p, b);
  expect_error(p, error_kind::failed, {p, "bad magic \"GGML\"", "expected \"GGUF\""});
}

TEST(ModelErrors, CorruptedHeaderCounts) {
  temp_dir dir;
  const auto p = write_tiny(dir, "counts.gguf");
  std::string b = read_bytes(p);
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(&b[16], &huge, 8);  // n_kv
  write_bytes(p, b);
  expect_error(p, error_kind::failed, {p, "corrupted header", "metadata entries"});
}

TEST(ModelErrors, UnsupportedVersion) {
  temp_dir dir;
  const auto p = write_tiny(dir, "v1.gguf");
  std::string b = read_bytes(p);
  b[4] = 1;
  write_bytes(p, b);
  expect_error(p, error_kind::failed, {p, "version 1", "expected 2 or 3"});
}

TEST(ModelErrors, MissingTensor) {
  temp_dir dir;
  const auto p = write_tiny(dir, "missing.gguf", [](std::vector<tensor_source>& ts) {
    std::erase_if(ts, [](const tensor_source& t) { return t.name == "blk.1.ffn_up.weight"; });
  });
  expect_error(p, error_kind::failed, {p, "missing tensor blk.1.ffn_up.weight", "(192, 64)"});
}

TEST(ModelErrors, ShapeMismatch) {
  temp_dir dir;
  const auto p = write_tiny(dir, "shape.gguf", [](std::vector<tensor_source>& ts) {
    for (auto& t : ts)
      if (t.name == "blk.0.attn_k.weight") t.rows = 48;
  });
  expect_error(p, error_kind::failed, {p, "tensor blk.0.attn_k.weight has shape (48, 64), expected (32, 64)"});
}

TEST(ModelErrors, MoreTokensThanEmbeddingRows) {
  temp_dir dir;
  auto vocab = synth_vocab(600).tokens;
  const auto p = write_tiny(dir, "vocab.gguf", {},
                            {{"tokenizer.ggml.tokens", gguf::value::of_strings(vocab)},
                             {"tokenizer.ggml.scores", gguf::value::of_f32s(std::vector<float>(600))},
                             {"tokenizer.ggml.token_type", gguf::value::of_i32s(std::vector<int32_t>(600, 1))}});
  expect_error(p, error_kind::failed, {p, "600 tokens", "512 rows"});
}

TEST(ModelErrors, MetadataOfTheWrongType) {
  temp_dir dir;
  const auto p = write_tiny(dir, "type.gguf", {}, {{"llama.block_count", gguf::value::of_string("two")}});
  expect_error(p, error_kind::failed, {p, "key llama.block_count", "string", "expected an integer"});
}

// Truncation anywhere and flipped header bytes: always a troupe::error (or a load), never
// a crash, a read past the end, or a huge allocation.
TEST(ModelErrors, NeverCrashesOnDamagedFiles) {
  temp_dir dir;
  model_config c = synth_preset("tiny");  // smaller still, to keep 200 rewrites quick
  c.dim = 32;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 16;
  c.hidden_dim = 64;
  c.vocab_size = 300;
  c.n_layers = 1;
  const std::string p = dir / "good.gguf";
  write_llama_gguf(p, c, synth_vocab(c.vocab_size), synth_tensors(c, TROUPE_Q8_0, 1));
  ASSERT_EQ(open_model(p)->config().dim, 32);
  const std::string good = read_bytes(p);
  const size_t header = good.find("token_embd.weight", good.find("tokenizer.ggml.add_space_prefix")) + 64;
  int errors = 0;
  for (size_t n = 0; n < header + 512; n += 41) {
    write_bytes(p, good.substr(0, n));
    try {
      open_model(p);
    } catch (const error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  std::mt19937 rng(1);
  for (int trial = 0; trial < 200; ++trial) {
    std::string b = good;
    for (int k = 0; k < 3; ++k) b[rng() % header] = static_cast<char>(rng());
    write_bytes(p, b);
    try {
      open_model(p);
    } catch (const error&) {
    }
  }
}

// ---- llama2.c ----------------------------------------------------------------------------

TEST(ModelErrors, Llama2cTruncatedAndCorrupted) {
  TROUPE_REQUIRE_MODELS();
  temp_dir dir;
  const std::string good = read_bytes((test::models_dir() / "stories260K" / "stories260K.bin").string());
  fs::copy_file(test::models_dir() / "stories260K" / "tok512.bin", dir.path / "tok512.bin");
  const auto p = dir / "model.bin";
  write_bytes(p, good.substr(0, 5000));
  expect_error(p, error_kind::failed, {p, "truncated file", "5000 bytes", "needs 1056540"});
  std::string b = good;
  const int32_t bad = -5;
  std::memcpy(&b[12], &bad, 4);  // n_heads
  write_bytes(p, b);
  expect_error(p, error_kind::failed, {p, "corrupted header", "n_heads is -5"});
  write_bytes(p, good);
  fs::remove(dir.path / "tok512.bin");
  expect_error(p, error_kind::failed, {p, "tokenizer"});
}

// ---- Hugging Face ------------------------------------------------------------------------

const char* tiny_config = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
  "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 2048,
  "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "max_position_embeddings": 128})";

// A safetensors file of `tensors` (name, dtype, shape), zero-filled.
void write_safetensors(const std::string& path,
                       const std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>>& tensors,
                       int64_t extra_claim = 0) {
  std::string h = "{";
  uint64_t off = 0;
  for (const auto& [name, dtype, shape] : tensors) {
    uint64_t n = dtype == "F32" ? 4 : 2;
    std::string s;
    for (int64_t d : shape) {
      n *= static_cast<uint64_t>(d);
      if (!s.empty()) s += ",";
      s += std::to_string(d);
    }
    if (h.size() > 1) h += ",";
    h += "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":[" + s + "],\"data_offsets\":[" +
         std::to_string(off) + "," + std::to_string(off + n) + "]}";
    off += n;
  }
  h += "}";
  while (h.size() % 8) h += ' ';
  const uint64_t len = h.size();
  std::string b(reinterpret_cast<const char*>(&len), 8);
  b += h;
  b += std::string(static_cast<size_t>(off - static_cast<uint64_t>(extra_claim)), '\0');
  write_bytes(path, b);
}

std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>> tiny_hf_tensors() {
  std::vector<std::tuple<std::string, std::string, std::vector<int64_t>>> t = {
      {"model.embed_tokens.weight", "BF16", {2048, 32}}, {"model.norm.weight", "BF16", {32}}};
  const std::string b = "model.layers.0.";
  t.push_back({b + "input_layernorm.weight", "F32", {32}});
  t.push_back({b + "post_attention_layernorm.weight", "F16", {32}});
  t.push_back({b + "self_attn.q_proj.weight", "F32", {32, 32}});
  t.push_back({b + "self_attn.k_proj.weight", "F32", {16, 32}});
  t.push_back({b + "self_attn.v_proj.weight", "F32", {16, 32}});
  t.push_back({b + "self_attn.o_proj.weight", "F32", {32, 32}});
  t.push_back({b + "mlp.gate_proj.weight", "F16", {64, 32}});
  t.push_back({b + "mlp.up_proj.weight", "F16", {64, 32}});
  t.push_back({b + "mlp.down_proj.weight", "F16", {32, 64}});
  return t;
}

TEST(ModelErrors, BadConfigJson) {
  temp_dir dir;
  const std::string cfg = dir / "config.json";
  write_safetensors(dir / "model.safetensors", tiny_hf_tensors());
  write_bytes(cfg, "{\"hidden_size\": 32,");
  expect_error(dir.path.string(), error_kind::failed, {cfg, "not a valid JSON object"});
  write_bytes(cfg, R"({"architectures": ["GPT2LMHeadModel"], "hidden_size": 32})");
  expect_error(
      dir.path.string(), error_kind::unimplemented,
      {cfg, "GPT2LMHeadModel", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"});
  write_bytes(cfg, R"({"architectures": ["LlamaForCausalLM"], "intermediate_size": 64})");
  expect_error(dir.path.string(), error_kind::failed, {cfg, "missing key hidden_size", "positive integer"});
  write_bytes(cfg, R"({"architectures": ["LlamaForCausalLM"], "hidden_size": "big"})");
  expect_error(dir.path.string(), error_kind::failed, {cfg, "key hidden_size is \"big\""});
  std::string odd = tiny_config;
  odd.insert(odd.rfind('}'), R"(, "rope_scaling": {"rope_type": 5})");
  write_bytes(cfg, odd);
  expect_error(dir.path.string(), error_kind::failed, {dir.path.string(), "unexpected JSON content"});
}

// Every config.json key that changes the computation is honoured or refused by name: none
// loads and silently computes plain Llama (a Llama config with sliding_window: 4 and
// attention_bias: true used to).
TEST(ModelErrors, ConfigKeysThatChangeTheComputationAreRefusedByName) {
  temp_dir dir;
  const std::string cfg = dir / "config.json";
  write_safetensors(dir / "model.safetensors", tiny_hf_tensors());
  auto with = [&](const std::string& arch, const std::string& extra) {
    std::string c = tiny_config;
    c.replace(c.find("LlamaForCausalLM"), 16, arch);
    c.insert(c.rfind('}'), ", " + extra);
    write_bytes(cfg, c);
  };
  with("LlamaForCausalLM", R"("sliding_window": 4)");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "sliding_window 4", "MistralForCausalLM"});
  with("LlamaForCausalLM", R"("attention_bias": true)");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "attention_bias: true", "o_proj"});
  with("MistralForCausalLM", R"("attention_bias": true, "sliding_window": 4)");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "attention_bias"});
  with("LlamaForCausalLM", R"("mlp_bias": true)");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "mlp_bias"});
  with("LlamaForCausalLM", R"("hidden_act": "gelu")");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "hidden_act \"gelu\"", "silu"});
  with("Qwen2ForCausalLM", R"("use_sliding_window": true, "sliding_window": 4096)");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "use_sliding_window: true"});
  with("Qwen3ForCausalLM", R"("layer_types": ["full_attention", "sliding_attention"])");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "layer_types \"sliding_attention\""});
  with("LlamaForCausalLM", R"("rope_scaling": {"rope_type": "yarn", "factor": 4})");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "yarn", "llama3"});
  with("LlamaForCausalLM", R"("num_local_experts": 8)");
  expect_error(dir.path.string(), error_kind::unimplemented, {cfg, "num_local_experts"});
  // Honoured: Mistral's window, Qwen2's biases and Qwen3's norms are looked for, by name.
  with("MistralForCausalLM", R"("sliding_window": 4)");
  TROUPE_REQUIRE_MODELS();
  fs::copy_file(test::models_dir() / "tinystories-656K" / "tokenizer.json", dir.path / "tokenizer.json");
  EXPECT_EQ(open_model(dir.path.string())->config().sliding_window, 4);
  with("Qwen2ForCausalLM", R"("sliding_window": 4096, "use_sliding_window": false)");
  expect_error(dir.path.string(), error_kind::failed,
               {"missing tensor model.layers.0.self_attn.q_proj.bias", "(1, 32)"});
  with("Qwen3ForCausalLM", R"("head_dim": 16)");
  expect_error(dir.path.string(), error_kind::failed,
               {"missing tensor model.layers.0.self_attn.q_norm.weight", "(1, 16)"});
  auto t = tiny_hf_tensors();
  for (const char* n : {"q_norm", "k_norm"})
    t.push_back({std::string("model.layers.0.self_attn.") + n + ".weight", "BF16", {16}});
  write_safetensors(dir / "model.safetensors", t);
  const auto q3 = open_model(dir.path.string());
  EXPECT_EQ(q3->config().arch, "qwen3");
  EXPECT_TRUE(q3->config().qk_norm);
  EXPECT_EQ(q3->weights().layers[0].q_norm.dtype, TROUPE_F32);  // converted, as every norm
}

TEST(ModelErrors, BrokenSafetensors) {
  temp_dir dir;
  write_bytes(dir / "config.json", tiny_config);
  const std::string st = dir / "model.safetensors";
  write_safetensors(st, tiny_hf_tensors(), 100);
  expect_error(dir.path.string(), error_kind::failed, {st, "truncated file", "model.layers.0."});
  auto t = tiny_hf_tensors();
  std::get<1>(t[4]) = "I8";
  write_safetensors(st, t);
  expect_error(dir.path.string(), error_kind::unimplemented,
               {st, "model.layers.0.self_attn.q_proj.weight", "\"I8\"", "F32, F16, BF16"});
  t = tiny_hf_tensors();
  std::get<2>(t[5]) = {8, 32};
  write_safetensors(st, t);
  expect_error(dir.path.string(), error_kind::failed,
               {dir.path.string(), "model.layers.0.self_attn.k_proj.weight has shape (8, 32), expected (16, 32)"});
  t.erase(t.begin() + 5);
  write_safetensors(st, t);
  expect_error(dir.path.string(), error_kind::failed, {"missing tensor model.layers.0.self_attn.k_proj.weight"});
  write_bytes(st, std::string("\xff\xff\xff\xff\xff\xff\xff\x0f{}", 10));
  expect_error(dir.path.string(), error_kind::failed, {st, "corrupted header"});
}

// A well-formed directory gets past config and weights (bf16/f16 norms converted to f32,
// the head tied to the embeddings); its tokenizer.json comes from the shared model.
TEST(ModelErrors, SyntheticHuggingFaceDirectoryLoads) {
  TROUPE_REQUIRE_MODELS();
  temp_dir dir;
  write_bytes(dir / "config.json", tiny_config);
  write_safetensors(dir / "model.safetensors", tiny_hf_tensors());
  fs::copy_file(test::models_dir() / "tinystories-656K" / "tokenizer.json", dir.path / "tokenizer.json");
  auto m = open_model(dir.path.string());
  EXPECT_TRUE(m->config().rope_neox);
  EXPECT_TRUE(m->config().tied_embeddings);
  EXPECT_EQ(m->weights().layers[0].ffn_norm.dtype, TROUPE_F32);
  EXPECT_EQ(m->weights().output_norm.dtype, TROUPE_F32);
  EXPECT_EQ(m->weights().layers[0].w_up.dtype, TROUPE_F16);
  EXPECT_EQ(m->weights().tok_embd.dtype, TROUPE_BF16);
}

// Shards listed by model.safetensors.index.json; a shard that is not there is named.
TEST(ModelErrors, ShardedSafetensors) {
  TROUPE_REQUIRE_MODELS();
  temp_dir dir;
  write_bytes(dir / "config.json", tiny_config);
  fs::copy_file(test::models_dir() / "tinystories-656K" / "tokenizer.json", dir.path / "tokenizer.json");
  auto all = tiny_hf_tensors();
  const decltype(all) first(all.begin(), all.begin() + 5), second(all.begin() + 5, all.end());
  write_safetensors(dir / "model-00001-of-00002.safetensors", first);
  write_safetensors(dir / "model-00002-of-00002.safetensors", second);
  std::string index = R"({"metadata": {}, "weight_map": {)";
  for (size_t i = 0; i < all.size(); ++i)
    index +=
        (i ? ",\"" : "\"") + std::get<0>(all[i]) + "\": \"model-0000" + (i < 5 ? "1" : "2") + "-of-00002.safetensors\"";
  index += "}}";
  write_bytes(dir / "model.safetensors.index.json", index);
  auto m = open_model(dir.path.string());
  EXPECT_EQ(m->config().dim, 32);
  EXPECT_EQ(m->weights().layers[0].w_down.rows, 32);
  EXPECT_EQ(m->weights().layers[0].w_down.cols, 64);
  m.reset();
  fs::remove(dir.path / "model-00002-of-00002.safetensors");
  expect_error(dir.path.string(), error_kind::failed, {"model-00002-of-00002.safetensors", "cannot open"});
}

}  // namespace
}  // namespace troupe
