#include "tools/scrape_targets.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

namespace podserve {
namespace {

// `text` as a whole as a decimal int.
bool parse_int(std::string_view text, int& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc{} && end == text.data() + text.size() && !text.empty();
}

}  // namespace

Result<std::vector<ScrapeTarget>> parse_scrape_targets(std::string_view file_sd_json) {
  const auto document = nlohmann::json::parse(file_sd_json, nullptr, false);
  if (!document.is_array()) return invalid_argument("file_sd: not a JSON array");
  std::vector<ScrapeTarget> targets;
  for (const auto& group : document) {
    if (!group.is_object() || !group.contains("targets") || !group["targets"].is_array() ||
        group["targets"].size() != 1 || !group["targets"][0].is_string()) {
      return invalid_argument("file_sd: a group without exactly one target: " + group.dump());
    }
    const std::string rank =
        group.value("labels", nlohmann::json::object()).value("podserve_rank", "");
    const std::string endpoint = group["targets"][0].get<std::string>();
    const std::size_t colon = endpoint.rfind(':');
    ScrapeTarget target;
    if (colon == std::string::npos ||
        !parse_int(std::string_view(endpoint).substr(colon + 1), target.port) ||
        !parse_int(rank, target.rank)) {
      return invalid_argument("file_sd: no podserve_rank label or no host:port in " + group.dump());
    }
    target.host = endpoint.substr(0, colon);
    targets.push_back(std::move(target));
  }
  std::sort(targets.begin(), targets.end(),
            [](const ScrapeTarget& a, const ScrapeTarget& b) { return a.rank < b.rank; });
  return targets;
}

}  // namespace podserve
