// Prometheus file-based service discovery (file_sd_configs): rank 0 writes one JSON file that
// lists every rank's /metrics endpoint, so a Prometheus pointed at the file scrapes the whole
// deployment, whatever hosts and ports mpirun chose.
//
// Format: [{"targets": ["host:port", ...], "labels": {"name": "value", ...}}, ...]
// Contract: write_file_sd replaces the file atomically (writes `path.tmp-<pid>` in the same
// directory, then renames it over `path`), so Prometheus never reads a half-written file.
// Blocking file I/O; call at start-up. Errors come back as a Status (already logged).
//
// Note for the Prometheus config: every podserve metric carries a constant `instance` label
// (the podserve instance id); set `honor_labels: true` on the scrape job so Prometheus keeps it
// instead of renaming it to `exported_instance`.
#pragma once

#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace podserve {

// Endpoints that share labels (e.g. one group per rank with {rank, role, instance}).
struct ScrapeTargetGroup {
  std::vector<std::string> targets;           // "host:port"
  std::map<std::string, std::string> labels;  // attached by Prometheus to every target's series
};

std::string file_sd_json(std::span<const ScrapeTargetGroup> groups);
Status write_file_sd(const std::string& path, std::span<const ScrapeTargetGroup> groups);

}  // namespace podserve
