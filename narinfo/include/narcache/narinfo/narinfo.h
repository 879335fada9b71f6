#pragma once
// NarInfo: the metadata of one store path in a binary cache ("<hash>.narinfo").
//
// Text format: "Key: value" lines, each ending in '\n' (a final newline is required). Keys, in
// the order Nix writes them: StorePath, URL, Compression, FileHash, FileSize, NarHash, NarSize,
// References (space-separated base names, may be empty), Deriver (base name), System,
// Sig (repeatable; kept sorted and unique, as Nix keeps them in a std::set), CA. Unknown keys
// are ignored; a missing Compression means "bzip2";
// StorePath, URL, NarHash and NarSize are required. Parse errors name the source, the line and
// the field: "x.narinfo line 3: NarHash: not a valid hash".
// toString() writes Nix's layout, so parse-then-serialise of a narinfo written by `nix copy`
// yields the same text (an empty "References: " line keeps its trailing space). Value type.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/hash.h"
#include "narcache/narinfo/store_path.h"

namespace narcache {

struct NarInfo {
  std::string store_dir = std::string(kDefaultStoreDir);
  StorePath path = *StorePath::parseBaseName("00000000000000000000000000000000-x");
  std::string url;  // relative to the cache root, e.g. "nar/<filehash>.nar.zst"
  std::string compression = "bzip2";
  std::optional<Hash> file_hash;  // absent in some narinfos (e.g. written by old tools)
  std::optional<std::uint64_t> file_size;
  Hash nar_hash;
  std::uint64_t nar_size = 0;
  std::vector<StorePath> references;  // kept sorted by base name, unique
  std::optional<StorePath> deriver;
  std::string system;             // empty = absent
  std::vector<std::string> sigs;  // "keyname:base64", sorted and unique (use addSignature)
  std::string ca;                 // empty = absent

  // Parses `text`; `source` names it in errors ("<hash>.narinfo", a file path...).
  // `store_dir` is the store dir StorePath must lie in.
  static Result<NarInfo> parse(std::string_view text, std::string_view source = "narinfo",
                               std::string_view store_dir = kDefaultStoreDir);

  // Adds `sig` where it sorts, unless it is already there.
  void addSignature(std::string sig);

  // Nix's layout; the sigs sorted and unique even if the caller did not keep them so.
  std::string toString() const;

  // "1;<path>;<narhash sha256:nix32>;<narsize>;<comma-joined full reference paths>"
  std::string fingerprint() const;

  std::string fullPath() const { return path.fullPath(store_dir); }

  // Every field equal (so toString() is equal too). Compares in place: no allocation.
  friend bool operator==(const NarInfo&, const NarInfo&) = default;
};

}  // namespace narcache
