// The one error type of pgolf and the check macros that raise it.
//
// Every message names where the check sits (source file:line), what was expected and what was
// found; checks on user data also name the data file through their context argument, e.g.
//   PGOLF_CHECK_EQ(header.magic, kShardMagic, "shard " << path);
//   -> "shard data/x.bin: expected header.magic == kShardMagic (20240520), got 12345 [shard.hpp:88]"
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace pgolf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {

inline std::string_view basename_of(std::string_view path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

[[noreturn]] inline void raise(const std::string& context, const std::string& what, const char* file, int line) {
  std::ostringstream os;
  if (!context.empty()) os << context << ": ";
  os << what << " [" << basename_of(file) << ':' << line << ']';
  throw Error(os.str());
}

// Streams a value; bytes and chars print as numbers so that a bad header field is readable.
template <class T>
void print_value(std::ostream& os, const T& v) {
  if constexpr (std::is_same_v<T, char> || std::is_same_v<T, signed char> || std::is_same_v<T, unsigned char>) {
    os << static_cast<int>(v);
  } else {
    os << v;
  }
}

}  // namespace detail
}  // namespace pgolf

// Builds a std::string from a stream expression: PGOLF_STR("x=" << x).
#define PGOLF_STR(stream_expr) (static_cast<const std::ostringstream&>(std::ostringstream{} << stream_expr).str())

// Throws pgolf::Error with `message` (a stream expression) and the source location.
#define PGOLF_FAIL(message) ::pgolf::detail::raise(std::string{}, PGOLF_STR(message), __FILE__, __LINE__)

// Checks a condition; `message` (a stream expression) says what the condition means.
#define PGOLF_CHECK(cond, message)                                                                           \
  do {                                                                                                       \
    if (!(cond)) ::pgolf::detail::raise(PGOLF_STR(message), "check `" #cond "` failed", __FILE__, __LINE__); \
  } while (0)

// Compares two values and, on failure, prints both expressions and both values.
#define PGOLF_CHECK_OP_(a, b, op, context)                                                      \
  do {                                                                                          \
    const auto& pgolf_a_ = (a);                                                                 \
    const auto& pgolf_b_ = (b);                                                                 \
    if (!(pgolf_a_ op pgolf_b_)) {                                                              \
      std::ostringstream pgolf_os_;                                                             \
      pgolf_os_ << "expected " #a " " #op " " #b " (";                                          \
      ::pgolf::detail::print_value(pgolf_os_, pgolf_b_);                                        \
      pgolf_os_ << "), got ";                                                                   \
      ::pgolf::detail::print_value(pgolf_os_, pgolf_a_);                                        \
      ::pgolf::detail::raise(PGOLF_STR(context), pgolf_os_.str(), __FILE__, __LINE__);          \
    }                                                                                           \
  } while (0)

#define PGOLF_CHECK_EQ(a, b, context) PGOLF_CHECK_OP_(a, b, ==, context)
#define PGOLF_CHECK_NE(a, b, context) PGOLF_CHECK_OP_(a, b, !=, context)
#define PGOLF_CHECK_LT(a, b, context) PGOLF_CHECK_OP_(a, b, <, context)
#define PGOLF_CHECK_LE(a, b, context) PGOLF_CHECK_OP_(a, b, <=, context)
#define PGOLF_CHECK_GT(a, b, context) PGOLF_CHECK_OP_(a, b, >, context)
#define PGOLF_CHECK_GE(a, b, context) PGOLF_CHECK_OP_(a, b, >=, context)
