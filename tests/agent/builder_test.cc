// The build engine's own errors and statuses, through its API (agent::buildDerivation), against a
// live `narcache serve`: missing builder, unknown input derivation, unreachable cache, an input
// that is not in the cache, an input whose narinfo is signed by an untrusted key, an input whose
// nar was corrupted in the cache; and the happy path's result (outputs, references, log).
#include "narcache/agent/builder.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "narcache/narinfo/signature.h"
#include "support/served_store.h"
#include "support/support.h"

namespace narcache::test {
namespace {

namespace fs = std::filesystem;
using agent::BuildStatus;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class BuilderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_dir_ = (tmp_ / "store").string();
    fs::create_directories(tmp_ / "drvs");
    server_ = ServedStore::signing(tmp_.path(), store_dir_, "agent-test-1", "tok", public_key_);
  }

  fs::path create(const std::string& name, const std::string& builder, const std::string& script,
                  const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"drv",         "create",
                                     "--name",      name,
                                     "--builder",   builder,
                                     "--system",    "x86_64-linux",
                                     "--store-dir", store_dir_,
                                     "--arg",       "-c",
                                     "--arg",       script,
                                     "--env",       "PATH=/usr/bin:/bin",
                                     "--output",    (tmp_ / "drvs" / "tmp.drv").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = narcache(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    fs::path file = tmp_ / "drvs" / fs::path(trim(r.out)).filename();
    fs::rename(tmp_ / "drvs" / "tmp.drv", file);
    return file;
  }

  agent::BuildOptions options(const fs::path& drv) {
    agent::BuildOptions o;
    o.drv_file = drv;
    o.cache_url = server_->url();
    o.trusted_keys = {*PublicKey::parse(public_key_)};
    o.upload_token = "tok";
    o.http_attempts = 2;
    return o;
  }

  void wipeStore() {
    std::error_code ec;
    fs::remove_all(store_dir_, ec);
  }

  TempDir tmp_;
  std::string store_dir_;
  std::string public_key_;
  std::unique_ptr<ServedStore> server_;
};

TEST_F(BuilderTest, SucceedsWithOutputsReferencesAndLog) {
  auto drv = create("leaf", "/bin/sh", "echo building; mkdir $out; echo $out > $out/self");
  auto o = options(drv);
  o.log_file = tmp_ / "leaf.log";
  std::string streamed;
  o.on_log = [&](std::string_view chunk) { streamed += chunk; };
  auto r = agent::buildDerivation(o);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, BuildStatus::kSucceeded) << r->message;
  ASSERT_EQ(r->outputs.size(), 1u);
  const auto& info = r->outputs[0].info;
  ASSERT_EQ(info.references.size(), 1u);
  EXPECT_EQ(info.references[0], info.path);  // self-reference
  EXPECT_EQ(info.deriver->baseName(), drv.filename().string());
  EXPECT_EQ(info.system, "x86_64-linux");
  EXPECT_EQ(info.compression, "zstd");
  EXPECT_EQ(streamed, "building\n");
  EXPECT_EQ(readFile(tmp_ / "leaf.log"), "building\n");
  EXPECT_EQ(r->exit_code, 0);
}

TEST_F(BuilderTest, BuilderSeesNixEnvironment) {
  auto drv = create("env", "/bin/sh",
                    "mkdir $out; env | sort > $out/env; pwd > $out/pwd; echo $FOO > $out/foo",
                    {"--env", "FOO=bar"});
  auto o = options(drv);
  o.keep_build_dir = true;
  auto r = agent::buildDerivation(o);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message;
  const fs::path out = r->outputs[0].physical_path;
  std::string env = readFile(out / "env");
  std::string pwd = trim(readFile(out / "pwd"));
  EXPECT_NE(env.find("HOME=/homeless-shelter\n"), std::string::npos) << env;
  EXPECT_NE(env.find("NIX_STORE=" + store_dir_ + "\n"), std::string::npos) << env;
  EXPECT_NE(env.find("NIX_BUILD_TOP=" + pwd + "\n"), std::string::npos) << env;
  EXPECT_NE(env.find("TMPDIR=" + pwd + "\n"), std::string::npos) << env;
  EXPECT_NE(env.find("PATH=/usr/bin:/bin\n"), std::string::npos) << env;
  // Nix's default `cores`: the machine's CPUs.
  EXPECT_NE(env.find("NIX_BUILD_CORES=" +
                     std::to_string(std::max(1u, std::thread::hardware_concurrency())) + "\n"),
            std::string::npos)
      << env;
  EXPECT_NE(env.find("out=" + out.string() + "\n"), std::string::npos) << env;
  EXPECT_EQ(env.find("GTEST"), std::string::npos) << "environment not cleared: " << env;
  EXPECT_EQ(readFile(out / "foo"), "bar\n");
  EXPECT_TRUE(fs::is_directory(pwd));  // kept
  fs::remove_all(fs::path(pwd).parent_path());
}

// As Nix: a derivation needing a system feature this machine does not offer is not built.
TEST_F(BuilderTest, RequiredSystemFeaturesMustBeOffered) {
  auto drv = create("needs-gpu", "/bin/sh", "echo built > $out",
                    {"--env", "requiredSystemFeatures=gpu big-parallel"});
  auto refused = agent::buildDerivation(options(drv));
  ASSERT_TRUE(refused) << refused.error().message();
  EXPECT_EQ(refused->status, BuildStatus::kFailed);
  EXPECT_NE(refused->message.find("a 'x86_64-linux' with features {big-parallel, gpu} is "
                                  "required to build '"),
            std::string::npos)
      << refused->message;
  EXPECT_NE(refused->message.find("' with features {benchmark, big-parallel"), std::string::npos)
      << refused->message;  // the defaults, as Nix's
  auto o = options(drv);
  o.system_features = std::vector<std::string>{"big-parallel", "gpu"};
  auto built = agent::buildDerivation(o);
  ASSERT_TRUE(built) << built.error().message();
  EXPECT_EQ(built->status, BuildStatus::kSucceeded) << built->message;
}

TEST_F(BuilderTest, CoresSetNixBuildCores) {
  auto drv = create("cores", "/bin/sh", "echo $NIX_BUILD_CORES > $out");
  auto o = options(drv);
  o.cores = 3;
  auto r = agent::buildDerivation(o);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message << r->log_tail;
  EXPECT_EQ(readFile(r->outputs[0].physical_path), "3\n");
}

// passAsFile as Nix does it (the file name is the one Nix's tests/pass-as-file.sh expects).
TEST_F(BuilderTest, PassAsFileAttributesArriveAsFiles) {
  auto drv = create("pass-as-file", "/bin/sh",
                    "mkdir $out; basename $fooPath > $out/name; cat $fooPath > $out/foo; "
                    "cat $barPath > $out/bar; echo \"${foo-unset}\" > $out/foo-env; "
                    "echo $baz > $out/baz",
                    {"--env", "passAsFile=foo  bar", "--env", "foo=xyzzy", "--env",
                     "bar=two\nlines", "--env", "baz=plain"});
  auto r = agent::buildDerivation(options(drv));
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message << r->log_tail;
  const fs::path out = r->outputs[0].physical_path;
  EXPECT_EQ(readFile(out / "name"), ".attr-1bp7cri8hplaz6hbz0v4f0nl44rl84q1sg25kgwqzipzd1mv89ic\n");
  EXPECT_EQ(readFile(out / "foo"), "xyzzy");
  EXPECT_EQ(readFile(out / "bar"), "two\nlines");
  EXPECT_EQ(readFile(out / "foo-env"), "unset\n");  // not in the environment itself
  EXPECT_EQ(readFile(out / "baz"), "plain\n");
}

// `builtins.placeholder "out"` stays in the .drv; Nix replaces it with the output path in the
// builder's arguments, environment and passAsFile files (checked against nix-build 2.8), and
// gives the builder its base name as argv[0].
TEST_F(BuilderTest, OutputPlaceholdersBecomeTheOutputPaths) {
  const std::string out = "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9";
  auto drv = create(
      "placeholders", "/bin/sh",
      "mkdir $out; echo " + out +
          " > $out/arg; echo $prefix > $out/env; "
          "cat $filePath > $out/file; echo $0 > $out/argv0",
      {"--env", "prefix=" + out + "/lib", "--env", "passAsFile=file", "--env", "file=at " + out});
  auto r = agent::buildDerivation(options(drv));
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message << r->log_tail;
  const std::string path = r->outputs[0].info.fullPath();
  const fs::path physical = r->outputs[0].physical_path;
  EXPECT_EQ(readFile(physical / "arg"), path + "\n");
  EXPECT_EQ(readFile(physical / "env"), path + "/lib\n");
  EXPECT_EQ(readFile(physical / "file"), "at " + path);
  EXPECT_EQ(readFile(physical / "argv0"), "sh\n");
}

// As `nix copy`, an output the cache already serves is not uploaded again. When this build's
// copy differs (a derivation that is not reproducible, built twice: two agents, or a retry after
// a lost upload), the cache's copy wins, a warning says so, and the build succeeds; it used to
// fail on the cache's 409 every time, and every retry reused the local copy.
TEST_F(BuilderTest, AnOutputTheCacheAlreadyHasIsNotUploadedAgain) {
  auto nondet = create("nondet", "/bin/sh", "cat /proc/sys/kernel/random/uuid > $out");
  auto first = agent::buildDerivation(options(nondet));
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_EQ(first->status, BuildStatus::kSucceeded) << first->message;
  const NarInfo cached = first->outputs[0].info;

  wipeStore();  // another machine, or the first build's local copy lost
  auto o = options(nondet);
  std::string progress;
  o.on_progress = [&](std::string_view m) { progress += std::string(m) + "\n"; };
  auto second = agent::buildDerivation(o);
  ASSERT_TRUE(second) << second.error().message();
  ASSERT_EQ(second->status, BuildStatus::kSucceeded) << second->message;
  EXPECT_EQ(second->outputs[0].info.nar_hash, cached.nar_hash);  // the cache's
  EXPECT_NE(progress.find("is not reproducible"), std::string::npos) << progress;
  auto narinfo = curlRequest(server_->url() + "/" + cached.path.hashPart() + ".narinfo");
  EXPECT_NE(narinfo.body.find("NarHash: " + cached.nar_hash.toString()), std::string::npos);

  // A reproducible output the cache has: nothing uploaded, the local copy stays.
  auto det = create("det", "/bin/sh", "echo same > $out");
  ASSERT_EQ(agent::buildDerivation(options(det))->status, BuildStatus::kSucceeded);
  wipeStore();
  progress.clear();
  auto o2 = options(det);
  o2.on_progress = o.on_progress;
  auto again = agent::buildDerivation(o2);
  ASSERT_TRUE(again) << again.error().message();
  ASSERT_EQ(again->status, BuildStatus::kSucceeded) << again->message;
  EXPECT_NE(progress.find("is already in the cache"), std::string::npos) << progress;
  EXPECT_EQ(progress.find("uploading '"), std::string::npos) << progress;
  EXPECT_EQ(readFile(again->outputs[0].physical_path), "same\n");
}

// Structured attributes (__structuredAttrs = true): no env, .attrs.json and .attrs.sh instead.
// The expected files are what nix-build 2.8 wrote for the same attributes (only the output paths
// differ), including its quirks: integers wrapped to 32 bits, floats with a fraction and nested
// values left out of .attrs.sh, keys that are not shell names skipped.
TEST_F(BuilderTest, StructuredAttributesArriveAsNixWritesThem) {
  const std::string out_placeholder = "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9";
  const std::string json =
      R"({"PATH":"/usr/bin:/bin","bad-key":"x","big":3000000000,"bool":true,)"
      R"("builder":"/bin/bash","deep":{"a":{"b":1}},"f":false,"float":1.5,"int":42,)"
      R"("list":["a","b c",1,true,null],"mixedList":["a",["b"]],"name":"sa","neg":-3,)"
      R"("nested":{"k-1":"v","n":1,"x":"y"},"nul":null,"outputs":["out","dev"],"prefix":")" +
      out_placeholder +
      R"(/lib","str":"it's a \"string\"\n\ttab","system":"x86_64-linux","vast":1e10})";
  auto drv = create("sa", "/bin/bash",
                    "source .attrs.sh; mkdir -p ${outputs[out]} ${outputs[dev]}; "
                    "cp .attrs.json .attrs.sh ${outputs[out]}/; env > ${outputs[out]}/env",
                    {"--env", "__json=" + json, "--outputs", "out,dev"});
  auto r = agent::buildDerivation(options(drv));
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message << r->log_tail;
  std::map<std::string, std::string> paths;
  fs::path out_dir;
  for (const auto& o : r->outputs) {
    paths[o.name] = o.info.fullPath();
    if (o.name == "out") out_dir = o.physical_path;
  }
  const std::string& out = paths["out"];
  const std::string& dev = paths["dev"];
  EXPECT_EQ(
      readFile(out_dir / ".attrs.json"),
      R"({"PATH":"/usr/bin:/bin","bad-key":"x","big":3000000000,"bool":true,)"
      R"("builder":"/bin/bash","deep":{"a":{"b":1}},"f":false,"float":1.5,"int":42,)"
      R"("list":["a","b c",1,true,null],"mixedList":["a",["b"]],"name":"sa","neg":-3,)"
      R"("nested":{"k-1":"v","n":1,"x":"y"},"nul":null,"outputs":{"dev":")" +
          dev + R"(","out":")" + out + R"("},"prefix":")" + out +
          R"(/lib","str":"it's a \"string\"\n\ttab","system":"x86_64-linux","vast":10000000000.0})");
  EXPECT_EQ(readFile(out_dir / ".attrs.sh"),
            "declare PATH='/usr/bin:/bin'\n"
            "declare big=-1294967296\n"
            "declare bool=1\n"
            "declare builder='/bin/bash'\n"
            "declare f=\n"
            "declare int=42\n"
            "declare -a list=('a' 'b c' 1 1 '' )\n"
            "declare name='sa'\n"
            "declare neg=-3\n"
            "declare -A nested=(['k-1']='v' ['n']=1 ['x']='y' )\n"
            "declare nul=''\n"
            "declare -A outputs=(['dev']='" +
                dev + "' ['out']='" + out +
                "' )\n"
                "declare prefix='" +
                out +
                "/lib'\n"
                "declare str='it'\\''s a \"string\"\n\ttab'\n"
                "declare system='x86_64-linux'\n"
                "declare vast=-2147483648\n");
  const std::string env = readFile(out_dir / "env");
  EXPECT_NE(env.find("NIX_ATTRS_JSON_FILE="), std::string::npos) << env;
  EXPECT_NE(env.find("NIX_ATTRS_SH_FILE="), std::string::npos) << env;
  EXPECT_EQ(env.find("\nout="), std::string::npos) << "the .drv's env is not passed: " << env;
  EXPECT_EQ(env.find("__json"), std::string::npos) << env;
}

TEST_F(BuilderTest, MissingBuilderFailsWithExecError) {
  auto drv = create("nobuilder", "/nonexistent/sh", "true");
  auto r = agent::buildDerivation(options(drv));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, BuildStatus::kFailed);
  EXPECT_EQ(r->exit_code, 127);
  EXPECT_NE(r->log_tail.find("executing '/nonexistent/sh': No such file or directory"),
            std::string::npos)
      << r->log_tail;
  // Any errno is named (a symlink loop: ELOOP).
  const fs::path loop = tmp_ / "loop";
  fs::create_symlink(loop, loop);
  r = agent::buildDerivation(options(create("loops", loop.string(), "true")));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_NE(
      r->log_tail.find("executing '" + loop.string() + "': Too many levels of symbolic links"),
      std::string::npos)
      << r->log_tail;
}

TEST_F(BuilderTest, NixBuiltinBuildersAreRefusedWithAClearError) {
  auto drv = create("fetched", "builtin:fetchurl", "");
  auto r = agent::buildDerivation(options(drv));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("builtin builder 'builtin:fetchurl' is not supported"),
            std::string::npos)
      << r.error().message();
}

// exportReferencesGraph in structured attributes: the closure's path infos in .attrs.json, as
// nix-build 2.8 writes them (checked byte for byte on a two-path closure).
TEST_F(BuilderTest, StructuredExportReferencesGraphListsTheClosure) {
  auto dep = create("dep", "/bin/sh", "echo dep > $out");
  auto built = agent::buildDerivation(options(dep));
  ASSERT_TRUE(built) << built.error().message();
  ASSERT_EQ(built->status, BuildStatus::kSucceeded) << built->message;
  const NarInfo& dep_info = built->outputs[0].info;
  const std::string dep_path = dep_info.fullPath();
  const std::string json =
      R"({"PATH":"/usr/bin:/bin","exportReferencesGraph":{"g":[")" + dep_path + R"("]}})";
  auto drv = create("erg", "/bin/bash", "source .attrs.sh; cp .attrs.json ${outputs[out]}",
                    {"--input-drv", dep.string(), "--env", "__json=" + json});
  auto r = agent::buildDerivation(options(drv));
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message << r->log_tail;
  auto attrs = nlohmann::json::parse(readFile(r->outputs[0].physical_path));
  const std::string size = std::to_string(dep_info.nar_size);
  EXPECT_EQ(attrs["g"].dump(), R"([{"closureSize":)" + size + R"(,"narHash":")" +
                                   dep_info.nar_hash.toString() + R"(","narSize":)" + size +
                                   R"(,"path":")" + dep_path + R"(","references":[]}])");
  EXPECT_EQ(attrs["exportReferencesGraph"]["g"][0], dep_path);  // the spec stays

  // A path inside a store path: the structured form wants store paths, as Nix.
  auto sub = create("erg-sub", "/bin/bash", "exit 0",
                    {"--input-drv", dep.string(), "--env",
                     R"(__json={"exportReferencesGraph":{"g":[")" + dep_path + R"(/x"]}})"});
  auto sub_refused = agent::buildDerivation(options(sub));
  ASSERT_FALSE(sub_refused);
  EXPECT_NE(sub_refused.error().message().find("path '" + dep_path + "/x' is not in the Nix store"),
            std::string::npos)
      << sub_refused.error().message();

  // A path outside the input closure: Nix's refusal.
  const std::string other = store_dir_ + "/" + std::string(32, '0') + "-x";
  auto bad = create("erg-bad", "/bin/bash", "exit 0",
                    {"--env", R"(__json={"exportReferencesGraph":{"g":[")" + other + R"("]}})"});
  auto refused = agent::buildDerivation(options(bad));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("because it is not in the input closure"),
            std::string::npos)
      << refused.error().message();
}

// outputChecks in structured attributes, and the classic attributes' requisites, as nix-build
// 2.8 applies them (same messages): sizes, and an output's closure with itself included in
// outputChecks but not for the classic attributes.
TEST_F(BuilderTest, OutputChecksAndRequisitesAsNixAppliesThem) {
  auto structured = [&](const std::string& name, const std::string& checks) {
    return create(name, "/bin/bash", "source .attrs.sh; echo ${outputs[out]} > ${outputs[out]}",
                  {"--env", R"(__json={"outputChecks":{"out":)" + checks + "}}"});
  };
  auto expectRefused = [&](const fs::path& drv, const std::string& message) {
    auto r = agent::buildDerivation(options(drv));
    ASSERT_TRUE(r) << r.error().message();
    EXPECT_EQ(r->status, BuildStatus::kFailed);
    EXPECT_NE(r->message.find(message), std::string::npos) << r->message;
  };
  expectRefused(structured("big", R"({"maxSize":10})"), "' is too large at ");
  expectRefused(structured("closure", R"({"maxClosureSize":10})"), "closure of path '");
  expectRefused(structured("self", R"({"allowedRequisites":[]})"),
                "' is not allowed to refer to the following paths:");
  auto fits = agent::buildDerivation(options(structured("fits", R"({"maxSize":100000})")));
  ASSERT_TRUE(fits) << fits.error().message();
  EXPECT_EQ(fits->status, BuildStatus::kSucceeded) << fits->message;
  // The classic attribute leaves the output itself out of its closure.
  auto classic =
      create("classic-self", "/bin/sh", "echo $out > $out", {"--env", "allowedRequisites="});
  auto r = agent::buildDerivation(options(classic));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, BuildStatus::kSucceeded) << r->message;
}

// Malformed structured attributes are refused before anything is built, a malformed __json with
// Nix's message.
TEST_F(BuilderTest, MalformedStructuredAttrsAreRefused) {
  for (const auto& [json, message] : std::vector<std::pair<std::string, std::string>>{
           {R"({"outputChecks":{"out":{"allowedReferences":[1]}}})",
            "attribute 'allowedReferences' of derivation must be a list of strings"},
           {R"({"outputChecks":{"out":{"maxSize":-1}}})",
            "attribute 'maxSize' of derivation must be a non-negative integer"},
           {R"({"requiredSystemFeatures":"kvm"})",
            "attribute 'requiredSystemFeatures' must be a list of strings"},
           {"{nope", "cannot process __json attribute: "},
           {"[1]", "cannot process __json attribute: it is not a JSON object"}}) {
    auto drv = create("structured", "/bin/sh", "exit 0", {"--env", "__json=" + json});
    auto r = agent::buildDerivation(options(drv));
    ASSERT_FALSE(r) << json;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(message), std::string::npos) << r.error().message();
  }
}

// Output names become environment variables and path names; a hand-made .drv may carry any.
TEST_F(BuilderTest, BadOutputNamesAndMisnamedOrForgedOutputPathsAreRefused) {
  auto drv = create("named", "/bin/sh", "mkdir $out");
  auto text = readFile(drv);
  auto edited = [&](std::string from, std::string to) {
    std::string t = text;
    auto at = t.find(from);
    EXPECT_NE(at, std::string::npos) << t;
    t.replace(at, from.size(), to);
    fs::path f = tmp_ / "edited.drv";
    writeFile(f, t);
    return f;
  };
  auto r = agent::buildDerivation(options(edited("[(\"out\",", "[(\"../x\",")));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("invalid output name '../x'"), std::string::npos)
      << r.error().message();

  r = agent::buildDerivation(options(edited("-named\",", "-other\",")));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("whose name is not 'named'"), std::string::npos)
      << r.error().message();

  // A well-named path with another hash: the build would write (and upload) another item.
  const auto at = text.find(store_dir_ + "/");
  ASSERT_NE(at, std::string::npos);
  const std::string hash = text.substr(at + store_dir_.size() + 1, 32);
  r = agent::buildDerivation(options(edited(hash, std::string(32, '0'))));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kCorruption);
  EXPECT_NE(r.error().message().find("output 'out' has path '" + store_dir_ + "/" +
                                     std::string(32, '0') + "-named' but should have"),
            std::string::npos)
      << r.error().message();
  // The agent leaves that check to the coordinator (which has every input .drv).
  auto o = options(edited(hash, std::string(32, '0')));
  o.check_output_paths = false;
  r = agent::buildDerivation(o);
  ASSERT_TRUE(r) << r.error().message();
}

TEST_F(BuilderTest, UnknownInputDerivation) {
  auto dep = create("dep", "/bin/sh", "mkdir $out");
  auto drv = create("user", "/bin/sh", "mkdir $out", {"--input-drv", dep.string()});
  fs::remove(dep);
  auto r = agent::buildDerivation(options(drv));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(r.error().message().find("unknown input derivation '" + store_dir_ + "/" +
                                     dep.filename().string() + "'"),
            std::string::npos)
      << r.error().message();
}

TEST_F(BuilderTest, InputNotInCacheIsMissingInputs) {
  auto dep = create("dep", "/bin/sh", "mkdir $out");
  auto drv = create("user", "/bin/sh", "mkdir $out", {"--input-drv", dep.string()});
  auto r = agent::buildDerivation(options(drv));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, BuildStatus::kMissingInputs);
  ASSERT_EQ(r->missing_inputs.size(), 1u);
  EXPECT_EQ(fs::path(r->missing_inputs[0]).parent_path().string(), store_dir_);
  EXPECT_NE(r->message.find(r->missing_inputs[0]), std::string::npos);
}

TEST_F(BuilderTest, UnreachableCache) {
  auto drv = create("leaf", "/bin/sh", "mkdir $out");
  auto o = options(drv);
  o.cache_url = "http://127.0.0.1:1";
  o.http_attempts = 1;
  auto r = agent::buildDerivation(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable) << r.error().message();
  EXPECT_NE(r.error().message().find("127.0.0.1:1"), std::string::npos) << r.error().message();
  // Says what happened (httplib's own name for it is just "Connection").
  EXPECT_NE(r.error().message().find("cannot connect"), std::string::npos) << r.error().message();
}

TEST_F(BuilderTest, UntrustedSignatureOnInput) {
  auto dep = create("dep", "/bin/sh", "mkdir $out; echo x > $out/x");
  ASSERT_TRUE(agent::buildDerivation(options(dep)));
  auto drv = create("user", "/bin/sh", "mkdir $out", {"--input-drv", dep.string()});
  wipeStore();
  auto o = options(drv);
  auto other = SecretKey::generate("someone-else-1");
  o.trusted_keys = {other->publicKey()};
  auto r = agent::buildDerivation(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(r.error().message().find("lacks a valid signature by a trusted key"), std::string::npos)
      << r.error().message();
}

TEST_F(BuilderTest, CorruptedInputNar) {
  auto dep = create("dep", "/bin/sh", "mkdir $out; seq 1 20000 > $out/numbers");
  auto built = agent::buildDerivation(options(dep));
  ASSERT_TRUE(built && built->status == BuildStatus::kSucceeded);
  // Replace the nar file in the cache by a valid zstd stream of another NAR of the same size.
  const std::string file_name = fs::path(built->outputs[0].info.url).filename().string();
  fs::path stored;
  for (const auto& e : fs::recursive_directory_iterator(tmp_ / "server")) {
    if (e.path().filename() == file_name) stored = e.path();
  }
  ASSERT_FALSE(stored.empty());
  const std::string other = (tmp_ / "other").string();
  auto forged = sh("mkdir " + other + " && seq 1 20000 | tr 0123456789 1234567890 > " + other +
                   "/numbers && " + NARCACHE_BIN + " nar dump " + other + " | " + NARCACHE_BIN +
                   " compress --method zstd > " + stored.string());
  ASSERT_EQ(forged.exit_code, 0) << forged.err;

  auto drv = create("user", "/bin/sh", "mkdir $out", {"--input-drv", dep.string()});
  wipeStore();
  auto r = agent::buildDerivation(options(drv));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kCorruption);
  EXPECT_NE(r.error().message().find("NAR hash mismatch"), std::string::npos)
      << r.error().message();
  // Nothing half-restored is left in the store.
  EXPECT_FALSE(fs::exists(built->outputs[0].info.fullPath()));
  for (const auto& e : fs::directory_iterator(store_dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".narcache-sub-"), std::string::npos);
  }
}

// The builder's store dir holds exactly its input closure and its outputs; an unrelated path in
// the physical store is neither listed nor readable; outputs land in the physical store.
TEST_F(BuilderTest, StoreIsolationShowsOnlyInputsAndOutputs) {
  auto dep = create("dep", "/bin/sh", "mkdir $out; echo dep > $out/x");
  auto built = agent::buildDerivation(options(dep));
  ASSERT_TRUE(built && built->status == BuildStatus::kSucceeded);
  if (!built->store_isolated) {
    GTEST_SKIP() << "no store isolation here (needs root and mount namespaces)";
  }
  const std::string dep_out = built->outputs[0].info.fullPath();
  const std::string unrelated = store_dir_ + "/00000000000000000000000000000000-unrelated";
  fs::create_directories(unrelated);
  writeFile(fs::path(unrelated) / "secret", "secret\n");
  auto drv =
      create("user", "/bin/sh",
             "mkdir $out; ls $NIX_STORE > $out/listing; cat " + dep_out + "/x > $out/dep; if cat " +
                 unrelated + "/secret; then echo readable > $out/leak; fi; echo w > " + dep_out +
                 "/y || echo ro > $out/ro",
             {"--input-drv", dep.string()});
  auto r = agent::buildDerivation(options(drv));
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message << r->log_tail;
  EXPECT_TRUE(r->store_isolated);
  const fs::path out = r->outputs[0].physical_path;
  std::set<std::string> listed;
  std::istringstream lines(readFile(out / "listing"));
  for (std::string line; std::getline(lines, line);) listed.insert(line);
  EXPECT_EQ(listed, (std::set<std::string>{fs::path(dep_out).filename().string(),
                                           out.filename().string()}));
  EXPECT_EQ(readFile(out / "dep"), "dep\n");
  EXPECT_FALSE(fs::exists(out / "leak"));
  EXPECT_EQ(readFile(out / "ro"), "ro\n");  // inputs are read-only
  EXPECT_FALSE(fs::exists(fs::path(dep_out) / "y"));
  // Nothing of the view is left in the store.
  for (const auto& e : fs::directory_iterator(store_dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".narcache-view-"), std::string::npos);
  }
}

// Processes a builder leaves behind in a session of their own (setsid: out of its process group,
// which is what a build's end kills) go with the build too, in its PID namespace (isolated
// builds only).
TEST_F(BuilderTest, ProcessesThatLeaveTheSessionDoNotOutliveTheBuild) {
  const std::string marker = "31337.5";  // a sleep argument nothing else uses
  // The builder exits only once its daemon has its own session (it wrote the flag after setsid).
  auto drv = create("daemonizes", "/bin/sh",
                    "setsid sh -c 'echo > flag; exec sleep " + marker +
                        "' </dev/null >/dev/null 2>&1 & "
                        "while [ ! -e flag ]; do sleep 0.01; done; mkdir $out");
  auto r = agent::buildDerivation(options(drv));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, BuildStatus::kSucceeded) << r->message;
  const int left = sleepersLeft(marker);
  if (!r->store_isolated) GTEST_SKIP() << "no store isolation here (needs root and namespaces)";
  EXPECT_EQ(left, 0);
}

// The builder itself may leave the process group and session that a timeout kills; as the init
// of its PID namespace it still dies with the process that started it.
TEST_F(BuilderTest, ABuilderThatLeavesTheSessionDiesAtTheTimeout) {
  const std::string marker = "31338.5";
  auto drv = create("hangs", "/bin/sh", "exec setsid sleep " + marker);
  auto o = options(drv);
  o.timeout_seconds = 1;
  auto r = agent::buildDerivation(o);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->status, BuildStatus::kTimedOut) << r->message;
  const int left = sleepersLeft(marker);
  if (!r->store_isolated) GTEST_SKIP() << "no store isolation here (needs root and namespaces)";
  EXPECT_EQ(left, 0);
}

// Nix starts the builder with every signal at its default action; an agent run by systemd
// (IgnoreSIGPIPE=yes) ignores SIGPIPE, which the builder must not inherit.
TEST_F(BuilderTest, TheBuilderStartsWithDefaultSignalActionsAndNoneBlocked) {
  auto drv = create("signals", "/bin/sh",
                    "grep -E '^Sig(Ign|Blk):' /proc/self/status > $out; yes | head -1 >> $out");
  struct sigaction old_pipe {};
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &old_pipe);
  sigset_t block;
  sigset_t old_mask;
  ::sigemptyset(&block);
  ::sigaddset(&block, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &block, &old_mask);
  auto r = agent::buildDerivation(options(drv));
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message << r->log_tail;
  const std::string out =
      readFile(store_dir_ + "/" + fs::path(r->outputs[0].info.fullPath()).filename().string());
  // The standard signals (1-31); glibc keeps 32 and 33 to itself, whoever ignored them.
  auto mask = [&](const std::string& field) {
    auto at = out.find(field + ":\t");
    EXPECT_NE(at, std::string::npos) << out;
    return at == std::string::npos
               ? ~0ULL
               : std::stoull(out.substr(at + field.size() + 2, 16), nullptr, 16) & 0x7fffffffULL;
  };
  EXPECT_EQ(mask("SigIgn"), 0u) << out;
  EXPECT_EQ(mask("SigBlk"), 0u) << out;
  EXPECT_TRUE(out.ends_with("\ny\n")) << out;
  EXPECT_EQ(r->log_tail, "");  // no "yes: standard output: Broken pipe"
}

// With build users the builder cannot read what the engine's user can (an agent's upload token,
// its secret), writes its outputs and build dir as its own uid, and the outputs become the
// engine's, read-only, once valid.
TEST_F(BuilderTest, BuildUsersCannotReadTheAgentsSecretsAndTheirOutputsAreTakenOver) {
  if (::geteuid() != 0) GTEST_SKIP() << "build users need root";
  const fs::path secret = tmp_ / "secret";
  writeFile(secret, "upload-token");
  ::chmod(secret.c_str(), 0600);
  // tmp_ itself must be traversable for the probe to mean something.
  ::chmod(tmp_.path().c_str(), 0755);
  auto drv =
      create("asuser", "/bin/sh",
             "mkdir $out; id -u > $out/uid; id -G > $out/groups; "
             "if cat " +
                 secret.string() +
                 " >/dev/null 2>&1; then echo read; "
                 "else echo denied; fi > $out/secret; echo x > $TMPDIR/t && echo ok > $out/tmp");
  auto o = options(drv);
  o.build_uids = {{40100, 40109}};
  auto r = agent::buildDerivation(o);
  ASSERT_TRUE(r) << r.error().message();
  if (!r->store_isolated) GTEST_SKIP() << "no store isolation here";
  ASSERT_EQ(r->status, BuildStatus::kSucceeded) << r->message << r->log_tail;
  const fs::path out = store_dir_ + "/" + r->outputs[0].info.path.baseName();
  EXPECT_EQ(readFile(out / "uid"), "40100\n");
  EXPECT_EQ(readFile(out / "groups"), "40100\n");
  EXPECT_EQ(readFile(out / "secret"), "denied\n");
  EXPECT_EQ(readFile(out / "tmp"), "ok\n");
  for (const fs::path& p : {out, out / "uid"}) {
    struct stat st {};
    ASSERT_EQ(::lstat(p.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u) << p;
    EXPECT_EQ(st.st_gid, 0u) << p;
  }
}

TEST_F(BuilderTest, LastLines) {
  EXPECT_EQ(agent::lastLines("a\nb\nc\n", 2), "b\nc");
  EXPECT_EQ(agent::lastLines("a\nb\nc", 5), "a\nb\nc");
  EXPECT_EQ(agent::lastLines("", 3), "");
}

}  // namespace
}  // namespace narcache::test
