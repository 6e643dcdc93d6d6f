// A persistent pool of worker threads behind troupe_kctx's parallel_for. The calling
// thread takes part; idle workers spin briefly (a decode step issues many small ops in a
// row) and then block, so an idle engine costs no CPU.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "troupe/kernel_abi.h"

namespace troupe::kern::cpu {

class thread_pool {
 public:
  // n_threads counts the caller: thread_pool(1) starts no thread and runs inline.
  explicit thread_pool(int n_threads);
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool();

  int size() const { return (int)workers_.size() + 1; }

  // Runs fn(arg, begin, end) over disjoint ranges covering [0, n); returns when all are
  // done. A call made while the pool is busy (from inside fn, or from a second thread)
  // runs inline on the calling thread instead of waiting.
  void parallel_for(int64_t n, troupe_range_fn fn, void* arg);

  // The C entry point stored in troupe_kctx: pool is a thread_pool*.
  static void parallel_for_c(void* pool, int64_t n, troupe_range_fn fn, void* arg);

 private:
  void worker_loop();
  void run_chunks(uint32_t job);  // takes chunks of job `job` until none is left

  std::vector<std::thread> workers_;

  // The current job. Its fields are written before `claim_` is published with the job's
  // number and read only after a chunk of that job was claimed: the job cannot finish
  // (and be overwritten) while a claimed chunk is running. So the caller returns as soon
  // as every chunk is done, without waiting for a worker that was slow to wake up.
  std::atomic<troupe_range_fn> fn_{nullptr};
  std::atomic<void*> arg_{nullptr};
  std::atomic<int64_t> n_{0};
  std::atomic<bool> guided_{false};  // chunks of falling sizes (large jobs)
  // (job number << 32) | (chunks << 16) | next chunk: one word, so a claim always checks
  // the chunk count of the job it claims from.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};         // chunks of the current job finished
  std::atomic<uint32_t> generation_{0};  // the latest job number: wakes the workers
  std::atomic<bool> busy_{false};
  std::atomic<bool> stop_{false};

  // Blocking after the spin: sleepers_ lets parallel_for skip the notify when nobody sleeps.
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
};

// A kernel context whose parallel_for runs on `pool` (which must outlive its use).
troupe_kctx make_kctx(thread_pool& pool);

}  // namespace troupe::kern::cpu
