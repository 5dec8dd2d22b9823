// The .safetensors checkpoint format: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}, ...,
// optional "__metadata__"}), then the raw little-endian tensor data (offsets relative to it).
//
// SafetensorsFile maps one file read-only (mmap) and converts BF16 / F16 / F32 tensors, or a
// row/column slice of one, to fp32. SafetensorsWeightSource serves a model's tensors from one
// or several files (a path, a directory of *.safetensors, or a glob such as
// "dir/model-*.safetensors"), slicing each to the requested TP shard (worker/weights.h).
// write_safetensors() writes the format (tests, tools).
//
// Contract: files are validated on open (header bounds, offsets inside the file, sizes that
// match dtype x shape); errors are Status values naming the file and tensor. Objects are
// immutable after open, so reads are thread-safe; the mapping lives as long as the object.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/status.h"
#include "worker/weights.h"

namespace podserve {

struct SafetensorsTensorInfo {
  std::string dtype_name;      // as written in the header ("BF16", "F32", "I64", ...)
  std::optional<DType> dtype;  // set for the float formats this reader converts
  std::vector<std::int64_t> shape;
  std::size_t data_begin = 0;  // byte offsets into the data section
  std::size_t data_end = 0;
};

class SafetensorsFile {
 public:
  static Result<std::unique_ptr<SafetensorsFile>> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsTensorInfo>& tensors() const { return tensors_; }
  // fp32 values of `slice` of a 1-D ([rows]) or 2-D tensor, row-major [slice.rows, slice.cols].
  Result<std::vector<float>> read_f32(const std::string& name, const ShardSlice& slice) const;
  // The whole tensor.
  Result<std::vector<float>> read_f32(const std::string& name) const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* mapping_ = nullptr;
  std::size_t mapping_bytes_ = 0;
  const std::uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, SafetensorsTensorInfo> tensors_;
};

class SafetensorsWeightSource final : public WeightSource {
 public:
  // `pattern`: a file, a directory (all *.safetensors in it) or a glob. kNotFound when nothing
  // matches; kInvalidArgument when two files hold the same tensor.
  static Result<std::unique_ptr<SafetensorsWeightSource>> open(const std::string& pattern);
  // Checks that the tensor exists with spec.shape, then reads the rank's slice.
  Result<std::vector<float>> load(const TensorSpec& spec, int tp_rank, int tp_size) override;
  std::string describe() const override;

 private:
  std::string pattern_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> owner_;  // tensor name -> file
};

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kF32;  // storage format: kF32, kBF16 or kF16
  std::vector<std::int64_t> shape;
  std::vector<float> values;  // row-major, numel(shape) values; rounded to dtype
};
Status write_safetensors(const std::string& path, std::span<const SafetensorsTensor> tensors);

}  // namespace podserve
