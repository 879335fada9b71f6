#pragma once
// Access times recorded in this process and not yet flushed to LMDB, and the items that a GC
// batch is deleting right now ("doomed").
//
// The race it closes: a GC batch decides inside its write transaction, and serving reads
// through read transactions that see the store as it was before that transaction commits. A
// narinfo request that records its access after the batch looked at the accesses could still
// be served the item, which the commit then deletes with its closure. So the batch dooms what
// it deletes, under the same lock as its last look at the accesses, until its commit is over;
// an access to a doomed item waits for that, and what its caller reads next is the store after
// the commit. Accesses to other items never wait. Thread-safe.

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace narcache::narstore {

class PendingAccess {
 public:
  using Times = std::unordered_map<std::string, std::int64_t>;  // hash part -> unix seconds

  // Records an access at `when` (the latest one wins); if the item is doomed, returns only once
  // the batch that dooms it has ended.
  void record(std::string_view hash_part, std::int64_t when);

  // The accesses not yet flushed.
  Times snapshot() const;
  // After a flush of `flushed` committed: drops each access not renewed since.
  void dropFlushed(const Times& flushed);

  // For a GC batch about to delete `items` (hash part, last access the plan saw): if none of
  // them was accessed since, dooms them all and returns true (end with undoom()); otherwise
  // dooms nothing and returns false with `*accessed` holding the ones accessed since.
  bool doom(const std::vector<std::pair<std::string, std::int64_t>>& items,
            std::vector<std::string>* accessed);
  void undoom(const std::vector<std::string>& hash_parts);

 private:
  mutable std::mutex mutex_;
  std::condition_variable undoomed_;
  Times times_;
  std::unordered_set<std::string> doomed_;
};

}  // namespace narcache::narstore
