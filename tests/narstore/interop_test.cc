// Real Nix as the judge: a closure copied by `nix copy --to file://`, imported, exported, and
// copied back by Nix into a fresh store with only the cache's key trusted.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/support.h"

namespace narcache::narstore {
namespace {

TEST(StoreInteropTest, ImportThenExportIsAcceptedByNix) {
  if (!test::haveNix()) GTEST_SKIP() << "nix not installed";
  test::NixEnv nix;
  std::string src = nix.newStore("src").string();
  test::writeFile(nix.dir() / "x.nix",
                  "let c = builtins.toFile \"c\" \"leaf\";\n"
                  "    b = builtins.toFile \"b\" \"uses ${c}\";\n"
                  "in { a = builtins.toFile \"a\" \"top ${b} ${c}\"; }\n");
  auto eval =
      nix.run({"nix", "eval", "--store", src, "--raw", "-f", (nix.dir() / "x.nix").string(), "a"});
  ASSERT_EQ(eval.exit_code, 0) << eval.err;
  std::string a = eval.out;
  auto sk = nix.run({"nix", "key", "generate-secret", "--key-name", "interop-1"});
  ASSERT_EQ(sk.exit_code, 0) << sk.err;
  test::writeFile(nix.dir() / "sk", sk.out);
  test::RunOptions with_stdin = nix.options();
  with_stdin.stdin_data = sk.out;
  auto pk = test::run({"nix", "key", "convert-secret-to-public"}, with_stdin);
  ASSERT_EQ(pk.exit_code, 0) << pk.err;
  std::string public_key = pk.out.substr(0, pk.out.find_last_not_of("\n ") + 1);

  std::string cache = (nix.dir() / "cache").string();
  auto copy = nix.run(
      {"nix", "copy", "--store", src, "--to",
       "file://" + cache + "?compression=zstd&secret-key=" + (nix.dir() / "sk").string(), a});
  ASSERT_EQ(copy.exit_code, 0) << copy.err;

  test::TempDir dir;
  std::string store = (dir / "s").string();
  ASSERT_EQ(test::narcache({"store", "init", "--store", store}).exit_code, 0);
  auto wrong = test::narcache({"import", "--store", store, "file://" + cache, "--trusted-key",
                               "other:" + std::string(44, 'A')});
  EXPECT_NE(wrong.exit_code, 0);
  auto imported =
      test::narcache({"import", "--store", store, "file://" + cache, "--trusted-key", public_key});
  ASSERT_EQ(imported.exit_code, 0) << imported.out << imported.err;
  EXPECT_NE(imported.out.find("imported 3 items"), std::string::npos) << imported.out;
  auto again = test::narcache({"import", "--store", store, "file://" + cache});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("imported 0 items (3 already present"), std::string::npos) << again.out;

  std::string out = (dir / "out").string();
  auto exported = test::narcache({"export", "--store", store, "file://" + out});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;

  std::string fresh = nix.newStore("fresh").string();
  auto back = nix.run({"nix", "copy", "--from", "file://" + out, "--to", fresh, "--option",
                       "trusted-public-keys", public_key, "--option", "require-sigs", "true", a});
  ASSERT_EQ(back.exit_code, 0) << back.err;
  auto info_src = nix.run({"nix", "path-info", "--store", src, "--json", "-r", a});
  auto info_fresh = nix.run({"nix", "path-info", "--store", fresh, "--json", "-r", a});
  ASSERT_EQ(info_src.exit_code, 0) << info_src.err;
  ASSERT_EQ(info_fresh.exit_code, 0) << info_fresh.err;
  auto j1 = nlohmann::json::parse(info_src.out);
  auto j2 = nlohmann::json::parse(info_fresh.out);
  ASSERT_EQ(j1.size(), 3u);
  ASSERT_EQ(j1.size(), j2.size());
  for (std::size_t i = 0; i < j1.size(); ++i) {
    EXPECT_EQ(j1[i]["path"], j2[i]["path"]);
    EXPECT_EQ(j1[i]["narHash"], j2[i]["narHash"]);
    EXPECT_EQ(j1[i]["narSize"], j2[i]["narSize"]);
    EXPECT_EQ(j1[i]["references"], j2[i]["references"]);
  }
}

}  // namespace
}  // namespace narcache::narstore
