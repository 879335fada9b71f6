#pragma once
// The command registry of the narcache binary. Each command group lives in its own
// <group>_commands.cc and registers its subcommands (CLI11) with an action returning the exit
// code: 0 success, 1 failure (message on stderr as "narcache: <message>"), 2 bad usage.

#include <sys/types.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"
#include "narcache/narinfo/signature.h"
#include "narcache/narstore/store.h"

namespace narcache::cli {

class CommandRegistry {
 public:
  explicit CommandRegistry(CLI::App& app) : app_(app) {}
  CLI::App& app() { return app_; }
  // Returns the subcommand `name` of `parent`, creating it (as a group needing a subcommand).
  CLI::App* group(CLI::App& parent, const std::string& name, const std::string& description);
  // Registers `action` to run when `command` is the one selected on the command line.
  void add(CLI::App* command, std::function<int()> action);
  // Runs the action of the selected command.
  int runSelected();

 private:
  CLI::App& app_;
  std::vector<std::pair<CLI::App*, std::function<int()>>> actions_;
};

// Prints "narcache: <message>" to stderr and returns the exit code for it (1).
int reportError(const Error& error);

// The long-running commands (serve, coordinator, agent) log to stderr through spdlog: one
// timestamped line per event, under the logger `name`, at `level`.
void addLogLevelOption(CLI::App* command, std::string& level);  // --log-level, checked
void startLogging(const std::string& name, const std::string& level = "info");

// Adds `--store DIR` to a command, defaulting to $NARCACHE_STORE, then ./var/store.
void addStoreOption(CLI::App* command, std::string& root);

// Opens the store at `root` (as given by --store) with default options.
Result<std::unique_ptr<narstore::Store>> openStore(const std::string& root);

// --trusted-key values: each a public key "name:base64" or a file holding one.
Result<std::vector<PublicKey>> parseTrustedKeys(const std::vector<std::string>& args);

// --build-uids FIRST-LAST (inclusive, 1 <= FIRST <= LAST); empty: none (nullopt).
Result<std::optional<std::pair<uid_t, uid_t>>> parseBuildUids(const std::string& text);
// Adds --build-uids to a command that builds.
// --system-features LIST of `build` and `agent` (unset: the engine's defaults), and its parse:
// words separated by spaces or commas, sorted, without duplicates.
void addSystemFeaturesOption(CLI::App* command, std::optional<std::string>& text);
std::vector<std::string> parseSystemFeatures(const std::string& text);
// --cores N of `build` and `agent`: NIX_BUILD_CORES (0, the default: the machine's CPUs).
void addCoresOption(CLI::App* command, unsigned& cores);
void addBuildUidsOption(CLI::App* command, std::string& text);

void registerFormatCommands(CommandRegistry& registry);  // nar, hash, key, narinfo, (de)compress
void registerStoreCommands(CommandRegistry& registry);   // store init, add, info, stats, verify,
                                                         // import, export
void registerServeCommand(CommandRegistry& registry);    // serve
void registerDrvCommands(CommandRegistry& registry);     // drv show, drv create
void registerGcCommands(CommandRegistry& registry);      // roots, gc, mark-deleted, available
void registerBuildCommand(CommandRegistry& registry);    // build FILE.drv
void registerCoordinatorCommand(CommandRegistry& registry);  // coordinator
// build submit|list|show|cancel|retry, agent add|list, agent (the agent loop)
void registerCoordinatorClientCommands(CommandRegistry& registry);

inline void registerAll(CommandRegistry& registry) {
  registerFormatCommands(registry);
  registerStoreCommands(registry);
  registerServeCommand(registry);
  registerDrvCommands(registry);
  registerGcCommands(registry);
  registerCoordinatorCommand(registry);
  registerCoordinatorClientCommands(registry);  // before `build`: its children must match first
  registerBuildCommand(registry);
}

}  // namespace narcache::cli
