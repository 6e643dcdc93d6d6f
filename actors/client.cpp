#include "actors/client.h"

#include <zmq.hpp>

#include "src/cluster/codec.h"

namespace troupe::actors {

struct gateway_client::impl {
  zmq::context_t ctx{1};
  zmq::socket_t sock{ctx, zmq::socket_type::dealer};
};

gateway_client::gateway_client(const std::string& address) : impl_(std::make_unique<impl>()) {
  impl_->sock.set(zmq::sockopt::linger, 200);
  try {
    impl_->sock.connect(address);
  } catch (const zmq::error_t& e) {
    throw error(error_kind::failed, "cannot connect to the gateway at " + address + ": " + e.what(), "gateway");
  }
}

gateway_client::~gateway_client() = default;

void gateway_client::submit(const proto::job& j) { send_frames({codec::encode(proto::client_message{j})}); }

void gateway_client::cancel(const std::string& id) {
  send_frames({codec::encode(proto::client_message{proto::cancel_job{id}})});
}

void gateway_client::send_frames(const std::vector<std::string>& frames) {
  for (size_t i = 0; i < frames.size(); ++i)
    impl_->sock.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

std::optional<proto::server_message> gateway_client::receive(int timeout_ms) {
  zmq::pollitem_t item{impl_->sock.handle(), 0, ZMQ_POLLIN, 0};
  try {
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) == 0) return std::nullopt;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::nullopt;  // a signal: the caller looks at its flags
    throw;
  }
  zmq::message_t m;
  if (!impl_->sock.recv(m, zmq::recv_flags::dontwait)) return std::nullopt;
  codec::limits lim;
  lim.max_message_bytes = size_t{64} << 20;
  return codec::decode_server(std::string_view(static_cast<const char*>(m.data()), m.size()), lim);
}

bool apply_message(job_result& r, const proto::server_message& m) {
  if (const auto* c = std::get_if<proto::token_chunk>(&m)) {
    if (c->index != r.next_index) r.index_gap = true;
    r.next_index = c->index + static_cast<uint32_t>(c->ids.size());
    r.ids.insert(r.ids.end(), c->ids.begin(), c->ids.end());
    r.text += c->text_delta;
    return false;
  }
  if (const auto* d = std::get_if<proto::job_done>(&m)) {
    r.ok = true;
    r.done = *d;
    return true;
  }
  r.error = std::get<proto::job_error>(m).error;
  return true;
}

job_result run_job(gateway_client& c, const proto::job& j, int timeout_ms,
                   const std::function<void(const proto::token_chunk&)>& on_chunk) {
  job_result r;
  r.client_request_id = j.client_request_id;
  c.submit(j);
  for (;;) {
    auto m = c.receive(timeout_ms);
    if (!m)
      throw error(error_kind::disconnected, "no answer from the gateway in " + std::to_string(timeout_ms) + " ms");
    if (on_chunk)
      if (const auto* ch = std::get_if<proto::token_chunk>(&*m)) on_chunk(*ch);
    if (apply_message(r, *m)) return r;
  }
}

}  // namespace troupe::actors
