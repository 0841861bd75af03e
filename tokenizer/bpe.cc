#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>

#include "tokenizer/utf8.h"

namespace spar::tokenizer_internal {

const std::array<uint32_t, 256>& ByteToUnicode() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? b : next++;
    }
    return t;
  }();
  return table;
}

bool ByteLevelToBytes(std::string_view token, std::string* out) {
  static const std::unordered_map<uint32_t, uint8_t> inverse = [] {
    std::unordered_map<uint32_t, uint8_t> m;
    const auto& table = ByteToUnicode();
    for (int b = 0; b < 256; ++b) m[table[static_cast<size_t>(b)]] = static_cast<uint8_t>(b);
    return m;
  }();
  size_t pos = 0;
  while (pos < token.size()) {
    auto it = inverse.find(NextCodePoint(token, &pos));
    if (it == inverse.end()) return false;
    out->push_back(static_cast<char>(it->second));
  }
  return true;
}

Status BpeModel::Build(const BpeOptions& options, std::unordered_map<std::string, int32_t> vocab,
                       const std::vector<std::pair<std::string, std::string>>& merges) {
  options_ = options;
  vocab_ = std::move(vocab);
  byte_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    std::string key;
    if (options_.byte_level) {
      key = std::string(1, static_cast<char>(b));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
      key = buf;
    }
    auto it = vocab_.find(key);
    if (it != vocab_.end()) byte_ids_[static_cast<size_t>(b)] = it->second;
  }
  if (options_.byte_level) {
    for (int b = 0; b < 256; ++b) {
      if (byte_ids_[static_cast<size_t>(b)] < 0) {
        return InvalidArgument("byte-level vocabulary has no token for byte " + std::to_string(b));
      }
    }
  } else {
    for (const auto& [token, id] : vocab_) {
      if (token.empty() || !IsValidUtf8(token)) continue;
      size_t pos = 0;
      const uint32_t cp = NextCodePoint(token, &pos);
      if (pos == token.size()) char_ids_[cp] = id;
    }
  }
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto a = vocab_.find(left);
    auto b = vocab_.find(right);
    auto merged = vocab_.find(left + right);
    if (a == vocab_.end() || b == vocab_.end() || merged == vocab_.end()) {
      return InvalidArgument("merge " + std::to_string(rank) + " ('" + left + "' + '" + right +
                             "') uses a token that is not in the vocabulary");
    }
    // Later duplicates win, as in HF's HashMap collect.
    merges_[PairKey(a->second, b->second)] = Merge{static_cast<int32_t>(rank), merged->second};
  }
  return Status::Ok();
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<int32_t>* ids) const {
  if (options_.byte_level) {
    for (char c : word) ids->push_back(byte_ids_[static_cast<uint8_t>(c)]);
    return;
  }
  // Pending unknown run: (unk id) is fused while fuse_unk holds.
  bool pending_unk = false;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t start = pos;
    const uint32_t cp = NextCodePoint(word, &pos);
    auto it = char_ids_.find(cp);
    if (it != char_ids_.end()) {
      if (pending_unk) {
        ids->push_back(options_.unk_id);
        pending_unk = false;
      }
      ids->push_back(it->second);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (size_t k = start; k < pos; ++k)
        all = all && byte_ids_[static_cast<uint8_t>(word[k])] >= 0;
      if (all) {
        for (size_t k = start; k < pos; ++k)
          ids->push_back(byte_ids_[static_cast<uint8_t>(word[k])]);
        continue;
      }
    }
    if (options_.unk_id >= 0) {
      if (pending_unk && !options_.fuse_unk) ids->push_back(options_.unk_id);
      pending_unk = true;
    }
  }
  if (pending_unk) ids->push_back(options_.unk_id);
}

void BpeModel::MergeAll(std::vector<int32_t>* ids) const {
  const int n = static_cast<int>(ids->size());
  if (n < 2) return;
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  // Min-heap on (rank, pos).
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Symbol> symbols(static_cast<size_t>(n));
  std::vector<Candidate> heap;
  heap.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    symbols[static_cast<size_t>(i)] = {(*ids)[static_cast<size_t>(i)], i - 1,
                                       i + 1 < n ? i + 1 : -1, true};
  auto push_pair = [&](int32_t left) {
    const Symbol& l = symbols[static_cast<size_t>(left)];
    if (l.next < 0) return;
    auto it = merges_.find(PairKey(l.id, symbols[static_cast<size_t>(l.next)].id));
    if (it == merges_.end()) return;
    heap.push_back({it->second.rank, left, it->second.new_id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  ids->clear();
  for (int i = 0; i >= 0; i = symbols[static_cast<size_t>(i)].next) {
    ids->push_back(symbols[static_cast<size_t>(i)].id);
  }
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    auto it = vocab_.find(std::string(word));
    if (it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  InitialSymbols(word, &ids);
  MergeAll(&ids);
  out->insert(out->end(), ids.begin(), ids.end());
}

}  // namespace spar::tokenizer_internal
