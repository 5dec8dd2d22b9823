// The batch plan: what one iteration of an instance computes. The scheduler (leader) builds
// it, the leader broadcasts it to its TP peers, every TP rank executes it, attention consumes
// it. Order: decodes first, then prefill chunks (Sarathi-Serve).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"
#include "core/types.h"

namespace podserve {

struct SequenceWork {
  RequestId seq_id = 0;
  // P: tokens of this sequence whose K/V are already in the cache (positions [0, P)).
  std::int32_t num_cached_tokens = 0;
  // The C tokens computed now, at positions [P, P + C). Decode: C == 1.
  std::vector<TokenId> new_tokens;
  // Page ids holding positions [0, P + C): position t lives in page page_table[t / page_size],
  // slot t % page_size.
  std::vector<std::int32_t> page_table;
  bool is_prefill = false;
  // Produce logits for the last new token (every decode; the last chunk of a prefill).
  bool sample = false;

  std::int32_t num_new_tokens() const { return static_cast<std::int32_t>(new_tokens.size()); }
  std::int32_t context_length() const { return num_cached_tokens + num_new_tokens(); }
};

// Disaggregated mode: a sequence whose prefill completes in this iteration on a prefill
// instance, and where its KV pages go. Every TP rank of the prefill instance ships its own
// heads' share of these pages after the forward pass (or layer by layer).
struct KvShipment {
  RequestId seq_id = 0;
  std::int32_t decode_instance = 0;
  std::int32_t num_tokens = 0;             // prompt positions [0, num_tokens) whose K/V ship
  std::vector<std::int32_t> source_pages;  // pages on this (prefill) instance
  std::vector<std::int32_t> dest_pages;    // pages the decode instance reserved, same count
};

struct BatchPlan {
  std::uint64_t iteration = 0;
  std::vector<SequenceWork> sequences;
  std::vector<KvShipment> shipments;
  // Decode instances: pages whose KV arrived since the previous plan through a transport that
  // stages it (KvTransport::deliver); every TP rank delivers them before this forward pass.
  std::vector<std::int32_t> deliver_pages;
  // Tells TP peers to leave their loop; a shutdown plan carries no sequences.
  bool shutdown = false;

  std::int32_t total_new_tokens() const;
  std::int32_t num_prefill_tokens() const;
  std::int32_t num_decode_tokens() const;
  bool empty() const { return sequences.empty(); }

  std::vector<std::uint8_t> serialize() const;
  static Result<BatchPlan> deserialize(std::span<const std::uint8_t> bytes);
};

}  // namespace podserve
