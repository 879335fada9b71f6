// Availability: local (narstore::Store::available) and remote (POST <cache>/api/available).

#include "narcache/coordinator/availability.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

#include "http_support.h"
#include "narcache/narinfo/store_path.h"

namespace narcache::coordinator {
namespace {

class LocalAvailability final : public Availability {
 public:
  explicit LocalAvailability(const narstore::Store& store) : store_(store) {}

  Result<std::vector<narstore::ItemState>> check(const std::vector<std::string>& paths) override {
    std::vector<StorePath> parsed;
    parsed.reserve(paths.size());
    for (const std::string& path : paths) {
      auto p = StorePath::parse(path, store_.storeDir());
      if (!p) return fail(p.error().withContext(path));
      parsed.push_back(std::move(*p));
    }
    auto statuses = store_.available(parsed);
    if (!statuses) return fail(statuses.error());
    std::vector<narstore::ItemState> states;
    states.reserve(statuses->size());
    for (const auto& s : *statuses) states.push_back(s.state);
    return states;
  }

 private:
  const narstore::Store& store_;
};

Result<narstore::ItemState> parseItemState(std::string_view name) {
  for (auto s : {narstore::ItemState::kAvailable, narstore::ItemState::kIncomplete,
                 narstore::ItemState::kDeleted, narstore::ItemState::kMissing}) {
    if (narstore::itemStateName(s) == name) return s;
  }
  return fail(ErrorCode::kUnavailable, "unknown item state '" + std::string(name) + "'");
}

class RemoteAvailability final : public Availability {
 public:
  RemoteAvailability(RemoteAvailabilityOptions options, http::HttpUrl url)
      : options_(std::move(options)), url_(std::move(url)) {}

  Result<std::vector<narstore::ItemState>> check(const std::vector<std::string>& paths) override {
    // POSTed as JSON (a query string of more than about 60 paths passes the server's URL
    // limit); 1000 paths are at most about 250 KB, well under its 4 MiB body limit.
    constexpr std::size_t kBatch = 1000;
    std::vector<narstore::ItemState> states;
    states.reserve(paths.size());
    for (std::size_t i = 0; i < paths.size(); i += kBatch) {
      std::size_t end = std::min(paths.size(), i + kBatch);
      auto part = ask(paths, i, end);
      if (!part) return fail(part.error());
      states.insert(states.end(), part->begin(), part->end());
    }
    return states;
  }

 private:
  Result<std::vector<narstore::ItemState>> ask(const std::vector<std::string>& paths,
                                               std::size_t begin, std::size_t end) {
    httplib::Client client(url_.origin);
    client.set_connection_timeout(options_.timeout_seconds, 0);
    client.set_read_timeout(options_.timeout_seconds, 0);
    nlohmann::json request{{"paths", nlohmann::json::array()}};
    for (std::size_t i = begin; i < end; ++i) request["paths"].push_back(paths[i]);
    httplib::Headers headers;
    if (!options_.token.empty()) headers.emplace("Authorization", "Bearer " + options_.token);
    std::string path = url_.prefix + "/api/available";
    std::string where = url_.origin + path;
    auto res = client.Post(path, headers, request.dump(), "application/json");
    if (!res) {
      return fail(ErrorCode::kUnavailable, where + ": " + httplib::to_string(res.error()));
    }
    if (res->status == 400) {  // the store refuses one of the paths (e.g. another store dir)
      std::string message = res->body.substr(0, 300);
      while (!message.empty() && message.back() == '\n') message.pop_back();
      return fail(ErrorCode::kInvalidArgument, where + ": " + message);
    }
    if (res->status != 200) {
      return fail(ErrorCode::kUnavailable, where + ": HTTP " + std::to_string(res->status));
    }
    nlohmann::json body = nlohmann::json::parse(res->body, nullptr, false);
    if (body.is_discarded() || !body.is_array() || body.size() != end - begin) {
      return fail(ErrorCode::kUnavailable, where + ": unexpected answer");
    }
    std::vector<narstore::ItemState> states;
    for (std::size_t i = 0; i < body.size(); ++i) {
      const auto& entry = body[i];
      if (!entry.is_object() || !entry.contains("state") || !entry["state"].is_string()) {
        return fail(ErrorCode::kUnavailable, where + ": unexpected answer");
      }
      auto state = parseItemState(entry["state"].get<std::string>());
      if (!state) return fail(state.error().withContext(where));
      states.push_back(*state);
    }
    return states;
  }

  RemoteAvailabilityOptions options_;
  http::HttpUrl url_;
};

}  // namespace

std::unique_ptr<Availability> localAvailability(const narstore::Store& store) {
  return std::make_unique<LocalAvailability>(store);
}

Result<std::unique_ptr<Availability>> remoteAvailability(const RemoteAvailabilityOptions& options) {
  auto url = http::parseHttpUrl(options.cache_url, "cache URL");
  if (!url) return fail(url.error());
  return std::unique_ptr<Availability>(
      std::make_unique<RemoteAvailability>(options, std::move(*url)));
}

}  // namespace narcache::coordinator
