#include "src/sched/block_manager.h"

namespace troupe::sched {

uint64_t hash_block(uint64_t parent, const int32_t* tokens, int32_t n) {
  // FNV-1a over the parent hash and the tokens, then a splitmix64 finaliser to spread bits.
  uint64_t h = 1469598103934665603ull ^ parent;
  h *= 1099511628211ull;
  for (int32_t i = 0; i < n; ++i) {
    h ^= static_cast<uint32_t>(tokens[i]);
    h *= 1099511628211ull;
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

block_pool::block_pool(int64_t n_blocks, int64_t n_host_blocks)
    : ref_(n_blocks, 0),
      hash_(n_blocks, 0),
      has_hash_(n_blocks, 0),
      prev_(n_blocks + 1),
      next_(n_blocks + 1),
      host_total_(n_host_blocks) {
  free_.reserve(n_blocks);
  // Lowest ids on top of the stack: plans are easier to read in tests.
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
  const auto s = static_cast<int32_t>(n_blocks);
  prev_[s] = next_[s] = s;
  host_free_.reserve(n_host_blocks);
  for (int64_t h = n_host_blocks - 1; h >= 0; --h) host_free_.push_back(static_cast<int32_t>(h));
}

void block_pool::lru_unlink(int32_t b) {
  next_[prev_[b]] = next_[b];
  prev_[next_[b]] = prev_[b];
  --n_cached_;
}

void block_pool::lru_push_back(int32_t b) {
  const auto s = static_cast<int32_t>(total());
  prev_[b] = prev_[s];
  next_[b] = s;
  next_[prev_[s]] = b;
  prev_[s] = b;
  ++n_cached_;
}

void block_pool::evict(int32_t b) {
  lru_unlink(b);
  by_hash_.erase(hash_[b]);
  has_hash_[b] = 0;
}

int32_t block_pool::allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (n_cached_ > 0) {
    b = next_[total()];  // least recently released
    evict(b);
  } else {
    return -1;
  }
  ref_[b] = 1;
  return b;
}

void block_pool::acquire(int32_t b) {
  if (ref_[b]++ == 0) lru_unlink(b);
}

void block_pool::release(int32_t b) {
  if (--ref_[b] > 0) return;
  if (has_hash_[b])
    lru_push_back(b);
  else
    free_.push_back(b);
}

bool block_pool::register_block(int32_t b, uint64_t hash) {
  if (has_hash_[b] || !by_hash_.emplace(hash, b).second) return false;
  hash_[b] = hash;
  has_hash_[b] = 1;
  return true;
}

int32_t block_pool::lookup(uint64_t hash) const {
  auto it = by_hash_.find(hash);
  return it == by_hash_.end() ? -1 : it->second;
}

int32_t block_pool::count_hits(const std::vector<uint64_t>& hashes, int32_t max_blocks) const {
  int32_t n = 0;
  while (n < max_blocks && n < static_cast<int32_t>(hashes.size()) && by_hash_.count(hashes[n])) ++n;
  return n;
}

std::vector<int32_t> block_pool::host_allocate(int64_t n) {
  if (n > static_cast<int64_t>(host_free_.size())) return {};
  std::vector<int32_t> slots(host_free_.rbegin(), host_free_.rbegin() + n);  // lowest first
  host_free_.resize(host_free_.size() - n);
  return slots;
}

void block_pool::host_release(const std::vector<int32_t>& slots) {
  host_free_.insert(host_free_.end(), slots.rbegin(), slots.rend());
}

}  // namespace troupe::sched
