// LoadBalancer: each policy picks what its definition says, and the accounting adds up.
#include "router/policy.h"

#include <random>

#include "gtest/gtest.h"

namespace podserve {
namespace {

std::vector<InstanceInfo> colocated(int n) {
  std::vector<InstanceInfo> instances;
  for (int i = 0; i < n; ++i) instances.push_back({.id = i, .role = InstanceRole::kColocated});
  return instances;
}

TEST(LoadBalancerTest, RoundRobinCyclesThroughInstances) {
  LoadBalancer balancer(RouterPolicy::kRoundRobin, colocated(3), 16);
  std::vector<int> picks;
  for (int i = 0; i < 7; ++i) picks.push_back(*balancer.assign(10, 10));
  EXPECT_EQ(picks, (std::vector<int>{0, 1, 2, 0, 1, 2, 0}));
}

TEST(LoadBalancerTest, LeastOutstandingTokensPicksTheLightestAndAccounts) {
  LoadBalancer balancer(RouterPolicy::kLeastOutstandingTokens, colocated(3), 16);
  EXPECT_EQ(*balancer.assign(100, 50), 0);
  EXPECT_EQ(*balancer.assign(10, 10), 1);
  EXPECT_EQ(*balancer.assign(30, 10), 2);
  EXPECT_EQ(balancer.outstanding_tokens(0), 150);
  EXPECT_EQ(balancer.outstanding_tokens(1), 20);
  EXPECT_EQ(balancer.outstanding_tokens(2), 40);
  EXPECT_EQ(*balancer.assign(5, 5), 1);  // 20 is the least
  EXPECT_EQ(balancer.outstanding_tokens(1), 30);
  balancer.release(0, 140);  // instance 0 finished most of its work: 10 left
  EXPECT_EQ(*balancer.assign(1, 1), 0);
}

TEST(LoadBalancerTest, LeastOutstandingTokensUsesTheLargerOfRouterAndInstanceCounts) {
  LoadBalancer balancer(RouterPolicy::kLeastOutstandingTokens, colocated(2), 16);
  ASSERT_EQ(*balancer.assign(10, 10), 0);  // router-side: 0 -> 20, 1 -> 0
  // Instance 1 reports recompute work the router does not know about.
  balancer.update_load(1, InstanceLoad{.outstanding_tokens = 500});
  EXPECT_EQ(balancer.outstanding_tokens(1), 500);
  EXPECT_EQ(*balancer.assign(10, 10), 0);
  EXPECT_EQ(balancer.outstanding_tokens(0), 40);
}

TEST(LoadBalancerTest, RandomizedLeastTokensAlwaysPicksAMinimum) {
  std::mt19937 rng(std::random_device{}());
  LoadBalancer balancer(RouterPolicy::kLeastOutstandingTokens, colocated(5), 16);
  std::vector<std::int64_t> expected(5, 0);
  for (int step = 0; step < 500; ++step) {
    const std::int64_t prompt = std::uniform_int_distribution<int>(1, 300)(rng);
    const std::int64_t output = std::uniform_int_distribution<int>(1, 100)(rng);
    const std::int64_t minimum = *std::min_element(expected.begin(), expected.end());
    const int chosen = *balancer.assign(prompt, output);
    ASSERT_EQ(expected[chosen], minimum) << "step " << step;
    expected[chosen] += prompt + output;
    const int finished = std::uniform_int_distribution<int>(0, 4)(rng);
    const std::int64_t done =
        std::uniform_int_distribution<std::int64_t>(0, expected[finished])(rng);
    balancer.release(finished, done);
    expected[finished] -= done;
    for (int i = 0; i < 5; ++i) ASSERT_EQ(balancer.outstanding_tokens(i), expected[i]);
  }
}

TEST(LoadBalancerTest, KvLoadAwarePicksLowestUsageThenLeastTokens) {
  LoadBalancer balancer(RouterPolicy::kKvLoadAware, colocated(3), 16);
  balancer.update_load(0, InstanceLoad{.free_pages = 10, .total_pages = 100});  // 0.9 used
  balancer.update_load(1, InstanceLoad{.free_pages = 60, .total_pages = 100});  // 0.4 used
  balancer.update_load(2, InstanceLoad{.free_pages = 60, .total_pages = 100});  // 0.4 used
  balancer.release(1, -1000);  // instance 1 has more outstanding tokens than 2
  EXPECT_EQ(*balancer.assign(32, 1), 2);
  // The 2 pages of that prompt count until instance 2 reports again.
  EXPECT_DOUBLE_EQ(balancer.kv_usage_estimate(2), 0.42);
  EXPECT_EQ(*balancer.assign(16, 1), 1);  // 0.40 < 0.42
  balancer.update_load(2, InstanceLoad{.free_pages = 90, .total_pages = 100});
  EXPECT_DOUBLE_EQ(balancer.kv_usage_estimate(2), 0.1);
  EXPECT_EQ(*balancer.assign(16, 1), 2);
}

TEST(LoadBalancerTest, OnlyColocatedAndPrefillInstancesAreCandidates) {
  const std::vector<InstanceInfo> instances = {{.id = 0, .role = InstanceRole::kDecode},
                                               {.id = 1, .role = InstanceRole::kPrefill},
                                               {.id = 2, .role = InstanceRole::kDecode}};
  LoadBalancer balancer(RouterPolicy::kRoundRobin, instances, 16);
  EXPECT_EQ(balancer.num_candidates(), 1u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(*balancer.assign(1, 1), 1);
}

TEST(LoadBalancerTest, NoCandidateIsNullopt) {
  const std::vector<InstanceInfo> decode_only = {{.id = 0, .role = InstanceRole::kDecode}};
  for (RouterPolicy policy : {RouterPolicy::kRoundRobin, RouterPolicy::kLeastOutstandingTokens,
                              RouterPolicy::kKvLoadAware}) {
    LoadBalancer balancer(policy, decode_only, 16);
    EXPECT_FALSE(balancer.assign(1, 1).has_value()) << to_string(policy);
  }
}

TEST(LoadBalancerTest, DecodeSideBalancesDecodeInstancesWithItsOwnCharges) {
  const std::vector<InstanceInfo> instances = {{.id = 0, .role = InstanceRole::kPrefill},
                                               {.id = 1, .role = InstanceRole::kDecode},
                                               {.id = 2, .role = InstanceRole::kDecode}};
  LoadBalancer decode(RouterPolicy::kLeastOutstandingTokens, instances, 16,
                      LoadBalancer::kDecodeRoles);
  EXPECT_EQ(decode.num_candidates(), 2u);
  EXPECT_EQ(*decode.assign_charging(/*outstanding_tokens=*/50, /*kv_tokens=*/100), 1);
  EXPECT_EQ(decode.outstanding_tokens(1), 50);
  EXPECT_EQ(*decode.assign_charging(10, 100), 2);
  EXPECT_EQ(*decode.assign_charging(10, 100), 2);  // 20 < 50
  decode.release(1, 50);
  EXPECT_EQ(decode.outstanding_tokens(1), 0);
  EXPECT_EQ(*decode.assign_charging(10, 100), 1);
  decode.update_load(1, InstanceLoad{.free_pages = 10, .total_pages = 20});
  LoadBalancer kv(RouterPolicy::kKvLoadAware, instances, 16, LoadBalancer::kDecodeRoles);
  kv.update_load(1, InstanceLoad{.free_pages = 20, .total_pages = 20});
  kv.update_load(2, InstanceLoad{.free_pages = 20, .total_pages = 20});
  ASSERT_EQ(*kv.assign_charging(1, 160), 1);  // 10 pages assigned since the report
  EXPECT_DOUBLE_EQ(kv.kv_usage_estimate(1), 0.5);
  EXPECT_EQ(*kv.assign_charging(1, 16), 2);
}

}  // namespace
}  // namespace podserve
