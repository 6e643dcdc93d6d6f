#include "src/model/gguf_writer.h"

#include <cerrno>
#include <cstring>

#include "troupe/error.h"

namespace troupe {

gguf_writer::gguf_writer(std::string path) : path_(std::move(path)) {
  out_ = std::fopen(path_.c_str(), "wb");
  if (!out_) throw error(error_kind::failed, path_ + ": cannot create: " + std::strerror(errno), path_);
}

gguf_writer::~gguf_writer() {
  if (out_) std::fclose(out_);
}

void gguf_writer::set(const std::string& key, gguf::value v) {
  for (auto& [k, old] : kv_)
    if (k == key) {
      old = std::move(v);
      return;
    }
  kv_.emplace_back(key, std::move(v));
}

void gguf_writer::add_tensor(const std::string& name, troupe_dtype dtype, std::vector<int64_t> ne) {
  if (header_written_) throw error(error_kind::failed, path_ + ": tensor " + name + " added after the header", name);
  pending_tensor t{name, dtype, std::move(ne)};
  t.nbytes = gguf::tensor_bytes(dtype, t.ne);
  uint64_t end = 0;
  if (!tensors_.empty()) end = tensors_.back().offset + tensors_.back().nbytes;
  t.offset = (end + gguf::default_alignment - 1) / gguf::default_alignment * gguf::default_alignment;
  tensors_.push_back(std::move(t));
}

void gguf_writer::write_bytes(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, out_) != n)
    throw error(error_kind::failed, path_ + ": write failed: " + std::strerror(errno), path_);
  written_ += n;
}

void gguf_writer::pad_to_alignment() {
  static const uint8_t zeros[gguf::default_alignment] = {};
  write_bytes(zeros, (gguf::default_alignment - written_ % gguf::default_alignment) % gguf::default_alignment);
}

namespace {

template <typename T>
void put(std::string& b, T v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof v);
}

void put_string(std::string& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b += s;
}

void put_scalar(std::string& b, gguf::value_type t, int64_t i, double f) {
  using vt = gguf::value_type;
  switch (t) {
    case vt::u8:
    case vt::boolean:
      return put<uint8_t>(b, static_cast<uint8_t>(i));
    case vt::i8:
      return put<int8_t>(b, static_cast<int8_t>(i));
    case vt::u16:
      return put<uint16_t>(b, static_cast<uint16_t>(i));
    case vt::i16:
      return put<int16_t>(b, static_cast<int16_t>(i));
    case vt::u32:
      return put<uint32_t>(b, static_cast<uint32_t>(i));
    case vt::i32:
      return put<int32_t>(b, static_cast<int32_t>(i));
    case vt::u64:
      return put<uint64_t>(b, static_cast<uint64_t>(i));
    case vt::i64:
      return put<int64_t>(b, i);
    case vt::f32:
      return put<float>(b, static_cast<float>(f));
    case vt::f64:
      return put<double>(b, f);
    default:
      return;
  }
}

void put_value(std::string& b, const gguf::value& v) {
  using vt = gguf::value_type;
  if (v.type == vt::string) return put_string(b, v.str);
  if (v.type != vt::array) return put_scalar(b, v.type, v.i, v.f);
  put<uint32_t>(b, static_cast<uint32_t>(v.elem));
  put<uint64_t>(b, v.array_size());
  if (v.elem == vt::string) {
    for (const auto& s : v.strs) put_string(b, s);
  } else if (v.elem == vt::array) {
    for (const auto& item : v.items) put_value(b, item);
  } else if (gguf::is_float(v.elem)) {
    for (double f : v.floats) put_scalar(b, v.elem, 0, f);
  } else {
    for (int64_t i : v.ints) put_scalar(b, v.elem, i, 0.0);
  }
}

}  // namespace

void gguf_writer::begin_data() {
  std::string b;
  put<uint32_t>(b, gguf::magic);
  put<uint32_t>(b, 3);
  put<uint64_t>(b, tensors_.size());
  put<uint64_t>(b, kv_.size());
  for (const auto& [k, v] : kv_) {
    put_string(b, k);
    put<uint32_t>(b, static_cast<uint32_t>(v.type));
    put_value(b, v);
  }
  for (const auto& t : tensors_) {
    put_string(b, t.name);
    put<uint32_t>(b, static_cast<uint32_t>(t.ne.size()));
    for (int64_t n : t.ne) put<uint64_t>(b, static_cast<uint64_t>(n));
    put<uint32_t>(b, static_cast<uint32_t>(t.dtype));
    put<uint64_t>(b, t.offset);
  }
  write_bytes(b.data(), b.size());
  pad_to_alignment();
  header_written_ = true;
}

void gguf_writer::write_data(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    if (current_ >= tensors_.size())
      throw error(error_kind::failed, path_ + ": more tensor data than the declared tensors hold", path_);
    const pending_tensor& t = tensors_[current_];
    const size_t take = static_cast<size_t>(std::min<uint64_t>(n, t.nbytes - current_done_));
    write_bytes(p, take);
    p += take;
    n -= take;
    current_done_ += take;
    if (current_done_ == t.nbytes) {
      pad_to_alignment();
      ++current_;
      current_done_ = 0;
    }
  }
}

void gguf_writer::finish() {
  if (!header_written_) begin_data();
  if (current_ != tensors_.size())
    throw error(error_kind::failed,
                path_ + ": tensor " + tensors_[current_].name + " got " + std::to_string(current_done_) + " of " +
                    std::to_string(tensors_[current_].nbytes) + " bytes",
                tensors_[current_].name);
  const int rc = std::fclose(out_);
  out_ = nullptr;
  if (rc != 0) throw error(error_kind::failed, path_ + ": close failed: " + std::strerror(errno), path_);
}

}  // namespace troupe
