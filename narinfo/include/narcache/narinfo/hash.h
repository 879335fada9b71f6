#pragma once
// Content hashes as Nix prints and parses them: SHA-256, SHA-512, SHA-1 and MD5, all through
// OpenSSL's libcrypto (EVP). SHA-1 and MD5 are there for fixed-output derivations
// (outputHashAlgo) and content addresses ("fixed:sha1:..."); NarHash and FileHash stay sha256.
//
// Accepted textual forms, for algo sha256 (sha512, sha1, md5 alike):
//   "sha256:<nix32>"  "sha256:<base16>"  "sha256:<base64>"   (Nix's "algo:digest")
//   "sha256-<base64>"                                         (SRI)
// and, when the algorithm is given by the caller, a bare digest in any of the three encodings
// (told apart by length: base16 is 2 chars a byte, nix32 ceil(8n/5) — 26 for md5, 32 for sha1,
// 52 for sha256, 103 for sha512 —, base64 padded). As in Nix 2.8, base64 is decoded leniently
// (base64DecodeLenient: SRI may omit the padding, padding bits may be non-zero), and must decode
// to exactly the digest size. Printing defaults to "<algo>:<nix32>", as narinfo files use.
// Value type; Hasher is a single-threaded streaming Sink.

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache {

enum class HashAlgo { kSha256, kSha512, kSha1, kMd5 };

std::string_view hashAlgoName(HashAlgo algo);           // "sha256", "sha512", "sha1", "md5"
Result<HashAlgo> parseHashAlgo(std::string_view name);  // exactly those names (lower case)
std::size_t hashSize(HashAlgo algo);                    // 32, 64, 20, 16

enum class HashFormat { kNix32, kBase16, kBase64, kSri };

class Hash {
 public:
  static constexpr std::size_t kMaxSize = 64;

  // The zero hash of an algorithm (sha256 by default). The default constructor is implicit so
  // that aggregates holding a Hash (NarInfo) can be value-initialised with `{}`.
  Hash() : Hash(HashAlgo::kSha256) {}
  explicit Hash(HashAlgo algo);
  // Takes exactly hashSize(algo) bytes.
  static Result<Hash> fromBytes(HashAlgo algo, Bytes digest);

  // "algo:digest" or SRI; the algorithm must be spelled out.
  static Result<Hash> parse(std::string_view text);
  // Like parse(), but also accepts a bare digest of `algo` in nix32, base16 or base64;
  // a spelled-out algorithm must equal `algo`.
  static Result<Hash> parseAs(std::string_view text, HashAlgo algo);
  // Only a bare digest of `algo` in nix32, base16 or base64 (Nix's parseNonSRIUnprefixed): the
  // hash field of a .drv output, the digest of a content address.
  static Result<Hash> parseUnprefixed(std::string_view digest, HashAlgo algo);

  // kNix32/kBase16/kBase64 print "algo:digest"; kSri prints "algo-base64".
  std::string toString(HashFormat format = HashFormat::kNix32) const;
  // The digest alone, without the algorithm prefix (kSri is treated as kBase64).
  std::string digestString(HashFormat format) const;

  HashAlgo algo() const { return algo_; }
  Bytes bytes() const { return Bytes(digest_.data(), hashSize(algo_)); }

  friend bool operator==(const Hash& a, const Hash& b);

 private:
  HashAlgo algo_;
  std::array<std::byte, kMaxSize> digest_{};
};

// Streaming hasher: write() any number of times, then finish()/digest() once.
class Hasher final : public Sink {
 public:
  explicit Hasher(HashAlgo algo = HashAlgo::kSha256);
  ~Hasher() override;
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  Status write(Bytes data) override;
  // Finalises (idempotent) and returns the hash of everything written.
  Hash digest();
  // Total bytes written.
  std::uint64_t size() const { return size_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  HashAlgo algo_;
  std::uint64_t size_ = 0;
  std::optional<Hash> result_;
};

Hash hashBytes(HashAlgo algo, Bytes data);
inline Hash hashString(HashAlgo algo, std::string_view s) {
  return hashBytes(algo, asBytes(s));
}

// Nix's compressHash: XOR-folds a digest into `size` bytes (used for store path hashes, 20 bytes).
std::vector<std::byte> compressHash(const Hash& hash, std::size_t size);

}  // namespace narcache
