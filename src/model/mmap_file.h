// A read-only memory map of a whole file. Loaders hand out tensor views that point into
// it, so it must outlive them; it is a resource type (move-only through unique_ptr).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace troupe {

class mapped_file {
 public:
  // Throws troupe::error naming the file when it cannot be opened or mapped.
  explicit mapped_file(const std::string& path);
  ~mapped_file();
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;  // null for an empty file
  size_t size_ = 0;
};

}  // namespace troupe
