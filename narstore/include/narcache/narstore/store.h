#pragma once
// Store: the narcache store — narinfos and their reference graph indexed in LMDB
// (<root>/db/), compressed nar files under <root>/nar/, build logs under <root>/log/,
// temporary files under <root>/tmp/.
//
// Invariants kept here (see docs/architecture.md):
//  1. Closure: an item is *servable* only when it is valid and every item of its reference
//     closure is valid. Adding an item whose references are not all present is refused
//     (Conflict, listing the missing paths). Marking an item deleted makes every item whose
//     closure contains it unservable ("incomplete") until it is added again.
//  2. Integrity: an item is committed only after its nar file was verified against FileHash/
//     FileSize and its decompressed NAR against NarHash/NarSize.
//  4. Crash safety: files are written to tmp/, fsynced and renamed into nar/ before the narinfo
//     is committed in one LMDB write transaction; a crash leaves at worst orphan files.
// Identical compressed files are stored once (named by FileHash) and reference-counted.
//
// Thread-safety: a Store is safe for concurrent use from many threads (LMDB: one writer at a
// time, readers on snapshots). One Store per root per process.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/narinfo.h"

namespace narcache::narstore {

// Seconds since the Unix epoch; injectable so tests control time.
using Clock = std::function<std::int64_t()>;
std::int64_t systemClock();

struct StoreOptions {
  std::filesystem::path root;
  // Store dir of the items (only used by Store::init; open() reads it from the database).
  std::string store_dir = "/nix/store";
  Clock clock = systemClock;
  // Initial LMDB map size in bytes (0: 64 MiB). The map grows on demand whatever this is;
  // tests set it tiny to exercise growth.
  std::size_t initial_map_size = 0;
};

struct Tombstone {
  std::int64_t when = 0;
  std::string reason;
  std::string by;  // "operator", "gc", "verify", a user name...
};

enum class ItemState {
  kAvailable,   // valid and closure-complete: served
  kIncomplete,  // valid, but something in its closure is deleted: not served
  kDeleted,     // has a tombstone: not served
  kMissing,     // never known
};
std::string_view itemStateName(ItemState state);                 // "available", "incomplete", ...
std::optional<ItemState> parseItemState(std::string_view name);  // itemStateName's inverse

struct ItemStatus {
  ItemState state = ItemState::kMissing;
  std::optional<Tombstone> tombstone;  // kDeleted
  std::vector<StorePath> missing;      // kIncomplete: deleted items in its closure
};

struct StoredItem {
  NarInfo info;  // as stored: url "nar/<FileHash nix32>.nar<ext>", FileHash/FileSize set, Sigs kept
  std::int64_t created = 0;
  std::int64_t last_access = 0;  // 0 = never accessed (as last flushed)
  std::string uploader;
};

struct AddOptions {
  std::string uploader = "local";
};

struct AddResult {
  bool added = false;                  // false: an identical item (same NarHash) was already there
  NarInfo info;                        // the narinfo as stored
  std::optional<Tombstone> undeleted;  // it had been marked deleted: the tombstone it lifted
};

struct NarFile {
  std::string name;  // "<nix32 FileHash>.nar<ext>"
  std::uint64_t size = 0;
  Hash hash;
};

struct StoreStats {
  std::uint64_t items = 0;  // valid items (available or incomplete)
  std::uint64_t tombstones = 0;
  std::uint64_t nar_files = 0;
  std::uint64_t nar_bytes = 0;  // sum of nar file sizes (each shared file once)
  std::uint64_t nar_size = 0;   // sum of NarSize of valid items
};

// A named pin of store paths: GC keeps the whole closure of each path while the root is
// unexpired (Cuirass-style root TTL). Expired roots are kept (and listed as expired) until
// removed, but no longer count.
struct Root {
  std::string name;
  std::vector<StorePath> paths;
  std::int64_t created = 0;
  std::optional<std::int64_t> expires;  // absent: never expires
  bool expired(std::int64_t now) const { return expires && *expires <= now; }
};

// A compact snapshot of the reference graph and what GC needs per item, read in one read
// transaction (Store::scanGraph). Items are numbered 0..size()-1 in upload order (the store's
// item ids); nar files 0..file_size.size()-1 in order of first use. References are in CSR
// form: item i references
// ref_targets[ref_offsets[i] .. ref_offsets[i+1]) (indices; self-references excluded).
struct StoreGraph {
  std::int64_t scanned_at = 0;             // the store's clock when the snapshot was taken
  std::uint64_t roots_generation = 0;      // see Store::deleteUnreachable
  std::string hashes;                      // size() x 32 chars: item i's hash part at 32*i
  std::vector<std::int64_t> created;       // per item
  std::vector<std::int64_t> last_access;   // per item, as flushed (0: never)
  std::vector<std::uint64_t> nar_size;     // per item
  std::vector<std::uint32_t> file;         // per item: index of its nar file
  std::vector<std::uint64_t> ref_offsets;  // size()+1 entries
  std::vector<std::uint32_t> ref_targets;
  std::vector<std::uint64_t> file_size;      // per nar file
  std::vector<std::uint32_t> file_refcount;  // per nar file: valid items using it
  std::vector<Root> roots;                   // every root, expired ones too

  std::size_t size() const { return created.size(); }
  std::string_view hashPart(std::size_t i) const {
    return std::string_view(hashes).substr(32 * i, 32);
  }
  // Index of an item by hash part, or nullopt: one pass over all items (O(size())).
  std::optional<std::uint32_t> find(std::string_view hash_part) const;
  // The indices of many items at once (nullopt: not an item), in one pass over all items.
  std::vector<std::optional<std::uint32_t>> findAll(
      const std::vector<std::string_view>& hash_parts) const;
};

// One item the collector wants to delete, as the plan saw it.
struct GcCandidate {
  std::string hash_part;
  std::int64_t created = 0;      // as scanned: a re-added item (other created) is not deleted
  std::int64_t last_access = 0;  // as scanned: a later access keeps the item
};

struct GcBatchResult {
  std::vector<std::string> deleted;      // hash parts removed
  std::vector<std::string> kept;         // hash parts the re-check kept (accessed, referenced...)
  std::uint64_t nar_size = 0;            // NarSize of the deleted items
  std::uint64_t files_unreferenced = 0;  // nar files that lost their last user
  std::uint64_t file_bytes = 0;          // their sizes (unlinked later, see unlinkNarFiles)
};

struct UnlinkResult {
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  std::uint64_t pending = 0;  // still waiting for their grace period
  // Files whose unlink failed (EACCES, EROFS...): they stay pending for the next run, and the
  // others go on. first_error names the first.
  std::uint64_t failed = 0;
  std::string first_error;
};

class Store {
 public:
  // Creates a new store at options.root (the directory may exist but must hold no store).
  static Result<std::unique_ptr<Store>> init(const StoreOptions& options);
  // Opens an existing store; NotFound with a hint to run `narcache store init` otherwise.
  static Result<std::unique_ptr<Store>> open(const StoreOptions& options);
  virtual ~Store() = default;

  virtual const std::string& storeDir() const = 0;
  virtual const std::filesystem::path& root() const = 0;

  // --- Adding ---------------------------------------------------------------------------
  // Stores a compressed nar file uploaded under `file_name` ("<nix32 sha256>.nar<ext>", as Nix's
  // `PUT /nar/...`): streams `body` to tmp/ while hashing, refuses it (Corruption) if its
  // SHA-256 is not the one in the name, then fsyncs and renames it into nar/. Idempotent.
  // The file is not served until a narinfo naming it is added; until then it is unreferenced,
  // as a deleted item's file (pending_unlink from now: unlinkNarFiles removes it after the nar
  // grace if no narinfo claims it; uploading it again restarts that grace).
  virtual Result<NarFile> putNarFile(std::string_view file_name, Source& body) = 0;

  // Commits a narinfo whose nar file was stored by putNarFile (info.url = "nar/<file_name>").
  // Verifies FileHash/FileSize against the file and, decompressing it, NarHash/NarSize; checks
  // the closure invariant; re-adding an item with the same NarHash is a no-op (added=false),
  // with a different NarHash it is refused (Conflict). Signatures in `info` are kept.
  virtual Result<AddResult> addNarInfo(const NarInfo& info, const AddOptions& options = {}) = 0;

  // Both steps at once: `file` holds the compressed bytes in info.compression. FileHash,
  // FileSize and URL of `info` may be absent; they are computed (and checked when present).
  // A file this call stored and the item did not take is removed again (unless a concurrent
  // putNarFile of the same file was told it is there: then it is pending, for GC).
  virtual Result<AddResult> add(const NarInfo& info, Source& file,
                                const AddOptions& options = {}) = 0;

  // --- Reading --------------------------------------------------------------------------
  // The narinfo to serve for a hash part, or NotFound when the item is missing, deleted or
  // incomplete (invariant 1). Never touches the disk beyond LMDB's mapped pages.
  virtual Result<NarInfo> servable(std::string_view hash_part) const = 0;
  virtual Result<StoredItem> get(std::string_view hash_part) const = 0;  // any valid item
  virtual ItemStatus status(std::string_view hash_part) const = 0;
  // The store-path "really available?" query for a batch (one read transaction). An error
  // when the store cannot be read: never "missing" for what could not be looked at.
  virtual Result<std::vector<ItemStatus>> available(const std::vector<StorePath>& paths) const = 0;
  virtual Result<std::vector<StorePath>> referrers(std::string_view hash_part) const = 0;
  // Sum of NarSize over the item's closure, and the closure's size in items.
  virtual Result<std::pair<std::uint64_t, std::uint64_t>> closureSize(
      std::string_view hash_part) const = 0;
  // The .ls listing JSON of a valid item (computed when it was added).
  virtual Result<std::string> listing(std::string_view hash_part) const = 0;
  // Path of a stored nar file by name, NotFound if absent or the name is not a nar file name
  // (no path tricks: only "<nix32>.nar<ext>" is accepted).
  virtual Result<std::filesystem::path> narFilePath(std::string_view file_name) const = 0;
  // Visits every valid item in hash order (one read snapshot); stop by returning false.
  virtual Status forEachItem(const std::function<bool(const StoredItem&)>& visit) const = 0;
  virtual StoreStats stats() const = 0;  // O(1): counters kept in the database

  // --- Logs -----------------------------------------------------------------------------
  // Build logs by derivation base name ("<hash>-<name>.drv"); stored as uploaded (plain text).
  virtual Status putLog(std::string_view drv_base_name, Source& body) = 0;
  virtual Result<std::filesystem::path> logPath(std::string_view drv_base_name) const = 0;

  // --- Access times ---------------------------------------------------------------------
  // Records an access in memory (cheap, thread-safe); flushAccessTimes() writes all pending
  // ones in one write transaction. The server calls it every few seconds and at shutdown.
  virtual void recordAccess(std::string_view hash_part) = 0;
  virtual Status flushAccessTimes() = 0;

  // --- Deletion -------------------------------------------------------------------------
  // Tombstones the item: it is no longer served, and every item whose closure contains it
  // becomes incomplete. Adding it again (same NarHash) restores all of them.
  // A nar file that loses its last user (markDeleted, deleteUnreachable) is recorded as
  // "unreferenced since <now>" (table pending_unlink) and unlinked later by unlinkNarFiles.
  virtual Status markDeleted(const StorePath& path, const Tombstone& why) = 0;

  // --- Roots (garbage collection) -------------------------------------------------------
  // Adds or replaces the root `root.name` (a non-empty name without '/' or whitespace). Every
  // path must be a valid item (NotFound otherwise, naming it). created is set to now when 0.
  virtual Status addRoot(const Root& root) = 0;
  virtual Result<std::vector<Root>> listRoots() const = 0;  // by name
  virtual Status removeRoot(std::string_view name) = 0;     // NotFound when absent

  // --- Garbage collection primitives ------------------------------------------------------
  // The whole graph in one read transaction (see StoreGraph): reads the compact per-item GC
  // table, the refs table, atimes, files and roots; never the narinfo texts.
  virtual Result<StoreGraph> scanGraph() const = 0;

  // Deletes, in ONE write transaction, those of `batch` that are still unreachable (invariant
  // 3). Re-checked inside the transaction for each candidate: it is a valid item with the
  // scanned `created`; it was not accessed after `last_access` (flushed atimes and this
  // process's pending ones); and every current referrer is itself deleted in this same
  // transaction (a fixpoint over the batch, so a referrer that fails its re-check keeps what
  // it references). Roots: when a root was added after the scan (`roots_generation` differs)
  // nothing is deleted and Conflict comes back: plan again.
  // A deleted item simply disappears (state "missing"): GC writes no tombstone, because
  // nothing live referenced it, so no closure becomes incomplete. Its nar file's refcount is
  // decremented; a file that loses its last user is recorded in pending_unlink.
  // Callers order batches referrers-first; an item whose referrer is in a later batch is kept.
  virtual Result<GcBatchResult> deleteUnreachable(const std::vector<GcCandidate>& batch,
                                                  std::uint64_t roots_generation) = 0;

  // Unlinks nar files that have had no user for at least `grace_seconds` (pending_unlink), at
  // most `max_files` per call, each in a write transaction that re-checks that no item uses it.
  // A file committed again meanwhile is no longer pending; one uploaded again (putNarFile) is
  // pending from that upload on.
  virtual Result<UnlinkResult> unlinkNarFiles(std::int64_t grace_seconds,
                                              std::size_t max_files) = 0;

  // --- Maintenance ----------------------------------------------------------------------
  // Frees the database reader slots of processes that died while reading (a CLI command killed
  // with kill -9 or Ctrl-C): a dead reader's snapshot pins old pages, so until its slot is
  // freed every write takes new pages and the data file grows without bound. Done at open;
  // a long-running process (serve) calls this every few seconds. Returns how many were freed.
  virtual Result<std::size_t> clearStaleReaders() = 0;
};

}  // namespace narcache::narstore
