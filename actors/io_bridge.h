// The I/O actor of a process: it alone owns the ZeroMQ context and every socket
// (ZeroMQ sockets are not thread-safe). It runs on its own thread (a detached, blocking
// CAF actor), polls its sockets in a loop, forwards every inbound frame to the socket's
// owner actor as a CAF message, and sends what other actors ask it to send.
//
// The same code path serves `inproc://` (components in one process) and `tcp://`
// (components in different processes): the address is configuration.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/type_id.hpp>

namespace caf {
class actor_system;
}

// Messages between the I/O actor and the component actors:
//   owner <- (io_recv, socket, peer, bytes)    an inbound frame
//   owner <- (io_bad, socket, peer, reason)    a frame that could not be used (too big, malformed)
//   owner <- (io_peer, socket, peer)           a TCP peer of a ROUTER disconnected
//   io    <- (io_send, socket, peer, bytes)    `peer` is ignored on DEALER sockets
CAF_BEGIN_TYPE_ID_BLOCK(troupe_io, caf::first_custom_type_id)
CAF_ADD_ATOM(troupe_io, troupe::actors, io_recv_atom, "io_recv")
CAF_ADD_ATOM(troupe_io, troupe::actors, io_bad_atom, "io_bad")
CAF_ADD_ATOM(troupe_io, troupe::actors, io_peer_atom, "io_peer")
CAF_ADD_ATOM(troupe_io, troupe::actors, io_send_atom, "io_send")
CAF_ADD_ATOM(troupe_io, troupe::actors, io_open_atom, "io_open")
CAF_ADD_ATOM(troupe_io, troupe::actors, io_stop_atom, "io_stop")
CAF_END_TYPE_ID_BLOCK(troupe_io)

namespace troupe::actors {

struct transport_options {
  size_t max_message_bytes = size_t{1} << 20;  // larger frames get io_bad, the peer an error
  int high_water_mark = 100000;                // queued messages per peer before ZeroMQ drops
  int linger_ms = 500;                         // at close, time to flush what is queued
};

enum class socket_role : unsigned char {
  router_bind,     // a ROUTER listening for many peers (gateway for clients, scheduler for components)
  dealer_connect,  // a DEALER connected to one ROUTER
};

// Wakes the I/O thread when a message for it is queued (it sleeps in zmq_poll).
class doorbell;

// What a component actor needs to send: copyable, thread-safe.
class io_handle {
 public:
  io_handle() = default;
  io_handle(caf::actor io, std::shared_ptr<doorbell> bell);
  void send(uint32_t socket, std::string peer, std::string bytes) const;
  explicit operator bool() const { return static_cast<bool>(io_); }

 private:
  caf::actor io_;
  std::shared_ptr<doorbell> bell_;
};

// Owns the I/O actor; destroying it stops the actor (flushing for linger_ms) and waits.
class io_bridge {
 public:
  io_bridge(caf::actor_system& sys, transport_options opts);
  ~io_bridge();
  io_bridge(const io_bridge&) = delete;
  io_bridge& operator=(const io_bridge&) = delete;

  struct opened {
    uint32_t socket = 0;
    std::string endpoint;  // the bound address (a tcp port 0 resolved), or the address connected to
  };
  // Opens a socket and waits until it is bound or connected; frames it receives go to
  // `owner`. `identity` names a DEALER to its ROUTER. Throws troupe::error naming the
  // address when it cannot be bound or connected.
  opened open(socket_role role, const std::string& address, caf::actor owner, const std::string& identity = {});
  io_handle handle() const;
  void stop();

 private:
  caf::actor_system& sys_;
  caf::actor io_;
  std::shared_ptr<doorbell> bell_;
};

}  // namespace troupe::actors
