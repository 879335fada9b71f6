#pragma once
// Helpers of the gc tests: hand-made StoreGraphs for the planner, a settable clock, store
// items (from the narstore test helpers) and closure checks over a real store.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "narcache/narstore/store.h"
#include "narstore/helpers.h"

namespace narcache::gc::testing {

using narstore::testing::pathFor;

// Builds a StoreGraph by item names (store paths from pathFor(name)).
class GraphBuilder {
 public:
  explicit GraphBuilder(std::int64_t now) : now_(now) {}

  // refs by name (may name the item itself: dropped, as the store does); file "" = own file.
  void item(const std::string& name, const std::vector<std::string>& refs, std::int64_t created,
            std::int64_t last_access = 0, const std::string& file = "",
            std::uint64_t file_size = 100) {
    items_.push_back(
        Item{name, refs, created, last_access, file.empty() ? "f-" + name : file, file_size});
  }
  void root(const std::string& name, const std::vector<std::string>& paths,
            std::optional<std::int64_t> expires = std::nullopt) {
    std::vector<StorePath> ps;
    for (const auto& p : paths) ps.push_back(pathFor(p));
    rootRaw(name, ps, expires);
  }
  void rootRaw(const std::string& name, const std::vector<StorePath>& paths,
               std::optional<std::int64_t> expires = std::nullopt) {
    roots_.push_back(narstore::Root{name, paths, now_ - 1, expires});
  }

  std::string nameOf(const std::string& hash_part) const {
    for (const auto& i : items_) {
      if (pathFor(i.name).hashPart() == hash_part) return i.name;
    }
    return "?";
  }

  narstore::StoreGraph graph() const {
    std::vector<const Item*> sorted;
    for (const auto& i : items_) sorted.push_back(&i);
    std::sort(sorted.begin(), sorted.end(), [](const Item* a, const Item* b) {
      return pathFor(a->name).hashPart() < pathFor(b->name).hashPart();
    });
    narstore::StoreGraph g;
    g.scanned_at = now_;
    std::map<std::string, std::uint32_t> files;
    for (const Item* i : sorted) {
      if (files.count(i->file) == 0) {
        files[i->file] = 0;
      }
    }
    std::uint32_t k = 0;
    for (auto& [name, index] : files) index = k++;
    g.file_size.assign(files.size(), 0);
    g.file_refcount.assign(files.size(), 0);
    for (const Item* i : sorted) {
      g.hashes += pathFor(i->name).hashPart();
      g.created.push_back(i->created);
      g.last_access.push_back(i->last_access);
      g.nar_size.push_back(i->file_size);
      g.file.push_back(files[i->file]);
      g.file_size[files[i->file]] = i->file_size;
      ++g.file_refcount[files[i->file]];
    }
    g.ref_offsets.push_back(0);
    for (const Item* i : sorted) {
      std::vector<std::uint32_t> targets;
      for (const auto& r : i->refs) {
        if (r == i->name) continue;
        auto t = g.find(pathFor(r).hashPart());
        EXPECT_TRUE(t.has_value()) << r;
        if (t) targets.push_back(*t);
      }
      std::sort(targets.begin(), targets.end());
      for (auto t : targets) g.ref_targets.push_back(t);
      g.ref_offsets.push_back(g.ref_targets.size());
    }
    g.roots = roots_;
    return g;
  }

 private:
  struct Item {
    std::string name;
    std::vector<std::string> refs;
    std::int64_t created;
    std::int64_t last_access;
    std::string file;
    std::uint64_t file_size;
  };
  std::int64_t now_;
  std::vector<Item> items_;
  std::vector<narstore::Root> roots_;
};

// A clock tests move by hand (thread-safe).
struct ManualClock {
  std::shared_ptr<std::atomic<std::int64_t>> now =
      std::make_shared<std::atomic<std::int64_t>>(1'700'000'000);
  narstore::Clock clock() const {
    auto n = now;
    return [n] { return n->load(); };
  }
  void advance(std::int64_t seconds) const { *now += seconds; }
};

// Every valid item's references are valid items (invariant 1 as stored). Returns the
// offending "<item> -> <missing ref>" pairs.
inline std::vector<std::string> brokenClosures(const narstore::Store& store) {
  std::vector<std::string> out;
  auto g = store.scanGraph();
  EXPECT_TRUE(g.has_value());
  if (!g) return {"scan failed"};
  std::map<std::string, bool> valid;
  auto status = store.forEachItem([&](const narstore::StoredItem& item) {
    valid[item.info.path.hashPart()] = true;
    return true;
  });
  EXPECT_TRUE(status.has_value());
  (void)store.forEachItem([&](const narstore::StoredItem& item) {
    for (const auto& r : item.info.references) {
      if (valid.count(r.hashPart()) == 0 &&
          store.status(r.hashPart()).state == narstore::ItemState::kMissing) {
        out.push_back(item.info.path.baseName() + " -> " + r.baseName());
      }
    }
    return true;
  });
  return out;
}

}  // namespace narcache::gc::testing
