#include "core/batch_plan.h"

#include "core/wire.h"

namespace podserve {
namespace {
constexpr std::uint32_t kPlanMagic = 0x504c414e;  // "PLAN"
}

std::int32_t BatchPlan::total_new_tokens() const {
  std::int32_t n = 0;
  for (const auto& s : sequences) n += s.num_new_tokens();
  return n;
}

std::int32_t BatchPlan::num_prefill_tokens() const {
  std::int32_t n = 0;
  for (const auto& s : sequences)
    if (s.is_prefill) n += s.num_new_tokens();
  return n;
}

std::int32_t BatchPlan::num_decode_tokens() const {
  std::int32_t n = 0;
  for (const auto& s : sequences)
    if (!s.is_prefill) n += s.num_new_tokens();
  return n;
}

std::vector<std::uint8_t> BatchPlan::serialize() const {
  WireWriter w;
  w.put(kPlanMagic);
  w.put(iteration);
  w.put<std::uint8_t>(shutdown ? 1 : 0);
  w.put<std::uint64_t>(sequences.size());
  for (const auto& s : sequences) {
    w.put(s.seq_id);
    w.put(s.num_cached_tokens);
    w.put_vector(std::span<const TokenId>(s.new_tokens));
    w.put_vector(std::span<const std::int32_t>(s.page_table));
    w.put<std::uint8_t>((s.is_prefill ? 1 : 0) | (s.sample ? 2 : 0));
  }
  w.put<std::uint64_t>(shipments.size());
  for (const auto& k : shipments) {
    w.put(k.seq_id);
    w.put(k.decode_instance);
    w.put(k.num_tokens);
    w.put_vector(std::span<const std::int32_t>(k.source_pages));
    w.put_vector(std::span<const std::int32_t>(k.dest_pages));
  }
  w.put_vector(std::span<const std::int32_t>(deliver_pages));
  return w.take();
}

Result<BatchPlan> BatchPlan::deserialize(std::span<const std::uint8_t> bytes) {
  WireReader r(bytes);
  std::uint32_t magic = 0;
  PODSERVE_RETURN_IF_ERROR(r.get(magic));
  if (magic != kPlanMagic) return invalid_argument("batch plan: bad magic");
  BatchPlan plan;
  std::uint8_t shutdown = 0;
  std::uint64_t count = 0;
  PODSERVE_RETURN_IF_ERROR(r.get(plan.iteration));
  PODSERVE_RETURN_IF_ERROR(r.get(shutdown));
  PODSERVE_RETURN_IF_ERROR(r.get(count));
  plan.shutdown = shutdown != 0;
  if (count > bytes.size()) return invalid_argument("batch plan: bad sequence count");
  plan.sequences.resize(count);
  for (auto& s : plan.sequences) {
    std::uint8_t flags = 0;
    PODSERVE_RETURN_IF_ERROR(r.get(s.seq_id));
    PODSERVE_RETURN_IF_ERROR(r.get(s.num_cached_tokens));
    PODSERVE_RETURN_IF_ERROR(r.get_vector(s.new_tokens));
    PODSERVE_RETURN_IF_ERROR(r.get_vector(s.page_table));
    PODSERVE_RETURN_IF_ERROR(r.get(flags));
    s.is_prefill = (flags & 1) != 0;
    s.sample = (flags & 2) != 0;
  }
  PODSERVE_RETURN_IF_ERROR(r.get(count));
  if (count > bytes.size()) return invalid_argument("batch plan: bad shipment count");
  plan.shipments.resize(count);
  for (auto& k : plan.shipments) {
    PODSERVE_RETURN_IF_ERROR(r.get(k.seq_id));
    PODSERVE_RETURN_IF_ERROR(r.get(k.decode_instance));
    PODSERVE_RETURN_IF_ERROR(r.get(k.num_tokens));
    PODSERVE_RETURN_IF_ERROR(r.get_vector(k.source_pages));
    PODSERVE_RETURN_IF_ERROR(r.get_vector(k.dest_pages));
  }
  PODSERVE_RETURN_IF_ERROR(r.get_vector(plan.deliver_pages));
  if (!r.done()) return invalid_argument("batch plan: trailing bytes");
  return plan;
}

}  // namespace podserve
