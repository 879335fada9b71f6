// See coordinator_e2e.h. (Compiled into each coordinator_*_test through an #include, since the
// integration suite makes one executable per *_test.cc.)
#include "coordinator_e2e.h"

#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace narcache::test {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {
const char* kToken = "coordinator-e2e-upload-token";

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}
}  // namespace

void CoordinatorE2E::SetUp() {
  store_dir_ = (tmp_ / "store").string();
  marks_ = tmp_ / "marks";
  fs::create_directories(marks_);
  fs::create_directories(tmp_ / "drvs");
  server_ = ServedStore::signing(tmp_.path(), store_dir_, "coordinator-e2e-1", kToken, public_key_);
}

void CoordinatorE2E::TearDown() {
  for (auto& [name, agent] : agents_) agent->stop(SIGKILL);
  if (HasFailure()) {
    std::fprintf(stderr, "--- builds:\n%s", describeBuilds().c_str());
    if (coordinator_) std::fprintf(stderr, "--- coordinator:\n%s", coordinator_->err().c_str());
    std::fprintf(stderr, "%s", agentLogs().c_str());
  }
}

std::string CoordinatorE2E::agentLogs() const {
  std::string s;
  for (const auto& [name, agent] : agents_) {
    std::string err = agent->err();
    if (err.size() > 6000) err = "..." + err.substr(err.size() - 6000);
    s += "--- agent " + name + ":\n" + err;
  }
  return s;
}

void CoordinatorE2E::startCoordinator(const std::vector<std::string>& extra) {
  if (coordinator_) coordinator_->stop(SIGKILL);
  std::string listen = "127.0.0.1:" + std::to_string(coordinator_port_);
  std::vector<std::string> argv = {NARCACHE_BIN,
                                   "coordinator",
                                   "--db",
                                   (tmp_ / "db").string(),
                                   "--store",
                                   (tmp_ / "server").string(),
                                   "--listen",
                                   listen,
                                   "--lease",
                                   lease_,
                                   "--retry-backoff",
                                   "1s"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  for (int attempt = 0; attempt < 20; ++attempt) {
    coordinator_ = std::make_unique<BackgroundProcess>(argv);
    const std::string marker = "coordinator on http://127.0.0.1:";
    for (int i = 0; i < 100; ++i) {
      std::string err = coordinator_->err();
      auto at = err.find(marker);
      if (at != std::string::npos) {
        coordinator_port_ = std::stoi(err.substr(at + marker.size()));
        client_.reset();
        return;
      }
      if (::kill(coordinator_->pid(), 0) != 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    // The old port may still be held for a moment after a kill.
    coordinator_->stop(SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  FAIL() << "narcache coordinator did not start: " << coordinator_->err();
}

coordinator::CoordinatorClient& CoordinatorE2E::client() {
  if (!client_) {
    coordinator::ClientOptions o;
    o.url = coordinatorUrl();
    o.attempts = 3;
    auto c = coordinator::CoordinatorClient::create(o);
    EXPECT_TRUE(c);
    client_ = std::move(*c);
  }
  return *client_;
}

fs::path CoordinatorE2E::addAgent(const std::string& name) {
  auto it = secrets_.find(name);
  if (it != secrets_.end()) return it->second;
  auto r = narcache({"agent", "add", "--coordinator", coordinatorUrl(), name});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(trim(r.out).find('\n'), std::string::npos) << "only the secret on stdout: " << r.out;
  fs::path file = tmp_ / ("secret-" + name);
  writeFile(file, r.out);
  secrets_[name] = file;
  return file;
}

BackgroundProcess& CoordinatorE2E::startAgent(const std::string& name, int max_parallel,
                                              const std::string& coordinator_url,
                                              const std::string& cache_url) {
  fs::path secret = addAgent(name);
  auto& slot = agents_[name];
  if (slot) slot->stop(SIGKILL);
  slot = std::make_unique<BackgroundProcess>(
      std::vector<std::string>{NARCACHE_BIN,
                               "agent",
                               "--coordinator",
                               coordinator_url.empty() ? coordinatorUrl() : coordinator_url,
                               "--name",
                               name,
                               "--secret-file",
                               secret.string(),
                               "--cache",
                               cache_url.empty() ? server_->url() : cache_url,
                               "--upload-token-file",
                               (tmp_ / "token").string(),
                               "--work-dir",
                               (tmp_ / ("agent-" + name)).string(),
                               "--max-parallel",
                               std::to_string(max_parallel),
                               "--trusted-key",
                               public_key_,
                               "--store-root",
                               separate_stores_ ? (tmp_ / ("root-" + name)).string() : "/"});
  return *slot;
}

fs::path CoordinatorE2E::create(const std::string& name, const std::string& script,
                                const std::vector<fs::path>& deps) {
  std::vector<std::string> args = {"drv",         "create",
                                   "--name",      name,
                                   "--builder",   "/bin/sh",
                                   "--system",    "x86_64-linux",
                                   "--store-dir", store_dir_,
                                   "--arg",       "-c",
                                   "--arg",       script,
                                   "--env",       "PATH=/usr/bin:/bin",
                                   "--output",    (tmp_ / "drvs" / "tmp.drv").string()};
  for (const auto& d : deps) args.insert(args.end(), {"--input-drv", d.string()});
  auto r = narcache(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  fs::path file = tmp_ / "drvs" / fs::path(trim(r.out)).filename();
  fs::rename(tmp_ / "drvs" / "tmp.drv", file);
  return file;
}

std::string CoordinatorE2E::outPath(const fs::path& drv) {
  auto r = narcache({"drv", "show", drv.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  return j.begin().value()["outputs"]["out"]["path"];
}

std::string CoordinatorE2E::drvPath(const fs::path& drv) {
  return store_dir_ + "/" + drv.filename().string();
}

std::vector<std::uint64_t> CoordinatorE2E::submit(const std::vector<fs::path>& files,
                                                  const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"build", "submit", "--coordinator", coordinatorUrl()};
  for (const auto& f : files) args.push_back(f.string());
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = narcache(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::uint64_t> ids;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) ids.push_back(std::stoull(line));
  }
  EXPECT_EQ(ids.size(), files.size()) << r.out << r.err;
  return ids;
}

coordinator::BuildInfo CoordinatorE2E::show(std::uint64_t id) {
  auto r =
      narcache({"build", "show", std::to_string(id), "--json", "--coordinator", coordinatorUrl()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto info = coordinator::parse<coordinator::BuildInfo>(r.out);
  EXPECT_TRUE(info) << r.out;
  return info ? *info : coordinator::BuildInfo{};
}

std::vector<coordinator::BuildInfo> CoordinatorE2E::builds() {
  std::vector<coordinator::BuildInfo> all;
  coordinator::BuildQuery q;
  for (int page = 0; page < 1000; ++page) {
    auto list = client().listBuilds(q);
    if (!list) return all;
    for (auto& b : list->builds) all.push_back(std::move(b));
    if (!list->next_after || list->builds.empty()) break;
    q.after = list->next_after;
  }
  return all;
}

bool CoordinatorE2E::waitFor(const std::function<bool()>& pred, int seconds) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return pred();
}

bool CoordinatorE2E::waitSucceeded(const std::vector<std::uint64_t>& ids, int seconds) {
  return waitFor(
      [&] {
        std::map<std::uint64_t, coordinator::BuildState> states;
        for (const auto& b : builds()) states[b.id] = b.state;
        for (auto id : ids) {
          if (states[id] != coordinator::BuildState::kSucceeded) return false;
        }
        return true;
      },
      seconds);
}

std::string CoordinatorE2E::describeBuilds() {
  if (coordinator_port_ == 0) return "";
  std::string s;
  for (const auto& b : builds()) {
    s += std::to_string(b.id) + " " + fs::path(b.derivation).filename().string() + " " +
         std::string(coordinator::buildStateName(b.state)) + " tries " + std::to_string(b.tries) +
         " agent " + b.agent;
    for (const auto& w : b.waiting_for) s += " waiting-for " + w;
    for (const auto& w : b.blocked_by) s += " blocked-by " + w;
    if (!b.message.empty()) s += " msg: " + b.message;
    s += "\n";
  }
  return s;
}

}  // namespace narcache::test
