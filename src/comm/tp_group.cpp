#include "src/comm/tp_group.h"

#include <cstring>

#include "src/cluster/codec.h"
#include "troupe/error.h"

namespace troupe::comm {

namespace {

// What the leader broadcasts before each payload: its kind and size.
struct header {
  uint32_t kind = 0;
  uint32_t reserved = 0;
  uint64_t bytes = 0;
};
static_assert(sizeof(header) == 16);

struct block_pair {
  int32_t src, dst;
};

}  // namespace

tp_group_leader::tp_group_leader(std::unique_ptr<worker_backend> local, communicator& comm,
                                 std::chrono::milliseconds keepalive, std::function<void(const std::string&)> on_broken)
    : local_(std::move(local)),
      comm_(comm),
      on_broken_(std::move(on_broken)),
      last_sent_(std::chrono::steady_clock::now()) {
  if (comm_.rank() != 0)
    throw error(error_kind::failed,
                "tensor parallel: the group leader must be rank 0, got rank " + std::to_string(comm_.rank()));
  keepalive_ = std::thread([this, keepalive] { keepalive_loop(keepalive); });
}

tp_group_leader::~tp_group_leader() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    if (!broken_) {
      try {
        send(kind::stop, {});
      } catch (const std::exception&) {  // the group is gone already: nothing to tell
      }
    }
  }
  cv_.notify_all();
  keepalive_.join();
}

void tp_group_leader::send(kind k, const std::string& payload) {
  header h{static_cast<uint32_t>(k), 0, payload.size()};
  comm_.broadcast(&h, sizeof h, 0);
  if (!payload.empty()) comm_.broadcast(const_cast<char*>(payload.data()), payload.size(), 0);
  last_sent_ = std::chrono::steady_clock::now();
}

void tp_group_leader::broken(const std::string& why) {
  if (!broken_.exchange(true) && on_broken_) on_broken_(why);
}

step_result tp_group_leader::step(const step_plan& plan) {
  std::lock_guard lk(mu_);
  if (broken_) throw error(error_kind::disconnected, "tensor-parallel group is out of service (a rank was lost)");
  try {
    send(kind::plan, codec::encode(proto::control_message{plan}));
    return cache_.step(*local_, plan);
  } catch (const troupe::error& e) {
    if (e.kind() == error_kind::disconnected) broken(e.what());
    throw;
  }
}

void tp_group_leader::copy_block(int32_t src, int32_t dst) {
  std::lock_guard lk(mu_);
  const block_pair p{src, dst};
  try {
    send(kind::copy_block, std::string(reinterpret_cast<const char*>(&p), sizeof p));
  } catch (const troupe::error& e) {
    broken(e.what());
    throw;
  }
  local_->copy_block(src, dst);
}

std::string tp_group_leader::describe() const {
  return local_->describe() + "; tensor-parallel leader, " + comm_.describe();
}

void tp_group_leader::keepalive_loop(std::chrono::milliseconds every) {
  std::unique_lock lk(mu_);
  while (!stopping_ && !broken_) {
    cv_.wait_for(lk, every);
    if (stopping_ || broken_) break;
    if (std::chrono::steady_clock::now() - last_sent_ < every) continue;
    try {
      // A round trip: a send alone can succeed into the socket of a rank that has died.
      send(kind::keepalive, {});
      comm_.barrier();
    } catch (const std::exception& e) {
      broken(std::string("keepalive: ") + e.what());
    }
  }
}

std::string run_tp_follower(worker_backend& local, communicator& comm) {
  std::string payload;
  seq_cache cache;  // expands the relayed diffs as the leader's does
  try {
    while (true) {
      header h;
      comm.broadcast(&h, sizeof h, 0);
      payload.resize(h.bytes);
      if (h.bytes) comm.broadcast(payload.data(), payload.size(), 0);
      switch (h.kind) {
        case 0:  // keepalive: answered by joining the leader's barrier
          comm.barrier();
          break;
        case 1: {
          auto msg = codec::decode_control(payload);
          const auto* plan = std::get_if<step_plan>(&msg);
          if (!plan) return "tensor parallel: the leader relayed a control message that is not a step plan";
          cache.step(local, *plan);
          break;
        }
        case 2: {
          block_pair p;
          if (payload.size() != sizeof p) return "tensor parallel: malformed copy_block from the leader";
          std::memcpy(&p, payload.data(), sizeof p);
          local.copy_block(p.src, p.dst);
          break;
        }
        case 3:
          return "stopped";
        default:
          return "tensor parallel: unknown message kind " + std::to_string(h.kind) + " from the leader";
      }
    }
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace troupe::comm
