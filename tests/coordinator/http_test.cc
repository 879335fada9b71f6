// The coordinator over real HTTP on 127.0.0.1 (port 0): authentication, error mapping, metrics;
// and its hooks: at-least-once, a failing hook does not block another, events survive a restart.

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "coordinator/fixture.h"
#include "narcache/coordinator/http_api.h"

namespace narcache::coordinator::testing {
namespace {

using ::testing::HasSubstr;

class HttpTest : public CoordinatorFixture {
 protected:
  void startServer(const std::string& token = "client-secret") {
    open();
    HttpApiOptions o;
    o.listen = "127.0.0.1:0";
    o.client_token = token;
    o.threads = 4;
    auto api = HttpApi::create(*coord_, o);
    ASSERT_TRUE(api.has_value()) << api.error().message();
    api_ = std::move(*api);
    thread_ = std::thread([this] { EXPECT_TRUE(api_->run().has_value()); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", api_->port());
  }
  void TearDown() override {
    if (api_) api_->stop();
    if (thread_.joinable()) thread_.join();
    api_.reset();
    coord_.reset();
  }
  static httplib::Headers bearer(const std::string& token) {
    return {{"Authorization", "Bearer " + token}};
  }

  std::unique_ptr<HttpApi> api_;
  std::thread thread_;
  std::unique_ptr<httplib::Client> client_;
};

// Sends `head` (a request's headers announcing a large body) on a fresh connection, sends no
// body, and returns everything read until the server closes (at most 5 s).
std::string answerWithoutBody(int port, const std::string& head) {
  int fd = test::connectLoopback(port);
  if (fd < 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
    reply.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return reply;
}

TEST_F(HttpTest, RequestsWithoutCredentialsAreRefusedBeforeTheirBodyIsRead) {
  // Without valid credentials, a POST announcing 200 MB is answered at once, its body never
  // read into memory, and the connection ends (nothing of the body is read as requests).
  startServer();
  const std::string big = "Content-Length: 200000000\r\n\r\n";
  auto start = std::chrono::steady_clock::now();
  for (const std::string& head :
       {"POST /api/v1/builds HTTP/1.1\r\nHost: x\r\n" + big,
        "POST /api/v1/builds HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n" + big,
        "POST /api/v1/agent/fetch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a:b\r\n" + big}) {
    std::string reply = answerWithoutBody(api_->port(), head);
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 401")) << head << reply;
    EXPECT_NE(reply.find("\"error\""), std::string::npos) << reply;
  }
  // With credentials, a POST whose body has no Content-Length would be read until the client
  // closes: refused at once instead.
  for (const std::string& framing :
       {std::string(), std::string("Transfer-Encoding: chunked\r\n")}) {
    std::string reply = answerWithoutBody(api_->port(),
                                          "POST /api/v1/builds/1/cancel HTTP/1.1\r\nHost: x\r\n"
                                          "Authorization: Bearer client-secret\r\n" +
                                              framing + "\r\n");
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 411")) << reply;
    EXPECT_NE(reply.find("a request body needs a Content-Length"), std::string::npos) << reply;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
}

TEST_F(HttpTest, ClientTokenAgentCredentialsAndErrors) {
  startServer();
  auto health = client_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);

  auto no_token = client_->Get("/api/v1/builds");
  ASSERT_TRUE(no_token);
  EXPECT_EQ(no_token->status, 401);
  auto wrong = client_->Get("/api/v1/builds", bearer("nope"));
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);

  auto bad_json =
      client_->Post("/api/v1/builds", bearer("client-secret"), "{not json", "application/json");
  ASSERT_TRUE(bad_json);
  EXPECT_EQ(bad_json->status, 400);
  auto err = nlohmann::json::parse(bad_json->body);
  EXPECT_TRUE(err.contains("error"));

  TestDrv a = drv("a"), b = drv("b");
  nlohmann::json submit{{"derivations", {{{"path", b.path}, {"text", a.text}}}},
                        {"builds", nlohmann::json::array()}};
  auto bad_path =
      client_->Post("/api/v1/builds", bearer("client-secret"), submit.dump(), "application/json");
  ASSERT_TRUE(bad_path);
  EXPECT_EQ(bad_path->status, 400);
  EXPECT_THAT(bad_path->body, HasSubstr("its text gives the store path"));

  submit = {{"derivations", {{{"path", a.path}, {"text", a.text}}}},
            {"builds", {{{"derivation", a.path}, {"priority", 3}, {"tags", {{"job", "a=1"}}}}}}};
  auto ok =
      client_->Post("/api/v1/builds", bearer("client-secret"), submit.dump(), "application/json");
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 200) << ok->body;
  auto submitted = parse<SubmitResponse>(ok->body);
  ASSERT_TRUE(submitted.has_value());
  std::uint64_t id = submitted->builds.at(0).id;

  // ?tag=K=V as written (httplib alone would read "1") and percent-encoded.
  for (const std::string query : {"tag=job=a=1", "tag=job%3Da%3D1", "tag=job=a%3D1"}) {
    auto listed = client_->Get("/api/v1/builds?" + query, bearer("client-secret"));
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->status, 200) << query << ": " << listed->body;
    EXPECT_THAT(listed->body, HasSubstr(a.path)) << query;
  }
  auto other = client_->Get("/api/v1/builds?tag=job=b", bearer("client-secret"));
  ASSERT_TRUE(other);
  EXPECT_THAT(other->body, ::testing::Not(HasSubstr(a.path)));

  auto missing = client_->Get("/api/v1/builds/999", bearer("client-secret"));
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  auto added = client_->Post("/api/v1/agents", bearer("client-secret"), R"({"name":"agent-1"})",
                             "application/json");
  ASSERT_TRUE(added);
  ASSERT_EQ(added->status, 200);
  auto agent = parse<AddAgentResponse>(added->body);
  ASSERT_TRUE(agent.has_value());
  EXPECT_EQ(agent->secret.size(), 64u);
  auto dup = client_->Post("/api/v1/agents", bearer("client-secret"), R"({"name":"agent-1"})",
                           "application/json");
  ASSERT_TRUE(dup);
  EXPECT_EQ(dup->status, 409);

  std::string fetch_body = R"({"request_id":"r1","systems":["x86_64-linux"],"max_parallel":1})";
  auto denied =
      client_->Post("/api/v1/agent/fetch", bearer("agent-1:wrong"), fetch_body, "application/json");
  ASSERT_TRUE(denied);
  EXPECT_EQ(denied->status, 401);
  auto fetched = client_->Post("/api/v1/agent/fetch", bearer("agent-1:" + agent->secret),
                               fetch_body, "application/json");
  ASSERT_TRUE(fetched);
  ASSERT_EQ(fetched->status, 200) << fetched->body;
  auto allocations = parse<FetchResponse>(fetched->body);
  ASSERT_TRUE(allocations.has_value());
  ASSERT_EQ(allocations->allocations.size(), 1u);
  EXPECT_EQ(allocations->allocations[0].build_id, id);

  auto shown = client_->Get("/api/v1/builds/" + std::to_string(id), bearer("client-secret"));
  ASSERT_TRUE(shown);
  auto shown_info = parse<BuildInfo>(shown->body);
  ASSERT_TRUE(shown_info.has_value());
  EXPECT_EQ(shown_info->state, BuildState::kAllocated);
  EXPECT_EQ(shown_info->agent, "agent-1");
  EXPECT_EQ(shown_info->log_url, "http://cache.test/log/" + a.path.substr(11));

  auto canceled = client_->Post("/api/v1/builds/" + std::to_string(id) + "/cancel",
                                bearer("client-secret"), "", "application/json");
  ASSERT_TRUE(canceled);
  EXPECT_EQ(canceled->status, 200);
  auto again = client_->Post("/api/v1/builds/" + std::to_string(id) + "/cancel",
                             bearer("client-secret"), "", "application/json");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 409);

  auto metrics = client_->Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_THAT(metrics->body, HasSubstr("narcache_coordinator_builds{state=\"canceled\"} 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("narcache_coordinator_allocations_total 1\n"));
  EXPECT_THAT(metrics->body, HasSubstr("narcache_coordinator_agents_connected 1\n"));
}

// Waits (real time: hooks run in their own threads) until `done` holds.
template <typename F>
bool eventually(F done, int seconds = 10) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

std::size_t lines(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) return 0;
  std::string text = test::readFile(file);
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

class HookTest : public CoordinatorFixture {};

TEST_F(HookTest, FailingHookDoesNotBlockOthersAndEventsSurviveARestart) {
  auto o = options();
  std::string flag = (dir_ / "flag").string();
  std::string good_out = (dir_ / "good.jsonl").string();
  std::string gated_out = (dir_ / "gated.jsonl").string();
  // "gated" fails until the flag file exists; "good" appends every event as one line.
  auto gated =
      parseHookSpec("submitted=command:test -f " + flag + " && (cat; echo) >> " + gated_out);
  auto good = parseHookSpec("submitted=command:(cat; echo) >> " + good_out);
  auto log = parseHookSpec("success=builtin:log");
  auto roots = parseHookSpec("success=builtin:root-outputs");
  ASSERT_TRUE(gated && good && log && roots);
  o.hooks = {*gated, *good, *log, *roots};
  coord_ = open(o);
  submit({drv("a"), drv("b"), drv("c")});
  ASSERT_TRUE(eventually([&] { return coord_->stats().hooks[1].processed_total == 3; }));
  EXPECT_EQ(lines(good_out), 3u);
  ASSERT_TRUE(eventually([&] { return coord_->stats().hooks[0].failures_total >= 2; }));
  CoordinatorStats s = coord_->stats();
  EXPECT_EQ(s.hooks[0].queued, 3u);
  EXPECT_EQ(s.hooks[1].queued, 0u);
  EXPECT_EQ(s.hooks[1].processed_total, 3u);
  now_ += 7;
  EXPECT_EQ(coord_->stats().hooks[0].oldest_age, 7);

  // Restart: the gated hook's events are still there.
  coord_.reset();
  coord_ = open(o);
  EXPECT_EQ(coord_->stats().hooks[0].queued, 3u);
  test::writeFile(flag, "");
  ASSERT_TRUE(eventually([&] { return coord_->stats().hooks[0].queued == 0; }));
  EXPECT_EQ(lines(gated_out), 3u);
  EXPECT_EQ(lines(good_out), 3u);  // nothing delivered twice to the hook that had succeeded
  auto first = nlohmann::json::parse(
      test::readFile(gated_out).substr(0, test::readFile(gated_out).find('\n')));
  EXPECT_EQ(first["event"], "submitted");
  EXPECT_EQ(first["build"]["state"], "queued");

  // builtin:root-outputs pins the outputs of a succeeded build.
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(succeed(got[0]));
  std::string root = "build-" + std::to_string(got[0].build_id);
  ASSERT_TRUE(eventually([&] {
    auto listed = store_->listRoots();
    return listed && std::any_of(listed->begin(), listed->end(),
                                 [&](const narstore::Root& r) { return r.name == root; });
  }));
}

TEST_F(HookTest, RootOutputsGoesOnPastOutputsThatAreNotInTheStore) {
  // A build reported succeeded whose outputs are not items of this store (uploaded elsewhere,
  // or collected since): no root can be made, now or later, so the event is done with and the
  // next success gets its root.
  auto o = options();
  auto roots = parseHookSpec("success=builtin:root-outputs");
  ASSERT_TRUE(roots.has_value());
  o.hooks = {*roots};
  coord_ = open(o);
  submit({drv("elsewhere")});
  auto got = fetch();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(report(got[0], ReportStatus::kSucceeded));  // its output never reached the store
  ASSERT_TRUE(eventually([&] { return coord_->stats().hooks[0].processed_total == 1; }));
  submit({drv("here")});
  got = fetch();
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(succeed(got[0]));
  std::string root = "build-" + std::to_string(got[0].build_id);
  ASSERT_TRUE(eventually([&] { return coord_->stats().hooks[0].processed_total == 2; }));
  auto listed = store_->listRoots();
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().name, root);
  EXPECT_EQ(coord_->stats().hooks[0].queued, 0u);
}

TEST(HookSpecTest, ParsesAndRejects) {
  auto ok = parseHookSpec("failure=command:notify-send x");
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->event, "failure");
  EXPECT_EQ(ok->action, "notify-send x");
  struct Case {
    const char* text;
    const char* error;
  };
  for (const Case& c : {Case{"nope", "expected EVENT=command:CMD"},
                        Case{"done=builtin:log", "unknown event 'done'"},
                        Case{"success=builtin:mail", "unknown builtin 'mail'"},
                        Case{"success=run:x", "command:CMD or builtin:NAME"},
                        Case{"success=command:", "empty command"}}) {
    auto r = parseHookSpec(c.text);
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_THAT(r.error().message(), HasSubstr(c.error)) << c.text;
  }
}

}  // namespace
}  // namespace narcache::coordinator::testing
