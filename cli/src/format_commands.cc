#include "commands.h"

namespace narcache::cli {

void registerFormatCommands(CommandRegistry&) {}

}  // namespace narcache::cli
