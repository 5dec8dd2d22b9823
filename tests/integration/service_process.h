// Test support for integration tests: launches a real podserve deployment under mpirun (through
// deploy/mpirun.sh) on free local ports, waits until it serves, and stops it with SIGTERM to the
// router rank (drain + clean shutdown), reporting the exit status. Also starts a real
// Prometheus server. Used by one test thread.
#pragma once

#include <sys/types.h>

#include <string>

namespace podserve::testing {

// A free TCP port on 127.0.0.1 with the next `count - 1` ports free too.
int find_free_port_range(int count);

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Runs `command` through /bin/sh -c with stdout+stderr to `log_path`, in its own process group.
  bool start(const std::string& command, const std::string& log_path);
  // Waits up to timeout_s; returns the exit code (128+signal when killed, -1 on timeout).
  int wait(int timeout_s);
  void kill_group(int signal_number);
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

class ServiceUnderTest {
 public:
  // yaml_body: the config without router.listen / metrics (filled with free ports).
  ServiceUnderTest(const std::string& name, const std::string& yaml_body);
  ~ServiceUnderTest();

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
  std::string dir_;
  std::string config_path_;
  int http_port_ = 0;
  int metrics_port_base_ = 0;
  ChildProcess mpirun_;
};

}  // namespace podserve::testing
