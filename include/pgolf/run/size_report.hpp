// The submission size under the Parameter Golf rule: compressed model bytes + code bytes, against
// the 16,000,000-byte cap (decimal, README of openai/parameter-golf). pgolf's code bytes are the
// bytes of every project file the model's binaries are compiled from (docs/size-accounting.md).
#pragma once

#include <cstdint>
#include <string>

#include "pgolf/run/binary_info.hpp"
#include "pgolf/run/logger.hpp"

namespace pgolf::run {

inline constexpr std::int64_t kSubmissionCapBytes = 16'000'000;

inline void log_size_report(Logger& log, std::int64_t model_bytes, const BinaryInfo& info, bool list_files) {
  const CodeManifest code = parse_code_manifest(info.code_manifest);
  const std::int64_t total = model_bytes + code.total_bytes;
  log.printf("size_report: model_bytes:%lld code_bytes:%lld code_files:%zu total:%lld cap:%lld headroom:%lld fits:%s",
             static_cast<long long>(model_bytes), static_cast<long long>(code.total_bytes), code.files.size(),
             static_cast<long long>(total), static_cast<long long>(kSubmissionCapBytes),
             static_cast<long long>(kSubmissionCapBytes - total), total <= kSubmissionCapBytes ? "yes" : "no");
  if (list_files) {
    for (const auto& f : code.files) log.printf("code_file: %lld %s", static_cast<long long>(f.bytes), f.path.c_str());
  }
}

}  // namespace pgolf::run
