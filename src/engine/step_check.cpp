#include "src/engine/step_check.h"

#include <string>

#include "troupe/error.h"
#include "troupe/sampling.h"

namespace troupe {

namespace {
[[noreturn]] void fail(const std::string& msg, const std::string& field, std::vector<uint64_t> seqs = {}) {
  throw plan_rejected(msg, field, std::move(seqs));
}
}  // namespace

void check_step_plan(const step_plan& plan, const step_limits& lim) {
  auto check_copies = [&](const std::vector<block_copy>& copies, const char* field) {
    for (size_t i = 0; i < copies.size(); ++i) {
      const block_copy& c = copies[i];
      const std::string who = "step " + std::to_string(plan.step_id) + ": " + field + "[" + std::to_string(i) + "]: ";
      if (c.device_block < 0 || c.device_block >= lim.n_blocks)
        fail(who + "device block " + std::to_string(c.device_block) + " outside the pool [0, " +
                 std::to_string(lim.n_blocks) + ")",
             field);
      if (c.host_slot < 0 || c.host_slot >= lim.n_host_blocks)
        fail(who + "host slot " + std::to_string(c.host_slot) + " outside the host pool [0, " +
                 std::to_string(lim.n_host_blocks) + ")" +
                 (lim.n_host_blocks ? "" : " (this worker has none: --swap-mb)"),
             field);
    }
  };
  check_copies(plan.swap_out, "swap_out");
  check_copies(plan.swap_in, "swap_in");
  int64_t total = 0;
  for (const seq_work& w : plan.seqs) {
    const std::string who = "step " + std::to_string(plan.step_id) + ": seq " + std::to_string(w.seq_id) + ": ";
    const std::vector<uint64_t> me{w.seq_id};
    if (w.diff) fail(who + "a diff reached the backend (it needs the worker's seq_cache)", "diff", me);
    if (w.tokens.empty()) fail(who + "no tokens to feed", "tokens", me);
    if (w.start_pos < 0) fail(who + "negative start_pos " + std::to_string(w.start_pos), "start_pos", me);
    const int64_t end = (int64_t)w.start_pos + (int64_t)w.tokens.size();
    if (lim.max_positions > 0 && end > lim.max_positions)
      fail(who + "positions up to " + std::to_string(end) + " exceed the model's " + std::to_string(lim.max_positions),
           "start_pos", me);
    if ((int64_t)w.block_table.size() * lim.block_size < end)
      fail(who + "block table of " + std::to_string(w.block_table.size()) + " blocks covers " +
               std::to_string(w.block_table.size() * lim.block_size) + " positions, needs " + std::to_string(end),
           "block_table", me);
    for (int32_t b : w.block_table)
      if (b < 0 || b >= lim.n_blocks)
        fail(who + "block id " + std::to_string(b) + " outside the pool [0, " + std::to_string(lim.n_blocks) + ")",
             "block_table", me);
    for (int32_t t : w.tokens)
      if (t < 0 || t >= lim.vocab_size)
        fail(who + "token id " + std::to_string(t) + " outside the vocabulary [0, " + std::to_string(lim.vocab_size) +
                 ")",
             "tokens", me);
    if (w.sample) {
      if (std::string why = troupe::validate(w.sampling); !why.empty()) fail(who + why, "sampling", me);
      if (w.n_prompt < 0 || w.n_prompt > (int32_t)w.history.size())
        fail(who + "n_prompt " + std::to_string(w.n_prompt) + " outside the history of " +
                 std::to_string(w.history.size()) + " tokens",
             "n_prompt", me);
    }
    total += (int64_t)w.tokens.size();
  }
  if (total > lim.max_batch_tokens)
    fail("step " + std::to_string(plan.step_id) + ": " + std::to_string(total) +
             " tokens, more than max_batch_tokens " + std::to_string(lim.max_batch_tokens),
         "tokens", over_step_budget(plan, lim.max_batch_tokens));
  if (lim.max_seqs > 0 && (int64_t)plan.seqs.size() > lim.max_seqs) {
    std::vector<uint64_t> extra;
    for (size_t i = static_cast<size_t>(lim.max_seqs); i < plan.seqs.size(); ++i) extra.push_back(plan.seqs[i].seq_id);
    fail("step " + std::to_string(plan.step_id) + ": " + std::to_string(plan.seqs.size()) +
             " sequences, more than max_seqs " + std::to_string(lim.max_seqs),
         "seqs", std::move(extra));
  }
}

}  // namespace troupe
