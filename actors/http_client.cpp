// Boost.Beast for the load client lives in this translation unit only.
#include "actors/http_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace troupe::actors {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

struct http_load_client::impl : std::enable_shared_from_this<impl> {
  net::io_context io{1};
  net::executor_work_guard<net::io_context::executor_type> work = net::make_work_guard(io);
  std::thread thread;
  tcp::endpoint endpoint;
  std::string host, key;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<event> events;

  void push(event e) {
    {
      std::lock_guard lk(mu);
      events.push_back(std::move(e));
    }
    cv.notify_one();
  }

  // One request on its own connection: headers, then the SSE body as it arrives.
  struct request : std::enable_shared_from_this<request> {
    request(std::shared_ptr<impl> c, std::string i) : client(std::move(c)), id(std::move(i)), socket(client->io) {}
    std::shared_ptr<impl> client;
    std::string id;
    tcp::socket socket;
    beast::flat_buffer buffer;
    http::request<http::string_body> req;
    http::response_parser<http::buffer_body> parser;
    char piece[16384];
    std::string pending;  // SSE text not yet split into events
    std::string whole;    // a non-200 answer's body
    uint32_t completion_tokens = 0;
    bool ended = false;

    void fail(int status, std::string message) {
      if (ended) return;
      ended = true;
      event e;
      e.what = event::kind::error;
      e.id = id;
      e.at = std::chrono::steady_clock::now();
      e.status = status;
      e.message = std::move(message);
      client->push(std::move(e));
      beast::error_code ec;
      socket.close(ec);
    }

    void start() {
      parser.body_limit(boost::none);
      socket.async_connect(client->endpoint, [self = shared_from_this()](beast::error_code ec) {
        if (ec) return self->fail(0, "connect: " + ec.message());
        self->socket.set_option(tcp::no_delay(true));
        http::async_write(self->socket, self->req, [self](beast::error_code ec, size_t) {
          if (ec) return self->fail(0, "write: " + ec.message());
          http::async_read_header(self->socket, self->buffer, self->parser, [self](beast::error_code ec, size_t) {
            if (ec) return self->fail(0, "read: " + ec.message());
            self->read_body();
          });
        });
      });
    }

    void read_body() {
      parser.get().body().data = piece;
      parser.get().body().size = sizeof piece;
      http::async_read_some(socket, buffer, parser, [self = shared_from_this()](beast::error_code ec, size_t) {
        if (ec == http::error::need_buffer) ec = {};
        if (ec) return self->fail(0, "read: " + ec.message());
        const size_t n = sizeof self->piece - self->parser.get().body().size;
        self->on_bytes(std::string_view(self->piece, n));
        if (self->ended) return;
        if (self->parser.is_done()) {
          if (self->parser.get().result_int() != 200) return self->fail_with_body();
          return self->fail(200, "the stream ended without [DONE]");
        }
        self->read_body();
      });
    }

    void fail_with_body() {
      std::string message = whole;
      try {
        message = nlohmann::json::parse(whole).at("error").at("message").get<std::string>();
      } catch (const std::exception&) {
      }
      fail(static_cast<int>(parser.get().result_int()), message);
    }

    void on_bytes(std::string_view bytes) {
      if (parser.get().result_int() != 200) {
        whole.append(bytes);
        return;
      }
      pending.append(bytes);
      for (size_t end; !ended && (end = pending.find("\n\n")) != std::string::npos;) {
        const std::string ev = pending.substr(0, end);
        pending.erase(0, end + 2);
        if (ev.rfind("data: ", 0) != 0) continue;  // a comment (keep-alive)
        const std::string data = ev.substr(6);
        const auto now = std::chrono::steady_clock::now();
        if (data == "[DONE]") {
          ended = true;
          event e;
          e.what = event::kind::done;
          e.id = id;
          e.at = now;
          e.completion_tokens = completion_tokens;
          client->push(std::move(e));
          beast::error_code ec;
          socket.shutdown(tcp::socket::shutdown_both, ec);
          socket.close(ec);
          return;
        }
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(data);
        } catch (const std::exception& ex) {
          return fail(200, std::string("a stream event is not JSON: ") + ex.what());
        }
        if (j.contains("error")) return fail(200, j["error"].value("message", "error"));
        if (j.contains("usage") && j["usage"].is_object())
          completion_tokens = j["usage"].value("completion_tokens", 0u);
        const auto& choices = j.value("choices", nlohmann::json::array());
        if (!choices.empty()) {
          event e;
          e.what = event::kind::chunk;
          e.id = id;
          e.at = now;
          client->push(std::move(e));
        }
      }
    }
  };
};

http_load_client::http_load_client(const std::string& host_port, std::string api_key)
    : impl_(std::make_shared<impl>()) {
  std::string hp = host_port;
  if (hp.rfind("http://", 0) == 0) hp = hp.substr(7);
  if (auto slash = hp.find('/'); slash != std::string::npos) hp.resize(slash);
  std::string host = hp, port = "80";
  if (auto colon = hp.rfind(':'); colon != std::string::npos) {
    host = hp.substr(0, colon);
    port = hp.substr(colon + 1);
  }
  tcp::resolver resolver(impl_->io);
  impl_->endpoint = *resolver.resolve(host, port).begin();
  impl_->host = hp;
  impl_->key = std::move(api_key);
  impl_->thread = std::thread([p = impl_] { p->io.run(); });
}

http_load_client::~http_load_client() {
  impl_->work.reset();
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void http_load_client::submit(const std::string& id, const std::string& path, std::string body,
                              const std::string& api_key) {
  net::post(impl_->io, [p = impl_, id, path, body = std::move(body), api_key]() mutable {
    auto r = std::make_shared<impl::request>(p, id);
    r->req.method(http::verb::post);
    r->req.target(path);
    r->req.version(11);
    r->req.set(http::field::host, p->host);
    r->req.set(http::field::content_type, "application/json");
    const std::string& key = api_key.empty() ? p->key : api_key;
    if (!key.empty()) r->req.set(http::field::authorization, "Bearer " + key);
    r->req.body() = std::move(body);
    r->req.prepare_payload();
    r->start();
  });
}

std::optional<http_load_client::event> http_load_client::next(int timeout_ms) {
  std::unique_lock lk(impl_->mu);
  if (!impl_->cv.wait_for(lk, std::chrono::milliseconds(timeout_ms), [&] { return !impl_->events.empty(); }))
    return std::nullopt;
  event e = std::move(impl_->events.front());
  impl_->events.pop_front();
  return e;
}

}  // namespace troupe::actors
