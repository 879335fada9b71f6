#pragma once
// LmdbStore: the LMDB + directory implementation of Store (see store.h), and the record
// encodings of its tables. Private to narstore; verify.cc and the import/export code use it.
//
// Tables (LMDB named databases in <root>/db/):
//   meta        "schema_version", "store_dir", "count:*" -> u64 counters kept in every write
//   items       hash part -> ItemRecord (created, NarSize, uploader, base name, narinfo text)
//   refs        hash part -> hash parts it references (dupsort, fixed 32 bytes; no self-refs)
//   referrers   hash part -> hash parts of valid items referencing it (dupsort, fixed 32)
//   atime       hash part -> i64 last access (as flushed)
//   tombstones  hash part -> TombstoneRecord
//   incomplete  hash part -> hash parts of deleted items in its closure (dupsort, fixed 32);
//               present exactly for valid items whose closure holds a deleted item
//   files       nar file name -> FileRecord (refcount, size, file id): how many valid items use
//               it; the id (from meta "gc:next_file_id") names the file in gcnode
//   listings    hash part -> .ls JSON
//   roots       name -> RootRecord (GC roots: paths and optional expiry)
//   itemid      hash part -> item id (4 bytes, big-endian): exactly the valid items. Ids come
//               from meta "gc:next_item_id" and are never reused (a re-upload gets a new one)
//   gcnode      item id -> GcNodeRecord (hash part, created, last access, NarSize, nar file
//               size and id; fixed 68 bytes): exactly the valid items, in upload order
//   gcrefs      item id -> ids of the valid items it references (dupsort, fixed 4 bytes; no
//               self-refs); the refs table restricted to valid targets, as numbers
//               gcnode and gcrefs are everything the GC graph scan reads besides roots: a few
//               dozen bytes per item and 4 per reference, never a narinfo or a hash lookup
//   pending_unlink  nar file name -> i64 time since which no item uses it: it lost its last
//               user, or was uploaded (or uploaded again) and no narinfo has claimed it yet;
//               the collector unlinks it after the nar grace, a commit that uses it cancels
//               that. Names absent from `files` only
//   meta "gc:roots_generation" counts addRoot calls (plans made before a new root are stale)
// Schema versions: 1 had a hash-keyed "gcmeta" table instead of itemid/gcnode/gcrefs and file
// records without ids; openStore migrates a version-1 store in one write transaction.
// Every invariant between the tables is kept inside the one write transaction that changes
// them; verify.cc recomputes all of them from items.

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lmdb_env.h"
#include "nar_file_name.h"
#include "narcache/narinfo/compression.h"
#include "narcache/narstore/store.h"
#include "pending_access.h"

namespace narcache::narstore {

inline constexpr std::uint64_t kSchemaVersion = 2;

struct ItemRecord {
  std::int64_t created = 0;
  std::uint64_t nar_size = 0;
  std::string uploader;
  std::string base_name;
  std::string narinfo;  // NarInfo::toString() of the stored narinfo

  std::string encode() const;
  static std::optional<ItemRecord> decode(std::string_view data);
};

struct TombstoneRecord {
  Tombstone tombstone;
  std::string base_name;
  std::string nar_hash;

  std::string encode() const;
  static std::optional<TombstoneRecord> decode(std::string_view data);
};

// The GC graph's view of one valid item (gcnode value). Fixed layout, little-endian:
// hash part [0,32), created [32,40), last access [40,48) (0: never; mirrors atime), NarSize
// [48,56), nar file size [56,64), nar file id [64,68).
struct GcNodeRecord {
  static constexpr std::size_t kSize = 68;
  static constexpr std::size_t kLastAccessOffset = 40;
  std::string hash_part;
  std::int64_t created = 0;
  std::int64_t last_access = 0;
  std::uint64_t nar_size = 0;
  std::uint64_t file_size = 0;
  std::uint32_t file_id = 0;

  std::string encode() const;
  static std::optional<GcNodeRecord> decode(std::string_view data);
};

struct RootRecord {
  std::int64_t created = 0;
  std::optional<std::int64_t> expires;
  std::vector<std::string> base_names;

  std::string encode() const;
  static std::optional<RootRecord> decode(std::string_view data);
};

struct FileRecord {
  std::uint64_t refcount = 0;
  std::uint64_t size = 0;
  std::uint32_t id = 0;  // 0 only in schema-1 records (16 bytes, without the id)

  std::string encode() const;
  static std::optional<FileRecord> decode(std::string_view data);
};

std::string encodeU64(std::uint64_t v);
std::uint64_t decodeU64(std::string_view data);  // 0 when malformed
// Item and file ids: 4 bytes big-endian, so that LMDB's byte order is numeric order.
std::string encodeId(std::uint32_t id);
std::uint32_t decodeId(std::string_view data);  // 0 when malformed

// What reading a nar file back found.
struct NarFileCheck {
  Hash file_hash;
  std::uint64_t file_size = 0;
  Hash nar_hash;
  std::uint64_t nar_size = 0;
  std::string listing;  // .ls JSON (only when asked for)
};
// Reads the compressed file at `path`, hashing it, decompressing it and parsing the NAR.
Result<NarFileCheck> checkNarFile(const std::filesystem::path& path, Compression compression,
                                  bool want_listing);

struct Counters {
  static constexpr std::string_view kItems = "count:items";
  static constexpr std::string_view kTombstones = "count:tombstones";
  static constexpr std::string_view kNarFiles = "count:nar_files";
  static constexpr std::string_view kNarBytes = "count:nar_bytes";
  static constexpr std::string_view kNarSize = "count:nar_size";
  static constexpr std::string_view kRootsGeneration = "gc:roots_generation";
  static constexpr std::string_view kNextItemId = "gc:next_item_id";  // last id handed out
  static constexpr std::string_view kNextFileId = "gc:next_file_id";
};

// --- Helpers shared by the store's source files -----------------------------------------

// Runs `fn`, turning LMDB and other exceptions into Errors at the Store's public API.
template <typename F>
auto guard(F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e));
  } catch (const std::bad_alloc&) {
    return fail(ErrorCode::kResourceExhausted, "out of memory");
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal, e.what());
  }
}

std::uint64_t counter(const lmdb::Txn& txn, lmdb::Dbi meta, std::string_view key);
void addCounter(lmdb::WriteTxn& txn, lmdb::Dbi meta, std::string_view key, std::int64_t delta);
// All values of a dupsort key.
std::vector<std::string> dups(const lmdb::Txn& txn, lmdb::Dbi dbi, std::string_view key);
// errno -> IoError (ResourceExhausted for a full disk or quota) with context.
Error ioError(const std::string& what, int err);

class LmdbStore final : public Store {
 public:
  struct Tables {
    lmdb::Dbi meta, items, refs, referrers, atime, tombstones, incomplete, files, listings, roots,
        itemid, gcnode, gcrefs, pending_unlink;
  };

  static Result<std::unique_ptr<LmdbStore>> openStore(const StoreOptions& options, bool create);

  const std::string& storeDir() const override { return store_dir_; }
  const std::filesystem::path& root() const override { return root_; }

  Result<NarFile> putNarFile(std::string_view file_name, Source& body) override;
  Result<AddResult> addNarInfo(const NarInfo& info, const AddOptions& options) override;
  Result<AddResult> add(const NarInfo& info, Source& file, const AddOptions& options) override;

  Result<NarInfo> servable(std::string_view hash_part) const override;
  Result<StoredItem> get(std::string_view hash_part) const override;
  ItemStatus status(std::string_view hash_part) const override;
  Result<std::vector<ItemStatus>> available(const std::vector<StorePath>& paths) const override;
  Result<std::vector<StorePath>> referrers(std::string_view hash_part) const override;
  Result<std::pair<std::uint64_t, std::uint64_t>> closureSize(
      std::string_view hash_part) const override;
  Result<std::string> listing(std::string_view hash_part) const override;
  Result<std::filesystem::path> narFilePath(std::string_view file_name) const override;
  Status forEachItem(const std::function<bool(const StoredItem&)>& visit) const override;
  StoreStats stats() const override;

  Status putLog(std::string_view drv_base_name, Source& body) override;
  Result<std::filesystem::path> logPath(std::string_view drv_base_name) const override;

  void recordAccess(std::string_view hash_part) override;
  Status flushAccessTimes() override;

  Status markDeleted(const StorePath& path, const Tombstone& why) override;

  Status addRoot(const Root& root) override;
  Result<std::vector<Root>> listRoots() const override;
  Status removeRoot(std::string_view name) override;
  Result<StoreGraph> scanGraph() const override;
  Result<GcBatchResult> deleteUnreachable(const std::vector<GcCandidate>& batch,
                                          std::uint64_t roots_generation) override;
  Result<UnlinkResult> unlinkNarFiles(std::int64_t grace_seconds, std::size_t max_files) override;
  Result<std::size_t> clearStaleReaders() override;

  // Commits trusted narinfos (FileHash/FileSize set, URL nar/<file>) without reading their
  // files, many per write transaction; the closure invariant is still checked. For benchmarks
  // and tests (see bulk_load.h).
  Result<std::uint64_t> addTrusted(const std::vector<NarInfo>& infos, std::int64_t created);

  // --- For verify and import/export (narstore-internal) ---------------------------------
  lmdb::Env& env() const { return *env_; }
  const Tables& tables() const { return tables_; }
  std::int64_t now() const { return clock_(); }
  std::filesystem::path narDir() const { return root_ / "nar"; }
  std::filesystem::path tmpDir() const { return root_ / "tmp"; }
  std::filesystem::path logDir() const { return root_ / "log"; }
  // Unlinks nar/<name> when no valid item uses it (checked in a write transaction, so no
  // concurrent commit can start using it meanwhile). Returns whether it was removed.
  Result<bool> removeUnreferencedNarFile(const std::string& name);
  // The same, but leaves a file that awaits its unlink (pending_unlink): one that add() stored,
  // which a concurrent PUT of the same file has been told is there since.
  Result<bool> removeUnclaimedNarFile(const std::string& name);
  // verify --repair of a nar file found missing or corrupt, acting only on what has not changed
  // since verify looked: in ONE write transaction, and only when `unchanged()` (called inside
  // it) says the file is still what verify judged, tombstones (`why`) those of `users` (hash
  // part and item id as verify's snapshot saw them) that are still that same valid item (same
  // id: neither deleted nor deleted and uploaded again since). Once no item uses the file, a
  // corrupt one (`corrupt`) is unlinked at once, and a missing one leaves pending_unlink.
  // Returns the hash parts it tombstoned; the others changed meanwhile and were left alone.
  Result<std::vector<std::string>> repairNarFile(
      const std::string& file_name, const std::vector<std::pair<std::string, std::uint32_t>>& users,
      const Tombstone& why, bool corrupt, const std::function<bool()>& unchanged);
  Result<NarInfo> decodeNarInfo(const ItemRecord& record) const;

 private:
  Result<bool> removeNarFileIf(const std::string& name, bool unless_pending);
  LmdbStore() = default;
  struct TmpFile {
    std::filesystem::path path;
    Hash hash;
    std::uint64_t size = 0;
  };
  Result<TmpFile> writeTmp(Source& body) const;
  // Links tmp into nar/<name> (no replace); returns whether this call created it. A file that
  // was there already and no item uses has its nar grace restarted (markUploaded).
  // `unclaimed`: a file this installs is unreferenced from now on (markUploaded), for a
  // putNarFile whose narinfo may never come; add() removes its own file itself instead.
  Result<bool> installNarFile(const TmpFile& tmp, const std::string& name, bool unclaimed);
  // Schema 1 -> 2 in one write transaction: item and file ids, gcnode and gcrefs from items,
  // refs, atime and files; drops gcmeta. A no-op for a version-2 store.
  Status migrateToItemIds();
  // The id of a valid item (itemid), or nullopt.
  std::optional<std::uint32_t> itemId(const lmdb::Txn& txn, std::string_view hash_part) const;
  Result<AddResult> commitItem(const NarInfo& stored, const ItemRecord& record,
                               const std::string& listing, const std::string& file_name);
  // The body of commitItem inside a given write transaction (check_file: stat the nar file).
  Result<AddResult> commitInTxn(lmdb::WriteTxn& txn, const NarInfo& stored,
                                const ItemRecord& record, const std::string& listing,
                                const std::string& file_name, bool check_file);
  // Removes a valid item's rows (items, refs, referrers entries, listing, incomplete, atime,
  // itemid, gcnode, gcrefs, and its valid referrers' gcrefs edges to it), its counters and one use
  // of its nar file (pending_unlink when it was the last). Returns the size of its nar file when
  // that lost its last user (nullopt: still used).
  std::optional<std::uint64_t> removeItemRows(lmdb::WriteTxn& txn, const std::string& h,
                                              const NarInfo& info);
  // The body of markDeleted inside a given write transaction, for the valid item `h` with this
  // stored narinfo: removes its rows (removeItemRows), writes its tombstone and makes every
  // item whose closure contains it incomplete.
  void tombstoneInTxn(lmdb::WriteTxn& txn, const std::string& h, const NarInfo& info,
                      const Tombstone& why);
  // A nar file was just uploaded (putNarFile, add): unless an item uses it, it is unreferenced
  // from now on (pending_unlink, with the time reset to now for a file uploaded again), so one
  // whose narinfo never comes or is refused goes after the nar grace instead of staying forever.
  Status markUploaded(const std::string& name);
  // The state of the item with this hash part; with `base_name`, of the item of that name only
  // (another name under the same hash is missing).
  ItemStatus statusIn(const lmdb::Txn& txn, std::string_view hash_part,
                      std::string_view base_name = {}) const;

  std::filesystem::path root_;
  std::string store_dir_;
  Clock clock_;
  std::shared_ptr<lmdb::Env> env_;
  Tables tables_;
  mutable std::atomic<std::uint64_t> tmp_counter_{0};
  PendingAccess pending_access_;
};

}  // namespace narcache::narstore
