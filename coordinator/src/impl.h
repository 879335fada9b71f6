#pragma once
// Coordinator::Impl: the database handles, the in-memory indexes and the helpers shared by
// coordinator.cc (open, client API), scheduler.cc (agent API, maintenance), hooks.cc (workers)
// and metrics.cc. Private to the coordinator module.
//
// Writes: every state change is a job (mutate()) run by ONE committer thread, which groups the
// jobs waiting at that moment into one LMDB write transaction (group commit: one fsync for many
// agents' requests). Job functions run under `mu` and must re-check the state they act on
// (the database inside the transaction is the truth; `mem` lags by the effects of the earlier
// jobs of the same group, so those are looked up in the transaction). A job that fails leaves
// the group: the transaction is aborted and the others run again without it, so a job's writes
// never outlive its failure. The commit (fsync) happens without `mu`; the jobs' effects on
// `mem` are applied under `mu` after the commit, in order, and only then do callers get their
// results. Env::write may also run the group again (map growth): job functions have no effects
// outside the transaction except through Batch::effects.
// Locking: `mu` guards `mem`; it is never held while waiting for the committer. Availability
// checks (maybe HTTP) run without `mu`: a fetch takes its candidates out of the ready index
// (checking = true), asks the store, then submits its allocation job. Each hook queue has its
// own mutex, taken after `mu` when both are held.

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <compare>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "lmdb_env.h"
#include "narcache/coordinator/coordinator.h"
#include "records.h"

namespace narcache::coordinator {

namespace lmdb = narstore::lmdb;

inline bool isActive(BuildState s) {
  return s == BuildState::kQueued || s == BuildState::kWaiting || s == BuildState::kAllocated;
}

// Which ready queue a build is in: builds for `system` that need all of `features` (sorted). An
// agent takes from the queues of its systems whose features it all has (servedBy); there are
// only a few distinct ones.
struct ReadyQueue {
  std::string system;
  std::vector<std::string> features;
  auto operator<=>(const ReadyQueue&) const = default;
  bool servedBy(const std::vector<std::string>& systems,
                const std::vector<std::string>& offered) const;
};

// A build that is not finished, as the indexes see it.
struct ActiveBuild {
  BuildState state = BuildState::kQueued;
  ReadyQueue queue;  // its ready queue: its system and required features
  std::string derivation;
  int priority = 0;
  std::int64_t not_before = 0;
  std::int64_t since = 0;  // when it entered its state
  std::vector<std::string> waiting_for;
  std::uint64_t allocation = 0;
  bool checking = false;  // taken out of the ready index by a fetch that is asking the store
};

// Deleted output paths -> when their tombstones were made (unix seconds).
using DeletedAt = std::map<std::string, std::int64_t>;

struct ReadyKey {
  int neg_priority = 0;
  std::uint64_t id = 0;
  auto operator<=>(const ReadyKey&) const = default;
};

struct OpenAllocation {
  std::uint64_t build = 0;
  std::string agent;
  std::string request_id;
  std::int64_t lease_until = 0;
};

struct AgentState {
  std::string secret_sha256;
  std::vector<std::string> systems;
  std::vector<std::string> features;
  int max_parallel = 0;
  std::int64_t last_seen = 0;
  std::set<std::uint64_t> allocations;
};

struct Memory {
  std::unordered_map<std::uint64_t, ActiveBuild> active;
  // Queued builds allocatable now, per ready queue, best first: (priority desc, id asc).
  std::map<ReadyQueue, std::set<ReadyKey>> ready;
  std::set<std::pair<std::int64_t, std::uint64_t>> delayed;  // (not_before, id): in backoff
  std::set<std::pair<std::int64_t, std::uint64_t>> queued_since;
  std::unordered_map<std::string, std::set<std::uint64_t>> waiters;  // output path -> builds
  std::unordered_map<std::string, int> active_per_drv;
  std::unordered_map<std::uint64_t, OpenAllocation> allocs;
  std::set<std::pair<std::int64_t, std::uint64_t>> leases;              // (lease_until, allocation)
  std::unordered_map<std::string, std::vector<std::uint64_t>> fetches;  // agent\nrequest_id
  std::map<std::string, AgentState> agents;

  std::array<std::uint64_t, 6> by_state{};
  std::uint64_t ready_count = 0;
  std::uint64_t allocations_total = 0;
  std::uint64_t retries_total = 0;
  std::uint64_t lease_expiries_total = 0;
  std::uint64_t derivations_failing = 0;
  std::uint64_t next_build = 1, next_alloc = 1, next_event = 1;

  // Makes the indexes agree with `record` (the build's new state).
  void apply(const BuildRecord& record, std::int64_t now);
  void addAllocation(std::uint64_t id, OpenAllocation alloc);
  void removeAllocation(std::uint64_t id);
  void setLease(std::uint64_t id, std::int64_t lease_until);
  // Moves builds whose backoff ended into the ready index.
  void promote(std::int64_t now);

 private:
  void unindex(std::uint64_t id);
};

// One hook: its spec, its queue of event sequence numbers (with their time) and its worker.
struct Hook {
  HookSpec spec;
  std::string key;  // 16 hex chars: prefix of its events in the events table
  std::mutex mu;
  std::condition_variable_any cv;
  std::map<std::uint64_t, std::int64_t> queue;  // seq -> time, guarded by mu
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> processed{0};
  std::jthread worker;
};

// The changes of one write transaction: local copies of the id counters and what to do to the
// in-memory state once the transaction committed.
struct Batch {
  lmdb::WriteTxn& txn;
  std::int64_t now = 0;
  std::uint64_t next_build = 0, next_alloc = 0, next_event = 0;
  std::vector<std::function<void()>> effects;
  std::unordered_map<std::string, int> drv_delta;  // active builds added (-removed) per drv
  std::set<Hook*> woken;
};

struct Coordinator::Impl {
  CoordinatorOptions options;
  std::shared_ptr<lmdb::Env> env;
  lmdb::Dbi builds, drvs, drv_text, outputs, allocs, agents, events, meta;

  std::mutex mu;
  Memory mem;  // guarded by mu

  // The committer's queue of jobs (see mutate()).
  struct Job {
    std::function<Status(Batch&)> run;       // an error leaves the job out of its group
    std::function<void()> publish;           // after the commit: hand the staged result over
    std::function<void(const Error&)> fail;  // the job failed (or the transaction did)
    bool done = false;                       // guarded by jobs_mu
  };
  std::mutex jobs_mu;
  std::condition_variable_any jobs_cv;
  std::condition_variable jobs_done_cv;
  std::vector<std::shared_ptr<Job>> jobs;  // guarded by jobs_mu
  std::jthread committer;
  void runCommitter(std::stop_token stop);
  void commitGroup(std::vector<std::shared_ptr<Job>> group);
  std::vector<std::unique_ptr<Hook>> hooks;
  std::int64_t last_recheck = 0;  // guarded by mu
  std::jthread maintenance;

  std::int64_t now() const { return options.clock(); }

  // --- db.cc ---------------------------------------------------------------------------------
  Status openDb();
  Status migrateFeatures();  // fills in system features of records from before them (once)
  Status load();             // rebuilds mem and the hook queues from the database
  // Runs `fn` as a job of the committer (see above) and returns its result once committed and
  // applied. The caller must not hold `mu`; `fn` runs under it.
  template <typename T>
  Result<T> mutate(const std::function<Result<T>(Batch&)>& fn);
  Result<std::optional<DrvRecord>> loadDrv(const lmdb::Txn& txn, const std::string& path);
  Result<BuildRecord> loadBuild(const lmdb::Txn& txn, std::uint64_t id);

  // --- coordinator.cc: state changes inside a Batch ------------------------------------------
  void putBuild(Batch& b, const BuildRecord& record, std::optional<BuildState> old_state);
  void putDrv(Batch& b, const std::string& path, const DrvRecord& record, bool was_failing);
  // Clears DrvRecord::lost and ::stale_inputs (a manual submission or retry: the operator asks
  // for it again).
  void forgetLostOutputs(Batch& b, const std::string& path, const DrvRecord& record);
  void emit(Batch& b, std::string_view event, const BuildInfo& info);
  int activeBuilds(Batch& b, const std::string& drv);
  Result<BuildRecord> newBuild(Batch& b, const std::string& drv_path, const DrvRecord& drv,
                               int priority, const std::map<std::string, std::string>& tags,
                               std::optional<std::uint64_t> retry_of);
  // Puts `record` in waiting for `missing` (output paths) and submits builds of their producers.
  // `deleted`: those of them the store says are deleted, with their tombstones' times: a rebuild
  // for outputs an operator marked deleted after the producer's last success is wanted, and
  // does not count as outputs lost right after a success.
  Status waitFor(Batch& b, BuildRecord& record, std::optional<BuildState> old_state,
                 const std::vector<std::string>& missing, const DeletedAt& deleted = {});
  // The output paths a build of `drv` needs: needed outputs of its input drvs, input sources.
  Result<std::vector<std::string>> inputPaths(const lmdb::Txn& txn, const DrvRecord& drv);
  // Moves waiting builds whose path `path` was produced one step closer to queued.
  Status releaseWaiters(Batch& b, const std::string& path, const std::string& producer);
  // `drv` (at `path`) is failing from now on, with `build` its failed build: the derivation
  // record is written, and the builds waiting for its outputs say what blocks them.
  Status markFailing(Batch& b, const std::string& path, DrvRecord drv, const BuildInfo& build);

  // --- scheduler.cc ----------------------------------------------------------------------------
  Status expireLeases(std::int64_t now);
  Status recheckWaiting();

  // --- hooks.cc --------------------------------------------------------------------------------
  void startHooks();
  void stopHooks();
  void runHook(Hook& hook, std::stop_token stop);
  Status runAction(Hook& hook, const std::string& event_json, std::stop_token stop);
};

std::string eventKey(const Hook& hook, std::uint64_t seq);
std::string eventJson(std::uint64_t seq, std::string_view event, std::int64_t time,
                      const BuildInfo& info);

template <typename T>
Result<T> Coordinator::Impl::mutate(const std::function<Result<T>(Batch&)>& fn) {
  auto job = std::make_shared<Job>();
  std::optional<Result<T>> staged;
  std::optional<Result<T>> out;
  job->run = [&fn, &staged](Batch& b) -> Status {
    staged.reset();
    Result<T> r = fn(b);
    if (!r) return fail(r.error());
    staged.emplace(std::move(r));
    return {};
  };
  job->publish = [&staged, &out] { out = std::move(staged); };
  job->fail = [&out](const Error& e) { out.emplace(fail(e)); };
  std::unique_lock lock(jobs_mu);
  jobs.push_back(job);
  jobs_cv.notify_all();
  jobs_done_cv.wait(lock, [&] { return job->done; });
  if (!out) return fail(ErrorCode::kInternal, "the coordinator is stopping");
  return std::move(*out);
}

}  // namespace narcache::coordinator
