// Tokenizer files beside a model. The tokenizer branch owns the Hugging Face reader; this
// file holds the llama2.c reader until then.
#include "src/tokenizer_files.h"

#include <cstring>

#include "src/mmap_file.h"
#include "troupe/error.h"

namespace troupe {

tokenizer_data load_llama2c_tokenizer(const std::string& path) {
  const mapped_file f(path);
  const uint8_t* p = f.data();
  const size_t size = f.size();
  size_t pos = 0;
  auto read_i32 = [&](const char* what) {
    if (size - pos < 4)
      throw error(error_kind::failed, path + ": truncated llama2.c tokenizer while reading " + std::string(what) +
                                          " at offset " + std::to_string(pos));
    int32_t v;
    std::memcpy(&v, p + pos, 4);
    pos += 4;
    return v;
  };
  const int32_t max_len = read_i32("max_token_length");
  if (max_len <= 0 || max_len > 1 << 16)
    throw error(error_kind::failed, path + ": max_token_length " + std::to_string(max_len) + " (expected 1..65536)");
  tokenizer_data t;
  t.type = tokenizer_data::kind::sentencepiece_bpe;
  t.bos_id = 1;
  t.eos_id = 2;
  t.unk_id = 0;
  while (pos < size) {
    const int32_t bits = read_i32("a token score");
    float score;
    std::memcpy(&score, &bits, 4);
    const int32_t len = read_i32("a token length");
    if (len < 0 || len > max_len || static_cast<size_t>(len) > size - pos)
      throw error(error_kind::failed, path + ": token " + std::to_string(t.tokens.size()) + " has length " +
                                          std::to_string(len) + " at offset " + std::to_string(pos - 4) +
                                          " (expected 0.." + std::to_string(max_len) + " within the file)");
    std::string piece(reinterpret_cast<const char*>(p + pos), static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    // llama2.c's export wraps the control pieces in newlines ("\n<s>\n"); GGUF does not.
    if (piece == "\n<s>\n" || piece == "\n</s>\n") piece = piece.substr(1, piece.size() - 2);
    // and writes spaces as ' ' where SentencePiece vocabularies (and tokenizer_data) use U+2581.
    std::string spm;
    for (char ch : piece) spm += ch == ' ' ? std::string("\xe2\x96\x81") : std::string(1, ch);
    piece = std::move(spm);
    int32_t type = 1;  // normal
    if (t.tokens.size() == 0) {
      type = 2;  // unknown
    } else if (t.tokens.size() <= 2) {
      type = 3;  // control
    } else if (piece.size() == 6 && piece.starts_with("<0x") && piece.back() == '>') {
      type = 6;  // byte
    }
    t.tokens.push_back(std::move(piece));
    t.scores.push_back(score);
    t.token_types.push_back(type);
  }
  if (t.tokens.size() < 3)
    throw error(error_kind::failed,
                path + ": " + std::to_string(t.tokens.size()) + " tokens (expected at least <unk>, <s>, </s>)");
  return t;
}

tokenizer_data load_hf_tokenizer_json(const std::string& path) {
  throw error(error_kind::unimplemented, path + ": reading tokenizer.json is not built yet (tokenizer branch)");
}

}  // namespace troupe
