#pragma once
// Nar file names, "<52 nix32 chars of the file's SHA-256>.nar<ext>" with <ext> one of the
// compressions narcache can read back ("", .zst, .xz, .bz2, .gz, .lz): the only nar file names
// accepted anywhere (store, uploads, downloads). Defined in records.cc.

#include <string>
#include <string_view>

#include "narcache/narinfo/compression.h"
#include "narcache/narinfo/error.h"
#include "narcache/narinfo/hash.h"

namespace narcache::narstore {

struct NarFileName {
  Hash hash;
  Compression compression;
};
// InvalidArgument naming the accepted forms for anything else.
Result<NarFileName> parseNarFileName(std::string_view name);
std::string narFileName(const Hash& file_hash, Compression compression);

}  // namespace narcache::narstore
