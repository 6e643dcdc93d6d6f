// Gloo collectives between real TCP ranks (threads of this process), bootstrapped through
// both rendezvous stores.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "src/comm/rendezvous.h"
#include "troupe/communicator.h"
#include "troupe/error.h"

using namespace std::chrono_literals;

namespace {

// Runs body(communicator&) on `size` ranks, each in its own thread, all joined through `store_for(rank)`.
template <typename StoreFor, typename Body>
void run_group(int size, const std::string& prefix, StoreFor store_for, Body body) {
  std::vector<std::thread> ranks;
  std::vector<std::string> failures(size);
  for (int r = 0; r < size; ++r)
    ranks.emplace_back([&, r] {
      try {
        troupe::gloo_options opts;
        opts.prefix = prefix;
        opts.timeout = 20s;
        auto comm = troupe::make_gloo_communicator(store_for(r), r, size, opts);
        body(*comm);
      } catch (const std::exception& e) {
        failures[r] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  for (int r = 0; r < size; ++r) EXPECT_EQ(failures[r], "") << "rank " << r;
}

void check_collectives(troupe::communicator& c) {
  const int n = 1000;  // not a multiple of any segment size
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = (float)(c.rank() + 1) * i;
  c.all_reduce_sum(v.data(), n);
  const float ranks_sum = c.size() * (c.size() + 1) / 2.0f;
  for (int i = 0; i < n; ++i) ASSERT_FLOAT_EQ(v[i], ranks_sum * i) << "rank " << c.rank() << " i " << i;

  int token = c.rank() == 1 % c.size() ? 4242 : -1;
  c.broadcast(&token, sizeof token, 1 % c.size());
  EXPECT_EQ(token, 4242);
  c.barrier();
}

}  // namespace

TEST(Gloo, CollectivesOverMemoryStore) {
  for (int size : {1, 2, 4}) {
    troupe::comm::memory_store store;
    run_group(
        size, "mem" + std::to_string(size), [&](int) -> troupe::rendezvous_store& { return store; }, check_collectives);
  }
}

TEST(Gloo, CollectivesOverControlPlaneStore) {
  troupe::comm::rendezvous_service service("tcp://127.0.0.1:*");
  std::vector<std::unique_ptr<troupe::comm::zmq_rendezvous_store>> stores;
  for (int r = 0; r < 2; ++r) stores.push_back(std::make_unique<troupe::comm::zmq_rendezvous_store>(service.address()));
  run_group(
      2, "zmq", [&](int r) -> troupe::rendezvous_store& { return *stores[r]; }, check_collectives);
}

TEST(Gloo, MissingPeerIsADisconnectedErrorNotAHang) {
  troupe::comm::memory_store store;
  troupe::gloo_options opts;
  opts.prefix = "lonely";
  opts.timeout = 300ms;
  try {
    troupe::make_gloo_communicator(store, 0, 2, opts);
    FAIL() << "a group of 2 formed with one rank";
  } catch (const troupe::error& e) {
    EXPECT_EQ(e.kind(), troupe::error_kind::disconnected);
    EXPECT_NE(std::string(e.what()).find("lonely"), std::string::npos) << e.what();
  }
}

TEST(Rendezvous, ServiceStoresAndTimesOut) {
  troupe::comm::rendezvous_service service("tcp://127.0.0.1:*");
  troupe::comm::zmq_rendezvous_store client(service.address());
  client.set("a", {'x', 'y'});
  EXPECT_EQ(client.get("a", 1s), (std::vector<char>{'x', 'y'}));
  EXPECT_THROW(client.get("missing", 100ms), troupe::error);
  service.erase_prefix("a");
  EXPECT_THROW(client.get("a", 50ms), troupe::error);
}

TEST(Gloo, BadRankIsRefused) {
  troupe::comm::memory_store store;
  EXPECT_THROW(troupe::make_gloo_communicator(store, 2, 2, {}), troupe::error);
}
