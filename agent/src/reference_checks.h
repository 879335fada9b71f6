#pragma once
// Nix's reference attributes, as Nix 2.8 applies them:
//   * allowedReferences / allowedRequisites / disallowedReferences / disallowedRequisites: each
//     a list of store paths and output names of the derivation (an output name stands for that
//     output's path); space-separated attributes that apply to every output, or, with structured
//     attributes, lists in outputChecks.<output> beside maxSize and maxClosureSize. After the
//     build, each output's references (or, for the *Requisites, its closure: without the output
//     itself for the classic attributes, with it in outputChecks) must all be in the allowed
//     list, or none in the disallowed one.
//   * exportReferencesGraph: pairs "<file name> <store path>": before the build, each file is
//     written into the build directory with the closure of that input (its store path may be a
//     path inside one) in Nix's validity-registration text: per path, in order, the path, an
//     empty deriver line, the number of references and the references, one per line. With
//     structured attributes, {name: [paths]}: path infos in .attrs.json instead.
// The graph holds the references of the input closure and of the outputs (full paths).

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "narcache/narinfo/derivation.h"
#include "narcache/narinfo/error.h"

namespace narcache::agent {

using ReferenceGraph = std::map<std::string, std::vector<std::string>>;  // path -> references

// The files exportReferencesGraph asks for: (file name, contents). `graph` covers the input
// closure. Errors (kInvalidArgument, the derivation's fault): an odd number of tokens, a bad file
// name, a path outside the store or outside the input closure.
Result<std::vector<std::pair<std::string, std::string>>> exportReferencesGraph(
    const Derivation& drv, const std::string& store_dir, const ReferenceGraph& graph);

// The closure of `given` in `graph`: store paths, or (unless `exact`, which the structured form
// is) paths inside one. InvalidArgument for a path outside the store or outside the input
// closure (Nix's messages).
Result<std::set<std::string>> exportedClosure(const std::vector<std::string>& given,
                                              const std::string& store_dir,
                                              const ReferenceGraph& graph, bool exact);

// What structured exportReferencesGraph says of a path: its NarHash ("sha256:<nix32>"), NarSize
// and content address ("" when none).
struct PathFact {
  std::string nar_hash;
  std::uint64_t nar_size = 0;
  std::string ca;
};
using PathFacts = std::function<Result<PathFact>(const std::string& path)>;

// exportReferencesGraph in structured attributes, as Nix 2.8 does it: for each entry
// `name: [paths]` of attrs["exportReferencesGraph"], attrs[name] becomes the list of the paths'
// closure (sorted), each {closureSize, narHash, narSize, path, references, ca when set}.
Status exportReferencesGraphJson(nlohmann::json& attrs, const std::string& store_dir,
                                 const ReferenceGraph& graph, const PathFacts& facts);

// The checks Nix applies to one output after the build.
struct OutputChecks {
  // allowedReferences, allowedRequisites, disallowedReferences, disallowedRequisites, in this
  // order; unset: not checked.
  std::array<std::optional<std::vector<std::string>>, 4> lists;
  std::optional<std::uint64_t> max_size, max_closure_size;  // structured attributes only
  bool ignore_self_refs = false;  // classic attributes: the *Requisites skip the output itself
};

// The checks of each output that has some: the four classic attributes apply to every output;
// with structured attributes, outputChecks.<output> {allowedReferences..., maxSize,
// maxClosureSize}. InvalidArgument for a list that is not of strings, or a size that is not a
// non-negative integer.
Result<std::map<std::string, OutputChecks>> outputChecksOf(
    const Derivation& drv, const std::optional<nlohmann::json>& structured);

// Applies `checks` as Nix 2.8 does: output by output in name order, sizes (NarSize from `facts`)
// first, then the lists. Empty when all pass, else Nix's message ("output '…' is not allowed to
// refer to the following paths:\n  …", "path '…' is too large at N bytes; limit is M bytes",
// "closure of path '…' is too large at …"). Errors (kInvalidArgument): an entry that is neither
// a store path nor an output name. `graph` covers the input closure and the outputs.
Result<std::string> checkOutputs(const Derivation& drv,
                                 const std::map<std::string, OutputChecks>& checks,
                                 const std::string& store_dir, const ReferenceGraph& graph,
                                 const PathFacts& facts);

}  // namespace narcache::agent
