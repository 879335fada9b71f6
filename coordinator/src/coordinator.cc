// Coordinator: opening, the client API (submit, list, show, cancel, retry, agents) and the
// state-change helpers shared with scheduler.cc. See coordinator.h and impl.h.

#include "narcache/coordinator/coordinator.h"

#include <sys/random.h>

#include <algorithm>

#include "impl.h"
#include "narcache/narinfo/derivation.h"
#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narinfo/store_path.h"

namespace narcache::coordinator {
namespace {

// Outputs missing from the store this long after their derivation last succeeded count as
// "lost" (DrvRecord::lost): sooner than the store's GC grace (1 h by default) would remove them.
constexpr std::int64_t kLostOutputsWindow = 3600;

std::string baseName(std::string_view path) {
  std::size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

std::string sha256Hex(std::string_view text) {
  return hashString(HashAlgo::kSha256, text).digestString(HashFormat::kBase16);
}

bool validAgentName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

// A submitted derivation, checked: its path is the one Nix computes for its text.
struct CheckedDrv {
  std::string path;
  std::string text;
  Derivation drv;
  DrvRecord record;
};

// The derivation at the .drv store path `path` (in the store dir it names), parsed from its
// text; its name comes from the path.
Result<Derivation> parseDrvAt(const std::string& path, std::string_view text) {
  std::size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) {
    return fail(ErrorCode::kInvalidArgument, "not an absolute store path");
  }
  auto parsed = StorePath::parse(path, path.substr(0, slash));
  if (!parsed) return fail(parsed.error());
  const std::string& name = parsed->name();
  if (!name.ends_with(".drv") || name.size() <= 4) {
    return fail(ErrorCode::kInvalidArgument, "a derivation's store path ends in .drv");
  }
  return parseDerivation(text, name.substr(0, name.size() - 4));
}

Result<CheckedDrv> checkDerivation(const DerivationText& d) {
  auto bad = [&](const std::string& why) {
    return fail(ErrorCode::kInvalidArgument, "derivation " + d.path + ": " + why);
  };
  auto drv = parseDrvAt(d.path, d.text);
  if (!drv) return bad(drv.error().message());
  std::string store_dir = d.path.substr(0, d.path.rfind('/'));
  auto computed = derivationStorePath(*drv, store_dir);
  if (!computed) return bad(computed.error().message());
  if (*computed != d.path) {
    return bad("its text gives the store path " + *computed +
               " (a .drv's path is computed from its text and its references)");
  }
  if (drv->outputs.empty()) return bad("no outputs");
  CheckedDrv out{d.path, d.text, *drv, {}};
  out.record.system = drv->platform;
  out.record.features = drv->requiredSystemFeatures();
  for (const auto& [output, o] : drv->outputs) {
    if (o.path.empty()) return bad("output '" + output + "' has no path (not supported)");
    out.record.outputs[output] = o.path;
  }
  for (const auto& [input, names] : drv->input_drvs) {
    out.record.input_drvs[input] = std::vector<std::string>(names.begin(), names.end());
  }
  out.record.input_srcs.assign(drv->input_srcs.begin(), drv->input_srcs.end());
  return out;
}

Result<std::string> randomHex(std::size_t bytes) {
  std::vector<std::byte> buf(bytes);
  std::size_t got = 0;
  while (got < bytes) {
    ssize_t n = getrandom(buf.data() + got, bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::kIoError, "getrandom failed");
    }
    got += static_cast<std::size_t>(n);
  }
  return base16Encode(Bytes(buf.data(), buf.size()));
}

std::string hookKey(const HookSpec& spec) {
  return sha256Hex(spec.text).substr(0, 16);
}

}  // namespace

// ---- Opening -------------------------------------------------------------------------------

Result<std::unique_ptr<Coordinator>> Coordinator::open(const CoordinatorOptions& options) {
  if (options.availability == nullptr) {
    return fail(ErrorCode::kInvalidArgument, "the coordinator needs a store to ask (availability)");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  for (const HookSpec& spec : options.hooks) {
    if (spec.kind == HookSpec::Kind::kBuiltin && spec.action == "root-outputs" &&
        options.store == nullptr) {
      return fail(ErrorCode::kInvalidArgument,
                  "hook " + spec.text + ": builtin:root-outputs needs a local store (--store)");
    }
    auto hook = std::make_unique<Hook>();
    hook->spec = spec;
    hook->key = hookKey(spec);
    for (const auto& other : impl->hooks) {
      if (other->key == hook->key) {
        return fail(ErrorCode::kInvalidArgument, "hook " + spec.text + " is given twice");
      }
    }
    impl->hooks.push_back(std::move(hook));
  }
  NARCACHE_TRY(impl->openDb());
  NARCACHE_TRY(impl->migrateFeatures());
  NARCACHE_TRY(impl->load());
  {
    Impl* p = impl.get();
    impl->committer = std::jthread([p](std::stop_token stop) { p->runCommitter(stop); });
  }
  impl->startHooks();
  if (options.background) {
    Impl* p = impl.get();
    impl->maintenance = std::jthread([p](std::stop_token stop) {
      std::mutex m;
      std::condition_variable_any cv;
      // Reader slots of processes that died while reading the database (a CLI command killed
      // with kill -9) are freed by LMDB only at open; until then their snapshots pin old pages
      // and the data file grows with every write. So they are freed here every few seconds.
      constexpr std::chrono::seconds kReaderCheckInterval{10};
      auto last_reader_check = std::chrono::steady_clock::now();
      while (!stop.stop_requested()) {
        {
          std::unique_lock lock(m);
          cv.wait_for(lock, stop, std::chrono::seconds(1), [] { return false; });
        }
        if (stop.stop_requested()) break;
        try {
          if (std::chrono::steady_clock::now() - last_reader_check >= kReaderCheckInterval) {
            last_reader_check = std::chrono::steady_clock::now();
            if (int cleared = p->env->clearStaleReaders(); cleared != 0) {
              spdlog::warn("freed {} database reader slot(s) of processes that died while reading",
                           cleared);
            }
          }
          if (auto s = p->expireLeases(p->now()); !s) {
            spdlog::error("lease reaper: {}", s.error().message());
          }
          bool due;
          {
            std::lock_guard lock(p->mu);
            due = p->now() - p->last_recheck >= p->options.waiting_recheck_seconds;
          }
          if (due) {
            if (auto s = p->recheckWaiting(); !s) {
              spdlog::warn("re-checking waiting builds: {}", s.error().message());
            }
          }
        } catch (const std::exception& e) {
          spdlog::error("maintenance: {}", e.what());
        }
      }
    });
  }
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Coordinator::~Coordinator() {
  if (impl_->maintenance.joinable()) {
    impl_->maintenance.request_stop();
    impl_->maintenance.join();
  }
  impl_->stopHooks();
  impl_->committer.request_stop();
  impl_->committer.join();
}

// ---- State-change helpers --------------------------------------------------------------------

void Coordinator::Impl::putBuild(Batch& b, const BuildRecord& record,
                                 std::optional<BuildState> old_state) {
  b.txn.put(builds, idKey(record.info.id), encode(record));
  bool was = old_state && isActive(*old_state);
  bool is = isActive(record.info.state);
  if (was != is) b.drv_delta[record.info.derivation] += is ? 1 : -1;
  std::int64_t t = b.now;
  b.effects.push_back([this, record, t] { mem.apply(record, t); });
}

void Coordinator::Impl::forgetLostOutputs(Batch& b, const std::string& path,
                                          const DrvRecord& record) {
  if (record.lost == 0 && record.stale_inputs == 0 && record.released == 0) return;
  DrvRecord reset = record;
  reset.lost = 0;
  reset.stale_inputs = 0;
  reset.released = 0;
  putDrv(b, path, reset, record.failing);
}

void Coordinator::Impl::putDrv(Batch& b, const std::string& path, const DrvRecord& record,
                               bool was_failing) {
  b.txn.put(drvs, path, encode(record));
  if (was_failing != record.failing) {
    bool failing = record.failing;
    b.effects.push_back([this, failing] {
      if (failing) {
        mem.derivations_failing++;
      } else if (mem.derivations_failing > 0) {
        mem.derivations_failing--;
      }
    });
  }
}

void Coordinator::Impl::emit(Batch& b, std::string_view event, const BuildInfo& info) {
  for (auto& hook : hooks) {
    if (hook->spec.event != event) continue;
    std::uint64_t seq = b.next_event++;
    b.txn.put(events, eventKey(*hook, seq), eventJson(seq, event, b.now, info));
    Hook* h = hook.get();
    std::int64_t t = b.now;
    b.effects.push_back([h, seq, t] {
      std::lock_guard lock(h->mu);
      h->queue[seq] = t;
    });
    b.woken.insert(h);
  }
}

int Coordinator::Impl::activeBuilds(Batch& b, const std::string& drv) {
  int n = 0;
  if (auto it = mem.active_per_drv.find(drv); it != mem.active_per_drv.end()) n = it->second;
  if (auto it = b.drv_delta.find(drv); it != b.drv_delta.end()) n += it->second;
  return n;
}

Result<BuildRecord> Coordinator::Impl::newBuild(Batch& b, const std::string& drv_path,
                                                const DrvRecord& drv, int priority,
                                                const std::map<std::string, std::string>& tags,
                                                std::optional<std::uint64_t> retry_of) {
  BuildRecord r;
  BuildInfo& info = r.info;
  info.id = b.next_build++;
  info.derivation = drv_path;
  info.system = drv.system;
  info.required_features = drv.features;
  info.state = BuildState::kQueued;
  info.priority = priority;
  info.tags = tags;
  info.submitted_at = b.now;
  info.updated_at = b.now;
  info.outputs = drv.outputs;
  info.retry_of = retry_of;
  if (!options.cache_url.empty()) info.log_url = options.cache_url + "/log/" + baseName(drv_path);
  putBuild(b, r, std::nullopt);
  emit(b, "submitted", info);
  return r;
}

Result<std::vector<std::string>> Coordinator::Impl::inputPaths(const lmdb::Txn& txn,
                                                               const DrvRecord& drv) {
  std::vector<std::string> paths = drv.input_srcs;
  for (const auto& [input, names] : drv.input_drvs) {
    auto record = loadDrv(txn, input);
    if (!record) return fail(record.error());
    if (!*record) {
      return fail(ErrorCode::kNotFound, "input derivation " + input + " is unknown");
    }
    for (const std::string& name : names) {
      auto it = (*record)->outputs.find(name);
      if (it == (*record)->outputs.end()) {
        return fail(ErrorCode::kInvalidArgument,
                    "input derivation " + input + " has no output '" + name + "'");
      }
      paths.push_back(it->second);
    }
  }
  return paths;
}

Status Coordinator::Impl::waitFor(Batch& b, BuildRecord& record,
                                  std::optional<BuildState> old_state,
                                  const std::vector<std::string>& missing,
                                  const DeletedAt& deleted) {
  BuildInfo& info = record.info;
  info.state = BuildState::kWaiting;
  info.updated_at = b.now;
  record.allocation = 0;
  info.waiting_for = missing;
  info.blocked_by.clear();
  std::vector<std::string> notes;
  std::vector<BuildRecord> submitted;
  for (const std::string& path : missing) {
    auto producer = b.txn.get(outputs, path);
    if (!producer) {
      notes.push_back("waiting for " + path +
                      ": not in the store, and no known derivation produces it");
      continue;
    }
    std::string drv_path(*producer);
    auto drv = loadDrv(b.txn, drv_path);
    if (!drv) return fail(drv.error());
    if (!*drv) continue;
    if ((*drv)->failing) {
      if (std::find(info.blocked_by.begin(), info.blocked_by.end(), drv_path) ==
          info.blocked_by.end()) {
        info.blocked_by.push_back(drv_path);
      }
      notes.push_back("waiting for " + path + ": derivation " + drv_path + " is failing after " +
                      std::to_string((*drv)->failures) + " tries");
      continue;
    }
    if (activeBuilds(b, drv_path) == 0) {
      // Outputs missing soon after a success: count it; past --max-retries the derivation is
      // failing (its outputs do not reach the store this coordinator asks), not rebuilt forever.
      // Outputs an operator marked deleted since that success are not lost: they are to be
      // rebuilt. A tombstone older than the success (which did not lift it: the outputs did
      // not reach this store) does count.
      DrvRecord record_of = **drv;
      auto tomb = deleted.find(path);
      const bool deleted_since = tomb != deleted.end() && tomb->second >= record_of.last_success;
      const bool recent = record_of.last_success != 0 && !deleted_since &&
                          b.now - record_of.last_success < kLostOutputsWindow;
      record_of.lost = recent ? record_of.lost + 1 : 0;
      if (record_of.lost > options.max_retries) {
        record_of.failing = true;
        putDrv(b, drv_path, record_of, false);
        info.blocked_by.push_back(drv_path);
        notes.push_back("waiting for " + path + ": derivation " + drv_path + " succeeded, but " +
                        "its outputs were missing from the store " +
                        std::to_string(record_of.lost) +
                        " times right after (do the agents upload to the cache this "
                        "coordinator asks?); no automatic rebuild");
        b.effects.push_back([drv_path, n = record_of.lost] {
          spdlog::warn(
              "{}: outputs missing from the store {} times right after a success: "
              "failing, no automatic rebuild",
              drv_path, n);
        });
        continue;
      }
      if (record_of.lost != (*drv)->lost) putDrv(b, drv_path, record_of, false);
      auto r = newBuild(b, drv_path, record_of, info.priority, info.tags, std::nullopt);
      if (!r) return fail(r.error());
      submitted.push_back(*r);
    }
  }
  info.message.clear();
  for (const std::string& note : notes) {
    info.message += info.message.empty() ? "" : "; ";
    info.message += note;
  }
  if (info.message.empty()) {
    info.message = "waiting for " + std::to_string(missing.size()) + " input(s)";
  }
  putBuild(b, record, old_state);
  emit(b, "missing-inputs", info);
  return {};
}

Status Coordinator::Impl::markFailing(Batch& b, const std::string& path, DrvRecord drv,
                                      const BuildInfo& build) {
  const bool was_failing = drv.failing;
  drv.failing = true;
  putDrv(b, path, drv, was_failing);
  b.effects.push_back([id = build.id, path, message = build.message] {
    spdlog::warn("build {}: {} is failing: {}", id, path, message);
  });
  // Dependants waiting for its outputs now say what blocks them.
  for (const auto& [name, output] : drv.outputs) {
    auto w = mem.waiters.find(output);
    if (w == mem.waiters.end()) continue;
    for (std::uint64_t id : std::vector<std::uint64_t>(w->second.begin(), w->second.end())) {
      auto waiter = loadBuild(b.txn, id);
      if (!waiter) return fail(waiter.error());
      if (waiter->info.state != BuildState::kWaiting) continue;
      std::vector<std::string> still = waiter->info.waiting_for;
      NARCACHE_TRY(waitFor(b, *waiter, BuildState::kWaiting, still));
    }
  }
  return {};
}

Status Coordinator::Impl::releaseWaiters(Batch& b, const std::string& path,
                                         const std::string& producer) {
  auto it = mem.waiters.find(path);
  if (it == mem.waiters.end()) return {};
  std::vector<std::uint64_t> ids(it->second.begin(), it->second.end());
  for (std::uint64_t id : ids) {
    auto record = loadBuild(b.txn, id);
    if (!record) return fail(record.error());
    if (record->info.state != BuildState::kWaiting) continue;
    BuildInfo& info = record->info;
    std::erase(info.waiting_for, path);
    std::erase(info.blocked_by, producer);
    info.updated_at = b.now;
    if (info.waiting_for.empty()) {
      info.state = BuildState::kQueued;
      info.blocked_by.clear();
      info.message.clear();
      info.not_before = 0;
    }
    putBuild(b, *record, BuildState::kWaiting);
  }
  return {};
}

// ---- Client API ------------------------------------------------------------------------------

Result<UnknownDerivationsResponse> Coordinator::unknownDerivations(
    const UnknownDerivationsRequest& request) {
  UnknownDerivationsResponse response;
  try {
    lmdb::ReadTxn txn = impl_->env->beginRead();
    for (const std::string& path : request.paths) {
      if (!txn.has(impl_->drv_text, path)) response.unknown.push_back(path);
    }
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e));
  }
  return response;
}

Result<SubmitResponse> Coordinator::submit(const SubmitRequest& request) {
  Impl& d = *impl_;
  // Checked outside the lock: parsing and hashing the texts.
  std::map<std::string, CheckedDrv> checked;
  for (const DerivationText& text : request.derivations) {
    auto c = checkDerivation(text);
    if (!c) return fail(c.error());
    checked[c->path] = std::move(*c);
  }
  // Their output paths must be the ones Nix computes (hashDerivationModulo over the inputs),
  // or a submitter could have a build upload under any store path: checked for every
  // derivation new to the coordinator (those it has were checked when they came).
  try {
    lmdb::ReadTxn txn = d.env->beginRead();
    DerivationLoader load = [&](const std::string& path) -> Result<Derivation> {
      if (auto c = checked.find(path); c != checked.end()) return c->second.drv;
      auto text = txn.get(d.drv_text, path);
      if (!text) {
        return fail(ErrorCode::kInvalidArgument,
                    "input derivation " + path + " is unknown (send its text in `derivations`)");
      }
      return parseDrvAt(path, *text);
    };
    DrvHashMemo memo;
    for (const auto& [path, c] : checked) {
      if (txn.has(d.drvs, path)) continue;
      auto ok = checkOutputPaths(c.drv, path.substr(0, path.rfind('/')), load, &memo);
      if (!ok) {
        return fail(ErrorCode::kInvalidArgument,
                    "derivation " + path + ": " + ok.error().message());
      }
    }
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e));
  }
  // Outputs of ignore_if_built builds, asked to the store before locking.
  std::map<std::string, bool> all_built;  // drv path -> all outputs available
  {
    std::vector<std::string> paths;
    std::vector<std::pair<std::string, std::size_t>> ranges;
    try {
      lmdb::ReadTxn txn = d.env->beginRead();
      for (const SubmitBuild& sb : request.builds) {
        if (!sb.ignore_if_built || all_built.count(sb.derivation)) continue;
        DrvRecord record;
        if (auto c = checked.find(sb.derivation); c != checked.end()) {
          record = c->second.record;
        } else {
          auto r = d.loadDrv(txn, sb.derivation);
          if (!r) return fail(r.error());
          if (!*r) continue;  // reported below
          record = **r;
        }
        all_built[sb.derivation] = false;
        ranges.emplace_back(sb.derivation, record.outputs.size());
        for (const auto& [name, path] : record.outputs) paths.push_back(path);
      }
    } catch (const lmdb::Error& e) {
      return fail(lmdb::toError(e));
    }
    if (!paths.empty()) {
      auto states = d.options.availability->check(paths);
      if (!states) return fail(states.error().withContext("asking the store"));
      std::size_t i = 0;
      for (const auto& [drv, n] : ranges) {
        bool all = true;
        for (std::size_t k = 0; k < n; ++k, ++i) {
          all = all && (*states)[i].state == narstore::ItemState::kAvailable;
        }
        all_built[drv] = all;
      }
    }
  }

  return d.mutate<SubmitResponse>([&](Batch& b) -> Result<SubmitResponse> {
    // Store the new derivations; every input derivation must be known.
    for (const auto& [path, c] : checked) {
      if (b.txn.has(d.drvs, path)) continue;
      for (const auto& [input, names] : c.record.input_drvs) {
        if (!checked.count(input) && !b.txn.has(d.drvs, input)) {
          return fail(ErrorCode::kInvalidArgument,
                      "derivation " + path + ": input derivation " + input +
                          " is unknown (send its text in `derivations`)");
        }
      }
      d.putDrv(b, path, c.record, false);
      b.txn.put(d.drv_text, path, c.text);
      for (const auto& [name, out] : c.record.outputs) {
        if (!b.txn.has(d.outputs, out)) b.txn.put(d.outputs, out, path);
      }
    }
    SubmitResponse response;
    for (const SubmitBuild& sb : request.builds) {
      auto drv = d.loadDrv(b.txn, sb.derivation);
      if (!drv) return fail(drv.error());
      if (!*drv) {
        return fail(ErrorCode::kInvalidArgument,
                    "derivation " + sb.derivation + " is unknown (send its text in `derivations`)");
      }
      d.forgetLostOutputs(b, sb.derivation, **drv);  // an operator's submission starts afresh
      auto r = d.newBuild(b, sb.derivation, **drv, sb.priority, sb.tags, std::nullopt);
      if (!r) return fail(r.error());
      if (sb.ignore_if_built && all_built[sb.derivation]) {
        r->info.state = BuildState::kSucceeded;
        r->info.skipped = true;
        r->info.message = "all outputs were already available";
        d.putBuild(b, *r, BuildState::kQueued);
        d.emit(b, "success", r->info);
      }
      response.builds.push_back(r->info);
    }
    return response;
  });
}

Result<BuildList> Coordinator::listBuilds(const BuildFilter& query) {
  constexpr std::size_t kMaxScan = 200000;  // records examined per page
  BuildList list;
  std::size_t limit = std::clamp<std::size_t>(query.limit, 1, 10000);
  try {
    lmdb::ReadTxn txn = impl_->env->beginRead();
    lmdb::Cursor c(txn, impl_->builds);
    std::size_t scanned = 0;
    std::uint64_t last = query.after;
    for (auto e = c.lowerBound(idKey(query.after + 1)); e; e = c.next()) {
      last = keyId(e->first);
      if (++scanned > kMaxScan) {
        list.next_after = last - 1;
        break;
      }
      auto record = decodeBuild(e->second);
      if (!record) return fail(record.error());
      const BuildInfo& info = record->info;
      if (query.state && info.state != *query.state) continue;
      bool match = true;
      for (const auto& [k, v] : query.tags) {
        auto t = info.tags.find(k);
        match = match && t != info.tags.end() && t->second == v;
      }
      if (!match) continue;
      list.builds.push_back(info);
      if (list.builds.size() == limit) {
        if (c.next()) list.next_after = info.id;
        break;
      }
    }
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e));
  }
  return list;
}

Result<BuildInfo> Coordinator::build(std::uint64_t id) {
  try {
    lmdb::ReadTxn txn = impl_->env->beginRead();
    auto record = impl_->loadBuild(txn, id);
    if (!record) return fail(record.error());
    return record->info;
  } catch (const lmdb::Error& e) {
    return fail(lmdb::toError(e));
  }
}

Result<BuildInfo> Coordinator::cancel(std::uint64_t id, std::string_view reason) {
  Impl& d = *impl_;
  return d.mutate<BuildInfo>([&](Batch& b) -> Result<BuildInfo> {
    auto record = d.loadBuild(b.txn, id);
    if (!record) return fail(record.error());
    BuildState old = record->info.state;
    if (!isActive(old)) {
      return fail(ErrorCode::kConflict, "build " + std::to_string(id) + " is already " +
                                            std::string(buildStateName(old)));
    }
    if (record->allocation != 0) {
      b.txn.del(d.allocs, idKey(record->allocation));
      std::uint64_t alloc = record->allocation;
      b.effects.push_back([&d, alloc] { d.mem.removeAllocation(alloc); });
      record->allocation = 0;
    }
    record->info.state = BuildState::kCanceled;
    record->info.updated_at = b.now;
    record->info.message = std::string(reason);
    record->info.waiting_for.clear();
    record->info.blocked_by.clear();
    d.putBuild(b, *record, old);
    d.emit(b, "canceled", record->info);
    return record->info;
  });
}

Result<BuildInfo> Coordinator::retry(std::uint64_t id) {
  Impl& d = *impl_;
  return d.mutate<BuildInfo>([&](Batch& b) -> Result<BuildInfo> {
    auto record = d.loadBuild(b.txn, id);
    if (!record) return fail(record.error());
    if (isActive(record->info.state)) {
      return fail(ErrorCode::kConflict, "build " + std::to_string(id) + " is still " +
                                            std::string(buildStateName(record->info.state)) +
                                            " (cancel it first, or wait for it)");
    }
    auto drv = d.loadDrv(b.txn, record->info.derivation);
    if (!drv) return fail(drv.error());
    if (!*drv) return fail(ErrorCode::kInternal, "derivation of build " + std::to_string(id));
    d.forgetLostOutputs(b, record->info.derivation, **drv);
    auto r =
        d.newBuild(b, record->info.derivation, **drv, record->info.priority, record->info.tags, id);
    if (!r) return fail(r.error());
    return r->info;
  });
}

Result<AddAgentResponse> Coordinator::addAgent(const AddAgentRequest& request) {
  if (!validAgentName(request.name)) {
    return fail(ErrorCode::kInvalidArgument,
                "agent name '" + request.name + "': 1 to 64 of [A-Za-z0-9._-]");
  }
  auto secret = randomHex(32);
  if (!secret) return fail(secret.error());
  Impl& d = *impl_;
  return d.mutate<AddAgentResponse>([&](Batch& b) -> Result<AddAgentResponse> {
    if (b.txn.has(d.agents, request.name)) {
      return fail(ErrorCode::kAlreadyExists, "agent " + request.name + " exists already");
    }
    AgentRecord record{sha256Hex(*secret), b.now};
    b.txn.put(d.agents, request.name, encode(record));
    std::string name = request.name;
    std::string hash = record.secret_sha256;
    b.effects.push_back([&d, name, hash] { d.mem.agents[name].secret_sha256 = hash; });
    return AddAgentResponse{request.name, *secret};
  });
}

AgentList Coordinator::agents() {
  Impl& d = *impl_;
  std::lock_guard lock(d.mu);
  std::int64_t t = d.now();
  AgentList list;
  for (const auto& [name, a] : d.mem.agents) {
    if (a.secret_sha256.empty()) continue;
    AgentInfo info;
    info.name = name;
    info.systems = a.systems;
    info.features = a.features;
    info.max_parallel = a.max_parallel;
    info.last_seen = a.last_seen;
    info.connected = a.last_seen != 0 && t - a.last_seen <= d.options.lease_seconds;
    for (std::uint64_t alloc : a.allocations) {
      if (auto it = d.mem.allocs.find(alloc); it != d.mem.allocs.end()) {
        info.builds.push_back(it->second.build);
      }
    }
    list.agents.push_back(std::move(info));
  }
  return list;
}

bool Coordinator::authenticateAgent(std::string_view name, std::string_view secret) {
  std::string hash = sha256Hex(secret);
  std::lock_guard lock(impl_->mu);
  auto it = impl_->mem.agents.find(std::string(name));
  if (it == impl_->mem.agents.end() || it->second.secret_sha256.size() != hash.size()) {
    return false;
  }
  unsigned char diff = 0;
  for (std::size_t i = 0; i < hash.size(); ++i) {
    diff |= static_cast<unsigned char>(hash[i] ^ it->second.secret_sha256[i]);
  }
  return diff == 0;
}

}  // namespace narcache::coordinator
