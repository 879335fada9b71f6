// Coordinator benchmark, in one process on a real LMDB database and a real narstore Store:
//   1. submission: QUEUED builds (1,000 per request, 1,000 distinct derivations each needing an
//      input source that is in the store) vs a bare LMDB put loop of as many ~500-byte records
//      in transactions of 1,000 (the peer);
//   2. allocation in-process: 100 simulated agents (threads) fetch one build at a time and
//      report success, until the queue is empty: allocations/s and fetch latency p50/p99 (every
//      fetch asks the store about the build's inputs);
//   3. allocation over HTTP on loopback: HTTP_BUILDS more builds, 100 agents with keep-alive
//      clients (fetch + result requests);
//   4. /metrics with METRICS_BUILDS more (finished) builds in the database: p50/p99 over HTTP vs a
//      plain /health request on the same server (the peer); and the start-up scan time.
//
//   bench_coordinator_bench [QUEUED=100000] [METRICS_BUILDS=1000000] [HTTP_BUILDS=10000]
//                           [AGENTS=100]

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lmdb_env.h"
#include "narcache/coordinator/coordinator.h"
#include "narcache/coordinator/http_api.h"
#include "narcache/narinfo/derivation.h"
#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narstore/bulk_load.h"
#include "narcache/narstore/store.h"

namespace {

using namespace narcache;
using namespace narcache::coordinator;
using Clock = std::chrono::steady_clock;

int kAgents = 100;
constexpr int kDrvs = 1000;

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct Latencies {
  std::mutex mu;
  std::vector<double> ms;
  void add(Clock::duration d) {
    std::lock_guard lock(mu);
    ms.push_back(seconds(d) * 1000);
  }
  double pct(double p) {
    std::lock_guard lock(mu);
    if (ms.empty()) return 0;
    std::sort(ms.begin(), ms.end());
    return ms[std::min(ms.size() - 1, static_cast<std::size_t>(p * ms.size()))];
  }
};

void die(const std::string& what) {
  std::fprintf(stderr, "bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T check(Result<T> r, const char* what) {
  if (!r) die(std::string(what) + ": " + r.error().message());
  return std::move(*r);
}

StorePath itemPath(const std::string& name) {
  auto digest = compressHash(hashString(HashAlgo::kSha256, "bench:" + name), 20);
  return *StorePath::parseBaseName(nix32Encode(Bytes(digest.data(), digest.size())) + "-" + name);
}

NarInfo trustedInfo(const StorePath& path) {
  NarInfo info;
  info.path = path;
  Hash fh = hashString(HashAlgo::kSha256, "file:" + path.baseName());
  info.compression = "zstd";
  info.url = "nar/" + fh.digestString(HashFormat::kNix32) + ".nar.zst";
  info.file_hash = fh;
  info.file_size = 1000;
  info.nar_hash = hashString(HashAlgo::kSha256, "nar:" + path.baseName());
  info.nar_size = 3000;
  return info;
}

DerivationText makeDrv(const std::string& name, const std::string& src, std::string* out) {
  DerivationAttrs attrs;
  attrs.name = name;
  attrs.builder = "/bin/sh";
  attrs.system = "x86_64-linux";
  attrs.args = {"-c", "echo " + name + " > $out"};
  if (!src.empty()) attrs.input_srcs = {src};
  auto drv = check(makeDerivation(attrs, "/nix/store",
                                  [](const std::string& p) -> Result<Derivation> {
                                    return fail(ErrorCode::kNotFound, p);
                                  }),
                   "makeDerivation");
  if (out) *out = drv.outputs.at("out").path;
  return {check(derivationStorePath(drv, "/nix/store"), "drv path"), writeDerivation(drv)};
}

void printRow(const char* what, double value, const char* unit, const std::string& note = "") {
  std::printf("%-52s %12.1f %-8s %s\n", what, value, unit, note.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t queued = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 100000;
  std::size_t metrics_builds = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1000000;
  std::size_t http_builds = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 10000;
  if (argc > 4) kAgents = std::atoi(argv[4]);
  spdlog::set_level(spdlog::level::warn);

  char tmpl[] = "/tmp/narcache-coord-bench-XXXXXX";
  if (!mkdtemp(tmpl)) die("mkdtemp");
  std::filesystem::path dir = tmpl;

  // The store: one input source per derivation, plus the output of the "done" derivation.
  narstore::StoreOptions store_options;
  store_options.root = dir / "store";
  auto store = check(narstore::Store::init(store_options), "store init");
  std::vector<DerivationText> drvs;
  std::vector<NarInfo> infos;
  for (int i = 0; i < kDrvs; ++i) {
    StorePath src = itemPath("src-" + std::to_string(i));
    infos.push_back(trustedInfo(src));
    drvs.push_back(makeDrv("pkg-" + std::to_string(i), src.fullPath("/nix/store"), nullptr));
  }
  std::string done_out;
  DerivationText done = makeDrv("done", "", &done_out);
  infos.push_back(trustedInfo(*StorePath::parse(done_out)));
  check(narstore::addTrustedNarInfos(*store, infos), "bulk load");
  auto availability = localAvailability(*store);

  CoordinatorOptions options;
  options.db_dir = dir / "db";
  options.availability = availability.get();
  options.background = false;
  options.lease_seconds = 3600;
  options.initial_map_size = 1ull << 30;
  auto coord = check(Coordinator::open(options), "open");

  std::printf(
      "coordinator benchmark: %zu queued builds, %d agents, %zu builds over HTTP, "
      "%zu finished builds for /metrics\n\n",
      queued, kAgents, http_builds, metrics_builds);

  // 1. Submission vs a bare LMDB put loop.
  auto t0 = Clock::now();
  for (std::size_t start = 0; start < queued; start += 1000) {
    SubmitRequest req;
    if (start == 0) req.derivations = drvs;
    for (std::size_t i = start; i < std::min(queued, start + 1000); ++i) {
      req.builds.push_back(
          {drvs[i % kDrvs].path, static_cast<int>(i % 7), {{"bench", "1"}}, false});
    }
    check(coord->submit(req), "submit");
  }
  double submit_s = seconds(Clock::now() - t0);
  double bare_s = 0;
  {
    namespace lmdb = narstore::lmdb;
    lmdb::EnvOptions eo;
    eo.dir = dir / "bare";
    eo.initial_map_size = 1ull << 30;
    std::filesystem::create_directories(eo.dir);
    auto env = lmdb::Env::open(eo);
    lmdb::Dbi dbi;
    { dbi = env->openDbi("t", 0, true); }
    std::string value(500, 'x');
    auto b0 = Clock::now();
    for (std::size_t start = 0; start < queued; start += 1000) {
      auto w = env->write<bool>([&](lmdb::WriteTxn& txn) -> Result<bool> {
        for (std::size_t i = start; i < std::min(queued, start + 1000); ++i) {
          std::string key(8, '\0');
          for (int k = 0; k < 8; ++k) key[7 - k] = static_cast<char>((i >> (8 * k)) & 0xff);
          txn.put(dbi, key, value);
        }
        return true;
      });
      if (!w) die("bare put");
    }
    bare_s = seconds(Clock::now() - b0);
  }
  printRow("submission (1,000 builds per request)", queued / submit_s, "builds/s",
           "bare LMDB put loop: " + std::to_string(static_cast<long>(queued / bare_s)) +
               "/s, ratio " + std::to_string(submit_s / bare_s).substr(0, 5) + "x the time");

  // 2. Allocation, in-process.
  {
    Latencies fetch_lat, report_lat;
    std::atomic<std::size_t> allocated{0};
    auto a0 = Clock::now();
    std::vector<std::thread> agents;
    for (int a = 0; a < kAgents; ++a) {
      agents.emplace_back([&, a] {
        std::string name = "agent-" + std::to_string(a);
        for (int n = 0;; ++n) {
          FetchRequest req;
          req.request_id = name + "-" + std::to_string(n);
          req.systems = {"x86_64-linux"};
          req.max_parallel = 1;
          auto f0 = Clock::now();
          auto got = coord->fetch(name, req);
          fetch_lat.add(Clock::now() - f0);
          if (!got) die("fetch: " + got.error().message());
          if (got->allocations.empty()) return;
          allocated++;
          ResultReport r;
          r.allocation_id = got->allocations[0].allocation_id;
          r.status = ReportStatus::kSucceeded;
          auto r0 = Clock::now();
          auto ack = coord->report(name, r);
          report_lat.add(Clock::now() - r0);
          if (!ack || !ack->accepted) die("report");
        }
      });
    }
    for (auto& t : agents) t.join();
    double s = seconds(Clock::now() - a0);
    printRow(
        ("allocation in-process (fetch + report, " + std::to_string(kAgents) + " agents)").c_str(),
        allocated / s, "allocs/s",
        std::to_string(allocated.load()) + " builds in " + std::to_string(s).substr(0, 5) + " s");
    printRow("  fetch latency p50", fetch_lat.pct(0.5), "ms");
    printRow("  fetch latency p99", fetch_lat.pct(0.99), "ms");
    printRow("  report latency p99", report_lat.pct(0.99), "ms");
  }

  // 3. Allocation over HTTP.
  HttpApiOptions http_options;
  http_options.listen = "127.0.0.1:0";
  http_options.threads = kAgents + 8;
  auto api = check(HttpApi::create(*coord, http_options), "http");
  std::thread server([&] { (void)api->run(); });
  int port = api->port();
  {
    std::vector<std::string> secrets;
    for (int a = 0; a < kAgents; ++a) {
      secrets.push_back(
          check(coord->addAgent({"http-agent-" + std::to_string(a)}), "add agent").secret);
    }
    for (std::size_t start = 0; start < http_builds; start += 1000) {
      SubmitRequest req;
      for (std::size_t i = start; i < std::min(http_builds, start + 1000); ++i) {
        req.builds.push_back({drvs[i % kDrvs].path, 0, {}, false});
      }
      check(coord->submit(req), "submit");
    }
    Latencies fetch_lat;
    std::atomic<std::size_t> allocated{0};
    auto a0 = Clock::now();
    std::vector<std::thread> agents;
    for (int a = 0; a < kAgents; ++a) {
      agents.emplace_back([&, a] {
        std::string name = "http-agent-" + std::to_string(a);
        httplib::Client client("127.0.0.1", port);
        client.set_keep_alive(true);
        client.set_tcp_nodelay(true);
        client.set_read_timeout(60, 0);
        httplib::Headers auth{{"Authorization", "Bearer " + name + ":" + secrets[a]}};
        for (int n = 0;; ++n) {
          FetchRequest req;
          req.request_id = name + "-" + std::to_string(n);
          req.systems = {"x86_64-linux"};
          auto f0 = Clock::now();
          auto res = client.Post("/api/v1/agent/fetch", auth, toJson(req), "application/json");
          fetch_lat.add(Clock::now() - f0);
          if (!res) die("HTTP fetch " + std::to_string(n) + ": " + httplib::to_string(res.error()));
          if (res->status != 200)
            die("HTTP fetch: " + std::to_string(res->status) + " " + res->body);
          auto got = parse<FetchResponse>(res->body);
          if (!got) die("fetch body");
          if (got->allocations.empty()) return;
          allocated++;
          ResultReport r;
          r.allocation_id = got->allocations[0].allocation_id;
          r.status = ReportStatus::kSucceeded;
          auto rr = client.Post("/api/v1/agent/result", auth, toJson(r), "application/json");
          if (!rr || rr->status != 200) die("HTTP result");
        }
      });
    }
    for (auto& t : agents) t.join();
    double s = seconds(Clock::now() - a0);
    printRow(
        ("allocation over HTTP (fetch + result, " + std::to_string(kAgents) + " agents)").c_str(),
        allocated / s, "allocs/s",
        std::to_string(allocated.load()) + " builds in " + std::to_string(s).substr(0, 5) + " s");
    printRow("  HTTP fetch latency p50", fetch_lat.pct(0.5), "ms");
    printRow("  HTTP fetch latency p99", fetch_lat.pct(0.99), "ms");
  }

  // 4. /metrics with a million builds in the database.
  {
    auto m0 = Clock::now();
    for (std::size_t start = 0; start < metrics_builds; start += 10000) {
      SubmitRequest req;
      if (start == 0) req.derivations = {done};
      for (std::size_t i = start; i < std::min(metrics_builds, start + 10000); ++i) {
        req.builds.push_back({done.path, 0, {}, true});  // all outputs available: skipped
      }
      check(coord->submit(req), "submit finished builds");
    }
    printRow("finished builds written (ignore_if_built)",
             metrics_builds / seconds(Clock::now() - m0), "builds/s");
    CoordinatorStats st = coord->stats();
    std::uint64_t total = 0;
    for (const auto& [state, n] : st.builds) total += n;
    httplib::Client client("127.0.0.1", port);
    client.set_keep_alive(true);
    client.set_tcp_nodelay(true);
    Latencies metrics_lat, health_lat;
    for (int i = 0; i < 2000; ++i) {
      auto h0 = Clock::now();
      auto h = client.Get("/health");
      health_lat.add(Clock::now() - h0);
      auto q0 = Clock::now();
      auto m = client.Get("/metrics");
      metrics_lat.add(Clock::now() - q0);
      if (!h || !m || m->status != 200) die("metrics");
    }
    double mp99 = metrics_lat.pct(0.99), hp99 = health_lat.pct(0.99);
    printRow(("/metrics p50, " + std::to_string(total) + " builds in the db").c_str(),
             metrics_lat.pct(0.5), "ms");
    printRow(("/metrics p99, " + std::to_string(total) + " builds in the db").c_str(), mp99, "ms",
             "/health p99 " + std::to_string(hp99).substr(0, 5) + " ms, ratio " +
                 std::to_string(mp99 / hp99).substr(0, 4) + "x");
    api->stop();
    server.join();
    api.reset();
    coord.reset();
    auto o0 = Clock::now();
    coord = check(Coordinator::open(options), "reopen");
    printRow("restart: open + index rebuild (one scan)", seconds(Clock::now() - o0), "s",
             std::to_string(total) + " builds");
  }
  coord.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
