// Codecs between the wire schema (schema/troupe.capnp) and the value types of
// src/cluster/protocol.h. A message on the wire is one Cap'n Proto flat array (unpacked), one
// ZeroMQ frame. Decoding copies the bytes into word-aligned memory, bounds the reader
// (size, traversal, nesting) and checks the protocol version before anything else.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "src/cluster/protocol.h"

namespace troupe::codec {

struct limits {
  size_t max_message_bytes = size_t{1} << 20;  // 1 MiB: a 64K-token prompt fits four times
  int nesting_limit = 16;                      // our schema nests at most 5 deep
};

// Each encode returns the bytes of one frame.
std::string encode(const proto::client_message& m);
std::string encode(const proto::server_message& m);
std::string encode(const proto::control_message& m);

// Each decode throws troupe::error (kind failed) naming what was wrong: a size over the
// limit, bytes that are not a Cap'n Proto message, another protocol version (field
// "protocolVersion"), or a message of no known kind.
proto::client_message decode_client(std::string_view bytes, const limits& lim = {});
proto::server_message decode_server(std::string_view bytes, const limits& lim = {});
proto::control_message decode_control(std::string_view bytes, const limits& lim = {});

// Encode with another protocol version: for tests of the version check.
std::string encode_with_version(const proto::client_message& m, uint32_t version);
std::string encode_with_version(const proto::control_message& m, uint32_t version);

}  // namespace troupe::codec
