#include "commands.h"

namespace narcache::cli {

void registerDrvCommands(CommandRegistry&) {}

}  // namespace narcache::cli
