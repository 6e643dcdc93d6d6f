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
// sentencepiece_bpe (with byte fallback). The byte-level pre-tokenizer is named from the
// Split regex: Qwen2's (digits one by one) => "qwen2"; Llama 3's (\p{N}{1,3}) or
// ignore_merges => "llama-bpe"; else "gpt2". bos/eos (ids and texts) and chat_template come
// from tokenizer_config.json or special_tokens_map.json beside it (the template also from
// chat_template.jinja), more eos ids from config.json / generation_config.json; then
// complete_stop_tokens. Throws troupe::error naming the file and the key on a malformed file.
tokenizer_data load_hf_tokenizer_json(const std::string& dir_or_file);

// What a file need not say about ending generation, found the way llama.cpp does: control
// tokens (any token when the vocabulary has no types) named like an end of turn. eot_id,
// when unset, becomes the first of <|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <EOT>
// in the vocabulary; eot_id and any of <|eom_id|>, <|endoftext|>, <|end_of_text|> join
// extra_eos_ids unless they are eos_id. bos_token and eos_token, when empty, get the texts of
// bos_id and eos_id.
void complete_stop_tokens(tokenizer_data& t);

}  // namespace troupe
