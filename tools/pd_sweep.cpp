#include "tools/pd_sweep.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <tuple>

namespace podserve {
namespace {

bool parse_count(std::string_view text, int& value) {
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size() && value >= 1;
}

}  // namespace

Result<std::vector<PdRatio>> parse_pd_ratios(std::string_view list) {
  std::vector<PdRatio> ratios;
  if (list.empty()) return invalid_argument("no P:D ratio given");
  for (std::size_t start = 0;;) {
    const std::size_t comma = list.find(',', start);
    const std::string_view item = list.substr(start, comma - start);
    const std::size_t colon = item.find(':');
    PdRatio ratio;
    if (colon == std::string_view::npos || !parse_count(item.substr(0, colon), ratio.prefill) ||
        !parse_count(item.substr(colon + 1), ratio.decode)) {
      return invalid_argument("P:D ratio '" + std::string(item) +
                              "': expected PREFILL:DECODE, two counts >= 1");
    }
    ratios.push_back(ratio);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return ratios;
}

Result<std::string> pd_variant_yaml(const std::string& base_yaml, PdRatio ratio) {
  try {
    YAML::Node root = YAML::Load(base_yaml);
    if (!root.IsMap()) return invalid_argument("base config: not a YAML mapping");
    int prefill_tp = 1, decode_tp = 1;
    if (const YAML::Node instances = root["instances"]; instances && instances.IsSequence()) {
      for (const YAML::Node& group : instances) {
        const std::string role = group["role"] ? group["role"].as<std::string>() : "colocated";
        const int tp = group["tp"] ? group["tp"].as<int>() : 1;
        if (role == "prefill") prefill_tp = tp;
        if (role == "decode") decode_tp = tp;
      }
    }
    YAML::Node instances(YAML::NodeType::Sequence);
    for (const auto& [role, tp, count] : {std::tuple{"prefill", prefill_tp, ratio.prefill},
                                          std::tuple{"decode", decode_tp, ratio.decode}}) {
      YAML::Node group(YAML::NodeType::Map);
      group["role"] = role;
      group["tp"] = tp;
      group["count"] = count;
      group.SetStyle(YAML::EmitterStyle::Flow);
      instances.push_back(group);
    }
    root["instances"] = instances;
    root["scheduler"]["mode"] = "disaggregated";
    YAML::Emitter out;
    out << root;
    return std::string(out.c_str()) + "\n";
  } catch (const YAML::Exception& e) {
    return invalid_argument(std::string("base config: ") + e.what());
  }
}

}  // namespace podserve
