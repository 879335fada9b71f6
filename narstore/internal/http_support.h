#pragma once
// HTTP pieces shared by narcache's servers (`narcache serve`, the coordinator's API) and its
// clients (HttpCache, CoordinatorClient, the coordinator's availability query): listen
// addresses, http(s) URLs with a path prefix, Bearer tokens compared in constant time, and an
// httplib::Server that binds with a deep listen backlog.
// Internal (library narcache_http_internal): carries cpp-httplib types, so only module sources
// (src/) may include it, never a public header.

#include <httplib.h>

#include <atomic>
#include <functional>
#include <string>
#include <string_view>

#include "narcache/narinfo/error.h"

namespace narcache::http {

// "host:port" or "[v6]:port"; port 0 asks for any free port.
struct ListenAddress {
  std::string host;  // without brackets
  int port = 0;
};
Result<ListenAddress> parseListenAddress(std::string_view text);

// "host:port", with brackets around an IPv6 host.
std::string formatHostPort(std::string_view host, int port);

// 127.0.0.0/8, ::1 and "localhost".
bool isLoopbackHost(std::string_view host);

// An http:// or https:// URL split into what httplib::Client takes and the path prefix that
// every request path gets. A query string (Nix store parameters) is dropped.
struct HttpUrl {
  std::string origin;  // "http://host:port"
  std::string prefix;  // path prefix without trailing '/', may be empty
};
// `what` names the URL in errors, e.g. "coordinator URL".
Result<HttpUrl> parseHttpUrl(std::string_view url, std::string_view what = "URL");

// The one place where an error code becomes an HTTP status (both servers answer alike):
// NotFound 404, AlreadyExists and Conflict 409, InvalidArgument 400, Corruption 422 (a body that
// does not match its hash or size), PermissionDenied 403, ResourceExhausted 507 (disk or map
// full), Unavailable 503, IoError and Internal 500.
int httpStatus(ErrorCode code);

// A POST or PUT whose body has no Content-Length (none, or chunked): httplib would read such a
// body into memory until the client closes the connection, without bound. The API routes of
// both servers refuse them (411).
bool bodyLengthUnknown(const httplib::Request& req);

// The one line that explains a refusal httplib makes before any route runs (no body of its own):
// 400 a malformed request line or headers; 411; 413; 414 a request
// line over 8 KiB; 404, 405; "request refused" or "internal server error" for the rest.
const char* refusalText(int status);

// What a failed request's transport error means, for messages: httplib's own names ("Connection",
// "Read") do not say what happened.
std::string transportErrorText(httplib::Error error);

// Equality of a presented secret and the expected one, in time independent of where they
// differ (sodium_memcmp); texts of different lengths are unequal.
bool secretEquals(std::string_view presented, std::string_view expected);

// Leading and trailing spaces, tabs and CRs removed.
std::string_view trimHeaderValue(std::string_view value);

// The token of an "Authorization: Bearer TOKEN" header value; empty for any other scheme.
std::string_view bearerToken(std::string_view authorization);

// Makes the request's Range header fit a body of `size` bytes before httplib slices it (httplib
// 0.11 does not check ranges against the size: a range past the end gave a wrapped
// Content-Length). One range is clamped to the body as RFC 9110 says (a last byte past the end
// means the end; a suffix longer than the body means all of it); several ranges are ignored (the
// whole body, 200: allowed by RFC 9110, and it bounds the work of one request). Returns false
// when the one range is not satisfiable (it starts at or past the end, or the body is empty):
// answer 416 then (sendRangeNotSatisfiable).
bool fitRange(const httplib::Request& req, std::size_t size);
// Drops the request's ranges, so that a response (an error's, say) is sent whole.
void dropRanges(const httplib::Request& req);
// Marks the response "Connection: close" (once), for a request whose body is left unread; see
// sendAndClose for what makes the connection really end.
void endConnection(httplib::Response& res);

// Sets `body` as the response's last words on its connection, for a request whose body is left
// unread: httplib would otherwise read that body as the next requests, since httplib 0.11
// keeps a connection whatever the response's "Connection: close" says. It ends a connection
// whose response could not be written, so the body goes without a length (by HTTP/1.1 the end
// of the connection ends it) and, once it is written, its provider reports failure.
void sendAndClose(httplib::Response& res, std::string body, const std::string& content_type);

// 416 with "Content-Range: bytes */SIZE" (and the request's ranges dropped: the 416 is whole).
void sendRangeNotSatisfiable(const httplib::Request& req, httplib::Response& res, std::size_t size);

// httplib::Server whose bind() also raises the listen backlog (httplib's is 5, which drops
// connections when many clients connect at once), and that binds with SO_REUSEADDR only:
// httplib's default SO_REUSEPORT would let a second server started on the same port share it
// silently instead of failing with "Address already in use".
class Server : public httplib::Server {
 public:
  Server();
  // Binds `address` (port 0: a free port) and returns the port bound. `listen_text` is the
  // address as the operator wrote it, for the error message (kUnavailable with errno's text).
  Result<int> bind(const ListenAddress& address, std::string_view listen_text, int backlog = 1024);

  // Serves the bound socket until requestStop(); a stop requested before the accept loop starts
  // is not lost (httplib ignores a stop() that comes before it runs). `tick`, when given, runs
  // about every 100 ms on a helper thread while serving. Unavailable when the accept loop fails
  // without a stop request (`address` names it in the message).
  Status serve(std::string_view address, const std::function<void()>& tick = {});
  // Thread-safe; callable before, during and after serve().
  void requestStop();

 private:
  std::atomic<bool> stop_requested_{false};
};

}  // namespace narcache::http
