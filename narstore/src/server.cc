#include "narcache/narstore/server.h"

#include <fcntl.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <utility>

#include "body_pipe.h"
#include "http_support.h"
#include "nar_file_name.h"
#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/store_path.h"
#include "server_api.h"
#include "server_metrics.h"

namespace narcache::narstore {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Per-request state of the worker thread serving it. httplib serves a request start to end on
// one thread, so the routing handlers set it and the logger (called after the response is
// written) reads and resets it.
struct RequestState {
  Route route = Route::kOther;
  bool started = false;
  SteadyClock::time_point start;
  std::string error;  // why the request failed, for the log line
};
thread_local RequestState t_request;

// Bound of an API request's body (read into memory by httplib): 10,000 store paths fit.
constexpr std::uint64_t kMaxApiBody = 4 << 20;

bool isHashPart(std::string_view s) {
  return s.size() == kStorePathHashLength && std::all_of(s.begin(), s.end(), isNix32Char);
}

bool isDrvBaseName(std::string_view s) {
  return s.size() > 4 && s.ends_with(".drv") && StorePath::parseBaseName(s).has_value();
}

// Path tricks: ".." segments or NUL after percent-decoding (httplib decodes req.path).
bool isSuspiciousPath(std::string_view path) {
  if (path.empty() || path[0] != '/') return true;
  if (path.find('\0') != std::string_view::npos) return true;
  if (path.find("//") != std::string_view::npos) return true;
  std::size_t pos = 0;
  while (pos < path.size()) {
    std::size_t next = path.find('/', pos + 1);
    std::string_view segment =
        path.substr(pos + 1, (next == std::string_view::npos ? path.size() : next) - pos - 1);
    if (segment == ".." || segment == ".") return true;
    if (next == std::string_view::npos) break;
    pos = next;
  }
  return false;
}

Route classify(std::string_view method, std::string_view path) {
  bool put = method == "PUT";
  if (path == "/nix-cache-info") return put ? Route::kPutCacheInfo : Route::kCacheInfo;
  if (path.starts_with("/nar/")) return put ? Route::kPutNar : Route::kNar;
  if (path.starts_with("/log/")) return put ? Route::kPutLog : Route::kLog;
  if (path.ends_with(".narinfo")) return put ? Route::kPutNarInfo : Route::kNarInfo;
  if (path.ends_with(".ls")) return put ? Route::kPutListing : Route::kListing;
  if (put) return Route::kOther;
  if (path == "/metrics") return Route::kMetrics;
  if (path == "/healthz") return Route::kHealth;
  return Route::kOther;
}

void beginRequest(const httplib::Request& req) {
  if (t_request.started) return;
  t_request.started = true;
  t_request.start = SteadyClock::now();
  t_request.route = classify(req.method, req.path);
  t_request.error.clear();
}

constexpr std::size_t kReadChunk = 256 * 1024;

}  // namespace

struct Server::Impl {
  Impl(Store& s, ServerOptions o) : store(s), options(std::move(o)) {}

  Store& store;
  ServerOptions options;
  http::Server http;
  std::string host;
  int port = 0;
  ServerMetrics metrics;
  std::string cache_info;

  // Signed narinfo text per hash part, so that a lookup does not sign (Ed25519 costs more than
  // the whole rest of a request). An entry holds the narinfo it was made from, exactly as the
  // store served it, and is used only while the store serves an equal one (every field: the
  // text is a function of the narinfo, the hash part and the fixed keys), so it can never
  // differ from what would be signed now. Comparing NarHash/URL/Sigs alone was not enough: an
  // item deleted and uploaded again with the same NarHash but other References, Deriver or CA
  // (and, with server-side signing, no stored Sigs either time) kept its old text, whose
  // references could be gone. The comparison allocates nothing.
  struct SignedNarInfo {
    NarInfo unsigned_info;
    std::string text;
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, SignedNarInfo> entries;  // guarded by mutex
  };
  static constexpr std::size_t kShards = 32;
  static constexpr std::size_t kMaxEntriesPerShard = 8192;
  std::array<Shard, kShards> shards;

  void setup();
  std::string signedNarInfo(const std::string& hash_part, const NarInfo& info);

  // Responses.
  void sendError(httplib::Response& res, const Error& error);
  void sendStatus(httplib::Response& res, int status, std::string_view message);
  void sendUnauthorized(httplib::Response& res);
  bool authorized(const httplib::Request& req) const;

  // GET and HEAD.
  void handleGet(const httplib::Request& req, httplib::Response& res);
  void serveNarInfo(std::string_view hash_part, httplib::Response& res);
  void serveListing(std::string_view hash_part, httplib::Response& res);
  void serveNar(const httplib::Request& req, std::string_view name, httplib::Response& res);
  void serveLog(const httplib::Request& req, std::string_view name, httplib::Response& res);
  // `what` names the file in errors ("nar/<name>"): clients never see server paths.
  void serveFile(const httplib::Request& req, const std::filesystem::path& path,
                 const std::string& what, const char* content_type, httplib::Response& res);

  // PUT.
  void handlePut(const httplib::Request& req, httplib::Response& res,
                 const httplib::ContentReader& reader);
  // Streams the body to `consume` running on another thread; returns its status (an
  // InvalidArgument if the body was truncated). `complete`: the whole body was read.
  Status streamBody(const httplib::ContentReader& reader, bool& complete,
                    const std::function<Status(Source&)>& consume);
  // Reads a small body whole; InvalidArgument past `limit` bytes.
  Result<std::string> readSmallBody(const httplib::ContentReader& reader, std::size_t limit);
  Status drainBody(const httplib::ContentReader& reader);
  void discardBody(const httplib::Request& req, httplib::Response& res,
                   const httplib::ContentReader& reader);

  void logRequest(const httplib::Request& req, const httplib::Response& res);
};

void Server::Impl::sendStatus(httplib::Response& res, int status, std::string_view message) {
  res.status = status;
  std::string body(message);
  body += '\n';
  if (res.get_header_value("Connection") == "close") {
    http::sendAndClose(res, std::move(body), "text/plain; charset=utf-8");  // body left unread
  } else {
    res.set_content(body, "text/plain; charset=utf-8");
  }
  if (status == 404) res.set_header("Cache-Control", options.miss_cache_control);
  if (status >= 400 && t_request.error.empty()) t_request.error = std::string(message);
}

void Server::Impl::sendError(httplib::Response& res, const Error& error) {
  int status = http::httpStatus(error.code());
  t_request.error = error.message();
  // 4xx messages are written by our modules for clients ("references missing: ..."); 5xx
  // details stay in the log.
  sendStatus(
      res, status,
      status < 500 ? std::string_view(error.message()) : std::string_view("internal server error"));
}

void Server::Impl::sendUnauthorized(httplib::Response& res) {
  res.set_header("WWW-Authenticate", "Basic realm=\"narcache\"");
  // The body of a refused upload is not read: ask the client not to reuse the connection.
  http::endConnection(res);
  sendStatus(res, 401, "authentication required: use the upload token");
}

bool Server::Impl::authorized(const httplib::Request& req) const {
  if (options.upload_token.empty()) return false;
  std::string header = req.get_header_value("Authorization");
  std::string_view value = http::trimHeaderValue(header);
  if (value.starts_with("Bearer ")) {
    return http::secretEquals(http::bearerToken(value), options.upload_token);
  }
  if (value.starts_with("Basic ")) {
    auto decoded = base64Decode(http::trimHeaderValue(value.substr(6)));
    if (!decoded) return false;
    std::string_view credentials(reinterpret_cast<const char*>(decoded->data()), decoded->size());
    std::size_t colon = credentials.find(':');
    if (colon == std::string_view::npos) return false;
    return http::secretEquals(credentials.substr(colon + 1), options.upload_token);
  }
  return false;
}

std::string Server::Impl::signedNarInfo(const std::string& hash_part, const NarInfo& info) {
  Shard& shard = shards[static_cast<unsigned char>(hash_part[0]) % kShards];
  {
    std::lock_guard lock(shard.mutex);
    auto it = shard.entries.find(hash_part);
    if (it != shard.entries.end() && it->second.unsigned_info == info) {
      metrics.recordNarInfoCache(true);
      return it->second.text;
    }
  }
  metrics.recordNarInfoCache(false);
  NarInfo signed_info = info;
  for (const SecretKey& key : options.secret_keys) signNarInfo(signed_info, key);
  // The nar URL names the item too (as harmonia's): Nix keeps narinfos in its disk cache for
  // a month and downloads the nar later without asking for the narinfo again, so the nar
  // request is what tells GC that the item is still in use (serveNar). The signature does not
  // cover the URL.
  signed_info.url += "?hash=" + hash_part;
  std::string text = signed_info.toString();
  std::lock_guard lock(shard.mutex);
  if (shard.entries.size() >= kMaxEntriesPerShard) shard.entries.clear();
  shard.entries.insert_or_assign(hash_part, SignedNarInfo{info, text});
  return text;
}

void Server::Impl::handleGet(const httplib::Request& req, httplib::Response& res) {
  std::string_view path = req.path;
  switch (t_request.route) {
    case Route::kCacheInfo:
      res.set_content(cache_info, "text/x-nix-cache-info");
      res.set_header("Cache-Control", options.narinfo_cache_control);
      return;
    case Route::kHealth:
      res.set_content("ok\n", "text/plain; charset=utf-8");
      res.set_header("Cache-Control", "no-store");
      return;
    case Route::kMetrics:
      res.set_content(metrics.render(store.stats()) +
                          (options.extra_metrics ? options.extra_metrics() : std::string()),
                      "text/plain; version=0.0.4");
      res.set_header("Cache-Control", "no-store");
      return;
    case Route::kNarInfo:
      if (path.size() == 1 + kStorePathHashLength + 8 && isHashPart(path.substr(1, 32))) {
        return serveNarInfo(path.substr(1, 32), res);
      }
      break;
    case Route::kListing:
      if (path.size() == 1 + kStorePathHashLength + 3 && isHashPart(path.substr(1, 32))) {
        return serveListing(path.substr(1, 32), res);
      }
      break;
    case Route::kNar:
      if (parseNarFileName(path.substr(5))) return serveNar(req, path.substr(5), res);
      break;
    case Route::kLog:
      if (isDrvBaseName(path.substr(5))) return serveLog(req, path.substr(5), res);
      break;
    default: break;
  }
  sendStatus(res, 404, "not found");
}

void Server::Impl::serveNarInfo(std::string_view hash_part, httplib::Response& res) {
  // The access is recorded before the item is read: a GC batch that has not decided yet sees
  // it and keeps the item, and one that is deleting it makes recordAccess wait until its
  // commit, so the read below sees the item gone (see pending_access.h). A miss leaves an entry
  // that the next flush drops.
  store.recordAccess(hash_part);
  auto info = store.servable(hash_part);
  if (!info) return sendError(res, info.error());
  res.set_content(signedNarInfo(std::string(hash_part), *info), "text/x-nix-narinfo");
  res.set_header("Cache-Control", options.narinfo_cache_control);
}

void Server::Impl::serveListing(std::string_view hash_part, httplib::Response& res) {
  auto info = store.servable(hash_part);
  if (!info) return sendError(res, info.error());
  auto listing = store.listing(hash_part);
  if (!listing) return sendError(res, listing.error());
  res.set_content(*listing, "application/json");
  res.set_header("Cache-Control", options.narinfo_cache_control);
}

void Server::Impl::serveNar(const httplib::Request& req, std::string_view name,
                            httplib::Response& res) {
  auto path = store.narFilePath(name);
  if (!path) return sendError(res, path.error());
  // The item named by the narinfo's URL (see signedNarInfo) is in use, as for a narinfo
  // lookup; whoever can ask for a narinfo can record this access as well.
  if (std::string hash = req.get_param_value("hash"); isHashPart(hash)) store.recordAccess(hash);
  if (!options.nar_redirect_prefix.empty()) {
    res.set_header("X-Accel-Redirect", options.nar_redirect_prefix + std::string(name));
    res.set_header("Cache-Control", options.nar_cache_control);
    res.set_header("Content-Type", "application/x-nix-nar");
    res.status = 200;
    return;
  }
  serveFile(req, *path, "nar/" + std::string(name), "application/x-nix-nar", res);
  res.set_header("Cache-Control", options.nar_cache_control);
}

void Server::Impl::serveLog(const httplib::Request& req, std::string_view name,
                            httplib::Response& res) {
  auto path = store.logPath(name);
  if (!path) return sendError(res, path.error());
  serveFile(req, *path, "log/" + std::string(name), "text/plain; charset=utf-8", res);
  res.set_header("Cache-Control", options.narinfo_cache_control);
}

// Streams a file in constant memory: httplib pulls `length` bytes at `offset` (the whole file,
// or the requested Range, fitted to the file's size) through the provider, which reads with
// pread into a per-thread buffer.
void Server::Impl::serveFile(const httplib::Request& req, const std::filesystem::path& path,
                             const std::string& what, const char* content_type,
                             httplib::Response& res) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return sendError(res, Error(ErrorCode::kNotFound, what + ": not found"));
    spdlog::error("opening {}: {}", path.string(), std::strerror(err));
    return sendError(res, Error(ErrorCode::kIoError, what + ": cannot be read"));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return sendError(res, Error(ErrorCode::kNotFound, what + ": not a regular file"));
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  if (!http::fitRange(req, size)) {
    ::close(fd);
    return http::sendRangeNotSatisfiable(req, res, size);
  }
  if (size == 0) {  // httplib takes a provider of length 0 for one of unknown length
    ::close(fd);
    res.set_content("", content_type);
    return;
  }
  res.set_content_provider(
      size, content_type,
      [this, fd, path](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
        thread_local std::vector<char> buffer(kReadChunk);
        std::size_t want = std::min(length, buffer.size());
        ssize_t n;
        do {
          n = ::pread(fd, buffer.data(), want, static_cast<off_t>(offset));
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
          // The file shrank or vanished under us: abort the response (the client sees a
          // short body, never wrong bytes).
          spdlog::error("reading {} at {}: {}", path.string(), offset,
                        n < 0 ? std::strerror(errno) : "unexpected end of file");
          return false;
        }
        if (!sink.write(buffer.data(), static_cast<std::size_t>(n))) return false;
        metrics.addBytesServed(static_cast<std::uint64_t>(n));
        return true;
      },
      [fd](bool) { ::close(fd); });
}

Status Server::Impl::streamBody(const httplib::ContentReader& reader, bool& complete,
                                const std::function<Status(Source&)>& consume) {
  BodyPipe pipe;
  Status result;
  {
    std::jthread consumer([&] {
      BodyPipe::Reader source(pipe);
      try {
        result = consume(source);
      } catch (const std::exception& e) {  // thread entry point: never let it escape
        result = fail(ErrorCode::kInternal, std::string("upload: ") + e.what());
      }
      if (result) {
        // Anything after the consumer's end of stream would be ignored: drain it.
        std::array<std::byte, 4096> rest;
        while (true) {
          auto n = pipe.read(rest);
          if (!n || *n == 0) break;
        }
      }
      pipe.cancel();
    });
    complete = reader([&](const char* data, std::size_t size) {
      metrics.addBytesReceived(size);
      return pipe.push(data, size);
    });
    if (complete) {
      pipe.close();
    } else {
      pipe.abort();
    }
  }  // joins the consumer
  return result;
}

Result<std::string> Server::Impl::readSmallBody(const httplib::ContentReader& reader,
                                                std::size_t limit) {
  std::string body;
  bool too_large = false;
  bool complete = reader([&](const char* data, std::size_t size) {
    metrics.addBytesReceived(size);
    if (body.size() + size > limit) {
      too_large = true;
      return false;
    }
    body.append(data, size);
    return true;
  });
  if (too_large) {
    // A client error (400), not a full disk (507, which ResourceExhausted maps to).
    return fail(ErrorCode::kInvalidArgument,
                "request body larger than " + std::to_string(limit) + " bytes");
  }
  if (!complete) return fail(ErrorCode::kInvalidArgument, "request body truncated");
  return body;
}

Status Server::Impl::drainBody(const httplib::ContentReader& reader) {
  bool complete = reader([&](const char*, std::size_t size) {
    metrics.addBytesReceived(size);
    return true;
  });
  if (!complete) return fail(ErrorCode::kInvalidArgument, "request body truncated");
  return {};
}

// Refuses an upload without storing its body. httplib would parse an unread body as the next
// request on the connection, so a small body is read and dropped (the connection stays usable)
// and a large one is left unread behind `Connection: close`.
void Server::Impl::discardBody(const httplib::Request& req, httplib::Response& res,
                               const httplib::ContentReader& reader) {
  metrics.recordUploadFailure(t_request.route);
  constexpr std::size_t kDrainLimit = 1 << 20;
  std::string length_text = req.get_header_value("Content-Length");
  std::size_t length = 0;
  auto [ptr, ec] =
      std::from_chars(length_text.data(), length_text.data() + length_text.size(), length);
  bool known =
      !length_text.empty() && ec == std::errc() && ptr == length_text.data() + length_text.size();
  if (known && length <= kDrainLimit && drainBody(reader)) return;
  http::endConnection(res);
}

void Server::Impl::handlePut(const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader& reader) {
  beginRequest(req);
  Route route = t_request.route;
  if (options.upload_token.empty()) {
    discardBody(req, res, reader);
    return sendStatus(res, 403, "uploads are disabled on this server");
  }
  if (!authorized(req)) {
    discardBody(req, res, reader);
    return sendUnauthorized(res);
  }
  std::string_view path = req.path;
  bool body_consumed = false;
  if (isSuspiciousPath(path)) {
    discardBody(req, res, reader);
    return sendStatus(res, 400, "bad path");
  }
  Status status;
  switch (route) {
    case Route::kPutNar: {
      std::string name(path.substr(5));
      if (auto parsed = parseNarFileName(name); !parsed) {
        discardBody(req, res, reader);
        return sendError(res, parsed.error());
      }
      status = streamBody(reader, body_consumed, [&](Source& body) -> Status {
        auto stored = store.putNarFile(name, body);
        if (!stored) return fail(stored.error());
        return {};
      });
      break;
    }
    case Route::kPutNarInfo: {
      std::string_view hash_part = path.substr(1, std::min<std::size_t>(32, path.size() - 1));
      if (path.size() != 1 + kStorePathHashLength + 8 || !isHashPart(hash_part)) {
        discardBody(req, res, reader);
        return sendError(
            res, Error(ErrorCode::kInvalidArgument, "not a narinfo path: " + std::string(path)));
      }
      auto body = readSmallBody(reader, options.max_narinfo_bytes);
      if (!body) {
        status = fail(body.error());
        break;
      }
      body_consumed = true;
      std::string source = std::string(hash_part) + ".narinfo";
      auto info = NarInfo::parse(*body, source, store.storeDir());
      if (!info) {
        status = fail(info.error());
        break;
      }
      if (info->path.hashPart() != hash_part) {
        status = fail(ErrorCode::kInvalidArgument,
                      source + ": StorePath " + info->fullPath() + " does not match the URL");
        break;
      }
      AddOptions add_options;
      add_options.uploader = "http:" + req.remote_addr;
      auto added = store.addNarInfo(*info, add_options);
      if (!added) {
        status = fail(added.error());
        break;
      }
      if (added->undeleted) {  // an operator's decision undone: worth a warning in the log
        spdlog::warn(
            "added {} (uploaded from {}): it had been marked deleted ({}, by {}), "
            "and is served again",
            info->fullPath(), req.remote_addr, added->undeleted->reason, added->undeleted->by);
      } else if (added->added) {
        spdlog::info("added {} (uploaded from {})", info->fullPath(), req.remote_addr);
      }
      break;
    }
    case Route::kPutLog: {
      std::string name(path.substr(5));
      if (!isDrvBaseName(name)) {
        discardBody(req, res, reader);
        return sendError(res, Error(ErrorCode::kInvalidArgument, "not a derivation name: " + name));
      }
      status =
          streamBody(reader, body_consumed, [&](Source& body) { return store.putLog(name, body); });
      break;
    }
    case Route::kPutListing:    // we compute listings ourselves
    case Route::kPutCacheInfo:  // our nix-cache-info comes from the options
      status = drainBody(reader);
      body_consumed = status.has_value();
      break;
    default: discardBody(req, res, reader); return sendStatus(res, 404, "no such upload route");
  }
  if (!status) {
    metrics.recordUploadFailure(route);
    if (!body_consumed) http::endConnection(res);
    return sendError(res, status.error());
  }
  res.status = 200;
  res.set_content("ok\n", "text/plain; charset=utf-8");
}

void Server::Impl::logRequest(const httplib::Request& req, const httplib::Response& res) {
  double seconds = -1;
  if (t_request.started) {
    seconds = std::chrono::duration<double>(SteadyClock::now() - t_request.start).count();
  }
  Route route = t_request.started ? t_request.route : Route::kOther;
  metrics.recordRequest(route, res.status, seconds);
  if (req.method != "HEAD" && !res.body.empty()) metrics.addBytesServed(res.body.size());
  if (res.status >= 400) {
    std::string_view path = req.path;
    if (path.size() > 200) path = path.substr(0, 200);
    std::string_view why = t_request.error.empty() ? std::string_view("malformed request")
                                                   : std::string_view(t_request.error);
    if (res.status >= 500) {
      spdlog::error("{} {} {} -> {}: {}", req.remote_addr, req.method, path, res.status, why);
    } else if (res.status == 404 && route != Route::kPutNar && route != Route::kPutNarInfo) {
      spdlog::debug("{} {} {} -> 404: {}", req.remote_addr, req.method, path, why);
    } else {
      spdlog::warn("{} {} {} -> {}: {}", req.remote_addr, req.method, path, res.status, why);
    }
  }
  t_request.started = false;
  t_request.route = Route::kOther;
  t_request.error.clear();
}

void Server::Impl::setup() {
  cache_info = "StoreDir: " + store.storeDir() +
               "\nWantMassQuery: " + (options.want_mass_query ? "1" : "0") +
               "\nPriority: " + std::to_string(options.priority) + "\n";

  unsigned threads = options.threads;
  if (threads == 0) threads = std::max(64u, 8 * std::max(1u, std::thread::hardware_concurrency()));
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_tcp_nodelay(true);
  http.set_keep_alive_max_count(options.keep_alive_max_requests);
  http.set_keep_alive_timeout(options.keep_alive_timeout_seconds);
  http.set_read_timeout(30, 0);
  http.set_write_timeout(30, 0);

  // Expect: 100-continue — refuse unauthenticated uploads before their body is sent, and let
  // the rest go on at once (curl waits 1 s for the "100 Continue" otherwise).
  http.set_expect_100_continue_handler(
      [this](const httplib::Request& req, httplib::Response& res) -> int {
        beginRequest(req);
        const bool api = req.path.starts_with("/api/");
        if (!api && req.method != "PUT") return 100;
        // A final answer here ends the connection (Connection: close, see sendStatus).
        if (!api && options.upload_token.empty()) {
          http::endConnection(res);
          metrics.recordUploadFailure(t_request.route);
          sendStatus(res, 403, "uploads are disabled on this server");
          return 403;
        }
        if (!authorized(req)) {
          if (!api) metrics.recordUploadFailure(t_request.route);
          sendUnauthorized(res);
          return 401;
        }
        return 100;
      });

  // All GET/HEAD routing happens here, by hand (no std::regex on the hot path).
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    beginRequest(req);
    if (req.method == "PUT") return httplib::Server::HandlerResponse::Unhandled;
    if (req.path.starts_with("/api/")) {
      // httplib reads an API request's body into memory before its handler runs: refuse here,
      // before that, what no handler would take (no token, or a body over kMaxApiBody).
      if (!authorized(req)) {
        sendUnauthorized(res);  // the body is left unread: the connection ends
        return httplib::Server::HandlerResponse::Handled;
      }
      if (http::bodyLengthUnknown(req)) {
        http::endConnection(res);
        sendStatus(res, 411, http::refusalText(411));
        return httplib::Server::HandlerResponse::Handled;
      }
      if (req.get_header_value<std::uint64_t>("Content-Length") > kMaxApiBody) {
        http::endConnection(res);
        sendStatus(res, 413, "request body too large");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    }
    if (isSuspiciousPath(req.path)) {
      sendStatus(res, 400, "bad path");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method == "GET" || req.method == "HEAD") {
      handleGet(req, res);
      if (res.status >= 300) {
        http::dropRanges(req);  // an error is sent whole
      } else if (!res.content_provider_ && !http::fitRange(req, res.body.size())) {
        http::sendRangeNotSatisfiable(req, res, res.body.size());
      }
      return httplib::Server::HandlerResponse::Handled;
    }
    res.set_header("Allow", "GET, HEAD, PUT");
    http::endConnection(res);  // any body is left unread
    sendStatus(res, 405, "method not allowed");
    return httplib::Server::HandlerResponse::Handled;
  });
  http.Put(".*", [this](const httplib::Request& req, httplib::Response& res,
                        const httplib::ContentReader& reader) { handlePut(req, res, reader); });
  registerApiRoutes(http, {store, [this](const httplib::Request& r) { return authorized(r); },
                           [this](httplib::Response& r) { sendUnauthorized(r); },
                           [this](httplib::Response& r, const Error& e) { sendError(r, e); }});

  // httplib's own refusals (before any route) come without a body; 4xx bodies are one line.
  http.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty() || res.content_provider_) return;
    sendStatus(res, res.status, http::refusalText(res.status));
  });
  http.set_exception_handler(
      [this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        spdlog::error("{} {} {}: exception: {}", req.remote_addr, req.method, req.path, what);
        t_request.error = "exception (logged above)";
        res.status = 500;
        res.set_content("internal server error\n", "text/plain; charset=utf-8");
      });
  http.set_logger(
      [this](const httplib::Request& req, const httplib::Response& res) { logRequest(req, res); });
}

Result<std::unique_ptr<Server>> Server::create(Store& store, ServerOptions options) {
  auto listen = http::parseListenAddress(options.listen);
  if (!listen) return fail(listen.error());
  auto impl = std::make_unique<Impl>(store, std::move(options));
  impl->setup();
  impl->host = listen->host;
  auto port = impl->http.bind(*listen, impl->options.listen);
  if (!port) return fail(port.error());
  impl->port = *port;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() {
  stop();
}

int Server::port() const {
  return impl_->port;
}

std::string Server::address() const {
  return http::formatHostPort(impl_->host, impl_->port);
}

Status Server::run() {
  Impl& impl = *impl_;
  // Access times recorded by narinfo hits are flushed in one write transaction every few
  // seconds, and once more after the last request. Reader slots left by processes that died
  // while reading the store (a CLI command killed with kill -9 or Ctrl-C) are freed every few
  // seconds too: LMDB frees them only when a process opens the database, and until then the
  // dead reader's snapshot pins old pages, so the data file grows with every write.
  auto last_flush = SteadyClock::now();
  auto last_reader_check = SteadyClock::now();
  Status served = impl.http.serve(address(), [&impl, &last_flush, &last_reader_check] {
    const auto now = SteadyClock::now();
    if (now - last_reader_check >= std::chrono::seconds(impl.options.reader_check_seconds)) {
      last_reader_check = now;
      if (auto cleared = impl.store.clearStaleReaders(); !cleared) {
        spdlog::error("clearing stale database readers: {}", cleared.error().message());
      } else if (*cleared != 0) {
        impl.metrics.addStaleReadersCleared(*cleared);
        spdlog::warn("freed {} database reader slot(s) of processes that died while reading",
                     *cleared);
      }
    }
    if (now - last_flush < std::chrono::seconds(impl.options.access_flush_seconds)) return;
    last_flush = now;
    if (auto flushed = impl.store.flushAccessTimes(); !flushed) {
      spdlog::error("flushing access times: {}", flushed.error().message());
    }
  });
  Status flushed = impl.store.flushAccessTimes();
  if (!served) return served;
  return flushed;
}

void Server::stop() {
  impl_->http.requestStop();
}

}  // namespace narcache::narstore
