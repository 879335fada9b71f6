// Import from and export to Nix binary caches: see binary_cache.h.

#include "narcache/narstore/binary_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include "narcache/narstore/http_cache.h"
#include "reference_order.h"

namespace narcache::narstore {
namespace {

class FileSource final : public Source {
 public:
  explicit FileSource(int fd) : fd_(fd), inner_(fd) {}
  ~FileSource() override { ::close(fd_); }
  Result<std::size_t> read(MutableBytes out) override { return inner_.read(out); }

 private:
  int fd_;
  FdSource inner_;
};

Result<std::unique_ptr<Source>> openFile(const std::filesystem::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return fail(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                p.string() + ": " + std::strerror(err));
  }
  return std::unique_ptr<Source>(new FileSource(fd));
}

Result<std::string> readAll(const std::filesystem::path& p) {
  auto src = openFile(p);
  if (!src) return fail(src.error());
  StringSink sink;
  auto n = copyStream(**src, sink);
  if (!n) return fail(n.error().withContext(p.string()));
  return std::move(sink.text);
}

bool validRelative(std::string_view rel) {
  if (rel.empty() || rel.front() == '/') return false;
  std::size_t start = 0;
  while (start <= rel.size()) {
    std::size_t end = rel.find('/', start);
    if (end == std::string_view::npos) end = rel.size();
    std::string_view part = rel.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

class FileCacheReader final : public BinaryCacheReader {
 public:
  explicit FileCacheReader(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::string describe() const override { return "file://" + dir_.string(); }
  Result<std::string> cacheInfo() override { return readAll(dir_ / "nix-cache-info"); }
  Result<std::vector<std::string>> listNarInfos() override {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
      std::string name = e.path().filename().string();
      constexpr std::string_view kExt = ".narinfo";
      if (name.size() == kStorePathHashLength + kExt.size() &&
          name.compare(kStorePathHashLength, kExt.size(), kExt) == 0) {
        out.push_back(name.substr(0, kStorePathHashLength));
      }
    }
    if (ec) return fail(ErrorCode::kIoError, "listing " + dir_.string() + ": " + ec.message());
    std::sort(out.begin(), out.end());
    return out;
  }
  Result<std::string> narInfo(std::string_view hash_part) override {
    if (!validateHashPart(hash_part)) {
      return fail(ErrorCode::kInvalidArgument, "not a hash part: " + std::string(hash_part));
    }
    return readAll(dir_ / (std::string(hash_part) + ".narinfo"));
  }
  Result<std::unique_ptr<Source>> open(std::string_view relative) override {
    if (!validRelative(relative)) {
      return fail(ErrorCode::kInvalidArgument, "bad path in cache: " + std::string(relative));
    }
    return openFile(dir_ / std::string(relative));
  }
  Result<std::vector<std::string>> listLogs() override {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir_ / "log", ec)) {
      if (e.is_regular_file()) out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  std::filesystem::path dir_;
};

// Writes `write_body` to `dest` through a temporary file in the same directory, then renames.
Status writeAtomically(const std::filesystem::path& dest,
                       const std::function<Status(Sink&)>& write_body) {
  std::filesystem::path tmp = dest;
  tmp += ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(ErrorCode::kIoError, tmp.string() + ": " + std::strerror(errno));
  FdSink sink(fd);
  Status s = write_body(sink);
  if (s && ::fsync(fd) != 0) {
    s = fail(ErrorCode::kIoError, "fsync " + tmp.string() + ": " + std::strerror(errno));
  }
  ::close(fd);
  if (s && ::rename(tmp.c_str(), dest.c_str()) != 0) {
    s = fail(ErrorCode::kIoError, "rename " + dest.string() + ": " + std::strerror(errno));
  }
  if (!s) ::unlink(tmp.c_str());
  return s;
}

Status writeText(const std::filesystem::path& dest, std::string_view text) {
  return writeAtomically(dest, [&](Sink& sink) { return sink.write(asBytes(text)); });
}

Status copyFile(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::error_code ec;
  if (std::filesystem::exists(to, ec)) return {};
  if (::link(from.c_str(), to.c_str()) == 0 || errno == EEXIST) return {};
  auto src = openFile(from);
  if (!src) return fail(src.error());
  return writeAtomically(to, [&](Sink& sink) -> Status {
    auto n = copyStream(**src, sink);
    if (!n) return fail(n.error());
    return {};
  });
}

bool isTty() {
  return ::isatty(2) == 1;
}

}  // namespace

std::string cacheInfoStoreDir(std::string_view cache_info) {
  std::size_t pos = 0;
  while (pos < cache_info.size()) {
    std::size_t nl = cache_info.find('\n', pos);
    if (nl == std::string_view::npos) nl = cache_info.size();
    std::string_view line = cache_info.substr(pos, nl - pos);
    constexpr std::string_view kKey = "StoreDir:";
    if (line.substr(0, kKey.size()) == kKey) {
      line.remove_prefix(kKey.size());
      while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
      while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.remove_suffix(1);
      return std::string(line);
    }
    pos = nl + 1;
  }
  return std::string(kDefaultStoreDir);
}

Result<std::unique_ptr<BinaryCacheReader>> openFileCache(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return fail(ErrorCode::kNotFound, "no binary cache at " + dir.string());
  }
  return std::unique_ptr<BinaryCacheReader>(new FileCacheReader(dir));
}

std::optional<std::string> fileCacheDir(std::string_view url) {
  constexpr std::string_view kFile = "file://";
  if (url.starts_with(kFile)) {
    std::string_view rest = url.substr(kFile.size());
    return std::string(rest.substr(0, rest.find('?')));  // ignore Nix store parameters
  }
  if (url.starts_with('/')) return std::string(url);
  return std::nullopt;
}

Result<std::unique_ptr<BinaryCacheReader>> openCacheUrl(std::string_view url) {
  if (auto dir = fileCacheDir(url)) return openFileCache(*dir);
  if (url.starts_with("http://") || url.starts_with("https://")) {
    HttpCacheOptions options;
    options.url = std::string(url);
    auto http = HttpCache::open(std::move(options));
    if (!http) return fail(http.error());
    return std::unique_ptr<BinaryCacheReader>(std::move(*http));
  }
  return fail(ErrorCode::kInvalidArgument, "unsupported binary cache URL '" + std::string(url) +
                                               "' (use file:///dir, http:// or https://)");
}

Result<ImportReport> importCache(Store& store, BinaryCacheReader& cache,
                                 const ImportOptions& options) {
  ImportReport report;
  std::string store_dir = store.storeDir();
  if (auto info = cache.cacheInfo()) {
    std::string dir = cacheInfoStoreDir(*info);
    if (dir != store_dir) {
      return fail(ErrorCode::kInvalidArgument, cache.describe() + " is for store dir " + dir +
                                                   ", this store is for " + store_dir);
    }
  } else if (info.error().code() != ErrorCode::kNotFound) {
    return fail(info.error());
  }
  // The narinfos to copy: the whole cache when it can be listed, else (or when paths are
  // given) the closures of the given paths, discovered by following References.
  std::vector<std::string> pending;
  const bool closures = !options.paths.empty();
  if (closures) {
    for (const auto& p : options.paths) {
      std::string_view base = std::string_view(p).substr(p.rfind('/') + 1);
      auto path = StorePath::parseBaseName(base.size() == 32 ? std::string(base) + "-x" : base);
      if (!path) return fail(path.error().withContext("import"));
      pending.push_back(path->hashPart());
    }
  } else {
    auto hashes = cache.listNarInfos();
    if (!hashes) return fail(hashes.error());
    pending = std::move(*hashes);
  }

  std::map<std::string, NarInfo> infos;
  std::set<std::string> requested(pending.begin(), pending.end());
  while (!pending.empty()) {
    std::string h = std::move(pending.back());
    pending.pop_back();
    auto text = cache.narInfo(h);
    if (!text) {
      report.errors.push_back(h + ".narinfo: " + text.error().message());
      ++report.failed;
      continue;
    }
    auto info = NarInfo::parse(*text, h + ".narinfo", store_dir);
    if (!info) {
      report.errors.push_back(info.error().message());
      ++report.failed;
      continue;
    }
    if (info->path.hashPart() != h) {
      report.errors.push_back(h + ".narinfo: StorePath " + info->fullPath() +
                              " does not match the file name");
      ++report.failed;
      continue;
    }
    if (closures) {
      for (const auto& ref : info->references) {
        if (requested.insert(ref.hashPart()).second) pending.push_back(ref.hashPart());
      }
    }
    infos.emplace(h, std::move(*info));
  }

  // Dependency order: references first.
  std::vector<std::string> order;
  {
    std::vector<std::string> hashes;
    std::map<std::string, std::size_t> index;
    for (const auto& [h, info] : infos) {
      index.emplace(h, hashes.size());
      hashes.push_back(h);
    }
    std::vector<std::vector<std::size_t>> refs(hashes.size());
    for (std::size_t i = 0; i < hashes.size(); ++i) {
      for (const auto& ref : infos.at(hashes[i]).references) {
        if (auto it = index.find(ref.hashPart()); it != index.end()) refs[i].push_back(it->second);
      }
    }
    for (std::size_t i : referencesFirst(refs)) order.push_back(hashes[i]);
  }

  std::size_t done = 0;
  auto show = [&] {
    std::fprintf(stderr, "\rimport: %zu/%zu (%llu added)", done, order.size(),
                 static_cast<unsigned long long>(report.added));
  };
  for (const auto& h : order) {
    if (options.progress) show();
    ++done;
    NarInfo info = infos.at(h);
    ItemState state = store.status(h).state;
    if (state == ItemState::kAvailable || state == ItemState::kIncomplete) {
      ++report.skipped;
      continue;
    }
    if (!options.trusted_keys.empty() && !hasValidSignature(info, options.trusted_keys)) {
      report.errors.push_back(info.fullPath() + ": lacks a valid signature by a trusted key");
      ++report.failed;
      continue;
    }
    auto file = cache.open(info.url);
    if (!file) {
      report.errors.push_back(info.fullPath() + ": " + file.error().message());
      ++report.failed;
      continue;
    }
    info.url.clear();  // recomputed from the file's hash
    auto added = store.add(info, **file, AddOptions{options.uploader});
    if (!added) {
      report.errors.push_back(added.error().message());
      ++report.failed;
      continue;
    }
    if (added->added) {
      ++report.added;
    } else {
      ++report.skipped;
    }
  }
  if (options.progress && !order.empty()) {
    show();
    std::fputc('\n', stderr);
  }

  auto logs = cache.listLogs();
  if (logs) {
    for (const auto& name : *logs) {
      if (store.logPath(name)) continue;
      auto src = cache.open("log/" + name);
      Status s = src ? store.putLog(name, **src) : Status(fail(src.error()));
      if (s) {
        ++report.logs;
      } else {
        report.errors.push_back("log/" + name + ": " + s.error().message());
        ++report.logs_failed;
      }
    }
  }
  return report;
}

Result<ExportReport> exportCache(const Store& store, const std::filesystem::path& dir,
                                 bool progress) {
  ExportReport report;
  std::error_code ec;
  for (const auto& sub : {dir, dir / "nar", dir / "log"}) {
    std::filesystem::create_directories(sub, ec);
    if (ec) return fail(ErrorCode::kIoError, "cannot create " + sub.string() + ": " + ec.message());
  }
  NARCACHE_TRY(writeText(dir / "nix-cache-info", "StoreDir: " + store.storeDir() + "\n"));
  // Hash parts first: the read snapshot is not held while copying files.
  std::vector<std::string> hashes;
  NARCACHE_TRY(store.forEachItem([&](const StoredItem& item) {
    hashes.push_back(item.info.path.hashPart());
    return true;
  }));
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < hashes.size(); ++i) index.emplace(hashes[i], i);

  // 1. The nar files and listings of the servable items, and their references. An item whose
  // nar file is missing from the store is reported and left out; an error writing `dir` ends
  // the export.
  std::vector<std::vector<std::size_t>> refs(hashes.size());
  std::vector<bool> copied(hashes.size(), false);
  std::vector<std::string> paths(hashes.size());  // full store paths, for messages
  std::set<std::string> files_done;
  for (std::size_t i = 0; i < hashes.size(); ++i) {
    if (progress && isTty()) std::fprintf(stderr, "\rexport: nar files %zu/%zu", i, hashes.size());
    const std::string& h = hashes[i];
    auto info = store.servable(h);
    if (!info) {
      ++report.skipped;
      continue;
    }
    paths[i] = info->fullPath();
    for (const auto& ref : info->references) {
      if (auto it = index.find(ref.hashPart()); it != index.end()) refs[i].push_back(it->second);
    }
    std::string file_name = info->url.substr(info->url.rfind('/') + 1);
    if (!files_done.count(file_name)) {
      auto src = store.narFilePath(file_name);
      if (!src) {
        report.errors.push_back(info->fullPath() + ": its nar file " + file_name +
                                " is missing from the store (narcache verify --repair marks it "
                                "deleted)");
        ++report.failed;
        continue;
      }
      NARCACHE_TRY(copyFile(*src, dir / "nar" / file_name));
      files_done.insert(file_name);
      ++report.nar_files;
    }
    if (auto ls = store.listing(h)) NARCACHE_TRY(writeText(dir / (h + ".ls"), *ls));
    copied[i] = true;
  }
  if (progress && isTty())
    std::fprintf(stderr, "\rexport: nar files %zu/%zu\n", hashes.size(), hashes.size());

  // 2. The narinfos, references first, each only when the narinfos of all its references were
  // written: the exported cache keeps the closure invariant at every moment, so an export that
  // fails or is interrupted half-way still leaves a cache Nix can use.
  std::vector<bool> written(hashes.size(), false);
  std::size_t done = 0;
  for (std::size_t i : referencesFirst(refs)) {
    if (progress && isTty())
      std::fprintf(stderr, "\rexport: narinfos %zu/%zu", done++, hashes.size());
    if (!copied[i]) continue;
    const std::string& h = hashes[i];
    auto lacking = std::find_if(refs[i].begin(), refs[i].end(),
                                [&](std::size_t r) { return r != i && !written[r]; });
    if (lacking != refs[i].end()) {
      const std::string& ref = paths[*lacking].empty() ? hashes[*lacking] : paths[*lacking];
      report.errors.push_back(paths[i] + ": left out, as its reference " + ref +
                              " could not be exported");
      ++report.failed;
      continue;
    }
    auto info = store.servable(h);  // again: not held in memory for the whole store
    if (!info || !files_done.count(info->url.substr(info->url.rfind('/') + 1))) {
      ++report.skipped;  // deleted or changed meanwhile
      continue;
    }
    NARCACHE_TRY(writeText(dir / (h + ".narinfo"), info->toString()));
    written[i] = true;
    ++report.items;
  }
  if (progress && isTty() && !hashes.empty()) std::fputc('\n', stderr);
  for (const auto& e : std::filesystem::directory_iterator(store.root() / "log", ec)) {
    if (!e.is_regular_file()) continue;
    NARCACHE_TRY(copyFile(e.path(), dir / "log" / e.path().filename()));
    ++report.logs;
  }
  return report;
}

}  // namespace narcache::narstore
