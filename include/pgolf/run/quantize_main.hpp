// The quantize binary: trained weights (safetensors with the reference's names, as written by the
// train binary or exported from PyTorch) → the int8+zstd artifact, with its size report.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/run/args.hpp"
#include "pgolf/run/binary_info.hpp"
#include "pgolf/run/export.hpp"
#include "pgolf/run/logger.hpp"
#include "pgolf/run/size_report.hpp"

namespace pgolf::run {

template <ModelConfig C>
int quantize_main(int argc, char** argv, const BinaryInfo& info) {
  const std::string program = std::string(info.model_name) + "_quantize";
  try {
    check_config_environment<C>();
    std::string weights, artifact;
    int level = io::kDefaultZstdLevel;
    bool list_code = false;
    OptionSet o(program, "Quantizes the '" + std::string(info.model_name) + "' model " + describe(C) +
                             " with the reference's int8 per-row scheme and writes the zstd-compressed artifact.");
    o.add("WEIGHTS", &weights, "input weights (.safetensors, reference state_dict names)");
    o.add("ARTIFACT", &artifact, "output artifact (default: the input with .int8.ptz)");
    o.add("ZSTD_LEVEL", &level, "zstd compression level");
    o.add("LIST_CODE_FILES", &list_code, "list the files counted as code in the size report");
    if (!o.parse(argc, argv)) return 0;
    PGOLF_CHECK(!weights.empty(), "--weights is required (a .safetensors file)");
    if (artifact.empty()) artifact = std::filesystem::path(weights).replace_extension(".int8.ptz").string();
    std::vector<float> params(ParamLayout<C>::total);
    read_weights_safetensors<C>(weights, params);
    const ExportReport rep = export_int8_artifact<C>(artifact, params, level, {{"source", std::filesystem::path(weights).filename().string()}});
    Logger log;
    log.printf("quantize: %s model_params:%lld", describe(C).c_str(), static_cast<long long>(param_count<C>));
    log.printf("artifact:%s bytes:%lld payload:%lld raw:%lld payload_ratio:%.2fx", artifact.c_str(), static_cast<long long>(rep.file_bytes),
               static_cast<long long>(rep.payload_bytes), static_cast<long long>(rep.raw_bytes), rep.payload_ratio);
    log_size_report(log, rep.file_bytes, info, list_code);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
    return 1;
  }
}

}  // namespace pgolf::run
