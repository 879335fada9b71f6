// `narcache serve`: serves a store over HTTP as a Nix binary cache (narstore::Server).
//
// Signals: SIGTERM and SIGINT are blocked in every thread and taken by sigwait() on the main
// thread, which then stops the server: no new connections, in-flight requests finish, access
// times are flushed, exit code 0.
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "narcache/gc/periodic.h"
#include "narcache/narinfo/signature.h"
#include "narcache/narstore/server.h"
#include "narcache/narstore/store.h"

namespace narcache::cli {
namespace {

struct ServeArgs {
  std::string store;
  std::string listen = "127.0.0.1:8080";
  std::vector<std::string> secret_key_files;
  std::string upload_token_file;
  int priority = 40;
  std::string nar_redirect_prefix;
  unsigned threads = 0;
  int narinfo_max_age = 300;
  int negative_max_age = 60;
  std::string log_level = "info";
  // Periodic garbage collection (gc_commands.cc has the same policy flags).
  std::string gc_interval, gc_ttl, gc_max_size, gc_grace = "1h", gc_nar_grace = "1h";
};

int serve(const ServeArgs& args) {
  // Logs go to stderr (with the startup lines), one line per event.
  startLogging("narcache-serve", args.log_level);

  narstore::ServerOptions options;
  options.listen = args.listen;
  options.priority = args.priority;
  options.nar_redirect_prefix = args.nar_redirect_prefix;
  options.threads = args.threads;
  options.narinfo_cache_control = "public, max-age=" + std::to_string(args.narinfo_max_age);
  options.miss_cache_control = "public, max-age=" + std::to_string(args.negative_max_age);
  for (const std::string& file : args.secret_key_files) {
    auto text = readFileContents(file);
    if (!text) return reportError(text.error());
    auto key = SecretKey::parse(*text);
    if (!key) return reportError(key.error().withContext(file));
    options.secret_keys.push_back(std::move(*key));
  }
  if (!args.upload_token_file.empty()) {
    auto text = readFileContents(args.upload_token_file);
    if (!text) return reportError(text.error());
    std::string token = *text;
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' ||
                              token.back() == '\t')) {
      token.pop_back();
    }
    if (token.empty()) {
      return reportError(Error(ErrorCode::kInvalidArgument,
                               args.upload_token_file + ": the upload token is empty"));
    }
    options.upload_token = std::move(token);
  }

  narstore::StoreOptions store_options;
  store_options.root = args.store;
  auto store = narstore::Store::open(store_options);
  if (!store) return reportError(store.error());

  // Block the stop signals before any thread starts, so that only sigwait() below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::unique_ptr<gc::PeriodicCollector> collector;
  if (!args.gc_interval.empty()) {
    auto interval = gc::parseDuration(args.gc_interval);
    if (!interval || *interval <= 0) {
      return reportError(Error(ErrorCode::kInvalidArgument, "--gc-interval: a positive duration"));
    }
    gc::Policy policy;
    if (!args.gc_ttl.empty()) {
      auto ttl = gc::parseDuration(args.gc_ttl);
      if (!ttl) return reportError(ttl.error().withContext("--ttl"));
      policy.ttl_seconds = *ttl;
    }
    if (!args.gc_max_size.empty()) {
      auto size = gc::parseSize(args.gc_max_size);
      if (!size) return reportError(size.error().withContext("--max-size"));
      policy.max_size_bytes = *size;
    }
    auto grace = gc::parseDuration(args.gc_grace);
    if (!grace) return reportError(grace.error().withContext("--grace"));
    policy.grace_seconds = *grace;
    auto nar_grace = gc::parseDuration(args.gc_nar_grace);
    if (!nar_grace) return reportError(nar_grace.error().withContext("--nar-grace"));
    policy.nar_grace_seconds = *nar_grace;
    collector =
        std::make_unique<gc::PeriodicCollector>(**store, policy, std::chrono::seconds(*interval));
    options.extra_metrics = [c = collector.get()] { return c->renderMetrics(); };
  }

  auto server = narstore::Server::create(**store, options);
  if (!server) return reportError(server.error());

  std::fprintf(stderr, "narcache: serving %s on http://%s\n", store_options.root.c_str(),
               (*server)->address().c_str());
  for (const SecretKey& key : options.secret_keys) {
    std::fprintf(stderr, "narcache: signing with %s\n", key.publicKey().toString().c_str());
  }
  if (options.upload_token.empty()) {
    std::fprintf(stderr, "narcache: uploads disabled (no --upload-token-file)\n");
  }
  std::fflush(stderr);

  Status result;
  std::thread serving([&] {
    result = (*server)->run();
    // Wake the main thread if serving ended on its own (an error).
    kill(getpid(), SIGTERM);
  });
  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("signal {}: finishing in-flight requests", sig);
  (*server)->stop();
  serving.join();
  if (!result) return reportError(result.error());
  spdlog::info("stopped");
  return 0;
}

}  // namespace

void registerServeCommand(CommandRegistry& registry) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = registry.app().add_subcommand(
      "serve", "Serve a store over HTTP as a Nix binary cache (downloads and uploads)");
  addStoreOption(cmd, args->store);
  cmd->add_option("--listen", args->listen, "host:port to listen on; port 0 picks a free port")
      ->capture_default_str();
  cmd->add_option("--secret-key", args->secret_key_files,
                  "Sign served narinfos with this secret key file (repeatable)");
  cmd->add_option("--upload-token-file", args->upload_token_file,
                  "File holding the token that PUT uploads must present (Bearer, or as the Basic "
                  "auth password); without it uploads are disabled");
  cmd->add_option("--priority", args->priority, "Priority in /nix-cache-info")
      ->capture_default_str();
  cmd->add_option("--nar-redirect-prefix", args->nar_redirect_prefix,
                  "Answer nar downloads with X-Accel-Redirect: <prefix><file> for a reverse proxy");
  cmd->add_option(
      "--threads", args->threads,
      "Worker threads = concurrent keep-alive connections (default max(64, 8 x cores))");
  cmd->add_option("--narinfo-max-age", args->narinfo_max_age,
                  "Cache-Control max-age of narinfo hits, in seconds")
      ->capture_default_str();
  cmd->add_option("--negative-max-age", args->negative_max_age,
                  "Cache-Control max-age of misses (404), in seconds")
      ->capture_default_str();
  addLogLevelOption(cmd, args->log_level);
  CLI::Option* interval = cmd->add_option(
      "--gc-interval", args->gc_interval,
      "Collect garbage this often (30m, 1h...), with the policy below; off by default");
  // A policy without --gc-interval would be ignored: refused instead, so that nobody believes
  // a server collects that does not.
  cmd->add_option("--ttl", args->gc_ttl, "GC: keep items used within this long (default: all)")
      ->needs(interval);
  cmd->add_option("--max-size", args->gc_max_size, "GC: size budget of the nar files (10G...)")
      ->needs(interval);
  cmd->add_option("--grace", args->gc_grace, "GC: keep items created within this long (1h)")
      ->needs(interval);
  cmd->add_option("--nar-grace", args->gc_nar_grace,
                  "GC: unlink a nar file this long after it lost its last user or was uploaded "
                  "unclaimed (1h)")
      ->needs(interval);
  registry.add(cmd, [args] { return serve(*args); });
}

}  // namespace narcache::cli
