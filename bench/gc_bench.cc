// GC planning benchmark: a store with ITEMS items and ~4 references each, `gc --dry-run`
// planning (scan + mark) against a bare full scan of the references table, in one process.
//
//   bench_gc_bench generate DIR [ITEMS]   (default 1000000) fills a new store at DIR
//   bench_gc_bench measure DIR [RUNS]     bare scan and planning, best of RUNS (default 3)
//
// The generator writes narinfos directly with narstore's trusted bulk loader
// (addTrustedNarInfos: the closure invariant is checked, nar files are NOT written or read, so
// `narcache verify` would report them missing). Realistic fan-out: each item references 0-8
// earlier items (mean ~4): a third of the edges go to 2,000 "popular" base items (glibc,
// bash...), the rest to items uploaded shortly before (a closure uploaded together); one item in
// 20 references itself; one in 10 shares its nar file with another. Edges go to popular items
// or to earlier items of the same group of 200 (so closures stay realistic: thousands of items,
// not the whole store). Creation times spread over
// 180 days; 30% of the items were accessed at generation time. Plans use
// --ttl 30d --grace 1h plus a root on 100 items, and once more with --max-size half the store.
// Peak memory of planning is VmHWM, reset (/proc/self/clear_refs) before each plan so that the
// bare scans, which leave the file mapped, do not count; it includes the pages of the LMDB file
// mapped into the process (shared page cache; the kernel maps neighbours of each faulted page
// too); /proc/self/status RssAnon vs RssFile after planning shows the split.

#include <sys/mman.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "narcache/gc/gc.h"
#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narstore/bulk_load.h"
#include "narcache/narstore/store.h"

namespace {

using namespace narcache;
using SteadyClock = std::chrono::steady_clock;

constexpr std::int64_t kNow = 1'760'000'000;
constexpr std::int64_t kDay = 86400;

double seconds(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// "RssAnon: ... kB" and "RssFile: ..." from /proc/self/status, in MiB: private memory vs
// pages of the (shared, page-cached) LMDB file mapped into the process.
std::string rssSplit() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return "?";
  char line[256];
  std::string out;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    long kb = 0;
    if (std::sscanf(line, "RssAnon: %ld kB", &kb) == 1) out += "anon " + std::to_string(kb / 1024);
    if (std::sscanf(line, "RssFile: %ld kB", &kb) == 1) {
      out += " MiB, file " + std::to_string(kb / 1024) + " MiB";
    }
  }
  std::fclose(f);
  return out;
}

long maxRssMiB() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024;
}

// Unmaps the pages of every shared mapping (the LMDB file) from this process, so that planning
// starts as in a fresh `narcache gc` process, then resets VmHWM to the resident set (Linux >= 4.0).
void resetPeakRss() {
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  if (maps != nullptr) {
    char line[4096];
    while (std::fgets(line, sizeof line, maps) != nullptr) {
      unsigned long start = 0;
      unsigned long end = 0;
      char perms[5] = {};
      if (std::sscanf(line, "%lx-%lx %4s", &start, &end, perms) == 3 && perms[3] == 's') {
        ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
      }
    }
    std::fclose(maps);
  }
  if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

// VmHWM from /proc/self/status, in MiB.
long peakRssMiB() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  long kb = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
  }
  std::fclose(f);
  return kb < 0 ? -1 : kb / 1024;
}

StorePath pathOf(std::size_t i) {
  auto digest = compressHash(hashString(HashAlgo::kSha256, "item:" + std::to_string(i)), 20);
  return *StorePath::parseBaseName(nix32Encode(Bytes(digest.data(), digest.size())) + "-pkg-" +
                                   std::to_string(i));
}

int generate(const std::string& dir, std::size_t items) {
  narstore::StoreOptions options;
  options.root = dir;
  options.clock = [] { return kNow; };
  auto store = narstore::Store::init(options);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().message().c_str());
    return 1;
  }
  std::mt19937_64 rng(42);
  auto start = SteadyClock::now();
  std::vector<StorePath> paths;
  paths.reserve(items);
  for (std::size_t i = 0; i < items; ++i) paths.push_back(pathOf(i));
  std::uint64_t edges = 0;
  constexpr std::size_t kChunk = 50000;
  constexpr std::size_t kPopular = 2000;
  constexpr std::size_t kGroup = 200;  // a "closure" uploaded together
  std::vector<std::int64_t> created(items);
  for (std::size_t i = 0; i < items; ++i) {
    created[i] = kNow - 180 * kDay + static_cast<std::int64_t>(i * (180 * kDay) / items);
  }
  for (std::size_t start_i = 0; start_i < items; start_i += kChunk) {
    std::vector<NarInfo> infos;
    std::size_t end = std::min(items, start_i + kChunk);
    for (std::size_t i = start_i; i < end; ++i) {
      NarInfo info;
      info.path = paths[i];
      std::size_t file_id = (i % 10 == 9 && i > 0) ? i - 1 : i;  // 1 in 10 shares a file
      Hash fh = hashString(HashAlgo::kSha256, "file:" + std::to_string(file_id));
      info.compression = "zstd";
      info.url = "nar/" + fh.digestString(HashFormat::kNix32) + ".nar.zst";
      info.file_hash = fh;
      info.file_size = 1000 + (file_id * 7919) % 200000;
      info.nar_hash = hashString(HashAlgo::kSha256, "nar:" + std::to_string(file_id));
      info.nar_size = *info.file_size * 3;
      std::set<std::size_t> refs;
      if (i > 0) {
        std::size_t k = rng() % 9;  // 0..8, mean 4
        for (std::size_t j = 0; j < k; ++j) {
          std::size_t target;
          std::size_t group_start = i - i % kGroup;
          if (rng() % 3 == 0 || i == group_start || i < kPopular) {
            target = rng() % std::min(i, kPopular);
          } else {
            target = group_start + rng() % (i - group_start);
          }
          refs.insert(target);
        }
      }
      if (i % 20 == 0) refs.insert(i);
      for (auto r : refs) info.references.push_back(paths[r]);
      edges += refs.size() - (refs.count(i) ? 1 : 0);
      std::sort(info.references.begin(), info.references.end());
      infos.push_back(std::move(info));
    }
    // Items of a chunk share the chunk's creation time (the bulk loader takes one).
    auto added = narstore::addTrustedNarInfos(**store, infos, created[start_i]);
    if (!added) {
      std::fprintf(stderr, "%s\n", added.error().message().c_str());
      return 1;
    }
    std::fprintf(stderr, "\rgenerated %zu/%zu items", end, items);
  }
  std::fprintf(stderr, "\n");
  // Access times: 30% of the items (at generation time).
  for (std::size_t i = 0; i < items; ++i) {
    if (rng() % 10 < 3) (*store)->recordAccess(paths[i].hashPart());
  }
  if (auto f = (*store)->flushAccessTimes(); !f) {
    std::fprintf(stderr, "%s\n", f.error().message().c_str());
    return 1;
  }
  std::vector<StorePath> root_paths;
  for (std::size_t i = items - 100; i < items; ++i) root_paths.push_back(paths[i]);
  if (auto r = (*store)->addRoot({"release", root_paths, kNow, std::nullopt}); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  std::printf("generated %zu items, %llu references in %.1fs\n", items,
              static_cast<unsigned long long>(edges), seconds(start));
  return 0;
}

int measure(const std::string& dir, int runs) {
  narstore::StoreOptions options;
  options.root = dir;
  // Planning "now" is 1 day after generation: the accessed ones (last 60 days... as flushed
  // at generation time) and the young ones stay.
  options.clock = [] { return kNow + kDay; };
  auto store = narstore::Store::open(options);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().message().c_str());
    return 1;
  }
  gc::Policy policy;
  policy.ttl_seconds = 30 * kDay;
  double best_scan = 1e9;
  double best_plan = 1e9;
  double best_graph = 1e9;
  double best_mark = 1e9;
  gc::Plan plan;
  std::uint64_t refs = 0;
  long plan_peak = 0;
  for (int r = 0; r < runs; ++r) {
    auto t = SteadyClock::now();
    auto n = narstore::scanReferencesTable(**store);
    if (!n) return 1;
    refs = *n;
    best_scan = std::min(best_scan, seconds(t));
    long rss_scan = maxRssMiB();
    resetPeakRss();
    t = SteadyClock::now();
    auto p = gc::planCollection(**store, policy);
    if (!p) {
      std::fprintf(stderr, "%s\n", p.error().message().c_str());
      return 1;
    }
    best_plan = std::min(best_plan, seconds(t));
    plan_peak = std::max(plan_peak, peakRssMiB());
    // The plan (and its deletions list) is alive here; the graph was freed.
    std::fprintf(stderr, "after planning: %s\n", rssSplit().c_str());
    best_graph = std::min(best_graph, p->scan_seconds);
    best_mark = std::min(best_mark, p->mark_seconds);
    plan = std::move(*p);
    std::fprintf(stderr,
                 "run %d: bare scan %.3fs (rss %ld MiB), plan %.3fs (scan %.3fs, mark %.3fs)\n",
                 r + 1, best_scan, rss_scan, seconds(t), plan.scan_seconds, plan.mark_seconds);
  }
  const auto& s = plan.summary;
  std::printf("items %llu, references %llu\n", static_cast<unsigned long long>(s.items),
              static_cast<unsigned long long>(refs));
  std::printf("bare refs scan: %.3f s\n", best_scan);
  std::printf(
      "plan (--ttl 30d): %.3f s = graph scan %.3f s + mark %.3f s; ratio to bare scan %.2fx\n",
      best_plan, best_graph, best_mark, best_plan / best_scan);
  std::printf(
      "plan: delete %llu items (%s), keep %llu (root %llu, grace %llu, recent %llu, "
      "referenced %llu)\n",
      static_cast<unsigned long long>(s.delete_items), gc::formatBytes(s.delete_bytes).c_str(),
      static_cast<unsigned long long>(s.keep_items), static_cast<unsigned long long>(s.kept_root),
      static_cast<unsigned long long>(s.kept_grace), static_cast<unsigned long long>(s.kept_recent),
      static_cast<unsigned long long>(s.kept_referenced));
  gc::Policy budget = policy;
  budget.max_size_bytes = s.bytes / 2;
  resetPeakRss();
  auto t = SteadyClock::now();
  auto p2 = gc::planCollection(**store, budget);
  if (!p2) return 1;
  plan_peak = std::max(plan_peak, peakRssMiB());
  std::printf("plan (--ttl 30d --max-size %s): %.3f s, deletes %llu items (%llu by budget)\n",
              gc::formatBytes(*budget.max_size_bytes).c_str(), seconds(t),
              static_cast<unsigned long long>(p2->summary.delete_items),
              static_cast<unsigned long long>(p2->summary.delete_budget));
  std::printf("peak RSS of planning: %ld MiB (VmHWM, reset after each bare scan)\n", plan_peak);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s generate DIR [ITEMS] | measure DIR [RUNS]\n", argv[0]);
    return 2;
  }
  std::string mode = argv[1];
  if (mode == "generate") {
    return generate(argv[2], argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1000000);
  }
  if (mode == "measure") return measure(argv[2], argc > 3 ? std::atoi(argv[3]) : 3);
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
