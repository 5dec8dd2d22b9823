#include "tools/bench/capacity_search.h"

#include <algorithm>
#include <cmath>

namespace podserve::bench {

bool meets_slo(const CompletionResult& result, const Slo& slo) {
  if (!result.ok) return false;
  if (slo.ttft_s > 0.0 && result.ttft_s > slo.ttft_s) return false;
  if (slo.tpot_s > 0.0 && result.tpot_s() > slo.tpot_s) return false;
  if (slo.e2e_s > 0.0 && result.e2e_s > slo.e2e_s) return false;
  return true;
}

double slo_attainment(const std::vector<CompletionResult>& results, const Slo& slo) {
  if (results.empty()) return 0.0;
  const auto good = std::count_if(results.begin(), results.end(),
                                  [&](const CompletionResult& r) { return meets_slo(r, slo); });
  return static_cast<double>(good) / static_cast<double>(results.size());
}

std::string_view to_string(SearchOutcome outcome) {
  switch (outcome) {
    case SearchOutcome::kSearching: return "searching";
    case SearchOutcome::kConverged: return "converged";
    case SearchOutcome::kAtMaxRate: return "at_max_rate";
    case SearchOutcome::kBelowMinRate: return "below_min_rate";
    case SearchOutcome::kProbeLimit: return "probe_limit";
  }
  return "unknown";
}

CapacitySearch::CapacitySearch(const SearchOptions& options) : options_(options) {
  options_.growth = std::max(options_.growth, 1.0 + 1e-6);
  options_.tolerance = std::max(options_.tolerance, 1e-6);
  options_.min_rate = std::max(options_.min_rate, 1e-9);
  options_.max_rate = std::max(options_.max_rate, options_.min_rate);
  options_.max_probes = std::max(options_.max_probes, 1);
  next_ = std::clamp(options_.start_rate, options_.min_rate, options_.max_rate);
}

double CapacitySearch::next_rate() const { return next_; }

void CapacitySearch::record(bool attained) {
  if (outcome_ != SearchOutcome::kSearching) return;
  probes_.push_back({next_, attained});
  if (attained) {
    lower_ = std::max(lower_, next_);
  } else {
    upper_ = std::min(upper_, next_);
  }
  advance();
}

void CapacitySearch::advance() {
  if (lower_ > 0.0 && std::isfinite(upper_)) {
    if (upper_ <= lower_ * (1.0 + options_.tolerance)) {
      outcome_ = SearchOutcome::kConverged;
      return;
    }
    next_ = std::sqrt(lower_ * upper_);
  } else if (lower_ > 0.0) {  // every probe held: grow
    if (lower_ >= options_.max_rate) {
      outcome_ = SearchOutcome::kAtMaxRate;
      return;
    }
    next_ = std::min(lower_ * options_.growth, options_.max_rate);
  } else {  // every probe failed: shrink
    if (upper_ <= options_.min_rate) {
      outcome_ = SearchOutcome::kBelowMinRate;
      return;
    }
    next_ = std::max(upper_ / options_.growth, options_.min_rate);
  }
  if (static_cast<int>(probes_.size()) >= options_.max_probes) {
    outcome_ = SearchOutcome::kProbeLimit;
  }
}

}  // namespace podserve::bench
