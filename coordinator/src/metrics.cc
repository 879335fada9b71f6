// /metrics: Prometheus text from the in-memory counters. O(1) in the number of builds: counters
// are kept up to date by every state change (Memory::apply) and were rebuilt by one scan at
// start-up; only agents and hooks (a handful) are iterated.

#include "impl.h"

namespace narcache::coordinator {

CoordinatorStats Coordinator::stats() {
  Impl& d = *impl_;
  CoordinatorStats s;
  std::int64_t t;
  {
    std::lock_guard lock(d.mu);
    t = d.now();
    d.mem.promote(t);
    for (int i = 0; i < 6; ++i) s.builds[static_cast<BuildState>(i)] = d.mem.by_state[i];
    s.ready = d.mem.ready_count;
    if (!d.mem.queued_since.empty()) {
      s.oldest_queued_age = std::max<std::int64_t>(0, t - d.mem.queued_since.begin()->first);
    }
    s.allocations_total = d.mem.allocations_total;
    s.retries_total = d.mem.retries_total;
    s.lease_expiries_total = d.mem.lease_expiries_total;
    s.derivations_failing = d.mem.derivations_failing;
    for (const auto& [name, a] : d.mem.agents) {
      if (a.last_seen != 0 && t - a.last_seen <= d.options.lease_seconds) s.agents_connected++;
      if (!a.allocations.empty()) s.agents_busy++;
    }
  }
  for (const auto& hook : d.hooks) {
    CoordinatorStats::Hook h;
    h.event = hook->spec.event;
    h.action =
        hook->spec.kind == HookSpec::Kind::kCommand ? "command" : "builtin:" + hook->spec.action;
    {
      std::lock_guard lock(hook->mu);
      h.queued = hook->queue.size();
      if (!hook->queue.empty()) {
        std::int64_t oldest = hook->queue.begin()->second;
        h.oldest_age = std::max<std::int64_t>(0, t - oldest);
      }
    }
    h.failures_total = hook->failures.load();
    h.processed_total = hook->processed.load();
    s.hooks.push_back(std::move(h));
  }
  return s;
}

std::string Coordinator::metrics() {
  CoordinatorStats s = stats();
  std::string out;
  out.reserve(4096);
  auto line = [&](std::string_view name, std::string_view labels, auto value) {
    out += name;
    if (!labels.empty()) {
      out += '{';
      out += labels;
      out += '}';
    }
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  };
  auto head = [&](std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
  };
  head("narcache_coordinator_builds", "gauge", "Builds by state.");
  for (const auto& [state, n] : s.builds) {
    line("narcache_coordinator_builds", "state=\"" + std::string(buildStateName(state)) + "\"", n);
  }
  struct Scalar {
    const char* name;
    const char* type;
    const char* help;
    std::int64_t value;
  };
  auto n = [](std::uint64_t v) { return static_cast<std::int64_t>(v); };
  const Scalar scalars[] = {
      {"narcache_coordinator_queue_ready", "gauge",
       "Queued builds allocatable now (not in retry backoff).", n(s.ready)},
      {"narcache_coordinator_queue_oldest_age_seconds", "gauge",
       "Age of the oldest queued build (since it was queued).", s.oldest_queued_age},
      {"narcache_coordinator_allocations_total", "counter", "Builds handed to agents.",
       n(s.allocations_total)},
      {"narcache_coordinator_retries_total", "counter", "Automatic retries after a failed try.",
       n(s.retries_total)},
      {"narcache_coordinator_lease_expiries_total", "counter",
       "Allocations whose lease expired (build re-queued).", n(s.lease_expiries_total)},
      {"narcache_coordinator_derivations_failing", "gauge",
       "Derivations past the retry threshold (no automatic retry).", n(s.derivations_failing)},
      {"narcache_coordinator_agents_connected", "gauge", "Agents seen within the lease time.",
       n(s.agents_connected)},
      {"narcache_coordinator_agents_busy", "gauge", "Agents with at least one allocation.",
       n(s.agents_busy)},
  };
  for (const Scalar& m : scalars) {
    head(m.name, m.type, m.help);
    line(m.name, "", m.value);
  }
  std::vector<std::string> labels;
  for (std::size_t i = 0; i < s.hooks.size(); ++i) {
    labels.push_back("hook=\"" + std::to_string(i) + "\",event=\"" + s.hooks[i].event +
                     "\",action=\"" + s.hooks[i].action + "\"");
  }
  using HookValue = std::int64_t (*)(const CoordinatorStats::Hook&);
  struct HookMetric {
    const char* name;
    const char* type;
    const char* help;
    HookValue value;
  };
  const HookMetric hook_metrics[] = {
      {"narcache_coordinator_hook_queue_length", "gauge", "Events waiting per hook.",
       [](const CoordinatorStats::Hook& h) { return static_cast<std::int64_t>(h.queued); }},
      {"narcache_coordinator_hook_oldest_event_age_seconds", "gauge",
       "Age of the oldest waiting event per hook.",
       [](const CoordinatorStats::Hook& h) { return h.oldest_age; }},
      {"narcache_coordinator_hook_failures_total", "counter", "Failed hook actions (retried).",
       [](const CoordinatorStats::Hook& h) { return static_cast<std::int64_t>(h.failures_total); }},
      {"narcache_coordinator_hook_events_processed_total", "counter", "Hook events done.",
       [](const CoordinatorStats::Hook& h) {
         return static_cast<std::int64_t>(h.processed_total);
       }},
  };
  for (const HookMetric& m : hook_metrics) {
    head(m.name, m.type, m.help);
    for (std::size_t i = 0; i < s.hooks.size(); ++i) line(m.name, labels[i], m.value(s.hooks[i]));
  }
  return out;
}

}  // namespace narcache::coordinator
