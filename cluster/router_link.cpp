#include "cluster/router_link.h"

#include <spdlog/spdlog.h>

#include <chrono>

namespace podserve {

RouterLink::RouterLink(const Topology& topology)
    : topology_(topology), endpoint_(topology.control_comm()) {}

std::vector<InstanceInfo> RouterLink::instances() const {
  std::vector<InstanceInfo> infos;
  for (const auto& p : topology_.instances()) {
    infos.push_back(InstanceInfo{p.id, p.role, p.tp, p.first_rank});
  }
  return infos;
}

void RouterLink::submit(int instance, GenerationRequest request) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back({instance, SubmitMessage{std::move(request)}});
  }
  wake_.notify_one();
}

void RouterLink::submit_disaggregated(int prefill_instance, int decode_instance,
                                      GenerationRequest request) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(
        {decode_instance, DisaggregatedSubmitMessage{std::move(request), prefill_instance}});
  }
  wake_.notify_one();
}

void RouterLink::cancel(int instance, RequestId id) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back({instance, CancelMessage{id}});
  }
  wake_.notify_one();
}

void RouterLink::request_shutdown() {
  shutdown_requested_ = true;
  wake_.notify_one();
}

Status RouterLink::send_queued() {
  std::vector<Outgoing> batch;
  {
    std::lock_guard lock(mutex_);
    batch.swap(queue_);
  }
  for (auto& item : batch) {
    PODSERVE_RETURN_IF_ERROR(
        endpoint_.send(topology_.instances().at(item.instance).first_rank, item.message));
  }
  return Status::Ok();
}

Status RouterLink::receive_all(Router& router, bool& received_any, int& shutdown_acks) {
  while (true) {
    PODSERVE_ASSIGN_OR_RETURN(auto received, endpoint_.try_receive());
    if (!received) return Status::Ok();
    received_any = true;
    const auto& instances = topology_.instances();
    int instance = -1;
    for (const auto& p : instances)
      if (p.first_rank == received->source_rank) instance = p.id;
    if (instance < 0) {
      return internal_error(fmt::format("control message from rank {}, which leads no instance",
                                        received->source_rank));
    }
    if (auto* outputs = std::get_if<OutputsMessage>(&received->message)) {
      for (const RequestId id : outputs->scheduled) router.on_scheduled(instance, id);
      router.on_outputs(instance, outputs->outputs);
      router.on_load(instance, outputs->load);
    } else if (auto* load = std::get_if<LoadMessage>(&received->message)) {
      router.on_load(instance, load->load);
    } else if (std::holds_alternative<ShutdownDoneMessage>(received->message)) {
      ++shutdown_acks;
    } else {
      return internal_error(fmt::format("router got an unexpected control message (type {})",
                                        received->message.index()));
    }
  }
}

Status RouterLink::run(Router& router, int shutdown_timeout_ms) {
  // Sleep at most 1 ms between polls while requests are in flight (leaders answer within an
  // iteration), up to 20 ms when the service is idle; a submission wakes the loop at once.
  IdleBackoff backoff(50, 1000);
  int shutdown_acks = 0;
  while (!shutdown_requested_) {
    PODSERVE_RETURN_IF_ERROR(send_queued());
    bool received_any = false;
    PODSERVE_RETURN_IF_ERROR(receive_all(router, received_any, shutdown_acks));
    PODSERVE_ASSIGN_OR_RETURN(const auto in_flight_sends, endpoint_.progress());
    if (received_any || in_flight_sends > 0) {
      backoff.reset();
      continue;
    }
    const auto wait_us = router.in_flight() > 0 ? backoff.next_us() : 20000;
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, std::chrono::microseconds(wait_us),
                   [&] { return !queue_.empty() || shutdown_requested_; });
  }

  PODSERVE_RETURN_IF_ERROR(send_queued());
  const int leaders = static_cast<int>(topology_.instances().size());
  for (const auto& p : topology_.instances()) {
    PODSERVE_RETURN_IF_ERROR(endpoint_.send(p.first_rank, ShutdownMessage{}));
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(shutdown_timeout_ms);
  IdleBackoff shutdown_backoff(100, 5000);
  while (shutdown_acks < leaders) {
    bool received_any = false;
    PODSERVE_RETURN_IF_ERROR(receive_all(router, received_any, shutdown_acks));
    PODSERVE_ASSIGN_OR_RETURN(const auto in_flight_sends, endpoint_.progress());
    (void)in_flight_sends;
    if (std::chrono::steady_clock::now() > deadline) {
      return deadline_exceeded(fmt::format("{} of {} instances acknowledged shutdown in {} ms",
                                           shutdown_acks, leaders, shutdown_timeout_ms));
    }
    if (!received_any) shutdown_backoff.sleep();
  }
  spdlog::info("all {} instances stopped", leaders);
  return endpoint_.flush();
}

}  // namespace podserve
