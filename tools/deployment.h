// One podserve deployment run by the experiment tools (podserve-ab, podserve-capacity):
// `deploy/mpirun.sh CONFIG` in its own process group, with the router's pid file and the
// file_sd list of every rank's /metrics written into a run directory; readiness from the
// router's /health; the ranks' expositions scraped on demand; SIGTERM to the router to stop
// (drain, clean shutdown, every rank exits).
// Not thread-safe: one thread drives a Deployment. The destructor kills a deployment still running.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace podserve {

struct DeploymentTools {
  std::string podserve;       // the podserve binary (PODSERVE_BIN of deploy/mpirun.sh)
  std::string mpirun_script;  // deploy/mpirun.sh
};

class Deployment {
 public:
  // name: file prefix inside run_dir (NAME.pid, NAME-sd.json, NAME-service.log);
  // listen: the config's router.listen ("host:port").
  Deployment(std::string name, std::string config_path, std::string listen, std::string run_dir,
             DeploymentTools tools);
  ~Deployment();
  Deployment(const Deployment&) = delete;
  Deployment& operator=(const Deployment&) = delete;

  // Starts deploy/mpirun.sh (returns at once); false when the fork failed.
  bool start();
  // Polls /health until 200; false after timeout_s or when the service exited first.
  bool wait_ready(double timeout_s);
  // The /metrics body of every rank the sd file lists (each endpoint once); problems on stderr.
  std::vector<std::string> scrape() const;
  // SIGTERM to the router rank (drain, stop), then waits up to timeout_s; returns the exit code
  // of deploy/mpirun.sh (128 + signal when killed; -1 when it had to be killed at the timeout).
  int stop(int timeout_s = 90);

  std::string url() const { return "http://" + listen_; }
  const std::string& log_path() const { return log_path_; }
  const std::string& sd_file() const { return sd_file_; }

 private:
  std::string name_;
  std::string config_path_;
  std::string listen_;
  std::string pid_file_;
  std::string sd_file_;
  std::string log_path_;
  DeploymentTools tools_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;  // once the service exited and was reaped
};

// The whole content of a text file; empty when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace podserve
