#pragma once
// HttpCache: a client of a Nix binary cache served over HTTP(S) — `narcache serve`, nix-serve,
// harmonia, an S3 website, `guix publish`. It reads the cache (BinaryCacheReader, for
// `narcache import http://…` and for substituting build inputs) and writes to it with Nix's
// upload protocol (PUT nar file, narinfo, log; Bearer token), as agents do.
//
// Every request is retried with exponential backoff on connection errors and 5xx answers (up to
// `attempts` tries); 404 is NotFound, 401/403 PermissionDenied, other 4xx InvalidArgument with
// the server's message. Uploads are idempotent (the store treats a re-upload as a no-op), so a
// retried PUT is safe. An HTTP cache cannot be listed: listNarInfos() is Unavailable and
// `import` needs store paths whose closures it copies.
//
// Not thread-safe: use one HttpCache per thread. Streams returned by open() own their own
// connection and may be read while the HttpCache serves other requests.

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/narinfo.h"
#include "narcache/narstore/binary_cache.h"
#include "narcache/narstore/store.h"

namespace narcache::narstore {

struct HttpCacheOptions {
  std::string url;    // "http://host:port" or "https://host[:port]" (a path prefix is kept)
  std::string token;  // for uploads: sent as "Authorization: Bearer <token>"
  int attempts = 5;   // tries per request (connection errors and 5xx)
  std::chrono::milliseconds first_backoff{100};  // doubled after each failed try
  int timeout_seconds = 60;                      // connect/read/write timeout of each request
};

class HttpCache final : public BinaryCacheReader {
 public:
  static Result<std::unique_ptr<HttpCache>> open(HttpCacheOptions options);
  ~HttpCache() override;

  std::string describe() const override;
  Result<std::string> cacheInfo() override;
  Result<std::vector<std::string>> listNarInfos() override;  // Unavailable
  Result<std::string> narInfo(std::string_view hash_part) override;
  Result<std::unique_ptr<Source>> open(std::string_view relative) override;
  Result<std::vector<std::string>> listLogs() override;  // empty

  // Uploads, in Nix's order: the nar file (named by its FileHash), then the narinfo; a build
  // log is a file too ("log/<drv base name>"). Files are streamed, never held in memory.
  Status putFile(std::string_view relative, const std::filesystem::path& file,
                 std::string_view content_type);
  Status putNarInfo(const NarInfo& info);

  // The state of each store path (full paths) in a `narcache serve` cache: POST /api/available
  // with the token, in batches of 1000; a deleted one's tombstone too (`missing` stays empty).
  // Errors as above (a path of another store dir: InvalidArgument with the server's message;
  // another cache: NotFound).
  Result<std::vector<ItemStatus>> available(const std::vector<std::string>& paths);

 private:
  struct Impl;
  explicit HttpCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace narcache::narstore
