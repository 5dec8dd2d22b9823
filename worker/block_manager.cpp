#include "worker/block_manager.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>

namespace podserve {

BlockManager::BlockManager(std::int32_t num_pages, std::int32_t page_size)
    : num_pages_(num_pages < 0 ? 0 : num_pages),
      page_size_(page_size < 1 ? 1 : page_size),
      in_use_(static_cast<std::size_t>(num_pages_), false) {
  free_list_.reserve(static_cast<std::size_t>(num_pages_));
  for (std::int32_t page = 0; page < num_pages_; ++page) free_list_.push_back(page);  // a min-heap
}

std::int32_t BlockManager::pages_for_tokens(std::int64_t num_tokens) const {
  if (num_tokens <= 0) return 0;
  return static_cast<std::int32_t>((num_tokens + page_size_ - 1) / page_size_);
}

Result<std::vector<std::int32_t>> BlockManager::allocate(std::int32_t count) {
  if (count < 0) return invalid_argument(fmt::format("cannot allocate {} pages", count));
  if (count > free_pages()) {
    return resource_exhausted(fmt::format("KV cache: {} pages requested, {} free of {}", count,
                                          free_pages(), num_pages_));
  }
  std::vector<std::int32_t> pages(static_cast<std::size_t>(count));
  for (auto& page : pages) {
    std::pop_heap(free_list_.begin(), free_list_.end(), std::greater<>());
    page = free_list_.back();
    free_list_.pop_back();
    in_use_[static_cast<std::size_t>(page)] = true;
  }
  return pages;
}

Status BlockManager::free(std::span<const std::int32_t> pages) {
  std::vector<bool> seen(in_use_.size(), false);
  for (std::int32_t page : pages) {
    if (page < 0 || page >= num_pages_) {
      return invalid_argument(fmt::format("KV cache: page {} outside [0, {})", page, num_pages_));
    }
    const auto index = static_cast<std::size_t>(page);
    if (!in_use_[index] || seen[index]) {
      return invalid_argument(fmt::format("KV cache: double free of page {}", page));
    }
    seen[index] = true;
  }
  for (std::int32_t page : pages) {
    in_use_[static_cast<std::size_t>(page)] = false;
    free_list_.push_back(page);
    std::push_heap(free_list_.begin(), free_list_.end(), std::greater<>());
  }
  return Status::Ok();
}

Status BlockManager::reserve(RequestId seq, std::int64_t num_tokens) {
  auto& table = tables_[seq];
  const std::int32_t needed =
      pages_for_tokens(num_tokens) - static_cast<std::int32_t>(table.size());
  if (needed <= 0) return Status::Ok();
  auto pages = allocate(needed);
  if (!pages.ok()) {
    if (table.empty()) tables_.erase(seq);
    return pages.status();
  }
  table.insert(table.end(), pages->begin(), pages->end());
  return Status::Ok();
}

std::int64_t BlockManager::max_tokens_reachable(RequestId seq) const {
  const auto it = tables_.find(seq);
  const std::int64_t held = it == tables_.end() ? 0 : static_cast<std::int64_t>(it->second.size());
  return (held + free_pages()) * page_size_;
}

std::span<const std::int32_t> BlockManager::page_table(RequestId seq) const {
  const auto it = tables_.find(seq);
  if (it == tables_.end()) return {};
  return it->second;
}

Status BlockManager::release(RequestId seq) {
  const auto it = tables_.find(seq);
  if (it == tables_.end()) {
    return not_found(fmt::format("KV cache: sequence {} holds no pages", seq));
  }
  PODSERVE_RETURN_IF_ERROR(free(it->second));
  tables_.erase(it);
  return Status::Ok();
}

}  // namespace podserve
