// The agent loop: see agent_loop.h.

#include "narcache/agent/agent_loop.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "build_child.h"
#include "narcache/coordinator/client.h"

namespace narcache::agent {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using coordinator::Allocation;
using coordinator::CoordinatorClient;

namespace {

constexpr auto kKillGrace = 5s;          // SIGTERM, then SIGKILL of the child and its session
constexpr auto kPauseAfterRelease = 5s;  // after giving a build back for an engine error
constexpr auto kMaxFetchBackoff = 10s;   // when the coordinator cannot be reached
constexpr auto kCallGrace = 2s;          // for requests on the wire when the agent stops
constexpr int kDefaultLeaseSeconds = 30;

std::string randomId() {
  std::random_device rd;
  std::uniform_int_distribution<std::uint64_t> dist;
  std::uint64_t a = dist(rd), b = dist(rd);
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(a),
                static_cast<unsigned long long>(b));
  return buf;
}

// Heartbeats go out three times per lease (at most every 300 ms).
std::chrono::milliseconds heartbeatInterval(int lease_seconds) {
  return std::chrono::milliseconds(std::max(300, lease_seconds * 1000 / 3));
}

std::string ids(const std::vector<std::uint64_t>& values) {
  std::string s;
  for (auto v : values) s += (s.empty() ? "" : ",") + std::to_string(v);
  return s;
}

// The base name of a store path, refused when it could escape the build directory.
Result<std::string> safeBaseName(const std::string& path) {
  auto slash = path.rfind('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (base.empty() || base == "." || base == ".." || path.empty() || path[0] != '/') {
    return fail(ErrorCode::kInvalidArgument, "bad derivation path '" + path + "'");
  }
  return base;
}

Status writeFileAtomically(const fs::path& path, const std::string& text) {
  fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return fail(ErrorCode::kIoError, "cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return fail(ErrorCode::kIoError, "cannot rename " + tmp.string() + ": " + ec.message());
  return {};
}

// One allocation being built. The worker thread owns the child; the loop only flags.
struct Job {
  Allocation allocation;
  std::atomic<bool> drop{false};    // canceled or lease lost: stop, report nothing
  std::atomic<bool> closed{false};  // reported or released (acknowledged)
  std::atomic<bool> done{false};    // the worker has finished
  std::jthread thread;
};

class Agent {
 public:
  // `farewell` gives back the builds at shutdown: a short try, since the coordinator may be
  // gone (they are given back at the next start anyway, or their leases run out).
  Agent(const AgentOptions& options, std::unique_ptr<CoordinatorClient> client,
        std::unique_ptr<CoordinatorClient> farewell, std::stop_token stop)
      : o_(options),
        client_(std::move(client)),
        farewell_(std::move(farewell)),
        stop_(std::move(stop)) {}

  Status run();

 private:
  void worker(Job& job);
  int waitChild(Job& job, pid_t pid);
  void finish(Job& job, const ChildOutcome& outcome);
  void report(Job& job, coordinator::ResultReport report);
  bool sleepFor(Clock::duration d);  // false when stopping
  std::vector<std::string> childArgs(const Job& job, const fs::path& dir) const;
  void persist();  // mutex_ held
  void loadPrevious();
  void releasePrevious();
  void fetch();
  void heartbeat();
  void heartbeatLoop();  // its own thread: a slow fetch or report never delays a heartbeat
  void cutOffCalls(std::stop_token done);  // its own thread, from the stop on
  void reap();
  void shutdown();
  fs::path buildDir(std::uint64_t allocation_id) const {
    return o_.work_dir / "builds" / std::to_string(allocation_id);
  }

  const AgentOptions& o_;
  std::unique_ptr<CoordinatorClient> client_;
  std::unique_ptr<CoordinatorClient> farewell_;
  std::stop_token stop_;
  std::mutex mutex_;
  std::condition_variable_any wake_;
  std::map<std::uint64_t, std::unique_ptr<Job>> jobs_;  // by allocation id
  std::vector<std::uint64_t> previous_;                 // left by an earlier run
  std::string fetch_id_;                                // kept until a fetch is answered
  Clock::time_point next_fetch_{};
  Clock::time_point next_heartbeat_{};  // lowered by fetch() when it starts a job
  Clock::duration fetch_backoff_ = 0s;
  bool coordinator_down_ = false;
};

bool Agent::sleepFor(Clock::duration d) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, stop_, d, [] { return false; });
}

void Agent::persist() {
  nlohmann::json j;
  std::vector<std::uint64_t> open = previous_;
  for (const auto& [id, job] : jobs_) {
    if (!job->closed) open.push_back(id);
  }
  j["agent"] = o_.name;
  j["allocations"] = open;
  auto status = writeFileAtomically(o_.work_dir / "allocations.json", j.dump());
  if (!status) spdlog::error("agent: {}", status.error().message());
}

void Agent::loadPrevious() {
  std::ifstream in(o_.work_dir / "allocations.json");
  if (!in) return;
  std::stringstream ss;
  ss << in.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_object() && j.contains("allocations") && j["allocations"].is_array()) {
    for (const auto& id : j["allocations"]) {
      if (id.is_number_unsigned()) previous_.push_back(id.get<std::uint64_t>());
    }
  }
  if (!previous_.empty()) {
    spdlog::info("agent: giving back {} allocation(s) left by a previous run: {}", previous_.size(),
                 ids(previous_));
  }
}

void Agent::releasePrevious() {
  if (previous_.empty()) return;
  auto ack = client_->release({previous_, "agent restarted"});
  if (!ack && ack.error().code() == ErrorCode::kUnavailable) return;  // next round
  if (!ack) {
    spdlog::warn("agent: releasing {}: {}", ids(previous_), ack.error().message());
  }
  std::lock_guard lock(mutex_);
  for (auto id : previous_) {
    std::error_code ec;
    fs::remove_all(buildDir(id), ec);
  }
  previous_.clear();
  persist();
}

std::vector<std::string> Agent::childArgs(const Job& job, const fs::path& dir) const {
  const Allocation& a = job.allocation;
  std::vector<std::string> args = {o_.self_exe.string(),
                                   "agent",
                                   "build-child",
                                   (dir / *safeBaseName(a.derivation)).string(),
                                   "--result-file",
                                   (dir / "result.json").string(),
                                   "--cache",
                                   o_.cache_url,
                                   "--log-file",
                                   (dir / "build.log").string(),
                                   "--tmp-dir",
                                   (dir / "tmp").string(),
                                   "--store-root",
                                   o_.store_root.string(),
                                   "--timeout",
                                   std::to_string(a.timeout_seconds),
                                   "--max-silent-time",
                                   std::to_string(a.max_silent_seconds),
                                   "--cores",
                                   std::to_string(o_.cores),
                                   "--system-features",
                                   fmt::format("{}", fmt::join(*o_.system_features, " "))};
  if (!o_.upload_token_file.empty()) {
    args.insert(args.end(), {"--upload-token-file", o_.upload_token_file.string()});
  }
  for (const auto& key : o_.trusted_keys) args.insert(args.end(), {"--trusted-key", key});
  if (!o_.build_uids.empty()) args.insert(args.end(), {"--build-uids", o_.build_uids});
  return args;
}

int Agent::waitChild(Job& job, pid_t pid) {
  bool signaled = false;
  Clock::time_point signaled_at;
  for (;;) {
    siginfo_t info{};
    int rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (rc == 0 && info.si_pid == pid) break;
    if (rc < 0 && errno != EINTR) break;
    bool stopping = job.drop || stop_.stop_requested();
    if (stopping && !signaled) {
      ::kill(pid, SIGTERM);
      signaled = true;
      signaled_at = Clock::now();
    } else if (signaled && Clock::now() - signaled_at > kKillGrace) {
      ::kill(pid, SIGKILL);
      killSession(pid);
    }
    std::this_thread::sleep_for(100ms);
  }
  // The child is a zombie: its pid (the session id) cannot be reused yet. Kill stragglers.
  killSession(pid);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void Agent::report(Job& job, coordinator::ResultReport report) {
  report.allocation_id = job.allocation.allocation_id;
  auto delay = Clock::duration(1s);
  while (!job.drop) {
    auto ack = client_->report(report);
    if (ack) {
      job.closed = true;
      spdlog::info("agent: build {} ({}): reported {}{}", job.allocation.build_id,
                   job.allocation.derivation, coordinator::reportStatusName(report.status),
                   ack->accepted ? "" : " (not accepted: the allocation was already closed)");
      return;
    }
    if (ack.error().code() != ErrorCode::kUnavailable) {
      spdlog::error("agent: build {}: report refused: {}", job.allocation.build_id,
                    ack.error().message());
      job.closed = true;
      return;
    }
    if (stop_.stop_requested()) return;  // released at shutdown
    spdlog::warn("agent: build {}: report: {} (trying again)", job.allocation.build_id,
                 ack.error().message());
    if (!sleepFor(delay)) return;
    delay = std::min<Clock::duration>(delay * 2, 10s);
  }
}

void Agent::finish(Job& job, const ChildOutcome& outcome) {
  const Allocation& a = job.allocation;
  if (!outcome.engine_error) {
    report(job, outcome.report);
    return;
  }
  if (!outcome.transient) {
    coordinator::ResultReport r;
    r.status = coordinator::ReportStatus::kFailed;
    r.message = "build engine: " + outcome.error.message();
    report(job, std::move(r));
    return;
  }
  // Not the derivation's fault: give it back unbuilt and pause fetching for a moment.
  spdlog::warn("agent: build {}: giving it back after {} tries: {}", a.build_id, o_.engine_attempts,
               outcome.error.message());
  {
    std::lock_guard lock(mutex_);
    next_fetch_ = std::max(next_fetch_, Clock::now() + kPauseAfterRelease);
  }
  auto delay = Clock::duration(1s);
  while (!job.drop && !stop_.stop_requested()) {
    auto ack =
        client_->release({{a.allocation_id}, "agent " + o_.name + ": " + outcome.error.message()});
    if (ack || ack.error().code() != ErrorCode::kUnavailable) {
      job.closed = true;
      return;
    }
    if (!sleepFor(delay)) return;
    delay = std::min<Clock::duration>(delay * 2, 10s);
  }
}

void Agent::worker(Job& job) {
  const Allocation& a = job.allocation;
  fs::path dir = buildDir(a.allocation_id);
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir / "tmp", ec);
  Status prepared = {};
  if (ec)
    prepared = fail(ErrorCode::kIoError, "cannot create " + dir.string() + ": " + ec.message());
  auto base = safeBaseName(a.derivation);
  if (prepared && !base) prepared = fail(base.error());
  for (const auto& d : a.derivations) {
    if (!prepared) break;
    auto name = safeBaseName(d.path);
    if (!name) {
      prepared = fail(name.error());
      break;
    }
    prepared = writeFileAtomically(dir / *name, d.text);
  }
  ChildOutcome outcome;
  bool stopped = false;
  if (!prepared) {
    outcome.engine_error = true;
    outcome.transient = prepared.error().code() == ErrorCode::kIoError;
    outcome.error = prepared.error();
  } else {
    auto delay = Clock::duration(1s);
    for (int attempt = 1; attempt <= std::max(1, o_.engine_attempts); ++attempt) {
      fs::remove(dir / "result.json", ec);
      auto pid = spawnInSession(childArgs(job, dir), dir / "engine.log");
      if (!pid) {
        outcome.engine_error = true;
        outcome.transient = true;
        outcome.error = pid.error();
      } else {
        int code = waitChild(job, *pid);
        if (job.drop || stop_.stop_requested()) {
          stopped = true;
          break;
        }
        outcome = readChildOutcome(dir / "result.json", code, dir / "engine.log");
      }
      if (!outcome.engine_error || !outcome.transient) break;
      if (attempt < o_.engine_attempts) {
        spdlog::warn("agent: build {}: engine error (try {}/{}): {}", a.build_id, attempt,
                     o_.engine_attempts, outcome.error.message());
        if (!sleepFor(delay)) {
          stopped = true;
          break;
        }
        delay *= 2;
      }
    }
  }
  if (stopped) {
    spdlog::info("agent: build {} ({}): stopped{}", a.build_id, a.derivation,
                 job.drop ? " (canceled or lease lost)" : "");
  } else {
    finish(job, outcome);
  }
  fs::remove_all(dir, ec);
  {
    std::lock_guard lock(mutex_);
    job.done = true;
  }
  wake_.notify_all();
}

void Agent::fetch() {
  std::size_t running;
  {
    std::lock_guard lock(mutex_);
    running = jobs_.size();
  }
  if (static_cast<int>(running) >= o_.max_parallel) return;
  if (fetch_id_.empty()) fetch_id_ = o_.name + "-" + randomId();
  coordinator::FetchRequest request;
  request.request_id = fetch_id_;
  request.systems = o_.systems;
  request.features = *o_.system_features;
  request.max_parallel = o_.max_parallel;
  request.running = static_cast<int>(running);
  auto response = client_->fetch(request);
  auto now = Clock::now();
  if (!response && stop_.stop_requested()) return;
  if (!response) {
    fetch_backoff_ = std::min<Clock::duration>(
        fetch_backoff_ == 0s ? Clock::duration(1s) : fetch_backoff_ * 2, kMaxFetchBackoff);
    if (!coordinator_down_) {
      spdlog::warn("agent: fetch: {} (trying again every few seconds)", response.error().message());
    }
    coordinator_down_ = true;
    std::lock_guard lock(mutex_);
    next_fetch_ = now + fetch_backoff_;
    return;
  }
  if (coordinator_down_) spdlog::info("agent: coordinator {} is back", client_->url());
  coordinator_down_ = false;
  fetch_backoff_ = 0s;
  fetch_id_.clear();
  std::lock_guard lock(mutex_);
  for (auto& a : response->allocations) {
    if (jobs_.contains(a.allocation_id)) continue;  // a repeated answer
    spdlog::info("agent: build {}: {} (allocation {}, lease {} s)", a.build_id, a.derivation,
                 a.allocation_id, a.lease_seconds);
    auto job = std::make_unique<Job>();
    job->allocation = std::move(a);
    Job* raw = job.get();
    jobs_.emplace(raw->allocation.allocation_id, std::move(job));
    persist();
    int lease =
        raw->allocation.lease_seconds > 0 ? raw->allocation.lease_seconds : kDefaultLeaseSeconds;
    next_heartbeat_ = std::min(next_heartbeat_, now + heartbeatInterval(lease));
    raw->thread = std::jthread([this, raw] {
      try {
        worker(*raw);
      } catch (const std::exception& e) {
        spdlog::error("agent: build {}: internal error: {}", raw->allocation.build_id, e.what());
        std::lock_guard inner(mutex_);
        raw->done = true;
      }
      wake_.notify_all();
    });
  }
  if (response->allocations.empty()) {
    next_fetch_ = now + std::chrono::milliseconds(std::max(200, response->poll_seconds * 1000));
  } else {
    next_fetch_ = now;   // there may be more
    wake_.notify_all();  // the heartbeat thread: its next beat may be earlier now
  }
}

void Agent::heartbeat() {
  coordinator::HeartbeatRequest request;
  int lease = kDefaultLeaseSeconds;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [id, job] : jobs_) {
      if (job->done || job->closed) continue;
      request.allocations.push_back(id);
      if (job->allocation.lease_seconds > 0) lease = std::min(lease, job->allocation.lease_seconds);
    }
  }
  auto interval = heartbeatInterval(lease);
  auto next = Clock::now() + interval;
  if (!request.allocations.empty()) {
    auto response = client_->heartbeat(request);
    if (!response && stop_.stop_requested()) return;
    if (!response) {
      spdlog::warn("agent: heartbeat: {}", response.error().message());
      next = Clock::now() + std::min<Clock::duration>(interval, 1s);
    } else {
      next = Clock::now() + interval;
      std::lock_guard lock(mutex_);
      for (auto id : response->canceled) {
        auto it = jobs_.find(id);
        if (it == jobs_.end() || it->second->drop) continue;
        spdlog::info("agent: build {}: canceled or lease lost: stopping it",
                     it->second->allocation.build_id);
        it->second->drop = true;
      }
    }
  }
  std::lock_guard lock(mutex_);
  next_heartbeat_ = next;
}

void Agent::heartbeatLoop() {
  while (!stop_.stop_requested()) {
    heartbeat();
    std::unique_lock lock(mutex_);
    while (!stop_.stop_requested() && Clock::now() < next_heartbeat_) {
      auto until = next_heartbeat_;
      wake_.wait_until(lock, stop_, until, [&] { return next_heartbeat_ < until; });
    }
  }
}

// Requests on the wire when the agent is told to stop get kCallGrace to finish (a result report
// in progress should get through); then they are cut off, so that a coordinator that accepts
// connections but never answers cannot hold the stop up for a whole request timeout.
void Agent::cutOffCalls(std::stop_token done) {
  std::unique_lock lock(mutex_);
  wake_.wait(lock, done, [&] { return stop_.stop_requested(); });
  if (done.stop_requested()) return;
  wake_.wait_for(lock, done, kCallGrace, [] { return false; });
  if (done.stop_requested()) return;
  lock.unlock();
  spdlog::info("agent: cutting off the requests still waiting for the coordinator");
  client_->stop();
}

void Agent::reap() {
  std::vector<std::unique_ptr<Job>> finished;
  {
    std::lock_guard lock(mutex_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      if (it->second->done) {
        finished.push_back(std::move(it->second));
        it = jobs_.erase(it);
      } else {
        ++it;
      }
    }
    if (!finished.empty()) persist();
  }
  finished.clear();  // joins the threads (outside the lock: the workers take it)
}

void Agent::shutdown() {
  spdlog::info("agent: stopping: giving back the builds in progress");
  std::vector<std::unique_ptr<Job>> jobs;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, job] : jobs_) jobs.push_back(std::move(job));
    jobs_.clear();
  }
  std::vector<std::uint64_t> open = previous_;
  for (auto& job : jobs) {
    if (job->thread.joinable()) job->thread.join();  // the workers see stop_ and stop
    if (!job->closed) open.push_back(job->allocation.allocation_id);
  }
  if (!open.empty()) {
    auto ack = farewell_->release({open, "agent " + o_.name + " stopping"});
    if (!ack) {
      spdlog::warn("agent: release {}: {}", ids(open), ack.error().message());
    } else {
      open.clear();
    }
  }
  std::lock_guard lock(mutex_);
  previous_ = open;  // still to give back next time
  persist();
}

Status Agent::run() {
  std::error_code ec;
  fs::create_directories(o_.work_dir / "builds", ec);
  if (ec) {
    return fail(ErrorCode::kIoError,
                "cannot create work dir " + o_.work_dir.string() + ": " + ec.message());
  }
  loadPrevious();
  spdlog::info("agent {}: coordinator {}, cache {}, systems {}, features {}, up to {} builds",
               o_.name, client_->url(), o_.cache_url, fmt::join(o_.systems, ","),
               fmt::join(*o_.system_features, ","), o_.max_parallel);
  std::stop_callback wake_on_stop(stop_, [this] {
    std::lock_guard lock(mutex_);  // so that cutOffCalls cannot miss the wake-up
    wake_.notify_all();
  });
  std::jthread cut_off([this](std::stop_token done) { cutOffCalls(std::move(done)); });
  std::jthread beat([this] { heartbeatLoop(); });  // ends with stop_, joined before shutdown
  while (!stop_.stop_requested()) {
    reap();
    releasePrevious();
    if (Clock::now() >= next_fetch_ && !stop_.stop_requested()) fetch();
    std::unique_lock lock(mutex_);
    auto until = next_fetch_;
    bool full = static_cast<int>(jobs_.size()) >= o_.max_parallel;
    if (full) until = Clock::now() + 1s;  // a finishing job wakes the loop earlier
    wake_.wait_until(lock, stop_, std::max(until, Clock::now() + 50ms), [&] {
      for (const auto& [id, job] : jobs_) {
        if (job->done) return true;
      }
      return false;
    });
  }
  beat.join();
  shutdown();
  return {};
}

}  // namespace

std::string hostSystem() {
  utsname u{};
  std::string machine = ::uname(&u) == 0 ? u.machine : "x86_64";
  if (machine == "amd64") machine = "x86_64";
  if (machine == "arm64") machine = "aarch64";
  return machine + "-linux";
}

Status runAgent(const AgentOptions& options_in, std::stop_token stop) {
  AgentOptions options = options_in;
  if (options.systems.empty()) options.systems = {hostSystem()};
  if (!options.system_features) options.system_features = defaultSystemFeatures();
  if (options.self_exe.empty()) {
    std::error_code ec;
    options.self_exe = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return fail(ErrorCode::kIoError, "cannot find the narcache binary: " + ec.message());
  }
  if (options.name.empty()) return fail(ErrorCode::kInvalidArgument, "agent: --name is required");
  if (options.cache_url.empty()) {
    return fail(ErrorCode::kInvalidArgument, "agent: --cache is required");
  }
  if (options.max_parallel < 1) options.max_parallel = 1;
  options.work_dir = fs::absolute(options.work_dir);
  coordinator::ClientOptions client_options;
  client_options.url = options.coordinator_url;
  client_options.token = options.name + ":" + options.secret;
  client_options.attempts = options.http_attempts;
  client_options.timeout = 20s;
  auto client = CoordinatorClient::create(client_options);
  if (!client) return fail(client.error());
  client_options.attempts = 2;
  client_options.timeout = 5s;
  auto farewell = CoordinatorClient::create(client_options);
  if (!farewell) return fail(farewell.error());
  Agent agent(options, std::move(*client), std::move(*farewell), std::move(stop));
  return agent.run();
}

}  // namespace narcache::agent
