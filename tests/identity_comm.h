// A communicator that only has an identity (rank, size, describe()) and moves no data: for
// tests of how backends are wired to their group, not of collectives.
#pragma once
#include <string>
#include <utility>

#include "troupe/communicator.h"

namespace troupe::test {

class identity_comm : public communicator {
 public:
  identity_comm(int rank, int size, std::string kind = "test comm")
      : rank_(rank), size_(size), kind_(std::move(kind)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float*, size_t) override {}
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  std::string describe() const override { return kind_ + ", rank " + std::to_string(rank_); }

 private:
  int rank_, size_;
  std::string kind_;
};

}  // namespace troupe::test
