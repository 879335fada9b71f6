#include "narcache/narstore/http_cache.h"

#include <fcntl.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <thread>

#include "body_pipe.h"
#include "http_support.h"

namespace narcache::narstore {
namespace {

std::unique_ptr<httplib::Client> makeClient(const http::HttpUrl& endpoint, int timeout_seconds) {
  auto client = std::make_unique<httplib::Client>(endpoint.origin);
  client->set_connection_timeout(timeout_seconds, 0);
  client->set_read_timeout(timeout_seconds, 0);
  client->set_write_timeout(timeout_seconds, 0);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);
  client->set_follow_location(true);
  return client;
}

// Maps an HTTP answer (or its absence) to a Status; `retry` tells whether trying again may help.
Status checkResponse(const httplib::Result& res, const std::string& what, bool& retry) {
  retry = false;
  if (!res) {
    retry = true;
    return fail(ErrorCode::kUnavailable, what + ": " + http::transportErrorText(res.error()));
  }
  int status = res->status;
  if (status >= 200 && status < 300) return {};
  std::string body = res->body.substr(0, 500);  // the server's errors name paths and hashes
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
  std::string message =
      what + ": HTTP " + std::to_string(status) + (body.empty() ? "" : " (" + body + ")");
  if (status == 404) return fail(ErrorCode::kNotFound, message);
  if (status == 401 || status == 403) return fail(ErrorCode::kPermissionDenied, message);
  if (status == 409) return fail(ErrorCode::kConflict, message);
  if (status >= 500 || status == 429 || status == 408) {
    retry = true;
    return fail(ErrorCode::kUnavailable, message);
  }
  return fail(ErrorCode::kInvalidArgument, message);
}

// A download streamed through a BodyPipe by a thread running the request.
class HttpStream final : public Source {
 public:
  HttpStream(std::unique_ptr<httplib::Client> client, std::string path, std::string what)
      : client_(std::move(client)), what_(std::move(what)) {
    thread_ = std::jthread([this, path = std::move(path)] {
      auto res = client_->Get(
          path,
          [this](const httplib::Response& r) {
            status_ = r.status;
            return true;
          },
          [this](const char* data, std::size_t size) {
            if (status_ < 200 || status_ >= 300) {
              error_body_.append(data, std::min<std::size_t>(size, 500));
              return true;
            }
            return pipe_.push(data, size);
          });
      if (!res) {
        transport_error_ = http::transportErrorText(res.error());
        pipe_.abort();
      } else {
        pipe_.close();
      }
    });
  }
  ~HttpStream() override {
    pipe_.cancel();
    thread_ = {};  // joins
  }

  Result<std::size_t> read(MutableBytes out) override {
    auto n = pipe_.read(out);
    if (n && *n == 0 && (status_ < 200 || status_ >= 300)) {
      thread_ = {};
      return fail(status_ == 404 ? ErrorCode::kNotFound : ErrorCode::kUnavailable,
                  what_ + ": HTTP " + std::to_string(status_));
    }
    if (!n) {
      thread_ = {};
      return fail(ErrorCode::kUnavailable,
                  what_ + ": download interrupted" +
                      (transport_error_.empty() ? "" : ": " + transport_error_));
    }
    return n;
  }

 private:
  std::unique_ptr<httplib::Client> client_;
  std::string what_;
  BodyPipe pipe_;
  int status_ = 0;  // written by the request thread before any push() / close()
  std::string error_body_;
  std::string transport_error_;
  std::jthread thread_;
};

}  // namespace

struct HttpCache::Impl {
  HttpCacheOptions options;
  http::HttpUrl endpoint;
  std::unique_ptr<httplib::Client> client;

  std::string path(std::string_view relative) const {
    return endpoint.prefix + "/" + std::string(relative);
  }

  // Runs `request` until it succeeds, fails for good, or attempts run out.
  template <typename F>
  Result<std::string> withRetries(const std::string& what, F&& request) {
    auto backoff = options.first_backoff;
    Status last = {};
    for (int attempt = 1; attempt <= std::max(1, options.attempts); ++attempt) {
      httplib::Result res = request();
      bool retry = false;
      last = checkResponse(res, what, retry);
      if (last) return std::move(res->body);
      if (!retry) break;
      if (attempt < options.attempts) {
        std::this_thread::sleep_for(backoff);
        backoff *= 2;
      }
    }
    return fail(last.error());
  }

  httplib::Headers authHeaders() const {
    httplib::Headers h;
    if (!options.token.empty()) h.emplace("Authorization", "Bearer " + options.token);
    return h;
  }
};

HttpCache::HttpCache(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpCache::~HttpCache() = default;

Result<std::unique_ptr<HttpCache>> HttpCache::open(HttpCacheOptions options) {
  auto endpoint = http::parseHttpUrl(options.url);
  if (!endpoint) return fail(endpoint.error());
  auto impl = std::make_unique<Impl>();
  impl->client = makeClient(*endpoint, options.timeout_seconds);
  impl->endpoint = std::move(*endpoint);
  impl->options = std::move(options);
  return std::unique_ptr<HttpCache>(new HttpCache(std::move(impl)));
}

std::string HttpCache::describe() const {
  return impl_->options.url;
}

Result<std::string> HttpCache::cacheInfo() {
  return impl_->withRetries(describe() + "/nix-cache-info",
                            [&] { return impl_->client->Get(impl_->path("nix-cache-info")); });
}

Result<std::vector<std::string>> HttpCache::listNarInfos() {
  return fail(ErrorCode::kUnavailable,
              describe() + " is an HTTP cache and cannot be listed; name the store paths to copy");
}

Result<std::string> HttpCache::narInfo(std::string_view hash_part) {
  std::string rel = std::string(hash_part) + ".narinfo";
  return impl_->withRetries(describe() + "/" + rel,
                            [&] { return impl_->client->Get(impl_->path(rel)); });
}

Result<std::unique_ptr<Source>> HttpCache::open(std::string_view relative) {
  if (relative.find("..") != std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument, "bad cache path '" + std::string(relative) + "'");
  }
  // One connection per stream, so the cache can answer other requests meanwhile.
  return std::unique_ptr<Source>(std::make_unique<HttpStream>(
      makeClient(impl_->endpoint, impl_->options.timeout_seconds), impl_->path(relative),
      describe() + "/" + std::string(relative)));
}

Result<std::vector<std::string>> HttpCache::listLogs() {
  return std::vector<std::string>{};
}

Status HttpCache::putFile(std::string_view relative, const std::filesystem::path& file,
                          std::string_view content_type) {
  std::error_code ec;
  auto size = std::filesystem::file_size(file, ec);
  if (ec) return fail(ErrorCode::kIoError, "cannot read " + file.string() + ": " + ec.message());
  std::string what = "PUT " + describe() + "/" + std::string(relative);
  auto body = impl_->withRetries(what, [&]() -> httplib::Result {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return httplib::Result(nullptr, httplib::Error::Read);
    std::vector<char> buf(256 * 1024);
    auto res = impl_->client->Put(
        impl_->path(relative), impl_->authHeaders(), size,
        [&](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
          std::size_t want = std::min(length, buf.size());
          ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(offset));
          if (n <= 0) return false;
          return sink.write(buf.data(), static_cast<std::size_t>(n));
        },
        std::string(content_type));
    ::close(fd);
    return res;
  });
  if (!body) return fail(body.error());
  return {};
}

Status HttpCache::putNarInfo(const NarInfo& info) {
  std::string rel = info.path.hashPart() + ".narinfo";
  std::string text = info.toString();
  auto body = impl_->withRetries("PUT " + describe() + "/" + rel, [&] {
    return impl_->client->Put(impl_->path(rel), impl_->authHeaders(), text, "text/x-nix-narinfo");
  });
  if (!body) return fail(body.error());
  return {};
}

Result<std::vector<ItemStatus>> HttpCache::available(const std::vector<std::string>& paths) {
  // POSTed as JSON: a query string of more than about 60 paths passes the server's URL limit;
  // 1000 paths are at most about 250 KB, well under its 4 MiB body limit.
  constexpr std::size_t kBatch = 1000;
  const std::string what = "POST " + describe() + "/api/available";
  std::vector<ItemStatus> states;
  states.reserve(paths.size());
  for (std::size_t begin = 0; begin < paths.size(); begin += kBatch) {
    const std::size_t end = std::min(paths.size(), begin + kBatch);
    nlohmann::json request{{"paths", nlohmann::json::array()}};
    for (std::size_t i = begin; i < end; ++i) request["paths"].push_back(paths[i]);
    const std::string body = request.dump();
    auto answer = impl_->withRetries(what, [&] {
      return impl_->client->Post(impl_->path("api/available"), impl_->authHeaders(), body,
                                 "application/json");
    });
    if (!answer) return fail(answer.error());
    nlohmann::json j = nlohmann::json::parse(*answer, nullptr, false);
    if (j.is_discarded() || !j.is_array() || j.size() != end - begin) {
      return fail(ErrorCode::kUnavailable, what + ": unexpected answer");
    }
    for (const auto& entry : j) {
      auto state = entry.is_object() && entry.contains("state") && entry["state"].is_string()
                       ? parseItemState(entry["state"].get<std::string>())
                       : std::nullopt;
      if (!state) return fail(ErrorCode::kUnavailable, what + ": unexpected answer");
      ItemStatus status;
      status.state = *state;
      if (*state == ItemState::kDeleted) {  // fields of the wrong type count as absent
        auto text = [&](const char* key) {
          auto it = entry.find(key);
          return it != entry.end() && it->is_string() ? it->get<std::string>() : std::string();
        };
        auto when = entry.find("when");
        status.tombstone = Tombstone{
            when != entry.end() && when->is_number_integer() ? when->get<std::int64_t>() : 0,
            text("reason"), text("by")};
      }
      states.push_back(std::move(status));
    }
  }
  return states;
}

}  // namespace narcache::narstore
