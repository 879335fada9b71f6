// The HTTP pieces shared by narcache's servers and clients (narstore/internal/http_support.h).

#include "http_support.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

namespace narcache::http {
namespace {

TEST(HttpSupportTest, ListenAddresses) {
  auto v4 = parseListenAddress("127.0.0.1:8080");
  ASSERT_TRUE(v4.has_value());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 8080);
  auto v6 = parseListenAddress("[::1]:0");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 0);
  EXPECT_EQ(formatHostPort(v6->host, 443), "[::1]:443");
  EXPECT_EQ(formatHostPort("localhost", 80), "localhost:80");
  for (const char* bad : {"8080", ":8080", "host:", "host:65536", "host:-1", "host:8o"}) {
    auto r = parseListenAddress(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message().find(bad), std::string::npos) << r.error().message();
  }
  EXPECT_TRUE(isLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(isLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(isLoopbackHost("::1"));
  EXPECT_FALSE(isLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(isLoopbackHost("::"));
}

TEST(HttpSupportTest, UrlsSplitIntoOriginAndPrefix) {
  auto plain = parseHttpUrl("http://127.0.0.1:8080");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->origin, "http://127.0.0.1:8080");
  EXPECT_EQ(plain->prefix, "");
  auto prefixed = parseHttpUrl("https://cache.example.org/nix/cache//?priority=30");
  ASSERT_TRUE(prefixed.has_value());
  EXPECT_EQ(prefixed->origin, "https://cache.example.org");
  EXPECT_EQ(prefixed->prefix, "/nix/cache");
  auto bad = parseHttpUrl("ftp://x", "coordinator URL");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(), "coordinator URL: not an http:// or https:// URL: 'ftp://x'");
  EXPECT_FALSE(parseHttpUrl("http:///path").has_value());
}

TEST(HttpSupportTest, TokensAndStatuses) {
  EXPECT_TRUE(secretEquals("s3cret", "s3cret"));
  EXPECT_FALSE(secretEquals("s3cres", "s3cret"));
  EXPECT_FALSE(secretEquals("s3cret ", "s3cret"));
  EXPECT_FALSE(secretEquals("", "s3cret"));
  EXPECT_EQ(bearerToken(" Bearer  abc:def \r"), "abc:def");
  EXPECT_EQ(bearerToken("Basic YTpi"), "");
  EXPECT_EQ(bearerToken("Bearerabc"), "");
  EXPECT_EQ(httpStatus(ErrorCode::kNotFound), 404);
  EXPECT_EQ(httpStatus(ErrorCode::kCorruption), 422);
  EXPECT_EQ(httpStatus(ErrorCode::kResourceExhausted), 507);
  EXPECT_EQ(httpStatus(ErrorCode::kUnavailable), 503);
}

TEST(HttpSupportTest, BindPicksAFreePortAndRefusesATakenOne) {
  Server first;
  auto port = first.bind({"127.0.0.1", 0}, "127.0.0.1:0");
  ASSERT_TRUE(port.has_value()) << port.error().message();
  EXPECT_GT(*port, 0);
  Server second;
  std::string text = "127.0.0.1:" + std::to_string(*port);
  auto taken = second.bind({"127.0.0.1", *port}, text);
  ASSERT_FALSE(taken.has_value());
  EXPECT_EQ(taken.error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(taken.error().message(), "cannot bind " + text + ": Address already in use");
}

}  // namespace
}  // namespace narcache::http
