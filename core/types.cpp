#include "core/types.h"

namespace podserve {

std::string_view to_string(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

std::string_view to_string(InstanceRole role) {
  switch (role) {
    case InstanceRole::kColocated: return "colocated";
    case InstanceRole::kPrefill: return "prefill";
    case InstanceRole::kDecode: return "decode";
  }
  return "unknown";
}

}  // namespace podserve
