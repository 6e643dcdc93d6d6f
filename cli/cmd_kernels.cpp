// troupe kernels list|check|bench: the kernel registry as built in this binary (the
// reference, the CPU variants this machine supports, the CUDA ones in CUDA builds, and any
// --plugin), checked against the reference or timed. CUDA variants run on --device when
// it is usable; otherwise they are listed as skipped with the reason, and the exit status
// is unaffected unless --variant names one of them.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "kernels/check.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/make_registry.h"
#ifdef TROUPE_WITH_CUDA
#include "kernels/cuda/cuda.h"
#endif
#include "kernels/roofline.h"
#include "troupe/error.h"
#include "troupe/kernel_registry.h"

namespace troupe::cli {

namespace {

struct kernels_options {
  std::string op;  // empty: all
  std::string variant;
  kern::kernel_registry_options kernels = {.cuda = true};  // --plugin, --kernel; CUDA variants in CUDA builds
  int threads = 0;                                         // 0: the hardware threads
  std::vector<std::string> shapes;                         // bench: "MxNxK"; empty: decode and prefill sizes
  uint64_t seed = 1;
  int device = 0;  // CUDA device for CUDA variants
};

int thread_count(const kernels_options& o) {
  return o.threads > 0 ? o.threads : (int)std::max(1u, std::thread::hardware_concurrency());
}

// Throws on an unknown --op name, listing the known ones.
void validate_op(const std::string& name) {
  troupe_op op;
  if (name.empty() || op_from_name(name, &op)) return;
  std::string known;
  for (int i = 0; i < TROUPE_OP_COUNT; ++i) known += (i ? ", " : "") + std::string(op_name(static_cast<troupe_op>(i)));
  throw error(error_kind::failed, "--op: unknown op '" + name + "' (known: " + known + ")", "op");
}

// The device CUDA variants run on, or null with the reason in *why.
std::unique_ptr<kern::variant_device> open_cuda_device(int device, std::string* why) {
#ifdef TROUPE_WITH_CUDA
  try {
    return kern::cuda::make_variant_device(device);
  } catch (const error& e) {
    *why = e.what();
  }
#else
  (void)device;
  *why = "this troupe was built without CUDA (configure with -DTROUPE_CUDA=ON)";
#endif
  return nullptr;
}

// The registry, a thread pool and, when a variant of the CUDA backend is registered, its
// device (or why there is none), as check and bench use them.
struct kernel_session {
  explicit kernel_session(const kernels_options& o) : pool(thread_count(o)), ctx(kern::cpu::make_kctx(pool)) {
    validate_op(o.op);
    reg_ptr = kern::make_kernel_registry(o.kernels);
    bool any_cuda = false;
    for (int i = 0; i < TROUPE_OP_COUNT; ++i)
      for (const auto& v : reg().variants(static_cast<troupe_op>(i))) any_cuda |= v.backend == TROUPE_BACKEND_CUDA;
    if (any_cuda) cuda = open_cuda_device(o.device, &cuda_why);
    if (!o.variant.empty() && !cuda && names_cuda_variant(o.variant))
      throw error(error_kind::unimplemented,
                  "--variant " + o.variant + " is a CUDA variant and no CUDA device is usable: " + cuda_why, "variant");
  }
  bool names_cuda_variant(const std::string& name) const {
    for (int i = 0; i < TROUPE_OP_COUNT; ++i)
      for (const auto& v : reg().variants(static_cast<troupe_op>(i)))
        if (v.backend == TROUPE_BACKEND_CUDA && name == v.name) return true;
    return false;
  }
  // One line about the CUDA device: its name and roofline, or why its variants are skipped.
  std::string cuda_line() const {
    if (cuda) return "cuda: " + cuda->describe();
    return "cuda: unavailable, CUDA variants skipped: " + cuda_why;
  }
  std::unique_ptr<kernel_registry> reg_ptr;
  const kernel_registry& reg() const { return *reg_ptr; }
  kern::cpu::thread_pool pool;
  troupe_kctx ctx;
  std::unique_ptr<kern::variant_device> cuda;  // null: none usable (cuda_why) or none needed
  std::string cuda_why;
};

const char* backend_name(troupe_backend b) { return b == TROUPE_BACKEND_CPU ? "cpu" : "cuda"; }

// ---- list --------------------------------------------------------------------------

int run_list(const kernels_options& o) {
  const auto reg_ptr = kern::make_kernel_registry(o.kernels);
  const kernel_registry& reg = *reg_ptr;
  fmt::print("cpu: {}\n", kern::cpu::describe(thread_count(o)));
  fmt::print("{:<16} {:<8} {}\n", "op", "backend", "variants (* = default)");
  for (int i = 0; i < TROUPE_OP_COUNT; ++i) {
    const auto op = static_cast<troupe_op>(i);
    for (troupe_backend b : {TROUPE_BACKEND_CPU, TROUPE_BACKEND_CUDA}) {
      std::string names;
      for (const auto& v : reg.variants(op)) {
        if (v.backend != b) continue;
        const bool dflt = std::strcmp(reg.selected(op, b).name, v.name) == 0;
        names += (names.empty() ? "" : ", ") + std::string(dflt ? "*" : "") + v.name;
      }
      if (!names.empty()) fmt::print("{:<16} {:<8} {}\n", op_name(op), backend_name(b), names);
    }
  }
  return 0;
}

// ---- check -------------------------------------------------------------------------

int run_check(const kernels_options& o) {
  kernel_session ks(o);
  const kernel_registry& reg = ks.reg();
  kern::cpu::thread_pool& pool = ks.pool;
  const troupe_kctx& ctx = ks.ctx;
  kern::check_options opt;
  opt.op = o.op;
  opt.variant = o.variant;
  opt.seed = o.seed;
  opt.cuda = ks.cuda.get();
  opt.cuda_skip_reason = ks.cuda_why;
  fmt::print("checking against ref on {}\n", kern::cpu::describe(pool.size()));
  if (ks.cuda || !ks.cuda_why.empty()) fmt::print("{}\n", ks.cuda_line());
  fmt::print("{:<16} {:<22} {:<7} {:>5} {:>12} {:>12}  {}\n", "op", "variant", "backend", "cases", "worst |err|",
             "err/allowed", "result");
  const auto results = kern::check_variants(reg, &ctx, opt);
  int failed = 0, skipped = 0;
  for (const auto& r : results) {
    if (r.skipped) {
      fmt::print("{:<16} {:<22} {:<7} {:>5} {:>12} {:>12}  skipped\n", op_name(r.op), r.variant,
                 backend_name(r.backend), "-", "-", "-");
      ++skipped;
      continue;
    }
    fmt::print("{:<16} {:<22} {:<7} {:>5} {:>12.3g} {:>12.3f}  {}\n", op_name(r.op), r.variant, backend_name(r.backend),
               r.cases, r.max_abs_err, r.worst_ratio, r.pass ? "pass" : "FAIL");
    if (!r.pass) {
      fmt::print("    first failure: {}\n", r.first_failure);
      ++failed;
    }
  }
  if (results.empty()) {
    fmt::print(stderr, "troupe kernels check: no variant matched{}{}\n", o.op.empty() ? "" : " --op " + o.op,
               o.variant.empty() ? "" : " --variant " + o.variant);
    return 1;
  }
  fmt::print("{} variants checked, {} failed", results.size() - skipped, failed);
  if (skipped) fmt::print(", {} skipped ({})", skipped, ks.cuda_why);
  fmt::print("\n");
  return failed ? 1 : 0;
}

// ---- bench -------------------------------------------------------------------------

// Seconds per call of f on the steady clock: one warm-up call, then repeats until ~0.3 s.
double time_per_call(const std::function<void()>& f) { return kern::make_host_device(nullptr)->seconds_per_call(f); }

// A simple stream copy of 64 MiB on the pool: what the memory system gives these threads.
double copy_bandwidth(kern::cpu::thread_pool& pool) {
  const size_t n = (64u << 20) / sizeof(float);
  std::vector<float> src(n, 1.0f), dst(n, 0.0f);
  struct job {
    const float* src;
    float* dst;
  } j{src.data(), dst.data()};
  const double s = time_per_call([&] {
    pool.parallel_for((int64_t)n / 4096,
                      [](void* a, int64_t b, int64_t e) {
                        auto* jj = static_cast<job*>(a);
                        std::memcpy(jj->dst + b * 4096, jj->src + b * 4096, (size_t)(e - b) * 4096 * sizeof(float));
                      },
                      &j);
  });
  return 2.0 * n * sizeof(float) / s / 1e9;  // read + write
}

struct mm_shape {
  int64_t m, n, k;
};

// --shape MxNxK values, or the decode and prefill sizes.
std::vector<mm_shape> parse_shapes(const std::vector<std::string>& texts) {
  std::vector<mm_shape> out;
  for (const auto& text : texts) {
    mm_shape s{};
    char tail = 0;
    if (std::sscanf(text.c_str(), "%" SCNd64 "x%" SCNd64 "x%" SCNd64 "%c", &s.m, &s.n, &s.k, &tail) != 3 || s.m < 1 ||
        s.n < 1 || s.k < 32 || s.k % 32)
      throw error(error_kind::failed, "--shape '" + text + "': expected MxNxK with K a multiple of 32", "shape");
    out.push_back(s);
  }
  if (out.empty()) out = {{1, 2048, 2048}, {512, 2048, 2048}};
  return out;
}

// How close a variant comes to its nearer roof: the larger of its share of the peak
// bandwidth and of the peak FP16 throughput, in percent ("-" with no roof known).
std::string roof_share(const kern::roofline& roof, double gb_s, double tflop_s) {
  double share = 0;
  if (roof.mem_gb_s > 0) share = gb_s / roof.mem_gb_s;
  if (roof.fp16_tflop_s > 0) share = std::max(share, tflop_s / roof.fp16_tflop_s);
  return share > 0 ? fmt::format("{:.0f}%", 100 * share) : "-";
}

int run_bench(const kernels_options& o) {
  const std::vector<mm_shape> bench_shapes = parse_shapes(o.shapes);
  kernel_session ks(o);
  const kernel_registry& reg = ks.reg();
  kern::cpu::thread_pool& pool = ks.pool;
  const troupe_kctx& ctx = ks.ctx;
  fmt::print("cpu: {}\n", kern::cpu::describe(pool.size()));
  // The roofs each variant is compared with: the CPU's copy bandwidth; the GPU's datasheet
  // (or runtime-derived) bandwidth and dense FP16 peak.
  kern::roofline cpu_roof;
  cpu_roof.mem_gb_s = copy_bandwidth(pool);
  cpu_roof.source = "stream copy, read + write, 64 MiB";
  fmt::print("roofline cpu: {}\n", kern::describe(cpu_roof));
  kern::roofline gpu_roof;
  if (ks.cuda) {
#ifdef TROUPE_WITH_CUDA
    gpu_roof = kern::cuda::device_roofline(o.device);
#endif
    fmt::print("roofline {}: {}\n", ks.cuda->describe(), kern::describe(gpu_roof));
  } else if (!ks.cuda_why.empty()) {
    fmt::print("{}\n", ks.cuda_line());
  }
  fmt::print("{:<12} {:<22} {:<7} {:<16} {:>10} {:>9} {:>9} {:>7}\n", "op", "variant", "backend", "shape m x n x k",
             "ms/call", "GB/s", "TFLOP/s", "of roof");
  const troupe_op ops[] = {TROUPE_OP_MATMUL_F32, TROUPE_OP_MATMUL_F16, TROUPE_OP_MATMUL_BF16, TROUPE_OP_MATMUL_Q8_0,
                           TROUPE_OP_MATMUL_Q4_0};
  int benched = 0;
  std::vector<std::pair<troupe_op, std::string>> skipped;  // CUDA variants without a device, listed once
  for (troupe_op op : ops) {
    if (!o.op.empty() && o.op != op_name(op)) continue;
    const int dt = kern::op_dtype(op);
    for (const mm_shape& s : bench_shapes) {
      const auto w = kern::random_weights(dt, s.n, s.k, o.seed);
      std::vector<float> x(s.m * s.k), y(s.m * s.n);
      std::mt19937 rng((unsigned)o.seed);
      std::uniform_real_distribution<float> u(-1, 1);
      for (auto& e : x) e = u(rng);
      for (const auto& v : reg.variants(op)) {
        if (!o.variant.empty() && o.variant != v.name) continue;
        if (s.m > 1 && std::string_view(v.name) == "ref") continue;  // minutes per call
        const bool on_gpu = v.backend == TROUPE_BACKEND_CUDA;
        if (on_gpu && !ks.cuda) {
          const std::pair<troupe_op, std::string> item{op, v.name};
          if (std::find(skipped.begin(), skipped.end(), item) == skipped.end()) skipped.push_back(item);
          continue;
        }
        auto mm = reinterpret_cast<troupe_matmul_fn>(v.fn);
        double sec = 0;
        if (on_gpu) {  // device copies; events on the device's stream
          kern::variant_device& dev = *ks.cuda;
          float* dy = static_cast<float*>(dev.upload(y.data(), y.size() * sizeof(float)));
          const auto* dx = static_cast<const float*>(dev.upload(x.data(), x.size() * sizeof(float)));
          const void* dw = dev.upload(w.data(), w.size());
          sec = dev.seconds_per_call([&] { mm(dev.ctx(), dy, dx, dw, s.m, s.n, s.k); });
          dev.release();
        } else {
          sec = time_per_call([&] { mm(&ctx, y.data(), x.data(), w.data(), s.m, s.n, s.k); });
        }
        const kern::roofline& roof = on_gpu ? gpu_roof : cpu_roof;
        const double gb_s = (double)(w.size() + (x.size() + y.size()) * sizeof(float)) / sec / 1e9;
        const double tflop_s = 2.0 * s.m * s.n * s.k / sec / 1e12;
        fmt::print("{:<12} {:<22} {:<7} {:<16} {:>10.3f} {:>9.1f} {:>9.3f} {:>7}\n", op_name(op), v.name,
                   backend_name(v.backend), fmt::format("{} x {} x {}", s.m, s.n, s.k), sec * 1e3, gb_s, tflop_s,
                   roof_share(roof, gb_s, tflop_s));
        std::fflush(stdout);
        ++benched;
      }
    }
  }
  for (const auto& [op, name] : skipped)
    fmt::print("{:<12} {:<22} {:<7} skipped: {}\n", op_name(op), name, "cuda", ks.cuda_why);
  if (!o.op.empty() && benched == 0 && skipped.empty())
    fmt::print("troupe kernels bench: no matmul variant matched (bench times the matmul ops)\n");
  return 0;
}

}  // namespace

void add_kernels(CLI::App& app) {
  auto* kernels = app.add_subcommand("kernels", "List, check and benchmark kernel variants");
  kernels->require_subcommand(1);
  auto opts = std::make_shared<kernels_options>();
  // --plugin and --kernel (which changes the default `list` marks)
  auto add_plugin_option = [&](CLI::App* sub) { add_kernel_flags(*sub, opts->kernels); };

  auto* list = kernels->add_subcommand("list", "Ops, their variants and backends (* = the default)");
  add_plugin_option(list);
  list->callback([opts] { set_runner([opts] { return run_list(*opts); }); });

  auto* check = kernels->add_subcommand(
      "check", "Check variants (CPU and CUDA) against the reference on random and awkward shapes");
  check->add_option("--op", opts->op, "Only this op (e.g. matmul_q4_0)");
  check->add_option("--variant", opts->variant, "Only this variant (e.g. cpu.avx2); default all but ref");
  add_plugin_option(check);
  check->add_option("--threads", opts->threads, "Threads in the pool (default: hardware threads)");
  check->add_option("--seed", opts->seed, "Seed of the random inputs");
  check->add_option("--device", opts->device, "CUDA device for CUDA variants")->capture_default_str();
  check->callback([opts] { set_runner([opts] { return run_check(*opts); }); });

  auto* bench = kernels->add_subcommand(
      "bench", "GB/s and TFLOP/s of the matmul variants, beside the CPU's and the GPU's roofline");
  bench->add_option("--op", opts->op, "Only this matmul op (e.g. matmul_q4_0)");
  bench->add_option("--variant", opts->variant, "Only this variant");
  bench->add_option("--threads", opts->threads, "Threads in the pool (default: hardware threads)");
  bench->add_option("--shape", opts->shapes,
                    "y(M, N) = x(M, K) W(N, K)^T as MxNxK (default 1x2048x2048 and 512x2048x2048)");
  bench->add_option("--device", opts->device, "CUDA device for CUDA variants")->capture_default_str();
  add_plugin_option(bench);
  bench->callback([opts] { set_runner([opts] { return run_bench(*opts); }); });
}

}  // namespace troupe::cli
