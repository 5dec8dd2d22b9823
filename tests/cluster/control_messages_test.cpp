#include "cluster/control_messages.h"

#include <gtest/gtest.h>

#include "cluster/topology.h"

namespace podserve {
namespace {

TEST(ControlMessages, SubmitRoundTrips) {
  GenerationRequest request;
  request.id = 123456789012ull;
  request.prompt = {256, 1, 2, 3, 255};
  request.sampling = {17, 0.7f, 0.9f, 99, true};
  auto back = decode_control(encode_control(SubmitMessage{request}));
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  const auto& got = std::get<SubmitMessage>(*back).request;
  EXPECT_EQ(got.id, request.id);
  EXPECT_EQ(got.prompt, request.prompt);
  EXPECT_EQ(got.sampling.max_tokens, 17);
  EXPECT_FLOAT_EQ(got.sampling.temperature, 0.7f);
  EXPECT_FLOAT_EQ(got.sampling.top_p, 0.9f);
  EXPECT_EQ(got.sampling.seed, 99u);
  EXPECT_TRUE(got.sampling.ignore_eos);
}

TEST(ControlMessages, OutputsAndLoadRoundTrip) {
  OutputsMessage m;
  m.scheduled = {1, 9};
  m.outputs.push_back({1, 65, 0, false, FinishReason::kLength});
  m.outputs.push_back({2, TokenOutput::kNoToken, 4, true, FinishReason::kAbort});
  m.load = {3, 4, 500, 10, 20};
  auto back = decode_control(encode_control(m));
  ASSERT_TRUE(back.ok());
  const auto& got = std::get<OutputsMessage>(*back);
  ASSERT_EQ(got.outputs.size(), 2u);
  EXPECT_EQ(got.outputs[0].token, 65);
  EXPECT_EQ(got.scheduled, (std::vector<RequestId>{1, 9}));
  EXPECT_TRUE(got.outputs[1].finished);
  EXPECT_EQ(got.outputs[1].reason, FinishReason::kAbort);
  EXPECT_EQ(got.outputs[1].index, 4);
  EXPECT_EQ(got.load.outstanding_tokens, 500);
  EXPECT_EQ(got.load.total_pages, 20);
}

TEST(ControlMessages, EveryTypeRoundTrips) {
  const std::vector<ControlMessage> all = {SubmitMessage{},
                                           CancelMessage{5},
                                           OutputsMessage{},
                                           LoadMessage{},
                                           ShutdownMessage{},
                                           ShutdownDoneMessage{},
                                           DisaggregatedSubmitMessage{},
                                           PrefillRequestMessage{},
                                           PrefillResultMessage{},
                                           KvPartDoneMessage{}};
  for (const auto& m : all) {
    auto back = decode_control(encode_control(m));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->index(), m.index());
  }
}

TEST(ControlMessages, DisaggregationMessagesRoundTrip) {
  PrefillRequestMessage request;
  request.request.id = 9;
  request.request.prompt = {1, 2, 3};
  request.decode_instance = 2;
  request.dest_pages = {7, 3, 5};
  auto back = decode_control(encode_control(request));
  ASSERT_TRUE(back.ok());
  const auto& got = std::get<PrefillRequestMessage>(*back);
  EXPECT_EQ(got.request.prompt, request.request.prompt);
  EXPECT_EQ(got.decode_instance, 2);
  EXPECT_EQ(got.dest_pages, request.dest_pages);

  PrefillResultMessage result{9, PrefillResultMessage::Outcome::kShipping, 77, true, 2};
  auto result_back = decode_control(encode_control(result));
  ASSERT_TRUE(result_back.ok());
  const auto& r = std::get<PrefillResultMessage>(*result_back);
  EXPECT_EQ(r.first_token, 77);
  EXPECT_TRUE(r.request_finished);
  EXPECT_EQ(r.num_parts, 2);

  auto part = decode_control(encode_control(KvPartDoneMessage{9, 1, false}));
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(std::get<KvPartDoneMessage>(*part).part, 1);
  EXPECT_FALSE(std::get<KvPartDoneMessage>(*part).ok);

  DisaggregatedSubmitMessage submit;
  submit.request.id = 4;
  submit.prefill_instance = 3;
  auto submit_back = decode_control(encode_control(submit));
  ASSERT_TRUE(submit_back.ok());
  EXPECT_EQ(std::get<DisaggregatedSubmitMessage>(*submit_back).prefill_instance, 3);
}

TEST(ControlMessages, RejectsCorruptTruncatedAndOtherVersions) {
  auto bytes = encode_control(CancelMessage{77});
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(decode_control(std::span(bytes.data(), cut)).ok()) << cut;
  }
  auto other_version = bytes;
  other_version[4] = 99;
  EXPECT_FALSE(decode_control(other_version).ok());
  auto bad_type = bytes;
  bad_type[6] = 42;
  EXPECT_FALSE(decode_control(bad_type).ok());
  auto trailing = bytes;
  trailing.push_back(0);
  EXPECT_FALSE(decode_control(trailing).ok());
}

TEST(Topology, PlacesInstancesOnConsecutiveRanksAfterTheRouter) {
  const auto config = parse_config(R"(
instances:
  - {role: colocated, tp: 2, count: 2}
  - {role: colocated, tp: 1, count: 1}
)");
  const auto placements = place_instances(config);
  ASSERT_EQ(placements.size(), 3u);
  EXPECT_EQ(placements[0].first_rank, 1);
  EXPECT_EQ(placements[1].first_rank, 3);
  EXPECT_EQ(placements[2].first_rank, 5);
  EXPECT_EQ(placements[2].tp, 1);
  EXPECT_EQ(config.world_size(), 6);
}

// The router (rank 0) takes no GPU: on one host ranks 1..3 use GPUs 0..2; on two hosts each
// host's instance ranks count from 0 in world-rank order.
TEST(Topology, GpuIndexCountsInstanceRanksOnTheSameHost) {
  const std::vector<RankEndpoint> one_host = {{"a", 0}, {"a", 1}, {"a", 2}, {"a", 3}};
  for (int rank = 1; rank < 4; ++rank) EXPECT_EQ(gpu_index_on_host(one_host, rank), rank - 1);
  const std::vector<RankEndpoint> two_hosts = {{"a", 0}, {"a", 1}, {"b", 0}, {"b", 1}, {"a", 2}};
  EXPECT_EQ(gpu_index_on_host(two_hosts, 1), 0);
  EXPECT_EQ(gpu_index_on_host(two_hosts, 2), 0);
  EXPECT_EQ(gpu_index_on_host(two_hosts, 3), 1);
  EXPECT_EQ(gpu_index_on_host(two_hosts, 4), 1);
}

}  // namespace
}  // namespace podserve
