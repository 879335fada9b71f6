#pragma once
// Compression streams for nar files: zstd (libzstd, optionally multi-threaded), xz, bzip2,
// gzip, lzip (libarchive's raw filters) and none, in both directions, streaming in constant
// memory. Method names are the ones narinfo's Compression field uses: "none", "zstd", "xz",
// "bzip2", "gzip", "lzip" ("br" is recognised and refused as unsupported). Single-threaded
// objects (zstd's worker threads are internal to one stream).

#include <memory>
#include <string>
#include <string_view>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache {

enum class Compression { kNone, kZstd, kXz, kBzip2, kGzip, kLzip };

// InvalidArgument for unknown names, with the list of supported ones.
Result<Compression> parseCompression(std::string_view name);
std::string_view compressionName(Compression c);
// File name extension Nix uses: "" (".nar"), ".zst", ".xz", ".bz2", ".gz", ".lz".
std::string_view compressionExtension(Compression c);

struct CompressOptions {
  int level = -1;   // -1: the method's default (zstd 3, xz 6, ...)
  int threads = 0;  // zstd only: 0 = single-threaded, N = N worker threads
};

// Returns a Sink that compresses into `out` (not owned; must outlive it). finish() writes the
// trailer (it does not finish `out`).
Result<std::unique_ptr<Sink>> makeCompressor(Compression method, Sink& out,
                                             CompressOptions options = {});

// Returns a Source that yields the decompression of `in` (not owned). Corrupt or truncated
// input is an InvalidArgument error naming the method.
Result<std::unique_ptr<Source>> makeDecompressor(Compression method, Source& in);

}  // namespace narcache
