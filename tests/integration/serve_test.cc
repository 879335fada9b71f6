// `narcache serve`, judged by the real Nix client (nix-bin 2.8) and by raw HTTP (curl, sockets):
// uploads with `nix copy --to http://` (Expect: 100-continue, netrc token), downloads with
// `nix copy --from` under require-sigs, `nix path-info`, `nix log`, Range/HEAD, bad input of
// every kind (each with its 4xx and a consistent store after), concurrency, kill -9 mid-upload.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/served_store.h"
#include "support/support.h"

namespace narcache::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::steady_clock;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct HttpResult {
  int status = 0;
  std::string headers;  // of the final response
  std::string body;
};

// One request with curl; `args` go before the URL (method, headers, upload file...).
HttpResult curl(const std::string& url, const std::vector<std::string>& args = {}) {
  std::vector<std::string> argv = {"curl", "-s", "-i", "--max-time", "30", "-w", "\n%{http_code}"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(url);
  auto r = run(argv);
  HttpResult result;
  std::string out = r.out;
  std::size_t nl = out.rfind('\n');
  if (nl == std::string::npos) return result;
  result.status = std::atoi(out.c_str() + nl + 1);
  out.resize(nl);
  // Skip interim "100 Continue" blocks.
  while (true) {
    std::size_t end = out.find("\r\n\r\n");
    if (end == std::string::npos) {
      result.headers = out;
      break;
    }
    std::string block = out.substr(0, end);
    out = out.substr(end + 4);
    if (block.find(" 100 ") != std::string::npos && block.rfind("HTTP/", 0) == 0 &&
        block.find("Continue") != std::string::npos) {
      continue;
    }
    result.headers = block;
    result.body = out;
    break;
  }
  return result;
}

// What rawExchange does once its bytes are sent.
enum class After {
  kHalfClose,  // shut its side down (the server sees the end of the body), then read the reply
  kClose,      // close at once, reading nothing
  kWait,       // keep its side open and read one reply, up to the end of its Content-Length
};

// Sends raw bytes on a fresh connection and returns what came back.
std::string rawExchange(int port, const std::string& bytes, After after) {
  int fd = connectLoopback(port);
  if (fd < 0) return "";
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string reply;
  if (after == After::kClose) {
    close(fd);
    return reply;
  }
  if (after == After::kHalfClose) shutdown(fd, SHUT_WR);
  char buf[4096];
  while (true) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    reply.append(buf, static_cast<std::size_t>(n));
    std::size_t end = reply.find("\r\n\r\n");
    if (after == After::kWait && end != std::string::npos) {
      std::size_t at = reply.find("Content-Length: ");
      std::size_t length = at < end ? std::stoul(reply.substr(at + 16)) : 0;
      if (reply.size() >= end + 4 + length) break;
    }
  }
  close(fd);
  return reply;
}

using Served = ServedStore;

const char* kToken = "s3cret-upload-token";

// The test closure (see NIX-AS-JUDGE.md §2): a -> b -> c with a self-reference in a, an
// executable and a symlink in b, a 3 MB file in a, and build logs.
const char* kClosureNix = R"(
let
  mk = name: script: builtins.derivation {
    inherit name; builder = "/bin/sh"; args = [ "-c" script ];
    PATH = "/usr/bin:/bin"; system = builtins.currentSystem; };
  c = mk "chain-c" "mkdir $out; echo hello-c > $out/file; echo building chain-c";
  b = mk "chain-b" ''
    mkdir -p $out/bin; printf '#!/bin/sh\necho ${c}\n' > $out/bin/tool; chmod +x $out/bin/tool
    ln -s ${c}/file $out/link; echo building chain-b'';
  a = mk "chain-a" ''
    mkdir $out; echo ${b} > $out/ref; echo $out > $out/self
    head -c 3000000 /dev/urandom > $out/big; echo building chain-a'';
in { inherit a b c; }
)";

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    writeFile(tmp_ / "token", std::string(kToken) + "\n");
    auto key = nixOrNarcacheKey("narcache-test-1");
    writeFile(tmp_ / "sk", key.first);
    writeFile(tmp_ / "pk", key.second);
  }

  // A secret and public key pair in Nix's format.
  std::pair<std::string, std::string> nixOrNarcacheKey(const std::string& name) {
    auto sk = nix_.run({"nix", "key", "generate-secret", "--key-name", name});
    if (sk.exit_code != 0) return {"", ""};
    RunOptions in = nix_.options();
    in.stdin_data = sk.out;
    auto pk = run({"nix", "key", "convert-secret-to-public"}, in);
    return {sk.out, trim(pk.out)};
  }

  std::vector<std::string> serveArgs() const {
    return {"--secret-key", (tmp_ / "sk").string(), "--upload-token-file",
            (tmp_ / "token").string()};
  }

  // Builds the closure into a fresh chroot store; returns chain-a's path.
  std::string buildClosure(const fs::path& store) {
    writeFile(tmp_ / "closure.nix", kClosureNix);
    auto built = nix_.run({"nix-build", "--store", store.string(), (tmp_ / "closure.nix").string(),
                           "-A", "a", "--no-out-link"});
    EXPECT_EQ(built.exit_code, 0) << built.err;
    return trim(built.out);
  }

  std::vector<std::string> closureOf(const fs::path& store, const std::string& path) {
    auto r = nix_.run({"nix-store", "--store", store.string(), "-qR", path});
    std::vector<std::string> paths;
    std::string line;
    std::istringstream in(r.out);
    while (std::getline(in, line)) {
      if (!line.empty()) paths.push_back(line);
    }
    return paths;
  }

  void writeNetrc() {
    writeFile(tmp_ / "netrc",
              std::string("machine 127.0.0.1 login narcache password ") + kToken + "\n");
  }

  ProcessResult copyTo(const fs::path& store, const Served& served,
                       const std::vector<std::string>& paths) {
    std::vector<std::string> argv = {"nix",
                                     "copy",
                                     "--store",
                                     store.string(),
                                     "--option",
                                     "netrc-file",
                                     (tmp_ / "netrc").string(),
                                     "--to",
                                     served.url("?compression=zstd")};
    argv.insert(argv.end(), paths.begin(), paths.end());
    return nix_.run(argv);
  }

  void expectVerifyClean(const fs::path& root) {
    auto verify = narcache({"verify", "--store", root.string()});
    EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  }

  static std::string hashPart(const std::string& store_path) {
    return fs::path(store_path).filename().string().substr(0, 32);
  }

  TempDir tmp_;
  NixEnv nix_;
};

// --- Without Nix ------------------------------------------------------------------------------

TEST_F(ServeTest, CacheInfoHealthMetricsMissesAndMethods) {
  Served served(tmp_ / "store", {"--priority", "30"});
  auto info = curl(served.url("/nix-cache-info"));
  EXPECT_EQ(info.status, 200);
  EXPECT_EQ(info.body, "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n");
  EXPECT_TRUE(contains(info.headers, "Content-Type: text/x-nix-cache-info")) << info.headers;

  auto head = curl(served.url("/nix-cache-info"), {"-I"});
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(contains(head.headers, "Content-Length: 51")) << head.headers;
  EXPECT_EQ(head.body, "");

  EXPECT_EQ(curl(served.url("/healthz")).status, 200);

  auto miss = curl(served.url("/00000000000000000000000000000000.narinfo"));
  EXPECT_EQ(miss.status, 404);
  EXPECT_TRUE(contains(miss.headers, "Cache-Control: public, max-age=60")) << miss.headers;
  EXPECT_EQ(curl(served.url("/00000000000000000000000000000000.narinfo"), {"-I"}).status, 404);
  EXPECT_EQ(curl(served.url("/nar/" + std::string(52, '0') + ".nar.zst")).status, 404);
  EXPECT_EQ(curl(served.url("/log/00000000000000000000000000000000-x.drv")).status, 404);
  EXPECT_EQ(curl(served.url("/no-such-route")).status, 404);
  EXPECT_EQ(curl(served.url("/nix-cache-info"), {"-X", "DELETE"}).status, 405);

  auto metrics = curl(served.url("/metrics"));
  EXPECT_EQ(metrics.status, 200);
  EXPECT_TRUE(
      contains(metrics.body, "narcache_http_requests_total{route=\"narinfo\",code=\"404\"} 2"))
      << metrics.body;
  EXPECT_TRUE(contains(metrics.body, "narcache_http_request_duration_seconds_bucket{le=\"+Inf\"}"));
  EXPECT_TRUE(contains(metrics.body, "narcache_store_items 0"));
  EXPECT_TRUE(contains(metrics.body, "narcache_upload_failures_total{route=\"put_nar\"} 0"));

  EXPECT_EQ(served.stop(SIGTERM), 0) << served.log();
}

TEST_F(ServeTest, UploadsNeedTheToken) {
  Served served(tmp_ / "store", serveArgs());
  writeFile(tmp_ / "body", "StoreDir: /nix/store\n");
  std::string body = (tmp_ / "body").string();
  std::string url = served.url("/nix-cache-info");

  auto none = curl(url, {"-T", body});  // curl sends Expect only for bodies > 1 MiB...
  EXPECT_EQ(none.status, 401);
  EXPECT_TRUE(contains(none.headers, "WWW-Authenticate: Basic")) << none.headers;
  // ... so force Expect: 100-continue as Nix does: refused before the body is sent.
  EXPECT_EQ(curl(url, {"-T", body, "-H", "Expect: 100-continue"}).status, 401);
  EXPECT_EQ(curl(url, {"-T", body, "-H", "Authorization: Bearer wrong"}).status, 401);
  EXPECT_EQ(curl(url, {"-T", body, "-u", "nix:wrong"}).status, 401);
  EXPECT_EQ(curl(url, {"-T", body, "-H", std::string("Authorization: Bearer ") + kToken}).status,
            200);
  EXPECT_EQ(curl(url, {"-T", body, "-u", std::string("nix:") + kToken}).status, 200);
  EXPECT_EQ(
      curl(url, {"-T", body, "-u", std::string("nix:") + kToken, "-H", "Expect: 100-continue"})
          .status,
      200);
  // A large unauthenticated upload is refused at once, without waiting for its body.
  writeFile(tmp_ / "big", std::string(8 << 20, 'x'));
  auto start = steady_clock::now();
  auto big =
      curl(served.url("/nar/" + std::string(52, '1') + ".nar"), {"-T", (tmp_ / "big").string()});
  EXPECT_EQ(big.status, 401);
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(2));
  // The server still answers afterwards (no garbage parsed from an unread body).
  EXPECT_EQ(curl(served.url("/healthz")).status, 200);
  EXPECT_FALSE(contains(served.log(), "malformed request")) << served.log();

  // Without a token file, uploads are disabled.
  Served closed(tmp_ / "store2");
  EXPECT_EQ(
      curl(closed.url("/nix-cache-info"), {"-T", body, "-H", "Authorization: Bearer x"}).status,
      403);
}

TEST_F(ServeTest, ApiRequestsAreRefusedBeforeTheirBodyIsRead) {
  // httplib reads an API request's body into memory before the handler: a request without the
  // token, or announcing more than 4 MiB, is answered at once and its body never read (the
  // client keeps the connection open and sends nothing after the headers).
  Served served(tmp_ / "store", serveArgs());
  const std::string huge = "Content-Length: 1000000000\r\n\r\n";
  auto start = steady_clock::now();
  std::string anonymous = rawExchange(
      served.port(), "POST /api/mark-deleted HTTP/1.1\r\nHost: x\r\n" + huge, After::kWait);
  EXPECT_TRUE(anonymous.starts_with("HTTP/1.1 401")) << anonymous;
  std::string expecting =
      rawExchange(served.port(),
                  "POST /api/mark-deleted HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + huge,
                  After::kWait);
  EXPECT_TRUE(expecting.starts_with("HTTP/1.1 401")) << expecting;
  std::string too_big = rawExchange(served.port(),
                                    "POST /api/mark-deleted HTTP/1.1\r\nHost: x\r\n"
                                    "Authorization: Bearer " +
                                        std::string(kToken) + "\r\n" + huge,
                                    After::kWait);
  EXPECT_TRUE(too_big.starts_with("HTTP/1.1 413")) << too_big;
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(3));
  // GET /api/available needs the token too; with it, the API works.
  const std::string query = "/api/available?path=/nix/store/" + std::string(32, '0') + "-x";
  EXPECT_EQ(curl(served.url(query)).status, 401);
  auto answer = curl(served.url(query), {"-H", std::string("Authorization: Bearer ") + kToken});
  EXPECT_EQ(answer.status, 200);
  EXPECT_TRUE(contains(answer.body, "\"missing\"")) << answer.body;
  // POST takes the paths as JSON, and a malformed body gets a 400 that says what it expects.
  const std::vector<std::string> auth = {"-H", std::string("Authorization: Bearer ") + kToken, "-H",
                                         "Content-Type: application/json"};
  auto post = [&](const std::string& body, bool with_token = true) {
    std::vector<std::string> args = {"-X", "POST", "--data-binary", body};
    if (with_token) args.insert(args.end(), auth.begin(), auth.end());
    return curl(served.url("/api/available"), args);
  };
  const std::string path = "/nix/store/" + std::string(32, '0') + "-x";
  EXPECT_EQ(post(R"({"paths": [")" + path + R"("]})", false).status, 401);
  answer = post(R"({"paths": [")" + path + R"(", ")" + path + R"("]})");
  EXPECT_EQ(answer.status, 200) << answer.body;
  EXPECT_TRUE(contains(answer.body, R"("state":"missing"},{)")) << answer.body;
  for (const std::string bad : {"", "[]", R"({"paths": "x"})", R"({"paths": [1]})"}) {
    answer = post(bad);
    EXPECT_EQ(answer.status, 400) << bad;
    EXPECT_TRUE(contains(answer.body, R"(expected {"paths": ["/nix/store/..."]})")) << answer.body;
  }
  answer = post(R"({"paths": []})");
  EXPECT_EQ(answer.status, 400);
  EXPECT_TRUE(contains(answer.body, "give 1 to 10000 store paths")) << answer.body;
  // A POST whose body has no Content-Length (none at all, or chunked) would be read until the
  // client closes: refused at once.
  answer = curl(served.url("/api/mark-deleted"), {"-X", "POST", "-H", auth[1]});
  EXPECT_EQ(answer.status, 411);
  EXPECT_EQ(answer.body, "a request body needs a Content-Length\n");
  answer = curl(served.url("/api/available"),
                {"-X", "POST", "-H", auth[1], "-H", "Transfer-Encoding: chunked", "--data-binary",
                 R"({"paths": [")" + path + R"("]})"});
  EXPECT_EQ(answer.status, 411);
  EXPECT_EQ(served.stop(SIGTERM), 0) << served.log();
}

TEST_F(ServeTest, TheUnreadBodyOfARefusedRequestIsNeverReadAsRequests) {
  // A refused request whose body the server does not read (too large to drain, or an API
  // request without the token) ends the connection with its answer: requests hidden in that
  // body are never answered (no request smuggling through the body, e.g. behind a proxy that
  // reuses its connections).
  Served served(tmp_ / "store", serveArgs());
  std::string hidden;
  while (hidden.size() < (2 << 20)) hidden += "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string length = "Content-Length: " + std::to_string(hidden.size()) + "\r\n\r\n";
  for (const std::string& head :
       {"PUT /nar/" + std::string(52, '1') + ".nar HTTP/1.1\r\nHost: x\r\n",
        std::string("POST /api/mark-deleted HTTP/1.1\r\nHost: x\r\n"),
        "POST /api/mark-deleted HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
            std::string(kToken) + "\r\nContent-Length: 99999999\r\n",
        std::string("DELETE /nix-cache-info HTTP/1.1\r\nHost: x\r\n")}) {
    std::string request = head;
    request += head.find("Content-Length") == std::string::npos ? length : "\r\n";
    std::string reply = rawExchange(served.port(), request + hidden, After::kHalfClose);
    std::size_t answers = 0;
    for (std::size_t at = reply.find("HTTP/1.1 "); at != std::string::npos;
         at = reply.find("HTTP/1.1 ", at + 1)) {
      ++answers;
    }
    EXPECT_EQ(answers, 1u) << head << reply.substr(0, 300);
    EXPECT_FALSE(contains(reply, "200 OK")) << head << reply.substr(0, 300);
  }
  EXPECT_FALSE(contains(served.log(), "malformed request")) << served.log();
  EXPECT_EQ(served.stop(SIGTERM), 0) << served.log();
}

TEST_F(ServeTest, RangesAreFittedToTheBody) {
  // Ranges on a file (a build log, served like a nar) and on a text answer (nix-cache-info):
  // fitted to the size as RFC 9110 says, 416 when they start past the end, several ignored.
  Served served(tmp_ / "store", serveArgs());
  const std::string auth = std::string("Authorization: Bearer ") + kToken;
  const std::string log = "/log/" + std::string(32, '1') + "-ranged.drv";
  writeFile(tmp_ / "log", "0123456789");
  ASSERT_EQ(curl(served.url(log), {"-T", (tmp_ / "log").string(), "-H", auth}).status, 200);
  struct Case {
    std::string range;
    int status;
    std::string body;
    std::string content_range;
  };
  for (const std::string& path : {log, std::string("/nix-cache-info")}) {
    std::string whole = curl(served.url(path)).body;
    ASSERT_FALSE(whole.empty()) << path;
    const std::string n = std::to_string(whole.size());
    const std::size_t last = whole.size() - 1;
    for (const Case& c : std::vector<Case>{
             {"bytes=2-4", 206, whole.substr(2, 3), "bytes 2-4/" + n},
             {"bytes=3-99999", 206, whole.substr(3), "bytes 3-" + std::to_string(last) + "/" + n},
             {"bytes=-3", 206, whole.substr(whole.size() - 3),
              "bytes " + std::to_string(whole.size() - 3) + "-" + std::to_string(last) + "/" + n},
             {"bytes=-99999", 206, whole, "bytes 0-" + std::to_string(last) + "/" + n},
             {"bytes=" + n + "-", 416, "range not satisfiable\n", "bytes */" + n},
             {"bytes=5000-6000", 416, "range not satisfiable\n", "bytes */" + n},
             {"bytes=0-0,0-0,0-0", 200, whole, ""},
         }) {
      auto r = curl(served.url(path), {"-H", "Range: " + c.range});
      EXPECT_EQ(r.status, c.status) << path << " " << c.range << "\n" << r.headers;
      EXPECT_EQ(r.body, c.body) << path << " " << c.range;
      EXPECT_TRUE(contains(r.headers, "Content-Length: " + std::to_string(r.body.size())))
          << path << " " << c.range << "\n"
          << r.headers;
      if (!c.content_range.empty()) {
        EXPECT_TRUE(contains(r.headers, "Content-Range: " + c.content_range + "\r"))
            << path << " " << c.range << "\n"
            << r.headers;
      } else {
        EXPECT_FALSE(contains(r.headers, "Content-Range")) << path << " " << c.range;
      }
    }
  }
  // A 404 is never sliced.
  auto miss = curl(served.url("/" + std::string(32, '0') + ".narinfo"), {"-H", "Range: bytes=2-"});
  EXPECT_EQ(miss.status, 404);
  EXPECT_FALSE(contains(miss.headers, "Content-Range")) << miss.headers;

  // An empty file: a whole, empty 200 (GET and HEAD); any range is not satisfiable.
  const std::string empty_log = "/log/" + std::string(32, '2') + "-empty.drv";
  writeFile(tmp_ / "empty", "");
  ASSERT_EQ(curl(served.url(empty_log), {"-T", (tmp_ / "empty").string(), "-H", auth}).status, 200);
  auto empty = curl(served.url(empty_log));
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.body, "");
  EXPECT_TRUE(contains(empty.headers, "Content-Length: 0")) << empty.headers;
  auto empty_head = curl(served.url(empty_log), {"-I"});
  EXPECT_EQ(empty_head.status, 200);
  EXPECT_TRUE(contains(empty_head.headers, "Content-Length: 0")) << empty_head.headers;
  EXPECT_EQ(curl(served.url(empty_log), {"-H", "Range: bytes=0-"}).status, 416);
  EXPECT_FALSE(contains(served.log(), "unexpected end of file")) << served.log();
  EXPECT_EQ(served.stop(SIGTERM), 0) << served.log();
}

TEST_F(ServeTest, PathTricksAndOversizedHeaders) {
  Served served(tmp_ / "store", serveArgs());
  writeFile(served.root() / "nar" / "secret.txt", "do not serve");
  for (const std::string path :
       {"/nar/../db/data.mdb", "/nar/%2e%2e/db/data.mdb", "/nar/..%2fdb%2fdata.mdb",
        "/nar/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "//etc/passwd", "/nar//etc/passwd",
        "/nar/secret.txt", "/log/../db/data.mdb", "/nar/%00.nar", "/../../etc/passwd"}) {
    auto r = curl(served.url(path), {"--path-as-is"});
    EXPECT_TRUE(r.status == 400 || r.status == 404) << path << " -> " << r.status;
    EXPECT_FALSE(contains(r.body, "do not serve")) << path;
    EXPECT_FALSE(contains(r.body, "root:")) << path;
    EXPECT_LT(r.body.size(), 200u) << path;
  }
  std::string huge(100000, 'a');
  auto big = curl(served.url("/nix-cache-info"), {"-H", "X-Huge: " + huge});
  EXPECT_GE(big.status, 400);
  EXPECT_LT(big.status, 500);
  // Many headers, each small.
  std::vector<std::string> many;
  for (int i = 0; i < 300; ++i) {
    many.push_back("-H");
    many.push_back("X-H" + std::to_string(i) + ": " + std::string(100, 'b'));
  }
  auto lots = curl(served.url("/nix-cache-info"), many);
  EXPECT_TRUE(lots.status == 200 || (lots.status >= 400 && lots.status < 500)) << lots.status;
  EXPECT_EQ(curl(served.url("/healthz")).status, 200);
  expectVerifyClean(served.root());
}

// --- With the real Nix client -------------------------------------------------------------------

class ServeNixTest : public ServeTest {
 protected:
  void SetUp() override {
    if (!haveNix()) GTEST_SKIP() << "nix-bin is not installed (scripts/setup.sh installs it)";
    ServeTest::SetUp();
    writeNetrc();
  }
};

TEST_F(ServeNixTest, NixCopyRoundTripWithSignaturesLogsAndPathInfo) {
  fs::path s1 = nix_.newStore("s1");
  std::string a = buildClosure(s1);
  auto closure = closureOf(s1, a);
  ASSERT_EQ(closure.size(), 3u);

  Served served(tmp_ / "store", serveArgs());
  auto start = steady_clock::now();
  auto copied = copyTo(s1, served, {a});
  auto took = steady_clock::now() - start;
  ASSERT_EQ(copied.exit_code, 0) << copied.err << served.log();
  // Expect: 100-continue is answered at once: no 1 s stall per PUT (6 PUTs here).
  EXPECT_LT(took, std::chrono::milliseconds(2500));

  auto log = nix_.run({"nix", "store", "copy-log", "--store", s1.string(), "--option", "netrc-file",
                       (tmp_ / "netrc").string(), "--to", served.url(), a});
  ASSERT_EQ(log.exit_code, 0) << log.err;

  // What Nix sees.
  auto info = nix_.run({"nix", "path-info", "--store", served.url(), "-r", "--sigs", a});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  for (const auto& p : closure) EXPECT_TRUE(contains(info.out, p)) << info.out;
  EXPECT_TRUE(contains(info.out, "narcache-test-1:")) << info.out;
  auto nix_log = nix_.run({"nix", "log", "--store", served.url(), a});
  EXPECT_EQ(nix_log.exit_code, 0) << nix_log.err;
  EXPECT_TRUE(contains(nix_log.out, "building chain-a")) << nix_log.out;

  // A fresh store trusting only our key gets the closure, byte for byte.
  std::string pk = readFile(tmp_ / "pk");
  fs::path o1 = nix_.newStore("o1");
  auto from = nix_.run({"nix", "copy", "--from", served.url(), "--to", o1.string(), "--option",
                        "require-sigs", "true", "--option", "trusted-public-keys", pk, a});
  ASSERT_EQ(from.exit_code, 0) << from.err;
  for (const auto& p : closure) {
    auto diff = run({"diff", "-r", "--no-dereference", (s1.string() + p), (o1.string() + p)});
    EXPECT_EQ(diff.exit_code, 0) << p << diff.out;
  }
  auto verify_local = nix_.run({"nix", "store", "verify", "--store", o1.string(), "--option",
                                "trusted-public-keys", pk, "-r", a});
  EXPECT_EQ(verify_local.exit_code, 0) << verify_local.err;

  // Another key is not trusted.
  auto other = nixOrNarcacheKey("someone-else");
  fs::path o2 = nix_.newStore("o2");
  auto refused =
      nix_.run({"nix", "copy", "--from", served.url(), "--to", o2.string(), "--option",
                "require-sigs", "true", "--option", "trusted-public-keys", other.second, a});
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_TRUE(contains(refused.err, "lacks a valid signature")) << refused.err;

  // HEAD narinfo (Nix's validity check), Range on a nar, access counted in metrics.
  std::string h = hashPart(a);
  auto head = curl(served.url("/" + h + ".narinfo"), {"-I"});
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(contains(head.headers, "Cache-Control: public, max-age=300")) << head.headers;
  auto narinfo = curl(served.url("/" + h + ".narinfo"));
  std::size_t url_at = narinfo.body.find("URL: ");
  ASSERT_NE(url_at, std::string::npos);
  std::string nar_url =
      narinfo.body.substr(url_at + 5, narinfo.body.find('\n', url_at) - url_at - 5);
  EXPECT_TRUE(nar_url.ends_with("?hash=" + h)) << nar_url;  // the item, for GC (gc/serve_test)
  auto whole = curl(served.url("/" + nar_url));
  EXPECT_EQ(whole.status, 200);
  EXPECT_TRUE(contains(whole.headers, "immutable")) << whole.headers;
  auto part = curl(served.url("/" + nar_url), {"-r", "10-109"});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.body, whole.body.substr(10, 100));
  auto listing = curl(served.url("/" + h + ".ls"));
  EXPECT_EQ(listing.status, 200);
  EXPECT_TRUE(contains(listing.body, "\"self\"")) << listing.body;

  auto metrics = curl(served.url("/metrics")).body;
  EXPECT_TRUE(contains(metrics, "narcache_http_requests_total{route=\"put_nar\",code=\"200\"} 3"))
      << metrics;
  EXPECT_TRUE(contains(metrics, "narcache_store_items 3")) << metrics;

  EXPECT_EQ(served.stop(SIGTERM), 0);
  expectVerifyClean(tmp_ / "store");

  // Behind a reverse proxy: nar bodies are delegated with X-Accel-Redirect.
  auto args = serveArgs();
  args.insert(args.end(), {"--nar-redirect-prefix", "/_nar/"});
  Served proxied(tmp_ / "store", args);
  auto redirected = curl(proxied.url("/" + nar_url));
  EXPECT_EQ(redirected.status, 200);
  const std::string nar_file = nar_url.substr(0, nar_url.find('?'));
  EXPECT_TRUE(contains(redirected.headers, "X-Accel-Redirect: /_" + nar_file))
      << redirected.headers;
  EXPECT_FALSE(contains(redirected.headers, "?hash=")) << redirected.headers;
  EXPECT_EQ(redirected.body, "");
}

// Nix 2.8 makes store paths whose name starts with a dot (`nix-store --add .hidden`); they go
// up and come back down like any other.
TEST_F(ServeNixTest, PathsNamedWithALeadingDotRoundTrip) {
  fs::path s1 = nix_.newStore("s1");
  fs::create_directories(tmp_ / "src" / ".hidden");
  writeFile(tmp_ / "src" / ".hidden" / "f", "dot\n");
  auto added =
      nix_.run({"nix-store", "--store", s1.string(), "--add", (tmp_ / "src" / ".hidden").string()});
  ASSERT_EQ(added.exit_code, 0) << added.err;
  const std::string path = trim(added.out);
  ASSERT_TRUE(path.ends_with("-.hidden")) << path;
  Served served(tmp_ / "store", serveArgs());
  auto up = copyTo(s1, served, {path});
  ASSERT_EQ(up.exit_code, 0) << up.err << served.log();
  fs::path o1 = nix_.newStore("o1");
  auto down = nix_.run({"nix", "copy", "--from", served.url(), "--to", o1.string(), "--option",
                        "require-sigs", "true", "--option", "trusted-public-keys",
                        readFile(tmp_ / "pk"), path});
  ASSERT_EQ(down.exit_code, 0) << down.err;
  EXPECT_EQ(readFile(o1.string() + path + "/f"), "dot\n");
  EXPECT_EQ(served.stop(SIGTERM), 0);
  expectVerifyClean(tmp_ / "store");
}

TEST_F(ServeNixTest, BadUploadsGetTheirStatusAndLeaveTheStoreConsistent) {
  fs::path s1 = nix_.newStore("s1");
  std::string a = buildClosure(s1);
  // A file cache written by Nix provides real nar files and narinfos to tamper with.
  fs::path cache = tmp_ / "cache";
  auto exported = nix_.run({"nix", "copy", "--store", s1.string(), "--to",
                            "file://" + cache.string() + "?compression=zstd", a});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  auto closure = closureOf(s1, a);
  std::string ha = hashPart(a);
  std::string hc;
  for (const auto& p : closure) {
    if (contains(p, "chain-c")) hc = hashPart(p);
  }
  std::string narinfo_a = readFile(cache / (ha + ".narinfo"));
  std::string narinfo_c = readFile(cache / (hc + ".narinfo"));
  auto field = [](const std::string& text, const std::string& key) {
    std::size_t at = text.find(key + ": ");
    return text.substr(at + key.size() + 2, text.find('\n', at) - at - key.size() - 2);
  };
  std::string url_a = field(narinfo_a, "URL");
  std::string url_c = field(narinfo_c, "URL");

  Served served(tmp_ / "store", serveArgs());
  std::vector<std::string> auth = {"-H", std::string("Authorization: Bearer ") + kToken};
  auto put = [&](const std::string& path, const std::string& content) {
    writeFile(tmp_ / "upload", content);
    std::vector<std::string> args = auth;
    args.insert(args.end(), {"-T", (tmp_ / "upload").string(), "-H", "Expect: 100-continue"});
    return curl(served.url(path), args);
  };
  std::string nar_a = readFile(cache / url_a);
  std::string nar_c = readFile(cache / url_c);

  struct Case {
    std::string what;
    std::string path;
    std::string content;
    std::vector<int> statuses;
    std::string message;  // expected in the body
  };
  std::string nix32_zero(52, '0');
  std::vector<Case> cases = {
      {"malformed narinfo", "/" + hc + ".narinfo", "this is not a narinfo\n", {400}, "narinfo"},
      {"narinfo under another hash", "/" + ha + ".narinfo", narinfo_c, {400}, "does not match"},
      {"nar whose bytes do not hash to its name",
       "/nar/" + nix32_zero + ".nar.zst",
       nar_c,
       {400, 422},
       ""},
      {"nar with an unknown extension", "/nar/" + nix32_zero + ".nar.foo", nar_c, {400}, ""},
      {"narinfo without its nar file", "/" + hc + ".narinfo", narinfo_c, {400, 404, 409, 422}, ""},
      {"log with a bad name", "/log/not-a-drv", "log", {400}, ""},
      {"upload to an unknown route", "/something-else", "x", {404}, ""},
  };
  for (const auto& c : cases) {
    auto r = put(c.path, c.content);
    EXPECT_TRUE(std::find(c.statuses.begin(), c.statuses.end(), r.status) != c.statuses.end())
        << c.what << ": " << r.status << " " << r.body;
    if (!c.message.empty()) {
      EXPECT_TRUE(contains(r.body, c.message)) << c.what << ": " << r.body;
    }
  }

  // Missing references: chain-a's nar is fine, but b and c are not there yet.
  EXPECT_EQ(put("/" + url_a, nar_a).status, 200);
  auto missing = put("/" + ha + ".narinfo", narinfo_a);
  EXPECT_EQ(missing.status, 409) << missing.body;
  EXPECT_TRUE(contains(missing.body, "chain-b") || contains(missing.body, "chain-c"))
      << missing.body;

  // NarHash that does not match the nar (a hash mismatch, after decompression).
  EXPECT_EQ(put("/" + url_c, nar_c).status, 200);
  std::string wrong = narinfo_c;
  std::string nar_hash = field(narinfo_c, "NarHash");
  std::string bad_hash = nar_hash;
  bad_hash[bad_hash.size() - 1] = bad_hash.back() == '0' ? '1' : '0';
  wrong.replace(wrong.find(nar_hash), nar_hash.size(), bad_hash);
  auto mismatch = put("/" + hc + ".narinfo", wrong);
  EXPECT_TRUE(mismatch.status == 400 || mismatch.status == 422) << mismatch.status << mismatch.body;

  // A truncated nar body: the connection drops after part of it.
  std::string truncated = "PUT /nar/1" + std::string(51, '2') +
                          ".nar HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kToken +
                          "\r\nContent-Length: 100000\r\n\r\n" + std::string(5000, 'z');
  rawExchange(served.port(), truncated, After::kClose);
  // The client's fault, not the server's: a 400 in the log (a warning), not a 500 (an error).
  for (int i = 0; i < 100 && !contains(served.log(), "request body truncated"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(contains(served.log(), "-> 400: request body truncated")) << served.log();
  // A truncated narinfo body, with the client waiting for an answer.
  std::string half = narinfo_c.substr(0, narinfo_c.size() / 2);
  std::string reply =
      rawExchange(served.port(),
                  "PUT /" + hc + ".narinfo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kToken +
                      "\r\nContent-Length: " + std::to_string(narinfo_c.size()) + "\r\n\r\n" + half,
                  After::kHalfClose);
  EXPECT_FALSE(contains(reply, " 200 ")) << reply;

  // Then the real narinfo goes in, and chain-c is served and intact.
  EXPECT_EQ(put("/" + hc + ".narinfo", narinfo_c).status, 200);
  EXPECT_EQ(curl(served.url("/" + hc + ".narinfo")).status, 200);
  EXPECT_EQ(curl(served.url("/" + ha + ".narinfo")).status, 404);  // refused above

  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto metrics = curl(served.url("/metrics")).body;
  EXPECT_TRUE(contains(metrics, "narcache_upload_failures_total{route=\"put_narinfo\"}"));
  EXPECT_FALSE(contains(metrics, "narcache_upload_failures_total{route=\"put_narinfo\"} 0"));
  EXPECT_EQ(served.stop(SIGTERM), 0);
  std::string log = served.log();
  EXPECT_TRUE(contains(log, "-> 409")) << log;
  EXPECT_TRUE(contains(log, "-> 400")) << log;
  expectVerifyClean(tmp_ / "store");
}

// Generates `count` CA paths of `bytes` random bytes each in `store`; returns their paths.
std::vector<std::string> addRandomPaths(const NixEnv& nix, const fs::path& dir,
                                        const fs::path& store, int count, std::size_t bytes,
                                        unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> argv = {"nix-store", "--store", store.string(), "--add"};
  for (int i = 0; i < count; ++i) {
    fs::path d = dir / ("blob-" + std::to_string(seed) + "-" + std::to_string(i));
    fs::create_directories(d);
    std::string data(bytes, '\0');
    for (auto& ch : data) ch = static_cast<char>(rng());
    writeFile(d / "data", data);
    argv.push_back(d.string());
  }
  auto added = nix.run(argv);
  EXPECT_EQ(added.exit_code, 0) << added.err;
  std::vector<std::string> paths;
  std::istringstream in(added.out);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) paths.push_back(line);
  }
  return paths;
}

TEST_F(ServeNixTest, ParallelDownloadsWhileUploading) {
  fs::path s1 = nix_.newStore("s1");
  std::string a = buildClosure(s1);
  Served served(tmp_ / "store", serveArgs());
  ASSERT_EQ(copyTo(s1, served, {a}).exit_code, 0);
  auto uploads = addRandomPaths(nix_, tmp_.path(), s1, 12, 512 * 1024, 7);

  // 600 downloads (narinfos and nars of the closure) over 16 parallel connections...
  std::vector<std::string> urls;
  for (const auto& p : closureOf(s1, a)) {
    auto narinfo = curl(served.url("/" + hashPart(p) + ".narinfo")).body;
    std::size_t at = narinfo.find("URL: ");
    urls.push_back(served.url("/" + hashPart(p) + ".narinfo"));
    urls.push_back(served.url("/" + narinfo.substr(at + 5, narinfo.find('\n', at) - at - 5)));
  }
  std::vector<std::string> argv = {"curl",          "-s", "-Z", "--parallel-max", "16", "-w",
                                   "%{http_code}\n"};
  for (int i = 0; i < 100; ++i) {
    for (const auto& u : urls) {
      argv.push_back("-o");
      argv.push_back("/dev/null");
      argv.push_back(u);
    }
  }
  // ... while Nix uploads 12 more paths.
  ProcessResult upload;
  std::thread uploader([&] { upload = copyTo(s1, served, uploads); });
  auto downloads = run(argv);
  uploader.join();
  ASSERT_EQ(upload.exit_code, 0) << upload.err;
  int ok = 0, other = 0;
  std::istringstream in(downloads.out);
  std::string code;
  while (in >> code) (code == "200" ? ok : other)++;
  EXPECT_EQ(ok, 600);
  EXPECT_EQ(other, 0);
  auto info =
      nix_.run({"nix", "path-info", "--store", served.url(), uploads.front(), uploads.back()});
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_EQ(served.stop(SIGTERM), 0);
  expectVerifyClean(tmp_ / "store");
}

TEST_F(ServeNixTest, KillDuringUploadStormThenRestartIsConsistent) {
  fs::path s1 = nix_.newStore("s1");
  auto paths = addRandomPaths(nix_, tmp_.path(), s1, 24, 1 << 20, 11);
  auto served = std::make_unique<Served>(tmp_ / "store", serveArgs());

  // Four concurrent `nix copy` processes, each with its share of the paths.
  std::vector<std::thread> copiers;
  std::vector<int> exit_codes(4, -1);
  for (int i = 0; i < 4; ++i) {
    copiers.emplace_back([&, i] {
      std::vector<std::string> mine;
      for (std::size_t j = static_cast<std::size_t>(i); j < paths.size(); j += 4) {
        mine.push_back(paths[j]);
      }
      // Fails when the server dies: that is the point.
      exit_codes[static_cast<std::size_t>(i)] = copyTo(s1, *served, mine).exit_code;
    });
  }
  // Kill as soon as the first nar file has landed: the storm is then surely in flight (a fixed
  // delay raced with fast machines, where every upload had finished before it).
  auto deadline = steady_clock::now() + std::chrono::seconds(30);
  auto nar_dir = tmp_ / "store" / "nar";
  while (steady_clock::now() < deadline && (!fs::exists(nar_dir) || fs::is_empty(nar_dir))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  served->stop(SIGKILL);
  for (auto& t : copiers) t.join();
  // The kill interrupted the storm (otherwise this test would test nothing).
  EXPECT_NE(std::count(exit_codes.begin(), exit_codes.end(), 0), 4);
  expectVerifyClean(tmp_ / "store");

  // Restarted, the server takes the rest; the store ends complete and consistent.
  served->start();
  auto again = copyTo(s1, *served, paths);
  ASSERT_EQ(again.exit_code, 0) << again.err << served->log();
  std::vector<std::string> info_argv = {"nix", "path-info", "--store", served->url()};
  info_argv.insert(info_argv.end(), paths.begin(), paths.end());
  EXPECT_EQ(nix_.run(info_argv).exit_code, 0);
  EXPECT_EQ(served->stop(SIGTERM), 0);
  expectVerifyClean(tmp_ / "store");
}

}  // namespace
}  // namespace narcache::test
