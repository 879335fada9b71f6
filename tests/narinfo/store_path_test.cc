// Tests of store path parsing and validation (Nix's rules; see store_path.h).
#include "narcache/narinfo/store_path.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace narcache {
namespace {

const std::string kHash = "26wynq10b566n9yin4i99sy9f86g5nxx";

TEST(StorePath, ParsesBaseName) {
  auto p = StorePath::parseBaseName(kHash + "-chain-a");
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->hashPart(), kHash);
  EXPECT_EQ(p->name(), "chain-a");
  EXPECT_EQ(p->baseName(), kHash + "-chain-a");
  EXPECT_EQ(p->fullPath("/nix/store"), "/nix/store/" + kHash + "-chain-a");
  EXPECT_EQ(p->fullPath("/gnu/store"), "/gnu/store/" + kHash + "-chain-a");
}

TEST(StorePath, ParsesFullPath) {
  auto p = StorePath::parse("/nix/store/" + kHash + "-hello-2.12.1");
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->name(), "hello-2.12.1");
  auto g = StorePath::parse("/gnu/store/" + kHash + "-guile-3.0.9", "/gnu/store");
  ASSERT_TRUE(g.has_value()) << g.error().message();
  EXPECT_EQ(g->fullPath("/gnu/store"), "/gnu/store/" + kHash + "-guile-3.0.9");
}

TEST(StorePath, AcceptsEveryLegalNameCharacter) {
  const std::string name = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-._?=";
  auto p = StorePath::parseBaseName(kHash + "-" + name);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->name(), name);
  EXPECT_TRUE(validateStorePathName(name));
  EXPECT_TRUE(validateStorePathName(std::string(211, 'x')));
  EXPECT_TRUE(StorePath::parseBaseName(kHash + "-" + std::string(211, 'x')).has_value());
  EXPECT_TRUE(StorePath::parseBaseName(kHash + "--.-").has_value());
  EXPECT_TRUE(StorePath::parseBaseName(kHash + "-source.drv").has_value());
  // Nix 2.8 allows a leading dot (`nix-store --add .foo` makes "<hash>-.foo"), even "." and
  // "..": the hash part keeps the base name from ever being "." or "..".
  for (const std::string dotted : {".foo", ".", ".."}) {
    EXPECT_TRUE(StorePath::parseBaseName(kHash + "-" + dotted).has_value()) << dotted;
    EXPECT_TRUE(validateStorePathName(dotted)) << dotted;
  }
}

TEST(StorePath, OrderAndEquality) {
  auto a = *StorePath::parseBaseName("0" + kHash.substr(1) + "-b");
  auto b = *StorePath::parseBaseName("1" + kHash.substr(1) + "-a");
  auto a2 = *StorePath::parseBaseName("0" + kHash.substr(1) + "-b");
  EXPECT_EQ(a, a2);
  EXPECT_NE(a, b);
  EXPECT_LT(a, b);
  std::vector<StorePath> v = {b, a};
  std::sort(v.begin(), v.end());
  EXPECT_EQ(v.front(), a);
}

struct Case {
  std::string input;
  std::string error;
};

void expectErrors(const std::vector<Case>& cases, auto&& parse) {
  for (const auto& c : cases) {
    auto r = parse(c.input);
    ASSERT_FALSE(r.has_value()) << "accepted: " << c.input;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(), c.error) << c.input;
  }
}

TEST(StorePath, ParseBaseNameRejectsMalformed) {
  const std::string long_name(212, 'x');
  expectErrors(
      {
          {"", "store path '' is too short"},
          {kHash, "store path '" + kHash + "' is too short"},
          {kHash + "-", "store path '" + kHash + "-' is too short"},
          {"short-name", "store path 'short-name' is too short"},
          {"e" + kHash.substr(1) + "-x",
           "store path 'e" + kHash.substr(1) +
               "-x' contains illegal nix32 character 'e' in its hash"},
          {"o" + kHash.substr(1) + "-x",
           "store path 'o" + kHash.substr(1) +
               "-x' contains illegal nix32 character 'o' in its hash"},
          {kHash.substr(0, 31) + "U-x",
           "store path '" + kHash.substr(0, 31) +
               "U-x' contains illegal nix32 character 'U' in its hash"},
          {kHash + "_x", "store path '" + kHash + "_x' has no '-' after its 32-character hash"},
          {kHash + "-" + long_name,
           "store path '" + kHash + "-" + long_name + "' has a name longer than 211 characters"},
          {kHash + "-a b", "store path '" + kHash + "-a b' contains illegal character ' '"},
          {kHash + "-a/b", "store path '" + kHash + "-a/b' contains illegal character '/'"},
          {kHash + "-a:b", "store path '" + kHash + "-a:b' contains illegal character ':'"},
          {kHash + "-caf\xc3\xa9",
           "store path '" + kHash + "-caf\xc3\xa9' contains illegal character '\\xc3'"},
          {kHash + std::string("-a\0b", 4),
           "store path '" + kHash + "-a\\x00b' contains illegal character '\\x00'"},
      },
      [](const std::string& s) { return StorePath::parseBaseName(s); });
}

TEST(StorePath, ParseRejectsPathsOutsideTheStore) {
  const std::string base = kHash + "-x";
  expectErrors(
      {
          {"", "path '' is not in the store '/nix/store'"},
          {base, "path '" + base + "' is not in the store '/nix/store'"},
          {"/nix/store", "path '/nix/store' is not in the store '/nix/store'"},
          {"/nix/store/", "store path '' is too short"},
          {"/gnu/store/" + base, "path '/gnu/store/" + base + "' is not in the store '/nix/store'"},
          {"/nix/storex/" + base,
           "path '/nix/storex/" + base + "' is not in the store '/nix/store'"},
          {"/nix/store/" + base + "/bin/sh",
           "path '/nix/store/" + base + "/bin/sh' is not directly in the store '/nix/store'"},
          {"/nix/store/" + base + "/",
           "path '/nix/store/" + base + "/' is not directly in the store '/nix/store'"},
          {"/nix/store//" + base,
           "path '/nix/store//" + base + "' is not directly in the store '/nix/store'"},
          {"/nix/store/x", "store path 'x' is too short"},
      },
      [](const std::string& s) { return StorePath::parse(s); });
}

TEST(StorePath, ParseChecksTheStoreDir) {
  auto r = StorePath::parse("/nix/store/" + kHash + "-x", "nix/store");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "store dir 'nix/store' is not an absolute path");
}

TEST(ValidateStoreDir, AcceptsCanonicalAbsolutePaths) {
  for (const char* dir : {"/nix/store", "/gnu/store", "/s", "/a/b/c/d", "/a.b/..c/c.."}) {
    EXPECT_TRUE(validateStoreDir(dir)) << dir;
  }
}

TEST(ValidateStoreDir, RejectsMalformed) {
  expectErrors(
      {
          {"", "store dir '' is not an absolute path"},
          {"nix/store", "store dir 'nix/store' is not an absolute path"},
          {"/", "store dir may not be '/'"},
          {"/nix/store/", "store dir '/nix/store/' has a trailing slash"},
          {"//", "store dir '//' has a trailing slash"},
          {"/nix//store", "store dir '/nix//store' contains '//'"},
          {"//nix", "store dir '//nix' contains '//'"},
          {"/nix/./store", "store dir '/nix/./store' contains a '.' component"},
          {"/nix/..", "store dir '/nix/..' contains a '..' component"},
          {"/..", "store dir '/..' contains a '..' component"},
          {std::string("/ni\0x", 5), "store dir '/ni\\x00x' contains a NUL byte"},
      },
      [](const std::string& s) { return validateStoreDir(s); });
}

TEST(ValidateStorePathName, RejectsMalformed) {
  expectErrors(
      {
          {"", "store path name is empty"},
          {std::string(212, 'n'),
           "store path name '" + std::string(212, 'n') + "' is longer than 211 characters"},
          {"a*b", "store path name 'a*b' contains illegal character '*'"},
          {"tab\t", "store path name 'tab\\x09' contains illegal character '\\x09'"},
      },
      [](const std::string& s) { return validateStorePathName(s); });
}

TEST(ValidateHashPart, RejectsMalformed) {
  EXPECT_TRUE(validateHashPart(kHash));
  expectErrors(
      {
          {"", "store path hash '' has 0 characters, expected 32"},
          {kHash + "0", "store path hash '" + kHash + "0' has 33 characters, expected 32"},
          {kHash.substr(1),
           "store path hash '" + kHash.substr(1) + "' has 31 characters, expected 32"},
          {"t" + kHash.substr(1),
           "store path hash 't" + kHash.substr(1) + "' contains illegal nix32 character 't'"},
          {kHash.substr(0, 31) + "-",
           "store path hash '" + kHash.substr(0, 31) + "-' contains illegal nix32 character '-'"},
      },
      [](const std::string& s) { return validateHashPart(s); });
}

}  // namespace
}  // namespace narcache
