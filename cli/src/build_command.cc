// `narcache build FILE.drv --cache URL ...`: builds one derivation against a binary cache with
// the agent's build engine (agent/include/narcache/agent/builder.h, docs/build.md).
//
// `build` is a command with options and a positional FILE; a later `build submit|list|...`
// (coordinator client) can be added as sub-subcommands of the same CLI11 app: CLI11 matches a
// subcommand name before it fills a positional, so `narcache build submit` and
// `narcache build x.drv` coexist (a .drv file literally named "submit" would need "./submit").
// Such sub-subcommands must have their actions registered before this one, or this action must
// step aside when one of them is parsed: CommandRegistry runs the first parsed command it knows.

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "narcache/agent/builder.h"

namespace narcache::cli {
namespace {

struct BuildArgs {
  std::string file;
  std::string cache;
  std::vector<std::string> trusted_keys;
  std::string token_file;
  std::string store_root = "/";
  std::string store_dir;
  int timeout = 0;
  int max_silent_time = 0;
  unsigned cores = 0;
  std::optional<std::string> system_features;
  bool keep_build_dir = false;
  bool no_upload = false;
  bool print_logs = false;
  bool json = false;
  bool quiet = false;
  std::string log_file;
  std::string build_uids;
};

nlohmann::ordered_json toJson(const agent::BuildResult& r) {
  nlohmann::ordered_json j;
  j["drvPath"] = r.drv_path;
  j["status"] = std::string(agent::buildStatusName(r.status));
  if (!r.message.empty()) j["message"] = r.message;
  if (!r.missing_inputs.empty()) j["missingInputs"] = r.missing_inputs;
  j["exitCode"] = r.exit_code;
  j["buildSeconds"] = r.build_seconds;
  j["substituted"] = r.substituted;
  j["storeIsolated"] = r.store_isolated;
  auto& outputs = j["outputs"] = nlohmann::ordered_json::object();
  for (const auto& out : r.outputs) {
    nlohmann::ordered_json o;
    o["path"] = out.info.fullPath();
    o["narHash"] = out.info.nar_hash.toString();
    o["narSize"] = out.info.nar_size;
    o["url"] = out.info.url;
    o["fileSize"] = out.info.file_size.value_or(0);
    std::vector<std::string> refs;
    for (const auto& ref : out.info.references) refs.push_back(ref.fullPath(out.info.store_dir));
    o["references"] = refs;
    if (!out.info.ca.empty()) o["ca"] = out.info.ca;
    outputs[out.name] = std::move(o);
  }
  if (!r.log_file.empty()) j["logFile"] = r.log_file.string();
  if (!r.log_tail.empty() && r.status != agent::BuildStatus::kSucceeded) j["logTail"] = r.log_tail;
  return j;
}

}  // namespace

void registerBuildCommand(CommandRegistry& registry) {
  auto a = std::make_shared<BuildArgs>();
  // The coordinator client may have created `build` already, for its `build submit|list|...`.
  CLI::App* cmd = nullptr;
  for (CLI::App* sub : registry.app().get_subcommands({})) {
    if (sub->get_name() == "build") cmd = sub;
  }
  if (cmd == nullptr) cmd = registry.app().add_subcommand("build");
  cmd->description(
      "Build a .drv: substitute its inputs from the cache, run the builder, upload the outputs "
      "(in dependency order) and the log. Prints the output paths");
  cmd->add_option("FILE", a->file, ".drv file (input .drv files are looked up beside it)");
  cmd->add_option("--cache", a->cache, "Binary cache URL, e.g. http://127.0.0.1:8080");
  cmd->add_option("--trusted-key", a->trusted_keys,
                  "Public key (name:base64 or a file) inputs must be signed by; repeatable. "
                  "Without any, input signatures are not checked");
  cmd->add_option("--upload-token-file", a->token_file, "File with the upload Bearer token");
  cmd->add_option("--store-root", a->store_root,
                  "Physical root: the store dir D lives at DIR/D (default /: physical == logical); "
                  "otherwise the builder runs in a private mount namespace");
  cmd->add_option("--store-dir", a->store_dir,
                  "Logical store dir (default: the directory of the derivation's outputs)");
  cmd->add_option("--timeout", a->timeout, "Kill the builder after S seconds (0: never)");
  cmd->add_option("--max-silent-time", a->max_silent_time,
                  "Kill the builder after S seconds without output (0: never)");
  cmd->add_flag("--keep-build-dir", a->keep_build_dir, "Keep the build directory afterwards");
  addBuildUidsOption(cmd, a->build_uids);
  cmd->add_flag("--no-upload", a->no_upload, "Build and pack, but upload nothing");
  addCoresOption(cmd, a->cores);
  addSystemFeaturesOption(cmd, a->system_features);
  cmd->add_option("--log-file", a->log_file, "Also keep the build log in this file");
  cmd->add_flag("-L,--print-build-logs", a->print_logs, "Copy the builder's output to stderr");
  cmd->add_flag("--json", a->json, "Print the result as JSON on stdout");
  cmd->add_flag("-q,--quiet", a->quiet, "No progress messages");
  registry.add(cmd, [a] {
    if (a->file.empty()) {
      std::fprintf(stderr, "narcache: build: a .drv FILE is required\n");
      return 2;
    }
    if (a->cache.empty()) {
      std::fprintf(stderr, "narcache: build: --cache is required\n");
      return 2;
    }
    agent::BuildOptions options;
    options.drv_file = a->file;
    options.cache_url = a->cache;
    auto keys = parseTrustedKeys(a->trusted_keys);
    if (!keys) return reportError(keys.error());
    options.trusted_keys = *keys;
    if (!a->token_file.empty()) {
      auto token = readFileContents(a->token_file);
      if (!token) return reportError(token.error().withContext("--upload-token-file"));
      while (!token->empty() &&
             (token->back() == '\n' || token->back() == '\r' || token->back() == ' ')) {
        token->pop_back();
      }
      options.upload_token = *token;
    }
    options.store_root = a->store_root;
    options.store_dir = a->store_dir;
    options.timeout_seconds = a->timeout;
    options.max_silent_seconds = a->max_silent_time;
    options.cores = a->cores;
    if (a->system_features) options.system_features = parseSystemFeatures(*a->system_features);
    options.keep_build_dir = a->keep_build_dir;
    auto uids = parseBuildUids(a->build_uids);
    if (!uids) return reportError(uids.error());
    options.build_uids = *uids;
    options.upload = !a->no_upload;
    options.log_file = a->log_file;
    if (a->print_logs) {
      options.on_log = [](std::string_view chunk) {
        std::fwrite(chunk.data(), 1, chunk.size(), stderr);
      };
    }
    if (!a->quiet) {
      options.on_progress = [](std::string_view message) {
        std::fprintf(stderr, "%.*s\n", static_cast<int>(message.size()), message.data());
      };
    }
    auto result = agent::buildDerivation(options);
    if (!result) return reportError(result.error());
    if (a->json) {
      std::printf("%s\n", toJson(*result).dump(2).c_str());
    } else if (result->status == agent::BuildStatus::kSucceeded) {
      for (const auto& out : result->outputs) std::printf("%s\n", out.info.fullPath().c_str());
    }
    if (result->status != agent::BuildStatus::kSucceeded) {
      std::string text = result->message;
      if (!result->log_tail.empty()) {
        text += "\nlast lines of the build log:\n" + result->log_tail;
      }
      if (!result->log_file.empty()) text += "\nfull log: " + result->log_file.string();
      std::fprintf(stderr, "narcache: build %s: %s\n",
                   std::string(agent::buildStatusName(result->status)).c_str(), text.c_str());
      return 1;
    }
    return 0;
  });
}

}  // namespace narcache::cli
