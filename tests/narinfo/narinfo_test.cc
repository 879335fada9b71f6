// Tests of NarInfo parsing and serialisation. The golden files in tests/data/narinfo/ were
// written by the real Nix 2.8 (`nix copy --to file://...`, see generate.sh there); the inline
// samples come from /work/shared/NIX-AS-JUDGE.md, also written by Nix.
#include "narcache/narinfo/narinfo.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "support/support.h"

namespace narcache {
namespace {

namespace fs = std::filesystem;

const fs::path kGoldenDir = fs::path(NARCACHE_TEST_DATA) / "narinfo";

std::vector<fs::path> goldenFiles() {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kGoldenDir)) {
    if (entry.path().extension() == ".narinfo") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

const char* const kChainA =
    "StorePath: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n"
    "URL: nar/1076k50j4aa01asxxbk24hwgvij5ihq2ix0gknn9xshg897ck6rv.nar.zst\n"
    "Compression: zstd\n"
    "FileHash: sha256:1076k50j4aa01asxxbk24hwgvij5ihq2ix0gknn9xshg897ck6rv\n"
    "FileSize: 224\n"
    "NarHash: sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv\n"
    "NarSize: 576\n"
    "References: 26wynq10b566n9yin4i99sy9f86g5nxx-chain-a "
    "5ksihazxmzlf322swdqnyl8nh13cz80n-chain-b\n"
    "Deriver: r4ghgmcf39xw995bxxqrxzk471vz1vyx-chain-a.drv\n"
    "Sig: "
    "test-cache-1:8Hiawbuysl0LQWA7NASl8ROxnG4ITzEsbyj9FQtkEW4Lo6BCWHmJpV+p4WfViDh9kaXiTLW41ELmGP"
    "UWg7jABA==\n";

const char* const kChainC =
    "StorePath: /nix/store/q5mb7z2aazfrccqnmfaa129rhphn36a7-chain-c\n"
    "URL: nar/16qa5a8kd9k8a4xfhlj5rcpy9jmd6wq57pjyav6q8xy6gspr5c41.nar.zst\n"
    "Compression: zstd\n"
    "FileHash: sha256:16qa5a8kd9k8a4xfhlj5rcpy9jmd6wq57pjyav6q8xy6gspr5c41\n"
    "FileSize: 90\n"
    "NarHash: sha256:02a03l7bbf4arf9d29p95fbmxmma08ahchq3zf121mkwnwml3l5r\n"
    "NarSize: 120\n"
    "References: \n"
    "Deriver: 0ci1p3ih27cf0i00fz01k8qsmyy10bbm-chain-c.drv\n"
    "Sig: "
    "test-cache-1:PXt0uwe60ZIt3bJt/Qerpcp5wc4sbEUFuzMhkVFUVzvJag2QUT/JqPF1zGfwH+SLdVAs9R2fbt1WuKh"
    "e9OfXDA==\n";

const char* const kMySrc =
    "StorePath: /nix/store/wf6387yizdq30jxs5nbignykvx3halra-my-src\n"
    "URL: nar/0scl1hv0r2r33q7azr0sq74m12zsnk4lh2nz9lwwrz2n72vk4b2z.nar.zst\n"
    "Compression: zstd\n"
    "FileHash: sha256:0scl1hv0r2r33q7azr0sq74m12zsnk4lh2nz9lwwrz2n72vk4b2z\n"
    "FileSize: 256\n"
    "NarHash: sha256:0rbn1fx5ljasrsii5d83k2xiddb56s8zjqhqbslpib7678yj4alk\n"
    "NarSize: 896\n"
    "References: \n"
    "Sig: "
    "test-cache-1:6O6UAxOJX1l5px0Dz+OcaWeegO845bFjlwu6c5wrRjIJgqXTGNO3uj+1T7VSXAZl5Z5HUsVCbyvB3OK"
    "OYBfdAw==\n"
    "CA: fixed:r:sha256:0rbn1fx5ljasrsii5d83k2xiddb56s8zjqhqbslpib7678yj4alk\n";

// A minimal valid narinfo; cases below edit it.
const std::string kMinimal =
    "StorePath: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n"
    "URL: nar/x.nar\n"
    "NarHash: sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv\n"
    "NarSize: 576\n";

NarInfo mustParse(std::string_view text, std::string_view store_dir = kDefaultStoreDir) {
  auto r = NarInfo::parse(text, "test.narinfo", store_dir);
  EXPECT_TRUE(r.has_value()) << (r ? "" : r.error().message());
  return r ? *r : NarInfo{};
}

TEST(NarInfoGolden, ThereAreGoldenFiles) {
  EXPECT_GE(goldenFiles().size(), 8u);
}

TEST(NarInfoGolden, RoundTripsByteForByte) {
  for (const auto& file : goldenFiles()) {
    const std::string text = test::readFile(file);
    auto info = NarInfo::parse(text, file.filename().string());
    ASSERT_TRUE(info.has_value()) << info.error().message();
    EXPECT_EQ(info->toString(), text) << file;
  }
}

TEST(NarInfoGolden, SamplesRoundTrip) {
  for (const char* text : {kChainA, kChainC, kMySrc}) {
    EXPECT_EQ(mustParse(text).toString(), text);
  }
}

TEST(NarInfoGolden, FieldsOfChainA) {
  const NarInfo info = mustParse(kChainA);
  EXPECT_EQ(info.store_dir, "/nix/store");
  EXPECT_EQ(info.fullPath(), "/nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a");
  EXPECT_EQ(info.path.hashPart(), "26wynq10b566n9yin4i99sy9f86g5nxx");
  EXPECT_EQ(info.url, "nar/1076k50j4aa01asxxbk24hwgvij5ihq2ix0gknn9xshg897ck6rv.nar.zst");
  EXPECT_EQ(info.compression, "zstd");
  ASSERT_TRUE(info.file_hash.has_value());
  EXPECT_EQ(info.file_hash->toString(),
            "sha256:1076k50j4aa01asxxbk24hwgvij5ihq2ix0gknn9xshg897ck6rv");
  EXPECT_EQ(info.file_size, 224u);
  EXPECT_EQ(info.nar_hash.toString(),
            "sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv");
  EXPECT_EQ(info.nar_size, 576u);
  ASSERT_EQ(info.references.size(), 2u);
  EXPECT_EQ(info.references[0].baseName(), "26wynq10b566n9yin4i99sy9f86g5nxx-chain-a");
  EXPECT_EQ(info.references[1].baseName(), "5ksihazxmzlf322swdqnyl8nh13cz80n-chain-b");
  ASSERT_TRUE(info.deriver.has_value());
  EXPECT_EQ(info.deriver->baseName(), "r4ghgmcf39xw995bxxqrxzk471vz1vyx-chain-a.drv");
  EXPECT_EQ(info.system, "");
  ASSERT_EQ(info.sigs.size(), 1u);
  EXPECT_TRUE(info.sigs[0].starts_with("test-cache-1:8Hiawbuysl0L"));
  EXPECT_EQ(info.ca, "");
}

TEST(NarInfoGolden, FieldsOfMySrc) {
  const NarInfo info = mustParse(kMySrc);
  EXPECT_TRUE(info.references.empty());
  EXPECT_FALSE(info.deriver.has_value());
  EXPECT_EQ(info.ca, "fixed:r:sha256:0rbn1fx5ljasrsii5d83k2xiddb56s8zjqhqbslpib7678yj4alk");
}

TEST(NarInfoGolden, Fingerprint) {
  EXPECT_EQ(mustParse(kChainA).fingerprint(),
            "1;/nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a;"
            "sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv;576;"
            "/nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a,"
            "/nix/store/5ksihazxmzlf322swdqnyl8nh13cz80n-chain-b");
  EXPECT_EQ(mustParse(kChainC).fingerprint(),
            "1;/nix/store/q5mb7z2aazfrccqnmfaa129rhphn36a7-chain-c;"
            "sha256:02a03l7bbf4arf9d29p95fbmxmma08ahchq3zf121mkwnwml3l5r;120;");
}

TEST(NarInfo, MinimalDefaults) {
  const NarInfo info = mustParse(kMinimal);
  EXPECT_EQ(info.compression, "bzip2");  // Nix's default when Compression is missing
  EXPECT_FALSE(info.file_hash.has_value());
  EXPECT_FALSE(info.file_size.has_value());
  EXPECT_EQ(info.toString(),
            "StorePath: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n"
            "URL: nar/x.nar\n"
            "Compression: bzip2\n"
            "NarHash: sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv\n"
            "NarSize: 576\n"
            "References: \n");
}

TEST(NarInfo, EmptyCompressionMeansBzip2) {
  EXPECT_EQ(mustParse(kMinimal + "Compression: \n").compression, "bzip2");
  EXPECT_EQ(mustParse(kMinimal + "Compression: none\n").compression, "none");
}

TEST(NarInfo, IgnoresUnknownKeysAnywhere) {
  const NarInfo info = mustParse("X-Custom: 1\n" + kMinimal +
                                 "Foo: bar\nFoo: again\nstorepath: lowercase is another key\n");
  EXPECT_EQ(info.toString(), mustParse(kMinimal).toString());
}

TEST(NarInfo, AcceptsFieldsInAnyOrderAndWritesNixOrder) {
  const NarInfo info = mustParse(
      "CA: text:sha256:1713f43psipcfjklxyansps8b8zfqjdrhx25prydvh6iad3x0585\n"
      "Sig: k2:c2lnMg==\n"
      "System: x86_64-linux\n"
      "NarSize: 128\n"
      "Deriver: 0ci1p3ih27cf0i00fz01k8qsmyy10bbm-c.drv\n"
      "References: q5mb7z2aazfrccqnmfaa129rhphn36a7-chain-c 26wynq10b566n9yin4i99sy9f86g5nxx-a "
      "q5mb7z2aazfrccqnmfaa129rhphn36a7-chain-c\n"
      "Sig: k1:c2lnMQ==\n"
      "NarHash: sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\n"
      "FileSize: 7\n"
      "FileHash: sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=\n"
      "Compression: xz\n"
      "URL: nar/y.nar.xz\n"
      "StorePath: /nix/store/j795g678kjankjp5z4b4vbcmswxbhy37-c\n");
  EXPECT_EQ(
      info.toString(),
      "StorePath: /nix/store/j795g678kjankjp5z4b4vbcmswxbhy37-c\n"
      "URL: nar/y.nar.xz\n"
      "Compression: xz\n"
      "FileHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n"
      "FileSize: 7\n"
      "NarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n"
      "NarSize: 128\n"
      "References: 26wynq10b566n9yin4i99sy9f86g5nxx-a q5mb7z2aazfrccqnmfaa129rhphn36a7-chain-c\n"
      "Deriver: 0ci1p3ih27cf0i00fz01k8qsmyy10bbm-c.drv\n"
      "System: x86_64-linux\n"
      "Sig: k1:c2lnMQ==\n"
      "Sig: k2:c2lnMg==\n"
      "CA: text:sha256:1713f43psipcfjklxyansps8b8zfqjdrhx25prydvh6iad3x0585\n");
}

TEST(NarInfo, ReferencesToleratesExtraSpacesAndMissingSpace) {
  EXPECT_EQ(mustParse(kMinimal + "References:  26wynq10b566n9yin4i99sy9f86g5nxx-a   \n")
                .references.size(),
            1u);
  EXPECT_TRUE(mustParse(kMinimal + "References:\n").references.empty());
}

TEST(NarInfo, UnknownDeriverMeansNone) {
  EXPECT_FALSE(mustParse(kMinimal + "Deriver: unknown-deriver\n").deriver.has_value());
}

TEST(NarInfo, OtherStoreDir) {
  const std::string text =
      "StorePath: /gnu/store/26wynq10b566n9yin4i99sy9f86g5nxx-guile-3.0.9\n"
      "URL: nar/zstd/gnu/store/26wynq10b566n9yin4i99sy9f86g5nxx-guile-3.0.9\n"
      "Compression: zstd\n"
      "NarHash: sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv\n"
      "NarSize: 576\n"
      "References: 26wynq10b566n9yin4i99sy9f86g5nxx-guile-3.0.9\n"
      "System: x86_64-linux\n";
  const NarInfo info = mustParse(text, "/gnu/store");
  EXPECT_EQ(info.store_dir, "/gnu/store");
  EXPECT_EQ(info.toString(), text);
  EXPECT_EQ(info.fingerprint(),
            "1;/gnu/store/26wynq10b566n9yin4i99sy9f86g5nxx-guile-3.0.9;"
            "sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv;576;"
            "/gnu/store/26wynq10b566n9yin4i99sy9f86g5nxx-guile-3.0.9");
}

TEST(NarInfo, SerialisationSortsReferencesEvenIfTheCallerDidNot) {
  NarInfo info = mustParse(kMinimal);
  info.references = {*StorePath::parseBaseName("q5mb7z2aazfrccqnmfaa129rhphn36a7-z"),
                     *StorePath::parseBaseName("05mb7z2aazfrccqnmfaa129rhphn36a7-y"),
                     *StorePath::parseBaseName("q5mb7z2aazfrccqnmfaa129rhphn36a7-z")};
  EXPECT_NE(info.toString().find("References: 05mb7z2aazfrccqnmfaa129rhphn36a7-y "
                                 "q5mb7z2aazfrccqnmfaa129rhphn36a7-z\n"),
            std::string::npos);
  EXPECT_TRUE(
      info.fingerprint().ends_with(";/nix/store/05mb7z2aazfrccqnmfaa129rhphn36a7-y,/nix/store/"
                                   "q5mb7z2aazfrccqnmfaa129rhphn36a7-z"));
}

// Nix keeps Sig values in a std::set and prints them in that order, each once.
TEST(NarInfo, SigsAreSortedAndUnique) {
  const std::string text =
      kMinimal + "Sig: z-key:c2lnMg==\nSig: a-key:c2lnMQ==\nSig: z-key:c2lnMg==\n";
  NarInfo info = mustParse(text);
  EXPECT_EQ(info.sigs, (std::vector<std::string>{"a-key:c2lnMQ==", "z-key:c2lnMg=="}));
  const std::string expected = mustParse(kMinimal).toString() +
                               "Sig: a-key:c2lnMQ==\n"
                               "Sig: z-key:c2lnMg==\n";
  EXPECT_EQ(info.toString(), expected);
  // Also when the caller filled in the vector out of order.
  info.sigs = {"z-key:c2lnMg==", "a-key:c2lnMQ==", "z-key:c2lnMg=="};
  EXPECT_EQ(info.toString(), expected);
  info.sigs.clear();
  info.addSignature("z-key:c2lnMg==");
  info.addSignature("a-key:c2lnMQ==");
  info.addSignature("z-key:c2lnMg==");
  EXPECT_EQ(info.sigs, (std::vector<std::string>{"a-key:c2lnMQ==", "z-key:c2lnMg=="}));
}

struct Bad {
  std::string text;
  std::string error;
};

TEST(NarInfo, RejectsMalformed) {
  const std::string sp = "StorePath: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n";
  const std::string url = "URL: nar/x.nar\n";
  const std::string nh = "NarHash: sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv\n";
  const std::string ns = "NarSize: 576\n";
  const std::string nix32 = "0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv";
  const Bad cases[] = {
      // Structure.
      {"", "x.narinfo: missing StorePath"},
      {kMinimal.substr(0, kMinimal.size() - 1), "x.narinfo line 4: missing newline at end of file"},
      {sp + "\n" + url + nh + ns, "x.narinfo line 2: expected 'Key: value'"},
      {sp + "no colon here\n", "x.narinfo line 2: expected 'Key: value'"},
      {sp + ": value\n", "x.narinfo line 2: expected 'Key: value'"},
      {"StorePath:/nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n",
       "x.narinfo line 1: StorePath: expected a space after ':'"},
      {kMinimal + "\r\n", "x.narinfo line 5: expected 'Key: value'"},
      // Required fields.
      {url + nh + ns, "x.narinfo: missing StorePath"},
      {sp + nh + ns, "x.narinfo: missing URL"},
      {sp + url + ns, "x.narinfo: missing NarHash"},
      {sp + url + nh, "x.narinfo: missing NarSize"},
      // Duplicates (Sig may repeat).
      {kMinimal + sp, "x.narinfo line 5: StorePath: duplicate field"},
      {kMinimal + "References: \nReferences: \n", "x.narinfo line 6: References: duplicate field"},
      {kMinimal + "CA: \nCA: \n", "x.narinfo line 6: CA: duplicate field"},
      {kMinimal + "Compression: xz\nCompression: xz\n",
       "x.narinfo line 6: Compression: duplicate field"},
      // StorePath.
      {"StorePath: /gnu/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n",
       "x.narinfo line 1: StorePath: path '/gnu/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a' is "
       "not in the store '/nix/store'"},
      {"StorePath: 26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n",
       "x.narinfo line 1: StorePath: path '26wynq10b566n9yin4i99sy9f86g5nxx-chain-a' is not in the "
       "store '/nix/store'"},
      {"StorePath: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxe-chain-a\n",
       "x.narinfo line 1: StorePath: store path '26wynq10b566n9yin4i99sy9f86g5nxe-chain-a' "
       "contains "
       "illegal nix32 character 'e' in its hash"},
      {"StorePath: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain a\n",
       "x.narinfo line 1: StorePath: store path '26wynq10b566n9yin4i99sy9f86g5nxx-chain a' "
       "contains "
       "illegal character ' '"},
      // URL.
      {sp + "URL: \n", "x.narinfo line 2: URL: must not be empty"},
      {sp + "URL:\n", "x.narinfo line 2: URL: must not be empty"},
      // Hashes.
      {sp + url + "NarHash: " + nix32 + "\n",
       "x.narinfo line 3: NarHash: hash '" + nix32 + "' does not include a type"},
      {sp + url + "NarHash: sha256:abc\n",
       "x.narinfo line 3: NarHash: hash 'sha256:abc' has wrong length for hash type 'sha256'"},
      {sp + url + "NarHash: sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs\n",
       "x.narinfo line 3: NarHash: 'sha1:143xibwh31h9bvxzalr0sjvbbvpa6ffs' is not a sha256 hash"},
      {sp + url +
           "NarHash: "
           "sha512:2gs8k559z4rlahfx0y688s49m2vvszylcikrfinm30ly9rak69236nkam5ydvly1ai7xac99"
           "vxfc4ii84hawjbk876blyk1jfhkbbyx\n",
       "x.narinfo line 3: NarHash: "
       "'sha512:2gs8k559z4rlahfx0y688s49m2vvszylcikrfinm30ly9rak69236nkam"
       "5ydvly1ai7xac99vxfc4ii84hawjbk876blyk1jfhkbbyx' is not a sha256 hash"},
      {sp + url + "FileHash: sha256:" + nix32 + " \n",
       "x.narinfo line 3: FileHash: hash 'sha256:" + nix32 +
           " ' has wrong length for hash type 'sha256'"},
      // Sizes.
      {sp + url + nh + "NarSize: 0\n", "x.narinfo line 4: NarSize: must not be zero"},
      {sp + url + nh + "NarSize: -1\n", "x.narinfo line 4: NarSize: '-1' is not a decimal number"},
      {sp + url + nh + "NarSize: +1\n", "x.narinfo line 4: NarSize: '+1' is not a decimal number"},
      {sp + url + nh + "NarSize: 1 \n", "x.narinfo line 4: NarSize: '1 ' is not a decimal number"},
      {sp + url + nh + "NarSize: 0x10\n",
       "x.narinfo line 4: NarSize: '0x10' is not a decimal number"},
      {sp + url + nh + "NarSize: \n", "x.narinfo line 4: NarSize: '' is not a decimal number"},
      {sp + url + nh + "NarSize: 18446744073709551616\n",
       "x.narinfo line 4: NarSize: '18446744073709551616' is too large"},
      {sp + "FileSize: 1.5\n", "x.narinfo line 2: FileSize: '1.5' is not a decimal number"},
      // References and Deriver.
      {kMinimal + "References: 26wynq10b566n9yin4i99sy9f86g5nxx-a /nix/store/x\n",
       "x.narinfo line 5: References: store path '/nix/store/x' is too short"},
      {kMinimal + "References: 26wynq10b566n9yin4i99sy9f86g5nxx-a:b\n",
       "x.narinfo line 5: References: store path '26wynq10b566n9yin4i99sy9f86g5nxx-a:b' contains "
       "illegal character ':'"},
      {kMinimal + "Deriver: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-a.drv\n",
       "x.narinfo line 5: Deriver: store path '/nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-a.drv' "
       "contains illegal nix32 character '/' in its hash"},
      {kMinimal + "Deriver: \n", "x.narinfo line 5: Deriver: store path '' is too short"},
      // CA.
      {kMinimal + "CA: sha256:" + nix32 + "\n",
       "x.narinfo line 5: CA: 'sha256:" + nix32 + "' does not start with 'text:' or 'fixed:'"},
      {kMinimal + "CA: fixed:r:" + nix32 + "\n",
       "x.narinfo line 5: CA: 'fixed:r:" + nix32 + "' has no '<algo>:<hash>'"},
      {kMinimal + "CA: text:sha512:" + nix32 + "\n",
       "x.narinfo line 5: CA: 'text:sha512:" + nix32 + "' is not a sha256 text hash"},
      {kMinimal + "CA: fixed:blake3:" + nix32 + "\n",
       "x.narinfo line 5: CA: 'fixed:blake3:" + nix32 + "' has unknown hash algorithm 'blake3'"},
      {kMinimal + "CA: fixed:sha1:" + nix32 + "\n", "x.narinfo line 5: CA: 'fixed:sha1:" + nix32 +
                                                        "': hash '" + nix32 +
                                                        "' has wrong length for hash type 'sha1'"},
      {kMinimal + "CA: fixed:r:sha256:e" + nix32.substr(1) + "\n",
       "x.narinfo line 5: CA: 'fixed:r:sha256:e" + nix32.substr(1) + "': invalid hash 'e" +
           nix32.substr(1) + "': invalid nix32 character 'e' in 'e" + nix32.substr(1) + "'"},
      // 44 base64 characters ending in "==" hold 31 bytes, not 32; Nix 2.8 refuses them
      // ("invalid base-64 hash").
      {kMinimal + "CA: fixed:r:sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuA==\n",
       "x.narinfo line 5: CA: 'fixed:r:sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuA==': hash "
       "'47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuA==' has wrong length for hash type 'sha256'"},
  };
  for (const auto& c : cases) {
    auto r = NarInfo::parse(c.text, "x.narinfo");
    ASSERT_FALSE(r.has_value()) << "accepted:\n" << c.text;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(), c.error) << c.text;
  }
}

TEST(NarInfo, AcceptsEveryContentAddressForm) {
  for (const std::string ca : {
           "text:sha256:1713f43psipcfjklxyansps8b8zfqjdrhx25prydvh6iad3x0585",
           "fixed:sha256:1rjd5yd8mk3hq6drzr3pa2gaprr7adbkwsxmqqachrlbzcca0v17",
           "fixed:r:sha256:0rbn1fx5ljasrsii5d83k2xiddb56s8zjqhqbslpib7678yj4alk",
           "fixed:r:sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "fixed:sha1:0mdqa9w1p6cmli6976v4wi0sw9r4p5pr",  // 20 bytes in nix32
           "fixed:r:sha1:a9993e364706816aba3e25717850c26c9cd0d89d",
           "fixed:md5:0bp8a0v1ajgkjhv7cbm4xjqcx6",  // 16 bytes in nix32
           "fixed:md5:kAFQmDzST7DWlj99KOF/cg==",
           "fixed:r:sha512:3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/"
           "uu9RU1EI2Q86A4qm"
           "slPpUyknw==",
           // Nix 2.8 decodes base64 leniently: non-zero padding bits are accepted.
           "fixed:r:sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=",
       }) {
    const NarInfo info = mustParse(kMinimal + "CA: " + ca + "\n");
    EXPECT_EQ(info.ca, ca);
  }
  EXPECT_EQ(mustParse(kMinimal + "CA: \n").ca, "");
}

TEST(NarInfo, RejectsAStoreDirThatIsNotCanonical) {
  auto r = NarInfo::parse(kMinimal, "x.narinfo", "/nix/store/");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "x.narinfo: store dir '/nix/store/' has a trailing slash");
}

// Nix itself reads what we write: serialise a golden narinfo into a file:// cache together with a
// nix-cache-info, and ask `nix path-info` about it.
TEST(NarInfoInterop, NixReadsOurSerialisation) {
  if (!test::haveNix()) GTEST_SKIP() << "nix-store not installed";
  test::NixEnv env;
  test::TempDir cache;
  test::writeFile(cache / "nix-cache-info", "StoreDir: /nix/store\n");
  NarInfo info = mustParse(kChainA);
  info.system = "x86_64-linux";
  test::writeFile(cache / (info.path.hashPart() + ".narinfo"), info.toString());
  auto r = env.run({"nix", "path-info", "--json", "--store", "file://" + cache.path().string(),
                    info.fullPath()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Nix 2.8 prints the NarHash as SRI here: our conversion of the same hash must agree.
  EXPECT_EQ(info.nar_hash.toString(HashFormat::kSri),
            "sha256-GxOESM6znXsV3qr8yg/pXs7cftOKP6FwvLqVGFwfTG8=");
  EXPECT_NE(r.out.find("\"narHash\":\"" + info.nar_hash.toString(HashFormat::kSri) + "\""),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("\"narSize\":576"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("/nix/store/5ksihazxmzlf322swdqnyl8nh13cz80n-chain-b"), std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace narcache
