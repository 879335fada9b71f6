// Nix's reference attributes: see reference_checks.h.

#include "reference_checks.h"

#include <algorithm>
#include <deque>
#include <iterator>
#include <set>
#include <sstream>

#include "narcache/narinfo/store_path.h"

namespace narcache::agent {
namespace {

constexpr const char* kChecks[] = {"allowedReferences", "allowedRequisites", "disallowedReferences",
                                   "disallowedRequisites"};

std::vector<std::string> tokens(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string t; in >> t;) out.push_back(t);
  return out;
}

// `paths` and everything they refer to, transitively.
std::set<std::string> closure(const ReferenceGraph& graph, const std::set<std::string>& paths) {
  std::set<std::string> seen(paths.begin(), paths.end());
  std::deque<std::string> queue(paths.begin(), paths.end());
  while (!queue.empty()) {
    auto it = graph.find(queue.front());
    queue.pop_front();
    if (it == graph.end()) continue;
    for (const auto& ref : it->second) {
      if (seen.insert(ref).second) queue.push_back(ref);
    }
  }
  return seen;
}

bool validExportName(const std::string& name) {
  auto first = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; };
  auto rest = [&](char c) {
    return first(c) || std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == '-';
  };
  return !name.empty() && first(name[0]) && std::all_of(name.begin() + 1, name.end(), rest);
}

Error invalid(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message));
}

}  // namespace

Result<std::set<std::string>> exportedClosure(const std::vector<std::string>& given,
                                              const std::string& store_dir,
                                              const ReferenceGraph& graph, bool exact) {
  const std::string prefix = store_dir + "/";
  std::set<std::string> paths;
  for (const std::string& g : given) {
    if (!g.starts_with(prefix) || g.size() == prefix.size()) {
      return fail(invalid("'exportReferencesGraph' contains a non-store path '" + g + "'"));
    }
    if (exact && g.find('/', prefix.size()) != std::string::npos) {
      return fail(invalid("path '" + g + "' is not in the Nix store"));  // Nix's words
    }
    const std::string path =
        prefix + g.substr(prefix.size(), g.find('/', prefix.size()) - prefix.size());
    if (!graph.count(path)) {
      return fail(invalid("cannot export references of path '" + path +
                          "' because it is not in the input closure of the derivation"));
    }
    paths.insert(path);
  }
  return closure(graph, paths);
}

Status exportReferencesGraphJson(nlohmann::json& attrs, const std::string& store_dir,
                                 const ReferenceGraph& graph, const PathFacts& facts) {
  auto spec = attrs.find("exportReferencesGraph");
  if (spec == attrs.end() || !spec->is_object()) return {};
  std::map<std::string, nlohmann::json> exported;
  for (const auto& [name, listed] : spec->items()) {
    std::vector<std::string> given;
    if (listed.is_array()) {
      for (const auto& p : listed) {
        if (!p.is_string()) {
          return fail(invalid("'exportReferencesGraph." + name + "' must be a list of strings"));
        }
        given.push_back(p.get<std::string>());
      }
    } else if (listed.is_string()) {
      given.push_back(listed.get<std::string>());
    } else {
      return fail(invalid("'exportReferencesGraph." + name + "' must be a list of strings"));
    }
    auto paths = exportedClosure(given, store_dir, graph, true);
    if (!paths) return fail(paths.error());
    nlohmann::json list = nlohmann::json::array();
    for (const std::string& p : *paths) {  // ordered as Nix's StorePathSet (by base name)
      auto f = facts(p);
      if (!f) return fail(f.error());
      std::uint64_t closure_size = 0;
      for (const std::string& c : closure(graph, {p})) {
        auto cf = facts(c);
        if (!cf) return fail(cf.error());
        closure_size += cf->nar_size;
      }
      std::vector<std::string> refs = graph.at(p);
      std::sort(refs.begin(), refs.end());
      nlohmann::json entry = {{"path", p},
                              {"narHash", f->nar_hash},
                              {"narSize", f->nar_size},
                              {"references", refs},
                              {"closureSize", closure_size}};
      if (!f->ca.empty()) entry["ca"] = f->ca;
      list.push_back(std::move(entry));
    }
    exported[name] = std::move(list);
  }
  for (auto& [name, list] : exported) attrs[name] = std::move(list);
  return {};
}

Result<std::map<std::string, OutputChecks>> outputChecksOf(
    const Derivation& drv, const std::optional<nlohmann::json>& structured) {
  std::map<std::string, OutputChecks> all;
  if (!structured) {
    OutputChecks classic;
    classic.ignore_self_refs = true;
    bool any = false;
    for (std::size_t i = 0; i < std::size(kChecks); ++i) {
      if (auto it = drv.env.find(kChecks[i]); it != drv.env.end()) {
        classic.lists[i] = tokens(it->second);
        any = true;
      }
    }
    if (any) {
      for (const auto& [name, out] : drv.outputs) all[name] = classic;
    }
    return all;
  }
  auto checks = structured->find("outputChecks");
  if (checks == structured->end() || !checks->is_object()) return all;
  for (const auto& [name, out] : drv.outputs) {
    auto spec = checks->find(name);
    if (spec == checks->end() || !spec->is_object()) continue;
    OutputChecks c;
    for (auto [key, field] :
         {std::pair{"maxSize", &c.max_size}, std::pair{"maxClosureSize", &c.max_closure_size}}) {
      if (auto v = spec->find(key); v != spec->end()) {
        if (!v->is_number_unsigned()) {
          return fail(invalid(std::string("attribute '") + key +
                              "' of derivation must be a non-negative integer"));
        }
        *field = v->get<std::uint64_t>();
      }
    }
    for (std::size_t i = 0; i < std::size(kChecks); ++i) {
      auto v = spec->find(kChecks[i]);
      if (v == spec->end()) continue;
      std::vector<std::string> list;
      for (const auto& item : v->is_array() ? *v : nlohmann::json::array({nullptr})) {
        if (!item.is_string()) {
          return fail(invalid(std::string("attribute '") + kChecks[i] +
                              "' of derivation must be a list of strings"));
        }
        list.push_back(item.get<std::string>());
      }
      c.lists[i] = std::move(list);
    }
    all[name] = std::move(c);
  }
  return all;
}

Result<std::vector<std::pair<std::string, std::string>>> exportReferencesGraph(
    const Derivation& drv, const std::string& store_dir, const ReferenceGraph& graph) {
  std::vector<std::pair<std::string, std::string>> files;
  auto it = drv.env.find("exportReferencesGraph");
  if (it == drv.env.end()) return files;
  auto t = tokens(it->second);
  if (t.size() % 2 != 0) {
    return fail(invalid("odd number of tokens in 'exportReferencesGraph': '" + it->second + "'"));
  }
  for (std::size_t i = 0; i < t.size(); i += 2) {
    const std::string& name = t[i];
    const std::string& given = t[i + 1];
    if (!validExportName(name)) {
      return fail(invalid("invalid file name '" + name + "' in 'exportReferencesGraph'"));
    }
    auto exported = exportedClosure({given}, store_dir, graph, false);
    if (!exported) return fail(exported.error());
    std::string text;
    for (const auto& p : *exported) {
      std::vector<std::string> refs = graph.at(p);
      std::sort(refs.begin(), refs.end());
      text += p + "\n\n" + std::to_string(refs.size()) + "\n";
      for (const auto& r : refs) text += r + "\n";
    }
    files.emplace_back(name, std::move(text));
  }
  return files;
}

Result<std::string> checkOutputs(const Derivation& drv,
                                 const std::map<std::string, OutputChecks>& checks,
                                 const std::string& store_dir, const ReferenceGraph& graph,
                                 const PathFacts& facts) {
  // As Nix: output by output (in name order), sizes first, then the four lists.
  for (const auto& [name, c] : checks) {
    const std::string& path = drv.outputs.at(name).path;
    if (c.max_size) {
      auto f = facts(path);
      if (!f) return fail(f.error());
      if (f->nar_size > *c.max_size) {
        return "path '" + path + "' is too large at " + std::to_string(f->nar_size) +
               " bytes; limit is " + std::to_string(*c.max_size) + " bytes";
      }
    }
    if (c.max_closure_size) {
      std::uint64_t size = 0;
      for (const auto& p : closure(graph, {path})) {
        auto f = facts(p);
        if (!f) return fail(f.error());
        size += f->nar_size;
      }
      if (size > *c.max_closure_size) {
        return "closure of path '" + path + "' is too large at " + std::to_string(size) +
               " bytes; limit is " + std::to_string(*c.max_closure_size) + " bytes";
      }
    }
    for (std::size_t i = 0; i < std::size(kChecks); ++i) {
      if (!c.lists[i]) continue;
      const std::string check(kChecks[i]);
      const bool allowed = check.starts_with("allowed");
      const bool recursive = check.ends_with("Requisites");
      std::set<std::string> spec;
      for (const auto& token : *c.lists[i]) {
        if (StorePath::parse(token, store_dir)) {
          spec.insert(token);
        } else if (auto out = drv.outputs.find(token); out != drv.outputs.end()) {
          spec.insert(out->second.path);
        } else {
          return fail(
              invalid("derivation contains an illegal reference specifier '" + token + "'"));
        }
      }
      std::set<std::string> used;
      if (recursive) {
        used = closure(graph, {path});
        if (c.ignore_self_refs) used.erase(path);
      } else if (auto refs = graph.find(path); refs != graph.end()) {
        used.insert(refs->second.begin(), refs->second.end());
      }
      std::string bad;
      for (const auto& p : used) {
        if (spec.count(p) != (allowed ? 0u : 1u)) continue;
        bad += "\n  " + p;
      }
      if (!bad.empty()) {
        return "output '" + path + "' is not allowed to refer to the following paths:" + bad;
      }
    }
  }
  return std::string();
}

}  // namespace narcache::agent
