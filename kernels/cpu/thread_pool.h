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
  void run_chunks();  // takes chunks of the current job until none is left

  std::vector<std::thread> workers_;

  // The current job, published by bumping generation_.
  troupe_range_fn fn_ = nullptr;
  void* arg_ = nullptr;
  int64_t n_ = 0;
  int64_t n_chunks_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  std::atomic<int> unfinished_{0};  // workers still inside the current job
  std::atomic<uint32_t> generation_{0};
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
