// Tokenizer loaders: llama2.c's tokenizer.bin and Hugging Face's tokenizer.json.
#include "src/tokenizer_files.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>

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

// "<0x0A>": a SentencePiece byte-fallback token.
bool is_byte_piece(std::string_view s) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); };
  return s.size() == 6 && s.substr(0, 3) == "<0x" && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s.substr(i, from.size()) == from) {
      out += to;
      i += from.size();
    } else {
      out += s[i++];
    }
  }
  return out;
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
    } else if (is_byte_piece(piece)) {
      type = 6;
    } else {
      piece = replace_all(piece, " ", k_space_marker);
    }
    t.tokens.push_back(std::move(piece));
    t.scores.push_back(score);
    t.token_types.push_back(type);
  }
  if (t.tokens.size() < 3) fail(path, "tokens", "expected at least 3 tokens (unk, bos, eos)");
  return t;
}

tokenizer_data load_hf_tokenizer_json(const std::string& dir_or_file) {
  throw error(error_kind::unimplemented, "tokenizer " + dir_or_file + ": tokenizer.json loading not built yet");
}

}  // namespace troupe
