// spar/common/files.h — small, checked file helpers.
#pragma once

#include <string>

#include "common/status.h"

namespace spar {

// Reads a whole file. NotFound if it does not exist, Unavailable on I/O error.
Result<std::string> ReadFileToString(const std::string& path);

// Writes `contents` to `path` atomically: a temp file in the same folder,
// fsync, rename. Readers see the old file or the new one, never a mix.
Status WriteFileAtomic(const std::string& path, const std::string& contents);

// Creates `dir` and its parents if needed.
Status EnsureDir(const std::string& dir);

}  // namespace spar
