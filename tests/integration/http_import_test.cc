// `narcache import http://…`: copies closures from a live HTTP cache (here another narcache
// serve, fed by the real Nix), verifying signatures, resumable, with clear errors.
#include <gtest/gtest.h>

#include <string>

#include "support/served_store.h"
#include "support/support.h"

namespace narcache::test {
namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

TEST(HttpImport, CopiesClosuresFromAServedStore) {
  if (!haveNix()) GTEST_SKIP() << "nix-bin is not installed";
  NixEnv nix;
  TempDir dir;
  // A 3-path closure made by Nix, imported into the source store.
  std::string src = nix.newStore("src").string();
  writeFile(
      nix.dir() / "x.nix",
      "let c = builtins.toFile \"c\" \"leaf\";\n"
      "    b = builtins.toFile \"b\" \"uses ${c}\";\n"
      "in { a = builtins.toFile \"a\" \"top ${b} ${c}\"; other = builtins.toFile \"o\" \"x\"; }\n");
  auto a =
      nix.run({"nix", "eval", "--store", src, "--raw", "-f", (nix.dir() / "x.nix").string(), "a"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto other = nix.run(
      {"nix", "eval", "--store", src, "--raw", "-f", (nix.dir() / "x.nix").string(), "other"});
  ASSERT_EQ(other.exit_code, 0) << other.err;
  std::string cache = (nix.dir() / "cache").string();
  auto copy = nix.run({"nix", "copy", "--store", src, "--to", "file://" + cache, a.out, other.out});
  ASSERT_EQ(copy.exit_code, 0) << copy.err;

  auto gen = narcache({"key", "generate", "--name", "served-1", "--secret", (dir / "sk").string(),
                       "--public", (dir / "pk").string()});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  std::string pk = trim(gen.out);
  std::string source_store = (dir / "source").string();
  ASSERT_EQ(narcache({"store", "init", "--store", source_store}).exit_code, 0);
  ASSERT_EQ(narcache({"import", "--store", source_store, "file://" + cache}).exit_code, 0);
  ServedStore served(source_store, {"--secret-key", (dir / "sk").string()});

  std::string dest = (dir / "dest").string();
  ASSERT_EQ(narcache({"store", "init", "--store", dest}).exit_code, 0);

  // An HTTP cache cannot be listed: the whole-cache form says what to do instead.
  auto whole = narcache({"import", "--store", dest, served.url()});
  EXPECT_EQ(whole.exit_code, 1);
  EXPECT_NE(whole.err.find("cannot be listed; name the store paths"), std::string::npos)
      << whole.err;

  // A key the server does not sign with: nothing is imported.
  auto wrong = narcache({"import", "--store", dest, served.url(), a.out, "--trusted-key",
                         "other-1:" + pk.substr(pk.find(':') + 1)});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("lacks a valid signature"), std::string::npos) << wrong.err;

  auto ok = narcache({"import", "--store", dest, served.url(), a.out, "--trusted-key", pk});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("imported 3 items (0 already present, 0 failed)"), std::string::npos)
      << ok.out;
  auto again = narcache({"import", "--store", dest, served.url(), a.out, "--trusted-key", pk});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("imported 0 items (3 already present"), std::string::npos) << again.out;

  auto info = narcache({"info", "--store", dest, a.out});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("available"), std::string::npos) << info.out;
  auto not_copied = narcache({"info", "--store", dest, other.out});
  EXPECT_EQ(not_copied.out.find("available"), std::string::npos) << not_copied.out;
  auto verify = narcache({"verify", "--store", dest});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
}

TEST(HttpImport, UnreachableOrMissingGivesClearErrors) {
  TempDir dir;
  std::string dest = (dir / "dest").string();
  ASSERT_EQ(narcache({"store", "init", "--store", dest}).exit_code, 0);
  // Port 1 on loopback: connection refused, retried, then a clear failure.
  auto refused = narcache(
      {"import", "--store", dest, "http://127.0.0.1:1", "00000000000000000000000000000000-x"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("http://127.0.0.1:1"), std::string::npos) << refused.err;

  ServedStore served(dir / "empty");
  auto missing = narcache(
      {"import", "--store", dest, served.url(), "/nix/store/00000000000000000000000000000000-x"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("HTTP 404"), std::string::npos) << missing.err;
  auto bad = narcache({"import", "--store", dest, "ftp://example"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("unsupported binary cache URL"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace narcache::test
