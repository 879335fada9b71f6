#include "narcache/narinfo/encoding.h"

#include <sodium.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "quoted.h"

namespace narcache {
namespace {

// Reverse table of an alphabet: digit value or -1.
constexpr std::array<std::int8_t, 256> makeReverseTable(std::string_view alphabet) {
  std::array<std::int8_t, 256> table{};
  for (auto& v : table) v = -1;
  for (std::size_t i = 0; i < alphabet.size(); ++i) {
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<std::int8_t>(i);
  }
  return table;
}
constexpr auto kNix32Table = makeReverseTable(kNix32Alphabet);
// Standard base64 (for the lenient decoder: libsodium refuses non-zero padding bits, which
// Nix accepts).
constexpr auto kBase64Table =
    makeReverseTable("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");

constexpr std::int8_t hexValue(char c) {
  if (c >= '0' && c <= '9') return static_cast<std::int8_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<std::int8_t>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<std::int8_t>(c - 'A' + 10);
  return -1;
}

// libsodium must be initialised once before use; sodium_init() is itself thread-safe and a
// function-local static makes the call happen exactly once.
void ensureSodium() {
  static const int kInit = [] {
    int rc = sodium_init();
    if (rc < 0) {
      std::fputs("narcache: sodium_init failed\n", stderr);
      std::abort();
    }
    return rc;
  }();
  (void)kInit;
}

}  // namespace

bool isNix32Char(char c) {
  return kNix32Table[static_cast<unsigned char>(c)] >= 0;
}

// Nix's printHash32: character n (counting from the end) holds bits [5n, 5n+5) of the input
// read as a little-endian number.
std::string nix32Encode(Bytes data) {
  const std::size_t len = nix32Length(data.size());
  std::string out;
  out.reserve(len);
  for (std::size_t k = len; k-- > 0;) {
    const std::size_t b = k * 5;
    const std::size_t i = b / 8;
    const std::size_t j = b % 8;
    unsigned c = static_cast<unsigned>(data[i]) >> j;
    if (i + 1 < data.size()) c |= static_cast<unsigned>(data[i + 1]) << (8 - j);
    out.push_back(kNix32Alphabet[c & 0x1f]);
  }
  return out;
}

Result<std::vector<std::byte>> nix32Decode(std::string_view text, std::size_t bytes) {
  if (text.size() != nix32Length(bytes)) {
    return fail(ErrorCode::kInvalidArgument, "nix32 string " + quoted(text) + " has length " +
                                                 std::to_string(text.size()) + ", expected " +
                                                 std::to_string(nix32Length(bytes)));
  }
  std::vector<std::byte> out(bytes);
  const std::size_t len = text.size();
  for (std::size_t n = 0; n < len; ++n) {
    const char c = text[len - n - 1];
    const int digit = kNix32Table[static_cast<unsigned char>(c)];
    if (digit < 0) {
      return fail(
          ErrorCode::kInvalidArgument,
          "invalid nix32 character " + quoted(std::string_view(&c, 1)) + " in " + quoted(text));
    }
    const std::size_t b = n * 5;
    const std::size_t i = b / 8;
    const std::size_t j = b % 8;
    out[i] |= static_cast<std::byte>((digit << j) & 0xff);
    const unsigned high = static_cast<unsigned>(digit) >> (8 - j);
    if (i + 1 < bytes) {
      out[i + 1] |= static_cast<std::byte>(high);
    } else if (high != 0) {
      return fail(ErrorCode::kInvalidArgument,
                  "nix32 string " + quoted(text) + " has non-zero padding bits");
    }
  }
  return out;
}

std::string base16Encode(Bytes data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (std::byte b : data) {
    const auto v = static_cast<unsigned>(b);
    out.push_back(kDigits[v >> 4]);
    out.push_back(kDigits[v & 0xf]);
  }
  return out;
}

Result<std::vector<std::byte>> base16Decode(std::string_view text) {
  if (text.size() % 2 != 0) {
    return fail(ErrorCode::kInvalidArgument, "base16 string " + quoted(text) + " has odd length");
  }
  std::vector<std::byte> out(text.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = hexValue(text[2 * i]);
    const int lo = hexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      const char c = hi < 0 ? text[2 * i] : text[2 * i + 1];
      return fail(
          ErrorCode::kInvalidArgument,
          "invalid base16 character " + quoted(std::string_view(&c, 1)) + " in " + quoted(text));
    }
    out[i] = static_cast<std::byte>((hi << 4) | lo);
  }
  return out;
}

std::string base64Encode(Bytes data) {
  ensureSodium();
  const std::size_t len = sodium_base64_ENCODED_LEN(data.size(), sodium_base64_VARIANT_ORIGINAL);
  std::string out(len, '\0');  // includes the terminating NUL libsodium writes
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(data.data()),
                    data.size(), sodium_base64_VARIANT_ORIGINAL);
  out.resize(len - 1);
  return out;
}

Result<std::vector<std::byte>> base64Decode(std::string_view text) {
  ensureSodium();
  // Padded input only: its length is a multiple of 4 and decodes to at most 3/4 of it.
  if (text.size() % 4 != 0) {
    return fail(ErrorCode::kInvalidArgument,
                "base64 string " + quoted(text) + " has a length that is not a multiple of 4");
  }
  if (text.empty()) return std::vector<std::byte>{};  // libsodium's buffers must not be null
  std::vector<std::byte> out(text.size() / 4 * 3);
  std::size_t len = 0;
  // With b64_end == nullptr libsodium rejects any character that is not part of a canonical,
  // padded encoding (including non-zero padding bits).
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                        text.size(), nullptr, &len, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return fail(ErrorCode::kInvalidArgument, "invalid base64 string " + quoted(text));
  }
  out.resize(len);
  return out;
}

Result<std::vector<std::byte>> base64DecodeLenient(std::string_view text) {
  std::vector<std::byte> out;
  out.reserve(text.size() / 4 * 3 + 2);
  unsigned acc = 0;   // the low `bits` bits are not yet written
  unsigned bits = 0;  // always < 8 between characters
  for (const char c : text) {
    if (c == '=') break;
    if (c == '\n') continue;
    const int digit = kBase64Table[static_cast<unsigned char>(c)];
    if (digit < 0) {
      return fail(ErrorCode::kInvalidArgument, "invalid base64 string " + quoted(text));
    }
    acc = (acc << 6 | static_cast<unsigned>(digit)) & 0x3fff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::byte>((acc >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace narcache
