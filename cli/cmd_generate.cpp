#include "commands.h"

namespace troupe::cli {

void add_generate(CLI::App& app) {
  add_unbuilt(app, "generate", "Generate text from a model file in this process (no cluster)",
              "the inference engine issue");
}

}  // namespace troupe::cli
