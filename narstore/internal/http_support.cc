#include "http_support.h"

#include <sodium.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stop_token>
#include <thread>

namespace narcache::http {

Result<ListenAddress> parseListenAddress(std::string_view text) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return fail(ErrorCode::kInvalidArgument,
                "listen address '" + std::string(text) + "': expected host:port");
  }
  std::string_view host = text.substr(0, colon);
  std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = -1;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || ptr != port_text.data() + port_text.size() || port < 0 || port > 65535) {
    return fail(ErrorCode::kInvalidArgument,
                "listen address '" + std::string(text) + "': bad port");
  }
  return ListenAddress{std::string(host), port};
}

std::string formatHostPort(std::string_view host, int port) {
  bool v6 = host.find(':') != std::string_view::npos;
  std::string h(host);
  return (v6 ? "[" + h + "]" : h) + ":" + std::to_string(port);
}

bool isLoopbackHost(std::string_view host) {
  return host == "::1" || host == "localhost" || host.starts_with("127.");
}

Result<HttpUrl> parseHttpUrl(std::string_view url, std::string_view what) {
  std::string_view scheme;
  if (url.starts_with("http://")) {
    scheme = url.substr(0, 7);
  } else if (url.starts_with("https://")) {
    scheme = url.substr(0, 8);
  } else {
    return fail(ErrorCode::kInvalidArgument,
                std::string(what) + ": not an http:// or https:// URL: '" + std::string(url) + "'");
  }
  std::string_view rest = url.substr(scheme.size());
  rest = rest.substr(0, rest.find('?'));
  std::size_t slash = rest.find('/');
  std::string_view host = rest.substr(0, slash);
  if (host.empty()) {
    return fail(ErrorCode::kInvalidArgument,
                std::string(what) + " without a host: '" + std::string(url) + "'");
  }
  HttpUrl out;
  out.origin = std::string(scheme) + std::string(host);
  if (slash != std::string_view::npos) out.prefix = std::string(rest.substr(slash));
  while (!out.prefix.empty() && out.prefix.back() == '/') out.prefix.pop_back();
  return out;
}

int httpStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kAlreadyExists: return 409;
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kCorruption: return 422;
    case ErrorCode::kConflict: return 409;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kResourceExhausted: return 507;
    case ErrorCode::kUnavailable: return 503;
    case ErrorCode::kIoError: return 500;
    case ErrorCode::kInternal: return 500;
  }
  return 500;
}

bool bodyLengthUnknown(const httplib::Request& req) {
  return (req.method == "POST" || req.method == "PUT") && !req.has_header("Content-Length");
}

const char* refusalText(int status) {
  switch (status) {
    case 400: return "bad request: malformed request line or headers";
    case 411: return "a request body needs a Content-Length";
    case 413: return "request too large";
    case 414: return "request line too long (over 8 KiB)";
    case 404: return "not found";
    case 405: return "method not allowed";
    default: return status >= 500 ? "internal server error" : "request refused";
  }
}

bool secretEquals(std::string_view presented, std::string_view expected) {
  if (presented.size() != expected.size()) return false;
  if (expected.empty()) return true;
  return sodium_memcmp(presented.data(), expected.data(), expected.size()) == 0;
}

std::string_view trimHeaderValue(std::string_view value) {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  while (!value.empty() && blank(value.front())) value.remove_prefix(1);
  while (!value.empty() && blank(value.back())) value.remove_suffix(1);
  return value;
}

std::string_view bearerToken(std::string_view authorization) {
  std::string_view value = trimHeaderValue(authorization);
  if (!value.starts_with("Bearer ")) return {};
  return trimHeaderValue(value.substr(7));
}

// httplib parses Range into req.ranges and applies it when it writes the response; the Request
// it hands to handlers is its own non-const object, so changing the ranges here is sound.
static httplib::Ranges& rangesOf(const httplib::Request& req) {
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast)
  return const_cast<httplib::Request&>(req).ranges;
}

void dropRanges(const httplib::Request& req) {
  rangesOf(req).clear();
}

bool fitRange(const httplib::Request& req, std::size_t size) {
  httplib::Ranges& ranges = rangesOf(req);
  if (ranges.empty()) return true;
  if (ranges.size() > 1) {
    ranges.clear();
    return true;
  }
  auto [first, last] = ranges.front();
  const auto n = static_cast<ssize_t>(size);
  if (first < 0) {  // "-N": the last N bytes
    if (last <= 0 || n == 0) return false;
    first = n - std::min(last, n);
    last = n - 1;
  } else {
    if (first >= n) return false;
    if (last < 0 || last >= n) last = n - 1;
    if (last < first) return false;
  }
  ranges.front() = {first, last};
  return true;
}

void endConnection(httplib::Response& res) {
  if (res.get_header_value("Connection") != "close") res.set_header("Connection", "close");
}

void sendAndClose(httplib::Response& res, std::string body, const std::string& content_type) {
  endConnection(res);
  res.set_content_provider(
      content_type, [body = std::move(body)](std::size_t offset, httplib::DataSink& sink) {
        return offset < body.size() && sink.write(body.data() + offset, body.size() - offset);
      });
}

void sendRangeNotSatisfiable(const httplib::Request& req, httplib::Response& res,
                             std::size_t size) {
  dropRanges(req);
  res.status = 416;
  res.set_header("Content-Range", "bytes */" + std::to_string(size));
  res.set_content("range not satisfiable\n", "text/plain; charset=utf-8");
}

Server::Server() {
  set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
}

Result<int> Server::bind(const ListenAddress& address, std::string_view listen_text, int backlog) {
  int port = address.port;
  if (port == 0) {
    port = bind_to_any_port(address.host);
    if (port <= 0) port = -1;
  } else if (!bind_to_port(address.host, port)) {
    port = -1;
  }
  if (port < 0) {
    return fail(ErrorCode::kUnavailable,
                "cannot bind " + std::string(listen_text) + ": " + std::strerror(errno));
  }
  if (svr_sock_ >= 0) ::listen(svr_sock_, backlog);
  return port;
}

Status Server::serve(std::string_view address, const std::function<void()>& tick) {
  std::jthread helper([this, &tick](std::stop_token done) {
    std::mutex mutex;
    std::condition_variable_any wake;
    while (!done.stop_requested()) {
      {
        std::unique_lock lock(mutex);
        wake.wait_for(lock, done, std::chrono::milliseconds(100), [] { return false; });
      }
      if (stop_requested_.load() && is_running()) stop();
      if (tick && !done.stop_requested()) tick();
    }
  });
  bool ok = listen_after_bind();
  helper.request_stop();
  helper.join();
  if (!ok && !stop_requested_.load()) {
    return fail(ErrorCode::kUnavailable, "serving " + std::string(address) + " failed");
  }
  return {};
}

void Server::requestStop() {
  stop_requested_.store(true);
  stop();
}

std::string transportErrorText(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "cannot connect (nothing listening, host unreachable or unknown)";
    case httplib::Error::ConnectionTimeout: return "connecting timed out";
    case httplib::Error::Read: return "the connection broke or timed out while reading the answer";
    case httplib::Error::Write: return "the connection broke or timed out while sending";
    case httplib::Error::BindIPAddress: return "cannot bind the local address";
    case httplib::Error::Canceled: return "canceled";
    case httplib::Error::SSLConnection: return "TLS handshake failed";
    case httplib::Error::SSLLoadingCerts: return "cannot load the TLS certificates";
    case httplib::Error::SSLServerVerification:
      return "the server's TLS certificate is not trusted";
    case httplib::Error::ExceedRedirectCount: return "too many redirects";
    default: return httplib::to_string(error);
  }
}

}  // namespace narcache::http
