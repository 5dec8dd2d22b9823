#include "router/policy.h"

#include <algorithm>

namespace podserve {

LoadBalancer::LoadBalancer(RouterPolicy policy, std::span<const InstanceInfo> instances,
                           int kv_page_size, std::span<const InstanceRole> candidate_roles)
    : policy_(policy), kv_page_size_(std::max(kv_page_size, 1)) {
  for (const InstanceInfo& info : instances) {
    if (std::find(candidate_roles.begin(), candidate_roles.end(), info.role) !=
        candidate_roles.end()) {
      candidates_.push_back(Candidate{.instance = info.id});
    }
  }
}

LoadBalancer::Candidate* LoadBalancer::find(int instance) {
  for (Candidate& candidate : candidates_) {
    if (candidate.instance == instance) return &candidate;
  }
  return nullptr;
}

const LoadBalancer::Candidate* LoadBalancer::find(int instance) const {
  for (const Candidate& candidate : candidates_) {
    if (candidate.instance == instance) return &candidate;
  }
  return nullptr;
}

std::int64_t LoadBalancer::outstanding_locked(const Candidate& candidate) const {
  return std::max(candidate.router_outstanding_tokens, candidate.load.outstanding_tokens);
}

double LoadBalancer::kv_usage_locked(const Candidate& candidate) const {
  if (candidate.load.total_pages <= 0) return 0.0;
  const std::int64_t used =
      candidate.load.total_pages - candidate.load.free_pages + candidate.pages_assigned_since_load;
  return static_cast<double>(used) / static_cast<double>(candidate.load.total_pages);
}

std::size_t LoadBalancer::pick_locked() {
  const std::size_t n = candidates_.size();
  std::size_t best = next_ % n;
  for (std::size_t step = 1; step < n; ++step) {
    const std::size_t i = (next_ + step) % n;
    const Candidate& a = candidates_[i];
    const Candidate& b = candidates_[best];
    bool better = false;
    switch (policy_) {
      case RouterPolicy::kRoundRobin: break;
      case RouterPolicy::kLeastOutstandingTokens:
        better = outstanding_locked(a) < outstanding_locked(b);
        break;
      case RouterPolicy::kKvLoadAware: {
        const double usage_a = kv_usage_locked(a);
        const double usage_b = kv_usage_locked(b);
        better = usage_a < usage_b ||
                 (usage_a == usage_b && outstanding_locked(a) < outstanding_locked(b));
        break;
      }
    }
    if (better) best = i;
  }
  next_ = best + 1;
  return best;
}

std::optional<int> LoadBalancer::assign(std::int64_t prompt_tokens, std::int64_t max_tokens) {
  return assign_charging(prompt_tokens + max_tokens, prompt_tokens);
}

std::optional<int> LoadBalancer::assign_charging(std::int64_t outstanding_tokens,
                                                 std::int64_t kv_tokens) {
  std::lock_guard lock(mutex_);
  if (candidates_.empty()) return std::nullopt;
  Candidate& chosen = candidates_[pick_locked()];
  chosen.router_outstanding_tokens += outstanding_tokens;
  chosen.pages_assigned_since_load += (kv_tokens + kv_page_size_ - 1) / kv_page_size_;
  return chosen.instance;
}

void LoadBalancer::release(int instance, std::int64_t tokens) {
  std::lock_guard lock(mutex_);
  if (Candidate* candidate = find(instance)) candidate->router_outstanding_tokens -= tokens;
}

void LoadBalancer::update_load(int instance, const InstanceLoad& load) {
  std::lock_guard lock(mutex_);
  if (Candidate* candidate = find(instance)) {
    candidate->load = load;
    candidate->pages_assigned_since_load = 0;
  }
}

std::int64_t LoadBalancer::outstanding_tokens(int instance) const {
  std::lock_guard lock(mutex_);
  const Candidate* candidate = find(instance);
  return candidate ? outstanding_locked(*candidate) : 0;
}

double LoadBalancer::kv_usage_estimate(int instance) const {
  std::lock_guard lock(mutex_);
  const Candidate* candidate = find(instance);
  return candidate ? kv_usage_locked(*candidate) : 0.0;
}

}  // namespace podserve
