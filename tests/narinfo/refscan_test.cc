#include "narcache/narinfo/refscan.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "narcache/narinfo/encoding.h"

namespace narcache {
namespace {

std::string randomHash(std::mt19937_64& rng) {
  std::string s(32, '0');
  for (auto& c : s) c = kNix32Alphabet[rng() % kNix32Alphabet.size()];
  return s;
}

const std::string kA = "0c7c8ajrr3jfj5y3a3qxmbsnyv0s4b3b";
const std::string kB = "sbldylj3clbkc0aqvjjzfa6slp4zdvlj";
const std::string kC = "w2r8s7pq0b9dxkm1fg6hiaj3lnvyz45c";

RefScanner makeScanner(const std::vector<std::string>& candidates) {
  auto s = RefScanner::create(candidates);
  EXPECT_TRUE(s) << s.error().message();
  return std::move(*s);
}

std::set<std::string> scanWhole(const std::vector<std::string>& candidates,
                                const std::string& text) {
  auto s = makeScanner(candidates);
  EXPECT_TRUE(s.write(asBytes(text)));
  return s.found();
}

std::set<std::string> scanPieces(const std::vector<std::string>& candidates,
                                 const std::vector<std::string>& pieces) {
  auto s = makeScanner(candidates);
  for (const auto& p : pieces) EXPECT_TRUE(s.write(asBytes(p)));
  return s.found();
}

TEST(RefScanner, FindsInMiddleStartAndEnd) {
  std::vector<std::string> cands = {kA, kB, kC};
  EXPECT_EQ(scanWhole(cands, "/nix/store/" + kA + "-hello-2.12/bin/hello"),
            (std::set<std::string>{kA}));
  EXPECT_EQ(scanWhole(cands, kB + "-rest"), (std::set<std::string>{kB}));
  EXPECT_EQ(scanWhole(cands, "prefix:" + kC), (std::set<std::string>{kC}));
  EXPECT_EQ(scanWhole(cands, kC), (std::set<std::string>{kC}));
  EXPECT_EQ(scanWhole(cands, kA + kB + kC), (std::set<std::string>{kA, kB, kC}));
  EXPECT_EQ(scanWhole(cands, "no references here"), std::set<std::string>{});
  EXPECT_EQ(scanWhole(cands, ""), std::set<std::string>{});
}

TEST(RefScanner, EmbeddedInNix32Runs) {
  // The hash sits inside a longer run of nix32 characters: every window is a candidate.
  std::vector<std::string> cands = {kA, kB};
  EXPECT_EQ(scanWhole(cands, "abcd0123" + kA + "xyz9" + kB + "00"),
            (std::set<std::string>{kA, kB}));
  EXPECT_EQ(scanWhole(cands, std::string(1000, 'a') + kB + std::string(1000, 'z')),
            (std::set<std::string>{kB}));
}

TEST(RefScanner, OverlappingCandidates) {
  // Two candidates overlapping in the text: kX = "1" + 31 chars, kY = those 31 chars + "2".
  const std::string body = "abcdfghijklmnpqrsvwxyz012345678";  // 31 chars
  const std::string x = "1" + body;
  const std::string y = body + "2";
  std::vector<std::string> cands = {x, y};
  EXPECT_EQ(scanWhole(cands, "1" + body + "2"), (std::set<std::string>{x, y}));
  EXPECT_EQ(scanWhole(cands, "1" + body), (std::set<std::string>{x}));
  EXPECT_EQ(scanWhole(cands, body + "2"), (std::set<std::string>{y}));
  // The same hash repeated, overlapping itself when periodic.
  const std::string periodic = "abababababababababababababababab";
  EXPECT_EQ(scanWhole({periodic}, "ababababababababababababababababababab"),
            (std::set<std::string>{periodic}));
}

TEST(RefScanner, EverySplitAcrossWrites) {
  std::vector<std::string> cands = {kA, kB};
  for (const std::string& before : {std::string(), std::string("x"), std::string("/nix/store/"),
                                    std::string(40, '-'), std::string("abc")}) {
    const std::string text = before + kA + "-after";
    // One split point anywhere.
    for (std::size_t cut = 0; cut <= text.size(); ++cut) {
      EXPECT_EQ(scanPieces(cands, {text.substr(0, cut), text.substr(cut)}),
                (std::set<std::string>{kA}))
          << "before '" << before << "' cut " << cut;
    }
    // Two split points inside the hash, so the middle write is shorter than the tail kept.
    for (std::size_t a = 0; a <= text.size(); ++a) {
      for (std::size_t b = a; b <= text.size(); b += 3) {
        EXPECT_EQ(scanPieces(cands, {text.substr(0, a), text.substr(a, b - a), text.substr(b)}),
                  (std::set<std::string>{kA}))
            << "before '" << before << "' cuts " << a << "," << b;
      }
    }
  }
}

TEST(RefScanner, ByteAtATime) {
  std::vector<std::string> cands = {kA, kB, kC};
  const std::string text = "..." + kA + "/" + kB + "zz" + kC;
  std::vector<std::string> pieces;
  for (char c : text) pieces.emplace_back(1, c);
  EXPECT_EQ(scanPieces(cands, pieces), (std::set<std::string>{kA, kB, kC}));
}

TEST(RefScanner, NearMissesDoNotMatch) {
  std::vector<std::string> cands = {kA};
  // 31 characters of the hash.
  EXPECT_EQ(scanWhole(cands, "/" + kA.substr(0, 31) + "/"), std::set<std::string>{});
  EXPECT_EQ(scanWhole(cands, "/" + kA.substr(1) + "/"), std::set<std::string>{});
  // 31 characters split over two writes.
  EXPECT_EQ(scanPieces(cands, {kA.substr(0, 15), kA.substr(15, 16)}), std::set<std::string>{});
  // One character replaced by a non-nix32 one ('e', 'o', 'u', 't' are not in the alphabet).
  for (std::size_t i = 0; i < 32; ++i) {
    for (char bad : {'e', 'o', 'u', 't', 'A', '-', '\0'}) {
      std::string t = kA;
      t[i] = bad;
      EXPECT_EQ(scanWhole(cands, "x" + t + "x"), std::set<std::string>{}) << i << " " << bad;
    }
  }
  // One character replaced by another nix32 one.
  std::string other = kA;
  other[17] = other[17] == 'a' ? 'b' : 'a';
  EXPECT_EQ(scanWhole(cands, other), std::set<std::string>{});
  // Upper case is not the same hash.
  std::string upper = kA;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(scanWhole(cands, upper), std::set<std::string>{});
}

TEST(RefScanner, SelfReference) {
  // A store path referring to itself: its own hash part is a candidate like any other.
  const std::string self = kB;
  std::vector<std::string> cands = {self, kA};
  std::string nar = "nix-archive-1(type regular contents #!/nix/store/" + self +
                    "-bash/bin/bash\nexec /nix/store/" + self + "-bash/bin/foo)";
  EXPECT_EQ(scanWhole(cands, nar), (std::set<std::string>{self}));
}

TEST(RefScanner, DuplicateCandidatesAndNone) {
  EXPECT_EQ(scanWhole({kA, kA, kB}, kA), (std::set<std::string>{kA}));
  EXPECT_EQ(scanWhole({}, kA + kB), std::set<std::string>{});
}

TEST(RefScanner, InvalidCandidatesRejected) {
  for (const std::string& bad : std::vector<std::string>{
           std::string(), kA.substr(0, 31), kA + "0", "0c7c8ajrr3jfj5y3a3qxmbsnyv0s4b3e",
           "0C7C8AJRR3JFJ5Y3A3QXMBSNYV0S4B3B", "0c7c8ajrr3jfj5y3a3qxmbsnyv0s4b3-",
           "0c7c8ajrr3jfj5y3a3qxmbsnyv0s4b3t"}) {
    auto s = RefScanner::create({kA, bad});
    ASSERT_FALSE(s) << "'" << bad << "'";
    EXPECT_EQ(s.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(s.error().message().find("'" + bad + "'"), std::string::npos) << s.error().message();
  }
}

// Many candidates against random text with a mix of nix32 and other bytes; the result must
// equal a naive scan of every 32-byte window.
TEST(RefScanner, MatchesNaiveScanOnRandomText) {
  std::mt19937_64 rng(42);
  std::vector<std::string> cands;
  for (int i = 0; i < 2000; ++i) cands.push_back(randomHash(rng));
  const std::string alphabet = std::string(kNix32Alphabet) + "eotu/-.\n ";
  std::string text;
  std::set<std::string> planted;
  for (int i = 0; i < 300000; ++i) {
    if (rng() % 5000 == 0) {
      const auto& h = cands[rng() % cands.size()];
      text += h;
      planted.insert(h);
    } else {
      text += alphabet[rng() % alphabet.size()];
    }
  }
  std::set<std::string> naive;
  std::set<std::string> cand_set(cands.begin(), cands.end());
  for (std::size_t i = 0; i + 32 <= text.size(); ++i) {
    std::string w = text.substr(i, 32);
    if (cand_set.count(w)) naive.insert(w);
  }
  EXPECT_FALSE(planted.empty());
  for (const auto& p : planted) EXPECT_TRUE(naive.count(p));
  EXPECT_EQ(scanWhole(cands, text), naive);
  // And in random-sized writes.
  auto s = makeScanner(cands);
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t n = std::min<std::size_t>(rng() % 100, text.size() - pos);
    ASSERT_TRUE(s.write(asBytes(std::string_view(text).substr(pos, n))));
    pos += n;
  }
  EXPECT_EQ(s.found(), naive);
}

}  // namespace
}  // namespace narcache
