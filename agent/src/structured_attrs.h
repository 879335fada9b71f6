#pragma once
// Structured attributes (`__structuredAttrs = true`: the .drv's env holds `__json`), as Nix 2.8
// gives them to the builder:
//   * none of the .drv's env reaches the builder's environment; instead the build directory gets
//     `.attrs.json` (the attributes, with "outputs" mapping each output name to its path, dumped
//     compact with sorted keys) and `.attrs.sh` (bash `declare` lines for the attributes bash
//     can hold: strings, integers, Booleans, null, and lists or objects of those), whose paths are
//     in NIX_ATTRS_JSON_FILE and NIX_ATTRS_SH_FILE;
//   * output placeholders in both are replaced with the output paths.
// Checked byte for byte against nix-build 2.8 (tests/agent/builder_test.cc). Their
// exportReferencesGraph is filled in by reference_checks.h's exportReferencesGraphJson before
// the files are written, and their outputChecks are applied by checkOutputs after the build.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "narcache/narinfo/derivation.h"
#include "narcache/narinfo/error.h"

namespace narcache::agent {

// The parsed `__json` of `drv`, nullopt when it has none. InvalidArgument with Nix's message
// ("cannot process __json attribute: ...") when it is not a JSON object.
Result<std::optional<nlohmann::json>> parseStructuredAttrs(const Derivation& drv);

// The contents of .attrs.json and .attrs.sh for `attrs` (from parseStructuredAttrs), outputs
// added and placeholders replaced.
struct StructuredAttrsFiles {
  std::string json;
  std::string sh;
};
StructuredAttrsFiles structuredAttrsFiles(nlohmann::json attrs, const Derivation& drv);

}  // namespace narcache::agent
