// Test hosts in network namespaces: each host is a namespace with one veth link into a
// bridge in the test's own namespace, addresses 10.<net>.0.<i+1>/24 (the bridge: .254). Made by the
// constructor, removed by the destructor. Needs CAP_NET_ADMIN; available() says whether
// this process has it (tests skip with a message otherwise).
#pragma once
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace troupe::test {

class netns_topology {
 public:
  // Probes by creating and deleting a namespace.
  static bool available(std::string* why) {
    const std::string probe = "trp-probe-" + std::to_string(getpid());
    if (std::system(("ip netns add " + probe + " >/dev/null 2>&1").c_str()) != 0) {
      *why = "cannot create network namespaces (needs root / CAP_NET_ADMIN and iproute2)";
      return false;
    }
    std::system(("ip netns del " + probe + " >/dev/null 2>&1").c_str());
    return true;
  }

  // n_hosts namespaces named trp<pid>-h<i>; `net` picks the 10.<net>.0.0/24 subnet.
  netns_topology(int n_hosts, int net) : tag_("trp" + std::to_string(getpid() % 100000)) {
    bridge_ = tag_ + "-br";
    subnet_ = "10." + std::to_string(net) + ".0.";
    // The bridge holds 10.<net>.0.254, so this namespace (the test's) reaches every host.
    ok_ = sh("ip link add " + bridge_ + " type bridge") && sh("ip addr add " + subnet_ + "254/24 dev " + bridge_) &&
          sh("ip link set " + bridge_ + " up");
    for (int i = 0; ok_ && i < n_hosts; ++i) {
      const std::string ns = tag_ + "-h" + std::to_string(i);
      const std::string veth = tag_ + "v" + std::to_string(i);
      hosts_.push_back(ns);
      ok_ = sh("ip netns add " + ns) && sh("ip link add " + veth + " type veth peer name " + veth + "p") &&
            sh("ip link set " + veth + "p netns " + ns) && sh("ip link set " + veth + " master " + bridge_) &&
            sh("ip link set " + veth + " up") && sh("ip netns exec " + ns + " ip link set lo up") &&
            sh("ip netns exec " + ns + " ip addr add " + address(i) + "/24 dev " + veth + "p") &&
            sh("ip netns exec " + ns + " ip link set " + veth + "p up");
    }
  }
  ~netns_topology() {
    for (size_t i = 0; i < hosts_.size(); ++i) {
      sh("ip netns pids " + hosts_[i] + " 2>/dev/null | xargs -r kill -9");
      sh("ip netns del " + hosts_[i]);
      sh("ip link del " + tag_ + "v" + std::to_string(i));
    }
    sh("ip link del " + bridge_);
  }
  netns_topology(const netns_topology&) = delete;
  netns_topology& operator=(const netns_topology&) = delete;

  bool ok() const { return ok_; }
  std::string address(int host) const { return subnet_ + std::to_string(host + 1); }
  const std::string& name(int host) const { return hosts_[host]; }

 private:
  static bool sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }
  std::string tag_, bridge_, subnet_;
  std::vector<std::string> hosts_;
  bool ok_ = false;
};

}  // namespace troupe::test
