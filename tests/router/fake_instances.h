// A test-only InstanceChannel: stands in for the MPI control plane and the model instances.
// A generator thread emits one token per running request every `token_interval` and finishes
// it after max_tokens (reason length); a prompt starting with kStopPromptToken finishes after
// two tokens with EOS (reason stop). pause() holds every request without output until resume().
// Records which instance got each request and every cancel. A disaggregated request's first
// token comes from its prefill instance, the rest from its decode instance.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/request.h"
#include "router/instance_channel.h"

namespace podserve::testing {

class FakeInstances : public InstanceChannel {
 public:
  static constexpr TokenId kStopPromptToken = 7;
  using OutputSink = std::function<void(int instance, std::span<const TokenOutput>)>;

  FakeInstances(std::vector<InstanceInfo> instances, TokenId eos_token_id,
                std::chrono::milliseconds token_interval)
      : instances_(std::move(instances)),
        eos_token_id_(eos_token_id),
        token_interval_(token_interval) {}
  ~FakeInstances() override { shutdown(); }

  // Starts generating; outputs go to `sink` (Router::on_outputs).
  void run(OutputSink sink) {
    sink_ = std::move(sink);
    thread_ = std::thread([this] { generate(); });
  }
  void shutdown() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  void pause() {
    std::lock_guard lock(mutex_);
    paused_ = true;
  }
  void resume() {
    {
      std::lock_guard lock(mutex_);
      paused_ = false;
    }
    changed_.notify_all();
  }

  std::vector<InstanceInfo> instances() const override { return instances_; }
  void submit(int instance, GenerationRequest request) override {
    {
      std::lock_guard lock(mutex_);
      submitted_.push_back({instance, request});
      running_.push_back({instance, -1, std::move(request), 0});
    }
    changed_.notify_all();
  }
  void submit_disaggregated(int prefill_instance, int decode_instance,
                            GenerationRequest request) override {
    {
      std::lock_guard lock(mutex_);
      submitted_.push_back({prefill_instance, request, decode_instance});
      running_.push_back({prefill_instance, decode_instance, std::move(request), 0});
    }
    changed_.notify_all();
  }
  void cancel(int instance, RequestId id) override {
    {
      std::lock_guard lock(mutex_);
      cancelled_.emplace_back(instance, id);
      std::erase_if(running_, [id](const Running& r) { return r.request.id == id; });
    }
    changed_.notify_all();
  }

  struct Submitted {
    int instance;  // colocated, or the prefill instance
    GenerationRequest request;
    int decode_instance = -1;
  };
  std::vector<Submitted> submitted() const {
    std::lock_guard lock(mutex_);
    return submitted_;
  }
  std::vector<std::pair<int, RequestId>> cancelled() const {
    std::lock_guard lock(mutex_);
    return cancelled_;
  }
  // Waits until `predicate` holds over (submitted, cancelled) or `timeout` passes.
  bool wait_for(
      std::chrono::milliseconds timeout,
      const std::function<bool(const std::vector<Submitted>&,
                               const std::vector<std::pair<int, RequestId>>&)>& predicate) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return predicate(submitted_, cancelled_); });
  }

  // The token the fake emits at `index` of a request whose prompt starts with `first`.
  static TokenId token_at(TokenId first_prompt_token, std::int32_t index) {
    return static_cast<TokenId>((first_prompt_token * 31 + index * 7 + 65) % 200 + 20);
  }

 private:
  struct Running {
    int instance;
    int decode_instance;
    GenerationRequest request;
    std::int32_t generated;
  };

  void generate() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (paused_ || running_.empty()) {
        changed_.wait(lock);
        continue;
      }
      std::map<int, std::vector<TokenOutput>> outputs;
      for (Running& r : running_) {
        const bool stops = r.request.prompt.front() == kStopPromptToken && r.generated == 1;
        TokenOutput output{
            .id = r.request.id,
            .token = stops ? eos_token_id_ : token_at(r.request.prompt.front(), r.generated),
            .index = r.generated};
        ++r.generated;
        if (stops || r.generated >= r.request.sampling.max_tokens) {
          output.finished = true;
          output.reason = stops ? FinishReason::kStop : FinishReason::kLength;
        }
        const bool from_decode = r.decode_instance >= 0 && output.index > 0;
        outputs[from_decode ? r.decode_instance : r.instance].push_back(output);
      }
      std::erase_if(running_, [](const Running& r) {
        return (r.request.prompt.front() == kStopPromptToken && r.generated >= 2) ||
               r.generated >= r.request.sampling.max_tokens;
      });
      lock.unlock();
      for (const auto& [instance, batch] : outputs) sink_(instance, batch);
      std::this_thread::sleep_for(token_interval_);
      lock.lock();
    }
  }

  const std::vector<InstanceInfo> instances_;
  const TokenId eos_token_id_;
  const std::chrono::milliseconds token_interval_;
  OutputSink sink_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  bool paused_ = false;
  std::vector<Running> running_;
  std::vector<Submitted> submitted_;
  std::vector<std::pair<int, RequestId>> cancelled_;
  std::thread thread_;
};

}  // namespace podserve::testing
