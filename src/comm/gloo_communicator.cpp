// The Gloo communicator: CPU ranks over TCP. Gloo's own rendezvous Store is adapted onto
// troupe::rendezvous_store so that bootstrap travels over the cluster's control plane.
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <string>

#include "troupe/communicator.h"
#include "troupe/error.h"

namespace troupe {

namespace {

class store_adapter : public gloo::rendezvous::Store {
 public:
  store_adapter(rendezvous_store& s, std::chrono::milliseconds timeout) : store_(s), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override { store_.set(key, data); }
  std::vector<char> get(const std::string& key) override { return store_.get(key, timeout_); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    for (const auto& k : keys) store_.get(k, timeout);
  }

 private:
  rendezvous_store& store_;
  std::chrono::milliseconds timeout_;
};

void sum_floats(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<float*>(out);
  auto* x = static_cast<const float*>(a);
  auto* y = static_cast<const float*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
}

class gloo_communicator : public communicator {
 public:
  gloo_communicator(rendezvous_store& store, int rank, int size, const gloo_options& opts) : rank_(rank), size_(size) {
    if (size < 1 || rank < 0 || rank >= size)
      throw error(error_kind::failed,
                  "gloo: rank " + std::to_string(rank) + " of size " + std::to_string(size) + " is out of range",
                  "rank");
    gloo::transport::tcp::attr attr;
    attr.hostname = opts.hostname;
    try {
      device_ = gloo::transport::tcp::CreateDevice(attr);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
      ctx->setTimeout(opts.timeout);
      store_adapter adapter(store, opts.timeout);
      gloo::rendezvous::PrefixStore prefixed(opts.prefix, adapter);
      ctx->connectFullMesh(prefixed, device_);
      ctx_ = std::move(ctx);
    } catch (const troupe::error&) {
      throw;
    } catch (const std::exception& e) {
      throw error(error_kind::disconnected, "gloo: rank " + std::to_string(rank) + " of " + std::to_string(size) +
                                                " could not join group '" + opts.prefix + "' on " + opts.hostname +
                                                ": " + e.what());
    }
    hostname_ = opts.hostname;
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(float* data, size_t n) override {
    if (size_ == 1 || n == 0) return;
    guarded("all_reduce", [&] {
      gloo::AllreduceOptions opts(ctx_);
      opts.setOutput(data, n);
      opts.setReduceFunction(&sum_floats);
      opts.setTag(next_tag());
      gloo::allreduce(opts);
    });
  }

  void broadcast(void* data, size_t bytes, int root) override {
    if (size_ == 1 || bytes == 0) return;
    guarded("broadcast", [&] {
      gloo::BroadcastOptions opts(ctx_);
      opts.setOutput(static_cast<char*>(data), bytes);
      opts.setRoot(root);
      opts.setTag(next_tag());
      gloo::broadcast(opts);
    });
  }

  void barrier() override {
    if (size_ == 1) return;
    guarded("barrier", [&] {
      gloo::BarrierOptions opts(ctx_);
      opts.setTag(next_tag());
      gloo::barrier(opts);
    });
  }

  std::string describe() const override {
    return "gloo tcp " + hostname_ + ", rank " + std::to_string(rank_) + " of " + std::to_string(size_);
  }

 private:
  // A peer that dies surfaces as a Gloo exception: report it as a disconnected group.
  template <typename F>
  void guarded(const char* what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      throw error(error_kind::disconnected,
                  std::string("gloo ") + what + " failed on rank " + std::to_string(rank_) + ": " + e.what());
    }
  }
  uint32_t next_tag() { return tag_++ & 0x7fffffff; }

  int rank_, size_;
  std::string hostname_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> ctx_;
  uint32_t tag_ = 0;
};

}  // namespace

std::unique_ptr<communicator> make_gloo_communicator(rendezvous_store& store, int rank, int size,
                                                     const gloo_options& opts) {
  return std::make_unique<gloo_communicator>(store, rank, size, opts);
}

}  // namespace troupe
