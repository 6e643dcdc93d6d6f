#include "cli/policy_flags.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <functional>

namespace troupe::cli {

namespace {

// A number the policy takes only where `ok` holds; `range` says where, in --help and in the
// error (which CLI11 prefixes with the flag's name).
CLI::Validator number_in(const std::string& range, std::function<bool(double)> ok) {
  return CLI::Validator(
      [range, ok](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "expected a number, got '" + s + "'";
        return ok(v) ? "" : "expected a number in " + range + ", got " + s;
      },
      range);
}

// "NAME:WEIGHT[:MAX_RUNNING[:MAX_QUEUED_TOKENS]]" into `t`; returns what is wrong, or "".
std::string parse_tenant(const std::string& spec, sched::tenant_config& t) {
  std::vector<std::string> parts;
  for (size_t b = 0, e; b <= spec.size(); b = e + 1) {
    e = spec.find(':', b);
    if (e == std::string::npos) e = spec.size();
    parts.push_back(spec.substr(b, e - b));
  }
  if (parts.size() < 2 || parts.size() > 4 || parts[0].empty())
    return "expected NAME:WEIGHT[:MAX_RUNNING[:MAX_QUEUED_TOKENS]], got '" + spec + "'";
  t.name = parts[0];
  try {
    t.weight = std::stod(parts[1]);
    if (parts.size() > 2) t.max_running = std::stoll(parts[2]);
    if (parts.size() > 3) t.max_queued_tokens = std::stoll(parts[3]);
  } catch (const std::exception&) {
    return "'" + spec + "': WEIGHT, MAX_RUNNING and MAX_QUEUED_TOKENS must be numbers";
  }
  if (!(t.weight > 0)) return "'" + spec + "': WEIGHT must be > 0";
  if (t.max_running < 0 || t.max_queued_tokens < 0) return "'" + spec + "': limits must be >= 0 (0 = none)";
  return "";
}

// The default tenant's spec has no name: WEIGHT[:MAX_RUNNING[:MAX_QUEUED_TOKENS]].
std::string parse_default_tenant(const std::string& spec, sched::tenant_config& t) {
  return parse_tenant("*:" + spec, t);
}

// No description: the option's type name already shows the form.
CLI::Validator tenant_spec(std::string (*parse)(const std::string&, sched::tenant_config&)) {
  return CLI::Validator(
      [parse](std::string& s) {
        sched::tenant_config t;
        return parse(s, t);
      },
      "");
}

const char* to_flag(sched::preemption_mode m) { return m == sched::preemption_mode::swap ? "swap" : "recompute"; }
const char* to_flag(bool b) { return b ? "true" : "false"; }

}  // namespace

void add_policy_flags(CLI::App& sub, sched::policy_config& p) {
  const char* g = "Scheduling policy";
  const auto positive = number_in("(0, inf)", [](double v) { return v > 0; });
  const auto non_negative = number_in("[0, inf)", [](double v) { return v >= 0; });
  auto number = [&](const char* flag, auto& field, const char* what, const CLI::Validator& range) {
    sub.add_option(flag, field, what)->check(range)->group(g)->capture_default_str();
  };
  auto boolean = [&](const char* flag, bool& field, const char* what) {
    sub.add_option(flag, field, what)->group(g)->default_str(to_flag(field));
  };

  // ---- steps and the queue ---------------------------------------------------------------
  number("--max-step-tokens", p.max_step_tokens, "Token budget per step (prefill chunks + decodes)", positive);
  boolean("--chunked-prefill", p.chunked_prefill,
          "true: split long prompts so running decodes never wait more than one chunk; false: prefill whole prompts "
          "(a prompt over --max-step-tokens is refused)");
  number("--max-queued", p.max_queued, "Requests waiting, over all tenants, before new ones get overloaded", positive);
  number("--max-inflight-steps", p.max_inflight_steps,
         "Steps planned ahead per worker: 2 plans the next step while one runs (async scheduling, no control-loop "
         "gap between steps); 1 waits for each result",
         CLI::Range(1, 8));

  // ---- KV blocks ---------------------------------------------------------------------------
  boolean("--prefix-caching", p.prefix_caching,
          "true: share full prompt blocks between sequences with the same prefix; false: no sharing");
  number("--kv-watermark", p.kv_watermark,
         "Share of a worker's KV blocks kept free for running decodes when admitting a new prompt",
         number_in("[0, 1)", [](double v) { return v >= 0 && v < 1; }));
  sub.add_option_function<std::string>(
         "--preemption",
         [&p](const std::string& m) {
           p.preemption = m == "swap" ? sched::preemption_mode::swap : sched::preemption_mode::recompute;
         },
         "When KV blocks run out: recompute (free the victim's blocks, prefill again later) or swap (copy them to "
         "the worker's host pool, --swap-mb or --host-kv-blocks; recompute where it is full or absent)")
      ->check(CLI::IsMember({"recompute", "swap"}))
      ->group(g)
      ->default_str(to_flag(p.preemption));
  number("--host-kv-blocks", p.host_kv_blocks,
         "Host KV blocks per worker for --preemption swap where the worker reports none (a worker's --swap-mb wins)",
         non_negative);

  // ---- ordering and tenants ----------------------------------------------------------------
  number("--aging", p.aging_s,
         "Seconds per priority level a waiting job gains (up to the highest waiting priority); 0 = no aging",
         non_negative);
  sub.add_option_function<std::vector<std::string>>(
         "--tenant",
         [&p](const std::vector<std::string>& specs) {
           p.tenants.clear();
           for (const auto& spec : specs) parse_tenant(spec, p.tenants.emplace_back());
         },
         "A tenant's fair-share weight and limits (repeatable): past MAX_RUNNING jobs or MAX_QUEUED_TOKENS waiting, "
         "its jobs get overloaded; 0 = no limit")
      ->check(tenant_spec(parse_tenant))
      ->type_name("NAME:WEIGHT[:MAX_RUNNING[:MAX_QUEUED_TOKENS]]")
      ->group(g);
  sub.add_option_function<std::string>(
         "--default-tenant", [&p](const std::string& spec) { parse_default_tenant(spec, p.default_tenant); },
         "Weight and limits of every tenant --tenant does not name")
      ->check(tenant_spec(parse_default_tenant))
      ->type_name("WEIGHT[:MAX_RUNNING[:MAX_QUEUED_TOKENS]]")
      ->group(g)
      ->default_str(fmt::format("{}:{}:{}", p.default_tenant.weight, p.default_tenant.max_running,
                                p.default_tenant.max_queued_tokens));

  // ---- routing -----------------------------------------------------------------------------
  number("--affinity-load-factor", p.affinity_load_factor,
         "A job goes to the worker caching its longest prefix unless that one's load exceeds this x (the "
         "least-loaded worker's + --max-step-tokens)",
         number_in("[1, inf)", [](double v) { return v >= 1; }));
  number("--affinity-wait", p.affinity_wait_s,
         "Seconds a queued job may wait for the worker caching its prefix while others pass it over", non_negative);

  // ---- admission by SLO --------------------------------------------------------------------
  number("--admission-ttft-slo", p.ttft_slo_s,
         "Refuse (overloaded) a job whose predicted time to first token exceeds this many seconds; needs "
         "--prefill-tokens-per-s; 0 = off",
         non_negative);
  number("--prefill-tokens-per-s", p.prefill_tokens_per_s,
         "Prefill speed per worker the TTFT prediction assumes; 0 = off", non_negative);
}

std::string describe_policy(const sched::policy_config& p) {
  std::string tenants;
  for (const auto& t : p.tenants)
    tenants +=
        fmt::format("{}{}:{}:{}:{}", tenants.empty() ? "" : ",", t.name, t.weight, t.max_running, t.max_queued_tokens);
  return fmt::format(
      "max_step_tokens={} chunked_prefill={} max_queued={} max_inflight_steps={} prefix_caching={} kv_watermark={} "
      "preemption={} host_kv_blocks={} aging_s={} tenants=[{}] default_tenant={}:{}:{} affinity_load_factor={} "
      "affinity_wait_s={} ttft_slo_s={} prefill_tokens_per_s={} max_context={}",
      p.max_step_tokens, to_flag(p.chunked_prefill), p.max_queued, p.max_inflight_steps, to_flag(p.prefix_caching),
      p.kv_watermark, to_flag(p.preemption), p.host_kv_blocks, p.aging_s, tenants, p.default_tenant.weight,
      p.default_tenant.max_running, p.default_tenant.max_queued_tokens, p.affinity_load_factor, p.affinity_wait_s,
      p.ttft_slo_s, p.prefill_tokens_per_s, p.max_context);
}

}  // namespace troupe::cli
