// One replica's KV cache bookkeeping, as vLLM's KVCacheManager: the block tables of the
// sequences placed there, their growth, prefix hashing and sharing, and the host slots of
// swapped-out sequences with the copies their worker must make. It decides nothing: the
// policy says who runs, who is preempted and who swaps; the manager says whether the blocks
// are there, and which. Like the policy it touches no memory: block ids are integers the
// worker's pool agrees on.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "src/sched/block_manager.h"
#include "troupe/step.h"

namespace troupe::sched {

// One sequence's KV state; it lives with the sequence (the policy's seq_state) and is
// operated on by the manager of the replica it is placed on.
struct kv_seq {
  std::vector<int32_t> table;       // device blocks in position order: position p in table[p / block_size]
  int32_t n_registered = 0;         // leading blocks of table already in the prefix cache
  std::vector<int32_t> host_slots;  // swapped out: its blocks' copies on the host pool, in table order
  std::vector<uint64_t> hashes;     // prefix hash chain over the history's full blocks
  int32_t hash_block_size = 0;      // the block size `hashes` was computed for
};

class kv_cache_manager {
 public:
  kv_cache_manager(int64_t n_blocks, int32_t block_size, int64_t n_host_blocks, bool prefix_caching);

  int32_t block_size() const { return block_size_; }
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }
  int64_t available() const { return pool_.available(); }  // blocks grow() can still take
  const block_pool& pool() const { return pool_; }

  // ---- prefix cache ---------------------------------------------------------------------
  // s's hash chain over the full blocks of `history` (its prompt + generated), extended as
  // the history grows and recomputed for another block size.
  const std::vector<uint64_t>& hashes(kv_seq& s, const std::vector<int32_t>& history) const;
  // How many leading blocks of `history` this replica has cached, at most max_blocks (0
  // without prefix caching).
  int32_t prefix_hits(kv_seq& s, const std::vector<int32_t>& history, int32_t max_blocks) const;
  // Of s's first `hits` cached blocks, those no sequence references: sharing them takes them
  // out of available().
  int64_t idle_hits(const kv_seq& s, int32_t hits) const;
  // Starts s's (empty) table with its first `hits` cached blocks, shared.
  void share_prefix(kv_seq& s, int32_t hits);
  // The full blocks among s's first n_computed positions become findable by later requests
  // with the same prefix.
  void register_computed(kv_seq& s, const std::vector<int32_t>& history, int32_t n_computed);

  // ---- growth ---------------------------------------------------------------------------
  // Appends blocks to s's table until it covers `tokens` positions (evicting unreferenced
  // prefix blocks when no free one is left); false when none is left, the table keeping
  // what it got. The ids appended also go to `added`.
  bool grow(kv_seq& s, int64_t tokens, std::vector<int32_t>& added);
  // Gives back every device block and host slot of s.
  void free(kv_seq& s);

  // ---- swap -----------------------------------------------------------------------------
  // Copies s's blocks to host slots (step_plan::swap_out) and gives the device blocks back;
  // false, changing nothing, without host room for all of them.
  bool swap_out(kv_seq& s);
  // Fresh device blocks for s's host copies (step_plan::swap_in); the caller checked
  // available(). The blocks come back as they were written: they are not registered again.
  void swap_in(kv_seq& s, std::vector<int32_t>& added);
  // Moves the copies decided since the last plan into `plan`, the one now going out. Host
  // slots emptied by its swap_in are handed out again only after it, since the worker does
  // every swap_out of a plan first.
  void take_copies(step_plan& plan);

  // Blocks whose last reference went away (they became free or cached) since the last call.
  std::vector<int32_t> take_freed() { return std::exchange(freed_, {}); }
  void clear_freed() { freed_.clear(); }

  // Checks the pool against the tables that reference it: no block leaked or held twice,
  // shared blocks are registered prefix blocks, host slots add up, copies in range. Returns
  // what broke, or an empty string.
  std::string check(const std::vector<const kv_seq*>& running, const std::vector<const kv_seq*>& swapped) const;

 private:
  void release(int32_t b);

  block_pool pool_;
  int32_t block_size_;
  bool prefix_caching_;
  std::vector<block_copy> swap_out_, swap_in_;  // for the next plan
  std::vector<int32_t> host_held_;              // host slots emptied by swap_in_, free after it
  std::vector<int32_t> freed_;
};

}  // namespace troupe::sched
