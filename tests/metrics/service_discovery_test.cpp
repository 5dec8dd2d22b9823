// file_sd writer: content is the Prometheus file_sd shape, and the write replaces the file.
#include "metrics/service_discovery.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace podserve {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

class ServiceDiscoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("podserve-sd-test-" + std::to_string(::getpid()) +
                                                  "-" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(ServiceDiscoveryTest, WritesEveryRankAndReplacesAtomically) {
  const std::filesystem::path path = dir_ / "podserve-sd.json";
  std::vector<ScrapeTargetGroup> groups;
  for (int rank = 0; rank < 5; ++rank) {
    groups.push_back(
        {.targets = {"127.0.0.1:" + std::to_string(9400 + rank)},
         .labels = {{"rank", std::to_string(rank)}, {"role", rank == 0 ? "router" : "colocated"}}});
  }
  ASSERT_TRUE(write_file_sd(path.string(), groups).ok());

  const auto document = nlohmann::json::parse(read_file(path));
  ASSERT_TRUE(document.is_array());
  ASSERT_EQ(document.size(), 5u);
  for (int rank = 0; rank < 5; ++rank) {
    EXPECT_EQ(document[rank]["targets"],
              nlohmann::json::array({"127.0.0.1:" + std::to_string(9400 + rank)}));
    EXPECT_EQ(document[rank]["labels"]["rank"], std::to_string(rank));
  }
  EXPECT_EQ(document[0]["labels"]["role"], "router");

  groups.resize(1);
  ASSERT_TRUE(write_file_sd(path.string(), groups).ok());
  EXPECT_EQ(nlohmann::json::parse(read_file(path)).size(), 1u);
  // Only the target file is left: the temporary was renamed, not copied.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_),
                          std::filesystem::directory_iterator()),
            1);
}

TEST_F(ServiceDiscoveryTest, EmptyGroupListIsAnEmptyArray) {
  EXPECT_EQ(nlohmann::json::parse(file_sd_json({})), nlohmann::json::array());
}

TEST_F(ServiceDiscoveryTest, UnwritableDirectoryIsAnError) {
  const Status status =
      write_file_sd((dir_ / "missing-dir" / "sd.json").string(), std::vector<ScrapeTargetGroup>{});
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace podserve
