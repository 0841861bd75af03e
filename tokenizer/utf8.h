// spar/tokenizer/utf8.h — the few UTF-8 helpers the tokenizer needs.
//
// Invalid input is never rejected: it is repaired the way Rust's
// String::from_utf8_lossy and the WHATWG TextDecoder do it (each maximal
// invalid subpart becomes one U+FFFD), so results match Hugging Face
// tokenizers byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace spar::tokenizer_internal {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Appends `in` to `out`, replacing each maximal invalid subpart with U+FFFD.
// When `final` is false, an incomplete but so-far-valid sequence at the end of
// `in` is not consumed. Returns the number of bytes of `in` consumed.
size_t AppendUtf8Lossy(std::string_view in, bool final, std::string* out);

// Whole-string form of AppendUtf8Lossy(final = true).
std::string Utf8Lossy(std::string_view in);

bool IsValidUtf8(std::string_view in);

// Decodes the code point at `in[*pos]` and advances *pos. Precondition: valid UTF-8.
uint32_t NextCodePoint(std::string_view in, size_t* pos);

void AppendCodePoint(uint32_t cp, std::string* out);

// Strips leading and trailing characters that Python's str.strip() removes
// (what Jinja's `trim` filter does in chat templates).
std::string_view TrimPythonWhitespace(std::string_view s);

}  // namespace spar::tokenizer_internal
