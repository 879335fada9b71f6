#pragma once
// NAR (Nix ARchive): the canonical serialisation of a file-system tree, byte-compatible with
// `nix-store --dump` / `--restore`.
//
// Wire format: strings are a u64 little-endian length, the bytes, zero padding to 8 bytes.
//   nar      = "nix-archive-1" node
//   node     = "(" "type" ( "regular" ["executable" ""] "contents" <bytes>
//                         | "symlink" "target" <target>
//                         | "directory" { "entry" "(" "name" <n> "node" node ")" } ) ")"
// Reader rules (all enforced, as Nix's parser does): the magic; padding bytes are zero; entry
// names strictly ascending by bytes, non-empty, not "." or "..", no '/' or NUL, at most 255
// bytes; symlink targets non-empty, at most 4095 bytes, no NUL; nesting at most 256
// directories deep; only the three node types; nothing after the root node's ")".
// Everything streams: memory use is constant whatever the NAR's size. Not thread-safe.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache {

inline constexpr std::size_t kMaxNarNameLength = 255;
inline constexpr std::size_t kMaxNarTargetLength = 4095;
inline constexpr std::size_t kMaxNarDepth = 256;

// Serialises the tree at `path` (regular file, directory or symlink; not followed) into `sink`.
// Only the owner's executable bit of file modes is kept; other file types, and trees a NAR
// cannot hold (deeper than kMaxNarDepth), are InvalidArgument; a missing path is NotFound.
// Does not call sink.finish().
Status dumpPath(const std::filesystem::path& path, Sink& sink);

// Receives the events of a NAR parse. Paths are relative to the root, '/'-joined; the root is "".
// Returning an error from a callback stops the parse with that error.
class NarVisitor {
 public:
  virtual ~NarVisitor() = default;
  virtual Status directory(std::string_view path) = 0;
  // The directory `path` (announced by directory()) has no more entries. Optional.
  virtual Status directoryEnd(std::string_view /*path*/) { return {}; }
  virtual Status symlink(std::string_view path, std::string_view target) = 0;
  // A regular file of `size` bytes whose contents begin at `nar_offset` in the NAR. Its bytes
  // follow in zero or more contents() calls, then fileEnd(). A chunk is valid during the call,
  // or, when the source reads in place (Source::readsInPlace), as long as the source's bytes.
  virtual Status fileBegin(std::string_view path, bool executable, std::uint64_t size,
                           std::uint64_t nar_offset) = 0;
  virtual Status contents(Bytes chunk) = 0;
  virtual Status fileEnd() = 0;
};

// Parses a whole NAR from `source`, enforcing every rule above. Errors are InvalidArgument
// with the offset and what is wrong ("NAR offset 112: entry names not in ascending order"); an
// early end is reported at the offset where the data ends. Errors of the source keep their code
// and gain the offset as context; an error returned by the visitor comes back unchanged.
// "Depth" counts path components: the root is 0, an entry of the root 1, and so on.
// Returns the NAR's size in bytes.
Result<std::uint64_t> parseNar(Source& source, NarVisitor& visitor);

// Checks a NAR without materialising it; returns its size.
Result<std::uint64_t> validateNar(Source& source);

// Restores a NAR into `dest`, which must not exist (AlreadyExists, even for a dangling symlink;
// its parent must). Files get mode 0644 or 0755, directories 0755, whatever the umask. Never
// creates, follows or writes anything outside `dest`: names are validated by the parser, and
// every file is opened relative to its directory's fd with O_NOFOLLOW (RestoreTarget in
// nar_restore.h keeps these rules). On error the partial tree is left inside `dest` for the
// caller to remove. narstore's restoreNarParallel restores the same way on several threads.
Status restoreNar(Source& source, const std::filesystem::path& dest);

// Nix's `.ls` listing of a NAR as JSON text, byte-identical to what Nix 2.8 writes (same key
// order, no whitespace, Nix's string escaping, non-UTF-8 name bytes passed through raw):
// {"version":1,"root":{"type":"directory","entries":{"f":{"type":"regular","size":7,
//  "executable":true,"narOffset":264},"l":{"type":"symlink","target":"f"}}}}
Result<std::string> narListing(Source& source);

}  // namespace narcache
