// LmdbStore: the garbage-collection side of the store — roots, the compact graph scan, the
// re-checking deletion primitive and delayed nar file unlinking (see store.h and
// store_impl.h for the tables). Invariant 3 (GC is safe) is kept in deleteUnreachable: every
// decision is re-made inside the one write transaction that deletes.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "narcache/narstore/bulk_load.h"
#include "store_impl.h"

namespace narcache::narstore {
namespace {

constexpr std::size_t kHashLen = kStorePathHashLength;

// The first 8 characters of a hash part as a big-endian number: ordered like the strings.
std::uint64_t prefixKey(std::string_view h) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8 && i < h.size(); ++i) {
    v = (v << 8) | static_cast<unsigned char>(h[i]);
  }
  return v;
}

Status validateRootName(std::string_view name) {
  bool ok = !name.empty() && name.size() <= 200;
  for (char c : name) {
    if (c == '/' || c == '\n' || c == '\r' || c == ' ' || c == '\t' || c == '\0') ok = false;
  }
  if (!ok) {
    return fail(ErrorCode::kInvalidArgument,
                "root name '" + std::string(name.substr(0, 200)) +
                    "' must be 1-200 characters without '/' or whitespace");
  }
  return {};
}

// The file name in a stored narinfo's "URL: nar/<file>" line, without parsing the rest.
std::string_view urlFileName(std::string_view narinfo) {
  std::size_t start = 0;
  if (narinfo.rfind("URL: ", 0) != 0) {
    start = narinfo.find("\nURL: ");
    if (start == std::string_view::npos) return {};
    ++start;
  }
  start += 5;
  std::size_t end = narinfo.find('\n', start);
  std::string_view url = narinfo.substr(start, end == std::string_view::npos ? end : end - start);
  auto slash = url.rfind('/');
  return slash == std::string_view::npos ? url : url.substr(slash + 1);
}

}  // namespace

std::optional<std::uint32_t> StoreGraph::find(std::string_view hash_part) const {
  std::size_t lo = 0;
  std::size_t hi = size();
  while (lo < hi) {
    std::size_t mid = lo + (hi - lo) / 2;
    int c = hashPart(mid).compare(hash_part);
    if (c == 0) return static_cast<std::uint32_t>(mid);
    if (c < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return std::nullopt;
}

Status LmdbStore::migrateGcMeta() {
  const Tables& t = tables_;
  {
    lmdb::ReadTxn txn = env_->beginRead();
    if (txn.has(t.meta, Counters::kGcMetaFeature)) return {};
  }
  return env_->write<void>([&](lmdb::WriteTxn& txn) -> Status {
    if (txn.has(t.meta, Counters::kGcMetaFeature)) return {};
    lmdb::Cursor cursor(txn, t.items);
    for (auto e = cursor.first(); e; e = cursor.next()) {
      auto record = ItemRecord::decode(e->second);
      if (!record) continue;  // verify reports it
      GcMetaRecord meta{record->created, record->nar_size,
                        std::string(urlFileName(record->narinfo))};
      txn.put(t.gcmeta, e->first, meta.encode());
    }
    txn.put(t.meta, Counters::kGcMetaFeature, "1");
    return {};
  });
}

void LmdbStore::cancelPendingUnlink(const std::string& name) {
  const Tables& t = tables_;
  auto r = guard([&]() -> Status {
    {
      lmdb::ReadTxn txn = env_->beginRead();
      if (!txn.has(t.pending_unlink, name)) return {};
    }
    return env_->write<void>([&](lmdb::WriteTxn& txn) -> Status {
      txn.del(t.pending_unlink, name);
      return {};
    });
  });
  (void)r;  // best effort: installNarFile re-checks that the file is still there
}

// --- Roots ------------------------------------------------------------------------------

Status LmdbStore::addRoot(const Root& root) {
  NARCACHE_TRY(validateRootName(root.name));
  if (root.paths.empty()) {
    return fail(ErrorCode::kInvalidArgument, "root " + root.name + ": no store paths");
  }
  return guard([&]() -> Status {
    const Tables& t = tables_;
    return env_->write<void>([&](lmdb::WriteTxn& txn) -> Status {
      RootRecord record;
      record.created = root.created != 0 ? root.created : clock_();
      record.expires = root.expires;
      std::vector<std::string> missing;
      for (const StorePath& p : root.paths) {
        if (!txn.has(t.items, p.hashPart())) missing.push_back(p.fullPath(store_dir_));
        record.base_names.push_back(p.baseName());
      }
      if (!missing.empty()) {
        std::string list;
        for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
        return fail(ErrorCode::kNotFound, "root " + root.name + ": not valid items: " + list);
      }
      txn.put(t.roots, root.name, record.encode());
      addCounter(txn, t.meta, Counters::kRootsGeneration, 1);
      return {};
    });
  });
}

Result<std::vector<Root>> LmdbStore::listRoots() const {
  return guard([&]() -> Result<std::vector<Root>> {
    lmdb::ReadTxn txn = env_->beginRead();
    std::vector<Root> out;
    lmdb::Cursor cursor(txn, tables_.roots);
    for (auto e = cursor.first(); e; e = cursor.next()) {
      auto record = RootRecord::decode(e->second);
      if (!record) {
        return fail(ErrorCode::kCorruption, "root " + std::string(e->first) + ": malformed");
      }
      Root root{std::string(e->first), {}, record->created, record->expires};
      for (const auto& b : record->base_names) {
        if (auto p = StorePath::parseBaseName(b)) root.paths.push_back(*p);
      }
      out.push_back(std::move(root));
    }
    return out;
  });
}

Status LmdbStore::removeRoot(std::string_view name) {
  return guard([&]() -> Status {
    return env_->write<void>([&](lmdb::WriteTxn& txn) -> Status {
      if (!txn.del(tables_.roots, name)) {
        return fail(ErrorCode::kNotFound, "no root named '" + std::string(name) + "'");
      }
      return {};
    });
  });
}

// --- Graph scan -------------------------------------------------------------------------

Result<StoreGraph> LmdbStore::scanGraph() const {
  return guard([&]() -> Result<StoreGraph> {
    const Tables& t = tables_;
    lmdb::ReadTxn txn = env_->beginRead();
    StoreGraph g;
    g.scanned_at = clock_();
    g.roots_generation = counter(txn, t.meta, Counters::kRootsGeneration);

    // Nar files, in name order; names stay views into the map until the snapshot ends.
    const std::uint64_t n_files = txn.count(t.files);
    std::unordered_map<std::string_view, std::uint32_t> file_index;
    file_index.reserve(n_files);
    g.file_size.reserve(n_files);
    g.file_refcount.reserve(n_files);
    {
      lmdb::Cursor cursor(txn, t.files);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        FileRecord f = FileRecord::decode(e->second).value_or(FileRecord{});
        file_index.emplace(e->first, static_cast<std::uint32_t>(g.file_size.size()));
        g.file_size.push_back(f.size);
        g.file_refcount.push_back(static_cast<std::uint32_t>(f.refcount));
      }
    }

    // Items (the compact gcmeta table), in hash order.
    const std::uint64_t n = txn.count(t.gcmeta);
    if (n >= 0xffffffffu) return fail(ErrorCode::kResourceExhausted, "too many items to scan");
    g.hashes.reserve(n * kHashLen);
    g.created.reserve(n);
    g.nar_size.reserve(n);
    g.file.reserve(n);
    std::vector<std::uint64_t> prefixes;
    prefixes.reserve(n);
    {
      lmdb::Cursor cursor(txn, t.gcmeta);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        if (e->first.size() != kHashLen || e->second.size() < 16) {
          return fail(ErrorCode::kCorruption,
                      "gcmeta record of " + std::string(e->first) + " is malformed");
        }
        g.hashes.append(e->first);
        prefixes.push_back(prefixKey(e->first));
        g.created.push_back(static_cast<std::int64_t>(decodeU64(e->second.substr(0, 8))));
        g.nar_size.push_back(decodeU64(e->second.substr(8, 8)));
        auto it = file_index.find(e->second.substr(16));
        g.file.push_back(it == file_index.end() ? 0xffffffffu : it->second);
      }
    }
    const std::size_t count = g.created.size();
    g.last_access.assign(count, 0);
    {
      // Both tables are in hash order: merge.
      lmdb::Cursor cursor(txn, t.atime);
      std::size_t i = 0;
      for (auto e = cursor.first(); e && i < count; e = cursor.next()) {
        while (i < count && g.hashPart(i) < e->first) ++i;
        if (i < count && g.hashPart(i) == e->first) {
          g.last_access[i] = static_cast<std::int64_t>(decodeU64(e->second));
        }
      }
    }
    auto indexOf = [&](std::string_view h) -> std::optional<std::uint32_t> {
      std::uint64_t key = prefixKey(h);
      auto it = std::lower_bound(prefixes.begin(), prefixes.end(), key);
      for (; it != prefixes.end() && *it == key; ++it) {
        std::size_t i = static_cast<std::size_t>(it - prefixes.begin());
        if (g.hashPart(i) == h) return static_cast<std::uint32_t>(i);
      }
      return std::nullopt;
    };
    // References: the refs table is in (source hash, target hash) order, so sources merge
    // with the items; targets are looked up (a deleted target has no index: no edge).
    g.ref_offsets.assign(count + 1, 0);
    g.ref_targets.reserve(txn.count(t.refs));
    {
      lmdb::Cursor cursor(txn, t.refs);
      std::size_t i = 0;
      std::string_view current;
      bool current_valid = false;
      for (auto e = cursor.first(); e; e = cursor.next()) {
        if (!current_valid || e->first != current) {
          current = e->first;
          while (i < count && g.hashPart(i) < current) g.ref_offsets[++i] = g.ref_targets.size();
          current_valid = i < count && g.hashPart(i) == current;
          if (!current_valid) continue;
        }
        if (auto target = indexOf(e->second)) g.ref_targets.push_back(*target);
      }
      while (i < count) g.ref_offsets[++i] = g.ref_targets.size();
    }

    {
      lmdb::Cursor cursor(txn, t.roots);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        auto record = RootRecord::decode(e->second);
        if (!record) continue;
        Root root{std::string(e->first), {}, record->created, record->expires};
        for (const auto& b : record->base_names) {
          if (auto p = StorePath::parseBaseName(b)) root.paths.push_back(*p);
        }
        g.roots.push_back(std::move(root));
      }
    }
    return g;
  });
}

// --- Deletion ---------------------------------------------------------------------------

Result<GcBatchResult> LmdbStore::deleteUnreachable(const std::vector<GcCandidate>& batch,
                                                   std::uint64_t roots_generation) {
  return guard([&]() -> Result<GcBatchResult> {
    const Tables& t = tables_;
    return env_->write<GcBatchResult>([&](lmdb::WriteTxn& txn) -> Result<GcBatchResult> {
      GcBatchResult result;
      if (counter(txn, t.meta, Counters::kRootsGeneration) != roots_generation) {
        return fail(ErrorCode::kConflict,
                    "roots were added since the collection was planned; plan again");
      }
      // Accesses recorded in this process but not flushed yet count too.
      std::unordered_map<std::string, std::int64_t> pending;
      {
        auto access = pending_access_.lock();
        if (!access->empty()) {
          for (const GcCandidate& c : batch) {
            if (auto it = access->find(c.hash_part); it != access->end()) {
              pending.emplace(c.hash_part, it->second);
            }
          }
        }
      }
      struct Candidate {
        const GcCandidate* c;
        NarInfo info;
        std::vector<std::string> referrers;
        bool alive = true;
      };
      std::vector<Candidate> cands;
      std::unordered_map<std::string_view, std::size_t> index;
      cands.reserve(batch.size());
      for (const GcCandidate& c : batch) {
        auto meta_value = txn.get(t.gcmeta, c.hash_part);
        auto rec = txn.get(t.items, c.hash_part);
        if (!rec || !meta_value) continue;  // gone already
        auto meta = GcMetaRecord::decode(*meta_value);
        bool keep = !meta || meta->created != c.created;  // re-added since the scan
        if (auto a = txn.get(t.atime, c.hash_part)) {
          keep = keep || static_cast<std::int64_t>(decodeU64(*a)) > c.last_access;
        }
        if (auto it = pending.find(c.hash_part); it != pending.end()) {
          keep = keep || it->second > c.last_access;
        }
        auto record = ItemRecord::decode(*rec);
        if (!record) return fail(ErrorCode::kCorruption, "item record of " + c.hash_part);
        auto info = decodeNarInfo(*record);
        if (!info) return fail(info.error());
        if (keep) {
          result.kept.push_back(c.hash_part);
          continue;
        }
        index.emplace(c.hash_part, cands.size());
        cands.push_back(Candidate{&c, std::move(*info), dups(txn, t.referrers, c.hash_part)});
      }
      // Fixpoint: a candidate stays only while all its current referrers go too.
      for (bool changed = true; changed;) {
        changed = false;
        for (Candidate& cand : cands) {
          if (!cand.alive) continue;
          for (const std::string& r : cand.referrers) {
            auto it = index.find(r);
            if (it == index.end() || !cands[it->second].alive) {
              cand.alive = false;
              changed = true;
              break;
            }
          }
        }
      }
      for (Candidate& cand : cands) {
        const std::string& h = cand.c->hash_part;
        if (!cand.alive) {
          result.kept.push_back(h);
          continue;
        }
        std::optional<std::uint64_t> freed = removeItemRows(txn, h, cand.info);
        txn.del(t.referrers, h);  // its referrers are all deleted in this transaction
        if (freed) {
          ++result.files_unreferenced;
          result.file_bytes += *freed;
        }
        result.nar_size += cand.info.nar_size;
        result.deleted.push_back(h);
      }
      return result;
    });
  });
}

Result<UnlinkResult> LmdbStore::unlinkNarFiles(std::int64_t grace_seconds, std::size_t max_files) {
  return guard([&]() -> Result<UnlinkResult> {
    const Tables& t = tables_;
    const std::int64_t now = clock_();
    UnlinkResult result;
    std::vector<std::string> due;
    {
      lmdb::ReadTxn txn = env_->beginRead();
      lmdb::Cursor cursor(txn, t.pending_unlink);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        auto since = static_cast<std::int64_t>(decodeU64(e->second));
        if (since + grace_seconds <= now && due.size() < max_files) {
          due.emplace_back(e->first);
        } else {
          ++result.pending;
        }
      }
    }
    constexpr std::size_t kPerTxn = 64;
    for (std::size_t start = 0; start < due.size(); start += kPerTxn) {
      std::size_t end = std::min(due.size(), start + kPerTxn);
      auto r = env_->write<UnlinkResult>([&](lmdb::WriteTxn& txn) -> Result<UnlinkResult> {
        UnlinkResult part;
        for (std::size_t k = start; k < end; ++k) {
          const std::string& name = due[k];
          auto v = txn.get(t.pending_unlink, name);
          if (!v) continue;  // uploaded again meanwhile
          auto since = static_cast<std::int64_t>(decodeU64(*v));
          if (since + grace_seconds > now) continue;
          txn.del(t.pending_unlink, name);
          if (txn.has(t.files, name)) continue;  // used again (cannot happen: commit cancels)
          std::filesystem::path p = narDir() / name;
          struct stat st;
          std::uint64_t size =
              ::stat(p.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
          if (::unlink(p.c_str()) != 0) {
            if (errno == ENOENT) continue;
            return fail(ioError("unlink " + p.string(), errno));
          }
          ++part.files;
          part.bytes += size;
        }
        return part;
      });
      if (!r) return fail(r.error());
      result.files += r->files;
      result.bytes += r->bytes;
    }
    return result;
  });
}

// --- Trusted bulk loading -------------------------------------------------------------------

Result<std::uint64_t> LmdbStore::addTrusted(const std::vector<NarInfo>& infos,
                                            std::int64_t created) {
  return guard([&]() -> Result<std::uint64_t> {
    constexpr std::size_t kPerTxn = 20000;
    std::uint64_t added = 0;
    for (std::size_t start = 0; start < infos.size(); start += kPerTxn) {
      std::size_t end = std::min(infos.size(), start + kPerTxn);
      auto r = env_->write<std::uint64_t>([&](lmdb::WriteTxn& txn) -> Result<std::uint64_t> {
        std::uint64_t n = 0;
        for (std::size_t k = start; k < end; ++k) {
          const NarInfo& info = infos[k];
          if (info.url.rfind("nar/", 0) != 0 || !info.file_hash || !info.file_size) {
            return fail(ErrorCode::kInvalidArgument,
                        info.path.baseName() + ": trusted narinfos need URL, FileHash, FileSize");
          }
          std::string file_name = info.url.substr(4);
          ItemRecord record;
          record.created = created != 0 ? created : clock_();
          record.nar_size = info.nar_size;
          record.uploader = "bulk";
          record.base_name = info.path.baseName();
          record.narinfo = info.toString();
          auto a = commitInTxn(txn, info, record, "", file_name, false);
          if (!a) return fail(a.error());
          if (a->added) ++n;
        }
        return n;
      });
      if (!r) return fail(r.error());
      added += *r;
    }
    return added;
  });
}

Result<std::uint64_t> addTrustedNarInfos(Store& store, const std::vector<NarInfo>& infos,
                                         std::int64_t created) {
  auto* lmdb_store = dynamic_cast<LmdbStore*>(&store);
  if (lmdb_store == nullptr) {
    return fail(ErrorCode::kInvalidArgument, "bulk load: not an LMDB store");
  }
  return lmdb_store->addTrusted(infos, created);
}

}  // namespace narcache::narstore
