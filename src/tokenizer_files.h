// Tokenizer vocabularies stored beside a model rather than inside it.
#pragma once
#include <string>

#include "troupe/model.h"

namespace troupe {

// llama2.c's tokenizer.bin: int32 max_token_length, then per token a float score, an
// int32 byte length and the bytes. SentencePiece BPE with bos 1, eos 2.
tokenizer_data load_llama2c_tokenizer(const std::string& path);

// A Hugging Face tokenizer.json.
tokenizer_data load_hf_tokenizer_json(const std::string& path);

}  // namespace troupe
