// Tests of the .drv format and derivation output paths. The golden files in tests/data/drv/
// were written by the real Nix 2.8 (`nix-instantiate --store S`, and for gnu/ with
// `--store 'local?root=S&store=/gnu/store'`); each is named by its own store path base name.
#include "narcache/narinfo/derivation.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "narcache/narinfo/encoding.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narinfo/store_path.h"
#include "support/support.h"

namespace narcache {
namespace {

namespace fs = std::filesystem;

const fs::path kDrvData = fs::path(NARCACHE_TEST_DATA) / "drv";

// "<hash>-<name>.drv" -> "<name>".
std::string drvNameOf(const std::string& base) {
  return base.substr(kStorePathHashLength + 1, base.size() - kStorePathHashLength - 1 - 4);
}

// Loads input derivations from a directory of golden files.
DerivationLoader dirLoader(const fs::path& dir) {
  return [dir](const std::string& drv_path) -> Result<Derivation> {
    const std::string base = fs::path(drv_path).filename().string();
    if (!fs::exists(dir / base)) return fail(ErrorCode::kNotFound, "no " + base);
    return parseDerivation(test::readFile(dir / base), drvNameOf(base));
  };
}

struct Golden {
  std::string sub;  // "nix" or "gnu"
  std::string store_dir;
};

class GoldenDrv : public ::testing::TestWithParam<Golden> {};

TEST_P(GoldenDrv, RoundTripPathsAndOutputs) {
  const fs::path dir = kDrvData / GetParam().sub;
  const std::string store_dir = GetParam().store_dir;
  int count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string base = entry.path().filename().string();
    SCOPED_TRACE(base);
    const std::string text = test::readFile(entry.path());
    auto drv = parseDerivation(text, drvNameOf(base));
    ASSERT_TRUE(drv) << drv.error().message();
    EXPECT_EQ(writeDerivation(*drv), text);
    auto path = derivationStorePath(*drv, store_dir);
    ASSERT_TRUE(path) << path.error().message();
    EXPECT_EQ(*path, store_dir + "/" + base);
    DrvHashMemo memo;
    auto check = checkOutputPaths(*drv, store_dir, dirLoader(dir), &memo);
    EXPECT_TRUE(check) << check.error().message();
    ++count;
  }
  EXPECT_GE(count, 3);
}

INSTANTIATE_TEST_SUITE_P(Stores, GoldenDrv,
                         ::testing::Values(Golden{"nix", "/nix/store"},
                                           Golden{"gnu", "/gnu/store"}),
                         [](const auto& param_info) { return param_info.param.sub; });

TEST(Derivation, ParsesFieldsAndEscapes) {
  const std::string text =
      test::readFile(kDrvData / "nix" / "kikhypld3ah0p5dcdrhadmms68p22qjb-a.drv");
  auto drv = parseDerivation(text);
  ASSERT_TRUE(drv) << drv.error().message();
  EXPECT_EQ(drv->name, "a");  // from env
  ASSERT_EQ(drv->outputs.size(), 1u);
  EXPECT_EQ(drv->outputs.at("out").path, "/nix/store/3ya42i831s59hh3w0ay0awi9j6jhs1y9-a");
  EXPECT_EQ(drv->platform, "x86_64-linux");
  EXPECT_EQ(drv->builder, "/bin/sh");
  EXPECT_EQ(drv->args, (std::vector<std::string>{"-c", "echo \"hi\\there\"\n\ttab\r"}));
  EXPECT_EQ(drv->env.at("FOO"), "bar\nbaz");
  EXPECT_FALSE(drv->isFixedOutput());
}

TEST(Derivation, WritesEveryEscapeAndRawBytes) {
  Derivation drv;
  drv.outputs["out"] = {"/s/x-a", "", ""};
  drv.platform = "sys";
  drv.builder = "b";
  drv.args = {"\"\\\n\r\t", "\x01\x7f\xc3\xa9", ""};
  drv.env["k"] = "v";
  const std::string text = writeDerivation(drv);
  EXPECT_EQ(text,
            "Derive([(\"out\",\"/s/x-a\",\"\",\"\")],[],[],\"sys\",\"b\",[\"\\\"\\\\\\n\\r\\t\","
            "\"\x01\x7f\xc3\xa9\",\"\"],[(\"k\",\"v\")])");
  auto again = parseDerivation(text);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->args, drv.args);
  EXPECT_EQ(writeDerivation(*again), text);
}

struct BadCase {
  std::string text;
  std::string error;
};

TEST(Derivation, MalformedInputsGiveExactErrors) {
  const std::string ok_tail = R"(,[],[],"s","b",[],[]))";
  const std::vector<BadCase> cases = {
      {"", "derivation: offset 0: expected 'D' but found end of input"},
      {"Derive[", "derivation: offset 6: expected '(' but found '['"},
      {"Derive([]", "derivation: offset 9: expected ',' but found end of input"},
      {R"(Derive([("out","/p","",""])" + ok_tail,
       "derivation: offset 25: expected ')' but found ']'"},
      {R"(Derive([("out","rel","","")])" + ok_tail,
       "derivation: offset 15: expected an absolute store path but found \"rel\""},
      {R"(Derive([("","/p","","")])" + ok_tail,
       "derivation: offset 10: expected a non-empty output name but found '\"'"},
      {R"(Derive([("out","/p","","") ])" + ok_tail,
       "derivation: offset 26: expected ',' or ']' but found ' '"},
      {R"(Derive([("out","/p","",""),("dev","/q","","")])" + ok_tail,
       "derivation: offset 27: output \"dev\" is out of order or repeated (entries must be sorted "
       "and unique)"},
      {R"(Derive([],[],["/b","/a"],"s","b",[],[]))",
       "derivation: offset 19: input source \"/a\" is out of order or repeated (entries must be "
       "sorted and unique)"},
      {R"(Derive([],[("/a.drv",["out","out"])],[],"s","b",[],[]))",
       "derivation: offset 28: output name \"out\" is out of order or repeated (entries must be "
       "sorted and unique)"},
      {R"(Derive([],[],[],"s","b",[],[("b","1"),("a","2")]))",
       "derivation: offset 38: environment variable \"a\" is out of order or repeated (entries "
       "must be sorted and unique)"},
      {R"(Derive([],[],[],"s\x","b",[],[]))",
       "derivation: offset 19: expected one of \" \\ n r t after '\\' but found 'x'"},
      {"Derive([],[],[],\"s\nx\",\"b\",[],[])",
       "derivation: offset 18: expected an escape (\\n, \\r, \\t) instead of a raw control "
       "character but found byte 0x0a"},
      {R"(Derive([],[],[],"s","b",[],[]))"
       "\n",
       "derivation: offset 30: expected end of input but found byte 0x0a"},
      {R"(Derive([],[],[],"unterminated)",
       "derivation: offset 29: expected '\"' but found end of input"},
      {R"(Derive([],[],[],"s","b",[],[])trailing)",
       "derivation: offset 30: expected end of input but found 't'"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    auto drv = parseDerivation(c.text);
    ASSERT_FALSE(drv);
    EXPECT_EQ(drv.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(drv.error().message(), c.error);
  }
}

TEST(Derivation, FixedOutputModuloHashIsTheFixedString) {
  const fs::path dir = kDrvData / "nix";
  for (const std::string base :
       {"kz8r4n8jyzx1j9lfjdgk3mc68g6mv9w2-f.drv", "gxx0lmadvji0k8wzwjvfr1bmr1nphg35-ff.drv"}) {
    SCOPED_TRACE(base);
    auto drv = parseDerivation(test::readFile(dir / base), drvNameOf(base));
    ASSERT_TRUE(drv) << drv.error().message();
    ASSERT_TRUE(drv->isFixedOutput());
    const auto& out = drv->outputs.at("out");
    auto h = hashDerivationModulo(*drv, "/nix/store", nullptr, false);
    ASSERT_TRUE(h) << h.error().message();
    // The path Nix wrote, spliced into the documented formula.
    EXPECT_EQ(*h, hashString(HashAlgo::kSha256,
                             "fixed:out:" + out.hash_algo + ":" + out.hash + ":" + out.path));
    // Masking does not change a fixed-output hash (the path is recomputed from the hash).
    auto masked = hashDerivationModulo(*drv, "/nix/store", nullptr, true);
    ASSERT_TRUE(masked);
    EXPECT_EQ(*masked, *h);
  }
}

TEST(Derivation, FixedOutputPathRules) {
  const std::string empty_sha256 =
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  // Values from the golden files (Nix 2.8): recursive sha256 is a "source" path, flat is not.
  EXPECT_EQ(makeFixedOutputPath("r:sha256", empty_sha256, "f", "/nix/store").value(),
            "/nix/store/f66gffbbljx7hpk8xw2f4ylk355g52as-f");
  EXPECT_EQ(makeFixedOutputPath("sha256", empty_sha256, "ff", "/nix/store").value(),
            "/nix/store/03nsxs7k6gppa12846gia95y9r8gdjh6-ff");
  EXPECT_EQ(makeFixedOutputPath("r:sha256", empty_sha256, "f", "/gnu/store").value(),
            "/gnu/store/ri01w4pdc9zb3wsfm1444rmywga1vl4s-f");
  EXPECT_FALSE(makeFixedOutputPath("sha256", "abc", "f", "/nix/store"));
  EXPECT_FALSE(makeFixedOutputPath("blake9", empty_sha256, "f", "/nix/store"));
  EXPECT_FALSE(makeFixedOutputPath("sha256", empty_sha256, "bad/name", "/nix/store"));
}

// Nix parses the hash of a fixed output in a .drv (base16 in either case, nix32 or base64) and
// hashes its lowercase base16 form, so every spelling gives the same paths. The path of t was
// computed by Nix 2.8: each ff variant and a t.drv naming it as input were written with
// builtins.toFile (`nix-instantiate --eval --read-write-mode --store R`), and registering t.drv
// failed with "derivation ... has incorrect output ..., should be '/nix/store/768bqan1...-t'",
// the same for all four variants.
TEST(Derivation, FixedOutputHashIsReadAsNixReadsIt) {
  const std::string lower = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  const std::string text =
      test::readFile(kDrvData / "nix" / "gxx0lmadvji0k8wzwjvfr1bmr1nphg35-ff.drv");
  const Hash lower_modulo =
      hashDerivationModulo(*parseDerivation(text, "ff"), "/nix/store", nullptr, false).value();
  for (const std::string& hash : {
           lower,
           std::string("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"),
           std::string("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"),
           std::string("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
       }) {
    SCOPED_TRACE(hash);
    EXPECT_EQ(makeFixedOutputPath("sha256", hash, "ff", "/nix/store").value(),
              "/nix/store/03nsxs7k6gppa12846gia95y9r8gdjh6-ff");
    std::string variant = text;
    const std::string field = "\"sha256\",\"" + lower + "\"";
    variant.replace(variant.find(field), field.size(), "\"sha256\",\"" + hash + "\"");
    auto ff = parseDerivation(variant, "ff");
    ASSERT_TRUE(ff) << ff.error().message();
    auto check = checkOutputPaths(*ff, "/nix/store", nullptr);
    EXPECT_TRUE(check) << check.error().message();
    auto modulo = hashDerivationModulo(*ff, "/nix/store", nullptr, false);
    ASSERT_TRUE(modulo) << modulo.error().message();
    EXPECT_EQ(*modulo, lower_modulo);

    const std::string ff_path = derivationStorePath(*ff, "/nix/store").value();
    Derivation t;
    t.name = "t";
    t.outputs["out"] = {};
    t.input_drvs[ff_path] = {"out"};
    t.platform = "x86_64-linux";
    t.builder = "/bin/sh";
    t.env["name"] = "t";
    const DerivationLoader load = [&](const std::string& path) -> Result<Derivation> {
      if (path != ff_path) return fail(ErrorCode::kNotFound, "no " + path);
      return *ff;
    };
    auto computed = computeOutputPaths(t, "/nix/store", load);
    ASSERT_TRUE(computed) << computed.error().message();
    EXPECT_EQ(t.outputs.at("out").path, "/nix/store/768bqan1sskp3xacfqpjzf2n2x5sma96-t");
  }
  // What Nix refuses there: a prefixed or SRI hash, a wrong length.
  EXPECT_FALSE(makeFixedOutputPath("sha256", "sha256:" + lower, "ff", "/nix/store"));
  EXPECT_FALSE(makeFixedOutputPath(
      "sha256", "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "ff", "/nix/store"));
  EXPECT_FALSE(makeFixedOutputPath("sha256", lower.substr(2), "ff", "/nix/store"));
}

// Two input derivations with one modulo hash: a1 and a2 differ only in their fixed-output input
// (src1 and src2 have different builders but the same output), so Nix replaces both by a single
// entry under that hash with their output names merged ({dev, out} here). The golden paths are
// what nix-instantiate (Nix 2.8) gives for this expression, as DerivationInterop checks below.
constexpr const char* kSameModuloExpr = R"nix(
let
  sys = "x86_64-linux";
  src1 = derivation { name = "src"; builder = "/bin/sh"; system = sys;
    outputHashMode = "recursive"; outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; };
  src2 = derivation { name = "src"; builder = "/bin/bash"; system = sys;
    outputHashMode = "recursive"; outputHash = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="; };
  mk = src: derivation { name = "a"; builder = "/bin/sh"; system = sys;
    outputs = [ "out" "dev" ]; inherit src; };
  a1 = mk src1;
  a2 = mk src2;
in {
  inherit src1 src2 a1 a2;
  top = derivation { name = "top"; builder = "/bin/sh"; system = sys;
    x = "${a1.out} ${a2.dev}"; };
}
)nix";

// Derivations made with makeDerivation, by .drv path; loader() loads from them.
struct DrvSet {
  std::map<std::string, Derivation> by_path;

  DerivationLoader loader() const {
    return [this](const std::string& path) -> Result<Derivation> {
      auto it = by_path.find(path);
      if (it == by_path.end()) return fail(ErrorCode::kNotFound, "no " + path);
      return it->second;
    };
  }
  // Makes the derivation of `attrs`, keeps it and returns its .drv path ("" on error).
  std::string add(const DerivationAttrs& attrs) {
    auto drv = makeDerivation(attrs, "/nix/store", loader());
    EXPECT_TRUE(drv) << drv.error().message();
    if (!drv) return "";
    const std::string path = derivationStorePath(*drv, "/nix/store").value();
    by_path.emplace(path, std::move(*drv));
    return path;
  }
  std::string output(const std::string& drv_path, const std::string& name) const {
    return by_path.at(drv_path).outputs.at(name).path;
  }
};

// The attributes of kSameModuloExpr; returns the .drv paths by attribute name.
std::map<std::string, std::string> makeSameModulo(DrvSet& set) {
  std::map<std::string, std::string> paths;
  DerivationAttrs src;
  src.name = "src";
  src.builder = "/bin/sh";
  src.system = "x86_64-linux";
  src.env["outputHashMode"] = "recursive";
  src.env["outputHash"] = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
  paths["src1"] = set.add(src);
  src.builder = "/bin/bash";
  paths["src2"] = set.add(src);
  for (const std::string n : {"1", "2"}) {
    DerivationAttrs a;
    a.name = "a";
    a.builder = "/bin/sh";
    a.system = "x86_64-linux";
    a.outputs = {"out", "dev"};
    a.outputs_given = true;
    a.env["src"] = set.output(paths["src" + n], "out");
    a.input_drvs[paths["src" + n]] = {"out"};
    paths["a" + n] = set.add(a);
  }
  DerivationAttrs top;
  top.name = "top";
  top.builder = "/bin/sh";
  top.system = "x86_64-linux";
  top.env["x"] = set.output(paths["a1"], "out") + " " + set.output(paths["a2"], "dev");
  top.input_drvs[paths["a1"]] = {"out"};
  top.input_drvs[paths["a2"]] = {"dev"};
  paths["top"] = set.add(top);
  return paths;
}

TEST(Derivation, InputsWithOneModuloHashMergeTheirOutputs) {
  DrvSet set;
  const auto paths = makeSameModulo(set);
  EXPECT_EQ(paths.at("src1"), "/nix/store/a62828qpbnxqiil44gn440zaylhaj65f-src.drv");
  EXPECT_EQ(paths.at("src2"), "/nix/store/b1grwafkgh5i0ksbnn2ysq71vcf7rj5k-src.drv");
  EXPECT_EQ(paths.at("a1"), "/nix/store/y59x1z82fskkhwhnjzkzf7r31rnnavdf-a.drv");
  EXPECT_EQ(paths.at("a2"), "/nix/store/hc0bksz2nva3dn8mhpslhl85dszn2qmd-a.drv");
  // Same modulo hash, so the same output paths.
  EXPECT_EQ(set.output(paths.at("a1"), "dev"), "/nix/store/6sskv9yrcbzbhvjz7bprdjfrbxsvsbnx-a-dev");
  EXPECT_EQ(set.output(paths.at("a2"), "dev"), "/nix/store/6sskv9yrcbzbhvjz7bprdjfrbxsvsbnx-a-dev");
  EXPECT_EQ(set.output(paths.at("a1"), "out"), "/nix/store/7796rs1ch9lb6qcnh1ncqfrmadnq6n6y-a");
  EXPECT_EQ(set.output(paths.at("top"), "out"), "/nix/store/7ma6mh30zxxb0xpjnj3ww78z0mmfikbk-top");
  EXPECT_EQ(paths.at("top"), "/nix/store/xh0lw2qnx8wy7wv231pww90qr2nmxilj-top.drv");
  auto check = checkOutputPaths(set.by_path.at(paths.at("top")), "/nix/store", set.loader());
  EXPECT_TRUE(check) << check.error().message();
}

// The same, judged by nix-instantiate when Nix is installed: the very same .drv files.
TEST(DerivationInterop, InputsWithOneModuloHashMatchNixInstantiate) {
  if (!test::haveNix()) GTEST_SKIP() << "nix-bin is not installed";
  test::NixEnv nix;
  test::TempDir tmp;
  test::writeFile(tmp / "x.nix", kSameModuloExpr);
  DrvSet set;
  for (const auto& [attr, path] : makeSameModulo(set)) {
    SCOPED_TRACE(attr);
    auto r = nix.run({"nix-instantiate", "--store", (tmp / "root").string(),
                      (tmp / "x.nix").string(), "-A", attr});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, path + "\n");
    const fs::path file = tmp / "root" / "nix" / "store" / fs::path(path).filename();
    ASSERT_TRUE(fs::exists(file)) << file;
    EXPECT_EQ(writeDerivation(set.by_path.at(path)), test::readFile(file));
  }
}

TEST(Derivation, ModuloHashReplacesInputsRecursively) {
  const fs::path dir = kDrvData / "nix";
  auto d = parseDerivation(test::readFile(dir / "smvjnnd3qh9n4lks8mm0fd9c2f0ri8fi-d.drv"), "d");
  ASSERT_TRUE(d);
  DrvHashMemo memo;
  auto h = hashDerivationModulo(*d, "/nix/store", dirLoader(dir), true, &memo);
  ASSERT_TRUE(h) << h.error().message();
  EXPECT_EQ(makeOutputPath("out", *h, "d", "/nix/store").value(),
            "/nix/store/v12a7bb3vpxbsnkw8i3xli2w7i2la2vj-d");
  // m, a (through m), f and ff were loaded; f and ff are fixed-output.
  EXPECT_EQ(memo.size(), 4u);
  EXPECT_TRUE(memo.at("/nix/store/kz8r4n8jyzx1j9lfjdgk3mc68g6mv9w2-f.drv").fixed_output);
  EXPECT_FALSE(memo.at("/nix/store/14207885rhi116qczwrqshyn431amkfq-m.drv").fixed_output);
  // Without a loader the inputs cannot be hashed.
  auto none = hashDerivationModulo(*d, "/nix/store", nullptr, true);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code(), ErrorCode::kNotFound);
}

TEST(Derivation, TheNameOfStructuredAttrsIsInTheirJson) {
  auto drv = parseDerivation(
      R"(Derive([("out","/nix/store/kvyl6k081hh2dv7gjx8vi65anza3k48d-sa","","")],[],[],)"
      R"("x86_64-linux","/bin/bash",[],[("__json","{\"name\":\"sa\"}"),)"
      R"(("out","/nix/store/kvyl6k081hh2dv7gjx8vi65anza3k48d-sa")]))");
  ASSERT_TRUE(drv) << drv.error().message();
  EXPECT_EQ(drv->name, "sa");
}

TEST(Derivation, RequiredSystemFeaturesFromEnvOrStructuredAttrs) {
  Derivation drv;
  EXPECT_TRUE(drv.requiredSystemFeatures().empty());
  drv.env["requiredSystemFeatures"] = " kvm  nixos-test\tkvm ";
  EXPECT_EQ(drv.requiredSystemFeatures(), (std::vector<std::string>{"kvm", "nixos-test"}));
  Derivation structured;
  structured.env["__json"] = R"({"requiredSystemFeatures":["nixos-test","kvm",1]})";
  EXPECT_EQ(structured.requiredSystemFeatures(), (std::vector<std::string>{"kvm", "nixos-test"}));
  structured.env["__json"] = "{malformed";
  EXPECT_TRUE(structured.requiredSystemFeatures().empty());
}

// Values from Nix 2.8: nix eval --raw --expr 'builtins.placeholder "out"'.
TEST(Derivation, OutputPlaceholdersAreNixsAndRewriteToTheOutputPaths) {
  EXPECT_EQ(hashPlaceholder("out"), "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9");
  EXPECT_EQ(hashPlaceholder("dev"), "/02qcpld1y6xhs5gz9bchpxaw0xdhmsp5dv88lh25r2ss44kh8dxz");
  Derivation drv;
  drv.outputs["out"].path = "/nix/store/rvwmynr65l04wcw4v887byv2fyckimwv-ph";
  drv.outputs["dev"].path = "/nix/store/0000000000000000000000000000000a-ph-dev";
  const std::string out = hashPlaceholder("out");
  const std::string dev = hashPlaceholder("dev");
  EXPECT_EQ(rewriteOutputPlaceholders("--prefix=" + out + " " + out + "/lib:" + dev, drv),
            "--prefix=" + drv.outputs["out"].path + " " + drv.outputs["out"].path +
                "/lib:" + drv.outputs["dev"].path);
  EXPECT_EQ(rewriteOutputPlaceholders("no placeholder " + hashPlaceholder("doc"), drv),
            "no placeholder " + hashPlaceholder("doc"));  // not an output of this drv
}

TEST(Derivation, CheckOutputPathsCatchesTampering) {
  const fs::path dir = kDrvData / "nix";
  auto m = parseDerivation(test::readFile(dir / "14207885rhi116qczwrqshyn431amkfq-m.drv"), "m");
  ASSERT_TRUE(m);
  Derivation bad = *m;
  bad.env["extra"] = "1";
  auto check = checkOutputPaths(bad, "/nix/store", dirLoader(dir));
  ASSERT_FALSE(check);
  EXPECT_EQ(check.error().code(), ErrorCode::kCorruption);
}

// makeDerivation with the attributes of the Nix expressions that produced the golden files.
TEST(Derivation, MakeDerivationMatchesNixBuiltin) {
  const fs::path dir = kDrvData / "nix";
  DrvHashMemo memo;
  {
    DerivationAttrs a;
    a.name = "a";
    a.builder = "/bin/sh";
    a.system = "x86_64-linux";
    a.args = {"-c", "echo \"hi\\there\"\n\ttab\r"};
    a.env["FOO"] = "bar\nbaz";
    auto drv = makeDerivation(a, "/nix/store", dirLoader(dir), &memo);
    ASSERT_TRUE(drv) << drv.error().message();
    EXPECT_EQ(writeDerivation(*drv),
              test::readFile(dir / "kikhypld3ah0p5dcdrhadmms68p22qjb-a.drv"));
    EXPECT_EQ(derivationStorePath(*drv, "/nix/store").value(),
              "/nix/store/kikhypld3ah0p5dcdrhadmms68p22qjb-a.drv");
  }
  {
    DerivationAttrs a1;  // outputs = ["out"] given explicitly: env gets outputs = "out"
    a1.name = "a1";
    a1.builder = "/bin/sh";
    a1.system = "x86_64-linux";
    a1.outputs_given = true;
    auto drv = makeDerivation(a1, "/nix/store", dirLoader(dir), &memo);
    ASSERT_TRUE(drv) << drv.error().message();
    EXPECT_EQ(writeDerivation(*drv),
              test::readFile(dir / "kcdk1vr1mfkz47vspcnspp92i223ghak-a1.drv"));
  }
  {
    DerivationAttrs m;
    m.name = "m";
    m.builder = "/bin/sh";
    m.system = "x86_64-linux";
    m.outputs = {"out", "dev", "bin"};
    m.outputs_given = true;
    m.env["dep"] = "/nix/store/3ya42i831s59hh3w0ay0awi9j6jhs1y9-a";
    m.input_drvs["/nix/store/kikhypld3ah0p5dcdrhadmms68p22qjb-a.drv"] = {"out"};
    auto drv = makeDerivation(m, "/nix/store", dirLoader(dir), &memo);
    ASSERT_TRUE(drv) << drv.error().message();
    EXPECT_EQ(writeDerivation(*drv),
              test::readFile(dir / "14207885rhi116qczwrqshyn431amkfq-m.drv"));
  }
  {
    DerivationAttrs f;  // SRI hash, recursive
    f.name = "f";
    f.builder = "/bin/sh";
    f.system = "x86_64-linux";
    f.env["outputHash"] = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    f.env["outputHashMode"] = "recursive";
    auto drv = makeDerivation(f, "/nix/store", dirLoader(dir), &memo);
    ASSERT_TRUE(drv) << drv.error().message();
    EXPECT_EQ(writeDerivation(*drv),
              test::readFile(dir / "kz8r4n8jyzx1j9lfjdgk3mc68g6mv9w2-f.drv"));
  }
}

TEST(Derivation, MakeDerivationRejectsWhatNixRejects) {
  DerivationAttrs base;
  base.name = "x";
  base.builder = "/bin/sh";
  base.system = "s";
  auto expect_error = [](const DerivationAttrs& attrs, const std::string& message) {
    auto drv = makeDerivation(attrs, "/nix/store", nullptr);
    ASSERT_FALSE(drv);
    EXPECT_EQ(drv.error().message(), message);
  };
  DerivationAttrs dup = base;
  dup.outputs = {"out", "out"};
  expect_error(dup, "duplicate derivation output 'out'");
  DerivationAttrs drv_out = base;
  drv_out.outputs = {"drv"};
  expect_error(drv_out, "invalid derivation output name 'drv'");
  DerivationAttrs multi_fixed = base;
  multi_fixed.outputs = {"out", "dev"};
  multi_fixed.env["outputHash"] = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
  expect_error(multi_fixed, "multiple outputs are not supported in fixed-output derivations");
  DerivationAttrs mode = base;
  mode.env["outputHash"] = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
  mode.env["outputHashMode"] = "deep";
  expect_error(mode, "invalid value 'deep' for 'outputHashMode' attribute");
  DerivationAttrs twice = base;
  twice.env["name"] = "y";
  expect_error(twice, "attribute 'name' given twice");
  DerivationAttrs dotdrv = base;
  dotdrv.name = "x.drv";
  expect_error(dotdrv, "derivation names are not allowed to end in '.drv'");
}

}  // namespace
}  // namespace narcache
