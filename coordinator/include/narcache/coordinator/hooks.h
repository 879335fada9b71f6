#pragma once
// Hook specifications of the coordinator (`--hook EVENT=ACTION`). A hook is one queue of durable
// events of one type, processed by its own worker thread at least once (see docs/coordinator.md).
// Actions: "command:CMD" runs `/bin/sh -c CMD` with the event as JSON on stdin (non-zero exit or
// timeout = failure, retried with backoff); "builtin:log" logs the event; "builtin:root-outputs"
// (success events, needs a local store) adds the GC root "build-<id>" for the build's outputs.
// Value types; parseHookSpec returns InvalidArgument naming what is wrong.

#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"

namespace narcache::coordinator {

// Event types, as written in `--hook` and in the event JSON's "event" field.
inline constexpr std::string_view kHookEvents[] = {"submitted", "started",        "success",
                                                   "failure",   "missing-inputs", "canceled"};

struct HookSpec {
  std::string event;  // one of kHookEvents
  enum class Kind { kCommand, kBuiltin } kind = Kind::kCommand;
  std::string action;  // the command, or the builtin's name ("log", "root-outputs")
  std::string text;    // the spec as given: identifies the hook's queue across restarts
};

Result<HookSpec> parseHookSpec(std::string_view text);

}  // namespace narcache::coordinator
