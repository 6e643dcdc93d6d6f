// The architectures beside Llama, against llama.cpp as the oracle. Each model is synthesized
// by `troupe model synth` (seeded, so the test regenerates the very file the reference was
// made from), 32 tokens are teacher-forced one position at a time through the CPU backend,
// and every position's logits must match llama.cpp's for the same file within the stated
// tolerance. tests/data/arch_logits/README.md says how the references were made.
//
// Mistral's sliding window has no oracle here (llama.cpp computes full attention for it):
// with a window longer than the sequence it must equal llama.cpp's full attention, and with
// a short one a one-layer model must give at position p what it gives for the last
// `window` tokens alone (RoPE scores depend only on relative positions).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "kernels/cpu/cpu.h"
#include "kernels/ref/ref.h"
#include "src/engine/cpu_backend.h"
#include "test_support.h"

namespace troupe {
namespace {

namespace fs = std::filesystem;
using test::run_command;
using test::troupe_bin;

constexpr int64_t kSteps = 32, kVocab = 384;

// The 32 teacher-forced ids: BOS, then a fixed walk over the vocabulary.
std::vector<int32_t> oracle_ids() {
  std::vector<int32_t> ids = {1};
  for (int i = 0; i < kSteps - 1; ++i) ids.push_back((i * 37 + 11) % 380 + 3);
  return ids;
}

// The shape every reference was made with (dims multiples of 256, as K-quants need).
std::string synth(const fs::path& dir, const std::string& arch, const std::string& extra = "", int layers = 2) {
  const std::string out =
      (dir / (arch + std::to_string(layers) + "_" + std::to_string(std::hash<std::string>{}(extra)) + ".gguf"))
          .string();
  const auto r = run_command("(" + troupe_bin() + " --log-level warn model synth --arch " + arch +
                             " --dim 256 --layers " + std::to_string(layers) +
                             " --heads 4 --kv-heads 2 --ffn 512 --vocab 384 --context 256 --seed 7 --dtype f32 " +
                             extra + " --out " + out + ")");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return out;
}

std::vector<float> read_f32(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<float> v;
  float x;
  while (in.read(reinterpret_cast<char*>(&x), sizeof x)) v.push_back(x);
  return v;
}

// Logits after feeding ids[0..p], for every p, one position per step (KV cache carried).
std::vector<float> teacher_forced(const std::string& path, const std::vector<int32_t>& ids, bool fast = true) {
  auto model = open_model(path);
  kernel_registry reg;
  for (const auto& v : kern::ref::variants()) reg.add(v);
  if (fast) kern::cpu::register_all(reg);
  cpu_backend_options o;
  o.n_threads = 2;
  o.kv_bytes = 8 << 20;
  cpu_backend b(*model, reg, o);
  std::vector<int32_t> table;
  for (int32_t i = 0; i < (int32_t)(ids.size() + 15) / 16; ++i) table.push_back(i);
  std::vector<float> out;
  for (size_t p = 0; p < ids.size(); ++p) {
    step_plan plan;
    plan.step_id = p;
    seq_work w;
    w.seq_id = 1;
    w.tokens = {ids[p]};
    w.start_pos = (int32_t)p;
    w.block_table = table;
    plan.seqs.push_back(w);
    b.step(plan);
    const auto l = b.last_logits(0);
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

float worst_diff(const std::vector<float>& a, const std::vector<float>& b, size_t from = 0, size_t to = SIZE_MAX) {
  float worst = 0.0f;
  for (size_t i = from; i < std::min({a.size(), b.size(), to}); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

struct arch_case {
  const char* arch;
  const char* extra;  // synth flags beyond the shared shape
  const char* reference;
};

class ArchOracle : public ::testing::TestWithParam<arch_case> {};

// Logits of these models are of order 0.1-1; f32 weights, f32 KV on both sides: the
// differences are summation order only.
constexpr float kTolerance = 2e-4f;

TEST_P(ArchOracle, TeacherForcedLogitsMatchLlamaCpp) {
  const arch_case& c = GetParam();
  const auto dir = fs::path(::testing::TempDir()) / ("troupe_oracle_" + std::string(c.arch));
  fs::create_directories(dir);
  const auto ref = read_f32(fs::path(TROUPE_TEST_DATA_DIR) / "arch_logits" / c.reference);
  ASSERT_EQ(ref.size(), (size_t)(kSteps * kVocab)) << c.reference;
  const std::string model = synth(dir, c.arch, c.extra);
  for (bool fast : {false, true}) {
    const auto got = teacher_forced(model, oracle_ids(), fast);
    ASSERT_EQ(got.size(), ref.size());
    for (int64_t p = 0; p < kSteps; ++p)
      EXPECT_LE(worst_diff(got, ref, p * kVocab, (p + 1) * kVocab), kTolerance)
          << c.arch << (fast ? " (cpu variants)" : " (reference kernels)") << ": logits at position " << p;
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, ArchOracle,
                         ::testing::Values(arch_case{"llama", "", "llama.f32"}, arch_case{"qwen2", "", "qwen2.f32"},
                                           arch_case{"mistral", "--sliding-window 64", "mistral.f32"}),
                         [](const auto& info) { return std::string(info.param.arch); });

TEST(ArchWindow, AOneLayerModelSeesOnlyTheLastWindowOfTokens) {
  const auto dir = fs::path(::testing::TempDir()) / "troupe_window";
  fs::create_directories(dir);
  constexpr int64_t W = 8;
  const std::string windowed = synth(dir, "mistral", "--sliding-window 8", 1);
  const auto ids = oracle_ids();
  const auto whole = teacher_forced(windowed, ids);
  for (int64_t p = W; p < kSteps; p += 5) {
    const std::vector<int32_t> tail(ids.begin() + (p - W + 1), ids.begin() + p + 1);
    const auto alone = teacher_forced(windowed, tail);
    const size_t last = (size_t)(W - 1) * kVocab;
    float worst = 0.0f;
    for (int64_t i = 0; i < kVocab; ++i) worst = std::max(worst, std::fabs(whole[p * kVocab + i] - alone[last + i]));
    EXPECT_LE(worst, 1e-3f) << "position " << p << " with a window of " << W;
  }
  // And the window matters: full attention over the same weights differs past it.
  const std::string full = synth(dir, "mistral", "--sliding-window 0", 1);
  const auto unwindowed = teacher_forced(full, ids);
  EXPECT_LE(worst_diff(whole, unwindowed, 0, W * kVocab), 1e-5f) << "inside the window nothing may change";
  EXPECT_GT(worst_diff(whole, unwindowed, W * kVocab), 1e-3f) << "past the window the logits must change";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace troupe
