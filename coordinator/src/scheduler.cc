// The agent side of the coordinator: fetch (allocation after asking the store), heartbeat,
// results (retries, failing derivations, waiters), release, and maintenance (lease reaper,
// waiting re-check). See coordinator.h and docs/coordinator.md.

#include <algorithm>
#include <cmath>
#include <optional>

#include "impl.h"

namespace narcache::coordinator {
namespace {

constexpr int kMaxBackoffDoublings = 20;
constexpr std::int64_t kMaxReleaseWaitSeconds = 600;  // a given-back build waits at most this
constexpr const char* kBuiltinSystem = "builtin";

// Whether the store lacks `path` (it is not available); a deleted one goes into `deleted` with
// its tombstone's time.
bool isMissing(const std::string& path, const narstore::ItemStatus& status, DeletedAt& deleted) {
  if (status.state == narstore::ItemState::kDeleted) {
    deleted[path] = status.tombstone ? status.tombstone->when : 0;
  }
  return status.state != narstore::ItemState::kAvailable;
}

}  // namespace

Result<FetchResponse> Coordinator::fetch(const std::string& agent, const FetchRequest& request) {
  Impl& d = *impl_;
  FetchResponse response;
  response.poll_seconds = 1;
  std::size_t capacity = static_cast<std::size_t>(
      std::clamp(request.max_parallel - request.running, 0, d.options.max_allocations_per_fetch));
  // Derivations of system "builtin" (Nix's builtin:fetchurl, say) are for any agent, as in Nix.
  std::vector<std::string> systems = request.systems;
  if (std::find(systems.begin(), systems.end(), kBuiltinSystem) == systems.end()) {
    systems.push_back(kBuiltinSystem);
  }
  std::vector<std::uint64_t> repeated;
  {
    std::lock_guard lock(d.mu);
    AgentState& a = d.mem.agents[agent];
    a.systems = request.systems;
    a.features = request.features;
    a.max_parallel = request.max_parallel;
    a.last_seen = d.now();
    if (!request.request_id.empty()) {
      auto it = d.mem.fetches.find(agent + "\n" + request.request_id);
      if (it != d.mem.fetches.end()) repeated = it->second;
    }
  }
  // Builds the Allocation answers from the database (the .drv texts).
  auto describe = [&](const lmdb::Txn& txn, std::uint64_t alloc_id,
                      std::uint64_t build_id) -> Result<Allocation> {
    auto record = d.loadBuild(txn, build_id);
    if (!record) return fail(record.error());
    Allocation a;
    a.allocation_id = alloc_id;
    a.build_id = build_id;
    a.derivation = record->info.derivation;
    a.lease_seconds = d.options.lease_seconds;
    a.timeout_seconds = d.options.build_timeout_seconds;
    a.max_silent_seconds = d.options.max_silent_seconds;
    auto text = txn.get(d.drv_text, a.derivation);
    if (!text) return fail(ErrorCode::kInternal, "no text for " + a.derivation);
    a.derivations.push_back({a.derivation, std::string(*text)});
    auto drv = d.loadDrv(txn, a.derivation);
    if (!drv) return fail(drv.error());
    if (*drv) {
      for (const auto& [input, names] : (*drv)->input_drvs) {
        if (auto t = txn.get(d.drv_text, input)) a.derivations.push_back({input, std::string(*t)});
      }
    }
    return a;
  };
  if (!repeated.empty()) {
    // A retried fetch: the same allocations again (those still open).
    try {
      lmdb::ReadTxn txn = d.env->beginRead();
      for (std::uint64_t alloc : repeated) {
        auto value = txn.get(d.allocs, idKey(alloc));
        if (!value) continue;
        auto record = decodeAlloc(*value);
        if (!record) return fail(record.error());
        auto a = describe(txn, alloc, record->build);
        if (!a) return fail(a.error());
        response.allocations.push_back(std::move(*a));
      }
    } catch (const lmdb::Error& e) {
      return fail(lmdb::toError(e));
    }
    return response;
  }

  for (int round = 0; round < 4 && response.allocations.size() < capacity; ++round) {
    // 1. Take the best candidates out of the ready index: O(k log n).
    std::vector<std::uint64_t> candidates;
    {
      std::lock_guard lock(d.mu);
      d.mem.promote(d.now());
      std::size_t want = capacity - response.allocations.size();
      while (candidates.size() < want) {
        std::set<ReadyKey>* best = nullptr;
        for (auto& [queue, keys] : d.mem.ready) {
          if (keys.empty() || !queue.servedBy(systems, request.features)) continue;
          if (best == nullptr || *keys.begin() < *best->begin()) best = &keys;
        }
        if (best == nullptr) break;
        std::uint64_t id = best->begin()->id;
        best->erase(best->begin());
        d.mem.ready_count--;
        d.mem.active[id].checking = true;
        candidates.push_back(id);
      }
    }
    if (candidates.empty()) break;

    // 2. Ask the store about their inputs, without the lock.
    std::vector<std::vector<std::string>> inputs(candidates.size());
    std::vector<std::optional<std::string>> unbuildable(candidates.size());
    std::vector<std::string> all;
    Status checked;
    try {
      lmdb::ReadTxn txn = d.env->beginRead();
      for (std::size_t i = 0; i < candidates.size() && checked; ++i) {
        auto record = d.loadBuild(txn, candidates[i]);
        if (!record) {
          checked = fail(record.error());
          break;
        }
        auto drv = d.loadDrv(txn, record->info.derivation);
        if (!drv || !*drv) {
          checked =
              drv ? fail(ErrorCode::kInternal, "unknown derivation " + record->info.derivation)
                  : fail(drv.error());
          break;
        }
        auto paths = d.inputPaths(txn, **drv);
        if (!paths) {
          // This build cannot be built (e.g. it needs an output its input derivation does not
          // have): it fails below instead of blocking every fetch.
          unbuildable[i] = paths.error().message();
          continue;
        }
        inputs[i] = std::move(*paths);
        all.insert(all.end(), inputs[i].begin(), inputs[i].end());
      }
    } catch (const lmdb::Error& e) {
      checked = fail(lmdb::toError(e));
    }
    std::vector<narstore::ItemStatus> states;
    if (checked && !all.empty()) {
      auto s = d.options.availability->check(all);
      if (s) {
        states = std::move(*s);
      } else if (s.error().code() == ErrorCode::kInvalidArgument) {
        // The store refuses some build's input paths (another store dir, say): ask for each
        // build alone, so that only the builds it refuses fail and the others go on.
        states.assign(all.size(), narstore::ItemStatus{});  // missing
        std::size_t offset = 0;
        for (std::size_t i = 0; i < candidates.size() && checked; ++i) {
          std::size_t n = inputs[i].size();
          if (n == 0) continue;
          auto one = d.options.availability->check(inputs[i]);
          if (one) {
            std::copy(one->begin(), one->end(), states.begin() + static_cast<long>(offset));
          } else if (one.error().code() == ErrorCode::kInvalidArgument) {
            unbuildable[i] = "the store refuses its inputs: " + one.error().message();
          } else {
            checked = fail(one.error().withContext("asking the store"));
          }
          offset += n;
        }
      } else {
        checked = fail(s.error().withContext("asking the store"));
      }
    }

    // 3. Allocate those whose inputs are all available; the others wait.
    auto putBack = [&] {
      std::lock_guard lock(d.mu);
      std::int64_t t = d.now();
      for (std::uint64_t id : candidates) {
        auto it = d.mem.active.find(id);
        if (it == d.mem.active.end() || !it->second.checking) continue;
        it->second.checking = false;
        if (it->second.state != BuildState::kQueued) continue;
        if (it->second.not_before > t) {
          d.mem.delayed.insert({it->second.not_before, id});
        } else if (d.mem.ready[it->second.queue]
                       .insert(ReadyKey{-it->second.priority, id})
                       .second) {
          d.mem.ready_count++;
        }
      }
    };
    if (!checked) {
      putBack();
      if (response.allocations.empty()) return fail(checked.error());
      spdlog::warn("fetch by {}: {}", agent, checked.error().message());  // partial answer
      return response;
    }
    auto allocated =
        d.mutate<std::vector<Allocation>>([&](Batch& b) -> Result<std::vector<Allocation>> {
          std::vector<Allocation> out;
          std::size_t offset = 0;
          for (std::size_t i = 0; i < candidates.size(); ++i) {
            std::size_t n = inputs[i].size();
            std::size_t begin = offset;
            offset += n;
            auto it = d.mem.active.find(candidates[i]);
            if (it == d.mem.active.end() || !it->second.checking ||
                it->second.state != BuildState::kQueued) {
              continue;  // canceled meanwhile
            }
            auto record = d.loadBuild(b.txn, candidates[i]);
            if (!record) return fail(record.error());
            // The transaction is the truth: a job earlier in this group (a cancel) may have
            // changed the build since the in-memory check above.
            if (record->info.state != BuildState::kQueued) continue;
            if (unbuildable[i]) {
              // No try can build it: the derivation is failing at once (a dependant's recheck
              // must not submit it again and again), until a manual retry.
              auto drv = d.loadDrv(b.txn, record->info.derivation);
              if (!drv) return fail(drv.error());
              if (!*drv) {
                return fail(ErrorCode::kInternal, "unknown derivation " + record->info.derivation);
              }
              record->info.state = BuildState::kFailed;
              record->info.updated_at = b.now;
              record->info.message = "cannot be built: " + *unbuildable[i] +
                                     " (derivation failing: no automatic retry)";
              d.putBuild(b, *record, BuildState::kQueued);
              d.emit(b, "failure", record->info);
              NARCACHE_TRY(d.markFailing(b, record->info.derivation, **drv, record->info));
              continue;
            }
            std::vector<std::string> missing;
            DeletedAt deleted;
            for (std::size_t k = 0; k < n; ++k) {
              if (isMissing(inputs[i][k], states[begin + k], deleted)) {
                missing.push_back(inputs[i][k]);
              }
            }
            if (!missing.empty()) {
              NARCACHE_TRY(d.waitFor(b, *record, BuildState::kQueued, missing, deleted));
              continue;
            }
            std::uint64_t alloc_id = b.next_alloc++;
            AllocRecord alloc{candidates[i], agent, request.request_id,
                              b.now + d.options.lease_seconds, b.now};
            b.txn.put(d.allocs, idKey(alloc_id), encode(alloc));
            BuildInfo& info = record->info;
            info.state = BuildState::kAllocated;
            info.agent = agent;
            info.tries++;
            info.updated_at = b.now;
            info.waiting_for.clear();
            info.blocked_by.clear();
            record->allocation = alloc_id;
            d.putBuild(b, *record, BuildState::kQueued);
            d.emit(b, "started", info);
            b.effects.push_back([&d, alloc_id, alloc] {
              d.mem.addAllocation(alloc_id, OpenAllocation{alloc.build, alloc.agent,
                                                           alloc.request_id, alloc.lease_until});
              d.mem.allocations_total++;
            });
            auto a = describe(b.txn, alloc_id, candidates[i]);
            if (!a) return fail(a.error());
            out.push_back(std::move(*a));
          }
          return out;
        });
    if (!allocated) {
      putBack();
      return fail(allocated.error());
    }
    putBack();  // nothing left unless something went wrong above
    for (Allocation& a : *allocated) response.allocations.push_back(std::move(a));
  }
  return response;
}

Result<HeartbeatResponse> Coordinator::heartbeat(const std::string& agent,
                                                 const HeartbeatRequest& request) {
  Impl& d = *impl_;
  {
    std::lock_guard lock(d.mu);
    std::int64_t t = d.now();
    d.mem.agents[agent].last_seen = t;
    // Heard from the agent: its leases hold from now on, even when the commit below waits behind
    // a slow fsync (the lease reaper looks at these in-memory leases first).
    for (std::uint64_t alloc : request.allocations) {
      auto it = d.mem.allocs.find(alloc);
      if (it != d.mem.allocs.end() && it->second.agent == agent &&
          it->second.lease_until < t + d.options.lease_seconds) {
        d.mem.setLease(alloc, t + d.options.lease_seconds);
      }
    }
  }
  if (request.allocations.empty()) return HeartbeatResponse{};
  return d.mutate<HeartbeatResponse>([&](Batch& b) -> Result<HeartbeatResponse> {
    HeartbeatResponse response;
    std::int64_t until = b.now + d.options.lease_seconds;
    for (std::uint64_t alloc : request.allocations) {
      auto value = b.txn.get(d.allocs, idKey(alloc));
      std::optional<AllocRecord> record;
      if (value) {
        auto decoded = decodeAlloc(*value);
        if (!decoded) return fail(decoded.error());
        record = std::move(*decoded);
      }
      if (!record || record->agent != agent) {
        response.canceled.push_back(alloc);
        continue;
      }
      record->lease_until = until;
      b.txn.put(d.allocs, idKey(alloc), encode(*record));
      b.effects.push_back([&d, alloc, until] { d.mem.setLease(alloc, until); });
      response.valid.push_back(alloc);
    }
    return response;
  });
}

Result<ResultAck> Coordinator::report(const std::string& agent, const ResultReport& report) {
  Impl& d = *impl_;
  // Missing inputs: ask the store first (without the lock) which of them are really missing.
  std::vector<std::string> missing;
  DeletedAt deleted;
  if (report.status == ReportStatus::kMissingInputs && !report.missing_inputs.empty()) {
    auto states = d.options.availability->check(report.missing_inputs);
    if (!states) return fail(states.error().withContext("asking the store"));
    for (std::size_t i = 0; i < states->size(); ++i) {
      if (isMissing(report.missing_inputs[i], (*states)[i], deleted)) {
        missing.push_back(report.missing_inputs[i]);
      }
    }
  }
  std::uint64_t alloc_id = report.allocation_id;
  return d.mutate<ResultAck>([&](Batch& b) -> Result<ResultAck> {
    auto value = b.txn.get(d.allocs, idKey(alloc_id));
    if (!value) return ResultAck{false};  // closed already (or never existed)
    auto alloc = decodeAlloc(*value);
    if (!alloc) return fail(alloc.error());
    if (alloc->agent != agent) return ResultAck{false};
    std::uint64_t build_id = alloc->build;
    b.txn.del(d.allocs, idKey(alloc_id));
    b.effects.push_back([&d, alloc_id] { d.mem.removeAllocation(alloc_id); });
    auto record = d.loadBuild(b.txn, build_id);
    if (!record) return fail(record.error());
    BuildInfo& info = record->info;
    if (info.state != BuildState::kAllocated || record->allocation != alloc_id) {
      return ResultAck{false};
    }
    auto drv_opt = d.loadDrv(b.txn, info.derivation);
    if (!drv_opt) return fail(drv_opt.error());
    if (!*drv_opt) return fail(ErrorCode::kInternal, "unknown derivation " + info.derivation);
    DrvRecord drv = **drv_opt;
    record->allocation = 0;
    info.updated_at = b.now;
    switch (report.status) {
      case ReportStatus::kSucceeded: {
        bool was_failing = drv.failing;
        drv.failures = 0;
        drv.failing = false;
        drv.stale_inputs = 0;
        drv.released = 0;
        drv.last_success = b.now;
        d.putDrv(b, info.derivation, drv, was_failing);
        info.state = BuildState::kSucceeded;
        info.message.clear();
        info.outputs = report.outputs.empty() ? drv.outputs : report.outputs;
        d.putBuild(b, *record, BuildState::kAllocated);
        d.emit(b, "success", info);
        for (const auto& [name, path] : drv.outputs) {
          NARCACHE_TRY(d.releaseWaiters(b, path, info.derivation));
        }
        break;
      }
      case ReportStatus::kFailed:
      case ReportStatus::kTimedOut: {
        const bool was_failing = drv.failing;
        drv.failures++;
        std::string what = report.status == ReportStatus::kTimedOut ? "timed out" : "failed";
        info.message = report.message.empty() ? what : what + ": " + report.message;
        if (drv.failures <= d.options.max_retries) {
          int doublings = std::min(drv.failures - 1, kMaxBackoffDoublings);
          info.state = BuildState::kQueued;
          info.not_before = b.now + static_cast<std::int64_t>(d.options.retry_backoff_seconds) *
                                        (1LL << doublings);
          b.effects.push_back([&d] { d.mem.retries_total++; });
          d.putDrv(b, info.derivation, drv, was_failing);
          d.putBuild(b, *record, BuildState::kAllocated);
          d.emit(b, "failure", info);
        } else {
          info.state = BuildState::kFailed;
          info.message += " (derivation failing after " + std::to_string(drv.failures) +
                          " tries: no automatic retry)";
          d.putBuild(b, *record, BuildState::kAllocated);
          d.emit(b, "failure", info);
          NARCACHE_TRY(d.markFailing(b, info.derivation, drv, info));
        }
        break;
      }
      case ReportStatus::kMissingInputs: {
        info.tries = std::max(0, info.tries - 1);  // no try counted
        if (missing.empty()) {
          // The store has them all (the agent's view was stale): try again a bit later, up to
          // --max-retries times; past that the agent is not seeing this store.
          drv.stale_inputs++;
          info.message = "the agent missed inputs that the store has: " + report.message;
          if (drv.stale_inputs <= d.options.max_retries) {
            d.putDrv(b, info.derivation, drv, drv.failing);
            info.state = BuildState::kQueued;
            info.not_before = b.now + d.options.retry_backoff_seconds;
            d.putBuild(b, *record, BuildState::kAllocated);
          } else {
            info.state = BuildState::kFailed;
            info.message += " (" + std::to_string(drv.stale_inputs) +
                            " times: do the agents substitute from the cache this coordinator "
                            "asks? no automatic retry)";
            d.putBuild(b, *record, BuildState::kAllocated);
            d.emit(b, "failure", info);
            NARCACHE_TRY(d.markFailing(b, info.derivation, drv, info));
          }
        } else {
          NARCACHE_TRY(d.waitFor(b, *record, BuildState::kAllocated, missing, deleted));
        }
        break;
      }
    }
    return ResultAck{true};
  });
}

Result<ResultAck> Coordinator::release(const std::string& agent, const ReleaseRequest& request) {
  Impl& d = *impl_;
  return d.mutate<ResultAck>([&](Batch& b) -> Result<ResultAck> {
    ResultAck ack{false};
    for (std::uint64_t alloc : request.allocations) {
      auto value = b.txn.get(d.allocs, idKey(alloc));
      if (!value) continue;
      auto open = decodeAlloc(*value);
      if (!open) return fail(open.error());
      if (open->agent != agent) continue;
      ack.accepted = true;
      b.txn.del(d.allocs, idKey(alloc));
      b.effects.push_back([&d, alloc] { d.mem.removeAllocation(alloc); });
      auto record = d.loadBuild(b.txn, open->build);
      if (!record) return fail(record.error());
      if (record->info.state != BuildState::kAllocated || record->allocation != alloc) continue;
      auto drv = d.loadDrv(b.txn, record->info.derivation);
      if (!drv) return fail(drv.error());
      if (!*drv) return fail(ErrorCode::kInternal, "unknown derivation " + record->info.derivation);
      DrvRecord counted = **drv;
      counted.released++;
      d.putDrv(b, record->info.derivation, counted, counted.failing);
      record->allocation = 0;
      record->info.state = BuildState::kQueued;
      record->info.tries = std::max(0, record->info.tries - 1);
      record->info.updated_at = b.now;
      record->info.not_before = 0;
      record->info.message =
          "released by agent " + agent + (request.reason.empty() ? "" : ": " + request.reason);
      if (counted.released > 1) {
        // Capped low: releases also come from outages and agents stopping, which say nothing
        // about the derivation, and the count only resets on a success.
        const int doublings = std::min(counted.released - 2, kMaxBackoffDoublings);
        const std::int64_t wait = std::min<std::int64_t>(
            kMaxReleaseWaitSeconds,
            static_cast<std::int64_t>(d.options.retry_backoff_seconds) * (1LL << doublings));
        record->info.not_before = b.now + wait;
        record->info.message += " (given back " + std::to_string(counted.released) +
                                " times since its last success; next try in " +
                                std::to_string(wait) + " s)";
      }
      d.putBuild(b, *record, BuildState::kAllocated);
    }
    return ack;
  });
}

// ---- Maintenance -----------------------------------------------------------------------------

Status Coordinator::Impl::expireLeases(std::int64_t t) {
  std::vector<std::uint64_t> expired;
  {
    std::lock_guard lock(mu);
    mem.promote(t);
    for (auto it = mem.leases.begin(); it != mem.leases.end() && it->first <= t; ++it) {
      expired.push_back(it->second);
    }
  }
  if (expired.empty()) return {};
  auto done = mutate<bool>([&](Batch& b) -> Result<bool> {
    for (std::uint64_t alloc : expired) {
      // Re-checked here: a heartbeat may have extended it meanwhile (in memory, or earlier in
      // this same transaction), or a result closed it.
      auto m = mem.allocs.find(alloc);
      if (m == mem.allocs.end() || m->second.lease_until > b.now) continue;
      auto value = b.txn.get(allocs, idKey(alloc));
      if (!value) continue;
      auto open = decodeAlloc(*value);
      if (!open) return fail(open.error());
      if (open->lease_until > b.now) continue;
      b.txn.del(allocs, idKey(alloc));
      b.effects.push_back([this, alloc] {
        mem.removeAllocation(alloc);
        mem.lease_expiries_total++;
      });
      auto record = loadBuild(b.txn, open->build);
      if (!record) return fail(record.error());
      if (record->info.state != BuildState::kAllocated || record->allocation != alloc) continue;
      record->allocation = 0;
      record->info.state = BuildState::kQueued;
      record->info.tries = std::max(0, record->info.tries - 1);  // no try counted
      record->info.updated_at = b.now;
      record->info.not_before = 0;
      record->info.message = "lease of agent " + open->agent + " expired";
      putBuild(b, *record, BuildState::kAllocated);
      b.effects.push_back([id = open->build, agent = open->agent] {
        spdlog::info("build {}: the lease of agent {} expired, back in the queue", id, agent);
      });
    }
    return true;
  });
  if (!done) return fail(done.error());
  return {};
}

Status Coordinator::Impl::recheckWaiting() {
  // Which paths the waiting builds wait for (a snapshot), asked to the store without the lock.
  std::vector<std::string> paths;
  {
    std::lock_guard lock(mu);
    last_recheck = now();
    paths.reserve(mem.waiters.size());
    for (const auto& [path, ids] : mem.waiters) paths.push_back(path);
  }
  if (paths.empty()) return {};
  constexpr std::size_t kChunk = 5000;
  std::vector<narstore::ItemStatus> states;
  for (std::size_t i = 0; i < paths.size(); i += kChunk) {
    std::vector<std::string> chunk(paths.begin() + i,
                                   paths.begin() + std::min(paths.size(), i + kChunk));
    auto s = options.availability->check(chunk);
    if (!s) return fail(s.error().withContext("asking the store"));
    states.insert(states.end(), s->begin(), s->end());
  }
  std::set<std::string> available;
  DeletedAt deleted;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (!isMissing(paths[i], states[i], deleted)) available.insert(paths[i]);
  }
  auto done = mutate<bool>([&](Batch& b) -> Result<bool> {
    std::set<std::uint64_t> ids;
    for (const auto& [path, waiting] : mem.waiters) ids.insert(waiting.begin(), waiting.end());
    for (std::uint64_t id : ids) {
      auto record = loadBuild(b.txn, id);
      if (!record) return fail(record.error());
      if (record->info.state != BuildState::kWaiting) continue;
      std::vector<std::string> still;
      for (const std::string& p : record->info.waiting_for) {
        if (!available.count(p)) still.push_back(p);
      }
      if (still.empty()) {
        record->info.state = BuildState::kQueued;
        record->info.waiting_for.clear();
        record->info.blocked_by.clear();
        record->info.message.clear();
        record->info.updated_at = b.now;
        record->info.not_before = 0;
        putBuild(b, *record, BuildState::kWaiting);
        continue;
      }
      // Still waiting: make sure each missing path has a producer on its way (a producer's
      // build may have been canceled), and that blocked_by is current. Written only on change.
      bool needs_producer = false;
      std::vector<std::string> blocked;
      for (const std::string& p : still) {
        auto producer = b.txn.get(outputs, p);
        if (!producer) continue;
        std::string drv_path(*producer);
        auto drv = loadDrv(b.txn, drv_path);
        if (!drv) return fail(drv.error());
        if (!*drv) continue;
        if ((*drv)->failing) {
          blocked.push_back(drv_path);
        } else if (activeBuilds(b, drv_path) == 0) {
          needs_producer = true;
        }
      }
      std::sort(blocked.begin(), blocked.end());
      blocked.erase(std::unique(blocked.begin(), blocked.end()), blocked.end());
      std::vector<std::string> current = record->info.blocked_by;
      std::sort(current.begin(), current.end());
      if (needs_producer || still != record->info.waiting_for || blocked != current) {
        NARCACHE_TRY(waitFor(b, *record, BuildState::kWaiting, still, deleted));
      }
    }
    return true;
  });
  if (!done) return fail(done.error());
  return {};
}

Status Coordinator::tick(bool force_recheck) {
  NARCACHE_TRY(impl_->expireLeases(impl_->now()));
  bool due;
  {
    std::lock_guard lock(impl_->mu);
    due = force_recheck ||
          impl_->now() - impl_->last_recheck >= impl_->options.waiting_recheck_seconds;
  }
  if (due) NARCACHE_TRY(impl_->recheckWaiting());
  return {};
}

}  // namespace narcache::coordinator
