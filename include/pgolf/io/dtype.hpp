// Element types of stored tensors, with stable on-disk codes and safetensors names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "pgolf/core/error.hpp"

namespace pgolf::io {

// The numeric values are written to disk: never renumber, only append.
enum class DType : std::uint8_t { f32 = 0, f16 = 1, bf16 = 2, f64 = 3, i8 = 4, u8 = 5, i16 = 6, u16 = 7, i32 = 8, i64 = 9 };
inline constexpr std::uint8_t kDTypeCount = 10;

inline constexpr int dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::f64: return 8;
    case DType::i8: return 1;
    case DType::u8: return 1;
    case DType::i16: return 2;
    case DType::u16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  return 0;
}

inline constexpr std::string_view dtype_name(DType t) {
  constexpr std::string_view names[] = {"f32", "f16", "bf16", "f64", "i8", "u8", "i16", "u16", "i32", "i64"};
  return static_cast<std::uint8_t>(t) < kDTypeCount ? names[static_cast<std::uint8_t>(t)] : "invalid";
}

// safetensors' dtype strings (https://huggingface.co/docs/safetensors).
inline constexpr std::string_view safetensors_dtype_name(DType t) {
  constexpr std::string_view names[] = {"F32", "F16", "BF16", "F64", "I8", "U8", "I16", "U16", "I32", "I64"};
  return static_cast<std::uint8_t>(t) < kDTypeCount ? names[static_cast<std::uint8_t>(t)] : "invalid";
}

inline DType parse_safetensors_dtype(std::string_view s, const std::string& context) {
  for (std::uint8_t i = 0; i < kDTypeCount; ++i) {
    if (safetensors_dtype_name(static_cast<DType>(i)) == s) return static_cast<DType>(i);
  }
  PGOLF_FAIL(context << ": unsupported dtype \"" << s << "\" (supported: F32 F16 BF16 F64 I8 U8 I16 U16 I32 I64)");
}

inline DType dtype_from_code(std::uint8_t code, const std::string& context) {
  if (code >= kDTypeCount) PGOLF_FAIL(context << ": unknown dtype code " << static_cast<int>(code));
  return static_cast<DType>(code);
}

}  // namespace pgolf::io
