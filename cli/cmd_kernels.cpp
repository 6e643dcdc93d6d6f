#include "commands.h"

namespace troupe::cli {

void add_kernels(CLI::App& app) {
  add_unbuilt(app, "kernels", "List, check and benchmark kernel variants", "the CUDA backend issue");
}

}  // namespace troupe::cli
