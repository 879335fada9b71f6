#include "commands.h"

namespace narcache::cli {

void registerStoreCommands(CommandRegistry&) {}

}  // namespace narcache::cli
