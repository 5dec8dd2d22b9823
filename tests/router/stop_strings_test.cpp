// StopStringScanner: stop strings split across appends, overlapping stop strings, multi-byte
// UTF-8, and random replies checked against a naive reference that searches the whole text
// from its start after every append.
#include "router/stop_strings.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace podserve {
namespace {

TEST(StopStringScannerTest, OverlapIsTheLongestStopStringLessOne) {
  EXPECT_EQ(StopStringScanner().stop_overlap(), 0u);
  EXPECT_EQ(StopStringScanner({"x"}).stop_overlap(), 0u);
  EXPECT_EQ(StopStringScanner({"ab", "wxyz", "q"}).stop_overlap(), 3u);
}

TEST(StopStringScannerTest, WithoutStopStringsNothingIsKeptOrFound) {
  StopStringScanner scanner;
  EXPECT_FALSE(scanner.has_stop_strings());
  EXPECT_FALSE(scanner.append("hello"));
  EXPECT_EQ(scanner.text(), "");
  EXPECT_FALSE(scanner.stop_at().has_value());
}

TEST(StopStringScannerTest, StopStringSplitAcrossAppends) {
  StopStringScanner scanner({"END"});
  EXPECT_FALSE(scanner.append("abcE"));
  EXPECT_EQ(scanner.next_stream_text(false), "ab");  // "cE" could begin "END"
  EXPECT_FALSE(scanner.append("N"));
  EXPECT_EQ(scanner.next_stream_text(false), "c");
  EXPECT_TRUE(scanner.append("Dtail"));
  EXPECT_EQ(scanner.stop_at(), 3u);
  EXPECT_EQ(scanner.next_stream_text(true), "");
  EXPECT_EQ(scanner.reply_text(), "abc");
}

TEST(StopStringScannerTest, StopStringOneByteAtATime) {
  StopStringScanner scanner({"stop"});
  const std::string text = "nonstop";
  std::string streamed;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool found = scanner.append(text.substr(i, 1));
    EXPECT_EQ(found, i + 1 == text.size()) << i;
    streamed += scanner.next_stream_text(found);
  }
  EXPECT_EQ(streamed, "non");
  EXPECT_EQ(scanner.reply_text(), "non");
}

TEST(StopStringScannerTest, OverlappingStopStringsTheEarliestStartWins) {
  // Both complete in one append: "abcd" begins before "bc".
  StopStringScanner both({"bc", "abcd"});
  EXPECT_TRUE(both.append("xabcd"));
  EXPECT_EQ(both.stop_at(), 1u);
  // "bc" completes first, in an earlier append: the reply ends there even though "abcd"
  // would have begun earlier.
  StopStringScanner first({"abcd", "bc"});
  EXPECT_FALSE(first.append("xa"));
  EXPECT_TRUE(first.append("bc"));
  EXPECT_EQ(first.stop_at(), 2u);
  EXPECT_FALSE(first.append("d"));  // ignored once found
  EXPECT_EQ(first.text(), "xabc");
  EXPECT_EQ(first.reply_text(), "xa");
  // A stop string that is a suffix of the text's own prefix: "aab" in "aaab".
  StopStringScanner self({"aab"});
  EXPECT_FALSE(self.append("aa"));
  EXPECT_TRUE(self.append("ab"));
  EXPECT_EQ(self.stop_at(), 1u);
}

TEST(StopStringScannerTest, StopStringAtTheStartGivesAnEmptyReply) {
  StopStringScanner scanner({"\n\n"});
  EXPECT_TRUE(scanner.append("\n\nmore"));
  EXPECT_EQ(scanner.stop_at(), 0u);
  EXPECT_EQ(scanner.next_stream_text(true), "");
  EXPECT_EQ(scanner.reply_text(), "");
}

TEST(StopStringScannerTest, EmptyAppendsFindNothingAndSendNothing) {
  StopStringScanner scanner({"ab"});
  EXPECT_FALSE(scanner.append(""));
  EXPECT_EQ(scanner.next_stream_text(false), "");
  EXPECT_FALSE(scanner.append("a"));
  EXPECT_FALSE(scanner.append(""));
  EXPECT_EQ(scanner.next_stream_text(false), "");  // "a" could begin "ab"
  EXPECT_EQ(scanner.next_stream_text(true), "a");  // finished: nothing is held back
  EXPECT_EQ(scanner.next_stream_text(true), "");   // never sent twice
}

TEST(StopStringScannerTest, MultiByteUtf8StopStringSplitBetweenItsBytes) {
  const std::string stop = "\xc3\xa9t\xc3\xa9";  // "été", 5 bytes
  StopStringScanner scanner({stop});
  std::string streamed;
  for (const std::string chunk : {"caf\xc3", "\xa9 \xc3", "\xa9", "t\xc3", "\xa9!"}) {
    const bool found = scanner.append(chunk);
    streamed += scanner.next_stream_text(found);
  }
  EXPECT_EQ(scanner.reply_text(), "caf\xc3\xa9 ");
  EXPECT_EQ(streamed, "caf\xc3\xa9 ");
}

// The reference: after each append, search the whole text from its start; the first append
// after which any stop string occurs ends the reply at the earliest such occurrence.
std::optional<std::size_t> naive_stop_at(const std::vector<std::string>& stop,
                                         const std::vector<std::string>& chunks) {
  std::string text;
  for (const std::string& chunk : chunks) {
    text += chunk;
    std::optional<std::size_t> earliest;
    for (const std::string& s : stop) {
      const std::size_t at = text.find(s);
      if (at != std::string::npos && (!earliest || at < *earliest)) earliest = at;
    }
    if (earliest) return earliest;
  }
  return std::nullopt;
}

TEST(StopStringScannerTest, RandomRepliesMatchTheNaiveReference) {
  const std::uint32_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  const std::string alphabet = "ab\xc3\xa9";  // few letters, so stop strings occur and overlap
  const auto random_string = [&](std::size_t length) {
    std::string s;
    for (std::size_t i = 0; i < length; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  int stopped = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<std::string> stop(1 + rng() % 4);
    for (std::string& s : stop) s = random_string(1 + rng() % 5);
    std::vector<std::string> chunks(rng() % 12);
    std::string full;
    for (std::string& chunk : chunks) {
      chunk = random_string(rng() % 4);  // empty chunks included
      full += chunk;
    }
    SCOPED_TRACE(::testing::Message() << "trial " << trial);
    const std::optional<std::size_t> expected = naive_stop_at(stop, chunks);
    StopStringScanner scanner(stop);
    std::string streamed;
    std::size_t appended = 0;
    for (const std::string& chunk : chunks) {
      const bool found = scanner.append(chunk);
      appended += chunk.size();
      streamed += scanner.next_stream_text(found);
      if (found) break;
      // Holds back only what could still begin a stop string.
      ASSERT_EQ(streamed.size(), appended - std::min(appended, scanner.stop_overlap()));
    }
    streamed += scanner.next_stream_text(/*finished=*/true);
    ASSERT_EQ(scanner.stop_at(), expected);
    const std::string reply = full.substr(0, expected.value_or(full.size()));
    ASSERT_EQ(scanner.reply_text(), reply);
    ASSERT_EQ(streamed, reply);
    stopped += expected.has_value();
  }
  EXPECT_GT(stopped, 100);  // the inputs do exercise stop strings
}

}  // namespace
}  // namespace podserve
