// `narcache coordinator`: the build coordinator (coordinator::Coordinator behind
// coordinator::HttpApi), asking a local store (--store) or a remote cache (--cache) what is
// really available.
//
// Signals: SIGTERM and SIGINT are blocked in every thread and taken by sigwait() on the main
// thread, which stops the HTTP server (in-flight requests finish), then the coordinator (its
// maintenance and hook threads; unprocessed hook events stay in the database), exit code 0.
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "narcache/coordinator/availability.h"
#include "narcache/coordinator/coordinator.h"
#include "narcache/coordinator/http_api.h"
#include "narcache/gc/gc.h"

namespace narcache::cli {
namespace {

struct CoordinatorArgs {
  std::string db;
  std::string store;
  std::string cache;
  std::string cache_token_file;
  std::string listen = "127.0.0.1:8745";
  std::string client_token_file;
  int max_retries = 2;
  std::string lease = "60s";
  std::string retry_backoff = "10s";
  std::string waiting_recheck = "5s";
  std::vector<std::string> hooks;
  std::string hook_timeout = "60s";
  int build_timeout = 0;
  int max_silent_time = 0;
  unsigned threads = 64;
  std::string log_level = "info";
};

Result<std::string> readToken(const std::string& file) {
  auto text = readFileContents(file);
  if (!text) return fail(text.error());
  std::string token = *text;
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' ||
                            token.back() == '\t')) {
    token.pop_back();
  }
  if (token.empty()) return fail(ErrorCode::kInvalidArgument, file + ": the token is empty");
  return token;
}

Result<int> positiveSeconds(const std::string& text, const std::string& flag) {
  auto seconds = gc::parseDuration(text);
  if (!seconds) return fail(seconds.error().withContext(flag));
  if (*seconds <= 0 || *seconds > 365LL * 86400) {
    return fail(ErrorCode::kInvalidArgument, flag + ": a positive duration (60s, 5m...)");
  }
  return static_cast<int>(*seconds);
}

int runCoordinator(const CoordinatorArgs& args) {
  startLogging("narcache-coordinator", args.log_level);

  if (args.store.empty() == args.cache.empty()) {
    return reportError(Error(ErrorCode::kInvalidArgument,
                             "give exactly one of --store DIR (a local store) or --cache URL"));
  }
  coordinator::CoordinatorOptions options;
  options.db_dir = args.db;
  options.max_retries = args.max_retries;
  if (args.max_retries < 0) {
    return reportError(Error(ErrorCode::kInvalidArgument, "--max-retries: 0 or more"));
  }
  struct Duration {
    const std::string& text;
    const char* flag;
    int& seconds;
  };
  for (const Duration& d :
       {Duration{args.lease, "--lease", options.lease_seconds},
        Duration{args.retry_backoff, "--retry-backoff", options.retry_backoff_seconds},
        Duration{args.waiting_recheck, "--waiting-recheck", options.waiting_recheck_seconds},
        Duration{args.hook_timeout, "--hook-timeout", options.hook_command_timeout_seconds}}) {
    auto seconds = positiveSeconds(d.text, d.flag);
    if (!seconds) return reportError(seconds.error());
    d.seconds = *seconds;
  }
  options.build_timeout_seconds = args.build_timeout;
  options.max_silent_seconds = args.max_silent_time;
  for (const std::string& text : args.hooks) {
    auto spec = coordinator::parseHookSpec(text);
    if (!spec) return reportError(spec.error());
    options.hooks.push_back(std::move(*spec));
  }

  std::unique_ptr<narstore::Store> store;
  std::unique_ptr<coordinator::Availability> availability;
  if (!args.store.empty()) {
    auto opened = openStore(args.store);
    if (!opened) return reportError(opened.error());
    store = std::move(*opened);
    availability = coordinator::localAvailability(*store);
    options.store = store.get();
  } else {
    coordinator::RemoteAvailabilityOptions remote;
    remote.cache_url = args.cache;
    while (!remote.cache_url.empty() && remote.cache_url.back() == '/') remote.cache_url.pop_back();
    if (!args.cache_token_file.empty()) {
      auto token = readToken(args.cache_token_file);
      if (!token) return reportError(token.error());
      remote.token = *token;
    }
    auto remote_availability = coordinator::remoteAvailability(remote);
    if (!remote_availability) return reportError(remote_availability.error());
    availability = std::move(*remote_availability);
    options.cache_url = remote.cache_url;
  }
  options.availability = availability.get();

  coordinator::HttpApiOptions http_options;
  http_options.listen = args.listen;
  http_options.threads = args.threads;
  if (!args.client_token_file.empty()) {
    auto token = readToken(args.client_token_file);
    if (!token) return reportError(token.error());
    http_options.client_token = *token;
  }

  // Block the stop signals before any thread starts, so that only sigwait() below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto coord = coordinator::Coordinator::open(options);
  if (!coord) return reportError(coord.error());
  auto server = coordinator::HttpApi::create(**coord, http_options);
  if (!server) return reportError(server.error());

  std::fprintf(stderr, "narcache: coordinator on http://%s (database %s, store %s)\n",
               (*server)->address().c_str(), args.db.c_str(),
               args.store.empty() ? args.cache.c_str() : args.store.c_str());
  std::fflush(stderr);

  Status result;
  std::thread serving([&] {
    result = (*server)->run();
    kill(getpid(), SIGTERM);  // wake the main thread if serving ended on its own
  });
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("signal {}: finishing in-flight requests", sig);
  (*server)->stop();
  serving.join();
  server->reset();
  coord->reset();
  if (!result) return reportError(result.error());
  spdlog::info("stopped");
  return 0;
}

}  // namespace

void registerCoordinatorCommand(CommandRegistry& registry) {
  auto args = std::make_shared<CoordinatorArgs>();
  CLI::App* cmd = registry.app().add_subcommand(
      "coordinator", "Run the build coordinator: allocate builds to agents over HTTP");
  cmd->add_option("--db", args->db, "Directory of the coordinator's database (created)")
      ->required();
  cmd->add_option("--store", args->store, "Local narcache store to ask what is available");
  cmd->add_option("--cache", args->cache,
                  "URL of a `narcache serve` to ask what is available (POST /api/available)");
  cmd->add_option("--cache-token-file", args->cache_token_file,
                  "File holding the cache's upload token (its API is behind it)");
  cmd->add_option("--listen", args->listen, "host:port to listen on; port 0 picks a free port")
      ->capture_default_str();
  cmd->add_option("--client-token-file", args->client_token_file,
                  "File holding the token that clients must present (Bearer)");
  cmd->add_option("--max-retries", args->max_retries,
                  "Automatic retries of a failing derivation before it is 'failing'")
      ->capture_default_str();
  cmd->add_option("--lease", args->lease, "Allocation lease, renewed by heartbeats")
      ->capture_default_str();
  cmd->add_option("--retry-backoff", args->retry_backoff,
                  "Delay before the first retry (doubling for each further one)")
      ->capture_default_str();
  cmd->add_option("--hook", args->hooks,
                  "EVENT=command:CMD or EVENT=builtin:log|root-outputs (repeatable); events: "
                  "submitted, started, success, failure, missing-inputs, canceled");
  cmd->add_option("--hook-timeout", args->hook_timeout,
                  "Kill a hook command running this long (the event is retried with backoff)")
      ->capture_default_str();
  cmd->add_option("--waiting-recheck", args->waiting_recheck,
                  "Ask the store again this often whether waiting builds' inputs appeared")
      ->capture_default_str();
  cmd->add_option("--build-timeout", args->build_timeout,
                  "Builder timeout handed to agents, seconds (0: none)");
  cmd->add_option("--max-silent-time", args->max_silent_time,
                  "Kill a builder silent this long, seconds (0: none)");
  cmd->add_option("--threads", args->threads, "HTTP worker threads")->capture_default_str();
  addLogLevelOption(cmd, args->log_level);
  registry.add(cmd, [args] { return runCoordinator(*args); });
}

}  // namespace narcache::cli
