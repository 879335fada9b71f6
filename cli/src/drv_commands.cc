// Derivation commands: `drv show FILE.drv` prints a .drv as JSON (like `nix show-derivation`);
// `drv create ...` builds a derivation as Nix's `derivation` builtin does, writes the .drv and
// prints its store path.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "narcache/narinfo/derivation.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/store_path.h"

namespace narcache::cli {
namespace {

namespace fs = std::filesystem;

int printOut(const std::string& text) {
  FdSink out(STDOUT_FILENO);
  if (auto s = out.write(asBytes(text)); !s) return reportError(s.error().withContext("stdout"));
  return 0;
}

// Reads and parses a .drv file; the name comes from the file name when it is a store path.
Result<Derivation> loadDrvFile(const std::string& file) {
  auto text = readFileContents(file);
  if (!text) return fail(text.error());
  auto drv = parseDerivation(*text, drvNameFromFileName(file));
  if (!drv) return fail(drv.error().withContext(file));
  return drv;
}

// The store dir the derivation's paths live in (the directory of its first output path), or
// the default when nothing tells.
std::string guessStoreDir(const Derivation& drv) {
  for (const auto& [name, out] : drv.outputs) {
    if (!out.path.empty()) {
      std::string dir = fs::path(out.path).parent_path().string();
      if (validateStoreDir(dir)) return dir;
    }
  }
  return std::string(kDefaultStoreDir);
}

nlohmann::ordered_json toJson(const Derivation& drv) {
  nlohmann::ordered_json j;
  auto& outputs = j["outputs"] = nlohmann::ordered_json::object();
  for (const auto& [name, out] : drv.outputs) {
    nlohmann::ordered_json o = nlohmann::ordered_json::object();
    if (!out.path.empty()) o["path"] = out.path;
    if (!out.hash_algo.empty()) o["hashAlgo"] = out.hash_algo;
    if (!out.hash.empty()) o["hash"] = out.hash;
    outputs[name] = std::move(o);
  }
  j["inputSrcs"] = drv.input_srcs;
  auto& inputs = j["inputDrvs"] = nlohmann::ordered_json::object();
  for (const auto& [path, names] : drv.input_drvs) inputs[path] = names;
  j["system"] = drv.platform;
  j["builder"] = drv.builder;
  j["args"] = drv.args;
  auto& env = j["env"] = nlohmann::ordered_json::object();
  for (const auto& [key, value] : drv.env) env[key] = value;
  return j;
}

// Replaces `path` atomically (write to a temporary file beside it, then rename).
Status writeFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return fail(ErrorCode::kIoError, "cannot create '" + tmp + "': " + std::strerror(errno));
  }
  FdSink sink(fd);
  auto status = sink.write(asBytes(text));
  if (::close(fd) != 0 && status) {
    status = fail(ErrorCode::kIoError, "close '" + tmp + "': " + std::strerror(errno));
  }
  if (status && ::rename(tmp.c_str(), path.c_str()) != 0) {
    status = fail(ErrorCode::kIoError, "rename to '" + path + "': " + std::strerror(errno));
  }
  if (!status) {
    ::unlink(tmp.c_str());
    return fail(status.error().withContext(path));
  }
  return {};
}

std::vector<std::string> splitComma(const std::string& s) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    auto comma = s.find(',', start);
    parts.push_back(s.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return parts;
}

void addShowCommand(CommandRegistry& registry, CLI::App* group) {
  struct Args {
    std::vector<std::string> files;
    std::string store_dir;
  };
  auto args = std::make_shared<Args>();
  CLI::App* show = group->add_subcommand(
      "show", "Print derivations as JSON (like nix show-derivation), keyed by their store path");
  show->add_option("FILE", args->files, ".drv files")->required();
  show->add_option("--store-dir", args->store_dir,
                   "Store dir (default: the directory of the output paths, else /nix/store)");
  registry.add(show, [args] {
    nlohmann::ordered_json all = nlohmann::ordered_json::object();
    for (const auto& file : args->files) {
      auto drv = loadDrvFile(file);
      if (!drv) return reportError(drv.error());
      const std::string store_dir = args->store_dir.empty() ? guessStoreDir(*drv) : args->store_dir;
      auto path = derivationStorePath(*drv, store_dir);
      if (!path) return reportError(path.error().withContext(file));
      all[*path] = toJson(*drv);
    }
    return printOut(all.dump(2) + "\n");
  });
}

struct CreateArgs {
  std::string name;
  std::string builder;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string outputs;
  std::vector<std::string> input_drvs;
  std::vector<std::string> input_srcs;
  std::string system;
  std::string store_dir = std::string(kDefaultStoreDir);
  std::string output;
};

// Builds the derivation of `a`: loads the --input-drv files (input derivations of those are
// looked up by base name in the same directories) and runs the `derivation` builtin's rules.
Result<Derivation> createDerivation(const CreateArgs& a) {
  DerivationAttrs attrs;
  attrs.name = a.name;
  attrs.builder = a.builder;
  attrs.system = a.system;
  attrs.args = a.args;
  for (const auto& kv : a.env) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return fail(ErrorCode::kInvalidArgument, "--env '" + kv + "': expected KEY=VALUE");
    }
    if (!attrs.env.emplace(kv.substr(0, eq), kv.substr(eq + 1)).second) {
      return fail(ErrorCode::kInvalidArgument, "--env: '" + kv.substr(0, eq) + "' given twice");
    }
  }
  if (!a.outputs.empty()) {
    attrs.outputs = splitComma(a.outputs);
    attrs.outputs_given = true;
  }

  // Derivations known by store path, and the directories to search for the others.
  auto known = std::make_shared<std::map<std::string, Derivation>>();
  auto dirs = std::make_shared<std::vector<fs::path>>();
  for (const auto& spec : a.input_drvs) {
    const auto bang = spec.find('!');
    const std::string file = spec.substr(0, bang);
    auto drv = loadDrvFile(file);
    if (!drv) return fail(drv.error().withContext("--input-drv"));
    auto path = derivationStorePath(*drv, a.store_dir);
    if (!path) return fail(path.error().withContext("--input-drv '" + file + "'"));
    std::set<std::string> outputs;
    if (bang != std::string::npos) {
      for (auto& o : splitComma(spec.substr(bang + 1))) outputs.insert(std::move(o));
    } else {
      // The default output, as `${drv}` in Nix: the first of env "outputs", else "out".
      std::string first = "out";
      if (auto it = drv->env.find("outputs"); it != drv->env.end() && !it->second.empty()) {
        first = it->second.substr(0, it->second.find(' '));
      }
      outputs.insert(first);
    }
    for (const auto& o : outputs) {
      if (!drv->outputs.count(o)) {
        return fail(ErrorCode::kInvalidArgument,
                    "--input-drv '" + spec + "': derivation has no output '" + o + "'");
      }
    }
    attrs.input_drvs[*path].insert(outputs.begin(), outputs.end());
    dirs->push_back(fs::path(file).parent_path());
    known->emplace(*path, std::move(*drv));
  }
  for (const auto& src : a.input_srcs) attrs.input_srcs.insert(src);

  DerivationLoader load = [known, dirs](const std::string& drv_path) -> Result<Derivation> {
    if (auto it = known->find(drv_path); it != known->end()) return it->second;
    const std::string base = fs::path(drv_path).filename().string();
    for (const auto& dir : *dirs) {
      const fs::path candidate = dir / base;
      std::error_code ec;
      if (fs::exists(candidate, ec)) return loadDrvFile(candidate.string());
    }
    return fail(ErrorCode::kNotFound,
                "cannot find '" + base + "' beside the --input-drv files (needed for its hash)");
  };
  DrvHashMemo memo;
  return makeDerivation(attrs, a.store_dir, load, &memo);
}

void addCreateCommand(CommandRegistry& registry, CLI::App* group) {
  auto a = std::make_shared<CreateArgs>();
  CLI::App* create = group->add_subcommand(
      "create",
      "Write a .drv as Nix's `derivation` builtin would and print its store path. The env gets "
      "builder, name, system, each output's path, and `outputs` when --outputs is given");
  create->add_option("--name", a->name, "Derivation name")->required();
  create->add_option("--builder", a->builder, "Builder program")->required();
  create->add_option("--arg", a->args,
                     "Builder argument (repeatable, in order; an empty one as `--arg ''`)");
  create->add_option("--env", a->env, "Environment attribute KEY=VALUE (repeatable)");
  create->add_option("--outputs", a->outputs,
                     "Comma-separated outputs, e.g. out,dev (default: out, and no `outputs` env)");
  create->add_option("--input-drv", a->input_drvs,
                     "Input derivation FILE.drv[!out,dev] (default: its first output)");
  create->add_option("--input-src", a->input_srcs, "Input source store path (repeatable)");
  create->add_option("--system", a->system, "Platform, e.g. x86_64-linux")->required();
  create->add_option("--store-dir", a->store_dir, "Store dir (default /nix/store)");
  create->add_option("--output", a->output, "Where to write the .drv")->required();
  registry.add(create, [a] {
    if (auto s = validateStoreDir(a->store_dir); !s) {
      return reportError(s.error().withContext("--store-dir"));
    }
    auto drv = createDerivation(*a);
    if (!drv) return reportError(drv.error());
    auto path = derivationStorePath(*drv, a->store_dir);
    if (!path) return reportError(path.error());
    if (auto s = writeFileAtomically(a->output, writeDerivation(*drv)); !s) {
      return reportError(s.error());
    }
    return printOut(*path + "\n");
  });
}

}  // namespace

void registerDrvCommands(CommandRegistry& registry) {
  CLI::App* drv = registry.group(registry.app(), "drv", "Derivations (.drv files)");
  addShowCommand(registry, drv);
  addCreateCommand(registry, drv);
}

}  // namespace narcache::cli
