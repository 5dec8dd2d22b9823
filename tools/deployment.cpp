#include "tools/deployment.h"

#include <fmt/format.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tools/scrape_targets.h"

namespace podserve {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// Exit code of `pid`, or -1 when it is still running after `timeout_s` (0: only looks).
int wait_for(pid_t pid, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (Clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Deployment::Deployment(std::string name, std::string config_path, std::string listen,
                       std::string run_dir, DeploymentTools tools)
    : name_(std::move(name)),
      config_path_(std::move(config_path)),
      listen_(std::move(listen)),
      pid_file_((fs::path(run_dir) / (name_ + ".pid")).string()),
      sd_file_((fs::path(run_dir) / (name_ + "-sd.json")).string()),
      log_path_((fs::path(run_dir) / (name_ + "-service.log")).string()),
      tools_(std::move(tools)) {}

Deployment::~Deployment() {
  if (pid_ > 0 && !exit_code_) {
    kill(-pid_, SIGKILL);
    wait_for(pid_, 10);
  }
}

bool Deployment::start() {
  fs::remove(pid_file_);
  fs::remove(sd_file_);
  const std::string command =
      fmt::format("PODSERVE_BIN={} {} {} --pid-file {} --sd-file {}", tools_.podserve,
                  tools_.mpirun_script, config_path_, pid_file_, sd_file_);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    setpgid(0, 0);
    std::freopen(log_path_.c_str(), "w", stdout);
    std::freopen(log_path_.c_str(), "a", stderr);
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_ = pid;
  return true;
}

bool Deployment::wait_ready(double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  httplib::Client client(url());
  client.set_connection_timeout(1);
  while (Clock::now() < deadline) {
    if (pid_ <= 0) return false;
    if (const int exit_code = wait_for(pid_, 0); exit_code != -1) {
      exit_code_ = exit_code;
      return false;
    }
    const auto response = client.Get("/health");
    if (response && response->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return false;
}

std::vector<std::string> Deployment::scrape() const {
  std::vector<std::string> expositions;
  auto targets = parse_scrape_targets(read_text_file(sd_file_));
  if (!targets.ok()) {
    std::fprintf(stderr, "%s: %s\n", sd_file_.c_str(), targets.status().message().c_str());
    return expositions;
  }
  std::vector<std::string> scraped;  // "host:port"
  for (const auto& target : *targets) {
    const std::string endpoint = fmt::format("{}:{}", target.host, target.port);
    if (std::find(scraped.begin(), scraped.end(), endpoint) != scraped.end()) {
      // Ranks of several hosts with metrics.bind on loopback: only this host's can be reached.
      std::fprintf(stderr,
                   "rank %d lists %s again; scraping it once (multi-node deployments need "
                   "metrics.bind: 0.0.0.0)\n",
                   target.rank, endpoint.c_str());
      continue;
    }
    scraped.push_back(endpoint);
    httplib::Client client(target.host, target.port);
    if (auto res = client.Get("/metrics"); res && res->status == 200) {
      expositions.push_back(res->body);
    }
  }
  return expositions;
}

int Deployment::stop(int timeout_s) {
  if (exit_code_) {
    pid_ = -1;
    return *exit_code_;
  }
  if (pid_ <= 0) return -1;
  const std::string pid_text = read_text_file(pid_file_);
  if (!pid_text.empty()) {
    kill(std::stoi(pid_text), SIGTERM);
  } else {
    kill(-pid_, SIGTERM);
  }
  int exit_code = wait_for(pid_, timeout_s);
  if (exit_code == -1) {
    kill(-pid_, SIGKILL);
    wait_for(pid_, 10);
  }
  pid_ = -1;
  return exit_code;
}

}  // namespace podserve
