// What the agent makes of a build child's result file (agent/src/build_child.h): which engine
// errors are the derivation's failure and which are handed back to be built again.
#include "build_child.h"

#include <gtest/gtest.h>

#include <string>

#include "support/support.h"

namespace narcache::agent {
namespace {

ChildOutcome outcomeOf(const test::TempDir& dir, const std::string& json) {
  test::writeFile(dir / "result.json", json);
  test::writeFile(dir / "engine.log", "");
  return readChildOutcome(dir / "result.json", 1, dir / "engine.log");
}

TEST(BuildChildTest, RefusalsOfTheAgentAreHandedBackNotTheDerivationsFailure) {
  test::TempDir dir;
  // A wrong upload token: the cache answers 401.
  auto refused = outcomeOf(dir, R"({"error": "uploading nar/x.nar.zst: HTTP 401", )"
                                R"("code": "permission denied"})");
  EXPECT_TRUE(refused.engine_error);
  EXPECT_TRUE(refused.transient);
  EXPECT_EQ(refused.error.code(), ErrorCode::kPermissionDenied);
  EXPECT_TRUE(outcomeOf(dir, R"({"error": "cache down", "code": "unavailable"})").transient);
  // A derivation the engine cannot take is its own fault.
  auto invalid = outcomeOf(dir, R"({"error": "bad drv", "code": "invalid argument"})");
  EXPECT_TRUE(invalid.engine_error);
  EXPECT_FALSE(invalid.transient);
  // No result at all (the child died): tried again.
  test::writeFile(dir / "result.json", "");
  EXPECT_TRUE(readChildOutcome(dir / "result.json", 137, dir / "engine.log").transient);
}

}  // namespace
}  // namespace narcache::agent
