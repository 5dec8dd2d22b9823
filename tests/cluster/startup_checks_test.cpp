// Start-up checks before MPI: every config this build cannot start is refused with an error
// naming its key, and every other one passes. Models: `tiny` (head dim 32, which the CUDA
// attention kernels never take) and `llama3-8b` (head dim 128, which they take when this build
// has them, as the kernels' own shape check says).
#include "cluster/startup_checks.h"

#include <gtest/gtest.h>

#include <string>

#include "kernels/backend_factory.h"

namespace podserve {
namespace {

bool cuda_built() { return backend_supports_attention(BackendKind::kCuda, 32, 8, 128, 16).ok(); }

struct StartupCase {
  std::string name;
  std::string model;  // preset
  std::string yaml;   // the config, less the model
  // The key the error names; empty: starts. "cuda-only:KEY": starts on a CUDA build, else KEY.
  std::string refused_key;
};

class StartupCheckTest : public ::testing::TestWithParam<StartupCase> {};

TEST_P(StartupCheckTest, RefusesExactlyWhatThisBuildCannotStart) {
  const StartupCase& c = GetParam();
  const ServiceConfig config = parse_config("model: {preset: " + c.model + "}\n" + c.yaml);
  const auto model = model_preset(c.model);
  ASSERT_TRUE(model.ok());
  std::string refused_key = c.refused_key;
  if (refused_key.starts_with("cuda-only:")) {
    refused_key = cuda_built() ? "" : refused_key.substr(std::string("cuda-only:").size());
  }

  const Status status = check_startup(config, *model);
  if (refused_key.empty()) {
    EXPECT_TRUE(status.ok()) << status.to_string();
    return;
  }
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(status.message().starts_with("config key '" + refused_key + "': "))
      << status.message();
  EXPECT_TRUE(is_config_error(status));
}

const std::string kDisaggregated =
    "instances: [{role: prefill, tp: 2, count: 1}, {role: decode, tp: 1, count: 1}]\n"
    "scheduler: {mode: disaggregated}\n";

INSTANTIATE_TEST_SUITE_P(
    Configs, StartupCheckTest,
    ::testing::Values(
        StartupCase{"defaults", "tiny", "", ""}, StartupCase{"cpu", "tiny", "backend: cpu\n", ""},
        StartupCase{"cuda_tiny_head_dim", "tiny", "backend: cuda\n", "backend"},
        StartupCase{"cuda_llama3", "llama3-8b", "backend: cuda\n", "cuda-only:backend"},
        StartupCase{"cuda_llama3_tp2", "llama3-8b",
                    "backend: cuda\ninstances: [{role: colocated, tp: 2, count: 1}]\n",
                    "cuda-only:backend"},
        StartupCase{"disaggregated_ucx_cpu", "tiny", "backend: cpu\n" + kDisaggregated, ""},
        StartupCase{"disaggregated_auto_transfer", "tiny", kDisaggregated, ""},
        StartupCase{"disaggregated_nccl", "tiny", kDisaggregated + "kv_transfer: {backend: nccl}\n",
                    "kv_transfer.backend"},
        StartupCase{"colocated_ignores_nccl", "tiny", "kv_transfer: {backend: nccl}\n", ""},
        StartupCase{"cuda_ipc_on_cpu_backend", "llama3-8b",
                    "backend: cpu\n" + kDisaggregated + "kv_transfer: {backend: cuda_ipc}\n",
                    "kv_transfer.backend"},
        StartupCase{"cuda_ipc_auto_tiny_runs_on_cpu", "tiny",
                    kDisaggregated + "kv_transfer: {backend: cuda_ipc}\n", "kv_transfer.backend"},
        StartupCase{"cuda_ipc_auto_llama3", "llama3-8b",
                    kDisaggregated + "kv_transfer: {backend: cuda_ipc}\n",
                    "cuda-only:kv_transfer.backend"},
        StartupCase{"cuda_ipc_colocated_ignored", "tiny",
                    "backend: cpu\nkv_transfer: {backend: cuda_ipc}\n", ""}),
    [](const ::testing::TestParamInfo<StartupCase>& info) { return info.param.name; });

TEST(StartupCheck, ConfigErrorsAreTheOnesNamingAKey) {
  EXPECT_TRUE(is_config_error(unavailable("config key 'metrics.port_base': rank 3 cannot bind")));
  EXPECT_FALSE(is_config_error(unavailable("router: cannot listen on 127.0.0.1:8000")));
  EXPECT_FALSE(is_config_error(internal_error("MPI_Bcast failed")));
  EXPECT_FALSE(is_config_error(Status::Ok()));
}

}  // namespace
}  // namespace podserve
