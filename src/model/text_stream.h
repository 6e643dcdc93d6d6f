// The text of one generated sequence as it streams: token ids in, text that is final out.
// It detokenizes incrementally, ends the text at the first stop string (even one that spans
// several tokens), and holds back the tail that could still turn into a stop string, so
// that nothing handed out is ever retracted. Handed-out text never splits a UTF-8
// character. `troupe generate` and the gateway core both stream through it.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "src/model/tokenizer.h"

namespace troupe {

class text_stream {
 public:
  // The tokenizer must outlive the stream. Stop strings must not be empty (validate()
  // rejects them; they are ignored). The text continues a prompt: its first token's leading
  // space is real.
  text_stream(const tokenizer& tok, std::vector<std::string> stop_strings);

  // Appends the token's text. True when the text now contains a stop string: it is cut
  // where that string starts, and the stream is stopped (later feeds change nothing).
  bool feed(int32_t id);
  // The sequence ended: the bytes of an unfinished character the detokenizer holds are
  // appended (unless a stop string cut the text: they came after it), and nothing is held
  // back any more.
  void finish();

  // Text that became final since the last call: all that is left once stopped or finished,
  // otherwise all but the last (longest stop string - 1) bytes, backed up to a character
  // boundary. Valid until the next feed().
  std::string_view take();

  const std::string& text() const { return text_; }  // everything so far, cut at a stop string
  bool stopped() const { return stopped_; }
  bool has_stop_strings() const { return !stops_.empty(); }

 private:
  incremental_detokenizer detok_;
  std::vector<std::string> stops_;
  size_t hold_ = 0;  // bytes that may still begin a stop string: the longest one - 1
  std::string text_;
  size_t taken_ = 0;  // bytes of text_ already handed out
  bool stopped_ = false;
  bool finished_ = false;
};

}  // namespace troupe
