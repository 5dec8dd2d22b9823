#include "core/logging.h"

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace podserve {

bool setup_logging(const std::string& level, int rank, const std::string& role) {
  const auto parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") return false;
  auto logger = spdlog::stderr_color_mt(fmt::format("rank{}", rank));
  logger->set_pattern(fmt::format("[%H:%M:%S.%e] [%^%l%$] [rank {} {}] %v", rank, role));
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
  return true;
}

}  // namespace podserve
