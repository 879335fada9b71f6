// The coordinator's wire protocol (coordinator/protocol): every type survives toJson -> parse,
// unknown fields are ignored, and malformed texts are rejected with the exact error naming the
// type and the field.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "narcache/coordinator/protocol.h"

namespace narcache::coordinator {
namespace {

TEST(CoordinatorProtocol, StateAndStatusNames) {
  for (auto s : {BuildState::kQueued, BuildState::kWaiting, BuildState::kAllocated,
                 BuildState::kSucceeded, BuildState::kFailed, BuildState::kCanceled}) {
    EXPECT_EQ(*parseBuildState(buildStateName(s)), s);
  }
  for (auto s : {ReportStatus::kSucceeded, ReportStatus::kFailed, ReportStatus::kTimedOut,
                 ReportStatus::kMissingInputs}) {
    EXPECT_EQ(*parseReportStatus(reportStatusName(s)), s);
  }
  EXPECT_EQ(reportStatusName(ReportStatus::kTimedOut), "timed-out");
  EXPECT_EQ(parseBuildState("done").error().message(),
            "unknown build state 'done' (one of: queued, waiting, allocated, succeeded, failed, "
            "canceled)");
}

TEST(CoordinatorProtocol, RoundTrips) {
  BuildInfo info;
  info.id = 42;
  info.derivation = "/nix/store/aaaa-x.drv";
  info.system = "x86_64-linux";
  info.state = BuildState::kWaiting;
  info.priority = -3;
  info.tags = {{"jobset", "main"}, {"k", "v=w"}};
  info.tries = 2;
  info.submitted_at = 1700000000;
  info.updated_at = 1700000100;
  info.not_before = 1700000200;
  info.agent = "a1";
  info.waiting_for = {"/nix/store/bbbb-y"};
  info.blocked_by = {"/nix/store/cccc-y.drv"};
  info.outputs = {{"out", "/nix/store/dddd-x"}};
  info.message = "line\n\"quoted\" \xc3\xa9";
  info.log_url = "http://c/log/aaaa-x.drv";
  info.retry_of = 7;
  info.skipped = true;
  auto back = parse<BuildInfo>(toJson(info));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(toJson(*back), toJson(info));
  EXPECT_EQ(back->retry_of, 7u);
  EXPECT_EQ(back->state, BuildState::kWaiting);
  EXPECT_EQ(back->priority, -3);

  BuildList list{{info, BuildInfo{}}, 43};
  auto list_back = parse<BuildList>(toJson(list));
  ASSERT_TRUE(list_back) << list_back.error().message();
  EXPECT_EQ(list_back->builds.size(), 2u);
  EXPECT_EQ(list_back->next_after, 43u);
  EXPECT_FALSE(list_back->builds[1].retry_of);

  SubmitRequest submit;
  submit.derivations = {{"/nix/store/aaaa-x.drv", "Derive([...])"}};
  submit.builds = {{"/nix/store/aaaa-x.drv", 5, {{"a", "b"}}, true}};
  auto submit_back = parse<SubmitRequest>(toJson(submit));
  ASSERT_TRUE(submit_back);
  EXPECT_EQ(toJson(*submit_back), toJson(submit));
  EXPECT_TRUE(submit_back->builds[0].ignore_if_built);

  FetchResponse fetch;
  Allocation a;
  a.allocation_id = 9;
  a.build_id = 42;
  a.derivation = "/nix/store/aaaa-x.drv";
  a.derivations = submit.derivations;
  a.lease_seconds = 30;
  a.timeout_seconds = 60;
  a.max_silent_seconds = 10;
  fetch.allocations = {a};
  fetch.poll_seconds = 2;
  auto fetch_back = parse<FetchResponse>(toJson(fetch));
  ASSERT_TRUE(fetch_back);
  EXPECT_EQ(toJson(*fetch_back), toJson(fetch));

  ResultReport report;
  report.allocation_id = 9;
  report.status = ReportStatus::kMissingInputs;
  report.missing_inputs = {"/nix/store/bbbb-y"};
  report.log_tail = "bad bytes \xff\xfe";
  report.build_seconds = 1.5;
  auto report_back = parse<ResultReport>(toJson(report));
  ASSERT_TRUE(report_back) << report_back.error().message();
  EXPECT_EQ(report_back->status, ReportStatus::kMissingInputs);
  EXPECT_EQ(report_back->missing_inputs, report.missing_inputs);
  EXPECT_DOUBLE_EQ(report_back->build_seconds, 1.5);

  AgentList agents{{AgentInfo{"a1", {"x86_64-linux"}, {"kvm"}, 2, 1700000000, true, {1, 2}}}};
  auto agents_back = parse<AgentList>(toJson(agents));
  ASSERT_TRUE(agents_back);
  EXPECT_EQ(toJson(*agents_back), toJson(agents));

  EXPECT_EQ(
      toJson(FetchRequest{"r1", {"x86_64-linux"}, {"kvm"}, 4, 1}),
      R"({"features":["kvm"],"max_parallel":4,"request_id":"r1","running":1,"systems":["x86_64-linux"]})");
  // An agent from before system features sends none: it offers none.
  auto old_agent = parse<FetchRequest>(
      R"({"max_parallel":4,"request_id":"r1","running":1,"systems":["x86_64-linux"]})");
  ASSERT_TRUE(old_agent);
  EXPECT_TRUE(old_agent->features.empty());
  EXPECT_EQ(parse<HeartbeatResponse>(toJson(HeartbeatResponse{{1, 2}, {3}}))->canceled,
            std::vector<std::uint64_t>{3});
  EXPECT_EQ(parse<ReleaseRequest>(toJson(ReleaseRequest{{4}, "agent restarted"}))->reason,
            "agent restarted");
  EXPECT_TRUE(parse<ResultAck>(toJson(ResultAck{true}))->accepted);
  EXPECT_EQ(parse<ErrorBody>(toJson(ErrorBody{"nope"}))->error, "nope");
  EXPECT_EQ(parse<AddAgentResponse>(toJson(AddAgentResponse{"a", "s"}))->secret, "s");
  EXPECT_EQ(parse<AddAgentRequest>(toJson(AddAgentRequest{"a"}))->name, "a");
  EXPECT_EQ(parse<UnknownDerivationsRequest>(toJson(UnknownDerivationsRequest{{"p"}}))->paths,
            std::vector<std::string>{"p"});
  EXPECT_EQ(parse<UnknownDerivationsResponse>(toJson(UnknownDerivationsResponse{{"q"}}))->unknown,
            std::vector<std::string>{"q"});
  EXPECT_EQ(parse<SubmitResponse>(toJson(SubmitResponse{{info}}))->builds.at(0).id, 42u);
  EXPECT_EQ(parse<HeartbeatRequest>(toJson(HeartbeatRequest{{5}}))->allocations,
            std::vector<std::uint64_t>{5});
}

TEST(CoordinatorProtocol, UnknownFieldsIgnoredOptionalDefaulted) {
  auto f = parse<FetchRequest>(R"({"request_id":"x","systems":[],"future":{"a":1}})");
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->max_parallel, 1);
  EXPECT_EQ(f->running, 0);
  auto b = parse<BuildInfo>(R"({"id":1,"derivation":"/d.drv","state":"queued","retry_of":null})");
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_FALSE(b->retry_of);
}

TEST(CoordinatorProtocol, MalformedTextsNameTheField) {
  auto msg = [](auto r) -> std::string { return r ? "(accepted)" : r.error().message(); };
  std::vector<std::pair<std::string, std::string>> cases = {
      {msg(parse<FetchRequest>(R"({"request_id":"x","systems":"x86_64-linux"})")),
       "FetchRequest: systems: not an array of strings"},
      {msg(parse<FetchRequest>(R"({"request_id":"x","systems":[1]})")),
       "FetchRequest: systems: not an array of strings"},
      {msg(parse<FetchRequest>(R"({"systems":[]})")), "FetchRequest: request_id: missing"},
      {msg(parse<FetchRequest>(R"({"request_id":"x","systems":[],"max_parallel":"2"})")),
       "FetchRequest: max_parallel: not an integer"},
      {msg(parse<FetchRequest>(R"({"request_id":"x","systems":[],"max_parallel":1.5})")),
       "FetchRequest: max_parallel: not an integer"},
      {msg(parse<FetchRequest>(R"({"request_id":"x","systems":[],"running":99999999999})")),
       "FetchRequest: running: out of range"},
      {msg(parse<FetchRequest>("[1]")), "FetchRequest: not a JSON object"},
      {msg(parse<FetchRequest>("{")), "FetchRequest: not valid JSON"},
      {msg(parse<HeartbeatRequest>(R"({"allocations":[-1]})")),
       "HeartbeatRequest: allocations: not an array of non-negative integers"},
      {msg(parse<ResultReport>(R"({"allocation_id":1,"status":"ok"})")),
       "ResultReport: status: unknown result status 'ok' (one of: succeeded, failed, timed-out, "
       "missing-inputs)"},
      {msg(parse<ResultReport>(R"({"allocation_id":-1,"status":"failed"})")),
       "ResultReport: allocation_id: negative"},
      {msg(parse<ResultReport>(R"({"allocation_id":1,"status":"failed","outputs":{"out":1}})")),
       "ResultReport: outputs: not an object of strings"},
      {msg(parse<SubmitRequest>(R"({"builds":[{"derivation":"/a.drv"},{"priority":1}]})")),
       "SubmitRequest: builds[1]: derivation: missing"},
      {msg(parse<SubmitRequest>(R"({"builds":[3]})")), "SubmitRequest: builds[0]: not an object"},
      {msg(parse<SubmitRequest>(R"({"builds":[],"derivations":[{"path":"/a.drv","text":5}]})")),
       "SubmitRequest: derivations[0]: text: not a string"},
      {msg(parse<FetchResponse>(
           R"({"allocations":[{"allocation_id":1,"build_id":2,"derivation":"/d",
               "derivations":[{"path":"/d"}]}]})")),
       "FetchResponse: allocations[0]: derivations[0]: text: missing"},
      {msg(parse<BuildInfo>(R"({"id":1,"derivation":"/d.drv","state":"queued","skipped":1})")),
       "BuildInfo: skipped: not a boolean"},
      {msg(parse<ResultAck>("{}")), "ResultAck: accepted: missing"},
  };
  for (const auto& [got, want] : cases) EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace narcache::coordinator
