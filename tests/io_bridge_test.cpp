// The I/O actor moves frames between a DEALER and a ROUTER, over inproc:// and tcp://
// through the same code, and reports frames it cannot use to the socket's owner.
#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <zmq.hpp>

#include "actors/actor_system.h"
#include "actors/io_bridge.h"
#include "troupe/error.h"

using namespace troupe::actors;

namespace {

void echo_round_trip(const std::string& bind_address) {
  process_runtime rt({.worker_threads = 2});
  io_bridge io(rt.system(), {});
  caf::scoped_actor self{rt.system()};
  auto handle = io.handle();
  // The server echoes every frame back to its sender.
  auto server = rt.system().spawn([handle]() -> caf::behavior {
    return {[handle](io_recv_atom, uint32_t sock, std::string& peer, std::string& bytes) {
              handle.send(sock, peer, "echo:" + bytes);
            },
            [](io_peer_atom, uint32_t, std::string&) {}};
  });
  auto bound = io.open(socket_role::router_bind, bind_address, server);
  auto client = io.open(socket_role::dealer_connect, bound.endpoint, self, "client-1");
  handle.send(client.socket, "", "hello");
  std::string got;
  self->receive([&](io_recv_atom, uint32_t sock, std::string&, std::string& bytes) {
    EXPECT_EQ(sock, client.socket);
    got = bytes;
  });
  EXPECT_EQ(got, "echo:hello");
  self->send_exit(server, caf::exit_reason::user_shutdown);
}

}  // namespace

TEST(IoBridge, InprocRoundTrip) { echo_round_trip("inproc://io-test"); }

TEST(IoBridge, TcpRoundTripOnAFreePort) { echo_round_trip("tcp://127.0.0.1:*"); }

TEST(IoBridge, BadAddressThrows) {
  process_runtime rt({.worker_threads = 1});
  io_bridge io(rt.system(), {});
  caf::scoped_actor self{rt.system()};
  EXPECT_THROW(io.open(socket_role::router_bind, "nonsense://x", self), troupe::error);
}

TEST(IoBridge, OversizedAndMalformedFramesReachTheOwnerAsBad) {
  process_runtime rt({.worker_threads = 1});
  transport_options opts;
  opts.max_message_bytes = 64;
  io_bridge io(rt.system(), opts);
  caf::scoped_actor self{rt.system()};
  auto bound = io.open(socket_role::router_bind, "tcp://127.0.0.1:*", self);
  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.connect(bound.endpoint);
  dealer.send(zmq::buffer(std::string(100, 'x')));
  dealer.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
  dealer.send(zmq::str_buffer("b"));
  std::vector<std::string> reasons;
  while (reasons.size() < 2) {
    self->receive([&](io_bad_atom, uint32_t, std::string&, std::string& why) { reasons.push_back(why); },
                  [&](io_peer_atom, uint32_t, std::string&) {},
                  caf::after(std::chrono::seconds(10)) >> [&] { reasons.push_back("timeout"); });
  }
  EXPECT_NE(reasons[0].find("exceeds the limit"), std::string::npos) << reasons[0];
  EXPECT_NE(reasons[1].find("malformed"), std::string::npos) << reasons[1];
}

TEST(IoBridge, TcpPeerDisconnectReachesTheOwner) {
  process_runtime rt({.worker_threads = 1});
  io_bridge io(rt.system(), {});
  caf::scoped_actor self{rt.system()};
  auto bound = io.open(socket_role::router_bind, "tcp://127.0.0.1:*", self);
  std::string sender;
  {
    zmq::context_t ctx;
    zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::routing_id, "leaver");
    dealer.connect(bound.endpoint);
    dealer.send(zmq::str_buffer("hi"));
    self->receive([&](io_recv_atom, uint32_t, std::string& peer, std::string&) { sender = peer; });
  }  // the dealer closes: its TCP connection goes away
  EXPECT_EQ(sender, "leaver");
  std::string gone;
  self->receive([&](io_peer_atom, uint32_t, std::string& peer) { gone = peer; },
                caf::after(std::chrono::seconds(10)) >> [] {});
  EXPECT_EQ(gone, "leaver");
}
