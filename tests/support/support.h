#pragma once
// Test helpers shared by every suite: temporary directories, child processes, a real Nix client
// isolated from the host, golden files. Real parts only: no mocks.

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace narcache::test {

// A fresh directory under $TMPDIR (or /tmp), removed recursively on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct ProcessResult {
  int exit_code = -1;  // 128 + signal when killed by a signal
  std::string out;
  std::string err;
};

struct RunOptions {
  std::string stdin_data;
  std::map<std::string, std::string> env;  // added to (or overriding) the inherited environment
  std::optional<std::filesystem::path> cwd;
  std::optional<std::filesystem::path> stdout_file;  // write stdout here instead of capturing
  int timeout_seconds = 300;                         // killed with SIGKILL after this
};

// Runs argv[0] (searched in PATH) with the arguments and waits for it.
ProcessResult run(const std::vector<std::string>& argv, const RunOptions& options = {});
// Runs the narcache binary under test with these arguments.
ProcessResult narcache(const std::vector<std::string>& args, const RunOptions& options = {});
// Runs `/bin/sh -c script`.
ProcessResult sh(const std::string& script, const RunOptions& options = {});

// How many processes run `sleep <marker>` (tests give builders a sleep argument nothing else
// uses, to find what they leave behind).
int sleepersOf(const std::string& marker);
// How many of them are still there after up to a second; then kills them all (SIGKILL: the
// init of a PID namespace ignores other signals from outside it), so that nothing stays behind
// whatever the test found.
int sleepersLeft(const std::string& marker);

// A child process running in the background (e.g. `narcache serve`); killed (SIGKILL) and
// reaped on destruction unless stopped before.
class BackgroundProcess {
 public:
  BackgroundProcess(const std::vector<std::string>& argv, const RunOptions& options = {});
  ~BackgroundProcess();
  pid_t pid() const { return pid_; }
  // Sends `sig` and waits; returns the exit code (128 + signal when killed).
  int stop(int sig);
  // Output so far (captured to files in a temp dir).
  std::string out() const;
  std::string err() const;

 private:
  pid_t pid_ = -1;
  TempDir logs_;
};

std::string readFile(const std::filesystem::path& path);
void writeFile(const std::filesystem::path& path, const std::string& contents);

// A TCP connection to 127.0.0.1:port (TCP_NODELAY), or -1.
int connectLoopback(int port);

// One HTTP request made with curl (at most 20 s): `args` go before the URL (method, headers,
// body). status 0: no response.
struct CurlReply {
  int status = 0;
  std::string body;
};
CurlReply curlRequest(const std::string& url, const std::vector<std::string>& args = {});

// An environment in which the real Nix client (Debian nix-bin 2.8) runs isolated from the host:
// HOME, XDG_*, NIX_CONF_DIR point into a temp dir with our own nix.conf (no substituters,
// narinfo cache TTLs 0, nix-command enabled, no build users). Use `--store <chrootStore()>`.
class NixEnv {
 public:
  NixEnv();
  // Extra nix.conf lines.
  void addConfig(const std::string& line);
  const RunOptions& options() const { return options_; }
  // A fresh chroot store directory name (not created).
  std::filesystem::path newStore(const std::string& name) const { return dir_ / name; }
  ProcessResult run(const std::vector<std::string>& argv) const;
  const std::filesystem::path& dir() const { return dir_.path(); }

 private:
  TempDir dir_;
  RunOptions options_;
};

// True when `nix-store` is on PATH (the set-up script installs it).
bool haveNix();

}  // namespace narcache::test
