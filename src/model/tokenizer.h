// The tokenizers of the inference engine: SentencePiece-style BPE with byte fallback and
// byte-level BPE (Llama 3), built from a tokenizer_data; and the incremental detokenizer
// that turns a stream of token ids into whole UTF-8 characters.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "src/model/unicode_text.h"
#include "troupe/model.h"

namespace troupe {

// A value type: copyable, and safe to use from several threads at once (every method is
// const and keeps no cache).
class tokenizer {
 public:
  // Throws troupe::error when the data is inconsistent (a merge naming an unknown token,
  // bos/eos outside the vocabulary).
  explicit tokenizer(tokenizer_data data);

  // Text to ids. `parse_special`: control and user-defined tokens written in the text
  // ("<|eot_id|>", "<s>") become their id instead of being tokenized as text (pass false
  // for text that must not smuggle in control tokens).
  // Byte-level pre-tokenizer by data.pre: "gpt2"/"gpt-2" the GPT-2 pattern, "qwen2" (and
  // "deepseek-r1-qwen") Qwen2's, anything else the Llama 3 pattern; "llama-bpe"/"llama3" also
  // take a word already in the vocabulary whole (Hugging Face's ignore_merges).
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = true) const;

  // The raw bytes a token stands for ("▁the" -> " the", "<0x0A>" -> "\n", "Ġthe" -> " the");
  // a control or user-defined token gives its text. Not necessarily valid UTF-8 alone.
  std::string token_bytes(int32_t id) const;

  // Ids to text: control tokens (BOS, EOS, <|eot_id|>) are skipped unless `skip_control` is
  // false (then they give their text, as Hugging Face's skip_special_tokens=False), and the
  // space SentencePiece adds in front of the text is removed from the first text token.
  // Bytes are returned as they are (use incremental_detokenizer for text that must be valid
  // UTF-8).
  std::string decode(const std::vector<int32_t>& ids, bool skip_control = true) const;

  int32_t bos() const { return data_.bos_id; }
  int32_t eos() const { return data_.eos_id; }
  int32_t eot() const { return data_.eot_id; }  // ends a chat turn; -1 when unknown
  bool is_eos(int32_t id) const;                // eos, eot or one of extra_eos_ids: generation stops
  int32_t vocab_size() const { return static_cast<int32_t>(data_.tokens.size()); }
  bool is_control(int32_t id) const;
  const tokenizer_data& data() const { return data_; }

  // Whether the first text token after BOS (or at the start) carries a space added by encode.
  bool strips_leading_space() const {
    return data_.type == tokenizer_data::kind::sentencepiece_bpe && data_.add_space_prefix;
  }

 private:
  struct merge_rule {
    int32_t rank;
    int32_t result;
  };
  struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using piece_map = std::unordered_map<std::string, int32_t, string_hash, std::equal_to<>>;

  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void encode_sentencepiece(std::string_view text, bool prefix_space, std::vector<int32_t>& out) const;
  void encode_byte_level(std::string_view text, std::vector<int32_t>& out) const;
  // BPE over `work`: symbols start as given (byte ranges with ids, -1 = not in the vocab)
  // and merge by score (no merges) or by merge rank; appends the resulting ids.
  struct symbol;
  void merge_symbols(std::string_view work, std::vector<symbol>& symbols, std::vector<int32_t>& out) const;
  int32_t find_piece(std::string_view piece) const;
  int32_t checked_id(int32_t id) const;  // throws troupe::error outside the vocabulary

  tokenizer_data data_;
  piece_map piece_to_id_;
  std::unordered_map<uint64_t, merge_rule> merges_;  // key: left id << 32 | right id
  std::unordered_set<uint64_t> adjacent_pairs_;      // SentencePiece: code points a << 32 | b adjacent in a token
  std::vector<std::string> bytes_;                   // token_bytes per id
  std::vector<uint8_t> control_;                     // per id
  std::array<int32_t, 256> byte_token_{};            // the token of each byte value, -1 if none
  // Tokens matched whole in the text, grouped by first byte, longest first.
  std::array<std::vector<int32_t>, 256> specials_by_first_byte_;
  bool use_merges_ = false;     // rank merges (else SentencePiece scores)
  bool ignore_merges_ = false;  // byte-level: a word already in the vocab is one token (Llama 3)
  unicode::pre_tokenizer pattern_ = unicode::pre_tokenizer::llama3;  // byte-level
};

// Streams text from ids without ever emitting a broken UTF-8 character: an incomplete
// trailing sequence is held back until complete; bytes that cannot form a character become
// U+FFFD (at flush for a sequence cut short). Control tokens produce no text. Refers to the
// tokenizer, which must outlive it.
class incremental_detokenizer {
 public:
  // The space SentencePiece added in front of the text is removed from the first text token
  // after a BOS, as llama.cpp does. at_sequence_start: also from the first token fed (ids of
  // a sequence without BOS); false (the default) suits streaming the continuation of a
  // prompt, whose first token's space is real.
  explicit incremental_detokenizer(const tokenizer& tok, bool at_sequence_start = false)
      : tok_(&tok), at_start_(at_sequence_start) {}

  std::string feed(int32_t id);
  std::string flush();

 private:
  const tokenizer* tok_;
  bool at_start_;
  std::string pending_;  // bytes of an incomplete trailing character
};

// A vocabulary of <unk>, <s>, </s> and the 256 byte tokens <0x00>..<0xFF>: a gateway that
// needs a tokenizer but no model file (benchmarks and tests with a model-free backend).
tokenizer_data byte_vocabulary();

}  // namespace troupe
