// A PdOutbox that records what the state machines send, in order, for the disagg tests.
#pragma once

#include <cstdint>
#include <vector>

#include "disagg/outbox.h"

namespace podserve::testing_support {

class RecordingOutbox final : public PdOutbox {
 public:
  struct ToPrefill {
    std::int32_t instance = 0;
    PrefillRequestMessage message;
  };
  struct ToDecode {
    std::int32_t instance = 0;
    PrefillResultMessage message;
  };

  Status send_to_prefill(std::int32_t instance, const PrefillRequestMessage& message) override {
    to_prefill.push_back({instance, message});
    return Status::Ok();
  }
  Status send_to_decode(std::int32_t instance, const PrefillResultMessage& message) override {
    to_decode.push_back({instance, message});
    return Status::Ok();
  }
  Status finish_at_router(const TokenOutput& output) override {
    to_router.push_back(output);
    return Status::Ok();
  }

  std::size_t size() const { return to_prefill.size() + to_decode.size() + to_router.size(); }

  std::vector<ToPrefill> to_prefill;
  std::vector<ToDecode> to_decode;
  std::vector<TokenOutput> to_router;
};

}  // namespace podserve::testing_support
