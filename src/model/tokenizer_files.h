// Loaders that read a tokenizer from its file format into a tokenizer_data
// (include/troupe/model.h): llama2.c's tokenizer.bin and Hugging Face's tokenizer.json.
#pragma once
#include <cstdint>
#include <string>

#include "troupe/model.h"

namespace troupe {

// llama2.c tokenizer file: int32 max_token_length, then per token: float score, int32 len,
// len bytes. A SentencePiece BPE vocabulary with bos 1, eos 2, unk 0 and "<0xXX>" byte tokens;
// its pieces carry real spaces where SentencePiece has U+2581, which this normalizes back.
// Reads `vocab_size` tokens (the checkpoint's vocab size), or every token in the file when
// vocab_size <= 0. Throws troupe::error naming the file and what was expected.
tokenizer_data load_llama2c_tokenizer(const std::string& path, int32_t vocab_size);

// Hugging Face tokenizer.json (`dir_or_file` is the file or the directory holding it) with
// model.type "BPE". ByteLevel pre-tokenizer or decoder => byte_level_bpe, else
// sentencepiece_bpe (with byte fallback). bos/eos come from tokenizer_config.json or
// special_tokens_map.json beside it, else from config.json / generation_config.json.
// Throws troupe::error naming the file and the key on a malformed file.
tokenizer_data load_hf_tokenizer_json(const std::string& dir_or_file);

}  // namespace troupe
