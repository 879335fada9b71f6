// The GC planner: marks the live set on the scanned graph (see gc.h for the policy).
//
// The graph is a Boost compressed_sparse_row_graph (items as vertices, "references" as
// edges): two flat arrays, ~4 bytes per edge, built from the scan's CSR in one pass. Marking
// is a multi-source breadth-first walk; the size budget is a min-heap of evictable items (kept,
// unprotected, referenced by no kept item) keyed by last use; the deletion order is Kahn's
// topological order restricted to the deleted items (referrers first).

#include <boost/graph/compressed_sparse_row_graph.hpp>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <queue>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "narcache/gc/gc.h"

namespace narcache::gc {
namespace {

using Vertex = std::uint32_t;
using Graph =
    boost::compressed_sparse_row_graph<boost::directedS, boost::no_property, boost::no_property,
                                       boost::no_property, Vertex, std::uint64_t>;

// Iterates the scan's CSR arrays as sorted (source, target) pairs, for Boost's constructor.
class EdgeIterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = std::pair<Vertex, Vertex>;
  using difference_type = std::ptrdiff_t;
  using pointer = const value_type*;
  using reference = const value_type&;

  EdgeIterator(const narstore::StoreGraph* g, std::uint64_t edge) : g_(g), edge_(edge) { settle(); }
  const value_type& operator*() const { return current_; }
  const value_type* operator->() const { return &current_; }
  EdgeIterator& operator++() {
    ++edge_;
    settle();
    return *this;
  }
  EdgeIterator operator++(int) {
    EdgeIterator old = *this;
    ++*this;
    return old;
  }
  bool operator==(const EdgeIterator& o) const { return edge_ == o.edge_; }
  bool operator!=(const EdgeIterator& o) const { return edge_ != o.edge_; }

 private:
  void settle() {
    while (source_ + 1 < g_->ref_offsets.size() && g_->ref_offsets[source_ + 1] <= edge_) {
      ++source_;
    }
    if (edge_ < g_->ref_targets.size()) current_ = {source_, g_->ref_targets[edge_]};
  }
  const narstore::StoreGraph* g_;
  std::uint64_t edge_;
  Vertex source_ = 0;
  value_type current_{0, 0};
};

enum Reason : std::uint8_t { kNone = 0, kRoot, kGrace, kRecent, kReferenced };

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Plan planFromGraph(const narstore::StoreGraph& g, const Policy& policy) {
  auto start = std::chrono::steady_clock::now();
  Plan plan;
  plan.policy = policy;
  plan.planned_at = g.scanned_at;
  plan.roots_generation = g.roots_generation;
  PlanSummary& s = plan.summary;
  const std::size_t n = g.size();
  const std::int64_t now = g.scanned_at;
  const std::uint64_t edges = g.ref_targets.size();

  Graph graph(boost::edges_are_sorted, EdgeIterator(&g, 0), EdgeIterator(&g, edges), n);
  auto visit = [&](Vertex v, auto&& fn) {
    for (auto [it, end] = boost::adjacent_vertices(v, graph); it != end; ++it) fn(*it);
  };

  std::vector<std::uint8_t> reason(n, kNone);
  // Multi-source walk over references: marks unmarked vertices reachable from `queue` with
  // `label` (the sources keep whatever they were given).
  std::vector<Vertex> queue;
  auto walk = [&](std::vector<Vertex>& q, std::uint8_t label, std::vector<std::uint8_t>& mark) {
    while (!q.empty()) {
      Vertex v = q.back();
      q.pop_back();
      visit(v, [&](Vertex w) {
        if (mark[w] == kNone) {
          mark[w] = label;
          q.push_back(w);
        }
      });
    }
  };

  // 1. Unexpired roots: their whole closures.
  std::vector<std::string> root_hashes;
  for (const narstore::Root& root : g.roots) {
    ++s.roots;
    if (root.expired(now)) {
      ++s.roots_expired;
      continue;
    }
    for (const StorePath& p : root.paths) root_hashes.push_back(p.hashPart());
  }
  std::vector<std::string_view> root_views(root_hashes.begin(), root_hashes.end());
  for (const auto& v : g.findAll(root_views)) {
    if (!v) {
      ++s.root_paths_missing;
      continue;
    }
    if (reason[*v] == kNone) {
      reason[*v] = kRoot;
      queue.push_back(*v);
    }
  }
  walk(queue, kRoot, reason);

  // 2. Own reasons: grace, then recent; 3. their closures ("referenced").
  std::vector<Vertex> grace_sources;
  for (Vertex v = 0; v < n; ++v) {
    if (reason[v] != kNone) continue;
    if (now - g.created[v] < policy.grace_seconds) {
      reason[v] = kGrace;
      grace_sources.push_back(v);
      queue.push_back(v);
      continue;
    }
    std::int64_t used = std::max(g.last_access[v], g.created[v]);
    if (!policy.ttl_seconds || now - used < *policy.ttl_seconds) {
      reason[v] = kRecent;
      queue.push_back(v);
    }
  }
  walk(queue, kReferenced, reason);

  // Nar file bytes: a file counts while any counted item uses it.
  const std::size_t n_files = g.file_size.size();
  auto fileOf = [&](Vertex v) -> std::uint32_t { return g.file[v]; };
  std::vector<std::uint32_t> users(n_files, 0);
  for (Vertex v = 0; v < n; ++v) {
    if (fileOf(v) < n_files && users[fileOf(v)]++ == 0) s.bytes += g.file_size[fileOf(v)];
  }
  s.items = n;

  // 4. Size budget: evict least recently used unprotected kept items, leaves first.
  std::vector<std::uint8_t> evicted(n, 0);
  if (policy.max_size_bytes) {
    const std::uint64_t budget = *policy.max_size_bytes;
    // Protected: root closures (reason kRoot) and closures of items within their grace.
    std::vector<std::uint8_t> protect(n, kNone);
    for (Vertex v = 0; v < n; ++v) {
      if (reason[v] == kRoot) protect[v] = kRoot;
    }
    for (Vertex v : grace_sources) {
      if (protect[v] == kNone) {
        protect[v] = kGrace;
        queue.push_back(v);
      }
    }
    walk(queue, kGrace, protect);
    {
      std::vector<std::uint8_t> seen_file(n_files, 0);
      for (Vertex v = 0; v < n; ++v) {
        if (reason[v] == kRoot && fileOf(v) < n_files && !seen_file[fileOf(v)]) {
          seen_file[fileOf(v)] = 1;
          s.root_bytes += g.file_size[fileOf(v)];
        }
      }
    }
    std::vector<std::uint32_t> kept_users(n_files, 0);
    std::uint64_t kept_bytes = 0;
    std::vector<std::uint32_t> kept_referrers(n, 0);
    for (Vertex v = 0; v < n; ++v) {
      if (reason[v] == kNone) continue;
      if (fileOf(v) < n_files && kept_users[fileOf(v)]++ == 0) {
        kept_bytes += g.file_size[fileOf(v)];
      }
      visit(v, [&](Vertex w) { ++kept_referrers[w]; });
    }
    // Files a protected item uses stay whatever else goes: evicting another of their users
    // would delete an item and free nothing.
    std::vector<std::uint8_t> file_stays(n_files, 0);
    for (Vertex v = 0; v < n; ++v) {
      if (reason[v] != kNone && protect[v] != kNone && fileOf(v) < n_files) {
        file_stays[fileOf(v)] = 1;
      }
    }
    if (kept_bytes > budget) {
      using Entry = std::pair<std::int64_t, Vertex>;  // (last use, item): oldest first
      std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
      auto lastUse = [&](Vertex v) { return std::max(g.last_access[v], g.created[v]); };
      for (Vertex v = 0; v < n; ++v) {
        if (reason[v] != kNone && protect[v] == kNone && kept_referrers[v] == 0) {
          heap.emplace(lastUse(v), v);
        }
      }
      while (kept_bytes > budget && !heap.empty()) {
        Vertex v = heap.top().second;
        heap.pop();
        if (fileOf(v) < n_files && file_stays[fileOf(v)]) continue;  // would free nothing
        evicted[v] = 1;
        if (fileOf(v) < n_files && --kept_users[fileOf(v)] == 0) {
          kept_bytes -= g.file_size[fileOf(v)];
        }
        visit(v, [&](Vertex w) {
          if (--kept_referrers[w] == 0 && protect[w] == kNone && reason[w] != kNone &&
              !evicted[w]) {
            heap.emplace(lastUse(w), w);
          }
        });
      }
      if (kept_bytes > budget) {
        s.over_budget = true;
        s.roots_exceed_budget = s.root_bytes > budget;
      }
    }
  }

  // Summary and the deletion order (Kahn over the deleted items: referrers first).
  std::vector<std::uint32_t> deleted_referrers(n, 0);
  auto deleted = [&](Vertex v) { return reason[v] == kNone || evicted[v]; };
  std::vector<std::uint32_t> kept_users(n_files, 0);
  for (Vertex v = 0; v < n; ++v) {
    if (deleted(v)) {
      ++s.delete_items;
      s.delete_nar_size += g.nar_size[v];
      if (evicted[v]) {
        ++s.delete_budget;
      } else {
        ++s.delete_ttl;
      }
      visit(v, [&](Vertex w) { ++deleted_referrers[w]; });
      continue;
    }
    ++s.keep_items;
    if (fileOf(v) < n_files && kept_users[fileOf(v)]++ == 0) {
      s.keep_bytes += g.file_size[fileOf(v)];
    }
    switch (reason[v]) {
      case kRoot: ++s.kept_root; break;
      case kGrace: ++s.kept_grace; break;
      case kRecent: ++s.kept_recent; break;
      default: ++s.kept_referenced; break;
    }
  }
  s.delete_bytes = s.bytes - s.keep_bytes;
  plan.deletions.reserve(s.delete_items);
  for (Vertex v = 0; v < n; ++v) {
    if (deleted(v) && deleted_referrers[v] == 0) queue.push_back(v);
  }
  // FIFO order keeps batches wide: all top-level items, then what only they referenced...
  for (std::size_t head = 0; head < queue.size(); ++head) {
    Vertex v = queue[head];
    plan.deletions.push_back(
        narstore::GcCandidate{std::string(g.hashPart(v)), g.created[v], g.last_access[v]});
    visit(v, [&](Vertex w) {
      if (deleted(w) && --deleted_referrers[w] == 0) queue.push_back(w);
    });
  }
  // (Items on a reference cycle would be left out here; store paths cannot form one.)
  plan.mark_seconds = since(start);
  return plan;
}

Result<Plan> planCollection(const narstore::Store& store, const Policy& policy) {
  auto start = std::chrono::steady_clock::now();
  auto graph = store.scanGraph();
  if (!graph) return fail(graph.error());
  double scan = since(start);
  Plan plan = planFromGraph(*graph, policy);
  plan.scan_seconds = scan;
  return plan;
}

}  // namespace narcache::gc
