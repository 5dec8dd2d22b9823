// OutputQueue: the hand-off of one request's TokenOutputs from the control-plane thread (push,
// never blocks beyond a short mutex) to the HTTP handler thread that serves the request
// (wait_pop, sleeps on a condition variable; no polling). Thread-safe; one consumer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "core/request.h"

namespace podserve {

class OutputQueue {
 public:
  void push(const TokenOutput& output) {
    {
      std::lock_guard lock(mutex_);
      pending_.push_back(output);
    }
    ready_.notify_one();
  }

  // Moves every pending output into `out` (appending). Waits up to `timeout` for the first one;
  // returns false when none arrived in time.
  bool wait_pop(std::vector<TokenOutput>& out, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!ready_.wait_for(lock, timeout, [this] { return !pending_.empty(); })) return false;
    out.insert(out.end(), pending_.begin(), pending_.end());
    pending_.clear();
    return true;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<TokenOutput> pending_;
};

}  // namespace podserve
