// The reference ids of the real tokenizers in ../shared/tokenizers (reference/NAME.json, made
// with transformers.js): reading them, and checking a tokenizer against them.
#pragma once
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "src/model/tokenizer.h"
#include "test_support.h"

namespace troupe::test {

// One text and what the reference tokenizer made of it: `ids` without BOS, special tokens
// in the text recognised, and `decoded` from them with special tokens kept.
struct tokenizer_case {
  std::string what;  // "texts[3]", "chats[1]"
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;
};

// texts[i] and chats[i] (the rendered chat, which decodes to itself) of reference/NAME.json.
inline std::vector<tokenizer_case> tokenizer_reference(const std::string& name) {
  std::ifstream in(tokenizers_dir() / "reference" / (name + ".json"), std::ios::binary);
  const auto root = nlohmann::json::parse(in);
  std::vector<tokenizer_case> cases;
  for (size_t i = 0; i < root["texts"].size(); ++i) {
    const auto& t = root["texts"][i];
    cases.push_back({"texts[" + std::to_string(i) + "]", t["text"], t["ids"], t["decoded"]});
  }
  for (size_t i = 0; i < root["chats"].size(); ++i) {
    const auto& c = root["chats"][i];
    cases.push_back({"chats[" + std::to_string(i) + "]", c["rendered"], c["ids"], c["rendered"]});
  }
  return cases;
}

inline std::string ids_text(const std::vector<int32_t>& ids) {
  std::ostringstream s;
  for (size_t i = 0; i < ids.size(); ++i) s << (i ? " " : "") << ids[i];
  return s.str();
}

// Every case id-exact and decoded back: empty, else one line per mismatch.
inline std::string reference_mismatches(const tokenizer& tok, const std::vector<tokenizer_case>& cases) {
  std::string out;
  for (const tokenizer_case& c : cases) {
    const std::vector<int32_t> got = tok.encode(c.text, /*add_bos=*/false);
    if (got != c.ids) out += c.what + " ids: got [" + ids_text(got) + "], expected [" + ids_text(c.ids) + "]\n";
    if (const std::string back = tok.decode(c.ids, /*skip_control=*/false); back != c.decoded)
      out += c.what + " decoded: got '" + back + "', expected '" + c.decoded + "'\n";
  }
  return out;
}

}  // namespace troupe::test
