#include "support/support.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace narcache::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/narcache-test-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Restored trees may contain read-only dirs; make them writable so removal succeeds.
  for (auto it = fs::recursive_directory_iterator(path_, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
  }
  fs::remove_all(path_, ec);
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeFile(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path.string());
  out << contents;
}

int connectLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

namespace {

std::vector<std::string> mergedEnv(const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : extra) env[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

// Forks and execs argv with stdin from `in_fd`, stdout/stderr to the given fds.
pid_t spawn(const std::vector<std::string>& argv, const RunOptions& options, int in_fd, int out_fd,
            int err_fd) {
  auto env = mergedEnv(options.env);
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    setpgid(0, 0);
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    if (options.cwd && chdir(options.cwd->c_str()) != 0) _exit(126);
    // execvpe searches PATH of the *new* environment.
    execvpe(cargv[0], cargv.data(), cenv.data());
    dprintf(2, "exec %s: %s\n", cargv[0], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  return pid;
}

int decodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

ProcessResult run(const std::vector<std::string>& argv, const RunOptions& options) {
  TempDir io;
  fs::path in_path = io / "stdin", out_path = options.stdout_file.value_or(io / "stdout"),
           err_path = io / "stderr";
  writeFile(in_path, options.stdin_data);
  int in_fd = open(in_path.c_str(), O_RDONLY | O_CLOEXEC);
  int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  pid_t pid = spawn(argv, options, in_fd, out_fd, err_fd);
  close(in_fd);
  close(out_fd);
  close(err_fd);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.timeout_seconds);
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ProcessResult result;
  result.exit_code = decodeStatus(status);
  result.out = options.stdout_file ? std::string() : readFile(out_path);
  result.err = readFile(err_path);
  return result;
}

ProcessResult narcache(const std::vector<std::string>& args, const RunOptions& options) {
  std::vector<std::string> argv{NARCACHE_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, options);
}

CurlReply curlRequest(const std::string& url, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"curl", "-s", "--max-time", "20", "-w", "\n%{http_code}"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(url);
  auto r = run(argv);
  CurlReply reply;
  auto nl = r.out.rfind('\n');
  if (nl == std::string::npos) return reply;
  reply.status = std::atoi(r.out.c_str() + nl + 1);
  reply.body = r.out.substr(0, nl);
  return reply;
}

ProcessResult sh(const std::string& script, const RunOptions& options) {
  return run({"/bin/sh", "-c", script}, options);
}

int sleepersOf(const std::string& marker) {
  return std::atoi(sh("for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; "
                      "echo; done | grep -c '^sleep " +
                      marker + "' || true")
                       .out.c_str());
}

int sleepersLeft(const std::string& marker) {
  int left = sleepersOf(marker);
  for (int i = 0; i < 50 && left != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    left = sleepersOf(marker);
  }
  sh("pkill -9 -f 'sleep " + marker + "' || true");
  return left;
}

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv,
                                     const RunOptions& options) {
  int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  int out_fd = open((logs_ / "stdout").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err_fd = open((logs_ / "stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  pid_ = spawn(argv, options, in_fd, out_fd, err_fd);
  close(in_fd);
  close(out_fd);
  close(err_fd);
}

BackgroundProcess::~BackgroundProcess() {
  if (pid_ > 0) stop(SIGKILL);
}

int BackgroundProcess::stop(int sig) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  int status = 0;
  waitpid(pid_, &status, 0);
  if (sig == SIGKILL) kill(-pid_, SIGKILL);  // and any children it left
  pid_ = -1;
  return decodeStatus(status);
}

std::string BackgroundProcess::out() const {
  return readFile(logs_ / "stdout");
}
std::string BackgroundProcess::err() const {
  return readFile(logs_ / "stderr");
}

NixEnv::NixEnv() {
  fs::create_directories(dir_ / "home");
  fs::create_directories(dir_ / "cache");
  fs::create_directories(dir_ / "config");
  fs::create_directories(dir_ / "conf");
  options_.env = {
      {"HOME", (dir_ / "home").string()},
      {"XDG_CACHE_HOME", (dir_ / "cache").string()},
      {"XDG_CONFIG_HOME", (dir_ / "config").string()},
      {"NIX_CONF_DIR", (dir_ / "conf").string()},
      {"NIX_REMOTE", ""},
  };
  writeFile(dir_ / "conf" / "nix.conf",
            "experimental-features = nix-command\n"
            "substituters =\n"
            "build-users-group =\n"
            "sandbox-paths = /bin /usr /lib /lib64\n"
            "narinfo-cache-negative-ttl = 0\n"
            "narinfo-cache-positive-ttl = 0\n");
}

void NixEnv::addConfig(const std::string& line) {
  std::ofstream out(dir_ / "conf" / "nix.conf", std::ios::app);
  out << line << "\n";
}

ProcessResult NixEnv::run(const std::vector<std::string>& argv) const {
  return test::run(argv, options_);
}

bool haveNix() {
  return system("command -v nix-store >/dev/null 2>&1") == 0;
}

}  // namespace narcache::test
