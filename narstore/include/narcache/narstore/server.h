#pragma once
// Server: the HTTP substitute server of a Store (`narcache serve`). It speaks Nix's binary-cache
// protocol: GET|HEAD /nix-cache-info, /<hash>.narinfo, /<hash>.ls, /nar/<file>, /log/<drv>, and
// Nix's upload protocol (`nix copy --to http://...`): PUT of nar files, narinfos, listings and
// logs, with `Expect: 100-continue`, behind an upload token. Plus /metrics (Prometheus text) and
// /healthz. See docs/http-api.md for every route, header and status code. Behind the token too:
// the JSON API POST /api/mark-deleted and GET /api/available (server_api.h, docs/gc.md).
//
// Narinfos are signed on the way out with every configured secret key (stored signatures are
// kept); the signed text is cached per item so that a lookup costs one LMDB read, not a
// signature. Nar bodies are streamed from their file in constant memory (Range requests
// supported) or delegated to a reverse proxy with X-Accel-Redirect. Uploads stream to the store
// without holding the body in memory, and are verified by the Store exactly like `add`.
//
// Ownership: the Server holds a reference to the Store, which must outlive it. Thread-safety:
// run() blocks the calling thread while worker threads serve requests; stop() may be called from
// any other thread (e.g. a signal-handling thread) and makes run() return after in-flight requests
// finish and pending access times are flushed. port()/address() are safe at any time.
// Maintenance while it runs: access times are flushed every few seconds, and the database
// reader slots of dead processes are freed (see Store::clearStaleReaders).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/signature.h"
#include "narcache/narstore/store.h"

namespace narcache::narstore {

struct ServerOptions {
  // "host:port"; port 0 binds an ephemeral port (see Server::port()). "[::1]:80" for IPv6.
  std::string listen = "127.0.0.1:8080";
  // Every narinfo served carries a signature by each of these keys (besides stored ones).
  std::vector<SecretKey> secret_keys;
  // PUTs are accepted only with `Authorization: Bearer <token>` or Basic auth whose password is
  // the token. Empty: uploads are disabled (every PUT gets 403).
  std::string upload_token;
  // /nix-cache-info. The store dir comes from the Store.
  int priority = 40;
  bool want_mass_query = true;
  // Cache-Control of narinfo hits, nar bodies, and misses (404s of narinfo/ls/nar/log).
  std::string narinfo_cache_control = "public, max-age=300";
  std::string nar_cache_control = "public, max-age=31536000, immutable";
  std::string miss_cache_control = "public, max-age=60";
  // When set, GET /nar/<file> answers with an empty body and `X-Accel-Redirect: <prefix><file>`
  // for a reverse proxy (nginx `internal` location) to send the file.
  std::string nar_redirect_prefix;
  // Worker threads. Each keep-alive connection holds one thread while it is open, so this bounds
  // the concurrent connections served; 0 picks max(64, 8 x cores).
  unsigned threads = 0;
  // Keep-alive: requests per connection and idle timeout.
  std::size_t keep_alive_max_requests = 100000;
  int keep_alive_timeout_seconds = 5;
  // Largest narinfo body accepted by PUT. Nar and log bodies are streamed to disk and not
  // bounded here: the upload token is what guards the disk.
  std::size_t max_narinfo_bytes = 1 << 20;
  // How often access times recorded by narinfo hits are flushed to the store.
  int access_flush_seconds = 5;
  // How often the reader slots of processes that died while reading the store are freed
  // (Store::clearStaleReaders; each freed slot is logged and counted in /metrics).
  int reader_check_seconds = 10;
  // Extra Prometheus text appended to /metrics on every scrape (e.g. the GC metrics of
  // `narcache serve --gc-interval`); called from request threads, so it must be thread-safe.
  std::function<std::string()> extra_metrics;
};

class Server {
 public:
  // Binds the listening socket (so port() is known before run()). InvalidArgument for a bad
  // listen address, Unavailable when it cannot be bound.
  static Result<std::unique_ptr<Server>> create(Store& store, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound port and "host:port" address.
  int port() const;
  std::string address() const;

  // Serves until stop(); then waits for in-flight requests and flushes access times.
  Status run();
  // Stops accepting connections and makes run() return. Idempotent; callable from any thread.
  void stop();

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace narcache::narstore
