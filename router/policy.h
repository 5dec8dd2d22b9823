// Load balancing (docs/design.md section 4, "Router policy"): picks the instance that gets a new
// request and keeps the router-side accounting the policies read.
//
//   round_robin               instances in turn.
//   least_outstanding_tokens  fewest outstanding tokens, where an instance's outstanding tokens
//                             are max(router-side count, latest InstanceLoad.outstanding_tokens).
//                             The router-side count uses the instance's own definition: for each
//                             assigned, unfinished request, its prompt tokens until the first
//                             output arrives (prefill done) + max_tokens - tokens generated. It
//                             is fresh for requests just assigned; the instance's report can be
//                             larger (recompute after preemption). Taking the max uses both.
//   kv_load_aware             lowest KV-cache usage ratio; the ratio is the latest report's
//                             used pages plus the pages of prompts assigned since that report
//                             (so a burst between reports does not all land on one instance).
//                             Ties go to the fewest outstanding tokens.
// Remaining ties go to the first instance after the previous pick (spreads an idle start).
//
// Candidates are the instances of the given roles: by default those that take new requests
// (colocated and prefill). In disaggregated mode the router keeps a second balancer over the
// decode instances, each side with its own outstanding-token definition (charged by the
// router through assign_charging): prefill = prompt tokens until the first token, decode =
// max_tokens - tokens generated.
// Thread-safe (one mutex; every call is O(instances), no I/O).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "core/config.h"
#include "core/request.h"
#include "router/instance_channel.h"

namespace podserve {

class LoadBalancer {
 public:
  // kv_page_size: tokens per KV page (kv_cache.page_size), for the kv_load_aware estimate.
  LoadBalancer(RouterPolicy policy, std::span<const InstanceInfo> instances, int kv_page_size,
               std::span<const InstanceRole> candidate_roles = kEntryRoles);

  static constexpr InstanceRole kEntryRoles[] = {InstanceRole::kColocated, InstanceRole::kPrefill};
  static constexpr InstanceRole kDecodeRoles[] = {InstanceRole::kDecode};

  // Chooses an instance for a request and charges it `prompt_tokens + max_tokens` outstanding
  // tokens, atomically (concurrent picks see each other). nullopt: no candidate instance.
  std::optional<int> assign(std::int64_t prompt_tokens, std::int64_t max_tokens);
  // The same with explicit charges: `outstanding_tokens` for the token policies, the pages of
  // `kv_tokens` positions for the kv_load_aware estimate.
  std::optional<int> assign_charging(std::int64_t outstanding_tokens, std::int64_t kv_tokens);
  // Removes `tokens` from the instance's router-side outstanding count (tokens generated,
  // prefill done, or the remainder of a finished request).
  void release(int instance, std::int64_t tokens);
  // Records the instance's latest self-reported load.
  void update_load(int instance, const InstanceLoad& load);

  // The figures the policies compare (also for tests and logs).
  std::int64_t outstanding_tokens(int instance) const;
  double kv_usage_estimate(int instance) const;
  std::size_t num_candidates() const { return candidates_.size(); }

 private:
  struct Candidate {
    int instance = 0;
    std::int64_t router_outstanding_tokens = 0;
    std::int64_t pages_assigned_since_load = 0;
    InstanceLoad load;
  };

  Candidate* find(int instance);
  const Candidate* find(int instance) const;
  std::int64_t outstanding_locked(const Candidate& candidate) const;
  double kv_usage_locked(const Candidate& candidate) const;
  std::size_t pick_locked();

  const RouterPolicy policy_;
  const int kv_page_size_;
  mutable std::mutex mutex_;
  std::vector<Candidate> candidates_;
  std::size_t next_ = 0;  // round-robin cursor / tie-break start
};

}  // namespace podserve
