// The format commands of the narcache binary, judged by the real Nix client (nix-bin 2.8):
// nar dump/restore/ls, hash path/file, key generate, narinfo check/sign, (de)compress.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "narinfo/nar_restore_cases.h"
#include "support/support.h"

namespace narcache::test {
namespace {

namespace fs = std::filesystem;
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(RestoreContract);  // only its NAR builders are used

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A small tree with the node kinds and name orderings that matter.
void makeTree(const fs::path& root) {
  fs::create_directories(root / "dir" / "nested" / "deeper");
  writeFile(root / "file", "hello\n");
  writeFile(root / "empty", "");
  writeFile(root / "exec", "#!/bin/sh\necho hi\n");
  fs::permissions(root / "exec", fs::perms::owner_exec, fs::perm_options::add);
  writeFile(root / "B", "upper sorts before lower by bytes");
  writeFile(root / "a", "lower");
  writeFile(root / "dir" / "nested" / "deeper" / "x", std::string(100000, 'x'));
  writeFile(root / "d\xc3\xa9j\xc3\xa0", "non-ascii name");
  fs::create_directories(root / "emptydir");
  fs::create_symlink("file", root / "rel-link");
  fs::create_symlink("/nix/store/does-not-exist", root / "abs-link");
}

class FormatCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!haveNix()) GTEST_SKIP() << "nix-bin is not installed (scripts/setup.sh installs it)";
    makeTree(tmp_ / "tree");
  }
  TempDir tmp_;
  NixEnv nix_;
};

TEST_F(FormatCli, NarDumpEqualsNixStoreDump) {
  auto ours = narcache({"nar", "dump", (tmp_ / "tree").string()});
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  auto theirs = nix_.run({"nix-store", "--dump", (tmp_ / "tree").string()});
  ASSERT_EQ(theirs.exit_code, 0) << theirs.err;
  EXPECT_EQ(ours.out, theirs.out);
}

TEST_F(FormatCli, NarRestoreRoundTripsAndListingParses) {
  auto dump = narcache({"nar", "dump", (tmp_ / "tree").string()});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  RunOptions in;
  in.stdin_data = dump.out;
  auto restored = narcache({"nar", "restore", (tmp_ / "copy").string()}, in);
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  auto diff =
      run({"diff", "-r", "--no-dereference", (tmp_ / "tree").string(), (tmp_ / "copy").string()});
  EXPECT_EQ(diff.exit_code, 0) << diff.out << diff.err;
  EXPECT_TRUE(fs::status(tmp_ / "copy" / "exec").permissions() == fs::perms(0755));

  // Restoring onto an existing destination is refused and leaves it alone.
  auto again = narcache({"nar", "restore", (tmp_ / "copy").string()}, in);
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("narcache: "), std::string::npos) << again.err;

  // Any worker count gives the same tree; a bad count is a usage error.
  for (std::string jobs : {"1", "7"}) {
    fs::path copy = tmp_ / ("copy-jobs" + jobs);
    auto r = narcache({"nar", "restore", "--jobs", jobs, copy.string()}, in);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto same = run({"diff", "-r", "--no-dereference", (tmp_ / "tree").string(), copy.string()});
    EXPECT_EQ(same.exit_code, 0) << same.out << same.err;
  }
  // A NAR file on stdin is mapped rather than read: the same tree, and a truncated file gets
  // the same parser error as a truncated pipe.
  writeFile(tmp_ / "tree.nar", dump.out);
  writeFile(tmp_ / "cut.nar", dump.out.substr(0, dump.out.size() - 100));
  for (const char* name : {"tree", "cut"}) {
    fs::path dest = tmp_ / (std::string("from-file-") + name);
    auto r = sh(std::string("exec '") + NARCACHE_BIN + "' nar restore '" + dest.string() + "' < '" +
                (tmp_ / name).string() + ".nar'");
    if (std::string(name) == "tree") {
      ASSERT_EQ(r.exit_code, 0) << r.err;
      auto same = run({"diff", "-r", "--no-dereference", (tmp_ / "tree").string(), dest.string()});
      EXPECT_EQ(same.exit_code, 0) << same.out << same.err;
    } else {
      EXPECT_EQ(r.exit_code, 1);
      EXPECT_NE(r.err.find("restoring into '" + dest.string() + "': NAR offset " +
                           std::to_string(dump.out.size() - 100) + ": unexpected end of NAR"),
                std::string::npos)
          << r.err;
    }
  }
  auto bad_jobs = narcache({"nar", "restore", "--jobs", "-1", (tmp_ / "x").string()}, in);
  EXPECT_NE(bad_jobs.exit_code, 0);
  EXPECT_FALSE(fs::exists(tmp_ / "x"));

  // A truncated NAR: the parser's error, with the destination named.
  RunOptions cut;
  cut.stdin_data = dump.out.substr(0, dump.out.size() - 100);
  auto truncated = narcache({"nar", "restore", (tmp_ / "cut").string()}, cut);
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_NE(
      truncated.err.find("narcache: restoring into '" + (tmp_ / "cut").string() + "': NAR offset "),
      std::string::npos)
      << truncated.err;

  auto ls = narcache({"nar", "ls"}, in);
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_EQ(ls.out.rfind("{\"version\":1,\"root\":{\"type\":\"directory\"", 0), 0u) << ls.out;
}

// A NAR file on stdin that shrinks while it is being restored: the parser may touch a page
// past the new end (SIGBUS, caught) or a worker's copy may find the file ended; either way a
// clear error and exit code 1, never a death by signal.
TEST(FormatCliShrink, ANarFileThatShrinksDuringRestoreIsReported) {
  TempDir tmp;
  std::vector<std::pair<std::string, std::string>> entries;
  for (int i = 0; i < 8000; ++i) {
    entries.emplace_back("f" + std::to_string(10000 + i),
                         testnar::regular(std::string(16 << 10, 'x')));
  }
  const std::string data = testnar::nar(testnar::directory(entries));
  entries.clear();
  // The restore takes a good fraction of a second; should it still win the race (this thread
  // kept off the CPU), the round is run again.
  bool raced = false;
  for (int round = 0; round < 5 && !raced; ++round) {
    writeFile(tmp / "big.nar", data);
    fs::path dest = tmp / ("dest" + std::to_string(round));
    BackgroundProcess restore({"/bin/sh", "-c",
                               std::string("exec '") + NARCACHE_BIN + "' nar restore --jobs 1 '" +
                                   dest.string() + "' < '" + (tmp / "big.nar").string() + "'"});
    for (int i = 0; i < 10000 && !fs::exists(dest); ++i) ::usleep(500);
    ASSERT_TRUE(fs::exists(dest)) << "the restore never started: " << restore.err();
    fs::resize_file(tmp / "big.nar", 4096);
    int code = restore.stop(0);  // waits
    std::string err = restore.err();
    if (code == 0) continue;  // it was done before the file shrank
    raced = true;
    EXPECT_EQ(code, 1) << err;
    bool caught = err.find("narcache: the NAR file on stdin shrank while it was being restored") !=
                  std::string::npos;
    bool ended = err.find("the NAR file ended early (did it shrink while being restored?)") !=
                 std::string::npos;
    EXPECT_TRUE(caught || ended) << err;
  }
  EXPECT_TRUE(raced) << "every restore finished before its NAR file shrank";
}

TEST_F(FormatCli, HashPathMatchesNixInEveryFormat) {
  std::string tree = (tmp_ / "tree").string();
  auto nix32 = nix_.run({"nix", "hash", "path", "--base32", tree});
  ASSERT_EQ(nix32.exit_code, 0) << nix32.err;
  auto ours = narcache({"hash", "path", tree});
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  EXPECT_EQ(trim(ours.out), "sha256:" + trim(nix32.out));

  auto sri = nix_.run({"nix", "hash", "path", tree});
  EXPECT_EQ(trim(narcache({"hash", "path", "--format", "sri", tree}).out), trim(sri.out));
  auto b16 = nix_.run({"nix", "hash", "path", "--base16", tree});
  EXPECT_EQ(trim(narcache({"hash", "path", "--format", "base16", tree}).out),
            "sha256:" + trim(b16.out));
  auto sha512 = nix_.run({"nix", "hash", "path", "--type", "sha512", "--base32", tree});
  EXPECT_EQ(trim(narcache({"hash", "path", "--type", "sha512", tree}).out),
            "sha512:" + trim(sha512.out));
}

TEST_F(FormatCli, HashFileMatchesNix) {
  std::string file = (tmp_ / "tree" / "dir" / "nested" / "deeper" / "x").string();
  auto theirs = nix_.run({"nix", "hash", "file", "--base32", file});
  ASSERT_EQ(theirs.exit_code, 0) << theirs.err;
  EXPECT_EQ(trim(narcache({"hash", "file", file}).out), "sha256:" + trim(theirs.out));
}

TEST_F(FormatCli, ErrorsGoToStderrWithNonZeroExit) {
  auto missing = narcache({"nar", "dump", (tmp_ / "nope").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(missing.out.empty());
  EXPECT_NE(missing.err.find("narcache: "), std::string::npos) << missing.err;

  auto bad_format = narcache({"hash", "path", "--format", "hex", (tmp_ / "tree").string()});
  EXPECT_EQ(bad_format.exit_code, 1);
  EXPECT_NE(bad_format.err.find("unknown hash format 'hex'"), std::string::npos);

  RunOptions garbage;
  garbage.stdin_data = "this is not a NAR";
  auto bad_nar = narcache({"nar", "ls"}, garbage);
  EXPECT_EQ(bad_nar.exit_code, 1);
  EXPECT_FALSE(bad_nar.err.empty());

  EXPECT_NE(narcache({}).exit_code, 0);
  for (std::vector<std::string> help : {std::vector<std::string>{"--help"},
                                        {"nar", "dump", "--help"},
                                        {"hash", "path", "--help"},
                                        {"key", "generate", "--help"},
                                        {"narinfo", "check", "--help"},
                                        {"compress", "--help"}}) {
    auto r = narcache(help);
    EXPECT_EQ(r.exit_code, 0) << help[0];
    EXPECT_NE(r.out.find("Usage"), std::string::npos);
  }
}

TEST_F(FormatCli, CompressionRoundTripsAndInteroperatesWithZstdTool) {
  std::string data;
  for (int i = 0; i < 20000; ++i) data += "line " + std::to_string(i * 7919 % 1000) + "\n";
  for (std::string method : {"none", "zstd", "xz", "bzip2", "gzip", "lzip"}) {
    RunOptions in;
    in.stdin_data = data;
    auto c = narcache({"compress", "--method", method}, in);
    ASSERT_EQ(c.exit_code, 0) << method << ": " << c.err;
    RunOptions back;
    back.stdin_data = c.out;
    auto d = narcache({"decompress", "--method", method}, back);
    ASSERT_EQ(d.exit_code, 0) << method << ": " << d.err;
    EXPECT_EQ(d.out, data) << method;
  }
  writeFile(tmp_ / "data", data);
  auto z = sh("zstd -q -c " + (tmp_ / "data").string());
  ASSERT_EQ(z.exit_code, 0) << z.err;
  RunOptions in;
  in.stdin_data = z.out;
  EXPECT_EQ(narcache({"decompress", "--method", "zstd"}, in).out, data);

  RunOptions unknown;
  auto r = narcache({"compress", "--method", "lz4"}, unknown);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("lz4"), std::string::npos) << r.err;
}

// Signs narinfos of a cache written by `nix copy` (unsigned) with a narcache key, then asks Nix
// to substitute from it with only that key trusted.
class SignedCache : public FormatCli {
 protected:
  void SetUp() override {
    FormatCli::SetUp();
    if (IsSkipped()) return;
    store_ = nix_.newStore("src-store").string();
    auto add = nix_.run({"nix-store", "--store", store_, "--add", (tmp_ / "tree").string()});
    ASSERT_EQ(add.exit_code, 0) << add.err;
    path_ = trim(add.out);
    cache_ = (tmp_ / "cache").string();
    auto copy = nix_.run({"nix", "copy", "--store", store_, "--to",
                          "file://" + cache_ + "?compression=zstd", path_});
    ASSERT_EQ(copy.exit_code, 0) << copy.err;
    auto gen = narcache({"key", "generate", "--name", "narcache-test-1", "--secret",
                         (tmp_ / "sk").string(), "--public", (tmp_ / "pk").string()});
    ASSERT_EQ(gen.exit_code, 0) << gen.err;
    public_key_ = trim(readFile(tmp_ / "pk"));
    EXPECT_EQ(trim(gen.out), public_key_);
    EXPECT_EQ(fs::status(tmp_ / "sk").permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write);
    std::string hash = fs::path(path_).filename().string().substr(0, 32);
    narinfo_ = fs::path(cache_) / (hash + ".narinfo");
    // Nix skips the signature check for content-addressed paths; drop the CA line (it is not
    // signed) so that the path is judged as an input-addressed one.
    std::string text = readFile(narinfo_);
    auto ca = text.find("CA: ");
    ASSERT_NE(ca, std::string::npos);
    text.erase(ca, text.find('\n', ca) + 1 - ca);
    writeFile(narinfo_, text);
    auto signed_info =
        narcache({"narinfo", "sign", "--secret-key", (tmp_ / "sk").string(), narinfo_.string()});
    ASSERT_EQ(signed_info.exit_code, 0) << signed_info.err;
    ASSERT_NE(signed_info.out.find("Sig: narcache-test-1:"), std::string::npos);
    writeFile(narinfo_, signed_info.out);
  }

  ProcessResult substitute(const std::string& trusted) {
    return nix_.run({"nix", "copy", "--from", "file://" + cache_, "--to",
                     nix_.newStore("dst-" + std::to_string(++copies_)).string(), "--option",
                     "require-sigs", "true", "--option", "trusted-public-keys", trusted, path_});
  }

  std::string store_, path_, cache_, public_key_;
  fs::path narinfo_;
  int copies_ = 0;
};

TEST_F(SignedCache, NixAcceptsNarcacheSignature) {
  auto ok = substitute(public_key_);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  auto check = narcache({"narinfo", "check", "--trusted-key", public_key_, narinfo_.string()});
  EXPECT_EQ(check.exit_code, 0) << check.err;
}

TEST_F(SignedCache, NixRefusesAnotherKey) {
  auto gen = narcache({"key", "generate", "--name", "other-1", "--secret", (tmp_ / "sk2").string(),
                       "--public", (tmp_ / "pk2").string()});
  ASSERT_EQ(gen.exit_code, 0);
  std::string other = trim(readFile(tmp_ / "pk2"));
  auto refused = substitute(other);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("lacks a valid signature"), std::string::npos) << refused.err;
  auto check = narcache({"narinfo", "check", "--trusted-key", other, narinfo_.string()});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_NE(check.err.find("no valid signature"), std::string::npos) << check.err;
}

TEST_F(SignedCache, NixRefusesTamperedNarInfo) {
  std::string text = readFile(narinfo_);
  auto pos = text.find("NarSize: ");
  ASSERT_NE(pos, std::string::npos);
  auto end = text.find('\n', pos);
  std::string size = text.substr(pos + 9, end - pos - 9);
  text.replace(pos + 9, size.size(), std::to_string(std::stoull(size) + 1));
  writeFile(narinfo_, text);
  auto refused = substitute(public_key_);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("lacks a valid signature"), std::string::npos) << refused.err;
  auto check = narcache({"narinfo", "check", "--trusted-key", public_key_, narinfo_.string()});
  EXPECT_EQ(check.exit_code, 1);
}

TEST_F(SignedCache, CheckReportsMalformedNarInfo) {
  writeFile(tmp_ / "bad.narinfo", "StorePath: /nix/store/tooshort-x\n");
  auto r = narcache({"narinfo", "check", (tmp_ / "bad.narinfo").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.narinfo line 1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace narcache::test
