// End-to-end golden tests on the shared tiny models: greedy decoding of "Once upon a time"
// must give exactly the reference ids, and every forward step's logits must match the
// reference logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "kernels/ref/ref.h"
#include "src/cpu_backend.h"
#include "reference_run.h"
#include "test_support.h"

namespace troupe {
namespace {

using test::models_dir;
using test::read_floats;
using test::read_reference;

struct engine {
  explicit engine(const std::string& path, int32_t block_size = 16) : model(open_model(path)) {
    for (const auto& v : kern::ref::variants()) registry.add(v);
    cpu_backend_options o;
    o.kv_bytes = 8 << 20;
    o.block_size = block_size;
    backend = std::make_unique<cpu_backend>(*model, registry, o);
  }
  std::unique_ptr<model_file> model;
  kernel_registry registry;
  std::unique_ptr<cpu_backend> backend;
};

// Feeds the prompt and then each greedy token one position at a time; row r of the
// reference logits is the output after feeding the token at position r (rows 0..3 consume
// the prompt tokens after BOS, row 4 yields the first generated token).
void check_stories260k(const std::string& model_path) {
  const auto ref = read_reference(models_dir() / "stories260K/reference/once_upon_a_time.gen64.ids.txt");
  const auto logits = read_floats(models_dir() / "stories260K/reference/once_upon_a_time.gen64.logits.f32");
  ASSERT_EQ(ref.prompt_ids.size(), 5u);
  ASSERT_EQ(ref.generated_ids.size(), 64u);
  engine e(model_path);
  const int64_t vocab = e.backend->vocab_size();
  ASSERT_EQ(vocab, 512);
  ASSERT_EQ(logits.size(), 68u * 512u);

  std::vector<int32_t> table;
  for (int32_t b = 0; b < 5; ++b) table.push_back(b);  // 80 positions
  std::vector<int32_t> generated;
  int32_t token = ref.prompt_ids[0];
  for (int32_t pos = 0; pos < 68; ++pos) {
    step_plan plan;
    plan.step_id = (uint64_t)pos;
    seq_work w;
    w.seq_id = 1;
    w.tokens = {token};
    w.start_pos = pos;
    w.block_table = table;
    plan.seqs.push_back(w);
    const step_result r = e.backend->step(plan);
    const auto got = e.backend->last_logits(0);
    float worst = 0.0f;
    for (int64_t i = 0; i < vocab; ++i) worst = std::max(worst, std::fabs(got[i] - logits[pos * vocab + i]));
    EXPECT_LE(worst, 1e-4f) << model_path << ": logits row " << pos;
    if (pos + 1 < (int32_t)ref.prompt_ids.size()) {
      token = ref.prompt_ids[pos + 1];
    } else {
      token = r.outputs[0].token;
      generated.push_back(token);
    }
  }
  EXPECT_EQ(generated, ref.generated_ids) << model_path;
}

TEST(Golden, Stories260kGgufGreedyIdsAndLogits) {
  TROUPE_REQUIRE_MODELS();
  check_stories260k(models_dir() / "stories260K/stories260K.gguf");
}

TEST(Golden, Stories260kLlama2cGreedyIdsAndLogits) {
  TROUPE_REQUIRE_MODELS();
  check_stories260k(models_dir() / "stories260K/stories260K.bin");
}

}  // namespace
}  // namespace troupe
