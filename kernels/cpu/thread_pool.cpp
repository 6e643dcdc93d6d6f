// The thread pool: one job at a time, split into chunks that the caller and the workers
// take from a shared counter (dynamic, so a core busy with another process does not hold
// the whole step back).
#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TROUPE_CPU_RELAX() _mm_pause()
#else
#define TROUPE_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace troupe::kern::cpu {

namespace {
// How long an idle worker spins before it blocks: longer than most gaps between two
// kernels of one decode step, short enough not to take a shared core for long. Measured
// in time, not pauses (a pause is ~30 ns on this Zen 4 VM, ~40 ns on Skylake-X and later
// Intel cores, a few ns on older cores). 300 µs kept the worker awake through a whole 1B
// decode step (fewer futex wake-ups), but with other processes on the two cores decoded
// 110m q4_0 at 153-167 tok/s against 185-194 for 60 µs: a spinning thread spends the
// share of the core its process will want back.
constexpr auto k_spin_time = std::chrono::microseconds(60);
constexpr int k_pauses_per_clock_read = 64;
// The caller's wait for the last chunks: pauses before it yields the core.
constexpr int k_wait_spins = 2000;
// Chunks per thread: enough for balance when a core is slow (the smaller a chunk, the less
// likely a worker is preempted while holding one, which stalls the whole call), few enough
// that a chunk of a matrix-vector product is a long sequential stream: every chunk starts a
// cold stream for the prefetchers and costs a claim and a completion on shared cache lines.
// Measured with bench_engine on 110m q4_0, 2 threads, batch 1 (quiet machine, tok/s):
// 8 equal / 16 guided chunks per thread 445-466; 4 / 4 485-493; 2 / 4 530-550; 2 / 2
// 570-596; 1 / 1 (a static split) 401. With a busy-loop process on one of the two cores:
// 8 / 16 233-243, 2 / 2 275, 2 / 4 265-295. 2 / 4 also kept prefill and batches 8 and 32
// at or above 8 / 16 (110m q8_0 decode batch 1 270 -> 329, 1b q4_0 47 -> 50).
constexpr int64_t k_chunks_per_thread = 2;
// Jobs of at least k_guided_min_items items per chunk: more chunks, of falling sizes (see
// chunk_begin), so the last ones are short.
constexpr int64_t k_guided_chunks_per_thread = 4;
constexpr int64_t k_guided_min_items = 4;
constexpr int64_t k_max_chunks = 0xffff;  // the chunk fields of claim_ are 16 bits

// Where chunk c of `chunks` starts in [0, n). With enough items per chunk the sizes fall
// linearly (chunk c ends where n * (1 - ((chunks - c - 1) / chunks)^2) is): the first
// chunk is twice the average, the last 1/chunks of it, so the thread that takes the last
// chunk of a memory-bound product does not stream alone for long while the other waits.
int64_t chunk_begin(int64_t n, int64_t chunks, int64_t c, bool guided) {
  if (!guided) return n * c / chunks;
  const unsigned __int128 left = (unsigned __int128)(chunks - c) * (uint64_t)(chunks - c);
  return n - (int64_t)((unsigned __int128)(uint64_t)n * left / ((uint64_t)chunks * (uint64_t)chunks));
}
}  // namespace

thread_pool::thread_pool(int n_threads) {
  const int workers = std::max(1, n_threads) - 1;
  workers_.reserve(workers);
  for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void thread_pool::run_chunks(uint32_t job) {
  for (;;) {
    uint64_t v = claim_.load(std::memory_order_acquire);
    int64_t chunk, chunks;
    do {
      chunk = (int64_t)(v & 0xffff);
      chunks = (int64_t)((v >> 16) & 0xffff);
      if ((uint32_t)(v >> 32) != job || chunk >= chunks) return;
    } while (!claim_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire));
    const int64_t n = n_.load(std::memory_order_relaxed);
    const bool guided = guided_.load(std::memory_order_relaxed);
    const int64_t begin = chunk_begin(n, chunks, chunk, guided), end = chunk_begin(n, chunks, chunk + 1, guided);
    if (begin < end) fn_.load(std::memory_order_relaxed)(arg_.load(std::memory_order_relaxed), begin, end);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void thread_pool::worker_loop() {
  uint32_t seen = 0;
  for (;;) {
    // Spin for k_spin_time, reading the clock every k_pauses_per_clock_read pauses.
    const auto until = std::chrono::steady_clock::now() + k_spin_time;
    for (int spins = 1; generation_.load(std::memory_order_acquire) == seen; ++spins) {
      TROUPE_CPU_RELAX();
      if (spins % k_pauses_per_clock_read == 0 && std::chrono::steady_clock::now() >= until) break;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    run_chunks(seen);  // returns at once if that job is already over
  }
}

void thread_pool::parallel_for(int64_t n, troupe_range_fn fn, void* arg) {
  if (n <= 0) return;
  bool expected = false;
  if (workers_.empty() || n == 1 || !busy_.compare_exchange_strong(expected, true)) {
    fn(arg, 0, n);
    return;
  }
  const int64_t guided_chunks = std::min(k_guided_chunks_per_thread * size(), k_max_chunks);
  const bool guided = n >= k_guided_min_items * guided_chunks;
  const int64_t chunks = guided ? guided_chunks : std::min({n, k_chunks_per_thread * size(), k_max_chunks});
  guided_.store(guided, std::memory_order_relaxed);
  fn_.store(fn, std::memory_order_relaxed);
  arg_.store(arg, std::memory_order_relaxed);
  n_.store(n, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  const uint32_t job = generation_.load(std::memory_order_relaxed) + 1;
  claim_.store((uint64_t)job << 32 | (uint64_t)chunks << 16, std::memory_order_release);
  generation_.store(job);  // seq_cst: pairs with the sleepers_ increment in worker_loop
  if (sleepers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }
  run_chunks(job);
  int spins = 0;
  while (done_.load(std::memory_order_acquire) < chunks) {
    if (++spins < k_wait_spins)
      TROUPE_CPU_RELAX();
    else
      std::this_thread::yield();
  }
  busy_.store(false, std::memory_order_release);
}

void thread_pool::parallel_for_c(void* pool, int64_t n, troupe_range_fn fn, void* arg) {
  static_cast<thread_pool*>(pool)->parallel_for(n, fn, arg);
}

troupe_kctx make_kctx(thread_pool& pool) {
  troupe_kctx ctx{};
  ctx.pool = &pool;
  ctx.parallel_for = &thread_pool::parallel_for_c;
  ctx.n_threads = pool.size();
  ctx.stream = nullptr;
  return ctx;
}

}  // namespace troupe::kern::cpu
