// All-reduce latency and bandwidth per message size between ranks on this machine.
// Each rank is a separate process (fork) talking Gloo over loopback TCP; the rendezvous
// runs through the control-plane store, as in the cluster.
//   bench_allreduce [--ranks N] [--iters K]
// Prints per size: median latency, algorithm bandwidth (bytes / time) and bus bandwidth
// (algbw * 2 (n-1) / n, the ring's per-link traffic), as nccl-tests reports them.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "src/comm/rendezvous.h"
#include "troupe/communicator.h"

namespace {

int run_rank(const std::string& addr, int rank, int size, int iters) {
  troupe::comm::zmq_rendezvous_store store(addr);
  troupe::gloo_options opts;
  opts.prefix = "bench";
  auto comm = troupe::make_gloo_communicator(store, rank, size, opts);
  if (rank == 0) std::printf("%12s %14s %14s %14s\n", "bytes", "median us", "algbw GB/s", "busbw GB/s");
  for (size_t bytes = 4; bytes <= (64u << 20); bytes *= 4) {
    std::vector<float> buf(bytes / 4, 1.0f);
    const int reps = bytes >= (4u << 20) ? std::max(3, iters / 20) : iters;
    std::vector<double> us;
    comm->all_reduce_sum(buf.data(), buf.size());  // warm-up
    for (int i = 0; i < reps; ++i) {
      comm->barrier();
      const auto t0 = std::chrono::steady_clock::now();
      comm->all_reduce_sum(buf.data(), buf.size());
      us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    const double med = us[us.size() / 2];
    const double algbw = bytes / (med * 1e-6) / 1e9;
    if (rank == 0) std::printf("%12zu %14.1f %14.3f %14.3f\n", bytes, med, algbw, algbw * 2.0 * (size - 1) / size);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int ranks = 2, iters = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--ranks")) ranks = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
  }
  troupe::comm::rendezvous_service service("tcp://127.0.0.1:*");
  std::printf("gloo all-reduce, %d ranks (processes), loopback TCP\n", ranks);
  std::fflush(stdout);
  std::vector<pid_t> kids;
  for (int r = 0; r < ranks; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      int rc = 1;
      try {
        rc = run_rank(service.address(), r, ranks, iters);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d: %s\n", r, e.what());
      }
      std::fflush(stdout);
      _exit(rc);
    }
    kids.push_back(pid);
  }
  int failed = 0;
  for (pid_t k : kids) {
    int st = 0;
    waitpid(k, &st, 0);
    failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  return failed ? 1 : 0;
}
