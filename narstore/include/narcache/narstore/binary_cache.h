#pragma once
// Nix binary caches as sources and destinations of a Store: `narcache import` and `export`.
//
// BinaryCacheReader is the narrow interface over a cache to copy from. openCacheUrl() knows
// file:///dir (a cache written by `nix copy --to file://…`); an HTTP reader plugs in behind the
// same interface. Readers are single-threaded objects.
//
// importCache copies every narinfo of the cache into the store in dependency order (references
// first), verifying each item exactly as Store::add does and, when trusted keys are given, its
// signature. It is resumable: items already valid in the store are skipped. A failing item
// (bad signature, corrupt file, missing references) is reported and the rest go on; items that
// need it then fail with "missing references".
// exportCache writes a Nix-compatible file binary cache (nix-cache-info, <hash>.narinfo,
// nar/<file>, <hash>.ls, log/<drv>) of every servable item; files are written to a temporary
// name and renamed, nar files hard-linked when on the same file system.

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/signature.h"
#include "narcache/narstore/store.h"

namespace narcache::narstore {

class BinaryCacheReader {
 public:
  virtual ~BinaryCacheReader() = default;
  virtual std::string describe() const = 0;  // the URL, for messages
  // The text of nix-cache-info (NotFound when absent).
  virtual Result<std::string> cacheInfo() = 0;
  // Hash parts of every narinfo (Unavailable when the cache cannot be listed).
  virtual Result<std::vector<std::string>> listNarInfos() = 0;
  // The text of <hash_part>.narinfo (NotFound when absent).
  virtual Result<std::string> narInfo(std::string_view hash_part) = 0;
  // Opens a file by its path relative to the cache root ("nar/<file>", "log/<drv>").
  virtual Result<std::unique_ptr<Source>> open(std::string_view relative) = 0;
  // Derivation base names of the build logs under log/ (empty when not listable).
  virtual Result<std::vector<std::string>> listLogs() = 0;
};

Result<std::unique_ptr<BinaryCacheReader>> openFileCache(const std::filesystem::path& dir);
// The directory of a file cache URL: "file://<dir>[?<Nix store parameters, ignored>]", or a plain
// path starting with '/'; nullopt for any other URL. For import and export alike.
std::optional<std::string> fileCacheDir(std::string_view url);
// "file:///dir" (or a plain absolute path), "http://host[:port]" or "https://…" (an HttpCache).
Result<std::unique_ptr<BinaryCacheReader>> openCacheUrl(std::string_view url);

// "StoreDir: /nix/store\n..." -> "/nix/store" (default when the field is absent).
std::string cacheInfoStoreDir(std::string_view cache_info);

struct ImportOptions {
  std::vector<PublicKey> trusted_keys;  // empty: signatures are not checked
  // Store paths (full, base names or hash parts) whose closures to copy; empty: the whole cache
  // (which must be listable: file:// caches are, HTTP caches are not).
  std::vector<std::string> paths;
  std::string uploader = "import";
  bool progress = false;  // "\rimport: n/m" on stderr
};

struct ImportReport {
  std::uint64_t added = 0;
  std::uint64_t skipped = 0;  // already valid in the store
  std::uint64_t failed = 0;
  std::uint64_t logs = 0;
  std::uint64_t logs_failed = 0;
  std::vector<std::string> errors;  // one line per failed item or log
};

Result<ImportReport> importCache(Store& store, BinaryCacheReader& cache,
                                 const ImportOptions& options);

struct ExportReport {
  std::uint64_t items = 0;
  std::uint64_t nar_files = 0;
  std::uint64_t logs = 0;
  std::uint64_t skipped = 0;  // valid but not servable (incomplete), or gone meanwhile
  std::uint64_t failed = 0;   // left out: nar file missing, or a reference left out
  std::vector<std::string> errors;
};

// Writes the servable items as a Nix file binary cache in `dir`: nar files and listings first,
// then the narinfos, references first, each only once all its references' are written (an
// export cut short still leaves a usable cache). An item whose nar file is missing from the
// store is left out with its referrers (`failed`, `errors`); an error writing `dir` is returned.
Result<ExportReport> exportCache(const Store& store, const std::filesystem::path& dir,
                                 bool progress = false);

}  // namespace narcache::narstore
