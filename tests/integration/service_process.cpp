#include "tests/integration/service_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

namespace podserve::testing {
namespace {

sockaddr_in loopback_address(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

bool port_is_free(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  const sockaddr_in addr = loopback_address(port);
  const bool ok = bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

int find_free_port_range(int count) {
  // Below the kernel's ephemeral range: ports from there are handed to outgoing connections (MPI,
  // UCX, HTTP clients of parallel tests) at any time, so one that is free now may not be when the
  // service binds it.
  int ephemeral_low = 32768, ephemeral_high = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> ephemeral_low >> ephemeral_high;
  const bool below = ephemeral_low - count > 11000;
  const int low = below ? 10000 : ephemeral_high + 1;
  const int high = below ? ephemeral_low - count : 65535 - count;
  std::mt19937 rng(
      static_cast<unsigned>(getpid()) ^
      static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::uniform_int_distribution<int> pick(low, high);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int base = pick(rng);
    bool all_free = true;
    for (int i = 0; i < count && all_free; ++i) all_free = port_is_free(base + i);
    if (all_free) return base;
  }
  return -1;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    kill_group(SIGKILL);
    wait(10);
  }
}

bool ChildProcess::start(const std::string& command, const std::string& log_path) {
  pid_ = fork();
  if (pid_ < 0) return false;
  if (pid_ == 0) {
    setpgid(0, 0);
    const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  setpgid(pid_, pid_);
  return true;
}

int ChildProcess::wait(int timeout_s) {
  if (pid_ <= 0) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (true) {  // polls at least once: wait(0) asks "has it exited?"
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) exit_code_ = WEXITSTATUS(status);
      if (WIFSIGNALED(status)) exit_code_ = 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void ChildProcess::kill_group(int signal_number) {
  if (pid_ > 0) ::kill(-pid_, signal_number);
}

double scrape_sum(int port, const std::string& metric) {
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  if (!res || res->status != 200) return -1;
  const std::regex line("(^|\n)" + metric + R"((\{[^}]*\})? ([0-9.e+-]+))");
  double total = 0;
  for (std::sregex_iterator it(res->body.begin(), res->body.end(), line), end; it != end; ++it)
    total += std::stod((*it)[3]);
  return total;
}

bool stream_then_hang_up(int port, const std::string& json_body) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  const sockaddr_in addr = loopback_address(port);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return false;
  }
  const std::string request = fmt::format(
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: {}\r\n\r\n{}",
      json_body.size(), json_body);
  bool got_token =
      send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size());
  std::string received;
  char buffer[4096];
  while (got_token && received.find("data: {") == std::string::npos) {
    const auto n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0)
      got_token = false;
    else
      received.append(buffer, static_cast<std::size_t>(n));
  }
  close(fd);
  return got_token;
}

bool wait_all_pages_free(const ServiceUnderTest& service, int world_size, int timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    bool all_free = true;
    for (int rank = 1; rank < world_size && all_free; ++rank) {
      const int port = service.metrics_port_base() + rank;
      all_free = scrape_sum(port, "podserve_kv_cache_usage_ratio") == 0.0 &&
                 scrape_sum(port, "podserve_requests_waiting_for_kv") == 0.0;
    }
    if (all_free) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

ServiceUnderTest::ServiceUnderTest(const std::string& name, const std::string& yaml_body,
                                   std::string env)
    : yaml_body_(yaml_body), env_(std::move(env)) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / ("podserve-" + name + "-XXXXXX")).string();
  dir_ = mkdtemp(pattern.data());
  config_path_ = dir_ + "/config.yaml";
  write_config_with_free_ports();
}

void ServiceUnderTest::write_config_with_free_ports() {
  http_port_ = find_free_port_range(1);
  metrics_port_base_ = find_free_port_range(16);
  std::ofstream(config_path_) << yaml_body_
                              << fmt::format(
                                     "\nrouter: {{listen: 127.0.0.1:{}, max_queue: 256}}\nmetrics: "
                                     "{{port_base: {}, sd_file: {}}}\n",
                                     http_port_, metrics_port_base_, sd_file());
}

ServiceUnderTest::~ServiceUnderTest() {
  if (mpirun_.running()) stop(30);
}

bool ServiceUnderTest::start(int ready_timeout_s) {
  // A port picked free can still be taken before the service binds it (another test's service):
  // then the service exits at start-up, and it is started again on other ports.
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (attempt > 0) write_config_with_free_ports();
    if (start_once(ready_timeout_s)) return true;
    const std::string output = log();
    const bool port_taken = output.find("cannot bind") != std::string::npos ||
                            output.find("router: cannot listen") != std::string::npos;
    if (mpirun_.running() || !port_taken) return false;
  }
  return false;
}

bool ServiceUnderTest::start_once(int ready_timeout_s) {
  const std::string command =
      fmt::format("{} PODSERVE_BIN={} {} {} --pid-file {}/router.pid", env_, PODSERVE_BIN_PATH,
                  PODSERVE_MPIRUN_SCRIPT, config_path_, dir_);
  if (!mpirun_.start(command, dir_ + "/service.log")) return false;
  httplib::Client client(host(), http_port_);
  client.set_connection_timeout(1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(ready_timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto res = client.Get("/health"); res && res->status == 200) return true;
    if (mpirun_.wait(0) >= 0) return false;  // exited early
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

int ServiceUnderTest::stop(int timeout_s) {
  const std::string pid_text = read_file(dir_ + "/router.pid");
  if (!pid_text.empty())
    ::kill(std::atoi(pid_text.c_str()), SIGTERM);
  else
    mpirun_.kill_group(SIGTERM);
  const int code = mpirun_.wait(timeout_s);
  if (code == -1) {
    mpirun_.kill_group(SIGKILL);
    mpirun_.wait(10);
  }
  return code;
}

std::string ServiceUnderTest::log() const { return read_file(dir_ + "/service.log"); }

}  // namespace podserve::testing
