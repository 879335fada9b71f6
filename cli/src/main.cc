// narcache: one binary, one subcommand per operation. main() builds the object graph and owns it.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"narcache: a binary cache and build-farm backend for Nix and Guix stores"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for all subcommands");
  narcache::cli::CommandRegistry registry(app);
  narcache::cli::registerAll(registry);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return registry.runSelected();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "narcache: internal error: %s\n", e.what());
    return 70;
  }
}
