// Test support for integration tests: launches a real podserve deployment under mpirun (through
// deploy/mpirun.sh) on free local ports, waits until it serves, and stops it with SIGTERM to the
// router rank (drain + clean shutdown), reporting the exit status. Also starts a real
// Prometheus server. Used by one test thread.
#pragma once

#include <sys/types.h>

#include <string>

namespace podserve::testing {

// A free TCP port on 127.0.0.1 with the next `count - 1` ports free too, below the kernel's
// ephemeral port range (where outgoing connections take ports at any time).
int find_free_port_range(int count);

// Sum of every sample of `metric` (all label sets) on the /metrics of 127.0.0.1:port; -1 when
// the scrape fails.
double scrape_sum(int port, const std::string& metric);

// Sends `json_body` as a streaming completion over a raw socket, reads until the first token
// event arrives, then closes the connection (a client that goes away mid-stream). False when
// no token event came.
bool stream_then_hang_up(int port, const std::string& json_body);

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Runs `command` through /bin/sh -c with stdout+stderr to `log_path`, in its own process group.
  bool start(const std::string& command, const std::string& log_path);
  // Waits up to timeout_s (0: only looks); returns the exit code (128+signal when killed, -1 on
  // timeout), and the same code again once the child was reaped.
  int wait(int timeout_s);
  void kill_group(int signal_number);
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

class ServiceUnderTest;

// Waits until every instance rank reports an empty KV cache and no request waiting for KV.
bool wait_all_pages_free(const ServiceUnderTest& service, int world_size, int timeout_s);

class ServiceUnderTest {
 public:
  // yaml_body: the config without router.listen / metrics (filled with free ports).
  // env: assignments prefixed to the launch command (e.g. "UCX_TLS=tcp,self").
  ServiceUnderTest(const std::string& name, const std::string& yaml_body, std::string env = "");
  ~ServiceUnderTest();

  // Starts the service and waits for /health; false when it did not come up (a start-up that
  // failed to bind a port is retried on other ports, twice).
  bool start(int ready_timeout_s = 90);
  // SIGTERM to the router rank; returns mpirun's exit code.
  int stop(int timeout_s = 60);

  std::string host() const { return "127.0.0.1"; }
  int http_port() const { return http_port_; }
  int metrics_port_base() const { return metrics_port_base_; }
  const std::string& dir() const { return dir_; }
  std::string sd_file() const { return dir_ + "/sd.json"; }
  std::string log() const;  // the service's output so far

 private:
  void write_config_with_free_ports();
  bool start_once(int ready_timeout_s);

  std::string yaml_body_;
  std::string dir_;
  std::string config_path_;
  std::string env_;
  int http_port_ = 0;
  int metrics_port_base_ = 0;
  ChildProcess mpirun_;
};

}  // namespace podserve::testing
