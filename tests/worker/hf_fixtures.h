// Shared by the reference tests of the Hugging Face fixtures (tests/data/hf/, made by
// tools/make_hf_fixtures.py; tests/worker/hf_reference_test.cpp on the CPU backend,
// tests/gpu/cuda_model_test.cpp on CUDA): where a fixture lives, its reference.json, the
// one-sequence plan the tests run, and readable test names. Header-only; the test target defines
// PODSERVE_SOURCE_DIR.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/batch_plan.h"

namespace podserve::testing_support {

// The fixture directory; the environment's PODSERVE_SOURCE_DIR wins over the build tree's (a
// binary run on another machine, as the GPU tests are).
inline std::string hf_fixture_dir(const std::string& name) {
  const char* source = std::getenv("PODSERVE_SOURCE_DIR");
  return std::string(source != nullptr ? source : PODSERVE_SOURCE_DIR) + "/tests/data/hf/" + name;
}

// The fixture's reference.json (a failed expectation when it cannot be read).
inline nlohmann::json read_hf_reference(const std::string& name) {
  std::ifstream in(hf_fixture_dir(name) + "/reference.json");
  EXPECT_TRUE(in.good()) << hf_fixture_dir(name);
  return nlohmann::json::parse(in);
}

// One sequence of `tokens`, the first `cached` of them already in the cache, sampling its last
// position. Its page p is page num_pages - 1 - page_stride * p: out of order, and with gaps when
// the stride exceeds 1.
inline SequenceWork hf_sequence_work(const std::vector<TokenId>& tokens, int cached,
                                     std::int32_t page_size, std::int32_t num_pages,
                                     std::int32_t page_stride) {
  SequenceWork w;
  w.seq_id = 1;
  w.num_cached_tokens = cached;
  w.new_tokens.assign(tokens.begin() + cached, tokens.end());
  for (std::int32_t page = 0; page * page_size < static_cast<int>(tokens.size()); ++page)
    w.page_table.push_back(num_pages - 1 - page_stride * page);
  w.is_prefill = cached == 0;
  w.sample = true;
  return w;
}

// gtest names for fixture parameters: "llama-hd64" -> "llama_hd64".
inline std::string hf_test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

}  // namespace podserve::testing_support
