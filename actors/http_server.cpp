// Boost.Beast lives in this translation unit only (its headers are heavy).
#include "actors/http_server.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <deque>
#include <thread>
#include <unordered_map>

#include "src/cluster/codec.h"
#include "src/cluster/gateway_core.h"
#include "troupe/version.h"
#include "troupe/error.h"

namespace troupe::actors {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

std::chrono::milliseconds ms(double s) { return std::chrono::milliseconds(static_cast<int64_t>(s * 1e3)); }

// A whole response, written by hand: Beast parses requests, the answers are simple enough.
std::string head(int status, const std::string& content_type, bool keep_alive, const std::string& extra = {}) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " +
                  std::string(http::obsolete_reason(static_cast<http::status>(status))) +
                  "\r\nServer: troupe\r\nContent-Type: " + content_type + "\r\n" + extra;
  h += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  return h;
}

std::string full_response(int status, const std::string& body, bool keep_alive, const std::string& extra = {},
                          const std::string& content_type = "application/json") {
  return head(status, content_type, keep_alive, extra) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         body;
}

std::string chunk(const std::string& data) {
  char size[20];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + data + "\r\n";
}

std::string retry_header(const api::api_error& e) {
  if (e.retry_after_s <= 0) return {};
  return "Retry-After: " + std::to_string(static_cast<int64_t>(std::ceil(e.retry_after_s))) + "\r\n";
}

// "Authorization: Bearer KEY" -> KEY.
std::string bearer(const http::request<http::string_body>& req) {
  auto it = req.find(http::field::authorization);
  if (it == req.end()) return {};
  std::string v(it->value());
  if (v.rfind("Bearer ", 0) == 0) return v.substr(7);
  return v;
}

}  // namespace

// ---- the server ------------------------------------------------------------------------------

struct http_server::impl : std::enable_shared_from_this<impl> {
  class session;

  http_options opts;
  std::vector<api::api_model> models;
  api::chat_renderer render;
  std::function<void(const std::string&, std::string)> submit;
  std::function<void(const std::string&)> gone;
  health_probe health;
  net::io_context io{1};
  tcp::acceptor acceptor{io};
  std::thread thread;
  std::string endpoint;
  std::unordered_map<std::string, std::weak_ptr<session>> waiting;  // peer -> its connection (I/O thread only)
  uint64_t next_peer = 1;
  size_t connections = 0;
  std::atomic<bool> stopped{false};
  int64_t started = static_cast<int64_t>(std::time(nullptr));

  bool key_ok(const std::string& key) const { return tenant_of_key(opts.api_keys, key).has_value(); }

  void accept();
};

// One connection: requests one after another (keep-alive); while a job runs, a read stays
// pending so that a client that goes away is noticed at once (its jobs are cancelled).
class http_server::impl::session : public std::enable_shared_from_this<session> {
 public:
  session(std::shared_ptr<impl> srv, tcp::socket s)
      : srv_(std::move(srv)),
        socket_(std::move(s)),
        read_timer_(srv_->io),
        write_timer_(srv_->io),
        ping_timer_(srv_->io) {}

  void start() { read_request(); }

  void on_message(size_t choice, const proto::server_message& m) {
    if (!resp_) return;
    const std::string sse = resp_->on_message(choice, m);
    if (resp_->request().stream) {
      if (!headers_sent_) {
        // The first word on the jobs: an error before any token gets its own status.
        if (resp_->finished() && resp_->status() != 200 && tokens_seen_ == 0) {
          write(
              full_response(resp_->status(), resp_->body(), keep_alive_, retry_header(api::from_cluster(error_of(m)))));
          end_response(false);
          return;
        }
        send_stream_headers();
      }
      if (std::holds_alternative<proto::token_chunk>(m)) ++tokens_seen_;
      if (!sse.empty()) write(chunk(sse));
      if (resp_->finished()) end_response(/*stream=*/true);
    } else if (resp_->finished()) {
      const std::string body = resp_->body();
      const int status = resp_->status();
      std::string extra;
      if (status != 200) extra = retry_header(api::from_cluster(error_of(m)));
      write(full_response(status, body, keep_alive_, extra));
      end_response(false);
    }
  }

 private:
  static error_info error_of(const proto::server_message& m) {
    if (const auto* e = std::get_if<proto::job_error>(&m)) return e->error;
    return {};
  }

  void read_request() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(srv_->opts.max_header_bytes));
    parser_->body_limit(srv_->opts.max_body_bytes);
    arm(read_timer_, srv_->opts.request_timeout_s);
    http::async_read(socket_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      self->read_timer_.cancel();
      self->on_request(ec);
    });
  }

  // Closes the connection when `t` fires (a request too slow, a client not reading).
  void arm(net::steady_timer& t, double seconds) {
    t.expires_after(ms(seconds));
    t.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->close();
    });
  }

  void on_request(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::operation_aborted || ec == net::error::eof ||
        ec == net::error::connection_reset) {
      close();
      return;
    }
    if (ec) {
      keep_alive_ = false;
      if (ec == http::error::body_limit) {
        reply_error({413, "the request body is larger than " + std::to_string(srv_->opts.max_body_bytes) + " bytes",
                     "invalid_request_error"});
      } else if (ec == http::error::header_limit) {
        reply_error({431,
                     "the request headers are larger than " + std::to_string(srv_->opts.max_header_bytes) + " bytes",
                     "invalid_request_error"});
      } else {
        reply_error({400, "malformed HTTP request: " + ec.message(), "invalid_request_error"});
      }
      return;
    }
    auto req = parser_->release();
    keep_alive_ = req.keep_alive();
    std::string target(req.target());
    if (auto q = target.find('?'); q != std::string::npos) target.resize(q);
    const auto method = req.method();
    const std::string key = bearer(req);
    auto& s = *srv_;
    auto need = [&](http::verb v) {
      if (method == v) return true;
      reply_error({405, "method " + std::string(req.method_string()) + " is not allowed on " + target,
                   "invalid_request_error"});
      return false;
    };
    if (target == "/health") {
      if (!need(http::verb::get)) return;
      const std::string why = s.health ? s.health() : std::string();
      if (why.empty())
        write(full_response(200, "{\"status\":\"ok\"}", keep_alive_));
      else
        reply_error({503, why, "server_error", "", "", 2});
      if (why.empty()) done_with_request();
      return;
    }
    if (target == "/version") {
      if (!need(http::verb::get)) return;
      write(full_response(200, "{\"version\":\"" + std::string(version_string()) + "\"}", keep_alive_));
      done_with_request();
      return;
    }
    const bool api = target.rfind("/v1/", 0) == 0 || target == "/tokenize" || target == "/detokenize";
    if (!api) {
      reply_error({404, "no route " + target, "invalid_request_error", "", "not_found"});
      return;
    }
    if (!s.key_ok(key)) {
      reply_error({401, key.empty() ? "an API key is required (Authorization: Bearer KEY)" : "invalid API key",
                   "authentication_error", "", "invalid_api_key"});
      return;
    }
    if (target == "/v1/models") {
      if (!need(http::verb::get)) return;
      write(full_response(200, api::models_body(s.models), keep_alive_));
      done_with_request();
      return;
    }
    if (target.rfind("/v1/models/", 0) == 0) {
      if (!need(http::verb::get)) return;
      const std::string id = target.substr(11);
      if (auto body = api::model_body(s.models, id)) {
        write(full_response(200, *body, keep_alive_));
        done_with_request();
      } else {
        reply_error(
            {404, "The model '" + id + "' does not exist", "invalid_request_error", "model", "model_not_found"});
      }
      return;
    }
    if (target == "/tokenize" || target == "/detokenize") {
      if (!need(http::verb::post)) return;
      auto r =
          target == "/tokenize" ? api::tokenize(req.body(), s.models, s.render) : api::detokenize(req.body(), s.models);
      if (auto* body = std::get_if<std::string>(&r)) {
        write(full_response(200, *body, keep_alive_));
        done_with_request();
      } else {
        reply_error(std::get<api::api_error>(r));
      }
      return;
    }
    api::kind k;
    if (target == "/v1/completions")
      k = api::kind::completion;
    else if (target == "/v1/chat/completions")
      k = api::kind::chat;
    else {
      reply_error({404, "no route " + target, "invalid_request_error", "", "not_found"});
      return;
    }
    if (!need(http::verb::post)) return;
    auto parsed = api::parse_request(k, req.body(), s.models, key, s.render);
    if (auto* e = std::get_if<api::api_error>(&parsed)) {
      reply_error(*e);
      return;
    }
    start_jobs(std::move(std::get<api::parsed_request>(parsed)), k);
  }

  void start_jobs(api::parsed_request r, api::kind k) {
    auto& s = *srv_;
    const api::api_model* model = &s.models.front();
    for (const auto& m : s.models)
      if (m.name == r.model) model = &m;
    peer_ = "http:" + std::to_string(s.next_peer++);
    const std::string id =
        (k == api::kind::chat ? "chatcmpl-" : "cmpl-") + peer_.substr(5) + "-" + std::to_string(s.started);
    std::vector<proto::job> jobs = std::move(r.jobs);
    r.jobs.clear();
    const bool stream = r.stream;
    resp_ = std::make_unique<api::response>(std::move(r), *model, id, static_cast<int64_t>(std::time(nullptr)));
    headers_sent_ = false;
    tokens_seen_ = 0;
    s.waiting[peer_] = weak_from_this();
    for (auto& j : jobs) s.submit(peer_, codec::encode(proto::client_message{std::move(j)}));
    watch_for_disconnect();
    if (stream) ping();
  }

  // While a job runs the client sends nothing; a read that completes means it went away
  // (or pipelines a request, kept in the buffer for later).
  void watch_for_disconnect() {
    if (watching_ || !resp_) return;
    watching_ = true;
    socket_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->watching_ = false;
      if (ec == net::error::operation_aborted && self->restart_after_cancel_) {
        self->resume_after_cancel();  // cancelled for the next request
        return;
      }
      if (ec) {
        self->client_gone();  // closed (or reset) by the client
        return;
      }
      self->buffer_.commit(n);  // a pipelined request: kept for its turn
      if (self->buffer_.size() > self->srv_->opts.max_body_bytes) {
        self->client_gone();
        return;
      }
      if (!self->resp_) {
        self->resume_after_cancel();
        return;
      }
      self->watch_for_disconnect();
    });
  }

  // SSE comments while the stream has nothing to say (a long prefill): proxies keep the
  // connection, and a dead client shows up as a failed write.
  void ping() {
    ping_timer_.expires_after(ms(srv_->opts.keepalive_comment_s));
    ping_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec || !self->resp_) return;
      if (!self->headers_sent_) self->send_stream_headers();
      if (self->out_.empty() && !self->writing_) self->write(chunk(": keep-alive\n\n"));
      self->ping();
    });
  }

  void send_stream_headers() {
    headers_sent_ = true;
    write(head(200, "text/event-stream", keep_alive_,
               "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n") +
          "\r\n");
  }

  void end_response(bool stream) {
    if (stream) write("0\r\n\r\n");
    ping_timer_.cancel();
    srv_->waiting.erase(peer_);
    srv_->gone(peer_);  // cancels whatever of it still runs (a choice after another's error)
    resp_.reset();
    done_with_request();
  }

  // The response is queued: read the next request once it is written (keep-alive).
  void done_with_request() {
    next_after_write_ = keep_alive_;
    close_after_write_ = !keep_alive_;
    if (!writing_ && out_.empty()) after_written();
  }

  void after_written() {
    if (close_after_write_) {
      beast::error_code ec;
      socket_.shutdown(tcp::socket::shutdown_send, ec);
      close();
      return;
    }
    if (next_after_write_) {
      next_after_write_ = false;
      if (watching_) {
        // The disconnect watch is still reading: cancel it and start over on the buffer.
        beast::error_code ec;
        socket_.cancel(ec);
        restart_after_cancel_ = true;
        return;
      }
      read_request();
    }
  }

  void reply_error(const api::api_error& e) {
    write(full_response(e.status, api::error_body(e), keep_alive_, retry_header(e)));
    done_with_request();
  }

  void client_gone() {
    if (resp_) {
      spdlog::info("http: client of {} went away; cancelling its jobs", peer_);
      srv_->waiting.erase(peer_);
      srv_->gone(peer_);
      resp_.reset();
    }
    close();
  }

  void write(std::string bytes) {
    if (closed_) return;
    out_ += std::move(bytes);
    if (writing_) return;
    flush();
  }

  void flush() {
    writing_ = true;
    sending_ = std::move(out_);
    out_.clear();
    arm(write_timer_, srv_->opts.write_timeout_s);
    net::async_write(socket_, net::buffer(sending_), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->write_timer_.cancel();
      self->writing_ = false;
      if (ec) {
        self->client_gone();
        return;
      }
      if (!self->out_.empty()) {
        self->flush();
        return;
      }
      self->after_written();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (resp_) {
      srv_->waiting.erase(peer_);
      srv_->gone(peer_);
      resp_.reset();
    }
    read_timer_.cancel();
    write_timer_.cancel();
    ping_timer_.cancel();
    beast::error_code ec;
    socket_.close(ec);
    --srv_->connections;
  }

 public:
  // The disconnect watch was cancelled for the next request: read it now.
  void resume_after_cancel() {
    if (restart_after_cancel_ && !closed_) {
      restart_after_cancel_ = false;
      read_request();
    }
  }

 private:
  std::shared_ptr<impl> srv_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  net::steady_timer read_timer_, write_timer_, ping_timer_;
  std::unique_ptr<api::response> resp_;
  std::string peer_;
  std::string out_, sending_;
  bool writing_ = false, watching_ = false, keep_alive_ = true, headers_sent_ = false, closed_ = false;
  bool next_after_write_ = false, close_after_write_ = false, restart_after_cancel_ = false;
  size_t tokens_seen_ = 0;
};

void http_server::impl::accept() {
  acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket s) {
    if (ec) {
      if (ec != net::error::operation_aborted) {
        spdlog::warn("http: accept failed: {}", ec.message());
        self->accept();
      }
      return;
    }
    if (self->connections >= self->opts.max_connections) {
      beast::error_code ignored;
      s.close(ignored);  // over the limit: refused at once
    } else {
      ++self->connections;
      s.set_option(tcp::no_delay(true));
      std::make_shared<session>(self, std::move(s))->start();
    }
    self->accept();
  });
}

// ---- public face -----------------------------------------------------------------------------

http_server::http_server(http_options opts, std::vector<api::api_model> models, api::chat_renderer render,
                         std::function<void(const std::string&, std::string)> submit,
                         std::function<void(const std::string&)> gone, health_probe health)
    : impl_(std::make_shared<impl>()) {
  auto& s = *impl_;
  s.opts = std::move(opts);
  s.models = std::move(models);
  s.render = std::move(render);
  s.submit = std::move(submit);
  s.gone = std::move(gone);
  s.health = std::move(health);
  if (s.models.empty()) throw error(error_kind::failed, "http: no model to serve", "model");
  // Every stream is a file descriptor: take what the hard limit allows.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  std::string host = s.opts.listen, port = "8000";
  if (host.rfind("http://", 0) == 0) host = host.substr(7);
  if (auto colon = host.rfind(':'); colon != std::string::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  if (host.empty() || host == "*") host = "0.0.0.0";
  try {
    tcp::resolver resolver(s.io);
    const auto ep = *resolver.resolve(host, port, tcp::resolver::passive).begin();
    s.acceptor.open(ep.endpoint().protocol());
    s.acceptor.set_option(net::socket_base::reuse_address(true));
    s.acceptor.bind(ep.endpoint());
    s.acceptor.listen(net::socket_base::max_listen_connections);
  } catch (const std::exception& e) {
    throw error(error_kind::failed, "http: cannot listen on " + s.opts.listen + ": " + e.what(), "http-listen");
  }
  const auto bound = s.acceptor.local_endpoint();
  s.endpoint = bound.address().to_string() + ":" + std::to_string(bound.port());
}

void http_server::start() {
  impl_->accept();
  impl_->thread = std::thread([p = impl_] {
    for (;;) {
      try {
        p->io.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("http: {}", e.what());  // one connection's failure never stops the server
      }
    }
  });
}

http_server::~http_server() { stop(); }

std::string http_server::endpoint() const { return impl_->endpoint; }

void http_server::deliver(const std::string& peer, proto::server_message m) {
  net::post(impl_->io, [p = impl_, peer, m = std::move(m)]() mutable {
    auto it = p->waiting.find(peer);
    if (it == p->waiting.end()) return;  // the connection went away
    auto s = it->second.lock();
    if (!s) return;
    std::string crid;
    std::visit([&](const auto& x) { crid = x.client_request_id; }, m);
    // A frame the gateway could not decode (too large) comes back without a request id: it
    // ends the whole response (an error on choice 0 does).
    size_t choice = 0;
    try {
      if (!crid.empty()) choice = static_cast<size_t>(std::stoul(crid));
    } catch (const std::exception&) {
    }
    s->on_message(choice, m);
  });
}

void http_server::stop() {
  if (impl_->stopped.exchange(true)) return;
  net::post(impl_->io, [p = impl_] {
    beast::error_code ec;
    p->acceptor.close(ec);
    p->io.stop();
  });
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace troupe::actors
