// `narcache build` end to end: a DAG of derivations made with `narcache drv create` (fan-in,
// fan-out, several outputs, a self-reference, an output referring to another output of the same
// derivation, a fixed output) built one by one against a live `narcache serve`, with the local
// store dir wiped before each build so that every input must come back by substitution; then
// failing builds (exit code, timeout, max-silent-time, missing output). Finally the real Nix
// client copies the closure of the top derivation from the server with signatures required, and
// the references it records equal the ones narcache scanned.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/served_store.h"
#include "support/support.h"

namespace narcache::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const char* kToken = "build-upload-token";
const char* kPath = "PATH=/usr/bin:/bin";

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class BuildTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_dir_ = (tmp_ / "store").string();
    fs::create_directories(tmp_ / "drvs");
    server_ = ServedStore::signing(tmp_.path(), store_dir_, "build-test-1", kToken, public_key_);
  }

  // `narcache drv create`; returns the .drv file (named by its store path's base name).
  fs::path create(const std::string& name, const std::string& script,
                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {
        "drv",      "create",       "--name",
        name,       "--builder",    "/bin/sh",
        "--system", "x86_64-linux", "--store-dir",
        store_dir_, "--arg",        "-c",
        "--arg",    script,         "--env",
        kPath,      "--output",     (tmp_ / "drvs" / "tmp.drv").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = narcache(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    fs::path drv_path = trim(r.out);
    fs::path file = tmp_ / "drvs" / drv_path.filename();
    fs::rename(tmp_ / "drvs" / "tmp.drv", file);
    return file;
  }

  std::string inputDrv(const fs::path& file, const std::string& outputs = "") {
    return file.string() + (outputs.empty() ? "" : "!" + outputs);
  }

  void wipeStore() {
    std::error_code ec;
    fs::remove_all(store_dir_, ec);
  }

  ProcessResult build(const fs::path& drv, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"build",
                                     drv.string(),
                                     "--cache",
                                     server_->url(),
                                     "--trusted-key",
                                     public_key_,
                                     "--upload-token-file",
                                     (tmp_ / "token").string(),
                                     "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    return narcache(args, options_);
  }

  // Builds with a wiped store; expects success and returns the JSON result.
  json buildOk(const fs::path& drv) {
    wipeStore();
    auto r = build(drv);
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    EXPECT_EQ(j.value("status", ""), "succeeded") << r.out;
    for (auto& [name, out] : j["outputs"].items()) {
      std::set<std::string> refs(out["references"].begin(), out["references"].end());
      scanned_[out["path"]] = refs;
    }
    return j;
  }

  TempDir tmp_;
  std::string store_dir_;
  std::string public_key_;
  std::unique_ptr<ServedStore> server_;
  std::map<std::string, std::set<std::string>> scanned_;  // output path -> references
  RunOptions options_;                                    // for every build()
};

std::set<std::string> refsOf(const json& out) {
  return {out["references"].begin(), out["references"].end()};
}

// `narcache drv create` flags of a flat fixed output: sha256 of "hello\n".
const std::vector<std::string> kHelloFixedOutput = {
    "--env", "outputHashAlgo=sha256", "--env",
    "outputHash=5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"};

// The path of output `output` of the derivation in `drv`.
std::string outPath(const fs::path& drv, const std::string& output = "out") {
  auto r = narcache({"drv", "show", drv.string()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  return j.begin().value()["outputs"][output]["path"];
}

TEST_F(BuildTest, DagSubstitutesInputsAndNixAgreesOnReferences) {
  // A fixed output (flat sha256 of "hello\n"): no input, CA recorded.
  auto src = create("src", "printf 'hello\\n' > $out", kHelloFixedOutput);
  // A leaf with a self-reference.
  auto a = create("a", "mkdir $out && echo a > $out/a.txt && echo $out > $out/self");
  const std::string a_out = outPath(a);
  // Three outputs: dev refers to lib, out to dev (so the upload order is lib, dev, out); out
  // copies from a without referring to it.
  auto multi = create("multi",
                      "mkdir $lib $dev $out && echo lib > $lib/l && echo $lib > $dev/lib-path && "
                      "echo $dev > $out/dev-path && cat " +
                          a_out + "/a.txt > $out/copy",
                      {"--outputs", "out,dev,lib", "--input-drv", inputDrv(a)});
  // Fan-out from a (b and c), fan-in at d (b, c, src, multi's dev).
  auto b =
      create("b", "mkdir $out && echo " + a_out + " > $out/uses-a", {"--input-drv", inputDrv(a)});
  const std::string dev_out = outPath(multi, "dev");
  auto c = create("c", "mkdir $out && cat " + dev_out + "/lib-path > $out/lib && echo c > $out/c",
                  {"--input-drv", inputDrv(a), "--input-drv", inputDrv(multi, "dev")});
  const std::string b_out = outPath(b), c_out = outPath(c), src_out = outPath(src);
  auto d = create(
      "d",
      "mkdir -p $out/bin && echo " + b_out + " " + c_out + " > $out/deps && cp " + src_out +
          " $out/hello && "
          "printf '#!/bin/sh\\necho " +
          src_out +
          "\\n' > $out/bin/run && chmod +x "
          "$out/bin/run && ln -s " +
          c_out + "/c $out/c-link",
      {"--input-drv", inputDrv(b), "--input-drv", inputDrv(c), "--input-drv", inputDrv(src)});
  const std::string d_out = outPath(d);
  auto top = create(
      "top", "echo building top; mkdir $out && echo " + d_out + " > $out/d && echo $out > $out/me",
      {"--input-drv", inputDrv(d)});

  // Built one by one, each from an empty local store.
  json j = buildOk(src);
  // sha256 "5891b5..." in nix32.
  EXPECT_EQ(j["outputs"]["out"].value("ca", ""),
            "fixed:sha256:00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq");
  EXPECT_TRUE(j["outputs"]["out"]["references"].empty());
  j = buildOk(a);
  EXPECT_EQ(refsOf(j["outputs"]["out"]), std::set<std::string>{a_out});
  j = buildOk(multi);
  EXPECT_EQ(j["substituted"], json::array({a_out}));
  const std::string lib_out = outPath(multi, "lib"), multi_out = outPath(multi);
  EXPECT_EQ(refsOf(j["outputs"]["lib"]), std::set<std::string>{});
  EXPECT_EQ(refsOf(j["outputs"]["dev"]), std::set<std::string>{lib_out});
  EXPECT_EQ(refsOf(j["outputs"]["out"]), std::set<std::string>{dev_out});
  j = buildOk(b);
  EXPECT_EQ(refsOf(j["outputs"]["out"]), std::set<std::string>{a_out});
  j = buildOk(c);
  EXPECT_EQ(refsOf(j["outputs"]["out"]), std::set<std::string>{lib_out});
  // Inputs: a, multi's dev and its closure (lib); not multi's out.
  std::set<std::string> substituted(j["substituted"].begin(), j["substituted"].end());
  EXPECT_EQ(substituted, (std::set<std::string>{a_out, dev_out, lib_out}));
  j = buildOk(d);
  EXPECT_EQ(refsOf(j["outputs"]["out"]), (std::set<std::string>{b_out, c_out, src_out}));
  j = buildOk(top);
  const std::string top_out = outPath(top);
  EXPECT_EQ(refsOf(j["outputs"]["out"]), (std::set<std::string>{d_out, top_out}));

  // Rebuilding with the inputs already present substitutes nothing.
  auto again = build(top);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(json::parse(again.out)["substituted"].empty());

  // The build log was uploaded beside the outputs.
  auto log = run({"curl", "-sf", server_->url("/log/" + top.filename().string())});
  EXPECT_EQ(log.exit_code, 0);
  EXPECT_EQ(log.out, "building top\n");

  // The real Nix client: copy the closure of top with signatures required.
  if (!haveNix()) GTEST_SKIP() << "nix-bin is not installed (scripts/setup.sh installs it)";
  NixEnv nix;
  const std::string from = server_->url() + "?store=" + store_dir_;
  const std::string to = "local?root=" + (tmp_ / "nixroot").string() + "&store=" + store_dir_;
  auto copy = nix.run({"nix", "copy", "--from", from, "--to", to, "--option", "require-sigs",
                       "true", "--option", "trusted-public-keys", public_key_, top_out});
  ASSERT_EQ(copy.exit_code, 0) << copy.err;
  auto info = nix.run({"nix", "path-info", "--store", to, "-r", "--json", top_out});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  std::map<std::string, std::set<std::string>> nix_refs;
  for (const auto& p : json::parse(info.out)) {
    nix_refs[p["path"]] = {p["references"].begin(), p["references"].end()};
  }
  // top's closure: top, d, b, c, src, a, multi's lib (c refers to lib through lib-path).
  const std::set<std::string> closure = {top_out, d_out, b_out, c_out, src_out, a_out, lib_out};
  std::set<std::string> got;
  for (const auto& [path, refs] : nix_refs) got.insert(path);
  EXPECT_EQ(got, closure);
  for (const auto& path : closure) {
    EXPECT_EQ(nix_refs[path], scanned_[path]) << path;
  }
  (void)multi_out;
}

TEST_F(BuildTest, FailuresReportTheirStatusAndLogTail) {
  auto fails =
      create("fails", "for i in $(seq 1 30); do echo line $i; done; echo oops >&2; exit 3");
  wipeStore();
  auto r = build(fails);
  EXPECT_EQ(r.exit_code, 1);
  json j = json::parse(r.out);
  EXPECT_EQ(j["status"], "failed");
  EXPECT_EQ(j["exitCode"], 3);
  EXPECT_NE(r.err.find("failed with exit code 3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("line 30\noops"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("line 10\n"), std::string::npos) << "only the tail: " << r.err;

  auto slow = create("slow", "echo start; sleep 30; mkdir $out");
  r = build(slow, {"--timeout", "1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(json::parse(r.out)["status"], "timed-out");
  EXPECT_NE(r.err.find("timed out after 1 seconds"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("start"), std::string::npos) << r.err;

  auto silent = create("silent", "echo tick; sleep 1; echo tock; sleep 30; mkdir $out");
  r = build(silent, {"--max-silent-time", "2", "--timeout", "20"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(json::parse(r.out)["status"], "timed-out");
  EXPECT_NE(r.err.find("seconds of silence"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tock"), std::string::npos) << r.err;

  auto missing = create("missing", "mkdir $out", {"--outputs", "out,dev"});
  r = build(missing);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(json::parse(r.out)["status"], "failed");
  EXPECT_NE(r.err.find("did not produce output 'dev' (" + outPath(missing, "dev") + ")"),
            std::string::npos)
      << r.err;
  // Nothing of a failed build reaches the cache but its log, which the coordinator links to.
  auto probe =
      run({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
           server_->url("/" + fs::path(outPath(missing)).filename().string().substr(0, 32) +
                        ".narinfo")});
  EXPECT_EQ(probe.out, "404");
  auto log = run({"curl", "-s", "-f", server_->url("/log/" + fails.filename().string())});
  EXPECT_EQ(log.exit_code, 0);
  EXPECT_NE(log.out.find("line 30\noops\n"), std::string::npos) << log.out;
  log = run({"curl", "-s", "-f", server_->url("/log/" + slow.filename().string())});
  EXPECT_EQ(log.out, "start\n");
}

// sha1 (flat) and md5 (recursive) fixed outputs build, with Nix's CA (nix32 digests, checked
// with `nix-hash --type sha1 --flat --base32` and `nix-hash --type md5 --base32`).
TEST_F(BuildTest, Sha1AndMd5FixedOutputsBuild) {
  auto sha1 = create("src-sha1", "printf 'hello\\n' > $out",
                     {"--env", "outputHashAlgo=sha1", "--env",
                      "outputHash=f572d396fae9206628714fb2ce00f72e94f2258f"});
  json j = buildOk(sha1);
  EXPECT_EQ(j["outputs"]["out"].value("ca", ""), "fixed:sha1:iwjz551fyw0cxcjgf4l6c879zabd6wpm");
  auto md5 = create("src-md5", "printf 'hello\\n' > $out",
                    {"--env", "outputHashAlgo=md5", "--env", "outputHashMode=recursive", "--env",
                     "outputHash=4ycxcbh0ac0abr4zxw23l6isnk"});
  j = buildOk(md5);
  EXPECT_EQ(j["outputs"]["out"].value("ca", ""), "fixed:r:md5:4ycxcbh0ac0abr4zxw23l6isnk");
}

// Without CAP_SYS_ADMIN (dropped with setpriv) the build falls back to no isolation, says so,
// and the builder sees the whole store.
TEST_F(BuildTest, WithoutPrivilegeFallsBackToNoIsolation) {
  if (run({"setpriv", "--version"}).exit_code != 0) GTEST_SKIP() << "setpriv is not installed";
  wipeStore();
  const std::string unrelated = store_dir_ + "/00000000000000000000000000000000-unrelated";
  fs::create_directories(unrelated);
  auto drv = create("open", "mkdir $out && ls $NIX_STORE > $out/listing");
  auto r = run({"setpriv", "--bounding-set", "-sys_admin", NARCACHE_BIN, "build", drv.string(),
                "--cache", server_->url(), "--trusted-key", public_key_, "--upload-token-file",
                (tmp_ / "token").string(), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("store isolation unavailable (unshare: Operation not permitted)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(json::parse(r.out).at("storeIsolated"), false);
  EXPECT_NE(readFile(outPath(drv) + "/listing").find("-unrelated"), std::string::npos);
}

TEST_F(BuildTest, FixedOutputHashMismatchFails) {
  auto bad = create("bad-src", "printf 'bye\\n' > $out", kHelloFixedOutput);
  auto r = build(bad);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("hash mismatch in fixed-output derivation"), std::string::npos) << r.err;
  // The wrong content is not left in the store, where it would pass for a valid input later.
  EXPECT_FALSE(fs::exists(fs::symlink_status(outPath(bad)))) << outPath(bad);
}

// Nix's reference attributes: exportReferencesGraph writes the closure of an input into the
// build directory; allowed/disallowed References/Requisites fail an output that breaks them.
TEST_F(BuildTest, ReferenceAttributesAreCheckedAndExportReferencesGraphIsWritten) {
  auto dep = create("dep", "mkdir $out; echo x > $out/f");
  const std::string dep_out = outPath(dep);
  auto refers = [&](const std::string& name, std::vector<std::string> env) {
    std::vector<std::string> extra = {"--input-drv", inputDrv(dep)};
    for (auto& e : env) extra.insert(extra.end(), {"--env", e});
    return create(name,
                  "mkdir $out; echo " + dep_out + " > $out/ref; cp graph $out/ 2>/dev/null; true",
                  extra);
  };
  buildOk(dep);
  auto ok = refers(
      "ok", {"exportReferencesGraph=graph " + dep_out + "/f", "allowedReferences=out " + dep_out,
             "allowedRequisites=out " + dep_out, "disallowedReferences=" + std::string("out")});
  auto r = build(ok);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(readFile(outPath(ok) + "/graph"), dep_out + "\n\n0\n");

  auto expectRefused = [&](const fs::path& drv, const std::string& message) {
    auto refused = build(drv);
    EXPECT_EQ(refused.exit_code, 1);
    EXPECT_NE(refused.err.find(message), std::string::npos) << refused.err;
    EXPECT_FALSE(fs::exists(outPath(drv))) << "a refused output is not kept";
  };
  const std::string not_allowed = "' is not allowed to refer to the following paths:\n  " + dep_out;
  auto d = refers("disallowed", {"disallowedReferences=" + dep_out});
  expectRefused(d, "output '" + outPath(d) + not_allowed);
  d = refers("notallowed", {"allowedReferences=out"});
  expectRefused(d, "output '" + outPath(d) + not_allowed);
  d = refers("requisites", {"disallowedRequisites=" + dep_out});
  expectRefused(d, "output '" + outPath(d) + not_allowed);
  expectRefused(refers("badspec", {"allowedReferences=nonsense"}),
                "derivation contains an illegal reference specifier 'nonsense'");
  expectRefused(refers("notinput", {"exportReferencesGraph=g " + store_dir_ + "/" +
                                    std::string(32, '0') + "-x"}),
                "because it is not in the input closure of the derivation");
}

// --build-uids on the command line: the builder runs as one of them (root only), and a
// malformed range is refused before anything is built.
TEST_F(BuildTest, BuildUidsRunTheBuilderAsABuildUser) {
  auto drv = create("uid", "id -u > $out");
  auto bad = build(drv, {"--build-uids", "9-3"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--build-uids: expected FIRST-LAST with 1 <= FIRST <= LAST"),
            std::string::npos)
      << bad.err;
  if (::geteuid() != 0) GTEST_SKIP() << "build users need root";
  auto r = build(drv, {"--build-uids", "40200-40201"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("build user 40200 cannot reach '" + store_dir_ + "': '" +
                       tmp_.path().string() + "' is not searchable by others (mode 0700)"),
            std::string::npos)
      << r.err;
  ::chmod(tmp_.path().c_str(), 0755);
  r = build(drv, {"--build-uids", "40200-40201"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("building as build user 40200"), std::string::npos) << r.err;
  EXPECT_EQ(readFile(outPath(drv)), "40200\n");
}

// A builder running as a build user still dies with the engine (changing credentials clears
// the parent-death signal; it is set again after).
TEST_F(BuildTest, ABuildUsersBuilderDiesWithTheEngine) {
  if (::geteuid() != 0) GTEST_SKIP() << "build users need root";
  ::chmod(tmp_.path().c_str(), 0755);
  const std::string marker = "31339.5";
  auto drv = create("sleeps", "exec sleep " + marker);
  BackgroundProcess engine({NARCACHE_BIN, "build", drv.string(), "--cache", server_->url(),
                            "--trusted-key", public_key_, "--build-uids", "40300-40301"});
  for (int i = 0; i < 250 && sleepersOf(marker) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(sleepersOf(marker), 1) << engine.err();
  EXPECT_EQ(engine.stop(SIGKILL), 128 + SIGKILL);
  const int left = sleepersLeft(marker);
  EXPECT_EQ(left, 0);
}

// A relative TMPDIR is made absolute: the builder gets its build dir's paths after its chdir.
TEST_F(BuildTest, ARelativeTmpdirGivesTheBuilderAbsolutePaths) {
  auto drv = create("reltmp", "case $NIX_BUILD_TOP in /*) cat $fooPath > $out;; *) exit 7;; esac",
                    {"--env", "passAsFile=foo", "--env", "foo=passed"});
  fs::create_directories(tmp_ / "rel");
  options_.env["TMPDIR"] = "rel";
  options_.cwd = tmp_.path();
  auto r = build(drv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(readFile(outPath(drv)), "passed");
}

TEST_F(BuildTest, AFlatFixedOutputMustNotBeExecutable) {
  // As Nix: sha256 of "hello\n", but the file is executable.
  auto exe = create("exe-src", "printf 'hello\\n' > $out; chmod +x $out", kHelloFixedOutput);
  auto r = build(exe);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not a non-executable regular file"), std::string::npos) << r.err;
}

TEST_F(BuildTest, AFailedBuildLeavesNoOutputInTheStore) {
  auto partial = create("partial", "mkdir $out; echo half > $out/f; exit 1");
  auto r = build(partial);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_FALSE(fs::exists(fs::symlink_status(outPath(partial)))) << outPath(partial);
}

// What a build leaves in the local store, built or substituted, is canonical as in Nix: files
// 0444 (0555 executable), directories 0555, mtime 1 (symlinks' own mtime too).
TEST_F(BuildTest, OutputsAndSubstitutedInputsAreReadOnlyWithMtimeOne) {
  auto canon = create("canon",
                      "mkdir -p $out/d; echo x > $out/d/f; printf '#!/bin/sh\\n' > $out/run; "
                      "chmod 755 $out/run; ln -s d/f $out/link");
  const std::string canon_out = outPath(canon);
  auto user =
      create("canon-user", "cat " + canon_out + "/d/f > $out", {"--input-drv", inputDrv(canon)});
  auto expectCanonical = [&](const std::string& when) {
    auto st = [&](const std::string& rel) {
      struct stat s {};
      EXPECT_EQ(::lstat((canon_out + rel).c_str(), &s), 0) << when << rel;
      return s;
    };
    EXPECT_EQ(st("").st_mode & 07777, 0555u) << when;
    EXPECT_EQ(st("/d").st_mode & 07777, 0555u) << when;
    EXPECT_EQ(st("/d/f").st_mode & 07777, 0444u) << when;
    EXPECT_EQ(st("/run").st_mode & 07777, 0555u) << when;
    EXPECT_TRUE(S_ISLNK(st("/link").st_mode)) << when;
    for (const char* rel : {"", "/d", "/d/f", "/run", "/link"}) {
      EXPECT_EQ(st(rel).st_mtime, 1) << when << rel;
    }
  };
  buildOk(canon);
  expectCanonical("built: ");
  buildOk(user);  // from an empty local store: canon comes back by substitution
  expectCanonical("substituted: ");
}

// A build killed while its output is half written (SIGKILL: none of its clean-up runs) leaves
// the output path behind. While it runs, a second build of the same derivation is refused rather
// than removing its outputs; once it is dead, a build that needs that output as an input does not
// take the leftover for valid: it removes it and substitutes the whole output from the cache.
// (Without isolation, so that the builder writes at the output path itself.)
TEST_F(BuildTest, AKilledBuildsPartialOutputIsNeitherClobberedWhileLiveNorUsedOnceDead) {
  if (run({"setpriv", "--version"}).exit_code != 0) GTEST_SKIP() << "setpriv is not installed";
  const fs::path flag = tmp_ / "stop-half-way";
  auto half = create("half", "mkdir $out; echo whole > $out/f; if [ -e " + flag.string() +
                                 " ]; then echo half > $out/f; exec sleep 60; fi");
  const std::string half_out = outPath(half);
  buildOk(half);  // the cache has the whole output
  wipeStore();
  writeFile(flag, "");
  const fs::path scratch = tmp_ / "scratch";  // the builds' $TMPDIR
  fs::create_directories(scratch);
  options_.env["TMPDIR"] = scratch.string();
  BackgroundProcess killed({"setpriv", "--bounding-set", "-sys_admin", NARCACHE_BIN, "build",
                            half.string(), "--cache", server_->url(), "--trusted-key", public_key_,
                            "--upload-token-file", (tmp_ / "token").string()},
                           options_);
  auto halfWritten = [&] {
    return fs::exists(half_out + "/f") && readFile(half_out + "/f") == "half\n";
  };
  for (int i = 0; i < 300 && !halfWritten(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(halfWritten()) << killed.err();

  auto again = build(half);
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("is being built by another build on this machine"), std::string::npos)
      << again.err;
  EXPECT_EQ(readFile(half_out + "/f"), "half\n");  // left alone

  EXPECT_EQ(killed.stop(SIGKILL), 128 + SIGKILL);
  // The killed build's work dir stays until a later build finds it abandoned.
  auto workDirs = [&] {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(scratch)) names.push_back(e.path().filename());
    return names;
  };
  ASSERT_EQ(workDirs().size(), 2u);  // the directory and its owner file
  EXPECT_TRUE(workDirs()[0].starts_with("narcache-build-half-")) << workDirs()[0];
  auto user = create("user", "cat " + half_out + "/f > $out", {"--input-drv", inputDrv(half)});
  auto r = build(user);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(readFile(outPath(user)), "whole\n");
  EXPECT_EQ(readFile(half_out + "/f"), "whole\n");
  EXPECT_TRUE(workDirs().empty()) << workDirs()[0];
}

// Outputs still valid in the local store (an earlier build's, whose upload failed or whose
// outputs the cache lost) are packed and uploaded as they are: building them again would first
// remove a valid path, which another build may be using as an input.
TEST_F(BuildTest, OutputsValidInTheLocalStoreAreUploadedNotBuiltAgain) {
  const fs::path runs = tmp_ / "runs";
  auto drv = create("once", "echo run >> " + runs.string() + "; mkdir $out; echo hi > $out/f");
  buildOk(drv);
  const fs::path f = fs::path(outPath(drv)) / "f";
  struct stat before {};
  ASSERT_EQ(::stat(f.c_str(), &before), 0);
  auto r = build(drv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("are valid in the local store: not built again"), std::string::npos)
      << r.err;
  EXPECT_EQ(readFile(runs), "run\n");
  struct stat after {};
  ASSERT_EQ(::stat(f.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);  // the same file, never removed
  json j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j.value("status", ""), "succeeded");
  EXPECT_EQ(j["outputs"]["out"]["path"], outPath(drv)) << r.out;

  // Once an operator marks the output deleted in the cache, the local copy is condemned too:
  // the next build really builds.
  auto marked =
      run({"curl", "-s", "-f", "-X", "POST", "-H", std::string("Authorization: Bearer ") + kToken,
           "-H", "Content-Type: application/json", "--data-binary",
           R"({"paths": [")" + outPath(drv) + R"("], "reason": "miscompiled"})",
           server_->url("/api/mark-deleted")});
  ASSERT_EQ(marked.exit_code, 0) << marked.out << marked.err;
  r = build(drv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("'" + outPath(drv) + "' is deleted in the cache: built again"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(readFile(runs), "run\nrun\n");
}

// An isolated build writes into its store view (a directory in the store); killed, it leaves the
// view behind, and the next build on the machine removes it.
TEST_F(BuildTest, AKilledIsolatedBuildsStoreViewIsRemovedByTheNextBuild) {
  if (::geteuid() != 0) GTEST_SKIP() << "store isolation needs root";
  auto slow = create("slow", "mkdir $out; echo x > $out/f; exec sleep 60");
  const std::string base = fs::path(outPath(slow)).filename();
  BackgroundProcess killed({NARCACHE_BIN, "build", slow.string(), "--cache", server_->url(),
                            "--trusted-key", public_key_, "--upload-token-file",
                            (tmp_ / "token").string()});
  auto views = [&] {
    std::vector<fs::path> found;
    std::error_code ec;
    for (auto it = fs::directory_iterator(store_dir_, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      if (it->path().filename().string().starts_with(".narcache-view-")) found.push_back(*it);
    }
    return found;
  };
  auto written = [&] {
    for (const auto& v : views()) {
      if (fs::exists(v / base / "f")) return true;
    }
    return false;
  };
  for (int i = 0; i < 300 && !written(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(written()) << killed.err();
  EXPECT_EQ(killed.stop(SIGKILL), 128 + SIGKILL);
  EXPECT_EQ(views().size(), 2u);  // the view and its owner file

  auto other = create("other", "echo ok > $out");
  auto r = build(other);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("store isolation: the builder sees only"), std::string::npos) << r.err;
  EXPECT_TRUE(views().empty()) << views()[0];
}

}  // namespace
}  // namespace narcache::test
