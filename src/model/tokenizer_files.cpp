// Tokenizer loaders: llama2.c's tokenizer.bin and Hugging Face's tokenizer.json.
#include "src/model/tokenizer_files.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "src/model/unicode_text.h"
#include "troupe/error.h"

namespace troupe {

namespace {

const std::string k_space_marker = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

[[noreturn]] void fail(const std::string& file, const std::string& key, const std::string& what) {
  throw error(error_kind::failed, "tokenizer " + file + ": " + (key.empty() ? "" : key + ": ") + what, key);
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, {}, "cannot open file");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// llama2.c tokenizer.bin
// ---------------------------------------------------------------------------------------------

tokenizer_data load_llama2c_tokenizer(const std::string& path, int32_t vocab_size) {
  const std::string bytes = read_whole_file(path);
  size_t pos = 0;
  auto read_raw = [&](void* dst, size_t n, const std::string& what) {
    if (bytes.size() - pos < n) fail(path, what, "file ends early (truncated at byte " + std::to_string(pos) + ")");
    std::memcpy(dst, bytes.data() + pos, n);
    pos += n;
  };
  int32_t max_token_length = 0;
  read_raw(&max_token_length, sizeof max_token_length, "max_token_length");
  if (max_token_length <= 0 || max_token_length > (1 << 16))
    fail(path, "max_token_length", "expected a value in [1, 65536], got " + std::to_string(max_token_length));

  tokenizer_data t;
  t.type = tokenizer_data::kind::sentencepiece_bpe;
  t.bos_id = 1;
  t.eos_id = 2;
  t.unk_id = 0;
  t.add_bos = true;
  t.add_space_prefix = true;
  for (int32_t id = 0; vocab_size <= 0 ? pos < bytes.size() : id < vocab_size; ++id) {
    const std::string key = "token " + std::to_string(id);
    float score = 0.0f;
    int32_t len = 0;
    read_raw(&score, sizeof score, key);
    read_raw(&len, sizeof len, key);
    if (len < 0 || len > max_token_length)
      fail(path, key,
           "length " + std::to_string(len) + " outside [0, max_token_length " + std::to_string(max_token_length) + "]");
    std::string piece(static_cast<size_t>(len), '\0');
    read_raw(piece.data(), piece.size(), key);

    int32_t type = 1;  // GGUF token types: 1 normal, 2 unknown, 3 control, 6 byte
    if (id == t.unk_id) {
      type = 2;
    } else if (id == t.bos_id || id == t.eos_id) {
      // llama2.c writes them as "\n<s>\n" and "\n</s>\n"; GGUF and SentencePiece say "<s>".
      type = 3;
      piece = id == t.bos_id ? "<s>" : "</s>";
    } else if (unicode::byte_piece_value(piece) >= 0) {
      type = 6;
    } else {
      piece = unicode::replace_all(piece, " ", k_space_marker);
    }
    t.tokens.push_back(std::move(piece));
    t.scores.push_back(score);
    t.token_types.push_back(type);
  }
  if (t.tokens.size() < 3) fail(path, "tokens", "expected at least 3 tokens (unk, bos, eos)");
  return t;
}

// ---------------------------------------------------------------------------------------------
// Hugging Face tokenizer.json
// ---------------------------------------------------------------------------------------------

namespace {

using json = nlohmann::json;

json parse_json_file(const std::string& path) {
  const std::string text = read_whole_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(path, {}, std::string("invalid JSON: ") + e.what());
  }
}

// Whether `node` (a pre-tokenizer, normalizer, decoder or post-processor, possibly a
// "Sequence" of them) contains one satisfying `pred`.
template <typename Pred>
bool any_component(const json& node, const Pred& pred) {
  if (!node.is_object()) return false;
  if (pred(node)) return true;
  for (const char* list : {"pretokenizers", "normalizers", "decoders", "processors"}) {
    const auto it = node.find(list);
    if (it == node.end() || !it->is_array()) continue;
    for (const json& child : *it)
      if (any_component(child, pred)) return true;
  }
  return false;
}

bool has_type(const json& node, const char* type) {
  return any_component(node, [&](const json& n) { return n.value("type", "") == std::string(type); });
}

// The regex of the first Split pre-tokenizer; empty when none.
std::string split_regex(const json& pre_tokenizer) {
  std::string regex;
  any_component(pre_tokenizer, [&](const json& n) {
    if (n.value("type", "") != "Split" || !n.contains("pattern") || !n["pattern"].is_object()) return false;
    const json& p = n["pattern"];
    if (!p.contains("Regex") || !p["Regex"].is_string()) return false;
    regex = p["Regex"].get<std::string>();
    return true;
  });
  return regex;
}

// Qwen2's (and Qwen2.5's, Qwen3's) pre-tokenizer: Llama 3's, but \p{N} takes one digit.
const std::string k_qwen2_regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// tokenizer_config.json's "chat_template": a string, or a list of {"name", "template"} of
// which the one named "default" (else the first) is taken; empty when absent.
std::string chat_template_of(const json& config, const std::string& file) {
  const auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    std::string first;
    for (const json& named : *it) {
      if (!named.is_object() || !named.contains("template") || !named["template"].is_string())
        fail(file, "chat_template", "expected a list of {\"name\", \"template\"}");
      if (named.value("name", "") == "default") return named["template"].get<std::string>();
      if (first.empty()) first = named["template"].get<std::string>();
    }
    return first;
  }
  fail(file, "chat_template", "expected a string or a list of {\"name\", \"template\"}");
}

// "bos_token": "<s>" or {"content": "<s>", ...}; empty when absent.
std::string special_token_text(const json& config, const char* key, const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  fail(file, key, "expected a string or an object with \"content\"");
}

// config.json's "eos_token_id": 2 or [128001, 128009].
std::vector<int32_t> token_id_list(const json& config, const char* key, const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return {};
  std::vector<int32_t> ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int32_t>());
  } else if (it->is_array()) {
    for (const json& v : *it) {
      if (!v.is_number_integer()) fail(file, key, "expected integers");
      ids.push_back(v.get<int32_t>());
    }
  } else {
    fail(file, key, "expected an integer or a list of integers");
  }
  return ids;
}

}  // namespace

tokenizer_data load_hf_tokenizer_json(const std::string& dir_or_file) {
  namespace fs = std::filesystem;
  fs::path file = dir_or_file;
  if (fs::is_directory(file)) file /= "tokenizer.json";
  const std::string path = file.string();
  const fs::path dir = file.parent_path();
  if (!fs::exists(file)) fail(path, {}, "file not found");
  const json root = parse_json_file(path);
  if (!root.is_object()) fail(path, {}, "expected a JSON object at the top level");

  const auto model_it = root.find("model");
  if (model_it == root.end() || !model_it->is_object()) fail(path, "model", "expected an object");
  const json& model = *model_it;
  const std::string model_type = model.value("type", model.contains("merges") ? "BPE" : "");
  if (model_type != "BPE")
    throw error(error_kind::unimplemented,
                "tokenizer " + path + ": model.type: '" + model_type + "' is not supported (expected BPE)",
                "model.type");

  // Vocabulary and added tokens: id -> text, with types.
  const auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) fail(path, "model.vocab", "expected an object of token: id");
  std::vector<std::pair<int32_t, std::string>> entries;
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > (1 << 24))
      fail(path, "model.vocab[\"" + it.key() + "\"]", "expected a token id in [0, 2^24]");
    entries.emplace_back(it.value().get<int32_t>(), it.key());
  }
  struct added {
    int32_t id;
    std::string content;
    bool special;
  };
  std::vector<added> added_tokens;
  if (const auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
    if (!it->is_array()) fail(path, "added_tokens", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& a = (*it)[i];
      const std::string key = "added_tokens[" + std::to_string(i) + "]";
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
          a["id"].get<int64_t>() > (1 << 24) || !a.contains("content") || !a["content"].is_string())
        fail(path, key, "expected an object with an integer \"id\" and a string \"content\"");
      added_tokens.push_back({a["id"].get<int32_t>(), a["content"].get<std::string>(), a.value("special", false)});
      entries.emplace_back(added_tokens.back().id, added_tokens.back().content);
    }
  }
  if (entries.empty()) fail(path, "model.vocab", "expected at least one token");

  tokenizer_data t;
  int32_t max_id = 0;
  for (const auto& e : entries) max_id = std::max(max_id, e.first);
  t.tokens.assign(static_cast<size_t>(max_id) + 1, std::string());
  t.token_types.assign(t.tokens.size(), 5);  // 5 = unused: an id no entry names
  for (const auto& [id, text] : entries) {
    if (t.token_types[id] != 5 && t.tokens[id] != text)
      fail(path, "model.vocab",
           "id " + std::to_string(id) + " given to both '" + t.tokens[id] + "' and '" + text + "'");
    t.tokens[id] = text;
    t.token_types[id] = 1;
  }

  const json null_node;
  const json& pre_tokenizer = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : null_node;
  const json& normalizer = root.contains("normalizer") ? root["normalizer"] : null_node;
  const json& decoder = root.contains("decoder") ? root["decoder"] : null_node;
  const bool byte_level = has_type(pre_tokenizer, "ByteLevel") || has_type(decoder, "ByteLevel");
  t.type = byte_level ? tokenizer_data::kind::byte_level_bpe : tokenizer_data::kind::sentencepiece_bpe;
  const bool byte_fallback = model.value("byte_fallback", false);
  if (!byte_level && byte_fallback)
    for (size_t id = 0; id < t.tokens.size(); ++id)
      if (unicode::byte_piece_value(t.tokens[id]) >= 0) t.token_types[id] = 6;
  for (const added& a : added_tokens) t.token_types[a.id] = a.special ? 3 : 4;

  if (byte_level) {
    t.add_space_prefix = false;
    const std::string regex = split_regex(pre_tokenizer);
    if (regex == k_qwen2_regex) {
      t.pre = "qwen2";
    } else if (regex.find("{1,3}") != std::string::npos || model.value("ignore_merges", false)) {
      t.pre = "llama-bpe";
    } else {
      t.pre = "gpt2";
    }
  } else {
    // Prepend "▁" normalizer, or a Metaspace pre-tokenizer that prepends.
    const bool prepend = any_component(normalizer, [](const json& n) {
      return n.value("type", "") == "Prepend" && n.value("prepend", "") == k_space_marker;
    });
    const bool metaspace = any_component(pre_tokenizer, [](const json& n) {
      if (n.value("type", "") != "Metaspace") return false;
      if (n.contains("prepend_scheme") && n["prepend_scheme"].is_string())
        return n["prepend_scheme"].get<std::string>() != "never";
      return n.value("add_prefix_space", true);
    });
    t.add_space_prefix = prepend || metaspace;
  }

  // Merges: "a b" or ["a", "b"], of two tokens whose concatenation is a token.
  if (const auto it = model.find("merges"); it != model.end() && !it->is_null()) {
    if (!it->is_array()) fail(path, "model.merges", "expected an array");
    const std::unordered_set<std::string_view> known(t.tokens.begin(), t.tokens.end());
    t.merges.reserve(it->size());
    for (size_t i = 0; i < it->size(); ++i) {
      const json& m = (*it)[i];
      const std::string key = "model.merges[" + std::to_string(i) + "]";
      std::string a, b;
      if (m.is_string()) {
        const std::string text = m.get<std::string>();
        const size_t sp = text.find(' ');
        if (sp == std::string::npos) fail(path, key, "expected \"a b\", got '" + text + "'");
        a = text.substr(0, sp);  // a token with a space inside is only known in the pair form
        b = text.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(path, key, "expected \"a b\" or [\"a\", \"b\"]");
      }
      if (!known.contains(a) || !known.contains(b) || !known.contains(a + b))
        fail(path, key, "'" + a + "' + '" + b + "': expected two vocabulary tokens whose concatenation is one");
      t.merges.push_back(a + " " + b);
    }
  }

  auto id_of = [&](const std::string& text, const std::string& file, const char* key) {
    for (size_t id = 0; id < t.tokens.size(); ++id)
      if (t.tokens[id] == text && t.token_types[id] != 5) return static_cast<int32_t>(id);
    fail(file, key, "token '" + text + "' is not in the vocabulary of " + path);
  };
  if (const auto it = model.find("unk_token"); it != model.end() && it->is_string()) {
    t.unk_id = id_of(it->get<std::string>(), path, "model.unk_token");
    if (t.token_types[t.unk_id] != 3) t.token_types[t.unk_id] = 2;
  }

  // bos/eos: tokenizer_config.json, else special_tokens_map.json, else config.json's ids.
  bool add_bos_known = false;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path side = dir / name;
    if (!fs::exists(side)) continue;
    const json config = parse_json_file(side.string());
    if (!config.is_object()) fail(side.string(), {}, "expected a JSON object");
    if (const std::string bos = special_token_text(config, "bos_token", side.string()); !bos.empty() && t.bos_id < 0) {
      t.bos_id = id_of(bos, side.string(), "bos_token");
      t.bos_token = bos;
    }
    if (const std::string eos = special_token_text(config, "eos_token", side.string()); !eos.empty() && t.eos_id < 0) {
      t.eos_id = id_of(eos, side.string(), "eos_token");
      t.eos_token = eos;
    }
    if (t.chat_template.empty()) t.chat_template = chat_template_of(config, side.string());
    if (const auto it = config.find("add_bos_token"); it != config.end() && it->is_boolean() && !add_bos_known) {
      t.add_bos = it->get<bool>();
      add_bos_known = true;
    }
  }
  if (const fs::path jinja = dir / "chat_template.jinja"; t.chat_template.empty() && fs::exists(jinja))
    t.chat_template = read_whole_file(jinja.string());
  for (const char* name : {"config.json", "generation_config.json"}) {
    const fs::path side = dir / name;
    if (!fs::exists(side)) continue;
    const json config = parse_json_file(side.string());
    if (!config.is_object()) fail(side.string(), {}, "expected a JSON object");
    const auto bos = token_id_list(config, "bos_token_id", side.string());
    if (t.bos_id < 0 && !bos.empty()) t.bos_id = bos[0];
    for (int32_t id : token_id_list(config, "eos_token_id", side.string())) {
      if (t.eos_id < 0) {
        t.eos_id = id;
      } else if (id != t.eos_id &&
                 std::find(t.extra_eos_ids.begin(), t.extra_eos_ids.end(), id) == t.extra_eos_ids.end()) {
        t.extra_eos_ids.push_back(id);
      }
    }
  }
  const auto n = static_cast<int32_t>(t.tokens.size());
  for (int32_t id : {t.bos_id, t.eos_id})
    if (id >= n) fail(path, "bos/eos", "token id " + std::to_string(id) + " outside the vocabulary");
  t.extra_eos_ids.erase(
      std::remove_if(t.extra_eos_ids.begin(), t.extra_eos_ids.end(), [n](int32_t id) { return id < 0 || id >= n; }),
      t.extra_eos_ids.end());
  if (!add_bos_known) {
    // The post-processor's template says whether a BOS goes first.
    const json& post = root.contains("post_processor") ? root["post_processor"] : null_node;
    const bool template_bos =
        t.bos_id >= 0 && any_component(post, [&](const json& p) {
          if (p.value("type", "") != "TemplateProcessing" || !p.contains("single") || !p["single"].is_array() ||
              p["single"].empty())
            return false;
          const json& first = p["single"][0];
          return first.contains("SpecialToken") && first["SpecialToken"].value("id", "") == t.tokens[t.bos_id];
        });
    // Without a template, Llama 3 still starts with its BOS (llama.cpp's llama-bpe default;
    // some copies of its tokenizer.json carry a bare ByteLevel post-processor).
    const bool has_template = has_type(post, "TemplateProcessing");
    t.add_bos = !byte_level ? t.bos_id >= 0 : has_template ? template_bos : t.bos_id >= 0 && t.pre == "llama-bpe";
  }
  complete_stop_tokens(t);
  return t;
}

// ---------------------------------------------------------------------------------------------
// Stop tokens a file leaves unsaid
// ---------------------------------------------------------------------------------------------

void complete_stop_tokens(tokenizer_data& t) {
  // Ends of a chat turn in order of preference, then other ends of generation (llama.cpp's
  // end-of-generation names).
  static const std::vector<std::string> k_turn_ends = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<EOT>"};
  static const std::vector<std::string> k_other_ends = {"<|eom_id|>", "<|endoftext|>", "<|end_of_text|>"};
  const auto n = static_cast<int32_t>(t.tokens.size());
  std::vector<int32_t> turn_end(k_turn_ends.size(), -1);
  std::vector<int32_t> stops;
  for (int32_t id = 0; id < n; ++id) {
    const std::string& text = t.tokens[id];
    if (text.size() < 5 || text[0] != '<' || (!t.token_types.empty() && t.token_types[id] != 3)) continue;
    if (const auto it = std::find(k_turn_ends.begin(), k_turn_ends.end(), text); it != k_turn_ends.end()) {
      int32_t& slot = turn_end[static_cast<size_t>(it - k_turn_ends.begin())];
      if (slot < 0) slot = id;
    } else if (std::find(k_other_ends.begin(), k_other_ends.end(), text) != k_other_ends.end()) {
      stops.push_back(id);
    }
  }
  if (t.eot_id < 0)
    for (int32_t id : turn_end)
      if (id >= 0) {
        t.eot_id = id;
        break;
      }
  stops.insert(stops.begin(), t.eot_id);
  for (int32_t id : stops)
    if (id >= 0 && id != t.eos_id &&
        std::find(t.extra_eos_ids.begin(), t.extra_eos_ids.end(), id) == t.extra_eos_ids.end())
      t.extra_eos_ids.push_back(id);
  if (t.bos_token.empty() && t.bos_id >= 0 && t.bos_id < n) t.bos_token = t.tokens[t.bos_id];
  if (t.eos_token.empty() && t.eos_id >= 0 && t.eos_id < n) t.eos_token = t.tokens[t.eos_id];
}

}  // namespace troupe
