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
