// In-process Communicators for worker tests: the single-rank group (worker/), and a group of
// threads (one CPU backend per thread) that runs the TP collectives through shared memory and a
// barrier.
#pragma once

#include <barrier>
#include <cstring>
#include <vector>

#include "core/backend.h"
#include "worker/single_rank_communicator.h"

namespace podserve::testing_support {

using podserve::SingleRankCommunicator;  // worker/single_rank_communicator.h

// Shared state of a thread group; each thread holds a ThreadCommunicator with its rank.
class ThreadGroup {
 public:
  explicit ThreadGroup(int size)
      : size_(size), barrier_(size), slots_(static_cast<std::size_t>(size)) {}
  int size() const { return size_; }

 private:
  friend class ThreadCommunicator;
  int size_;
  std::barrier<> barrier_;
  std::vector<const TensorView*> slots_;  // [size]: each rank's buffer during a collective
};

// fp32 host tensors only (the CPU backend's device memory is host memory).
class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.size(); }

  Status all_reduce_sum(const TensorView& data) override {
    group_.slots_[static_cast<std::size_t>(rank_)] = &data;
    group_.barrier_.arrive_and_wait();
    std::vector<float> sum(static_cast<std::size_t>(data.numel()), 0.0f);
    for (int r = 0; r < size(); ++r) {  // rank order on every rank: identical sums everywhere
      const float* src = group_.slots_[static_cast<std::size_t>(r)]->as<float>();
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += src[i];
    }
    group_.barrier_.arrive_and_wait();
    std::memcpy(data.data, sum.data(), sum.size() * sizeof(float));
    group_.barrier_.arrive_and_wait();
    return Status::Ok();
  }

  Status all_gather_last_dim(const TensorView& send, const TensorView& recv) override {
    group_.slots_[static_cast<std::size_t>(rank_)] = &send;
    group_.barrier_.arrive_and_wait();
    const std::int64_t rows = send.shape[0], cols = send.shape[1];
    for (int r = 0; r < size(); ++r) {
      const float* src = group_.slots_[static_cast<std::size_t>(r)]->as<float>();
      for (std::int64_t row = 0; row < rows; ++row)
        std::memcpy(recv.as<float>() + row * cols * size() + r * cols, src + row * cols,
                    static_cast<std::size_t>(cols) * sizeof(float));
    }
    group_.barrier_.arrive_and_wait();
    return Status::Ok();
  }

 private:
  ThreadGroup& group_;
  int rank_;
};

}  // namespace podserve::testing_support
