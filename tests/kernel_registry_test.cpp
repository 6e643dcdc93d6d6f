#include <gtest/gtest.h>

#include "kernels/ref/ref.h"
#include "troupe/error.h"
#include "troupe/kernel_registry.h"

TEST(KernelRegistry, EveryOpHasAReference) {
  troupe::kernel_registry r;
  for (const auto& v : troupe::kern::ref::variants()) r.add(v);
  for (int op = 0; op < TROUPE_OP_COUNT; ++op) {
    auto o = static_cast<troupe_op>(op);
    EXPECT_NE(r.find(o, "ref"), nullptr) << troupe::op_name(o);
    EXPECT_STREQ(r.selected(o).name, "ref");
  }
}

TEST(KernelRegistry, OpNamesRoundTrip) {
  for (int op = 0; op < TROUPE_OP_COUNT; ++op) {
    troupe_op back;
    ASSERT_TRUE(troupe::op_from_name(troupe::op_name(static_cast<troupe_op>(op)), &back));
    EXPECT_EQ(back, op);
  }
  troupe_op dummy;
  EXPECT_FALSE(troupe::op_from_name("no_such_op", &dummy));
}

TEST(KernelRegistry, DuplicateAndUnknownVariantsAreClearErrors) {
  troupe::kernel_registry r;
  auto refs = troupe::kern::ref::variants();
  r.add(refs[0]);
  EXPECT_THROW(r.add(refs[0]), troupe::error);
  try {
    r.select(TROUPE_OP_MATMUL_F32, "nope");
    FAIL();
  } catch (const troupe::error& e) {
    EXPECT_NE(std::string(e.what()).find("no variant 'nope'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ref"), std::string::npos) << "lists known variants: " << e.what();
  }
  EXPECT_THROW(r.selected(TROUPE_OP_RMSNORM), troupe::error);  // nothing registered for it
}

TEST(KernelRegistry, MissingPluginIsAClearError) {
  troupe::kernel_registry r;
  try {
    r.load_plugin("/nonexistent/libplugin.so");
    FAIL();
  } catch (const troupe::error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/libplugin.so"), std::string::npos);
  }
}

// supports / require: the op of a family for a weight or KV type, per backend.
TEST(KernelRegistry, SupportsResolvesTheOpForADtypeAndRequireNamesWhatIsMissing) {
  troupe_op op;
  ASSERT_TRUE(troupe::op_for_dtype(TROUPE_OP_MATMUL_F32, TROUPE_Q4_0, &op));
  EXPECT_EQ(op, TROUPE_OP_MATMUL_Q4_0);
  ASSERT_TRUE(troupe::op_for_dtype(TROUPE_OP_EMBEDDING_Q8_0, TROUPE_BF16, &op));
  EXPECT_EQ(op, TROUPE_OP_EMBEDDING_BF16);
  ASSERT_TRUE(troupe::op_for_dtype(TROUPE_OP_ATTENTION, TROUPE_F16, &op));
  EXPECT_EQ(op, TROUPE_OP_ATTENTION_F16KV);
  ASSERT_TRUE(troupe::op_for_dtype(TROUPE_OP_KV_STORE_F16, TROUPE_F32, &op));
  EXPECT_EQ(op, TROUPE_OP_KV_STORE);
  EXPECT_FALSE(troupe::op_for_dtype(TROUPE_OP_ATTENTION, TROUPE_Q8_0, &op));
  EXPECT_FALSE(troupe::op_for_dtype(TROUPE_OP_RMSNORM, TROUPE_F16, &op));

  troupe::kernel_registry r;
  for (const auto& v : troupe::kern::ref::variants())
    if (v.op != TROUPE_OP_MATMUL_Q4_0) r.add(v);
  EXPECT_TRUE(r.supports(TROUPE_OP_MATMUL_F32, TROUPE_BACKEND_CPU, TROUPE_Q8_0));
  EXPECT_FALSE(r.supports(TROUPE_OP_MATMUL_F32, TROUPE_BACKEND_CPU, TROUPE_Q4_0));
  EXPECT_FALSE(r.supports(TROUPE_OP_MATMUL_F32, TROUPE_BACKEND_CUDA, TROUPE_Q8_0));  // only CPU variants here
  EXPECT_TRUE(r.supports(TROUPE_OP_ATTENTION, TROUPE_BACKEND_CPU, TROUPE_F16));
  EXPECT_FALSE(r.supports(TROUPE_OP_ATTENTION, TROUPE_BACKEND_CPU, TROUPE_BF16));
  EXPECT_STREQ(r.require(TROUPE_OP_KV_STORE, TROUPE_BACKEND_CPU, TROUPE_F16).name, "ref");
  EXPECT_EQ(r.require(TROUPE_OP_KV_STORE, TROUPE_BACKEND_CPU, TROUPE_F16).op, TROUPE_OP_KV_STORE_F16);
  auto message = [&](troupe_op o, troupe_backend b, troupe_dtype t) {
    try {
      r.require(o, b, t);
    } catch (const troupe::error& e) {
      EXPECT_EQ(e.kind(), troupe::error_kind::unimplemented);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string q4 = message(TROUPE_OP_MATMUL_F32, TROUPE_BACKEND_CPU, TROUPE_Q4_0);
  EXPECT_NE(q4.find("no cpu variant of op matmul for dtype q4_0"), std::string::npos) << q4;
  const std::string gpu = message(TROUPE_OP_ATTENTION, TROUPE_BACKEND_CUDA, TROUPE_F16);
  EXPECT_NE(gpu.find("no cuda variant of op attention for dtype f16"), std::string::npos) << gpu;
  const std::string form = message(TROUPE_OP_ATTENTION, TROUPE_BACKEND_CPU, TROUPE_Q8_0);
  EXPECT_NE(form.find("op attention has no form for dtype q8_0"), std::string::npos) << form;
}
