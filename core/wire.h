// Minimal binary encoding for messages that cross process boundaries (batch plans, control
// messages). Little-endian host layout (all ranks of one deployment share an architecture),
// length-prefixed vectors and strings. WireReader never reads past its buffer: a short or
// corrupt buffer turns into a failed Status, not undefined behaviour.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "core/status.h"

namespace podserve {

class WireWriter {
 public:
  template <typename T>
  requires std::is_trivially_copyable_v<T>
  void put(const T& value) { append(&value, sizeof(T)); }
  template <typename T>
  requires std::is_trivially_copyable_v<T>
  void put_vector(std::span<const T> values) {
    put<std::uint64_t>(values.size());
    append(values.data(), values.size_bytes());
  }
  void put_string(const std::string& s) { put_vector(std::span<const char>(s.data(), s.size())); }
  std::vector<std::uint8_t>& bytes() { return bytes_; }
  std::vector<std::uint8_t> take() { return std::move(bytes_); }

 private:
  void append(const void* data, std::size_t size) {
    if (size == 0) return;
    const std::size_t offset = bytes_.size();
    bytes_.resize(offset + size);
    std::memcpy(bytes_.data() + offset, data, size);
  }

  std::vector<std::uint8_t> bytes_;
};

class WireReader {
 public:
  explicit WireReader(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}

  template <typename T>
  requires std::is_trivially_copyable_v<T> Status get(T& out) {
    if (bytes_.size() - offset_ < sizeof(T)) return invalid_argument("wire: truncated value");
    std::memcpy(&out, bytes_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return Status::Ok();
  }
  template <typename T>
  requires std::is_trivially_copyable_v<T> Status get_vector(std::vector<T>& out) {
    std::uint64_t n = 0;
    PODSERVE_RETURN_IF_ERROR(get(n));
    if (n > (bytes_.size() - offset_) / sizeof(T))
      return invalid_argument("wire: truncated vector");
    out.resize(n);
    if (n > 0)
      std::memcpy(out.data(), bytes_.data() + offset_, n * sizeof(T));  // data() may be null
    offset_ += n * sizeof(T);
    return Status::Ok();
  }
  Status get_string(std::string& out) {
    std::vector<char> chars;
    PODSERVE_RETURN_IF_ERROR(get_vector(chars));
    out.assign(chars.begin(), chars.end());
    return Status::Ok();
  }
  bool done() const { return offset_ == bytes_.size(); }

 private:
  std::span<const std::uint8_t> bytes_;
  std::size_t offset_ = 0;
};

}  // namespace podserve
