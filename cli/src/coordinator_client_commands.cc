// The coordinator's client commands and the agent:
//
//   narcache build submit FILE.drv... [--priority N] [--tag K=V]... [--ignore-if-built]
//   narcache build list [--state S] [--tag K=V]... [--limit N] [--json]
//   narcache build show ID [--json] | build cancel ID | build retry ID
//   narcache agent add NAME            (prints the new agent's secret on stdout, nothing else)
//   narcache agent list [--json]
//   narcache agent --coordinator URL --name N --secret-file F --cache URL ... (the agent loop)
//
// Every client command takes --coordinator URL (default $NARCACHE_COORDINATOR, then
// http://127.0.0.1:8745) and --token-file F (default $NARCACHE_COORDINATOR_TOKEN_FILE).
// `build` is shared with `narcache build FILE.drv` (build_command.cc): CLI11 matches these
// subcommand names before it fills build's positional FILE, and their actions are registered
// before build's (commands.h), since CommandRegistry runs the first parsed command it knows.
// Likewise `agent add|list|build-child` are registered before the loop, which runs when `agent`
// is given without a subcommand. `agent build-child` (hidden) is the process in which the loop
// runs one build (agent_loop.h).

#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "narcache/agent/agent_loop.h"
#include "narcache/coordinator/client.h"
#include "narcache/coordinator/protocol.h"
#include "narcache/narinfo/derivation.h"

namespace narcache::cli {
namespace {

namespace fs = std::filesystem;
namespace co = coordinator;

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string envOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

struct ClientArgs {
  std::string coordinator = envOr("NARCACHE_COORDINATOR", "http://127.0.0.1:8745");
  std::string token_file = envOr("NARCACHE_COORDINATOR_TOKEN_FILE", "");
};

void addClientOptions(CLI::App* cmd, ClientArgs& args) {
  cmd->add_option("--coordinator", args.coordinator,
                  "Coordinator URL (default: $NARCACHE_COORDINATOR, then http://127.0.0.1:8745)");
  cmd->add_option("--token-file", args.token_file,
                  "File with the client token (default: $NARCACHE_COORDINATOR_TOKEN_FILE)");
}

Result<std::unique_ptr<co::CoordinatorClient>> connect(const ClientArgs& args) {
  co::ClientOptions options;
  options.url = args.coordinator;
  options.attempts = 4;
  if (!args.token_file.empty()) {
    auto token = readFileContents(args.token_file);
    if (!token) return fail(token.error().withContext("--token-file"));
    options.token = trimmed(*token);
  }
  return co::CoordinatorClient::create(options);
}

Result<std::uint64_t> parseId(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || text[0] == '-') {
    return fail(ErrorCode::kInvalidArgument, "not a build id: '" + text + "'");
  }
  return static_cast<std::uint64_t>(v);
}

Result<std::pair<std::string, std::string>> parseTag(const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return fail(ErrorCode::kInvalidArgument, "--tag '" + text + "': not KEY=VALUE");
  }
  return std::pair{text.substr(0, eq), text.substr(eq + 1)};
}

std::string baseName(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string timeText(std::int64_t t) {
  if (t <= 0) return "-";
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

std::string joined(const std::vector<std::string>& items, const char* sep = ", ") {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : sep) + i;
  return s;
}

// "waiting for X, Y (failing: Z.drv)" and the like: why a build is where it is.
std::string stateText(const co::BuildInfo& b) {
  std::string s(co::buildStateName(b.state));
  if (b.state == co::BuildState::kWaiting) {
    if (!b.waiting_for.empty()) s += " for " + joined(b.waiting_for);
    if (!b.blocked_by.empty())
      s += " (failing, not retried automatically: " + joined(b.blocked_by) + ")";
  } else if (b.state == co::BuildState::kAllocated && !b.agent.empty()) {
    s += " to " + b.agent;
  } else if (b.state == co::BuildState::kQueued && b.not_before > std::time(nullptr)) {
    s += " (retry not before " + timeText(b.not_before) + ")";
  }
  if (b.skipped) s += " (skipped: outputs already available)";
  return s;
}

void printBuild(const co::BuildInfo& b) {
  std::printf("build %llu: %s\n", static_cast<unsigned long long>(b.id), b.derivation.c_str());
  std::printf("  state:     %s\n", stateText(b).c_str());
  std::printf("  system:    %s\n", b.system.c_str());
  if (!b.required_features.empty()) {
    std::printf("  features:  %s (agents offering them all)\n",
                joined(b.required_features, " ").c_str());
  }
  std::printf("  priority:  %d\n", b.priority);
  std::printf("  tries:     %d\n", b.tries);
  if (!b.tags.empty()) {
    std::vector<std::string> tags;
    for (const auto& [k, v] : b.tags) tags.push_back(k + "=" + v);
    std::printf("  tags:      %s\n", joined(tags, " ").c_str());
  }
  if (!b.agent.empty()) std::printf("  agent:     %s\n", b.agent.c_str());
  std::printf("  submitted: %s\n", timeText(b.submitted_at).c_str());
  std::printf("  updated:   %s\n", timeText(b.updated_at).c_str());
  for (const auto& [name, path] : b.outputs) {
    std::printf("  output:    %s %s\n", name.c_str(), path.c_str());
  }
  if (b.retry_of) {
    std::printf("  retry of:  %llu\n", static_cast<unsigned long long>(*b.retry_of));
  }
  if (!b.message.empty()) std::printf("  message:   %s\n", b.message.c_str());
  if (!b.log_url.empty()) std::printf("  log:       %s\n", b.log_url.c_str());
}

// ---- build submit: the .drv closure ----

struct DrvFile {
  std::string store_path;
  std::string text;
  Derivation drv;
};

// Reads a .drv file and computes its store path (which the coordinator checks).
Result<DrvFile> readDrv(const fs::path& file) {
  auto text = readFileContents(file.string());
  if (!text) return fail(text.error());
  auto drv = parseDerivation(*text, drvNameFromFileName(file.string()));
  if (!drv) return fail(drv.error().withContext(file.string()));
  std::string store_dir;
  for (const auto& [out, o] : drv->outputs) {
    if (!o.path.empty()) store_dir = fs::path(o.path).parent_path().string();
  }
  if (store_dir.empty()) {
    return fail(ErrorCode::kInvalidArgument, file.string() + ": no output paths");
  }
  auto path = derivationStorePath(*drv, store_dir);
  if (!path) return fail(path.error().withContext(file.string()));
  return DrvFile{*path, std::move(*text), std::move(*drv)};
}

// The given .drv files and their input derivations, recursively: each input is looked up by
// base name beside the file that needs it, then at its store path.
Result<std::map<std::string, DrvFile>> drvClosure(const std::vector<fs::path>& files,
                                                  std::vector<std::string>& roots) {
  std::map<std::string, DrvFile> all;
  std::deque<std::pair<std::string, fs::path>> todo;  // store path (or "" for roots), file
  for (const auto& f : files) todo.emplace_back("", f);
  while (!todo.empty()) {
    auto [want, file] = todo.front();
    todo.pop_front();
    if (!want.empty() && all.contains(want)) continue;
    auto d = readDrv(file);
    if (!d) return fail(d.error());
    if (!want.empty() && d->store_path != want) {
      return fail(ErrorCode::kInvalidArgument,
                  file.string() + " is " + d->store_path + ", not the needed " + want);
    }
    if (want.empty()) roots.push_back(d->store_path);
    if (all.contains(d->store_path)) continue;
    for (const auto& [input, outs] : d->drv.input_drvs) {
      if (all.contains(input)) continue;
      fs::path beside = file.parent_path() / baseName(input);
      std::error_code ec;
      if (fs::exists(beside, ec)) {
        todo.emplace_back(input, beside);
      } else if (fs::exists(input, ec)) {
        todo.emplace_back(input, input);
      } else {
        return fail(ErrorCode::kNotFound, "unknown input derivation '" + input + "' of " +
                                              file.string() + ": no '" + baseName(input) +
                                              "' beside it nor in the store");
      }
    }
    std::string key = d->store_path;
    all.emplace(key, std::move(*d));
  }
  return all;
}

struct SubmitArgs {
  ClientArgs client;
  std::vector<std::string> files;
  int priority = 0;
  std::vector<std::string> tags;
  bool ignore_if_built = false;
  bool json = false;
};

int submit(const SubmitArgs& a) {
  std::map<std::string, std::string> tags;
  for (const auto& t : a.tags) {
    auto kv = parseTag(t);
    if (!kv) return reportError(kv.error());
    tags[kv->first] = kv->second;
  }
  std::vector<fs::path> files(a.files.begin(), a.files.end());
  std::vector<std::string> roots;
  auto closure = drvClosure(files, roots);
  if (!closure) return reportError(closure.error());
  auto client = connect(a.client);
  if (!client) return reportError(client.error());
  co::UnknownDerivationsRequest ask;
  for (const auto& [path, d] : *closure) ask.paths.push_back(path);
  auto unknown = (*client)->unknownDerivations(ask);
  if (!unknown) return reportError(unknown.error());
  co::SubmitRequest request;
  for (const auto& path : unknown->unknown) {
    auto it = closure->find(path);
    if (it == closure->end()) continue;
    request.derivations.push_back({path, it->second.text});
  }
  for (const auto& root : roots) {
    request.builds.push_back({root, a.priority, tags, a.ignore_if_built});
  }
  auto response = (*client)->submit(request);
  if (!response) return reportError(response.error());
  if (a.json) {
    std::printf("%s\n", co::toJson(*response).c_str());
    return 0;
  }
  std::fprintf(stderr, "narcache: sent %zu of %zu derivations; %zu build(s)\n",
               request.derivations.size(), closure->size(), response->builds.size());
  for (const auto& b : response->builds) {
    std::printf("%llu\n", static_cast<unsigned long long>(b.id));
  }
  return 0;
}

void registerBuildClient(CommandRegistry& registry, CLI::App* build) {
  auto s = std::make_shared<SubmitArgs>();
  CLI::App* cmd = build->add_subcommand(
      "submit",
      "Submit builds of .drv files to the coordinator (sends the .drv closure it does not know "
      "yet). Prints one build id per file");
  cmd->add_option("FILE", s->files, ".drv files (input .drv files beside them or in the store)")
      ->required();
  cmd->add_option("--priority", s->priority, "Higher runs first (default 0)");
  cmd->add_option("--tag", s->tags, "KEY=VALUE tag; repeatable");
  cmd->add_flag("--ignore-if-built", s->ignore_if_built,
                "No build when all outputs are already available in the cache");
  cmd->add_flag("--json", s->json, "Print the created builds as JSON");
  addClientOptions(cmd, s->client);
  registry.add(cmd, [s] { return submit(*s); });

  struct ListArgs {
    ClientArgs client;
    std::string state;
    std::vector<std::string> tags;
    int limit = 0;
    bool json = false;
  };
  auto l = std::make_shared<ListArgs>();
  cmd = build->add_subcommand("list", "List builds (ascending id)");
  cmd->add_option("--state", l->state, "queued, waiting, allocated, succeeded, failed or canceled");
  cmd->add_option("--tag", l->tags, "KEY=VALUE; repeatable (all must match)");
  cmd->add_option("--limit", l->limit, "At most N builds (default: all)");
  cmd->add_flag("--json", l->json, "Print a JSON array of builds");
  addClientOptions(cmd, l->client);
  registry.add(cmd, [l] {
    co::BuildQuery query;
    if (!l->state.empty()) {
      auto state = co::parseBuildState(l->state);
      if (!state) return reportError(state.error().withContext("--state"));
      query.state = *state;
    }
    for (const auto& t : l->tags) {
      auto kv = parseTag(t);
      if (!kv) return reportError(kv.error());
      query.tags.push_back(*kv);
    }
    auto client = connect(l->client);
    if (!client) return reportError(client.error());
    co::BuildList all;
    for (;;) {  // page through
      if (l->limit > 0) query.limit = l->limit - static_cast<int>(all.builds.size());
      auto page = (*client)->listBuilds(query);
      if (!page) return reportError(page.error());
      for (auto& b : page->builds) all.builds.push_back(std::move(b));
      if (!page->next_after || page->builds.empty()) break;
      if (l->limit > 0 && static_cast<int>(all.builds.size()) >= l->limit) break;
      query.after = page->next_after;
    }
    if (l->json) {
      std::printf("%s\n", co::toJson(all).c_str());
      return 0;
    }
    for (const auto& b : all.builds) {
      std::printf("%-6llu %-45s tries %d  %s\n", static_cast<unsigned long long>(b.id),
                  baseName(b.derivation).c_str(), b.tries, stateText(b).c_str());
    }
    return 0;
  });

  struct IdArgs {
    ClientArgs client;
    std::string id;
    bool json = false;
  };
  auto addIdCommand = [&](const char* name, const char* description, auto call) {
    auto args = std::make_shared<IdArgs>();
    CLI::App* c = build->add_subcommand(name, description);
    c->add_option("ID", args->id, "Build id")->required();
    c->add_flag("--json", args->json, "Print the build as JSON");
    addClientOptions(c, args->client);
    registry.add(c, [args, call] {
      auto id = parseId(args->id);
      if (!id) return reportError(id.error());
      auto client = connect(args->client);
      if (!client) return reportError(client.error());
      auto info = call(**client, *id);
      if (!info) return reportError(info.error());
      if (args->json) {
        std::printf("%s\n", co::toJson(*info).c_str());
      } else {
        printBuild(*info);
      }
      return 0;
    });
  };
  addIdCommand("show", "Show a build: state, tries, why it waits, outputs, log link",
               [](co::CoordinatorClient& c, std::uint64_t id) { return c.build(id); });
  addIdCommand("cancel", "Cancel a build (stops it on its agent)",
               [](co::CoordinatorClient& c, std::uint64_t id) { return c.cancel(id); });
  addIdCommand("retry", "Build the derivation of a build again (a new build, always runs)",
               [](co::CoordinatorClient& c, std::uint64_t id) { return c.retry(id); });
}

// ---- agent ----

struct AgentArgs {
  std::string coordinator = envOr("NARCACHE_COORDINATOR", "http://127.0.0.1:8745");
  std::string name;
  std::string secret_file;
  std::string cache;
  std::string upload_token_file;
  std::string work_dir;
  std::vector<std::string> systems;
  int max_parallel = 1;
  unsigned cores = 0;
  std::optional<std::string> system_features;
  std::vector<std::string> trusted_keys;
  std::string store_root = "/";
  std::string build_uids;
};

// Blocks SIGTERM/SIGINT/SIGHUP in this (still single-threaded) process, so that every thread
// inherits the mask, and turns them into a stop request from a dedicated thread.
class StopOnSignal {
 public:
  explicit StopOnSignal(std::stop_source& source) {
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, sig);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    thread_ = std::jthread([set, &source](std::stop_token stop) {
      timespec tick{0, 200 * 1000 * 1000};
      while (!stop.stop_requested()) {
        int sig = sigtimedwait(&set, nullptr, &tick);
        if (sig > 0) {
          spdlog::info("agent: signal {}: stopping", sig);
          source.request_stop();
          return;
        }
      }
    });
  }

 private:
  std::jthread thread_;
};

int runAgentLoop(const AgentArgs& a) {
  for (const auto& [flag, value] : {std::pair{"--name", &a.name},
                                    {"--secret-file", &a.secret_file},
                                    {"--cache", &a.cache},
                                    {"--work-dir", &a.work_dir}}) {
    if (value->empty()) {
      std::fprintf(stderr, "narcache: agent: %s is required (see narcache agent --help)\n", flag);
      return 2;
    }
  }
  agent::AgentOptions options;
  options.coordinator_url = a.coordinator;
  options.name = a.name;
  auto secret = readFileContents(a.secret_file);
  if (!secret) return reportError(secret.error().withContext("--secret-file"));
  options.secret = trimmed(*secret);
  options.cache_url = a.cache;
  options.upload_token_file = a.upload_token_file;
  if (!a.upload_token_file.empty()) {
    auto token = readFileContents(a.upload_token_file);  // checked now rather than in every build
    if (!token) return reportError(token.error().withContext("--upload-token-file"));
    options.upload_token_file = fs::absolute(a.upload_token_file);
  }
  options.work_dir = a.work_dir;
  options.systems = a.systems;
  options.max_parallel = a.max_parallel;
  options.cores = a.cores;
  if (a.system_features) options.system_features = parseSystemFeatures(*a.system_features);
  auto keys = parseTrustedKeys(a.trusted_keys);
  if (!keys) return reportError(keys.error());
  for (const auto& k : a.trusted_keys) {
    std::error_code ec;
    options.trusted_keys.push_back(fs::exists(k, ec) ? fs::absolute(k).string() : k);
  }
  options.store_root = a.store_root;
  auto uids = parseBuildUids(a.build_uids);
  if (!uids) return reportError(uids.error());
  options.build_uids = a.build_uids;
  startLogging("narcache-agent");
  if (::geteuid() == 0 && !*uids) {
    spdlog::warn(
        "agent: builders run as root and can read what this agent can (its upload "
        "token and secret); give them build users with --build-uids");
  }
  std::stop_source stop;
  StopOnSignal signals(stop);
  auto status = agent::runAgent(options, stop.get_token());
  if (!status) return reportError(status.error());
  return 0;
}

struct ChildArgs {
  std::string file;
  std::string result_file;
  std::string cache;
  std::string upload_token_file;
  std::vector<std::string> trusted_keys;
  std::string store_root = "/";
  std::string log_file;
  std::string tmp_dir;
  std::string build_uids;
  int timeout = 0;
  int max_silent_time = 0;
  unsigned cores = 0;
  std::optional<std::string> system_features;
};

int runChild(const ChildArgs& a) {
  agent::BuildOptions options;
  options.drv_file = a.file;
  options.cache_url = a.cache;
  auto keys = parseTrustedKeys(a.trusted_keys);
  if (!keys) return reportError(keys.error());
  options.trusted_keys = *keys;
  if (!a.upload_token_file.empty()) {
    auto token = readFileContents(a.upload_token_file);
    if (!token) return reportError(token.error().withContext("--upload-token-file"));
    options.upload_token = trimmed(*token);
  }
  options.store_root = a.store_root;
  options.log_file = a.log_file;
  options.tmp_dir = a.tmp_dir;
  options.timeout_seconds = a.timeout;
  options.max_silent_seconds = a.max_silent_time;
  options.cores = a.cores;
  if (a.system_features) options.system_features = parseSystemFeatures(*a.system_features);
  options.check_output_paths = false;  // the coordinator checked them at submission
  auto uids = parseBuildUids(a.build_uids);
  if (!uids) return reportError(uids.error());
  options.build_uids = *uids;
  options.on_progress = [](std::string_view message) {
    std::fprintf(stderr, "%.*s\n", static_cast<int>(message.size()), message.data());
  };
  return agent::runBuildChild(options, a.result_file);
}

void registerAgent(CommandRegistry& registry) {
  CLI::App* agent_cmd = registry.app().add_subcommand(
      "agent",
      "Run a build agent (with the options below and no subcommand): pull builds from the "
      "coordinator, build them, upload outputs to the cache, report. Or manage agents: agent "
      "add|list");
  agent_cmd->require_subcommand(0, 1);

  auto add = std::make_shared<std::pair<ClientArgs, std::string>>();
  CLI::App* cmd = agent_cmd->add_subcommand(
      "add", "Register an agent; prints its secret on stdout (shown only once)");
  cmd->add_option("NAME", add->second, "Agent name ([A-Za-z0-9._-], up to 64)")->required();
  addClientOptions(cmd, add->first);
  registry.add(cmd, [add] {
    auto client = connect(add->first);
    if (!client) return reportError(client.error());
    auto r = (*client)->addAgent({add->second});
    if (!r) return reportError(r.error());
    std::printf("%s\n", r->secret.c_str());
    return 0;
  });

  auto list = std::make_shared<std::pair<ClientArgs, bool>>();
  cmd = agent_cmd->add_subcommand("list", "List agents: systems, last seen, builds");
  cmd->add_flag("--json", list->second, "Print JSON");
  addClientOptions(cmd, list->first);
  registry.add(cmd, [list] {
    auto client = connect(list->first);
    if (!client) return reportError(client.error());
    auto r = (*client)->agents();
    if (!r) return reportError(r.error());
    if (list->second) {
      std::printf("%s\n", co::toJson(*r).c_str());
      return 0;
    }
    for (const auto& ag : r->agents) {
      std::vector<std::string> builds;
      for (auto id : ag.builds) builds.push_back(std::to_string(id));
      std::printf("%-20s %-13s %-24s max %d  last seen %s  builds: %s  features: %s\n",
                  ag.name.c_str(), ag.connected ? "connected" : "disconnected",
                  joined(ag.systems, ",").c_str(), ag.max_parallel, timeText(ag.last_seen).c_str(),
                  builds.empty() ? "-" : joined(builds, ",").c_str(),
                  ag.features.empty() ? "-" : joined(ag.features, ",").c_str());
    }
    return 0;
  });

  auto c = std::make_shared<ChildArgs>();
  cmd = agent_cmd->add_subcommand("build-child", "(internal) one build of the agent loop");
  cmd->group("");  // hidden
  cmd->add_option("FILE", c->file)->required();
  cmd->add_option("--result-file", c->result_file)->required();
  cmd->add_option("--cache", c->cache)->required();
  cmd->add_option("--upload-token-file", c->upload_token_file);
  cmd->add_option("--trusted-key", c->trusted_keys);
  cmd->add_option("--store-root", c->store_root);
  cmd->add_option("--log-file", c->log_file);
  cmd->add_option("--tmp-dir", c->tmp_dir);
  cmd->add_option("--build-uids", c->build_uids);
  cmd->add_option("--timeout", c->timeout);
  cmd->add_option("--max-silent-time", c->max_silent_time);
  cmd->add_option("--cores", c->cores);
  cmd->add_option("--system-features", c->system_features);
  registry.add(cmd, [c] { return runChild(*c); });

  auto a = std::make_shared<AgentArgs>();
  agent_cmd->add_option("--coordinator", a->coordinator,
                        "Coordinator URL (default: $NARCACHE_COORDINATOR, then "
                        "http://127.0.0.1:8745)");
  agent_cmd->add_option("--name", a->name, "This agent's name (see agent add)");
  agent_cmd->add_option("--secret-file", a->secret_file, "File with the secret from agent add");
  agent_cmd->add_option("--cache", a->cache,
                        "Binary cache URL: inputs come from it, outputs go "
                        "to it");
  agent_cmd->add_option("--upload-token-file", a->upload_token_file,
                        "File with the cache's upload Bearer token");
  agent_cmd->add_option("--work-dir", a->work_dir,
                        "Directory for the builds in progress and allocations.json");
  agent_cmd->add_option(
      "--system", a->systems,
      "System it builds for; repeatable (default: the host's, " + agent::hostSystem() + ")");
  agent_cmd->add_option("--max-parallel", a->max_parallel, "Builds at once (default 1)");
  addCoresOption(agent_cmd, a->cores);
  addSystemFeaturesOption(agent_cmd, a->system_features);
  agent_cmd->add_option("--trusted-key", a->trusted_keys,
                        "Public key (name:base64 or a file) inputs must be signed by; repeatable");
  agent_cmd->add_option("--store-root", a->store_root,
                        "Physical root of the store (default /; see narcache build --help)");
  addBuildUidsOption(agent_cmd, a->build_uids);
  registry.add(agent_cmd, [a] { return runAgentLoop(*a); });
}

}  // namespace

void registerCoordinatorClientCommands(CommandRegistry& registry) {
  // `build` also takes a .drv (build_command.cc, registered after this); whoever comes first
  // creates it.
  CLI::App* build = nullptr;
  for (CLI::App* sub : registry.app().get_subcommands({})) {
    if (sub->get_name() == "build") build = sub;
  }
  if (build == nullptr) build = registry.app().add_subcommand("build", "");
  registerBuildClient(registry, build);
  registerAgent(registry);
}

}  // namespace narcache::cli
