#pragma once
// Shared set-up of the coordinator tests: a real narstore Store in a temp dir (what is
// "really available"), a Coordinator on its own LMDB database in the same temp dir with a fake
// clock, and derivations made with the formats layer (no Nix needed).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "narcache/coordinator/coordinator.h"
#include "narcache/narinfo/derivation.h"
#include "narstore/helpers.h"
#include "support/support.h"

namespace narcache::coordinator::testing {

inline constexpr const char* kSystem = "x86_64-linux";

struct TestDrv {
  std::string path;
  std::string text;
  std::string out;                   // path of output "out"
  std::vector<std::string> closure;  // .drv paths: itself and its input drvs, recursively
};

class CoordinatorFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = narstore::testing::initStore(dir_ / "store");
    ASSERT_NE(store_, nullptr);
    availability_ = localAvailability(*store_);
  }

  CoordinatorOptions options() {
    CoordinatorOptions o;
    o.db_dir = dir_ / "db";
    o.availability = availability_.get();
    o.store = store_.get();
    o.cache_url = "http://cache.test";
    o.clock = [this] { return now_; };
    o.background = false;
    o.hook_poll_ms = 50;
    o.hook_backoff_initial_ms = 20;
    o.hook_backoff_max_ms = 100;
    return o;
  }

  std::unique_ptr<Coordinator> open(const CoordinatorOptions& o) {
    auto c = Coordinator::open(o);
    EXPECT_TRUE(c.has_value()) << (c ? "" : c.error().message());
    return c ? std::move(*c) : nullptr;
  }
  void open() { coord_ = open(options()); }

  // A derivation named `name` depending on the "out" output of `deps` and on `srcs`.
  TestDrv drv(const std::string& name, const std::vector<TestDrv>& deps = {},
              const std::string& system = kSystem, const std::vector<std::string>& srcs = {},
              const std::map<std::string, std::string>& env = {}) {
    DerivationAttrs attrs;
    attrs.name = name;
    attrs.env = env;
    attrs.builder = "/bin/sh";
    attrs.system = system;
    attrs.args = {"-c", "echo " + name + " > $out"};
    TestDrv t;
    for (const TestDrv& d : deps) {
      attrs.input_drvs[d.path] = {"out"};
      for (const std::string& c : d.closure) {
        if (std::find(t.closure.begin(), t.closure.end(), c) == t.closure.end()) {
          t.closure.push_back(c);
        }
      }
    }
    attrs.input_srcs.insert(srcs.begin(), srcs.end());
    auto load = [this](const std::string& path) -> Result<Derivation> {
      auto it = drvs_.find(path);
      if (it == drvs_.end()) return fail(ErrorCode::kNotFound, path);
      return it->second;
    };
    auto made = makeDerivation(attrs, "/nix/store", load);
    EXPECT_TRUE(made.has_value()) << (made ? "" : made.error().message());
    auto path = derivationStorePath(*made, "/nix/store");
    EXPECT_TRUE(path.has_value());
    drvs_[*path] = *made;
    texts_[*path] = writeDerivation(*made);
    t.path = *path;
    t.text = texts_[*path];
    t.out = made->outputs.at("out").path;
    t.closure.push_back(t.path);
    return t;
  }

  // Submits builds of `targets` (sending every derivation of their closures).
  std::vector<BuildInfo> submit(const std::vector<TestDrv>& targets, int priority = 0,
                                bool ignore_if_built = false) {
    SubmitRequest req;
    std::set<std::string> sent;
    for (const TestDrv& t : targets) {
      for (const std::string& c : t.closure) {
        if (sent.insert(c).second) req.derivations.push_back({c, texts_.at(c)});
      }
      req.builds.push_back({t.path, priority, {}, ignore_if_built});
    }
    auto res = coord_->submit(req);
    EXPECT_TRUE(res.has_value()) << (res ? "" : res.error().message());
    return res ? res->builds : std::vector<BuildInfo>{};
  }

  // Puts a (tiny) item at `path` into the store: it becomes available.
  void addToStore(const std::string& path) {
    auto item = narstore::testing::makeItem("x", "contents of " + path);
    auto p = StorePath::parse(path);
    ASSERT_TRUE(p.has_value());
    item.info.path = *p;
    auto added = narstore::testing::addItem(*store_, item);
    ASSERT_TRUE(added.has_value()) << added.error().message();
  }
  // Marks `path` deleted now (the tests' clock, which the coordinator compares with successes).
  void markDeleted(const std::string& path) {
    auto p = StorePath::parse(path);
    ASSERT_TRUE(p.has_value());
    ASSERT_TRUE(store_->markDeleted(*p, narstore::Tombstone{now_, "test", "test"}).has_value());
  }

  std::vector<Allocation> fetch(const std::string& agent = "a1", int max_parallel = 1,
                                std::vector<std::string> systems = {kSystem},
                                const std::string& request_id = "") {
    FetchRequest req;
    req.request_id = request_id;
    req.systems = std::move(systems);
    req.max_parallel = max_parallel;
    auto res = coord_->fetch(agent, req);
    EXPECT_TRUE(res.has_value()) << (res ? "" : res.error().message());
    return res ? res->allocations : std::vector<Allocation>{};
  }

  bool report(const Allocation& a, ReportStatus status, const std::string& agent = "a1") {
    ResultReport r;
    r.allocation_id = a.allocation_id;
    r.status = status;
    auto res = coord_->report(agent, r);
    EXPECT_TRUE(res.has_value()) << (res ? "" : res.error().message());
    return res && res->accepted;
  }

  // Builds it "for real": its output goes into the store, then success is reported.
  bool succeed(const Allocation& a, const std::string& agent = "a1") {
    for (const auto& [path, d] : drvs_) {
      if (path == a.derivation) {
        for (const auto& [name, o] : d.outputs) addToStore(o.path);
      }
    }
    return report(a, ReportStatus::kSucceeded, agent);
  }

  BuildInfo info(std::uint64_t id) {
    auto b = coord_->build(id);
    EXPECT_TRUE(b.has_value());
    return b ? *b : BuildInfo{};
  }

  test::TempDir dir_;
  std::unique_ptr<narstore::Store> store_;
  std::unique_ptr<Availability> availability_;
  std::int64_t now_ = 1'000'000;
  std::unique_ptr<Coordinator> coord_;
  std::map<std::string, Derivation> drvs_;
  std::map<std::string, std::string> texts_;
};

}  // namespace narcache::coordinator::testing
