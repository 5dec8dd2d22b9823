// cpp-httplib plumbing shared by podserve's HTTP endpoints: the router's API and every rank's
// /metrics server (router/ depends on metrics/, so the helper lives in the leaf). Header-only.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

namespace podserve::http {

// Socket options for a listening socket: SO_REUSEADDR only. httplib's default sets SO_REUSEPORT,
// which lets a second process bind a busy port and share its connections.
inline void reuse_address_only(socket_t sock) {
  const int yes = 1;
  setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
}

// Runs server.listen_after_bind() on a new thread and returns it once the listen loop runs (or
// has already ended): httplib's stop() is a no-op before that, so a later stop() always ends
// the thread.
inline std::thread listen_in_background(httplib::Server& server) {
  auto returned = std::make_shared<std::atomic<bool>>(false);
  std::thread thread([&server, returned] {
    server.listen_after_bind();
    *returned = true;
  });
  while (!server.is_running() && !*returned) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return thread;
}

}  // namespace podserve::http
