#pragma once
// The JSON API of the HTTP server (behind the upload token), for the build coordinator:
//   POST /api/mark-deleted   {"paths": ["/nix/store/..."], "reason": "...", "by": "..."}
//        -> {"results": [{"path": ..., "deleted": true} | {"path": ..., "error": ...}]}
//   GET  /api/available?path=/nix/store/...&path=...
//        -> [{"path", "state": available|missing|deleted|incomplete, "reason", "by", "when",
//             "missing": [...]}]
// Registered by Server::Impl::setup() (server.cc); errors go through the server's one
// error-to-status mapping (send_error). Thread-safe as the Store is.

#include <httplib.h>

#include <functional>

#include "narcache/narinfo/error.h"
#include "narcache/narstore/store.h"

namespace narcache::narstore {

struct ApiContext {
  Store& store;
  std::function<bool(const httplib::Request&)> authorized;
  std::function<void(httplib::Response&)> send_unauthorized;
  std::function<void(httplib::Response&, const Error&)> send_error;
};

void registerApiRoutes(httplib::Server& http, ApiContext context);

}  // namespace narcache::narstore
