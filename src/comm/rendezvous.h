// Rendezvous stores for worker-group bootstrap.
//  - memory_store: ranks in one process (tests, or threads of one worker).
//  - rendezvous_service + zmq_rendezvous_store: the control plane's store. The scheduler
//    process runs the service on a ZeroMQ ROUTER; each rank's client talks to it with
//    Cap'n Proto RendezvousRequest/Reply (schema/rendezvous.capnp) over a DEALER.
#pragma once
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "troupe/communicator.h"

namespace troupe::comm {

class memory_store : public rendezvous_store {
 public:
  void set(const std::string& key, const std::vector<char>& value) override;
  std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) override;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::vector<char>> kv_;
};

// Serves a key-value table on `bind_addr` (tcp://host:port or inproc://name) from its own
// thread until destroyed. Keys are set once per group formation; a re-set overwrites.
class rendezvous_service {
 public:
  explicit rendezvous_service(const std::string& bind_addr);
  ~rendezvous_service();
  rendezvous_service(const rendezvous_service&) = delete;
  rendezvous_service& operator=(const rendezvous_service&) = delete;
  // The bound address, with the port filled in when bind_addr used tcp://host:* .
  const std::string& address() const { return address_; }
  // Removes every key that starts with prefix (a group that is re-formed).
  void erase_prefix(const std::string& prefix);

 private:
  void serve();
  struct impl;
  std::unique_ptr<impl> impl_;
  std::string address_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class zmq_rendezvous_store : public rendezvous_store {
 public:
  explicit zmq_rendezvous_store(const std::string& service_addr);
  ~zmq_rendezvous_store() override;
  void set(const std::string& key, const std::vector<char>& value) override;
  std::vector<char> get(const std::string& key, std::chrono::milliseconds timeout) override;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::comm
