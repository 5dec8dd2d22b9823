#include "metrics/service_discovery.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <system_error>

#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace podserve {

std::string file_sd_json(std::span<const ScrapeTargetGroup> groups) {
  nlohmann::json document = nlohmann::json::array();
  for (const ScrapeTargetGroup& group : groups) {
    document.push_back({{"targets", group.targets}, {"labels", group.labels}});
  }
  return document.dump(2) + "\n";
}

Status write_file_sd(const std::string& path, std::span<const ScrapeTargetGroup> groups) {
  const std::string temp_path = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(temp_path, std::ios::binary | std::ios::trunc);
    out << file_sd_json(groups);
    out.close();
    if (!out) {
      Status status = unavailable("metrics: cannot write service-discovery file " + temp_path);
      spdlog::error("{}", status.message());
      std::error_code ignored;
      std::filesystem::remove(temp_path, ignored);
      return status;
    }
  }
  std::error_code error;
  std::filesystem::rename(temp_path, path, error);
  if (error) {
    Status status =
        unavailable("metrics: cannot rename " + temp_path + " to " + path + ": " + error.message());
    spdlog::error("{}", status.message());
    std::filesystem::remove(temp_path, error);
    return status;
  }
  return Status::Ok();
}

}  // namespace podserve
