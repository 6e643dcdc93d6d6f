#include "src/sched/fair_share.h"

#include <limits>

#include "troupe/error.h"

namespace troupe::sched {

namespace {

void check(const tenant_config& c, const std::string& where) {
  if (!(c.weight > 0.0) || c.weight > 1e9)
    throw error(error_kind::failed, where + ".weight: expected a value in (0, 1e9], got " + std::to_string(c.weight),
                "weight");
  if (c.max_running < 0)
    throw error(error_kind::failed, where + ".max_running: expected >= 0 (0 = no limit)", "max_running");
  if (c.max_queued_tokens < 0)
    throw error(error_kind::failed, where + ".max_queued_tokens: expected >= 0 (0 = no limit)", "max_queued_tokens");
}

tenant_state make(const std::string& name, const tenant_config& c) {
  tenant_state t;
  t.name = name;
  t.weight = c.weight;
  t.max_running = c.max_running;
  t.max_queued_tokens = c.max_queued_tokens;
  return t;
}

}  // namespace

fair_share::fair_share(const std::vector<tenant_config>& tenants, const tenant_config& defaults) : defaults_(defaults) {
  check(defaults, "default_tenant");
  for (size_t i = 0; i < tenants.size(); ++i) {
    const auto where = "tenants[" + std::to_string(i) + "]";
    if (tenants[i].name.empty()) throw error(error_kind::failed, where + ".name: expected a tenant name", "name");
    check(tenants[i], where);
    if (!tenants_.emplace(tenants[i].name, make(tenants[i].name, tenants[i])).second)
      throw error(error_kind::failed, where + ".name: tenant '" + tenants[i].name + "' is listed twice", "name");
  }
}

tenant_state& fair_share::get(const std::string& name) {
  auto it = tenants_.find(name);
  if (it == tenants_.end()) it = tenants_.emplace(name, make(name, defaults_)).first;
  return it->second;
}

std::string fair_share::over_limit(const tenant_state& t, int64_t tokens) const {
  if (t.max_running > 0 && t.active >= t.max_running)
    return "tenant '" + t.name + "' has " + std::to_string(t.active) + " unfinished jobs, its max_running limit";
  if (t.max_queued_tokens > 0 && t.queued_tokens + tokens > t.max_queued_tokens)
    return "tenant '" + t.name + "' would have " + std::to_string(t.queued_tokens + tokens) +
           " tokens queued, over its max_queued_tokens " + std::to_string(t.max_queued_tokens);
  return {};
}

void fair_share::activate(tenant_state& t) {
  if (t.active++ > 0) return;
  double lowest = std::numeric_limits<double>::infinity();
  for (const auto& [name, other] : tenants_)
    if (other.active > 0 && &other != &t && other.vtime < lowest) lowest = other.vtime;
  if (lowest != std::numeric_limits<double>::infinity() && t.vtime < lowest) t.vtime = lowest;
}

}  // namespace troupe::sched
