// The coordinator's database: opening its tables, loading the in-memory indexes at start-up
// (one scan), and the in-memory indexes themselves (Memory). See impl.h and records.h.

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "impl.h"
#include "narcache/narinfo/derivation.h"

namespace narcache::coordinator {

// ---- Memory --------------------------------------------------------------------------------

bool ReadyQueue::servedBy(const std::vector<std::string>& systems,
                          const std::vector<std::string>& offered) const {
  auto has = [](const std::vector<std::string>& list, const std::string& item) {
    return std::find(list.begin(), list.end(), item) != list.end();
  };
  if (!has(systems, system)) return false;
  return std::all_of(features.begin(), features.end(),
                     [&](const std::string& f) { return has(offered, f); });
}

void Memory::unindex(std::uint64_t id) {
  auto it = active.find(id);
  if (it == active.end()) return;
  ActiveBuild& a = it->second;
  by_state[static_cast<int>(a.state)]--;
  if (a.state == BuildState::kQueued) {
    auto r = ready.find(a.queue);
    if (r != ready.end() && r->second.erase(ReadyKey{-a.priority, id}) > 0) ready_count--;
    delayed.erase({a.not_before, id});
    queued_since.erase({a.since, id});
  }
  if (a.state == BuildState::kWaiting) {
    for (const std::string& path : a.waiting_for) {
      auto w = waiters.find(path);
      if (w == waiters.end()) continue;
      w->second.erase(id);
      if (w->second.empty()) waiters.erase(w);
    }
  }
  if (auto d = active_per_drv.find(a.derivation); d != active_per_drv.end()) {
    if (--d->second <= 0) active_per_drv.erase(d);
  }
  active.erase(it);
}

void Memory::apply(const BuildRecord& record, std::int64_t now) {
  const BuildInfo& info = record.info;
  unindex(info.id);
  by_state[static_cast<int>(info.state)]++;
  if (!isActive(info.state)) return;
  ActiveBuild& a = active[info.id];
  a.state = info.state;
  a.queue = ReadyQueue{info.system, info.required_features};
  a.derivation = info.derivation;
  a.priority = info.priority;
  a.not_before = info.not_before;
  a.since = info.updated_at;
  a.allocation = record.allocation;
  active_per_drv[info.derivation]++;
  if (info.state == BuildState::kQueued) {
    queued_since.insert({a.since, info.id});
    if (info.not_before > now) {
      delayed.insert({info.not_before, info.id});
    } else if (ready[a.queue].insert(ReadyKey{-a.priority, info.id}).second) {
      ready_count++;
    }
  }
  if (info.state == BuildState::kWaiting) {
    a.waiting_for = info.waiting_for;
    for (const std::string& path : a.waiting_for) waiters[path].insert(info.id);
  }
}

void Memory::promote(std::int64_t now) {
  while (!delayed.empty() && delayed.begin()->first <= now) {
    std::uint64_t id = delayed.begin()->second;
    delayed.erase(delayed.begin());
    auto it = active.find(id);
    if (it == active.end() || it->second.state != BuildState::kQueued) continue;
    if (ready[it->second.queue].insert(ReadyKey{-it->second.priority, id}).second) ready_count++;
  }
}

void Memory::addAllocation(std::uint64_t id, OpenAllocation alloc) {
  leases.insert({alloc.lease_until, id});
  if (!alloc.request_id.empty()) fetches[alloc.agent + "\n" + alloc.request_id].push_back(id);
  agents[alloc.agent].allocations.insert(id);
  allocs[id] = std::move(alloc);
}

void Memory::removeAllocation(std::uint64_t id) {
  auto it = allocs.find(id);
  if (it == allocs.end()) return;
  leases.erase({it->second.lease_until, id});
  if (!it->second.request_id.empty()) {
    auto f = fetches.find(it->second.agent + "\n" + it->second.request_id);
    if (f != fetches.end()) {
      std::erase(f->second, id);
      if (f->second.empty()) fetches.erase(f);
    }
  }
  if (auto a = agents.find(it->second.agent); a != agents.end()) a->second.allocations.erase(id);
  allocs.erase(it);
}

void Memory::setLease(std::uint64_t id, std::int64_t lease_until) {
  auto it = allocs.find(id);
  if (it == allocs.end()) return;
  leases.erase({it->second.lease_until, id});
  it->second.lease_until = lease_until;
  leases.insert({lease_until, id});
}

// ---- Database ------------------------------------------------------------------------------

Status Coordinator::Impl::openDb() {
  std::error_code ec;
  std::filesystem::create_directories(options.db_dir, ec);
  if (ec) {
    return fail(ErrorCode::kIoError,
                "cannot create " + options.db_dir.string() + ": " + ec.message());
  }
  try {
    lmdb::EnvOptions env_options;
    env_options.dir = options.db_dir;
    if (options.initial_map_size != 0) env_options.initial_map_size = options.initial_map_size;
    env = lmdb::Env::open(env_options);
    builds = env->openDbi("builds", 0, true);
    drvs = env->openDbi("drvs", 0, true);
    drv_text = env->openDbi("drv_text", 0, true);
    outputs = env->openDbi("outputs", 0, true);
    allocs = env->openDbi("allocs", 0, true);
    agents = env->openDbi("agents", 0, true);
    events = env->openDbi("events", 0, true);
    meta = env->openDbi("meta", 0, true);
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e).withContext("coordinator database " + options.db_dir.string()));
  }
  return {};
}

Result<std::optional<DrvRecord>> Coordinator::Impl::loadDrv(const lmdb::Txn& txn,
                                                            const std::string& path) {
  auto value = txn.get(drvs, path);
  if (!value) return std::optional<DrvRecord>();
  auto record = decodeDrv(*value);
  if (!record) return fail(record.error());
  return std::optional<DrvRecord>(std::move(*record));
}

Result<BuildRecord> Coordinator::Impl::loadBuild(const lmdb::Txn& txn, std::uint64_t id) {
  auto value = txn.get(builds, idKey(id));
  if (!value) return fail(ErrorCode::kNotFound, "no build " + std::to_string(id));
  return decodeBuild(*value);
}

// ---- The committer ------------------------------------------------------------------------

void Coordinator::Impl::runCommitter(std::stop_token stop) {
  constexpr std::size_t kMaxGroup = 256;
  for (;;) {
    std::vector<std::shared_ptr<Job>> group;
    {
      std::unique_lock lock(jobs_mu);
      jobs_cv.wait(lock, stop, [&] { return !jobs.empty(); });
      if (jobs.empty()) break;  // stopping, nothing left
      std::size_t n = std::min(kMaxGroup, jobs.size());
      group.assign(jobs.begin(), jobs.begin() + static_cast<std::ptrdiff_t>(n));
      jobs.erase(jobs.begin(), jobs.begin() + static_cast<std::ptrdiff_t>(n));
    }
    commitGroup(std::move(group));
  }
}

void Coordinator::Impl::commitGroup(std::vector<std::shared_ptr<Job>> group) {
  auto finish = [this](const std::vector<std::shared_ptr<Job>>& finished) {
    std::lock_guard lock(jobs_mu);
    for (const auto& job : finished) job->done = true;
    jobs_done_cv.notify_all();
  };
  while (!group.empty()) {
    std::int64_t t = now();
    std::vector<std::function<void()>> effects;
    std::set<Hook*> woken;
    std::uint64_t nb = 0, na = 0, ne = 0;
    std::shared_ptr<Job> failed;
    Error failed_error(ErrorCode::kInternal, "");
    Result<bool> written = fail(ErrorCode::kInternal, "write transaction did not run");
    try {
      written = env->write<bool>([&](lmdb::WriteTxn& txn) -> Result<bool> {
        std::lock_guard lock(mu);
        Batch b{txn, t, mem.next_build, mem.next_alloc, mem.next_event, {}, {}, {}};
        for (const auto& job : group) {
          Status s = job->run(b);
          if (!s) {
            failed = job;
            failed_error = s.error();
            return fail(s.error());
          }
        }
        if (b.next_build != mem.next_build) {
          txn.put(meta, "next_build", std::to_string(b.next_build));
        }
        if (b.next_alloc != mem.next_alloc) {
          txn.put(meta, "next_alloc", std::to_string(b.next_alloc));
        }
        if (b.next_event != mem.next_event) {
          txn.put(meta, "next_event", std::to_string(b.next_event));
        }
        effects = std::move(b.effects);
        woken = std::move(b.woken);
        nb = b.next_build;
        na = b.next_alloc;
        ne = b.next_event;
        return true;
      });
    } catch (const lmdb::Error& e) {
      written = fail(lmdb::toError(e));
    }
    if (!written && failed) {
      // That job's own failure: it leaves the group, the others run again without it.
      failed->fail(failed_error);
      finish({failed});
      std::erase(group, failed);
      continue;
    }
    if (!written) {
      spdlog::error("coordinator database: {}", written.error().message());
      for (const auto& job : group) job->fail(written.error());
      finish(group);
      return;
    }
    {
      std::lock_guard lock(mu);
      mem.next_build = nb;
      mem.next_alloc = na;
      mem.next_event = ne;
      for (auto& effect : effects) effect();
    }
    for (Hook* hook : woken) hook->cv.notify_all();
    for (const auto& job : group) job->publish();
    finish(group);
    return;
  }
}

namespace {

std::uint64_t parseCounter(std::optional<std::string_view> text) {
  std::uint64_t n = 1;
  if (text) std::from_chars(text->data(), text->data() + text->size(), n);
  return n;
}

}  // namespace

Status Coordinator::Impl::migrateFeatures() {
  // Databases from before system features: derivation records get theirs from the .drv text,
  // and unfinished builds from their derivation's, once, in one write transaction.
  auto lacks = [](std::string_view json_text, const char* key) {
    auto j = nlohmann::json::parse(json_text, nullptr, false);
    return j.is_object() && !j.contains(key);
  };
  try {
    {
      lmdb::ReadTxn txn = env->beginRead();
      if (txn.get(meta, "features_migrated")) return {};
    }
    return env->write<void>([&](lmdb::WriteTxn& txn) -> Status {
      std::map<std::string, DrvRecord> drv_records;
      {
        lmdb::Cursor c(txn, drvs);
        for (auto e = c.first(); e; e = c.next()) {
          if (!lacks(e->second, "features")) continue;
          auto record = decodeDrv(e->second);
          if (!record) return fail(record.error());
          if (auto text = txn.get(drv_text, e->first)) {
            if (auto drv = parseDerivation(*text)) record->features = drv->requiredSystemFeatures();
          }
          drv_records[std::string(e->first)] = std::move(*record);
        }
      }
      std::map<std::string, std::string> build_records;
      {
        lmdb::Cursor c(txn, builds);
        for (auto e = c.first(); e; e = c.next()) {
          auto state = peekBuildState(e->second);
          if (!state || !isActive(*state)) continue;
          const std::size_t newline = e->second.find('\n');
          if (newline == std::string_view::npos ||
              !lacks(e->second.substr(newline + 1), "required_features")) {
            continue;
          }
          auto record = decodeBuild(e->second);
          if (!record) return fail(record.error());
          auto drv = drv_records.find(record->info.derivation);
          if (drv == drv_records.end()) continue;
          record->info.required_features = drv->second.features;
          build_records[std::string(e->first)] = encode(*record);
        }
      }
      for (const auto& [path, record] : drv_records) txn.put(drvs, path, encode(record));
      for (const auto& [key, value] : build_records) txn.put(builds, key, value);
      txn.put(meta, "features_migrated", "1");
      return {};
    });
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e));
  }
}

Status Coordinator::Impl::load() {
  std::int64_t t = now();
  try {
    lmdb::ReadTxn txn = env->beginRead();
    mem.next_build = parseCounter(txn.get(meta, "next_build"));
    mem.next_alloc = parseCounter(txn.get(meta, "next_alloc"));
    mem.next_event = parseCounter(txn.get(meta, "next_event"));
    {
      lmdb::Cursor c(txn, agents);
      for (auto e = c.first(); e; e = c.next()) {
        auto record = decodeAgent(e->second);
        if (!record) return fail(record.error());
        mem.agents[std::string(e->first)].secret_sha256 = record->secret_sha256;
      }
    }
    {
      lmdb::Cursor c(txn, builds);
      for (auto e = c.first(); e; e = c.next()) {
        // Finished builds are only counted; unfinished ones are decoded and indexed.
        auto state = peekBuildState(e->second);
        if (!state) return fail(ErrorCode::kCorruption, "coordinator database: bad build record");
        if (!isActive(*state)) {
          mem.by_state[static_cast<int>(*state)]++;
          continue;
        }
        auto record = decodeBuild(e->second);
        if (!record) return fail(record.error());
        mem.apply(*record, t);
      }
    }
    {
      lmdb::Cursor c(txn, drvs);
      for (auto e = c.first(); e; e = c.next()) {
        // Only the failing flag is needed: avoid decoding the whole record.
        if (e->second.find("\"failing\":true") != std::string_view::npos) {
          mem.derivations_failing++;
        }
      }
    }
    {
      // Allocations keep their leases across a restart, and at least one lease from now, so
      // that agents that kept building can still heartbeat and report.
      lmdb::Cursor c(txn, allocs);
      for (auto e = c.first(); e; e = c.next()) {
        auto record = decodeAlloc(e->second);
        if (!record) return fail(record.error());
        mem.addAllocation(keyId(e->first),
                          OpenAllocation{record->build, record->agent, record->request_id,
                                         std::max(record->lease_until, t + options.lease_seconds)});
      }
    }
    {
      std::map<std::string, Hook*> by_key;
      for (auto& hook : hooks) by_key[hook->key] = hook.get();
      std::map<std::string, std::uint64_t> orphans;
      lmdb::Cursor c(txn, events);
      for (auto e = c.first(); e; e = c.next()) {
        std::string key(e->first.substr(0, 16));
        auto it = by_key.find(key);
        if (it == by_key.end()) {
          orphans[key]++;
          continue;
        }
        // The event's time is in its JSON: "time":N.
        std::int64_t time = t;
        std::size_t pos = e->second.find("\"time\":");
        if (pos != std::string_view::npos) {
          std::string_view rest = e->second.substr(pos + 7);
          std::from_chars(rest.data(), rest.data() + rest.size(), time);
        }
        it->second->queue[keyId(e->first.substr(16))] = time;
      }
      for (const auto& [key, n] : orphans) {
        spdlog::warn("{} events of a hook that is no longer configured (key {}) are kept", n, key);
      }
    }
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e));
  }
  return {};
}

}  // namespace narcache::coordinator
