// What a generated main tells the run layer about its binary, and the code-size rule.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

namespace pgolf::run {

struct CudaBackendFactory;  // run/backend.hpp

struct BinaryInfo {
  const char* model_name = "";  // the NAME given to pgolf_add_model()
  const char* tool = "";        // train, quantize or eval
  // "<total bytes>\n<bytes> <file>\n..." from pgolf_code_bytes.cmake; empty when unknown.
  const char* code_manifest = "";
  // The model's CUDA backend when the binary was built with CUDA (train and eval), else null.
  const CudaBackendFactory* cuda = nullptr;
};

struct CodeFile {
  std::int64_t bytes = 0;
  std::string path;
};

struct CodeManifest {
  std::int64_t total_bytes = 0;
  std::vector<CodeFile> files;
};

inline CodeManifest parse_code_manifest(const char* text) {
  CodeManifest m;
  if (!text || !*text) return m;
  std::istringstream is(text);
  std::string line;
  if (std::getline(is, line)) m.total_bytes = std::strtoll(line.c_str(), nullptr, 10);
  while (std::getline(is, line)) {
    const auto space = line.find(' ');
    if (space == std::string::npos) continue;
    m.files.push_back(CodeFile{std::strtoll(line.substr(0, space).c_str(), nullptr, 10), line.substr(space + 1)});
  }
  return m;
}

}  // namespace pgolf::run
