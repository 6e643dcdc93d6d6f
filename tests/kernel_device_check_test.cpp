// The device path of the kernel checks (what `troupe kernels check` does with CUDA
// variants), run on the CPU: stand-in "GPU" variants are the reference functions registered
// under the CUDA backend, and a stand-in device copies every buffer up and back. Without a
// device they are listed as skipped with the reason; a device error fails the variant only.
#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <vector>

#include "kernels/check.h"
#include "kernels/ref/ref.h"
#include "troupe/error.h"
#include "troupe/kernel_registry.h"

namespace {

using troupe::kern::check_options;
using troupe::kern::check_variants;
using troupe::kern::variant_device;

// The reference of every op, plus the same functions as CUDA variants named "stand_in.gpu".
void add_with_stand_ins(troupe::kernel_registry& reg) {
  for (const auto& v : troupe::kern::ref::variants()) {
    reg.add(v);
    troupe_kernel_variant g = v;
    g.backend = TROUPE_BACKEND_CUDA;
    g.name = "stand_in.gpu";
    reg.add(g);
  }
}

// Memory that is not the host's buffers: uploads are copies, results must be downloaded.
class copying_device : public variant_device {
 public:
  const troupe_kctx* ctx() const override { return &ctx_; }
  void* upload(const void* host, size_t bytes) override {
    auto& b = buffers_.emplace_back(bytes + 1);
    if (bytes) std::memcpy(b.data(), host, bytes);
    ++uploads;
    return b.data();
  }
  void download(void* host, const void* dev, size_t bytes) override {
    if (fail_downloads) throw troupe::error(troupe::error_kind::failed, "cuda: illegal address (stand-in)");
    if (bytes) std::memcpy(host, dev, bytes);
    ++downloads;
  }
  void release() override { buffers_.clear(); }
  double seconds_per_call(const std::function<void()>& call) override {
    call();
    return 1e-3;
  }
  std::string describe() const override { return "stand-in device"; }

  int uploads = 0, downloads = 0;
  bool fail_downloads = false;

 private:
  troupe_kctx ctx_{};
  std::deque<std::vector<char>> buffers_;
};

TEST(KernelDeviceCheck, CudaVariantsWithoutADeviceAreSkippedWithTheReason) {
  troupe::kernel_registry reg;
  add_with_stand_ins(reg);
  check_options opt;
  opt.cuda_skip_reason = "cudaGetDeviceCount failed: cudaErrorNoDevice (100)";
  const auto results = check_variants(reg, nullptr, opt);
  int skipped = 0;
  for (const auto& r : results) {
    if (r.backend != TROUPE_BACKEND_CUDA) continue;
    EXPECT_TRUE(r.skipped) << r.variant;
    EXPECT_TRUE(r.pass) << "a skipped variant is not a failure";
    EXPECT_EQ(r.cases, 0);
    EXPECT_EQ(r.skip_reason, opt.cuda_skip_reason);
    ++skipped;
  }
  EXPECT_EQ(skipped, (int)TROUPE_OP_COUNT);
}

TEST(KernelDeviceCheck, EveryOpGoesUpAndBackThroughTheDevice) {
  troupe::kernel_registry reg;
  add_with_stand_ins(reg);
  copying_device dev;
  check_options opt;
  opt.variant = "stand_in.gpu";
  opt.cuda = &dev;
  const auto results = check_variants(reg, nullptr, opt);
  ASSERT_EQ(results.size(), (size_t)TROUPE_OP_COUNT);
  for (const auto& r : results) {
    EXPECT_EQ(r.backend, TROUPE_BACKEND_CUDA);
    EXPECT_FALSE(r.skipped);
    EXPECT_GT(r.cases, 0) << troupe::op_name(r.op);
    // the reference against itself, through copies: exact, so a missed download (NaN) shows
    EXPECT_TRUE(r.pass) << troupe::op_name(r.op) << ": " << r.first_failure;
    EXPECT_EQ(r.max_abs_err, 0.0) << troupe::op_name(r.op);
  }
  EXPECT_GT(dev.uploads, dev.downloads);
  EXPECT_GT(dev.downloads, 0);
}

TEST(KernelDeviceCheck, ADeviceErrorFailsThatVariantWithTheMessage) {
  troupe::kernel_registry reg;
  add_with_stand_ins(reg);
  copying_device dev;
  dev.fail_downloads = true;
  check_options opt;
  opt.op = "silu_mul";
  opt.cuda = &dev;
  const auto results = check_variants(reg, nullptr, opt);
  ASSERT_EQ(results.size(), 1u);  // "ref" itself is not checked
  EXPECT_FALSE(results[0].pass);
  EXPECT_NE(results[0].first_failure.find("illegal address"), std::string::npos) << results[0].first_failure;
}

TEST(KernelDeviceCheck, GpuBoundsAreLooserWhereTheGpuRoundsInputs) {
  using troupe::kern::tolerance_summary;
  EXPECT_EQ(tolerance_summary(TROUPE_OP_ADD, TROUPE_BACKEND_CUDA), "exact");
  EXPECT_NE(tolerance_summary(TROUPE_OP_MATMUL_BF16, TROUPE_BACKEND_CUDA).find("2^-7"), std::string::npos);
  EXPECT_NE(tolerance_summary(TROUPE_OP_MATMUL_F16, TROUPE_BACKEND_CUDA), tolerance_summary(TROUPE_OP_MATMUL_F16));
}

TEST(KernelDeviceCheck, HostDeviceHandsOutTheHostBuffers) {
  auto host = troupe::kern::make_host_device(nullptr);
  std::vector<float> v = {1, 2, 3};
  EXPECT_EQ(host->upload(v.data(), v.size() * 4), v.data());
  int calls = 0;
  EXPECT_GT(host->seconds_per_call([&] { ++calls; }), 0.0);
  EXPECT_GE(calls, 3);  // a warm-up and at least two timed calls
  EXPECT_EQ(host->describe(), "cpu");
}

}  // namespace
