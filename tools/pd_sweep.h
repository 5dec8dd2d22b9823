// The prefill:decode ratio sweep of podserve-capacity: variants made from one disaggregated
// config and a list of ratios. Pure functions (the YAML comes and goes as text).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace podserve {

struct PdRatio {
  int prefill = 1;  // prefill instances
  int decode = 1;   // decode instances
};

// "1:1,2:1,1:2" -> the ratios, in order; each count >= 1. Errors name the bad item.
Result<std::vector<PdRatio>> parse_pd_ratios(std::string_view list);

// base_yaml with `instances` replaced by `ratio.prefill` prefill and `ratio.decode` decode
// instances (each group's tp taken from the base's prefill and decode groups, 1 when it has
// none) and scheduler.mode set to disaggregated; every other key as in the base.
Result<std::string> pd_variant_yaml(const std::string& base_yaml, PdRatio ratio);

}  // namespace podserve
