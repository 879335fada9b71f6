#pragma once
// Nix's reference attributes of a derivation without structured attrs, as Nix 2.8 applies
// them:
//   * allowedReferences / allowedRequisites / disallowedReferences / disallowedRequisites: each
//     a space-separated list of store paths and output names of the derivation (an output name
//     stands for that output's path). After the build, each output's references (or, for the
//     *Requisites, its closure, itself included) must all be in the allowed list, or none in the
//     disallowed one.
//   * exportReferencesGraph: pairs "<file name> <store path>": before the build, each file is
//     written into the build directory with the closure of that input (its store path may be a
//     path inside one) in Nix's validity-registration text: per path, in order, the path, an
//     empty deriver line, the number of references and the references, one per line.
// The graph holds the references of the input closure and of the outputs (full paths).

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "narcache/narinfo/derivation.h"
#include "narcache/narinfo/error.h"

namespace narcache::agent {

using ReferenceGraph = std::map<std::string, std::vector<std::string>>;  // path -> references

// Whether the derivation uses any of the attributes above (the graph is only needed then).
bool usesReferenceAttributes(const Derivation& drv);

// The files exportReferencesGraph asks for: (file name, contents). `graph` covers the input
// closure. Errors (kInvalidArgument, the derivation's fault): an odd number of tokens, a bad file
// name, a path outside the store or outside the input closure.
Result<std::vector<std::pair<std::string, std::string>>> exportReferencesGraph(
    const Derivation& drv, const std::string& store_dir, const ReferenceGraph& graph);

// The closure of `given` (store paths, or paths inside one) in `graph`. InvalidArgument for a
// path outside the store or outside the input closure (Nix's messages).
Result<std::set<std::string>> exportedClosure(const std::vector<std::string>& given,
                                              const std::string& store_dir,
                                              const ReferenceGraph& graph);

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

// Checks every output against the four attributes. Empty when all pass, else Nix's message
// ("output '…' is not allowed to refer to the following paths:\n  …"). Errors (kInvalidArgument):
// an entry that is neither a store path nor an output name.
Result<std::string> checkOutputReferences(const Derivation& drv, const std::string& store_dir,
                                          const ReferenceGraph& graph);

}  // namespace narcache::agent
