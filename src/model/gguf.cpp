// The GGUF reader. Layout (all little-endian):
//   u32 magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
//   n_kv x (string key, u32 type, value), n_tensors x (string name, u32 n_dims,
//   u64 ne[n_dims], u32 type, u64 offset), padding to general.alignment, tensor data.
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements.
#include "src/model/gguf.h"

#include <cstring>
#include <limits>

#include "kernels/ref/dtype.h"
#include "troupe/error.h"

namespace troupe::gguf {

// ---- types ------------------------------------------------------------------

std::string_view to_string(value_type t) {
  switch (t) {
    case value_type::u8:
      return "u8";
    case value_type::i8:
      return "i8";
    case value_type::u16:
      return "u16";
    case value_type::i16:
      return "i16";
    case value_type::u32:
      return "u32";
    case value_type::i32:
      return "i32";
    case value_type::f32:
      return "f32";
    case value_type::boolean:
      return "bool";
    case value_type::string:
      return "string";
    case value_type::array:
      return "array";
    case value_type::u64:
      return "u64";
    case value_type::i64:
      return "i64";
    case value_type::f64:
      return "f64";
  }
  return "unknown";
}

bool is_integer(value_type t) {
  switch (t) {
    case value_type::u8:
    case value_type::i8:
    case value_type::u16:
    case value_type::i16:
    case value_type::u32:
    case value_type::i32:
    case value_type::u64:
    case value_type::i64:
      return true;
    default:
      return false;
  }
}

bool is_float(value_type t) { return t == value_type::f32 || t == value_type::f64; }

size_t value::array_size() const {
  if (type != value_type::array) return 0;
  if (elem == value_type::string) return strs.size();
  if (elem == value_type::array) return items.size();
  if (is_float(elem)) return floats.size();
  return ints.size();
}

std::string value::describe() const {
  switch (type) {
    case value_type::string:
      return "\"" + (str.size() > 60 ? str.substr(0, 57) + "..." : str) + "\"";
    case value_type::boolean:
      return i ? "true" : "false";
    case value_type::f32:
    case value_type::f64:
      return std::to_string(f);
    case value_type::u64:
      return std::to_string(static_cast<uint64_t>(i));
    case value_type::array: {
      std::string s = "[";
      s += to_string(elem);
      s += " x " + std::to_string(array_size()) + "]";
      return s;
    }
    default:
      return std::to_string(i);
  }
}

value value::of_u32(uint32_t v) { return value{.type = value_type::u32, .i = v}; }
value value::of_i32(int32_t v) { return value{.type = value_type::i32, .i = v}; }
value value::of_u64(uint64_t v) { return value{.type = value_type::u64, .i = static_cast<int64_t>(v)}; }
value value::of_f32(float v) { return value{.type = value_type::f32, .f = v}; }
value value::of_bool(bool v) { return value{.type = value_type::boolean, .i = v ? 1 : 0}; }
value value::of_string(std::string v) { return value{.type = value_type::string, .str = std::move(v)}; }
value value::of_strings(std::vector<std::string> v) {
  return value{.type = value_type::array, .elem = value_type::string, .strs = std::move(v)};
}
value value::of_f32s(std::vector<float> v) {
  return value{.type = value_type::array, .elem = value_type::f32, .floats = {v.begin(), v.end()}};
}
value value::of_i32s(std::vector<int32_t> v) {
  return value{.type = value_type::array, .elem = value_type::i32, .ints = {v.begin(), v.end()}};
}

bool is_supported_type(uint32_t t) {
  const kern::dtype_info* d = t <= INT32_MAX ? kern::find_dtype(static_cast<int>(t)) : nullptr;
  return d && d->runs;
}

std::string type_name(uint32_t t) {
  const kern::dtype_info* d = t <= INT32_MAX ? kern::find_dtype(static_cast<int>(t)) : nullptr;
  return d ? std::string(d->name) : "type " + std::to_string(t);
}

uint64_t tensor_bytes(troupe_dtype t, const std::vector<int64_t>& ne) {
  uint64_t rows = 1;
  for (size_t d = 1; d < ne.size(); ++d) rows *= static_cast<uint64_t>(ne[d]);
  return rows * static_cast<uint64_t>(kern::row_bytes(t, ne.empty() ? 1 : ne[0]));
}

int64_t tensor_info::rows() const {
  int64_t r = 1;
  for (size_t d = 1; d < ne.size(); ++d) r *= ne[d];
  return r;
}

// ---- parsing ------------------------------------------------------------------

namespace {

// Reads forward through the mapped header, refusing to step past the end of the file.
class cursor {
 public:
  cursor(const file& f, const uint8_t* data, uint64_t size) : f_(f), data_(data), size_(size) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n, const char* what) {
    if (n > remaining())
      f_.fail("truncated file: " + std::string(what) + " needs " + std::to_string(n) + " bytes at offset " +
              std::to_string(pos_) + ", but the file is " + std::to_string(size_) + " bytes");
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const char* what) {
    const uint64_t n = read<uint64_t>(what);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const file& f_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// Smallest encoded size of one value of type t, to refuse absurd array counts before
// allocating for them.
uint64_t min_encoded_size(value_type t) {
  switch (t) {
    case value_type::u8:
    case value_type::i8:
    case value_type::boolean:
      return 1;
    case value_type::u16:
    case value_type::i16:
      return 2;
    case value_type::u32:
    case value_type::i32:
    case value_type::f32:
      return 4;
    case value_type::array:
      return 12;
    default:
      return 8;
  }
}

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(value_type::f64); }

int64_t read_int(cursor& c, value_type t, const char* what) {
  switch (t) {
    case value_type::u8:
    case value_type::boolean:
      return c.read<uint8_t>(what);
    case value_type::i8:
      return c.read<int8_t>(what);
    case value_type::u16:
      return c.read<uint16_t>(what);
    case value_type::i16:
      return c.read<int16_t>(what);
    case value_type::u32:
      return c.read<uint32_t>(what);
    case value_type::i32:
      return c.read<int32_t>(what);
    case value_type::u64:
      return static_cast<int64_t>(c.read<uint64_t>(what));
    default:
      return c.read<int64_t>(what);
  }
}

}  // namespace

void file::fail(const std::string& what, const std::string& field) const {
  throw error(error_kind::failed, path() + ": " + what, field);
}

file::file(const std::string& path) : map_(std::make_unique<mapped_file>(path)) { parse(); }

namespace {

value read_value(const file& f, cursor& c, value_type t, const std::string& key, int depth) {
  value v;
  v.type = t;
  if (t == value_type::string) {
    v.str = c.read_string("a string value");
  } else if (is_float(t)) {
    v.f = t == value_type::f32 ? c.read<float>("an f32 value") : c.read<double>("an f64 value");
  } else if (t != value_type::array) {
    v.i = read_int(c, t, "an integer value");
    if (t == value_type::boolean && v.i > 1) f.fail("key " + key + ": bool value " + std::to_string(v.i), key);
  } else {
    if (depth > 4) f.fail("key " + key + ": arrays nested more than 4 deep", key);
    const uint32_t et = c.read<uint32_t>("an array's element type");
    if (!valid_value_type(et))
      f.fail("key " + key + ": bad array element type " + std::to_string(et) + " (expected 0..12)", key);
    v.elem = static_cast<value_type>(et);
    const uint64_t n = c.read<uint64_t>("an array's length");
    if (n > c.remaining() / min_encoded_size(v.elem))
      f.fail("corrupted header: key " + key + " claims " + std::to_string(n) + " array elements but only " +
                 std::to_string(c.remaining()) + " bytes remain",
             key);
    if (v.elem == value_type::string) {
      v.strs.reserve(n);
      for (uint64_t k = 0; k < n; ++k) v.strs.push_back(c.read_string("a string array element"));
    } else if (v.elem == value_type::array) {
      v.items.reserve(n);
      for (uint64_t k = 0; k < n; ++k) v.items.push_back(read_value(f, c, value_type::array, key, depth + 1));
    } else if (is_float(v.elem)) {
      v.floats.reserve(n);
      for (uint64_t k = 0; k < n; ++k)
        v.floats.push_back(v.elem == value_type::f32 ? c.read<float>("an f32 array") : c.read<double>("an f64 array"));
    } else {
      v.ints.reserve(n);
      for (uint64_t k = 0; k < n; ++k) v.ints.push_back(read_int(c, v.elem, "an integer array"));
    }
  }
  return v;
}

}  // namespace

void file::parse() {
  cursor c(*this, map_->data(), map_->size());
  const uint32_t m = c.read<uint32_t>("the magic number");
  if (m != magic) {
    char got[5] = {};
    std::memcpy(got, &m, 4);
    for (char& ch : got)
      if (ch && (ch < 32 || ch > 126)) ch = '?';
    fail("bad magic \"" + std::string(got) + "\": not a GGUF file (expected \"GGUF\")", "magic");
  }
  version_ = c.read<uint32_t>("the version");
  if (version_ == 0x02000000 || version_ == 0x03000000) fail("big-endian GGUF is not supported", "version");
  if (version_ != 2 && version_ != 3)
    fail("unsupported GGUF version " + std::to_string(version_) + " (expected 2 or 3)", "version");
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the metadata count");
  // Each key/value takes at least 13 bytes and each tensor info at least 28: bound the
  // counts before reserving so that a corrupted count cannot exhaust memory.
  if (n_kv > c.remaining() / 13 || n_tensors > c.remaining() / 28)
    fail("truncated file or corrupted header: " + std::to_string(n_kv) + " metadata entries and " +
         std::to_string(n_tensors) + " tensors cannot fit: the file is " + std::to_string(map_->size()) + " bytes");

  kv_.reserve(n_kv);
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.read_string("a metadata key");
    const uint32_t t = c.read<uint32_t>("a metadata value type");
    if (!valid_value_type(t))
      fail("corrupted header: key " + key + " has value type " + std::to_string(t) + " (expected 0..12)", key);
    value v = read_value(*this, c, static_cast<value_type>(t), key, 0);
    if (!kv_index_.emplace(key, kv_.size()).second) fail("duplicate metadata key " + key, key);
    kv_.emplace_back(std::move(key), std::move(v));
  }

  if (auto a = opt_uint("general.alignment")) {
    if (*a == 0 || (*a & (*a - 1)) != 0 || *a > (1u << 20))
      fail("general.alignment is " + std::to_string(*a) + " (expected a power of two)", "general.alignment");
    alignment_ = *a;
  }

  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    tensor_info ti;
    ti.name = c.read_string("a tensor name");
    const uint32_t nd = c.read<uint32_t>("a tensor's dimension count");
    if (nd == 0 || nd > 4)
      fail("tensor " + ti.name + " has " + std::to_string(nd) + " dimensions (expected 1..4)", ti.name);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t n = c.read<uint64_t>("a tensor dimension");
      if (n == 0 || n > (uint64_t{1} << 40) || elems > (uint64_t{1} << 44) / n)
        fail("tensor " + ti.name + " has dimension " + std::to_string(d) + " = " + std::to_string(n) +
                 " (expected 1..2^40, at most 2^44 elements in all)",
             ti.name);
      elems *= n;
      ti.ne.push_back(static_cast<int64_t>(n));
    }
    const uint32_t t = c.read<uint32_t>("a tensor type");
    if (!is_supported_type(t))
      throw error(error_kind::unimplemented,
                  path() + ": tensor " + ti.name + " has unsupported type " + type_name(t) + " (id " +
                      std::to_string(t) + "); supported: f32, f16, bf16, q8_0, q4_0",
                  ti.name);
    ti.dtype = static_cast<troupe_dtype>(t);
    if ((t == TROUPE_Q8_0 || t == TROUPE_Q4_0) && ti.ne[0] % kern::QK != 0)
      fail("tensor " + ti.name + " of type " + type_name(t) + " has " + std::to_string(ti.ne[0]) +
               " columns (expected a multiple of 32)",
           ti.name);
    ti.offset = c.read<uint64_t>("a tensor offset");
    if (ti.offset % alignment_ != 0)
      fail("tensor " + ti.name + " has offset " + std::to_string(ti.offset) + " (expected a multiple of " +
               std::to_string(alignment_) + ")",
           ti.name);
    ti.nbytes = tensor_bytes(ti.dtype, ti.ne);
    if (!tensor_index_.emplace(ti.name, tensors_.size()).second) fail("duplicate tensor " + ti.name, ti.name);
    tensors_.push_back(std::move(ti));
  }

  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t size = map_->size();
  for (tensor_info& ti : tensors_) {
    if (data_offset_ > size || ti.offset > size - data_offset_ || ti.nbytes > size - data_offset_ - ti.offset)
      fail("truncated file: tensor " + ti.name + " needs bytes " + std::to_string(data_offset_ + ti.offset) + ".." +
               std::to_string(data_offset_ + ti.offset + ti.nbytes) + ", but the file is " + std::to_string(size) +
               " bytes",
           ti.name);
    ti.data = map_->data() + data_offset_ + ti.offset;
  }
}

// ---- typed access -------------------------------------------------------------

const value* file::find(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const tensor_info* file::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {
[[noreturn]] void wrong_type(const file& f, std::string_view key, const value& v, const char* expected) {
  f.fail("key " + std::string(key) + " has type " + std::string(to_string(v.type)) + " (expected " + expected + ")",
         std::string(key));
}
}  // namespace

std::optional<uint64_t> file::opt_uint(std::string_view key) const {
  const value* v = find(key);
  if (!v) return std::nullopt;
  if (!is_integer(v->type)) wrong_type(*this, key, *v, "an integer");
  if (v->type != value_type::u64 && v->i < 0)
    fail("key " + std::string(key) + " is " + std::to_string(v->i) + " (expected a non-negative integer)",
         std::string(key));
  return static_cast<uint64_t>(v->i);
}

uint64_t file::get_uint(std::string_view key) const {
  auto v = opt_uint(key);
  if (!v) fail("missing key " + std::string(key) + " (expected an integer)", std::string(key));
  return *v;
}

std::optional<double> file::opt_float(std::string_view key) const {
  const value* v = find(key);
  if (!v) return std::nullopt;
  if (is_float(v->type)) return v->f;
  if (is_integer(v->type)) return static_cast<double>(v->i);
  wrong_type(*this, key, *v, "a number");
}

std::optional<std::string> file::opt_string(std::string_view key) const {
  const value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != value_type::string) wrong_type(*this, key, *v, "a string");
  return v->str;
}

std::string file::get_string(std::string_view key) const {
  auto v = opt_string(key);
  if (!v) fail("missing key " + std::string(key) + " (expected a string)", std::string(key));
  return *v;
}

std::optional<bool> file::opt_bool(std::string_view key) const {
  const value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != value_type::boolean) wrong_type(*this, key, *v, "a bool");
  return v->i != 0;
}

const value& file::get_array(std::string_view key, std::string_view elem) const {
  const value* v = find(key);
  const std::string expected = "an array of " + std::string(elem) + "s";
  if (!v) fail("missing key " + std::string(key) + " (expected " + expected + ")", std::string(key));
  const bool ok = v->type == value_type::array &&
                  ((elem == "string" && v->elem == value_type::string) || (elem == "integer" && is_integer(v->elem)) ||
                   (elem == "float" && is_float(v->elem)));
  if (!ok) {
    const std::string got = v->type == value_type::array ? "an array of " + std::string(to_string(v->elem))
                                                         : std::string(to_string(v->type));
    fail("key " + std::string(key) + " is " + got + " (expected " + expected + ")", std::string(key));
  }
  return *v;
}

}  // namespace troupe::gguf
