// verifyStore: see verify.h. One read snapshot of the tables, the file checks in parallel,
// then repairs through the Store's own write paths.

#include "narcache/narstore/verify.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "store_impl.h"

namespace narcache::narstore {
namespace {

struct ItemFacts {
  std::string base_name;
  std::uint32_t id = 0;           // item id (itemid): a re-upload gets another
  std::vector<std::string> refs;  // hash parts, self excluded
  std::string file_name;
  std::int64_t created = 0;
  std::uint64_t nar_size = 0;
  Hash nar_hash;
  std::optional<Hash> file_hash;
  std::optional<std::uint64_t> file_size;
};

// What a nar file was when it was checked: absent, or this inode with this size and times (or
// the error stat gave). Files in nar/ are never rewritten (an upload links a new inode in), so
// the same identity later means the bytes the check judged.
struct FileIdentity {
  int error = 0;  // of stat: 0, ENOENT...
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  friend bool operator==(const FileIdentity&, const FileIdentity&) = default;
};

FileIdentity identify(const std::filesystem::path& p) {
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) return FileIdentity{errno};
  auto ns = [](const timespec& ts) {
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  };
  return FileIdentity{0, st.st_dev, st.st_ino, st.st_size, ns(st.st_mtim), ns(st.st_ctim)};
}

struct FileJob {
  std::string name;
  Compression compression = Compression::kNone;
  Hash name_hash;
  std::vector<std::string> items;  // hash parts using it
  // Results:
  std::string error;  // empty: fine
  // The error says what the file holds (missing, not a valid stream or NAR, other content), not
  // that it could not be read (permissions, I/O, resources): only then may --repair act on it.
  bool repairable = false;
  FileIdentity seen;  // taken before the check
  std::uint64_t bytes = 0;
};

bool isAboutTheContent(ErrorCode code) {
  return code == ErrorCode::kNotFound || code == ErrorCode::kInvalidArgument ||
         code == ErrorCode::kCorruption;
}

std::set<std::string> dupSet(const lmdb::Txn& txn, lmdb::Dbi dbi, std::string_view key) {
  std::set<std::string> out;
  lmdb::Cursor cursor(txn, dbi);
  for (auto e = cursor.find(key); e; e = cursor.nextDup()) out.emplace(e->second);
  return out;
}

std::string joinSet(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : " ") + x;
  return out.empty() ? "(none)" : out;
}

std::int64_t fileAge(const std::filesystem::path& p, std::int64_t now) {
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) return 0;
  return now - st.st_mtime;
}

}  // namespace

bool VerifyReport::consistent() const {
  return std::all_of(problems.begin(), problems.end(),
                     [](const VerifyProblem& p) { return p.repaired; });
}

Result<VerifyReport> verifyStore(Store& store_base, const VerifyOptions& options) {
  auto* store = dynamic_cast<LmdbStore*>(&store_base);
  if (store == nullptr) return fail(ErrorCode::kInvalidArgument, "verify: not an LMDB store");
  const auto& t = store->tables();
  VerifyReport report;
  std::unordered_map<std::string, ItemFacts> items;
  std::map<std::string, FileJob> files;
  std::set<std::string> file_table;
  std::map<std::string, std::int64_t> pending_unlink;  // name -> unreferenced since
  auto problem = [&](std::string subject, std::string message) {
    report.problems.push_back({std::move(subject), std::move(message), false});
  };

  try {
    lmdb::ReadTxn txn = store->env().beginRead();
    // Items and what their narinfos say.
    {
      lmdb::Cursor cursor(txn, t.items);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        std::string h(e->first);
        auto record = ItemRecord::decode(e->second);
        if (!record) {
          problem(h, "item record is malformed");
          continue;
        }
        auto info = store->decodeNarInfo(*record);
        if (!info) {
          problem(record->base_name, "stored narinfo does not parse: " + info.error().message());
          continue;
        }
        ItemFacts f;
        f.base_name = record->base_name;
        for (const auto& r : info->references) {
          if (r.hashPart() != h) f.refs.push_back(r.hashPart());
        }
        f.file_name = info->url.substr(info->url.rfind('/') + 1);
        f.created = record->created;
        f.nar_size = info->nar_size;
        f.nar_hash = info->nar_hash;
        f.file_hash = info->file_hash;
        f.file_size = info->file_size;
        if (info->path.hashPart() != h || record->nar_size != info->nar_size) {
          problem(f.base_name, "item record header disagrees with its narinfo");
        }
        items.emplace(h, std::move(f));
      }
    }
    report.items = items.size();
    std::unordered_set<std::string> tombstoned;
    {
      lmdb::Cursor cursor(txn, t.tombstones);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        tombstoned.emplace(e->first);
        if (items.count(std::string(e->first)) != 0) {
          problem(items[std::string(e->first)].base_name, "is both valid and tombstoned");
        }
      }
    }
    // Closure and the reference indexes.
    std::map<std::string, std::set<std::string>> expected_referrers;
    for (const auto& [h, f] : items) {
      for (const auto& r : f.refs) {
        // A deleted reference is allowed (the item is then incomplete, checked below); an
        // unknown one breaks the closure invariant.
        if (items.count(r) == 0 && tombstoned.count(r) == 0) {
          problem(f.base_name, "reference " + r + " is neither valid nor deleted");
        }
        expected_referrers[r].insert(h);
      }
      std::set<std::string> want(f.refs.begin(), f.refs.end());
      std::set<std::string> have = dupSet(txn, t.refs, h);
      if (want != have) {
        problem(f.base_name,
                "refs index is {" + joinSet(have) + "}, narinfo says {" + joinSet(want) + "}");
      }
    }
    {
      lmdb::Cursor cursor(txn, t.referrers);
      std::map<std::string, std::set<std::string>> have;
      for (auto e = cursor.first(); e; e = cursor.next()) {
        have[std::string(e->first)].emplace(e->second);
      }
      if (have != expected_referrers) {
        for (const auto& [r, set] : have) {
          auto it = expected_referrers.find(r);
          if (it == expected_referrers.end() || it->second != set) {
            problem(r, "referrers index is {" + joinSet(set) + "}, expected {" +
                           (it == expected_referrers.end() ? "" : joinSet(it->second)) + "}");
          }
        }
        for (const auto& [r, set] : expected_referrers) {
          if (have.count(r) == 0) problem(r, "referrers index lacks {" + joinSet(set) + "}");
        }
      }
    }
    // Incomplete bookkeeping: the deleted items in each closure (memoised, iterative DFS).
    {
      std::unordered_map<std::string, std::set<std::string>> deleted_in;
      std::unordered_set<std::string> in_progress;
      for (const auto& [root, unused] : items) {
        if (deleted_in.count(root) != 0) continue;
        std::vector<std::pair<std::string, std::size_t>> stack{{root, 0}};
        in_progress.insert(root);
        while (!stack.empty()) {
          auto& [h, next] = stack.back();
          const ItemFacts& f = items.at(h);
          if (next < f.refs.size()) {
            const std::string& r = f.refs[next++];
            if (items.count(r) != 0 && deleted_in.count(r) == 0 && in_progress.count(r) == 0) {
              in_progress.insert(r);
              stack.emplace_back(r, 0);
            }
            continue;
          }
          std::set<std::string> d;
          for (const auto& r : f.refs) {
            if (items.count(r) == 0) {
              if (tombstoned.count(r) != 0) d.insert(r);
            } else if (auto it = deleted_in.find(r); it != deleted_in.end()) {
              d.insert(it->second.begin(), it->second.end());
            }
          }
          in_progress.erase(h);
          deleted_in[h] = std::move(d);
          stack.pop_back();
        }
      }
      std::set<std::string> incomplete_keys;
      lmdb::Cursor cursor(txn, t.incomplete);
      for (auto e = cursor.first(); e; e = cursor.nextNoDup()) incomplete_keys.emplace(e->first);
      for (const auto& [h, d] : deleted_in) {
        std::set<std::string> have = dupSet(txn, t.incomplete, h);
        if (have != d) {
          problem(items.at(h).base_name, "incomplete set is {" + joinSet(have) +
                                             "}, deleted items in its closure are {" + joinSet(d) +
                                             "}");
        }
      }
      for (const auto& k : incomplete_keys) {
        if (items.count(k) == 0) problem(k, "incomplete entry for an item that is not valid");
      }
    }
    // Files, refcounts, listings and counters.
    std::map<std::string, std::uint64_t> refcount;
    std::uint64_t nar_size = 0;
    for (const auto& [h, f] : items) {
      ++refcount[f.file_name];
      nar_size += f.nar_size;
      if (!txn.has(t.listings, h)) problem(f.base_name, "has no listing");
      auto name = parseNarFileName(f.file_name);
      if (!name) {
        problem(f.base_name, "URL does not name a nar file: " + f.file_name);
        continue;
      }
      FileJob& job = files[f.file_name];
      job.name = f.file_name;
      job.compression = name->compression;
      job.name_hash = name->hash;
      job.items.push_back(h);
    }
    std::uint64_t nar_bytes = 0;
    std::unordered_map<std::string, FileRecord> file_records;
    std::unordered_set<std::uint32_t> file_ids;
    {
      lmdb::Cursor cursor(txn, t.files);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        std::string name(e->first);
        file_table.insert(name);
        auto rec = FileRecord::decode(e->second);
        if (!rec) {
          problem("nar/" + name, "file record is malformed");
          continue;
        }
        nar_bytes += rec->size;
        if (rec->id == 0 || !file_ids.insert(rec->id).second) {
          problem("nar/" + name, "file id " + std::to_string(rec->id) + " is not unique");
        }
        file_records.emplace(name, *rec);
        if (rec->refcount != refcount[name]) {
          problem("nar/" + name, "refcount is " + std::to_string(rec->refcount) + ", " +
                                     std::to_string(refcount[name]) + " items use it");
        }
      }
      for (const auto& [name, n] : refcount) {
        if (n != 0 && file_table.count(name) == 0) {
          problem("nar/" + name, "used by " + std::to_string(n) + " items but has no file record");
        }
      }
    }
    {
      lmdb::Cursor cursor(txn, t.listings);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        if (items.count(std::string(e->first)) == 0) {
          problem(std::string(e->first), "listing of an item that is not valid");
        }
      }
    }
    // The GC graph mirrors the items exactly: itemid (one distinct id per valid item), gcnode
    // (hash part, created, last access, NarSize, nar file size and id) and gcrefs (the
    // references to valid items, as ids).
    {
      std::unordered_map<std::string, std::uint32_t> ids;
      std::unordered_map<std::uint32_t, std::string> hash_of;
      const std::uint64_t max_id = counter(txn, t.meta, Counters::kNextItemId);
      lmdb::Cursor cursor(txn, t.itemid);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        std::string h(e->first);
        std::uint32_t id = decodeId(e->second);
        if (items.count(h) == 0) {
          problem(h, "item id entry for an item that is not valid");
          continue;
        }
        if (id == 0 || id > max_id || !hash_of.emplace(id, h).second) {
          problem(items[h].base_name, "item id " + std::to_string(id) + " is not unique");
          continue;
        }
        ids.emplace(h, id);
        items[h].id = id;
      }
      for (const auto& [h, f] : items) {
        if (ids.count(h) == 0) problem(f.base_name, "has no item id");
      }
      lmdb::Cursor nodes(txn, t.gcnode);
      std::size_t seen = 0;
      for (auto e = nodes.first(); e; e = nodes.next()) {
        const std::uint32_t id = decodeId(e->first);
        auto it = hash_of.find(id);
        if (it == hash_of.end()) {
          problem("gcnode " + std::to_string(id), "record of an id that is no valid item");
          continue;
        }
        ++seen;
        const ItemFacts& f = items.at(it->second);
        auto node = GcNodeRecord::decode(e->second);
        auto file = file_records.find(f.file_name);
        auto a = txn.get(t.atime, it->second);
        std::int64_t last_access = a ? static_cast<std::int64_t>(decodeU64(*a)) : 0;
        if (!node || node->hash_part != it->second || node->created != f.created ||
            node->nar_size != f.nar_size || node->last_access != last_access ||
            file == file_records.end() || node->file_size != file->second.size ||
            node->file_id != file->second.id) {
          problem(f.base_name, "gcnode record disagrees with the item");
        }
      }
      if (seen != hash_of.size()) {
        for (const auto& [id, h] : hash_of) {
          if (!txn.has(t.gcnode, encodeId(id))) problem(items.at(h).base_name, "has no gcnode");
        }
      }
      std::map<std::uint32_t, std::set<std::uint32_t>> edges;
      lmdb::Cursor refs(txn, t.gcrefs);
      for (auto e = refs.first(); e; e = refs.next()) {
        edges[decodeId(e->first)].insert(decodeId(e->second));
      }
      for (const auto& [h, f] : items) {
        auto id = ids.find(h);
        if (id == ids.end()) continue;
        std::set<std::uint32_t> want;
        for (const auto& r : f.refs) {
          if (auto target = ids.find(r); target != ids.end()) want.insert(target->second);
        }
        auto have = edges.find(id->second);
        if (want != (have == edges.end() ? std::set<std::uint32_t>{} : have->second)) {
          problem(f.base_name, "gcrefs edges disagree with its references");
        }
        if (have != edges.end()) edges.erase(have);
      }
      for (const auto& [id, unused] : edges) {
        problem("gcrefs " + std::to_string(id), "edges of an id that is no valid item");
      }
    }
    // Files awaiting their unlink are used by no item.
    {
      lmdb::Cursor cursor(txn, t.pending_unlink);
      for (auto e = cursor.first(); e; e = cursor.next()) {
        std::string name(e->first);
        pending_unlink[name] = static_cast<std::int64_t>(decodeU64(e->second));
        if (file_table.count(name) != 0) {
          problem("nar/" + name, "awaits its unlink but items use it");
        }
      }
    }
    auto check_counter = [&](std::string_view key, std::uint64_t want) {
      auto v = txn.get(t.meta, key);
      std::uint64_t have = v ? decodeU64(*v) : 0;
      if (have != want) {
        problem(std::string(key),
                "is " + std::to_string(have) + ", should be " + std::to_string(want));
      }
    };
    check_counter(Counters::kItems, items.size());
    check_counter(Counters::kTombstones, tombstoned.size());
    check_counter(Counters::kNarFiles, file_table.size());
    check_counter(Counters::kNarBytes, nar_bytes);
    check_counter(Counters::kNarSize, nar_size);
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e));
  }

  // File checks in parallel.
  std::vector<FileJob*> jobs;
  for (auto& [name, job] : files) jobs.push_back(&job);
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> done{0};
  std::atomic<std::uint64_t> bytes{0};
  std::atomic<unsigned> running{0};
  std::mutex failed_mutex;
  std::string failed;  // a worker's exception: the files it left are not verified
  unsigned threads =
      options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = std::min<unsigned>(threads, std::max<std::size_t>(1, jobs.size()));
  {
    std::vector<std::jthread> workers;
    running = threads;
    for (unsigned i = 0; i < threads; ++i) {
      workers.emplace_back([&] {
        struct Leave {
          std::atomic<unsigned>& running;
          ~Leave() { --running; }
        } leave{running};
        try {
          for (std::size_t k = next++; k < jobs.size(); k = next++) {
            FileJob& job = *jobs[k];
            job.seen = identify(store->narDir() / job.name);
            auto check = checkNarFile(store->narDir() / job.name, job.compression, false);
            if (!check) {
              job.error = check.error().message();
              job.repairable = isAboutTheContent(check.error().code());
            } else {
              job.bytes = check->file_size;
              bytes += check->file_size;
              std::string err;
              if (!(check->file_hash == job.name_hash)) {
                err = "content hashes to " + check->file_hash.toString() + ", not to its name";
              }
              for (const auto& h : job.items) {
                const ItemFacts& f = items.at(h);
                if (!err.empty()) break;
                if (f.file_hash && !(*f.file_hash == check->file_hash)) {
                  err = f.base_name + ": FileHash " + f.file_hash->toString() + " but file has " +
                        check->file_hash.toString();
                } else if (f.file_size && *f.file_size != check->file_size) {
                  err = f.base_name + ": FileSize " + std::to_string(*f.file_size) +
                        " but file has " + std::to_string(check->file_size) + " bytes";
                } else if (!(f.nar_hash == check->nar_hash)) {
                  err = f.base_name + ": NarHash " + f.nar_hash.toString() + " but NAR hashes to " +
                        check->nar_hash.toString();
                } else if (f.nar_size != check->nar_size) {
                  err = f.base_name + ": NarSize " + std::to_string(f.nar_size) + " but NAR has " +
                        std::to_string(check->nar_size) + " bytes";
                }
              }
              job.error = err;
              job.repairable = true;
            }
            ++done;
          }
        } catch (const std::exception& e) {  // thread entry point
          std::lock_guard lock(failed_mutex);
          if (failed.empty()) failed = e.what();
          next = jobs.size();
        }
      });
    }
    if (options.progress) {
      while (running.load() != 0) {  // not `done`: a worker that failed never reaches the end
        std::fprintf(stderr, "\rverify: %zu/%zu nar files, %llu MB", done.load(), jobs.size(),
                     static_cast<unsigned long long>(bytes.load() >> 20));
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
  }
  if (!failed.empty()) {
    // Its files were never checked: no report that would count them as fine.
    return fail(ErrorCode::kInternal, "verify: checking nar files: " + failed);
  }
  if (options.progress) {
    std::fprintf(stderr, "\rverify: %zu/%zu nar files, %llu MB\n", done.load(), jobs.size(),
                 static_cast<unsigned long long>(bytes.load() >> 20));
  }
  report.nar_files = jobs.size();
  report.awaiting_unlink = pending_unlink.size();
  report.bytes_read = bytes.load();

  if (options.before_repair) options.before_repair();
  for (FileJob* job : jobs) {
    if (job->error.empty()) continue;
    // The snapshot is old by now: the repair acts only on what is still as it was checked.
    std::set<std::string> repaired;
    std::string not_repaired;
    if (options.repair && !job->repairable) {
      not_repaired =
          "the file could not be read, which says nothing of its content; fix that and verify "
          "again";
    } else if (options.repair) {
      std::vector<std::pair<std::string, std::uint32_t>> users;
      for (const auto& h : job->items) users.emplace_back(h, items.at(h).id);
      Tombstone why{store->now(), "verify: nar file " + job->name + ": " + job->error, "verify"};
      const std::filesystem::path path = store->narDir() / job->name;
      auto tombstoned = store->repairNarFile(job->name, users, why, job->seen.error == 0,
                                             [&] { return identify(path) == job->seen; });
      if (tombstoned) {
        repaired.insert(tombstoned->begin(), tombstoned->end());
        not_repaired = "changed meanwhile, left alone; verify again";
      } else {
        not_repaired = tombstoned.error().message();
      }
    }
    for (const auto& h : job->items) {
      VerifyProblem p{items.at(h).base_name, "nar file " + job->name + ": " + job->error, false};
      if (repaired.count(h) != 0) {
        p.repaired = true;
      } else if (options.repair) {
        p.message += " (not repaired: " + not_repaired + ")";
      }
      report.problems.push_back(std::move(p));
    }
  }

  // Orphans: anything in tmp/, and nar/ files no valid item uses.
  std::int64_t now = store->now();
  auto consider = [&](const std::filesystem::path& p, const std::string& label, bool is_nar) {
    // A nar file awaiting GC's unlink is no orphan: the collector removes it after its nar
    // grace (--nar-grace), which verify must not cut short. (Checked again when removing: a
    // file uploaded since the snapshot awaits its narinfo.)
    if (is_nar && pending_unlink.count(p.filename().string()) != 0) return;
    std::int64_t age = fileAge(p, now);
    bool old_enough = options.all_orphans || age >= options.orphan_grace_seconds;
    if (options.repair && old_enough) {
      bool removed = false;
      if (is_nar) {
        auto r = store->removeUnclaimedNarFile(p.filename().string());
        removed = r && *r;
        if (r && !*r && !std::filesystem::exists(p)) return;
      } else {
        std::error_code ec;
        removed = std::filesystem::remove_all(p, ec) > 0;
      }
      if (removed) {
        report.removed_orphans.push_back(label);
        return;
      }
      if (is_nar) return;  // used or uploaded meanwhile
    }
    report.orphans.push_back(label);
  };
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(store->tmpDir(), ec)) {
    consider(e.path(), "tmp/" + e.path().filename().string(), false);
  }
  std::vector<std::filesystem::path> nar_entries;
  for (const auto& e : std::filesystem::directory_iterator(store->narDir(), ec)) {
    nar_entries.push_back(e.path());
  }
  std::sort(nar_entries.begin(), nar_entries.end());
  for (const auto& p : nar_entries) {
    std::string name = p.filename().string();
    if (file_table.count(name) != 0) continue;
    // Written after our snapshot by a concurrent upload? Then the table knows it now.
    auto live = store->narFilePath(name);
    if (live && parseNarFileName(name)) {
      try {
        lmdb::ReadTxn txn = store->env().beginRead();
        if (txn.has(t.files, name)) continue;
      } catch (const lmdb::Error& e) {
        return fail(lmdb::toError(e));
      }
    }
    consider(p, "nar/" + name, parseNarFileName(name).has_value());
  }
  return report;
}

}  // namespace narcache::narstore
