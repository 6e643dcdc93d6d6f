// The paged KV block pool of one replica, with the prefix cache folded in. Every device
// block is in exactly one state:
//   free    never used, or evicted from the cache;
//   used    referenced by one or more sequences' block tables (ref_count > 0);
//   cached  ref_count == 0 but holding a full block registered under its prefix hash, kept
//           in an LRU and handed out again only when no free block is left.
// free + used + cached == total at all times. The host pool (preemption by swap) hands out
// slot ids, which the worker's step_plan copies name.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace troupe::sched {

// The prefix hash chain: the hash of a full block is a hash of its parent block's hash and
// its own tokens, so equal hashes mean equal whole prefixes (64-bit; collisions ignored).
uint64_t hash_block(uint64_t parent, const int32_t* tokens, int32_t n);

class block_pool {
 public:
  block_pool(int64_t n_blocks, int64_t n_host_blocks);

  int64_t total() const { return static_cast<int64_t>(ref_.size()); }
  int64_t free_count() const { return static_cast<int64_t>(free_.size()); }
  int64_t cached_count() const { return n_cached_; }
  int64_t used_count() const { return total() - free_count() - cached_count(); }
  // Blocks allocate() can hand out (free, then evicting cached ones).
  int64_t available() const { return free_count() + cached_count(); }

  // A block with ref_count 1, or -1 when none is left.
  int32_t allocate();
  void acquire(int32_t b);  // one more reference to a registered block (a prefix hit)
  void release(int32_t b);  // one reference fewer; at 0 the block becomes cached or free

  // Makes a used, full block findable by its prefix hash; false when that hash is taken.
  bool register_block(int32_t b, uint64_t hash);
  int32_t lookup(uint64_t hash) const;  // the block holding that prefix, or -1
  // How many leading hashes are cached, at most max_blocks.
  int32_t count_hits(const std::vector<uint64_t>& hashes, int32_t max_blocks) const;
  int32_t ref_count(int32_t b) const { return ref_[b]; }
  bool is_registered(int32_t b) const { return has_hash_[b] != 0; }

  int64_t host_total() const { return host_total_; }
  int64_t host_used() const { return host_total_ - static_cast<int64_t>(host_free_.size()); }
  // n host slots, or none (empty) when fewer than n are free.
  std::vector<int32_t> host_allocate(int64_t n);
  void host_release(const std::vector<int32_t>& slots);

 private:
  void lru_unlink(int32_t b);
  void lru_push_back(int32_t b);
  void evict(int32_t b);

  std::vector<int32_t> ref_;    // (total) references per block
  std::vector<uint64_t> hash_;  // (total) prefix hash when registered
  std::vector<char> has_hash_;  // (total)
  std::vector<int32_t> free_;   // stack of free block ids
  std::unordered_map<uint64_t, int32_t> by_hash_;
  // Intrusive LRU of cached blocks: index total() is the sentinel; oldest at next_[sentinel].
  std::vector<int32_t> prev_, next_;
  int64_t n_cached_ = 0;
  int64_t host_total_ = 0;
  std::vector<int32_t> host_free_;  // stack of free host slots
};

}  // namespace troupe::sched
