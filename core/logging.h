// Logging set-up: one spdlog default logger per process whose pattern carries the MPI rank
// and role, so interleaved mpirun output stays readable. Call once, early in main().
// Debug and trace statements use SPDLOG_DEBUG / SPDLOG_TRACE, compiled out of release builds.
#pragma once

#include <string>

namespace podserve {

// level: trace | debug | info | warn | error | off. Returns false for an unknown level.
bool setup_logging(const std::string& level, int rank, const std::string& role);

}  // namespace podserve
