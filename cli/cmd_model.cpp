#include "commands.h"

namespace troupe::cli {

void add_model(CLI::App& app) {
  add_unbuilt(app, "model", "Inspect, synthesize and quantize model files", "the inference engine issue");
}

}  // namespace troupe::cli
