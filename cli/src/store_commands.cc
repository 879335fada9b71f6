// Store commands: store init, add, info, stats, verify, import, export. Each opens the store
// given by --store (default: $NARCACHE_STORE, then ./var/store) for the duration of the command.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "narcache/narinfo/narinfo.h"
#include "narcache/narinfo/signature.h"
#include "narcache/narstore/binary_cache.h"
#include "narcache/narstore/store.h"
#include "narcache/narstore/verify.h"

namespace narcache::cli {
namespace {

using narstore::Store;
using narstore::StoreOptions;

class OwnedFdSource final : public Source {
 public:
  explicit OwnedFdSource(int fd) : fd_(fd), inner_(fd) {}
  ~OwnedFdSource() override { ::close(fd_); }
  Result<std::size_t> read(MutableBytes out) override { return inner_.read(out); }

 private:
  int fd_;
  FdSource inner_;
};

Result<std::unique_ptr<Source>> openInput(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(ErrorCode::kNotFound, "cannot open '" + path + "': " + std::strerror(errno));
  return std::unique_ptr<Source>(new OwnedFdSource(fd));
}

// A full store path, a base name or a hash part -> hash part.
Result<std::string> hashPartOf(const std::string& arg, const std::string& store_dir) {
  if (!arg.empty() && arg.front() == '/') {
    auto p = StorePath::parse(arg, store_dir);
    if (!p) return fail(p.error());
    return p->hashPart();
  }
  if (arg.size() == kStorePathHashLength) {
    NARCACHE_TRY(validateHashPart(arg));
    return arg;
  }
  auto p = StorePath::parseBaseName(arg);
  if (!p) return fail(p.error());
  return p->hashPart();
}

std::string indent(const std::string& text) {
  std::string out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    out += "  " + text.substr(pos, nl - pos) + "\n";
    pos = nl + 1;
  }
  return out;
}

int printInfo(const Store& store, const std::string& arg) {
  auto h = hashPartOf(arg, store.storeDir());
  if (!h) return reportError(h.error());
  narstore::ItemStatus status = store.status(*h);
  std::string out;
  auto item = store.get(*h);
  out += "path: " + (item ? item->info.fullPath() : arg) + "\n";
  out += "state: " + std::string(narstore::itemStateName(status.state)) + "\n";
  if (status.tombstone) {
    out += "deleted: at " + std::to_string(status.tombstone->when) + " by " + status.tombstone->by +
           ": " + status.tombstone->reason + "\n";
  }
  for (const auto& m : status.missing) out += "missing: " + m.fullPath(store.storeDir()) + "\n";
  if (item) {
    out += "created: " + std::to_string(item->created) + "\n";
    out += "uploader: " + item->uploader + "\n";
    out += "last-access: " + std::to_string(item->last_access) + "\n";
    if (auto size = store.closureSize(*h)) {
      out += "closure: " + std::to_string(size->second) + " items, " + std::to_string(size->first) +
             " bytes of NAR\n";
    }
  }
  if (auto referrers = store.referrers(*h)) {
    out += "referrers:" + std::string(referrers->empty() ? " (none)" : "") + "\n";
    for (const auto& r : *referrers) out += "  " + r.fullPath(store.storeDir()) + "\n";
  }
  if (item) out += "narinfo:\n" + indent(item->info.toString());
  std::fputs(out.c_str(), stdout);
  return status.state == narstore::ItemState::kMissing ? 1 : 0;
}

struct Args {
  std::string root;
  std::string store_dir = std::string(kDefaultStoreDir);
  std::string narinfo;
  std::string nar;
  std::string uploader = "local";
  std::vector<std::string> paths;
  std::vector<std::string> keys;
  std::string url;
  bool repair = false;
  bool all_orphans = false;
  unsigned threads = 0;
};

}  // namespace

void registerStoreCommands(CommandRegistry& registry) {
  CLI::App& app = registry.app();
  {
    CLI::App* group = registry.group(app, "store", "Create a narcache store");
    auto a = std::make_shared<Args>();
    CLI::App* cmd = group->add_subcommand("init", "Create a new, empty store");
    addStoreOption(cmd, a->root);
    cmd->add_option("--store-dir", a->store_dir, "Store dir of the items (/nix/store, /gnu/store)");
    registry.add(cmd, [a] {
      StoreOptions options;
      options.root = a->root;
      options.store_dir = a->store_dir;
      auto store = Store::init(options);
      if (!store) return reportError(store.error());
      std::printf("created store at %s (store dir %s)\n", a->root.c_str(), a->store_dir.c_str());
      return 0;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("add", "Add a narinfo and its compressed nar file");
    addStoreOption(cmd, a->root);
    cmd->add_option("--narinfo", a->narinfo, ".narinfo file")->required();
    cmd->add_option("--nar", a->nar, "Compressed nar file (as the narinfo's Compression)")
        ->required();
    cmd->add_option("--uploader", a->uploader, "Recorded as the uploader (default: local)");
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      auto text = readFileContents(a->narinfo);
      if (!text) return reportError(text.error());
      auto info = NarInfo::parse(*text, a->narinfo, (*store)->storeDir());
      if (!info) return reportError(info.error());
      auto nar = openInput(a->nar);
      if (!nar) return reportError(nar.error());
      info->url.clear();  // named by the file's hash once stored
      auto added = (*store)->add(*info, **nar, narstore::AddOptions{a->uploader});
      if (!added) return reportError(added.error());
      std::printf("%s %s\n", added->added ? "added" : "present", info->fullPath().c_str());
      return 0;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("info", "Show items: state, narinfo, referrers, closure");
    addStoreOption(cmd, a->root);
    cmd->add_option("PATH", a->paths, "Store path, base name or hash part")->required();
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      int rc = 0;
      for (std::size_t i = 0; i < a->paths.size(); ++i) {
        if (i > 0) std::fputs("\n", stdout);
        rc = std::max(rc, printInfo(**store, a->paths[i]));
      }
      return rc;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("stats", "Item, file and byte counts of the store");
    addStoreOption(cmd, a->root);
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      narstore::StoreStats s = (*store)->stats();
      std::printf(
          "store-dir: %s\nitems: %llu\ntombstones: %llu\nnar-files: %llu\nnar-bytes: %llu\n"
          "nar-size: %llu\n",
          (*store)->storeDir().c_str(), static_cast<unsigned long long>(s.items),
          static_cast<unsigned long long>(s.tombstones),
          static_cast<unsigned long long>(s.nar_files),
          static_cast<unsigned long long>(s.nar_bytes),
          static_cast<unsigned long long>(s.nar_size));
      return 0;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("verify", "Check every invariant of the store");
    addStoreOption(cmd, a->root);
    cmd->add_flag("--repair", a->repair,
                  "Remove orphans older than an hour; mark items with a missing or corrupt "
                  "file deleted");
    cmd->add_flag("--all-orphans", a->all_orphans, "With --repair: remove orphans of any age");
    cmd->add_option("--threads", a->threads, "File-checking threads (default: one per core)");
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      narstore::VerifyOptions options;
      options.repair = a->repair;
      options.all_orphans = a->all_orphans;
      options.threads = a->threads;
      options.progress = ::isatty(STDERR_FILENO) == 1;
      auto report = narstore::verifyStore(**store, options);
      if (!report) return reportError(report.error());
      for (const auto& p : report->problems) {
        std::printf("%s: %s%s\n", p.subject.c_str(), p.message.c_str(),
                    p.repaired ? " (repaired: marked deleted)" : "");
      }
      for (const auto& o : report->orphans) std::printf("orphan: %s\n", o.c_str());
      for (const auto& o : report->removed_orphans) std::printf("removed orphan: %s\n", o.c_str());
      std::printf(
          "%llu items, %llu nar files (%llu bytes) checked: %s, %zu problems, %zu orphans, "
          "%llu unused nar files awaiting GC\n",
          static_cast<unsigned long long>(report->items),
          static_cast<unsigned long long>(report->nar_files),
          static_cast<unsigned long long>(report->bytes_read),
          report->consistent() ? "consistent" : "INCONSISTENT", report->problems.size(),
          report->orphans.size(), static_cast<unsigned long long>(report->awaiting_unlink));
      if (a->repair && !a->all_orphans && !report->orphans.empty()) {
        // Left: a young orphan may be an upload in progress (or a gc run's file).
        std::printf(
            "orphans left: those younger than an hour on purpose (an upload may be writing "
            "them; --all-orphans removes them too)\n");
      }
      return report->consistent() ? 0 : 1;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("import", "Copy a Nix binary cache into the store");
    addStoreOption(cmd, a->root);
    cmd->add_option("SOURCE", a->url, "file:///dir, http://host:port or https://host")->required();
    cmd->add_option("PATHS", a->paths,
                    "Store paths whose closures to copy (default: the whole cache; needed for "
                    "HTTP caches, which cannot be listed)");
    cmd->add_option("--trusted-key", a->keys, "Public key (name:base64 or a file); repeatable");
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      auto keys = parseTrustedKeys(a->keys);
      if (!keys) return reportError(keys.error());
      auto cache = narstore::openCacheUrl(a->url);
      if (!cache) return reportError(cache.error());
      narstore::ImportOptions options;
      options.trusted_keys = *keys;
      options.paths = a->paths;
      options.progress = ::isatty(STDERR_FILENO) == 1;
      auto report = narstore::importCache(**store, **cache, options);
      if (!report) return reportError(report.error());
      for (const auto& e : report->errors) std::fprintf(stderr, "narcache: %s\n", e.c_str());
      std::printf(
          "imported %llu items (%llu already present, %llu failed), %llu logs (%llu failed)\n",
          static_cast<unsigned long long>(report->added),
          static_cast<unsigned long long>(report->skipped),
          static_cast<unsigned long long>(report->failed),
          static_cast<unsigned long long>(report->logs),
          static_cast<unsigned long long>(report->logs_failed));
      return report->failed == 0 && report->logs_failed == 0 ? 0 : 1;
    });
  }
  {
    auto a = std::make_shared<Args>();
    CLI::App* cmd = app.add_subcommand("export", "Write the store as a Nix file binary cache");
    addStoreOption(cmd, a->root);
    cmd->add_option("DEST", a->url, "file:///dir")->required();
    registry.add(cmd, [a] {
      auto store = openStore(a->root);
      if (!store) return reportError(store.error());
      const std::string dest = narstore::fileCacheDir(a->url).value_or("");
      if (dest.empty() || dest.front() != '/') {
        return reportError(
            Error(ErrorCode::kInvalidArgument, "export needs file:///absolute/dir, got " + a->url));
      }
      auto report = narstore::exportCache(**store, dest, ::isatty(STDERR_FILENO) == 1);
      if (!report) return reportError(report.error());
      for (const auto& e : report->errors) std::fprintf(stderr, "narcache: %s\n", e.c_str());
      std::printf(
          "exported %llu items, %llu nar files, %llu logs (%llu incomplete skipped, %llu "
          "failed)\n",
          static_cast<unsigned long long>(report->items),
          static_cast<unsigned long long>(report->nar_files),
          static_cast<unsigned long long>(report->logs),
          static_cast<unsigned long long>(report->skipped),
          static_cast<unsigned long long>(report->failed));
      return report->failed == 0 ? 0 : 1;
    });
  }
}

}  // namespace narcache::cli
