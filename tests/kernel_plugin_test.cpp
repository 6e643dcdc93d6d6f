// Kernel plugins: the example plugin loads, its variant can be found, selected and
// checked against the reference; a plugin built for another ABI version is refused.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/check.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/make_registry.h"
#include "kernels/ref/ref.h"
#include "troupe/error.h"
#include "troupe/kernel_registry.h"

namespace {

TEST(KernelPlugin, ExampleVariantLoadsAndMatchesTheReference) {
  troupe::kernel_registry reg;
  for (const auto& v : troupe::kern::ref::variants()) reg.add(v);
  troupe::kern::cpu::register_all(reg);
  reg.load_plugin(EXAMPLE_PLUGIN);
  const troupe_kernel_variant* v = reg.find(TROUPE_OP_SILU_MUL, "plugin.silu_mul");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->backend, TROUPE_BACKEND_CPU);
  reg.select(TROUPE_OP_SILU_MUL, "plugin.silu_mul");
  EXPECT_STREQ(reg.selected(TROUPE_OP_SILU_MUL).name, "plugin.silu_mul");

  float gate[3] = {-1.0f, 0.0f, 2.0f}, up[3] = {1.0f, 5.0f, 0.5f}, out[3];
  reg.get<troupe_silu_mul_fn>(TROUPE_OP_SILU_MUL)(nullptr, out, gate, up, 3);
  EXPECT_NEAR(out[0], -1.0f / (1.0f + std::exp(1.0f)), 1e-6);
  EXPECT_EQ(out[1], 0.0f);

  troupe::kern::cpu::thread_pool pool(2);
  const troupe_kctx ctx = troupe::kern::cpu::make_kctx(pool);
  troupe::kern::check_options opt;
  opt.variant = "plugin.silu_mul";
  const auto results = troupe::kern::check_variants(reg, &ctx, opt);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(results[0].pass) << results[0].first_failure;
  EXPECT_GT(results[0].cases, 0);
}

TEST(KernelPlugin, WrongAbiVersionIsRefusedClearly) {
  troupe::kernel_registry reg;
  try {
    reg.load_plugin(EXAMPLE_PLUGIN_BAD_ABI);
    FAIL() << "a plugin claiming ABI version 99 was accepted";
  } catch (const troupe::error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(EXAMPLE_PLUGIN_BAD_ABI), std::string::npos) << msg;
    EXPECT_NE(msg.find("ABI version 99"), std::string::npos) << msg;
    EXPECT_NE(msg.find("expects " + std::to_string(TROUPE_KERNEL_ABI_VERSION)), std::string::npos) << msg;
  }
  EXPECT_EQ(reg.find(TROUPE_OP_SILU_MUL, "plugin.silu_mul"), nullptr);
}

// Version 4 changed the attention ops' signature (window) and added add_bias: a plugin built
// for version 3 is refused.
TEST(KernelPlugin, APluginBuiltForThePreviousAbiIsRefused) {
  static_assert(TROUPE_KERNEL_ABI_VERSION == 4, "update this test with the ABI");
  troupe::kernel_registry reg;
  try {
    reg.load_plugin(EXAMPLE_PLUGIN_PREV_ABI);
    FAIL() << "a plugin claiming ABI version 3 was accepted";
  } catch (const troupe::error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ABI version 3, this troupe expects 4"), std::string::npos) << msg;
  }
  EXPECT_EQ(reg.find(TROUPE_OP_SILU_MUL, "plugin.silu_mul"), nullptr);
}

// make_kernel_registry, as every subcommand builds it: the plugin's variant is the op's
// default once loaded (the last added), a --kernel choice overrides it, and each bad
// choice fails naming the flag's text and what is known.
TEST(KernelPlugin, MakeKernelRegistryLoadsPluginsThenAppliesChoices) {
  troupe::kern::kernel_registry_options o;
  o.plugins = {EXAMPLE_PLUGIN};
  EXPECT_STREQ(troupe::kern::make_kernel_registry(o)->selected(TROUPE_OP_SILU_MUL).name, "plugin.silu_mul");
  o.kernels = {"silu_mul=ref", "rope=ref"};
  const auto reg = troupe::kern::make_kernel_registry(o);
  EXPECT_STREQ(reg->selected(TROUPE_OP_SILU_MUL).name, "ref");
  EXPECT_STREQ(reg->selected(TROUPE_OP_ROPE).name, "ref");
  EXPECT_STRNE(reg->selected(TROUPE_OP_RMSNORM).name, "ref");  // the best CPU variant stays the default
  EXPECT_NE(reg->find(TROUPE_OP_SILU_MUL, "plugin.silu_mul"), nullptr);

  auto message = [](troupe::kern::kernel_registry_options bad) {
    try {
      troupe::kern::make_kernel_registry(bad);
    } catch (const troupe::error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  troupe::kern::kernel_registry_options bad;
  bad.kernels = {"no_such_op=ref"};
  EXPECT_NE(message(bad).find("--kernel no_such_op=ref: unknown op 'no_such_op' (known: matmul_f32"), std::string::npos)
      << message(bad);
  bad.kernels = {"silu_mul=plugin.silu_mul"};  // the plugin that has it is not loaded
  EXPECT_NE(message(bad).find("no variant 'plugin.silu_mul' (known: ref, cpu.generic"), std::string::npos)
      << message(bad);
  bad.kernels = {"silu_mul"};
  EXPECT_NE(message(bad).find("expected OP=VARIANT"), std::string::npos) << message(bad);
  bad.kernels = {};
  bad.plugins = {EXAMPLE_PLUGIN_BAD_ABI};
  EXPECT_NE(message(bad).find("ABI version 99"), std::string::npos) << message(bad);
}

}  // namespace
