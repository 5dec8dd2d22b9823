#include "cluster/control_messages.h"

#include <fmt/format.h>

#include "core/wire.h"

namespace podserve {
namespace {

constexpr std::uint32_t kControlMagic = 0x50444354;  // "PDCT"

// Wire form of the pieces; kept field by field so layout changes are explicit.
void put_load(WireWriter& w, const InstanceLoad& load) {
  w.put(load.running);
  w.put(load.waiting);
  w.put(load.outstanding_tokens);
  w.put(load.free_pages);
  w.put(load.total_pages);
}

Status get_load(WireReader& r, InstanceLoad& load) {
  PODSERVE_RETURN_IF_ERROR(r.get(load.running));
  PODSERVE_RETURN_IF_ERROR(r.get(load.waiting));
  PODSERVE_RETURN_IF_ERROR(r.get(load.outstanding_tokens));
  PODSERVE_RETURN_IF_ERROR(r.get(load.free_pages));
  return r.get(load.total_pages);
}

void put_request(WireWriter& w, const GenerationRequest& q) {
  w.put(q.id);
  w.put_vector(std::span<const TokenId>(q.prompt));
  w.put(q.sampling.max_tokens);
  w.put(q.sampling.temperature);
  w.put(q.sampling.top_p);
  w.put(q.sampling.seed);
  w.put<std::uint8_t>(q.sampling.ignore_eos ? 1 : 0);
}

Status get_request(WireReader& r, GenerationRequest& q) {
  std::uint8_t ignore_eos = 0;
  PODSERVE_RETURN_IF_ERROR(r.get(q.id));
  PODSERVE_RETURN_IF_ERROR(r.get_vector(q.prompt));
  PODSERVE_RETURN_IF_ERROR(r.get(q.sampling.max_tokens));
  PODSERVE_RETURN_IF_ERROR(r.get(q.sampling.temperature));
  PODSERVE_RETURN_IF_ERROR(r.get(q.sampling.top_p));
  PODSERVE_RETURN_IF_ERROR(r.get(q.sampling.seed));
  PODSERVE_RETURN_IF_ERROR(r.get(ignore_eos));
  q.sampling.ignore_eos = ignore_eos != 0;
  return Status::Ok();
}

struct Encoder {
  WireWriter& w;
  void operator()(const SubmitMessage& m) const { put_request(w, m.request); }
  void operator()(const DisaggregatedSubmitMessage& m) const {
    put_request(w, m.request);
    w.put(m.prefill_instance);
  }
  void operator()(const PrefillRequestMessage& m) const {
    put_request(w, m.request);
    w.put(m.decode_instance);
    w.put_vector(std::span<const std::int32_t>(m.dest_pages));
  }
  void operator()(const PrefillResultMessage& m) const {
    w.put(m.id);
    w.put(static_cast<std::uint8_t>(m.outcome));
    w.put(m.first_token);
    w.put<std::uint8_t>(m.request_finished ? 1 : 0);
    w.put(m.num_parts);
  }
  void operator()(const KvPartDoneMessage& m) const {
    w.put(m.id);
    w.put(m.part);
    w.put<std::uint8_t>(m.ok ? 1 : 0);
  }
  void operator()(const CancelMessage& m) const { w.put(m.id); }
  void operator()(const OutputsMessage& m) const {
    w.put_vector(std::span<const RequestId>(m.scheduled));
    w.put<std::uint64_t>(m.outputs.size());
    for (const auto& o : m.outputs) {
      w.put(o.id);
      w.put(o.token);
      w.put(o.index);
      w.put<std::uint8_t>(o.finished ? 1 : 0);
      w.put(static_cast<std::uint8_t>(o.reason));
    }
    put_load(w, m.load);
  }
  void operator()(const LoadMessage& m) const { put_load(w, m.load); }
  void operator()(const ShutdownMessage&) const {}
  void operator()(const ShutdownDoneMessage&) const {}
};

Status get_reason(WireReader& r, FinishReason& reason) {
  std::uint8_t raw = 0;
  PODSERVE_RETURN_IF_ERROR(r.get(raw));
  if (raw > static_cast<std::uint8_t>(FinishReason::kError))
    return invalid_argument("control: bad finish reason");
  reason = static_cast<FinishReason>(raw);
  return Status::Ok();
}

}  // namespace

static_assert(std::variant_size_v<ControlMessage> == 10, "decode_control lists every type");

std::vector<std::uint8_t> encode_control(const ControlMessage& message) {
  WireWriter w;
  w.put(kControlMagic);
  w.put(kControlProtocolVersion);
  w.put(static_cast<std::uint8_t>(message.index()));
  std::visit(Encoder{w}, message);
  return w.take();
}

Result<ControlMessage> decode_control(std::span<const std::uint8_t> bytes) {
  WireReader r(bytes);
  std::uint32_t magic = 0;
  std::uint16_t version = 0;
  std::uint8_t type = 0;
  PODSERVE_RETURN_IF_ERROR(r.get(magic));
  if (magic != kControlMagic) return invalid_argument("control: bad magic");
  PODSERVE_RETURN_IF_ERROR(r.get(version));
  if (version != kControlProtocolVersion) {
    return invalid_argument(fmt::format("control: protocol version {} (expected {})", version,
                                        kControlProtocolVersion));
  }
  PODSERVE_RETURN_IF_ERROR(r.get(type));
  ControlMessage message;
  switch (type) {
    case 0: {
      SubmitMessage m;
      PODSERVE_RETURN_IF_ERROR(get_request(r, m.request));
      message = std::move(m);
      break;
    }
    case 1: {
      CancelMessage m;
      PODSERVE_RETURN_IF_ERROR(r.get(m.id));
      message = m;
      break;
    }
    case 2: {
      OutputsMessage m;
      std::uint64_t count = 0;
      PODSERVE_RETURN_IF_ERROR(r.get_vector(m.scheduled));
      PODSERVE_RETURN_IF_ERROR(r.get(count));
      if (count > bytes.size()) return invalid_argument("control: bad output count");
      m.outputs.resize(count);
      for (auto& o : m.outputs) {
        std::uint8_t finished = 0;
        PODSERVE_RETURN_IF_ERROR(r.get(o.id));
        PODSERVE_RETURN_IF_ERROR(r.get(o.token));
        PODSERVE_RETURN_IF_ERROR(r.get(o.index));
        PODSERVE_RETURN_IF_ERROR(r.get(finished));
        PODSERVE_RETURN_IF_ERROR(get_reason(r, o.reason));
        o.finished = finished != 0;
      }
      PODSERVE_RETURN_IF_ERROR(get_load(r, m.load));
      message = std::move(m);
      break;
    }
    case 3: {
      LoadMessage m;
      PODSERVE_RETURN_IF_ERROR(get_load(r, m.load));
      message = m;
      break;
    }
    case 4: message = ShutdownMessage{}; break;
    case 5: message = ShutdownDoneMessage{}; break;
    case 6: {
      DisaggregatedSubmitMessage m;
      PODSERVE_RETURN_IF_ERROR(get_request(r, m.request));
      PODSERVE_RETURN_IF_ERROR(r.get(m.prefill_instance));
      message = std::move(m);
      break;
    }
    case 7: {
      PrefillRequestMessage m;
      PODSERVE_RETURN_IF_ERROR(get_request(r, m.request));
      PODSERVE_RETURN_IF_ERROR(r.get(m.decode_instance));
      PODSERVE_RETURN_IF_ERROR(r.get_vector(m.dest_pages));
      message = std::move(m);
      break;
    }
    case 8: {
      PrefillResultMessage m;
      std::uint8_t outcome = 0, finished = 0;
      PODSERVE_RETURN_IF_ERROR(r.get(m.id));
      PODSERVE_RETURN_IF_ERROR(r.get(outcome));
      if (outcome > static_cast<std::uint8_t>(PrefillResultMessage::Outcome::kAbandoned))
        return invalid_argument("control: bad prefill outcome");
      m.outcome = static_cast<PrefillResultMessage::Outcome>(outcome);
      PODSERVE_RETURN_IF_ERROR(r.get(m.first_token));
      PODSERVE_RETURN_IF_ERROR(r.get(finished));
      m.request_finished = finished != 0;
      PODSERVE_RETURN_IF_ERROR(r.get(m.num_parts));
      message = m;
      break;
    }
    case 9: {
      KvPartDoneMessage m;
      std::uint8_t ok = 0;
      PODSERVE_RETURN_IF_ERROR(r.get(m.id));
      PODSERVE_RETURN_IF_ERROR(r.get(m.part));
      PODSERVE_RETURN_IF_ERROR(r.get(ok));
      m.ok = ok != 0;
      message = m;
      break;
    }
    default: return invalid_argument(fmt::format("control: unknown message type {}", type));
  }
  if (!r.done()) return invalid_argument("control: trailing bytes");
  return message;
}

}  // namespace podserve
