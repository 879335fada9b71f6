// GC inside a live `narcache serve`: the JSON API behind the token (mark-deleted, available),
// `--gc-interval` with its /metrics, and the real Nix client uploading and fetching closures
// while the collector runs — no client ever sees a narinfo whose references are gone.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "gc_helpers.h"
#include "support/served_store.h"
#include "support/support.h"

namespace narcache::gc {
namespace {

using narstore::testing::addItem;
using narstore::testing::initStore;
using narstore::testing::makeItem;

const char* kToken = "gc-test-token";

using Http = test::CurlReply;

Http curl(const std::string& url, const std::vector<std::string>& args = {}) {
  return test::curlRequest(url, args);
}

std::vector<std::string> auth() {
  return {"-H", std::string("Authorization: Bearer ") + kToken};
}

TEST(GcServeTest, ApiMarkDeletedAvailableAndPeriodicGcMetrics) {
  test::TempDir dir;
  auto dep = makeItem("dep", "dep");
  auto app = makeItem("app", "app", {dep.info.path});
  auto junk = makeItem("junk", "junk");
  {
    auto s = initStore(dir / "s");
    for (auto* i : {&dep, &app, &junk}) ASSERT_TRUE(addItem(*s, *i));
    ASSERT_TRUE(s->addRoot({"keep", {app.info.path}, 0, {}}));
  }
  test::writeFile(dir / "token", std::string(kToken) + "\n");
  test::ServedStore served(
      dir / "s", {"--upload-token-file", (dir / "token").string(), "--gc-interval", "1s", "--ttl",
                  "0s", "--grace", "0s", "--nar-grace", "0s"});
  served.start();

  std::string q = "/api/available?path=" + app.info.fullPath() + "&path=" + dep.info.fullPath();
  EXPECT_EQ(curl(served.url(q)).status, 401);
  // The unrooted item is collected within a few runs; the rooted closure stays.
  Http h;
  for (int i = 0; i < 100; ++i) {
    h = curl(served.url("/api/available?path=" + junk.info.fullPath()), auth());
    if (h.body.find("missing") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(h.status, 200) << h.body;
  EXPECT_EQ(nlohmann::json::parse(h.body)[0]["state"], "missing") << h.body;
  h = curl(served.url(q), auth());
  ASSERT_EQ(h.status, 200);
  auto j = nlohmann::json::parse(h.body);
  EXPECT_EQ(j[0]["state"], "available");
  EXPECT_EQ(j[1]["state"], "available");
  auto metrics = curl(served.url("/metrics"));
  EXPECT_NE(metrics.body.find("narcache_gc_runs_total "), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("narcache_gc_items_freed_total 1"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("narcache_gc_last_run_duration_seconds"), std::string::npos);

  // mark-deleted over HTTP: the referrer becomes incomplete and is no longer served.
  std::string body = R"({"paths": [")" + dep.info.fullPath() + R"("], "reason": "miscompiled"})";
  EXPECT_EQ(curl(served.url("/api/mark-deleted"), {"-X", "POST", "--data", body}).status, 401);
  EXPECT_EQ(curl(served.url("/api/mark-deleted"),
                 [&] {
                   auto a = auth();
                   a.insert(a.end(), {"-X", "POST", "--data", "{\"paths\": 3}"});
                   return a;
                 }())
                .status,
            400);
  auto a = auth();
  a.insert(a.end(), {"-X", "POST", "-H", "Content-Type: application/json", "--data", body});
  h = curl(served.url("/api/mark-deleted"), a);
  ASSERT_EQ(h.status, 200) << h.body;
  EXPECT_EQ(nlohmann::json::parse(h.body)["results"][0]["deleted"], true) << h.body;
  h = curl(served.url(q), auth());
  j = nlohmann::json::parse(h.body);
  EXPECT_EQ(j[0]["state"], "incomplete");
  EXPECT_EQ(j[0]["missing"][0], dep.info.fullPath());
  EXPECT_EQ(j[1]["state"], "deleted");
  EXPECT_EQ(j[1]["reason"], "miscompiled");
  EXPECT_EQ(j[1]["by"], "api");
  EXPECT_EQ(curl(served.url("/" + app.info.path.hashPart() + ".narinfo")).status, 404);
  served.stop(SIGTERM);
  auto verify = test::narcache({"verify", "--store", (dir / "s").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
}

// Nix keeps narinfos in its disk cache for a month and downloads a nar later without asking for
// the narinfo again: the nar URL served in the narinfo names the item, so those downloads keep
// it in use. With a 3 s TTL, an item whose nar is fetched every 300 ms stays; once the
// downloads stop, it goes.
TEST(GcServeTest, NarDownloadsKeepTheirItemInUse) {
  test::TempDir dir;
  auto item = makeItem("fetched", "fetched");
  {
    auto s = initStore(dir / "s");
    ASSERT_TRUE(addItem(*s, item));
  }
  test::writeFile(dir / "token", std::string(kToken) + "\n");
  test::ServedStore served(
      dir / "s", {"--upload-token-file", (dir / "token").string(), "--gc-interval", "1s", "--ttl",
                  "3s", "--grace", "0s", "--nar-grace", "0s"});
  served.start();
  const std::string narinfo = "/" + item.info.path.hashPart() + ".narinfo";
  Http h = curl(served.url(narinfo));
  ASSERT_EQ(h.status, 200);
  const auto at = h.body.find("URL: ");
  ASSERT_NE(at, std::string::npos);
  const std::string nar = "/" + h.body.substr(at + 5, h.body.find('\n', at) - at - 5);
  EXPECT_NE(nar.find("?hash=" + item.info.path.hashPart()), std::string::npos) << nar;
  for (int i = 0; i < 20; ++i) {  // 6 s: two TTLs, six GC runs
    ASSERT_EQ(curl(served.url(nar)).status, 200) << "download " << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  auto state = [&] {
    Http a = curl(served.url("/api/available?path=" + item.info.fullPath()), auth());
    return a.status == 200 ? nlohmann::json::parse(a.body)[0].value("state", "") : a.body;
  };
  EXPECT_EQ(state(), "available");
  std::string last;
  for (int i = 0; i < 100 && (last = state()) != "missing"; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(last, "missing");
  served.stop(SIGTERM);
}

// Chains made by Nix without building: c_i <- b_i <- a_i (builtins.toFile with string context),
// all on a shared base.
const char* kChainsNix = R"(
let
  base = builtins.toFile "gc-base" "base";
  chain = i: let
    c = builtins.toFile "gc-c-${toString i}" "c ${toString i} ${base}";
    b = builtins.toFile "gc-b-${toString i}" "b ${toString i} ${c}";
  in builtins.toFile "gc-a-${toString i}" "a ${toString i} ${b}";
in builtins.concatStringsSep " " (map chain (builtins.genList (x: x) 12))
)";

TEST(GcServeTest, NixFetchesClosuresWhileGcRuns) {
  if (!test::haveNix()) GTEST_SKIP() << "nix not installed";
  test::TempDir dir;
  test::NixEnv nix;
  nix.addConfig("narinfo-cache-negative-ttl = 0");
  nix.addConfig("narinfo-cache-positive-ttl = 0");
  test::writeFile(dir / "chains.nix", kChainsNix);
  auto s1 = nix.newStore("s1");
  auto eval = nix.run(
      {"nix", "eval", "--store", s1.string(), "--raw", "-f", (dir / "chains.nix").string()});
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  std::vector<std::string> tops;
  {
    std::istringstream in(eval.out);
    for (std::string p; in >> p;) tops.push_back(p);
  }
  ASSERT_EQ(tops.size(), 12u);

  ASSERT_EQ(test::narcache({"store", "init", "--store", (dir / "s").string()}).exit_code, 0);
  test::writeFile(dir / "token", std::string(kToken) + "\n");
  test::writeFile(dir / "netrc",
                  std::string("machine 127.0.0.1 login narcache password ") + kToken + "\n");
  // Upload with a plain server first (nothing may be collected before the roots exist).
  {
    test::ServedStore up(dir / "s", {"--upload-token-file", (dir / "token").string()});
    up.start();
    std::vector<std::string> argv = {"nix",
                                     "copy",
                                     "--store",
                                     s1.string(),
                                     "--option",
                                     "netrc-file",
                                     (dir / "netrc").string(),
                                     "--to",
                                     up.url("?compression=zstd")};
    argv.insert(argv.end(), tops.begin(), tops.end());
    auto copy = nix.run(argv);
    ASSERT_EQ(copy.exit_code, 0) << copy.err;
    up.stop(SIGTERM);
  }
  // Even chains are rooted; odd ones are garbage once their grace (0 s) is over.
  std::vector<std::string> roots_args = {"roots", "add", "even", "--store", (dir / "s").string()};
  for (std::size_t i = 0; i < tops.size(); i += 2) roots_args.push_back(tops[i]);
  ASSERT_EQ(test::narcache(roots_args).exit_code, 0);

  test::ServedStore served(
      dir / "s", {"--upload-token-file", (dir / "token").string(), "--gc-interval", "1s", "--ttl",
                  "0s", "--grace", "0s", "--nar-grace", "1h"});
  served.start();
  // Raw client: whenever a top's narinfo is served, its references' narinfos are served too
  // (checked as: a reference 404 while its referrer is still served afterwards is a violation;
  // nothing is re-uploaded here, so deletions are final).
  std::atomic<bool> stop{false};
  std::atomic<int> violations{0};
  std::atomic<int> checks{0};
  std::jthread prober([&] {
    while (!stop) {
      for (const auto& top : tops) {
        std::string h = std::filesystem::path(top).filename().string().substr(0, 32);
        auto ni = curl(served.url("/" + h + ".narinfo"));
        if (ni.status != 200) continue;
        std::string refs_line;
        std::istringstream in(ni.body);
        for (std::string line; std::getline(in, line);) {
          if (line.rfind("References:", 0) == 0) refs_line = line.substr(11);
        }
        std::istringstream refs(refs_line);
        for (std::string r; refs >> r;) {
          if (curl(served.url("/" + r.substr(0, 32) + ".narinfo")).status == 404 &&
              curl(served.url("/" + h + ".narinfo")).status == 200) {
            ++violations;
          }
        }
        ++checks;
      }
    }
  });
  // Nix fetches every rooted closure, repeatedly, while the collector runs.
  int fetches = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  while (std::chrono::steady_clock::now() < deadline) {
    auto out = nix.newStore("o" + std::to_string(fetches));
    std::vector<std::string> argv = {"nix",        "copy",     "--from",       served.url(), "--to",
                                     out.string(), "--option", "require-sigs", "false"};
    for (std::size_t i = 0; i < tops.size(); i += 2) argv.push_back(tops[i]);
    auto copy = nix.run(argv);
    ASSERT_EQ(copy.exit_code, 0) << copy.err;
    auto check = nix.run({"nix-store", "--store", out.string(), "--verify", "--check-contents"});
    EXPECT_EQ(check.exit_code, 0) << check.err;
    ++fetches;
  }
  stop = true;
  prober.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(checks.load(), 0);
  // The odd chains go (once nobody looks them up any more), the even ones stay complete.
  std::vector<std::string> query = {"available", "--json", "--store", (dir / "s").string()};
  query.insert(query.end(), tops.begin(), tops.end());
  nlohmann::json j;
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto avail = test::narcache(query);
    ASSERT_EQ(avail.exit_code, 0) << avail.err;
    j = nlohmann::json::parse(avail.out);
    bool odd_gone = true;  // every odd chain: its last access may be flushed a run later
    for (std::size_t i = 1; i < tops.size(); i += 2)
      odd_gone = odd_gone && j[i]["state"] == "missing";
    if (odd_gone) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (std::size_t i = 0; i < tops.size(); ++i) {
    EXPECT_EQ(j[i]["state"], i % 2 == 0 ? "available" : "missing") << tops[i];
  }
  served.stop(SIGTERM);
  auto verify = test::narcache({"verify", "--store", (dir / "s").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
}

}  // namespace
}  // namespace narcache::gc
