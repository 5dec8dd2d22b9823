// Where podserve-ab scrapes each rank: the file_sd list the router writes from the ranks' own
// endpoints, read back by podserve-ab's parser. The layout is deploy/hostfile.example's (node-a
// 9 slots: the router and one TP=8 instance; node-b 8 slots: the other instance), so a rank's
// port is port_base + its position on its node, not port_base + its global rank.
#include "tools/scrape_targets.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cluster/rank_metrics.h"
#include "core/config.h"
#include "metrics/service_discovery.h"

namespace podserve {
namespace {

struct HostSlots {
  std::string host;
  int slots;
};

// mpirun's fill order for a hostfile: the first host's slots, then the next host's.
std::vector<RankEndpoint> hostfile_layout(const std::vector<HostSlots>& hostfile) {
  std::vector<RankEndpoint> endpoints;
  for (const auto& [host, slots] : hostfile) {
    for (int slot = 0; slot < slots; ++slot) endpoints.push_back({host, slot});
  }
  return endpoints;
}

ServiceConfig two_node_config(const std::string& bind) {
  return parse_config(
      "instances: [{role: colocated, tp: 8, count: 2}]\nmetrics: {port_base: 9500, "
      "bind: " +
      bind + "}\n");
}

TEST(ScrapeTargets, EveryRankAtPortBasePlusItsNodeLocalRank) {
  const ServiceConfig config = two_node_config("0.0.0.0");
  const auto endpoints = hostfile_layout({{"node-a", 9}, {"node-b", 8}});
  ASSERT_EQ(static_cast<int>(endpoints.size()), config.world_size());

  const auto targets = parse_scrape_targets(file_sd_json(rank_scrape_groups(endpoints, config)));
  ASSERT_TRUE(targets.ok()) << targets.status().to_string();
  ASSERT_EQ(targets->size(), 17u);
  for (int rank = 0; rank < 17; ++rank) {
    SCOPED_TRACE(rank);
    const ScrapeTarget& target = (*targets)[rank];
    EXPECT_EQ(target.rank, rank);
    EXPECT_EQ(target.host, rank < 9 ? "node-a" : "node-b");
    EXPECT_EQ(target.port, rank < 9 ? 9500 + rank : 9500 + rank - 9);
  }
}

TEST(ScrapeTargets, LoopbackBindNamesTheBindAddress) {
  const auto targets = parse_scrape_targets(file_sd_json(rank_scrape_groups(
      hostfile_layout({{"node-a", 9}, {"node-b", 8}}), two_node_config("127.0.0.1"))));
  ASSERT_TRUE(targets.ok());
  EXPECT_EQ((*targets)[3].host, "127.0.0.1");
  EXPECT_EQ((*targets)[3].port, 9503);
  EXPECT_EQ((*targets)[12].host, "127.0.0.1");
  EXPECT_EQ((*targets)[12].port, 9503);  // node-b's fourth rank: the same port on another host
}

TEST(ScrapeTargets, ComeBackInRankOrderWhateverTheFileOrder) {
  const auto targets = parse_scrape_targets(R"([
    {"targets": ["h2:9401"], "labels": {"podserve_rank": "2", "podserve_mode": "colocated"}},
    {"targets": ["h1:9400"], "labels": {"podserve_rank": "0"}},
    {"targets": ["h2:9400"], "labels": {"podserve_rank": "1"}}])");
  ASSERT_TRUE(targets.ok());
  ASSERT_EQ(targets->size(), 3u);
  EXPECT_EQ((*targets)[0].host, "h1");
  EXPECT_EQ((*targets)[1].port, 9400);
  EXPECT_EQ((*targets)[2].port, 9401);
}

TEST(ScrapeTargets, RejectsWhatIsNotTheRoutersList) {
  for (const char* text :
       {"", "{}", R"([{"targets": []}])", R"([{"targets": ["h:1"], "labels": {}}])",
        R"([{"targets": ["h"], "labels": {"podserve_rank": "0"}}])",
        R"([{"targets": ["h:x1"], "labels": {"podserve_rank": "0"}}])",
        R"([{"targets": ["h:1", "h:2"], "labels": {"podserve_rank": "0"}}])"}) {
    SCOPED_TRACE(text);
    const auto targets = parse_scrape_targets(text);
    ASSERT_FALSE(targets.ok());
    EXPECT_EQ(targets.status().code(), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace podserve
