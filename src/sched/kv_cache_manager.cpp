#include "src/sched/kv_cache_manager.h"

#include <algorithm>
#include <utility>

namespace troupe::sched {

kv_cache_manager::kv_cache_manager(int64_t n_blocks, int32_t block_size, int64_t n_host_blocks, bool prefix_caching)
    : pool_(n_blocks, n_host_blocks), block_size_(block_size), prefix_caching_(prefix_caching) {}

// ---- prefix cache -------------------------------------------------------------------------

const std::vector<uint64_t>& kv_cache_manager::hashes(kv_seq& s, const std::vector<int32_t>& history) const {
  const int32_t bs = block_size_;
  if (s.hash_block_size != bs) {
    s.hashes.clear();
    s.hash_block_size = bs;
  }
  const size_t full = history.size() / bs;
  while (s.hashes.size() < full) {
    const size_t i = s.hashes.size();
    s.hashes.push_back(hash_block(i ? s.hashes[i - 1] : 0, history.data() + i * bs, bs));
  }
  return s.hashes;
}

int32_t kv_cache_manager::prefix_hits(kv_seq& s, const std::vector<int32_t>& history, int32_t max_blocks) const {
  return prefix_caching_ ? pool_.count_hits(hashes(s, history), max_blocks) : 0;
}

int64_t kv_cache_manager::idle_hits(const kv_seq& s, int32_t hits) const {
  int64_t idle = 0;
  for (int32_t i = 0; i < hits; ++i) idle += pool_.ref_count(pool_.lookup(s.hashes[i])) == 0;
  return idle;
}

void kv_cache_manager::share_prefix(kv_seq& s, int32_t hits) {
  for (int32_t i = 0; i < hits; ++i) {
    const int32_t b = pool_.lookup(s.hashes[i]);
    pool_.acquire(b);
    s.table.push_back(b);
  }
  s.n_registered = hits;
}

void kv_cache_manager::register_computed(kv_seq& s, const std::vector<int32_t>& history, int32_t n_computed) {
  if (!prefix_caching_) return;
  const auto full = std::min<int32_t>(n_computed / block_size_, static_cast<int32_t>(s.table.size()));
  if (s.n_registered >= full) return;
  const auto& h = hashes(s, history);
  for (int32_t i = s.n_registered; i < full; ++i)
    if (pool_.lookup(h[i]) < 0) pool_.register_block(s.table[i], h[i]);
  s.n_registered = full;
}

// ---- growth -------------------------------------------------------------------------------

void kv_cache_manager::release(int32_t b) {
  pool_.release(b);
  if (pool_.ref_count(b) == 0) freed_.push_back(b);
}

bool kv_cache_manager::grow(kv_seq& s, int64_t tokens, std::vector<int32_t>& added) {
  while (static_cast<int64_t>(s.table.size()) < blocks_for(tokens)) {
    const int32_t b = pool_.allocate();
    if (b < 0) return false;
    s.table.push_back(b);
    added.push_back(b);
  }
  return true;
}

void kv_cache_manager::free(kv_seq& s) {
  for (int32_t b : s.table) release(b);
  s.table.clear();
  s.n_registered = 0;
  pool_.host_release(s.host_slots);
  s.host_slots.clear();
}

// ---- swap ---------------------------------------------------------------------------------

bool kv_cache_manager::swap_out(kv_seq& s) {
  std::vector<int32_t> slots = pool_.host_allocate(static_cast<int64_t>(s.table.size()));
  if (slots.empty()) return false;
  for (size_t i = 0; i < slots.size(); ++i) swap_out_.push_back({s.table[i], slots[i]});
  for (int32_t b : s.table) release(b);
  s.table.clear();
  s.host_slots = std::move(slots);
  return true;
}

void kv_cache_manager::swap_in(kv_seq& s, std::vector<int32_t>& added) {
  for (int32_t slot : s.host_slots) {
    s.table.push_back(pool_.allocate());
    swap_in_.push_back({s.table.back(), slot});
    added.push_back(s.table.back());
  }
  host_held_.insert(host_held_.end(), s.host_slots.begin(), s.host_slots.end());
  s.host_slots.clear();
  s.n_registered = static_cast<int32_t>(s.table.size());
}

void kv_cache_manager::take_copies(step_plan& plan) {
  plan.swap_out = std::exchange(swap_out_, {});
  plan.swap_in = std::exchange(swap_in_, {});
  pool_.host_release(std::exchange(host_held_, {}));
}

// ---- invariants ---------------------------------------------------------------------------

std::string kv_cache_manager::check(const std::vector<const kv_seq*>& running,
                                    const std::vector<const kv_seq*>& swapped) const {
  const block_pool& p = pool_;
  if (p.free_count() + p.used_count() + p.cached_count() != p.total() || p.used_count() < 0)
    return "free + used + cached != total";
  std::vector<int32_t> refs(p.total(), 0);
  for (const kv_seq* s : running)
    for (int32_t b : s->table) {
      if (b < 0 || b >= p.total()) return "block id out of range";
      ++refs[b];
    }
  int64_t host = static_cast<int64_t>(host_held_.size());
  for (const kv_seq* s : swapped) {
    if (!s->table.empty()) return "swapped sequence holds blocks";
    host += static_cast<int64_t>(s->host_slots.size());
  }
  if (host != p.host_used()) return "host pool count disagrees";
  for (const block_copy& c : swap_out_)
    if (c.device_block < 0 || c.device_block >= p.total() || c.host_slot < 0 || c.host_slot >= p.host_total())
      return "swap copy out of range";
  int64_t used = 0;
  for (int64_t b = 0; b < p.total(); ++b) {
    if (refs[b] != p.ref_count(static_cast<int32_t>(b)))
      return "block " + std::to_string(b) + " has " + std::to_string(p.ref_count(static_cast<int32_t>(b))) +
             " references, tables hold " + std::to_string(refs[b]);
    used += refs[b] > 0;
    // A block shared by two tables must be a registered (immutable) prefix block.
    if (refs[b] > 1 && !p.is_registered(static_cast<int32_t>(b)))
      return "block " + std::to_string(b) + " is shared but not a cached prefix block";
  }
  if (used != p.used_count()) return "used count disagrees";
  return {};
}

}  // namespace troupe::sched
