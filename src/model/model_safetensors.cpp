// Hugging Face directories: config.json (Llama, Mistral, Qwen2, Qwen3 ForCausalLM), weights in
// model.safetensors or in shards listed by model.safetensors.index.json, and tokenizer.json.
// A safetensors file is a u64 header length, a JSON header {name: {dtype, shape,
// data_offsets: [begin, end]}} and the data those offsets (relative to the header's end) point at.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "src/model/mmap_file.h"
#include "src/model/model_loaders.h"
#include "src/model/tokenizer_files.h"
#include "troupe/error.h"

namespace troupe {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& file, const std::string& what, const std::string& field = {}) {
  throw error(error_kind::failed, file + ": " + what, field);
}

json read_json(const std::string& file) {
  auto map = std::make_unique<mapped_file>(file);
  const auto* p = reinterpret_cast<const char*>(map->data());
  json j = json::parse(p, p + map->size(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail(file, "not a valid JSON object");
  return j;
}

// ---- config.json ----------------------------------------------------------------------

int64_t get_int(const std::string& file, const json& j, const char* key, std::optional<int64_t> fallback = {}) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    fail(file, std::string("missing key ") + key + " (expected a positive integer)", key);
  }
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 || it->get<int64_t>() > (int64_t{1} << 31))
    fail(file, std::string("key ") + key + " is " + it->dump() + " (expected a positive integer)", key);
  return it->get<int64_t>();
}

double get_number(const std::string& file, const json& j, const char* key, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number() || !(it->get<double>() > 0.0))
    fail(file, std::string("key ") + key + " is " + it->dump() + " (expected a positive number)", key);
  return it->get<double>();
}

[[noreturn]] void refuse(const std::string& file, const std::string& key, const std::string& what) {
  throw error(error_kind::unimplemented, file + ": " + what, key);
}

bool get_bool(const std::string& file, const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_boolean()) fail(file, std::string("key ") + key + " is " + it->dump() + " (expected a bool)", key);
  return it->get<bool>();
}

// config.json's "architectures" (or "model_type") as Troupe's arch name.
std::string arch_of(const std::string& file, const json& j) {
  static const std::pair<const char*, const char*> known[] = {{"LlamaForCausalLM", "llama"},
                                                              {"MistralForCausalLM", "mistral"},
                                                              {"Qwen2ForCausalLM", "qwen2"},
                                                              {"Qwen3ForCausalLM", "qwen3"}};
  std::string got;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array()) {
    got = it->dump();
    for (const auto& a : *it)
      for (const auto& [hf, ours] : known)
        if (a == hf) return ours;
  } else if (auto mt = j.find("model_type"); mt != j.end()) {
    got = "model_type " + mt->dump();
    for (const auto& [hf, ours] : known)
      if (*mt == ours) return ours;
  }
  refuse(file, "architectures",
         "architectures " + (got.empty() ? "missing" : got) +
             " (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)");
}

model_config read_config(const std::string& file) {
  const json j = read_json(file);
  const std::string arch = arch_of(file, j);
  // Keys that change the computation: each is either honoured below or refused by name, so
  // that no file loads and silently computes something else.
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null() && *it != "silu")
    refuse(file, "hidden_act", "hidden_act " + it->dump() + " is not supported (supported: \"silu\")");
  if (get_bool(file, j, "mlp_bias")) refuse(file, "mlp_bias", "mlp_bias: true (biases on the MLP) is not supported");
  if (get_bool(file, j, "attention_bias"))
    refuse(file, "attention_bias",
           "attention_bias: true (biases on q, k, v and o_proj) is not supported for " + arch +
               " (Qwen2's q, k, v biases are)");
  if (get_bool(file, j, "use_sliding_window"))
    refuse(
        file, "use_sliding_window",
        "use_sliding_window: true is not supported for " + arch + " (per-layer windows; Mistral's sliding_window is)");
  if (auto it = j.find("layer_types"); it != j.end() && it->is_array())
    for (const auto& t : *it)
      if (t != "full_attention")
        refuse(file, "layer_types", "layer_types " + t.dump() + " is not supported (supported: \"full_attention\")");
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping", "num_experts", "num_local_experts"})
    if (auto it = j.find(key); it != j.end() && !it->is_null() && *it != 0)
      refuse(file, key, std::string("key ") + key + " is not supported");
  int64_t window = 0;
  if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null() && *it != false) {
    if (arch == "mistral") {
      window = get_int(file, j, "sliding_window");
    } else if (arch == "llama") {
      refuse(file, "sliding_window",
             "sliding_window " + it->dump() + " on LlamaForCausalLM is not supported (MistralForCausalLM's is)");
    }  // Qwen2/3 carry a window that only use_sliding_window (refused above) turns on
  }
  model_config c;
  c.arch = arch;
  c.sliding_window = window;
  c.qkv_bias = arch == "qwen2";
  c.qk_norm = arch == "qwen3";
  c.name = fs::path(file).parent_path().filename().string();
  if (auto it = j.find("_name_or_path"); it != j.end() && it->is_string() && !it->get<std::string>().empty())
    c.name = it->get<std::string>();
  c.dim = get_int(file, j, "hidden_size");
  c.hidden_dim = get_int(file, j, "intermediate_size");
  c.n_layers = get_int(file, j, "num_hidden_layers");
  c.n_heads = get_int(file, j, "num_attention_heads");
  c.n_kv_heads = get_int(file, j, "num_key_value_heads", c.n_heads);
  c.head_dim = get_int(file, j, "head_dim", c.dim / c.n_heads);
  c.vocab_size = get_int(file, j, "vocab_size");
  c.max_seq_len = get_int(file, j, "max_position_embeddings", 2048);
  c.rms_eps = static_cast<float>(get_number(file, j, "rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(get_number(file, j, "rope_theta", 10000.0));
  c.rope_neox = true;  // HF checkpoints keep q/k unpermuted: rotate (i, i + head_dim/2)
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) fail(file, "key tie_word_embeddings is " + it->dump() + " (expected a bool)");
    c.tied_embeddings = it->get<bool>();
  }
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) fail(file, "key rope_scaling is " + it->dump() + " (expected an object or null)");
    const std::string type = it->value("rope_type", it->value("type", std::string()));
    if (type != "llama3")
      throw error(error_kind::unimplemented,
                  file + ": rope_scaling type \"" + type + "\" is not supported (supported: llama3)", "rope_scaling");
    c.scaling.enabled = true;
    c.scaling.factor = static_cast<float>(get_number(file, *it, "factor", c.scaling.factor));
    c.scaling.low_freq_factor = static_cast<float>(get_number(file, *it, "low_freq_factor", 1.0));
    c.scaling.high_freq_factor = static_cast<float>(get_number(file, *it, "high_freq_factor", 4.0));
    c.scaling.original_max_position = get_int(file, *it, "original_max_position_embeddings", 8192);
    if (!(c.scaling.high_freq_factor > c.scaling.low_freq_factor))
      fail(file, "rope_scaling: high_freq_factor must exceed low_freq_factor", "rope_scaling");
  }
  return c;
}

// ---- safetensors ----------------------------------------------------------------------

struct st_tensor {
  std::string file;
  troupe_dtype dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;
};

void read_safetensors(const std::string& file, loaded_model& m, std::map<std::string, st_tensor>& out) {
  auto map = std::make_shared<const mapped_file>(file);
  m.resources.push_back(map);
  const uint64_t size = map->size();
  uint64_t n = 0;
  if (size < 8) fail(file, "truncated file: " + std::to_string(size) + " bytes (expected an 8-byte header length)");
  std::memcpy(&n, map->data(), 8);
  if (n > size - 8 || n > (uint64_t{1} << 30))
    fail(file, "corrupted header: header length " + std::to_string(n) + " but the file is " + std::to_string(size) +
                   " bytes");
  const auto* h = reinterpret_cast<const char*>(map->data() + 8);
  const json j = json::parse(h, h + n, nullptr, false);
  if (j.is_discarded() || !j.is_object()) fail(file, "corrupted header: not a JSON object");
  const uint64_t data_start = 8 + n, data_size = size - data_start;
  for (const auto& [name, t] : j.items()) {
    if (name == "__metadata__") continue;
    const std::string where = "tensor " + name;
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets"))
      fail(file, where + ": expected {dtype, shape, data_offsets}", name);
    const json& dt = t["dtype"];
    troupe_dtype dtype;
    uint64_t elem;
    if (dt == "F32") {
      dtype = TROUPE_F32;
      elem = 4;
    } else if (dt == "F16") {
      dtype = TROUPE_F16;
      elem = 2;
    } else if (dt == "BF16") {
      dtype = TROUPE_BF16;
      elem = 2;
    } else {
      throw error(error_kind::unimplemented,
                  file + ": " + where + " has unsupported dtype " + dt.dump() + " (supported: F32, F16, BF16)", name);
    }
    std::vector<int64_t> shape;
    uint64_t count = 1;
    if (!t["shape"].is_array() || t["shape"].size() > 4) fail(file, where + ": shape must be an array of 0..4 sizes");
    for (const auto& d : t["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() == 0 || d.get<uint64_t>() > (uint64_t{1} << 40))
        fail(file, where + ": bad shape " + t["shape"].dump(), name);
      count *= d.get<uint64_t>();
      if (count > (uint64_t{1} << 44)) fail(file, where + ": shape too large " + t["shape"].dump(), name);
      shape.push_back(d.get<int64_t>());
    }
    const json& off = t["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(file, where + ": data_offsets must be [begin, end]", name);
    const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (e < b || e > data_size)
      fail(file,
           "truncated file: " + where + " spans bytes " + std::to_string(b) + ".." + std::to_string(e) +
               " of a data section of " + std::to_string(data_size),
           name);
    if (e - b != count * elem)
      fail(file,
           where + " holds " + std::to_string(e - b) + " bytes, expected " + std::to_string(count * elem) +
               " for shape " + t["shape"].dump() + " in " + dt.get<std::string>(),
           name);
    out[name] = st_tensor{file, dtype, std::move(shape), map->data() + data_start + b};
  }
}

tensor_view view(loaded_model& m, const std::map<std::string, st_tensor>& ts, const std::string& name) {
  tensor_view v;
  v.name = name;
  auto it = ts.find(name);
  if (it == ts.end()) return v;  // validate_model() reports it with the shape it expected
  const st_tensor& t = it->second;
  if (t.shape.size() > 2) fail(t.file, "tensor " + name + " has " + std::to_string(t.shape.size()) + " dimensions");
  v.dtype = t.dtype;
  v.data = t.data;
  v.rows = t.shape.size() == 2 ? t.shape[0] : 1;
  v.cols = t.shape.empty() ? 1 : t.shape.back();
  // The header's length need not keep the data aligned: give the kernels an aligned copy then.
  const size_t elem = t.dtype == TROUPE_F32 ? 4 : 2;
  if (reinterpret_cast<uintptr_t>(t.data) % elem != 0) {
    const size_t bytes = static_cast<size_t>(v.rows * v.cols) * elem;
    auto buf = std::make_unique<float[]>((bytes + 3) / 4);
    std::memcpy(buf.get(), t.data, bytes);
    v.data = buf.get();
    m.buffers.push_back(std::move(buf));
  }
  return v;
}

std::unique_ptr<model_file> open_hf_directory_unchecked(const std::string& path) {
  const fs::path dir(path);
  const std::string config_file = (dir / "config.json").string();
  if (!fs::exists(config_file))
    throw error(error_kind::failed, path + ": a model directory needs config.json (Hugging Face layout)",
                "config.json");
  auto m = std::make_unique<loaded_model>();
  m->path_ = path;
  m->format_ = "safetensors";
  m->config_ = read_config(config_file);
  model_config& c = m->config_;

  std::map<std::string, st_tensor> ts;
  if (fs::exists(dir / "model.safetensors")) {
    read_safetensors((dir / "model.safetensors").string(), *m, ts);
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    const std::string index = (dir / "model.safetensors.index.json").string();
    const json j = read_json(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index, "missing key weight_map (expected {tensor: shard file})", "weight_map");
    std::vector<std::string> shards;
    for (const auto& [name, shard] : j["weight_map"].items()) {
      if (!shard.is_string() || shard.get<std::string>().find('/') != std::string::npos)
        fail(index, "weight_map[" + name + "] is " + shard.dump() + " (expected a file name in the directory)", name);
      if (std::find(shards.begin(), shards.end(), shard.get<std::string>()) == shards.end())
        shards.push_back(shard.get<std::string>());
    }
    for (const auto& s : shards) read_safetensors((dir / s).string(), *m, ts);
  } else {
    throw error(error_kind::failed, path + ": no model.safetensors or model.safetensors.index.json",
                "model.safetensors");
  }

  model_weights& w = m->weights_;
  w.tok_embd = view(*m, ts, "model.embed_tokens.weight");
  tensor_view head = view(*m, ts, "lm_head.weight");
  if (!w.tok_embd.data) w.tok_embd = head;  // saved once, under the head's name, when tied
  w.layers.resize(static_cast<size_t>(c.n_layers));
  auto norm = [&](const std::string& name) {
    tensor_view v = view(*m, ts, name);
    if (v.data && v.dtype != TROUPE_F32) m->convert_to_f32(v);
    return v;
  };
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string b = "model.layers." + std::to_string(i) + ".";
    layer_weights& l = w.layers[i];
    l.attn_norm = norm(b + "input_layernorm.weight");
    l.wq = view(*m, ts, b + "self_attn.q_proj.weight");
    l.wk = view(*m, ts, b + "self_attn.k_proj.weight");
    l.wv = view(*m, ts, b + "self_attn.v_proj.weight");
    l.wo = view(*m, ts, b + "self_attn.o_proj.weight");
    if (c.qkv_bias) {
      l.bq = norm(b + "self_attn.q_proj.bias");
      l.bk = norm(b + "self_attn.k_proj.bias");
      l.bv = norm(b + "self_attn.v_proj.bias");
    }
    if (c.qk_norm) {
      l.q_norm = norm(b + "self_attn.q_norm.weight");
      l.k_norm = norm(b + "self_attn.k_norm.weight");
    }
    l.ffn_norm = norm(b + "post_attention_layernorm.weight");
    l.w_gate = view(*m, ts, b + "mlp.gate_proj.weight");
    l.w_up = view(*m, ts, b + "mlp.up_proj.weight");
    l.w_down = view(*m, ts, b + "mlp.down_proj.weight");
  }
  w.output_norm = norm("model.norm.weight");
  if (!head.data) c.tied_embeddings = true;
  w.output = c.tied_embeddings ? w.tok_embd : head;
  if (!w.tok_embd.data) w.tok_embd.name = "model.embed_tokens.weight";
  validate_model(path, c, w);

  const std::string tok = (dir / "tokenizer.json").string();
  if (!fs::exists(tok)) throw error(error_kind::failed, path + ": missing tokenizer.json", "tokenizer.json");
  m->tokenizer_ = load_hf_tokenizer_json(tok);
  validate_tokenizer(path, m->config_, m->tokenizer_);
  return m;
}

}  // namespace

std::unique_ptr<model_file> open_hf_directory(const std::string& path) {
  // nlohmann's own exceptions (a value of an unexpected JSON type) become troupe errors.
  try {
    return open_hf_directory_unchecked(path);
  } catch (const json::exception& e) {
    throw error(error_kind::failed, path + ": unexpected JSON content: " + e.what());
  }
}

}  // namespace troupe
