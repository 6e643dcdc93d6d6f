#include "src/comm/rendezvous.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>
#include <zmq.hpp>

#include "schema/rendezvous.capnp.h"
#include "schema/troupe.capnp.h"
#include "troupe/error.h"

namespace troupe::comm {

// ---- memory_store --------------------------------------------------------------------

void memory_store::set(const std::string& key, const std::vector<char>& value) {
  {
    std::lock_guard lk(mu_);
    kv_[key] = value;
  }
  cv_.notify_all();
}

std::vector<char> memory_store::get(const std::string& key, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  if (!cv_.wait_for(lk, timeout, [&] { return kv_.count(key) > 0; }))
    throw error(error_kind::disconnected,
                "rendezvous: key '" + key + "' not published within " + std::to_string(timeout.count()) + " ms");
  return kv_[key];
}

// ---- wire helpers ----------------------------------------------------------------------

namespace {

zmq::message_t to_frame(capnp::MessageBuilder& b) {
  auto words = capnp::messageToFlatArray(b);
  auto bytes = words.asBytes();
  return zmq::message_t(bytes.begin(), bytes.size());
}

// zmq frames are not guaranteed word-aligned: copy before reading.
kj::Array<capnp::word> aligned_copy(const zmq::message_t& m) {
  auto words = kj::heapArray<capnp::word>((m.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  std::memset(words.begin(), 0, words.size() * sizeof(capnp::word));
  std::memcpy(words.begin(), m.data(), m.size());
  return words;
}

constexpr size_t k_max_frame = 1 << 20;  // rendezvous values are addresses: small

}  // namespace

// ---- rendezvous_service ---------------------------------------------------------------

struct rendezvous_service::impl {
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::router};
  std::mutex mu;
  std::map<std::string, std::vector<char>> kv;
};

rendezvous_service::rendezvous_service(const std::string& bind_addr) : impl_(std::make_unique<impl>()) {
  impl_->sock.set(zmq::sockopt::linger, 0);
  impl_->sock.set(zmq::sockopt::maxmsgsize, (int64_t)k_max_frame);
  try {
    impl_->sock.bind(bind_addr);
  } catch (const zmq::error_t& e) {
    throw error(error_kind::failed, "rendezvous: cannot bind " + bind_addr + ": " + e.what(), "rendezvous");
  }
  address_ = impl_->sock.get(zmq::sockopt::last_endpoint);
  thread_ = std::thread([this] { serve(); });
}

rendezvous_service::~rendezvous_service() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void rendezvous_service::erase_prefix(const std::string& prefix) {
  std::lock_guard lk(impl_->mu);
  for (auto it = impl_->kv.lower_bound(prefix); it != impl_->kv.end() && it->first.rfind(prefix, 0) == 0;)
    it = impl_->kv.erase(it);
}

void rendezvous_service::serve() {
  zmq::pollitem_t items[] = {{impl_->sock.handle(), 0, ZMQ_POLLIN, 0}};
  while (!stop_) {
    zmq::poll(items, 1, std::chrono::milliseconds(50));
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> frames;
    while (true) {
      zmq::message_t m;
      if (!impl_->sock.recv(m, zmq::recv_flags::dontwait)) break;
      const bool more = m.more();
      frames.push_back(std::move(m));
      if (!more) break;
    }
    if (frames.size() < 2) continue;  // identity + body expected
    capnp::MallocMessageBuilder reply_b;
    auto reply = reply_b.initRoot<wire::RendezvousReply>();
    try {
      auto words = aligned_copy(frames.back());
      capnp::FlatArrayMessageReader r(words.asPtr());
      auto req = r.getRoot<wire::RendezvousRequest>();
      if (req.getProtocolVersion() != wire::PROTOCOL_VERSION) {
        reply.setError("rendezvous: protocol version " + std::to_string(req.getProtocolVersion()) +
                       ", this scheduler speaks " + std::to_string(wire::PROTOCOL_VERSION));
      } else if (req.isSet()) {
        auto v = req.getSet().getValue();
        std::lock_guard lk(impl_->mu);
        impl_->kv[req.getSet().getKey()] = std::vector<char>(v.begin(), v.end());
        reply.setFound(true);
      } else {
        std::lock_guard lk(impl_->mu);
        auto it = impl_->kv.find(req.getGet().getKey());
        if (it != impl_->kv.end()) {
          reply.setFound(true);
          reply.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(it->second.data()), it->second.size()));
        }
      }
    } catch (const kj::Exception& e) {
      reply.setError(std::string("rendezvous: malformed request: ") + e.getDescription().cStr());
    }
    impl_->sock.send(frames.front(), zmq::send_flags::sndmore);
    impl_->sock.send(zmq::message_t(), zmq::send_flags::sndmore);  // empty delimiter (REQ-style)
    impl_->sock.send(to_frame(reply_b), zmq::send_flags::none);
  }
}

// ---- zmq_rendezvous_store -------------------------------------------------------------

struct zmq_rendezvous_store::impl {
  std::string addr;
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::req};
  bool broken = false;

  // One request, one reply; a lost service breaks the REQ socket's state machine, so the
  // socket is rebuilt after a timeout.
  wire::RendezvousReply::Reader call(capnp::MessageBuilder& req, std::chrono::milliseconds timeout,
                                     kj::Array<capnp::word>& storage, kj::Own<capnp::FlatArrayMessageReader>& reader) {
    if (broken) {
      sock = zmq::socket_t(ctx, zmq::socket_type::req);
      sock.set(zmq::sockopt::linger, 0);
      sock.connect(addr);
      broken = false;
    }
    sock.send(to_frame(req), zmq::send_flags::none);
    zmq::pollitem_t items[] = {{sock.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, timeout);
    zmq::message_t m;
    if (!(items[0].revents & ZMQ_POLLIN) || !sock.recv(m, zmq::recv_flags::dontwait)) {
      broken = true;
      throw error(error_kind::disconnected,
                  "rendezvous: no answer from " + addr + " within " + std::to_string(timeout.count()) + " ms");
    }
    storage = aligned_copy(m);
    reader = kj::heap<capnp::FlatArrayMessageReader>(storage.asPtr());
    auto reply = reader->getRoot<wire::RendezvousReply>();
    if (reply.getError().size() > 0) throw error(error_kind::failed, reply.getError().cStr(), "rendezvous");
    return reply;
  }
};

zmq_rendezvous_store::zmq_rendezvous_store(const std::string& service_addr) : impl_(std::make_unique<impl>()) {
  impl_->addr = service_addr;
  impl_->sock.set(zmq::sockopt::linger, 0);
  impl_->sock.connect(service_addr);
}

zmq_rendezvous_store::~zmq_rendezvous_store() = default;

void zmq_rendezvous_store::set(const std::string& key, const std::vector<char>& value) {
  capnp::MallocMessageBuilder b;
  auto req = b.initRoot<wire::RendezvousRequest>();
  req.setProtocolVersion(wire::PROTOCOL_VERSION);
  req.initSet().setKey(key);
  req.getSet().setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(value.data()), value.size()));
  kj::Array<capnp::word> storage;
  kj::Own<capnp::FlatArrayMessageReader> reader;
  impl_->call(b, std::chrono::milliseconds(10000), storage, reader);
}

std::vector<char> zmq_rendezvous_store::get(const std::string& key, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto wait = std::chrono::milliseconds(2);
  while (true) {
    capnp::MallocMessageBuilder b;
    auto req = b.initRoot<wire::RendezvousRequest>();
    req.setProtocolVersion(wire::PROTOCOL_VERSION);
    req.initGet().setKey(key);
    kj::Array<capnp::word> storage;
    kj::Own<capnp::FlatArrayMessageReader> reader;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto reply = impl_->call(b, std::max(left, std::chrono::milliseconds(1)), storage, reader);
    if (reply.getFound()) {
      auto v = reply.getValue();
      return std::vector<char>(v.begin(), v.end());
    }
    if (std::chrono::steady_clock::now() + wait > deadline)
      throw error(error_kind::disconnected,
                  "rendezvous: key '" + key + "' not published within " + std::to_string(timeout.count()) + " ms");
    std::this_thread::sleep_for(wait);
    wait = std::min(wait * 2, std::chrono::milliseconds(50));
  }
}

}  // namespace troupe::comm
