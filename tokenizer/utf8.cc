#include "tokenizer/utf8.h"

namespace spar::tokenizer_internal {
namespace {

// Length of the well-formed sequence a lead byte starts (0: not a lead byte),
// and the allowed range of the second byte (Unicode Table 3-7).
struct LeadInfo {
  int length;
  uint8_t lo;
  uint8_t hi;
};

LeadInfo Lead(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

bool IsPythonSpace(uint32_t cp) {
  if ((cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20)) return true;
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680) return true;
  if (cp >= 0x2000 && cp <= 0x200A) return true;
  return cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

}  // namespace

size_t AppendUtf8Lossy(std::string_view in, bool final, std::string* out) {
  size_t i = 0;
  const size_t n = in.size();
  while (i < n) {
    const uint8_t b = static_cast<uint8_t>(in[i]);
    if (b < 0x80) {
      size_t j = i + 1;
      while (j < n && static_cast<uint8_t>(in[j]) < 0x80) ++j;
      out->append(in.data() + i, j - i);
      i = j;
      continue;
    }
    const LeadInfo lead = Lead(b);
    if (lead.length == 0) {
      out->append(kReplacementChar);
      ++i;
      continue;
    }
    // Count how many bytes of the sequence are present and valid.
    int valid = 1;
    while (valid < lead.length && i + static_cast<size_t>(valid) < n) {
      const uint8_t c = static_cast<uint8_t>(in[i + static_cast<size_t>(valid)]);
      const uint8_t lo = valid == 1 ? lead.lo : 0x80;
      const uint8_t hi = valid == 1 ? lead.hi : 0xBF;
      if (c < lo || c > hi) break;
      ++valid;
    }
    if (valid == lead.length) {
      out->append(in.data() + i, static_cast<size_t>(valid));
      i += static_cast<size_t>(valid);
    } else if (i + static_cast<size_t>(valid) == n && !final) {
      return i;  // truncated; more bytes may complete it
    } else {
      out->append(kReplacementChar);
      i += static_cast<size_t>(valid);
    }
  }
  return i;
}

std::string Utf8Lossy(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  AppendUtf8Lossy(in, /*final=*/true, &out);
  return out;
}

bool IsValidUtf8(std::string_view in) {
  size_t i = 0;
  const size_t n = in.size();
  while (i < n) {
    const uint8_t b = static_cast<uint8_t>(in[i]);
    if (b < 0x80) {
      ++i;
      continue;
    }
    const LeadInfo lead = Lead(b);
    if (lead.length == 0 || i + static_cast<size_t>(lead.length) > n) return false;
    for (int k = 1; k < lead.length; ++k) {
      const uint8_t c = static_cast<uint8_t>(in[i + static_cast<size_t>(k)]);
      const uint8_t lo = k == 1 ? lead.lo : 0x80;
      const uint8_t hi = k == 1 ? lead.hi : 0xBF;
      if (c < lo || c > hi) return false;
    }
    i += static_cast<size_t>(lead.length);
  }
  return true;
}

uint32_t NextCodePoint(std::string_view in, size_t* pos) {
  const uint8_t b = static_cast<uint8_t>(in[*pos]);
  int len = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1F) : len == 3 ? (b & 0x0F) : (b & 0x07);
  for (int k = 1; k < len && *pos + static_cast<size_t>(k) < in.size(); ++k)
    cp = (cp << 6) | (static_cast<uint8_t>(in[*pos + static_cast<size_t>(k)]) & 0x3F);
  *pos += static_cast<size_t>(len);
  return cp;
}

void AppendCodePoint(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string_view TrimPythonWhitespace(std::string_view s) {
  // Leading.
  size_t begin = 0;
  while (begin < s.size()) {
    size_t next = begin;
    if (!IsPythonSpace(NextCodePoint(s, &next))) break;
    begin = next;
  }
  // Trailing: walk back to each code point start.
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
    size_t probe = start;
    if (!IsPythonSpace(NextCodePoint(s, &probe))) break;
    end = start;
  }
  return s.substr(begin, end - begin);
}

}  // namespace spar::tokenizer_internal
