#include "router/stop_strings.h"

#include <algorithm>

namespace podserve {

std::size_t StopStringScanner::stop_overlap() const {
  std::size_t longest = 0;
  for (const auto& s : stop_) longest = std::max(longest, s.size());
  return longest == 0 ? 0 : longest - 1;
}

bool StopStringScanner::append(std::string_view bytes) {
  if (stop_.empty() || stop_at_ || bytes.empty()) return false;
  const std::size_t search_from = text_.size() - std::min(text_.size(), stop_overlap());
  text_ += bytes;
  for (const auto& s : stop_) {
    const std::size_t at = text_.find(s, search_from);
    if (at != std::string::npos && (!stop_at_ || at < *stop_at_)) stop_at_ = at;
  }
  return stop_at_.has_value();
}

std::string StopStringScanner::next_stream_text(bool finished) {
  std::size_t end = text_.size();
  if (stop_at_) {
    end = *stop_at_;
  } else if (!finished) {
    end = text_.size() - std::min(text_.size(), stop_overlap());
  }
  if (end <= text_sent_) return {};
  std::string piece = text_.substr(text_sent_, end - text_sent_);
  text_sent_ = end;
  return piece;
}

}  // namespace podserve
