#include "commands.h"

namespace narcache::cli {

void registerServeCommand(CommandRegistry&) {}

}  // namespace narcache::cli
