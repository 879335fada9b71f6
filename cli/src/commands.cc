#include "commands.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "narcache/agent/builder.h"

namespace narcache::cli {

CLI::App* CommandRegistry::group(CLI::App& parent, const std::string& name,
                                 const std::string& description) {
  for (CLI::App* sub : parent.get_subcommands({})) {
    if (sub->get_name() == name) return sub;
  }
  CLI::App* sub = parent.add_subcommand(name, description);
  sub->require_subcommand(1);
  return sub;
}

void CommandRegistry::add(CLI::App* command, std::function<int()> action) {
  actions_.emplace_back(command, std::move(action));
}

int CommandRegistry::runSelected() {
  for (auto& [command, action] : actions_) {
    if (command->parsed()) return action();
  }
  std::fprintf(stderr, "narcache: no command given (see --help)\n");
  return 2;
}

void addLogLevelOption(CLI::App* command, std::string& level) {
  command->add_option("--log-level", level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
}

void startLogging(const std::string& name, const std::string& level) {
  spdlog::set_default_logger(spdlog::stderr_color_mt(name));
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
}

void addStoreOption(CLI::App* command, std::string& root) {
  const char* env = std::getenv("NARCACHE_STORE");
  root = env != nullptr && *env != '\0' ? env : "./var/store";
  command->add_option("--store", root,
                      "Store directory (default: $NARCACHE_STORE, then ./var/store)");
}

Result<std::unique_ptr<narstore::Store>> openStore(const std::string& root) {
  narstore::StoreOptions options;
  options.root = root;
  return narstore::Store::open(options);
}

int reportError(const Error& error) {
  std::fprintf(stderr, "narcache: %s\n", error.message().c_str());
  return 1;
}

Result<std::optional<std::pair<uid_t, uid_t>>> parseBuildUids(const std::string& text) {
  if (text.empty()) return std::optional<std::pair<uid_t, uid_t>>();
  auto number = [](std::string_view s) -> std::optional<uid_t> {
    uid_t v = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
    return v;
  };
  const std::size_t dash = text.find('-');
  auto first = number(std::string_view(text).substr(0, dash));
  auto last = dash == std::string::npos ? first : number(std::string_view(text).substr(dash + 1));
  if (!first || !last || *first == 0 || *first > *last) {
    return fail(ErrorCode::kInvalidArgument,
                "--build-uids: expected FIRST-LAST with 1 <= FIRST <= LAST, e.g. 30000-30031; "
                "got '" +
                    text + "'");
  }
  return std::optional<std::pair<uid_t, uid_t>>(std::pair{*first, *last});
}

void addCoresOption(CLI::App* command, unsigned& cores) {
  command->add_option("--cores", cores,
                      "NIX_BUILD_CORES of the builder: how many CPUs a build may use "
                      "(make -j); default: this machine's CPUs, as in Nix");
}

void addSystemFeaturesOption(CLI::App* command, std::optional<std::string>& text) {
  std::string defaults;
  for (const std::string& f : agent::defaultSystemFeatures()) {
    defaults += (defaults.empty() ? "" : " ") + f;
  }
  command->add_option("--system-features", text,
                      "System features this machine offers, space- or comma-separated (Nix's "
                      "system-features); default: \"" +
                          defaults + "\"");
}

std::vector<std::string> parseSystemFeatures(const std::string& text) {
  std::vector<std::string> features;
  std::string word;
  for (char c : text + " ") {
    if (c == ' ' || c == ',' || c == '\t' || c == '\n' || c == '\r') {
      if (!word.empty() && std::find(features.begin(), features.end(), word) == features.end()) {
        features.push_back(word);
      }
      word.clear();
    } else {
      word += c;
    }
  }
  std::sort(features.begin(), features.end());
  return features;
}

void addBuildUidsOption(CLI::App* command, std::string& text) {
  command->add_option("--build-uids", text,
                      "Run builders as build users: uids FIRST-LAST (inclusive), one per build "
                      "at a time, gid the same number; they need not exist in /etc/passwd. "
                      "Needs root and store isolation. Without it builders run as this user");
}

Result<std::vector<PublicKey>> parseTrustedKeys(const std::vector<std::string>& args) {
  std::vector<PublicKey> keys;
  for (const auto& arg : args) {
    auto key = PublicKey::parse(arg);
    if (!key) {
      auto text = readFileContents(arg);
      if (!text) return fail(key.error().withContext("--trusted-key '" + arg + "'"));
      key = PublicKey::parse(*text);
      if (!key) return fail(key.error().withContext(arg));
    }
    keys.push_back(*key);
  }
  return keys;
}

}  // namespace narcache::cli
