#include "actors/io_bridge.h"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <chrono>
#include <map>
#include <utility>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "troupe/error.h"

namespace troupe::actors {

// ---- the doorbell -------------------------------------------------------------------------------

// An eventfd the I/O thread polls beside its sockets. `awake` saves the write (a
// syscall) while the I/O thread is busy and will look at its mailbox anyway.
class doorbell {
 public:
  doorbell() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw error(error_kind::failed, "eventfd failed: cannot create the I/O doorbell");
  }
  ~doorbell() { ::close(fd_); }
  void ring() {
    if (!awake_.exchange(true, std::memory_order_acq_rel)) {
      uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);
    }
  }
  // Called by the I/O thread before it looks at its mailbox a last time and sleeps.
  void going_to_sleep() { awake_.store(false, std::memory_order_release); }
  void woke() {
    uint64_t v;
    [[maybe_unused]] auto n = ::read(fd_, &v, sizeof v);
    awake_.store(true, std::memory_order_release);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
  std::atomic<bool> awake_{true};
};

io_handle::io_handle(caf::actor io, std::shared_ptr<doorbell> bell) : io_(std::move(io)), bell_(std::move(bell)) {}

void io_handle::send(uint32_t socket, std::string peer, std::string bytes) const {
  caf::anon_send(io_, io_send_atom::value, socket, std::move(peer), std::move(bytes));
  bell_->ring();
}

// ---- the I/O actor --------------------------------------------------------------------------------

namespace {

// A ROUTER learns that a TCP peer went away from a socket monitor, which names the file
// descriptor; every inbound message names its descriptor too (ZMQ_SRCFD), so the routing
// id of the peer on each descriptor is known. (ZMQ_ROUTER_NOTIFY would say it directly,
// but Debian's libzmq 4.3 is built without draft options.)
struct owned_socket {
  zmq::socket_t sock;
  socket_role role;
  caf::actor owner;
  std::unique_ptr<zmq::socket_t> monitor;  // PAIR receiving this socket's disconnect events
  std::map<int, std::string> peer_of_fd;   // TCP peers only
  std::map<int, int> stale_disconnects;    // fd -> disconnect events already acted on
};

class io_loop {
 public:
  io_loop(caf::blocking_actor* self, transport_options opts, std::shared_ptr<doorbell> bell)
      : self_(self), opts_(opts), bell_(std::move(bell)) {}

  void run() {
    rebuild_poll_items();  // the doorbell alone until a socket opens
    while (running_) {
      try {
        drain_mailbox();
        if (!running_) break;
        bell_->going_to_sleep();
        drain_mailbox();  // a message queued just before going_to_sleep() rang no bell
        if (!running_) break;
        poll_once();
      } catch (const std::exception& e) {
        spdlog::error("io: {} (the I/O loop goes on)", e.what());  // losing the I/O actor would lose the process
      }
    }
    sockets_.clear();  // closes every socket; ctx_ (destroyed after) waits up to linger_ms
  }

 private:
  // Handles what is queued. A receive with a zero timeout costs a trip through CAF's timeout
  // machinery (hundreds of microseconds); asking the mailbox first costs nothing.
  void drain_mailbox() {
    while (running_ && self_->has_next_message()) {
      self_->receive(
          [&](io_send_atom, uint32_t socket, std::string& peer, std::string& bytes) { send(socket, peer, bytes); },
          [&](io_open_atom, uint32_t role, std::string& address, caf::actor& owner,
              std::string& identity) -> caf::message { return open(role, address, owner, identity); },
          [&](io_stop_atom) { running_ = false; },
          caf::others >> [](caf::message_view&) -> caf::result<caf::message> { return caf::message{}; });
    }
  }

  caf::message open(uint32_t role_num, const std::string& address, const caf::actor& owner,
                    const std::string& identity) {
    const auto role = static_cast<socket_role>(role_num);
    try {
      zmq::socket_t s(ctx_, role == socket_role::router_bind ? zmq::socket_type::router : zmq::socket_type::dealer);
      s.set(zmq::sockopt::linger, opts_.linger_ms);
      s.set(zmq::sockopt::sndhwm, opts_.high_water_mark);
      s.set(zmq::sockopt::rcvhwm, opts_.high_water_mark);
      // ZeroMQ drops a TCP peer that sends more than this; up to it, oversized frames
      // reach us and their sender gets an error message instead of a silent disconnect.
      s.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(4 * opts_.max_message_bytes + 4096));
      std::string endpoint = address;
      std::unique_ptr<zmq::socket_t> monitor;
      if (role == socket_role::router_bind) {
        s.bind(address);
        endpoint = s.get(zmq::sockopt::last_endpoint);
        const std::string mon = "inproc://troupe-monitor-" + std::to_string(next_id_);
        if (zmq_socket_monitor(s.handle(), mon.c_str(), ZMQ_EVENT_DISCONNECTED) == 0) {
          monitor = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
          monitor->connect(mon);
        }
      } else {
        if (!identity.empty()) s.set(zmq::sockopt::routing_id, identity);
        s.set(zmq::sockopt::reconnect_ivl, 100);
        s.connect(address);
      }
      const uint32_t id = next_id_++;
      sockets_.emplace(id, owned_socket{std::move(s), role, owner, std::move(monitor), {}});
      rebuild_poll_items();
      return caf::make_message(id, endpoint, std::string());
    } catch (const zmq::error_t& e) {
      return caf::make_message(uint32_t{0}, std::string(),
                               std::string("cannot ") + (role == socket_role::router_bind ? "bind " : "connect ") +
                                   address + ": " + e.what());
    }
  }

  void send(uint32_t socket, const std::string& peer, const std::string& bytes) {
    auto it = sockets_.find(socket);
    if (it == sockets_.end()) return;
    auto& s = it->second.sock;
    try {
      if (it->second.role == socket_role::router_bind) {
        if (!s.send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return drop(peer);
      }
      if (!s.send(zmq::buffer(bytes), zmq::send_flags::dontwait)) drop(peer);
    } catch (const zmq::error_t& e) {
      spdlog::warn("io: send to socket {} failed: {}", socket, e.what());
    }
  }

  void drop(const std::string& peer) {
    if (dropped_++ % 1000 == 0) spdlog::warn("io: peer {} is not reading; dropped a message", printable(peer));
  }

  void rebuild_poll_items() {
    items_.clear();
    order_.clear();
    items_.push_back({nullptr, bell_->fd(), ZMQ_POLLIN, 0});
    for (auto& [id, s] : sockets_) {
      items_.push_back({s.sock.handle(), 0, ZMQ_POLLIN, 0});
      order_.push_back(id);
      if (s.monitor) {
        items_.push_back({s.monitor->handle(), 0, ZMQ_POLLIN, 0});
        order_.push_back(id | monitor_bit);
      }
    }
  }

  void poll_once() {
    try {
      zmq::poll(items_.data(), items_.size(), std::chrono::milliseconds(200));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::warn("io: poll failed: {}", e.what());
      return;
    }
    if (items_[0].revents & ZMQ_POLLIN) bell_->woke();
    for (size_t i = 1; i < items_.size(); ++i) {
      if (!(items_[i].revents & ZMQ_POLLIN)) continue;
      const uint32_t id = order_[i - 1];
      if (id & monitor_bit)
        monitor_events(id & ~monitor_bit);
      else
        receive_from(id);
    }
  }

  // Disconnect events: a TCP peer of a ROUTER went away; its owner hears io_peer.
  void monitor_events(uint32_t id) {
    auto& os = sockets_.at(id);
    for (;;) {
      std::vector<zmq::message_t> frames;
      try {
        if (!zmq::recv_multipart(*os.monitor, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
      } catch (const zmq::error_t&) {
        return;
      }
      if (frames.empty() || frames[0].size() < 6) continue;
      uint16_t event;
      uint32_t fd;
      std::memcpy(&event, frames[0].data(), 2);
      std::memcpy(&fd, static_cast<const char*>(frames[0].data()) + 2, 4);
      if (event != ZMQ_EVENT_DISCONNECTED) continue;
      if (auto st = os.stale_disconnects.find(static_cast<int>(fd)); st != os.stale_disconnects.end()) {
        if (--st->second == 0) os.stale_disconnects.erase(st);
        continue;  // the connection that closed was an earlier one on this descriptor
      }
      auto it = os.peer_of_fd.find(static_cast<int>(fd));
      if (it == os.peer_of_fd.end()) continue;
      caf::anon_send(os.owner, io_peer_atom::value, id, std::move(it->second));
      os.peer_of_fd.erase(it);
    }
  }

  // Reads what is queued on one socket (bounded, so that one busy socket cannot starve
  // the others or the mailbox) and forwards each message to the socket's owner.
  void receive_from(uint32_t id) {
    auto& os = sockets_.at(id);
    for (int n = 0; n < 256; ++n) {
      std::vector<zmq::message_t> frames;
      try {
        if (!zmq::recv_multipart(os.sock, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
      } catch (const zmq::error_t& e) {
        spdlog::warn("io: receive on socket {} failed: {}", id, e.what());
        return;
      }
      std::string peer;
      size_t first = 0;
      if (os.role == socket_role::router_bind) {
        peer = frames[0].to_string();
        first = 1;
        const int fd = zmq_msg_get(frames.back().handle(), ZMQ_SRCFD);  // -1 for inproc peers
        if (fd >= 0 && os.monitor) {
          // A new peer on a known descriptor: the old connection closed and the kernel reused
          // its descriptor before its disconnect event reached us. That peer is gone now, and
          // the event, when it comes, must not drop the new one.
          auto [it, fresh] = os.peer_of_fd.try_emplace(fd, peer);
          if (!fresh && it->second != peer) {
            caf::anon_send(os.owner, io_peer_atom::value, id, std::exchange(it->second, peer));
            ++os.stale_disconnects[fd];
          }
        }
      }
      const size_t payloads = frames.size() - first;
      if (payloads != 1) {
        caf::anon_send(
            os.owner, io_bad_atom::value, id, std::move(peer),
            "malformed message: expected exactly 1 frame after the routing id, got " + std::to_string(payloads));
      } else if (frames[first].size() > opts_.max_message_bytes) {
        caf::anon_send(os.owner, io_bad_atom::value, id, std::move(peer),
                       "message of " + std::to_string(frames[first].size()) + " bytes exceeds the limit of " +
                           std::to_string(opts_.max_message_bytes) + " bytes");
      } else {
        caf::anon_send(os.owner, io_recv_atom::value, id, std::move(peer), frames[first].to_string());
      }
    }
  }

  static std::string printable(const std::string& peer) {
    std::string out;
    for (unsigned char c : peer) out += (c >= 32 && c < 127) ? std::string(1, static_cast<char>(c)) : "?";
    return out;
  }

  caf::blocking_actor* self_;
  transport_options opts_;
  std::shared_ptr<doorbell> bell_;
  zmq::context_t ctx_;  // declared before sockets_: destroyed after them
  std::map<uint32_t, owned_socket> sockets_;
  std::vector<zmq::pollitem_t> items_;
  std::vector<uint32_t> order_;  // socket id of items_[i + 1]
  uint32_t next_id_ = 1;
  static constexpr uint32_t monitor_bit = 0x80000000u;  // in order_: the monitor of a socket
  uint64_t dropped_ = 0;
  bool running_ = true;
};

}  // namespace

// ---- the owning handle --------------------------------------------------------------------------

io_bridge::io_bridge(caf::actor_system& sys, transport_options opts) : sys_(sys), bell_(std::make_shared<doorbell>()) {
  io_ = sys_.spawn<caf::detached>([opts, bell = bell_](caf::blocking_actor* self) {
    io_loop loop(self, opts, bell);
    loop.run();
  });
}

io_bridge::~io_bridge() { stop(); }

io_bridge::opened io_bridge::open(socket_role role, const std::string& address, caf::actor owner,
                                  const std::string& identity) {
  caf::scoped_actor self{sys_};
  opened result;
  std::string failure;
  auto pending = self->request(io_, std::chrono::seconds(10), io_open_atom::value, static_cast<uint32_t>(role), address,
                               std::move(owner), identity);
  bell_->ring();
  pending.receive(
      [&](uint32_t socket, std::string& endpoint, std::string& why) {
        result.socket = socket;
        result.endpoint = std::move(endpoint);
        failure = std::move(why);
      },
      [&](caf::error& e) { failure = to_string(e); });
  if (!failure.empty()) throw error(error_kind::failed, failure, "address");
  return result;
}

io_handle io_bridge::handle() const { return io_handle(io_, bell_); }

void io_bridge::stop() {
  if (!io_) return;
  caf::scoped_actor self{sys_};
  caf::anon_send(io_, io_stop_atom::value);
  bell_->ring();
  self->wait_for(io_);
  io_ = nullptr;
}

}  // namespace troupe::actors
