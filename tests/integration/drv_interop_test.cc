// Derivations judged by the real Nix 2.8: `nix-instantiate` writes .drv files into a chroot
// store (for /nix/store, /gnu/store and a temporary store dir); for each of them narcache must
// reproduce the bytes (parse + write), the .drv's store path, the output paths, the JSON of
// `nix show-derivation` (`narcache drv show`), and, from the same attributes, the very same .drv
// (`narcache drv create`).
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "narcache/narinfo/derivation.h"
#include "support/support.h"

namespace narcache::test {
namespace {

namespace fs = std::filesystem;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Input-addressed, explicit `outputs = ["out"]`, several outputs (also with a non-"out" first
// one), fixed outputs (recursive SRI sha256, flat base16 sha256, flat nix32 sha1, recursive SRI
// md5), input derivations (several outputs, fixed-output ones) and input sources (toFile and a
// path).
constexpr const char* kExpr = R"nix(
let sys = "x86_64-linux"; in rec {
  plain = derivation { name = "plain"; builder = "/bin/sh"; system = sys;
    args = [ "-c" "echo \"q\" \\ \n\t\r done" "" ]; FOO = "multi\nline"; utf = "d\xc3\xa9j\xc3\xa0"; };
  explicitOut = derivation { name = "explicit-out"; builder = "/bin/sh"; system = sys;
    outputs = [ "out" ]; };
  multi = derivation { name = "multi"; builder = "/bin/sh"; system = sys;
    outputs = [ "out" "dev" "lib" ]; dep = plain; };
  devFirst = derivation { name = "dev-first"; builder = "/bin/sh"; system = sys;
    outputs = [ "dev" "out" ]; };
  fixedRec = derivation { name = "fixed-rec"; builder = "/bin/sh"; system = sys;
    outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    outputHashMode = "recursive"; };
  fixedFlat = derivation { name = "fixed-flat"; builder = "/bin/sh"; system = sys;
    outputHashAlgo = "sha256";
    outputHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; };
  fixedSha1 = derivation { name = "fixed-sha1"; builder = "/bin/sh"; system = sys;
    outputHashAlgo = "sha1"; outputHash = "143xibwh31h9bvxzalr0sjvbbvpa6ffs"; };
  fixedMd5 = derivation { name = "fixed-md5"; builder = "/bin/sh"; system = sys;
    outputHashMode = "recursive"; outputHash = "md5-1B2M2Y8AsgTpgAmY7PhCfg=="; };
  withInputs = derivation { name = "with-inputs"; builder = "/bin/sh"; system = sys;
    x = "${multi.dev} ${multi.lib} ${fixedRec} ${fixedFlat} ${fixedSha1} ${devFirst}";
    src = builtins.toFile "src.txt" "hello"; p = ./data.txt; };
  top = derivation { name = "top"; builder = "/bin/sh"; system = sys; args = [ "${withInputs}" ];
    deps = "${plain} ${multi}"; };
}
)nix";

const std::vector<std::string> kAttrs = {"plain",      "explicitOut", "multi",     "devFirst",
                                         "fixedRec",   "fixedFlat",   "fixedSha1", "fixedMd5",
                                         "withInputs", "top"};

struct StoreCase {
  std::string label;
  std::string store_dir;  // empty: a temporary directory
};

class DrvInterop : public ::testing::TestWithParam<StoreCase> {
 protected:
  void SetUp() override {
    if (!haveNix()) GTEST_SKIP() << "nix-bin is not installed (scripts/setup.sh installs it)";
    store_dir_ = GetParam().store_dir.empty() ? (tmp_ / "st").string() : GetParam().store_dir;
    root_ = tmp_ / "root";
    // Nix keeps the files of a `local?root=R&store=D` store in R/nix/store whatever D is.
    store_uri_ = store_dir_ == "/nix/store"
                     ? root_.string()
                     : "local?root=" + root_.string() + "&store=" + store_dir_;
    writeFile(tmp_ / "x.nix", kExpr);
    writeFile(tmp_ / "data.txt", "a path input\n");
  }

  fs::path physical(const std::string& store_path) const {
    return root_ / "nix" / "store" / fs::path(store_path).filename();
  }

  std::string instantiate(const std::string& attr) {
    auto r =
        nix_.run({"nix-instantiate", "--store", store_uri_, (tmp_ / "x.nix").string(), "-A", attr});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    // For a derivation whose first output is not "out", Nix prints "<drv>!<output>".
    std::string path = trim(r.out);
    return path.substr(0, path.find('!'));
  }

  TempDir tmp_;
  NixEnv nix_;
  std::string store_dir_;
  fs::path root_;
  std::string store_uri_;
};

// The `narcache drv create` arguments for the attributes that produced `drv`.
std::vector<std::string> createArgs(const Derivation& drv, const std::string& store_dir,
                                    const std::function<fs::path(const std::string&)>& physical) {
  std::vector<std::string> args = {"drv",         "create",    "--name",   drv.env.at("name"),
                                   "--builder",   drv.builder, "--system", drv.platform,
                                   "--store-dir", store_dir};
  for (const auto& a : drv.args) {
    args.push_back("--arg");  // two tokens: CLI11 reads "--arg=" as a missing value
    args.push_back(a);
  }
  for (const auto& [key, value] : drv.env) {
    if (key == "name" || key == "builder" || key == "system" || key == "outputs" ||
        drv.outputs.count(key)) {
      continue;
    }
    args.push_back("--env");
    args.push_back(key + "=" + value);
  }
  if (auto it = drv.env.find("outputs"); it != drv.env.end()) {
    std::string list = it->second;
    for (auto& c : list) c = c == ' ' ? ',' : c;
    args.push_back("--outputs=" + list);
  }
  for (const auto& [path, outputs] : drv.input_drvs) {
    std::string spec = physical(path).string() + "!";
    bool first = true;
    for (const auto& o : outputs) {
      spec += (first ? "" : ",") + o;
      first = false;
    }
    args.push_back("--input-drv=" + spec);
  }
  for (const auto& src : drv.input_srcs) args.push_back("--input-src=" + src);
  return args;
}

TEST_P(DrvInterop, NarcacheAgreesWithNixInstantiate) {
  for (const auto& attr : kAttrs) {
    SCOPED_TRACE(attr);
    const std::string drv_path = instantiate(attr);
    ASSERT_TRUE(drv_path.starts_with(store_dir_ + "/")) << drv_path;
    const fs::path file = physical(drv_path);
    const std::string text = readFile(file);
    const std::string name = fs::path(drv_path).stem().string().substr(33);

    // Parse + write is byte-identical; the .drv path and the output paths are Nix's.
    auto drv = parseDerivation(text, name);
    ASSERT_TRUE(drv) << drv.error().message();
    EXPECT_EQ(writeDerivation(*drv), text);
    EXPECT_EQ(derivationStorePath(*drv, store_dir_).value_or("?"), drv_path);
    DrvHashMemo memo;
    DerivationLoader load = [&](const std::string& p) -> Result<Derivation> {
      return parseDerivation(readFile(physical(p)), fs::path(p).stem().string().substr(33));
    };
    auto check = checkOutputPaths(*drv, store_dir_, load, &memo);
    EXPECT_TRUE(check) << check.error().message();
    auto out_path = nix_.run({"nix", "eval", "--store", store_uri_, "--raw", "-f",
                              (tmp_ / "x.nix").string(), attr + ".outPath"});
    ASSERT_EQ(out_path.exit_code, 0) << out_path.err;
    const std::string first_output =
        drv->env.count("outputs")
            ? drv->env.at("outputs").substr(0, drv->env.at("outputs").find(' '))
            : "out";
    EXPECT_EQ(out_path.out, drv->outputs.at(first_output).path);

    // drv show == nix show-derivation (as JSON values).
    auto ours = narcache({"drv", "show", file.string()});
    ASSERT_EQ(ours.exit_code, 0) << ours.err;
    auto theirs = nix_.run({"nix", "show-derivation", "--store", store_uri_, drv_path});
    ASSERT_EQ(theirs.exit_code, 0) << theirs.err;
    EXPECT_EQ(nlohmann::json::parse(ours.out), nlohmann::json::parse(theirs.out));

    // drv create from the same attributes writes the same bytes and prints the same path.
    auto args = createArgs(*drv, store_dir_, [&](const std::string& p) { return physical(p); });
    const fs::path created = tmp_ / (attr + ".drv");
    args.push_back("--output=" + created.string());
    auto made = narcache(args);
    ASSERT_EQ(made.exit_code, 0) << made.err;
    EXPECT_EQ(trim(made.out), drv_path);
    EXPECT_EQ(readFile(created), text);
  }
}

INSTANTIATE_TEST_SUITE_P(StoreDirs, DrvInterop,
                         ::testing::Values(StoreCase{"nix", "/nix/store"},
                                           StoreCase{"gnu", "/gnu/store"}, StoreCase{"tmp", ""}),
                         [](const auto& param_info) { return param_info.param.label; });

TEST(DrvCli, CreateAndShowErrors) {
  TempDir tmp;
  writeFile(tmp / "bad.drv", "Derive([(\"out\"");
  auto bad = narcache({"drv", "show", (tmp / "bad.drv").string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_EQ(bad.err, "narcache: " + (tmp / "bad.drv").string() +
                         ": derivation: offset 14: expected ',' but found end of input\n");

  auto dup = narcache({"drv", "create", "--name", "x", "--builder", "/bin/sh", "--system", "s",
                       "--outputs", "out,out", "--output", (tmp / "x.drv").string()});
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_EQ(dup.err, "narcache: duplicate derivation output 'out'\n");
  EXPECT_FALSE(fs::exists(tmp / "x.drv"));

  auto env = narcache({"drv", "create", "--name", "x", "--builder", "/bin/sh", "--system", "s",
                       "--env", "novalue", "--output", (tmp / "x.drv").string()});
  EXPECT_EQ(env.exit_code, 1);
  EXPECT_EQ(env.err, "narcache: --env 'novalue': expected KEY=VALUE\n");

  // A Guix-style store dir, checked against the rules by hand: output paths lie in the store
  // dir, the env carries them, and the .drv's own path is stable and in that dir.
  auto gnu = narcache({"drv", "create", "--name", "hello", "--builder", "/bin/sh", "--system",
                       "x86_64-linux", "--outputs", "out,doc", "--store-dir", "/gnu/store",
                       "--output", (tmp / "hello.drv").string()});
  ASSERT_EQ(gnu.exit_code, 0) << gnu.err;
  auto drv = parseDerivation(readFile(tmp / "hello.drv"));
  ASSERT_TRUE(drv);
  EXPECT_TRUE(drv->outputs.at("doc").path.starts_with("/gnu/store/"));
  EXPECT_TRUE(drv->outputs.at("doc").path.ends_with("-hello-doc"));
  EXPECT_EQ(drv->env.at("doc"), drv->outputs.at("doc").path);
  EXPECT_EQ(drv->env.at("outputs"), "out doc");
  EXPECT_EQ(trim(gnu.out), derivationStorePath(*drv, "/gnu/store").value());
  auto shown = narcache({"drv", "show", (tmp / "hello.drv").string()});
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_TRUE(nlohmann::json::parse(shown.out).contains(trim(gnu.out)));
}

}  // namespace
}  // namespace narcache::test
