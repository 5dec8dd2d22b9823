#include "worker/block_manager.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <span>

namespace podserve {
namespace {

constexpr std::int32_t kBitsPerWord = 64;
constexpr std::int32_t kNoPage = -1;

std::size_t word_of(std::int32_t page) { return static_cast<std::size_t>(page / kBitsPerWord); }
std::uint64_t bit_of(std::int32_t page) { return std::uint64_t{1} << (page % kBitsPerWord); }

struct FreeRun {
  std::int32_t first = 0;
  std::int32_t length = 0;
};

// Calls visit(run) for each maximal run of free pages in `free_words` (bit set = free), lowest
// first, until visit returns true; returns whether one did.
template <typename Visit>
bool visit_free_runs(std::span<const std::uint64_t> free_words, Visit visit) {
  FreeRun run;
  for (std::size_t word = 0; word < free_words.size(); ++word) {
    const std::int32_t word_first = static_cast<std::int32_t>(word) * kBitsPerWord;
    // Alternate over the word's stretches of used (0) and free (1) bits; a free stretch that
    // reaches bit 63 carries its length into the next word.
    for (std::int32_t bit = 0; bit < kBitsPerWord;) {
      std::uint64_t rest = free_words[word] >> bit;
      const int used_stretch = rest == 0 ? kBitsPerWord - bit : std::countr_zero(rest);
      if (used_stretch > 0) {
        if (run.length > 0 && visit(run)) return true;
        run.length = 0;
        bit += used_stretch;
        if (bit == kBitsPerWord) break;
        rest >>= used_stretch;
      }
      if (run.length == 0) run.first = word_first + bit;
      const int free_stretch = std::countr_one(rest);
      run.length += free_stretch;
      bit += free_stretch;
    }
  }
  return run.length > 0 && visit(run);
}

}  // namespace

BlockManager::BlockManager(std::int32_t num_pages, std::int32_t page_size)
    : num_pages_(num_pages < 0 ? 0 : num_pages),
      page_size_(page_size < 1 ? 1 : page_size),
      free_words_(static_cast<std::size_t>((num_pages_ + kBitsPerWord - 1) / kBitsPerWord),
                  ~std::uint64_t{0}),
      free_count_(num_pages_) {
  if (const std::int32_t tail = num_pages_ % kBitsPerWord; tail != 0) {
    free_words_.back() = (std::uint64_t{1} << tail) - 1;  // no page past the pool is free
  }
}

std::int32_t BlockManager::pages_for_tokens(std::int64_t num_tokens) const {
  if (num_tokens <= 0) return 0;
  return static_cast<std::int32_t>((num_tokens + page_size_ - 1) / page_size_);
}

Result<std::vector<std::int32_t>> BlockManager::allocate(std::int32_t count) {
  return allocate_near(count, kNoPage);
}

Result<std::vector<std::int32_t>> BlockManager::allocate_near(std::int32_t count,
                                                              std::int32_t preferred_first) {
  if (count < 0) return invalid_argument(fmt::format("cannot allocate {} pages", count));
  if (count > free_count_) {
    return resource_exhausted(
        fmt::format("KV cache: {} pages requested, {} free of {}", count, free_count_, num_pages_));
  }
  if (count == 0) return std::vector<std::int32_t>{};
  const std::int32_t run_first = preferred_first != kNoPage && run_is_free(preferred_first, count)
                                     ? preferred_first
                                     : lowest_free_run(count);
  std::vector<std::int32_t> pages;
  if (run_first != kNoPage) {
    pages.reserve(static_cast<std::size_t>(count));
    for (std::int32_t page = run_first; page < run_first + count; ++page) pages.push_back(page);
  } else {
    pages = fewest_runs(count);
  }
  for (std::int32_t page : pages) free_words_[word_of(page)] &= ~bit_of(page);
  free_count_ -= count;
  return pages;
}

bool BlockManager::run_is_free(std::int32_t first, std::int32_t count) const {
  if (count > num_pages_ - first) return false;
  for (std::int32_t page = first; page < first + count;) {
    const std::int32_t offset = page % kBitsPerWord;
    const std::int32_t width = std::min(kBitsPerWord - offset, first + count - page);
    const std::uint64_t mask =
        (width == kBitsPerWord ? ~std::uint64_t{0} : (std::uint64_t{1} << width) - 1) << offset;
    if ((free_words_[word_of(page)] & mask) != mask) return false;
    page += width;
  }
  return true;
}

std::int32_t BlockManager::lowest_free_run(std::int32_t count) const {
  std::int32_t found = kNoPage;
  visit_free_runs(free_words_, [&](const FreeRun& run) {
    if (run.length < count) return false;
    found = run.first;
    return true;
  });
  return found;
}

std::vector<std::int32_t> BlockManager::fewest_runs(std::int32_t count) const {
  std::vector<FreeRun> runs;
  visit_free_runs(free_words_, [&](const FreeRun& run) {
    runs.push_back(run);
    return false;
  });
  // Longest first (the lowest among equals): whole runs while they fit, then the remainder from
  // the shortest run that still holds it, leaving the long runs whole for later requests.
  std::stable_sort(runs.begin(), runs.end(),
                   [](const FreeRun& a, const FreeRun& b) { return a.length > b.length; });
  std::vector<FreeRun> taken;
  std::int32_t remaining = count;
  for (std::size_t i = 0; remaining > 0; ++i) {
    if (runs[i].length <= remaining) {
      taken.push_back(runs[i]);
      remaining -= runs[i].length;
      continue;
    }
    std::size_t fit = i;
    while (fit + 1 < runs.size() && runs[fit + 1].length >= remaining) ++fit;
    while (fit > i && runs[fit - 1].length == runs[fit].length) --fit;  // the lowest of equals
    taken.push_back({runs[fit].first, remaining});
    remaining = 0;
  }
  std::sort(taken.begin(), taken.end(),
            [](const FreeRun& a, const FreeRun& b) { return a.first < b.first; });
  std::vector<std::int32_t> pages;
  pages.reserve(static_cast<std::size_t>(count));
  for (const FreeRun& run : taken) {
    for (std::int32_t page = run.first; page < run.first + run.length; ++page)
      pages.push_back(page);
  }
  return pages;
}

Status BlockManager::free(std::span<const std::int32_t> pages) {
  // Frees page by page and puts the freed ones back in use if a later page turns out invalid, so
  // a failed call changes nothing (a page listed twice is found free the second time).
  for (std::size_t i = 0; i < pages.size(); ++i) {
    const std::int32_t page = pages[i];
    const bool in_range = page >= 0 && page < num_pages_;
    if (!in_range || (free_words_[word_of(page)] & bit_of(page)) != 0) {
      for (std::size_t j = 0; j < i; ++j) free_words_[word_of(pages[j])] &= ~bit_of(pages[j]);
      if (!in_range) {
        return invalid_argument(fmt::format("KV cache: page {} outside [0, {})", page, num_pages_));
      }
      return invalid_argument(fmt::format("KV cache: double free of page {}", page));
    }
    free_words_[word_of(page)] |= bit_of(page);
  }
  free_count_ += static_cast<std::int32_t>(pages.size());
  return Status::Ok();
}

Status BlockManager::reserve(RequestId seq, std::int64_t num_tokens) {
  auto& table = tables_[seq];
  const std::int32_t needed =
      pages_for_tokens(num_tokens) - static_cast<std::int32_t>(table.size());
  if (needed <= 0) return Status::Ok();
  auto pages = allocate_near(needed, table.empty() ? kNoPage : table.back() + 1);
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
