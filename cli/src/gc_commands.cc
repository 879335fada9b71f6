// GC commands: roots add/list/remove, gc, mark-deleted, available. Each opens the store given
// by --store (default: $NARCACHE_STORE, then ./var/store) for the duration of the command.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "narcache/gc/gc.h"
#include "narcache/narinfo/narinfo.h"
#include "narcache/narstore/store.h"

namespace narcache::cli {
namespace {

using narstore::Store;

// A full store path or a base name; a bare hash part names a valid item.
Result<StorePath> storePathOf(const Store& store, const std::string& arg) {
  if (!arg.empty() && arg.front() == '/') return StorePath::parse(arg, store.storeDir());
  if (arg.size() == kStorePathHashLength) {
    auto item = store.get(arg);
    if (!item) return fail(ErrorCode::kNotFound, arg + ": no valid item with this hash part");
    return item->info.path;
  }
  return StorePath::parseBaseName(arg);
}

std::string when(std::int64_t t) {
  char buf[32];
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct Args {
  std::string root;
  std::string name;
  std::vector<std::string> paths;
  std::string expires;
  std::string ttl;
  std::string max_size;
  std::string grace = "1h";
  std::string nar_grace = "1h";
  std::string reason;
  std::string by = "operator";
  std::size_t batch_size = 500;
  bool dry_run = false;
  bool json = false;
};

nlohmann::json planJson(const gc::Plan& plan) {
  const gc::PlanSummary& s = plan.summary;
  nlohmann::json j;
  j["items"] = s.items;
  j["bytes"] = s.bytes;
  j["delete"] = {{"items", s.delete_items},
                 {"bytes", s.delete_bytes},
                 {"nar_size", s.delete_nar_size},
                 {"not_live", s.delete_ttl},
                 {"over_budget", s.delete_budget}};
  j["keep"] = {{"items", s.keep_items},   {"bytes", s.keep_bytes},
               {"root", s.kept_root},     {"grace", s.kept_grace},
               {"recent", s.kept_recent}, {"referenced", s.kept_referenced}};
  j["roots"] = {{"total", s.roots},
                {"expired", s.roots_expired},
                {"missing_paths", s.root_paths_missing},
                {"closure_bytes", s.root_bytes}};
  j["budget"] = {
      {"max_size", plan.policy.max_size_bytes ? nlohmann::json(*plan.policy.max_size_bytes)
                                              : nlohmann::json(nullptr)},
      {"over_budget", s.over_budget},
      {"roots_exceed_budget", s.roots_exceed_budget}};
  j["scan_seconds"] = plan.scan_seconds;
  j["mark_seconds"] = plan.mark_seconds;
  return j;
}

void printPlan(const gc::Plan& plan) {
  const gc::PlanSummary& s = plan.summary;
  auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf("scanned %llu items, %s of nar files (scan %.2fs, mark %.2fs)\n", u(s.items),
              gc::formatBytes(s.bytes).c_str(), plan.scan_seconds, plan.mark_seconds);
  std::printf("delete: %llu items, %s of nar files (%llu not live, %llu over the size budget)\n",
              u(s.delete_items), gc::formatBytes(s.delete_bytes).c_str(), u(s.delete_ttl),
              u(s.delete_budget));
  std::printf(
      "keep:   %llu items, %s: %llu in root closures, %llu within grace, %llu recently used, "
      "%llu referenced by kept items\n",
      u(s.keep_items), gc::formatBytes(s.keep_bytes).c_str(), u(s.kept_root), u(s.kept_grace),
      u(s.kept_recent), u(s.kept_referenced));
  std::printf("roots:  %llu (%llu expired)", u(s.roots), u(s.roots_expired));
  if (s.root_paths_missing != 0)
    std::printf(", %llu root paths not in the store", u(s.root_paths_missing));
  std::printf("\n");
  if (s.over_budget) {
    if (s.roots_exceed_budget) {
      std::printf("budget: NOT reachable: the roots' closures alone take %s, more than %s\n",
                  gc::formatBytes(s.root_bytes).c_str(),
                  gc::formatBytes(*plan.policy.max_size_bytes).c_str());
    } else {
      std::printf(
          "budget: NOT reachable: %s stay (roots, items within grace and what they need), "
          "more than %s\n",
          gc::formatBytes(s.keep_bytes).c_str(),
          gc::formatBytes(*plan.policy.max_size_bytes).c_str());
    }
  }
}

int runGc(const Args& a) {
  gc::Policy policy;
  if (!a.ttl.empty()) {
    auto ttl = gc::parseDuration(a.ttl);
    if (!ttl) return reportError(ttl.error().withContext("--ttl"));
    policy.ttl_seconds = *ttl;
  }
  if (!a.max_size.empty()) {
    auto size = gc::parseSize(a.max_size);
    if (!size) return reportError(size.error().withContext("--max-size"));
    policy.max_size_bytes = *size;
  }
  auto grace = gc::parseDuration(a.grace);
  if (!grace) return reportError(grace.error().withContext("--grace"));
  policy.grace_seconds = *grace;
  auto nar_grace = gc::parseDuration(a.nar_grace);
  if (!nar_grace) return reportError(nar_grace.error().withContext("--nar-grace"));
  policy.nar_grace_seconds = *nar_grace;

  auto store = openStore(a.root);
  if (!store) return reportError(store.error());
  auto plan = gc::planCollection(**store, policy);
  if (!plan) return reportError(plan.error());
  nlohmann::json out;
  if (a.json) {
    out["plan"] = planJson(*plan);
    out["dry_run"] = a.dry_run;
  } else {
    printPlan(*plan);
  }
  if (a.dry_run) {
    if (a.json) {
      std::printf("%s\n", out.dump(2).c_str());
    } else {
      std::printf("dry run: nothing changed\n");
    }
    return 0;
  }
  gc::CollectOptions options;
  options.batch_size = a.batch_size;
  options.progress = ::isatty(STDERR_FILENO) == 1 && !a.json;
  auto report = gc::collect(**store, *plan, options);
  if (!report) return reportError(report.error());
  auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  if (a.json) {
    out["result"] = {{"deleted_items", report->deleted_items},
                     {"deleted_nar_size", report->deleted_nar_size},
                     {"kept_on_recheck", report->kept_on_recheck},
                     {"files_unreferenced", report->files_unreferenced},
                     {"file_bytes", report->file_bytes},
                     {"unlinked_files", report->unlinked_files},
                     {"unlinked_bytes", report->unlinked_bytes},
                     {"pending_files", report->pending_files},
                     {"unlink_failures", report->unlink_failures},
                     {"stale", report->stale},
                     {"seconds", report->seconds}};
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf(
        "deleted %llu items (%llu kept by the re-check); %llu nar files (%s) lost their last "
        "user\n",
        u(report->deleted_items), u(report->kept_on_recheck), u(report->files_unreferenced),
        gc::formatBytes(report->file_bytes).c_str());
    std::printf("unlinked %llu nar files (%s); %llu wait for their nar grace (%s)\n",
                u(report->unlinked_files), gc::formatBytes(report->unlinked_bytes).c_str(),
                u(report->pending_files), gc::formatDuration(policy.nar_grace_seconds).c_str());
  }
  if (report->unlink_failures != 0) {
    std::fprintf(stderr,
                 "narcache: gc: %llu nar files could not be unlinked (first: %s); they stay "
                 "pending for the next run\n",
                 u(report->unlink_failures), report->unlink_error.c_str());
  }
  if (report->stale) {
    std::fprintf(stderr,
                 "narcache: roots were added during the collection; stopped early (run gc "
                 "again)\n");
    return 1;
  }
  return 0;
}

nlohmann::json statusJson(const Store& store, const std::string& path,
                          const narstore::ItemStatus& st) {
  nlohmann::json j;
  j["path"] = path;
  j["state"] = std::string(narstore::itemStateName(st.state));
  if (st.tombstone) {
    j["reason"] = st.tombstone->reason;
    j["by"] = st.tombstone->by;
    j["when"] = st.tombstone->when;
  }
  if (st.state == narstore::ItemState::kIncomplete) {
    j["missing"] = nlohmann::json::array();
    for (const auto& m : st.missing) j["missing"].push_back(m.fullPath(store.storeDir()));
  }
  return j;
}

}  // namespace

void registerGcCommands(CommandRegistry& registry) {
  CLI::App& app = registry.app();
  CLI::App* roots = registry.group(app, "roots", "GC roots: named pins of store path closures");
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = roots->add_subcommand("add", "Add (or replace) a root keeping these closures");
    addStoreOption(cmd, a->root);
    cmd->add_option("NAME", a->name, "Root name")->required();
    cmd->add_option("STOREPATH", a->paths, "Store paths (valid items)")->required();
    cmd->add_option("--expires", a->expires, "Expire after this long (30d, 12h, ...)");
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      narstore::Root root;
      root.name = a->name;
      for (const auto& p : a->paths) {
        auto path = storePathOf(**store, p);
        if (!path) return reportError(path.error());
        root.paths.push_back(*path);
      }
      root.created = narstore::systemClock();
      if (!a->expires.empty()) {
        auto d = gc::parseDuration(a->expires);
        if (!d) return reportError(d.error().withContext("--expires"));
        root.expires = root.created + *d;
      }
      if (auto r = (*store)->addRoot(root); !r) return reportError(r.error());
      std::printf("root %s: %zu paths%s\n", root.name.c_str(), root.paths.size(),
                  root.expires ? (", expires " + when(*root.expires)).c_str() : "");
      return 0;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = roots->add_subcommand("list", "List roots (expired ones marked as such)");
    addStoreOption(cmd, a->root);
    cmd->add_flag("--json", a->json, "JSON output");
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      auto list = (*store)->listRoots();
      if (!list) return reportError(list.error());
      std::int64_t now = narstore::systemClock();
      nlohmann::json out = nlohmann::json::array();
      for (const auto& r : *list) {
        if (a->json) {
          nlohmann::json j{{"name", r.name}, {"created", r.created}, {"expired", r.expired(now)}};
          j["expires"] = r.expires ? nlohmann::json(*r.expires) : nlohmann::json(nullptr);
          j["paths"] = nlohmann::json::array();
          for (const auto& p : r.paths) j["paths"].push_back(p.fullPath((*store)->storeDir()));
          out.push_back(std::move(j));
          continue;
        }
        std::string state = !r.expires       ? "never expires"
                            : r.expired(now) ? "EXPIRED " + when(*r.expires)
                                             : "expires " + when(*r.expires);
        std::printf("%s (%s)\n", r.name.c_str(), state.c_str());
        for (const auto& p : r.paths) {
          std::printf("  %s\n", p.fullPath((*store)->storeDir()).c_str());
        }
      }
      if (a->json) std::printf("%s\n", out.dump(2).c_str());
      return 0;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = roots->add_subcommand("remove", "Remove a root");
    addStoreOption(cmd, a->root);
    cmd->add_option("NAME", a->name, "Root name")->required();
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      if (auto r = (*store)->removeRoot(a->name); !r) return reportError(r.error());
      std::printf("removed root %s\n", a->name.c_str());
      return 0;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand(
        "gc",
        "Delete what no root, recent access or grace period keeps (never breaking a closure)");
    addStoreOption(cmd, a->root);
    cmd->add_option("--ttl", a->ttl,
                    "Keep items accessed (or created) within this long, and their closures "
                    "(default: no age limit)");
    cmd->add_option("--max-size", a->max_size,
                    "Then evict least recently used unreferenced items until the nar files fit "
                    "(10G, 500M)");
    cmd->add_option("--grace", a->grace, "Keep items created within this long (default 1h)");
    cmd->add_option("--nar-grace", a->nar_grace,
                    "Unlink a nar file this long after its last narinfo went (default 1h)");
    cmd->add_option("--batch-size", a->batch_size, "Items per write transaction (default 500)");
    cmd->add_flag("--dry-run", a->dry_run, "Print the plan; change nothing");
    cmd->add_flag("--json", a->json, "JSON output");
    registry.add(cmd, [a] { return runGc(*a); });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand(
        "mark-deleted",
        "Mark items truly gone: not served, tombstoned; their referrers become incomplete");
    addStoreOption(cmd, a->root);
    cmd->add_option("STOREPATH", a->paths, "Store paths")->required();
    cmd->add_option("--reason", a->reason, "Why (recorded in the tombstone)")->required();
    cmd->add_option("--by", a->by, "Who (default: operator)");
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      int rc = 0;
      for (const auto& p : a->paths) {
        auto path = storePathOf(**store, p);
        if (!path) {
          rc = reportError(path.error());
          continue;
        }
        if (auto was = (*store)->available({*path}); was && (*was)[0].tombstone) {
          // The first tombstone stays (its reason and time are the ones that count).
          const narstore::Tombstone& t = *(*was)[0].tombstone;
          std::printf("already deleted %s (%s, by %s)\n",
                      path->fullPath((*store)->storeDir()).c_str(), t.reason.c_str(), t.by.c_str());
          continue;
        }
        narstore::Tombstone why{narstore::systemClock(), a->reason, a->by};
        if (auto r = (*store)->markDeleted(*path, why); !r) {
          rc = reportError(r.error());
          continue;
        }
        std::printf("deleted %s\n", path->fullPath((*store)->storeDir()).c_str());
      }
      return rc;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd =
        app.add_subcommand("available",
                           "Is each store path really available (valid and closure-complete)? "
                           "available / missing / deleted / incomplete");
    addStoreOption(cmd, a->root);
    cmd->add_option("STOREPATH", a->paths, "Store paths")->required();
    cmd->add_flag("--json", a->json, "JSON output");
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      std::vector<StorePath> paths;
      for (const auto& p : a->paths) {
        auto path = StorePath::parse(p, (*store)->storeDir());
        // A base name too; the error of an absolute path is the full path's (another store
        // dir, say), not the base name's.
        if (!path && !p.starts_with('/')) path = StorePath::parseBaseName(p);
        if (!path) return reportError(path.error());
        paths.push_back(*path);
      }
      auto statuses = (*store)->available(paths);
      if (!statuses) return reportError(statuses.error());
      nlohmann::json out = nlohmann::json::array();
      for (std::size_t i = 0; i < paths.size(); ++i) {
        std::string full = paths[i].fullPath((*store)->storeDir());
        const narstore::ItemStatus& st = (*statuses)[i];
        if (a->json) {
          out.push_back(statusJson(**store, full, st));
          continue;
        }
        std::string line = full + ": " + std::string(narstore::itemStateName(st.state));
        if (st.tombstone) {
          line += ": " + st.tombstone->reason + " (by " + st.tombstone->by + " at " +
                  when(st.tombstone->when) + ")";
        }
        if (st.state == narstore::ItemState::kIncomplete) {
          line += ": missing";
          for (std::size_t k = 0; k < st.missing.size(); ++k) {
            line += (k == 0 ? " " : ", ") + st.missing[k].fullPath((*store)->storeDir());
          }
        }
        std::printf("%s\n", line.c_str());
      }
      if (a->json) std::printf("%s\n", out.dump(2).c_str());
      return 0;
    });
  }
}

}  // namespace narcache::cli
