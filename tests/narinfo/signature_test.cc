// Tests of Ed25519 keys and narinfo signatures in Nix's format. The golden narinfos and keys in
// tests/data/narinfo/ were made by the real Nix 2.8 (`nix key generate-secret`,
// `nix copy --to file://...?secret-key=...`, `nix store sign`; see generate.sh there).
#include "narcache/narinfo/signature.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "support/support.h"

namespace narcache {
namespace {

namespace fs = std::filesystem;

const fs::path kGoldenDir = fs::path(NARCACHE_TEST_DATA) / "narinfo";

std::vector<NarInfo> goldenNarInfos() {
  std::vector<NarInfo> infos;
  for (const auto& entry : fs::directory_iterator(kGoldenDir)) {
    if (entry.path().extension() != ".narinfo") continue;
    auto info = NarInfo::parse(test::readFile(entry.path()), entry.path().filename().string());
    EXPECT_TRUE(info.has_value()) << entry.path();
    if (info) infos.push_back(std::move(*info));
  }
  return infos;
}

PublicKey goldenPublicKey(const std::string& name) {
  auto key = PublicKey::parse(test::readFile(kGoldenDir / (name + ".pub")));
  EXPECT_TRUE(key.has_value()) << (key ? "" : key.error().message());
  return *key;
}

SecretKey goldenSecretKey(const std::string& name) {
  auto key = SecretKey::parse(test::readFile(kGoldenDir / (name + ".sec")));
  EXPECT_TRUE(key.has_value()) << (key ? "" : key.error().message());
  return *key;
}

TEST(SignatureGolden, EverySigWrittenByNixVerifies) {
  const std::map<std::string, PublicKey> keys = {
      {"test-cache-1", goldenPublicKey("test-cache-1")},
      {"test-cache-2", goldenPublicKey("test-cache-2")},
  };
  std::size_t checked = 0;
  for (const NarInfo& info : goldenNarInfos()) {
    for (const std::string& sig : info.sigs) {
      const std::string name = sig.substr(0, sig.find(':'));
      ASSERT_TRUE(keys.contains(name)) << sig;
      EXPECT_TRUE(keys.at(name).verify(info.fingerprint(), sig)) << info.fullPath() << " " << sig;
      ++checked;
    }
    if (!info.sigs.empty()) {
      EXPECT_TRUE(hasValidSignature(info, {keys.at("test-cache-1"), keys.at("test-cache-2")}));
    }
  }
  EXPECT_GE(checked, 8u);
}

TEST(SignatureGolden, OurSignaturesEqualNixsBecauseEd25519IsDeterministic) {
  const SecretKey sk1 = goldenSecretKey("test-cache-1");
  const SecretKey sk2 = goldenSecretKey("test-cache-2");
  std::size_t checked = 0;
  for (const NarInfo& info : goldenNarInfos()) {
    for (const std::string& sig : info.sigs) {
      const SecretKey& sk = sig.starts_with("test-cache-1:") ? sk1 : sk2;
      EXPECT_EQ(sk.sign(info.fingerprint()), sig);
      ++checked;
    }
  }
  EXPECT_GE(checked, 8u);
}

TEST(SignatureGolden, SecretKeyDerivesTheStoredPublicKey) {
  for (const char* name : {"test-cache-1", "test-cache-2"}) {
    const SecretKey sk = goldenSecretKey(name);
    EXPECT_EQ(sk.name(), name);
    EXPECT_EQ(sk.publicKey().toString(), test::readFile(kGoldenDir / (std::string(name) + ".pub")));
    EXPECT_EQ(sk.toString(), test::readFile(kGoldenDir / (std::string(name) + ".sec")));
  }
}

// What the signature covers: StorePath, NarHash, NarSize, References; not the rest.
TEST(SignatureGolden, CoversExactlyTheFingerprintFields) {
  const std::vector<PublicKey> trusted = {goldenPublicKey("test-cache-1")};
  NarInfo signed_info;
  for (const NarInfo& info : goldenNarInfos()) {
    if (!info.references.empty() && info.deriver && !info.sigs.empty() &&
        info.sigs[0].starts_with("test-cache-1:")) {
      signed_info = info;
      signed_info.sigs.resize(1);  // only the test-cache-1 signature
      break;
    }
  }
  ASSERT_TRUE(hasValidSignature(signed_info, trusted));

  const auto still_valid = [&](auto&& mutate) {
    NarInfo copy = signed_info;
    mutate(copy);
    return hasValidSignature(copy, trusted);
  };
  EXPECT_TRUE(still_valid([](NarInfo& i) { i.url = "nar/other.nar"; }));
  EXPECT_TRUE(still_valid([](NarInfo& i) { i.compression = "none"; }));
  EXPECT_TRUE(still_valid([](NarInfo& i) { i.file_hash.reset(); }));
  EXPECT_TRUE(still_valid([](NarInfo& i) { i.file_size = 1; }));
  EXPECT_TRUE(still_valid([](NarInfo& i) { i.deriver.reset(); }));
  EXPECT_TRUE(still_valid([](NarInfo& i) { i.ca = "fixed:sha256:" + std::string(52, '0'); }));
  EXPECT_TRUE(still_valid([](NarInfo& i) { i.system = "x86_64-linux"; }));

  EXPECT_FALSE(still_valid([](NarInfo& i) { i.nar_size += 1; }));
  EXPECT_FALSE(still_valid([](NarInfo& i) { i.nar_hash = hashString(HashAlgo::kSha256, "x"); }));
  EXPECT_FALSE(still_valid([](NarInfo& i) { i.references.clear(); }));
  EXPECT_FALSE(still_valid([](NarInfo& i) { i.references.pop_back(); }));
  EXPECT_FALSE(still_valid(
      [](NarInfo& i) { i.path = *StorePath::parseBaseName(i.path.hashPart() + "-renamed"); }));
  EXPECT_FALSE(still_valid([](NarInfo& i) { i.store_dir = "/gnu/store"; }));
  EXPECT_FALSE(still_valid([](NarInfo& i) { i.sigs.clear(); }));
  // A flipped bit in the signature itself.
  EXPECT_FALSE(still_valid([](NarInfo& i) {
    std::string& sig = i.sigs[0];
    sig[sig.size() - 5] = sig[sig.size() - 5] == 'A' ? 'B' : 'A';
  }));
  // Untrusted or differently named key.
  EXPECT_FALSE(hasValidSignature(signed_info, {}));
  EXPECT_FALSE(hasValidSignature(signed_info, {goldenPublicKey("test-cache-2")}));
}

TEST(Signature, KeyNameMustMatch) {
  const SecretKey sk = goldenSecretKey("test-cache-1");
  const std::string sig = sk.sign("message");
  EXPECT_TRUE(sk.publicKey().verify("message", sig));
  EXPECT_FALSE(sk.publicKey().verify("massage", sig));
  // Same key bytes under another name: Nix looks keys up by name, so this does not verify.
  auto renamed = PublicKey::parse("other:" + sk.publicKey().toString().substr(13));
  ASSERT_TRUE(renamed.has_value());
  EXPECT_FALSE(renamed->verify("message", sig));
  EXPECT_TRUE(renamed->verify("message", "other:" + sig.substr(13)));
}

TEST(Signature, VerifyRejectsMalformedSignatures) {
  const SecretKey sk = goldenSecretKey("test-cache-1");
  const PublicKey pk = sk.publicKey();
  const std::string good = sk.sign("m");
  for (const std::string& bad : {
           std::string(),
           std::string("test-cache-1"),
           std::string("test-cache-1:"),
           std::string("test-cache-1:!!!!"),
           std::string("test-cache-1:c2ln"),  // 3 bytes
           good + "=",
           good.substr(0, good.size() - 4),
           " " + good,
       }) {
    EXPECT_FALSE(pk.verify("m", bad)) << bad;
  }
}

TEST(Signature, GenerateSignVerify) {
  auto sk = SecretKey::generate("my-cache.example.org-1");
  ASSERT_TRUE(sk.has_value());
  EXPECT_EQ(sk->name(), "my-cache.example.org-1");
  auto reparsed = SecretKey::parse(sk->toString());
  ASSERT_TRUE(reparsed.has_value());
  EXPECT_EQ(reparsed->toString(), sk->toString());
  auto pk = PublicKey::parse("  " + sk->publicKey().toString() + "\n");  // whitespace trimmed
  ASSERT_TRUE(pk.has_value());
  EXPECT_EQ(pk->toString(), sk->publicKey().toString());
  EXPECT_TRUE(pk->verify("hello", sk->sign("hello")));
  // Two generated keys differ.
  EXPECT_NE(SecretKey::generate("k")->toString(), SecretKey::generate("k")->toString());
}

TEST(Signature, SignNarInfoAddsOnce) {
  const SecretKey sk = goldenSecretKey("test-cache-2");
  NarInfo info = goldenNarInfos().front();
  const std::size_t before = info.sigs.size();
  signNarInfo(info, sk);
  const std::size_t after = info.sigs.size();
  EXPECT_LE(after, before + 1);
  EXPECT_GE(after, before);
  signNarInfo(info, sk);
  EXPECT_EQ(info.sigs.size(), after);
  EXPECT_TRUE(hasValidSignature(info, {sk.publicKey()}));
  EXPECT_EQ(info.sigs.back(), sk.sign(info.fingerprint()));
}

// `narinfo sign` output has Nix's layout: Nix keeps the Sig values in a std::set, so a new
// signature sorts in among the others and a repeated one is printed once.
TEST(Signature, SignedNarInfoPrintsSigsSortedAndUnique) {
  const std::string minimal =
      "StorePath: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n"
      "URL: nar/x.nar\n"
      "NarHash: sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv\n"
      "NarSize: 576\n";
  const std::string z_sig = "z-key:c2lnMg==";
  auto info = NarInfo::parse(minimal + "Sig: " + z_sig + "\nSig: " + z_sig + "\n");
  ASSERT_TRUE(info.has_value()) << info.error().message();
  auto sk = SecretKey::generate("a-key");
  ASSERT_TRUE(sk.has_value());
  signNarInfo(*info, *sk);
  const std::string a_sig = sk->sign(info->fingerprint());
  EXPECT_EQ(info->toString(),
            "StorePath: /nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a\n"
            "URL: nar/x.nar\n"
            "Compression: bzip2\n"
            "NarHash: sha256:0vsc3xf1i5dspiqa2gwasdzdrkjyx47wmz5avqapp7dkrr4884qv\n"
            "NarSize: 576\n"
            "References: \n"
            "Sig: " +
                a_sig + "\nSig: " + z_sig + "\n");
  EXPECT_EQ(info->sigs, (std::vector<std::string>{a_sig, z_sig}));
}

struct BadKey {
  std::string text;
  std::string error;
};

// Nix 2.8 reads keys and signatures without their '=' padding.
TEST(Signature, PaddingIsOptionalInKeysAndSignatures) {
  const SecretKey sk = goldenSecretKey("test-cache-1");
  const std::string pk_text = sk.publicKey().toString();
  ASSERT_TRUE(pk_text.ends_with("="));
  auto pk = PublicKey::parse(pk_text.substr(0, pk_text.find('=')));
  ASSERT_TRUE(pk.has_value()) << pk.error().message();
  EXPECT_EQ(pk->toString(), pk_text);  // printed canonical
  const std::string sig = sk.sign("m");
  ASSERT_TRUE(sig.ends_with("=="));
  EXPECT_TRUE(pk->verify("m", sig.substr(0, sig.size() - 2)));
  EXPECT_TRUE(pk->verify("m", sig.substr(0, sig.size() - 1)));
  const std::string sk_text = sk.toString();
  auto sk2 = SecretKey::parse(sk_text.substr(0, sk_text.find('=')));
  ASSERT_TRUE(sk2.has_value()) << sk2.error().message();
  EXPECT_EQ(sk2->toString(), sk_text);
}

TEST(Signature, RejectsMalformedKeys) {
  const std::string pub32 = "JyQOH7RPi1OYXJ0gAkzJ7QgW8DRTocEsK0IRfcRYIUs=";
  const BadKey public_cases[] = {
      {"", "public key is not of the form 'name:key'"},
      {pub32, "public key is not of the form 'name:key'"},
      {":" + pub32, "public key has an empty name"},
      {"k:", "public key 'k' has 0 bytes, expected 32"},
      {"k:c2ln", "public key 'k' has 3 bytes, expected 32"},
      {"k:" + pub32.substr(0, 42), "public key 'k' is not valid base64"},  // bits left over
      {"k:" + pub32 + "x", "public key 'k' is not valid base64"},
      {"k: " + pub32, "public key 'k' is not valid base64"},
  };
  for (const auto& c : public_cases) {
    auto r = PublicKey::parse(c.text);
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(), c.error);
  }
  const BadKey secret_cases[] = {
      {"nocolon", "secret key is not of the form 'name:key'"},
      {":abcd", "secret key has an empty name"},
      // A public key is not a secret key.
      {"k:" + pub32, "secret key 'k' has 32 bytes, expected 64"},
      {"k:@@@@", "secret key 'k' is not valid base64"},
  };
  for (const auto& c : secret_cases) {
    auto r = SecretKey::parse(c.text);
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_EQ(r.error().message(), c.error);
  }
  for (const auto& [name, error] : std::vector<std::pair<std::string, std::string>>{
           {"", "key name is empty"}, {"a:b", "key name 'a:b' contains ':'"}}) {
    auto r = SecretKey::generate(name);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().message(), error);
  }
}

// Nix accepts keys and signatures we make: it derives the same public key from our secret key,
// and `nix copy --from` a cache holding narinfos we signed succeeds with only our key trusted
// and fails once a signed field is changed.
TEST(SignatureInterop, NixAcceptsOurKeysAndSignatures) {
  if (!test::haveNix()) GTEST_SKIP() << "nix-store not installed";
  test::NixEnv env;
  auto sk = SecretKey::generate("narcache-test-1");
  ASSERT_TRUE(sk.has_value());
  auto pub = test::run({"nix", "key", "convert-secret-to-public"}, [&] {
    auto o = env.options();
    o.stdin_data = sk->toString();
    return o;
  }());
  ASSERT_EQ(pub.exit_code, 0) << pub.err;
  EXPECT_EQ(pub.out, sk->publicKey().toString());

  // Two text files, one referring to the other, copied unsigned into a file:// cache.
  const auto store = env.newStore("store");
  test::writeFile(env.dir() / "x.nix",
                  "let c = builtins.toFile \"c\" \"leaf\\n\"; in "
                  "builtins.toFile \"b\" \"b uses ${c}\\n\"\n");
  auto b = env.run(
      {"nix", "eval", "--store", store.string(), "--raw", "-f", (env.dir() / "x.nix").string()});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string cache = (env.dir() / "cache").string();
  auto copy = env.run({"nix", "copy", "--store", store.string(), "--to",
                       "file://" + cache + "?compression=zstd", b.out});
  ASSERT_EQ(copy.exit_code, 0) << copy.err;

  // Rewrites every narinfo of the cache with our serialiser after `mutate`. The CA line is
  // dropped: Nix trusts content-addressed paths without any signature, and the signature does
  // not cover CA, so this makes Nix check our signatures.
  const auto rewrite = [&](auto&& mutate) {
    std::size_t count = 0;
    for (const auto& entry : fs::directory_iterator(cache)) {
      if (entry.path().extension() != ".narinfo") continue;
      const std::string text = test::readFile(entry.path());
      auto info = NarInfo::parse(text, entry.path().filename().string());
      EXPECT_TRUE(info.has_value()) << info.error().message();
      if (!info) continue;
      info->ca.clear();
      mutate(*info);
      test::writeFile(entry.path(), info->toString());
      ++count;
    }
    return count;
  };
  const auto copy_from_cache = [&](const std::string& to) {
    return env.run({"nix", "copy", "--option", "trusted-public-keys", sk->publicKey().toString(),
                    "--from", "file://" + cache, "--to", env.newStore(to).string(), b.out});
  };

  // Control: unsigned and without CA, Nix refuses the paths.
  ASSERT_EQ(rewrite([](NarInfo& info) { info.sigs.clear(); }), 2u);
  auto unsigned_copy = copy_from_cache("unsigned");
  EXPECT_NE(unsigned_copy.exit_code, 0);
  EXPECT_NE(unsigned_copy.err.find("lacks a valid signature"), std::string::npos)
      << unsigned_copy.err;

  // Signed by us: accepted.
  ASSERT_EQ(rewrite([&](NarInfo& info) { signNarInfo(info, *sk); }), 2u);
  auto ok = copy_from_cache("good");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;

  // A signed field changed (the signature kept): refused.
  rewrite([&](NarInfo& info) {
    if (info.fullPath() == b.out) info.nar_size += 1;
  });
  auto bad = copy_from_cache("bad");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("cannot add path '" + b.out + "' because it lacks a valid signature"),
            std::string::npos)
      << bad.err;
}

}  // namespace
}  // namespace narcache
