// podserve-ab's list of a running deployment's /metrics endpoints: the Prometheus file_sd list
// its router writes (metrics.sd_file; podserve-ab passes --sd-file), one "host:port" per rank as
// the ranks computed it themselves (metrics.port_base + node-local rank: cluster/rank_metrics.h).
// Reading that list instead of recomputing it keeps podserve-ab right on whatever placement
// mpirun chose (hostfiles, several nodes). Pure parsing; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace podserve {

struct ScrapeTarget {
  int rank = 0;
  std::string host;
  int port = 0;
};

// The targets of a file_sd document ([{"targets": ["host:port"], "labels": {"podserve_rank":
// "N", ...}}, ...]) in rank order; kInvalidArgument naming what is wrong otherwise.
Result<std::vector<ScrapeTarget>> parse_scrape_targets(std::string_view file_sd_json);

}  // namespace podserve
