// The roofline `troupe kernels bench` prints beside each variant: published figures by the
// device's name, or derived from the runtime's attributes.
#include <gtest/gtest.h>

#include "kernels/roofline.h"

namespace {

using troupe::kern::derived_roofline;
using troupe::kern::published_roofline;

TEST(Roofline, PublishedFiguresByDeviceName) {
  const auto h100 = published_roofline("NVIDIA H100 80GB HBM3");
  ASSERT_TRUE(h100);
  EXPECT_EQ(h100->mem_gb_s, 3350);
  EXPECT_EQ(h100->fp16_tflop_s, 989);
  EXPECT_NE(h100->source.find("published"), std::string::npos);
  EXPECT_NE(h100->source.find("H100 SXM"), std::string::npos);
  const auto h200 = published_roofline("NVIDIA H200");
  ASSERT_TRUE(h200);
  EXPECT_EQ(h200->mem_gb_s, 4800);
  const auto a100 = published_roofline("NVIDIA A100-SXM4-80GB");
  ASSERT_TRUE(a100);
  EXPECT_NEAR(a100->mem_gb_s, 2000, 50);
  EXPECT_EQ(a100->fp16_tflop_s, 312);
  const auto l4 = published_roofline("NVIDIA L4");
  ASSERT_TRUE(l4);
  EXPECT_EQ(l4->mem_gb_s, 300);
  EXPECT_EQ(l4->fp16_tflop_s, 121);
}

TEST(Roofline, MoreSpecificNamesWin) {
  const auto pcie = published_roofline("NVIDIA H100 PCIe");
  ASSERT_TRUE(pcie);
  EXPECT_EQ(pcie->mem_gb_s, 2000);  // not the SXM part's 3350
  const auto l40s = published_roofline("NVIDIA L40S");
  ASSERT_TRUE(l40s);
  EXPECT_EQ(l40s->fp16_tflop_s, 362);
  const auto l40 = published_roofline("NVIDIA L40");
  ASSERT_TRUE(l40);
  EXPECT_EQ(l40->mem_gb_s, 864);  // not the L4's 300
  EXPECT_EQ(published_roofline("NVIDIA H200 NVL")->fp16_tflop_s, 835);
}

TEST(Roofline, UnknownDevicesAreNotGuessed) {
  EXPECT_FALSE(published_roofline("NVIDIA GeForce GTX 1080"));
  EXPECT_FALSE(published_roofline(""));
}

TEST(Roofline, DerivedFromTheRuntimesAttributes) {
  // A100 40GB: 1215 MHz HBM2 on a 5120-bit bus, 108 SMs at 1410 MHz, sm_80.
  const auto a = derived_roofline(1215000, 5120, 108, 1410000, 8, 0);
  EXPECT_NEAR(a.mem_gb_s, 1555, 1);
  EXPECT_NEAR(a.fp16_tflop_s, 312, 1);
  EXPECT_NE(a.source.find("derived"), std::string::npos);
  // H100 SXM: 132 SMs at 1830 MHz, sm_90: 989 TFLOP/s.
  EXPECT_NEAR(derived_roofline(2619000, 5120, 132, 1830000, 9, 0).fp16_tflop_s, 989, 1);
  // An architecture outside the table: no compute figure, bandwidth still derived.
  const auto unknown = derived_roofline(1000000, 256, 10, 1000000, 6, 1);
  EXPECT_EQ(unknown.fp16_tflop_s, 0);
  EXPECT_NEAR(unknown.mem_gb_s, 64, 1e-9);
  EXPECT_NE(unknown.source.find("unknown"), std::string::npos);
}

TEST(Roofline, DescribeLeavesOutUnknownFigures) {
  troupe::kern::roofline r;
  r.mem_gb_s = 12.3;
  r.source = "stream copy";
  EXPECT_EQ(troupe::kern::describe(r), "12 GB/s (stream copy)");
  EXPECT_EQ(troupe::kern::describe(*published_roofline("NVIDIA L4")),
            "300 GB/s, 121 TFLOP/s dense FP16 (published figures for L4)");
}

}  // namespace
