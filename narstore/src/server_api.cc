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
  // The states of store paths: GET with ?path=...&path=... (the URL limit, 8 KiB, allows about
  // 60-100 paths), or POST {"paths": [...]} for up to kMaxPaths.
  auto answer = [ctx](const std::vector<std::string>& given, httplib::Response& res) {
    if (given.empty() || given.size() > kMaxPaths) {
      return ctx->send_error(
          res, Error(ErrorCode::kInvalidArgument,
                     "give 1 to " + std::to_string(kMaxPaths) +
                         R"( store paths as ?path=...&path=... or POST {"paths": [...]})"));
    }
    std::vector<StorePath> paths;
    for (const auto& given_path : given) {
      auto p = StorePath::parse(given_path, ctx->store.storeDir());
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
  };
  http.Get("/api/available", [ctx, answer](const httplib::Request& req, httplib::Response& res) {
    if (!ctx->authorized(req)) return ctx->send_unauthorized(res);
    std::vector<std::string> given;
    for (std::size_t i = 0, n = req.get_param_value_count("path"); i < n && i <= kMaxPaths; ++i) {
      given.push_back(req.get_param_value("path", i));
    }
    answer(given, res);
  });
  http.Post("/api/available", [ctx, answer](const httplib::Request& req, httplib::Response& res) {
    if (!ctx->authorized(req)) return ctx->send_unauthorized(res);
    nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
    std::vector<std::string> given;
    bool ok = !body.is_discarded() && body.is_object() && body.contains("paths") &&
              body["paths"].is_array() && body["paths"].size() <= kMaxPaths;
    for (std::size_t i = 0; ok && i < body["paths"].size(); ++i) {
      ok = body["paths"][i].is_string();
      if (ok) given.push_back(body["paths"][i].get<std::string>());
    }
    if (!ok) {
      return ctx->send_error(
          res, Error(ErrorCode::kInvalidArgument, R"(expected {"paths": ["/nix/store/..."]})"));
    }
    answer(given, res);
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
