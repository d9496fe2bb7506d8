// A fixed-capacity string usable inside a structural type (and so inside a template argument).
#pragma once

#include <cstddef>
#include <string_view>

namespace pgolf {

template <std::size_t Capacity>
struct FixedString {
  char chars[Capacity] = {};

  constexpr FixedString() = default;
  template <std::size_t N>
  constexpr FixedString(const char (&literal)[N]) {  // NOLINT(google-explicit-constructor): literal syntax
    static_assert(N <= Capacity, "string literal too long for this FixedString");
    for (std::size_t i = 0; i < N; ++i) chars[i] = literal[i];
  }
  constexpr std::string_view view() const {
    std::size_t n = 0;
    while (n < Capacity && chars[n] != '\0') ++n;
    return {chars, n};
  }
  constexpr bool operator==(const FixedString&) const = default;
};

}  // namespace pgolf
