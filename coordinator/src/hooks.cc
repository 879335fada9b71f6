// Hooks: parsing `--hook EVENT=ACTION`, the durable per-hook event queues and their workers
// (one std::jthread per hook, woken on insert, polling as a fallback; an event is deleted only
// after its action succeeded, so delivery is at least once; a failing action is retried with
// exponential backoff in its own thread and never holds up another hook).

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "impl.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/store_path.h"

extern char** environ;

namespace narcache::coordinator {

Result<HookSpec> parseHookSpec(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return fail(ErrorCode::kInvalidArgument, "--hook '" + std::string(text) + "': " + why);
  };
  std::size_t eq = text.find('=');
  if (eq == std::string_view::npos) return bad("expected EVENT=command:CMD or EVENT=builtin:NAME");
  HookSpec spec;
  spec.text = std::string(text);
  spec.event = std::string(text.substr(0, eq));
  if (std::find(std::begin(kHookEvents), std::end(kHookEvents), spec.event) ==
      std::end(kHookEvents)) {
    return bad("unknown event '" + spec.event +
               "' (one of: submitted, started, success, failure, missing-inputs, canceled)");
  }
  std::string_view action = text.substr(eq + 1);
  if (action.starts_with("command:")) {
    spec.kind = HookSpec::Kind::kCommand;
    spec.action = std::string(action.substr(8));
    if (spec.action.empty()) return bad("empty command");
  } else if (action.starts_with("builtin:")) {
    spec.kind = HookSpec::Kind::kBuiltin;
    spec.action = std::string(action.substr(8));
    if (spec.action != "log" && spec.action != "root-outputs") {
      return bad("unknown builtin '" + spec.action + "' (log, root-outputs)");
    }
  } else {
    return bad("the action is command:CMD or builtin:NAME");
  }
  return spec;
}

std::string eventKey(const Hook& hook, std::uint64_t seq) {
  return hook.key + idKey(seq);
}

std::string eventJson(std::uint64_t seq, std::string_view event, std::int64_t time,
                      const BuildInfo& info) {
  return "{\"seq\":" + std::to_string(seq) + ",\"event\":\"" + std::string(event) +
         "\",\"time\":" + std::to_string(time) + ",\"build\":" + toJson(info) + "}";
}

namespace {

// Runs `/bin/sh -c command` with `input` on stdin; Ok when it exits 0 within the timeout.
Status runCommand(const std::string& command, const std::string& input, int timeout_seconds,
                  std::stop_token stop) {
  int fd = memfd_create("narcache-hook-event", MFD_CLOEXEC);
  if (fd < 0) return fail(ErrorCode::kIoError, "memfd_create failed");
  if (writeAll(fd, asBytes(input)) != 0) {
    ::close(fd);
    return fail(ErrorCode::kIoError, "writing the event failed");
  }
  ::lseek(fd, 0, SEEK_SET);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fd, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);  // the server blocks SIGTERM/SIGINT in its threads
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(fd);
  if (rc != 0) return fail(ErrorCode::kIoError, "cannot start /bin/sh");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return fail(ErrorCode::kIoError, "waitpid failed");
    if (stop.stop_requested() || std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return fail(ErrorCode::kUnavailable,
                  stop.stop_requested()
                      ? "stopped"
                      : "timed out after " + std::to_string(timeout_seconds) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
  if (WIFEXITED(status)) {
    return fail(ErrorCode::kUnavailable, "exit code " + std::to_string(WEXITSTATUS(status)));
  }
  return fail(ErrorCode::kUnavailable,
              "killed by signal " + std::to_string(WIFSIGNALED(status) ? WTERMSIG(status) : 0));
}

}  // namespace

Status Coordinator::Impl::runAction(Hook& hook, const std::string& event_json,
                                    std::stop_token stop) {
  const HookSpec& spec = hook.spec;
  if (spec.kind == HookSpec::Kind::kCommand) {
    return runCommand(spec.action, event_json, options.hook_command_timeout_seconds, stop);
  }
  if (spec.action == "log") {
    spdlog::info("hook {}: {}", spec.event, event_json);
    return {};
  }
  // root-outputs: a GC root "build-<id>" for the outputs of a succeeded build. What no retry
  // can change (outputs that are not items of this store: uploaded elsewhere, collected or
  // marked deleted since; an event without a build) is logged and done with, so that it does
  // not hold up this hook's later events.
  auto skip = [&](const std::string& why) -> Status {
    spdlog::warn("hook {}: no root made: {}", spec.text, why);
    return {};
  };
  nlohmann::json event = nlohmann::json::parse(event_json, nullptr, false);
  if (event.is_discarded() || !event.contains("build") || !event["build"].is_object()) {
    return skip("malformed event");
  }
  const nlohmann::json& build = event["build"];
  if (build.value("state", "") != "succeeded") return {};
  narstore::Root root;
  root.name = "build-" + std::to_string(build.value("id", std::uint64_t{0}));
  const nlohmann::json built = build.value("outputs", nlohmann::json::object());
  for (const auto& [name, path] : built.items()) {
    auto p = StorePath::parse(path.is_string() ? path.get<std::string>() : std::string(),
                              options.store->storeDir());
    if (!p) return skip(p.error().message());
    root.paths.push_back(*p);
  }
  if (root.paths.empty()) return {};
  auto added = options.store->addRoot(root);
  if (!added && added.error().code() == ErrorCode::kNotFound) {
    return skip(added.error().message());
  }
  return added;
}

void Coordinator::Impl::runHook(Hook& hook, std::stop_token stop) {
  int backoff_ms = options.hook_backoff_initial_ms;
  while (!stop.stop_requested()) {
    std::optional<std::uint64_t> seq;
    {
      std::unique_lock lock(hook.mu);
      hook.cv.wait_for(lock, stop, std::chrono::milliseconds(options.hook_poll_ms),
                       [&] { return !hook.queue.empty(); });
      if (stop.stop_requested()) return;
      if (!hook.queue.empty()) seq = hook.queue.begin()->first;
    }
    if (!seq) continue;
    std::string event;
    Status done;
    try {
      lmdb::ReadTxn txn = env->beginRead();
      auto value = txn.get(events, eventKey(hook, *seq));
      if (value) event = std::string(*value);
    } catch (const lmdb::Error& e) {
      done = fail(ErrorCode::kIoError, std::string("reading it: ") + e.what());  // retried
    }
    if (done && !event.empty()) {
      try {
        done = runAction(hook, event, stop);
      } catch (const std::exception& e) {
        done = fail(ErrorCode::kInternal, e.what());
      }
    }
    if (!done) {
      hook.failures++;
      spdlog::warn("hook {}: event {} failed ({}); retrying in {} ms", hook.spec.text, *seq,
                   done.error().message(), backoff_ms);
      std::unique_lock lock(hook.mu);
      hook.cv.wait_for(lock, stop, std::chrono::milliseconds(backoff_ms), [] { return false; });
      backoff_ms = std::min(backoff_ms * 2, options.hook_backoff_max_ms);
      continue;
    }
    backoff_ms = options.hook_backoff_initial_ms;
    try {
      auto deleted = env->write<bool>([&](lmdb::WriteTxn& txn) -> Result<bool> {
        return txn.del(events, eventKey(hook, *seq));
      });
      if (!deleted) {
        spdlog::error("hook {}: deleting event {}: {}", hook.spec.text, *seq,
                      deleted.error().message());
        continue;
      }
    } catch (const lmdb::Error& e) {
      spdlog::error("hook {}: deleting event {}: {}", hook.spec.text, *seq, e.what());
      continue;
    }
    hook.processed++;
    std::lock_guard lock(hook.mu);
    hook.queue.erase(*seq);
  }
}

void Coordinator::Impl::startHooks() {
  for (auto& hook : hooks) {
    Hook* h = hook.get();
    h->worker = std::jthread([this, h](std::stop_token stop) {
      try {
        runHook(*h, stop);
      } catch (const std::exception& e) {
        spdlog::critical("hook {}: worker stopped: {}", h->spec.text, e.what());
      }
    });
  }
}

void Coordinator::Impl::stopHooks() {
  for (auto& hook : hooks) {
    if (hook->worker.joinable()) {
      hook->worker.request_stop();
      hook->cv.notify_all();
      hook->worker.join();
    }
  }
}

}  // namespace narcache::coordinator
