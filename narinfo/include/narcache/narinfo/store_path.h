#pragma once
// Store paths: "<store dir>/<32-char nix32 hash part>-<name>", e.g.
// "/nix/store/26wynq10b566n9yin4i99sy9f86g5nxx-chain-a" or "/gnu/store/...".
//
// Rules, as Nix enforces them: the store dir is an absolute, canonical path ("/" alone is not
// allowed, no trailing slash, no "." or ".." components, no "//"); the hash part is exactly 32
// nix32 characters; the name is 1..211 characters from [A-Za-z0-9+\-._?=] and does not start
// with '.'. Each violation gets its own clear error message. Value type.

#include <compare>
#include <string>
#include <string_view>

#include "narcache/narinfo/error.h"

namespace narcache {

inline constexpr std::string_view kDefaultStoreDir = "/nix/store";
inline constexpr std::size_t kStorePathHashLength = 32;
inline constexpr std::size_t kMaxStorePathNameLength = 211;

Status validateStoreDir(std::string_view store_dir);
Status validateStorePathName(std::string_view name);
Status validateHashPart(std::string_view hash_part);

class StorePath {
 public:
  // Parses "<hash>-<name>" (no directory).
  static Result<StorePath> parseBaseName(std::string_view base_name);
  // Parses a full path that must lie directly in `store_dir`.
  static Result<StorePath> parse(std::string_view full_path,
                                 std::string_view store_dir = kDefaultStoreDir);

  const std::string& hashPart() const { return hash_part_; }
  const std::string& name() const { return name_; }
  std::string baseName() const { return hash_part_ + "-" + name_; }
  std::string fullPath(std::string_view store_dir) const;

  friend bool operator==(const StorePath&, const StorePath&) = default;
  friend auto operator<=>(const StorePath& a, const StorePath& b) {
    return a.baseName() <=> b.baseName();
  }

 private:
  StorePath(std::string hash_part, std::string name)
      : hash_part_(std::move(hash_part)), name_(std::move(name)) {}
  std::string hash_part_;
  std::string name_;
};

}  // namespace narcache
