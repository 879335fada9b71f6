// LmdbStore: see store_impl.h for the tables and store.h for the contract.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "narcache/narinfo/hash.h"
#include "narcache/narinfo/nar.h"
#include "store_impl.h"

namespace narcache::narstore {
namespace {

constexpr std::size_t kDefaultMapSize = std::size_t{64} << 20;
constexpr std::size_t kChunk = 1 << 20;
constexpr std::uint64_t kFreeSpaceReserve = 64ULL << 20;  // see writeTmp

std::string errnoMessage(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

Status fsyncDir(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(ioError("open " + dir.string(), errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return fail(ioError("fsync " + dir.string(), err));
  return {};
}

// A Source that copies everything read through it into a Sink.
class TeeSource final : public Source {
 public:
  TeeSource(Source& in, Sink& out) : in_(in), out_(out) {}
  Result<std::size_t> read(MutableBytes out) override {
    auto n = in_.read(out);
    if (!n) return n;
    NARCACHE_TRY(out_.write(Bytes(out.data(), *n)));
    return n;
  }

 private:
  Source& in_;
  Sink& out_;
};

Status drain(Source& source) {
  std::vector<std::byte> buf(64 * 1024);
  for (;;) {
    auto n = source.read(buf);
    if (!n) return fail(n.error());
    if (*n == 0) return {};
  }
}

// Every item that has `start` in its closure (excluding `start` itself), following referrers.
std::vector<std::string> transitiveReferrers(const lmdb::Txn& txn, lmdb::Dbi referrers,
                                             const std::string& start) {
  std::unordered_set<std::string> seen{start};
  std::vector<std::string> order;
  std::deque<std::string> queue{start};
  while (!queue.empty()) {
    std::string h = std::move(queue.front());
    queue.pop_front();
    for (std::string& r : dups(txn, referrers, h)) {
      if (seen.insert(r).second) {
        order.push_back(r);
        queue.push_back(std::move(r));
      }
    }
  }
  return order;
}

// Recomputes the incomplete sets of `affected` (all other items' sets are right): for each,
// the union over its references of {r} for a deleted r, else r's own set. Post-order DFS over
// references restricted to `affected`, so a reference's set is final before its referrers'.
void recomputeIncomplete(lmdb::WriteTxn& txn, const LmdbStore::Tables& t,
                         const std::vector<std::string>& affected_list) {
  std::unordered_set<std::string> affected(affected_list.begin(), affected_list.end());
  std::unordered_map<std::string, std::set<std::string>> done;
  for (const std::string& root : affected_list) {
    if (done.count(root) != 0) continue;
    std::unordered_set<std::string> on_stack{root};
    std::vector<std::pair<std::string, std::vector<std::string>>> stack;
    stack.emplace_back(root, dups(txn, t.refs, root));
    while (!stack.empty()) {
      auto& top = stack.back();
      bool pushed = false;
      for (const auto& r : top.second) {
        if (affected.count(r) != 0 && done.count(r) == 0 && on_stack.count(r) == 0) {
          std::string next = r;  // copied: emplace_back may move what `r` refers to
          on_stack.insert(next);
          std::vector<std::string> refs = dups(txn, t.refs, next);
          stack.emplace_back(std::move(next), std::move(refs));
          pushed = true;
          break;
        }
      }
      if (pushed) continue;
      std::set<std::string> deleted;
      for (const auto& r : stack.back().second) {
        if (!txn.has(t.items, r)) {
          if (txn.has(t.tombstones, r)) deleted.insert(r);
        } else if (auto it = done.find(r); it != done.end()) {
          deleted.insert(it->second.begin(), it->second.end());
        } else {
          for (auto& d : dups(txn, t.incomplete, r)) deleted.insert(std::move(d));
        }
      }
      std::string h = stack.back().first;
      on_stack.erase(h);
      stack.pop_back();
      txn.del(t.incomplete, h);
      for (const auto& d : deleted) txn.put(t.incomplete, h, d, MDB_NODUPDATA);
      done.emplace(std::move(h), std::move(deleted));
    }
  }
}

std::string missingList(const std::vector<std::string>& paths) {
  std::string out;
  for (const auto& p : paths) out += (out.empty() ? "" : ", ") + p;
  return out;
}

}  // namespace

std::uint64_t counter(const lmdb::Txn& txn, lmdb::Dbi meta, std::string_view key) {
  auto v = txn.get(meta, key);
  return v ? decodeU64(*v) : 0;
}

void addCounter(lmdb::WriteTxn& txn, lmdb::Dbi meta, std::string_view key, std::int64_t delta) {
  std::uint64_t v = counter(txn, meta, key);
  v = delta < 0 && static_cast<std::uint64_t>(-delta) > v ? 0 : v + delta;
  txn.put(meta, key, encodeU64(v));
}

std::vector<std::string> dups(const lmdb::Txn& txn, lmdb::Dbi dbi, std::string_view key) {
  std::vector<std::string> out;
  lmdb::Cursor cursor(txn, dbi);
  for (auto e = cursor.find(key); e; e = cursor.nextDup()) out.emplace_back(e->second);
  return out;
}

Error ioError(const std::string& what, int err) {
  return Error(err == ENOSPC || err == EDQUOT ? ErrorCode::kResourceExhausted : ErrorCode::kIoError,
               errnoMessage(what, err));
}

std::int64_t systemClock() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view itemStateName(ItemState state) {
  switch (state) {
    case ItemState::kAvailable: return "available";
    case ItemState::kIncomplete: return "incomplete";
    case ItemState::kDeleted: return "deleted";
    case ItemState::kMissing: return "missing";
  }
  return "unknown";
}

std::optional<ItemState> parseItemState(std::string_view name) {
  for (auto s :
       {ItemState::kAvailable, ItemState::kIncomplete, ItemState::kDeleted, ItemState::kMissing}) {
    if (itemStateName(s) == name) return s;
  }
  return std::nullopt;
}

Result<std::unique_ptr<Store>> Store::init(const StoreOptions& options) {
  auto s = LmdbStore::openStore(options, true);
  if (!s) return fail(s.error());
  return std::unique_ptr<Store>(std::move(*s));
}

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options) {
  auto s = LmdbStore::openStore(options, false);
  if (!s) return fail(s.error());
  return std::unique_ptr<Store>(std::move(*s));
}

// --- Nar files --------------------------------------------------------------------------

Result<NarFileCheck> checkNarFile(const std::filesystem::path& path, Compression compression,
                                  bool want_listing) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    int err = errno;
    if (err == ENOENT)
      return fail(ErrorCode::kNotFound, "nar file " + path.string() + " is missing");
    return fail(ioError("open " + path.string(), err));
  }
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  FdSource raw(fd.get());
  Hasher file_hasher;
  TeeSource file_tee(raw, file_hasher);
  auto decompressor = makeDecompressor(compression, file_tee);
  if (!decompressor) return fail(decompressor.error());
  Hasher nar_hasher;
  TeeSource nar_tee(**decompressor, nar_hasher);
  NarFileCheck check;
  if (want_listing) {
    auto listing = narListing(nar_tee);
    if (!listing) return fail(listing.error().withContext("NAR"));
    check.listing = std::move(*listing);
  } else {
    auto size = validateNar(nar_tee);
    if (!size) return fail(size.error().withContext("NAR"));
  }
  NARCACHE_TRY(drain(nar_tee));
  NARCACHE_TRY(drain(file_tee));
  check.file_hash = file_hasher.digest();
  check.file_size = file_hasher.size();
  check.nar_hash = nar_hasher.digest();
  check.nar_size = nar_hasher.size();
  return check;
}

Result<LmdbStore::TmpFile> LmdbStore::writeTmp(Source& body) const {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  TmpFile tmp;
  tmp.path = tmpDir() / (std::to_string(::getpid()) + "-" + std::to_string(tmp_counter_++) + "-" +
                         std::to_string(rng() % 1000000000) + ".tmp");
  Fd fd(::open(tmp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) return fail(ioError("create " + tmp.path.string(), errno));
  auto cleanup = [&](Error e) {
    std::error_code ec;
    std::filesystem::remove(tmp.path, ec);
    return fail(std::move(e));
  };
  // Uploads leave a reserve free on the store's file system (1% of it, at most 64 MiB), so that
  // the database can still commit, GC included, when uploads have filled the rest: a store on
  // a disk filled to the last byte could not even delete.
  struct statvfs fs_info {};
  std::uint64_t reserve = 0;
  if (::fstatvfs(fd.get(), &fs_info) == 0) {
    reserve = std::min<std::uint64_t>(kFreeSpaceReserve,
                                      std::uint64_t(fs_info.f_blocks) * fs_info.f_frsize / 100);
  }
  Hasher hasher;
  FdSink out(fd.get());
  std::vector<std::byte> buf(kChunk);
  for (;;) {
    auto n = body.read(buf);
    if (!n) return cleanup(n.error());
    if (*n == 0) break;
    if (reserve != 0 && ::fstatvfs(fd.get(), &fs_info) == 0) {
      const std::uint64_t free_bytes = std::uint64_t(fs_info.f_bavail) * fs_info.f_frsize;
      if (free_bytes < reserve + *n) {
        return cleanup(Error(
            ErrorCode::kResourceExhausted,
            "the store's file system is full: " + std::to_string(free_bytes >> 10) + " KiB free, " +
                std::to_string(reserve >> 10) + " KiB kept for the database and GC"));
      }
    }
    Bytes chunk(buf.data(), *n);
    if (auto w = hasher.write(chunk); !w) return cleanup(w.error());
    if (auto w = out.write(chunk); !w) return cleanup(w.error().withContext(tmp.path.string()));
  }
  if (::fsync(fd.get()) != 0) return cleanup(ioError("fsync " + tmp.path.string(), errno));
  if (::close(fd.release()) != 0) return cleanup(ioError("close " + tmp.path.string(), errno));
  tmp.hash = hasher.digest();
  tmp.size = hasher.size();
  return tmp;
}

Result<bool> LmdbStore::installNarFile(const TmpFile& tmp, const std::string& name,
                                       bool unclaimed) {
  std::filesystem::path dest = narDir() / name;
  bool created = true;
  for (int attempt = 0;; ++attempt) {
    if (::link(tmp.path.c_str(), dest.c_str()) == 0) break;
    int err = errno;
    if (err != EEXIST || attempt == 3) {
      ::unlink(tmp.path.c_str());
      return fail(ioError("link " + dest.string(), err));
    }
    // Already there: maybe unreferenced and awaiting its unlink. Uploading it again restarts
    // its grace (in a write transaction, serialised with the collector's unlinks); if the
    // collector unlinked it just before, link ours again.
    if (auto marked = markUploaded(name); !marked) {
      ::unlink(tmp.path.c_str());
      return fail(marked.error());
    }
    struct stat st;
    if (::stat(dest.c_str(), &st) == 0) {
      created = false;
      break;
    }
  }
  ::unlink(tmp.path.c_str());
  if (created) NARCACHE_TRY(fsyncDir(narDir()));
  if (created && unclaimed) {
    // Not in any table yet: from now on it is unreferenced until a narinfo claims it.
    if (auto marked = markUploaded(name); !marked) {
      (void)removeUnreferencedNarFile(name);
      return fail(marked.error());
    }
  }
  return created;
}

Result<NarFile> LmdbStore::putNarFile(std::string_view file_name, Source& body) {
  return guard([&]() -> Result<NarFile> {
    auto name = parseNarFileName(file_name);
    if (!name) return fail(name.error());
    auto tmp = writeTmp(body);
    if (!tmp) return fail(tmp.error());
    if (!(tmp->hash == name->hash)) {
      ::unlink(tmp->path.c_str());
      return fail(ErrorCode::kCorruption, "nar file " + std::string(file_name) +
                                              ": content hashes to " + tmp->hash.toString() +
                                              ", not to the hash in its name");
    }
    auto created = installNarFile(*tmp, std::string(file_name), true);
    if (!created) return fail(created.error());
    return NarFile{std::string(file_name), tmp->size, tmp->hash};
  });
}

Result<bool> LmdbStore::removeUnreferencedNarFile(const std::string& name) {
  return removeNarFileIf(name, false);
}

Result<bool> LmdbStore::removeUnclaimedNarFile(const std::string& name) {
  return removeNarFileIf(name, true);
}

Result<bool> LmdbStore::removeNarFileIf(const std::string& name, bool unless_pending) {
  return guard([&]() -> Result<bool> {
    return env_->write<bool>([&](lmdb::WriteTxn& txn) -> Result<bool> {
      if (txn.has(tables_.files, name)) return false;
      if (unless_pending && txn.has(tables_.pending_unlink, name)) return false;
      txn.del(tables_.pending_unlink, name);
      std::filesystem::path p = narDir() / name;
      if (::unlink(p.c_str()) != 0) {
        if (errno == ENOENT) return false;
        return fail(ioError("unlink " + p.string(), errno));
      }
      return true;
    });
  });
}

// --- Adding -----------------------------------------------------------------------------

Result<NarInfo> LmdbStore::decodeNarInfo(const ItemRecord& record) const {
  return NarInfo::parse(record.narinfo, record.base_name, store_dir_);
}

Result<AddResult> LmdbStore::addNarInfo(const NarInfo& info, const AddOptions& options) {
  return guard([&]() -> Result<AddResult> {
    const std::string& h = info.path.hashPart();
    if (info.store_dir != store_dir_) {
      return fail(ErrorCode::kInvalidArgument,
                  info.fullPath() + ": not in the store dir " + store_dir_ + " of this cache");
    }
    auto method = parseCompression(info.compression);
    if (!method) return fail(method.error().withContext(info.path.baseName()));
    if (info.url.rfind("nar/", 0) != 0) {
      return fail(ErrorCode::kInvalidArgument,
                  info.path.baseName() + ": URL '" + info.url + "' is not nar/<file>");
    }
    std::string file_name = info.url.substr(4);
    auto name = parseNarFileName(file_name);
    if (!name) return fail(name.error().withContext(info.path.baseName()));
    if (name->compression != *method) {
      return fail(ErrorCode::kInvalidArgument,
                  info.path.baseName() + ": URL '" + info.url +
                      "' does not match Compression: " + info.compression);
    }
    // Cheap checks before reading the file: a re-add is a no-op.
    {
      lmdb::ReadTxn txn = env_->beginRead();
      if (auto rec = txn.get(tables_.items, h)) {
        auto record = ItemRecord::decode(*rec);
        if (!record) return fail(ErrorCode::kCorruption, "item record of " + h + " is malformed");
        auto stored = decodeNarInfo(*record);
        if (!stored) return fail(stored.error());
        if (stored->nar_hash == info.nar_hash) return AddResult{false, *stored, std::nullopt};
        return fail(ErrorCode::kConflict, info.fullPath() + " is already stored with NarHash " +
                                              stored->nar_hash.toString() + ", not " +
                                              info.nar_hash.toString());
      }
    }
    auto check = checkNarFile(narDir() / file_name, *method, true);
    if (!check) {
      if (check.error().code() == ErrorCode::kNotFound) {
        return fail(ErrorCode::kNotFound,
                    info.path.baseName() + ": nar file " + file_name + " was not uploaded");
      }
      return fail(check.error().withContext(info.path.baseName() + ": nar file " + file_name));
    }
    auto mismatch = [&](const std::string& what, const std::string& expected,
                        const std::string& got) {
      return fail(ErrorCode::kCorruption, info.path.baseName() + ": " + what + " mismatch: " +
                                              "expected " + expected + ", got " + got);
    };
    if (!(check->file_hash == name->hash)) {
      return mismatch("nar file hash (name)", name->hash.toString(), check->file_hash.toString());
    }
    if (info.file_hash && !(*info.file_hash == check->file_hash)) {
      return mismatch("FileHash", info.file_hash->toString(), check->file_hash.toString());
    }
    if (info.file_size && *info.file_size != check->file_size) {
      return mismatch("FileSize", std::to_string(*info.file_size),
                      std::to_string(check->file_size));
    }
    if (!(info.nar_hash == check->nar_hash)) {
      return mismatch("NarHash", info.nar_hash.toString(), check->nar_hash.toString());
    }
    if (info.nar_size != check->nar_size) {
      return mismatch("NarSize", std::to_string(info.nar_size), std::to_string(check->nar_size));
    }
    NarInfo stored = info;
    stored.url = "nar/" + file_name;
    stored.compression = std::string(compressionName(*method));
    stored.file_hash = check->file_hash;
    stored.file_size = check->file_size;
    ItemRecord record;
    record.created = clock_();
    record.nar_size = stored.nar_size;
    record.uploader = options.uploader;
    record.base_name = stored.path.baseName();
    record.narinfo = stored.toString();
    return commitItem(stored, record, check->listing, file_name);
  });
}

Result<AddResult> LmdbStore::commitItem(const NarInfo& stored, const ItemRecord& record,
                                        const std::string& listing, const std::string& file_name) {
  return env_->write<AddResult>([&](lmdb::WriteTxn& txn) -> Result<AddResult> {
    return commitInTxn(txn, stored, record, listing, file_name, true);
  });
}

Result<AddResult> LmdbStore::commitInTxn(lmdb::WriteTxn& txn, const NarInfo& stored,
                                         const ItemRecord& record, const std::string& listing,
                                         const std::string& file_name, bool check_file) {
  const std::string h = stored.path.hashPart();
  const Tables& t = tables_;
  {
    if (auto rec = txn.get(t.items, h)) {  // lost a race with an identical upload?
      auto existing = ItemRecord::decode(*rec);
      if (!existing) return fail(ErrorCode::kCorruption, "item record of " + h + " is malformed");
      auto info = decodeNarInfo(*existing);
      if (!info) return fail(info.error());
      if (info->nar_hash == stored.nar_hash) return AddResult{false, *info, std::nullopt};
      return fail(ErrorCode::kConflict, stored.fullPath() + " is already stored with NarHash " +
                                            info->nar_hash.toString());
    }
    // Invariant 1 (closure): every reference other than the item itself is a valid item.
    std::vector<std::string> missing;
    std::set<std::string> deleted_in_closure;
    for (const StorePath& ref : stored.references) {
      if (ref.hashPart() == h) continue;
      if (!txn.has(t.items, ref.hashPart())) {
        missing.push_back(ref.fullPath(store_dir_));
        continue;
      }
      for (auto& d : dups(txn, t.incomplete, ref.hashPart())) deleted_in_closure.insert(d);
    }
    if (!missing.empty()) {
      return fail(ErrorCode::kConflict,
                  stored.fullPath() + ": missing references: " + missingList(missing));
    }
    // Nar files are only unlinked inside write transactions (removeUnreferencedNarFile), so
    // the file checked before this transaction is still there if it exists now.
    struct stat st;
    if (check_file && ::stat((narDir() / file_name).c_str(), &st) != 0) {
      return fail(ErrorCode::kNotFound, stored.path.baseName() + ": nar file " + file_name +
                                            " disappeared (removed concurrently); upload again");
    }

    txn.put(t.items, h, record.encode());
    for (const StorePath& ref : stored.references) {
      if (ref.hashPart() == h) continue;
      txn.put(t.refs, h, ref.hashPart(), MDB_NODUPDATA);
      txn.put(t.referrers, ref.hashPart(), h, MDB_NODUPDATA);
    }
    txn.put(t.listings, h, listing);
    FileRecord file;
    if (auto f = txn.get(t.files, file_name)) {
      if (auto decoded = FileRecord::decode(*f)) file = *decoded;
    } else {
      file.size = *stored.file_size;
      addCounter(txn, t.meta, Counters::kNextFileId, 1);
      file.id = static_cast<std::uint32_t>(counter(txn, t.meta, Counters::kNextFileId));
      addCounter(txn, t.meta, Counters::kNarFiles, 1);
      addCounter(txn, t.meta, Counters::kNarBytes, static_cast<std::int64_t>(file.size));
      txn.del(t.pending_unlink, file_name);  // used again: no longer awaiting its unlink
    }
    ++file.refcount;
    txn.put(t.files, file_name, file.encode());
    // The GC graph: the item gets the next id, the largest so far, so its gcnode and gcrefs
    // rows are appended (MDB_APPEND: pages are filled, not split in half). All its references
    // are valid (checked above), so each has an id.
    const std::uint64_t next_id = counter(txn, t.meta, Counters::kNextItemId) + 1;
    if (next_id > 0xffffffffu) {
      return fail(ErrorCode::kResourceExhausted, "item ids exhausted (2^32 uploads)");
    }
    addCounter(txn, t.meta, Counters::kNextItemId, 1);
    const std::string key = encodeId(static_cast<std::uint32_t>(next_id));
    txn.put(t.itemid, h, key);
    GcNodeRecord node{h, record.created, 0, stored.nar_size, file.size, file.id};
    if (auto a = txn.get(t.atime, h)) node.last_access = static_cast<std::int64_t>(decodeU64(*a));
    txn.put(t.gcnode, key, node.encode(), MDB_APPEND);
    std::vector<std::uint32_t> targets;
    for (const StorePath& ref : stored.references) {
      if (ref.hashPart() == h) continue;
      if (auto id = itemId(txn, ref.hashPart())) targets.push_back(*id);
    }
    std::sort(targets.begin(), targets.end());
    targets.erase(std::unique(targets.begin(), targets.end()), targets.end());
    for (std::size_t k = 0; k < targets.size(); ++k) {
      txn.put(t.gcrefs, key, encodeId(targets[k]), k == 0 ? MDB_APPEND : 0);
    }
    // Valid items that already reference it (it was marked deleted, and is back): their
    // edges to it come back with its new id.
    for (const std::string& r : dups(txn, t.referrers, h)) {
      if (auto id = itemId(txn, r)) txn.put(t.gcrefs, encodeId(*id), key);
    }
    addCounter(txn, t.meta, Counters::kItems, 1);
    addCounter(txn, t.meta, Counters::kNarSize, static_cast<std::int64_t>(stored.nar_size));
    for (const auto& d : deleted_in_closure) txn.put(t.incomplete, h, d, MDB_NODUPDATA);

    // Re-added after markDeleted: the items that have it in their closure get their sets of
    // deleted items recomputed (references first). Adding and removing single entries is not
    // enough: an item deleted in between (its edges gone) may have carried other deletions.
    std::optional<Tombstone> lifted;
    if (auto tomb = txn.get(t.tombstones, h)) {
      if (auto decoded = TombstoneRecord::decode(*tomb)) lifted = decoded->tombstone;
      txn.del(t.tombstones, h);
      addCounter(txn, t.meta, Counters::kTombstones, -1);
      recomputeIncomplete(txn, t, transitiveReferrers(txn, t.referrers, h));
    }
    return AddResult{true, stored, lifted};
  }
}

Result<AddResult> LmdbStore::add(const NarInfo& info, Source& file, const AddOptions& options) {
  return guard([&]() -> Result<AddResult> {
    auto method = parseCompression(info.compression);
    if (!method) return fail(method.error().withContext(info.path.baseName()));
    if (info.store_dir != store_dir_) {
      return fail(ErrorCode::kInvalidArgument,
                  info.fullPath() + ": not in the store dir " + store_dir_ + " of this cache");
    }
    auto tmp = writeTmp(file);
    if (!tmp) return fail(tmp.error());
    auto drop = [&](Error e) {
      ::unlink(tmp->path.c_str());
      return fail(std::move(e));
    };
    if (info.file_hash && !(*info.file_hash == tmp->hash)) {
      return drop(Error(ErrorCode::kCorruption,
                        info.path.baseName() + ": FileHash mismatch: expected " +
                            info.file_hash->toString() + ", got " + tmp->hash.toString()));
    }
    if (info.file_size && *info.file_size != tmp->size) {
      return drop(Error(ErrorCode::kCorruption, info.path.baseName() +
                                                    ": FileSize mismatch: expected " +
                                                    std::to_string(*info.file_size) + ", got " +
                                                    std::to_string(tmp->size)));
    }
    std::string name = narFileName(tmp->hash, *method);
    if (!info.url.empty() && info.url != "nar/" + name) {
      return drop(Error(ErrorCode::kInvalidArgument, info.path.baseName() + ": URL '" + info.url +
                                                         "' does not name the file nar/" + name));
    }
    auto created = installNarFile(*tmp, name, false);
    if (!created) return fail(created.error());
    NarInfo with_file = info;
    with_file.url = "nar/" + name;
    with_file.file_hash = tmp->hash;
    with_file.file_size = tmp->size;
    auto result = addNarInfo(with_file, options);
    // A file of ours that no item uses (refused, or the item was there already) goes at once,
    // unless a concurrent PUT of the same file was told it is there meanwhile (that marked it
    // pending): then GC unlinks it after the nar grace if its narinfo does not claim it.
    if (*created && (!result || !result->added)) (void)removeUnclaimedNarFile(name);
    return result;
  });
}

// --- Reading ----------------------------------------------------------------------------

ItemStatus LmdbStore::statusIn(const lmdb::Txn& txn, std::string_view hash_part,
                               std::string_view base_name) const {
  ItemStatus status;
  if (auto rec = txn.get(tables_.items, hash_part)) {
    if (!base_name.empty()) {
      auto record = ItemRecord::decode(*rec);
      if (!record || record->base_name != base_name) return status;  // another item's hash
    }
    auto missing = dups(txn, tables_.incomplete, hash_part);
    if (missing.empty()) {
      status.state = ItemState::kAvailable;
      return status;
    }
    status.state = ItemState::kIncomplete;
    for (const auto& d : missing) {
      if (auto t = txn.get(tables_.tombstones, d)) {
        if (auto tomb = TombstoneRecord::decode(*t)) {
          if (auto p = StorePath::parseBaseName(tomb->base_name)) status.missing.push_back(*p);
        }
      }
    }
    std::sort(status.missing.begin(), status.missing.end());
    return status;
  }
  if (auto t = txn.get(tables_.tombstones, hash_part)) {
    auto rec = TombstoneRecord::decode(*t);
    if (!base_name.empty() && (!rec || rec->base_name != base_name)) return status;
    status.state = ItemState::kDeleted;
    if (rec) status.tombstone = rec->tombstone;
  }
  return status;
}

Result<NarInfo> LmdbStore::servable(std::string_view hash_part) const {
  return guard([&]() -> Result<NarInfo> {
    lmdb::ReadTxn txn = env_->beginRead();
    auto rec = txn.get(tables_.items, hash_part);
    if (!rec || txn.has(tables_.incomplete, hash_part)) {
      return fail(ErrorCode::kNotFound, std::string(hash_part) + ".narinfo: not in the cache");
    }
    auto record = ItemRecord::decode(*rec);
    if (!record) return fail(ErrorCode::kCorruption, "item record is malformed");
    return decodeNarInfo(*record);
  });
}

Result<StoredItem> LmdbStore::get(std::string_view hash_part) const {
  return guard([&]() -> Result<StoredItem> {
    lmdb::ReadTxn txn = env_->beginRead();
    auto rec = txn.get(tables_.items, hash_part);
    if (!rec) return fail(ErrorCode::kNotFound, std::string(hash_part) + ": no such item");
    auto record = ItemRecord::decode(*rec);
    if (!record) return fail(ErrorCode::kCorruption, "item record is malformed");
    auto info = decodeNarInfo(*record);
    if (!info) return fail(info.error());
    StoredItem item{std::move(*info), record->created, 0, record->uploader};
    if (auto a = txn.get(tables_.atime, hash_part)) {
      item.last_access = static_cast<std::int64_t>(decodeU64(*a));
    }
    return item;
  });
}

ItemStatus LmdbStore::status(std::string_view hash_part) const {
  auto r = guard([&]() -> Result<ItemStatus> {
    lmdb::ReadTxn txn = env_->beginRead();
    return statusIn(txn, hash_part);
  });
  return r ? *r : ItemStatus{};
}

Result<std::vector<ItemStatus>> LmdbStore::available(const std::vector<StorePath>& paths) const {
  return guard([&]() -> Result<std::vector<ItemStatus>> {
    lmdb::ReadTxn txn = env_->beginRead();
    std::vector<ItemStatus> out;
    out.reserve(paths.size());
    for (const auto& p : paths) out.push_back(statusIn(txn, p.hashPart(), p.baseName()));
    return out;
  });
}

Result<std::vector<StorePath>> LmdbStore::referrers(std::string_view hash_part) const {
  return guard([&]() -> Result<std::vector<StorePath>> {
    lmdb::ReadTxn txn = env_->beginRead();
    if (!txn.has(tables_.items, hash_part) && !txn.has(tables_.tombstones, hash_part)) {
      return fail(ErrorCode::kNotFound, std::string(hash_part) + ": no such item");
    }
    std::vector<StorePath> out;
    for (const auto& r : dups(txn, tables_.referrers, hash_part)) {
      auto rec = txn.get(tables_.items, r);
      if (!rec) continue;
      auto record = ItemRecord::decode(*rec);
      if (!record) continue;
      if (auto p = StorePath::parseBaseName(record->base_name)) out.push_back(*p);
    }
    std::sort(out.begin(), out.end());
    return out;
  });
}

Result<std::pair<std::uint64_t, std::uint64_t>> LmdbStore::closureSize(
    std::string_view hash_part) const {
  return guard([&]() -> Result<std::pair<std::uint64_t, std::uint64_t>> {
    lmdb::ReadTxn txn = env_->beginRead();
    if (!txn.has(tables_.items, hash_part)) {
      return fail(ErrorCode::kNotFound, std::string(hash_part) + ": no such item");
    }
    std::unordered_set<std::string> seen{std::string(hash_part)};
    std::deque<std::string> queue{std::string(hash_part)};
    std::uint64_t bytes = 0;
    while (!queue.empty()) {
      std::string h = std::move(queue.front());
      queue.pop_front();
      if (auto rec = txn.get(tables_.items, h)) {
        if (auto record = ItemRecord::decode(*rec)) bytes += record->nar_size;
      }
      for (auto& r : dups(txn, tables_.refs, h)) {
        if (seen.insert(r).second) queue.push_back(std::move(r));
      }
    }
    return std::pair<std::uint64_t, std::uint64_t>{bytes, seen.size()};
  });
}

Result<std::string> LmdbStore::listing(std::string_view hash_part) const {
  return guard([&]() -> Result<std::string> {
    lmdb::ReadTxn txn = env_->beginRead();
    auto v = txn.get(tables_.listings, hash_part);
    if (!v || !txn.has(tables_.items, hash_part)) {
      return fail(ErrorCode::kNotFound, std::string(hash_part) + ".ls: not in the cache");
    }
    return std::string(*v);
  });
}

Result<std::filesystem::path> LmdbStore::narFilePath(std::string_view file_name) const {
  if (!parseNarFileName(file_name)) {
    return fail(ErrorCode::kNotFound,
                "nar/" + std::string(file_name.substr(0, 200)) + ": not a nar file name");
  }
  std::filesystem::path p = narDir() / std::string(file_name);
  struct stat st;
  if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return fail(ErrorCode::kNotFound, "nar/" + std::string(file_name) + ": not in the cache");
  }
  return p;
}

Status LmdbStore::forEachItem(const std::function<bool(const StoredItem&)>& visit) const {
  return guard([&]() -> Status {
    lmdb::ReadTxn txn = env_->beginRead();
    lmdb::Cursor cursor(txn, tables_.items);
    for (auto e = cursor.first(); e; e = cursor.next()) {
      auto record = ItemRecord::decode(e->second);
      if (!record) {
        return fail(ErrorCode::kCorruption,
                    "item record of " + std::string(e->first) + " is malformed");
      }
      auto info = decodeNarInfo(*record);
      if (!info) return fail(info.error());
      StoredItem item{std::move(*info), record->created, 0, record->uploader};
      if (auto a = txn.get(tables_.atime, e->first)) {
        item.last_access = static_cast<std::int64_t>(decodeU64(*a));
      }
      if (!visit(item)) break;
    }
    return {};
  });
}

Result<std::size_t> LmdbStore::clearStaleReaders() {
  return guard(
      [&]() -> Result<std::size_t> { return static_cast<std::size_t>(env_->clearStaleReaders()); });
}

StoreStats LmdbStore::stats() const {
  auto r = guard([&]() -> Result<StoreStats> {
    lmdb::ReadTxn txn = env_->beginRead();
    StoreStats s;
    s.items = counter(txn, tables_.meta, Counters::kItems);
    s.tombstones = counter(txn, tables_.meta, Counters::kTombstones);
    s.nar_files = counter(txn, tables_.meta, Counters::kNarFiles);
    s.nar_bytes = counter(txn, tables_.meta, Counters::kNarBytes);
    s.nar_size = counter(txn, tables_.meta, Counters::kNarSize);
    return s;
  });
  return r ? *r : StoreStats{};
}

// --- Logs -------------------------------------------------------------------------------

namespace {
Status validateLogName(std::string_view name) {
  auto p = StorePath::parseBaseName(name);
  if (!p || name.size() < 4 || name.substr(name.size() - 4) != ".drv") {
    return fail(ErrorCode::kInvalidArgument,
                "'" + std::string(name.substr(0, 200)) + "' is not a derivation base name");
  }
  return {};
}
}  // namespace

Status LmdbStore::putLog(std::string_view drv_base_name, Source& body) {
  return guard([&]() -> Status {
    NARCACHE_TRY(validateLogName(drv_base_name));
    auto tmp = writeTmp(body);
    if (!tmp) return fail(tmp.error());
    std::filesystem::path dest = logDir() / std::string(drv_base_name);
    if (::rename(tmp->path.c_str(), dest.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp->path.c_str());
      return fail(ioError("rename " + dest.string(), err));
    }
    return fsyncDir(logDir());
  });
}

Result<std::filesystem::path> LmdbStore::logPath(std::string_view drv_base_name) const {
  if (auto v = validateLogName(drv_base_name); !v) {
    return fail(ErrorCode::kNotFound, v.error().message());
  }
  std::filesystem::path p = logDir() / std::string(drv_base_name);
  struct stat st;
  if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return fail(ErrorCode::kNotFound, "log/" + std::string(drv_base_name) + ": no such log");
  }
  return p;
}

// --- Access times -----------------------------------------------------------------------

void LmdbStore::recordAccess(std::string_view hash_part) {
  if (hash_part.size() != kStorePathHashLength) return;
  pending_access_.record(hash_part, clock_());
}

Status LmdbStore::flushAccessTimes() {
  // A copy: the accesses stay pending (seen by deleteUnreachable) until they are committed,
  // so that a GC batch committing while this flush waits for the writer lock still sees them.
  PendingAccess::Times batch = pending_access_.snapshot();
  if (batch.empty()) return {};
  auto r = guard([&]() -> Status {
    return env_->write<void>([&](lmdb::WriteTxn& txn) -> Status {
      for (const auto& [h, when] : batch) {
        if (!txn.has(tables_.items, h)) continue;
        auto old = txn.get(tables_.atime, h);
        if (old && static_cast<std::int64_t>(decodeU64(*old)) >= when) continue;
        txn.put(tables_.atime, h, encodeU64(static_cast<std::uint64_t>(when)));
        // Mirrored in the item's gcnode record (what the GC scan reads).
        if (auto id = itemId(txn, h)) {
          const std::string key = encodeId(*id);
          auto node = txn.get(tables_.gcnode, key);
          if (node && node->size() == GcNodeRecord::kSize) {
            std::string value(*node);
            value.replace(GcNodeRecord::kLastAccessOffset, 8,
                          encodeU64(static_cast<std::uint64_t>(when)));
            txn.put(tables_.gcnode, key, value);
          }
        }
      }
      return {};
    });
  });
  if (r) pending_access_.dropFlushed(batch);  // else they stay for the next flush
  return r;
}

// --- Deletion ---------------------------------------------------------------------------

Status LmdbStore::markDeleted(const StorePath& path, const Tombstone& why) {
  return guard([&]() -> Status {
    const std::string h = path.hashPart();
    const Tables& t = tables_;
    return env_->write<void>([&](lmdb::WriteTxn& txn) -> Status {
      auto rec = txn.get(t.items, h);
      if (!rec) {
        if (auto t_rec = txn.get(t.tombstones, h)) {
          auto tomb = TombstoneRecord::decode(*t_rec);
          if (tomb && tomb->base_name == path.baseName()) return {};  // already deleted
          if (tomb) {
            return fail(ErrorCode::kNotFound, path.fullPath(store_dir_) +
                                                  ": no such item (this hash is " + store_dir_ +
                                                  "/" + tomb->base_name + ", deleted)");
          }
        }
        return fail(ErrorCode::kNotFound, path.fullPath(store_dir_) + ": no such item");
      }
      auto record = ItemRecord::decode(*rec);
      if (!record) return fail(ErrorCode::kCorruption, "item record of " + h + " is malformed");
      if (record->base_name != path.baseName()) {  // a mistyped name: not this item
        return fail(ErrorCode::kNotFound, path.fullPath(store_dir_) +
                                              ": no such item (this hash is " + store_dir_ + "/" +
                                              record->base_name + ")");
      }
      auto info = decodeNarInfo(*record);
      if (!info) return fail(info.error());
      tombstoneInTxn(txn, h, *info, why);
      return {};
    });
  });
}

void LmdbStore::tombstoneInTxn(lmdb::WriteTxn& txn, const std::string& h, const NarInfo& info,
                               const Tombstone& why) {
  const Tables& t = tables_;
  // Its referrers' entries (referrers[h]) stay: they are who becomes incomplete.
  removeItemRows(txn, h, info);
  TombstoneRecord tomb{why, info.path.baseName(), info.nar_hash.toString()};
  if (tomb.tombstone.when == 0) tomb.tombstone.when = clock_();
  txn.put(t.tombstones, h, tomb.encode());
  addCounter(txn, t.meta, Counters::kTombstones, 1);
  // Invariant 1: everything whose closure contains it becomes incomplete.
  for (const std::string& a : transitiveReferrers(txn, t.referrers, h)) {
    txn.put(t.incomplete, a, h, MDB_NODUPDATA);
  }
}

Result<std::vector<std::string>> LmdbStore::repairNarFile(
    const std::string& file_name, const std::vector<std::pair<std::string, std::uint32_t>>& users,
    const Tombstone& why, bool corrupt, const std::function<bool()>& unchanged) {
  return guard([&]() -> Result<std::vector<std::string>> {
    const Tables& t = tables_;
    const std::filesystem::path path = narDir() / file_name;
    bool unlinked = false;  // by an earlier run of the function (Env::write repeats it)
    return env_->write<std::vector<std::string>>(
        [&](lmdb::WriteTxn& txn) -> Result<std::vector<std::string>> {
          std::vector<std::string> tombstoned;
          // An existing nar file is unlinked only inside a write transaction, and an upload
          // never replaces one (link(2)), so a corrupt file judged unchanged here stays that
          // file until this transaction ends.
          if (!unlinked && !unchanged()) return tombstoned;
          for (const auto& [h, id] : users) {
            if (itemId(txn, h) != id) continue;  // deleted, or deleted and uploaded again
            auto rec = txn.get(t.items, h);
            auto record = rec ? ItemRecord::decode(*rec) : std::nullopt;
            if (!record) continue;
            auto info = decodeNarInfo(*record);
            if (!info || info->url != "nar/" + file_name) continue;
            tombstoneInTxn(txn, h, *info, why);
            tombstoned.push_back(h);
          }
          if (tombstoned.empty() || txn.has(t.files, file_name)) return tombstoned;
          // Unused now. A corrupt file goes at once (no client can use it, and an upload of
          // that name must not find it there); one that cannot be unlinked stays pending. A
          // missing one has nothing to unlink: and a concurrent upload may be linking it in
          // right now (it marks it pending after this commit).
          if (!corrupt || ::unlink(path.c_str()) == 0 || errno == ENOENT) {
            unlinked = corrupt;
            txn.del(t.pending_unlink, file_name);
          }
          return tombstoned;
        });
  });
}

std::optional<std::uint64_t> LmdbStore::removeItemRows(lmdb::WriteTxn& txn, const std::string& h,
                                                       const NarInfo& info) {
  const Tables& t = tables_;
  txn.del(t.items, h);
  txn.del(t.refs, h);
  for (const StorePath& ref : info.references) {
    if (ref.hashPart() != h) txn.delDup(t.referrers, ref.hashPart(), h);
  }
  txn.del(t.listings, h);
  txn.del(t.incomplete, h);
  txn.del(t.atime, h);
  if (auto id = itemId(txn, h)) {
    const std::string key = encodeId(*id);
    txn.del(t.itemid, h);
    txn.del(t.gcnode, key);
    txn.del(t.gcrefs, key);
    // Valid referrers keep their references to a marked-deleted item, but not the edges.
    for (const std::string& r : dups(txn, t.referrers, h)) {
      if (auto rid = itemId(txn, r)) txn.delDup(t.gcrefs, encodeId(*rid), key);
    }
  }
  addCounter(txn, t.meta, Counters::kItems, -1);
  addCounter(txn, t.meta, Counters::kNarSize, -static_cast<std::int64_t>(info.nar_size));
  // The nar file stays on disk (clients holding the narinfo may still fetch it); once no item
  // uses it, it waits in pending_unlink for the collector's nar grace period.
  std::string file_name = info.url.substr(info.url.rfind('/') + 1);
  if (auto f = txn.get(t.files, file_name)) {
    FileRecord file = FileRecord::decode(*f).value_or(FileRecord{});
    if (file.refcount <= 1) {
      txn.del(t.files, file_name);
      addCounter(txn, t.meta, Counters::kNarFiles, -1);
      addCounter(txn, t.meta, Counters::kNarBytes, -static_cast<std::int64_t>(file.size));
      txn.put(t.pending_unlink, file_name, encodeU64(static_cast<std::uint64_t>(clock_())));
      return file.size;
    }
    --file.refcount;
    txn.put(t.files, file_name, file.encode());
  }
  return std::nullopt;
}

// --- Opening ----------------------------------------------------------------------------

Result<std::unique_ptr<LmdbStore>> LmdbStore::openStore(const StoreOptions& options, bool create) {
  return guard([&]() -> Result<std::unique_ptr<LmdbStore>> {
    std::unique_ptr<LmdbStore> store(new LmdbStore());
    store->root_ = options.root;
    store->clock_ = options.clock ? options.clock : Clock(systemClock);
    std::filesystem::path db = options.root / "db";
    std::error_code ec;
    if (create) {
      NARCACHE_TRY(validateStoreDir(options.store_dir));
      for (const char* sub : {"db", "nar", "tmp", "log"}) {
        std::filesystem::create_directories(options.root / sub, ec);
        if (ec) {
          return fail(ErrorCode::kIoError,
                      "cannot create " + (options.root / sub).string() + ": " + ec.message());
        }
      }
    } else if (!std::filesystem::exists(db / "data.mdb", ec)) {
      return fail(ErrorCode::kNotFound, "no store at " + options.root.string() +
                                            " (create one with `narcache store init --store " +
                                            options.root.string() + "`)");
    }
    lmdb::EnvOptions env_options;
    env_options.dir = db;
    env_options.initial_map_size =
        options.initial_map_size != 0 ? options.initial_map_size : kDefaultMapSize;
    store->env_ = lmdb::Env::open(env_options);
    lmdb::Env& env = *store->env_;
    Tables& t = store->tables_;
    constexpr unsigned kDupFixed = MDB_DUPSORT | MDB_DUPFIXED;
    t.meta = env.openDbi("meta", 0, true);
    t.items = env.openDbi("items", 0, true);
    t.refs = env.openDbi("refs", kDupFixed, true);
    t.referrers = env.openDbi("referrers", kDupFixed, true);
    t.atime = env.openDbi("atime", 0, true);
    t.tombstones = env.openDbi("tombstones", 0, true);
    t.incomplete = env.openDbi("incomplete", kDupFixed, true);
    t.files = env.openDbi("files", 0, true);
    t.listings = env.openDbi("listings", 0, true);
    t.roots = env.openDbi("roots", 0, true);
    t.itemid = env.openDbi("itemid", 0, true);
    t.gcnode = env.openDbi("gcnode", 0, true);
    t.gcrefs = env.openDbi("gcrefs", kDupFixed, true);
    t.pending_unlink = env.openDbi("pending_unlink", 0, true);

    // Opening an existing store only reads (the writer lock is not taken, so a CLI command
    // beside a busy `narcache serve` does not queue behind its writes).
    auto checkSchema = [&](const lmdb::Txn& txn) -> Result<std::string> {
      auto version = txn.get(t.meta, "schema_version");
      if (!version) {
        return fail(ErrorCode::kNotFound, "no store at " + options.root.string() +
                                              " (create one with `narcache store init`)");
      }
      if (*version != std::to_string(kSchemaVersion) && *version != "1") {  // 1: migrated
        return fail(ErrorCode::kInvalidArgument,
                    "store at " + options.root.string() + " has schema version " +
                        std::string(*version) + "; this narcache knows version " +
                        std::to_string(kSchemaVersion));
      }
      auto dir = txn.get(t.meta, "store_dir");
      return dir ? std::string(*dir) : std::string(kDefaultStoreDir);
    };
    Result<std::string> r;
    if (create) {
      r = env.write<std::string>([&](lmdb::WriteTxn& txn) -> Result<std::string> {
        if (txn.has(t.meta, "schema_version")) {
          return fail(ErrorCode::kAlreadyExists,
                      "a store already exists at " + options.root.string());
        }
        txn.put(t.meta, "schema_version", std::to_string(kSchemaVersion));
        txn.put(t.meta, "store_dir", options.store_dir);
        return options.store_dir;
      });
    } else {
      r = checkSchema(env.beginRead());
    }
    if (!r) return fail(r.error());
    store->store_dir_ = *r;
    NARCACHE_TRY(store->migrateToItemIds());
    for (const char* sub : {"nar", "tmp", "log"}) {
      std::filesystem::create_directories(options.root / sub, ec);
    }
    return store;
  });
}

}  // namespace narcache::narstore
