#include "worker/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/float_convert.h"

namespace podserve {
namespace {

constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

std::optional<DType> dtype_from_name(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  return std::nullopt;
}

std::size_t dtype_bytes_from_name(const std::string& name) {
  if (name == "F64" || name == "I64" || name == "U64") return 8;
  if (name == "F32" || name == "I32" || name == "U32") return 4;
  if (name == "BF16" || name == "F16" || name == "I16" || name == "U16") return 2;
  if (name == "I8" || name == "U8" || name == "BOOL" || name == "F8_E4M3" || name == "F8_E5M2")
    return 1;
  return 0;
}

Result<std::string> dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return std::string("F32");
    case DType::kBF16: return std::string("BF16");
    case DType::kF16: return std::string("F16");
    case DType::kI32: break;
  }
  return invalid_argument("safetensors writer: only F32, BF16 and F16 tensors");
}

std::vector<std::string> expand_pattern(const std::string& pattern) {
  std::vector<std::string> paths;
  std::error_code ec;
  if (std::filesystem::is_directory(pattern, ec)) {
    for (const auto& entry : std::filesystem::directory_iterator(pattern, ec))
      if (entry.path().extension() == ".safetensors") paths.push_back(entry.path().string());
  } else {
    glob_t matches{};
    if (::glob(pattern.c_str(), 0, nullptr, &matches) == 0) {
      for (std::size_t i = 0; i < matches.gl_pathc; ++i) paths.emplace_back(matches.gl_pathv[i]);
    }
    ::globfree(&matches);
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0)
    return not_found(fmt::format("safetensors: cannot open '{}': {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < 8) {
    ::close(fd);
    return invalid_argument(
        fmt::format("safetensors '{}': shorter than its 8-byte header length", path));
  }
  const auto file_bytes = static_cast<std::size_t>(st.st_size);
  void* mapping = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED) {
    return internal_error(
        fmt::format("safetensors '{}': mmap failed: {}", path, std::strerror(errno)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->mapping_bytes_ = file_bytes;

  const auto* bytes = static_cast<const std::uint8_t*>(mapping);
  std::uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | bytes[i];
  if (header_bytes > kMaxHeaderBytes || 8 + header_bytes > file_bytes) {
    return invalid_argument(
        fmt::format("safetensors '{}': header length {} exceeds the file ({} bytes)", path,
                    header_bytes, file_bytes));
  }
  file->data_ = bytes + 8 + header_bytes;
  const std::size_t data_bytes = file_bytes - 8 - header_bytes;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_bytes);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(fmt::format("safetensors '{}': bad header JSON: {}", path, e.what()));
  }
  if (!header.is_object())
    return invalid_argument(fmt::format("safetensors '{}': header is not an object", path));
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    SafetensorsTensorInfo info;
    try {
      info.dtype_name = entry.at("dtype").get<std::string>();
      info.shape = entry.at("shape").get<std::vector<std::int64_t>>();
      const auto offsets = entry.at("data_offsets").get<std::vector<std::size_t>>();
      if (offsets.size() != 2) throw std::invalid_argument("data_offsets needs 2 values");
      info.data_begin = offsets[0];
      info.data_end = offsets[1];
    } catch (const std::exception& e) {
      return invalid_argument(
          fmt::format("safetensors '{}': tensor '{}': {}", path, name, e.what()));
    }
    info.dtype = dtype_from_name(info.dtype_name);
    std::int64_t numel = 1;
    for (auto d : info.shape) {
      if (d < 0)
        return invalid_argument(
            fmt::format("safetensors '{}': tensor '{}' has a negative dimension", path, name));
      numel *= d;
    }
    const std::size_t element_bytes = dtype_bytes_from_name(info.dtype_name);
    if (info.data_begin > info.data_end || info.data_end > data_bytes ||
        (element_bytes != 0 &&
         info.data_end - info.data_begin != static_cast<std::size_t>(numel) * element_bytes)) {
      return invalid_argument(fmt::format(
          "safetensors '{}': tensor '{}' ({} {} elements) has data_offsets [{}, {}) that do not "
          "match its size or the {}-byte data section",
          path, name, numel, info.dtype_name, info.data_begin, info.data_end, data_bytes));
    }
    file->tensors_.emplace(name, std::move(info));
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_bytes_);
}

Result<std::vector<float>> SafetensorsFile::read_f32(const std::string& name,
                                                     const ShardSlice& slice) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end())
    return not_found(fmt::format("safetensors '{}': no tensor '{}'", path_, name));
  const SafetensorsTensorInfo& info = it->second;
  if (!info.dtype) {
    return unimplemented(
        fmt::format("safetensors '{}': tensor '{}' is {}; only F32, BF16 and F16 load", path_, name,
                    info.dtype_name));
  }
  if (info.shape.empty() || info.shape.size() > 2) {
    return invalid_argument(
        fmt::format("safetensors '{}': tensor '{}' is not 1-D or 2-D", path_, name));
  }
  const std::int64_t rows = info.shape[0];
  const std::int64_t cols = info.shape.size() == 2 ? info.shape[1] : 1;
  if (slice.row_begin < 0 || slice.row_end > rows || slice.row_begin > slice.row_end ||
      slice.col_begin < 0 || slice.col_end > cols || slice.col_begin > slice.col_end) {
    return out_of_range(fmt::format("safetensors '{}': slice outside tensor '{}'", path_, name));
  }
  const std::size_t element_bytes = dtype_size(*info.dtype);
  std::vector<float> values(static_cast<std::size_t>(slice.numel()));
  for (std::int64_t r = slice.row_begin; r < slice.row_end; ++r) {
    const std::uint8_t* src = data_ + info.data_begin +
                              static_cast<std::size_t>(r * cols + slice.col_begin) * element_bytes;
    std::span<float> dst(
        values.data() + static_cast<std::size_t>((r - slice.row_begin) * slice.cols()),
        static_cast<std::size_t>(slice.cols()));
    PODSERVE_RETURN_IF_ERROR(convert_to_f32(src, *info.dtype, dst));
  }
  return values;
}

Result<std::vector<float>> SafetensorsFile::read_f32(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end())
    return not_found(fmt::format("safetensors '{}': no tensor '{}'", path_, name));
  const auto& shape = it->second.shape;
  const std::int64_t rows = shape.empty() ? 0 : shape[0];
  const std::int64_t cols = shape.size() == 2 ? shape[1] : 1;
  return read_f32(name, ShardSlice{0, rows, 0, cols});
}

Result<std::unique_ptr<SafetensorsWeightSource>> SafetensorsWeightSource::open(
    const std::string& pattern) {
  const std::vector<std::string> paths = expand_pattern(pattern);
  if (paths.empty()) return not_found(fmt::format("no .safetensors files match '{}'", pattern));
  std::unique_ptr<SafetensorsWeightSource> source(new SafetensorsWeightSource());
  source->pattern_ = pattern;
  for (const auto& path : paths) {
    PODSERVE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::open(path));
    for (const auto& [name, info] : file->tensors()) {
      const auto [it, inserted] = source->owner_.emplace(name, file.get());
      if (!inserted) {
        return invalid_argument(
            fmt::format("tensor '{}' is in both '{}' and '{}'", name, it->second->path(), path));
      }
    }
    source->files_.push_back(std::move(file));
  }
  return source;
}

Result<std::vector<float>> SafetensorsWeightSource::load(const TensorSpec& spec, int tp_rank,
                                                         int tp_size) {
  const auto it = owner_.find(spec.name);
  if (it == owner_.end()) {
    return not_found(fmt::format("checkpoint '{}' has no tensor '{}'", pattern_, spec.name));
  }
  const SafetensorsTensorInfo& info = it->second->tensors().at(spec.name);
  if (info.shape != spec.shape) {
    return invalid_argument(
        fmt::format("tensor '{}' in '{}' has shape [{}], the model expects [{}]", spec.name,
                    it->second->path(), fmt::join(info.shape, ", "), fmt::join(spec.shape, ", ")));
  }
  PODSERVE_ASSIGN_OR_RETURN(const ShardSlice slice, shard_slice(spec, tp_rank, tp_size));
  return it->second->read_f32(spec.name, slice);
}

std::string SafetensorsWeightSource::describe() const {
  return fmt::format("safetensors '{}' ({} files, {} tensors)", pattern_, files_.size(),
                     owner_.size());
}

Status write_safetensors(const std::string& path, std::span<const SafetensorsTensor> tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<std::uint8_t> data;
  for (const SafetensorsTensor& t : tensors) {
    std::int64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    if (static_cast<std::size_t>(numel) != t.values.size()) {
      return invalid_argument(
          fmt::format("safetensors writer: tensor '{}' has {} values for {} elements", t.name,
                      t.values.size(), numel));
    }
    PODSERVE_ASSIGN_OR_RETURN(const std::string dtype, dtype_name(t.dtype));
    const std::size_t begin = data.size();
    for (float v : t.values) {
      switch (t.dtype) {
        case DType::kF32: {
          std::uint8_t bytes[4];
          std::memcpy(bytes, &v, 4);
          data.insert(data.end(), bytes, bytes + 4);
          break;
        }
        case DType::kBF16:
        case DType::kF16: {
          const std::uint16_t bits = t.dtype == DType::kBF16 ? f32_to_bf16(v) : f32_to_f16(v);
          data.push_back(static_cast<std::uint8_t>(bits & 0xff));
          data.push_back(static_cast<std::uint8_t>(bits >> 8));
          break;
        }
        case DType::kI32: break;  // rejected by dtype_name above
      }
    }
    header[t.name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data section 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return unavailable(fmt::format("safetensors writer: cannot create '{}'", path));
  std::uint8_t length[8];
  std::uint64_t n = header_text.size();
  for (auto& byte : length) {
    byte = static_cast<std::uint8_t>(n & 0xff);
    n >>= 8;
  }
  out.write(reinterpret_cast<const char*>(length), 8);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) return unavailable(fmt::format("safetensors writer: failed writing '{}'", path));
  return Status::Ok();
}

}  // namespace podserve
