// Pending access times and doomed items: see pending_access.h.

#include "pending_access.h"

namespace narcache::narstore {

void PendingAccess::record(std::string_view hash_part, std::int64_t when) {
  std::unique_lock lock(mutex_);
  auto [it, inserted] = times_.try_emplace(std::string(hash_part), when);
  if (!inserted && it->second < when) it->second = when;
  if (doomed_.empty()) return;
  const std::string key(hash_part);  // `it` may not outlive the wait
  undoomed_.wait(lock, [&] { return doomed_.count(key) == 0; });
}

PendingAccess::Times PendingAccess::snapshot() const {
  std::lock_guard lock(mutex_);
  return times_;
}

void PendingAccess::dropFlushed(const Times& flushed) {
  std::lock_guard lock(mutex_);
  for (const auto& [h, when] : flushed) {
    auto it = times_.find(h);
    if (it != times_.end() && it->second <= when) times_.erase(it);
  }
}

bool PendingAccess::doom(const std::vector<std::pair<std::string, std::int64_t>>& items,
                         std::vector<std::string>* accessed) {
  std::lock_guard lock(mutex_);
  accessed->clear();
  for (const auto& [h, last_access] : items) {
    if (auto it = times_.find(h); it != times_.end() && it->second > last_access) {
      accessed->push_back(h);
    }
  }
  if (!accessed->empty()) return false;
  for (const auto& [h, last_access] : items) doomed_.insert(h);
  return true;
}

void PendingAccess::undoom(const std::vector<std::string>& hash_parts) {
  {
    std::lock_guard lock(mutex_);
    for (const auto& h : hash_parts) doomed_.erase(h);
  }
  undoomed_.notify_all();
}

}  // namespace narcache::narstore
