@0xd2c7a61f4e83b905;
# Rendezvous for worker groups: the ranks of a group publish their Gloo addresses (or the
# NCCL unique id) through the scheduler's control plane and read each other's.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("troupe::wire");

struct RendezvousRequest {
  protocolVersion @0 :UInt32;
  union {
    set :group {
      key @1 :Text;
      value @2 :Data;
    }
    get :group {
      key @3 :Text;
    }
  }
}

struct RendezvousReply {
  found @0 :Bool;     # for get: whether the key exists yet; for set: true
  value @1 :Data;
  error @2 :Text;     # non-empty when the request was refused
}
