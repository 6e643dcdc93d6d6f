// The scheduling policy's flags: one definition for every command that runs the policy
// (troupe serve, troupe scheduler, troupe sim), so each setting has one name, one range check
// and one default, and is a config-file key (--config) on all three alike.
#pragma once
#include <string>

#include "src/sched/policy.h"

namespace CLI {
class App;
}

namespace troupe::cli {

// Adds the option group "Scheduling policy": a flag for every field of `p` an operator
// sets (all but max_context, which comes from the model or --max-context, and trace, whose
// path flag is each role's own). Defaults are what `p` holds when called: a role presets
// the fields whose default differs from policy_config{}'s. Parsed values land in `p`.
void add_policy_flags(CLI::App& sub, sched::policy_config& p);

// "max_step_tokens=512 chunked_prefill=true ...": the configuration, for a startup log line.
std::string describe_policy(const sched::policy_config& p);

}  // namespace troupe::cli
