#include "narcache/narinfo/hash.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "narcache/narinfo/encoding.h"
#include "quoted.h"

namespace narcache {
namespace {

[[noreturn]] void opensslDied(const char* what) {
  std::fprintf(stderr, "narcache: OpenSSL %s failed\n", what);
  std::abort();
}

// The fetched digest implementations. Fetching once (instead of EVP_sha256() on each init)
// avoids OpenSSL 3's per-init provider lookup; these are immutable and thread-safe to share.
// MD5 and SHA-1 come from OpenSSL's default provider (not FIPS-only configurations).
const EVP_MD* evpMd(HashAlgo algo) {
  static EVP_MD* const kSha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  static EVP_MD* const kSha512 = EVP_MD_fetch(nullptr, "SHA512", nullptr);
  static EVP_MD* const kSha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  static EVP_MD* const kMd5 = EVP_MD_fetch(nullptr, "MD5", nullptr);
  const EVP_MD* md = nullptr;
  switch (algo) {
    case HashAlgo::kSha256: md = kSha256; break;
    case HashAlgo::kSha512: md = kSha512; break;
    case HashAlgo::kSha1: md = kSha1; break;
    case HashAlgo::kMd5: md = kMd5; break;
  }
  if (md == nullptr) opensslDied("EVP_MD_fetch");
  return md;
}

// Decodes a bare digest of `algo`, telling the encoding apart by length as Nix does. SRI is
// always base64, of any length (Nix 2.8 accepts "sha256-" and 43 characters, without padding).
Result<Hash> parseDigest(std::string_view digest, HashAlgo algo, bool sri, std::string_view whole) {
  const std::size_t size = hashSize(algo);
  Result<std::vector<std::byte>> bytes = fail(ErrorCode::kInternal, "unreachable");
  if (!sri && digest.size() == size * 2) {
    bytes = base16Decode(digest);
  } else if (!sri && digest.size() == nix32Length(size)) {
    bytes = nix32Decode(digest, size);
  } else if (sri || digest.size() == (size + 2) / 3 * 4) {
    bytes = base64DecodeLenient(digest);
    if (bytes && bytes->size() != size) {
      return fail(ErrorCode::kInvalidArgument, "hash " + quoted(whole) +
                                                   " has wrong length for hash type '" +
                                                   std::string(hashAlgoName(algo)) + "'");
    }
  } else {
    return fail(ErrorCode::kInvalidArgument, "hash " + quoted(whole) +
                                                 " has wrong length for hash type '" +
                                                 std::string(hashAlgoName(algo)) + "'");
  }
  if (!bytes) {
    return fail(ErrorCode::kInvalidArgument,
                "invalid hash " + quoted(whole) + ": " + bytes.error().message());
  }
  return Hash::fromBytes(algo, *bytes);
}

}  // namespace

std::string_view hashAlgoName(HashAlgo algo) {
  switch (algo) {
    case HashAlgo::kSha256: return "sha256";
    case HashAlgo::kSha512: return "sha512";
    case HashAlgo::kSha1: return "sha1";
    case HashAlgo::kMd5: return "md5";
  }
  return "unknown";
}

Result<HashAlgo> parseHashAlgo(std::string_view name) {
  if (name == "sha256") return HashAlgo::kSha256;
  if (name == "sha512") return HashAlgo::kSha512;
  if (name == "sha1") return HashAlgo::kSha1;
  if (name == "md5") return HashAlgo::kMd5;
  return fail(ErrorCode::kInvalidArgument, "unknown hash algorithm " + quoted(name));
}

std::size_t hashSize(HashAlgo algo) {
  switch (algo) {
    case HashAlgo::kSha256: return 32;
    case HashAlgo::kSha512: return 64;
    case HashAlgo::kSha1: return 20;
    case HashAlgo::kMd5: return 16;
  }
  return 0;
}

Hash::Hash(HashAlgo algo) : algo_(algo) {}

Result<Hash> Hash::fromBytes(HashAlgo algo, Bytes digest) {
  if (digest.size() != hashSize(algo)) {
    return fail(ErrorCode::kInvalidArgument, std::string(hashAlgoName(algo)) + " digest must be " +
                                                 std::to_string(hashSize(algo)) + " bytes, got " +
                                                 std::to_string(digest.size()));
  }
  Hash hash(algo);
  std::memcpy(hash.digest_.data(), digest.data(), digest.size());
  return hash;
}

Result<Hash> Hash::parse(std::string_view text) {
  const std::size_t sep = text.find_first_of(":-");
  if (sep == std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument, "hash " + quoted(text) + " does not include a type");
  }
  auto algo = parseHashAlgo(text.substr(0, sep));
  if (!algo) {
    return fail(ErrorCode::kInvalidArgument,
                "hash " + quoted(text) + ": " + algo.error().message());
  }
  return parseDigest(text.substr(sep + 1), *algo, text[sep] == '-', text);
}

Result<Hash> Hash::parseAs(std::string_view text, HashAlgo algo) {
  if (text.find_first_of(":-") == std::string_view::npos) {
    return parseDigest(text, algo, false, text);
  }
  auto hash = parse(text);
  if (hash && hash->algo() != algo) {
    return fail(ErrorCode::kInvalidArgument, "hash " + quoted(text) + " should have type '" +
                                                 std::string(hashAlgoName(algo)) + "'");
  }
  return hash;
}

Result<Hash> Hash::parseUnprefixed(std::string_view digest, HashAlgo algo) {
  return parseDigest(digest, algo, false, digest);
}

std::string Hash::digestString(HashFormat format) const {
  switch (format) {
    case HashFormat::kNix32: return nix32Encode(bytes());
    case HashFormat::kBase16: return base16Encode(bytes());
    case HashFormat::kBase64:
    case HashFormat::kSri: return base64Encode(bytes());
  }
  return {};
}

std::string Hash::toString(HashFormat format) const {
  std::string out(hashAlgoName(algo_));
  out += format == HashFormat::kSri ? '-' : ':';
  out += digestString(format);
  return out;
}

bool operator==(const Hash& a, const Hash& b) {
  return a.algo_ == b.algo_ &&
         std::memcmp(a.digest_.data(), b.digest_.data(), hashSize(a.algo_)) == 0;
}

// The EVP context is allocated once per Hasher; write() only feeds it (no allocation).
struct Hasher::Impl {
  EVP_MD_CTX* ctx = nullptr;
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Hasher::Hasher(HashAlgo algo) : impl_(std::make_unique<Impl>()), algo_(algo) {
  impl_->ctx = EVP_MD_CTX_new();
  if (impl_->ctx == nullptr) opensslDied("EVP_MD_CTX_new");
  if (EVP_DigestInit_ex(impl_->ctx, evpMd(algo), nullptr) != 1) opensslDied("EVP_DigestInit_ex");
}

Hasher::~Hasher() = default;

Status Hasher::write(Bytes data) {
  if (result_) return fail(ErrorCode::kInternal, "Hasher::write after digest()");
  if (EVP_DigestUpdate(impl_->ctx, data.data(), data.size()) != 1) {
    opensslDied("EVP_DigestUpdate");
  }
  size_ += data.size();
  return {};
}

Hash Hasher::digest() {
  if (!result_) {
    std::array<std::byte, Hash::kMaxSize> out{};
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(impl_->ctx, reinterpret_cast<unsigned char*>(out.data()), &len) != 1) {
      opensslDied("EVP_DigestFinal_ex");
    }
    result_ = *Hash::fromBytes(algo_, Bytes(out.data(), len));
  }
  return *result_;
}

Hash hashBytes(HashAlgo algo, Bytes data) {
  std::array<std::byte, Hash::kMaxSize> out{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
                 evpMd(algo), nullptr) != 1) {
    opensslDied("EVP_Digest");
  }
  return *Hash::fromBytes(algo, Bytes(out.data(), len));
}

std::vector<std::byte> compressHash(const Hash& hash, std::size_t size) {
  std::vector<std::byte> out(size);
  if (size == 0) return out;
  const Bytes in = hash.bytes();
  for (std::size_t i = 0; i < in.size(); ++i) out[i % size] ^= in[i];
  return out;
}

}  // namespace narcache
