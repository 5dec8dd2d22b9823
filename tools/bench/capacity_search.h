// The capacity search of podserve-capacity, as pure pieces: the latency SLO and its attainment
// over a probe's requests, and the rate search itself, a state machine that proposes the next
// offered rate from the verdicts so far (no I/O, no clock; podserve-capacity runs the probes).
//
// Search: the first probe runs at start_rate. While every probe held the SLO the rate is
// multiplied by `growth` (up to max_rate); while none did it is divided by it (down to
// min_rate): that brackets the capacity between the highest rate that held (lower) and the
// lowest that did not (upper). Then the geometric middle of the bracket is probed until
// upper <= lower * (1 + tolerance). The capacity is `lower`. Not thread-safe.
#pragma once

#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "tools/bench/client.h"

namespace podserve::bench {

// A request meets the SLO when it succeeded and each bound that is set (> 0) holds: TTFT <=
// ttft_s, TPOT (CompletionResult::tpot_s) <= tpot_s, e2e <= e2e_s.
struct Slo {
  double ttft_s = 0.0;
  double tpot_s = 0.0;
  double e2e_s = 0.0;
};
bool meets_slo(const CompletionResult& result, const Slo& slo);
// The fraction of `results` that meet the SLO (failed requests count against it); 0 when empty.
double slo_attainment(const std::vector<CompletionResult>& results, const Slo& slo);

struct SearchOptions {
  double start_rate = 1.0;  // requests/s
  double growth = 2.0;      // bracketing factor, > 1
  double tolerance = 0.05;  // stop when upper <= lower * (1 + tolerance)
  double min_rate = 0.05;   // no probe below: capacity 0 if it fails there
  double max_rate = 1e4;    // no probe above: capacity is at least max_rate if it holds there
  int max_probes = 30;
};

enum class SearchOutcome : std::uint8_t {
  kSearching,
  kConverged,     // lower and upper within tolerance
  kAtMaxRate,     // the SLO held at max_rate: the capacity is at least that
  kBelowMinRate,  // the SLO failed at min_rate: capacity 0
  kProbeLimit,    // max_probes ran out before converging: the bracket is wider than asked
};
std::string_view to_string(SearchOutcome outcome);

struct Probe {
  double rate = 0.0;
  bool attained = false;
};

class CapacitySearch {
 public:
  // Options out of range (growth <= 1, tolerance <= 0, min_rate <= 0, max_rate < min_rate,
  // max_probes < 1) are clamped to the nearest valid value; start_rate into [min_rate, max_rate].
  explicit CapacitySearch(const SearchOptions& options);

  // The rate of the next probe; only valid while outcome() is kSearching.
  double next_rate() const;
  // The verdict of the probe at next_rate().
  void record(bool attained);

  SearchOutcome outcome() const { return outcome_; }
  double lower() const { return lower_; }  // highest rate that held; 0: none yet
  double upper() const { return upper_; }  // lowest rate that failed; infinity: none yet
  // The capacity found: lower() (0 when nothing held).
  double capacity() const { return lower_; }
  const std::vector<Probe>& probes() const { return probes_; }

 private:
  void advance();

  SearchOptions options_;
  double next_ = 0.0;
  double lower_ = 0.0;
  double upper_ = std::numeric_limits<double>::infinity();
  SearchOutcome outcome_ = SearchOutcome::kSearching;
  std::vector<Probe> probes_;
};

}  // namespace podserve::bench
