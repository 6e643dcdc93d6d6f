// The text stream: stop strings matched across token boundaries, UTF-8 characters never
// split, held-back text never retracted, and what is left handed out at the end. A byte
// vocabulary (one token per byte, id = 3 + byte) plus a few word tokens makes every split
// point reachable.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "src/model/text_stream.h"
#include "src/model/tokenizer.h"

namespace troupe {
namespace {

// Word tokens after the 259 of byte_vocabulary(): ids 259, 260, ...
const std::vector<std::string> kWords = {"llo world", "OP!"};

tokenizer make_tokenizer() {
  tokenizer_data d = byte_vocabulary();
  for (const auto& w : kWords) {
    d.tokens.push_back(w);
    d.token_types.push_back(1);
    d.scores.push_back(0.0f);
  }
  return tokenizer(d);
}

int32_t byte_id(char c) { return 3 + static_cast<unsigned char>(c); }
int32_t word_id(const std::string& w) {
  for (size_t i = 0; i < kWords.size(); ++i)
    if (kWords[i] == w) return static_cast<int32_t>(259 + i);
  ADD_FAILURE() << "no word token " << w;
  return 0;
}

// Feeds each byte of `s` as its own token; returns what take() handed out along the way.
std::string feed_bytes(text_stream& t, const std::string& s, bool* stopped = nullptr) {
  std::string taken;
  for (char c : s) {
    const bool stop = t.feed(byte_id(c));
    taken += t.take();
    if (stop) {
      if (stopped) *stopped = true;
      break;
    }
  }
  return taken;
}

class TextStream : public ::testing::Test {
 protected:
  tokenizer tok_ = make_tokenizer();
};

TEST_F(TextStream, StopStringSplitAcrossTokensCutsTheText) {
  text_stream t(tok_, {"STOP"});
  std::string taken = feed_bytes(t, "xyST");
  EXPECT_EQ(taken, "x") << "\"yST\" could still begin STOP";
  EXPECT_FALSE(t.stopped());
  EXPECT_TRUE(t.feed(word_id("OP!")));  // the match spans three tokens
  EXPECT_TRUE(t.stopped());
  taken += t.take();
  EXPECT_EQ(t.text(), "xy");
  EXPECT_EQ(taken, "xy");
  EXPECT_TRUE(t.feed(byte_id('z'))) << "a stopped stream stays stopped";
  t.finish();
  EXPECT_EQ(t.text(), "xy");
  EXPECT_TRUE(t.take().empty());
}

TEST_F(TextStream, EarliestStopStringWinsWhenSeveralMatchInOneToken) {
  text_stream t(tok_, {"world", "lo"});
  feed_bytes(t, "he");
  EXPECT_TRUE(t.feed(word_id("llo world")));
  EXPECT_EQ(t.text(), "hel");
}

TEST_F(TextStream, MultiByteCharacterSplitAcrossTokensIsHandedOutWhole) {
  text_stream t(tok_, {});
  const std::string euro = "\xE2\x82\xAC";  // U+20AC, three bytes, three tokens
  EXPECT_FALSE(t.feed(byte_id(euro[0])));
  EXPECT_TRUE(t.take().empty());
  t.feed(byte_id(euro[1]));
  EXPECT_TRUE(t.take().empty());
  t.feed(byte_id(euro[2]));
  EXPECT_EQ(t.take(), euro);
}

TEST_F(TextStream, HoldBackNeverEndsInsideACharacter) {
  text_stream t(tok_, {"abc"});  // holds back 2 bytes
  const std::string e_acute = "\xC3\xA9";
  std::string taken = feed_bytes(t, e_acute + "y");
  // 3 bytes, 2 held: the cut would fall between the two bytes of the e-acute.
  EXPECT_EQ(taken, "");
  taken += feed_bytes(t, "z");
  EXPECT_EQ(taken, e_acute);
  t.finish();
  taken += t.take();
  EXPECT_EQ(taken, e_acute + "yz");
}

TEST_F(TextStream, FinishHandsOutHeldTextAndACharacterCutShort) {
  text_stream t(tok_, {"abc"});
  EXPECT_EQ(feed_bytes(t, "ab"), "");
  t.feed(byte_id('\xC3'));    // the first byte of a two-byte character, and no more
  EXPECT_EQ(t.text(), "ab");  // not text until the character is complete
  EXPECT_EQ(t.take(), "");
  t.finish();
  EXPECT_EQ(t.take(), "ab\xEF\xBF\xBD");  // U+FFFD for the character cut short
  EXPECT_EQ(t.text(), "ab\xEF\xBF\xBD");
}

TEST_F(TextStream, NothingHandedOutIsEverRetracted) {
  // Random byte streams over a small alphabet hit stop strings at every offset: at each
  // step, what was handed out is a prefix of the final text, and at the end it is all of it.
  std::mt19937 rng(7);
  const std::string alphabet = "abcx\xC3\xA9";
  for (int trial = 0; trial < 300; ++trial) {
    text_stream t(tok_, {"abc", "ca", "xx\xC3\xA9"});
    std::string fed, taken;
    std::vector<std::string> snapshots;
    for (int i = 0; i < 24 && !t.stopped(); ++i) {
      const char c = alphabet[rng() % alphabet.size()];
      fed += c;
      t.feed(byte_id(c));
      taken += t.take();
      snapshots.push_back(taken);
    }
    t.finish();
    taken += t.take();
    EXPECT_EQ(taken, t.text()) << "fed " << fed;
    for (const auto& s : snapshots) EXPECT_EQ(t.text().compare(0, s.size(), s), 0) << "fed " << fed;
    for (const std::string stop : {"abc", "ca", "xx\xC3\xA9"})
      EXPECT_EQ(t.text().find(stop), std::string::npos) << "fed " << fed;
  }
}

}  // namespace
}  // namespace troupe
