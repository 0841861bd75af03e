#include "storage/keys.h"

namespace spar::keys {

void AppendU32(std::string* out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out->append(b, 4);
}

void AppendU64(std::string* out, uint64_t v) {
  AppendU32(out, static_cast<uint32_t>(v >> 32));
  AppendU32(out, static_cast<uint32_t>(v));
}

uint32_t ReadU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

uint64_t ReadU64(const char* p) { return (uint64_t{ReadU32(p)} << 32) | ReadU32(p + 4); }

std::string Iteration(uint32_t iteration) {
  std::string k;
  AppendU32(&k, iteration);
  return k;
}

std::string Group(uint32_t iteration, uint64_t prompt_index) {
  std::string k;
  k.reserve(kGroupKeySize);
  AppendU32(&k, iteration);
  AppendU64(&k, prompt_index);
  return k;
}

std::string Sample(uint32_t iteration, uint64_t prompt_index, uint32_t sample) {
  std::string k = Group(iteration, prompt_index);
  AppendU32(&k, sample);
  return k;
}

std::string Metrics(int64_t unix_micros, uint32_t sequence) {
  std::string k;
  // Offset so negative times (never expected) still sort before positive.
  AppendU64(&k, static_cast<uint64_t>(unix_micros) ^ (uint64_t{1} << 63));
  AppendU32(&k, sequence);
  return k;
}

}  // namespace spar::keys
