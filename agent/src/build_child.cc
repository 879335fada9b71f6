// Build children of the agent: see build_child.h and agent_loop.h (runBuildChild).

#include "build_child.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "narcache/agent/agent_loop.h"
#include "narcache/agent/builder.h"

namespace narcache::agent {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr ErrorCode kAllCodes[] = {ErrorCode::kNotFound,        ErrorCode::kAlreadyExists,
                                   ErrorCode::kInvalidArgument, ErrorCode::kCorruption,
                                   ErrorCode::kIoError,         ErrorCode::kResourceExhausted,
                                   ErrorCode::kUnavailable,     ErrorCode::kPermissionDenied,
                                   ErrorCode::kConflict,        ErrorCode::kInternal};

ErrorCode codeFromName(const std::string& name) {
  for (ErrorCode code : kAllCodes) {
    if (errorCodeName(code) == name) return code;
  }
  return ErrorCode::kInternal;
}

// Engine errors worth another try on the same or another machine: the network, the disk, a
// download that arrived damaged, and what the agent is refused (a wrong or expired upload
// token, a cache signed by a key this agent does not trust): none of those is the derivation's
// fault, and reporting them as its failure would fail every build an agent so set up takes.
bool isTransient(ErrorCode code) {
  return code == ErrorCode::kUnavailable || code == ErrorCode::kIoError ||
         code == ErrorCode::kCorruption || code == ErrorCode::kResourceExhausted ||
         code == ErrorCode::kInternal || code == ErrorCode::kPermissionDenied;
}

std::string readAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Written to by the SIGTERM handler of a build child; read by its watcher thread.
int g_signal_pipe[2] = {-1, -1};

void onTerminate(int sig) {
  unsigned char byte = static_cast<unsigned char>(sig);
  [[maybe_unused]] auto n = ::write(g_signal_pipe[1], &byte, 1);
}

bool writeResult(const fs::path& file, const json& j) {
  fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << j.dump(-1, ' ', false, json::error_handler_t::replace);
    if (!out.flush()) return false;
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  return !ec;
}

}  // namespace

Result<pid_t> spawnInSession(const std::vector<std::string>& argv, const fs::path& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::string log_path = log.string();
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return fail(ErrorCode::kIoError, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Only async-signal-safe calls until exec.
    ::setsid();
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (in < 0 || out < 0) ::_exit(127);
    ::dup2(in, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

void killSession(pid_t sid) {
  if (sid <= 1) return;
  pid_t self = ::getpid();
  // Twice: a process may fork while we scan.
  for (int round = 0; round < 2; ++round) {
    DIR* dir = ::opendir("/proc");
    if (dir == nullptr) return;
    while (dirent* entry = ::readdir(dir)) {
      char* end = nullptr;
      long pid = std::strtol(entry->d_name, &end, 10);
      if (end == entry->d_name || *end != '\0' || pid == self) continue;
      std::ifstream in("/proc/" + std::string(entry->d_name) + "/stat");
      std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream fields(stat.substr(close + 1));
      std::string state;
      long ppid = 0, pgrp = 0, session = 0;
      if (!(fields >> state >> ppid >> pgrp >> session)) continue;
      if (session == sid) ::kill(static_cast<pid_t>(pid), SIGKILL);
    }
    ::closedir(dir);
  }
}

ChildOutcome readChildOutcome(const fs::path& result_file, int exit_code, const fs::path& log) {
  ChildOutcome outcome;
  json j = json::parse(readAll(result_file), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    std::string how = exit_code >= 128 ? "killed by signal " + std::to_string(exit_code - 128)
                                       : "exited with code " + std::to_string(exit_code);
    outcome.engine_error = true;
    outcome.transient = true;
    outcome.error =
        Error(ErrorCode::kInternal, "build process " + how + ": " + lastLines(readAll(log), 5));
    return outcome;
  }
  if (j.contains("error")) {
    outcome.engine_error = true;
    ErrorCode code = codeFromName(j.value("code", ""));
    outcome.transient = isTransient(code);
    outcome.error = Error(code, j.value("error", ""));
    return outcome;
  }
  auto& r = outcome.report;
  auto status = coordinator::parseReportStatus(j.value("status", ""));
  r.status = status ? *status : coordinator::ReportStatus::kFailed;
  r.message = j.value("message", "");
  if (j.contains("missing_inputs") && j["missing_inputs"].is_array()) {
    for (const auto& p : j["missing_inputs"]) {
      if (p.is_string()) r.missing_inputs.push_back(p.get<std::string>());
    }
  }
  if (j.contains("outputs") && j["outputs"].is_object()) {
    for (const auto& [name, path] : j["outputs"].items()) {
      if (path.is_string()) r.outputs[name] = path.get<std::string>();
    }
  }
  r.log_tail = j.value("log_tail", "");
  r.build_seconds = j.value("build_seconds", 0.0);
  return outcome;
}

int runBuildChild(const BuildOptions& options, const fs::path& result_file) {
  // SIGTERM (from the agent, or because the agent died): kill the whole session, builder
  // included, and leave. The handler only writes a byte; a thread does the rest.
  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) return 1;
  struct sigaction action {};
  action.sa_handler = onTerminate;
  ::sigemptyset(&action.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &action, nullptr);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  std::jthread watcher([] {
    unsigned char sig = 0;
    while (::read(g_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
    }
    if (sig == 0) return;  // the build is over (see below)
    killSession(::getsid(0));
    ::_exit(128 + sig);
  });

  json j;
  auto result = buildDerivation(options);
  if (!result) {
    j["error"] = result.error().message();
    j["code"] = std::string(errorCodeName(result.error().code()));
  } else {
    j["status"] = std::string(buildStatusName(result->status));
    j["message"] = result->message;
    j["missing_inputs"] = result->missing_inputs;
    json outputs = json::object();
    for (const auto& out : result->outputs) outputs[out.name] = out.info.fullPath();
    j["outputs"] = std::move(outputs);
    j["log_tail"] = result->log_tail;
    j["exit_code"] = result->exit_code;
    j["build_seconds"] = result->build_seconds;
  }
  bool written = writeResult(result_file, j);
  unsigned char done = 0;
  [[maybe_unused]] auto n = ::write(g_signal_pipe[1], &done, 1);
  return written ? 0 : 1;
}

}  // namespace narcache::agent
