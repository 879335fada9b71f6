// The server's JSON API: see server_api.h.

#include "server_api.h"

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace narcache::narstore {
namespace {

constexpr std::size_t kMaxPaths = 10000;

nlohmann::json statusJson(const Store& store, const StorePath& path, const ItemStatus& st) {
  nlohmann::json j;
  j["path"] = path.fullPath(store.storeDir());
  j["state"] = std::string(itemStateName(st.state));
  if (st.tombstone) {
    j["reason"] = st.tombstone->reason;
    j["by"] = st.tombstone->by;
    j["when"] = st.tombstone->when;
  }
  if (st.state == ItemState::kIncomplete) {
    j["missing"] = nlohmann::json::array();
    for (const auto& m : st.missing) j["missing"].push_back(m.fullPath(store.storeDir()));
  }
  return j;
}

void sendJson(httplib::Response& res, const nlohmann::json& j) {
  res.status = 200;
  res.set_header("Cache-Control", "no-store");
  res.set_content(j.dump() + "\n", "application/json");
}

}  // namespace

void registerApiRoutes(httplib::Server& http, ApiContext context) {
  auto ctx = std::make_shared<ApiContext>(std::move(context));
  http.Get("/api/available", [ctx](const httplib::Request& req, httplib::Response& res) {
    if (!ctx->authorized(req)) return ctx->send_unauthorized(res);
    std::size_t n = req.get_param_value_count("path");
    if (n == 0 || n > kMaxPaths) {
      return ctx->send_error(res, Error(ErrorCode::kInvalidArgument,
                                        "give 1 to 10000 store paths as ?path=...&path=..."));
    }
    std::vector<StorePath> paths;
    for (std::size_t i = 0; i < n; ++i) {
      auto p = StorePath::parse(req.get_param_value("path", i), ctx->store.storeDir());
      if (!p) return ctx->send_error(res, p.error());
      paths.push_back(*p);
    }
    auto statuses = ctx->store.available(paths);
    if (!statuses) return ctx->send_error(res, statuses.error());
    nlohmann::json out = nlohmann::json::array();
    for (std::size_t i = 0; i < paths.size(); ++i) {
      out.push_back(statusJson(ctx->store, paths[i], (*statuses)[i]));
    }
    sendJson(res, out);
  });
  http.Post("/api/mark-deleted", [ctx](const httplib::Request& req, httplib::Response& res) {
    if (!ctx->authorized(req)) return ctx->send_unauthorized(res);
    nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("paths") ||
        !body["paths"].is_array() || !body.contains("reason") || !body["reason"].is_string() ||
        body["paths"].size() > kMaxPaths || (body.contains("by") && !body["by"].is_string())) {
      return ctx->send_error(
          res, Error(ErrorCode::kInvalidArgument,
                     R"(expected {"paths": ["/nix/store/..."], "reason": "...", "by": "..."})"));
    }
    std::string reason = body["reason"].get<std::string>();
    std::string by = body.contains("by") ? body["by"].get<std::string>() : "api";
    std::vector<StorePath> paths;
    for (const auto& p : body["paths"]) {
      if (!p.is_string()) {
        return ctx->send_error(res, Error(ErrorCode::kInvalidArgument, "paths must be strings"));
      }
      auto path = StorePath::parse(p.get<std::string>(), ctx->store.storeDir());
      if (!path) return ctx->send_error(res, path.error());
      paths.push_back(*path);
    }
    nlohmann::json results = nlohmann::json::array();
    for (const auto& path : paths) {
      nlohmann::json r{{"path", path.fullPath(ctx->store.storeDir())}};
      if (auto s = ctx->store.markDeleted(path, Tombstone{0, reason, by}); s) {
        r["deleted"] = true;
      } else {
        r["error"] = s.error().message();
      }
      results.push_back(std::move(r));
    }
    sendJson(res, nlohmann::json{{"results", results}});
  });
}

}  // namespace narcache::narstore
