// HttpApi: the coordinator's HTTP+JSON endpoints (protocol.h) over cpp-httplib.

#include "narcache/coordinator/http_api.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <charconv>
#include <cstring>
#include <stdexcept>

#include "http_support.h"

namespace narcache::coordinator {
namespace {

// The values of `key` in the query string of `target`, each everything after the first '=' of
// its pair, percent-decoded: httplib keeps only what follows the last '=', so ?tag=job=hello
// would read as "hello" (a K=V value needs no escaping of its '=').
std::vector<std::string> rawQueryValues(const std::string& target, std::string_view key) {
  std::vector<std::string> values;
  std::size_t q = target.find('?');
  if (q == std::string::npos) return values;
  std::string_view query = std::string_view(target).substr(q + 1);
  while (!query.empty()) {
    std::size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos ||
        httplib::detail::decode_url(std::string(pair.substr(0, eq)), true) != key) {
      continue;
    }
    values.push_back(httplib::detail::decode_url(std::string(pair.substr(eq + 1)), true));
  }
  return values;
}

void sendJson(httplib::Response& res, std::string body, int status = 200) {
  res.status = status;
  res.set_content(std::move(body), "application/json");
}

void sendError(httplib::Response& res, const Error& error) {
  int status = http::httpStatus(error.code());
  // Server-side failures are logged with their detail; clients get it too only for 4xx (their
  // own request's fault), never an exception text.
  if (status >= 500) spdlog::error("request failed: {}", error.message());
  sendJson(res, toJson(ErrorBody{error.message()}), status);
}

// The Bearer token of a request, or empty.
std::string_view bearerOf(const httplib::Request& req) {
  auto it = req.headers.find("Authorization");
  if (it == req.headers.end()) return {};
  return http::bearerToken(it->second);
}

Result<std::uint64_t> parseId(std::string_view text, std::string_view what) {
  std::uint64_t id = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return fail(ErrorCode::kInvalidArgument,
                std::string(what) + ": not a number: '" + std::string(text) + "'");
  }
  return id;
}

}  // namespace

struct HttpApi::Impl {
  Coordinator& coordinator;
  HttpApiOptions options;
  http::Server http;
  std::string host;
  int port = 0;

  Impl(Coordinator& c, HttpApiOptions o) : coordinator(c), options(std::move(o)) {}

  bool clientAuthorized(const httplib::Request& req) const {
    if (options.client_token.empty()) return true;
    return http::secretEquals(bearerOf(req), options.client_token);
  }

  // Every request under kAgentApi is authenticated as an agent before routing (setup()).
  static constexpr std::string_view kAgentApi = "/api/v1/agent/";

  // The authenticated agent's name, or empty.
  std::string agentOf(const httplib::Request& req) {
    std::string_view token = bearerOf(req);
    std::size_t colon = token.find(':');
    if (colon == std::string_view::npos) return {};
    std::string name(token.substr(0, colon));
    if (!coordinator.authenticateAgent(name, token.substr(colon + 1))) return {};
    return name;
  }

  static void unauthorized(httplib::Response& res, std::string_view what) {
    res.set_header("WWW-Authenticate", "Bearer");
    sendJson(res, toJson(ErrorBody{std::string(what)}), 401);
  }

  // A client endpoint taking a JSON body of type Req.
  template <typename Req, typename Fn>
  void clientPost(const std::string& pattern, Fn fn) {
    http.Post(pattern, [this, fn](const httplib::Request& req, httplib::Response& res) {
      if (!clientAuthorized(req)) return unauthorized(res, "a client token is required");
      auto body = parse<Req>(req.body);
      if (!body) return sendError(res, body.error());
      auto out = fn(*body);
      if (!out) return sendError(res, out.error());
      sendJson(res, toJson(*out));
    });
  }

  // An agent endpoint taking a JSON body of type Req. Its pattern is under kAgentApi, so the
  // agent was authenticated before routing; the handler takes its name from the token.
  template <typename Req, typename Fn>
  void agentPost(const std::string& pattern, Fn fn) {
    if (!pattern.starts_with(kAgentApi)) {
      throw std::logic_error("agent endpoint " + pattern + " outside " + std::string(kAgentApi));
    }
    http.Post(pattern, [fn](const httplib::Request& req, httplib::Response& res) {
      std::string_view token = bearerOf(req);
      std::string agent(token.substr(0, token.find(':')));
      auto body = parse<Req>(req.body);
      if (!body) return sendError(res, body.error());
      auto out = fn(agent, *body);
      if (!out) return sendError(res, out.error());
      sendJson(res, toJson(*out));
    });
  }

  void setup();
};

void HttpApi::Impl::setup() {
  http.new_task_queue = [n = options.threads] { return new httplib::ThreadPool(n); };
  http.set_tcp_nodelay(true);
  http.set_keep_alive_max_count(100000);
  http.set_keep_alive_timeout(5);
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);
  http.set_payload_max_length(256u << 20);

  // httplib reads a request's body into memory (up to the payload limit) before its handler
  // runs: an API request without valid credentials is refused here, before that, and its
  // connection ends with the answer (the body stays unread).
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!req.path.starts_with("/api/")) return httplib::Server::HandlerResponse::Unhandled;
    const bool agent_api = req.path.starts_with(kAgentApi);
    if (agent_api ? !agentOf(req).empty() : clientAuthorized(req)) {
      if (!http::bodyLengthUnknown(req)) return httplib::Server::HandlerResponse::Unhandled;
      res.status = 411;
      http::sendAndClose(res, toJson(ErrorBody{http::refusalText(411)}), "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer");
    http::sendAndClose(res,
                       toJson(ErrorBody{agent_api ? "agent credentials (Bearer name:secret) needed"
                                                  : "a client token is required"}),
                       "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });

  Coordinator& c = coordinator;
  http.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain; charset=utf-8");
  });
  http.Get("/metrics", [&c](const httplib::Request&, httplib::Response& res) {
    res.set_content(c.metrics(), "text/plain; version=0.0.4; charset=utf-8");
  });

  clientPost<UnknownDerivationsRequest>(
      "/api/v1/derivations/unknown",
      [&c](const UnknownDerivationsRequest& r) { return c.unknownDerivations(r); });
  clientPost<SubmitRequest>("/api/v1/builds", [&c](const SubmitRequest& r) { return c.submit(r); });
  clientPost<AddAgentRequest>("/api/v1/agents",
                              [&c](const AddAgentRequest& r) { return c.addAgent(r); });

  http.Get("/api/v1/agents", [this](const httplib::Request& req, httplib::Response& res) {
    if (!clientAuthorized(req)) return unauthorized(res, "a client token is required");
    sendJson(res, toJson(coordinator.agents()));
  });
  http.Get("/api/v1/builds", [this](const httplib::Request& req, httplib::Response& res) {
    if (!clientAuthorized(req)) return unauthorized(res, "a client token is required");
    BuildFilter query;
    if (req.has_param("state")) {
      auto state = parseBuildState(req.get_param_value("state"));
      if (!state) return sendError(res, state.error());
      query.state = *state;
    }
    for (const std::string& tag : rawQueryValues(req.target, "tag")) {
      std::size_t eq = tag.find('=');
      if (eq == std::string::npos || eq == 0) {
        return sendError(res, Error(ErrorCode::kInvalidArgument, "tag: expected K=V"));
      }
      query.tags[tag.substr(0, eq)] = tag.substr(eq + 1);
    }
    if (req.has_param("limit")) {
      auto n = parseId(req.get_param_value("limit"), "limit");
      if (!n) return sendError(res, n.error());
      query.limit = *n;
    }
    if (req.has_param("after")) {
      auto n = parseId(req.get_param_value("after"), "after");
      if (!n) return sendError(res, n.error());
      query.after = *n;
    }
    auto list = coordinator.listBuilds(query);
    if (!list) return sendError(res, list.error());
    sendJson(res, toJson(*list));
  });
  http.Get(R"(/api/v1/builds/(\d+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (!clientAuthorized(req)) return unauthorized(res, "a client token is required");
    auto id = parseId(req.matches[1].str(), "build id");
    if (!id) return sendError(res, id.error());
    auto info = coordinator.build(*id);
    if (!info) return sendError(res, info.error());
    sendJson(res, toJson(*info));
  });
  http.Post(R"(/api/v1/builds/(\d+)/(cancel|retry))", [this](const httplib::Request& req,
                                                             httplib::Response& res) {
    if (!clientAuthorized(req)) return unauthorized(res, "a client token is required");
    auto id = parseId(req.matches[1].str(), "build id");
    if (!id) return sendError(res, id.error());
    auto info = req.matches[2].str() == "cancel" ? coordinator.cancel(*id) : coordinator.retry(*id);
    if (!info) return sendError(res, info.error());
    sendJson(res, toJson(*info));
  });

  agentPost<FetchRequest>("/api/v1/agent/fetch", [&c](const std::string& a, const FetchRequest& r) {
    return c.fetch(a, r);
  });
  agentPost<HeartbeatRequest>(
      "/api/v1/agent/heartbeat",
      [&c](const std::string& a, const HeartbeatRequest& r) { return c.heartbeat(a, r); });
  agentPost<ResultReport>(
      "/api/v1/agent/result",
      [&c](const std::string& a, const ResultReport& r) { return c.report(a, r); });
  agentPost<ReleaseRequest>(
      "/api/v1/agent/release",
      [&c](const std::string& a, const ReleaseRequest& r) { return c.release(a, r); });

  http.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    spdlog::debug("{} {} {} -> {}", req.remote_addr, req.method, req.path, res.status);
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty() && !res.content_provider_) {  // httplib's own errors get a JSON body
      sendJson(
          res,
          toJson(ErrorBody{res.status == 404 ? "no such endpoint" : http::refusalText(res.status)}),
          res.status);
    }
  });
  http.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("{} {}: exception: {}", req.method, req.path, what);
        sendJson(res, toJson(ErrorBody{"internal error"}), 500);
      });
}

Result<std::unique_ptr<HttpApi>> HttpApi::create(Coordinator& coordinator, HttpApiOptions options) {
  auto listen = http::parseListenAddress(options.listen);
  if (!listen) return fail(listen.error());
  auto impl = std::make_unique<Impl>(coordinator, std::move(options));
  impl->setup();
  impl->host = listen->host;
  auto port = impl->http.bind(*listen, impl->options.listen);
  if (!port) return fail(port.error());
  impl->port = *port;
  if (impl->options.client_token.empty() && !http::isLoopbackHost(impl->host)) {
    spdlog::warn(
        "listening on {} without a client token (--client-token-file): anyone who can "
        "reach it may submit and cancel builds and add agents",
        impl->options.listen);
  }
  return std::unique_ptr<HttpApi>(new HttpApi(std::move(impl)));
}

HttpApi::HttpApi(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpApi::~HttpApi() {
  stop();
}

int HttpApi::port() const {
  return impl_->port;
}

std::string HttpApi::address() const {
  return http::formatHostPort(impl_->host, impl_->port);
}

Status HttpApi::run() {
  return impl_->http.serve(address());
}

void HttpApi::stop() {
  impl_->http.requestStop();
}

}  // namespace narcache::coordinator
