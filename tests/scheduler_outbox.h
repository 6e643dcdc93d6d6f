// Reading what a scheduler_core sends: the messages of one type in an outbox, with their peers.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "src/cluster/scheduler_core.h"

namespace troupe::test {

template <class T>
std::vector<std::pair<std::string, T>> find_all(const scheduler_core::outbox& out) {
  std::vector<std::pair<std::string, T>> v;
  for (const auto& m : out)
    if (const auto* x = std::get_if<T>(&m.message)) v.push_back({m.peer, *x});
  return v;
}

}  // namespace troupe::test
