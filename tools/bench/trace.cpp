#include "tools/bench/trace.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>

namespace podserve::bench {
namespace {

// "2023-11-16 18:17:03.9799600" -> seconds since the epoch (UTC, fractional).
bool parse_timestamp(const std::string& text, double& seconds) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0;
  double second = 0.0;
  if (std::sscanf(text.c_str(), "%d-%d-%d %d:%d:%lf", &year, &month, &day, &hour, &minute,
                  &second) != 6) {
    return false;
  }
  const std::chrono::year_month_day date{std::chrono::year(year),
                                         std::chrono::month(static_cast<unsigned>(month)),
                                         std::chrono::day(static_cast<unsigned>(day))};
  if (!date.ok()) return false;
  const auto days = std::chrono::sys_days(date).time_since_epoch().count();
  seconds = static_cast<double>(days) * 86400.0 + hour * 3600.0 + minute * 60.0 + second;
  return true;
}

bool parse_count(const std::string& text, std::int32_t& value) {
  try {
    std::size_t used = 0;
    const long parsed = std::stol(text, &used);
    if (used != text.size() || parsed < 0 || parsed > INT32_MAX) return false;
    value = static_cast<std::int32_t>(parsed);
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

Result<std::vector<TraceRequest>> parse_azure_trace(std::istream& csv, std::size_t offset,
                                                    std::size_t count) {
  std::string line;
  if (!std::getline(csv, line)) return invalid_argument("trace: empty file");
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line != "TIMESTAMP,ContextTokens,GeneratedTokens") {
    return invalid_argument(
        "trace: line 1: expected header TIMESTAMP,ContextTokens,"
        "GeneratedTokens, got '" +
        line + "'");
  }
  std::vector<TraceRequest> requests;
  double first_timestamp = 0.0;
  for (std::size_t row = 0; std::getline(csv, line); ++row) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (row < offset) continue;
    if (count != 0 && requests.size() == count) break;
    const std::size_t comma1 = line.find(',');
    const std::size_t comma2 = comma1 == std::string::npos ? comma1 : line.find(',', comma1 + 1);
    double timestamp = 0.0;
    TraceRequest request;
    if (comma2 == std::string::npos || !parse_timestamp(line.substr(0, comma1), timestamp) ||
        !parse_count(line.substr(comma1 + 1, comma2 - comma1 - 1), request.prompt_tokens) ||
        !parse_count(line.substr(comma2 + 1), request.output_tokens)) {
      return invalid_argument("trace: line " + std::to_string(row + 2) + ": cannot parse '" + line +
                              "'");
    }
    if (requests.empty()) first_timestamp = timestamp;
    request.arrival_s = timestamp - first_timestamp;
    requests.push_back(request);
  }
  return requests;
}

void scale_lengths(std::vector<TraceRequest>& requests, const ScaleOptions& options) {
  for (TraceRequest& request : requests) {
    const auto prompt = std::lround(request.prompt_tokens * options.prompt_scale);
    const auto output = std::lround(request.output_tokens * options.output_scale);
    request.prompt_tokens =
        static_cast<std::int32_t>(std::clamp<long>(prompt, options.min_prompt, options.max_prompt));
    request.output_tokens =
        static_cast<std::int32_t>(std::clamp<long>(output, 1, options.max_output));
  }
}

void schedule_arrivals(std::vector<TraceRequest>& requests, const ArrivalOptions& options) {
  if (requests.empty()) return;
  if (options.rate > 0.0 && !options.recorded) {
    std::mt19937_64 rng(options.seed);
    // Gamma(shape k, scale 1 / (k * rate)) has mean 1 / rate; k = 1 is the exponential.
    std::gamma_distribution<double> gap(options.burstiness,
                                        1.0 / (options.burstiness * options.rate));
    double arrival = 0.0;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (i > 0) arrival += gap(rng);
      requests[i].arrival_s = arrival;
    }
    return;
  }
  double scale = options.time_scale;
  const double first = requests.front().arrival_s;
  const double span = requests.back().arrival_s - first;
  if (options.rate > 0.0) {
    scale = span > 0.0 ? static_cast<double>(requests.size() - 1) / (span * options.rate) : 0.0;
  }
  for (TraceRequest& request : requests) request.arrival_s = (request.arrival_s - first) * scale;
}

void schedule_arrivals(std::vector<TraceRequest>& requests, double rate, double time_scale,
                       std::uint64_t seed) {
  schedule_arrivals(requests, ArrivalOptions{.rate = rate, .time_scale = time_scale, .seed = seed});
}

std::vector<TraceRequest> synthetic_requests(std::size_t count, std::int32_t prompt_tokens,
                                             std::int32_t output_tokens) {
  return std::vector<TraceRequest>(
      count, TraceRequest{.prompt_tokens = prompt_tokens, .output_tokens = output_tokens});
}

}  // namespace podserve::bench
