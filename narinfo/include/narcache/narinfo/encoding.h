#pragma once
// Text encodings of binary data used by Nix: nix-base32 ("nix32"), base16 and base64.
//
// nix32 uses the alphabet "0123456789abcdfghijklmnpqrsvwxyz" (no e, o, u, t) and, unlike
// RFC 4648, emits the *last* byte's bits first, so it is not a prefix code of the input.
// A 32-byte SHA-256 gives 52 characters; a 20-byte store path hash 32. Decoding rejects
// characters outside the alphabet and encodings whose unused high bits are not zero, as Nix does.
// Pure functions, thread-safe.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache {

inline constexpr std::string_view kNix32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz";

// Length of the nix32 encoding of `bytes` bytes: ceil(bytes * 8 / 5).
constexpr std::size_t nix32Length(std::size_t bytes) {
  return (bytes * 8 + 4) / 5;
}

std::string nix32Encode(Bytes data);
// Decodes text that must encode exactly `bytes` bytes.
Result<std::vector<std::byte>> nix32Decode(std::string_view text, std::size_t bytes);
bool isNix32Char(char c);

std::string base16Encode(Bytes data);                                // lowercase
Result<std::vector<std::byte>> base16Decode(std::string_view text);  // either case

std::string base64Encode(Bytes data);  // standard alphabet, with padding
// Canonical padded base64 only (HTTP Basic credentials; keys and signatures with the padding
// made optional).
Result<std::vector<std::byte>> base64Decode(std::string_view text);
// Nix 2.8's base64Decode, which is what it reads hashes with: decoding stops at the first '=',
// newlines are skipped and leftover bits are dropped, so missing padding and non-zero padding
// bits are accepted; any other character outside the standard alphabet is an error. The caller
// checks the decoded length.
Result<std::vector<std::byte>> base64DecodeLenient(std::string_view text);

}  // namespace narcache
