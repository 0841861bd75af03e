// spar/storage/keys.h — big-endian key encoding for the run store, so that
// RocksDB's bytewise order equals numeric order. Internal to storage/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace spar::keys {

void AppendU32(std::string* out, uint32_t v);
void AppendU64(std::string* out, uint64_t v);
uint32_t ReadU32(const char* p);
uint64_t ReadU64(const char* p);

// iteration(4)
std::string Iteration(uint32_t iteration);
// iteration(4) | prompt_index(8)
std::string Group(uint32_t iteration, uint64_t prompt_index);
// iteration(4) | prompt_index(8) | sample(4)
std::string Sample(uint32_t iteration, uint64_t prompt_index, uint32_t sample);
// unix_micros(8) | sequence(4)
std::string Metrics(int64_t unix_micros, uint32_t sequence);

constexpr size_t kGroupKeySize = 12;
constexpr size_t kSampleKeySize = 16;

}  // namespace spar::keys
