// The one table of element types and the one of GPU datasheets, as each reader sees them:
// the kernels' row sizes, GGUF's type names, the simulator's bytes per element and devices,
// and the roofline `troupe kernels bench` prints.
#include <gtest/gtest.h>

#include <string>

#include "kernels/dtypes.h"
#include "kernels/gpu_datasheet.h"
#include "kernels/ref/dtype.h"
#include "kernels/roofline.h"
#include "sim/cluster.h"
#include "src/model/gguf.h"
#include "src/model/model_export.h"
#include "troupe/error.h"

using namespace troupe;

TEST(DtypeTable, EngineTypesRoundTripThroughEveryReader) {
  const auto names = kern::engine_dtype_names();
  ASSERT_EQ(names, (std::vector<std::string>{"f32", "f16", "bf16", "q8_0", "q4_0"}));
  for (const auto& n : names) {
    const troupe_dtype t = parse_dtype(n);
    EXPECT_EQ(dtype_name(t), n);
    EXPECT_TRUE(gguf::is_supported_type(t)) << n;
    EXPECT_EQ(gguf::type_name(t), n);
    EXPECT_DOUBLE_EQ(sim::dtype_bytes(n), kern::row_bytes(t, 256) / 256.0) << n;
  }
  EXPECT_THROW(parse_dtype("q4_k"), troupe::error);  // priced by the simulator, not run
  EXPECT_THROW(parse_dtype("fp16"), troupe::error);  // aliases are the simulator's only
}

TEST(DtypeTable, RowBytesAreTheBlockLayouts) {
  EXPECT_EQ(kern::row_bytes(TROUPE_F32, 64), 256);
  EXPECT_EQ(kern::row_bytes(TROUPE_BF16, 64), 128);
  EXPECT_EQ(kern::row_bytes(TROUPE_Q8_0, 64), 2 * (int64_t)sizeof(kern::block_q8_0));
  EXPECT_EQ(kern::row_bytes(TROUPE_Q4_0, 64), 2 * (int64_t)sizeof(kern::block_q4_0));
  EXPECT_EQ(kern::row_bytes(12, 256), -1);  // q4_k: in the table, not run
  EXPECT_EQ(kern::row_bytes(99, 256), -1);
}

TEST(DtypeTable, GgufNamesEveryGgmlIdAndTheSimulatorItsOwn) {
  EXPECT_EQ(gguf::type_name(3), "q4_1");
  EXPECT_EQ(gguf::type_name(12), "q4_k");
  EXPECT_EQ(gguf::type_name(29), "iq1_m");
  EXPECT_EQ(gguf::type_name(31), "type 31");
  EXPECT_FALSE(gguf::is_supported_type(12));
  EXPECT_DOUBLE_EQ(sim::dtype_bytes("Q4_K"), 144.0 / 256.0);
  EXPECT_DOUBLE_EQ(sim::dtype_bytes("fp16"), 2.0);
  EXPECT_DOUBLE_EQ(sim::dtype_bytes("fp8"), 1.0);
  EXPECT_DOUBLE_EQ(sim::dtype_bytes("int8"), 1.0);
  EXPECT_THROW(sim::dtype_bytes("q4_1"), troupe::error);  // GGML has it; nothing prices it
  EXPECT_THROW(sim::dtype_bytes("f64"), troupe::error);
}

TEST(GpuDatasheet, SimulatorPresetsAndRooflinesReadTheSameRow) {
  for (const std::string& name : sim::device_preset_names()) {
    if (name == "cpu") continue;
    const kern::gpu_datasheet* g = kern::find_gpu_by_preset(name);
    ASSERT_NE(g, nullptr) << name;
    const sim::device_spec d = sim::device_preset(name);
    EXPECT_EQ(d.name, name);
    const auto roof = kern::published_roofline("NVIDIA " + std::string(g->match));
    ASSERT_TRUE(roof) << name;
    EXPECT_DOUBLE_EQ(d.mem_bw, roof->mem_gb_s * 1e9) << name;
    EXPECT_DOUBLE_EQ(d.peak_flops, roof->fp16_tflop_s * 1e12) << name;
    EXPECT_GT(d.link_bw, 0) << name;
    EXPECT_GT(d.memory_bytes, 0) << name;
  }
  EXPECT_EQ(sim::device_preset("H100-SXM").name, "h100");
  EXPECT_EQ(sim::device_preset_names(), (std::vector<std::string>{"h100", "h200", "a100", "l4", "cpu"}));
}

TEST(GpuDatasheet, EveryRowIsFoundByItsOwnName) {
  // A more general `match` listed before a more specific one would shadow it.
  for (const kern::gpu_datasheet& g : kern::gpu_datasheets())
    EXPECT_EQ(kern::find_gpu_by_device_name("NVIDIA " + std::string(g.match)), &g) << g.product;
}
