// Tests of nix32, base16 and base64. Expected nix32/base64 strings of known digests were
// computed with the real Nix 2.8 tools (`nix hash file --base32/--base16/--base64`).
#include "narcache/narinfo/encoding.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace narcache {
namespace {

std::vector<std::byte> bytesOf(std::string_view s) {
  auto b = asBytes(s);
  return {b.begin(), b.end()};
}

std::vector<std::byte> fromHex(std::string_view hex) {
  auto r = base16Decode(hex);
  EXPECT_TRUE(r.has_value()) << hex;
  return r ? *r : std::vector<std::byte>{};
}

TEST(Nix32, LengthFormula) {
  EXPECT_EQ(nix32Length(0), 0u);
  EXPECT_EQ(nix32Length(1), 2u);
  EXPECT_EQ(nix32Length(16), 26u);
  EXPECT_EQ(nix32Length(20), 32u);
  EXPECT_EQ(nix32Length(32), 52u);
  EXPECT_EQ(nix32Length(64), 103u);
}

// (hex digest, nix32 as printed by `nix hash file --base32`)
struct Nix32Vector {
  const char* hex;
  const char* nix32;
};

TEST(Nix32, MatchesNixOnKnownDigests) {
  const Nix32Vector vectors[] = {
      // sha256("abc")
      {"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
       "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"},
      // sha256("")
      {"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
       "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"},
      // sha512("abc")
      {"ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3f"
       "eebbd454d4423643ce80e2a9ac94fa54ca49f",
       "2gs8k559z4rlahfx0y688s49m2vvszylcikrfinm30ly9rak69236nkam5ydvly1ai7xac99vxfc4ii84hawjbk876"
       "blyk1jfhkbbyx"},
  };
  for (const auto& v : vectors) {
    const auto bytes = fromHex(v.hex);
    EXPECT_EQ(nix32Encode(bytes), v.nix32);
    auto decoded = nix32Decode(v.nix32, bytes.size());
    ASSERT_TRUE(decoded.has_value()) << decoded.error().message();
    EXPECT_EQ(*decoded, bytes);
  }
}

TEST(Nix32, AllZerosAndAllOnes) {
  EXPECT_EQ(nix32Encode(std::vector<std::byte>(20)), std::string(32, '0'));
  // 20 bytes = 160 bits = exactly 32 digits, all 31.
  EXPECT_EQ(nix32Encode(std::vector<std::byte>(20, std::byte{0xff})), std::string(32, 'z'));
  EXPECT_EQ(nix32Encode({}), "");
}

TEST(Nix32, RoundTripsRandomData) {
  std::mt19937 rng(42);
  for (std::size_t len = 0; len <= 70; ++len) {
    std::vector<std::byte> data(len);
    for (auto& b : data) b = static_cast<std::byte>(rng() & 0xff);
    const std::string text = nix32Encode(data);
    EXPECT_EQ(text.size(), nix32Length(len));
    for (char c : text) EXPECT_TRUE(isNix32Char(c)) << c;
    auto back = nix32Decode(text, len);
    ASSERT_TRUE(back.has_value()) << back.error().message();
    EXPECT_EQ(*back, data) << "length " << len;
  }
}

TEST(Nix32, Alphabet) {
  for (char c : kNix32Alphabet) EXPECT_TRUE(isNix32Char(c));
  for (char c : std::string("eoutEAZ-_ :/\0\xff", 15)) EXPECT_FALSE(isNix32Char(c)) << int(c);
}

struct DecodeCase {
  std::string text;
  std::size_t bytes;
  std::string error;
};

TEST(Nix32, RejectsMalformed) {
  const DecodeCase cases[] = {
      {"abc", 1, "nix32 string 'abc' has length 3, expected 2"},
      {"", 1, "nix32 string '' has length 0, expected 2"},
      {"0e", 1, "invalid nix32 character 'e' in '0e'"},
      {"o0", 1, "invalid nix32 character 'o' in 'o0'"},
      {"0u", 1, "invalid nix32 character 'u' in '0u'"},
      {"0t", 1, "invalid nix32 character 't' in '0t'"},
      {"0A", 1, "invalid nix32 character 'A' in '0A'"},
      // Control bytes are shown escaped: a NUL would end the message where it is printed.
      {std::string("0\0", 2), 1, "invalid nix32 character '\\x00' in '0\\x00'"},
      {"0\x1b", 1, "invalid nix32 character '\\x1b' in '0\\x1b'"},
      // One byte in two digits: the first digit holds bits 5..9, so only 0..7 fit.
      {"80", 1, "nix32 string '80' has non-zero padding bits"},
      {"z0", 1, "nix32 string 'z0' has non-zero padding bits"},
      {"z" + std::string(51, '0'), 32,
       "nix32 string 'z" + std::string(51, '0') + "' has non-zero padding bits"},
  };
  for (const auto& c : cases) {
    auto r = nix32Decode(c.text, c.bytes);
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(), c.error);
  }
  // The largest valid leading digit for 32 bytes (bits 255..259: only bit 255 is real).
  EXPECT_TRUE(nix32Decode("1" + std::string(51, '0'), 32).has_value());
  EXPECT_FALSE(nix32Decode("2" + std::string(51, '0'), 32).has_value());
}

TEST(Base16, EncodesLowercaseAndDecodesEitherCase) {
  EXPECT_EQ(base16Encode(bytesOf(std::string_view("\x01\xab\xff\x00z", 5))), "01abff007a");
  EXPECT_EQ(base16Encode({}), "");
  EXPECT_EQ(*base16Decode("01ABff007A"), bytesOf(std::string_view("\x01\xab\xff\x00z", 5)));
  EXPECT_TRUE(base16Decode("")->empty());
}

TEST(Base16, RejectsMalformed) {
  const std::pair<std::string, std::string> cases[] = {
      {"abc", "base16 string 'abc' has odd length"},
      {"0g", "invalid base16 character 'g' in '0g'"},
      {"x0", "invalid base16 character 'x' in 'x0'"},
      {" 0", "invalid base16 character ' ' in ' 0'"},
  };
  for (const auto& [text, error] : cases) {
    auto r = base16Decode(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().message(), error);
  }
}

TEST(Base64, Rfc4648Vectors) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64Encode(asBytes(plain)), encoded);
    auto back = base64Decode(encoded);
    ASSERT_TRUE(back.has_value()) << encoded;
    EXPECT_EQ(*back, bytesOf(plain));
  }
}

TEST(Base64, MatchesNix) {
  // `nix hash file --base64` of "abc" (sha256).
  EXPECT_EQ(
      base64Encode(fromHex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
      "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
}

TEST(Base64, RejectsMalformed) {
  const std::pair<std::string, std::string> cases[] = {
      {"Zg", "base64 string 'Zg' has a length that is not a multiple of 4"},
      {"Zg=", "base64 string 'Zg=' has a length that is not a multiple of 4"},
      {"Z!==", "invalid base64 string 'Z!=='"},
      {"Zh==", "invalid base64 string 'Zh=='"},  // non-zero padding bits
      {"Zg=A", "invalid base64 string 'Zg=A'"},
      {"Zm9 ", "invalid base64 string 'Zm9 '"},
      {"Zm-_", "invalid base64 string 'Zm-_'"},  // URL-safe alphabet is not accepted
      {"====", "invalid base64 string '===='"},
  };
  for (const auto& [text, error] : cases) {
    auto r = base64Decode(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(), error);
  }
}

// Nix 2.8's base64Decode, which it reads hashes with: stops at the first '=', skips newlines,
// drops leftover bits (so padding is optional and padding bits may be non-zero).
TEST(Base64, LenientDecodingIsNixs) {
  const std::pair<std::string, std::string> accepted[] = {
      {"", ""},        {"Zg==", "f"}, {"Zg", "f"},    {"Zh==", "f"},       {"Zm8", "fo"},
      {"Zm9v", "foo"}, {"Zg=A", "f"}, {"Zg=!!", "f"}, {"Zm\n9v\n", "foo"}, {"Z", ""},
  };
  for (const auto& [text, plain] : accepted) {
    auto r = base64DecodeLenient(text);
    ASSERT_TRUE(r.has_value()) << text << ": " << r.error().message();
    EXPECT_EQ(*r, bytesOf(plain)) << text;
  }
  for (const auto& [text, shown] : std::vector<std::pair<std::string, std::string>>{
           {"Z!==", "Z!=="}, {"Zm9 ", "Zm9 "}, {"Zm-_", "Zm-_"}, {"Zm9v\r", "Zm9v\\x0d"}}) {
    auto r = base64DecodeLenient(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_EQ(r.error().message(), "invalid base64 string '" + shown + "'");
  }
}

TEST(Base64, RoundTripsRandomData) {
  std::mt19937 rng(7);
  for (std::size_t len = 0; len <= 100; ++len) {
    std::vector<std::byte> data(len);
    for (auto& b : data) b = static_cast<std::byte>(rng() & 0xff);
    auto back = base64Decode(base64Encode(data));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, data);
    auto lenient = base64DecodeLenient(base64Encode(data));
    ASSERT_TRUE(lenient.has_value());
    EXPECT_EQ(*lenient, data);
  }
}

}  // namespace
}  // namespace narcache
