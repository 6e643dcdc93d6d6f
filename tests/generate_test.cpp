// The generation loop end to end on the shared tiny models: reference ids through the
// tokenizer, batched generation equal to single runs, stop conditions, streaming.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>

#include "kernels/ref/ref.h"
#include "src/engine/cpu_backend.h"
#include "src/cluster/generate.h"
#include "reference_run.h"
#include "test_support.h"
#include "troupe/error.h"

namespace troupe {
namespace {

using test::models_dir;
using test::read_reference;

struct engine {
  explicit engine(const std::filesystem::path& path, int32_t block_size = 16, int64_t max_batch = 512,
                  int64_t kv_bytes = 16 << 20)
      : model(open_model(path)), tok(model->tokenizer()) {
    for (const auto& v : kern::ref::variants()) registry.add(v);
    cpu_backend_options o;
    o.kv_bytes = kv_bytes;
    o.block_size = block_size;
    o.max_batch_tokens = max_batch;
    backend = std::make_unique<cpu_backend>(*model, registry, o);
    gopt.max_batch_tokens = max_batch;
    gopt.max_seq_len = model->config().max_seq_len;
  }
  std::vector<generation_output> run(const std::vector<generation_request>& reqs, const text_callback& cb = {}) {
    return generate(*backend, tok, reqs, gopt, cb);
  }
  std::unique_ptr<model_file> model;
  tokenizer tok;
  kernel_registry registry;
  std::unique_ptr<cpu_backend> backend;
  generate_options gopt;
};

generation_request greedy(const std::string& prompt, int32_t max_tokens) {
  generation_request r;
  r.prompt = prompt;
  r.sampling.max_tokens = max_tokens;
  return r;
}

void check_reference(const std::filesystem::path& model, const std::filesystem::path& ref_file) {
  const auto ref = read_reference(ref_file);
  engine e(model);
  std::string streamed;
  const auto out = e.run({greedy("Once upon a time", 64)}, [&](size_t, std::string_view t) { streamed += t; });
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].prompt_ids, ref.prompt_ids) << model;
  EXPECT_EQ(out[0].ids, ref.generated_ids) << model;
  EXPECT_EQ(out[0].finish_reason, "length");
  EXPECT_EQ("Once upon a time" + out[0].text, ref.text) << model;
  EXPECT_EQ(streamed, out[0].text);
}

TEST(Generate, Stories260kGgufReference) {
  TROUPE_REQUIRE_MODELS();
  check_reference(models_dir() / "stories260K/stories260K.gguf",
                  models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
}

TEST(Generate, Stories260kLlama2cReference) {
  TROUPE_REQUIRE_MODELS();
  check_reference(models_dir() / "stories260K/stories260K.bin",
                  models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
}

TEST(Generate, Tinystories656kHuggingFaceReference) {
  TROUPE_REQUIRE_MODELS();
  check_reference(models_dir() / "tinystories-656K",
                  models_dir() / "tinystories-656K/reference/once_upon_a_time.gen64.ids.txt");
}

TEST(Generate, BatchedChunkedEqualsSingleRuns) {
  TROUPE_REQUIRE_MODELS();
  const auto model = models_dir() / "stories260K/stories260K.gguf";
  std::vector<generation_request> reqs = {greedy("Once upon a time", 40), greedy("The little dog", 25),
                                          greedy("Lily and Ben went to the park to play with a ball", 33)};
  reqs.push_back(reqs[0]);              // the same prompt twice in one batch
  reqs[3].sampling.temperature = 0.9f;  // seeded sampling: same draws batched or not
  reqs[3].sampling.seed = 11;
  std::vector<generation_output> single;
  for (const auto& r : reqs) single.push_back(engine(model).run({r})[0]);
  // one batch, prefill cut into 4-token chunks, 5-token blocks that divide no prompt
  engine batched(model, 5, 4);
  const auto together = batched.run(reqs);
  ASSERT_EQ(together.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(together[i].prompt_ids, single[i].prompt_ids) << "request " << i;
    EXPECT_EQ(together[i].ids, single[i].ids) << "request " << i;
    EXPECT_EQ(together[i].text, single[i].text) << "request " << i;
    EXPECT_EQ((int32_t)together[i].ids.size(), reqs[i].sampling.max_tokens);
  }
  EXPECT_NE(together[3].ids, together[0].ids);
}

TEST(Generate, StopStringEndsTheTextBeforeIt) {
  TROUPE_REQUIRE_MODELS();
  engine e(models_dir() / "stories260K/stories260K.gguf");
  generation_request r = greedy("Once upon a time", 64);
  r.sampling.stop_strings = {"Lily"};
  std::string streamed;
  const auto out = e.run({r}, [&](size_t, std::string_view t) { streamed += t; });
  EXPECT_EQ(out[0].text, ", there was a little girl named ");
  EXPECT_EQ(out[0].finish_reason, "stop");
  EXPECT_EQ(streamed, out[0].text);
}

TEST(Generate, StopIdEndsTheSequence) {
  TROUPE_REQUIRE_MODELS();
  engine e(models_dir() / "stories260K/stories260K.gguf");
  const auto ref = read_reference(models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
  generation_request r = greedy("Once upon a time", 64);
  r.sampling.stop_ids = {ref.generated_ids[5]};
  const auto out = e.run({r});
  EXPECT_EQ(out[0].finish_reason, "stop");
  EXPECT_EQ(out[0].ids, std::vector<int32_t>(ref.generated_ids.begin(), ref.generated_ids.begin() + 6));
  EXPECT_EQ(out[0].text, ", there was a little");  // the stop id's own text is not part of it
}

TEST(Generate, TextContinuesThePromptWithItsSpaces) {
  TROUPE_REQUIRE_MODELS();
  engine e(models_dir() / "stories260K/stories260K.gguf");
  const auto out = e.run({greedy("The dog", 3)});
  ASSERT_EQ(out[0].ids.size(), 3u);
  EXPECT_EQ(out[0].text,
            e.tok.token_bytes(out[0].ids[0]) + e.tok.token_bytes(out[0].ids[1]) + e.tok.token_bytes(out[0].ids[2]));
  EXPECT_EQ(out[0].text[0], ' ') << out[0].text;
}

TEST(Generate, RunningOutOfKvBlocksIsOverloaded) {
  TROUPE_REQUIRE_MODELS();
  // stories260K: a 16-token block holds 5 layers x K,V x 16 x 32 floats = 20 KiB; two blocks
  // hold 32 positions, fewer than 5 + 64
  engine e(models_dir() / "stories260K/stories260K.gguf", 16, 512, 2 * 20480);
  ASSERT_EQ(e.backend->kv_blocks(), 2);
  try {
    e.run({greedy("Once upon a time", 64)});
    ADD_FAILURE() << "generated past the KV pool";
  } catch (const error& err) {
    EXPECT_EQ(err.kind(), error_kind::overloaded) << err.what();
  }
  // the same engine serves a request that fits
  EXPECT_EQ(e.run({greedy("Once upon a time", 20)})[0].ids.size(), 20u);
}

// The policy decides the steps now: more prompts than tokens per step take turns, and a
// pool that holds each request but not all of them together preempts and recomputes; the
// tokens are those of single runs either way.
TEST(Generate, MorePromptsThanOneStepAndThanThePoolHoldsTakeTurns) {
  TROUPE_REQUIRE_MODELS();
  const auto model = models_dir() / "stories260K/stories260K.gguf";
  std::vector<generation_request> reqs;
  for (const char* p : {"Once upon a time", "The little dog", "Tom had a red ball", "One day", "The sun", "Lily"})
    reqs.push_back(greedy(p, 40));
  engine single(model);
  std::vector<generation_output> alone;
  for (const auto& r : reqs) alone.push_back(single.run({r})[0]);

  engine narrow(model, 16, 4);  // 4 tokens per step, 6 prompts
  const auto turns = narrow.run(reqs);
  // 8 blocks of 16 positions: each request needs 3 or 4, all six together about 20
  engine small(model, 16, 512, 8 * 20480);
  ASSERT_EQ(small.backend->kv_blocks(), 8);
  generation_timings tm;
  const auto squeezed = generate(*small.backend, small.tok, reqs, small.gopt, {}, &tm);
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(turns[i].ids, alone[i].ids) << "request " << i;
    EXPECT_EQ(turns[i].text, alone[i].text) << "request " << i;
    EXPECT_EQ(squeezed[i].ids, alone[i].ids) << "request " << i;
    EXPECT_EQ(squeezed[i].finish_reason, alone[i].finish_reason) << "request " << i;
  }
  // Preempted sequences were computed again: more prefill than the prompts hold.
  int64_t prompt_tokens = 0, generated = 0;
  for (const auto& o : squeezed) prompt_tokens += (int64_t)o.prompt_ids.size(), generated += (int64_t)o.ids.size();
  EXPECT_GT(tm.prefill_tokens, prompt_tokens);
  // Every token but each request's last one is fed at least once.
  EXPECT_GE(tm.prefill_tokens + tm.decode_tokens, prompt_tokens + generated - (int64_t)reqs.size());
}

// A stop string ends one request of a batch (the policy, which knows no stop strings, is
// told to cancel it); the others run on as if alone.
TEST(Generate, AStopStringInABatchEndsOnlyItsRequest) {
  TROUPE_REQUIRE_MODELS();
  engine e(models_dir() / "stories260K/stories260K.gguf");
  generation_request stopped = greedy("Once upon a time", 64);
  stopped.sampling.stop_strings = {"Lily"};
  const generation_request other = greedy("Once upon a time", 64);
  const auto alone = e.run({other})[0];
  std::map<size_t, std::string> streamed;
  const auto out = e.run({stopped, other}, [&](size_t i, std::string_view t) { streamed[i] += t; });
  EXPECT_EQ(out[0].text, ", there was a little girl named ");
  EXPECT_EQ(out[0].finish_reason, "stop");
  EXPECT_LT(out[0].ids.size(), alone.ids.size());
  EXPECT_EQ(out[1].ids, alone.ids);
  EXPECT_EQ(out[1].finish_reason, "length");
  EXPECT_EQ(streamed[0], out[0].text);
  EXPECT_EQ(streamed[1], out[1].text);
}

// The context bounds prompt + generated: a request ends there ("length"), and a prompt that
// fills it is refused by name.
TEST(Generate, TheContextEndsARequestAndRefusesAPromptThatFillsIt) {
  TROUPE_REQUIRE_MODELS();
  engine e(models_dir() / "stories260K/stories260K.gguf");
  const auto full = e.run({greedy("Once upon a time", 64)})[0];
  ASSERT_EQ(full.prompt_ids.size(), 5u);
  e.gopt.max_seq_len = 12;
  const auto cut = e.run({greedy("Once upon a time", 64)})[0];
  EXPECT_EQ(cut.finish_reason, "length");
  EXPECT_EQ(cut.ids, std::vector<int32_t>(full.ids.begin(), full.ids.begin() + 7));
  e.gopt.max_seq_len = 5;
  try {
    e.run({greedy("Once upon a time", 4)});
    ADD_FAILURE() << "a prompt that fills the context ran";
  } catch (const error& err) {
    EXPECT_EQ(err.kind(), error_kind::failed);
    EXPECT_EQ(err.field(), "prompt");
  }
}

TEST(Generate, RejectsInvalidRequests) {
  TROUPE_REQUIRE_MODELS();
  engine e(models_dir() / "stories260K/stories260K.gguf");
  generation_request r = greedy("Once", 4);
  r.sampling.top_p = 0.0f;
  EXPECT_THROW(e.run({r}), error);
}

}  // namespace
}  // namespace troupe
