// The GGUF reader and writer on their own: every metadata type, versions 2 and 3, the
// alignment key, and views that point into the map.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "kernels/ref/dtype.h"
#include "src/model/gguf.h"
#include "src/model/gguf_writer.h"
#include "temp_dir.h"
#include "troupe/error.h"

namespace troupe {
namespace {

using gguf::value;
using gguf::value_type;

value scalar(value_type t, int64_t i, double f = 0) {
  value v;
  v.type = t;
  v.i = i;
  v.f = f;
  return v;
}

TEST(Gguf, EveryMetadataTypeRoundTrips) {
  test::temp_dir dir;
  const std::string p = dir / "kv.gguf";
  gguf_writer w(p);
  w.set("u8", scalar(value_type::u8, 200));
  w.set("i8", scalar(value_type::i8, -100));
  w.set("u16", scalar(value_type::u16, 60000));
  w.set("i16", scalar(value_type::i16, -30000));
  w.set("u32", value::of_u32(4000000000u));
  w.set("i32", value::of_i32(-2000000000));
  w.set("u64", value::of_u64(uint64_t{1} << 63));
  w.set("i64", scalar(value_type::i64, -(int64_t{1} << 62)));
  w.set("f32", value::of_f32(0.25f));
  w.set("f64", scalar(value_type::f64, 0, 1e-300));
  w.set("bool", value::of_bool(true));
  w.set("str", value::of_string("h\xC3\xA9llo"));
  w.set("strs", value::of_strings({"a", "", "ccc"}));
  w.set("f32s", value::of_f32s({1.5f, -2.0f}));
  w.set("i32s", value::of_i32s({1, -2, 3}));
  value nested;
  nested.type = value_type::array;
  nested.elem = value_type::array;
  nested.items = {value::of_i32s({7}), value::of_i32s({8, 9})};
  w.set("nested", nested);
  w.add_tensor("t", TROUPE_F16, {32, 2});
  w.begin_data();
  std::vector<uint16_t> data(64);
  for (size_t i = 0; i < data.size(); ++i) data[i] = kern::f32_to_f16(static_cast<float>(i));
  w.write_data(data.data(), 10);  // in pieces, as a stream
  w.write_data(reinterpret_cast<const uint8_t*>(data.data()) + 10, data.size() * 2 - 10);
  w.finish();

  const gguf::file f(p);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 16u);
  EXPECT_EQ(f.find("u8")->i, 200);
  EXPECT_EQ(f.find("i8")->i, -100);
  EXPECT_EQ(f.find("u16")->i, 60000);
  EXPECT_EQ(f.find("i16")->i, -30000);
  EXPECT_EQ(f.get_uint("u32"), 4000000000u);
  EXPECT_EQ(f.find("i32")->i, -2000000000);
  EXPECT_EQ(f.get_uint("u64"), uint64_t{1} << 63);
  EXPECT_EQ(f.find("i64")->i, -(int64_t{1} << 62));
  EXPECT_EQ(f.opt_float("f32"), 0.25);
  EXPECT_EQ(f.opt_float("f64"), 1e-300);
  EXPECT_EQ(f.opt_bool("bool"), true);
  EXPECT_EQ(f.get_string("str"), "h\xC3\xA9llo");
  EXPECT_EQ(f.get_array("strs", "string").strs, (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(f.get_array("f32s", "float").floats, (std::vector<double>{1.5, -2.0}));
  EXPECT_EQ(f.get_array("i32s", "integer").ints, (std::vector<int64_t>{1, -2, 3}));
  ASSERT_EQ(f.find("nested")->items.size(), 2u);
  EXPECT_EQ(f.find("nested")->items[1].ints, (std::vector<int64_t>{8, 9}));
  EXPECT_EQ(f.opt_uint("absent"), std::nullopt);
  EXPECT_THROW(f.get_uint("str"), error);
  EXPECT_THROW(f.get_array("strs", "float"), error);
  EXPECT_THROW(f.opt_uint("i32"), error);  // negative

  const gguf::tensor_info* t = f.find_tensor("t");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->rows(), 2);
  EXPECT_EQ(t->cols(), 32);
  EXPECT_EQ(t->nbytes, 128u);
  EXPECT_EQ(t->offset, 0u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(std::memcmp(t->data, data.data(), 128), 0);
  EXPECT_EQ(kern::f16_to_f32(reinterpret_cast<const uint16_t*>(t->data)[63]), 63.0f);
}

TEST(Gguf, VersionTwoWithAnAlignmentKey) {
  test::temp_dir dir;
  const std::string p = dir / "v2.gguf";
  {
    gguf_writer w(p);
    w.set("general.alignment", value::of_u32(32));
    w.add_tensor("a", TROUPE_F32, {3});
    w.add_tensor("b", TROUPE_Q8_0, {64, 2});
    w.begin_data();
    const float a[3] = {1, 2, 3};
    w.write_data(a, sizeof a);
    std::vector<uint8_t> b(2 * 2 * 34, 7);
    w.write_data(b.data(), b.size());
    w.finish();
  }
  // Version 2 has the same little-endian layout as version 3.
  std::fstream io(p, std::ios::in | std::ios::out | std::ios::binary);
  io.seekp(4);
  const uint32_t two = 2;
  io.write(reinterpret_cast<const char*>(&two), 4);
  io.close();
  const gguf::file f(p);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.find_tensor("b")->offset, 32u);  // 12 bytes of "a", padded to 32
  EXPECT_EQ(f.find_tensor("b")->nbytes, 136u);
  EXPECT_EQ(static_cast<const float*>(static_cast<const void*>(f.find_tensor("a")->data))[2], 3.0f);
}

TEST(Gguf, WriterRefusesShortData) {
  test::temp_dir dir;
  gguf_writer w(dir / "short.gguf");
  w.add_tensor("a", TROUPE_F32, {4});
  w.begin_data();
  const float a[2] = {};
  w.write_data(a, sizeof a);
  try {
    w.finish();
    FAIL() << "expected an error";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor a got 8 of 16 bytes"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace troupe
