// (placeholder until the coordinator issue fills it)

#include "commands.h"

namespace narcache::cli {

void registerCoordinatorClientCommands(CommandRegistry& /*registry*/) {}

}  // namespace narcache::cli
