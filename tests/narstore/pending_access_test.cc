// PendingAccess (narstore/src/pending_access.h): a GC batch dooms only items not accessed since
// its plan, and an access to a doomed item returns only once the batch has ended.
#include "pending_access.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

namespace narcache::narstore {
namespace {

using namespace std::chrono_literals;

TEST(PendingAccessTest, AnAccessToADoomedItemWaitsForTheBatchToEnd) {
  PendingAccess access;
  const std::string a(32, 'a');
  const std::string b(32, 'b');
  access.record(a, 10);
  std::vector<std::string> accessed;
  // Accessed at 10, after the plan saw 9: not doomed, and nothing else of the batch is.
  EXPECT_FALSE(access.doom({{a, 9}, {b, 0}}, &accessed));
  EXPECT_EQ(accessed, std::vector<std::string>{a});
  ASSERT_TRUE(access.doom({{a, 10}, {b, 0}}, &accessed));
  EXPECT_TRUE(accessed.empty());

  std::atomic<bool> returned{false};
  auto waiter = std::async(std::launch::async, [&] {
    access.record(b, 11);
    returned = true;
  });
  access.record(std::string(32, 'c'), 11);  // not doomed: at once
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(returned);  // b is doomed: waits
  access.undoom({a, b});
  ASSERT_EQ(waiter.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(returned);
  EXPECT_EQ(access.snapshot().at(b), 11);

  // The access recorded while doomed counts for the next batch, until flushed.
  EXPECT_FALSE(access.doom({{b, 10}}, &accessed));
  access.dropFlushed({{b, 11}});
  EXPECT_TRUE(access.doom({{b, 10}}, &accessed));
  access.undoom({b});
}

}  // namespace
}  // namespace narcache::narstore
