#pragma once
// HttpApi: the coordinator's HTTP+JSON server — every endpoint of protocol.h, /metrics and
// /health — in front of a Coordinator. Client endpoints require `Authorization: Bearer <token>`
// when a client token is configured; agent endpoints require `Bearer <name>:<secret>`. Error
// codes become HTTP statuses in one place; exception texts are never sent to clients.
//
// Ownership: holds a reference to the Coordinator, which must outlive it. Thread-safety: run()
// blocks the calling thread while worker threads serve; stop() may be called from any thread.

#include <memory>
#include <string>

#include "narcache/coordinator/coordinator.h"
#include "narcache/narinfo/error.h"

namespace narcache::coordinator {

struct HttpApiOptions {
  std::string listen = "127.0.0.1:8745";  // port 0: an ephemeral port (see port())
  std::string client_token;               // empty: the client API is open
  unsigned threads = 64;
};

class HttpApi {
 public:
  // Binds the socket: InvalidArgument for a bad address, Unavailable when it cannot bind.
  static Result<std::unique_ptr<HttpApi>> create(Coordinator& coordinator, HttpApiOptions options);
  ~HttpApi();
  HttpApi(const HttpApi&) = delete;
  HttpApi& operator=(const HttpApi&) = delete;

  int port() const;
  std::string address() const;
  Status run();  // serves until stop()
  void stop();   // idempotent, any thread

 private:
  struct Impl;
  explicit HttpApi(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace narcache::coordinator
